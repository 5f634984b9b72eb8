//! YAML tree → typed runbook, collecting every problem with its position.
//!
//! Hand-written rather than derived: serde stops at the first error and its messages do not
//! know which step they are in. Here every key is checked against the keys allowed at its
//! place (with the nearest one suggested) and decoding continues after each problem.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use drover_api::{PathSegment, closest_match};

use super::diag::Sink;
use super::expr::{self, Template};
pub use super::inputs::{CONVENTIONAL_SECRETS, check_inline_secrets, coerce, params_file, sites_file};
use super::inputs::{param_specs, sites_map};
use super::model::*;
use super::yaml::{Kind, Node, Pos};

pub(super) const TOP_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "params",
    "sites",
    "notify",
    "locks",
    "defaults",
    "on_failure",
    "concurrency",
    "steps",
];
pub(super) const META_KEYS: &[&str] = &["name", "description", "labels"];
pub(super) const PARAM_KEYS: &[&str] = &["type", "default", "required", "description", "enum"];
pub(super) const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "uses",
    "with",
    "needs",
    "prepare_after",
    "if",
    "timeout",
    "retry",
    "continue_on_error",
    "undo",
    "confirm",
    "lock",
    "always",
    "point_of_no_return",
    "for_each",
];
pub(super) const FOR_EACH_KEYS: &[&str] =
    &["items", "key", "tier", "tiers", "isolate", "belongs_to", "before_tiers", "after_tiers"];
pub(super) const RETRY_KEYS: &[&str] = &["attempts", "backoff", "max_backoff"];
pub(super) const UNDO_KEYS: &[&str] = &["uses", "with"];
pub(super) const DEFAULT_KEYS: &[&str] = &["timeout", "retry"];

/// Report keys not in `known`, suggesting the nearest.
pub fn check_keys(node: &Node, known: &[&str], place: &str, sink: &mut Sink) {
    let Some(entries) = node.entries() else {
        return;
    };
    for (k, _) in entries {
        let key = k.as_key();
        if !known.contains(&key.as_str()) {
            let hint = match closest_match(&key, known) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("{place} accepts: {}", known.join(", ")),
            };
            sink.error(k.pos, format!("unknown key `{key}` in {place}"), Some(hint));
        }
    }
}

pub(super) fn expect_map<'n>(node: &'n Node, what: &str, sink: &mut Sink) -> Option<&'n [(Node, Node)]> {
    match &node.kind {
        Kind::Map(e) => Some(e),
        Kind::Null => Some(&[]),
        _ => {
            sink.error(node.pos, format!("{what} must be a mapping, found {}", node.type_name()), None);
            None
        }
    }
}

pub(super) fn string(node: &Node, what: &str, sink: &mut Sink) -> Option<String> {
    match &node.kind {
        Kind::Str { value, .. } => Some(value.clone()),
        Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => Some(node.as_key()),
        _ => {
            sink.error(node.pos, format!("{what} must be a string, found {}", node.type_name()), None);
            None
        }
    }
}

pub(super) fn boolean(node: &Node, what: &str, sink: &mut Sink) -> Option<bool> {
    match node.kind {
        Kind::Bool(b) => Some(b),
        _ => {
            sink.error(node.pos, format!("{what} must be true or false, found {}", node.type_name()), None);
            None
        }
    }
}

pub(super) fn positive(node: &Node, what: &str, sink: &mut Sink) -> Option<usize> {
    match node.kind {
        Kind::Int(i) if i > 0 => Some(i as usize),
        _ => {
            sink.error(node.pos, format!("{what} must be a whole number of at least 1"), None);
            None
        }
    }
}

pub fn duration(node: &Node, what: &str, sink: &mut Sink) -> Option<Duration> {
    let text = match &node.kind {
        Kind::Str { value, .. } => value.clone(),
        Kind::Int(0) => return Some(Duration::ZERO),
        Kind::Int(i) => {
            sink.error(node.pos, format!("{what}: `{i}` has no unit"), Some(format!("write `{i}s` for seconds")));
            return None;
        }
        _ => {
            sink.error(node.pos, format!("{what} must be a duration, found {}", node.type_name()), None);
            return None;
        }
    };
    match humantime::parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            sink.error(
                node.pos,
                format!("{what}: invalid duration `{text}` ({e})"),
                Some("write durations like `30s`, `5m` or `1h 30m`".into()),
            );
            None
        }
    }
}

