//! Integrations with what operators already run, on a real control plane: CSI volume snapshots
//! (the snapshot CRDs installed; a small controller in this file plays the CSI snapshot
//! controller, which needs a storage driver this cluster has not) and an installed Velero (its
//! CRDs installed; a small controller here moves Backups, Restores and Schedules through
//! Velero's phases, including the failures). Claims bind to statically provisioned volumes.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::{Handle, Site, site};
use drover_api::ErrorKind;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// A claim bound to a statically provisioned volume, the snapshot CRDs, and a stand-in for the
/// CSI snapshot controller.
async fn with_claim(s: &Site) -> tokio::task::JoinHandle<()> {
    let manifests = json!([
        { "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "shop" } },
        { "apiVersion": "v1", "kind": "PersistentVolume", "metadata": { "name": "pv-east-db" },
          "spec": { "capacity": { "storage": "1Gi" }, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                    "nfs": { "server": "10.0.1.10", "path": "/db" }, "claimRef": { "namespace": "shop", "name": "db-data" } } },
        { "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": { "name": "db-data", "namespace": "shop" },
          "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "volumeName": "pv-east-db",
                    "resources": { "requests": { "storage": "1Gi" } } } },
    ]);
    s.run("kube.apply", json!({ "site": "east", "inline": manifests })).await.unwrap();
    s.run("kube.apply", json!({ "site": "east", "manifests": [format!("{FIXTURES}/snapshot-crds.yaml")] }))
        .await
        .unwrap();
    s.eventually("the claim binds", Duration::from_secs(60), |s| {
        s.get("", "v1", "persistentvolumeclaims", Some("shop"), "db-data").unwrap()["status"]["phase"] == "Bound"
    })
    .await;
    tokio::spawn(snapshot_controller(s.handle()))
}

