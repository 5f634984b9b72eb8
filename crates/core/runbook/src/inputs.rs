//! What a runbook takes from outside: its params (declared types, defaults, coercion of
//! `--param` values, params files) and its sites (the sites file, credential references, no
//! secrets written inline).

use std::collections::BTreeMap;

use serde_json::Value;

use drover_api::closest_match;

use super::decode::*;
use super::diag::Sink;
use super::expr;
use super::model::*;
use super::yaml::{Kind, Node, Pos};

pub(super) fn param_specs(node: &Node, sink: &mut Sink) -> Vec<ParamSpec> {
    let mut out = vec![];
    for (k, v) in expect_map(node, "params", sink).unwrap_or_default() {
        let name = k.as_key();
        if !valid_id(&name) {
            sink.error(
                k.pos,
                format!("param name `{name}` is not valid"),
                Some("use letters, digits, `-` and `_`".into()),
            );
            continue;
        }
        let place = format!("params.{name}");
        let mut spec = ParamSpec {
            name: name.clone(),
            ty: ParamType::String,
            default: None,
            required: false,
            description: String::new(),
            allowed: vec![],
            pos: k.pos,
        };
        if !matches!(v.kind, Kind::Map(_)) {
            // Shorthand: `name: value` is a default whose type is the value's.
            spec.ty = match v.kind {
                Kind::Bool(_) => ParamType::Bool,
                Kind::Int(_) => ParamType::Int,
                Kind::Seq(_) => ParamType::List,
                _ => ParamType::String,
            };
            spec.default = Some(v.to_json()).filter(|d| !d.is_null());
            spec.required = spec.default.is_none();
            out.push(spec);
            continue;
        }
        check_keys(v, PARAM_KEYS, &place, sink);
        if let Some(t) = v.get("type") {
            match t.as_str() {
                Some("string") => spec.ty = ParamType::String,
                Some("int") => spec.ty = ParamType::Int,
                Some("bool") => spec.ty = ParamType::Bool,
                Some("duration") => spec.ty = ParamType::Duration,
                Some("list") => spec.ty = ParamType::List,
                _ => {
                    let found = t.as_key();
                    let hint = closest_match(&found, &ParamType::ALL)
                        .map(|b| format!("did you mean `{b}`?"))
                        .unwrap_or_else(|| format!("use one of: {}", ParamType::ALL.join(", ")));
                    sink.error(t.pos, format!("{place}: unknown type `{found}`"), Some(hint));
                }
            }
        }
        if let Some(d) = v.get("description") {
            spec.description = string(d, &format!("{place}.description"), sink).unwrap_or_default();
        }
        if let Some(r) = v.get("required") {
            spec.required = boolean(r, &format!("{place}.required"), sink).unwrap_or(false);
        }
        if let Some(e) = v.get("enum") {
            match e.items() {
                Some(items) => spec.allowed = items.iter().map(Node::to_json).collect(),
                None => sink.error(e.pos, format!("{place}.enum must be a list of allowed values"), None),
            }
        }
        if let Some(d) = v.get("default") {
            match coerce(spec.ty, &d.to_json()) {
                Ok(value) => spec.default = Some(value),
                Err(msg) => sink.error(d.pos, format!("{place}.default: {msg}"), None),
            }
        }
        if let Some(d) = &spec.default
            && !spec.allowed.is_empty()
            && !spec.allowed.contains(d)
        {
            sink.error(
                v.get("default").map(|n| n.pos).unwrap_or(v.pos),
                format!("{place}.default is not one of the allowed values"),
                Some(format!("allowed: {}", spec.allowed.iter().map(expr::display).collect::<Vec<_>>().join(", "))),
            );
        }
        out.push(spec);
    }
    out
}

