//! DNS: the last mile of a failover. RFC 2136 dynamic updates signed with TSIG (BIND, Knot,
//! any authoritative server that takes them), and verification that the authoritative servers
//! serve the new answer. Every update replaces a whole rrset atomically, can be guarded by the
//! value the runbook expects to find, and remembers what it replaced so `undo` can put it back.

mod powerdns;
mod rfc2136;
mod route53;

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

pub use rfc2136::{Authority, RecordKind, Rrset, query};

/// Every DNS action.
pub fn actions() -> Vec<Arc<dyn Action>> {
    vec![typed(Rfc2136Set), typed(powerdns::PowerDnsSet), typed(route53::Route53Set), typed(Ttl), typed(Verify)]
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
}

fn sha256() -> String {
    "hmac-sha256".into()
}

fn five() -> drover_api::HumanDuration {
    drover_api::HumanDuration(Duration::from_secs(5))
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetParams {
    /// The site whose `dns:` settings name the server, zone and key.
    pub site: String,
    /// Fully qualified, e.g. `app.example.com.`
    pub name: String,
    /// `A`, `AAAA`, `CNAME` or `TXT`.
    #[serde(rename = "type")]
    pub kind: RecordKind,
    /// The new values (one or more; one for CNAME).
    pub values: Vec<String>,
    /// TTL in seconds.
    #[serde(default = "sixty")]
    pub ttl: u32,
    /// Refuse, changing nothing, unless the record currently holds exactly these values
    /// (someone may have changed it by hand).
    #[serde(default)]
    pub expect_current: Option<Vec<String>>,
    /// How long to wait for the authoritative server to serve the new values.
    #[serde(default = "thirty")]
    pub propagation_timeout: drover_api::HumanDuration,
}

fn sixty() -> u32 {
    60
}

fn thirty() -> drover_api::HumanDuration {
    drover_api::HumanDuration(Duration::from_secs(30))
}

fn check_values(kind: RecordKind, values: &[String], path: &str) -> Vec<ParamError> {
    let mut errs = vec![];
    if values.is_empty() {
        errs.push(ParamError::at(&[path], "give at least one value"));
    }
    if kind == RecordKind::Cname && values.len() > 1 {
        errs.push(ParamError::at(&[path], "a CNAME holds exactly one value"));
    }
    for v in values {
        if v.contains("${{") {
            continue;
        }
        let ok = match kind {
            RecordKind::A => v.parse::<std::net::Ipv4Addr>().is_ok(),
            RecordKind::Aaaa => v.parse::<std::net::Ipv6Addr>().is_ok(),
            RecordKind::Cname => v.ends_with('.'),
            RecordKind::Txt => true,
        };
        if !ok {
            let want = match kind {
                RecordKind::A => "an IPv4 address",
                RecordKind::Aaaa => "an IPv6 address",
                _ => "a fully qualified name ending with `.`",
            };
            errs.push(ParamError::at(&[path], format!("`{v}` is not {want}")));
        }
    }
    errs
}

fn authority(ctx: &StepContext, site: &str) -> Result<Authority, ActionError> {
    let cfg: DnsSite = ctx.site_section(site, "dns")?;
    let server: SocketAddr = cfg.server.parse().map_err(|_| {
        ActionError::permanent(format!("site `{site}`: dns.server `{}` is not IP:port", cfg.server))
            .with_hint("write e.g. `192.0.2.53:53`")
    })?;
    // Read the key here, where the site and field are known, so a bad reference says which.
    cfg.tsig_key.resolve_for(site, "dns.tsig_key")?;
    Authority::new(server, &cfg.zone, &cfg.key_name, &cfg.key_algorithm, &cfg.tsig_key, cfg.timeout.0)
}

fn rrset_json(r: &Rrset) -> serde_json::Value {
    json!({ "values": r.values, "ttl": r.ttl })
}

/// `dns.rfc2136.set`
pub struct Rfc2136Set;

#[async_trait]
impl TypedAction for Rfc2136Set {
    type Params = SetParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "dns.rfc2136.set",
        summary: "Replace a DNS rrset through an RFC 2136 update signed with TSIG, then wait until it is served",
        outputs: &[
            ("previous", ValueType::Any, "the rrset before (values, ttl); undo restores it"),
            ("values", ValueType::List, "the values now served"),
        ],
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
    };

    fn check(&self, p: &SetParams) -> Result<(), Vec<ParamError>> {
        let mut errs = check_values(p.kind, &p.values, "values");
        if !p.name.ends_with('.') && !p.name.contains("${{") {
            errs.push(ParamError::at(&["name"], format!("`{}` is not fully qualified: end it with `.`", p.name)));
        }
        if let Some(e) = &p.expect_current {
            errs.extend(
                check_values(p.kind, e, "expect_current").into_iter().filter(|e| !e.message.starts_with("give")),
            );
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    async fn plan(&self, ctx: &StepContext, p: SetParams) -> Result<Plan, ActionError> {
        let auth = authority(ctx, &p.site)?;
        let mut plan = Plan::default();
        match auth.soa().await {
            Ok(serial) => {
                plan = plan.check("zone served", true, format!("{} serial {serial} at {}", auth.zone(), auth.server()))
            }
            Err(e) => return Ok(plan.check("zone served", false, e.message)),
        }
        let key = auth.prove_key().await;
        plan = plan.check(
            "TSIG key accepted",
            key.is_ok(),
            key.err().map(|e| e.message).unwrap_or_else(|| auth.key_name().to_string()),
        );
        let current = auth.lookup(&p.name, p.kind).await?;
        if let Some(expected) = &p.expect_current {
            plan = plan.check(
                "record holds the expected values",
                rfc2136::same_values(&current.values, expected),
                format!("now {:?}, expected {:?}", current.values, expected),
            );
        }
        let want = Rrset { values: p.values.clone(), ttl: p.ttl };
        plan.summary = if current.same(&want) {
            format!("{} {:?} already {:?}", p.name, p.kind, p.values)
        } else {
            format!("{} {:?}: {:?} → {:?} (ttl {})", p.name, p.kind, current.values, p.values, p.ttl)
        };
        if !current.same(&want) {
            let line = plan.summary.clone();
            plan = plan.change(line);
        }
        Ok(plan.output("previous", rrset_json(&current)).output("values", json!(p.values)))
    }

    async fn run(&self, ctx: &StepContext, p: SetParams) -> Result<Outputs, ActionError> {
        let auth = authority(ctx, &p.site)?;
        let want = Rrset { values: p.values.clone(), ttl: p.ttl };
        let previous =
            set(ctx, &auth, &p.name, p.kind, &want, p.expect_current.as_deref(), p.propagation_timeout.0).await?;
        let mut out = Outputs::new();
        out.insert("previous".into(), rrset_json(&previous));
        out.insert("values".into(), json!(p.values));
        Ok(out)
    }

    async fn undo(&self, ctx: &StepContext, p: SetParams, outputs: &Outputs) -> Result<(), ActionError> {
        let auth = authority(ctx, &p.site)?;
        let previous: Rrset = outputs
            .get("previous")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| ActionError::permanent("no record of the previous rrset to restore"))?;
        // Only undo what this step did: the record must still hold our values.
        set(ctx, &auth, &p.name, p.kind, &previous, Some(&p.values), p.propagation_timeout.0).await.map(|_| ())
    }
}

/// Where an rrset lives: an RFC 2136 primary, the PowerDNS API, a Route 53 hosted zone.
#[async_trait]
pub(crate) trait RecordStore: Send + Sync {
    async fn current(&self, name: &str, kind: RecordKind) -> Result<Rrset, ActionError>;
    /// Replace the rrset. `guard` is what it held when read, for stores that can make the write
    /// conditional on it.
    async fn write(
        &self,
        ctx: &StepContext,
        name: &str,
        kind: RecordKind,
        want: &Rrset,
        guard: Option<&Rrset>,
    ) -> Result<(), ActionError>;
    /// Return once the new values are what the store serves.
    async fn settle(&self, ctx: &StepContext, name: &str, kind: RecordKind, want: &Rrset) -> Result<(), ActionError>;
}

/// Replace an rrset: nothing to do when it already holds `want`; refuse, changing nothing, when
/// `expect` is given and does not match. Returns what the rrset held before.
pub(crate) async fn guarded_set(
    store: &dyn RecordStore,
    ctx: &StepContext,
    name: &str,
    kind: RecordKind,
    want: &Rrset,
    expect: Option<&[String]>,
) -> Result<Rrset, ActionError> {
    let current = store.current(name, kind).await?;
    if current.same(want) {
        return Ok(current);
    }
    if let Some(expected) = expect
        && !rfc2136::same_values(&current.values, expected)
    {
        return Err(ActionError::permanent(format!(
            "refusing to change {name} {kind:?}: it holds {:?}, the runbook expects {:?}",
            current.values, expected
        ))
        .with_hint("someone may have changed it by hand; check, then fix `expect_current` or the record"));
    }
    store.write(ctx, name, kind, want, expect.map(|_| &current)).await?;
    store.settle(ctx, name, kind, want).await?;
    Ok(current)
}

/// An RFC 2136 primary, waited on until it serves an update.
struct Primary<'a> {
    auth: &'a Authority,
    propagation: Duration,
}

