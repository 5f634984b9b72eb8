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
