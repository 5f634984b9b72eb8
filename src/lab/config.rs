//! What the lab starts (`drover lab up --config FILE`): which topology, which apps and how many
//! copies, which server stands in for DNS, the load balancer and S3, and how slow the
//! simulators are. The default is `examples/lab/lab.yaml`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use drover_api::HumanDuration;

/// Which server plays a part. `auto` takes the real server when it is installed and the
/// built-in stand-in otherwise; the lab always says which one runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    #[default]
    Auto,
    /// The real server (BIND, HAProxy, moto); the lab fails to start without it.
    Real,
    /// drover's built-in stand-in: an RFC 2136 server, a TCP balancer with HAProxy's runtime
    /// API, s3s-fs for S3.
    Builtin,
    /// Not started; the runbook steps that need it are switched off by param.
    None,
}

/// What plays each site's Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KubeChoice {
    /// Real control planes when `tools/k8s/build.sh` has built them, else the simulator.
    #[default]
    Auto,
    /// Real control planes (etcd, kube-apiserver, controllers, kwok's nodes); the lab fails
    /// to start without them.
    Real,
    /// drover's Kubernetes API simulator (no Go needed).
    Simulator,
}

/// The simulator's pace (unused by a real control plane).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeSettings {
    /// Workloads report ready, and claims bind, this long after their spec changed.
    pub ready_delay: HumanDuration,
    /// A deleted namespace stays `Terminating` this long.
    pub namespace_delete_delay: HumanDuration,
}

