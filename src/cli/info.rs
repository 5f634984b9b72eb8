//! Commands that read and change nothing in the world: validate, plan, status, report,
//! approve (writes one file for the running process), actions.

use super::out::{emit, out, outln};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::{Cli, CliError, Output, RunbookInputs, exit};
use crate::engine::events::{Event, Outcome, RunMode};
use crate::journal::lock;
use crate::journal::state::{RunState, StateDir};
use crate::registry::Registry;
use crate::report::{Report, fmt_ms, render_html};
use crate::runbook::{self, Loaded};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Runbook files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub inputs: RunbookInputs,
}

pub fn validate(cli: &Cli, a: &ValidateArgs, registry: &Registry) -> Result<i32, CliError> {
    let mut all_ok = true;
    let mut results = vec![];
    for file in &a.files {
        match runbook::load(file, registry, &a.inputs.options(false)) {
            Ok(l) => {
                if cli.output == Output::Text {
                    outln!("ok: {} ({} steps)", file.display(), l.runbook.steps.len());
                }
                results.push(json!({ "file": file, "ok": true, "steps": l.runbook.steps.len() }));
            }
            Err(d) => {
                all_ok = false;
                if cli.output == Output::Text {
                    eprintln!("{d}");
                }
                results.push(json!({ "file": file, "ok": false, "problems": d }));
            }
        }
    }
    if cli.output.machine() {
        emit(cli.output, &json!({ "ok": all_ok, "files": results }));
    }
    Ok(if all_ok { exit::SUCCESS } else { exit::INVALID_INPUT })
}

pub fn load_or_report(
    cli: &Cli,
    file: &std::path::Path,
    inputs: &RunbookInputs,
    registry: &Registry,
    require: bool,
) -> Result<Loaded, CliError> {
    runbook::load(file, registry, &inputs.options(require)).map_err(|d| {
        if cli.output.machine() {
            emit(cli.output, &json!({ "ok": false, "problems": d }));
        } else {
            eprintln!("{d}");
        }
        CliError::new(exit::INVALID_INPUT, format!("{} is not valid", file.display()))
            .hint("fix the problems above; nothing was run")
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    pub runbook: PathBuf,
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    #[command(flatten)]
    pub inputs: RunbookInputs,
}

/// Median duration of each step over past successful runs of this runbook.
pub fn history(state: &StateDir, runbook: &str) -> BTreeMap<String, u64> {
    let mut samples: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for id in state.list() {
        let Ok(read) = crate::journal::read(&state.journal(&id)) else {
            continue;
        };
        match read.records.first().map(|r| &r.event) {
            Some(Event::RunStarted(s)) if s.runbook == runbook && s.mode == RunMode::Run => {}
            _ => continue,
        }
        for r in &read.records {
            if let Event::StepFinished { step, outcome: Outcome::Succeeded, duration_ms, .. } = &r.event {
                samples.entry(step.clone()).or_default().push(*duration_ms);
            }
        }
    }
    samples
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_unstable();
            (k, v[v.len() / 2])
        })
        .collect()
}

