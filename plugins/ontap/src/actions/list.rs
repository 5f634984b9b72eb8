//! `ontap.snapmirror.list`: discovery. A fleet's runbook fans out over the relationships it
//! finds (`for_each: ${{ steps.discover.outputs.relationships }}`) instead of naming 1,000
//! volume relationships by hand. ONTAP filters them (by destination SVM, policy, path glob,
//! state); the answer is read whole, every page, before anything depends on it.

use super::*;

/// `ontap.snapmirror.list`
pub struct List;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// The site whose ONTAP cluster holds the relationships' destinations.
    pub site: String,
    /// Destination SVM; ONTAP's `a|b` for several.
    #[serde(default)]
    pub svm: Option<String>,
    /// SnapMirror policy name, e.g. `MirrorAllSnapshots`.
    #[serde(default)]
    pub policy: Option<String>,
    /// Destination path glob, e.g. `svm_dr:vol_*`.
    #[serde(default)]
    pub destination: Option<String>,
    /// Relationship state, e.g. `snapmirrored` (`!broken_off` for all but those).
    #[serde(default)]
    pub state: Option<String>,
    /// `volume` for volume relationships only, `svm` for SVM-DR only.
    #[serde(default)]
    pub kind: Option<Kind>,
    /// Fewer than this is an error: a mistyped filter must not fail over nothing.
    #[serde(default = "one")]
    pub min_count: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Volume,
    Svm,
}

impl ListParams {
    fn filters(&self) -> Vec<(&'static str, &str)> {
        [
            ("destination.svm.name", &self.svm),
            ("policy.name", &self.policy),
            ("destination.path", &self.destination),
            ("state", &self.state),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }

    fn describe(&self) -> String {
        let f = self.filters();
        let mut parts: Vec<String> = f.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Some(k) = self.kind {
            parts.push(format!("kind={}", if k == Kind::Volume { "volume" } else { "svm" }));
        }
        if parts.is_empty() { "every relationship".into() } else { parts.join(", ") }
    }
}

#[async_trait]
impl TypedAction for List {
    type Params = ListParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.snapmirror.list",
        summary: "Find SnapMirror relationships (by SVM, policy, path glob, state) with their lag, for for_each",
        outputs: &[
            (
                "relationships",
                ValueType::List,
                "one mapping per relationship: name (the destination path), destination, source, svm, volume, uuid, state, healthy, policy, lag_time, rpo_seconds",
            ),
            ("count", ValueType::Int, "how many were found"),
            ("max_rpo_seconds", ValueType::Number, "the largest lag among them: data a failover would lose now"),
        ],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: Some("max_rpo_seconds"),
    };

    /// Reading is all it does, so its plan reads too: a preflight or dry run sees the list
    /// the run will fan out over.
    async fn plan(&self, ctx: &StepContext, p: ListParams) -> Result<Plan, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let plan = match reach(&client, Plan::default()).await {
            Ok(plan) => plan,
            Err(plan) => return Ok(plan),
        };
        let found = find(&client, &p).await?;
        let enough = found.len() >= p.min_count;
        let mut plan = plan.check(
            "relationships found",
            enough,
            format!("{} match {} (at least {} expected)", found.len(), p.describe(), p.min_count),
        );
        plan.summary = format!("{} relationships on {}", found.len(), p.site);
        plan.outputs = outputs(&found);
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: ListParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let found = find(&client, &p).await?;
        if found.len() < p.min_count {
            return Err(ActionError::permanent(format!(
                "{} relationships match {} on {}; at least {} expected",
                found.len(),
                p.describe(),
                p.site,
                p.min_count
            ))
            .with_hint("check the filters (`drover plan` shows what they find), or lower `min_count`"));
        }
        ctx.note(&format!("{} relationships match {}", found.len(), p.describe()));
        Ok(outputs(&found))
    }
}

async fn find(client: &Client, p: &ListParams) -> Result<Vec<Relationship>, ActionError> {
    let mut found = client.relationships(&p.filters()).await?;
    found.retain(|r| match p.kind {
        Some(Kind::Svm) => r.destination.path.ends_with(':'),
        Some(Kind::Volume) => !r.destination.path.ends_with(':'),
        None => true,
    });
    found.sort_by(|a, b| a.destination.path.cmp(&b.destination.path));
    Ok(found)
}

fn outputs(found: &[Relationship]) -> Outputs {
    let mut o = Outputs::new();
    let items: Vec<Value> = found
        .iter()
        .map(|r| {
            let (svm, volume) = r.destination.path.split_once(':').unwrap_or((&r.destination.path, ""));
            json!({
                "name": r.destination.path,
                "destination": r.destination.path,
                "source": r.source.path,
                "svm": r.destination.svm.as_ref().map(|s| s.name.as_str()).unwrap_or(svm),
                "volume": volume,
                "uuid": r.uuid,
                "state": r.state.as_str(),
                "healthy": r.healthy,
                "policy": r.policy.as_ref().map(|p| p.name.as_str()).unwrap_or(""),
                "lag_time": r.lag_time.as_deref().unwrap_or(""),
                "rpo_seconds": r.lag().map(|l| l.as_secs_f64()),
            })
        })
        .collect();
    let worst = found.iter().filter_map(Relationship::lag).max();
    o.insert("count".into(), json!(items.len()));
    o.insert("relationships".into(), Value::Array(items));
    if let Some(lag) = worst {
        o.insert("max_rpo_seconds".into(), json!(lag.as_secs_f64()));
    }
    o
}
