//! LISTs of one kind in many namespaces, and reads of one cluster-scoped object by name,
//! shared by the steps that want them at the same time.
//!
//! A fleet's 500 restores from a live primary each list 22 kinds in their own namespace — in
//! the preflight and again in the run — and its fences read 4 kinds in each: some 25,000
//! requests, each a TLS round trip and a turn of the API server, on a control plane that
//! answers a queue no sooner for being sent it all at once. Callers who want the same kind
//! (with the same selector) while a LIST of it is on its way are gathered; the next LIST
//! serves them all — across the cluster when there are many of them, grouped by namespace.
//!
//! It is sent after each of them asked, so nobody is given an older view than a LIST of their
//! own would have given. A lone caller, or a few, still list their own namespaces: a LIST
//! across the cluster returns every namespace's objects, and is worth it only while those are
//! fewer than what the requests it saves would cost. An identity allowed to list only in some
//! namespaces (403 across the cluster) is served namespace by namespace from then on.
//!
//! Reads of cluster-scoped objects by name are gathered by kind: the fleet's restores each
//! read the same CustomResourceDefinition and StorageClass, and their own Namespace and
//! PersistentVolume, on both sites (~5,000 GETs in its preflight); those gathered are answered
//! by a GET each while they are few, by one LIST of the kind when many. Identical dry runs —
//! of a cluster-scoped object (every restore's CRD), or of the same object bound for
//! namespaces the cluster does not have yet (apps from one template) — share one request.
//!
//! A LIST across the cluster parses only the objects somebody asked for; the others are
//! skipped over in the page's text.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use kube::api::{DynamicObject, ListParams};
use serde::Deserialize;
use serde_json::Value;

use crate::client::{Kind, Kube, KubeError};

/// Whether a LIST may be one shared with other steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// A read made once (a restore's source, a fence): gathered with the others wanting it.
    Gathered,
    /// A poll repeated every few tens of milliseconds (a wait for readiness): its own
    /// namespace only. Gathered across the cluster, every round would return every
    /// namespace's objects again — more work for both sides than the requests it saves.
    Own,
}

/// From this many namespaces gathered, one LIST across the cluster may serve them.
pub const ACROSS_THE_CLUSTER_FROM: usize = 16;

/// What one request costs both sides beyond its objects (a TLS record each way, the API
/// server's authentication, authorization and priority queue, a task and a parse here), in
/// objects listed: a namespace's LIST of a few objects costs about as much as a LIST across the
/// cluster returning this many more.
const REQUEST_COSTS_OBJECTS: usize = 16;

/// A page of a LIST.
const PAGE: u32 = 500;

/// Every kind's gathering on one connection.
#[derive(Default)]
pub(crate) struct SharedLists {
    kinds: Mutex<HashMap<ListKey, Arc<KindLists>>>,
}

/// What makes two LISTs interchangeable: the resource and the label selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ListKey {
    api_version: String,
    plural: String,
    labels: Option<String>,
}

#[derive(Default)]
struct KindLists {
    /// The namespaces wanted by the callers gathering for the next LIST.
    gathering: Gathering<BTreeSet<String>, ByNamespace>,
    /// What the last LIST across the cluster showed.
    across: Mutex<Across>,
}

/// Callers who want the same read while one is on its way, gathered for the next: each is
/// answered by a read sent after it asked, one at a time. `W` is what they want of it (the
/// namespaces of a LIST), `T` its answer.
pub(crate) struct Gathering<W, T> {
    next: Mutex<Option<Arc<Batch<W, T>>>>,
    sending: tokio::sync::Mutex<()>,
}

impl<W, T> Default for Gathering<W, T> {
    fn default() -> Self {
        Gathering { next: Mutex::new(None), sending: tokio::sync::Mutex::new(()) }
    }
}

struct Batch<W, T> {
    /// Frozen once the batch is sent.
    wants: Mutex<W>,
    answer: tokio::sync::OnceCell<T>,
}

