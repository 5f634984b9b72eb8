//! drover's core: everything between a runbook file and a report, knowing plugins only
//! through `drover-api`.
//!
//! The layers are separate crates so that the compiler keeps them one-way:
//!
//! ```text
//!   drover-model    the step graph, the run's events, the durable-sink and resume contracts
//!     ├─ drover-runbook   YAML → a checked runbook whose steps carry their resolved actions
//!     │    └─ drover-engine    runs the graph; writes events to a DurableSink
//!     └─ drover-journal   the DurableSink on disk; run state and resume read back from it
//!          └─ drover-report    what happened, from the run state
//! ```
//!
//! The engine never sees the plugin registry (a loaded runbook carries its actions) nor the
//! journal (only the sink trait); the journal never sees the engine.

pub use drover_engine as engine;
pub use drover_journal as journal;
pub use drover_model as model;
pub use drover_report as report;
pub use drover_runbook as runbook;
