//! One self-contained HTML page: what kind of run it was and how it ended (banners), the facts a
//! post-incident review asks for (mode, params, RTO against its target, RPO, approvals,
//! crashes and resumes), an inline SVG timeline and the step table. No external assets, so it
//! can be mailed or attached to an incident ticket as is; it fits a 1400 px window.

use std::fmt::Write;

use super::{Report, StepReport, fmt_ms};
use drover_model::events::{Outcome, RunMode};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn color(o: Option<Outcome>) -> &'static str {
    match o {
        Some(Outcome::Succeeded | Outcome::Planned) => "#2e7d32",
        Some(Outcome::Failed | Outcome::PlanFailed) => "#c62828",
        Some(Outcome::FailedContinued) => "#ef6c00",
        Some(Outcome::Interrupted) => "#6a1b9a",
        Some(Outcome::Skipped | Outcome::Blocked | Outcome::NotRun) | None => "#9e9e9e",
    }
}

const STYLE: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1360px;padding:0 16px;color:#222}\
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:24px 0 8px}\
.banner{padding:10px 14px;border-radius:4px;margin:8px 0;font-weight:600}\
.banner div{font-weight:400;margin-top:4px}\
.ok{background:#e8f5e9;border-left:6px solid #2e7d32}.bad{background:#ffebee;border-left:6px solid #c62828}\
.dry{background:#e3f2fd;border-left:6px solid #1565c0}.open{background:#f3e5f5;border-left:6px solid #6a1b9a}.run{background:#e3f2fd;border-left:6px solid #1565c0}\
dl{display:grid;grid-template-columns:200px 1fr;gap:2px 16px;margin:8px 0}dt{color:#555}dd{margin:0}\
table{border-collapse:collapse;width:100%;table-layout:fixed}\
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
.err{color:#c62828}.hint{color:#555}.mono,code{font-family:ui-monospace,monospace;font-size:12px}\
table.kv{width:auto;table-layout:auto}table.kv td{border:0;padding:0 8px 0 0}\
svg{width:100%;height:auto}tr.fan td{background:#f5f5f5}details summary{cursor:pointer;color:#1565c0}\
pre.log{max-height:420px;overflow:auto;background:#fafafa;border:1px solid #ddd;padding:8px;font-size:12px;margin:0}";

pub fn render_html(r: &Report) -> String {
    let mut h = String::new();
    let dry = r.mode == RunMode::DryRun;
    let kind = match (dry, r.runbook.contains("rehearsal")) {
        (true, _) => "dry run",
        (false, true) => "rehearsal",
        (false, false) => "run",
    };
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><title>drover {} {}</title><style>{STYLE}</style></head><body>",
        esc(&r.runbook),
        esc(&r.run_id)
    );
    let _ = write!(
        h,
        "<h1>{} of <code>{}</code>: {}</h1>",
        esc(&capitalized(kind)),
        esc(&r.runbook),
        esc(r.outcome_label())
    );
    banners(&mut h, r, kind);
    facts(&mut h, r);
    if !r.sites.is_empty() {
        standing(&mut h, r);
    }
    h.push_str("<h2>Graph</h2>");
    super::graph::render(&mut h, r);
    h.push_str("<h2>Timeline</h2>");
    timeline(&mut h, r);
    if let Some(f) = &r.fleet {
        fleet(&mut h, f);
    }
    steps(&mut h, r);
    log(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// What kind of run this was, and how it ended with what to do next.
fn banners(h: &mut String, r: &Report, kind: &str) {
    match kind {
        "dry run" => h.push_str(
            "<div class=\"banner dry\">DRY RUN — nothing was changed<div>every step's preconditions were \
             checked read-only against the real systems</div></div>",
        ),
        "rehearsal" => h.push_str(
            "<div class=\"banner dry\">REHEARSAL — production was not touched<div>the apps were brought up in \
             isolation at the DR site on clones of the replicas, then removed</div></div>",
        ),
        _ => {}
    }
    let next = r.next.as_ref().map(|n| format!("<div>next: <code>{}</code></div>", esc(n))).unwrap_or_default();
    match r.outcome {
        Some(drover_model::events::RunOutcome::Succeeded) => {
            let _ = write!(h, "<div class=\"banner ok\">{} succeeded{next}</div>", esc(&capitalized(kind)));
        }
        Some(_) => {
            let failed = first_failure(r);
            let cause = match failed {
                Some(s) => {
                    let e = s.error.as_ref();
                    format!(
                        "<div>failed step <code>{}</code>: {}</div>{}",
                        esc(&s.id),
                        esc(e.map(|e| e.message.as_str()).unwrap_or("it failed")),
                        e.and_then(|e| e.hint.as_ref())
                            .map(|hint| format!("<div class=\"hint\">hint: {}</div>", esc(hint)))
                            .unwrap_or_default()
                    )
                }
                None => String::new(),
            };
            let _ = write!(
                h,
                "<div class=\"banner bad\">{} {}{cause}{next}</div>",
                esc(&capitalized(kind)),
                esc(r.outcome_label())
            );
        }
        None if r.running => {
            let _ = write!(h, "<div class=\"banner run\">Running — each step turns green as it succeeds{next}</div>");
        }
        None => {
            let _ = write!(
                h,
                "<div class=\"banner open\">Not finished: the run is going on, or its process ended without finishing{next}</div>"
            );
        }
    }
}

/// The step that failed first (a preflight failure, else the earliest failed step).
fn first_failure(r: &Report) -> Option<&StepReport> {
    if let Some(p) = r.preflight.as_ref().and_then(|p| p.failed.first()) {
        return r.steps.iter().find(|s| s.id == p.step);
    }
    r.steps
        .iter()
        .filter(|s| matches!(s.outcome, Some(Outcome::Failed | Outcome::PlanFailed)))
        .min_by_key(|s| s.end_ms.unwrap_or(u64::MAX))
}

/// The facts a post-incident review asks for.
fn facts(h: &mut String, r: &Report) {
    h.push_str("<dl>");
    let mut fact = |name: &str, value: String| {
        let _ = write!(h, "<dt>{}</dt><dd>{value}</dd>", esc(name));
    };
    fact("run", format!("<code>{}</code>", esc(&r.run_id)));
    fact(
        "mode",
        if r.mode == RunMode::DryRun { "dry run (read-only)".into() } else { "real run (changes the world)".into() },
    );
    fact("runbook", format!("<code>{}</code>", esc(&r.runbook_path)));
    fact(
        "started",
        format!(
            "{}{}",
            esc(&r.started),
            r.finished.as_ref().map(|f| format!(", finished {}", esc(f))).unwrap_or_default()
        ),
    );
    fact("wall time", fmt_ms(r.wall_ms));
    if r.running {
        // The live page ticks this each second.
        let t0 = humantime::parse_rfc3339_weak(&r.started)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis());
        let target = r.rto_target_ms.map(|t| format!(" of the {} RTO target", fmt_ms(t))).unwrap_or_default();
        fact(
            "elapsed",
            format!(
                "<span id=\"elapsed\" data-started-ms=\"{t0}\" data-target-ms=\"{}\">{}</span>{target}",
                r.rto_target_ms.unwrap_or(0),
                fmt_ms(r.wall_ms)
            ),
        );
    }
    if let Some(o) = &r.outage {
        let to = if o.over { format!("the end of <code>{}</code>", esc(&o.to_step)) } else { "now: not over".into() };
        fact(
            "outage (measured RTO)",
            format!(
                "{} — from the start of <code>{}</code>, the first change, to {to}",
                fmt_ms(o.ms),
                esc(&o.from_step)
            ),
        );
    }
    if let Some(t) = r.rto_target_ms {
        let verdict = match r.rto_met {
            Some(true) => "<b style=\"color:#2e7d32\">met</b>",
            Some(false) => "<b class=\"err\">MISSED</b>",
            None => "not known yet",
        };
        fact("RTO target", format!("{} — {verdict}", fmt_ms(t)));
    }
    if let Some(f) = &r.forecast {
        fact(
            "predicted RTO",
            if f.from_runs == 0 {
                "unknown: no earlier successful run in this state directory".into()
            } else {
                format!("{} (median step durations of {} earlier run(s))", fmt_ms(f.recovery_ms), f.from_runs)
            },
        );
        if let Some((step, rpo)) = f.rpo_seconds.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            fact("RPO now", format!("{} (replication lag, as <code>{}</code> read it)", secs(*rpo), esc(step)));
        }
    }
    if let Some(rpo) = r.fleet.as_ref().and_then(|f| f.rpo_seconds) {
        fact("RPO at the break", format!("{} (the worst application)", secs(rpo)));
    } else if let Some(rpo) = &r.rpo {
        fact(
            "RPO at the break",
            format!(
                "{} of writes not on the DR site (replication lag, as <code>{}</code> read it)",
                secs(rpo.seconds),
                esc(&rpo.step)
            ),
        );
    }
    if let Some(p) = &r.preflight {
        fact(
            "preflight",
            match (&p.skipped_by, p.failed.len()) {
                (Some(by), _) => format!("<b class=\"err\">skipped</b> by {}", esc(by)),
                (None, 0) => format!("passed: {} step(s) checked in {}", p.checked, fmt_ms(p.duration_ms)),
                (None, n) => format!(
                    "<b class=\"err\">FAILED</b>: {n} of {} step(s) cannot work; nothing was changed",
                    p.checked
                ),
            },
        );
    }
    for a in &r.approvals {
        fact(
            &format!("gate {}", a.step),
            format!(
                "{} by <b>{}</b> at {} after {}",
                if a.approved { "approved" } else { "<b class=\"err\">DENIED</b>" },
                esc(&a.by),
                esc(&a.at),
                fmt_ms(a.waited_ms)
            ),
        );
    }
    for n in &r.notifications {
        let told =
            if n.delivered { esc(&n.sentence()) } else { format!("<b class=\"err\">{}</b>", esc(&n.sentence())) };
        fact(&format!("webhook {}", n.webhook), format!("{told} ({})", esc(&n.at)));
    }
    if r.processes.len() > 1 {
        let lines: Vec<String> = r
            .processes
            .iter()
            .enumerate()
            .map(|(k, p)| {
                format!(
                    "{}. {} pid {}: {} → {}, {}",
                    k + 1,
                    esc(&p.host),
                    p.pid,
                    esc(&p.started),
                    esc(&p.last),
                    esc(&p.ended)
                )
            })
            .collect();
        fact(
            "crashes and resumes",
            format!("{} resume(s); {} between processes<br>{}", r.resumes, fmt_ms(r.gaps_ms), lines.join("<br>")),
        );
    }
    if let Some(by) = &r.stopped_by {
        fact("stopped by", esc(by));
    }
    if let Some(rb) = &r.rollback {
        fact("rollback", esc(rb));
    }
    if !r.params.is_empty() {
        let shown: Vec<String> = r
            .params
            .iter()
            .map(|(k, v)| {
                let v = match v.as_array() {
                    Some(items) if items.iter().any(serde_json::Value::is_object) => format!("[{} items]", items.len()),
                    _ => super::short(v),
                };
                format!("<code>{}={}</code>", esc(k), esc(&v))
            })
            .collect();
        fact("params", shown.join(" "));
    }
    h.push_str("</dl>");
}

fn secs(s: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(s.max(0.0).round() as u64)).to_string()
}

fn standing(h: &mut String, r: &Report) {
    h.push_str("<h2>Where each site stands</h2><table><tr><th style=\"width:140px\">site</th><th>state</th></tr>");
    for site in &r.sites {
        let mut lines = vec![];
        lines.extend(site.changed.iter().map(|c| format!("changed: {}", esc(c))));
        lines.extend(
            site.uncertain.iter().map(|c| {
                format!("<span class=\"err\">PARTLY? {} (failed or stopped mid-way: check it)</span>", esc(c))
            }),
        );
        lines.extend(site.undone.iter().map(|c| format!("undone: {}", esc(c))));
        let _ = write!(h, "<tr><td class=\"mono\">{}</td><td>{}</td></tr>", esc(&site.site), lines.join("<br>"));
    }
    h.push_str("</table>");
}

/// One bar per step that ran — a fanned step's instances as one bar from the first start to
/// the last end — with the critical path outlined and each resume marked.
fn timeline(h: &mut String, r: &Report) {
    struct Row {
        label: String,
        start: u64,
        end: u64,
        outcome: Option<Outcome>,
        critical: bool,
    }
    let mut rows: Vec<Row> = vec![];
    for s in r.steps.iter().filter(|s| s.start_ms.is_some()) {
        let base = super::graph::group_of(s);
        let (start, end) = (s.start_ms.unwrap_or(0), s.end_ms.unwrap_or(s.start_ms.unwrap_or(0) + s.duration_ms));
        let critical = r.critical_path.contains(&s.id);
        if base != s.id
            && let Some(row) = rows.iter_mut().find(|row| row.label.split(' ').next() == Some(base))
        {
            row.start = row.start.min(start);
            row.end = row.end.max(end);
            // The bar shows the worst outcome among the instances.
            if color(s.outcome) == "#c62828" || row.outcome.is_none() {
                row.outcome = s.outcome;
            }
            row.critical |= critical;
            let n: usize = row.label.rsplit('×').next().and_then(|n| n.parse().ok()).unwrap_or(1);
            row.label = format!("{base} ×{}", n + 1);
            continue;
        }
        let label = if base != s.id { format!("{base} ×1") } else { s.id.clone() };
        rows.push(Row { label, start, end, outcome: s.outcome, critical });
    }
    let total = rows.iter().map(|r| r.end).max().unwrap_or(0).max(r.wall_ms).max(1) as f64;
    let (label_w, chart_w, row_h) = (240.0, 1060.0, 22.0);
    let height = rows.len() as f64 * row_h + 34.0;
    let width = label_w + chart_w + 20.0;
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"timeline\">"
    );
    for (k, row) in rows.iter().enumerate() {
        let y = k as f64 * row_h + 4.0;
        let x = label_w + row.start as f64 / total * chart_w;
        let w = ((row.end.saturating_sub(row.start)) as f64 / total * chart_w).max(2.0);
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{}</text>\
<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"{}><title>{} {} {}</title></rect>",
            label_w - 6.0,
            y + 14.0,
            esc(&row.label),
            row_h - 6.0,
            color(row.outcome),
            if row.critical { " stroke=\"#000\" stroke-width=\"2\"" } else { "" },
            esc(&row.label),
            row.outcome.map(Outcome::label).unwrap_or("running"),
            fmt_ms(row.end.saturating_sub(row.start))
        );
    }
    // Each later process: where the run was resumed after a crash, a kill or a stop.
    let t0 = humantime::parse_rfc3339_weak(&r.started).ok();
    for (k, p) in r.processes.iter().enumerate().skip(1) {
        let Some(at) =
            t0.zip(humantime::parse_rfc3339_weak(&p.started).ok()).and_then(|(a, b)| b.duration_since(a).ok())
        else {
            continue;
        };
        let x = label_w + (at.as_millis() as f64 / total * chart_w).min(chart_w);
        let _ = write!(
            h,
            "<line x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#6a1b9a\" stroke-dasharray=\"4 3\"/>\
<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" fill=\"#6a1b9a\">resumed ({})</text>",
            height - 30.0,
            x + 3.0,
            height - 18.0,
            k + 1
        );
    }
    let axis_y = height - 4.0;
    for t in 0..=4 {
        let x = label_w + chart_w * t as f64 / 4.0;
        let _ = write!(
            h,
            "<text x=\"{x:.1}\" y=\"{axis_y}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            fmt_ms((total * t as f64 / 4.0) as u64)
        );
    }
    h.push_str("</svg>");
}

fn fleet(h: &mut String, f: &super::fleet::FleetReport) {
    let _ = write!(
        h,
        "<h2>{} items of {}: {} recovered, {} failed, {} rolled back</h2><p>fleet RTO {}, RPO {}</p>",
        f.items.len(),
        esc(&f.list),
        f.recovered,
        f.failed,
        f.rolled_back,
        f.rto_ms.map(fmt_ms).unwrap_or_else(|| "not reached".into()),
        f.rpo_seconds.map(|s| fmt_ms((s * 1000.0) as u64)).unwrap_or_else(|| "not reported".into()),
    );
    h.push_str(
        "<table><tr><th style=\"width:180px\">item</th><th style=\"width:60px\">tier</th><th style=\"width:110px\">outcome</th>\
<th style=\"width:80px\">RTO</th><th style=\"width:80px\">RPO</th><th>details</th></tr>",
    );
    for i in &f.items {
        let mut details = String::new();
        if let (Some(step), Some(e)) = (&i.failed_step, &i.error) {
            let _ = write!(details, "<div class=\"err\">{}: {}</div>", esc(step), esc(e));
        }
        if let Some(n) = &i.next {
            let _ = write!(details, "<div class=\"hint\">next: <code>{}</code></div>", esc(n));
        }
        let _ = write!(
            h,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&i.key),
            esc(i.tier.as_deref().unwrap_or("-")),
            i.outcome,
            i.rto_ms.map(fmt_ms).unwrap_or_else(|| "-".into()),
            i.rpo_seconds.map(|s| fmt_ms((s * 1000.0) as u64)).unwrap_or_else(|| "-".into()),
            details
        );
    }
    h.push_str("</table>");
}

/// The step table. A fanned step is one row with its instances' counts; the instances that
/// failed or are running follow in full, the rest fold into a compact list, so a 10,000-step
/// run's report stays a few megabytes.
fn steps(h: &mut String, r: &Report) {
    h.push_str(
        "<h2>Steps</h2><table class=\"steps\"><tr><th style=\"width:220px\">step</th><th style=\"width:190px\">action</th>\
<th style=\"width:120px\">outcome</th><th style=\"width:80px\">start</th><th style=\"width:80px\">duration</th>\
<th style=\"width:60px\">attempts</th><th>details</th></tr>",
    );
    let mut groups: Vec<(&str, Vec<&StepReport>)> = vec![];
    let mut index = std::collections::HashMap::new();
    for s in &r.steps {
        let g = super::graph::group_of(s);
        let k = *index.entry(g).or_insert_with(|| {
            groups.push((g, vec![]));
            groups.len() - 1
        });
        groups[k].1.push(s);
    }
    for (group, members) in groups {
        let fanned = members[0].fanned_from.is_some();
        if !fanned {
            step_row(h, members[0], true);
            continue;
        }
        let mut counts: Vec<(&str, usize)> = vec![];
        for s in &members {
            let label =
                s.outcome.map(Outcome::label).unwrap_or(if s.start_ms.is_some() { "running" } else { "pending" });
            match counts.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += 1,
                None => counts.push((label, 1)),
            }
        }
        let start = members.iter().filter_map(|s| s.start_ms).min();
        let end = members.iter().filter_map(|s| s.end_ms.or(s.start_ms.map(|t| t + s.duration_ms))).max();
        let worst = members.iter().map(|s| s.outcome).find(|o| color(*o) == "#c62828").unwrap_or(members[0].outcome);
        let _ = write!(
            h,
            "<tr id=\"step-{}\" class=\"fan\"><td class=\"mono\"><b>{} ×{}</b></td><td class=\"mono\">{}</td><td style=\"color:{}\">{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>one instance per item</td></tr>",
            esc(group),
            esc(group),
            members.len(),
            esc(&members[0].uses),
            color(worst),
            counts.iter().map(|(l, n)| format!("{n} {l}")).collect::<Vec<_>>().join("<br>"),
            start.map(|m| format!("+{}", fmt_ms(m))).unwrap_or_else(|| "-".into()),
            start.zip(end).map(|(a, b)| fmt_ms(b.saturating_sub(a))).unwrap_or_else(|| "-".into()),
            members.iter().map(|s| s.attempts).sum::<u32>(),
        );
        let (loud, quiet): (Vec<&StepReport>, Vec<&StepReport>) = members.iter().partition(|s| {
            s.error.is_some()
                || (s.outcome.is_none() && s.start_ms.is_some())
                || matches!(s.outcome, Some(Outcome::Failed | Outcome::PlanFailed | Outcome::Interrupted))
        });
        for s in loud {
            step_row(h, s, false);
        }
        if !quiet.is_empty() {
            let _ = write!(
                h,
                "<tr><td colspan=\"7\"><details><summary>{} {} instance(s) of <code>{}</code></summary>\
<table class=\"kv\">",
                if quiet.len() == members.len() { "the" } else { "the other" },
                quiet.len(),
                esc(group)
            );
            for s in quiet {
                let outputs: Vec<String> =
                    s.outputs.iter().take(3).map(|(k, v)| format!("{}={}", esc(k), esc(&super::short(v)))).collect();
                let _ = write!(
                    h,
                    "<tr><td class=\"mono\">{}</td><td style=\"color:{}\">{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
                    esc(&s.id),
                    color(s.outcome),
                    s.outcome.map(Outcome::label).unwrap_or("pending"),
                    s.start_ms.map(|m| format!("+{}", fmt_ms(m))).unwrap_or_else(|| "-".into()),
                    if s.start_ms.is_some() { fmt_ms(s.duration_ms) } else { "-".into() },
                    outputs.join(" ")
                );
            }
            h.push_str("</table></details></td></tr>");
        }
    }
    h.push_str("</table>");
}

