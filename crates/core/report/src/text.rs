//! The report as text, for the terminal and the end of a run.

use std::fmt::Write;

use super::*;
use drover_model::events::{Outcome, RunMode};

impl Report {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let kind = if self.mode == RunMode::DryRun { "dry run" } else { "run" };
        let _ = writeln!(out, "{kind} {} of `{}`: {}", self.run_id, self.runbook, self.outcome_label());
        let _ = writeln!(
            out,
            "started {}, wall time {}{}",
            self.started,
            fmt_ms(self.wall_ms),
            if self.resumes > 0 { format!(", resumed {} time(s)", self.resumes) } else { String::new() }
        );
        if self.processes.len() > 1 {
            for (k, p) in self.processes.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  process {} on {} (pid {}): {} → {}, {}",
                    k + 1,
                    p.host,
                    p.pid,
                    p.started,
                    p.last,
                    p.ended
                );
            }
            let _ =
                writeln!(out, "  time between processes (crashes, kills, waiting to resume): {}", fmt_ms(self.gaps_ms));
        }
        if let Some(p) = &self.preflight {
            match &p.skipped_by {
                Some(by) => {
                    let _ = writeln!(out, "preflight: SKIPPED by {by} (--skip-preflight)");
                }
                None if p.failed.is_empty() => {
                    let _ =
                        writeln!(out, "preflight: passed — {} step(s) checked in {}", p.checked, fmt_ms(p.duration_ms));
                }
                None => {
                    let _ = writeln!(
                        out,
                        "preflight: FAILED — {} of {} step(s) cannot work; nothing was changed",
                        p.failed.len(),
                        p.checked
                    );
                    for f in &p.failed {
                        let _ = writeln!(out, "  ✗ {}: {}", f.step, f.message);
                        if let Some(h) = &f.hint {
                            let _ = writeln!(out, "      hint: {h}");
                        }
                    }
                }
            }
            for (step, checks) in &p.deferred {
                let _ = writeln!(out, "  {step}: checked again when it runs: {}", checks.join("; "));
            }
        }
        let width = self.steps.iter().map(|s| s.id.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(
            out,
            "\n  {:<width$}  {:<20}  {:>9}  {:>9}  {:>8}  action",
            "step", "outcome", "start", "duration", "attempts"
        );
        for s in &self.steps {
            let outcome = match s.outcome {
                Some(o) => o.label(),
                None if self.outcome.is_some() => "not run",
                None => "pending",
            };
            let start = s.start_ms.map(|m| format!("+{}", fmt_ms(m))).unwrap_or_else(|| "-".into());
            let dur = if s.start_ms.is_some() { fmt_ms(s.duration_ms) } else { "-".into() };
            let _ = writeln!(
                out,
                "  {:<width$}  {:<20}  {:>9}  {:>9}  {:>8}  {}",
                s.id, outcome, start, dur, s.attempts, s.uses
            );
            let killed = s.attempt_log.iter().any(|a| a.result.starts_with("killed"));
            if killed {
                for a in &s.attempt_log {
                    let end = a.end_ms.map(|e| format!("+{}", fmt_ms(e))).unwrap_or_else(|| "-".into());
                    let _ = writeln!(
                        out,
                        "  {:<width$}    attempt {} +{} → {end}: {}",
                        "",
                        a.attempt,
                        fmt_ms(a.start_ms),
                        a.result
                    );
                }
            } else {
                for r in &s.retries {
                    let _ = writeln!(out, "  {:<width$}    retry: {r}", "");
                }
            }
            if s.gate_wait_ms > 0 {
                let _ =
                    writeln!(out, "  {:<width$}    waited {} for an operator at its gate", "", fmt_ms(s.gate_wait_ms));
            }
            for n in &s.notes {
                let _ = writeln!(out, "  {:<width$}    note: {n}", "");
            }
            if let Some(by) = &s.approved_by {
                let _ = writeln!(out, "  {:<width$}    approved by {by}", "");
            }
            if let Some(plan) = &s.plan {
                let _ = writeln!(out, "  {:<width$}    plan: {}", "", plan.summary);
                for c in &plan.changes {
                    let _ = writeln!(out, "  {:<width$}      would: {c}", "");
                }
                for c in &plan.checks {
                    let _ = writeln!(
                        out,
                        "  {:<width$}      [{}] {}: {}",
                        "",
                        if c.ok { "ok" } else { "FAIL" },
                        c.name,
                        c.detail
                    );
                }
            }
            if let Some(e) = &s.error {
                let _ = writeln!(out, "  {:<width$}    error: {}", "", e.message);
                if let Some(h) = &e.hint {
                    let _ = writeln!(out, "  {:<width$}    hint: {h}", "");
                }
            }
            if !s.outputs.is_empty() && s.error.is_none() {
                let shown: Vec<String> = s.outputs.iter().take(6).map(|(k, v)| format!("{k}={}", short(v))).collect();
                let _ = writeln!(out, "  {:<width$}    outputs: {}", "", shown.join(", "));
            }
            if let Some(u) = &s.undo {
                let _ = writeln!(out, "  {:<width$}    {u}", "");
            }
        }
        let _ = writeln!(
            out,
            "\ncritical path ({} of work): {}",
            fmt_ms(self.critical_path_ms),
            if self.critical_path.is_empty() { "-".into() } else { self.critical_path.join(" -> ") }
        );
        if let Some(o) = &self.outage {
            let _ = writeln!(
                out,
                "outage window: {} (from the start of `{}`, the first change, to {}){}",
                fmt_ms(o.ms),
                o.from_step,
                if o.over { format!("the end of `{}`", o.to_step) } else { "now: not over".into() },
                if self.gaps_ms > 0 {
                    format!(", {} of it between processes", fmt_ms(self.gaps_ms))
                } else {
                    String::new()
                }
            );
        }
        if let Some(f) = &self.fleet {
            out.push_str(&f.text());
        }
        if let Some(t) = self.rto_target_ms {
            let verdict = match self.rto_met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not known yet",
            };
            let _ = writeln!(out, "RTO target {}: {verdict}", fmt_ms(t));
        }
        if let Some(rpo) = self.rpo.as_ref().filter(|_| self.fleet.is_none()) {
            let _ = writeln!(
                out,
                "RPO at the break: {} of writes not on the DR site (replication lag, as `{}` read it)",
                humantime::format_duration(std::time::Duration::from_secs(rpo.seconds.max(0.0).round() as u64)),
                rpo.step
            );
        }
        if self.gate_wait_ms > 0 {
            let _ =
                writeln!(out, "waiting for operators at gates: {} (not counted as work)", fmt_ms(self.gate_wait_ms));
        }
        for a in &self.approvals {
            let _ = writeln!(
                out,
                "gate `{}` {} by {} at {} after {}",
                a.step,
                if a.approved { "approved" } else { "DENIED" },
                a.by,
                a.at,
                fmt_ms(a.waited_ms)
            );
        }
        for n in &self.notifications {
            let _ = writeln!(out, "{}", n.sentence());
        }
        if let Some(r) = &self.rollback {
            let _ = writeln!(out, "{r}");
        }
        if !self.sites.is_empty() {
            let _ = writeln!(out, "\nwhere each site stands:");
            for site in &self.sites {
                let _ = writeln!(out, "  {}:", site.site);
                for c in &site.changed {
                    let _ = writeln!(out, "    changed   {c}");
                }
                for c in &site.uncertain {
                    let _ = writeln!(out, "    PARTLY?   {c} (failed or stopped mid-way: check it)");
                }
                for c in &site.undone {
                    let _ = writeln!(out, "    undone    {c}");
                }
            }
            let untouched: Vec<&str> = self
                .steps
                .iter()
                .filter(|s| s.changes && s.start_ms.is_none() && !matches!(s.outcome, Some(Outcome::Skipped)))
                .map(|s| s.id.as_str())
                .collect();
            if !untouched.is_empty() {
                let _ = writeln!(out, "  not done yet: {}", untouched.join(", "));
            }
        }
        if let Some(by) = &self.stopped_by {
            let _ = writeln!(out, "stopped by {by}: no step started after it; running steps reached a safe point");
        }
        if let Some(n) = &self.next {
            let _ = writeln!(out, "next: {n}");
        }
        if self.mode == RunMode::DryRun {
            let failed = self.steps.iter().filter(|s| s.outcome == Some(Outcome::PlanFailed)).count();
            let _ = writeln!(out, "{failed} step(s) with failed preconditions; nothing was changed");
        }
        if let Some(f) = &self.forecast {
            if f.from_runs == 0 {
                let _ = writeln!(
                    out,
                    "predicted recovery time: unknown — no earlier successful run of `{}` in this state directory",
                    self.runbook
                );
            } else {
                let _ = writeln!(
                    out,
                    "predicted recovery time: {} (critical path by the median step durations of {} earlier run(s): {})",
                    fmt_ms(f.recovery_ms),
                    f.from_runs,
                    if f.path.is_empty() { "-".into() } else { f.path.join(" -> ") }
                );
                if !f.without_history.is_empty() {
                    let _ = writeln!(out, "  steps never run before (counted as 0): {}", f.without_history.join(", "));
                }
            }
            // Several steps may read the same replication; the worst figure is the answer.
            if let Some((step, rpo)) = f.rpo_seconds.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
                let _ = writeln!(
                    out,
                    "RPO now: {} of data would be lost (replication lag, as {step} read it)",
                    humantime::format_duration(std::time::Duration::from_secs(rpo.max(0.0).round() as u64))
                );
            }
        }
        out
    }
}
