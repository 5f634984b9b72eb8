//! Shared state on S3 (`--state s3://bucket/prefix`): the run lock and a mirror of every
//! journal in object storage both sites can reach, so drover can be run — and a run resumed —
//! from either site, and two operators can never fail over the same scope at once.
//!
//! The lock is an object created with a conditional write (`If-None-Match: *`): S3 lets exactly
//! one of two racing writers create it. Taking over a lock (`--break-lock`) replaces it only if
//! it is still the object that was read (`If-Match: ETAG`). Journals are written locally first
//! (synchronously, as always) and copied whole to `PREFIX/runs/RUN/journal.jsonl` when they
//! change (at most every 300 ms) and when the run ends; `status`, `resume` and `report` fetch
//! the journals they do not have, or have shorter, before they read.
//!
//! Connection settings come from the AWS default chain (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance roles); add `?path_style=true`
//! for MinIO-like servers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::lock::{LockError, LockInfo, hostname};
use super::state::StateDir;

/// Where shared state lives.
#[derive(Clone)]
pub struct SharedState {
    s3: Client,
    pub bucket: String,
    prefix: String,
}

/// An S3 failure, said plainly: the HTTP status and S3's code for an answer, the transport
/// error for none.
fn s3_failure<E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static>(
    what: &str,
    e: SdkError<E>,
) -> String {
    let Some(status) = status_of(&e) else {
        return format!("{what}: {}", aws_sdk_s3::error::DisplayErrorContext(&e));
    };
    let code = e.code().map(|c| format!(" {c}")).unwrap_or_default();
    let message = e.message().map(|m| format!(": {m}")).unwrap_or_default();
    match status {
        401 | 403 => format!(
            "{what}: access denied (HTTP {status}{code}{message}); the credentials drover runs with are wrong or may not use this bucket"
        ),
        404 => format!("{what}: not found (HTTP 404{code}{message})"),
        _ => format!("{what}: HTTP {status}{code}{message}"),
    }
}

fn status_of<E>(e: &SdkError<E>) -> Option<u16> {
    match e {
        SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
        _ => None,
    }
}

impl SharedState {
    /// Shared state in `bucket` under `prefix`, reached with `s3`.
    pub fn new(s3: Client, bucket: &str, prefix: &str) -> SharedState {
        SharedState { s3, bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() }
    }

