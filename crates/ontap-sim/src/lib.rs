//! A simulator of the ONTAP REST API for SnapMirror, SVM-DR and FlexClone
//! (`shared/docs/ONTAP-REST.md`), used by the tests and the lab, runnable on its own.
//!
//! Several clusters, each on its own loopback port with its own credentials, share one
//! replication model. HTTPS with a self-signed certificate when `settings.tls` is on. Faults
//! can be injected (sync errors, job failures, latency, dropped connections), and a cluster can
//! be taken down: its port is closed, so connections are refused as with a dead site.

mod api;
mod changes;
mod dialect;
mod effects;
mod query;
mod records;
pub mod topology;
mod wire;
pub mod world;

use drover_ontap::model::JobState;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use topology::{Settings, Topology};
pub use world::{ApiError, Fault, FaultKind, RecordedRequest, World};

/// Would a cluster running `release` accept this request's path, `fields=`, query and body
/// fields? The same check the simulator makes before its model sees a request.
pub fn accepts(release: &drover_ontap::release::Release, r: &RecordedRequest) -> Result<(), ApiError> {
    let segs: Vec<&str> = r.path.trim_end_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let target =
        dialect::target(release, &segs).ok_or_else(|| ApiError::new(404, "4", format!("API not found: {}", r.path)))?;
    dialect::check(&target, &r.method, &r.query, &r.body)
}

/// One simulated cluster's address.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
    pub addr: SocketAddr,
}

/// A running simulator; dropping it stops every cluster.
pub struct Simulator {
    world: Arc<Mutex<World>>,
    endpoints: Vec<Endpoint>,
    up: Vec<watch::Sender<bool>>,
    ca: Option<(String, tempfile_path::TempPath)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

mod tempfile_path {
    use std::path::{Path, PathBuf};

    /// A file removed on drop.
    #[derive(Debug)]
    pub struct TempPath(pub PathBuf);

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    impl AsRef<Path> for TempPath {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }
}

type Tls = Option<tokio_rustls::TlsAcceptor>;

impl Simulator {
    /// Start every cluster of the topology on 127.0.0.1.
    pub async fn start(topology: &Topology) -> Result<Simulator, String> {
        Simulator::start_with_clock(topology, drover_sim_kit::Clock::real()).await
    }

