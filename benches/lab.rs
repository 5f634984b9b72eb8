//! Lab failover benchmarks: the shipped failover run by the `drover` binary exactly as an
//! operator runs it, each sample on a fresh lab.
//!
//! - `copies`: 50 applications (namespaces shop … shop-50, 13 objects each) on one SVM-DR
//!   relationship.
//! - `fleet`: 500 applications in 3 tiers, 2 volume relationships each (1,000 across two DR
//!   SVMs), from the lab file's `fleet:`.
//!
//! The simulators are given realistic waits: ONTAP jobs take `JOB`, a SnapMirror transfer
//! `TRANSFER`, workloads become ready `READY` after they are written; `verify` polls the load
//! balancer three times 100 ms apart. The critical path of those waits is what no orchestrator
//! can avoid — for the fleet, per tier: the transfer, quiesce and break of a volume, its app's
//! restore and readiness, the check through the balancer. Everything else the end-to-end time
//! holds — process start, loading, expanding and checking the runbook, the preflight of every
//! instance, journaling, every API call, polling that notices a finished wait late — is
//! orchestration overhead. Target: < 5 % of the critical path of the waits. The bench prints
//! where the first sample's overhead went: the process's start, the run's start to its first step
//! (the preflight), each stretch of the critical path up to a tier's end beyond its waits, and the
//! end of the run; and the CPU drover and the simulators spend in the preflight (read at the
//! moments drover tells of its start and end), with the least time that CPU takes on this
//! machine's cores — the part of the overhead no scheduling can win back here.
//!
//! Both run the shipped runbook's step limit (`concurrency: 2000`: every app of a tier side by
//! side); the fleet raises each ONTAP cluster's `max_operations` to 2000: what is measured is
//! drover's own overhead, not the limit an operator sets to spare a real cluster (it makes a
//! schedule longer by design). Peak RSS is the drover process's; the
//! report time is `drover report` of the finished run, text and HTML.
//!
//!   cargo bench --bench lab              # both
//!   cargo bench --bench lab -- fleet     # one of them
//!   DROVER_BENCH_SAMPLES=1 cargo bench --bench lab -- fleet   # one quick sample
//!   DROVER_BENCH_WRAP="heaptrack -o /tmp/ht" …                 # the failover under a profiler
//!   DROVER_BENCH_REQUESTS=1 …                  # also the requests drover made, by shape
//!   DROVER_BENCH_REQUESTS=preflight …          # … and first a dry run: its time, CPU and requests
//!   DROVER_BENCH_EVENTS=/tmp/events.jsonl …    # keep the run's events (drover's JSON lines)
//!   DROVER_BENCH_DROVER=/tmp/drover-before …   # another build of drover, against the same simulators
//!   DROVER_BENCH_ONTAP_IN_FLIGHT=64 …           # the fleet with ONTAP's `max_in_flight` raised too
//!
//! This machine's speed drifts by a fifth within an hour: compare two builds by alternating
//! them in one sitting (`DROVER_BENCH_SAMPLES=1`, each in turn), not against an older row.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use drover::lab::{Choice, Lab, LabConfig};

mod common;
use common::{cpu_of, median, usage};

// The simulators run in this process on the same cores as drover; they allocate as drover does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const JOB: Duration = Duration::from_secs(1);
const TRANSFER: Duration = Duration::from_secs(2);
const READY: Duration = Duration::from_secs(3);
/// `verify`: three answers 100 ms apart.
const VERIFY: Duration = Duration::from_millis(200);

struct Scenario {
    name: &'static str,
    samples: usize,
    config: fn() -> LabConfig,
    /// Extra arguments to `drover run`.
    args: &'static [&'static str],
    /// ONTAP's per-cluster limit written into the sites file, when raised.
    max_operations: Option<u32>,
}

/// The simulated wait of a step on the critical path (by the step it is an instance of).
fn simulated_wait(id: &str) -> Duration {
    match id.split('[').next().unwrap_or(id) {
        "final-update" | "update-volume" => TRANSFER,
        "quiesce" | "break" | "stop-source-svm" | "start-dr-svm" | "quiesce-volume" | "break-volume" => JOB,
        "ready" => READY,
        "verify" => VERIFY,
        _ => Duration::ZERO,
    }
}

