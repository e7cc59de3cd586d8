//! A plan's step graph as SVG, drawn on the server: boxes in layers (a step sits one layer
//! below the deepest step it waits for), `needs` edges solid, template-reference edges
//! dashed, `on_error` routes red. With a run, each box takes its step's status colour and
//! shows attempts and duration; the error goes in the box's tooltip (`<title>`).
//!
//! The output is plain SVG with presentation attributes only (no `style`, no script), so
//! it is allowed by the page's Content-Security-Policy, and every piece of text in it is
//! escaped here: step errors carry event data.

use std::collections::HashMap;
use std::fmt::Write;

use petgraph::visit::EdgeRef;

use crate::compile::{Edge, OnError, Plan};
use crate::report::StepReport;
use crate::schedule::ready::Status;

const BOX_W: f64 = 210.0;
const BOX_H: f64 = 58.0;
const GAP_X: f64 = 36.0;
const GAP_Y: f64 = 54.0;
const MARGIN: f64 = 16.0;
/// Longest label drawn in a box before it is cut with an ellipsis (the tooltip has it all).
const MAX_LABEL: usize = 28;

/// Escapes text for SVG/HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline are not valid XML.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Fill and stroke of a box for a step status; `None` is a graph without a run.
pub fn colours(status: Option<Status>) -> (&'static str, &'static str) {
    match status {
        Some(Status::Succeeded) => ("#e6f4ea", "#1e7d32"),
        Some(Status::Failed) => ("#fdecea", "#c62828"),
        Some(Status::Running) => ("#e3f2fd", "#1565c0"),
        Some(Status::Skipped) => ("#f3f3f3", "#8a8a8a"),
        Some(Status::Cancelled) => ("#fff4e5", "#b26a00"),
        Some(Status::Pending) => ("#ffffff", "#9e9e9e"),
        None => ("#ffffff", "#455a64"),
    }
}

/// The name of a status as the run page shows it.
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Pending => "pending",
        Status::Running => "running",
        Status::Succeeded => "succeeded",
        Status::Skipped => "skipped",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
    }
}

