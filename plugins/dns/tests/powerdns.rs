//! `dns.powerdns.set` against a real PowerDNS Authoritative server (Debian `pdns-server` with
//! the sqlite3 backend), started here on loopback with its HTTP API.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use drover_api::{Action, ErrorKind, StepContext};
use drover_dns::RecordKind;

const KEY: &str = "pdns-test-key";

struct Pdns {
    child: Child,
    _dir: tempfile::TempDir,
    api: u16,
    dns: u16,
}

impl Drop for Pdns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn pdns() -> Pdns {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pdns.sqlite3");
    let schema = std::fs::read_to_string("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql").expect(
        "PowerDNS is needed: `apt-get install pdns-server pdns-backend-sqlite3 sqlite3` (bash .ci/run installs them)",
    );
    let status = Command::new("sqlite3").arg(&db).arg(&schema).status().expect("sqlite3 is needed");
    assert!(status.success());
    let started = drover_api::procs::start_on_free_ports(2, Duration::from_secs(15), |ports| {
        let (api, dns) = (ports[0], ports[1]);
        std::fs::write(
            dir.path().join("pdns.conf"),
            format!(
                "launch=gsqlite3\ngsqlite3-database={}\napi=yes\napi-key={KEY}\nwebserver=yes\nwebserver-address=127.0.0.1\nwebserver-port={api}\nwebserver-allow-from=127.0.0.0/8\nlocal-address=127.0.0.1\nlocal-port={dns}\nsecurity-poll-suffix=\nsocket-dir={}\nguardian=no\ndaemon=no\n",
                db.display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let mut pdns = Command::new("pdns_server");
        pdns.arg(format!("--config-dir={}", dir.path().display())).stdout(Stdio::null()).stderr(Stdio::null());
        pdns
    });
    let (child, ports) = started.unwrap_or_else(|e| panic!("{e}: pdns_server is needed"));
    let (api, dns) = (ports[0], ports[1]);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api}/api/v1/servers/localhost/zones");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http.get(&base).header("X-API-Key", KEY).send().await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "pdns_server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let zone = json!({ "name": "example.test.", "kind": "Native", "nameservers": ["ns1.example.test."],
        "rrsets": [{ "name": "app.example.test.", "type": "A", "ttl": 300, "records": [{ "content": "192.0.2.10", "disabled": false }] }] });
    let r = http.post(&base).header("X-API-Key", KEY).json(&zone).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    Pdns { child, _dir: dir, api, dns }
}

fn ctx(p: &Pdns, key_var: &str, zone: &str) -> StepContext {
    let mut sites = BTreeMap::new();
    sites.insert(
        "pdns".to_string(),
        json!({ "powerdns": { "api": format!("http://127.0.0.1:{}", p.api), "api_key": format!("env:{key_var}"), "zone": zone } }),
    );
    drover_api::testing::context(sites, Duration::from_secs(20))
}

fn good(p: &Pdns) -> StepContext {
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var("DROVER_TEST_PDNS_KEY", KEY) };
    ctx(p, "DROVER_TEST_PDNS_KEY", "example.test.")
}

fn action() -> Arc<dyn Action> {
    drover_dns::actions().into_iter().find(|a| a.info().name == "dns.powerdns.set").unwrap()
}

async fn served(p: &Pdns) -> Vec<String> {
    let addr = format!("127.0.0.1:{}", p.dns).parse().unwrap();
    drover_dns::query(addr, "app.example.test.", RecordKind::A, Duration::from_secs(2)).await.unwrap().values
}

fn to_west() -> Value {
    json!({ "site": "pdns", "name": "app.example.test.", "type": "A", "values": ["192.0.2.20"], "ttl": 60, "expect_current": ["192.0.2.10"] })
}

#[tokio::test]
async fn set_is_served_idempotent_and_undone() {
    let p = pdns().await;
    let c = good(&p);
    let plan = action().plan(&c, &to_west()).await.unwrap();
    assert!(plan.checks.iter().all(|x| x.ok), "{plan:?}");
    let out = action().run(&c, &to_west()).await.unwrap();
    assert_eq!(out["previous"], json!({ "values": ["192.0.2.10"], "ttl": 300 }));
    assert_eq!(served(&p).await, vec!["192.0.2.20"]);
    action().run(&c, &to_west()).await.unwrap();
    action().undo(&c, &to_west(), &out).await.unwrap();
    assert_eq!(served(&p).await, vec!["192.0.2.10"]);
}

#[tokio::test]
async fn faults_are_explained() {
    let p = pdns().await;
    let c = good(&p);
    let mut mismatch = to_west();
    mismatch["expect_current"] = json!(["198.51.100.1"]);
    let err = action().run(&c, &mismatch).await.unwrap_err();
    assert!(err.message.contains("the runbook expects [\"198.51.100.1\"]"), "{}", err.message);

    // SAFETY: test-local variable.
    unsafe { std::env::set_var("DROVER_TEST_PDNS_WRONG", "nope") };
    let err = action().run(&ctx(&p, "DROVER_TEST_PDNS_WRONG", "example.test."), &to_west()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("rejected the API key from env:DROVER_TEST_PDNS_WRONG"), "{}", err.message);
    assert!(!format!("{err:?}").contains("nope"));

    let err = action().run(&ctx(&p, "DROVER_TEST_PDNS_KEY", "other.test."), &to_west()).await.unwrap_err();
    assert!(err.message.contains("does not serve zone other.test."), "{}", err.message);

    let outside = json!({ "site": "pdns", "name": "app.elsewhere.test.", "type": "A", "values": ["192.0.2.20"] });
    let err = action().run(&c, &outside).await.unwrap_err();
    assert!(err.message.contains("422"), "{}", err.message);
    assert_eq!(served(&p).await, vec!["192.0.2.10"], "nothing changed");
}
