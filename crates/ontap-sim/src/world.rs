//! The simulated clusters and their shared replication model.
//!
//! State changes follow `shared/docs/ONTAP-REST.md`: validation errors come back
//! synchronously (400 with an ONTAP code); accepted changes start a job whose success only
//! means the transition started, and the object reaches its target state when the job ends.
//! Time advances lazily: every request first applies what became due (`tick`).

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::topology::{Settings, Topology};
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
    pub vtype: String,
    pub nas_path: Option<String>,
    pub clone_of: Option<(String, String)>,
    pub snapshots: Vec<Snapshot>,
}

#[derive(Debug, Clone)]
pub struct Svm {
    pub uuid: String,
    pub name: String,
    pub state: String,
    pub subtype: String,
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
    pub state: String,
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
    pub state: String,
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
    RelState { rel: String, target: String, quick: bool },
    Reverse { rel: String },
    RelDelete { rel: String, keep_snapshots: bool },
    SvmState { cluster: usize, svm: String, target: String },
    CreateVolume { cluster: usize, volume: Volume },
    DeleteVolume { cluster: usize, uuid: String },
}

#[derive(Debug, Clone)]
pub struct Job {
    pub uuid: String,
    pub cluster: usize,
    pub description: String,
    pub state: String,
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
#[derive(Debug, Clone)]
pub struct Fault {
    /// Which cluster (by name); None for all.
    pub cluster: Option<String>,
    pub method: Option<String>,
    /// Substring of the request path.
    pub path: Option<String>,
    pub kind: FaultKind,
    /// Applies to this many matching requests (None: all).
    pub remaining: Option<u32>,
    /// Applies to this share of matching requests (1.0: every one).
    pub share: f64,
}

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
        };
        for c in &t.clusters {
            let uuid = w.uuid();
            let svms = c
                .svms
                .iter()
                .map(|s| Svm {
                    uuid: w.uuid(),
                    name: s.name.clone(),
                    state: s.state.clone(),
                    subtype: s.subtype.clone(),
                })
                .collect();
            let volumes = c
                .volumes
                .iter()
                .map(|v| Volume {
                    uuid: w.uuid(),
                    name: v.name.clone(),
                    svm: v.svm.clone(),
                    vtype: v.vtype.clone(),
                    nas_path: v.junction.clone(),
                    clone_of: None,
                    snapshots: vec![],
                })
                .collect();
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
                cluster: f.cluster.clone(),
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
                state: r.state.clone(),
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
            if rel.state != "uninitialized" {
                let name = w.snapmirror_snapshot_name(&rel.uuid);
                let now = SystemTime::now();
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
        let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
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
        let now = Instant::now();
        // Transfers first: a quiesce job waits for the transfer it found running.
        for i in 0..self.rels.len() {
            let due = self.rels[i].transfer.as_ref().is_some_and(|t| t.state == "transferring" && t.finish_at <= now);
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
            if job.ended_at.is_none() && job.state == "queued" {
                job.state = "running".into();
            }
        }
        let expiry = self.settings.job_expiry;
        self.jobs.retain(|j| j.ended_at.is_none_or(|t| now.duration_since(t) < expiry));
    }

    fn finish_transfer(&mut self, i: usize) {
        let name = self.snapmirror_snapshot_name(&self.rels[i].uuid.clone());
        let started = self.rels[i].transfer.as_ref().map(|t| t.started).unwrap_or_else(SystemTime::now);
        let rel = self.rels[i].clone();
        self.add_snapshot(&rel, &name, started);
        let r = &mut self.rels[i];
        if let Some(t) = r.transfer.as_mut() {
            t.state = "success".into();
            t.end = Some(SystemTime::now());
            t.bytes = 52_428_800;
        }
        r.exported = Some((name, started));
        r.last_transfer_type = r.transfer.as_ref().map(|t| t.ttype.clone());
        r.transfers_done += 1;
        if r.state == "uninitialized" {
            r.state = "snapmirrored".into();
        }
    }

    fn finish_job(&mut self, j: usize) {
        let now = SystemTime::now();
        let job = self.jobs[j].clone();
        let result = match &job.failure {
            Some((code, msg)) => Err((*code, msg.clone())),
            None => self.apply(&job.effect),
        };
        let job = &mut self.jobs[j];
        job.end = Some(now);
        job.ended_at = Some(Instant::now());
        match result {
            Ok(()) => {
                job.state = "success".into();
                job.message = "success".into();
                job.code = 0;
            }
            Err((code, msg)) => {
                job.state = "failure".into();
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
        let finish_at = Instant::now() + self.settings.transfer_time;
        self.rels[i].transfer = Some(Transfer {
            uuid: uuid.clone(),
            ttype: ttype.into(),
            state: "transferring".into(),
            started: SystemTime::now(),
            end: None,
            finish_at,
            bytes: 0,
        });
        uuid
    }

    fn set_destination_writable(&mut self, i: usize, writable: bool) {
        let (c, path) = (self.rels[i].dst_cluster, self.rels[i].dst_path.clone());
        for v in self.volumes_of(c, &path) {
            self.clusters[c].volumes[v].vtype = if writable { "rw" } else { "dp" }.into();
        }
        if self.rels[i].is_svm_dr() {
            let svm = path.trim_end_matches(':');
            if let Some(s) = self.svm_index(c, svm) {
                self.clusters[c].svms[s].subtype = if writable { "default" } else { "dp_destination" }.into();
            }
        }
    }

    fn apply(&mut self, effect: &Effect) -> Result<(), (u64, String)> {
        match effect {
            Effect::None => Ok(()),
            Effect::RelState { rel, target, .. } => {
                let i = self.rel_index(rel).ok_or((4, "entry doesn't exist".to_string()))?;
                let from = self.rels[i].state.clone();
                match (from.as_str(), target.as_str()) {
                    (_, "paused") => self.rels[i].state = "paused".into(),
                    (_, "broken_off") => {
                        if let Some(t) = self.rels[i].transfer.as_mut()
                            && t.state == "transferring"
                        {
                            return Err((
                                13303808,
                                "Transition to broken_off state failed. Reason: Another transfer is in progress."
                                    .into(),
                            ));
                        }
                        if self.settings.break_requires_source_stopped
                            && self.rels[i].is_svm_dr()
                            && self.rels[i].identity_preservation.as_deref() == Some("full")
                        {
                            let (sc, svm) =
                                (self.rels[i].src_cluster, self.rels[i].src_path.trim_end_matches(':').to_string());
                            let source_running = self.clusters[sc].reachable
                                && self
                                    .svm_index(sc, &svm)
                                    .is_some_and(|s| self.clusters[sc].svms[s].state == "running");
                            if source_running {
                                return Err((13303808, "Transition to broken_off state failed. Reason: the source SVM must be stopped for identity-preserving SVM DR.".into()));
                            }
                        }
                        self.rels[i].state = "broken_off".into();
                        self.set_destination_writable(i, true);
                        if self.settings.auto_start_dr_svm && self.rels[i].is_svm_dr() {
                            let (c, svm) =
                                (self.rels[i].dst_cluster, self.rels[i].dst_path.trim_end_matches(':').to_string());
                            if let Some(s) = self.svm_index(c, &svm) {
                                self.clusters[c].svms[s].state = "running".into();
                            }
                        }
                    }
                    ("broken_off", "snapmirrored") => {
                        // Resync: roll the destination back to the newest common snapshot.
                        let Some((common, _)) = self.rels[i].exported.clone() else {
                            return Err((
                                13303810,
                                "Transition to snapmirrored state failed. Reason: no common snapshot found.".into(),
                            ));
                        };
                        let (c, path) = (self.rels[i].dst_cluster, self.rels[i].dst_path.clone());
                        for v in self.volumes_of(c, &path) {
                            let snaps = &mut self.clusters[c].volumes[v].snapshots;
                            if let Some(pos) = snaps.iter().position(|s| s.name == common) {
                                snaps.truncate(pos + 1);
                            }
                        }
                        self.set_destination_writable(i, false);
                        self.rels[i].state = "snapmirrored".into();
                        self.start_transfer(i, "resync");
                    }
                    ("uninitialized", "snapmirrored") => {
                        self.start_transfer(i, "initialize");
                    }
                    (_, "snapmirrored") => self.rels[i].state = "snapmirrored".into(),
                    _ => {}
                }
                Ok(())
            }
            Effect::Reverse { rel } => {
                let i = self.rel_index(rel).ok_or((4, "entry doesn't exist".to_string()))?;
                let r = &mut self.rels[i];
                std::mem::swap(&mut r.src_cluster, &mut r.dst_cluster);
                std::mem::swap(&mut r.src_path, &mut r.dst_path);
                r.state = "snapmirrored".into();
                // The new destination (the original source) becomes the protected copy.
                self.set_destination_writable(i, false);
                self.start_transfer(i, "resync");
                Ok(())
            }
            Effect::RelDelete { rel, keep_snapshots } => {
                let i = self.rel_index(rel).ok_or((4, "entry doesn't exist".to_string()))?;
                let r = self.rels.remove(i);
                if !keep_snapshots {
                    let prefix = format!("snapmirror.{}_", r.uuid);
                    for (c, path) in [(r.src_cluster, r.src_path.clone()), (r.dst_cluster, r.dst_path.clone())] {
                        for v in self.volumes_of(c, &path) {
                            self.clusters[c].volumes[v].snapshots.retain(|s| !s.name.starts_with(&prefix));
                        }
                    }
                }
                Ok(())
            }
            Effect::SvmState { cluster, svm, target } => {
                let s = self.clusters[*cluster]
                    .svms
                    .iter_mut()
                    .find(|s| s.uuid == *svm)
                    .ok_or((4, "entry doesn't exist".to_string()))?;
                s.state = target.clone();
                Ok(())
            }
            Effect::CreateVolume { cluster, volume } => {
                self.clusters[*cluster].volumes.push(volume.clone());
                Ok(())
            }
            Effect::DeleteVolume { cluster, uuid } => {
                self.clusters[*cluster].volumes.retain(|v| v.uuid != *uuid);
                Ok(())
            }
        }
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
        let mut finish_at = Instant::now() + self.settings.job_delay;
        if let Some(t) = wait_for {
            finish_at = finish_at.max(t);
        }
        let failure = self.pending_job_failure.take();
        self.jobs.push(Job {
            uuid: uuid.clone(),
            cluster,
            description,
            state: "queued".into(),
            code: 0,
            message: String::new(),
            start: SystemTime::now(),
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
