//! One connection to a site's cluster: the kubeconfig and context it came from (for hints),
//! every request bounded by the step's deadline, passing faults retried in place, and API
//! errors turned into [`ActionError`]s that say what to do next.
//!
//! Why retry here as well as in the engine: a restore makes thousands of requests; one 429 or
//! dropped connection among them should cost one request again, not the whole step. What
//! still fails after a few tries goes back to the engine as a retryable error, so an
//! unreachable primary ends the step within its timeout instead of hanging a failover.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, Discovery, Scope};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::actions::apply::FIELD_MANAGER;
use drover_api::{ActionError, HumanDuration, StepContext, causes, is_certificate_failure};

/// A site's `kube:` settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeSite {
    /// Path of the kubeconfig; default `$KUBECONFIG`, then `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig; default its `current-context`.
    #[serde(default)]
    pub context: Option<String>,
    /// Use the service account of the pod drover runs in instead of a kubeconfig.
    #[serde(default)]
    pub in_cluster: bool,
    /// Longest wait for one request (connect, send, answer). Default 10s.
    #[serde(default)]
    pub request_timeout: Option<HumanDuration>,
    /// At most this many requests at once to this cluster from this drover, whatever the
    /// runbook runs in parallel (a fleet's 500 restores share them). Default 64.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Do not verify the API server's certificate. Only for a lab: it is logged, noted in the
    /// report, and required when the kubeconfig says `insecure-skip-tls-verify: true`.
    #[serde(default)]
    pub insecure: bool,
}

/// What a call to the API server failed with. An error Status keeps its HTTP code and reason
/// as fields, so callers decide on them (`status() == Some(403)`) rather than on the text; it
/// becomes an [`ActionError`] once, where the action returns.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KubeError {
    /// The API server answered with an error Status.
    #[error("{error}")]
    Api { status: u16, reason: String, error: ActionError },
    /// No usable answer: unreachable, timed out, untrusted, or not a Kubernetes API.
    #[error("{0}")]
    Other(ActionError),
}

