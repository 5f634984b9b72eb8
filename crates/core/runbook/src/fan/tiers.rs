//! Tiers: the items of a fleet recover tier by tier, as protection groups do in VMware SRM —
//! every item of tier 1 has finished (restored and serving, or failed) before the first step
//! of any tier-2 item starts; items within a tier run in parallel. Each tier's end is a step
//! of its own, `tier[NAME]`, so the journal and the report say when each tier was done.
//!
//! In an all-or-nothing tier a failed item stops the run (and the next tier never starts);
//! otherwise, with `isolate`, a failed item stops only its own steps.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use drover_api::{Action, ActionError, ActionInfo, Outputs, ParamError, Plan, StepContext, closest_match};

use super::items::resolve_items;
use super::{Fanned, Known, Problems, Shared, dig, instance_id};
use crate::expr;
use crate::model::*;

/// The action of a tier's end: it changes nothing.
pub const TIER_ACTION: &str = "drover.tier";

#[derive(Debug, Clone)]
pub(crate) struct Tier {
    pub name: String,
    pub all_or_nothing: bool,
}

/// A list's tiers in the order they run, and each item's tier (an index into `order`).
#[derive(Debug, Clone)]
pub(crate) struct Tiers {
    pub order: Vec<Tier>,
    pub of_item: Vec<usize>,
}

const TIER_KEYS: &[&str] = &["name", "all_or_nothing", "description"];

/// The tiers of `list`: declared in `for_each.tiers` (in order), else the ones its items name,
/// sorted (numbers as numbers). Every item must name a declared tier.
pub(super) fn resolve(
    step: &Step,
    fe: &ForEach,
    list: &Fanned,
    known: &Known,
    problems: &mut Problems,
) -> Option<Tiers> {
    let field = fe.tier.as_deref()?;
    let id = &step.id;
    let mut names: Vec<Option<String>> = vec![];
    for (n, item) in list.items.iter().enumerate() {
        let (file, pos) = &list.places[n];
        match dig(item, &[field.to_string()]) {
            Some(v @ (Value::String(_) | Value::Number(_))) => names.push(Some(expr::display(v))),
            _ => {
                let key = list.keys.get(n).map(String::as_str).unwrap_or("?");
                problems.at(
                    file,
                    *pos,
                    format!("step `{id}`: item `{key}` has no `{field}`, which names its tier"),
                    format!("add `{field}: …` to the item"),
                );
                names.push(None);
            }
        }
    }
    let order: Vec<Tier> = match &fe.tiers {
        Some(source) => declared(step, source, known, problems)?,
        None => {
            let distinct: BTreeSet<&String> = names.iter().flatten().collect();
            let mut sorted: Vec<&String> = distinct.into_iter().collect();
            sorted.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => x.total_cmp(&y),
                _ => a.cmp(b),
            });
            sorted.into_iter().map(|name| Tier { name: name.clone(), all_or_nothing: false }).collect()
        }
    };
    let index: HashMap<&str, usize> = order.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    let mut of_item = Vec::with_capacity(names.len());
    for (n, name) in names.iter().enumerate() {
        let Some(name) = name else { continue };
        match index.get(name.as_str()) {
            Some(&i) => of_item.push(i),
            None => {
                let (file, pos) = &list.places[n];
                let all: Vec<&str> = order.iter().map(|t| t.name.as_str()).collect();
                let hint = closest_match(name, &all)
                    .map(|b| format!("did you mean `{b}`?"))
                    .unwrap_or_else(|| format!("the tiers are: {}", all.join(", ")));
                problems.at(
                    file,
                    *pos,
                    format!("step `{id}`: item `{}` names tier `{name}`, which is not declared", list.keys[n]),
                    hint,
                );
            }
        }
    }
    if of_item.len() != list.items.len() {
        return None;
    }
    // Tiers no item names are left out: nothing waits for an empty tier to end.
    let used: BTreeSet<usize> = of_item.iter().copied().collect();
    let renumber: HashMap<usize, usize> = used.iter().enumerate().map(|(new, &old)| (old, new)).collect();
    let order = order.into_iter().enumerate().filter(|(i, _)| used.contains(i)).map(|(_, t)| t).collect();
    Some(Tiers { order, of_item: of_item.iter().map(|i| renumber[i]).collect() })
}

