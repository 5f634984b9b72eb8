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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use drover_api::{ActionError, Mode, Outputs, StepContext, StepHost};

use super::events::{Event, Outcome, RunMode, RunOutcome, RunStart, StepInfo};
use super::{Approver, EventSink, RunShared, StopSignal};
use drover_model::Resume;
use drover_model::events::hostname;
use drover_runbook::{Loaded, OnFailure};

use super::board::*;
use super::step::*;

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
                .zip(&loaded.actions.call)
                .map(|((s, &changes), action)| StepInfo {
                    id: s.id.clone(),
                    changes,
                    rpo_output: action.info().rpo_output.clone(),
                    uses: s.call.uses.clone(),
                    needs: s.needs.clone(),
                    description: s.description.clone(),
                    point_of_no_return: s.point_of_no_return,
                    fanned: s.instance.as_ref().map(|i| drover_model::events::Fanned {
                        step: i.of.clone(),
                        key: i.key.clone(),
                        list: i.unit().0.to_string(),
                        unit: i.owner.as_ref().map(|(_, key)| key.clone()),
                        tier: i.tier.clone(),
                    }),
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
    concurrency: usize,
    sites: Arc<BTreeMap<String, Value>>,
    shared: Arc<RunShared>,
    resume: &'a Resume,
    /// Steps stop at a safe point once this is cancelled.
    graceful: CancellationToken,
    /// For the preflight: every plan ends by then.
    deadline: Option<Instant>,
}

impl Drive<'_> {
    /// The task of step `i`, its call prepared.
    fn job(
        &self,
        i: usize,
        phase: Phase,
        action: Arc<dyn drover_api::Action>,
        with: Value,
        confirm: Option<String>,
        ahead: Option<Ahead>,
    ) -> impl std::future::Future<Output = Finished> + Send + 'static {
        let step = &self.loaded.runbook.steps[i];
        StepJob {
            index: i,
            id: step.id.clone(),
            action,
            with,
            confirm: if self.resume.approved.contains_key(&step.id) { None } else { confirm },
            timeout: step.timeout,
            retry: step.retry.clone(),
            phase,
            sites: self.sites.clone(),
            checkpoint: self.resume.checkpoints.get(&step.id).cloned(),
            shared: self.shared.clone(),
            stop: self.graceful.clone(),
            deadline: self.deadline,
            ahead,
        }
        .run()
    }

    /// Begin step `i`'s preparation (`prepare_after`): read-only, quiet, within its timeout.
    fn prepare_ahead(&self, i: usize, action: Arc<dyn drover_api::Action>, with: Value) -> Ahead {
        let step = &self.loaded.runbook.steps[i];
        let ctx = StepContext::new(
            self.shared.run_id.clone(),
            step.id.clone(),
            1,
            Mode::Run,
            Some(Instant::now() + step.timeout),
            self.sites.clone(),
            self.graceful.clone(),
            Arc::new(Quiet),
            None,
        )
        .with_base_dir(self.shared.base_dir.clone());
        let prepared = with.clone();
        Ahead { with, task: tokio::spawn(async move { action.prepare(&ctx, &prepared).await }) }
    }
}

/// Whether the preflight may plan this step before its turn: a plan only reads the world, so
/// one whose call reads no other step's outputs finds the same before its dependencies' plans
/// end as after. Its plan is kept until the graph reaches the step (dropped if the step is then
/// skipped or blocked), so the preflight decides what it would have in graph order — without
/// walking a fleet's tiers one after another.
fn plans_early(step: &drover_runbook::Step) -> bool {
    let reads_steps = |t: &drover_runbook::expr::Template| {
        t.refs().iter().any(|(path, _)| path.first().is_some_and(|f| f == "steps"))
    };
    !step.call.slots.iter().any(|s| reads_steps(&s.template)) && !step.confirm.as_ref().is_some_and(reads_steps)
}

/// What a condition's steps leave of its `if:`: decided, or waiting for a step to settle.
enum Reads {
    /// Every step it reads is settled.
    Settled,
    /// This step (the first of them) is not settled yet.
    Waits(usize),
    /// It reads a step not in this run: never decided before its turn.
    Unknown,
}

