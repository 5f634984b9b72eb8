//! Runbooks: the YAML files that describe a recovery as a graph of steps.
//!
//! Loading is a pure phase (no network, no credentials, no clock): parse with positions,
//! decode every field, resolve params and sites, build the graph, check every action's
//! parameters and every reference — and report all problems at once, each at its
//! `file:line:column`, before anything is touched.

mod catalog;
pub mod check;
pub mod decode;
pub mod diag;
pub mod expr;
pub mod fan;
mod inputs;
pub mod model;
pub mod notify;
pub mod shipped;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use catalog::{Actions, Catalog, LookupError};
pub use diag::{Diagnostic, Diagnostics};
pub use model::*;

use diag::Sink;
use drover_model::graph::Dag;
use yaml::Pos;

/// What the command line adds to a runbook.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--param name=value`, in order (later wins).
    pub params: Vec<String>,
    pub params_file: Option<PathBuf>,
    pub sites_file: Option<PathBuf>,
    /// `run` and `plan` need every required param; `validate` does not.
    pub require_params: bool,
    /// Values a run already had (`resume`: the journal's), under the params file and `--param`.
    pub recorded: BTreeMap<String, Value>,
}

/// A runbook ready to run: checked, with params and sites resolved.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub runbook: Runbook,
    pub dag: Dag,
    pub params: BTreeMap<String, Value>,
    pub sites: BTreeMap<String, Site>,
    /// The sites file given on the command line, and its SHA-256.
    pub sites_file: Option<PathBuf>,
    pub sites_digest: Option<String>,
    /// Each step's action, resolved once at load.
    pub actions: Actions,
    /// Each step's index by id.
    pub index: std::collections::HashMap<String, usize>,
    /// Some lists are read from steps' outputs: the steps stay as written until the run
    /// reads them (`discovery`, then `expand_discovered`).
    pub deferred: Option<Deferred>,
    /// Lists this runbook was expanded with at run time, as far as its plan stands on them.
    pub discovered: Vec<fan::Discovered>,
}

pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read(path: &Path, found: &mut Diagnostics) -> Option<(String, String)> {
    if let Some(text) = shipped::text(path) {
        return Some((text.to_string(), digest(text.as_bytes())));
    }
    if path.to_str().is_some_and(|p| p.starts_with(shipped::PREFIX)) {
        let names: Vec<&str> = shipped::names().collect();
        found.0.push(file_error(path, "is not a shipped runbook", &format!("shipped: {}", names.join(", "))));
        return None;
    }
    match std::fs::read(path) {
        Ok(bytes) => {
            let d = digest(&bytes);
            match String::from_utf8(bytes) {
                Ok(text) => Some((text, d)),
                Err(_) => {
                    found.0.push(file_error(path, "is not UTF-8 text", "save the file as UTF-8"));
                    None
                }
            }
        }
        Err(e) => {
            found.0.push(file_error(path, &format!("cannot be read: {e}"), "check the path and its permissions"));
            None
        }
    }
}

fn file_error(path: &Path, message: &str, hint: &str) -> Diagnostic {
    Diagnostic { file: path.to_path_buf(), line: 0, column: 0, message: message.into(), hint: Some(hint.into()) }
}

fn parse_file(path: &Path, found: &mut Diagnostics) -> Option<(yaml::Node, String)> {
    let (text, d) = read(path, found)?;
    match yaml::parse(&text) {
        Ok(node) => Some((node, d)),
        Err(e) => {
            found.0.push(syntax_diagnostic(path, &e));
            None
        }
    }
}

fn syntax_diagnostic(path: &Path, e: &yaml::SyntaxError) -> Diagnostic {
    Diagnostic {
        file: path.to_path_buf(),
        line: e.pos.line,
        column: e.pos.col,
        message: format!("invalid YAML: {}", e.message),
        hint: Some("check indentation and quoting around this place".into()),
    }
}

