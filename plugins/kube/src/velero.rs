//! Velero's backup format (`shared/docs/VELERO.md`): reading a backup tarball as a stream of
//! items, and writing one (for `kube.export`, and for tests that need real-format fixtures).
//!
//! Reading takes the legacy path of each item (one copy per item), refuses entries that
//! escape the archive root, bounds every entry and the whole archive (a gzip bomb ends in an
//! error, not an exhausted machine) and never unpacks to disk.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path};

use serde_json::{Value, json};

use drover_api::ActionError;

/// The format version Velero writes in `metadata/version`.
pub const FORMAT_VERSION: &str = "1.1.0";

/// One backed-up object.
#[derive(Debug, Clone)]
pub struct Item {
    /// Group-resource as in the archive: `deployments.apps`, `configmaps`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
    pub object: Value,
}

/// Bounds on what an archive may make us read: a crafted or damaged backup fails with a clear
/// error instead of exhausting memory or disk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single entry (a Kubernetes object is at most ~1.5 MiB in etcd).
    pub entry_bytes: u64,
    /// Everything the gzip stream unpacks to, tar headers included.
    pub total_bytes: u64,
    /// Most entries in one archive.
    pub entries: u64,
    /// Most bytes unpacked per compressed byte (a gzip bomb unpacks at ~1000:1; Kubernetes
    /// objects as JSON at 5–30:1), enforced once 64 MiB are unpacked.
    pub ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { entry_bytes: 16 << 20, total_bytes: 16 << 30, entries: 10_000_000, ratio: 200 }
    }
}

/// Counts the compressed bytes read.
struct Counted<R> {
    inner: R,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// The unpacked stream, failing once it outgrows the limits — before tar buffers anything
/// (tar reads long-name and PAX headers into memory whole).
struct Bounded<R> {
    inner: R,
    compressed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    unpacked: u64,
    limits: Limits,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.unpacked += n as u64;
        let compressed = self.compressed.load(std::sync::atomic::Ordering::Relaxed).max(1);
        let bomb = self.unpacked > 64 << 20 && self.unpacked / compressed > self.limits.ratio;
        if bomb || self.unpacked > self.limits.total_bytes {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "unpacks to more than {} bytes from {compressed} compressed bytes (a decompression bomb, or beyond the limit of {} bytes)",
                    self.unpacked, self.limits.total_bytes
                ),
            ));
        }
        Ok(n)
    }
}

/// What a read found besides the items.
#[derive(Debug, Clone, Default)]
pub struct ReadStats {
    pub entries: u64,
    pub items: u64,
    pub bytes: u64,
    pub version: Option<String>,
}

/// Where an entry of a backup belongs: (resource, namespace, name), for legacy item paths only.
pub fn item_path(path: &str) -> Option<(String, Option<String>, String)> {
    let rest = path.strip_prefix("resources/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [gr, "cluster", file] => Some((gr.to_string(), None, file.strip_suffix(".json")?.to_string())),
        [gr, "namespaces", ns, file] => {
            Some((gr.to_string(), Some(ns.to_string()), file.strip_suffix(".json")?.to_string()))
        }
        _ => None,
    }
}

