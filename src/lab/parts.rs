//! Starting the lab's parts other than the clusters: DNS (BIND or the stand-in), the load
//! balancer (HAProxy or the stand-in) in front of two site backends, and S3 (moto or s3s-fs).
//! Each says what plays it, as a [`Part`], and adds its site settings.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::{Choice, LabConfig};
use super::site::Part;

/// What the parts started so far add up to: what plays each, the site settings (site,
/// section, value), parameters for the runbooks, and processes to stop with the lab.
#[derive(Default)]
pub(super) struct Assembly {
    pub parts: Vec<Part>,
    pub sections: Vec<(String, String, Value)>,
    pub params: Vec<(String, String)>,
    pub procs: Procs,
}

impl Assembly {
    /// The sites as a step sees them: site → section → settings.
    pub fn sites(&self) -> std::collections::BTreeMap<String, Value> {
        let mut m = std::collections::BTreeMap::new();
        for (site, section, value) in &self.sections {
            let e: &mut Value = m.entry(site.clone()).or_insert_with(|| json!({}));
            e[section] = value.clone();
        }
        m
    }
}

/// The lab's DNS server, when it has one.
#[derive(Default)]
pub(super) struct Dns {
    pub addr: Option<std::net::SocketAddr>,
    pub standin: Option<drover_standins::dns::StandIn>,
}

/// The lab's load balancer, when it has one, and the site backends behind it.
#[derive(Default)]
pub(super) struct Lb {
    pub url: Option<String>,
    pub standin: Option<drover_standins::lb::StandIn>,
    pub backends: Vec<tokio::task::JoinHandle<()>>,
}

/// DNS: a TSIG-signed dynamic zone holding the app's name, served by BIND or the stand-in.
pub(super) async fn start_dns(config: &LabConfig, dir: &Path, a: &mut Assembly) -> Result<Dns, String> {
    let mut dns = Dns::default();
    let dns_player = player("dns", config.dns, "named", "bind9 (apt-get install bind9)")?;
    if dns_player != Player::Missing {
        let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let key_file = dir.join("secrets/tsig.key");
        write(&key_file, &secret)?;
        let addr = if dns_player == Player::Real {
            let addr = start_bind(dir, &secret, &mut a.procs).await?;
            a.parts.push(Part {
                name: "DNS".into(),
                endpoint: addr.to_string(),
                kind: "real server",
                note: "BIND 9, zone example.com., shop.example.com → 203.0.113.10 (east)".into(),
            });
            addr
        } else {
            let records = [("ns1.example.com.", "127.0.0.1"), ("shop.example.com.", "203.0.113.10")];
            let server =
                drover_standins::dns::StandIn::start(0, "example.com.", "drover-lab", &secret, 60, &records).await?;
            let addr = server.addr();
            dns.standin = Some(server);
            a.parts.push(Part {
                name: "DNS".into(),
                endpoint: addr.to_string(),
                kind: "stand-in",
                note: "drover's built-in RFC 2136 server (BIND is not installed: apt-get install bind9), zone example.com., shop.example.com → 203.0.113.10 (east)".into(),
            });
            addr
        };
        a.sections.push((
            "dns".into(),
            "dns".into(),
            json!({ "server": addr.to_string(), "zone": "example.com.", "key_name": "drover-lab", "tsig_key": format!("file:{}", key_file.display()) }),
        ));
        dns.addr = Some(addr);
    } else {
        a.params.push(("switch_dns".into(), "false".into()));
        a.parts.push(Part {
            name: "DNS".into(),
            endpoint: "-".into(),
            kind: "missing",
            note: "switched off in the lab file (`dns: none`): the DNS switch is skipped".into(),
        });
    }
    Ok(dns)
}

