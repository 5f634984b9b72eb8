//! The whole two-site lab (`drover lab up`, `drover lab failover`): two ONTAP clusters and two
//! Kubernetes API servers (simulators: no real ones can run here), and real servers where the
//! machine has them — BIND for DNS, HAProxy in front of both sites, moto for S3. Without them,
//! built-in stand-ins take their place: drover's RFC 2136 server and TCP balancer, and s3s-fs
//! (an S3 server on the file system, checking signatures) for S3. A part switched off in the
//! lab file is missing, and the steps that need it are switched off by parameter. Every part
//! is reported as simulator, real server, built-in stand-in or missing: the lab never pretends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use drover_ontap_sim::Simulator;

use super::config::LabConfig;
use super::kube::LabKube;
use super::parts::{self, Assembly, LabS3, Procs};
use super::seed;

/// What stands in for each part, for the operator to read.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub endpoint: String,
    /// "simulator", "real server", "stand-in" or "missing".
    pub kind: &'static str,
    pub note: String,
}

/// A running lab; dropping it stops everything.
pub struct Lab {
    pub ontap: Simulator,
    pub east: LabKube,
    pub west: LabKube,
    pub dir: PathBuf,
    pub sites_file: PathBuf,
    pub parts: Vec<Part>,
    /// Parameters for `runbooks/failover.yaml` matching what is running.
    pub params: Vec<(String, String)>,
    /// The inventory of a lab of many apps (`DIR/inventory.yaml`: apps, tiers, volumes), the
    /// failover's params file.
    pub inventory: Option<PathBuf>,
    /// The volume relationships of a fleet (DR paths), empty for SVM-DR.
    pub volumes: Vec<String>,
    pub dns: Option<std::net::SocketAddr>,
    pub lb_url: Option<String>,
    /// The application namespaces seeded on the primary.
    pub namespaces: Vec<String>,
    backends: Vec<tokio::task::JoinHandle<()>>,
    s3: Option<LabS3>,
    _dns_standin: Option<drover_standins::dns::StandIn>,
    _lb_standin: Option<drover_standins::lb::StandIn>,
    procs: Procs,
    /// The servers [`Lab::troubles`] has reported dead.
    reported: std::collections::BTreeSet<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for b in &self.backends {
            b.abort();
        }
    }
}

