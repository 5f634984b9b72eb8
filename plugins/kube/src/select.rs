//! Choosing objects (namespaces × kinds × labels × names), and what "ready" means for each kind.

use serde_json::Value;

use drover_api::{ActionError, ParamError, PathSegment};

use crate::client::{Kind, Kube, describe};
use crate::lists::Sharing;

/// Which objects a step works on.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub namespaces: Vec<String>,
    /// A label selector, as for `kubectl -l`.
    pub labels: Option<String>,
    pub names: Vec<String>,
    /// Kinds as written: `Deployment`, `deployments.apps`.
    pub kinds: Vec<String>,
}

/// One selected object.
#[derive(Debug, Clone)]
pub struct Found {
    pub kind: Kind,
    pub object: Value,
}

impl Found {
    pub fn kind_name(&self) -> &str {
        &self.kind.resource.kind
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.object["metadata"]["namespace"].as_str().unwrap_or("")
    }

    /// "Deployment shop/web".
    pub fn describe(&self) -> String {
        describe(self.kind_name(), Some(self.namespace()), self.name())
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.object["metadata"]["annotations"][key].as_str()
    }
}

/// The parameter check every selecting action shares: namespaces must be named.
pub fn require_namespaces(namespaces: &[String]) -> Result<(), Vec<ParamError>> {
    if namespaces.is_empty() || namespaces.iter().any(|n| n.trim().is_empty()) {
        return Err(vec![ParamError {
            path: vec![PathSegment::Key("namespaces".into())],
            message: "name at least one namespace".into(),
            hint: Some("e.g. `namespaces: [shop]`; drover does not act on every namespace of a cluster".into()),
        }]);
    }
    Ok(())
}

/// Every object the selection names, in namespace, kind, name order.
pub async fn select(kube: &Kube, sel: &Selection) -> Result<Vec<Found>, ActionError> {
    let lists = lists(kube, sel).await?;
    let mut out: Vec<Found> = select_in(kube, sel, &lists, Sharing::Gathered).await?.into_iter().flatten().collect();
    sort(&mut out);
    Ok(out)
}

/// Objects in namespace, kind, name order.
pub fn sort(found: &mut [Found]) {
    found.sort_by(|a, b| (a.namespace(), a.kind_name(), a.name()).cmp(&(b.namespace(), b.kind_name(), b.name())));
}

/// The LISTs a selection takes: each namespaced kind in each namespace (`""` for a
/// cluster-scoped kind).
pub async fn lists(kube: &Kube, sel: &Selection) -> Result<Vec<(Kind, String)>, ActionError> {
    let mut lists = vec![];
    for kind_name in &sel.kinds {
        let kind = kube.kind_named(kind_name).await?;
        if kind.namespaced {
            lists.extend(sel.namespaces.iter().map(|ns| (kind.clone(), ns.clone())));
        } else {
            lists.push((kind, String::new()));
        }
    }
    Ok(lists)
}

/// What each of `lists` holds of the selection, in the order of `lists`.
pub async fn select_in(
    kube: &Kube,
    sel: &Selection,
    lists: &[(Kind, String)],
    sharing: Sharing,
) -> Result<Vec<Vec<Found>>, ActionError> {
    use futures::{StreamExt, TryStreamExt};
    // One LIST (paged) per kind and namespace, several in flight: a wait over 50 namespaces
    // must not look at them one after another.
    futures::stream::iter(lists.iter().cloned())
        .map(|(kind, ns)| list_one(kube, sel, kind, ns, sharing))
        .buffered(LISTS_IN_FLIGHT)
        .try_collect()
        .await
}

/// How many LIST requests `select` keeps in flight.
const LISTS_IN_FLIGHT: usize = 8;

async fn list_one(
    kube: &Kube,
    sel: &Selection,
    kind: Kind,
    ns: String,
    sharing: Sharing,
) -> Result<Vec<Found>, ActionError> {
    let items = kube.list_in(&kind, &ns, sel.labels.as_deref(), sharing).await?;
    let mut out = vec![];
    for item in items.iter() {
        let name = item.pointer("/metadata/name").and_then(Value::as_str);
        if !sel.names.is_empty() && !sel.names.iter().any(|n| Some(n.as_str()) == name) {
            continue;
        }
        let mut object = item.clone();
        object["kind"] = Value::String(kind.resource.kind.clone());
        object["apiVersion"] = Value::String(kind.resource.api_version.clone());
        out.push(Found { kind: kind.clone(), object });
    }
    Ok(out)
}

/// Where an object stands on its way to ready.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    Ready,
    /// Not yet; why, e.g. "1/3 available".
    Waiting(String),
    /// Will not get there by waiting (a failed Job).
    Failed(String),
}

/// A custom readiness test: a condition, or a field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Until {
    /// `status.conditions[type=NAME].status == "True"`.
    Condition(String),
    /// The field at this dotted path (`.status.phase`) equals the value.
    Field { path: String, equals: Value },
}