pub fn plan(cli: &Cli, a: &PlanArgs, registry: &Registry) -> Result<i32, CliError> {
    let loaded = load_or_report(cli, &a.runbook, &a.inputs, registry, false)?;
    let rb = &loaded.runbook;
    let dag = &loaded.dag;
    let levels = dag.levels();
    let past = history(&StateDir::new(&cli.state_dir), &rb.name);
    // Only the steps that would run with these params: an `if:` that reads params alone is
    // decided here; one that reads a step's outputs is decided when the run gets there.
    let skipped: Vec<bool> = rb.steps.iter().map(|s| runbook::check::skipped_by_params(s, &loaded.params)).collect();
    let runs = |i: usize| !skipped[i];
    // Levels among the steps that run: a skipped step passes its level on.
    let mut levels = levels;
    for &i in &dag.order {
        levels[i] = dag.parents[i].iter().map(|&p| levels[p] + usize::from(runs(p))).max().unwrap_or(0);
    }
    let estimated = rb.steps.iter().enumerate().all(|(i, s)| !runs(i) || past.contains_key(&s.id));
    let (path, weight) = dag.critical_path(|i| match (runs(i), estimated) {
        (false, _) => 0.0,
        (true, true) => past[&rb.steps[i].id] as f64,
        (true, false) => 1.0,
    });
    let path: Vec<usize> = path.into_iter().filter(|&i| runs(i)).collect();
    let path_ids: Vec<&str> = path.iter().map(|&i| rb.steps[i].id.as_str()).collect();
    let format = if cli.output.machine() { PlanFormat::Json } else { a.format };
    let mut out = String::new();
    match format {
        PlanFormat::Text => {
            let depth = (0..rb.steps.len()).filter(|&i| runs(i)).map(|i| levels[i] + 1).max().unwrap_or(0);
            let running = skipped.iter().filter(|s| !**s).count();
            let _ = writeln!(
                out,
                "runbook {} — {running} of {} steps would run, in {depth} levels",
                rb.name,
                rb.steps.len()
            );
            if !rb.description.is_empty() {
                let _ = writeln!(out, "{}", rb.description);
            }
            if !loaded.params.is_empty() {
                // An inventory is shown by its size: its items are listed with the steps.
                let shown: Vec<String> = loaded
                    .params
                    .iter()
                    .map(|(k, v)| match v.as_array() {
                        Some(items) if items.iter().any(Value::is_object) => format!("{k}=[{} items]", items.len()),
                        _ => format!("{k}={}", runbook::expr::display(v)),
                    })
                    .collect();
                let _ = writeln!(out, "params: {}", shown.join(", "));
            }
            let width = rb.steps.iter().map(|s| s.written_id().len()).max().unwrap_or(0);
            for level in 0..depth {
                let _ = writeln!(out, "\nlevel {level}");
                // A fanned step's instances at one level are one line: the step, its count, its items.
                let mut shown_fans: std::collections::HashSet<&str> = Default::default();
                for &i in &dag.order {
                    if levels[i] != level || !runs(i) {
                        continue;
                    }
                    let s = &rb.steps[i];
                    let (name, items) = match &s.instance {
                        Some(inst) if !shown_fans.insert(&inst.of) => continue,
                        Some(inst) => {
                            let keys: Vec<&str> = dag
                                .order
                                .iter()
                                .filter(|&&j| levels[j] == level && runs(j))
                                .filter_map(|&j| rb.steps[j].instance.as_ref())
                                .filter(|other| other.of == inst.of)
                                .map(|other| other.key.as_str())
                                .collect();
                            (format!("{} ×{}", inst.of, keys.len()), Some(keys))
                        }
                        None => (s.id.clone(), None),
                    };
                    let mut notes = vec![];
                    if !s.needs.is_empty() {
                        // Needs on instances read as the step: for the same item, or a count of items.
                        let mut needs: Vec<(String, usize)> = vec![];
                        for n in &s.needs {
                            let of = loaded.index.get(n).and_then(|&j| rb.steps[j].instance.as_ref()).map(|x| &x.of);
                            let (name, count) = match (of, &s.instance) {
                                (Some(of), Some(me)) if me.pairs.contains_key(of) => (format!("{of} (same item)"), 0),
                                (Some(of), _) => (of.clone(), 1),
                                (None, _) => (n.clone(), 0),
                            };
                            match needs.iter_mut().find(|(x, _)| *x == name) {
                                Some((_, c)) => *c += count,
                                None => needs.push((name, count)),
                            }
                        }
                        let needs: Vec<String> = needs
                            .into_iter()
                            .map(|(n, c)| if c > 0 { format!("{n} ({c} items)") } else { n })
                            .collect();
                        notes.push(format!("needs {}", needs.join(", ")));
                    }
                    if !s.prepare_after.is_empty() {
                        let mut after: Vec<&str> = vec![];
                        for a in &s.prepare_after {
                            let of =
                                loaded.index.get(a).and_then(|&j| rb.steps[j].instance.as_ref()).map(|x| x.of.as_str());
                            let name = of.unwrap_or(a);
                            if !after.contains(&name) {
                                after.push(name);
                            }
                        }
                        notes.push(format!("reads ahead after {}", after.join(", ")));
                    }
                    if let Some(inst) = &s.instance
                        && let Some(tier) = &inst.tier
                    {
                        notes.push(if inst.before_tiers {
                            "before the tiers".into()
                        } else if inst.after_tiers {
                            "after the tiers".into()
                        } else {
                            format!("tier {tier}")
                        });
                    }
                    if let Some(fe) = &s.for_each {
                        notes.push(format!("for each item of {}, known once the run reads it", fe.items.text()));
                    }
                    if let Some((_, text)) = &s.condition {
                        notes.push(format!("if {text}"));
                    }
                    if let Some(l) = &s.lock {
                        notes.push(format!("lock {l}"));
                    }
                    if s.always {
                        notes.push("always".into());
                    }
                    if s.point_of_no_return {
                        notes.push("POINT OF NO RETURN".into());
                    }
                    if s.continue_on_error {
                        notes.push("continue on error".into());
                    }
                    if s.retry.attempts > 1 {
                        notes.push(format!("retry {}x", s.retry.attempts));
                    }
                    notes.push(format!("timeout {}", humantime::format_duration(s.timeout)));
                    if let Some(ms) = past.get(&s.id) {
                        notes.push(format!("usually {}", fmt_ms(*ms)));
                    }
                    let _ = writeln!(out, "  {:<width$}  {}  ({})", name, s.call.uses, notes.join("; "));
                    if let Some(keys) = items {
                        const SHOWN: usize = 12;
                        let more = keys.len().saturating_sub(SHOWN);
                        let tail = if more > 0 { format!(" … and {more} more") } else { String::new() };
                        let _ = writeln!(
                            out,
                            "  {:<width$}  items: {}{tail}",
                            "",
                            keys[..keys.len().min(SHOWN)].join(", ")
                        );
                    }
                    if let Some(c) = &s.confirm_text {
                        let _ = writeln!(out, "  {:<width$}  gate: {c}", "");
                    }
                }
            }
            let left_out: Vec<&str> =
                (0..rb.steps.len()).filter(|&i| !runs(i)).map(|i| rb.steps[i].id.as_str()).collect();
            if !left_out.is_empty() {
                let _ = writeln!(out, "\nnot run with these params (their `if:` is false): {}", left_out.join(", "));
            }
            let basis = if estimated {
                format!("estimated {} from past runs", fmt_ms(weight as u64))
            } else {
                format!("{} steps; no past runs to estimate time", path.len())
            };
            let _ = writeln!(out, "\ncritical path ({basis}): {}", path_ids.join(" -> "));
            let no_return = rb.steps.iter().find(|s| s.point_of_no_return).map(|s| s.id.as_str());
            let on_failure = match (rb.on_failure, no_return) {
                (runbook::OnFailure::Rollback, Some(step)) => format!(
                    "roll back what was done, until `{step}` (the point of no return) has begun; after it, halt and report where each site stands"
                ),
                (runbook::OnFailure::Rollback, None) => "roll back what was done".into(),
                (runbook::OnFailure::Halt, _) => "halt".into(),
            };
            let _ = writeln!(out, "on failure: {on_failure}");
        }
        PlanFormat::Json => {
            let steps: Vec<Value> = dag
                .order
                .iter()
                .filter(|&&i| runs(i))
                .map(|&i| {
                    let s = &rb.steps[i];
                    json!({
                        "id": s.id, "uses": s.call.uses, "level": levels[i], "needs": s.needs, "prepare_after": s.prepare_after,
                        "for_each": s.instance.as_ref().map(|x| json!({ "step": x.of, "item": x.key, "tier": x.tier })),
                        "if": s.condition.as_ref().map(|c| &c.1), "lock": s.lock, "confirm": s.confirm_text,
                        "always": s.always, "timeout_ms": s.timeout.as_millis() as u64, "attempts": s.retry.attempts,
                        "estimate_ms": past.get(&s.id),
                    })
                })
                .collect();
            let plan = json!({ "runbook": rb.name, "steps": steps, "critical_path": path_ids,
                    "critical_path_estimate_ms": if estimated { Some(weight as u64) } else { None } });
            emit(if cli.output.machine() { cli.output } else { Output::Json }, &plan);
        }
        PlanFormat::Dot => {
            let _ =
                writeln!(out, "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];", rb.name);
            for (i, s) in rb.steps.iter().enumerate() {
                let style = if path.contains(&i) { ", penwidth=2" } else { "" };
                let _ = writeln!(out, "  \"{}\" [label=\"{}\\n{}\"{style}];", s.id, s.id, s.call.uses);
            }
            for (i, s) in rb.steps.iter().enumerate() {
                for &p in &dag.parents[i] {
                    let _ = writeln!(out, "  \"{}\" -> \"{}\";", rb.steps[p].id, s.id);
                }
            }
            out.push_str("}\n");
        }
        PlanFormat::Mermaid => {
            out.push_str("flowchart TD\n");
            for s in &rb.steps {
                let _ = writeln!(out, "  {}[\"{}<br/>{}\"]", mermaid_id(&s.id), s.id, s.call.uses);
            }
            for (i, s) in rb.steps.iter().enumerate() {
                for &p in &dag.parents[i] {
                    let _ = writeln!(out, "  {} --> {}", mermaid_id(&rb.steps[p].id), mermaid_id(&s.id));
                }
            }
        }
    }
    out!("{out}");
    Ok(exit::SUCCESS)
}

