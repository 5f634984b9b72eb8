//! `kube.scale`: scale selected workloads to N and back.
//!
//! The replicas (or a CronJob's `suspend`) before the first scale are kept on the object itself
//! in an annotation, so `restore: true` works from any later run, on any machine, even after the
//! run that scaled down was lost. A second scale-down keeps the first remembered value.

use async_trait::async_trait;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use drover_api::{ActionError, ActionSpec, Outputs, ParamError, Plan, StepContext, TypedAction, ValueType};

use crate::client::Kube;
use crate::select::{Found, Selection, require_namespaces, select};

/// Replicas before drover scaled a Deployment, StatefulSet or ReplicaSet.
pub const REPLICAS_BEFORE: &str = "drover.io/replicas-before-scale";
/// `spec.suspend` before drover suspended a CronJob.
pub const SUSPEND_BEFORE: &str = "drover.io/suspend-before-scale";
/// The field manager of drover's scaling patches (`kubectl get -o yaml --show-managed-fields`).
pub const SCALE_MANAGER: &str = "drover-scale";
/// Label on a fenced namespace; see `kube.fence`.
pub const FENCED: &str = "drover.io/fenced";

const DEFAULT_KINDS: [&str; 4] = ["Deployment", "StatefulSet", "ReplicaSet", "CronJob"];

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleParams {
    /// The site whose cluster holds the workloads.
    pub site: String,
    /// Namespaces to act in (at least one).
    pub namespaces: Vec<String>,
    /// Label selector, as for `kubectl -l` (e.g. `app=shop,tier!=db`).
    #[serde(default)]
    pub labels: Option<String>,
    /// Only objects with these names.
    #[serde(default)]
    pub names: Vec<String>,
    /// Kinds to scale; default Deployment, StatefulSet, ReplicaSet (those without an owner)
    /// and CronJob (suspended at 0, resumed above).
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    /// The replica count to set.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Bring back the replicas remembered by an earlier scale instead.
    #[serde(default)]
    pub restore: bool,
    /// Scaling up in a namespace `kube.fence` marked: `refuse` (default) or `ignore`.
    #[serde(default)]
    pub fenced: crate::fenced::Fenced,
}

impl ScaleParams {
    fn selection(&self) -> Selection {
        Selection {
            namespaces: self.namespaces.clone(),
            labels: self.labels.clone(),
            names: self.names.clone(),
            kinds: self.kinds.clone().unwrap_or_else(|| DEFAULT_KINDS.map(String::from).to_vec()),
        }
    }
}

/// What a scale does to workloads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Replicas(u32),
    Restore,
}

/// One planned change to one workload.
#[derive(Debug, Clone)]
pub struct Change {
    pub found: Found,
    pub from: Value,
    pub to: Value,
    patch: Value,
}

impl Change {
    pub fn line(&self) -> String {
        format!("{}: {} → {}", self.found.describe(), self.from, self.to)
    }
}

/// The changes `target` needs; workloads already there, owned ReplicaSets, and (for restore)
/// workloads drover never scaled are left out.
pub fn changes(found: Vec<Found>, target: Target) -> Vec<Change> {
    let mut out = vec![];
    for f in found {
        let owned =
            f.object.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|o| !o.is_empty());
        if f.kind_name() == "ReplicaSet" && owned {
            continue;
        }
        let cron = f.kind_name() == "CronJob";
        let (field, key) = if cron { ("suspend", SUSPEND_BEFORE) } else { ("replicas", REPLICAS_BEFORE) };
        let current = f.object["spec"][field].clone();
        let current = if current.is_null() { if cron { json!(false) } else { json!(1) } } else { current };
        let remembered = f.annotation(key).and_then(|s| serde_json::from_str::<Value>(s).ok());
        let (to, remember) = match target {
            Target::Replicas(n) => (if cron { json!(n == 0) } else { json!(n) }, Some(current.clone())),
            Target::Restore => match remembered.clone() {
                Some(v) => (v, None),
                None => continue,
            },
        };
        let annotation = match (target, &remembered) {
            (Target::Restore, _) => Value::Null,
            (_, Some(_)) => Value::String(f.annotation(key).unwrap_or_default().to_string()),
            (_, None) => Value::String(remember.unwrap_or_default().to_string()),
        };
        if to == current && target != Target::Restore {
            continue;
        }
        let patch = json!({ "metadata": { "annotations": { key: annotation } }, "spec": { field: to } });
        out.push(Change { found: f, from: current, to, patch });
    }
    out
}

/// Make the changes, several at once; returns the remembered previous values by object.
pub async fn apply_changes(kube: &Kube, changes: &[Change]) -> Result<Map<String, Value>, ActionError> {
    let each: Vec<_> = changes.iter().map(|c| patch_one(kube, c)).collect();
    let results: Vec<Result<(), ActionError>> = futures::stream::iter(each).buffered(8).collect().await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(changes.iter().map(|c| (c.found.describe(), c.from.clone())).collect())
}

