//! The ONTAP actions. Each reads the current state first and succeeds without a call when it
//! is already there; otherwise it acts, waits for the job, then polls the object until it
//! reaches the target state (ONTAP-REST.md §2.4: a job's success only means "started").

mod decide;
mod list;
mod mirror;
mod state;
mod svm;
mod volume;

pub use list::List;
pub use mirror::{Release, Reverse, Update, Wait};
pub use state::{Break, Get, Quiesce, Resync};
pub use svm::{SvmStart, SvmStop};
pub use volume::{VolumeClone, VolumeDelete};

use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use drover_api::{
    ActionError, ActionSpec, HumanDuration, Outputs, Plan, Progress, StepContext, TypedAction, ValueType,
};

use crate::client::Client;
use crate::error::{ALREADY_IN_STATE, OntapError};
use crate::model::{MirrorState, Relationship, TransferState};
use decide::{Change, Decision};

fn rel_outputs(rel: &Relationship) -> Outputs {
    let mut o = Outputs::new();
    o.insert("uuid".into(), json!(rel.uuid));
    o.insert("state".into(), json!(rel.state.as_str()));
    o.insert("source".into(), json!(rel.source.path));
    o.insert("destination".into(), json!(rel.destination.path));
    o.insert("exported_snapshot".into(), json!(rel.exported()));
    o.insert("lag_time".into(), json!(rel.lag_time.as_deref().unwrap_or("")));
    o.insert("healthy".into(), rel.healthy.map(Value::Bool).unwrap_or(Value::Null));
    // The data a failover would lose now: the action declares this output as its RPO.
    if let Some(lag) = rel.lag() {
        o.insert("rpo_seconds".into(), json!(lag.as_secs_f64()));
    }
    o
}

fn transfer_label(rel: &Relationship) -> &'static str {
    rel.transfer_state().map(TransferState::as_str).unwrap_or("")
}

/// Poll a relationship until `done` holds; an unhealthy relationship or the deadline ends it.
async fn wait_for(
    client: &Client,
    ctx: &StepContext,
    uuid: &str,
    what: &str,
    done: impl Fn(&Relationship) -> bool,
) -> Result<Relationship, ActionError> {
    // Readings come from the cluster's watcher, together with every other wait's.
    let mut readings = crate::watch::Subscription::<Relationship>::new(client, uuid);
    let poll = drover_api::Poll::new(Duration::from_secs(5)).at_least(crate::watch::LEAST_PAUSE);
    loop {
        let rel = readings.next().await?;
        if done(&rel) {
            return Ok(rel);
        }
        if let Some(why) = rel.unhealthy()
            && rel.transfer_state() == Some(TransferState::Failed)
        {
            return Err(ActionError::permanent(format!(
                "relationship {} is unhealthy while waiting for {what}: {why}",
                rel.destination.path
            )));
        }
        ctx.progress(Progress {
            message: format!("waiting for {what}: state {}, transfer {}", rel.state, transfer_label(&rel)),
            done: None,
            total: None,
        });
        if ctx.remaining().is_some_and(|r| r <= poll.next_delay()) {
            return Err(ActionError::permanent(format!(
                "relationship {} did not reach {what} in time (state {}, transfer {})",
                rel.destination.path,
                rel.state,
                transfer_label(&rel)
            ))
            .with_hint(
                "the change may still complete on the cluster; check it, raise the step's timeout, or `drover resume`",
            ));
        }
    }
}

/// PATCH a relationship's state. ONTAP refuses a transition to the state a relationship is
/// already in: that is what a resumed step (or a retried PATCH whose first try went
/// through) meets — done, not failed.
async fn set_state(client: &Client, ctx: &StepContext, uuid: &str, body: Value) -> Result<(), ActionError> {
    let err =
        match client.mutate(Method::PATCH, &format!("/api/snapmirror/relationships/{uuid}"), &body, ctx.deadline).await
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
    if !err.code().is_some_and(|c| ALREADY_IN_STATE.contains(&c)) {
        return Err(err.into());
    }
    let want = body.get("state").and_then(Value::as_str).and_then(MirrorState::parse);
    let now = client.relationship_by_uuid(uuid).await?;
    if want == Some(now.state) {
        ctx.note(&format!("the relationship is already {}", now.state));
        Ok(())
    } else {
        Err(err.into())
    }
}

