//! Transfers and relationship lifetime: update, wait (health, state, lag), reverse, release.

use super::*;

/// `ontap.snapmirror.update`
pub struct Update;

#[async_trait]
impl TypedAction for Update {
    type Params = RelParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.update",
        summary: "Start a SnapMirror transfer (update) and wait until it has succeeded",
        outputs: &[
            ("uuid", ValueType::String, "relationship uuid"),
            ("exported_snapshot", ValueType::String, "the snapshot just transferred"),
            ("lag_time", ValueType::String, "lag after the update"),
            ("rpo_seconds", ValueType::Number, "the lag in seconds: data a failover would lose now"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: Some("rpo_seconds"),
    };

    async fn plan(&self, ctx: &StepContext, p: RelParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            plan = plan.check(
                "relationship can transfer",
                matches!(r.state, MirrorState::Snapmirrored | MirrorState::Uninitialized),
                format!("state {}", r.state),
            );
            plan.summary =
                format!("transfer the latest data to {} (lag {})", p.destination, r.lag_time.as_deref().unwrap_or(""));
            plan = plan.change(format!("POST a transfer on {}", p.destination));
            plan.outputs = rel_outputs(&r);
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: RelParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        let uuid = rel.uuid.clone();
        if !rel.transferring() {
            let _turn = client.operation().await;
            client
                .send(Method::POST, &format!("/api/snapmirror/relationships/{uuid}/transfers"), Some(&json!({})))
                .await?;
        }
        let rel = wait_for(&client, ctx, &uuid, "the transfer to finish", |r| !r.transferring()).await?;
        match rel.transfer_state() {
            Some(TransferState::Success) => Ok(rel_outputs(&rel)),
            other => Err(ActionError::retryable(format!(
                "transfer to {} ended {}",
                p.destination,
                other.map(TransferState::as_str).unwrap_or("without a state")
            ))
            .with_hint("check the relationship's health and the network between the clusters")),
        }
    }
}

/// `ontap.snapmirror.wait`
pub struct Wait;

#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// healthy and no transfer running
    Healthy,
    /// `state` equals the given state
    State,
    /// lag below `max_lag`
    Lag,
    /// no transfer running
    Idle,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    pub site: String,
    pub destination: String,
    /// What to wait for: `healthy` (default), `state`, `lag` or `idle`.
    #[serde(default = "healthy")]
    pub until: Until,
    /// For `until: state`.
    #[serde(default)]
    pub state: Option<String>,
    /// For `until: lag` (and checked by `plan()`): the RPO the operator accepts.
    #[serde(default)]
    pub max_lag: Option<HumanDuration>,
}

fn healthy() -> Until {
    Until::Healthy
}

#[async_trait]
impl TypedAction for Wait {
    type Params = WaitParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.wait",
        summary: "Wait until a relationship is healthy, in a given state, idle, or its lag is below max_lag",
        outputs: &[
            ("uuid", ValueType::String, "relationship uuid"),
            ("state", ValueType::String, "state"),
            ("lag_time", ValueType::String, "lag (ISO 8601)"),
            ("rpo_seconds", ValueType::Number, "the lag in seconds: data a failover would lose now"),
            ("exported_snapshot", ValueType::String, "newest common snapshot"),
            ("healthy", ValueType::Any, "health"),
        ],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: Some("rpo_seconds"),
    };

    fn check(&self, p: &WaitParams) -> Result<(), Vec<drover_api::ParamError>> {
        match p.until {
            Until::State if p.state.is_none() => {
                Err(vec![drover_api::ParamError::at(&["state"], "`until: state` needs `state:`")])
            }
            Until::Lag if p.max_lag.is_none() => {
                Err(vec![drover_api::ParamError::at(&["max_lag"], "`until: lag` needs `max_lag:`")])
            }
            _ => Ok(()),
        }
    }

    async fn plan(&self, ctx: &StepContext, p: WaitParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        if let Some(r) = rel {
            plan = plan.check("healthy", r.unhealthy().is_none(), r.unhealthy().unwrap_or_else(|| "yes".into()));
            if let (Until::State, Some(want)) = (p.until, &p.state) {
                plan = plan.check(format!("state {want}"), r.state.as_str() == want, format!("now {}", r.state));
            }
            if let Some(max) = p.max_lag {
                let l = r.lag();
                plan = plan.check(
                    "lag within max_lag (RPO)",
                    l.is_some_and(|l| l <= max.0),
                    format!(
                        "lag {} (max {max})",
                        l.map(|l| humantime::format_duration(l).to_string()).unwrap_or_else(|| "unknown".into())
                    ),
                );
            }
            plan.summary = format!("wait for {} to be {:?}", p.destination, p.until).to_lowercase();
            plan.outputs = rel_outputs(&r);
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: WaitParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let rel = client.require_relationship(&p.destination).await?;
        let uuid = rel.uuid.clone();
        let target = p.state.clone().unwrap_or_default();
        let max = p.max_lag.map(|m| m.0).unwrap_or(Duration::MAX);
        let until = p.until;
        let what = match (until, p.max_lag) {
            (Until::Lag, _) | (_, None) => format!("{until:?}").to_lowercase(),
            (_, Some(m)) => format!("{} with lag within {m}", format!("{until:?}").to_lowercase()),
        };
        // `max_lag` bounds every kind of wait: a relationship in the right state but too far
        // behind is not what the operator accepted.
        let rel = wait_for(&client, ctx, &uuid, &what, move |r| {
            let reached = match until {
                Until::Healthy => r.unhealthy().is_none() && !r.transferring(),
                Until::State => r.state.as_str() == target,
                Until::Lag => true,
                Until::Idle => !r.transferring(),
            };
            reached && (max == Duration::MAX || r.lag().is_some_and(|l| l <= max))
        })
        .await?;
        Ok(rel_outputs(&rel))
    }
}

