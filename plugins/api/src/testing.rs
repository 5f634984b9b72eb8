//! Helpers for testing an action outside the engine: a host that approves every gate and
//! discards progress, a context built from sites and a time budget, a scripted HTTP server for
//! answers no real server gives on demand, and the S3 servers the tests start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::{ActionError, Mode, Progress, StepContext, StepHost};

/// Approves every gate as `tester`; progress, notes and checkpoints go nowhere.
pub struct NullHost;

#[async_trait]
impl StepHost for NullHost {
    fn progress(&self, _: &str, _: Progress) {}
    fn note(&self, _: &str, _: &str) {}
    async fn checkpoint(&self, _: &str, _: Value) {}
    async fn approve(&self, _: &str, _: &str) -> Result<String, ActionError> {
        Ok("tester".into())
    }
}

/// A running step (`run`/`step-1`, attempt 1) with these sites and this much time left.
pub fn context(sites: BTreeMap<String, Value>, budget: Duration) -> StepContext {
    context_with_host(sites, budget, Arc::new(NullHost))
}

/// Like [`context`], keeping what the step tells its host: notes (what the report shows under
/// the step) and checkpoints (what a resumed step would get back).
pub fn context_recording(sites: BTreeMap<String, Value>, budget: Duration) -> (StepContext, Arc<Recorded>) {
    let recorded = Arc::new(Recorded::default());
    (context_with_host(sites, budget, recorded.clone()), recorded)
}

fn context_with_host(sites: BTreeMap<String, Value>, budget: Duration, host: Arc<dyn StepHost>) -> StepContext {
    StepContext::new(
        "run",
        "step-1",
        1,
        Mode::Run,
        Some(tokio::time::Instant::now() + budget),
        Arc::new(sites),
        Default::default(),
        host,
        None,
    )
}

/// [`NullHost`], keeping notes and checkpoints in order.
#[derive(Default)]
pub struct Recorded {
    pub notes: std::sync::Mutex<Vec<String>>,
    pub checkpoints: std::sync::Mutex<Vec<Value>>,
}

#[async_trait]
impl StepHost for Recorded {
    fn progress(&self, _: &str, _: Progress) {}
    fn note(&self, _: &str, message: &str) {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).push(message.to_string());
    }
    async fn checkpoint(&self, _: &str, value: Value) {
        self.checkpoints.lock().unwrap_or_else(|p| p.into_inner()).push(value);
    }
    async fn approve(&self, _: &str, _: &str) -> Result<String, ActionError> {
        Ok("tester".into())
    }
}

/// Bodies no JSON API should send, for hostile-answer tests: empty, cut short, or the wrong
/// kind of JSON value.
pub const BROKEN_JSON: &[&str] = &["", "{", "null", "[]", "\"a string\"", "12"];

/// A plain-HTTP server on loopback that answers each request with the next `(status, body)` of
/// its script and repeats the last one forever after (an empty script never answers) — a
/// broken or hostile API on demand. Stopped on drop.
pub struct ScriptedHttp {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

/// A fixed answer for one request path (query string ignored).
pub type Route = (String, (u16, String));

impl ScriptedHttp {
    pub async fn start(script: Vec<(u16, String)>) -> ScriptedHttp {
        ScriptedHttp::serve(vec![], Some(script)).await
    }

    /// Requests for a routed path get its fixed answer; the rest follow the script.
    pub async fn routed(routes: Vec<Route>, script: Vec<(u16, String)>) -> ScriptedHttp {
        ScriptedHttp::serve(routes, Some(script)).await
    }

