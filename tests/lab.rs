//! The README's main command: `drover lab failover`, planned and unplanned, on the built-in
//! two-site lab (the ONTAP simulator; two real Kubernetes control planes, as `kube: auto` picks
//! once tools/k8s/build.sh has built them; real BIND, HAProxy and moto, which
//! `bash .ci/run` installs). It exits 0 only when the end state is checked: relationship
//! broken off, DR SVM running, apps running on west with rewritten hosts, DNS and load balancer
//! on west.

mod common;

use common::drover;

fn lab_failover(mode: &str, extra: &[&str]) -> (Option<i32>, String) {
    common::require_on_path(&["named", "haproxy", "moto_server"], "the full lab; bash .ci/run installs it");
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    let mut args = vec!["lab", "failover", "--mode", mode, "--dir", lab.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = drover(&dir.path().join("state"), &args);
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

const END_STATE: [&str; 6] = [
    "✓ SVM-DR relationship svm_dr: is broken_off",
    "✓ DR SVM svm_dr is running",
    "✓ west runs Deployment shop/web with 3 available replicas",
    "✓ west's Ingress shop/web serves shop.west.example.com",
    "✓ DNS shop.example.com → 198.51.100.10",
    "✓ load balancer answers `served by west`",
];

#[test]
fn a_planned_lab_failover_fences_the_primary_and_ends_with_west_serving() {
    let (code, text) = lab_failover("planned", &[]);
    assert_eq!(code, Some(0), "{text}");
    for line in END_STATE {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("Kubernetes east  real server"), "{text}");
    assert!(text.contains("DNS              real server  127.0.0.1:"), "{text}");
    assert!(text.contains("restore-from-backup[shop]   skipped"), "{text}");
}

#[test]
fn an_unplanned_lab_failover_never_touches_the_lost_primary() {
    let (code, text) = lab_failover("unplanned", &[]);
    assert_eq!(code, Some(0), "{text}");
    for line in END_STATE {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("disaster: the east site is gone"), "{text}");
    for step in ["fence", "final-update", "stop-source-svm", "restore-from-primary"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(step) && l.contains("skipped")), "{step} ran:\n{text}");
    }
    assert!(text.contains("source=Velero backup lab-nightly"), "{text}");
}

