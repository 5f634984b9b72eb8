//! `http` and `wait.http`: call an endpoint once, or poll it until it answers as expected
//! (the proof that users reach the DR site through the new DNS record or load balancer).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use drover_api::{
    ActionError, ActionSpec, HumanDuration, Outputs, ParamError, Plan, Progress, SecretRef, StepContext, TypedAction,
    ValueType,
};

/// Most bytes of a response body kept in the outputs.
const BODY_LIMIT: usize = 64 * 1024;

/// A JSON field the response must hold.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonExpectation {
    /// RFC 6901 pointer into the response body, e.g. `/status`.
    pub pointer: String,
    /// The value expected there.
    pub equals: Value,
}

/// The request and what its answer must be: one declaration for `http` and `wait.http`, each
/// with its own extra fields, so the two cannot drift apart.
macro_rules! http_params {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// `GET` (default), `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`.
            #[serde(default = "get")]
            pub method: String,
            pub url: String,
            #[serde(default)]
            pub headers: BTreeMap<String, String>,
            /// Headers whose values come from credential references (e.g. `Authorization`).
            #[serde(default)]
            pub secret_headers: BTreeMap<String, SecretRef>,
            /// A string is sent as is; anything else as JSON.
            #[serde(default)]
            pub body: Option<Value>,
            /// Accepted status codes; default: any 2xx.
            #[serde(default)]
            pub expect_status: Vec<u16>,
            /// A JSON field the response must hold.
            #[serde(default)]
            pub expect_json: Option<JsonExpectation>,
            /// Text the response body must contain.
            #[serde(default)]
            pub expect_body_contains: Option<String>,
            /// Per-request timeout.
            #[serde(default = "thirty_seconds")]
            pub request_timeout: HumanDuration,
            /// PEM file of a CA to trust (besides the system's).
            #[serde(default)]
            pub ca_file: Option<PathBuf>,
            /// Skip TLS verification. Dangerous; logged as a warning.
            #[serde(default)]
            pub insecure: bool,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            /// The request alone.
            #[allow(dead_code)]
            fn request(&self) -> HttpParams {
                HttpParams {
                    method: self.method.clone(),
                    url: self.url.clone(),
                    headers: self.headers.clone(),
                    secret_headers: self.secret_headers.clone(),
                    body: self.body.clone(),
                    expect_status: self.expect_status.clone(),
                    expect_json: self.expect_json.clone(),
                    expect_body_contains: self.expect_body_contains.clone(),
                    request_timeout: self.request_timeout,
                    ca_file: self.ca_file.clone(),
                    insecure: self.insecure,
                }
            }
        }
    };
}

http_params!(HttpParams {});

http_params!(WaitHttpParams {
    /// Time between polls.
    #[serde(default = "two_seconds")]
    interval: HumanDuration,
    /// How many answers in a row must match.
    #[serde(default = "one")]
    successes: u32,
});

fn get() -> String {
    "GET".into()
}
fn thirty_seconds() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn two_seconds() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn one() -> u32 {
    1
}

