//! Collections as ONTAP answers them: dotted-field filters with `*`, `!` and `|`, `fields=`
//! projection (expensive fields only on request), `order_by`, `max_records` with `next` links,
//! `return_records=false`; and bodies with dotted keys normalised.

use serde_json::{Map, Value, json};

use super::api::Answer;
use super::world::{ApiError, Query};

/// Look up a dotted field in a record.
pub(crate) fn dig<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(v, |cur, key| cur.get(key))
}

pub(crate) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// ONTAP query matching: `a|b` alternatives, `*` wildcards, `!` negation, `null`/`!null`.
pub(crate) fn matches(value: Option<&Value>, pattern: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix('!') {
        return !matches(value, rest);
    }
    if pattern == "null" {
        return value.is_none_or(Value::is_null);
    }
    let Some(value) = value else { return false };
    let text = scalar_text(value);
    pattern.split('|').any(|alt| glob(alt, &text))
}

/// A query pattern as a prefilter, to skip records before rendering them: a pattern of
/// plain alternatives (`A|B|…`) is a set looked up once per record; any other (globs,
/// negations) lets every record through, to [`matches`] on the rendered record.
pub(crate) struct Prefilter<'q>(Option<std::collections::HashSet<&'q str>>);

impl<'q> Prefilter<'q> {
    pub(crate) fn new(pattern: Option<&'q str>) -> Prefilter<'q> {
        Prefilter(pattern.filter(|p| !p.contains(['*', '!', '<', '>'])).map(|p| p.split('|').collect()))
    }

    pub(crate) fn may_match(&self, value: &str) -> bool {
        self.0.as_ref().is_none_or(|set| set.contains(value))
    }
}

pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == text;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else { return false };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(pos) = rest.find(part) else { return false };
            rest = &rest[pos + part.len()..];
        }
    }
    true
}

pub(crate) const RESERVED: &[&str] = &[
    "fields",
    "max_records",
    "return_records",
    "return_timeout",
    "order_by",
    "start.uuid",
    "list_destinations_only",
    "force",
    "source_info_only",
    "source_only",
    "destination_only",
    "failover",
    "force_failover",
    "failback",
    "validate_only",
];

/// Which fields of a full record to return.
pub(crate) fn project(full: &Value, fields: Option<&str>, keys: &[&str], expensive: &[&str]) -> Value {
    let mut out = Map::new();
    let keep = |out: &mut Map<String, Value>, dotted: &str| {
        if let Some(v) = dig(full, dotted) {
            insert_dotted(out, dotted, v.clone());
        }
    };
    for k in keys.iter().chain(["_links"].iter()) {
        keep(&mut out, k);
    }
    match fields {
        None => {}
        Some("**") => return full.clone(),
        Some(list) => {
            for f in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                if f == "*" {
                    if let Value::Object(m) = full {
                        for (k, v) in m {
                            if !expensive.contains(&k.as_str()) {
                                out.insert(k.clone(), v.clone());
                            }
                        }
                    }
                } else {
                    keep(&mut out, f.trim_end_matches(".*"));
                }
            }
        }
    }
    Value::Object(out)
}

pub(crate) fn insert_dotted(out: &mut Map<String, Value>, dotted: &str, v: Value) {
    match dotted.split_once('.') {
        None => {
            out.insert(dotted.to_string(), v);
        }
        Some((head, rest)) => {
            let entry = out.entry(head.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                insert_dotted(m, rest, v);
            }
        }
    }
}

pub(crate) fn common(full: Value, expensive: &[&str]) -> Value {
    match full {
        Value::Object(mut m) => {
            for e in expensive {
                m.remove(*e);
            }
            Value::Object(m)
        }
        other => other,
    }
}

