//! What the operator sees while a run goes: a live view of running steps on a terminal, one
//! line per event otherwise, or JSON lines for machines. All three read the engine's events.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::engine::events::{Event, Outcome, now_rfc3339};
use crate::report::fmt_ms;

/// The terminal's live view: a spinner per running step above the finished lines.
#[derive(Clone)]
pub struct LiveView {
    mp: MultiProgress,
}

impl LiveView {
    pub fn new() -> Self {
        LiveView { mp: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)) }
    }

    pub fn println(&self, text: &str) {
        let _ = self.mp.println(text);
    }

    /// Stop drawing (while the operator types an answer).
    pub fn pause(&self) {
        self.mp.set_draw_target(ProgressDrawTarget::hidden());
    }

    pub fn resume(&self) {
        self.mp.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    }
}

#[derive(Clone)]
pub enum Render {
    Live(LiveView),
    Lines,
    /// One JSON line or YAML document per event.
    Machine(super::Output),
}

/// Where the run stands as a whole, for the live view's last line.
pub struct Tally {
    total: usize,
    done: HashSet<String>,
    /// The runbook's `rto_target` param, when it has one.
    rto_target: Option<Duration>,
}

impl Tally {
    /// `done`: the steps a resumed run starts with already finished.
    pub fn new(total: usize, done: impl IntoIterator<Item = String>, rto_target: Option<Duration>) -> Tally {
        Tally { total, done: done.into_iter().collect(), rto_target }
    }

    fn note(&mut self, ev: &Event) {
        match ev {
            Event::RunStarted(s) => self.total = s.steps.len(),
            Event::StepFinished { step, outcome, .. } if *outcome != Outcome::Interrupted => {
                self.done.insert(step.clone());
            }
            _ => {}
        }
    }

    /// "14 of 114 steps done, 3 running"
    fn line(&self, running: usize) -> String {
        let mut s = format!("{} of {} steps done", self.done.len(), self.total);
        if running > 0 {
            s.push_str(&format!(", {running} running"));
        }
        s
    }

    /// What the elapsed time is measured against.
    fn target(&self) -> String {
        self.rto_target.map(|t| format!(" of the {} RTO target", humantime::format_duration(t))).unwrap_or_default()
    }
}

/// One event as `--output json` / `yaml` streams it.
#[derive(serde::Serialize)]
struct Line<'e> {
    at: String,
    event: &'e Event,
}

