//! drover's built-in actions: the general tools every runbook needs around the plugins that
//! know storage, clusters and traffic — run a command, call or wait for an HTTP endpoint,
//! pause, ask an operator, leave a note in the report.

mod exec;
mod http;

use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;

use drover_api::{
    Action, ActionError, ActionSpec, HumanDuration, Outputs, Plan, StepContext, TypedAction, ValueType, typed,
};

pub use exec::Exec;
pub use http::{Http, WaitHttp};

/// Every built-in action.
pub fn actions() -> Vec<Arc<dyn Action>> {
    vec![typed(Exec), typed(Http), typed(WaitHttp), typed(Sleep), typed(Approve), typed(Log)]
}

/// `sleep`: wait a fixed time (e.g. for a DNS TTL to expire).
pub struct Sleep;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepParams {
    /// How long to wait, e.g. `30s`.
    pub duration: HumanDuration,
}

#[async_trait]
impl TypedAction for Sleep {
    type Params = SleepParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "sleep",
        summary: "Wait a fixed time (for example for a DNS TTL to run out)",
        outputs: &[],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &[],
        rpo_output: None,
    };

    async fn plan(&self, _: &StepContext, p: SleepParams) -> Result<Plan, ActionError> {
        Ok(Plan::new(format!("wait {}", p.duration)))
    }

    async fn run(&self, ctx: &StepContext, p: SleepParams) -> Result<Outputs, ActionError> {
        tokio::select! {
            _ = tokio::time::sleep(p.duration.0) => Ok(Outputs::new()),
            _ = ctx.stop_requested() => Err(ActionError::permanent("stopped by the operator during the wait")
                .with_hint("`drover resume` waits again")),
        }
    }
}

/// `approve`: a manual gate.
pub struct Approve;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveParams {
    /// What the operator is asked, e.g. "Primary confirmed down? Fail over to west?".
    pub message: String,
}

#[async_trait]
impl TypedAction for Approve {
    type Params = ApproveParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "approve",
        summary: "Wait until an operator approves (prompt on a terminal, `--yes`, or `drover approve RUN STEP`)",
        outputs: &[("approved_by", ValueType::String, "who approved")],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &[],
        rpo_output: None,
    };

    async fn plan(&self, _: &StepContext, p: ApproveParams) -> Result<Plan, ActionError> {
        Ok(Plan::new(format!("ask the operator: {}", p.message)).output("approved_by", "<operator>"))
    }

    async fn run(&self, ctx: &StepContext, p: ApproveParams) -> Result<Outputs, ActionError> {
        let by = ctx.approve(&p.message).await?;
        let mut out = Outputs::new();
        out.insert("approved_by".into(), by.into());
        Ok(out)
    }
}

/// `log`: a message in the run's output and report.
pub struct Log;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// The message; interpolation works here (`${{ steps.x.outputs.y }}`).
    pub message: String,
    /// `info` (default) or `warn`.
    #[serde(default)]
    pub level: LogLevel,
}

#[derive(Debug, Deserialize, JsonSchema, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    #[default]
    Info,
    Warn,
}

#[async_trait]
impl TypedAction for Log {
    type Params = LogParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "log",
        summary: "Write a message to the run's output, journal and report",
        outputs: &[("message", ValueType::String, "the message as written")],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &[],
        rpo_output: None,
    };

    async fn plan(&self, _: &StepContext, p: LogParams) -> Result<Plan, ActionError> {
        Ok(Plan::new(format!("log: {}", p.message)).output("message", p.message))
    }

    async fn run(&self, ctx: &StepContext, p: LogParams) -> Result<Outputs, ActionError> {
        match p.level {
            LogLevel::Info => tracing::info!(step = %ctx.step_id, "{}", p.message),
            LogLevel::Warn => tracing::warn!(step = %ctx.step_id, "{}", p.message),
        }
        ctx.note(&p.message);
        let mut out = Outputs::new();
        out.insert("message".into(), p.message.into());
        Ok(out)
    }
}
