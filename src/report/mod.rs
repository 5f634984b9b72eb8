//! The report of a run, built from its journal alone: per step start, end, duration,
//! attempts, outcome, outputs, error and hint; the critical path (the run's measured recovery
//! time); rendered as text, JSON, or one self-contained HTML page with an SVG timeline.

mod html;

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use drover_api::{ActionError, Plan};

use crate::engine::events::{Event, Outcome, RunMode, RunOutcome};
use crate::engine::graph::Dag;
use crate::journal::state::RunState;

pub use html::render_html;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub runbook: String,
    pub runbook_path: String,
    pub mode: RunMode,
    /// None while running or after a crash that was not resumed.
    pub outcome: Option<RunOutcome>,
    pub started: String,
    pub finished: Option<String>,
    /// Wall time from the first start to the last record.
    pub wall_ms: u64,
    pub resumes: usize,
    pub params: serde_json::Map<String, Value>,
    pub steps: Vec<StepReport>,
    pub critical_path: Vec<String>,
    /// Sum of step durations along the critical path: the measured recovery time.
    pub critical_path_ms: u64,
    /// Dry runs: the recovery time and data loss a real run would have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
}

/// What a dry run predicts: recovery time from the step graph weighted by past real runs of
/// the same runbook, and the data that would be lost now (steps reporting `rpo_seconds`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Forecast {
    /// Critical path of the steps that would run, each weighted by its median past duration.
    pub recovery_ms: u64,
    pub path: Vec<String>,
    /// How many past successful runs the durations come from.
    pub from_runs: usize,
    /// Steps that would run and have no past duration (counted as 0).
    pub without_history: Vec<String>,
    /// Per reporting step: the data loss window, in seconds, if the run started now.
    pub rpo_seconds: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub uses: String,
    pub outcome: Option<Outcome>,
    /// Milliseconds after the run started; None if it never started.
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub duration_ms: u64,
    pub attempts: u32,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub outputs: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ActionError>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

fn ms_between(a: SystemTime, b: SystemTime) -> u64 {
    b.duration_since(a).unwrap_or_default().as_millis() as u64
}

impl Report {
    pub fn from_state(state: &RunState) -> Report {
        let start = &state.start;
        let t0 = state.records.first().and_then(|r| parse_time(&r.at)).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut steps: Vec<StepReport> = start
            .steps
            .iter()
            .map(|s| StepReport {
                id: s.id.clone(),
                uses: s.uses.clone(),
                outcome: None,
                start_ms: None,
                end_ms: None,
                duration_ms: 0,
                attempts: 0,
                outputs: Default::default(),
                error: None,
                retries: vec![],
                notes: vec![],
                plan: None,
                approved_by: None,
                undo: None,
            })
            .collect();
        let index: std::collections::HashMap<&str, usize> =
            start.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        let mut finished = None;
        let mut last_at = t0;
        for r in &state.records {
            let at = parse_time(&r.at).unwrap_or(t0);
            last_at = last_at.max(at);
            let offset = ms_between(t0, at);
            let Some(i) = r.event.step().and_then(|id| index.get(id).copied()) else {
                if let Event::RunFinished { .. } = r.event {
                    finished = Some(r.at.clone());
                }
                continue;
            };
            let s = &mut steps[i];
            match &r.event {
                Event::StepStarted { attempt, .. } => {
                    if *attempt == 1 || s.start_ms.is_none() {
                        s.start_ms = Some(offset);
                        s.end_ms = None;
                        s.error = None;
                    }
                    s.attempts = *attempt;
                }
                Event::StepRetrying { attempt, error, delay_ms, .. } => {
                    s.retries.push(format!("attempt {attempt}: {} (retried after {} ms)", error.message, delay_ms))
                }
                Event::StepNote { message, .. } if !s.notes.contains(message) => s.notes.push(message.clone()),
                Event::StepPlanned { plan, .. } => s.plan = Some(plan.clone()),
                Event::GateApproved { by, .. } => s.approved_by = Some(by.clone()),
                Event::StepFinished { outcome, outputs, error, attempts, duration_ms, .. } => {
                    s.outcome = Some(*outcome);
                    s.outputs = summarize(outputs);
                    s.error = error.clone();
                    s.attempts = s.attempts.max(*attempts);
                    s.duration_ms = *duration_ms;
                    if s.start_ms.is_some() {
                        s.end_ms = Some(offset);
                        // Wall clocks may step; trust the monotonic duration for the bar.
                        s.start_ms = Some(offset.saturating_sub(*duration_ms));
                    }
                }
                Event::UndoFinished { error, .. } => {
                    s.undo = Some(match error {
                        None => "undone".into(),
                        Some(e) => format!("undo failed: {}", e.message),
                    })
                }
                _ => {}
            }
        }
        // Steps that were running when the process died.
        for (i, s) in steps.iter_mut().enumerate() {
            if s.outcome.is_none()
                && s.start_ms.is_some()
                && state.steps.get(&start.steps[i].id).is_some_and(|r| r.in_flight)
            {
                s.outcome = Some(Outcome::Interrupted);
            }
        }
        let (critical_path, critical_path_ms) = critical_path(state, &steps);
        Report {
            run_id: start.run_id.clone(),
            runbook: start.runbook.clone(),
            runbook_path: start.runbook_path.clone(),
            mode: start.mode,
            outcome: state.finished,
            started: state.records.first().map(|r| r.at.clone()).unwrap_or_default(),
            finished,
            wall_ms: ms_between(t0, last_at),
            resumes: state.resumes,
            params: start.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            steps,
            critical_path,
            critical_path_ms,
            forecast: None,
        }
    }

