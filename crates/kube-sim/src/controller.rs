//! The small controller: workloads become ready, claims bind, snapshots turn ready, namespaces
//! finish deleting — after the configured delays, applied lazily at each request.

use serde_json::{Value, json};

use crate::store::*;

/// CSI VolumeSnapshots, which the small controller makes ready (when their CRD is installed).
const SNAPSHOTS: &str = "volumesnapshots.snapshot.storage.k8s.io";

impl Store {
    /// The small controller: workloads become ready, PVCs bind, namespaces finish deleting.
    pub fn tick(&mut self) {
        let now = self.clock.now();
        let due: Vec<(String, String, String)> = self
            .changed
            .iter()
            .filter(|(_, t)| {
                now.duration_since(**t) >= self.settings.ready_delay.min(self.settings.namespace_delete_delay)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            let (res, ns, name) = k.clone();
            // The CSI snapshot controller: a snapshot of a bound claim becomes ready to use; of
            // a missing claim, it reports the error the real controller reports.
            let snapshot_of = (res == SNAPSHOTS)
                .then(|| self.objects.get(&res).and_then(|m| m.get(&(ns.clone(), name.clone()))))
                .flatten()
                .and_then(|o| o.pointer("/spec/source/persistentVolumeClaimName").and_then(Value::as_str))
                .map(|claim| {
                    let pvc = self
                        .objects
                        .get("persistentvolumeclaims")
                        .and_then(|m| m.get(&(ns.clone(), claim.to_string())));
                    (
                        claim.to_string(),
                        pvc.map(|c| {
                            (c["status"]["phase"] == "Bound", c.pointer("/spec/resources/requests/storage").cloned())
                        }),
                    )
                });
            let Some(obj) = self.objects.get_mut(&res).and_then(|m| m.get_mut(&(ns.clone(), name.clone()))) else {
                self.changed.remove(&k);
                continue;
            };
            let age = now.duration_since(self.changed[&k]);
            match res.as_str() {
                "deployments.apps" | "statefulsets.apps" | "replicasets.apps" if age >= self.settings.ready_delay => {
                    let replicas = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
                    let generation = obj["metadata"]["generation"].clone();
                    obj["status"] = json!({ "observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                                            "availableReplicas": replicas, "updatedReplicas": replicas, "currentReplicas": replicas });
                    self.changed.remove(&k);
                }
                "daemonsets.apps" if age >= self.settings.ready_delay => {
                    let generation = obj["metadata"]["generation"].clone();
                    obj["status"] = json!({ "observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                                            "numberReady": 1, "numberAvailable": 1, "updatedNumberScheduled": 1 });
                    self.changed.remove(&k);
                }
                "jobs.batch" if age >= self.settings.ready_delay => {
                    if obj["status"]["conditions"].is_null() {
                        let completions = obj.pointer("/spec/completions").and_then(Value::as_i64).unwrap_or(1);
                        obj["status"] = json!({ "succeeded": completions, "completionTime": now_rfc3339(),
                                                "conditions": [{ "type": "Complete", "status": "True" }] });
                    }
                    self.changed.remove(&k);
                }
                "persistentvolumeclaims" if age >= self.settings.ready_delay => {
                    obj["status"] = json!({ "phase": "Bound", "accessModes": obj.pointer("/spec/accessModes").cloned().unwrap_or(json!([])),
                                            "capacity": obj.pointer("/spec/resources/requests").cloned().unwrap_or(json!({})) });
                    self.changed.remove(&k);
                }
                SNAPSHOTS if age >= self.settings.ready_delay => {
                    let uid = obj["metadata"]["uid"].as_str().unwrap_or_default().to_string();
                    match snapshot_of {
                        Some((_, Some((true, size)))) => {
                            obj["status"] = json!({ "boundVolumeSnapshotContentName": format!("snapcontent-{uid}"),
                                                    "creationTime": now_rfc3339(), "readyToUse": true, "restoreSize": size });
                            self.changed.remove(&k);
                        }
                        Some((_, Some((false, _)))) => {} // the claim is not bound yet: wait
                        Some((claim, None)) => {
                            obj["status"] = json!({ "readyToUse": false, "error": { "time": now_rfc3339(),
                                "message": format!("failed to get input parameters to create snapshot {name}: \"persistentvolumeclaims \\\"{claim}\\\" not found\"") } });
                            self.changed.remove(&k);
                        }
                        None => {
                            self.changed.remove(&k);
                        }
                    }
                }
                "namespaces" if age >= self.settings.namespace_delete_delay => {
                    if obj["status"]["phase"] == "Terminating" {
                        for (_, objects) in self.objects.iter_mut() {
                            objects.retain(|(n, _), _| n != &name);
                        }
                        if let Some(m) = self.objects.get_mut("namespaces") {
                            m.remove(&(String::new(), name.clone()));
                        }
                    }
                    self.changed.remove(&k);
                }
                "deployments.apps"
                | "statefulsets.apps"
                | "replicasets.apps"
                | "daemonsets.apps"
                | "jobs.batch"
                | "persistentvolumeclaims"
                | SNAPSHOTS
                | "namespaces" => {}
                _ => {
                    self.changed.remove(&k);
                }
            }
        }
    }
}
