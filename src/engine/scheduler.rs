//! The scheduler: one owner of the run state, step tasks on tokio.
//!
//! A step becomes *ready* when every dependency is terminal: it runs if they all satisfy it
//! (succeeded, skipped, or failed with `continue_on_error`) and its `if:` holds; otherwise it
//! is blocked, skipped or — once the run halts — not run. `always` steps run whenever their
//! dependencies are terminal, whatever the outcome. Ready steps start in file order up to the
//! global concurrency and their lock's limit.
//!
//! A real run starts with a *preflight*: the same graph walked with every step's read-only
//! `plan()` (conditions evaluated, later steps fed the outputs earlier plans predict), so a
//! wrong credential or an unreachable DR site stops the run before the first change. When a
//! run fails, `on_failure: rollback` undoes what was done — unless a step marked
//! `point_of_no_return` has started: from there on the run halts and the report says where
//! each site stands.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use drover_api::{Action, ActionError, Mode, Outputs, Plan, Progress, StepContext, StepHost};

use super::events::{Event, Outcome, RunMode, RunOutcome, RunStart, StepInfo};
use super::policy::backoff_delay;
use super::{Approver, EventSink, GateAnswer, RunShared, StopSignal};
use crate::journal::lock::hostname;
use crate::journal::state::RunState;
use crate::registry::Registry;
use crate::runbook::expr::Scope;
use crate::runbook::{Call, Loaded, OnFailure, Step};

/// What the journal says was already done, for `resume`.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    pub forced: bool,
    pub done: BTreeMap<String, (Outcome, Outputs)>,
    pub approved: BTreeMap<String, String>,
    pub checkpoints: BTreeMap<String, Value>,
    /// Steps an earlier process started (some attempt began), finished or not.
    pub started: BTreeSet<String>,
    /// Params changed for the rest of the run (`resume --param`), journaled with the resume.
    pub changed_params: BTreeMap<String, Value>,
}

impl Resume {
    pub fn from_state(state: &RunState, forced: bool) -> Resume {
        Resume {
            forced,
            done: state
                .done()
                .map(|(id, s)| (id.to_string(), (s.outcome.expect("done has an outcome"), s.outputs.clone())))
                .collect(),
            approved: state.steps.iter().filter_map(|(id, s)| s.approved_by.clone().map(|b| (id.clone(), b))).collect(),
            checkpoints: state
                .steps
                .iter()
                .filter_map(|(id, s)| s.checkpoint.clone().map(|c| (id.clone(), c)))
                .collect(),
            started: state.steps.iter().filter(|(_, s)| s.attempts > 0).map(|(id, _)| id.clone()).collect(),
            changed_params: BTreeMap::new(),
        }
    }
}

/// Whether a real run first plans every step that will run.
#[derive(Debug, Clone)]
pub enum Preflight {
    /// Plan every step that will run, in graph order, within this time. Any failed check
    /// stops the run before the first change.
    Check { timeout: Duration },
    /// Skipped on purpose (`--skip-preflight`); journaled with who asked.
    Skip { by: String },
}

pub struct ExecuteOptions {
    pub run_id: String,
    pub mode: RunMode,
    pub concurrency: usize,
    pub approver: Arc<dyn Approver>,
    pub sink: EventSink,
    pub stop: StopSignal,
    pub resume: Option<Resume>,
    /// Real runs only; a dry run is all preflight.
    pub preflight: Preflight,
}

/// How the run ended, per step.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub outcome: RunOutcome,
    pub steps: Vec<(String, Outcome)>,
    pub outputs: BTreeMap<String, Outputs>,
    /// A journal failure stopped the run (its state on disk may be behind).
    pub journal_error: Option<String>,
    /// The preflight found these steps' checks failed; nothing ran.
    pub preflight_failed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting,
    Ready,
    Running,
    Done(Outcome),
}

/// What the scheduler is doing with the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Calling `run()`: the world changes.
    Run,
    /// `--dry-run`: every step's `plan()`, recorded as the run's steps.
    DryRun,
    /// Before a real run: every step's `plan()`, recorded as preflight checks.
    Preflight,
}

impl Phase {
    fn plans(self) -> bool {
        self != Phase::Run
    }
}

struct Finished {
    step: usize,
    outcome: Outcome,
    outputs: Outputs,
    error: Option<ActionError>,
    attempts: u32,
    duration: Duration,
    plan: Option<Plan>,
}

/// The run state the scheduler owns: where every step stands and what it produced.
struct Board<'a> {
    loaded: &'a Loaded,
    registry: &'a Registry,
    sink: &'a EventSink,
    run_id: &'a str,
    phase: Phase,
    state: Vec<State>,
    outputs: Vec<Option<Outputs>>,
    /// Dependencies of each step not yet terminal.
    missing: Vec<usize>,
    /// Steps whose dependencies all became terminal, to be decided in file order.
    pending_eval: VecDeque<usize>,
    ready: VecDeque<usize>,
    halting: bool,
    journal_error: Option<String>,
    /// Steps an attempt of which began (this process or an earlier one).
    attempted: Vec<bool>,
    /// Whether each step's action changes the world.
    side_effects: &'a [bool],
    /// Planning: a step that changes the world will have run before this one.
    after_change: Vec<bool>,
}

