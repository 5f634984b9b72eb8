//! Every ONTAP action against the simulator: idempotent re-runs, job failures, transient
//! codes, a dead site, refusals that protect data, credentials and TLS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use drover_api::{Action, ActionError, ErrorKind, Outputs, StepContext};
use drover_ontap_sim::{Fault, FaultKind, Simulator, Topology};

const TOPOLOGY: &str = r#"
clusters:
  - name: east
    password: east-pw
    peers: [west]
    svms: [{ name: svm1, state: running }]
    volumes: [{ name: vol1, svm: svm1 }, { name: vol2, svm: svm1 }]
  - name: west
    password: west-pw
    peers: [east]
    svms: [{ name: svm_dr, state: stopped, subtype: dp_destination }, { name: svm_vol, state: running }]
    volumes:
      - { name: vol1, svm: svm_dr, type: dp }
      - { name: vol2, svm: svm_dr, type: dp }
      - { name: vol1_dst, svm: svm_vol, type: dp }
      - { name: vol_new, svm: svm_vol, type: dp }
svm_peers:
  - { svm: svm_dr@west, peer: svm1@east }
  - { svm: svm_vol@west, peer: svm1@east }
relationships:
  - { source_cluster: east, source: "svm1:", destination_cluster: west, destination: "svm_dr:", identity_preservation: full }
  - { source_cluster: east, source: "svm1:vol1", destination_cluster: west, destination: "svm_vol:vol1_dst" }
  - { source_cluster: east, source: "svm1:vol2", destination_cluster: west, destination: "svm_vol:vol_new", state: uninitialized }
"#;

struct Lab {
    sim: Simulator,
    sites: BTreeMap<String, Value>,
}

async fn lab_with(extra: &str) -> Lab {
    lab_of(&format!("{TOPOLOGY}{extra}")).await
}

/// Both clusters emulating ONTAP `version`.
async fn lab_on(version: &str) -> Lab {
    lab_of(&TOPOLOGY.replace("-pw\n", &format!("-pw\n    version: {version}\n"))).await
}

async fn lab_of(topology: &str) -> Lab {
    let topology = Topology::from_yaml(topology).unwrap();
    assert!(topology.clusters.iter().all(|c| !c.version.is_empty()));
    let sim = Simulator::start(&topology).await.unwrap();
    // SAFETY: each test sets the same values; nothing reads them concurrently with a change.
    unsafe {
        std::env::set_var("SIM_EAST_PW", "east-pw");
        std::env::set_var("SIM_WEST_PW", "west-pw");
    }
    let mut sites = BTreeMap::new();
    for (name, var) in [("east", "SIM_EAST_PW"), ("west", "SIM_WEST_PW")] {
        let mut ontap =
            json!({ "url": sim.url(name), "username": "admin", "credentials": format!("env:{var}"), "retries": 3 });
        if let Some(ca) = sim.ca_file() {
            ontap["ca_file"] = json!(ca);
        }
        sites.insert(name.to_string(), json!({ "ontap": ontap }));
    }
    Lab { sim, sites }
}

async fn lab() -> Lab {
    lab_with("").await
}

impl Lab {
    fn ctx(&self, timeout: Duration) -> StepContext {
        drover_api::testing::context(self.sites.clone(), timeout)
    }

    async fn run(&self, name: &str, with: Value) -> Result<Outputs, ActionError> {
        action(name).run(&self.ctx(Duration::from_secs(20)), &with).await
    }

    fn jobs(&self) -> usize {
        self.sim.with_world(|w| w.jobs.len())
    }

    fn rel_uuid(&self, dst: &str) -> String {
        self.sim.with_world(|w| w.rels.iter().find(|r| r.dst_path == dst).map(|r| r.uuid.clone()).unwrap_or_default())
    }

    /// One request straight to a simulated cluster, as another ONTAP client would send it.
    async fn raw(&self, cluster: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
        let password = if cluster == "east" { "east-pw" } else { "west-pw" };
        let mut http = reqwest::Client::builder();
        if let Some(ca) = self.sim.ca_file() {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap());
        }
        let resp = http
            .build()
            .unwrap()
            .request(method.parse().unwrap(), format!("{}{path}", self.sim.url(cluster)))
            .basic_auth("admin", Some(password))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn rel_state(&self, dst: &str) -> String {
        self.sim
            .with_world(|w| w.rels.iter().find(|r| r.dst_path == dst).map(|r| r.state.to_string()).unwrap_or_default())
    }

