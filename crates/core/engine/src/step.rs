//! One step's job: its parameters interpolated from params and earlier outputs, attempts with
//! retries and backoff within the step's time, gates, checkpoints and notes through its host.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use drover_api::{Action, ActionError, Mode, Outputs, Prepared, Progress, StepContext, StepHost};

use super::events::{Event, Outcome};
use super::policy::backoff_delay;
use super::{GateAnswer, RunShared};
use drover_runbook::expr::Scope;
use drover_runbook::{Call, Loaded, Step};

use super::board::*;

/// A step ready to start: its action, interpolated parameters and gate message.
pub(super) type StepCall = (Arc<dyn Action>, Value, Option<String>);

/// Interpolate a step's `with:` and gate message for its (resolved) action.
pub(super) fn call_of(step: &Step, action: &Arc<dyn Action>, scope: &RunScope) -> Result<StepCall, ActionError> {
    let action = action.clone();
    let with = interpolate(&step.call, scope, &action.info().params)?;
    let confirm = match (&step.confirm, &step.confirm_text) {
        (Some(t), _) => Some(drover_runbook::expr::display(
            &t.render(scope).map_err(|e| ActionError::permanent(format!("confirm message: {e}")))?,
        )),
        (None, Some(text)) => Some(text.clone()),
        (None, None) => None,
    };
    Ok((action, with, confirm))
}

/// Replace every `${{ }}` slot of a call with its value. A number or `true`/`false` going
/// where the action takes only text becomes text (`message: "${{ steps.d.outputs.status }}"`).
pub(super) fn interpolate(call: &Call, scope: &dyn Scope, schema: &Value) -> Result<Value, ActionError> {
    let mut with = (*call.with).clone();
    // Values first (their paths hold the keys as written), then keys, deepest first.
    let mut keys: Vec<&drover_runbook::model::Slot> = call.slots.iter().filter(|s| s.key).collect();
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
                    map.insert(drover_runbook::expr::display(&value), v);
                }
            }
            _ => *target = value,
        }
    }
    Ok(with)
}

/// Values `${{ }}` can see while the run is in progress.
pub(super) struct RunScope<'a> {
    pub(super) loaded: &'a Loaded,
    pub(super) run_id: &'a str,
    /// `run.dry_run`.
    pub(super) dry: bool,
    /// Planning: an output no plan predicted reads as a placeholder.
    pub(super) predict: bool,
    pub(super) outputs: &'a [Option<Outputs>],
    pub(super) state: &'a [State],
    /// The step whose expressions are evaluated: `item` is its item, and a fanned step's
    /// outputs are its own item's instance's.
    pub(super) step: Option<&'a Step>,
}

impl RunScope<'_> {
    fn instance(&self) -> Option<&drover_runbook::Instance> {
        self.step.and_then(|s| s.instance.as_ref())
    }
}

impl Scope for RunScope<'_> {
    fn lookup(&self, path: &[String]) -> Result<Cow<'_, Value>, String> {
        fn dig<'v>(v: &'v Value, rest: &[String], what: &str) -> Result<Cow<'v, Value>, String> {
            drover_runbook::expr::dig(v, rest).map_err(|key| format!("`{what}` has no `{key}`"))
        }
        let owned = |v: Value| Ok(Cow::Owned(v));
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
                Some("id") => owned(Value::String(self.run_id.to_string())),
                Some("dry_run") => owned(Value::Bool(self.dry)),
                Some("runbook") => owned(Value::String(self.loaded.runbook.name.clone())),
                _ => Err(format!("unknown `{}`", path.join("."))),
            },
            Some("item") => {
                let instance = self.instance().ok_or("`item` is defined only in a step with `for_each`")?;
                dig(&instance.item, &path[1..], "item")
            }
            Some("steps") => {
                let id = path.get(1).ok_or("missing step id")?;
                let paired = self.instance().and_then(|inst| inst.pair(id));
                let id = paired.as_ref().unwrap_or(id);
                let i = *self.loaded.index.get(id).ok_or_else(|| format!("no step `{id}`"))?;
                match path.get(2).map(String::as_str) {
                    Some("outcome") => owned(match self.state[i] {
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
                                    .loaded
                                    .actions
                                    .call
                                    .get(i)
                                    .and_then(|a| a.info().outputs.iter().find(|o| &o.name == key).map(|o| o.ty));
                                owned(match ty {
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

/// A step's preparation (`prepare_after`), begun before its turn with these parameters.
/// Dropped unused, it is stopped: it only reads.
pub(super) struct Ahead {
    pub(super) with: Value,
    pub(super) task: tokio::task::JoinHandle<Result<Option<Prepared>, ActionError>>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The host of a preparation: it reports nothing (its step has not started) and asks no one.
pub(super) struct Quiet;

#[async_trait]
impl StepHost for Quiet {
    fn progress(&self, _: &str, _: Progress) {}
    fn note(&self, _: &str, _: &str) {}
    async fn checkpoint(&self, _: &str, _: Value) {}
    async fn approve(&self, step: &str, _: &str) -> Result<String, ActionError> {
        Err(ActionError::permanent(format!("`{step}` asked for approval while preparing; only its run may")))
    }
}

/// Everything one step task needs, owned.
pub(super) struct StepJob {
    pub(super) index: usize,
    pub(super) id: String,
    pub(super) action: Arc<dyn Action>,
    pub(super) with: Value,
    pub(super) confirm: Option<String>,
    pub(super) timeout: Duration,
    pub(super) retry: drover_runbook::RetryPolicy,
    pub(super) phase: Phase,
    pub(super) sites: Arc<BTreeMap<String, Value>>,
    pub(super) checkpoint: Option<Value>,
    pub(super) shared: Arc<RunShared>,
    pub(super) stop: CancellationToken,
    /// The preflight's end: a plan stops by then whatever its step's timeout.
    pub(super) deadline: Option<Instant>,
    /// What the step's preparation read before its turn (for its first attempt).
    pub(super) ahead: Option<Ahead>,
}

impl StepJob {
    pub(super) async fn run(mut self) -> Finished {
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
            let mut ctx = self.context(attempt, Mode::Run, deadline, host.clone());
            if let Some(mut ahead) = self.ahead.take() {
                match tokio::time::timeout_at(deadline, &mut ahead.task).await {
                    Ok(Ok(Ok(Some(prepared)))) => ctx = ctx.with_prepared(prepared),
                    Ok(Ok(Err(e))) => ctx.note(&format!("preparing ahead of its turn failed, so it reads now: {e}")),
                    _ => {}
                }
            }
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

    pub(super) async fn shared_gate(&self, message: &str) -> Result<(), ActionError> {
        Host { shared: self.shared.clone() }.approve(&self.id, message).await.map(|_| ())
    }

    pub(super) fn context(&self, attempt: u32, mode: Mode, deadline: Instant, host: Arc<dyn StepHost>) -> StepContext {
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

pub(super) fn timeout_error(timeout: Duration) -> ActionError {
    ActionError::permanent(format!("timed out after {}", humantime::format_duration(timeout)))
        .with_hint("the target did not finish in time; check it, then raise the step's `timeout:` or `drover resume`")
}

/// The engine side of [`StepContext`].
pub(super) struct Host {
    pub(super) shared: Arc<RunShared>,
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
        let journal = |e: drover_model::SinkError| ActionError::permanent(format!("journal write failed: {e}"));
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
