//! Checks that need more than one step at a time: actions exist and accept their parameters,
//! `needs` form a graph without cycles, and every `${{ }}` reference can be satisfied.

use std::collections::BTreeMap;

use serde_json::Value;

use drover_api::{PathSegment, ValueType, closest_match, schema};

use super::diag::Sink;
use super::expr::Template;
use super::model::{Call, Runbook, Site};
use super::yaml::{Node, Pos};
use crate::Catalog;
use crate::decode::CONVENTIONAL_SECRETS;
use drover_model::graph::{Dag, GraphError};

/// Each site's sections are ones a plugin reads, and each is what that plugin expects:
/// `urll:` under `ontap:`, or `ontapp:` itself, is found here with the sites file's line.
pub fn sites(sites: &BTreeMap<String, Site>, catalog: &dyn Catalog, found: &mut super::Diagnostics) {
    let known = catalog.section_names();
    if known.is_empty() {
        return; // a registry without plugins (engine tests): nothing to check against
    }
    for (name, site) in sites {
        let mut sink = Sink::new(&site.file);
        for (key_node, section_node) in site.node.entries().unwrap_or_default() {
            let key = key_node.as_key();
            let place = format!("sites.{name}.{key}");
            let Some(section) = catalog.site_section(&key) else {
                if catalog.has_external(&key) {
                    // An external plugin's own section: only the conventional secret names.
                    super::decode::check_inline_secrets(section_node, &place, CONVENTIONAL_SECRETS, &mut sink);
                    continue;
                }
                let hint = match closest_match(&key, &known) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!("plugins read these sections: {}", known.join(", ")),
                };
                sink.error(key_node.pos, format!("site `{name}`: unknown section `{key}`"), Some(hint));
                continue;
            };
            let declared = section.secret_settings();
            let secrets: Vec<&str> = declared.iter().map(String::as_str).collect();
            super::decode::check_inline_secrets(section_node, &place, &secrets, &mut sink);
            if let Err(errors) = section.check(&section_node.to_json()) {
                for e in errors {
                    // An inline secret was reported already, without echoing it.
                    if e.path.last().is_some_and(|p| matches!(p, PathSegment::Key(k) if secrets.contains(&k.as_str())))
                    {
                        continue;
                    }
                    let path: String = e.path.iter().map(|p| p.to_string()).collect();
                    let message = e
                        .message
                        .replace("unknown parameter", "unknown setting")
                        .replace("missing parameter", "missing setting");
                    // An unknown or misspelt setting is pointed at by its key.
                    let pos = match e.path.split_last() {
                        Some((PathSegment::Key(k), parent)) if e.message.starts_with("unknown") => {
                            let parent_pos = section_node.locate(parent);
                            section_node
                                .get_path(parent)
                                .and_then(|n| n.key_node(k))
                                .map(|n| n.pos)
                                .unwrap_or(parent_pos)
                        }
                        _ => section_node.locate(&e.path),
                    };
                    sink.error(
                        pos,
                        format!("site `{name}`: {message} ({key}{path})"),
                        e.hint.or_else(|| Some(format!("`{key}:` is {}", section.summary))),
                    );
                }
            }
        }
        found.extend(sink.found);
    }
}

/// Build the graph and report unknown needs and cycles.
pub fn graph(rb: &Runbook, sink: &mut Sink) -> Option<Dag> {
    match Dag::build(rb.steps.iter().map(|s| (s.id.as_str(), s.needs.as_slice()))) {
        Ok(dag) => Some(dag),
        Err(errors) => {
            for e in errors {
                match e {
                    GraphError::UnknownNeed { step, need, suggestion } => {
                        let s = &rb.steps[step];
                        let pos = needs_pos(rb, step, &need).unwrap_or(s.pos);
                        let hint = match suggestion {
                            Some(b) => format!("did you mean `{b}`?"),
                            None => "`needs` lists ids of other steps in this runbook".into(),
                        };
                        sink.error(pos, format!("step `{}` needs `{need}`, which is not a step", s.id), Some(hint));
                    }
                    GraphError::Cycle { path } => {
                        let names: Vec<&str> = path.iter().map(|&i| rb.steps[i].id.as_str()).collect();
                        let first = &rb.steps[path[0]];
                        sink.error(
                            first.pos,
                            format!("dependency cycle: {}", names.join(" -> ")),
                            Some("remove one of these `needs` so the steps can run in some order".into()),
                        );
                    }
                }
            }
            None
        }
    }
}

