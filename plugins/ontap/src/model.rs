//! What drover knows of ONTAP's objects — relationships, SVMs, volumes, jobs — with their
//! states as enums. The client decodes answers into these types, the actions decide on them
//! (see `actions::decide`), and the simulator (`drover-ontap-sim`) keeps its world in the
//! same state enums, so a state one side does not know cannot silently pass the other.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::parse_iso_duration;

/// A string enum as ONTAP writes it: `as_str`, `parse`, Display and serde agree. A value
/// this release of drover does not know decodes as `Unknown` (ONTAP adds states over releases).
macro_rules! ontap_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $($variant,)+
            /// A value this drover does not know.
            #[default]
            Unknown,
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Unknown => "unknown",
                }
            }

            /// The known value of this name.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<str>::deserialize(d)?;
                Ok($name::parse(&text).unwrap_or($name::Unknown))
            }
        }
    };
}

ontap_enum! {
    /// A SnapMirror relationship's `state`.
    MirrorState {
        Snapmirrored = "snapmirrored",
        Paused = "paused",
        BrokenOff = "broken_off",
        Uninitialized = "uninitialized",
        InSync = "in_sync",
        OutOfSync = "out_of_sync",
        Synchronizing = "synchronizing",
    }
}

ontap_enum! {
    /// A SnapMirror transfer's `state`.
    TransferState {
        Queued = "queued",
        Transferring = "transferring",
        Success = "success",
        Failed = "failed",
        Aborted = "aborted",
        HardAborted = "hard_aborted",
    }
}

ontap_enum! {
    /// An SVM's `state`.
    SvmState {
        Starting = "starting",
        Running = "running",
        Stopping = "stopping",
        Stopped = "stopped",
        Initializing = "initializing",
        Deleting = "deleting",
    }
}

ontap_enum! {
    /// An SVM's `subtype`: a `dp_destination` SVM is an SVM-DR destination not yet broken off.
    SvmSubtype {
        Default = "default",
        DpDestination = "dp_destination",
        SyncSource = "sync_source",
        SyncDestination = "sync_destination",
    }
}

ontap_enum! {
    /// A volume's `type`: `rw` is writable, `dp` a SnapMirror destination.
    VolumeType {
        Rw = "rw",
        Dp = "dp",
        Ls = "ls",
    }
}

ontap_enum! {
    /// An asynchronous job's `state`.
    JobState {
        Queued = "queued",
        Running = "running",
        Paused = "paused",
        Success = "success",
        Failure = "failure",
    }
}

/// One end of a relationship.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Endpoint {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub svm: Option<Named>,
}

/// Why ONTAP calls a relationship unhealthy.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Reason {
    #[serde(default)]
    pub message: String,
    #[serde(default, deserialize_with = "code_text")]
    pub code: String,
}

/// The transfer a relationship reports (the running one, or the last).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Transfer {
    #[serde(default)]
    pub uuid: String,
    pub state: TransferState,
}

/// A SnapMirror relationship as drover reads it (`RELATIONSHIP_FIELDS`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Relationship {
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub state: MirrorState,
    #[serde(default)]
    pub source: Endpoint,
    #[serde(default)]
    pub destination: Endpoint,
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default)]
    pub unhealthy_reason: Vec<Reason>,
    #[serde(default)]
    pub lag_time: Option<String>,
    #[serde(default)]
    pub exported_snapshot: Option<String>,
    #[serde(default)]
    pub transfer: Option<Transfer>,
    #[serde(default)]
    pub policy: Option<Named>,
}

impl Relationship {
    pub fn transferring(&self) -> bool {
        self.transfer.as_ref().is_some_and(|t| t.state == TransferState::Transferring)
    }

    pub fn transfer_state(&self) -> Option<TransferState> {
        self.transfer.as_ref().map(|t| t.state)
    }