impl<W: Default + Clone, T> Gathering<W, T> {
    /// Join the next read with what this caller wants of it (`want`), and have `take` pick
    /// this caller's part of the answer. Whoever joins first sends the batch (`send`) once the
    /// read before it is answered; if that caller goes away (its step was stopped), the next
    /// one waiting takes over.
    pub(crate) async fn join<R, Fut>(
        &self,
        want: impl FnOnce(&mut W),
        send: impl FnOnce(W) -> Fut,
        take: impl FnOnce(&T) -> R,
    ) -> R
    where
        Fut: std::future::Future<Output = T>,
    {
        let batch = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let batch = next
                .get_or_insert_with(|| Arc::new(Batch { wants: Mutex::default(), answer: Default::default() }))
                .clone();
            want(&mut batch.wants.lock().unwrap_or_else(|e| e.into_inner()));
            batch
        };
        let answer = batch
            .answer
            .get_or_init(|| async {
                let _turn = self.sending.lock().await;
                {
                    let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
                    if next.as_ref().is_some_and(|n| Arc::ptr_eq(n, &batch)) {
                        *next = None;
                    }
                }
                let wants = batch.wants.lock().unwrap_or_else(|e| e.into_inner()).clone();
                send(wants).await
            })
            .await;
        take(answer)
    }
}

#[derive(Default)]
struct Across {
    /// The identity may not list across the cluster (403).
    refused: bool,
    /// The objects of the kind in the cluster, when last listed across it.
    objects_seen: usize,
}

impl Across {
    /// Worth listing across the cluster for these many namespaces: they are many, and the
    /// requests saved cost more than the other namespaces' objects the LIST returns too. A
    /// fleet's preflight had listed each kind in ~470 of its 500 namespaces one by one (the
    /// callers arrive a few at a time while the previous LIST is on its way), ~4,700 requests
    /// for ~1,000 objects of each kind; 50,000 ConfigMaps across the cluster are still
    /// listed namespace by namespace for a hundred namespaces.
    fn worth_it(&self, namespaces: usize) -> bool {
        !self.refused
            && namespaces >= ACROSS_THE_CLUSTER_FROM
            && namespaces * REQUEST_COSTS_OBJECTS >= self.objects_seen
    }
}

/// Objects by namespace, or the error of the namespace's LIST.
type ByNamespace = HashMap<String, Result<Arc<Vec<Value>>, KubeError>>;

impl SharedLists {
    /// The objects of `kind` in `namespace` (matching `labels`), by a LIST sent after this
    /// call began. A kind the server does not serve lists as nothing when gathered (a read
    /// once, of kinds discovery offered a moment ago); a poll of its own namespace (a wait on a
    /// kind that was served when it began) fails instead: the kind is gone, its CRD deleted,
    /// and no object of it will ever be ready.
    pub(crate) async fn list(
        &self,
        kube: &Kube,
        kind: &Kind,
        namespace: &str,
        labels: Option<&str>,
        sharing: Sharing,
    ) -> Result<Arc<Vec<Value>>, KubeError> {
        if sharing == Sharing::Own {
            return match pages(kube, kind, Some(namespace), labels, Keep::All).await? {
                Some(listed) => Ok(Arc::new(listed.objects)),
                None => Err(no_longer_served(kube, kind)),
            };
        }
        let key = ListKey {
            api_version: kind.resource.api_version.clone(),
            plural: kind.resource.plural.clone(),
            labels: labels.map(String::from),
        };
        let lists = self.kinds.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone();
        lists
            .gathering
            .join(
                |namespaces| {
                    namespaces.insert(namespace.to_string());
                },
                |namespaces| {
                    let across = &lists.across;
                    async move { send(kube, kind, across, &namespaces, labels).await }
                },
                |listed| listed.get(namespace).cloned().unwrap_or_else(|| Ok(Arc::default())),
            )
            .await
    }
}

