//! Transforms declared in the runbook, applied in order to every cleaned object. Each reports
//! the fields it changed (before → after) so the preview can show exactly what the standby
//! will get that the primary did not have.

use std::collections::BTreeMap;

use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use drover_api::{ParamError, PathSegment};

mod names;
mod patches;
mod volumes;

/// One transform, as written in `transforms:` (a list; order matters).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// Move objects between namespaces: `{ shop: shop-dr }`. Also RoleBinding subjects and
    /// PV claim references. A key `*` moves every namespace not named, its `*` standing for
    /// the name: `{ "*": "*-rehearsal" }`.
    Namespaces(BTreeMap<String, String>),
    /// Rewrite Ingress hosts (rules and TLS).
    IngressHosts(IngressHosts),
    /// Map storage classes: `{ gold: dr-gold }` (PVCs, PVs, StatefulSet claim templates).
    StorageClasses(BTreeMap<String, String>),
    /// Point PersistentVolumes at the replicated copies of their volumes.
    Volumes(Vec<VolumeRule>),
    /// Rename PersistentVolumes, and the claims' `volumeName` with them: `{ suffix: -rehearsal }`
    /// (a copy's volumes beside the originals' in one cluster).
    VolumeNames(VolumeNamesRule),
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
    /// The volume (the first component of the NFS path) gets this suffix:
    /// `/shop_v1/data` → `/shop_v1_rehearsal/data`, for clones mounted beside their parents.
    #[serde(default)]
    pub volume_suffix: Option<String>,
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
pub struct VolumeNamesRule {
    /// Appended to every PersistentVolume's name.
    pub suffix: String,
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
    rewrite: Box<dyn Rewrite>,
}

/// What a compiled transform does to one object: each kind of transform, compiled and applied
/// in one place (`names`, `volumes`, `patches`).
trait Rewrite: Send + Sync {
    /// Change `obj` (of API `resource` and `kind`), recording each changed field.
    fn apply(&self, resource: &str, kind: &str, obj: &mut Value, changes: &mut Vec<FieldChange>);
}

impl Compiled {
    /// Apply to one object; returns what changed.
    pub fn apply(&self, resource: &str, obj: &mut Value) -> Vec<FieldChange> {
        let mut changes = vec![];
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        self.rewrite.apply(resource, &kind, obj, &mut changes);
        changes
    }
}

/// Where compiling one transform reports a bad pattern: `transforms[i].<key>...`.
struct Errors {
    index: usize,
    found: Vec<ParamError>,
}

impl Errors {
    fn at(&self, rest: &[PathSegment]) -> Vec<PathSegment> {
        let mut path = vec![PathSegment::Key("transforms".into()), PathSegment::Index(self.index)];
        path.extend_from_slice(rest);
        path
    }

    fn push(&mut self, rest: &[PathSegment], message: String) {
        let path = self.at(rest);
        self.found.push(ParamError { path, message, hint: None });
    }

    /// A regular expression, or an error at `rest`. Compiled once per process: a fleet's
    /// restores each compile the same host patterns, in their plans and again in their runs.
    fn regex(&mut self, re: &str, rest: &[PathSegment]) -> Option<Regex> {
        static COMPILED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Regex>>> =
            std::sync::LazyLock::new(Default::default);
        /// Patterns kept; past it the cache starts again (runbooks hold a handful).
        const KEPT: usize = 4096;
        if let Some(r) = COMPILED.lock().unwrap_or_else(|e| e.into_inner()).get(re) {
            return Some(r.clone());
        }
        match Regex::new(re) {
            Ok(r) => {
                let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
                if compiled.len() >= KEPT {
                    compiled.clear();
                }
                compiled.insert(re.to_string(), r.clone());
                Some(r)
            }
            Err(e) => {
                self.push(rest, format!("invalid regular expression: {e}"));
                None
            }
        }
    }
}

fn key(k: &str) -> PathSegment {
    PathSegment::Key(k.into())
}

/// Compile every transform, reporting bad patterns by their place in `transforms:`.
pub fn compile(list: &[Transform]) -> Result<Vec<Compiled>, Vec<ParamError>> {
    let mut out = vec![];
    let mut errors = Errors { index: 0, found: vec![] };
    for (i, t) in list.iter().enumerate() {
        errors.index = i;
        let (label, rewrite): (String, Box<dyn Rewrite>) = match t {
            Transform::Namespaces(m) => (format!("namespaces {}", pairs(m)), Box::new(names::Namespaces(m.clone()))),
            Transform::IngressHosts(h) => names::Hosts::compile(h, &mut errors),
            Transform::StorageClasses(m) => {
                (format!("storage classes {}", pairs(m)), Box::new(names::StorageClasses(m.clone())))
            }
            Transform::Volumes(rules) => volumes::Volumes::compile(rules, &mut errors),
            Transform::VolumeNames(r) => {
                (format!("volume names + {}", r.suffix), Box::new(volumes::VolumeNames(r.suffix.clone())))
            }
            Transform::Images(m) => (format!("images {}", pairs(m)), Box::new(names::Images(m.clone()))),
            Transform::VolumeSnapshots(m) => {
                (format!("claims from snapshots {}", pairs(m)), Box::new(volumes::Snapshots(m.clone())))
            }
            Transform::Replicas(r) => (format!("replicas {}", r.replicas), Box::new(names::Replicas(r.clone()))),
            Transform::VeleroModifiers(m) => patches::Velero::compile(m, &mut errors),
            Transform::Patch(p) => patches::Patch::compile(p, &mut errors),
        };
        out.push(Compiled { label, rewrite });
    }
    if errors.found.is_empty() { Ok(out) } else { Err(errors.found) }
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
    fn a_rehearsal_copy_moves_every_namespace_and_renames_its_volumes_onto_their_clones() {
        let moved = json!({ "namespaces": { "*": "*-rehearsal", "kube-system": "kube-system" } });
        let mut cm = json!({ "kind": "ConfigMap", "metadata": { "namespace": "shop-2" } });
        run(moved.clone(), &mut cm);
        assert_eq!(cm["metadata"]["namespace"], "shop-2-rehearsal");
        let mut named = json!({ "kind": "ConfigMap", "metadata": { "namespace": "kube-system" } });
        assert!(run(moved, &mut named).is_empty(), "a namespace named stays as mapped");

        let mut pv = json!({ "kind": "PersistentVolume", "metadata": { "name": "shop-2-db-data" },
            "spec": { "nfs": { "server": "10.0.1.10", "path": "/shop_2_v1/pg" } } });
        run(
            json!({ "volumes": [{ "nfs_server": "10.0.1.10", "to_nfs_server": "10.0.2.10", "volume_suffix": "_rehearsal" }] }),
            &mut pv,
        );
        assert_eq!(pv["spec"]["nfs"], json!({ "server": "10.0.2.10", "path": "/shop_2_v1_rehearsal/pg" }));
        let renamed = json!({ "volume_names": { "suffix": "-rehearsal" } });
        run(renamed.clone(), &mut pv);
        assert_eq!(pv["metadata"]["name"], "shop-2-db-data-rehearsal");
        let mut claim = json!({ "kind": "PersistentVolumeClaim", "spec": { "volumeName": "shop-2-db-data" } });
        run(renamed.clone(), &mut claim);
        assert_eq!(claim["spec"]["volumeName"], "shop-2-db-data-rehearsal");
        let mut unbound = json!({ "kind": "PersistentVolumeClaim", "spec": { "storageClassName": "gold" } });
        assert!(run(renamed, &mut unbound).is_empty(), "a claim not bound by name gains no volumeName");
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
