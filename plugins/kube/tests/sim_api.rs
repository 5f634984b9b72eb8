//! The Kubernetes API simulator answers like an API server: discovery, verbs, server-set
//! fields, conflicts, status kept apart, dry runs, CRDs, selectors, paging, `Status` errors.

use std::time::Duration;

use serde_json::{Value, json};

use drover_kube_sim::{Cluster, Settings};

struct Api {
    c: Cluster,
    http: reqwest::Client,
}

async fn api() -> Api {
    let settings =
        Settings { ready_delay: Duration::from_millis(50), namespace_delete_delay: Duration::from_millis(50) };
    // The controller's delays follow a clock the tests advance: exact, however loaded the machine.
    let c = Cluster::start_with_clock(0, "t0ken", settings, drover_sim_kit::Clock::manual()).await.unwrap();
    let ca = reqwest::Certificate::from_pem(c.ca_pem().as_bytes()).unwrap();
    Api { http: reqwest::Client::builder().add_root_certificate(ca).build().unwrap(), c }
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>, content_type: &str) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.c.url()))
            .bearer_auth(self.c.token())
            .header("content-type", content_type);
        if let Some(b) = body {
            req = req.body(if content_type.contains("yaml") {
                serde_yaml::to_string(&b).unwrap()
            } else {
                b.to_string()
            });
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, "application/json").await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body), "application/json").await
    }
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": name, "labels": { "app": name } },
            "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } },
                      "template": { "metadata": { "labels": { "app": name } }, "spec": { "containers": [{ "name": "app", "image": "nginx:1" }] } } },
            "status": { "readyReplicas": 99 } })
}

#[tokio::test]
async fn discovery_lists_groups_and_resources() {
    let a = api().await;
    let (_, v) = a.get("/version").await;
    assert_eq!(v["major"], "1");
    let (_, core) = a.get("/api/v1").await;
    let pods = core["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap();
    assert_eq!((pods["kind"].as_str(), pods["namespaced"].as_bool()), (Some("Pod"), Some(true)));
    assert!(core["resources"].as_array().unwrap().iter().any(|r| r["name"] == "pods/status"));
    let (_, groups) = a.get("/apis").await;
    assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "apps"));
    let (code, body) = a.get("/apis/nope.example.com/v1").await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
}

#[tokio::test]
async fn requests_need_the_bearer_token() {
    let a = api().await;
    let resp = a.http.get(format!("{}/api/v1/namespaces", a.c.url())).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!((body["kind"].as_str(), body["reason"].as_str()), (Some("Status"), Some("Unauthorized")));
}

#[tokio::test]
async fn create_sets_server_fields_ignores_status_and_refuses_duplicates() {
    let a = api().await;
    let (code, d) = a.post("/apis/apps/v1/namespaces/default/deployments", deployment("web", 2)).await;
    assert_eq!(code, 201, "{d}");
    let meta = &d["metadata"];
    assert!(meta["uid"].is_string() && meta["resourceVersion"].is_string() && meta["creationTimestamp"].is_string());
    assert_eq!((meta["generation"].as_i64(), meta["namespace"].as_str()), (Some(1), Some("default")));
    assert_eq!(d["status"], json!({}), "status is the controllers' to write");
    let (code, e) = a.post("/apis/apps/v1/namespaces/default/deployments", deployment("web", 2)).await;
    assert_eq!((code, e["reason"].as_str()), (409, Some("AlreadyExists")));
    assert_eq!(e["message"], "deployments.apps \"web\" already exists");
    let (code, e) = a.post("/apis/apps/v1/namespaces/missing/deployments", deployment("web", 2)).await;
    assert_eq!((code, e["message"].as_str()), (404, Some("namespaces \"missing\" not found")));
    let (code, e) = a.post("/api/v1/namespaces/default/configmaps", json!({ "data": {} })).await;
    assert_eq!((code, e["reason"].as_str()), (422, Some("Invalid")));
    let (code, e) = a.get("/apis/apps/v1/namespaces/default/deployments/nope").await;
    assert_eq!((code, e["message"].as_str()), (404, Some("deployments.apps \"nope\" not found")));
}

