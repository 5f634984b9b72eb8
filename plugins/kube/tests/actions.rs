//! The Kubernetes actions against a real control plane (kube-apiserver with etcd, controllers,
//! scheduler and kwok's fake nodes — `common::site`), reached the way an operator's drover
//! reaches a cluster: a kubeconfig file, a context, a bearer token, TLS — as a user bound only
//! to the roles `drover rbac` prints. The tests of passing faults (5xx, 429, dropped
//! connections, latency) use the simulator, which can produce them on demand.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{Site, find, real_site, real_site_watching, sim_site, sim_site_with, site};
use drover_api::testing;
use drover_kube_sim::{Fault, FaultKind};

fn deployment(ns: &str, name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": ns, "labels": { "app": "shop" } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } },
                          "spec": { "containers": [{ "name": name, "image": "registry.example/shop:1" }] } }
        }
    })
}

fn namespace(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } })
}

fn shop() -> Vec<Value> {
    vec![
        deployment("shop", "web", 3),
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings", "namespace": "shop" },
                "data": { "currency": "EUR" } }),
        namespace("shop"),
    ]
}

#[tokio::test]
async fn apply_creates_in_install_order_then_a_second_run_changes_nothing() {
    let east = site().await;
    let plan = east.plan("kube.apply", json!({ "site": "east", "inline": shop() })).await;
    assert!(plan.summary.contains("3 to create, 0 to update, 0 unchanged"), "{}", plan.summary);
    assert!(plan.changes.iter().any(|c| c.starts_with("create Deployment shop/web")), "{:?}", plan.changes);
    assert!(east.get("", "v1", "namespaces", None, "shop").is_none(), "a plan changes nothing");

    let out = east.run("kube.apply", json!({ "site": "east", "inline": shop() })).await.unwrap();
    assert_eq!(out["applied"], 3);
    assert_eq!(out["namespaces"], json!(["shop"]));
    // Rolled out: the controllers have nothing left to write on it.
    east.eventually("web available", Duration::from_secs(60), |s| {
        s.deployment("shop", "web")["status"]["availableReplicas"] == 3
    })
    .await;
    let web = east.deployment("shop", "web");
    let managers: Vec<&str> =
        web["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
    assert!(managers.contains(&"drover"), "{managers:?}");
    let version = web["metadata"]["resourceVersion"].clone();

    let plan = east.plan("kube.apply", json!({ "site": "east", "inline": shop() })).await;
    assert!(plan.summary.contains("0 to create, 0 to update, 3 unchanged"), "{}", plan.summary);
    east.run("kube.apply", json!({ "site": "east", "inline": shop() })).await.unwrap();
    assert_eq!(east.deployment("shop", "web")["metadata"]["resourceVersion"], version, "re-applying changed nothing");

    let mut bigger = shop();
    bigger[0]["spec"]["replicas"] = json!(5);
    let plan = east.plan("kube.apply", json!({ "site": "east", "inline": bigger })).await;
    assert_eq!(plan.changes, ["update Deployment shop/web (inline[0])"]);
}

fn cart_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "carts.shop.example.com" },
        "spec": { "group": "shop.example.com", "scope": "Namespaced",
                  "names": { "plural": "carts", "singular": "cart", "kind": "Cart" },
                  "versions": [{ "name": "v1", "served": true, "storage": true,
                                 "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }] }
    })
}

#[tokio::test]
async fn a_crd_and_its_custom_resources_go_in_one_apply() {
    let east = site().await;
    let crd = cart_crd();
    let cart = json!({ "apiVersion": "shop.example.com/v1", "kind": "Cart", "metadata": { "name": "c1", "namespace": "shop" },
                       "spec": { "items": 2 } });
    let with = json!({ "site": "east", "inline": [cart, crd, namespace("shop")] });
    let plan = east.plan("kube.apply", with.clone()).await;
    assert!(
        plan.changes.contains(&"create (its CRD is in this apply) Cart shop/c1 (inline[0])".to_string()),
        "{plan:?}"
    );

    let out = east.run("kube.apply", with).await.unwrap();
    assert_eq!(out["applied"], 3);
    assert_eq!(east.get("shop.example.com", "v1", "carts", Some("shop"), "c1").unwrap()["spec"]["items"], 2);
}

#[tokio::test]
async fn manifests_come_from_folders_relative_to_the_runbook_and_bad_ones_change_nothing() {
    let east = site().await;
    let app = east.dir.path().join("manifests/shop");
    std::fs::create_dir_all(&app).unwrap();
    let yaml = |v: &Value| serde_yaml::to_string(v).unwrap();
    std::fs::write(app.join("00-namespace.yaml"), yaml(&namespace("shop"))).unwrap();
    std::fs::write(
        app.join("web.yaml"),
        format!("{}---\n{}", yaml(&deployment("shop", "web", 2)), yaml(&deployment("shop", "api", 1))),
    )
    .unwrap();
    std::fs::write(app.join("README.md"), "not a manifest").unwrap();
    let out = east.run("kube.apply", json!({ "site": "east", "manifests": ["manifests/shop"] })).await.unwrap();
    assert_eq!(out["applied"], 3);

    std::fs::write(app.join("zz-broken.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {}\n").unwrap();
    let err =
        east.run("kube.apply", json!({ "site": "east", "manifests": ["manifests/shop"], "namespace": "other" })).await;
    let err = err.unwrap_err();
    assert!(err.message.ends_with("zz-broken.yaml:1: the object has no metadata.name"), "{}", err.message);
    assert!(east.get("", "v1", "namespaces", None, "other").is_none());
}

#[tokio::test]
async fn conflicts_with_another_field_manager_are_reported_per_object_and_force_takes_over() {
    let east = site().await;
    east.run("kube.apply", json!({ "site": "east", "inline": shop() })).await.unwrap();
    // Someone else owns `replicas` now (kubectl apply --server-side by hand at 3 a.m.).
    let theirs = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web", "namespace": "shop" },
                         "spec": { "replicas": 7, "selector": { "matchLabels": { "app": "web" } },
                                   "template": { "metadata": { "labels": { "app": "web" } },
                                                 "spec": { "containers": [{ "name": "web", "image": "registry.example/shop:1" }] } } } });
    east.apply_as("kubectl", &[theirs]).await;
    let mut mine = shop();
    mine[1]["data"]["currency"] = json!("USD");
    let err = east.run("kube.apply", json!({ "site": "east", "inline": mine })).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.message.starts_with("1 of 3 objects were not applied: Deployment shop/web (inline[0])"),
        "{}",
        err.message
    );
    assert!(err.message.contains("409"), "{}", err.message);
    assert!(err.hint.as_deref().unwrap().contains("force: true"));
    let settings = east.get("", "v1", "configmaps", Some("shop"), "settings").unwrap();
    assert_eq!(settings["data"]["currency"], "USD", "the other objects went in");

    east.run("kube.apply", json!({ "site": "east", "inline": mine, "force": true })).await.unwrap();
    assert_eq!(east.deployment("shop", "web")["spec"]["replicas"], 3);
}

