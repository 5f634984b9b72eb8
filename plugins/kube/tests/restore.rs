//! `kube.restore` and `kube.export` against two real control planes (`east`, `west`; see
//! `common`) and a real S3 server (moto, PyPI `moto[server]`, started here on loopback).
//! Backups are written in Velero's exact layout, with objects as an API server returns them
//! (uid, resourceVersion, managedFields, status). drover runs as the least-privileged user.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use common::{Site, all_families, named_site};
use drover_api::testing::Moto;
use drover_api::{Action, ActionError, Outputs, StepContext, testing};
use drover_kube::velero::{TarballWriter, backup_object, gzip_json};

fn moto() -> Moto {
    // SAFETY: every test sets the same values.
    unsafe {
        std::env::set_var("DROVER_TEST_S3_KEY", "testing");
        std::env::set_var("DROVER_TEST_S3_SECRET", "testing");
    }
    Moto::start().unwrap()
}

struct Lab {
    _moto: Moto,
    s3: aws_sdk_s3::Client,
    east: Site,
    west: Site,
    dir: tempfile::TempDir,
    sites: BTreeMap<String, Value>,
}

async fn lab() -> Lab {
    let moto = moto();
    let dir = tempfile::tempdir().unwrap();
    let families = all_families();
    let (east, west) = tokio::join!(named_site("east", &families), named_site("west", &families));
    let mut sites = BTreeMap::new();
    for (name, c) in [("east", &east), ("west", &west)] {
        sites.insert(name.to_string(), json!({ "kube": { "kubeconfig": c.kubeconfig, "context": name } }));
    }
    sites.insert(
        "backups".into(),
        json!({ "s3": { "endpoint": moto.url(), "region": "us-east-1", "path_style": true,
                        "access_key": "env:DROVER_TEST_S3_KEY", "secret_key": "env:DROVER_TEST_S3_SECRET" } }),
    );
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(moto.url())
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "test"))
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(conf);
    s3.create_bucket().bucket("dr-backups").send().await.unwrap();
    Lab { _moto: moto, s3, east, west, dir, sites }
}

fn find(name: &str) -> Arc<dyn Action> {
    drover_kube::actions().into_iter().find(|a| a.info().name == name).unwrap()
}

impl Lab {
    fn ctx(&self) -> StepContext {
        testing::context(self.sites.clone(), Duration::from_secs(30)).with_base_dir(self.dir.path())
    }

    async fn run(&self, action: &str, with: Value) -> Result<Outputs, ActionError> {
        let a = find(action);
        a.check_params(&with).unwrap_or_else(|e| panic!("{e:?}"));
        a.run(&self.ctx(), &with).await
    }

    async fn put(&self, key: &str, body: Vec<u8>) {
        self.s3.put_object().bucket("dr-backups").key(key).body(body.into()).send().await.unwrap();
    }

    /// A backup as Velero writes it: tarball, resource list, then velero-backup.json.
    async fn backup(&self, name: &str, phase: &str, completed: &str, items: &[(&str, Value)]) {
        let mut w = TarballWriter::new(Vec::new()).unwrap();
        for (resource, object) in items {
            w.add(resource, object).unwrap();
        }
        let list = json!(w.resource_list.clone());
        let count = w.items;
        self.put(&format!("velero/backups/{name}/{name}.tar.gz"), w.finish().unwrap()).await;
        self.put(&format!("velero/backups/{name}/{name}-resource-list.json.gz"), gzip_json(&list)).await;
        let b = backup_object(name, &["shop".into()], phase, "2026-11-20T01:00:00Z", completed, count);
        self.put(&format!("velero/backups/{name}/velero-backup.json"), b.to_string().into_bytes()).await;
    }

    /// Every kind these tests read is served at v1.
    fn get(&self, c: &Site, group: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        c.get(group, "v1", plural, ns, name)
    }

    async fn count(&self, c: &Site) -> Vec<String> {
        c.handle().census().await
    }
}

/// An object as the API server hands it out: server-set metadata and status included.
fn live(api_version: &str, kind: &str, ns: Option<&str>, name: &str, uid: &str, rest: Value) -> Value {
    let mut v = json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": { "name": name, "uid": uid, "resourceVersion": "48213", "generation": 3,
                      "creationTimestamp": "2026-10-01T08:00:00Z",
                      "managedFields": [{ "manager": "kubectl", "operation": "Apply", "apiVersion": api_version,
                                          "time": "2026-10-01T08:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {} }] },
    });
    if let Some(ns) = ns {
        v["metadata"]["namespace"] = json!(ns);
    }
    drover_kube::patch::merge(&mut v, &rest);
    v
}

