//! drover: a cross-site disaster-recovery orchestrator for Kubernetes.
//!
//! Data flows top to bottom: `cli` parses the command line, `runbook` turns YAML into a
//! checked model, `engine` runs its graph through `dyn Action`s from the `registry`,
//! `journal` makes every step durable and resumable, and `report` tells what happened.

pub mod cli;
pub mod engine;
pub mod external;
pub mod journal;
#[cfg(feature = "lab")]
pub mod lab;
pub mod registry;
pub mod report;
pub mod runbook;
