//! etcd: control-plane snapshots operators already rely on, taken and checked by drover.
//!
//! `etcd.snapshot` streams a snapshot from a member through etcd's gRPC gateway (JSON over
//! HTTP: `POST /v3/maintenance/snapshot`, the same stream `etcdctl snapshot save` reads) into
//! an S3 multipart upload — never the whole snapshot in memory — checks the SHA-256 etcd
//! appends to the stream, records revision, size, hash and key count beside it, and keeps the
//! newest N snapshots of the cluster. `etcd.verify` reads one back and checks it is
//! complete and readable (size, checksum, bbolt header) without restoring it, optionally
//! saving it to a file for `etcdctl snapshot restore`.
//!
//! Objects are named `PREFIX/CLUSTER/CLUSTER-MEMBER-YYYYMMDDTHHMMSSZ.db` (member as etcd's
//! hex id), so the name says which cluster, which member and when. The facts go in a small
//! JSON object beside it, `….db.facts.json` — not in the snapshot's metadata, which S3 can only
//! change by copying the object, and cannot copy in one call above 5 GB. What is known before
//! the stream (revision, keys, member, version) is also the snapshot's own metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client as S3;
use base64::Engine as _;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use drover_api::{
    Action, ActionError, ActionSpec, HumanDuration, Outputs, ParamError, Plan, Progress, SecretRef, StepContext,
    TypedAction, ValueType, typed,
};

mod refusal;
mod snapshot;
mod verify;

pub use snapshot::{Snapshot, SnapshotParams};
pub use verify::{Verify, VerifyParams};

/// Every etcd action.
pub fn actions() -> Vec<Arc<dyn Action>> {
    vec![typed(Snapshot), typed(Verify)]
}

/// The site sections this plugin reads.
pub fn site_sections() -> Vec<drover_api::SiteSection> {
    vec![drover_api::SiteSection::of::<EtcdSite>("etcd", "the members of an etcd cluster")]
}

/// A site's `etcd:` settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdSite {
    /// Client URLs of the members, e.g. `https://10.0.0.1:2379`; the first that answers is used.
    pub endpoints: Vec<String>,
    /// CA bundle (PEM file) that signed the members' certificates.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), by reference: `file:PATH` or `env:VAR`.
    #[serde(default)]
    pub cert: Option<SecretRef>,
    /// Client key (PEM), by reference.
    #[serde(default)]
    pub key: Option<SecretRef>,
    /// Per-request timeout (the snapshot stream itself is bounded by the step's timeout).
    #[serde(default = "ten")]
    pub timeout: HumanDuration,
}

fn ten() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// Where snapshots are kept.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// The site whose `s3:` settings name the endpoint and credentials.
    pub site: String,
    pub bucket: String,
    #[serde(default)]
    pub prefix: Option<String>,
}

/// SHA-256 length: etcd ends the snapshot stream with the hash of everything before it.
const HASH_LEN: usize = 32;
/// S3 multipart part size (S3's minimum for all but the last part is 5 MiB).
const PART: usize = 8 * 1024 * 1024;
/// bbolt's meta page magic, at offset 16 of the file.
const BOLT_MAGIC: u32 = 0xED0C_DAED;

struct Member {
    http: reqwest::Client,
    url: String,
    /// Hears a TLS member's refusal when a call fails without saying why.
    probe: Option<Arc<refusal::Probe>>,
}

