//! A Kubernetes API simulator held to the API server's conventions
//! (`shared/docs/TEST-SERVERS.md`, "Kubernetes API"): discovery, the REST paths of core and
//! grouped resources, GET/LIST/POST/PUT/PATCH/DELETE with `dryRun=All`, server-set metadata,
//! `status` subresources, `Status` errors, bearer-token auth, and a small controller so that
//! waits for readiness mean something. No Kubernetes API server can be installed on these
//! machines; this one is for tests and the lab.
//!
//! Faults can be injected: latency, 429 with `Retry-After`, 500, dropped connections.
//! WATCH streams every change, the controller's included (`src/watch.rs`).

mod apply;
mod controller;
mod status;
pub mod store;
pub mod types;
mod watch;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use drover_kube::patch;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub use store::{ApiError, Settings, Store};

/// A fault injected into the cluster's answers (`server` is ignored: one server).
pub type Fault = drover_sim_kit::Fault<FaultKind>;

#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Delay the request: it is served after the pause, as the store is then.
    Latency(std::time::Duration),
    /// Delay the answer: it is made at once, as the store is now, and sent after the pause —
    /// a reply still on its way while the cluster changes.
    SlowAnswer(std::time::Duration),
    /// 429 TooManyRequests with `Retry-After: seconds`.
    Throttle(u64),
    /// 500 InternalError.
    ServerError,
    /// Close the connection without an answer.
    Drop,
}

/// A running simulated cluster; dropping it stops the server.
pub struct Cluster {
    store: Arc<Mutex<Store>>,
    faults: Arc<Mutex<Vec<Fault>>>,
    addr: SocketAddr,
    token: String,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
    /// The controller, on time (see [`controller`]).
    controller: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// An answer's body: whole, or a watch's stream.
type Body = BoxBody<Bytes, std::convert::Infallible>;

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Cluster {
    /// Serve HTTPS on 127.0.0.1 (port 0 picks a free one) with a fresh self-signed
    /// certificate; requests need `Authorization: Bearer TOKEN`.
    pub async fn start(port: u16, token: &str, settings: Settings) -> Result<Cluster, String> {
        Cluster::start_with_clock(port, token, settings, drover_sim_kit::Clock::real()).await
    }

    /// Like [`Cluster::start`], on a clock of the test's own: with
    /// [`drover_sim_kit::Clock::manual`] workloads become ready, claims bind and namespaces go
    /// only when the test advances it.
    pub async fn start_with_clock(
        port: u16,
        token: &str,
        settings: Settings,
        clock: drover_sim_kit::Clock,
    ) -> Result<Cluster, String> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| format!("cannot listen: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (acceptor, ca_pem) = drover_api::testing::self_signed_tls()?;
        let mut store = Store::new(settings);
        store.clock = clock;
        let store = Arc::new(Mutex::new(store));
        let faults: Arc<Mutex<Vec<Fault>>> = Arc::default();
        let (s, t, f) = (store.clone(), token.to_string(), faults.clone());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (s, t, f, acceptor) = (s.clone(), t.clone(), f.clone(), acceptor.clone());
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(req, s.clone(), t.clone(), f.clone()));
                    let conn = drover_sim_kit::serve::connection(stream, Some(&acceptor), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        let controller = tokio::spawn(run_controller(store.clone()));
        Ok(Cluster { store, faults, addr, token: token.to_string(), ca_pem, task, controller, stop })
    }

    /// The cluster goes away: the port closes and open connections drop (a lost site).
    pub fn stop(&self) {
        self.task.abort();
        self.controller.abort();
        let _ = self.stop.send(true);
    }

    /// The PEM certificate clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The cluster's clock (to advance, when it is manual).
    pub fn clock(&self) -> drover_sim_kit::Clock {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).clock.clone()
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).push(fault);
    }

    pub fn clear_faults(&self) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// A kubeconfig for this cluster (context `name`), to write to a file of mode 0600.
    pub fn kubeconfig(&self, name: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{ "name": name, "cluster": {
                "server": self.url(),
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
            } }],
            "users": [{ "name": name, "user": { "token": self.token } }],
            "contexts": [{ "name": name, "context": { "cluster": name, "user": name, "namespace": "default" } }],
        })
    }

    /// Read or change the objects directly (tests and the lab).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        self.handle().with_store(f)
    }

    /// The store, for a controller running beside the server (tests play operators' add-ons).
    pub fn handle(&self) -> StoreHandle {
        StoreHandle(self.store.clone())
    }
}

