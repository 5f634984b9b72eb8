//! Restore benchmarks (issue "Restore pipeline"):
//!
//! (a) 5,000 mixed objects in 100 namespaces, from a Velero tarball, restored by `kube.restore`
//!     into the Kubernetes simulator with 5 ms of injected latency per request — at concurrency
//!     16 and 1, and against a raw parallel create of the same cleaned objects (16 in flight).
//!     Targets: concurrency 16 ≥ 10× concurrency 1; within 1.5× of the raw create.
//! (b) Read + clean + transform a 100,000-object Velero tarball streamed from S3 (moto, started
//!     here): objects/s and peak memory (target < 200 MiB), streaming and collected.
//!
//!   cargo bench --bench restore            # needs moto_server on PATH for (b)
//!
//! Each restore starts on a fresh simulated cluster; medians of several samples are printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use drover_api::{StepContext, testing};
use drover_kube::velero::{TarballWriter, backup_object};
use drover_kube_sim::{Cluster, Fault, FaultKind, Settings};

mod common;
use common::median;

const NAMESPACES: usize = 100;
const LATENCY: Duration = Duration::from_millis(5);

/// One namespace's worth of objects as the API server returns them: 49 plus the namespace.
fn namespace_objects(ns: &str, out: &mut Vec<(String, Value)>) {
    let meta = |name: String| {
        json!({ "name": name, "namespace": ns, "uid": format!("{ns}-{name}"), "resourceVersion": "4711",
                                       "creationTimestamp": "2026-10-01T08:00:00Z", "labels": { "app": "shop", "tier": "web" },
                                       "managedFields": [{ "manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {} }] })
    };
    out.push((
        "namespaces".into(),
        json!({ "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": ns, "uid": ns, "resourceVersion": "1" }, "status": { "phase": "Active" } }),
    ));
    let mut add = |resource: &str, api_version: &str, kind: &str, count: usize, body: Value| {
        for i in 0..count {
            let mut v = json!({ "apiVersion": api_version, "kind": kind, "metadata": meta(format!("{}-{i}", kind.to_lowercase())) });
            drover_kube::patch::merge(&mut v, &body);
            out.push((resource.to_string(), v));
        }
    };
    add(
        "configmaps",
        "v1",
        "ConfigMap",
        15,
        json!({ "data": { "settings.yaml": "currency: EUR\nregion: eu-west\n".repeat(8) } }),
    );
    add(
        "secrets",
        "v1",
        "Secret",
        10,
        json!({ "type": "Opaque", "data": { "password": "c2VjcmV0LXZhbHVlLTEyMzQ1Ng==" } }),
    );
    add(
        "services",
        "v1",
        "Service",
        8,
        json!({ "spec": { "clusterIP": "10.96.3.4", "ports": [{ "port": 80, "targetPort": 8080 }], "selector": { "app": "shop" } } }),
    );
    add("serviceaccounts", "v1", "ServiceAccount", 4, json!({}));
    add(
        "persistentvolumeclaims",
        "v1",
        "PersistentVolumeClaim",
        1,
        json!({ "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "gold",
        "resources": { "requests": { "storage": "1Gi" } } }, "status": { "phase": "Bound" } }),
    );
    let pod = json!({ "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "shop" } },
        "template": { "metadata": { "labels": { "app": "shop" } },
                      "spec": { "containers": [{ "name": "app", "image": "registry.east.example.com/shop/app:1.4.2",
                                                 "env": [{ "name": "MODE", "value": "dr" }], "ports": [{ "containerPort": 8080 }] }] } } },
        "status": { "replicas": 2, "readyReplicas": 2 } });
    add("deployments.apps", "apps/v1", "Deployment", 6, pod.clone());
    add("statefulsets.apps", "apps/v1", "StatefulSet", 3, pod);
    add(
        "ingresses.networking.k8s.io",
        "networking.k8s.io/v1",
        "Ingress",
        2,
        json!({ "spec": { "rules": [{ "host": "shop.east.example.com", "http": { "paths": [{ "path": "/", "pathType": "Prefix",
            "backend": { "service": { "name": "service-0", "port": { "number": 80 } } } }] } }] } }),
    );
}

fn objects(namespaces: usize) -> Vec<(String, Value)> {
    let mut out = vec![];
    for n in 0..namespaces {
        namespace_objects(&format!("app-{n:03}"), &mut out);
    }
    out
}

fn write_tarball(path: &Path, objects: &[(String, Value)]) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = TarballWriter::new(file).unwrap();
    for (resource, object) in objects {
        w.add(resource, object).unwrap();
    }
    w.finish().unwrap();
}

