//! Where restored objects come from: a Velero backup in S3, a local Velero tarball or unpacked
//! folder, a folder of manifests, or a live cluster. Every source yields [`Item`]s through a
//! bounded channel, so a backup of any size streams through in bounded memory.

use std::path::PathBuf;

use aws_sdk_s3::Client as S3;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use drover_api::{ActionError, StepContext};

use crate::client::Kube;
use crate::velero::{self, Item, Limits};

/// `from:` — exactly one source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A Velero backup in an S3 bucket.
    Velero(VeleroSource),
    /// A Velero backup tarball (`.tar.gz`) or its unpacked folder on this machine.
    Archive(PathBuf),
    /// Files or folders of YAML/JSON manifests.
    Manifests(Vec<PathBuf>),
    /// The objects of a live cluster (planned failover, blue/green).
    Live(LiveSource),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VeleroSource {
    /// The site whose `s3:` settings reach the bucket.
    pub site: String,
    pub bucket: String,
    /// The prefix of the Velero backup storage location, if any.
    #[serde(default)]
    pub prefix: Option<String>,
    /// A backup name, or `latest`: the newest `Completed` one.
    pub backup: String,
    /// Accept a `PartiallyFailed` backup (some items missing).
    #[serde(default)]
    pub allow_partially_failed: bool,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveSource {
    /// The site whose cluster is read.
    pub site: String,
    /// Namespaces to take (globs allowed).
    pub namespaces: Vec<String>,
}

pub use drover_api::s3::S3Site;

/// An S3 client for a site.
pub async fn s3_client(ctx: &StepContext, site: &str) -> Result<S3, ActionError> {
    drover_api::s3::client(ctx, site).await
}

fn s3_error<E: std::error::Error + Send + Sync + 'static>(
    what: &str,
    e: aws_sdk_s3::error::SdkError<E>,
) -> ActionError {
    drover_api::s3::error(
        what,
        e,
        "check bucket, prefix and backup name (`drover` lists the backups it found in the error of `latest`)",
    )
}

fn key(prefix: &Option<String>, rest: &str) -> String {
    match prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
        Some(p) => format!("{p}/{rest}"),
        None => rest.to_string(),
    }
}

async fn get_bytes(s3: &S3, bucket: &str, key: &str) -> Result<Vec<u8>, ActionError> {
    let what = format!("s3://{bucket}/{key}");
    let out = s3.get_object().bucket(bucket).key(key).send().await.map_err(|e| s3_error(&what, e))?;
    let bytes = out.body.collect().await.map_err(|e| ActionError::retryable(format!("{what}: {e}")))?;
    Ok(bytes.into_bytes().to_vec())
}

/// The backup's `velero-backup.json`, checked: it must be a Velero Backup in an acceptable phase.
async fn backup_status(s3: &S3, v: &VeleroSource, name: &str) -> Result<Value, ActionError> {
    let k = key(&v.prefix, &format!("backups/{name}/velero-backup.json"));
    let what = format!("s3://{}/{k}", v.bucket);
    let bytes = get_bytes(s3, &v.bucket, &k).await?;
    let backup: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ActionError::permanent(format!("{what}: not a Velero backup object: {e}")).with_hint("is this a Velero bucket?")
    })?;
    if backup["kind"] != "Backup" || !backup["apiVersion"].as_str().is_some_and(|a| a.starts_with("velero.io/")) {
        return Err(ActionError::permanent(format!("{what}: not a Velero Backup (kind {})", backup["kind"]))
            .with_hint("point `bucket`/`prefix` at a Velero backup storage location"));
    }
    Ok(backup)
}

fn phase(b: &Value) -> &str {
    b.pointer("/status/phase").and_then(Value::as_str).unwrap_or("")
}