#[tokio::test]
async fn updates_check_resource_version_and_bump_generation_on_spec_change() {
    let a = api().await;
    let (_, d) = a.post("/apis/apps/v1/namespaces/default/deployments", deployment("web", 1)).await;
    let mut stale = d.clone();
    let mut changed = d.clone();
    changed["spec"]["replicas"] = json!(3);
    let (code, v2) =
        a.call("PUT", "/apis/apps/v1/namespaces/default/deployments/web", Some(changed), "application/json").await;
    assert_eq!(code, 200, "{v2}");
    assert_eq!(v2["metadata"]["generation"], 2);
    assert_ne!(v2["metadata"]["resourceVersion"], d["metadata"]["resourceVersion"]);
    stale["spec"]["replicas"] = json!(5);
    let (code, e) =
        a.call("PUT", "/apis/apps/v1/namespaces/default/deployments/web", Some(stale), "application/json").await;
    assert_eq!((code, e["reason"].as_str()), (409, Some("Conflict")));
}

#[tokio::test]
async fn patch_types_and_dry_run() {
    let a = api().await;
    a.post("/apis/apps/v1/namespaces/default/deployments", deployment("web", 1)).await;
    let url = "/apis/apps/v1/namespaces/default/deployments/web";
    let (code, v) =
        a.call("PATCH", url, Some(json!({ "spec": { "replicas": 4 } })), "application/merge-patch+json").await;
    assert_eq!((code, v["spec"]["replicas"].as_i64()), (200, Some(4)));
    let (_, v) = a
        .call(
            "PATCH",
            url,
            Some(json!([{ "op": "replace", "path": "/spec/replicas", "value": 2 }])),
            "application/json-patch+json",
        )
        .await;
    assert_eq!(v["spec"]["replicas"], 2);
    let sm = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": "nginx:2" }] } } } });
    let (_, v) = a.call("PATCH", url, Some(sm), "application/strategic-merge-patch+json").await;
    assert_eq!(v["spec"]["template"]["spec"]["containers"], json!([{ "name": "app", "image": "nginx:2" }]));
    let (code, v) = a
        .call(
            "PATCH",
            &format!("{url}?dryRun=All"),
            Some(json!({ "spec": { "replicas": 9 } })),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!((code, v["spec"]["replicas"].as_i64()), (200, Some(9)));
    let (_, now) = a.get(url).await;
    assert_eq!(now["spec"]["replicas"], 2, "a dry run changes nothing");
    let (code, _) =
        a.post("/api/v1/namespaces/default/configmaps?dryRun=All", json!({ "metadata": { "name": "c" } })).await;
    assert_eq!(code, 201);
    assert_eq!(a.get("/api/v1/namespaces/default/configmaps/c").await.0, 404);
}

#[tokio::test]
async fn server_side_apply_creates_then_merges_and_records_the_manager() {
    let a = api().await;
    let url = "/api/v1/namespaces/default/configmaps/settings?fieldManager=drover";
    let cm =
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings" }, "data": { "a": "1" } });
    let (code, v) = a.call("PATCH", url, Some(cm), "application/apply-patch+yaml").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["metadata"]["managedFields"][0]["manager"], "drover");
    let cm2 =
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings" }, "data": { "b": "2" } });
    let (_, v) = a.call("PATCH", url, Some(cm2.clone()), "application/apply-patch+yaml").await;
    assert_eq!(v["data"], json!({ "a": "1", "b": "2" }));
    let rv = v["metadata"]["resourceVersion"].clone();
    let (_, again) = a.call("PATCH", url, Some(cm2), "application/apply-patch+yaml").await;
    assert_eq!(again["metadata"]["resourceVersion"], rv, "applying the same configuration changes nothing");
    let (code, e) = a
        .call(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/settings",
            Some(json!({})),
            "application/apply-patch+yaml",
        )
        .await;
    assert_eq!((code, e["reason"].as_str()), (422, Some("Invalid")), "fieldManager is required");
}