/// Load balancer: HAProxy or the stand-in in front of both sites' ingress.
pub(super) async fn start_lb(config: &LabConfig, dir: &Path, a: &mut Assembly) -> Result<Lb, String> {
    let mut lb = Lb::default();
    let lb_player = player("lb", config.lb, "haproxy", "haproxy (apt-get install haproxy)")?;
    if lb_player != Player::Missing {
        let (east_port, t1) = site_backend("east").await?;
        let (west_port, t2) = site_backend("west").await?;
        lb.backends.extend([t1, t2]);
        let (url, runtime, kind, what) = if lb_player == Player::Real {
            let (url, runtime) = start_haproxy(dir, east_port, west_port, &mut a.procs).await?;
            (url, runtime, "real server", "HAProxy".to_string())
        } else {
            use drover_standins::lb::{BackendConfig, ServerConfig, StandIn};
            let server = |name: &str, port: u16, disabled| ServerConfig {
                name: name.into(),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                weight: 100,
                disabled,
            };
            let balancer = StandIn::start(
                0,
                vec![BackendConfig {
                    name: "shop".into(),
                    frontend_port: 0,
                    servers: vec![server("east", east_port, false), server("west", west_port, true)],
                }],
            )
            .await?;
            let url = balancer.url("shop").expect("configured above");
            let runtime = balancer.runtime();
            lb.standin = Some(balancer);
            let what = "drover's built-in TCP balancer with HAProxy's runtime API (HAProxy is not installed: apt-get install haproxy)";
            (url, runtime, "stand-in", what.to_string())
        };
        a.sections.push(("lb".into(), "haproxy".into(), json!({ "runtime": runtime, "url": url })));
        a.parts.push(Part {
            name: "Load balancer".into(),
            endpoint: url.clone(),
            kind,
            note: format!("{what}, runtime API {runtime}; backend shop: east (up), west (disabled)"),
        });
        lb.url = Some(url);
    } else {
        a.params.push(("switch_lb".into(), "false".into()));
        a.parts.push(Part {
            name: "Load balancer".into(),
            endpoint: "-".into(),
            kind: "missing",
            note: "switched off in the lab file (`lb: none`): the load-balancer switch is skipped".into(),
        });
    }
    Ok(lb)
}

/// S3 holding a Velero-format backup of the primary (for unplanned failovers): moto, or the
/// built-in s3s-fs with a key pair of its own.
pub(super) fn start_s3(config: &LabConfig, dir: &Path, a: &mut Assembly) -> Result<Option<LabS3>, String> {
    let use_moto = match config.s3 {
        Choice::Real if !installed("moto_server") => {
            return Err(
                "the lab file asks for S3 (`s3: real`), and moto is not installed: pip install 'moto[server]'".into()
            );
        }
        Choice::Real => true,
        Choice::Auto => installed("moto_server"),
        Choice::Builtin | Choice::None => false,
    };
    Ok(match config.s3 {
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
            a.sections.push((
                "backups".into(),
                "s3".into(),
                json!({ "endpoint": server.url(), "region": "us-east-1", "path_style": true,
                        "access_key": format!("file:{}", dir.join("secrets/s3-access-key").display()),
                        "secret_key": format!("file:{}", dir.join("secrets/s3-secret-key").display()) }),
            ));
            Some(server)
        }
    })
}

