//! The simulated clusters and their shared replication model.
//!
//! State changes follow `shared/docs/ONTAP-REST.md`: validation errors come back
//! synchronously (400 with an ONTAP code); accepted changes start a job whose success only
//! means the transition started, and the object reaches its target state when the job ends.
//! Time advances lazily: every request first applies what became due (`tick`).

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use drover_ontap::model::{JobState, MirrorState, SvmState, SvmSubtype, TransferState, VolumeType};

use super::topology::{Settings, Topology};

/// A topology's state name as the shared model's enum; a name ONTAP does not use is an error.
fn parse_state<T>(name: &str, what: &str) -> Result<T, String>
where
    T: TryFromName,
{
    T::from_name(name).ok_or_else(|| format!("`{name}` is not a {what} ONTAP knows"))
}

/// The model's `parse`, for [`parse_state`].
trait TryFromName: Sized {
    fn from_name(name: &str) -> Option<Self>;
}

macro_rules! from_name {
    ($($t:ty),*) => {$(impl TryFromName for $t { fn from_name(name: &str) -> Option<Self> { <$t>::parse(name) } })*};
}
from_name!(MirrorState, SvmState, SvmSubtype, VolumeType);
pub use super::wire::{ApiError, Query, iso_duration, rfc3339};

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uuid: String,
    pub name: String,
    pub created: SystemTime,
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub uuid: String,
    pub name: String,
    pub svm: String,
    pub vtype: VolumeType,
    pub nas_path: Option<String>,
    pub clone_of: Option<(String, String)>,
    pub snapshots: Vec<Snapshot>,
}

#[derive(Debug, Clone)]
pub struct Svm {
    pub uuid: String,
    pub name: String,
    pub state: SvmState,
    pub subtype: SvmSubtype,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub uuid: String,
    pub version: String,
    pub username: String,
    pub password: String,
    pub svms: Vec<Svm>,
    pub volumes: Vec<Volume>,
    pub peers: Vec<String>,
    pub reachable: bool,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub uuid: String,
    pub ttype: String,
    pub state: TransferState,
    pub started: SystemTime,
    pub end: Option<SystemTime>,
    pub finish_at: Instant,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Relationship {
    pub uuid: String,
    pub src_cluster: usize,
    pub dst_cluster: usize,
    pub src_path: String,
    pub dst_path: String,
    pub state: MirrorState,
    pub policy: String,
    pub identity_preservation: Option<String>,
    /// The newest snapshot both sides hold (name, creation time on the source).
    pub exported: Option<(String, SystemTime)>,
    pub transfer: Option<Transfer>,
    pub last_transfer_type: Option<String>,
    /// A state change is under way (its job has not finished).
    pub busy: bool,
    pub transfers_done: u64,
}

impl Relationship {
    pub fn is_svm_dr(&self) -> bool {
        self.dst_path.ends_with(':')
    }
}

/// What a job does when it ends successfully.
#[derive(Debug, Clone)]
pub enum Effect {
    None,
    RelState { rel: String, target: MirrorState, quick: bool },
    Reverse { rel: String },
    RelDelete { rel: String, keep_snapshots: bool },
    SvmState { cluster: usize, svm: String, target: SvmState },
    CreateVolume { cluster: usize, volume: Volume },
    DeleteVolume { cluster: usize, uuid: String },
}

#[derive(Debug, Clone)]
pub struct Job {
    pub uuid: String,
    pub cluster: usize,
    pub description: String,
    pub state: JobState,
    pub code: u64,
    pub message: String,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    pub finish_at: Instant,
    pub ended_at: Option<Instant>,
    pub effect: Effect,
    /// Fail instead of applying the effect.
    pub failure: Option<(u64, String)>,
}

/// An injected fault.
/// A fault injected into the answers of one cluster (`server`: its name) or all.
pub type Fault = drover_sim_kit::Fault<FaultKind>;

#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer with this HTTP status and ONTAP code at once.
    SyncError { status: u16, code: String, message: String },
    /// Accept, then let the job fail with this code.
    JobFailure { code: u64, message: String },
    /// Delay the answer.
    Latency(Duration),
    /// Drop the connection without an answer.
    DropConnection,
}