/// Whether every step a condition reads is settled (else its `if:` is not decided yet).
fn condition_reads(cond: &drover_runbook::expr::Expr, step: &drover_runbook::Step, board: &Board) -> Reads {
    let mut reads = Reads::Settled;
    cond.refs(&mut |r| {
        if let [first, id, ..] = r
            && first == "steps"
            && matches!(reads, Reads::Settled)
        {
            let paired = step.instance.as_ref().and_then(|inst| inst.pair(id));
            let id = paired.as_ref().unwrap_or(id);
            reads = match board.loaded.index.get(id) {
                Some(&j) if matches!(board.state[j], State::Done(_)) => Reads::Settled,
                Some(&j) => Reads::Waits(j),
                None => Reads::Unknown,
            };
        }
    });
    reads
}

/// Run the board to the end (or until stopped); returns the stop level reached.
async fn drive(board: &mut Board<'_>, d: &Drive<'_>, stop: &mut StopSignal, mut stop_level: u8) -> u8 {
    let rb = &d.loaded.runbook;
    let mut lock_use: HashMap<&str, usize> = HashMap::new();
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    let mut task_step: HashMap<Id, usize> = HashMap::new();
    let mut next_early = 0;
    // Preflight: steps to plan early once the step they are filed under settles, and those
    // whose step has.
    let mut early_waiting: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut early_again: VecDeque<usize> = VecDeque::new();
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
            let (action, with, confirm) = match call_of(step, &d.loaded.actions.call[i], &board.scope(i)) {
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
            board.start(i);
            // A preparation made with other parameters than the run's is not the run's.
            let ahead = board.ahead.remove(&i).filter(|a| a.with == with);
            let handle = tasks.spawn(d.job(i, board.phase, action, with, confirm, ahead));
            task_step.insert(handle.id(), i);
        }
        // Steps whose `prepare_after` steps are done begin their read-only part now.
        while board.phase == Phase::Run
            && stop_level == 0
            && !board.halting
            && let Some(i) = board.prepare_queue.pop()
        {
            let step = &rb.steps[i];
            let scope = board.scope(i);
            let may_run = step.condition.as_ref().is_none_or(|(cond, _)| {
                matches!(condition_reads(cond, step, board), Reads::Settled)
                    && cond.holds(&scope).is_ok_and(|holds| holds)
            });
            if board.state[i] != State::Waiting || !may_run || !plans_early(step) {
                continue;
            }
            if let Ok((action, with, _)) = call_of(step, &d.loaded.actions.call[i], &scope) {
                board.ahead.insert(i, d.prepare_ahead(i, action, with));
            }
        }
        // Free slots plan later steps early (see `plans_early`), in file order; a step whose
        // `if:` reads a step not settled yet is planned early once that step is.
        if board.phase == Phase::Preflight {
            for j in board.settled_log.drain(..) {
                if let Some(waiting) = early_waiting.remove(&j) {
                    early_again.extend(waiting);
                }
            }
        }
        while board.phase == Phase::Preflight && stop_level == 0 && task_step.len() < d.concurrency {
            let i = match early_again.pop_front() {
                Some(i) => i,
                None => {
                    let Some(i) = (next_early..rb.steps.len()).find(|&i| board.state[i] == State::Waiting) else {
                        next_early = rb.steps.len();
                        break;
                    };
                    next_early = i + 1;
                    i
                }
            };
            let step = &rb.steps[i];
            if board.state[i] != State::Waiting
                || board.planning_early[i]
                || board.planned_early.contains_key(&i)
                || !plans_early(step)
            {
                continue;
            }
            let scope = board.scope(i);
            // Not a step its `if:` may yet rule out: a site declared down is not probed.
            if let Some((cond, _)) = &step.condition {
                match condition_reads(cond, step, board) {
                    Reads::Settled => {}
                    Reads::Waits(j) => {
                        early_waiting.entry(j).or_default().push(i);
                        continue;
                    }
                    Reads::Unknown => continue,
                }
                if !cond.holds(&scope).is_ok_and(|holds| holds) {
                    continue;
                }
            }
            // What cannot be prepared now is reported when its turn comes.
            let Ok((action, with, confirm)) = call_of(step, &d.loaded.actions.call[i], &scope) else { continue };
            board.planning_early[i] = true;
            let handle = tasks.spawn(d.job(i, board.phase, action, with, confirm, None));
            task_step.insert(handle.id(), i);
        }
        if !board.pending_eval.is_empty() {
            continue;
        }
        if board.running == 0 && board.ready.is_empty() {
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
                board.finished(fin);
            }
            level = stop.changed() => {
                if level > stop_level {
                    stop_level = level;
                    let signal = Some(stop.by()).filter(|b| !b.is_empty()).map(str::to_string);
                    let _ = board.sink.emit(Event::StopRequested { abort: level >= 2, signal });
                    d.graceful.cancel();
                    board.forget_early_plans();
                    board.ahead.clear();
                    if level >= 2 {
                        tasks.abort_all();
                    }
                }
            }
        }
    }
}