/// Consume events until the engine drops its sender.
pub fn spawn(
    render: Render,
    mut rx: mpsc::UnboundedReceiver<Event>,
    uses: HashMap<String, String>,
    mut tally: Tally,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let t0 = Instant::now();
        // The live view's last line: steps done of all, elapsed against the RTO target.
        let status = match &render {
            Render::Live(view) => {
                let style = ProgressStyle::with_template("── {msg} · {elapsed_precise} elapsed{prefix}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let bar = ProgressBar::new_spinner()
                    .with_style(style)
                    .with_prefix(tally.target())
                    .with_message(tally.line(0));
                let bar = view.mp.add(bar);
                bar.enable_steady_tick(Duration::from_millis(500));
                Some(bar)
            }
            _ => None,
        };
        // Without a live view, a long step's progress is shown at most every 10 s (JSON: 1 s).
        let mut last_progress: HashMap<String, Instant> = HashMap::new();
        let bars: Arc<Mutex<HashMap<String, ProgressBar>>> = Arc::default();
        let style = ProgressStyle::with_template("{spinner} {prefix:<24} {elapsed:>5} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        // Lines and documents queued together go out in one write: a fleet's bursts are
        // thousands of events, and a write per line cost more than the lines.
        let mut pending = String::new();
        loop {
            let ev = match rx.try_recv() {
                Ok(ev) => ev,
                Err(_) => {
                    flush(&mut pending);
                    match rx.recv().await {
                        Some(ev) => ev,
                        None => break,
                    }
                }
            };
            if pending.len() >= 1 << 16 {
                flush(&mut pending);
            }
            tally.note(&ev);
            match &render {
                Render::Machine(format) => {
                    // Progress at most once a second per step: a fleet's thousand waits each
                    // report every reading, and a reader of the stream wants where things stand.
                    if let Event::StepProgress { step, .. } = &ev {
                        if last_progress.get(step).is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                            continue;
                        }
                        last_progress.insert(step.clone(), Instant::now());
                    }
                    if let Event::StepFinished { step, .. } = &ev {
                        last_progress.remove(step);
                    }
                    // Serialized straight from the event: a run's start carries every step.
                    pending.push_str(&super::out::render(*format, &Line { at: now_rfc3339(), event: &ev }));
                }
                Render::Lines => {
                    if let Event::StepProgress { step, progress } = &ev {
                        let due = last_progress.get(step).is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                        if due {
                            last_progress.insert(step.clone(), Instant::now());
                            let counts = match (progress.done, progress.total) {
                                (Some(d), Some(t)) => format!(" {d}/{t}"),
                                _ => String::new(),
                            };
                            let _ = writeln!(
                                pending,
                                "[{:>8}] … {step}{counts} {}",
                                fmt_ms(t0.elapsed().as_millis() as u64),
                                progress.message
                            );
                        }
                    }
                    if let Some(text) = describe(&ev, &uses) {
                        let _ = writeln!(pending, "[{:>8}] {text}", fmt_ms(t0.elapsed().as_millis() as u64));
                    }
                }
                Render::Live(view) => {
                    let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
                    match &ev {
                        Event::StepStarted { step, attempt, .. } if *attempt == 1 || !bars.contains_key(step) => {
                            let bar = match &status {
                                Some(status) => view.mp.insert_before(status, ProgressBar::new_spinner()),
                                None => view.mp.add(ProgressBar::new_spinner()),
                            };
                            bar.set_style(style.clone());
                            bar.set_prefix(step.clone());
                            bar.set_message(uses.get(step).cloned().unwrap_or_default());
                            bar.enable_steady_tick(Duration::from_millis(120));
                            bars.insert(step.clone(), bar);
                        }
                        Event::StepProgress { step, progress } => {
                            if let Some(bar) = bars.get(step) {
                                let counts = match (progress.done, progress.total) {
                                    (Some(d), Some(t)) => format!("{d}/{t} "),
                                    (Some(d), None) => format!("{d} "),
                                    _ => String::new(),
                                };
                                bar.set_message(format!("{counts}{}", progress.message));
                            }
                        }
                        Event::StepFinished { step, .. } => {
                            if let Some(bar) = bars.remove(step) {
                                bar.finish_and_clear();
                                view.mp.remove(&bar);
                            }
                        }
                        _ => {}
                    }
                    if let Some(status) = &status {
                        status.set_message(tally.line(bars.len()));
                    }
                    if let Some(text) = describe(&ev, &uses) {
                        view.println(&format!("[{:>8}] {text}", fmt_ms(t0.elapsed().as_millis() as u64)));
                    }
                }
            }
        }
        flush(&mut pending);
        for (_, bar) in bars.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            bar.finish_and_clear();
        }
        if let Some(status) = status {
            status.finish_and_clear();
        }
    })
}

/// Write what the view gathered.
fn flush(pending: &mut String) {
    if !pending.is_empty() {
        super::out::write(format_args!("{pending}"));
        pending.clear();
    }
}

