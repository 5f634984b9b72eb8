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

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde_json::Value;

use drover_api::{PathSegment, ValueType, schema};

use super::check::ParamsOnly;
use super::diag::{Diagnostic, Diagnostics};
use super::expr::{self, Template};
use super::model::*;
use super::yaml::{Node, Pos};
use crate::Catalog;

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
}

/// Replace every fanned step whose list is known by one instance per item. Steps whose list
/// has no value yet (`validate` without params) stay as written.
pub(crate) fn expand(
    rb: &mut Runbook,
    params: &BTreeMap<String, Value>,
    origins: &BTreeMap<String, Origin>,
    catalog: &dyn Catalog,
    found: &mut Diagnostics,
) {
    if rb.steps.iter().all(|s| s.for_each.is_none()) {
        return;
    }
    let mut lists: HashMap<String, (Fanned, Vec<Value>)> = HashMap::new();
    let mut problems = Problems { rb_file: rb.path.clone(), found: Diagnostics::default() };
    for step in &rb.steps {
        let Some(fe) = &step.for_each else { continue };
        if let Some(list) = resolve_list(step, fe, params, origins, &mut problems) {
            let (items, source, places) = list;
            let keys = keys(step, fe, &items, &places, &mut problems);
            check_fields(step, &items, &keys, &places, catalog, &mut problems);
            lists.insert(step.id.clone(), (Fanned { source, keys }, items));
        }
    }
    check_reads(rb, &lists, &mut problems);
    if !problems.found.is_empty() {
        found.extend(problems.found);
        return;
    }
    let fanned: HashMap<&str, &Fanned> = lists.iter().map(|(id, (f, _))| (id.as_str(), f)).collect();
    let mut out = Vec::with_capacity(rb.steps.len());
    for step in &rb.steps {
        let Some((me, items)) = lists.get(&step.id) else {
            let mut plain = step.clone();
            plain.needs = step.needs.iter().flat_map(|n| needs_of(n, None, &fanned)).collect();
            out.push(plain);
            continue;
        };
        for (key, item) in me.keys.iter().zip(items) {
            let mut inst = step.clone();
            inst.id = instance_id(&step.id, key);
            inst.for_each = None;
            inst.needs = step.needs.iter().flat_map(|n| needs_of(n, Some((&me.source, key)), &fanned)).collect();
            let pairs = fanned
                .iter()
                .filter(|(_, f)| f.source == me.source)
                .map(|(id, _)| (id.to_string(), instance_id(id, key)))
                .collect();
            inst.instance = Some(Instance { of: step.id.clone(), key: key.clone(), item: item.clone(), pairs });
            out.push(inst);
        }
    }
    rb.steps = out;
}

pub fn instance_id(step: &str, key: &str) -> String {
    format!("{step}[{key}]")
}