/// The CSI snapshot controller, as far as drover can tell: a snapshot of a bound claim becomes
/// ready to use with the claim's size; of a claim that is gone, it reports the error.
async fn snapshot_controller(h: Handle) {
    loop {
        for snap in h.list("snapshot.storage.k8s.io", "v1", "volumesnapshots").await {
            if !snap["status"].is_null() {
                continue;
            }
            let ns = snap["metadata"]["namespace"].as_str().unwrap_or("").to_string();
            let claim = snap.pointer("/spec/source/persistentVolumeClaimName").and_then(Value::as_str).unwrap_or("");
            let status = match h.get("", "v1", "persistentvolumeclaims", Some(&ns), claim).await {
                Some(c) if c["status"]["phase"] == "Bound" => json!({
                    "readyToUse": true,
                    "restoreSize": c.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("1Gi")),
                }),
                Some(_) => continue, // not bound yet
                None => json!({ "readyToUse": false, "error": {
                    "message": format!("failed to take snapshot: persistentvolumeclaim \"{claim}\" not found") } }),
            };
            h.set_status("snapshot.storage.k8s.io", "v1", "volumesnapshots", &snap, status).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_of_claims_become_ready_and_claims_can_be_restored_from_them() {
    let s = site().await;
    let controller = with_claim(&s).await;
    let with = json!({ "site": "east", "namespaces": ["shop"], "suffix": "pre-failback" });
    let plan = s.plan("kube.volume_snapshot", with.clone()).await;
    assert!(plan.checks.iter().all(|c| c.ok), "{plan:?}");
    assert_eq!(plan.changes, ["create VolumeSnapshot shop/db-data-pre-failback of claim db-data"]);

    let out = s.run("kube.volume_snapshot", with.clone()).await.unwrap();
    assert_eq!(out["by_claim"], json!({ "shop/db-data": "db-data-pre-failback" }));
    assert_eq!(out["snapshots"][0]["restore_size"], "1Gi");
    let snap = s.get("snapshot.storage.k8s.io", "v1", "volumesnapshots", Some("shop"), "db-data-pre-failback").unwrap();
    assert_eq!(snap["spec"]["source"]["persistentVolumeClaimName"], "db-data");
    assert_eq!(snap["status"]["readyToUse"], true);
    let version = snap["metadata"]["resourceVersion"].clone();
    // A resumed step finds its snapshot and takes no new one.
    assert_eq!(s.run("kube.volume_snapshot", with).await.unwrap(), out);
    let again =
        s.get("snapshot.storage.k8s.io", "v1", "volumesnapshots", Some("shop"), "db-data-pre-failback").unwrap();
    assert_eq!(again["metadata"]["resourceVersion"], version);

    // The restore pipeline provisions a claim from the snapshot.
    let copy = json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": { "name": "db-data", "namespace": "shop" },
                       "spec": { "accessModes": ["ReadWriteOnce"], "volumeName": "pv-east-db", "resources": { "requests": { "storage": "1Gi" } } } });
    let manifest = s.dir.path().join("claim.yaml");
    let ns = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "shop" } });
    let text = format!("{}---\n{}", serde_yaml::to_string(&ns).unwrap(), serde_yaml::to_string(&copy).unwrap());
    std::fs::write(&manifest, text).unwrap();
    let restore = json!({ "site": "east", "from": { "manifests": [manifest] }, "existing": "update",
                          "transforms": [{ "namespaces": { "shop": "shop-copy" } },
                                         { "volume_snapshots": { "shop-copy/db-data": "db-data-pre-failback" } }] });
    s.run("kube.restore", restore).await.unwrap();
    let claim = s.get("", "v1", "persistentvolumeclaims", Some("shop-copy"), "db-data").unwrap();
    assert_eq!(
        claim["spec"]["dataSource"],
        json!({ "apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "db-data-pre-failback" })
    );
    assert!(claim["spec"].get("volumeName").is_none(), "{claim}");
    controller.abort();
}

/// Real control plane. A CRD applied by one step serves its kinds to the very next step: the
/// apply waits until the API server serves them. CI caught a snapshot step told "the cluster
/// does not serve VolumeSnapshot" right after the step that applied its CRD (a race: the
/// server publishes a new kind a moment after it accepts the CRD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_applied_by_one_step_serves_its_kinds_to_the_next() {
    let s = site().await;
    s.run("kube.apply", json!({ "site": "east", "manifests": [format!("{FIXTURES}/snapshot-crds.yaml")] }))
        .await
        .unwrap();
    let plan = s.plan("kube.volume_snapshot", json!({ "site": "east", "namespaces": ["shop"] })).await;
    let not_served: Vec<_> = plan.failed_checks().filter(|c| c.detail.contains("does not serve")).collect();
    assert!(not_served.is_empty(), "{not_served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_claims_failed_snapshots_and_missing_crds_are_explained() {
    let s = site().await;
    let plan = s.plan("kube.volume_snapshot", json!({ "site": "east", "namespaces": ["shop"] })).await;
    let missing = plan.failed_checks().next().unwrap();
    assert!(missing.detail.contains("does not serve VolumeSnapshot"), "{plan:?}");
    let err = s.run("kube.volume_snapshot", json!({ "site": "east", "namespaces": ["shop"] })).await.unwrap_err();
    assert!(err.hint.as_deref().unwrap_or("").contains("external-snapshotter"), "{err:?}");

    let controller = with_claim(&s).await;
    let err = s
        .run("kube.volume_snapshot", json!({ "site": "east", "namespaces": ["shop"], "claims": ["ghost"] }))
        .await
        .unwrap_err();
    assert!(err.message.contains("no PersistentVolumeClaim shop/ghost"), "{}", err.message);

    // The claim goes while the snapshot is taken: the controller's error is the step's error.
    let with = json!({ "site": "east", "namespaces": ["shop"], "claims": ["db-data"], "suffix": "lost" });
    let run = {
        let ctx = s.ctx(Duration::from_secs(20));
        let action = common::find("kube.volume_snapshot");
        tokio::spawn(async move { action.run(&ctx, &with).await })
    };
    // The claim goes before the controller gets to the snapshot.
    controller.abort();
    while s.get("snapshot.storage.k8s.io", "v1", "volumesnapshots", Some("shop"), "db-data-lost").is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.run(
        "kube.delete",
        json!({ "site": "east", "kinds": ["PersistentVolumeClaim"], "namespaces": ["shop"], "names": ["db-data"] }),
    )
    .await
    .unwrap();
    let controller = tokio::spawn(snapshot_controller(s.handle()));
    let err = run.await.unwrap().unwrap_err();
    controller.abort();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("the snapshot of claim shop/db-data failed") && err.message.contains("not found"),
        "{}",
        err.message
    );
}