impl<'a> Board<'a> {
    fn new(
        loaded: &'a Loaded,
        registry: &'a Registry,
        sink: &'a EventSink,
        run_id: &'a str,
        phase: Phase,
        resume: &Resume,
        side_effects: &'a [bool],
    ) -> Self {
        let rb = &loaded.runbook;
        let n = rb.steps.len();
        let mut board = Board {
            loaded,
            registry,
            sink,
            run_id,
            phase,
            state: vec![State::Waiting; n],
            outputs: vec![None; n],
            missing: loaded.dag.parents.iter().map(Vec::len).collect(),
            pending_eval: VecDeque::new(),
            ready: VecDeque::new(),
            halting: false,
            journal_error: None,
            attempted: rb.steps.iter().map(|s| resume.started.contains(&s.id)).collect(),
            side_effects,
            after_change: vec![false; n],
        };
        // Steps a resumed run already finished are terminal from the start.
        for (i, s) in rb.steps.iter().enumerate() {
            if let Some((outcome, outs)) = resume.done.get(&s.id) {
                board.outputs[i] = Some(outs.clone());
                board.state[i] = State::Done(*outcome);
                for &c in &loaded.dag.children[i] {
                    board.missing[c] -= 1;
                }
            }
        }
        board.pending_eval = (0..n).filter(|&i| board.state[i] == State::Waiting && board.missing[i] == 0).collect();
        board
    }

    fn scope(&self) -> RunScope<'_> {
        RunScope {
            loaded: self.loaded,
            registry: Some(self.registry),
            run_id: self.run_id,
            dry: self.phase == Phase::DryRun,
            predict: self.phase.plans(),
            outputs: &self.outputs,
            state: &self.state,
        }
    }

    /// Decide every step whose dependencies are all terminal: ready, skipped, blocked or not run.
    fn decide_pending(&mut self) {
        while let Some(i) = self.pending_eval.pop_front() {
            let step = &self.loaded.runbook.steps[i];
            let parents_ok =
                self.loaded.dag.parents[i].iter().all(|&p| matches!(self.state[p], State::Done(o) if o.satisfies()));
            if self.halting && !step.always {
                self.settle_unrun(i, Outcome::NotRun, None);
            } else if !parents_ok && !step.always {
                self.settle_unrun(i, Outcome::Blocked, None);
            } else if let Some((cond, text)) = &step.condition {
                match cond.eval(&self.scope()) {
                    Ok(v) if crate::runbook::expr::truthy(&v) => self.make_ready(i),
                    Ok(_) => self.settle_unrun(i, Outcome::Skipped, None),
                    // A plan cannot know every output a condition reads: check the step anyway.
                    Err(_) if self.phase.plans() && references_steps(cond) => self.make_ready(i),
                    Err(e) => {
                        let err = ActionError::permanent(format!("condition `{text}` could not be evaluated: {e}"))
                            .with_hint("fix the step's `if:`");
                        let outcome = if self.phase.plans() { Outcome::PlanFailed } else { Outcome::Failed };
                        self.settle_unrun(i, outcome, Some(err));
                    }
                }
            } else {
                self.make_ready(i);
            }
        }
    }

    fn make_ready(&mut self, i: usize) {
        self.state[i] = State::Ready;
        self.ready.push_back(i);
    }

    /// Queued steps will not start once the run halts or stops, except clean-up steps
    /// (and not even those after an abort).
    fn drain_queue(&mut self, abort: bool) {
        let queued: Vec<usize> = self.ready.drain(..).collect();
        for i in queued {
            if self.loaded.runbook.steps[i].always && !abort {
                self.ready.push_back(i);
            } else {
                self.settle_unrun(i, Outcome::NotRun, None);
            }
        }
    }

    /// A step that ends without having run.
    fn settle_unrun(&mut self, i: usize, outcome: Outcome, error: Option<ActionError>) {
        self.settle(Finished {
            step: i,
            outcome,
            outputs: Outputs::new(),
            error,
            attempts: 0,
            duration: Duration::ZERO,
            plan: None,
        });
    }

    /// Record a terminal outcome and release dependents that became decidable.
    fn settle(&mut self, fin: Finished) {
        let i = fin.step;
        let step = &self.loaded.runbook.steps[i];
        if fin.attempts > 0 && self.phase == Phase::Run {
            self.attempted[i] = true;
        }
        // A plan looks at the world as it is now; a state check failing behind a step that will
        // change the world may well hold by the time this step runs. It is reported, and checked
        // for real when the step runs; only access checks (endpoint, credentials) stop a plan.
        self.after_change[i] = self.loaded.dag.parents[i].iter().any(|&p| {
            self.after_change[p]
                || (self.side_effects[p]
                    && matches!(self.state[p], State::Done(Outcome::Planned | Outcome::PlanFailed)))
        });
        let mut fin = fin;
        let mut deferred = vec![];
        if self.phase.plans()
            && fin.outcome == Outcome::PlanFailed
            && self.after_change[i]
            && let Some(plan) = &fin.plan
            && plan.failed_checks().next().is_some()
            && plan.failed_checks().all(|c| !c.access)
        {
            deferred = plan.failed_checks().map(|c| format!("{}: {}", c.name, c.detail)).collect();
            fin.outcome = Outcome::Planned;
            fin.error = None;
            if self.phase == Phase::DryRun {
                let note = format!(
                    "checked again when it runs (earlier steps change what it checks): {}",
                    deferred.join("; ")
                );
                let _ = self.sink.emit(Event::StepNote { step: step.id.clone(), message: note });
            }
        }
        let outcome = match fin.outcome {
            Outcome::Failed if step.continue_on_error => Outcome::FailedContinued,
            Outcome::Failed if self.phase == Phase::Run => {
                self.halting = true;
                Outcome::Failed
            }
            other => other,
        };
        self.state[i] = State::Done(outcome);
        if matches!(outcome, Outcome::Succeeded | Outcome::Planned | Outcome::PlanFailed) {
            self.outputs[i] = Some(fin.outputs.clone());
        }
        let duration_ms = fin.duration.as_millis() as u64;
        let ev = match self.phase {
            Phase::Preflight => Event::PreflightChecked {
                step: step.id.clone(),
                outcome,
                plan: fin.plan,
                error: fin.error,
                duration_ms,
                deferred,
            },
            Phase::Run | Phase::DryRun => Event::StepFinished {
                step: step.id.clone(),
                outcome,
                outputs: fin.outputs,
                error: fin.error,
                attempts: fin.attempts,
                duration_ms,
            },
        };
        if let Err(e) = self.sink.emit(ev) {
            self.journal_error.get_or_insert(e.to_string());
            self.halting = true;
        }
        for &c in &self.loaded.dag.children[i] {
            self.missing[c] -= 1;
            if self.missing[c] == 0 && self.state[c] == State::Waiting {
                self.pending_eval.push_back(c);
            }
        }
    }

    /// Whether a step marked `point_of_no_return` has begun: from then on nothing is rolled back.
    fn past_no_return(&self) -> Option<&'a str> {
        let steps = &self.loaded.runbook.steps;
        (0..steps.len())
            .find(|&i| steps[i].point_of_no_return && (self.attempted[i] || self.state[i] == State::Running))
            .map(|i| steps[i].id.as_str())
    }
}

