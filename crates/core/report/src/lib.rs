//! The report of a run, built from its journal alone: per step start, end, duration,
//! attempts, outcome, outputs, error and hint; the critical path (the run's measured recovery
//! time); rendered as text, JSON, or one self-contained HTML page with an SVG timeline.

mod build;
mod fleet;
mod graph;
mod html;
mod text;

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use drover_api::{ActionError, Plan};

use drover_journal::state::RunState;
use drover_model::events::{Event, Outcome, RunMode, RunOutcome};
use drover_model::graph::Dag;

pub use fleet::{FleetReport, ItemReport};
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
    /// What each `notify:` webhook was told, and what was not delivered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notification>,
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
    /// A live process is working on the run (it has not finished).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub running: bool,
    /// The data lost when replication was broken: the worst lag a step declared as its RPO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo: Option<Rpo>,
    /// Runs of a fleet (steps with `for_each`): each item's outcome, RTO, RPO and tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetReport>,
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

/// The recovery point: seconds of writes the replica lacked when the step read it.
#[derive(Debug, Clone, Serialize)]
pub struct Rpo {
    pub step: String,
    pub seconds: f64,
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

/// One message to a `notify:` webhook: told, or not and why.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub webhook: String,
    /// `gate_waiting`, `run_succeeded`, `run_failed`, …; `none` for a webhook left out.
    pub about: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// When its fate was known (empty in a live line).
    pub at: String,
    pub delivered: bool,
    pub detail: String,
    pub attempts: u32,
}

impl Notification {
    /// From a `notified` event.
    pub fn from_event(event: &Event, at: &str) -> Option<Notification> {
        let Event::Notified { webhook, about, step, delivered, detail, attempts } = event else { return None };
        Some(Notification {
            webhook: webhook.clone(),
            about: about.clone(),
            step: step.clone(),
            at: at.to_string(),
            delivered: *delivered,
            detail: detail.clone(),
            attempts: *attempts,
        })
    }

    /// One line: `webhook `bridge` told of gate_waiting (confirm): it answered 200 OK`.
    pub fn sentence(&self) -> String {
        let what = match (&self.about[..], &self.step) {
            ("none", _) => String::new(),
            (about, Some(step)) => format!(" of {about} (`{step}`)"),
            (about, None) => format!(" of {about}"),
        };
        let told = if self.delivered { "told" } else { "NOT told" };
        let tries = if self.attempts > 1 { format!(" ({} attempts)", self.attempts) } else { String::new() };
        format!("webhook `{}` {told}{what}{tries}: {}", self.webhook, self.detail)
    }
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
/// the same runbook, and the data that would be lost now (the output each step's action declares as its RPO).
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
    /// The steps (instances, for fanned steps) it waited for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// For one item's instance of a step with `for_each`: that step's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanned_from: Option<String>,
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
    /// steps (the outputs their actions declare as the RPO).
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
        // Each step's action declares which of its outputs is the RPO.
        let rpo_seconds = self
            .steps
            .iter()
            .zip(infos)
            .filter_map(|(s, info)| {
                let output = info.rpo_output.as_deref()?;
                s.outputs.get(output).and_then(Value::as_f64).map(|v| (s.id.clone(), v))
            })
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
            None if self.running => "running",
            None => "interrupted (not finished; `drover resume` continues it)",
        }
    }
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
