//! Relationship state changes: quiesce, break, resync, and reading a relationship.

use super::*;
use crate::model::{SvmState, VolumeType};

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
        rpo_output: None,
    };

    async fn plan(&self, ctx: &StepContext, p: QuiesceParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            plan = show(plan, &decide::quiesce(&r, &p.destination, p.abort_transfer), &p.destination);
            plan.outputs = rel_outputs(&r);
            plan.outputs.insert("state".into(), json!("paused"));
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: QuiesceParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        let previous = rel.state;
        let with_previous = |rel: &Relationship| {
            let mut out = rel_outputs(rel);
            out.insert("previous_state".into(), json!(previous.as_str()));
            out
        };
        let decision = decide::quiesce(&rel, &p.destination, p.abort_transfer);
        if decision.changes.is_empty() {
            return Ok(with_previous(&rel));
        }
        apply(&client, ctx, &p.site, &rel, &decision, None).await?;
        let rel = wait_for(&client, ctx, &rel.uuid, "paused", |r| r.state == MirrorState::Paused && !r.transferring())
            .await?;
        Ok(with_previous(&rel))
    }

    /// Resume transfers, if this step paused them and the relationship is still paused.
    async fn undo(&self, ctx: &StepContext, p: QuiesceParams, outputs: &Outputs) -> Result<(), ActionError> {
        if outputs.get("previous_state").and_then(Value::as_str) != Some("snapmirrored") {
            return Ok(()); // it was not transferring before this step: leave it as found
        }
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        if rel.state != MirrorState::Paused {
            ctx.note(&format!("{} is {} now, not paused: left as it is", p.destination, rel.state));
            return Ok(());
        }
        set_state(&client, ctx, &rel.uuid, json!({"state": "snapmirrored"})).await?;
        wait_for(&client, ctx, &rel.uuid, "snapmirrored", |r| r.state == MirrorState::Snapmirrored).await?;
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
        rpo_output: Some("rpo_seconds"),
    };

    async fn plan(&self, ctx: &StepContext, p: RelParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            plan.summary = format!("{}: {}", p.destination, r.state);
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
        rpo_output: None,
    };

    async fn plan(&self, ctx: &StepContext, p: RelParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            plan = plan.check("not uninitialized", r.state != MirrorState::Uninitialized, format!("state {}", r.state));
            plan = show(plan, &decide::break_off(&r, &p.destination), &p.destination);
            plan.outputs = rel_outputs(&r);
            plan.outputs.insert("state".into(), json!("broken_off"));
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: RelParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        let decision = decide::break_off(&rel, &p.destination);
        refused(&decision)?;
        if decision.changes.is_empty() {
            return Ok(rel_outputs(&rel));
        }
        apply(&client, ctx, &p.site, &rel, &decision, None).await?;
        let rel = wait_for(&client, ctx, &rel.uuid, "broken_off", |r| r.state == MirrorState::BrokenOff).await?;
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
async fn destination_in_service(client: &Client, rel: &Relationship) -> Result<Option<String>, OntapError> {
    let dst = &rel.destination.path;
    let (svm, vol) = dst.split_once(':').unwrap_or((dst, ""));
    if client.svm(svm).await?.is_none_or(|v| v.state != SvmState::Running) {
        return Ok(None);
    }
    if vol.is_empty() {
        return Ok(Some(format!("the destination SVM `{svm}` is running and serving clients")));
    }
    let writable = client.volume(svm, vol).await?.is_some_and(|v| v.vtype == Some(VolumeType::Rw));
    Ok(writable.then(|| format!("the destination volume `{dst}` is writable and its SVM is running")))
}

/// The resync's decision, from the relationship and (when broken off) its destination; with
/// why the destination is in service, if it is.
async fn decide_resync(
    client: &Client,
    rel: &Relationship,
    p: &ResyncParams,
) -> Result<(Decision, Option<String>), OntapError> {
    let broken = rel.state == MirrorState::BrokenOff;
    let in_service = if broken { destination_in_service(client, rel).await? } else { None };
    let dr_svm = match broken && p.discard_destination_writes && rel.is_svm_dr() {
        true => client.svm(rel.destination.path.trim_end_matches(':')).await?,
        false => None,
    };
    let decision =
        decide::resync(rel, &p.destination, in_service.as_deref(), dr_svm.as_ref(), p.discard_destination_writes);
    Ok((decision, in_service))
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
        rpo_output: None,
    };

    async fn plan(&self, ctx: &StepContext, p: ResyncParams) -> Result<Plan, ActionError> {
        let (client, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            let (decision, in_service) = decide_resync(&client, &r, &p).await?;
            if r.state == MirrorState::BrokenOff {
                plan = plan.check(
                    "no destination writes would be lost",
                    decision.refusal.is_none(),
                    in_service.unwrap_or_else(|| "the destination is not in service".into()),
                );
                plan = plan.check("common snapshot", !r.exported().is_empty(), r.exported());
            }
            plan = show(plan, &decision, &p.destination);
            plan.outputs = rel_outputs(&r);
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: ResyncParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        let (decision, _) = decide_resync(&client, &rel, &p).await?;
        refused(&decision)?;
        if decision.changes.is_empty() && !rel.transferring() {
            return Ok(rel_outputs(&rel));
        }
        let quick = p.quick_resync.then(|| ("quick_resync", json!(true)));
        apply(&client, ctx, &p.site, &rel, &decision, quick).await?;
        let rel = wait_for(&client, ctx, &rel.uuid, "snapmirrored", |r| {
            r.state == MirrorState::Snapmirrored && !r.transferring()
        })
        .await?;
        Ok(rel_outputs(&rel))
    }
}
