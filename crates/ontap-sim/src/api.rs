//! The REST surface of one simulated cluster: routing, records as ONTAP renders them,
//! `fields=`, dotted-field filters, `max_records` + `next`, and job answers.

use drover_ontap::model::MirrorState;

use serde_json::{Value, json};

use super::dialect;
use super::query::*;
use super::records::*;
use super::world::{ApiError, Effect, Query, Relationship, World, rfc3339};

/// A topology's version that does not parse is checked as the oldest supported release.
const VERSION_UNKNOWN: drover_ontap::release::Version = drover_ontap::release::Version(0, 0, 0);

/// An answer: status, body, extra headers.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub location: Option<String>,
}

impl Answer {
    pub(crate) fn ok(body: Value) -> Self {
        Answer { status: 200, body, location: None }
    }

    fn job(_: &World, uuid: &str, _: &Query) -> Self {
        let link = json!({ "uuid": uuid, "_links": { "self": { "href": format!("/api/cluster/jobs/{uuid}") } } });
        Answer { status: 202, body: json!({ "job": link }), location: None }
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
                            "status": { "state": state, "update_time": rfc3339(w.clock.wall()) },
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
            // A watcher's `uuid=A|B|…`, filtered before records are rendered.
            let uuid = Prefilter::new(query.get("uuid"));
            let records = w.jobs_of(c).filter(|j| uuid.may_match(&j.uuid)).map(job_record).collect();
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
            // Filters on paths and uuids are applied before records are rendered: a cluster
            // may hold thousands of relationships, and these are the most frequent queries
            // (one relationship by path; a watcher's `uuid=A|B|…`).
            let (dst, src, uuid) = (
                Prefilter::new(query.get("destination.path")),
                Prefilter::new(query.get("source.path")),
                Prefilter::new(query.get("uuid")),
            );
            let records = w
                .rels
                .iter()
                .filter(|r| if list_sources { r.src_cluster == c } else { r.dst_cluster == c })
                .filter(|r| dst.may_match(&r.dst_path) && src.may_match(&r.src_path) && uuid.may_match(&r.uuid))
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
        state: MirrorState::Uninitialized,
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
        w.rels[i].state = MirrorState::BrokenOff;
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