impl KubeError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            KubeError::Api { status, .. } => Some(*status),
            KubeError::Other(_) => None,
        }
    }

    /// Whether the API server refused the identity (401, 403): no earlier step can fix that,
    /// so a plan reports it as an access check.
    pub fn is_refused(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    pub fn action_error(&self) -> &ActionError {
        match self {
            KubeError::Api { error, .. } | KubeError::Other(error) => error,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.action_error().is_retryable()
    }

    pub fn message(&self) -> &str {
        &self.action_error().message
    }
}

impl From<KubeError> for ActionError {
    fn from(e: KubeError) -> ActionError {
        match e {
            KubeError::Api { error, .. } | KubeError::Other(error) => error,
        }
    }
}

/// Tries per request for passing faults (429, 5xx, connection errors) before the error goes
/// back to the engine.
const TRIES: u32 = 4;

/// A resolved API type: where its objects live and whether they are namespaced.
#[derive(Debug, Clone)]
pub struct Kind {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// A connected cluster of one site, for one step: the connection to it the run shares, and
/// the step's own deadline and count of passing faults.
pub struct Kube {
    pub client: kube::Client,
    /// "site `west` (context `west` in /home/op/.kube/config)".
    pub origin: String,
    pub server: String,
    deadline: Option<Instant>,
    request_timeout: Duration,
    connection: Arc<Connection>,
    /// Passing faults (429, 5xx, timeouts, dropped connections) met so far, retried or not.
    faults: AtomicU64,
}

/// What every step of a run against the same cluster shares: the client (its TLS connections)
/// and what discovery found. A fleet's 500 restores would otherwise each parse the kubeconfig,
/// handshake and discover the API anew.
struct Connection {
    client: kube::Client,
    origin: String,
    server: String,
    kinds: Mutex<HashMap<GroupVersionKind, Kind>>,
    /// The last answer to "which resource serves this kind?", shared by those who asked while
    /// it was being fetched (a fleet's restores all ask at once); failures are not kept.
    kind_lookups: Mutex<HashMap<GroupVersionKind, KindLookup>>,
    /// Kinds by the names operators write (`deployments.apps`), as found in `discovery`.
    named: Mutex<HashMap<String, Kind>>,
    discovery: tokio::sync::Mutex<Option<Arc<Discovery>>>,
    /// Requests at once: each open HTTP/1.1 connection holds its own buffers and TLS state,
    /// and a control plane answers a queue no sooner for being sent it all at once.
    in_flight: tokio::sync::Semaphore,
    /// LISTs of one kind wanted in many namespaces at once, gathered (see [`crate::lists`]).
    lists: crate::lists::SharedLists,
    /// Reads of one cluster-scoped object wanted by many steps at once, gathered.
    reads: crate::lists::SharedReads,
    /// Identical dry runs, gathered (see [`crate::lists::Identical`]).
    dry_applies: crate::lists::Identical<crate::lists::DryRun>,
    dry_creates: crate::lists::Identical<crate::lists::DryCreate>,
    /// Watches of kinds across the cluster, telling waits where to look again (see
    /// [`crate::changes`]).
    watches: crate::changes::SharedWatches,
}

/// The last lookup of a kind: when it was sent, when answered, and the answer.
type KindLookup = Arc<tokio::sync::Mutex<Option<LastLookup>>>;

struct LastLookup {
    sent: tokio::time::Instant,
    answered: tokio::time::Instant,
    answer: Result<Kind, KubeError>,
}

/// `max_in_flight` unless set.
const MAX_IN_FLIGHT: usize = 64;

/// The run, the site, its `kube:` settings and the kubeconfig's bytes: a changed kubeconfig or
/// a new run connects afresh.
type ConnectionKey = (String, String, String, Vec<u8>);

/// Steps connecting at the same moment (a fleet's 500 restores) wait for one connection.
type Opening = Arc<tokio::sync::OnceCell<Arc<Connection>>>;
static CONNECTIONS: LazyLock<Mutex<HashMap<ConnectionKey, Opening>>> = LazyLock::new(Default::default);

impl Kube {
    /// Connect to a site's cluster: the run's connection to it, made on first use (reads the
    /// kubeconfig; makes no request yet).
    pub async fn connect(ctx: &StepContext, site: &str) -> Result<Kube, ActionError> {
        let settings: KubeSite = ctx.site_section(site, "kube")?;
        let request_timeout = settings.request_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10));
        let kubeconfig_path = if settings.in_cluster {
            None
        } else {
            let path =
                settings.kubeconfig.clone().map(|p| ctx.resolve_path(&p)).or_else(default_kubeconfig).ok_or_else(
                    || {
                        ActionError::permanent(format!("site `{site}`: no kubeconfig"))
                            .with_hint(format!("set sites.{site}.kube.kubeconfig, or $KUBECONFIG"))
                    },
                )?;
            Some(std::fs::canonicalize(&path).unwrap_or(path))
        };
        let bytes = kubeconfig_path.as_ref().and_then(|p| std::fs::read(p).ok()).unwrap_or_default();
        let key = (ctx.run_id.clone(), site.to_string(), format!("{settings:?}"), bytes);
        let opening = {
            let mut all = CONNECTIONS.lock().unwrap_or_else(|e| e.into_inner());
            // One run's connections at a time: those of runs before it are let go.
            all.retain(|(run, ..), _| *run == ctx.run_id);
            all.entry(key).or_default().clone()
        };
        let connection = opening
            .get_or_try_init(|| async {
                Ok::<_, ActionError>(Arc::new(
                    Connection::open(site, &settings, kubeconfig_path, request_timeout).await?,
                ))
            })
            .await?
            .clone();
        if settings.insecure {
            tracing::warn!(site, "TLS verification is OFF for this cluster (insecure: true)");
            ctx.note(&format!("TLS verification is OFF for {}: insecure: true", connection.origin));
        }
        Ok(Kube {
            client: connection.client.clone(),
            origin: connection.origin.clone(),
            server: connection.server.clone(),
            deadline: ctx.deadline,
            request_timeout,
            connection,
            faults: AtomicU64::new(0),
        })
    }
}

