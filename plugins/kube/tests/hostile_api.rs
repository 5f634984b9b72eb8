//! Hostile Kubernetes API answers: whatever a server (or a proxy pretending to be one) sends —
//! wrong JSON shapes, truncated bodies, odd status codes, discovery documents that make no
//! sense — every action ends with an error or a success within its step's time, never a panic
//! or a hang. The answers come from a scripted server; the kubeconfig points at it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use drover_api::testing::{self, Route, ScriptedHttp};
use drover_api::{Action, StepContext};

fn action(name: &str) -> Arc<dyn Action> {
    drover_kube::actions().into_iter().find(|a| a.info().name == name).unwrap()
}

/// Site `dr`, its kubeconfig pointing at the scripted server.
fn site(server: &ScriptedHttp, dir: &std::path::Path, budget: Duration) -> StepContext {
    let kubeconfig = dir.join("kubeconfig");
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "dr",
        "clusters": [{ "name": "dr", "cluster": { "server": server.url() } }],
        "users": [{ "name": "dr", "user": { "token": "hostile-test-token" } }],
        "contexts": [{ "name": "dr", "context": { "cluster": "dr", "user": "dr" } }],
    });
    std::fs::write(&kubeconfig, serde_json::to_vec(&config).unwrap()).unwrap();
    let sites = BTreeMap::from([("dr".to_string(), json!({ "kube": { "kubeconfig": kubeconfig, "context": "dr" } }))]);
    testing::context(sites, budget)
}

fn step(which: usize) -> (&'static str, serde_json::Value) {
    let deployment = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web", "namespace": "shop" },
                             "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "web" } },
                                       "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "web", "image": "nginx" }] } } } });
    let steps = [
        ("kube.check", json!({ "site": "dr", "namespaces": ["shop"] })),
        ("kube.apply", json!({ "site": "dr", "inline": [deployment] })),
        ("kube.scale", json!({ "site": "dr", "namespaces": ["shop"], "replicas": 0 })),
        ("kube.wait", json!({ "site": "dr", "namespaces": ["shop"], "interval": "50ms" })),
        ("kube.delete", json!({ "site": "dr", "kinds": ["Deployment"], "namespaces": ["shop"], "names": ["web"] })),
        ("kube.fence", json!({ "site": "dr", "namespaces": ["shop"] })),
    ];
    steps[which % steps.len()].clone()
}

/// Discovery as a real API server answers it, so that hostile answers reach the actions' own
/// reading of objects and lists (and, without it, the discovery client's).
fn discovery() -> Vec<Route> {
    let resources = |gv: &str, list: serde_json::Value| {
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list }).to_string()
    };
    let resource = |name: &str, kind: &str, namespaced: bool| {
        json!({ "name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"] })
    };
    vec![
        ("/api".into(), (200, r#"{"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}"#.into())),
        ("/apis".into(), (200, json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [{ "name": "apps",
            "versions": [{ "groupVersion": "apps/v1", "version": "v1" }], "preferredVersion": { "groupVersion": "apps/v1", "version": "v1" } },
            { "name": "batch", "versions": [{ "groupVersion": "batch/v1", "version": "v1" }], "preferredVersion": { "groupVersion": "batch/v1", "version": "v1" } }] }).to_string())),
        ("/api/v1".into(), (200, resources("v1", json!([resource("namespaces", "Namespace", false), resource("pods", "Pod", true),
            resource("services", "Service", true), resource("persistentvolumeclaims", "PersistentVolumeClaim", true)])))),
        ("/apis/apps/v1".into(), (200, resources("apps/v1", json!([resource("deployments", "Deployment", true),
            resource("deployments/scale", "Scale", true), resource("statefulsets", "StatefulSet", true),
            resource("replicasets", "ReplicaSet", true), resource("daemonsets", "DaemonSet", true)])))),
        ("/apis/batch/v1".into(), (200, resources("batch/v1", json!([resource("jobs", "Job", true), resource("cronjobs", "CronJob", true)])))),
    ]
}

fn run(script: Vec<(u16, String)>, real_discovery: bool, which: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let routes = if real_discovery { discovery() } else { vec![] };
        let server = ScriptedHttp::routed(routes, script).await;
        let dir = tempfile::tempdir().unwrap();
        let ctx = site(&server, dir.path(), Duration::from_millis(800));
        let (name, with) = step(which);
        action(name).check_params(&with).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let ran = tokio::time::timeout(Duration::from_secs(10), action(name).run(&ctx, &with)).await;
        let ran = ran.unwrap_or_else(|_| panic!("{name} did not end within the step's budget"));
        if let Err(e) = ran {
            assert!(!e.message.is_empty(), "{name}: an error says what happened");
        }
        let planned = tokio::time::timeout(Duration::from_secs(10), action(name).plan(&ctx, &with)).await;
        assert!(planned.is_ok(), "{name}: the plan did not end");
    });
}