/// A path inside an archive that stays inside it: relative, no `..`.
pub fn safe_path(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn corrupt(origin: &str, what: impl std::fmt::Display) -> ActionError {
    ActionError::permanent(format!("{origin}: {what}"))
        .with_hint("the backup is damaged or not a Velero backup; take a new one or pick another (`backup:`)")
}

/// Read a gzip-compressed Velero tarball, calling `each` for every item.
pub fn read_tarball(
    reader: impl Read,
    origin: &str,
    limits: Limits,
    mut each: impl FnMut(Item) -> Result<(), ActionError>,
) -> Result<ReadStats, ActionError> {
    let compressed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let gz = flate2::read::GzDecoder::new(Counted { inner: reader, read: compressed.clone() });
    let mut archive = tar::Archive::new(Bounded { inner: gz, compressed, unpacked: 0, limits });
    let mut stats = ReadStats::default();
    let entries = archive.entries().map_err(|e| corrupt(origin, format!("cannot read the archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            corrupt(origin, format!("corrupt or truncated archive after {} entries: {e}", stats.entries))
        })?;
        stats.entries += 1;
        if stats.entries > limits.entries {
            return Err(corrupt(origin, format!("more than {} entries", limits.entries)));
        }
        let path = entry.path().map_err(|e| corrupt(origin, format!("entry {}: bad path: {e}", stats.entries)))?;
        let path = path.into_owned();
        let shown = path.display().to_string();
        if !safe_path(&path) {
            return Err(ActionError::permanent(format!("{origin}: entry `{shown}` escapes the archive root"))
                .with_hint("refusing a crafted or damaged backup; nothing was restored"));
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > limits.entry_bytes {
            return Err(corrupt(origin, format!("entry `{shown}` is {size} bytes, more than any Kubernetes object")));
        }
        stats.bytes += size;
        if stats.bytes > limits.total_bytes {
            return Err(corrupt(origin, format!("the archive unpacks to more than {} bytes", limits.total_bytes)));
        }
        let shown = shown.trim_start_matches("./").to_string();
        if shown == "metadata/version" {
            let mut v = String::new();
            entry.read_to_string(&mut v).map_err(|e| corrupt(origin, format!("{shown}: {e}")))?;
            stats.version = Some(v.trim().to_string());
            continue;
        }
        let Some((resource, namespace, name)) = item_path(&shown) else { continue };
        let mut bytes = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut bytes).map_err(|e| corrupt(origin, format!("{shown}: truncated: {e}")))?;
        let object: Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(origin, format!("{shown}: not a JSON object: {e}")))?;
        stats.items += 1;
        each(Item { resource, namespace, name, object })?;
    }
    if stats.version.is_none() {
        return Err(corrupt(origin, "no metadata/version entry: not a Velero backup"));
    }
    Ok(stats)
}

/// Read an unpacked backup folder (the tarball's contents), calling `each` for every item.
pub fn read_folder(
    root: &Path,
    limits: Limits,
    mut each: impl FnMut(Item) -> Result<(), ActionError>,
) -> Result<ReadStats, ActionError> {
    let origin = root.display().to_string();
    let mut stats = ReadStats::default();
    let version = std::fs::read_to_string(root.join("metadata/version"))
        .map_err(|e| corrupt(&origin, format!("no metadata/version ({e}): not an unpacked Velero backup")))?;
    stats.version = Some(version.trim().to_string());
    let mut stack = vec![root.join("resources")];
    let mut files = vec![];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| corrupt(&origin, format!("{}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for file in files {
        stats.entries += 1;
        let relative = file.strip_prefix(root).unwrap_or(&file).to_string_lossy().into_owned();
        let Some((resource, namespace, name)) = item_path(&relative) else { continue };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size > limits.entry_bytes {
            return Err(corrupt(&origin, format!("{relative} is {size} bytes, more than any Kubernetes object")));
        }
        let bytes = std::fs::read(&file).map_err(|e| corrupt(&origin, format!("{relative}: {e}")))?;
        stats.bytes += bytes.len() as u64;
        let object: Value = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(&origin, format!("{relative}: not a JSON object: {e}")))?;
        stats.items += 1;
        each(Item { resource, namespace, name, object })?;
    }
    Ok(stats)
}

/// Writes a backup tarball exactly as Velero lays it out: `metadata/version`, and each item
/// twice (legacy path and `<version>-preferredversion/`).
pub struct TarballWriter<W: Write> {
    tar: tar::Builder<flate2::write::GzEncoder<W>>,
    /// `{"<apiVersion>/<Kind>": ["ns/name" | "name", ...]}` for `<B>-resource-list.json.gz`.
    pub resource_list: BTreeMap<String, Vec<String>>,
    pub items: u64,
}

impl<W: Write> TarballWriter<W> {
    pub fn new(out: W) -> std::io::Result<Self> {
        let mut w = TarballWriter {
            tar: tar::Builder::new(flate2::write::GzEncoder::new(out, flate2::Compression::fast())),
            resource_list: BTreeMap::new(),
            items: 0,
        };
        w.file("metadata/version", FORMAT_VERSION.as_bytes())?;
        Ok(w)
    }