/// Run the graph to the end (or until stopped) and return what happened.
pub async fn execute(loaded: &Loaded, opts: ExecuteOptions) -> RunSummary {
    let expanded;
    let loaded = match &loaded.deferred {
        None => loaded,
        Some(_) => match discover(loaded, &opts).await {
            Ok(l) => {
                expanded = l;
                &expanded
            }
            Err(summary) => return *summary,
        },
    };
    let rb = &loaded.runbook;
    let sites: Arc<BTreeMap<String, Value>> =
        Arc::new(loaded.sites.iter().map(|(k, v)| (k.clone(), v.settings.clone())).collect());
    let shared = Arc::new(RunShared {
        run_id: opts.run_id.clone(),
        sink: opts.sink.clone(),
        approver: opts.approver.clone(),
        base_dir: base_dir(loaded),
    });
    let empty = |outcome, journal_error, preflight_failed| RunSummary {
        outcome,
        steps: vec![],
        outputs: BTreeMap::new(),
        journal_error,
        preflight_failed,
    };
    let side_effects: Vec<bool> = loaded.actions.call.iter().map(|a| a.info().side_effects).collect();
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
                let remaining = rb.steps.len().saturating_sub(resume.done.len());
                let _ = opts
                    .sink
                    .emit(Event::PreflightStarted { steps: remaining, timeout_ms: timeout.as_millis() as u64 });
                let mut board = Board::new(loaded, &opts.sink, &opts.run_id, Phase::Preflight, &resume, &side_effects);
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
    let mut board = Board::new(loaded, &opts.sink, &opts.run_id, phase, &resume, &side_effects);
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
        let failed_items = board.failed_items();
        let done = (&board.state, &board.attempted, &board.outputs);
        if board.halting || failed_items.is_empty() {
            match board.past_no_return(&|_| true) {
                Some(step) => {
                    let _ = opts.sink.emit(Event::RollbackRefused { past: step.to_string() });
                }
                None if board.journal_error.is_none() && rollback(loaded, done, &|_| true, &shared, &sites).await => {
                    outcome = RunOutcome::RolledBack;
                }
                None => {}
            }
        } else {
            // Only isolated items failed: each is rolled back alone, the others stay done.
            for (list, key) in failed_items {
                let mine = |i: usize| rb.steps[i].instance.as_ref().is_some_and(|x| x.unit() == (&list, &key));
                match board.past_no_return(&mine) {
                    Some(step) => {
                        let _ = opts.sink.emit(Event::RollbackRefused { past: step.to_string() });
                    }
                    None => {
                        rollback(loaded, done, &mine, &shared, &sites).await;
                    }
                }
            }
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

/// Lists read from steps' outputs: plan those steps (they only read, so their plans read what
/// their runs would), then expand the runbook with what they found — before the run starts,
/// so the preflight checks every item's steps. A resumed run reuses what the first one read.
/// When the lists cannot be read or used, the run ends as a failed preflight: nothing changed.
async fn discover(loaded: &Loaded, opts: &ExecuteOptions) -> Result<Loaded, Box<RunSummary>> {
    let started = Instant::now();
    let sub = loaded.discovery().expect("a runbook with deferred lists has steps to read them from");
    let resume = opts.resume.clone().unwrap_or_default();
    let mut outputs: BTreeMap<String, Outputs> = sub
        .runbook
        .steps
        .iter()
        .filter_map(|s| resume.done.get(&s.id).map(|(_, o)| (s.id.clone(), o.clone())))
        .collect();
    let mut failed: Vec<String> = vec![];
    let mut captured: Vec<Event> = vec![];
    let timeout = match &opts.preflight {
        Preflight::Check { timeout } => *timeout,
        Preflight::Skip { .. } => Duration::from_secs(300),
    };
    if outputs.len() < sub.runbook.steps.len() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = EventSink::observer_only(Some(tx));
        let sites: Arc<BTreeMap<String, Value>> =
            Arc::new(loaded.sites.iter().map(|(k, v)| (k.clone(), v.settings.clone())).collect());
        let shared = Arc::new(RunShared {
            run_id: opts.run_id.clone(),
            sink: sink.clone(),
            approver: opts.approver.clone(),
            base_dir: base_dir(loaded),
        });
        let fresh = Resume::default();
        let d = Drive {
            loaded: &sub,
            concurrency: opts.concurrency,
            sites,
            shared,
            resume: &fresh,
            graceful: CancellationToken::new(),
            deadline: Some(started + timeout),
        };
        let reads_only = vec![false; sub.runbook.steps.len()];
        let mut board = Board::new(&sub, &sink, &opts.run_id, Phase::Preflight, &fresh, &reads_only);
        let mut stop = opts.stop.clone();
        drive(&mut board, &d, &mut stop, opts.stop.level()).await;
        for (i, step) in sub.runbook.steps.iter().enumerate() {
            match (&board.state[i], &board.outputs[i]) {
                (State::Done(Outcome::Planned), Some(o)) => {
                    outputs.insert(step.id.clone(), o.clone());
                }
                (State::Done(Outcome::Skipped), _) => {}
                _ => failed.push(step.id.clone()),
            }
        }
        drop(board);
        while let Ok(e) = rx.try_recv() {
            captured.push(e);
        }
    }
    let problem = match loaded.expand_discovered(&outputs) {
        Ok(l) if failed.is_empty() => return Ok(l),
        Ok(_) => None,
        Err(d) => Some(d),
    };
    // Nothing has changed: the run ends as a failed preflight, saying what went wrong.
    let side_effects: Vec<bool> = loaded.actions.call.iter().map(|a| a.info().side_effects).collect();
    let sink = &opts.sink;
    let mut journal_error = sink.emit_durable(run_started(loaded, opts, &side_effects)).await.err();
    let _ =
        sink.emit(Event::PreflightStarted { steps: sub.runbook.steps.len(), timeout_ms: timeout.as_millis() as u64 });
    for e in captured.into_iter().filter(|e| matches!(e, Event::PreflightChecked { .. })) {
        let _ = sink.emit(e);
    }
    if let Some(d) = problem {
        let step = sub.runbook.steps.last().map(|s| s.id.clone()).unwrap_or_default();
        let error = ActionError::permanent(format!("the list it found cannot be fanned out over: {d}"))
            .with_hint("fix the items (or the runbook's for_each) and run again; nothing was changed");
        let _ = sink.emit(Event::PreflightChecked {
            step: step.clone(),
            outcome: Outcome::PlanFailed,
            plan: None,
            error: Some(error),
            duration_ms: 0,
            deferred: vec![],
        });
        failed.push(step);
    }
    let _ = sink
        .emit(Event::PreflightFinished { failed: failed.clone(), duration_ms: started.elapsed().as_millis() as u64 });
    if let Err(e) = sink.emit_durable(Event::RunFinished { outcome: RunOutcome::Failed }).await {
        journal_error.get_or_insert(e);
    }
    Err(Box::new(RunSummary {
        outcome: RunOutcome::Failed,
        steps: vec![],
        outputs,
        journal_error: journal_error.map(|e| e.to_string()),
        preflight_failed: failed,
    }))
}

/// The runbook's directory: relative paths in parameters start here.
fn base_dir(loaded: &Loaded) -> std::path::PathBuf {
    match loaded.runbook.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
        _ => std::env::current_dir().unwrap_or_default(),
    }
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

/// Undo what the run did (of the steps `only` picks), dependents before their dependencies:
/// completed steps, and failed ones that had begun (their change may be partial; undos are
/// idempotent by contract). True if every undo worked.
async fn rollback(
    loaded: &Loaded,
    (state, attempted, outputs): (&Vec<State>, &Vec<bool>, &Vec<Option<Outputs>>),
    only: &dyn Fn(usize) -> bool,
    shared: &Arc<RunShared>,
    sites: &Arc<BTreeMap<String, Value>>,
) -> bool {
    let rb = &loaded.runbook;
    let mut all_ok = true;
    for &i in loaded.dag.order.iter().rev().filter(|&&i| only(i)) {
        let step = &rb.steps[i];
        let scope =
            RunScope { loaded, run_id: &shared.run_id, dry: false, predict: false, outputs, state, step: Some(step) };
        let partly = attempted[i] && matches!(state[i], State::Done(Outcome::Failed | Outcome::Interrupted));
        if state[i] != State::Done(Outcome::Succeeded) && !partly {
            continue;
        }
        let prepared = match (&step.undo, &loaded.actions.undo[i]) {
            (Some(call), Some(a)) => interpolate(call, &scope, &a.info().params).map(|w| (a.clone(), w)),
            (Some(_), None) => continue,
            (None, _) => match &loaded.actions.call[i] {
                a if a.info().undo => interpolate(&step.call, &scope, &a.info().params).map(|w| (a.clone(), w)),
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
