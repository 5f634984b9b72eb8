//! The control plane does what the Kubernetes tests rely on: a Deployment rolls out on kwok's
//! nodes (Pods Running and Ready), a namespace really terminates, a user without RBAC is refused.
//! Backend: the real control plane built by tools/k8s/build.sh.

use std::time::{Duration, Instant};

use drover_controlplane::{ControlPlane, Options, User};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_out_namespaces_terminate_and_rbac_is_enforced() {
    let started = Instant::now();
    let users = vec![User { name: "nobody".into(), groups: vec![] }];
    let plane = ControlPlane::start(Options { users, ..Options::default() }).await.unwrap();
    eprintln!("control plane ready in {:?}", started.elapsed());
    let version = plane.request("GET", "/version", None).await.unwrap();
    assert_eq!(version["gitVersion"], format!("v{}", drover_controlplane::pinned("K8S_VERSION")));

    plane.request("POST", "/api/v1/namespaces", Some(json!({ "metadata": { "name": "shop" } }))).await.unwrap();
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" },
        "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "web" } },
                  "template": { "metadata": { "labels": { "app": "web" } },
                                "spec": { "containers": [{ "name": "web", "image": "example/web:1" }] } } }
    });
    while plane.request("GET", "/api/v1/namespaces/shop/serviceaccounts/default", None).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("service account at {:?}", started.elapsed());
    plane.request("POST", "/apis/apps/v1/namespaces/shop/deployments", Some(deployment)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = plane.request("GET", "/apis/apps/v1/namespaces/shop/deployments/web", None).await.unwrap();
        if d["status"]["availableReplicas"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the deployment never became available: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!("rolled out at {:?}", started.elapsed());
    let refused = plane.request_as("nobody", "GET", "/api/v1/namespaces/shop/configmaps", None).await.unwrap_err();
    assert!(refused.contains("403"), "{refused}");

    plane.request("DELETE", "/api/v1/namespaces/shop", None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while plane.request("GET", "/api/v1/namespaces/shop", None).await.is_ok() {
        assert!(Instant::now() < deadline, "the namespace never went");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("namespace gone at {:?}", started.elapsed());
    let dir = plane.dir().to_path_buf();
    if std::env::var_os("KEEP_LOG").is_some() {
        let _ = std::fs::copy(dir.join("kube-controller-manager.log"), "/tmp/kcm.log");
    }
    drop(plane);
    assert!(!dir.exists(), "its files go with it");
}