/// `prepare_after` names steps this one needs (directly or through others), and its action
/// has something to do ahead of its turn.
pub fn prepare_after(rb: &Runbook, dag: Option<&Dag>, catalog: &dyn Catalog, sink: &mut Sink) {
    for (i, step) in rb.steps.iter().enumerate().filter(|(_, s)| !s.prepare_after.is_empty()) {
        let at = |name: &str| list_pos(rb, i, "prepare_after", name).unwrap_or(step.pos);
        if let Ok(action) = catalog.action(&step.call.uses)
            && action.info().prepares.is_none()
        {
            let pos = step_node(rb, i).and_then(|n| n.get("prepare_after")).map_or(step.pos, |n| n.pos);
            sink.error(
                pos,
                format!(
                    "step `{}`: `{}` does nothing ahead of its turn, so `prepare_after` has no effect",
                    step.id, step.call.uses
                ),
                Some("remove `prepare_after` (`drover actions` says which actions prepare)".into()),
            );
            continue;
        }
        for name in &step.prepare_after {
            let Some(j) = rb.steps.iter().position(|s| &s.id == name) else {
                sink.error(
                    at(name),
                    format!("step `{}`: prepare_after `{name}`, which is not a step", step.id),
                    Some("`prepare_after` lists ids of steps this one needs".into()),
                );
                continue;
            };
            if dag.is_some_and(|d| !d.is_ancestor(j, i)) {
                sink.error(
                    at(name),
                    format!("step `{}`: prepare_after `{name}`, which it does not need", step.id),
                    Some(format!("the step must wait for `{name}` anyway: add it to `needs` (directly or through a step it needs)")),
                );
            }
        }
    }
}

fn step_node(rb: &Runbook, index: usize) -> Option<&Node> {
    rb.root.get("steps")?.items()?.get(rb.steps[index].item)
}

fn needs_pos(rb: &Runbook, index: usize, need: &str) -> Option<Pos> {
    list_pos(rb, index, "needs", need)
}

/// Where a step's list of step ids (`needs`, `prepare_after`) names `id`.
fn list_pos(rb: &Runbook, index: usize, key: &str, id: &str) -> Option<Pos> {
    let list = step_node(rb, index)?.get(key)?;
    if list.as_str() == Some(id) {
        return Some(list.pos);
    }
    list.items()?.iter().find(|n| n.as_str() == Some(id)).map(|n| n.pos)
}

/// Each step's action exists and accepts its parameters.
pub fn actions(
    rb: &Runbook,
    catalog: &dyn Catalog,
    sites: &BTreeMap<String, Site>,
    params: &BTreeMap<String, Value>,
    sink: &mut Sink,
) {
    for (i, step) in rb.steps.iter().enumerate() {
        let node = step_node(rb, i);
        let call = Checked { rb, catalog, sites, params, step: &step.id };
        call.check(&step.call, node.and_then(|n| n.get("with")), sink);
        if let Some(undo) = &step.undo {
            let with = node.and_then(|n| n.get("undo")).and_then(|u| u.get("with"));
            call.check(undo, with, sink);
        }
    }
}

/// The static type of a reference: a param's declared type, an output's declared type.
pub fn reference_type(rb: &Runbook, catalog: &dyn Catalog, path: &[String]) -> ValueType {
    let at = |i: usize| path.get(i).map(String::as_str);
    match (at(0), path.len()) {
        (Some("params"), 2) => rb.param(&path[1]).map(|p| p.ty.value_type()).unwrap_or(ValueType::Any),
        (Some("run"), 2) if at(1) == Some("dry_run") => ValueType::Bool,
        (Some("run"), 2) => ValueType::String,
        (Some("steps"), 3) if at(2) == Some("outcome") => ValueType::String,
        (Some("steps"), 4) if at(2) == Some("outputs") => rb
            .step(&path[1])
            .and_then(|s| catalog.action(&s.call.uses).ok())
            .and_then(|a| a.info().outputs.iter().find(|o| o.name == path[3]).map(|o| o.ty))
            .unwrap_or(ValueType::Any),
        _ => ValueType::Any,
    }
}