    /// The data a failover would lose now.
    pub fn lag(&self) -> Option<Duration> {
        parse_iso_duration(self.lag_time.as_deref()?)
    }

    /// ONTAP's reasons when it says the relationship is unhealthy.
    pub fn unhealthy(&self) -> Option<String> {
        if self.healthy != Some(false) {
            return None;
        }
        let reasons: Vec<String> =
            self.unhealthy_reason.iter().map(|r| format!("{} (code {})", r.message, r.code)).collect();
        Some(if reasons.is_empty() { "unhealthy".into() } else { reasons.join("; ") })
    }

    pub fn exported(&self) -> &str {
        self.exported_snapshot.as_deref().unwrap_or("")
    }

    /// An SVM-DR relationship's destination is `svm:`.
    pub fn is_svm_dr(&self) -> bool {
        self.destination.path.ends_with(':')
    }
}

/// An SVM.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Svm {
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: SvmState,
    #[serde(default)]
    pub subtype: Option<SvmSubtype>,
}

/// A name in a reference (`clone.parent_volume.name`, `destination.svm.name`, `policy.name`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Named {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Nas {
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct CloneInfo {
    #[serde(default)]
    pub parent_volume: Option<Named>,
    #[serde(default)]
    pub parent_snapshot: Option<Named>,
}

/// A volume.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Volume {
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub vtype: Option<VolumeType>,
    #[serde(default)]
    pub nas: Option<Nas>,
    #[serde(default)]
    pub clone: Option<CloneInfo>,
}

impl Volume {
    /// Where it is mounted; empty when it is not.
    pub fn junction_path(&self) -> &str {
        self.nas.as_ref().and_then(|n| n.path.as_deref()).unwrap_or("")
    }

    pub fn parent_volume(&self) -> &str {
        self.clone.as_ref().and_then(|c| c.parent_volume.as_ref()).map(|n| n.name.as_str()).unwrap_or("")
    }

    pub fn parent_snapshot(&self) -> &str {
        self.clone.as_ref().and_then(|c| c.parent_snapshot.as_ref()).map(|n| n.name.as_str()).unwrap_or("")
    }
}

/// An asynchronous job.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Job {
    #[serde(default)]
    pub uuid: String,
    pub state: JobState,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "code_text")]
    pub code: String,
}

/// The cluster's identity and release.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Cluster {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: ClusterVersion,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ClusterVersion {
    #[serde(default)]
    pub full: String,
    pub generation: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

/// An error or job `code`, whether ONTAP sent it as a string or a number.
pub fn code_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_round_trip_and_unknown_ones_decode() {
        for s in MirrorState::ALL {
            assert_eq!(MirrorState::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        let r: Relationship = serde_json::from_value(json!({"uuid": "u", "state": "some_new_state"})).unwrap();
        assert_eq!(r.state, MirrorState::Unknown);
    }

    #[test]
    fn a_relationship_decodes_from_what_ontap_answers() {
        let r: Relationship = serde_json::from_value(json!({
            "uuid": "u1", "state": "snapmirrored", "healthy": false,
            "unhealthy_reason": [{"message": "The last transfer failed.", "code": 6621444}],
            "source": {"path": "svm:", "svm": {"name": "svm"}}, "destination": {"path": "svm_dr:"},
            "lag_time": "PT1H2M3S", "exported_snapshot": "snap1",
            "transfer": {"uuid": "t1", "state": "transferring", "bytes_transferred": 10}
        }))
        .unwrap();
        assert!(r.transferring() && r.is_svm_dr());
        assert_eq!(r.lag(), Some(Duration::from_secs(3723)));
        assert_eq!(r.unhealthy().as_deref(), Some("The last transfer failed. (code 6621444)"));
        let j: Job = serde_json::from_value(json!({"state": "failure", "code": 13303808, "message": "m"})).unwrap();
        assert_eq!((j.state, j.code.as_str()), (JobState::Failure, "13303808"));
    }
}
