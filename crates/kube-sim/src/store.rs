//! The simulated cluster's objects and the API verbs on them, held to the API server's
//! conventions: server-set metadata, optimistic concurrency, `status` kept apart from the main
//! resource, dry runs, and errors as `Status` objects.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::types::{self, ResourceType};
use drover_kube::patch;

pub use crate::apply::Applier;
use crate::apply::{fields_v1, owned_paths, paths_of};

pub use crate::status::ApiError;

pub(crate) fn key(t: &ResourceType) -> String {
    t.group_resource()
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Behaviour knobs of the small controller that makes waits meaningful.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Workloads report ready replicas, and PVCs bind, this long after their spec changed.
    pub ready_delay: Duration,
    /// A deleted namespace stays `Terminating` this long, then goes with its contents.
    pub namespace_delete_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { ready_delay: Duration::from_millis(100), namespace_delete_delay: Duration::from_millis(100) }
    }
}

/// How a write is done: to `/status` only, and/or as a dry run.
#[derive(Debug, Clone, Default)]
pub struct Write {
    pub status_only: bool,
    pub dry: bool,
    /// `?fieldManager=`: the name `managedFields` records for a plain patch (else `unknown`,
    /// as a real API server records a client that gives none).
    pub manager: Option<String>,
}

/// A page of a LIST, its items borrowed from the store: written out as they are, not copied
/// first (a fleet's LIST across the cluster is half a megabyte, served under the store's lock).
#[derive(serde::Serialize)]
pub struct ListPage<'s> {
    pub kind: String,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub metadata: Value,
    pub items: Vec<&'s Value>,
}

impl ListPage<'_> {
    /// The page as one JSON value (its items copied).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

pub struct Store {
    pub types: Vec<ResourceType>,
    pub(crate) objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    pub(crate) resource_version: u64,
    /// The objects whose spec changed, for the controller.
    pub(crate) changes: crate::controller::Changes,
    /// Every change, for watches.
    pub(crate) events: crate::watch::Events,
    /// The last 100,000 requests served (method and path), for tests that count them.
    pub requests: std::collections::VecDeque<(String, String)>,
    pub settings: Settings,
    /// The cluster's time: the controller's delays (readiness, binding, namespace deletion)
    /// follow it.
    pub clock: drover_sim_kit::Clock,
}

impl Store {
    pub fn new(settings: Settings) -> Store {
        let mut s = Store {
            types: types::builtin(),
            objects: BTreeMap::new(),
            resource_version: 100,
            changes: Default::default(),
            events: Default::default(),
            requests: Default::default(),
            settings,
            clock: drover_sim_kit::Clock::real(),
        };
        let ns = s.find("", "v1", "namespaces").expect("built in");
        for name in ["default", "kube-system", "kube-public"] {
            s.create(&ns, None, json!({ "metadata": { "name": name } }), false).expect("fresh store");
        }
        s
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types.iter().find(|t| t.group == group && t.version == version && t.plural == plural).cloned()
    }

