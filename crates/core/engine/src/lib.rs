//! The engine: runs a checked runbook's step graph. It knows actions only as `dyn Action`
//! and knows nothing of the systems they touch.
//!
//! The scheduler owns the run state; step tasks report back over their join handles and
//! write their own attempt records to the journal, so that concurrent steps share one
//! `fdatasync` (group commit). Events fan out to the journal and to one observer (the
//! terminal view, JSON output, or a test).

mod board;
mod policy;
mod scheduler;
mod step;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use drover_api::ActionError;

use drover_model::events::Event;
use drover_model::{DurableSink, SinkError};
pub use drover_model::{Resume, events, graph};

pub use policy::backoff_delay;
pub use scheduler::{ExecuteOptions, Preflight, RunSummary, execute};

/// An operator's answer at a gate, and who gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateAnswer {
    Approved(String),
    Denied(String),
}

/// Answers manual gates (`confirm:` and the `approve` action).
#[async_trait]
pub trait Approver: Send + Sync {
    /// Forget any answer left from an earlier attempt of `step`. Called before the gate is
    /// journaled as waiting, so an answer given once it waits is never mistaken for stale.
    fn discard_stale(&self, _step: &str) {}

    /// Wait for an operator's answer; an error only when no answer can be had.
    async fn approve(&self, run_id: &str, step: &str, message: &str) -> Result<GateAnswer, ActionError>;
}

/// Approves every gate: `--yes`, and tests.
pub struct AutoApprove(pub String);

#[async_trait]
impl Approver for AutoApprove {
    async fn approve(&self, _: &str, _: &str, _: &str) -> Result<GateAnswer, ActionError> {
        Ok(GateAnswer::Approved(self.0.clone()))
    }
}

/// Where events go: a durable sink (the journal) and an observer (eyes, JSON, tests).
#[derive(Clone, Default)]
pub struct EventSink {
    journal: Option<Arc<dyn DurableSink>>,
    observer: Option<mpsc::UnboundedSender<Event>>,
}

impl EventSink {
    pub fn new<S: DurableSink + 'static>(journal: Option<S>, observer: Option<mpsc::UnboundedSender<Event>>) -> Self {
        EventSink { journal: journal.map(|j| Arc::new(j) as Arc<dyn DurableSink>), observer }
    }

    /// Events go to the observer only (tests, previews).
    pub fn observer_only(observer: Option<mpsc::UnboundedSender<Event>>) -> Self {
        EventSink { journal: None, observer }
    }

    pub fn journal(&self) -> Option<&dyn DurableSink> {
        self.journal.as_deref()
    }

    /// Record and show an event; returns its journal sequence number (0 without a journal).
    pub fn emit(&self, event: Event) -> Result<u64, SinkError> {
        let seq = match (&self.journal, event.journaled()) {
            (Some(j), true) => j.append(&event)?,
            _ => 0,
        };
        if let Some(tx) = &self.observer {
            let _ = tx.send(event);
        }
        Ok(seq)
    }

    /// Like [`EventSink::emit`], returning once the record is on disk.
    pub async fn emit_durable(&self, event: Event) -> Result<(), SinkError> {
        let seq = self.emit(event)?;
        if let (Some(j), true) = (&self.journal, seq > 0) {
            j.durable(seq).await?;
        }
        Ok(())
    }
}

/// The operator's stop requests: 0 = none, 1 = graceful (finish running steps), 2 = abort —
/// with what asked (`SIGINT`, `SIGTERM`, `SIGHUP`), for the journal and the report.
#[derive(Clone)]
pub struct StopSignal(watch::Receiver<(u8, &'static str)>);

/// The sending half: `request(level, by)`.
pub struct StopSender(watch::Sender<(u8, &'static str)>);

impl StopSender {
    pub fn request(&self, level: u8, by: &'static str) {
        let _ = self.0.send((level, by));
    }
}

impl StopSignal {
    pub fn new() -> (StopSender, StopSignal) {
        let (tx, rx) = watch::channel((0, ""));
        (StopSender(tx), StopSignal(rx))
    }

    /// A signal that never fires.
    pub fn never() -> StopSignal {
        let (tx, rx) = watch::channel((0, ""));
        std::mem::forget(tx);
        StopSignal(rx)
    }

    pub fn level(&self) -> u8 {
        self.0.borrow().0
    }

    /// What asked for the stop; empty when nothing did.
    pub fn by(&self) -> &'static str {
        self.0.borrow().1
    }

    pub async fn changed(&mut self) -> u8 {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.0.borrow().0
    }
}

/// Shared pieces of a run that step tasks need.
pub(crate) struct RunShared {
    pub run_id: String,
    pub sink: EventSink,
    pub approver: Arc<dyn Approver>,
    /// The runbook's directory: relative paths in parameters start here.
    pub base_dir: std::path::PathBuf,
}