/// One human line for an event, or None for events not worth a line.
pub fn describe(ev: &Event, uses: &HashMap<String, String>) -> Option<String> {
    Some(match ev {
        Event::RunStarted(s) => format!("run {} of `{}` started ({} steps)", s.run_id, s.runbook, s.steps.len()),
        Event::RunResumed { forced, params, .. } => {
            let changed: Vec<String> =
                params.iter().map(|(k, v)| format!("{k}={}", crate::runbook::expr::display(v))).collect();
            format!(
                "run resumed{}{}",
                if *forced { " (--force: runbook changed)" } else { "" },
                if changed.is_empty() { String::new() } else { format!(" with {}", changed.join(", ")) }
            )
        }
        Event::StepStarted { step, attempt: 1, .. } => {
            format!("▶ {step}  ({})", uses.get(step).map(String::as_str).unwrap_or("?"))
        }
        Event::StepStarted { step, attempt, .. } => format!("▶ {step}  attempt {attempt}"),
        Event::StepRetrying { step, attempt, error, delay_ms } => {
            format!("↻ {step}  attempt {attempt} failed: {}; retrying in {}", error.message, fmt_ms(*delay_ms))
        }
        Event::StepNote { step, message } => format!("  {step}: {message}"),
        Event::StepPlanned { step, plan } => {
            let mut s = format!("· {step}  would: {}", plan.summary);
            for c in plan.checks.iter().filter(|c| !c.ok) {
                s.push_str(&format!("\n           precondition failed: {}: {}", c.name, c.detail));
            }
            s
        }
        Event::StepFinished { step, outcome, error, duration_ms, attempts, .. } => {
            let mark = match outcome {
                Outcome::Succeeded | Outcome::Planned => "✓",
                Outcome::Failed | Outcome::PlanFailed => "✗",
                Outcome::FailedContinued => "!",
                _ => "–",
            };
            let mut s = format!("{mark} {step}  {}", outcome.label());
            if *attempts > 0 {
                s.push_str(&format!(" in {}", fmt_ms(*duration_ms)));
            }
            if *attempts > 1 {
                s.push_str(&format!(" after {attempts} attempts"));
            }
            if let Some(e) = error {
                s.push_str(&format!(": {}", e.message));
                if let Some(h) = &e.hint {
                    s.push_str(&format!("\n           hint: {h}"));
                }
            }
            s
        }
        Event::GateApproved { step, by } => format!("✓ {step}  approved by {by}"),
        Event::GateDenied { step, by } => format!("✗ {step}  denied by {by}"),
        Event::PreflightStarted { steps, timeout_ms } => format!(
            "preflight: checking the {steps} step(s) that will run against the real systems (read-only, at most {})",
            fmt_ms(*timeout_ms)
        ),
        Event::PreflightChecked { step, outcome: Outcome::PlanFailed, error, .. } => {
            let mut s = format!("✗ preflight {step}");
            if let Some(e) = error {
                s.push_str(&format!(": {}", e.message));
                if let Some(h) = &e.hint {
                    s.push_str(&format!("\n           hint: {h}"));
                }
            }
            s
        }
        Event::PreflightChecked { step, outcome: Outcome::Skipped, .. } => {
            format!("– preflight {step}  skipped: its `if:` is false")
        }
        Event::PreflightChecked { outcome: Outcome::Blocked | Outcome::NotRun, .. } => return None,
        Event::PreflightChecked { step, plan, deferred, .. } if !deferred.is_empty() => {
            let summary = plan.as_ref().map(|p| p.summary.as_str()).unwrap_or("");
            format!("· preflight {step}  {summary} (checked again when it runs: {})", deferred.join("; "))
        }
        Event::PreflightChecked { step, plan, .. } => {
            let summary = plan.as_ref().map(|p| p.summary.as_str()).filter(|s| !s.is_empty()).unwrap_or("ok");
            format!("· preflight {step}  {summary}")
        }
        Event::PreflightFinished { failed, duration_ms } if failed.is_empty() => {
            format!("preflight passed in {}: every step that will run can run", fmt_ms(*duration_ms))
        }
        Event::PreflightFinished { failed, duration_ms } => format!(
            "preflight FAILED in {}: {} step(s) cannot work ({}); nothing was changed",
            fmt_ms(*duration_ms),
            failed.len(),
            failed.join(", ")
        ),
        Event::PreflightSkipped { by } => format!("preflight skipped (--skip-preflight, by {by})"),
        Event::RollbackRefused { past } => {
            format!("not rolling back: `{past}` (the point of no return) has begun; the run halts where it is")
        }
        Event::UndoStarted { step } => format!("⟲ {step}  undoing"),
        Event::UndoFinished { step, error: None } => format!("⟲ {step}  undone"),
        Event::UndoFinished { step, error: Some(e) } => format!("✗ {step}  undo failed: {}", e.message),
        Event::StopRequested { abort: false, signal } => format!(
            "stopping{}: no new steps start; running steps finish (a second Ctrl-C or signal aborts them)",
            signal.as_deref().map(|s| format!(" ({s})")).unwrap_or_default()
        ),
        Event::StopRequested { abort: true, signal } => {
            format!("aborting running steps{}", signal.as_deref().map(|s| format!(" ({s})")).unwrap_or_default())
        }
        Event::RunFinished { outcome } => format!("run {}", outcome.label()),
        Event::Notified { delivered, .. } => {
            let said = crate::report::Notification::from_event(ev, "").map(|n| n.sentence()).unwrap_or_default();
            format!("{} {said}", if *delivered { "✉" } else { "!" })
        }
        Event::StepProgress { .. } | Event::StepCheckpoint { .. } | Event::GateWaiting { .. } => {
            return None;
        }
    })
}
