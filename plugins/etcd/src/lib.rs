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
        if let Some(ca) = &cfg.ca_file {
            let path = ctx.resolve_path(ca);
            let pem = std::fs::read(&path)
                .map_err(|e| ActionError::permanent(format!("cannot read etcd CA {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ActionError::permanent(format!("etcd CA {} is not PEM: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
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
            }
            (None, None) => {}
            _ => {
                return Err(ActionError::permanent(format!(
                    "site `{site}`: etcd needs both `cert` and `key`, or neither"
                )));
            }
        }
        let http = builder.build().map_err(|e| ActionError::permanent(format!("etcd client: {e}")))?;
        let mut errors = vec![];
        for url in &cfg.endpoints {
            let m = Member { http: http.clone(), url: url.trim_end_matches('/').to_string() };
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
        let resp = self.http.post(&url).json(&body).timeout(timeout).send().await.map_err(|e| {
            let why = drover_api::causes(&e);
            if drover_api::is_certificate_failure(&why) {
                return ActionError::permanent(format!("etcd {}: the TLS handshake failed: {why}", self.url)).with_hint(
                    "check the site's etcd ca_file (the CA of the members' certificates) and cert/key (etcd with --client-cert-auth wants them)",
                );
            }
            ActionError::retryable(format!("etcd {} is unreachable: {why}", self.url))
                .with_hint("check the endpoint and that etcd runs")
        })?;
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

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    /// The site whose `etcd:` settings name the members.
    pub site: String,
    /// The cluster's name in object names (e.g. `prod-east`).
    pub cluster: String,
    /// Where the snapshot goes.
    pub to: Store,
    /// Keep this many newest snapshots of the cluster; older ones are deleted. 0 keeps all.
    #[serde(default)]
    pub keep: u32,
}

pub struct Snapshot;

#[async_trait]
impl TypedAction for Snapshot {
    type Params = SnapshotParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "etcd.snapshot",
        summary: "Stream an etcd snapshot to S3 (checked against etcd's hash), keep the newest N",
        outputs: &[
            ("key", ValueType::String, "the S3 object written"),
            ("revision", ValueType::Int, "the store revision when the snapshot started (it holds at least this)"),
            ("keys", ValueType::Int, "number of keys when the snapshot started"),
            ("size", ValueType::Int, "bytes, etcd's hash included"),
            ("sha256", ValueType::String, "SHA-256 of the database (what etcd appended)"),
            ("member", ValueType::String, "the member's id (hex)"),
            ("deleted", ValueType::Any, "older snapshots removed by retention"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site", "to.site"],
    };

    fn check(&self, p: &SnapshotParams) -> Result<(), Vec<ParamError>> {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
        if p.cluster.is_empty() || !p.cluster.chars().all(ok) {
            return Err(vec![ParamError::at(
                &["cluster"],
                format!("`{}` must be letters, digits, `_` or `.` (it is part of object names)", p.cluster),
            )]);
        }
        Ok(())
    }

    async fn plan(&self, ctx: &StepContext, p: SnapshotParams) -> Result<Plan, ActionError> {
        let mut plan = Plan::new(format!("snapshot etcd of site `{}` to s3://{}", p.site, p.to.bucket));
        match Member::connect(ctx, &p.site).await {
            Ok((m, status)) => {
                plan = plan.check(
                    "etcd answers",
                    true,
                    format!(
                        "{} (etcd {}, database {} bytes)",
                        m.url,
                        status["version"].as_str().unwrap_or("?"),
                        num(&status["dbSize"])
                    ),
                )
            }
            Err(e) => plan = plan.check("etcd answers", false, e.message),
        }
        let s3 = drover_api::s3::client(ctx, &p.to.site).await?;
        let head = s3.head_bucket().bucket(&p.to.bucket).send().await;
        plan = plan.check(
            "bucket reachable",
            head.is_ok(),
            match head {
                Ok(_) => format!("s3://{}", p.to.bucket),
                Err(e) => {
                    drover_api::s3::error(&format!("s3://{}", p.to.bucket), e, "create the bucket or fix its name")
                        .message
                }
            },
        );
        if p.keep > 0 {
            let existing = list_snapshots(&s3, &p.to, &p.cluster).await.unwrap_or_default();
            let drop = (existing.len() + 1).saturating_sub(p.keep as usize);
            for k in existing.iter().take(drop) {
                plan = plan.change(format!("delete {k} (keep {})", p.keep));
            }
        }
        Ok(plan.change(format!(
            "write {}",
            drover_api::s3::key(p.to.prefix.as_deref(), &format!("{}/{}-MEMBER-TIME.db", p.cluster, p.cluster))
        )))
    }

    async fn run(&self, ctx: &StepContext, p: SnapshotParams) -> Result<Outputs, ActionError> {
        let (m, status) = Member::connect(ctx, &p.site).await?;
        let timeout: EtcdSite = ctx.site_section(&p.site, "etcd")?;
        let (keys, revision) = m.key_count(timeout.timeout.0).await?;
        let member = member_hex(&status);
        let name = object_name(&p.cluster, &member, std::time::SystemTime::now());
        let key = drover_api::s3::key(p.to.prefix.as_deref(), &format!("{}/{name}", p.cluster));
        let s3 = drover_api::s3::client(ctx, &p.to.site).await?;
        let what = format!("s3://{}/{key}", p.to.bucket);
        let s3err = |e| drover_api::s3::error(&what, e, "check the bucket name and the site's s3 settings");
        let mut create = s3.create_multipart_upload().bucket(&p.to.bucket).key(&key);
        let known = [
            ("revision", revision.to_string()),
            ("keys", keys.to_string()),
            ("member", member.clone()),
            ("etcd-version", status["version"].as_str().unwrap_or("").to_string()),
        ];
        for (k, v) in &known {
            create = create.metadata(*k, v);
        }
        let upload = create.send().await.map_err(s3err)?.upload_id().unwrap_or_default().to_string();
        let streamed = stream_to_s3(ctx, &m, &s3, &p.to.bucket, &key, &upload, num(&status["dbSize"])).await;
        let (sha, size, parts) = match streamed {
            Ok(x) => x,
            Err(e) => {
                let _ = s3.abort_multipart_upload().bucket(&p.to.bucket).key(&key).upload_id(&upload).send().await;
                return Err(e);
            }
        };
        s3.complete_multipart_upload()
            .bucket(&p.to.bucket)
            .key(&key)
            .upload_id(&upload)
            .multipart_upload(aws_sdk_s3::types::CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| drover_api::s3::error(&what, e, "check the bucket"))?;
        let facts: BTreeMap<&str, String> =
            known.into_iter().chain([("size", size.to_string()), ("sha256", sha.clone())]).collect();
        s3.put_object()
            .bucket(&p.to.bucket)
            .key(facts_key(&key))
            .content_type("application/json")
            .body(serde_json::to_vec_pretty(&facts).expect("serializes").into())
            .send()
            .await
            .map_err(|e| drover_api::s3::error(&what, e, "check the bucket"))?;
        let mut deleted = vec![];
        if p.keep > 0 {
            let all = list_snapshots(&s3, &p.to, &p.cluster).await?;
            let drop = all.len().saturating_sub(p.keep as usize);
            for old in all.into_iter().take(drop) {
                let w = format!("s3://{}/{old}", p.to.bucket);
                for k in [facts_key(&old), old.clone()] {
                    s3.delete_object()
                        .bucket(&p.to.bucket)
                        .key(&k)
                        .send()
                        .await
                        .map_err(|e| drover_api::s3::error(&w, e, "check the bucket"))?;
                }
                deleted.push(old);
            }
        }
        let mut out = Outputs::new();
        out.insert("key".into(), json!(key));
        out.insert("revision".into(), json!(revision));
        out.insert("keys".into(), json!(keys));
        out.insert("size".into(), json!(size));
        out.insert("sha256".into(), json!(sha));
        out.insert("member".into(), json!(member));
        out.insert("deleted".into(), json!(deleted));
        Ok(out)
    }
}

/// The snapshot stream, as parts of a multipart upload; returns the hash, the size and the parts.
async fn stream_to_s3(
    ctx: &StepContext,
    m: &Member,
    s3: &S3,
    bucket: &str,
    key: &str,
    upload: &str,
    expected: u64,
) -> Result<(String, u64, Vec<aws_sdk_s3::types::CompletedPart>), ActionError> {
    let url = format!("{}/v3/maintenance/snapshot", m.url);
    let resp = m.http.post(&url).json(&json!({})).send().await.map_err(|e| {
        ActionError::retryable(format!("etcd {} is unreachable: {e}", m.url))
            .with_hint("check the endpoint and that etcd runs")
    })?;
    if !resp.status().is_success() {
        return Err(ActionError::retryable(format!("etcd {url} answered {}", resp.status())));
    }
    let mut body = resp.bytes_stream();
    let mut line: Vec<u8> = vec![];
    let mut part: Vec<u8> = Vec::with_capacity(PART);
    let mut parts = vec![];
    let mut trailer = Trailer::default();
    let what = format!("s3://{bucket}/{key}");
    let send_part = |n: i32, data: Vec<u8>| {
        let what = what.clone();
        async move {
            let out = s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload)
                .part_number(n)
                .body(data.into())
                .send()
                .await
                .map_err(|e| drover_api::s3::error(&what, e, "check the bucket"))?;
            Ok::<_, ActionError>(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag().map(String::from))
                    .build(),
            )
        }
    };
    let handle = |text: &[u8], part: &mut Vec<u8>, trailer: &mut Trailer| -> Result<(), ActionError> {
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(text)
            .map_err(|e| ActionError::retryable(format!("etcd {url}: the snapshot stream broke off ({e})")))?;
        if let Some(err) = v.get("error") {
            return Err(ActionError::retryable(format!(
                "etcd {url} failed the snapshot: {}",
                err["message"].as_str().unwrap_or("?")
            )));
        }
        let blob = v["result"]["blob"].as_str().unwrap_or("");
        let data = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|e| ActionError::permanent(format!("etcd {url}: a snapshot chunk is not base64: {e}")))?;
        trailer.feed(&data);
        part.extend_from_slice(&data);
        Ok(())
    };
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| ActionError::retryable(format!("etcd {url}: the snapshot stream broke off: {e}")))?;
        line.extend_from_slice(&chunk);
        while let Some(at) = line.iter().position(|b| *b == b'\n') {
            let rest = line.split_off(at + 1);
            handle(&line, &mut part, &mut trailer)?;
            line = rest;
        }
        if part.len() >= PART {
            let n = parts.len() as i32 + 1;
            parts.push(send_part(n, std::mem::replace(&mut part, Vec::with_capacity(PART))).await?);
            ctx.progress(Progress {
                message: format!("{} MiB of ~{} MiB streamed", trailer.size >> 20, expected >> 20),
                done: Some(trailer.size),
                total: Some(expected),
            });
        }
    }
    handle(&line, &mut part, &mut trailer)?;
    let (sha, size) =
        trailer.finish().map_err(|e| ActionError::retryable(format!("etcd {url}: the snapshot is unusable: {e}")))?;
    let n = parts.len() as i32 + 1;
    parts.push(send_part(n, part).await?);
    Ok((sha, size, parts))
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    /// The cluster's name, as given to `etcd.snapshot`.
    pub cluster: String,
    /// Where the snapshots are.
    pub from: Store,
    /// `latest` (default) or an object key.
    #[serde(default = "latest")]
    pub snapshot: String,
    /// Also save the verified snapshot here (for `etcdctl snapshot restore`); written as
    /// `PATH.partial` and renamed once it checks out.
    #[serde(default)]
    pub save_to: Option<PathBuf>,
}

