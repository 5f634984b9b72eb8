//! Load balancers: HAProxy through its runtime API (`stats socket ... level admin`), over TCP
//! or a unix socket. The runtime API answers in text, not codes: every answer is parsed, and
//! every change is verified with `show servers state`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use drover_api::{
    Action, ActionError, ActionSpec, HumanDuration, Outputs, ParamError, Plan, StepContext, TypedAction, ValueType,
    typed,
};

/// Every load-balancer action.
pub fn actions() -> Vec<Arc<dyn Action>> {
    vec![typed(HaproxySet)]
}

/// The site sections this plugin reads.
pub fn site_sections() -> Vec<drover_api::SiteSection> {
    vec![drover_api::SiteSection::of::<HaproxySite>("haproxy", "an HAProxy runtime API")]
}

/// A site's `haproxy:` settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaproxySite {
    /// The runtime API: `tcp://127.0.0.1:9999` or `unix:///run/haproxy/admin.sock`.
    pub runtime: String,
    /// Where users reach the applications through this balancer, e.g. `https://shop.example.com/`:
    /// runbooks verify a switch there (`${{ sites.lb.haproxy.url }}`).
    #[serde(default)]
    pub url: Option<String>,
    /// Per-command timeout.
    #[serde(default = "five")]
    pub timeout: HumanDuration,
    /// At most this many connections to the runtime API at once from this drover process.
    /// HAProxy serves a stats socket `stats maxconn` connections at a time (10 unless set) and
    /// leaves the rest in the listen backlog; past it, connections wait for TCP's retransmits
    /// (1 s, then 3 s). A fleet's switches queue here instead.
    #[serde(default = "eight")]
    pub max_connections: u32,
}

fn five() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// Below HAProxy's default `stats maxconn` (10), leaving room for an operator's own `socat`.
fn eight() -> u32 {
    8
}

/// Connections at once, by runtime API address, shared by every step of this process.
static CONNECTIONS: drover_api::Gates = drover_api::Gates::new();

/// What a server should become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    Ready,
    Drain,
    Maint,
}

