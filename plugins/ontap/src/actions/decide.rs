//! What each state-changing action will do, decided from what it read — pure functions of
//! the typed state, so that `plan()` shows exactly what `run()` then does, and both are
//! tested without a cluster.

use crate::model::{MirrorState, Relationship, Svm, SvmState, SvmSubtype};

/// One change an action makes, in the order it makes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Abort the running transfer (its uuid).
    AbortTransfer(String),
    /// Let the running transfer finish first.
    AwaitTransfer,
    /// Stop the destination SVM (an SVM-DR resync needs it stopped).
    StopSvm(String),
    /// PATCH the relationship's state.
    SetState(MirrorState),
    /// PATCH an SVM's state.
    SetSvm(SvmState),
}

/// Why an action refuses to act: what and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub hint: String,
}

/// An action's decision: a one-line summary, the changes (none: already there), or a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub summary: String,
    pub changes: Vec<Change>,
    pub refusal: Option<Refusal>,
}

impl Decision {
    fn already(summary: String) -> Decision {
        Decision { summary, changes: vec![], refusal: None }
    }

    fn act(summary: String, changes: Vec<Change>) -> Decision {
        Decision { summary, changes, refusal: None }
    }

    fn refuse(mut self, message: String, hint: &str) -> Decision {
        self.refusal = Some(Refusal { message, hint: hint.to_string() });
        self
    }

    /// The plan's lines for the changes, naming their target.
    pub fn change_lines(&self, target: &str) -> Vec<String> {
        self.changes
            .iter()
            .map(|c| match c {
                Change::AbortTransfer(_) => "abort the running transfer".to_string(),
                Change::AwaitTransfer => "wait for the running transfer".to_string(),
                Change::StopSvm(svm) => {
                    format!("stop SVM {svm} if it runs (ONTAP resyncs an SVM-DR destination only when stopped)")
                }
                Change::SetState(MirrorState::BrokenOff) => {
                    format!("PATCH state broken_off on {target}: the destination becomes writable")
                }
                Change::SetState(s) => format!("PATCH state {s} on {target}"),
                Change::SetSvm(s) => format!("PATCH SVM {target} state {s}"),
            })
            .collect()
    }
}

/// Quiesce: pause transfers; a running transfer is aborted or awaited.
pub fn quiesce(rel: &Relationship, destination: &str, abort_transfer: bool) -> Decision {
    let state = rel.state;
    match state {
        MirrorState::Paused | MirrorState::BrokenOff => Decision::already(format!("{destination}: already {state}")),
        MirrorState::Uninitialized => Decision::already(format!("{destination}: uninitialized, nothing to quiesce")),
        _ => {
            let mut changes = vec![];
            if rel.transferring() {
                changes.push(match (&rel.transfer, abort_transfer) {
                    (Some(t), true) => Change::AbortTransfer(t.uuid.clone()),
                    _ => Change::AwaitTransfer,
                });
            }
            changes.push(Change::SetState(MirrorState::Paused));
            Decision::act(format!("quiesce {destination} ({state} → paused)"), changes)
        }
    }
}

/// Break: the destination becomes writable. An uninitialized relationship has no data.
pub fn break_off(rel: &Relationship, destination: &str) -> Decision {
    match rel.state {
        MirrorState::BrokenOff => Decision::already(format!("{destination}: already broken_off")),
        MirrorState::Uninitialized => {
            Decision::act(format!("break {destination} (uninitialized → broken_off)"), vec![]).refuse(
                format!("{destination} is uninitialized: there is no data to fail over to"),
                "initialize the relationship (a baseline transfer) before it can be broken",
            )
        }
        state => Decision::act(
            format!("break {destination} ({state} → broken_off)"),
            vec![Change::SetState(MirrorState::BrokenOff)],
        ),
    }
}

