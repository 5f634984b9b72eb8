//! Transforms declared in the runbook, applied in order to every cleaned object. Each reports
//! the fields it changed (before → after) so the preview can show exactly what the standby
//! will get that the primary did not have.

use std::collections::BTreeMap;

use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use drover_api::ParamError;

use crate::patch;

/// One transform, as written in `transforms:` (a list; order matters).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// Move objects between namespaces: `{ shop: shop-dr }`. Also RoleBinding subjects and
    /// PV claim references.
    Namespaces(BTreeMap<String, String>),
    /// Rewrite Ingress hosts (rules and TLS).
    IngressHosts(IngressHosts),
    /// Map storage classes: `{ gold: dr-gold }` (PVCs, PVs, StatefulSet claim templates).
    StorageClasses(BTreeMap<String, String>),
    /// Point PersistentVolumes at the replicated copies of their volumes.
    Volumes(Vec<VolumeRule>),
    /// Rewrite image references by prefix: `{ "registry.east.example.com/": "registry.west.example.com/" }`.
    Images(BTreeMap<String, String>),
    /// Set the replicas of Deployments and StatefulSets (0 for a warm standby).
    Replicas(ReplicasRule),
    /// A merge patch or JSON patch for matching objects.
    Patch(PatchRule),
    /// Velero's resource-modifier rules (`version: v1`, `resourceModifierRules:`), as written
    /// for Velero: conditions on group-resource, name regex, namespaces and labels; JSON,
    /// merge and strategic patches.
    VeleroModifiers(VeleroModifiers),
    /// Create claims from CSI VolumeSnapshots: `{ "NAMESPACE/CLAIM": SNAPSHOT }` (what
    /// `kube.volume_snapshot` outputs as `by_claim`). The claim gets `dataSource` naming the
    /// snapshot and loses its `volumeName`, so a new volume is provisioned from the snapshot;
    /// namespaces are those the claim has at this point of the list.
    VolumeSnapshots(BTreeMap<String, String>),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VeleroModifiers {
    #[serde(default)]
    pub version: Option<String>,
    pub resource_modifier_rules: Vec<VeleroRule>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VeleroRule {
    pub conditions: VeleroConditions,
    #[serde(default)]
    pub patches: Vec<VeleroJsonPatch>,
    #[serde(default)]
    pub merge_patches: Vec<VeleroPatchData>,
    #[serde(default)]
    pub strategic_patches: Vec<VeleroPatchData>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VeleroConditions {
    /// `deployments.apps`, `persistentvolumeclaims`, or `*`.
    pub group_resource: String,
    #[serde(default)]
    pub resource_name_regex: Option<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub label_selector: Option<VeleroLabelSelector>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VeleroLabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VeleroJsonPatch {
    pub operation: String,
    pub path: String,
    #[serde(default)]
    pub from: Option<String>,
    /// Velero writes values as strings; JSON text (`"1"`, `"true"`, `"{...}"`) is parsed.
    #[serde(default)]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VeleroPatchData {
    /// The patch as JSON or YAML text.
    pub patch_data: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngressHosts {
    /// Host patterns: `"*.east.example.com": "*.west.example.com"`; each `*` carries over.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// The same as a list, for patterns that come from params: `[{ from: "*.east.example.com", to: "*.west.example.com" }]`.
    #[serde(default)]
    pub patterns: Vec<RegexRule>,
    /// Regular expressions with capture groups: `{ from: '^(.+)\.east\.', to: '$1.west.' }`.
    #[serde(default)]
    pub regex: Vec<RegexRule>,
    /// Annotations holding host names to rewrite too (e.g. `external-dns.alpha.kubernetes.io/hostname`).
    #[serde(default)]
    pub annotations: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexRule {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeRule {
    /// NFS volumes of this server...
    #[serde(default)]
    pub nfs_server: Option<String>,
    /// ...move to this one.
    #[serde(default)]
    pub to_nfs_server: Option<String>,
    /// NFS paths starting with this...
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// ...start with this instead.
    #[serde(default)]
    pub to_path_prefix: Option<String>,
    /// CSI volumes of this driver...
    #[serde(default)]
    pub csi_driver: Option<String>,
    /// ...get their volume handle rewritten: a regex with capture groups...
    #[serde(default)]
    pub handle: Option<String>,
    /// ...and its replacement (`$1`).
    #[serde(default)]
    pub to_handle: Option<String>,
    /// CSI volume attributes to set.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplicasRule {
    pub replicas: u32,
    #[serde(default, rename = "match")]
    pub matching: Match,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRule {
    #[serde(default, rename = "match")]
    pub matching: Match,
    /// RFC 7386 merge patch.
    #[serde(default)]
    pub merge: Option<Value>,
    /// RFC 6902 JSON patch operations.
    #[serde(default)]
    pub json: Option<Value>,
}

/// Which objects a rule applies to; every given field must match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    /// A glob: `shop-*`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// A glob.
    #[serde(default)]
    pub name: Option<String>,
    /// Labels that must all be present with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Match {
    pub fn matches(&self, obj: &Value) -> bool {
        let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
        let group = s("/apiVersion").rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        self.group.as_deref().is_none_or(|g| g == group)
            && self.kind.as_deref().is_none_or(|k| k == s("/kind"))
            && self.namespace.as_deref().is_none_or(|p| glob_match(p, s("/metadata/namespace")))
            && self.name.as_deref().is_none_or(|p| glob_match(p, s("/metadata/name")))
            && self
                .labels
                .iter()
                .all(|(k, v)| obj.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(&json!(v)))
    }
}

pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob::Pattern::new(pattern).map(|p| p.matches(text)).unwrap_or(pattern == text)
}

/// One field a transform changed.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub path: String,
    pub before: Value,
    pub after: Value,
}

/// A transform made ready to run: patterns compiled once.
pub struct Compiled {
    pub label: String,
    kind: CompiledKind,
}

enum CompiledKind {
    Namespaces(BTreeMap<String, String>),
    Hosts { rules: Vec<(Regex, String)>, annotations: Vec<String> },
    StorageClasses(BTreeMap<String, String>),
    Volumes(Vec<(VolumeRule, Option<Regex>)>),
    Images(BTreeMap<String, String>),
    Replicas(ReplicasRule),
    Patch(PatchRule),
    Velero(Vec<CompiledVeleroRule>),
    Snapshots(BTreeMap<String, String>),
}

struct CompiledVeleroRule {
    rule: VeleroRule,
    name: Option<Regex>,
    /// JSON patch operations in RFC 6902 form.
    ops: Value,
    merges: Vec<Value>,
    strategics: Vec<Value>,
}

/// `*.east.example.com` as an anchored regex; each `*` a capture group carried to the target.
fn host_pattern(from: &str, to: &str) -> (String, String) {
    let mut re = String::from("^");
    for (i, part) in from.split('*').enumerate() {
        if i > 0 {
            re.push_str("(.+?)");
        }
        re.push_str(&regex::escape(part));
    }
    re.push('$');
    let mut n = 0;
    let replacement: String = to
        .split('*')
        .enumerate()
        .map(|(i, part)| {
            let part = part.replace('$', "$$");
            if i == 0 {
                part
            } else {
                n += 1;
                format!("${{{n}}}{part}")
            }
        })
        .collect();
    (re, replacement)
}

/// Compile every transform, reporting bad patterns by their place in `transforms:`.
pub fn compile(list: &[Transform]) -> Result<Vec<Compiled>, Vec<ParamError>> {
    use drover_api::PathSegment::{Index, Key};
    let mut out = vec![];
    let errors = std::cell::RefCell::new(vec![]);
    let regex_at = |re: &str, path: Vec<drover_api::PathSegment>| match Regex::new(re) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.borrow_mut().push(ParamError {
                path,
                message: format!("invalid regular expression: {e}"),
                hint: None,
            });
            None
        }
    };
    for (i, t) in list.iter().enumerate() {
        let (label, kind) = match t {
            Transform::Namespaces(m) => (format!("namespaces {}", pairs(m)), CompiledKind::Namespaces(m.clone())),
            Transform::IngressHosts(h) => {
                let mut rules = vec![];
                let listed = h.patterns.iter().map(|r| (&r.from, &r.to));
                for (from, to) in h.map.iter().chain(listed) {
                    let (re, rep) = host_pattern(from, to);
                    if let Some(r) =
                        regex_at(&re, vec![Key("transforms".into()), Index(i), Key("ingress_hosts".into())])
                    {
                        rules.push((r, rep));
                    }
                }
                for (j, r) in h.regex.iter().enumerate() {
                    let path = vec![
                        Key("transforms".into()),
                        Index(i),
                        Key("ingress_hosts".into()),
                        Key("regex".into()),
                        Index(j),
                    ];
                    if let Some(re) = regex_at(&r.from, path) {
                        rules.push((re, r.to.clone()));
                    }
                }
                let mut all: Vec<String> = h.map.iter().map(|(a, b)| format!("{a} → {b}")).collect();
                all.extend(h.patterns.iter().map(|r| format!("{} → {}", r.from, r.to)));
                all.extend(h.regex.iter().map(|r| format!("/{}/ → {}", r.from, r.to)));
                (
                    format!("ingress hosts {}", all.join(", ")),
                    CompiledKind::Hosts { rules, annotations: h.annotations.clone() },
                )
            }
            Transform::StorageClasses(m) => {
                (format!("storage classes {}", pairs(m)), CompiledKind::StorageClasses(m.clone()))
            }
            Transform::Volumes(rules) => {
                let mut compiled = vec![];
                for (j, r) in rules.iter().enumerate() {
                    let re = r.handle.as_deref().and_then(|h| {
                        regex_at(
                            h,
                            vec![
                                Key("transforms".into()),
                                Index(i),
                                Key("volumes".into()),
                                Index(j),
                                Key("handle".into()),
                            ],
                        )
                    });
                    compiled.push((r.clone(), re));
                }
                (format!("volumes ({} rules)", rules.len()), CompiledKind::Volumes(compiled))
            }
            Transform::Images(m) => (format!("images {}", pairs(m)), CompiledKind::Images(m.clone())),
            Transform::VolumeSnapshots(m) => {
                (format!("claims from snapshots {}", pairs(m)), CompiledKind::Snapshots(m.clone()))
            }
            Transform::Replicas(r) => (format!("replicas {}", r.replicas), CompiledKind::Replicas(r.clone())),
            Transform::VeleroModifiers(m) => {
                let mut rules = vec![];
                for (j, rule) in m.resource_modifier_rules.iter().enumerate() {
                    let at = |k: &str| {
                        vec![
                            Key("transforms".into()),
                            Index(i),
                            Key("velero_modifiers".into()),
                            Key("resourceModifierRules".into()),
                            Index(j),
                            Key(k.into()),
                        ]
                    };
                    let name =
                        rule.conditions.resource_name_regex.as_deref().and_then(|r| regex_at(r, at("conditions")));
                    let ops: Vec<Value> = rule
                        .patches
                        .iter()
                        .map(|p| {
                            let value = p.value.clone().map(|v| match v {
                                Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                                other => other,
                            });
                            json!({ "op": p.operation, "path": p.path, "from": p.from, "value": value })
                        })
                        .collect();
                    let parse = |d: &VeleroPatchData, key: &str, errors: &std::cell::RefCell<Vec<ParamError>>| {
                        serde_yaml::from_str::<Value>(&d.patch_data)
                            .map_err(|e| {
                                errors.borrow_mut().push(ParamError {
                                    path: at(key),
                                    message: format!("patchData is not JSON or YAML: {e}"),
                                    hint: None,
                                })
                            })
                            .ok()
                    };
                    let merges = rule.merge_patches.iter().filter_map(|d| parse(d, "mergePatches", &errors)).collect();
                    let strategics =
                        rule.strategic_patches.iter().filter_map(|d| parse(d, "strategicPatches", &errors)).collect();
                    rules.push(CompiledVeleroRule {
                        rule: rule.clone(),
                        name,
                        ops: Value::Array(ops),
                        merges,
                        strategics,
                    });
                }
                (format!("Velero resource modifiers ({} rules)", rules.len()), CompiledKind::Velero(rules))
            }
            Transform::Patch(p) => {
                if p.merge.is_none() == p.json.is_none() {
                    errors.borrow_mut().push(ParamError {
                        path: vec![Key("transforms".into()), Index(i), Key("patch".into())],
                        message: "give either `merge:` or `json:`".into(),
                        hint: None,
                    });
                }
                ("patch".to_string(), CompiledKind::Patch(p.clone()))
            }
        };
        out.push(Compiled { label, kind });
    }
    let errors = errors.into_inner();
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn pairs(m: &BTreeMap<String, String>) -> String {
    m.iter().map(|(a, b)| format!("{a} → {b}")).collect::<Vec<_>>().join(", ")
}

/// Set a string field through a function, recording the change.
fn rewrite(obj: &mut Value, path: &str, changes: &mut Vec<FieldChange>, f: impl Fn(&str) -> Option<String>) {
    if let Some(v) = obj.pointer_mut(path)
        && let Some(new) = v.as_str().and_then(&f)
        && v.as_str() != Some(new.as_str())
    {
        changes.push(FieldChange { path: path.to_string(), before: v.clone(), after: json!(new) });
        *v = json!(new);
    }
}

fn each_index(obj: &Value, path: &str) -> usize {
    obj.pointer(path).and_then(Value::as_array).map(Vec::len).unwrap_or(0)
}

/// The pod template's place in a workload, if it has one.
fn pod_spec_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("/spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template/spec"),
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

impl Compiled {
    /// Apply to one object; returns what changed.
    pub fn apply(&self, resource: &str, obj: &mut Value) -> Vec<FieldChange> {
        let mut changes = vec![];
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        match &self.kind {
            CompiledKind::Namespaces(map) => {
                let to = |ns: &str| map.get(ns).cloned();
                rewrite(obj, "/metadata/namespace", &mut changes, to);
                if kind == "Namespace" {
                    rewrite(obj, "/metadata/name", &mut changes, to);
                }
                if kind == "RoleBinding" || kind == "ClusterRoleBinding" {
                    for i in 0..each_index(obj, "/subjects") {
                        rewrite(obj, &format!("/subjects/{i}/namespace"), &mut changes, to);
                    }
                }
                if kind == "PersistentVolume" {
                    rewrite(obj, "/spec/claimRef/namespace", &mut changes, to);
                }
            }
            CompiledKind::Hosts { rules, annotations } if kind == "Ingress" => {
                let host = |h: &str| {
                    rules
                        .iter()
                        .find(|(re, _)| re.is_match(h))
                        .map(|(re, rep)| re.replace(h, rep.as_str()).into_owned())
                };
                for i in 0..each_index(obj, "/spec/rules") {
                    rewrite(obj, &format!("/spec/rules/{i}/host"), &mut changes, host);
                }
                for i in 0..each_index(obj, "/spec/tls") {
                    for j in 0..each_index(obj, &format!("/spec/tls/{i}/hosts")) {
                        rewrite(obj, &format!("/spec/tls/{i}/hosts/{j}"), &mut changes, host);
                    }
                }
                for a in annotations {
                    let path = format!("/metadata/annotations/{}", a.replace('~', "~0").replace('/', "~1"));
                    // external-dns takes a comma-separated list.
                    rewrite(obj, &path, &mut changes, |list| {
                        Some(
                            list.split(',')
                                .map(|h| host(h.trim()).unwrap_or_else(|| h.trim().to_string()))
                                .collect::<Vec<_>>()
                                .join(","),
                        )
                    });
                }
            }
            CompiledKind::Hosts { .. } => {}
            CompiledKind::StorageClasses(map) => {
                let to = |c: &str| map.get(c).cloned();
                match kind.as_str() {
                    "PersistentVolumeClaim" | "PersistentVolume" => {
                        rewrite(obj, "/spec/storageClassName", &mut changes, to)
                    }
                    "StatefulSet" => {
                        for i in 0..each_index(obj, "/spec/volumeClaimTemplates") {
                            rewrite(
                                obj,
                                &format!("/spec/volumeClaimTemplates/{i}/spec/storageClassName"),
                                &mut changes,
                                to,
                            );
                        }
                    }
                    _ => {}
                }
            }
            CompiledKind::Volumes(rules) if kind == "PersistentVolume" => {
                for (rule, handle) in rules {
                    if remap_volume(obj, rule, handle.as_ref(), &mut changes) {
                        break;
                    }
                }
            }
            CompiledKind::Volumes(_) => {}
            CompiledKind::Snapshots(map) if kind == "PersistentVolumeClaim" => {
                let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
                let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                if let Some(snapshot) = map.get(&format!("{ns}/{name}")) {
                    let source =
                        json!({ "apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot });
                    let before = obj.pointer("/spec/dataSource").cloned().unwrap_or(Value::Null);
                    if before != source {
                        changes.push(FieldChange { path: "/spec/dataSource".into(), before, after: source.clone() });
                        obj["spec"]["dataSource"] = source;
                    }
                    if let Some(spec) = obj["spec"].as_object_mut()
                        && let Some(old) = spec.remove("volumeName")
                    {
                        changes.push(FieldChange { path: "/spec/volumeName".into(), before: old, after: Value::Null });
                    }
                }
            }
            CompiledKind::Snapshots(_) => {}
            CompiledKind::Images(map) => {
                if let Some(spec) = pod_spec_path(&kind) {
                    for list in ["containers", "initContainers"] {
                        for i in 0..each_index(obj, &format!("{spec}/{list}")) {
                            rewrite(obj, &format!("{spec}/{list}/{i}/image"), &mut changes, |image| {
                                map.iter()
                                    .filter(|(from, _)| image.starts_with(from.as_str()))
                                    .max_by_key(|(from, _)| from.len())
                                    .map(|(from, to)| format!("{to}{}", &image[from.len()..]))
                            });
                        }
                    }
                }
            }
            CompiledKind::Replicas(rule) => {
                if matches!(kind.as_str(), "Deployment" | "StatefulSet") && rule.matching.matches(obj) {
                    let before = obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1));
                    if before != json!(rule.replicas) {
                        changes.push(FieldChange {
                            path: "/spec/replicas".into(),
                            before,
                            after: json!(rule.replicas),
                        });
                        obj["spec"]["replicas"] = json!(rule.replicas);
                    }
                }
            }
            CompiledKind::Velero(rules) => {
                for r in rules {
                    let c = &r.rule.conditions;
                    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
                    let applies = (c.group_resource == "*" || glob_match(&c.group_resource, resource))
                        && r.name.as_ref().is_none_or(|re| re.is_match(name))
                        && (c.namespaces.is_empty() || c.namespaces.iter().any(|n| n == ns))
                        && c.label_selector.as_ref().is_none_or(|l| {
                            l.match_labels
                                .iter()
                                .all(|(k, v)| obj.pointer("/metadata/labels").and_then(|m| m.get(k)) == Some(&json!(v)))
                        });
                    if !applies {
                        continue;
                    }
                    let before = obj.clone();
                    if r.ops.as_array().is_some_and(|a| !a.is_empty())
                        && let Err(e) = patch::json_patch(obj, &r.ops)
                    {
                        // Velero skips a rule whose patch does not apply; so does drover, visibly.
                        *obj = before.clone();
                        changes.push(FieldChange {
                            path: "(velero patch)".into(),
                            before: Value::Null,
                            after: json!(format!("not applied: {e}")),
                        });
                        continue;
                    }
                    for m in &r.merges {
                        patch::merge(obj, m);
                    }
                    for m in &r.strategics {
                        patch::strategic(obj, m);
                    }
                    diff(&before, obj, "", &mut changes);
                }
            }
            CompiledKind::Patch(rule) => {
                if rule.matching.matches(obj) {
                    let before = obj.clone();
                    if let Some(m) = &rule.merge {
                        patch::merge(obj, m);
                    }
                    if let Some(ops) = &rule.json
                        && let Err(e) = patch::json_patch(obj, ops)
                    {
                        changes.push(FieldChange {
                            path: "(json patch)".into(),
                            before: json!(null),
                            after: json!(format!("not applied: {e}")),
                        });
                        *obj = before;
                        return changes;
                    }
                    diff(&before, obj, "", &mut changes);
                }
            }
        }
        changes
    }
}

/// Rewrite one PV by a rule; true when the rule matched.
fn remap_volume(obj: &mut Value, rule: &VolumeRule, handle: Option<&Regex>, changes: &mut Vec<FieldChange>) -> bool {
    let nfs = obj.pointer("/spec/nfs").is_some();
    let csi_driver = obj.pointer("/spec/csi/driver").and_then(Value::as_str).map(String::from);
    let matched = if nfs {
        rule.nfs_server.as_deref().is_none_or(|s| obj.pointer("/spec/nfs/server").and_then(Value::as_str) == Some(s))
            && (rule.nfs_server.is_some() || rule.path_prefix.is_some())
            && rule.path_prefix.as_deref().is_none_or(|p| {
                obj.pointer("/spec/nfs/path").and_then(Value::as_str).is_some_and(|path| path.starts_with(p))
            })
    } else {
        csi_driver.is_some() && rule.csi_driver.is_some() && csi_driver == rule.csi_driver
    };
    if !matched {
        return false;
    }
    if nfs {
        if let Some(to) = &rule.to_nfs_server {
            rewrite(obj, "/spec/nfs/server", changes, |_| Some(to.clone()));
        }
        if let (Some(from), Some(to)) = (&rule.path_prefix, &rule.to_path_prefix) {
            rewrite(obj, "/spec/nfs/path", changes, |p| {
                p.strip_prefix(from.as_str()).map(|rest| format!("{to}{rest}"))
            });
        }
    } else {
        if let (Some(re), Some(to)) = (handle, &rule.to_handle) {
            rewrite(obj, "/spec/csi/volumeHandle", changes, |h| Some(re.replace(h, to.as_str()).into_owned()));
        }
        for (k, v) in &rule.attributes {
            let path = format!("/spec/csi/volumeAttributes/{}", k.replace('~', "~0").replace('/', "~1"));
            let before = obj.pointer(&path).cloned().unwrap_or(Value::Null);
            if before != json!(v) {
                changes.push(FieldChange { path, before, after: json!(v) });
                obj["spec"]["csi"]["volumeAttributes"][k] = json!(v);
            }
        }
    }
    // A replicated volume must outlive its claim: never let the standby delete the DR copy.
    rewrite(obj, "/spec/persistentVolumeReclaimPolicy", changes, |p| (p != "Retain").then(|| "Retain".to_string()));
    if obj.pointer("/spec/persistentVolumeReclaimPolicy").is_none() {
        changes.push(FieldChange {
            path: "/spec/persistentVolumeReclaimPolicy".into(),
            before: Value::Null,
            after: json!("Retain"),
        });
        obj["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
    }
    true
}

/// Leaf-level differences between two values, as JSON pointers.
fn diff(before: &Value, after: &Value, path: &str, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                diff(a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null), &p, out);
            }
        }
        (a, b) if a != b => out.push(FieldChange { path: path.to_string(), before: a.clone(), after: b.clone() }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: Value, obj: &mut Value) -> Vec<FieldChange> {
        let t: Transform = serde_json::from_value(t).unwrap();
        compile(&[t]).unwrap()[0].apply("", obj)
    }

    #[test]
    fn ingress_hosts_follow_patterns_and_regexes_on_rules_tls_and_named_annotations() {
        let mut ing = json!({ "kind": "Ingress",
            "metadata": { "annotations": { "external-dns.alpha.kubernetes.io/hostname": "shop.east.example.com, api.east.example.com" } },
            "spec": { "rules": [{ "host": "shop.east.example.com" }, { "host": "static.example.org" }],
                      "tls": [{ "hosts": ["shop.east.example.com"] }] } });
        let changes = run(
            json!({ "ingress_hosts": { "map": { "*.east.example.com": "*.west.example.com" },
                                       "annotations": ["external-dns.alpha.kubernetes.io/hostname"] } }),
            &mut ing,
        );
        assert_eq!(ing["spec"]["rules"][0]["host"], "shop.west.example.com");
        assert_eq!(ing["spec"]["rules"][1]["host"], "static.example.org");
        assert_eq!(ing["spec"]["tls"][0]["hosts"][0], "shop.west.example.com");
        assert_eq!(
            ing["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"],
            "shop.west.example.com,api.west.example.com"
        );
        assert_eq!(
            changes[0],
            FieldChange {
                path: "/spec/rules/0/host".into(),
                before: json!("shop.east.example.com"),
                after: json!("shop.west.example.com")
            }
        );

        let mut ing = json!({ "kind": "Ingress", "spec": { "rules": [{ "host": "eu-shop.east.example.com" }] } });
        run(
            json!({ "ingress_hosts": { "regex": [{ "from": "^([a-z]+)-(.+)\\.east\\.", "to": "$2-$1.west." }] } }),
            &mut ing,
        );
        assert_eq!(ing["spec"]["rules"][0]["host"], "shop-eu.west.example.com");
    }

    #[test]
    fn namespaces_move_with_their_bindings_and_claims() {
        let t = json!({ "namespaces": { "shop": "shop-dr" } });
        let mut rb = json!({ "kind": "RoleBinding", "metadata": { "namespace": "shop" },
                             "subjects": [{ "kind": "ServiceAccount", "name": "web", "namespace": "shop" }] });
        run(t.clone(), &mut rb);
        assert_eq!(rb["metadata"]["namespace"], "shop-dr");
        assert_eq!(rb["subjects"][0]["namespace"], "shop-dr");
        let mut ns = json!({ "kind": "Namespace", "metadata": { "name": "shop" } });
        run(t.clone(), &mut ns);
        assert_eq!(ns["metadata"]["name"], "shop-dr");
        let mut pv =
            json!({ "kind": "PersistentVolume", "spec": { "claimRef": { "namespace": "shop", "name": "data" } } });
        run(t, &mut pv);
        assert_eq!(pv["spec"]["claimRef"]["namespace"], "shop-dr");
    }

    #[test]
    fn replicated_volumes_point_at_the_dr_copy_and_are_retained() {
        let mut pv = json!({ "kind": "PersistentVolume",
            "spec": { "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "gold",
                      "nfs": { "server": "10.0.0.1", "path": "/svm1_data/pvc-1" } } });
        let changes = run(
            json!({ "volumes": [{ "nfs_server": "10.0.0.1", "to_nfs_server": "10.1.0.1", "path_prefix": "/svm1_", "to_path_prefix": "/svm_dr_" }] }),
            &mut pv,
        );
        assert_eq!(pv["spec"]["nfs"], json!({ "server": "10.1.0.1", "path": "/svm_dr_data/pvc-1" }));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(changes.len(), 3);

        let mut csi = json!({ "kind": "PersistentVolume",
            "spec": { "csi": { "driver": "csi.trident.netapp.io", "volumeHandle": "east_pvc_1", "volumeAttributes": { "backendUUID": "a" } } } });
        run(
            json!({ "volumes": [{ "csi_driver": "csi.trident.netapp.io", "handle": "^east_(.*)$", "to_handle": "west_$1",
                                  "attributes": { "backendUUID": "b" } }] }),
            &mut csi,
        );
        assert_eq!(csi["spec"]["csi"]["volumeHandle"], "west_pvc_1");
        assert_eq!(csi["spec"]["csi"]["volumeAttributes"]["backendUUID"], "b");
        assert_eq!(csi["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    }

    #[test]
    fn classes_images_replicas_and_patches() {
        let mut sts = json!({ "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": { "name": "db", "namespace": "shop" },
            "spec": { "replicas": 3, "volumeClaimTemplates": [{ "spec": { "storageClassName": "gold" } }],
                      "template": { "spec": { "containers": [{ "image": "registry.east.example.com/db:15" }] } } } });
        run(json!({ "storage_classes": { "gold": "dr-gold" } }), &mut sts);
        run(json!({ "images": { "registry.east.example.com/": "registry.west.example.com/" } }), &mut sts);
        run(json!({ "replicas": { "replicas": 0 } }), &mut sts);
        let changes = run(
            json!({ "patch": { "match": { "kind": "StatefulSet", "namespace": "sh*" },
                                             "merge": { "metadata": { "labels": { "site": "west" } } } } }),
            &mut sts,
        );
        assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"], "dr-gold");
        assert_eq!(sts["spec"]["template"]["spec"]["containers"][0]["image"], "registry.west.example.com/db:15");
        assert_eq!(sts["spec"]["replicas"], 0);
        assert_eq!(
            changes,
            [FieldChange { path: "/metadata/labels".into(), before: json!(null), after: json!({ "site": "west" }) }]
        );
        let bad =
            compile(&[
                serde_json::from_value(json!({ "ingress_hosts": { "regex": [{ "from": "(", "to": "" }] } })).unwrap()
            ]);
        let Err(errors) = bad else { panic!("a bad regex compiled") };
        assert!(errors[0].message.starts_with("invalid regular expression"));
    }

    #[test]
    fn velero_resource_modifier_rules_are_accepted_as_written_for_velero() {
        let rules: Value = serde_yaml::from_str(
            "velero_modifiers:\n  version: v1\n  resourceModifierRules:\n  - conditions:\n      groupResource: persistentvolumeclaims\n      resourceNameRegex: \"^db-.*$\"\n      namespaces: [shop]\n    patches:\n    - operation: replace\n      path: /spec/storageClassName\n      value: premium\n    mergePatches:\n    - patchData: |\n        { \"metadata\": { \"labels\": { \"restored\": \"yes\" } } }\n",
        )
        .unwrap();
        let t: Transform = serde_json::from_value(rules).unwrap();
        let compiled = compile(&[t]).unwrap();
        let mut pvc = json!({ "kind": "PersistentVolumeClaim", "metadata": { "name": "db-data", "namespace": "shop" }, "spec": { "storageClassName": "gold" } });
        let changes = compiled[0].apply("persistentvolumeclaims", &mut pvc);
        assert_eq!(pvc["spec"]["storageClassName"], "premium");
        assert_eq!(pvc["metadata"]["labels"]["restored"], "yes");
        assert_eq!(changes.len(), 2);
        let mut other =
            json!({ "kind": "PersistentVolumeClaim", "metadata": { "name": "logs", "namespace": "shop" }, "spec": {} });
        assert!(compiled[0].apply("persistentvolumeclaims", &mut other).is_empty());
        let bad =
            compile(&[
                serde_json::from_value(json!({ "ingress_hosts": { "regex": [{ "from": "(", "to": "" }] } })).unwrap()
            ]);
        let Err(errors) = bad else { panic!("a bad regex compiled") };
        assert!(errors[0].message.starts_with("invalid regular expression"));
    }
}
