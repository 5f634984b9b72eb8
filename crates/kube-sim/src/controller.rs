//! The small controller: workloads become ready, claims bind, snapshots turn ready, namespaces
//! finish deleting — after the configured delays: on time, by a task of the server's (a watch
//! sees the change when it happens, as from a real controller), and at each request (a test's
//! manual clock moves only when the test says).
//!
//! Every request runs the controller first, so it must cost nothing when nothing is due: the
//! objects it waits on are kept in the order their delay runs out, and a tick looks only at
//! the front of that order (a fleet's lab holds thousands of objects changed moments ago).
//! Each change it makes is a write: a new `resourceVersion` and a watch event.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::store::*;

/// CSI VolumeSnapshots, which the small controller makes ready (when their CRD is installed).
const SNAPSHOTS: &str = "volumesnapshots.snapshot.storage.k8s.io";

/// Kinds that become ready (or bound) `ready_delay` after their spec changed.
const BECOME_READY: &[&str] = &[
    "deployments.apps",
    "statefulsets.apps",
    "replicasets.apps",
    "daemonsets.apps",
    "jobs.batch",
    "persistentvolumeclaims",
    SNAPSHOTS,
];

/// An object: its resource (`deployments.apps`), namespace and name.
pub(crate) type ObjectKey = (String, String, String);

/// The objects the controller will act on, by when their spec last changed.
#[derive(Default)]
pub(crate) struct Changes {
    /// The latest change of each object; older entries in the queues are stale.
    latest: HashMap<ObjectKey, Instant>,
    /// Workloads, claims and snapshots, oldest change first.
    ready: BTreeSet<(Instant, ObjectKey)>,
    /// Namespaces, oldest change first.
    namespaces: BTreeSet<(Instant, ObjectKey)>,
    /// Snapshots whose delay ran out while their claim was not bound: looked at each tick.
    waiting: BTreeSet<ObjectKey>,
    /// Wakes the controller's task: something new is due.
    pub(crate) marked: std::sync::Arc<tokio::sync::Notify>,
}

impl Changes {
    /// Note that an object's spec changed at `at` (kinds the controller ignores are dropped).
    pub(crate) fn mark(&mut self, object: ObjectKey, at: Instant) {
        let queue = if object.0 == "namespaces" {
            &mut self.namespaces
        } else if BECOME_READY.contains(&object.0.as_str()) {
            &mut self.ready
        } else {
            return;
        };
        queue.insert((at, object.clone()));
        self.marked.notify_one();
        self.waiting.remove(&object);
        self.latest.insert(object, at);
    }

    /// The objects whose delay has run out by `now`, and the snapshots still waiting.
    fn due(&mut self, now: Instant, ready_delay: Duration, namespace_delay: Duration) -> Vec<ObjectKey> {
        let mut due: Vec<ObjectKey> = std::mem::take(&mut self.waiting).into_iter().collect();
        for (queue, delay) in [(&mut self.ready, ready_delay), (&mut self.namespaces, namespace_delay)] {
            while let Some((at, _)) = queue.first()
                && now.saturating_duration_since(*at) >= delay
            {
                let (at, object) = queue.pop_first().expect("not empty");
                if self.latest.get(&object) == Some(&at) {
                    self.latest.remove(&object);
                    due.push(object);
                }
            }
        }
        due
    }
}