/// A lab file beside the checkout's examples, with the given extra lines.
fn lab_file(dir: &std::path::Path, extra: &str) -> String {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    let path = dir.join("lab.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: drover/v1\nkind: Lab\nontap: {}\napps: {}\n{extra}",
            examples.join("ontap.yaml").display(),
            examples.join("apps").display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn without_bind_haproxy_and_moto_the_built_in_stand_ins_serve_and_say_so() {
    // Unplanned: the stand-in S3 holds the backup the apps come back from.
    let dir = tempfile::tempdir().unwrap();
    let config = lab_file(dir.path(), "copies: 2\ndns: builtin\nlb: builtin\ns3: builtin\n");
    let (code, text) = lab_failover("unplanned", &["--config", &config]);
    assert_eq!(code, Some(0), "{text}");
    for line in END_STATE {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("DNS              stand-in     127.0.0.1:"), "{text}");
    assert!(text.contains("Load balancer    stand-in     http://127.0.0.1:"), "{text}");
    assert!(text.contains("S3               stand-in     http://127.0.0.1:"), "{text}");
    assert!(text.contains("s3s-fs (built in); bucket dr-backups holds Velero backup lab-nightly"), "{text}");
    assert!(text.contains("source=Velero backup lab-nightly"), "{text}");
    assert!(text.contains("✓ west runs Deployment web in 2 of 2 app namespaces"), "{text}");
    assert!(text.contains("✓ west's Ingress web serves the west host in 2 of 2 app namespaces"), "{text}");
}

/// Backend: the ONTAP and Kubernetes simulators (the fleet's scale, not the API, is tested:
/// the same runbook runs on real control planes above), built-in DNS and load balancer.
#[test]
fn a_lab_fleet_fails_over_volume_by_volume_and_tier_by_tier() {
    let dir = tempfile::tempdir().unwrap();
    let config = lab_file(
        dir.path(),
        "fleet: { apps: 6, volumes_per_app: 2, tiers: 3 }\nkube: simulator\ndns: builtin\nlb: builtin\ns3: none\n",
    );
    let lab = dir.path().join("lab");
    let state = dir.path().join("state");
    let out = drover(&state, &["lab", "failover", "--config", &config, "--dir", lab.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    for line in [
        "✓ 12 of 12 volume relationships are broken off",
        "✓ west runs Deployment web in 6 of 6 app namespaces",
        "✓ west's Ingress web serves the west host in 6 of 6 app namespaces",
        "6 items of params.apps: 6 recovered, 0 failed, 0 rolled back",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    // The inventory the lab wrote: apps with their tiers, volumes with their app.
    let inventory: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(lab.join("inventory.yaml")).unwrap()).unwrap();
    let tiers: Vec<i64> = inventory["apps"].as_array().unwrap().iter().map(|a| a["tier"].as_i64().unwrap()).collect();
    assert_eq!(tiers, [1, 1, 2, 2, 3, 3]);
    assert_eq!(inventory["volumes"][0], serde_json::json!({ "path": "svm_dr1:shop_v1", "app": "shop" }));
    assert_eq!(inventory["volumes"][3], serde_json::json!({ "path": "svm_dr2:shop_2_v2", "app": "shop-2" }));

    // Tier by tier: no step of a tier-2 app starts before tier 1 has ended, except those that
    // run for every app before the tiers (the checks and the fences).
    let report = drover(&state, &["report", "latest", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let steps = report["steps"].as_array().unwrap();
    let end_of = |id: &str| steps.iter().find(|s| s["id"] == id).and_then(|s| s["end_ms"].as_u64()).unwrap();
    let tier1 = end_of("tier[1]");
    let tier2_apps = ["shop-3", "shop-4", "shop_3", "shop_4"];
    for s in steps {
        let id = s["id"].as_str().unwrap();
        let before_tiers = ["fence[", "volume-state[", "check-volume["].iter().any(|p| id.starts_with(p));
        let tier2 = tier2_apps.iter().any(|a| id.contains(&format!("[{a}]")) || id.contains(&format!(":{a}_")));
        if let (false, true, Some(start)) = (before_tiers, tier2, s["start_ms"].as_u64()) {
            assert!(start >= tier1, "{id} started before tier 1 ended");
        }
    }
    let items = report["fleet"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert!(items.iter().all(|i| i["outcome"] == "recovered" && i["rto_ms"].as_u64().is_some()), "{items:?}");
}

/// Backend: the ONTAP and Kubernetes simulators. The apps of a tier are recovered side by side:
/// 40 apps in one tier, the shipped failover run as an operator runs it (no `--concurrency`),
/// each app's workloads ready 5 s after they are written. More than 32 apps wait for their
/// workloads at the same moment: the runbook's step limit once let 32 steps run and held the
/// other apps back a whole wait. (Their breaks may end at different times — each ONTAP
/// cluster takes a few changes at once — so the apps do not all start waiting together.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_of_a_tier_wait_for_their_workloads_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = simulated_fleet_config(drover::lab::Fleet { apps: 40, volumes_per_app: 1, tiers: 1, svms: 1 });
    config.kube_simulator.ready_delay = drover_api::HumanDuration(std::time::Duration::from_secs(5));
    let lab = drover::lab::Lab::up(&config, &dir.path().join("lab")).await.unwrap();
    let state = dir.path().join("state");
    let (out, text) = fleet_failover(&state, &lab, lab.inventory.as_ref().unwrap()).await;
    assert_eq!(out.status.code(), Some(0), "{text}");

    let report = drover(&state, &["report", "latest", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let waits: Vec<(u64, u64)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"].as_str().is_some_and(|id| id.starts_with("ready[")))
        .map(|s| (s["start_ms"].as_u64().unwrap(), s["end_ms"].as_u64().unwrap()))
        .collect();
    assert_eq!(waits.len(), 40);
    // The most waits under way at one moment (a wait ending as another starts is not both).
    let mut moments: Vec<(u64, i32)> = waits.iter().flat_map(|&(start, end)| [(start, 1), (end, -1)]).collect();
    moments.sort();
    let (mut now, mut most) = (0, 0);
    for (_, change) in moments {
        now += change;
        most = most.max(now);
    }
    assert!(most > 32, "at most {most} apps waited for their workloads at once: {waits:?}");
}

/// Backend: the Kubernetes and ONTAP simulators. Each app's restore reads its fenced primary
/// while its volumes transfer and break (`prepare_after`), and writes at its turn: every
/// restore says its source was read ahead, and the apps are restored all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleets_restores_read_the_fenced_primary_while_the_volumes_transfer() {
    use drover::engine::events::Event;
    let dir = tempfile::tempdir().unwrap();
    let lab = simulated_fleet(dir.path(), drover::lab::Fleet { apps: 4, volumes_per_app: 1, tiers: 2, svms: 1 }).await;
    let state = dir.path().join("state");
    let (out, text) = fleet_failover(&state, &lab, lab.inventory.as_ref().unwrap()).await;
    assert_eq!(out.status.code(), Some(0), "{text}");
    let sources: Vec<(String, String)> = journal(&state)
        .into_iter()
        .filter_map(|rec| match rec.event {
            Event::StepFinished { step, outputs, .. } if step.starts_with("restore-from-primary[") => {
                Some((step, outputs["source"].as_str().unwrap_or_default().to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(sources.len(), 4, "{sources:?}");
    for (step, source) in &sources {
        assert!(source.ends_with("(read ahead of this step's turn)"), "{step}: {source}");
    }
    let deployments: Vec<String> =
        lab_state(&lab).await.into_iter().filter(|l| l.starts_with("west deployments ")).collect();
    for ns in ["shop", "shop-2", "shop-3", "shop-4"] {
        let here = format!(r#""namespace":"{ns}""#);
        assert!(deployments.iter().any(|l| l.contains(&here)), "no deployment of {ns} at DR: {deployments:?}");
    }
}

/// Backend: the ONTAP simulator (a fault no real server gives on demand) and the Kubernetes
/// simulator. One app's volume refuses to quiesce: that app is rolled back — its fence lifted,
/// its other volume's transfers resumed — so it runs on the primary as before; the other apps
/// fail over, and the report says which is which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_one_app_failing_before_its_break_is_rolled_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lab = simulated_fleet(dir.path(), drover::lab::Fleet { apps: 3, volumes_per_app: 2, tiers: 1, svms: 2 }).await;
    refuse_quiesce(&lab, "west", "svm_dr2:shop_2_v2");
    let (out, text) = fleet_failover(&dir.path().join("state"), &lab, lab.inventory.as_ref().unwrap()).await;
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("3 items of params.apps: 2 recovered, 0 failed, 1 rolled back"), "{text}");
    assert!(text.contains("⟲ fence-app[shop-2]  undone"), "{text}");

    let states: std::collections::BTreeMap<String, String> =
        lab.ontap.with_world(|w| w.rels.iter().map(|r| (r.dst_path.clone(), r.state.to_string())).collect());
    assert_eq!(states["svm_dr1:shop_2_v1"], "snapmirrored", "its quiesced volume resumed: {states:?}");
    assert_eq!(states["svm_dr2:shop_2_v2"], "snapmirrored", "{states:?}");
    for other in ["svm_dr1:shop_v1", "svm_dr2:shop_v2", "svm_dr1:shop_3_v1", "svm_dr2:shop_3_v2"] {
        assert_eq!(states[other], "broken_off", "{other}: {states:?}");
    }
    let ns = lab.east.get("", "v1", "namespaces", None, "shop-2").await.unwrap();
    assert!(ns.pointer("/metadata/labels/drover.io~1fenced").is_none(), "shop-2 is not fenced on east: {ns}");
    let web = lab.east.get("apps", "v1", "deployments", Some("shop-2"), "web").await.unwrap();
    assert_eq!(web.pointer("/spec/replicas").and_then(serde_json::Value::as_i64), Some(3), "{web}");
    assert!(lab.west.get("", "v1", "namespaces", None, "shop-2").await.is_none(), "nothing of shop-2 at west");
    assert!(lab.west.get("apps", "v1", "deployments", Some("shop-3"), "web").await.is_some(), "shop-3 failed over");
}

/// Backend: the Kubernetes simulator (a fault no real server gives on demand) and the ONTAP
/// simulator. Tier 1 is all-or-nothing and one of its apps fails after its volumes were broken:
/// the run stops there, and tier 2 — not yet started — still runs on the primary: not fenced,
/// its volumes still replicating (they were fenced before the first tier began).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_failing_after_its_break_leaves_later_tiers_running_on_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    let lab = simulated_fleet(dir.path(), drover::lab::Fleet { apps: 4, volumes_per_app: 1, tiers: 2, svms: 1 }).await;
    let drover::lab::LabKube::Sim(west) = &lab.west else { panic!("the simulator was asked for") };
    west.inject(drover_kube_sim::Fault {
        server: None,
        method: Some("POST".into()),
        path: Some("/namespaces/shop-2/".into()),
        kind: drover_kube_sim::FaultKind::ServerError,
        remaining: None,
        share: 1.0,
    });
    let mut inventory: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(lab.inventory.as_ref().unwrap()).unwrap()).unwrap();
    inventory["tiers"] = serde_json::json!([{ "name": 1, "all_or_nothing": true }, 2]);
    let params = dir.path().join("params.yaml");
    std::fs::write(&params, serde_yaml::to_string(&inventory).unwrap()).unwrap();

    let (out, text) = fleet_failover(&dir.path().join("state"), &lab, &params).await;
    assert_ne!(out.status.code(), Some(0), "{text}");
    for app in ["shop-3", "shop-4"] {
        let line = format!("tier 2  {app}  not started");
        assert!(text.contains(&line), "missing `{line}` in:\n{text}");
    }

    let states: std::collections::BTreeMap<String, String> =
        lab.ontap.with_world(|w| w.rels.iter().map(|r| (r.dst_path.clone(), r.state.to_string())).collect());
    assert_eq!(states["svm_dr1:shop_2_v1"], "broken_off", "tier 1 was broken: {states:?}");
    for app in ["shop-3", "shop-4"] {
        let volume = format!("svm_dr1:{}_v1", app.replace('-', "_"));
        assert_eq!(states[&volume], "snapmirrored", "{app} still replicates: {states:?}");
        let ns = lab.east.get("", "v1", "namespaces", None, app).await.unwrap();
        assert!(ns.pointer("/metadata/labels/drover.io~1fenced").is_none(), "{app} is not fenced on east: {ns}");
        let web = lab.east.get("apps", "v1", "deployments", Some(app), "web").await.unwrap();
        assert_eq!(web.pointer("/spec/replicas").and_then(serde_json::Value::as_i64), Some(3), "{app}: {web}");
    }
}

/// Backend: the ONTAP and Kubernetes simulators, built-in DNS and load balancer. A fleet on
/// volume relationships comes home tier by tier: every volume reversed, each app's volumes
/// broken on the primary in its tier, then reversed again — the lab ends as it started.
#[test]
fn a_lab_fleet_fails_back_volume_by_volume_and_returns_to_where_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let config = lab_file(
        dir.path(),
        "fleet: { apps: 4, volumes_per_app: 2, tiers: 2 }\nkube: simulator\ndns: builtin\nlb: builtin\ns3: none\n",
    );
    let lab = dir.path().join("lab");
    let state = dir.path().join("state");
    let out = drover(&state, &["lab", "failover", "--failback", "--config", &config, "--dir", lab.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    let after = text.split("after the failback").nth(1).unwrap_or_else(|| panic!("no failback in:\n{text}"));
    for line in [
        "✓ 8 of 8 volume relationships are svm1 → DR and snapmirrored",
        "✓ 0 volume relationships are left reversed (DR → primary)",
        "✓ east runs Deployment web in 4 of 4 app namespaces",
        "✓ east's Ingress web serves the east host in 4 of 4 app namespaces",
        "✓ west still has 0 of 4 app namespaces",
        "✓ load balancer answers `served by east`",
    ] {
        assert!(after.contains(line), "missing `{line}` in:\n{after}");
    }
    // Each app's volumes were broken on the primary in its tier, not all before the first.
    let report = drover(&state, &["report", "latest", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["runbook"], "failback", "the latest run is the failback");
    let steps = report["steps"].as_array().unwrap();
    let at = |id: &str, field: &str| {
        steps.iter().find(|s| s["id"] == id).and_then(|s| s[field].as_u64()).unwrap_or_else(|| panic!("{id}"))
    };
    assert!(at("break-reverse-volume[svm_dr1:shop_3_v1]", "start_ms") >= at("tier[1]", "end_ms"));
    assert!(at("reverse-volume[svm_dr1:shop_3_v1]", "end_ms") <= at("tier[1]", "end_ms"), "reversed before the tiers");
    assert!(text.contains("4 items of params.apps: 4 recovered, 0 failed, 0 rolled back"), "{text}");
}

/// Backend: the ONTAP simulator (a fault no real server gives on demand) and the Kubernetes
/// simulator. After a fleet failover, one app's reversed volume refuses to quiesce on the
/// primary during the failback: that app is rolled back alone — unfenced at DR, where it keeps
/// serving, its reversed volumes replicating again — and the other apps come home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_failback_one_app_failing_before_its_break_keeps_serving_at_dr() {
    let dir = tempfile::tempdir().unwrap();
    let lab = simulated_fleet(dir.path(), drover::lab::Fleet { apps: 3, volumes_per_app: 2, tiers: 1, svms: 2 }).await;
    let inventory = lab.inventory.clone().unwrap();
    let (out, text) = fleet_failover(&dir.path().join("state"), &lab, &inventory).await;
    assert_eq!(out.status.code(), Some(0), "{text}");

    // A reversal keeps the relationship's uuid; on east, its only PATCH before the break is the quiesce.
    refuse_quiesce(&lab, "east", "svm_dr2:shop_2_v2");
    let (out, text) = fleet_run(&dir.path().join("state"), &lab, "runbooks/failback.yaml", &inventory).await;
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("3 items of params.apps: 2 recovered, 0 failed, 1 rolled back"), "{text}");
    assert!(text.contains("⟲ fence-dr-app[shop-2]  undone"), "{text}");

    let rels: std::collections::BTreeMap<String, (String, String)> = lab.ontap.with_world(|w| {
        w.rels.iter().map(|r| (r.dst_path.clone(), (r.src_path.clone(), r.state.to_string()))).collect()
    });
    for volume in ["shop_2_v1", "shop_2_v2"] {
        let (from, state) = &rels[&format!("svm1:{volume}")];
        assert_eq!(state, "snapmirrored", "{volume} still replicates DR → primary: {rels:?}");
        assert!(from.starts_with("svm_dr"), "{volume}: {rels:?}");
    }
    for volume in ["svm_dr1:shop_v1", "svm_dr2:shop_v2", "svm_dr1:shop_3_v1", "svm_dr2:shop_3_v2"] {
        let home = format!("svm1:{}", volume.split(':').nth(1).unwrap());
        assert_eq!(rels[volume], (home, "snapmirrored".to_string()), "{volume} came home: {rels:?}");
    }
    let ns = lab.west.get("", "v1", "namespaces", None, "shop-2").await.unwrap();
    assert!(ns.pointer("/metadata/labels/drover.io~1fenced").is_none(), "shop-2 is not fenced at west: {ns}");
    let web = lab.west.get("apps", "v1", "deployments", Some("shop-2"), "web").await.unwrap();
    assert_eq!(web.pointer("/spec/replicas").and_then(serde_json::Value::as_i64), Some(3), "{web}");
    let home = lab.east.get("apps", "v1", "deployments", Some("shop-3"), "web").await.unwrap();
    assert_eq!(home.pointer("/spec/replicas").and_then(serde_json::Value::as_i64), Some(3), "shop-3 came home");
}

#[test]
fn a_bad_lab_file_is_named_with_its_line_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = lab_file(dir.path(), "copies: 2\nbalancer: builtin\n");
    let (code, text) = lab_failover("planned", &["--config", &config]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains(&format!("{config}: line 6")) && text.contains("unknown field `balancer`"), "{text}");
    assert!(!text.contains("Kubernetes east"), "{text}");
}

#[test]
fn failover_then_failback_returns_the_lab_to_where_it_started() {
    let (code, text) = lab_failover("planned", &["--failback"]);
    assert_eq!(code, Some(0), "{text}");
    let after = text.split("after the failback").nth(1).unwrap_or_else(|| panic!("no failback in:\n{text}"));
    for line in [
        "✓ SVM-DR relationship svm1: → svm_dr: snapmirrored",
        "✓ SVMs: svm1 running, svm_dr stopped",
        "✓ east runs Deployment shop/web with 3 available replicas",
        "✓ east's Ingress shop/web serves shop.east.example.com",
        "✓ east's namespace shop is not fenced",
        "✓ west has no namespace shop",
        "✓ DNS shop.example.com → 203.0.113.10",
        "✓ load balancer answers `served by east`",
    ] {
        assert!(after.contains(line), "missing `{line}` in:\n{after}");
    }
}

/// The shipped failover over `params` (an inventory) on `lab`, the load balancer left alone.
async fn fleet_failover(
    state: &std::path::Path,
    lab: &drover::lab::Lab,
    params: &std::path::Path,
) -> (std::process::Output, String) {
    fleet_run(state, lab, "runbooks/failover.yaml", params).await
}

/// A shipped runbook over `params` (an inventory) on `lab`, the load balancer left alone.
async fn fleet_run(
    state: &std::path::Path,
    lab: &drover::lab::Lab,
    runbook: &str,
    params: &std::path::Path,
) -> (std::process::Output, String) {
    let args = [
        "run".to_string(),
        runbook.into(),
        "--yes".into(),
        "--sites".into(),
        lab.sites_file.display().to_string(),
        "--params-file".into(),
        params.display().to_string(),
        "--param".into(),
        "switch_lb=false".into(),
    ];
    let state = state.to_path_buf();
    let out = tokio::task::spawn_blocking(move || drover(&state, &args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

/// Replication as it was (never paused or broken), and nothing left at DR but what was there.
fn assert_rehearsal_left_no_trace(before: &[String], after: &[String]) {
    let replication = |s: &[String]| s.iter().filter(|l| l.starts_with("rel ")).cloned().collect::<Vec<_>>();
    assert_eq!(replication(after), replication(before), "replication was never paused or broken");
    let west = |s: &[String]| {
        s.iter()
            .filter(|l| l.starts_with("west "))
            .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(west(after), west(before), "nothing of the rehearsal remains at DR");
}

/// A lab of a fleet on the Kubernetes and ONTAP simulators, without S3.
async fn simulated_fleet(dir: &std::path::Path, fleet: drover::lab::Fleet) -> drover::lab::Lab {
    drover::lab::Lab::up(&simulated_fleet_config(fleet), &dir.join("lab")).await.unwrap()
}

/// The lab file's two sites on both simulators, with `fleet`'s applications.
fn simulated_fleet_config(fleet: drover::lab::Fleet) -> drover::lab::LabConfig {
    let mut config = shipped();
    config.kube = drover::lab::KubeChoice::Simulator;
    config.s3 = drover::lab::Choice::None;
    config.set_fleet(fleet);
    config
}

fn shipped() -> drover::lab::LabConfig {
    drover::lab::LabConfig::shipped(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Everything a run could change in the lab, as text.
async fn lab_state(lab: &drover::lab::Lab) -> Vec<String> {
    let mut out = lab.ontap.with_world(|w| {
        let mut v: Vec<String> =
            w.rels.iter().map(|r| format!("rel {} → {} {}", r.src_path, r.dst_path, r.state)).collect();
        v.extend(
            w.clusters
                .iter()
                .flat_map(|c| c.svms.iter().map(move |s| format!("svm {}@{} {}", s.name, c.name, s.state))),
        );
        v
    });
    for (site, c) in [("east", &lab.east), ("west", &lab.west)] {
        // What a run could change: the apps' kinds, namespaces and volumes, as written (the
        // controllers' own objects and status change on their own on a real cluster).
        let kinds = [
            ("", "v1", "namespaces"),
            ("", "v1", "persistentvolumes"),
            ("", "v1", "persistentvolumeclaims"),
            ("", "v1", "configmaps"),
            ("", "v1", "services"),
            ("apps", "v1", "deployments"),
            ("apps", "v1", "statefulsets"),
            ("networking.k8s.io", "v1", "ingresses"),
            ("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
        ];
        for (g, v, p) in kinds {
            for mut o in c.list(g, v, p).await {
                let name = o["metadata"]["name"].clone();
                o.as_object_mut().unwrap().remove("status");
                for k in ["managedFields", "resourceVersion", "generation"] {
                    o["metadata"].as_object_mut().unwrap().remove(k);
                }
                out.push(format!("{site} {p} {name} {o}"));
            }
        }
    }
    if let Some(addr) = lab.dns {
        let answer =
            drover_dns::query(addr, "shop.example.com.", drover_dns::RecordKind::A, std::time::Duration::from_secs(2))
                .await;
        out.push(format!("dns {:?}", answer.map(|r| r.values)));
    }
    if let Some(url) = &lab.lb_url {
        out.push(format!("lb {}", reqwest::get(url).await.unwrap().text().await.unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_checks_every_precondition_and_changes_nothing_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let lab_args = |lab: &drover::lab::Lab, command: &[&str]| {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend(["--sites".into(), lab.sites_file.display().to_string()]);
        for (k, v) in &lab.params {
            args.extend(["--param".into(), format!("{k}={v}")]);
        }
        args
    };
    let drover_async = |args: Vec<String>| {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let out = drover(&state, &args.iter().map(String::as_str).collect::<Vec<_>>());
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.code(), text)
        })
    };
    let lab = drover::lab::Lab::up(&shipped(), &dir.path().join("lab")).await.unwrap();
    let before = lab_state(&lab).await;

    // Without history the recovery time is unknown, and said so.
    let (code, text) = drover_async(lab_args(&lab, &["rehearse"])).await.unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("0 step(s) with failed preconditions; nothing was changed"), "{text}");
    assert!(text.contains("predicted recovery time: unknown — no earlier successful run of `failover`"), "{text}");
    let rpo = text.lines().find(|l| l.starts_with("RPO now: ")).unwrap_or_else(|| panic!("no RPO in:\n{text}"));
    assert!(rpo.contains("s of data would be lost (replication lag, as "), "{rpo}");

    // A real failover on another lab, recorded in the same state directory, is the history.
    let other = drover::lab::Lab::up(&shipped(), &dir.path().join("other")).await.unwrap();
    let (code, text) = drover_async(lab_args(&other, &["failover", "--yes"])).await.unwrap();
    assert_eq!(code, Some(0), "{text}");
    drop(other);
    let (code, text) = drover_async(lab_args(&lab, &["rehearse"])).await.unwrap();
    assert_eq!(code, Some(0), "{text}");
    let line = text.lines().find(|l| l.starts_with("predicted recovery time: ")).unwrap_or_else(|| panic!("{text}"));
    // Which checks lead into final-update depends on that run's timings; the chain after it does not.
    assert!(line.contains("median step durations of 1 earlier run(s): "), "{line}");
    assert!(line.contains("-> final-update -> quiesce -> break -> stop-source-svm -> start-dr-svm ->"), "{line}");
    assert_eq!(lab_state(&lab).await, before, "a rehearsal changes nothing");
}

/// The run's journal records, once it has any.
fn journal(state: &std::path::Path) -> Vec<drover::engine::events::Record> {
    let Some(run) = std::fs::read_dir(state.join("runs")).ok().and_then(|mut d| d.next()).and_then(Result::ok) else {
        return vec![];
    };
    drover::journal::read(&run.path().join("journal.jsonl")).map(|r| r.records).unwrap_or_default()
}

/// True once the journal records that `step` started (`finished`: that it finished).
fn reached(state: &std::path::Path, step: &str, finished: bool) -> bool {
    use drover::engine::events::Event;
    journal(state).iter().any(|rec| match &rec.event {
        Event::StepStarted { step: s, .. } => !finished && s == step,
        Event::StepFinished { step: s, .. } => finished && s == step,
        _ => false,
    })
}

/// Every step a planned failover runs, in order.
const FAILOVER_STEPS: [&str; 15] = [
    "replication",
    "check-dr",
    "check-replication",
    "confirm-planned",
    "fence[shop]",
    "final-update",
    "quiesce",
    "break",
    "stop-source-svm",
    "start-dr-svm",
    "restore-from-primary[shop]",
    "ready[shop]",
    "switch-dns[shop]",
    "switch-lb[shop]",
    "verify[shop]",
];

/// Backend: the Kubernetes simulator. What is tested is drover's journal and resume, at 29 kill
/// points, each on a fresh lab; the same failover on real control planes is tested above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_killed_at_every_step_boundary_and_inside_every_step_resumes_to_the_same_end_state() {
    use drover::engine::events::{Event, Outcome};
    for step in FAILOVER_STEPS {
        // Inside the step (it started), and at its boundary (it finished, the next may not have
        // started). The last step's end is the run's end: nothing is left to kill there.
        for finished in [false, true].into_iter().filter(|f| !(*f && step == "verify[shop]")) {
            let at = format!("{step} {}", if finished { "finished" } else { "started" });
            let dir = tempfile::tempdir().unwrap();
            let mut config = shipped();
            config.kube = drover::lab::KubeChoice::Simulator;
            let lab = drover::lab::Lab::up(&config, &dir.path().join("lab")).await.unwrap();
            let state = dir.path().join("state");
            let mut args: Vec<String> =
                ["run", "runbooks/failover.yaml", "--yes", "--sites"].map(String::from).to_vec();
            args.push(lab.sites_file.display().to_string());
            for (k, v) in &lab.params {
                args.extend(["--param".into(), format!("{k}={v}")]);
            }
            let (state2, args2) = (state.clone(), args.clone());
            let killed = tokio::task::spawn_blocking(move || {
                let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
                    .args(&args2)
                    .env("DROVER_STATE_DIR", &state2)
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while !reached(&state2, step, finished) && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                let killed = child.try_wait().unwrap().is_none();
                let _ = child.kill(); // SIGKILL
                let _ = child.wait();
                killed
            })
            .await
            .unwrap();
            assert!(killed, "the run was still going when {at}");
            let succeeded_before: Vec<String> = journal(&state)
                .iter()
                .filter_map(|r| match &r.event {
                    Event::StepFinished { step, outcome: Outcome::Succeeded, .. } => Some(step.clone()),
                    _ => None,
                })
                .collect();
            let state3 = state.clone();
            let out =
                tokio::task::spawn_blocking(move || drover(&state3, &["resume", "latest", "--yes"])).await.unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.status.code(), Some(0), "resume after a kill when {at}: {text}");
            for (line, ok) in lab.failover_state().await {
                assert!(ok, "after a kill when {at} and resume: {line}\n{text}");
            }
            let records = journal(&state);
            if text.contains("already succeeded; nothing to resume") {
                continue; // the kill came after the run's last record: correct, and nothing to check
            }
            let resumed = records
                .iter()
                .rposition(|r| matches!(r.event, Event::RunResumed { .. }))
                .unwrap_or_else(|| panic!("no resume record after a kill when {at}: {text}"));
            // The report owns up to the crash: both processes, the time between them, and an
            // attempt cut off by the kill.
            assert!(
                text.contains("process 1 on ") && text.contains("ended without finishing (killed or crashed)"),
                "{at}: {text}"
            );
            assert!(text.contains("time between processes (crashes, kills, waiting to resume): "), "{at}: {text}");
            let cut_off = |r: &&drover::engine::events::Record| match &r.event {
                Event::StepStarted { step: s, .. } => Some((s.clone(), true)),
                Event::StepFinished { step: s, .. } => Some((s.clone(), false)),
                _ => None,
            };
            let open = records[..resumed].iter().filter_map(|r| cut_off(&r)).fold(
                std::collections::BTreeMap::new(),
                |mut m, (s, started)| {
                    m.insert(s, started);
                    m
                },
            );
            if open.values().any(|started| *started) {
                assert!(text.contains("killed (the process ended)"), "the attempt cut off at {at} is shown: {text}");
            }
            for r in &records[resumed..] {
                if let Event::StepStarted { step: s, .. } = &r.event {
                    assert!(!succeeded_before.contains(s), "{s} succeeded before the kill when {at} and ran again");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_rehearsal_brings_the_apps_up_in_isolation_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let lab = drover::lab::Lab::up(&shipped(), &dir.path().join("lab")).await.unwrap();
    let before = lab_state(&lab).await;
    let volumes = |lab: &drover::lab::Lab| {
        lab.ontap.with_world(|w| {
            w.clusters.iter().flat_map(|c| c.volumes.iter().map(|v| v.name.clone())).collect::<Vec<_>>()
        })
    };
    let volumes_before = volumes(&lab);
    let args = ["rehearse", "--live", "--yes", "--sites", &lab.sites_file.display().to_string()].map(String::from);
    let state = dir.path().join("state");
    let out = tokio::task::spawn_blocking(move || drover(&state, &args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    for (step, detail) in [
        ("clone[db_data]", "junction_path=/db_data_rehearsal"),
        ("ready[shop]", "Deployment shop-rehearsal/web"),
        ("replication-still-runs", "state=snapmirrored"),
        ("remove-apps", "Namespace shop-rehearsal"),
        ("remove-crds[shop]", "CustomResourceDefinition carts.shop.example.com"),
    ] {
        // In the report's step table, below the live view.
        let table = &text[text.find("\n  step ").unwrap_or_else(|| panic!("no report in:\n{text}"))..];
        let at = table.find(&format!("  {step} ")).unwrap_or_else(|| panic!("no {step} in:\n{text}"));
        assert!(table[at..].lines().take(2).any(|l| l.contains(detail)), "{step}: {detail} not in:\n{text}");
    }
    assert_eq!(volumes(&lab), volumes_before, "the clone is gone");
    assert_rehearsal_left_no_trace(&before, &lab_state(&lab).await);
}

/// Backend: the ONTAP and Kubernetes simulators (a fleet's scale). The live rehearsal over a
/// fleet's inventory: every volume cloned, each app up in its own rehearsal namespace with its
/// PersistentVolume on its own volume's clone, tier by tier — then nothing of it remains, and
/// replication never paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rehearsal_brings_each_app_up_on_its_own_clones_tier_by_tier_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let lab = simulated_fleet(dir.path(), drover::lab::Fleet { apps: 4, volumes_per_app: 2, tiers: 2, svms: 2 }).await;
    let before = lab_state(&lab).await;
    let volumes =
        |lab: &drover::lab::Lab| lab.ontap.with_world(|w| w.clusters.iter().map(|c| c.volumes.len()).sum::<usize>());
    let volumes_before = volumes(&lab);
    let args = [
        "rehearse",
        "--live",
        "--yes",
        "--sites",
        &lab.sites_file.display().to_string(),
        "--params-file",
        &lab.inventory.as_ref().unwrap().display().to_string(),
    ]
    .map(String::from);
    let state = dir.path().join("state");
    let report_state = state.clone();
    let run = tokio::task::spawn_blocking(move || drover(&state, &args.iter().map(String::as_str).collect::<Vec<_>>()));
    // What the rehearsal's volumes mount, while they exist.
    let mut mounted = std::collections::BTreeMap::new();
    while !run.is_finished() {
        for pv in lab.west.list("", "v1", "persistentvolumes").await {
            if let (Some(name), Some(path)) = (pv.pointer("/metadata/name"), pv.pointer("/spec/nfs/path")) {
                mounted.insert(
                    name.as_str().unwrap_or_default().to_string(),
                    path.as_str().unwrap_or_default().to_string(),
                );
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let out = run.await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("4 items of params.apps: 4 recovered, 0 failed, 0 rolled back"), "{text}");
    let expected: std::collections::BTreeMap<String, String> = [
        ("shop-db-data-rehearsal", "/shop_v1_rehearsal"),
        ("shop-db-data-2-rehearsal", "/shop_2_v1_rehearsal"),
        ("shop-db-data-3-rehearsal", "/shop_3_v1_rehearsal"),
        ("shop-db-data-4-rehearsal", "/shop_4_v1_rehearsal"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(mounted, expected, "each app's volume on its own clone, under a name of its own");

    let report = drover(&report_state, &["report", "latest", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let steps = report["steps"].as_array().unwrap();
    let at = |id: &str, field: &str| {
        steps.iter().find(|s| s["id"] == id).and_then(|s| s[field].as_u64()).unwrap_or_else(|| panic!("{id}"))
    };
    assert!(at("clone-volume[svm_dr1:shop_3_v1]", "start_ms") >= at("tier[1]", "end_ms"), "tier 2 after tier 1");
    for clone in ["svm_dr1:shop_v1", "svm_dr2:shop_v2", "svm_dr1:shop_4_v1", "svm_dr2:shop_4_v2"] {
        let id = format!("remove-clone-volume[{clone}]");
        assert!(steps.iter().any(|s| s["id"] == id.as_str() && s["outcome"] == "succeeded"), "{id}: {steps:?}");
    }
    assert_eq!(volumes(&lab), volumes_before, "every clone is gone");
    assert_rehearsal_left_no_trace(&before, &lab_state(&lab).await);

    // The page one attaches says it was a rehearsal, and shows each fanned step as one row.
    let page = drover(&report_state, &["report", "latest", "--format", "html"]);
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(page.contains("REHEARSAL — production was not touched"), "{page}");
    assert!(page.contains(">clone-volume ×8</text>"), "the instances of a step collapse into one row: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_upgrade_moves_users_to_green_leaves_blue_untouched_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let lab = drover::lab::Lab::up(&shipped(), &dir.path().join("lab")).await.unwrap();
    let blue = |s: &[String]| s.iter().filter(|l| l.starts_with("east ")).cloned().collect::<Vec<_>>();
    let before = lab_state(&lab).await;
    let upgrade = |extra: &'static [&'static str]| {
        let mut args: Vec<String> = ["upgrade", "--yes", "--sites"].map(String::from).to_vec();
        args.push(lab.sites_file.display().to_string());
        for (k, v) in &lab.params {
            args.extend(["--param".into(), format!("{k}={v}")]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let state = dir.path().join("state");
        async move {
            let out = tokio::task::spawn_blocking(move || {
                drover(&state, &args.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .await
            .unwrap();
            (
                out.status.code(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            )
        }
    };
    let (code, text) = upgrade(&[]).await;
    assert_eq!(code, Some(0), "{text}");
    let after = lab_state(&lab).await;
    assert_eq!(blue(&after), blue(&before), "cluster A is never touched");
    assert!(after.contains(&"lb served by west\n".to_string()), "{after:?}");
    assert!(after.iter().any(|l| l == "dns Ok([\"198.51.100.10\"])"), "{after:?}");
    let host = lab.west.get("networking.k8s.io", "v1", "ingresses", Some("shop"), "web").await.unwrap()["spec"]["rules"][0]
        ["host"]
        .clone();
    assert_eq!(host, "shop.preview.example.com");

    let (code, text) = upgrade(&["--rollback"]).await;
    assert_eq!(code, Some(0), "{text}");
    let back = lab_state(&lab).await;
    assert!(back.contains(&"lb served by east\n".to_string()), "{back:?}");
    assert!(back.iter().any(|l| l == "dns Ok([\"203.0.113.10\"])"), "{back:?}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("copy-to-green") && l.contains("skipped")), "{text}");
}

/// Every file under `dir`, as text.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    out
}

#[test]
fn no_credential_reaches_any_output_report_or_journal() {
    for (mode, extra) in [("planned", vec!["--failback"]), ("unplanned", vec![])] {
        for output in ["text", "json"] {
            let dir = tempfile::tempdir().unwrap();
            let lab = dir.path().join("lab");
            let state = dir.path().join("state");
            let mut args = vec!["--output", output, "lab", "failover", "--mode", mode, "--dir", lab.to_str().unwrap()];
            args.extend(extra.iter().copied());
            let out = drover(&state, &args);
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.status.code(), Some(0), "{text}");
            // The credentials the lab handed to drover by reference: files and kubeconfig tokens.
            let mut secrets: Vec<String> =
                files_under(&lab.join("secrets")).into_iter().map(|(_, s)| s.trim().to_string()).collect();
            for site in ["east", "west"] {
                let kubeconfig: serde_yaml::Value =
                    serde_yaml::from_str(&std::fs::read_to_string(lab.join(format!("kubeconfig-{site}"))).unwrap())
                        .unwrap();
                secrets.push(kubeconfig["users"][0]["user"]["token"].as_str().unwrap().to_string());
            }
            // 2 ONTAP passwords, the TSIG secret, the S3 key pair, 2 bearer tokens.
            assert_eq!(secrets.len(), 7, "{secrets:?}");
            let mut places = vec![(std::path::PathBuf::from("stdout+stderr"), text)];
            places.extend(files_under(&state));
            assert!(places.iter().any(|(p, _)| p.ends_with("journal.jsonl")), "no journal in {places:?}");
            for secret in &secrets {
                assert!(secret.len() >= 16, "too short to search for: {secret}");
                for (path, content) in &places {
                    assert!(
                        !content.contains(secret.as_str()),
                        "{mode}/{output}: a credential is in {}",
                        path.display()
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_starts_from_a_clean_dns_zone_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    let lab = drover::lab::Lab::up(&shipped(), &lab_dir).await.unwrap();
    let Some(addr) = lab.dns else { panic!("the shipped lab has DNS") };
    assert!(lab.parts.iter().any(|p| p.name == "DNS" && p.kind == "real server"), "BIND plays DNS here");
    // A failover's DNS switch, as BIND journals it.
    let (code, text) = {
        let mut args =
            vec!["failover".to_string(), "--yes".into(), "--sites".into(), lab.sites_file.display().to_string()];
        for (k, v) in &lab.params {
            args.extend(["--param".into(), format!("{k}={v}")]);
        }
        let state = dir.path().join("state");
        tokio::task::spawn_blocking(move || {
            let out = drover(&state, &args.iter().map(String::as_str).collect::<Vec<_>>());
            (
                out.status.code(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            )
        })
        .await
        .unwrap()
    };
    assert_eq!(code, Some(0), "{text}");
    let query = |addr| async move {
        drover_dns::query(addr, "shop.example.com.", drover_dns::RecordKind::A, std::time::Duration::from_secs(2))
            .await
            .map(|r| r.values)
    };
    assert_eq!(query(addr).await.unwrap(), ["198.51.100.10"]);
    drop(lab);
    // The same directory again: the zone is as the lab file describes it, not as the last run left it.
    let lab = drover::lab::Lab::up(&shipped(), &lab_dir).await.unwrap();
    assert_eq!(query(lab.dns.unwrap()).await.unwrap(), ["203.0.113.10"]);
}

/// Every request drover's ONTAP client sent to the lab's simulated clusters exists — path,
/// `fields=`, query parameters and body fields — in every supported release's definitions
/// (generated from NetApp's own client packages; see plugins/ontap/src/release.rs).
fn every_release_accepts_what_drover_sent(lab: &drover::lab::Lab) -> usize {
    let requests: Vec<_> = lab.ontap.with_world(|w| w.requests.iter().cloned().collect());
    assert!(!requests.is_empty());
    let mut refused = vec![];
    for release in drover_ontap::release::RELEASES.iter() {
        for r in &requests {
            if let Err(e) = drover_ontap_sim::accepts(release, r) {
                refused.push(format!("ONTAP {}: {} {} {:?}: {}", release.name, r.method, r.path, r.query.0, e.message));
            }
        }
    }
    refused.dedup();
    assert!(refused.is_empty(), "requests a supported release would refuse:\n{}", refused.join("\n"));
    requests.len()
}

/// ONTAP simulator (no real ONTAP runs here) checking against every supported release; real
/// Kubernetes when built. The shipped failover, failback and live rehearsal send nothing a
/// supported ONTAP release lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_flows_ask_ontap_only_for_what_every_supported_release_has() {
    let dir = tempfile::tempdir().unwrap();
    let lab = drover::lab::Lab::up(&shipped(), &dir.path().join("lab")).await.unwrap();
    let state = dir.path().join("state");
    for command in [&["failover", "--yes"][..], &["failback", "--yes"], &["rehearse", "--live", "--yes"]] {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend(["--sites".into(), lab.sites_file.display().to_string()]);
        for (k, v) in &lab.params {
            args.extend(["--param".into(), format!("{k}={v}")]);
        }
        let state = state.clone();
        let out =
            tokio::task::spawn_blocking(move || drover(&state, &args.iter().map(String::as_str).collect::<Vec<_>>()))
                .await
                .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{command:?}:\n{text}");
    }
    let checked = every_release_accepts_what_drover_sent(&lab);
    assert!(checked > 50, "only {checked} requests recorded");
}

/// Every process descending from `root`, by walking /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let after = &stat[stat.rfind(')').unwrap_or(0) + 1..];
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
            parent_of.push((pid, ppid));
        }
    }
    let mut family = vec![root];
    let mut k = 0;
    while k < family.len() {
        let p = family[k];
        family.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        k += 1;
    }
    family.remove(0);
    family
}

/// Alive and not a zombie waiting to be reaped.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap_or(0) + 1..].trim_start().starts_with('Z'))
}

/// `drover lab up` in `dir`, its temporary files in `tmp`, once it says it is up.
fn lab_up(dir: &std::path::Path, tmp: &std::path::Path, stderr: std::process::Stdio) -> std::process::Child {
    use std::io::BufRead;
    let mut lab = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["lab", "up", "--dir"])
        .arg(dir.join("lab"))
        .env("TMPDIR", tmp)
        .env("DROVER_STATE_DIR", dir.join("state"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(lab.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.is_ok_and(|l| l.starts_with("try: drover failover"))), "the lab did not start");
    // Drained, so the lab never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    lab
}

/// The lab's real servers (BIND, HAProxy, moto; two Kubernetes control planes when built) and
/// the simulators: `drover lab up` stopped by SIGTERM (a supervisor), or killed by SIGKILL, leaves
/// no process and no temporary file behind.
#[test]
fn the_lab_leaves_no_process_and_no_file_behind_after_sigterm_or_sigkill() {
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut lab = lab_up(dir.path(), tmp.path(), std::process::Stdio::null());
        let family = descendants(lab.id());
        assert!(family.len() >= 2, "{name}: the lab runs servers and a janitor: {family:?}");
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_some(), "{name}: the lab keeps temporary files");
        // SAFETY: signalling the child this test started.
        unsafe { libc::kill(lab.id() as libc::pid_t, signal) };
        let status = lab.wait().unwrap();
        if signal == libc::SIGTERM {
            assert_eq!(status.code(), Some(0), "SIGTERM stops the lab gracefully");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let alive: Vec<u32> = family.iter().copied().filter(|p| running(*p)).collect();
            let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
            if alive.is_empty() && left.is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "after {name}: processes {alive:?}, files {left:?} remain");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// The process among `pids` whose command is `comm`.
fn named(pids: &[u32], comm: &str) -> Option<u32> {
    pids.iter().copied().find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm))
}

/// The lab's real servers (HAProxy; a Kubernetes control plane when built): one killed while
/// `drover lab up` runs is said at once on its error output — which part, how it ended, what
/// fails now and what to do — instead of being found later by a step that cannot reach it.
#[test]
fn a_lab_server_that_dies_while_the_lab_is_up_is_reported_at_once() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut lab = lab_up(dir.path(), &std::env::temp_dir(), std::process::Stdio::piped());
    let (tx, said) = std::sync::mpsc::channel();
    let stderr = lab.stderr.take().unwrap();
    std::thread::spawn(move || {
        std::io::BufReader::new(stderr).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l)))
    });
    let family = descendants(lab.id());
    let haproxy = named(&family, "haproxy").expect("HAProxy runs in the lab (bash .ci/run installs it)");
    let apiserver = named(&family, "kube-apiserver");
    for pid in std::iter::once(haproxy).chain(apiserver) {
        // SAFETY: signalling a server the lab this test started runs.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let mut expected = vec![format!(
        "drover lab: the load balancer (HAProxy), pid {haproxy}, exited (signal: 9 (SIGKILL)): steps that reach it will fail; stop the lab (Ctrl-C) and start it again"
    )];
    if apiserver.is_some() {
        expected.push("'s kube-apiserver exited (signal: 9 (SIGKILL)): ".into());
    }
    let mut lines = vec![];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !expected.iter().all(|e| lines.iter().any(|l: &String| l.contains(e.as_str()))) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match said.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("not said within 15 s: {expected:#?}\nsaid: {lines:#?}"),
        }
    }
    // The lab looks every second: a few more looks, and nothing new to say.
    let quiet = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    while let Ok(line) = said.recv_timeout(quiet.saturating_duration_since(std::time::Instant::now())) {
        lines.push(line);
    }
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(lab.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(lab.wait().unwrap().code(), Some(0), "the lab still stops cleanly");
    let reported = lines.iter().filter(|l| l.contains("(HAProxy)")).count();
    assert_eq!(reported, 1, "said once, not every second: {lines:#?}");
}

/// The ONTAP simulator's `cluster` refuses every change to the relationship whose destination
/// is `destination` — before its break, the only change is the quiesce.
fn refuse_quiesce(lab: &drover::lab::Lab, cluster: &str, destination: &str) {
    use drover_ontap_sim::{Fault, FaultKind};
    let uuid = lab.ontap.with_world(|w| w.rels.iter().find(|r| r.dst_path == destination).unwrap().uuid.clone());
    lab.ontap.inject(Fault {
        server: Some(cluster.into()),
        method: Some("PATCH".into()),
        path: Some(uuid),
        kind: FaultKind::SyncError {
            status: 400,
            code: "13303818".into(),
            message: "the relationship cannot be quiesced now".into(),
        },
        remaining: None,
        share: 1.0,
    });
}
