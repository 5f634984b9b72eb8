//! Checks that need more than one step at a time: actions exist and accept their parameters,
//! `needs` form a graph without cycles, and every `${{ }}` reference can be satisfied.

use std::collections::BTreeMap;

use serde_json::Value;

use drover_api::{PathSegment, closest_match};

use super::diag::Sink;
use super::model::{Call, Runbook, Site};
use super::yaml::{Node, Pos};
use crate::engine::graph::{Dag, GraphError};
use crate::registry::Registry;

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

fn step_node(rb: &Runbook, index: usize) -> Option<&Node> {
    rb.root.get("steps")?.items()?.get(rb.steps[index].item)
}

fn needs_pos(rb: &Runbook, index: usize, need: &str) -> Option<Pos> {
    let needs = step_node(rb, index)?.get("needs")?;
    if needs.as_str() == Some(need) {
        return Some(needs.pos);
    }
    needs.items()?.iter().find(|n| n.as_str() == Some(need)).map(|n| n.pos)
}

/// Each step's action exists and accepts its parameters.
pub fn actions(rb: &Runbook, registry: &Registry, sites: &BTreeMap<String, Site>, sink: &mut Sink) {
    for (i, step) in rb.steps.iter().enumerate() {
        let node = step_node(rb, i);
        check_call(&step.call, node.and_then(|n| n.get("with")), registry, sites, &step.id, sink);
        if let Some(undo) = &step.undo {
            let with = node.and_then(|n| n.get("undo")).and_then(|u| u.get("with"));
            check_call(undo, with, registry, sites, &step.id, sink);
        }
    }
}

fn check_call(
    call: &Call,
    with_node: Option<&Node>,
    registry: &Registry,
    sites: &BTreeMap<String, Site>,
    step: &str,
    sink: &mut Sink,
) {
    let action = match registry.get(&call.uses) {
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
        && let (Some(props), Some(with)) = (schema.get("properties").and_then(Value::as_object), call.with.as_object())
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
    if let Err(errors) = action.check_params(&call.with) {
        for e in errors {
            if depends_on_interpolation(&call.with, &e.path) {
                continue; // checked again at run time, once the value is known
            }
            if keys_checked && e.message.starts_with("unknown parameter") {
                continue; // reported above
            }
            let pos = with_node.map(|n| n.locate(&e.path)).unwrap_or(call.pos);
            let path: String = e.path.iter().map(|p| p.to_string()).collect();
            let place = if path.is_empty() { String::new() } else { format!(" (with{path})") };
            sink.error(
                pos,
                format!("step `{step}`: {}{place}", e.message),
                e.hint.or_else(|| Some(format!("`drover actions {}` shows its parameters", call.uses))),
            );
        }
    }
    // By convention `with.site` names a site; catch a typo before the run.
    if !sites.is_empty()
        && let Some(site) = call.with.get("site").and_then(Value::as_str)
        && !site.contains("${{")
        && !sites.contains_key(site)
    {
        let names: Vec<&str> = sites.keys().map(String::as_str).collect();
        let pos = with_node.and_then(|n| n.get("site")).map(|n| n.pos).unwrap_or(call.pos);
        let hint = closest_match(site, &names)
            .map(|b| format!("did you mean `{b}`?"))
            .unwrap_or_else(|| format!("defined sites: {}", names.join(", ")));
        sink.error(pos, format!("step `{step}`: site `{site}` is not defined"), Some(hint));
    }
}

fn depends_on_interpolation(with: &Value, path: &[PathSegment]) -> bool {
    let mut v = with;
    if contains_template(v) && path.is_empty() {
        return true;
    }
    for seg in path {
        let next = match seg {
            PathSegment::Key(k) => v.get(k),
            PathSegment::Index(i) => v.get(i),
        };
        match next {
            Some(n) => v = n,
            None => return false,
        }
        if let Value::String(s) = v
            && s.contains("${{")
        {
            return true;
        }
    }
    false
}

fn contains_template(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("${{"),
        Value::Array(a) => a.iter().any(contains_template),
        Value::Object(o) => o.values().any(contains_template),
        _ => false,
    }
}

const RUN_FIELDS: &[&str] = &["id", "dry_run", "runbook"];

/// Every reference names a declared param, a site, or an output of a step this step
/// depends on.
pub fn references(
    rb: &Runbook,
    dag: Option<&Dag>,
    registry: &Registry,
    sites: &BTreeMap<String, Site>,
    sink: &mut Sink,
) {
    let index: BTreeMap<&str, usize> = rb.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    for (i, step) in rb.steps.iter().enumerate() {
        let mut check = |path: &[String], pos: Pos, is_undo: bool| {
            check_ref(rb, dag, registry, sites, &index, i, path, pos, is_undo, sink);
        };
        for slot in &step.call.slots {
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
            for slot in &undo.slots {
                for (path, _) in slot.template.refs() {
                    check(path, slot.pos, true);
                }
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
    registry: &Registry,
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
            if !sites.is_empty() && !sites.contains_key(name) {
                let names: Vec<&str> = sites.keys().map(String::as_str).collect();
                err(format!("unknown site `{name}`"), format!("defined sites: {}", names.join(", ")));
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
                    if let Ok(action) = registry.get(&rb.steps[j].call.uses) {
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
        _ => err(
            format!("unknown reference `{text}`"),
            "references start with `params.`, `steps.`, `sites.` or `run.`".into(),
        ),
    }
}