fn mermaid_id(id: &str) -> String {
    id.replace('-', "_")
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A run id (a unique prefix or suffix will do, or `latest`); without it, every run.
    pub run: Option<String>,
}

/// How many of a run's steps ran, were skipped or never ran.
#[derive(Debug, Default, serde::Serialize)]
struct StepCounts {
    total: usize,
    /// Began at least once (a dry run's checked steps included).
    ran: usize,
    /// Of those that ran, how many failed.
    failed: usize,
    /// Running now, or waiting for an approval.
    running: usize,
    /// Their `if:` was false.
    skipped: usize,
    /// Never began: blocked by a failure, stopped by the run's end, or not reached yet.
    not_run: usize,
}

impl StepCounts {
    fn of(s: &RunState, live: bool) -> StepCounts {
        let mut c = StepCounts { total: s.start.steps.len(), ..StepCounts::default() };
        for st in &s.start.steps {
            let Some(r) = s.steps.get(&st.id) else {
                c.not_run += 1;
                continue;
            };
            match r.outcome {
                _ if live && (r.in_flight || r.gate_waiting.is_some()) => c.running += 1,
                Some(Outcome::Skipped) => c.skipped += 1,
                Some(Outcome::Blocked | Outcome::NotRun) => c.not_run += 1,
                None if !r.in_flight => c.not_run += 1,
                outcome => {
                    c.ran += 1;
                    c.failed += usize::from(outcome.is_some_and(|o| o.is_failure() || o == Outcome::FailedContinued));
                }
            }
        }
        c
    }

