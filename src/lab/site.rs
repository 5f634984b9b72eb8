//! The whole two-site lab (`drover lab up`, `drover lab failover`): two ONTAP clusters and two
//! Kubernetes API servers (simulators: no real ones can run here), and real servers where the
//! machine has them — BIND for DNS, HAProxy in front of both sites, moto for S3. Without them,
//! built-in stand-ins take their place: drover's RFC 2136 server and TCP balancer, and s3s-fs
//! (an S3 server on the file system, checking signatures) for S3. A part switched off in the
//! lab file is missing, and the steps that need it are switched off by parameter. Every part
//! is reported as simulator, real server, built-in stand-in or missing: the lab never pretends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use drover_api::testing;
use drover_ontap_sim::Simulator;

use super::kube::LabKube;

use super::config::{Choice, LabConfig, copy_namespace};

/// What stands in for each part, for the operator to read.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub endpoint: String,
    /// "simulator", "real server", "stand-in" or "missing".
    pub kind: &'static str,
    pub note: String,
}

/// Child processes killed when the lab goes.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
            // Its pid may be reused now: the exit handler must not signal it.
            drover_api::procs::reaped(c.id());
        }
    }
}

/// A running lab; dropping it stops everything.
pub struct Lab {
    pub ontap: Simulator,
    pub east: LabKube,
    pub west: LabKube,
    pub dir: PathBuf,
    pub sites_file: PathBuf,
    pub parts: Vec<Part>,
    /// Parameters for `runbooks/failover.yaml` matching what is running.
    pub params: Vec<(String, String)>,
    pub dns: Option<std::net::SocketAddr>,
    pub lb_url: Option<String>,
    /// The application namespaces seeded on the primary.
    pub namespaces: Vec<String>,
    backends: Vec<tokio::task::JoinHandle<()>>,
    _s3: Option<LabS3>,
    _dns_standin: Option<drover_standins::dns::StandIn>,
    _lb_standin: Option<drover_standins::lb::StandIn>,
    _procs: Procs,
}

/// What plays a part, once `auto` is resolved against what is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Player {
    Real,
    StandIn,
    Missing,
}

fn player(part: &str, choice: Choice, program: &str, package: &str) -> Result<Player, String> {
    let here = installed(program);
    Ok(match choice {
        Choice::Real if !here => {
            return Err(format!(
                "the lab file asks for the real {part} server, and `{program}` is not installed: install {package}, or write `{part}: auto`"
            ));
        }
        Choice::Real => Player::Real,
        Choice::Auto if here => Player::Real,
        Choice::Auto | Choice::Builtin => Player::StandIn,
        Choice::None => Player::Missing,
    })
}

/// The n-th copy (n ≥ 2) of one app object: namespace `shop` becomes `shop-n`, its volume and
/// host names follow; cluster-wide objects (CRDs, ...) are shared by every copy and not copied.
fn copy_object(mut o: Value, n: u32) -> Option<Value> {
    let ns = copy_namespace(n);
    let kind = o["kind"].as_str().unwrap_or_default().to_string();
    let host = |h: &str| h.strip_prefix("shop.").map(|rest| format!("{ns}.{rest}")).unwrap_or_else(|| h.to_string());
    // Only fields the object has are rewritten: indexing a JSON value to write would add
    // fields it never had (a `spec` on a ConfigMap), which a real API server refuses.
    match kind.as_str() {
        "Namespace" => o["metadata"]["name"] = json!(ns),
        "PersistentVolume" => {
            let name = o["metadata"]["name"].as_str()?.to_string();
            o["metadata"]["name"] = json!(format!("{name}-{n}"));
            if let Some(claim) = o.pointer_mut("/spec/claimRef").filter(|c| c.is_object()) {
                claim["namespace"] = json!(ns);
            }
        }
        _ if o["metadata"]["namespace"].is_string() => {
            o["metadata"]["namespace"] = json!(ns);
            if let Some(v) = o.pointer_mut("/spec/volumeName")
                && let Some(name) = v.as_str()
            {
                *v = json!(format!("{name}-{n}"));
            }
            for s in o.pointer_mut("/subjects").and_then(Value::as_array_mut).into_iter().flatten() {
                if s["namespace"].is_string() {
                    s["namespace"] = json!(ns);
                }
            }
            for r in o.pointer_mut("/spec/rules").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(h) = r["host"].as_str() {
                    r["host"] = json!(host(h));
                }
            }
            if let Some(a) = o.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
                for v in a.values_mut() {
                    if let Some(h) = v.as_str().filter(|h| h.starts_with("shop.")) {
                        *v = json!(host(h));
                    }
                }
            }
        }
        _ => return None,
    }
    Some(o)
}

