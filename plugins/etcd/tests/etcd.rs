//! `etcd.snapshot` and `etcd.verify` against a real etcd (Debian `etcd-server`) and a real S3
//! server (moto), both started here on loopback: snapshot with its facts, retention, verify,
//! a truncated snapshot detected, an unreachable endpoint reported, the result restorable by
//! `etcdctl snapshot restore`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use drover_api::testing::Moto;
use drover_api::{Action, ErrorKind, StepContext};

struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
    tls: Option<Tls>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TLS material of an etcd started with `--client-cert-auth`: its CA, and a client
/// certificate and key that CA signed (PEM files).
struct Tls {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Tls {
    fn new(dir: &Path) -> Tls {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let issue = |name: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &ca).unwrap();
            (write(&format!("{name}.pem"), cert.pem()), write(&format!("{name}-key.pem"), key.serialize_pem()))
        };
        // etcd's HTTP gateway calls its own gRPC server with the server certificate: it must be
        // good for client authentication too, as etcd's own guides make them.
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let (server_cert, server_key) = issue("server", vec![ServerAuth, ClientAuth]);
        let (client_cert, client_key) = issue("client", vec![ClientAuth]);
        Tls { ca: write("ca.pem", ca.pem()), server_cert, server_key, client_cert, client_key }
    }
}

impl Etcd {
    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3").arg("--endpoints").arg(&self.url);
        if let Some(t) = &self.tls {
            c.arg("--cacert").arg(&t.ca).arg("--cert").arg(&t.client_cert).arg("--key").arg(&t.client_key);
        }
        c.args(args).output().unwrap()
    }
}

/// A one-member etcd holding `keys` keys.
fn etcd(keys: usize) -> Etcd {
    start_etcd(keys, false)
}

/// A one-member etcd serving TLS only, to clients with a certificate its CA signed.
fn etcd_with_client_certificates(keys: usize) -> Etcd {
    start_etcd(keys, true)
}

fn start_etcd(keys: usize, tls: bool) -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let scheme = if tls { "https" } else { "http" };
    let tls = tls.then(|| Tls::new(dir.path()));
    let started = drover_api::procs::start_on_free_ports(2, Duration::from_secs(20), |ports| {
        let url = format!("{scheme}://127.0.0.1:{}", ports[0]);
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        let mut command = Command::new("etcd");
        command
            .args(["--name", "m1", "--data-dir"])
            .arg(dir.path().join(format!("data-{}", ports[0])))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("m1={peer_url}")]);
        if let Some(t) = &tls {
            command.arg("--client-cert-auth").arg("--trusted-ca-file").arg(&t.ca);
            command.arg("--cert-file").arg(&t.server_cert).arg("--key-file").arg(&t.server_key);
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    });
    let (child, ports) = started.unwrap_or_else(|e| {
        panic!("{e}: etcd is needed: `apt-get install etcd-server etcd-client` (bash .ci/run installs it)")
    });
    let url = format!("{scheme}://127.0.0.1:{}", ports[0]);
    let etcd = Etcd { child, _dir: dir, url, tls };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !etcd.ctl(&["endpoint", "health"]).status.success() {
        assert!(Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..keys {
        assert!(etcd.ctl(&["put", &format!("/registry/pods/p{i}"), &"x".repeat(100)]).status.success());
    }
    etcd
}

fn ctx(endpoints: &[&str], moto: &Moto) -> StepContext {
    ctx_with(json!({ "endpoints": endpoints, "timeout": "2s" }), moto)
}

fn ctx_with(etcd: Value, moto: &Moto) -> StepContext {
    let mut sites = BTreeMap::new();
    sites.insert("cp".to_string(), json!({ "etcd": etcd }));
    sites.insert(
        "backups".to_string(),
        json!({ "s3": { "endpoint": moto.url(), "region": "us-east-1", "path_style": true,
                         "access_key": "env:DROVER_TEST_S3_KEY", "secret_key": "env:DROVER_TEST_S3_KEY" } }),
    );
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var("DROVER_TEST_S3_KEY", "test") };
    drover_api::testing::context(sites, Duration::from_secs(60))
}

async fn bucket(moto: &Moto) -> aws_sdk_s3::Client {
    moto.bucket("cp-snapshots").await.unwrap()
}

fn action(name: &str) -> Arc<dyn Action> {
    drover_etcd::actions().into_iter().find(|a| a.info().name == name).unwrap()
}

fn snapshot(keep: u32) -> Value {
    json!({ "site": "cp", "cluster": "prod-east", "to": { "site": "backups", "bucket": "cp-snapshots", "prefix": "etcd" }, "keep": keep })
}

