//! FlexClones for rehearsals, and deleting volumes.

use super::*;
use crate::model::Volume;

/// `ontap.volume.clone`
pub struct VolumeClone;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneParams {
    pub site: String,
    /// SVM of the parent volume (the clone is made in the same SVM).
    pub svm: String,
    /// The parent volume, e.g. the DR copy `vol1_dst`.
    pub parent: String,
    /// Name of the clone.
    pub name: String,
    /// Parent snapshot; default: the newest snapshot of the parent (the replicated one).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Mount the clone here (`/vol1_rehearsal`).
    #[serde(default)]
    pub junction_path: Option<String>,
}

fn clone_outputs(v: &Volume) -> Outputs {
    let mut o = Outputs::new();
    o.insert("name".into(), json!(v.name));
    o.insert("uuid".into(), json!(v.uuid));
    o.insert("junction_path".into(), json!(v.junction_path()));
    o.insert("snapshot".into(), json!(v.parent_snapshot()));
    o
}

async fn newest_snapshot(client: &Client, parent: &Volume) -> Result<Option<String>, OntapError> {
    let q = format!(
        "/api/storage/volumes/{}/snapshots?fields=name,create_time&order_by=create_time%20desc&max_records=1",
        parent.uuid
    );
    let page = client.get(&q).await?;
    Ok(page.pointer("/records/0/name").and_then(Value::as_str).map(str::to_string))
}

#[async_trait]
impl TypedAction for VolumeClone {
    type Params = CloneParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.volume.clone",
        summary: "Create a FlexClone of a volume from a snapshot (the replicated one by default), optionally mounted",
        outputs: &[
            ("name", ValueType::String, "clone name"),
            ("uuid", ValueType::String, "clone uuid"),
            ("junction_path", ValueType::String, "where it is mounted"),
            ("snapshot", ValueType::String, "the parent snapshot"),
        ],
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    async fn plan(&self, ctx: &StepContext, p: CloneParams) -> Result<Plan, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let mut plan = match reach(&client, Plan::new(format!("clone {}:{} as {}", p.svm, p.parent, p.name))).await {
            Ok(plan) => plan,
            Err(plan) => return Ok(plan),
        };
        let parent = client.volume(&p.svm, &p.parent).await?;
        plan = plan.check("parent volume exists", parent.is_some(), format!("{}:{}", p.svm, p.parent));
        if let Some(parent) = parent {
            let snap = match &p.snapshot {
                Some(snap) => Some(snap.clone()),
                None => newest_snapshot(&client, &parent).await?,
            };
            plan = plan.check(
                "parent snapshot",
                snap.is_some(),
                snap.clone().unwrap_or_else(|| "the parent has no snapshot".into()),
            );
            if client.volume(&p.svm, &p.name).await?.is_some() {
                plan.summary = format!("clone {} exists already", p.name);
            } else {
                plan = plan.change(format!(
                    "create FlexClone {} from {}@{}",
                    p.name,
                    p.parent,
                    snap.clone().unwrap_or_default()
                ));
            }
            plan = plan.output("name", p.name.clone()).output("snapshot", snap.unwrap_or_default());
        }
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: CloneParams) -> Result<Outputs, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        if let Some(existing) = client.volume(&p.svm, &p.name).await? {
            if existing.parent_volume() == p.parent {
                return Ok(clone_outputs(&existing));
            }
            return Err(ActionError::permanent(format!(
                "a volume `{}` exists in `{}` and is not a clone of `{}`",
                p.name, p.svm, p.parent
            ))
            .with_hint("choose another clone name"));
        }
        let parent = client.volume(&p.svm, &p.parent).await?.ok_or_else(|| {
            ActionError::permanent(format!("no volume `{}` in SVM `{}` on `{}`", p.parent, p.svm, p.site))
                .with_hint("check `svm` and `parent`")
        })?;
        let snapshot = match &p.snapshot {
            Some(snap) => snap.clone(),
            None => newest_snapshot(&client, &parent).await?.ok_or_else(|| {
                ActionError::permanent(format!("volume `{}` has no snapshot to clone from", p.parent))
                    .with_hint("wait for a SnapMirror transfer, or name a snapshot")
            })?,
        };
        let mut body = json!({
            "name": p.name,
            "svm": { "name": p.svm },
            "clone": { "is_flexclone": true, "parent_volume": { "name": p.parent }, "parent_snapshot": { "name": snapshot } },
            "type": "rw",
        });
        if let Some(j) = &p.junction_path {
            body["nas"] = json!({ "path": j });
        }
        client.mutate(Method::POST, "/api/storage/volumes?return_records=true", &body, ctx.deadline).await?;
        let created = client
            .volume(&p.svm, &p.name)
            .await?
            .ok_or_else(|| ActionError::retryable(format!("clone `{}` was created but is not visible yet", p.name)))?;
        Ok(clone_outputs(&created))
    }

    async fn undo(&self, ctx: &StepContext, p: CloneParams, _: &Outputs) -> Result<(), ActionError> {
        delete_volume(ctx, &p.site, &p.svm, &p.name).await
    }
}

async fn delete_volume(ctx: &StepContext, site: &str, svm: &str, name: &str) -> Result<(), ActionError> {
    let client = Client::connect(ctx, site)?;
    let Some(v) = client.volume(svm, name).await? else { return Ok(()) };
    let path = format!("/api/storage/volumes/{}", v.uuid);
    if !v.junction_path().is_empty() {
        client.mutate(Method::PATCH, &path, &json!({"nas": {"path": ""}}), ctx.deadline).await?;
    }
    // Gone in between: the goal is reached.
    Ok(client.delete_if_present(&path, ctx.deadline).await?)
}

/// `ontap.volume.delete`
pub struct VolumeDelete;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeParams {
    pub site: String,
    pub svm: String,
    /// The volume (typically a rehearsal clone) to unmount and delete.
    pub name: String,
}

#[async_trait]
impl TypedAction for VolumeDelete {
    type Params = VolumeParams;
    const SPEC: ActionSpec = ActionSpec {
        name: "ontap.volume.delete",
        summary: "Unmount and delete a volume (a rehearsal clone); already gone is success",
        outputs: &[],
        side_effects: true,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    async fn plan(&self, ctx: &StepContext, p: VolumeParams) -> Result<Plan, ActionError> {
        let client = Client::connect(ctx, &p.site)?;
        let reached = match reach(&client, Plan::default()).await {
            Ok(plan) => plan,
            Err(plan) => return Ok(plan),
        };
        let mut plan = match client.volume(&p.svm, &p.name).await? {
            Some(_) => Plan::new(format!("delete {}:{}", p.svm, p.name))
                .change(format!("unmount and delete {}:{}", p.svm, p.name)),
            None => Plan::new(format!("{}:{} is already gone", p.svm, p.name)),
        };
        plan.checks.splice(0..0, reached.checks);
        Ok(plan)
    }

    async fn run(&self, ctx: &StepContext, p: VolumeParams) -> Result<Outputs, ActionError> {
        delete_volume(ctx, &p.site, &p.svm, &p.name).await?;
        Ok(Outputs::new())
    }
}
