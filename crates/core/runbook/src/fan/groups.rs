//! Lists whose items belong to another list's items: each volume relationship names the
//! application it belongs to (`for_each: { items: ..., belongs_to: app }`). A volume's steps
//! then pair with its application's steps in both directions — `quiesce[svm_dr:orders_db]`
//! waits for `fence[orders]` only, `restore[orders]` for the breaks of orders' volumes only —
//! and a volume shares its application's tier, failure and report line.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{Fanned, Problems, dig};
use crate::expr;
use crate::model::*;

/// Find each `belongs_to` list's owner list and every item's owner; problems at the item.
pub(super) fn resolve(rb: &Runbook, lists: &mut HashMap<String, Fanned>, problems: &mut Problems) {
    let mut declared: BTreeMap<String, (&str, &Step)> = BTreeMap::new();
    for step in &rb.steps {
        let (Some(fe), Some(list)) = (&step.for_each, lists.get(&step.id)) else { continue };
        let Some(field) = fe.belongs_to.as_deref() else { continue };
        match declared.get(&list.source) {
            Some((first, _)) if *first != field => problems.in_runbook(
                fe.pos,
                format!(
                    "step `{}`: belongs_to `{field}` differs from `{first}` declared for `{}`",
                    step.id, list.source
                ),
                "declare belongs_to once, on one step fanned over the list",
            ),
            Some(_) => {}
            None => {
                declared.insert(list.source.clone(), (field, step));
            }
        }
    }
    for (source, (field, step)) in declared {
        let Some(me) = lists.get(&step.id) else { continue };
        let mut groups = Vec::with_capacity(me.items.len());
        for (n, item) in me.items.iter().enumerate() {
            match dig(item, &[field.to_string()]) {
                Some(v @ (Value::String(_) | Value::Number(_))) => groups.push(expr::display(v)),
                _ => {
                    let (file, pos) = &me.places[n];
                    let key = me.keys.get(n).map(String::as_str).unwrap_or("?");
                    problems.at(
                        file,
                        *pos,
                        format!("step `{}`: item `{key}` has no `{field}`, which names what it belongs to", step.id),
                        format!("add `{field}: …` naming the item of the other list"),
                    );
                }
            }
        }
        // No items: nothing to pair, and no owner to find by them.
        if groups.len() != me.items.len() || groups.is_empty() {
            continue;
        }
        // The owner list: another fanned list (owning none itself) whose keys hold every group.
        let mut owners: Vec<&str> = lists
            .values()
            .filter(|f| f.source != source && f.parent.is_none())
            .filter(|f| groups.iter().all(|g| f.has(g)))
            .map(|f| f.source.as_str())
            .collect();
        owners.sort_unstable();
        owners.dedup();
        let parent = match owners.as_slice() {
            [one] => one.to_string(),
            [] => {
                // Name the first item no list has.
                let n = (0..groups.len())
                    .find(|&n| !lists.values().any(|f| f.source != source && f.has(&groups[n])))
                    .unwrap_or(0);
                let (file, pos) = &me.places[n];
                problems.at(
                    file,
                    *pos,
                    format!(
                        "step `{}`: item `{}` belongs to `{}`, which is not an item of any other fanned list",
                        step.id, me.keys[n], groups[n]
                    ),
                    "name an item of the list it belongs to (e.g. an application of params.apps)",
                );
                continue;
            }
            many => {
                problems.in_runbook(
                    step.for_each.as_ref().map_or(step.pos, |f| f.pos),
                    format!("step `{}`: the lists {} all have the items belongs_to names", step.id, many.join(", ")),
                    "give the items keys that only their owner list has",
                );
                continue;
            }
        };
        let mut by_group: HashMap<String, Vec<usize>> = HashMap::new();
        for (n, g) in groups.iter().enumerate() {
            by_group.entry(g.clone()).or_default().push(n);
        }
        for f in lists.values_mut().filter(|f| f.source == source) {
            f.parent = Some(parent.clone());
            f.groups = groups.clone();
            f.by_group = by_group.clone();
        }
    }
}