pub(super) fn string_list(node: &Node, what: &str, sink: &mut Sink) -> Vec<(String, Pos)> {
    match &node.kind {
        Kind::Str { value, .. } => vec![(value.clone(), node.pos)],
        Kind::Seq(items) => items.iter().filter_map(|i| string(i, what, sink).map(|s| (s, i.pos))).collect(),
        Kind::Null => vec![],
        _ => {
            sink.error(node.pos, format!("{what} must be a list of step ids"), None);
            vec![]
        }
    }
}

/// Decode the whole file. Problems go to `sink`; the model holds what could be read.
pub fn runbook(root: Node, path: &Path, digest: String, sink: &mut Sink) -> Runbook {
    let mut rb = Runbook {
        path: path.to_path_buf(),
        digest,
        name: String::new(),
        description: String::new(),
        params: vec![],
        sites: BTreeMap::new(),
        locks: BTreeMap::new(),
        on_failure: OnFailure::Halt,
        concurrency: None,
        notify: vec![],
        steps: vec![],
        root: Node { pos: root.pos, kind: Kind::Null },
    };
    if !matches!(root.kind, Kind::Map(_)) {
        sink.error(
            root.pos,
            format!("a runbook must be a mapping, found {}", root.type_name()),
            Some("start the file with `apiVersion: drover/v1` and `kind: Runbook`".into()),
        );
        rb.root = root;
        return rb;
    }
    check_keys(&root, TOP_KEYS, "a runbook", sink);

    match root.get("apiVersion") {
        Some(n) if n.as_str() == Some(API_VERSION) => {}
        Some(n) => sink.error(
            n.pos,
            format!("unsupported apiVersion `{}`", n.as_key()),
            Some(format!("this drover reads `apiVersion: {API_VERSION}`")),
        ),
        None => sink.error(root.pos, "missing `apiVersion`", Some(format!("add `apiVersion: {API_VERSION}`"))),
    }
    match root.get("kind") {
        Some(n) if n.as_str() == Some("Runbook") => {}
        Some(n) => sink.error(n.pos, format!("`kind` must be `Runbook`, found `{}`", n.as_key()), None),
        None => sink.error(root.pos, "missing `kind`", Some("add `kind: Runbook`".into())),
    }
    match root.get("metadata") {
        Some(meta) => {
            check_keys(meta, META_KEYS, "metadata", sink);
            match meta.get("name").and_then(|n| string(n, "metadata.name", sink)) {
                Some(name) if valid_id(&name) => rb.name = name,
                Some(name) => sink.error(
                    meta.get("name").map(|n| n.pos).unwrap_or(meta.pos),
                    format!("metadata.name `{name}` is not a valid name"),
                    Some("use lowercase letters, digits, `-` and `_`, starting with a letter".into()),
                ),
                None => sink.error(meta.pos, "missing metadata.name", Some("add `name: my-runbook`".into())),
            }
            if let Some(d) = meta.get("description") {
                rb.description = string(d, "metadata.description", sink).unwrap_or_default();
            }
        }
        None => sink.error(root.pos, "missing `metadata`", Some("add `metadata: { name: my-runbook }`".into())),
    }
    if let Some(params) = root.get("params") {
        rb.params = param_specs(params, sink);
    }
    if let Some(sites) = root.get("sites") {
        rb.sites = sites_map(sites, sink);
    }
    if let Some(notify) = root.get("notify") {
        rb.notify = super::notify::decode(notify, sink);
    }
    if let Some(locks) = root.get("locks") {
        for (k, v) in expect_map(locks, "locks", sink).unwrap_or_default() {
            if let Some(n) = positive(v, &format!("locks.{}", k.as_key()), sink) {
                rb.locks.insert(k.as_key(), n);
            }
        }
    }
    if let Some(n) = root.get("on_failure") {
        match n.as_str() {
            Some("halt") => rb.on_failure = OnFailure::Halt,
            Some("rollback") => rb.on_failure = OnFailure::Rollback,
            _ => sink.error(n.pos, format!("on_failure must be `halt` or `rollback`, found `{}`", n.as_key()), None),
        }
    }
    if let Some(n) = root.get("concurrency") {
        rb.concurrency = positive(n, "concurrency", sink);
    }
    let mut default_timeout = DEFAULT_TIMEOUT;
    let mut default_retry = RetryPolicy::default();
    if let Some(d) = root.get("defaults") {
        check_keys(d, DEFAULT_KEYS, "defaults", sink);
        if let Some(t) = d.get("timeout").and_then(|t| duration(t, "defaults.timeout", sink)) {
            default_timeout = t;
        }
        if let Some(r) = d.get("retry") {
            default_retry = retry(r, &RetryPolicy::default(), sink);
        }
    }
    match root.get("steps") {
        Some(steps) => match steps.items() {
            Some(items) => {
                if items.is_empty() {
                    sink.error(steps.pos, "`steps` is empty", Some("add at least one step".into()));
                }
                let mut seen: HashMap<String, Pos> = HashMap::new();
                for (n, item) in items.iter().enumerate() {
                    if let Some(step) = step(item, n, default_timeout, &default_retry, sink) {
                        if let Some(first) = seen.get(&step.id) {
                            sink.error(
                                item.get("id").map(|n| n.pos).unwrap_or(item.pos),
                                format!("duplicate step id `{}` (first defined at line {})", step.id, first.line),
                                Some("give every step a unique id".into()),
                            );
                            continue;
                        }
                        seen.insert(step.id.clone(), step.pos);
                        rb.steps.push(step);
                    }
                }
            }
            None => sink.error(steps.pos, format!("`steps` must be a list, found {}", steps.type_name()), None),
        },
        None => sink.error(root.pos, "missing `steps`", Some("add a `steps:` list".into())),
    }
    rb.root = root;
    rb
}

