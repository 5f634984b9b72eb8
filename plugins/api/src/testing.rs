//! Helpers for testing an action outside the engine: a host that approves every gate and
//! discards progress, and a context built from sites and a time budget.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::{ActionError, Mode, Progress, StepContext, StepHost};

/// Approves every gate as `tester`; progress, notes and checkpoints go nowhere.
pub struct NullHost;

#[async_trait]
impl StepHost for NullHost {
    fn progress(&self, _: &str, _: Progress) {}
    fn note(&self, _: &str, _: &str) {}
    async fn checkpoint(&self, _: &str, _: Value) {}
    async fn approve(&self, _: &str, _: &str) -> Result<String, ActionError> {
        Ok("tester".into())
    }
}

/// A running step (`run`/`step-1`, attempt 1) with these sites and this much time left.
pub fn context(sites: BTreeMap<String, Value>, budget: Duration) -> StepContext {
    StepContext::new(
        "run",
        "step-1",
        1,
        Mode::Run,
        Some(tokio::time::Instant::now() + budget),
        Arc::new(sites),
        Default::default(),
        Arc::new(NullHost),
        None,
    )
}
