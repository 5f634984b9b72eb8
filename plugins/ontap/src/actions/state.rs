//! Relationship state changes: quiesce, break, resync, and reading a relationship.

use super::svm::{SvmParams, set_svm};
use super::*;

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