pub struct World {
    pub clusters: Vec<Cluster>,
    pub rels: Vec<Relationship>,
    pub jobs: Vec<Job>,
    pub settings: Settings,
    pub faults: Vec<Fault>,
    pub svm_peers: Vec<((usize, String), (usize, String))>,
    counter: u64,
    /// Forces a job failure on the next job created (from a JobFailure fault).
    pub pending_job_failure: Option<(u64, String)>,
    /// Every authenticated request, in order (the newest 100,000), so tests can check what
    /// a client sent against every release's definitions.
    pub requests: std::collections::VecDeque<RecordedRequest>,
    /// The simulator's time: jobs, transfers, lag and timestamps follow it.
    pub clock: drover_sim_kit::Clock,
}

/// One request as the API saw it: method, path, query and the body (dotted keys normalised).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Query,
    pub body: Value,
}

impl World {
    pub fn new(t: &Topology) -> Result<World, String> {
        let mut w = World {
            clusters: vec![],
            rels: vec![],
            jobs: vec![],
            settings: t.settings.clone(),
            faults: vec![],
            svm_peers: vec![],
            counter: 0,
            pending_job_failure: None,
            requests: Default::default(),
            clock: drover_sim_kit::Clock::real(),
        };
        for c in &t.clusters {
            let uuid = w.uuid();
            let svms = c
                .svms
                .iter()
                .map(|s| {
                    Ok(Svm {
                        uuid: w.uuid(),
                        name: s.name.clone(),
                        state: parse_state(&s.state, "SVM state")?,
                        subtype: parse_state(&s.subtype, "SVM subtype")?,
                    })
                })
                .collect::<Result<_, String>>()?;
            let volumes = c
                .volumes
                .iter()
                .map(|v| {
                    Ok(Volume {
                        uuid: w.uuid(),
                        name: v.name.clone(),
                        svm: v.svm.clone(),
                        vtype: parse_state(&v.vtype, "volume type")?,
                        nas_path: v.junction.clone(),
                        clone_of: None,
                        snapshots: vec![],
                    })
                })
                .collect::<Result<_, String>>()?;
            w.clusters.push(Cluster {
                name: c.name.clone(),
                uuid,
                version: c.version.clone(),
                username: c.username.clone(),
                password: c.password.clone(),
                svms,
                volumes,
                peers: c.peers.clone(),
                reachable: true,
            });
        }
        let at = |w: &World, spec: &str| -> Result<(usize, String), String> {
            let (svm, cluster) = spec.split_once('@').ok_or_else(|| format!("`{spec}` is not svm@cluster"))?;
            Ok((w.cluster_index(cluster).ok_or_else(|| format!("unknown cluster `{cluster}`"))?, svm.to_string()))
        };
        for f in &t.faults {
            use super::topology::FaultKindSpec as K;
            let kind = match &f.kind {
                K::SyncError { status, code, message } => {
                    FaultKind::SyncError { status: *status, code: code.clone(), message: message.clone() }
                }
                K::JobFailure { code, message } => FaultKind::JobFailure { code: *code, message: message.clone() },
                K::Latency { duration } => FaultKind::Latency(*duration),
                K::DropConnection => FaultKind::DropConnection,
            };
            w.faults.push(Fault {
                server: f.cluster.clone(),
                method: f.method.clone(),
                path: f.path.clone(),
                kind,
                remaining: f.count,
                share: f.share,
            });
        }
        for p in &t.svm_peers {
            let pair = (at(&w, &p.svm)?, at(&w, &p.peer)?);
            w.svm_peers.push(pair);
        }
        for r in &t.relationships {
            let src =
                w.cluster_index(&r.source_cluster).ok_or_else(|| format!("unknown cluster `{}`", r.source_cluster))?;
            let dst = w
                .cluster_index(&r.destination_cluster)
                .ok_or_else(|| format!("unknown cluster `{}`", r.destination_cluster))?;
            let uuid = w.uuid();
            let mut rel = Relationship {
                uuid,
                src_cluster: src,
                dst_cluster: dst,
                src_path: r.source.clone(),
                dst_path: r.destination.clone(),
                state: parse_state(&r.state, "relationship state")?,
                policy: r.policy.clone(),
                identity_preservation: r.identity_preservation.clone(),
                exported: None,
                transfer: None,
                last_transfer_type: None,
                busy: false,
                transfers_done: 0,
            };
            for path in [&rel.src_path, &rel.dst_path] {
                let c = if path == &rel.src_path { src } else { dst };
                if w.volumes_of(c, path).is_empty() && !path.ends_with(':') {
                    return Err(format!("relationship path `{path}`: no such volume on {}", w.clusters[c].name));
                }
            }
            if rel.state != MirrorState::Uninitialized {
                let name = w.snapmirror_snapshot_name(&rel.uuid);
                let now = w.clock.wall();
                w.add_snapshot(&rel, &name, now);
                rel.exported = Some((name, now));
                rel.last_transfer_type = Some("initialize".into());
                rel.transfers_done = 1;
            }
            w.rels.push(rel);
        }
        Ok(w)
    }

