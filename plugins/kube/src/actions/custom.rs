//! Custom resources that a controller acts on (VolumeSnapshots, Velero's Backups and
//! Restores): create one unless it exists — so a resumed step finds its own object instead of
//! failing — then watch its status until the controller says it is done.

use kube::api::{DynamicObject, PostParams};
use serde_json::Value;

use drover_api::{ActionError, Poll, Progress, StepContext};

use crate::client::{Kind, Kube, describe};

/// Create `object` (namespaced in `ns`), or return the existing one of that name with false.
pub async fn create_or_get(kube: &Kube, kind: &Kind, ns: &str, object: Value) -> Result<(Value, bool), ActionError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let what = describe(&kind.resource.kind, Some(ns), &name);
    let api = kube.api(kind, ns);
    if let Some(live) = kube.call_or_absent(&format!("get {what}"), || api.get(&name)).await? {
        return Ok((serde_json::to_value(live).unwrap_or_default(), false));
    }
    let obj: DynamicObject = serde_json::from_value(object)
        .map_err(|e| ActionError::permanent(format!("{what}: cannot build the object: {e}")))?;
    let params = PostParams::default();
    let created = kube.call(&format!("create {what}"), || api.create(&params, &obj)).await?;
    Ok((serde_json::to_value(created).unwrap_or_default(), true))
}

/// Read the object until `done` gives an answer; gone or past the step's deadline is an error.
pub async fn wait_until<T>(
    kube: &Kube,
    ctx: &StepContext,
    kind: &Kind,
    ns: &str,
    name: &str,
    mut done: impl FnMut(&Value) -> Option<Result<T, ActionError>>,
    status: impl Fn(&Value) -> String,
) -> Result<T, ActionError> {
    let what = describe(&kind.resource.kind, Some(ns), name);
    let api = kube.api(kind, ns);
    let poll = Poll::new(std::time::Duration::from_secs(5));
    loop {
        let Some(live) = kube.call_or_absent(&format!("get {what}"), || api.get(name)).await? else {
            return Err(ActionError::permanent(format!(
                "{}: {what} disappeared while drover waited for it",
                kube.origin
            ))
            .with_hint("someone or something deleted it; check, then run the step again"));
        };
        let live = serde_json::to_value(live).unwrap_or_default();
        if let Some(answer) = done(&live) {
            return answer;
        }
        let now = status(&live);
        ctx.progress(Progress { message: format!("{what}: {now}"), done: None, total: None });
        let delay = poll.next_delay();
        if ctx.remaining().is_some_and(|r| r <= delay) {
            return Err(ActionError::permanent(format!("{}: {what} is not done in time ({now})", kube.origin))
                .with_hint(
                    "its controller may still finish it; check the object, then `drover resume` or raise the timeout",
                ));
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.stop_requested() => {
                return Err(ActionError::retryable("stopped while waiting").with_hint("`drover resume` waits again"));
            }
        }
    }
}

/// A kind the cluster must serve for an action, with a hint naming what installs it.
pub async fn required_kind(
    kube: &Kube,
    api_version: &str,
    kind: &str,
    installed_by: &str,
) -> Result<Kind, ActionError> {
    match kube.serves(api_version, kind).await? {
        Some(k) => Ok(k),
        None => {
            Err(ActionError::permanent(format!("{}: the cluster does not serve {kind} ({api_version})", kube.origin))
                .with_hint(format!("install {installed_by}")))
        }
    }
}