#[tokio::test]
async fn status_subresource_and_the_readiness_controller() {
    let a = api().await;
    a.post("/apis/apps/v1/namespaces/default/deployments", deployment("web", 3)).await;
    a.c.clock().advance(Duration::from_millis(49));
    let (_, d) = a.get("/apis/apps/v1/namespaces/default/deployments/web").await;
    assert_ne!(d["status"]["readyReplicas"].as_i64(), Some(3), "ready_delay is 50ms: {d}");
    a.c.clock().advance(Duration::from_millis(1));
    let (_, d) = a.get("/apis/apps/v1/namespaces/default/deployments/web").await;
    assert_eq!((d["status"]["readyReplicas"].as_i64(), d["status"]["availableReplicas"].as_i64()), (Some(3), Some(3)));
    let mut edited = d.clone();
    edited["status"]["readyReplicas"] = json!(0);
    edited["spec"]["replicas"] = json!(7);
    let (_, v) = a
        .call("PUT", "/apis/apps/v1/namespaces/default/deployments/web/status", Some(edited), "application/json")
        .await;
    assert_eq!(
        (v["status"]["readyReplicas"].as_i64(), v["spec"]["replicas"].as_i64()),
        (Some(0), Some(3)),
        "/status changes status only"
    );
    let pvc = json!({ "metadata": { "name": "data" }, "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } } });
    a.post("/api/v1/namespaces/default/persistentvolumeclaims", pvc).await;
    a.c.clock().advance(Duration::from_millis(50));
    let (_, p) = a.get("/api/v1/namespaces/default/persistentvolumeclaims/data").await;
    assert_eq!(p["status"]["phase"], "Bound");
}

#[tokio::test]
async fn crds_register_their_resources() {
    let a = api().await;
    let crd = json!({ "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.example.com" },
        "spec": { "group": "example.com", "scope": "Namespaced", "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
                  "versions": [{ "name": "v1", "served": true, "storage": true, "schema": { "openAPIV3Schema": { "type": "object" } } }] } });
    let (code, c) = a.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd).await;
    assert_eq!(code, 201);
    assert_eq!(
        c["status"]["conditions"][0],
        json!({ "type": "Established", "status": "True", "reason": "InitialNamesAccepted" })
    );
    let (_, d) = a.get("/apis/example.com/v1").await;
    assert_eq!(d["resources"][0]["kind"], "Widget");
    let (code, w) = a
        .post(
            "/apis/example.com/v1/namespaces/default/widgets",
            json!({ "metadata": { "name": "w1" }, "spec": { "size": 3 } }),
        )
        .await;
    assert_eq!((code, w["kind"].as_str()), (201, Some("Widget")));
}

