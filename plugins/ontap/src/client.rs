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

use crate::error::{NOT_FOUND, OntapError};
use crate::model::{Cluster, Job, JobState, Relationship, Svm, Volume};
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
    /// At most this many changes (a PATCH, POST or DELETE and its job) at once on this cluster
    /// from this drover, whatever the runbook runs in parallel: a fleet's 1,000 breaks queue
    /// here instead of flooding the cluster.
    #[serde(default = "eight")]
    pub max_operations: usize,
    /// At most this many requests at once to this cluster from this drover (each needs its own
    /// HTTPS connection): a fleet's preflight asks about 1,000 relationships at once and
    /// queues here instead of opening 1,000 TLS sessions. ONTAP also caps concurrent REST
    /// sessions (`security session limit`).
    #[serde(default = "sixteen")]
    pub max_in_flight: usize,
}

fn thirty() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn three() -> u32 {
    3
}
fn eight() -> usize {
    8
}
fn sixteen() -> usize {
    16
}

/// Changes at once (`max_operations`), by cluster (base URL), shared by every step of the process.
static OPERATIONS: drover_api::Gates = drover_api::Gates::new();
/// Requests at once (`max_in_flight`).
static IN_FLIGHT: drover_api::Gates = drover_api::Gates::new();

/// HTTP clients by connection settings: building one loads the trust store, and sharing one
/// lets steps against the same cluster reuse connections.
type ClientKey = (String, Option<PathBuf>, bool, Duration);
static CLIENTS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<ClientKey, reqwest::Client>>> =
    std::sync::LazyLock::new(Default::default);

/// The release each cluster (by base URL) runs, read once per process.
static RELEASE_OF: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, (Version, &'static Release)>>,
> = std::sync::LazyLock::new(Default::default);

/// One page of a collection as ONTAP answers it: its records and the link to the next page.
#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    records: Vec<T>,
    #[serde(default, rename = "_links")]
    links: PageLinks,
}

#[derive(Default, Deserialize)]
struct PageLinks {
    #[serde(default)]
    next: Option<Link>,
}

#[derive(Deserialize)]
struct Link {
    href: String,
}

