//! A small ONTAP REST client: basic auth from a credential reference, verified TLS (with an
//! optional CA file; `insecure` only as an explicit, logged opt-in), per-request timeouts,
//! retries of passing faults, `next` links, and async jobs polled to the end.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use drover_api::{ActionError, HumanDuration, Secret, SecretRef, StepContext};

use crate::release::{self, Release, Support, Version};

/// A site's `ontap:` settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OntapSite {
    /// Cluster management address, e.g. `https://ontap-west.example.com`.
    pub url: String,
    pub username: String,
    /// Where the password lives: `env:VAR` or `file:PATH`.
    pub credentials: SecretRef,
    /// PEM file of the CA that signed the cluster's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. Dangerous; warned about in the log and the report.
    #[serde(default)]
    pub insecure: bool,
    /// Per-request timeout.
    #[serde(default = "thirty")]
    pub request_timeout: HumanDuration,
    /// Extra tries for requests that fail with a passing fault.
    #[serde(default = "three")]
    pub retries: u32,
}

fn thirty() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn three() -> u32 {
    3
}

/// HTTP clients by connection settings: building one loads the trust store, and sharing one
/// lets steps against the same cluster reuse connections.
type ClientKey = (String, Option<PathBuf>, bool, Duration);
static CLIENTS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<ClientKey, reqwest::Client>>> =
    std::sync::LazyLock::new(Default::default);

/// The release each cluster (by base URL) runs, read once per process.
static RELEASE_OF: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, (Version, &'static Release)>>,
> = std::sync::LazyLock::new(Default::default);

/// ONTAP codes that mean "try again shortly" (ONTAP-REST.md §9).
const RETRYABLE_CODES: &[&str] =
    &["6619715", "6619720", "13303816", "13304159", "13303830", "13303812", "13434915", "13434916"];

pub struct Client {
    pub site: String,
    pub base: String,
    http: reqwest::Client,
    username: String,
    password: Secret,
    credentials: String,
    retries: u32,
    pub insecure: bool,
}

/// An error body's `code`, whether ONTAP sent it as a string or a number.
fn code_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What to do about an ONTAP error code.
pub fn hint_for(code: &str) -> &'static str {
    match code {
        "4" => "the object does not exist on this cluster; check the names and that you address the right cluster",
        "6619715" | "6619720" | "13303816" | "13304159" | "13303830" => {
            "ONTAP is busy with this object; the step retries"
        }
        "13303808" => {
            "the break failed; look for a running transfer or, for SVM-DR with identity preservation, stop the source SVM first"
        }
        "13303810" => "no common snapshot: the relationship needs a new baseline (initialize) instead of a resync",
        "13303818" | "13303833" => {
            "this state change is not possible from the relationship's current state; check it with `ontap.snapmirror.wait`"
        }
        "13303844" => {
            "updates fail while the relationship is broken off or quiesced, or when the source is unreachable"
        }
        "13434880" => "a dp-destination SVM starts only after its SVM-DR relationship is broken off",
        "524615" => "delete the volume's clones first",
        "917526" => "a volume of that name exists already",
        _ => "see the ONTAP message; `drover resume` retries once the cause is fixed",
    }
}

