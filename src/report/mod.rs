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
    /// Wall time from the first record to the last, crash gaps included.
    pub wall_ms: u64,
    pub resumes: usize,
    pub params: serde_json::Map<String, Value>,
    /// What the preflight checked before the first change (real runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preflight: Option<PreflightReport>,
    pub steps: Vec<StepReport>,
    pub critical_path: Vec<String>,
    /// Sum of the steps' work (gate waits left out) along the critical path.
    pub critical_path_ms: u64,
    /// Each process that worked on the run: the first, and one per resume.
    pub processes: Vec<ProcessReport>,
    /// Time between a process's last record and the next one's start: crashes, kills, waits
    /// for an operator to resume.
    pub gaps_ms: u64,
    /// Time operators took to answer gates.
    pub gate_wait_ms: u64,
    /// From the start of the first step that changes the world to the end of the last step:
    /// what users lived through (on a failed run, until the last record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage: Option<Outage>,
    /// The `rto_target` param, when the runbook has one, and whether the outage stayed within.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_target_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_met: Option<bool>,
    /// Who answered which gate, and when.
    pub approvals: Vec<Approval>,
    /// On a run that did not succeed: where each site stands.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteStanding>,
    /// What happened to rollback, when the runbook asks for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// What stopped the run when the operator or a supervisor did: `SIGINT`, `SIGTERM`, `SIGHUP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
    /// What to do next, as a command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Dry runs: the recovery time and data loss a real run would have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
}

/// The preflight of a real run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PreflightReport {
    /// Set when the operator skipped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_by: Option<String>,
    pub duration_ms: u64,
    /// Steps checked (skipped ones left out).
    pub checked: usize,
    pub failed: Vec<PreflightFailure>,
    /// Steps whose state checks failed but may hold once earlier steps have run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PreflightFailure {
    pub step: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// One process's part in a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    pub host: String,
    pub pid: u32,
    pub started: String,
    /// Its last record.
    pub last: String,
    /// `finished the run`, `ended without finishing (killed or crashed)`, or `running`.
    pub ended: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outage {
    pub from_step: String,
    pub to_step: String,
    pub ms: u64,
    /// False while the run has not succeeded: the outage is still going on.
    pub over: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    pub step: String,
    pub by: String,
    pub at: String,
    pub approved: bool,
    pub waited_ms: u64,
}

/// Where one site stands after a run that did not succeed.
#[derive(Debug, Clone, Serialize)]
pub struct SiteStanding {
    pub site: String,
    /// Steps that changed this site and succeeded (and were not undone).
    pub changed: Vec<String>,
    /// Steps on this site that failed or were stopped mid-way: their change may be partial.
    pub uncertain: Vec<String>,
    /// Steps on this site that were undone by the rollback.
    pub undone: Vec<String>,
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
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub outcome: Option<Outcome>,
    /// Milliseconds after the run started; None if it never started.
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    /// The step's work: its last attempt's run time, gate waits left out.
    pub duration_ms: u64,
    /// Time its gate waited for an operator.
    #[serde(skip_serializing_if = "is_zero")]
    pub gate_wait_ms: u64,
    /// The part of that wait inside an attempt (the `approve` action): not work either.
    #[serde(skip)]
    gate_inside_ms: u64,
    pub attempts: u32,
    /// Every attempt, killed ones too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempt_log: Vec<AttemptReport>,
    /// The sites it acted on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
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
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub point_of_no_return: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub changes: bool,
}

/// One attempt of a step.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptReport {
    pub attempt: u32,
    pub start_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// `succeeded`, `failed: …`, `retried: …`, or `killed (the process ended)`.
    pub result: String,
}

