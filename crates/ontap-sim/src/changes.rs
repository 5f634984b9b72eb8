//! The state changes the REST API asks for — relationship PATCH, transfers, DELETE, SVM state,
//! volume create, change and delete — validated with ONTAP's codes, each starting a job.

use drover_ontap::model::{MirrorState, SvmState, SvmSubtype, TransferState, VolumeType};

use serde_json::Value;

use super::topology::RepeatTransition;
use super::world::*;

impl World {
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
            if rel.state != MirrorState::BrokenOff {
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
        let target = match MirrorState::parse(&target) {
            Some(t @ (MirrorState::Paused | MirrorState::BrokenOff | MirrorState::Snapmirrored)) => t,
            Some(MirrorState::InSync | MirrorState::OutOfSync | MirrorState::Synchronizing) => {
                return Err(
                    ApiError::new(400, "13303831", "Invalid state for async SnapMirror relationship.").target("state")
                );
            }
            _ => {
                return Err(ApiError::new(400, "2", format!("\"{target}\" is an invalid value for field \"state\""))
                    .target("state"));
            }
        };
        let repeat = rel.state == target;
        if repeat {
            return match self.settings.repeat_transition {
                RepeatTransition::AcceptNoop => Ok(self.start_job(cluster, description, Effect::None, None)),
                RepeatTransition::Reject if target == MirrorState::Snapmirrored => {
                    Err(ApiError::new(400, "13303832", "SnapMirror relationship is already initialized."))
                }
                RepeatTransition::Reject => Err(ApiError::new(400, "13303818", "Invalid state transition requested.")),
            };
        }
        let invalid = matches!(
            (rel.state, target),
            (MirrorState::Uninitialized, MirrorState::BrokenOff)
                | (MirrorState::Uninitialized, MirrorState::Paused)
                | (MirrorState::BrokenOff, MirrorState::Paused)
        );
        if invalid {
            return Err(ApiError::new(400, "13303818", "Invalid state transition requested."));
        }
        // A resync rolls the destination back; ONTAP refuses it while the DR SVM serves clients.
        let resync = target == MirrorState::Snapmirrored && rel.state == MirrorState::BrokenOff;
        if resync && rel.is_svm_dr() {
            let name = rel.dst_path.trim_end_matches(':');
            if self.clusters[cluster].svms.iter().any(|s| s.name == name && s.state != SvmState::Stopped) {
                return Err(ApiError::new(
                    400,
                    "13303828",
                    format!(
                        "The destination SVM \"{name}\" must be stopped before the relationship is resynchronized."
                    ),
                ));
            }
        }
        if resync && query.flag("failback") && !rel.is_svm_dr() {
            return Err(ApiError::new(400, "13303828", "failback applies to SVM SnapMirror relationships only."));
        }
        // A quiesce waits for a running transfer to finish.
        let wait_for = match (&rel.transfer, target) {
            (Some(t), MirrorState::Paused) if t.state == TransferState::Transferring => Some(t.finish_at),
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
        if rel.transfer.as_ref().is_some_and(|t| t.state == TransferState::Transferring) {
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
            Some(t) if t.uuid == tuuid && t.state == TransferState::Transferring => {
                t.state = TransferState::Aborted;
                t.end = Some(self.clock.wall());
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
        let Some(asked) = body.get("state").and_then(Value::as_str) else {
            // Settings other than the state (a comment, say) change nothing the model keeps.
            return Ok(self.start_job(cluster, format!("PATCH /api/svm/svms/{uuid}"), Effect::None, None));
        };
        let target = match SvmState::parse(asked) {
            Some(t @ (SvmState::Running | SvmState::Stopped)) => t,
            _ => {
                return Err(ApiError::new(400, "2", format!("\"{asked}\" is an invalid value for field \"state\""))
                    .target("state"));
            }
        };
        let svm = self.clusters[cluster].svms[s].clone();
        if target == SvmState::Running && svm.subtype == SvmSubtype::DpDestination {
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
            self.clusters[cluster].svms[s].state =
                if target == SvmState::Running { SvmState::Starting } else { SvmState::Stopping };
        }
        Ok(self.start_job(
            cluster,
            format!("PATCH /api/svm/svms/{uuid}"),
            Effect::SvmState { cluster, svm: uuid.to_string(), target },
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
            vtype: body.get("type").and_then(Value::as_str).and_then(VolumeType::parse).unwrap_or(VolumeType::Rw),
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
