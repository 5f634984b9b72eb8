//! `kube.restore`: bring a site's objects up on another cluster — read (Velero backup in S3,
//! local archive, manifests, live cluster) → select → clean → transform → order as a graph →
//! create what is absent, server-side apply what exists, many at once (docs/restore.md,
//! "Writes"). `plan()` runs the same pipeline with `dryRun=All` for
//! every object. Progress is checkpointed, so a resumed restore skips what it already did.

pub mod clean;
pub mod export;
pub mod graph;
mod preview;
pub mod source;
pub mod throttle;
pub mod transform;
mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use drover_api::{
    ActionError, ActionSpec, Outputs, ParamError, PathSegment, Plan, Prepared, Progress, StepContext, TypedAction,
    ValueType,
};

use crate::actions::apply::FIELD_MANAGER;
use crate::actions::scale::fenced_namespaces;
use crate::client::{Kind, Kube, describe};
use crate::fenced::{Fenced, Guarded, refusal};
use crate::labels::Selector;
use crate::velero::Limits;
use graph::{Graph, Placed};
use preview::{counts, render_counts, write_preview};
use source::Source;
use throttle::Throttle;
use transform::{Compiled, FieldChange, Match, Transform, glob_match};
use write::{Outcome, Resumed, checkpoint, created_crds, run_all};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    /// The site whose cluster receives the objects.
    pub site: String,
    /// Where the objects come from: `velero`, `archive`, `manifests` or `live`.
    pub from: Source,
    /// Namespaces to take (globs); default all.
    #[serde(default)]
    pub include_namespaces: Vec<String>,
    /// Namespaces to leave out (globs).
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// Resources to take, as `deployments.apps`, `configmaps` or a kind (`Deployment`); default all.
    #[serde(default)]
    pub include_resources: Vec<String>,
    /// Resources to leave out.
    #[serde(default)]
    pub exclude_resources: Vec<String>,
    /// Only objects matching this label selector (namespaces and cluster-scoped objects too).
    #[serde(default)]
    pub labels: Option<String>,
    /// Applied in order to every object; each listed in the preview.
    #[serde(default)]
    pub transforms: Vec<Transform>,
    /// Extra order: objects matching `then` wait for those matching `first`.
    #[serde(default)]
    pub order: Vec<OrderRule>,
    /// Objects that already exist: `update` (server-side apply, taking ownership) or `skip`.
    #[serde(default)]
    pub existing: Existing,
    /// Objects not on the cluster yet: `create` (default; the cheapest write — drover's fields
    /// are recorded as an Update, which a later restore does not prune) or `apply` (server-side
    /// apply, about a third more work for the API server; a later restore from a source that
    /// dropped a field removes it). See docs/restore.md, "Writes".
    #[serde(default)]
    pub new_objects: NewObjects,
    /// Succeed even when some objects failed (they are listed in the outputs).
    #[serde(default)]
    pub allow_partial: bool,
    /// Objects in flight at once. Default: adapted to the API server's answers (2 to 64).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// With `--dry-run`: write the transformed manifests here for review (files 0600 in 0700
    /// directories; Secret values replaced by their sizes).
    #[serde(default)]
    pub preview_dir: Option<PathBuf>,
    /// Include Secret values in the preview as they would be written.
    #[serde(default)]
    pub preview_secrets: bool,
    /// Workloads bound for a namespace `kube.fence` marked: `refuse` (default), `hold` (write
    /// them at zero; lifting the fence brings them up — a failback into the fenced primary)
    /// or `ignore`.
    #[serde(default)]
    pub fenced: Fenced,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRule {
    pub first: Match,
    pub then: Match,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Existing {
    #[default]
    Update,
    Skip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NewObjects {
    #[default]
    Create,
    Apply,
}

/// One object on its way to the standby, kept compact: the identity as fields, the body as the
/// JSON text it will be sent as (a restore of 100,000 objects holds them all at once).
#[derive(Debug, Clone)]
pub struct Restorable {
    /// Group-resource (`deployments.apps`).
    pub resource: String,
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    body: Box<RawValue>,
    /// What each transform changed (transform index, change).
    pub changes: Vec<(usize, FieldChange)>,
}

impl Restorable {
    pub fn new(resource: String, object: &Value, changes: Vec<(usize, FieldChange)>) -> Restorable {
        let s = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        Restorable {
            resource,
            api_version: s("/apiVersion"),
            kind: s("/kind"),
            namespace: object.pointer("/metadata/namespace").and_then(Value::as_str).map(String::from),
            name: s("/metadata/name"),
            body: serde_json::value::to_raw_value(object).expect("JSON values serialize"),
            changes,
        }
    }

    /// The whole object (parsed anew: for previews, rules and the rare rewrite).
    pub fn object(&self) -> Value {
        serde_json::from_str(self.body.get()).unwrap_or_default()
    }

    fn set_namespace(&mut self, namespace: Option<&str>) {
        let mut object = self.object();
        match namespace {
            Some(ns) => object["metadata"]["namespace"] = json!(ns),
            None => {
                if let Some(m) = object["metadata"].as_object_mut() {
                    m.remove("namespace");
                }
            }
        }
        *self = Restorable::new(std::mem::take(&mut self.resource), &object, std::mem::take(&mut self.changes));
    }

    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn describe(&self) -> String {
        describe(self.kind(), self.namespace(), self.name())
    }

    /// Stable identity for checkpoints: `deployments.apps/shop/web`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.resource, self.namespace().unwrap_or(""), self.name())
    }
}

/// What the read left out, by reason.
#[derive(Debug, Default)]
pub struct Collected {
    pub objects: Vec<Restorable>,
    pub left_out: BTreeMap<String, u64>,
    pub read: u64,
    pub source: String,
}

/// The select, clean and transform part of the pipeline, as a reusable filter.
pub struct Pipeline {
    include_ns: Vec<String>,
    exclude_ns: Vec<String>,
    include_res: Vec<String>,
    exclude_res: Vec<String>,
    labels: Option<Selector>,
    pub transforms: Vec<Compiled>,
}

fn resource_listed(list: &[String], resource: &str, kind: &str) -> bool {
    let plural = resource.split('.').next().unwrap_or(resource);
    list.iter().any(|r| r == resource || r == plural || r.eq_ignore_ascii_case(kind))
}

impl Pipeline {
    pub fn new(p: &RestoreParams) -> Result<Pipeline, Vec<ParamError>> {
        let labels = match &p.labels {
            Some(l) => Some(Selector::parse(l).map_err(|e| {
                vec![ParamError { path: vec![PathSegment::Key("labels".into())], message: e, hint: None }]
            })?),
            None => None,
        };
        Ok(Pipeline {
            include_ns: p.include_namespaces.clone(),
            exclude_ns: p.exclude_namespaces.clone(),
            include_res: p.include_resources.clone(),
            exclude_res: p.exclude_resources.clone(),
            labels,
            transforms: transform::compile(&p.transforms)?,
        })
    }

    /// Why an item is left out, or the cleaned and transformed object.
    pub fn admit(&self, item: crate::velero::Item) -> Result<(Restorable, Option<String>, Option<String>), String> {
        let crate::velero::Item { resource, namespace, mut object, .. } = item;
        if let Some(why) = clean::excluded(&resource, &object) {
            return Err(why.to_string());
        }
        let kind = object["kind"].as_str().unwrap_or("").to_string();
        // A namespace is selected by its own name.
        let ns = if resource == "namespaces" {
            object.pointer("/metadata/name").and_then(Value::as_str)
        } else {
            namespace.as_deref()
        };
        if let Some(ns) = ns {
            if !self.include_ns.is_empty() && !self.include_ns.iter().any(|p| glob_match(p, ns)) {
                return Err("namespace not included".into());
            }
            if self.exclude_ns.iter().any(|p| glob_match(p, ns)) {
                return Err("namespace excluded".into());
            }
        }
        if !self.include_res.is_empty() && !resource_listed(&self.include_res, &resource, &kind) {
            return Err("resource not included".into());
        }
        if resource_listed(&self.exclude_res, &resource, &kind) {
            return Err("resource excluded".into());
        }
        if let Some(sel) = &self.labels
            && !sel.matches(object.pointer("/metadata/labels"))
        {
            return Err("labels do not match".into());
        }
        let uid = object.pointer("/metadata/uid").and_then(Value::as_str).map(String::from);
        let owner = clean::controller_uid(&object);
        clean::clean(&resource, &mut object);
        let mut changes = vec![];
        for (i, t) in self.transforms.iter().enumerate() {
            changes.extend(t.apply(&resource, &mut object).into_iter().map(|c| (i, c)));
        }
        Ok((Restorable::new(resource, &object, changes), uid, owner))
    }
}

/// Read the whole source through the pipeline.
pub async fn collect(ctx: &StepContext, p: &RestoreParams, pipeline: &Pipeline) -> Result<Collected, ActionError> {
    let (mut items, source) = source::open(ctx, &p.from, Limits::default()).await?;
    let mut out = Collected { source, ..Collected::default() };
    let mut owned: Vec<(usize, String)> = vec![];
    let mut uids: HashSet<String> = HashSet::new();
    while let Some(item) = items.recv().await {
        let item = item?;
        out.read += 1;
        match pipeline.admit(item) {
            Ok((r, uid, owner)) => {
                if let Some(u) = uid {
                    uids.insert(u);
                }
                if let Some(o) = owner {
                    owned.push((out.objects.len(), o));
                }
                out.objects.push(r);
            }
            Err(why) => *out.left_out.entry(why).or_default() += 1,
        }
    }
    // Objects a restored controller recreates (ReplicaSets of Deployments, Pods of ReplicaSets).
    let drop: HashSet<usize> = owned.into_iter().filter(|(_, o)| uids.contains(o)).map(|(i, _)| i).collect();
    if !drop.is_empty() {
        *out.left_out.entry("recreated by its restored owner".into()).or_default() += drop.len() as u64;
        let mut i = 0;
        out.objects.retain(|_| {
            i += 1;
            !drop.contains(&(i - 1))
        });
    }
    Ok(out)
}

/// Hold or refuse workloads bound for fenced namespaces (see [`crate::fenced`]).
async fn guard_fenced(kube: &Kube, p: &RestoreParams, objects: &mut [Restorable]) -> Result<Guarded, ActionError> {
    let targets: BTreeSet<String> = objects.iter().filter_map(|o| o.namespace().map(String::from)).collect();
    let fenced = fenced_namespaces(kube, &targets.into_iter().collect::<Vec<_>>()).await?;
    let mut guarded = Guarded::default();
    if fenced.is_empty() {
        return Ok(guarded);
    }
    for o in objects.iter_mut().filter(|o| o.namespace().is_some_and(|ns| fenced.iter().any(|f| f == ns))) {
        let mut object = o.object();
        let before = guarded.held.len();
        guarded.object(p.fenced, o.describe(), &mut object);
        if guarded.held.len() > before {
            *o = Restorable::new(std::mem::take(&mut o.resource), &object, std::mem::take(&mut o.changes));
        }
    }
    if !guarded.refused.is_empty() && p.fenced != Fenced::Ignore {
        return Err(refusal(&kube.origin, &fenced, &guarded.refused));
    }
    Ok(guarded)
}

/// Kinds for every object; those a CRD of this restore provides may not be served yet (None).
async fn resolve(kube: &Kube, objects: &mut [Restorable]) -> Result<Vec<Option<Kind>>, ActionError> {
    let provided: BTreeSet<(String, String)> = objects
        .iter()
        .filter(|o| o.kind() == "CustomResourceDefinition")
        .flat_map(|o| {
            let crd = o.object();
            let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or("").to_string();
            let kind = crd.pointer("/spec/names/kind").and_then(Value::as_str).unwrap_or("").to_string();
            let versions: Vec<String> = crd
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v["name"].as_str().map(String::from))
                .collect();
            versions.into_iter().map(move |n| (format!("{group}/{n}"), kind.clone()))
        })
        .collect();
    let mut out = Vec::with_capacity(objects.len());
    for o in objects.iter_mut() {
        let api_version = o.api_version().to_string();
        let kind_name = o.kind().to_string();
        let k = if provided.contains(&(api_version.clone(), kind_name.clone())) {
            kube.serves(&api_version, &kind_name).await?
        } else {
            Some(
                kube.kind(&api_version, &kind_name, false)
                    .await
                    .map_err(|e| ActionError { message: format!("{}: {}", o.describe(), e.message), ..e })?,
            )
        };
        if let Some(k) = &k {
            // Manifests only guess their group-resource; discovery knows it.
            let ar = &k.resource;
            o.resource = if ar.group.is_empty() { ar.plural.clone() } else { format!("{}.{}", ar.plural, ar.group) };
            if !k.namespaced && o.namespace().is_some() {
                o.set_namespace(None);
            }
        }
        if o.namespace().is_none() && k.as_ref().is_none_or(|k| k.namespaced) && o.kind() != "Namespace" {
            o.set_namespace(Some(kube.default_namespace()));
        }
        out.push(k);
    }
    Ok(out)
}

