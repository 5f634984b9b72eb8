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

    /// A precondition on the state of the world. It may hold only once earlier steps have run,
    /// so a preflight reports it but does not stop on it when an earlier step changes things.
    pub fn check(mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        self.checks.push(Check { name: name.into(), ok, detail: detail.into(), access: false });
        self
    }

    /// A precondition on reaching the system at all: the endpoint answers, the credentials
    /// work, the permission is there. No earlier step can fix it, so a preflight always stops on it.
    pub fn access_check(mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        self.checks.push(Check { name: name.into(), ok, detail: detail.into(), access: true });
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
    /// About reaching the system (endpoint, credentials, permission), not about its state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub access: bool,
}