/// Readiness by the kind's usual meaning, or by `until` when given.
pub fn readiness(kind: &str, obj: &Value, until: Option<&Until>) -> Readiness {
    let int = |p: &str| obj.pointer(p).and_then(Value::as_i64);
    let generation_seen = match (int("/metadata/generation"), int("/status/observedGeneration")) {
        (Some(g), Some(o)) => o >= g,
        (Some(_), None) => false,
        _ => true,
    };
    if let Some(until) = until {
        return match until {
            Until::Condition(name) => match condition(obj, name) {
                Some("True") => Readiness::Ready,
                Some(other) => Readiness::Waiting(format!("condition {name} is {other}")),
                None => Readiness::Waiting(format!("no condition {name} yet")),
            },
            Until::Field { path, equals } => {
                let pointer = format!("/{}", path.trim_start_matches('.').replace('.', "/"));
                match obj.pointer(&pointer) {
                    Some(v) if v == equals || v.as_str().is_some_and(|s| Some(s) == equals.as_str()) => {
                        Readiness::Ready
                    }
                    Some(v) => Readiness::Waiting(format!("{path} is {v}, waiting for {equals}")),
                    None => Readiness::Waiting(format!("{path} is not set yet")),
                }
            }
        };
    }
    let want = int("/spec/replicas").unwrap_or(1);
    match kind {
        "Deployment" => {
            let available = int("/status/availableReplicas").unwrap_or(0);
            let updated = int("/status/updatedReplicas").unwrap_or(0);
            if generation_seen && available >= want && updated >= want {
                Readiness::Ready
            } else {
                Readiness::Waiting(format!("{available}/{want} available, {updated} updated"))
            }
        }
        "StatefulSet" | "ReplicaSet" => {
            let ready = int("/status/readyReplicas").unwrap_or(0);
            if generation_seen && ready >= want {
                Readiness::Ready
            } else {
                Readiness::Waiting(format!("{ready}/{want} ready"))
            }
        }
        "DaemonSet" => {
            let desired = int("/status/desiredNumberScheduled");
            let ready = int("/status/numberReady").unwrap_or(0);
            match desired {
                Some(d) if generation_seen && ready >= d => Readiness::Ready,
                Some(d) => Readiness::Waiting(format!("{ready}/{d} scheduled and ready")),
                None => Readiness::Waiting("not scheduled yet".into()),
            }
        }
        "Job" => {
            if condition(obj, "Failed") == Some("True") {
                Readiness::Failed(format!(
                    "the job failed: {}",
                    obj.pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|c| c.iter().find(|c| c["type"] == "Failed"))
                        .and_then(|c| c["message"].as_str())
                        .unwrap_or("no message")
                ))
            } else if condition(obj, "Complete") == Some("True") {
                Readiness::Ready
            } else {
                Readiness::Waiting(format!("{} succeeded", int("/status/succeeded").unwrap_or(0)))
            }
        }
        "PersistentVolumeClaim" => match obj.pointer("/status/phase").and_then(Value::as_str) {
            Some("Bound") => Readiness::Ready,
            Some("Lost") => Readiness::Failed("the claim lost its volume".into()),
            other => Readiness::Waiting(format!("phase {}", other.unwrap_or("unset"))),
        },
        _ => Readiness::Ready,
    }
}

fn condition<'a>(obj: &'a Value, name: &str) -> Option<&'a str> {
    obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == name)?["status"].as_str()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_deployment_is_ready_once_its_generation_is_seen_and_replicas_are_available() {
        let mut d = json!({ "metadata": { "generation": 2 }, "spec": { "replicas": 3 },
                            "status": { "observedGeneration": 1, "availableReplicas": 3, "updatedReplicas": 3 } });
        assert!(matches!(readiness("Deployment", &d, None), Readiness::Waiting(_)));
        d["status"]["observedGeneration"] = json!(2);
        assert_eq!(readiness("Deployment", &d, None), Readiness::Ready);
        d["status"]["availableReplicas"] = json!(1);
        assert_eq!(readiness("Deployment", &d, None), Readiness::Waiting("1/3 available, 3 updated".into()));
    }

    #[test]
    fn jobs_fail_claims_bind_and_custom_tests_read_fields_and_conditions() {
        let job = json!({ "status": { "conditions": [{ "type": "Failed", "status": "True", "message": "BackoffLimitExceeded" }] } });
        assert_eq!(readiness("Job", &job, None), Readiness::Failed("the job failed: BackoffLimitExceeded".into()));
        let pvc = json!({ "status": { "phase": "Bound" } });
        assert_eq!(readiness("PersistentVolumeClaim", &pvc, None), Readiness::Ready);
        let cert = json!({ "status": { "phase": "Issued", "conditions": [{ "type": "Ready", "status": "False" }] } });
        let field = Until::Field { path: ".status.phase".into(), equals: json!("Issued") };
        assert_eq!(readiness("Certificate", &cert, Some(&field)), Readiness::Ready);
        let cond = Until::Condition("Ready".into());
        assert_eq!(readiness("Certificate", &cert, Some(&cond)), Readiness::Waiting("condition Ready is False".into()));
    }
}
