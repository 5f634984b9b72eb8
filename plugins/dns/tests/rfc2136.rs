//! RFC 2136 actions against real authoritative servers — BIND 9 and Knot (Debian `bind9`,
//! `knot`) — each started here on loopback with a TSIG-signed dynamic zone. Every test runs
//! against both, and against the lab's built-in stand-in, which must answer as they do.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use drover_api::{Action, ErrorKind, StepContext};
use drover_dns::RecordKind;

#[derive(Clone, Copy)]
enum Kind {
    Bind,
    Knot,
    StandIn,
}

struct Server {
    child: Option<Child>,
    _standin: Option<drover_standins::dns::StandIn>,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

const SECRET_VAR: &str = "DROVER_TEST_TSIG";

/// The zone's TSIG secret: the same in every test, as tests share the environment.
fn test_secret() -> String {
    let secret: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    base64::engine::general_purpose::STANDARD.encode(secret)
}

async fn server(kind: Kind) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let secret = test_secret();
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var(SECRET_VAR, &secret) };
    if let Kind::StandIn = kind {
        let records = [("ns1.example.test.", "127.0.0.1"), ("app.example.test.", "192.0.2.10")];
        let s = drover_standins::dns::StandIn::start(0, "example.test.", "drover-key", &secret, 300, &records)
            .await
            .unwrap();
        let port = s.addr().port();
        return Server { child: None, _standin: Some(s), _dir: dir, port };
    }
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("example.test.zone"),
        "$TTL 300\n@ IN SOA ns1.example.test. admin.example.test. 1 3600 600 86400 300\n@ IN NS ns1.example.test.\nns1 IN A 127.0.0.1\napp IN A 192.0.2.10\n",
    )
    .unwrap();
    let conf = match kind {
        Kind::Knot => dir.path().join("knot.conf"),
        _ => dir.path().join("named.conf"),
    };
    let started = drover_api::procs::start_on_free_ports(1, Duration::from_secs(15), |port| {
        let port = port[0];
        std::fs::write(
            dir.path().join("knot.conf"),
            format!(
                "server:\n  listen: 127.0.0.1@{port}\n  rundir: {d}\ndatabase:\n  storage: {d}\nkey:\n  - id: drover-key\n    algorithm: hmac-sha256\n    secret: {secret}\nacl:\n  - id: update\n    key: drover-key\n    action: update\ntemplate:\n  - id: default\n    storage: {d}\nzone:\n  - domain: example.test\n    file: example.test.zone\n    acl: update\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                "key \"drover-key\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
                 options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};\n\
                   recursion no; dnssec-validation no; }};\n\
                 controls {{ }};\n\
                 zone \"example.test\" {{ type primary; file \"{d}/example.test.zone\"; allow-update {{ key \"drover-key\"; }}; }};\n"
            ),
        )
        .unwrap();
        let mut server = match kind {
            Kind::Knot => Command::new("knotd"),
            _ => Command::new("named"),
        };
        if !matches!(kind, Kind::Knot) {
            server.arg("-g");
        }
        server.arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null());
        server
    });
    let (child, port) = started.unwrap_or_else(|e| {
        panic!("{e}: BIND 9 and Knot are needed: `apt-get install bind9 knot` (bash .ci/run installs them)")
    });
    let port = port[0];
    // Ready once the zone answers (named opens its port before the zone is loaded).
    let deadline = Instant::now() + Duration::from_secs(15);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    loop {
        let answer = drover_dns::query(addr, "app.example.test.", RecordKind::A, Duration::from_millis(200)).await;
        if answer.is_ok_and(|r| !r.values.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "named did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server { child: Some(child), _standin: None, _dir: dir, port }
}

fn ctx(port: u16, key_ref: &str, zone: &str) -> StepContext {
    let mut sites = BTreeMap::new();
    sites.insert(
        "dns".to_string(),
        json!({ "dns": { "server": format!("127.0.0.1:{port}"), "zone": zone, "key_name": "drover-key", "tsig_key": key_ref, "timeout": "2s" } }),
    );
    drover_api::testing::context(sites, Duration::from_secs(20))
}

fn good(port: u16) -> StepContext {
    ctx(port, &format!("env:{SECRET_VAR}"), "example.test.")
}

fn action(name: &str) -> Arc<dyn Action> {
    drover_dns::actions().into_iter().find(|a| a.info().name == name).unwrap()
}

async fn lookup(port: u16) -> drover_dns::Rrset {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    drover_dns::query(addr, "app.example.test.", RecordKind::A, Duration::from_secs(2)).await.unwrap()
}

async fn served(port: u16) -> Vec<String> {
    lookup(port).await.values
}

fn to_west() -> Value {
    json!({ "site": "dns", "name": "app.example.test.", "type": "A", "values": ["192.0.2.20"], "ttl": 60, "expect_current": ["192.0.2.10"] })
}

async fn set_is_served_idempotent_and_undone(kind: Kind) {
    let b = server(kind).await;
    let c = good(b.port);
    let set = action("dns.rfc2136.set");
    let plan = set.plan(&c, &to_west()).await.unwrap();
    assert!(plan.checks.iter().all(|x| x.ok), "{plan:?}");
    assert_eq!(plan.changes.len(), 1);
    let out = set.run(&c, &to_west()).await.unwrap();
    assert_eq!(out["previous"], json!({ "values": ["192.0.2.10"], "ttl": 300 }));
    assert_eq!(served(b.port).await, vec!["192.0.2.20"]);
    // Again: already there, nothing sent (the guard would refuse otherwise).
    set.run(&c, &to_west()).await.unwrap();
    set.undo(&c, &to_west(), &out).await.unwrap();
    assert_eq!(served(b.port).await, vec!["192.0.2.10"]);
}

async fn expect_current_mismatch_refuses_and_changes_nothing(kind: Kind) {
    let b = server(kind).await;
    let c = good(b.port);
    let mut with = to_west();
    with["expect_current"] = json!(["198.51.100.1"]);
    let err = action("dns.rfc2136.set").run(&c, &with).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("it holds [\"192.0.2.10\"], the runbook expects [\"198.51.100.1\"]"),
        "{}",
        err.message
    );
    assert_eq!(served(b.port).await, vec!["192.0.2.10"]);
}