    /// For a dry run: predict recovery time from `history` (reports of earlier runs, any
    /// runbook; only successful real runs of this runbook count) and gather the RPO reported by
    /// steps (`rpo_seconds` outputs).
    pub fn with_forecast(mut self, state: &RunState, history: &[Report]) -> Report {
        if self.mode != RunMode::DryRun {
            return self;
        }
        let past: Vec<&Report> = history
            .iter()
            .filter(|r| r.runbook == self.runbook && r.mode == RunMode::Run && r.outcome == Some(RunOutcome::Succeeded))
            .collect();
        let would_run = |s: &StepReport| !matches!(s.outcome, Some(Outcome::Skipped) | None);
        let median = |id: &str| -> Option<u64> {
            let mut d: Vec<u64> = past
                .iter()
                .filter_map(|r| r.steps.iter().find(|s| s.id == id && s.outcome == Some(Outcome::Succeeded)))
                .map(|s| s.duration_ms)
                .collect();
            d.sort_unstable();
            (!d.is_empty()).then(|| d[d.len() / 2])
        };
        let weights: Vec<Option<u64>> =
            self.steps.iter().map(|s| if would_run(s) { median(&s.id) } else { Some(0) }).collect();
        let without_history =
            self.steps.iter().zip(&weights).filter(|(_, w)| w.is_none()).map(|(s, _)| s.id.clone()).collect();
        let infos = &state.start.steps;
        let (path, recovery_ms) = match Dag::build(infos.iter().map(|s| (s.id.as_str(), s.needs.as_slice()))) {
            Ok(dag) => {
                let (path, total) = dag.critical_path(|i| weights[i].unwrap_or(0) as f64);
                (
                    path.into_iter().filter(|&i| weights[i].unwrap_or(0) > 0).map(|i| infos[i].id.clone()).collect(),
                    total as u64,
                )
            }
            Err(_) => (vec![], 0),
        };
        let rpo_seconds = self
            .steps
            .iter()
            .filter_map(|s| s.outputs.get("rpo_seconds").and_then(Value::as_f64).map(|v| (s.id.clone(), v)))
            .collect();
        self.forecast = Some(Forecast { recovery_ms, path, from_runs: past.len(), without_history, rpo_seconds });
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialize")
    }