/// Whether a condition reads a step's outputs or outcome (which a plan may not know).
fn references_steps(cond: &crate::runbook::expr::Expr) -> bool {
    let mut found = false;
    cond.refs(&mut |r| found |= r.first().is_some_and(|f| f == "steps"));
    found
}

fn run_started(loaded: &Loaded, opts: &ExecuteOptions, side_effects: &[bool]) -> Event {
    let rb = &loaded.runbook;
    match &opts.resume {
        None => Event::RunStarted(Box::new(RunStart {
            run_id: opts.run_id.clone(),
            runbook: rb.name.clone(),
            runbook_path: rb.path.display().to_string(),
            runbook_digest: rb.digest.clone(),
            sites_file: loaded.sites_file.as_ref().map(|p| p.display().to_string()),
            sites_digest: loaded.sites_digest.clone(),
            params: loaded.params.clone(),
            mode: opts.mode,
            concurrency: opts.concurrency,
            host: hostname(),
            pid: std::process::id(),
            drover_version: env!("CARGO_PKG_VERSION").to_string(),
            steps: rb
                .steps
                .iter()
                .zip(side_effects)
                .map(|(s, &changes)| StepInfo {
                    id: s.id.clone(),
                    changes,
                    uses: s.call.uses.clone(),
                    needs: s.needs.clone(),
                    description: s.description.clone(),
                    point_of_no_return: s.point_of_no_return,
                })
                .collect(),
            rollback: rb.on_failure == OnFailure::Rollback,
        })),
        Some(r) => Event::RunResumed {
            host: hostname(),
            pid: std::process::id(),
            forced: r.forced,
            params: r.changed_params.clone(),
        },
    }
}

/// What every step task of a run shares.
struct Drive<'a> {
    loaded: &'a Loaded,
    registry: &'a Registry,
    concurrency: usize,
    sites: Arc<BTreeMap<String, Value>>,
    shared: Arc<RunShared>,
    resume: &'a Resume,
    /// Steps stop at a safe point once this is cancelled.
    graceful: CancellationToken,
    /// For the preflight: every plan ends by then.
    deadline: Option<Instant>,
}