    /// Accepts connections, reads requests and never answers.
    pub async fn silent() -> ScriptedHttp {
        ScriptedHttp::serve(vec![], None).await
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn serve(routes: Vec<Route>, script: Option<Vec<(u16, String)>>) -> ScriptedHttp {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let script = Arc::new(std::sync::Mutex::new(script));
        let routes = Arc::new(routes);
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (script, routes) = (script.clone(), routes.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        let head = String::from_utf8_lossy(&buf[..n]);
                        let path = head.split(' ').nth(1).unwrap_or("").split('?').next().unwrap_or("");
                        let routed = routes.iter().find(|(p, _)| p == path).map(|(_, answer)| answer.clone());
                        let next = routed.or_else(|| {
                            script
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .as_mut()
                                .and_then(|s| if s.len() > 1 { Some(s.remove(0)) } else { s.first().cloned() })
                        });
                        let Some((status, body)) = next else { continue };
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        ScriptedHttp { port, task }
    }
}

impl Drop for ScriptedHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP link on loopback to a real server that holds every answer back for `delay` — a slow
/// network or an overloaded server, which no real server is on demand. Stopped on drop.
pub struct SlowLink {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    pub async fn to(upstream: &str, delay: Duration) -> SlowLink {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let requests = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                        tokio::time::sleep(delay).await;
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    requests.abort();
                });
            }
        });
        SlowLink { port, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP link on loopback to a real server that counts the connections made through it and
/// keeps the most it ever had open at once. A connection counts as closed once the server's
/// answer has ended, before the client can see that end. Stopped on drop.
pub struct CountingLink {
    pub port: u16,
    opened: Arc<std::sync::atomic::AtomicUsize>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingLink {
    pub async fn to(upstream_port: u16) -> CountingLink {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let (opened, peak, open) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (counted, seen) = (opened.clone(), peak.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counted.fetch_add(1, SeqCst);
                seen.fetch_max(open.fetch_add(1, SeqCst) + 1, SeqCst);
                let open = open.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                        open.fetch_sub(1, SeqCst);
                        return;
                    };
                    let (mut from_server, mut to_server) = server.into_split();
                    let (mut from_client, mut to_client) = client.split();
                    let ask = tokio::io::copy(&mut from_client, &mut to_server);
                    let answer = async {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                        open.fetch_sub(1, SeqCst);
                        let _ = to_client.shutdown().await;
                    };
                    let _ = tokio::join!(ask, answer);
                });
            }
        });
        CountingLink { port, opened, peak, task }
    }

    /// Connections made so far; `take` starts the count again.
    pub fn connections(&self, take: bool) -> usize {
        use std::sync::atomic::Ordering::SeqCst;
        if take { self.opened.swap(0, SeqCst) } else { self.opened.load(SeqCst) }
    }

    /// The most connections open at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS acceptor with a fresh self-signed certificate for `localhost` and `127.0.0.1`, and
/// that certificate as PEM for clients to trust. The simulators serve HTTPS with it, as the
/// real servers they stand in for do.
#[cfg(feature = "sim-tls")]
pub fn self_signed_tls() -> Result<(tokio_rustls::TlsAcceptor, String), String> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(|e| format!("bad certificate: {e}"))?;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), pem))
}

/// A loopback TCP port that refuses connections while this value lives. A socket is bound to
/// it and never listens: connecting gets a reset, and no other server can take the port in the
/// meantime — a port merely found free may be a parallel test's server by the time it is dialled.
pub struct RefusingPort {
    _socket: std::os::fd::OwnedFd,
    pub port: u16,
}

impl RefusingPort {
    pub fn new() -> RefusingPort {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor this function owns; `addr` outlives them.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "no socket: {}", std::io::Error::last_os_error());
            let socket = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let bound = libc::bind(fd, (&raw const addr).cast(), size);
            assert_eq!(bound, 0, "cannot bind a loopback port: {}", std::io::Error::last_os_error());
            let mut len = size;
            libc::getsockname(fd, (&raw mut addr).cast(), &mut len);
            RefusingPort { _socket: socket, port: u16::from_be(addr.sin_port) }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Default for RefusingPort {
    fn default() -> RefusingPort {
        RefusingPort::new()
    }
}

/// moto's S3/Route 53 server (PyPI `moto[server]`) on a free loopback port, stopped on drop.
/// Tests, benchmarks and the lab share this one way of starting it.
pub struct Moto {
    child: std::process::Child,
    url: String,
}

impl Moto {
    /// How moto ended, once it has; `None` while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Start `moto_server` and wait until it accepts connections.
    pub fn start() -> Result<Moto, String> {
        Moto::start_with(&[])
    }