/// One call (`uses` + `with`) of a step, checked against its action.
struct Checked<'a> {
    rb: &'a Runbook,
    catalog: &'a dyn Catalog,
    sites: &'a BTreeMap<String, Site>,
    params: &'a BTreeMap<String, Value>,
    step: &'a str,
}

impl Checked<'_> {
    fn check(&self, call: &Call, with_node: Option<&Node>, sink: &mut Sink) {
        let step = self.step;
        let action = match self.catalog.action(&call.uses) {
            Ok(a) => a,
            Err(e) => {
                sink.error(call.pos, format!("step `{step}`: {}", e.message), Some(e.hint));
                return;
            }
        };
        // Unknown keys first, all of them: serde below stops at its first problem.
        let schema = &action.info().params;
        let keys_checked = schema.get("additionalProperties") == Some(&Value::Bool(false));
        if keys_checked
            && let (Some(props), Some(with)) =
                (schema.get("properties").and_then(Value::as_object), call.with.as_object())
        {
            let known: Vec<&str> = props.keys().map(String::as_str).collect();
            for key in with.keys().filter(|k| !props.contains_key(*k)) {
                let pos = with_node.and_then(|n| n.key_node(key)).map(|n| n.pos).unwrap_or(call.pos);
                let hint = closest_match(key, &known)
                    .map(|b| format!("did you mean `{b}`?"))
                    .unwrap_or_else(|| format!("valid keys: {}", known.join(", ")));
                sink.error(pos, format!("step `{step}`: unknown parameter `{key}` (with.{key})"), Some(hint));
            }
        }
        // Every expression has a type before the run: check it against what its place takes,
        // then stand in a value of that place for it, so the rest of `with:` (required keys,
        // literal values) is checked as if the run were here.
        let mut probe = (*call.with).clone();
        // Places holding a stand-in (unknown until the run), and places holding a value made
        // from params (known now, so checked now: `${{ params.dr_address }}` must be an address).
        let mut stand_ins: Vec<&[PathSegment]> = vec![];
        let mut from_params: Vec<(&[PathSegment], String)> = vec![];
        for slot in call.slots.iter().filter(|s| !s.key) {
            let have = slot.template.static_type(&|p| reference_type(self.rb, self.catalog, p));
            let place = schema::at(schema, &slot.path);
            if let Some(place) = place
                && let Some(want) = schema::accepts(schema, place)
                && !want.is_empty()
                && !schema::fits(have, &want)
            {
                let path: String = slot.path.iter().map(|p| p.to_string()).collect();
                let wanted: Vec<&str> = want.iter().map(|t| t.name()).collect();
                let what = match slot.template.only_ref() {
                    Some(r) if r.first().map(String::as_str) == Some("params") && r.len() == 2 => {
                        format!("param `{}` is {}", r[1], have.name())
                    }
                    Some(r) => format!("`{}` is {}", r.join("."), have.name()),
                    None => format!("the expression is {}", have.name()),
                };
                sink.error(
                    slot.pos,
                    format!("step `{step}`: with{path}: {what}, but `{}` takes {}", call.uses, wanted.join(" or ")),
                    Some(format!("`drover actions {}` shows its parameters", call.uses)),
                );
                stand_ins.push(&slot.path);
                continue;
            }
            let value = match slot.template.render(&ParamsOnly(self.params)) {
                Ok(v) => {
                    let v = schema::as_param(schema, &slot.path, v);
                    from_params.push((&slot.path, template_text(&slot.template, with_node, &slot.path)));
                    v
                }
                Err(_) => {
                    stand_ins.push(&slot.path);
                    match place.map(|p| schema::sample(schema, p)) {
                        Some(v) if !v.is_null() => v,
                        _ => schema::sample_of(have),
                    }
                }
            };
            set(&mut probe, &slot.path, value);
        }
        if let Err(errors) = action.check_params(&probe) {
            for e in errors {
                let structural =
                    e.message.starts_with("missing parameter") || e.message.starts_with("unknown parameter");
                // A problem with a stand-in, or with a value holding one, is for the run to find.
                // (A missing key of the whole `with:` is not about a stand-in inside it.)
                let inside = stand_ins.iter().any(|f| e.path.starts_with(f));
                let around = stand_ins.iter().any(|f| f.starts_with(&e.path));
                if inside || (around && !structural) {
                    continue;
                }
                if keys_checked && e.message.starts_with("unknown parameter") {
                    continue; // reported above
                }
                let pos = with_node.map(|n| n.locate(&e.path)).unwrap_or(call.pos);
                let path: String = e.path.iter().map(|p| p.to_string()).collect();
                let place = if path.is_empty() { String::new() } else { format!(" (with{path})") };
                let source = from_params
                    .iter()
                    .find(|(f, _)| e.path.starts_with(f) || f.starts_with(&e.path))
                    .map(|(_, text)| format!(", from `{text}`"))
                    .unwrap_or_default();
                sink.error(
                    pos,
                    format!("step `{step}`: {}{place}{source}", e.message),
                    e.hint.or_else(|| Some(format!("`drover actions {}` shows its parameters", call.uses))),
                );
            }
        }
        // Parameters the action declares as naming a site must name a defined one.
        if self.sites.is_empty() || self.rb.step(step).is_some_and(|s| skipped_by_params(s, self.params)) {
            return;
        }
        for site_path in &action.info().sites {
            let segments: Vec<PathSegment> = site_path.split('.').map(|k| PathSegment::Key(k.into())).collect();
            let Some(written) = get(&call.with, &segments).and_then(Value::as_str) else {
                continue;
            };
            // `${{ params.dr }}` is known at load time once the params are.
            let (site, from) = match Template::parse(written) {
                Ok(None) => (written.to_string(), String::new()),
                Ok(Some(t)) => match t.render(&ParamsOnly(self.params)) {
                    Ok(v) => (super::expr::display(&v), format!(" (from `{written}`)")),
                    Err(_) => continue, // depends on a step's output: checked when it runs
                },
                Err(_) => continue,
            };
            let site = site.as_str();
            if self.sites.contains_key(site) {
                continue;
            }
            let names: Vec<&str> = self.sites.keys().map(String::as_str).collect();
            let pos = with_node.map(|n| n.locate(&segments)).unwrap_or(call.pos);
            let hint = closest_match(site, &names)
                .map(|b| format!("did you mean `{b}`?"))
                .unwrap_or_else(|| format!("defined sites: {}", names.join(", ")));
            sink.error(
                pos,
                format!("step `{step}`: site `{site}`{from} is not defined (with.{site_path})"),
                Some(hint),
            );
        }
    }
}