/// `ontap.snapmirror.reverse`
pub struct Reverse;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReverseParams {
    /// The site holding the (broken) relationship's destination today, e.g. the DR site.
    pub site: String,
    /// Its destination path today, e.g. `svm_dr:`.
    pub destination: String,
    /// The site of the original source, which becomes the new destination.
    pub source_site: String,
}

#[async_trait]
impl TypedAction for Reverse {
    type Params = ReverseParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.reverse",
        summary: "Reverse resync for failback: the destination becomes the source; writes made there are kept",
        outputs: &[
            ("uuid", ValueType::String, "the reversed relationship"),
            ("source", ValueType::String, "its source path"),
            ("destination", ValueType::String, "its destination path"),
            ("state", ValueType::String, "snapmirrored"),
            ("exported_snapshot", ValueType::String, "newest common snapshot"),
        ],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site", "source_site"],
        rpo_output: None,
    };

    async fn plan(&self, ctx: &StepContext, p: ReverseParams) -> Result<Plan, ActionError> {
        let (client, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        match rel {
            Some(r) => {
                plan = plan.check(
                    "relationship broken off",
                    r.state == MirrorState::BrokenOff,
                    format!("state {}", r.state),
                );
                let peers = client.records("/api/cluster/peers?fields=name,status").await.unwrap_or_default();
                let peer_ok =
                    peers.iter().any(|x| x.pointer("/status/state").and_then(Value::as_str) == Some("available"));
                plan = plan.check(
                    "cluster peer available",
                    peer_ok,
                    if peer_ok { "available".into() } else { "no available cluster peer".to_string() },
                );
                plan.summary =
                    format!("reverse {} → {} (resync towards `{}`)", r.destination.path, r.source.path, p.source_site);
                plan = plan.change(format!("PATCH {} with swapped paths and state snapmirrored", p.destination));
                plan.outputs = rel_outputs(&r);
                plan.outputs.insert("source".into(), json!(r.destination.path));
                plan.outputs.insert("destination".into(), json!(r.source.path));
            }
            None => {
                // Perhaps it was reversed already: look on the original source's cluster.
                let other = Client::connect(ctx, &p.source_site)?;
                if let Some(r) = other.relationship_from(&p.destination).await? {
                    plan.checks.retain(|c| c.name != "relationship exists");
                    plan.summary = format!("already reversed: {} → {}", r.source.path, r.destination.path);
                    plan.outputs = rel_outputs(&r);
                }
            }
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: ReverseParams) -> Result<Outputs, ActionError> {
        let here = Client::connect(ctx, &p.site)?;
        let there = Client::connect(ctx, &p.source_site)?;
        if let Some(rel) = here.relationship(&p.destination).await? {
            let body = json!({
                "source": { "path": rel.destination.path },
                "destination": { "path": rel.source.path },
                "state": "snapmirrored",
            });
            let path = format!("/api/snapmirror/relationships/{}", rel.uuid);
            here.mutate(Method::PATCH, &path, &body, ctx.deadline).await?;
        }
        // The reversed relationship now belongs to the original source's cluster.
        let poll = drover_api::Poll::new(Duration::from_secs(5));
        let rel = loop {
            if let Some(r) = there.relationship_from(&p.destination).await? {
                break r;
            }
            let delay = poll.next_delay();
            if ctx.remaining().is_some_and(|r| r <= delay) {
                return Err(ActionError::permanent(format!(
                    "no relationship with source `{}` appeared on `{}`",
                    p.destination, p.source_site
                ))
                .with_hint("check the relationship on both clusters"));
            }
            tokio::time::sleep(delay).await;
        };
        let rel = wait_for(&there, ctx, &rel.uuid, "the reverse resync", |r| {
            r.state == MirrorState::Snapmirrored && !r.transferring()
        })
        .await?;
        Ok(rel_outputs(&rel))
    }
}

/// `ontap.snapmirror.release`
pub struct Release;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseParams {
    pub site: String,
    pub destination: String,
    /// Keep the common snapshots (so the relationship can be re-created and resynced).
    #[serde(default = "yes")]
    pub keep_snapshots: bool,
}

fn yes() -> bool {
    true
}

#[async_trait]
impl TypedAction for Release {
    type Params = ReleaseParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.release",
        summary: "Delete a relationship (on both sides), keeping the common snapshots unless told otherwise",
        outputs: &[("uuid", ValueType::String, "the released relationship")],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    async fn plan(&self, ctx: &StepContext, p: ReleaseParams) -> Result<Plan, ActionError> {
        let (_, mut plan, rel) = plan_base(ctx, &p.site, &p.destination).await?;
        plan.checks.retain(|c| c.name != "relationship exists");
        plan.summary = match &rel {
            Some(_) => format!(
                "release {}{}",
                p.destination,
                if p.keep_snapshots { " (keeping common snapshots)" } else { "" }
            ),
            None => format!("{}: no relationship, nothing to release", p.destination),
        };
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: ReleaseParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let mut out = Outputs::new();
        let Some(rel) = client.relationship(&p.destination).await? else { return Ok(out) };
        let flag = if p.keep_snapshots { "?source_info_only=true" } else { "" };
        let path = format!("/api/snapmirror/relationships/{}{flag}", rel.uuid);
        client.mutate(Method::DELETE, &path, &json!({}), ctx.deadline).await?;
        out.insert("uuid".into(), json!(rel.uuid));
        Ok(out)
    }
}