#[tokio::test]
async fn lists_filter_by_labels_and_fields_and_page() {
    let a = api().await;
    for (i, tier) in ["web", "web", "db"].iter().enumerate() {
        a.post(
            "/api/v1/namespaces/default/configmaps",
            json!({ "metadata": { "name": format!("c{i}"), "labels": { "tier": tier } } }),
        )
        .await;
    }
    let (_, l) = a.get("/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dweb").await;
    assert_eq!(l["items"].as_array().unwrap().len(), 2);
    assert_eq!(l["kind"], "ConfigMapList");
    let (_, l) = a.get("/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dc2").await;
    assert_eq!(l["items"][0]["metadata"]["labels"]["tier"], "db");
    let mut names = vec![];
    let mut next = Some("/api/v1/configmaps?limit=2".to_string());
    while let Some(path) = next {
        let (_, page) = a.get(&path).await;
        names.extend(
            page["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        next = page["metadata"]["continue"].as_str().map(|c| format!("/api/v1/configmaps?limit=2&continue={c}"));
    }
    assert_eq!(names, vec!["c0", "c1", "c2"]);
}

#[tokio::test]
async fn deleting_a_namespace_terminates_then_removes_its_contents() {
    let a = api().await;
    a.post("/api/v1/namespaces", json!({ "metadata": { "name": "shop" } })).await;
    a.post("/api/v1/namespaces/shop/configmaps", json!({ "metadata": { "name": "c" } })).await;
    let (code, ns) = a.call("DELETE", "/api/v1/namespaces/shop", None, "application/json").await;
    assert_eq!((code, ns["status"]["phase"].as_str()), (200, Some("Terminating")));
    a.c.clock().advance(Duration::from_millis(50));
    assert_eq!(a.get("/api/v1/namespaces/shop").await.0, 404);
    assert_eq!(a.get("/api/v1/namespaces/shop/configmaps/c").await.0, 404);
}

#[tokio::test]
async fn the_scale_subresource_reads_and_sets_replicas() {
    let a = api().await;
    a.post("/apis/apps/v1/namespaces/default/deployments", deployment("web", 2)).await;
    let url = "/apis/apps/v1/namespaces/default/deployments/web/scale";
    let (code, sc) = a.get(url).await;
    assert_eq!((code, sc["kind"].as_str(), sc["spec"]["replicas"].as_i64()), (200, Some("Scale"), Some(2)));
    let (code, sc) =
        a.call("PATCH", url, Some(json!({ "spec": { "replicas": 0 } })), "application/merge-patch+json").await;
    assert_eq!((code, sc["spec"]["replicas"].as_i64()), (200, Some(0)));
    let (_, d) = a.get("/apis/apps/v1/namespaces/default/deployments/web").await;
    assert_eq!(d["spec"]["replicas"], 0);
    let (code, e) = a.call("PUT", url, Some(json!({ "spec": { "replicas": -1 } })), "application/json").await;
    assert_eq!((code, e["reason"].as_str()), (422, Some("Invalid")));
    let (_, core) = a.get("/apis/apps/v1").await;
    assert!(core["resources"].as_array().unwrap().iter().any(|r| r["name"] == "deployments/scale"));
}

#[tokio::test]
async fn injected_faults_throttle_fail_delay_and_drop() {
    use drover_kube_sim::{Fault, FaultKind};
    let a = api().await;
    let fault = |kind| Fault {
        server: None,
        method: Some("GET".into()),
        path: Some("/configmaps".into()),
        kind,
        remaining: Some(1),
        share: 1.0,
    };
    a.c.inject(fault(FaultKind::Throttle(3)));
    let resp = a
        .http
        .get(format!("{}/api/v1/namespaces/default/configmaps", a.c.url()))
        .bearer_auth(a.c.token())
        .send()
        .await
        .unwrap();
    assert_eq!((resp.status().as_u16(), resp.headers()["retry-after"].to_str().unwrap()), (429, "3"));
    assert_eq!(a.get("/api/v1/namespaces/default/configmaps").await.0, 200, "one request only");
    a.c.inject(fault(FaultKind::ServerError));
    let (code, e) = a.get("/api/v1/namespaces/default/configmaps").await;
    assert_eq!((code, e["reason"].as_str()), (500, Some("InternalError")));
    a.c.inject(fault(FaultKind::Latency(Duration::from_millis(200))));
    let started = std::time::Instant::now();
    a.get("/api/v1/namespaces/default/configmaps").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    a.c.inject(fault(FaultKind::Drop));
    let dropped =
        a.http.get(format!("{}/api/v1/namespaces/default/configmaps", a.c.url())).bearer_auth(a.c.token()).send().await;
    assert!(dropped.is_err(), "the connection closes without an answer");
}

#[tokio::test]
async fn apply_conflicts_between_managers_need_force() {
    let a = api().await;
    let base = "/api/v1/namespaces/default/configmaps/shared";
    let cm = |v: &str| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "shared" }, "data": { "mode": v } });
    let (code, _) =
        a.call("PATCH", &format!("{base}?fieldManager=alice"), Some(cm("a")), "application/apply-patch+yaml").await;
    assert_eq!(code, 200);
    let (code, e) =
        a.call("PATCH", &format!("{base}?fieldManager=drover"), Some(cm("b")), "application/apply-patch+yaml").await;
    assert_eq!((code, e["reason"].as_str()), (409, Some("Conflict")));
    assert_eq!(e["message"], "Apply failed with 1 conflict: conflict with \"alice\": .data.mode");
    let (code, v) = a
        .call("PATCH", &format!("{base}?fieldManager=drover&force=true"), Some(cm("b")), "application/apply-patch+yaml")
        .await;
    assert_eq!((code, v["data"]["mode"].as_str()), (200, Some("b")));
    let alice =
        v["metadata"]["managedFields"].as_array().unwrap().iter().find(|f| f["manager"] == "alice").unwrap().clone();
    assert_eq!(alice["fieldsV1"], json!({}), "forcing moved the field to drover");
    // Setting the same value another manager owns is not a conflict.
    let (code, _) =
        a.call("PATCH", &format!("{base}?fieldManager=carol"), Some(cm("b")), "application/apply-patch+yaml").await;
    assert_eq!(code, 200);
}

