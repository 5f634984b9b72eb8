//! The RBAC a site's drover identity needs, per family of actions — and nothing more. `drover
//! rbac` prints it; the tests against the real control plane run as a user bound only to it,
//! so a missing rule shows up as the 403 an operator would meet.
//!
//! A family is the set of actions that read or write the same things. A restore writes
//! whatever the backup holds (any kind, RBAC objects included), so its family is broad; the
//! others are narrow.

use serde_json::{Value, json};

/// One `rules:` entry of a ClusterRole.
#[derive(Debug, Clone)]
pub struct Rule {
    pub groups: &'static [&'static str],
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

impl Rule {
    fn to_json(&self) -> Value {
        json!({ "apiGroups": self.groups, "resources": self.resources, "verbs": self.verbs })
    }
}

/// A family of actions and the rules it needs.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: &'static str,
    pub actions: &'static [&'static str],
    pub why: &'static str,
    pub rules: &'static [Rule],
}

const READ: &[&str] = &["get", "list"];
/// What `kube.wait` needs of the kinds it waits on: it watches them across the cluster to be
/// told of changes (without `watch` it polls, a heavier load on the API server).
const READ_AND_WATCH: &[&str] = &["get", "list", "watch"];

/// The family whose `kube.wait` watches: custom kinds it waits on are added to it.
pub const WATCHES: &str = "workloads";

/// Every family.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "check",
        actions: &["kube.check"],
        why: "prove the cluster answers and the identity may write in the app namespaces (a dry-run create)",
        rules: &[
            Rule { groups: &[""], resources: &["namespaces"], verbs: &["get"] },
            Rule { groups: &[""], resources: &["configmaps"], verbs: &["list", "create"] },
        ],
    },
    Family {
        name: "workloads",
        actions: &["kube.scale", "kube.fence", "kube.wait"],
        why: "scale workloads down and back, mark namespaces fenced, wait until workloads are ready (watching them across the cluster)",
        rules: &[
            Rule { groups: &[""], resources: &["namespaces"], verbs: &["get", "patch"] },
            Rule {
                groups: &["apps"],
                resources: &["deployments", "statefulsets", "replicasets", "daemonsets"],
                verbs: &["get", "list", "watch", "patch"],
            },
            Rule { groups: &["batch"], resources: &["cronjobs", "jobs"], verbs: &["get", "list", "watch", "patch"] },
            Rule {
                groups: &[""],
                resources: &["pods", "persistentvolumeclaims", "replicationcontrollers"],
                verbs: READ_AND_WATCH,
            },
        ],
    },
    Family {
        name: "restore",
        actions: &["kube.restore", "kube.apply"],
        why: "create and update whatever the manifests or the backup hold, of any kind; RBAC objects need `bind` and `escalate`",
        rules: &[
            Rule { groups: &["*"], resources: &["*"], verbs: &["get", "list", "create", "patch", "update"] },
            Rule {
                groups: &["rbac.authorization.k8s.io"],
                resources: &["roles", "clusterroles"],
                verbs: &["bind", "escalate"],
            },
        ],
    },
    Family {
        name: "read",
        actions: &["kube.export", "kube.restore (from: live)"],
        why: "read every object of the app namespaces (and the cluster-scoped ones they use) on the site read from",
        rules: &[Rule { groups: &["*"], resources: &["*"], verbs: READ }],
    },
    Family {
        name: "delete",
        actions: &["kube.delete"],
        why: "remove what a rehearsal or a failover put up",
        rules: &[Rule { groups: &["*"], resources: &["*"], verbs: &["get", "list", "delete"] }],
    },
    Family {
        name: "velero",
        actions: &["velero.backup", "velero.restore", "velero.schedule"],
        why: "drive an installed Velero through its custom resources",
        rules: &[Rule {
            groups: &["velero.io"],
            resources: &["backups", "restores", "schedules", "backupstoragelocations"],
            verbs: &["get", "list", "create", "patch", "delete"],
        }],
    },
    Family {
        name: "snapshots",
        actions: &["kube.volume_snapshot"],
        why: "take CSI snapshots of the app's claims",
        rules: &[
            Rule {
                groups: &["snapshot.storage.k8s.io"],
                resources: &["volumesnapshots"],
                verbs: &["get", "list", "create", "delete"],
            },
            Rule { groups: &["snapshot.storage.k8s.io"], resources: &["volumesnapshotclasses"], verbs: READ },
            Rule { groups: &[""], resources: &["persistentvolumeclaims"], verbs: READ },
        ],
    },
];

/// Who the bindings name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    ServiceAccount { namespace: String, name: String },
}