impl Connection {
    async fn open(
        site: &str,
        settings: &KubeSite,
        kubeconfig_path: Option<PathBuf>,
        request_timeout: Duration,
    ) -> Result<Connection, ActionError> {
        let (mut config, origin) = match kubeconfig_path {
            None => {
                let config = kube::Config::incluster().map_err(|e| {
                    ActionError::permanent(format!("site `{site}`: no in-cluster configuration: {e}"))
                        .with_hint("`in_cluster: true` works only inside a pod; name a kubeconfig and context instead")
                })?;
                (config, format!("site `{site}` (in-cluster service account)"))
            }
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(&path).map_err(|e| {
                    ActionError::permanent(format!("site `{site}`: cannot read kubeconfig {}: {e}", path.display()))
                        .with_hint(format!("fix the file or sites.{site}.kube.kubeconfig"))
                })?;
                let context = settings.context.clone().or_else(|| kubeconfig.current_context.clone());
                let known: Vec<String> = kubeconfig.contexts.iter().map(|c| c.name.clone()).collect();
                match &context {
                    Some(c) if !known.contains(c) => {
                        return Err(ActionError::permanent(format!(
                            "site `{site}`: context `{c}` is not in kubeconfig {}",
                            path.display()
                        ))
                        .with_hint(format!("contexts there: {}; fix sites.{site}.kube.context", known.join(", "))));
                    }
                    None => {
                        return Err(ActionError::permanent(format!(
                            "site `{site}`: kubeconfig {} has no current-context",
                            path.display()
                        ))
                        .with_hint(format!("set sites.{site}.kube.context to one of: {}", known.join(", "))));
                    }
                    Some(_) => {}
                }
                let origin =
                    format!("site `{site}` (context `{}` in {})", context.as_deref().unwrap_or(""), path.display());
                let options = KubeConfigOptions { context, cluster: None, user: None };
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| {
                    ActionError::permanent(format!("{origin}: unusable kubeconfig: {e}"))
                        .with_hint("check the context's cluster and user entries")
                })?;
                (config, origin)
            }
        };
        if config.accept_invalid_certs && !settings.insecure {
            return Err(ActionError::permanent(format!(
                "{origin}: the kubeconfig turns TLS verification off (insecure-skip-tls-verify: true)"
            ))
            .with_hint(format!(
                "give the cluster's CA (certificate-authority-data) instead; only for a lab, say so with sites.{site}.kube.insecure: true"
            )));
        }
        if settings.insecure {
            config.accept_invalid_certs = true;
        }
        config.connect_timeout = Some(request_timeout);
        config.read_timeout = Some(request_timeout);
        config.write_timeout = Some(request_timeout);
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| {
            ActionError::permanent(format!("{origin}: cannot build a client: {e}"))
                .with_hint("check the kubeconfig's certificates and credentials")
        })?;
        Ok(Connection {
            client,
            origin,
            server,
            kinds: Mutex::default(),
            kind_lookups: Mutex::default(),
            named: Mutex::default(),
            discovery: tokio::sync::Mutex::new(None),
            in_flight: tokio::sync::Semaphore::new(settings.max_in_flight.unwrap_or(MAX_IN_FLIGHT).max(1)),
            lists: Default::default(),
            reads: Default::default(),
            dry_applies: Default::default(),
            dry_creates: Default::default(),
            watches: Default::default(),
        })
    }
}

