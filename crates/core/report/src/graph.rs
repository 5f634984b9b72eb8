//! The runbook's graph as a picture: one box per step — a fanned step's instances as one box
//! with their counts — coloured by outcome, the critical path outlined, laid out top to bottom
//! in layers (each step below everything it needs). Drawn by hand as inline SVG: the report
//! must stay one self-contained file, and a graph of a runbook's size needs no layout engine.

use std::collections::HashMap;
use std::fmt::Write;

use super::{Report, fmt_ms};
use drover_model::events::Outcome;

const NODE_W: f64 = 200.0;
const NODE_H: f64 = 40.0;
const GAP_X: f64 = 16.0;
const GAP_Y: f64 = 34.0;
/// The page is 1360 px wide; wider layers wrap onto more rows.
const WIDTH: f64 = 1328.0;
/// More boxes than this make a picture no one can read (and a report of megabytes).
const MOST_BOXES: usize = 400;

/// One box: a step, or all instances of a fanned step.
struct Node {
    id: String,
    count: usize,
    succeeded: usize,
    failed: usize,
    running: usize,
    skipped: usize,
    continued: usize,
    interrupted: usize,
    critical: bool,
    /// Earliest start and latest end of its instances.
    span: Option<(u64, u64)>,
    needs: Vec<usize>,
}

impl Node {
    fn done(&self) -> usize {
        self.succeeded + self.failed + self.skipped + self.continued + self.interrupted
    }

    /// Its state in one word — the worst among its instances wins — as the page's scripts and
    /// the browser tests read it.
    fn state(&self) -> &'static str {
        match () {
            _ if self.failed > 0 => "failed",
            _ if self.interrupted > 0 => "interrupted",
            _ if self.running > 0 => "running",
            _ if self.continued > 0 => "continued",
            _ if self.count > 0 && self.succeeded == self.count => "succeeded",
            _ if self.done() > 0 => "partial",
            _ => "pending",
        }
    }

    /// Fill and stroke of its box.
    fn colors(&self) -> (&'static str, &'static str) {
        match self.state() {
            "failed" => ("#ffcdd2", "#c62828"),
            "interrupted" => ("#e1bee7", "#6a1b9a"),
            "running" => ("#bbdefb", "#1565c0"),
            "continued" => ("#ffe0b2", "#ef6c00"),
            "succeeded" => ("#c8e6c9", "#2e7d32"),
            _ => ("#eeeeee", "#9e9e9e"),
        }
    }

    /// Its second line: what happened, in a few words.
    fn status(&self) -> String {
        let took = self.span.map(|(a, b)| fmt_ms(b.saturating_sub(a))).unwrap_or_default();
        if self.count == 1 {
            return match () {
                _ if self.failed > 0 => format!("failed after {took}"),
                _ if self.running > 0 => "running…".into(),
                _ if self.succeeded > 0 => format!("succeeded in {took}"),
                _ if self.skipped > 0 => "skipped".into(),
                _ if self.continued > 0 => format!("failed, continued ({took})"),
                _ if self.interrupted > 0 => "interrupted".into(),
                _ => "not run".into(),
            };
        }
        let mut parts = vec![format!("×{}", self.count)];
        for (n, word) in [
            (self.succeeded, "ok"),
            (self.failed + self.continued, "failed"),
            (self.running, "running"),
            (self.interrupted, "interrupted"),
            (self.skipped, "skipped"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {word}"));
            }
        }
        let waiting = self.count - self.done() - self.running;
        if waiting > 0 && waiting < self.count {
            parts.push(format!("{waiting} to go"));
        }
        parts.join(" · ")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The group a step belongs to: its own id, or the fanned step's.
pub(crate) fn group_of(s: &super::StepReport) -> &str {
    s.fanned_from.as_deref().unwrap_or(&s.id)
}

fn nodes(r: &Report) -> Vec<Node> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut nodes: Vec<Node> = vec![];
    let mut member_of: HashMap<&str, usize> = HashMap::new();
    for s in &r.steps {
        let g = group_of(s);
        let k = *index.entry(g).or_insert_with(|| {
            nodes.push(Node {
                id: g.to_string(),
                count: 0,
                succeeded: 0,
                failed: 0,
                running: 0,
                skipped: 0,
                continued: 0,
                interrupted: 0,
                critical: false,
                span: None,
                needs: vec![],
            });
            nodes.len() - 1
        });
        member_of.insert(&s.id, k);
        let n = &mut nodes[k];
        n.count += 1;
        match s.outcome {
            Some(Outcome::Succeeded | Outcome::Planned) => n.succeeded += 1,
            Some(Outcome::Failed | Outcome::PlanFailed) => n.failed += 1,
            Some(Outcome::FailedContinued) => n.continued += 1,
            Some(Outcome::Interrupted) => n.interrupted += 1,
            Some(Outcome::Skipped | Outcome::Blocked) => n.skipped += 1,
            Some(Outcome::NotRun) => {}
            None if s.start_ms.is_some() => n.running += 1,
            None => {}
        }
        if let Some(start) = s.start_ms {
            let end = s.end_ms.unwrap_or(start + s.duration_ms);
            n.span = Some(n.span.map_or((start, end), |(a, b)| (a.min(start), b.max(end))));
        }
    }
    for id in &r.critical_path {
        if let Some(&k) = member_of.get(id.as_str()) {
            nodes[k].critical = true;
        }
    }
    for s in &r.steps {
        let k = member_of[s.id.as_str()];
        for need in &s.needs {
            if let Some(&from) = member_of.get(need.as_str())
                && from != k
                && !nodes[k].needs.contains(&from)
            {
                nodes[k].needs.push(from);
            }
        }
    }
    nodes
}

