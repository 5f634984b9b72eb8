//! The resource types the simulator serves, and the discovery documents describing them.
//! CustomResourceDefinitions add types at run time.

use serde_json::{Value, json};

/// One served resource type.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// "" for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Has `/status`: status is ignored on writes to the main resource.
    pub status: bool,
    /// Has `/scale` (`spec.replicas` as an `autoscaling/v1` Scale).
    pub scale: bool,
    pub short_names: Vec<String>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `deployments.apps`, or `pods` for the core group: how error messages name a type.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    fn discovery_entries(&self) -> Vec<Value> {
        let verbs = json!(["create", "delete", "get", "list", "patch", "update"]);
        let mut out = vec![json!({
            "name": self.plural, "singularName": self.kind.to_lowercase(), "namespaced": self.namespaced,
            "kind": self.kind, "verbs": verbs, "shortNames": self.short_names,
        })];
        if self.status {
            out.push(
                json!({ "name": format!("{}/status", self.plural), "singularName": "", "namespaced": self.namespaced,
                             "kind": self.kind, "verbs": ["get", "patch", "update"] }),
            );
        }
        if self.scale {
            out.push(json!({ "name": format!("{}/scale", self.plural), "singularName": "", "namespaced": self.namespaced,
                             "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"] }));
        }
        out
    }
}

/// (group, version, kind, plural, namespaced, has status, short names)
type Row = (&'static str, &'static str, &'static str, &'static str, bool, bool, &'static [&'static str]);

const BUILTIN: &[Row] = &[
    ("", "v1", "Namespace", "namespaces", false, true, &["ns"]),
    ("", "v1", "ConfigMap", "configmaps", true, false, &["cm"]),
    ("", "v1", "Secret", "secrets", true, false, &[]),
    ("", "v1", "Service", "services", true, true, &["svc"]),
    ("", "v1", "ServiceAccount", "serviceaccounts", true, false, &["sa"]),
    ("", "v1", "PersistentVolume", "persistentvolumes", false, true, &["pv"]),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, true, &["pvc"]),
    ("", "v1", "Pod", "pods", true, true, &["po"]),
    ("", "v1", "Endpoints", "endpoints", true, false, &["ep"]),
    ("", "v1", "Event", "events", true, false, &["ev"]),
    ("apps", "v1", "Deployment", "deployments", true, true, &["deploy"]),
    ("apps", "v1", "StatefulSet", "statefulsets", true, true, &["sts"]),
    ("apps", "v1", "DaemonSet", "daemonsets", true, true, &["ds"]),
    ("apps", "v1", "ReplicaSet", "replicasets", true, true, &["rs"]),
    ("batch", "v1", "Job", "jobs", true, true, &[]),
    ("batch", "v1", "CronJob", "cronjobs", true, true, &["cj"]),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true, true, &["ing"]),
    ("networking.k8s.io", "v1", "IngressClass", "ingressclasses", false, false, &[]),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, false, &["netpol"]),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true, false, &[]),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, false, &[]),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, false, &[]),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, false, &[]),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", false, false, &["sc"]),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, true, &["pdb"]),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, true, &["hpa"]),
    ("coordination.k8s.io", "v1", "Lease", "leases", true, false, &[]),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false, true, &["crd"]),
];

/// The built-in types.
pub fn builtin() -> Vec<ResourceType> {
    BUILTIN
        .iter()
        .map(|(g, v, k, p, ns, st, short)| ResourceType {
            group: g.to_string(),
            version: v.to_string(),
            kind: k.to_string(),
            plural: p.to_string(),
            namespaced: *ns,
            status: *st,
            scale: matches!(*p, "deployments" | "statefulsets" | "replicasets"),
            short_names: short.iter().map(|s| s.to_string()).collect(),
        })
        .collect()
}

/// The types a CRD object defines: one per served version.
pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let short: Vec<String> = names["shortNames"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    spec["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["served"].as_bool().unwrap_or(true))
                .map(|v| ResourceType {
                    group: group.to_string(),
                    version: v["name"].as_str().unwrap_or("v1").to_string(),
                    kind: names["kind"].as_str().unwrap_or_default().to_string(),
                    plural: names["plural"].as_str().unwrap_or_default().to_string(),
                    namespaced,
                    status: v.pointer("/subresources/status").is_some(),
                    scale: v.pointer("/subresources/scale").is_some(),
                    short_names: short.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `/api`
pub fn core_versions() -> Value {
    json!({ "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1" }] })
}

/// `/apis`
pub fn group_list(types: &[ResourceType]) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = vec![];
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, vs)) if !vs.contains(&t.version) => vs.push(t.version.clone()),
            Some(_) => {}
            None => groups.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> =
                vs.iter().map(|v| json!({ "groupVersion": format!("{g}/{v}"), "version": v })).collect();
            json!({ "name": g, "versions": versions, "preferredVersion": versions[0].clone() })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/api/v1` or `/apis/{group}/{version}`; None when that group version is not served.
pub fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let matching: Vec<&ResourceType> = types.iter().filter(|t| t.group == group && t.version == version).collect();
    if matching.is_empty() {
        return None;
    }
    let resources: Vec<Value> = matching.iter().flat_map(|t| t.discovery_entries()).collect();
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources }))
}
