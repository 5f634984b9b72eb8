//! A fanned step's list: its items, the key naming each, and the fields the step reads —
//! every problem at the item's own file and line.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use drover_api::{PathSegment, ValueType, closest_match, schema};

use super::{Fanned, Known, Origin, Places, Problems, dig};
use crate::check::ParamsOnly;
use crate::expr::{self, Template};
use crate::model::*;
use crate::yaml::{Node, Pos};

/// The list's items, a name for the list, and where each item was written.
pub(super) fn resolve_list(
    step: &Step,
    fe: &ForEach,
    known: &Known,
    problems: &mut Problems,
) -> Option<(Vec<Value>, String, Places)> {
    resolve_items(step, &fe.items, fe.pos, "for_each", known, problems)
}

/// A list written in the runbook or read from params, with where each item was written.
pub(super) fn resolve_items(
    step: &Step,
    source: &Items,
    pos: Pos,
    what: &str,
    known: &Known,
    problems: &mut Problems,
) -> Option<(Vec<Value>, String, Places)> {
    let id = &step.id;
    match source {
        Items::Literal(node) => {
            let places = node.items().unwrap_or_default().iter().map(|n| (problems.rb_file.clone(), n.pos)).collect();
            let items = node.to_json().as_array().cloned().unwrap_or_default();
            Some((items, source.text(), places))
        }
        Items::Expr(template, text) => {
            let refs = template.refs();
            if let Some((path, _)) = refs.iter().find(|(p, _)| p.first().is_none_or(|r| r != "params" && r != "steps"))
            {
                problems.in_runbook(
                    pos,
                    format!(
                        "step `{id}`: {what} reads `{}`; a list comes from params or a step's outputs",
                        path.join(".")
                    ),
                    "fan out over a param (an inventory in a params file), a step's output, or a list written here",
                );
                return None;
            }
            let value = if refs.iter().any(|(p, _)| p[0] == "steps") {
                let outputs = known.outputs?; // read at run time, before the first change
                match template.render(&Discovered { params: known.params, outputs }) {
                    Ok(v) => v,
                    Err(e) => {
                        problems.in_runbook(
                            pos,
                            format!("step `{id}`: {what} `{text}`: {e}"),
                            "check what the step outputs",
                        );
                        return None;
                    }
                }
            } else {
                template.render(&ParamsOnly(known.params)).ok()? // no value yet: `validate` alone
            };
            let Value::Array(items) = value else {
                problems.in_runbook(
                    pos,
                    format!("step `{id}`: {what} `{text}` is {}, not a list", ValueType::of(&value).name()),
                    "give the param a list of items (declare it `type: list`)",
                );
                return None;
            };
            let only = template.only_ref();
            let origin = only.and_then(|p| known.origins.get(p.get(1)?));
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
                _ => vec![(problems.rb_file.clone(), pos); items.len()],
            };
            let source = only.map(|p| p.join(".")).unwrap_or_else(|| source.text());
            Some((items, source, places))
        }
    }
}

/// Each item's key: itself when it is a scalar, else its `key` field; unique and usable in
/// an id (`break[orders]`).
pub(super) fn keys(
    step: &Step,
    fe: &ForEach,
    items: &[Value],
    places: &Places,
    problems: &mut Problems,
) -> Vec<String> {
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
    /// The parameter names a site (`site: "${{ item.site }}"`).
    names_site: bool,
    uses: &'a str,
}

/// Every `item.FIELD` the step reads is in every item, with a type its action takes there.
pub(super) fn check_fields(
    step: &Step,
    items: &[Value],
    keys: &[String],
    places: &Places,
    known: &Known,
    problems: &mut Problems,
) {
    if keys.len() != items.len() {
        return; // a key problem was reported
    }
    if crate::check::skipped_by_params(step, known.params) {
        return; // switched off (`switch_dns: false`): the fields it reads need not be there
    }
    let mut reads: Vec<Read> = vec![];
    for call in std::iter::once(&step.call).chain(step.undo.as_ref()) {
        let action = known.catalog.action(&call.uses).ok();
        let schema = action.as_ref().map(|a| a.info().params.clone());
        let site_params: Vec<Vec<PathSegment>> = action
            .iter()
            .flat_map(|a| a.info().sites.iter())
            .map(|p| p.split('.').map(|k| PathSegment::Key(k.into())).collect())
            .collect();
        for slot in call.slots.iter().filter(|s| s.template.refs().iter().any(|(p, _)| p[0] == "item")) {
            let param = (!slot.key).then_some(()).and(schema.clone()).map(|s| (slot.path.as_slice(), s));
            let names_site = !slot.key && site_params.contains(&slot.path);
            reads.push(Read { template: &slot.template, param, names_site, uses: &call.uses });
        }
    }
    let fields = fields_read(step);
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
        for Read { template, param, names_site, uses } in &reads {
            if *names_site
                && !known.sites.is_empty()
                && let Ok(site) = template.render(&ItemOnly(item))
                && !known.sites.contains_key(&expr::display(&site))
            {
                let site = expr::display(&site);
                let names: Vec<&str> = known.sites.keys().map(String::as_str).collect();
                let hint = closest_match(&site, &names)
                    .map(|b| format!("did you mean `{b}`?"))
                    .unwrap_or_else(|| format!("defined sites: {}", names.join(", ")));
                problems.at(
                    file,
                    *pos,
                    format!("step `{id}`: item `{key}` names site `{site}`, which is not defined"),
                    hint,
                );
            }
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
                        uses,
                        wanted.join(" or ")
                    ),
                    format!("`drover actions {uses}` shows its parameters"),
                );
            }
        }
    }
}