    fn sentence(&self) -> String {
        let mut parts = vec![match self.failed {
            0 => format!("{} ran", self.ran),
            f => format!("{} ran ({f} failed)", self.ran),
        }];
        if self.running > 0 {
            parts.push(format!("{} running", self.running));
        }
        parts.push(format!("{} skipped", self.skipped));
        parts.push(format!("{} not run", self.not_run));
        format!("{} of {}", parts.join(", "), self.total)
    }
}

/// When a run started, and how long it has taken (to its last record; a live run: until now).
fn started_and_took(s: &RunState, live: bool) -> (Option<String>, Option<u64>) {
    let at = |r: &crate::engine::events::Record| humantime::parse_rfc3339_weak(&r.at).ok();
    let first = s.records.first();
    let start = first.and_then(at);
    let end = if live { Some(std::time::SystemTime::now()) } else { s.records.last().and_then(at) };
    let took = start.zip(end).and_then(|(a, b)| b.duration_since(a).ok()).map(|d| d.as_millis() as u64);
    (first.map(|r| r.at.clone()), took)
}

/// `2026-12-02T14:14:12.681Z` as a person scans it in a table: `2026-12-02 14:14:12`.
fn short_time(at: &str) -> String {
    at.get(..19).map(|t| t.replace('T', " ")).unwrap_or_else(|| at.to_string())
}

