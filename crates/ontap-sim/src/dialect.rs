//! What the emulated release accepts, checked before a request reaches the model — as strict
//! as a real cluster, with its error codes: a field in `fields=` the release does not have is
//! 400 code 262197 (target `fields`); an unknown query parameter or body field is 400 code
//! 262179 ("Unexpected argument"); a malformed value of a known parameter is 400 code 262185.
//! The definitions are the generated ones in `drover_ontap::release`, shared with the client.

use serde_json::Value;

use super::world::{ApiError, Query};
use drover_ontap::release::{Release, Resource};

/// Where a request goes: a resource, and whether it names one record.
pub struct Target<'r> {
    pub resource: &'r Resource,
    pub name: &'r str,
    pub instance: bool,
}

/// The resource a path belongs to; `None` is an API that does not exist (404).
pub fn target<'r>(release: &'r Release, segs: &[&str]) -> Option<Target<'r>> {
    let fits = |pattern: &str, segs: &[&str]| {
        let p: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
        p.len() == segs.len() && p.iter().zip(segs).all(|(p, s)| *p == "{}" || p == s)
    };
    // Collections first: `/api/cluster/jobs` is the jobs collection, not a record of `/api/cluster`.
    for (name, r) in &release.resources {
        if fits(&r.path, segs) {
            return Some(Target { resource: r, name, instance: name == "cluster" });
        }
    }
    let (_, parent) = segs.split_last()?;
    for (name, r) in &release.resources {
        if name != "cluster" && fits(&r.path, parent) {
            return Some(Target { resource: r, name, instance: true });
        }
    }
    None
}

fn unexpected(name: &str) -> ApiError {
    ApiError::new(400, "262179", format!("Unexpected argument \"{name}\".")).target(name)
}

fn invalid(field: &str, value: &str, expected: &str) -> ApiError {
    ApiError::new(400, "262185", format!("\"{value}\" is an invalid value for field \"{field}\" ({expected})"))
        .target(field)
}

fn boolean(field: &str, value: &str) -> Result<(), ApiError> {
    if value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false") {
        Ok(())
    } else {
        Err(invalid(field, value, "<true|false>"))
    }
}

/// Check a request's query and body against the release. Routing and the model come after.
pub fn check(t: &Target, method: &str, query: &Query, body: &Value) -> Result<(), ApiError> {
    let verb = match (method, t.instance) {
        ("GET", false) => "get_collection",
        ("GET", true) => "get",
        ("POST", _) => "post",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => return Ok(()),
    };
    for (key, value) in &query.0 {
        match key.as_str() {
            "fields" if method == "GET" => fields(t.resource, value)?,
            "order_by" if verb == "get_collection" => order_by(t.resource, value)?,
            "max_records" if verb == "get_collection" => match value.parse::<u64>() {
                Ok(n) if n >= 1 => {}
                _ => return Err(invalid(key, value, "<integer, 1 or more>")),
            },
            "return_timeout" if t.resource.takes_query(verb, key) => match value.parse::<u64>() {
                Ok(n) if n <= 120 => {}
                _ => return Err(invalid(key, value, "<integer 0..120>")),
            },
            // The simulator's own paging cursor, in the `next` links it writes.
            k if verb == "get_collection" && k.starts_with("start.") => {}
            k if t.resource.takes_query(verb, k) => boolean(k, value)?,
            // Any readable field filters a collection.
            k if verb == "get_collection" && t.resource.readable(k) => {}
            k => return Err(unexpected(k)),
        }
    }
    if method == "POST" || method == "PATCH" {
        let mut leaves = vec![];
        flatten("", body, &mut leaves);
        if let Some(field) = leaves.iter().find(|f| !t.resource.writable(method, f)) {
            return Err(unexpected(field));
        }
    }
    Ok(())
}

fn fields(r: &Resource, list: &str) -> Result<(), ApiError> {
    for f in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let known = matches!(f, "*" | "**") || r.readable(f.strip_suffix(".*").unwrap_or(f));
        if !known {
            return Err(ApiError::new(400, "262197", format!("The value \"{f}\" is invalid for field \"fields\""))
                .target("fields"));
        }
    }
    Ok(())
}

