//! Fan-out: a step with `for_each` runs once per item of a list, each run a step of its own
//! (`break[orders]`) with its own journal records, retries, timeout, undo and report line.
//!
//! Lists known at load — written in the runbook, or a param (an inventory in a params file) —
//! are expanded here, after every check of the steps as written, so the engine, the journal
//! and the report see ordinary steps and nothing downstream learns a new concept. Instances
//! of two steps fanned over the same list are paired by item: `restore[orders]` needs
//! `break[orders]` only. A step that runs once and needs a fanned step waits for all of its
//! instances. Every item is checked here, before anything runs: the key that names it, the
//! fields the step reads and their types, each error at the item's own file and line.

mod groups;
mod items;
mod tiers;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

pub use tiers::{TIER_ACTION, TierDone};

use super::diag::{Diagnostic, Diagnostics};
use super::model::*;
use super::yaml::{Node, Pos};
use crate::Catalog;
use drover_model::graph::Dag;

/// Where a param's value was written, to point at one item of a list.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: PathBuf,
    pub node: Option<Node>,
}

/// A fanned step's list, resolved.
struct Fanned {
    /// What the list is, to pair steps fanned over the same one.
    source: String,
    keys: Vec<String>,
    /// Each key's first item: owners and tiers are found by key for a fleet's thousands of
    /// items, not by a scan of the list for each.
    index: HashMap<String, usize>,
    items: Vec<Value>,
    places: Places,
    /// `belongs_to`: the list whose items own these, each item's owner, and the items by owner.
    parent: Option<String>,
    groups: Vec<String>,
    by_group: HashMap<String, Vec<usize>>,
}

impl Fanned {
    fn new(source: String, keys: Vec<String>, items: Vec<Value>, places: Places) -> Fanned {
        let mut index = HashMap::with_capacity(keys.len());
        for (n, key) in keys.iter().enumerate() {
            index.entry(key.clone()).or_insert(n);
        }
        Fanned { source, keys, index, items, places, parent: None, groups: vec![], by_group: HashMap::new() }
    }

    fn has(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// The key of the unit item `n` is about: its own, or its owner's.
    fn unit(&self, n: usize) -> &str {
        self.groups.get(n).unwrap_or(&self.keys[n])
    }

    /// The list whose tiers and isolation hold for these items.
    fn root(&self) -> &str {
        self.parent.as_deref().unwrap_or(&self.source)
    }
}

/// What every step fanned over one list shares.
struct Shared {
    tiers: Option<tiers::Tiers>,
    isolate: bool,
}

/// What the loader knows when it expands fanned steps.
pub(crate) struct Known<'a> {
    /// The graph of the steps as written.
    pub dag: &'a Dag,
    pub params: &'a BTreeMap<String, Value>,
    pub origins: &'a BTreeMap<String, Origin>,
    pub sites: &'a BTreeMap<String, Site>,
    pub catalog: &'a dyn Catalog,
    /// At run time: the outputs of the steps lists are read from (`None` at load).
    pub outputs: Option<&'a BTreeMap<String, drover_api::Outputs>>,
}

/// What expanding found.
#[derive(Debug, Default)]
pub(crate) struct Expanded {
    /// Some lists are read from steps' outputs: the steps stay as written until the run
    /// reads them.
    pub deferred: bool,
    /// The lists read from steps' outputs, and what the plan took from them: the run checks
    /// that the step gives the same list when it runs for real.
    pub discovered: Vec<Discovered>,
}

/// A list read from a step's outputs, as far as the plan stands on it: each item's key, its
/// tier and owner, and the fields the steps fanned over it read. A field nothing reads (a
/// relationship's lag, which moves every second) may change between the plan and the run.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub list: crate::expr::Template,
    /// The fields kept of each mapping item (`[]`: all of it).
    fields: Vec<Vec<String>>,
    planned: Value,
}

impl Discovered {
    fn new(list: crate::expr::Template, mut fields: Vec<Vec<String>>, items: &[Value]) -> Discovered {
        fields.sort();
        fields.dedup();
        let mut d = Discovered { list, fields, planned: Value::Null };
        d.planned = d.kept(items);
        d
    }

