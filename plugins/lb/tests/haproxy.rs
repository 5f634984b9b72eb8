//! `lb.haproxy.set` against a real HAProxy (Debian `haproxy`, started here on loopback) in
//! front of two small HTTP backends standing for the two sites — and the same scenarios against
//! the lab's built-in stand-in, which must answer as HAProxy does.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use drover_api::{Action, ErrorKind, StepContext};

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Haproxy,
    StandIn,
}

struct Lab {
    _procs: Kill,
    _standin: Option<drover_standins::lb::StandIn>,
    _dir: tempfile::TempDir,
    front: u16,
    stats: u16,
    /// A second runtime socket at `level operator` (HAProxy only).
    operator_stats: Option<u16>,
}

async fn lab(kind: Kind) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Kill(vec![]);
    let mut ports = vec![];
    for site in ["east", "west"] {
        let root = dir.path().join(site);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), format!("served by {site}\n")).unwrap();
        let started = drover_api::procs::start_on_free_ports(1, Duration::from_secs(10), |port| {
            let mut backend = Command::new("python3");
            backend
                .args(["-m", "http.server", &port[0].to_string(), "--bind", "127.0.0.1", "--directory"])
                .arg(&root)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            backend
        });
        let (backend, port) = started.unwrap_or_else(|e| panic!("{e}: python3 is needed for the test backends"));
        procs.0.push(backend);
        ports.push(port[0]);
    }
    if let Kind::StandIn = kind {
        use drover_standins::lb::{BackendConfig, ServerConfig, StandIn};
        let server = |name: &str, port: u16, disabled| ServerConfig {
            name: name.into(),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            weight: 100,
            disabled,
        };
        let s = StandIn::start(
            0,
            vec![
                BackendConfig {
                    name: "app".into(),
                    frontend_port: 0,
                    servers: vec![server("east", ports[0], false), server("west", ports[1], true)],
                },
                BackendConfig { name: "other".into(), frontend_port: 0, servers: vec![server("spare", 9, true)] },
            ],
        )
        .await
        .unwrap();
        let front =
            s.url("app").unwrap().trim_start_matches("http://127.0.0.1:").trim_end_matches('/').parse().unwrap();
        let stats = s.runtime().rsplit(':').next().unwrap().parse().unwrap();
        return Lab { _procs: procs, _standin: Some(s), _dir: dir, front, stats, operator_stats: None };
    }
    let cfg_path = dir.path().join("haproxy.cfg");
    let started = drover_api::procs::start_on_free_ports(3, Duration::from_secs(10), |p| {
        let (front, stats, operator) = (p[0], p[1], p[2]);
        let cfg = format!(
            "global\n  stats socket ipv4@127.0.0.1:{stats} level admin\n  stats socket ipv4@127.0.0.1:{operator} level operator\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\nfrontend web\n  bind 127.0.0.1:{front}\n  default_backend app\nbackend app\n  server east 127.0.0.1:{} weight 100\n  server west 127.0.0.1:{} weight 100 disabled\nbackend other\n  server spare 127.0.0.1:9 disabled\n",
            ports[0], ports[1]
        );
        std::fs::write(&cfg_path, cfg).unwrap();
        let mut haproxy = Command::new("haproxy");
        haproxy.arg("-db").arg("-f").arg(&cfg_path).stdout(Stdio::null()).stderr(Stdio::null());
        haproxy
    });
    let (haproxy, p) = started
        .unwrap_or_else(|e| panic!("{e}: HAProxy is needed: `apt-get install haproxy` (bash .ci/run installs it)"));
    procs.0.push(haproxy);
    let (front, stats, operator) = (p[0], p[1], p[2]);
    Lab { _procs: procs, _standin: None, _dir: dir, front, stats, operator_stats: Some(operator) }
}

fn ctx(stats: u16) -> StepContext {
    let mut sites = BTreeMap::new();
    sites.insert("lb".to_string(), json!({ "haproxy": { "runtime": format!("tcp://127.0.0.1:{stats}") } }));
    drover_api::testing::context(sites, Duration::from_secs(20))
}

fn action(name: &str) -> Arc<dyn Action> {
    drover_lb::actions().into_iter().chain(drover_core_actions::actions()).find(|a| a.info().name == name).unwrap()
}