/// Check and normalise a parameter value against its declared type.
pub fn coerce(ty: ParamType, value: &Value) -> Result<Value, String> {
    match (ty, value) {
        (ParamType::String, Value::String(_)) => Ok(value.clone()),
        (ParamType::String, Value::Number(_) | Value::Bool(_)) => Ok(Value::String(expr::display(value))),
        (ParamType::Int, Value::Number(n)) if n.is_i64() => Ok(value.clone()),
        (ParamType::Int, Value::String(s)) => {
            s.trim().parse::<i64>().map(Value::from).map_err(|_| format!("`{s}` is not a whole number"))
        }
        (ParamType::Bool, Value::Bool(_)) => Ok(value.clone()),
        (ParamType::Bool, Value::String(s)) => match s.trim() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("`{s}` is not true or false")),
        },
        (ParamType::Duration, Value::String(s)) => humantime::parse_duration(s.trim())
            .map(|d| Value::String(humantime::format_duration(d).to_string()))
            .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. `30s` or `5m`")),
        (ParamType::Duration, Value::Number(n)) if n.as_u64() == Some(0) => Ok(Value::String("0s".into())),
        (ParamType::Duration, Value::Number(n)) => Err(format!("`{n}` has no unit; write `{n}s` for seconds")),
        (ParamType::List, Value::Array(_)) => Ok(value.clone()),
        (ParamType::List, Value::String(s)) => Ok(Value::Array(
            s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(|p| Value::String(p.into())).collect(),
        )),
        (ty, v) => Err(format!("expected {}, found `{}`", ty.name(), expr::display(v))),
    }
}

pub(super) fn sites_map(node: &Node, sink: &mut Sink) -> BTreeMap<String, Site> {
    let mut out = BTreeMap::new();
    for (k, v) in expect_map(node, "sites", sink).unwrap_or_default() {
        let name = k.as_key();
        if !valid_id(&name) {
            sink.error(
                k.pos,
                format!("site name `{name}` is not valid"),
                Some("use letters, digits, `-` and `_`".into()),
            );
            continue;
        }
        if expect_map(v, &format!("sites.{name}"), sink).is_none() {
            continue;
        }
        out.insert(name, Site { settings: v.to_json(), file: sink.file().to_path_buf(), pos: k.pos, node: v.clone() });
    }
    out
}

/// Setting names taken for secrets in sections no built-in plugin declares (an external
/// plugin's): built-in sections declare theirs by typing them `SecretRef`.
pub const CONVENTIONAL_SECRETS: &[&str] =
    &["credentials", "password", "token", "secret", "secret_key", "access_key", "api_key"];

/// Every setting named in `secrets`, at any depth, must be a reference (`env:`, `file:`);
/// an inline value is reported without being echoed.
pub fn check_inline_secrets(node: &Node, place: &str, secrets: &[&str], sink: &mut Sink) {
    for (k, v) in node.entries().unwrap_or_default() {
        let key = k.as_key();
        let here = format!("{place}.{key}");
        if secrets.contains(&key.as_str()) {
            match v.as_str() {
                Some(text) => {
                    if let Err(msg) = drover_api::SecretRef::parse(text) {
                        // Never echo the value: it may be the secret itself.
                        sink.error(
                            v.pos,
                            format!("{here}: {msg}"),
                            Some(format!("write `{key}: env:VARIABLE` or `{key}: file:/path/to/secret`")),
                        );
                    }
                }
                None if matches!(v.kind, Kind::Map(_)) => check_inline_secrets(v, &here, secrets, sink),
                None => sink.error(v.pos, format!("{here} must be a reference such as `env:VAR` or `file:PATH`"), None),
            }
        } else if matches!(v.kind, Kind::Map(_)) {
            check_inline_secrets(v, &here, secrets, sink);
        }
    }
}

/// A sites file: `apiVersion: drover/v1`, `kind: Sites`, `sites: {...}`, and the estate's
/// `notify:` webhooks (appended to the runbook's).
pub fn sites_file(root: &Node, sink: &mut Sink) -> (BTreeMap<String, Site>, Vec<crate::notify::Notify>) {
    check_keys(root, &["apiVersion", "kind", "sites", "notify"], "a sites file", sink);
    let notify = root.get("notify").map(|n| crate::notify::decode(n, sink)).unwrap_or_default();
    match root.get("kind") {
        Some(n) if n.as_str() == Some("Sites") => {}
        Some(n) => sink.error(n.pos, format!("`kind` must be `Sites` in a sites file, found `{}`", n.as_key()), None),
        None => sink.error(
            root.pos,
            "missing `kind: Sites`",
            Some("start the file with `apiVersion: drover/v1` and `kind: Sites`".into()),
        ),
    }
    let sites = match root.get("sites") {
        Some(s) => sites_map(s, sink),
        None => {
            sink.error(root.pos, "missing `sites:`", None);
            BTreeMap::new()
        }
    };
    (sites, notify)
}

/// A params file: a mapping of name → value.
pub fn params_file(root: &Node, sink: &mut Sink) -> Vec<(String, Value, Pos)> {
    expect_map(root, "a params file", sink)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (k.as_key(), v.to_json(), k.pos))
        .collect()
}
