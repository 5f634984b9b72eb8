//! What an action's read-only `plan()` reports.

use serde::{Deserialize, Serialize};

use crate::Outputs;

/// The result of a read-only look at the world: what would change, and whether it can.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// One line, e.g. "break svm_dr: (snapmirrored → broken_off)" or "already broken_off".
    pub summary: String,
    /// The changes the run would make, one line each; empty when nothing needs to change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Preconditions checked against the real system.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// Outputs the run is expected to produce, so later steps can be planned too.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub outputs: Outputs,
}

impl Plan {
    pub fn new(summary: impl Into<String>) -> Self {
        Plan { summary: summary.into(), ..Plan::default() }
    }

    pub fn change(mut self, line: impl Into<String>) -> Self {
        self.changes.push(line.into());
        self
    }

    pub fn check(mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        self.checks.push(Check { name: name.into(), ok, detail: detail.into() });
        self
    }

    pub fn output(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.outputs.insert(key.into(), value.into());
        self
    }

    /// The checks that failed.
    pub fn failed_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }
}

/// One precondition and what was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}