pub fn status(cli: &Cli, a: &StatusArgs) -> Result<i32, CliError> {
    let state = StateDir::new(&cli.state_dir);
    match &a.run {
        None => {
            let ids = state.list();
            let mut rows = vec![];
            for id in &ids {
                let Ok((s, _)) = RunState::load(&state.journal(id)) else {
                    rows.push(json!({ "run_id": id, "state": "unreadable journal" }));
                    continue;
                };
                let live = lock::holder(&state.locks(), &s.start.runbook).is_some_and(|h| &h.run_id == id);
                let (started, took) = started_and_took(&s, live);
                let counts = StepCounts::of(&s, live);
                rows.push(json!({
                    "run_id": id, "runbook": s.start.runbook, "mode": s.start.mode, "state": s.state_label(live),
                    "started": started, "duration_ms": took, "steps": counts,
                    "summary": counts.sentence(),
                }));
            }
            if cli.output.machine() {
                emit(cli.output, &json!({ "runs": rows }));
            } else if rows.is_empty() {
                outln!("no runs in {}", cli.state_dir.display());
            } else {
                outln!(
                    "{:<44}  {:<20}  {:<8}  {:<24}  {:<19}  {:>8}  steps",
                    "run",
                    "runbook",
                    "mode",
                    "state",
                    "started (UTC)",
                    "took"
                );
                for r in rows {
                    outln!(
                        "{:<44}  {:<20}  {:<8}  {:<24}  {:<19}  {:>8}  {}",
                        r["run_id"].as_str().unwrap_or(""),
                        r["runbook"].as_str().unwrap_or("-"),
                        r["mode"].as_str().unwrap_or("-"),
                        r["state"].as_str().unwrap_or("-"),
                        r["started"].as_str().map(short_time).unwrap_or_else(|| "-".into()),
                        r["duration_ms"].as_u64().map(fmt_ms).unwrap_or_else(|| "-".into()),
                        r["summary"].as_str().unwrap_or("-")
                    );
                }
            }
            Ok(exit::SUCCESS)
        }
        Some(wanted) => {
            let id = state
                .resolve(wanted)
                .map_err(|e| CliError::new(exit::INVALID_INPUT, e).hint("`drover status` lists runs"))?;
            let (s, _) = RunState::load(&state.journal(&id))?;
            let live = lock::holder(&state.locks(), &s.start.runbook).is_some_and(|h| h.run_id == id);
            let (started, took) = started_and_took(&s, live);
            let counts = StepCounts::of(&s, live);
            let approvals = Report::from_state(&s).approvals;
            if cli.output.machine() {
                let steps: Vec<Value> = s
                    .start
                    .steps
                    .iter()
                    .map(|st| {
                        let r = &s.steps[&st.id];
                        json!({ "id": st.id, "uses": st.uses, "outcome": r.outcome, "running": r.in_flight,
                                "attempts": r.attempts, "waiting_for_approval": r.gate_waiting,
                                "approved_by": r.approved_by })
                    })
                    .collect();
                emit(
                    cli.output,
                    &json!({ "run_id": id, "runbook": s.start.runbook, "mode": s.start.mode,
                             "state": s.state_label(live), "started": started, "duration_ms": took,
                             "counts": counts, "approvals": approvals, "steps": steps }),
                );
            } else {
                outln!("run {id} of `{}`: {}", s.start.runbook, s.state_label(live));
                let mode = match s.start.mode {
                    RunMode::Run => "a real run",
                    RunMode::DryRun => "a dry run (nothing changed)",
                };
                let when = started.as_deref().map(short_time).unwrap_or_else(|| "-".into());
                let took = took.map(fmt_ms).unwrap_or_else(|| "-".into());
                let took = if live { format!("running for {took}") } else { format!("took {took}") };
                outln!("  {mode}, started {when} UTC, {took}");
                outln!("  steps: {}", counts.sentence());
                for ap in &approvals {
                    let verb = if ap.approved { "approved" } else { "denied" };
                    outln!("  gate `{}` {verb} by {} at {}", ap.step, ap.by, short_time(&ap.at));
                }
                outln!();
                for st in &s.start.steps {
                    let r = &s.steps[&st.id];
                    let word = match (r.outcome, r.in_flight, &r.gate_waiting) {
                        (_, _, Some(_)) => "waiting for approval".to_string(),
                        (_, true, _) if live => format!("running (attempt {})", r.attempts),
                        (_, true, _) => "interrupted".to_string(),
                        (Some(o), _, _) => o.label().to_string(),
                        (None, _, _) => "pending".to_string(),
                    };
                    outln!("  {:<24} {:<24} {}", st.id, word, st.uses);
                    if let (Some(msg), true) = (&r.gate_waiting, live) {
                        outln!("  {:<24} gate: {msg}\n  {:<24} approve: drover approve {id} {}", "", "", st.id);
                    }
                }
                if s.finished.is_none() && !live {
                    outln!("\nthis run did not finish; `drover resume {id}` continues it");
                }
            }
            Ok(exit::SUCCESS)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Html,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run id (unique prefix or suffix, or `latest`).
    #[arg(default_value = "latest")]
    pub run: String,
    /// `html`: the self-contained page to attach to the incident; `-o json|yaml` wins over it.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn report(cli: &Cli, a: &ReportArgs) -> Result<i32, CliError> {
    let state = StateDir::new(&cli.state_dir);
    let id =
        state.resolve(&a.run).map_err(|e| CliError::new(exit::INVALID_INPUT, e).hint("`drover status` lists runs"))?;
    let (s, _) = RunState::load(&state.journal(&id))?;
    let live = crate::journal::lock::holder(&state.locks(), &s.start.runbook).is_some_and(|h| h.run_id == id);
    let r = if live { Report::from_live_state(&s) } else { Report::from_state(&s) };
    let text = match (cli.output, a.format) {
        (Output::Yaml, _) => serde_yaml::to_string(&r).expect("reports serialize"),
        (Output::Json, _) | (Output::Text, ReportFormat::Json) => r.to_json() + "\n",
        (Output::Text, ReportFormat::Text) => r.to_text(),
        (Output::Text, ReportFormat::Html) => render_html(&r),
    };
    match &a.out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| {
                CliError::new(exit::STATE_ERROR, format!("cannot write the report to {}: {e}", path.display()))
                    .hint("choose a file in a directory you can write, or leave out --out to print it")
            })?;
            eprintln!("wrote the report of run {id} to {}", path.display());
        }
        None => out!("{text}"),
    }
    Ok(exit::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ActionsArgs {
    /// Show one action's parameters and outputs in full.
    pub name: Option<String>,
}

pub fn actions(cli: &Cli, a: &ActionsArgs, registry: &Registry) -> Result<i32, CliError> {
    let (all, errors) = registry.all();
    for (plugin, e) in &errors {
        eprintln!("warning: external plugin {plugin} could not describe its actions: {e}");
    }
    let chosen: Vec<_> = match &a.name {
        Some(n) => {
            let act = registry.get(n).map_err(|e| CliError::new(exit::INVALID_INPUT, e.message).hint(e.hint))?;
            vec![act]
        }
        None => all,
    };
    if cli.output.machine() {
        let infos: Vec<_> = chosen.iter().map(|a| a.info().clone()).collect();
        emit(cli.output, &infos);
        return Ok(exit::SUCCESS);
    }
    if a.name.is_none() {
        let width = chosen.iter().map(|a| a.info().name.len()).max().unwrap_or(0);
        for act in &chosen {
            outln!("{:<width$}  {}", act.info().name, act.info().summary);
        }
        outln!("\n`drover actions NAME` shows an action's parameters.");
        return Ok(exit::SUCCESS);
    }
    for act in &chosen {
        let info = act.info();
        outln!("{} — {}", info.name, info.summary);
        outln!("\nparameters (under `with:`):");
        for line in describe_params(&info.params) {
            outln!("  {line}");
        }
        if !info.outputs.is_empty() {
            outln!("\noutputs (as `${{{{ steps.ID.outputs.NAME }}}}`):");
            for o in &info.outputs {
                outln!("  {:<16} {}", o.name, o.description);
            }
        }
        if info.undo {
            outln!("\nhas its own undo for `on_failure: rollback`");
        }
        if let Some(what) = &info.prepares {
            outln!("\nwith `prepare_after: [STEPS]`, {what} once those steps are done, before its turn");
        }
    }
    Ok(exit::SUCCESS)
}

/// One line per parameter from a JSON schema: name, type, required/default, description.
pub fn describe_params(schema: &Value) -> Vec<String> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return vec!["(none)".into()];
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let width = props.keys().map(String::len).max().unwrap_or(0);
    props
        .iter()
        .map(|(name, p)| {
            let ty = type_name(p, schema);
            let req = if required.contains(&name.as_str()) {
                "required".to_string()
            } else {
                match p.get("default") {
                    Some(d) if !d.is_null() => format!("default {d}"),
                    _ => "optional".into(),
                }
            };
            let desc = p.get("description").and_then(Value::as_str).unwrap_or("").replace('\n', " ");
            format!("{name:<width$}  {ty:<18} {req:<18} {desc}")
        })
        .collect()
}

