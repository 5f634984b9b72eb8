//! Which namespaces saw a change of a kind, told to the waits that look there: one WATCH
//! across the cluster per kind (and label selector), shared by every wait of the run on that
//! cluster, metadata only.
//!
//! Why: a wait for readiness that LISTs its namespace every 50 ms is, across a fleet's tier of
//! 167 applications × 5 kinds, thousands of requests a second for seconds on end — a saturated
//! API server during an incident, and a readiness noticed late because every answer queues.
//! `kubectl wait` watches instead; so do the waits here, in the way that scales to a fleet: a
//! change only says "look again", and the wait LISTs its own namespace as before. What a wait
//! decides on is always a LIST sent after it was told, so the watch cannot make it act on a
//! stale or partial view — at worst it looks once more than needed.
//!
//! Nothing is missed: a wait registers its namespaces before its first LIST, and every wait is
//! told to look again whenever the watch (re)starts from a fresh version (its first start, a
//! 410 Expired). While no watch is running — starting, restarting after an error, or refused
//! (an identity that may not list or watch across the cluster, a server without watch) — the
//! waits poll at their usual pace; that is also their pace between changes while it runs, only
//! slower (a safety net, never the way readiness is noticed).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ListParams, WatchEvent, WatchParams};
use serde::Deserialize;

use crate::client::{Kind, Kube, KubeError};

/// What makes two watches the same: the resource and the label selector.
type WatchKey = (String, String, Option<String>);

/// Every kind's watch on one connection.
#[derive(Default)]
pub(crate) struct SharedWatches {
    kinds: Mutex<HashMap<WatchKey, Weak<KindWatch>>>,
}

/// Where a kind's watch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Running {
    /// Not (yet, or again) streaming from a known version: waits poll.
    Starting,
    /// Streaming: a change of the kind reaches every wait on its namespace.
    Live,
    /// Refused or not supported by the server: waits poll (it is tried again once no wait
    /// holds it).
    Refused,
}

/// A wait, as a watch tells it: its registration and how to wake it.
type Told = (u64, Arc<tokio::sync::Notify>);

/// One kind's watch across the cluster, and the waits it tells.
struct KindWatch {
    running: Mutex<Running>,
    /// Waits by the namespace they look at (`""` for a cluster-scoped kind).
    told: Mutex<HashMap<String, Vec<Told>>>,
    next_id: std::sync::atomic::AtomicU64,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for KindWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

impl KindWatch {
    fn tell(&self, namespace: &str) {
        if let Some(waits) = self.told.lock().unwrap_or_else(|e| e.into_inner()).get(namespace) {
            waits.iter().for_each(|(_, n)| n.notify_one());
        }
    }

    fn tell_all(&self) {
        self.told.lock().unwrap_or_else(|e| e.into_inner()).values().flatten().for_each(|(_, n)| n.notify_one());
    }

    fn set(&self, now: Running) {
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = now;
        // A wait that decided on the old state looks again.
        self.tell_all();
    }
}

/// One wait's registration: told when any of its (kind, namespace) pairs changes.
pub struct Changes {
    registered: Vec<Registered>,
    told: Arc<tokio::sync::Notify>,
}

struct Registered {
    watch: Arc<KindWatch>,
    api_version: String,
    plural: String,
    namespace: String,
    id: u64,
}

impl Drop for Changes {
    fn drop(&mut self) {
        for r in &self.registered {
            let mut told = r.watch.told.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(waits) = told.get_mut(&r.namespace) {
                waits.retain(|(i, _)| *i != r.id);
                if waits.is_empty() {
                    told.remove(&r.namespace);
                }
            }
        }
    }
}

impl Changes {
    /// Whether every watch this wait depends on is streaming: only then may it pause long.
    pub fn live(&self) -> bool {
        self.registered.iter().all(|r| *r.watch.running.lock().unwrap_or_else(|e| e.into_inner()) == Running::Live)
    }

    /// The kinds (`PLURAL.GROUP`, `PLURAL` for the core group) whose watch this identity or
    /// server refused: they are polled.
    pub fn refused(&self) -> BTreeSet<String> {
        self.registered
            .iter()
            .filter(|r| *r.watch.running.lock().unwrap_or_else(|e| e.into_inner()) == Running::Refused)
            .map(|r| match r.api_version.split_once('/') {
                Some((group, _)) => format!("{}.{group}", r.plural),
                None => r.plural.clone(),
            })
            .collect()
    }

    /// Until one of the namespaces saw a change (or a watch changed state) since the last call.
    pub async fn changed(&self) {
        self.told.notified().await
    }

