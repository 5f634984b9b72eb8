//! The Kubernetes actions. Each resolves kinds through discovery (so CRDs work like built-ins),
//! reads before it writes, and succeeds without a change when the cluster is already there.

pub mod apply;
pub mod check;
pub mod custom;
pub mod delete;
pub mod fence;
pub mod scale;
pub mod snapshot;
pub mod velero;
pub mod wait;