fn latest() -> String {
    "latest".into()
}

pub struct Verify;

async fn pick(s3: &S3, p: &VerifyParams) -> Result<String, ActionError> {
    if p.snapshot != "latest" {
        return Ok(p.snapshot.clone());
    }
    list_snapshots(s3, &p.from, &p.cluster).await?.pop().ok_or_else(|| {
        ActionError::permanent(format!(
            "no snapshot of cluster `{}` in s3://{}/{}",
            p.cluster,
            p.from.bucket,
            drover_api::s3::key(p.from.prefix.as_deref(), &format!("{}/", p.cluster))
        ))
        .with_hint("check cluster, bucket and prefix, or take one with etcd.snapshot")
    })
}

#[async_trait]
impl TypedAction for Verify {
    type Params = VerifyParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "etcd.verify",
        summary: "Check an etcd snapshot in S3 is complete and readable (size, SHA-256, bbolt header)",
        outputs: &[
            ("key", ValueType::String, "the snapshot checked"),
            ("size", ValueType::Int, "bytes read"),
            ("sha256", ValueType::String, "SHA-256 of the database"),
            ("revision", ValueType::Int, "revision recorded when it was taken"),
            ("keys", ValueType::Int, "key count recorded when it was taken"),
            ("saved_to", ValueType::String, "where it was saved, if asked"),
        ],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &["from.site"],
    };

    async fn plan(&self, ctx: &StepContext, p: VerifyParams) -> Result<Plan, ActionError> {
        let s3 = drover_api::s3::client(ctx, &p.from.site).await?;
        let plan = Plan::new(format!("verify the {} snapshot of `{}`", p.snapshot, p.cluster));
        Ok(match pick(&s3, &p).await {
            Ok(key) => plan.check("snapshot exists", true, format!("s3://{}/{key}", p.from.bucket)).output("key", key),
            Err(e) => plan.check("snapshot exists", false, e.message),
        })
    }

    async fn run(&self, ctx: &StepContext, p: VerifyParams) -> Result<Outputs, ActionError> {
        let s3 = drover_api::s3::client(ctx, &p.from.site).await?;
        let key = pick(&s3, &p).await?;
        let what = format!("s3://{}/{key}", p.from.bucket);
        let obj = s3
            .get_object()
            .bucket(&p.from.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| drover_api::s3::error(&what, e, "check the snapshot's key (etcd.snapshot outputs it)"))?;
        let meta = recorded_facts(&s3, &p.from.bucket, &key, obj.metadata().cloned().unwrap_or_default()).await;
        let mut file = match &p.save_to {
            Some(path) => {
                let partial = ctx.resolve_path(path).with_extension("partial");
                Some((
                    partial.clone(),
                    tokio::fs::File::create(&partial)
                        .await
                        .map_err(|e| ActionError::permanent(format!("cannot write {}: {e}", partial.display())))?,
                ))
            }
            None => None,
        };
        let mut trailer = Trailer::default();
        let mut body = obj.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ActionError::retryable(format!("{what}: the download broke off: {e}")))?;
            trailer.feed(&chunk);
            if let Some((path, f)) = &mut file {
                tokio::io::AsyncWriteExt::write_all(f, &chunk)
                    .await
                    .map_err(|e| ActionError::permanent(format!("cannot write {}: {e}", path.display())))?;
            }
        }
        let (sha, size) = trailer.finish().map_err(|e| {
            ActionError::permanent(format!("{what} is not a usable etcd snapshot: {e}"))
                .with_hint("take a new snapshot (etcd.snapshot) and use that one")
        })?;
        let recorded = |k: &str| meta.get(k).cloned();
        if let Some(want) = recorded("size").and_then(|s| s.parse::<u64>().ok())
            && want != size
        {
            return Err(ActionError::permanent(format!("{what}: {size} bytes, but {want} were written")));
        }
        if let Some(want) = recorded("sha256")
            && want != sha
        {
            return Err(ActionError::permanent(format!("{what}: SHA-256 {sha}, but {want} was recorded")));
        }
        let mut out = Outputs::new();
        if let Some((partial, f)) = file {
            f.sync_all()
                .await
                .map_err(|e| ActionError::permanent(format!("cannot write {}: {e}", partial.display())))?;
            let path = ctx.resolve_path(p.save_to.as_ref().expect("set"));
            std::fs::rename(&partial, &path).map_err(|e| {
                ActionError::permanent(format!("cannot rename {} to {}: {e}", partial.display(), path.display()))
            })?;
            out.insert("saved_to".into(), json!(path));
        }
        out.insert("key".into(), json!(key));
        out.insert("size".into(), json!(size));
        out.insert("sha256".into(), json!(sha));
        out.insert("revision".into(), json!(recorded("revision").and_then(|r| r.parse::<u64>().ok())));
        out.insert("keys".into(), json!(recorded("keys").and_then(|r| r.parse::<u64>().ok())));
        Ok(out)
    }
}