/// Velero, as far as drover can tell: its CRDs, a storage location, and a controller that
/// moves phases. A Backup labelled `test.drover.io/outcome: PartiallyFailed|Failed` ends so.
async fn velero(s: &Site) -> tokio::task::JoinHandle<()> {
    // The CRDs and the storage location in one apply: drover waits for the kinds the CRDs of an
    // apply provide (a separate step right after could meet a server not serving them yet).
    let objects = json!([
        { "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "velero" } },
        { "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation", "metadata": { "name": "default", "namespace": "velero" },
          "spec": { "provider": "aws", "objectStorage": { "bucket": "velero" } } },
    ]);
    s.run(
        "kube.apply",
        json!({ "site": "east", "manifests": [format!("{FIXTURES}/velero-crds.yaml")], "inline": objects }),
    )
    .await
    .unwrap();
    tokio::spawn(velero_controller(s.handle()))
}

/// Velero's controllers, as far as drover can tell: storage locations become Available;
/// Backups go InProgress, then Completed (or as their `test.drover.io/outcome` label says);
/// Restores complete from a Completed backup and fail validation otherwise; Schedules are
/// Enabled once observed.
async fn velero_controller(h: Handle) {
    let v = |p: &str| ("velero.io", "v1", p.to_string());
    loop {
        for o in h.list("velero.io", "v1", "backupstoragelocations").await {
            if o["status"]["phase"].is_null() {
                let (g, ver, p) = v("backupstoragelocations");
                h.set_status(g, ver, &p, &o, json!({ "phase": "Available" })).await;
            }
        }
        for o in h.list("velero.io", "v1", "backups").await {
            let status = match o["status"]["phase"].as_str() {
                None => json!({ "phase": "InProgress", "progress": { "totalItems": 12, "itemsBackedUp": 3 } }),
                Some("InProgress") => {
                    match o.pointer("/metadata/labels/test.drover.io~1outcome").and_then(Value::as_str) {
                        Some("PartiallyFailed") => {
                            json!({ "phase": "PartiallyFailed", "errors": 2, "warnings": 1, "progress": { "totalItems": 12, "itemsBackedUp": 10 } })
                        }
                        Some("Failed") => {
                            json!({ "phase": "Failed", "failureReason": "backup storage location default is unavailable" })
                        }
                        _ => {
                            json!({ "phase": "Completed", "warnings": 1, "progress": { "totalItems": 12, "itemsBackedUp": 12 } })
                        }
                    }
                }
                _ => continue,
            };
            h.set_status("velero.io", "v1", "backups", &o, status).await;
        }
        for o in h.list("velero.io", "v1", "restores").await {
            if !o["status"]["phase"].is_null() {
                continue;
            }
            let backup = o["spec"]["backupName"].as_str().unwrap_or("").to_string();
            let status = match h.get("velero.io", "v1", "backups", Some("velero"), &backup).await {
                Some(b) if b["status"]["phase"] == "Completed" => {
                    json!({ "phase": "Completed", "progress": { "totalItems": 12, "itemsRestored": 12 } })
                }
                Some(_) => {
                    json!({ "phase": "FailedValidation", "validationErrors": [format!("backup {backup} is not completed")] })
                }
                None => {
                    json!({ "phase": "FailedValidation", "validationErrors": [format!("Error retrieving backup: backup.velero.io \"{backup}\" not found")] })
                }
            };
            h.set_status("velero.io", "v1", "restores", &o, status).await;
        }
        for o in h.list("velero.io", "v1", "schedules").await {
            let generation = o["metadata"]["generation"].clone();
            if o["status"]["observedGeneration"] != generation {
                h.set_status(
                    "velero.io",
                    "v1",
                    "schedules",
                    &o,
                    json!({ "phase": "Enabled", "observedGeneration": generation }),
                )
                .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn velero_backups_and_restores_are_created_waited_for_and_reported() {
    let s = site().await;
    let controller = velero(&s).await;
    let backup =
        json!({ "site": "east", "name": "before-failover", "include": { "namespaces": ["shop"] }, "ttl": "72h" });
    let plan = s.plan("velero.backup", backup.clone()).await;
    assert!(plan.checks.iter().all(|c| c.ok), "{plan:?}");
    let out = s.run("velero.backup", backup.clone()).await.unwrap();
    assert_eq!(
        (out["phase"].clone(), out["warnings"].clone(), out["items"].clone()),
        (json!("Completed"), json!(1), json!(12))
    );
    let b = s.get("velero.io", "v1", "backups", Some("velero"), "before-failover").unwrap();
    assert_eq!(b["spec"], json!({ "includedNamespaces": ["shop"], "storageLocation": "default", "ttl": "72h0m0s" }));
    // Again (a resumed step): the same backup, nothing new.
    assert_eq!(s.run("velero.backup", backup.clone()).await.unwrap(), out);
    let mut other = backup.clone();
    other["include"] = json!({ "namespaces": ["billing"] });
    let err = s.run("velero.backup", other).await.unwrap_err();
    assert!(err.message.contains("exists with a different spec"), "{}", err.message);

    let restore = json!({ "site": "east", "name": "to-dr", "backup": "before-failover",
                          "namespace_mapping": { "shop": "shop-dr" }, "existing": "update", "exclude": { "resources": ["events"] } });
    let plan = s.plan("velero.restore", restore.clone()).await;
    assert!(plan.checks.iter().any(|c| c.ok && c.detail == "backup before-failover is Completed"), "{plan:?}");
    let out = s.run("velero.restore", restore).await.unwrap();
    assert_eq!(out["phase"], "Completed");
    let r = s.get("velero.io", "v1", "restores", Some("velero"), "to-dr").unwrap();
    assert_eq!(
        r["spec"],
        json!({ "backupName": "before-failover", "namespaceMapping": { "shop": "shop-dr" }, "existingResourcePolicy": "update", "excludedResources": ["events"] })
    );

    let missing = json!({ "site": "east", "name": "from-nothing", "backup": "no-such-backup" });
    let plan = s.plan("velero.restore", missing.clone()).await;
    assert!(plan.failed_checks().any(|c| c.detail.contains("no backup no-such-backup")), "{plan:?}");
    let err = s.run("velero.restore", missing).await.unwrap_err();
    assert!(err.message.starts_with("Velero refused restore from-nothing: Error retrieving backup"), "{}", err.message);
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partially_failed_and_failed_backups_fail_the_step_with_velero_s_reasons() {
    let s = site().await;
    let controller = velero(&s).await;
    // The outcome label is set by applying the Backup first, as an operator's tooling might.
    for (name, outcome) in [("partial", "PartiallyFailed"), ("broken", "Failed")] {
        let b = json!({ "apiVersion": "velero.io/v1", "kind": "Backup",
                        "metadata": { "name": name, "namespace": "velero", "labels": { "test.drover.io/outcome": outcome } },
                        "spec": { "includedNamespaces": ["shop"], "storageLocation": "default" } });
        s.run("kube.apply", json!({ "site": "east", "inline": [b] })).await.unwrap();
    }
    let with = |name: &str| json!({ "site": "east", "name": name, "include": { "namespaces": ["shop"] } });
    let err = s.run("velero.backup", with("partial")).await.unwrap_err();
    assert_eq!(err.message, "Velero backup partial partially failed: 2 error(s), 1 warning(s)");
    assert!(err.hint.as_deref().unwrap().contains("velero backup logs partial"), "{err:?}");
    let mut allowed = with("partial");
    allowed["allow_partially_failed"] = json!(true);
    let out = s.run("velero.backup", allowed).await.unwrap();
    assert_eq!((out["phase"].clone(), out["errors"].clone()), (json!("PartiallyFailed"), json!(2)));
    let err = s.run("velero.backup", with("broken")).await.unwrap_err();
    assert_eq!(err.message, "Velero backup broken failed: backup storage location default is unavailable");
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_applied_enabled_and_checked_before_anything_is_sent() {
    let s = site().await;
    let controller = velero(&s).await;
    let with = json!({ "site": "east", "name": "nightly", "schedule": "0 1 * * *", "include": { "namespaces": ["shop"] }, "ttl": "720h" });
    let out = s.run("velero.schedule", with.clone()).await.unwrap();
    assert_eq!(out["phase"], "Enabled");
    let mut changed = with.clone();
    changed["schedule"] = json!("@every 6h");
    s.run("velero.schedule", changed).await.unwrap();
    let sched = s.get("velero.io", "v1", "schedules", Some("velero"), "nightly").unwrap();
    assert_eq!(sched["spec"]["schedule"], "@every 6h");
    assert_eq!(sched["spec"]["template"]["ttl"], "720h0m0s");
    let action = common::find("velero.schedule");
    let mut bad = with;
    bad["schedule"] = json!("nightly at one");
    let errs = action.check_params(&bad).unwrap_err();
    assert!(format!("{errs:?}").contains("is not a cron expression"), "{errs:?}");
    controller.abort();
}