    /// What the plan stands on of these items.
    fn kept(&self, items: &[Value]) -> Value {
        let keep = |item: &Value| {
            if !item.is_object() || self.fields.iter().any(Vec::is_empty) {
                return item.clone();
            }
            let mut out = serde_json::Map::new();
            for path in &self.fields {
                if let Some(v) = dig(item, path) {
                    out.insert(path.join("."), v.clone());
                }
            }
            Value::Object(out)
        };
        Value::Array(items.iter().map(keep).collect())
    }

    /// How many items the plan had and the list has now, when the list now differs in
    /// anything the plan stands on.
    pub fn changed(&self, now: &Value) -> Option<(usize, usize)> {
        let items = now.as_array().map_or(&[][..], Vec::as_slice);
        let count = |v: &Value| v.as_array().map_or(0, Vec::len);
        (self.kept(items) != self.planned).then(|| (count(&self.planned), items.len()))
    }
}

/// Replace every fanned step whose list is known by one instance per item (and a step per
/// tier that ends it, when the list has tiers). Steps whose list has no value yet (`validate`
/// without params) stay as written.
pub(crate) fn expand(rb: &mut Runbook, known: &Known, found: &mut Diagnostics) -> Expanded {
    let mut expanded = Expanded::default();
    if rb.steps.iter().all(|s| s.for_each.is_none()) {
        return expanded;
    }
    let mut problems = Problems { rb_file: rb.path.clone(), found: Diagnostics::default() };
    let mut lists: HashMap<String, Fanned> = HashMap::new();
    // Per list read from outputs: its template, items, and the fields its steps stand on.
    type Found<'t> = (&'t crate::expr::Template, Vec<Value>, Vec<Vec<String>>);
    let mut discovered: BTreeMap<String, Found> = BTreeMap::new();
    for step in &rb.steps {
        let Some(fe) = &step.for_each else { continue };
        if let Some(reads) = items::reads_steps(fe)
            && known.outputs.is_none()
        {
            expanded.deferred = true;
            items::check_discovery(rb, known, step, &reads, &mut problems);
            continue;
        }
        if let Some((items, source, places)) = items::resolve_list(step, fe, known, &mut problems) {
            if let (Items::Expr(t, text), Some(_)) = (&fe.items, items::reads_steps(fe)) {
                let (_, _, fields) = discovered.entry(text.trim().to_string()).or_insert((t, items.clone(), vec![]));
                let structure = [Some(&fe.key), fe.tier.as_ref(), fe.belongs_to.as_ref()];
                fields.extend(structure.into_iter().flatten().map(|f| vec![f.clone()]));
                fields.extend(items::fields_read(step).into_iter().map(|p| p[1..].to_vec()));
            }
            let keys = items::keys(step, fe, &items, &places, &mut problems);
            items::check_fields(step, &items, &keys, &places, known, &mut problems);
            lists.insert(step.id.clone(), Fanned::new(source, keys, items, places));
        }
    }
    expanded.discovered =
        discovered.into_values().map(|(t, items, fields)| Discovered::new(t.clone(), fields, &items)).collect();
    groups::resolve(rb, &mut lists, &mut problems);
    items::check_reads(rb, &lists, &mut problems);
    let shared = share(rb, &lists, known, &mut problems);
    if !problems.found.is_empty() || expanded.deferred {
        found.extend(problems.found);
        return expanded;
    }
    let ends = tiers::ends(rb, known.dag, &lists, &shared, &mut problems);
    if !problems.found.is_empty() {
        found.extend(problems.found);
        return expanded;
    }
    let fanned: HashMap<&str, &Fanned> = lists.iter().map(|(id, f)| (id.as_str(), f)).collect();
    let mut out = Vec::with_capacity(rb.steps.len() + lists.values().map(|f| f.keys.len()).sum::<usize>());
    for (t, step) in rb.steps.iter().enumerate() {
        let Some(me) = lists.get(&step.id) else {
            let mut plain = step.clone();
            plain.needs = step.needs.iter().flat_map(|n| needs_of(n, None, &fanned)).collect();
            plain.prepare_after = step.prepare_after.iter().flat_map(|n| needs_of(n, None, &fanned)).collect();
            out.push(plain);
            continue;
        };
        let list = &shared[me.root()];
        let owner = me.parent.as_ref().and_then(|p| fanned.values().find(|f| &f.source == p));
        let pairs: Arc<BTreeMap<String, Pair>> = Arc::new(
            fanned
                .iter()
                .filter_map(|(id, f)| {
                    if f.source == me.source {
                        Some((id.to_string(), Pair::SameItem))
                    } else if me.parent.as_ref() == Some(&f.source) {
                        Some((id.to_string(), Pair::Owner))
                    } else {
                        None
                    }
                })
                .collect(),
        );
        for (n, (key, item)) in me.keys.iter().zip(&me.items).enumerate() {
            let mut inst = step.clone();
            inst.id = instance_id(&step.id, key);
            inst.for_each = None;
            inst.needs = step.needs.iter().flat_map(|need| needs_of(need, Some((me, n)), &fanned)).collect();
            inst.prepare_after =
                step.prepare_after.iter().flat_map(|after| needs_of(after, Some((me, n)), &fanned)).collect();
            let tier_index = list.tiers.as_ref().map(|tiers| match owner {
                Some(o) => tiers.of_item[o.index.get(me.unit(n)).copied().unwrap_or(0)],
                None => tiers.of_item[n],
            });
            let tier = list.tiers.as_ref().zip(tier_index).map(|(tiers, i)| &tiers.order[i]);
            // The first steps of an item wait for the tier before its own to end.
            if ends.roots.contains(&t)
                && let (Some(tiers), Some(before)) = (&list.tiers, tier_index.and_then(|i| i.checked_sub(1)))
            {
                inst.needs.push(tiers::end_id(&tiers.order[before].name));
            }
            inst.instance = Some(Instance {
                of: step.id.clone(),
                key: key.clone(),
                item: item.clone(),
                pairs: pairs.clone(),
                list: me.source.clone(),
                owner: me.parent.clone().map(|p| (p, me.unit(n).to_string())),
                tier: tier.map(|t| t.name.clone()),
                isolate: list.isolate && !tier.is_some_and(|t| t.all_or_nothing),
                before_tiers: step.for_each.as_ref().is_some_and(|f| f.before_tiers),
                after_tiers: step.for_each.as_ref().is_some_and(|f| f.after_tiers),
            });
            out.push(inst);
        }
        if ends.last == Some(t) {
            out.extend(ends.steps.iter().cloned());
        }
    }
    rb.steps = out;
    expanded
}

