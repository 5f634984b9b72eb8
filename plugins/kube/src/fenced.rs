//! Fencing is a guard, not a label: drover's own writes (`kube.apply`, `kube.restore`,
//! `kube.scale`) refuse to bring workloads up in a namespace `kube.fence` marked — the
//! namespace was failed over, and running its apps here again would split the brain.
//!
//! A step may say otherwise, explicitly: `fenced: hold` writes workloads scaled to zero and
//! remembers the replicas they asked for (lifting the fence brings them up: a failback
//! restores into the fenced primary first), `fenced: ignore` writes them as they are.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use drover_api::ActionError;

use crate::actions::scale::{REPLICAS_BEFORE, SUSPEND_BEFORE};

/// What a write does with workloads bound for a fenced namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fenced {
    /// Refuse the step, changing nothing (default).
    #[default]
    Refuse,
    /// Write workloads at zero replicas (CronJobs suspended), remembering what they asked for:
    /// lifting the fence brings them up.
    Hold,
    /// Write them as they are.
    Ignore,
}

/// Whether writing this object starts something running.
pub fn starts_workload(object: &Value) -> bool {
    let kind = object["kind"].as_str().unwrap_or("");
    let owned = object.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|o| !o.is_empty());
    match kind {
        "Deployment" | "StatefulSet" | "ReplicationController" => replicas(object) > 0,
        "ReplicaSet" => !owned && replicas(object) > 0,
        "CronJob" => object.pointer("/spec/suspend").and_then(Value::as_bool) != Some(true),
        "DaemonSet" | "Job" | "Pod" => !owned,
        _ => false,
    }
}

fn replicas(object: &Value) -> i64 {
    object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

/// Rewrite a workload to stay down until the fence is lifted, remembering what it asked for
/// (the annotation `kube.fence`'s unfence reads). Kinds that cannot be held at zero are refused.
pub fn hold(object: &mut Value) -> Result<String, String> {
    let kind = object["kind"].as_str().unwrap_or("").to_string();
    let (field, key, down, wanted) = match kind.as_str() {
        "Deployment" | "StatefulSet" | "ReplicaSet" | "ReplicationController" => {
            ("replicas", REPLICAS_BEFORE, json!(0), json!(replicas(object)))
        }
        "CronJob" => (
            "suspend",
            SUSPEND_BEFORE,
            json!(true),
            json!(object.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false)),
        ),
        _ => return Err(format!("a {kind} cannot be held at zero")),
    };
    object["spec"][field] = down;
    if !object["metadata"]["annotations"].is_object() {
        object["metadata"]["annotations"] = json!({});
    }
    object["metadata"]["annotations"][key] = json!(wanted.to_string());
    Ok(format!("held at {field} {} until the fence is lifted (wants {wanted})", object["spec"][field]))
}

/// What the policy did to the workloads bound for fenced namespaces.
#[derive(Debug, Default)]
pub struct Guarded {
    /// Workloads the policy refuses to start (`describe`), empty unless `refuse`.
    pub refused: Vec<String>,
    /// `describe: what was done` for each workload held at zero.
    pub held: Vec<String>,
    /// Workloads written as they are into a fenced namespace (`ignore`).
    pub ignored: Vec<String>,
}

impl Guarded {
    /// Apply `policy` to one object bound for a fenced namespace.
    pub fn object(&mut self, policy: Fenced, describe: String, object: &mut Value) {
        if !starts_workload(object) {
            return;
        }
        match policy {
            Fenced::Refuse => self.refused.push(describe),
            Fenced::Ignore => self.ignored.push(describe),
            Fenced::Hold => match hold(object) {
                Ok(what) => self.held.push(format!("{describe}: {what}")),
                Err(why) => self.refused.push(format!("{describe} ({why})")),
            },
        }
    }
}

/// The refusal when workloads would start in fenced namespaces.
pub fn refusal(origin: &str, namespaces: &[String], workloads: &[String]) -> ActionError {
    let shown: Vec<&str> = workloads.iter().take(10).map(String::as_str).collect();
    let more = workloads.len().saturating_sub(shown.len());
    ActionError::permanent(format!(
        "{origin}: namespaces {} are fenced (drover.io/fenced=true), and this would start {}{}",
        namespaces.join(", "),
        shown.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() }
    ))
    .with_hint(
        "a fenced namespace was failed over and must stay down; lift the fence first (kube.fence with \
         `unfence: true`), or set `fenced: hold` to write workloads at zero (lifting the fence brings \
         them up) or `fenced: ignore` to run them anyway",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_deployment_remembers_what_it_asked_for() {
        let mut d = json!({ "kind": "Deployment", "metadata": { "name": "web" }, "spec": { "replicas": 3 } });
        assert!(starts_workload(&d));
        hold(&mut d).unwrap();
        assert_eq!(d["spec"]["replicas"], json!(0));
        assert_eq!(d["metadata"]["annotations"][REPLICAS_BEFORE], json!("3"));
        assert!(!starts_workload(&d));
    }

    #[test]
    fn a_daemonset_cannot_be_held() {
        let mut d = json!({ "kind": "DaemonSet", "metadata": { "name": "agent" }, "spec": {} });
        assert!(starts_workload(&d));
        assert!(hold(&mut d).is_err());
    }

    #[test]
    fn configmaps_and_scaled_down_workloads_start_nothing() {
        assert!(!starts_workload(&json!({ "kind": "ConfigMap" })));
        assert!(!starts_workload(&json!({ "kind": "Deployment", "spec": { "replicas": 0 } })));
        assert!(!starts_workload(&json!({ "kind": "CronJob", "spec": { "suspend": true } })));
    }
}