/// What a read of one object by name answered: the object, or `None` when it does not exist.
type Read = Result<Option<Arc<DynamicObject>>, KubeError>;

/// Reads of cluster-scoped objects by name on one connection, gathered per kind: the callers
/// wanting objects of a kind while a read of it is on its way are answered by the next — one
/// GET per name when they are few, one LIST of the kind when they are many (a fleet's restores
/// and fences each read their own namespace and PersistentVolume: 3,500 GETs in a preflight).
#[derive(Default)]
pub(crate) struct SharedReads {
    kinds: Mutex<HashMap<(String, String), Arc<KindReads>>>,
}

#[derive(Default)]
struct KindReads {
    gathering: Gathering<BTreeSet<String>, HashMap<String, Read>>,
    across: Mutex<Across>,
}

impl SharedReads {
    /// The cluster-scoped object `name` of `kind`, by a read sent after this call began.
    pub(crate) async fn get(&self, kube: &Kube, kind: &Kind, name: &str) -> Read {
        let key = (kind.resource.api_version.clone(), kind.resource.plural.clone());
        let reads = self.kinds.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone();
        reads
            .gathering
            .join(
                |names| {
                    names.insert(name.to_string());
                },
                |names| {
                    let across = &reads.across;
                    async move { read_named(kube, kind, across, &names).await }
                },
                |read| read.get(name).cloned().unwrap_or(Ok(None)),
            )
            .await
    }
}

/// A request by its resource, object name (empty for a create), parameters and body.
type RequestKey = (String, String, String, String);

/// Identical requests without effect (dry runs) on one connection, gathered: those made
/// while one is on its way share the next one's answer. A fleet's restores each carry the same
/// CustomResourceDefinition and each dry-run it in the preflight (500 identical requests);
/// apps deployed from one template into many namespaces dry-run identical objects in the
/// stand-in namespace. Keyed by every byte of the body and parameters, so only identical
/// requests share an answer — one sent after each of them asked.
pub(crate) struct Identical<T> {
    requests: Mutex<HashMap<RequestKey, Arc<Gathering<(), T>>>>,
}

impl<T> Default for Identical<T> {
    fn default() -> Self {
        Identical { requests: Mutex::default() }
    }
}

impl<T: Clone> Identical<T> {
    /// The answer to the request `key`, sent by `send` after this call began.
    pub(crate) async fn join<Fut: std::future::Future<Output = T>>(
        &self,
        key: RequestKey,
        send: impl FnOnce() -> Fut,
    ) -> T {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone();
        requests.join(|()| {}, |()| send(), Clone::clone).await
    }
}

/// What a dry-run apply of one object answered: the object as the server would make it.
pub(crate) type DryRun = Result<Arc<DynamicObject>, KubeError>;

/// What a dry-run create answered: `None` when its namespace does not exist.
pub(crate) type DryCreate = Result<Option<()>, KubeError>;

/// The key of a request on `kind`'s resource.
pub(crate) fn request_key(kind: &Kind, name: &str, params: &impl std::fmt::Debug, body: &str) -> RequestKey {
    (
        format!("{}/{}", kind.resource.api_version, kind.resource.plural),
        name.to_string(),
        format!("{params:?}"),
        body.to_string(),
    )
}

