//! The scheduler's board: every step's state, what is ready, what is blocked, skipped or not
//! run, locks and concurrency, and the outputs later steps read.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use drover_api::{ActionError, Outputs, Plan};

use super::EventSink;
use super::events::{Event, Outcome};
use drover_runbook::Loaded;

use super::step::*;
use drover_model::Resume;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum State {
    Waiting,
    Ready,
    Running,
    Done(Outcome),
}

/// What the scheduler is doing with the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Calling `run()`: the world changes.
    Run,
    /// `--dry-run`: every step's `plan()`, recorded as the run's steps.
    DryRun,
    /// Before a real run: every step's `plan()`, recorded as preflight checks.
    Preflight,
}

impl Phase {
    pub(super) fn plans(self) -> bool {
        self != Phase::Run
    }
}

pub(super) struct Finished {
    pub(super) step: usize,
    pub(super) outcome: Outcome,
    pub(super) outputs: Outputs,
    pub(super) error: Option<ActionError>,
    pub(super) attempts: u32,
    pub(super) duration: Duration,
    pub(super) plan: Option<Plan>,
}

/// The run state the scheduler owns: where every step stands and what it produced.
pub(super) struct Board<'a> {
    pub(super) loaded: &'a Loaded,
    pub(super) sink: &'a EventSink,
    pub(super) run_id: &'a str,
    pub(super) phase: Phase,
    pub(super) state: Vec<State>,
    pub(super) outputs: Vec<Option<Outputs>>,
    /// Dependencies of each step not yet terminal.
    pub(super) missing: Vec<usize>,
    /// Steps whose dependencies all became terminal, to be decided in file order.
    pub(super) pending_eval: VecDeque<usize>,
    pub(super) ready: VecDeque<usize>,
    pub(super) halting: bool,
    pub(super) journal_error: Option<String>,
    /// Steps an attempt of which began (this process or an earlier one).
    pub(super) attempted: Vec<bool>,
    /// Whether each step's action changes the world.
    pub(super) side_effects: &'a [bool],
    /// Planning: a step that changes the world will have run before this one.
    pub(super) after_change: Vec<bool>,
    /// Steps whose turn has come and whose task is running.
    pub(super) running: usize,
    /// Preflight: steps being planned before their turn, and plans that ended before it.
    pub(super) planning_early: Vec<bool>,
    pub(super) planned_early: HashMap<usize, Finished>,
    /// Run: the steps each step's `prepare_after` names, by index, and how many of them are
    /// not done yet (a step without `prepare_after`, or one naming a step not in this run,
    /// never prepares).
    pub(super) prepare_children: Vec<Vec<usize>>,
    pub(super) prepare_missing: Vec<Option<usize>>,
    /// Run: steps whose `prepare_after` steps are all done, to prepare if they still wait.
    pub(super) prepare_queue: Vec<usize>,
    /// Run: preparations begun ahead of their step's turn.
    pub(super) ahead: HashMap<usize, Ahead>,
    /// Preflight: steps settled since the scheduler last looked (early plans may wait on them).
    pub(super) settled_log: Vec<usize>,
}

impl<'a> Board<'a> {
    pub(super) fn new(
        loaded: &'a Loaded,
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
            running: 0,
            planning_early: vec![false; n],
            planned_early: HashMap::new(),
            prepare_children: vec![vec![]; n],
            prepare_missing: vec![None; n],
            prepare_queue: vec![],
            ahead: HashMap::new(),
            settled_log: vec![],
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
        if phase == Phase::Run {
            for (i, s) in rb.steps.iter().enumerate().filter(|(_, s)| !s.prepare_after.is_empty()) {
                let Some(after) =
                    s.prepare_after.iter().map(|id| loaded.index.get(id).copied()).collect::<Option<Vec<_>>>()
                else {
                    continue;
                };
                let done = |&p: &usize| matches!(board.state[p], State::Done(o) if o.satisfies());
                board.prepare_missing[i] = Some(after.iter().filter(|p| !done(p)).count());
                for p in after {
                    board.prepare_children[p].push(i);
                }
                if board.prepare_missing[i] == Some(0) && board.state[i] == State::Waiting {
                    board.prepare_queue.push(i);
                }
            }
        }
        board
    }