impl ServerState {
    fn word(self) -> &'static str {
        match self {
            ServerState::Ready => "ready",
            ServerState::Drain => "drain",
            ServerState::Maint => "maint",
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerChange {
    pub backend: String,
    pub server: String,
    #[serde(default)]
    pub state: Option<ServerState>,
    /// 0–256.
    #[serde(default)]
    pub weight: Option<u32>,
    /// New address (with `port`).
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// With `state: maint`: drain first and wait this long, so open sessions can finish.
    #[serde(default)]
    pub drain_for: Option<HumanDuration>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaproxySetParams {
    /// The site whose `haproxy:` settings name the runtime API.
    pub site: String,
    /// Servers to change; ready ones first, then drains, then maintenance.
    pub servers: Vec<ServerChange>,
}

/// One server as `show servers state` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub backend: String,
    pub server: String,
    pub address: String,
    pub port: u16,
    pub state: ServerState,
    pub weight: u32,
}

/// A connection to the runtime API: one command per connection, answer read to EOF, at most
/// the site's `max_connections` open at once.
pub struct Runtime {
    target: String,
    timeout: Duration,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Runtime {
    pub fn connect(ctx: &StepContext, site: &str) -> Result<Runtime, ActionError> {
        let cfg: HaproxySite = ctx.site_section(site, "haproxy")?;
        let gate = CONNECTIONS.of(&cfg.runtime, cfg.max_connections as usize);
        Ok(Runtime { target: cfg.runtime, timeout: cfg.timeout.0, gate })
    }

    pub fn new(target: impl Into<String>) -> Runtime {
        let target = target.into();
        let gate = CONNECTIONS.of(&target, eight() as usize);
        Runtime { target, timeout: Duration::from_secs(5), gate }
    }

    /// Send one command; returns HAProxy's text answer. The timeout counts from the connection,
    /// not from the wait for a free one.
    pub async fn command(&self, cmd: &str) -> Result<String, ActionError> {
        let _turn = self.gate.acquire().await.expect("the gate is never closed");
        let fut = async {
            let mut answer = Vec::new();
            if let Some(path) = self.target.strip_prefix("unix://") {
                let mut s = tokio::net::UnixStream::connect(path).await?;
                s.write_all(format!("{cmd}\n").as_bytes()).await?;
                s.read_to_end(&mut answer).await?;
            } else {
                let addr = self.target.strip_prefix("tcp://").unwrap_or(&self.target);
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.write_all(format!("{cmd}\n").as_bytes()).await?;
                s.read_to_end(&mut answer).await?;
            }
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(e)) => {
                Err(ActionError::retryable(format!("HAProxy runtime API {} is unreachable: {e}", self.target))
                    .with_hint("check that haproxy runs with `stats socket ... level admin` at this address"))
            }
            Err(_) => Err(ActionError::retryable(format!(
                "HAProxy runtime API {} did not answer `{cmd}` within {}",
                self.target,
                humantime_ms(self.timeout)
            ))
            .with_hint("HAProxy may be overloaded or stuck; the step retries (the site's `timeout` sets the wait)")),
        }
    }

    /// The socket's level (`admin`, `operator`, `user`) from `show cli level` (HAProxy 2.0+);
    /// `None` when this HAProxy does not say. Callers asking while a read is on its way share
    /// it: a fleet's preflight asks once per application, all at once.
    pub async fn level(&self) -> Result<Option<String>, ActionError> {
        static READS: drover_api::SharedReads<Result<Option<String>, ActionError>> = drover_api::SharedReads::new();
        READS
            .read(&self.target, || async {
                let text = self.command("show cli level").await?;
                let level = text.trim();
                Ok(["admin", "operator", "user"].contains(&level).then(|| level.to_string()))
            })
            .await
    }

    pub async fn backends(&self) -> Result<Vec<String>, ActionError> {
        let text = self.command("show backend").await?;
        Ok(text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(|l| l.trim().to_string()).collect())
    }

    /// Every server of a backend; an unknown backend is an error listing the existing ones.
    pub async fn servers(&self, backend: &str) -> Result<Vec<ServerStatus>, ActionError> {
        let text = self.command(&format!("show servers state {backend}")).await?;
        if text.contains("Can't find backend") {
            let known = self.backends().await.unwrap_or_default();
            return Err(ActionError::permanent(format!("HAProxy has no backend `{backend}`"))
                .with_hint(format!("backends: {}", known.join(", "))));
        }
        parse_servers_state(&text).map_err(|e| {
            ActionError::permanent(format!("cannot read HAProxy's `show servers state {backend}`: {e}"))
                .with_hint("this HAProxy's runtime API answered in an unexpected format")
        })
    }

    /// A `set server` command; HAProxy answers nothing (or a notice) on success.
    async fn set(&self, backend: &str, server: &str, what: &str) -> Result<(), ActionError> {
        let answer = self.command(&format!("set server {backend}/{server} {what}")).await?;
        let a = answer.trim();
        let ok = a.is_empty()
            || a.starts_with("IP changed")
            || a.starts_with("no need to change")
            || a.contains("port changed");
        if ok {
            return Ok(());
        }
        if a.contains("No such server") || a.contains("No such backend") {
            let known =
                self.servers(backend).await.map(|s| s.iter().map(|x| x.server.clone()).collect::<Vec<_>>().join(", "));
            return Err(ActionError::permanent(format!("HAProxy has no server `{backend}/{server}`"))
                .with_hint(format!("servers of `{backend}`: {}", known.unwrap_or_else(|e| e.message))));
        }
        if a.contains("Permission denied") {
            return Err(ActionError::permanent(format!("HAProxy refused `set server {backend}/{server} {what}`: {a}"))
                .with_hint("the stats socket needs `level admin`"));
        }
        Err(ActionError::permanent(format!("HAProxy refused `set server {backend}/{server} {what}`: {a}")))
    }
}

/// Parse `show servers state` (format version 1).
pub fn parse_servers_state(text: &str) -> Result<Vec<ServerStatus>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        Some("1") => {}
        Some(other) => return Err(format!("unknown format version `{other}`")),
        None => return Err("empty answer".into()),
    }
    let mut header: Vec<&str> = vec![];
    let mut out = vec![];
    for line in lines {
        if let Some(h) = line.strip_prefix('#') {
            header = h.split_whitespace().collect();
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let col = |name: &str| -> Result<&str, String> {
            let i = header.iter().position(|h| *h == name).ok_or_else(|| format!("no column `{name}`"))?;
            cols.get(i).copied().ok_or_else(|| format!("short line: {line}"))
        };
        let admin: u32 = col("srv_admin_state")?.parse().map_err(|_| "bad srv_admin_state".to_string())?;
        // Bits: 0x01 forced maint, 0x02 inherited maint, 0x20 resolution maint; 0x08 forced
        // drain, 0x10 inherited drain. 0x04 only records `disabled` in the configuration: it
        // stays set after `set server ... state ready` although the server then serves.
        let state = if admin & (0x01 | 0x02 | 0x20) != 0 {
            ServerState::Maint
        } else if admin & (0x08 | 0x10) != 0 {
            ServerState::Drain
        } else {
            ServerState::Ready
        };
        out.push(ServerStatus {
            backend: col("be_name")?.to_string(),
            server: col("srv_name")?.to_string(),
            address: col("srv_addr")?.to_string(),
            port: col("srv_port")?.parse().unwrap_or(0),
            state,
            weight: col("srv_uweight")?.parse().map_err(|_| "bad srv_uweight".to_string())?,
        });
    }
    Ok(out)
}

fn order(c: &ServerChange) -> u8 {
    match c.state {
        Some(ServerState::Ready) | None => 0,
        Some(ServerState::Drain) => 1,
        Some(ServerState::Maint) => 2,
    }
}

/// What must change for one server, as human lines.
fn differences(now: &ServerStatus, want: &ServerChange) -> Vec<String> {
    let mut d = vec![];
    if let Some(s) = want.state
        && s != now.state
    {
        d.push(format!("{}/{}: {} → {}", now.backend, now.server, now.state.word(), s.word()));
    }
    if let Some(w) = want.weight
        && w != now.weight
    {
        d.push(format!("{}/{}: weight {} → {w}", now.backend, now.server, now.weight));
    }
    if let Some(a) = &want.address
        && (a != &now.address || want.port.is_some_and(|p| p != now.port))
    {
        d.push(format!(
            "{}/{}: {}:{} → {a}:{}",
            now.backend,
            now.server,
            now.address,
            now.port,
            want.port.unwrap_or(now.port)
        ));
    }
    d
}

/// One server of a backend as `show servers state` listed them.
fn find(all: &[ServerStatus], backend: &str, server: &str) -> Result<ServerStatus, ActionError> {
    all.iter().find(|s| s.server == server).cloned().ok_or_else(|| {
        ActionError::permanent(format!("HAProxy has no server `{backend}/{server}`")).with_hint(format!(
            "servers of `{backend}`: {}",
            all.iter().map(|s| s.server.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Every server of each of these backends, one `show servers state` per backend.
async fn states(rt: &Runtime, changes: &[&ServerChange]) -> Result<BTreeMap<String, Vec<ServerStatus>>, ActionError> {
    let mut out = BTreeMap::new();
    for c in changes {
        if !out.contains_key(&c.backend) {
            out.insert(c.backend.clone(), rt.servers(&c.backend).await?);
        }
    }
    Ok(out)
}

/// Apply changes in order (ready, drain, maint), then verify them all. Returns every server as
/// it was before, and how many actually changed. Each backend is read once before and once
/// after: the runtime API takes one command per connection and serves them one at a time, and
/// a fleet's switches all queue there.
async fn apply(rt: &Runtime, changes: &[ServerChange]) -> Result<(Vec<ServerStatus>, usize), ActionError> {
    let mut sorted: Vec<&ServerChange> = changes.iter().collect();
    sorted.sort_by_key(|c| order(c));
    let mut before = vec![];
    let mut changed = 0;
    let was = states(rt, &sorted).await?;
    for c in &sorted {
        let now = find(&was[&c.backend], &c.backend, &c.server)?;
        before.push(now.clone());
        if !differences(&now, c).is_empty() {
            changed += 1;
        }
        if let Some(a) = &c.address
            && (a != &now.address || c.port.is_some_and(|p| p != now.port))
        {
            let port = c.port.map(|p| format!(" port {p}")).unwrap_or_default();
            rt.set(&c.backend, &c.server, &format!("addr {a}{port}")).await?;
        }
        if let Some(w) = c.weight
            && w != now.weight
        {
            rt.set(&c.backend, &c.server, &format!("weight {w}")).await?;
        }
        if let Some(s) = c.state
            && s != now.state
        {
            if s == ServerState::Maint
                && let Some(d) = c.drain_for
                && now.state == ServerState::Ready
            {
                rt.set(&c.backend, &c.server, "state drain").await?;
                tokio::time::sleep(d.0).await;
            }
            rt.set(&c.backend, &c.server, &format!("state {}", s.word())).await?;
        }
    }
    let is = states(rt, &sorted).await?;
    for c in &sorted {
        let after = find(&is[&c.backend], &c.backend, &c.server)?;
        let left = differences(&after, c);
        if !left.is_empty() {
            return Err(ActionError::retryable(format!(
                "HAProxy accepted the change but reports: {}",
                left.join("; ")
            ))
            .with_hint("another process may be changing these servers at the same time"));
        }
    }
    Ok((before, changed))
}

/// `lb.haproxy.set`
pub struct HaproxySet;

#[async_trait]
impl TypedAction for HaproxySet {
    type Params = HaproxySetParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "lb.haproxy.set",
        summary: "Set HAProxy servers' state (ready, drain, maint), weight or address over the runtime API, verified",
        outputs: &[
            ("previous", ValueType::Any, "the servers as they were (used by undo)"),
            ("changed", ValueType::Int, "how many servers changed"),
        ],
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    fn check(&self, p: &HaproxySetParams) -> Result<(), Vec<ParamError>> {
        let mut errs = vec![];
        if p.servers.is_empty() {
            errs.push(ParamError::at(&["servers"], "name at least one server"));
        }
        for (i, s) in p.servers.iter().enumerate() {
            if s.state.is_none() && s.weight.is_none() && s.address.is_none() {
                errs.push(ParamError {
                    path: vec![drover_api::PathSegment::Key("servers".into()), drover_api::PathSegment::Index(i)],
                    message: "nothing to change: give `state`, `weight` or `address`".into(),
                    hint: None,
                });
            }
            if s.weight.is_some_and(|w| w > 256) {
                errs.push(ParamError::at(&["servers"], format!("weight {} is above 256", s.weight.unwrap_or(0))));
            }
            if s.port.is_some() && s.address.is_none() {
                errs.push(ParamError::at(&["servers"], "`port` goes with `address`"));
            }
            if p.servers[..i].iter().any(|o| o.backend == s.backend && o.server == s.server) {
                errs.push(ParamError {
                    path: vec![drover_api::PathSegment::Key("servers".into()), drover_api::PathSegment::Index(i)],
                    message: format!("server `{}/{}` is listed twice", s.backend, s.server),
                    hint: Some("give each server once, with everything that changes on it".into()),
                });
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    async fn plan(&self, ctx: &StepContext, p: HaproxySetParams) -> Result<Plan, ActionError> {
        let rt = Runtime::connect(ctx, &p.site)?;
        let mut plan = Plan::new(format!("{} HAProxy server change(s)", p.servers.len()));
        match rt.level().await {
            Ok(Some(level)) if level != "admin" => {
                let detail = format!("the socket is at level {level}; changing servers needs `level admin`");
                plan = plan.check("runtime API may change servers", false, detail);
            }
            Ok(_) => {}
            Err(e) => return Ok(plan.access_check("runtime API reachable", false, e.message)),
        }
        let mut backends: BTreeMap<String, Vec<ServerStatus>> = BTreeMap::new();
        for c in &p.servers {
            if !backends.contains_key(&c.backend) {
                match rt.servers(&c.backend).await {
                    Ok(s) => {
                        backends.insert(c.backend.clone(), s);
                    }
                    Err(e) => {
                        plan = plan.check(
                            format!("backend {}", c.backend),
                            false,
                            format!("{} ({})", e.message, e.hint.unwrap_or_default()),
                        );
                        continue;
                    }
                }
            }
            match backends[&c.backend].iter().find(|s| s.server == c.server) {
                Some(now) => {
                    let diff = differences(now, c);
                    plan = plan.check(
                        format!("server {}/{}", c.backend, c.server),
                        true,
                        format!("{} weight {}", now.state.word(), now.weight),
                    );
                    plan.changes.extend(diff);
                }
                None => {
                    let names: Vec<&str> = backends[&c.backend].iter().map(|s| s.server.as_str()).collect();
                    plan = plan.check(
                        format!("server {}/{}", c.backend, c.server),
                        false,
                        format!("no such server; servers: {}", names.join(", ")),
                    );
                }
            }
        }
        if plan.changes.is_empty() && plan.failed_checks().next().is_none() {
            plan.summary = "HAProxy servers are already as wanted".into();
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: HaproxySetParams) -> Result<Outputs, ActionError> {
        let rt = Runtime::connect(ctx, &p.site)?;
        let (before, changed) = apply(&rt, &p.servers).await?;
        let mut out = Outputs::new();
        out.insert("previous".into(), json!(before));
        out.insert("changed".into(), json!(changed));
        Ok(out)
    }

    async fn undo(&self, ctx: &StepContext, p: HaproxySetParams, outputs: &Outputs) -> Result<(), ActionError> {
        let rt = Runtime::connect(ctx, &p.site)?;
        let before: Vec<ServerStatus> = outputs
            .get("previous")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| ActionError::permanent("no record of the servers' previous states to restore"))?;
        let restore: Vec<ServerChange> = before
            .into_iter()
            .map(|b| ServerChange {
                backend: b.backend,
                server: b.server,
                state: Some(b.state),
                weight: Some(b.weight),
                address: Some(b.address),
                port: Some(b.port),
                drain_for: None,
            })
            .collect();
        apply(&rt, &restore).await.map(|_| ())
    }
}

/// A duration as an operator reads it: "300ms", "5s".
fn humantime_ms(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_show_servers_state() {
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 app 1 east 127.0.0.1 2 0 1 1 10 1 0 0 0 0 0 0 - 8001 - 0 0 - - 0\n3 app 2 west 127.0.0.1 0 1 1 1 10 1 0 0 0 0 0 0 - 8002 - 0 0 - - 0\n3 app 3 spare 127.0.0.1 2 8 1 1 10 1 0 0 0 0 0 0 - 8003 - 0 0 - - 0\n";
        let s = parse_servers_state(text).unwrap();
        assert_eq!(
            s.iter().map(|x| (x.server.as_str(), x.state, x.port)).collect::<Vec<_>>(),
            vec![
                ("east", ServerState::Ready, 8001),
                ("west", ServerState::Maint, 8002),
                ("spare", ServerState::Drain, 8003)
            ]
        );
        assert!(parse_servers_state("2\n").is_err());
    }

    #[test]
    fn a_server_listed_twice_is_refused_at_load() {
        // Its changes are applied against one reading and verified together: give it once.
        let twice = serde_json::json!({ "site": "lb", "servers": [
            { "backend": "app", "server": "east", "weight": 10 },
            { "backend": "app", "server": "east", "state": "maint" },
        ] });
        let errs = typed(HaproxySet).check_params(&twice).unwrap_err();
        assert!(errs.iter().any(|e| e.message == "server `app/east` is listed twice"), "{errs:?}");
    }
}