fn flip() -> Value {
    json!({ "site": "lb", "servers": [
        { "backend": "app", "server": "east", "state": "maint", "drain_for": "100ms" },
        { "backend": "app", "server": "west", "state": "ready" },
    ] })
}

async fn traffic_moves_to_the_dr_backend_and_undo_moves_it_back(kind: Kind) {
    let lab = lab(kind).await;
    let c = ctx(lab.stats);
    let set = action("lb.haproxy.set");
    let plan = set.plan(&c, &flip()).await.unwrap();
    assert_eq!(plan.changes, vec!["app/east: ready → maint", "app/west: maint → ready"]);
    let out = set.run(&c, &flip()).await.unwrap();
    assert_eq!(out["changed"], 2);
    // The core wait.http proves that users now reach the DR site through the load balancer.
    let url = format!("http://127.0.0.1:{}/", lab.front);
    let check = json!({ "url": url, "interval": "100ms", "expect_body_contains": "served by west", "successes": 3 });
    action("wait.http").run(&c, &check).await.unwrap();

    let again = set.run(&c, &flip()).await.unwrap();
    assert_eq!(again["changed"], 0, "a second run changes nothing");

    set.undo(&c, &flip(), &out).await.unwrap();
    let back = json!({ "url": url, "interval": "100ms", "expect_body_contains": "served by east", "successes": 3 });
    action("wait.http").run(&c, &back).await.unwrap();
}

async fn weights_and_addresses_change_and_are_verified(kind: Kind) {
    let lab = lab(kind).await;
    let c = ctx(lab.stats);
    let with = json!({ "site": "lb", "servers": [{ "backend": "app", "server": "east", "weight": 10, "address": "127.0.0.2", "port": 8080 }] });
    action("lb.haproxy.set").run(&c, &with).await.unwrap();
    let rt = drover_lb::Runtime::new(format!("tcp://127.0.0.1:{}", lab.stats));
    let east = rt.servers("app").await.unwrap().into_iter().find(|s| s.server == "east").unwrap();
    assert_eq!((east.weight, east.address.as_str(), east.port), (10, "127.0.0.2", 8080));
}

async fn unknown_backends_and_servers_are_named_with_what_exists(kind: Kind) {
    let lab = lab(kind).await;
    let c = ctx(lab.stats);
    let err = action("lb.haproxy.set")
        .run(&c, &json!({ "site": "lb", "servers": [{ "backend": "ap", "server": "east", "state": "ready" }] }))
        .await
        .unwrap_err();
    assert_eq!(err.message, "HAProxy has no backend `ap`");
    assert!(err.hint.as_deref().unwrap().contains("app") && err.hint.as_deref().unwrap().contains("other"), "{err:?}");
    let err = action("lb.haproxy.set")
        .run(&c, &json!({ "site": "lb", "servers": [{ "backend": "app", "server": "north", "state": "ready" }] }))
        .await
        .unwrap_err();
    assert_eq!(err.message, "HAProxy has no server `app/north`");
    assert_eq!(err.hint.as_deref(), Some("servers of `app`: east, west"));
    let plan = action("lb.haproxy.set")
        .plan(&c, &json!({ "site": "lb", "servers": [{ "backend": "app", "server": "north", "state": "ready" }] }))
        .await
        .unwrap();
    assert!(plan.failed_checks().any(|x| x.detail.contains("servers: east, west")), "{plan:?}");
}

async fn a_dead_runtime_api_is_a_retryable_error(_: Kind) {
    let dead = drover_api::testing::RefusingPort::new();
    let err = action("lb.haproxy.set").run(&ctx(dead.port), &flip()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable);
    assert!(err.message.contains("is unreachable"), "{}", err.message);
}

#[tokio::test]
async fn a_socket_below_admin_level_is_refused_and_the_plan_says_so_first() {
    let lab = lab(Kind::Haproxy).await;
    let c = ctx(lab.operator_stats.unwrap());
    let plan = action("lb.haproxy.set").plan(&c, &flip()).await.unwrap();
    let refused: Vec<_> = plan.failed_checks().map(|x| x.detail.clone()).collect();
    assert_eq!(refused, ["the socket is at level operator; changing servers needs `level admin`"], "{plan:?}");
    let err = action("lb.haproxy.set").run(&c, &flip()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err:?}");
    assert!(err.message.contains("Permission denied"), "{}", err.message);
    assert_eq!(err.hint.as_deref(), Some("the stats socket needs `level admin`"));
}