    /// What step `i`'s expressions see.
    pub(super) fn scope(&self, i: usize) -> RunScope<'_> {
        RunScope {
            step: Some(&self.loaded.runbook.steps[i]),
            loaded: self.loaded,
            run_id: self.run_id,
            dry: self.phase == Phase::DryRun,
            predict: self.phase.plans(),
            outputs: &self.outputs,
            state: &self.state,
        }
    }

    /// Decide every step whose dependencies are all terminal: ready, skipped, blocked or not run.
    pub(super) fn decide_pending(&mut self) {
        while let Some(i) = self.pending_eval.pop_front() {
            let step = &self.loaded.runbook.steps[i];
            let parents_ok = step.after_any_outcome
                || self.loaded.dag.parents[i].iter().all(|&p| matches!(self.state[p], State::Done(o) if o.satisfies()));
            if self.halting && !step.always {
                self.settle_unrun(i, Outcome::NotRun, None);
            } else if !parents_ok && !step.always {
                self.settle_unrun(i, Outcome::Blocked, None);
            } else if let Some((cond, text)) = &step.condition {
                match cond.holds(&self.scope(i)) {
                    Ok(true) => self.make_ready(i),
                    Ok(false) => self.settle_unrun(i, Outcome::Skipped, None),
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

    pub(super) fn make_ready(&mut self, i: usize) {
        if let Some(fin) = self.planned_early.remove(&i) {
            self.settle(fin);
        } else if self.planning_early[i] {
            self.planning_early[i] = false;
            self.start(i);
        } else {
            self.state[i] = State::Ready;
            self.ready.push_back(i);
        }
    }

    /// Step `i`'s task runs for its turn (started now, or planning since before).
    pub(super) fn start(&mut self, i: usize) {
        self.state[i] = State::Running;
        self.running += 1;
    }

    /// A task ended: its step's turn, or a plan made early to be kept until the turn comes.
    pub(super) fn finished(&mut self, fin: Finished) {
        let i = fin.step;
        if self.state[i] == State::Running {
            self.settle(fin);
        } else if std::mem::take(&mut self.planning_early[i]) && self.state[i] == State::Waiting {
            self.planned_early.insert(i, fin);
        }
    }

    /// Plans made early are not used once the run is stopped.
    pub(super) fn forget_early_plans(&mut self) {
        self.planned_early.clear();
        self.planning_early.fill(false);
    }

    /// Queued steps will not start once the run halts or stops, except clean-up steps
    /// (and not even those after an abort).
    pub(super) fn drain_queue(&mut self, abort: bool) {
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
    pub(super) fn settle_unrun(&mut self, i: usize, outcome: Outcome, error: Option<ActionError>) {
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
    pub(super) fn settle(&mut self, fin: Finished) {
        let i = fin.step;
        let step = &self.loaded.runbook.steps[i];
        if self.state[i] == State::Running {
            self.running -= 1;
        }
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
        if self.phase == Phase::Run
            && fin.outcome == Outcome::Succeeded
            && let Some(error) = self.list_changed(i, &fin.outputs)
        {
            fin.outcome = Outcome::Failed;
            fin.error = Some(error);
        }
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
            // One item of a fleet failing stops only its own item's steps.
            Outcome::Failed if self.phase == Phase::Run && !step.instance.as_ref().is_some_and(|i| i.isolate) => {
                self.halting = true;
                Outcome::Failed
            }
            other => other,
        };
        self.state[i] = State::Done(outcome);
        if self.phase == Phase::Preflight {
            self.settled_log.push(i);
        }
        // A preparation its step did not use (skipped, blocked, not run) ends here.
        self.ahead.remove(&i);
        if outcome.satisfies() {
            for &c in &self.prepare_children[i] {
                if let Some(missing) = self.prepare_missing[c].as_mut() {
                    *missing -= 1;
                    if *missing == 0 && self.state[c] == State::Waiting {
                        self.prepare_queue.push(c);
                    }
                }
            }
        }
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

    /// A list the run was expanded with, read from this step's outputs, is not what the step
    /// finds now that it runs: the instances planned are not the ones to run.
    fn list_changed(&mut self, i: usize, outputs: &Outputs) -> Option<ActionError> {
        let id = &self.loaded.runbook.steps[i].id;
        let lists: Vec<_> = self
            .loaded
            .discovered
            .iter()
            .filter(|d| d.list.refs().iter().any(|(p, _)| p[0] == "steps" && p.get(1) == Some(id)))
            .collect();
        if lists.is_empty() {
            return None;
        }
        let before = self.outputs[i].replace(outputs.clone());
        let changed = lists.into_iter().find_map(|d| {
            let now = d.list.render(&self.scope(i)).unwrap_or(serde_json::Value::Null);
            d.changed(&now).map(|(then, now)| {
                ActionError::permanent(format!(
                    "the list this step finds changed since the run was planned ({then} items then, {now} now): \
                     the steps planned for each item are not the ones to run"
                ))
                .with_hint("nothing planned per item has started; run again to plan the list as it is now")
            })
        });
        self.outputs[i] = before;
        changed
    }

    /// Whether a step (of those `among` picks) marked `point_of_no_return` has begun: from then
    /// on nothing is rolled back.
    pub(super) fn past_no_return(&self, among: &dyn Fn(usize) -> bool) -> Option<&'a str> {
        let steps = &self.loaded.runbook.steps;
        (0..steps.len())
            .filter(|&i| among(i))
            .find(|&i| steps[i].point_of_no_return && (self.attempted[i] || self.state[i] == State::Running))
            .map(|i| steps[i].id.as_str())
    }

    /// The items (list, key) a step of which failed where failures stop only their item (a
    /// volume's failure is its application's).
    pub(super) fn failed_items(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = vec![];
        for (i, step) in self.loaded.runbook.steps.iter().enumerate() {
            if let (Some(inst), State::Done(Outcome::Failed | Outcome::Interrupted)) = (&step.instance, &self.state[i])
                && inst.isolate
                && !out.iter().any(|(l, k)| (l.as_str(), k.as_str()) == inst.unit())
            {
                let (list, key) = inst.unit();
                out.push((list.to_string(), key.to_string()));
            }
        }
        out
    }
}

/// Whether a condition reads a step's outputs or outcome (which a plan may not know).
pub(super) fn references_steps(cond: &drover_runbook::expr::Expr) -> bool {
    let mut found = false;
    cond.refs(&mut |r| found |= r.first().is_some_and(|f| f == "steps"));
    found
}
