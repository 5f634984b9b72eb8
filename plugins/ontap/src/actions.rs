//! The ONTAP actions. Each reads the current state first and succeeds without a call when it
//! is already there; otherwise it acts, waits for the job, then polls the object until it
//! reaches the target state (ONTAP-REST.md §2.4: a job's success only means "started").

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

// ---------------------------------------------------------------------------------------

/// `ontap.snapmirror.quiesce`
pub struct Quiesce;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuiesceParams {
    pub site: String,
    /// Destination path: `svm:` for SVM-DR, `svm:volume` for a volume.
    pub destination: String,
    /// Abort a running transfer instead of waiting for it.
    #[serde(default)]
    pub abort_transfer: bool,
}

#[async_trait]
impl TypedAction for Quiesce {
    type Params = QuiesceParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.quiesce",
        summary: "Pause a SnapMirror relationship (no further transfers); optionally abort a running transfer",
        outputs: &[
            ("uuid", ValueType::String, "relationship uuid"),
            ("state", ValueType::String, "paused"),
            (
                "previous_state",
                ValueType::String,
                "the state before: undo resumes transfers only if it was `snapmirrored`",
            ),
            ("exported_snapshot", ValueType::String, "newest common snapshot"),
        ],
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
    };

    async fn plan(&self, ctx: &StepContext, p: QuiesceParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            let state = s(&r, "/state");
            plan.summary = match state.as_str() {
                "paused" | "broken_off" => format!("{}: already {state}", p.destination),
                "uninitialized" => format!("{}: uninitialized, nothing to quiesce", p.destination),
                _ => format!("quiesce {} ({state} → paused)", p.destination),
            };
            if !matches!(state.as_str(), "paused" | "broken_off" | "uninitialized") {
                plan = plan.change(format!("PATCH state paused on {}", p.destination));
            }
            if transferring(&r) {
                plan = plan.change(if p.abort_transfer {
                    "abort the running transfer"
                } else {
                    "wait for the running transfer"
                });
            }
            plan.outputs = rel_outputs(&r);
            plan.outputs.insert("state".into(), json!("paused"));
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: QuiesceParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        let uuid = s(&rel, "/uuid");
        let state = s(&rel, "/state");
        let with_previous = |rel: &Value| {
            let mut out = rel_outputs(rel);
            out.insert("previous_state".into(), json!(state));
            out
        };
        if matches!(state.as_str(), "paused" | "broken_off" | "uninitialized") {
            return Ok(with_previous(&rel));
        }
        if transferring(&rel) && p.abort_transfer {
            let tuuid = s(&rel, "/transfer/uuid");
            client
                .mutate(
                    Method::PATCH,
                    &format!("/api/snapmirror/relationships/{uuid}/transfers/{tuuid}"),
                    &json!({"state": "aborted"}),
                    ctx.deadline,
                )
                .await?;
            ctx.note(&format!("aborted transfer {tuuid} of {}", p.destination));
        }
        patch_state(&client, ctx, &uuid, json!({"state": "paused"})).await?;
        let rel = wait_for(&client, ctx, &uuid, "paused", |r| s(r, "/state") == "paused" && !transferring(r)).await?;
        Ok(with_previous(&rel))
    }

    /// Resume transfers, if this step paused them and the relationship is still paused.
    async fn undo(&self, ctx: &StepContext, p: QuiesceParams, outputs: &Outputs) -> Result<(), ActionError> {
        if outputs.get("previous_state").and_then(Value::as_str) != Some("snapmirrored") {
            return Ok(()); // it was not transferring before this step: leave it as found
        }
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        if s(&rel, "/state") != "paused" {
            ctx.note(&format!("{} is {} now, not paused: left as it is", p.destination, s(&rel, "/state")));
            return Ok(());
        }
        let uuid = s(&rel, "/uuid");
        patch_state(&client, ctx, &uuid, json!({"state": "snapmirrored"})).await?;
        wait_for(&client, ctx, &uuid, "snapmirrored", |r| s(r, "/state") == "snapmirrored").await?;
        ctx.note(&format!("resumed transfers of {}", p.destination));
        Ok(())
    }
}

