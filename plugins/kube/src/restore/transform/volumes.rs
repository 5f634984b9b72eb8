//! Transforms of storage: PersistentVolumes pointed at the replicated copies of their volumes,
//! and claims provisioned from CSI snapshots.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Value, json};

use super::{Errors, FieldChange, Rewrite, VolumeRule, key, rewrite};
use drover_api::PathSegment::Index;

/// Volume rules, the first matching one applied to each PersistentVolume.
pub(super) struct Volumes(Vec<(VolumeRule, Option<Regex>)>);

impl Volumes {
    pub(super) fn compile(rules: &[VolumeRule], errors: &mut Errors) -> (String, Box<dyn Rewrite>) {
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(j, r)| {
                let re = r.handle.as_deref().and_then(|h| errors.regex(h, &[key("volumes"), Index(j), key("handle")]));
                (r.clone(), re)
            })
            .collect();
        (format!("volumes ({} rules)", rules.len()), Box::new(Volumes(compiled)))
    }
}

impl Rewrite for Volumes {
    fn apply(&self, _: &str, kind: &str, obj: &mut Value, changes: &mut Vec<FieldChange>) {
        if kind != "PersistentVolume" {
            return;
        }
        for (rule, handle) in &self.0 {
            if remap_volume(obj, rule, handle.as_ref(), changes) {
                break;
            }
        }
    }
}

/// PersistentVolumes renamed by a suffix, and the claims bound to them by name.
pub(super) struct VolumeNames(pub String);

impl Rewrite for VolumeNames {
    fn apply(&self, _: &str, kind: &str, obj: &mut Value, changes: &mut Vec<FieldChange>) {
        let renamed = |name: &str| Some(format!("{name}{}", self.0));
        match kind {
            "PersistentVolume" => rewrite(obj, "/metadata/name", changes, renamed),
            "PersistentVolumeClaim" => rewrite(obj, "/spec/volumeName", changes, renamed),
            _ => {}
        }
    }
}

/// Rewrite one PV by a rule; true when the rule matched.
fn remap_volume(obj: &mut Value, rule: &VolumeRule, handle: Option<&Regex>, changes: &mut Vec<FieldChange>) -> bool {
    let nfs = obj.pointer("/spec/nfs").is_some();
    let csi_driver = obj.pointer("/spec/csi/driver").and_then(Value::as_str).map(String::from);
    let matched = if nfs {
        rule.nfs_server.as_deref().is_none_or(|s| obj.pointer("/spec/nfs/server").and_then(Value::as_str) == Some(s))
            && (rule.nfs_server.is_some() || rule.path_prefix.is_some())
            && rule.path_prefix.as_deref().is_none_or(|p| {
                obj.pointer("/spec/nfs/path").and_then(Value::as_str).is_some_and(|path| path.starts_with(p))
            })
    } else {
        csi_driver.is_some() && rule.csi_driver.is_some() && csi_driver == rule.csi_driver
    };
    if !matched {
        return false;
    }
    if nfs {
        if let Some(to) = &rule.to_nfs_server {
            rewrite(obj, "/spec/nfs/server", changes, |_| Some(to.clone()));
        }
        if let (Some(from), Some(to)) = (&rule.path_prefix, &rule.to_path_prefix) {
            rewrite(obj, "/spec/nfs/path", changes, |p| {
                p.strip_prefix(from.as_str()).map(|rest| format!("{to}{rest}"))
            });
        }
        if let Some(suffix) = &rule.volume_suffix {
            rewrite(obj, "/spec/nfs/path", changes, |p| {
                let rest = p.strip_prefix('/').filter(|r| !r.is_empty())?;
                Some(match rest.split_once('/') {
                    Some((volume, below)) => format!("/{volume}{suffix}/{below}"),
                    None => format!("/{rest}{suffix}"),
                })
            });
        }
    } else {
        if let (Some(re), Some(to)) = (handle, &rule.to_handle) {
            rewrite(obj, "/spec/csi/volumeHandle", changes, |h| Some(re.replace(h, to.as_str()).into_owned()));
        }
        for (k, v) in &rule.attributes {
            let path = format!("/spec/csi/volumeAttributes/{}", k.replace('~', "~0").replace('/', "~1"));
            let before = obj.pointer(&path).cloned().unwrap_or(Value::Null);
            if before != json!(v) {
                changes.push(FieldChange { path, before, after: json!(v) });
                obj["spec"]["csi"]["volumeAttributes"][k] = json!(v);
            }
        }
    }
    // A replicated volume must outlive its claim: never let the standby delete the DR copy.
    rewrite(obj, "/spec/persistentVolumeReclaimPolicy", changes, |p| (p != "Retain").then(|| "Retain".to_string()));
    if obj.pointer("/spec/persistentVolumeReclaimPolicy").is_none() {
        changes.push(FieldChange {
            path: "/spec/persistentVolumeReclaimPolicy".into(),
            before: Value::Null,
            after: json!("Retain"),
        });
        obj["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
    }
    true
}

/// Claims of `NAMESPACE/CLAIM` get `dataSource` naming their snapshot and lose `volumeName`,
/// so a new volume is provisioned from the snapshot.
pub(super) struct Snapshots(pub BTreeMap<String, String>);

impl Rewrite for Snapshots {
    fn apply(&self, _: &str, kind: &str, obj: &mut Value, changes: &mut Vec<FieldChange>) {
        if kind != "PersistentVolumeClaim" {
            return;
        }
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let Some(snapshot) = self.0.get(&format!("{ns}/{name}")) else { return };
        let source = json!({ "apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot });
        let before = obj.pointer("/spec/dataSource").cloned().unwrap_or(Value::Null);
        if before != source {
            changes.push(FieldChange { path: "/spec/dataSource".into(), before, after: source.clone() });
            obj["spec"]["dataSource"] = source;
        }
        if let Some(spec) = obj["spec"].as_object_mut()
            && let Some(old) = spec.remove("volumeName")
        {
            changes.push(FieldChange { path: "/spec/volumeName".into(), before: old, after: Value::Null });
        }
    }
}
