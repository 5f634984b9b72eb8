//! The shipped failover never strands production: for each fault on the DR side — a wrong
//! credential, an unreachable ONTAP cluster or Kubernetes API, replication further behind
//! than `max_lag`, a denied confirmation, a failure after the first change — the primary is
//! left as it was: its namespace not fenced, its workloads at their replicas, SnapMirror still
//! transferring, its SVM running. After the point of no return (`break`) a failure halts, the
//! report says where each site stands, and the run continues with `drover resume`.
//!
//! Backends: the lab — two real Kubernetes control planes (a site that goes down is one that
//! stops), the ONTAP simulator (the faults are injected there: a cluster stops answering, a
//! transfer fails), with DNS, the load balancer and S3 as the lab picks them (real servers when
//! installed). The shipped runbook is used as drover ships it
//! (`drover failover`, built in), run from a directory that is not the checkout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use drover::lab::{Lab, LabConfig};
use drover_ontap_sim::{Fault, FaultKind};
use serde_json::Value;

/// A lab and a state directory, and the failover as an operator would start it.
struct Site {
    lab: Lab,
    dir: tempfile::TempDir,
    /// The primary as the lab started it.
    before: Vec<String>,
}

impl Site {
    async fn up() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let config = LabConfig::builtin(&dir.path().join("lab")).unwrap();
        let lab = Lab::up(&config, &dir.path().join("lab")).await.unwrap();
        let mut site = Site { lab, dir, before: vec![] };
        site.before = site.primary().await;
        for want in ["SVM-DR svm_dr: snapmirrored", "SVM svm1 running", "Deployment shop/web replicas 3"] {
            assert!(site.before.iter().any(|l| l == want), "the lab starts with `{want}`: {:?}", site.before);
        }
        assert!(!site.before.iter().any(|l| l.contains("fenced")), "{:?}", site.before);
        site
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `drover ARGS --sites LAB --param ...` from an empty directory (not the checkout).
    fn args(&self, command: &[&str], extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend(["--sites".into(), self.lab.sites_file.display().to_string()]);
        for (k, v) in &self.lab.params {
            args.extend(["--param".into(), format!("{k}={v}")]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    async fn drover(&self, args: Vec<String>) -> (Option<i32>, String) {
        let (state, cwd) = (self.state(), self.dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
                .args(&args)
                .env("DROVER_STATE_DIR", &state)
                .current_dir(&cwd)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            (
                out.status.code(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            )
        })
        .await
        .unwrap()
    }

    async fn failover(&self, extra: &[&str]) -> (Option<i32>, String) {
        self.drover(self.args(&["failover", "--yes"], extra)).await
    }

    /// How the primary looks: each line must read as it did before the failover.
    async fn primary(&self) -> Vec<String> {
        let mut out = self.lab.ontap.with_world(|w| {
            let rel = w.rels.iter().find(|r| r.dst_path == "svm_dr:").map(|r| r.state).unwrap_or_default();
            let svm = w
                .clusters
                .iter()
                .flat_map(|c| c.svms.iter())
                .find(|s| s.name == "svm1")
                .map(|s| s.state)
                .unwrap_or_default();
            vec![format!("SVM-DR svm_dr: {rel}"), format!("SVM svm1 {svm}")]
        });
        let east = &self.lab.east;
        let ns = east.get("", "v1", "namespaces", None, "shop").await.unwrap_or_default();
        let web = east.get("apps", "v1", "deployments", Some("shop"), "web").await.unwrap_or_default();
        out.extend([
            format!("namespace shop labels {}", ns.pointer("/metadata/labels").cloned().unwrap_or(Value::Null)),
            format!("Deployment shop/web replicas {}", web["spec"]["replicas"]),
            format!(
                "Deployment shop/web remembers {}",
                web.pointer("/metadata/annotations/drover.io~1replicas-before-scale").cloned().unwrap_or(Value::Null)
            ),
        ]);
        out
    }
}

async fn assert_untouched(site: &Site, text: &str) {
    assert_eq!(site.primary().await, site.before, "the primary changed:\n{text}");
}

/// Point the DR site's ONTAP credential at a variable that is not set.
fn break_dr_credential(sites: &Path) {
    let text = std::fs::read_to_string(sites).unwrap();
    let mut doc: Value = serde_yaml::from_str(&text).unwrap();
    doc["sites"]["west"]["ontap"]["credentials"] = Value::String("env:DROVER_TEST_NOPE".into());
    std::fs::write(sites, serde_yaml::to_string(&doc).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_dr_credential_stops_the_failover_before_production_is_touched() {
    let site = Site::up().await;
    break_dr_credential(&site.lab.sites_file);
    let (code, text) = site.failover(&[]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("preflight: FAILED"), "{text}");
    assert!(
        text.contains("site `west`: ontap.credentials: credential reference `env:DROVER_TEST_NOPE` is not set"),
        "{text}"
    );
    assert!(text.contains("nothing was changed"), "{text}");
    assert_untouched(&site, &text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_dr_ontap_stops_the_failover_before_production_is_touched() {
    let site = Site::up().await;
    site.lab.ontap.set_reachable("west", false);
    let (code, text) = site.failover(&["--preflight-timeout", "20s"]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("preflight: FAILED"), "{text}");
    assert_untouched(&site, &text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_dr_cluster_stops_the_failover_before_production_is_touched() {
    let site = Site::up().await;
    site.lab.west.stop();
    let (code, text) = site.failover(&["--preflight-timeout", "20s"]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("preflight: FAILED") && text.contains("check-dr"), "{text}");
    assert_untouched(&site, &text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_further_behind_than_max_lag_stops_the_failover_before_production_is_touched() {
    let site = Site::up().await;
    // The newest snapshot both sides hold is two hours old; the runbook accepts one hour.
    site.lab.ontap.with_world(|w| {
        let rel = w.rels.iter_mut().find(|r| r.dst_path == "svm_dr:").unwrap();
        let exported = rel.exported.as_mut().unwrap();
        exported.1 = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    });
    let (code, text) = site.failover(&[]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("lag 2h") && text.contains("(max 1h)"), "{text}");
    assert!(text.contains("check-replication") && text.contains("lag within max_lag (RPO)"), "{text}");
    assert_untouched(&site, &text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_confirmation_leaves_both_sites_as_they_were() {
    let site = Site::up().await;
    let run = site.drover(site.args(&["failover"], &[]));
    let state = site.state();
    let deny = async {
        // Answer from another terminal once the run waits at its one gate.
        for _ in 0..600 {
            if waiting_at(&state, "confirm-planned") {
                let args = ["approve", "latest", "confirm-planned", "--deny", "--by", "the-manager"].map(String::from);
                return site.drover(args.to_vec()).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the run never waited at confirm-planned");
    };
    let ((code, text), (denied, answer)) = tokio::join!(run, deny);
    assert_eq!(denied, Some(0), "{answer}");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("gate `confirm-planned` DENIED by the-manager"), "{text}");
    assert_untouched(&site, &text).await;
    assert!(site.lab.west.get("", "v1", "namespaces", None, "shop").await.is_none(), "nothing was restored at DR");
}

/// Whether the run in `state` waits for an answer at `step`.
fn waiting_at(state: &Path, step: &str) -> bool {
    let Some(run) = std::fs::read_dir(state.join("runs")).ok().and_then(|mut d| d.next()).and_then(Result::ok) else {
        return false;
    };
    drover::journal::state::RunState::load(&run.path().join("journal.jsonl"))
        .is_ok_and(|(s, _)| s.steps.get(step).is_some_and(|r| r.gate_waiting.is_some()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_fence_and_before_the_break_is_rolled_back() {
    let site = Site::up().await;
    // Every transfer the final update starts fails at the DR cluster.
    site.lab.ontap.inject(Fault {
        server: Some("west".into()),
        method: Some("POST".into()),
        path: Some("/transfers".into()),
        kind: FaultKind::SyncError {
            status: 400,
            code: "13303812".into(),
            message: "transfer failed: the source volume is offline".into(),
        },
        remaining: None,
        share: 1.0,
    });
    let (code, text) = site.failover(&[]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("✓ fence"), "the fence ran first:\n{text}");
    assert!(text.contains("⟲ fence[shop]  undone"), "{text}");
    assert!(text.contains("failed and rolled back"), "{text}");
    // The app's line says so too, though the failed step (the shared final update) is not its own.
    assert!(text.contains("1 item of params.apps: 0 recovered, 0 failed, 1 rolled back"), "{text}");
    assert!(text.contains("its changes were undone: it runs where it ran before"), "{text}");
    assert_untouched(&site, &text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_break_a_failure_halts_says_where_each_site_stands_and_resume_finishes() {
    let site = Site::up().await;
    // The DR SVM will not start: the run is past its point of no return.
    site.lab.ontap.inject(Fault {
        server: Some("west".into()),
        method: Some("PATCH".into()),
        path: Some("/api/svm/svms/".into()),
        kind: FaultKind::SyncError { status: 400, code: "13434920".into(), message: "SVM cannot start now".into() },
        remaining: None,
        share: 1.0,
    });
    let (code, text) = site.failover(&[]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not rolled back: `break`, the point of no return, had begun"), "{text}");
    let standing = text.split("where each site stands:").nth(1).unwrap_or_else(|| panic!("no standing in:\n{text}"));
    assert!(standing.contains("east:") && standing.contains("changed   fence"), "{standing}");
    assert!(standing.contains("west:") && standing.contains("changed   break"), "{standing}");
    assert!(standing.contains("PARTLY?   start-dr-svm"), "{standing}");
    assert!(standing.contains("not done yet:") && standing.contains("restore-from-primary"), "{standing}");
    let next = text.lines().find(|l| l.starts_with("next: ")).unwrap_or_else(|| panic!("no next in:\n{text}"));
    assert!(next.contains("start-dr-svm") && next.contains("drover resume 20"), "{next}");

    // The cause is fixed; the command the report gave finishes the failover.
    site.lab.ontap.clear_faults();
    let (code, text) = site.drover(vec!["resume".into(), "latest".into(), "--yes".into()]).await;
    assert_eq!(code, Some(0), "{text}");
    for (line, ok) in site.lab.failover_state().await {
        assert!(ok, "{line}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_run_again_after_its_break_converges() {
    let site = Site::up().await;
    site.lab.ontap.inject(Fault {
        server: Some("west".into()),
        method: Some("PATCH".into()),
        path: Some("/api/svm/svms/".into()),
        kind: FaultKind::SyncError { status: 400, code: "13434920".into(), message: "SVM cannot start now".into() },
        remaining: None,
        share: 1.0,
    });
    let (code, text) = site.failover(&[]).await;
    assert_eq!(code, Some(1), "{text}");
    site.lab.ontap.clear_faults();
    // A new run, not a resume: the operator starts the failover again.
    let (code, text) = site.failover(&[]).await;
    assert_eq!(code, Some(0), "{text}");
    for step in ["check-replication", "fence", "final-update", "quiesce"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(step) && l.contains("skipped")),
            "{step} must be skipped on a relationship already broken off:\n{text}"
        );
    }
    for (line, ok) in site.lab.failover_state().await {
        assert!(ok, "{line}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_failover_runs_from_any_directory() {
    let site = Site::up().await;
    let (code, text) = site.failover(&[]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("preflight passed"), "{text}");
    assert!(text.contains("builtin:failover.yaml") || text.contains("run "), "{text}");
    let report = text.split("outage window: ").nth(1).unwrap_or_else(|| panic!("no outage window in:\n{text}"));
    // DNS and the balancer switch side by side: the window ends with whichever ends last.
    let ends_with = |last: &str| {
        report.contains(&format!("from the start of `fence[shop]`, the first change, to the end of `{last}`"))
    };
    assert!(ends_with("verify[shop]") || ends_with("switch-dns[shop]"), "{report}");
    assert!(text.contains("RTO target 15m00s: met"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_at_the_dr_cluster_stops_the_failover_before_production_is_touched() {
    let site = Site::up().await;
    let drover::lab::LabKube::Real(west) = &site.lab.west else {
        panic!("this cell needs RBAC: a real control plane (tools/k8s/build.sh)");
    };
    // The DR site's drover identity loses the role that lets it write the apps.
    west.request("DELETE", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/drover-restore", None)
        .await
        .unwrap();
    let (code, text) = site.failover(&[]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("preflight: FAILED"), "{text}");
    let failed = text.split("preflight: FAILED").nth(1).unwrap();
    assert!(failed.contains("restore-from-primary") && failed.contains("403"), "{failed}");
    assert_untouched(&site, &text).await;
}
