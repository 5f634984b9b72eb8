//! What a running step may know and do beyond its parameters.

use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::time::Instant;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::ActionError;

/// Why the action is being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Run,
    Plan,
    Undo,
}

/// A progress report from a long step: what it is doing or waiting for, in a sentence, and the
/// work done when it can be counted (objects restored, bytes moved — never polls made, which
/// mean nothing to the person watching).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// What the step does or waits for now: "waiting for the break: state snapmirrored, …".
    pub message: String,
    /// Units of work done, of `total` when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// The engine side of a step: implemented by the engine, called by actions through
/// [`StepContext`].
#[async_trait]
pub trait StepHost: Send + Sync {
    fn progress(&self, step: &str, progress: Progress);
    /// A message for the operator; it lands in the journal and the report.
    fn note(&self, step: &str, message: &str);
    /// Record resumable progress; returns once it is durable.
    async fn checkpoint(&self, step: &str, value: Value);
    /// A manual gate: returns Ok once an operator approved, an error if refused.
    async fn approve(&self, step: &str, message: &str) -> Result<String, ActionError>;
}

/// Everything a step knows beyond its parameters.
#[derive(Clone)]
pub struct StepContext {
    pub run_id: String,
    pub step_id: String,
    pub attempt: u32,
    pub mode: Mode,
    /// When the step's time budget runs out; long waits should end by then.
    pub deadline: Option<Instant>,
    sites: Arc<BTreeMap<String, Value>>,
    stop: CancellationToken,
    host: Arc<dyn StepHost>,
    checkpoint: Option<Value>,
    base_dir: Option<std::path::PathBuf>,
    /// What the action's `prepare` read ahead of the step's turn, taken by its first attempt.
    prepared: Option<Arc<std::sync::Mutex<Option<Prepared>>>>,
}

/// What an action's [`crate::Action::prepare`] read before the step's turn: its own type,
/// handed back to its `run` through [`StepContext::take_prepared`].
pub type Prepared = Box<dyn std::any::Any + Send>;

impl StepContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run_id: impl Into<String>,
        step_id: impl Into<String>,
        attempt: u32,
        mode: Mode,
        deadline: Option<Instant>,
        sites: Arc<BTreeMap<String, Value>>,
        stop: CancellationToken,
        host: Arc<dyn StepHost>,
        checkpoint: Option<Value>,
    ) -> Self {
        StepContext {
            run_id: run_id.into(),
            step_id: step_id.into(),
            attempt,
            mode,
            deadline,
            sites,
            stop,
            host,
            checkpoint,
            base_dir: None,
            prepared: None,
        }
    }

    /// Hand `run` what `prepare` read ahead of the step's turn.
    pub fn with_prepared(mut self, prepared: Prepared) -> Self {
        self.prepared = Some(Arc::new(std::sync::Mutex::new(Some(prepared))));
        self
    }

    /// What this action's `prepare` read ahead of the step's turn, once: a retry reads again.
    pub fn take_prepared<T: 'static>(&self) -> Option<T> {
        let taken = self.prepared.as_ref()?.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        taken.downcast::<T>().ok().map(|b| *b)
    }

    /// Relative paths in parameters are taken from here (the runbook's directory).
    pub fn with_base_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// A path from a parameter: absolute as is, relative to the runbook's directory otherwise.
    pub fn resolve_path(&self, path: &std::path::Path) -> std::path::PathBuf {
        match &self.base_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// A site's whole settings as written in the runbook or sites file.
    pub fn site(&self, name: &str) -> Result<&Value, ActionError> {
        self.sites.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sites.keys().map(String::as_str).collect();
            ActionError::permanent(format!("site `{name}` is not defined")).with_hint(format!(
                "define it under `sites:` or in the --sites file; known sites: {}",
                known.join(", ")
            ))
        })
    }

    /// Decode one section of a site (`ontap`, `kube`, `dns`, ...) into a plugin's own type.
    pub fn site_section<T: DeserializeOwned>(&self, site: &str, section: &str) -> Result<T, ActionError> {
        let value = self.site(site)?.get(section).ok_or_else(|| {
            ActionError::permanent(format!("site `{site}` has no `{section}` settings"))
                .with_hint(format!("add `{section}:` under sites.{site}"))
        })?;
        serde_json::from_value(value.clone()).map_err(|e| {
            ActionError::permanent(format!("site `{site}`: invalid `{section}` settings: {e}"))
                .with_hint(format!("fix sites.{site}.{section} in the runbook or sites file"))
        })
    }

    pub fn site_names(&self) -> impl Iterator<Item = &str> {
        self.sites.keys().map(String::as_str)
    }

    /// True once the operator asked for a graceful stop: reach a safe point and return.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves when a graceful stop is requested.
    pub async fn stop_requested(&self) {
        self.stop.cancelled().await
    }

    pub fn progress(&self, progress: Progress) {
        self.host.progress(&self.step_id, progress)
    }

    pub fn note(&self, message: &str) {
        self.host.note(&self.step_id, message)
    }

    /// Record resumable progress; after a crash, [`StepContext::resumed_from`] returns it.
    pub async fn checkpoint(&self, value: Value) {
        self.host.checkpoint(&self.step_id, value).await
    }

    /// The last checkpoint this step recorded before the run was interrupted, if any.
    pub fn resumed_from(&self) -> Option<&Value> {
        self.checkpoint.as_ref()
    }

    /// Ask an operator to approve; returns who approved.
    pub async fn approve(&self, message: &str) -> Result<String, ActionError> {
        self.host.approve(&self.step_id, message).await
    }

    /// Time left before the step's deadline, if it has one.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }
}
