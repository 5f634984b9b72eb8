//! `kube.apply`: server-side apply of manifests with field manager `drover`.
//!
//! Objects go in install order (CRDs and namespaces first), many at once. A kind that a CRD in
//! the same apply provides is waited for until the server serves it. Conflicts with other
//! field managers and invalid objects are reported per object after the rest went in; passing
//! faults end the step as retryable (applying again is harmless).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use async_trait::async_trait;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use drover_api::{
    ActionError, ActionSpec, Outputs, ParamError, PathSegment, Plan, Progress, StepContext, TypedAction, ValueType,
};

use crate::actions::scale::fenced_namespaces;
use crate::client::{Kind, Kube, KubeError, describe};
use crate::fenced::{Fenced, Guarded, refusal};
use crate::manifests::{self, Manifest};

pub const FIELD_MANAGER: &str = "drover";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyParams {
    /// The site whose cluster receives the objects.
    pub site: String,
    /// Files or folders of YAML/JSON manifests; folders are read recursively in name order.
    /// Relative paths start at the runbook's directory.
    #[serde(default)]
    pub manifests: Vec<PathBuf>,
    /// Objects written in the runbook: mappings, or YAML text with `---` between documents.
    #[serde(default)]
    pub inline: Vec<Value>,
    /// Put every namespaced object in this namespace instead of its own.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Take over fields that another field manager owns (server-side apply `force`).
    #[serde(default)]
    pub force: bool,
    /// Objects in flight at once. Default 16.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Workloads bound for a namespace `kube.fence` marked: `refuse` (default), `hold` (write
    /// them at zero; lifting the fence brings them up) or `ignore`.
    #[serde(default)]
    pub fenced: Fenced,
}

pub struct Apply;

/// One object ready to send.
struct Prepared {
    manifest: Manifest,
    /// None when a CRD in this apply provides the kind and the server does not serve it yet.
    kind: Option<Kind>,
    namespace: Option<String>,
}

impl Prepared {
    fn describe(&self) -> String {
        format!(
            "{} ({})",
            describe(self.manifest.kind(), self.namespace.as_deref(), self.manifest.name()),
            self.manifest.origin
        )
    }
}

const CRD: &str = "CustomResourceDefinition";

/// Kinds (apiVersion, kind) that CRDs among the manifests define and serve, and whether
/// namespaced.
fn crd_kinds(list: &[Manifest]) -> BTreeMap<(String, String), bool> {
    let mut out = BTreeMap::new();
    for m in list.iter().filter(|m| m.kind() == CRD) {
        let group = m.object.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
        let kind = m.object.pointer("/spec/names/kind").and_then(Value::as_str).unwrap_or("");
        let namespaced = m.object.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
        for v in m.object.pointer("/spec/versions").and_then(Value::as_array).into_iter().flatten() {
            if v["served"] == false {
                continue;
            }
            if let Some(name) = v["name"].as_str() {
                out.insert((format!("{group}/{name}"), kind.to_string()), namespaced);
            }
        }
    }
    out
}

