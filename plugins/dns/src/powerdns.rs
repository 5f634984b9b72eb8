//! `dns.powerdns.set`: the rrset replacement (see `set`) through the PowerDNS HTTP API
//! (`PATCH /api/v1/servers/{server}/zones/{zone}` with `changetype: REPLACE`).
//! The API has no conditional update, so `expect_current` is checked by reading just before
//! writing; the window between the two is as small as one round trip.

use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use drover_api::{ActionError, ActionSpec, Plan, SecretRef, StepContext};

use crate::rfc2136::{RecordKind, Rrset};

/// A site's `powerdns:` settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerDnsSite {
    /// The API's base URL, e.g. `http://127.0.0.1:8081`.
    pub api: String,
    /// The API key, by reference: `env:VAR` or `file:PATH`.
    pub api_key: SecretRef,
    /// The zone, fully qualified: `example.com.`
    pub zone: String,
    #[serde(default = "localhost")]
    pub server_id: String,
}

fn localhost() -> String {
    "localhost".into()
}

fn type_name(k: RecordKind) -> &'static str {
    match k {
        RecordKind::A => "A",
        RecordKind::Aaaa => "AAAA",
        RecordKind::Cname => "CNAME",
        RecordKind::Txt => "TXT",
    }
}

/// TXT content is quoted in PowerDNS; the rest is as written.
fn content(k: RecordKind, v: &str) -> String {
    if k == RecordKind::Txt && !v.starts_with('"') { format!("\"{v}\"") } else { v.to_string() }
}