    fn svm_state(&self, cluster: &str, svm: &str) -> (String, String) {
        self.sim.with_world(|w| {
            let c = w.cluster_index(cluster).unwrap();
            let s = &w.clusters[c].svms[w.svm_index(c, svm).unwrap()];
            (s.state.to_string(), s.subtype.to_string())
        })
    }
}

fn action(name: &str) -> Arc<dyn Action> {
    drover_ontap::actions().into_iter().find(|a| a.info().name == name).unwrap()
}

#[tokio::test]
async fn svm_dr_failover_steps_work_and_a_second_run_is_a_no_op() {
    let lab = lab().await;
    let rel = json!({ "site": "west", "destination": "svm_dr:" });
    let out = lab.run("ontap.snapmirror.quiesce", rel.clone()).await.unwrap();
    assert_eq!(out["state"], "paused");
    let jobs = lab.jobs();
    lab.run("ontap.snapmirror.quiesce", rel.clone()).await.unwrap();
    assert_eq!(lab.jobs(), jobs, "a second quiesce makes no call");

    let out = lab.run("ontap.snapmirror.break", rel.clone()).await.unwrap();
    assert_eq!(out["state"], "broken_off");
    assert!(out["exported_snapshot"].as_str().unwrap().starts_with("snapmirror."));
    assert_eq!(lab.svm_state("west", "svm_dr").1, "default", "the DR SVM is no longer a dp_destination");
    let jobs = lab.jobs();
    lab.run("ontap.snapmirror.break", rel.clone()).await.unwrap();
    assert_eq!(lab.jobs(), jobs, "a second break makes no call");

    lab.run("ontap.svm.stop", json!({ "site": "east", "svm": "svm1" })).await.unwrap();
    let out = lab.run("ontap.svm.start", json!({ "site": "west", "svm": "svm_dr" })).await.unwrap();
    assert_eq!(out["state"], "running");
    assert_eq!(lab.svm_state("west", "svm_dr").0, "running");
    let jobs = lab.jobs();
    lab.run("ontap.svm.start", json!({ "site": "west", "svm": "svm_dr" })).await.unwrap();
    assert_eq!(lab.jobs(), jobs);
}

#[tokio::test]
async fn a_dp_destination_svm_is_not_started_before_the_break() {
    let lab = lab().await;
    let err = lab.run("ontap.svm.start", json!({ "site": "west", "svm": "svm_dr" })).await.unwrap_err();
    assert!(err.message.contains("still a dp_destination"), "{}", err.message);
}

#[tokio::test]
async fn break_of_an_uninitialized_relationship_is_refused() {
    let lab = lab().await;
    let err = lab
        .run("ontap.snapmirror.break", json!({ "site": "west", "destination": "svm_vol:vol_new" }))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("uninitialized"), "{}", err.message);
    assert_eq!(lab.rel_state("svm_vol:vol_new"), "uninitialized");
}

#[tokio::test]
async fn update_transfers_and_moves_the_exported_snapshot() {
    let lab = lab().await;
    let rel = json!({ "site": "west", "destination": "svm_vol:vol1_dst" });
    let before = lab.run("ontap.snapmirror.wait", rel.clone()).await.unwrap();
    let after = lab.run("ontap.snapmirror.update", rel.clone()).await.unwrap();
    assert_ne!(before["exported_snapshot"], after["exported_snapshot"]);
    let waited = lab
        .run(
            "ontap.snapmirror.wait",
            json!({ "site": "west", "destination": "svm_vol:vol1_dst", "until": "lag", "max_lag": "1h" }),
        )
        .await
        .unwrap();
    assert_eq!(waited["state"], "snapmirrored");
}

#[tokio::test]
async fn a_job_failure_becomes_an_error_with_the_ontap_code_and_a_hint() {
    let lab = lab().await;
    lab.sim.inject(Fault {
        server: Some("west".into()),
        method: Some("PATCH".into()),
        path: Some("/api/snapmirror/relationships/".into()),
        kind: FaultKind::JobFailure {
            code: 13303808,
            message: "Transition to broken_off state failed. Reason: Another transfer is in progress.".into(),
        },
        remaining: Some(1),
        share: 1.0,
    });
    let err = lab
        .run("ontap.snapmirror.break", json!({ "site": "west", "destination": "svm_vol:vol1_dst" }))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("job failed: Transition to broken_off state failed")
            && err.message.contains("code 13303808"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("running transfer"));
    assert_eq!(lab.rel_state("svm_vol:vol1_dst"), "snapmirrored", "a failed job changes nothing");
}

