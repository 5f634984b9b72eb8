//! The simulated clusters and their shared replication model.
//!
//! State changes follow `shared/docs/ONTAP-REST.md`: validation errors come back
//! synchronously (400 with an ONTAP code); accepted changes start a job whose success only
//! means the transition started, and the object reaches its target state when the job ends.
//! Time advances lazily: every request first applies what became due (`tick`).

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::topology::{RepeatTransition, Settings, Topology};

/// An error the API answers with: HTTP status, ONTAP code, message, target field.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub target: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { status, code: code.into(), message: message.into(), target: None }
    }

    pub fn target(mut self, t: &str) -> Self {
        self.target = Some(t.to_string());
        self
    }

    pub fn not_found() -> Self {
        ApiError::new(404, "4", "entry doesn't exist").target("uuid")
    }

    pub fn body(&self) -> Value {
        let mut e = json!({ "message": self.message, "code": self.code });
        if let Some(t) = &self.target {
            e["target"] = json!(t);
        }
        json!({ "error": e })
    }
}

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

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().replace('Z', "+00:00")
}

/// ISO-8601 duration as ONTAP writes lag_time: `PT8H35M42S`.
pub fn iso_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::from("PT");
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    out.push_str(&format!("{sec}S"));
    out
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
    fn start_transfer(&mut self, i: usize, ttype: &str) -> String {
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

    /// Validate a relationship state PATCH and start its job.
    pub fn patch_relationship(
        &mut self,
        cluster: usize,
        uuid: &str,
        body: &Value,
        query: &Query,
    ) -> Result<String, ApiError> {
        let i =
            self.rel_index(uuid).filter(|&i| self.rels[i].dst_cluster == cluster).ok_or_else(ApiError::not_found)?;
        if self.rels[i].busy {
            return Err(ApiError::new(
                409,
                "6619715",
                "Modification of relationship is in progress. Retry the command after a few minutes.",
            ));
        }
        let target = body.get("state").and_then(Value::as_str).map(str::to_string);
        let new_src = body.pointer("/source/path").and_then(Value::as_str);
        let new_dst = body.pointer("/destination/path").and_then(Value::as_str);
        let rel = self.rels[i].clone();
        let description = format!("PATCH /api/snapmirror/relationships/{uuid}");
        if new_src.is_some() || new_dst.is_some() {
            // Reverse resync: the paths must be exactly the current ones, swapped.
            if new_src != Some(rel.dst_path.as_str()) || new_dst != Some(rel.src_path.as_str()) {
                return Err(ApiError::new(
                    400,
                    "13304120",
                    "The source and destination paths must be the current paths of the relationship, swapped.",
                ));
            }
            if target.as_deref() != Some("snapmirrored") {
                return Err(ApiError::new(
                    400,
                    "13303837",
                    "Reversing a relationship requires \"state\": \"snapmirrored\".",
                )
                .target("state"));
            }
            if rel.state != "broken_off" {
                return Err(ApiError::new(
                    400,
                    "13303833",
                    "The requested state change is not possible: the relationship must be broken off before it is reversed.",
                ));
            }
            if rel.exported.is_none() {
                return Err(ApiError::new(
                    400,
                    "13303810",
                    "Transition to snapmirrored state failed. Reason: no common snapshot found.",
                ));
            }
            if !self.clusters[rel.src_cluster].reachable {
                return Err(ApiError::new(
                    400,
                    "13303816",
                    "Could not retrieve the state of the peer cluster. Wait a few minutes and retry.",
                ));
            }
            self.rels[i].busy = true;
            return Ok(self.start_job(cluster, description, Effect::Reverse { rel: uuid.to_string() }, None));
        }
        let Some(target) = target else {
            // A PATCH of settings alone (policy, schedule, throttle) changes no state.
            if body.as_object().is_some_and(|m| !m.is_empty()) {
                if let Some(policy) = body.pointer("/policy/name").and_then(Value::as_str) {
                    self.rels[i].policy = policy.to_string();
                }
                return Ok(self.start_job(cluster, description, Effect::None, None));
            }
            return Err(ApiError::new(400, "2", "The request body names nothing to change.").target("state"));
        };
        match target.as_str() {
            "paused" | "broken_off" | "snapmirrored" => {}
            "in_sync" | "out_of_sync" | "synchronizing" => {
                return Err(
                    ApiError::new(400, "13303831", "Invalid state for async SnapMirror relationship.").target("state")
                );
            }
            other => {
                return Err(ApiError::new(400, "2", format!("\"{other}\" is an invalid value for field \"state\""))
                    .target("state"));
            }
        }
        let repeat = rel.state == target;
        if repeat {
            return match self.settings.repeat_transition {
                RepeatTransition::AcceptNoop => Ok(self.start_job(cluster, description, Effect::None, None)),
                RepeatTransition::Reject if target == "snapmirrored" => {
                    Err(ApiError::new(400, "13303832", "SnapMirror relationship is already initialized."))
                }
                RepeatTransition::Reject => Err(ApiError::new(400, "13303818", "Invalid state transition requested.")),
            };
        }
        let invalid = matches!(
            (rel.state.as_str(), target.as_str()),
            ("uninitialized", "broken_off") | ("uninitialized", "paused") | ("broken_off", "paused")
        );
        if invalid {
            return Err(ApiError::new(400, "13303818", "Invalid state transition requested."));
        }
        // A resync rolls the destination back; ONTAP refuses it while the DR SVM serves clients.
        if target == "snapmirrored" && rel.state == "broken_off" && rel.is_svm_dr() {
            let name = rel.dst_path.trim_end_matches(':');
            if self.clusters[cluster].svms.iter().any(|s| s.name == name && s.state != "stopped") {
                return Err(ApiError::new(
                    400,
                    "13303828",
                    format!(
                        "The destination SVM \"{name}\" must be stopped before the relationship is resynchronized."
                    ),
                ));
            }
        }
        if target == "snapmirrored" && rel.state == "broken_off" && query.flag("failback") && !rel.is_svm_dr() {
            return Err(ApiError::new(400, "13303828", "failback applies to SVM SnapMirror relationships only."));
        }
        // A quiesce waits for a running transfer to finish.
        let wait_for = match (&rel.transfer, target.as_str()) {
            (Some(t), "paused") if t.state == "transferring" => Some(t.finish_at),
            _ => None,
        };
        let quick = body.get("quick_resync").and_then(Value::as_bool).unwrap_or(false);
        self.rels[i].busy = true;
        Ok(self.start_job(cluster, description, Effect::RelState { rel: uuid.to_string(), target, quick }, wait_for))
    }

    /// `POST .../transfers`: an update (or initialize). Returns the transfer uuid.
    pub fn post_transfer(&mut self, cluster: usize, uuid: &str) -> Result<String, ApiError> {
        let i =
            self.rel_index(uuid).filter(|&i| self.rels[i].dst_cluster == cluster).ok_or_else(ApiError::not_found)?;
        let rel = &self.rels[i];
        if rel.transfer.as_ref().is_some_and(|t| t.state == "transferring") {
            return Err(ApiError::new(409, "13303812", "Another transfer is in progress."));
        }
        if !self.clusters[rel.src_cluster].reachable {
            return Err(ApiError::new(
                400,
                "13303844",
                "Update operation failed. Reason: the source cluster is unreachable.",
            ));
        }
        match rel.state.as_str() {
            "uninitialized" => Ok(self.start_transfer(i, "initialize")),
            "snapmirrored" => Ok(self.start_transfer(i, "update")),
            "broken_off" => Err(ApiError::new(
                400,
                "13303844",
                "Update operation failed. Reason: the relationship is broken off; resync it first.",
            )),
            _ => Err(ApiError::new(400, "13303844", "Update operation failed. Reason: the relationship is quiesced.")),
        }
    }

    pub fn abort_transfer(&mut self, cluster: usize, uuid: &str, tuuid: &str) -> Result<(), ApiError> {
        let i =
            self.rel_index(uuid).filter(|&i| self.rels[i].dst_cluster == cluster).ok_or_else(ApiError::not_found)?;
        match self.rels[i].transfer.as_mut() {
            Some(t) if t.uuid == tuuid && t.state == "transferring" => {
                t.state = "aborted".into();
                t.end = Some(SystemTime::now());
                Ok(())
            }
            Some(t) if t.uuid == tuuid => Err(ApiError::new(400, "13303849", "Invalid transfer state for abort.")),
            _ => Err(ApiError::not_found()),
        }
    }

    pub fn delete_relationship(&mut self, cluster: usize, uuid: &str, query: &Query) -> Result<String, ApiError> {
        let i =
            self.rel_index(uuid).filter(|&i| self.rels[i].dst_cluster == cluster).ok_or_else(ApiError::not_found)?;
        if self.rels[i].busy {
            return Err(ApiError::new(
                409,
                "6619715",
                "Modification of relationship is in progress. Retry the command after a few minutes.",
            ));
        }
        let keep = query.flag("source_info_only") || query.flag("destination_only");
        self.rels[i].busy = true;
        Ok(self.start_job(
            cluster,
            format!("DELETE /api/snapmirror/relationships/{uuid}"),
            Effect::RelDelete { rel: uuid.to_string(), keep_snapshots: keep },
            None,
        ))
    }

    pub fn patch_svm(&mut self, cluster: usize, uuid: &str, body: &Value) -> Result<String, ApiError> {
        let s = self.clusters[cluster].svms.iter().position(|s| s.uuid == uuid).ok_or_else(ApiError::not_found)?;
        let Some(target) = body.get("state").and_then(Value::as_str) else {
            // Settings other than the state (a comment, say) change nothing the model keeps.
            return Ok(self.start_job(cluster, format!("PATCH /api/svm/svms/{uuid}"), Effect::None, None));
        };
        if target != "running" && target != "stopped" {
            return Err(ApiError::new(400, "2", format!("\"{target}\" is an invalid value for field \"state\""))
                .target("state"));
        }
        let svm = self.clusters[cluster].svms[s].clone();
        if target == "running" && svm.subtype == "dp_destination" {
            return Err(ApiError::new(
                400,
                "13434880",
                format!(
                    "Failed to modify SVM \"{}\": a dp-destination SVM cannot be started while its SnapMirror relationship is not broken off.",
                    svm.name
                ),
            ));
        }
        if svm.state != target {
            self.clusters[cluster].svms[s].state = if target == "running" { "starting" } else { "stopping" }.into();
        }
        Ok(self.start_job(
            cluster,
            format!("PATCH /api/svm/svms/{uuid}"),
            Effect::SvmState { cluster, svm: uuid.to_string(), target: target.to_string() },
            None,
        ))
    }

    pub fn create_volume(&mut self, cluster: usize, body: &Value) -> Result<(String, String), ApiError> {
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::new(400, "2", "missing field \"name\"").target("name"))?;
        let svm = body
            .pointer("/svm/name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::new(400, "2", "missing field \"svm.name\"").target("svm.name"))?;
        if self.svm_index(cluster, svm).is_none() {
            return Err(ApiError::new(404, "2621462", format!("SVM \"{svm}\" does not exist.")).target("svm.name"));
        }
        let c = &self.clusters[cluster];
        if c.volumes.iter().any(|v| v.name == name && v.svm == svm) {
            return Err(ApiError::new(409, "917526", format!("Duplicate volume name {name}.")).target("name"));
        }
        let clone = body.get("clone");
        let is_clone = clone.and_then(|c| c.get("is_flexclone")).and_then(Value::as_bool).unwrap_or(false);
        let mut clone_of = None;
        let mut snapshots = vec![];
        if is_clone {
            let parent = clone.and_then(|c| c.pointer("/parent_volume/name")).and_then(Value::as_str).unwrap_or("");
            let Some(p) = c.volumes.iter().find(|v| v.name == parent && v.svm == svm) else {
                return Err(ApiError::new(404, "524601", format!("Parent volume \"{parent}\" not found."))
                    .target("clone.parent_volume.name"));
            };
            let snap = match clone.and_then(|c| c.pointer("/parent_snapshot/name")).and_then(Value::as_str) {
                Some(s) => s.to_string(),
                None => p.snapshots.last().map(|s| s.name.clone()).unwrap_or_default(),
            };
            let Some(base) = p.snapshots.iter().find(|s| s.name == snap) else {
                return Err(ApiError::new(
                    400,
                    "524597",
                    format!("Failed to create clone: snapshot \"{snap}\" does not exist on volume \"{parent}\"."),
                ));
            };
            snapshots.push(base.clone());
            clone_of = Some((parent.to_string(), snap));
        }
        let uuid = self.uuid();
        let volume = Volume {
            uuid: uuid.clone(),
            name: name.to_string(),
            svm: svm.to_string(),
            vtype: body.get("type").and_then(Value::as_str).unwrap_or("rw").to_string(),
            nas_path: body.pointer("/nas/path").and_then(Value::as_str).map(str::to_string),
            clone_of,
            snapshots,
        };
        let job =
            self.start_job(cluster, "POST /api/storage/volumes".into(), Effect::CreateVolume { cluster, volume }, None);
        Ok((job, uuid))
    }

    pub fn delete_volume(&mut self, cluster: usize, uuid: &str) -> Result<String, ApiError> {
        let c = &self.clusters[cluster];
        let v = c.volumes.iter().find(|v| v.uuid == uuid).ok_or_else(ApiError::not_found)?;
        if c.volumes.iter().any(|o| o.clone_of.as_ref().is_some_and(|(p, _)| p == &v.name) && o.svm == v.svm) {
            return Err(ApiError::new(409, "524615", "Failed to delete volume because it has one or more clones."));
        }
        Ok(self.start_job(
            cluster,
            format!("DELETE /api/storage/volumes/{uuid}"),
            Effect::DeleteVolume { cluster, uuid: uuid.to_string() },
            None,
        ))
    }

    pub fn patch_volume(&mut self, cluster: usize, uuid: &str, body: &Value) -> Result<(), ApiError> {
        let v = self.clusters[cluster].volumes.iter_mut().find(|v| v.uuid == uuid).ok_or_else(ApiError::not_found)?;
        if let Some(path) = body.pointer("/nas/path").and_then(Value::as_str) {
            v.nas_path = if path.is_empty() { None } else { Some(path.to_string()) };
        }
        Ok(())
    }
}

/// Query parameters of a request.
#[derive(Debug, Clone, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A boolean query flag; NetApp's Python client sends `True`.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}
