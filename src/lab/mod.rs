//! The lab: simulators and real servers on loopback standing in for two sites, so that a
//! newcomer's first command is a real run with a real report.

mod config;
mod kube;
mod parts;
mod seed;
mod site;

use std::path::{Path, PathBuf};

pub use config::{Choice, Fleet, KubeChoice, LabConfig};
pub use kube::LabKube;
pub use site::{Lab, Part};

use serde_json::{Map, Value, json};

use drover_ontap_sim::{Simulator, Topology};

/// Write a drover sites file (`kind: Sites`) from per-site sections.
pub fn write_sites_file(path: &Path, sites: &[(String, String, Value)]) -> Result<(), String> {
    let mut map = Map::new();
    for (site, section, value) in sites {
        let entry = map.entry(site.clone()).or_insert_with(|| Value::Object(Map::new()));
        entry[section] = value.clone();
    }
    let doc = json!({ "apiVersion": "drover/v1", "kind": "Sites", "sites": map });
    let text = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
    let header = "# Written by drover's lab: connection settings for the simulated sites.\n";
    std::fs::write(path, format!("{header}{text}")).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Read a topology file; `settings` override its `settings:` (job_delay, transfer_time, ...).
pub fn load_topology(path: &Path, settings: Option<&Value>) -> Result<Topology, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut topo = Topology::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(over) = settings {
        let mut merged = serde_json::to_value(&topo.settings).map_err(|e| e.to_string())?;
        for (k, v) in over.as_object().into_iter().flatten() {
            merged[k] = v.clone();
        }
        topo.settings = serde_json::from_value(merged).map_err(|e| format!("ontap_settings: {e}"))?;
    }
    Ok(topo)
}

/// Start the ONTAP simulator and write `DIR/sites.yaml` for it.
pub async fn start_ontap(topo: &Topology, dir: &Path) -> Result<(Simulator, PathBuf), String> {
    let sim = Simulator::start(topo).await?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let sections: Vec<(String, String, Value)> =
        sim.site_sections(dir)?.into_iter().map(|(name, v)| (name, "ontap".to_string(), v)).collect();
    let sites = dir.join("sites.yaml");
    write_sites_file(&sites, &sections)?;
    Ok((sim, sites))
}

/// Start a simulated Kubernetes API and write `DIR/kubeconfig-NAME` (mode 0600) for it.
pub async fn start_kube(
    name: &str,
    port: u16,
    dir: &Path,
    settings: drover_kube_sim::Settings,
) -> Result<(drover_kube_sim::Cluster, PathBuf), String> {
    use std::os::unix::fs::PermissionsExt;
    let token = format!("{:032x}", rand::random::<u128>());
    let cluster = drover_kube_sim::Cluster::start(port, &token, settings).await?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(format!("kubeconfig-{name}"));
    let text = serde_yaml::to_string(&cluster.kubeconfig(name)).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    Ok((cluster, path))
}
