//! Writing the objects: what exists already (and who made it), one object's create, apply
//! or skip, all of them in dependency order at an adaptive width, and the checkpoint a resumed
//! restore reads back.

use super::*;

/// What happened to one object.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
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

/// Up to this many objects of one cluster-scoped kind are read by name; more, by one LIST.
const BY_NAME_UP_TO: usize = 32;

/// What a restore needs to know of an object already there.
#[derive(Debug, Clone)]
pub struct Live {
    pub version: String,
    /// An earlier restore created it by POST (see [`created_by_drover`]).
    pub created_by_drover: bool,
    /// Its [`digest`] as listed.
    pub digest: u64,
}

/// The target namespaces the cluster has. Nothing exists yet in one it does not have (the
/// usual case on a standby): its objects need no read. Each is asked for by name, many at
/// once, with the other steps reading namespaces (a fleet's restores: one LIST).
pub(super) async fn present_namespaces(
    kube: &Kube,
    objects: &[Restorable],
    concurrency: usize,
) -> Result<HashSet<String>, ActionError> {
    let ns_kind = kube.kind("v1", "Namespace", false).await?;
    let ns_kind = &ns_kind;
    let targets: BTreeSet<&str> = objects.iter().filter_map(Restorable::namespace).collect();
    let mut present: HashSet<String> = HashSet::new();
    let asked: Vec<_> = targets
        .into_iter()
        .map(|ns| ns.to_string())
        .map(|ns| async move {
            let answer = kube.get_cluster_scoped(ns_kind, &ns).await;
            (ns, answer)
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
            Err(e) if e.status() == Some(403) => {
                present.insert(ns);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(present)
}

pub(super) async fn existing_versions(
    kube: &Kube,
    objects: &[Restorable],
    kinds: &[Option<Kind>],
    present: &HashSet<String>,
    concurrency: usize,
) -> Result<Versions, ActionError> {
    // What to read: each namespace's objects of a kind, and each cluster-scoped kind's.
    let mut wanted: BTreeMap<(String, String), (Kind, Vec<&str>)> = BTreeMap::new();
    for (o, k) in objects.iter().zip(kinds) {
        if o.namespace().is_some_and(|ns| !present.contains(ns)) {
            continue;
        }
        if let Some(k) = k {
            let key = (o.resource.clone(), o.namespace().unwrap_or("").to_string());
            wanted.entry(key).or_insert_with(|| (k.clone(), vec![])).1.push(o.name());
        }
    }
    let live = |resource: &str, ns: &str, item: &Value| {
        let text = |p: &str| item.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        let live = Live {
            version: text("/metadata/resourceVersion"),
            created_by_drover: created_by_drover(item.pointer("/metadata/managedFields")),
            digest: digest(item),
        };
        (format!("{resource}/{ns}/{}", text("/metadata/name")), live)
    };
    let lists: Vec<_> = wanted
        .into_iter()
        .map(|((resource, ns), (kind, names))| async move {
            let mut found = vec![];
            // A cluster-wide LIST returns every object of the kind in the cluster: a fleet's
            // restores each listed all the PersistentVolumes the earlier ones had made.
            if ns.is_empty() && names.len() <= BY_NAME_UP_TO {
                for name in names {
                    if let Some(item) = kube.get_cluster_scoped(&kind, name).await? {
                        found.push(live(&resource, &ns, &serde_json::to_value(&*item).unwrap_or_default()));
                    }
                }
                return Ok::<_, ActionError>(found);
            }
            let items = kube.list_in(&kind, &ns, None, crate::lists::Sharing::Gathered).await?;
            found.extend(items.iter().map(|item| live(&resource, &ns, item)));
            Ok(found)
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
    present: &HashSet<String>,
) -> Result<Outcome, ActionError> {
    let dry = existing.is_none();
    let namespace_absent = o.namespace().is_some_and(|ns| !present.contains(ns));
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
        // Its namespace does not exist: nothing to read, and a dry run can only be made elsewhere.
        None if namespace_absent => return dry_run_elsewhere(kube, &kind, o).await,
        None => {
            // Cluster-scoped objects (a CRD, a storage class) are often every restore's.
            let live = match o.namespace() {
                None => kube.get_cluster_scoped(&kind, o.name()).await?,
                Some(_) => kube
                    .call_or_absent(&format!("get {}", o.describe()), || api.get(o.name()))
                    .await?
                    .map(std::sync::Arc::new),
            };
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
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) if e.is_refused() => return Ok(Outcome::Refused(e.message().to_string())),
            // Someone created it since the list: it is an existing object after all.
            Err(e) if e.status() == Some(409) => {
                if p.existing == Existing::Skip {
                    return Ok(Outcome::Skipped);
                }
                version = Some(String::new());
            }
            Err(e) => return Ok(Outcome::Failed(e.message().to_string())),
        }
    }
    if version.is_some() && o.resource == "persistentvolumes" {
        let current = match &live {
            Some(l) => Some(l.clone()),
            None => kube
                .call_or_absent(&format!("get {}", o.describe()), || api.get(o.name()))
                .await?
                .map(std::sync::Arc::new),
        };
        let current = serde_json::to_value(current.as_deref()).unwrap_or_default();
        if let Some(why) = claimed_elsewhere(&current, &o.object()) {
            return Ok(Outcome::Failed(why));
        }
    }
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = true;
    params.dry_run = dry;
    let patch = Patch::Apply(&*o.body);
    let result = match o.namespace() {
        // Cluster-scoped objects (a CRD) are often every restore's, and so are their dry runs.
        None if dry => kube
            .dry_run_apply_cluster_scoped(&kind, o.name(), &o.body, &params)
            .await
            .map(std::sync::Arc::unwrap_or_clone),
        _ => kube.call(&format!("apply {}", o.describe()), || api.patch(o.name(), &params, &patch)).await,
    };
    match result {
        Err(e) if e.is_retryable() => Err(e.into()),
        // Its namespace comes first: check it where a namespace exists.
        Err(e) if dry && version.is_none() && o.namespace().is_some() && e.status() == Some(404) => {
            dry_run_elsewhere(kube, &kind, o).await
        }
        Err(e) => Ok(Outcome::Failed(e.message().to_string())),
        Ok(_) if version.is_none() => Ok(Outcome::Created),
        Ok(after) if !dry => {
            // The API server does not write a no-op apply: the version stays. A write that
            // changed only who owns which field (drover's first apply) changed no content.
            let same = after.metadata.resource_version == version || before_digest.is_some_and(|d| d == digest(&after));
            Ok(if same { Outcome::Unchanged } else { Outcome::Updated })
        }
        Ok(after) => {
            let before = content(serde_json::to_value(live.as_deref()).unwrap_or_default());
            let after = content(serde_json::to_value(after).unwrap_or_default());
            Ok(if before == after { Outcome::Unchanged } else { Outcome::Updated })
        }
    }
}

/// The dry run of an object bound for a namespace the cluster does not have yet.
async fn dry_run_elsewhere(kube: &Kube, kind: &Kind, o: &Restorable) -> Result<Outcome, ActionError> {
    match kube.dry_run_elsewhere(kind, &o.object(), &format!("apply {}", o.describe())).await {
        Ok(()) => Ok(Outcome::Created),
        Err(e) if e.is_retryable() => Err(e.into()),
        Err(e) if e.is_refused() => Ok(Outcome::Refused(e.message().to_string())),
        Err(e) => Ok(Outcome::Failed(e.message().to_string())),
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
fn created_by_drover(managed_fields: Option<&Value>) -> bool {
    managed_fields.and_then(Value::as_array).into_iter().flatten().any(|e| {
        e["manager"] == FIELD_MANAGER
            && e["operation"] == "Update"
            && e["subresource"].as_str().unwrap_or("").is_empty()
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

pub(super) async fn run_all(
    kube: &Kube,
    ctx: &StepContext,
    p: &RestoreParams,
    objects: &[Restorable],
    kinds: &[Option<Kind>],
    resumed: &Resumed,
    dry: bool,
) -> Result<Vec<Option<Outcome>>, ActionError> {
    let graph = build_graph(objects, &p.order)?;
    let width = p.concurrency.unwrap_or(16);
    let present = present_namespaces(kube, objects, width).await?;
    let existing = if dry { None } else { Some(existing_versions(kube, objects, kinds, &present, width).await?) };
    let present = &present;
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
                        let outcome = restore_one(kube, o, kinds[i].as_ref(), p, existing, present).await;
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
pub(super) struct Resumed {
    /// Keys of the objects already restored.
    pub(super) restored: HashSet<String>,
    /// CRDs it created (the cluster did not have them), so `created_crds` stays whole.
    created_crds: Vec<String>,
}

impl Resumed {
    pub(super) fn from_checkpoint(c: Option<&Value>) -> Resumed {
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
pub(super) fn created_crds(objects: &[Restorable], outcomes: &[Option<Outcome>], resumed: &Resumed) -> Vec<String> {
    let mut names = resumed.created_crds.clone();
    for (o, out) in objects.iter().zip(outcomes) {
        if o.resource == CRD && matches!(out, Some(Outcome::Created)) && !names.iter().any(|n| n == o.name()) {
            names.push(o.name().to_string());
        }
    }
    names
}

/// The keys of every object restored so far, and the CRDs created.
pub(super) fn checkpoint(objects: &[Restorable], outcomes: &[Option<Outcome>], resumed: &Resumed) -> Value {
    let done: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Some(Outcome::Created | Outcome::Updated | Outcome::Unchanged | Outcome::Skipped)))
        .map(|(i, _)| objects[i].key())
        .collect();
    json!({ "restored": done, "created_crds": created_crds(objects, outcomes, resumed) })
}