/// The template as written at `path`, for messages.
fn template_text(t: &Template, with_node: Option<&Node>, path: &[PathSegment]) -> String {
    let mut node = with_node;
    for seg in path {
        node = node.and_then(|n| match seg {
            PathSegment::Key(k) => n.get(k),
            PathSegment::Index(i) => n.items().and_then(|items| items.get(*i)),
        });
    }
    node.and_then(|n| n.as_str().map(String::from)).unwrap_or_else(|| format!("{t:?}"))
}

/// Whether the step's `if:` is false with these params alone (it reads no step's outputs).
pub fn skipped_by_params(step: &super::Step, params: &BTreeMap<String, Value>) -> bool {
    step.condition.as_ref().is_some_and(|(cond, _)| cond.holds(&ParamsOnly(params)).is_ok_and(|holds| !holds))
}

/// Params only: what a template can be resolved to at load time.
pub(crate) struct ParamsOnly<'a>(pub(crate) &'a BTreeMap<String, Value>);

impl super::expr::Scope for ParamsOnly<'_> {
    fn lookup(&self, path: &[String]) -> Result<std::borrow::Cow<'_, Value>, String> {
        match (path.first().map(String::as_str), path.get(1), path.len()) {
            (Some("params"), Some(name), 2) => {
                self.0.get(name).map(std::borrow::Cow::Borrowed).ok_or_else(|| format!("no value for {name}"))
            }
            _ => Err("not a param".into()),
        }
    }
}

