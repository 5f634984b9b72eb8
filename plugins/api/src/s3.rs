//! S3 for plugins that keep things in object storage (backups, snapshots): a site's `s3:`
//! settings, a client from them, and S3 errors told as retryable or permanent with a hint.

use aws_sdk_s3::Client;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::{ActionError, SecretRef, StepContext};

/// A site's `s3:` settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Site {
    /// e.g. `https://s3.eu-west-1.amazonaws.com` or a MinIO URL; default AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style addressing (MinIO, most S3-compatible servers).
    #[serde(default)]
    pub path_style: bool,
    /// Access key id (`env:` or `file:`); default the AWS credential chain.
    #[serde(default)]
    pub access_key: Option<SecretRef>,
    #[serde(default)]
    pub secret_key: Option<SecretRef>,
}

/// The `s3:` site section, read by every plugin that keeps things in object storage.
pub fn site_section() -> crate::SiteSection {
    crate::SiteSection::of::<S3Site>("s3", "an S3 (or S3-compatible) object store")
}

/// An S3 client for a site's `s3:` section.
pub async fn client(ctx: &StepContext, site: &str) -> Result<Client, ActionError> {
    let s: S3Site = ctx.site_section(site, "s3")?;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(s.region.clone().unwrap_or_else(|| "us-east-1".into())));
    if let Some(e) = &s.endpoint {
        loader = loader.endpoint_url(e);
    }
    // A silent endpoint must become an error while the step can still report it: connecting
    // and each wait for bytes are bounded, and every call (retries included) ends by the
    // step's deadline.
    let budget = ctx.remaining().unwrap_or(std::time::Duration::from_secs(3600));
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(budget.min(std::time::Duration::from_secs(10)))
        .read_timeout(budget.min(std::time::Duration::from_secs(30)))
        .operation_timeout(budget)
        .build();
    loader = loader.timeout_config(timeouts);
    if let (Some(a), Some(k)) = (&s.access_key, &s.secret_key) {
        let creds = aws_sdk_s3::config::Credentials::new(
            a.resolve_for(site, "s3.access_key")?.expose(),
            k.resolve_for(site, "s3.secret_key")?.expose(),
            None,
            None,
            "drover-site",
        );
        loader = loader.credentials_provider(creds);
    }
    let conf = loader.load().await;
    let conf = aws_sdk_s3::config::Builder::from(&conf).force_path_style(s.path_style).build();
    Ok(Client::from_conf(conf))
}

/// An S3 failure of `what` (e.g. `s3://bucket/key`): 403 and 404 permanent, transport, 429 and
/// 5xx retryable. `not_found_hint` says what to check when the object or bucket is missing.
pub fn error<E: std::error::Error + Send + Sync + 'static>(
    what: &str,
    e: aws_sdk_s3::error::SdkError<E>,
    not_found_hint: &str,
) -> ActionError {
    use aws_sdk_s3::error::SdkError;
    let code = match &e {
        SdkError::ServiceError(s) => s.raw().status().as_u16(),
        _ => 0,
    };
    let detail = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
    match code {
        403 => ActionError::permanent(format!("{what}: access denied ({detail})"))
            .with_hint("check the site's s3 credentials and the bucket policy"),
        404 => ActionError::permanent(format!("{what}: not found")).with_hint(not_found_hint.to_string()),
        429 | 503 => {
            ActionError::retryable(format!("{what}: {detail}")).with_hint("S3 is throttling or busy; the step retries")
        }
        0 | 500.. => ActionError::retryable(format!("{what}: {detail}")).with_hint("is the S3 endpoint reachable?"),
        _ => ActionError::permanent(format!("{what}: {detail}")),
    }
}

/// `prefix/rest`, or `rest` without a prefix.
pub fn key(prefix: Option<&str>, rest: &str) -> String {
    match prefix.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
        Some(p) => format!("{p}/{rest}"),
        None => rest.to_string(),
    }
}
