//! Where a run's events go to outlive the process. The engine writes through this trait; the
//! journal implements it on disk. Keeping it here is what lets the engine not know the journal.

use async_trait::async_trait;

use crate::events::Event;

/// A failed write: what went wrong and what the operator should check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SinkError {}

/// An append-only store of events, durable on request.
#[async_trait]
pub trait DurableSink: Send + Sync {
    /// Queue an event; returns its sequence number. It may not be durable yet.
    fn append(&self, event: &Event) -> Result<u64, SinkError>;

    /// Return once every event up to `seq` is durable.
    async fn durable(&self, seq: u64) -> Result<(), SinkError>;
}