fn cron_job(ns: &str, name: &str) -> Value {
    json!({ "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": { "name": name, "namespace": ns, "labels": { "app": "shop" } },
        "spec": { "schedule": "0 2 * * *", "jobTemplate": { "spec": { "template": { "spec": {
            "restartPolicy": "OnFailure", "containers": [{ "name": "job", "image": "registry.example/job:1" }] } } } } } })
}

/// Two Deployments (each with the ReplicaSet its controller makes and owns) and a CronJob.
async fn shop_with_workloads(east: &Site) {
    let inline = json!([
        namespace("shop"),
        deployment("shop", "web", 3),
        deployment("shop", "api", 2),
        cron_job("shop", "nightly")
    ]);
    east.run("kube.apply", json!({ "site": "east", "inline": inline })).await.unwrap();
    east.eventually("web's ReplicaSet", Duration::from_secs(60), |s| {
        s.deployment("shop", "web")["status"]["availableReplicas"] == 3
    })
    .await;
}

#[tokio::test]
async fn scale_to_zero_remembers_the_replicas_on_the_objects_and_restore_brings_them_back() {
    let east = site().await;
    shop_with_workloads(&east).await;
    let down = json!({ "site": "east", "namespaces": ["shop"], "replicas": 0 });
    let out = east.run("kube.scale", down.clone()).await.unwrap();
    assert_eq!(out["changed"], 3, "two deployments and the cron job; the owned replica sets are left to their owner");
    assert_eq!(
        out["previous"],
        json!({ "CronJob shop/nightly": false, "Deployment shop/api": 2, "Deployment shop/web": 3 })
    );
    let web = east.deployment("shop", "web");
    assert_eq!(web["spec"]["replicas"], 0);
    assert_eq!(web["metadata"]["annotations"]["drover.io/replicas-before-scale"], "3");
    let cron = east.get("batch", "v1", "cronjobs", Some("shop"), "nightly").unwrap();
    assert_eq!(cron["spec"]["suspend"], true);

    let again = east.run("kube.scale", down).await.unwrap();
    assert_eq!(again["changed"], 0);
    assert_eq!(east.deployment("shop", "web")["metadata"]["annotations"]["drover.io/replicas-before-scale"], "3");

    let up = json!({ "site": "east", "namespaces": ["shop"], "restore": true });
    let plan = east.plan("kube.scale", up.clone()).await;
    assert!(plan.changes.contains(&"Deployment shop/web: 0 → 3".to_string()), "{:?}", plan.changes);
    east.run("kube.scale", up).await.unwrap();
    let web = east.deployment("shop", "web");
    assert_eq!(web["spec"]["replicas"], 3);
    assert!(web["metadata"]["annotations"].get("drover.io/replicas-before-scale").is_none());
    assert_eq!(east.deployment("shop", "api")["spec"]["replicas"], 2);
    assert_eq!(east.get("batch", "v1", "cronjobs", Some("shop"), "nightly").unwrap()["spec"]["suspend"], false);
}

#[tokio::test]
async fn a_fenced_namespace_stays_down_until_the_fence_is_lifted() {
    let east = site().await;
    shop_with_workloads(&east).await;
    let fence = json!({ "site": "east", "namespaces": ["shop"], "labels": "app=shop" });
    let out = east.run("kube.fence", fence.clone()).await.unwrap();
    assert_eq!(out["changed"], 3);
    let ns = east.get("", "v1", "namespaces", None, "shop").unwrap();
    assert_eq!(ns["metadata"]["labels"]["drover.io/fenced"], "true");
    assert!(
        ns["metadata"]["annotations"]["drover.io/fenced-by"].as_str().unwrap().starts_with("run run step step-1 at ")
    );

    let err =
        east.run("kube.scale", json!({ "site": "east", "namespaces": ["shop"], "restore": true })).await.unwrap_err();
    assert!(err.message.contains("namespaces shop are fenced"), "{}", err.message);
    assert_eq!(east.deployment("shop", "web")["spec"]["replicas"], 0);

    // Rollback of the fencing step lifts it.
    find("kube.fence").undo(&east.ctx(Duration::from_secs(20)), &fence, &out).await.unwrap();
    let ns = east.get("", "v1", "namespaces", None, "shop").unwrap();
    assert!(ns["metadata"]["labels"].get("drover.io/fenced").is_none());
    assert_eq!(east.deployment("shop", "web")["spec"]["replicas"], 3);
}

/// Simulator (its request log is in order): the fence reads the workloads while it marks the
/// namespace, but scales none of them down before the mark is written.
#[tokio::test]
async fn a_fence_marks_the_namespace_before_it_scales_anything_down() {
    let east = sim_site().await;
    shop_with_workloads(&east).await;
    east.sim().with_store(|s| s.requests.clear());
    let out = east.run("kube.fence", json!({ "site": "east", "namespaces": ["shop"] })).await.unwrap();
    assert_eq!(out["changed"], 3);
    let requests: Vec<String> = east.sim().with_store(|s| s.requests.iter().map(|(m, p)| format!("{m} {p}")).collect());
    let marked = requests.iter().position(|r| r == "PATCH /api/v1/namespaces/shop").expect("the mark");
    let scaled: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.starts_with("PATCH /apis/") && r.contains("/namespaces/shop/"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(scaled.len(), 3, "{requests:#?}");
    assert!(scaled.iter().all(|&i| i > marked), "a workload went down before the mark: {requests:#?}");
}

#[tokio::test]
async fn drovers_own_writes_refuse_to_start_workloads_in_a_fenced_namespace() {
    let east = site().await;
    shop_with_workloads(&east).await;
    east.run("kube.fence", json!({ "site": "east", "namespaces": ["shop"] })).await.unwrap();

    // A forced apply used to bring the fenced apps back up.
    let apply = json!({ "site": "east", "inline": [deployment("shop", "web", 3)], "force": true });
    let plan = east.plan("kube.apply", apply.clone()).await;
    assert!(plan.failed_checks().any(|c| c.name == "fenced namespaces stay down"), "{plan:?}");
    let err = east.run("kube.apply", apply).await.unwrap_err();
    assert!(
        err.message.contains("namespaces shop are fenced") && err.message.contains("Deployment shop/web"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("`fenced: hold`"));
    assert_eq!(east.deployment("shop", "web")["spec"]["replicas"], 0, "refused, changing nothing");

    // A restore into the fenced namespace is refused too.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), serde_yaml::to_string(&deployment("shop", "web", 4)).unwrap()).unwrap();
    let restore = json!({ "site": "east", "from": { "manifests": [dir.path()] } });
    let err = east.run("kube.restore", restore.clone()).await.unwrap_err();
    assert!(err.message.contains("namespaces shop are fenced"), "{}", err.message);
    assert_eq!(east.deployment("shop", "web")["spec"]["replicas"], 0);

    // `fenced: hold` writes it down, remembering what it asked for; lifting the fence brings it up.
    let mut held = restore;
    held["fenced"] = json!("hold");
    east.run("kube.restore", held).await.unwrap();
    let web = east.deployment("shop", "web");
    assert_eq!(web["spec"]["replicas"], 0);
    assert_eq!(web["metadata"]["annotations"]["drover.io/replicas-before-scale"], "4");
    east.run("kube.fence", json!({ "site": "east", "namespaces": ["shop"], "unfence": true })).await.unwrap();
    assert_eq!(east.deployment("shop", "web")["spec"]["replicas"], 4);

    // And a step may say so explicitly.
    east.run("kube.fence", json!({ "site": "east", "namespaces": ["shop"] })).await.unwrap();
    let forced = json!({ "site": "east", "inline": [deployment("shop", "web", 2)], "force": true, "fenced": "ignore" });
    east.run("kube.apply", forced).await.unwrap();
    assert_eq!(east.deployment("shop", "web")["spec"]["replicas"], 2);
}

#[tokio::test]
async fn wait_reports_progress_until_workloads_are_ready() {
    let east = site().await;
    shop_with_workloads(&east).await;
    // kwok runs the job's pod to completion.
    let job = json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "migrate", "namespace": "shop" },
                      "spec": { "template": { "spec": { "restartPolicy": "Never",
                                "containers": [{ "name": "migrate", "image": "registry.example/migrate:1" }] } } } });
    east.run("kube.apply", json!({ "site": "east", "inline": [job] })).await.unwrap();
    let out =
        east.run("kube.wait", json!({ "site": "east", "namespaces": ["shop"], "interval": "50ms" })).await.unwrap();
    assert_eq!(out["ready"], 3);
    assert_eq!(out["objects"], json!(["Deployment shop/api", "Deployment shop/web", "Job shop/migrate"]));

    let missing = json!({ "site": "east", "namespaces": ["shop"], "names": ["checkout"], "kinds": ["Deployment"], "interval": "50ms" });
    let err = find("kube.wait").run(&east.ctx(Duration::from_millis(1500)), &missing).await.unwrap_err();
    assert!(err.message.ends_with("not ready in time: no objects match yet"), "{}", err.message);
}

