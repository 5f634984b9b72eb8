//! What a resumed run already has: outcomes, approvals, checkpoints. The journal reads it
//! back from disk; the engine starts from it.

use std::collections::{BTreeMap, BTreeSet};

use drover_api::Outputs;
use serde_json::Value;

use crate::events::Outcome;

/// What the journal says was already done, for `resume`.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    pub forced: bool,
    pub done: BTreeMap<String, (Outcome, Outputs)>,
    pub approved: BTreeMap<String, String>,
    pub checkpoints: BTreeMap<String, Value>,
    /// Steps an earlier process started (some attempt began), finished or not.
    pub started: BTreeSet<String>,
    /// Params changed for the rest of the run (`resume --param`), journaled with the resume.
    pub changed_params: BTreeMap<String, Value>,
}
