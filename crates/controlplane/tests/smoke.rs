//! The control plane does what the Kubernetes tests rely on: a Deployment rolls out on kwok's
//! nodes (Pods Running and Ready), a namespace really terminates, a user without RBAC is refused;
//! kwok, should it die, is started again and its nodes keep serving.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kwok_killed_under_a_running_plane_is_started_again_and_pods_still_turn_ready() {
    let plane = ControlPlane::start(Options::default()).await.unwrap();
    let first = plane.pid("kwok").expect("kwok runs");
    // SAFETY: signalling a child this test's control plane started.
    assert_eq!(unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) }, 0);

    let log = plane.dir().join("kwok.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("started again") {
        assert!(
            Instant::now() < deadline,
            "kwok was not started again; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(plane.pid("kwok"), Some(first), "a new kwok process");

    plane.request("POST", "/api/v1/namespaces", Some(json!({ "metadata": { "name": "after" } }))).await.unwrap();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web" },
        "spec": { "containers": [{ "name": "web", "image": "example/web:1" }] }
    });
    while plane.request("POST", "/api/v1/namespaces/after/pods", Some(pod.clone())).await.is_err() {
        assert!(Instant::now() < deadline + Duration::from_secs(20), "the namespace never took a pod");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = plane.request("GET", "/api/v1/namespaces/after/pods/web", None).await.unwrap();
        let ready = p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the pod never turned ready after kwok's restart: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