/// Real control plane: the Cart CRD is deleted (a botched uninstall) while a step waits for
/// its Carts to be ready. Nothing of the kind will ever be ready: the wait fails as soon as
/// the server stops serving it, saying so, instead of reading the 404s as "no objects yet"
/// and waiting out its whole time.
#[tokio::test]
async fn a_wait_whose_kind_stops_being_served_fails_at_once_naming_the_deleted_crd() {
    let east = site().await;
    let cart = json!({ "apiVersion": "shop.example.com/v1", "kind": "Cart", "metadata": { "name": "c1", "namespace": "shop" },
                       "spec": { "items": 2 } });
    east.run("kube.apply", json!({ "site": "east", "inline": [cart_crd(), namespace("shop"), cart] })).await.unwrap();
    let wait = json!({ "site": "east", "namespaces": ["shop"], "kinds": ["Cart"], "for": { "condition": "Ready" },
                       "interval": "100ms" });
    let crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/carts.shop.example.com";
    let delete_the_crd = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        east.plane().request("DELETE", crd, None).await.unwrap();
    };
    let (waited, ()) = tokio::join!(east.run("kube.wait", wait), delete_the_crd);
    let err = waited.unwrap_err();
    assert!(
        err.message.contains("the cluster no longer serves carts.shop.example.com")
            && err.message.contains("was its CustomResourceDefinition deleted?"),
        "{}",
        err.message
    );
    assert!(err.hint.as_deref().is_some_and(|h| h.contains("kubectl get crd carts.shop.example.com")), "{err:?}");
}

/// One object to wait on: its kind, the resource LISTs count, and its path.
struct Labelled {
    kind: &'static str,
    resource: &'static str,
    path: &'static str,
}

const WEB: Labelled =
    Labelled { kind: "Deployment", resource: "deployments", path: "/apis/apps/v1/namespaces/shop/deployments/web" };
const CART: Labelled =
    Labelled { kind: "Cart", resource: "carts", path: "/apis/shop.example.com/v1/namespaces/shop/carts/c1" };

/// A wait in `shop` on `what` until an operator labels it live, 3 s from now; how many LISTs
/// of its kind in `shop` the API server served meanwhile, by its own counter; the step's notes.
async fn wait_until_labelled_live_on(
    east: &Site,
    what: &Labelled,
) -> (Result<drover_api::Outputs, drover_api::ActionError>, u64, Vec<String>) {
    let lists = || east.plane().requests_served("LIST", what.resource, "namespace");
    let before = lists().await.unwrap();
    let wait = json!({ "site": "east", "namespaces": ["shop"], "kinds": [what.kind],
                       "for": { "field": ".metadata.labels.stage", "equals": "live" } });
    let label_it = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let live = json!({ "metadata": { "labels": { "stage": "live" } } });
        east.plane().request("PATCH", what.path, Some(live)).await.unwrap();
    };
    let ((waited, notes), ()) = tokio::join!(east.run_recording("kube.wait", wait), label_it);
    (waited, lists().await.unwrap() - before, notes)
}

/// The web Deployment of the shop, labelled live 3 s from now.
async fn wait_until_labelled_live(
    east: &Site,
) -> (Result<drover_api::Outputs, drover_api::ActionError>, u64, Vec<String>) {
    east.run("kube.apply", json!({ "site": "east", "inline": shop() })).await.unwrap();
    wait_until_labelled_live_on(east, &WEB).await
}

/// Real control plane: a wait is told of changes by the run's watch of the kind across the
/// cluster (as `kubectl wait` watches) and looks again then, instead of LISTing its namespace
/// every 50 ms or so — ~60 LISTs in these 3 s, a fleet's thousands a second.
#[tokio::test]
async fn a_wait_looks_again_when_the_watch_tells_of_a_change_not_every_few_milliseconds() {
    let east = site().await;
    let (waited, lists, notes) = wait_until_labelled_live(&east).await;
    assert_eq!(waited.unwrap()["objects"], json!(["Deployment shop/web"]));
    assert!(lists <= 8, "{lists} LISTs of deployments in shop while waiting 3 s for one change");
    assert!(notes.is_empty(), "{notes:?}");
}

/// Real control plane, as an identity bound only to `read` (get and list, no watch): the
/// watch is refused, and the wait polls as before — slower to tell, never stuck.
#[tokio::test]
async fn a_wait_by_an_identity_that_may_not_watch_polls_instead() {
    let east = real_site(&["read", "restore"]).await;
    let (waited, lists, notes) = wait_until_labelled_live(&east).await;
    assert_eq!(waited.unwrap()["objects"], json!(["Deployment shop/web"]));
    assert!(lists >= 20, "only {lists} LISTs in 3 s: was it told of the change after all?");
    assert_eq!(
        notes,
        [
            "deployments.apps is polled, not watched: this identity may not watch it across the cluster (more LISTs for the API server, changes noticed later); bind it to `drover rbac --family workloads`"
        ]
    );
}