fn type_name(p: &Value, root: &Value) -> String {
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        if let Some(def) = root.get("$defs").and_then(|d| d.get(name)) {
            if let Some(values) = def.get("enum").and_then(Value::as_array) {
                return values.iter().map(|v| v.as_str().unwrap_or("?").to_string()).collect::<Vec<_>>().join("|");
            }
            if def.get("format").and_then(Value::as_str) == Some("duration") {
                return "duration".into();
            }
        }
        return name.to_string();
    }
    if let Some(any) = p.get("anyOf").and_then(Value::as_array) {
        let parts: Vec<String> =
            any.iter().filter(|x| x.get("type") != Some(&json!("null"))).map(|x| type_name(x, root)).collect();
        return parts.join("|");
    }
    match p.get("type") {
        Some(Value::String(t)) if t == "array" => {
            format!("list of {}", p.get("items").map(|i| type_name(i, root)).unwrap_or_else(|| "any".into()))
        }
        Some(Value::String(t)) if t == "object" => "mapping".into(),
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect::<Vec<_>>().join("|")
        }
        _ => "any".into(),
    }
}

#[derive(Debug, Args)]
pub struct RbacArgs {
    /// Only these families of actions (repeatable): check, workloads, restore, read, delete,
    /// velero, snapshots. Default: every family.
    #[arg(long = "family", value_name = "FAMILY")]
    pub families: Vec<String>,
    /// Who the bindings name: `user:NAME` or `serviceaccount:NAMESPACE/NAME`.
    #[arg(long = "for", value_name = "SUBJECT", default_value = "serviceaccount:drover/drover")]
    pub subject: String,
    /// A custom kind `kube.wait` waits on, as PLURAL.GROUP (`carts.shop.example.com`, the name
    /// of its CRD; repeatable): the workloads family also gets `get`, `list` and `watch` on it.
    #[arg(long = "watch", value_name = "PLURAL.GROUP")]
    pub watch: Vec<String>,
}

