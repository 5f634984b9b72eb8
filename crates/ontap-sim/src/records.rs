//! Records as ONTAP renders them: relationships, transfers, SVMs, volumes and jobs, with their
//! HAL links and the fields ONTAP leaves out when unset.

use drover_ontap::model::{JobState, TransferState};

use serde_json::{Value, json};

use super::world::{Cluster, Relationship, World, iso_duration, rfc3339};

pub(crate) fn svm_ref(c: &Cluster, name: &str) -> Value {
    let uuid = c.svms.iter().find(|s| s.name == name).map(|s| s.uuid.clone()).unwrap_or_default();
    json!({ "name": name, "uuid": uuid })
}

pub(crate) fn relationship_record(w: &World, r: &Relationship) -> Value {
    let (src, dst) = (&w.clusters[r.src_cluster], &w.clusters[r.dst_cluster]);
    let endpoint = |c: &Cluster, path: &str| {
        json!({
            "path": path,
            "svm": svm_ref(c, path.split(':').next().unwrap_or("")),
            "cluster": { "name": c.name, "uuid": c.uuid },
        })
    };
    let source_up = src.reachable;
    let last_failed =
        r.transfer.as_ref().is_some_and(|t| matches!(t.state, TransferState::Failed | TransferState::Aborted));
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
        rec["lag_time"] = json!(iso_duration(w.clock.wall().duration_since(*at).unwrap_or_default()));
    }
    if let Some(ip) = &r.identity_preservation {
        rec["identity_preservation"] = json!(ip);
    }
    if let Some(t) = &r.last_transfer_type {
        rec["last_transfer_type"] = json!(t);
    }
    if let Some(t) = &r.transfer {
        let mut tr = json!({ "state": t.state, "type": t.ttype, "bytes_transferred": t.bytes });
        if t.state == TransferState::Transferring {
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

pub(crate) fn transfer_record(r: &Relationship) -> Option<Value> {
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

pub(crate) fn svm_record(w: &World, cluster: usize, s: &super::world::Svm) -> Value {
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

pub(crate) fn volume_record(c: &Cluster, v: &super::world::Volume) -> Value {
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

pub(crate) fn job_record(j: &super::world::Job) -> Value {
    let mut rec = json!({
        "uuid": j.uuid, "description": j.description, "state": j.state, "message": j.message, "code": j.code,
        "start_time": rfc3339(j.start),
        "_links": { "self": { "href": format!("/api/cluster/jobs/{}", j.uuid) } },
    });
    if let Some(end) = j.end {
        rec["end_time"] = json!(rfc3339(end));
    }
    if j.state == JobState::Failure {
        rec["error"] = json!({ "code": j.code.to_string(), "message": j.message });
    }
    rec
}