impl Lab {
    /// Start every part the lab file describes on loopback, seed the primary, and write
    /// `DIR/sites.yaml`.
    pub async fn up(config: &LabConfig, dir: &Path) -> Result<Lab, String> {
        let dir = &std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::create_dir_all(dir.join("secrets")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut a = Assembly::default();
        let mut topology = super::load_topology(&config.ontap, config.ontap_settings.as_ref())?;
        let fleet_volumes = config.fleet_volumes();
        if !fleet_volumes.is_empty() {
            let pairs: Vec<(String, String)> = fleet_volumes.iter().map(|(v, s, _)| (v.clone(), s.clone())).collect();
            topology =
                topology.with_volume_relationships(&pairs).map_err(|e| format!("{}: {e}", config.ontap.display()))?;
        }
        let (ontap, _) = super::start_ontap(&topology, dir).await?;
        for (name, section) in ontap.site_sections(dir)? {
            a.parts.push(Part {
                name: format!("ONTAP {name}"),
                endpoint: ontap.url(&name),
                kind: "simulator",
                note: String::new(),
            });
            a.sections.push((name, "ontap".into(), section));
        }
        let kube = drover_kube_sim::Settings {
            ready_delay: config.kube_simulator.ready_delay.0,
            namespace_delete_delay: config.kube_simulator.namespace_delete_delay.0,
        };
        let (east, west) = tokio::join!(
            LabKube::start("east", config.kube, dir, kube.clone()),
            LabKube::start("west", config.kube, dir, kube)
        );
        let ((east, east_config), (west, west_config)) = (east?, west?);
        for (name, c, config) in [("east", &east, &east_config), ("west", &west, &west_config)] {
            a.parts.push(Part {
                name: format!("Kubernetes {name}"),
                endpoint: c.url(),
                kind: c.kind(),
                note: format!("{}; kubeconfig {}", c.note(), config.display()),
            });
            a.sections.push((name.into(), "kube".into(), json!({ "kubeconfig": config, "context": name })));
        }
        let dns = parts::start_dns(config, dir, &mut a).await?;
        let lb = parts::start_lb(config, dir, &mut a).await?;
        let s3 = parts::start_s3(config, dir, &mut a)?;
        let namespaces = config.namespaces();
        let inventory = match config.inventory() {
            Some(doc) => {
                let path = dir.join("inventory.yaml");
                let header = "# Written by drover's lab: the applications it seeded (their tiers, DNS names and \
                              load-balancer\n# backend: the lab has one, shop) and the volume relationships \
                              that hold their data.\n# The failover's params file: drover failover --params-file THIS\n";
                let text = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
                std::fs::write(&path, format!("{header}{text}"))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Some(path)
            }
            None => None,
        };
        let sites_file = dir.join("sites.yaml");
        super::write_sites_file(&sites_file, &a.sections)?;
        seed::primary(config, dir, &east, a.sites(), s3.as_ref(), &namespaces, &mut a.parts).await?;
        Ok(Lab {
            ontap,
            east,
            west,
            dir: dir.to_path_buf(),
            sites_file,
            parts: a.parts,
            params: a.params,
            inventory,
            volumes: fleet_volumes.iter().map(|(v, s, _)| format!("{s}:{v}")).collect(),
            dns: dns.addr,
            lb_url: lb.url,
            namespaces,
            backends: lb.backends,
            s3,
            _dns_standin: dns.standin,
            _lb_standin: lb.standin,
            procs: a.procs,
            reported: Default::default(),
        })
    }

    /// Servers of the lab that have died since it started, each reported once, with what it
    /// breaks and what to do: a lab left up for a day must not leave an operator wondering why
    /// every DNS step now fails. Real Kubernetes components say why, from their logs; kwok,
    /// which the control plane starts again, is reported only once it will not be.
    pub fn troubles(&mut self) -> Vec<String> {
        const AGAIN: &str = "stop the lab (Ctrl-C) and start it again";
        let mut found: Vec<(String, String)> = vec![];
        for (part, pid, status) in self.procs.exited() {
            let key = format!("{part} {pid}");
            found.push((
                key,
                format!("the {part}, pid {pid}, exited ({status}): steps that reach it will fail; {AGAIN}"),
            ));
        }
        if let Some((pid, status)) = self.s3.as_mut().and_then(LabS3::exited) {
            found.push((
                format!("S3 {pid}"),
                format!("the S3 server (moto), pid {pid}, exited ({status}): an unplanned failover cannot read its backups; {AGAIN}"),
            ));
        }
        for (site, kube) in [("east", &self.east), ("west", &self.west)] {
            if let LabKube::Real(plane) = kube {
                for (component, status, log) in plane.exited_for_good() {
                    let log: Vec<String> = log.lines().map(|l| format!("    {l}")).collect();
                    let log = log.join("\n");
                    found.push((
                        format!("{site} {component}"),
                        format!(
                            "{site}'s {component} exited ({status}): {site}'s Kubernetes will not answer as it should; {AGAIN}. The end of its log:\n{log}"
                        ),
                    ));
                }
            }
        }
        found.into_iter().filter(|(key, _)| self.reported.insert(key.clone())).map(|(_, line)| line).collect()
    }

    /// Every part, one per line.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            out.push_str(&format!("  {:<16} {:<12} {:<30} {}\n", p.name, p.kind, p.endpoint, p.note));
        }
        out.push_str(&format!("  sites file: {}\n", self.sites_file.display()));
        out
    }

    /// Stop the primary site (an unplanned failover's disaster): its ONTAP cluster stops
    /// answering and its Kubernetes API goes away.
    pub fn lose_primary(&mut self) {
        self.ontap.set_reachable("east", false);
        self.east.stop();
    }

    /// Check that a failback brought the lab back to where it started.
    pub async fn initial_state(&self) -> Vec<(String, bool)> {
        let mut out =
            if self.volumes.is_empty() { self.svm_dr_as_it_started() } else { self.volumes_as_they_started() };
        let web = self.east.get("apps", "v1", "deployments", Some("shop"), "web").await;
        let ready =
            web.as_ref().and_then(|w| w.pointer("/status/availableReplicas")).and_then(Value::as_i64).unwrap_or(0);
        out.push((format!("east runs Deployment shop/web with {ready} available replicas"), ready == 3));
        let host = self
            .east
            .get("networking.k8s.io", "v1", "ingresses", Some("shop"), "web")
            .await
            .and_then(|i| i.pointer("/spec/rules/0/host").and_then(Value::as_str).map(String::from))
            .unwrap_or_default();
        out.push((format!("east's Ingress shop/web serves {host}"), host == "shop.east.example.com"));
        if self.namespaces.len() > 1 {
            let (ready, hosts) = self.apps_serving(&self.east, "east").await;
            let n = self.namespaces.len();
            out.push((format!("east runs Deployment web in {ready} of {n} app namespaces"), ready == n));
            out.push((format!("east's Ingress web serves the east host in {hosts} of {n} app namespaces"), hosts == n));
        }
        let ns = self.east.get("", "v1", "namespaces", None, "shop").await.unwrap_or_default();
        let fenced = ns.pointer("/metadata/labels/drover.io~1fenced").is_some();
        out.push((format!("east's namespace shop is {}", if fenced { "fenced" } else { "not fenced" }), !fenced));
        let left = self.west.get("", "v1", "namespaces", None, "shop").await.is_some();
        out.push((format!("west {} namespace shop", if left { "still has" } else { "has no" }), !left));
        if self.namespaces.len() > 1 {
            let mut left = 0;
            for ns in &self.namespaces {
                left += usize::from(self.west.get("", "v1", "namespaces", None, ns).await.is_some());
            }
            out.push((format!("west still has {left} of {} app namespaces", self.namespaces.len()), left == 0));
        }
        if let Some(addr) = self.dns {
            let answer =
                drover_dns::query(addr, "shop.example.com.", drover_dns::RecordKind::A, Duration::from_secs(2)).await;
            let values = answer.map(|r| r.values.join(",")).unwrap_or_else(|e| e.message);
            out.push((format!("DNS shop.example.com → {values}"), values == "203.0.113.10"));
        }
        if let Some(url) = &self.lb_url {
            let body = match reqwest::get(url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            out.push((format!("load balancer answers `{}`", body.trim()), body.trim() == "served by east"));
        }
        out
    }

    /// In how many app namespaces `cluster` runs Deployment web (available replicas) and its
    /// Ingress serves the `site` host (`NS.SITE.example.com`).
    async fn apps_serving(&self, cluster: &LabKube, site: &str) -> (usize, usize) {
        let mut counts = (0, 0);
        for ns in &self.namespaces {
            let web = cluster.get("apps", "v1", "deployments", Some(ns), "web").await;
            if web.and_then(|w| w.pointer("/status/availableReplicas").and_then(Value::as_i64)).unwrap_or(0) > 0 {
                counts.0 += 1;
            }
            let host = cluster
                .get("networking.k8s.io", "v1", "ingresses", Some(ns), "web")
                .await
                .and_then(|i| i.pointer("/spec/rules/0/host").and_then(Value::as_str).map(String::from));
            if host.as_deref() == Some(&format!("{ns}.{site}.example.com")) {
                counts.1 += 1;
            }
        }
        counts
    }

    /// The SVM-DR relationship primary → DR and only the primary's SVM running.
    fn svm_dr_as_it_started(&self) -> Vec<(String, bool)> {
        let (rel, svms) = self.ontap.with_world(|w| {
            let rel = w
                .rels
                .iter()
                .find(|r| r.dst_path == "svm_dr:")
                .map(|r| format!("{} → {} {}", r.src_path, r.dst_path, r.state))
                .unwrap_or_else(|| "missing".into());
            let svms: Vec<String> =
                w.clusters.iter().flat_map(|c| c.svms.iter().map(|s| format!("{} {}", s.name, s.state))).collect();
            (rel, svms)
        });
        vec![
            (format!("SVM-DR relationship {rel}"), rel == "svm1: → svm_dr: snapmirrored"),
            (
                format!("SVMs: {}", svms.join(", ")),
                svms.contains(&"svm1 running".into()) && svms.contains(&"svm_dr stopped".into()),
            ),
        ]
    }

    /// Every volume relationship of the fleet primary → DR again, snapmirrored, and none left
    /// the other way.
    fn volumes_as_they_started(&self) -> Vec<(String, bool)> {
        let (home, reversed) = self.ontap.with_world(|w| {
            let home = w
                .rels
                .iter()
                .filter(|r| self.volumes.contains(&r.dst_path) && r.src_path.starts_with("svm1:"))
                .filter(|r| r.state == drover_ontap::model::MirrorState::Snapmirrored)
                .count();
            let reversed = w.rels.iter().filter(|r| self.volumes.contains(&r.src_path)).count();
            (home, reversed)
        });
        let n = self.volumes.len();
        vec![
            (format!("{home} of {n} volume relationships are svm1 → DR and snapmirrored"), home == n),
            (format!("{reversed} volume relationships are left reversed (DR → primary)"), reversed == 0),
        ]
    }

    /// The SVM-DR relationship broken off and the DR SVM running.
    fn svm_dr_failed_over(&self) -> Vec<(String, bool)> {
        let mut out = vec![];
        let (rel, svm) = self.ontap.with_world(|w| {
            let rel = w.rels.iter().find(|r| r.dst_path == "svm_dr:").map(|r| r.state).unwrap_or_default();
            let svm = w
                .clusters
                .iter()
                .flat_map(|c| c.svms.iter())
                .find(|s| s.name == "svm_dr")
                .map(|s| s.state)
                .unwrap_or_default();
            (rel, svm)
        });
        out.push((format!("SVM-DR relationship svm_dr: is {rel}"), rel == drover_ontap::model::MirrorState::BrokenOff));
        out.push((format!("DR SVM svm_dr is {svm}"), svm == drover_ontap::model::SvmState::Running));
        out
    }

    /// Every volume relationship of the fleet broken off.
    fn volumes_failed_over(&self) -> Vec<(String, bool)> {
        let broken = self.ontap.with_world(|w| {
            w.rels
                .iter()
                .filter(|r| self.volumes.contains(&r.dst_path))
                .filter(|r| r.state == drover_ontap::model::MirrorState::BrokenOff)
                .count()
        });
        let n = self.volumes.len();
        vec![(format!("{broken} of {n} volume relationships are broken off"), broken == n)]
    }

    /// Check the state a failover must leave; each line says what was found.
    pub async fn failover_state(&self) -> Vec<(String, bool)> {
        let mut out = vec![];
        if self.volumes.is_empty() {
            out.extend(self.svm_dr_failed_over());
        } else {
            out.extend(self.volumes_failed_over());
        }
        let web = self.west.get("apps", "v1", "deployments", Some("shop"), "web").await;
        let ingress = self.west.get("networking.k8s.io", "v1", "ingresses", Some("shop"), "web").await;
        let ready =
            web.as_ref().and_then(|w| w.pointer("/status/availableReplicas")).and_then(Value::as_i64).unwrap_or(0);
        out.push((format!("west runs Deployment shop/web with {ready} available replicas"), ready > 0));
        let host = ingress
            .as_ref()
            .and_then(|i| i.pointer("/spec/rules/0/host"))
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string();
        out.push((format!("west's Ingress shop/web serves {host}"), host == "shop.west.example.com"));
        if self.namespaces.len() > 1 {
            let (ready, hosts) = self.apps_serving(&self.west, "west").await;
            let n = self.namespaces.len();
            out.push((format!("west runs Deployment web in {ready} of {n} app namespaces"), ready == n));
            out.push((format!("west's Ingress web serves the west host in {hosts} of {n} app namespaces"), hosts == n));
        }
        if let Some(addr) = self.dns {
            let answer =
                drover_dns::query(addr, "shop.example.com.", drover_dns::RecordKind::A, Duration::from_secs(2)).await;
            let values = answer.map(|r| r.values.join(",")).unwrap_or_else(|e| e.message);
            out.push((format!("DNS shop.example.com → {values}"), values == "198.51.100.10"));
        }
        if let Some(url) = &self.lb_url {
            let body = reqwest::get(url).await.map(|r| r.text());
            let body = match body {
                Ok(t) => t.await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            out.push((format!("load balancer answers `{}`", body.trim()), body.trim() == "served by west"));
        }
        out
    }
}