async fn a_wrong_key_is_named_and_the_plan_proves_it_without_changing_anything(kind: Kind) {
    let b = server(kind).await;
    // SAFETY: test-local variable.
    unsafe { std::env::set_var("DROVER_TEST_WRONG_TSIG", base64::engine::general_purpose::STANDARD.encode([9u8; 32])) };
    let c = ctx(b.port, "env:DROVER_TEST_WRONG_TSIG", "example.test.");
    let err = action("dns.rfc2136.set").run(&c, &to_west()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("env:DROVER_TEST_WRONG_TSIG"), "{}", err.message);
    assert!(err.message.contains("NOTAUTH") || err.message.contains("TSIG"), "{}", err.message);
    let plan = action("dns.rfc2136.set").plan(&c, &to_west()).await.unwrap();
    assert!(plan.checks.iter().any(|x| x.name == "TSIG key accepted" && !x.ok), "{plan:?}");
    let plan = action("dns.rfc2136.set").plan(&good(b.port), &to_west()).await.unwrap();
    assert!(plan.checks.iter().any(|x| x.name == "TSIG key accepted" && x.ok), "{plan:?}");
    assert_eq!(served(b.port).await, vec!["192.0.2.10"], "proving the key changed nothing");
}

async fn a_zone_the_server_does_not_serve_is_explained(kind: Kind) {
    let b = server(kind).await;
    let c = ctx(b.port, &format!("env:{SECRET_VAR}"), "other.test.");
    let with = json!({ "site": "dns", "name": "app.other.test.", "type": "A", "values": ["192.0.2.20"] });
    let plan = action("dns.rfc2136.set").plan(&c, &with).await.unwrap();
    assert!(
        plan.checks.iter().any(|x| x.name == "zone served" && !x.ok && x.detail.contains("not authoritative")),
        "{plan:?}"
    );
    let err = action("dns.rfc2136.set").run(&c, &with).await.unwrap_err();
    assert!(
        err.message.contains("NOTAUTH") || err.message.contains("REFUSED") || err.message.contains("NOTZONE"),
        "{}",
        err.message
    );
    let outside = json!({ "site": "dns", "name": "app.elsewhere.test.", "type": "A", "values": ["192.0.2.20"] });
    let err = action("dns.rfc2136.set").run(&good(b.port), &outside).await.unwrap_err();
    assert!(err.message.contains("NOTZONE"), "{}", err.message);
}

async fn a_dead_server_is_retryable(_: Kind) {
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var(SECRET_VAR, test_secret()) };
    let port = free_port();
    let err = action("dns.rfc2136.set").run(&good(port), &to_west()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
}

async fn ttl_changes_keep_values_and_verify_waits_for_the_answer(kind: Kind) {
    let b = server(kind).await;
    let c = good(b.port);
    let with = json!({ "site": "dns", "name": "app.example.test.", "type": "A", "ttl": 30 });
    let out = action("dns.ttl").run(&c, &with).await.unwrap();
    assert_eq!(out["previous"]["ttl"], 300);
    let now = lookup(b.port).await;
    assert_eq!((now.values, now.ttl), (vec!["192.0.2.10".to_string()], 30));
    let verify = json!({ "name": "app.example.test.", "type": "A", "expect": ["192.0.2.10"], "servers": [format!("127.0.0.1:{}", b.port)], "interval": "100ms" });
    action("dns.verify").run(&c, &verify).await.unwrap();
    let mut wrong = verify.clone();
    wrong["expect"] = json!(["192.0.2.99"]);
    let short = drover_api::testing::context(BTreeMap::new(), Duration::from_millis(500));
    let err = action("dns.verify").run(&short, &wrong).await.unwrap_err();
    assert!(err.message.contains("says [\"192.0.2.10\"]"), "{}", err.message);
}

/// Each scenario against both servers and the stand-in.
macro_rules! both {
    ($($name:ident),*) => {
        mod bind9 {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::Bind).await
            })*
        }
        mod knot {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Kind::Knot).await
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
    set_is_served_idempotent_and_undone,
    expect_current_mismatch_refuses_and_changes_nothing,
    a_wrong_key_is_named_and_the_plan_proves_it_without_changing_anything,
    a_zone_the_server_does_not_serve_is_explained,
    a_dead_server_is_retryable,
    ttl_changes_keep_values_and_verify_waits_for_the_answer
);