fn order_by(r: &Resource, list: &str) -> Result<(), ApiError> {
    for item in list.split(',').map(str::trim) {
        let mut words = item.split_whitespace();
        let field = words.next().unwrap_or("");
        let direction = words.next();
        if !r.readable(field) || !matches!(direction, None | Some("asc" | "desc")) || words.next().is_some() {
            return Err(invalid("order_by", item, "<field [asc|desc]>"));
        }
    }
    Ok(())
}

/// Dotted paths of a body's leaves; an array of objects contributes its objects' leaves.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<String>) {
    let join = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                flatten(&join(k), v, out);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for item in items {
                flatten(prefix, item, out);
            }
        }
        _ if !prefix.is_empty() => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_ontap::release::{RELEASES, Version, definitions};
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> Query {
        Query(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn rels(release: &'static Release) -> Target<'static> {
        target(release, &["api", "snapmirror", "relationships"]).unwrap()
    }

    #[test]
    fn a_field_the_release_lacks_is_refused_with_262197() {
        let old = definitions(Version(9, 10, 1));
        let e = check(&rels(old), "GET", &q(&[("fields", "uuid,group_type")]), &json!({})).unwrap_err();
        assert_eq!((e.status, e.code.as_str(), e.target.as_deref()), (400, "262197", Some("fields")));
        assert!(e.message.contains("\"group_type\""), "{}", e.message);
        let new = &RELEASES[RELEASES.len() - 1];
        check(&rels(new), "GET", &q(&[("fields", "uuid,group_type,transfer.state,clone.*")]), &json!({})).unwrap_err(); // clone.* is a volume field, not a relationship's
        check(&rels(new), "GET", &q(&[("fields", "uuid,group_type,transfer.state")]), &json!({})).unwrap();
    }

    #[test]
    fn an_unknown_filter_or_body_field_is_an_unexpected_argument() {
        let r = definitions(Version(9, 14, 1));
        let e = check(&rels(r), "GET", &q(&[("destination.pth", "svm:")]), &json!({})).unwrap_err();
        assert_eq!((e.code.as_str(), e.target.as_deref()), ("262179", Some("destination.pth")));
        check(&rels(r), "GET", &q(&[("destination.path", "svm:")]), &json!({})).unwrap();
        let one = target(r, &["api", "snapmirror", "relationships", "u-1"]).unwrap();
        let e = check(&one, "PATCH", &q(&[]), &json!({ "state": "paused", "statee": 1 })).unwrap_err();
        assert_eq!(e.target.as_deref(), Some("statee"));
        check(&one, "PATCH", &q(&[]), &json!({ "policy": { "name": "MirrorAllSnapshots" } })).unwrap();
    }

    #[test]
    fn malformed_values_of_known_parameters_are_refused() {
        let r = definitions(Version(9, 14, 1));
        for (k, v) in [("return_timeout", "121"), ("return_timeout", "soon"), ("max_records", "0")] {
            let e = check(&rels(r), "GET", &q(&[(k, v)]), &json!({})).unwrap_err();
            assert_eq!((e.code.as_str(), e.target.as_deref()), ("262185", Some(k)), "{k}={v}");
        }
        let one = target(r, &["api", "snapmirror", "relationships", "u-1"]).unwrap();
        check(&one, "PATCH", &q(&[("validate_only", "True")]), &json!({ "state": "paused" })).unwrap();
        assert!(check(&one, "PATCH", &q(&[("validate_only", "yes")]), &json!({})).is_err());
    }

    #[test]
    fn paths_resolve_to_resources_and_unknown_ones_to_nothing() {
        let r = definitions(Version(9, 14, 1));
        assert_eq!(target(r, &["api", "cluster", "jobs"]).unwrap().name, "job");
        assert_eq!(target(r, &["api", "cluster"]).unwrap().name, "cluster");
        let snaps = target(r, &["api", "storage", "volumes", "v", "snapshots"]).unwrap();
        assert_eq!((snaps.name, snaps.instance), ("snapshot", false));
        assert!(target(r, &["api", "storage", "volumez"]).is_none());
        assert!(target(r, &["api", "cluster", "nonsense"]).is_none());
    }
}
