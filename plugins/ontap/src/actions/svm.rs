//! Starting and stopping SVMs, polled until they reach the state: one action per direction,
//! each the other's undo.

use super::*;
use crate::model::SvmState;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SvmParams {
    pub site: String,
    /// The SVM's name on that cluster.
    pub svm: String,
}

pub(super) async fn set_svm(ctx: &StepContext, p: &SvmParams, target: SvmState) -> Result<Outputs, ActionError> {
    let client = Client::connect(ctx, &p.site)?;
    let svm = client.svm(&p.svm).await?.ok_or_else(|| {
        ActionError::permanent(format!("no SVM `{}` on ONTAP `{}`", p.svm, p.site))
            .with_hint("check the SVM name and the site")
    })?;
    let mut out = Outputs::new();
    out.insert("uuid".into(), json!(svm.uuid));
    out.insert("state".into(), json!(target.as_str()));
    let decision = decide::set_svm(&svm, &p.svm, target);
    refused(&decision)?;
    if decision.changes.is_empty() {
        return Ok(out);
    }
    let path = format!("/api/svm/svms/{}", svm.uuid);
    client.mutate(Method::PATCH, &path, &json!({"state": target.as_str()}), ctx.deadline).await?;
    let poll = drover_api::Poll::new(Duration::from_secs(5));
    loop {
        let now = client.svm_by_uuid(&svm.uuid).await?;
        if now.state == target {
            return Ok(out);
        }
        let delay = poll.next_delay();
        if ctx.remaining().is_some_and(|r| r <= delay) {
            return Err(ActionError::permanent(format!(
                "SVM `{}` did not become {target} in time (now {})",
                p.svm, now.state
            )));
        }
        tokio::time::sleep(delay).await;
    }
}

async fn plan_svm(ctx: &StepContext, p: &SvmParams, target: SvmState) -> Result<Plan, ActionError> {
    let client = Client::connect(ctx, &p.site)?;
    let mut plan = match reach(&client, Plan::default()).await {
        Ok(plan) => plan,
        Err(plan) => return Ok(plan),
    };
    let Some(svm) = client.svm(&p.svm).await? else {
        return Ok(plan.check("SVM exists", false, format!("no SVM `{}`", p.svm)));
    };
    let subtype = svm.subtype.map(|s| s.as_str()).unwrap_or("");
    plan = plan.check("SVM exists", true, format!("{}, subtype {subtype}", svm.state));
    let decision = decide::set_svm(&svm, &p.svm, target);
    if decision.refusal.is_some() {
        // An earlier step of the runbook (a break) is expected to change this; the run itself
        // refuses if it has not.
        plan =
            plan.check("SVM may start", true, "dp_destination now: it starts once its SVM-DR relationship is broken");
    }
    Ok(show(plan, &decision, &p.svm).output("state", target.as_str()))
}

/// `ontap.svm.start` and `ontap.svm.stop`: `TARGET` is the state reached, its opposite the undo.
pub struct SetSvm<const RUNNING: bool>;

pub type SvmStart = SetSvm<true>;
pub type SvmStop = SetSvm<false>;

impl<const RUNNING: bool> SetSvm<RUNNING> {
    fn target() -> SvmState {
        if RUNNING { SvmState::Running } else { SvmState::Stopped }
    }

    fn opposite() -> SvmState {
        if RUNNING { SvmState::Stopped } else { SvmState::Running }
    }
}

#[async_trait]
impl<const RUNNING: bool> TypedAction for SetSvm<RUNNING> {
    type Params = SvmParams;
    const SPEC: ActionSpec = ActionSpec {
        name: if RUNNING { "ontap.svm.start" } else { "ontap.svm.stop" },
        summary: if RUNNING {
            "Start an SVM and wait until it is running"
        } else {
            "Stop an SVM and wait until it is stopped"
        },
        outputs: if RUNNING {
            &[("uuid", ValueType::String, "SVM uuid"), ("state", ValueType::String, "running")]
        } else {
            &[("uuid", ValueType::String, "SVM uuid"), ("state", ValueType::String, "stopped")]
        },
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };
    async fn plan(&self, ctx: &StepContext, p: SvmParams) -> Result<Plan, ActionError> {
        plan_svm(ctx, &p, Self::target()).await
    }
    async fn run(&self, ctx: &StepContext, p: SvmParams) -> Result<Outputs, ActionError> {
        set_svm(ctx, &p, Self::target()).await
    }
    async fn undo(&self, ctx: &StepContext, p: SvmParams, _: &Outputs) -> Result<(), ActionError> {
        set_svm(ctx, &p, Self::opposite()).await.map(|_| ())
    }
}