    pub(crate) fn next_rv(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    pub(crate) fn namespace_exists(&self, ns: &str) -> bool {
        self.objects.get("namespaces").is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
    }

    /// The namespace a request addresses, checked against the object's own.
    pub(crate) fn scope(
        &self,
        t: &ResourceType,
        path_ns: Option<&str>,
        obj: &Value,
        name: &str,
    ) -> Result<String, ApiError> {
        if !t.namespaced {
            return Ok(String::new());
        }
        let body_ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
        let ns = match (path_ns, body_ns) {
            (Some(p), Some(b)) if p != b => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object does not match the namespace sent on the request ({b} vs {p})"
                )));
            }
            (Some(p), _) => p,
            (None, Some(b)) => b,
            (None, None) => "default",
        };
        if !self.namespace_exists(ns) {
            let nst = self.find("", "v1", "namespaces").expect("built in");
            return Err(ApiError::not_found(&nst, ns));
        }
        let _ = name;
        Ok(ns.to_string())
    }

    pub(crate) fn check_type_fields(t: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
        match obj.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != t.api_version() => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({})",
                    t.api_version()
                )));
            }
            _ => obj["apiVersion"] = json!(t.api_version()),
        }
        match obj.get("kind").and_then(Value::as_str) {
            Some(k) if k != t.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    t.kind
                )));
            }
            _ => obj["kind"] = json!(t.kind),
        }
        Ok(())
    }

    pub(crate) fn initial_status(t: &ResourceType, obj: &Value) -> Option<Value> {
        match (t.group.as_str(), t.plural.as_str()) {
            ("", "namespaces") => Some(json!({ "phase": "Active" })),
            ("", "persistentvolumeclaims") => Some(json!({ "phase": "Pending" })),
            ("apiextensions.k8s.io", "customresourcedefinitions") => Some(json!({
                "conditions": [{ "type": "Established", "status": "True", "reason": "InitialNamesAccepted" },
                               { "type": "NamesAccepted", "status": "True", "reason": "NoConflicts" }],
                "acceptedNames": obj.pointer("/spec/names").cloned().unwrap_or(json!({})),
            })),
            _ if t.status => Some(json!({})),
            _ => None,
        }
    }

    pub fn create(
        &mut self,
        t: &ResourceType,
        path_ns: Option<&str>,
        mut obj: Value,
        dry: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        Self::check_type_fields(t, &mut obj)?;
        let mut name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty() {
            match obj.pointer("/metadata/generateName").and_then(Value::as_str) {
                Some(prefix) => name = format!("{prefix}{:05x}", rand::random::<u32>() & 0xfffff),
                None => {
                    return Err(ApiError::invalid(
                        t,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            }
        }
        let ns = self.scope(t, path_ns, &obj, &name)?;
        if self.objects.get(&key(t)).is_some_and(|m| m.contains_key(&(ns.clone(), name.clone()))) {
            return Err(ApiError {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{} \"{name}\" already exists", t.group_resource()),
                details: ApiError::details(t, &name),
            });
        }
        let rv = self.next_rv();
        let meta =
            obj["metadata"].as_object_mut().ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        meta.insert("name".into(), json!(name));
        if t.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uuid()));
        meta.insert("resourceVersion".into(), json!(rv));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        for server_only in ["deletionTimestamp", "selfLink"] {
            meta.remove(server_only);
        }
        if t.group.is_empty() && t.plural == "services" {
            self.node_ports(&mut obj, &ns, &name)?;
        }
        // Status is the controllers' to write; a create starts from the type's initial status.
        if let Some(status) = Self::initial_status(t, &obj) {
            obj["status"] = status;
        } else if let Some(m) = obj.as_object_mut()
            && t.status
        {
            m.remove("status");
        }
        if dry {
            return Ok(obj);
        }
        if t.group == "apiextensions.k8s.io" && t.plural == "customresourcedefinitions" {
            for nt in types::from_crd(&obj) {
                self.types.retain(|x| !(x.group == nt.group && x.version == nt.version && x.plural == nt.plural));
                self.types.push(nt);
            }
        }
        self.changes.mark((key(t), ns.clone(), name.clone()), self.clock.now());
        self.events.record(&key(t), "ADDED", &obj);
        self.objects.entry(key(t)).or_default().insert((ns, name), obj.clone());
        Ok(obj)
    }

    /// Node ports are one range for the whole cluster: a NodePort or LoadBalancer Service gets
    /// a free one for each port that names none, and one that names a port another Service
    /// holds is refused — as a real API server does (`provided port is already allocated`).
    pub(crate) fn node_ports(&self, obj: &mut Value, ns: &str, name: &str) -> Result<(), ApiError> {
        let kind = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
        if kind != "NodePort" && kind != "LoadBalancer" {
            return Ok(());
        }
        let taken: BTreeSet<i64> = self
            .objects
            .get("services")
            .into_iter()
            .flatten()
            .filter(|((n, m), _)| !(n == ns && m == name))
            .flat_map(|(_, svc)| svc.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default())
            .filter_map(|p| p["nodePort"].as_i64())
            .collect();
        let mut mine: BTreeSet<i64> = BTreeSet::new();
        for (i, port) in obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut).into_iter().flatten().enumerate()
        {
            match port["nodePort"].as_i64() {
                Some(p) if taken.contains(&p) || mine.contains(&p) => {
                    return Err(ApiError {
                        code: 422,
                        reason: "Invalid",
                        message: format!(
                            "Service \"{name}\" is invalid: spec.ports[{i}].nodePort: Invalid value: {p}: provided port is already allocated"
                        ),
                        details: json!({ "name": name, "kind": "Service",
                                         "causes": [{ "reason": "FieldValueInvalid", "field": format!("spec.ports[{i}].nodePort") }] }),
                    });
                }
                Some(p) => {
                    mine.insert(p);
                }
                None => {
                    let free = (30000..=32767).find(|p| !taken.contains(p) && !mine.contains(p));
                    let Some(p) = free else {
                        return Err(ApiError::invalid_service(name, i, "range of valid ports is exhausted"));
                    };
                    mine.insert(p);
                    port["nodePort"] = json!(p);
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, t: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let ns = if t.namespaced { ns.unwrap_or("default") } else { "" };
        self.objects
            .get(&key(t))
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(t, name))
    }

    /// LIST with label and field selectors and `limit`/`continue` paging.
    pub fn list<'s>(
        &'s self,
        t: &ResourceType,
        ns: Option<&str>,
        labels: Option<&str>,
        fields: Option<&str>,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> Result<ListPage<'s>, ApiError> {
        let selector = labels.map(drover_kube::labels::Selector::parse).transpose().map_err(ApiError::bad_request)?;
        let mut items: Vec<&Value> = self
            .objects
            .get(&key(t))
            .map(|m| match ns {
                // Objects are kept by (namespace, name): one namespace's are one range.
                Some(want) => m
                    .range((want.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == want)
                    .map(|(_, v)| v)
                    .collect(),
                None => m.values().collect(),
            })
            .unwrap_or_default();
        if let Some(sel) = &selector {
            items.retain(|o| sel.matches(o.pointer("/metadata/labels")));
        }
        if let Some(f) = fields {
            for term in f.split(',').filter(|s| !s.is_empty()) {
                let (field, value, negate) = match term.split_once("!=") {
                    Some((a, b)) => (a, b, true),
                    None => match term.split_once('=') {
                        Some((a, b)) => (a, b.trim_start_matches('='), false),
                        None => return Err(ApiError::bad_request(format!("invalid field selector {term:?}"))),
                    },
                };
                let pointer = match field {
                    "metadata.name" => "/metadata/name",
                    "metadata.namespace" => "/metadata/namespace",
                    other => return Err(ApiError::bad_request(format!("field label not supported: {other}"))),
                };
                items.retain(|o| (o.pointer(pointer).and_then(Value::as_str) == Some(value)) != negate);
            }
        }
        let start: usize = match cont {
            Some(c) => c.parse().map_err(|_| ApiError {
                code: 410,
                reason: "Expired",
                message: "the provided continue parameter is too old".into(),
                details: json!({}),
            })?,
            None => 0,
        };
        let end = limit.map(|l| (start + l).min(items.len())).unwrap_or(items.len());
        let mut meta = json!({ "resourceVersion": self.resource_version.to_string() });
        if end < items.len() {
            meta["continue"] = json!(end.to_string());
            meta["remainingItemCount"] = json!(items.len() - end);
        }
        items.truncate(end);
        items.drain(..start.min(end));
        Ok(ListPage { kind: format!("{}List", t.kind), api_version: t.api_version(), metadata: meta, items })
    }

    /// PUT of the main resource (`status` kept) or of `/status` (only status taken).
    pub fn replace(
        &mut self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        how: Write,
    ) -> Result<Value, ApiError> {
        let old = self.get(t, ns, name)?;
        Self::check_type_fields(t, &mut obj)?;
        if let Some(rv) = obj.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && Some(rv) != old.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        {
            return Err(ApiError {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    t.group_resource()
                ),
                details: ApiError::details(t, name),
            });
        }
        if obj.pointer("/metadata/name").and_then(Value::as_str).is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                obj["metadata"]["name"]
            )));
        }
        self.store_update(t, old, obj, how.status_only, how.dry)
    }

    /// Common tail of PUT and PATCH: keep what the caller may not change, bump versions.
    pub(crate) fn store_update(
        &mut self,
        t: &ResourceType,
        old: Value,
        mut new: Value,
        status_only: bool,
        dry: bool,
    ) -> Result<Value, ApiError> {
        let name = old["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let ns = old["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let mut result = if status_only {
            let mut o = old.clone();
            o["status"] = new.get("status").cloned().unwrap_or(json!({}));
            o
        } else {
            if t.status
                && let Some(m) = new.as_object_mut()
            {
                match old.get("status") {
                    Some(s) => {
                        m.insert("status".into(), s.clone());
                    }
                    None => {
                        m.remove("status");
                    }
                }
            }
            new
        };
        // Server-set metadata survives any update.
        for k in ["uid", "creationTimestamp", "namespace", "name"] {
            if let Some(v) = old["metadata"].get(k) {
                result["metadata"][k] = v.clone();
            }
        }
        if t.group.is_empty() && t.plural == "services" && !status_only {
            self.node_ports(&mut result, &ns, &name)?;
        }
        let spec_changed = result.get("spec") != old.get("spec");
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + i64::from(spec_changed && !status_only);
        result["metadata"]["generation"] = json!(generation);
        if result == old {
            return Ok(old);
        }
        result["metadata"]["resourceVersion"] = json!(self.next_rv());
        if dry {
            return Ok(result);
        }
        if spec_changed {
            self.changes.mark((key(t), ns.clone(), name.clone()), self.clock.now());
        }
        self.events.record(&key(t), "MODIFIED", &result);
        self.objects.entry(key(t)).or_default().insert((ns, name), result.clone());
        Ok(result)
    }

    pub fn patch(
        &mut self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        content_type: &str,
        body: &Value,
        how: Write,
    ) -> Result<Value, ApiError> {
        let old = self.get(t, ns, name)?;
        let mut new = old.clone();
        match content_type {
            "application/merge-patch+json" => patch::merge(&mut new, body),
            "application/strategic-merge-patch+json" => patch::strategic(&mut new, body),
            "application/json-patch+json" => patch::json_patch(&mut new, body).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!("the server rejected our request due to an error in our request: {e}"),
                details: json!({}),
            })?,
            other => {
                return Err(ApiError {
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other})"
                    ),
                    details: json!({}),
                });
            }
        }
        if !how.status_only && new != old {
            // The writer now owns what it set, taken from whoever owned it before.
            let manager = how.manager.clone().unwrap_or_else(|| "unknown".into());
            let set: Vec<String> = owned_paths(body).into_iter().filter(|p| pointer(&new, p).is_some()).collect();
            let mut fields: Vec<Value> = old["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
            for f in fields.iter_mut() {
                let kept: Vec<String> = paths_of(&f["fieldsV1"], "").into_iter().filter(|p| !set.contains(p)).collect();
                f["fieldsV1"] = fields_v1(&kept);
            }
            fields.retain(|f| {
                f["fieldsV1"].as_object().is_some_and(|m| !m.is_empty()) || f["manager"] == manager.as_str()
            });
            let mine = match fields.iter().position(|f| f["manager"] == manager.as_str() && f["operation"] == "Update")
            {
                Some(i) => fields.remove(i),
                None => json!({ "fieldsV1": {} }),
            };
            let mut owned = paths_of(&mine["fieldsV1"], "");
            for p in set {
                if !owned.contains(&p) {
                    owned.push(p);
                }
            }
            fields.push(json!({ "manager": manager, "operation": "Update", "apiVersion": t.api_version(),
                                "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&owned) }));
            new["metadata"]["managedFields"] = json!(fields);
        }
        self.store_update(t, old, new, how.status_only, how.dry)
    }

    /// `GET .../scale`: the object's replicas as an `autoscaling/v1` Scale.
    pub fn get_scale(&self, t: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let o = self.get(t, ns, name)?;
        Ok(json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": { "name": name, "namespace": o["metadata"]["namespace"], "uid": o["metadata"]["uid"],
                          "resourceVersion": o["metadata"]["resourceVersion"], "creationTimestamp": o["metadata"]["creationTimestamp"] },
            "spec": { "replicas": o.pointer("/spec/replicas").cloned().unwrap_or(json!(1)) },
            "status": { "replicas": o.pointer("/status/replicas").cloned().unwrap_or(json!(0)) },
        }))
    }

    /// `PUT`/`PATCH .../scale`: only `spec.replicas` changes.
    pub fn set_scale(
        &mut self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        scale: &Value,
        dry: bool,
    ) -> Result<Value, ApiError> {
        let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64).ok_or_else(|| {
            ApiError::invalid(t, name, "spec.replicas", "Required value: the scale needs spec.replicas")
        })?;
        if replicas < 0 {
            return Err(ApiError::invalid(
                t,
                name,
                "spec.replicas",
                "Invalid value: must be greater than or equal to 0",
            ));
        }
        let old = self.get(t, ns, name)?;
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        self.store_update(t, old, new, false, dry)?;
        if dry {
            let mut s = self.get_scale(t, ns, name)?;
            s["spec"]["replicas"] = json!(replicas);
            return Ok(s);
        }
        self.get_scale(t, ns, name)
    }

    pub fn delete(&mut self, t: &ResourceType, ns: Option<&str>, name: &str, dry: bool) -> Result<Value, ApiError> {
        let mut old = self.get(t, ns, name)?;
        if dry {
            return Ok(old);
        }
        let ns_key = old["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        if t.group.is_empty() && t.plural == "namespaces" {
            // Namespaces finish deleting later, taking their contents with them.
            old["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            old["status"] = json!({ "phase": "Terminating" });
            old["metadata"]["resourceVersion"] = json!(self.next_rv());
            self.changes.mark((key(t), String::new(), name.to_string()), self.clock.now());
            self.events.record(&key(t), "MODIFIED", &old);
            self.objects.entry(key(t)).or_default().insert((String::new(), name.to_string()), old.clone());
            return Ok(old);
        }
        self.objects.entry(key(t)).or_default().remove(&(ns_key, name.to_string()));
        // The deletion is a change of its own, as the watchers see it.
        old["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.events.record(&key(t), "DELETED", &old);
        Ok(old)
    }
}

pub(crate) fn pointer<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.trim_start_matches('.').split('.').try_fold(v, |cur, k| cur.get(k))
}

pub(crate) fn uuid() -> String {
    let a: u128 = rand::random();
    let h = format!("{a:032x}");
    format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}
