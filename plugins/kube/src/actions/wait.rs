//! `kube.wait`: until the selected workloads are ready, with progress, failing early on what
//! waiting cannot fix (a failed Job, a lost claim) and at the deadline with what is still
//! waiting and why.

use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use drover_api::{
    ActionError, ActionSpec, HumanDuration, Outputs, ParamError, PathSegment, Plan, Progress, StepContext, TypedAction,
    ValueType,
};

use crate::client::Kube;
use crate::lists::Sharing;
use crate::select::{
    Found, Readiness, Selection, Until, lists, readiness, require_namespaces, select, select_in, sort,
};

/// Time kept for one more look at the cluster after a pause.
const LOOK: Duration = Duration::from_millis(500);

/// The longest pause between looks while the cluster's watch tells of every change (a safety
/// net: readiness is noticed when the change is told).
const WATCHED_PAUSE: Duration = Duration::from_secs(2);

const DEFAULT_KINDS: [&str; 5] = ["Deployment", "StatefulSet", "DaemonSet", "Job", "PersistentVolumeClaim"];

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    /// The site whose cluster holds the workloads.
    pub site: String,
    /// Namespaces to watch (at least one).
    pub namespaces: Vec<String>,
    /// Label selector, as for `kubectl -l`.
    #[serde(default)]
    pub labels: Option<String>,
    /// Only objects with these names.
    #[serde(default)]
    pub names: Vec<String>,
    /// Kinds to wait for; default Deployment (available), StatefulSet (ready), DaemonSet
    /// (scheduled and ready), Job (complete), PersistentVolumeClaim (bound).
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    /// A custom test instead of each kind's own: `{ condition: Ready }` or
    /// `{ field: .status.phase, equals: Running }`. Needs `kinds`.
    #[serde(default, rename = "for")]
    pub until: Option<UntilParams>,
    /// Time between looks. Default: often at first, then about 1.6 % of the time waited (at most 2s).
    #[serde(default)]
    pub interval: Option<HumanDuration>,
    /// Succeed when nothing matches (default: keep waiting for the objects to appear).
    #[serde(default)]
    pub allow_empty: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UntilParams {
    /// A condition type that must be `True`.
    #[serde(default)]
    pub condition: Option<String>,
    /// A dotted field path, e.g. `.status.phase`.
    #[serde(default)]
    pub field: Option<String>,
    /// The value the field must have.
    #[serde(default)]
    pub equals: Option<Value>,
}

impl WaitParams {
    fn selection(&self) -> Selection {
        Selection {
            namespaces: self.namespaces.clone(),
            labels: self.labels.clone(),
            names: self.names.clone(),
            kinds: self.kinds.clone().unwrap_or_else(|| DEFAULT_KINDS.map(String::from).to_vec()),
        }
    }

    fn until(&self) -> Option<Until> {
        let u = self.until.as_ref()?;
        match (&u.condition, &u.field, &u.equals) {
            (Some(c), _, _) => Some(Until::Condition(c.clone())),
            (None, Some(f), Some(v)) => Some(Until::Field { path: f.clone(), equals: v.clone() }),
            _ => None,
        }
    }
}

/// Where the selection stands: (ready, waiting with why, failed with why).
/// Why a kind (`PLURAL.GROUP`) is polled rather than watched, and the grant that changes it.
fn polled_note(kind: &str) -> String {
    let (plural, group) = kind.split_once('.').unwrap_or((kind, ""));
    let family = crate::rbac::WATCHES;
    let grant = if crate::rbac::family_watches(plural, group) {
        format!("bind it to `drover rbac --family {family}`")
    } else {
        format!("`drover rbac --family {family} --watch {kind}` grants it")
    };
    format!(
        "{kind} is polled, not watched: this identity may not watch it across the cluster (more LISTs for the API server, changes noticed later); {grant}"
    )
}

fn survey(found: &[Found], until: Option<&Until>) -> (usize, Vec<String>, Vec<String>) {
    let (mut ready, mut waiting, mut failed) = (0, vec![], vec![]);
    for f in found {
        match readiness(f.kind_name(), &f.object, until) {
            Readiness::Ready => ready += 1,
            Readiness::Waiting(why) => waiting.push(format!("{} ({why})", f.describe())),
            Readiness::Failed(why) => failed.push(format!("{}: {why}", f.describe())),
        }
    }
    (ready, waiting, failed)
}

pub struct Wait;

