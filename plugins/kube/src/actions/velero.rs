//! Driving an installed Velero: `velero.backup`, `velero.restore` and `velero.schedule` create
//! Velero's own custom resources (`velero.io/v1`) on a cluster and wait for Velero's final
//! phase, reporting its warnings, errors and failure reasons. Velero does the work; drover
//! orders it inside a runbook, checks the preconditions in `plan()` (CRDs, the backup storage
//! location, the backup to restore) and makes the result part of the report.

use std::collections::BTreeMap;

use async_trait::async_trait;
use kube::api::{Patch, PatchParams};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use drover_api::{
    ActionError, ActionSpec, HumanDuration, Outputs, ParamError, Plan, StepContext, TypedAction, ValueType,
};

use super::custom::{create_or_get, required_kind, wait_until};
use crate::client::{Kind, Kube};

const API: &str = "velero.io/v1";
const INSTALLED_BY: &str = "Velero (velero install, or its Helm chart) on this cluster";

/// Namespaces and resources, as Velero's `included*` / `excluded*` fields.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Resources as Velero names them: `deployments`, `persistentvolumeclaims`, `widgets.example.com`.
    #[serde(default)]
    pub resources: Vec<String>,
}

fn scope(include: &Filter, exclude: &Filter, labels: &BTreeMap<String, String>) -> Value {
    let mut spec = json!({});
    let mut put = |k: &str, v: &Vec<String>| {
        if !v.is_empty() {
            spec[k] = json!(v);
        }
    };
    put("includedNamespaces", &include.namespaces);
    put("includedResources", &include.resources);
    put("excludedNamespaces", &exclude.namespaces);
    put("excludedResources", &exclude.resources);
    if !labels.is_empty() {
        spec["labelSelector"] = json!({ "matchLabels": labels });
    }
    spec
}

fn text(v: &Value, p: &str) -> String {
    v.pointer(p).and_then(Value::as_str).unwrap_or("").to_string()
}