impl Store {
    /// The small controller: workloads become ready, PVCs bind, namespaces finish deleting.
    pub fn tick(&mut self) {
        let now = self.clock.now();
        let due = self.changes.due(now, self.settings.ready_delay, self.settings.namespace_delete_delay);
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
                continue;
            };
            // Whether the object's status changed (a write, with its own version and event),
            // or the namespace finished deleting.
            let (mut changed, mut gone) = (true, false);
            match res.as_str() {
                "deployments.apps" | "statefulsets.apps" | "replicasets.apps" => {
                    let replicas = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
                    let generation = obj["metadata"]["generation"].clone();
                    obj["status"] = json!({ "observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                                            "availableReplicas": replicas, "updatedReplicas": replicas, "currentReplicas": replicas });
                }
                "daemonsets.apps" => {
                    let generation = obj["metadata"]["generation"].clone();
                    obj["status"] = json!({ "observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                                            "numberReady": 1, "numberAvailable": 1, "updatedNumberScheduled": 1 });
                }
                "jobs.batch" if obj["status"]["conditions"].is_null() => {
                    let completions = obj.pointer("/spec/completions").and_then(Value::as_i64).unwrap_or(1);
                    obj["status"] = json!({ "succeeded": completions, "completionTime": now_rfc3339(),
                                            "conditions": [{ "type": "Complete", "status": "True" }] });
                }
                "persistentvolumeclaims" => {
                    obj["status"] = json!({ "phase": "Bound", "accessModes": obj.pointer("/spec/accessModes").cloned().unwrap_or(json!([])),
                                            "capacity": obj.pointer("/spec/resources/requests").cloned().unwrap_or(json!({})) });
                }
                SNAPSHOTS => {
                    let uid = obj["metadata"]["uid"].as_str().unwrap_or_default().to_string();
                    match snapshot_of {
                        Some((_, Some((true, size)))) => {
                            obj["status"] = json!({ "boundVolumeSnapshotContentName": format!("snapcontent-{uid}"),
                                                    "creationTime": now_rfc3339(), "readyToUse": true, "restoreSize": size });
                        }
                        // The claim is not bound yet: wait.
                        Some((_, Some((false, _)))) => {
                            self.changes.waiting.insert(k);
                            changed = false;
                        }
                        Some((claim, None)) => {
                            obj["status"] = json!({ "readyToUse": false, "error": { "time": now_rfc3339(),
                                "message": format!("failed to get input parameters to create snapshot {name}: \"persistentvolumeclaims \\\"{claim}\\\" not found\"") } });
                        }
                        None => changed = false,
                    }
                }
                "namespaces" if obj["status"]["phase"] == "Terminating" => (changed, gone) = (false, true),
                _ => changed = false,
            }
            if changed {
                let rv = self.next_rv();
                if let Some(obj) = self.objects.get_mut(&res).and_then(|m| m.get_mut(&(ns.clone(), name.clone()))) {
                    obj["metadata"]["resourceVersion"] = json!(rv);
                    let obj = obj.clone();
                    self.events.record(&res, "MODIFIED", &obj);
                }
            }
            if gone {
                self.remove_namespace(&name);
            }
        }
    }

    /// A deleted namespace goes, with everything in it: a DELETED event for each.
    fn remove_namespace(&mut self, name: &str) {
        let mut removed = vec![];
        for (resource, objects) in self.objects.iter_mut() {
            let in_it: Vec<(String, String)> = objects
                .range((name.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == name)
                .map(|(k, _)| k.clone())
                .collect();
            removed.extend(in_it.into_iter().filter_map(|k| objects.remove(&k)).map(|o| (resource.clone(), o)));
        }
        if let Some(o) = self.objects.get_mut("namespaces").and_then(|m| m.remove(&(String::new(), name.to_string()))) {
            removed.push(("namespaces".to_string(), o));
        }
        for (resource, mut o) in removed {
            o["metadata"]["resourceVersion"] = json!(self.next_rv());
            self.events.record(&resource, "DELETED", &o);
        }
    }

    /// How long until the controller has something to do (at most `idle`).
    pub(crate) fn next_tick(&self, idle: Duration) -> Duration {
        if !self.changes.waiting.is_empty() {
            return idle.min(Duration::from_millis(50));
        }
        let now = self.clock.now();
        let due = |queue: &BTreeSet<(Instant, ObjectKey)>, delay: Duration| {
            queue.first().map(|(at, _)| (*at + delay).saturating_duration_since(now)).unwrap_or(idle)
        };
        due(&self.changes.ready, self.settings.ready_delay)
            .min(due(&self.changes.namespaces, self.settings.namespace_delete_delay))
            .min(idle)
    }
}
