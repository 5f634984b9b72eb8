//! The REST surface of one simulated cluster: routing, records as ONTAP renders them,
//! `fields=`, dotted-field filters, `max_records` + `next`, and job answers.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::dialect;
use super::world::{ApiError, Cluster, Effect, Query, Relationship, World, iso_duration, rfc3339};

/// A topology's version that does not parse is checked as the oldest supported release.
const VERSION_UNKNOWN: drover_ontap::release::Version = drover_ontap::release::Version(0, 0, 0);

/// An answer: status, body, extra headers.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub location: Option<String>,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Answer { status: 200, body, location: None }
    }

    fn job(_: &World, uuid: &str, _: &Query) -> Self {
        let link = json!({ "uuid": uuid, "_links": { "self": { "href": format!("/api/cluster/jobs/{uuid}") } } });
        Answer { status: 202, body: json!({ "job": link }), location: None }
    }
}

fn svm_ref(c: &Cluster, name: &str) -> Value {
    let uuid = c.svms.iter().find(|s| s.name == name).map(|s| s.uuid.clone()).unwrap_or_default();
    json!({ "name": name, "uuid": uuid })
}

fn relationship_record(w: &World, r: &Relationship) -> Value {
    let (src, dst) = (&w.clusters[r.src_cluster], &w.clusters[r.dst_cluster]);
    let endpoint = |c: &Cluster, path: &str| {
        json!({
            "path": path,
            "svm": svm_ref(c, path.split(':').next().unwrap_or("")),
            "cluster": { "name": c.name, "uuid": c.uuid },
        })
    };
    let source_up = src.reachable;
    let last_failed = r.transfer.as_ref().is_some_and(|t| t.state == "failed" || t.state == "aborted");
    let healthy = source_up && !last_failed;
    let mut rec = json!({
        "uuid": r.uuid,
        "source": endpoint(src, &r.src_path),
        "destination": endpoint(dst, &r.dst_path),
        "state": r.state,
        "healthy": healthy,
        "policy": { "name": r.policy, "type": "async" },
        "group_type": if r.is_svm_dr() { "svm_dr" } else { "none" },
        "_links": { "self": { "href": format!("/api/snapmirror/relationships/{}", r.uuid) } },
    });
    if !healthy {
        let message = if source_up { "The last transfer failed." } else { "Source cluster is unreachable." };
        rec["unhealthy_reason"] = json!([{ "code": "6621444", "message": message, "arguments": [] }]);
    }
    if let Some((name, at)) = &r.exported {
        rec["exported_snapshot"] = json!(name);
        rec["lag_time"] = json!(iso_duration(SystemTime::now().duration_since(*at).unwrap_or_default()));
    }
    if let Some(ip) = &r.identity_preservation {
        rec["identity_preservation"] = json!(ip);
    }
    if let Some(t) = &r.last_transfer_type {
        rec["last_transfer_type"] = json!(t);
    }
    if let Some(t) = &r.transfer {
        let mut tr = json!({ "state": t.state, "type": t.ttype, "bytes_transferred": t.bytes });
        if t.state == "transferring" {
            tr["uuid"] = json!(t.uuid);
            tr["_links"] =
                json!({ "self": { "href": format!("/api/snapmirror/relationships/{}/transfers/{}", r.uuid, t.uuid) } });
        }
        if let Some(end) = t.end {
            tr["end_time"] = json!(rfc3339(end));
        }
        rec["transfer"] = tr;
    }
    if r.is_svm_dr() {
        let names: Vec<Value> =
            w.volumes_of(r.dst_cluster, &r.dst_path).iter().map(|&v| json!({ "name": dst.volumes[v].name })).collect();
        rec["svmdr_volumes"] = json!(names);
    }
    rec
}

fn transfer_record(r: &Relationship) -> Option<Value> {
    let t = r.transfer.as_ref()?;
    let mut rec = json!({
        "uuid": t.uuid, "state": t.state, "type": t.ttype, "bytes_transferred": t.bytes,
        "relationship": { "uuid": r.uuid, "destination": { "path": r.dst_path } },
        "_links": { "self": { "href": format!("/api/snapmirror/relationships/{}/transfers/{}", r.uuid, t.uuid) } },
    });
    if let Some(end) = t.end {
        rec["end_time"] = json!(rfc3339(end));
    }
    Some(rec)
}