/// `drover rbac`: the Kubernetes RBAC a site's drover identity needs, as YAML to apply.
pub fn rbac(cli: &Cli, a: &RbacArgs) -> Result<i32, CliError> {
    use drover_kube::rbac::{FAMILIES, Subject, WATCHES, Watched, family, manifests};
    let subject = Subject::parse(&a.subject).map_err(|e| CliError::new(exit::INVALID_INPUT, e))?;
    let watched = a
        .watch
        .iter()
        .map(|w| Watched::parse(w))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::new(exit::INVALID_INPUT, format!("--watch {e}")))?;
    let chosen: Vec<_> = if a.families.is_empty() {
        FAMILIES.iter().collect()
    } else {
        let mut out = vec![];
        for name in &a.families {
            let f = family(name).ok_or_else(|| {
                let names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
                CliError::new(exit::INVALID_INPUT, format!("no family `{name}`"))
                    .hint(format!("families: {}", names.join(", ")))
            })?;
            out.push(f);
        }
        out
    };
    if !watched.is_empty() && !chosen.iter().any(|f| f.name == WATCHES) {
        return Err(CliError::new(
            exit::INVALID_INPUT,
            format!("--watch adds to the `{WATCHES}` family, which is not chosen"),
        )
        .hint(format!("add --family {WATCHES}")));
    }
    let docs = manifests(&chosen, &subject, &watched);
    if cli.output.machine() {
        emit(cli.output, &json!({ "items": docs }));
        return Ok(exit::SUCCESS);
    }
    let mut text = String::from(
        "# The Kubernetes RBAC drover's identity needs on a site, per family of actions.\n# Apply on each site: kubectl apply -f - < THIS_FILE\n",
    );
    for (f, pair) in chosen.iter().zip(docs.chunks(2)) {
        let _ = write!(text, "---\n# {}: {} — {}\n", f.name, f.actions.join(", "), f.why);
        text.push_str(&serde_yaml::to_string(&pair[0]).unwrap_or_default());
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(&pair[1]).unwrap_or_default());
    }
    out!("{text}");
    Ok(exit::SUCCESS)
}