fn shop_backup() -> Vec<(&'static str, Value)> {
    let owner = |kind: &str, name: &str, uid: &str| {
        json!({ "metadata": { "ownerReferences": [
        { "apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true }] } })
    };
    let mut rs =
        live("apps/v1", "ReplicaSet", Some("shop"), "web-5d9c", "uid-rs", json!({ "spec": { "replicas": 3 } }));
    drover_kube::patch::merge(&mut rs, &owner("Deployment", "web", "uid-web"));
    let mut pod = live(
        "v1",
        "Pod",
        Some("shop"),
        "web-5d9c-x1",
        "uid-pod",
        json!({ "spec": { "nodeName": "east-3" }, "status": { "phase": "Running" } }),
    );
    drover_kube::patch::merge(&mut pod, &owner("ReplicaSet", "web-5d9c", "uid-rs"));
    vec![
        (
            "namespaces",
            live(
                "v1",
                "Namespace",
                None,
                "shop",
                "uid-ns",
                json!({ "metadata": { "labels": { "team": "shop" } }, "status": { "phase": "Active" } }),
            ),
        ),
        (
            "deployments.apps",
            live(
                "apps/v1",
                "Deployment",
                Some("shop"),
                "web",
                "uid-web",
                json!({
            "metadata": { "labels": { "app": "web" } },
            "spec": { "replicas": 3, "selector": { "matchLabels": { "app": "web" } },
                      "template": { "metadata": { "labels": { "app": "web" } },
                                    "spec": { "containers": [{ "name": "web", "image": "registry.east.example.com/shop/web:1.4" }] } } },
            "status": { "replicas": 3, "readyReplicas": 3, "availableReplicas": 3, "observedGeneration": 3 } }),
            ),
        ),
        ("replicasets.apps", rs),
        ("pods", pod),
        (
            "services",
            live(
                "v1",
                "Service",
                Some("shop"),
                "web",
                "uid-svc",
                json!({
            "spec": { "type": "ClusterIP", "clusterIP": "10.96.0.17", "clusterIPs": ["10.96.0.17"], "ports": [{ "port": 80 }] } }),
            ),
        ),
        (
            "ingresses.networking.k8s.io",
            live(
                "networking.k8s.io/v1",
                "Ingress",
                Some("shop"),
                "web",
                "uid-ing",
                json!({
            "spec": { "rules": [{ "host": "shop.east.example.com" }], "tls": [{ "hosts": ["shop.east.example.com"] }] } }),
            ),
        ),
        (
            "persistentvolumeclaims",
            live(
                "v1",
                "PersistentVolumeClaim",
                Some("shop"),
                "data",
                "uid-pvc",
                json!({
            "metadata": { "annotations": { "pv.kubernetes.io/bind-completed": "yes" } },
            "spec": { "volumeName": "pv-shop-data", "storageClassName": "gold", "accessModes": ["ReadWriteOnce"],
                      "resources": { "requests": { "storage": "10Gi" } } }, "status": { "phase": "Bound" } }),
            ),
        ),
        (
            "persistentvolumes",
            live(
                "v1",
                "PersistentVolume",
                None,
                "pv-shop-data",
                "uid-pv",
                json!({
            "spec": { "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "gold", "capacity": { "storage": "10Gi" },
                      "accessModes": ["ReadWriteOnce"],
                      "nfs": { "server": "10.0.0.1", "path": "/svm1_shop_data" },
                      "claimRef": { "namespace": "shop", "name": "data", "uid": "uid-pvc", "resourceVersion": "1" } } }),
            ),
        ),
        (
            "configmaps",
            live("v1", "ConfigMap", Some("shop"), "kube-root-ca.crt", "uid-ca", json!({ "data": { "ca.crt": "x" } })),
        ),
        (
            "configmaps",
            live(
                "v1",
                "ConfigMap",
                Some("shop"),
                "scratch",
                "uid-scratch",
                json!({
            "metadata": { "labels": { "velero.io/exclude-from-backup": "true" } } }),
            ),
        ),
        (
            "configmaps",
            live("v1", "ConfigMap", Some("shop"), "settings", "uid-settings", json!({ "data": { "currency": "EUR" } })),
        ),
        ("serviceaccounts", live("v1", "ServiceAccount", Some("shop"), "default", "uid-sa", json!({}))),
        (
            "secrets",
            live(
                "v1",
                "Secret",
                Some("shop"),
                "web-token",
                "uid-tok",
                json!({ "type": "kubernetes.io/service-account-token" }),
            ),
        ),
        ("events", live("v1", "Event", Some("shop"), "web.17a", "uid-ev", json!({ "reason": "Scheduled" }))),
        (
            "customresourcedefinitions.apiextensions.k8s.io",
            live(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                "carts.shop.example.com",
                "uid-crd",
                json!({ "spec": { "group": "shop.example.com", "scope": "Namespaced",
                "names": { "plural": "carts", "singular": "cart", "kind": "Cart" },
                "versions": [{ "name": "v1", "served": true, "storage": true,
                               "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }] } }),
            ),
        ),
        (
            "carts.shop.example.com",
            live("shop.example.com/v1", "Cart", Some("shop"), "c1", "uid-c1", json!({ "spec": { "items": 2 } })),
        ),
    ]
}

fn transforms() -> Value {
    json!([
        { "namespaces": { "shop": "shop-dr" } },
        { "ingress_hosts": { "map": { "*.east.example.com": "*.west.example.com" } } },
        { "volumes": [{ "nfs_server": "10.0.0.1", "to_nfs_server": "10.1.0.1", "path_prefix": "/svm1_", "to_path_prefix": "/svm_dr_" }] },
        { "images": { "registry.east.example.com/": "registry.west.example.com/" } },
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_completed_backup_is_restored_cleaned_transformed_and_in_order() {
    let lab = lab().await;
    lab.backup(
        "nightly-1",
        "Completed",
        "2026-11-20T01:05:00Z",
        &[("configmaps", live("v1", "ConfigMap", Some("shop"), "old", "u", json!({})))],
    )
    .await;
    lab.backup("nightly-2", "Completed", "2026-11-21T01:05:00Z", &shop_backup()).await;
    lab.backup("nightly-3", "InProgress", "", &[]).await;
    lab.backup("nightly-4", "Failed", "2026-11-22T01:05:00Z", &[]).await;

    let with = json!({ "site": "west", "from": { "velero": { "site": "backups", "bucket": "dr-backups", "prefix": "velero", "backup": "latest" } },
                       "transforms": transforms() });
    let (ctx, recorded) = testing::context_recording(lab.sites.clone(), Duration::from_secs(30));
    let out = find("kube.restore").run(&ctx, &with).await.unwrap();
    assert_eq!(out["source"], "Velero backup nightly-2");
    assert_eq!(out["restored"], 9, "{out:?}");
    assert_eq!(out["failed"], json!([]));
    assert_eq!(out["created_crds"], json!(["carts.shop.example.com"]));
    // The CRD was journaled as ours when it was created, before the final checkpoint.
    let checkpoints = recorded.checkpoints.lock().unwrap().clone();
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    assert_eq!(checkpoints[0]["created_crds"], json!(["carts.shop.example.com"]), "{checkpoints:?}");
    assert_eq!(
        out["left_out"],
        json!({ "created by the cluster in every namespace": 2, "labelled velero.io/exclude-from-backup=true": 1,
                                         "never restored": 1, "recreated by its restored owner": 2, "service-account token": 1 })
    );

    let w = &lab.west;
    assert_eq!(lab.get(w, "", "namespaces", None, "shop-dr").unwrap()["metadata"]["labels"]["team"], "shop");
    let web = lab.get(w, "apps", "deployments", Some("shop-dr"), "web").unwrap();
    assert_ne!(web["metadata"]["uid"], "uid-web", "the server gave it a new identity");
    assert!(web["metadata"]["managedFields"].as_array().unwrap().iter().any(|m| m["manager"] == "drover"), "{web}");
    assert_eq!(web["spec"]["template"]["spec"]["containers"][0]["image"], "registry.west.example.com/shop/web:1.4");
    assert!(lab.get(w, "apps", "replicasets", Some("shop-dr"), "web-5d9c").is_none());
    let svm = lab.get(w, "", "services", Some("shop-dr"), "web").unwrap();
    assert_ne!(svm["spec"]["clusterIP"], "10.96.0.17");
    let ing = lab.get(w, "networking.k8s.io", "ingresses", Some("shop-dr"), "web").unwrap();
    assert_eq!(ing["spec"]["rules"][0]["host"], "shop.west.example.com");
    assert_eq!(ing["spec"]["tls"][0]["hosts"][0], "shop.west.example.com");
    let pv = lab.get(w, "", "persistentvolumes", None, "pv-shop-data").unwrap();
    assert_eq!(pv["spec"]["nfs"], json!({ "server": "10.1.0.1", "path": "/svm_dr_shop_data" }));
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    // (The volume controller binds it: it adds the claim's uid.)
    assert_eq!(
        (pv["spec"]["claimRef"]["namespace"].clone(), pv["spec"]["claimRef"]["name"].clone()),
        (json!("shop-dr"), json!("data"))
    );
    let pvc = lab.get(w, "", "persistentvolumeclaims", Some("shop-dr"), "data").unwrap();
    // The binding annotation of the old cluster was not carried (the volume controller here may
    // write its own): drover's own fields do not hold it.
    let drovers =
        pvc["metadata"]["managedFields"].as_array().unwrap().iter().find(|m| m["manager"] == "drover").unwrap();
    assert!(!drovers["fieldsV1"].to_string().contains("bind-completed"), "{drovers}");
    assert_eq!(
        lab.get(w, "shop.example.com", "carts", Some("shop-dr"), "c1").unwrap()["spec"]["items"],
        2,
        "CRD, then its CR"
    );

    // Again, once the controllers are done with it (rolled out, bound): nothing to do.
    lab.west
        .eventually("settled", Duration::from_secs(60), |w| {
            let web = w.get("apps", "v1", "deployments", Some("shop-dr"), "web").unwrap();
            let pvc = w.get("", "v1", "persistentvolumeclaims", Some("shop-dr"), "data").unwrap();
            web["status"]["availableReplicas"] == 3 && pvc["status"]["phase"] == "Bound"
        })
        .await;
    let with = json!({ "site": "west", "from": { "velero": { "site": "backups", "bucket": "dr-backups", "prefix": "velero", "backup": "nightly-2" } },
                       "transforms": transforms() });
    // The first re-apply takes back fields the volume controller wrote on the volume and the
    // claim (a real API server moves their versions once); after that, nothing changes.
    let again = lab.run("kube.restore", with.clone()).await.unwrap();
    assert!(again["restored"].as_u64().unwrap() <= 2, "{again:?}");
    assert_eq!(again["created_crds"], json!([]), "the CRD was there before this run");
    let third = lab.run("kube.restore", with).await.unwrap();
    assert_eq!((third["restored"].clone(), third["unchanged"].clone()), (json!(0), json!(9)), "{third:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_shows_counts_transforms_and_conflicts_and_changes_nothing() {
    let lab = lab().await;
    lab.backup("nightly-2", "Completed", "2026-11-21T01:05:00Z", &shop_backup()).await;
    let before = lab.count(&lab.west).await;
    let with = json!({ "site": "west", "from": { "velero": { "site": "backups", "bucket": "dr-backups", "prefix": "velero", "backup": "latest" } },
                       "transforms": transforms(), "preview_dir": "preview" });
    let plan = find("kube.restore").plan(&lab.ctx(), &with).await.unwrap();
    assert_eq!(lab.count(&lab.west).await, before, "a preview changes nothing");
    assert_eq!(plan.summary.split(": ").last().unwrap(), "9 create");
    assert!(plan.changes.contains(&"by namespace: (cluster) 3, shop-dr 6".to_string()), "{:#?}", plan.changes);
    assert!(
        plan.changes
            .contains(&"transform ingress hosts *.east.example.com → *.west.example.com: 2 fields changed".to_string())
    );
    assert!(plan.changes.contains(
        &"  Ingress shop-dr/web /spec/rules/0/host: \"shop.east.example.com\" → \"shop.west.example.com\"".to_string()
    ));
    let written = std::fs::read_to_string(lab.dir.path().join("preview/shop-dr/ingress-web.yaml")).unwrap();
    assert!(written.contains("shop.west.example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_backups_fail_naming_the_object_and_restore_nothing() {
    let lab = lab().await;
    let from = |backup: &str| json!({ "site": "west", "from": { "velero": { "site": "backups", "bucket": "dr-backups", "prefix": "velero", "backup": backup } } });
    let before = lab.count(&lab.west).await;
    let lab = &lab;
    let err = |with: Value| async move { lab.run("kube.restore", with).await.unwrap_err() };

    let e = err(from("missing")).await;
    assert_eq!(e.message, "s3://dr-backups/velero/backups/missing/velero-backup.json: not found");
    let e = err(json!({ "site": "west", "from": { "velero": { "site": "backups", "bucket": "no-such-bucket", "backup": "latest" } } })).await;
    assert!(e.message.starts_with("list s3://no-such-bucket/backups/"), "{}", e.message);
    let e = err(from("latest")).await;
    assert_eq!(e.message, "no completed backup in s3://dr-backups/velero/backups/");

    lab.backup("running", "InProgress", "", &shop_backup()).await;
    assert_eq!(err(from("running")).await.message, "backup running is InProgress");
    lab.backup("partial", "PartiallyFailed", "2026-11-21T00:00:00Z", &shop_backup()).await;
    let e = err(from("partial")).await;
    assert!(e.hint.unwrap().contains("allow_partially_failed: true"));

    lab.put("velero/backups/odd/velero-backup.json", br#"{"kind":"ConfigMap","apiVersion":"v1"}"#.to_vec()).await;
    assert!(err(from("odd")).await.message.ends_with("not a Velero Backup (kind \"ConfigMap\")"));

    lab.backup("cut", "Completed", "2026-11-21T00:00:00Z", &shop_backup()).await;
    let whole = lab.s3.get_object().bucket("dr-backups").key("velero/backups/cut/cut.tar.gz").send().await.unwrap();
    let whole = whole.body.collect().await.unwrap().into_bytes().to_vec();
    lab.put("velero/backups/cut/cut.tar.gz", whole[..whole.len() * 2 / 3].to_vec()).await;
    let e = err(from("cut")).await;
    assert!(e.message.starts_with("s3://dr-backups/velero/backups/cut/cut.tar.gz: "), "{}", e.message);

    // Crafted archives: an entry escaping the root, and a gzip bomb.
    let crafted = |path: &str, size: usize| {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best()));
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // `append_data` refuses `..`; write the name raw, as an attacker would.
        let name = h.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, std::io::repeat(b' ').take_bytes(size)).unwrap();
        b.into_inner().unwrap().finish().unwrap()
    };
    trait TakeBytes: std::io::Read + Sized {
        fn take_bytes(self, n: usize) -> std::io::Take<Self> {
            self.take(n as u64)
        }
    }
    impl<R: std::io::Read> TakeBytes for R {}
    lab.backup("evil", "Completed", "2026-11-21T00:00:00Z", &[]).await;
    lab.put("velero/backups/evil/evil.tar.gz", crafted("resources/../../etc/cron.d/x.json", 10)).await;
    assert!(
        err(from("evil")).await.message.ends_with("entry `resources/../../etc/cron.d/x.json` escapes the archive root")
    );
    lab.put("velero/backups/evil/evil.tar.gz", crafted("resources/configmaps/namespaces/shop/big.json", 64 << 20))
        .await;
    assert!(err(from("evil")).await.message.contains("more than any Kubernetes object"));

    assert_eq!(lab.count(&lab.west).await, before, "nothing was restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_endpoint_that_fails_throttles_or_stays_silent_is_retryable_within_the_step() {
    let lab = lab().await;
    let before = lab.count(&lab.west).await;
    let restore_from = |url: String, budget: Duration| {
        let mut sites = lab.sites.clone();
        sites.insert(
            "backups".into(),
            json!({ "s3": { "endpoint": url, "path_style": true,
            "access_key": "env:DROVER_TEST_S3_KEY", "secret_key": "env:DROVER_TEST_S3_SECRET" } }),
        );
        let ctx = testing::context(sites, budget);
        let with = json!({ "site": "west", "from": { "velero": { "site": "backups", "bucket": "dr-backups", "backup": "latest" } } });
        async move { find("kube.restore").run(&ctx, &with).await.unwrap_err() }
    };
    let slow_down = r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"#;
    for (status, body) in [(503, slow_down), (500, ""), (429, "")] {
        let s3 = drover_api::testing::ScriptedHttp::start(vec![(status, body.to_string())]).await;
        let e = restore_from(s3.url(), Duration::from_secs(30)).await;
        assert_eq!(e.kind, drover_api::ErrorKind::Retryable, "{status}: {e:?}");
        assert!(e.message.starts_with("list s3://dr-backups/backups/"), "{status}: {}", e.message);
        let hint =
            if status == 500 { "is the S3 endpoint reachable?" } else { "S3 is throttling or busy; the step retries" };
        assert_eq!(e.hint.as_deref(), Some(hint), "{status}");
    }
    let dead = drover_api::testing::RefusingPort::new();
    let e = restore_from(dead.url(), Duration::from_secs(30)).await;
    assert_eq!(e.kind, drover_api::ErrorKind::Retryable, "refused: {e:?}");
    let silent = drover_api::testing::ScriptedHttp::silent().await;
    let started = std::time::Instant::now();
    let e = restore_from(silent.url(), Duration::from_secs(2)).await;
    assert_eq!(e.kind, drover_api::ErrorKind::Retryable, "silent: {e:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the step: {:?}", started.elapsed());
    assert_eq!(lab.count(&lab.west).await, before, "nothing restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_server_refusing_the_credentials_is_permanent_and_never_shows_the_secret() {
    let lab = lab().await;
    // s3s-fs checks signatures (moto takes any key).
    let guarded = drover_api::testing::S3sFs::start().unwrap();
    guarded.bucket("dr-backups").await.unwrap();
    // SAFETY: every test sets the same values.
    unsafe {
        std::env::set_var("DROVER_TEST_S3S_KEY", drover_api::testing::S3S_ACCESS_KEY);
        std::env::set_var("DROVER_TEST_S3S_WRONG_SECRET", "wrong-secret-5be1");
        std::env::set_var("DROVER_TEST_S3S_SECRET", drover_api::testing::S3S_SECRET_KEY);
    }
    let restore = |secret: &str| {
        let mut sites = lab.sites.clone();
        sites.insert(
            "backups".into(),
            json!({ "s3": { "endpoint": guarded.url(), "path_style": true,
                            "access_key": "env:DROVER_TEST_S3S_KEY", "secret_key": format!("env:{secret}") } }),
        );
        let ctx = testing::context(sites, Duration::from_secs(30));
        let with = json!({ "site": "west", "from": { "velero": { "site": "backups", "bucket": "dr-backups", "prefix": "velero", "backup": "latest" } } });
        async move { find("kube.restore").run(&ctx, &with).await.unwrap_err() }
    };
    let e = restore("DROVER_TEST_S3S_WRONG_SECRET").await;
    assert_eq!(e.kind, drover_api::ErrorKind::Permanent, "{e:?}");
    assert!(e.message.starts_with("list s3://dr-backups/velero/backups/: access denied"), "{}", e.message);
    assert_eq!(e.hint.as_deref(), Some("check the site's s3 credentials and the bucket policy"));
    assert!(!format!("{e:?}").contains("wrong-secret-5be1"), "{e:?}");
    // With the right secret the same step gets in (and finds no backup in the empty bucket).
    let e = restore("DROVER_TEST_S3S_SECRET").await;
    assert_eq!(e.message, "no completed backup in s3://dr-backups/velero/backups/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_restore_round_trips_through_velero_format() {
    let lab = lab().await;
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests/shop");
    lab.run("kube.apply", json!({ "site": "east", "manifests": [manifests] })).await.unwrap();
    let out = lab
        .run("kube.export", json!({ "site": "east", "namespaces": ["shop"],
                                    "to": { "site": "backups", "bucket": "dr-backups", "prefix": "velero", "backup": "planned-1" } }))
        .await
        .unwrap();
    // A live namespace holds more than its manifests (the controllers' ReplicaSets and Pods,
    // the default account, …): the export takes all, the restore leaves out what it must.
    assert!(out["items"].as_u64().unwrap() > 5, "{out:?}");
    let restored = lab
        .run("kube.restore", json!({ "site": "west", "from": { "velero": { "site": "backups", "bucket": "dr-backups", "prefix": "velero", "backup": "latest" } } }))
        .await
        .unwrap();
    assert_eq!(restored["source"], "Velero backup planned-1");
    assert_eq!(restored["restored"], 5, "{restored:?}");
    for (group, plural, name) in
        [("apps", "deployments", "web"), ("apps", "statefulsets", "cart-db"), ("", "configmaps", "settings")]
    {
        let a = lab.get(&lab.east, group, plural, Some("shop"), name).unwrap();
        let b = lab.get(&lab.west, group, plural, Some("shop"), name).unwrap();
        assert_eq!(a["spec"], b["spec"], "{plural}/{name}");
        assert_eq!(a["data"], b["data"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_and_live_clusters_are_sources_too_and_a_resumed_restore_skips_what_it_did() {
    let lab = lab().await;
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests/shop");
    let out = lab.run("kube.restore", json!({ "site": "east", "from": { "manifests": [manifests] }, "transforms": [{ "replicas": { "replicas": 0 } }] }))
        .await
        .unwrap();
    assert_eq!(out["restored"], 5);
    assert_eq!(lab.get(&lab.east, "apps", "deployments", Some("shop"), "web").unwrap()["spec"]["replicas"], 0);

    // A restore interrupted after the namespace and the config map: those are not redone.
    lab.run("kube.apply", json!({ "site": "west", "inline": [{ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "shop" } }] }))
        .await
        .unwrap();
    // The interrupted run had also created a CRD: it stays in `created_crds` for the rehearsal's cleanup.
    let checkpoint = json!({ "restored": ["namespaces//shop", "configmaps/shop/settings"], "created_crds": ["carts.shop.example.com"] });
    let ctx = StepContext::new(
        "run",
        "restore",
        1,
        drover_api::Mode::Run,
        Some(tokio::time::Instant::now() + Duration::from_secs(30)),
        Arc::new(lab.sites.clone()),
        Default::default(),
        Arc::new(testing::NullHost),
        Some(checkpoint),
    );
    let live = json!({ "site": "west", "from": { "live": { "site": "east", "namespaces": ["sh*"] } } });
    let out = find("kube.restore").run(&ctx, &live).await.unwrap();
    assert_eq!((out["restored"].clone(), out["unchanged"].clone()), (json!(3), json!(2)), "{out:?}");
    assert_eq!(out["created_crds"], json!(["carts.shop.example.com"]), "{out:?}");
    assert!(
        lab.get(&lab.west, "", "configmaps", Some("shop"), "settings").is_none(),
        "journaled as done, so not redone"
    );
    assert_eq!(lab.get(&lab.west, "apps", "statefulsets", Some("shop"), "cart-db").unwrap()["spec"]["replicas"], 0);
}

/// Real control plane. A preview never leaks a Secret: its values are replaced by their sizes
/// (keys kept), `preview_secrets: true` includes them, and every file is 0600 in 0700 directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_redacts_secret_values_and_is_readable_by_its_owner_only() {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let lab = lab().await;
    let value = "hunter2-the-db-password";
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    let mut objects = shop_backup();
    objects.push((
        "secrets",
        live(
            "v1",
            "Secret",
            Some("shop"),
            "db",
            "uid-secret",
            json!({ "type": "Opaque", "data": { "password": encoded } }),
        ),
    ));
    lab.backup("with-secret", "Completed", "2026-11-21T02:00:00Z", &objects).await;
    let with = |dir: &str, secrets: bool| {
        json!({ "site": "west", "from": { "velero": { "site": "backups", "bucket": "dr-backups", "prefix": "velero", "backup": "with-secret" } },
                "transforms": transforms(), "preview_dir": dir, "preview_secrets": secrets })
    };
    let plan = find("kube.restore").plan(&lab.ctx(), &with("redacted", false)).await.unwrap();
    assert!(plan.changes.iter().any(|c| c.ends_with("(Secret values redacted)")), "{:#?}", plan.changes);
    let root = lab.dir.path().join("redacted");
    let secret = std::fs::read_to_string(root.join("shop-dr/secret-db.yaml")).unwrap();
    assert!(
        secret.contains("password: ") && secret.contains("<redacted: 23 bytes; preview_secrets: true shows it>"),
        "{secret}"
    );
    for file in walk(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(value) && !text.contains(&encoded), "{} holds the Secret", file.display());
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "{}", file.display());
    }
    for dir in [root.clone(), root.join("shop-dr"), root.join("_cluster")] {
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700, "{}", dir.display());
    }
    find("kube.restore").plan(&lab.ctx(), &with("included", true)).await.unwrap();
    let secret = std::fs::read_to_string(lab.dir.path().join("included/shop-dr/secret-db.yaml")).unwrap();
    assert!(secret.contains(&encoded), "{secret}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}
