//! Reading the JSON schemas of parameter structs and site sections: what a place in `with:`
//! accepts, so `validate` can type-check `${{ }}` expressions before the run knows their values.

use serde_json::{Value, json};

use crate::{PathSegment, ValueType};

/// Follow `$ref`, and a nullable `anyOf` (an `Option`), to the schema describing the value.
pub fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            match root.get("$defs").and_then(|d| d.get(name)) {
                Some(def) => node = def,
                None => return node,
            }
        } else if let Some(any) = node.get("anyOf").and_then(Value::as_array) {
            let non_null: Vec<&Value> = any.iter().filter(|x| x.get("type") != Some(&json!("null"))).collect();
            match non_null.as_slice() {
                [one] => node = one,
                _ => return node,
            }
        } else {
            return node;
        }
    }
    node
}

/// The schema of the value at `path`, when the schema can tell.
pub fn at<'a>(root: &'a Value, path: &[PathSegment]) -> Option<&'a Value> {
    let mut node = root;
    for seg in path {
        let here = resolve(root, node);
        node = match seg {
            PathSegment::Key(k) => property(root, here, k)?,
            PathSegment::Index(_) => here.get("items")?,
        };
    }
    Some(resolve(root, node))
}

/// A property of an object schema, looking into the variants of `oneOf`/`anyOf` (enums with
/// data: `from: { velero: ... }`).
fn property<'a>(root: &'a Value, node: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(p) = node.get("properties").and_then(|p| p.get(key)) {
        return Some(p);
    }
    // A map with free keys (`env: { N: ... }`): every value has the same schema.
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        return Some(values);
    }
    for list in ["oneOf", "anyOf", "allOf"] {
        for variant in node.get(list).and_then(Value::as_array).into_iter().flatten() {
            if let Some(p) = property(root, resolve(root, variant), key) {
                return Some(p);
            }
        }
    }
    None
}

/// The value types a schema accepts; None when it accepts anything (or cannot tell).
pub fn accepts(root: &Value, node: &Value) -> Option<Vec<ValueType>> {
    let node = resolve(root, node);
    if node.get("enum").is_some() {
        let mut out: Vec<ValueType> =
            node["enum"].as_array()?.iter().map(ValueType::of).filter(|t| *t != ValueType::Any).collect();
        out.dedup();
        return Some(out);
    }
    let names: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => {
            // A choice of variants: the union of what they accept.
            let variants = ["oneOf", "anyOf"].iter().find_map(|k| node.get(*k).and_then(Value::as_array))?;
            let mut out = vec![];
            for v in variants {
                for t in accepts(root, v)? {
                    if !out.contains(&t) {
                        out.push(t);
                    }
                }
            }
            return Some(out);
        }
    };
    let mut out = vec![];
    for n in names {
        match n {
            "string" => out.push(ValueType::String),
            "integer" => out.push(ValueType::Int),
            "number" => out.extend([ValueType::Number, ValueType::Int]),
            "boolean" => out.push(ValueType::Bool),
            "array" => out.push(ValueType::List),
            "object" => out.push(ValueType::Map),
            _ => {}
        }
    }
    Some(out)
}

/// Whether a value of type `have` fits where `want` is accepted. A number or a boolean fits
/// where only text is taken: interpolation writes it as text there.
pub fn fits(have: ValueType, want: &[ValueType]) -> bool {
    let scalar = matches!(have, ValueType::Int | ValueType::Number | ValueType::Bool);
    have == ValueType::Any
        || want.contains(&have)
        || (have == ValueType::Int && want.contains(&ValueType::Number))
        || (scalar && want == [ValueType::String])
}

/// A number or `true`/`false` going where only text is taken becomes text: how `${{ }}`
/// writes a value into a parameter (`message: "${{ steps.d.outputs.status }}"`).
pub fn as_param(root: &Value, path: &[PathSegment], value: Value) -> Value {
    let only_text = || at(root, path).and_then(|place| accepts(root, place)).is_some_and(|w| w == [ValueType::String]);
    match value {
        Value::Number(_) | Value::Bool(_) if only_text() => Value::String(match &value {
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        }),
        other => other,
    }
}

/// A value the schema accepts, standing in for one only known at run time.
pub fn sample(root: &Value, node: &Value) -> Value {
    let node = resolve(root, node);
    if let Some(first) = node.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    if node.get("format").and_then(Value::as_str) == Some("duration") {
        return json!("1s");
    }
    let ty = match node.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null").into(),
        _ => return Value::Null,
    };
    match ty.as_str() {
        "string" => json!("x"),
        "integer" => json!(node.get("minimum").and_then(Value::as_i64).unwrap_or(0).max(1)),
        "number" => json!(1.0),
        "boolean" => json!(false),
        "array" => match node.get("items") {
            Some(items) => json!([sample(root, items)]),
            None => json!([]),
        },
        "object" => json!({}),
        _ => Value::Null,
    }
}

/// A value of a type, when no schema says more.
pub fn sample_of(ty: ValueType) -> Value {
    match ty {
        ValueType::String | ValueType::Any => json!("x"),
        ValueType::Int => json!(1),
        ValueType::Number => json!(1.0),
        ValueType::Bool => json!(false),
        ValueType::List => json!([]),
        ValueType::Map => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemars::JsonSchema;
    use serde::Deserialize;

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    #[serde(rename_all = "snake_case")]
    enum Until {
        Healthy,
        State,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Live {
        site: String,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    #[serde(rename_all = "snake_case")]
    enum From {
        Live(Live),
        Archive(String),
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct P {
        replicas: Option<u32>,
        until: Until,
        names: Vec<String>,
        max_lag: Option<crate::HumanDuration>,
        from: From,
    }

    fn root() -> Value {
        serde_json::to_value(schemars::SchemaGenerator::default().into_root_schema_for::<P>()).unwrap()
    }

    fn key(k: &str) -> PathSegment {
        PathSegment::Key(k.into())
    }

    #[test]
    fn what_a_place_accepts() {
        let r = root();
        assert_eq!(accepts(&r, at(&r, &[key("replicas")]).unwrap()), Some(vec![ValueType::Int]));
        assert_eq!(accepts(&r, at(&r, &[key("until")]).unwrap()), Some(vec![ValueType::String]));
        assert_eq!(accepts(&r, at(&r, &[key("names")]).unwrap()), Some(vec![ValueType::List]));
        let site = at(&r, &[key("from"), key("live"), key("site")]).unwrap();
        assert_eq!(accepts(&r, site), Some(vec![ValueType::String]));
    }

    #[test]
    fn samples_are_accepted_values() {
        let r = root();
        assert_eq!(sample(&r, at(&r, &[key("until")]).unwrap()), json!("healthy"));
        assert_eq!(sample(&r, at(&r, &[key("max_lag")]).unwrap()), json!("1s"));
        assert_eq!(sample(&r, at(&r, &[key("replicas")]).unwrap()), json!(1));
    }
}
