//! Break 200 SnapMirror volume relationships through the engine, with a lock of 8 per ONTAP
//! cluster, against the simulator with zero latency — and the same 200 breaks called directly,
//! 8 at a time, without the engine. The difference is the engine's share of the wall time.
//!
//!   cargo bench --bench ontap
//!
//! Target: engine overhead < 5 % of the wall time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use drover::engine::events::{RunMode, RunOutcome};
use drover::engine::{AutoApprove, EventSink, ExecuteOptions, StopSignal, execute};
use drover::journal::Journal;
use drover::registry::Registry;
use drover::runbook::{LoadOptions, load_source};
use drover_api::{ActionError, Mode, Progress, StepContext, StepHost};
use drover_ontap_sim::{Simulator, Topology};

const RELATIONSHIPS: usize = 200;
const LOCK: usize = 8;

fn main() {
    divan::main();
}

fn topology() -> Topology {
    let mut src_vols = String::new();
    let mut dst_vols = String::new();
    let mut rels = String::new();
    for i in 0..RELATIONSHIPS {
        src_vols.push_str(&format!("      - {{ name: v{i}, svm: svm1 }}\n"));
        dst_vols.push_str(&format!("      - {{ name: v{i}, svm: svm_dr, type: dp }}\n"));
        rels.push_str(&format!(
            "  - {{ source_cluster: east, source: \"svm1:v{i}\", destination_cluster: west, destination: \"svm_dr:v{i}\" }}\n"
        ));
    }
    let text = format!(
        "clusters:\n  - name: east\n    password: e\n    peers: [west]\n    svms: [{{ name: svm1 }}]\n    volumes:\n{src_vols}  - name: west\n    password: w\n    peers: [east]\n    svms: [{{ name: svm_dr, state: stopped, subtype: dp_destination }}]\n    volumes:\n{dst_vols}svm_peers: [{{ svm: svm_dr@west, peer: svm1@east }}]\nrelationships:\n{rels}settings: {{ job_delay: 0s, transfer_time: 0s }}\n"
    );
    Topology::from_yaml(&text).unwrap()
}

struct Lab {
    sim: Simulator,
    dir: tempfile::TempDir,
}

fn start(rt: &Runtime) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let sim = rt.block_on(Simulator::start(&topology())).unwrap();
    let sections: Vec<(String, String, Value)> =
        sim.site_sections(dir.path()).unwrap().into_iter().map(|(n, v)| (n, "ontap".to_string(), v)).collect();
    drover::lab::write_sites_file(&dir.path().join("sites.yaml"), &sections).unwrap();
    Lab { sim, dir }
}

fn runbook() -> String {
    let mut s = format!(
        "apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: break-all }}\nconcurrency: 64\nlocks: {{ ontap-west: {LOCK} }}\nsteps:\n"
    );
    for i in 0..RELATIONSHIPS {
        s.push_str(&format!(
            "  - {{ id: break-v{i}, uses: ontap.snapmirror.break, lock: ontap-west, with: {{ site: west, destination: \"svm_dr:v{i}\" }} }}\n"
        ));
    }
    s
}

#[divan::bench(sample_count = 21)]
fn through_the_engine(bencher: divan::Bencher) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let reg = Registry::builtin();
    let text = runbook();
    bencher.with_inputs(|| start(&rt)).bench_local_values(|lab| {
        let opts = LoadOptions { sites_file: Some(lab.dir.path().join("sites.yaml")), ..LoadOptions::default() };
        let loaded = load_source(Path::new("break-all.yaml"), &text, &reg, &opts).unwrap();
        rt.block_on(async {
            let journal = Journal::create(&lab.dir.path().join("journal.jsonl")).unwrap();
            let opts = ExecuteOptions {
                run_id: "bench".into(),
                mode: RunMode::Run,
                concurrency: 64,
                approver: Arc::new(AutoApprove("bench".into())),
                sink: EventSink::new(Some(journal.clone()), None),
                stop: StopSignal::never(),
                resume: None,
                // Compared with direct calls: the breaks themselves, not the preflight's reads.
                preflight: drover::engine::Preflight::Skip { by: "the ontap benchmark".into() },
            };
            let summary = execute(&loaded, opts).await;
            journal.close().unwrap();
            assert_eq!(summary.outcome, RunOutcome::Succeeded);
        });
        lab
    });
}

#[divan::bench(sample_count = 21)]
fn through_the_engine_without_journal(bencher: divan::Bencher) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let reg = Registry::builtin();
    let text = runbook();
    bencher.with_inputs(|| start(&rt)).bench_local_values(|lab| {
        let opts = LoadOptions { sites_file: Some(lab.dir.path().join("sites.yaml")), ..LoadOptions::default() };
        let loaded = load_source(Path::new("break-all.yaml"), &text, &reg, &opts).unwrap();
        rt.block_on(async {
            let journal = Journal::create(&lab.dir.path().join("journal.jsonl")).unwrap();
            let opts = ExecuteOptions {
                run_id: "bench".into(),
                mode: RunMode::Run,
                concurrency: 64,
                approver: Arc::new(AutoApprove("bench".into())),
                sink: EventSink::observer_only(None),
                stop: StopSignal::never(),
                resume: None,
                // Compared with direct calls: the breaks themselves, not the preflight's reads.
                preflight: drover::engine::Preflight::Skip { by: "the ontap benchmark".into() },
            };
            let summary = execute(&loaded, opts).await;
            journal.close().unwrap();
            assert_eq!(summary.outcome, RunOutcome::Succeeded);
        });
        lab
    });
}

struct NoHost;

#[async_trait]
impl StepHost for NoHost {
    fn progress(&self, _: &str, _: Progress) {}
    fn note(&self, _: &str, _: &str) {}
    async fn checkpoint(&self, _: &str, _: Value) {}
    async fn approve(&self, _: &str, _: &str) -> Result<String, ActionError> {
        Ok(String::new())
    }
}

#[divan::bench(sample_count = 21)]
fn direct_calls(bencher: divan::Bencher) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let action = drover_ontap::actions().into_iter().find(|a| a.info().name == "ontap.snapmirror.break").unwrap();
    bencher.with_inputs(|| start(&rt)).bench_local_values(|lab| {
        let sections = lab.sim.site_sections(lab.dir.path()).unwrap();
        let sites: std::collections::BTreeMap<String, Value> =
            sections.into_iter().map(|(n, v)| (n, json!({ "ontap": v }))).collect();
        let sites = Arc::new(sites);
        rt.block_on(async {
            let gate = Arc::new(tokio::sync::Semaphore::new(LOCK));
            let mut set = tokio::task::JoinSet::new();
            for i in 0..RELATIONSHIPS {
                let (gate, action, sites) = (gate.clone(), action.clone(), sites.clone());
                set.spawn(async move {
                    let _permit = gate.acquire().await.unwrap();
                    let ctx = StepContext::new(
                        "bench",
                        format!("break-v{i}"),
                        1,
                        Mode::Run,
                        Some(tokio::time::Instant::now() + Duration::from_secs(60)),
                        sites,
                        Default::default(),
                        Arc::new(NoHost),
                        None,
                    );
                    action.run(&ctx, &json!({ "site": "west", "destination": format!("svm_dr:v{i}") })).await.unwrap();
                });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
        });
        lab
    });
}