    /// moto that checks credentials after its first `free` requests: later requests signed with
    /// a key moto's IAM does not know (every key, as no user is created) are refused with 403,
    /// as AWS refuses a wrong or revoked key.
    pub fn start_checking_credentials_after(free: u32) -> Result<Moto, String> {
        Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", &free.to_string())])
    }

    /// moto binds a port the kernel picks (`-p 0`) and names it in its first log line. Picking
    /// a free port here and handing it over would race: two servers started in the same
    /// instant could be handed one port, and the one that lost would exit while its test talked
    /// to the other's moto — until that test ended and took it away.
    fn start_with(env: &[(&str, &str)]) -> Result<Moto, String> {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", "0"])
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        // Dies with its parent (a test, or the lab), however that ends.
        let mut child = crate::procs::spawn(cmd).map_err(|e| {
            format!("cannot start moto_server ({e}): pip install 'moto[server]' (bash .ci/run installs it)")
        })?;
        let stderr = child.stderr.take().ok_or("moto_server has no stderr")?;
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        // Reads the log until moto names its address, then drains it so moto never blocks on
        // a full pipe.
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = &port_tx
                    && let Some(port) = moto_port(&line)
                {
                    let _ = tx.send(port);
                    port_tx = None;
                }
            }
        });
        let mut moto = Moto { child, url: String::new() };
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "moto_server did not say which port it listens on within 30 s".to_string())?;
        moto.url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline || moto.child.try_wait().ok().flatten().is_some() {
                return Err(format!("moto_server did not start on port {port}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(moto)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// An S3 client for this server (moto takes any credentials).
    #[cfg(feature = "s3")]
    pub fn s3(&self) -> aws_sdk_s3::Client {
        s3_client(&self.url, "test", "test")
    }

    /// Create a bucket; returns the client.
    #[cfg(feature = "s3")]
    pub async fn bucket(&self, name: &str) -> Result<aws_sdk_s3::Client, String> {
        let s3 = self.s3();
        s3.create_bucket().bucket(name).send().await.map_err(|e| format!("cannot create bucket {name}: {e}"))?;
        Ok(s3)
    }
}

/// The port in moto's (werkzeug's) ` * Running on http://127.0.0.1:PORT` line.
fn moto_port(line: &str) -> Option<u16> {
    let address = line.split("Running on http://").nth(1)?;
    address.trim().rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::procs::reaped(self.child.id());
    }
}

/// The access key id [`S3sFs`] accepts.
#[cfg(feature = "s3-server")]
pub const S3S_ACCESS_KEY: &str = "drover-test-access";
/// The secret key [`S3sFs`] accepts.
#[cfg(feature = "s3-server")]
pub const S3S_SECRET_KEY: &str = "drover-test-secret-d1f0";

/// s3s-fs (crates `s3s` and `s3s-fs`): an S3 server keeping objects in a temporary directory,
/// served in this process on a free loopback port, stopped on drop. Unlike moto it checks
/// SigV4 signatures: only [`S3S_ACCESS_KEY`] / [`S3S_SECRET_KEY`] get in. It honours
/// `If-None-Match: *` and `If-Match` on PUT — but checks them before writing, not atomically
/// (two PUTs in the same instant both pass). S3 promises atomic conditional writes, so this
/// server takes one request at a time, which makes them so.
#[cfg(feature = "s3-server")]
pub struct S3sFs {
    url: String,
    access_key: String,
    secret_key: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _root: tempfile::TempDir,
}

#[cfg(feature = "s3-server")]
impl S3sFs {
    /// Accepting [`S3S_ACCESS_KEY`] / [`S3S_SECRET_KEY`].
    pub fn start() -> Result<S3sFs, String> {
        S3sFs::start_with_keys(S3S_ACCESS_KEY, S3S_SECRET_KEY)
    }

    /// Accepting only this key pair.
    pub fn start_with_keys(access_key: &str, secret_key: &str) -> Result<S3sFs, String> {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let root = tempfile::tempdir().map_err(|e| format!("no temporary directory for s3s-fs: {e}"))?;
        crate::procs::remove_at_exit(root.path().to_path_buf());
        let fs = s3s_fs::FileSystem::new(root.path()).map_err(|e| format!("s3s-fs cannot use its root: {e:?}"))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(access_key, secret_key));
        let service = OneAtATime { service: builder.build(), turn: Arc::default() };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no loopback port: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
            let Ok(rt) = rt else { return };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let serve = async {
                    loop {
                        let Ok((socket, _)) = listener.accept().await else { continue };
                        let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                };
                tokio::select! {
                    _ = stopped => {}
                    () = serve => {}
                }
            });
        });
        Ok(S3sFs {
            url: format!("http://127.0.0.1:{port}"),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            stop: Some(stop),
            thread: Some(thread),
            _root: root,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// An S3 client with the credentials this server accepts.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        s3_client(&self.url, &self.access_key, &self.secret_key)
    }

    /// Create a bucket; returns the client.
    pub async fn bucket(&self, name: &str) -> Result<aws_sdk_s3::Client, String> {
        let s3 = self.s3();
        s3.create_bucket().bucket(name).send().await.map_err(|e| format!("cannot create bucket {name}: {e}"))?;
        Ok(s3)
    }
}