fn svm_record(w: &World, cluster: usize, s: &super::world::Svm) -> Value {
    let protected = w.rels.iter().any(|r| {
        (r.dst_cluster == cluster && r.dst_path == format!("{}:", s.name))
            || (r.src_cluster == cluster && r.src_path == format!("{}:", s.name))
    });
    json!({
        "uuid": s.uuid, "name": s.name, "state": s.state, "subtype": s.subtype,
        "snapmirror": { "is_protected": protected, "protection_type": if protected { "svmdr" } else { "default" } },
        "_links": { "self": { "href": format!("/api/svm/svms/{}", s.uuid) } },
    })
}

fn volume_record(c: &Cluster, v: &super::world::Volume) -> Value {
    let mut rec = json!({
        "uuid": v.uuid, "name": v.name, "type": v.vtype, "state": "online",
        "svm": svm_ref(c, &v.svm),
        "_links": { "self": { "href": format!("/api/storage/volumes/{}", v.uuid) } },
    });
    if let Some(p) = &v.nas_path {
        rec["nas"] = json!({ "path": p });
    }
    let has_clones = c.volumes.iter().any(|o| o.svm == v.svm && o.clone_of.as_ref().is_some_and(|(p, _)| p == &v.name));
    let mut clone = json!({ "is_flexclone": v.clone_of.is_some(), "has_flexclone": has_clones });
    if let Some((parent, snap)) = &v.clone_of {
        clone["parent_volume"] = json!({ "name": parent });
        clone["parent_snapshot"] = json!({ "name": snap });
        clone["parent_svm"] = svm_ref(c, &v.svm);
    }
    rec["clone"] = clone;
    rec
}

fn job_record(j: &super::world::Job) -> Value {
    let mut rec = json!({
        "uuid": j.uuid, "description": j.description, "state": j.state, "message": j.message, "code": j.code,
        "start_time": rfc3339(j.start),
        "_links": { "self": { "href": format!("/api/cluster/jobs/{}", j.uuid) } },
    });
    if let Some(end) = j.end {
        rec["end_time"] = json!(rfc3339(end));
    }
    if j.state == "failure" {
        rec["error"] = json!({ "code": j.code.to_string(), "message": j.message });
    }
    rec
}