/// What `needs: [n]` means for one step (or one item's instance of a fanned step).
fn needs_of(need: &str, me: Option<(&str, &str)>, fanned: &HashMap<&str, &Fanned>) -> Vec<String> {
    match (fanned.get(need), me) {
        (None, _) => vec![need.to_string()],
        (Some(f), Some((source, key))) if f.source == source => vec![instance_id(need, key)],
        (Some(f), _) => f.keys.iter().map(|k| instance_id(need, k)).collect(),
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

/// The list's items, a name for the list, and where each item was written.
fn resolve_list(
    step: &Step,
    fe: &ForEach,
    params: &BTreeMap<String, Value>,
    origins: &BTreeMap<String, Origin>,
    problems: &mut Problems,
) -> Option<(Vec<Value>, String, Places)> {
    let id = &step.id;
    match &fe.items {
        Items::Literal(node) => {
            let places = node.items().unwrap_or_default().iter().map(|n| (problems.rb_file.clone(), n.pos)).collect();
            let items = node.to_json().as_array().cloned().unwrap_or_default();
            Some((items, serde_json::to_string(&node.to_json()).unwrap_or_default(), places))
        }
        Items::Expr(template, text) => {
            if let Some((path, _)) = template.refs().into_iter().find(|(p, _)| p.first().is_none_or(|r| r != "params"))
            {
                problems.in_runbook(
                    fe.pos,
                    format!(
                        "step `{id}`: for_each reads `{}`; a list must be known when the run starts",
                        path.join(".")
                    ),
                    "fan out over a param — an inventory of applications in a params file — or a list written here",
                );
                return None;
            }
            let value = template.render(&ParamsOnly(params)).ok()?; // no value yet: `validate` alone
            let Value::Array(items) = value else {
                problems.in_runbook(
                    fe.pos,
                    format!("step `{id}`: for_each `{text}` is {}, not a list", ValueType::of(&value).name()),
                    "give the param a list of items (declare it `type: list`)",
                );
                return None;
            };
            let only = template.only_ref();
            let origin = only.and_then(|p| origins.get(p.get(1)?));
            let list_node = match (only, origin) {
                (Some(path), Some(Origin { node: Some(node), .. })) => {
                    let rest: Vec<PathSegment> = path[2..].iter().map(|k| PathSegment::Key(k.clone())).collect();
                    node.get_path(&rest)
                }
                _ => None,
            };
            let places = match (origin, list_node.and_then(Node::items)) {
                (Some(o), Some(nodes)) if nodes.len() == items.len() => {
                    nodes.iter().map(|n| (o.file.clone(), n.pos)).collect()
                }
                _ => vec![(problems.rb_file.clone(), fe.pos); items.len()],
            };
            let source = only.map(|p| p.join(".")).unwrap_or_else(|| text.trim().to_string());
            Some((items, source, places))
        }
    }
}

/// Each item's key: itself when it is a scalar, else its `key` field; unique and usable in
/// an id (`break[orders]`).
fn keys(step: &Step, fe: &ForEach, items: &[Value], places: &Places, problems: &mut Problems) -> Vec<String> {
    let id = &step.id;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (n, item) in items.iter().enumerate() {
        let (file, pos) = &places[n];
        let key = match item {
            Value::Object(map) => match map.get(&fe.key) {
                Some(v @ (Value::String(_) | Value::Number(_))) => expr::display(v),
                Some(_) | None => {
                    problems.at(
                        file,
                        *pos,
                        format!("step `{id}`: item {} of for_each has no `{}` to name it by", n + 1, fe.key),
                        format!("add `{}: …` to the item, or set `for_each.key` to the field that names items", fe.key),
                    );
                    continue;
                }
            },
            Value::String(_) | Value::Number(_) => expr::display(item),
            other => {
                problems.at(
                    file,
                    *pos,
                    format!("step `{id}`: item {} of for_each is {}", n + 1, ValueType::of(other).name()),
                    "items are names, numbers, or mappings with a field that names them",
                );
                continue;
            }
        };
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control() || "[]".contains(c)) {
            problems.at(
                file,
                *pos,
                format!("step `{id}`: item key `{key}` cannot name a step"),
                "use a key without spaces or brackets",
            );
            continue;
        }
        if let Some(first) = seen.get(&key) {
            let (ffile, fpos) = &places[*first];
            problems.at(
                file,
                *pos,
                format!("step `{id}`: two items have the key `{key}` (the first at {}:{})", ffile.display(), fpos.line),
                "every item needs its own key: its instance is `{id}[KEY]` in the journal and the report",
            );
            continue;
        }
        seen.insert(key.clone(), n);
        out.push(key);
    }
    out
}

/// A slot that reads the item, with the action's schema when the value is a parameter.
struct Read<'a> {
    template: &'a Template,
    param: Option<(&'a [PathSegment], Value)>,
}

/// Every `item.FIELD` the step reads is in every item, with a type its action takes there.
fn check_fields(
    step: &Step,
    items: &[Value],
    keys: &[String],
    places: &Places,
    catalog: &dyn Catalog,
    problems: &mut Problems,
) {
    if keys.len() != items.len() {
        return; // a key problem was reported
    }
    let mut reads: Vec<Read> = vec![];
    for call in std::iter::once(&step.call).chain(step.undo.as_ref()) {
        let schema = catalog.action(&call.uses).ok().map(|a| a.info().params.clone());
        for slot in call.slots.iter().filter(|s| s.template.refs().iter().any(|(p, _)| p[0] == "item")) {
            let param = (!slot.key).then_some(()).and(schema.clone()).map(|s| (slot.path.as_slice(), s));
            reads.push(Read { template: &slot.template, param });
        }
    }
    let mut fields: Vec<&[String]> = vec![];
    if let Some((cond, _)) = &step.condition {
        cond.refs(&mut |r| {
            if r[0] == "item" {
                fields.push(r)
            }
        });
    }
    for t in step.confirm.iter() {
        fields.extend(t.refs().into_iter().map(|(p, _)| p).filter(|p| p[0] == "item"));
    }
    for Read { template: t, .. } in &reads {
        fields.extend(t.refs().into_iter().map(|(p, _)| p).filter(|p| p[0] == "item"));
    }
    let id = &step.id;
    for (n, item) in items.iter().enumerate() {
        let (file, pos) = &places[n];
        let key = &keys[n];
        let mut missing = false;
        for path in &fields {
            if dig(item, &path[1..]).is_none() {
                missing = true;
                problems.at(
                    file,
                    *pos,
                    format!("step `{id}`: item `{key}` has no `{}`, which the step reads", path[1..].join(".")),
                    format!(
                        "add `{}` to the item (step `{id}` is at {}:{})",
                        path[1..].join("."),
                        problems.rb_file.display(),
                        step.pos.line
                    ),
                );
            }
        }
        if missing {
            continue;
        }
        for Read { template, param } in &reads {
            let (Some(path), Some((slot_path, schema))) = (template.only_ref(), param) else { continue };
            let Some(value) = dig(item, &path[1..]) else { continue };
            let want = schema::at(schema, slot_path).and_then(|place| schema::accepts(schema, place));
            let have = ValueType::of(value);
            if let Some(want) = want
                && !want.is_empty()
                && !schema::fits(have, &want)
            {
                let wanted: Vec<&str> = want.iter().map(|t| t.name()).collect();
                let at: String = slot_path.iter().map(|p| p.to_string()).collect();
                problems.at(
                    file,
                    *pos,
                    format!(
                        "step `{id}`: item `{key}`: `{}` is {}, but with{at} of `{}` takes {}",
                        path[1..].join("."),
                        have.name(),
                        step.call.uses,
                        wanted.join(" or ")
                    ),
                    format!("`drover actions {}` shows its parameters", step.call.uses),
                );
            }
        }
    }
}

/// A step reads a fanned step's outputs only as its own item's instance: from a step fanned
/// over the same list.
fn check_reads(rb: &Runbook, lists: &HashMap<String, (Fanned, Vec<Value>)>, problems: &mut Problems) {
    for step in &rb.steps {
        let mine = lists.get(&step.id).map(|(f, _)| f.source.as_str());
        let mut refs: Vec<(Vec<String>, Pos)> = vec![];
        for call in std::iter::once(&step.call).chain(step.undo.as_ref()) {
            for slot in &call.slots {
                refs.extend(slot.template.refs().into_iter().map(|(p, _)| (p.to_vec(), slot.pos)));
            }
        }
        if let Some((cond, _)) = &step.condition {
            cond.refs(&mut |r| refs.push((r.to_vec(), step.pos)));
        }
        for t in step.confirm.iter() {
            refs.extend(t.refs().into_iter().map(|(p, _)| (p.to_vec(), step.pos)));
        }
        for (path, pos) in refs {
            if path[0] != "steps" {
                continue;
            }
            let Some(other) = path.get(1) else { continue };
            let Some((theirs, _)) = lists.get(other) else { continue };
            if mine == Some(theirs.source.as_str()) {
                continue;
            }
            problems.in_runbook(
                pos,
                format!(
                    "step `{}` reads `{}`, but step `{other}` runs once for each item of `{}`",
                    step.id,
                    path.join("."),
                    theirs.source
                ),
                format!("read it from a step with the same `for_each`, which sees its own item's `{other}`"),
            );
        }
    }
}

fn dig<'v>(mut v: &'v Value, path: &[String]) -> Option<&'v Value> {
    for key in path {
        v = match v {
            Value::Object(m) => m.get(key)?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}