#[derive(Clone)]
pub struct Client {
    pub site: String,
    pub base: String,
    http: reqwest::Client,
    username: String,
    password: Secret,
    credentials: String,
    retries: u32,
    pub insecure: bool,
    operations: std::sync::Arc<tokio::sync::Semaphore>,
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
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
        let base = cfg.url.trim_end_matches('/');
        Client {
            site: site.to_string(),
            base: base.to_string(),
            http,
            username: cfg.username.clone(),
            password,
            credentials: cfg.credentials.to_string(),
            retries: cfg.retries,
            insecure: cfg.insecure,
            operations: OPERATIONS.of(base, cfg.max_operations),
            in_flight: IN_FLIGHT.of(base, cfg.max_in_flight),
        }
    }

    /// A turn to change something on this cluster (see `max_operations`); held until dropped.
    pub async fn operation(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.operations.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    /// Which cluster, as which user: waits on relationships share one watcher per identity.
    pub(crate) fn identity(&self) -> String {
        format!("{} {} {}", self.base, self.username, self.credentials)
    }

    /// What ONTAP answers a GET of an object of `collection` that is not there.
    pub(crate) fn gone(&self, collection: &str, uuid: &str) -> OntapError {
        OntapError::Answered {
            cluster: self.describe(),
            status: 404,
            method: "GET".into(),
            path: format!("{collection}/{uuid}"),
            code: Some(NOT_FOUND.into()),
            message: "entry doesn't exist".into(),
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
    ) -> Result<(u16, Value, Option<String>), OntapError> {
        let (status, bytes, location) = self.send_raw(method, path, body).await?;
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok((status, body, location))
    }

    /// [`Client::send`], the successful answer's body left unparsed: a watcher's pages are
    /// read straight into what drover keeps of them.
    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, bytes::Bytes, Option<String>), OntapError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.send_once(method.clone(), path, body).await;
            match result {
                Err(e) if e.is_retryable() && attempt <= self.retries => {
                    let delay = Duration::from_millis(200 * 2u64.pow(attempt - 1)).min(Duration::from_secs(5));
                    tracing::info!(site = %self.site, %path, attempt, error = %e, "retrying ONTAP request");
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
    ) -> Result<(u16, bytes::Bytes, Option<String>), OntapError> {
        let _turn = self.in_flight.acquire().await.expect("the semaphore is never closed");
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
            let (cluster, timeout, cause) = (self.describe(), e.is_timeout(), cause.to_string());
            // reqwest reports an untrusted certificate only in the text of its innermost cause.
            if cause.to_lowercase().contains("certificate") {
                OntapError::Untrusted { cluster, timeout, cause }
            } else {
                OntapError::Unreachable { cluster, timeout, cause }
            }
        })?;
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes =
            resp.bytes().await.map_err(|e| OntapError::Truncated { cluster: self.describe(), cause: e.to_string() })?;
        if status == 401 {
            return Err(OntapError::Unauthorized {
                cluster: self.describe(),
                user: self.username.clone(),
                credentials: self.credentials.clone(),
            });
        }
        if (200..300).contains(&status) {
            return Ok((status, bytes, location));
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let err = body.get("error");
        let code =
            err.and_then(|e| e.get("code")).and_then(|c| crate::model::code_text(c).ok()).filter(|c| !c.is_empty());
        let message =
            err.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("no error message").to_string();
        if code.as_deref() == Some("262197") {
            return Err(self.missing_field(&message, path));
        }
        Err(OntapError::Answered {
            cluster: self.describe(),
            status,
            method: method.to_string(),
            path: path.to_string(),
            code,
            message,
        })
    }

    /// A 400 262197 ("the value F is invalid for field fields"): drover asked for a field the
    /// cluster's release does not have. The definitions say otherwise, so say exactly that.
    fn missing_field(&self, message: &str, path: &str) -> OntapError {
        let field = message.split('"').nth(1).unwrap_or(message);
        let release = RELEASE_OF.lock().unwrap_or_else(|e| e.into_inner()).get(&self.base).map(|(v, _)| v.to_string());
        OntapError::MissingField {
            cluster: self.describe(),
            release: release.map(|v| format!("ONTAP {v}")).unwrap_or_else(|| "this ONTAP release".into()),
            field: field.to_string(),
            path: path.to_string(),
            range: release::range(),
        }
    }

    /// The release the cluster runs, and the definitions drover checks its requests against.
    /// An older cluster than the supported range is refused; a newer one is used with the
    /// newest definitions, and said so in the log.
    pub async fn release(&self) -> Result<(Version, &'static Release), OntapError> {
        if let Some(known) = RELEASE_OF.lock().unwrap_or_else(|e| e.into_inner()).get(&self.base) {
            return Ok(*known);
        }
        let v = self.cluster().await?.version;
        let version = match (v.generation, v.major, v.minor) {
            (Some(g), Some(ma), Some(mi)) => Version(g, ma, mi),
            _ => Version::parse(&v.full)
                .ok_or_else(|| OntapError::UnreadableVersion { cluster: self.describe(), full: v.full.clone() })?,
        };
        let definitions = match release::support(version) {
            Support::Supported(r) => r,
            Support::Newer(r) => {
                tracing::warn!(site = %self.site, %version, newest = %r.name, "ONTAP release newer than drover knows; requests are checked against the newest definitions");
                r
            }
            Support::TooOld => {
                return Err(OntapError::TooOld {
                    cluster: self.describe(),
                    version: version.to_string(),
                    range: release::range(),
                });
            }
        };
        RELEASE_OF.lock().unwrap_or_else(|e| e.into_inner()).insert(self.base.clone(), (version, definitions));
        Ok((version, definitions))
    }

    /// `fields=` for `resource`: the wanted fields this cluster's release has.
    pub async fn fields(&self, resource: &str, wanted: &[&str]) -> Result<String, OntapError> {
        let (_, r) = self.release().await?;
        let r = r.resource(resource);
        Ok(wanted.iter().filter(|f| r.readable(f.trim_end_matches(".*"))).copied().collect::<Vec<_>>().join(","))
    }

    pub async fn get(&self, path: &str) -> Result<Value, OntapError> {
        Ok(self.send(Method::GET, path, None).await?.1)
    }

    /// One object, decoded into what drover reads of it.
    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, OntapError> {
        let v = self.get(path).await?;
        self.decode(path, v)
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, path: &str, v: Value) -> Result<T, OntapError> {
        serde_json::from_value(v).map_err(|e| OntapError::Unexpected {
            cluster: self.describe(),
            path: path.to_string(),
            cause: e.to_string(),
        })
    }

    /// Every record of a collection, following `next` links.
    pub async fn records(&self, path: &str) -> Result<Vec<Value>, OntapError> {
        self.records_as(path).await
    }

    /// Every record of a collection, following `next` links, each read as a `T`. The pages are
    /// read straight into `T`s, not first into JSON trees: a fleet's watchers read 70,000
    /// records, and building a tree of each was most of their cost.
    pub async fn records_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, OntapError> {
        let mut out = vec![];
        let mut next = Some(path.to_string());
        while let Some(p) = next.take() {
            let (_, bytes, _) = self.send_raw(Method::GET, &p, None).await?;
            let page: Page<T> = serde_json::from_slice(&bytes).map_err(|e| OntapError::Unexpected {
                cluster: self.describe(),
                path: p.clone(),
                cause: e.to_string(),
            })?;
            next = page.links.next.map(|n| n.href);
            out.extend(page.records);
        }
        Ok(out)
    }

    /// The first record of a collection, decoded.
    pub async fn first_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>, OntapError> {
        Ok(self.records_as(path).await?.into_iter().next())
    }

    /// A mutating call; a 202 job is polled until it ends (or `deadline`).
    pub async fn mutate(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        deadline: Option<Instant>,
    ) -> Result<Value, OntapError> {
        let _turn = self.operation().await;
        let (_, answer, _) = self.send(method, path, Some(body)).await?;
        if let Some(href) = answer.pointer("/job/_links/self/href").and_then(Value::as_str) {
            self.wait_job(href, deadline).await?;
        }
        Ok(answer)
    }

    /// Poll a job until `success`; a failure becomes an error with ONTAP's code and message.
    /// Its readings come from the cluster's job watcher, together with every other wait's, at
    /// the watcher's pace.
    pub async fn wait_job(&self, href: &str, deadline: Option<Instant>) -> Result<(), OntapError> {
        let poll = drover_api::Poll::new(Duration::from_secs(5)).at_least(crate::watch::LEAST_PAUSE);
        let mut seen = false;
        let uuid = href.trim_end_matches('/').rsplit('/').next().unwrap_or(href);
        let mut readings = crate::watch::Subscription::<Job>::new(self, uuid);
        loop {
            match readings.next().await {
                Ok(job) => {
                    seen = true;
                    match job.state {
                        JobState::Success => return Ok(()),
                        JobState::Failure => {
                            return Err(OntapError::JobFailed {
                                cluster: self.describe(),
                                message: job.message.unwrap_or_else(|| "job failed".into()),
                                code: job.code,
                            });
                        }
                        _ => {}
                    }
                }
                // A job that was seen and is gone has expired: the caller verifies the object.
                Err(e) if seen && e.status() == Some(404) => {
                    tracing::warn!(site = %self.site, %href, "job expired before its end was seen; verifying the object's state");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            if deadline.is_some_and(|d| Instant::now() + poll.next_delay() >= d) {
                return Err(OntapError::JobDeadline { cluster: self.describe(), href: href.to_string() });
            }
        }
    }

    /// The cluster's name and release: whether it answers, and to these credentials. Callers
    /// asking while a read is on its way share it (a fleet's preflight asks a thousand times
    /// at once); the first to ask after its answer reads afresh.
    pub async fn cluster(&self) -> Result<Cluster, OntapError> {
        static READS: drover_api::SharedReads<Result<Cluster, OntapError>> = drover_api::SharedReads::new();
        READS.read(&self.identity(), || self.get_as("/api/cluster?fields=name,uuid,version")).await
    }

    /// The relationship whose destination is `path`, as seen from this (destination) cluster.
    /// Lookups at the same moment share one query, `destination.path=A|B|…`.
    pub async fn relationship(&self, path: &str) -> Result<Option<Relationship>, OntapError> {
        crate::lookup::relationship(self, path).await
    }

    /// [`Client::relationship`] in a query of its own.
    pub(crate) async fn relationship_alone(&self, path: &str) -> Result<Option<Relationship>, OntapError> {
        let fields = self.fields("snapmirror_relationship", RELATIONSHIP_FIELDS).await?;
        self.first_as(&format!("/api/snapmirror/relationships?destination.path={}&fields={fields}", enc(path))).await
    }

    /// The relationship whose source is `path` (a reversed one, on the original source's cluster).
    pub async fn relationship_from(&self, path: &str) -> Result<Option<Relationship>, OntapError> {
        let fields = self.fields("snapmirror_relationship", RELATIONSHIP_FIELDS).await?;
        self.first_as(&format!("/api/snapmirror/relationships?source.path={}&fields={fields}", enc(path))).await
    }

    /// Every relationship this (destination) cluster holds that matches ONTAP query filters
    /// (`destination.svm.name=svm_a|svm_b`, `destination.path=svm_dr:vol_*`, …), all pages.
    pub async fn relationships(&self, filters: &[(&str, &str)]) -> Result<Vec<Relationship>, OntapError> {
        let fields = self.fields("snapmirror_relationship", RELATIONSHIP_FIELDS).await?;
        let mut path = format!("/api/snapmirror/relationships?fields={fields}&max_records=500");
        for (k, v) in filters {
            path.push_str(&format!("&{k}={}", enc(v)));
        }
        self.records_as(&path).await
    }

    pub async fn require_relationship(&self, path: &str) -> Result<Relationship, OntapError> {
        self.relationship(path)
            .await?
            .ok_or_else(|| OntapError::NoRelationship { cluster: self.describe(), path: path.to_string() })
    }

    /// The relationships of these uuids that exist, in one query (`uuid=A|B|…`).
    pub async fn relationships_by_uuid(&self, uuids: &[String]) -> Result<Vec<Relationship>, OntapError> {
        let fields = self.fields("snapmirror_relationship", RELATIONSHIP_FIELDS).await?;
        let path = format!(
            "/api/snapmirror/relationships?uuid={}&fields={fields}&max_records={}",
            enc(&uuids.join("|")),
            uuids.len().max(1)
        );
        self.records_as(&path).await
    }

    /// The jobs of these uuids that have not expired, in one query (`uuid=A|B|…`).
    pub async fn jobs_by_uuid(&self, uuids: &[String]) -> Result<Vec<Job>, OntapError> {
        // `error` came after 9.8; ask only for what this release has.
        let fields = self.fields("job", &["state", "message", "code", "error"]).await?;
        let path = format!(
            "/api/cluster/jobs?uuid={}&fields={fields}&max_records={}",
            enc(&uuids.join("|")),
            uuids.len().max(1)
        );
        self.records_as(&path).await
    }

    pub async fn relationship_by_uuid(&self, uuid: &str) -> Result<Relationship, OntapError> {
        let fields = self.fields("snapmirror_relationship", RELATIONSHIP_FIELDS).await?;
        self.get_as(&format!("/api/snapmirror/relationships/{uuid}?fields={fields}")).await
    }

    pub async fn svm(&self, name: &str) -> Result<Option<Svm>, OntapError> {
        let fields = self.fields("svm", &["uuid", "name", "state", "subtype"]).await?;
        self.first_as(&format!("/api/svm/svms?name={}&fields={fields}", enc(name))).await
    }

    pub async fn svm_by_uuid(&self, uuid: &str) -> Result<Svm, OntapError> {
        self.get_as(&format!("/api/svm/svms/{uuid}?fields=state")).await
    }

    pub async fn volume(&self, svm: &str, name: &str) -> Result<Option<Volume>, OntapError> {
        let fields = self.fields("volume", &["uuid", "name", "type", "state", "nas.path", "clone.*"]).await?;
        self.first_as(&format!("/api/storage/volumes?name={}&svm.name={}&fields={fields}", enc(name), enc(svm))).await
    }

    /// Delete, where "already gone" (404, code 4) is the goal reached.
    pub async fn delete_if_present(&self, path: &str, deadline: Option<Instant>) -> Result<(), OntapError> {
        match self.mutate(Method::DELETE, path, &serde_json::json!({}), deadline).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(NOT_FOUND) => Ok(()),
            Err(e) => Err(e),
        }
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

/// What a query value keeps as it is: letters, digits, `-_.~` and the `:` of `svm:volume`.
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b':');

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
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
    fn query_values_keep_paths_and_encode_ontaps_operators_and_the_rest() {
        assert_eq!(enc("svm_dr:vol_a-1.b~"), "svm_dr:vol_a-1.b~");
        assert_eq!(enc("a|b*c,!d e&f=g/ü"), "a%7Cb%2Ac%2C%21d%20e%26f%3Dg%2F%C3%BC");
    }

    #[test]
    fn lag_time_parses() {
        assert_eq!(parse_iso_duration("PT8H35M42S"), Some(Duration::from_secs(8 * 3600 + 35 * 60 + 42)));
        assert_eq!(parse_iso_duration("P1DT2H"), Some(Duration::from_secs(86_400 + 7200)));
        assert_eq!(parse_iso_duration("PT0S"), Some(Duration::ZERO));
        assert_eq!(parse_iso_duration("8 hours"), None);
    }
}