    /// Start with a clock of the test's own: with [`drover_sim_kit::Clock::manual`], jobs and
    /// transfers end only when the test advances it.
    pub async fn start_with_clock(topology: &Topology, clock: drover_sim_kit::Clock) -> Result<Simulator, String> {
        let mut world = World::new(topology)?;
        world.clock = clock;
        let tls = topology.settings.tls;
        let world = Arc::new(Mutex::new(world));
        let (acceptor, ca) = if tls {
            let (acceptor, pem) = drover_api::testing::self_signed_tls()?;
            let path = std::env::temp_dir().join(format!(
                "drover-ontap-sim-ca-{}-{}.pem",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::write(&path, &pem).map_err(|e| format!("cannot write the simulator's CA file: {e}"))?;
            // Removed on drop; and when the process ends any other way, by the janitor.
            drover_api::procs::remove_at_exit(path.clone());
            (Some(acceptor), Some((pem, tempfile_path::TempPath(path))))
        } else {
            (None, None)
        };
        let mut sim = Simulator { world, endpoints: vec![], up: vec![], ca, tasks: vec![] };
        for (i, c) in topology.clusters.iter().enumerate() {
            let listener = TcpListener::bind(("127.0.0.1", c.port))
                .await
                .map_err(|e| format!("cluster {}: cannot listen: {e}", c.name))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let scheme = if tls { "https" } else { "http" };
            let url = if tls { format!("{scheme}://localhost:{}", addr.port()) } else { format!("{scheme}://{addr}") };
            sim.endpoints.push(Endpoint { name: c.name.clone(), url, addr });
            let (tx, rx) = watch::channel(true);
            sim.up.push(tx);
            sim.tasks.push(tokio::spawn(serve(listener, addr, rx, sim.world.clone(), i, acceptor.clone())));
        }
        Ok(sim)
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub fn url(&self, cluster: &str) -> String {
        self.endpoints.iter().find(|e| e.name == cluster).map(|e| e.url.clone()).unwrap_or_default()
    }

    /// The PEM file of the self-signed certificate (HTTPS only): a client's `ca_file`.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.ca.as_ref().map(|(_, p)| p.0.clone())
    }

    /// Take a cluster down (its port closes: connection refused) or bring it back.
    pub fn set_reachable(&self, cluster: &str, up: bool) {
        let Some(i) = self.endpoints.iter().position(|e| e.name == cluster) else { return };
        self.world.lock().unwrap_or_else(|e| e.into_inner()).clusters[i].reachable = up;
        let _ = self.up[i].send(up);
    }

    pub fn inject(&self, fault: Fault) {
        self.world.lock().unwrap_or_else(|e| e.into_inner()).faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.world.lock().unwrap_or_else(|e| e.into_inner()).faults.clear();
    }

    /// Each cluster's `ontap:` site settings, with its password written to a file in `dir`
    /// (mode 0600) and referenced as `file:PATH`.
    pub fn site_sections(&self, dir: &std::path::Path) -> Result<Vec<(String, Value)>, String> {
        use std::os::unix::fs::PermissionsExt;
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets).map_err(|e| format!("cannot create {}: {e}", secrets.display()))?;
        let w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![];
        for (c, e) in w.clusters.iter().zip(&self.endpoints) {
            let file = secrets.join(format!("ontap-{}.password", c.name));
            std::fs::write(&file, &c.password).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
            let mut section = serde_json::json!({
                "url": e.url,
                "username": c.username,
                "credentials": format!("file:{}", file.display()),
            });
            if let Some(ca) = self.ca_file() {
                section["ca_file"] = serde_json::json!(ca);
            }
            out.push((c.name.clone(), section));
        }
        Ok(out)
    }

    /// The simulator's clock (to advance, when it is manual).
    pub fn clock(&self) -> drover_sim_kit::Clock {
        self.world.lock().unwrap_or_else(|e| e.into_inner()).clock.clone()
    }

    /// Read or change the model directly (tests and the lab).
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        w.tick();
        f(&mut w)
    }
}

async fn serve(
    mut listener: TcpListener,
    addr: SocketAddr,
    mut up: watch::Receiver<bool>,
    world: Arc<Mutex<World>>,
    cluster: usize,
    tls: Tls,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let world = world.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(req, world.clone(), cluster));
                    drover_sim_kit::serve::connection(stream, tls.as_ref(), service).await;
                });
            }
            changed = up.changed() => {
                if changed.is_err() {
                    return;
                }
                if !*up.borrow() {
                    // Site down: close the port, wait until it comes back, listen again.
                    drop(listener);
                    while up.changed().await.is_ok() && !*up.borrow() {}
                    listener = loop {
                        match TcpListener::bind(addr).await {
                            Ok(l) => break l,
                            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                        }
                    };
                }
            }
        }
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

fn respond(status: u16, body: &Value, location: Option<String>) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status).header("content-type", "application/hal+json");
    if let Some(l) = location {
        r = r.header("location", l);
    }
    // `to_vec`, not `to_string`: Display writes through a formatter, a call per token.
    let body =
        serde_json::to_vec(body).unwrap_or_else(|e| format!("cannot write the answer as JSON: {e}").into_bytes());
    r.body(Full::new(Bytes::from(body))).expect("valid response")
}