fn verify(snapshot: &str) -> Value {
    json!({ "cluster": "prod-east", "from": { "site": "backups", "bucket": "cp-snapshots", "prefix": "etcd" }, "snapshot": snapshot })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_streams_to_s3_with_its_facts_and_restores_with_etcdctl() {
    let e = etcd(50);
    let moto = Moto::start().unwrap();
    let s3 = bucket(&moto).await;
    let c = ctx(&[&e.url], &moto);
    let plan = action("etcd.snapshot").plan(&c, &snapshot(0)).await.unwrap();
    assert!(plan.checks.iter().all(|x| x.ok), "{plan:?}");
    let out = action("etcd.snapshot").run(&c, &snapshot(0)).await.unwrap();
    let key = out["key"].as_str().unwrap();
    assert!(key.starts_with("etcd/prod-east/prod-east-") && key.ends_with("Z.db"), "{key}");
    assert!(key.contains(out["member"].as_str().unwrap()), "{out:?}");
    assert_eq!(out["keys"], 50);
    assert!(out["revision"].as_u64().unwrap() >= 51, "{out:?}");
    // The facts beside the snapshot; what was known before the stream also as its metadata.
    let facts = s3.get_object().bucket("cp-snapshots").key(format!("{key}.facts.json")).send().await.unwrap();
    let facts: Value = serde_json::from_slice(&facts.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!((facts["sha256"].as_str(), facts["keys"].as_str()), (out["sha256"].as_str(), Some("50")), "{facts}");
    assert_eq!(facts["size"].as_str(), Some(out["size"].to_string().as_str()), "{facts}");
    let head = s3.head_object().bucket("cp-snapshots").key(key).send().await.unwrap();
    assert_eq!(head.metadata().unwrap()["revision"], out["revision"].to_string());

    let dir = tempfile::tempdir().unwrap();
    let mut with = verify("latest");
    with["save_to"] = json!(dir.path().join("snap.db"));
    let checked = action("etcd.verify").run(&c, &with).await.unwrap();
    assert_eq!((checked["key"].clone(), checked["sha256"].clone()), (out["key"].clone(), out["sha256"].clone()));
    assert_eq!((checked["size"].clone(), checked["keys"].clone()), (out["size"].clone(), json!(50)));

    // Facts that do not match the snapshot (a replaced object, a mixed-up key) fail the check.
    let forged = serde_json::to_vec(&json!({ "sha256": "00".repeat(32) })).unwrap();
    s3.put_object().bucket("cp-snapshots").key(format!("{key}.facts.json")).body(forged.into()).send().await.unwrap();
    let err = action("etcd.verify").run(&c, &verify(key)).await.unwrap_err();
    assert!(err.message.ends_with(&format!("but {} was recorded", "00".repeat(32))), "{}", err.message);

    // The saved file is what etcdctl restores: its own check of etcd's hash passes.
    let restored = dir.path().join("restored");
    let r = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(dir.path().join("snap.db"))
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_snapshots() {
    let e = etcd(3);
    let moto = Moto::start().unwrap();
    let s3 = bucket(&moto).await;
    let c = ctx(&[&e.url], &moto);
    let mut keys = vec![];
    for _ in 0..3 {
        keys.push(action("etcd.snapshot").run(&c, &snapshot(2)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(1100)).await; // names carry the second
    }
    assert_eq!(keys[2]["deleted"], json!([keys[0]["key"]]), "{keys:?}");
    let listed = s3.list_objects_v2().bucket("cp-snapshots").prefix("etcd/prod-east/").send().await.unwrap();
    let mut left: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    left.sort();
    let kept = |i: usize| keys[i]["key"].as_str().unwrap().to_string();
    let facts = |i: usize| format!("{}.facts.json", kept(i));
    assert_eq!(
        left,
        [kept(1), facts(1), kept(2), facts(2)],
        "each snapshot with its facts; the oldest gone with its facts"
    );
    let latest = action("etcd.verify").run(&c, &verify("latest")).await.unwrap();
    assert_eq!(latest["key"], keys[2]["key"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_snapshot_is_detected() {
    let e = etcd(20);
    let moto = Moto::start().unwrap();
    let s3 = bucket(&moto).await;
    let c = ctx(&[&e.url], &moto);
    let out = action("etcd.snapshot").run(&c, &snapshot(0)).await.unwrap();
    let key = out["key"].as_str().unwrap();
    let full = s3.get_object().bucket("cp-snapshots").key(key).send().await.unwrap().body.collect().await.unwrap();
    let full = full.into_bytes();
    let cut = "etcd/prod-east/prod-east-cut-20991231T000000Z.db";
    s3.put_object()
        .bucket("cp-snapshots")
        .key(cut)
        .body(full[..full.len() - 4096].to_vec().into())
        .send()
        .await
        .unwrap();
    let err = action("etcd.verify").run(&c, &verify(cut)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains(cut) && err.message.contains("truncated or corrupt"), "{}", err.message);
    // `latest` now names the truncated one (newest by its name) and refuses it too.
    let err = action("etcd.verify").run(&c, &verify("latest")).await.unwrap_err();
    assert!(err.message.contains("truncated or corrupt"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_failing_or_silent_endpoint_is_reported_and_the_next_one_used() {
    let moto = Moto::start().unwrap();
    let _s3 = bucket(&moto).await;
    let refusing = drover_api::testing::RefusingPort::new();
    let dead = refusing.url();
    let c = ctx(&[&dead], &moto);
    let err = action("etcd.snapshot").run(&c, &snapshot(0)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable);
    assert!(err.message.contains(&dead) && err.message.contains("unreachable"), "{}", err.message);
    let plan = action("etcd.snapshot").plan(&c, &snapshot(0)).await.unwrap();
    assert!(plan.failed_checks().any(|x| x.name == "etcd answers"), "{plan:?}");

    // A member whose gateway answers 503 (etcd's own gRPC unavailable, code 14): retryable.
    let failing = drover_api::testing::ScriptedHttp::start(vec![(
        503,
        r#"{"error":"connection closed","message":"connection closed","code":14}"#.into(),
    )])
    .await;
    let err = action("etcd.snapshot").run(&ctx(&[&failing.url()], &moto), &snapshot(0)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert!(err.message.contains("answered 503 Service Unavailable"), "{}", err.message);

    // A member that accepts connections and never answers: retryable after the site's timeout.
    let silent = drover_api::testing::ScriptedHttp::silent().await;
    let err = action("etcd.snapshot").run(&ctx(&[&silent.url()], &moto), &snapshot(0)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err:?}");
    assert!(err.message.contains(&silent.url()) && err.message.contains("timed out"), "{}", err.message);

    let e = etcd(1);
    let c = ctx(&[&dead, &failing.url(), &silent.url(), &e.url], &moto);
    let out = action("etcd.snapshot").run(&c, &snapshot(0)).await.unwrap();
    assert_eq!(out["keys"], 1);
    let err = action("etcd.verify")
        .run(&c, &json!({ "cluster": "elsewhere", "from": { "site": "backups", "bucket": "cp-snapshots" } }))
        .await
        .unwrap_err();
    assert!(err.message.contains("no snapshot of cluster `elsewhere`"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_member_wants_its_ca_and_a_client_certificate_given_by_reference() {
    let e = etcd_with_client_certificates(5);
    let tls = e.tls.as_ref().unwrap();
    let moto = Moto::start().unwrap();
    let _s3 = bucket(&moto).await;
    // SAFETY: every test sets the same value.
    unsafe { std::env::set_var("DROVER_TEST_ETCD_KEY", std::fs::read_to_string(&tls.client_key).unwrap()) };
    let full = json!({ "endpoints": [e.url], "ca_file": tls.ca, "timeout": "2s",
                       "cert": format!("file:{}", tls.client_cert.display()), "key": "env:DROVER_TEST_ETCD_KEY" });
    let out = action("etcd.snapshot").run(&ctx_with(full.clone(), &moto), &snapshot(0)).await.unwrap();
    assert_eq!(out["keys"], 5);

    // Without the CA the member's certificate is not trusted; without a client certificate the
    // member refuses us. Both are permanent, and say what to check.
    let mut no_ca = full.clone();
    no_ca.as_object_mut().unwrap().remove("ca_file");
    let mut no_client_cert = full.clone();
    no_client_cert.as_object_mut().unwrap().remove("cert");
    no_client_cert.as_object_mut().unwrap().remove("key");
    for (what, etcd) in [("no CA", no_ca), ("no client certificate", no_client_cert)] {
        let err = action("etcd.snapshot").run(&ctx_with(etcd, &moto), &snapshot(0)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent, "{what}: {err:?}");
        assert!(err.message.contains(&format!("etcd {}: the TLS handshake failed", e.url)), "{what}: {}", err.message);
        assert!(
            err.hint.as_deref().unwrap_or_default().starts_with("check the site's etcd ca_file"),
            "{what}: {err:?}"
        );
        assert!(!format!("{err:?}").contains("PRIVATE KEY"), "{what}: the key never shows");
    }
}

/// Against a real etcd with `--client-cert-auth`. Under TLS 1.3 the member refuses a missing
/// client certificate after the client thinks the handshake is done; a client that has
/// already written its request often sees only the reset connection. Asked many times at once
/// (the load CI puts on the machine), every answer must still be "the TLS handshake failed",
/// never a retryable "unreachable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_refusing_a_missing_client_certificate_is_never_taken_for_a_network_failure() {
    let e = etcd_with_client_certificates(1);
    let tls = e.tls.as_ref().unwrap();
    let moto = Moto::start().unwrap();
    let no_client_cert = json!({ "endpoints": [e.url], "ca_file": tls.ca, "timeout": "2s" });
    let ctx = Arc::new(ctx_with(no_client_cert, &moto));
    let attempts: Vec<_> = (0..40)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { action("etcd.snapshot").run(&ctx, &snapshot(0)).await.unwrap_err() })
        })
        .collect();
    for attempt in attempts {
        let err = attempt.await.unwrap();
        assert_eq!(err.kind, ErrorKind::Permanent, "{err:?}");
        assert!(err.message.contains("the TLS handshake failed"), "{}", err.message);
    }
}