    /// Parse `s3://bucket/prefix[?path_style=true]` and build a client from the AWS chain.
    pub async fn connect(url: &str) -> Result<SharedState, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{url}` is not an s3:// URL (write s3://BUCKET/PREFIX)"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(format!("`{url}` names no bucket (write s3://BUCKET/PREFIX)"));
        }
        let path_style = query.split('&').any(|kv| kv == "path_style=true");
        // A silent endpoint must not hang drover: bounded connect, attempt and call.
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(20))
            .operation_timeout(Duration::from_secs(60))
            .build();
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts).load().await;
        let conf = aws_sdk_s3::config::Builder::from(&conf).force_path_style(path_style).build();
        let shared = SharedState::new(Client::from_conf(conf), bucket, prefix);
        shared
            .s3
            .head_bucket()
            .bucket(&shared.bucket)
            .send()
            .await
            .map_err(|e| s3_failure(&format!("the state bucket s3://{}", shared.bucket), e))?;
        Ok(shared)
    }

    fn key(&self, rest: &str) -> String {
        if self.prefix.is_empty() { rest.to_string() } else { format!("{}/{rest}", self.prefix) }
    }

    fn lock_key(&self, scope: &str) -> String {
        self.key(&format!("locks/{scope}.json"))
    }

    fn journal_key(&self, run_id: &str) -> String {
        self.key(&format!("runs/{run_id}/journal.jsonl"))
    }

    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn read_lock(&self, key: &str) -> Result<Option<(LockInfo, String)>, String> {
        match self.s3.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => {
                let etag = out.e_tag().unwrap_or_default().to_string();
                let bytes = out.body.collect().await.map_err(|e| format!("s3://{}/{key}: {e}", self.bucket))?;
                let info = serde_json::from_slice(&bytes.into_bytes())
                    .map_err(|e| format!("s3://{}/{key} is not a drover lock: {e}", self.bucket))?;
                Ok(Some((info, etag)))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(s3_failure(&format!("s3://{}/{key}", self.bucket), e)),
        }
    }

    /// Who holds each lock now: the runs in progress at any site.
    pub async fn holders(&self) -> Result<Vec<LockInfo>, String> {
        let prefix = self.key("locks/");
        let mut pages = self.s3.list_objects_v2().bucket(&self.bucket).prefix(&prefix).into_paginator().send();
        let mut out = vec![];
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_failure(&format!("s3://{}/{prefix}", self.bucket), e))?;
            for o in page.contents() {
                if let Some(key) = o.key().filter(|k| k.ends_with(".json"))
                    && let Some((info, _)) = self.read_lock(key).await?
                {
                    out.push(info);
                }
            }
        }
        Ok(out)
    }

    /// Take the lock of `scope` for `run_id`. With `break_lock`, a lock held by another run is
    /// replaced — but only if it is still the one that was read.
    pub async fn lock(&self, scope: &str, run_id: &str, break_lock: bool) -> Result<SharedLock, LockError> {
        let key = self.lock_key(scope);
        let path = PathBuf::from(format!("s3://{}/{key}", self.bucket));
        let io = |m: String| LockError::Io { path: path.clone(), source: std::io::Error::other(m) };
        let info = LockInfo {
            run_id: run_id.to_string(),
            host: hostname(),
            pid: std::process::id(),
            since: drover_model::events::now_rfc3339(),
        };
        let body = serde_json::to_vec_pretty(&info).expect("serializes");
        for _ in 0..3 {
            let put = self
                .s3
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .if_none_match("*")
                .body(body.clone().into())
                .send()
                .await;
            match put {
                Ok(_) => return Ok(SharedLock { state: self.clone(), key, run_id: run_id.to_string() }),
                Err(e) if matches!(status_of(&e), Some(412) | Some(409)) => {
                    let Some((holder, etag)) = self.read_lock(&key).await.map_err(io)? else {
                        continue; // released meanwhile: try again
                    };
                    let ours = holder.run_id == run_id;
                    if !(break_lock || ours) {
                        return Err(LockError::Held { scope: scope.to_string(), holder: Box::new(holder), path });
                    }
                    tracing::warn!(lock = %path.display(), ?holder, "taking over the shared run lock");
                    let replace = self
                        .s3
                        .put_object()
                        .bucket(&self.bucket)
                        .key(&key)
                        .if_match(&etag)
                        .body(body.clone().into())
                        .send()
                        .await;
                    match replace {
                        Ok(_) => return Ok(SharedLock { state: self.clone(), key, run_id: run_id.to_string() }),
                        Err(e) if status_of(&e) == Some(412) => continue, // someone else moved first
                        Err(e) => return Err(io(s3_failure(&path.display().to_string(), e))),
                    }
                }
                Err(e) => return Err(io(s3_failure(&path.display().to_string(), e))),
            }
        }
        Err(io("the lock changed hands repeatedly while taking it".into()))
    }

    /// Copy a local journal to S3; returns how many bytes S3 now holds.
    pub async fn push_journal(&self, run_id: &str, local: &Path) -> Result<u64, String> {
        let bytes = std::fs::read(local).map_err(|e| format!("{}: {e}", local.display()))?;
        let len = bytes.len() as u64;
        let key = self.journal_key(run_id);
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| s3_failure(&format!("s3://{}/{key}", self.bucket), e))?;
        Ok(len)
    }

    /// Fetch every journal S3 has that `state` lacks or holds shorter.
    pub async fn pull(&self, state: &StateDir) -> Result<usize, String> {
        let prefix = self.key("runs/");
        let mut pages = self.s3.list_objects_v2().bucket(&self.bucket).prefix(&prefix).into_paginator().send();
        let mut fetched = 0;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_failure(&format!("s3://{}/{prefix}", self.bucket), e))?;
            for o in page.contents() {
                let (Some(key), Some(size)) = (o.key(), o.size()) else { continue };
                let Some(run_id) = key.strip_prefix(&prefix).and_then(|r| r.strip_suffix("/journal.jsonl")) else {
                    continue;
                };
                let local = state.journal(run_id);
                let have = std::fs::metadata(&local).map(|m| m.len() as i64).unwrap_or(-1);
                if have >= size {
                    continue;
                }
                let out = self
                    .s3
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| s3_failure(&format!("s3://{}/{key}", self.bucket), e))?;
                let bytes = out.body.collect().await.map_err(|e| format!("s3://{}/{key}: {e}", self.bucket))?;
                std::fs::create_dir_all(state.run_dir(run_id)).map_err(|e| e.to_string())?;
                let tmp = local.with_extension("jsonl.part");
                std::fs::write(&tmp, bytes.into_bytes()).map_err(|e| format!("{}: {e}", tmp.display()))?;
                std::fs::rename(&tmp, &local).map_err(|e| format!("{}: {e}", local.display()))?;
                fetched += 1;
            }
        }
        Ok(fetched)
    }

    /// Copy `local` to S3 whenever it grows, until [`Mirror::finish`].
    pub fn mirror(&self, run_id: &str, local: &Path) -> Mirror {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (state, run_id, local) = (self.clone(), run_id.to_string(), local.to_path_buf());
        let task = tokio::spawn(async move {
            let mut sent = 0u64;
            let mut final_attempts = 0;
            loop {
                // Read the stop flag before the journal's length: everything written before
                // `finish` is then in the length this pass copies (a push in flight when the
                // run ended carries only what was there when it read the file).
                let finishing = *stopped.borrow_and_update();
                let len = std::fs::metadata(&local).map(|m| m.len()).unwrap_or(0);
                if len != sent {
                    match state.push_journal(&run_id, &local).await {
                        Ok(pushed) => sent = pushed,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not copy the journal to the shared state; will retry")
                        }
                    }
                }
                if finishing {
                    if sent >= len {
                        return true;
                    }
                    final_attempts += 1;
                    if final_attempts == FINAL_ATTEMPTS {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    _ = stopped.changed() => {}
                }
            }
        });
        Mirror { stop, task: Some(task) }
    }
}

/// How many times the final copy is tried when a run ends.
const FINAL_ATTEMPTS: u32 = 3;

/// A journal being copied to S3.
pub struct Mirror {
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<bool>>,
}

impl Mirror {
    /// Copy the final journal; false when S3 did not take it.
    pub async fn finish(mut self) -> bool {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(t) => t.await.unwrap_or(false),
            None => true,
        }
    }
}

/// The shared lock of one run; [`SharedLock::release`] deletes it if it is still this run's.
pub struct SharedLock {
    state: SharedState,
    key: String,
    run_id: String,
}

impl SharedLock {
    pub async fn release(self) {
        match self.state.read_lock(&self.key).await {
            Ok(Some((holder, _))) if holder.run_id == self.run_id => {
                let _ = self.state.s3.delete_object().bucket(&self.state.bucket).key(&self.key).send().await;
            }
            _ => tracing::warn!(key = %self.key, "the shared lock is no longer this run's; left as it is"),
        }
    }
}

/// Shared state for the process, when `--state` names one.
pub type Shared = Option<Arc<SharedState>>;
