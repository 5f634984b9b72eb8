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
}