/// The cart `c1`, labelled live 3 s from now, waited on by an identity bound to `workloads`
/// (and `restore`, to put the cart up) with these custom kinds watched; the LISTs of carts.
async fn wait_for_a_cart_labelled_live(watched: &[&str]) -> u64 {
    let east = real_site_watching(&["workloads", "restore"], watched).await;
    let cart = json!({ "apiVersion": "shop.example.com/v1", "kind": "Cart", "metadata": { "name": "c1", "namespace": "shop" },
                       "spec": { "items": 2 } });
    east.run("kube.apply", json!({ "site": "east", "inline": [cart_crd(), namespace("shop"), cart] })).await.unwrap();
    let (waited, lists, notes) = wait_until_labelled_live_on(&east, &CART).await;
    assert_eq!(waited.unwrap()["objects"], json!(["Cart shop/c1"]));
    let polled = "carts.shop.example.com is polled, not watched: this identity may not watch it across the cluster";
    let said = notes.iter().any(|n| {
        n.starts_with(polled)
            && n.ends_with("`drover rbac --family workloads --watch carts.shop.example.com` grants it")
    });
    assert_eq!(said, watched.is_empty(), "the step says why it polls, and only then: {notes:?}");
    lists
}

/// Real control plane: the workloads family watches the built-in kinds; a custom kind's wait
/// polls unless the identity may watch it too — the rule `drover rbac --watch
/// carts.shop.example.com` adds, with which it is told of the change instead.
#[tokio::test]
async fn a_wait_on_a_custom_kind_is_told_of_changes_once_drover_rbac_grants_its_watch() {
    let (polled, watched) =
        tokio::join!(wait_for_a_cart_labelled_live(&[]), wait_for_a_cart_labelled_live(&["carts.shop.example.com"]));
    assert!(polled >= 20, "only {polled} LISTs in 3 s without the rule: was it watched after all?");
    assert!(watched <= 8, "{watched} LISTs of carts in shop while waiting 3 s for one change, watch granted");
}

/// Simulator (it counts the LISTs it serves): as `kubectl wait` does, each object is waited
/// on until it is ready once. A namespace whose workloads are all ready is not listed again
/// while another one's are still coming up — a fleet's 500 waits listed five kinds in each
/// namespace on every look until the last object was ready.
#[tokio::test]
async fn wait_does_not_look_again_at_what_was_ready() {
    let east = sim_site_with(drover_kube_sim::Settings {
        ready_delay: Duration::from_millis(600),
        namespace_delete_delay: Duration::from_millis(200),
    })
    .await;
    let early = json!([namespace("early"), deployment("early", "web", 1)]);
    east.run("kube.apply", json!({ "site": "east", "inline": early })).await.unwrap();
    east.eventually("early/web ready", Duration::from_secs(10), |s| {
        s.deployment("early", "web")["status"]["readyReplicas"] == 1
    })
    .await;
    let late = json!([namespace("late"), deployment("late", "api", 1)]);
    east.run("kube.apply", json!({ "site": "east", "inline": late })).await.unwrap();

    let wait = json!({ "site": "east", "namespaces": ["early", "late"], "kinds": ["Deployment"], "interval": "50ms" });
    let out = east.run("kube.wait", wait).await.unwrap();
    assert_eq!(out["ready"], 2);
    assert_eq!(out["objects"], json!(["Deployment early/web", "Deployment late/api"]));
    let lists = |ns: &str| {
        let path = format!("/apis/apps/v1/namespaces/{ns}/deployments");
        east.sim().with_store(|s| s.requests.iter().filter(|(m, p)| m == "GET" && *p == path).count())
    };
    assert!(lists("late") >= 5, "the late namespace is looked at until ready ({})", lists("late"));
    assert_eq!(lists("early"), 1, "the namespace that was ready is listed once");
}

/// Simulator (it records the requests it serves). A restore reads what exists of its
/// cluster-scoped objects by name: one cluster-wide LIST returns every object of the kind the
/// cluster has, and a fleet's restores each listed all the PersistentVolumes the earlier ones
/// had made (the 500-application lab's third tier restored 2.7 times slower than its first).
#[tokio::test]
async fn a_restore_reads_its_cluster_scoped_objects_by_name_not_the_whole_cluster() {
    let east = sim_site().await;
    let role = |name: &str| {
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": { "name": name },
                "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"] }] })
    };
    let others: Vec<Value> = (0..40).map(|i| role(&format!("other-app-{i}"))).collect();
    east.run("kube.apply", json!({ "site": "east", "inline": others })).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let objects = [namespace("shop"), shop()[1].clone(), role("shop-reader")];
    for (i, o) in objects.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.yaml")), serde_yaml::to_string(o).unwrap()).unwrap();
    }
    let restore = json!({ "site": "east", "from": { "manifests": [dir.path()] } });
    let out = east.run("kube.restore", restore.clone()).await.unwrap();
    assert_eq!(out["restored"], 3, "{out:?}");
    let again = east.run("kube.restore", restore).await.unwrap();
    assert_eq!((again["restored"].clone(), again["unchanged"].clone()), (json!(0), json!(3)), "{again:?}");
    let asked =
        |path: &str| east.sim().with_store(|s| s.requests.iter().filter(|(m, p)| m == "GET" && p == path).count());
    assert_eq!(asked("/apis/rbac.authorization.k8s.io/v1/clusterroles"), 0, "no list of the cluster's 41 roles");
    assert!(asked("/apis/rbac.authorization.k8s.io/v1/clusterroles/shop-reader") >= 1);
}

/// Simulator (it records the requests it serves). Restores planned at the same moment — a
/// fleet's preflight plans 500 — open one connection and ask once which resource serves a
/// kind: each asked alone, and 500 fetched the cluster's `/api/v1` resource list at once.
#[tokio::test]
async fn restores_planned_at_the_same_moment_ask_once_which_resource_serves_a_kind() {
    let east = sim_site().await;
    // Written straight into the simulator: drover's first connection is the plans'.
    east.sim().with_store(|s| {
        let ns = s.find("", "v1", "namespaces").unwrap();
        s.create(&ns, None, namespace("shop"), false).unwrap();
        let cm = s.find("", "v1", "configmaps").unwrap();
        let settings = json!({ "metadata": { "name": "settings", "namespace": "shop" }, "data": { "a": "1" } });
        s.create(&cm, Some("shop"), settings, false).unwrap();
    });
    let restore = json!({ "site": "east", "from": { "live": { "site": "east", "namespaces": ["shop"] } } });
    let before = east.sim().with_store(|s| s.requests.len());
    let plans = futures::future::join_all((0..20).map(|_| east.plan("kube.restore", restore.clone()))).await;
    assert!(plans.iter().all(|p| p.failed_checks().next().is_none()), "{:?}", plans[0]);
    let asked =
        east.sim().with_store(|s| s.requests.iter().skip(before).filter(|(m, p)| m == "GET" && p == "/api/v1").count());
    // Once per kind asked about (Namespace, ConfigMap) and once for the discovery of every type.
    assert!(asked <= 3, "20 plans asked for the core API's resources {asked} times");
}

