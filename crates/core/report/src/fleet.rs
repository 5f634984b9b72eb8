//! A fleet's report: per application (one item of a fanned list), what happened to it, its
//! recovery time and data loss, its tier, and what to do about it; then the fleet's RTO and
//! RPO. Built from the journal's record of which step instance belongs to which item.

use serde::Serialize;
use serde_json::Value;

use super::{StepReport, fmt_ms};
use drover_model::events::{Outcome, StepInfo};

#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// The list the items come from (`params.apps`).
    pub list: String,
    pub items: Vec<ItemReport>,
    pub recovered: usize,
    pub failed: usize,
    pub rolled_back: usize,
    /// From the first change to any item to the end of the last item's last step, once every
    /// item has recovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_ms: Option<u64>,
    /// The worst data loss among the items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemReport {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// `recovered`, `failed`, `rolled back`, `stopped`, `not started`, `planned`, `in progress`.
    pub outcome: &'static str,
    /// From its first change to the end of its last step (its verified switch), once recovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What to do about this item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Per item of the (first) fanned list, in the order the journal lists them.
pub(crate) fn build(infos: &[StepInfo], steps: &[StepReport], run_id: &str) -> Option<FleetReport> {
    let list = infos.iter().find_map(|s| s.fanned.as_ref())?.list.clone();
    let mut order: Vec<(&str, Option<&str>)> = vec![];
    let mut members: std::collections::HashMap<&str, Vec<usize>> = Default::default();
    for (i, info) in infos.iter().enumerate() {
        let Some(f) = info.fanned.as_ref().filter(|f| f.list == list) else { continue };
        // A volume's steps are its application's.
        let unit = f.unit.as_deref().unwrap_or(&f.key);
        let entry = members.entry(unit).or_default();
        if entry.is_empty() {
            order.push((unit, f.tier.as_deref()));
        }
        entry.push(i);
    }
    // What a step shared by every item declares (one SVM-DR relationship's lag) holds for
    // each item that declares none of its own.
    let shared_rpo =
        (0..infos.len()).filter(|&j| infos[j].fanned.is_none()).filter_map(|j| rpo(j, infos, steps)).reduce(f64::max);
    let items: Vec<ItemReport> =
        order.iter().map(|(key, tier)| item(key, *tier, &members[key], infos, steps, run_id, shared_rpo)).collect();
    let count = |what: &str| items.iter().filter(|i| i.outcome == what).count();
    let all_recovered = items.iter().all(|i| i.outcome == "recovered");
    let first_change = items.iter().flat_map(|i| members[i.key.as_str()].iter()).filter(|&&j| steps[j].changes);
    let first = first_change.filter_map(|&j| steps[j].start_ms).min();
    let last = items.iter().flat_map(|i| members[i.key.as_str()].iter()).filter_map(|&j| steps[j].end_ms).max();
    Some(FleetReport {
        list,
        recovered: count("recovered"),
        failed: count("failed"),
        rolled_back: count("rolled back"),
        rto_ms: match (all_recovered, first, last) {
            (true, Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        rpo_seconds: items.iter().filter_map(|i| i.rpo_seconds).reduce(f64::max),
        items,
    })
}

/// The RPO step `j` declares through its action's output, when it ran.
fn rpo(j: usize, infos: &[StepInfo], steps: &[StepReport]) -> Option<f64> {
    steps[j].outputs.get(infos[j].rpo_output.as_deref()?).and_then(Value::as_f64)
}

fn item(
    key: &str,
    tier: Option<&str>,
    mine: &[usize],
    infos: &[StepInfo],
    steps: &[StepReport],
    run_id: &str,
    shared_rpo: Option<f64>,
) -> ItemReport {
    let outcomes: Vec<Option<Outcome>> = mine.iter().map(|&j| steps[j].outcome).collect();
    let failed = mine.iter().copied().find(|&j| {
        matches!(
            steps[j].outcome,
            Some(Outcome::Failed | Outcome::FailedContinued | Outcome::Interrupted | Outcome::PlanFailed)
        )
    });
    // Its failure was let pass (`continue_on_error`): the run went on and may have finished.
    let continued = failed.is_some_and(|j| steps[j].outcome == Some(Outcome::FailedContinued));
    let undone = mine.iter().any(|&j| steps[j].undo.as_deref() == Some("undone"));
    // Only checks ran for it (before the tiers): nothing of it was changed yet.
    let started = mine.iter().any(|&j| steps[j].changes && steps[j].start_ms.is_some());
    let done = |o: &Option<Outcome>| matches!(o, Some(Outcome::Succeeded | Outcome::Skipped));
    let outcome = if outcomes.iter().all(done) {
        "recovered"
    } else if outcomes.iter().all(|o| matches!(o, Some(Outcome::Planned | Outcome::Skipped))) {
        "planned"
    } else if undone {
        // Its own failure, or a shared step's: either way its changes were undone.
        "rolled back"
    } else if failed.is_some() {
        "failed"
    } else if outcomes.iter().any(Option::is_none) {
        "in progress"
    } else if started {
        "stopped"
    } else {
        "not started"
    };
    let first_change = mine.iter().filter(|&&j| steps[j].changes).filter_map(|&j| steps[j].start_ms).min();
    let first = first_change.or_else(|| mine.iter().filter_map(|&j| steps[j].start_ms).min());
    let last = mine.iter().filter_map(|&j| steps[j].end_ms).max();
    let rpo_seconds = mine.iter().filter_map(|&j| rpo(j, infos, steps)).reduce(f64::max).or(shared_rpo);
    let error = failed.and_then(|j| steps[j].error.as_ref());
    let next = match outcome {
        "rolled back" => {
            Some("its changes were undone: it runs where it ran before; fix the cause, then fail it over again".into())
        }
        "failed" if continued => Some(format!(
            "{}; the run went on without it (continue_on_error): once fixed, run its steps again in a new run",
            error.and_then(|e| e.hint.clone()).unwrap_or_else(|| "fix the cause".into())
        )),
        "failed" => Some(match error.and_then(|e| e.hint.clone()) {
            Some(hint) => format!("{hint}; then `drover resume {run_id}` runs what did not finish"),
            None => format!("fix the cause, then `drover resume {run_id}` runs what did not finish"),
        }),
        "stopped" | "not started" if failed.is_none() => {
            Some(format!("`drover resume {run_id}` runs what did not finish"))
        }
        _ => None,
    };
    ItemReport {
        key: key.to_string(),
        tier: tier.map(str::to_string),
        outcome,
        rto_ms: match (outcome, first, last) {
            ("recovered", Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        rpo_seconds,
        failed_step: failed.map(|j| steps[j].id.clone()),
        error: error.map(|e| e.message.clone()),
        next,
    }
}

impl FleetReport {
    /// The text report's section: one line per item, tier by tier, then the fleet's numbers.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let width = self.items.iter().map(|i| i.key.len()).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "\n{} {} of {}: {} recovered, {} failed, {} rolled back",
            self.items.len(),
            if self.items.len() == 1 { "item" } else { "items" },
            self.list,
            self.recovered,
            self.failed,
            self.rolled_back
        );
        for i in &self.items {
            let tier = i.tier.as_deref().map(|t| format!("tier {t}  ")).unwrap_or_default();
            let mut facts = vec![];
            if let Some(ms) = i.rto_ms {
                facts.push(format!("RTO {}", fmt_ms(ms)));
            }
            if let Some(s) = i.rpo_seconds {
                facts.push(format!("RPO {}", fmt_ms((s * 1000.0) as u64)));
            }
            if let (Some(step), Some(e)) = (&i.failed_step, &i.error) {
                facts.push(format!("at {step}: {e}"));
            }
            let _ = writeln!(out, "  {tier}{:<width$}  {:<11}  {}", i.key, i.outcome, facts.join(", "));
            if let Some(n) = &i.next {
                let _ = writeln!(out, "  {}{:<width$}  next: {n}", " ".repeat(tier.len()), "");
            }
        }
        let rto = self.rto_ms.map(fmt_ms).unwrap_or_else(|| "not reached (not every item recovered)".into());
        let rpo = self.rpo_seconds.map(|s| fmt_ms((s * 1000.0) as u64)).unwrap_or_else(|| "not reported".into());
        let _ = writeln!(
            out,
            "fleet: RTO {rto} (the first change to the last item's last step), RPO {rpo} (the worst item)"
        );
        out
    }
}