impl Client {
    pub fn connect(ctx: &StepContext, site: &str) -> Result<Client, ActionError> {
        let cfg: OntapSite = ctx.site_section(site, "ontap")?;
        let password = cfg.credentials.resolve_for(site, "ontap.credentials")?;
        if cfg.insecure {
            // In the journal and the report, not only in the log.
            ctx.note(&format!("TLS verification is OFF for ONTAP `{site}` ({}): insecure: true", cfg.url));
        }
        let key = (cfg.url.clone(), cfg.ca_file.clone(), cfg.insecure, cfg.request_timeout.0);
        if let Some(http) = CLIENTS.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Client::from_parts(site, &cfg, password, http.clone()));
        }
        let mut b = reqwest::Client::builder()
            .timeout(cfg.request_timeout.0)
            .connect_timeout(cfg.request_timeout.0.min(Duration::from_secs(10)));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                ActionError::permanent(format!("site `{site}`: cannot read ca_file {}: {e}", ca.display()))
                    .with_hint("check sites.<site>.ontap.ca_file")
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                ActionError::permanent(format!("site `{site}`: ca_file {} is not a PEM certificate: {e}", ca.display()))
            })?;
            b = b.add_root_certificate(cert);
        }
        if cfg.insecure {
            tracing::warn!(site, url = %cfg.url, "TLS verification is OFF for this ONTAP cluster (insecure: true)");
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| ActionError::permanent(format!("cannot build an HTTP client: {e}")))?;
        CLIENTS.lock().unwrap_or_else(|e| e.into_inner()).insert(key, http.clone());
        Ok(Client::from_parts(site, &cfg, password, http))
    }

    fn from_parts(site: &str, cfg: &OntapSite, password: Secret, http: reqwest::Client) -> Client {
        Client {
            site: site.to_string(),
            base: cfg.url.trim_end_matches('/').to_string(),
            http,
            username: cfg.username.clone(),
            password,
            credentials: cfg.credentials.to_string(),
            retries: cfg.retries,
            insecure: cfg.insecure,
        }
    }

    fn describe(&self) -> String {
        format!("ONTAP `{}` ({})", self.site, self.base)
    }

    /// One request with retries of passing faults. Returns status, body and Location.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value, Option<String>), ActionError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.send_once(method.clone(), path, body).await;
            match result {
                Err(e) if e.is_retryable() && attempt <= self.retries => {
                    let delay = Duration::from_millis(200 * 2u64.pow(attempt - 1)).min(Duration::from_secs(5));
                    let delay = e.retry_after.unwrap_or(delay).max(delay);
                    tracing::info!(site = %self.site, %path, attempt, error = %e.message, "retrying ONTAP request");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value, Option<String>), ActionError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .basic_auth(&self.username, Some(self.password.expose()))
            .header("accept", "application/hal+json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            let what = if e.is_timeout() { "did not answer in time" } else { "is unreachable" };
            let tls = cause.to_string().to_lowercase().contains("certificate");
            if tls {
                return ActionError::permanent(format!("{} {what}: TLS certificate not trusted: {cause}", self.describe())).with_hint(
                    "give the cluster's CA as `ca_file:` in the site's ontap settings (or, only for a lab, `insecure: true`)",
                );
            }
            ActionError::retryable(format!("{} {what}: {cause}", self.describe()))
                .with_hint("check the cluster management address and the network path; if the site is down, this step cannot succeed")
        })?;
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ActionError::retryable(format!("{}: reading the answer failed: {e}", self.describe())))?;
        if status == 401 {
            return Err(ActionError::permanent(format!(
                "{} rejected the credentials of user `{}` (from {})",
                self.describe(),
                self.username,
                self.credentials
            ))
            .with_hint(format!(
                "check the password in {} and the user name in the site's ontap settings",
                self.credentials
            )));
        }
        let body: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        if (200..300).contains(&status) {
            return Ok((status, body, location));
        }
        let err = body.get("error");
        let code = err.and_then(|e| e.get("code")).and_then(code_of);
        let message =
            err.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("no error message").to_string();
        let text = match &code {
            Some(c) => format!("{} answered {status} to {method} {path}: {message} (code {c})", self.describe()),
            None => format!("{} answered {status} to {method} {path}: {message}", self.describe()),
        };
        if code.as_deref() == Some("262197") {
            return Err(self.missing_field(&message, path));
        }
        let retryable = status >= 500 || status == 429 || code.as_deref().is_some_and(|c| RETRYABLE_CODES.contains(&c));
        let hint = code.as_deref().map(hint_for).unwrap_or("see the ONTAP message");
        let e = if retryable { ActionError::retryable(text) } else { ActionError::permanent(text) };
        Err(e.with_hint(hint))
    }

    /// A 400 262197 ("the value F is invalid for field fields"): drover asked for a field the
    /// cluster's release does not have. The definitions say otherwise, so say exactly that.
    fn missing_field(&self, message: &str, path: &str) -> ActionError {
        let field = message.split('"').nth(1).unwrap_or(message);
        let release = RELEASE_OF.lock().unwrap_or_else(|e| e.into_inner()).get(&self.base).map(|(v, _)| v.to_string());
        let runs = release.map(|v| format!("ONTAP {v}")).unwrap_or_else(|| "this ONTAP release".into());
        ActionError::permanent(format!(
            "{}: {runs} has no field `{field}` (asked for in GET {path}); drover supports ONTAP {}",
            self.describe(),
            release::range()
        ))
        .with_hint(
            "this is a gap in drover's definitions of that release: report it with the cluster's `version` output",
        )
    }

    /// The release the cluster runs, and the definitions drover checks its requests against.
    /// An older cluster than the supported range is refused; a newer one is used with the
    /// newest definitions, and said so in the log.
    pub async fn release(&self) -> Result<(Version, &'static Release), ActionError> {
        if let Some(known) = RELEASE_OF.lock().unwrap_or_else(|e| e.into_inner()).get(&self.base) {
            return Ok(*known);
        }
        let cluster = self.get("/api/cluster?fields=version").await?;
        let full = cluster.pointer("/version/full").and_then(Value::as_str).unwrap_or_default();
        let numbers = ["generation", "major", "minor"]
            .map(|k| cluster.pointer(&format!("/version/{k}")).and_then(Value::as_u64).map(|n| n as u32));
        let version = match numbers {
            [Some(g), Some(ma), Some(mi)] => Version(g, ma, mi),
            _ => Version::parse(full).ok_or_else(|| {
                ActionError::permanent(format!(
                    "{}: the cluster's version `{full}` is not one drover can read",
                    self.describe()
                ))
            })?,
        };
        let definitions = match release::support(version) {
            Support::Supported(r) => r,
            Support::Newer(r) => {
                tracing::warn!(site = %self.site, %version, newest = %r.name, "ONTAP release newer than drover knows; requests are checked against the newest definitions");
                r
            }
            Support::TooOld => {
                return Err(ActionError::permanent(format!(
                    "{} runs ONTAP {version}, older than the releases drover supports ({})",
                    self.describe(),
                    release::range()
                ))
                .with_hint("upgrade the cluster to a supported release (older ones lack fields drover reads), or run these steps by hand"));
            }
        };
        RELEASE_OF.lock().unwrap_or_else(|e| e.into_inner()).insert(self.base.clone(), (version, definitions));
        Ok((version, definitions))
    }

    /// `fields=` for `resource`: the wanted fields this cluster's release has.
    pub async fn fields(&self, resource: &str, wanted: &[&str]) -> Result<String, ActionError> {
        let (_, r) = self.release().await?;
        let r = r.resource(resource);
        Ok(wanted.iter().filter(|f| r.readable(f.trim_end_matches(".*"))).copied().collect::<Vec<_>>().join(","))
    }

    pub async fn get(&self, path: &str) -> Result<Value, ActionError> {
        Ok(self.send(Method::GET, path, None).await?.1)
    }

    /// Every record of a collection, following `next` links.
    pub async fn records(&self, path: &str) -> Result<Vec<Value>, ActionError> {
        let mut out = vec![];
        let mut next = Some(path.to_string());
        while let Some(p) = next.take() {
            let page = self.get(&p).await?;
            if let Some(r) = page.get("records").and_then(Value::as_array) {
                out.extend(r.iter().cloned());
            }
            next = page.pointer("/_links/next/href").and_then(Value::as_str).map(str::to_string);
        }
        Ok(out)
    }

    /// A mutating call; a 202 job is polled until it ends (or `deadline`).
    pub async fn mutate(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        deadline: Option<Instant>,
    ) -> Result<Value, ActionError> {
        let (_, answer, _) = self.send(method, path, Some(body)).await?;
        if let Some(href) = answer.pointer("/job/_links/self/href").and_then(Value::as_str) {
            self.wait_job(href, deadline).await?;
        }
        Ok(answer)
    }

    /// Poll a job until `success`; a failure becomes an error with ONTAP's code and message.
    pub async fn wait_job(&self, href: &str, deadline: Option<Instant>) -> Result<(), ActionError> {
        let poll = drover_api::Poll::new(Duration::from_secs(5));
        let mut seen = false;
        // `error` came after 9.8; ask only for what this release has.
        let path = format!("{href}?fields={}", self.fields("job", &["state", "message", "code", "error"]).await?);
        loop {
            match self.send(Method::GET, &path, None).await {
                Ok((_, job, _)) => {
                    seen = true;
                    match job.get("state").and_then(Value::as_str) {
                        Some("success") => return Ok(()),
                        Some("failure") => {
                            let code = job.get("code").and_then(code_of).unwrap_or_default();
                            let message = job.get("message").and_then(Value::as_str).unwrap_or("job failed");
                            let retryable = RETRYABLE_CODES.contains(&code.as_str());
                            let text = format!("{}: job failed: {message} (code {code})", self.describe());
                            let e = if retryable { ActionError::retryable(text) } else { ActionError::permanent(text) };
                            return Err(e.with_hint(hint_for(&code)));
                        }
                        _ => {}
                    }
                }
                // A job that was seen and is gone has expired: the caller verifies the object.
                Err(e) if seen && e.message.contains("answered 404") => {
                    tracing::warn!(site = %self.site, %href, "job expired before its end was seen; verifying the object's state");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            let delay = poll.next_delay();
            if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                return Err(ActionError::permanent(format!(
                    "{}: job {href} did not finish before the step's deadline",
                    self.describe()
                ))
                .with_hint("the operation may still complete on the cluster; check it, then `drover resume`"));
            }
            tokio::time::sleep(delay).await;
        }
    }

    pub async fn cluster(&self) -> Result<Value, ActionError> {
        self.get("/api/cluster?fields=name,uuid,version").await
    }

    /// The relationship whose destination is `path`, as seen from this (destination) cluster.
    pub async fn relationship(&self, path: &str) -> Result<Option<Value>, ActionError> {
        let fields = self.fields("snapmirror_relationship", RELATIONSHIP_FIELDS).await?;
        let q = format!("/api/snapmirror/relationships?destination.path={}&fields={fields}", enc(path));
        Ok(self.records(&q).await?.into_iter().next())
    }

    pub async fn require_relationship(&self, path: &str) -> Result<Value, ActionError> {
        self.relationship(path).await?.ok_or_else(|| {
            ActionError::permanent(format!("no SnapMirror relationship with destination `{path}` on {}", self.describe())).with_hint(
                "relationships are listed on their destination cluster: check `site` and the path (`svm:` for SVM-DR, `svm:volume` for a volume)",
            )
        })
    }

    pub async fn relationship_by_uuid(&self, uuid: &str) -> Result<Value, ActionError> {
        let fields = self.fields("snapmirror_relationship", RELATIONSHIP_FIELDS).await?;
        self.get(&format!("/api/snapmirror/relationships/{uuid}?fields={fields}")).await
    }

    pub async fn svm(&self, name: &str) -> Result<Option<Value>, ActionError> {
        let fields = self.fields("svm", &["uuid", "name", "state", "subtype"]).await?;
        let q = format!("/api/svm/svms?name={}&fields={fields}", enc(name));
        Ok(self.records(&q).await?.into_iter().next())
    }

    pub async fn volume(&self, svm: &str, name: &str) -> Result<Option<Value>, ActionError> {
        let fields = self.fields("volume", &["uuid", "name", "type", "state", "nas.path", "clone.*"]).await?;
        let q = format!("/api/storage/volumes?name={}&svm.name={}&fields={fields}", enc(name), enc(svm));
        Ok(self.records(&q).await?.into_iter().next())
    }
}