/// Each node's layer: one below the deepest step it needs (longest path from the roots).
fn layers(nodes: &[Node]) -> Vec<usize> {
    let mut layer = vec![usize::MAX; nodes.len()];
    fn depth(k: usize, nodes: &[Node], layer: &mut [usize], visiting: &mut Vec<bool>) -> usize {
        if layer[k] != usize::MAX {
            return layer[k];
        }
        if visiting[k] {
            return 0; // a cycle cannot pass validation; never loop on one
        }
        visiting[k] = true;
        let d = nodes[k].needs.iter().map(|&n| depth(n, nodes, layer, visiting) + 1).max().unwrap_or(0);
        visiting[k] = false;
        layer[k] = d;
        d
    }
    let mut visiting = vec![false; nodes.len()];
    for k in 0..nodes.len() {
        depth(k, nodes, &mut layer, &mut visiting);
    }
    layer
}

/// The graph of `r` as an SVG element (nothing when the run has no steps).
pub fn render(h: &mut String, r: &Report) {
    let nodes = nodes(r);
    if nodes.is_empty() {
        return;
    }
    if nodes.len() > MOST_BOXES {
        let _ = write!(
            h,
            "<p class=\"hint\">{} steps are too many to draw here: <code>drover plan RUNBOOK --format dot</code> \
draws the graph, and fanning a step out over a list (<code>for_each</code>) shows it as one box.</p>",
            nodes.len()
        );
        return;
    }
    let layer = layers(&nodes);
    let per_row = ((WIDTH + GAP_X) / (NODE_W + GAP_X)).floor().max(1.0) as usize;
    // Position: rows of at most `per_row` boxes; within a layer, boxes ordered by the mean
    // position of what they need, so edges cross less.
    let mut pos: Vec<(f64, f64)> = vec![(0.0, 0.0); nodes.len()];
    let mut row = 0usize;
    let deepest = layer.iter().copied().max().unwrap_or(0);
    for l in 0..=deepest {
        let mut members: Vec<usize> = (0..nodes.len()).filter(|&k| layer[k] == l).collect();
        let centre = |k: usize| {
            let needs = &nodes[k].needs;
            if needs.is_empty() { k as f64 } else { needs.iter().map(|&n| pos[n].0).sum::<f64>() / needs.len() as f64 }
        };
        let mut keyed: Vec<(f64, usize)> = members.iter().map(|&k| (centre(k), k)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        members = keyed.into_iter().map(|(_, k)| k).collect();
        for chunk in members.chunks(per_row) {
            let used = chunk.len() as f64 * (NODE_W + GAP_X) - GAP_X;
            let left = (WIDTH - used) / 2.0;
            for (i, &k) in chunk.iter().enumerate() {
                pos[k] = (left + i as f64 * (NODE_W + GAP_X), 8.0 + row as f64 * (NODE_H + GAP_Y));
            }
            row += 1;
        }
    }
    let height = 8.0 + row as f64 * (NODE_H + GAP_Y) - GAP_Y + 8.0;
    let _ = write!(
        h,
        "<svg class=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" \
aria-label=\"the runbook's graph\"><defs><marker id=\"arrow\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" \
markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L8,4L0,8z\" fill=\"#888\"/></marker></defs>"
    );
    for (k, n) in nodes.iter().enumerate() {
        let (x2, y2) = (pos[k].0 + NODE_W / 2.0, pos[k].1);
        for &from in &n.needs {
            let (x1, y1) = (pos[from].0 + NODE_W / 2.0, pos[from].1 + NODE_H);
            let bend = ((y2 - y1) / 2.0).max(12.0);
            let critical = n.critical && nodes[from].critical;
            let _ = write!(
                h,
                "<path d=\"M{x1:.0},{y1:.0}C{x1:.0},{:.0} {x2:.0},{:.0} {x2:.0},{y2:.0}\" fill=\"none\" stroke=\"{}\" \
stroke-width=\"{}\" marker-end=\"url(#arrow)\"/>",
                y1 + bend,
                y2 - bend,
                if critical { "#000" } else { "#bbb" },
                if critical { 2 } else { 1 }
            );
        }
    }
    for (k, n) in nodes.iter().enumerate() {
        let (x, y) = pos[k];
        let (fill, stroke) = n.colors();
        let label: String =
            if n.id.chars().count() > 28 { n.id.chars().take(27).chain(['…']).collect() } else { n.id.clone() };
        let _ = write!(
            h,
            "<a href=\"#step-{id}\"><g class=\"node\" data-step=\"{id}\" data-state=\"{state}\">\
<title>{id}: {status}{crit}</title>\
<rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"5\" fill=\"{fill}\" stroke=\"{}\" stroke-width=\"{}\"/>\
<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"12\" font-weight=\"600\" text-anchor=\"middle\">{}</text>\
<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">{status}</text></g></a>",
            if n.critical { "#000" } else { stroke },
            if n.critical { 2.5 } else { 1.5 },
            x + NODE_W / 2.0,
            y + 16.0,
            esc(&label),
            x + NODE_W / 2.0,
            y + 32.0,
            id = esc(&n.id),
            state = n.state(),
            status = esc(&n.status()),
            crit = if n.critical { " (on the critical path)" } else { "" },
        );
    }
    h.push_str("</svg>");
}
