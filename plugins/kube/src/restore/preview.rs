//! What a dry run shows and writes: counts per kind and namespace, and the transformed
//! manifests (Secrets redacted unless asked) in private files.

use super::*;

/// Counts per kind and per namespace.
pub(super) fn counts(objects: &[Restorable]) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (mut by_kind, mut by_ns) = (BTreeMap::new(), BTreeMap::new());
    for o in objects {
        *by_kind.entry(o.kind().to_string()).or_insert(0) += 1;
        *by_ns.entry(o.namespace().unwrap_or("(cluster)").to_string()).or_insert(0) += 1;
    }
    (by_kind, by_ns)
}

pub(super) fn render_counts(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

pub(super) fn write_preview(dir: &std::path::Path, objects: &[Restorable], secrets: bool) -> Result<(), ActionError> {
    for o in objects {
        let sub = dir.join(o.namespace().unwrap_or("_cluster"));
        drover_api::procs::create_private_dir_all(&sub)
            .map_err(|e| ActionError::permanent(format!("cannot create {}: {e}", sub.display())))?;
        let file = sub.join(format!("{}-{}.yaml", o.kind().to_lowercase(), o.name()));
        let mut object = o.object();
        if o.kind() == "Secret" && !secrets {
            redact_secret(&mut object);
        }
        let text = serde_yaml::to_string(&object).unwrap_or_default();
        drover_api::procs::write_private(&file, text.as_bytes())
            .map_err(|e| ActionError::permanent(format!("cannot write {}: {e}", file.display())))?;
    }
    Ok(())
}

/// A Secret as a preview shows it by default: its keys, each value replaced by its size.
fn redact_secret(secret: &mut Value) {
    use base64::Engine;
    for (field, encoded) in [("data", true), ("stringData", false)] {
        if let Some(Value::Object(values)) = secret.get_mut(field) {
            for value in values.values_mut() {
                let text = value.as_str().unwrap_or_default();
                let size = if encoded {
                    base64::engine::general_purpose::STANDARD.decode(text).map(|b| b.len()).unwrap_or(text.len())
                } else {
                    text.len()
                };
                *value = json!(format!("<redacted: {size} bytes; preview_secrets: true shows it>"));
            }
        }
    }
}