pub fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn retry(node: &Node, base: &RetryPolicy, sink: &mut Sink) -> RetryPolicy {
    let mut r = base.clone();
    if let Kind::Int(_) = node.kind {
        // Shorthand: `retry: 3`.
        if let Some(n) = positive(node, "retry", sink) {
            r.attempts = n as u32;
        }
        return r;
    }
    if expect_map(node, "retry", sink).is_none() {
        return r;
    }
    check_keys(node, RETRY_KEYS, "retry", sink);
    if let Some(n) = node.get("attempts").and_then(|n| positive(n, "retry.attempts", sink)) {
        r.attempts = n as u32;
    }
    if let Some(d) = node.get("backoff").and_then(|n| duration(n, "retry.backoff", sink)) {
        r.backoff = d;
    }
    if let Some(d) = node.get("max_backoff").and_then(|n| duration(n, "retry.max_backoff", sink)) {
        r.max_backoff = d;
    }
    if r.max_backoff < r.backoff {
        sink.error(node.pos, "retry.max_backoff is shorter than retry.backoff", Some("raise max_backoff".into()));
    }
    r
}

fn template(node: &Node, text: &str, sink: &mut Sink) -> Option<Template> {
    match Template::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let quoted = matches!(node.kind, Kind::Str { quoted: true, .. });
            let col = node.pos.col + e.offset + usize::from(quoted);
            sink.error(
                Pos { line: node.pos.line, col },
                format!("invalid expression: {}", e.message),
                Some("expressions look like `${{ params.name }}` or `${{ steps.ID.outputs.KEY }}`".into()),
            );
            None
        }
    }
}

/// Every `${{ }}` string inside a `with:` tree.
fn slots(node: &Node, path: &mut Vec<PathSegment>, out: &mut Vec<Slot>, sink: &mut Sink) {
    match &node.kind {
        Kind::Str { value, .. } => {
            if let Some(t) = template(node, value, sink) {
                out.push(Slot { path: path.clone(), template: t, pos: node.pos, key: false });
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(PathSegment::Index(i));
                slots(item, path, out, sink);
                path.pop();
            }
        }
        Kind::Map(entries) => {
            for (k, v) in entries {
                let key = k.as_key();
                path.push(PathSegment::Key(key.clone()));
                slots(v, path, out, sink);
                if let Some(t) = template(k, &key, sink) {
                    out.push(Slot { path: path.clone(), template: t, pos: k.pos, key: true });
                }
                path.pop();
            }
        }
        _ => {}
    }
}