/// What a broken or hostile server might send: generic breakage, this API's shapes gone wrong,
/// or any text at all.
fn body() -> impl Strategy<Value = String> {
    let shapes: Vec<&str> = testing::BROKEN_JSON.iter().copied().chain([
        r#"{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}"#,
        r#"{"kind": "Status", "status": "Failure", "reason": 7, "code": "x", "details": []}"#,
        r#"{"kind": "APIVersions", "versions": ["v1"]}"#,
        r#"{"kind": "APIGroupList", "groups": [{"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}"#,
        r#"{"kind": "APIGroupList", "groups": [{"name": null, "versions": "apps/v1"}]}"#,
        r#"{"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [{"name": "deployments", "namespaced": true, "kind": "Deployment", "verbs": ["get", "list", "patch", "delete"]}, {"name": "deployments/scale", "namespaced": true, "kind": "Scale", "verbs": ["get", "patch"]}]}"#,
        r#"{"kind": "APIResourceList", "groupVersion": 3, "resources": {}}"#,
        r#"{"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": [{"metadata": {"name": "shop"}}]}"#,
        r#"{"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"continue": "again"}, "items": [{"metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": -5}, "status": {"readyReplicas": "two"}}]}"#,
        r#"{"kind": "DeploymentList", "items": null}"#,
        r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop", "annotations": 5}, "spec": {"replicas": 99999999999999999999}}"#,
        r#"{"items": [{"metadata": null}, 3, "x"]}"#,
    ]).collect();
    prop_oneof![4 => proptest::sample::select(shapes).prop_map(str::to_string), 1 => "\\PC{0,200}"]
}

/// The codes the API documents, or any at all.
fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        proptest::sample::select(vec![200, 201, 204, 400, 401, 403, 404, 409, 410, 422, 429, 500, 503]),
        100u16..600
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    #[test]
    fn any_answer_ends_in_an_error_or_success_never_a_panic_or_hang(
        script in proptest::collection::vec((status(), body()), 1..8),
        real_discovery in proptest::bool::weighted(0.8),
        which in 0usize..6,
    ) {
        run(script, real_discovery, which);
    }
}

#[tokio::test]
async fn a_proxy_answering_instead_of_the_api_server_is_named_as_such() {
    let login_page = (200, "<html><body>Sign in to the corporate proxy</body></html>".to_string());
    let server = ScriptedHttp::routed(discovery(), vec![login_page]).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = site(&server, dir.path(), Duration::from_secs(5));
    let err = action("kube.check").run(&ctx, &json!({ "site": "dr", "namespaces": ["shop"] })).await.unwrap_err();
    assert_eq!(err.kind, drover_api::ErrorKind::Permanent, "{err:?}");
    assert!(err.message.contains("the answer is not what the Kubernetes API returns"), "{}", err.message);
    let hint = err.hint.unwrap_or_default();
    assert!(hint.starts_with(&format!("is {}/ the cluster's API server?", server.url())), "{hint}");
}

/// Found by the property above in CI: a LIST whose items are not all objects made `kube.scale`
/// panic while naming each item's kind. The page is unreadable, as it is to `kubectl`.
#[tokio::test]
async fn a_list_whose_items_are_not_objects_is_an_error_not_a_panic() {
    let odd_items = (200, r#"{"items": [{"metadata": null}, 3, "x"]}"#.to_string());
    let server = ScriptedHttp::routed(discovery(), vec![odd_items]).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = site(&server, dir.path(), Duration::from_secs(5));
    let scale_down = json!({ "site": "dr", "namespaces": ["shop"], "replicas": 0 });
    let err = action("kube.scale").run(&ctx, &scale_down).await.unwrap_err();
    assert!(err.message.contains("list "), "the error names the LIST: {}", err.message);
}

/// A 404 on the first page of a LIST says the kind is not served; on a later page (a proxy
/// losing the way, an API server restarted behind a balancer) the objects read so far are not
/// the list, and acting on them would skip the rest.
#[tokio::test]
async fn a_list_cut_short_by_a_404_after_its_first_page_is_an_error() {
    let first_page = (
        200,
        r#"{"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"continue": "page-2"},
        "items": [{"metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 2}}]}"#
            .to_string(),
    );
    let not_found = (
        404,
        r#"{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}"#.to_string(),
    );
    // One LIST gets the first page and asks for the next; every other answer is a 404.
    let server = ScriptedHttp::routed(discovery(), vec![first_page, not_found]).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = site(&server, dir.path(), Duration::from_secs(5));
    let scale_down = json!({ "site": "dr", "namespaces": ["shop"], "replicas": 0 });
    let err = action("kube.scale").run(&ctx, &scale_down).await.unwrap_err();
    assert!(err.message.contains("list "), "the error names the LIST: {}", err.message);
}
