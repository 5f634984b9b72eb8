//! A report built from a run's journal: steps and their attempts, processes and the gaps between
//! them, gate waits, the critical path, the outage window, and where each site stands.

use std::time::SystemTime;

use serde_json::Value;

use super::*;
use drover_journal::state::RunState;
use drover_model::events::{Event, Outcome, RunMode, RunOutcome};

impl Report {
    /// The report of a run whose process has ended, or crashed: steps left in flight were
    /// interrupted.
    pub fn from_state(state: &RunState) -> Report {
        Self::build(state, false)
    }

    /// The report of a run a live process is working on (it holds the run's lock): steps in
    /// flight are running, and there is nothing to resume.
    pub fn from_live_state(state: &RunState) -> Report {
        Self::build(state, state.finished.is_none())
    }

    fn build(state: &RunState, running: bool) -> Report {
        let start = &state.start;
        let t0 = state.records.first().and_then(|r| parse_time(&r.at)).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut steps: Vec<StepReport> = start
            .steps
            .iter()
            .map(|s| StepReport {
                id: s.id.clone(),
                uses: s.uses.clone(),
                needs: s.needs.clone(),
                fanned_from: s.fanned.as_ref().map(|f| f.step.clone()),
                description: s.description.clone(),
                outcome: None,
                start_ms: None,
                end_ms: None,
                duration_ms: 0,
                gate_wait_ms: 0,
                gate_inside_ms: 0,
                attempts: 0,
                attempt_log: vec![],
                sites: vec![],
                outputs: Default::default(),
                error: None,
                retries: vec![],
                notes: vec![],
                plan: None,
                approved_by: None,
                undo: None,
                point_of_no_return: s.point_of_no_return,
                changes: s.changes,
            })
            .collect();
        let index: std::collections::HashMap<&str, usize> =
            start.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        let mut finished = None;
        let mut last_at = t0;
        let mut processes: Vec<ProcessReport> = vec![];
        let mut gaps_ms = 0;
        let mut preflight: Option<PreflightReport> = None;
        let mut approvals = vec![];
        let mut gate_since: std::collections::HashMap<String, SystemTime> = Default::default();
        let mut rollback = None;
        let mut undone: Vec<usize> = vec![];
        let mut notifications = vec![];
        for r in &state.records {
            // Told after the fact (a run's end is told once it has ended): not the run's time.
            if let Some(n) = crate::Notification::from_event(&r.event, &r.at) {
                notifications.push(n);
                continue;
            }
            let at = parse_time(&r.at).unwrap_or(t0);
            let offset = ms_between(t0, at);
            match &r.event {
                Event::RunStarted(s) => processes.push(ProcessReport {
                    host: s.host.clone(),
                    pid: s.pid,
                    started: r.at.clone(),
                    last: r.at.clone(),
                    ended: String::new(),
                }),
                Event::RunResumed { host, pid, .. } => {
                    gaps_ms += ms_between(last_at, at);
                    // Attempts the previous process left open were cut off with it.
                    let cut = ms_between(t0, last_at);
                    for s in steps.iter_mut() {
                        if let Some(a) = s.attempt_log.last_mut().filter(|a| a.end_ms.is_none()) {
                            a.end_ms = Some(cut);
                            a.result = "killed (the process ended)".into();
                        }
                    }
                    processes.push(ProcessReport {
                        host: host.clone(),
                        pid: *pid,
                        started: r.at.clone(),
                        last: r.at.clone(),
                        ended: String::new(),
                    });
                }
                _ => {}
            }
            last_at = last_at.max(at);
            if let Some(p) = processes.last_mut() {
                p.last = r.at.clone();
            }
            match &r.event {
                Event::RunFinished { .. } => finished = Some(r.at.clone()),
                Event::PreflightStarted { .. } => preflight = Some(PreflightReport::default()),
                Event::PreflightSkipped { by } => {
                    preflight = Some(PreflightReport { skipped_by: Some(by.clone()), ..Default::default() })
                }
                Event::PreflightChecked { step, outcome, error, deferred, .. } => {
                    let p = preflight.get_or_insert_with(Default::default);
                    if !matches!(outcome, Outcome::Skipped | Outcome::Blocked | Outcome::NotRun) {
                        p.checked += 1;
                    }
                    if *outcome == Outcome::PlanFailed
                        && let Some(e) = error
                    {
                        p.failed.push(PreflightFailure {
                            step: step.clone(),
                            message: e.message.clone(),
                            hint: e.hint.clone(),
                        });
                    }
                    if !deferred.is_empty() {
                        p.deferred.push((step.clone(), deferred.clone()));
                    }
                }
                Event::PreflightFinished { failed, duration_ms } => {
                    let p = preflight.get_or_insert_with(Default::default);
                    p.duration_ms = *duration_ms;
                    // Steps allowed to fail (continue_on_error) do not stop the run.
                    p.failed.retain(|f| failed.contains(&f.step));
                }
                Event::RollbackRefused { past } => {
                    rollback = Some(format!(
                        "not rolled back: `{past}`, the point of no return, had begun; the run halted where it was"
                    ))
                }
                _ => {}
            }
            let Some(i) = r.event.step().and_then(|id| index.get(id).copied()) else {
                continue;
            };
            let s = &mut steps[i];
            match &r.event {
                Event::StepStarted { attempt, sites, .. } => {
                    if *attempt == 1 || s.start_ms.is_none() {
                        s.start_ms = Some(offset);
                        s.end_ms = None;
                        s.error = None;
                    }
                    s.attempts = *attempt;
                    for site in sites {
                        if !s.sites.contains(site) {
                            s.sites.push(site.clone());
                        }
                    }
                    s.attempt_log.push(AttemptReport {
                        attempt: *attempt,
                        start_ms: offset,
                        end_ms: None,
                        result: "running".into(),
                    });
                }
                Event::StepRetrying { attempt, error, delay_ms, .. } => {
                    s.retries.push(format!("attempt {attempt}: {} (retried after {} ms)", error.message, delay_ms));
                    if let Some(a) = s.attempt_log.last_mut().filter(|a| a.end_ms.is_none()) {
                        a.end_ms = Some(offset);
                        a.result = format!("failed, retried: {}", error.message);
                    }
                }
                Event::StepNote { message, .. } if !s.notes.contains(message) => s.notes.push(message.clone()),
                Event::StepPlanned { plan, .. } => s.plan = Some(plan.clone()),
                Event::GateWaiting { step, .. } => {
                    gate_since.insert(step.clone(), at);
                }
                Event::GateApproved { step, by } | Event::GateDenied { step, by } => {
                    let waited = gate_since.remove(step).map(|since| ms_between(since, at)).unwrap_or(0);
                    s.gate_wait_ms += waited;
                    if s.attempt_log.last().is_some_and(|a| a.end_ms.is_none()) {
                        s.gate_inside_ms += waited;
                    }
                    let approved = matches!(r.event, Event::GateApproved { .. });
                    if approved {
                        s.approved_by = Some(by.clone());
                    }
                    approvals.push(Approval {
                        step: step.clone(),
                        by: by.clone(),
                        at: r.at.clone(),
                        approved,
                        waited_ms: waited,
                    });
                }
                Event::StepFinished { outcome, outputs, error, attempts, duration_ms, .. } => {
                    s.outcome = Some(*outcome);
                    s.outputs = summarize(outputs);
                    s.error = error.clone();
                    s.attempts = s.attempts.max(*attempts);
                    s.duration_ms = *duration_ms;
                    if s.start_ms.is_some() {
                        s.end_ms = Some(offset);
                        // Wall clocks may step; trust the monotonic duration for the bar.
                        s.start_ms = Some(offset.saturating_sub(*duration_ms));
                    }
                    if let Some(a) = s.attempt_log.last_mut().filter(|a| a.end_ms.is_none()) {
                        a.end_ms = Some(offset);
                        a.result = match error {
                            Some(e) => format!("{}: {}", outcome.label(), e.message),
                            None => outcome.label().to_string(),
                        };
                    }
                }
                Event::UndoFinished { error, .. } => {
                    if error.is_none() {
                        undone.push(i);
                    }
                    s.undo = Some(match error {
                        None => "undone".into(),
                        Some(e) => format!("undo failed: {}", e.message),
                    })
                }
                _ => {}
            }
        }
        // Steps that were running when the process died.
        for (i, s) in steps.iter_mut().enumerate() {
            if !running
                && s.outcome.is_none()
                && s.start_ms.is_some()
                && state.steps.get(&start.steps[i].id).is_some_and(|r| r.in_flight)
            {
                s.outcome = Some(Outcome::Interrupted);
            }
        }
        let n = processes.len();
        for (k, p) in processes.iter_mut().enumerate() {
            p.ended = if k + 1 < n {
                "ended without finishing (killed or crashed)".into()
            } else if state.finished.is_some() {
                "finished the run".into()
            } else if running {
                "running".into()
            } else {
                "ended without finishing, or still running".into()
            };
        }
        let (critical_path, critical_path_ms) = critical_path(state, &steps);
        let gate_wait_ms = steps.iter().map(|s| s.gate_wait_ms).sum();
        let outage = outage(&steps, state.finished, ms_between(t0, last_at));
        let params: serde_json::Map<String, Value> = state.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let rto_target_ms = params
            .get("rto_target")
            .and_then(Value::as_str)
            .and_then(|t| humantime::parse_duration(t).ok())
            .map(|d| d.as_millis() as u64);
        let rto_met = match (rto_target_ms, &outage) {
            (Some(t), Some(o)) if o.over => Some(o.ms <= t),
            (Some(t), Some(o)) if o.ms > t => Some(false),
            _ => None,
        };
        if rollback.is_none() && start.rollback && state.finished == Some(RunOutcome::RolledBack) {
            rollback = Some("rolled back: every completed step with an undo was undone".into());
        }
        let sites = if state.finished == Some(RunOutcome::Succeeded) || start.mode == RunMode::DryRun {
            vec![]
        } else {
            standing(&steps, &undone, running)
        };
        let rpo = start
            .steps
            .iter()
            .zip(&steps)
            .filter_map(|(info, s)| Some((s, s.outputs.get(info.rpo_output.as_deref()?)?.as_f64()?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(s, seconds)| Rpo { step: s.id.clone(), seconds });
        let mut report = Report {
            run_id: start.run_id.clone(),
            runbook: start.runbook.clone(),
            runbook_path: start.runbook_path.clone(),
            mode: start.mode,
            outcome: state.finished,
            started: state.records.first().map(|r| r.at.clone()).unwrap_or_default(),
            finished,
            wall_ms: ms_between(t0, last_at),
            resumes: state.resumes,
            params,
            preflight,
            steps,
            critical_path,
            critical_path_ms,
            processes,
            gaps_ms,
            gate_wait_ms,
            outage,
            rto_target_ms,
            rto_met,
            approvals,
            notifications,
            sites,
            rollback,
            // The last stop asked for, if the run ended stopped.
            stopped_by: state
                .records
                .iter()
                .rev()
                .find_map(|r| match &r.event {
                    Event::StopRequested { signal, .. } => {
                        Some(signal.clone().unwrap_or_else(|| "the operator".into()))
                    }
                    _ => None,
                })
                .filter(|_| state.finished == Some(RunOutcome::Cancelled)),
            next: None,
            forecast: None,
            running,
            rpo,
            fleet: None,
        };
        report.fleet = fleet::build(&start.steps, &report.steps, &report.run_id);
        report.next = if running { None } else { report.next_command() };
        report
    }
}

/// The heaviest chain of executed steps by measured duration.
fn critical_path(state: &RunState, steps: &[StepReport]) -> (Vec<String>, u64) {
    let infos = &state.start.steps;
    let Ok(dag) = Dag::build(infos.iter().map(|s| (s.id.as_str(), s.needs.as_slice()))) else {
        return (vec![], 0);
    };
    let work = |s: &StepReport| s.work_ms();
    let (path, total) = dag.critical_path(|i| if steps[i].start_ms.is_some() { work(&steps[i]) as f64 } else { 0.0 });
    let path: Vec<String> =
        path.into_iter().filter(|&i| steps[i].start_ms.is_some()).map(|i| infos[i].id.clone()).collect();
    (path, total as u64)
}

/// From the start of the first step that changes the world to the end of the last step.
fn outage(steps: &[StepReport], finished: Option<RunOutcome>, now_ms: u64) -> Option<Outage> {
    let first =
        steps.iter().filter(|s| s.changes).filter_map(|s| s.start_ms.map(|t| (t, s))).min_by_key(|(t, _)| *t)?;
    let over = finished == Some(RunOutcome::Succeeded);
    let (end, last) = if over {
        steps.iter().filter_map(|s| s.end_ms.map(|t| (t, s))).max_by_key(|(t, _)| *t)?
    } else {
        (now_ms, first.1)
    };
    Some(Outage {
        from_step: first.1.id.clone(),
        to_step: if over { last.id.clone() } else { "(not over)".into() },
        ms: end.saturating_sub(first.0),
        over,
    })
}

/// Per site: what this run changed there, what may be half-done, what was undone.
fn standing(steps: &[StepReport], undone: &[usize], running: bool) -> Vec<SiteStanding> {
    let mut out: Vec<SiteStanding> = vec![];
    for (i, s) in steps.iter().enumerate() {
        if !s.changes {
            continue;
        }
        let line = if s.description.is_empty() {
            format!("{} ({})", s.id, s.uses)
        } else {
            format!("{}: {}", s.id, s.description)
        };
        for site in &s.sites {
            let k = match out.iter().position(|x| &x.site == site) {
                Some(k) => k,
                None => {
                    out.push(SiteStanding { site: site.clone(), changed: vec![], uncertain: vec![], undone: vec![] });
                    out.len() - 1
                }
            };
            let entry = &mut out[k];
            match s.outcome {
                _ if undone.contains(&i) => entry.undone.push(line.clone()),
                Some(Outcome::Succeeded) => entry.changed.push(line.clone()),
                None if running && s.start_ms.is_some() => entry.changed.push(format!("{line} (in progress)")),
                Some(Outcome::Failed | Outcome::FailedContinued | Outcome::Interrupted) | None
                    if s.start_ms.is_some() =>
                {
                    entry.uncertain.push(line.clone())
                }
                _ => {}
            }
        }
    }
    out.retain(|x| !(x.changed.is_empty() && x.uncertain.is_empty() && x.undone.is_empty()));
    out
}

/// Outputs as shown in reports: long strings cut.
fn summarize(outputs: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    outputs
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) if s.len() > 2000 => {
                    Value::String(format!("{}… ({} bytes)", &s[..s.floor_char_boundary(2000)], s.len()))
                }
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}