/// Every `item.FIELD` a step reads — in its action's and its undo's parameters, its
/// condition and its confirmation — as the reference (`["item", "name"]`; `["item"]`: all of it).
pub(super) fn fields_read(step: &Step) -> Vec<&[String]> {
    let mut fields: Vec<&[String]> = vec![];
    if let Some((cond, _)) = &step.condition {
        cond.refs(&mut |r| {
            if r[0] == "item" {
                fields.push(r)
            }
        });
    }
    let slots = std::iter::once(&step.call).chain(step.undo.as_ref()).flat_map(|c| c.slots.iter());
    for t in step.confirm.iter().chain(slots.map(|s| &s.template)) {
        fields.extend(t.refs().into_iter().map(|(p, _)| p).filter(|p| p[0] == "item"));
    }
    fields
}

/// A step reads a fanned step's outputs only as its own item's instance: from a step fanned
/// over the same list.
pub(super) fn check_reads(rb: &Runbook, lists: &HashMap<String, Fanned>, problems: &mut Problems) {
    for step in &rb.steps {
        let mine = lists.get(&step.id);
        let mut refs: Vec<(Vec<String>, Pos)> = vec![];
        for call in std::iter::once(&step.call).chain(step.undo.as_ref()) {
            for slot in call.slots.iter() {
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
            let Some(theirs) = lists.get(other) else { continue };
            // Its own item's instance, or the instance of the item it belongs to.
            if mine.is_some_and(|m| m.source == theirs.source || m.parent.as_ref() == Some(&theirs.source)) {
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

/// The item alone: a site named by the item, resolved to check it at load.
struct ItemOnly<'a>(&'a Value);

impl crate::expr::Scope for ItemOnly<'_> {
    fn lookup(&self, path: &[String]) -> Result<Cow<'_, Value>, String> {
        match path.split_first() {
            Some((root, rest)) if root == "item" => {
                dig(self.0, rest).map(Cow::Borrowed).ok_or_else(|| "no such field".into())
            }
            _ => Err("not the item".into()),
        }
    }
}

/// Params and the outputs of the steps a run-time list is read from.
struct Discovered<'a> {
    params: &'a std::collections::BTreeMap<String, Value>,
    outputs: &'a std::collections::BTreeMap<String, drover_api::Outputs>,
}

impl crate::expr::Scope for Discovered<'_> {
    fn lookup(&self, path: &[String]) -> Result<Cow<'_, Value>, String> {
        match path {
            [root, id, outputs, key, rest @ ..] if root == "steps" && outputs == "outputs" => {
                let out = self.outputs.get(id).ok_or_else(|| format!("step `{id}` has not run"))?;
                let v = out.get(key).ok_or_else(|| format!("step `{id}` has no output `{key}`"))?;
                dig(v, rest)
                    .map(Cow::Borrowed)
                    .ok_or_else(|| format!("`{}` is not in step `{id}`'s output", path.join(".")))
            }
            _ => ParamsOnly(self.params).lookup(path).map(|v| Cow::Owned(v.into_owned())),
        }
    }
}

/// The steps a `for_each` reads its list from, if it reads any.
pub(super) fn reads_steps(fe: &ForEach) -> Option<Vec<String>> {
    let Items::Expr(t, _) = &fe.items else { return None };
    let ids: Vec<String> =
        t.refs().into_iter().filter(|(p, _)| p[0] == "steps").filter_map(|(p, _)| p.get(1).cloned()).collect();
    (!ids.is_empty()).then_some(ids)
}

/// A list read from steps' outputs is read before the first change: those steps, and every
/// step before them, only read (their plans read what their runs would), and run once.
pub(super) fn check_discovery(rb: &Runbook, known: &Known, step: &Step, reads: &[String], problems: &mut Problems) {
    let pos = step.for_each.as_ref().map_or(step.pos, |f| f.pos);
    let index: HashMap<&str, usize> = rb.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    for source in reads {
        let Some(&x) = index.get(source.as_str()) else { continue }; // reported by the reference check
        if rb.steps[x].for_each.is_some() {
            problems.in_runbook(
                pos,
                format!("step `{}`: for_each reads step `{source}`, which itself runs once per item", step.id),
                "read the list from a step that runs once, such as `ontap.snapmirror.list`",
            );
            continue;
        }
        let before = (0..rb.steps.len()).filter(|&j| j == x || known.dag.is_ancestor(j, x));
        for j in before {
            let s = &rb.steps[j];
            let changes = known.catalog.action(&s.call.uses).map(|a| a.info().side_effects).unwrap_or(true);
            if changes {
                problems.in_runbook(
                    pos,
                    format!(
                        "step `{}`: for_each reads step `{source}`, but step `{}` ({}) before it changes the world",
                        step.id, s.id, s.call.uses
                    ),
                    "a list read at run time is read before the first change: only steps that read may come before it",
                );
            }
        }
    }
}
