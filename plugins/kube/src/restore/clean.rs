//! What never goes to the standby cluster, and how each object is cleaned before it does —
//! Velero's rules (`shared/docs/VELERO.md`), one table row per kind so each is tested alone.

use serde_json::Value;

/// Group-resources Velero never restores (and neither does drover).
const NEVER: &[&str] = &[
    "nodes",
    "events",
    "events.events.k8s.io",
    "backups.velero.io",
    "restores.velero.io",
    "resticrepositories.velero.io",
    "backuprepositories.velero.io",
    "csinodes.storage.k8s.io",
    "volumeattachments.storage.k8s.io",
    "apiservices.apiregistration.k8s.io",
    // Recreated by their controllers from the restored Services.
    "endpoints",
    "endpointslices.discovery.k8s.io",
];

/// Why an object is left out, or None to restore it.
pub fn excluded(resource: &str, obj: &Value) -> Option<&'static str> {
    let label = |k: &str| obj.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str);
    let annotation = |k: &str| obj.pointer("/metadata/annotations").and_then(|l| l.get(k)).and_then(Value::as_str);
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if NEVER.contains(&resource) {
        return Some("never restored");
    }
    if label("velero.io/exclude-from-backup") == Some("true") {
        return Some("labelled velero.io/exclude-from-backup=true");
    }
    match resource {
        "pods" if annotation("kubernetes.io/config.mirror").is_some() => Some("mirror pod"),
        "pods" if matches!(obj.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")) => {
            Some("completed pod")
        }
        "jobs.batch" if obj.pointer("/status/completionTime").is_some_and(|v| !v.is_null()) => Some("completed job"),
        "secrets" if obj["type"] == "kubernetes.io/service-account-token" => Some("service-account token"),
        "serviceaccounts" if name == "default" => Some("created by the cluster in every namespace"),
        "configmaps" if name == "kube-root-ca.crt" => Some("created by the cluster in every namespace"),
        _ => None,
    }
}

/// The uid of the controller that owns this object, if any (read before cleaning).
pub fn controller_uid(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)
        .and_then(|o| o["uid"].as_str())
        .map(String::from)
}

const METADATA: &[&str] = &[
    "generateName",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "managedFields",
];

const PVC_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
];

fn remove(obj: &mut Value, path: &str, keys: &[&str]) {
    if let Some(map) = obj.pointer_mut(path).and_then(Value::as_object_mut) {
        for k in keys {
            map.remove(*k);
        }
    }
}

/// drover's own fencing marks are not carried to the other site: a fenced workload comes up
/// at the replicas it had before `kube.fence`/`kube.scale` took it down, and a fenced
/// namespace arrives unfenced.
fn lift_fence(obj: &mut Value) {
    let annotation = |o: &Value, k: &str| {
        o.pointer("/metadata/annotations").and_then(|a| a.get(k)).and_then(Value::as_str).map(String::from)
    };
    for (key, field) in [("drover.io/replicas-before-scale", "replicas"), ("drover.io/suspend-before-scale", "suspend")]
    {
        if let Some(before) = annotation(obj, key).and_then(|v| serde_json::from_str::<Value>(&v).ok()) {
            obj["spec"][field] = before;
            remove(obj, "/metadata/annotations", &[key]);
        }
    }
    remove(obj, "/metadata/labels", &["drover.io/fenced"]);
    remove(obj, "/metadata/annotations", &["drover.io/fenced-by"]);
}

/// Clean one object for restore into another cluster.
pub fn clean(resource: &str, obj: &mut Value) {
    // Who chose a Service's node ports is in the metadata about to go.
    let chosen = if resource == "services" { chosen_node_ports(obj) } else { vec![] };
    remove(obj, "/metadata", METADATA);
    remove(obj, "", &["status"]);
    lift_fence(obj);
    match resource {
        "services" => clean_service(obj, &chosen),
        "pods" => {
            remove(obj, "/spec", &["nodeName", "priority"]);
            if let Some(volumes) = obj.pointer_mut("/spec/volumes").and_then(Value::as_array_mut) {
                volumes.retain(|v| !v["name"].as_str().is_some_and(|n| n.starts_with("kube-api-access-")));
            }
        }
        "jobs.batch" => {
            remove(obj, "/spec/selector/matchLabels", &["controller-uid", "batch.kubernetes.io/controller-uid"]);
            remove(obj, "/spec/template/metadata/labels", &["controller-uid", "batch.kubernetes.io/controller-uid"]);
            if obj.pointer("/spec/selector/matchLabels").and_then(Value::as_object).is_some_and(|m| m.is_empty()) {
                remove(obj, "/spec", &["selector"]);
            }
        }
        "persistentvolumeclaims" => remove(obj, "/metadata/annotations", PVC_ANNOTATIONS),
        "persistentvolumes" => remove(obj, "/spec/claimRef", &["uid", "resourceVersion"]),
        _ => {}
    }
}

