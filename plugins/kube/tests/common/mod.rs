//! The harness shared by the action tests: a simulated cluster reached through a kubeconfig.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use drover_api::{Action, ActionError, Outputs, StepContext, testing};
use drover_kube::sim::{Cluster, Settings};

pub struct Site {
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
    pub kubeconfig: std::path::PathBuf,
}

pub async fn site() -> Site {
    site_with(Settings { ready_delay: Duration::from_millis(200), namespace_delete_delay: Duration::from_millis(200) })
        .await
}

pub async fn site_with(settings: Settings) -> Site {
    let cluster = Cluster::start(0, "s3cret-token", settings).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, serde_yaml::to_string(&cluster.kubeconfig("east")).unwrap()).unwrap();
    Site { cluster, dir, kubeconfig }
}

impl Site {
    pub fn ctx(&self, budget: Duration) -> StepContext {
        let sites = BTreeMap::from([(
            "east".to_string(),
            json!({ "kube": { "kubeconfig": self.kubeconfig, "context": "east", "request_timeout": "2s" } }),
        )]);
        testing::context(sites, budget).with_base_dir(self.dir.path())
    }

    pub async fn run(&self, action: &str, with: Value) -> Result<Outputs, ActionError> {
        let action = find(action);
        action.check_params(&with).unwrap_or_else(|e| panic!("bad params for {}: {e:?}", action.info().name));
        action.run(&self.ctx(Duration::from_secs(20)), &with).await
    }

    pub async fn plan(&self, action: &str, with: Value) -> drover_api::Plan {
        find(action).plan(&self.ctx(Duration::from_secs(20)), &with).await.unwrap()
    }

    pub fn get(&self, group: &str, version: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        self.cluster.with_store(|s| {
            let t = s.find(group, version, plural).unwrap();
            s.get(&t, ns, name).ok()
        })
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Value {
        self.get("apps", "v1", "deployments", Some(ns), name).unwrap()
    }
}

pub fn find(name: &str) -> Arc<dyn Action> {
    drover_kube::actions().into_iter().find(|a| a.info().name == name).unwrap()
}
