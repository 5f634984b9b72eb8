//! A small TCP load balancer with HAProxy's runtime API — the lab's stand-in when HAProxy is
//! not installed. Each backend has a frontend port; connections go to its `ready` servers in
//! turn (weight 0, `drain` and `maint` take none), and with none left the frontend answers
//! `503` as HAProxy does. The runtime API speaks the subset drover uses, with HAProxy's own
//! answers and errors: `show cli level`, `show backend`, `show servers state [BACKEND]` (format 1),
//! `set server B/S state|weight|addr`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One server as configured (`server NAME ADDR:PORT weight W [disabled]`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub disabled: bool,
}

/// A backend and the frontend in front of it.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    /// Port on 127.0.0.1 for the frontend (0 picks one).
    pub frontend_port: u16,
    pub servers: Vec<ServerConfig>,
}

// Admin state bits as HAProxy reports them: forced maint, maint from the configuration
// (`disabled`), forced drain.
const FMAINT: u32 = 0x01;
const CMAINT: u32 = 0x04;
const FDRAIN: u32 = 0x08;

struct Server {
    name: String,
    addr: SocketAddr,
    weight: u32,
    admin: u32,
}

struct Backend {
    name: String,
    servers: Vec<Server>,
}

type State = Arc<Mutex<Vec<Backend>>>;

/// A running stand-in; dropping it stops every listener.
pub struct StandIn {
    runtime: SocketAddr,
    frontends: Vec<(String, SocketAddr)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl StandIn {
    /// Start the runtime API on 127.0.0.1:`runtime_port` (0 picks one) and a frontend per backend.
    pub async fn start(runtime_port: u16, backends: Vec<BackendConfig>) -> Result<StandIn, String> {
        let bind = |port: u16| async move {
            TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| format!("cannot listen on port {port}: {e}"))
        };
        let runtime_listener = bind(runtime_port).await?;
        let runtime = runtime_listener.local_addr().map_err(|e| e.to_string())?;
        let state: State = Arc::new(Mutex::new(
            backends
                .iter()
                .map(|b| Backend {
                    name: b.name.clone(),
                    servers: b
                        .servers
                        .iter()
                        .map(|s| Server {
                            name: s.name.clone(),
                            addr: s.addr,
                            weight: s.weight,
                            admin: if s.disabled { FMAINT | CMAINT } else { 0 },
                        })
                        .collect(),
                })
                .collect(),
        ));
        let mut tasks = vec![];
        let mut frontends = vec![];
        for (i, b) in backends.iter().enumerate() {
            let listener = bind(b.frontend_port).await?;
            frontends.push((b.name.clone(), listener.local_addr().map_err(|e| e.to_string())?));
            let state = state.clone();
            let turn = Arc::new(AtomicUsize::new(0));
            tasks.push(tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let target = pick(&state, i, &turn);
                    tokio::spawn(forward(client, target));
                }
            }));
        }
        let api = state.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok((conn, _)) = runtime_listener.accept().await {
                let api = api.clone();
                tokio::spawn(async move {
                    let (read, mut write) = conn.into_split();
                    let mut line = String::new();
                    if BufReader::new(read).read_line(&mut line).await.is_ok() {
                        let answer = command(&api, line.trim());
                        let _ = write.write_all(answer.as_bytes()).await;
                    }
                    let _ = write.shutdown().await;
                });
            }
        }));
        Ok(StandIn { runtime, frontends, tasks })
    }

    /// The runtime API address, as a sites file's `haproxy.runtime` names it.
    pub fn runtime(&self) -> String {
        format!("tcp://{}", self.runtime)
    }

    /// The frontend URL of a backend.
    pub fn url(&self, backend: &str) -> Option<String> {
        self.frontends.iter().find(|(b, _)| b == backend).map(|(_, a)| format!("http://{a}/"))
    }
}

/// The next ready server with a weight, in turn.
fn pick(state: &State, backend: usize, turn: &AtomicUsize) -> Option<SocketAddr> {
    let state = state.lock().expect("lb state");
    let ready: Vec<SocketAddr> = state[backend]
        .servers
        .iter()
        .filter(|s| s.admin & (FMAINT | FDRAIN) == 0 && s.weight > 0)
        .map(|s| s.addr)
        .collect();
    (!ready.is_empty()).then(|| ready[turn.fetch_add(1, Ordering::Relaxed) % ready.len()])
}