/// The ports (by `port`) whose `nodePort` the Service's owner chose, as opposed to the cluster
/// allocating it: written in the last-applied configuration (kubectl apply), or owned by a
/// field manager (server-side apply, or any client that sent it). An allocated node port has no
/// manager. Velero keeps exactly these; the rest would clash wherever the port is taken — a
/// second copy of an app on the same cluster, always.
fn chosen_node_ports(obj: &Value) -> Vec<i64> {
    let mut out = vec![];
    let last_applied = obj
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str::<Value>(t).ok());
    for p in
        last_applied.as_ref().and_then(|l| l.pointer("/spec/ports")).and_then(Value::as_array).into_iter().flatten()
    {
        if p.get("nodePort").is_some_and(|n| !n.is_null())
            && let Some(port) = p["port"].as_i64()
        {
            out.push(port);
        }
    }
    for entry in obj.pointer("/metadata/managedFields").and_then(Value::as_array).into_iter().flatten() {
        let ports = entry.pointer("/fieldsV1/f:spec/f:ports").and_then(Value::as_object);
        for (key, fields) in ports.into_iter().flatten() {
            // `k:{"port":80,"protocol":"TCP"}`
            let port = key
                .strip_prefix("k:")
                .and_then(|k| serde_json::from_str::<Value>(k).ok())
                .and_then(|k| k["port"].as_i64());
            if let Some(port) = port
                && fields.get("f:nodePort").is_some()
            {
                out.push(port);
            }
        }
    }
    out
}

