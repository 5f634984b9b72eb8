//! `etcd.snapshot` and `etcd.verify` against a real etcd (Debian `etcd-server`) and a real S3
//! server (moto), both started here on loopback: snapshot with its facts, retention, verify,
//! a truncated snapshot detected, an unreachable endpoint reported, the result restorable by
//! `etcdctl snapshot restore`.

use std::collections::BTreeMap;
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
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn etcdctl(url: &str, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl").env("ETCDCTL_API", "3").arg("--endpoints").arg(url).args(args).output().unwrap()
}

/// A one-member etcd holding `keys` keys.
fn etcd(keys: usize) -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "m1", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("m1={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd is needed: `apt-get install etcd-server etcd-client` (bash .ci/run installs it)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !etcdctl(&url, &["endpoint", "health"]).status.success() {
        assert!(Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..keys {
        assert!(etcdctl(&url, &["put", &format!("/registry/pods/p{i}"), &"x".repeat(100)]).status.success());
    }
    Etcd { child, _dir: dir, url }
}

fn ctx(endpoints: &[&str], moto: &Moto) -> StepContext {
    let mut sites = BTreeMap::new();
    sites.insert("cp".to_string(), json!({ "etcd": { "endpoints": endpoints, "timeout": "2s" } }));
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
    let _s3 = bucket(&moto).await;
    let c = ctx(&[&e.url], &moto);
    let plan = action("etcd.snapshot").plan(&c, &snapshot(0)).await.unwrap();
    assert!(plan.checks.iter().all(|x| x.ok), "{plan:?}");
    let out = action("etcd.snapshot").run(&c, &snapshot(0)).await.unwrap();
    let key = out["key"].as_str().unwrap();
    assert!(key.starts_with("etcd/prod-east/prod-east-") && key.ends_with("Z.db"), "{key}");
    assert!(key.contains(out["member"].as_str().unwrap()), "{out:?}");
    assert_eq!(out["keys"], 50);
    assert!(out["revision"].as_u64().unwrap() >= 51, "{out:?}");

    let dir = tempfile::tempdir().unwrap();
    let mut with = verify("latest");
    with["save_to"] = json!(dir.path().join("snap.db"));
    let checked = action("etcd.verify").run(&c, &with).await.unwrap();
    assert_eq!((checked["key"].clone(), checked["sha256"].clone()), (out["key"].clone(), out["sha256"].clone()));
    assert_eq!((checked["size"].clone(), checked["keys"].clone()), (out["size"].clone(), json!(50)));

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
    assert_eq!(left, [keys[1]["key"].as_str().unwrap(), keys[2]["key"].as_str().unwrap()]);
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
async fn an_unreachable_endpoint_is_reported_and_the_next_one_used() {
    let moto = Moto::start().unwrap();
    let _s3 = bucket(&moto).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let c = ctx(&[&dead], &moto);
    let err = action("etcd.snapshot").run(&c, &snapshot(0)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable);
    assert!(err.message.contains(&dead) && err.message.contains("unreachable"), "{}", err.message);
    let plan = action("etcd.snapshot").plan(&c, &snapshot(0)).await.unwrap();
    assert!(plan.failed_checks().any(|x| x.name == "etcd answers"), "{plan:?}");

    let e = etcd(1);
    let c = ctx(&[&dead, &e.url], &moto);
    let out = action("etcd.snapshot").run(&c, &snapshot(0)).await.unwrap();
    assert_eq!(out["keys"], 1);
    let err = action("etcd.verify")
        .run(&c, &json!({ "cluster": "elsewhere", "from": { "site": "backups", "bucket": "cp-snapshots" } }))
        .await
        .unwrap_err();
    assert!(err.message.contains("no snapshot of cluster `elsewhere`"), "{}", err.message);
}