/// `tiers: [core, { name: business, all_or_nothing: true }]`, written or from a param.
fn declared(step: &Step, source: &Items, known: &Known, problems: &mut Problems) -> Option<Vec<Tier>> {
    let fe = step.for_each.as_ref()?;
    let (items, _, places) = resolve_items(step, source, fe.pos, "for_each.tiers", known, problems)?;
    let mut out: Vec<Tier> = vec![];
    for (n, item) in items.iter().enumerate() {
        let (file, pos) = &places[n];
        let tier = match item {
            Value::String(_) | Value::Number(_) => Some(Tier { name: expr::display(item), all_or_nothing: false }),
            Value::Object(map) => {
                if let Some(bad) = map.keys().find(|k| !TIER_KEYS.contains(&k.as_str())) {
                    problems.at(
                        file,
                        *pos,
                        format!("tier {}: unknown key `{bad}`", n + 1),
                        format!("a tier has: {}", TIER_KEYS.join(", ")),
                    );
                }
                match (map.get("name"), map.get("all_or_nothing")) {
                    (Some(name @ (Value::String(_) | Value::Number(_))), None | Some(Value::Bool(_))) => Some(Tier {
                        name: expr::display(name),
                        all_or_nothing: map.get("all_or_nothing").and_then(Value::as_bool).unwrap_or(false),
                    }),
                    (Some(Value::String(_) | Value::Number(_)), Some(_)) => {
                        problems.at(
                            file,
                            *pos,
                            format!("tier {}: all_or_nothing must be true or false", n + 1),
                            "write `all_or_nothing: true`",
                        );
                        None
                    }
                    _ => {
                        problems.at(
                            file,
                            *pos,
                            format!("tier {} has no `name`", n + 1),
                            "write `- { name: core, all_or_nothing: true }`",
                        );
                        None
                    }
                }
            }
            _ => {
                problems.at(
                    file,
                    *pos,
                    format!("tier {} is not a name or a mapping", n + 1),
                    "write `- core` or `- { name: core }`",
                );
                None
            }
        };
        let Some(tier) = tier else { continue };
        if out.iter().any(|t| t.name == tier.name) {
            problems.at(
                file,
                *pos,
                format!("tier `{}` is declared twice", tier.name),
                "declare each tier once, in the order they run",
            );
            continue;
        }
        out.push(tier);
    }
    Some(out)
}

pub fn end_id(tier: &str) -> String {
    instance_id("tier", tier)
}

/// The steps that end each tier, and where they go.
pub(super) struct Ends {
    pub steps: Vec<Step>,
    /// Fanned steps (indices as written) with no fanned step of the same list before them but
    /// those that run before the tiers: an item's tier starts with these, so they wait for
    /// the tier before.
    pub roots: BTreeSet<usize>,
    /// The step as written after whose instances the tier ends are listed.
    pub last: Option<usize>,
}

