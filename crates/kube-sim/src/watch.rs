//! WATCH (`GET …?watch=true`): the changes of a kind after a `resourceVersion`, streamed as
//! JSON lines `{"type": "ADDED" | "MODIFIED" | "DELETED", "object": …}` as the API server
//! streams them, until `timeoutSeconds`.
//!
//! Held to the API server's conventions (`api-concepts`, "Efficient detection of changes"):
//! every write, the controller's status changes included, gets a new `resourceVersion` and an
//! event; a watch from a version whose events are no longer kept gets HTTP 200 and one
//! `ERROR` event with a 410 `Expired` Status; without a version (or `"0"`) it starts with a
//! synthetic `ADDED` for each object there; `allowWatchBookmarks` ends a stream that times out
//! with a `BOOKMARK` of the current version; `Accept: …;as=PartialObjectMetadata` sends
//! metadata only. Label and namespace scoping as for a LIST.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Bytes, Frame};
use serde_json::{Value, json};

use crate::store::{ApiError, Store, key};
use crate::types::ResourceType;

/// Events kept for watches that resume (the API server keeps a window of them too).
const KEPT: usize = 20_000;

/// `timeoutSeconds` unless given (the API server picks 30–60 min; tests want less).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

pub(crate) struct Event {
    rv: u64,
    resource: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

/// The recent changes of every kind, in `resourceVersion` order.
pub(crate) struct Events {
    log: VecDeque<Event>,
    /// The newest version whose event is no longer kept.
    forgotten: u64,
    /// The newest version recorded, for streams waiting on the next.
    latest: tokio::sync::watch::Sender<u64>,
}

impl Default for Events {
    fn default() -> Self {
        Events { log: VecDeque::new(), forgotten: 0, latest: tokio::sync::watch::channel(0).0 }
    }
}

impl Events {
    /// Note a change; `object` carries its new `resourceVersion`.
    pub(crate) fn record(&mut self, resource: &str, kind: &'static str, object: &Value) {
        let rv = object.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|v| v.parse().ok());
        let Some(rv) = rv else { return };
        if self.log.len() == KEPT
            && let Some(old) = self.log.pop_front()
        {
            self.forgotten = old.rv;
        }
        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string();
        self.log.push_back(Event { rv, resource: resource.to_string(), namespace, kind, object: object.clone() });
        self.latest.send_replace(rv);
    }
}

/// What one watch asked for.
pub(crate) struct Request {
    pub resource: ResourceType,
    pub namespace: Option<String>,
    pub labels: Option<String>,
    pub resource_version: Option<String>,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    pub metadata_only: bool,
}

/// A response body fed by the stream's task, one event per frame.
pub(crate) struct Stream(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

/// Start streaming the changes `req` asks for; a bad selector is refused before the stream.
pub(crate) fn start(store: Arc<Mutex<Store>>, req: Request) -> Result<Stream, ApiError> {
    let selector =
        req.labels.as_deref().map(drover_kube::labels::Selector::parse).transpose().map_err(ApiError::bad_request)?;
    let resource = key(&req.resource);
    let wanted = move |namespace: &str, object: &Value| {
        req.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && selector.as_ref().is_none_or(|s| s.matches(object.pointer("/metadata/labels")))
    };
    let line = move |kind: &str, object: &Value| {
        let object = if req.metadata_only {
            json!({ "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"] })
        } else {
            object.clone()
        };
        Bytes::from(format!("{}\n", json!({ "type": kind, "object": object })))
    };
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let mut changed = store.lock().unwrap_or_else(|e| e.into_inner()).events.latest.subscribe();
    // From a version: what came after it. Without one (or "0"): what is there now, then on.
    let (mut cursor, mut first): (u64, Vec<Bytes>) = {
        let s = store.lock().unwrap_or_else(|e| e.into_inner());
        match req.resource_version.as_deref().filter(|v| !v.is_empty() && *v != "0") {
            Some(v) => match v.parse::<u64>() {
                Ok(v) => (v, vec![]),
                Err(_) => return Err(ApiError::bad_request(format!("invalid resource version: {v:?}"))),
            },
            None => {
                let now = s.resource_version;
                let there = s.objects.get(&resource).into_iter().flat_map(|m| m.iter());
                (now, there.filter(|((ns, _), o)| wanted(ns, o)).map(|(_, o)| line("ADDED", o)).collect())
            }
        }
    };
    let timeout = req.timeout.unwrap_or(DEFAULT_TIMEOUT);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.borrow_and_update();
            let (lines, expired) = {
                let s = store.lock().unwrap_or_else(|e| e.into_inner());
                let events = &s.events;
                if cursor < events.forgotten {
                    (vec![], Some((cursor, events.forgotten)))
                } else {
                    let from = events.log.partition_point(|e| e.rv <= cursor);
                    let lines: Vec<Bytes> = events
                        .log
                        .range(from..)
                        .filter(|e| e.resource == resource && wanted(&e.namespace, &e.object))
                        .map(|e| line(e.kind, &e.object))
                        .collect();
                    cursor = events.log.back().map_or(cursor, |e| e.rv.max(cursor));
                    (lines, None)
                }
            };
            if let Some((asked, oldest)) = expired {
                let status = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {asked} ({oldest})"), "reason": "Expired", "code": 410 });
                let _ = tx.send(Bytes::from(format!("{}\n", json!({ "type": "ERROR", "object": status })))).await;
                return;
            }
            for l in first.drain(..).chain(lines) {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    if req.bookmarks {
                        let mark = json!({ "type": "BOOKMARK", "object": { "kind": req.resource.kind, "apiVersion": req.resource.api_version(),
                            "metadata": { "resourceVersion": cursor.to_string() } } });
                        let _ = tx.send(Bytes::from(format!("{mark}\n"))).await;
                    }
                    return;
                }
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Stream(rx))
}
