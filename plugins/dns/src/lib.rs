//! DNS: the last mile of a failover. One record-setting action (`set`) over three back ends —
//! RFC 2136 dynamic updates signed with TSIG (BIND, Knot, any authoritative server that takes
//! them), the PowerDNS API, Route 53 — and verification that the authoritative servers serve
//! the new answer. Every update replaces a whole rrset, can be guarded by the value the runbook
//! expects to find, and remembers what it replaced so `undo` can put it back.

mod powerdns;
mod rfc2136;
mod route53;
mod set;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use drover_api::{
    Action, ActionError, ActionSpec, Outputs, ParamError, Plan, Progress, SecretRef, StepContext, TypedAction,
    ValueType, typed,
};

pub use rfc2136::{Authority, DnsError, RecordKind, Rrset, query};
pub use set::{SetParams, SetRecord};

/// Every DNS action.
pub fn actions() -> Vec<Arc<dyn Action>> {
    vec![
        typed(SetRecord::<rfc2136::Primary>::default()),
        typed(SetRecord::<powerdns::Api>::default()),
        typed(SetRecord::<route53::Zone>::default()),
        typed(Ttl),
        typed(Verify),
    ]
}

/// The site sections this plugin reads.
pub fn site_sections() -> Vec<drover_api::SiteSection> {
    use drover_api::SiteSection;
    vec![
        SiteSection::of::<DnsSite>("dns", "an authoritative DNS server taking RFC 2136 updates signed with TSIG"),
        SiteSection::of::<powerdns::PowerDnsSite>("powerdns", "a PowerDNS server's HTTP API"),
        SiteSection::of::<route53::Route53Site>("route53", "an AWS Route 53 hosted zone"),
    ]
}

/// A site's `dns:` settings for RFC 2136.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsSite {
    /// The primary authoritative server, `IP:port`.
    pub server: String,
    /// The zone, e.g. `example.com.`
    pub zone: String,
    /// TSIG key name as the server knows it.
    pub key_name: String,
    /// `hmac-sha256` (default) or `hmac-sha512`.
    #[serde(default = "sha256")]
    pub key_algorithm: String,
    /// The base64 TSIG secret, by reference: `env:VAR` or `file:PATH`.
    pub tsig_key: SecretRef,
    /// Per-query timeout.
    #[serde(default = "five")]
    pub timeout: drover_api::HumanDuration,
    /// Queries and updates in flight to the server at once, by every step of the run (a DNS
    /// server drops datagrams past its receive buffer; each one dropped costs a `timeout`).
    #[serde(default = "max_in_flight")]
    pub max_in_flight: usize,
}

fn max_in_flight() -> usize {
    rfc2136::MAX_IN_FLIGHT
}

fn sha256() -> String {
    "hmac-sha256".into()
}

fn five() -> drover_api::HumanDuration {
    drover_api::HumanDuration(Duration::from_secs(5))
}

fn authority(ctx: &StepContext, site: &str) -> Result<Authority, ActionError> {
    let cfg: DnsSite = ctx.site_section(site, "dns")?;
    let server: SocketAddr = cfg.server.parse().map_err(|_| {
        ActionError::permanent(format!("site `{site}`: dns.server `{}` is not IP:port", cfg.server))
            .with_hint("write e.g. `192.0.2.53:53`")
    })?;
    // Read the key here, where the site and field are known, so a bad reference says which.
    cfg.tsig_key.resolve_for(site, "dns.tsig_key")?;
    rfc2136::limit_in_flight(server, cfg.max_in_flight);
    Authority::new(server, &cfg.zone, &cfg.key_name, &cfg.key_algorithm, &cfg.tsig_key, cfg.timeout.0)
}

fn rrset_json(r: &Rrset) -> serde_json::Value {
    json!({ "values": r.values, "ttl": r.ttl })
}

/// `dns.ttl`
pub struct Ttl;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TtlParams {
    pub site: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RecordKind,
    /// The new TTL in seconds (lower it a TTL ahead of a planned failover).
    pub ttl: u32,
}

#[async_trait]
impl TypedAction for Ttl {
    type Params = TtlParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "dns.ttl",
        summary: "Change a record's TTL, keeping its values (lower it ahead of a planned failover)",
        outputs: &[("previous", ValueType::Any, "the rrset before (values, ttl)")],
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    async fn plan(&self, ctx: &StepContext, p: TtlParams) -> Result<Plan, ActionError> {
        let auth = authority(ctx, &p.site)?;
        let current = auth.lookup(&p.name, p.kind).await?;
        let plan = Plan::new(format!("{} {:?}: ttl {} → {}", p.name, p.kind, current.ttl, p.ttl)).check(
            "record exists",
            !current.values.is_empty(),
            format!("{:?}", current.values),
        );
        Ok(plan.output("previous", rrset_json(&current)))
    }