/// Run the board to the end (or until stopped); returns the stop level reached.
async fn drive(board: &mut Board<'_>, d: &Drive<'_>, stop: &mut StopSignal, mut stop_level: u8) -> u8 {
    let rb = &d.loaded.runbook;
    let mut lock_use: HashMap<&str, usize> = HashMap::new();
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    let mut task_step: HashMap<Id, usize> = HashMap::new();
    loop {
        board.decide_pending();
        if board.halting || stop_level > 0 {
            board.drain_queue(stop_level >= 2);
            if !board.pending_eval.is_empty() {
                continue;
            }
        }

        // Start what may start: file order, global limit, lock limits (plans take no locks).
        let mut k = 0;
        while task_step.len() < d.concurrency && k < board.ready.len() {
            let i = board.ready[k];
            let step = &rb.steps[i];
            let lock = match board.phase {
                Phase::Run => step.lock.as_deref().map(|l| (l, rb.locks.get(l).copied().unwrap_or(1))),
                _ => None,
            };
            if let Some((name, limit)) = lock
                && lock_use.get(name).copied().unwrap_or(0) >= limit
            {
                k += 1;
                continue;
            }
            board.ready.remove(k);
            let (action, with, confirm) = match prepare(step, d.registry, &board.scope()) {
                Ok(p) => p,
                Err(error) => {
                    let outcome = if board.phase.plans() { Outcome::PlanFailed } else { Outcome::Failed };
                    board.settle_unrun(i, outcome, Some(error));
                    continue;
                }
            };
            if let Some((name, _)) = lock {
                *lock_use.entry(name).or_default() += 1;
            }
            board.state[i] = State::Running;
            let job = StepJob {
                index: i,
                id: step.id.clone(),
                action,
                with,
                confirm: if d.resume.approved.contains_key(&step.id) { None } else { confirm },
                timeout: step.timeout,
                retry: step.retry.clone(),
                phase: board.phase,
                sites: d.sites.clone(),
                checkpoint: d.resume.checkpoints.get(&step.id).cloned(),
                shared: d.shared.clone(),
                stop: d.graceful.clone(),
                deadline: d.deadline,
            };
            let handle = tasks.spawn(job.run());
            task_step.insert(handle.id(), i);
        }
        if !board.pending_eval.is_empty() {
            continue;
        }
        if task_step.is_empty() {
            return stop_level;
        }

        tokio::select! {
            joined = tasks.join_next_with_id() => {
                let Some(joined) = joined else { continue };
                let fin = match joined {
                    Ok((id, fin)) => {
                        task_step.remove(&id);
                        fin
                    }
                    Err(e) => {
                        let i = task_step.remove(&e.id()).expect("every task is registered");
                        lost_task(i, e, &rb.steps[i].call.uses)
                    }
                };
                if board.phase == Phase::Run
                    && let Some(l) = rb.steps[fin.step].lock.as_deref()
                    && let Some(c) = lock_use.get_mut(l)
                {
                    *c -= 1;
                }
                board.settle(fin);
            }
            level = stop.changed() => {
                if level > stop_level {
                    stop_level = level;
                    let signal = Some(stop.by()).filter(|b| !b.is_empty()).map(str::to_string);
                    let _ = board.sink.emit(Event::StopRequested { abort: level >= 2, signal });
                    d.graceful.cancel();
                    if level >= 2 {
                        tasks.abort_all();
                    }
                }
            }
        }
    }
}

/// Run the graph to the end (or until stopped) and return what happened.
pub async fn execute(loaded: &Loaded, registry: &Registry, opts: ExecuteOptions) -> RunSummary {
    let rb = &loaded.runbook;
    let sites: Arc<BTreeMap<String, Value>> =
        Arc::new(loaded.sites.iter().map(|(k, v)| (k.clone(), v.settings.clone())).collect());
    let base_dir = match rb.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
        _ => std::env::current_dir().unwrap_or_default(),
    };
    let shared = Arc::new(RunShared {
        run_id: opts.run_id.clone(),
        sink: opts.sink.clone(),
        approver: opts.approver.clone(),
        base_dir,
    });
    let empty = |outcome, journal_error, preflight_failed| RunSummary {
        outcome,
        steps: vec![],
        outputs: BTreeMap::new(),
        journal_error,
        preflight_failed,
    };
    let side_effects: Vec<bool> =
        rb.steps.iter().map(|s| registry.get(&s.call.uses).map(|a| a.info().side_effects).unwrap_or(true)).collect();
    if let Err(e) = opts.sink.emit_durable(run_started(loaded, &opts, &side_effects)).await {
        return empty(RunOutcome::Failed, Some(e.to_string()), vec![]);
    }
    let resume = opts.resume.clone().unwrap_or_default();
    let mut stop = opts.stop.clone();
    let graceful = CancellationToken::new();
    let mut stop_level = opts.stop.level();
    if stop_level > 0 {
        graceful.cancel();
    }
    let mut d = Drive {
        loaded,
        registry,
        concurrency: opts.concurrency,
        sites: sites.clone(),
        shared: shared.clone(),
        resume: &resume,
        graceful: graceful.clone(),
        deadline: None,
    };

    // Nothing changes until every step that will run has been checked.
    if opts.mode == RunMode::Run {
        match &opts.preflight {
            Preflight::Skip { by } => {
                let _ = opts.sink.emit(Event::PreflightSkipped { by: by.clone() });
            }
            Preflight::Check { timeout } => {
                let started = Instant::now();
                let remaining = rb.steps.len() - resume.done.len();
                let _ = opts
                    .sink
                    .emit(Event::PreflightStarted { steps: remaining, timeout_ms: timeout.as_millis() as u64 });
                let mut board =
                    Board::new(loaded, registry, &opts.sink, &opts.run_id, Phase::Preflight, &resume, &side_effects);
                d.deadline = Some(started + *timeout);
                stop_level = drive(&mut board, &d, &mut stop, stop_level).await;
                d.deadline = None;
                let failed: Vec<String> = rb
                    .steps
                    .iter()
                    .zip(&board.state)
                    // A step whose failure would not stop the run does not stop it here either.
                    .filter(|(s, st)| **st == State::Done(Outcome::PlanFailed) && !s.continue_on_error)
                    .map(|(s, _)| s.id.clone())
                    .collect();
                let ev = Event::PreflightFinished {
                    failed: failed.clone(),
                    duration_ms: started.elapsed().as_millis() as u64,
                };
                let journal_error = opts.sink.emit(ev).err().map(|e| e.to_string()).or(board.journal_error.take());
                if !failed.is_empty() || stop_level > 0 || journal_error.is_some() {
                    let outcome =
                        if stop_level > 0 && failed.is_empty() { RunOutcome::Cancelled } else { RunOutcome::Failed };
                    let journal_error = match opts.sink.emit_durable(Event::RunFinished { outcome }).await {
                        Err(e) => journal_error.or(Some(e.to_string())),
                        Ok(()) => journal_error,
                    };
                    return empty(outcome, journal_error, failed);
                }
            }
        }
    }

    let phase = if opts.mode == RunMode::DryRun { Phase::DryRun } else { Phase::Run };
    let mut board = Board::new(loaded, registry, &opts.sink, &opts.run_id, phase, &resume, &side_effects);
    stop_level = drive(&mut board, &d, &mut stop, stop_level).await;

    let failed = board.state.iter().any(|s| matches!(s, State::Done(o) if o.is_failure()));
    let mut outcome = if stop_level > 0 {
        RunOutcome::Cancelled
    } else if failed || board.journal_error.is_some() {
        RunOutcome::Failed
    } else {
        RunOutcome::Succeeded
    };
    if outcome == RunOutcome::Failed && rb.on_failure == OnFailure::Rollback && phase == Phase::Run {
        match board.past_no_return() {
            Some(step) => {
                let _ = opts.sink.emit(Event::RollbackRefused { past: step.to_string() });
            }
            None if board.journal_error.is_none()
                && rollback(loaded, registry, &board.state, &board.attempted, &board.outputs, &shared, &sites)
                    .await =>
            {
                outcome = RunOutcome::RolledBack;
            }
            None => {}
        }
    }
    let mut journal_error = board.journal_error.take();
    if let Err(e) = opts.sink.emit_durable(Event::RunFinished { outcome }).await {
        journal_error.get_or_insert(e.to_string());
    }
    let steps = rb
        .steps
        .iter()
        .zip(&board.state)
        .map(|(s, st)| (s.id.clone(), if let State::Done(o) = st { *o } else { Outcome::NotRun }))
        .collect();
    let outputs = rb.steps.iter().zip(board.outputs).filter_map(|(s, o)| o.map(|o| (s.id.clone(), o))).collect();
    RunSummary { outcome, steps, outputs, journal_error, preflight_failed: vec![] }
}