/// One step's row: its outcome, times, and the details an operator reads — error and hint,
/// approver, retries, plan checks, outputs as a short table, undo.
fn step_row(h: &mut String, s: &StepReport, anchor: bool) {
    let mut details = String::new();
    if let Some(e) = &s.error {
        let _ = write!(details, "<div class=\"err\">{}</div>", esc(&e.message));
        if let Some(hint) = &e.hint {
            let _ = write!(details, "<div class=\"hint\">hint: {}</div>", esc(hint));
        }
    }
    if let Some(by) = &s.approved_by {
        let _ = write!(details, "<div>approved by <b>{}</b></div>", esc(by));
    }
    for x in s.retries.iter().chain(&s.notes) {
        let _ = write!(details, "<div>{}</div>", esc(x));
    }
    if let Some(p) = &s.plan {
        let _ = write!(details, "<div>{}</div>", esc(&p.summary));
        for c in &p.checks {
            let _ = write!(
                details,
                "<div class=\"{}\">[{}] {}: {}</div>",
                if c.ok { "" } else { "err" },
                if c.ok { "ok" } else { "FAIL" },
                esc(&c.name),
                esc(&c.detail)
            );
        }
    }
    if !s.outputs.is_empty() && s.error.is_none() {
        // Outputs as a table of names and short values: a long value is cut, never a page wider.
        details.push_str("<table class=\"kv\">");
        for (k, v) in s.outputs.iter().take(12) {
            let _ = write!(
                details,
                "<tr><td class=\"hint\">{}</td><td class=\"mono\">{}</td></tr>",
                esc(k),
                esc(&super::short(v))
            );
        }
        if s.outputs.len() > 12 {
            let _ =
                write!(details, "<tr><td colspan=\"2\" class=\"hint\">… and {} more</td></tr>", s.outputs.len() - 12);
        }
        details.push_str("</table>");
    }
    if let Some(u) = &s.undo {
        let _ = write!(details, "<div>{}</div>", esc(u));
    }
    let _ = write!(
        h,
        "<tr{}><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td style=\"color:{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        if anchor { format!(" id=\"step-{}\"", esc(&s.id)) } else { String::new() },
        esc(&s.id),
        esc(&s.uses),
        color(s.outcome),
        s.outcome.map(Outcome::label).unwrap_or(if s.start_ms.is_some() { "running" } else { "pending" }),
        s.start_ms.map(|m| format!("+{}", fmt_ms(m))).unwrap_or_else(|| "-".into()),
        if s.start_ms.is_some() { fmt_ms(s.duration_ms) } else { "-".into() },
        s.attempts,
        details
    );
}