/// Namespaces `shop-0` … `shop-{n-1}` on the simulator, each with a ConfigMap and a claim of
/// the storage class `fast` (which the cluster has).
fn seed_apps(east: &Site, n: usize) -> Vec<String> {
    let apps: Vec<String> = (0..n).map(|i| format!("shop-{i}")).collect();
    east.sim().with_store(|s| {
        let ns = s.find("", "v1", "namespaces").unwrap();
        let (cm, pvc) = (s.find("", "v1", "configmaps").unwrap(), s.find("", "v1", "persistentvolumeclaims").unwrap());
        let sc = s.find("storage.k8s.io", "v1", "storageclasses").unwrap();
        let fast = json!({ "metadata": { "name": "fast" }, "provisioner": "csi.trident.netapp.io" });
        s.create(&sc, None, fast, false).unwrap();
        for (i, app) in apps.iter().enumerate() {
            s.create(&ns, None, namespace(app), false).unwrap();
            let settings =
                json!({ "metadata": { "name": "settings", "namespace": app }, "data": { "n": i.to_string() } });
            s.create(&cm, Some(app), settings, false).unwrap();
            let data = json!({ "metadata": { "name": "data", "namespace": app },
                               "spec": { "storageClassName": "fast", "accessModes": ["ReadWriteOnce"],
                                         "resources": { "requests": { "storage": "1Gi" } } } });
            s.create(&pvc, Some(app), data, false).unwrap();
        }
    });
    apps
}

/// Plan a restore from the live primary into each of `apps` at the same moment, the first
/// GET whose path contains `slow` kept on its way `for_ms` while the others ask; each plan is
/// checked to hold its own namespace's objects only. The GET paths the simulator served.
async fn plan_restores_at_once(east: &Site, apps: &[String], slow: &str, for_ms: u64) -> Vec<String> {
    east.sim().inject(Fault {
        method: Some("GET".into()),
        path: Some(slow.into()),
        remaining: Some(1),
        ..Fault::always(FaultKind::Latency(Duration::from_millis(for_ms)))
    });
    let before = east.sim().with_store(|s| s.requests.len());
    let plans = futures::future::join_all(apps.iter().map(|app| {
        let restore = json!({ "site": "east", "from": { "live": { "site": "east", "namespaces": [app] } } });
        east.plan("kube.restore", restore)
    }))
    .await;
    for (app, plan) in apps.iter().zip(&plans) {
        assert!(plan.failed_checks().next().is_none(), "{plan:?}");
        let by_namespace = plan.changes.iter().find(|c| c.starts_with("by namespace:")).unwrap();
        // Its Namespace object and the storage class, its ConfigMap and claim.
        assert_eq!(by_namespace, &format!("by namespace: (cluster) 2, {app} 2"), "{app} was given another's objects");
        let by_kind = plan.changes.iter().find(|c| c.starts_with("by kind:")).unwrap();
        assert!(by_kind.contains("ConfigMap 1") && by_kind.contains("StorageClass 1"), "{app}: {by_kind}");
    }
    east.sim()
        .with_store(|s| s.requests.iter().skip(before).filter(|(m, _)| m == "GET").map(|(_, p)| p.clone()).collect())
}

/// Plan these restores at the same moment; each must plan without a failed check and with a
/// summary ending `summary_ends`. How many `method` requests to `path` the simulator served.
async fn plan_at_once_counting(
    east: &Site,
    restores: impl Iterator<Item = Value>,
    summary_ends: &str,
    method: &str,
    path: &str,
) -> usize {
    let before = east.sim().with_store(|s| s.requests.len());
    let plans = futures::future::join_all(restores.map(|restore| east.plan("kube.restore", restore))).await;
    for plan in &plans {
        assert!(plan.failed_checks().next().is_none(), "{plan:?}");
        assert!(plan.summary.ends_with(summary_ends), "{}", plan.summary);
    }
    east.sim().with_store(|s| s.requests.iter().skip(before).filter(|(m, p)| m == method && p == path).count())
}

/// The LISTs of ConfigMaps among `served`: across the cluster, and namespace by namespace.
fn configmap_lists(served: &[String]) -> (usize, usize) {
    let across = served.iter().filter(|p| p.as_str() == "/api/v1/configmaps").count();
    let each = served.iter().filter(|p| p.starts_with("/api/v1/namespaces/") && p.ends_with("/configmaps")).count();
    (across, each)
}

/// Simulator (it records the requests it serves; a latency fault keeps the first LIST of
/// ConfigMaps on its way while the others ask). Restores planned at the same moment — a
/// fleet's preflight — read the primary with one LIST of a kind across the cluster instead of
/// one per namespace, and each is given its own namespace's objects only; the storage class
/// their claims name is read once for all of them.
#[tokio::test]
async fn restores_planned_at_the_same_moment_read_the_primary_with_one_list_per_kind() {
    let east = sim_site().await;
    let apps = seed_apps(&east, 24);
    let served = plan_restores_at_once(&east, &apps, "/configmaps", 300).await;
    let (across, each) = configmap_lists(&served);
    assert_eq!(across, 1, "one LIST of ConfigMaps across the cluster for the 23 that asked meanwhile");
    assert!(each <= 2, "{each} namespaces' ConfigMaps listed one by one");
}

/// Simulator, as above, with the first read of the storage class kept on its way (a second,
/// long enough for every restore to have read its namespace): the 24 restores, which each
/// read it from the source and then from the target (here the same cluster) to plan its
/// write, are answered by GETs sent after they asked — for each purpose one for the first,
/// one or two for the others as they arrive (each had read it on its own: 48 GETs).
#[tokio::test]
async fn restores_planned_at_the_same_moment_share_their_reads_of_a_storage_class() {
    let east = sim_site().await;
    let apps = seed_apps(&east, 24);
    let served = plan_restores_at_once(&east, &apps, "/storageclasses/fast", 1000).await;
    let reads = served.iter().filter(|p| p.as_str() == "/apis/storage.k8s.io/v1/storageclasses/fast").count();
    assert!(reads <= 6, "the storage class was read {reads} times");
}

/// Simulator, as above, with the first dry run of the storage class kept on its way: the 24
/// restores each dry-run the same storage class with the same body to tell an update from no
/// change (24 identical requests); those who asked meanwhile share the next one's answer, and
/// each is told it is unchanged.
#[tokio::test]
async fn restores_planned_at_the_same_moment_share_their_dry_runs_of_a_storage_class() {
    let east = sim_site().await;
    let apps = seed_apps(&east, 24);
    east.sim().inject(Fault {
        method: Some("PATCH".into()),
        path: Some("/storageclasses/fast".into()),
        remaining: Some(1),
        ..Fault::always(FaultKind::Latency(Duration::from_millis(300)))
    });
    let restores =
        apps.iter().map(|app| json!({ "site": "east", "from": { "live": { "site": "east", "namespaces": [app] } } }));
    let dry_runs =
        plan_at_once_counting(&east, restores, ": 4 unchanged", "PATCH", "/apis/storage.k8s.io/v1/storageclasses/fast")
            .await;
    assert!(dry_runs <= 4, "the storage class was dry-run {dry_runs} times");
}

