//! Each lab site's Kubernetes: a real control plane (etcd, kube-apiserver with TLS, tokens and
//! RBAC, controllers, scheduler, kwok's fake nodes) when `tools/k8s/build.sh` has built one, or
//! drover's simulator. drover reaches either through a kubeconfig as the user `drover`, which a
//! real control plane binds only to the roles `drover rbac` prints. The lab's own checks read
//! through the API, so they mean the same on both.

use std::path::{Path, PathBuf};

use serde_json::Value;

use drover_controlplane::{Binaries, ControlPlane, Options, User};
use drover_kube::rbac::{FAMILIES, Subject, manifests};

use super::config::KubeChoice;

pub enum LabKube {
    Real(Box<ControlPlane>),
    Sim(drover_kube_sim::Cluster),
}

impl LabKube {
    /// Start a site's Kubernetes and write `DIR/kubeconfig-NAME` (context `NAME`) for drover.
    pub async fn start(
        name: &str,
        choice: KubeChoice,
        dir: &Path,
        settings: drover_kube_sim::Settings,
    ) -> Result<(LabKube, PathBuf), String> {
        let real = match choice {
            KubeChoice::Real => {
                Binaries::find().map_err(|e| format!("the lab file asks for `kube: real`, and {e}"))?;
                true
            }
            KubeChoice::Auto => Binaries::available(),
            KubeChoice::Simulator => false,
        };
        if !real {
            let (cluster, kubeconfig) = super::start_kube(name, 0, dir, settings).await?;
            return Ok((LabKube::Sim(cluster), kubeconfig));
        }
        let users = vec![User { name: "drover".into(), groups: vec![] }];
        let plane = ControlPlane::start(Options { name: name.into(), users, ..Options::default() }).await?;
        let families: Vec<_> = FAMILIES.iter().collect();
        plane.apply("drover-lab", &manifests(&families, &Subject::User("drover".into()), &[])).await?;
        let kubeconfig = dir.join(format!("kubeconfig-{name}"));
        std::fs::copy(plane.kubeconfig("drover"), &kubeconfig)
            .map_err(|e| format!("cannot write {}: {e}", kubeconfig.display()))?;
        Ok((LabKube::Real(Box::new(plane)), kubeconfig))
    }

    pub fn url(&self) -> String {
        match self {
            LabKube::Real(p) => p.url.clone(),
            LabKube::Sim(c) => c.url(),
        }
    }

    /// "real server" or "simulator", as the lab reports its parts.
    pub fn kind(&self) -> &'static str {
        match self {
            LabKube::Real(_) => "real server",
            LabKube::Sim(_) => "simulator",
        }
    }

    pub fn note(&self) -> String {
        match self {
            LabKube::Real(_) => format!(
                "Kubernetes v{} (kube-apiserver, etcd, controllers, kwok's nodes)",
                drover_controlplane::pinned("K8S_VERSION")
            ),
            LabKube::Sim(_) => "drover's Kubernetes API simulator".into(),
        }
    }

    /// The site goes down: its API stops answering.
    pub fn stop(&self) {
        match self {
            LabKube::Real(p) => p.stop(),
            LabKube::Sim(c) => c.stop(),
        }
    }

    /// An object as the cluster has it now.
    pub async fn get(&self, group: &str, version: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        match self {
            LabKube::Real(p) => p.request("GET", &path(group, version, plural, ns, Some(name)), None).await.ok(),
            LabKube::Sim(c) => c.with_store(|s| s.get(&s.find(group, version, plural)?, ns, name).ok()),
        }
    }

    /// Every object of a kind, in every namespace.
    pub async fn list(&self, group: &str, version: &str, plural: &str) -> Vec<Value> {
        let items = match self {
            LabKube::Real(p) => p.request("GET", &path(group, version, plural, None, None), None).await.ok(),
            LabKube::Sim(c) => c.with_store(|s| {
                s.list(&s.find(group, version, plural)?, None, None, None, None, None).ok().map(|p| p.to_value())
            }),
        };
        items.and_then(|l| l["items"].as_array().cloned()).unwrap_or_default()
    }
}

fn path(group: &str, version: &str, plural: &str, ns: Option<&str>, name: Option<&str>) -> String {
    let base = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
    let mut p = match ns {
        Some(ns) => format!("{base}/namespaces/{ns}/{plural}"),
        None => format!("{base}/{plural}"),
    };
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}