/// Child processes killed when the lab goes, each with the part it plays.
#[derive(Default)]
pub(super) struct Procs(Vec<(&'static str, Child)>);

impl Procs {
    /// The processes that have exited: the part each played, its pid and how it ended.
    pub(super) fn exited(&mut self) -> Vec<(&'static str, u32, std::process::ExitStatus)> {
        self.0.iter_mut().filter_map(|(part, c)| Some((*part, c.id(), c.try_wait().ok()??))).collect()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
            // Its pid may be reused now: the exit handler must not signal it.
            drover_api::procs::reaped(c.id());
        }
    }
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

/// [`drover_api::procs::start_on_free_ports`] off the async workers (it waits by sleeping).
async fn on_free_ports(
    count: usize,
    command: impl FnMut(&[u16]) -> Command + Send + 'static,
) -> Result<(Child, Vec<u16>), String> {
    tokio::task::spawn_blocking(move || drover_api::procs::start_on_free_ports(count, Duration::from_secs(20), command))
        .await
        .map_err(|e| format!("starting a lab server failed: {e}"))?
}

fn installed(program: &str) -> bool {
    drover_api::procs::on_path(program).is_some()
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

pub(super) fn write(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(())
}

/// BIND with the lab zone; returns once it serves the zone.
async fn start_bind(dir: &Path, secret: &str, procs: &mut Procs) -> Result<std::net::SocketAddr, String> {
    let bind = dir.join("bind");
    std::fs::create_dir_all(&bind).map_err(|e| e.to_string())?;
    // BIND keeps dynamic updates in a journal next to the zone and replays it at start: a lab
    // that started before would come up with the last run's records. Every lab starts clean.
    for leftover in ["example.com.zone.jnl", "example.com.zone.jbk", "named.pid"] {
        let _ = std::fs::remove_file(bind.join(leftover));
    }
    write(
        &bind.join("example.com.zone"),
        "$TTL 60\n@ IN SOA ns1.example.com. admin.example.com. 1 3600 600 86400 60\n@ IN NS ns1.example.com.\nns1 IN A 127.0.0.1\nshop IN A 203.0.113.10\n",
    )?;
    let secret = secret.to_string();
    // Dies with the lab, however the lab ends; started again elsewhere if its port was taken.
    let started = on_free_ports(1, move |port| {
        let (port, d) = (port[0], bind.display());
        write(
            &bind.join("named.conf"),
            &format!(
                "key \"drover-lab\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
                 options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};\n\
                   recursion no; dnssec-validation no; }};\ncontrols {{ }};\n\
                 zone \"example.com\" {{ type primary; file \"{d}/example.com.zone\"; allow-update {{ key \"drover-lab\"; }}; }};\n"
            ),
        )
        .expect("the lab directory is writable");
        let mut named = Command::new("named");
        named.args(["-g", "-c"]).arg(bind.join("named.conf")).stdout(Stdio::null()).stderr(Stdio::null());
        named
    });
    let (child, port) = started.await?;
    procs.0.push(("DNS server (BIND)", child));
    let port = port[0];
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
    let cfg = dir.join("haproxy.cfg");
    let started = on_free_ports(2, move |ports| {
        let (front, runtime) = (ports[0], ports[1]);
        write(
            &cfg,
            &format!(
                "global\n  stats socket ipv4@127.0.0.1:{runtime} level admin\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\nfrontend shop\n  bind 127.0.0.1:{front}\n  default_backend shop\nbackend shop\n  server east 127.0.0.1:{east_port} weight 100\n  server west 127.0.0.1:{west_port} weight 100 disabled\n"
            ),
        )
        .expect("the lab directory is writable");
        let mut haproxy = Command::new("haproxy");
        haproxy.arg("-db").arg("-f").arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null());
        haproxy
    });
    let (child, ports) = started.await?;
    procs.0.push(("load balancer (HAProxy)", child));
    let (front, runtime) = (ports[0], ports[1]);
    Ok((format!("http://127.0.0.1:{front}/"), format!("tcp://127.0.0.1:{runtime}")))
}

/// The lab's S3: moto when installed, else the built-in s3s-fs.
pub(super) enum LabS3 {
    Moto(drover_api::testing::Moto),
    StandIn(drover_api::testing::S3sFs),
}

impl LabS3 {
    pub(super) fn url(&self) -> &str {
        match self {
            LabS3::Moto(m) => m.url(),
            LabS3::StandIn(s) => s.url(),
        }
    }

    /// How moto ended, once it has (the built-in server runs in this process).
    pub(super) fn exited(&mut self) -> Option<(u32, std::process::ExitStatus)> {
        match self {
            LabS3::Moto(m) => Some((m.pid(), m.exited()?)),
            LabS3::StandIn(_) => None,
        }
    }

    pub(super) async fn bucket(&self, name: &str) -> Result<aws_sdk_s3::Client, String> {
        match self {
            LabS3::Moto(m) => m.bucket(name).await,
            LabS3::StandIn(s) => s.bucket(name).await,
        }
    }
}