/// The graph of the instances, or the cycle they make where the steps as written make none:
/// a step that runs once between two tiers (one shared break) waits for every item, and the
/// later tier's items wait for the earlier tier to end.
pub(crate) fn instance_graph(rb: &Runbook, found: &mut Diagnostics) -> Option<drover_model::graph::Dag> {
    let errors = match drover_model::graph::Dag::build(rb.steps.iter().map(|s| (s.id.as_str(), s.needs.as_slice()))) {
        Ok(dag) => return Some(dag),
        Err(errors) => errors,
    };
    let mut problems = Problems { rb_file: rb.path.clone(), found: Diagnostics::default() };
    for e in errors {
        let drover_model::graph::GraphError::Cycle { path } = e else { continue };
        let names: Vec<&str> = path.iter().map(|&i| rb.steps[i].id.as_str()).collect();
        let first = &rb.steps[path[0]];
        problems.in_runbook(
            first.pos,
            format!("the items' steps wait for each other in a circle: {}", names.join(" -> ")),
            "a step that runs once between tiers waits for every item: give the fanned steps before \
             it `for_each: { …, before_tiers: true }` so they run for every item before the first tier",
        );
    }
    found.extend(problems.found);
    None
}

/// Tiers and isolation are declared once, on any step fanned over the list, and hold for all.
fn share(
    rb: &Runbook,
    lists: &HashMap<String, Fanned>,
    known: &Known,
    problems: &mut Problems,
) -> BTreeMap<String, Shared> {
    let mut out: BTreeMap<String, Shared> = BTreeMap::new();
    let mut declared: BTreeMap<&str, &Step> = BTreeMap::new();
    for step in &rb.steps {
        let (Some(fe), Some(list)) = (&step.for_each, lists.get(&step.id)) else { continue };
        // A volume's tier and failure are its application's: declared on the owner list.
        if let Some(owner) = &list.parent
            && (fe.tier.is_some() || fe.isolate)
        {
            problems.in_runbook(
                fe.pos,
                format!(
                    "step `{}`: its items belong to the items of `{owner}`, whose tiers and isolation they share",
                    step.id
                ),
                format!("declare `tier`, `tiers` and `isolate` on a step fanned over `{owner}`"),
            );
        }
        let entry = out.entry(list.source.clone()).or_insert(Shared { tiers: None, isolate: false });
        entry.isolate |= fe.isolate;
        if fe.tier.is_none() {
            continue;
        }
        if let Some(first) = declared.get(list.source.as_str()) {
            let theirs = first.for_each.as_ref().map(|f| (&f.tier, f.tiers.as_ref().map(Items::text)));
            if theirs != Some((&fe.tier, fe.tiers.as_ref().map(Items::text))) {
                problems.in_runbook(
                    fe.pos,
                    format!(
                        "step `{}`: its tiers differ from those step `{}` declares for `{}`",
                        step.id, first.id, list.source
                    ),
                    "declare `tier` and `tiers` once, on one step fanned over the list; they hold for all of them",
                );
            }
            continue;
        }
        declared.insert(&list.source, step);
        entry.tiers = tiers::resolve(step, fe, list, known, problems);
    }
    if out.values().filter(|s| s.tiers.is_some()).count() > 1 {
        problems.in_runbook(
            rb.root.pos,
            "more than one list has tiers".into(),
            "tiers order one fleet: fan the other lists out without `tier`",
        );
    }
    out
}