/// A step task that ended without reporting: it panicked or was aborted.
fn lost_task(i: usize, e: tokio::task::JoinError, uses: &str) -> Finished {
    let (outcome, error) = if e.is_panic() {
        let msg = panic_message(e.into_panic());
        let err = ActionError::permanent(format!("action `{uses}` panicked: {msg}"))
            .with_hint("this is a bug in the action; the world may be partly changed, check it before resuming");
        (Outcome::Failed, err)
    } else {
        let err = ActionError::permanent("aborted by the operator while running")
            .with_hint("`drover resume` runs it again (actions are idempotent)");
        (Outcome::Interrupted, err)
    };
    Finished {
        step: i,
        outcome,
        outputs: Outputs::new(),
        error: Some(error),
        attempts: 0,
        duration: Duration::ZERO,
        plan: None,
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Resolve the action and interpolate `with:` and the gate message.
/// A step ready to start: its action, interpolated parameters and gate message.
type Prepared = (Arc<dyn Action>, Value, Option<String>);

fn prepare(step: &Step, registry: &Registry, scope: &RunScope) -> Result<Prepared, ActionError> {
    let action = registry.get(&step.call.uses).map_err(|e| ActionError::permanent(e.message).with_hint(e.hint))?;
    let with = interpolate(&step.call, scope, &action.info().params)?;
    let confirm = match (&step.confirm, &step.confirm_text) {
        (Some(t), _) => Some(crate::runbook::expr::display(
            &t.render(scope).map_err(|e| ActionError::permanent(format!("confirm message: {e}")))?,
        )),
        (None, Some(text)) => Some(text.clone()),
        (None, None) => None,
    };
    Ok((action, with, confirm))
}

/// Replace every `${{ }}` slot of a call with its value. A number or `true`/`false` going
/// where the action takes only text becomes text (`message: "${{ steps.d.outputs.status }}"`).
fn interpolate(call: &Call, scope: &dyn Scope, schema: &Value) -> Result<Value, ActionError> {
    let mut with = call.with.clone();
    // Values first (their paths hold the keys as written), then keys, deepest first.
    let mut keys: Vec<&crate::runbook::model::Slot> = call.slots.iter().filter(|s| s.key).collect();
    keys.sort_by_key(|s| std::cmp::Reverse(s.path.len()));
    for slot in call.slots.iter().filter(|s| !s.key).chain(keys) {
        let value = slot.template.render(scope).map_err(|e| {
            ActionError::permanent(format!(
                "cannot interpolate `with{}`: {e}",
                slot.path.iter().map(|p| p.to_string()).collect::<String>()
            ))
            .with_hint("check the referenced step's outputs in the report")
        })?;
        let value = if slot.key { value } else { drover_api::schema::as_param(schema, &slot.path, value) };
        let (walk, last) =
            if slot.key { (&slot.path[..slot.path.len() - 1], slot.path.last()) } else { (&slot.path[..], None) };
        let mut target = &mut with;
        for seg in walk {
            target = match seg {
                drover_api::PathSegment::Key(k) => target.get_mut(k.as_str()),
                drover_api::PathSegment::Index(i) => target.get_mut(*i),
            }
            .expect("slot paths come from this value");
        }
        match (last, target.as_object_mut()) {
            (Some(drover_api::PathSegment::Key(old)), Some(map)) => {
                if let Some(v) = map.shift_remove(old.as_str()) {
                    map.insert(crate::runbook::expr::display(&value), v);
                }
            }
            _ => *target = value,
        }
    }
    Ok(with)
}

/// Values `${{ }}` can see while the run is in progress.
struct RunScope<'a> {
    loaded: &'a Loaded,
    /// To type the stand-in for an output no plan predicted.
    registry: Option<&'a Registry>,
    run_id: &'a str,
    /// `run.dry_run`.
    dry: bool,
    /// Planning: an output no plan predicted reads as a placeholder.
    predict: bool,
    outputs: &'a [Option<Outputs>],
    state: &'a [State],
}

impl Scope for RunScope<'_> {
    fn lookup(&self, path: &[String]) -> Result<Value, String> {
        let dig = |mut v: &Value, rest: &[String], what: &str| -> Result<Value, String> {
            for key in rest {
                v = match v {
                    Value::Object(m) => m.get(key),
                    Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                }
                .ok_or_else(|| format!("`{what}` has no `{key}`"))?;
            }
            Ok(v.clone())
        };
        match path.first().map(String::as_str) {
            Some("params") => {
                let name = path.get(1).ok_or("missing param name")?;
                let v = self.loaded.params.get(name).ok_or_else(|| format!("param `{name}` has no value"))?;
                dig(v, &path[2..], &path[..2].join("."))
            }
            Some("sites") => {
                let name = path.get(1).ok_or("missing site name")?;
                let site = self.loaded.sites.get(name).ok_or_else(|| format!("site `{name}` is not defined"))?;
                dig(&site.settings, &path[2..], &path[..2].join("."))
            }
            Some("run") => match path.get(1).map(String::as_str) {
                Some("id") => Ok(Value::String(self.run_id.to_string())),
                Some("dry_run") => Ok(Value::Bool(self.dry)),
                Some("runbook") => Ok(Value::String(self.loaded.runbook.name.clone())),
                _ => Err(format!("unknown `{}`", path.join("."))),
            },
            Some("steps") => {
                let id = path.get(1).ok_or("missing step id")?;
                let i = self
                    .loaded
                    .runbook
                    .steps
                    .iter()
                    .position(|s| &s.id == id)
                    .ok_or_else(|| format!("no step `{id}`"))?;
                match path.get(2).map(String::as_str) {
                    Some("outcome") => Ok(match self.state[i] {
                        State::Done(o) => Value::String(o.label().into()),
                        _ => Value::Null,
                    }),
                    Some("outputs") => {
                        let key = path.get(3).ok_or("missing output name")?;
                        match self.outputs[i].as_ref().and_then(|o| o.get(key)) {
                            Some(v) => dig(v, &path[4..], &path.join(".")),
                            // A dry run cannot know every output; show what will be used.
                            None if self.predict => {
                                // Typed like the output it stands for: an empty list where a
                                // list will be, so a plan checks what it can.
                                let ty = self
                                    .registry
                                    .and_then(|r| r.get(&self.loaded.runbook.steps[i].call.uses).ok())
                                    .and_then(|a| a.info().outputs.iter().find(|o| &o.name == key).map(|o| o.ty));
                                Ok(match ty {
                                    Some(drover_api::ValueType::List) => Value::Array(vec![]),
                                    Some(drover_api::ValueType::Map) => Value::Object(Default::default()),
                                    Some(drover_api::ValueType::Int | drover_api::ValueType::Number) => Value::from(0),
                                    Some(drover_api::ValueType::Bool) => Value::Bool(false),
                                    _ => Value::String(format!("<{}>", path.join("."))),
                                })
                            }
                            None => Err(format!("step `{id}` produced no output `{key}`")),
                        }
                    }
                    _ => Err(format!("unknown `{}`", path.join("."))),
                }
            }
            _ => Err(format!("unknown `{}`", path.join("."))),
        }
    }
}