#[tokio::test]
async fn transient_6619715_is_retried_then_succeeds() {
    let lab = lab().await;
    lab.sim.inject(Fault {
        server: Some("west".into()),
        method: Some("PATCH".into()),
        path: None,
        kind: FaultKind::SyncError {
            status: 409,
            code: "6619715".into(),
            message: "Modification of relationship is in progress. Retry the command after a few minutes.".into(),
        },
        remaining: Some(2),
        share: 1.0,
    });
    let out = lab
        .run("ontap.snapmirror.quiesce", json!({ "site": "west", "destination": "svm_vol:vol1_dst" }))
        .await
        .unwrap();
    assert_eq!(out["state"], "paused");
    assert_eq!(lab.sim.with_world(|w| w.faults[0].remaining), Some(0), "both injected faults were met and retried");
}

#[tokio::test]
async fn a_dead_site_fails_fast_with_a_clear_retryable_error() {
    let lab = lab().await;
    lab.sim.set_reachable("east", false);
    let started = std::time::Instant::now();
    let err = lab.run("ontap.svm.stop", json!({ "site": "east", "svm": "svm1" })).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(err.kind, ErrorKind::Retryable);
    assert!(err.message.starts_with("ONTAP `east`") && err.message.contains("is unreachable"), "{}", err.message);
    // The DR side still reports the relationship, now unhealthy.
    let plan = action("ontap.snapmirror.wait")
        .plan(&lab.ctx(Duration::from_secs(10)), &json!({ "site": "west", "destination": "svm_dr:" }))
        .await
        .unwrap();
    assert!(plan.checks.iter().any(|c| c.name == "healthy" && !c.ok && c.detail.contains("unreachable")), "{plan:?}");
}