fn base() -> LabConfig {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = LabConfig::shipped(repo).expect("examples/lab/lab.yaml");
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

fn copies() -> LabConfig {
    let mut c = base();
    c.copies = 50;
    c
}

fn fleet() -> LabConfig {
    let mut c = base();
    c.set_fleet(drover::lab::Fleet { apps: 500, volumes_per_app: 2, tiers: 3, svms: 2 });
    c
}

const SCENARIOS: &[Scenario] = &[
    Scenario { name: "copies", samples: 5, config: copies, args: &[], max_operations: None },
    Scenario { name: "fleet", samples: 3, config: fleet, args: &[], max_operations: Some(2000) },
];

struct Sample {
    wall: Duration,
    steps: Vec<(String, Duration)>,
    instances: usize,
    peak_rss_kib: i64,
    report_text: Duration,
    report_html: Duration,
    report_html_bytes: usize,
    /// CPU time of the drover process, and of the simulators (this process) meanwhile.
    drover_cpu: Duration,
    sims_cpu: Duration,
    /// How long the preflight took (it is on the critical path: nothing starts before it ends).
    preflight: Duration,
    /// The CPU both sides spent in it, from drover's own marks of its start and end.
    preflight_spent: Option<Spent>,
    /// Where the overhead went, phase by phase (`phases`).
    phases: Vec<(String, Duration)>,
}

/// Run drover; its output, its own resource usage and its peak RSS in KiB
/// (`common::wait_measured`). `DROVER_BENCH_WRAP="perf record -g -o /tmp/perf.data"` (or
/// heaptrack, …) runs the failover under a profiler.
fn drover(state: &std::path::Path, args: &[String]) -> (std::process::Output, libc::rusage, i64, Vec<Mark>) {
    use std::io::{BufRead, Read};
    use std::os::unix::process::ExitStatusExt;
    let wrap = std::env::var("DROVER_BENCH_WRAP").unwrap_or_default();
    let binary = std::env::var("DROVER_BENCH_DROVER").unwrap_or_else(|_| env!("CARGO_BIN_EXE_drover").into());
    let mut words = wrap.split_whitespace();
    let (mut command, wrapped) = match words.next() {
        Some(profiler) if args.first().is_some_and(|a| a == "--output") => {
            let mut c = std::process::Command::new(profiler);
            c.args(words).arg(&binary);
            (c, true)
        }
        _ => (std::process::Command::new(&binary), false),
    };
    #[allow(clippy::zombie_processes, reason = "reaped by wait4 below, which also reads its rusage")]
    let mut child = command
        .args(args)
        .env("DROVER_STATE_DIR", state)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = vec![];
            from.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    // Standard output is read line by line: the moments in `MARKED` are taken as they are told.
    let (pid, out) = (child.id(), child.stdout.take().unwrap());
    let stdout = std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(out);
        let (mut bytes, mut marks) = (vec![], vec![]);
        loop {
            let start = bytes.len();
            if !matches!(reader.read_until(b'\n', &mut bytes), Ok(n) if n > 0) {
                break;
            }
            let line = &bytes[start..];
            let told = |event: &str| {
                let needle = format!("\"type\":\"{event}\"");
                line.windows(needle.len()).any(|w| w == needle.as_bytes())
            };
            // Under a wrapper the child is the profiler, whose CPU is not drover's: no marks.
            if wrapped {
                continue;
            }
            if let Some(event) = MARKED.iter().copied().find(|e| told(e)) {
                marks.push(Mark {
                    event,
                    at: Instant::now(),
                    drover_cpu: common::cpu_of_pid(pid).unwrap_or_default(),
                    bench_cpu: cpu_of(&usage(libc::RUSAGE_SELF)),
                });
            }
        }
        (bytes, marks)
    });
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let ended = common::wait_measured(&child);
    let (stdout, marks) = stdout.join().unwrap();
    let output = std::process::Output {
        status: std::process::ExitStatus::from_raw(ended.status),
        stdout,
        stderr: stderr.join().unwrap(),
    };
    (output, ended.usage, ended.peak_rss_kib, marks)
}

/// Events of the run whose moment the bench marks, with both sides' CPU at it.
const MARKED: &[&str] = &["preflight_started", "preflight_finished"];

/// A moment of the run, as drover told it on standard output: the time, drover's CPU so far and
/// this process's (the simulators', and the bench's readers).
struct Mark {
    event: &'static str,
    at: Instant,
    drover_cpu: Duration,
    bench_cpu: Duration,
}

/// What the preflight cost: its span between its two marks, and the CPU both sides spent in it.
#[derive(Clone, Copy)]
struct Spent {
    wall: Duration,
    drover: Duration,
    sims: Duration,
}