#[async_trait]
impl TypedAction for Wait {
    type Params = WaitParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "kube.wait",
        summary: "Wait until selected workloads are ready (or a custom condition holds)",
        outputs: &[
            ("ready", ValueType::Int, "number of objects found ready"),
            ("objects", ValueType::List, "the objects waited for"),
        ],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    fn check(&self, p: &WaitParams) -> Result<(), Vec<ParamError>> {
        require_namespaces(&p.namespaces)?;
        let at = |key: &str| vec![PathSegment::Key("for".into()), PathSegment::Key(key.into())];
        if let Some(u) = &p.until {
            let bad = |path, message: &str, hint: &str| {
                Err(vec![ParamError { path, message: message.into(), hint: Some(hint.into()) }])
            };
            match (&u.condition, &u.field, &u.equals) {
                (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                (Some(_), _, _) => return bad(at("condition"), "give `condition` or `field`, not both", "pick one"),
                (None, Some(_), None) => return bad(at("equals"), "`field` needs `equals`", "add `equals: VALUE`"),
                _ => return bad(at("condition"), "empty `for`", "give `condition: NAME` or `field:` with `equals:`"),
            }
            if p.kinds.is_none() {
                return bad(
                    vec![PathSegment::Key("kinds".into())],
                    "a custom `for` needs `kinds`",
                    "name the kinds the test applies to",
                );
            }
        }
        Ok(())
    }

    async fn plan(&self, ctx: &StepContext, p: WaitParams) -> Result<Plan, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let found = select(&kube, &p.selection()).await?;
        let (ready, waiting, failed) = survey(&found, p.until().as_ref());
        let mut plan = Plan::new(format!("wait for {} objects; {ready} ready now", found.len())).check(
            "cluster reachable",
            true,
            format!("{} at {}", kube.origin, kube.server),
        );
        if !failed.is_empty() {
            plan = plan.check("nothing failed", false, failed.join("; "));
        }
        plan.changes = waiting.into_iter().map(|w| format!("wait for {w}")).collect();
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: WaitParams) -> Result<Outputs, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        // An explicit interval is kept; otherwise look often at first and then at a small share
        // of the time waited, so readiness is noticed promptly without hammering the API.
        let poll = match p.interval {
            Some(d) => drover_api::Poll::new(d.0).at_least(d.0),
            None => drover_api::Poll::new(Duration::from_secs(2)).at_least(Duration::from_millis(50)),
        };
        let until = p.until();
        let selection = p.selection();
        // As `kubectl wait` does, each object is waited on until it is ready once: a kind in a
        // namespace whose objects were all ready is not listed again (a fleet's 500 waits
        // would otherwise keep listing five kinds in each namespace until the last is ready).
        let mut looking = lists(&kube, &selection).await?;
        // Told when a kind looked at changes in one of the namespaces (the run's watch of it
        // across the cluster): registered before the first look, so no later change goes
        // untold, and each look is a LIST of its own sent after the change (`crate::changes`).
        let mut changes = kube.changes(&looking, selection.labels.as_deref());
        let mut settled: Vec<Found> = vec![];
        let mut said_polled = std::collections::BTreeSet::new();
        loop {
            let per_list = select_in(&kube, &selection, &looking, Sharing::Own).await?;
            let mut found: Vec<Found> = settled.iter().cloned().chain(per_list.iter().flatten().cloned()).collect();
            sort(&mut found);
            let (ready, waiting, failed) = survey(&found, until.as_ref());
            if !failed.is_empty() {
                return Err(ActionError::permanent(format!("{}: {}", kube.origin, failed.join("; ")))
                    .with_hint("waiting will not fix this; look at the objects' events and logs"));
            }
            if waiting.is_empty() && (!found.is_empty() || p.allow_empty) {
                let mut out = Outputs::new();
                out.insert("ready".into(), json!(ready));
                out.insert("objects".into(), json!(found.iter().map(Found::describe).collect::<Vec<_>>()));
                return Ok(out);
            }
            if !found.is_empty() {
                let all_ready = |objects: &[Found]| {
                    objects.iter().all(|f| readiness(f.kind_name(), &f.object, until.as_ref()) == Readiness::Ready)
                };
                let mut still = vec![];
                for (list, objects) in looking.into_iter().zip(per_list) {
                    if all_ready(&objects) {
                        settled.extend(objects);
                    } else {
                        still.push(list);
                    }
                }
                looking = still;
                changes.keep(&looking);
            }
            let status = if found.is_empty() {
                "no objects match yet".to_string()
            } else {
                format!("ready; waiting for {}", waiting.first().cloned().unwrap_or_default())
            };
            ctx.progress(Progress {
                message: status.clone(),
                done: Some(ready as u64),
                total: Some(found.len() as u64),
            });
            // Room for one more look after the pause, or give up now with what is known.
            let interval = poll.next_delay();
            if ctx.remaining().is_some_and(|r| r <= interval + LOOK) {
                let detail = if waiting.is_empty() { status } else { waiting.join("; ") };
                return Err(ActionError::permanent(format!("{}: not ready in time: {detail}", kube.origin))
                    .with_hint("check the workloads' events, then raise the step's timeout or `drover resume`"));
            }
            for kind in changes.refused() {
                if said_polled.insert(kind.clone()) {
                    ctx.note(&polled_note(&kind));
                }
            }
            // Watched, the next look comes with the next change (or after a longer pause);
            // otherwise at the poll's pace.
            let pause = if changes.live() && p.interval.is_none() { WATCHED_PAUSE.max(interval) } else { interval };
            let pause = ctx.remaining().map_or(pause, |r| pause.min(r.saturating_sub(LOOK)));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = changes.changed() => {}
                _ = ctx.stop_requested() => {
                    return Err(ActionError::retryable("stopped while waiting").with_hint("`drover resume` waits again"));
                }
            }
        }
    }
}