/// Everything one step task needs, owned.
struct StepJob {
    index: usize,
    id: String,
    action: Arc<dyn Action>,
    with: Value,
    confirm: Option<String>,
    timeout: Duration,
    retry: crate::runbook::RetryPolicy,
    phase: Phase,
    sites: Arc<BTreeMap<String, Value>>,
    checkpoint: Option<Value>,
    shared: Arc<RunShared>,
    stop: CancellationToken,
    /// The preflight's end: a plan stops by then whatever its step's timeout.
    deadline: Option<Instant>,
}

impl StepJob {
    async fn run(self) -> Finished {
        let started = Instant::now();
        let sink = &self.shared.sink;
        let fin = |outcome, outputs, error, attempts| Finished {
            step: self.index,
            outcome,
            outputs,
            error,
            attempts,
            duration: started.elapsed(),
            plan: None,
        };
        let host: Arc<dyn StepHost> = Arc::new(Host { shared: self.shared.clone() });

        if self.phase.plans() {
            let recorded = self.phase == Phase::DryRun;
            if recorded {
                let _ = sink.emit(Event::StepStarted { step: self.id.clone(), attempt: 1, sites: vec![] });
            }
            let mut deadline = Instant::now() + self.timeout;
            if let Some(end) = self.deadline {
                deadline = deadline.min(end);
            }
            let ctx = self.context(1, Mode::Plan, deadline, host);
            let result = tokio::time::timeout_at(deadline, self.action.plan(&ctx, &self.with)).await;
            return match result {
                Ok(Ok(mut plan)) => {
                    if let Some(msg) = &self.confirm {
                        plan.changes.insert(0, format!("asks the operator first: {msg}"));
                    }
                    let outcome =
                        if plan.failed_checks().next().is_some() { Outcome::PlanFailed } else { Outcome::Planned };
                    let error = plan
                        .failed_checks()
                        .next()
                        .map(|c| ActionError::permanent(format!("precondition failed: {}: {}", c.name, c.detail)));
                    let outputs = plan.outputs.clone();
                    if recorded {
                        let _ = sink.emit(Event::StepPlanned { step: self.id.clone(), plan: plan.clone() });
                    }
                    Finished { plan: Some(plan), ..fin(outcome, outputs, error, 1) }
                }
                Ok(Err(e)) => fin(Outcome::PlanFailed, Outputs::new(), Some(e), 1),
                Err(_) if self.deadline.is_some_and(|end| Instant::now() >= end) => {
                    let e = ActionError::permanent("the preflight ran out of time before this check finished")
                        .with_hint("a system did not answer in time; check it, or raise --preflight-timeout");
                    fin(Outcome::PlanFailed, Outputs::new(), Some(e), 1)
                }
                Err(_) => fin(Outcome::PlanFailed, Outputs::new(), Some(timeout_error(self.timeout)), 1),
            };
        }

        if let Some(message) = &self.confirm {
            match self.shared_gate(message).await {
                Ok(()) => {}
                Err(e) => return fin(Outcome::Failed, Outputs::new(), Some(e), 0),
            }
        }
        // The wait at the gate is the operator's time, not the step's work.
        let started = Instant::now();
        let fin = |outcome, outputs, error, attempts| Finished {
            step: self.index,
            outcome,
            outputs,
            error,
            attempts,
            duration: started.elapsed(),
            plan: None,
        };
        // The time budget covers every attempt and every backoff, not gate waits.
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sites = self.action.info().sites_in(&self.with);
            let announce = sink.emit(Event::StepStarted { step: self.id.clone(), attempt, sites });
            // A step that changes the world starts only once its start is on disk.
            let durable = match (announce, sink.journal()) {
                (Ok(seq), Some(j)) if self.action.info().side_effects => {
                    j.durable(seq).await.map_err(|e| e.to_string())
                }
                (Ok(_), _) => Ok(()),
                (Err(e), _) => Err(e.to_string()),
            };
            if let Err(e) = durable {
                let err = ActionError::permanent(format!("journal write failed: {e}"))
                    .with_hint("check free space and permissions of the state directory; the step did not start");
                return fin(Outcome::Failed, Outputs::new(), Some(err), attempt);
            }
            let ctx = self.context(attempt, Mode::Run, deadline, host.clone());
            let result = tokio::time::timeout_at(deadline, self.action.run(&ctx, &self.with)).await;
            let error = match result {
                Ok(Ok(outputs)) => return fin(Outcome::Succeeded, outputs, None, attempt),
                Ok(Err(e)) => e,
                Err(_) => {
                    return fin(Outcome::Failed, Outputs::new(), Some(timeout_error(self.timeout)), attempt);
                }
            };
            if !error.is_retryable() || attempt >= self.retry.attempts {
                let error = if error.is_retryable() && self.retry.attempts > 1 {
                    let mut e = error;
                    e.message = format!("{} (gave up after {attempt} attempts)", e.message);
                    e
                } else {
                    error
                };
                return fin(Outcome::Failed, Outputs::new(), Some(error), attempt);
            }
            if self.stop.is_cancelled() {
                let e =
                    error.clone().with_hint("the run was stopped before another attempt; `drover resume` tries again");
                return fin(Outcome::Failed, Outputs::new(), Some(e), attempt);
            }
            let delay = backoff_delay(&self.retry, attempt, error.retry_after);
            if Instant::now() + delay >= deadline {
                let mut e = error;
                e.message = format!(
                    "{} (no time left for attempt {} within the {} timeout)",
                    e.message,
                    attempt + 1,
                    humantime::format_duration(self.timeout)
                );
                return fin(Outcome::Failed, Outputs::new(), Some(e), attempt);
            }
            let _ = sink.emit(Event::StepRetrying {
                step: self.id.clone(),
                attempt,
                error,
                delay_ms: delay.as_millis() as u64,
            });
            tokio::time::sleep(delay).await;
        }
    }

    async fn shared_gate(&self, message: &str) -> Result<(), ActionError> {
        Host { shared: self.shared.clone() }.approve(&self.id, message).await.map(|_| ())
    }

    fn context(&self, attempt: u32, mode: Mode, deadline: Instant, host: Arc<dyn StepHost>) -> StepContext {
        StepContext::new(
            self.shared.run_id.clone(),
            self.id.clone(),
            attempt,
            mode,
            Some(deadline),
            self.sites.clone(),
            self.stop.clone(),
            host,
            self.checkpoint.clone(),
        )
        .with_base_dir(self.shared.base_dir.clone())
    }
}