impl StepReport {
    /// The step's own time: its duration without the operator's time at a gate inside it.
    pub fn work_ms(&self) -> u64 {
        self.duration_ms.saturating_sub(self.gate_inside_ms)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
                description: s.description.clone(),
                outcome: None,
                start_ms: None,
                end_ms: None,
                duration_ms: 0,
                gate_wait_ms: 0,
                gate_inside_ms: 0,
                attempts: 0,
                attempt_log: vec![],
                sites: vec![],
                outputs: Default::default(),
                error: None,
                retries: vec![],
                notes: vec![],
                plan: None,
                approved_by: None,
                undo: None,
                point_of_no_return: s.point_of_no_return,
                changes: s.changes,
            })
            .collect();
        let index: std::collections::HashMap<&str, usize> =
            start.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        let mut finished = None;
        let mut last_at = t0;
        let mut processes: Vec<ProcessReport> = vec![];
        let mut gaps_ms = 0;
        let mut preflight: Option<PreflightReport> = None;
        let mut approvals = vec![];
        let mut gate_since: std::collections::HashMap<String, SystemTime> = Default::default();
        let mut rollback = None;
        let mut undone: Vec<usize> = vec![];
        for r in &state.records {
            let at = parse_time(&r.at).unwrap_or(t0);
            let offset = ms_between(t0, at);
            match &r.event {
                Event::RunStarted(s) => processes.push(ProcessReport {
                    host: s.host.clone(),
                    pid: s.pid,
                    started: r.at.clone(),
                    last: r.at.clone(),
                    ended: String::new(),
                }),
                Event::RunResumed { host, pid, .. } => {
                    gaps_ms += ms_between(last_at, at);
                    // Attempts the previous process left open were cut off with it.
                    let cut = ms_between(t0, last_at);
                    for s in steps.iter_mut() {
                        if let Some(a) = s.attempt_log.last_mut().filter(|a| a.end_ms.is_none()) {
                            a.end_ms = Some(cut);
                            a.result = "killed (the process ended)".into();
                        }
                    }
                    processes.push(ProcessReport {
                        host: host.clone(),
                        pid: *pid,
                        started: r.at.clone(),
                        last: r.at.clone(),
                        ended: String::new(),
                    });
                }
                _ => {}
            }
            last_at = last_at.max(at);
            if let Some(p) = processes.last_mut() {
                p.last = r.at.clone();
            }
            match &r.event {
                Event::RunFinished { .. } => finished = Some(r.at.clone()),
                Event::PreflightStarted { .. } => preflight = Some(PreflightReport::default()),
                Event::PreflightSkipped { by } => {
                    preflight = Some(PreflightReport { skipped_by: Some(by.clone()), ..Default::default() })
                }
                Event::PreflightChecked { step, outcome, error, deferred, .. } => {
                    let p = preflight.get_or_insert_with(Default::default);
                    if !matches!(outcome, Outcome::Skipped | Outcome::Blocked | Outcome::NotRun) {
                        p.checked += 1;
                    }
                    if *outcome == Outcome::PlanFailed
                        && let Some(e) = error
                    {
                        p.failed.push(PreflightFailure {
                            step: step.clone(),
                            message: e.message.clone(),
                            hint: e.hint.clone(),
                        });
                    }
                    if !deferred.is_empty() {
                        p.deferred.push((step.clone(), deferred.clone()));
                    }
                }
                Event::PreflightFinished { failed, duration_ms } => {
                    let p = preflight.get_or_insert_with(Default::default);
                    p.duration_ms = *duration_ms;
                    // Steps allowed to fail (continue_on_error) do not stop the run.
                    p.failed.retain(|f| failed.contains(&f.step));
                }
                Event::RollbackRefused { past } => {
                    rollback = Some(format!(
                        "not rolled back: `{past}`, the point of no return, had begun; the run halted where it was"
                    ))
                }
                _ => {}
            }
            let Some(i) = r.event.step().and_then(|id| index.get(id).copied()) else {
                continue;
            };
            let s = &mut steps[i];
            match &r.event {
                Event::StepStarted { attempt, sites, .. } => {
                    if *attempt == 1 || s.start_ms.is_none() {
                        s.start_ms = Some(offset);
                        s.end_ms = None;
                        s.error = None;
                    }
                    s.attempts = *attempt;
                    for site in sites {
                        if !s.sites.contains(site) {
                            s.sites.push(site.clone());
                        }
                    }
                    s.attempt_log.push(AttemptReport {
                        attempt: *attempt,
                        start_ms: offset,
                        end_ms: None,
                        result: "running".into(),
                    });
                }
                Event::StepRetrying { attempt, error, delay_ms, .. } => {
                    s.retries.push(format!("attempt {attempt}: {} (retried after {} ms)", error.message, delay_ms));
                    if let Some(a) = s.attempt_log.last_mut().filter(|a| a.end_ms.is_none()) {
                        a.end_ms = Some(offset);
                        a.result = format!("failed, retried: {}", error.message);
                    }
                }
                Event::StepNote { message, .. } if !s.notes.contains(message) => s.notes.push(message.clone()),
                Event::StepPlanned { plan, .. } => s.plan = Some(plan.clone()),
                Event::GateWaiting { step, .. } => {
                    gate_since.insert(step.clone(), at);
                }
                Event::GateApproved { step, by } | Event::GateDenied { step, by } => {
                    let waited = gate_since.remove(step).map(|since| ms_between(since, at)).unwrap_or(0);
                    s.gate_wait_ms += waited;
                    if s.attempt_log.last().is_some_and(|a| a.end_ms.is_none()) {
                        s.gate_inside_ms += waited;
                    }
                    let approved = matches!(r.event, Event::GateApproved { .. });
                    if approved {
                        s.approved_by = Some(by.clone());
                    }
                    approvals.push(Approval {
                        step: step.clone(),
                        by: by.clone(),
                        at: r.at.clone(),
                        approved,
                        waited_ms: waited,
                    });
                }
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
                    if let Some(a) = s.attempt_log.last_mut().filter(|a| a.end_ms.is_none()) {
                        a.end_ms = Some(offset);
                        a.result = match error {
                            Some(e) => format!("{}: {}", outcome.label(), e.message),
                            None => outcome.label().to_string(),
                        };
                    }
                }
                Event::UndoFinished { error, .. } => {
                    if error.is_none() {
                        undone.push(i);
                    }
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
        let n = processes.len();
        for (k, p) in processes.iter_mut().enumerate() {
            p.ended = if k + 1 < n {
                "ended without finishing (killed or crashed)".into()
            } else if state.finished.is_some() {
                "finished the run".into()
            } else {
                "ended without finishing, or still running".into()
            };
        }
        let (critical_path, critical_path_ms) = critical_path(state, &steps);
        let gate_wait_ms = steps.iter().map(|s| s.gate_wait_ms).sum();
        let outage = outage(&steps, state.finished, ms_between(t0, last_at));
        let params: serde_json::Map<String, Value> = state.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let rto_target_ms = params
            .get("rto_target")
            .and_then(Value::as_str)
            .and_then(|t| humantime::parse_duration(t).ok())
            .map(|d| d.as_millis() as u64);
        let rto_met = match (rto_target_ms, &outage) {
            (Some(t), Some(o)) if o.over => Some(o.ms <= t),
            (Some(t), Some(o)) if o.ms > t => Some(false),
            _ => None,
        };
        if rollback.is_none() && start.rollback && state.finished == Some(RunOutcome::RolledBack) {
            rollback = Some("rolled back: every completed step with an undo was undone".into());
        }
        let sites = if state.finished == Some(RunOutcome::Succeeded) || start.mode == RunMode::DryRun {
            vec![]
        } else {
            standing(&steps, &undone)
        };
        let mut report = Report {
            run_id: start.run_id.clone(),
            runbook: start.runbook.clone(),
            runbook_path: start.runbook_path.clone(),
            mode: start.mode,
            outcome: state.finished,
            started: state.records.first().map(|r| r.at.clone()).unwrap_or_default(),
            finished,
            wall_ms: ms_between(t0, last_at),
            resumes: state.resumes,
            params,
            preflight,
            steps,
            critical_path,
            critical_path_ms,
            processes,
            gaps_ms,
            gate_wait_ms,
            outage,
            rto_target_ms,
            rto_met,
            approvals,
            sites,
            rollback,
            // The last stop asked for, if the run ended stopped.
            stopped_by: state
                .records
                .iter()
                .rev()
                .find_map(|r| match &r.event {
                    Event::StopRequested { signal, .. } => {
                        Some(signal.clone().unwrap_or_else(|| "the operator".into()))
                    }
                    _ => None,
                })
                .filter(|_| state.finished == Some(RunOutcome::Cancelled)),
            next: None,
            forecast: None,
        };
        report.next = report.next_command();
        report
    }

    /// The command that continues from here, when there is one.
    fn next_command(&self) -> Option<String> {
        let id = &self.run_id;
        match self.outcome {
            Some(RunOutcome::Succeeded) => None,
            _ if self.mode == RunMode::DryRun => None,
            Some(RunOutcome::RolledBack) => {
                Some(format!("nothing this run did remains; fix the cause, then start again (or `drover resume {id}`)"))
            }
            Some(RunOutcome::Cancelled) | None => Some(format!("drover resume {id}")),
            Some(RunOutcome::Failed) => {
                let failed =
                    self.preflight.as_ref().and_then(|p| p.failed.first().map(|f| f.step.clone())).or_else(|| {
                        self.steps.iter().find(|s| s.outcome == Some(Outcome::Failed)).map(|s| s.id.clone())
                    });
                Some(match failed {
                    Some(step) => format!("fix what failed at `{step}` (above), then: drover resume {id}"),
                    None => format!("drover resume {id}"),
                })
            }
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
        if self.processes.len() > 1 {
            for (k, p) in self.processes.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  process {} on {} (pid {}): {} → {}, {}",
                    k + 1,
                    p.host,
                    p.pid,
                    p.started,
                    p.last,
                    p.ended
                );
            }
            let _ =
                writeln!(out, "  time between processes (crashes, kills, waiting to resume): {}", fmt_ms(self.gaps_ms));
        }
        if let Some(p) = &self.preflight {
            match &p.skipped_by {
                Some(by) => {
                    let _ = writeln!(out, "preflight: SKIPPED by {by} (--skip-preflight)");
                }
                None if p.failed.is_empty() => {
                    let _ =
                        writeln!(out, "preflight: passed — {} step(s) checked in {}", p.checked, fmt_ms(p.duration_ms));
                }
                None => {
                    let _ = writeln!(
                        out,
                        "preflight: FAILED — {} of {} step(s) cannot work; nothing was changed",
                        p.failed.len(),
                        p.checked
                    );
                    for f in &p.failed {
                        let _ = writeln!(out, "  ✗ {}: {}", f.step, f.message);
                        if let Some(h) = &f.hint {
                            let _ = writeln!(out, "      hint: {h}");
                        }
                    }
                }
            }
            for (step, checks) in &p.deferred {
                let _ = writeln!(out, "  {step}: checked again when it runs: {}", checks.join("; "));
            }
        }
        let width = self.steps.iter().map(|s| s.id.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(
            out,
            "\n  {:<width$}  {:<20}  {:>9}  {:>9}  {:>8}  action",
            "step", "outcome", "start", "duration", "attempts"
        );
        for s in &self.steps {
            let outcome = match s.outcome {
                Some(o) => o.label(),
                None if self.outcome.is_some() => "not run",
                None => "pending",
            };
            let start = s.start_ms.map(|m| format!("+{}", fmt_ms(m))).unwrap_or_else(|| "-".into());
            let dur = if s.start_ms.is_some() { fmt_ms(s.duration_ms) } else { "-".into() };
            let _ = writeln!(
                out,
                "  {:<width$}  {:<20}  {:>9}  {:>9}  {:>8}  {}",
                s.id, outcome, start, dur, s.attempts, s.uses
            );
            let killed = s.attempt_log.iter().any(|a| a.result.starts_with("killed"));
            if killed {
                for a in &s.attempt_log {
                    let end = a.end_ms.map(|e| format!("+{}", fmt_ms(e))).unwrap_or_else(|| "-".into());
                    let _ = writeln!(
                        out,
                        "  {:<width$}    attempt {} +{} → {end}: {}",
                        "",
                        a.attempt,
                        fmt_ms(a.start_ms),
                        a.result
                    );
                }
            } else {
                for r in &s.retries {
                    let _ = writeln!(out, "  {:<width$}    retry: {r}", "");
                }
            }
            if s.gate_wait_ms > 0 {
                let _ =
                    writeln!(out, "  {:<width$}    waited {} for an operator at its gate", "", fmt_ms(s.gate_wait_ms));
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
            "\ncritical path ({} of work): {}",
            fmt_ms(self.critical_path_ms),
            if self.critical_path.is_empty() { "-".into() } else { self.critical_path.join(" -> ") }
        );
        if let Some(o) = &self.outage {
            let _ = writeln!(
                out,
                "outage window: {} (from the start of `{}`, the first change, to {}){}",
                fmt_ms(o.ms),
                o.from_step,
                if o.over { format!("the end of `{}`", o.to_step) } else { "now: not over".into() },
                if self.gaps_ms > 0 {
                    format!(", {} of it between processes", fmt_ms(self.gaps_ms))
                } else {
                    String::new()
                }
            );
        }
        if let Some(t) = self.rto_target_ms {
            let verdict = match self.rto_met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not known yet",
            };
            let _ = writeln!(out, "RTO target {}: {verdict}", fmt_ms(t));
        }
        if self.gate_wait_ms > 0 {
            let _ =
                writeln!(out, "waiting for operators at gates: {} (not counted as work)", fmt_ms(self.gate_wait_ms));
        }
        for a in &self.approvals {
            let _ = writeln!(
                out,
                "gate `{}` {} by {} at {} after {}",
                a.step,
                if a.approved { "approved" } else { "DENIED" },
                a.by,
                a.at,
                fmt_ms(a.waited_ms)
            );
        }
        if let Some(r) = &self.rollback {
            let _ = writeln!(out, "{r}");
        }
        if !self.sites.is_empty() {
            let _ = writeln!(out, "\nwhere each site stands:");
            for site in &self.sites {
                let _ = writeln!(out, "  {}:", site.site);
                for c in &site.changed {
                    let _ = writeln!(out, "    changed   {c}");
                }
                for c in &site.uncertain {
                    let _ = writeln!(out, "    PARTLY?   {c} (failed or stopped mid-way: check it)");
                }
                for c in &site.undone {
                    let _ = writeln!(out, "    undone    {c}");
                }
            }
            let untouched: Vec<&str> = self
                .steps
                .iter()
                .filter(|s| s.changes && s.start_ms.is_none() && !matches!(s.outcome, Some(Outcome::Skipped)))
                .map(|s| s.id.as_str())
                .collect();
            if !untouched.is_empty() {
                let _ = writeln!(out, "  not done yet: {}", untouched.join(", "));
            }
        }
        if let Some(by) = &self.stopped_by {
            let _ = writeln!(out, "stopped by {by}: no step started after it; running steps reached a safe point");
        }
        if let Some(n) = &self.next {
            let _ = writeln!(out, "next: {n}");
        }
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
    let work = |s: &StepReport| s.work_ms();
    let (path, total) = dag.critical_path(|i| if steps[i].start_ms.is_some() { work(&steps[i]) as f64 } else { 0.0 });
    let path: Vec<String> =
        path.into_iter().filter(|&i| steps[i].start_ms.is_some()).map(|i| infos[i].id.clone()).collect();
    (path, total as u64)
}

/// From the start of the first step that changes the world to the end of the last step.
fn outage(steps: &[StepReport], finished: Option<RunOutcome>, now_ms: u64) -> Option<Outage> {
    let first =
        steps.iter().filter(|s| s.changes).filter_map(|s| s.start_ms.map(|t| (t, s))).min_by_key(|(t, _)| *t)?;
    let over = finished == Some(RunOutcome::Succeeded);
    let (end, last) = if over {
        steps.iter().filter_map(|s| s.end_ms.map(|t| (t, s))).max_by_key(|(t, _)| *t)?
    } else {
        (now_ms, first.1)
    };
    Some(Outage {
        from_step: first.1.id.clone(),
        to_step: if over { last.id.clone() } else { "(not over)".into() },
        ms: end.saturating_sub(first.0),
        over,
    })
}

/// Per site: what this run changed there, what may be half-done, what was undone.
fn standing(steps: &[StepReport], undone: &[usize]) -> Vec<SiteStanding> {
    let mut out: Vec<SiteStanding> = vec![];
    for (i, s) in steps.iter().enumerate() {
        if !s.changes {
            continue;
        }
        let line = if s.description.is_empty() {
            format!("{} ({})", s.id, s.uses)
        } else {
            format!("{}: {}", s.id, s.description)
        };
        for site in &s.sites {
            let k = match out.iter().position(|x| &x.site == site) {
                Some(k) => k,
                None => {
                    out.push(SiteStanding { site: site.clone(), changed: vec![], uncertain: vec![], undone: vec![] });
                    out.len() - 1
                }
            };
            let entry = &mut out[k];
            match s.outcome {
                _ if undone.contains(&i) => entry.undone.push(line.clone()),
                Some(Outcome::Succeeded) => entry.changed.push(line.clone()),
                Some(Outcome::Failed | Outcome::FailedContinued | Outcome::Interrupted) | None
                    if s.start_ms.is_some() =>
                {
                    entry.uncertain.push(line.clone())
                }
                _ => {}
            }
        }
    }
    out.retain(|x| !(x.changed.is_empty() && x.uncertain.is_empty() && x.undone.is_empty()));
    out
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
