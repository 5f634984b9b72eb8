//! `kube.restore`: bring a site's objects up on another cluster — read (Velero backup in S3,
//! local archive, manifests, live cluster) → select → clean → transform → order as a graph →
//! create what is absent, server-side apply what exists, many at once (docs/restore.md,
//! "Writes"). `plan()` runs the same pipeline with `dryRun=All` for
//! every object. Progress is checkpointed, so a resumed restore skips what it already did.

pub mod clean;
pub mod export;
pub mod graph;
pub mod source;
pub mod throttle;
pub mod transform;

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
    ActionError, ActionSpec, Outputs, ParamError, PathSegment, Plan, Progress, StepContext, TypedAction, ValueType,
};

use crate::actions::apply::FIELD_MANAGER;
use crate::actions::scale::fenced_namespaces;
use crate::client::{Kind, Kube, describe};
use crate::fenced::{Fenced, Guarded, refusal};
use crate::labels::Selector;
use crate::velero::Limits;
use graph::{Graph, Placed};
use source::Source;
use throttle::Throttle;
use transform::{Compiled, FieldChange, Match, Transform, glob_match};

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

/// What happened to one object.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Created,
    Updated,
    Unchanged,
    Skipped,
    Failed(String),
    /// The identity may not write it: a missing permission, not a bad object.
    Refused(String),
}

/// Every object that exists already, by key — one paged LIST per namespace and kind instead
/// of a GET per object, so a run costs about one request per object.
pub type Versions = HashMap<String, Live>;

/// What a restore needs to know of an object already there.
#[derive(Debug, Clone)]
pub struct Live {
    pub version: String,
    /// An earlier restore created it by POST (see [`created_by_drover`]).
    pub created_by_drover: bool,
    /// Its [`digest`] as listed.
    pub digest: u64,
}

async fn existing_versions(
    kube: &Kube,
    objects: &[Restorable],
    kinds: &[Option<Kind>],
    concurrency: usize,
) -> Result<Versions, ActionError> {
    use kube::api::ListParams;
    // Nothing exists yet in a namespace the cluster does not have (the usual case on a standby).
    // Each target namespace is asked for by name (no cluster-wide list is needed), many at once.
    let ns_kind = kube.kind("v1", "Namespace", false).await?;
    let ns_api = kube.api(&ns_kind, "");
    let targets: BTreeSet<&str> = objects.iter().filter_map(Restorable::namespace).collect();
    let mut present: HashSet<String> = HashSet::new();
    let asked: Vec<_> = targets
        .into_iter()
        .map(|ns| ns.to_string())
        .map(|ns| {
            let ns_api = &ns_api;
            async move {
                let answer = kube.call_or_absent(&format!("get namespace {ns}"), || ns_api.get_metadata(&ns)).await;
                (ns, answer)
            }
        })
        .collect();
    let mut answers = futures::stream::iter(asked).buffer_unordered(concurrency.max(1));
    while let Some((ns, answer)) = answers.next().await {
        match answer {
            Ok(Some(_)) => {
                present.insert(ns);
            }
            Ok(None) => {}
            // Not allowed to read Namespace objects: look inside as if it were there.
            Err(e) if e.message.contains("(403 Forbidden)") => {
                present.insert(ns);
            }
            Err(e) => return Err(e),
        }
    }
    let mut wanted: BTreeMap<(String, String), Kind> = BTreeMap::new();
    for (o, k) in objects.iter().zip(kinds) {
        if o.namespace().is_some_and(|ns| !present.contains(ns)) {
            continue;
        }
        if let Some(k) = k {
            wanted.entry((o.resource.clone(), o.namespace().unwrap_or("").to_string())).or_insert_with(|| k.clone());
        }
    }
    let lists: Vec<_> = wanted
        .into_iter()
        .map(|((resource, ns), kind)| async move {
            let api = kube.api(&kind, &ns);
            let mut found = vec![];
            let mut token: Option<String> = None;
            loop {
                let mut params = ListParams::default().limit(500);
                if let Some(t) = &token {
                    params = params.continue_token(t);
                }
                let what = format!("list {resource} in {}", if ns.is_empty() { "the cluster" } else { &ns });
                let Some(page) = kube.call_or_absent(&what, || api.list(&params)).await? else { break };
                token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
                for item in page.items {
                    let name = item.metadata.name.clone().unwrap_or_default();
                    let version = item.metadata.resource_version.clone().unwrap_or_default();
                    let live =
                        Live { version, created_by_drover: created_by_drover(&item.metadata), digest: digest(&item) };
                    found.push((format!("{resource}/{ns}/{name}"), live));
                }
                if token.is_none() {
                    break;
                }
            }
            Ok::<_, ActionError>(found)
        })
        .collect();
    let mut out = HashMap::new();
    let mut results = futures::stream::iter(lists).buffer_unordered(concurrency.max(1));
    while let Some(r) = results.next().await {
        out.extend(r?);
    }
    Ok(out)
}