fn call(node: &Node, uses_node: Option<&Node>, with_node: Option<&Node>, place: &str, sink: &mut Sink) -> Option<Call> {
    let Some(uses_node) = uses_node else {
        sink.error(
            node.pos,
            format!("{place}: missing `uses`"),
            Some("name the action, e.g. `uses: exec`; `drover actions` lists them".into()),
        );
        return None;
    };
    let uses = string(uses_node, &format!("{place}.uses"), sink)?;
    let mut out = vec![];
    let with = match with_node {
        Some(w) => {
            if !matches!(w.kind, Kind::Map(_) | Kind::Null) {
                sink.error(
                    w.pos,
                    format!("{place}.with must be a mapping of parameters, found {}", w.type_name()),
                    None,
                );
            }
            slots(w, &mut vec![], &mut out, sink);
            w.to_json()
        }
        None => Value::Object(Default::default()),
    };
    Some(Call { uses, with: Arc::new(with), slots: out.into(), pos: uses_node.pos })
}

fn step(
    node: &Node,
    item: usize,
    default_timeout: Duration,
    default_retry: &RetryPolicy,
    sink: &mut Sink,
) -> Option<Step> {
    expect_map(node, "a step", sink)?;
    check_keys(node, STEP_KEYS, "a step", sink);
    let id = match node.get("id") {
        Some(n) => {
            let id = string(n, "step id", sink)?;
            if !valid_id(&id) {
                sink.error(
                    n.pos,
                    format!("step id `{id}` is not valid"),
                    Some("use letters, digits, `-` and `_`, starting with a letter".into()),
                );
                return None;
            }
            id
        }
        None => {
            sink.error(node.pos, "a step has no `id`", Some("add `id: some-name`".into()));
            return None;
        }
    };
    let place = format!("step `{id}`");
    let call = call(node, node.get("uses"), node.get("with"), &place, sink);
    // `needs` and `prepare_after`: lists of step ids.
    let mut step_ids = |key: &str| -> Vec<String> {
        node.get(key)
            .map(|n| string_list(n, &format!("{place}: {key}"), sink))
            .unwrap_or_default()
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    };
    let needs = step_ids("needs");
    let prepare_after = step_ids("prepare_after");
    let condition = node.get("if").and_then(|n| {
        let text = match &n.kind {
            Kind::Bool(b) => b.to_string(),
            _ => string(n, &format!("{place}: if"), sink)?,
        };
        let inner = text.trim();
        let inner = inner.strip_prefix("${{").and_then(|s| s.strip_suffix("}}")).unwrap_or(inner);
        match expr::parse(inner) {
            Ok(e) => Some((e, text)),
            Err(e) => {
                let quoted = matches!(n.kind, Kind::Str { quoted: true, .. });
                let lead = text.len() - text.trim_start().len() + if text.trim().starts_with("${{") { 3 } else { 0 };
                sink.error(
                    Pos { line: n.pos.line, col: n.pos.col + usize::from(quoted) + lead + e.offset },
                    format!("{place}: invalid condition: {}", e.message),
                    Some("conditions look like `params.mode == 'planned'`".into()),
                );
                None
            }
        }
    });
    let timeout =
        node.get("timeout").and_then(|n| duration(n, &format!("{place}: timeout"), sink)).unwrap_or(default_timeout);
    let retry = node.get("retry").map(|n| retry(n, default_retry, sink)).unwrap_or_else(|| default_retry.clone());
    let undo = node.get("undo").and_then(|u| {
        expect_map(u, &format!("{place}: undo"), sink)?;
        check_keys(u, UNDO_KEYS, "undo", sink);
        self::call(u, u.get("uses"), u.get("with"), &format!("{place}: undo"), sink)
    });
    let (confirm, confirm_text) = match node.get("confirm") {
        Some(n) => match string(n, &format!("{place}: confirm"), sink) {
            Some(text) => (template(n, &text, sink), Some(text)),
            None => (None, None),
        },
        None => (None, None),
    };
    let flag = |key: &str, sink: &mut Sink| {
        node.get(key).and_then(|n| boolean(n, &format!("{place}: {key}"), sink)).unwrap_or(false)
    };
    let continue_on_error = flag("continue_on_error", sink);
    let always = flag("always", sink);
    let point_of_no_return = flag("point_of_no_return", sink);
    let lock = node.get("lock").and_then(|n| string(n, &format!("{place}: lock"), sink));
    let description = node
        .get("description")
        .or_else(|| node.get("name"))
        .and_then(|n| string(n, &format!("{place}: description"), sink))
        .unwrap_or_default();
    Some(Step {
        id,
        description,
        call: call?,
        needs,
        prepare_after,
        condition,
        timeout,
        retry,
        continue_on_error,
        undo,
        confirm,
        confirm_text,
        lock,
        always,
        point_of_no_return,
        pos: node.pos,
        item,
        for_each: node.get("for_each").and_then(|n| for_each(n, &place, sink)),
        instance: None,
        after_any_outcome: false,
    })
}