fn timeout_error(timeout: Duration) -> ActionError {
    ActionError::permanent(format!("timed out after {}", humantime::format_duration(timeout)))
        .with_hint("the target did not finish in time; check it, then raise the step's `timeout:` or `drover resume`")
}

/// The engine side of [`StepContext`].
struct Host {
    shared: Arc<RunShared>,
}

#[async_trait]
impl StepHost for Host {
    fn progress(&self, step: &str, progress: Progress) {
        let _ = self.shared.sink.emit(Event::StepProgress { step: step.to_string(), progress });
    }

    fn note(&self, step: &str, message: &str) {
        let _ = self.shared.sink.emit(Event::StepNote { step: step.to_string(), message: message.to_string() });
    }

    async fn checkpoint(&self, step: &str, value: Value) {
        if let Err(e) = self.shared.sink.emit_durable(Event::StepCheckpoint { step: step.to_string(), value }).await {
            tracing::error!(step, error = %e, "checkpoint could not be journaled; a resume will redo this step's work");
        }
    }

    async fn approve(&self, step: &str, message: &str) -> Result<String, ActionError> {
        let sink = &self.shared.sink;
        let journal = |e: crate::journal::JournalError| ActionError::permanent(format!("journal write failed: {e}"));
        self.shared.approver.discard_stale(step);
        sink.emit_durable(Event::GateWaiting { step: step.to_string(), message: message.to_string() })
            .await
            .map_err(journal)?;
        match self.shared.approver.approve(&self.shared.run_id, step, message).await? {
            GateAnswer::Approved(by) => {
                sink.emit_durable(Event::GateApproved { step: step.to_string(), by: by.clone() })
                    .await
                    .map_err(journal)?;
                Ok(by)
            }
            GateAnswer::Denied(by) => {
                sink.emit_durable(Event::GateDenied { step: step.to_string(), by: by.clone() })
                    .await
                    .map_err(journal)?;
                Err(ActionError::permanent(format!("gate `{step}` was denied by {by}"))
                    .with_hint("the run stops here; `drover resume` asks again"))
            }
        }
    }
}