impl Spent {
    fn between(marks: &[Mark], from: &str, to: &str) -> Option<Spent> {
        let (a, b) = (marks.iter().find(|m| m.event == from)?, marks.iter().find(|m| m.event == to)?);
        Some(Spent {
            wall: b.at.saturating_duration_since(a.at),
            drover: b.drover_cpu.saturating_sub(a.drover_cpu),
            sims: b.bench_cpu.saturating_sub(a.bench_cpu),
        })
    }

    /// The least time this much CPU takes on this machine's cores, all of them busy.
    fn floor(&self) -> Duration {
        (self.drover + self.sims) / cores()
    }
}

fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

fn failover(rt: &tokio::runtime::Runtime, s: &Scenario) -> Sample {
    let dir = tempfile::tempdir().unwrap();
    let lab = rt.block_on(Lab::up(&(s.config)(), &dir.path().join("lab"))).expect("the lab starts");
    if let Some(n) = s.max_operations {
        let text = std::fs::read_to_string(&lab.sites_file).unwrap();
        let mut doc: Value = serde_yaml::from_str(&text).unwrap();
        for site in doc["sites"].as_object_mut().unwrap().values_mut() {
            if let Some(ontap) = site.get_mut("ontap") {
                ontap["max_operations"] = json!(n);
                if let Ok(m) = std::env::var("DROVER_BENCH_ONTAP_IN_FLIGHT") {
                    ontap["max_in_flight"] = json!(m.parse::<u32>().unwrap());
                }
            }
        }
        std::fs::write(&lab.sites_file, serde_yaml::to_string(&doc).unwrap()).unwrap();
    }
    let mut args: Vec<String> =
        ["--output", "json", "run", "runbooks/failover.yaml", "--yes", "--sites"].map(String::from).to_vec();
    args.push(lab.sites_file.display().to_string());
    for (k, v) in &lab.params {
        args.extend(["--param".into(), format!("{k}={v}")]);
    }
    if let Some(inventory) = &lab.inventory {
        args.extend(["--params-file".into(), inventory.display().to_string()]);
    }
    args.extend(s.args.iter().map(|a| a.to_string()));
    let state = dir.path().join("state");
    match std::env::var("DROVER_BENCH_REQUESTS").as_deref() {
        // The preflight's own requests: a dry run first (it changes nothing), then the run.
        Ok("preflight") => {
            clear_requests(&lab);
            let mut dry = args.clone();
            dry.push("--dry-run".into());
            let (started, sims_before) = (Instant::now(), cpu_of(&usage(libc::RUSAGE_SELF)));
            let (out, child, _, _) = drover(&state, &dry);
            assert!(out.status.success(), "the dry run failed: {}", String::from_utf8_lossy(&out.stderr));
            println!(
                "  the dry run: {:.2?} (CPU: drover {:.1?}, simulators {:.1?})",
                started.elapsed(),
                cpu_of(&child),
                cpu_of(&usage(libc::RUSAGE_SELF)) - sims_before
            );
            print_requests(&lab, "the dry run (the preflight alone)");
        }
        Ok(_) => clear_requests(&lab),
        Err(_) => {}
    }
    let started = Instant::now();
    let spawned = std::time::SystemTime::now();
    let sims_before = cpu_of(&usage(libc::RUSAGE_SELF));
    let (out, child, peak_rss_kib, marks) = drover(&state, &args);
    let wall = started.elapsed();
    let exited = std::time::SystemTime::now();
    let (sims_cpu, drover_cpu) = (cpu_of(&usage(libc::RUSAGE_SELF)) - sims_before, cpu_of(&child));
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Ok(path) = std::env::var("DROVER_BENCH_EVENTS") {
        std::fs::write(path, &out.stdout).unwrap();
    }
    assert!(out.status.success(), "the failover failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let state_now = rt.block_on(lab.failover_state());
    assert!(state_now.iter().all(|(_, ok)| *ok), "end state: {state_now:?}");
    let report: Value =
        stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()).expect("a JSON summary");
    let preflight = stdout
        .lines()
        .filter(|l| l.contains("preflight_finished"))
        .find_map(|l| serde_json::from_str::<Value>(l).ok()?["event"]["duration_ms"].as_u64())
        .map(Duration::from_millis)
        .unwrap_or_default();
    let all = report["summary"]["steps"].as_array().expect("steps");
    let steps = report["summary"]["critical_path"]
        .as_array()
        .expect("critical path")
        .iter()
        .map(|id| {
            let step = all.iter().find(|s| s["id"] == *id).unwrap();
            (id.as_str().unwrap().to_string(), Duration::from_millis(step["duration_ms"].as_u64().unwrap_or(0)))
        })
        .collect();
    let phases = phases(&report["summary"], spawned, exited, preflight);
    let timed = |format: &str| {
        let t = Instant::now();
        let (out, _, _, _) = drover(&state, &["report".into(), "latest".into(), "--format".into(), format.into()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (t.elapsed(), out.stdout.len())
    };
    if std::env::var("DROVER_BENCH_REQUESTS").is_ok() {
        print_requests(&lab, "the failover");
    }
    let (report_text, _) = timed("text");
    let (report_html, report_html_bytes) = timed("html");
    drop(lab);
    Sample {
        wall,
        steps,
        instances: all.len(),
        peak_rss_kib,
        report_text,
        report_html,
        report_html_bytes,
        drover_cpu,
        sims_cpu,
        preflight,
        preflight_spent: Spent::between(&marks, "preflight_started", "preflight_finished"),
        phases,
    }
}

/// Where a run's overhead went: from the process's start to the run's, from the run's start to
/// the first step of the critical path (the preflight, and the loading and checks around it),
/// the path up to each tier's end (its time beyond the waits on it), and from the run's end to
/// the process's. The path's steps carry their start and end within the run.
fn phases(
    summary: &Value,
    spawned: std::time::SystemTime,
    exited: std::time::SystemTime,
    preflight: Duration,
) -> Vec<(String, Duration)> {
    let at = |key: &str| summary[key].as_str().and_then(|t| humantime::parse_rfc3339(t).ok());
    let ms = |v: &Value| Duration::from_millis(v.as_u64().unwrap_or(0));
    let (Some(begun), Some(ended)) = (at("started"), at("finished")) else { return vec![] };
    let steps = summary["steps"].as_array().map(Vec::as_slice).unwrap_or_default();
    let path: Vec<&Value> = summary["critical_path"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|id| steps.iter().find(|s| s["id"] == *id))
        .collect();
    let Some(first) = path.first() else { return vec![] };
    let mut from = ms(&first["start_ms"]);
    let mut out = vec![
        ("start of the process".to_string(), begun.duration_since(spawned).unwrap_or_default()),
        (format!("run's start to its first step (preflight {preflight:.2?})"), from),
    ];
    // Each stretch of the path ends at a tier's end (or the path's); its overhead is its span
    // beyond its waits.
    let (mut waits, mut tier) = (Duration::ZERO, 0);
    let tiered = path.iter().any(|s| s["id"].as_str().is_some_and(|id| id.starts_with("tier[")));
    for (i, step) in path.iter().enumerate() {
        let id = step["id"].as_str().unwrap_or("");
        waits += simulated_wait(id);
        if id.starts_with("tier[") || i + 1 == path.len() {
            tier += 1;
            let end = ms(&step["end_ms"]);
            let what = if tiered { format!("the path to the end of tier {tier}") } else { "the critical path".into() };
            out.push((what, end.saturating_sub(from).saturating_sub(waits)));
            (from, waits) = (end, Duration::ZERO);
        }
    }
    out.push(("end of the run to the process's".to_string(), exited.duration_since(ended).unwrap_or_default()));
    out
}

/// The requests drover made to the simulators since they were last cleared, by shape (the 120
/// most frequent, and every ONTAP shape); the log is cleared after.
fn print_requests(lab: &Lab, what: &str) {
    println!("  requests of {what}:");
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    lab.ontap.with_world(|w| {
        for r in &w.requests {
            let shape: Vec<&str> = r.path.split('/').map(|p| if p.len() > 30 { "{uuid}" } else { p }).collect();
            let keys: Vec<&str> = r.query.0.iter().map(|(k, _)| k.as_str()).collect();
            *by.entry(format!("ontap {} {} {:?}", r.method, shape.join("/"), keys)).or_default() += 1;
        }
    });
    for (site, kube) in [("east", &lab.east), ("west", &lab.west)] {
        if let drover::lab::LabKube::Sim(cluster) = kube {
            cluster.with_store(|s| {
                for (method, path) in &s.requests {
                    let shape: Vec<&str> =
                        path.split('/')
                            .map(|p| {
                                if p.starts_with("shop") || p.contains(|c: char| c.is_ascii_digit()) { "*" } else { p }
                            })
                            .collect();
                    *by.entry(format!("{site} {method} {}", shape.join("/"))).or_default() += 1;
                }
            });
        }
    }
    let mut by: Vec<_> = by.into_iter().collect();
    by.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    println!("  {} requests in all", by.iter().map(|(_, n)| n).sum::<usize>());
    // The 120 most frequent, and every ONTAP shape.
    let shown = by.iter().enumerate().filter(|(i, (k, _))| *i < 120 || k.starts_with("ontap")).map(|(_, e)| e);
    for (k, n) in shown {
        println!("  {n:>6} {k}");
    }
    clear_requests(lab);
}

fn clear_requests(lab: &Lab) {
    lab.ontap.with_world(|w| w.requests.clear());
    for kube in [&lab.east, &lab.west] {
        if let drover::lab::LabKube::Sim(cluster) = kube {
            cluster.with_store(|s| s.requests.clear());
        }
    }
}

fn run(rt: &tokio::runtime::Runtime, s: &Scenario) {
    // DROVER_BENCH_SAMPLES=1: one quick sample while working on it.
    let count = std::env::var("DROVER_BENCH_SAMPLES").ok().and_then(|n| n.parse().ok()).unwrap_or(s.samples);
    println!(
        "\n== {}: lab failover; simulated waits: ONTAP job {JOB:?}, transfer {TRANSFER:?}, ready {READY:?}; {count} samples",
        s.name
    );
    let samples: Vec<Sample> = (0..count)
        .map(|i| {
            let sample = failover(rt, s);
            println!(
                "  sample {}: {:.2?} ({} steps; CPU: drover {:.1?}, simulators {:.1?}; peak RSS {} MiB)",
                i + 1,
                sample.wall,
                sample.instances,
                sample.drover_cpu,
                sample.sims_cpu,
                sample.peak_rss_kib / 1024
            );
            sample
        })
        .collect();
    let waits: Duration = samples[0].steps.iter().map(|(id, _)| simulated_wait(id)).sum();
    let wall = median(samples.iter().map(|s| s.wall).collect());
    println!("critical path of the first sample (duration; simulated wait):");
    for (id, d) in &samples[0].steps {
        println!("  {id:<40} {d:>9.2?} {:>9.2?}", simulated_wait(id));
    }
    let overhead = wall.saturating_sub(waits);
    println!("where the first sample's overhead went (time beyond the simulated waits):");
    for (what, d) in &samples[0].phases {
        println!("  {what:<52} {d:>9.2?}");
    }
    println!("preflight (median): {:.2?}", median(samples.iter().map(|s| s.preflight).collect()));
    // The median of each part on its own, and the floor of those medians.
    let spent: Vec<Spent> = samples.iter().filter_map(|s| s.preflight_spent).collect();
    let spent = (!spent.is_empty()).then(|| Spent {
        wall: median(spent.iter().map(|s| s.wall).collect()),
        drover: median(spent.iter().map(|s| s.drover).collect()),
        sims: median(spent.iter().map(|s| s.sims).collect()),
    });
    if let Some(spent) = spent {
        println!(
            "preflight's CPU (median): drover {:.2?}, simulators {:.2?} in {:.2?} — {:.1} of {} cores busy; \
             at the least {:.2?} on them",
            spent.drover,
            spent.sims,
            spent.wall,
            (spent.drover + spent.sims).as_secs_f64() / spent.wall.as_secs_f64().max(1e-9),
            cores(),
            spent.floor()
        );
    }
    println!(
        "CPU (median): drover {:.1?}, simulators {:.1?} — on this machine's cores, shared",
        median(samples.iter().map(|s| s.drover_cpu).collect()),
        median(samples.iter().map(|s| s.sims_cpu).collect())
    );
    println!("end-to-end (median): {wall:.2?}");
    println!("critical path of simulated waits: {waits:.2?}");
    println!(
        "orchestration overhead: {overhead:.2?} = {:.1} % of the waits (target < 5 %)",
        100.0 * overhead.as_secs_f64() / waits.as_secs_f64()
    );
    if let Some(spent) = spent {
        let budget = waits / 20;
        println!(
            "  of the target's {budget:.2?}, the preflight's CPU alone takes at the least {:.2?} ({:.0} %) on these cores",
            spent.floor(),
            100.0 * spent.floor().as_secs_f64() / budget.as_secs_f64()
        );
    }
    let rss = samples.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0);
    println!("peak RSS of drover: {:.0} MiB (target < 300 MiB)", rss as f64 / 1024.0);
    println!(
        "report (median): text {:.2?}, HTML {:.2?} ({} KB) (target < 1 s)",
        median(samples.iter().map(|s| s.report_text).collect()),
        median(samples.iter().map(|s| s.report_html).collect()),
        samples[0].report_html_bytes / 1000
    );
}

fn main() {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for s in SCENARIOS.iter().filter(|s| only.is_empty() || only.iter().any(|o| o == s.name)) {
        run(&rt, s);
    }
}
