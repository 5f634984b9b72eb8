//! One record-setting action over every back end that holds an rrset: an RFC 2136 primary
//! (`dns.rfc2136.set`), the PowerDNS API (`dns.powerdns.set`), a Route 53 hosted zone
//! (`dns.route53.set`). The parameters, the plan, the guard (`expect_current`) and the undo are
//! the same for all three; a back end says only how to read, write and wait for an rrset, and
//! how to prove access in a plan.
//!
//! Undo restores what the step replaced, and only while the record still holds what the step
//! set (someone may have changed it since). A record that did not exist before is deleted.

use std::marker::PhantomData;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use drover_api::{
    ActionError, ActionSpec, HumanDuration, Outputs, ParamError, Plan, Progress, StepContext, TypedAction,
};

use crate::rfc2136::{RecordKind, Rrset, same_values};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetParams {
    /// The site whose settings name the server (or API, or hosted zone) and its credentials.
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
    /// How long to wait for the new values to be served (default 30s; Route 53: until the
    /// change is INSYNC, within the step's timeout).
    #[serde(default)]
    pub propagation_timeout: Option<HumanDuration>,
}

fn sixty() -> u32 {
    60
}

/// What every back end's set outputs.
pub const OUTPUTS: &[(&str, drover_api::ValueType, &str)] = &[
    ("previous", drover_api::ValueType::Any, "the rrset before (values, ttl); undo restores it"),
    ("values", drover_api::ValueType::List, "the values now served"),
];

/// Read the record back until it holds `want` (a store that serves what it was just told,
/// after a while), within `wait`.
pub(crate) async fn read_back(
    store: &dyn RecordStore,
    ctx: &StepContext,
    name: &str,
    kind: RecordKind,
    want: &Rrset,
    wait: Duration,
) -> Result<(), ActionError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let now = store.current(name, kind).await?;
        if same_values(&now.values, &want.values) {
            return Ok(());
        }
        ctx.progress(Progress {
            message: format!("waiting for {name} to be served: {:?}", now.values),
            done: None,
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

/// The default wait for the new values to be served.
pub const PROPAGATION: Duration = Duration::from_secs(30);

/// Where an rrset lives.
#[async_trait]
pub(crate) trait RecordStore: Send + Sync {
    async fn current(&self, name: &str, kind: RecordKind) -> Result<Rrset, ActionError>;
    /// Replace the rrset (empty values: delete it). `guard` is what it held when read, for
    /// stores that can make the write conditional on it.
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

/// A kind of record store, and the action over it.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    const SPEC: ActionSpec;
    type Store: RecordStore + 'static;

    /// The store a site names (settings and credentials read; no request yet).
    async fn open(ctx: &StepContext, site: &str, propagation: Option<Duration>) -> Result<Self::Store, ActionError>;

    /// Prove access in a plan and read the record: the plan with its access checks and what
    /// the record holds, or (`Err`) the plan with the failed check, when nothing can be read.
    async fn access(store: &Self::Store, plan: Plan, name: &str, kind: RecordKind) -> Result<(Plan, Rrset), Plan>;
}

/// `dns.<back end>.set`
pub struct SetRecord<B>(PhantomData<fn() -> B>);

impl<B> Default for SetRecord<B> {
    fn default() -> Self {
        SetRecord(PhantomData)
    }
}

pub(crate) fn check_values(kind: RecordKind, values: &[String], path: &str) -> Vec<ParamError> {
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

fn rrset_json(r: &Rrset) -> serde_json::Value {
    json!({ "values": r.values, "ttl": r.ttl })
}

#[async_trait]
impl<B: Backend> TypedAction for SetRecord<B> {
    type Params = SetParams;
    const SPEC: ActionSpec = B::SPEC;

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
        let store = B::open(ctx, &p.site, p.propagation_timeout.map(|d| d.0)).await?;
        let (mut plan, current) = match B::access(&store, Plan::default(), &p.name, p.kind).await {
            Ok(found) => found,
            Err(plan) => return Ok(plan),
        };
        if let Some(expected) = &p.expect_current {
            plan = plan.check(
                "record holds the expected values",
                same_values(&current.values, expected),
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
        let store = B::open(ctx, &p.site, p.propagation_timeout.map(|d| d.0)).await?;
        let want = Rrset { values: p.values.clone(), ttl: p.ttl };
        let previous = guarded_set(&store, ctx, &p.name, p.kind, &want, p.expect_current.as_deref()).await?;
        let mut out = Outputs::new();
        out.insert("previous".into(), rrset_json(&previous));
        out.insert("values".into(), json!(p.values));
        Ok(out)
    }

    async fn undo(&self, ctx: &StepContext, p: SetParams, outputs: &Outputs) -> Result<(), ActionError> {
        let store = B::open(ctx, &p.site, p.propagation_timeout.map(|d| d.0)).await?;
        let previous: Rrset = outputs
            .get("previous")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| ActionError::permanent("no record of the previous rrset to restore"))?;
        // Only undo what this step did: the record must still hold our values.
        guarded_set(&store, ctx, &p.name, p.kind, &previous, Some(&p.values)).await.map(|_| ())
    }
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
        && !same_values(&current.values, expected)
    {
        return Err(ActionError::permanent(format!(
            "refusing to change {name} {kind:?}: it holds {:?}, the runbook expects {:?}",
            current.values, expected
        ))
        .with_hint("someone may have changed it by hand; check, then fix `expect_current` or the record"));
    }
    // A delete must name what it deletes: it is guarded by what was just read.
    let guard = (expect.is_some() || want.values.is_empty()).then_some(&current);
    store.write(ctx, name, kind, want, guard).await?;
    store.settle(ctx, name, kind, want).await?;
    Ok(current)
}
