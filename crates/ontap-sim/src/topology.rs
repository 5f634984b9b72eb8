//! The simulator's seed: clusters, SVMs, volumes, peers and relationships, from YAML.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub clusters: Vec<ClusterSpec>,
    #[serde(default)]
    pub svm_peers: Vec<SvmPeerSpec>,
    #[serde(default)]
    pub relationships: Vec<RelationshipSpec>,
    #[serde(default)]
    pub settings: Settings,
    /// Faults active from the start (tests can also inject them at run time).
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
}

/// A fault in a topology file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Cluster name; all clusters when absent.
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    /// Substring of the request path.
    #[serde(default)]
    pub path: Option<String>,
    /// `{ type: sync_error, status, code, message }`, `{ type: job_failure, code, message }`,
    /// `{ type: latency, duration: 500ms }` or `{ type: drop_connection }`.
    pub kind: FaultKindSpec,
    /// For this many matching requests (all when absent).
    #[serde(default)]
    pub count: Option<u32>,
    /// For this share of matching requests (default 1.0).
    #[serde(default = "always")]
    pub share: f64,
}

fn always() -> f64 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKindSpec {
    SyncError {
        status: u16,
        code: String,
        message: String,
    },
    JobFailure {
        code: u64,
        message: String,
    },
    Latency {
        #[serde(with = "humantime_serde_compat")]
        duration: Duration,
    },
    DropConnection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    #[serde(default = "admin")]
    pub username: String,
    /// The simulator's own password (a test fixture, not a real secret).
    pub password: String,
    #[serde(default = "version")]
    pub version: String,
    /// 0 picks a free port.
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub svms: Vec<SvmSpec>,
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// Names of clusters this one is peered with.
    #[serde(default)]
    pub peers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvmSpec {
    pub name: String,
    #[serde(default = "running")]
    pub state: String,
    #[serde(default = "default_subtype")]
    pub subtype: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    pub name: String,
    pub svm: String,
    #[serde(default = "rw", rename = "type")]
    pub vtype: String,
    #[serde(default)]
    pub junction: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvmPeerSpec {
    /// `svm@cluster`
    pub svm: String,
    /// `svm@cluster`
    pub peer: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationshipSpec {
    pub source_cluster: String,
    /// `svm:` for SVM-DR, `svm:vol` for a volume.
    pub source: String,
    pub destination_cluster: String,
    pub destination: String,
    #[serde(default = "snapmirrored")]
    pub state: String,
    #[serde(default = "mirror_all")]
    pub policy: String,
    #[serde(default)]
    pub identity_preservation: Option<String>,
}

/// Behaviour knobs, including the points the ONTAP documentation leaves open.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How long an async job stays queued/running.
    #[serde(with = "humantime_serde_compat")]
    pub job_delay: Duration,
    /// How long a transfer takes.
    #[serde(with = "humantime_serde_compat")]
    pub transfer_time: Duration,
    /// Finished jobs disappear (404) after this.
    #[serde(with = "humantime_serde_compat")]
    pub job_expiry: Duration,
    /// A repeated state PATCH (broken_off → broken_off): `reject` (400, 13303818) or `accept_noop`.
    pub repeat_transition: RepeatTransition,
    /// ONTAP 9.16 with identity preservation `full`: the break fails until the source SVM is stopped.
    pub break_requires_source_stopped: bool,
    /// ... and the DR SVM starts by itself after the break.
    pub auto_start_dr_svm: bool,
    /// Serve HTTPS with a self-signed certificate.
    pub tls: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            job_delay: Duration::from_millis(20),
            transfer_time: Duration::from_millis(50),
            job_expiry: Duration::from_secs(300),
            repeat_transition: RepeatTransition::Reject,
            break_requires_source_stopped: false,
            auto_start_dr_svm: false,
            tls: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepeatTransition {
    Reject,
    AcceptNoop,
}

fn admin() -> String {
    "admin".into()
}
fn version() -> String {
    "9.14.1".into()
}
fn running() -> String {
    "running".into()
}
fn default_subtype() -> String {
    "default".into()
}
fn rw() -> String {
    "rw".into()
}
fn snapmirrored() -> String {
    "snapmirrored".into()
}
fn mirror_all() -> String {
    "MirrorAllSnapshots".into()
}

/// Durations in topology files are humantime strings (`50ms`, `2s`).
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

impl Topology {
    pub fn from_yaml(text: &str) -> Result<Topology, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    /// Volume-level replication in place of SVM-DR, as Trident provisions it: the source SVM
    /// of the (first) SVM-DR relationship gets one volume per `(volume, dr_svm)`, each
    /// replicated into that DR SVM (running, peered, its copy a `dp` volume). The SVM-DR
    /// relationship, its destination SVM and that SVM's volumes are gone: a volume is
    /// replicated once.
    pub fn with_volume_relationships(mut self, volumes: &[(String, String)]) -> Result<Topology, String> {
        let svm_dr = self
            .relationships
            .iter()
            .position(|r| r.source.ends_with(':') && r.destination.ends_with(':'))
            .ok_or("the topology has no SVM-DR relationship whose SVMs the volumes could use")?;
        let r = self.relationships.remove(svm_dr);
        let (source_svm, old_dr) = (r.source.trim_end_matches(':').to_string(), r.destination.trim_end_matches(':'));
        let (src, dst) = (r.source_cluster.clone(), r.destination_cluster.clone());
        self.svm_peers
            .retain(|p| !p.svm.starts_with(&format!("{old_dr}@")) && !p.peer.starts_with(&format!("{old_dr}@")));
        let mut dr_svms: Vec<&str> = volumes.iter().map(|(_, s)| s.as_str()).collect();
        dr_svms.sort_unstable();
        dr_svms.dedup();
        for cluster in &mut self.clusters {
            if cluster.name == dst {
                cluster.svms.retain(|s| s.name != old_dr);
                cluster.volumes.retain(|v| v.svm != old_dr);
                for svm in &dr_svms {
                    cluster.svms.push(SvmSpec { name: svm.to_string(), state: running(), subtype: default_subtype() });
                }
            }
        }
        for svm in &dr_svms {
            self.svm_peers.push(SvmPeerSpec { svm: format!("{svm}@{dst}"), peer: format!("{source_svm}@{src}") });
        }
        for (volume, svm) in volumes {
            let at = |cluster: &str| self.clusters.iter().position(|c| c.name == cluster);
            let (Some(s), Some(d)) = (at(&src), at(&dst)) else {
                return Err(format!(
                    "the SVM-DR relationship names clusters {src} and {dst}, which are not both defined"
                ));
            };
            self.clusters[s].volumes.push(VolumeSpec {
                name: volume.clone(),
                svm: source_svm.clone(),
                vtype: rw(),
                junction: None,
            });
            self.clusters[d].volumes.push(VolumeSpec {
                name: volume.clone(),
                svm: svm.clone(),
                vtype: "dp".into(),
                junction: None,
            });
            self.relationships.push(RelationshipSpec {
                source_cluster: src.clone(),
                source: format!("{source_svm}:{volume}"),
                destination_cluster: dst.clone(),
                destination: format!("{svm}:{volume}"),
                state: snapmirrored(),
                policy: mirror_all(),
                identity_preservation: None,
            });
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_relationships_replace_svm_dr_with_one_relationship_per_volume() {
        let lab = Topology::from_yaml(include_str!("../../../examples/lab/ontap.yaml")).unwrap();
        let pairs = [("a_v1", "svm_dr1"), ("a_v2", "svm_dr2"), ("b_v1", "svm_dr1")].map(|(v, s)| (v.into(), s.into()));
        let t = lab.with_volume_relationships(&pairs).unwrap();
        let dests: Vec<&str> = t.relationships.iter().map(|r| r.destination.as_str()).collect();
        assert_eq!(dests, ["svm_dr1:a_v1", "svm_dr2:a_v2", "svm_dr1:b_v1"]);
        assert!(t.relationships.iter().all(|r| r.source.starts_with("svm1:") && r.source_cluster == "east"));
        let west = t.clusters.iter().find(|c| c.name == "west").unwrap();
        let svms: Vec<(&str, &str)> = west.svms.iter().map(|s| (s.name.as_str(), s.state.as_str())).collect();
        assert_eq!(svms, [("svm_dr1", "running"), ("svm_dr2", "running")], "the SVM-DR destination is gone");
        assert!(west.volumes.iter().all(|v| v.vtype == "dp" && v.svm != "svm_dr"));
        let peers: Vec<&str> = t.svm_peers.iter().map(|p| p.svm.as_str()).collect();
        assert_eq!(peers, ["svm_dr1@west", "svm_dr2@west"]);
        let err = t.with_volume_relationships(&pairs).unwrap_err();
        assert!(err.contains("no SVM-DR relationship"), "{err}");
    }
}
