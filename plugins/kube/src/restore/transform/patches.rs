//! Transforms that patch: a merge or JSON patch for matching objects, and Velero's
//! resource-modifier rules as written for Velero.

use regex::Regex;
use serde_json::{Value, json};

use super::{Errors, FieldChange, PatchRule, Rewrite, VeleroModifiers, VeleroPatchData, diff, glob_match, key};
use crate::patch;
use drover_api::PathSegment::Index;

/// A merge patch or a JSON patch (exactly one) for objects a rule matches.
pub(super) struct Patch(PatchRule);

impl Patch {
    pub(super) fn compile(p: &PatchRule, errors: &mut Errors) -> (String, Box<dyn Rewrite>) {
        if p.merge.is_none() == p.json.is_none() {
            errors.push(&[key("patch")], "give either `merge:` or `json:`".into());
        }
        ("patch".to_string(), Box::new(Patch(p.clone())))
    }
}

impl Rewrite for Patch {
    fn apply(&self, _: &str, _: &str, obj: &mut Value, changes: &mut Vec<FieldChange>) {
        let rule = &self.0;
        if !rule.matching.matches(obj) {
            return;
        }
        let before = obj.clone();
        if let Some(m) = &rule.merge {
            patch::merge(obj, m);
        }
        if let Some(ops) = &rule.json
            && let Err(e) = patch::json_patch(obj, ops)
        {
            changes.push(FieldChange {
                path: "(json patch)".into(),
                before: json!(null),
                after: json!(format!("not applied: {e}")),
            });
            *obj = before;
            return;
        }
        diff(&before, obj, "", changes);
    }
}

/// Velero's rules: conditions on group-resource, name regex, namespaces and labels; JSON,
/// merge and strategic patches.
pub(super) struct Velero(Vec<VeleroRule>);

struct VeleroRule {
    rule: super::VeleroRule,
    name: Option<Regex>,
    /// JSON patch operations in RFC 6902 form.
    ops: Value,
    merges: Vec<Value>,
    strategics: Vec<Value>,
}

impl Velero {
    pub(super) fn compile(m: &VeleroModifiers, errors: &mut Errors) -> (String, Box<dyn Rewrite>) {
        let mut rules = vec![];
        for (j, rule) in m.resource_modifier_rules.iter().enumerate() {
            let at = |k: &str| [key("velero_modifiers"), key("resourceModifierRules"), Index(j), key(k)];
            let name = rule.conditions.resource_name_regex.as_deref().and_then(|r| errors.regex(r, &at("conditions")));
            let ops: Vec<Value> = rule
                .patches
                .iter()
                .map(|p| {
                    let value = p.value.clone().map(|v| match v {
                        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                        other => other,
                    });
                    json!({ "op": p.operation, "path": p.path, "from": p.from, "value": value })
                })
                .collect();
            let mut parse = |d: &VeleroPatchData, k: &str| match serde_yaml::from_str::<Value>(&d.patch_data) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(&at(k), format!("patchData is not JSON or YAML: {e}"));
                    None
                }
            };
            let merges = rule.merge_patches.iter().filter_map(|d| parse(d, "mergePatches")).collect();
            let strategics = rule.strategic_patches.iter().filter_map(|d| parse(d, "strategicPatches")).collect();
            rules.push(VeleroRule { rule: rule.clone(), name, ops: Value::Array(ops), merges, strategics });
        }
        (format!("Velero resource modifiers ({} rules)", rules.len()), Box::new(Velero(rules)))
    }
}

impl Rewrite for Velero {
    fn apply(&self, resource: &str, _: &str, obj: &mut Value, changes: &mut Vec<FieldChange>) {
        for r in &self.0 {
            let c = &r.rule.conditions;
            let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
            let applies = (c.group_resource == "*" || glob_match(&c.group_resource, resource))
                && r.name.as_ref().is_none_or(|re| re.is_match(name))
                && (c.namespaces.is_empty() || c.namespaces.iter().any(|n| n == ns))
                && c.label_selector.as_ref().is_none_or(|l| {
                    l.match_labels
                        .iter()
                        .all(|(k, v)| obj.pointer("/metadata/labels").and_then(|m| m.get(k)) == Some(&json!(v)))
                });
            if !applies {
                continue;
            }
            let before = obj.clone();
            if r.ops.as_array().is_some_and(|a| !a.is_empty())
                && let Err(e) = patch::json_patch(obj, &r.ops)
            {
                // Velero skips a rule whose patch does not apply; so does drover, visibly.
                *obj = before.clone();
                changes.push(FieldChange {
                    path: "(velero patch)".into(),
                    before: Value::Null,
                    after: json!(format!("not applied: {e}")),
                });
                continue;
            }
            for m in &r.merges {
                patch::merge(obj, m);
            }
            for m in &r.strategics {
                patch::strategic(obj, m);
            }
            diff(&before, obj, "", changes);
        }
    }
}