/// Simulator, as above. A second round of restores — a fleet's next tier, 20 of the 48
/// applications whose ConfigMaps a LIST across the cluster counted — is still served by one
/// LIST across it: 48 small objects cost less than 19 requests (a LIST across the cluster was
/// kept for batches of at least half the namespaces holding the kind, and the tier's were
/// listed one by one).
#[tokio::test]
async fn a_later_tier_of_restores_still_reads_a_kind_with_few_objects_across_the_cluster() {
    let east = sim_site().await;
    let apps = seed_apps(&east, 48);
    let (across, _) = configmap_lists(&plan_restores_at_once(&east, &apps, "/configmaps", 300).await);
    assert_eq!(across, 1, "the first round: the whole fleet");
    let (across, each) = configmap_lists(&plan_restores_at_once(&east, &apps[..20], "/configmaps", 300).await);
    assert_eq!(across, 1, "the tier of 20 after the first asked: one LIST across the cluster");
    assert!(each <= 2, "{each} of the tier's namespaces listed one by one");
}

/// Simulator, as above, with the first read of a namespace kept on its way. The 24 restores
/// each read their namespace three times (at the source, whether the target has it, whether
/// it is fenced there): by a GET each, 72 requests; gathered, the first to ask in each round
/// is answered by a GET, those who asked meanwhile by one LIST of the cluster's namespaces.
#[tokio::test]
async fn restores_planned_at_the_same_moment_read_their_namespaces_with_one_list() {
    let east = sim_site().await;
    let apps = seed_apps(&east, 24);
    let served = plan_restores_at_once(&east, &apps, "/api/v1/namespaces/shop-", 300).await;
    let by_name =
        served.iter().filter(|p| p.strip_prefix("/api/v1/namespaces/").is_some_and(|rest| !rest.contains('/'))).count();
    let listed = served.iter().filter(|p| p.as_str() == "/api/v1/namespaces").count();
    assert!(listed >= 1, "no LIST of namespaces; {by_name} read by name");
    assert!(by_name + listed <= 12, "{by_name} namespaces read by name and {listed} LISTs");
}

/// Simulator (it records the requests it serves). A restore's preflight into a namespace the
/// cluster does not have yet checks each of its objects with one dry-run create in the stand-in
/// namespace: reading it first, or dry-running it where it is bound, can only meet a 404.
#[tokio::test]
async fn a_preflight_into_a_missing_namespace_checks_each_object_with_one_request() {
    let east = sim_site().await;
    let dir = tempfile::tempdir().unwrap();
    let text: Vec<String> = shop().iter().map(|o| serde_yaml::to_string(o).unwrap()).collect();
    std::fs::write(dir.path().join("shop.yaml"), text.join("---\n")).unwrap();
    let before = east.sim().with_store(|s| s.requests.len());
    let plan = east.plan("kube.restore", json!({ "site": "east", "from": { "manifests": [dir.path()] } })).await;
    assert!(plan.failed_checks().next().is_none(), "{plan:?}");
    assert!(plan.summary.contains("3 create"), "{}", plan.summary);
    let into_shop: Vec<(String, String)> = east.sim().with_store(|s| {
        s.requests.iter().skip(before).filter(|(_, p)| p.contains("/namespaces/shop/")).cloned().collect()
    });
    assert!(into_shop.is_empty(), "requests into the missing namespace: {into_shop:?}");
    let checked = east.sim().with_store(|s| {
        s.requests.iter().skip(before).filter(|(m, p)| m == "POST" && p.contains("/namespaces/default/")).count()
    });
    assert_eq!(checked, 2, "the Deployment and the ConfigMap, each dry-run once in `default`");
}

/// Simulator (it records the requests it serves; the first check is kept on its way). 24
/// apps deployed from one template — the same ConfigMap in each of 24 namespaces the cluster
/// does not have yet — are each checked with a dry-run create in the stand-in namespace: the
/// very same request 24 times. Those made while one is on its way share the next one's answer.
#[tokio::test]
async fn identical_checks_of_objects_bound_for_missing_namespaces_share_one_request() {
    let east = sim_site().await;
    let dir = tempfile::tempdir().unwrap();
    let apps: Vec<String> = (0..24).map(|i| format!("tenant-{i}")).collect();
    for app in &apps {
        let settings = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings", "namespace": app },
                               "data": { "currency": "EUR" } });
        std::fs::create_dir_all(dir.path().join(app)).unwrap();
        std::fs::write(dir.path().join(app).join("settings.yaml"), serde_yaml::to_string(&settings).unwrap()).unwrap();
    }
    east.sim().inject(Fault {
        method: Some("POST".into()),
        path: Some("/namespaces/default/configmaps".into()),
        remaining: Some(1),
        ..Fault::always(FaultKind::Latency(Duration::from_millis(300)))
    });
    let restores = apps.iter().map(|app| json!({ "site": "east", "from": { "manifests": [dir.path().join(app)] } }));
    let checks =
        plan_at_once_counting(&east, restores, ": 1 create", "POST", "/api/v1/namespaces/default/configmaps").await;
    assert!(checks <= 4, "the same ConfigMap was checked {checks} times");
}

/// Twenty namespaces, each with a Deployment `web` of 2 replicas.
fn twenty_shops() -> (Vec<String>, Vec<Value>) {
    let apps: Vec<String> = (0..20).map(|i| format!("shop-{i}")).collect();
    let objects = apps.iter().flat_map(|app| [namespace(app), deployment(app, "web", 2)]).collect();
    (apps, objects)
}

/// Scale each of `apps` to zero, all at once, and check each scaled its own.
async fn scale_down_at_once(east: &Site, apps: &[String]) {
    let runs = futures::future::join_all(
        apps.iter().map(|app| east.run("kube.scale", json!({ "site": "east", "namespaces": [app], "replicas": 0 }))),
    )
    .await;
    for (app, run) in apps.iter().zip(runs) {
        let out = run.unwrap_or_else(|e| panic!("{app}: {e:?}"));
        assert_eq!(out["changed"], 1, "{app}: {out:?}");
        let web = east.get("apps", "v1", "deployments", Some(app), "web").unwrap();
        assert_eq!(web["spec"]["replicas"], 0, "{app}");
    }
}

/// Real control plane. Twenty scale-downs at once gather their LISTs of workloads into ones
/// across the cluster (see `drover_kube::lists`): each still finds and scales its own
/// namespace's Deployment only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_scale_downs_at_once_each_scale_their_own_namespace() {
    let east = real_site(&["workloads"]).await;
    let (apps, objects) = twenty_shops();
    east.plane().apply("test-setup", &objects).await.unwrap();
    scale_down_at_once(&east, &apps).await;
}