async fn patch_one(kube: &Kube, c: &Change) -> Result<(), ActionError> {
    let api = kube.api(&c.found.kind, c.found.namespace());
    // A named field manager, so `managedFields` (and a later apply's conflict) says it was drover.
    let params = PatchParams { field_manager: Some(SCALE_MANAGER.into()), ..PatchParams::default() };
    let patch = Patch::Merge(&c.patch);
    kube.call(&format!("scale {}", c.found.describe()), || api.patch(c.found.name(), &params, &patch)).await?;
    Ok(())
}

/// Refuse to bring workloads up in a namespace `kube.fence` marked.
pub async fn refuse_fenced(kube: &Kube, namespaces: &[String]) -> Result<(), ActionError> {
    let fenced = fenced_namespaces(kube, namespaces).await?;
    if fenced.is_empty() {
        return Ok(());
    }
    Err(ActionError::permanent(format!("{}: namespaces {} are fenced", kube.origin, fenced.join(", "))).with_hint(
        "a fenced namespace must stay down (it was failed over); lift the fence with `kube.fence` and `unfence: true` first",
    ))
}

pub async fn fenced_namespaces(kube: &Kube, namespaces: &[String]) -> Result<Vec<String>, ActionError> {
    let kind = kube.kind("v1", "Namespace", false).await?;
    let kind = &kind;
    // Read with the other steps reading namespaces now (a fleet's fences: one LIST).
    let found = futures::future::join_all(namespaces.iter().map(|ns| kube.get_cluster_scoped(kind, ns))).await;
    let mut out = vec![];
    for (ns, found) in namespaces.iter().zip(found) {
        let labels = found?.and_then(|n| n.metadata.labels.clone()).unwrap_or_default();
        let fenced = labels.get(FENCED).is_some_and(|v| v == "true");
        if fenced {
            out.push(ns.clone());
        }
    }
    Ok(out)
}

pub fn scale_outputs(changes: &[Change], previous: Map<String, Value>) -> Outputs {
    let mut out = Outputs::new();
    out.insert("changed".into(), json!(changes.len()));
    out.insert("objects".into(), json!(changes.iter().map(Change::line).collect::<Vec<_>>()));
    out.insert("previous".into(), Value::Object(previous));
    out
}

pub struct Scale;

impl Scale {
    fn target(p: &ScaleParams) -> Target {
        match p.replicas {
            Some(n) if !p.restore => Target::Replicas(n),
            _ => Target::Restore,
        }
    }
}

#[async_trait]
impl TypedAction for Scale {
    type Params = ScaleParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "kube.scale",
        summary: "Scale selected workloads to N (remembering the previous replicas), or restore them",
        outputs: &[
            ("changed", ValueType::Int, "number of workloads changed"),
            ("objects", ValueType::List, "each change, `Deployment shop/web: 3 → 0`"),
            ("previous", ValueType::Any, "the previous replicas (or CronJob suspend) by object"),
        ],
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    fn check(&self, p: &ScaleParams) -> Result<(), Vec<ParamError>> {
        require_namespaces(&p.namespaces)?;
        if p.fenced == crate::fenced::Fenced::Hold {
            return Err(vec![ParamError::at(
                &["fenced"],
                "`hold` does not apply to a scale: give `refuse` or `ignore`",
            )]);
        }
        if p.restore == p.replicas.is_some() {
            return Err(vec![ParamError {
                path: vec![],
                message: "give either `replicas: N` or `restore: true`".into(),
                hint: Some("`replicas` scales to N; `restore` brings back what an earlier scale remembered".into()),
            }]);
        }
        Ok(())
    }

    async fn plan(&self, ctx: &StepContext, p: ScaleParams) -> Result<Plan, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let found = select(&kube, &p.selection()).await?;
        let n = found.len();
        let changes = changes(found, Self::target(&p));
        let mut plan = Plan::new(format!("{} of {n} selected workloads to change", changes.len()));
        if Self::target(&p) != Target::Replicas(0) && p.fenced != crate::fenced::Fenced::Ignore {
            let fenced = fenced_namespaces(&kube, &p.namespaces).await?;
            plan = plan.check("namespaces not fenced", fenced.is_empty(), fenced.join(", "));
        }
        plan.changes = changes.iter().map(Change::line).collect();
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: ScaleParams) -> Result<Outputs, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let target = Self::target(&p);
        if target != Target::Replicas(0) && p.fenced != crate::fenced::Fenced::Ignore {
            refuse_fenced(&kube, &p.namespaces).await?;
        }
        let changes = changes(select(&kube, &p.selection()).await?, target);
        let previous = apply_changes(&kube, &changes).await?;
        Ok(scale_outputs(&changes, previous))
    }

    async fn undo(&self, ctx: &StepContext, p: ScaleParams, _outputs: &Outputs) -> Result<(), ActionError> {
        if p.restore {
            return Ok(());
        }
        let kube = Kube::connect(ctx, &p.site).await?;
        let changes = changes(select(&kube, &p.selection()).await?, Target::Restore);
        apply_changes(&kube, &changes).await.map(|_| ())
    }
}
