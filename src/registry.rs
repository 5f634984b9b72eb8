//! The composition root: the one place that lists the plugin crates.
//!
//! Everything else talks to `dyn Action`. Actions from external plugins (`drover-plugin-NAME`
//! executables on PATH) are looked up on first use and cached.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use drover_api::Action;

use crate::external;

/// Every action drover can run.
pub struct Registry {
    builtin: BTreeMap<String, Arc<dyn Action>>,
    /// The site sections plugins read, by name (`ontap`, `kube`, ...).
    sections: BTreeMap<String, drover_api::SiteSection>,
    external: Mutex<HashMap<String, Described>>,
    search_path: Option<std::ffi::OsString>,
}

/// An external plugin's actions, or why it could not describe them.
type Described = Result<Vec<Arc<dyn Action>>, String>;

/// Actions found, and plugins that failed to describe themselves (name, reason).
pub type AllActions = (Vec<Arc<dyn Action>>, Vec<(String, String)>);

pub use drover_core::runbook::LookupError;

impl drover_core::runbook::Catalog for Registry {
    fn action(&self, name: &str) -> Result<Arc<dyn Action>, LookupError> {
        self.get(name)
    }

    fn site_section(&self, name: &str) -> Option<&drover_api::SiteSection> {
        Registry::site_section(self, name)
    }

    fn section_names(&self) -> Vec<&str> {
        Registry::section_names(self)
    }

    fn has_external(&self, name: &str) -> bool {
        Registry::has_external(self, name)
    }
}

impl Registry {
    /// The built-in actions of every plugin crate.
    pub fn builtin() -> Self {
        let mut r = Registry::empty();
        let plugins = [
            drover_core_actions::actions(),
            drover_dns::actions(),
            drover_etcd::actions(),
            drover_kube::actions(),
            drover_lb::actions(),
            drover_ontap::actions(),
        ];
        for action in plugins.into_iter().flatten() {
            r = r.with(action);
        }
        let sections = [
            vec![drover_api::s3::site_section()],
            drover_dns::site_sections(),
            drover_etcd::site_sections(),
            drover_kube::site_sections(),
            drover_lb::site_sections(),
            drover_ontap::site_sections(),
        ];
        for section in sections.into_iter().flatten() {
            r = r.with_section(section);
        }
        r
    }

    /// Declare a site section (tests; plugins declare theirs in [`Registry::builtin`]).
    pub fn with_section(mut self, section: drover_api::SiteSection) -> Self {
        self.sections.insert(section.name.to_string(), section);
        self
    }

    /// The section of this name, if a plugin declares it.
    pub fn site_section(&self, name: &str) -> Option<&drover_api::SiteSection> {
        self.sections.get(name)
    }

    /// Every declared section name.
    pub fn section_names(&self) -> Vec<&str> {
        self.sections.keys().map(String::as_str).collect()
    }

    /// Whether an external plugin `drover-plugin-NAME` is on the search path: its sections
    /// are its own business and not checked.
    pub fn has_external(&self, name: &str) -> bool {
        self.find_plugin(name).is_some()
    }

    /// No actions at all (tests add their own).
    pub fn empty() -> Self {
        Registry {
            builtin: BTreeMap::new(),
            sections: BTreeMap::new(),
            external: Mutex::default(),
            search_path: std::env::var_os("PATH"),
        }
    }

    pub fn with(mut self, action: Arc<dyn Action>) -> Self {
        self.builtin.insert(action.info().name.clone(), action);
        self
    }

    /// Look for external plugins in these directories instead of PATH.
    pub fn with_plugin_path(mut self, path: std::ffi::OsString) -> Self {
        self.search_path = Some(path);
        self
    }

    pub fn get(&self, name: &str) -> Result<Arc<dyn Action>, LookupError> {
        if let Some(a) = self.builtin.get(name) {
            return Ok(a.clone());
        }
        let not_found = |extra: &str| {
            let mut names = self.names();
            names.retain(|n| n != name);
            let hint = match drover_api::closest_match(name, &names) {
                Some(best) => format!("did you mean `{best}`? `drover actions` lists every action"),
                None => "`drover actions` lists every action".into(),
            };
            LookupError { message: format!("unknown action `{name}`{extra}"), hint }
        };
        let Some((prefix, _)) = name.split_once('.') else {
            return Err(not_found(""));
        };
        if self.builtin.keys().any(|k| k.starts_with(&format!("{prefix}."))) {
            return Err(not_found(""));
        }
        let actions = self.external_actions(prefix);
        match actions {
            Some(Ok(list)) => list.iter().find(|a| a.info().name == name).cloned().ok_or_else(|| {
                let names: Vec<String> = list.iter().map(|a| a.info().name.clone()).collect();
                LookupError {
                    message: format!("plugin drover-plugin-{prefix} has no action `{name}`"),
                    hint: format!("it provides: {}", names.join(", ")),
                }
            }),
            Some(Err(e)) => Err(LookupError {
                message: format!("external plugin drover-plugin-{prefix} could not describe its actions: {e}"),
                hint: format!("run `echo '{{\"verb\":\"describe\"}}' | drover-plugin-{prefix}` to see what it answers"),
            }),
            None => Err(LookupError {
                message: format!("unknown action `{name}`"),
                hint: format!(
                    "no built-in action is named so, and no external plugin `drover-plugin-{prefix}` is on PATH; `drover actions` lists every action"
                ),
            }),
        }
    }

    fn external_actions(&self, prefix: &str) -> Option<Described> {
        let mut cache = self.external.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = cache.get(prefix) {
            return Some(found.clone());
        }
        let exe = self.find_plugin(prefix)?;
        let described = external::describe(&exe).map(|infos| {
            infos
                .into_iter()
                .map(|info| Arc::new(external::ExternalAction::new(exe.clone(), info)) as Arc<dyn Action>)
                .collect()
        });
        cache.insert(prefix.to_string(), described.clone());
        Some(described)
    }

    fn find_plugin(&self, prefix: &str) -> Option<PathBuf> {
        let file = format!("drover-plugin-{prefix}");
        std::env::split_paths(self.search_path.as_ref()?).map(|dir| dir.join(&file)).find(|p| is_executable(p))
    }

    /// Every external plugin on the search path, by prefix.
    pub fn external_prefixes(&self) -> Vec<String> {
        let mut out = vec![];
        let Some(path) = &self.search_path else {
            return out;
        };
        for dir in std::env::split_paths(path) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(prefix) = name.strip_prefix("drover-plugin-")
                    && is_executable(&e.path())
                    && !out.iter().any(|p| p == prefix)
                {
                    out.push(prefix.to_string());
                }
            }
        }
        out.sort();
        out
    }

    /// Built-in action names (external ones are not listed until used).
    pub fn names(&self) -> Vec<String> {
        self.builtin.keys().cloned().collect()
    }

    /// Built-in actions, then those of every external plugin found (with describe errors).
    pub fn all(&self) -> AllActions {
        let mut list: Vec<Arc<dyn Action>> = self.builtin.values().cloned().collect();
        let mut errors = vec![];
        for prefix in self.external_prefixes() {
            match self.external_actions(&prefix) {
                Some(Ok(found)) => list.extend(found),
                Some(Err(e)) => errors.push((format!("drover-plugin-{prefix}"), e)),
                None => {}
            }
        }
        (list, errors)
    }
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}
