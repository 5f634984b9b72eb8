//! Typed events of a run. The engine emits them; the journal stores them (they are its
//! records), and the terminal view, `--output json` and the report read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use drover_api::{ActionError, Outputs, Plan, Progress};

/// Whether the run changes the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    Run,
    DryRun,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// Failed, but `continue_on_error` let dependents go on.
    FailedContinued,
    Failed,
    /// Its `if:` was false.
    Skipped,
    /// A dependency failed, so it never started.
    Blocked,
    /// The run halted or stopped before it started.
    NotRun,
    /// It was running when the run was aborted; `resume` runs it again.
    Interrupted,
    /// Dry run: `plan()` found no failed precondition.
    Planned,
    /// Dry run: a precondition failed or `plan()` errored.
    PlanFailed,
}

impl Outcome {
    /// Dependents may proceed.
    pub fn satisfies(self) -> bool {
        matches!(
            self,
            Outcome::Succeeded | Outcome::FailedContinued | Outcome::Skipped | Outcome::Planned | Outcome::PlanFailed
        )
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::PlanFailed)
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::FailedContinued => "failed (continued)",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Blocked => "blocked",
            Outcome::NotRun => "not run",
            Outcome::Interrupted => "interrupted",
            Outcome::Planned => "planned",
            Outcome::PlanFailed => "precondition failed",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    Failed,
    RolledBack,
    Cancelled,
}

impl RunOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::RolledBack => "failed and rolled back",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

/// A step as recorded at the start of a run, so reports need no runbook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepInfo {
    pub id: String,
    pub uses: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Once this step has begun, a failure is no longer rolled back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub point_of_no_return: bool,
    /// Its action changes the world (the outage window starts with the first such step).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changes: bool,
    /// The output its action declares as the RPO (seconds of data a failover would lose).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_output: Option<String>,
    /// One item's instance of a step with `for_each`: which step, which item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanned: Option<Fanned>,
}

/// Where an instance of a fanned step comes from: `break[orders]` is `break` for `orders`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fanned {
    pub step: String,
    pub key: String,
    /// The list of the unit the item is about (`params.apps`): its own, or, for an item that
    /// belongs to another list's item (a volume of an application), that list.
    #[serde(default)]
    pub list: String,
    /// The item of `list` this one belongs to, when it is not itself an item of `list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// Facts about a run's start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunStart {
    pub run_id: String,
    pub runbook: String,
    pub runbook_path: String,
    pub runbook_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites_digest: Option<String>,
    pub params: BTreeMap<String, Value>,
    pub mode: RunMode,
    pub concurrency: usize,
    pub host: String,
    pub pid: u32,
    pub drover_version: String,
    pub steps: Vec<StepInfo>,
    /// `on_failure: rollback`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStarted(Box<RunStart>),
    RunResumed {
        host: String,
        pid: u32,
        forced: bool,
        /// Params the operator changed for the rest of the run (`resume --param`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        params: BTreeMap<String, Value>,
    },
    StepStarted {
        step: String,
        attempt: u32,
        /// The sites this attempt acts on (the action's site parameters, resolved).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sites: Vec<String>,
    },
    StepRetrying {
        step: String,
        attempt: u32,
        error: ActionError,
        delay_ms: u64,
    },
    StepProgress {
        step: String,
        progress: Progress,
    },
    StepNote {
        step: String,
        message: String,
    },
    StepCheckpoint {
        step: String,
        value: Value,
    },
    StepPlanned {
        step: String,
        plan: Plan,
    },
    StepFinished {
        step: String,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
        outputs: Outputs,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ActionError>,
        #[serde(default)]
        attempts: u32,
        #[serde(default)]
        duration_ms: u64,
    },
    GateWaiting {
        step: String,
        message: String,
    },
    GateApproved {
        step: String,
        by: String,
    },
    UndoStarted {
        step: String,
    },
    UndoFinished {
        step: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ActionError>,
    },
    StopRequested {
        abort: bool,
        /// What asked: `SIGINT`, `SIGTERM` or `SIGHUP` (absent in older journals).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },
    RunFinished {
        outcome: RunOutcome,
    },
    /// Before the first change of a real run: every step that will run is planned, read-only.
    PreflightStarted {
        steps: usize,
        timeout_ms: u64,
    },
    /// One step's read-only check during the preflight.
    PreflightChecked {
        step: String,
        /// `planned` or `plan_failed`.
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<Plan>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ActionError>,
        #[serde(default)]
        duration_ms: u64,
        /// State checks that failed but may hold once earlier steps have run: not a failure.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deferred: Vec<String>,
    },
    /// The preflight ended; `failed` lists the steps whose checks failed (nothing was changed).
    PreflightFinished {
        failed: Vec<String>,
        duration_ms: u64,
    },
    /// The operator skipped the preflight (`--skip-preflight`).
    PreflightSkipped {
        by: String,
    },
    /// The run failed after its point of no return had begun: it halts instead of rolling back.
    RollbackRefused {
        past: String,
    },
    /// A gate was refused; the step fails without running.
    GateDenied {
        step: String,
        by: String,
    },
    /// A `notify:` webhook was told about the run — or could not be, and why. A courtesy to
    /// the bridge, journaled so the report can say who was told what; it may come after
    /// `run_finished` (the run's end is told once it has ended).
    Notified {
        webhook: String,
        /// What it was told: `gate_waiting`, `run_succeeded`, `run_failed`,
        /// `run_rolled_back`, `run_stopped`; `none` for a webhook left out of the run.
        about: String,
        /// The gate's or the failed step, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        delivered: bool,
        /// What the webhook answered, or why it was not told (never its URL: it may hold a
        /// token).
        detail: String,
        #[serde(default)]
        attempts: u32,
    },
}

impl Event {
    /// Progress is for eyes only: too chatty to journal, and nothing to resume from.
    pub fn journaled(&self) -> bool {
        !matches!(self, Event::StepProgress { .. })
    }

    pub fn step(&self) -> Option<&str> {
        match self {
            Event::StepStarted { step, .. }
            | Event::StepRetrying { step, .. }
            | Event::StepProgress { step, .. }
            | Event::StepNote { step, .. }
            | Event::StepCheckpoint { step, .. }
            | Event::StepPlanned { step, .. }
            | Event::StepFinished { step, .. }
            | Event::GateWaiting { step, .. }
            | Event::GateApproved { step, .. }
            | Event::GateDenied { step, .. }
            | Event::PreflightChecked { step, .. }
            | Event::UndoStarted { step }
            | Event::UndoFinished { step, .. } => Some(step),
            _ => None,
        }
    }
}

/// An event with its place in the journal and its wall-clock time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339, milliseconds, UTC.
    pub at: String,
    pub event: Event,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// This machine's name, for run records and locks.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes a NUL-terminated name.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