/// Real control plane. An identity bound only inside its namespaces (a Role in each, no
/// ClusterRole) may not list across the cluster: twenty scale-downs at once are refused that
/// LIST (403) and served namespace by namespace — none fails for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_downs_by_an_identity_bound_inside_their_namespaces_are_served_namespace_by_namespace() {
    let east = real_site(&[]).await;
    let (apps, mut objects) = twenty_shops();
    for app in &apps {
        objects.push(json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": "drover", "namespace": app },
            "rules": [{ "apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "replicasets", "daemonsets"],
                        "verbs": ["get", "list", "patch"] },
                      { "apiGroups": ["batch"], "resources": ["cronjobs", "jobs"], "verbs": ["get", "list", "patch"] }] }));
        objects.push(json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": "drover", "namespace": app },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "drover" },
            "subjects": [{ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "drover" }] }));
    }
    east.plane().apply("test-setup", &objects).await.unwrap();
    scale_down_at_once(&east, &apps).await;
}

/// Real control plane, two identities: one may list namespaces, the other (like the
/// `workloads` family) only get them by name. Twenty namespaces read at the same moment — a
/// fleet's fences each reading its own — are answered by one LIST for the first, and after a
/// refused LIST (403) by a GET each for the other: either way each caller is given its own
/// namespace with its labels, or nothing for one that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_read_at_the_same_moment_are_answered_whether_or_not_the_identity_may_list_them() {
    use drover_controlplane::{ControlPlane, Options, User};
    let users = ["lister", "getter"].map(|name| User { name: name.into(), groups: vec![] }).to_vec();
    let plane = ControlPlane::start(Options { name: "east".into(), users, ..Options::default() }).await.unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("shop-{i}")).collect();
    let mut objects: Vec<Value> = names[..15]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut ns = namespace(name);
            if i % 3 == 0 {
                ns["metadata"]["labels"] = json!({ "drover.io/fenced": "true" });
            }
            ns
        })
        .collect();
    for (user, verbs) in [("lister", json!(["get", "list"])), ("getter", json!(["get"]))] {
        objects.push(json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": format!("namespaces-{user}") },
            "rules": [{ "apiGroups": [""], "resources": ["namespaces"], "verbs": verbs }] }));
        objects.push(json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": format!("namespaces-{user}") },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("namespaces-{user}") },
            "subjects": [{ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user }] }));
    }
    plane.apply("test-setup", &objects).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sites = ["lister", "getter"]
        .map(|user| (user.to_string(), json!({ "kube": { "kubeconfig": plane.kubeconfig(user), "context": "east" } })));
    let ctx = testing::context(sites.into_iter().collect(), Duration::from_secs(30)).with_base_dir(dir.path());
    for user in ["lister", "getter"] {
        let kube = drover_kube::client::Kube::connect(&ctx, user).await.unwrap();
        let kind = kube.kind("v1", "Namespace", false).await.unwrap();
        let read = futures::future::join_all(names.iter().map(|n| kube.get_cluster_scoped(&kind, n))).await;
        for (i, (name, read)) in names.iter().zip(read).enumerate() {
            let read = read.unwrap_or_else(|e| panic!("{user}: {name}: {e}"));
            match read {
                None => assert!(i >= 15, "{user}: {name} exists, yet was read as absent"),
                Some(ns) => {
                    assert!(i < 15, "{user}: {name} does not exist, yet was read");
                    assert_eq!(ns.metadata.name.as_deref(), Some(name.as_str()), "{user}: given another's namespace");
                    let fenced = ns.metadata.labels.as_ref().and_then(|l| l.get("drover.io/fenced")).is_some();
                    assert_eq!(fenced, i % 3 == 0, "{user}: {name}'s labels: {:?}", ns.metadata.labels);
                }
            }
        }
    }
}

/// Simulator (its slow-answer fault keeps a reply on its way). A kind lookup answered "not
/// served" is shared only with those who asked after it was sent: a CRD created while it was
/// in flight serves the kind to whoever asked after the CRD was made.
#[tokio::test]
async fn a_kind_served_since_a_lookup_was_sent_is_found_by_those_who_ask_after() {
    let east = sim_site().await;
    east.sim().inject(Fault {
        method: Some("GET".into()),
        path: Some("/apis/shop.example.com/v1".into()),
        remaining: Some(1),
        ..Fault::always(FaultKind::SlowAnswer(Duration::from_millis(600)))
    });
    let ctx = east.ctx(Duration::from_secs(30));
    let kube = drover_kube::client::Kube::connect(&ctx, "east").await.unwrap();
    let first = kube.serves("shop.example.com/v1", "Cart");
    let second = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        east.sim().with_store(|s| {
            let crds = s.find("apiextensions.k8s.io", "v1", "customresourcedefinitions").unwrap();
            s.create(&crds, None, cart_crd(), false).unwrap();
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        kube.serves("shop.example.com/v1", "Cart").await
    };
    let (first, second) = tokio::join!(first, second);
    assert!(first.unwrap().is_none(), "the first lookup was sent before the CRD existed");
    assert!(second.unwrap().is_some(), "asked after the CRD was made, yet told the kind is not served");
}

/// Simulator: a Job failing needs a pod that fails, which kwok's stages never make; the
/// simulator sets the Job's Failed condition the way the job controller does.
#[tokio::test]
async fn wait_fails_at_once_on_what_waiting_cannot_fix() {
    let east = sim_site().await;
    let job = json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "migrate", "namespace": "shop" },
                      "spec": { "template": { "spec": { "containers": [] } } } });
    east.run("kube.apply", json!({ "site": "east", "inline": [namespace("shop"), job] })).await.unwrap();
    east.sim().with_store(|s| {
        let t = s.find("batch", "v1", "jobs").unwrap();
        let failed = json!({ "status": { "conditions": [{ "type": "Failed", "status": "True", "message": "BackoffLimitExceeded" }] } });
        s.patch(&t, Some("shop"), "migrate", "application/merge-patch+json", &failed, drover_kube_sim::store::Write { status_only: true, dry: false, manager: None })
            .unwrap();
    });
    let err =
        east.run("kube.wait", json!({ "site": "east", "namespaces": ["shop"], "kinds": ["Job"] })).await.unwrap_err();
    assert_eq!(
        err.message.split(": ").skip(1).collect::<Vec<_>>().join(": "),
        "Job shop/migrate: the job failed: BackoffLimitExceeded"
    );
}

