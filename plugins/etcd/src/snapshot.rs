//! `etcd.snapshot`: a member's snapshot streamed into an S3 multipart upload, checked, its facts
//! recorded beside it, and the newest N kept.

use super::*;

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
        rpo_output: None,
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