    pub fn uuid(&mut self) -> String {
        self.counter += 1;
        let r: u64 = rand::random();
        format!(
            "{:08x}-{:04x}-11ee-{:04x}-{:012x}",
            (r >> 32) as u32,
            (r >> 16) as u16,
            (self.counter & 0xffff) as u16,
            self.counter * 7919 + (r & 0xfff)
        )
    }

    pub fn cluster_index(&self, name: &str) -> Option<usize> {
        self.clusters.iter().position(|c| c.name == name)
    }

    fn snapmirror_snapshot_name(&mut self, rel_uuid: &str) -> String {
        self.counter += 1;
        let stamp = humantime::format_rfc3339_seconds(self.clock.wall()).to_string();
        let stamp: String = stamp.chars().filter(|c| c.is_ascii_digit()).collect();
        format!("snapmirror.{rel_uuid}_{}.{}_{}", 2_159_190_000 + self.counter, &stamp[..8], &stamp[8..14])
    }

    /// Volumes behind a path: one for `svm:vol`, every volume of the SVM for `svm:`.
    pub fn volumes_of(&self, cluster: usize, path: &str) -> Vec<usize> {
        let Some((svm, vol)) = path.split_once(':') else { return vec![] };
        self.clusters[cluster]
            .volumes
            .iter()
            .enumerate()
            .filter(|(_, v)| v.svm == svm && (vol.is_empty() || v.name == vol))
            .map(|(i, _)| i)
            .collect()
    }

    fn add_snapshot(&mut self, rel: &Relationship, name: &str, at: SystemTime) {
        for (cluster, path) in [(rel.src_cluster, rel.src_path.clone()), (rel.dst_cluster, rel.dst_path.clone())] {
            for v in self.volumes_of(cluster, &path) {
                let uuid = self.uuid();
                self.clusters[cluster].volumes[v].snapshots.push(Snapshot {
                    uuid,
                    name: name.to_string(),
                    created: at,
                });
            }
        }
    }

    pub fn svm_index(&self, cluster: usize, name: &str) -> Option<usize> {
        self.clusters[cluster].svms.iter().position(|s| s.name == name)
    }

    pub fn rel_index(&self, uuid: &str) -> Option<usize> {
        self.rels.iter().position(|r| r.uuid == uuid)
    }