fn clean_service(obj: &mut Value, chosen: &[i64]) {
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    if !headless {
        remove(obj, "/spec", &["clusterIP", "clusterIPs"]);
    }
    // Node ports the cluster picked are dropped, whatever the Service's type; those its owner
    // chose are kept (see `chosen_node_ports`).
    if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            let port = p["port"].as_i64();
            if let Some(p) = p.as_object_mut()
                && !port.is_some_and(|n| chosen.contains(&n))
            {
                p.remove("nodePort");
            }
        }
    }
    remove(obj, "/spec", &["healthCheckNodePort"]);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn metadata_and_status_go_for_every_kind() {
        let mut cm = json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "a", "namespace": "shop", "uid": "u", "resourceVersion": "9", "generation": 2,
                          "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{}], "labels": { "app": "x" },
                          "ownerReferences": [{ "uid": "o" }] },
            "data": { "k": "v" }, "status": {} });
        clean("configmaps", &mut cm);
        assert_eq!(
            cm,
            json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "a", "namespace": "shop", "labels": { "app": "x" } }, "data": { "k": "v" } })
        );
    }

    #[test]
    fn services_lose_their_cluster_ip_and_assigned_ports_unless_headless() {
        let mut svc = json!({ "spec": { "type": "ClusterIP", "clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"],
                                        "ports": [{ "port": 80, "nodePort": 30080 }] } });
        clean("services", &mut svc);
        assert_eq!(svc, json!({ "spec": { "type": "ClusterIP", "ports": [{ "port": 80 }] } }));
        let mut headless = json!({ "spec": { "clusterIP": "None" } });
        clean("services", &mut headless);
        assert_eq!(headless, json!({ "spec": { "clusterIP": "None" } }));
    }

    #[test]
    fn node_ports_the_cluster_picked_go_and_those_the_owner_chose_stay() {
        let mut picked = json!({ "spec": { "type": "NodePort", "ports": [{ "port": 80, "nodePort": 30535 }] } });
        clean("services", &mut picked);
        assert_eq!(picked["spec"]["ports"][0].get("nodePort"), None, "allocated by the cluster: dropped");
        let applied = r#"{"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":30080}]}}"#;
        let mut kubectl = json!({ "metadata": { "annotations": { "kubectl.kubernetes.io/last-applied-configuration": applied } },
                                  "spec": { "type": "NodePort", "ports": [{ "port": 80, "nodePort": 30080 }, { "port": 443, "nodePort": 31443 }] } });
        clean("services", &mut kubectl);
        assert_eq!(kubectl["spec"]["ports"][0]["nodePort"], 30080);
        assert_eq!(kubectl["spec"]["ports"][1].get("nodePort"), None);
        let mut ssa = json!({ "metadata": { "managedFields": [{ "manager": "kubectl", "operation": "Apply",
                                "fieldsV1": { "f:spec": { "f:ports": { "k:{\"port\":80,\"protocol\":\"TCP\"}": { "f:nodePort": {}, "f:port": {} } } } } }] },
                              "spec": { "type": "LoadBalancer", "ports": [{ "port": 80, "nodePort": 30081 }] } });
        clean("services", &mut ssa);
        assert_eq!(ssa["spec"]["ports"][0]["nodePort"], 30081);
    }

    #[test]
    fn pods_jobs_claims_and_volumes_are_unbound_from_the_old_cluster() {
        let mut pod = json!({ "spec": { "nodeName": "n1", "priority": 0, "volumes": [{ "name": "kube-api-access-x" }, { "name": "data" }] } });
        clean("pods", &mut pod);
        assert_eq!(pod, json!({ "spec": { "volumes": [{ "name": "data" }] } }));
        let mut job = json!({ "spec": { "selector": { "matchLabels": { "controller-uid": "u" } },
                                        "template": { "metadata": { "labels": { "controller-uid": "u", "app": "m" } } } } });
        clean("jobs.batch", &mut job);
        assert_eq!(job, json!({ "spec": { "template": { "metadata": { "labels": { "app": "m" } } } } }));
        let mut pvc =
            json!({ "metadata": { "annotations": { "pv.kubernetes.io/bind-completed": "yes", "keep": "1" } } });
        clean("persistentvolumeclaims", &mut pvc);
        assert_eq!(pvc["metadata"]["annotations"], json!({ "keep": "1" }));
        let mut pv = json!({ "spec": { "claimRef": { "name": "data", "namespace": "shop", "uid": "u", "resourceVersion": "1" } } });
        clean("persistentvolumes", &mut pv);
        assert_eq!(pv["spec"]["claimRef"], json!({ "name": "data", "namespace": "shop" }));
    }

    #[test]
    fn fenced_workloads_come_up_at_their_remembered_replicas_and_namespaces_unfenced() {
        let mut d = json!({ "metadata": { "annotations": { "drover.io/replicas-before-scale": "3", "keep": "x" } }, "spec": { "replicas": 0 } });
        clean("deployments.apps", &mut d);
        assert_eq!(d, json!({ "metadata": { "annotations": { "keep": "x" } }, "spec": { "replicas": 3 } }));
        let mut ns = json!({ "metadata": { "labels": { "drover.io/fenced": "true" }, "annotations": { "drover.io/fenced-by": "run r" } } });
        clean("namespaces", &mut ns);
        assert_eq!(ns, json!({ "metadata": { "labels": {}, "annotations": {} } }));
    }

    #[test]
    fn what_is_never_restored() {
        assert_eq!(excluded("events", &json!({})), Some("never restored"));
        assert_eq!(excluded("endpoints", &json!({})), Some("never restored"));
        let token = json!({ "type": "kubernetes.io/service-account-token", "metadata": { "name": "t" } });
        assert_eq!(excluded("secrets", &token), Some("service-account token"));
        assert!(excluded("serviceaccounts", &json!({ "metadata": { "name": "default" } })).is_some());
        assert!(excluded("configmaps", &json!({ "metadata": { "name": "kube-root-ca.crt" } })).is_some());
        let labelled = json!({ "metadata": { "name": "x", "labels": { "velero.io/exclude-from-backup": "true" } } });
        assert!(excluded("configmaps", &labelled).is_some());
        assert!(excluded("pods", &json!({ "status": { "phase": "Succeeded" } })).is_some());
        assert!(excluded("jobs.batch", &json!({ "status": { "completionTime": "t" } })).is_some());
        assert_eq!(excluded("deployments.apps", &json!({ "metadata": { "name": "web" } })), None);
    }
}