impl Kube {
    /// The namespace of the kubeconfig context (or `default`).
    pub fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    /// One API call, retried in place on passing faults (honouring `Retry-After`), never past
    /// the step's deadline. `what` names the target for messages: "get deployments shop/web".
    pub async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, KubeError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        self.tries(what, f, false).await.map(|v| v.expect("404 is an error here"))
    }

    /// Like [`Kube::call`], with 404 Not Found as `None`.
    pub async fn call_or_absent<T, F, Fut>(&self, what: &str, f: F) -> Result<Option<T>, KubeError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        self.tries(what, f, true).await
    }

    async fn tries<T, F, Fut>(&self, what: &str, f: F, absent_ok: bool) -> Result<Option<T>, KubeError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=TRIES {
            let limit = self.time_left().min(self.request_timeout + Duration::from_secs(1));
            if limit.is_zero() {
                return Err(KubeError::Other(
                    ActionError::retryable(format!("{}: the step's time ran out before {what}", self.origin))
                        .with_hint("raise the step's `timeout:`, or `drover resume`"),
                ));
            }
            // A turn among the cluster's requests in flight, within the step's time.
            let turn = tokio::time::timeout(self.time_left(), self.connection.in_flight.acquire()).await;
            let Ok(Ok(_turn)) = turn else {
                return Err(KubeError::Other(
                    ActionError::retryable(format!(
                        "{}: the step's time ran out before {what} had its turn among the requests in flight",
                        self.origin
                    ))
                    .with_hint("raise the step's `timeout:` or the site's `kube.max_in_flight`, or `drover resume`"),
                ));
            };
            let limit = self.time_left().min(self.request_timeout + Duration::from_secs(1));
            let answer = tokio::time::timeout(limit, f()).await;
            drop(_turn); // not held through a backoff
            let err = match answer {
                Ok(Ok(v)) => return Ok(Some(v)),
                Ok(Err(e)) if absent_ok && is_not_found(&e) => return Ok(None),
                Ok(Err(e)) => self.error(e, what),
                Err(_) => KubeError::Other(
                    ActionError::retryable(format!(
                        "{}: {what}: no answer from {} within {}",
                        self.origin,
                        self.server,
                        humantime::format_duration(Duration::from_millis(limit.as_millis() as u64))
                    ))
                    .with_hint("the cluster may be down or overloaded; the step retries until its timeout"),
                ),
            };
            if err.is_retryable() {
                self.faults.fetch_add(1, Ordering::Relaxed);
            }
            let wait = err.action_error().retry_after.unwrap_or(backoff).max(backoff);
            if !err.is_retryable() || attempt == TRIES || self.time_left() <= wait {
                return Err(err);
            }
            tracing::debug!(target: "drover::kube", "{what}: {err}; trying again in {wait:?}");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        unreachable!("the last try returns")
    }

    /// The objects of `kind` in `namespace` (matching `labels`), every page: by a LIST of
    /// their own, or — when `Gathered` — one across the cluster shared with the steps that
    /// want the kind in other namespaces at the same moment (see [`crate::lists`]). A kind not
    /// served lists as nothing.
    pub async fn list_in(
        &self,
        kind: &Kind,
        namespace: &str,
        labels: Option<&str>,
        sharing: crate::lists::Sharing,
    ) -> Result<Arc<Vec<Value>>, KubeError> {
        // Sent on behalf of several steps: under none's deadline, each waiting within its own.
        let shared = self.detached();
        let listed = self.connection.lists.list(&shared, kind, namespace, labels, sharing);
        self.within_step(listed, || format!("listing {} in {namespace}", kind.resource.plural)).await
    }

    /// Wait for a read sent on behalf of several steps, within this step's time.
    async fn within_step<T>(
        &self,
        read: impl std::future::Future<Output = Result<T, KubeError>>,
        doing: impl FnOnce() -> String,
    ) -> Result<T, KubeError> {
        match tokio::time::timeout(self.time_left(), read).await {
            Ok(answer) => answer,
            Err(_) => Err(KubeError::Other(
                ActionError::retryable(format!("{}: the step's time ran out while {}", self.origin, doing()))
                    .with_hint("raise the step's `timeout:`, or `drover resume`"),
            )),
        }
    }

    /// The cluster-scoped object `name` of `kind` (`None`: there is none), by a GET shared with
    /// the steps reading it at the same moment (see [`crate::lists`]).
    pub async fn get_cluster_scoped(&self, kind: &Kind, name: &str) -> Result<Option<Arc<DynamicObject>>, KubeError> {
        let shared = self.detached();
        let read = self.connection.reads.get(&shared, kind, name);
        self.within_step(read, || format!("reading {} {name}", kind.resource.plural)).await
    }

    /// A dry-run apply of the cluster-scoped object `name`, answered together with the steps
    /// dry-running the very same request at the same moment (see [`crate::lists`]).
    pub async fn dry_run_apply_cluster_scoped(
        &self,
        kind: &Kind,
        name: &str,
        body: &RawValue,
        params: &kube::api::PatchParams,
    ) -> Result<Arc<DynamicObject>, KubeError> {
        debug_assert!(params.dry_run, "only a dry run is shared");
        let shared = self.detached();
        let key = crate::lists::request_key(kind, name, params, body.get());
        let send = || async {
            let api = shared.api(kind, "");
            let what = format!("apply {} {name} (dry run)", kind.resource.plural);
            let patch = kube::api::Patch::Apply(body);
            Ok(Arc::new(shared.call(&what, || api.patch(name, params, &patch)).await?))
        };
        let dry_run = self.connection.dry_applies.join(key, send);
        self.within_step(dry_run, || format!("dry-running {} {name}", kind.resource.plural)).await
    }

    /// The same connection under no step's deadline: for work done on behalf of several steps.
    pub(crate) fn detached(&self) -> Kube {
        Kube {
            client: self.client.clone(),
            origin: self.origin.clone(),
            server: self.server.clone(),
            deadline: None,
            request_timeout: self.request_timeout,
            connection: self.connection.clone(),
            faults: AtomicU64::new(0),
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Be told when objects of these (kind, namespace) pairs (matching `labels`) change: the
    /// run's watch of each kind across the cluster (see [`crate::changes`]).
    pub fn changes(&self, lists: &[(Kind, String)], labels: Option<&str>) -> crate::changes::Changes {
        self.connection.watches.register(self, lists, labels)
    }

    /// How many passing faults the server's answers have held so far: what a caller pacing
    /// its requests watches.
    pub fn passing_faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// POST `body` (JSON text) to create an object, as `fieldManager=drover`. The answer's body
    /// is not parsed: a restore creating thousands of objects needs only whether it worked.
    pub async fn create_raw(&self, kind: &Kind, namespace: &str, body: &RawValue) -> Result<(), kube::Error> {
        let api = self.api(kind, namespace);
        let params = PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) };
        let request = kube::core::Request::new(api.resource_url())
            .create(&params, body.get().as_bytes().to_vec())
            .map_err(kube::Error::BuildRequest)?;
        self.client.request_text(request).await.map(drop)
    }

    fn time_left(&self) -> Duration {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(3600))
    }

    /// Turn a client error into what the operator needs to know.
    pub fn error(&self, e: kube::Error, what: &str) -> KubeError {
        match e {
            kube::Error::Api(status) if status.code != 0 => KubeError::Api {
                status: status.code,
                reason: status.reason.clone(),
                error: self.describe_error(kube::Error::Api(status), what),
            },
            other => KubeError::Other(self.describe_error(other, what)),
        }
    }

    fn describe_error(&self, e: kube::Error, what: &str) -> ActionError {
        let origin = &self.origin;
        match e {
            kube::Error::Api(status) => {
                let snippet = |text: &str| {
                    let cut: String = text.chars().take(160).collect();
                    if cut.len() < text.len() { format!("{cut:?}…") } else { format!("{cut:?}") }
                };
                let message = if status.code == 0 {
                    // What kube makes of a body that is neither the object asked for nor a Status.
                    let detail = if status.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", snippet(&status.message))
                    };
                    return self.not_kubernetes(what, &detail);
                } else if status.reason == "Failed to parse error data" {
                    format!(
                        "{origin}: {what}: HTTP {} with a body that is not a Kubernetes Status: {}",
                        status.code,
                        snippet(&status.message)
                    )
                } else if status.message.is_empty() {
                    format!("{origin}: {what}: HTTP {} {}", status.code, status.reason)
                } else if status.reason.is_empty() {
                    format!("{origin}: {what}: {} (HTTP {})", status.message, status.code)
                } else {
                    format!("{origin}: {what}: {} ({} {})", status.message, status.code, status.reason)
                };
                match status.code {
                    401 => ActionError::permanent(message).with_hint(format!(
                        "the API server rejected the credentials of {origin}; refresh the token or certificate there"
                    )),
                    403 => {
                        let hint = match crate::rbac::refused(&status.message) {
                            Some((verb, resource, group, namespace)) => {
                                let (rule, family) = crate::rbac::rule_for(&verb, &resource, &group);
                                let scope = match namespace {
                                    Some(ns) => format!(" in namespace {ns}"),
                                    None => " cluster-wide".into(),
                                };
                                let family = family
                                    .map(|f| format!(" (`drover rbac --family {f}` prints the role drover needs for it)"))
                                    .unwrap_or_default();
                                format!(
                                    "the identity of {origin} may not {verb} {resource}{scope}: add the rule {rule} to its role{family}"
                                )
                            }
                            None => format!(
                                "the identity of {origin} lacks RBAC permission for this; `drover rbac` prints the roles drover needs"
                            ),
                        };
                        ActionError::permanent(message).with_hint(hint)
                    }
                    // Server-side apply answers a field of the wrong type with 500, a create with
                    // 400: the object is wrong, not the server, and trying again cannot help.
                    500 | 400
                        if status.message.starts_with("failed to create typed patch object")
                            || status.message.contains("cannot unmarshal") =>
                    {
                        ActionError::permanent(message).with_hint(
                            "a field of this object does not have the type its schema says (e.g. `replicas: \"three\"`); fix the manifest",
                        )
                    }
                    429 => {
                        let secs = status.details.as_ref().map(|d| d.retry_after_seconds).unwrap_or(0).max(1);
                        ActionError::retryable(message).with_retry_after(Duration::from_secs(secs.into()))
                    }
                    500.. => ActionError::retryable(message)
                        .with_hint("the API server failed; the step retries, check the control plane if it persists"),
                    409 => ActionError::permanent(message).with_hint(
                        "another writer holds these fields or changed the object; see the message, then re-run",
                    ),
                    _ => ActionError::permanent(message),
                }
            }
            kube::Error::HyperError(_) | kube::Error::Service(_) if is_certificate_failure(&causes(&e)) => {
                ActionError::permanent(format!(
                    "{origin}: {what}: the API server's certificate at {} is not trusted: {}",
                    self.server,
                    causes(&e)
                ))
                .with_hint("give the cluster's CA in the kubeconfig (certificate-authority-data); a certificate that changed may mean someone is in between")
            }
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                ActionError::retryable(format!("{origin}: {what}: cannot reach the API server at {}: {}", self.server, causes(&e)))
                    .with_hint("is the cluster up and reachable from here? The step retries until its timeout")
            }
            kube::Error::SerdeError(e) => self.not_kubernetes(what, &format!(" ({e})")),
            other => ActionError::permanent(format!("{origin}: {what}: {other}")),
        }
    }

    /// An answer that no Kubernetes API server gives.
    fn not_kubernetes(&self, what: &str, detail: &str) -> ActionError {
        ActionError::permanent(format!(
            "{}: {what}: the answer is not what the Kubernetes API returns{detail}",
            self.origin
        ))
        .with_hint(format!(
            "is {} the cluster's API server? A proxy or load balancer in between may be answering",
            self.server
        ))
    }

    /// The API type of `apiVersion` + `kind`, from discovery (cached). A kind that a CRD
    /// provides may take a moment to appear after the CRD is created: `wait` allows for it.
    pub async fn kind(&self, api_version: &str, kind: &str, wait: bool) -> Result<Kind, ActionError> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        if let Some(k) = self.connection.kinds.lock().unwrap_or_else(|e| e.into_inner()).get(&gvk) {
            return Ok(k.clone());
        }
        let poll = drover_api::Poll::new(Duration::from_secs(2));
        loop {
            match self.look_up_kind(&gvk).await {
                Ok(k) => return Ok(k),
                Err(e) if e.is_retryable() => return Err(e.into()),
                Err(_) if wait && self.time_left() > poll.next_delay() => {
                    poll.pause().await;
                }
                Err(_) => {
                    return Err(ActionError::permanent(format!(
                        "{}: the cluster does not serve kind {kind} in {api_version}",
                        self.origin
                    ))
                    .with_hint("check apiVersion and kind; if a CRD provides it, install the CRD first"));
                }
            }
        }
    }

    /// Ask the server which resource serves `gvk`, or take the answer someone who asked at the
    /// same time got: a kind served is taken if it was answered after we asked; "not served"
    /// (or a failure) only if it was asked after us — a CRD made while it was on its way may
    /// serve the kind now.
    async fn look_up_kind(&self, gvk: &GroupVersionKind) -> Result<Kind, KubeError> {
        let asked = tokio::time::Instant::now();
        let slot = self
            .connection
            .kind_lookups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(gvk.clone())
            .or_default()
            .clone();
        let mut last = slot.lock().await;
        if let Some(l) = &*last {
            let fresh = match l.answer {
                Ok(_) => l.answered >= asked,
                Err(_) => l.sent >= asked,
            };
            if fresh {
                return l.answer.clone();
            }
        }
        let what = format!("discover {} in {}", gvk.kind, gvk.api_version());
        let sent = tokio::time::Instant::now();
        let answer =
            self.call(&what, || kube::discovery::pinned_kind(&self.client, gvk)).await.map(|(resource, caps)| {
                let k = Kind { resource, namespaced: caps.scope == Scope::Namespaced };
                self.connection.kinds.lock().unwrap_or_else(|e| e.into_inner()).insert(gvk.clone(), k.clone());
                k
            });
        *last = Some(LastLookup { sent, answered: tokio::time::Instant::now(), answer: answer.clone() });
        answer
    }

    /// Whether the server serves this kind now (no waiting).
    pub async fn serves(&self, api_version: &str, kind: &str) -> Result<Option<Kind>, ActionError> {
        match self.kind(api_version, kind, false).await {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.is_retryable() => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Every API type the cluster serves, discovered once per run and cluster; `fresh` asks
    /// again (a CRD created since may serve a kind the first discovery did not see).
    pub async fn discovery(&self, fresh: bool) -> Result<Arc<Discovery>, ActionError> {
        let mut cached = self.connection.discovery.lock().await;
        match cached.as_ref() {
            Some(d) if !fresh => Ok(d.clone()),
            _ => {
                let d = Arc::new(self.call("discover API types", || Discovery::new(self.client.clone()).run()).await?);
                *cached = Some(d.clone());
                Ok(d)
            }
        }
    }

    /// A kind by the name an operator writes: `Deployment`, `deployments`, or
    /// `deployments.apps`.
    pub async fn kind_named(&self, name: &str) -> Result<Kind, ActionError> {
        if let Some(kind) = self.connection.named.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(kind.clone());
        }
        let kind = match kind_in(&*self.discovery(false).await?, name) {
            Some(kind) => kind,
            None => kind_in(&*self.discovery(true).await?, name).ok_or_else(|| {
                ActionError::permanent(format!("{}: the cluster has no kind `{name}`", self.origin))
                    .with_hint("use a kind as in manifests (Deployment), optionally with its group (deployments.apps)")
            })?,
        };
        self.connection.named.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), kind.clone());
        Ok(kind)
    }

    /// The API of one kind in one namespace (ignored for cluster-scoped kinds).
    pub fn api(&self, kind: &Kind, namespace: &str) -> Api<DynamicObject> {
        if kind.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &kind.resource)
        } else {
            Api::all_with(self.client.clone(), &kind.resource)
        }
    }
}

