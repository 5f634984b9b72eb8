//! One self-contained HTML page: summary, an inline SVG timeline, and the step table.
//! No external assets, so it can be mailed or attached to an incident ticket as is.

use std::fmt::Write;

use super::{Report, fmt_ms};
use drover_model::events::Outcome;

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

pub fn render_html(r: &Report) -> String {
    let mut h = String::new();
    let title = format!("drover {} {}", r.runbook, r.run_id);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}}h1{{font-size:20px}}\
table{{border-collapse:collapse;margin-top:16px}}td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}}\
.err{{color:#c62828}}.hint{{color:#555}}.mono{{font-family:ui-monospace,monospace;font-size:12px}}\
</style></head><body>",
        esc(&title)
    );
    let _ = write!(
        h,
        "<h1>{}</h1><p><b>{}</b> &middot; run <span class=\"mono\">{}</span> &middot; started {} &middot; wall time {} &middot; \
critical path {} ({})</p>",
        esc(&r.runbook),
        esc(r.outcome_label()),
        esc(&r.run_id),
        esc(&r.started),
        fmt_ms(r.wall_ms),
        fmt_ms(r.critical_path_ms),
        esc(&r.critical_path.join(" → "))
    );

    // Timeline: one bar per step that ran, critical path outlined.
    let total = r.steps.iter().filter_map(|s| s.end_ms.or(s.start_ms)).max().unwrap_or(0).max(r.wall_ms).max(1) as f64;
    let label_w = 180.0;
    let chart_w = 760.0;
    let row_h = 22.0;
    let rows: Vec<_> = r.steps.iter().filter(|s| s.start_ms.is_some()).collect();
    let height = rows.len() as f64 * row_h + 30.0;
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"timeline\">",
        label_w + chart_w + 20.0
    );
    for (k, s) in rows.iter().enumerate() {
        let y = k as f64 * row_h + 4.0;
        let start = s.start_ms.unwrap_or(0) as f64;
        let x = label_w + start / total * chart_w;
        let w = (s.duration_ms as f64 / total * chart_w).max(2.0);
        let critical = r.critical_path.contains(&s.id);
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{}</text>\
<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"{}><title>{} {} {}</title></rect>",
            label_w - 6.0,
            y + 14.0,
            esc(&s.id),
            row_h - 6.0,
            color(s.outcome),
            if critical { " stroke=\"#000\" stroke-width=\"2\"" } else { "" },
            esc(&s.id),
            s.outcome.map(Outcome::label).unwrap_or("running"),
            fmt_ms(s.duration_ms)
        );
    }
    let axis_y = rows.len() as f64 * row_h + 20.0;
    for t in 0..=4 {
        let x = label_w + chart_w * t as f64 / 4.0;
        let _ = write!(
            h,
            "<text x=\"{x:.1}\" y=\"{axis_y}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            fmt_ms((total * t as f64 / 4.0) as u64)
        );
    }
    h.push_str("</svg>");

    if let Some(f) = &r.fleet {
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
            "<table><tr><th>item</th><th>tier</th><th>outcome</th><th>RTO</th><th>RPO</th><th>details</th></tr>",
        );
        for i in &f.items {
            let mut details = String::new();
            if let (Some(step), Some(e)) = (&i.failed_step, &i.error) {
                let _ = write!(details, "<div class=\"err\">{}: {}</div>", esc(step), esc(e));
            }
            if let Some(n) = &i.next {
                let _ = write!(details, "<div class=\"hint\">next: {}</div>", esc(n));
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

    h.push_str("<table><tr><th>step</th><th>action</th><th>outcome</th><th>start</th><th>duration</th><th>attempts</th><th>details</th></tr>");
    for s in &r.steps {
        let mut details = String::new();
        if let Some(e) = &s.error {
            let _ = write!(details, "<div class=\"err\">{}</div>", esc(&e.message));
            if let Some(hint) = &e.hint {
                let _ = write!(details, "<div class=\"hint\">hint: {}</div>", esc(hint));
            }
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
            let text = serde_json::to_string(&s.outputs).unwrap_or_default();
            let shown: String = text.chars().take(400).collect();
            let _ = write!(details, "<div class=\"mono\">{}</div>", esc(&shown));
        }
        let _ = write!(
            h,
            "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td style=\"color:{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.id),
            esc(&s.uses),
            color(s.outcome),
            s.outcome.map(Outcome::label).unwrap_or("pending"),
            s.start_ms.map(|m| format!("+{}", fmt_ms(m))).unwrap_or_else(|| "-".into()),
            if s.start_ms.is_some() { fmt_ms(s.duration_ms) } else { "-".into() },
            s.attempts,
            details
        );
    }
    h.push_str("</table></body></html>\n");
    h
}