/// One `tier[NAME]` step per tier but the last: it needs the last steps of every item of its
/// tier (whatever their outcome, unless the tier is all-or-nothing) and the tier before.
pub(super) fn ends(
    rb: &Runbook,
    dag: &drover_model::graph::Dag,
    lists: &HashMap<String, Fanned>,
    shared: &std::collections::BTreeMap<String, Shared>,
    problems: &mut Problems,
) -> Ends {
    let mut out = Ends { steps: vec![], roots: BTreeSet::new(), last: None };
    let Some((source, tiers)) = shared.iter().find_map(|(s, sh)| sh.tiers.as_ref().map(|t| (s, t))) else {
        return out;
    };
    // The steps of the tiered list, and of the lists whose items belong to its items; those
    // that run after the tiers are no tier's (no tier ends waiting for them).
    let after = |i: usize| rb.steps[i].for_each.as_ref().is_some_and(|f| f.after_tiers);
    let members: Vec<usize> = (0..rb.steps.len())
        .filter(|&i| lists.get(&rb.steps[i].id).is_some_and(|f| f.root() == source) && !after(i))
        .collect();
    let before = |i: usize| rb.steps[i].for_each.as_ref().is_some_and(|f| f.before_tiers);
    out.roots = members
        .iter()
        .copied()
        .filter(|&i| !before(i) && !members.iter().any(|&j| j != i && !before(j) && dag.is_ancestor(j, i)))
        .collect();
    for &i in members.iter().filter(|&&i| before(i)) {
        if let Some(&j) = members.iter().find(|&&j| !before(j) && dag.is_ancestor(j, i)) {
            let step = &rb.steps[i];
            problems.in_runbook(
                step.for_each.as_ref().map_or(step.pos, |f| f.pos),
                format!(
                    "step `{}` runs before the tiers, but it comes after `{}`, which runs in its item's tier",
                    step.id, rb.steps[j].id
                ),
                "drop `before_tiers` here, or let the step come before every tiered step",
            );
        }
    }
    let sinks: Vec<usize> =
        members.iter().copied().filter(|&i| !members.iter().any(|&j| j != i && dag.is_ancestor(i, j))).collect();
    out.last = members.last().copied();
    let Some(&first) = members.first() else { return out };
    let template = &rb.steps[first];
    let Some(owner) = lists.values().find(|f| &f.source == source) else { return out };
    let tier_of: HashMap<&str, usize> =
        owner.keys.iter().enumerate().map(|(n, k)| (k.as_str(), tiers.of_item[n])).collect();
    for (k, tier) in tiers.order.iter().enumerate().take(tiers.order.len().saturating_sub(1)) {
        let mut needs: Vec<String> = k.checked_sub(1).map(|b| end_id(&tiers.order[b].name)).into_iter().collect();
        for &s in &sinks {
            let id = &rb.steps[s].id;
            let list = &lists[id];
            needs.extend(
                (0..list.keys.len())
                    .filter(|&n| tier_of.get(list.unit(n)) == Some(&k))
                    .map(|n| instance_id(id, &list.keys[n])),
            );
        }
        out.steps.push(Step {
            id: end_id(&tier.name),
            description: format!("every item of tier {} has finished; the next tier may start", tier.name),
            call: Call { uses: TIER_ACTION.into(), with: Arc::new(json!({})), slots: Arc::new([]), pos: template.pos },
            needs,
            prepare_after: vec![],
            condition: None,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            continue_on_error: false,
            undo: None,
            confirm: None,
            confirm_text: None,
            lock: None,
            always: false,
            point_of_no_return: false,
            pos: template.pos,
            item: template.item,
            for_each: None,
            instance: None,
            after_any_outcome: !tier.all_or_nothing,
        });
    }
    out
}

/// The action of `tier[NAME]` steps.
pub struct TierDone(ActionInfo);

impl Default for TierDone {
    fn default() -> Self {
        TierDone(ActionInfo {
            name: TIER_ACTION.into(),
            summary: "The end of a tier: the next tier starts after it".into(),
            params: json!({ "type": "object" }),
            outputs: vec![],
            side_effects: false,
            undo: false,
            open_outputs: false,
            sites: vec![],
            rpo_output: None,
            prepares: None,
        })
    }
}

#[async_trait]
impl Action for TierDone {
    fn info(&self) -> &ActionInfo {
        &self.0
    }
    fn check_params(&self, _: &Value) -> Result<(), Vec<ParamError>> {
        Ok(())
    }
    async fn plan(&self, _: &StepContext, _: &Value) -> Result<Plan, ActionError> {
        Ok(Plan::new("the tier has ended; the next one starts"))
    }
    async fn run(&self, _: &StepContext, _: &Value) -> Result<Outputs, ActionError> {
        Ok(Outputs::new())
    }
}
