//! `kube.volume_snapshot`: CSI VolumeSnapshots (`snapshot.storage.k8s.io/v1`) of selected
//! claims, waited for until the snapshot controller marks them `readyToUse` — a point-in-time
//! copy to keep before a failback or a blue/green switch. `kube.restore` can create claims from
//! them (`volume_snapshots` transform: `dataSource`).
//!
//! Names are `CLAIM-SUFFIX`, the suffix by default the run's id, so a resumed step finds the
//! snapshots it already asked for instead of taking new ones.

use std::collections::BTreeMap;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use drover_api::{ActionError, ActionSpec, Outputs, ParamError, Plan, StepContext, TypedAction, ValueType};

use super::custom::{create_or_get, required_kind, wait_until};
use crate::client::Kube;
use crate::select::{Found, Selection, require_namespaces, select};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSnapshotParams {
    /// The site whose cluster holds the claims.
    pub site: String,
    /// Namespaces of the claims.
    pub namespaces: Vec<String>,
    /// Claim names; default every claim in the namespaces (narrowed by `labels`).
    #[serde(default)]
    pub claims: Vec<String>,
    /// Label selector on the claims, as for `kubectl -l`.
    #[serde(default)]
    pub labels: Option<String>,
    /// VolumeSnapshotClass; default the cluster's default class.
    #[serde(default)]
    pub class: Option<String>,
    /// Snapshot names are `CLAIM-SUFFIX`; default the run id (lower case).
    #[serde(default)]
    pub suffix: Option<String>,
}

const API: &str = "snapshot.storage.k8s.io/v1";
const INSTALLED_BY: &str =
    "the CSI external-snapshotter CRDs and snapshot controller (github.com/kubernetes-csi/external-snapshotter)";

pub struct VolumeSnapshot;

impl VolumeSnapshotParams {
    fn suffix(&self, ctx: &StepContext) -> String {
        self.suffix.clone().unwrap_or_else(|| ctx.run_id.to_lowercase())
    }
}

/// The claims to snapshot; a named claim that is missing is an error naming it.
async fn claims(kube: &Kube, p: &VolumeSnapshotParams) -> Result<Vec<Found>, ActionError> {
    let sel = Selection {
        namespaces: p.namespaces.clone(),
        labels: p.labels.clone(),
        names: p.claims.clone(),
        kinds: vec!["PersistentVolumeClaim".into()],
    };
    let found = select(kube, &sel).await?;
    for ns in &p.namespaces {
        for c in &p.claims {
            if !found.iter().any(|f| f.namespace() == ns && f.name() == c) {
                return Err(ActionError::permanent(format!("{}: no PersistentVolumeClaim {ns}/{c}", kube.origin))
                    .with_hint("check the claim names and namespaces (`kubectl get pvc -n NS`)"));
            }
        }
    }
    if found.is_empty() {
        return Err(ActionError::permanent(format!(
            "{}: no PersistentVolumeClaims in {} match",
            kube.origin,
            p.namespaces.join(", ")
        ))
        .with_hint("check namespaces and labels"));
    }
    Ok(found)
}