/// Load, order and place every object. Kinds that a CRD in this apply provides stay
/// unresolved until the CRD is in (see [`kind_of`]).
async fn prepare(kube: &Kube, p: &ApplyParams, ctx: &StepContext) -> Result<Vec<Prepared>, ActionError> {
    let paths: Vec<PathBuf> = p.manifests.iter().map(|m| ctx.resolve_path(m)).collect();
    let mut list = manifests::load(&paths, &p.inline)?;
    list.sort_by_key(|m| manifests::install_rank(m.kind()));
    let from_crds = crd_kinds(&list);
    let mut out = Vec::with_capacity(list.len());
    for mut manifest in list {
        let provided = from_crds.get(&(manifest.api_version().to_string(), manifest.kind().to_string()));
        let kind = match provided {
            Some(_) => kube.serves(manifest.api_version(), manifest.kind()).await?,
            None => Some(
                kube.kind(manifest.api_version(), manifest.kind(), false)
                    .await
                    .map_err(|e| ActionError { message: format!("{}: {}", manifest.origin, e.message), ..e })?,
            ),
        };
        let namespaced = kind.as_ref().map(|k| k.namespaced).or(provided.copied()).unwrap_or(true);
        let namespace = if namespaced {
            let ns = p.namespace.clone().or_else(|| manifest.namespace().map(String::from));
            let ns = ns.unwrap_or_else(|| kube.default_namespace().to_string());
            manifest.object["metadata"]["namespace"] = json!(ns);
            Some(ns)
        } else {
            if let Some(meta) = manifest.object["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            None
        };
        out.push(Prepared { manifest, kind, namespace });
    }
    Ok(out)
}

/// Hold or refuse workloads bound for fenced namespaces (see [`crate::fenced`]).
async fn guard_fenced(kube: &Kube, p: &ApplyParams, prepared: &mut [Prepared]) -> Result<Guarded, ActionError> {
    let targets: BTreeSet<String> = prepared.iter().filter_map(|x| x.namespace.clone()).collect();
    let fenced = fenced_namespaces(kube, &targets.into_iter().collect::<Vec<_>>()).await?;
    let mut guarded = Guarded::default();
    for x in prepared.iter_mut().filter(|x| x.namespace.as_ref().is_some_and(|ns| fenced.contains(ns))) {
        let describe = x.describe();
        guarded.object(p.fenced, describe, &mut x.manifest.object);
    }
    if !guarded.refused.is_empty() && p.fenced != Fenced::Ignore {
        return Err(refusal(&kube.origin, &fenced, &guarded.refused));
    }
    Ok(guarded)
}

fn note_guarded(ctx: &StepContext, g: &Guarded) {
    for h in &g.held {
        ctx.note(&format!("fenced namespace: {h}"));
    }
    if !g.ignored.is_empty() {
        ctx.note(&format!("started in a fenced namespace (`fenced: ignore`): {}", g.ignored.join(", ")));
    }
}

fn concurrency(p: &ApplyParams) -> usize {
    p.concurrency.unwrap_or(16).max(1)
}

/// Fields the server sets, which a comparison of desired and live objects must ignore.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v["metadata"].as_object_mut() {
        for k in ["managedFields", "resourceVersion", "generation", "uid", "creationTimestamp"] {
            meta.remove(k);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    v
}

/// Send one object; `dry` asks the server to check it without keeping it.
async fn apply_one(kube: &Kube, prepared: &Prepared, kind: &Kind, force: bool, dry: bool) -> Result<Value, KubeError> {
    let api = kube.api(kind, prepared.namespace.as_deref().unwrap_or(""));
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = force;
    params.dry_run = dry;
    let what = format!("apply {}", prepared.describe());
    let patch = Patch::Apply(&prepared.manifest.object);
    let object = kube.call(&what, || api.patch(prepared.manifest.name(), &params, &patch)).await?;
    Ok(serde_json::to_value(object).unwrap_or(Value::Null))
}

/// The object's kind; one a CRD of this apply provides is waited for until the server serves it.
async fn kind_of(kube: &Kube, x: &Prepared) -> Result<Kind, ActionError> {
    match &x.kind {
        Some(k) => Ok(k.clone()),
        None => kube.kind(x.manifest.api_version(), x.manifest.kind(), true).await,
    }
}

async fn run_one<'a>(kube: &Kube, x: &'a Prepared, force: bool) -> (&'a Prepared, Result<Value, KubeError>) {
    let result = match kind_of(kube, x).await {
        Ok(kind) => apply_one(kube, x, &kind, force, false).await,
        Err(e) => Err(KubeError::Other(e)),
    };
    (x, result)
}

