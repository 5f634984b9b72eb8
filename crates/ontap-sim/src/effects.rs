//! What a job does when it ends: the state change it was started for (a break makes the
//! destination writable, a resync rolls it back to the common snapshot, a reverse swaps the
//! ends), or the ONTAP error it fails with.

use drover_ontap::model::{MirrorState, SvmState, SvmSubtype, TransferState, VolumeType};

use super::world::*;

impl World {
    pub(crate) fn set_destination_writable(&mut self, i: usize, writable: bool) {
        let (c, path) = (self.rels[i].dst_cluster, self.rels[i].dst_path.clone());
        for v in self.volumes_of(c, &path) {
            self.clusters[c].volumes[v].vtype = if writable { VolumeType::Rw } else { VolumeType::Dp };
        }
        if self.rels[i].is_svm_dr() {
            let svm = path.trim_end_matches(':');
            if let Some(s) = self.svm_index(c, svm) {
                self.clusters[c].svms[s].subtype =
                    if writable { SvmSubtype::Default } else { SvmSubtype::DpDestination };
            }
        }
    }

    pub(crate) fn apply(&mut self, effect: &Effect) -> Result<(), (u64, String)> {
        match effect {
            Effect::None => Ok(()),
            Effect::RelState { rel, target, .. } => {
                let i = self.rel_index(rel).ok_or((4, "entry doesn't exist".to_string()))?;
                let from = self.rels[i].state;
                match (from, *target) {
                    (_, MirrorState::Paused) => self.rels[i].state = MirrorState::Paused,
                    (_, MirrorState::BrokenOff) => {
                        if let Some(t) = self.rels[i].transfer.as_mut()
                            && t.state == TransferState::Transferring
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
                                    .is_some_and(|s| self.clusters[sc].svms[s].state == SvmState::Running);
                            if source_running {
                                return Err((13303808, "Transition to broken_off state failed. Reason: the source SVM must be stopped for identity-preserving SVM DR.".into()));
                            }
                        }
                        self.rels[i].state = MirrorState::BrokenOff;
                        self.set_destination_writable(i, true);
                        if self.settings.auto_start_dr_svm && self.rels[i].is_svm_dr() {
                            let (c, svm) =
                                (self.rels[i].dst_cluster, self.rels[i].dst_path.trim_end_matches(':').to_string());
                            if let Some(s) = self.svm_index(c, &svm) {
                                self.clusters[c].svms[s].state = SvmState::Running;
                            }
                        }
                    }
                    (MirrorState::BrokenOff, MirrorState::Snapmirrored) => {
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
                        self.rels[i].state = MirrorState::Snapmirrored;
                        self.start_transfer(i, "resync");
                    }
                    (MirrorState::Uninitialized, MirrorState::Snapmirrored) => {
                        self.start_transfer(i, "initialize");
                    }
                    (_, MirrorState::Snapmirrored) => self.rels[i].state = MirrorState::Snapmirrored,
                    _ => {}
                }
                Ok(())
            }
            Effect::Reverse { rel } => {
                let i = self.rel_index(rel).ok_or((4, "entry doesn't exist".to_string()))?;
                let r = &mut self.rels[i];
                std::mem::swap(&mut r.src_cluster, &mut r.dst_cluster);
                std::mem::swap(&mut r.src_path, &mut r.dst_path);
                r.state = MirrorState::Snapmirrored;
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
                s.state = *target;
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
}