#[tokio::test]
async fn resync_refuses_to_discard_writes_made_at_the_destination() {
    let lab = lab().await;
    let rel = json!({ "site": "west", "destination": "svm_dr:" });
    lab.run("ontap.snapmirror.break", rel.clone()).await.unwrap();
    lab.run("ontap.svm.start", json!({ "site": "west", "svm": "svm_dr" })).await.unwrap();
    let err = lab.run("ontap.snapmirror.resync", rel.clone()).await.unwrap_err();
    assert!(
        err.message.starts_with("refusing to resync svm_dr:: the destination SVM `svm_dr` is running"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("discard_destination_writes: true"));
    assert_eq!(lab.rel_state("svm_dr:"), "broken_off");
    let out = lab
        .run(
            "ontap.snapmirror.resync",
            json!({ "site": "west", "destination": "svm_dr:", "discard_destination_writes": true }),
        )
        .await
        .unwrap();
    assert_eq!(out["state"], "snapmirrored");
    // ONTAP resyncs an SVM-DR destination only when its SVM is stopped: drover stopped it.
    assert_eq!(lab.svm_state("west", "svm_dr"), ("stopped".to_string(), "dp_destination".to_string()));
}

/// Simulator (no real ONTAP runs here), strict as ONTAP: a resync while the DR SVM runs is
/// refused by the cluster itself, not only by drover's own check.
#[tokio::test]
async fn the_cluster_refuses_a_resync_while_the_dr_svm_runs() {
    let lab = lab().await;
    let rel = json!({ "site": "west", "destination": "svm_dr:" });
    lab.run("ontap.snapmirror.break", rel.clone()).await.unwrap();
    lab.run("ontap.svm.start", json!({ "site": "west", "svm": "svm_dr" })).await.unwrap();
    let (status, body) = lab
        .raw(
            "west",
            "PATCH",
            &format!("/api/snapmirror/relationships/{}", lab.rel_uuid("svm_dr:")),
            json!({ "state": "snapmirrored" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "13303828", "{body}");
    assert_eq!(lab.rel_state("svm_dr:"), "broken_off");
    assert_eq!(lab.svm_state("west", "svm_dr").0, "running");
}

#[tokio::test]
async fn wrong_credentials_name_the_reference_never_the_password() {
    let mut lab = lab().await;
    // SAFETY: test-local variable.
    unsafe { std::env::set_var("SIM_WRONG_PW", "not-the-password") };
    lab.sites.get_mut("west").unwrap()["ontap"]["credentials"] = json!("env:SIM_WRONG_PW");
    let err = lab.run("ontap.snapmirror.wait", json!({ "site": "west", "destination": "svm_dr:" })).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("rejected the credentials of user `admin` (from env:SIM_WRONG_PW)"),
        "{}",
        err.message
    );
    let all = format!("{err:?}");
    assert!(!all.contains("not-the-password") && !all.contains("west-pw"));
}

#[tokio::test]
async fn self_signed_tls_is_rejected_unless_its_ca_is_given() {
    let mut lab = lab_with("settings: { tls: true }\n").await;
    assert!(lab.sim.url("west").starts_with("https://"));
    lab.run("ontap.snapmirror.wait", json!({ "site": "west", "destination": "svm_dr:" })).await.unwrap();
    lab.sites.get_mut("west").unwrap()["ontap"].as_object_mut().unwrap().remove("ca_file");
    let err = lab.run("ontap.snapmirror.wait", json!({ "site": "west", "destination": "svm_dr:" })).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("TLS certificate not trusted"), "{}", err.message);
    assert!(err.hint.unwrap().contains("ca_file"));
}

#[tokio::test]
async fn flexclone_for_a_rehearsal_and_its_clean_up() {
    let lab = lab().await;
    let with = json!({ "site": "west", "svm": "svm_vol", "parent": "vol1_dst", "name": "vol1_rehearsal", "junction_path": "/vol1_rehearsal" });
    let out = lab.run("ontap.volume.clone", with.clone()).await.unwrap();
    assert_eq!(out["junction_path"], "/vol1_rehearsal");
    assert!(out["snapshot"].as_str().unwrap().starts_with("snapmirror."));
    let again = lab.run("ontap.volume.clone", with).await.unwrap();
    assert_eq!(again["uuid"], out["uuid"], "a second clone call finds the first");
    assert_eq!(lab.rel_state("svm_vol:vol1_dst"), "snapmirrored", "replication is not interrupted");
    let del = json!({ "site": "west", "svm": "svm_vol", "name": "vol1_rehearsal" });
    lab.run("ontap.volume.delete", del.clone()).await.unwrap();
    lab.run("ontap.volume.delete", del).await.unwrap();
    assert!(lab.sim.with_world(|w| w.clusters[1].volumes.iter().all(|v| v.name != "vol1_rehearsal")));
}

#[tokio::test]
async fn failback_reverses_keeping_dr_writes_then_restores_the_original_direction() {
    let lab = lab().await;
    let dr = json!({ "site": "west", "destination": "svm_dr:" });
    lab.run("ontap.snapmirror.break", dr.clone()).await.unwrap();
    lab.run("ontap.svm.start", json!({ "site": "west", "svm": "svm_dr" })).await.unwrap();
    // Failback: reverse (DR → primary) keeps what was written at DR.
    let rev = lab
        .run("ontap.snapmirror.reverse", json!({ "site": "west", "destination": "svm_dr:", "source_site": "east" }))
        .await
        .unwrap();
    assert_eq!((rev["source"].as_str(), rev["destination"].as_str()), (Some("svm_dr:"), Some("svm1:")));
    assert_eq!(lab.svm_state("east", "svm1").1, "dp_destination");
    let again = lab
        .run("ontap.snapmirror.reverse", json!({ "site": "west", "destination": "svm_dr:", "source_site": "east" }))
        .await
        .unwrap();
    assert_eq!(again["uuid"], rev["uuid"], "reversing twice is a no-op");
    // Planned switch back, then the original direction once more.
    lab.run("ontap.svm.stop", json!({ "site": "west", "svm": "svm_dr" })).await.unwrap();
    let back = json!({ "site": "east", "destination": "svm1:" });
    lab.run("ontap.snapmirror.update", back.clone()).await.unwrap();
    lab.run("ontap.snapmirror.quiesce", back.clone()).await.unwrap();
    lab.run("ontap.snapmirror.break", back.clone()).await.unwrap();
    lab.run("ontap.svm.start", json!({ "site": "east", "svm": "svm1" })).await.unwrap();
    let orig = lab
        .run("ontap.snapmirror.reverse", json!({ "site": "east", "destination": "svm1:", "source_site": "west" }))
        .await
        .unwrap();
    assert_eq!((orig["source"].as_str(), orig["destination"].as_str()), (Some("svm1:"), Some("svm_dr:")));
    assert_eq!(lab.rel_state("svm_dr:"), "snapmirrored");
    assert_eq!(lab.svm_state("west", "svm_dr"), ("stopped".to_string(), "dp_destination".to_string()));
    assert_eq!(lab.svm_state("east", "svm1"), ("running".to_string(), "default".to_string()));
}

#[tokio::test]
async fn identity_preserving_break_waits_for_the_source_svm_when_configured() {
    let lab = lab_with("settings: { break_requires_source_stopped: true, auto_start_dr_svm: true }\n").await;
    let err = lab.run("ontap.snapmirror.break", json!({ "site": "west", "destination": "svm_dr:" })).await.unwrap_err();
    assert!(err.message.contains("source SVM must be stopped"), "{}", err.message);
    lab.run("ontap.svm.stop", json!({ "site": "east", "svm": "svm1" })).await.unwrap();
    lab.run("ontap.snapmirror.break", json!({ "site": "west", "destination": "svm_dr:" })).await.unwrap();
    assert_eq!(lab.svm_state("west", "svm_dr").0, "running", "the DR SVM started by itself");
    lab.run("ontap.svm.start", json!({ "site": "west", "svm": "svm_dr" })).await.unwrap();
}

/// Simulator emulating ONTAP 9.10.1, the oldest supported release, strict about its fields:
/// the whole failover sequence runs (drover asked for `group_type`, which 9.10.1 lacks, until
/// this was checked).
#[tokio::test]
async fn the_failover_sequence_runs_on_the_oldest_supported_release() {
    let lab = lab_on("9.10.1").await;
    assert_eq!(lab.sim.with_world(|w| w.clusters[1].version.clone()), "9.10.1");
    let rel = json!({ "site": "west", "destination": "svm_dr:" });
    let plan = action("ontap.snapmirror.break").plan(&lab.ctx(Duration::from_secs(10)), &rel).await.unwrap();
    assert!(
        plan.checks.iter().any(|c| c.name == "ONTAP release supported" && c.ok && c.detail == "9.10.1"),
        "{plan:?}"
    );
    lab.run("ontap.snapmirror.wait", json!({ "site": "west", "destination": "svm_dr:", "max_lag": "1h" }))
        .await
        .unwrap();
    lab.run("ontap.snapmirror.update", rel.clone()).await.unwrap();
    lab.run("ontap.snapmirror.quiesce", rel.clone()).await.unwrap();
    lab.run("ontap.snapmirror.break", rel.clone()).await.unwrap();
    lab.run("ontap.svm.stop", json!({ "site": "east", "svm": "svm1" })).await.unwrap();
    lab.run("ontap.svm.start", json!({ "site": "west", "svm": "svm_dr" })).await.unwrap();
    assert_eq!(lab.rel_state("svm_dr:"), "broken_off");
}

/// Simulator emulating ONTAP 9.8.0, older than the supported range: the plan's check fails
/// naming the range, and a run refuses before it changes anything.
#[tokio::test]
async fn a_cluster_older_than_the_supported_range_is_refused_naming_the_range() {
    let lab = lab_on("9.8.0").await;
    let rel = json!({ "site": "west", "destination": "svm_dr:" });
    let plan = action("ontap.snapmirror.break").plan(&lab.ctx(Duration::from_secs(10)), &rel).await.unwrap();
    let check = plan.checks.iter().find(|c| c.name == "ONTAP release supported").expect("a release check");
    assert!(
        !check.ok
            && check.detail.contains("runs ONTAP 9.8.0, older than the releases drover supports (9.10.1 to 9.19.1)"),
        "{check:?}"
    );
    let err = lab.run("ontap.snapmirror.break", rel).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("9.10.1 to 9.19.1"), "{}", err.message);
    assert_eq!(lab.rel_state("svm_dr:"), "snapmirrored");
}