#[tokio::test]
async fn delete_refuses_an_empty_selector_and_waits_for_a_namespace_to_go() {
    let east = site().await;
    shop_with_workloads(&east).await;
    let errors =
        find("kube.delete").check_params(&json!({ "site": "east", "kinds": ["Deployment"], "namespaces": ["shop"] }));
    assert_eq!(errors.unwrap_err()[0].message, "refusing to delete with an empty selector");

    let out = east
        .run(
            "kube.delete",
            json!({ "site": "east", "kinds": ["Deployment"], "namespaces": ["shop"], "names": ["api"] }),
        )
        .await
        .unwrap();
    assert_eq!(out["objects"], json!(["Deployment shop/api"]));
    assert!(east.get("apps", "v1", "deployments", Some("shop"), "api").is_none());

    let out =
        east.run("kube.delete", json!({ "site": "east", "kinds": ["Namespace"], "names": ["shop"] })).await.unwrap();
    assert_eq!(out["deleted"], 1);
    assert!(east.get("", "v1", "namespaces", None, "shop").is_none(), "waited until the namespace was gone");
    let again =
        east.run("kube.delete", json!({ "site": "east", "kinds": ["Namespace"], "names": ["shop"] })).await.unwrap();
    assert_eq!(again["deleted"], 0);
}

#[tokio::test]
async fn check_proves_access_without_changing_anything() {
    let east = site().await;
    east.run("kube.apply", json!({ "site": "east", "inline": [namespace("shop")] })).await.unwrap();
    let out = east.run("kube.check", json!({ "site": "east", "namespaces": ["shop"] })).await.unwrap();
    assert_eq!(out["version"], format!("v{}", drover_controlplane::pinned("K8S_VERSION")));
    assert!(east.get("", "v1", "configmaps", Some("shop"), "drover-check").is_none(), "the create was a dry run");

    let err = east.run("kube.check", json!({ "site": "east", "namespaces": ["shop", "billing"] })).await.unwrap_err();
    assert!(err.message.ends_with("namespace billing exists: not found"), "{}", err.message);
}

#[tokio::test]
async fn bad_credentials_fail_at_once_naming_the_kubeconfig_and_context() {
    let east = site().await;
    let text = std::fs::read_to_string(&east.kubeconfig).unwrap().replace(east.plane().token("drover"), "expired");
    std::fs::write(&east.kubeconfig, text).unwrap();
    let err = east.run("kube.check", json!({ "site": "east" })).await.unwrap_err();
    assert!(!err.is_retryable());
    let origin = format!("site `east` (context `east` in {})", east.kubeconfig.display());
    assert!(err.message.starts_with(&origin), "{}", err.message);
    assert!(err.message.contains("401"), "{}", err.message);
    assert!(err.hint.unwrap().contains("rejected the credentials"));

    let sites =
        BTreeMap::from([("east".to_string(), json!({ "kube": { "kubeconfig": east.kubeconfig, "context": "west" } }))]);
    let err =
        find("kube.check").run(&testing::context(sites, Duration::from_secs(5)), &json!({ "site": "east" })).await;
    let err = err.unwrap_err();
    assert!(err.message.contains("context `west` is not in kubeconfig"), "{}", err.message);
    assert!(err.hint.unwrap().contains("contexts there: east"));
}

#[tokio::test]
async fn tls_is_verified_unless_the_site_says_insecure_and_then_the_report_says_so() {
    let east = site().await;
    let original = std::fs::read_to_string(&east.kubeconfig).unwrap();
    let mut config: Value = serde_yaml::from_str(&original).unwrap();
    let cluster = &mut config["clusters"][0]["cluster"];
    cluster.as_object_mut().unwrap().remove("certificate-authority");
    std::fs::write(&east.kubeconfig, serde_yaml::to_string(&config).unwrap()).unwrap();
    let check = |site: Value| {
        let sites = BTreeMap::from([("east".to_string(), site)]);
        let (ctx, recorded) = testing::context_recording(sites, Duration::from_secs(5));
        async move { (find("kube.check").run(&ctx, &json!({ "site": "east" })).await, recorded) }
    };
    let site = json!({ "kube": { "kubeconfig": east.kubeconfig, "context": "east" } });

    // Without the CA the API server's certificate is not trusted.
    let (result, _) = check(site.clone()).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind, drover_api::ErrorKind::Permanent, "{err:?}");
    assert!(err.message.contains("the API server's certificate at https://127.0.0.1:"), "{}", err.message);
    assert!(err.message.contains("is not trusted: "), "{}", err.message);
    assert!(err.hint.unwrap().starts_with("give the cluster's CA in the kubeconfig"));

    // A kubeconfig that skips verification is refused unless the site says so itself.
    config["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = json!(true);
    std::fs::write(&east.kubeconfig, serde_yaml::to_string(&config).unwrap()).unwrap();
    let (result, _) = check(site.clone()).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind, drover_api::ErrorKind::Permanent);
    assert!(err.message.ends_with("the kubeconfig turns TLS verification off (insecure-skip-tls-verify: true)"));
    assert!(err.hint.unwrap().contains("sites.east.kube.insecure: true"));

    let mut insecure = site.clone();
    insecure["kube"]["insecure"] = json!(true);
    let (result, recorded) = check(insecure).await;
    result.unwrap();
    let origin = format!("site `east` (context `east` in {})", east.kubeconfig.display());
    assert_eq!(*recorded.notes.lock().unwrap(), [format!("TLS verification is OFF for {origin}: insecure: true")]);
}

/// Simulator: a real API server does not fail, throttle or drop on demand.
#[tokio::test]
async fn passing_faults_are_retried_in_place_and_429_waits_as_asked() {
    let east = sim_site().await;
    let fault = |kind, remaining| Fault {
        server: None,
        method: Some("PATCH".into()),
        path: None,
        kind,
        remaining: Some(remaining),
        share: 1.0,
    };
    east.sim().inject(fault(FaultKind::ServerError, 2));
    east.sim().inject(fault(FaultKind::Drop, 1));
    east.sim().inject(fault(FaultKind::Latency(Duration::from_millis(300)), 2));
    let out = east.run("kube.apply", json!({ "site": "east", "inline": shop() })).await.unwrap();
    assert_eq!(out["applied"], 3);

    east.sim().clear_faults();
    east.sim().inject(fault(FaultKind::Throttle(1), 1));
    let started = Instant::now();
    east.run("kube.apply", json!({ "site": "east", "inline": shop(), "concurrency": 1 })).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
}

/// Simulator: a real API server does not answer 500 on demand.
#[tokio::test]
async fn a_fault_that_persists_goes_back_to_the_engine_as_retryable() {
    let east = sim_site().await;
    east.sim().inject(Fault {
        server: None,
        method: None,
        path: None,
        kind: FaultKind::ServerError,
        remaining: None,
        share: 1.0,
    });
    let err = east.run("kube.check", json!({ "site": "east" })).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.message.contains("500 InternalError"), "{}", err.message);
}

#[tokio::test]
async fn an_unreachable_cluster_fails_within_the_step_budget_as_retryable() {
    let east = site().await;
    let ctx = east.ctx(Duration::from_secs(3));
    east.plane().stop();
    let started = Instant::now();
    let err = find("kube.scale")
        .run(&ctx, &json!({ "site": "east", "namespaces": ["shop"], "replicas": 0 }))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "gave up within the budget: {:?}", started.elapsed());
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.message.contains("cannot reach the API server"), "{}", err.message);
}
