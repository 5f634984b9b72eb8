//! Starting and stopping SVMs, polled until they reach the state.

use super::*;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SvmParams {
    pub site: String,
    /// The SVM's name on that cluster.
    pub svm: String,
}

pub(super) async fn set_svm(ctx: &StepContext, p: &SvmParams, target: &str) -> Result<Outputs, ActionError> {
    let client = Client::connect(ctx, &p.site)?;
    let svm = client.svm(&p.svm).await?.ok_or_else(|| {
        ActionError::permanent(format!("no SVM `{}` on ONTAP `{}`", p.svm, p.site))
            .with_hint("check the SVM name and the site")
    })?;
    let uuid = s(&svm, "/uuid");
    let mut out = Outputs::new();
    out.insert("uuid".into(), json!(uuid));
    out.insert("state".into(), json!(target));
    if s(&svm, "/state") == target {
        return Ok(out);
    }
    if target == "running" && s(&svm, "/subtype") == "dp_destination" {
        return Err(ActionError::permanent(format!(
            "SVM `{}` is still a dp_destination: its SVM-DR relationship is not broken",
            p.svm
        ))
        .with_hint("break the relationship first (ontap.snapmirror.break)"));
    }
    client.mutate(Method::PATCH, &format!("/api/svm/svms/{uuid}"), &json!({"state": target}), ctx.deadline).await?;
    let poll = drover_api::Poll::new(Duration::from_secs(5));
    loop {
        let now = client.get(&format!("/api/svm/svms/{uuid}?fields=state")).await?;
        if s(&now, "/state") == target {
            return Ok(out);
        }
        let delay = poll.next_delay();
        if ctx.remaining().is_some_and(|r| r <= delay) {
            return Err(ActionError::permanent(format!(
                "SVM `{}` did not become {target} in time (now {})",
                p.svm,
                s(&now, "/state")
            )));
        }
        tokio::time::sleep(delay).await;
    }
}

async fn plan_svm(ctx: &StepContext, p: &SvmParams, target: &str) -> Result<Plan, ActionError> {
    let client = Client::connect(ctx, &p.site)?;
    let mut plan = match reach(&client, Plan::default()).await {
        Ok(plan) => plan,
        Err(plan) => return Ok(plan),
    };
    match client.svm(&p.svm).await? {
        None => Ok(plan.check("SVM exists", false, format!("no SVM `{}`", p.svm))),
        Some(svm) => {
            let (state, subtype) = (s(&svm, "/state"), s(&svm, "/subtype"));
            plan = plan.check("SVM exists", true, format!("{state}, subtype {subtype}"));
            if target == "running" && subtype == "dp_destination" {
                // An earlier step of the runbook (a break) is expected to change this; the run
                // itself refuses if it has not.
                plan = plan.check(
                    "SVM may start",
                    true,
                    "dp_destination now: it starts once its SVM-DR relationship is broken",
                );
            }
            plan.summary = if state == target {
                format!("SVM {}: already {target}", p.svm)
            } else {
                format!("SVM {}: {state} → {target}", p.svm)
            };
            if state != target {
                plan = plan.change(format!("PATCH SVM {} state {target}", p.svm));
            }
            Ok(plan.output("state", target))
        }
    }
}

/// `ontap.svm.start`
pub struct SvmStart;

#[async_trait]
impl TypedAction for SvmStart {
    type Params = SvmParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.svm.start",
        summary: "Start an SVM and wait until it is running",
        outputs: &[("uuid", ValueType::String, "SVM uuid"), ("state", ValueType::String, "running")],
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
    };
    async fn plan(&self, ctx: &StepContext, p: SvmParams) -> Result<Plan, ActionError> {
        plan_svm(ctx, &p, "running").await
    }
    async fn run(&self, ctx: &StepContext, p: SvmParams) -> Result<Outputs, ActionError> {
        set_svm(ctx, &p, "running").await
    }
    async fn undo(&self, ctx: &StepContext, p: SvmParams, _: &Outputs) -> Result<(), ActionError> {
        set_svm(ctx, &p, "stopped").await.map(|_| ())
    }
}

/// `ontap.svm.stop`
pub struct SvmStop;

#[async_trait]
impl TypedAction for SvmStop {
    type Params = SvmParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.svm.stop",
        summary: "Stop an SVM and wait until it is stopped",
        outputs: &[("uuid", ValueType::String, "SVM uuid"), ("state", ValueType::String, "stopped")],
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
    };
    async fn plan(&self, ctx: &StepContext, p: SvmParams) -> Result<Plan, ActionError> {
        plan_svm(ctx, &p, "stopped").await
    }
    async fn run(&self, ctx: &StepContext, p: SvmParams) -> Result<Outputs, ActionError> {
        set_svm(ctx, &p, "stopped").await
    }
    async fn undo(&self, ctx: &StepContext, p: SvmParams, _: &Outputs) -> Result<(), ActionError> {
        set_svm(ctx, &p, "running").await.map(|_| ())
    }
}
