//! Soak (issue "Reliability"): the engine runs a runbook of 1,000 steps, all at once, against
//! the ONTAP and Kubernetes simulators with faults injected — latency, 500s, 429s, dropped
//! connections, ONTAP busy errors — again and again for several minutes. Each run must end (no
//! deadlock: a run that takes longer than `HANG` fails the soak), no step may panic, and memory
//! must stay bounded (RSS after the first run vs. after the last).
//!
//!   cargo bench --bench soak                 # 3 minutes
//!   DROVER_SOAK_SECS=600 cargo bench --bench soak

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::median;

use drover::engine::events::{Outcome, RunMode};
use drover::engine::{AutoApprove, EventSink, ExecuteOptions, StopSignal, execute};
use drover::journal::Journal;
use drover::registry::Registry;
use drover::runbook::{LoadOptions, load_source};
use drover_kube_sim::{Fault, FaultKind};

const STEPS: usize = 1000;
const HANG: Duration = Duration::from_secs(300);

fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// 1,000 independent steps: reads and idempotent writes on both simulators, each with retries.
fn runbook() -> String {
    let mut steps = String::new();
    for i in 0..STEPS {
        let (uses, with) = match i % 5 {
            0 => ("kube.check", json!({ "site": "east", "namespaces": ["soak"] })),
            1 => ("kube.wait", json!({ "site": "east", "namespaces": ["soak"] })),
            2 => (
                "kube.scale",
                json!({ "site": "east", "namespaces": ["soak"], "names": [format!("app-{}", i % 10)], "replicas": 2 }),
            ),
            3 => ("ontap.snapmirror.wait", json!({ "site": "west", "destination": "svm_dr:", "until": "healthy" })),
            _ => ("ontap.svm.start", json!({ "site": "east", "svm": "svm1" })),
        };
        steps.push_str(&format!(
            "  - {{ id: s{i}, uses: {uses}, with: {with}, timeout: 2m, retry: {{ attempts: 6, backoff: 200ms, max_backoff: 2s }} }}\n"
        ));
    }
    format!("apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: soak }}\nconcurrency: {STEPS}\nsteps:\n{steps}")
}