async fn forward(mut client: TcpStream, target: Option<SocketAddr>) {
    let server = match target {
        Some(addr) => TcpStream::connect(addr).await.ok(),
        None => None,
    };
    match server {
        Some(mut server) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        None => {
            let body = "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n";
            let reply = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\ncache-control: no-cache\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(reply.as_bytes()).await;
        }
    }
}

const STATE_HEADER: &str = "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port";

/// One runtime API command and HAProxy's answer to it.
fn command(state: &State, line: &str) -> String {
    let mut state = state.lock().expect("lb state");
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["show", "cli", "level"] => "admin\n".into(),
        ["show", "backend"] => {
            let mut out = "# name\n".to_string();
            for b in state.iter() {
                out.push_str(&format!("{}\n", b.name));
            }
            out
        }
        ["show", "servers", "state", rest @ ..] => {
            let only = rest.first();
            if only.is_some_and(|n| !state.iter().any(|b| &b.name == n)) {
                return "Can't find backend.\n".into();
            }
            let mut out = format!("1\n{STATE_HEADER}\n");
            for (bi, b) in state.iter().enumerate().filter(|(_, b)| only.is_none_or(|n| &b.name == n)) {
                for (si, s) in b.servers.iter().enumerate() {
                    let op = if s.admin & FMAINT != 0 { 0 } else { 2 };
                    out.push_str(&format!(
                        "{} {} {} {} {} {op} {} {} {} 0 1 0 0 0 0 0 0 - {} - 0 0 - - 0\n",
                        bi + 1,
                        b.name,
                        si + 1,
                        s.name,
                        s.addr.ip(),
                        s.admin,
                        s.weight,
                        s.weight,
                        s.addr.port()
                    ));
                }
            }
            out
        }
        ["set", "server", target, what @ ..] => {
            let Some((backend, server)) = target.split_once('/') else {
                return "Require 'backend/server'.\n".into();
            };
            let Some(b) = state.iter_mut().find(|b| b.name == backend) else {
                return "No such backend.\n".into();
            };
            let Some(s) = b.servers.iter_mut().find(|s| s.name == server) else {
                return "No such server.\n".into();
            };
            set_server(s, what)
        }
        _ => format!("Unknown command: '{line}'\n"),
    }
}

fn set_server(s: &mut Server, what: &[&str]) -> String {
    match what {
        ["state", "ready"] => s.admin &= !(FMAINT | FDRAIN),
        ["state", "drain"] => s.admin = (s.admin & !FMAINT) | FDRAIN,
        ["state", "maint"] => s.admin = (s.admin & !FDRAIN) | FMAINT,
        ["state", ..] => return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n".into(),
        ["weight", w] => match w.trim_end_matches('%').parse::<u32>() {
            Ok(w) if w <= 256 => s.weight = w,
            _ => return "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n".into(),
        },
        ["addr", addr, rest @ ..] => {
            let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
                return format!("Invalid addr '{addr}'.\n");
            };
            let port = match rest {
                ["port", p] => match p.parse::<u16>() {
                    Ok(p) => Some(p),
                    Err(_) => return format!("Invalid port '{p}'.\n"),
                },
                [] => None,
                _ => return "'set server <srv> addr' expects <addr>[ port <port>].\n".into(),
            };
            let old = s.addr;
            s.addr = SocketAddr::new(ip, port.unwrap_or(old.port()));
            let ip_part = if old.ip() == ip {
                "no need to change the addr".to_string()
            } else {
                format!("IP changed from '{}' to '{ip}'", old.ip())
            };
            let port_part = match port {
                Some(p) if p != old.port() => format!(", port changed from '{}' to '{p}'", old.port()),
                _ => String::new(),
            };
            return format!("{ip_part}{port_part} by 'stats socket command'\n");
        }
        _ => {
            return "'set server <srv>' only supports 'agent', 'health', 'state', 'weight', 'addr', 'fqdn' and 'check-addr'.\n".into();
        }
    }
    String::new()
}