#[tokio::test]
async fn list_finds_relationships_by_svm_state_path_and_kind() {
    let lab = lab().await;
    let names = |out: &Outputs| -> Vec<String> {
        out["relationships"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
    };
    let volumes = lab.run("ontap.snapmirror.list", json!({ "site": "west", "kind": "volume" })).await.unwrap();
    assert_eq!(names(&volumes), ["svm_vol:vol1_dst", "svm_vol:vol_new"]);
    assert_eq!(volumes["count"], json!(2));
    let first = &volumes["relationships"][0];
    assert_eq!((first["svm"].as_str(), first["volume"].as_str()), (Some("svm_vol"), Some("vol1_dst")));
    assert_eq!(first["source"], json!("svm1:vol1"));

    let svm_dr = lab.run("ontap.snapmirror.list", json!({ "site": "west", "kind": "svm" })).await.unwrap();
    assert_eq!(names(&svm_dr), ["svm_dr:"]);
    let mirrored =
        lab.run("ontap.snapmirror.list", json!({ "site": "west", "svm": "svm_vol", "state": "snapmirrored" })).await;
    assert_eq!(names(&mirrored.unwrap()), ["svm_vol:vol1_dst"]);
    let glob = lab.run("ontap.snapmirror.list", json!({ "site": "west", "destination": "svm_vol:vol_n*" })).await;
    assert_eq!(names(&glob.unwrap()), ["svm_vol:vol_new"]);
}

#[tokio::test]
async fn list_that_finds_nothing_is_an_error_not_an_empty_failover() {
    let lab = lab().await;
    let err = lab.run("ontap.snapmirror.list", json!({ "site": "west", "svm": "svm_typo" })).await.unwrap_err();
    assert!(err.message.contains("0 relationships match destination.svm.name=svm_typo on west"), "{}", err.message);
    assert!(err.hint.as_deref().unwrap().contains("min_count"));
    let plan = action("ontap.snapmirror.list")
        .plan(&lab.ctx(Duration::from_secs(20)), &json!({ "site": "west", "svm": "svm_typo" }))
        .await
        .unwrap();
    assert!(plan.failed_checks().any(|c| c.name == "relationships found"), "{plan:?}");
    let none_wanted = json!({ "site": "west", "svm": "svm_typo", "min_count": 0 });
    assert_eq!(lab.run("ontap.snapmirror.list", none_wanted).await.unwrap()["count"], json!(0));
}

#[tokio::test]
async fn list_reads_every_page_of_a_large_estate() {
    // 1,200 volume relationships: three pages of ONTAP's answer.
    let mut t = String::from(
        "clusters:\n  - name: east\n    password: east-pw\n    peers: [west]\n    svms: [{ name: svm1, state: running }]\n    volumes:\n",
    );
    for i in 0..1200 {
        t.push_str(&format!("      - {{ name: v{i:04}, svm: svm1 }}\n"));
    }
    t.push_str("  - name: west\n    password: west-pw\n    peers: [east]\n    svms: [{ name: svm_vol, state: running }]\n    volumes:\n");
    for i in 0..1200 {
        t.push_str(&format!("      - {{ name: v{i:04}, svm: svm_vol, type: dp }}\n"));
    }
    t.push_str("svm_peers:\n  - { svm: svm_vol@west, peer: svm1@east }\nrelationships:\n");
    for i in 0..1200 {
        t.push_str(&format!(
            "  - {{ source_cluster: east, source: \"svm1:v{i:04}\", destination_cluster: west, destination: \"svm_vol:v{i:04}\" }}\n"
        ));
    }
    let lab = lab_of(&t).await;
    let out = lab.run("ontap.snapmirror.list", json!({ "site": "west" })).await.unwrap();
    assert_eq!(out["count"], json!(1200));
    assert_eq!(out["relationships"][1199]["name"], json!("svm_vol:v1199"));
    assert!(out["max_rpo_seconds"].as_f64().is_some(), "lag of the worst: {:?}", out.get("max_rpo_seconds"));
}

/// Six volume relationships whose jobs take long enough to overlap.
fn six_volumes(max_operations: Option<usize>) -> (String, Option<usize>) {
    let mut t = String::from(
        "clusters:\n  - name: east\n    password: east-pw\n    peers: [west]\n    svms: [{ name: svm1, state: running }]\n    volumes:\n",
    );
    for i in 0..6 {
        t.push_str(&format!("      - {{ name: v{i}, svm: svm1 }}\n"));
    }
    t.push_str("  - name: west\n    password: west-pw\n    peers: [east]\n    svms: [{ name: svm_vol, state: running }]\n    volumes:\n");
    for i in 0..6 {
        t.push_str(&format!("      - {{ name: v{i}, svm: svm_vol, type: dp }}\n"));
    }
    t.push_str("svm_peers:\n  - { svm: svm_vol@west, peer: svm1@east }\nrelationships:\n");
    for i in 0..6 {
        t.push_str(&format!(
            "  - {{ source_cluster: east, source: \"svm1:v{i}\", destination_cluster: west, destination: \"svm_vol:v{i}\" }}\n"
        ));
    }
    t.push_str("settings: { job_delay: 300ms }\n");
    (t, max_operations)
}

/// Quiesce all six at once (as six fanned steps would) and return the most jobs that ran at
/// the same time on the DR cluster.
async fn most_jobs_at_once((topology, max_operations): (String, Option<usize>)) -> usize {
    let mut lab = lab_of(&topology).await;
    if let Some(n) = max_operations {
        lab.sites.get_mut("west").unwrap()["ontap"]["max_operations"] = json!(n);
    }
    let quiesces = (0..6).map(|i| {
        lab.run("ontap.snapmirror.quiesce", json!({ "site": "west", "destination": format!("svm_vol:v{i}") }))
    });
    for r in futures::future::join_all(quiesces).await {
        r.unwrap();
    }
    lab.sim.with_world(|w| {
        let spans: Vec<(std::time::SystemTime, std::time::SystemTime)> =
            w.jobs.iter().filter_map(|j| Some((j.start, j.end?))).collect();
        spans.iter().map(|&(t, _)| spans.iter().filter(|&&(a, b)| a <= t && t < b).count()).max().unwrap_or(0)
    })
}

#[tokio::test]
async fn no_more_changes_at_once_on_a_cluster_than_its_max_operations() {
    assert!(most_jobs_at_once(six_volumes(Some(2))).await <= 2);
}

#[tokio::test]
async fn without_a_lower_max_operations_six_changes_run_together() {
    // Each test gets its own simulator (its own URL), so its own limit.
    assert!(most_jobs_at_once(six_volumes(None)).await > 2, "the default (8) lets all six run together");
}

/// Reads of relationships by uuid (one, or several at once) the DR cluster has served.
fn relationship_reads(lab: &Lab) -> usize {
    lab.sim.with_world(|w| {
        w.requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/api/snapmirror/relationships"))
            .filter(|r| {
                r.path.len() > "/api/snapmirror/relationships/".len() || r.query.0.iter().any(|(k, _)| k == "uuid")
            })
            .count()
    })
}

/// Backend: the ONTAP simulator. Six transfers waited on at once (six fanned steps) are read
/// together, one query for all, as often as one transfer alone would be: not six times.
#[tokio::test]
async fn waits_on_one_cluster_share_their_polls() {
    let (topology, _) = six_volumes(None);
    let topology =
        topology.replace("settings: { job_delay: 300ms }", "settings: { job_delay: 20ms, transfer_time: 1s }");
    let alone = lab_of(&topology).await;
    alone.run("ontap.snapmirror.update", json!({ "site": "west", "destination": "svm_vol:v0" })).await.unwrap();
    let one = relationship_reads(&alone);

    let lab = lab_of(&topology).await;
    let updates = (0..6)
        .map(|i| lab.run("ontap.snapmirror.update", json!({ "site": "west", "destination": format!("svm_vol:v{i}") })));
    for out in futures::future::join_all(updates).await {
        assert_eq!(out.unwrap()["state"], "snapmirrored");
    }
    let six = relationship_reads(&lab);
    assert!(one >= 10, "one transfer is polled many times ({one})");
    // Six apart would be six times; waits that began a little apart (six transfers posted to
    // a loaded simulator) may be read in two groups.
    assert!(six < 3 * one, "six waits read {six} times, one alone {one}");
}

/// Reads of jobs (one, or several at once) the DR cluster has served.
fn job_reads(lab: &Lab) -> usize {
    lab.sim.with_world(|w| {
        w.requests.iter().filter(|r| r.method == "GET" && r.path.starts_with("/api/cluster/jobs")).count()
    })
}

/// Backend: the ONTAP simulator. Six quiesce jobs waited on at once are read together, one
/// query for all, as often as one job alone would be: not six times (a fleet waits on two
/// thousand jobs at once).
#[tokio::test]
async fn waits_on_jobs_of_one_cluster_share_their_polls() {
    let (topology, _) = six_volumes(None);
    let topology = topology.replace("settings: { job_delay: 300ms }", "settings: { job_delay: 1s }");
    let alone = lab_of(&topology).await;
    alone.run("ontap.snapmirror.quiesce", json!({ "site": "west", "destination": "svm_vol:v0" })).await.unwrap();
    let one = job_reads(&alone);

    let lab = lab_of(&topology).await;
    let quiesces = (0..6).map(|i| {
        lab.run("ontap.snapmirror.quiesce", json!({ "site": "west", "destination": format!("svm_vol:v{i}") }))
    });
    for out in futures::future::join_all(quiesces).await {
        assert_eq!(out.unwrap()["state"], "paused");
    }
    let six = job_reads(&lab);
    assert!(one >= 10, "one job is polled many times ({one})");
    assert!(six < 3 * one, "six waits read {six} times, one alone {one}");
}

/// Backend: the ONTAP simulator, through a link that counts connections. A fleet's preflight
/// plans a thousand volume steps at once; each request holds its own HTTPS connection, so
/// they queue for the cluster's `max_in_flight` (16 unless set) instead of opening a thousand
/// TLS sessions to it (the 500-application lab's peak memory fell by a fifth).
#[tokio::test]
async fn plans_at_once_keep_within_the_cluster_s_requests_in_flight() {
    let (topology, _) = six_volumes(None);
    let mut lab = lab_of(&topology).await;
    let url = lab.sim.url("west");
    let (scheme_host, port) = url.rsplit_once(':').unwrap();
    let link = drover_api::testing::CountingLink::to(port.parse().unwrap()).await;
    let west = &mut lab.sites.get_mut("west").unwrap()["ontap"];
    west["url"] = json!(format!("{scheme_host}:{}", link.port));
    west["max_in_flight"] = json!(3);
    let ctx = lab.ctx(Duration::from_secs(20));
    let plans = (0..60).map(|i| {
        let with = json!({ "site": "west", "destination": format!("svm_vol:v{}", i % 6) });
        let ctx = ctx.clone();
        async move { action("ontap.snapmirror.quiesce").plan(&ctx, &with).await }
    });
    for plan in futures::future::join_all(plans).await {
        let plan = plan.unwrap();
        assert!(plan.failed_checks().next().is_none(), "{plan:?}");
    }
    assert!((1..=3).contains(&link.peak()), "{} connections to the cluster at once", link.peak());
    // Each plan checks the cluster answers; plans asking at the same moment share that read.
    let reads = lab.sim.with_world(|w| w.requests.iter().filter(|r| r.path == "/api/cluster").count());
    assert!(reads < 20, "60 plans read the cluster {reads} times");
}

/// Backend: the ONTAP simulator. Steps looking up their relationships at the same moment (a
/// tier's volume steps, in the preflight and when they run) share one query,
/// `destination.path=A|B|…`, and each still gets its own relationship; a path the cluster does
/// not have is still "no relationship", for that step only.
#[tokio::test]
async fn lookups_at_the_same_moment_share_one_query() {
    let (topology, _) = six_volumes(None);
    let lab = lab_of(&topology).await;
    let ctx = lab.ctx(Duration::from_secs(20));
    let plans = (0..60).map(|i| {
        let destination = if i == 59 { "svm_vol:missing".to_string() } else { format!("svm_vol:v{}", i % 6) };
        let with = json!({ "site": "west", "destination": destination });
        let ctx = ctx.clone();
        async move { (destination, action("ontap.snapmirror.quiesce").plan(&ctx, &with).await.unwrap()) }
    });
    for (destination, plan) in futures::future::join_all(plans).await {
        if destination.ends_with("missing") {
            assert!(plan.failed_checks().any(|c| c.name == "relationship exists"), "{plan:?}");
        } else {
            assert_eq!(plan.outputs["destination"], json!(destination), "{plan:?}");
        }
    }
    let queries = lab.sim.with_world(|w| {
        w.requests
            .iter()
            .filter(|r| r.path == "/api/snapmirror/relationships" && r.query.get("destination.path").is_some())
            .count()
    });
    assert!(queries <= 10, "60 lookups made {queries} queries");
}