fn count(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

/// Where an object stands, for progress lines.
fn phase_line(v: &Value) -> String {
    let phase = text(v, "/status/phase");
    let progress = v.pointer("/status/progress");
    match progress {
        Some(p) => format!(
            "{} ({} of {} items)",
            if phase.is_empty() { "New" } else { &phase },
            p.get("itemsBackedUp").or_else(|| p.get("itemsRestored")).and_then(Value::as_i64).unwrap_or(0),
            p.get("totalItems").and_then(Value::as_i64).unwrap_or(0)
        ),
        None if phase.is_empty() => "waiting for Velero to pick it up".into(),
        None => phase,
    }
}

/// The outcome of a Backup or Restore in a final phase; None while Velero works.
fn outcome(what: &str, v: &Value, allow_partially_failed: bool) -> Option<Result<Outputs, ActionError>> {
    let phase = text(v, "/status/phase");
    let (warnings, errors) = (count(v, "/status/warnings"), count(v, "/status/errors"));
    let mut out = Outputs::new();
    out.insert("phase".into(), json!(phase));
    out.insert("warnings".into(), json!(warnings));
    out.insert("errors".into(), json!(errors));
    if let Some(p) = v.pointer("/status/progress") {
        out.insert(
            "items".into(),
            p.get("itemsBackedUp").or_else(|| p.get("itemsRestored")).cloned().unwrap_or(json!(0)),
        );
    }
    let logs = format!(
        "`velero {} logs {}` and `velero {} describe {} --details` show what",
        what.split(' ').next().unwrap_or("backup"),
        text(v, "/metadata/name"),
        what.split(' ').next().unwrap_or("backup"),
        text(v, "/metadata/name")
    );
    Some(match phase.as_str() {
        "Completed" => Ok(out),
        "PartiallyFailed" if allow_partially_failed => Ok(out),
        "PartiallyFailed" => Err(ActionError::permanent(format!(
            "Velero {what} partially failed: {errors} error(s), {warnings} warning(s)"
        ))
        .with_hint(format!("{logs}; set `allow_partially_failed: true` to accept it"))),
        "Failed" => Err(ActionError::permanent(format!(
            "Velero {what} failed: {}",
            v.pointer("/status/failureReason").and_then(Value::as_str).unwrap_or("no reason given")
        ))
        .with_hint(logs)),
        "FailedValidation" => Err(ActionError::permanent(format!(
            "Velero refused {what}: {}",
            v.pointer("/status/validationErrors")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
                .unwrap_or_default()
        ))
        .with_hint("fix the parameters named, then run the step with another `name`")),
        _ => return None,
    })
}

async fn storage_location_check(kube: &Kube, namespace: &str, name: &str) -> (bool, String) {
    let kind = match required_kind(kube, API, "BackupStorageLocation", INSTALLED_BY).await {
        Ok(k) => k,
        Err(e) => return (false, e.message),
    };
    let api = kube.api(&kind, namespace);
    match kube.call_or_absent(&format!("get BackupStorageLocation {namespace}/{name}"), || api.get(name)).await {
        Ok(Some(bsl)) => {
            let v = serde_json::to_value(bsl).unwrap_or_default();
            let phase = text(&v, "/status/phase");
            (
                phase != "Unavailable",
                format!("{namespace}/{name} {}", if phase.is_empty() { "(no phase yet)" } else { &phase }),
            )
        }
        Ok(None) => {
            (false, format!("no BackupStorageLocation {namespace}/{name} (`velero backup-location get` lists them)"))
        }
        Err(e) => (false, e.message().to_string()),
    }
}

/// The existing object must be the one this step would create (a resumed run); else the name
/// is taken by something else.
fn same_spec(kube: &Kube, kind: &Kind, live: &Value, want: &Value) -> Result<(), ActionError> {
    let spec = live.get("spec").cloned().unwrap_or_default();
    let differs = want.as_object().into_iter().flatten().any(|(k, v)| spec.get(k) != Some(v));
    if differs {
        return Err(ActionError::permanent(format!(
            "{}: {} {} exists with a different spec",
            kube.origin,
            kind.resource.kind,
            text(live, "/metadata/name")
        ))
        .with_hint("choose another `name` (Velero objects are not changed once created)"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

/// What a backup takes and where it goes: one declaration for `kube.velero.backup` and the
/// template of `kube.velero.schedule`, each with its own extra fields.
macro_rules! backup_params {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            pub site: String,
            /// Its name.
            pub name: String,
            /// Velero's namespace.
            #[serde(default = "velero_ns")]
            pub velero_namespace: String,
            #[serde(default)]
            pub include: Filter,
            #[serde(default)]
            pub exclude: Filter,
            /// Only objects with these labels.
            #[serde(default)]
            pub labels: BTreeMap<String, String>,
            /// The BackupStorageLocation.
            #[serde(default = "default_location")]
            pub storage_location: String,
            /// How long Velero keeps the backup (default Velero's, 30 days).
            #[serde(default)]
            pub ttl: Option<HumanDuration>,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            /// A Backup's spec, or a Schedule's backup template.
            fn backup_spec(&self, snapshot_volumes: Option<bool>) -> Value {
                let mut spec = scope(&self.include, &self.exclude, &self.labels);
                spec["storageLocation"] = json!(self.storage_location);
                if let Some(t) = self.ttl {
                    spec["ttl"] = json!(go_duration(t.0));
                }
                if let Some(s) = snapshot_volumes {
                    spec["snapshotVolumes"] = json!(s);
                }
                spec
            }
        }
    };
}

backup_params!(BackupParams {
    /// Take volume snapshots (default Velero's setting).
    #[serde(default)]
    snapshot_volumes: Option<bool>,
    /// Accept `PartiallyFailed` (the step succeeds and reports the errors).
    #[serde(default)]
    allow_partially_failed: bool,
});

fn velero_ns() -> String {
    "velero".into()
}

fn default_location() -> String {
    "default".into()
}

fn check_name(name: &str) -> Result<(), Vec<ParamError>> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(vec![ParamError::at(
            &["name"],
            format!("`{name}` is not a valid object name: lower-case letters, digits and `-`"),
        )])
    }
}

/// Create a Backup or Restore (or find the one a resumed step created) and wait for Velero's
/// final phase.
async fn create_and_wait(
    ctx: &StepContext,
    site: &str,
    velero_namespace: &str,
    kind_name: &str,
    name: &str,
    spec: Value,
    allow_partially_failed: bool,
) -> Result<Outputs, ActionError> {
    let kube = Kube::connect(ctx, site).await?;
    let kind = required_kind(&kube, API, kind_name, INSTALLED_BY).await?;
    let object = json!({ "apiVersion": API, "kind": kind_name,
                         "metadata": { "name": name, "namespace": velero_namespace,
                                       "labels": { "app.kubernetes.io/managed-by": "drover" } },
                         "spec": spec });
    let (live, created) = create_or_get(&kube, &kind, velero_namespace, object).await?;
    if !created {
        same_spec(&kube, &kind, &live, &spec)?;
    }
    let what = format!("{} {name}", kind_name.to_lowercase());
    wait_until(&kube, ctx, &kind, velero_namespace, name, |v| outcome(&what, v, allow_partially_failed), phase_line)
        .await
}

/// Velero writes durations the Go way: `720h0m0s`.
fn go_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
}

pub struct Backup;

