//! The storage-only flows in examples/ run green against the ONTAP simulator through the
//! `drover` command, and failover followed by failback returns to the initial state.

mod common;

use common::drover;

use drover_ontap_sim::Simulator;

/// Relationship direction and state: (source@cluster, destination@cluster, state).
type Rels = Vec<(String, String, String)>;
/// Every SVM: (cluster, name, state, subtype).
type Svms = Vec<(String, String, String, String)>;

fn snapshot(sim: &Simulator) -> (Rels, Svms) {
    sim.with_world(|w| {
        let rels = w
            .rels
            .iter()
            .map(|r| {
                (
                    format!("{}@{}", r.src_path, w.clusters[r.src_cluster].name),
                    format!("{}@{}", r.dst_path, w.clusters[r.dst_cluster].name),
                    r.state.to_string(),
                )
            })
            .collect();
        let svms = w
            .clusters
            .iter()
            .flat_map(|c| {
                c.svms.iter().map(move |s| (c.name.clone(), s.name.clone(), s.state.to_string(), s.subtype.to_string()))
            })
            .collect();
        (rels, svms)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failover_then_failback_returns_to_the_initial_state() {
    let dir = tempfile::tempdir().unwrap();
    let topology = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab/ontap.yaml");
    let (sim, sites) =
        drover::lab::start_ontap(&drover::lab::load_topology(&topology, None).unwrap(), dir.path()).await.unwrap();
    let sites = sites.to_str().unwrap().to_string();
    let state = dir.path().join("state");
    let initial = snapshot(&sim);

    let out = tokio::task::spawn_blocking({
        let (state, sites) = (state.clone(), sites.clone());
        move || drover(&state, &["run", "examples/storage-failover.yaml", "--sites", &sites, "--yes"])
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (rels, svms) = snapshot(&sim);
    assert_eq!(rels, vec![("svm1:@east".into(), "svm_dr:@west".into(), "broken_off".into())]);
    assert!(svms.contains(&("west".into(), "svm_dr".into(), "running".into(), "default".into())), "{svms:?}");
    assert!(svms.contains(&("east".into(), "svm1".into(), "stopped".into(), "default".into())), "{svms:?}");

    let out = tokio::task::spawn_blocking({
        let (state, sites) = (state.clone(), sites.clone());
        move || drover(&state, &["run", "examples/storage-failback.yaml", "--sites", &sites, "--yes"])
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&sim), initial, "failover + failback restores direction, states and subtypes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplanned_storage_failover_does_not_wait_on_a_dead_primary() {
    let dir = tempfile::tempdir().unwrap();
    let topology = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab/ontap.yaml");
    let (sim, sites) =
        drover::lab::start_ontap(&drover::lab::load_topology(&topology, None).unwrap(), dir.path()).await.unwrap();
    sim.set_reachable("east", false);
    let state = dir.path().join("state");
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        drover(
            &state,
            &[
                "run",
                "examples/storage-failover.yaml",
                "--sites",
                sites.to_str().unwrap(),
                "--yes",
                "--param",
                "primary_reachable=false",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed().as_secs() < 30, "took {:?}", started.elapsed());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stop-source-svm  skipped"), "{text}");
    let (rels, _) = snapshot(&sim);
    assert_eq!(rels[0].2, "broken_off");
}

/// Two ONTAP clusters with `per_svm` volume relationships into each of two DR SVMs.
fn volume_estate(per_svm: usize) -> String {
    let mut t = String::from(
        "clusters:\n  - name: east\n    password: east-pw\n    peers: [west]\n    svms: [{ name: svm1, state: running }]\n    volumes:\n",
    );
    for s in 1..=2 {
        for v in 0..per_svm {
            t.push_str(&format!("      - {{ name: a{s}_v{v:03}, svm: svm1 }}\n"));
        }
    }
    t.push_str("  - name: west\n    password: west-pw\n    peers: [east]\n    svms: [{ name: svm_dr1, state: running }, { name: svm_dr2, state: running }]\n    volumes:\n");
    for s in 1..=2 {
        for v in 0..per_svm {
            t.push_str(&format!("      - {{ name: a{s}_v{v:03}, svm: svm_dr{s}, type: dp }}\n"));
        }
    }
    t.push_str("svm_peers:\n  - { svm: svm_dr1@west, peer: svm1@east }\n  - { svm: svm_dr2@west, peer: svm1@east }\nrelationships:\n");
    for s in 1..=2 {
        for v in 0..per_svm {
            t.push_str(&format!(
                "  - {{ source_cluster: east, source: \"svm1:a{s}_v{v:03}\", destination_cluster: west, destination: \"svm_dr{s}:a{s}_v{v:03}\" }}\n"
            ));
        }
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_volume_relationships_is_found_and_broken_at_most_eight_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("estate.yaml");
    std::fs::write(&topology, volume_estate(60)).unwrap();
    let (sim, sites) =
        drover::lab::start_ontap(&drover::lab::load_topology(&topology, None).unwrap(), dir.path()).await.unwrap();
    let sites = sites.to_str().unwrap().to_string();
    let state = dir.path().join("state");
    let out = tokio::task::spawn_blocking({
        let (state, sites) = (state.clone(), sites.clone());
        move || drover(&state, &["run", "examples/storage-fleet-failover.yaml", "--sites", &sites, "--yes"])
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    let (rels, _) = snapshot(&sim);
    assert_eq!(rels.len(), 120);
    assert!(rels.iter().all(|(_, _, state)| state == "broken_off"), "{rels:?}");

    let report = drover(&state, &["report", "latest", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["preflight"]["checked"].as_u64(), Some(2 + 2 * 120), "every instance planned first");
    // The ontap-dr lock: never more than 8 SnapMirror operations at once (intervals trimmed by
    // the journal's millisecond rounding).
    let spans: Vec<(u64, u64)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"].as_str().is_some_and(|id| id.contains('[')))
        .map(|s| (s["start_ms"].as_u64().unwrap() + 2, s["end_ms"].as_u64().unwrap().saturating_sub(2)))
        .collect();
    assert_eq!(spans.len(), 240);
    let most = spans.iter().map(|&(t, _)| spans.iter().filter(|&&(a, b)| a <= t && t < b).count()).max().unwrap();
    assert!((2..=8).contains(&most), "at most 8 at once, and more than one: {most}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_fleet_example_runs_on_the_shipped_volume_topology() {
    let dir = tempfile::tempdir().unwrap();
    let topology = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab/ontap-volumes.yaml");
    let (sim, sites) =
        drover::lab::start_ontap(&drover::lab::load_topology(&topology, None).unwrap(), dir.path()).await.unwrap();
    let sites = sites.to_str().unwrap().to_string();
    let state = dir.path().join("state");
    let out = tokio::task::spawn_blocking(move || {
        drover(&state, &["run", "examples/storage-fleet-failover.yaml", "--sites", &sites, "--yes"])
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("break[svm_dr2:wiki_data]"), "{text}");
    let (rels, _) = snapshot(&sim);
    assert_eq!(rels.iter().filter(|(_, _, state)| state == "broken_off").count(), 4, "{rels:?}");
}