    fn file(&mut self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar.append_data(&mut header, path, bytes)
    }

    /// Add one live object; `resource` is its group-resource (`deployments.apps`).
    pub fn add(&mut self, resource: &str, object: &Value) -> std::io::Result<()> {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str);
        let api_version = object["apiVersion"].as_str().unwrap_or("v1");
        let version = api_version.rsplit('/').next().unwrap_or("v1");
        let scope = match namespace {
            Some(ns) => format!("namespaces/{ns}"),
            None => "cluster".to_string(),
        };
        let bytes = serde_json::to_vec(object).map_err(std::io::Error::other)?;
        self.file(&format!("resources/{resource}/{scope}/{name}.json"), &bytes)?;
        self.file(&format!("resources/{resource}/{version}-preferredversion/{scope}/{name}.json"), &bytes)?;
        let key = format!("{api_version}/{}", object["kind"].as_str().unwrap_or_default());
        let id = match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        self.resource_list.entry(key).or_default().push(id);
        self.items += 1;
        Ok(())
    }

    pub fn finish(self) -> std::io::Result<W> {
        self.tar.into_inner()?.finish()
    }
}

/// The `velero-backup.json` of a backup: a `velero.io/v1` Backup with its status.
pub fn backup_object(
    name: &str,
    namespaces: &[String],
    phase: &str,
    started: &str,
    completed: &str,
    items: u64,
) -> Value {
    json!({
        "kind": "Backup", "apiVersion": "velero.io/v1",
        "metadata": { "name": name, "namespace": "velero", "labels": { "velero.io/storage-location": "default" } },
        "spec": { "includedNamespaces": namespaces, "storageLocation": "default", "ttl": "720h0m0s" },
        "status": { "version": 1, "formatVersion": FORMAT_VERSION, "phase": phase, "startTimestamp": started,
                    "completionTimestamp": completed, "expiration": completed,
                    "progress": { "totalItems": items, "itemsBackedUp": items } }
    })
}

/// gzip-compressed JSON, as Velero stores its `*.json.gz` artefacts.
pub fn gzip_json(v: &Value) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(v.to_string().as_bytes());
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_item_paths_only() {
        assert_eq!(
            item_path("resources/deployments.apps/namespaces/shop/web.json"),
            Some(("deployments.apps".into(), Some("shop".into()), "web".into()))
        );
        assert_eq!(
            item_path("resources/namespaces/cluster/shop.json"),
            Some(("namespaces".into(), None, "shop".into()))
        );
        assert_eq!(item_path("resources/deployments.apps/v1-preferredversion/namespaces/shop/web.json"), None);
        assert_eq!(item_path("metadata/version"), None);
        assert!(!safe_path(Path::new("resources/../../etc/passwd")));
        assert!(!safe_path(Path::new("/etc/passwd")));
    }

    #[test]
    fn a_written_tarball_reads_back_one_copy_per_item() {
        let mut w = TarballWriter::new(Vec::new()).unwrap();
        let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "a", "namespace": "shop" } });
        let ns = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "shop" } });
        w.add("configmaps", &cm).unwrap();
        w.add("namespaces", &ns).unwrap();
        assert_eq!(w.resource_list["v1/ConfigMap"], ["shop/a"]);
        let bytes = w.finish().unwrap();
        let mut seen = vec![];
        let stats = read_tarball(&bytes[..], "b.tar.gz", Limits::default(), |i| {
            seen.push((i.resource, i.namespace, i.name));
            Ok(())
        })
        .unwrap();
        assert_eq!(stats.version.as_deref(), Some("1.1.0"));
        assert_eq!(
            seen,
            [("configmaps".into(), Some("shop".into()), "a".into()), ("namespaces".into(), None, "shop".into())]
        );
        let err = read_tarball(&bytes[..bytes.len() / 2], "b.tar.gz", Limits::default(), |_| Ok(())).unwrap_err();
        assert!(err.message.starts_with("b.tar.gz: ") && err.message.contains("truncated"), "{}", err.message);
    }
}
