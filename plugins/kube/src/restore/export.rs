//! `kube.export`: write a live cluster's selection to S3 in Velero's backup format, so drover
//! takes the backups it restores (and Velero can read them). The `velero-backup.json` marking
//! the backup `Completed` is written last: an export that dies halfway leaves nothing that
//! `backup: latest` would pick.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use drover_api::{ActionError, ActionSpec, Outputs, ParamError, Plan, Progress, StepContext, TypedAction, ValueType};

use super::source::{self, LiveSource, Source};
use crate::select::require_namespaces;
use crate::velero::{Limits, TarballWriter, backup_object, gzip_json};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// The site whose cluster is read.
    pub site: String,
    /// Namespaces to export (globs allowed).
    pub namespaces: Vec<String>,
    /// Where the backup goes.
    pub to: ExportTarget,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportTarget {
    /// The site whose `s3:` settings reach the bucket.
    pub site: String,
    pub bucket: String,
    #[serde(default)]
    pub prefix: Option<String>,
    /// The backup's name; default `drover-<run id>`.
    #[serde(default)]
    pub backup: Option<String>,
}

fn key(prefix: &Option<String>, rest: &str) -> String {
    match prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
        Some(p) => format!("{p}/{rest}"),
        None => rest.to_string(),
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub struct Export;

#[async_trait]
impl TypedAction for Export {
    type Params = ExportParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "kube.export",
        summary: "Write a live cluster's namespaces to S3 as a Velero-format backup",
        outputs: &[
            ("backup", ValueType::String, "the backup's name"),
            ("items", ValueType::Int, "objects written"),
            ("bytes", ValueType::Int, "size of the tarball"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site", "to.site"],
        rpo_output: None,
    };

    fn check(&self, p: &ExportParams) -> Result<(), Vec<ParamError>> {
        require_namespaces(&p.namespaces)
    }

    async fn plan(&self, ctx: &StepContext, p: ExportParams) -> Result<Plan, ActionError> {
        let kube = crate::client::Kube::connect(ctx, &p.site).await?;
        let s3 = source::s3_client(ctx, &p.to.site).await?;
        let what = format!("s3://{}", p.to.bucket);
        let reachable = s3.head_bucket().bucket(&p.to.bucket).send().await;
        let detail = match reachable {
            Ok(_) => format!("{what} answers"),
            Err(e) => {
                let e = drover_api::s3::error(&what, e, "check the bucket name and the site's `s3:` settings");
                return Ok(Plan::new(format!("export {} from {} to {what}", p.namespaces.join(", "), kube.origin))
                    .access_check("bucket reachable", false, e.message));
            }
        };
        Ok(Plan::new(format!("export {} from {} to {what}", p.namespaces.join(", "), kube.origin)).access_check(
            "bucket reachable",
            true,
            detail,
        ))
    }

    async fn run(&self, ctx: &StepContext, p: ExportParams) -> Result<Outputs, ActionError> {
        let s3 = source::s3_client(ctx, &p.to.site).await?;
        let name = p.to.backup.clone().unwrap_or_else(|| format!("drover-{}", ctx.run_id));
        let started = now();
        let live = Source::Live(LiveSource { site: p.site.clone(), namespaces: p.namespaces.clone() });
        let (mut items, _) = source::open(ctx, &live, Limits::default()).await?;
        let file = tempfile::NamedTempFile::new()
            .map_err(|e| ActionError::permanent(format!("cannot make a temporary file: {e}")))?;
        let io = |e: std::io::Error| ActionError::permanent(format!("cannot write the backup tarball: {e}"));
        let mut writer = TarballWriter::new(std::io::BufWriter::new(file.reopen().map_err(io)?)).map_err(io)?;
        while let Some(item) = items.recv().await {
            let item = item?;
            writer.add(&item.resource, &item.object).map_err(io)?;
            if writer.items.is_multiple_of(100) {
                ctx.progress(Progress { message: "objects exported".into(), done: Some(writer.items), total: None });
            }
        }
        let count = writer.items;
        let resource_list = std::mem::take(&mut writer.resource_list);
        let mut inner = writer.finish().map_err(io)?;
        std::io::Write::flush(&mut inner).map_err(io)?;
        drop(inner);
        let bytes = std::fs::metadata(file.path()).map(|m| m.len()).unwrap_or(0);
        let put = |k: String, body: ByteStream| {
            let s3 = s3.clone();
            let bucket = p.to.bucket.clone();
            async move {
                s3.put_object().bucket(&bucket).key(&k).body(body).send().await.map_err(|e| {
                    ActionError::retryable(format!("s3://{bucket}/{k}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))
                        .with_hint("check the site's s3 settings; re-running writes the backup again")
                })
            }
        };
        let base = format!("backups/{name}/{name}");
        let tarball = ByteStream::from_path(file.path())
            .await
            .map_err(|e| ActionError::permanent(format!("cannot read the tarball: {e}")))?;
        put(key(&p.to.prefix, &format!("{base}.tar.gz")), tarball).await?;
        put(
            key(&p.to.prefix, &format!("{base}-resource-list.json.gz")),
            ByteStream::from(gzip_json(&json!(resource_list))),
        )
        .await?;
        let backup = backup_object(&name, &p.namespaces, "Completed", &started, &now(), count);
        put(
            key(&p.to.prefix, &format!("backups/{name}/velero-backup.json")),
            ByteStream::from(backup.to_string().into_bytes()),
        )
        .await?;
        let mut out = Outputs::new();
        out.insert("backup".into(), json!(name));
        out.insert("items".into(), json!(count));
        out.insert("bytes".into(), json!(bytes));
        Ok(out)
    }
}