/// A collection answer with filters, projection and paging.
pub(crate) fn collection(
    path: &str,
    records: Vec<Value>,
    query: &Query,
    keys: &[&str],
    expensive: &[&str],
) -> Result<Answer, ApiError> {
    let mut filtered: Vec<Value> = records
        .into_iter()
        .filter(|r| {
            query
                .0
                .iter()
                .filter(|(k, _)| !RESERVED.contains(&k.as_str()) && !k.starts_with("start."))
                .all(|(k, v)| matches(dig(r, k), v))
        })
        .collect();
    if let Some(order) = query.get("order_by") {
        sort_by(&mut filtered, order);
    }
    let start = query.get("start.uuid");
    let begin = match start {
        Some(u) => {
            filtered.iter().position(|r| r.get("uuid").and_then(Value::as_str) == Some(u)).unwrap_or(filtered.len())
        }
        None => 0,
    };
    let max = match query.get("max_records") {
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| ApiError::new(400, "2", "invalid value for max_records").target("max_records"))?,
        None => 10_000,
    };
    let page: Vec<Value> =
        filtered[begin..].iter().take(max).map(|r| project(r, query.get("fields"), keys, expensive)).collect();
    let mut links = json!({ "self": { "href": path_with_query(path, query) } });
    if let Some(next) = filtered.get(begin + max).and_then(|r| r.get("uuid")).and_then(Value::as_str) {
        let mut q: Vec<(String, String)> = query.0.iter().filter(|(k, _)| k != "start.uuid").cloned().collect();
        q.push(("start.uuid".into(), next.to_string()));
        links["next"] = json!({ "href": path_with_query(path, &Query(q)) });
    }
    let mut body = json!({ "num_records": page.len(), "_links": links });
    if query.get("return_records") != Some("false") {
        body["records"] = json!(page);
    }
    Ok(Answer::ok(body))
}

/// `order_by=a desc,b`: a stable sort by each key in turn (the dialect checked the fields).
pub(crate) fn sort_by(records: &mut [Value], order: &str) {
    let keys: Vec<(&str, bool)> = order
        .split(',')
        .map(|item| {
            let mut words = item.split_whitespace();
            (words.next().unwrap_or(""), words.next() == Some("desc"))
        })
        .collect();
    records.sort_by(|a, b| {
        keys.iter()
            .map(|(field, desc)| {
                let (x, y) = (dig(a, field).map(scalar_text), dig(b, field).map(scalar_text));
                let by = match (dig(a, field).and_then(Value::as_f64), dig(b, field).and_then(Value::as_f64)) {
                    (Some(m), Some(n)) => m.total_cmp(&n),
                    _ => x.cmp(&y),
                };
                if *desc { by.reverse() } else { by }
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// A collection, or with one more path segment the record of that uuid.
pub(crate) fn collection_or_one(
    path: &str,
    records: Vec<Value>,
    rest: &[&str],
    query: &Query,
    keys: &[&str],
) -> Result<Answer, ApiError> {
    match rest {
        [] => collection(path, records, query, keys, &[]),
        [uuid] => records
            .iter()
            .find(|r| r.get("uuid").and_then(Value::as_str) == Some(uuid))
            .map(|r| Answer::ok(project(r, query.get("fields").or(Some("*")), keys, &[])))
            .ok_or_else(ApiError::not_found),
        _ => Err(ApiError::new(404, "4", format!("API not found: {path}"))),
    }
}

pub(crate) fn path_with_query(path: &str, q: &Query) -> String {
    if q.0.is_empty() {
        return path.to_string();
    }
    let parts: Vec<String> = q.0.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    format!("{path}?{}", parts.join("&"))
}

/// What a query in a `next` link keeps as it is: a value's characters and ONTAP's operators.
const LINK_QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b':')
    .remove(b'*')
    .remove(b',')
    .remove(b'!');

pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, LINK_QUERY).to_string()
}

/// ONTAP accepts dotted keys in bodies (`{"svm.name": "x"}`); normalise them to nested objects.
pub fn normalise_body(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let v = normalise_body(v);
                match insert_merge(&mut out, &k, v) {
                    Ok(()) => {}
                    Err(v) => {
                        out.insert(k, v);
                    }
                }
            }
            Value::Object(out)
        }
        other => other,
    }
}

pub(crate) fn insert_merge(out: &mut Map<String, Value>, dotted: &str, v: Value) -> Result<(), Value> {
    match dotted.split_once('.') {
        None => match (out.get_mut(dotted), v) {
            (Some(Value::Object(existing)), Value::Object(new)) => {
                existing.extend(new);
                Ok(())
            }
            (_, v) => {
                out.insert(dotted.to_string(), v);
                Ok(())
            }
        },
        Some((head, rest)) => {
            let entry = out.entry(head.to_string()).or_insert_with(|| Value::Object(Map::new()));
            match entry {
                Value::Object(m) => insert_merge(m, rest, v),
                _ => Err(v),
            }
        }
    }
}