fn main() {
    let secs: u64 = std::env::var("DROVER_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(180);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    rt.block_on(async {
        let topology = drover::lab::load_topology(
            &repo.join("examples/lab/ontap.yaml"),
            Some(&json!({ "job_delay": "50ms", "transfer_time": "100ms" })),
        )
        .unwrap();
        let (ontap, _) = drover::lab::start_ontap(&topology, dir.path()).await.unwrap();
        let (kube, kubeconfig) = drover::lab::start_kube("east", 0, dir.path(), Default::default()).await.unwrap();
        let mut sections: Vec<(String, String, serde_json::Value)> =
            ontap.site_sections(dir.path()).unwrap().into_iter().map(|(n, v)| (n, "ontap".into(), v)).collect();
        sections.push(("east".into(), "kube".into(), json!({ "kubeconfig": kubeconfig, "context": "east" })));
        let sites = dir.path().join("soak-sites.yaml");
        drover::lab::write_sites_file(&sites, &sections).unwrap();

        // Something to check, wait for and scale.
        let mut objects = vec![json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "soak" } })];
        for i in 0..10 {
            objects.push(json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": format!("app-{i}"), "namespace": "soak" },
                "spec": { "replicas": 2, "selector": { "matchLabels": { "app": format!("app-{i}") } },
                          "template": { "metadata": { "labels": { "app": format!("app-{i}") } }, "spec": { "containers": [{ "name": "c", "image": "x" }] } } } }));
        }
        let seed = Registry::builtin().get("kube.apply").unwrap();
        let ctx = drover_api::testing::context(
            [("east".to_string(), json!({ "kube": { "kubeconfig": kubeconfig, "context": "east" } }))].into(),
            Duration::from_secs(60),
        );
        seed.run(&ctx, &json!({ "site": "east", "inline": objects })).await.unwrap();
        ontap.with_world(|w| {
            if let Some(svm) = w.clusters.iter_mut().flat_map(|c| c.svms.iter_mut()).find(|s| s.name == "svm1") {
                svm.state = drover_ontap::model::SvmState::Running;
            }
        });

        // Faults for the whole soak.
        for (kind, share) in [
            (FaultKind::Latency(Duration::from_millis(20)), 0.2),
            (FaultKind::ServerError, 0.05),
            (FaultKind::Throttle(0), 0.05),
            (FaultKind::Drop, 0.02),
        ] {
            kube.inject(Fault { server: None, method: None, path: None, kind, remaining: None, share });
        }
        for (kind, share) in [
            (drover_ontap_sim::FaultKind::Latency(Duration::from_millis(20)), 0.2),
            (
                drover_ontap_sim::FaultKind::SyncError {
                    status: 503,
                    code: "6619715".into(),
                    message: "the system is busy, try again".into(),
                },
                0.05,
            ),
            (drover_ontap_sim::FaultKind::DropConnection, 0.02),
        ] {
            ontap.inject(drover_ontap_sim::Fault { server: None, method: None, path: None, kind, remaining: None, share });
        }

        let registry = Registry::builtin();
        let opts = LoadOptions { sites_file: Some(sites), require_params: true, ..LoadOptions::default() };
        let loaded = load_source(Path::new("soak.yaml"), &runbook(), &registry, &opts).expect("the soak runbook loads");
        println!("soak: {STEPS} concurrent steps per run, faults on both simulators, for {secs} s");
        let started = Instant::now();
        let (mut runs, mut failed_steps, mut times, mut first_rss) = (0, 0usize, vec![], 0.0);
        while started.elapsed() < Duration::from_secs(secs) {
            let journal_path = dir.path().join(format!("journal-{runs}.jsonl"));
            let journal = Journal::create(&journal_path).unwrap();
            let t = Instant::now();
            let opts = ExecuteOptions {
                run_id: format!("soak-{runs}"),
                mode: RunMode::Run,
                concurrency: STEPS,
                approver: Arc::new(AutoApprove("soak".into())),
                sink: EventSink::new(Some(journal.clone()), None),
                stop: StopSignal::never(),
                resume: None,
                // Faults are injected on purpose: measured here is the run under them.
                preflight: drover::engine::Preflight::Skip { by: "the soak benchmark".into() },
            };
            let summary = match tokio::time::timeout(HANG, execute(&loaded, opts)).await {
                Ok(s) => s,
                Err(_) => panic!("run {runs} did not end within {HANG:?}: a hang"),
            };
            journal.close().unwrap();
            let _ = std::fs::remove_file(&journal_path);
            times.push(t.elapsed());
            let failed: Vec<&(String, Outcome)> = summary.steps.iter().filter(|(_, o)| *o != Outcome::Succeeded).collect();
            failed_steps += failed.len();
            if let Some((id, o)) = failed.first() {
                eprintln!("  run {runs}: {} step(s) did not succeed, e.g. {id} {o:?}", failed.len());
            }
            runs += 1;
            if runs == 1 {
                first_rss = rss_mib("VmRSS:");
            }
            println!(
                "  run {runs}: {:.2?}, RSS {:.0} MiB, {} steps not succeeded",
                times.last().unwrap(),
                rss_mib("VmRSS:"),
                failed.len()
            );
        }
        let slowest = times.iter().max().copied().unwrap_or_default();
        println!("\nruns: {runs} ({} steps), none hung, no panic", runs * STEPS);
        println!("steps not succeeded after their retries: {failed_steps}");
        println!("run time: median {:.2?}, max {slowest:.2?}", median(times.clone()));
        println!(
            "RSS after the first run {first_rss:.0} MiB, after the last {:.0} MiB, peak {:.0} MiB",
            rss_mib("VmRSS:"),
            rss_mib("VmHWM:")
        );
    });
}
