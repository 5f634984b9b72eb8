//! Manifests from files, folders and inline values: multi-document YAML or JSON, `List`s
//! flattened, every object checked for `apiVersion`, `kind` and `metadata.name` before anything
//! is sent, each remembered with the file and line it came from so errors point there.

use std::path::{Path, PathBuf};

use serde_json::Value;

use drover_api::ActionError;

/// One object to send, and where it was written.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub object: Value,
    /// `path/to/file.yaml:12` or `inline[3]`.
    pub origin: String,
}

impl Manifest {
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or("")
    }

    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or("")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }
}

/// Read every manifest under `paths` (files, or folders read recursively in name order;
/// `.yaml`, `.yml`, `.json`) and then the inline ones.
pub fn load(paths: &[PathBuf], inline: &[Value]) -> Result<Vec<Manifest>, ActionError> {
    let mut out = vec![];
    for path in paths {
        let mut files = vec![];
        collect_files(path, &mut files)?;
        if files.is_empty() {
            return Err(ActionError::permanent(format!("{}: no .yaml, .yml or .json files there", path.display()))
                .with_hint("check the path in `manifests:`"));
        }
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                ActionError::permanent(format!("cannot read {}: {e}", file.display()))
                    .with_hint("check the path and its permissions")
            })?;
            parse_documents(&text, &file.display().to_string(), &mut out)?;
        }
    }
    for (i, v) in inline.iter().enumerate() {
        let origin = format!("inline[{i}]");
        match v {
            Value::String(text) => parse_documents(text, &origin, &mut out)?,
            other => push_object(other.clone(), origin, &mut out)?,
        }
    }
    Ok(out)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), ActionError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        ActionError::permanent(format!("cannot read {}: {e}", path.display()))
            .with_hint("relative paths start at the runbook's directory")
    })?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| ActionError::permanent(format!("cannot list {}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else if matches!(entry.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Split on `---` lines, keeping each document's first line for messages.
pub fn parse_documents(text: &str, source: &str, out: &mut Vec<Manifest>) -> Result<(), ActionError> {
    let mut start_line = 1;
    let mut doc = String::new();
    let mut docs = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.strip_prefix("---").is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#')) {
            docs.push((start_line, std::mem::take(&mut doc)));
            start_line = i + 2;
        } else {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.push((start_line, doc));
    for (line, doc) in docs {
        if doc.trim().is_empty() {
            continue;
        }
        let value: Value = serde_yaml::from_str(&doc).map_err(|e| {
            let at = e.location().map(|l| line + l.line() - 1).unwrap_or(line);
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_string();
            ActionError::permanent(format!("{source}:{at}: not a valid manifest: {message}"))
                .with_hint("fix the YAML there; nothing was applied")
        })?;
        if value.is_null() {
            continue;
        }
        push_object(value, format!("{source}:{line}"), out)?;
    }
    Ok(())
}

fn push_object(value: Value, origin: String, out: &mut Vec<Manifest>) -> Result<(), ActionError> {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.ends_with("List") && value.get("items").is_some_and(Value::is_array) {
        for (i, item) in value["items"].as_array().into_iter().flatten().enumerate() {
            push_object(item.clone(), format!("{origin} items[{i}]"), out)?;
        }
        return Ok(());
    }
    let missing = |field: &str| {
        ActionError::permanent(format!("{origin}: the object has no {field}"))
            .with_hint(format!("add {field}; nothing was applied"))
    };
    if !value.is_object() {
        return Err(ActionError::permanent(format!("{origin}: a manifest must be a mapping"))
            .with_hint("each YAML document is one Kubernetes object; nothing was applied"));
    }
    if value.get("apiVersion").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(missing("apiVersion"));
    }
    if kind.is_empty() {
        return Err(missing("kind"));
    }
    if value.pointer("/metadata/name").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(missing("metadata.name"));
    }
    out.push(Manifest { object: value, origin });
    Ok(())
}

/// When a kind goes in an apply: what others depend on first (Helm's install order, short).
pub fn install_rank(kind: &str) -> u8 {
    match kind {
        "CustomResourceDefinition" => 0,
        "Namespace" => 1,
        "NetworkPolicy" | "ResourceQuota" | "LimitRange" | "PodSecurityPolicy" | "PodDisruptionBudget" => 2,
        "ServiceAccount" | "Secret" | "ConfigMap" | "StorageClass" | "PersistentVolume" => 3,
        "PersistentVolumeClaim" => 4,
        "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => 5,
        "Service" => 6,
        "DaemonSet" | "Pod" | "ReplicaSet" | "Deployment" | "HorizontalPodAutoscaler" | "StatefulSet" => 7,
        "Job" | "CronJob" => 8,
        "IngressClass" | "Ingress" => 9,
        _ => 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_errors_carry_their_line() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# nothing\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: s}}\n";
        let mut out = vec![];
        parse_documents(text, "app.yaml", &mut out).unwrap();
        let got: Vec<(&str, &str)> = out.iter().map(|m| (m.kind(), m.origin.as_str())).collect();
        assert_eq!(got, [("ConfigMap", "app.yaml:1"), ("Secret", "app.yaml:7 items[0]")]);

        let err = parse_documents("apiVersion: v1\n---\napiVersion: v1\nkind: X\nmetadata: {}\n", "b.yaml", &mut out)
            .unwrap_err();
        assert_eq!(err.message, "b.yaml:1: the object has no kind");
        let ok = "apiVersion: v1\nkind: A\nmetadata: {name: a}\n";
        let err = parse_documents(&format!("{ok}---\n\nkind: [\n"), "c.yaml", &mut vec![]).unwrap_err();
        assert!(err.message.starts_with("c.yaml:7: not a valid manifest"), "{}", err.message);
    }
}
