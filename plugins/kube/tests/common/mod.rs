//! The harness shared by the Kubernetes action tests: a cluster reached through a kubeconfig,
//! the way an operator's drover reaches one.
//!
//! [`site`] is a **real control plane** of the test's own (etcd, kube-apiserver with TLS, token
//! authentication and RBAC, controller manager, scheduler, kwok's fake nodes), reached as the
//! user `drover`, bound only to the roles `drover rbac` prints. [`sim_site`] is the project's
//! simulator, used only where a real server cannot be made to fail on demand (429, 5xx,
//! dropped connections, latency); each such test says so.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use drover_api::{Action, ActionError, Outputs, StepContext, testing};
use drover_controlplane::{ControlPlane, Options, User};
use drover_kube::rbac::{FAMILIES, Subject, Watched, manifests};
use drover_kube_sim::{Cluster, Settings};

pub enum Backend {
    Real(Arc<ControlPlane>),
    Sim(Cluster),
}

/// What a test's stand-in controller (Velero, the snapshot controller) needs: to list objects
/// and write their status, on either backend, from a task of its own.
#[derive(Clone)]
pub enum Handle {
    Real(Arc<ControlPlane>),
    Sim(drover_kube_sim::StoreHandle),
}

fn rest_path(group: &str, version: &str, plural: &str, ns: Option<&str>, name: Option<&str>) -> String {
    let base = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
    let mut path = match ns {
        Some(ns) => format!("{base}/namespaces/{ns}/{plural}"),
        None => format!("{base}/{plural}"),
    };
    if let Some(n) = name {
        path.push('/');
        path.push_str(n);
    }
    path
}

impl Handle {
    /// Every object of a kind, in every namespace.
    pub async fn list(&self, group: &str, version: &str, plural: &str) -> Vec<Value> {
        match self {
            Handle::Real(p) => p
                .request("GET", &rest_path(group, version, plural, None, None), None)
                .await
                .map(|l| l["items"].as_array().cloned().unwrap_or_default())
                .unwrap_or_default(),
            Handle::Sim(h) => h.with_store(|s| {
                let Some(t) = s.find(group, version, plural) else { return vec![] };
                s.list(&t, None, None, None, None, None).unwrap().items.into_iter().cloned().collect()
            }),
        }
    }

    /// Set an object's status, as its controller does.
    pub async fn set_status(&self, group: &str, version: &str, plural: &str, obj: &Value, status: Value) {
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
        let name = obj["metadata"]["name"].as_str().unwrap();
        match self {
            Handle::Real(p) => {
                let path = format!("{}/status", rest_path(group, version, plural, ns, Some(name)));
                let _ = p.request("PATCH", &path, Some(json!({ "status": status }))).await;
            }
            Handle::Sim(h) => h.with_store(|s| {
                let t = s.find(group, version, plural).unwrap();
                let mut o = obj.clone();
                o["status"] = status;
                let how = drover_kube_sim::store::Write { status_only: true, dry: false, manager: None };
                let _ = s.replace(&t, ns, name, o, how);
            }),
        }
    }

    /// What a test compares to tell "nothing changed": every namespace, volume, CRD and the
    /// common namespaced kinds, each with its resourceVersion.
    pub async fn census(&self) -> Vec<String> {
        let kinds = [
            ("", "v1", "namespaces"),
            ("", "v1", "persistentvolumes"),
            ("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
            ("", "v1", "configmaps"),
            ("", "v1", "services"),
            ("", "v1", "persistentvolumeclaims"),
            ("apps", "v1", "deployments"),
            ("apps", "v1", "statefulsets"),
            ("networking.k8s.io", "v1", "ingresses"),
        ];
        let mut out = vec![];
        for (g, v, p) in kinds {
            for o in self.list(g, v, p).await {
                out.push(format!(
                    "{p} {}/{} {}",
                    o["metadata"]["namespace"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or(""),
                    o["metadata"]["resourceVersion"].as_str().unwrap_or("")
                ));
            }
        }
        out.sort();
        out
    }

    /// One object, or None.
    pub async fn get(&self, group: &str, version: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        match self {
            Handle::Real(p) => p.request("GET", &rest_path(group, version, plural, ns, Some(name)), None).await.ok(),
            Handle::Sim(h) => h.with_store(|s| s.get(&s.find(group, version, plural)?, ns, name).ok()),
        }
    }
}

pub struct Site {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    /// The kubeconfig drover uses (the least-privileged user on a real control plane).
    pub kubeconfig: std::path::PathBuf,
}

/// A real control plane of its own, with drover's RBAC for the user `drover`.
pub async fn site() -> Site {
    real_site(&all_families()).await
}

/// Every family `drover rbac` knows.
pub fn all_families() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.name).collect()
}

/// A real control plane where `drover` is bound only to these families of `drover rbac`.
pub async fn real_site(families: &[&str]) -> Site {
    named_site("east", families).await
}

/// A real control plane where `drover` is bound to these families, the workloads family also
/// watching these custom kinds (`drover rbac --watch PLURAL.GROUP`).
pub async fn real_site_watching(families: &[&str], watched: &[&str]) -> Site {
    let watched: Vec<Watched> = watched.iter().map(|w| Watched::parse(w).unwrap()).collect();
    site_bound("east", families, &watched).await
}

/// A real control plane whose kubeconfig context is `name`.
pub async fn named_site(name: &str, families: &[&str]) -> Site {
    site_bound(name, families, &[]).await
}

