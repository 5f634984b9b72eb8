//! `etcd.verify`: a stored snapshot read back and checked (size, checksum, bbolt header)
//! against its recorded facts, optionally saved for `etcdctl snapshot restore`.

use super::*;

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
        rpo_output: None,
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
