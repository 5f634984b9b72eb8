//! `dns.route53.set`: replace an rrset in a Route 53 hosted zone and wait for INSYNC.
//! With `expect_current`, the change batch deletes exactly the expected rrset and creates the
//! new one; Route 53 applies a batch all or nothing, so the guard is atomic.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use drover_api::{ActionError, ActionSpec, Outputs, ParamError, Plan, Progress, StepContext, TypedAction, ValueType};

use crate::rfc2136::{RecordKind, Rrset, same_values};

/// A site's `route53:` settings. Credentials come from the AWS default chain (environment,
/// profile, instance role) — never from the runbook.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route53Site {
    /// The hosted zone id, e.g. `Z0123456789ABCDEFGHIJ`.
    pub hosted_zone_id: String,
    #[serde(default = "us_east_1")]
    pub region: String,
    /// Another endpoint (a Route 53-compatible test server).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A named profile of the shared AWS config.
    #[serde(default)]
    pub profile: Option<String>,
}

fn us_east_1() -> String {
    "us-east-1".into()
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route53Params {
    pub site: String,
    /// Fully qualified, e.g. `app.example.com.`
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RecordKind,
    pub values: Vec<String>,
    #[serde(default = "sixty")]
    pub ttl: u32,
    /// Refuse, changing nothing, unless the record holds exactly these values now.
    #[serde(default)]
    pub expect_current: Option<Vec<String>>,
}

fn sixty() -> u32 {
    60
}

fn rr_type(k: RecordKind) -> RrType {
    match k {
        RecordKind::A => RrType::A,
        RecordKind::Aaaa => RrType::Aaaa,
        RecordKind::Cname => RrType::Cname,
        RecordKind::Txt => RrType::Txt,
    }
}

fn quote(k: RecordKind, v: &str) -> String {
    if k == RecordKind::Txt && !v.starts_with('"') { format!("\"{v}\"") } else { v.to_string() }
}

struct Zone {
    client: aws_sdk_route53::Client,
    id: String,
}

fn sdk_error<E, R>(what: &str, e: aws_sdk_route53::error::SdkError<E, R>) -> ActionError
where
    E: aws_sdk_route53::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_route53::error::ProvideErrorMetadata;
    let detail = format!("{e:?}");
    // Route 53's own code and message when it sent them; the transport's story otherwise.
    let text = match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => drover_api::causes(&e),
    };
    if detail.contains("NoSuchHostedZone") {
        return ActionError::permanent(format!("Route 53 has no such hosted zone ({what})"))
            .with_hint("check the site's route53.hosted_zone_id");
    }
    if detail.contains("InvalidChangeBatch") {
        return ActionError::permanent(format!("Route 53 refused the change batch ({what}): {detail}"))
            .with_hint("the record may have changed since it was read, or lies outside the zone");
    }
    if detail.contains("AccessDenied")
        || detail.contains("InvalidClientTokenId")
        || detail.contains("SignatureDoesNotMatch")
    {
        return ActionError::permanent(format!("Route 53 rejected the credentials ({what})"))
            .with_hint("check the AWS credentials drover runs with (environment, profile or role)");
    }
    if detail.contains("Throttling")
        || detail.contains("PriorRequestNotComplete")
        || detail.contains("DispatchFailure")
        || detail.contains("TimeoutError")
    {
        return ActionError::retryable(format!("Route 53 {what}: {text}"))
            .with_hint("a passing fault; the step retries");
    }
    // A server error that outlasted the SDK's own retries: still Route 53's side, still passing.
    if let Some(at) = detail.find("status: StatusCode(5") {
        let code = &detail[at + "status: StatusCode(".len()..][..3];
        return ActionError::retryable(format!("Route 53 {what}: server error (HTTP {code})"))
            .with_hint("Route 53 or the endpoint in between is failing; the step retries");
    }
    ActionError::permanent(format!("Route 53 {what}: {text}"))
}