    /// Apply everything that became due, in time order.
    pub fn tick(&mut self) {
        let now = self.clock.now();
        // Transfers first: a quiesce job waits for the transfer it found running.
        for i in 0..self.rels.len() {
            let due = self.rels[i]
                .transfer
                .as_ref()
                .is_some_and(|t| t.state == TransferState::Transferring && t.finish_at <= now);
            if due {
                self.finish_transfer(i);
            }
        }
        let mut order: Vec<usize> = (0..self.jobs.len())
            .filter(|&j| self.jobs[j].ended_at.is_none() && self.jobs[j].finish_at <= now)
            .collect();
        order.sort_by_key(|&j| self.jobs[j].finish_at);
        for j in order {
            self.finish_job(j);
        }
        for job in &mut self.jobs {
            if job.ended_at.is_none() && job.state == JobState::Queued {
                job.state = JobState::Running;
            }
        }
        let expiry = self.settings.job_expiry;
        self.jobs.retain(|j| j.ended_at.is_none_or(|t| now.duration_since(t) < expiry));
    }

    fn finish_transfer(&mut self, i: usize) {
        let name = self.snapmirror_snapshot_name(&self.rels[i].uuid.clone());
        let started = self.rels[i].transfer.as_ref().map(|t| t.started).unwrap_or_else(|| self.clock.wall());
        let rel = self.rels[i].clone();
        self.add_snapshot(&rel, &name, started);
        let r = &mut self.rels[i];
        if let Some(t) = r.transfer.as_mut() {
            t.state = TransferState::Success;
            t.end = Some(self.clock.wall());
            t.bytes = 52_428_800;
        }
        r.exported = Some((name, started));
        r.last_transfer_type = r.transfer.as_ref().map(|t| t.ttype.clone());
        r.transfers_done += 1;
        if r.state == MirrorState::Uninitialized {
            r.state = MirrorState::Snapmirrored;
        }
    }

    fn finish_job(&mut self, j: usize) {
        let now = self.clock.wall();
        let job = self.jobs[j].clone();
        let result = match &job.failure {
            Some((code, msg)) => Err((*code, msg.clone())),
            None => self.apply(&job.effect),
        };
        let job = &mut self.jobs[j];
        job.end = Some(now);
        job.ended_at = Some(self.clock.now());
        match result {
            Ok(()) => {
                job.state = JobState::Success;
                job.message = "success".into();
                job.code = 0;
            }
            Err((code, msg)) => {
                job.state = JobState::Failure;
                job.message = msg;
                job.code = code;
            }
        }
        if let Effect::RelState { rel, .. } | Effect::Reverse { rel } | Effect::RelDelete { rel, .. } =
            &self.jobs[j].effect
            && let Some(i) = self.rel_index(rel)
        {
            self.rels[i].busy = false;
        }
    }

    /// Start a transfer of `ttype` on relationship `i`.
    pub(crate) fn start_transfer(&mut self, i: usize, ttype: &str) -> String {
        let uuid = self.uuid();
        let finish_at = self.clock.now() + self.settings.transfer_time;
        self.rels[i].transfer = Some(Transfer {
            uuid: uuid.clone(),
            ttype: ttype.into(),
            state: TransferState::Transferring,
            started: self.clock.wall(),
            end: None,
            finish_at,
            bytes: 0,
        });
        uuid
    }

    /// Start a job; `wait_for` delays its end (a quiesce waits for a running transfer).
    pub fn start_job(
        &mut self,
        cluster: usize,
        description: String,
        effect: Effect,
        wait_for: Option<Instant>,
    ) -> String {
        let uuid = self.uuid();
        let mut finish_at = self.clock.now() + self.settings.job_delay;
        if let Some(t) = wait_for {
            finish_at = finish_at.max(t);
        }
        let failure = self.pending_job_failure.take();
        self.jobs.push(Job {
            uuid: uuid.clone(),
            cluster,
            description,
            state: JobState::Queued,
            code: 0,
            message: String::new(),
            start: self.clock.wall(),
            end: None,
            finish_at,
            ended_at: None,
            effect,
            failure,
        });
        uuid
    }

    /// The jobs a cluster runs or ran (until they expire).
    pub fn jobs_of(&self, cluster: usize) -> impl Iterator<Item = &Job> {
        self.jobs.iter().filter(move |j| j.cluster == cluster)
    }

    pub fn job(&self, uuid: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.uuid == uuid)
    }
}
