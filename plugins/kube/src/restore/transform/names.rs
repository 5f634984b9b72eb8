//! Transforms that rename: namespaces, Ingress hosts, storage classes, images, and replicas.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Value, json};

use super::{Errors, FieldChange, IngressHosts, ReplicasRule, Rewrite, each_index, key, rewrite};
use drover_api::PathSegment::Index;

/// Objects move between namespaces, with RoleBinding subjects and PV claim references.
pub(super) struct Namespaces(pub BTreeMap<String, String>);

impl Rewrite for Namespaces {
    fn apply(&self, _: &str, kind: &str, obj: &mut Value, changes: &mut Vec<FieldChange>) {
        let to = |ns: &str| self.0.get(ns).cloned().or_else(|| self.0.get("*").map(|pattern| pattern.replace('*', ns)));
        rewrite(obj, "/metadata/namespace", changes, to);
        if kind == "Namespace" {
            rewrite(obj, "/metadata/name", changes, to);
        }
        if kind == "RoleBinding" || kind == "ClusterRoleBinding" {
            for i in 0..each_index(obj, "/subjects") {
                rewrite(obj, &format!("/subjects/{i}/namespace"), changes, to);
            }
        }
        if kind == "PersistentVolume" {
            rewrite(obj, "/spec/claimRef/namespace", changes, to);
        }
    }
}

/// Ingress hosts (rules, TLS, and annotations naming hosts), by pattern or regex.
pub(super) struct Hosts {
    rules: Vec<(Regex, String)>,
    annotations: Vec<String>,
}

impl Hosts {
    pub(super) fn compile(h: &IngressHosts, errors: &mut Errors) -> (String, Box<dyn Rewrite>) {
        let mut rules = vec![];
        let listed = h.patterns.iter().map(|r| (&r.from, &r.to));
        for (from, to) in h.map.iter().chain(listed) {
            let (re, rep) = host_pattern(from, to);
            if let Some(r) = errors.regex(&re, &[key("ingress_hosts")]) {
                rules.push((r, rep));
            }
        }
        for (j, r) in h.regex.iter().enumerate() {
            if let Some(re) = errors.regex(&r.from, &[key("ingress_hosts"), key("regex"), Index(j)]) {
                rules.push((re, r.to.clone()));
            }
        }
        let mut all: Vec<String> = h.map.iter().map(|(a, b)| format!("{a} → {b}")).collect();
        all.extend(h.patterns.iter().map(|r| format!("{} → {}", r.from, r.to)));
        all.extend(h.regex.iter().map(|r| format!("/{}/ → {}", r.from, r.to)));
        (format!("ingress hosts {}", all.join(", ")), Box::new(Hosts { rules, annotations: h.annotations.clone() }))
    }

    fn host(&self, h: &str) -> Option<String> {
        self.rules.iter().find(|(re, _)| re.is_match(h)).map(|(re, rep)| re.replace(h, rep.as_str()).into_owned())
    }
}

impl Rewrite for Hosts {
    fn apply(&self, _: &str, kind: &str, obj: &mut Value, changes: &mut Vec<FieldChange>) {
        if kind != "Ingress" {
            return;
        }
        let host = |h: &str| self.host(h);
        for i in 0..each_index(obj, "/spec/rules") {
            rewrite(obj, &format!("/spec/rules/{i}/host"), changes, host);
        }
        for i in 0..each_index(obj, "/spec/tls") {
            for j in 0..each_index(obj, &format!("/spec/tls/{i}/hosts")) {
                rewrite(obj, &format!("/spec/tls/{i}/hosts/{j}"), changes, host);
            }
        }
        for a in &self.annotations {
            let path = format!("/metadata/annotations/{}", a.replace('~', "~0").replace('/', "~1"));
            // external-dns takes a comma-separated list.
            rewrite(obj, &path, changes, |list| {
                Some(
                    list.split(',')
                        .map(|h| host(h.trim()).unwrap_or_else(|| h.trim().to_string()))
                        .collect::<Vec<_>>()
                        .join(","),
                )
            });
        }
    }
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

/// Storage classes of claims, volumes and StatefulSet claim templates.
pub(super) struct StorageClasses(pub BTreeMap<String, String>);

impl Rewrite for StorageClasses {
    fn apply(&self, _: &str, kind: &str, obj: &mut Value, changes: &mut Vec<FieldChange>) {
        let to = |c: &str| self.0.get(c).cloned();
        match kind {
            "PersistentVolumeClaim" | "PersistentVolume" => rewrite(obj, "/spec/storageClassName", changes, to),
            "StatefulSet" => {
                for i in 0..each_index(obj, "/spec/volumeClaimTemplates") {
                    let path = format!("/spec/volumeClaimTemplates/{i}/spec/storageClassName");
                    rewrite(obj, &path, changes, to);
                }
            }
            _ => {}
        }
    }
}

/// Image references by prefix, the longest matching prefix winning.
pub(super) struct Images(pub BTreeMap<String, String>);

impl Rewrite for Images {
    fn apply(&self, _: &str, kind: &str, obj: &mut Value, changes: &mut Vec<FieldChange>) {
        let Some(spec) = pod_spec_path(kind) else { return };
        for list in ["containers", "initContainers"] {
            for i in 0..each_index(obj, &format!("{spec}/{list}")) {
                rewrite(obj, &format!("{spec}/{list}/{i}/image"), changes, |image| {
                    self.0
                        .iter()
                        .filter(|(from, _)| image.starts_with(from.as_str()))
                        .max_by_key(|(from, _)| from.len())
                        .map(|(from, to)| format!("{to}{}", &image[from.len()..]))
                });
            }
        }
    }
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

/// The replicas of matching Deployments and StatefulSets.
pub(super) struct Replicas(pub ReplicasRule);

impl Rewrite for Replicas {
    fn apply(&self, _: &str, kind: &str, obj: &mut Value, changes: &mut Vec<FieldChange>) {
        let rule = &self.0;
        if !matches!(kind, "Deployment" | "StatefulSet") || !rule.matching.matches(obj) {
            return;
        }
        let before = obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1));
        if before != json!(rule.replicas) {
            changes.push(FieldChange { path: "/spec/replicas".into(), before, after: json!(rule.replicas) });
            obj["spec"]["replicas"] = json!(rule.replicas);
        }
    }
}