/// Make a decision's changes to a relationship (abort or await its transfer, stop the DR
/// SVM, PATCH its state), then wait until it reaches `target` with no transfer running.
async fn apply(
    client: &Client,
    ctx: &StepContext,
    site: &str,
    rel: &Relationship,
    decision: &Decision,
    patch_extra: Option<(&str, Value)>,
) -> Result<(), ActionError> {
    for change in &decision.changes {
        match change {
            Change::AbortTransfer(tuuid) => {
                client
                    .mutate(
                        Method::PATCH,
                        &format!("/api/snapmirror/relationships/{}/transfers/{tuuid}", rel.uuid),
                        &json!({"state": "aborted"}),
                        ctx.deadline,
                    )
                    .await?;
                ctx.note(&format!("aborted transfer {tuuid} of {}", rel.destination.path));
            }
            Change::AwaitTransfer => {}
            Change::StopSvm(svm) => {
                ctx.note(&format!("stopped SVM `{svm}` to resync it (discard_destination_writes: true)"));
                svm::set_svm(
                    ctx,
                    &svm::SvmParams { site: site.to_string(), svm: svm.clone() },
                    crate::model::SvmState::Stopped,
                )
                .await?;
            }
            Change::SetState(target) => {
                let mut body = json!({"state": target.as_str()});
                if let Some((k, v)) = &patch_extra {
                    body[*k] = v.clone();
                }
                set_state(client, ctx, &rel.uuid, body).await?;
            }
            Change::SetSvm(_) => unreachable!("SVM changes are made by the SVM actions"),
        }
    }
    Ok(())
}

/// The read-only checks every relationship action starts its plan with.
/// "cluster reachable" and "ONTAP release supported" as plan checks; `Err` is a plan with a
/// failed check, to return at once (nothing else can be asked of that cluster).
async fn reach(client: &Client, plan: Plan) -> Result<Plan, Plan> {
    let cluster = match client.cluster().await {
        Ok(c) => c,
        Err(e) => return Err(plan.access_check("cluster reachable", false, e.to_string())),
    };
    let plan =
        plan.access_check("cluster reachable", true, format!("{} running {}", cluster.name, cluster.version.full));
    match client.release().await {
        Ok((version, definitions)) if version.to_string() == definitions.name => {
            Ok(plan.check("ONTAP release supported", true, version.to_string()))
        }
        Ok((version, definitions)) => Ok(plan.check(
            "ONTAP release supported",
            true,
            format!("{version}, requests checked against {}'s API", definitions.name),
        )),
        Err(e) => Err(plan.check("ONTAP release supported", false, e.to_string())),
    }
}

async fn plan_base(
    ctx: &StepContext,
    site: &str,
    destination: &str,
) -> Result<(Client, Plan, Option<Relationship>), ActionError> {
    let client = Client::connect(ctx, site)?;
    let mut plan = Plan::default();
    if client.insecure {
        plan = plan.check("TLS verification", true, "OFF (insecure: true) — the cluster's identity is not checked");
    }
    plan = match reach(&client, plan).await {
        Ok(plan) => plan,
        Err(plan) => return Ok((client, plan, None)),
    };
    let rel = client.relationship(destination).await?;
    plan = match &rel {
        Some(r) => plan.check(
            "relationship exists",
            true,
            format!(
                "{} → {}: {}, {}",
                r.source.path,
                r.destination.path,
                r.state,
                if r.unhealthy().is_some() { "unhealthy" } else { "healthy" }
            ),
        ),
        None => plan.check(
            "relationship exists",
            false,
            format!("no relationship with destination `{destination}` on `{site}`"),
        ),
    };
    Ok((client, plan, rel))
}

/// A decision as the plan shows it: summary and changes (a refusal is the run's to make).
fn show(mut plan: Plan, decision: &Decision, target: &str) -> Plan {
    plan.summary = decision.summary.clone();
    for line in decision.change_lines(target) {
        plan = plan.change(line);
    }
    plan
}

/// A decision's refusal as the error the run returns.
fn refused(decision: &Decision) -> Result<(), ActionError> {
    match &decision.refusal {
        Some(r) => Err(ActionError::permanent(r.message.clone()).with_hint(r.hint.clone())),
        None => Ok(()),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelParams {
    /// The site whose ONTAP cluster holds the relationship's destination.
    pub site: String,
    /// Destination path: `svm:` for SVM-DR, `svm:volume` for a volume.
    pub destination: String,
}
