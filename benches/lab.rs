//! Lab failover benchmark (issue "Shipped runbooks and lab"): a planned failover of 50 apps
//! (namespaces shop … shop-50, 13 objects each) on the two-site lab, run by the `drover`
//! binary exactly as an operator runs it.
//!
//! The simulators are given realistic waits: ONTAP jobs take `JOB`, the final SnapMirror
//! transfer `TRANSFER`, workloads become ready `READY` after they are written. The critical
//! path of those waits is what no orchestrator can avoid:
//!
//!   final-update (TRANSFER) → quiesce, break, stop-source-svm, start-dr-svm (4 × JOB)
//!   → ready (READY)
//!
//! Everything else the end-to-end time holds — process start, loading and checking the runbook,
//! journaling, every API call (fence and restore of 50 apps), polling that notices a finished
//! wait late, switching DNS and the load balancer — is orchestration overhead. Target: < 5 % of
//! the critical path of the waits. Medians of `SAMPLES` runs, each on a fresh lab.
//!
//!   cargo bench --bench lab

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use drover::lab::{Choice, Lab, LabConfig};

const APPS: u32 = 50;
const SAMPLES: usize = 5;
const JOB: Duration = Duration::from_secs(2);
const TRANSFER: Duration = Duration::from_secs(5);
const READY: Duration = Duration::from_secs(5);

/// The simulated wait of each step on the critical path.
fn simulated_wait(step: &str) -> Duration {
    match step {
        "final-update" => TRANSFER.max(JOB),
        "quiesce" | "break" | "stop-source-svm" | "start-dr-svm" => JOB,
        "ready" => READY,
        _ => Duration::ZERO,
    }
}

fn config() -> LabConfig {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = LabConfig::shipped(repo).expect("examples/lab/lab.yaml");
    c.copies = APPS;
    c.s3 = Choice::None;
    // Overhead is measured against waits the lab sets: the simulator's pace, not a real cluster's.
    c.kube = drover::lab::KubeChoice::Simulator;
    c.kube_simulator.ready_delay = drover_api::HumanDuration(READY);
    c.ontap_settings = Some(json!({
        "job_delay": humantime::format_duration(JOB).to_string(),
        "transfer_time": humantime::format_duration(TRANSFER).to_string(),
    }));
    c
}

struct Sample {
    wall: Duration,
    steps: Vec<(String, Duration)>,
}

fn failover(rt: &tokio::runtime::Runtime) -> Sample {
    let dir = tempfile::tempdir().unwrap();
    let lab = rt.block_on(Lab::up(&config(), &dir.path().join("lab"))).expect("the lab starts");
    let mut args: Vec<String> = vec![
        "--output".into(),
        "json".into(),
        "run".into(),
        "runbooks/failover.yaml".into(),
        "--sites".into(),
        lab.sites_file.display().to_string(),
        "--yes".into(),
    ];
    for (k, v) in &lab.params {
        args.extend(["--param".into(), format!("{k}={v}")]);
    }
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(&args)
        .env("DROVER_STATE_DIR", dir.path().join("state"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the failover failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let state = rt.block_on(lab.failover_state());
    assert!(state.iter().all(|(_, ok)| *ok), "end state: {state:?}");
    let report: Value =
        stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()).expect("a JSON summary");
    let critical: Vec<String> = report["summary"]["critical_path"]
        .as_array()
        .expect("critical path")
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect();
    let steps = critical
        .iter()
        .map(|id| {
            let step = report["summary"]["steps"].as_array().unwrap().iter().find(|s| s["id"] == id.as_str()).unwrap();
            (id.clone(), Duration::from_millis(step["duration_ms"].as_u64().unwrap_or(0)))
        })
        .collect();
    drop(lab);
    Sample { wall, steps }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!(
        "lab failover of {APPS} apps; simulated waits: ONTAP job {JOB:?}, transfer {TRANSFER:?}, ready {READY:?}; {SAMPLES} samples"
    );
    let samples: Vec<Sample> = (0..SAMPLES)
        .map(|i| {
            let s = failover(&rt);
            println!("  sample {}: {:.2?}", i + 1, s.wall);
            s
        })
        .collect();
    let waits: Duration = samples[0].steps.iter().map(|(id, _)| simulated_wait(id)).sum();
    let wall = median(samples.iter().map(|s| s.wall).collect());
    println!("\ncritical path (median per step; simulated wait; overhead):");
    for (i, (id, _)) in samples[0].steps.iter().enumerate() {
        let d = median(samples.iter().map(|s| s.steps.get(i).map(|x| x.1).unwrap_or_default()).collect());
        let w = simulated_wait(id);
        println!("  {id:<18} {:>9.2?} {:>9.2?} {:>9.2?}", d, w, d.saturating_sub(w));
    }
    let overhead = wall.saturating_sub(waits);
    println!("\nend-to-end (median): {wall:.2?}");
    println!("critical path of simulated waits: {waits:.2?}");
    println!(
        "orchestration overhead: {overhead:.2?} = {:.1} % of the waits (target < 5 %)",
        100.0 * overhead.as_secs_f64() / waits.as_secs_f64()
    );
}