impl Zone {
    async fn connect(ctx: &StepContext, site: &str) -> Result<Zone, ActionError> {
        let cfg: Route53Site = ctx.site_section(site, "route53")?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(cfg.region.clone()));
        if let Some(e) = &cfg.endpoint {
            loader = loader.endpoint_url(e);
        }
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        // Each attempt at most 10 s, and the whole call (the SDK's retries included) within the
        // step's time: a silent endpoint becomes an error while the step can still report it.
        let budget = ctx.remaining().unwrap_or(Duration::from_secs(60));
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(budget.min(Duration::from_secs(10)))
            .operation_timeout(budget)
            .build();
        loader = loader.timeout_config(timeouts);
        let conf = loader.load().await;
        Ok(Zone { client: aws_sdk_route53::Client::new(&conf), id: cfg.hosted_zone_id })
    }

    async fn current(&self, name: &str, kind: RecordKind) -> Result<Rrset, ActionError> {
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(&self.id)
            .start_record_name(name)
            .start_record_type(rr_type(kind))
            .max_items(1)
            .send()
            .await
            .map_err(|e| sdk_error("listing record sets", e))?;
        let found = out.resource_record_sets().iter().find(|r| {
            r.name().trim_end_matches('.').eq_ignore_ascii_case(name.trim_end_matches('.'))
                && *r.r#type() == rr_type(kind)
        });
        Ok(match found {
            Some(r) => Rrset {
                values: r.resource_records().iter().map(|x| x.value().trim_matches('"').to_string()).collect(),
                ttl: r.ttl().unwrap_or(0) as u32,
            },
            None => Rrset { values: vec![], ttl: 0 },
        })
    }

    fn rrset(name: &str, kind: RecordKind, set: &Rrset) -> Result<ResourceRecordSet, ActionError> {
        let mut b = ResourceRecordSet::builder().name(name).r#type(rr_type(kind)).ttl(set.ttl as i64);
        for v in &set.values {
            b = b.resource_records(
                ResourceRecord::builder()
                    .value(quote(kind, v))
                    .build()
                    .map_err(|e| ActionError::permanent(e.to_string()))?,
            );
        }
        b.build().map_err(|e| ActionError::permanent(e.to_string()))
    }

    async fn change(
        &self,
        ctx: &StepContext,
        name: &str,
        kind: RecordKind,
        want: &Rrset,
        guard: Option<&Rrset>,
    ) -> Result<(), ActionError> {
        let mut changes = vec![];
        match guard {
            Some(g) if !g.values.is_empty() => {
                changes.push(
                    Change::builder()
                        .action(ChangeAction::Delete)
                        .resource_record_set(Self::rrset(name, kind, g)?)
                        .build(),
                );
                changes.push(
                    Change::builder()
                        .action(ChangeAction::Create)
                        .resource_record_set(Self::rrset(name, kind, want)?)
                        .build(),
                );
            }
            Some(_) => changes.push(
                Change::builder()
                    .action(ChangeAction::Create)
                    .resource_record_set(Self::rrset(name, kind, want)?)
                    .build(),
            ),
            None => changes.push(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(Self::rrset(name, kind, want)?)
                    .build(),
            ),
        }
        let changes: Vec<Change> =
            changes.into_iter().collect::<Result<_, _>>().map_err(|e| ActionError::permanent(e.to_string()))?;
        let batch = ChangeBatch::builder()
            .comment("drover")
            .set_changes(Some(changes))
            .build()
            .map_err(|e| ActionError::permanent(e.to_string()))?;
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(&self.id)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| sdk_error("changing record sets", e))?;
        let Some(info) = out.change_info() else { return Ok(()) };
        let id = info.id().to_string();
        let mut status = info.status().clone();
        let mut polls = 0u64;
        while status != ChangeStatus::Insync {
            polls += 1;
            ctx.progress(Progress {
                message: format!("change {id} is {status:?}; waiting for INSYNC"),
                done: Some(polls),
                total: None,
            });
            if ctx.remaining().is_some_and(|r| r < Duration::from_secs(2)) {
                return Err(ActionError::retryable(format!("Route 53 change {id} is still {status:?}")));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let got = self.client.get_change().id(&id).send().await.map_err(|e| sdk_error("reading the change", e))?;
            status = got.change_info().map(|c| c.status().clone()).unwrap_or(ChangeStatus::Insync);
        }
        Ok(())
    }
}