fn check_request(p: &HttpParams) -> Result<(), Vec<ParamError>> {
    let mut errs = vec![];
    if reqwest::Method::from_bytes(p.method.to_uppercase().as_bytes()).is_err() {
        errs.push(ParamError::at(&["method"], format!("`{}` is not an HTTP method", p.method)));
    }
    if !p.url.contains("${{") && reqwest::Url::parse(&p.url).is_err() {
        errs.push(ParamError::at(&["url"], format!("`{}` is not a URL", p.url)));
    }
    if let Some(j) = &p.expect_json
        && !j.pointer.is_empty()
        && !j.pointer.starts_with('/')
    {
        errs.push(ParamError::at(&["expect_json", "pointer"], "a JSON pointer starts with `/`, e.g. `/status`"));
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// What one request saw.
struct Observation {
    status: u16,
    body: String,
    json: Option<Value>,
}

impl Observation {
    /// None when everything expected holds, else what did not.
    fn mismatch(&self, p: &HttpParams) -> Option<String> {
        let status_ok = if p.expect_status.is_empty() {
            (200..300).contains(&self.status)
        } else {
            p.expect_status.contains(&self.status)
        };
        if !status_ok {
            let want = if p.expect_status.is_empty() { "2xx".to_string() } else { format!("{:?}", p.expect_status) };
            return Some(format!("status {} (expected {want})", self.status));
        }
        if let Some(j) = &p.expect_json {
            let found = self.json.as_ref().and_then(|v| v.pointer(&j.pointer));
            if found != Some(&j.equals) {
                let shown = found.map(|v| v.to_string()).unwrap_or_else(|| "nothing".into());
                return Some(format!("{} is {shown} (expected {})", j.pointer, j.equals));
            }
        }
        if let Some(text) = &p.expect_body_contains
            && !self.body.contains(text.as_str())
        {
            return Some(format!("body does not contain {text:?}"));
        }
        None
    }

    fn outputs(self) -> Outputs {
        let mut o = Outputs::new();
        o.insert("status".into(), self.status.into());
        o.insert("body".into(), self.body.into());
        if let Some(j) = self.json {
            o.insert("json".into(), j);
        }
        o
    }
}

/// Clients by their TLS settings (timeout, CA file and its contents, insecure): building one
/// loads the system's trust store, which 500 apps' checks need not do 500 times.
type ClientKey = (Duration, Option<(PathBuf, Vec<u8>)>, bool);
static CLIENTS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<ClientKey, reqwest::Client>>> =
    std::sync::LazyLock::new(Default::default);

fn client(p: &HttpParams) -> Result<reqwest::Client, ActionError> {
    if p.insecure {
        tracing::warn!(url = %p.url, "TLS verification is off for this request (insecure: true)");
    }
    let ca = match &p.ca_file {
        Some(ca) => Some((
            ca.clone(),
            std::fs::read(ca).map_err(|e| {
                ActionError::permanent(format!("cannot read ca_file {}: {e}", ca.display()))
                    .with_hint("check the path in `ca_file`")
            })?,
        )),
        None => None,
    };
    let key = (p.request_timeout.0, ca, p.insecure);
    if let Some(c) = CLIENTS.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    // A new connection for every request: each answer is what a user connecting now gets (a
    // kept-alive connection through a TCP balancer would stay with the server it first had).
    let mut b = reqwest::Client::builder()
        .timeout(p.request_timeout.0)
        .connect_timeout(p.request_timeout.0.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(0);
    if let Some((path, pem)) = &key.1 {
        let cert = reqwest::Certificate::from_pem(pem)
            .map_err(|e| ActionError::permanent(format!("ca_file {} is not a PEM certificate: {e}", path.display())))?;
        b = b.add_root_certificate(cert);
    }
    if p.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    let built = b.build().map_err(|e| ActionError::permanent(format!("cannot build an HTTP client: {e}")))?;
    CLIENTS.lock().unwrap_or_else(|e| e.into_inner()).insert(key, built.clone());
    Ok(built)
}

async fn send(client: &reqwest::Client, p: &HttpParams) -> Result<Observation, ActionError> {
    let method = reqwest::Method::from_bytes(p.method.to_uppercase().as_bytes())
        .map_err(|_| ActionError::permanent(format!("`{}` is not an HTTP method", p.method)))?;
    let mut req = client.request(method, &p.url);
    for (k, v) in &p.headers {
        req = req.header(k, v);
    }
    for (k, r) in &p.secret_headers {
        req = req.header(k, r.resolve()?.expose());
    }
    match &p.body {
        Some(Value::String(s)) => req = req.body(s.clone()),
        Some(v) => req = req.json(v),
        None => {}
    }
    let resp = req.send().await.map_err(|e| {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "failed"
        };
        ActionError::retryable(format!("{} {} {what}: {}", p.method, p.url, root_cause(&e)))
            .with_hint("check that the endpoint is up and reachable from here")
    })?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ActionError::retryable(format!("reading the answer of {} failed: {e}", p.url)))?;
    let json = serde_json::from_slice(&bytes).ok();
    let mut body = String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_LIMIT)]).into_owned();
    if bytes.len() > BODY_LIMIT {
        body.push('…');
    }
    let obs = Observation { status, body, json };
    if status == 429 {
        let mut e = ActionError::retryable(format!("{} {} was throttled (429)", p.method, p.url));
        if let Some(d) = retry_after {
            e = e.with_retry_after(d);
        }
        return Err(e);
    }
    Ok(obs)
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `http`: one request; fails unless the answer is as expected.
#[derive(Default)]
pub struct Http;