/// The backup to restore: the named one, or the newest completed. Refuses unusable phases.
pub async fn pick_backup(s3: &S3, v: &VeleroSource) -> Result<(String, Value), ActionError> {
    let acceptable = |p: &str| p == "Completed" || (v.allow_partially_failed && p == "PartiallyFailed");
    if v.backup != "latest" {
        let b = backup_status(s3, v, &v.backup).await?;
        let p = phase(&b);
        if !acceptable(p) {
            let hint = if p == "PartiallyFailed" {
                "some items are missing from it; set `allow_partially_failed: true` to restore it anyway".to_string()
            } else {
                format!("a backup in phase `{p}` is not complete; pick a Completed one or `backup: latest`")
            };
            return Err(ActionError::permanent(format!("backup {} is {p}", v.backup)).with_hint(hint));
        }
        return Ok((v.backup.clone(), b));
    }
    let list_prefix = key(&v.prefix, "backups/");
    let mut names = vec![];
    let mut token = None;
    loop {
        let what = format!("list s3://{}/{list_prefix}", v.bucket);
        let page = s3
            .list_objects_v2()
            .bucket(&v.bucket)
            .prefix(&list_prefix)
            .delimiter("/")
            .set_continuation_token(token.clone())
            .send()
            .await
            .map_err(|e| s3_error(&what, e))?;
        for p in page.common_prefixes() {
            if let Some(name) = p.prefix().and_then(|s| s.strip_prefix(&list_prefix)) {
                names.push(name.trim_end_matches('/').to_string());
            }
        }
        token = page.next_continuation_token().map(String::from);
        if token.is_none() {
            break;
        }
    }
    let mut best: Option<(String, Value)> = None;
    let mut seen = vec![];
    for name in names {
        let Ok(b) = backup_status(s3, v, &name).await else { continue };
        seen.push(format!("{name} ({})", phase(&b)));
        if !acceptable(phase(&b)) {
            continue;
        }
        let done = b.pointer("/status/completionTimestamp").and_then(Value::as_str).unwrap_or("").to_string();
        let newer = best.as_ref().is_none_or(|(_, old)| {
            done.as_str() > old.pointer("/status/completionTimestamp").and_then(Value::as_str).unwrap_or("")
        });
        if newer {
            best = Some((name, b));
        }
    }
    best.ok_or_else(|| {
        ActionError::permanent(format!("no completed backup in s3://{}/{list_prefix}", v.bucket)).with_hint(
            if seen.is_empty() {
                "the location has no backups; check bucket and prefix".to_string()
            } else {
                format!("found: {}", seen.join(", "))
            },
        )
    })
}

/// Items arrive here; an error ends the stream.
pub type Items = mpsc::Receiver<Result<Item, ActionError>>;

/// Start reading a source; returns the item stream and a description ("backup nightly-2026...").
pub async fn open(ctx: &StepContext, source: &Source, limits: Limits) -> Result<(Items, String), ActionError> {
    let (tx, rx) = mpsc::channel(1024);
    let described = match source {
        Source::Velero(v) => {
            let s3 = s3_client(ctx, &v.site).await?;
            let (name, _) = pick_backup(&s3, v).await?;
            let k = key(&v.prefix, &format!("backups/{name}/{name}.tar.gz"));
            let origin = format!("s3://{}/{k}", v.bucket);
            let out = s3.get_object().bucket(&v.bucket).key(&k).send().await.map_err(|e| s3_error(&origin, e))?;
            let reader = out.body.into_async_read();
            let handle = tokio::runtime::Handle::current();
            let described = format!("Velero backup {name}");
            tokio::task::spawn_blocking(move || {
                let sync = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
                let tx2 = tx.clone();
                let read =
                    velero::read_tarball(std::io::BufReader::with_capacity(1 << 16, sync), &origin, limits, |i| {
                        tx2.blocking_send(Ok(i)).map_err(|_| ActionError::permanent("restore stopped"))
                    });
                if let Err(e) = read {
                    let _ = tx.blocking_send(Err(e));
                }
            });
            described
        }
        Source::Archive(path) => {
            let path = ctx.resolve_path(path);
            let described = format!("Velero backup {}", path.display());
            tokio::task::spawn_blocking(move || {
                let tx2 = tx.clone();
                let send = |i| tx2.blocking_send(Ok(i)).map_err(|_| ActionError::permanent("restore stopped"));
                let read = if path.is_dir() {
                    velero::read_folder(&path, limits, send)
                } else {
                    match std::fs::File::open(&path) {
                        Ok(f) => {
                            velero::read_tarball(std::io::BufReader::new(f), &path.display().to_string(), limits, send)
                        }
                        Err(e) => Err(ActionError::permanent(format!("cannot read {}: {e}", path.display()))
                            .with_hint("relative paths start at the runbook's directory")),
                    }
                };
                if let Err(e) = read {
                    let _ = tx.blocking_send(Err(e));
                }
            });
            described
        }
        Source::Manifests(paths) => {
            let paths: Vec<PathBuf> = paths.iter().map(|p| ctx.resolve_path(p)).collect();
            let list = crate::manifests::load(&paths, &[])?;
            let described = format!("{} manifests", list.len());
            // Manifests name a kind, not a resource: the group-resource is settled against the
            // target cluster later; here the kind stands in lower-cased.
            tokio::spawn(async move {
                for m in list {
                    let item = Item {
                        resource: guess_resource(m.api_version(), m.kind()),
                        namespace: m.namespace().map(String::from),
                        name: m.name().to_string(),
                        object: m.object,
                    };
                    if tx.send(Ok(item)).await.is_err() {
                        break;
                    }
                }
            });
            described
        }
        Source::Live(live) => {
            let kube = Kube::connect(ctx, &live.site).await?;
            let described = format!("live cluster of {}", kube.origin);
            let live = live.clone();
            tokio::spawn(async move {
                if let Err(e) = read_live(&kube, &live, &tx).await {
                    let _ = tx.send(Err(e)).await;
                }
            });
            described
        }
    };
    Ok((rx, described))
}

