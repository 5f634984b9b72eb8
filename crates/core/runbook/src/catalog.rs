//! What a runbook may use: actions by name and the site sections plugins declare. The
//! composition root's registry implements it; the loader resolves every step's action through
//! it once, so that nothing after loading looks an action up again.

use std::sync::Arc;

use drover_api::{Action, SiteSection};

/// Why an action name could not be resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupError {
    pub message: String,
    pub hint: String,
}

/// The actions and site sections known to this drover.
pub trait Catalog {
    fn action(&self, name: &str) -> Result<Arc<dyn Action>, LookupError>;

    /// The section of this name, if a plugin declares it.
    fn site_section(&self, name: &str) -> Option<&SiteSection>;

    /// Every declared section name (empty: nothing to check sites against).
    fn section_names(&self) -> Vec<&str>;

    /// Whether an external plugin of this name exists: its sections are its own business.
    fn has_external(&self, name: &str) -> bool;
}

/// Every step's action, resolved at load: `call[i]` runs step `i`, `undo[i]` its `undo:` call.
#[derive(Clone, Default)]
pub struct Actions {
    pub call: Vec<Arc<dyn Action>>,
    pub undo: Vec<Option<Arc<dyn Action>>>,
}

impl std::fmt::Debug for Actions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.call.iter().map(|a| &a.info().name)).finish()
    }
}