fn get<'v>(mut v: &'v Value, path: &[PathSegment]) -> Option<&'v Value> {
    for seg in path {
        v = match seg {
            PathSegment::Key(k) => v.get(k)?,
            PathSegment::Index(i) => v.get(i)?,
        };
    }
    Some(v)
}

fn set(v: &mut Value, path: &[PathSegment], new: Value) {
    let mut target = v;
    for seg in path {
        let next = match seg {
            PathSegment::Key(k) => target.get_mut(k.as_str()),
            PathSegment::Index(i) => target.get_mut(*i),
        };
        match next {
            Some(n) => target = n,
            None => return,
        }
    }
    *target = new;
}

const RUN_FIELDS: &[&str] = &["id", "dry_run", "runbook"];

/// Every reference names a declared param, a site, or an output of a step this step
/// depends on.
pub fn references(
    rb: &Runbook,
    dag: Option<&Dag>,
    catalog: &dyn Catalog,
    sites: &BTreeMap<String, Site>,
    params: &BTreeMap<String, Value>,
    sink: &mut Sink,
) {
    let index: BTreeMap<&str, usize> = rb.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    let none = BTreeMap::new();
    for (i, step) in rb.steps.iter().enumerate() {
        // A step the params switch off (`lb: none` → `switch_lb: false`) needs no site.
        let sites = if skipped_by_params(step, params) { &none } else { sites };
        let mut check = |path: &[String], pos: Pos, is_undo: bool| {
            check_ref(rb, dag, catalog, sites, &index, i, path, pos, is_undo, sink);
        };
        for slot in step.call.slots.iter() {
            for (path, _) in slot.template.refs() {
                check(path, slot.pos, false);
            }
        }
        if let Some((cond, _)) = &step.condition {
            let pos = step_node(rb, i).and_then(|n| n.get("if")).map(|n| n.pos).unwrap_or(step.pos);
            let mut refs = vec![];
            cond.refs(&mut |r| refs.push(r.to_vec()));
            for r in refs {
                check(&r, pos, false);
            }
        }
        if let Some(undo) = &step.undo {
            for slot in undo.slots.iter() {
                for (path, _) in slot.template.refs() {
                    check(path, slot.pos, true);
                }
            }
        }
        if let Some(super::model::ForEach { items: super::model::Items::Expr(t, _), pos, .. }) = &step.for_each {
            for (path, _) in t.refs() {
                check(path, *pos, false);
            }
        }
        if let Some(t) = &step.confirm {
            let pos = step_node(rb, i).and_then(|n| n.get("confirm")).map(|n| n.pos).unwrap_or(step.pos);
            for (path, _) in t.refs() {
                check(path, pos, false);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_ref(
    rb: &Runbook,
    dag: Option<&Dag>,
    catalog: &dyn Catalog,
    sites: &BTreeMap<String, Site>,
    index: &BTreeMap<&str, usize>,
    me: usize,
    path: &[String],
    pos: Pos,
    is_undo: bool,
    sink: &mut Sink,
) {
    let id = &rb.steps[me].id;
    let text = path.join(".");
    let mut err = |msg: String, hint: String| sink.error(pos, format!("step `{id}`: {msg}"), Some(hint));
    match path.first().map(String::as_str) {
        Some("params") => {
            let Some(name) = path.get(1) else {
                return err(format!("`{text}` needs a param name"), "write `params.NAME`".into());
            };
            if rb.param(name).is_none() {
                let names: Vec<&str> = rb.params.iter().map(|p| p.name.as_str()).collect();
                let hint =
                    closest_match(name, &names).map(|b| format!("did you mean `params.{b}`?")).unwrap_or_else(|| {
                        format!(
                            "declare it under `params:` (declared: {})",
                            if names.is_empty() { "none".into() } else { names.join(", ") }
                        )
                    });
                err(format!("unknown param `{name}`"), hint);
            }
        }
        Some("sites") => {
            let Some(name) = path.get(1) else {
                return err(format!("`{text}` needs a site name"), "write `sites.NAME.FIELD`".into());
            };
            if sites.is_empty() {
                return; // `validate` without a sites file: sites come at run time
            }
            let Some(site) = sites.get(name) else {
                let names: Vec<&str> = sites.keys().map(String::as_str).collect();
                return err(format!("unknown site `{name}`"), format!("defined sites: {}", names.join(", ")));
            };
            let Some(section) = path.get(2) else { return };
            let declared = catalog.site_section(section);
            if let Some(d) = declared
                && d.has_field(&path[3..]) == Some(false)
            {
                let fields = d.fields();
                let hint = closest_match(&path[3], &fields)
                    .map(|b| format!("did you mean `{b}`?"))
                    .unwrap_or_else(|| format!("`{section}:` has: {}", fields.join(", ")));
                return err(format!("`{section}:` site sections have no `{}`", path[3..].join(".")), hint);
            }
            let mut value = Some(&site.settings);
            for key in &path[2..] {
                value = value.and_then(|v| v.get(key));
            }
            if value.is_none() {
                err(
                    format!("`{text}` is not set: site `{name}` has no {}", path[2..].join(".")),
                    format!("add `{}` under sites.{name} in the sites file", path[2..].join(".")),
                );
            }
        }
        Some("run") => {
            if !path.get(1).is_some_and(|f| RUN_FIELDS.contains(&f.as_str())) || path.len() != 2 {
                err(format!("unknown reference `{text}`"), format!("`run.` offers: {}", RUN_FIELDS.join(", ")));
            }
        }
        Some("steps") => {
            let Some(other) = path.get(1) else {
                return err(format!("`{text}` needs a step id"), "write `steps.ID.outputs.KEY`".into());
            };
            let Some(&j) = index.get(other.as_str()) else {
                let ids: Vec<&str> = index.keys().copied().collect();
                let hint = closest_match(other, &ids)
                    .map(|b| format!("did you mean `{b}`?"))
                    .unwrap_or_else(|| "name a step of this runbook".into());
                return err(format!("references unknown step `{other}`"), hint);
            };
            let own_outputs = is_undo && j == me;
            // Without a graph (a cycle was reported) ancestry cannot be judged.
            if !own_outputs && dag.is_some_and(|d| !d.is_ancestor(j, me)) {
                return err(
                    format!("reads `{text}`, but does not depend on step `{other}`"),
                    format!("add `{other}` to this step's `needs` (directly or through another step)"),
                );
            }
            match path.get(2).map(String::as_str) {
                Some("outcome") if path.len() == 3 => {}
                Some("outputs") if path.len() >= 4 => {
                    let key = &path[3];
                    if let Ok(action) = catalog.action(&rb.steps[j].call.uses) {
                        let declared: Vec<&str> = action.info().outputs.iter().map(|o| o.name.as_str()).collect();
                        if !declared.is_empty() && !action.info().open_outputs && !declared.contains(&key.as_str()) {
                            let hint =
                                closest_match(key, &declared).map(|b| format!("did you mean `{b}`?")).unwrap_or_else(
                                    || format!("`{}` outputs: {}", rb.steps[j].call.uses, declared.join(", ")),
                                );
                            err(format!("step `{other}` has no output `{key}`"), hint);
                        }
                    }
                }
                _ => err(
                    format!("unknown reference `{text}`"),
                    "write `steps.ID.outputs.KEY` or `steps.ID.outcome`".into(),
                ),
            }
        }
        Some("item") => {
            if rb.steps[me].for_each.is_none() {
                err(
                    format!("reads `{text}`, but runs once, not for each item of a list"),
                    "add `for_each:` to this step, or read a param instead".into(),
                );
            }
        }
        _ => err(
            format!("unknown reference `{text}`"),
            "references start with `params.`, `steps.`, `sites.` or `run.` (and `item.` in a step with `for_each`)"
                .into(),
        ),
    }
}