/// Read the batch's objects: by one LIST of the kind when they are many, else one GET each. A
/// kind the server does not serve has none of them.
async fn read_named(
    kube: &Kube,
    kind: &Kind,
    across: &Mutex<Across>,
    names: &BTreeSet<String>,
) -> HashMap<String, Read> {
    let worth_it = across.lock().unwrap_or_else(|e| e.into_inner()).worth_it(names.len());
    if worth_it {
        match pages(kube, kind, None, None, Keep::Named(names)).await {
            Ok(listed) => {
                let Listed { objects, seen } = listed.unwrap_or(Listed { objects: vec![], seen: 0 });
                across.lock().unwrap_or_else(|e| e.into_inner()).objects_seen = seen;
                let mut found: HashMap<String, Read> = names.iter().map(|n| (n.clone(), Ok(None))).collect();
                for o in objects {
                    let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
                    if let Some(slot) = found.get_mut(&name) {
                        *slot = match serde_json::from_value::<DynamicObject>(o) {
                            Ok(object) => Ok(Some(Arc::new(object))),
                            Err(e) => Err(KubeError::Other(
                                drover_api::ActionError::permanent(format!(
                                    "{}: listing {}: {name} is not a Kubernetes object: {e}",
                                    kube.origin, kind.resource.plural
                                ))
                                .with_hint(format!(
                                    "look at it with `kubectl get {} {name} -o yaml`; an aggregated API server or proxy in front of the cluster may be answering for it",
                                    kind.resource.plural
                                )),
                            )),
                        };
                    }
                }
                return found;
            }
            Err(e) if e.status() == Some(403) => {
                tracing::debug!(target: "drover::kube", "{e}; reading {} by name", kind.resource.plural);
                across.lock().unwrap_or_else(|e| e.into_inner()).refused = true;
            }
            Err(e) => return names.iter().map(|n| (n.clone(), Err(e.clone()))).collect(),
        }
    }
    let api = kube.api(kind, "");
    let each = names.iter().map(|name| {
        let api = &api;
        async move {
            let what = format!("get {} {name}", kind.resource.plural);
            (name.clone(), kube.call_or_absent(&what, || api.get(name)).await.map(|o| o.map(Arc::new)))
        }
    });
    futures::future::join_all(each).await.into_iter().collect()
}

/// List the batch's namespaces: across the cluster when they are many, else one by one.
async fn send(
    kube: &Kube,
    kind: &Kind,
    across: &Mutex<Across>,
    namespaces: &BTreeSet<String>,
    labels: Option<&str>,
) -> ByNamespace {
    let worth_it = across.lock().unwrap_or_else(|e| e.into_inner()).worth_it(namespaces.len());
    if worth_it {
        match pages(kube, kind, None, labels, Keep::InNamespaces(namespaces)).await {
            Ok(listed) => {
                let Listed { objects, seen } = listed.unwrap_or(Listed { objects: vec![], seen: 0 });
                across.lock().unwrap_or_else(|e| e.into_inner()).objects_seen = seen;
                let mut by_namespace: HashMap<String, Vec<Value>> = HashMap::new();
                for o in objects {
                    let ns = o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
                    by_namespace.entry(ns.to_string()).or_default().push(o);
                }
                return namespaces
                    .iter()
                    .map(|ns| (ns.clone(), Ok(Arc::new(by_namespace.remove(ns).unwrap_or_default()))))
                    .collect();
            }
            Err(e) if e.status() == Some(403) => {
                tracing::debug!(target: "drover::kube", "{e}; listing {} namespace by namespace", kind.resource.plural);
                across.lock().unwrap_or_else(|e| e.into_inner()).refused = true;
            }
            Err(e) => return namespaces.iter().map(|ns| (ns.clone(), Err(e.clone()))).collect(),
        }
    }
    let each =
        namespaces.iter().map(|ns| async move { (ns.clone(), pages(kube, kind, Some(ns), labels, Keep::All).await) });
    futures::future::join_all(each)
        .await
        .into_iter()
        .map(|(ns, r)| (ns, r.map(|listed| Arc::new(listed.map(|l| l.objects).unwrap_or_default()))))
        .collect()
}

/// A LIST answered 404 for a kind that was served when the step began.
fn no_longer_served(kube: &Kube, kind: &Kind) -> KubeError {
    let r = &kind.resource;
    let name = if r.group.is_empty() { r.plural.clone() } else { format!("{}.{}", r.plural, r.group) };
    KubeError::Other(
        drover_api::ActionError::permanent(format!(
            "{}: the cluster no longer serves {name} (a LIST of it answered 404 Not Found): was its CustomResourceDefinition deleted?",
            kube.origin
        ))
        .with_hint(format!("check `kubectl get crd {name}`; once the kind is served again, `drover resume` waits again")),
    )
}