/// Apply (or dry-run) one object. A run knows what exists from `existing`; a dry run reads
/// each object to tell an update from no change.
async fn restore_one(
    kube: &Kube,
    o: &Restorable,
    kind: Option<&Kind>,
    p: &RestoreParams,
    existing: Option<&Versions>,
) -> Result<Outcome, ActionError> {
    let dry = existing.is_none();
    let kind = match kind {
        Some(k) => k.clone(),
        None if dry => return Ok(Outcome::Created),
        None => kube.kind(o.api_version(), o.kind(), true).await?,
    };
    let api = kube.api(&kind, o.namespace().unwrap_or(""));
    let (live, mut version, before_digest) = match existing {
        Some(map) => {
            let found = map.get(&o.key());
            (None, found.map(|l| l.version.clone()), found.map(|l| l.digest))
        }
        None => {
            let live = kube.call_or_absent(&format!("get {}", o.describe()), || api.get(o.name())).await?;
            let version = live.as_ref().map(|l| l.metadata.resource_version.clone().unwrap_or_default());
            (live, version, None)
        }
    };
    if version.is_some() && p.existing == Existing::Skip {
        return Ok(Outcome::Skipped);
    }
    // Known to be absent: create it, the cheapest write (see docs/restore.md, "Writes").
    if !dry && version.is_none() && p.new_objects == NewObjects::Create {
        let ns = o.namespace().unwrap_or("");
        match kube.call(&format!("create {}", o.describe()), || kube.create_raw(&kind, ns, &o.body)).await {
            Ok(()) => return Ok(Outcome::Created),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) if crate::client::is_refused(&e) => return Ok(Outcome::Refused(e.message)),
            // Someone created it since the list: it is an existing object after all.
            Err(e) if e.message.ends_with("(409 AlreadyExists)") => {
                if p.existing == Existing::Skip {
                    return Ok(Outcome::Skipped);
                }
                version = Some(String::new());
            }
            Err(e) => return Ok(Outcome::Failed(e.message)),
        }
    }
    if version.is_some() && o.resource == "persistentvolumes" {
        let current = match &live {
            Some(l) => Some(l.clone()),
            None => kube.call_or_absent(&format!("get {}", o.describe()), || api.get(o.name())).await?,
        };
        let current = serde_json::to_value(current).unwrap_or_default();
        if let Some(why) = claimed_elsewhere(&current, &o.object()) {
            return Ok(Outcome::Failed(why));
        }
    }
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = true;
    params.dry_run = dry;
    let patch = Patch::Apply(&*o.body);
    let result = kube.call(&format!("apply {}", o.describe()), || api.patch(o.name(), &params, &patch)).await;
    match result {
        Err(e) if e.is_retryable() => Err(e),
        // Its namespace comes first: check it where a namespace exists.
        Err(e) if dry && version.is_none() && o.namespace().is_some() && e.message.contains("(404 NotFound)") => {
            match kube.dry_run_elsewhere(&kind, &o.object(), &format!("apply {}", o.describe())).await {
                Ok(()) => Ok(Outcome::Created),
                Err(e) if e.is_retryable() => Err(e),
                Err(e) if crate::client::is_refused(&e) => Ok(Outcome::Refused(e.message)),
                Err(e) => Ok(Outcome::Failed(e.message)),
            }
        }
        Err(e) => Ok(Outcome::Failed(e.message)),
        Ok(_) if version.is_none() => Ok(Outcome::Created),
        Ok(after) if !dry => {
            // The API server does not write a no-op apply: the version stays. A write that
            // changed only who owns which field (drover's first apply) changed no content.
            let same = after.metadata.resource_version == version || before_digest.is_some_and(|d| d == digest(&after));
            Ok(if same { Outcome::Unchanged } else { Outcome::Updated })
        }
        Ok(after) => {
            let before = content(serde_json::to_value(live).unwrap_or_default());
            let after = content(serde_json::to_value(after).unwrap_or_default());
            Ok(if before == after { Outcome::Unchanged } else { Outcome::Updated })
        }
    }
}

