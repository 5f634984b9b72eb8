//! The action contract between the drover engine and its plugins.
//!
//! The engine knows actions only through [`Action`]; plugins know the engine only through
//! [`StepContext`]. Neither side names the other's world: a plugin never sees a graph or a
//! journal, the engine never sees ONTAP or Kubernetes. Most plugins implement the friendlier
//! [`TypedAction`] (one typed parameter struct per action) and register it with [`typed`].

mod context;
mod duration;
mod error;
mod gates;
mod plan;
mod poll;
pub mod procs;
#[cfg(feature = "s3")]
pub mod s3;
pub mod schema;
mod secret;
mod shared_reads;
mod sites;
#[cfg(feature = "testing")]
pub mod testing;
mod typed;

pub use context::{Mode, Prepared, Progress, StepContext, StepHost};
pub use duration::HumanDuration;
pub use error::{ActionError, ErrorKind, causes, is_certificate_failure};
pub use gates::Gates;
pub use plan::{Check, Plan};
pub use poll::Poll;
pub use secret::{SECRET_REF_FORMAT, Secret, SecretRef};
pub use shared_reads::SharedReads;
pub use sites::SiteSection;
pub use typed::{ActionSpec, OutputDoc, TypedAction, ValueType, closest as closest_match, typed};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Named values an action returns; later steps read them as `${{ steps.ID.outputs.KEY }}`.
pub type Outputs = serde_json::Map<String, Value>;

/// What an action tells the engine (and `drover actions`) about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionInfo {
    /// Full name used in `uses:`, e.g. `ontap.snapmirror.break`.
    pub name: String,
    /// One line: what the action does.
    pub summary: String,
    /// JSON schema of the `with:` parameters.
    pub params: Value,
    /// The outputs the action promises; empty means "not declared" for external plugins.
    #[serde(default)]
    pub outputs: Vec<OutputDoc>,
    /// False for actions that change nothing in the world (waits, reads, logs): the engine
    /// need not make their start durable in the journal before they proceed.
    #[serde(default = "yes")]
    pub side_effects: bool,
    /// True when the action has its own compensation for `on_failure: rollback`.
    #[serde(default)]
    pub undo: bool,
    /// True when the action may return outputs beyond those declared (`exec`'s
    /// `$DROVER_OUTPUT`), so references to other keys are not errors at load time.
    #[serde(default)]
    pub open_outputs: bool,
    /// Parameters naming a site, as dotted paths into `with:` (`site`, `from.live.site`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// The output holding the data a failover would lose now, in seconds: the report's RPO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_output: Option<String>,
    /// What the action reads ahead of its step's turn when the step sets `prepare_after`
    /// (`kube.restore`: its source); none for actions that do nothing ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepares: Option<String>,
}

impl ActionInfo {
    /// The sites a call with these parameters acts on, in declaration order.
    pub fn sites_in(&self, with: &Value) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for path in &self.sites {
            let mut v = with;
            for key in path.split('.') {
                v = match v.get(key) {
                    Some(next) => next,
                    None => &Value::Null,
                };
            }
            if let Some(site) = v.as_str()
                && !out.iter().any(|s| s == site)
            {
                out.push(site.to_string());
            }
        }
        out
    }
}

fn yes() -> bool {
    true
}

/// A problem with one parameter, located by its path inside `with:`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParamError {
    /// Path below `with:`; empty for the mapping itself.
    pub path: Vec<PathSegment>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// One step of a path into a parameter tree.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(untagged)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

impl std::fmt::Display for PathSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathSegment::Key(k) => write!(f, ".{k}"),
            PathSegment::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// The contract every action fulfils. `with` is the step's parameters after interpolation.
#[async_trait]
pub trait Action: Send + Sync {
    fn info(&self) -> &ActionInfo;

    /// Pure check of the parameters: no network, no clock, no credentials.
    fn check_params(&self, with: &Value) -> Result<(), Vec<ParamError>>;

    /// Read-only: check preconditions against the real system and describe the change.
    async fn plan(&self, ctx: &StepContext, with: &Value) -> Result<Plan, ActionError>;

    /// Read-only work `run` would begin with, done before the step's turn once the steps its
    /// `prepare_after` names are done (a restore reads its source while volumes transfer).
    /// What it returns reaches `run` through [`StepContext::take_prepared`]; `None`, or an
    /// error, and `run` does the work itself. Never changes the world.
    async fn prepare(&self, ctx: &StepContext, with: &Value) -> Result<Option<Prepared>, ActionError> {
        let _ = (ctx, with);
        Ok(None)
    }

    /// Make the change. Idempotent: running it again after success is a no-op success.
    async fn run(&self, ctx: &StepContext, with: &Value) -> Result<Outputs, ActionError>;

    /// Compensation used by `on_failure: rollback`; `outputs` are those `run` returned.
    async fn undo(&self, ctx: &StepContext, with: &Value, outputs: &Outputs) -> Result<(), ActionError> {
        let _ = (ctx, with, outputs);
        Ok(())
    }
}