impl Kube {
    /// Check an object bound for a namespace that does not exist yet. The API server cannot
    /// dry-run into a missing namespace (404), so the object is dry-run *created* in a stand-in
    /// namespace under a generated name: its schema, its selector, a node port another Service
    /// holds — everything but the namespace itself — is checked there, nothing is kept.
    pub async fn dry_run_elsewhere(&self, kind: &Kind, object: &Value, what: &str) -> Result<(), KubeError> {
        let mut obj = object.clone();
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("object").to_string();
        if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.remove("name");
            meta.remove("resourceVersion");
            // Short enough for the kinds whose names are DNS labels (Services: 63).
            let prefix: String = name.chars().take(50).collect();
            meta.insert("generateName".into(), Value::String(format!("{}-", prefix.trim_end_matches('-'))));
            meta.insert("namespace".into(), Value::String(STAND_IN_NAMESPACE.into()));
        }
        // Sent as JSON text and its answer not parsed: whether the server took it is the check
        // (a fleet's preflight dry-runs thousands of objects).
        let body = serde_json::to_vec(&obj).map_err(|e| {
            KubeError::Other(ActionError::permanent(format!("{}: {what}: the object cannot be sent: {e}", self.origin)))
        })?;
        let params = PostParams { dry_run: true, field_manager: Some(FIELD_MANAGER.into()) };
        let checked = format!("{what} (checked in namespace {STAND_IN_NAMESPACE}: its own does not exist yet)");
        // Apps deployed from one template into many namespaces send the very same object here.
        let key = crate::lists::request_key(kind, "", &params, &String::from_utf8_lossy(&body));
        let shared = self.detached();
        let send = || async {
            let api = shared.api(kind, STAND_IN_NAMESPACE);
            let create = || async {
                let request = kube::core::Request::new(api.resource_url())
                    .create(&params, body.clone())
                    .map_err(kube::Error::BuildRequest)?;
                shared.client.request_text(request).await.map(drop)
            };
            shared.call_or_absent(&checked, create).await
        };
        let dry_run = self.connection.dry_creates.join(key, send);
        match self.within_step(dry_run, || format!("dry-running {checked}")).await? {
            Some(_) => Ok(()),
            None => Err(KubeError::Other(ActionError::permanent(format!(
                "{}: {what}: cannot be checked before its namespace exists (no namespace {STAND_IN_NAMESPACE} to check it in)",
                self.origin
            )))),
        }
    }
}