fn build_graph(objects: &[Restorable], order: &[OrderRule]) -> Result<Graph, ActionError> {
    let placed: Vec<Placed> =
        objects.iter().map(|o| Placed { resource: &o.resource, namespace: o.namespace() }).collect();
    let mut edges = vec![];
    let parsed: Vec<Value> = if order.is_empty() { vec![] } else { objects.iter().map(Restorable::object).collect() };
    for rule in order {
        let firsts: Vec<usize> = (0..objects.len()).filter(|&i| rule.first.matches(&parsed[i])).collect();
        for then in (0..objects.len()).filter(|&i| rule.then.matches(&parsed[i])) {
            edges.extend(firsts.iter().filter(|&&f| f != then).map(|&f| (f, then)));
        }
    }
    let g = Graph::build(&placed, &edges);
    if let Some(stuck) = g.cycle() {
        let names: Vec<String> = stuck.iter().take(10).map(|&i| objects[i].describe()).collect();
        return Err(ActionError::permanent(format!("the restore order has a cycle through: {}", names.join(", ")))
            .with_hint("an `order:` rule contradicts the built-in order (or another rule); remove or narrow it"));
    }
    Ok(g)
}

pub struct Restore;

#[async_trait]
impl TypedAction for Restore {
    type Params = RestoreParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "kube.restore",
        summary: "Restore objects from a Velero backup, manifests or a live cluster: cleaned, transformed, ordered, in parallel",
        outputs: &[
            ("restored", ValueType::Int, "objects created or updated"),
            ("unchanged", ValueType::Int, "objects already as wanted"),
            ("skipped", ValueType::Int, "existing objects left alone (`existing: skip`)"),
            ("failed", ValueType::Any, "objects that could not be restored, with why"),
            ("left_out", ValueType::Any, "objects not restored by design, counted by reason"),
            ("source", ValueType::String, "what was read, e.g. the backup's name"),
            ("namespaces", ValueType::List, "namespaces restored into"),
            ("created_crds", ValueType::List, "names of the CRDs this run created (the cluster did not have them)"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site", "from.live.site", "from.velero.site"],
        rpo_output: None,
    };

    const PREPARES: Option<&'static str> =
        Some("reads its source (the live cluster, the backup or the manifests), cleaned and transformed");

    fn check(&self, p: &RestoreParams) -> Result<(), Vec<ParamError>> {
        Pipeline::new(p)?;
        if p.concurrency == Some(0) {
            return Err(vec![ParamError {
                path: vec![PathSegment::Key("concurrency".into())],
                message: "concurrency must be at least 1".into(),
                hint: None,
            }]);
        }
        Ok(())
    }

    async fn plan(&self, ctx: &StepContext, p: RestoreParams) -> Result<Plan, ActionError> {
        let pipeline = Pipeline::new(&p).map_err(|e| ActionError::permanent(e[0].message.clone()))?;
        let kube = Kube::connect(ctx, &p.site).await?;
        let mut got = collect(ctx, &p, &pipeline).await?;
        let kinds = resolve(&kube, &mut got.objects).await?;
        let fence = guard_fenced(&kube, &p, &mut got.objects).await;
        let outcomes = run_all(&kube, ctx, &p, &got.objects, &kinds, &Resumed::default(), true).await?;
        let (by_kind, by_ns) = counts(&got.objects);
        let mut tally: BTreeMap<&str, u64> = BTreeMap::new();
        let mut plan = Plan::default()
            .access_check("cluster reachable", true, format!("{} at {}", kube.origin, kube.server))
            .check("source readable", true, format!("{}: {} items read", got.source, got.read));
        match &fence {
            Ok(g) => {
                for h in &g.held {
                    plan = plan.change(format!("fenced namespace: {h}"));
                }
            }
            Err(e) => plan = plan.check("fenced namespaces stay down", false, e.message.clone()),
        }
        for (o, out) in got.objects.iter().zip(&outcomes) {
            let label = match out {
                Some(Outcome::Created) => "create",
                Some(Outcome::Updated) => "update",
                Some(Outcome::Unchanged) => "unchanged",
                Some(Outcome::Skipped) => "skip (exists)",
                Some(Outcome::Failed(why)) => {
                    plan = plan.check(format!("server-side dry run of {}", o.describe()), false, why.clone());
                    "fail"
                }
                Some(Outcome::Refused(why)) => {
                    plan = plan.access_check(format!("allowed to write {}", o.describe()), false, why.clone());
                    "refused"
                }
                None => "not reached",
            };
            *tally.entry(label).or_default() += 1;
        }
        plan.summary = format!(
            "restore {} objects from {} into {}: {}",
            got.objects.len(),
            got.source,
            kube.origin,
            tally.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
        );
        plan = plan.change(format!("by kind: {}", render_counts(&by_kind)));
        plan = plan.change(format!("by namespace: {}", render_counts(&by_ns)));
        if !got.left_out.is_empty() {
            plan = plan.change(format!("left out: {}", render_counts(&got.left_out)));
        }
        for (t, compiled) in pipeline.transforms.iter().enumerate() {
            let touched: Vec<(&Restorable, &FieldChange)> = got
                .objects
                .iter()
                .flat_map(|o| o.changes.iter().filter(|(i, _)| *i == t).map(move |(_, c)| (o, c)))
                .collect();
            plan = plan.change(format!("transform {}: {} fields changed", compiled.label, touched.len()));
            for (o, c) in touched.iter().take(10) {
                plan = plan.change(format!("  {} {}: {} → {}", o.describe(), c.path, c.before, c.after));
            }
            if touched.len() > 10 {
                plan = plan.change(format!("  … and {} more", touched.len() - 10));
            }
        }
        if let Some(dir) = &p.preview_dir {
            let dir = ctx.resolve_path(dir);
            write_preview(&dir, &got.objects, p.preview_secrets)?;
            plan = plan.change(format!(
                "transformed manifests written to {}{}",
                dir.display(),
                if p.preview_secrets { " (Secret values included)" } else { " (Secret values redacted)" }
            ));
        }
        Ok(plan.output("source", got.source))
    }

    /// The read, ahead of the turn: a restore from the live primary reads it once the primary
    /// is fenced, while the volumes still transfer; the writes wait for the turn.
    async fn prepare(&self, ctx: &StepContext, p: RestoreParams) -> Result<Option<Prepared>, ActionError> {
        let pipeline = Pipeline::new(&p).map_err(|e| ActionError::permanent(e[0].message.clone()))?;
        let got = collect(ctx, &p, &pipeline).await?;
        Ok(Some(Box::new(got)))
    }

    async fn run(&self, ctx: &StepContext, p: RestoreParams) -> Result<Outputs, ActionError> {
        let pipeline = Pipeline::new(&p).map_err(|e| ActionError::permanent(e[0].message.clone()))?;
        let kube = Kube::connect(ctx, &p.site).await?;
        let mut got = match ctx.take_prepared::<Collected>() {
            Some(mut got) => {
                got.source = format!("{} (read ahead of this step's turn)", got.source);
                got
            }
            None => collect(ctx, &p, &pipeline).await?,
        };
        let kinds = resolve(&kube, &mut got.objects).await?;
        let guarded = guard_fenced(&kube, &p, &mut got.objects).await?;
        for h in &guarded.held {
            ctx.note(&format!("fenced namespace: {h}"));
        }
        if !guarded.ignored.is_empty() {
            ctx.note(&format!("started in a fenced namespace (`fenced: ignore`): {}", guarded.ignored.join(", ")));
        }
        let resumed = Resumed::from_checkpoint(ctx.resumed_from());
        if !resumed.restored.is_empty() {
            ctx.note(&format!("resuming: {} objects were restored before the interruption", resumed.restored.len()));
        }
        let outcomes = run_all(&kube, ctx, &p, &got.objects, &kinds, &resumed, false).await?;
        ctx.checkpoint(checkpoint(&got.objects, &outcomes, &resumed)).await;
        let (mut restored, mut unchanged, mut skipped) = (0u64, 0u64, 0u64);
        let mut failed = vec![];
        let created_crds = created_crds(&got.objects, &outcomes, &resumed);
        for (o, out) in got.objects.iter().zip(&outcomes) {
            match out {
                Some(Outcome::Created | Outcome::Updated) => restored += 1,
                Some(Outcome::Unchanged) => unchanged += 1,
                Some(Outcome::Skipped) => skipped += 1,
                Some(Outcome::Failed(why) | Outcome::Refused(why)) => failed.push(format!("{}: {why}", o.describe())),
                None => failed.push(format!("{}: not attempted", o.describe())),
            }
        }
        let namespaces: BTreeSet<&str> = got.objects.iter().filter_map(Restorable::namespace).collect();
        let mut out = Outputs::new();
        out.insert("restored".into(), json!(restored));
        out.insert("unchanged".into(), json!(unchanged));
        out.insert("skipped".into(), json!(skipped));
        out.insert("failed".into(), json!(failed));
        out.insert("left_out".into(), json!(got.left_out));
        out.insert("source".into(), json!(got.source));
        out.insert("namespaces".into(), json!(namespaces));
        out.insert("created_crds".into(), json!(created_crds));
        if !failed.is_empty() && !p.allow_partial {
            let refused = outcomes.iter().any(|o| matches!(o, Some(Outcome::Refused(_))));
            let hint = if refused {
                "the site's identity may not write some of these: grant what the 403 names (`drover rbac --family restore` prints the role), then re-run"
            } else {
                "fix these and re-run (restored objects are kept and skipped on resume), or set `allow_partial: true`"
            };
            return Err(ActionError::permanent(format!(
                "{} of {} objects were not restored: {}",
                failed.len(),
                got.objects.len(),
                failed.iter().take(20).cloned().collect::<Vec<_>>().join("; ")
            ))
            .with_hint(hint));
        }
        Ok(out)
    }
}