    pub fn outcome_label(&self) -> &'static str {
        match self.outcome {
            Some(o) => o.label(),
            None => "interrupted (not finished; `drover resume` continues it)",
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let kind = if self.mode == RunMode::DryRun { "dry run" } else { "run" };
        let _ = writeln!(out, "{kind} {} of `{}`: {}", self.run_id, self.runbook, self.outcome_label());
        let _ = writeln!(
            out,
            "started {}, wall time {}{}",
            self.started,
            fmt_ms(self.wall_ms),
            if self.resumes > 0 { format!(", resumed {} time(s)", self.resumes) } else { String::new() }
        );
        let width = self.steps.iter().map(|s| s.id.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(
            out,
            "\n  {:<width$}  {:<20}  {:>9}  {:>9}  {:>8}  action",
            "step", "outcome", "start", "duration", "attempts"
        );
        for s in &self.steps {
            let outcome = s.outcome.map(Outcome::label).unwrap_or("pending");
            let start = s.start_ms.map(|m| format!("+{}", fmt_ms(m))).unwrap_or_else(|| "-".into());
            let dur = if s.start_ms.is_some() { fmt_ms(s.duration_ms) } else { "-".into() };
            let _ = writeln!(
                out,
                "  {:<width$}  {:<20}  {:>9}  {:>9}  {:>8}  {}",
                s.id, outcome, start, dur, s.attempts, s.uses
            );
            for r in &s.retries {
                let _ = writeln!(out, "  {:<width$}    retry: {r}", "");
            }
            for n in &s.notes {
                let _ = writeln!(out, "  {:<width$}    note: {n}", "");
            }
            if let Some(by) = &s.approved_by {
                let _ = writeln!(out, "  {:<width$}    approved by {by}", "");
            }
            if let Some(plan) = &s.plan {
                let _ = writeln!(out, "  {:<width$}    plan: {}", "", plan.summary);
                for c in &plan.changes {
                    let _ = writeln!(out, "  {:<width$}      would: {c}", "");
                }
                for c in &plan.checks {
                    let _ = writeln!(
                        out,
                        "  {:<width$}      [{}] {}: {}",
                        "",
                        if c.ok { "ok" } else { "FAIL" },
                        c.name,
                        c.detail
                    );
                }
            }
            if let Some(e) = &s.error {
                let _ = writeln!(out, "  {:<width$}    error: {}", "", e.message);
                if let Some(h) = &e.hint {
                    let _ = writeln!(out, "  {:<width$}    hint: {h}", "");
                }
            }
            if !s.outputs.is_empty() && s.error.is_none() {
                let shown: Vec<String> = s.outputs.iter().take(6).map(|(k, v)| format!("{k}={}", short(v))).collect();
                let _ = writeln!(out, "  {:<width$}    outputs: {}", "", shown.join(", "));
            }
            if let Some(u) = &s.undo {
                let _ = writeln!(out, "  {:<width$}    {u}", "");
            }
        }
        let _ = writeln!(
            out,
            "\ncritical path ({}): {}",
            fmt_ms(self.critical_path_ms),
            if self.critical_path.is_empty() { "-".into() } else { self.critical_path.join(" -> ") }
        );
        if self.mode == RunMode::DryRun {
            let failed = self.steps.iter().filter(|s| s.outcome == Some(Outcome::PlanFailed)).count();
            let _ = writeln!(out, "{failed} step(s) with failed preconditions; nothing was changed");
        }
        if let Some(f) = &self.forecast {
            if f.from_runs == 0 {
                let _ = writeln!(
                    out,
                    "predicted recovery time: unknown — no earlier successful run of `{}` in this state directory",
                    self.runbook
                );
            } else {
                let _ = writeln!(
                    out,
                    "predicted recovery time: {} (critical path by the median step durations of {} earlier run(s): {})",
                    fmt_ms(f.recovery_ms),
                    f.from_runs,
                    if f.path.is_empty() { "-".into() } else { f.path.join(" -> ") }
                );
                if !f.without_history.is_empty() {
                    let _ = writeln!(out, "  steps never run before (counted as 0): {}", f.without_history.join(", "));
                }
            }
            // Several steps may read the same replication; the worst figure is the answer.
            if let Some((step, rpo)) = f.rpo_seconds.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
                let _ = writeln!(
                    out,
                    "RPO now: {} of data would be lost (replication lag, as {step} read it)",
                    humantime::format_duration(std::time::Duration::from_secs(rpo.max(0.0).round() as u64))
                );
            }
        }
        out
    }
}

/// The heaviest chain of executed steps by measured duration.
fn critical_path(state: &RunState, steps: &[StepReport]) -> (Vec<String>, u64) {
    let infos = &state.start.steps;
    let Ok(dag) = Dag::build(infos.iter().map(|s| (s.id.as_str(), s.needs.as_slice()))) else {
        return (vec![], 0);
    };
    let (path, total) =
        dag.critical_path(|i| if steps[i].start_ms.is_some() { steps[i].duration_ms as f64 } else { 0.0 });
    let path: Vec<String> =
        path.into_iter().filter(|&i| steps[i].start_ms.is_some()).map(|i| infos[i].id.clone()).collect();
    (path, total as u64)
}

/// Outputs as shown in reports: long strings cut.
fn summarize(outputs: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    outputs
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) if s.len() > 2000 => {
                    Value::String(format!("{}… ({} bytes)", &s[..s.floor_char_boundary(2000)], s.len()))
                }
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = s.replace('\n', "⏎");
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s }
}

pub fn fmt_ms(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}