/// An object without what every write or controller changes (versions, field owners,
/// status): what an operator would call its content.
fn content(mut v: Value) -> Value {
    if let Some(m) = v["metadata"].as_object_mut() {
        for k in ["managedFields", "resourceVersion", "generation", "uid", "creationTimestamp"] {
            m.remove(k);
        }
    }
    if let Some(o) = v.as_object_mut() {
        // A list's items come without their type.
        for k in ["status", "apiVersion", "kind"] {
            o.remove(k);
        }
    }
    v
}

/// A fingerprint of an object's [`content`], whatever order its fields came in.
fn digest(object: &impl serde::Serialize) -> u64 {
    use std::hash::{Hash, Hasher};
    fn feed(v: &Value, h: &mut impl Hasher) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_unstable();
                h.write_u8(b'{');
                for k in keys {
                    k.hash(h);
                    feed(&m[k], h);
                }
                h.write_u8(b'}');
            }
            Value::Array(items) => {
                h.write_u8(b'[');
                items.iter().for_each(|i| feed(i, h));
                h.write_u8(b']');
            }
            other => other.to_string().hash(h),
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    feed(&content(serde_json::to_value(object).unwrap_or_default()), &mut h);
    h.finish()
}

/// Whether an earlier restore created this object with a POST: the API server then records
/// drover's fields as an `Update`, which a later apply does not prune.
fn created_by_drover(meta: &kube::api::ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|e| {
        e.manager.as_deref() == Some(FIELD_MANAGER)
            && e.operation.as_deref() == Some("Update")
            && e.subresource.as_deref().unwrap_or("").is_empty()
    })
}

/// Whether restoring this PersistentVolume would take it from the claim it is bound to now:
/// a restore renamed into another namespace on the same cluster (`shop` → `shop-dr`) must not
/// move a volume out from under the running app. Server-side apply would keep the live
/// claim's uid beside the new namespace — a binding that points at nothing.
fn claimed_elsewhere(live: &Value, wanted: &Value) -> Option<String> {
    let claim = |v: &Value| {
        let r = v.pointer("/spec/claimRef")?;
        Some(format!("{}/{}", r["namespace"].as_str().unwrap_or(""), r["name"].as_str().unwrap_or("")))
    };
    let (now, then) = (claim(live)?, claim(wanted)?);
    let bound = live.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    (now != then && bound).then(|| {
        format!(
            "PersistentVolume {} is bound to claim {now}; restoring it for {then} would take it from that claim \
             (rename the volume with a `volumes` transform, or leave PersistentVolumes out with `exclude_resources`)",
            live.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?")
        )
    })
}

/// Results by object index, shared by the concurrent tasks.
struct Tally {
    outcomes: Mutex<Vec<Option<Outcome>>>,
    fatal: Mutex<Option<ActionError>>,
}

