//! Server-side apply and field ownership: `managedFields` per manager, conflicts with other
//! appliers (unless forced), and the typed-patch check the API server makes first.

use serde_json::{Value, json};

use crate::store::*;
use crate::types::ResourceType;
use drover_kube::patch;

impl Store {
    /// Server-side apply (`application/apply-patch+yaml`): create when absent, else merge the
    /// applied configuration; record the field manager in `managedFields`.
    pub fn apply(
        &mut self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        body: &Value,
        by: Applier,
        dry: bool,
    ) -> Result<Value, ApiError> {
        let Some(manager) = by.manager.filter(|m| !m.is_empty()) else {
            return Err(ApiError::invalid(t, name, "fieldManager", "Required value: is required for apply patch"));
        };
        if body.pointer("/metadata/name").and_then(Value::as_str).is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                body["metadata"]["name"]
            )));
        }
        typed_patch_fields(t, body)?;
        let mut applied = body.clone();
        if let Some(m) = applied.as_object_mut() {
            m.remove("status");
        }
        let mine = owned_paths(&applied);
        let entry = json!({ "manager": manager, "operation": "Apply", "apiVersion": t.api_version(), "time": now_rfc3339(),
                            "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&mine) });
        match self.get(t, ns, name) {
            Err(e) if e.code == 404 => {
                let mut obj = applied;
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["managedFields"] = json!([entry]);
                self.create(t, ns, obj, dry)
            }
            Err(e) => Err(e),
            Ok(old) => {
                // Fields another applier owns may only change with `force=true`, which moves them.
                let mut fields: Vec<Value> = old["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
                let mut conflicts = vec![];
                // Any other manager counts, appliers and plain writers alike (a `kubectl scale`).
                for f in fields.iter_mut().filter(|f| f["manager"] != manager) {
                    let theirs = paths_of(&f["fieldsV1"], "");
                    let contested: Vec<&String> = theirs
                        .iter()
                        .filter(|p| mine.contains(p) && pointer(&applied, p) != pointer(&old, p))
                        .collect();
                    if contested.is_empty() {
                        continue;
                    }
                    if by.force {
                        let kept: Vec<String> = theirs.iter().filter(|p| !contested.contains(p)).cloned().collect();
                        f["fieldsV1"] = fields_v1(&kept);
                    } else {
                        let who = f["manager"].as_str().unwrap_or("?").to_string();
                        conflicts.extend(contested.into_iter().map(|p| format!("conflict with \"{who}\": {p}")));
                    }
                }
                if !conflicts.is_empty() {
                    return Err(ApiError {
                        code: 409,
                        reason: "Conflict",
                        message: format!(
                            "Apply failed with {} conflict{}: {}",
                            conflicts.len(),
                            if conflicts.len() == 1 { "" } else { "s" },
                            conflicts.join("; ")
                        ),
                        details: json!({ "causes": conflicts }),
                    });
                }
                let mut new = old.clone();
                patch::strategic(&mut new, &applied);
                fields.retain(|f| f["manager"] != manager);
                fields.push(entry);
                new["metadata"]["managedFields"] = json!(fields);
                // A re-apply that changes neither the object nor who owns what is not a write
                // (the API server ignores a new timestamp alone).
                let untimed = |v: &Value| {
                    let mut v = v.clone();
                    for f in v["metadata"]["managedFields"].as_array_mut().into_iter().flatten() {
                        if let Some(f) = f.as_object_mut() {
                            f.remove("time");
                        }
                    }
                    v
                };
                if untimed(&old) == untimed(&new) {
                    return Ok(old);
                }
                self.store_update(t, old, new, false, dry)
            }
        }
    }
}

/// Who applies: the field manager, and whether it takes fields other appliers own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applier<'a> {
    pub manager: Option<&'a str>,
    pub force: bool,
}

/// Server-side apply builds a typed object from the applied configuration first; a field of the
/// wrong type fails there, and the API server answers 500 (not 422) with this message. The
/// simulator knows the numeric fields drover's tests meet.
pub(crate) fn typed_patch_fields(t: &ResourceType, body: &Value) -> Result<(), ApiError> {
    // (JSON pointer, the field as the API server names it)
    let mut numeric: Vec<(String, String)> = vec![];
    if matches!(t.kind.as_str(), "Deployment" | "StatefulSet" | "ReplicaSet" | "ReplicationController") {
        numeric.push(("/spec/replicas".into(), ".spec.replicas".into()));
    }
    if t.kind == "Service" {
        for i in 0..body.pointer("/spec/ports").and_then(Value::as_array).map(Vec::len).unwrap_or(0) {
            for f in ["port", "nodePort"] {
                numeric.push((format!("/spec/ports/{i}/{f}"), format!(".spec.ports[{i}].{f}")));
            }
        }
    }
    for (pointer, field) in numeric {
        let got = match body.pointer(&pointer) {
            None | Some(Value::Null | Value::Number(_)) => continue,
            Some(Value::String(_)) => "string",
            Some(Value::Bool(_)) => "bool",
            Some(Value::Array(_)) => "list",
            Some(Value::Object(_)) => "map",
        };
        return Err(ApiError {
            code: 500,
            reason: "",
            message: format!(
                "failed to create typed patch object ({}, Kind={}): {field}: expected numeric (int or float), got {got}",
                t.api_version(),
                t.kind
            ),
            details: json!({}),
        });
    }
    Ok(())
}

/// The leaf fields an applied configuration sets, as `.spec.replicas`; identity fields excluded.
pub(crate) fn owned_paths(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    walk(x, format!("{at}.{k}"), out);
                }
            }
            _ => out.push(at),
        }
    }
    let mut out = vec![];
    walk(v, String::new(), &mut out);
    let identity = [".apiVersion", ".kind", ".metadata.name", ".metadata.namespace"];
    out.retain(|p| !identity.contains(&p.as_str()) && !p.starts_with(".metadata.managedFields"));
    out
}

/// Paths in the `fieldsV1` form: `{"f:spec": {"f:replicas": {}}}`.
pub(crate) fn fields_v1(paths: &[String]) -> Value {
    let mut root = json!({});
    for p in paths {
        let mut at = &mut root;
        for part in p.trim_start_matches('.').split('.') {
            at = at.as_object_mut().expect("objects all the way").entry(format!("f:{part}")).or_insert(json!({}));
        }
    }
    root
}

pub(crate) fn paths_of(fields: &Value, at: &str) -> Vec<String> {
    let Some(m) = fields.as_object() else { return vec![] };
    if m.is_empty() {
        return if at.is_empty() { vec![] } else { vec![at.to_string()] };
    }
    m.iter()
        .filter_map(|(k, v)| k.strip_prefix("f:").map(|k| (k, v)))
        .flat_map(|(k, v)| paths_of(v, &format!("{at}.{k}")))
        .collect()
}
