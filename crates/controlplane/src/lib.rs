//! A real Kubernetes control plane on loopback: etcd, kube-apiserver (TLS, token
//! authentication, RBAC), kube-controller-manager, kube-scheduler and kwok's fake nodes, so
//! Deployments roll out, Pods turn Running and Ready, namespaces really terminate and garbage
//! is collected — without containers.
//!
//! The binaries are built from source by `tools/k8s/build.sh` at the releases pinned in
//! `tools/k8s/versions.env` and cached outside the checkout; [`Binaries::find`] looks there (or
//! in `DROVER_K8S_BIN`). Each control plane lives in a temporary directory with random loopback
//! ports, and dies with its owner: on drop, and — through [`procs`] — when the process ends,
//! however it ends. Processes are stopped by the PIDs this crate started, never by name.

mod pki;
pub use drover_api::procs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const VERSIONS: &str = include_str!("../../../tools/k8s/versions.env");

/// The pinned releases, as `tools/k8s/build.sh` builds them.
pub fn pinned(name: &str) -> &'static str {
    VERSIONS
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("tools/k8s/versions.env has no {name}"))
}

/// Where the built binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
}

const NEEDED: [&str; 6] =
    ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kwok-stages.yaml"];

impl Binaries {
    /// `DROVER_K8S_BIN`, else the cache `tools/k8s/build.sh` fills for the pinned releases.
    pub fn find() -> Result<Binaries, String> {
        let dir = match std::env::var_os("DROVER_K8S_BIN") {
            Some(d) => PathBuf::from(d),
            None => {
                let root = std::env::var_os("DROVER_K8S_CACHE").map(PathBuf::from).unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/drover/k8s")
                });
                root.join(format!(
                    "v{}-kwok{}-etcd{}/bin",
                    pinned("K8S_VERSION"),
                    pinned("KWOK_VERSION"),
                    pinned("ETCD_VERSION")
                ))
            }
        };
        let missing: Vec<&str> = NEEDED.iter().copied().filter(|b| !dir.join(b).exists()).collect();
        if missing.is_empty() {
            Ok(Binaries { dir })
        } else {
            Err(format!(
                "the real Kubernetes control plane is not built: {} missing in {} — run tools/k8s/build.sh (needs Go; `bash .ci/run` does it)",
                missing.join(", "),
                dir.display()
            ))
        }
    }

    /// Whether the binaries are there.
    pub fn available() -> bool {
        Binaries::find().is_ok()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A user the API server knows by a bearer token.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// `system:masters` makes a cluster admin; empty leaves the user to RBAC.
    pub groups: Vec<String>,
}

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cluster and context name in the kubeconfigs.
    pub name: String,
    /// Users besides `admin` (in `system:masters`), each with a kubeconfig of its own.
    pub users: Vec<User>,
    /// Fake nodes kwok keeps Ready.
    pub nodes: usize,
    /// etcd syncs every write to disk (as in production); tests go faster without.
    pub durable_etcd: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { name: "real".into(), users: vec![], nodes: 1, durable_etcd: false }
    }
}

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// How to start it again should it die; `None` for a component whose death ends the plane.
    restart: Option<Restart>,
}

/// kwok plays every node's kubelet and keeps no state of its own, so it can be started again
/// the way a node restarts its kubelet. kwok 0.8.0 has died once in CI just after it started
/// (exit status 2, in its server's `InstallMetrics`). Not reproduced here in ~500 starts; the
/// likely cause is that its CEL library (easycel 0.6.0) caches types in maps without a lock
/// while kwok builds CEL environments both there and on each controller's first event. Each
/// restart is written into its log.
struct Restart {
    program: PathBuf,
    args: Vec<String>,
    left: u32,
}

/// Restarts of kwok a control plane allows. Past them a death while the plane starts fails the
/// start (quoting kwok's log); one later is left for the tests' own waits to report.
const KWOK_RESTARTS: u32 = 5;

/// A running control plane; dropping it stops every process and removes its files.
pub struct ControlPlane {
    pub name: String,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// The CA that signed the API server's certificate (PEM).
    pub ca_pem: String,
    dir: PathBuf,
    tokens: BTreeMap<String, String>,
    procs: Arc<Mutex<Vec<Proc>>>,
}