/// The run as a log, newest last: each attempt's start and end. The live page shows it grow;
/// a long run's report keeps the last lines (the text report and the journal have them all).
fn log(h: &mut String, r: &Report) {
    const LAST: usize = 300;
    let mut lines: Vec<(u64, String)> = vec![];
    for s in &r.steps {
        for a in &s.attempt_log {
            let again = if a.attempt > 1 { format!(" (attempt {})", a.attempt) } else { String::new() };
            lines.push((a.start_ms, format!("{} started{again}", s.id)));
            if let Some(end) = a.end_ms {
                lines.push((end, format!("{}: {}", s.id, a.result)));
            }
        }
    }
    lines.sort_by_key(|(t, _)| *t);
    let skipped = lines.len().saturating_sub(LAST);
    let _ = write!(
        h,
        "<h2>Log</h2>{}<pre class=\"log\" id=\"log\">",
        if skipped > 0 {
            format!(
                "<p class=\"hint\">the last {LAST} of {} lines (every attempt: <code>drover report {} -o json</code>)</p>",
                lines.len(),
                esc(&r.run_id)
            )
        } else {
            String::new()
        }
    );
    for (t, line) in &lines[skipped..] {
        let _ = writeln!(h, "+{:<9} {}", fmt_ms(*t), esc(line));
    }
    h.push_str("</pre>");
}