/// A duration in milliseconds, short: `0.4 ms`, `12 ms`, `3.2 s`, `2 min 5 s`.
pub fn duration(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "-".into();
    }
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// Layer of each step: 0 for steps that wait for nothing, else one more than the deepest
/// step it waits for. Error handlers sit below the steps that route to them.
fn layers(plan: &Plan) -> Vec<usize> {
    let n = plan.steps.len();
    let mut routed_from: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, s) in plan.steps.iter().enumerate() {
        if let OnError::Handler(h) = s.on_error {
            if h < n {
                routed_from[h].push(i);
            }
        }
    }
    let mut layer: Vec<Option<usize>> = vec![None; n];
    // The plan is acyclic (compilation refuses cycles), so `n` rounds settle every step;
    // the bound keeps a malformed plan from looping.
    for _ in 0..=n {
        let mut changed = false;
        for i in 0..n {
            let preds = plan.deps[i].iter().chain(&routed_from[i]);
            let mut l = 0;
            let mut known = true;
            for &p in preds {
                match layer.get(p).copied().flatten() {
                    Some(pl) => l = l.max(pl + 1),
                    None => known = false,
                }
            }
            if known && layer[i] != Some(l) {
                layer[i] = Some(l);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    layer.into_iter().map(|l| l.unwrap_or(0)).collect()
}

/// Vertical lanes beside the boxes for edges that skip layers, and how far they reach.
struct Lanes {
    right: usize,
    left: usize,
    min_x: f64,
    max_x: f64,
}

/// The path of an edge from the bottom of box `a` to the top of box `b`: one curve between
/// adjacent layers (or when no box stands in the way), else out to a lane beside the
/// boxes in between, down, and in again, so a line never crosses a box it does not touch.
fn route(
    a: usize,
    b: usize,
    xy: &[(f64, f64)],
    layer: &[usize],
    rows: &[Vec<usize>],
    lanes: &mut Lanes,
) -> String {
    let (x1, y1) = (xy[a].0 + BOX_W / 2.0, xy[a].1 + BOX_H);
    let (x2, y2) = (xy[b].0 + BOX_W / 2.0, xy[b].1);
    let (la, lb) = (layer[a], layer[b]);
    let between: Vec<usize> = if lb > la + 1 {
        rows[la + 1..lb].iter().flatten().copied().collect()
    } else {
        Vec::new()
    };
    let (lo, hi) = (x1.min(x2) - 8.0, x1.max(x2) + 8.0);
    let blocked = between
        .iter()
        .any(|&i| xy[i].0 < hi && xy[i].0 + BOX_W > lo);
    if !blocked {
        let dy = ((y2 - y1) / 2.0).max(GAP_Y / 2.0);
        return format!(
            "M {x1:.1} {y1:.1} C {x1:.1} {:.1}, {x2:.1} {:.1}, {x2:.1} {y2:.1}",
            y1 + dy,
            y2 - dy
        );
    }
    let left_edge = between
        .iter()
        .map(|&i| xy[i].0)
        .fold(f64::INFINITY, f64::min);
    let right_edge = between
        .iter()
        .map(|&i| xy[i].0 + BOX_W)
        .fold(f64::NEG_INFINITY, f64::max);
    let wx = if (x1 + x2) / 2.0 >= (left_edge + right_edge) / 2.0 {
        lanes.right += 1;
        right_edge + GAP_X / 2.0 + 9.0 * (lanes.right - 1) as f64
    } else {
        lanes.left += 1;
        left_edge - GAP_X / 2.0 - 9.0 * (lanes.left - 1) as f64
    };
    lanes.min_x = lanes.min_x.min(wx - MARGIN);
    lanes.max_x = lanes.max_x.max(wx + MARGIN);
    let (ya, yb) = (y1 + GAP_Y, y2 - GAP_Y);
    format!(
        "M {x1:.1} {y1:.1} C {x1:.1} {:.1}, {wx:.1} {:.1}, {wx:.1} {ya:.1} L {wx:.1} {yb:.1} C {wx:.1} {:.1}, {x2:.1} {:.1}, {x2:.1} {y2:.1}",
        y1 + GAP_Y * 0.6,
        y1 + GAP_Y * 0.4,
        y2 - GAP_Y * 0.4,
        y2 - GAP_Y * 0.6,
    )
}

/// Renders `plan` as an SVG element (no XML declaration: it is embedded in a page). With
/// `steps`, boxes are coloured by the run's step reports; steps absent from the run are
/// drawn as pending. Boxes link to `#step-<id>` (the run page's step table).
pub fn render(plan: &Plan, steps: Option<&[StepReport]>) -> String {
    let n = plan.steps.len();
    let by_id: HashMap<&str, &StepReport> = steps
        .unwrap_or_default()
        .iter()
        .map(|s| (s.id.as_str(), s))
        .collect();
    let layer = layers(plan);
    let depth = layer.iter().copied().max().map_or(0, |m| m + 1);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, &l) in layer.iter().enumerate() {
        rows[l].push(i);
    }
    // One downward sweep ordering each row by the mean position of its predecessors keeps
    // most edges from crossing; ties keep declaration order.
    let mut pos = vec![0.0f64; n];
    for row in rows.iter_mut() {
        let key = |i: usize| -> f64 {
            let preds = &plan.deps[i];
            if preds.is_empty() {
                i as f64 / n.max(1) as f64
            } else {
                preds.iter().map(|&p| pos[p]).sum::<f64>() / preds.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = row.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        *row = keyed.into_iter().map(|(_, i)| i).collect();
        for (k, &i) in row.iter().enumerate() {
            pos[i] = k as f64;
        }
    }
    let widest = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let width = MARGIN * 2.0 + widest as f64 * BOX_W + (widest as f64 - 1.0) * GAP_X;
    let height = MARGIN * 2.0 + depth.max(1) as f64 * BOX_H + (depth.max(1) as f64 - 1.0) * GAP_Y;
    let mut xy = vec![(0.0f64, 0.0f64); n];
    for (l, row) in rows.iter().enumerate() {
        let row_w = row.len() as f64 * BOX_W + (row.len() as f64 - 1.0).max(0.0) * GAP_X;
        let x0 = (width - row_w) / 2.0;
        for (k, &i) in row.iter().enumerate() {
            xy[i] = (
                x0 + k as f64 * (BOX_W + GAP_X),
                MARGIN + l as f64 * (BOX_H + GAP_Y),
            );
        }
    }

    // Edges, routed first so the canvas can grow to fit the lanes of long ones. One line
    // per pair of steps: a `needs` that is also a template reference is drawn once, as
    // the compiled graph keeps it.
    let mut pairs: std::collections::BTreeMap<(usize, usize), Edge> = Default::default();
    for e in plan.graph.edge_references() {
        let (a, b) = (plan.graph[e.source()], plan.graph[e.target()]);
        if a < n && b < n {
            let w = pairs.entry((a, b)).or_insert(*e.weight());
            if *e.weight() == Edge::Needs {
                *w = Edge::Needs;
            }
        }
    }
    let mut lines: Vec<(usize, usize, Option<Edge>)> = pairs
        .into_iter()
        .map(|((a, b), w)| (a, b, Some(w)))
        .collect();
    for (i, s) in plan.steps.iter().enumerate() {
        if let OnError::Handler(h) = s.on_error {
            if h < n {
                lines.push((i, h, None));
            }
        }
    }
    let mut lanes = Lanes {
        right: 0,
        left: 0,
        min_x: 0.0,
        max_x: width,
    };
    let mut paths = String::new();
    for (a, b, kind) in lines {
        let d = route(a, b, &xy, &layer, &rows, &mut lanes);
        let _ = match kind {
            Some(w) => write!(
                paths,
                r##"<path class="edge" d="{d}" fill="none" stroke="#607d8b" stroke-width="1.4"{} marker-end="url(#arrow)"/>"##,
                if w == Edge::Reference {
                    r#" stroke-dasharray="5 4""#
                } else {
                    ""
                }
            ),
            None => write!(
                paths,
                r##"<path class="edge on-error" d="{d}" fill="none" stroke="#c62828" stroke-width="1.4" stroke-dasharray="2 3" marker-end="url(#arrow-err)"><title>on error</title></path>"##
            ),
        };
    }
    let vx = lanes.min_x.min(0.0);
    let vw = lanes.max_x.max(width) - vx;

    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="graph" role="img" viewBox="{vx:.0} 0 {vw:.0} {height:.0}" width="{vw:.0}" height="{height:.0}" font-family="system-ui, sans-serif" font-size="12"><title>{}</title><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#607d8b"/></marker><marker id="arrow-err" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#c62828"/></marker></defs>"##,
        escape(&format!(
            "playbook {} (on {})",
            plan.name, plan.trigger.event
        ))
    );
    out.push_str(&paths);

    for (i, s) in plan.steps.iter().enumerate() {
        let report = by_id.get(s.id.as_str()).copied();
        let status = match (steps, report) {
            (None, _) => None,
            (Some(_), Some(r)) => Some(r.status),
            (Some(_), None) => Some(Status::Pending),
        };
        let (fill, stroke) = colours(status);
        let (x, y) = xy[i];

        let mut tip = format!("{} ({})", s.id, s.uses);
        if s.is_handler {
            tip.push_str("\nerror handler");
        }
        // Without a run: what shapes the step's execution.
        let mut flags = Vec::new();
        if s.condition.is_some() || s.literal_condition.is_some() {
            flags.push("if …");
        }
        if s.for_each.is_some() {
            flags.push("for each");
        }
        if s.is_handler {
            flags.push("error handler");
        }
        let mut detail = flags.join(" · ");
        if let Some(r) = report {
            let _ = write!(
                tip,
                "\nstatus: {}\nattempts: {}\nduration: {}",
                status_name(r.status),
                r.attempts,
                duration(r.duration_ms)
            );
            if let Some(e) = &r.error {
                let _ = write!(tip, "\nerror: {}", e.message);
            }
            if let Some(reason) = &r.reason {
                let _ = write!(tip, "\nreason: {reason}");
            }
            detail = format!(
                "{} · {}× · {}",
                status_name(r.status),
                r.attempts,
                duration(r.duration_ms)
            );
        } else if status == Some(Status::Pending) {
            tip.push_str("\nstatus: not run");
            detail = "not run".into();
        }
        let status_class = status.map_or("plan", status_name);
        let _ = write!(
            out,
            r##"<a href="#step-{id_attr}"><g class="step {status_class}" data-step="{id_attr}"><title>{tip}</title><rect x="{x:.1}" y="{y:.1}" width="{BOX_W}" height="{BOX_H}" rx="7" fill="{fill}" stroke="{stroke}" stroke-width="{sw}"{dash}/><text x="{tx:.1}" y="{ty1:.1}" text-anchor="middle" font-weight="600" fill="#1a1a1a">{id}</text><text x="{tx:.1}" y="{ty2:.1}" text-anchor="middle" fill="#455a64">{uses}</text><text x="{tx:.1}" y="{ty3:.1}" text-anchor="middle" fill="{stroke}">{detail}</text></g></a>"##,
            id_attr = escape(&s.id),
            tip = escape(&tip),
            sw = if status == Some(Status::Failed) {
                2.2
            } else {
                1.4
            },
            dash = if s.is_handler {
                r#" stroke-dasharray="6 3""#
            } else {
                ""
            },
            tx = x + BOX_W / 2.0,
            ty1 = y + 18.0,
            ty2 = y + 34.0,
            ty3 = y + 50.0,
            id = escape(&cut(&s.id, MAX_LABEL)),
            uses = escape(&cut(&s.uses, MAX_LABEL)),
            detail = escape(&cut(&detail, MAX_LABEL + 4)),
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::{ErrorKind, Registry, StepContext, StepError, TypedStep};
    use async_trait::async_trait;
    use serde_json::{json, Map, Value};
    use std::sync::Arc;

    struct Echo;

    #[async_trait]
    impl TypedStep for Echo {
        type Input = Map<String, Value>;
        type Output = Map<String, Value>;
        const NAME: &'static str = "echo";
        fn description(&self) -> &'static str {
            "returns its input"
        }
        fn example(&self) -> Value {
            json!({})
        }
        async fn run(
            &self,
            input: Map<String, Value>,
            _: &StepContext,
        ) -> Result<Map<String, Value>, StepError> {
            Ok(input)
        }
    }

    pub(crate) fn plan(yaml: &str) -> Arc<Plan> {
        let mut registry = Registry::new();
        registry.register(Echo);
        let source = crate::load::parse_source(std::path::Path::new("t.yaml"), yaml.into())
            .unwrap_or_else(|d| panic!("{d:?}"));
        let bundle = crate::compile::compile_sources(&[source], &registry)
            .unwrap_or_else(|d| panic!("{d:?}"));
        bundle.playbooks[0].clone()
    }

    const DIAMOND: &str = r#"
playbook: diamond
on: { event: test }
steps:
  - id: a
    uses: echo
    on_error: rescue
  - id: b
    uses: echo
    needs: a
  - id: c
    uses: echo
    with: { x: "{{ steps.a.x }}" }
  - id: d
    uses: echo
    needs: [b, c]
    with: { y: "{{ steps.b.x }}" }
  - id: rescue
    uses: echo
"#;

    fn report(id: &str, status: Status, error: Option<&str>) -> StepReport {
        StepReport {
            id: id.into(),
            uses: "echo".into(),
            status,
            attempts: 3,
            duration_ms: 1234.5,
            output: None,
            error: error.map(|m| StepError {
                kind: ErrorKind::Permanent,
                message: m.into(),
            }),
            reason: None,
        }
    }

    #[test]
    fn layers_follow_dependencies_and_handlers() {
        let p = plan(DIAMOND);
        let l = layers(&p);
        let at = |id: &str| l[p.steps.iter().position(|s| s.id == id).unwrap()];
        assert_eq!(at("a"), 0);
        assert_eq!(at("b"), 1);
        assert_eq!(at("c"), 1);
        assert_eq!(at("d"), 2);
        assert_eq!(
            at("rescue"),
            1,
            "a handler sits below the step routing to it"
        );
    }

    #[test]
    fn boxes_edges_and_status_colours() {
        let p = plan(DIAMOND);
        let svg = render(
            &p,
            Some(&[
                report("a", Status::Succeeded, None),
                report("b", Status::Failed, Some("boom")),
            ]),
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<g class=\"step ").count(), 5);
        // a->b (needs), a->c (reference, dashed), b->d (needs and a reference: one line,
        // as the compiled graph has it), c->d, and the on_error route.
        assert_eq!(svg.matches("class=\"edge\"").count(), 4, "{svg}");
        assert_eq!(svg.matches("class=\"edge on-error\"").count(), 1);
        assert_eq!(svg.matches("stroke-dasharray=\"5 4\"").count(), 2, "{svg}");
        let (ok_fill, _) = colours(Some(Status::Succeeded));
        let (bad_fill, _) = colours(Some(Status::Failed));
        assert!(svg.contains(&format!("fill=\"{ok_fill}\"")));
        assert!(svg.contains(&format!("fill=\"{bad_fill}\"")));
        assert!(svg.contains("attempts: 3"));
        assert!(svg.contains("duration: 1.2 s"));
        assert!(svg.contains("error: boom"));
        assert!(svg.contains("status: not run"), "steps absent from the run");
        assert!(svg.contains("href=\"#step-d\""));
    }

    #[test]
    fn edges_that_skip_layers_go_around_boxes() {
        let p = plan(
            r#"
playbook: long
on: { event: test }
steps:
  - id: a
    uses: echo
  - id: b
    uses: echo
    needs: a
  - id: c
    uses: echo
    needs: [a, b]
"#,
        );
        let svg = render(&p, None);
        let paths: Vec<&str> = svg
            .match_indices("<path class=\"edge\" d=\"")
            .map(|(i, m)| svg[i + m.len()..].split('"').next().unwrap())
            .collect();
        assert_eq!(paths.len(), 3);
        let long: Vec<&&str> = paths.iter().filter(|d| d.contains(" L ")).collect();
        assert_eq!(long.len(), 1, "a->c goes out to a lane: {paths:?}");
        // The lane is beside b's box (one box per row, centred: x from 16 to 226).
        let lane_x: f64 = long[0]
            .split(" L ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap();
        assert!(!(16.0..=226.0).contains(&lane_x), "{lane_x}");
        assert!(svg.contains("viewBox=\""));
    }

    #[test]
    fn hostile_errors_are_escaped() {
        let p = plan(DIAMOND);
        let svg = render(
            &p,
            Some(&[report(
                "a",
                Status::Failed,
                Some("<script>alert(1)</script>\"'&\u{7}"),
            )]),
        );
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;\u{fffd}"));
    }

    #[test]
    fn a_plan_without_a_run_is_drawn_neutral() {
        let p = plan(DIAMOND);
        let svg = render(&p, None);
        assert!(svg.contains("class=\"step plan\""));
        assert!(!svg.contains("status:"));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(0.42), "0.4 ms");
        assert_eq!(duration(12.4), "12 ms");
        assert_eq!(duration(3200.0), "3.2 s");
        assert_eq!(duration(125_000.0), "2 min 5 s");
        assert_eq!(duration(f64::NAN), "-");
    }
}
