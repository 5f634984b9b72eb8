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

use drover_api::{ActionError, ActionSpec, Plan, Progress, StepContext};

use crate::rfc2136::{RecordKind, Rrset};

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

pub struct Zone {
    client: aws_sdk_route53::Client,
    id: String,
    /// The longest wait for INSYNC; the step's time when not given.
    propagation: Option<Duration>,
}

/// What Route 53 (or the way to it) failed with, decided on the SDK's error kind, Route 53's
/// error code and the HTTP status — never on the error's text.
fn sdk_error<E>(
    what: &str,
    e: aws_sdk_route53::error::SdkError<E, aws_sdk_route53::config::http::HttpResponse>,
) -> ActionError
where
    E: aws_sdk_route53::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_route53::error::{ProvideErrorMetadata, SdkError};
    let code = e.code().unwrap_or_default().to_string();
    // Route 53's own code and message when it sent them; the transport's story otherwise.
    let text = match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => drover_api::causes(&e),
    };
    let status = e.raw_response().map(|r| r.status().as_u16());
    if matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) {
        return ActionError::retryable(format!("Route 53 {what}: {text}"))
            .with_hint("a passing fault; the step retries");
    }
    match (code.as_str(), status) {
        ("NoSuchHostedZone", _) => ActionError::permanent(format!("Route 53 has no such hosted zone ({what})"))
            .with_hint("check the site's route53.hosted_zone_id"),
        ("InvalidChangeBatch", _) => {
            ActionError::permanent(format!("Route 53 refused the change batch ({what}): {text}"))
                .with_hint("the record may have changed since it was read, or lies outside the zone")
        }
        ("AccessDenied" | "InvalidClientTokenId" | "SignatureDoesNotMatch" | "UnrecognizedClientException", _)
        | (_, Some(401 | 403)) => ActionError::permanent(format!("Route 53 rejected the credentials ({what})"))
            .with_hint("check the AWS credentials drover runs with (environment, profile or role)"),
        ("Throttling" | "ThrottlingException" | "PriorRequestNotComplete", _) | (_, Some(429)) => {
            ActionError::retryable(format!("Route 53 {what}: {text}")).with_hint("a passing fault; the step retries")
        }
        // A server error that outlasted the SDK's own retries: still Route 53's side, still passing.
        (_, Some(s)) if s >= 500 => ActionError::retryable(format!("Route 53 {what}: server error (HTTP {s})"))
            .with_hint("Route 53 or the endpoint in between is failing; the step retries"),
        _ => ActionError::permanent(format!("Route 53 {what}: {text}")),
    }
}

impl Zone {
    async fn connect(ctx: &StepContext, site: &str, propagation: Option<Duration>) -> Result<Zone, ActionError> {
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
        Ok(Zone { client: aws_sdk_route53::Client::new(&conf), id: cfg.hosted_zone_id, propagation })
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
        let change = |action: ChangeAction, set: &Rrset| -> Result<_, ActionError> {
            Ok(Change::builder().action(action).resource_record_set(Self::rrset(name, kind, set)?).build())
        };
        let changes = match guard {
            // A delete names exactly what it deletes; nothing there is nothing to delete.
            _ if want.values.is_empty() => match guard {
                Some(g) if !g.values.is_empty() => vec![change(ChangeAction::Delete, g)?],
                _ => return Ok(()),
            },
            // Delete exactly what was read and create the new set, in one all-or-nothing batch.
            Some(g) if !g.values.is_empty() => {
                vec![change(ChangeAction::Delete, g)?, change(ChangeAction::Create, want)?]
            }
            Some(_) => vec![change(ChangeAction::Create, want)?],
            None => vec![change(ChangeAction::Upsert, want)?],
        };
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
        let give_up = self.propagation.map(|p| tokio::time::Instant::now() + p);
        while status != ChangeStatus::Insync {
            ctx.progress(Progress {
                message: format!("change {id} is {status:?}; waiting for INSYNC"),
                done: None,
                total: None,
            });
            let out_of_time = give_up.is_some_and(|g| tokio::time::Instant::now() >= g);
            if out_of_time || ctx.remaining().is_some_and(|r| r < Duration::from_secs(2)) {
                return Err(ActionError::retryable(format!("Route 53 change {id} is still {status:?}")));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let got = self.client.get_change().id(&id).send().await.map_err(|e| sdk_error("reading the change", e))?;
            status = got.change_info().map(|c| c.status().clone()).unwrap_or(ChangeStatus::Insync);
        }
        Ok(())
    }
}

#[async_trait]
impl crate::set::Backend for Zone {
    const SPEC: ActionSpec = ActionSpec {
        name: "dns.route53.set",
        summary: "Replace a Route 53 rrset (UPSERT, or an atomic delete+create with expect_current) and wait for INSYNC",
        outputs: crate::set::OUTPUTS,
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };
    type Store = Zone;

    async fn open(ctx: &StepContext, site: &str, propagation: Option<Duration>) -> Result<Zone, ActionError> {
        Zone::connect(ctx, site, propagation).await
    }

    async fn access(zone: &Zone, plan: Plan, name: &str, kind: RecordKind) -> Result<(Plan, Rrset), Plan> {
        match zone.current(name, kind).await {
            Ok(c) => Ok((plan.check("hosted zone readable", true, zone.id.clone()), c)),
            Err(e) => Err(plan.check("hosted zone readable", false, e.message)),
        }
    }
}

#[async_trait]
impl crate::set::RecordStore for Zone {
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