/// The simulator agrees with a real API server where tests meet both (each point was found by
/// running the same test against the real one; `regressions.rs` has the real side).
mod agrees_with_the_real_api_server {
    use super::*;

    #[tokio::test]
    async fn node_ports_are_one_range_for_the_whole_cluster() {
        let c = Cluster::start(0, "t", Settings::default()).await.unwrap();
        c.with_store(|s| {
            let ns = s.find("", "v1", "namespaces").unwrap();
            let svc = s.find("", "v1", "services").unwrap();
            for n in ["shop", "shop-dr"] {
                s.create(&ns, None, json!({ "metadata": { "name": n } }), false).unwrap();
            }
            let service = |ns: &str, port: Option<i64>| {
                let mut v = json!({ "metadata": { "name": "web", "namespace": ns },
                                    "spec": { "type": "NodePort", "ports": [{ "port": 80 }] } });
                if let Some(p) = port {
                    v["spec"]["ports"][0]["nodePort"] = json!(p);
                }
                v
            };
            let first = s.create(&svc, Some("shop"), service("shop", None), false).unwrap();
            let picked = first["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
            assert!((30000..=32767).contains(&picked));
            let clash = s.create(&svc, Some("shop-dr"), service("shop-dr", Some(picked)), true).unwrap_err();
            assert_eq!(clash.code, 422);
            assert!(clash.message.ends_with(&format!(
                "spec.ports[0].nodePort: Invalid value: {picked}: provided port is already allocated"
            )));
            let second = s.create(&svc, Some("shop-dr"), service("shop-dr", None), false).unwrap();
            assert_ne!(second["spec"]["ports"][0]["nodePort"].as_i64().unwrap(), picked);
        });
    }

    #[tokio::test]
    async fn a_field_of_the_wrong_type_in_an_apply_is_a_500_and_a_dry_run_into_a_missing_namespace_a_404() {
        let c = Cluster::start(0, "t", Settings::default()).await.unwrap();
        c.with_store(|s| {
            let ns = s.find("", "v1", "namespaces").unwrap();
            s.create(&ns, None, json!({ "metadata": { "name": "shop" } }), false).unwrap();
            let d = s.find("apps", "v1", "deployments").unwrap();
            let body = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web", "namespace": "shop" },
                               "spec": { "replicas": "three" } });
            let by = drover_kube_sim::store::Applier { manager: Some("drover"), force: true };
            let e = s.apply(&d, Some("shop"), "web", &body, by, false).unwrap_err();
            assert_eq!(e.code, 500);
            assert!(e.message.starts_with("failed to create typed patch object (apps/v1, Kind=Deployment): .spec.replicas: expected numeric"), "{}", e.message);
            let mut elsewhere = body.clone();
            elsewhere["metadata"]["namespace"] = json!("billing");
            elsewhere["spec"]["replicas"] = json!(1);
            let by = drover_kube_sim::store::Applier { manager: Some("drover"), force: true };
            let e = s.apply(&d, Some("billing"), "web", &elsewhere, by, true).unwrap_err();
            assert_eq!(e.code, 404, "{}", e.message);
        });
    }

    #[tokio::test]
    async fn a_plain_patch_records_its_field_manager_and_an_apply_conflicts_with_it() {
        let c = Cluster::start(0, "t", Settings::default()).await.unwrap();
        c.with_store(|s| {
            let ns = s.find("", "v1", "namespaces").unwrap();
            s.create(&ns, None, json!({ "metadata": { "name": "shop" } }), false).unwrap();
            let d = s.find("apps", "v1", "deployments").unwrap();
            let body = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web", "namespace": "shop" },
                               "spec": { "replicas": 3 } });
            let apply = |s: &mut drover_kube_sim::store::Store, replicas: i64| {
                let mut b = body.clone();
                b["spec"]["replicas"] = json!(replicas);
                s.apply(&d, Some("shop"), "web", &b, drover_kube_sim::store::Applier { manager: Some("drover"), force: false }, false)
            };
            apply(s, 3).unwrap();
            let how = |m: Option<&str>| drover_kube_sim::store::Write { status_only: false, dry: false, manager: m.map(String::from) };
            s.patch(&d, Some("shop"), "web", "application/merge-patch+json", &json!({ "spec": { "replicas": 0 } }), how(None)).unwrap();
            let web = s.get(&d, Some("shop"), "web").unwrap();
            let managers: Vec<&str> = web["metadata"]["managedFields"].as_array().unwrap().iter().map(|m| m["manager"].as_str().unwrap()).collect();
            assert!(managers.contains(&"unknown"), "{managers:?}");
            s.patch(&d, Some("shop"), "web", "application/merge-patch+json", &json!({ "spec": { "replicas": 1 } }), how(Some("drover-scale"))).unwrap();
            let e = apply(s, 5).unwrap_err();
            assert_eq!(e.code, 409);
            assert!(e.message.contains("conflict with \"drover-scale\""), "{}", e.message);
        });
    }
}

