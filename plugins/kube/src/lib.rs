//! Kubernetes: the actions `kube.apply`, `kube.scale`, `kube.wait`, `kube.delete`,
//! `kube.fence`, `kube.check`, the restore pipeline (`kube.restore`, `kube.export`, Velero's
//! backup format) over the `kube` crate and aws-sdk-s3. The Kubernetes API simulator for tests
//! and the lab lives in its own crate, `drover-kube-sim`, out of the production binary.
//!
//! Sites carry a `kube:` section: `kubeconfig` (default `$KUBECONFIG`, then
//! `~/.kube/config`), `context` (default the current one), or `in_cluster: true`; and
//! `request_timeout` (default 10s).

pub mod actions;
pub mod changes;
pub mod client;
pub mod fenced;
pub mod labels;
pub mod lists;
pub mod manifests;
pub mod patch;
pub mod rbac;
pub mod restore;
pub mod select;
pub mod velero;

use std::sync::Arc;

use drover_api::{Action, typed};

pub use client::{Kube, KubeSite};

/// Every Kubernetes action.
pub fn actions() -> Vec<Arc<dyn Action>> {
    vec![
        typed(actions::apply::Apply),
        typed(actions::scale::Scale),
        typed(actions::wait::Wait),
        typed(actions::delete::Delete),
        typed(actions::fence::Fence),
        typed(actions::check::Check),
        typed(actions::snapshot::VolumeSnapshot),
        typed(actions::velero::Backup),
        typed(actions::velero::Restore),
        typed(actions::velero::Schedule),
        typed(restore::Restore),
        typed(restore::export::Export),
    ]
}

/// The site sections this plugin reads (`s3:` for Velero backups is drover-api's).
pub fn site_sections() -> Vec<drover_api::SiteSection> {
    vec![drover_api::SiteSection::of::<client::KubeSite>("kube", "a Kubernetes cluster's API")]
}