/// Resync: back to snapmirrored. From broken_off it rolls the destination back to the common
/// snapshot, so writes made there (`in_service` says why there are some) are lost: refused
/// unless discarded on purpose, in which case an SVM-DR destination's SVM is stopped first.
pub fn resync(
    rel: &Relationship,
    destination: &str,
    in_service: Option<&str>,
    dr_svm: Option<&Svm>,
    discard_destination_writes: bool,
) -> Decision {
    let state = rel.state;
    if state == MirrorState::Snapmirrored {
        // A transfer still running is waited for; nothing is changed.
        return Decision::already(format!("{destination}: already snapmirrored"));
    }
    let mut changes = vec![];
    let broken = state == MirrorState::BrokenOff;
    if broken && discard_destination_writes && rel.is_svm_dr() {
        let svm = destination.trim_end_matches(':').to_string();
        if dr_svm.is_none_or(|s| s.state != SvmState::Stopped) {
            changes.push(Change::StopSvm(svm));
        }
    }
    changes.push(Change::SetState(MirrorState::Snapmirrored));
    let d = Decision::act(format!("resync {destination} ({state} → snapmirrored)"), changes);
    match in_service {
        Some(why) if broken && !discard_destination_writes => d.refuse(
            format!(
                "refusing to resync {destination}: {why}; a resync rolls the destination back to the common snapshot and loses those writes"
            ),
            "to keep them, reverse the relationship instead (ontap.snapmirror.reverse); to discard them on purpose, set `discard_destination_writes: true`",
        ),
        _ => d,
    }
}

/// Start or stop an SVM. A dp_destination SVM starts only once its SVM-DR relationship is
/// broken off: the run refuses, the plan (where an earlier break will change it) says so.
pub fn set_svm(svm: &Svm, name: &str, target: SvmState) -> Decision {
    if svm.state == target {
        return Decision::already(format!("SVM {name}: already {target}"));
    }
    let d = Decision::act(format!("SVM {name}: {} → {target}", svm.state), vec![Change::SetSvm(target)]);
    if target == SvmState::Running && svm.subtype == Some(SvmSubtype::DpDestination) {
        return d.refuse(
            format!("SVM `{name}` is still a dp_destination: its SVM-DR relationship is not broken"),
            "break the relationship first (ontap.snapmirror.break)",
        );
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Transfer, TransferState};

    fn rel(state: MirrorState, transfer: Option<TransferState>) -> Relationship {
        Relationship {
            uuid: "r1".into(),
            state,
            destination: Endpoint { path: "svm_dr:".into(), ..Default::default() },
            transfer: transfer.map(|state| Transfer { uuid: "t1".into(), state }),
            ..Relationship::default()
        }
    }

    #[test]
    fn quiesce_aborts_or_awaits_a_running_transfer_before_pausing() {
        let r = rel(MirrorState::Snapmirrored, Some(TransferState::Transferring));
        assert_eq!(
            quiesce(&r, "svm_dr:", true).changes,
            [Change::AbortTransfer("t1".into()), Change::SetState(MirrorState::Paused)]
        );
        assert_eq!(
            quiesce(&r, "svm_dr:", false).changes,
            [Change::AwaitTransfer, Change::SetState(MirrorState::Paused)]
        );
        for done in [MirrorState::Paused, MirrorState::BrokenOff, MirrorState::Uninitialized] {
            assert!(quiesce(&rel(done, None), "svm_dr:", true).changes.is_empty(), "{done}");
        }
    }

    #[test]
    fn break_refuses_an_uninitialized_relationship_and_is_done_when_broken() {
        assert!(break_off(&rel(MirrorState::Uninitialized, None), "d:").refusal.is_some());
        assert!(break_off(&rel(MirrorState::BrokenOff, None), "d:").changes.is_empty());
        assert_eq!(
            break_off(&rel(MirrorState::Paused, None), "d:").changes,
            [Change::SetState(MirrorState::BrokenOff)]
        );
    }

    #[test]
    fn resync_refuses_to_discard_writes_unless_told_and_then_stops_the_dr_svm_first() {
        let r = rel(MirrorState::BrokenOff, None);
        let running = Svm { name: "svm_dr".into(), state: SvmState::Running, ..Svm::default() };
        let refused = resync(&r, "svm_dr:", Some("the destination SVM is running"), Some(&running), false);
        assert!(refused.refusal.unwrap().message.contains("refusing to resync svm_dr:"));
        let told = resync(&r, "svm_dr:", Some("the destination SVM is running"), Some(&running), true);
        assert_eq!(told.refusal, None);
        assert_eq!(told.changes, [Change::StopSvm("svm_dr".into()), Change::SetState(MirrorState::Snapmirrored)]);
        assert!(resync(&rel(MirrorState::Snapmirrored, None), "svm_dr:", None, None, false).changes.is_empty());
    }

    #[test]
    fn a_dp_destination_svm_may_not_start() {
        let svm = Svm { state: SvmState::Stopped, subtype: Some(SvmSubtype::DpDestination), ..Svm::default() };
        assert!(set_svm(&svm, "svm_dr", SvmState::Running).refusal.is_some());
        assert_eq!(set_svm(&svm, "svm_dr", SvmState::Stopped).changes, []);
    }
}