/// A WATCH from a LIST's version streams what changed after it — writes and the controller's
/// status changes alike, each with a newer version — metadata only when asked, and ends at
/// `timeoutSeconds` with a BOOKMARK; from a version whose events are gone, one ERROR 410
/// Expired, as the API server answers.
#[tokio::test]
async fn watches_stream_changes_after_a_version_and_expire_like_the_api_server() {
    let a = api().await;
    a.post("/apis/apps/v1/namespaces/default/deployments", deployment("web", 1)).await;
    a.post("/apis/apps/v1/namespaces/default/deployments", deployment("api", 1)).await;
    let (_, list) = a.get("/apis/apps/v1/namespaces/default/deployments?limit=1").await;
    let from = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let watch = a
        .http
        .get(format!(
            "{}/apis/apps/v1/namespaces/default/deployments?watch=true&resourceVersion={from}&timeoutSeconds=1&allowWatchBookmarks=true&labelSelector=app%3Dweb",
            a.c.url()
        ))
        .bearer_auth(a.c.token())
        .header("accept", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
        .send();
    let change = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let label = json!({ "metadata": { "labels": { "tier": "front" } } });
        a.call(
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/web",
            Some(label),
            "application/merge-patch+json",
        )
        .await;
        // Ready by the controller's own task: nobody asks for the object.
        a.c.clock().advance(Duration::from_millis(50));
    };
    let (answer, ()) = tokio::join!(watch, change);
    let answer = answer.unwrap();
    assert_eq!(answer.status(), 200);
    let events: Vec<Value> = answer.text().await.unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["MODIFIED", "MODIFIED", "BOOKMARK"], "{events:#?}");
    assert_eq!(events[0]["object"]["metadata"]["labels"]["tier"], "front");
    assert_eq!(events[0]["object"]["kind"], "PartialObjectMetadata");
    assert!(events[0]["object"].get("spec").is_none(), "metadata only: {}", events[0]);
    let version = |e: &Value| e["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap();
    assert!(from.parse::<u64>().unwrap() < version(&events[0]));
    assert!(version(&events[0]) < version(&events[1]), "the controller's change is a write of its own");
    assert!(version(&events[1]) <= version(&events[2]));

    // Twenty thousand changes later the first version's events are no longer kept.
    a.c.with_store(|s| {
        let cm = s.find("", "v1", "configmaps").unwrap();
        for i in 0..20_001 {
            s.create(&cm, Some("default"), json!({ "metadata": { "name": format!("c{i}") } }), false).unwrap();
        }
    });
    let (status, gone) = a.get(&format!("/apis/apps/v1/deployments?watch=1&resourceVersion={from}")).await;
    assert_eq!(status, 200);
    assert_eq!((gone["type"].as_str(), gone["object"]["code"].as_i64()), (Some("ERROR"), Some(410)), "{gone}");
    assert_eq!(gone["object"]["reason"], "Expired");
}