impl Subject {
    /// `user:NAME` or `serviceaccount:NAMESPACE/NAME`.
    pub fn parse(text: &str) -> Result<Subject, String> {
        match text.split_once(':') {
            Some(("user", name)) if !name.is_empty() => Ok(Subject::User(name.into())),
            Some(("serviceaccount", rest)) => match rest.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                    Ok(Subject::ServiceAccount { namespace: ns.into(), name: name.into() })
                }
                _ => Err(format!("`{text}`: write serviceaccount:NAMESPACE/NAME")),
            },
            _ => Err(format!("`{text}`: write user:NAME or serviceaccount:NAMESPACE/NAME")),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Subject::User(name) => json!({ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name }),
            Subject::ServiceAccount { namespace, name } => {
                json!({ "kind": "ServiceAccount", "namespace": namespace, "name": name })
            }
        }
    }
}

/// The family of this name.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// Whether the workloads family lets `kube.wait` watch this resource (`""`: the core group).
pub fn family_watches(plural: &str, group: &str) -> bool {
    family(WATCHES).is_some_and(|f| {
        f.rules.iter().any(|r| r.verbs.contains(&"watch") && r.groups.contains(&group) && r.resources.contains(&plural))
    })
}

/// A custom kind `kube.wait` waits on, as `PLURAL.GROUP` (`carts.shop.example.com`): the
/// workloads family grants `watch` on the built-in kinds only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub plural: String,
    pub group: String,
}

impl Watched {
    /// `PLURAL.GROUP`, as `kubectl get crd` names a custom resource.
    pub fn parse(text: &str) -> Result<Watched, String> {
        let valid = |s: &str| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        match text.split_once('.') {
            Some((plural, group)) if valid(plural) && !plural.contains('.') && valid(group) && group.contains('.') => {
                Ok(Watched { plural: plural.into(), group: group.into() })
            }
            _ => Err(format!(
                "`{text}`: write the custom resource as PLURAL.GROUP, the name of its CustomResourceDefinition (`kubectl get crd`), e.g. carts.shop.example.com"
            )),
        }
    }

    fn to_json(&self) -> Value {
        json!({ "apiGroups": [self.group], "resources": [self.plural], "verbs": READ_AND_WATCH })
    }
}

/// A ClusterRole per family and a ClusterRoleBinding of each to `subject`; the workloads
/// family also reads and watches the custom kinds in `watched`.
pub fn manifests(families: &[&Family], subject: &Subject, watched: &[Watched]) -> Vec<Value> {
    let mut out = vec![];
    for f in families {
        let role = format!("drover-{}", f.name);
        let mut rules: Vec<Value> = f.rules.iter().map(Rule::to_json).collect();
        if f.name == WATCHES {
            rules.extend(watched.iter().map(Watched::to_json));
        }
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": role, "labels": { "app.kubernetes.io/managed-by": "drover" },
                          "annotations": { "drover.io/actions": f.actions.join(", "), "drover.io/why": f.why } },
            "rules": rules,
        }));
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": role, "labels": { "app.kubernetes.io/managed-by": "drover" } },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [subject.to_json()],
        }));
    }
    out
}

/// What a 403 tells: the verb, resource and group refused, parsed from the API server's
/// message (`User "x" cannot patch resource "deployments" in API group "apps" in the namespace
/// "shop"`), the one place where the server says the verb.
pub fn refused(message: &str) -> Option<(String, String, String, Option<String>)> {
    let rest = message.split_once(" cannot ")?.1;
    let (verb, rest) = rest.split_once(" resource \"")?;
    let (resource, rest) = rest.split_once('"')?;
    let group = rest.split_once("in API group \"").and_then(|(_, g)| g.split_once('"')).map(|(g, _)| g)?;
    let namespace = rest.split_once("in the namespace \"").and_then(|(_, n)| n.split_once('"')).map(|(n, _)| n.into());
    Some((verb.into(), resource.into(), group.into(), namespace))
}

/// The rule to add for a refusal, as YAML, and the family that grants it.
pub fn rule_for(verb: &str, resource: &str, group: &str) -> (String, Option<&'static str>) {
    let resource_base = resource.split('/').next().unwrap_or(resource);
    let grants = |r: &Rule| {
        (r.groups.contains(&"*") || r.groups.contains(&group))
            && (r.resources.contains(&"*") || r.resources.contains(&resource_base))
            && r.verbs.contains(&verb)
    };
    let family = FAMILIES.iter().find(|f| f.rules.iter().any(grants)).map(|f| f.name);
    (format!("{{ apiGroups: [\"{group}\"], resources: [\"{resource}\"], verbs: [\"{verb}\"] }}"), family)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_verb_resource_and_group() {
        let m = r#"deployments.apps "web" is forbidden: User "drover" cannot patch resource "deployments" in API group "apps" in the namespace "shop""#;
        assert_eq!(refused(m), Some(("patch".into(), "deployments".into(), "apps".into(), Some("shop".into()))));
        let m = r#"namespaces is forbidden: User "drover" cannot list resource "namespaces" in API group "" at the cluster scope"#;
        assert_eq!(refused(m), Some(("list".into(), "namespaces".into(), "".into(), None)));
        let (rule, family) = rule_for("patch", "deployments", "apps");
        assert_eq!(rule, r#"{ apiGroups: ["apps"], resources: ["deployments"], verbs: ["patch"] }"#);
        assert_eq!(family, Some("workloads"));
    }
}
