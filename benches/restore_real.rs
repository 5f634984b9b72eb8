//! Restore against a real API server (issue "Real Kubernetes in the tests"): 5,000 mixed
//! objects (ConfigMaps, Secrets, Services, Deployments, Ingresses) in 100 namespaces, written
//! to a real control plane (crates/controlplane: etcd with fsync, kube-apiserver, controllers,
//! kwok) started afresh for every sample, by:
//!
//!   raw POST at 16 and at 64 connections (namespaces first, then the rest kind by kind),
//!   raw server-side apply (PATCH apply-patch+yaml, force) at 64 connections,
//!   `kubectl apply --server-side` of the same manifests (one sample, in the first round: it is slow),
//!   drover's restore at its default settings (`drover run` of a kube.restore step reading the
//!   manifests), with the drover process's peak RSS.
//!
//! Deployments have 0 replicas: measured is the API server's write path, not a thousand Pods
//! scheduled meanwhile on a 2-core machine. Medians of DROVER_BENCH_ROUNDS rounds (default 3),
//! all in one run, and drover's time as a ratio of the best raw time (target ≤ 1.1×) and of
//! kubectl's.
//!
//!   tools/k8s/build.sh && cargo bench --bench restore_real
//!
//! DROVER_BENCH_KUBECTL=0 leaves kubectl out (about three minutes);
//! DROVER_BENCH_ONLY=drover runs only the writers whose name contains that.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use drover_controlplane::{Binaries, ControlPlane, Options, User};

mod common;
use common::median;

const NAMESPACES: usize = 100;
const PER_KIND: usize = 10;

/// The objects: a namespace, then 10 of each kind, per namespace.
fn objects() -> Vec<Value> {
    let mut out = vec![];
    for n in 0..NAMESPACES {
        let ns = format!("app-{n:03}");
        out.push(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }));
        for i in 0..PER_KIND {
            let meta =
                |kind: &str| json!({ "name": format!("{kind}-{i}"), "namespace": ns, "labels": { "app": "shop" } });
            out.push(json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("settings"),
                             "data": { "settings.yaml": "currency: EUR\nregion: eu-west\n".repeat(8) } }));
            out.push(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": meta("password"), "type": "Opaque",
                             "data": { "password": "c2VjcmV0LXZhbHVlLTEyMzQ1Ng==" } }));
            out.push(json!({ "apiVersion": "v1", "kind": "Service", "metadata": meta("web"),
                             "spec": { "ports": [{ "port": 80, "targetPort": 8080 }], "selector": { "app": format!("web-{i}") } } }));
            out.push(json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
                             "spec": { "replicas": 0, "selector": { "matchLabels": { "app": format!("web-{i}") } },
                                       "template": { "metadata": { "labels": { "app": format!("web-{i}") } },
                                                     "spec": { "containers": [{ "name": "web", "image": "registry.example/shop/web:1.4.2" }] } } } }));
            out.push(json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta("web"),
                             "spec": { "rules": [{ "host": format!("web-{i}.{ns}.example.com"), "http": { "paths": [{ "path": "/", "pathType": "Prefix",
                                       "backend": { "service": { "name": format!("web-{i}"), "port": { "number": 80 } } } }] } }] } }));
        }
    }
    out
}

fn collection(o: &Value) -> String {
    let path = drover_controlplane::object_path(o).unwrap();
    path.rsplit_once('/').unwrap().0.to_string()
}

async fn plane() -> ControlPlane {
    let users = vec![User { name: "drover".into(), groups: vec!["system:masters".into()] }];
    ControlPlane::start(Options { name: "bench".into(), users, durable_etcd: true, ..Options::default() })
        .await
        .expect("the control plane starts")
}

fn client(plane: &ControlPlane) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(plane.ca_pem.as_bytes()).unwrap())
        .pool_max_idle_per_host(256)
        // One connection per request in flight, as the widths say (HTTP/2 would multiplex them).
        .http1_only()
        .build()
        .unwrap()
}

/// POST (create) or PATCH (server-side apply) every object, `width` in flight; namespaces first.
async fn raw(plane: &ControlPlane, objects: &[Value], width: usize, apply: bool) -> Duration {
    let http = client(plane);
    let token = plane.token("admin").to_string();
    let send = |o: &Value| {
        let (http, token) = (http.clone(), token.clone());
        let body = o.to_string();
        let url = if apply {
            format!("{}{}?fieldManager=bench&force=true", plane.url, drover_controlplane::object_path(o).unwrap())
        } else {
            format!("{}{}", plane.url, collection(o))
        };
        async move {
            let req = if apply {
                http.patch(url).header("content-type", "application/apply-patch+yaml")
            } else {
                http.post(url).header("content-type", "application/json")
            };
            let resp = req.bearer_auth(token).body(body).send().await.unwrap();
            // Read to the end, or the connection is not reused (a new TLS handshake per object).
            let status = resp.status();
            let text = resp.text().await.unwrap();
            assert!(status.is_success(), "{text}");
        }
    };
    let started = Instant::now();
    let (namespaces, mut rest): (Vec<&Value>, Vec<&Value>) = objects.iter().partition(|o| o["kind"] == "Namespace");
    // Kind by kind, as a restore orders them: half the time of namespace by namespace here.
    let order = ["ConfigMap", "Secret", "Service", "Deployment", "Ingress"];
    rest.sort_by_key(|o| order.iter().position(|k| o["kind"] == *k));
    futures::stream::iter(namespaces.into_iter().map(send)).buffer_unordered(width).collect::<Vec<_>>().await;
    futures::stream::iter(rest.into_iter().map(send)).buffer_unordered(width).collect::<Vec<_>>().await;
    started.elapsed()
}