/// The kind `name` (`Deployment`, `deployments`, `deployments.apps`) among those discovered.
fn kind_in(discovery: &Discovery, name: &str) -> Option<Kind> {
    let (base, group) = match name.split_once('.') {
        Some((b, g)) => (b, Some(g)),
        None => (name, None),
    };
    let mut candidates: Vec<(ApiResource, ApiCapabilities)> = vec![];
    for g in discovery.groups() {
        if group.is_some_and(|want| want != g.name()) {
            continue;
        }
        for (ar, caps) in g.recommended_resources() {
            if ar.kind.eq_ignore_ascii_case(base) || ar.plural.eq_ignore_ascii_case(base) {
                candidates.push((ar, caps));
            }
        }
    }
    // Built-in groups win over look-alike CRDs, as with kubectl.
    candidates.sort_by_key(|(ar, _)| (ar.group.contains('.') && !ar.group.ends_with(".k8s.io"), ar.group.clone()));
    candidates.into_iter().next().map(|(resource, caps)| Kind { resource, namespaced: caps.scope == Scope::Namespaced })
}

/// Where objects bound for a namespace that does not exist yet are dry-run.
pub const STAND_IN_NAMESPACE: &str = "default";

/// `$KUBECONFIG` (its first entry), then `~/.kube/config`.
fn default_kubeconfig() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("KUBECONFIG") {
        let first = std::env::split_paths(&v).next()?;
        if !first.as_os_str().is_empty() {
            return Some(first);
        }
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"))
}

/// "Deployment shop/web" or "Namespace shop".
pub fn describe(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// True for a 404 from the API server.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
