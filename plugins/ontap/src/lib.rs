//! NetApp ONTAP: SnapMirror and SVM-DR control over the ONTAP REST API. The simulator of that
//! API for tests and the lab lives in its own crate, `drover-ontap-sim`; both read the release
//! definitions in [`release`].
//!
//! Sites carry an `ontap:` section (`url`, `username`, `credentials: env:VAR`, optional
//! `ca_file`, `insecure`, `request_timeout`, `retries`). Relationships are addressed by their
//! destination path on the destination cluster: `svm_dr:` for SVM-DR, `svm_dr:vol` for a volume.

mod actions;
pub mod client;
pub mod error;
mod lookup;
pub mod model;
pub mod release;
mod watch;

use std::sync::Arc;

use drover_api::{Action, typed};

pub use client::OntapSite;

/// Every ONTAP action.
pub fn actions() -> Vec<Arc<dyn Action>> {
    vec![
        typed(actions::Wait),
        typed(actions::Get),
        typed(actions::List),
        typed(actions::Update),
        typed(actions::Quiesce),
        typed(actions::Break),
        typed(actions::Resync),
        typed(actions::Reverse),
        typed(actions::Release),
        typed(actions::SvmStart {}),
        typed(actions::SvmStop {}),
        typed(actions::VolumeClone),
        typed(actions::VolumeDelete),
    ]
}

/// The site sections this plugin reads.
pub fn site_sections() -> Vec<drover_api::SiteSection> {
    vec![drover_api::SiteSection::of::<client::OntapSite>("ontap", "an ONTAP cluster's REST API")]
}