impl Default for KubeSettings {
    fn default() -> Self {
        let d = drover_kube_sim::Settings::default();
        KubeSettings {
            ready_delay: HumanDuration(d.ready_delay),
            namespace_delete_delay: HumanDuration(d.namespace_delete_delay),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
struct File {
    apiVersion: String,
    kind: String,
    #[serde(default)]
    ontap: Option<PathBuf>,
    #[serde(default)]
    apps: Option<PathBuf>,
    #[serde(default)]
    copies: Option<u32>,
    #[serde(default)]
    dns: Choice,
    #[serde(default)]
    lb: Choice,
    #[serde(default)]
    s3: Choice,
    #[serde(default)]
    kube: KubeChoice,
    #[serde(default)]
    kube_simulator: KubeSettings,
    #[serde(default)]
    ontap_settings: Option<serde_json::Value>,
}

/// A lab description with its paths resolved.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The ONTAP topology (clusters, SVMs, volumes, relationships, simulator settings).
    pub ontap: PathBuf,
    /// Overrides of the topology's `settings:` (job_delay, transfer_time, ...).
    pub ontap_settings: Option<serde_json::Value>,
    /// Manifests seeded on the primary; their namespace `shop` is the first app.
    pub apps: PathBuf,
    /// How many copies of the apps run on the primary (namespaces shop, shop-2, ...).
    pub copies: u32,
    pub dns: Choice,
    pub lb: Choice,
    pub s3: Choice,
    pub kube: KubeChoice,
    /// How slow the Kubernetes simulator is, when it plays.
    pub kube_simulator: KubeSettings,
}

/// The most copies the lab seeds; each is a namespace with a dozen objects.
pub const MAX_COPIES: u32 = 500;

/// The lab files drover ships (`examples/lab/`), inside the binary so the lab starts from any
/// directory. Written out under the lab's directory before use: the apps are manifests on disk.
const BUILTIN: &[(&str, &str)] = &[
    ("lab.yaml", include_str!("../../examples/lab/lab.yaml")),
    ("ontap.yaml", include_str!("../../examples/lab/ontap.yaml")),
    ("apps/00-shop.yaml", include_str!("../../examples/lab/apps/00-shop.yaml")),
];

impl LabConfig {
    /// The shipped default, `examples/lab/lab.yaml` under the checkout `repo`.
    pub fn shipped(repo: &Path) -> Result<LabConfig, String> {
        LabConfig::load(&repo.join("examples/lab/lab.yaml"))
    }

    /// The built-in lab: its files written under `dir/config`, then loaded from there.
    pub fn builtin(dir: &Path) -> Result<LabConfig, String> {
        let root = dir.join("config");
        for (name, text) in BUILTIN {
            let path = root.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        LabConfig::load(&root.join("lab.yaml"))
    }

    /// Read a lab file; paths in it start at its directory. Errors name the file and line.
    pub fn load(path: &Path) -> Result<LabConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.inner().location().map(|l| format!(" line {}", l.line())).unwrap_or_default();
            format!("{}:{at}: `{}`: {}", path.display(), e.path(), e.inner())
        })?;
        if file.apiVersion != "drover/v1" || file.kind != "Lab" {
            return Err(format!(
                "{}: expected `apiVersion: drover/v1` and `kind: Lab`, found `{}` / `{}`",
                path.display(),
                file.apiVersion,
                file.kind
            ));
        }
        let copies = file.copies.unwrap_or(1);
        if copies == 0 || copies > MAX_COPIES {
            return Err(format!("{}: `copies: {copies}` must be between 1 and {MAX_COPIES}", path.display()));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(LabConfig {
            ontap: base.join(file.ontap.unwrap_or_else(|| "ontap.yaml".into())),
            ontap_settings: file.ontap_settings,
            apps: base.join(file.apps.unwrap_or_else(|| "apps".into())),
            copies,
            dns: file.dns,
            lb: file.lb,
            s3: file.s3,
            kube: file.kube,
            kube_simulator: file.kube_simulator,
        })
    }

    /// The application namespaces the lab seeds, in order.
    pub fn namespaces(&self) -> Vec<String> {
        (1..=self.copies).map(copy_namespace).collect()
    }
}

/// The namespace of the n-th copy of the apps (1-based): `shop`, `shop-2`, ...
pub fn copy_namespace(n: u32) -> String {
    if n == 1 { "shop".into() } else { format!("shop-{n}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<LabConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.yaml");
        std::fs::write(&path, text).unwrap();
        LabConfig::load(&path).map_err(|e| e.replace(&path.display().to_string(), "lab.yaml"))
    }

    #[test]
    fn the_shipped_lab_file_loads() {
        let c = LabConfig::shipped(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(c.ontap.is_file() && c.apps.is_dir());
        assert_eq!(c.namespaces(), ["shop"]);
    }

    #[test]
    fn the_built_in_lab_is_the_shipped_one_and_needs_no_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let c = LabConfig::builtin(dir.path()).unwrap();
        assert!(c.ontap.starts_with(dir.path()) && c.ontap.is_file() && c.apps.is_dir());
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab/apps/00-shop.yaml");
        assert_eq!(std::fs::read(c.apps.join("00-shop.yaml")).unwrap(), std::fs::read(shipped).unwrap());
    }

    #[test]
    fn copies_name_their_namespaces() {
        let c = load("apiVersion: drover/v1\nkind: Lab\ncopies: 3\n").unwrap();
        assert_eq!(c.namespaces(), ["shop", "shop-2", "shop-3"]);
    }

    #[test]
    fn bad_files_say_where_and_what() {
        let e = load("apiVersion: drover/v1\nkind: Lab\ndnss: builtin\n").unwrap_err();
        assert!(e.starts_with("lab.yaml: line 3") && e.contains("unknown field `dnss`"), "{e}");
        let e = load("apiVersion: drover/v1\nkind: Lab\nlb: nginx\n").unwrap_err();
        assert!(e.contains("`lb`") && e.contains("unknown variant `nginx`"), "{e}");
        let e = load("apiVersion: drover/v1\nkind: Lab\ncopies: 0\n").unwrap_err();
        assert!(e.contains("between 1 and"), "{e}");
        let e = load("apiVersion: drover/v1\nkind: Runbook\n").unwrap_err();
        assert!(e.contains("kind: Lab"), "{e}");
        let e = load("apiVersion: drover/v1\nkind: Lab\nkube_simulator: { ready_delay: soon }\n").unwrap_err();
        assert!(e.contains("kube_simulator.ready_delay"), "{e}");
        let e = load("apiVersion: drover/v1\nkind: Lab\nkube: minikube\n").unwrap_err();
        assert!(e.contains("unknown variant `minikube`"), "{e}");
    }
}