/// `ontap.snapmirror.get`
pub struct Get;

#[async_trait]
impl TypedAction for Get {
    type Params = RelParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.get",
        summary: "Read a relationship: state, health, lag (changes nothing; a runbook branches on it)",
        outputs: &[
            ("uuid", ValueType::String, "relationship uuid"),
            ("state", ValueType::String, "snapmirrored, paused, broken_off, uninitialized, ..."),
            ("source", ValueType::String, "source path"),
            ("destination", ValueType::String, "destination path"),
            ("healthy", ValueType::Any, "ONTAP's health flag"),
            ("lag_time", ValueType::String, "lag (ISO 8601)"),
            ("rpo_seconds", ValueType::Number, "the lag in seconds: data a failover would lose now"),
            ("exported_snapshot", ValueType::String, "newest common snapshot"),
        ],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &["site"],
    };

    async fn plan(&self, ctx: &StepContext, p: RelParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            plan.summary = format!("{}: {}", p.destination, s(&r, "/state"));
            plan.outputs = rel_outputs(&r);
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: RelParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        Ok(rel_outputs(&client.require_relationship(&p.destination).await?))
    }
}

/// `ontap.snapmirror.break`
pub struct Break;

#[async_trait]
impl TypedAction for Break {
    type Params = RelParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.break",
        summary: "Break a SnapMirror / SVM-DR relationship: the destination becomes writable (refuses `uninitialized`)",
        outputs: &[
            ("uuid", ValueType::String, "relationship uuid"),
            ("state", ValueType::String, "broken_off"),
            ("exported_snapshot", ValueType::String, "the common snapshot the destination holds"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
    };

    async fn plan(&self, ctx: &StepContext, p: RelParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            let state = s(&r, "/state");
            plan = plan.check("not uninitialized", state != "uninitialized", format!("state {state}"));
            plan.summary = if state == "broken_off" {
                format!("{}: already broken_off", p.destination)
            } else {
                format!("break {} ({state} → broken_off)", p.destination)
            };
            if state != "broken_off" {
                plan = plan
                    .change(format!("PATCH state broken_off on {}: the destination becomes writable", p.destination));
            }
            plan.outputs = rel_outputs(&r);
            plan.outputs.insert("state".into(), json!("broken_off"));
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: RelParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        let uuid = s(&rel, "/uuid");
        match s(&rel, "/state").as_str() {
            "broken_off" => return Ok(rel_outputs(&rel)),
            "uninitialized" => {
                return Err(ActionError::permanent(format!(
                    "{} is uninitialized: there is no data to fail over to",
                    p.destination
                ))
                .with_hint("initialize the relationship (a baseline transfer) before it can be broken"));
            }
            _ => {}
        }
        patch_state(&client, ctx, &uuid, json!({"state": "broken_off"})).await?;
        let rel = wait_for(&client, ctx, &uuid, "broken_off", |r| s(r, "/state") == "broken_off").await?;
        Ok(rel_outputs(&rel))
    }
}

/// `ontap.snapmirror.resync`
pub struct Resync;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResyncParams {
    pub site: String,
    /// Destination path: `svm:` for SVM-DR, `svm:volume` for a volume.
    pub destination: String,
    /// Resync even though the destination is in service: data written there since the
    /// common snapshot is lost. The classic failback trap; say so only on purpose.
    #[serde(default)]
    pub discard_destination_writes: bool,
    /// Skip the storage-efficiency rebuild (FlexVol and SVM-DR).
    #[serde(default)]
    pub quick_resync: bool,
}

/// Is the destination in service (so a resync would discard what clients wrote there)?
async fn destination_in_service(client: &Client, rel: &Value) -> Result<Option<String>, ActionError> {
    let dst = s(rel, "/destination/path");
    let (svm, vol) = dst.split_once(':').unwrap_or((&dst, ""));
    let svm_state = client.svm(svm).await?.map(|v| s(&v, "/state")).unwrap_or_default();
    if svm_state != "running" {
        return Ok(None);
    }
    if vol.is_empty() {
        return Ok(Some(format!("the destination SVM `{svm}` is running and serving clients")));
    }
    let vtype = client.volume(svm, vol).await?.map(|v| s(&v, "/type")).unwrap_or_default();
    Ok((vtype == "rw").then(|| format!("the destination volume `{dst}` is writable and its SVM is running")))
}

#[async_trait]
impl TypedAction for Resync {
    type Params = ResyncParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.resync",
        summary: "Resync (or resume) a relationship; refuses when it would discard writes made at the destination",
        outputs: &[
            ("uuid", ValueType::String, "relationship uuid"),
            ("state", ValueType::String, "snapmirrored"),
            ("exported_snapshot", ValueType::String, "newest common snapshot"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
    };

    async fn plan(&self, ctx: &StepContext, p: ResyncParams) -> Result<Plan, ActionError> {
        let (client, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            let state = s(&r, "/state");
            if state == "broken_off" {
                let in_service = destination_in_service(&client, &r).await?;
                plan = plan.check(
                    "no destination writes would be lost",
                    in_service.is_none() || p.discard_destination_writes,
                    in_service.unwrap_or_else(|| "the destination is not in service".into()),
                );
                plan =
                    plan.check("common snapshot", !s(&r, "/exported_snapshot").is_empty(), s(&r, "/exported_snapshot"));
            }
            plan.summary = match state.as_str() {
                "snapmirrored" => format!("{}: already snapmirrored", p.destination),
                _ => format!("resync {} ({state} → snapmirrored)", p.destination),
            };
            if state == "broken_off" && p.discard_destination_writes && p.destination.ends_with(':') {
                plan = plan.change(format!(
                    "stop SVM {} if it runs (ONTAP resyncs an SVM-DR destination only when stopped)",
                    p.destination.trim_end_matches(':')
                ));
            }
            if state != "snapmirrored" {
                plan = plan.change(format!("PATCH state snapmirrored on {}", p.destination));
            }
            plan.outputs = rel_outputs(&r);
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: ResyncParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        let uuid = s(&rel, "/uuid");
        let state = s(&rel, "/state");
        if state == "snapmirrored" && !transferring(&rel) {
            return Ok(rel_outputs(&rel));
        }
        if state == "broken_off"
            && !p.discard_destination_writes
            && let Some(why) = destination_in_service(&client, &rel).await?
        {
            return Err(ActionError::permanent(format!(
                "refusing to resync {}: {why}; a resync rolls the destination back to the common snapshot and loses those writes",
                p.destination
            ))
            .with_hint("to keep them, reverse the relationship instead (ontap.snapmirror.reverse); to discard them on purpose, set `discard_destination_writes: true`"));
        }
        // ONTAP resyncs an SVM-DR destination only while its SVM is stopped: discarding its
        // writes on purpose means stopping it first.
        let dst = s(&rel, "/destination/path");
        if state == "broken_off" && p.discard_destination_writes && dst.ends_with(':') {
            let svm = SvmParams { site: p.site.clone(), svm: dst.trim_end_matches(':').to_string() };
            if client.svm(&svm.svm).await?.is_some_and(|v| s(&v, "/state") != "stopped") {
                ctx.note(&format!("stopped SVM `{}` to resync it (discard_destination_writes: true)", svm.svm));
                set_svm(ctx, &svm, "stopped").await?;
            }
        }
        if state != "snapmirrored" {
            let mut body = json!({"state": "snapmirrored"});
            if p.quick_resync {
                body["quick_resync"] = json!(true);
            }
            patch_state(&client, ctx, &uuid, body).await?;
        }
        let rel =
            wait_for(&client, ctx, &uuid, "snapmirrored", |r| s(r, "/state") == "snapmirrored" && !transferring(r))
                .await?;
        Ok(rel_outputs(&rel))
    }
}

/// `ontap.snapmirror.update`
pub struct Update;

#[async_trait]
impl TypedAction for Update {
    type Params = RelParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.update",
        summary: "Start a SnapMirror transfer (update) and wait until it has succeeded",
        outputs: &[
            ("uuid", ValueType::String, "relationship uuid"),
            ("exported_snapshot", ValueType::String, "the snapshot just transferred"),
            ("lag_time", ValueType::String, "lag after the update"),
            ("rpo_seconds", ValueType::Number, "the lag in seconds: data a failover would lose now"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
    };

    async fn plan(&self, ctx: &StepContext, p: RelParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            let state = s(&r, "/state");
            plan = plan.check(
                "relationship can transfer",
                matches!(state.as_str(), "snapmirrored" | "uninitialized"),
                format!("state {state}"),
            );
            plan.summary = format!("transfer the latest data to {} (lag {})", p.destination, s(&r, "/lag_time"));
            plan = plan.change(format!("POST a transfer on {}", p.destination));
            plan.outputs = rel_outputs(&r);
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: RelParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        let uuid = s(&rel, "/uuid");
        let before = s(&rel, "/exported_snapshot");
        if !transferring(&rel) {
            client
                .send(Method::POST, &format!("/api/snapmirror/relationships/{uuid}/transfers"), Some(&json!({})))
                .await?;
        }
        let rel = wait_for(&client, ctx, &uuid, "the transfer to finish", |r| !transferring(r)).await?;
        match rel.pointer("/transfer/state").and_then(Value::as_str) {
            Some("success") if s(&rel, "/exported_snapshot") != before || before.is_empty() => Ok(rel_outputs(&rel)),
            Some("success") => Ok(rel_outputs(&rel)),
            other => Err(ActionError::retryable(format!(
                "transfer to {} ended {}",
                p.destination,
                other.unwrap_or("without a state")
            ))
            .with_hint("check the relationship's health and the network between the clusters")),
        }
    }
}

/// `ontap.snapmirror.wait`
pub struct Wait;

#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// healthy and no transfer running
    Healthy,
    /// `state` equals the given state
    State,
    /// lag below `max_lag`
    Lag,
    /// no transfer running
    Idle,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    pub site: String,
    pub destination: String,
    /// What to wait for: `healthy` (default), `state`, `lag` or `idle`.
    #[serde(default = "healthy")]
    pub until: Until,
    /// For `until: state`.
    #[serde(default)]
    pub state: Option<String>,
    /// For `until: lag` (and checked by `plan()`): the RPO the operator accepts.
    #[serde(default)]
    pub max_lag: Option<HumanDuration>,
}

fn healthy() -> Until {
    Until::Healthy
}

fn lag(rel: &Value) -> Option<Duration> {
    parse_iso_duration(&s(rel, "/lag_time"))
}

#[async_trait]
impl TypedAction for Wait {
    type Params = WaitParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.wait",
        summary: "Wait until a relationship is healthy, in a given state, idle, or its lag is below max_lag",
        outputs: &[
            ("uuid", ValueType::String, "relationship uuid"),
            ("state", ValueType::String, "state"),
            ("lag_time", ValueType::String, "lag (ISO 8601)"),
            ("rpo_seconds", ValueType::Number, "the lag in seconds: data a failover would lose now"),
            ("exported_snapshot", ValueType::String, "newest common snapshot"),
            ("healthy", ValueType::Any, "health"),
        ],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &["site"],
    };

    fn check(&self, p: &WaitParams) -> Result<(), Vec<drover_api::ParamError>> {
        match p.until {
            Until::State if p.state.is_none() => {
                Err(vec![drover_api::ParamError::at(&["state"], "`until: state` needs `state:`")])
            }
            Until::Lag if p.max_lag.is_none() => {
                Err(vec![drover_api::ParamError::at(&["max_lag"], "`until: lag` needs `max_lag:`")])
            }
            _ => Ok(()),
        }
    }

    async fn plan(&self, ctx: &StepContext, p: WaitParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            plan = plan.check("healthy", unhealthy(&r).is_none(), unhealthy(&r).unwrap_or_else(|| "yes".into()));
            if let (Until::State, Some(want)) = (p.until, &p.state) {
                let now = s(&r, "/state");
                plan = plan.check(format!("state {want}"), &now == want, format!("now {now}"));
            }
            if let Some(max) = p.max_lag {
                let l = lag(&r);
                plan = plan.check(
                    "lag within max_lag (RPO)",
                    l.is_some_and(|l| l <= max.0),
                    format!(
                        "lag {} (max {max})",
                        l.map(|l| humantime::format_duration(l).to_string()).unwrap_or_else(|| "unknown".into())
                    ),
                );
            }
            plan.summary = format!("wait for {} to be {:?}", p.destination, p.until).to_lowercase();
            plan.outputs = rel_outputs(&r);
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: WaitParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        let uuid = s(&rel, "/uuid");
        let target = p.state.clone().unwrap_or_default();
        let max = p.max_lag.map(|m| m.0).unwrap_or(Duration::MAX);
        let until = p.until;
        let what = match (until, p.max_lag) {
            (Until::Lag, _) | (_, None) => format!("{until:?}").to_lowercase(),
            (_, Some(m)) => format!("{} with lag within {m}", format!("{until:?}").to_lowercase()),
        };
        // `max_lag` bounds every kind of wait: a relationship in the right state but too far
        // behind is not what the operator accepted.
        let rel = wait_for(&client, ctx, &uuid, &what, move |r| {
            let reached = match until {
                Until::Healthy => unhealthy(r).is_none() && !transferring(r),
                Until::State => s(r, "/state") == target,
                Until::Lag => true,
                Until::Idle => !transferring(r),
            };
            reached && (max == Duration::MAX || lag(r).is_some_and(|l| l <= max))
        })
        .await?;
        Ok(rel_outputs(&rel))
    }
}

/// `ontap.snapmirror.reverse`
pub struct Reverse;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReverseParams {
    /// The site holding the (broken) relationship's destination today, e.g. the DR site.
    pub site: String,
    /// Its destination path today, e.g. `svm_dr:`.
    pub destination: String,
    /// The site of the original source, which becomes the new destination.
    pub source_site: String,
}

#[async_trait]
impl TypedAction for Reverse {
    type Params = ReverseParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.reverse",
        summary: "Reverse resync for failback: the destination becomes the source; writes made there are kept",
        outputs: &[
            ("uuid", ValueType::String, "the reversed relationship"),
            ("source", ValueType::String, "its source path"),
            ("destination", ValueType::String, "its destination path"),
            ("state", ValueType::String, "snapmirrored"),
            ("exported_snapshot", ValueType::String, "newest common snapshot"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site", "source_site"],
    };

    async fn plan(&self, ctx: &StepContext, p: ReverseParams) -> Result<Plan, ActionError> {
        let (client, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        match rel {
            Some(r) => {
                let state = s(&r, "/state");
                plan = plan.check("relationship broken off", state == "broken_off", format!("state {state}"));
                let peers = client.records("/api/cluster/peers?fields=name,status").await.unwrap_or_default();
                let peer_ok = peers.iter().any(|x| s(x, "/status/state") == "available");
                plan = plan.check(
                    "cluster peer available",
                    peer_ok,
                    if peer_ok { "available".into() } else { "no available cluster peer".to_string() },
                );
                plan.summary = format!(
                    "reverse {} → {} (resync towards `{}`)",
                    s(&r, "/destination/path"),
                    s(&r, "/source/path"),
                    p.source_site
                );
                plan = plan.change(format!("PATCH {} with swapped paths and state snapmirrored", p.destination));
                plan.outputs = rel_outputs(&r);
                plan.outputs.insert("source".into(), json!(s(&r, "/destination/path")));
                plan.outputs.insert("destination".into(), json!(s(&r, "/source/path")));
            }
            None => {
                // Perhaps it was reversed already: look on the original source's cluster.
                let other = Client::connect(ctx, &p.source_site)?;
                let reversed = other
                    .records(&format!(
                        "/api/snapmirror/relationships?source.path={}&fields=uuid,state,source,destination",
                        enc(&p.destination)
                    ))
                    .await?;
                if let Some(r) = reversed.first() {
                    plan.checks.retain(|c| c.name != "relationship exists");
                    plan.summary =
                        format!("already reversed: {} → {}", s(r, "/source/path"), s(r, "/destination/path"));
                    plan.outputs = rel_outputs(r);
                }
            }
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: ReverseParams) -> Result<Outputs, ActionError> {
        let here = Client::connect(ctx, &p.site)?;
        let there = Client::connect(ctx, &p.source_site)?;
        let find_reversed = || async {
            let q = format!(
                "/api/snapmirror/relationships?source.path={}&fields=uuid,state,source,destination",
                enc(&p.destination)
            );
            there.records(&q).await.map(|r| r.into_iter().next())
        };
        if let Some(rel) = here.relationship(&p.destination).await? {
            let uuid = s(&rel, "/uuid");
            let body = json!({
                "source": { "path": s(&rel, "/destination/path") },
                "destination": { "path": s(&rel, "/source/path") },
                "state": "snapmirrored",
            });
            here.mutate(Method::PATCH, &format!("/api/snapmirror/relationships/{uuid}"), &body, ctx.deadline).await?;
        }
        // The reversed relationship now belongs to the original source's cluster.
        let poll = drover_api::Poll::new(Duration::from_secs(5));
        let rel = loop {
            if let Some(r) = find_reversed().await? {
                break r;
            }
            let delay = poll.next_delay();
            if ctx.remaining().is_some_and(|r| r <= delay) {
                return Err(ActionError::permanent(format!(
                    "no relationship with source `{}` appeared on `{}`",
                    p.destination, p.source_site
                ))
                .with_hint("check the relationship on both clusters"));
            }
            tokio::time::sleep(delay).await;
        };
        let uuid = s(&rel, "/uuid");
        let rel = wait_for(&there, ctx, &uuid, "the reverse resync", |r| {
            s(r, "/state") == "snapmirrored" && !transferring(r)
        })
        .await?;
        Ok(rel_outputs(&rel))
    }
}

/// `ontap.snapmirror.release`
pub struct Release;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseParams {
    pub site: String,
    pub destination: String,
    /// Keep the common snapshots (so the relationship can be re-created and resynced).
    #[serde(default = "yes")]
    pub keep_snapshots: bool,
}

fn yes() -> bool {
    true
}

#[async_trait]
impl TypedAction for Release {
    type Params = ReleaseParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.release",
        summary: "Delete a relationship (on both sides), keeping the common snapshots unless told otherwise",
        outputs: &[("uuid", ValueType::String, "the released relationship")],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
    };

    async fn plan(&self, ctx: &StepContext, p: ReleaseParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        plan.checks.retain(|c| c.name != "relationship exists");
        plan.summary = match &rel {
            Some(_) => format!(
                "release {}{}",
                p.destination,
                if p.keep_snapshots { " (keeping common snapshots)" } else { "" }
            ),
            None => format!("{}: no relationship, nothing to release", p.destination),
        };
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: ReleaseParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let mut out = Outputs::new();
        let Some(rel) = client.relationship(&p.destination).await? else { return Ok(out) };
        let uuid = s(&rel, "/uuid");
        let flag = if p.keep_snapshots { "?source_info_only=true" } else { "" };
        client
            .mutate(Method::DELETE, &format!("/api/snapmirror/relationships/{uuid}{flag}"), &json!({}), ctx.deadline)
            .await?;
        out.insert("uuid".into(), json!(uuid));
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SvmParams {
    pub site: String,
    /// The SVM's name on that cluster.
    pub svm: String,
}

async fn set_svm(ctx: &StepContext, p: &SvmParams, target: &str) -> Result<Outputs, ActionError> {
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

// ---------------------------------------------------------------------------------------

/// `ontap.volume.clone`
pub struct VolumeClone;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneParams {
    pub site: String,
    /// SVM of the parent volume (the clone is made in the same SVM).
    pub svm: String,
    /// The parent volume, e.g. the DR copy `vol1_dst`.
    pub parent: String,
    /// Name of the clone.
    pub name: String,
    /// Parent snapshot; default: the newest snapshot of the parent (the replicated one).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Mount the clone here (`/vol1_rehearsal`).
    #[serde(default)]
    pub junction_path: Option<String>,
}

fn clone_outputs(v: &Value) -> Outputs {
    let mut o = Outputs::new();
    o.insert("name".into(), json!(s(v, "/name")));
    o.insert("uuid".into(), json!(s(v, "/uuid")));
    o.insert("junction_path".into(), json!(s(v, "/nas/path")));
    o.insert("snapshot".into(), json!(s(v, "/clone/parent_snapshot/name")));
    o
}

async fn newest_snapshot(client: &Client, parent: &Value) -> Result<Option<String>, ActionError> {
    let q = format!(
        "/api/storage/volumes/{}/snapshots?fields=name,create_time&order_by=create_time%20desc&max_records=1",
        s(parent, "/uuid")
    );
    let page = client.get(&q).await?;
    Ok(page.pointer("/records/0/name").and_then(Value::as_str).map(str::to_string))
}

#[async_trait]
impl TypedAction for VolumeClone {
    type Params = CloneParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.volume.clone",
        summary: "Create a FlexClone of a volume from a snapshot (the replicated one by default), optionally mounted",
        outputs: &[
            ("name", ValueType::String, "clone name"),
            ("uuid", ValueType::String, "clone uuid"),
            ("junction_path", ValueType::String, "where it is mounted"),
            ("snapshot", ValueType::String, "the parent snapshot"),
        ],
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
    };

    async fn plan(&self, ctx: &StepContext, p: CloneParams) -> Result<Plan, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let mut plan = match reach(&client, Plan::new(format!("clone {}:{} as {}", p.svm, p.parent, p.name))).await {
            Ok(plan) => plan,
            Err(plan) => return Ok(plan),
        };
        let parent = client.volume(&p.svm, &p.parent).await?;
        plan = plan.check("parent volume exists", parent.is_some(), format!("{}:{}", p.svm, p.parent));
        if let Some(parent) = parent {
            let snap = match &p.snapshot {
                Some(snap) => Some(snap.clone()),
                None => newest_snapshot(&client, &parent).await?,
            };
            plan = plan.check(
                "parent snapshot",
                snap.is_some(),
                snap.clone().unwrap_or_else(|| "the parent has no snapshot".into()),
            );
            if client.volume(&p.svm, &p.name).await?.is_some() {
                plan.summary = format!("clone {} exists already", p.name);
            } else {
                plan = plan.change(format!(
                    "create FlexClone {} from {}@{}",
                    p.name,
                    p.parent,
                    snap.clone().unwrap_or_default()
                ));
            }
            plan = plan.output("name", p.name.clone()).output("snapshot", snap.unwrap_or_default());
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: CloneParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        if let Some(existing) = client.volume(&p.svm, &p.name).await? {
            if s(&existing, "/clone/parent_volume/name") == p.parent {
                return Ok(clone_outputs(&existing));
            }
            return Err(ActionError::permanent(format!(
                "a volume `{}` exists in `{}` and is not a clone of `{}`",
                p.name, p.svm, p.parent
            ))
            .with_hint("choose another clone name"));
        }
        let parent = client.volume(&p.svm, &p.parent).await?.ok_or_else(|| {
            ActionError::permanent(format!("no volume `{}` in SVM `{}` on `{}`", p.parent, p.svm, p.site))
                .with_hint("check `svm` and `parent`")
        })?;
        let snapshot = match &p.snapshot {
            Some(snap) => snap.clone(),
            None => newest_snapshot(&client, &parent).await?.ok_or_else(|| {
                ActionError::permanent(format!("volume `{}` has no snapshot to clone from", p.parent))
                    .with_hint("wait for a SnapMirror transfer, or name a snapshot")
            })?,
        };
        let mut body = json!({
            "name": p.name,
            "svm": { "name": p.svm },
            "clone": { "is_flexclone": true, "parent_volume": { "name": p.parent }, "parent_snapshot": { "name": snapshot } },
            "type": "rw",
        });
        if let Some(j) = &p.junction_path {
            body["nas"] = json!({ "path": j });
        }
        client.mutate(Method::POST, "/api/storage/volumes?return_records=true", &body, ctx.deadline).await?;
        let created = client
            .volume(&p.svm, &p.name)
            .await?
            .ok_or_else(|| ActionError::retryable(format!("clone `{}` was created but is not visible yet", p.name)))?;
        Ok(clone_outputs(&created))
    }

    async fn undo(&self, ctx: &StepContext, p: CloneParams, _: &Outputs) -> Result<(), ActionError> {
        delete_volume(ctx, &p.site, &p.svm, &p.name).await
    }
}

async fn delete_volume(ctx: &StepContext, site: &str, svm: &str, name: &str) -> Result<(), ActionError> {
    let client = Client::connect(ctx, site)?;
    let Some(v) = client.volume(svm, name).await? else { return Ok(()) };
    let uuid = s(&v, "/uuid");
    if !s(&v, "/nas/path").is_empty() {
        client
            .mutate(Method::PATCH, &format!("/api/storage/volumes/{uuid}"), &json!({"nas": {"path": ""}}), ctx.deadline)
            .await?;
    }
    match client.mutate(Method::DELETE, &format!("/api/storage/volumes/{uuid}"), &json!({}), ctx.deadline).await {
        Ok(_) => Ok(()),
        // Gone in between: the goal is reached.
        Err(e) if e.message.contains("(code 4)") => Ok(()),
        Err(e) => Err(e),
    }
}

/// `ontap.volume.delete`
pub struct VolumeDelete;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeParams {
    pub site: String,
    pub svm: String,
    /// The volume (typically a rehearsal clone) to unmount and delete.
    pub name: String,
}

#[async_trait]
impl TypedAction for VolumeDelete {
    type Params = VolumeParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.volume.delete",
        summary: "Unmount and delete a volume (a rehearsal clone); already gone is success",
        outputs: &[],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
    };

    async fn plan(&self, ctx: &StepContext, p: VolumeParams) -> Result<Plan, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let reached = match reach(&client, Plan::default()).await {
            Ok(plan) => plan,
            Err(plan) => return Ok(plan),
        };
        let mut plan = match client.volume(&p.svm, &p.name).await? {
            Some(_) => Plan::new(format!("delete {}:{}", p.svm, p.name))
                .change(format!("unmount and delete {}:{}", p.svm, p.name)),
            None => Plan::new(format!("{}:{} is already gone", p.svm, p.name)),
        };
        plan.checks.splice(0..0, reached.checks);
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: VolumeParams) -> Result<Outputs, ActionError> {
        delete_volume(ctx, &p.site, &p.svm, &p.name).await?;
        Ok(Outputs::new())
    }
}
