//! The patch formats the API server accepts: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902), and strategic merge patch — here merge patch plus merging of lists of objects
//! by their `name`, which covers containers, volumes, ports and env as clients use them.

use serde_json::{Map, Value};

/// RFC 7386: objects merge, `null` deletes, everything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Strategic merge: like [`merge`], but a list of objects that all carry `name` is merged
/// item by item (a `$patch: delete` item removes its match).
pub fn strategic(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    strategic(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (Value::Array(t), Value::Array(p)) if named(t) && named(p) => {
            for item in p {
                let name = item["name"].clone();
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match t.iter().position(|x| x["name"] == name) {
                    Some(i) if delete => {
                        t.remove(i);
                    }
                    Some(i) => strategic(&mut t[i], item),
                    None if delete => {}
                    None => t.push(item.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn named(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(|i| i.get("name").is_some_and(Value::is_string))
}

/// RFC 6902. Errors name the failing operation.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch is a list of operations")?;
    for (i, op) in ops.iter().enumerate() {
        let path = op["path"].as_str().ok_or(format!("operation {i} has no path"))?;
        match op["op"].as_str() {
            Some("add") => add(target, path, op["value"].clone())?,
            Some("remove") => {
                remove(target, path)?;
            }
            Some("replace") => {
                remove(target, path)?;
                add(target, path, op["value"].clone())?;
            }
            Some("move") => {
                let from = op["from"].as_str().ok_or(format!("operation {i} has no from"))?;
                let v = remove(target, from)?;
                add(target, path, v)?;
            }
            Some("copy") => {
                let from = op["from"].as_str().ok_or(format!("operation {i} has no from"))?;
                let v = target.pointer(from).cloned().ok_or(format!("copy: {from} does not exist"))?;
                add(target, path, v)?;
            }
            Some("test") => {
                if target.pointer(path) != Some(&op["value"]) {
                    return Err(format!("test failed at {path}"));
                }
            }
            other => return Err(format!("operation {i}: unknown op {other:?}")),
        }
    }
    Ok(())
}

fn split(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path.rsplit_once('/').ok_or(format!("invalid path {path:?}"))?;
    Ok((parent.to_string(), last.replace("~1", "/").replace("~0", "~")))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, key) = split(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(key, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i =
                if key == "-" { a.len() } else { key.parse::<usize>().map_err(|_| format!("bad index in {path}"))? };
            if i > a.len() {
                return Err(format!("index out of range in {path}"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("{parent} does not exist")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, key) = split(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&key).ok_or(format!("{path} does not exist")),
        Some(Value::Array(a)) => {
            let i = key.parse::<usize>().map_err(|_| format!("bad index in {path}"))?;
            if i >= a.len() {
                return Err(format!("{path} does not exist"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("{parent} does not exist")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_with_null() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge(&mut v, &json!({"b": {"c": null, "e": 4}, "f": [1]}));
        assert_eq!(v, json!({"a": 1, "b": {"d": 3, "e": 4}, "f": [1]}));
    }

    #[test]
    fn strategic_merge_merges_named_lists() {
        let mut v = json!({"containers": [{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}]});
        strategic(
            &mut v,
            &json!({"containers": [{"name": "app", "image": "a:2"}, {"name": "side", "$patch": "delete"}, {"name": "new", "image": "n"}]}),
        );
        assert_eq!(v, json!({"containers": [{"name": "app", "image": "a:2"}, {"name": "new", "image": "n"}]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut v = json!({"spec": {"replicas": 1, "list": [1, 2]}});
        json_patch(
            &mut v,
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/spec/list/-", "value": 9},
                {"op": "test", "path": "/spec/replicas", "value": 3},
                {"op": "remove", "path": "/spec/list/0"}
            ]),
        )
        .unwrap();
        assert_eq!(v, json!({"spec": {"replicas": 3, "list": [2, 9]}}));
        assert!(json_patch(&mut v, &json!([{"op": "test", "path": "/spec/replicas", "value": 4}])).is_err());
    }
}