/// Write copies 2..=`copies` of every manifest under `apps` into `out` (one file per copy).
fn write_copies(apps: &Path, copies: u32, out: &Path) -> Result<(), String> {
    let mut docs = vec![];
    let mut files: Vec<PathBuf> = std::fs::read_dir(apps)
        .map_err(|e| format!("cannot read {}: {e}", apps.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).map_err(|e| format!("{}: {e}", f.display()))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    for n in 2..=copies {
        let mut text = String::new();
        for d in docs.iter().filter_map(|d| copy_object(d.clone(), n)) {
            text.push_str("---\n");
            text.push_str(&serde_yaml::to_string(&d).map_err(|e| e.to_string())?);
        }
        write(&out.join(format!("{}.yaml", copy_namespace(n))), &text)?;
    }
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        for b in &self.backends {
            b.abort();
        }
    }
}

fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback");
        let port = tcp.local_addr().expect("bound").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

async fn wait_port(port: u16, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not start on port {port}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A tiny HTTP server standing for a site's ingress: it answers `served by SITE`.
async fn site_backend(site: &'static str) -> Result<(u16, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let body = format!("served by {site}\n");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok((port, task))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(())
}

/// BIND with the lab zone; returns once it serves the zone.
async fn start_bind(dir: &Path, secret: &str, procs: &mut Procs) -> Result<std::net::SocketAddr, String> {
    let port = free_port();
    let bind = dir.join("bind");
    std::fs::create_dir_all(&bind).map_err(|e| e.to_string())?;
    let d = bind.display();
    // BIND keeps dynamic updates in a journal next to the zone and replays it at start: a lab
    // that started before would come up with the last run's records. Every lab starts clean.
    for leftover in ["example.com.zone.jnl", "example.com.zone.jbk", "named.pid"] {
        let _ = std::fs::remove_file(bind.join(leftover));
    }
    write(
        &bind.join("example.com.zone"),
        "$TTL 60\n@ IN SOA ns1.example.com. admin.example.com. 1 3600 600 86400 60\n@ IN NS ns1.example.com.\nns1 IN A 127.0.0.1\nshop IN A 203.0.113.10\n",
    )?;
    write(
        &bind.join("named.conf"),
        &format!(
            "key \"drover-lab\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
             options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};\n\
               recursion no; dnssec-validation no; }};\ncontrols {{ }};\n\
             zone \"example.com\" {{ type primary; file \"{d}/example.com.zone\"; allow-update {{ key \"drover-lab\"; }}; }};\n"
        ),
    )?;
    let mut named = Command::new("named");
    named.args(["-g", "-c"]).arg(bind.join("named.conf")).stdout(Stdio::null()).stderr(Stdio::null());
    // Dies with the lab, however the lab ends.
    let child = drover_api::procs::spawn(named).map_err(|e| format!("cannot start named: {e}"))?;
    procs.0.push(child);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer =
            drover_dns::query(addr, "shop.example.com.", drover_dns::RecordKind::A, Duration::from_millis(200)).await;
        if answer.is_ok_and(|r| !r.values.is_empty()) {
            return Ok(addr);
        }
        if Instant::now() > deadline {
            return Err("BIND did not start serving the lab zone".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HAProxy in front of the two site backends; returns the frontend URL and runtime API address.
async fn start_haproxy(
    dir: &Path,
    east_port: u16,
    west_port: u16,
    procs: &mut Procs,
) -> Result<(String, String), String> {
    let (front, runtime) = (free_port(), free_port());
    let cfg = dir.join("haproxy.cfg");
    write(
        &cfg,
        &format!(
            "global\n  stats socket ipv4@127.0.0.1:{runtime} level admin\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\nfrontend shop\n  bind 127.0.0.1:{front}\n  default_backend shop\nbackend shop\n  server east 127.0.0.1:{east_port} weight 100\n  server west 127.0.0.1:{west_port} weight 100 disabled\n"
        ),
    )?;
    let mut haproxy = Command::new("haproxy");
    haproxy.arg("-db").arg("-f").arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null());
    let child = drover_api::procs::spawn(haproxy).map_err(|e| format!("cannot start haproxy: {e}"))?;
    procs.0.push(child);
    wait_port(front, "HAProxy").await?;
    wait_port(runtime, "HAProxy's runtime API").await?;
    Ok((format!("http://127.0.0.1:{front}/"), format!("tcp://127.0.0.1:{runtime}")))
}

impl Lab {
    /// Start every part the lab file describes on loopback, seed the primary, and write
    /// `DIR/sites.yaml`.
    pub async fn up(config: &LabConfig, dir: &Path) -> Result<Lab, String> {
        let dir = &std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::create_dir_all(dir.join("secrets")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut parts = vec![];
        let mut procs = Procs(vec![]);
        let mut params: Vec<(String, String)> = vec![];
        let mut sections: Vec<(String, String, Value)> = vec![];

        let topology = super::load_topology(&config.ontap, config.ontap_settings.as_ref())?;
        let (ontap, _) = super::start_ontap(&topology, dir).await?;
        for (name, section) in ontap.site_sections(dir)? {
            parts.push(Part {
                name: format!("ONTAP {name}"),
                endpoint: ontap.url(&name),
                kind: "simulator",
                note: String::new(),
            });
            sections.push((name, "ontap".into(), section));
        }
        let kube = drover_kube_sim::Settings {
            ready_delay: config.kube_simulator.ready_delay.0,
            namespace_delete_delay: config.kube_simulator.namespace_delete_delay.0,
        };
        let (east, west) = tokio::join!(
            LabKube::start("east", config.kube, dir, kube.clone()),
            LabKube::start("west", config.kube, dir, kube)
        );
        let ((east, east_config), (west, west_config)) = (east?, west?);
        for (name, c, config) in [("east", &east, &east_config), ("west", &west, &west_config)] {
            parts.push(Part {
                name: format!("Kubernetes {name}"),
                endpoint: c.url(),
                kind: c.kind(),
                note: format!("{}; kubeconfig {}", c.note(), config.display()),
            });
            sections.push((name.into(), "kube".into(), json!({ "kubeconfig": config, "context": name })));
        }

        // DNS: a TSIG-signed dynamic zone holding the app's name, served by BIND or the stand-in.
        let mut dns = None;
        let mut dns_standin = None;
        let dns_player = player("dns", config.dns, "named", "bind9 (apt-get install bind9)")?;
        if dns_player != Player::Missing {
            let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
            let key_file = dir.join("secrets/tsig.key");
            write(&key_file, &secret)?;
            let addr = if dns_player == Player::Real {
                let addr = start_bind(dir, &secret, &mut procs).await?;
                parts.push(Part {
                    name: "DNS".into(),
                    endpoint: addr.to_string(),
                    kind: "real server",
                    note: "BIND 9, zone example.com., shop.example.com → 203.0.113.10 (east)".into(),
                });
                addr
            } else {
                let records = [("ns1.example.com.", "127.0.0.1"), ("shop.example.com.", "203.0.113.10")];
                let server =
                    drover_standins::dns::StandIn::start(0, "example.com.", "drover-lab", &secret, 60, &records)
                        .await?;
                let addr = server.addr();
                dns_standin = Some(server);
                parts.push(Part {
                    name: "DNS".into(),
                    endpoint: addr.to_string(),
                    kind: "stand-in",
                    note: "drover's built-in RFC 2136 server (BIND is not installed: apt-get install bind9), zone example.com., shop.example.com → 203.0.113.10 (east)".into(),
                });
                addr
            };
            sections.push((
                "dns".into(),
                "dns".into(),
                json!({ "server": addr.to_string(), "zone": "example.com.", "key_name": "drover-lab", "tsig_key": format!("file:{}", key_file.display()) }),
            ));
            dns = Some(addr);
        } else {
            params.push(("switch_dns".into(), "false".into()));
            parts.push(Part {
                name: "DNS".into(),
                endpoint: "-".into(),
                kind: "missing",
                note: "switched off in the lab file (`dns: none`): the DNS switch is skipped".into(),
            });
        }

        // Load balancer: HAProxy or the stand-in in front of both sites' ingress.
        let mut backends = vec![];
        let mut lb_url = None;
        let mut lb_standin = None;
        let lb_player = player("lb", config.lb, "haproxy", "haproxy (apt-get install haproxy)")?;
        if lb_player != Player::Missing {
            let (east_port, t1) = site_backend("east").await?;
            let (west_port, t2) = site_backend("west").await?;
            backends.extend([t1, t2]);
            let (url, runtime, kind, what) = if lb_player == Player::Real {
                let (url, runtime) = start_haproxy(dir, east_port, west_port, &mut procs).await?;
                (url, runtime, "real server", "HAProxy".to_string())
            } else {
                use drover_standins::lb::{BackendConfig, ServerConfig, StandIn};
                let server = |name: &str, port: u16, disabled| ServerConfig {
                    name: name.into(),
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    weight: 100,
                    disabled,
                };
                let lb = StandIn::start(
                    0,
                    vec![BackendConfig {
                        name: "shop".into(),
                        frontend_port: 0,
                        servers: vec![server("east", east_port, false), server("west", west_port, true)],
                    }],
                )
                .await?;
                let url = lb.url("shop").expect("configured above");
                let runtime = lb.runtime();
                lb_standin = Some(lb);
                let what = "drover's built-in TCP balancer with HAProxy's runtime API (HAProxy is not installed: apt-get install haproxy)";
                (url, runtime, "stand-in", what.to_string())
            };
            sections.push(("lb".into(), "haproxy".into(), json!({ "runtime": runtime, "url": url })));
            parts.push(Part {
                name: "Load balancer".into(),
                endpoint: url.clone(),
                kind,
                note: format!("{what}, runtime API {runtime}; backend shop: east (up), west (disabled)"),
            });
            lb_url = Some(url);
        } else {
            params.push(("switch_lb".into(), "false".into()));
            parts.push(Part {
                name: "Load balancer".into(),
                endpoint: "-".into(),
                kind: "missing",
                note: "switched off in the lab file (`lb: none`): the load-balancer switch is skipped".into(),
            });
        }

        // S3 holding a Velero-format backup of the primary (for unplanned failovers): moto, or
        // the built-in s3s-fs with a key pair of its own.
        let use_moto = match config.s3 {
            Choice::Real if !installed("moto_server") => {
                return Err(
                    "the lab file asks for S3 (`s3: real`), and moto is not installed: pip install 'moto[server]'"
                        .into(),
                );
            }
            Choice::Real => true,
            Choice::Auto => installed("moto_server"),
            Choice::Builtin | Choice::None => false,
        };
        let s3 = match config.s3 {
            Choice::None => None,
            _ => {
                let (access, secret) =
                    (format!("{:032x}", rand::random::<u128>()), format!("{:032x}", rand::random::<u128>()));
                write(&dir.join("secrets/s3-access-key"), &access)?;
                write(&dir.join("secrets/s3-secret-key"), &secret)?;
                let server = if use_moto {
                    LabS3::Moto(drover_api::testing::Moto::start()?)
                } else {
                    LabS3::StandIn(drover_api::testing::S3sFs::start_with_keys(&access, &secret)?)
                };
                sections.push((
                    "backups".into(),
                    "s3".into(),
                    json!({ "endpoint": server.url(), "region": "us-east-1", "path_style": true,
                            "access_key": format!("file:{}", dir.join("secrets/s3-access-key").display()),
                            "secret_key": format!("file:{}", dir.join("secrets/s3-secret-key").display()) }),
                ));
                Some(server)
            }
        };

        let namespaces = config.namespaces();
        if namespaces.len() > 1 {
            params.push(("namespaces".into(), namespaces.join(",")));
        }
        let sites_file = dir.join("sites.yaml");
        super::write_sites_file(&sites_file, &sections)?;
        let sites: std::collections::BTreeMap<String, Value> = {
            let mut m = std::collections::BTreeMap::new();
            for (site, section, value) in &sections {
                let e: &mut Value = m.entry(site.clone()).or_insert_with(|| json!({}));
                e[section] = value.clone();
            }
            m
        };

        // Seed the primary with the sample apps (and their copies), through drover's own apply.
        let ctx = testing::context(sites.clone(), Duration::from_secs(300));
        let mut manifests = vec![config.apps.clone()];
        if config.copies > 1 {
            let copies = dir.join("app-copies");
            write_copies(&config.apps, config.copies, &copies)?;
            manifests.push(copies);
        }
        let apply = drover_kube::actions().into_iter().find(|a| a.info().name == "kube.apply").expect("built in");
        apply
            .run(&ctx, &json!({ "site": "east", "manifests": manifests }))
            .await
            .map_err(|e| format!("cannot seed the east cluster: {e}"))?;
        // A real control plane binds the seeded claims a moment later; the lab starts settled,
        // so what a run changes is all a test sees change.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !east.list("", "v1", "persistentvolumeclaims").await.iter().all(|c| c["status"]["phase"] == "Bound") {
            if Instant::now() > deadline {
                return Err("the east cluster did not bind the seeded volume claims within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(server) = &s3 {
            let export = drover_kube::actions().into_iter().find(|a| a.info().name == "kube.export").expect("built in");
            server.bucket("dr-backups").await.map_err(|e| format!("the lab's S3: {e}"))?;
            export
                .run(&ctx, &json!({ "site": "east", "namespaces": namespaces, "to": { "site": "backups", "bucket": "dr-backups", "prefix": "velero", "backup": "lab-nightly" } }))
                .await
                .map_err(|e| format!("cannot take the lab's backup: {e}"))?;
            let (kind, who) = match server {
                LabS3::Moto(_) => ("real server", "moto"),
                LabS3::StandIn(_) => ("stand-in", "s3s-fs (built in)"),
            };
            parts.push(Part {
                name: "S3".into(),
                endpoint: server.url().to_string(),
                kind,
                note: format!("{who}; bucket dr-backups holds Velero backup lab-nightly of east"),
            });
        } else {
            parts.push(Part {
                name: "S3".into(),
                endpoint: "-".into(),
                kind: "missing",
                note: "switched off in the lab file (`s3: none`): unplanned failover needs the backup".into(),
            });
        }
        Ok(Lab {
            ontap,
            east,
            west,
            dir: dir.to_path_buf(),
            sites_file,
            parts,
            params,
            dns,
            lb_url,
            namespaces,
            backends,
            _s3: s3,
            _dns_standin: dns_standin,
            _lb_standin: lb_standin,
            _procs: procs,
        })
    }

    /// Every part, one per line.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            out.push_str(&format!("  {:<16} {:<12} {:<30} {}\n", p.name, p.kind, p.endpoint, p.note));
        }
        out.push_str(&format!("  sites file: {}\n", self.sites_file.display()));
        out
    }

    /// Stop the primary site (an unplanned failover's disaster): its ONTAP cluster stops
    /// answering and its Kubernetes API goes away.
    pub fn lose_primary(&mut self) {
        self.ontap.set_reachable("east", false);
        self.east.stop();
    }

    /// Check that a failback brought the lab back to where it started.
    pub async fn initial_state(&self) -> Vec<(String, bool)> {
        let mut out = vec![];
        let (rel, svms) = self.ontap.with_world(|w| {
            let rel = w
                .rels
                .iter()
                .find(|r| r.dst_path == "svm_dr:")
                .map(|r| format!("{} → {} {}", r.src_path, r.dst_path, r.state))
                .unwrap_or_else(|| "missing".into());
            let svms: Vec<String> =
                w.clusters.iter().flat_map(|c| c.svms.iter().map(|s| format!("{} {}", s.name, s.state))).collect();
            (rel, svms)
        });
        out.push((format!("SVM-DR relationship {rel}"), rel == "svm1: → svm_dr: snapmirrored"));
        out.push((
            format!("SVMs: {}", svms.join(", ")),
            svms.contains(&"svm1 running".into()) && svms.contains(&"svm_dr stopped".into()),
        ));
        let web = self.east.get("apps", "v1", "deployments", Some("shop"), "web").await;
        let ready =
            web.as_ref().and_then(|w| w.pointer("/status/availableReplicas")).and_then(Value::as_i64).unwrap_or(0);
        out.push((format!("east runs Deployment shop/web with {ready} available replicas"), ready == 3));
        let host = self
            .east
            .get("networking.k8s.io", "v1", "ingresses", Some("shop"), "web")
            .await
            .and_then(|i| i.pointer("/spec/rules/0/host").and_then(Value::as_str).map(String::from))
            .unwrap_or_default();
        out.push((format!("east's Ingress shop/web serves {host}"), host == "shop.east.example.com"));
        if self.namespaces.len() > 1 {
            let (ready, hosts) = self.apps_serving(&self.east, "east").await;
            let n = self.namespaces.len();
            out.push((format!("east runs Deployment web in {ready} of {n} app namespaces"), ready == n));
            out.push((format!("east's Ingress web serves the east host in {hosts} of {n} app namespaces"), hosts == n));
        }
        let ns = self.east.get("", "v1", "namespaces", None, "shop").await.unwrap_or_default();
        let fenced = ns.pointer("/metadata/labels/drover.io~1fenced").is_some();
        out.push((format!("east's namespace shop is {}", if fenced { "fenced" } else { "not fenced" }), !fenced));
        let left = self.west.get("", "v1", "namespaces", None, "shop").await.is_some();
        out.push((format!("west {} namespace shop", if left { "still has" } else { "has no" }), !left));
        if let Some(addr) = self.dns {
            let answer =
                drover_dns::query(addr, "shop.example.com.", drover_dns::RecordKind::A, Duration::from_secs(2)).await;
            let values = answer.map(|r| r.values.join(",")).unwrap_or_else(|e| e.message);
            out.push((format!("DNS shop.example.com → {values}"), values == "203.0.113.10"));
        }
        if let Some(url) = &self.lb_url {
            let body = match reqwest::get(url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            out.push((format!("load balancer answers `{}`", body.trim()), body.trim() == "served by east"));
        }
        out
    }

    /// In how many app namespaces `cluster` runs Deployment web (available replicas) and its
    /// Ingress serves the `site` host (`NS.SITE.example.com`).
    async fn apps_serving(&self, cluster: &LabKube, site: &str) -> (usize, usize) {
        let mut counts = (0, 0);
        for ns in &self.namespaces {
            let web = cluster.get("apps", "v1", "deployments", Some(ns), "web").await;
            if web.and_then(|w| w.pointer("/status/availableReplicas").and_then(Value::as_i64)).unwrap_or(0) > 0 {
                counts.0 += 1;
            }
            let host = cluster
                .get("networking.k8s.io", "v1", "ingresses", Some(ns), "web")
                .await
                .and_then(|i| i.pointer("/spec/rules/0/host").and_then(Value::as_str).map(String::from));
            if host.as_deref() == Some(&format!("{ns}.{site}.example.com")) {
                counts.1 += 1;
            }
        }
        counts
    }

    /// Check the state a failover must leave; each line says what was found.
    pub async fn failover_state(&self) -> Vec<(String, bool)> {
        let mut out = vec![];
        let (rel, svm) = self.ontap.with_world(|w| {
            let rel = w.rels.iter().find(|r| r.dst_path == "svm_dr:").map(|r| r.state.clone()).unwrap_or_default();
            let svm = w
                .clusters
                .iter()
                .flat_map(|c| c.svms.iter())
                .find(|s| s.name == "svm_dr")
                .map(|s| s.state.clone())
                .unwrap_or_default();
            (rel, svm)
        });
        out.push((format!("SVM-DR relationship svm_dr: is {rel}"), rel == "broken_off"));
        out.push((format!("DR SVM svm_dr is {svm}"), svm == "running"));
        let web = self.west.get("apps", "v1", "deployments", Some("shop"), "web").await;
        let ingress = self.west.get("networking.k8s.io", "v1", "ingresses", Some("shop"), "web").await;
        let ready =
            web.as_ref().and_then(|w| w.pointer("/status/availableReplicas")).and_then(Value::as_i64).unwrap_or(0);
        out.push((format!("west runs Deployment shop/web with {ready} available replicas"), ready > 0));
        let host = ingress
            .as_ref()
            .and_then(|i| i.pointer("/spec/rules/0/host"))
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string();
        out.push((format!("west's Ingress shop/web serves {host}"), host == "shop.west.example.com"));
        if self.namespaces.len() > 1 {
            let (ready, hosts) = self.apps_serving(&self.west, "west").await;
            let n = self.namespaces.len();
            out.push((format!("west runs Deployment web in {ready} of {n} app namespaces"), ready == n));
            out.push((format!("west's Ingress web serves the west host in {hosts} of {n} app namespaces"), hosts == n));
        }
        if let Some(addr) = self.dns {
            let answer =
                drover_dns::query(addr, "shop.example.com.", drover_dns::RecordKind::A, Duration::from_secs(2)).await;
            let values = answer.map(|r| r.values.join(",")).unwrap_or_else(|e| e.message);
            out.push((format!("DNS shop.example.com → {values}"), values == "198.51.100.10"));
        }
        if let Some(url) = &self.lb_url {
            let body = reqwest::get(url).await.map(|r| r.text());
            let body = match body {
                Ok(t) => t.await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            out.push((format!("load balancer answers `{}`", body.trim()), body.trim() == "served by west"));
        }
        out
    }
}

/// The lab's S3: moto when installed, else the built-in s3s-fs.
enum LabS3 {
    Moto(drover_api::testing::Moto),
    StandIn(drover_api::testing::S3sFs),
}

impl LabS3 {
    fn url(&self) -> &str {
        match self {
            LabS3::Moto(m) => m.url(),
            LabS3::StandIn(s) => s.url(),
        }
    }

    async fn bucket(&self, name: &str) -> Result<aws_sdk_s3::Client, String> {
        match self {
            LabS3::Moto(m) => m.bucket(name).await,
            LabS3::StandIn(s) => s.bucket(name).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_gains_no_field_its_object_did_not_have() {
        // A real API server refused the copies when a ConfigMap came with `spec: {}` and a Role
        // with `spec: { rules: null }`.
        let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings", "namespace": "shop" },
                         "data": { "currency": "EUR" } });
        let copy = copy_object(cm, 2).unwrap();
        assert_eq!(
            copy,
            json!({ "apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": { "name": "settings", "namespace": "shop-2" }, "data": { "currency": "EUR" } })
        );
        let role = json!({ "kind": "Role", "metadata": { "name": "r", "namespace": "shop" }, "rules": [{ "verbs": ["get"] }] });
        assert!(copy_object(role, 2).unwrap().get("spec").is_none());
        let ing = json!({ "kind": "Ingress", "metadata": { "name": "web", "namespace": "shop" },
                          "spec": { "rules": [{ "host": "shop.east.example.com" }] } });
        assert_eq!(copy_object(ing, 3).unwrap()["spec"]["rules"][0]["host"], "shop-3.east.example.com");
    }
}