#[async_trait]
impl RecordStore for Primary<'_> {
    async fn current(&self, name: &str, kind: RecordKind) -> Result<Rrset, ActionError> {
        self.auth.lookup(name, kind).await
    }

    async fn write(
        &self,
        _: &StepContext,
        name: &str,
        kind: RecordKind,
        want: &Rrset,
        guard: Option<&Rrset>,
    ) -> Result<(), ActionError> {
        self.auth.replace(name, kind, want, guard).await
    }

    async fn settle(&self, ctx: &StepContext, name: &str, kind: RecordKind, want: &Rrset) -> Result<(), ActionError> {
        let deadline = tokio::time::Instant::now() + self.propagation;
        let mut polls = 0u64;
        loop {
            let now = self.auth.lookup(name, kind).await?;
            polls += 1;
            if rfc2136::same_values(&now.values, &want.values) {
                return Ok(());
            }
            ctx.progress(Progress {
                message: format!("waiting for {name} to be served: {:?}", now.values),
                done: Some(polls),
                total: None,
            });
            if tokio::time::Instant::now() >= deadline {
                return Err(ActionError::retryable(format!(
                    "{name} {kind:?} still serves {:?} after the update",
                    now.values
                ))
                .with_hint("the server accepted the update but does not serve it yet; check its logs"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn set(
    ctx: &StepContext,
    auth: &Authority,
    name: &str,
    kind: RecordKind,
    want: &Rrset,
    expect: Option<&[String]>,
    propagation: Duration,
) -> Result<Rrset, ActionError> {
    guarded_set(&Primary { auth, propagation }, ctx, name, kind, want, expect).await
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
        let mut rounds = 0u64;
        loop {
            rounds += 1;
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
            ctx.progress(Progress { message: wrong.join("; "), done: Some(rounds), total: None });
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