/// What applying one object would do: create, update or nothing.
async fn plan_one(
    kube: &Kube,
    i: usize,
    x: &Prepared,
    force: bool,
    new_namespaces: &BTreeSet<&str>,
) -> (usize, Result<&'static str, KubeError>) {
    let Some(kind) = &x.kind else { return (i, Ok("create (its CRD is in this apply)")) };
    let api = kube.api(kind, x.namespace.as_deref().unwrap_or(""));
    let name = x.manifest.name();
    let live = match kube.call_or_absent(&format!("get {}", x.describe()), || api.get(name)).await {
        Ok(live) => live,
        Err(e) => return (i, Err(e)),
    };
    if live.is_none() && x.namespace.as_deref().is_some_and(|ns| new_namespaces.contains(ns)) {
        // Its namespace comes in this apply: check the object where a namespace exists.
        let what = format!("apply {}", x.describe());
        return (i, kube.dry_run_elsewhere(kind, &x.manifest.object, &what).await.map(|()| "create"));
    }
    let result = match apply_one(kube, x, kind, force, true).await {
        Err(e) => Err(e),
        Ok(_) if live.is_none() => Ok("create"),
        Ok(after) => {
            let before = serde_json::to_value(live).unwrap_or(Value::Null);
            Ok(if comparable(&before) == comparable(&after) { "unchanged" } else { "update" })
        }
    };
    (i, result)
}