impl Member {
    /// The first endpoint that answers a status call, with that status.
    async fn connect(ctx: &StepContext, site: &str) -> Result<(Member, Value), ActionError> {
        let cfg: EtcdSite = ctx.site_section(site, "etcd")?;
        if cfg.endpoints.is_empty() {
            return Err(ActionError::permanent(format!("site `{site}`: etcd.endpoints is empty"))
                .with_hint("list the members' client URLs, e.g. https://10.0.0.1:2379"));
        }
        let mut builder = reqwest::Client::builder().connect_timeout(cfg.timeout.0);
        let mut ca_pem = None;
        if let Some(ca) = &cfg.ca_file {
            let path = ctx.resolve_path(ca);
            let pem = std::fs::read(&path)
                .map_err(|e| ActionError::permanent(format!("cannot read etcd CA {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ActionError::permanent(format!("etcd CA {} is not PEM: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
            ca_pem = Some(pem);
        }
        let mut identity_pem = None;
        match (&cfg.cert, &cfg.key) {
            (Some(c), Some(k)) => {
                let pem = format!(
                    "{}\n{}",
                    c.resolve_for(site, "etcd.cert")?.expose(),
                    k.resolve_for(site, "etcd.key")?.expose()
                );
                let id = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| {
                    ActionError::permanent(format!("site `{site}`: the etcd client certificate or key is not PEM: {e}"))
                })?;
                builder = builder.identity(id);
                identity_pem = Some(pem);
            }
            (None, None) => {}
            _ => {
                return Err(ActionError::permanent(format!(
                    "site `{site}`: etcd needs both `cert` and `key`, or neither"
                )));
            }
        }
        let http = builder.build().map_err(|e| ActionError::permanent(format!("etcd client: {e}")))?;
        // Without a probe a refusal is only retried until the step's deadline: worse, not wrong.
        let probe = refusal::Probe::new(ca_pem.as_deref(), identity_pem.as_ref().map(|p| p.as_bytes()))
            .inspect_err(|e| tracing::debug!("no TLS probe for etcd of site `{site}`: {e}"))
            .ok()
            .map(Arc::new);
        let mut errors = vec![];
        for url in &cfg.endpoints {
            let m = Member { http: http.clone(), url: url.trim_end_matches('/').to_string(), probe: probe.clone() };
            match m.call("/v3/maintenance/status", json!({}), cfg.timeout.0).await {
                Ok(status) => return Ok((m, status)),
                Err(e) => errors.push(e),
            }
        }
        let said: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        let message = format!("no etcd member of site `{site}` answered: {}", said.join("; "));
        if errors.iter().all(|e| !e.is_retryable()) {
            // Every member refused us for the same kind of reason (TLS, a wrong answer): waiting will not help.
            let hint =
                errors[0].hint.clone().unwrap_or_else(|| "check the endpoints and the site's etcd settings".into());
            return Err(ActionError::permanent(message).with_hint(hint));
        }
        Err(ActionError::retryable(message)
            .with_hint("check the endpoints, that etcd runs, and (with TLS) the CA, cert and key"))
    }

    async fn call(&self, path: &str, body: Value, timeout: Duration) -> Result<Value, ActionError> {
        let url = format!("{}{path}", self.url);
        let resp = match self.http.post(&url).json(&body).timeout(timeout).send().await {
            Ok(resp) => resp,
            Err(e) => {
                let mut why = drover_api::causes(&e);
                if !drover_api::is_certificate_failure(&why)
                    && let Some(probe) = &self.probe
                    && let Some(alert) = probe.refusal(&self.url, timeout).await
                {
                    why = alert;
                }
                if drover_api::is_certificate_failure(&why) {
                    return Err(ActionError::permanent(format!("etcd {}: the TLS handshake failed: {why}", self.url)).with_hint(
                        "check the site's etcd ca_file (the CA of the members' certificates) and cert/key (etcd with --client-cert-auth wants them)",
                    ));
                }
                return Err(ActionError::retryable(format!("etcd {} is unreachable: {why}", self.url))
                    .with_hint("check the endpoint and that etcd runs"));
            }
        };
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ActionError::retryable(format!("etcd {url}: {e}")))?;
        if !status.is_success() {
            let e = format!("etcd {url} answered {status}: {}", text.chars().take(300).collect::<String>());
            return Err(if status.is_server_error() { ActionError::retryable(e) } else { ActionError::permanent(e) });
        }
        serde_json::from_str(&text)
            .map_err(|e| ActionError::permanent(format!("etcd {url} answered what is not JSON: {e}")))
    }

    /// Number of keys, and the revision they were counted at.
    async fn key_count(&self, timeout: Duration) -> Result<(u64, u64), ActionError> {
        // key "\0" with range_end "\0": every key.
        let all = base64::engine::general_purpose::STANDARD.encode([0u8]);
        let r = self.call("/v3/kv/range", json!({ "key": all, "range_end": all, "count_only": true }), timeout).await?;
        Ok((num(&r["count"]), num(&r["header"]["revision"])))
    }
}

/// etcd's gateway writes 64-bit numbers as strings.
fn num(v: &Value) -> u64 {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

fn member_hex(status: &Value) -> String {
    format!("{:x}", num(&status["header"]["member_id"]))
}

/// Hashes everything but the last 32 bytes seen, which it holds back: at the end they must be
/// the SHA-256 of the rest.
#[derive(Default)]
struct Trailer {
    hasher: Sha256,
    held: Vec<u8>,
    size: u64,
    head: Vec<u8>,
}

impl Trailer {
    fn feed(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        if self.head.len() < 20 {
            let want = 20 - self.head.len();
            self.head.extend_from_slice(&data[..want.min(data.len())]);
        }
        self.held.extend_from_slice(data);
        if self.held.len() > HASH_LEN {
            let cut = self.held.len() - HASH_LEN;
            self.hasher.update(&self.held[..cut]);
            self.held.drain(..cut);
        }
    }

    /// The hash of the content, when the trailer matches it.
    fn finish(self) -> Result<(String, u64), String> {
        if self.size < (HASH_LEN + 4096) as u64 {
            return Err(format!("only {} bytes: too short for an etcd snapshot", self.size));
        }
        let magic = u32::from_le_bytes(self.head[16..20].try_into().expect("4 bytes"));
        if magic != BOLT_MAGIC {
            return Err(format!("not a bbolt database (magic {magic:#x})"));
        }
        let sum = self.hasher.finalize();
        if sum.as_slice() != self.held.as_slice() {
            return Err("its SHA-256 does not match the hash etcd appended: truncated or corrupt".into());
        }
        Ok((hex::encode(sum), self.size))
    }
}

/// One object name's parts: cluster, member, time.
fn object_name(cluster: &str, member: &str, at: std::time::SystemTime) -> String {
    let t: String =
        humantime::format_rfc3339_seconds(at).to_string().chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{cluster}-{member}-{t}.db")
}

/// The snapshot objects of a cluster, oldest first (by the time in their name).
/// Where a snapshot's facts are kept.
fn facts_key(snapshot: &str) -> String {
    format!("{snapshot}.facts.json")
}

/// A snapshot's recorded facts: the facts object, or — for a snapshot whose facts object was
/// never written (a crash right after the upload) — the metadata known before the stream.
async fn recorded_facts(
    s3: &S3,
    bucket: &str,
    key: &str,
    metadata: HashMap<String, String>,
) -> HashMap<String, String> {
    let Ok(obj) = s3.get_object().bucket(bucket).key(facts_key(key)).send().await else { return metadata };
    let Ok(bytes) = obj.body.collect().await else { return metadata };
    serde_json::from_slice(&bytes.into_bytes()).unwrap_or(metadata)
}

async fn list_snapshots(s3: &S3, store: &Store, cluster: &str) -> Result<Vec<String>, ActionError> {
    let prefix = drover_api::s3::key(store.prefix.as_deref(), &format!("{cluster}/"));
    let what = format!("s3://{}/{prefix}", store.bucket);
    let mut keys = vec![];
    let mut pages = s3.list_objects_v2().bucket(&store.bucket).prefix(&prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| drover_api::s3::error(&what, e, "check the bucket name and the site's s3 settings"))?;
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(String::from)).filter(|k| k.ends_with(".db")));
    }
    let time = |k: &String| k.rsplit('-').next().unwrap_or_default().to_string();
    keys.sort_by_key(time);
    Ok(keys)
}