pub struct Route53Set;

#[async_trait]
impl TypedAction for Route53Set {
    type Params = Route53Params;
    const SPEC: ActionSpec = ActionSpec {
        name: "dns.route53.set",
        summary: "Replace a Route 53 rrset (UPSERT, or an atomic delete+create with expect_current) and wait for INSYNC",
        outputs: &[
            ("previous", ValueType::Any, "the rrset before (values, ttl); undo restores it"),
            ("values", ValueType::List, "the new values"),
        ],
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
    };

    fn check(&self, p: &Route53Params) -> Result<(), Vec<ParamError>> {
        let errs = crate::check_values(p.kind, &p.values, "values");
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    async fn plan(&self, ctx: &StepContext, p: Route53Params) -> Result<Plan, ActionError> {
        let zone = Zone::connect(ctx, &p.site).await?;
        let mut plan = Plan::default();
        let current = match zone.current(&p.name, p.kind).await {
            Ok(c) => {
                plan = plan.check("hosted zone readable", true, zone.id.clone());
                c
            }
            Err(e) => return Ok(plan.check("hosted zone readable", false, e.message)),
        };
        if let Some(expected) = &p.expect_current {
            plan = plan.check(
                "record holds the expected values",
                same_values(&current.values, expected),
                format!("now {:?}", current.values),
            );
        }
        plan.summary = format!("{} {:?}: {:?} → {:?}", p.name, p.kind, current.values, p.values);
        if !current.same(&Rrset { values: p.values.clone(), ttl: p.ttl }) {
            let line = plan.summary.clone();
            plan = plan.change(line);
        }
        Ok(plan
            .output("previous", json!({ "values": current.values, "ttl": current.ttl }))
            .output("values", json!(p.values)))
    }

    async fn run(&self, ctx: &StepContext, p: Route53Params) -> Result<Outputs, ActionError> {
        let zone = Zone::connect(ctx, &p.site).await?;
        let want = Rrset { values: p.values.clone(), ttl: p.ttl };
        let previous = crate::guarded_set(&zone, ctx, &p.name, p.kind, &want, p.expect_current.as_deref()).await?;
        let mut out = Outputs::new();
        out.insert("previous".into(), json!({ "values": previous.values, "ttl": previous.ttl }));
        out.insert("values".into(), json!(p.values));
        Ok(out)
    }

    async fn undo(&self, ctx: &StepContext, p: Route53Params, outputs: &Outputs) -> Result<(), ActionError> {
        let zone = Zone::connect(ctx, &p.site).await?;
        let previous: Rrset = outputs
            .get("previous")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| ActionError::permanent("no record of the previous rrset to restore"))?;
        if previous.values.is_empty() {
            return Err(ActionError::permanent(format!(
                "{} did not exist before; delete it by hand if it should go",
                p.name
            )));
        }
        crate::guarded_set(&zone, ctx, &p.name, p.kind, &previous, Some(&p.values)).await.map(|_| ())
    }
}

#[async_trait]
impl crate::RecordStore for Zone {
    async fn current(&self, name: &str, kind: RecordKind) -> Result<Rrset, ActionError> {
        Zone::current(self, name, kind).await
    }

    async fn write(
        &self,
        ctx: &StepContext,
        name: &str,
        kind: RecordKind,
        want: &Rrset,
        guard: Option<&Rrset>,
    ) -> Result<(), ActionError> {
        self.change(ctx, name, kind, want, guard).await
    }

    // `change` already waited for INSYNC.
    async fn settle(&self, _: &StepContext, _: &str, _: RecordKind, _: &Rrset) -> Result<(), ActionError> {
        Ok(())
    }
}
