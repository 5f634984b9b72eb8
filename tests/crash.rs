//! Crash safety: `drover run` killed with SIGKILL at 20 random moments, resumed each time,
//! completes — and no step whose success was journaled before a kill ever runs again.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drover::engine::events::{Event, Outcome};

/// Steps whose success the journal holds (a torn last line is ignored, as resume does).
fn journaled_successes(journal: &Path) -> BTreeSet<String> {
    let Ok(read) = drover::journal::read(journal) else {
        return BTreeSet::new();
    };
    let mut done = BTreeSet::new();
    for r in read.records {
        match r.event {
            Event::StepFinished { step, outcome: Outcome::Succeeded, .. } => {
                done.insert(step);
            }
            Event::StepStarted { step, .. } => {
                done.remove(&step);
            }
            _ => {}
        }
    }
    done
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(String::from).collect()
}

/// A small xorshift generator: reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

#[test]
fn sigkill_at_random_moments_then_resume_never_reruns_journaled_successes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran.log");
    let state = dir.path().join("state");
    // A chain, a fan-out of parallel steps, and a join: kills land in every shape.
    let mut steps = String::new();
    let step = |id: &str, needs: &str, ms: u32| {
        format!(
            "  - {{ id: {id}, uses: exec, needs: [{needs}], with: {{ shell: 'echo {id} >> {}; sleep {}.{:03}' }} }}\n",
            log.display(),
            ms / 1000,
            ms % 1000
        )
    };
    for i in 0..15 {
        let needs = if i == 0 { String::new() } else { format!("a{}", i - 1) };
        steps += &step(&format!("a{i}"), &needs, 50 + (i as u32 * 7) % 50);
    }
    for i in 0..8 {
        steps += &step(&format!("f{i}"), "a14", 60 + 20 * i as u32);
    }
    steps += &step("join", "f0, f1, f2, f3, f4, f5, f6, f7", 70);
    for i in 0..15 {
        let needs = if i == 0 { "join".to_string() } else { format!("z{}", i - 1) };
        steps += &step(&format!("z{i}"), &needs, 50 + (i as u32 * 11) % 50);
    }
    let rb = dir.path().join("crash.yaml");
    std::fs::write(&rb, format!("apiVersion: drover/v1\nkind: Runbook\nmetadata: {{ name: crash }}\nsteps:\n{steps}"))
        .unwrap();

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let drover = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
        c.args(args).env("DROVER_STATE_DIR", &state).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        c
    };

    let mut run_id: Option<String> = None;
    // (log lines before the kill, steps journaled as succeeded at the kill)
    let mut checkpoints: Vec<(usize, BTreeSet<String>)> = vec![];
    let mut finished = false;
    let mut kills = 0;
    // Kill until 20 kills were made and at least 5 of them landed after progress (a loaded
    // machine makes runs slower, so more attempts may be needed), or the run ends.
    let progressed = |c: &[(usize, BTreeSet<String>)]| c.windows(2).filter(|w| w[1].1.len() > w[0].1.len()).count();
    for kill in 0..60 {
        if kills >= 20 && progressed(&checkpoints) >= 5 {
            break;
        }
        let mut child = match &run_id {
            None => drover(&["run", rb.to_str().unwrap()]).spawn().unwrap(),
            Some(id) => drover(&["resume", id]).spawn().unwrap(),
        };
        let wait = Duration::from_millis(rng.next(5, 300));
        let start = Instant::now();
        while start.elapsed() < wait {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let exited = child.try_wait().unwrap();
        if exited.is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        }
        if run_id.is_none() {
            let runs = state.join("runs");
            if let Some(e) = std::fs::read_dir(&runs).ok().and_then(|mut d| d.next()) {
                run_id = Some(e.unwrap().file_name().to_string_lossy().to_string());
            } else {
                continue; // killed before the run directory existed: start again
            }
        }
        let journal = state.join("runs").join(run_id.as_ref().unwrap()).join("journal.jsonl");
        checkpoints.push((log_lines(&log).len(), journaled_successes(&journal)));
        if exited.is_some_and(|s| s.success()) {
            finished = true;
            eprintln!("run finished on its own after {kill} kills");
            break;
        }
    }
    assert!(kills >= 8, "the run should take long enough for many kills, got {kills}");
    let progressed = progressed(&checkpoints);
    assert!(progressed >= 5, "kills must land between steps too, not only inside the first one ({progressed})");
    let id = run_id.expect("the run started at least once");
    if !finished {
        let status = drover(&["resume", &id]).status().unwrap();
        assert!(status.success(), "the final resume completes the run");
    }
    // Orphaned `sleep`s of killed runs may still be writing; give them a moment.
    std::thread::sleep(Duration::from_millis(600));
    let lines = log_lines(&log);
    for (before, done) in &checkpoints {
        for (n, line) in lines.iter().enumerate().skip(*before) {
            assert!(
                !done.contains(line),
                "step {line} ran again (log line {n}) after its success was journaled (seed {seed})"
            );
        }
    }
    let journal = state.join("runs").join(&id).join("journal.jsonl");
    let all = journaled_successes(&journal);
    assert_eq!(all.len(), 39, "every step succeeded in the end: {all:?}");
    for s in &all {
        assert!(lines.contains(s), "step {s} never actually ran");
    }
}
