//! The ONTAP actions. Each reads the current state first and succeeds without a call when it
//! is already there; otherwise it acts, waits for the job, then polls the object until it
//! reaches the target state (ONTAP-REST.md §2.4: a job's success only means "started").

mod mirror;
mod state;
mod svm;
mod volume;

use mirror::lag;

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

use crate::client::{Client, enc, parse_iso_duration};

fn s(v: &Value, ptr: &str) -> String {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("").to_string()
}

fn rel_outputs(rel: &Value) -> Outputs {
    let mut o = Outputs::new();
    for (k, p) in [
        ("uuid", "/uuid"),
        ("state", "/state"),
        ("source", "/source/path"),
        ("destination", "/destination/path"),
        ("exported_snapshot", "/exported_snapshot"),
        ("lag_time", "/lag_time"),
    ] {
        o.insert(k.into(), json!(s(rel, p)));
    }
    o.insert("healthy".into(), rel.get("healthy").cloned().unwrap_or(Value::Null));
    // The data a failover would lose now, in drover's output convention for any replication.
    if let Some(lag) = lag(rel) {
        o.insert("rpo_seconds".into(), json!(lag.as_secs_f64()));
    }
    o
}

fn unhealthy(rel: &Value) -> Option<String> {
    if rel.get("healthy").and_then(Value::as_bool) != Some(false) {
        return None;
    }
    let reasons: Vec<String> = rel
        .get("unhealthy_reason")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|r| format!("{} (code {})", s(r, "/message"), s(r, "/code"))).collect())
        .unwrap_or_default();
    Some(if reasons.is_empty() { "unhealthy".into() } else { reasons.join("; ") })
}

fn transferring(rel: &Value) -> bool {
    rel.pointer("/transfer/state").and_then(Value::as_str) == Some("transferring")
}

/// Poll a relationship until `done` holds; an unhealthy relationship or the deadline ends it.
async fn wait_for(
    client: &Client,
    ctx: &StepContext,
    uuid: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value, ActionError> {
    let poll = drover_api::Poll::new(Duration::from_secs(5));
    let mut polls = 0u64;
    loop {
        let rel = client.relationship_by_uuid(uuid).await?;
        polls += 1;
        if done(&rel) {
            return Ok(rel);
        }
        if let Some(why) = unhealthy(&rel)
            && rel.pointer("/transfer/state").and_then(Value::as_str) == Some("failed")
        {
            return Err(ActionError::permanent(format!(
                "relationship {} is unhealthy while waiting for {what}: {why}",
                s(&rel, "/destination/path")
            )));
        }
        ctx.progress(Progress {
            message: format!(
                "waiting for {what}: state {}, transfer {}",
                s(&rel, "/state"),
                s(&rel, "/transfer/state")
            ),
            done: Some(polls),
            total: None,
        });
        let delay = poll.next_delay();
        if ctx.remaining().is_some_and(|r| r <= delay) {
            return Err(ActionError::permanent(format!(
                "relationship {} did not reach {what} in time (state {}, transfer {})",
                s(&rel, "/destination/path"),
                s(&rel, "/state"),
                s(&rel, "/transfer/state")
            ))
            .with_hint(
                "the change may still complete on the cluster; check it, raise the step's timeout, or `drover resume`",
            ));
        }
        tokio::time::sleep(delay).await;
    }
}

async fn patch_state(client: &Client, ctx: &StepContext, uuid: &str, body: Value) -> Result<(), ActionError> {
    match client.mutate(Method::PATCH, &format!("/api/snapmirror/relationships/{uuid}"), &body, ctx.deadline).await {
        Ok(_) => Ok(()),
        // ONTAP refuses a transition to the state a relationship is already in. That is what a
        // resumed step (or a retried PATCH whose first try went through) meets: done, not failed.
        Err(e) if e.message.contains("13303818") || e.message.contains("13303832") => {
            let want = body.get("state").and_then(Value::as_str);
            let now = client.relationship_by_uuid(uuid).await?;
            if want.is_some_and(|w| s(&now, "/state") == w) {
                ctx.note(&format!("the relationship is already {}", s(&now, "/state")));
                Ok(())
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

/// The read-only checks every relationship action starts its plan with.
/// "cluster reachable" and "ONTAP release supported" as plan checks; `Err` is a plan with a
/// failed check, to return at once (nothing else can be asked of that cluster).
async fn reach(client: &Client, plan: Plan) -> Result<Plan, Plan> {
    let cluster = match client.cluster().await {
        Ok(c) => c,
        Err(e) => return Err(plan.access_check("cluster reachable", false, e.message)),
    };
    let plan = plan.access_check(
        "cluster reachable",
        true,
        format!("{} running {}", s(&cluster, "/name"), s(&cluster, "/version/full")),
    );
    match client.release().await {
        Ok((version, definitions)) if version.to_string() == definitions.name => {
            Ok(plan.check("ONTAP release supported", true, version.to_string()))
        }
        Ok((version, definitions)) => Ok(plan.check(
            "ONTAP release supported",
            true,
            format!("{version}, requests checked against {}'s API", definitions.name),
        )),
        Err(e) => Err(plan.check("ONTAP release supported", false, e.message)),
    }
}

async fn plan_base(
    ctx: &StepContext,
    site: &str,
    destination: &str,
) -> Result<(Client, Plan, Option<Value>), ActionError> {
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
                s(r, "/source/path"),
                s(r, "/destination/path"),
                s(r, "/state"),
                if unhealthy(r).is_some() { "unhealthy" } else { "healthy" }
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelParams {
    /// The site whose ONTAP cluster holds the relationship's destination.
    pub site: String,
    /// Destination path: `svm:` for SVM-DR, `svm:volume` for a volume.
    pub destination: String,
}