/// Look up a dotted field in a record.
fn dig<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(v, |cur, key| cur.get(key))
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// ONTAP query matching: `a|b` alternatives, `*` wildcards, `!` negation, `null`/`!null`.
fn matches(value: Option<&Value>, pattern: &str) -> bool {
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

fn glob(pattern: &str, text: &str) -> bool {
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

const RESERVED: &[&str] = &[
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
fn project(full: &Value, fields: Option<&str>, keys: &[&str], expensive: &[&str]) -> Value {
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

fn insert_dotted(out: &mut Map<String, Value>, dotted: &str, v: Value) {
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

fn common(full: Value, expensive: &[&str]) -> Value {
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
fn collection(
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
fn sort_by(records: &mut [Value], order: &str) {
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
fn collection_or_one(
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

fn path_with_query(path: &str, q: &Query) -> String {
    if q.0.is_empty() {
        return path.to_string();
    }
    let parts: Vec<String> = q.0.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    format!("{path}?{}", parts.join("&"))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' | b'*' | b',' | b'!' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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

fn insert_merge(out: &mut Map<String, Value>, dotted: &str, v: Value) -> Result<(), Value> {
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

/// Route one request for cluster `c`.
pub fn route(
    w: &mut World,
    c: usize,
    method: &str,
    path: &str,
    query: &Query,
    body: &Value,
) -> Result<Answer, ApiError> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let cl = &w.clusters[c];
    let release = drover_ontap::release::definitions(
        drover_ontap::release::Version::parse(&cl.version).unwrap_or(VERSION_UNKNOWN),
    );
    let Some(target) = dialect::target(release, &segs) else {
        return Err(ApiError::new(404, "4", format!("API not found: {path}")));
    };
    dialect::check(&target, method, query, body)?;
    match (method, segs.as_slice()) {
        ("GET", ["api", "cluster"]) => Ok(Answer::ok(json!({
            "name": cl.name, "uuid": cl.uuid,
            "version": { "full": format!("NetApp Release {} (simulated)", cl.version), "generation": 9,
                         "major": cl.version.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()).unwrap_or(14),
                         "minor": cl.version.split('.').nth(2).and_then(|m| m.parse::<u32>().ok()).unwrap_or(0) },
            "_links": { "self": { "href": "/api/cluster" } },
        }))),
        ("GET", ["api", "cluster", "peers", rest @ ..]) => {
            let records: Vec<Value> = cl
                .peers
                .iter()
                .filter_map(|p| w.cluster_index(p))
                .map(|i| {
                    let peer = &w.clusters[i];
                    let state = if peer.reachable { "available" } else { "unavailable" };
                    json!({ "uuid": peer.uuid, "name": peer.name, "remote": { "name": peer.name },
                            "status": { "state": state, "update_time": rfc3339(SystemTime::now()) },
                            "authentication": { "state": "ok", "in_use": "ok" },
                            "_links": { "self": { "href": format!("/api/cluster/peers/{}", peer.uuid) } } })
                })
                .collect();
            collection_or_one(path, records, rest, query, &["uuid", "name"])
        }
        ("GET", ["api", "svm", "peers", rest @ ..]) => {
            let mut records = vec![];
            for ((ac, asvm), (bc, bsvm)) in &w.svm_peers {
                for (local, lsvm, remote, rsvm) in [(ac, asvm, bc, bsvm), (bc, bsvm, ac, asvm)] {
                    if *local != c {
                        continue;
                    }
                    let (lc, rc) = (&w.clusters[*local], &w.clusters[*remote]);
                    records.push(json!({
                        "uuid": format!("{}-{}", svm_ref(lc, lsvm)["uuid"].as_str().unwrap_or(""), rsvm),
                        "name": rsvm, "state": "peered", "applications": ["snapmirror"],
                        "svm": svm_ref(lc, lsvm),
                        "peer": { "svm": svm_ref(rc, rsvm), "cluster": { "name": rc.name, "uuid": rc.uuid } },
                    }));
                }
            }
            collection_or_one(path, records, rest, query, &["uuid", "name"])
        }
        ("GET", ["api", "cluster", "jobs"]) => {
            let records = w.jobs_of(c).map(job_record).collect();
            collection(path, records, query, &["uuid"], &[])
        }
        ("GET", ["api", "cluster", "jobs", uuid]) => match w.job(uuid).filter(|j| j.cluster == c) {
            Some(j) => Ok(Answer::ok(project(&job_record(j), query.get("fields").or(Some("*")), &["uuid"], &[]))),
            None => Err(ApiError::not_found()),
        },
        ("GET", ["api", "svm", "svms"]) => {
            let records = cl.svms.iter().map(|s| svm_record(w, c, s)).collect();
            collection(path, records, query, &["uuid", "name"], &[])
        }
        ("GET", ["api", "svm", "svms", uuid]) => {
            let s = cl.svms.iter().find(|s| s.uuid == *uuid).ok_or_else(ApiError::not_found)?;
            Ok(Answer::ok(project(&svm_record(w, c, s), query.get("fields").or(Some("*")), &["uuid", "name"], &[])))
        }
        ("PATCH", ["api", "svm", "svms", uuid]) => {
            let job = w.patch_svm(c, uuid, body)?;
            Ok(Answer::job(w, &job, query))
        }
        ("GET", ["api", "snapmirror", "relationships"]) => {
            let list_sources = query.flag("list_destinations_only");
            // Path filters are applied before records are rendered: a cluster may hold
            // thousands of relationships and this is the most frequent query.
            let by_path =
                |wanted: Option<&str>, path: &str| wanted.is_none_or(|p| p.contains(['*', '|', '!']) || p == path);
            let records = w
                .rels
                .iter()
                .filter(|r| if list_sources { r.src_cluster == c } else { r.dst_cluster == c })
                .filter(|r| {
                    by_path(query.get("destination.path"), &r.dst_path)
                        && by_path(query.get("source.path"), &r.src_path)
                })
                .map(|r| relationship_record(w, r))
                .collect();
            collection(path, records, query, &["uuid", "source.path", "destination.path"], &["svmdr_volumes"])
        }
        ("POST", ["api", "snapmirror", "relationships"]) => create_relationship(w, c, body, query),
        ("GET", ["api", "snapmirror", "relationships", uuid]) => {
            let r = w.rels.iter().find(|r| r.uuid == *uuid && r.dst_cluster == c).ok_or_else(ApiError::not_found)?;
            let full = relationship_record(w, r);
            let fields = query.get("fields");
            Ok(Answer::ok(match fields {
                None => common(full, &["svmdr_volumes"]),
                Some(f) => project(&full, Some(f), &["uuid"], &["svmdr_volumes"]),
            }))
        }
        ("PATCH", ["api", "snapmirror", "relationships", uuid]) => {
            if query.flag("validate_only") {
                return Ok(Answer::ok(json!({})));
            }
            let job = w.patch_relationship(c, uuid, body, query)?;
            Ok(Answer::job(w, &job, query))
        }
        ("DELETE", ["api", "snapmirror", "relationships", uuid]) => {
            let job = w.delete_relationship(c, uuid, query)?;
            Ok(Answer::job(w, &job, query))
        }
        ("GET", ["api", "snapmirror", "relationships", uuid, "transfers"]) => {
            let r = w.rels.iter().find(|r| r.uuid == *uuid && r.dst_cluster == c).ok_or_else(ApiError::not_found)?;
            collection(path, transfer_record(r).into_iter().collect(), query, &["uuid"], &[])
        }
        ("POST", ["api", "snapmirror", "relationships", uuid, "transfers"]) => {
            let t = w.post_transfer(c, uuid)?;
            let href = format!("/api/snapmirror/relationships/{uuid}/transfers/{t}");
            let body = if query.get("return_records") == Some("true") {
                json!({ "num_records": 1, "records": [{ "uuid": t, "_links": { "self": { "href": href } } }] })
            } else {
                json!({})
            };
            Ok(Answer { status: 201, body, location: Some(href) })
        }
        ("GET", ["api", "snapmirror", "relationships", uuid, "transfers", tuuid]) => {
            let r = w.rels.iter().find(|r| r.uuid == *uuid && r.dst_cluster == c).ok_or_else(ApiError::not_found)?;
            transfer_record(r).filter(|t| t["uuid"] == *tuuid).map(Answer::ok).ok_or_else(ApiError::not_found)
        }
        ("PATCH", ["api", "snapmirror", "relationships", uuid, "transfers", tuuid]) => {
            match body.get("state").and_then(Value::as_str) {
                Some("aborted" | "hard_aborted") => {
                    w.abort_transfer(c, uuid, tuuid)?;
                    Ok(Answer::ok(json!({})))
                }
                _ => {
                    Err(ApiError::new(400, "2", "transfer state must be \"aborted\" or \"hard_aborted\"")
                        .target("state"))
                }
            }
        }
        ("GET", ["api", "snapmirror", "policies", rest @ ..]) => {
            let records = ["MirrorAllSnapshots", "MirrorAndVault", "Asynchronous"]
                .iter()
                .enumerate()
                .map(|(i, n)| json!({ "uuid": format!("00000000-0000-0000-0000-00000000000{i}"), "name": n, "type": "async", "scope": "cluster",
                                      "_links": { "self": { "href": format!("/api/snapmirror/policies/00000000-0000-0000-0000-00000000000{i}") } } }))
                .collect();
            collection_or_one(path, records, rest, query, &["uuid", "name"])
        }
        ("GET", ["api", "storage", "volumes"]) => {
            let records = cl.volumes.iter().map(|v| volume_record(cl, v)).collect();
            collection(path, records, query, &["uuid", "name"], &["clone"])
        }
        ("POST", ["api", "storage", "volumes"]) => {
            let (job, uuid) = w.create_volume(c, body)?;
            let mut a = Answer::job(w, &job, query);
            a.location = Some(format!("/api/storage/volumes/{uuid}"));
            if query.get("return_records") == Some("true") {
                a.body["num_records"] = json!(1);
                a.body["records"] = json!([{ "uuid": uuid, "name": body.get("name") }]);
            }
            Ok(a)
        }
        ("GET", ["api", "storage", "volumes", uuid]) => {
            let v = cl.volumes.iter().find(|v| v.uuid == *uuid).ok_or_else(ApiError::not_found)?;
            let full = volume_record(cl, v);
            Ok(Answer::ok(match query.get("fields") {
                None => common(full, &["clone"]),
                Some(f) => project(&full, Some(f), &["uuid", "name"], &["clone"]),
            }))
        }
        ("PATCH", ["api", "storage", "volumes", uuid]) => {
            w.patch_volume(c, uuid, body)?;
            Ok(Answer::ok(json!({})))
        }
        ("DELETE", ["api", "storage", "volumes", uuid]) => {
            let job = w.delete_volume(c, uuid)?;
            Ok(Answer::job(w, &job, query))
        }
        ("GET", ["api", "storage", "volumes", uuid, "snapshots"]) => {
            let v = cl.volumes.iter().find(|v| v.uuid == *uuid).ok_or_else(ApiError::not_found)?;
            let snaps: Vec<Value> = v
                .snapshots
                .iter()
                .map(|s| {
                    // No label is modelled, and ONTAP leaves an unset label out.
                    json!({ "uuid": s.uuid, "name": s.name, "create_time": rfc3339(s.created), "state": "valid",
                            "volume": { "name": v.name, "uuid": v.uuid },
                            "_links": { "self": { "href": format!("/api/storage/volumes/{}/snapshots/{}", v.uuid, s.uuid) } } })
                })
                .collect();
            collection(path, snaps, query, &["uuid", "name"], &[])
        }
        (_, ["api", ..]) if segs.len() >= 2 => {
            Err(ApiError::new(405, "3", format!("{method} is not supported on {path} (a {} resource)", target.name)))
        }
        _ => Err(ApiError::new(404, "4", format!("API not found: {path}"))),
    }
}

fn create_relationship(w: &mut World, c: usize, body: &Value, query: &Query) -> Result<Answer, ApiError> {
    let src = body
        .pointer("/source/path")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::new(400, "2", "missing field \"source.path\"").target("source.path"))?;
    let dst = body
        .pointer("/destination/path")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::new(400, "2", "missing field \"destination.path\"").target("destination.path"))?;
    if !src.contains(':') || !dst.contains(':') {
        return Err(ApiError::new(400, "13303852", "destination.path provided does not contain \":\"")
            .target("destination.path"));
    }
    if let Some((svm, vol)) = dst.split_once(':') {
        let cl = &w.clusters[c];
        let exists = if vol.is_empty() {
            cl.svms.iter().any(|s| s.name == svm)
        } else {
            cl.volumes.iter().any(|v| v.svm == svm && v.name == vol)
        };
        if !exists {
            let what =
                if vol.is_empty() { format!("SVM \"{svm}\"") } else { format!("volume \"{vol}\" in SVM \"{svm}\"") };
            return Err(
                ApiError::new(404, "4", format!("The destination {what} does not exist.")).target("destination.path")
            );
        }
    }
    if w.rels.iter().any(|r| r.dst_cluster == c && r.dst_path == dst) {
        return Err(ApiError::new(409, "6619637", "A SnapMirror relationship with this destination already exists."));
    }
    // The source SVM name is the local (peer) name; find the peer cluster that owns it.
    let src_svm = src.split(':').next().unwrap_or("");
    let src_cluster = w
        .svm_peers
        .iter()
        .find_map(|((ac, asvm), (bc, bsvm))| match (*ac == c, *bc == c) {
            (true, _) if bsvm == src_svm => Some(*bc),
            (_, true) if asvm == src_svm => Some(*ac),
            _ => None,
        })
        .ok_or_else(|| ApiError::new(400, "13303886", format!("SVM peer permission not found for \"{src_svm}\".")))?;
    if src_cluster == c && src == dst {
        return Err(ApiError::new(400, "6619441", "The source and destination are the same."));
    }
    if query.flag("validate_only") {
        return Ok(Answer::ok(json!({})));
    }
    let uuid = w.uuid();
    w.rels.push(Relationship {
        uuid: uuid.clone(),
        src_cluster,
        dst_cluster: c,
        src_path: src.to_string(),
        dst_path: dst.to_string(),
        state: "uninitialized".into(),
        policy: body.pointer("/policy/name").and_then(Value::as_str).unwrap_or("Asynchronous").to_string(),
        identity_preservation: body.get("identity_preservation").and_then(Value::as_str).map(str::to_string),
        exported: None,
        transfer: None,
        last_transfer_type: None,
        busy: false,
        transfers_done: 0,
    });
    // The common snapshots of an earlier relationship in the other direction make a resync possible.
    let previous = w
        .clusters
        .iter()
        .flat_map(|cl| cl.volumes.iter())
        .flat_map(|v| v.snapshots.iter())
        .filter(|s| s.name.starts_with("snapmirror."))
        .max_by_key(|s| s.created)
        .map(|s| (s.name.clone(), s.created));
    let i = w.rels.len() - 1;
    let dst_vols = w.volumes_of(c, dst);
    let shares = previous.as_ref().is_some_and(|(name, _)| {
        dst_vols.iter().all(|&v| w.clusters[c].volumes[v].snapshots.iter().any(|s| &s.name == name))
    });
    if shares {
        w.rels[i].exported = previous;
        w.rels[i].state = "broken_off".into();
    }
    let job = w.start_job(c, "POST /api/snapmirror/relationships".into(), Effect::None, None);
    let mut a = Answer::job(w, &job, query);
    a.location = Some(format!("/api/snapmirror/relationships/{uuid}"));
    if query.get("return_records") == Some("true") {
        a.body["num_records"] = json!(1);
        a.body["records"] = json!([{ "uuid": uuid }]);
    }
    Ok(a)
}