/// A port free now, below Linux's ephemeral range (32768 and up by default): a port the kernel
/// hands out for `bind(0)` or an outgoing connection is likely to be taken again before the
/// server binds it. A collision is still possible, so `start` retries.
fn free_port() -> u16 {
    for _ in 0..200 {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn tail(path: &Path) -> String {
    log_excerpt(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The end of a component's log, and — when a Go program died of a panic or a fatal error
/// earlier than that end — the lines that say why and where: a crash's stack runs to hundreds
/// of frames, so its last lines alone never name the cause.
fn log_excerpt(text: &str) -> String {
    const END: usize = 15;
    const CAUSE: usize = 8;
    let lines: Vec<&str> = text.lines().collect();
    let end_from = lines.len().saturating_sub(END);
    let cause = lines[..end_from].iter().position(|l| l.starts_with("panic:") || l.starts_with("fatal error:"));
    match cause {
        Some(at) => {
            let cause_to = (at + CAUSE).min(end_from);
            let skipped = end_from - cause_to;
            let mut out = lines[at..cause_to].to_vec();
            let gap = format!("[… {skipped} lines …]");
            if skipped > 0 {
                out.push(&gap);
            }
            out.extend(&lines[end_from..]);
            out.join("\n")
        }
        None => lines[end_from..].join("\n"),
    }
}

/// Start `cmd` with its output going to `log`, in `dir`, dying with this process.
fn start_logging(mut cmd: Command, log: std::fs::File, dir: &Path) -> std::io::Result<Child> {
    let err = log.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(err).current_dir(dir);
    procs::spawn(cmd)
}

/// The first component that has exited and is not started again: one that has no restart, or
/// has used them up. A restartable one that died is started again here, its log appended to.
fn exited_for_good(procs: &Mutex<Vec<Proc>>, dir: &Path) -> Option<(&'static str, String, PathBuf)> {
    let mut procs = procs.lock().unwrap_or_else(|e| e.into_inner());
    procs.iter_mut().find_map(|p| {
        let status = p.child.try_wait().ok()??;
        procs::reaped(p.child.id());
        let restart = p.restart.as_mut().filter(|r| r.left > 0)?;
        restart.left -= 1;
        trace(&format!("{} exited ({status}); starting it again", p.name));
        let started = std::fs::OpenOptions::new().append(true).open(&p.log).and_then(|mut log| {
            use std::io::Write;
            writeln!(
                log,
                "--- drover: {} exited ({status}); started again ({} restarts left) ---",
                p.name, restart.left
            )?;
            let mut cmd = Command::new(&restart.program);
            cmd.args(&restart.args);
            start_logging(cmd, log, dir)
        });
        match started {
            Ok(child) => {
                p.child = child;
                None
            }
            Err(e) => Some((p.name, format!("{status}, and could not be started again: {e}"), p.log.clone())),
        }
    })
}

/// After the start, keep restartable components running for as long as the plane lives.
fn supervise(procs: Weak<Mutex<Vec<Proc>>>, dir: PathBuf) {
    std::thread::Builder::new()
        .name("controlplane-supervisor".into())
        .spawn(move || {
            while let Some(procs) = procs.upgrade() {
                let _ = exited_for_good(&procs, &dir);
                drop(procs);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
        .map(drop)
        .unwrap_or_else(|e| trace(&format!("cannot supervise kwok: {e}")));
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot protect {}: {e}", path.display()))
}

impl ControlPlane {
    /// Start every component and wait until the API server is ready and the nodes are Ready.
    pub async fn start(opts: Options) -> Result<ControlPlane, String> {
        // A port picked free can be taken before a component binds it: start again elsewhere.
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::start_once(&opts).await {
                Err(e) if tries < 3 && e.contains("address already in use") => {
                    trace(&format!("a port was taken before its server bound it; starting again: {e}"));
                }
                other => return other,
            }
        }
    }

    async fn start_once(opts: &Options) -> Result<ControlPlane, String> {
        let bins = Binaries::find()?;
        let dir = tempfile::Builder::new()
            .prefix("drover-k8s-")
            .tempdir()
            .map_err(|e| format!("cannot create a directory for the control plane: {e}"))?
            .keep();
        procs::remove_at_exit(dir.clone());
        let mut plane = ControlPlane {
            name: opts.name.clone(),
            url: String::new(),
            ca_pem: String::new(),
            dir: dir.clone(),
            tokens: BTreeMap::new(),
            procs: Arc::new(Mutex::new(vec![])),
        };
        // On any failure below, dropping `plane` stops what started.
        plane.boot(&bins, opts).await?;
        Ok(plane)
    }

    async fn boot(&mut self, bins: &Binaries, opts: &Options) -> Result<(), String> {
        let dir = self.dir.clone();
        let pki = pki::Pki::new()?;
        write(&dir.join("ca.crt"), &pki.ca_pem)?;
        write(&dir.join("apiserver.crt"), &pki.server_cert_pem)?;
        write(&dir.join("apiserver.key"), &pki.server_key_pem)?;
        write(&dir.join("sa.key"), &pki.sa_key_pem)?;
        write(&dir.join("sa.pub"), &pki.sa_pub_pem)?;
        self.ca_pem = pki.ca_pem.clone();

        let mut users = vec![User { name: "admin".into(), groups: vec!["system:masters".into()] }];
        users.extend(opts.users.iter().cloned());
        let mut csv = String::new();
        for u in &users {
            let token = format!("{:032x}", rand::random::<u128>());
            csv.push_str(&format!("{token},{},{}-uid,\"{}\"\n", u.name, u.name, u.groups.join(",")));
            self.tokens.insert(u.name.clone(), token);
        }
        write(&dir.join("tokens.csv"), &csv)?;

        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        self.url = format!("https://127.0.0.1:{api_port}");
        for u in &users {
            let kubeconfig = self.kubeconfig_text(&u.name);
            write(&self.kubeconfig(&u.name), &kubeconfig)?;
        }
        let admin = self.kubeconfig("admin");

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(bins.path("etcd"));
        etcd.arg("--data-dir")
            .arg(dir.join("etcd"))
            .args(["--name", "default", "--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .arg(format!("--initial-cluster=default={peer_url}"))
            .args(["--log-level", "warn"]);
        if !opts.durable_etcd {
            etcd.arg("--unsafe-no-fsync");
        }
        self.spawn("etcd", etcd)?;
        self.wait("etcd", Duration::from_secs(30), || {
            let url = format!("{etcd_url}/health");
            async move { reqwest::get(&url).await.ok()?.text().await.ok().filter(|t| t.contains("\"health\":\"true\"")) }
        })
        .await?;

        let mut api = Command::new(bins.path("kube-apiserver"));
        api.arg(format!("--etcd-servers={etcd_url}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--tls-cert-file={}", dir.join("apiserver.crt").display()))
            .arg(format!("--tls-private-key-file={}", dir.join("apiserver.key").display()))
            .arg(format!("--client-ca-file={}", dir.join("ca.crt").display()))
            .arg(format!("--token-auth-file={}", dir.join("tokens.csv").display()))
            .arg(format!("--service-account-key-file={}", dir.join("sa.pub").display()))
            .arg(format!("--service-account-signing-key-file={}", dir.join("sa.key").display()))
            .args([
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/16",
            ])
            .args(["--authorization-mode=Node,RBAC", "--endpoint-reconciler-type=none", "-v=1"])
            // A fake node is Ready at once; the not-ready taint this plugin puts on new nodes
            // would hold scheduling until the node lifecycle controller's next pass (~5 s).
            .arg("--disable-admission-plugins=TaintNodesByCondition");
        self.spawn("kube-apiserver", api)?;
        let (url, token, ca) = (self.url.clone(), self.token("admin").to_string(), self.ca_pem.clone());
        self.wait("kube-apiserver", Duration::from_secs(90), move || {
            let (url, token, ca) = (url.clone(), token.clone(), ca.clone());
            async move {
                let client = client(&ca).ok()?;
                let r = client.get(format!("{url}/readyz")).bearer_auth(&token).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await?;

        let kubeconfig_flags = |cmd: &mut Command| {
            for flag in ["--kubeconfig", "--authentication-kubeconfig", "--authorization-kubeconfig"] {
                cmd.arg(format!("{flag}={}", admin.display()));
            }
            cmd.args(["--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0"]);
            // The default client rate limit (20/s) is what makes a controller manager start slowly.
            cmd.args(["--kube-api-qps=500", "--kube-api-burst=1000"]);
        };
        let mut kcm = Command::new(bins.path("kube-controller-manager"));
        kubeconfig_flags(&mut kcm);
        kcm.arg(format!("--service-account-private-key-file={}", dir.join("sa.key").display()))
            .arg(format!("--root-ca-file={}", dir.join("ca.crt").display()))
            .arg("--use-service-account-credentials=true")
            // Controllers the tests never need and that only slow the start (quota discovery alone
            // takes seconds): no IP ranges for fake nodes, no quotas, no autoscaling, no CSRs.
            .arg(
                "--controllers=*,-node-ipam-controller,-node-lifecycle-controller,-resourcequota-controller,\
                 -horizontal-pod-autoscaler-controller,-certificatesigningrequest-approving-controller,\
                 -certificatesigningrequest-cleaner-controller,-certificatesigningrequest-signing-controller",
            );
        self.spawn("kube-controller-manager", kcm)?;
        let mut sched = Command::new(bins.path("kube-scheduler"));
        kubeconfig_flags(&mut sched);
        self.spawn("kube-scheduler", sched)?;
        // No `--server-address`: nothing here reads a kubelet's logs, exec or metrics, and
        // kwok's server is one more place its CEL race (see `Restart`) can strike.
        let kwok = Restart {
            program: bins.path("kwok"),
            args: vec![
                format!("--kubeconfig={}", admin.display()),
                format!("--config={}", bins.path("kwok-stages.yaml").display()),
                "--manage-all-nodes=false".into(),
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
                "--manage-nodes-with-label-selector=".into(),
                "--cidr=10.0.0.1/24".into(),
                "--node-ip=10.0.0.1".into(),
            ],
            left: KWOK_RESTARTS,
        };
        let mut cmd = Command::new(&kwok.program);
        cmd.args(&kwok.args);
        self.spawn_proc("kwok", cmd, Some(kwok))?;
        supervise(Arc::downgrade(&self.procs), self.dir.clone());

        trace("creating nodes");
        for n in 0..opts.nodes.max(1) {
            let node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {
                    "name": format!("kwok-node-{n}"),
                    "annotations": { "kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0" },
                    "labels": { "kubernetes.io/hostname": format!("kwok-node-{n}"), "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", "type": "kwok" }
                }
            });
            self.request("POST", "/api/v1/nodes", Some(node)).await?;
        }
        // Ready, and the not-ready taint lifted by the node lifecycle controller.
        self.wait("kwok's nodes", Duration::from_secs(60), || async {
            let list = self.request("GET", "/api/v1/nodes", None).await.ok()?;
            let nodes = list["items"].as_array()?;
            let ready = |n: &Value| {
                let ok = n["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                let tainted = n["spec"]["taints"].as_array().is_some_and(|t| !t.is_empty());
                ok && !tainted
            };
            (nodes.len() >= opts.nodes.max(1) && nodes.iter().all(ready)).then_some(())
        })
        .await?;
        // The controller manager works once it has given the default namespace its account.
        self.wait("the controller manager", Duration::from_secs(60), || async {
            self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default", None).await.ok().map(|_| ())
        })
        .await?;
        trace("ready");
        Ok(())
    }

    fn spawn(&self, name: &'static str, cmd: Command) -> Result<(), String> {
        self.spawn_proc(name, cmd, None)
    }

    fn spawn_proc(&self, name: &'static str, cmd: Command, restart: Option<Restart>) -> Result<(), String> {
        trace(&format!("starting {name}"));
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let child = start_logging(cmd, file, &self.dir).map_err(|e| format!("cannot start {name}: {e}"))?;
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).push(Proc { name, child, log, restart });
        Ok(())
    }

    /// Poll `probe` until it answers, failing early when a component has exited.
    async fn wait<F, Fut, T>(&self, what: &str, within: Duration, probe: F) -> Result<T, String>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = probe().await {
                return Ok(v);
            }
            if let Some((name, status, log)) = self.exited() {
                return Err(format!(
                    "{name} exited ({status}) while waiting for {what}; its log ends:\n{}",
                    tail(&log)
                ));
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .procs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|p| format!("--- {} ---\n{}", p.name, tail(&p.log)))
                    .collect();
                return Err(format!("{what} not ready after {within:?}; logs:\n{}", logs.join("\n")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn exited(&self) -> Option<(&'static str, String, PathBuf)> {
        exited_for_good(&self.procs, &self.dir)
    }

    /// The process id of a running component (`etcd`, `kube-apiserver`, `kwok`, …).
    /// The components that have exited and will not be started again (none has restarts
    /// left), each with how it ended and the excerpt of its log that says why: what a lab
    /// watching its servers reports.
    pub fn exited_for_good(&self) -> Vec<(&'static str, String, String)> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs
            .iter_mut()
            .filter(|p| p.restart.as_ref().is_none_or(|r| r.left == 0))
            .filter_map(|p| Some((p.name, p.child.try_wait().ok()??.to_string(), tail(&p.log))))
            .collect()
    }

    pub fn pid(&self, component: &str) -> Option<u32> {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs.iter().find(|p| p.name == component).map(|p| p.child.id())
    }

    /// A request as `admin`; the answer's JSON, or an error with status and body.
    pub async fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.request_as("admin", method, path, body).await
    }

    /// A request as `user`.
    pub async fn request_as(&self, user: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let client = client(&self.ca_pem)?;
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = client.request(method.clone(), format!("{}{path}", self.url)).bearer_auth(self.token(user));
        if let Some(b) = body {
            let content_type =
                if method == reqwest::Method::PATCH { "application/merge-patch+json" } else { "application/json" };
            req = req.header("content-type", content_type).body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}"))
    }

    /// How many requests the API server has served, by verb and resource, from its own
    /// counter (`apiserver_request_total` on `/metrics`), e.g. `("LIST", "deployments",
    /// "namespace")`: tests count what a client asked without a proxy in the way.
    pub async fn requests_served(&self, verb: &str, resource: &str, scope: &str) -> Result<u64, String> {
        let client = client(&self.ca_pem)?;
        let resp = client.get(format!("{}/metrics", self.url)).bearer_auth(self.token("admin")).send().await;
        let text = resp.map_err(|e| format!("GET /metrics: {e}"))?.text().await.map_err(|e| e.to_string())?;
        let wanted = [format!("verb=\"{verb}\""), format!("resource=\"{resource}\""), format!("scope=\"{scope}\"")];
        Ok(text
            .lines()
            .filter(|l| l.starts_with("apiserver_request_total{") && wanted.iter().all(|w| l.contains(w.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// [`ControlPlane::request`] from synchronous code (a test's assertion), on a thread of its own.
    pub fn request_blocking(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(self.request(method, path, body))
                })
                .join()
                .unwrap_or_else(|_| Err("the request panicked".into()))
        })
    }

    /// Create or update objects as `admin`, by server-side apply under `manager`.
    pub async fn apply(&self, manager: &str, objects: &[Value]) -> Result<(), String> {
        for o in objects {
            let path = object_path(o)?;
            let client = client(&self.ca_pem)?;
            let resp = client
                .patch(format!("{}{path}?fieldManager={manager}&force=true", self.url))
                .bearer_auth(self.token("admin"))
                .header("content-type", "application/apply-patch+yaml")
                .body(o.to_string())
                .send()
                .await
                .map_err(|e| format!("apply {path}: {e}"))?;
            if !resp.status().is_success() {
                let status = resp.status();
                return Err(format!("apply {path}: {status}: {}", resp.text().await.unwrap_or_default()));
            }
        }
        Ok(())
    }

    /// The bearer token of a user.
    pub fn token(&self, user: &str) -> &str {
        self.tokens.get(user).map(String::as_str).unwrap_or_else(|| panic!("no user `{user}` on this control plane"))
    }

    /// The kubeconfig file of a user (context = the plane's name).
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        self.dir.join(format!("kubeconfig-{user}"))
    }

    fn kubeconfig_text(&self, user: &str) -> String {
        let ca = self.dir.join("ca.crt");
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {n}\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {user}\ncurrent-context: {n}\n",
            n = self.name,
            url = self.url,
            ca = ca.display(),
            token = self.token(user),
        )
    }

    /// Where the control plane keeps its files (logs, certificates, kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stop every process at once (a site that goes down); the files stay until drop.
    pub fn stop(&self) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for p in procs.iter_mut() {
            p.restart = None;
            let _ = p.child.kill();
            let _ = p.child.wait();
            procs::reaped(p.child.id());
        }
    }

    /// One control plane shared by every test of a test binary (isolate by namespace).
    /// Started on first use; stopped when the test binary exits.
    pub fn shared() -> Result<&'static ControlPlane, String> {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                std::thread::spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    let users = vec![User { name: "drover".into(), groups: vec![] }];
                    rt.block_on(ControlPlane::start(Options { name: "shared".into(), users, ..Options::default() }))
                })
                .join()
                .unwrap_or_else(|_| Err("the control plane's start panicked".into()))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `DROVER_K8S_TRACE=1`: when each phase of a start begins, for tuning start-up time.
fn trace(what: &str) {
    static T0: OnceLock<Instant> = OnceLock::new();
    let t0 = *T0.get_or_init(Instant::now);
    if std::env::var_os("DROVER_K8S_TRACE").is_some() {
        eprintln!("[controlplane +{:?}] {what}", t0.elapsed());
    }
}

/// The REST path of an object, from its apiVersion, kind, namespace and name. Kinds are made
/// plural the way the built-in ones are (enough for the objects tests write).
pub fn object_path(o: &Value) -> Result<String, String> {
    let api_version = o["apiVersion"].as_str().ok_or("an object without apiVersion")?;
    let kind = o["kind"].as_str().ok_or("an object without kind")?;
    let name = o.pointer("/metadata/name").and_then(Value::as_str).ok_or("an object without a name")?;
    let lower = kind.to_lowercase();
    let plural = if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    };
    let base = if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") };
    Ok(match o.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{base}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{base}/{plural}/{name}"),
    })
}

fn client(ca_pem: &str) -> Result<reqwest::Client, String> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::log_excerpt;

    #[test]
    fn a_go_crash_keeps_the_line_that_names_its_cause_above_the_last_frames() {
        let mut log = vec!["I1204 starting".to_string(), "panic: assignment to entry in nil map".to_string()];
        log.push(String::new());
        log.push("goroutine 97 [running]:".to_string());
        for n in 0..200 {
            log.push(format!("frame{n}(...)\n\t/src/file.go:{n} +0x1f"));
        }
        let excerpt = log_excerpt(&log.join("\n"));
        assert!(excerpt.starts_with("panic: assignment to entry in nil map\n\ngoroutine 97 [running]:"), "{excerpt}");
        assert!(excerpt.contains("lines …]"), "{excerpt}");
        assert!(excerpt.ends_with("/src/file.go:199 +0x1f"), "{excerpt}");
        assert!(!excerpt.contains("I1204 starting"), "{excerpt}");
    }

    #[test]
    fn a_log_without_a_crash_keeps_its_last_fifteen_lines() {
        let log: Vec<String> = (0..40).map(|n| format!("line {n}")).collect();
        let excerpt = log_excerpt(&log.join("\n"));
        assert_eq!(excerpt.lines().count(), 15);
        assert!(excerpt.starts_with("line 25") && excerpt.ends_with("line 39"), "{excerpt}");
    }

    #[test]
    fn a_fatal_error_within_the_last_lines_is_not_shown_twice() {
        let log = ["a", "b", "fatal error: concurrent map writes", "", "goroutine 1 [running]:", "main.f()"];
        let excerpt = log_excerpt(&log.join("\n"));
        assert_eq!(excerpt, log.join("\n"));
    }
}
