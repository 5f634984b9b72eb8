//! Seeding the primary: the sample apps (and their numbered copies, for a lab of many
//! applications) applied through drover's own `kube.apply`, then — when the lab has S3 — a
//! Velero-format backup of them through `kube.export`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize as _;
use serde_json::{Value, json};

use drover_api::testing;

use super::config::{LabConfig, copy_namespace};
use super::kube::LabKube;
use super::parts::{LabS3, write};
use super::site::Part;

/// Seed `east` and, with S3, back it up; says what plays S3 in `parts`.
pub(super) async fn primary(
    config: &LabConfig,
    dir: &Path,
    east: &LabKube,
    sites: std::collections::BTreeMap<String, Value>,
    s3: Option<&LabS3>,
    namespaces: &[String],
    parts: &mut Vec<Part>,
) -> Result<(), String> {
    // Seed the primary with the sample apps (and their copies), through drover's own apply.
    let ctx = testing::context(sites, Duration::from_secs(300));
    let mut manifests = vec![config.apps.clone()];
    if config.fleet.is_some() {
        // Each app of a fleet mounts its own first volume, the original app included.
        let copies = dir.join("app-copies");
        write_copies(&config.apps, 1, config.copies, true, &copies)?;
        manifests = vec![copies];
    } else if config.copies > 1 {
        let copies = dir.join("app-copies");
        write_copies(&config.apps, 2, config.copies, false, &copies)?;
        manifests.push(copies);
    }
    let apply = drover_kube::actions().into_iter().find(|a| a.info().name == "kube.apply").expect("built in");
    apply
        .run(&ctx, &json!({ "site": "east", "manifests": manifests }))
        .await
        .map_err(|e| format!("cannot seed the east cluster: {e}"))?;
    // A real control plane binds the seeded claims a moment later; the lab starts settled,
    // so what a run changes is all a test sees change.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !east.list("", "v1", "persistentvolumeclaims").await.iter().all(|c| c["status"]["phase"] == "Bound") {
        if Instant::now() > deadline {
            return Err("the east cluster did not bind the seeded volume claims within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(server) = s3 {
        let export = drover_kube::actions().into_iter().find(|a| a.info().name == "kube.export").expect("built in");
        server.bucket("dr-backups").await.map_err(|e| format!("the lab's S3: {e}"))?;
        export
            .run(&ctx, &json!({ "site": "east", "namespaces": namespaces, "to": { "site": "backups", "bucket": "dr-backups", "prefix": "velero", "backup": "lab-nightly" } }))
            .await
            .map_err(|e| format!("cannot take the lab's backup: {e}"))?;
        let (kind, who) = match server {
            LabS3::Moto(_) => ("real server", "moto"),
            LabS3::StandIn(_) => ("stand-in", "s3s-fs (built in)"),
        };
        parts.push(Part {
            name: "S3".into(),
            endpoint: server.url().to_string(),
            kind,
            note: format!("{who}; bucket dr-backups holds Velero backup lab-nightly of east"),
        });
    } else {
        parts.push(Part {
            name: "S3".into(),
            endpoint: "-".into(),
            kind: "missing",
            note: "switched off in the lab file (`s3: none`): unplanned failover needs the backup".into(),
        });
    }
    Ok(())
}

/// The n-th copy of one app object: namespace `shop` becomes `shop-n`, its volume and host
/// names follow; cluster-wide objects (CRDs, ...) are shared by every copy and not copied.
/// With `own_volume` (a fleet), its PersistentVolume mounts the app's first volume
/// (`/shop_n_v1`); copy 1 is the app itself, changed only there.
fn copy_object(mut o: Value, n: u32, own_volume: bool) -> Option<Value> {
    let ns = copy_namespace(n);
    let kind = o["kind"].as_str().unwrap_or_default().to_string();
    if own_volume
        && kind == "PersistentVolume"
        && let Some(path) = o.pointer_mut("/spec/nfs/path")
    {
        *path = json!(format!("/{}_v1", ns.replace('-', "_")));
    }
    if n == 1 {
        return Some(o);
    }
    let host = |h: &str| h.strip_prefix("shop.").map(|rest| format!("{ns}.{rest}")).unwrap_or_else(|| h.to_string());
    // Only fields the object has are rewritten: indexing a JSON value to write would add
    // fields it never had (a `spec` on a ConfigMap), which a real API server refuses.
    match kind.as_str() {
        "Namespace" => o["metadata"]["name"] = json!(ns),
        "PersistentVolume" => {
            let name = o["metadata"]["name"].as_str()?.to_string();
            o["metadata"]["name"] = json!(format!("{name}-{n}"));
            if let Some(claim) = o.pointer_mut("/spec/claimRef").filter(|c| c.is_object()) {
                claim["namespace"] = json!(ns);
            }
        }
        _ if o["metadata"]["namespace"].is_string() => {
            o["metadata"]["namespace"] = json!(ns);
            if let Some(v) = o.pointer_mut("/spec/volumeName")
                && let Some(name) = v.as_str()
            {
                *v = json!(format!("{name}-{n}"));
            }
            for s in o.pointer_mut("/subjects").and_then(Value::as_array_mut).into_iter().flatten() {
                if s["namespace"].is_string() {
                    s["namespace"] = json!(ns);
                }
            }
            for r in o.pointer_mut("/spec/rules").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(h) = r["host"].as_str() {
                    r["host"] = json!(host(h));
                }
            }
            if let Some(a) = o.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
                for v in a.values_mut() {
                    if let Some(h) = v.as_str().filter(|h| h.starts_with("shop.")) {
                        *v = json!(host(h));
                    }
                }
            }
        }
        _ => return None,
    }
    Some(o)
}