async fn site_bound(name: &str, families: &[&str], watched: &[Watched]) -> Site {
    let users = vec![User { name: "drover".into(), groups: vec![] }];
    let plane = ControlPlane::start(Options { name: name.into(), users, ..Options::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let chosen: Vec<_> = families.iter().map(|f| drover_kube::rbac::family(f).unwrap()).collect();
    plane.apply("test-setup", &manifests(&chosen, &Subject::User("drover".into()), watched)).await.unwrap();
    let kubeconfig = plane.kubeconfig("drover");
    Site { backend: Backend::Real(Arc::new(plane)), dir: tempfile::tempdir().unwrap(), kubeconfig }
}

/// The simulator, for faults only it can inject.
pub async fn sim_site() -> Site {
    sim_site_with(Settings {
        ready_delay: Duration::from_millis(200),
        namespace_delete_delay: Duration::from_millis(200),
    })
    .await
}

pub async fn sim_site_with(settings: Settings) -> Site {
    let cluster = Cluster::start(0, "s3cret-token", settings).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, serde_yaml::to_string(&cluster.kubeconfig("east")).unwrap()).unwrap();
    Site { backend: Backend::Sim(cluster), dir, kubeconfig }
}

impl Site {
    pub fn ctx(&self, budget: Duration) -> StepContext {
        let sites = BTreeMap::from([(
            "east".to_string(),
            json!({ "kube": { "kubeconfig": self.kubeconfig, "context": "east", "request_timeout": "5s" } }),
        )]);
        testing::context(sites, budget).with_base_dir(self.dir.path())
    }

    pub async fn run(&self, action: &str, with: Value) -> Result<Outputs, ActionError> {
        let action = find(action);
        action.check_params(&with).unwrap_or_else(|e| panic!("bad params for {}: {e:?}", action.info().name));
        action.run(&self.ctx(Duration::from_secs(60)), &with).await
    }

    /// Like [`Site::run`], with the notes the step made.
    pub async fn run_recording(&self, action: &str, with: Value) -> (Result<Outputs, ActionError>, Vec<String>) {
        let action = find(action);
        action.check_params(&with).unwrap_or_else(|e| panic!("bad params for {}: {e:?}", action.info().name));
        let sites = BTreeMap::from([(
            "east".to_string(),
            json!({ "kube": { "kubeconfig": self.kubeconfig, "context": "east", "request_timeout": "5s" } }),
        )]);
        let (ctx, recorded) = testing::context_recording(sites, Duration::from_secs(60));
        let out = action.run(&ctx.with_base_dir(self.dir.path()), &with).await;
        let notes = recorded.notes.lock().unwrap().clone();
        (out, notes)
    }

    pub async fn plan(&self, action: &str, with: Value) -> drover_api::Plan {
        find(action).plan(&self.ctx(Duration::from_secs(60)), &with).await.unwrap()
    }

    /// A handle for a stand-in controller running beside the test.
    pub fn handle(&self) -> Handle {
        match &self.backend {
            Backend::Real(p) => Handle::Real(p.clone()),
            Backend::Sim(c) => Handle::Sim(c.handle()),
        }
    }

    pub fn sim(&self) -> &Cluster {
        match &self.backend {
            Backend::Sim(c) => c,
            Backend::Real(_) => panic!("this test needs the simulator"),
        }
    }

    pub fn plane(&self) -> &ControlPlane {
        match &self.backend {
            Backend::Real(p) => p,
            Backend::Sim(_) => panic!("this test needs the real control plane"),
        }
    }

    /// An object as the cluster has it now (read as an administrator).
    pub fn get(&self, group: &str, version: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        match &self.backend {
            Backend::Sim(c) => c.with_store(|s| {
                let t = s.find(group, version, plural).unwrap();
                s.get(&t, ns, name).ok()
            }),
            Backend::Real(p) => {
                p.request_blocking("GET", &rest_path(group, version, plural, ns, Some(name)), None).ok()
            }
        }
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Value {
        self.get("apps", "v1", "deployments", Some(ns), name).unwrap()
    }

    /// Write objects as someone else would (kubectl, a controller), by server-side apply.
    pub async fn apply_as(&self, manager: &str, objects: &[Value]) {
        match &self.backend {
            Backend::Real(p) => p.apply(manager, objects).await.unwrap(),
            Backend::Sim(c) => c.with_store(|s| {
                for o in objects {
                    let (group, version) = match o["apiVersion"].as_str().unwrap().split_once('/') {
                        Some((g, v)) => (g.to_string(), v.to_string()),
                        None => (String::new(), o["apiVersion"].as_str().unwrap().to_string()),
                    };
                    let t = s
                        .types
                        .iter()
                        .find(|t| t.group == group && t.version == version && t.kind == o["kind"])
                        .unwrap()
                        .clone();
                    let by = drover_kube_sim::store::Applier { manager: Some(manager), force: true };
                    let ns = o.pointer("/metadata/namespace").and_then(Value::as_str);
                    s.apply(&t, ns, o["metadata"]["name"].as_str().unwrap(), o, by, false).unwrap();
                }
            }),
        }
    }

    /// Wait until `check` holds (controllers work in the background on a real cluster).
    pub async fn eventually(&self, what: &str, within: Duration, check: impl Fn(&Site) -> bool) {
        let deadline = Instant::now() + within;
        while !check(self) {
            assert!(Instant::now() < deadline, "{what}: not after {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn find(name: &str) -> Arc<dyn Action> {
    drover_kube::actions().into_iter().find(|a| a.info().name == name).unwrap()
}
