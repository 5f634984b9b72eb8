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

/// A fleet of applications (`fleet:` in the lab file): the sample apps seeded once per
/// application, each with its own volume relationships, spread over tiers and DR SVMs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// How many applications: namespaces shop, shop-2, ...
    pub apps: u32,
    /// Volume relationships per application (one per persistent volume).
    #[serde(default = "two")]
    pub volumes_per_app: u32,
    /// Tiers 1..N, the applications spread over them in order.
    #[serde(default = "one")]
    pub tiers: u32,
    /// DR SVMs (svm_dr1, svm_dr2, ...) the volumes spread over.
    #[serde(default = "two")]
    pub svms: u32,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
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
    fleet: Option<Fleet>,
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
    /// Volume relationships and tiers for the copies, when the lab is a fleet: set it with
    /// [`LabConfig::set_fleet`], which keeps `copies` equal to `fleet.apps`.
    pub fleet: Option<Fleet>,
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
        let copies = match (&file.fleet, file.copies) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{}: `copies` and `fleet` both say how many apps run; keep `fleet.apps` and remove `copies`",
                    path.display()
                ));
            }
            (Some(fleet), None) => fleet.apps,
            (None, copies) => copies.unwrap_or(1),
        };
        let what = if file.fleet.is_some() { "fleet.apps" } else { "copies" };
        if copies == 0 || copies > MAX_COPIES {
            return Err(format!("{}: `{what}: {copies}` must be between 1 and {MAX_COPIES}", path.display()));
        }
        if let Some(f) = &file.fleet {
            for (name, value, most) in
                [("volumes_per_app", f.volumes_per_app, 16), ("tiers", f.tiers, 5), ("svms", f.svms, 16)]
            {
                if value == 0 || value > most {
                    return Err(format!("{}: `fleet.{name}: {value}` must be between 1 and {most}", path.display()));
                }
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(LabConfig {
            ontap: base.join(file.ontap.unwrap_or_else(|| "ontap.yaml".into())),
            ontap_settings: file.ontap_settings,
            apps: base.join(file.apps.unwrap_or_else(|| "apps".into())),
            copies,
            fleet: file.fleet,
            dns: file.dns,
            lb: file.lb,
            s3: file.s3,
            kube: file.kube,
            kube_simulator: file.kube_simulator,
        })
    }

    /// Make the lab a fleet: its apps, volumes and tiers (`copies` follows `fleet.apps`, as
    /// the lab file allows only one of them).
    pub fn set_fleet(&mut self, fleet: Fleet) {
        self.copies = fleet.apps;
        self.fleet = Some(fleet);
    }

    /// The application namespaces the lab seeds, in order.
    pub fn namespaces(&self) -> Vec<String> {
        (1..=self.copies).map(copy_namespace).collect()
    }

    /// The volume relationships of a fleet: `(volume, DR SVM, application)`, the volumes of
    /// consecutive applications taking the DR SVMs in turn.
    pub fn fleet_volumes(&self) -> Vec<(String, String, String)> {
        let Some(f) = &self.fleet else { return vec![] };
        let mut out = Vec::with_capacity((f.apps * f.volumes_per_app) as usize);
        for app in self.namespaces() {
            for v in 1..=f.volumes_per_app {
                let svm = format!("svm_dr{}", 1 + (out.len() as u32) % f.svms);
                out.push((format!("{}_v{v}", app.replace('-', "_")), svm, app.clone()));
            }
        }
        out
    }

    /// The inventory the shipped failover runs over (`apps`, and `volumes` for a fleet), or
    /// none when the lab runs the one application the runbook names by default.
    pub fn inventory(&self) -> Option<serde_json::Value> {
        if self.copies == 1 && self.fleet.is_none() {
            return None;
        }
        let tiers = self.fleet.as_ref().map_or(1, |f| f.tiers);
        let apps: Vec<serde_json::Value> = self
            .namespaces()
            .into_iter()
            .enumerate()
            .map(|(i, ns)| {
                let tier = 1 + i as u32 * tiers / self.copies;
                serde_json::json!({
                    "name": ns, "namespaces": [ns], "tier": tier,
                    "dns_name": format!("{ns}.example.com."), "lb_backend": "shop",
                })
            })
            .collect();
        let volumes: Vec<serde_json::Value> = self
            .fleet_volumes()
            .into_iter()
            .map(|(volume, svm, app)| serde_json::json!({ "path": format!("{svm}:{volume}"), "app": app }))
            .collect();
        let mut doc = serde_json::json!({ "apps": apps });
        if !volumes.is_empty() {
            doc["volumes"] = volumes.into();
        }
        Some(doc)
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
    fn a_fleet_spreads_its_apps_over_tiers_and_its_volumes_over_dr_svms() {
        let c = load("apiVersion: drover/v1\nkind: Lab\nfleet: { apps: 5, volumes_per_app: 2, tiers: 2, svms: 3 }\n")
            .unwrap();
        assert_eq!(c.namespaces().len(), 5);
        let v = c.fleet_volumes();
        assert_eq!(v.len(), 10);
        assert_eq!(v[0], ("shop_v1".into(), "svm_dr1".into(), "shop".into()));
        assert_eq!(v[4], ("shop_3_v1".into(), "svm_dr2".into(), "shop-3".into()));
        let inv = c.inventory().unwrap();
        let tiers: Vec<u64> = inv["apps"].as_array().unwrap().iter().map(|a| a["tier"].as_u64().unwrap()).collect();
        assert_eq!(tiers, [1, 1, 1, 2, 2]);
        assert_eq!(inv["volumes"][9]["path"], "svm_dr1:shop_5_v2");
        // One app: the runbook's own default inventory; copies: apps over SVM-DR, no volumes.
        assert!(load("apiVersion: drover/v1\nkind: Lab\n").unwrap().inventory().is_none());
        let copies = load("apiVersion: drover/v1\nkind: Lab\ncopies: 2\n").unwrap().inventory().unwrap();
        assert_eq!(copies["apps"][1]["namespaces"], serde_json::json!(["shop-2"]));
        assert!(copies.get("volumes").is_none());
    }

    #[test]
    fn bad_fleets_say_what_to_change() {
        let e = load("apiVersion: drover/v1\nkind: Lab\ncopies: 2\nfleet: { apps: 3 }\n").unwrap_err();
        assert!(e.contains("keep `fleet.apps` and remove `copies`"), "{e}");
        let e = load("apiVersion: drover/v1\nkind: Lab\nfleet: { apps: 3, tiers: 9 }\n").unwrap_err();
        assert!(e.contains("`fleet.tiers: 9` must be between 1 and 5"), "{e}");
        let e = load("apiVersion: drover/v1\nkind: Lab\nfleet: { apps: 501 }\n").unwrap_err();
        assert!(e.contains("`fleet.apps: 501` must be between 1 and 500"), "{e}");
        let e = load("apiVersion: drover/v1\nkind: Lab\nfleet: { apps: 3, volume_per_app: 2 }\n").unwrap_err();
        assert!(e.contains("unknown field `volume_per_app`"), "{e}");
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