/// Shared access to a running cluster's store.
#[derive(Clone)]
pub struct StoreHandle(Arc<Mutex<Store>>);

impl StoreHandle {
    /// Run `f` on the store after the built-in controller's tick.
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.tick();
        f(&mut s)
    }
}

/// The controller's task: a tick whenever something is due, so that changes happen (and
/// watches see them) with nobody asking. On a manual clock it looks every 20 ms of real time.
async fn run_controller(store: Arc<Mutex<Store>>) {
    let marked = store.lock().unwrap_or_else(|e| e.into_inner()).changes.marked.clone();
    loop {
        let pause = {
            let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
            s.tick();
            let idle = if s.clock.is_manual() {
                std::time::Duration::from_millis(20)
            } else {
                std::time::Duration::from_secs(1)
            };
            s.next_tick(idle)
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = marked.notified() => {}
        }
    }
}

fn respond(status: u16, body: &impl serde::Serialize) -> Response<Body> {
    let body =
        serde_json::to_vec(body).unwrap_or_else(|e| format!("cannot write the answer as JSON: {e}").into_bytes());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("valid response")
}

fn error(e: &ApiError) -> Response<Body> {
    respond(e.code, &e.status())
}

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Apply a merge, strategic or JSON patch to a value (for subresources).
fn patch_value(v: &mut Value, content_type: &str, body: &Value) -> Result<(), ApiError> {
    match content_type {
        "application/json-patch+json" => patch::json_patch(v, body).map_err(ApiError::bad_request),
        "application/strategic-merge-patch+json" => {
            patch::strategic(v, body);
            Ok(())
        }
        _ => {
            patch::merge(v, body);
            Ok(())
        }
    }
}

