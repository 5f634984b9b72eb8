//! `kube.delete`: delete selected objects, then (by default) wait until they are gone.
//! An empty selector is refused at load time: "delete every Deployment in the namespace" must
//! be said with a label selector or names, never by leaving them out.

use std::time::Duration;

use async_trait::async_trait;
use kube::api::DeleteParams as KubeDeleteParams;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use drover_api::{
    ActionError, ActionSpec, Outputs, ParamError, PathSegment, Plan, Progress, StepContext, TypedAction, ValueType,
};

use crate::client::Kube;
use crate::select::{Found, Selection, select};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// The site whose cluster holds the objects.
    pub site: String,
    /// Kinds to delete, as in manifests (`Deployment`, `Namespace`, `widgets.example.com`).
    pub kinds: Vec<String>,
    /// Namespaces to act in; needed for namespaced kinds.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Label selector, as for `kubectl -l`. This or `names` is required.
    #[serde(default)]
    pub labels: Option<String>,
    /// Object names. This or `labels` is required.
    #[serde(default)]
    pub names: Vec<String>,
    /// Wait until the objects are gone (namespaces take a while). Default true.
    #[serde(default = "yes")]
    pub wait: bool,
    /// What happens to dependents: `background` (default), `foreground` or `orphan`.
    #[serde(default)]
    pub propagation: Propagation,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

impl DeleteParams {
    fn selection(&self) -> Selection {
        Selection {
            namespaces: self.namespaces.clone(),
            labels: self.labels.clone(),
            names: self.names.clone(),
            kinds: self.kinds.clone(),
        }
    }
}

pub struct Delete;

async fn selected(kube: &Kube, p: &DeleteParams) -> Result<Vec<Found>, ActionError> {
    for k in &p.kinds {
        if kube.kind_named(k).await?.namespaced && p.namespaces.is_empty() {
            return Err(ActionError::permanent(format!("{k} is namespaced and no `namespaces:` are given"))
                .with_hint("name the namespaces to delete in"));
        }
    }
    select(kube, &p.selection()).await
}

#[async_trait]
impl TypedAction for Delete {
    type Params = DeleteParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "kube.delete",
        summary: "Delete selected objects (a label selector or names required) and wait until they are gone",
        outputs: &[
            ("deleted", ValueType::Int, "number of objects deleted"),
            ("objects", ValueType::List, "the objects deleted"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    fn check(&self, p: &DeleteParams) -> Result<(), Vec<ParamError>> {
        let mut errors = vec![];
        if p.kinds.is_empty() {
            errors.push(ParamError {
                path: vec![PathSegment::Key("kinds".into())],
                message: "name the kinds to delete".into(),
                hint: Some("e.g. `kinds: [Deployment, Service]`".into()),
            });
        }
        if p.labels.as_deref().is_none_or(|l| l.trim().is_empty()) && p.names.is_empty() {
            errors.push(ParamError {
                path: vec![],
                message: "refusing to delete with an empty selector".into(),
                hint: Some(
                    "give `labels:` (a label selector) or `names:`; drover never deletes everything of a kind".into(),
                ),
            });
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    async fn plan(&self, ctx: &StepContext, p: DeleteParams) -> Result<Plan, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let found = selected(&kube, &p).await?;
        let mut plan = Plan::new(format!("delete {} objects from {}", found.len(), kube.origin));
        plan.changes = found.iter().map(|f| format!("delete {}", f.describe())).collect();
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: DeleteParams) -> Result<Outputs, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let found = selected(&kube, &p).await?;
        let params = match p.propagation {
            Propagation::Background => KubeDeleteParams::background(),
            Propagation::Foreground => KubeDeleteParams::foreground(),
            Propagation::Orphan => KubeDeleteParams::orphan(),
        };
        for f in &found {
            let api = kube.api(&f.kind, f.namespace());
            kube.call_or_absent(&format!("delete {}", f.describe()), || api.delete(f.name(), &params)).await?;
        }
        if p.wait {
            let poll = drover_api::Poll::new(Duration::from_secs(2));
            for (i, f) in found.iter().enumerate() {
                let api = kube.api(&f.kind, f.namespace());
                while kube.call_or_absent(&format!("get {}", f.describe()), || api.get(f.name())).await?.is_some() {
                    ctx.progress(Progress {
                        message: format!("waiting for {} to go", f.describe()),
                        done: Some(i as u64),
                        total: Some(found.len() as u64),
                    });
                    let delay = poll.next_delay();
                    if ctx.remaining().is_some_and(|r| r <= delay) {
                        return Err(ActionError::permanent(format!(
                            "{}: {} is still there",
                            kube.origin,
                            f.describe()
                        ))
                        .with_hint("finalizers may hold it; check the object, then re-run or raise the timeout"));
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
        let mut out = Outputs::new();
        out.insert("deleted".into(), json!(found.len()));
        out.insert("objects".into(), json!(found.iter().map(Found::describe).collect::<Vec<_>>()));
        Ok(out)
    }
}