/// A runtime socket answering every command with `answer`, as something that is not HAProxy,
/// or a HAProxy whose format this build does not know, might.
async fn answering(answer: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    port
}

#[tokio::test]
async fn an_answer_in_an_unknown_format_is_permanent_and_changes_nothing() {
    for answer in ["2\n# a future format\n1 app 1 east\n", "HTTP/1.1 400 Bad Request\r\n\r\n", ""] {
        let port = answering(answer).await;
        let err = action("lb.haproxy.set").run(&ctx(port), &flip()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent, "{answer:?}: {err:?}");
        assert!(
            err.message.starts_with("cannot read HAProxy's `show servers state app`"),
            "{answer:?}: {}",
            err.message
        );
        assert_eq!(err.hint.as_deref(), Some("this HAProxy's runtime API answered in an unexpected format"));
    }
}

#[tokio::test]
async fn a_runtime_api_that_never_answers_is_retryable_after_the_site_s_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _silent = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = listener.accept().await {
            held.push(s); // read nothing, answer nothing
        }
    });
    let sites = BTreeMap::from([(
        "lb".to_string(),
        json!({ "haproxy": { "runtime": format!("tcp://127.0.0.1:{port}"), "timeout": "300ms" } }),
    )]);
    let c = drover_api::testing::context(sites, Duration::from_secs(20));
    let err = action("lb.haproxy.set").run(&c, &flip()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert_eq!(
        err.message,
        format!("HAProxy runtime API tcp://127.0.0.1:{port} did not answer `show servers state app` within 300ms")
    );
}

/// A fleet switches a hundred applications at once. HAProxy serves a stats socket 10
/// connections at a time (`stats maxconn`) and leaves the others in the listen backlog, where
/// they wait out TCP's retransmits (1 s, then 3 s): the 500-application lab's switches took 1–2 s
/// each for 2 ms of work. drover opens at most `max_connections` (8 unless the site says).
async fn a_fleet_of_switches_keeps_within_the_sockets_connections(kind: Kind) {
    let lab = lab(kind).await;
    let link = drover_api::testing::CountingLink::to(lab.stats).await;
    let c = ctx(link.port);
    let mut switches = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (c, set) = (c.clone(), action("lb.haproxy.set"));
        switches.spawn(async move { set.run(&c, &flip()).await });
    }
    for out in switches.join_all().await {
        out.unwrap();
    }
    let peak = link.peak();
    assert!((1..=8).contains(&peak), "{peak} connections to the runtime API at once");
}

/// The runtime API takes one command per connection and serves them one at a time; a fleet's
/// switches all queue there. A switch reads each backend once before and once after its
/// changes: flipping two servers is 2 reads + 2 `set server` (was 6 commands), a repeated
/// switch 2 reads (was 4).
async fn a_switch_reads_each_backend_once_before_and_once_after(kind: Kind) {
    let lab = lab(kind).await;
    let link = drover_api::testing::CountingLink::to(lab.stats).await;
    let c = ctx(link.port);
    let flip = json!({ "site": "lb", "servers": [
        { "backend": "app", "server": "east", "state": "maint" },
        { "backend": "app", "server": "west", "state": "ready" },
    ] });
    let out = action("lb.haproxy.set").run(&c, &flip).await.unwrap();
    assert_eq!(out["changed"], 2);
    assert_eq!(link.connections(true), 4);
    let out = action("lb.haproxy.set").run(&c, &flip).await.unwrap();
    assert_eq!(out["changed"], 0);
    assert_eq!(link.connections(false), 2);
}

/// Each scenario against HAProxy and the stand-in.
macro_rules! both {
    ($($name:ident),*) => {
        mod haproxy {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::Haproxy).await
            })*
        }
        mod standin {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::StandIn).await
            })*
        }
    };
}

both!(
    traffic_moves_to_the_dr_backend_and_undo_moves_it_back,
    weights_and_addresses_change_and_are_verified,
    unknown_backends_and_servers_are_named_with_what_exists,
    a_dead_runtime_api_is_a_retryable_error,
    a_switch_reads_each_backend_once_before_and_once_after,
    a_fleet_of_switches_keeps_within_the_sockets_connections
);