fn write_manifests(dir: &Path, objects: &[Value]) {
    let mut text = String::new();
    for o in objects {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(o).unwrap());
    }
    std::fs::write(dir.join("objects.yaml"), text).unwrap();
}

fn kubectl(plane: &ControlPlane, dir: &Path) -> Duration {
    let started = Instant::now();
    let out = std::process::Command::new("kubectl")
        .args(["apply", "--server-side", "-f"])
        .arg(dir.join("objects.yaml"))
        .env("KUBECONFIG", plane.kubeconfig("admin"))
        .output()
        .expect("kubectl is installed (apt-get install kubectl)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    started.elapsed()
}

/// `drover run` of one kube.restore step at its default settings; (wall time, peak RSS MiB).
fn drover(plane: &ControlPlane, dir: &Path, state: &Path) -> (Duration, f64) {
    let sites = dir.join("sites.yaml");
    std::fs::write(
        &sites,
        format!(
            "apiVersion: drover/v1\nkind: Sites\nsites:\n  dr: {{ kube: {{ kubeconfig: {}, context: bench }} }}\n",
            plane.kubeconfig("drover").display()
        ),
    )
    .unwrap();
    let runbook = dir.join("restore.yaml");
    std::fs::write(
        &runbook,
        format!(
            "apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: bench-restore }}\nsteps:\n  - {{ id: restore, uses: kube.restore, with: {{ site: dr, from: {{ manifests: [{}] }}{} }}, timeout: 30m }}\n",
            dir.join("objects.yaml").display(),
            // For comparison only: a fixed width instead of the default.
            std::env::var("DROVER_BENCH_CONCURRENCY").map(|n| format!(", concurrency: {n}")).unwrap_or_default()
        ),
    )
    .unwrap();
    let started = Instant::now();
    // Waited for below by `common::wait_measured`, which also gives its peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["run", runbook.to_str().unwrap(), "--sites", sites.to_str().unwrap(), "--yes", "--skip-preflight"])
        .env("DROVER_STATE_DIR", state)
        .stdout(std::process::Stdio::null())
        .stderr(if std::env::var("DROVER_BENCH_LOG").is_ok() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .spawn()
        .unwrap();
    let ended = common::wait_measured(&child);
    let elapsed = started.elapsed();
    if let Ok(keep) = std::env::var("DROVER_BENCH_KEEP") {
        let _ = std::process::Command::new("cp").arg("-r").arg(state).arg(keep).status();
    }
    assert!(ended.success(), "drover's restore failed");
    (elapsed, ended.peak_rss_kib as f64 / 1024.0)
}

fn main() {
    if let Err(e) = Binaries::find() {
        eprintln!("restore_real: skipped — {e}");
        return;
    }
    let rounds: usize = std::env::var("DROVER_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let objects = objects();
    let dir = tempfile::tempdir().unwrap();
    write_manifests(dir.path(), &objects);
    let names =
        ["raw POST, 16", "raw POST, 64", "raw apply, 64", "kubectl apply --server-side", "drover restore (default)"];
    let mut samples: Vec<Vec<f64>> = vec![vec![]; names.len()];
    let mut rss = vec![];
    for round in 0..rounds {
        for (k, name) in names.iter().enumerate() {
            // kubectl takes minutes: one sample, in the first round.
            if k == 3 && (round > 0 || std::env::var("DROVER_BENCH_KUBECTL").is_ok_and(|v| v == "0")) {
                continue;
            }
            if std::env::var("DROVER_BENCH_ONLY").is_ok_and(|only| !name.contains(only.as_str())) {
                continue;
            }
            let plane = rt.block_on(plane());
            let seconds = match k {
                0 => rt.block_on(raw(&plane, &objects, 16, false)).as_secs_f64(),
                1 => rt.block_on(raw(&plane, &objects, 64, false)).as_secs_f64(),
                2 => rt.block_on(raw(&plane, &objects, 64, true)).as_secs_f64(),
                3 => kubectl(&plane, dir.path()).as_secs_f64(),
                _ => {
                    let run = dir.path().join(format!("run-{round}"));
                    std::fs::create_dir_all(&run).unwrap();
                    let (t, mib) = drover(&plane, dir.path(), &run);
                    rss.push(mib);
                    t.as_secs_f64()
                }
            };
            println!("round {}: {name:<30} {seconds:>7.2} s", round + 1);
            samples[k].push(seconds);
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(|s| if s.is_empty() { f64::NAN } else { median(s) }).collect();
    let n = objects.len() as f64;
    println!("\n{} objects in {NAMESPACES} namespaces, medians of {rounds} rounds:", objects.len());
    for (name, m) in names.iter().zip(&medians) {
        println!("  {name:<30} {m:>7.2} s  {:>6.0} objects/s", n / m);
    }
    let best_raw = medians[0].min(medians[1]);
    println!("  drover / best raw POST:  {:.2}× (target ≤ 1.1×)", medians[4] / best_raw);
    println!("  kubectl / drover:        {:.1}×", medians[3] / medians[4]);
    // DROVER_BENCH_ONLY may leave drover out: then there is no RSS of it to give.
    if !rss.is_empty() {
        println!("  drover peak RSS:         {:.0} MiB (target < 100 MiB)", median(rss));
    }
}
