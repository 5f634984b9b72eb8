//! `kube.fence`: fencing the primary in a planned failover. The namespaces are marked first
//! (label `drover.io/fenced=true`, and who fenced them and when), so `kube.scale` refuses to
//! bring anything up there, then the selected workloads go to zero, remembering their
//! replicas. `unfence: true` (and the step's undo) clears the mark and brings them back.

use async_trait::async_trait;
use kube::api::{Patch, PatchParams};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use drover_api::{ActionError, ActionSpec, Outputs, ParamError, Plan, StepContext, TypedAction, ValueType};

use crate::actions::scale::{FENCED, Target, apply_changes, changes, fenced_namespaces, scale_outputs};
use crate::client::Kube;
use crate::select::{Selection, require_namespaces, select};

/// The field manager of the fence's mark on a namespace.
pub const FENCE_MANAGER: &str = "drover-fence";
/// Who fenced a namespace, and when.
pub const FENCED_BY: &str = "drover.io/fenced-by";

const DEFAULT_KINDS: [&str; 4] = ["Deployment", "StatefulSet", "ReplicaSet", "CronJob"];

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FenceParams {
    /// The site to fence (the primary).
    pub site: String,
    /// Namespaces to fence (at least one).
    pub namespaces: Vec<String>,
    /// Only workloads matching this label selector go down (the mark covers the namespace).
    #[serde(default)]
    pub labels: Option<String>,
    /// Kinds to scale down; default Deployment, StatefulSet, ReplicaSet, CronJob.
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    /// Lift the fence: clear the mark and restore the remembered replicas.
    #[serde(default)]
    pub unfence: bool,
}

impl FenceParams {
    fn selection(&self) -> Selection {
        Selection {
            namespaces: self.namespaces.clone(),
            labels: self.labels.clone(),
            names: vec![],
            kinds: self.kinds.clone().unwrap_or_else(|| DEFAULT_KINDS.map(String::from).to_vec()),
        }
    }
}

async fn mark(kube: &Kube, namespaces: &[String], by: Option<String>) -> Result<(), ActionError> {
    let kind = kube.kind("v1", "Namespace", false).await?;
    let api = kube.api(&kind, "");
    let (label, note) = match by {
        Some(by) => (json!("true"), json!(by)),
        None => (Value::Null, Value::Null),
    };
    let patch = json!({ "metadata": { "labels": { FENCED: label }, "annotations": { FENCED_BY: note } } });
    let params = PatchParams { field_manager: Some(FENCE_MANAGER.into()), ..PatchParams::default() };
    let patch = Patch::Merge(&patch);
    for ns in namespaces {
        kube.call(&format!("mark namespace {ns}"), || api.patch(ns, &params, &patch)).await?;
    }
    Ok(())
}

async fn fence(ctx: &StepContext, p: &FenceParams) -> Result<Outputs, ActionError> {
    let kube = Kube::connect(ctx, &p.site).await?;
    let by = format!(
        "run {} step {} at {}",
        ctx.run_id,
        ctx.step_id,
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    // The workloads are read while the mark is written (a tier's fences are its first turn);
    // none is scaled down before the mark is on.
    let selection = p.selection();
    let (marked, found) = tokio::join!(mark(&kube, &p.namespaces, Some(by)), select(&kube, &selection));
    marked?;
    let changes = changes(found?, Target::Replicas(0));
    let previous = apply_changes(&kube, &changes).await?;
    let mut out = scale_outputs(&changes, previous);
    out.insert("namespaces".into(), json!(p.namespaces));
    Ok(out)
}

async fn unfence(ctx: &StepContext, p: &FenceParams) -> Result<Outputs, ActionError> {
    let kube = Kube::connect(ctx, &p.site).await?;
    mark(&kube, &p.namespaces, None).await?;
    let changes = changes(select(&kube, &p.selection()).await?, Target::Restore);
    let previous = apply_changes(&kube, &changes).await?;
    let mut out = scale_outputs(&changes, previous);
    out.insert("namespaces".into(), json!(p.namespaces));
    Ok(out)
}

pub struct Fence;

#[async_trait]
impl TypedAction for Fence {
    type Params = FenceParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "kube.fence",
        summary: "Fence namespaces of the primary: mark them and scale their workloads to zero (undo lifts it)",
        outputs: &[
            ("namespaces", ValueType::List, "the namespaces fenced (or unfenced)"),
            ("changed", ValueType::Int, "number of workloads scaled"),
            ("objects", ValueType::List, "each change, `Deployment shop/web: 3 → 0`"),
            ("previous", ValueType::Any, "the previous replicas by object"),
        ],
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    fn check(&self, p: &FenceParams) -> Result<(), Vec<ParamError>> {
        require_namespaces(&p.namespaces)
    }

    async fn plan(&self, ctx: &StepContext, p: FenceParams) -> Result<Plan, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let fenced = fenced_namespaces(&kube, &p.namespaces).await?;
        let target = if p.unfence { Target::Restore } else { Target::Replicas(0) };
        let changes = changes(select(&kube, &p.selection()).await?, target);
        let verb = if p.unfence { "unfence" } else { "fence" };
        let mut plan = Plan::new(format!("{verb} {} on {}", p.namespaces.join(", "), kube.origin));
        for ns in &p.namespaces {
            let already = fenced.contains(ns);
            if already != p.unfence {
                continue;
            }
            plan = plan.change(format!("{verb} namespace {ns}"));
        }
        plan.changes.extend(changes.iter().map(|c| c.line()));
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: FenceParams) -> Result<Outputs, ActionError> {
        if p.unfence { unfence(ctx, &p).await } else { fence(ctx, &p).await }
    }

    async fn undo(&self, ctx: &StepContext, p: FenceParams, _outputs: &Outputs) -> Result<(), ActionError> {
        if p.unfence { fence(ctx, &p).await.map(|_| ()) } else { unfence(ctx, &p).await.map(|_| ()) }
    }
}