fn parse_query(q: Option<&str>) -> world::Query {
    let mut out = vec![];
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((decode(k), decode(v)));
    }
    world::Query(out)
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    req: Request<Incoming>,
    world: Arc<Mutex<World>>,
    cluster: usize,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query());
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();

    // Faults first: they model the network and the server, not the API.
    let fault = {
        let mut w = world.lock().unwrap_or_else(|e| e.into_inner());
        let name = w.clusters[cluster].name.clone();
        drover_sim_kit::fault::take(&mut w.faults, &name, &method, &path)
    };
    match fault {
        Some(FaultKind::Latency(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::DropConnection) => return Err(Dropped),
        Some(FaultKind::SyncError { status, code, message }) => {
            return Ok(respond(status, &ApiError::new(status, code, message).body(), None));
        }
        Some(FaultKind::JobFailure { code, message }) => {
            world.lock().unwrap_or_else(|e| e.into_inner()).pending_job_failure = Some((code, message));
        }
        None => {}
    }

    let answer = match route_locked(&world, cluster, &method, &path, &query, auth.as_deref(), &bytes) {
        Ok(a) => a,
        Err(early) => return Ok(*early),
    };
    let answer = match answer {
        Ok(a) if a.status == 202 => wait_return_timeout(&world, a, &query).await,
        other => other,
    };
    Ok(match answer {
        Ok(a) => respond(a.status, &a.body, a.location),
        Err(e) => respond(e.status, &e.body(), None),
    })
}

/// Authenticate, decode the body and route, all under the world's lock. `Err` is an answer
/// to send as is (401, invalid JSON).
fn route_locked(
    world: &Arc<Mutex<World>>,
    cluster: usize,
    method: &str,
    path: &str,
    query: &world::Query,
    auth: Option<&str>,
    bytes: &[u8],
) -> Result<Result<api::Answer, ApiError>, Box<Response<Full<Bytes>>>> {
    let mut w = world.lock().unwrap_or_else(|e| e.into_inner());
    let c = &w.clusters[cluster];
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password)));
    if auth != Some(expected.as_str()) {
        let body = ApiError::new(401, "6691623", "User is not authorized.").body();
        return Err(Box::new(respond(401, &body, None)));
    }
    let body: Value = if bytes.is_empty() {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice(bytes) {
            Ok(v) => query::normalise_body(v),
            Err(e) => {
                let err = ApiError::new(400, "2", format!("The request body is not valid JSON: {e}"));
                return Err(Box::new(respond(400, &err.body(), None)));
            }
        }
    };
    w.tick();
    if w.requests.len() == 100_000 {
        w.requests.pop_front();
    }
    w.requests.push_back(world::RecordedRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query.clone(),
        body: body.clone(),
    });
    let answer = api::route(&mut w, cluster, method, path, query, &body);
    if answer.is_err() {
        // A job failure armed for this request must not leak to a later one.
        w.pending_job_failure = None;
    }
    Ok(answer)
}

/// `return_timeout=N`: wait up to N seconds for the job; a job that ended in time is answered
/// with 200 (or its failure as an error body) instead of 202.
async fn wait_return_timeout(
    world: &Arc<Mutex<World>>,
    a: api::Answer,
    query: &world::Query,
) -> Result<api::Answer, ApiError> {
    let secs = query.get("return_timeout").and_then(|t| t.parse::<u64>().ok()).unwrap_or(0).min(120);
    let Some(uuid) = a.body.pointer("/job/uuid").and_then(Value::as_str).map(str::to_string) else { return Ok(a) };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while secs > 0 && std::time::Instant::now() < until {
        {
            let mut w = world.lock().unwrap_or_else(|e| e.into_inner());
            w.tick();
            match w.job(&uuid).map(|j| (j.state, j.code, j.message.clone())) {
                Some((JobState::Success, _, _)) => return Ok(api::Answer { status: 200, ..a }),
                Some((JobState::Failure, code, message)) => {
                    return Err(ApiError::new(400, code.to_string(), message));
                }
                _ => {}
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("svm_dr%3A"), "svm_dr:");
        assert_eq!(decode("a%2Cb"), "a,b");
        assert_eq!(decode("100%"), "100%");
    }
}