async fn run_all(
    kube: &Kube,
    ctx: &StepContext,
    p: &RestoreParams,
    objects: &[Restorable],
    kinds: &[Option<Kind>],
    resumed: &Resumed,
    dry: bool,
) -> Result<Vec<Option<Outcome>>, ActionError> {
    let graph = build_graph(objects, &p.order)?;
    let existing =
        if dry { None } else { Some(existing_versions(kube, objects, kinds, p.concurrency.unwrap_or(16)).await?) };
    let existing = existing.as_ref();
    let tally = Tally { outcomes: Mutex::new(vec![None; objects.len()]), fatal: Mutex::new(None) };
    let total = objects.len() as u64;
    let started = Instant::now();
    let last_checkpoint = Mutex::new(Instant::now());
    let finished = std::sync::atomic::AtomicU64::new(0);
    let updated_after_create = std::sync::atomic::AtomicU64::new(0);
    let throttle = match p.concurrency {
        Some(width) => Throttle::fixed(width),
        None => Throttle::adaptive(),
    };
    graph
        .run(
            || throttle.width(),
            |i| {
                let (tally, finished, last_checkpoint, throttle) = (&tally, &finished, &last_checkpoint, &throttle);
                let updated_after_create = &updated_after_create;
                async move {
                    let o = &objects[i];
                    let outcome = if resumed.restored.contains(&o.key()) {
                        Ok(Outcome::Unchanged)
                    } else {
                        let sent = Instant::now();
                        let outcome = restore_one(kube, o, kinds[i].as_ref(), p, existing).await;
                        throttle.answered(sent.elapsed(), kube.passing_faults());
                        let created_earlier =
                            existing.and_then(|m| m.get(&o.key())).is_some_and(|l| l.created_by_drover);
                        if created_earlier && matches!(outcome, Ok(Outcome::Updated)) {
                            updated_after_create.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        outcome
                    };
                    // A CRD this run created is journaled at once: after a crash, the rehearsal's
                    // cleanup must still know it was ours.
                    let created_crd = o.resource == CRD && matches!(outcome, Ok(Outcome::Created));
                    let go_on = match outcome {
                        Ok(out) => {
                            tally.outcomes.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(out);
                            true
                        }
                        Err(e) => {
                            tally.fatal.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                            false
                        }
                    };
                    let n = finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n.is_multiple_of((total / 100).max(1)) || n == total {
                        let rate = n as f64 / started.elapsed().as_secs_f64().max(0.001);
                        ctx.progress(Progress {
                            message: format!("objects ({rate:.0}/s, {} at a time)", throttle.width()),
                            done: Some(n),
                            total: Some(total),
                        });
                    }
                    if !dry {
                        let due = {
                            let mut last = last_checkpoint.lock().unwrap_or_else(|e| e.into_inner());
                            let due = last.elapsed() >= Duration::from_secs(2);
                            if due {
                                *last = Instant::now();
                            }
                            due
                        };
                        if due || created_crd {
                            let value =
                                checkpoint(objects, &tally.outcomes.lock().unwrap_or_else(|e| e.into_inner()), resumed);
                            ctx.checkpoint(value).await;
                        }
                    }
                    go_on
                }
            },
        )
        .await;
    let updated_after_create = updated_after_create.into_inner();
    if updated_after_create > 0 {
        ctx.note(&format!(
            "{updated_after_create} objects an earlier restore created were updated: fields their source no longer has \
             were kept (restore with `new_objects: apply` from the start to have them removed; docs/restore.md, \"Writes\")"
        ));
    }
    let (low, high) = throttle.range();
    if !dry && p.concurrency.is_none() {
        tracing::info!(target: "drover::kube", "restore wrote {low} to {high} objects at a time, as the API server's answers allowed");
    }
    if let Some(e) = tally.fatal.into_inner().unwrap_or_else(|e| e.into_inner()) {
        if !dry {
            let outcomes = tally.outcomes.lock().unwrap_or_else(|e| e.into_inner()).clone();
            ctx.checkpoint(checkpoint(objects, &outcomes, resumed)).await;
        }
        return Err(e);
    }
    Ok(tally.outcomes.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// What an interrupted run of this step had done, from its last checkpoint.
#[derive(Default)]
struct Resumed {
    /// Keys of the objects already restored.
    restored: HashSet<String>,
    /// CRDs it created (the cluster did not have them), so `created_crds` stays whole.
    created_crds: Vec<String>,
}

impl Resumed {
    fn from_checkpoint(c: Option<&Value>) -> Resumed {
        let strings = |field: &str| -> Vec<String> {
            c.and_then(|c| c[field].as_array())
                .map(|a| a.iter().filter_map(|k| k.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        Resumed { restored: strings("restored").into_iter().collect(), created_crds: strings("created_crds") }
    }
}

const CRD: &str = "customresourcedefinitions.apiextensions.k8s.io";

/// CRDs created: by the interrupted run, then by this one.
fn created_crds(objects: &[Restorable], outcomes: &[Option<Outcome>], resumed: &Resumed) -> Vec<String> {
    let mut names = resumed.created_crds.clone();
    for (o, out) in objects.iter().zip(outcomes) {
        if o.resource == CRD && matches!(out, Some(Outcome::Created)) && !names.iter().any(|n| n == o.name()) {
            names.push(o.name().to_string());
        }
    }
    names
}

/// The keys of every object restored so far, and the CRDs created.
fn checkpoint(objects: &[Restorable], outcomes: &[Option<Outcome>], resumed: &Resumed) -> Value {
    let done: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Some(Outcome::Created | Outcome::Updated | Outcome::Unchanged | Outcome::Skipped)))
        .map(|(i, _)| objects[i].key())
        .collect();
    json!({ "restored": done, "created_crds": created_crds(objects, outcomes, resumed) })
}

/// Counts per kind and per namespace.
fn counts(objects: &[Restorable]) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (mut by_kind, mut by_ns) = (BTreeMap::new(), BTreeMap::new());
    for o in objects {
        *by_kind.entry(o.kind().to_string()).or_insert(0) += 1;
        *by_ns.entry(o.namespace().unwrap_or("(cluster)").to_string()).or_insert(0) += 1;
    }
    (by_kind, by_ns)
}

fn render_counts(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

fn write_preview(dir: &std::path::Path, objects: &[Restorable], secrets: bool) -> Result<(), ActionError> {
    for o in objects {
        let sub = dir.join(o.namespace().unwrap_or("_cluster"));
        drover_api::procs::create_private_dir_all(&sub)
            .map_err(|e| ActionError::permanent(format!("cannot create {}: {e}", sub.display())))?;
        let file = sub.join(format!("{}-{}.yaml", o.kind().to_lowercase(), o.name()));
        let mut object = o.object();
        if o.kind() == "Secret" && !secrets {
            redact_secret(&mut object);
        }
        let text = serde_yaml::to_string(&object).unwrap_or_default();
        drover_api::procs::write_private(&file, text.as_bytes())
            .map_err(|e| ActionError::permanent(format!("cannot write {}: {e}", file.display())))?;
    }
    Ok(())
}

/// A Secret as a preview shows it by default: its keys, each value replaced by its size.
fn redact_secret(secret: &mut Value) {
    use base64::Engine;
    for (field, encoded) in [("data", true), ("stringData", false)] {
        if let Some(Value::Object(values)) = secret.get_mut(field) {
            for value in values.values_mut() {
                let text = value.as_str().unwrap_or_default();
                let size = if encoded {
                    base64::engine::general_purpose::STANDARD.decode(text).map(|b| b.len()).unwrap_or(text.len())
                } else {
                    text.len()
                };
                *value = json!(format!("<redacted: {size} bytes; preview_secrets: true shows it>"));
            }
        }
    }
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
    };

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

    async fn run(&self, ctx: &StepContext, p: RestoreParams) -> Result<Outputs, ActionError> {
        let pipeline = Pipeline::new(&p).map_err(|e| ActionError::permanent(e[0].message.clone()))?;
        let kube = Kube::connect(ctx, &p.site).await?;
        let mut got = collect(ctx, &p, &pipeline).await?;
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