#[async_trait]
impl TypedAction for Apply {
    type Params = ApplyParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "kube.apply",
        summary: "Server-side apply manifests (files, folders, inline) with field manager `drover`",
        outputs: &[
            ("applied", ValueType::Int, "number of objects applied"),
            ("namespaces", ValueType::List, "namespaces the objects went to"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    fn check(&self, p: &ApplyParams) -> Result<(), Vec<ParamError>> {
        let mut errors = vec![];
        if p.manifests.is_empty() && p.inline.is_empty() {
            errors.push(ParamError {
                path: vec![],
                message: "nothing to apply".into(),
                hint: Some("give `manifests:` (files or folders) or `inline:` objects".into()),
            });
        }
        if p.concurrency == Some(0) {
            errors.push(ParamError {
                path: vec![PathSegment::Key("concurrency".into())],
                message: "concurrency must be at least 1".into(),
                hint: None,
            });
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    async fn plan(&self, ctx: &StepContext, p: ApplyParams) -> Result<Plan, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let mut prepared = prepare(&kube, &p, ctx).await?;
        let fence = guard_fenced(&kube, &p, &mut prepared).await;
        let new_namespaces: BTreeSet<&str> =
            prepared.iter().filter(|x| x.manifest.kind() == "Namespace").map(|x| x.manifest.name()).collect();
        // Collected first: a lazy `map` here trips rustc's Send inference in async traits.
        let each: Vec<_> =
            prepared.iter().enumerate().map(|(i, x)| plan_one(&kube, i, x, p.force, &new_namespaces)).collect();
        let results: Vec<(usize, Result<&'static str, KubeError>)> =
            futures::stream::iter(each).buffer_unordered(concurrency(&p)).collect().await;
        let mut results = results;
        results.sort_by_key(|(i, _)| *i);
        let (mut create, mut update, mut same) = (0, 0, 0);
        let mut plan =
            Plan::default().access_check("cluster reachable", true, format!("{} at {}", kube.origin, kube.server));
        let mut changes = vec![];
        match &fence {
            Ok(g) => changes.extend(g.held.iter().map(|h| format!("fenced namespace: {h}"))),
            Err(e) => plan = plan.check("fenced namespaces stay down", false, e.message.clone()),
        }
        for (i, r) in results {
            let x = &prepared[i];
            match r {
                Ok(verb) => {
                    match verb {
                        "unchanged" => same += 1,
                        "update" => update += 1,
                        _ => create += 1,
                    }
                    if verb != "unchanged" {
                        changes.push(format!("{verb} {}", x.describe()));
                    }
                }
                Err(e) if e.is_retryable() => return Err(e.into()),
                Err(e) if e.is_refused() => {
                    plan = plan.access_check(format!("allowed to write {}", x.describe()), false, e.message())
                }
                Err(e) => plan = plan.check(format!("server-side dry run of {}", x.describe()), false, e.message()),
            }
        }
        plan.summary = format!(
            "apply {} objects to {}: {create} to create, {update} to update, {same} unchanged",
            prepared.len(),
            kube.origin
        );
        const SHOWN: usize = 50;
        let more = changes.len().saturating_sub(SHOWN);
        plan.changes = changes.into_iter().take(SHOWN).collect();
        if more > 0 {
            plan.changes.push(format!("… and {more} more"));
        }
        Ok(plan.output("applied", prepared.len()))
    }

    async fn run(&self, ctx: &StepContext, p: ApplyParams) -> Result<Outputs, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let mut prepared = prepare(&kube, &p, ctx).await?;
        note_guarded(ctx, &guard_fenced(&kube, &p, &mut prepared).await?);
        let total = prepared.len() as u64;
        let every = (total / 100).max(1);
        // CRDs and namespaces first: the rest may need them.
        let split =
            prepared.iter().position(|x| manifests::install_rank(x.manifest.kind()) > 1).unwrap_or(prepared.len());
        let mut done = 0u64;
        let mut failures: Vec<String> = vec![];
        // A 409 among them: other field managers own fields these objects set.
        let mut conflicts = false;
        let mut hints: Vec<String> = vec![];
        for wave in [&prepared[..split], &prepared[split..]] {
            let each: Vec<_> = wave.iter().map(|x| run_one(&kube, x, p.force)).collect();
            let mut results = futures::stream::iter(each).buffer_unordered(concurrency(&p));
            while let Some((x, r)) = results.next().await {
                match r {
                    Ok(_) => done += 1,
                    Err(e) if e.is_retryable() => return Err(e.into()),
                    Err(e) => {
                        conflicts |= e.status() == Some(409);
                        let e = ActionError::from(e);
                        failures.push(format!("{}: {}", x.describe(), e.message));
                        if let Some(h) = e.hint.filter(|h| !hints.contains(h)) {
                            hints.push(h);
                        }
                    }
                }
                if done.is_multiple_of(every) || done == total {
                    ctx.progress(Progress {
                        message: format!("applied {done}/{total}"),
                        done: Some(done),
                        total: Some(total),
                    });
                }
            }
        }
        if !failures.is_empty() {
            let hint = if conflicts && !p.force {
                "other field managers own some of these fields: set `force: true` to take them over, or drop the fields from the manifests; the other objects were applied".to_string()
            } else if !hints.is_empty() {
                format!("{}; the other objects were applied", hints.join("; "))
            } else {
                "fix these objects and re-run; the other objects were applied".to_string()
            };
            return Err(ActionError::permanent(format!(
                "{} of {total} objects were not applied: {}",
                failures.len(),
                failures.join("; ")
            ))
            .with_hint(hint));
        }
        // A CRD is usable by the next step only once the server serves its kinds: a step right
        // after this one would otherwise race the API server publishing them.
        let crds: Vec<Manifest> = prepared.iter().map(|x| &x.manifest).filter(|m| m.kind() == CRD).cloned().collect();
        for (api_version, kind) in crd_kinds(&crds).into_keys() {
            kube.kind(&api_version, &kind, true).await.map_err(|e| {
                ActionError::permanent(format!(
                    "{}: kind {kind} ({api_version}), from a CRD this step applied, is not served yet: {}",
                    kube.origin, e.message
                ))
                .with_hint("the CRD was applied; raise the step's `timeout:` if the API server is slow to serve it, then re-run")
            })?;
        }
        let namespaces: BTreeSet<&str> = prepared.iter().filter_map(|x| x.namespace.as_deref()).collect();
        let mut out = Outputs::new();
        out.insert("applied".into(), json!(done));
        out.insert("namespaces".into(), json!(namespaces));
        Ok(out)
    }
}