/// What drover reads of a relationship: fields every supported release has (the lab test
/// `the_shipped_flows_ask_ontap_only_for_what_every_supported_release_has` holds it to that).
/// `group_type` and `identity_preservation`, asked for until 9.10 was checked, came in 9.11 or
/// later, and nothing read them.
const RELATIONSHIP_FIELDS: &[&str] = &[
    "uuid",
    "state",
    "healthy",
    "unhealthy_reason",
    "lag_time",
    "transfer",
    "policy",
    "source",
    "destination",
    "exported_snapshot",
];

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Parse ONTAP's ISO-8601 `lag_time` (`PT8H35M42S`, `P1DT2H`).
pub fn parse_iso_duration(s: &str) -> Option<Duration> {
    let rest = s.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut secs = 0u64;
    if !days.is_empty() {
        secs += days.strip_suffix('D')?.parse::<u64>().ok()? * 86_400;
    }
    let mut num = String::new();
    for ch in time.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        secs += match ch {
            'H' => n * 3600.0,
            'M' => n * 60.0,
            'S' => n,
            _ => return None,
        } as u64;
    }
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_time_parses() {
        assert_eq!(parse_iso_duration("PT8H35M42S"), Some(Duration::from_secs(8 * 3600 + 35 * 60 + 42)));
        assert_eq!(parse_iso_duration("P1DT2H"), Some(Duration::from_secs(86_400 + 7200)));
        assert_eq!(parse_iso_duration("PT0S"), Some(Duration::ZERO));
        assert_eq!(parse_iso_duration("8 hours"), None);
    }

    #[test]
    fn error_codes_decode_as_string_or_number() {
        assert_eq!(code_of(&serde_json::json!("13303808")), Some("13303808".into()));
        assert_eq!(code_of(&serde_json::json!(13303808)), Some("13303808".into()));
    }
}