#[async_trait]
impl TypedAction for VolumeSnapshot {
    type Params = VolumeSnapshotParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "kube.volume_snapshot",
        summary: "CSI VolumeSnapshots of selected claims, waited for until ready to use",
        outputs: &[
            ("snapshots", ValueType::List, "one entry per claim: namespace, claim, name, restore_size"),
            (
                "by_claim",
                ValueType::Map,
                "`NAMESPACE/CLAIM` → snapshot name (for the restore's volume_snapshots transform)",
            ),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    fn check(&self, p: &VolumeSnapshotParams) -> Result<(), Vec<ParamError>> {
        require_namespaces(&p.namespaces)
    }

    async fn plan(&self, ctx: &StepContext, p: VolumeSnapshotParams) -> Result<Plan, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let mut plan = Plan::new(format!("snapshot claims in {}", p.namespaces.join(", ")));
        match required_kind(&kube, API, "VolumeSnapshot", INSTALLED_BY).await {
            Ok(_) => plan = plan.check("VolumeSnapshot served", true, API),
            Err(e) => return Ok(plan.check("VolumeSnapshot served", false, e.message)),
        }
        if let Some(class) = &p.class {
            let k = required_kind(&kube, API, "VolumeSnapshotClass", INSTALLED_BY).await?;
            let api = kube.api(&k, "");
            let found = kube.call_or_absent(&format!("get VolumeSnapshotClass {class}"), || api.get(class)).await?;
            plan = plan.check(format!("VolumeSnapshotClass {class} exists"), found.is_some(), "");
        }
        match claims(&kube, &p).await {
            Ok(found) => {
                let suffix = p.suffix(ctx);
                for f in &found {
                    plan = plan.change(format!(
                        "create VolumeSnapshot {}/{}-{suffix} of claim {}",
                        f.namespace(),
                        f.name(),
                        f.name()
                    ));
                }
                Ok(plan.check("claims found", true, format!("{}", found.len())))
            }
            Err(e) => Ok(plan.check("claims found", false, e.message)),
        }
    }

    async fn run(&self, ctx: &StepContext, p: VolumeSnapshotParams) -> Result<Outputs, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let kind = required_kind(&kube, API, "VolumeSnapshot", INSTALLED_BY).await?;
        let found = claims(&kube, &p).await?;
        let suffix = p.suffix(ctx);
        let mut asked = vec![];
        for f in &found {
            let name = format!("{}-{suffix}", f.name());
            let mut spec = json!({ "source": { "persistentVolumeClaimName": f.name() } });
            if let Some(class) = &p.class {
                spec["volumeSnapshotClassName"] = json!(class);
            }
            let object = json!({
                "apiVersion": API, "kind": "VolumeSnapshot",
                "metadata": { "name": name, "namespace": f.namespace(),
                              "labels": { "app.kubernetes.io/managed-by": "drover" },
                              "annotations": { "drover.io/run": ctx.run_id } },
                "spec": spec,
            });
            let (live, created) = create_or_get(&kube, &kind, f.namespace(), object).await?;
            let source = live.pointer("/spec/source/persistentVolumeClaimName").and_then(Value::as_str);
            if !created && source != Some(f.name()) {
                return Err(ActionError::permanent(format!(
                    "{}: VolumeSnapshot {}/{name} exists and is not a snapshot of claim {}",
                    kube.origin,
                    f.namespace(),
                    f.name()
                ))
                .with_hint("choose another `suffix`"));
            }
            asked.push((f.namespace().to_string(), f.name().to_string(), name));
        }
        let mut snapshots = vec![];
        let mut by_claim = BTreeMap::new();
        for (ns, claim, name) in asked {
            let size = wait_until(
                &kube,
                ctx,
                &kind,
                &ns,
                &name,
                |s| {
                    if let Some(msg) = s.pointer("/status/error/message").and_then(Value::as_str) {
                        return Some(Err(ActionError::permanent(format!(
                            "{}: the snapshot of claim {ns}/{claim} failed: {msg}",
                            kube.origin
                        ))
                        .with_hint("look at the VolumeSnapshot's events and the CSI driver's snapshotter logs")));
                    }
                    (s.pointer("/status/readyToUse") == Some(&json!(true)))
                        .then(|| Ok(s.pointer("/status/restoreSize").cloned().unwrap_or(Value::Null)))
                },
                |s| {
                    if s.pointer("/status/boundVolumeSnapshotContentName").is_some() {
                        "taken, not ready to use yet".into()
                    } else {
                        "waiting for the snapshot controller".into()
                    }
                },
            )
            .await?;
            by_claim.insert(format!("{ns}/{claim}"), name.clone());
            snapshots.push(json!({ "namespace": ns, "claim": claim, "name": name, "restore_size": size }));
        }
        let mut out = Outputs::new();
        out.insert("snapshots".into(), json!(snapshots));
        out.insert("by_claim".into(), json!(by_claim));
        Ok(out)
    }
}
