//! examples/app-move.yaml through the `drover` command against two clusters: the app moves and a
//! second run changes nothing (two real control planes), and a failure after fencing rolls the
//! fence back (the simulator, which can fail every write on demand).

use std::collections::BTreeMap;
mod common;

use common::drover;
use std::time::Duration;

use serde_json::{Value, json};

use drover::lab::{KubeChoice, LabKube};
use drover_kube_sim::{Fault, FaultKind};

struct Lab {
    dir: tempfile::TempDir,
    east: LabKube,
    west: LabKube,
    sites: String,
}

/// Two clusters; the shop app runs on east.
async fn lab(kube: KubeChoice) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let (east, west) = tokio::join!(
        LabKube::start("east", kube, dir.path(), Default::default()),
        LabKube::start("west", kube, dir.path(), Default::default())
    );
    let ((east, east_config), (west, west_config)) = (east.unwrap(), west.unwrap());
    let sites = dir.path().join("sites.yaml");
    let section = |config: &std::path::Path, name: &str| json!({ "kubeconfig": config, "context": name });
    let entries = [
        ("east".to_string(), "kube".to_string(), section(&east_config, "east")),
        ("west".to_string(), "kube".to_string(), section(&west_config, "west")),
    ];
    drover::lab::write_sites_file(&sites, &entries).unwrap();
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifests/shop");
    let seed = drover_kube::actions().into_iter().find(|a| a.info().name == "kube.apply").unwrap();
    let site = BTreeMap::from([("east".into(), json!({ "kube": { "kubeconfig": east_config, "context": "east" } }))]);
    let ctx = drover_api::testing::context(site, Duration::from_secs(10));
    seed.run(&ctx, &json!({ "site": "east", "manifests": [manifests] })).await.unwrap();
    Lab { sites: sites.to_str().unwrap().to_string(), dir, east, west }
}

impl Lab {
    async fn run(&self, extra: &[&str]) -> std::process::Output {
        let state = self.dir.path().join("state");
        let mut args: Vec<String> =
            ["run", "examples/app-move.yaml", "--sites", &self.sites, "--yes"].map(String::from).to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || drover(&state, &args.iter().map(String::as_str).collect::<Vec<_>>()))
            .await
            .unwrap()
    }
}

async fn object(cluster: &LabKube, group: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
    cluster.get(group, "v1", plural, ns, name).await
}

async fn replicas(cluster: &LabKube, name: &str) -> Value {
    object(cluster, "apps", "deployments", Some("shop"), name)
        .await
        .map(|d| d["spec"]["replicas"].clone())
        .unwrap_or_default()
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_moves_to_west_and_a_second_run_changes_nothing() {
    let lab = lab(KubeChoice::Real).await;
    let out = lab.run(&[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(replicas(&lab.east, "web").await, 0);
    let ns = object(&lab.east, "", "namespaces", None, "shop").await.unwrap();
    assert_eq!(ns["metadata"]["labels"]["drover.io/fenced"], "true");
    let web = object(&lab.west, "apps", "deployments", Some("shop"), "web").await.unwrap();
    assert_eq!(web["spec"]["replicas"], 3);
    assert_eq!(web["status"]["availableReplicas"], 3, "the run waited until west was ready");

    let version = web["metadata"]["resourceVersion"].clone();
    let out = lab.run(&[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let web = object(&lab.west, "apps", "deployments", Some("shop"), "web").await.unwrap();
    assert_eq!(web["metadata"]["resourceVersion"], version);
    assert!(text(&out).contains("changed=0"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_apply_on_west_rolls_back_the_fence_on_east() {
    let lab = lab(KubeChoice::Simulator).await;
    let LabKube::Sim(west) = &lab.west else { unreachable!("asked for the simulator") };
    west.inject(Fault {
        server: None,
        method: Some("PATCH".into()),
        path: Some("/deployments/".into()),
        kind: FaultKind::ServerError,
        remaining: None,
        share: 1.0,
    });
    let out = lab.run(&[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("500 InternalError"), "{report}");
    assert!(report.contains("rolled back"), "{report}");
    assert_eq!(replicas(&lab.east, "web").await, 3, "east is back up");
    let ns = object(&lab.east, "", "namespaces", None, "shop").await.unwrap();
    assert!(ns["metadata"]["labels"].get("drover.io/fenced").is_none(), "{ns}");
}

/// Backend: a real control plane. The steps of one run share one connection to a cluster and
/// what its discovery found; a kind that a CRD applied later in the run brings is still found
/// by name (the kept discovery is asked again when a name is not in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_a_crd_brings_during_a_run_is_found_by_name_after_discovery_was_kept() {
    let lab = lab(KubeChoice::Real).await;
    let sites: Value = serde_yaml::from_str(&std::fs::read_to_string(&lab.sites).unwrap()).unwrap();
    let sites = BTreeMap::from([("west".to_string(), sites["sites"]["west"].clone())]);
    let ctx = drover_api::testing::context(sites, Duration::from_secs(60));
    let action = |name: &str| drover_kube::actions().into_iter().find(|a| a.info().name == name).unwrap();
    let delete = |kind: &str| json!({ "site": "west", "kinds": [kind], "namespaces": ["default"], "names": ["none"] });

    // Discovery is made and kept for the run: Cart does not exist yet.
    action("kube.delete").run(&ctx, &delete("ConfigMap")).await.unwrap();
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "carts.shop.example.com" },
        "spec": {
            "group": "shop.example.com", "scope": "Namespaced",
            "names": { "plural": "carts", "singular": "cart", "kind": "Cart" },
            "versions": [{ "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }]
        }
    });
    let cart = json!({ "apiVersion": "shop.example.com/v1", "kind": "Cart", "metadata": { "name": "c", "namespace": "default" } });
    action("kube.apply").run(&ctx, &json!({ "site": "west", "inline": [crd, cart] })).await.unwrap();

    let found = action("kube.delete").run(&ctx, &delete("Cart")).await;
    assert!(found.is_ok(), "Cart is found by name in the same run: {found:?}");
}