/// An S3 service taking one request at a time.
#[cfg(feature = "s3-server")]
#[derive(Clone)]
struct OneAtATime {
    service: s3s::service::S3Service,
    turn: Arc<tokio::sync::Mutex<()>>,
}

#[cfg(feature = "s3-server")]
type Served = <s3s::service::S3Service as hyper::service::Service<hyper::Request<hyper::body::Incoming>>>::Response;
#[cfg(feature = "s3-server")]
type Failed = <s3s::service::S3Service as hyper::service::Service<hyper::Request<hyper::body::Incoming>>>::Error;

#[cfg(feature = "s3-server")]
impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for OneAtATime {
    type Response = Served;
    type Error = Failed;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Served, Failed>> + Send>>;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let (service, turn) = (self.service.clone(), self.turn.clone());
        Box::pin(async move {
            let _turn = turn.lock().await;
            hyper::service::Service::call(&service, request).await
        })
    }
}

#[cfg(feature = "s3-server")]
impl Drop for S3sFs {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A path-style S3 client for a test server at `url`.
#[cfg(feature = "s3")]
pub fn s3_client(url: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(access_key, secret_key, None, None, "test"))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusing_port_refuses_and_cannot_be_taken() {
        let dead = RefusingPort::new();
        let err = std::net::TcpStream::connect(("127.0.0.1", dead.port)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(std::net::TcpListener::bind(("127.0.0.1", dead.port)).is_err(), "no server can take it");
    }

    #[test]
    fn moto_names_its_port_in_werkzeug_s_first_line() {
        assert_eq!(moto_port(" * Running on http://127.0.0.1:43893"), Some(43893));
        assert_eq!(moto_port(" * Running on http://127.0.0.1:43893/"), Some(43893));
        assert_eq!(moto_port("Press CTRL+C to quit"), None);
    }

    /// Real moto, several started in the same instant (as parallel tests do): each test must
    /// get a server of its own. Choosing the port here and handing it over let two of them be
    /// given one port now and then (a CI run failed on it when the other test's moto stopped).
    #[cfg(feature = "s3")]
    #[test]
    fn motos_started_at_the_same_moment_are_each_their_own_server() {
        let motos: Vec<Moto> = std::thread::scope(|s| {
            let started: Vec<_> = (0..6).map(|_| s.spawn(Moto::start)).collect();
            started.into_iter().map(|t| t.join().unwrap().unwrap()).collect()
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for (i, moto) in motos.iter().enumerate() {
                moto.bucket(&format!("only-in-{i}")).await.unwrap();
            }
            for (i, moto) in motos.iter().enumerate() {
                let listed = moto.s3().list_buckets().send().await.unwrap();
                let names: Vec<_> = listed.buckets().iter().filter_map(|b| b.name()).collect();
                assert_eq!(names, [format!("only-in-{i}")], "moto {i} at {}", moto.url());
            }
        });
    }
}