/// Load and check a runbook with everything the command line adds to it.
pub fn load(path: &Path, catalog: &dyn Catalog, opts: &LoadOptions) -> Result<Loaded, Diagnostics> {
    let mut found = Diagnostics::default();
    let Some((text, _)) = read(path, &mut found) else {
        return Err(found);
    };
    load_source(path, &text, catalog, opts)
}

/// Load a runbook from text; `path` names it in messages.
pub fn load_source(path: &Path, text: &str, catalog: &dyn Catalog, opts: &LoadOptions) -> Result<Loaded, Diagnostics> {
    let mut found = Diagnostics::default();
    let rb_digest = digest(text.as_bytes());
    let root = match yaml::parse(text) {
        Ok(node) => node,
        Err(e) => {
            found.0.push(syntax_diagnostic(path, &e));
            return Err(found);
        }
    };
    let mut sink = Sink::new(path);
    let runbook = decode::runbook(root, path, rb_digest, &mut sink);
    found.extend(sink.found);

    let mut runbook = runbook;
    let mut sites = runbook.sites.clone();
    let mut sites_digest = None;
    if let Some(sf) = &opts.sites_file
        && let Some((node, d)) = parse_file(sf, &mut found)
    {
        let mut s = Sink::new(sf);
        let (more, notify) = decode::sites_file(&node, &mut s);
        sites.extend(more);
        runbook.notify.extend(notify);
        found.extend(s.found);
        sites_digest = Some(d);
    }

    let (params, origins) = resolve_params(&runbook, opts, &mut found);
    check::sites(&sites, catalog, &mut found);

    let mut sink = Sink::new(path);
    let dag = check::graph(&runbook, &mut sink);
    check::actions(&runbook, catalog, &sites, &params, &mut sink);
    check::references(&runbook, dag.as_ref(), catalog, &sites, &params, &mut sink);
    check::prepare_after(&runbook, dag.as_ref(), catalog, &mut sink);
    found.extend(sink.found);

    // The steps as written are checked; now each fanned step becomes one step per item.
    let mut deferred = None;
    let dag = match dag {
        Some(dag) if found.is_empty() && runbook.steps.iter().any(|s| s.for_each.is_some()) => {
            let known =
                fan::Known { dag: &dag, params: &params, origins: &origins, sites: &sites, catalog, outputs: None };
            let mut expanded = runbook.clone();
            if fan::expand(&mut expanded, &known, &mut found).deferred {
                // Lists read from steps' outputs: expanded when the run has read them.
                deferred = Some(Deferred { origins: origins.clone() });
                Some(dag)
            } else if found.is_empty() {
                runbook = expanded;
                fan::instance_graph(&runbook, &mut found)
            } else {
                Some(dag)
            }
        }
        dag => dag,
    };
    let actions = if found.is_empty() { resolve(&runbook, catalog, &mut found) } else { Actions::default() };
    match dag {
        Some(dag) if found.is_empty() => {
            let index = runbook.steps.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
            Ok(Loaded {
                runbook,
                dag,
                params,
                sites,
                sites_file: opts.sites_file.clone(),
                sites_digest,
                actions,
                index,
                deferred,
                discovered: vec![],
            })
        }
        _ => {
            found.sort();
            Err(found)
        }
    }
}

/// A runbook some of whose lists are read from steps' outputs: what expanding it later needs.
#[derive(Debug, Clone)]
pub struct Deferred {
    origins: BTreeMap<String, fan::Origin>,
}

impl Loaded {
    /// The steps a run reads its deferred lists from, with every step before them: the run
    /// plans these first (they only read), then expands the rest with what they found.
    pub fn discovery(&self) -> Option<Loaded> {
        self.deferred.as_ref()?;
        let mut sources: Vec<usize> = vec![];
        for step in &self.runbook.steps {
            let Some(ForEach { items: Items::Expr(t, _), .. }) = &step.for_each else { continue };
            for (path, _) in t.refs() {
                if path[0] == "steps"
                    && let Some(&i) = path.get(1).and_then(|id| self.index.get(id))
                {
                    sources.push(i);
                }
            }
        }
        let keep: Vec<usize> = (0..self.runbook.steps.len())
            .filter(|&j| sources.iter().any(|&x| j == x || self.dag.is_ancestor(j, x)))
            .collect();
        let mut sub = self.clone();
        sub.deferred = None;
        sub.runbook.steps = keep.iter().map(|&j| self.runbook.steps[j].clone()).collect();
        sub.actions = Actions {
            call: keep.iter().map(|&j| self.actions.call[j].clone()).collect(),
            undo: keep.iter().map(|&j| self.actions.undo[j].clone()).collect(),
        };
        sub.dag = Dag::build(sub.runbook.steps.iter().map(|s| (s.id.as_str(), s.needs.as_slice()))).ok()?;
        sub.index = sub.runbook.steps.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        Some(sub)
    }