/// A request path, parsed: which type, namespace, name and subresource.
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => {
            (Some(ns.to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(tail);
                v
            })
        }
        other => (None, other.to_vec()),
    };
    let plural = rest.first()?.to_string();
    Some(Target {
        group,
        version,
        plural,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// The first fault matching this request, counted.
fn take_fault(faults: &Mutex<Vec<Fault>>, method: &str, path: &str) -> Option<FaultKind> {
    let mut faults = faults.lock().unwrap_or_else(|e| e.into_inner());
    drover_sim_kit::fault::take(&mut faults, "", method, path)
}

async fn handle(
    req: Request<Incoming>,
    store: Arc<Mutex<Store>>,
    token: String,
    faults: Arc<Mutex<Vec<Fault>>>,
) -> Result<Response<Body>, Dropped> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    match take_fault(&faults, &method, &path) {
        Some(FaultKind::Latency(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::Drop) => return Err(Dropped),
        Some(FaultKind::Throttle(secs)) => {
            let e = ApiError {
                code: 429,
                reason: "TooManyRequests",
                message: "Too many requests, please try again later.".into(),
                details: json!({ "retryAfterSeconds": secs }),
            };
            let mut r = error(&e);
            r.headers_mut().insert("retry-after", secs.into());
            return Ok(r);
        }
        Some(FaultKind::ServerError) => {
            let e = ApiError {
                code: 500,
                reason: "InternalError",
                message: "Internal error occurred: injected fault".into(),
                details: json!({}),
            };
            return Ok(error(&e));
        }
        Some(FaultKind::SlowAnswer(d)) => {
            let answer = answer(req, store, token).await;
            tokio::time::sleep(d).await;
            return answer;
        }
        None => {}
    }
    answer(req, store, token).await
}

/// The cluster's answer to `req`, as the store is now.
async fn answer(req: Request<Incoming>, store: Arc<Mutex<Store>>, token: String) -> Result<Response<Body>, Dropped> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = query_pairs(req.uri().query());
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let metadata_only = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if auth.as_deref() != Some(format!("Bearer {token}").as_str()) {
        let e = ApiError { code: 401, reason: "Unauthorized", message: "Unauthorized".into(), details: json!({}) };
        return Ok(error(&e));
    }
    let q = |k: &str| query.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
    let dry = q("dryRun") == Some("All");
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else if content_type == "application/apply-patch+yaml" {
        match serde_yaml::from_slice::<Value>(&bytes) {
            Ok(v) => v,
            Err(e) => return Ok(error(&ApiError::bad_request(format!("error decoding YAML: {e}")))),
        }
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return Ok(error(&ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))));
            }
        }
    };
    let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
    s.tick();
    if s.requests.len() == 100_000 {
        s.requests.pop_front();
    }
    s.requests.push_back((method.clone(), path.clone()));
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/version") => {
            return Ok(respond(
                200,
                &json!({ "major": "1", "minor": "31", "gitVersion": "v1.31.0-drover-sim", "platform": "linux/amd64" }),
            ));
        }
        ("GET", "/api") => return Ok(respond(200, &types::core_versions())),
        ("GET", "/apis") => return Ok(respond(200, &types::group_list(&s.types))),
        _ => {}
    }
    // Discovery of one group version: `/api/v1`, `/apis/apps/v1`.
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let discovery = match segs.as_slice() {
        ["api", v] if method == "GET" => Some(("", *v)),
        ["apis", g, v] if method == "GET" => Some((*g, *v)),
        _ => None,
    };
    if let Some((g, v)) = discovery {
        return Ok(match types::resource_list(&s.types, g, v) {
            Some(list) => respond(200, &list),
            None => error(&ApiError::unknown_resource()),
        });
    }
    let Some(t) = parse_path(&path) else { return Ok(error(&ApiError::unknown_resource())) };
    let rt = match s.find(&t.group, &t.version, &t.plural) {
        Some(rt) if rt.namespaced || t.namespace.is_none() => rt,
        _ => return Ok(error(&ApiError::unknown_resource())),
    };
    let ns = t.namespace.as_deref();
    if t.sub.as_deref() == Some("scale") && rt.scale {
        let name = t.name.as_deref().unwrap_or_default();
        let result = match method.as_str() {
            "GET" => s.get_scale(&rt, ns, name),
            "PUT" => s.set_scale(&rt, ns, name, &body, dry),
            "PATCH" => s.get_scale(&rt, ns, name).and_then(|mut scale| {
                patch_value(&mut scale, &content_type, &body)?;
                s.set_scale(&rt, ns, name, &scale, dry)
            }),
            _ => Err(ApiError::bad_request(format!("{method} is not supported on /scale"))),
        };
        return Ok(match result {
            Ok(v) => respond(200, &v),
            Err(e) => error(&e),
        });
    }
    let status_only = match t.sub.as_deref() {
        None => false,
        Some("status") if rt.status => true,
        Some(_) => return Ok(error(&ApiError::unknown_resource())),
    };
    if method == "GET" && t.name.is_none() && matches!(q("watch"), Some("true" | "1")) {
        let request = watch::Request {
            resource: rt,
            namespace: ns.map(String::from),
            labels: q("labelSelector").map(String::from),
            resource_version: q("resourceVersion").map(String::from),
            timeout: q("timeoutSeconds").and_then(|t| t.parse().ok()).map(std::time::Duration::from_secs),
            bookmarks: q("allowWatchBookmarks") == Some("true"),
            metadata_only,
        };
        drop(s);
        return Ok(match watch::start(store, request) {
            Ok(stream) => Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(stream.boxed())
                .expect("valid response"),
            Err(e) => error(&e),
        });
    }
    let result = match (method.as_str(), t.name.as_deref()) {
        ("GET", None) => {
            let limit = q("limit").and_then(|l| l.parse().ok());
            return Ok(match s.list(&rt, ns, q("labelSelector"), q("fieldSelector"), limit, q("continue")) {
                Ok(page) => respond(200, &page),
                Err(e) => error(&e),
            });
        }
        ("GET", Some(name)) => s.get(&rt, ns, name).map(|v| (200, v)),
        ("POST", None) => s.create(&rt, ns, body, dry).map(|v| (201, v)),
        ("PUT", Some(name)) => s
            .replace(
                &rt,
                ns,
                name,
                body,
                store::Write { status_only, dry, manager: q("fieldManager").map(String::from) },
            )
            .map(|v| (200, v)),
        ("PATCH", Some(name)) if content_type == "application/apply-patch+yaml" => s
            .apply(
                &rt,
                ns,
                name,
                &body,
                store::Applier { manager: q("fieldManager"), force: q("force") == Some("true") },
                dry,
            )
            .map(|v| (200, v)),
        ("PATCH", Some(name)) => s
            .patch(
                &rt,
                ns,
                name,
                &content_type,
                &body,
                store::Write { status_only, dry, manager: q("fieldManager").map(String::from) },
            )
            .map(|v| (200, v)),
        ("DELETE", Some(name)) => s.delete(&rt, ns, name, dry).map(|v| (200, v)),
        _ => Err(ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!("the server does not allow this method on the requested resource ({method})"),
            details: json!({}),
        }),
    };
    Ok(match result {
        Ok((code, v)) => respond(code, &v),
        Err(e) => error(&e),
    })
}