/// The group-resource a manifest's kind most likely has (`Deployment` in `apps/v1` →
/// `deployments.apps`): English plural rules as the API server's defaults use them.
pub fn guess_resource(api_version: &str, kind: &str) -> String {
    let lower = kind.to_lowercase();
    let plural = if lower == "endpoints" {
        lower
    } else if lower.ends_with('s') || lower.ends_with("ch") || lower.ends_with("sh") || lower.ends_with('x') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y').filter(|s| !s.ends_with(['a', 'e', 'i', 'o', 'u'])) {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    };
    match api_version.rsplit_once('/') {
        Some((group, _)) => format!("{plural}.{group}"),
        None => plural,
    }
}

/// Everything listable in the selected namespaces, plus the cluster-scoped objects they need:
/// the namespaces themselves, PVs bound to their claims, storage classes of their claims,
/// CRDs of their custom resources, cluster roles their role bindings name.
/// How many LIST requests reading a live cluster keeps in flight.
const LISTS_IN_FLIGHT: usize = 8;

async fn read_live(
    kube: &Kube,
    live: &LiveSource,
    tx: &mpsc::Sender<Result<Item, ActionError>>,
) -> Result<(), ActionError> {
    use kube::api::ListParams;
    use kube::discovery::{Scope, verbs};

    let discovery = kube.discovery(false).await?;
    let ns_kind = kube.kind("v1", "Namespace", false).await?;
    let (ns_api, all) = (kube.api(&ns_kind, ""), ListParams::default());
    // Namespaces named outright are read one by one: a fleet's 500 restores would otherwise
    // each list the cluster's every namespace.
    let namespaces: Vec<_> = if live.namespaces.iter().any(|p| p.contains(['*', '?', '['])) {
        let all_ns = kube.call("list namespaces", || ns_api.list(&all)).await?;
        all_ns
            .items
            .into_iter()
            .filter(|n| {
                let name = n.metadata.name.as_deref().unwrap_or("");
                live.namespaces.iter().any(|p| crate::restore::transform::glob_match(p, name))
            })
            .collect()
    } else {
        let mut found = vec![];
        for name in live.namespaces.iter().collect::<std::collections::BTreeSet<_>>() {
            found.extend(kube.get_cluster_scoped(&ns_kind, name).await?.map(std::sync::Arc::unwrap_or_clone));
        }
        found
    };
    let mut wanted_cluster: Vec<(String, String)> = vec![]; // (group-resource, name)
    let send = |resource: String, ns: Option<String>, object: Value| {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        tx.send(Ok(Item { resource, namespace: ns, name, object }))
    };
    let ns_names: Vec<String> = namespaces.iter().filter_map(|n| n.metadata.name.clone()).collect();
    for n in &namespaces {
        let mut v = serde_json::to_value(n).unwrap_or_default();
        v["apiVersion"] = "v1".into();
        v["kind"] = "Namespace".into();
        if send("namespaces".into(), None, v).await.is_err() {
            return Ok(());
        }
    }
    let mut lists = vec![];
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let gr = if ar.group.is_empty() { ar.plural.clone() } else { format!("{}.{}", ar.plural, ar.group) };
            if crate::restore::clean::excluded(&gr, &Value::Null).is_some() {
                continue;
            }
            lists.extend(ns_names.iter().map(|ns| (ar.clone(), gr.clone(), ns.clone())));
        }
    }
    // Every kind in every namespace: several LISTs in flight, each handed on as it completes;
    // restores reading the same cluster at the same moment share them (see `crate::lists`).
    use futures::StreamExt;
    let mut listed = futures::stream::iter(lists)
        .map(|(ar, gr, ns)| async move {
            let kind = crate::client::Kind { resource: ar.clone(), namespaced: true };
            let items = kube.list_in(&kind, &ns, None, crate::lists::Sharing::Gathered).await?;
            Ok::<_, ActionError>((ar, gr, ns, items))
        })
        .buffer_unordered(LISTS_IN_FLIGHT);
    while let Some(listed) = listed.next().await {
        let (ar, gr, ns, items) = listed?;
        for item in items.iter() {
            let mut v = item.clone();
            v["apiVersion"] = ar.api_version.clone().into();
            v["kind"] = ar.kind.clone().into();
            let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
            match gr.as_str() {
                "persistentvolumeclaims" => {
                    if let Some(pv) = s("/spec/volumeName") {
                        wanted_cluster.push(("persistentvolumes".into(), pv));
                    }
                    if let Some(sc) = s("/spec/storageClassName") {
                        wanted_cluster.push(("storageclasses.storage.k8s.io".into(), sc));
                    }
                }
                "rolebindings.rbac.authorization.k8s.io" if s("/roleRef/kind").as_deref() == Some("ClusterRole") => {
                    wanted_cluster.push((
                        "clusterroles.rbac.authorization.k8s.io".into(),
                        s("/roleRef/name").unwrap_or_default(),
                    ));
                }
                _ if !ar.group.is_empty() && ar.group.contains('.') && !ar.group.ends_with("k8s.io") => {
                    wanted_cluster.push((
                        "customresourcedefinitions.apiextensions.k8s.io".into(),
                        format!("{}.{}", ar.plural, ar.group),
                    ));
                }
                _ => {}
            }
            if send(gr.clone(), Some(ns.clone()), v).await.is_err() {
                return Ok(());
            }
        }
    }
    wanted_cluster.sort();
    wanted_cluster.dedup();
    // Read by name, several at once: one after another, a restore of two volumes waited for
    // three GETs in turn behind every other restore's requests.
    let discovery = &discovery;
    let mut read = futures::stream::iter(wanted_cluster)
        .map(|(gr, name)| async move {
            let (plural, group) = gr.split_once('.').unwrap_or((&gr, ""));
            let Some((ar, _)) = discovery
                .groups()
                .flat_map(|g| g.recommended_resources())
                .find(|(ar, _)| ar.plural == plural && ar.group == group)
            else {
                return Ok(None);
            };
            // The fleet's restores all want the same CRDs and storage classes: read once for
            // those asking at the same moment.
            let kind = crate::client::Kind { resource: ar.clone(), namespaced: false };
            let found = kube.get_cluster_scoped(&kind, &name).await?;
            Ok::<_, ActionError>(found.map(|obj| {
                let mut v = serde_json::to_value(&*obj).unwrap_or_default();
                v["apiVersion"] = ar.api_version.clone().into();
                v["kind"] = ar.kind.clone().into();
                (gr, v)
            }))
        })
        .buffered(LISTS_IN_FLIGHT);
    while let Some(found) = read.next().await {
        if let Some((gr, v)) = found?
            && send(gr, None, v).await.is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_of_kinds() {
        assert_eq!(guess_resource("apps/v1", "Deployment"), "deployments.apps");
        assert_eq!(guess_resource("v1", "Service"), "services");
        assert_eq!(guess_resource("networking.k8s.io/v1", "Ingress"), "ingresses.networking.k8s.io");
        assert_eq!(guess_resource("networking.k8s.io/v1", "NetworkPolicy"), "networkpolicies.networking.k8s.io");
        assert_eq!(guess_resource("v1", "Endpoints"), "endpoints");
    }
}