/// Which items of a LIST to keep. A LIST across the cluster returns every namespace's
/// objects; only the wanted ones are parsed (the others are skipped over in the page's text):
/// a fleet's preflight spent a seventh of drover's time parsing objects nobody had asked for.
#[derive(Clone, Copy)]
enum Keep<'a> {
    All,
    InNamespaces(&'a BTreeSet<String>),
    Named(&'a BTreeSet<String>),
}

impl Keep<'_> {
    fn keeps(&self, item: &ItemNames) -> bool {
        match self {
            Keep::All => true,
            Keep::InNamespaces(wanted) => wanted.contains(item.namespace.as_deref().unwrap_or("")),
            Keep::Named(wanted) => wanted.contains(item.name.as_deref().unwrap_or("")),
        }
    }
}

/// One page of a LIST as the server sent it: each item still text.
#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(default)]
    metadata: PageMeta,
    #[serde(default, borrow)]
    items: Option<Vec<&'a serde_json::value::RawValue>>,
}

#[derive(Default, Deserialize)]
struct PageMeta {
    #[serde(default, rename = "continue")]
    next: Option<String>,
}

/// What [`Keep`] looks at: an item's namespace and name (the rest of it is skipped over).
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(default, borrow)]
    metadata: ItemNames<'a>,
}

#[derive(Default, Deserialize)]
struct ItemNames<'a> {
    #[serde(default, borrow)]
    namespace: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
}

/// A page's kept items, parsed, and how many it held.
struct Kept {
    items: Vec<Value>,
    seen: usize,
    next: Option<String>,
}

/// Read one page, parsing only the items `keep` keeps. An item that is not an object makes
/// the page unreadable, as it would be to `kubectl`.
fn read_page(text: &str, keep: Keep) -> Result<Kept, serde_json::Error> {
    let page: RawPage = serde_json::from_str(text)?;
    let raw = page.items.unwrap_or_default();
    let mut items = vec![];
    for item in &raw {
        let names: Item = serde_json::from_str(item.get())?;
        if keep.keeps(&names.metadata) {
            items.push(Value::Object(serde_json::from_str::<serde_json::Map<String, Value>>(item.get())?));
        }
    }
    Ok(Kept { items, seen: raw.len(), next: page.metadata.next.filter(|t| !t.is_empty()) })
}

/// The kept objects of a LIST, and how many objects it returned in all.
struct Listed {
    objects: Vec<Value>,
    seen: usize,
}

