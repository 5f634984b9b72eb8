//! drover: a cross-site disaster-recovery orchestrator for Kubernetes.
//!
//! This crate is the command line (`cli`), the composition root (`registry`: the one place
//! that lists the plugin crates, and external plugins) and the lab. Everything between a
//! runbook and a report is in `drover-core` (re-exported here as `runbook`, `engine`,
//! `journal`, `report`), which knows plugins only through `drover-api`.

pub mod cli;
pub mod external;
#[cfg(feature = "lab")]
pub mod lab;
pub mod notify;
pub mod registry;

pub use drover_core::{engine, journal, model, report, runbook};