    /// Expand the lists read from steps' outputs, now that the run has read them. Every
    /// item is checked as at load; an error names the item.
    pub fn expand_discovered(&self, outputs: &BTreeMap<String, drover_api::Outputs>) -> Result<Loaded, Diagnostics> {
        let Some(deferred) = &self.deferred else { return Ok(self.clone()) };
        let catalog = Resolved(self);
        let known = fan::Known {
            dag: &self.dag,
            params: &self.params,
            origins: &deferred.origins,
            sites: &self.sites,
            catalog: &catalog,
            outputs: Some(outputs),
        };
        let mut found = Diagnostics::default();
        let mut runbook = self.runbook.clone();
        let expanded = fan::expand(&mut runbook, &known, &mut found);
        if !found.is_empty() {
            found.sort();
            return Err(found);
        }
        let Some(dag) = fan::instance_graph(&runbook, &mut found) else {
            found.sort();
            return Err(found);
        };
        let actions = resolve(&runbook, &catalog, &mut found);
        let index = runbook.steps.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        Ok(Loaded { runbook, dag, actions, index, deferred: None, discovered: expanded.discovered, ..self.clone() })
    }
}

/// The actions a loaded runbook resolved, looked up by name again when it expands at run time.
struct Resolved<'a>(&'a Loaded);

impl Catalog for Resolved<'_> {
    fn action(&self, name: &str) -> Result<std::sync::Arc<dyn drover_api::Action>, LookupError> {
        let l = self.0;
        l.runbook
            .steps
            .iter()
            .enumerate()
            .find_map(|(i, s)| match (&s.call.uses, s.undo.as_ref().map(|u| &u.uses)) {
                (uses, _) if uses == name => Some(l.actions.call[i].clone()),
                (_, Some(undo)) if undo == name => l.actions.undo[i].clone(),
                _ => None,
            })
            .ok_or_else(|| LookupError { message: format!("unknown action `{name}`"), hint: String::new() })
    }
    fn site_section(&self, _: &str) -> Option<&drover_api::SiteSection> {
        None
    }
    fn section_names(&self) -> Vec<&str> {
        vec![]
    }
    fn has_external(&self, _: &str) -> bool {
        false
    }
}

/// Every step's action and undo action (the checks found them; an external plugin that has
/// gone since is reported here).
fn resolve(rb: &Runbook, catalog: &dyn Catalog, found: &mut Diagnostics) -> Actions {
    let mut actions = Actions::default();
    // A fleet's instances share their step's action: look each name up once.
    let mut known: std::collections::HashMap<String, std::sync::Arc<dyn drover_api::Action>> = Default::default();
    known.insert(fan::TIER_ACTION.into(), std::sync::Arc::new(fan::TierDone::default()));
    let mut get = |call: &Call| match known.get(&call.uses).cloned().ok_or(()).or_else(|()| catalog.action(&call.uses))
    {
        Ok(a) => {
            known.insert(call.uses.clone(), a.clone());
            Some(a)
        }
        Err(e) => {
            found.0.push(Diagnostic {
                file: rb.path.clone(),
                line: call.pos.line,
                column: call.pos.col,
                message: e.message,
                hint: Some(e.hint),
            });
            None
        }
    };
    for step in &rb.steps {
        let call = get(&step.call);
        let undo = step.undo.as_ref().and_then(&mut get);
        if let Some(call) = call {
            actions.call.push(call);
            actions.undo.push(undo);
        }
    }
    actions
}