struct Target {
    cluster: Cluster,
    sites: BTreeMap<String, Value>,
    _dir: tempfile::TempDir,
}

async fn fresh_cluster() -> Target {
    let cluster = Cluster::start(0, "bench", Settings::default()).await.unwrap();
    cluster.inject(Fault {
        server: None,
        method: None,
        path: None,
        kind: FaultKind::Latency(LATENCY),
        remaining: None,
        share: 1.0,
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&cluster.kubeconfig("west")).unwrap()).unwrap();
    let sites = BTreeMap::from([("west".to_string(), json!({ "kube": { "kubeconfig": path, "context": "west" } }))]);
    Target { cluster, sites, _dir: dir }
}

fn ctx(sites: &BTreeMap<String, Value>) -> StepContext {
    testing::context(sites.clone(), Duration::from_secs(3600))
}

/// Seconds for one `kube.restore` of the archive at this concurrency.
async fn restore_once(archive: &Path, concurrency: usize) -> f64 {
    let target = fresh_cluster().await;
    let restore = drover_kube::actions().into_iter().find(|a| a.info().name == "kube.restore").unwrap();
    let with = json!({ "site": "west", "from": { "archive": archive }, "concurrency": concurrency });
    let started = Instant::now();
    let out = restore.run(&ctx(&target.sites), &with).await.unwrap();
    let took = started.elapsed().as_secs_f64();
    assert_eq!(out["failed"], json!([]));
    drop(target.cluster);
    took
}