/// Undo what the run did, dependents before their dependencies: completed steps, and failed
/// ones that had begun (their change may be partial; undos are idempotent by contract).
/// True if every undo worked.
async fn rollback(
    loaded: &Loaded,
    registry: &Registry,
    state: &[State],
    attempted: &[bool],
    outputs: &[Option<Outputs>],
    shared: &Arc<RunShared>,
    sites: &Arc<BTreeMap<String, Value>>,
) -> bool {
    let rb = &loaded.runbook;
    let mut all_ok = true;
    let scope = RunScope { loaded, registry: None, run_id: &shared.run_id, dry: false, predict: false, outputs, state };
    for &i in loaded.dag.order.iter().rev() {
        let partly = attempted[i] && matches!(state[i], State::Done(Outcome::Failed | Outcome::Interrupted));
        if state[i] != State::Done(Outcome::Succeeded) && !partly {
            continue;
        }
        let step = &rb.steps[i];
        let prepared = match &step.undo {
            Some(call) => registry
                .get(&call.uses)
                .map_err(|e| ActionError::permanent(e.message).with_hint(e.hint))
                .and_then(|a| {
                    let with = interpolate(call, &scope, &a.info().params)?;
                    Ok((a, with))
                }),
            None => match registry.get(&step.call.uses) {
                Ok(a) if a.info().undo => interpolate(&step.call, &scope, &a.info().params).map(|w| (a, w)),
                _ => continue,
            },
        };
        let _ = shared.sink.emit_durable(Event::UndoStarted { step: step.id.clone() }).await;
        let host: Arc<dyn StepHost> = Arc::new(Host { shared: shared.clone() });
        let ctx = StepContext::new(
            shared.run_id.clone(),
            step.id.clone(),
            1,
            Mode::Undo,
            Some(Instant::now() + step.timeout),
            sites.clone(),
            CancellationToken::new(),
            host,
            None,
        )
        .with_base_dir(shared.base_dir.clone());
        let outs = outputs[i].clone().unwrap_or_default();
        let result = match prepared {
            Err(e) => Err(e),
            Ok((action, with)) => {
                let call = async {
                    if step.undo.is_some() {
                        action.run(&ctx, &with).await.map(|_| ())
                    } else {
                        action.undo(&ctx, &with, &outs).await
                    }
                };
                match tokio::time::timeout(step.timeout, call).await {
                    Ok(r) => r,
                    Err(_) => Err(timeout_error(step.timeout)),
                }
            }
        };
        if result.is_err() {
            all_ok = false;
        }
        let _ = shared.sink.emit_durable(Event::UndoFinished { step: step.id.clone(), error: result.err() }).await;
    }
    all_ok
}