fn uncontent(k: RecordKind, v: &str) -> String {
    if k == RecordKind::Txt { v.trim_matches('"').to_string() } else { v.to_string() }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Api {
    base: String,
    /// How long to read back a change until it holds.
    propagation: Duration,
    /// Per request: 10 s, or less when the step has less time left.
    timeout: Duration,
    key: drover_api::Secret,
    key_ref: String,
    zone: String,
    http: reqwest::Client,
}

impl Api {
    fn connect(ctx: &StepContext, site: &str, propagation: Duration) -> Result<Api, ActionError> {
        let cfg: PowerDnsSite = ctx.site_section(site, "powerdns")?;
        let zone = if cfg.zone.ends_with('.') { cfg.zone.clone() } else { format!("{}.", cfg.zone) };
        let timeout = ctx.remaining().unwrap_or(REQUEST_TIMEOUT).min(REQUEST_TIMEOUT);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ActionError::permanent(format!("cannot build an HTTP client: {e}")))?;
        Ok(Api {
            propagation,
            base: format!("{}/api/v1/servers/{}/zones/{}", cfg.api.trim_end_matches('/'), cfg.server_id, zone),
            timeout,
            key: cfg.api_key.resolve_for(site, "powerdns.api_key")?,
            key_ref: cfg.api_key.to_string(),
            zone,
            http,
        })
    }

    fn error(&self, status: u16, body: &str) -> ActionError {
        let detail = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        match status {
            401 | 403 => {
                ActionError::permanent(format!("PowerDNS rejected the API key from {} ({status})", self.key_ref))
                    .with_hint(format!("check the key in {} against the server's api-key", self.key_ref))
            }
            404 => ActionError::permanent(format!("PowerDNS does not serve zone {} (404: {detail})", self.zone))
                .with_hint("check the site's powerdns.zone and server_id"),
            422 => ActionError::permanent(format!("PowerDNS refused the change (422): {detail}"))
                .with_hint("the name must lie inside the zone and the values must suit the type"),
            429 => {
                ActionError::retryable(format!("PowerDNS (or a proxy in front of it) is rate-limiting (429): {detail}"))
                    .with_hint("a passing limit; the step retries")
            }
            s if s >= 500 => ActionError::retryable(format!("PowerDNS failed ({s}): {detail}")),
            s => ActionError::permanent(format!("PowerDNS answered {s}: {detail}")),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<String, ActionError> {
        let resp = req.header("X-API-Key", self.key.expose()).send().await.map_err(|e| {
            if e.is_timeout() {
                return ActionError::retryable(format!(
                    "PowerDNS API {} did not answer within {:.1} s",
                    self.base,
                    self.timeout.as_secs_f64()
                ))
                .with_hint("the server or the network to it is overloaded or stuck; the step retries");
            }
            ActionError::retryable(format!("PowerDNS API {} is unreachable: {e}", self.base))
                .with_hint("check the API address and that the webserver is on (api=yes)")
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) { Ok(body) } else { Err(self.error(status, &body)) }
    }

    async fn current(&self, name: &str, kind: RecordKind) -> Result<Rrset, ActionError> {
        let body = self.send(self.http.get(&self.base)).await?;
        let zone: Value = serde_json::from_str(&body)
            .map_err(|e| ActionError::permanent(format!("PowerDNS answered invalid JSON: {e}")))?;
        let set = zone.get("rrsets").and_then(Value::as_array).and_then(|sets| {
            sets.iter().find(|s| {
                s.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(name))
                    && s.get("type").and_then(Value::as_str) == Some(type_name(kind))
            })
        });
        Ok(match set {
            Some(s) => Rrset {
                values: s
                    .get("records")
                    .and_then(Value::as_array)
                    .map(|r| {
                        r.iter()
                            .filter(|x| x.get("disabled") != Some(&Value::Bool(true)))
                            .filter_map(|x| x.get("content").and_then(Value::as_str).map(|c| uncontent(kind, c)))
                            .collect()
                    })
                    .unwrap_or_default(),
                ttl: s.get("ttl").and_then(Value::as_u64).unwrap_or(0) as u32,
            },
            None => Rrset { values: vec![], ttl: 0 },
        })
    }

    async fn replace(&self, name: &str, kind: RecordKind, want: &Rrset) -> Result<(), ActionError> {
        let rrset = if want.values.is_empty() {
            json!({ "name": name, "type": type_name(kind), "changetype": "DELETE" })
        } else {
            let records: Vec<Value> =
                want.values.iter().map(|v| json!({ "content": content(kind, v), "disabled": false })).collect();
            json!({ "name": name, "type": type_name(kind), "ttl": want.ttl, "changetype": "REPLACE", "records": records })
        };
        self.send(self.http.patch(&self.base).json(&json!({ "rrsets": [rrset] }))).await.map(|_| ())
    }
}

#[async_trait]
impl crate::set::Backend for Api {
    const SPEC: ActionSpec = ActionSpec {
        name: "dns.powerdns.set",
        summary: "Replace a DNS rrset through the PowerDNS HTTP API (REPLACE), verified by reading it back",
        outputs: crate::set::OUTPUTS,
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };
    type Store = Api;

    async fn open(ctx: &StepContext, site: &str, propagation: Option<Duration>) -> Result<Api, ActionError> {
        Api::connect(ctx, site, propagation.unwrap_or(crate::set::PROPAGATION))
    }

    async fn access(api: &Api, plan: Plan, name: &str, kind: RecordKind) -> Result<(Plan, Rrset), Plan> {
        match api.current(name, kind).await {
            Ok(c) => Ok((plan.check("zone served and API key accepted", true, api.zone.clone()), c)),
            Err(e) => Err(plan.check("zone served and API key accepted", false, e.message)),
        }
    }
}

#[async_trait]
impl crate::set::RecordStore for Api {
    async fn current(&self, name: &str, kind: RecordKind) -> Result<Rrset, ActionError> {
        Api::current(self, name, kind).await
    }

    // The API has no conditional update: `guarded_set` checked the values just before.
    async fn write(
        &self,
        _: &StepContext,
        name: &str,
        kind: RecordKind,
        want: &Rrset,
        _: Option<&Rrset>,
    ) -> Result<(), ActionError> {
        self.replace(name, kind, want).await
    }

    /// PowerDNS serves what its API holds: read it back until it does, within the wait.
    async fn settle(&self, ctx: &StepContext, name: &str, kind: RecordKind, want: &Rrset) -> Result<(), ActionError> {
        crate::set::read_back(self, ctx, name, kind, want, self.propagation).await
    }
}