/// `for_each: [a, b]`, `for_each: ${{ params.apps }}` or `for_each: { items: …, key: app }`.
fn for_each(node: &Node, place: &str, sink: &mut Sink) -> Option<ForEach> {
    let mut tier = None;
    let mut tiers = None;
    let mut isolate = false;
    let mut before_tiers = false;
    let mut after_tiers = false;
    let mut belongs_to = None;
    let (items_node, key) = match &node.kind {
        Kind::Map(_) => {
            check_keys(node, FOR_EACH_KEYS, "for_each", sink);
            let key = match node.get("key") {
                Some(k) => string(k, &format!("{place}: for_each.key"), sink)?,
                None => "name".to_string(),
            };
            tier = node.get("tier").and_then(|n| string(n, &format!("{place}: for_each.tier"), sink));
            tiers = node.get("tiers").and_then(|n| list_source(n, &format!("{place}: for_each.tiers"), sink));
            belongs_to = node.get("belongs_to").and_then(|n| string(n, &format!("{place}: for_each.belongs_to"), sink));
            isolate = node
                .get("isolate")
                .and_then(|n| boolean(n, &format!("{place}: for_each.isolate"), sink))
                .unwrap_or(false);
            before_tiers = node
                .get("before_tiers")
                .and_then(|n| boolean(n, &format!("{place}: for_each.before_tiers"), sink))
                .unwrap_or(false);
            after_tiers = node
                .get("after_tiers")
                .and_then(|n| boolean(n, &format!("{place}: for_each.after_tiers"), sink))
                .unwrap_or(false);
            if before_tiers && after_tiers {
                sink.error(
                    node.pos,
                    format!("{place}: for_each.before_tiers and for_each.after_tiers together"),
                    Some("a step runs before the tiers, in each item's tier, or after them: keep one".into()),
                );
            }
            if tiers.is_some() && tier.is_none() {
                sink.error(
                    node.pos,
                    format!("{place}: for_each.tiers without for_each.tier"),
                    Some("add `tier: FIELD`, the item field that names each item's tier".into()),
                );
            }
            let Some(items) = node.get("items") else {
                sink.error(
                    node.pos,
                    format!("{place}: for_each has no `items`"),
                    Some("add `items: ${{ params.apps }}`".into()),
                );
                return None;
            };
            (items, key)
        }
        _ => (node, "name".to_string()),
    };
    let items = list_source(items_node, &format!("{place}: for_each"), sink)?;
    Some(ForEach { items, key, tier, tiers, isolate, belongs_to, before_tiers, after_tiers, pos: items_node.pos })
}

/// A list written here, or an expression that yields one.
fn list_source(node: &Node, what: &str, sink: &mut Sink) -> Option<Items> {
    let wrong = |found: String, sink: &mut Sink| {
        sink.error(
            node.pos,
            format!("{what} must be a list, found {found}"),
            Some("write a list, or an expression such as `${{ params.apps }}`".into()),
        );
    };
    match &node.kind {
        Kind::Seq(_) => Some(Items::Literal(node.clone())),
        Kind::Str { value, .. } => match template(node, value, sink) {
            Some(t) => Some(Items::Expr(t, value.clone())),
            None if value.contains("${{") => None,
            None => {
                wrong(format!("the string `{value}`"), sink);
                None
            }
        },
        _ => {
            wrong(node.type_name().to_string(), sink);
            None
        }
    }
}