/// Every page of one LIST, in a namespace or across the cluster, keeping the items `keep`
/// keeps; the items lack `kind` and `apiVersion`, as the API server sends them. `None`: the
/// server does not serve the kind.
async fn pages(
    kube: &Kube,
    kind: &Kind,
    namespace: Option<&str>,
    labels: Option<&str>,
    keep: Keep<'_>,
) -> Result<Option<Listed>, KubeError> {
    let api = match namespace {
        Some(ns) => kube.api(kind, ns),
        None => kube::Api::<kube::api::DynamicObject>::all_with(kube.client.clone(), &kind.resource),
    };
    let what = format!("list {} in {}", kind.resource.plural, namespace.unwrap_or("all namespaces"));
    let mut listed = Listed { objects: vec![], seen: 0 };
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(l) = labels {
            params = params.labels(l);
        }
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let request = || async {
            let request =
                kube::core::Request::new(api.resource_url()).list(&params).map_err(kube::Error::BuildRequest)?;
            let text = kube.client.request_text(request).await?;
            read_page(&text, keep).map_err(kube::Error::SerdeError)
        };
        // A 404 on the first page: the kind is not served. On a later one it is an error; the
        // objects read so far are not the list.
        let page = match token {
            None => match kube.call_or_absent(&what, request).await? {
                Some(page) => page,
                None => return Ok(None),
            },
            Some(_) => kube.call(&what, request).await?,
        };
        token = page.next;
        listed.seen += page.seen;
        listed.objects.extend(page.items);
        if token.is_none() {
            return Ok(Some(listed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_across_the_cluster_is_for_many_namespaces_while_the_kind_has_few_objects_for_them() {
        let fresh = Across::default();
        assert!(!fresh.worth_it(ACROSS_THE_CLUSTER_FROM - 1), "a few namespaces list their own");
        assert!(fresh.worth_it(ACROSS_THE_CLUSTER_FROM), "nothing known yet: many namespaces share one");
        let fleet = Across { refused: false, objects_seen: 1_000 };
        assert!(fleet.worth_it(499), "a preflight of the whole fleet");
        assert!(fleet.worth_it(167), "one tier of three, two objects in each of 500 namespaces");
        assert!(fleet.worth_it(64));
        assert!(!fleet.worth_it(32), "32 requests cost less than 1,000 objects");
        let crowded = Across { refused: false, objects_seen: 50_000 };
        assert!(!crowded.worth_it(100), "100 namespaces' own LISTs, not 50,000 objects");
        assert!(crowded.worth_it(4_000));
        let refused = Across { refused: true, objects_seen: 0 };
        assert!(!refused.worth_it(500), "refused across the cluster: namespace by namespace");
    }

    /// A page as an API server sends it: three namespaces' ConfigMaps, one name escaped.
    const PAGE_TEXT: &str = r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"42","continue":"next-please"},
        "items":[
          {"metadata":{"name":"settings","namespace":"shop","managedFields":[{"manager":"kubectl"}]},"data":{"a":"1"}},
          {"metadata":{"name":"settings","namespace":"till"},"data":{"b":"2"}},
          {"metadata":{"name":"caf\u00e9","namespace":"bar"},"data":{"c":"3"}}]}"#;

    #[test]
    fn a_page_keeps_only_the_wanted_namespaces_or_names_and_counts_every_item() {
        let wanted: BTreeSet<String> = ["shop", "bar"].map(String::from).into();
        let kept = read_page(PAGE_TEXT, Keep::InNamespaces(&wanted)).unwrap();
        assert_eq!(kept.seen, 3, "every item is counted, kept or not");
        assert_eq!(kept.next.as_deref(), Some("next-please"));
        let namespaces: Vec<&str> = kept.items.iter().map(|o| o["metadata"]["namespace"].as_str().unwrap()).collect();
        assert_eq!(namespaces, ["shop", "bar"], "in the server's order");
        assert_eq!(kept.items[0]["metadata"]["managedFields"][0]["manager"], "kubectl", "a kept item is whole");

        let named: BTreeSet<String> = ["café".to_string()].into();
        let kept = read_page(PAGE_TEXT, Keep::Named(&named)).unwrap();
        assert_eq!(kept.items.len(), 1, "an escaped name is compared unescaped");
        assert_eq!(kept.items[0]["data"]["c"], "3");

        assert_eq!(read_page(PAGE_TEXT, Keep::All).unwrap().items.len(), 3);
    }

    #[test]
    fn a_page_with_an_item_that_is_not_an_object_is_unreadable() {
        let all = read_page(r#"{"items":[{"metadata":{"name":"a"}}, 7]}"#, Keep::All);
        assert!(all.is_err(), "{:?}", all.map(|k| k.items));
        let none: BTreeSet<String> = BTreeSet::new();
        let skipped = read_page(r#"{"items":[{"metadata":{"name":"a"}}, "x"]}"#, Keep::Named(&none));
        assert!(skipped.is_err(), "even an item nobody asked for");
        let empty = read_page(r#"{"metadata":{"continue":""},"items":null}"#, Keep::All).unwrap();
        assert_eq!((empty.items.len(), empty.seen, empty.next), (0, 0, None));
    }
}