#[async_trait]
impl TypedAction for Backup {
    type Params = BackupParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "velero.backup",
        summary: "Create a Velero Backup and wait for its final phase (warnings and errors reported)",
        outputs: &[
            ("phase", ValueType::String, "Velero's final phase"),
            ("warnings", ValueType::Int, "warnings Velero counted"),
            ("errors", ValueType::Int, "errors Velero counted"),
            ("items", ValueType::Int, "items backed up"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    fn check(&self, p: &BackupParams) -> Result<(), Vec<ParamError>> {
        check_name(&p.name)
    }

    async fn plan(&self, ctx: &StepContext, p: BackupParams) -> Result<Plan, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let plan = Plan::new(format!("Velero backup {} of {}", p.name, describe_scope(&p.include)));
        let served = required_kind(&kube, API, "Backup", INSTALLED_BY).await;
        let plan = plan.check("Velero installed", served.is_ok(), served.err().map(|e| e.message).unwrap_or_default());
        let (ok, detail) = storage_location_check(&kube, &p.velero_namespace, &p.storage_location).await;
        Ok(plan
            .check("backup storage location available", ok, detail)
            .change(format!("create Backup {}/{}", p.velero_namespace, p.name)))
    }

    async fn run(&self, ctx: &StepContext, p: BackupParams) -> Result<Outputs, ActionError> {
        let spec = p.backup_spec(p.snapshot_volumes);
        create_and_wait(ctx, &p.site, &p.velero_namespace, "Backup", &p.name, spec, p.allow_partially_failed).await
    }
}

fn describe_scope(f: &Filter) -> String {
    if f.namespaces.is_empty() { "every namespace".into() } else { f.namespaces.join(", ") }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExistingPolicy {
    /// Leave objects that exist alone (Velero's default).
    #[default]
    None,
    /// Update objects that exist.
    Update,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    pub site: String,
    /// The Restore's name.
    pub name: String,
    /// The Backup to restore.
    pub backup: String,
    #[serde(default = "velero_ns")]
    pub velero_namespace: String,
    #[serde(default)]
    pub include: Filter,
    #[serde(default)]
    pub exclude: Filter,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Restore namespace A into B: `{ shop: shop-dr }`.
    #[serde(default)]
    pub namespace_mapping: BTreeMap<String, String>,
    /// What to do with objects that already exist.
    #[serde(default)]
    pub existing: ExistingPolicy,
    /// Restore persistent volumes (default Velero's setting).
    #[serde(default)]
    pub restore_volumes: Option<bool>,
    #[serde(default)]
    pub allow_partially_failed: bool,
}

pub struct Restore;

async fn backup_check(kube: &Kube, p: &RestoreParams) -> (bool, String) {
    let kind = match required_kind(kube, API, "Backup", INSTALLED_BY).await {
        Ok(k) => k,
        Err(e) => return (false, e.message),
    };
    let api = kube.api(&kind, &p.velero_namespace);
    match kube.call_or_absent(&format!("get Backup {}", p.backup), || api.get(&p.backup)).await {
        Ok(Some(b)) => {
            let phase = text(&serde_json::to_value(b).unwrap_or_default(), "/status/phase");
            let ok = phase == "Completed" || (phase == "PartiallyFailed" && p.allow_partially_failed);
            (ok, format!("backup {} is {}", p.backup, if phase.is_empty() { "New" } else { &phase }))
        }
        Ok(None) => {
            (false, format!("no backup {} in {} (`velero backup get` lists them)", p.backup, p.velero_namespace))
        }
        Err(e) => (false, e.message().to_string()),
    }
}

#[async_trait]
impl TypedAction for Restore {
    type Params = RestoreParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "velero.restore",
        summary: "Create a Velero Restore from a backup and wait for its final phase",
        outputs: &[
            ("phase", ValueType::String, "Velero's final phase"),
            ("warnings", ValueType::Int, "warnings Velero counted"),
            ("errors", ValueType::Int, "errors Velero counted"),
            ("items", ValueType::Int, "items restored"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    fn check(&self, p: &RestoreParams) -> Result<(), Vec<ParamError>> {
        check_name(&p.name)
    }

    async fn plan(&self, ctx: &StepContext, p: RestoreParams) -> Result<Plan, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let (ok, detail) = backup_check(&kube, &p).await;
        Ok(Plan::new(format!("Velero restore {} from backup {}", p.name, p.backup))
            .check("backup restorable", ok, detail)
            .change(format!("create Restore {}/{}", p.velero_namespace, p.name)))
    }

    async fn run(&self, ctx: &StepContext, p: RestoreParams) -> Result<Outputs, ActionError> {
        let mut spec = scope(&p.include, &p.exclude, &p.labels);
        spec["backupName"] = json!(p.backup);
        if !p.namespace_mapping.is_empty() {
            spec["namespaceMapping"] = json!(p.namespace_mapping);
        }
        if p.existing == ExistingPolicy::Update {
            spec["existingResourcePolicy"] = json!("update");
        }
        if let Some(r) = p.restore_volumes {
            spec["restorePVs"] = json!(r);
        }
        create_and_wait(ctx, &p.site, &p.velero_namespace, "Restore", &p.name, spec, p.allow_partially_failed).await
    }
}

// ---------------------------------------------------------------------------------------------

backup_params!(ScheduleParams {
    /// Cron expression (`0 1 * * *`) or `@every 6h`, `@daily`, ...
    schedule: String,
    /// Create or keep it paused.
    #[serde(default)]
    paused: bool,
});

pub struct Schedule;

fn valid_schedule(s: &str) -> bool {
    let s = s.trim();
    if let Some(every) = s.strip_prefix("@every ") {
        return humantime::parse_duration(every.trim()).is_ok();
    }
    if ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"].contains(&s) {
        return true;
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    fields.len() == 5 && fields.iter().all(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || "*/,-?".contains(c)))
}

#[async_trait]
impl TypedAction for Schedule {
    type Params = ScheduleParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "velero.schedule",
        summary: "Create or update a Velero Schedule and wait until Velero enables it",
        outputs: &[
            ("phase", ValueType::String, "Enabled"),
            ("last_backup", ValueType::String, "when its last backup ran, if ever"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    fn check(&self, p: &ScheduleParams) -> Result<(), Vec<ParamError>> {
        check_name(&p.name)?;
        if !valid_schedule(&p.schedule) {
            return Err(vec![ParamError::at(
                &["schedule"],
                format!(
                    "`{}` is not a cron expression (five fields, e.g. `0 1 * * *`) or `@every 6h` / `@daily`",
                    p.schedule
                ),
            )]);
        }
        Ok(())
    }

    async fn plan(&self, ctx: &StepContext, p: ScheduleParams) -> Result<Plan, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let served = required_kind(&kube, API, "Schedule", INSTALLED_BY).await;
        let plan = Plan::new(format!("Velero schedule {} ({})", p.name, p.schedule)).check(
            "Velero installed",
            served.is_ok(),
            served.err().map(|e| e.message).unwrap_or_default(),
        );
        let (ok, detail) = storage_location_check(&kube, &p.velero_namespace, &p.storage_location).await;
        Ok(plan
            .check("backup storage location available", ok, detail)
            .change(format!("apply Schedule {}/{}", p.velero_namespace, p.name)))
    }

    async fn run(&self, ctx: &StepContext, p: ScheduleParams) -> Result<Outputs, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let kind = required_kind(&kube, API, "Schedule", INSTALLED_BY).await?;
        let template = p.backup_spec(None);
        let object = json!({ "apiVersion": API, "kind": "Schedule",
                             "metadata": { "name": p.name, "namespace": p.velero_namespace,
                                           "labels": { "app.kubernetes.io/managed-by": "drover" } },
                             "spec": { "schedule": p.schedule, "paused": p.paused, "template": template } });
        // A schedule is configuration: applied (server-side), so a changed runbook updates it.
        let api = kube.api(&kind, &p.velero_namespace);
        let mut params = PatchParams::apply(super::apply::FIELD_MANAGER);
        params.force = true;
        let patch = Patch::Apply(&object);
        kube.call(&format!("apply Schedule {}", p.name), || api.patch(&p.name, &params, &patch)).await?;
        let generation = |v: &Value| v.pointer("/metadata/generation").and_then(Value::as_i64);
        wait_until(
            &kube,
            ctx,
            &kind,
            &p.velero_namespace,
            &p.name,
            |v| {
                // Velero has seen this version of the spec once the phase is set after it.
                let seen = v
                    .pointer("/status/observedGeneration")
                    .and_then(Value::as_i64)
                    .is_none_or(|o| Some(o) >= generation(v));
                match text(v, "/status/phase").as_str() {
                    "Enabled" if seen => {
                        let mut out = Outputs::new();
                        out.insert("phase".into(), json!("Enabled"));
                        out.insert(
                            "last_backup".into(),
                            v.pointer("/status/lastBackup").cloned().unwrap_or(Value::Null),
                        );
                        Some(Ok(out))
                    }
                    "FailedValidation" => outcome(&format!("schedule {}", p.name), v, false),
                    _ => None,
                }
            },
            phase_line,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_cron_or_velero_shorthands() {
        for good in ["0 1 * * *", "*/15 * * * *", "0 0 1,15 * MON-FRI", "@every 6h", "@daily"] {
            assert!(valid_schedule(good), "{good}");
        }
        for bad in ["0 1 * *", "daily", "@every soon", "0 1 * * * *"] {
            assert!(!valid_schedule(bad), "{bad}");
        }
        assert_eq!(go_duration(std::time::Duration::from_secs(30 * 86400)), "720h0m0s");
    }
}