    /// Stop listening for the (kind, namespace) pairs not in `still` (settled lists).
    pub fn keep(&mut self, still: &[(Kind, String)]) {
        let (keep, settled): (Vec<_>, Vec<_>) = std::mem::take(&mut self.registered).into_iter().partition(|r| {
            still.iter().any(|(k, n)| {
                *n == r.namespace && k.resource.api_version == r.api_version && k.resource.plural == r.plural
            })
        });
        self.registered = keep;
        drop(Changes { registered: settled, told: self.told.clone() });
    }
}

impl SharedWatches {
    /// Register a wait on `lists` (kind, namespace) with `labels`; starts the kinds' watches
    /// that are not running yet.
    pub(crate) fn register(&self, kube: &Kube, lists: &[(Kind, String)], labels: Option<&str>) -> Changes {
        let told = Arc::new(tokio::sync::Notify::new());
        let mut registered = vec![];
        for (kind, namespace) in lists {
            let key = (kind.resource.api_version.clone(), kind.resource.plural.clone(), labels.map(String::from));
            let watch = {
                let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
                kinds.retain(|_, w| w.strong_count() > 0);
                match kinds.get(&key).and_then(Weak::upgrade) {
                    Some(w) => w,
                    None => {
                        let w = Arc::new(KindWatch {
                            running: Mutex::new(Running::Starting),
                            told: Mutex::default(),
                            next_id: Default::default(),
                            task: Mutex::default(),
                        });
                        let task = tokio::spawn(run(
                            kube.detached(),
                            kind.clone(),
                            labels.map(String::from),
                            Arc::downgrade(&w),
                        ));
                        *w.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
                        kinds.insert(key, Arc::downgrade(&w));
                        w
                    }
                }
            };
            let id = watch.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            watch
                .told
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(namespace.clone())
                .or_default()
                .push((id, told.clone()));
            registered.push(Registered {
                watch,
                api_version: kind.resource.api_version.clone(),
                plural: kind.resource.plural.clone(),
                namespace: namespace.clone(),
                id,
            });
        }
        Changes { registered, told }
    }
}

/// What a change says of the object: enough to tell its namespace and resume after it.
#[derive(Clone, Deserialize)]
struct Changed {
    #[serde(default)]
    metadata: ChangedMeta,
}

#[derive(Clone, Default, Deserialize)]
struct ChangedMeta {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
}

/// The version of a LIST across the cluster (one item asked for): where a watch starts.
#[derive(Deserialize)]
struct ListVersion {
    #[serde(default)]
    metadata: ChangedMeta,
}

/// Watch `kind` across the cluster until no wait is left (the task is aborted then).
async fn run(kube: Kube, kind: Kind, labels: Option<String>, watch: Weak<KindWatch>) {
    let api = kube::Api::<kube::api::DynamicObject>::all_with(kube.client.clone(), &kind.resource);
    let what = format!("watch {} across the cluster", kind.resource.plural);
    // The server ends each watch before the client's read timeout would.
    let seconds = kube.request_timeout().as_secs().saturating_sub(2).clamp(1, 290) as u32;
    let mut version: Option<String> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(w) = watch.upgrade() else { return };
        if version.is_none() {
            let mut params = ListParams::default().limit(1);
            if let Some(l) = &labels {
                params = params.labels(l);
            }
            let request = || async {
                let request =
                    kube::core::Request::new(api.resource_url()).list(&params).map_err(kube::Error::BuildRequest)?;
                kube.client.request::<ListVersion>(request).await
            };
            match kube.call(&what, request).await {
                Ok(list) => match list.metadata.resource_version {
                    Some(v) => {
                        version = Some(v);
                        backoff = Duration::from_millis(200);
                        // Everyone looks again: what changed before this version is in their
                        // next LIST; what changes after, the watch tells.
                        w.set(Running::Live);
                    }
                    None => return refuse(&w, &what, "a LIST answered without a resourceVersion"),
                },
                Err(e) => {
                    if refusal(&e) {
                        return refuse(&w, &what, e.message());
                    }
                    drop(w);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let mut params = WatchParams::default().timeout(seconds);
        if let Some(l) = &labels {
            params = params.labels(l);
        }
        let from = version.clone().unwrap_or_default();
        let started = kube::core::Request::new(api.resource_url())
            .watch_metadata(&params, &from)
            .map_err(kube::Error::BuildRequest);
        let stream = match started {
            Ok(request) => kube.client.request_events::<Changed>(request).await,
            Err(e) => Err(e),
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                let e = kube.error(e, &what);
                if refusal(&e) {
                    return refuse(&w, &what, e.message());
                }
                w.set(Running::Starting);
                version = None;
                drop(w);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        drop(w);
        let mut stream = std::pin::pin!(stream);
        let mut seen = false;
        while let Some(event) = stream.next().await {
            let Some(w) = watch.upgrade() else { return };
            match event {
                Ok(WatchEvent::Added(c) | WatchEvent::Modified(c) | WatchEvent::Deleted(c)) => {
                    seen = true;
                    if let Some(v) = c.metadata.resource_version {
                        version = Some(v);
                    }
                    w.tell(c.metadata.namespace.as_deref().unwrap_or(""));
                }
                Ok(WatchEvent::Bookmark(b)) => version = Some(b.metadata.resource_version),
                Ok(WatchEvent::Error(status)) => {
                    // 410 Expired: the version is too old to resume from; start afresh.
                    tracing::debug!(target: "drover::kube", "{what}: {} ({})", status.message, status.code);
                    w.set(Running::Starting);
                    version = None;
                    break;
                }
                Err(e) => {
                    // A stream that is not events at all: the server does not watch.
                    if !seen && matches!(e, kube::Error::SerdeError(_)) {
                        return refuse(&w, &what, &e.to_string());
                    }
                    // A broken stream resumes from the last version seen.
                    tracing::debug!(target: "drover::kube", "{what}: {e}; resuming");
                    break;
                }
            }
        }
    }
}

/// An answer that trying again will not change: the identity may not, or the server cannot.
fn refusal(e: &KubeError) -> bool {
    matches!(e.status(), Some(400 | 401 | 403 | 404 | 405 | 406 | 415))
}

fn refuse(w: &KindWatch, what: &str, why: &str) {
    tracing::debug!(target: "drover::kube", "{what}: {why}; waits poll instead");
    w.set(Running::Refused);
}