/// Write copies `first..=last` of every manifest under `apps` into `out` (one file per copy).
fn write_copies(apps: &Path, first: u32, last: u32, own_volume: bool, out: &Path) -> Result<(), String> {
    let mut docs = vec![];
    let mut files: Vec<PathBuf> = std::fs::read_dir(apps)
        .map_err(|e| format!("cannot read {}: {e}", apps.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).map_err(|e| format!("{}: {e}", f.display()))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    for n in first..=last {
        let mut text = String::new();
        for d in docs.iter().filter_map(|d| copy_object(d.clone(), n, own_volume)) {
            text.push_str("---\n");
            text.push_str(&serde_yaml::to_string(&d).map_err(|e| e.to_string())?);
        }
        write(&out.join(format!("{}.yaml", copy_namespace(n))), &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_gains_no_field_its_object_did_not_have() {
        // A real API server refused the copies when a ConfigMap came with `spec: {}` and a Role
        // with `spec: { rules: null }`.
        let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings", "namespace": "shop" },
                         "data": { "currency": "EUR" } });
        let copy = copy_object(cm, 2, false).unwrap();
        assert_eq!(
            copy,
            json!({ "apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": { "name": "settings", "namespace": "shop-2" }, "data": { "currency": "EUR" } })
        );
        let role = json!({ "kind": "Role", "metadata": { "name": "r", "namespace": "shop" }, "rules": [{ "verbs": ["get"] }] });
        assert!(copy_object(role, 2, false).unwrap().get("spec").is_none());
        let ing = json!({ "kind": "Ingress", "metadata": { "name": "web", "namespace": "shop" },
                          "spec": { "rules": [{ "host": "shop.east.example.com" }] } });
        assert_eq!(copy_object(ing, 3, false).unwrap()["spec"]["rules"][0]["host"], "shop-3.east.example.com");
    }

    #[test]
    fn in_a_fleet_each_app_mounts_its_own_first_volume() {
        let pv = json!({ "kind": "PersistentVolume", "metadata": { "name": "shop-db-data" },
                         "spec": { "nfs": { "server": "10.0.1.10", "path": "/db_data" }, "claimRef": { "namespace": "shop" } } });
        assert_eq!(copy_object(pv.clone(), 1, true).unwrap()["spec"]["nfs"]["path"], "/shop_v1");
        assert_eq!(copy_object(pv.clone(), 1, true).unwrap()["metadata"]["name"], "shop-db-data");
        let third = copy_object(pv.clone(), 3, true).unwrap();
        assert_eq!(
            (&third["spec"]["nfs"]["path"], &third["metadata"]["name"]),
            (&json!("/shop_3_v1"), &json!("shop-db-data-3"))
        );
        assert_eq!(
            copy_object(pv, 3, false).unwrap()["spec"]["nfs"]["path"],
            "/db_data",
            "copies without a fleet share it"
        );
    }
}