pub fn instance_id(step: &str, key: &str) -> String {
    format!("{step}[{key}]")
}

/// What `needs: [n]` means for a step (or item `n` of a fanned step): the same item's
/// instance over the same list, the owner's instance, the owned items' instances — or, for a
/// step that runs once or a list unrelated to the need's, every instance.
fn needs_of(need: &str, me: Option<(&Fanned, usize)>, fanned: &HashMap<&str, &Fanned>) -> Vec<String> {
    let Some(f) = fanned.get(need) else { return vec![need.to_string()] };
    match me {
        Some((me, n)) if f.source == me.source => vec![instance_id(need, &me.keys[n])],
        Some((me, n)) if me.parent.as_ref() == Some(&f.source) => vec![instance_id(need, me.unit(n))],
        Some((me, n)) if f.parent.as_ref() == Some(&me.source) => {
            f.by_group.get(&me.keys[n]).into_iter().flatten().map(|&j| instance_id(need, &f.keys[j])).collect()
        }
        _ => f.keys.iter().map(|k| instance_id(need, k)).collect(),
    }
}

struct Problems {
    rb_file: PathBuf,
    found: Diagnostics,
}

impl Problems {
    fn at(&mut self, file: &std::path::Path, pos: Pos, message: String, hint: impl Into<String>) {
        self.found.0.push(Diagnostic {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.col,
            message,
            hint: Some(hint.into()),
        });
    }

    fn in_runbook(&mut self, pos: Pos, message: String, hint: impl Into<String>) {
        let file = self.rb_file.clone();
        self.at(&file, pos, message, hint);
    }
}

/// Where each item was written: its file and position.
type Places = Vec<(PathBuf, Pos)>;

/// The field of an item at `path` (`expr::dig`, as `${{ item.a.b }}` reads it), when it is a
/// value inside the item: a path through every element of a list (`*`) is no one field.
fn dig<'v>(item: &'v Value, path: &[String]) -> Option<&'v Value> {
    match crate::expr::dig(item, path) {
        Ok(std::borrow::Cow::Borrowed(v)) => Some(v),
        _ => None,
    }
}