/// Seconds to create the same cleaned objects directly, 16 in flight (namespaces first).
async fn raw_create_once(objects: &[(String, Value)]) -> f64 {
    let target = fresh_cluster().await;
    let kube = drover_kube::Kube::connect(&ctx(&target.sites), "west").await.unwrap();
    let mut cleaned: Vec<Value> = objects
        .iter()
        .map(|(r, o)| {
            let mut o = o.clone();
            drover_kube::restore::clean::clean(r, &mut o);
            o
        })
        .collect();
    cleaned.sort_by_key(|o| o["kind"] != "Namespace");
    let mut kinds = BTreeMap::new();
    for o in &cleaned {
        let key = (o["apiVersion"].as_str().unwrap().to_string(), o["kind"].as_str().unwrap().to_string());
        if !kinds.contains_key(&key) {
            kinds.insert(key.clone(), kube.kind(&key.0, &key.1, false).await.unwrap());
        }
    }
    let split = cleaned.iter().position(|o| o["kind"] != "Namespace").unwrap();
    let started = Instant::now();
    for wave in [&cleaned[..split], &cleaned[split..]] {
        let calls: Vec<_> = wave
            .iter()
            .map(|o| {
                let kind =
                    &kinds[&(o["apiVersion"].as_str().unwrap().to_string(), o["kind"].as_str().unwrap().to_string())];
                let api = kube.api(kind, o["metadata"]["namespace"].as_str().unwrap_or(""));
                let obj: kube::api::DynamicObject = serde_json::from_value(o.clone()).unwrap();
                async move { api.create(&kube::api::PostParams::default(), &obj).await.unwrap() }
            })
            .collect();
        futures::stream::iter(calls).buffer_unordered(16).collect::<Vec<_>>().await;
    }
    started.elapsed().as_secs_f64()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn bench_restore(rt: &Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let objects = objects(NAMESPACES);
    let archive = dir.path().join("backup.tar.gz");
    write_tarball(&archive, &objects);
    println!("(a) restore {} objects in {NAMESPACES} namespaces, {LATENCY:?} latency per request", objects.len());
    let c16 = median((0..5).map(|_| rt.block_on(restore_once(&archive, 16))).collect());
    let raw = median((0..5).map(|_| rt.block_on(raw_create_once(&objects))).collect());
    let c1 = median((0..3).map(|_| rt.block_on(restore_once(&archive, 1))).collect());
    let rate = |s: f64| objects.len() as f64 / s;
    println!("    kube.restore, concurrency 16   median {c16:7.2} s  {:7.0} objects/s", rate(c16));
    println!("    kube.restore, concurrency 1    median {c1:7.2} s  {:7.0} objects/s", rate(c1));
    println!("    raw create, 16 in flight       median {raw:7.2} s  {:7.0} objects/s", rate(raw));
    println!(
        "    speed-up 16 vs 1: {:.1}× (target ≥ 10×); restore vs raw create: {:.2}× the time (target ≤ 1.5×)",
        c1 / c16,
        c16 / raw
    );
}

fn bench_read(rt: &Runtime) {
    let moto = match drover_api::testing::Moto::start() {
        Ok(m) => m,
        Err(e) => {
            println!("(b) skipped: {e}");
            return;
        }
    };
    let url = moto.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("big.tar.gz");
    let count = {
        let file = std::io::BufWriter::new(std::fs::File::create(&archive).unwrap());
        let mut w = TarballWriter::new(file).unwrap();
        let mut batch = vec![];
        for n in 0..2000 {
            batch.clear();
            namespace_objects(&format!("app-{n:04}"), &mut batch);
            for (r, o) in &batch {
                w.add(r, o).unwrap();
            }
        }
        let count = w.items;
        w.finish().unwrap();
        count
    };
    let size = std::fs::metadata(&archive).unwrap().len();
    rt.block_on(async {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&url)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new("bench", "bench", None, None, "bench"))
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(conf);
        s3.create_bucket().bucket("bench-backups").send().await.unwrap();
        let body = aws_sdk_s3::primitives::ByteStream::from_path(&archive).await.unwrap();
        s3.put_object().bucket("bench-backups").key("backups/big/big.tar.gz").body(body).send().await.unwrap();
        let backup = backup_object("big", &[], "Completed", "2026-11-22T00:00:00Z", "2026-11-22T00:10:00Z", count);
        s3.put_object()
            .bucket("bench-backups")
            .key("backups/big/velero-backup.json")
            .body(backup.to_string().into_bytes().into())
            .send()
            .await
            .unwrap();
    });
    // SAFETY: single-threaded here; read by the restore's site settings.
    unsafe {
        std::env::set_var("DROVER_BENCH_S3", "bench");
    }
    let sites = BTreeMap::from([(
        "backups".to_string(),
        json!({ "s3": { "endpoint": url, "path_style": true, "access_key": "env:DROVER_BENCH_S3", "secret_key": "env:DROVER_BENCH_S3" } }),
    )]);
    let params: drover_kube::restore::RestoreParams = serde_json::from_value(json!({
        "site": "west", "from": { "velero": { "site": "backups", "bucket": "bench-backups", "backup": "latest" } },
        "transforms": [{ "namespaces": { "app-0001": "app-dr-0001" } },
                       { "ingress_hosts": { "map": { "*.east.example.com": "*.west.example.com" } } },
                       { "images": { "registry.east.example.com/": "registry.west.example.com/" } }]
    }))
    .unwrap();
    let pipeline = drover_kube::restore::Pipeline::new(&params).unwrap();
    println!(
        "(b) read + clean + transform {count} objects ({:.1} MiB tarball) streamed from S3",
        size as f64 / 1048576.0
    );
    let mut streaming = vec![];
    let mut peak_streaming = 0f64;
    for _ in 0..3 {
        reset_peak_rss();
        let took = rt.block_on(async {
            let started = Instant::now();
            let (mut items, _) =
                drover_kube::restore::source::open(&ctx(&sites), &params.from, Default::default()).await.unwrap();
            let mut n = 0u64;
            while let Some(item) = items.recv().await {
                if pipeline.admit(item.unwrap()).is_ok() {
                    n += 1;
                }
            }
            assert!(n > 0);
            started.elapsed().as_secs_f64()
        });
        peak_streaming = peak_streaming.max(peak_rss_mib());
        streaming.push(took);
    }
    reset_peak_rss();
    let started = Instant::now();
    let kept = rt.block_on(drover_kube::restore::collect(&ctx(&sites), &params, &pipeline)).unwrap().objects.len();
    let collected = started.elapsed().as_secs_f64();
    let peak_collected = peak_rss_mib();
    let s = median(streaming);
    println!(
        "    streaming   median {s:6.2} s  {:8.0} objects/s  peak RSS {peak_streaming:6.1} MiB (target < 200 MiB)",
        count as f64 / s
    );
    println!(
        "    collected   {collected:6.2} s  {:8.0} objects/s  peak RSS {peak_collected:6.1} MiB ({kept} objects kept, as a restore holds them)",
        count as f64 / collected
    );
    drop(moto);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if only.as_deref().is_none_or(|o| o == "a") {
        bench_restore(&rt);
    }
    if only.as_deref().is_none_or(|o| o == "b") {
        bench_read(&rt);
    }
}