#[async_trait]
impl TypedAction for Http {
    type Params = HttpParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "http",
        summary: "Send one HTTP request and check the answer (status, JSON field, body text)",
        outputs: &[
            ("status", ValueType::Int, "HTTP status code"),
            ("body", ValueType::String, "response body (capped)"),
            ("json", ValueType::Any, "the body parsed as JSON, when it is JSON"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &[],
        rpo_output: None,
    };

    fn check(&self, p: &HttpParams) -> Result<(), Vec<ParamError>> {
        check_request(p)
    }

    async fn plan(&self, _: &StepContext, p: HttpParams) -> Result<Plan, ActionError> {
        let mut plan = Plan::new(format!("{} {}", p.method, p.url)).change(format!("send {} {}", p.method, p.url));
        for (k, r) in &p.secret_headers {
            plan = plan.access_check(format!("secret for header {k} readable"), r.resolve().is_ok(), r.to_string());
        }
        Ok(plan.output("status", 200))
    }

    async fn run(&self, _: &StepContext, p: HttpParams) -> Result<Outputs, ActionError> {
        let client = client(&p)?;
        let obs = send(&client, &p).await?;
        match obs.mismatch(&p) {
            None => Ok(obs.outputs()),
            Some(why) if obs.status >= 500 => Err(ActionError::retryable(format!("{} {}: {why}", p.method, p.url))),
            Some(why) => Err(ActionError::permanent(format!("{} {}: {why}", p.method, p.url))
                .with_hint(format!("the server answered: {}", obs.body.chars().take(200).collect::<String>()))),
        }
    }
}

/// `wait.http`: poll until the answer is as expected, or the step's time runs out.
#[derive(Default)]
pub struct WaitHttp;

#[async_trait]
impl TypedAction for WaitHttp {
    type Params = WaitHttpParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "wait.http",
        summary: "Poll an HTTP endpoint until it answers as expected (bounded by the step's timeout)",
        outputs: &[
            ("status", ValueType::Int, "HTTP status code"),
            ("body", ValueType::String, "response body (capped)"),
            ("json", ValueType::Any, "the body as JSON"),
            ("polls", ValueType::Int, "requests made"),
        ],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &[],
        rpo_output: None,
    };

    fn check(&self, p: &WaitHttpParams) -> Result<(), Vec<ParamError>> {
        let mut errs = check_request(&p.request()).err().unwrap_or_default();
        if p.successes == 0 {
            errs.push(ParamError::at(&["successes"], "must be at least 1"));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    async fn plan(&self, _: &StepContext, p: WaitHttpParams) -> Result<Plan, ActionError> {
        Ok(Plan::new(format!("wait until {} {} answers as expected", p.method, p.url)).output("status", 200))
    }

    async fn run(&self, ctx: &StepContext, p: WaitHttpParams) -> Result<Outputs, ActionError> {
        let req = p.request();
        let client = client(&req)?;
        let mut polls = 0u64;
        let mut streak = 0u32;
        let mut last;
        loop {
            polls += 1;
            match send(&client, &req).await {
                Ok(obs) => match obs.mismatch(&req) {
                    None => {
                        streak += 1;
                        if streak >= p.successes {
                            let mut out = obs.outputs();
                            out.insert("polls".into(), polls.into());
                            return Ok(out);
                        }
                        last = format!("matched {streak} of {} in a row", p.successes);
                    }
                    Some(why) => {
                        streak = 0;
                        last = why;
                    }
                },
                Err(e) if e.is_retryable() => {
                    streak = 0;
                    last = e.message;
                }
                Err(e) => return Err(e),
            }
            ctx.progress(Progress { message: format!("poll {polls}: {last}"), done: None, total: None });
            if ctx.remaining().is_some_and(|r| r <= p.interval.0) {
                return Err(ActionError::permanent(format!(
                    "{} {} did not answer as expected in time; last: {last}",
                    req.method, req.url
                ))
                .with_hint("check the endpoint, or raise the step's `timeout:`"));
            }
            tokio::select! {
                _ = tokio::time::sleep(p.interval.0) => {}
                _ = ctx.stop_requested() => {
                    return Err(ActionError::permanent(format!("stopped while waiting for {}; last: {last}", req.url)));
                }
            }
        }
    }
}
