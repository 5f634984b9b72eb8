//! What a real kube-apiserver exposed that the simulator hid, each named after what broke.
//! Backend: the real control plane (`common::site`), as the least-privileged `drover` user.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::{find, real_site, site};

fn namespace(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } })
}

fn deployment(ns: &str, name: &str, replicas: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": name, "namespace": ns },
        "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } },
                  "template": { "metadata": { "labels": { "app": name } },
                                "spec": { "containers": [{ "name": name, "image": "registry.example/shop:1" }] } } }
    })
}

fn node_port_service(ns: &str, port: Option<u16>) -> Value {
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "web", "namespace": ns },
        "spec": { "type": "NodePort", "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": 8080 }] }
    });
    if let Some(p) = port {
        svc["spec"]["ports"][0]["nodePort"] = json!(p);
    }
    svc
}

fn restore_copy(from_ns: &str, to_ns: &str) -> Value {
    json!({ "site": "east", "from": { "live": { "site": "east", "namespaces": [from_ns] } },
            "transforms": [{ "namespaces": { from_ns: to_ns } }] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_port_the_cluster_picked_is_not_carried_to_a_second_copy_of_the_app() {
    let east = site().await;
    // kubectl apply without a nodePort: the cluster picks one.
    east.run("kube.apply", json!({ "site": "east", "inline": [namespace("shop"), node_port_service("shop", None)] }))
        .await
        .unwrap();
    let picked = east.get("", "v1", "services", Some("shop"), "web").unwrap()["spec"]["ports"][0]["nodePort"].clone();
    assert!(picked.as_u64().is_some_and(|p| p >= 30000), "{picked}");

    // The same app again on the same cluster (`shop` → `shop-dr`): it used to keep that port
    // and fail with "provided port is already allocated".
    let plan = east.plan("kube.restore", restore_copy("shop", "shop-dr")).await;
    assert!(plan.failed_checks().next().is_none(), "{plan:?}");
    east.run("kube.restore", restore_copy("shop", "shop-dr")).await.unwrap();
    let copy = east.get("", "v1", "services", Some("shop-dr"), "web").unwrap()["spec"]["ports"][0]["nodePort"].clone();
    assert!(copy.as_u64().is_some() && copy != picked, "the copy got a port of its own: {copy} vs {picked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_port_the_owner_chose_is_kept_and_a_clash_shows_in_the_preview() {
    let east = site().await;
    east.run(
        "kube.apply",
        json!({ "site": "east", "inline": [namespace("shop"), node_port_service("shop", Some(30080))] }),
    )
    .await
    .unwrap();
    // drover's apply owns the port (server-side apply): the copy asks for the same one, and the
    // preview — into a namespace that does not exist yet — says it cannot have it.
    let plan = east.plan("kube.restore", restore_copy("shop", "shop-dr")).await;
    let clash =
        plan.failed_checks().find(|c| c.name.contains("Service shop-dr/web")).unwrap_or_else(|| panic!("{plan:?}"));
    assert!(clash.detail.contains("provided port is already allocated"), "{}", clash.detail);
    assert!(east.get("", "v1", "namespaces", None, "shop-dr").is_none(), "a preview changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_into_a_namespace_that_does_not_exist_yet_still_checks_every_object() {
    let east = site().await;
    let mut broken = deployment("shop", "web", json!(2));
    broken["spec"]["selector"]["matchLabels"]["app"] = json!("not-web"); // the template's labels do not match
    let objects = json!([namespace("shop"), broken, deployment("shop", "api", json!(1))]);
    // kube.apply's plan: the namespace comes in the same apply.
    let plan = east.plan("kube.apply", json!({ "site": "east", "inline": objects })).await;
    let failed: Vec<&str> = plan.failed_checks().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, ["server-side dry run of Deployment shop/web (inline[1])"], "{plan:?}");
    let detail = &plan.failed_checks().next().unwrap().detail;
    assert!(detail.contains("`selector` does not match template `labels`"), "{detail}");
    assert!(plan.changes.contains(&"create Deployment shop/api (inline[2])".to_string()), "{:?}", plan.changes);
    assert!(east.get("", "v1", "namespaces", None, "shop").is_none(), "a plan changes nothing");

    // kube.restore's preview of the same objects from manifests, into a cluster without `shop`.
    let dir = tempfile::tempdir().unwrap();
    for (i, o) in objects.as_array().unwrap().iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.yaml")), serde_yaml::to_string(o).unwrap()).unwrap();
    }
    let plan = east.plan("kube.restore", json!({ "site": "east", "from": { "manifests": [dir.path()] } })).await;
    let failed: Vec<&str> = plan.failed_checks().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, ["server-side dry run of Deployment shop/web"], "{plan:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_of_the_wrong_type_fails_that_object_not_the_control_plane() {
    let east = site().await;
    let settings = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings", "namespace": "shop" },
                           "data": { "currency": "EUR" } });
    let objects = json!([namespace("shop"), deployment("shop", "web", json!("three")), settings]);
    let err = east.run("kube.apply", json!({ "site": "east", "inline": objects })).await.unwrap_err();
    // The API server answers 500 for this; it is the object, not an outage.
    assert!(!err.is_retryable(), "{err:?}");
    assert!(
        err.message.starts_with("1 of 3 objects were not applied: Deployment shop/web (inline[1])"),
        "{}",
        err.message
    );
    assert!(err.message.contains("expected numeric"), "{}", err.message);
    assert!(err.hint.unwrap().contains("does not have the type its schema says"));
    assert!(east.get("", "v1", "configmaps", Some("shop"), "settings").is_some(), "the other objects went in");

    // A restore reports it per object, and `allow_partial` lets the rest count.
    let dir = tempfile::tempdir().unwrap();
    let more = json!([deployment("shop", "web", json!("three")), deployment("shop", "api", json!(1))]);
    for (i, o) in more.as_array().unwrap().iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.yaml")), serde_yaml::to_string(o).unwrap()).unwrap();
    }
    let with = json!({ "site": "east", "from": { "manifests": [dir.path()] }, "allow_partial": true });
    let out = east.run("kube.restore", with).await.unwrap();
    assert_eq!(out["restored"], 1);
    let failed = out["failed"][0].as_str().unwrap();
    // A restore creates it (POST), where the API server answers 400 "cannot unmarshal".
    assert!(failed.starts_with("Deployment shop/web: ") && failed.contains("cannot unmarshal string"), "{failed}");
    assert!(failed.contains("400 BadRequest"), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_and_fence_are_recorded_as_drover_not_unknown() {
    let east = site().await;
    east.run(
        "kube.apply",
        json!({ "site": "east", "inline": [namespace("shop"), deployment("shop", "web", json!(3))] }),
    )
    .await
    .unwrap();
    let managers = |v: Value| -> Vec<String> {
        let fields = v["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
        fields.iter().map(|m| m["manager"].as_str().unwrap().to_string()).collect()
    };
    // (Kubernetes 1.37 keeps no managedFields on Namespaces: the fence's mark is not shown.)
    east.run("kube.fence", json!({ "site": "east", "namespaces": ["shop"] })).await.unwrap();
    let web = managers(east.deployment("shop", "web"));
    assert!(web.contains(&"drover-scale".to_string()) && !web.contains(&"unknown".to_string()), "{web:?}");
    east.run("kube.fence", json!({ "site": "east", "namespaces": ["shop"], "unfence": true })).await.unwrap();
    assert!(!managers(east.deployment("shop", "web")).contains(&"unknown".to_string()));
    east.run("kube.scale", json!({ "site": "east", "namespaces": ["shop"], "replicas": 1 })).await.unwrap();

    // An apply that disagrees says who it disagrees with.
    let err = east
        .run("kube.apply", json!({ "site": "east", "inline": [deployment("shop", "web", json!(5))] }))
        .await
        .unwrap_err();
    assert!(err.message.contains("conflict with \"drover-scale\""), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_restore_never_takes_a_bound_volume_from_its_claim() {
    let east = site().await;
    let pv = json!({ "apiVersion": "v1", "kind": "PersistentVolume", "metadata": { "name": "db-data" },
                     "spec": { "capacity": { "storage": "1Gi" }, "accessModes": ["ReadWriteOnce"],
                               "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "manual",
                               "nfs": { "server": "10.0.1.10", "path": "/db" },
                               "claimRef": { "namespace": "shop", "name": "db" } } });
    let pvc = json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": { "name": "db", "namespace": "shop" },
                      "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "volumeName": "db-data",
                                "resources": { "requests": { "storage": "1Gi" } } } });
    east.run("kube.apply", json!({ "site": "east", "inline": [namespace("shop"), pv, pvc] })).await.unwrap();
    east.eventually("the claim binds", Duration::from_secs(60), |s| {
        s.get("", "v1", "persistentvolumes", None, "db-data").unwrap()["status"]["phase"] == "Bound"
    })
    .await;
    let uid_before =
        east.get("", "v1", "persistentvolumes", None, "db-data").unwrap()["spec"]["claimRef"]["uid"].clone();

    let with = json!({ "site": "east", "from": { "live": { "site": "east", "namespaces": ["shop"] } },
                       "include_resources": ["persistentvolumes", "persistentvolumeclaims", "namespaces"],
                       "transforms": [{ "namespaces": { "shop": "shop-dr" } }] });
    let plan = east.plan("kube.restore", with.clone()).await;
    let check = plan
        .failed_checks()
        .find(|c| c.name.contains("PersistentVolume db-data"))
        .unwrap_or_else(|| panic!("{plan:?}"));
    assert!(
        check.detail.contains("is bound to claim shop/db; restoring it for shop-dr/db would take it"),
        "{}",
        check.detail
    );
    let err = east.run("kube.restore", with).await.unwrap_err();
    assert!(err.message.contains("PersistentVolume db-data is bound to claim shop/db"), "{}", err.message);
    let after = east.get("", "v1", "persistentvolumes", None, "db-data").unwrap();
    assert_eq!(after["spec"]["claimRef"]["namespace"], "shop", "the binding is untouched");
    assert_eq!(after["spec"]["claimRef"]["uid"], uid_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_names_the_verb_the_resource_and_the_rule_to_add() {
    // Bound only to `check`: scaling is not allowed.
    let east = real_site(&["check"]).await;
    east.plane().apply("test-setup", &[namespace("shop"), deployment("shop", "web", json!(1))]).await.unwrap();
    let err =
        east.run("kube.scale", json!({ "site": "east", "namespaces": ["shop"], "replicas": 0 })).await.unwrap_err();
    assert!(err.message.contains("403"), "{}", err.message);
    let hint = err.hint.unwrap();
    // Deployments and StatefulSets are listed at once: either may be refused first.
    let kind = if hint.contains("list statefulsets") { "statefulsets" } else { "deployments" };
    assert!(hint.contains(&format!("may not list {kind} in namespace shop")), "{hint}");
    let rule = format!(r#"{{ apiGroups: ["apps"], resources: ["{kind}"], verbs: ["list"] }}"#);
    assert!(hint.contains(&rule), "{hint}");
    assert!(hint.contains("drover rbac --family workloads"), "{hint}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_needs_no_cluster_wide_grant_for_an_identity_bound_inside_its_namespaces() {
    let east = real_site(&[]).await;
    let plane = east.plane();
    plane.apply("test-setup", &[namespace("shop")]).await.unwrap();
    // A Role inside `shop` only: no cluster-scoped read of Namespace objects.
    let role = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": "drover", "namespace": "shop" },
                       "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "create"] }] });
    let binding = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": "drover", "namespace": "shop" },
                          "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "drover" },
                          "subjects": [{ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "drover" }] });
    plane.apply("test-setup", &[role, binding]).await.unwrap();
    let out = east.run("kube.check", json!({ "site": "east", "namespaces": ["shop"] })).await;
    assert!(out.is_ok(), "{out:?}");
    let plan = find("kube.check")
        .plan(&east.ctx(Duration::from_secs(20)), &json!({ "site": "east", "namespaces": ["shop"] }))
        .await
        .unwrap();
    assert!(plan.checks.iter().all(|c| c.ok), "{plan:?}");
}

/// A restore creates what is absent (a POST: the server records drover's fields as an
/// `Update`) and applies over what exists. Restoring again from a source that dropped a field
/// keeps that field and says so; with `new_objects: apply` the objects are created by apply,
/// so the next restore removes it. Either way fields other writers own stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_dropped_from_the_source_is_kept_after_a_create_and_removed_after_an_apply() {
    let east = site().await;
    for (ns, new_objects, region_after) in [("till", "create", json!("eu-west")), ("till-apply", "apply", Value::Null)]
    {
        let dir = tempfile::tempdir().unwrap();
        let write = |data: Value| {
            let settings = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings", "namespace": ns },
                                   "data": data });
            let text = format!(
                "{}---\n{}",
                serde_yaml::to_string(&namespace(ns)).unwrap(),
                serde_yaml::to_string(&settings).unwrap()
            );
            std::fs::write(dir.path().join("till.yaml"), text).unwrap();
        };
        let restore = json!({ "site": "east", "from": { "manifests": [dir.path()] }, "new_objects": new_objects });

        write(json!({ "currency": "EUR", "region": "eu-west" }));
        let out = east.run("kube.restore", restore.clone()).await.unwrap();
        assert_eq!(out["restored"], 2, "{out:?}");
        // Someone else adds a field of their own.
        let label = json!({ "apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": { "name": "settings", "namespace": ns, "labels": { "team": "payments" } } });
        east.apply_as("ops-team", &[label]).await;

        write(json!({ "currency": "USD" }));
        let (out, notes) = east.run_recording("kube.restore", restore.clone()).await;
        out.unwrap();
        let live = east.get("", "v1", "configmaps", Some(ns), "settings").unwrap();
        assert_eq!(live["data"]["currency"], "USD", "{new_objects}: changed values are written: {live}");
        assert_eq!(live["data"]["region"], region_after, "{new_objects}: {live}");
        assert_eq!(
            live["metadata"]["labels"]["team"], "payments",
            "{new_objects}: another writer's field stays: {live}"
        );
        let said = notes.iter().any(|n| {
            n.starts_with(
                "1 objects an earlier restore created were updated: fields their source no longer has were kept",
            )
        });
        assert_eq!(said, new_objects == "create", "{new_objects}: {notes:?}");

        // Once more with nothing changed: the ConfigMap is not written.
        let out = east.run("kube.restore", restore).await.unwrap();
        assert_eq!(out["restored"], 0, "{new_objects}: {out:?}");
    }
}