    async fn run(&self, ctx: &StepContext, p: TtlParams) -> Result<Outputs, ActionError> {
        let auth = authority(ctx, &p.site)?;
        let current = auth.lookup(&p.name, p.kind).await?;
        if current.values.is_empty() {
            return Err(ActionError::permanent(format!("{} {:?} does not exist", p.name, p.kind)));
        }
        let want = Rrset { values: current.values.clone(), ttl: p.ttl };
        if current.ttl != p.ttl {
            auth.replace(&p.name, p.kind, &want, Some(&current)).await?;
        }
        let mut out = Outputs::new();
        out.insert("previous".into(), rrset_json(&current));
        Ok(out)
    }

    async fn undo(&self, ctx: &StepContext, p: TtlParams, outputs: &Outputs) -> Result<(), ActionError> {
        let auth = authority(ctx, &p.site)?;
        let previous: Rrset = outputs
            .get("previous")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| ActionError::permanent("no record of the previous TTL"))?;
        let current = auth.lookup(&p.name, p.kind).await?;
        let want = Rrset { values: current.values.clone(), ttl: previous.ttl };
        auth.replace(&p.name, p.kind, &want, Some(&current)).await
    }
}

/// `dns.verify`
pub struct Verify;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RecordKind,
    /// The values every server must answer with.
    pub expect: Vec<String>,
    /// Servers to ask, `IP:port`.
    pub servers: Vec<String>,
    /// Time between rounds.
    #[serde(default = "one_second")]
    pub interval: drover_api::HumanDuration,
}

fn one_second() -> drover_api::HumanDuration {
    drover_api::HumanDuration(Duration::from_secs(1))
}

#[derive(Debug, Serialize)]
struct Answer {
    server: String,
    values: Vec<String>,
}

#[async_trait]
impl TypedAction for Verify {
    type Params = VerifyParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "dns.verify",
        summary: "Resolve a name through given servers until every one answers with the expected values",
        outputs: &[("answers", ValueType::Any, "what each server answered last")],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &[],
        rpo_output: None,
    };

    fn check(&self, p: &VerifyParams) -> Result<(), Vec<ParamError>> {
        let mut errs = vec![];
        if p.servers.is_empty() {
            errs.push(ParamError::at(&["servers"], "name at least one server"));
        }
        for s in &p.servers {
            if s.parse::<SocketAddr>().is_err() && !s.contains("${{") {
                errs.push(ParamError::at(&["servers"], format!("`{s}` is not IP:port")));
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    async fn plan(&self, _: &StepContext, p: VerifyParams) -> Result<Plan, ActionError> {
        Ok(Plan::new(format!("wait until {} servers answer {} {:?} = {:?}", p.servers.len(), p.name, p.kind, p.expect)))
    }

    async fn run(&self, ctx: &StepContext, p: VerifyParams) -> Result<Outputs, ActionError> {
        loop {
            let mut answers = vec![];
            for s in &p.servers {
                let addr: SocketAddr =
                    s.parse().map_err(|_| ActionError::permanent(format!("`{s}` is not IP:port")))?;
                let values = match rfc2136::query(addr, &p.name, p.kind, Duration::from_secs(3)).await {
                    Ok(r) => r.values,
                    Err(e) => vec![format!("<{}>", e.message)],
                };
                answers.push(Answer { server: s.clone(), values });
            }
            let good = answers.iter().all(|a| rfc2136::same_values(&a.values, &p.expect));
            if good {
                let mut out = Outputs::new();
                out.insert("answers".into(), json!(answers));
                return Ok(out);
            }
            let wrong: Vec<String> = answers
                .iter()
                .filter(|a| !rfc2136::same_values(&a.values, &p.expect))
                .map(|a| format!("{} says {:?}", a.server, a.values))
                .collect();
            ctx.progress(Progress { message: wrong.join("; "), done: None, total: None });
            if ctx.remaining().is_some_and(|r| r <= p.interval.0) {
                return Err(ActionError::permanent(format!(
                    "{} {:?} is not {:?} everywhere: {}",
                    p.name,
                    p.kind,
                    p.expect,
                    wrong.join("; ")
                ))
                .with_hint("check the update reached the primary and that secondaries transfer the zone"));
            }
            tokio::time::sleep(p.interval.0).await;
        }
    }
}
