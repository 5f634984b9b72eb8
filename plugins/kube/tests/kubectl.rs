//! The real `kubectl` (Debian package `kubectl`) works against the simulator: the simulator
//! is only worth its tests if the tools operators use agree with it.

use std::process::Command;
use std::time::Duration;

use drover_kube_sim::{Cluster, Settings};

const APP: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: registry.example/web:1}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {currency: EUR}
";

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl ({e}); install it: apt-get install kubectl"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl {}: {text}", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_applies_scales_and_deletes() {
    let settings =
        Settings { ready_delay: Duration::from_millis(50), namespace_delete_delay: Duration::from_millis(50) };
    let cluster = Cluster::start(0, "kubectl-token", settings).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, serde_yaml::to_string(&cluster.kubeconfig("lab")).unwrap()).unwrap();
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, APP).unwrap();
    let (config, app) = (config, app.to_str().unwrap().to_string());

    let outputs = tokio::task::spawn_blocking(move || {
        let k = |args: &[&str]| kubectl(&config, args);
        let mut seen = vec![];
        seen.push(k(&["get", "namespaces", "-o", "name"]));
        k(&["create", "namespace", "shop"]);
        seen.push(k(&["apply", "--validate=false", "-f", &app]));
        seen.push(k(&["apply", "--server-side", "--validate=false", "-f", &app]));
        seen.push(k(&[
            "get",
            "deployment",
            "web",
            "-n",
            "shop",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ]));
        k(&["scale", "deployment/web", "-n", "shop", "--replicas=4"]);
        seen.push(k(&["get", "deployment", "web", "-n", "shop", "-o", "jsonpath={.spec.replicas}"]));
        seen.push(k(&["get", "configmaps", "-n", "shop", "-l", "", "-o", "name"]));
        seen.push(k(&["delete", "-f", &app]));
        seen.push(k(&["get", "deployments", "-n", "shop", "-o", "name"]));
        seen
    })
    .await
    .unwrap();

    assert_eq!(outputs[0], "namespace/default\nnamespace/kube-public\nnamespace/kube-system\n");
    assert_eq!(outputs[1], "deployment.apps/web created\nconfigmap/settings created\n");
    assert_eq!(outputs[2], "deployment.apps/web serverside-applied\nconfigmap/settings serverside-applied\n");
    assert_eq!(outputs[3], "kubectl kubectl-last-applied", "server-side apply recorded its field managers");
    assert_eq!(outputs[4], "4");
    assert_eq!(outputs[5], "configmap/settings\n");
    assert_eq!(outputs[6], "deployment.apps \"web\" deleted\nconfigmap \"settings\" deleted\n");
    assert_eq!(outputs[7], "");
    drop(cluster);
}
