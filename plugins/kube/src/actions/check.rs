//! `kube.check`: read-only proof that a site's cluster is usable before a failover needs it:
//! reachable, its version, and the site's identity can list and create in each target
//! namespace (create is proven with a server-side dry run, which keeps nothing).

use async_trait::async_trait;
use kube::api::{Api, ListParams, PostParams};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use drover_api::{ActionError, ActionSpec, Outputs, Plan, StepContext, TypedAction, ValueType};

use crate::client::Kube;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckParams {
    /// The site to check.
    pub site: String,
    /// Namespaces that must exist and where the identity must be able to list and create.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

pub struct Check;

/// Every check, in order: (name, passed, what was found). Fails only when the cluster cannot
/// be asked at all.
async fn checks(kube: &Kube, p: &CheckParams) -> Result<(String, Vec<(String, bool, String)>), ActionError> {
    let version = kube.call("get /version", || kube.client.apiserver_version()).await?;
    let version = version.git_version;
    let mut out =
        vec![("cluster reachable".to_string(), true, format!("{} at {}, {version}", kube.origin, kube.server))];
    let namespaces = kube.kind("v1", "Namespace", false).await?;
    let namespaces = kube.api(&namespaces, "");
    for ns in &p.namespaces {
        let found = kube.call_or_absent(&format!("get namespace {ns}"), || namespaces.get(ns)).await;
        match found {
            Ok(Some(_)) => out.push((format!("namespace {ns} exists"), true, String::new())),
            Ok(None) => {
                out.push((format!("namespace {ns} exists"), false, "not found".into()));
                continue;
            }
            // Reading the Namespace object needs a cluster-scoped grant that an identity bound
            // only inside its namespaces lacks; what matters is access inside, checked next.
            Err(e) if e.status() == Some(403) => out.push((
                format!("namespace {ns} exists"),
                true,
                "not readable by this identity (no cluster-scoped grant); access inside it is checked next".into(),
            )),
            Err(e) => {
                out.push((format!("namespace {ns} readable"), false, e.message().to_string()));
                continue;
            }
        }
        let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(kube.client.clone(), ns);
        let one = ListParams::default().limit(1);
        let list = kube.call(&format!("list configmaps in {ns}"), || configmaps.list(&one)).await;
        out.push((
            format!("can list in {ns}"),
            list.is_ok(),
            list.err().map(|e| e.message().to_string()).unwrap_or_default(),
        ));
        let probe: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
            "metadata": { "name": "drover-check", "namespace": ns, "labels": { "app.kubernetes.io/managed-by": "drover" } },
        }))
        .expect("a valid ConfigMap");
        let params = PostParams { dry_run: true, ..PostParams::default() };
        let create =
            kube.call_or_absent(&format!("create in {ns} (dry run)"), || configmaps.create(&params, &probe)).await;
        let detail = match &create {
            Ok(_) => "server-side dry run; nothing kept".to_string(),
            Err(e) => e.message().to_string(),
        };
        // 409 AlreadyExists still proves the right to create.
        let ok = create.is_ok() || create.as_ref().is_err_and(|e| e.status() == Some(409));
        out.push((format!("can create in {ns}"), ok, detail));
    }
    Ok((version, out))
}

#[async_trait]
impl TypedAction for Check {
    type Params = CheckParams;

    const SPEC: ActionSpec = ActionSpec {
        name: "kube.check",
        summary: "Read-only: the cluster answers, its version, and the site can list and create in the namespaces",
        outputs: &[
            ("version", ValueType::String, "the API server's version"),
            ("server", ValueType::String, "the API server's URL"),
        ],
        side_effects: false,
        undo: false,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };

    async fn plan(&self, ctx: &StepContext, p: CheckParams) -> Result<Plan, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let (version, found) = checks(&kube, &p).await?;
        let mut plan = Plan::new(format!("check {} ({version})", kube.origin));
        for (name, ok, detail) in found {
            plan = plan.check(name, ok, detail);
        }
        Ok(plan.output("version", version).output("server", kube.server.clone()))
    }

    async fn run(&self, ctx: &StepContext, p: CheckParams) -> Result<Outputs, ActionError> {
        let kube = Kube::connect(ctx, &p.site).await?;
        let (version, found) = checks(&kube, &p).await?;
        let failed: Vec<String> =
            found.iter().filter(|(_, ok, _)| !ok).map(|(name, _, detail)| format!("{name}: {detail}")).collect();
        if !failed.is_empty() {
            return Err(ActionError::permanent(format!("{}: {}", kube.origin, failed.join("; ")))
                .with_hint("create the namespaces or grant the site's identity list and create there"));
        }
        let mut out = Outputs::new();
        out.insert("version".into(), json!(version));
        out.insert("server".into(), json!(kube.server));
        Ok(out)
    }
}