/// Each param's value, and where it was written (for messages about one item of a list).
fn resolve_params(
    rb: &Runbook,
    opts: &LoadOptions,
    found: &mut Diagnostics,
) -> (BTreeMap<String, Value>, BTreeMap<String, fan::Origin>) {
    let mut values: BTreeMap<String, Value> = BTreeMap::new();
    let mut origins: BTreeMap<String, fan::Origin> = BTreeMap::new();
    for p in &rb.params {
        if let Some(d) = &p.default {
            values.insert(p.name.clone(), d.clone());
            let node = rb.root.get("params").and_then(|n| n.get(&p.name)).and_then(|n| n.get("default")).cloned();
            origins.insert(p.name.clone(), fan::Origin { file: rb.path.clone(), node });
        }
    }
    for (name, value) in &opts.recorded {
        if rb.param(name).is_some() {
            values.insert(name.clone(), value.clone());
            origins.insert(name.clone(), fan::Origin { file: PathBuf::from("(the run's journal)"), node: None });
        }
    }
    let names: Vec<&str> = rb.params.iter().map(|p| p.name.as_str()).collect();
    let unknown_hint = |name: &str| match drover_api::closest_match(name, &names) {
        Some(b) => format!("did you mean `{b}`?"),
        None if names.is_empty() => "this runbook declares no params".into(),
        None => format!("declared params: {}", names.join(", ")),
    };
    let mut set = |name: &str, raw: &Value, file: &Path, pos: Pos, found: &mut Diagnostics| {
        let mut err = |message: String, hint: String| {
            found.0.push(Diagnostic {
                file: file.to_path_buf(),
                line: pos.line,
                column: pos.col,
                message,
                hint: Some(hint),
            })
        };
        let Some(spec) = rb.param(name) else {
            return err(format!("unknown param `{name}`"), unknown_hint(name));
        };
        match decode::coerce(spec.ty, raw) {
            Ok(v) if spec.allowed.is_empty() || spec.allowed.contains(&v) => {
                values.insert(name.to_string(), v);
            }
            Ok(v) => err(
                format!("param `{name}`: `{}` is not allowed", expr::display(&v)),
                format!("allowed: {}", spec.allowed.iter().map(expr::display).collect::<Vec<_>>().join(", ")),
            ),
            Err(msg) => {
                err(format!("param `{name}`: {msg}"), format!("`{name}` is declared with type {}", spec.ty.name()))
            }
        }
    };
    if let Some(pf) = &opts.params_file
        && let Some((node, _)) = parse_file(pf, found)
    {
        let mut s = Sink::new(pf);
        let entries = decode::params_file(&node, &mut s);
        found.extend(s.found);
        for (name, value, pos) in entries {
            set(&name, &value, pf, pos, found);
            origins.insert(name.clone(), fan::Origin { file: pf.clone(), node: node.get(&name).cloned() });
        }
    }
    let cli = Path::new("--param");
    for (n, arg) in opts.params.iter().enumerate() {
        let pos = Pos { line: 0, col: n + 1 };
        match arg.split_once('=') {
            Some((k, v)) => {
                set(k.trim(), &Value::String(v.to_string()), cli, pos, found);
                origins.insert(k.trim().to_string(), fan::Origin { file: cli.to_path_buf(), node: None });
            }
            None => found.0.push(Diagnostic {
                file: cli.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("`{arg}` is not of the form NAME=VALUE"),
                hint: Some("write `--param mode=planned`".into()),
            }),
        }
    }
    if opts.require_params {
        for p in &rb.params {
            if p.required && !values.contains_key(&p.name) {
                found.0.push(Diagnostic {
                    file: rb.path.clone(),
                    line: p.pos.line,
                    column: p.pos.col,
                    message: format!("param `{}` is required and has no value", p.name),
                    hint: Some(format!("pass `--param {}=VALUE` or put it in a --params file", p.name)),
                });
            }
        }
    }
    (values, origins)
}
