//! `engine graph`: a plan's DAG as Mermaid or Graphviz dot.

use petgraph::visit::EdgeRef;

use crate::compile::{Edge, OnError, Plan};

fn label(plan: &Plan, i: usize) -> String {
    let s = &plan.steps[i];
    let mut l = format!("{}<br/>{}", s.id, s.uses);
    if s.condition.is_some() || s.literal_condition.is_some() {
        l.push_str("<br/>if …");
    }
    if s.for_each.is_some() {
        l.push_str("<br/>for each");
    }
    l
}

pub fn mermaid(plan: &Plan) -> String {
    let mut out = format!(
        "%% playbook {} (on {})\nflowchart TD\n",
        plan.name, plan.trigger.event
    );
    for (i, s) in plan.steps.iter().enumerate() {
        let l = label(plan, i).replace('"', "#quot;");
        if s.is_handler {
            out.push_str(&format!("  {}{{{{\"{l}\"}}}}\n", s.id));
        } else {
            out.push_str(&format!("  {}[\"{l}\"]\n", s.id));
        }
    }
    for e in plan.graph.edge_references() {
        let (a, b) = (plan.graph[e.source()], plan.graph[e.target()]);
        let arrow = match e.weight() {
            Edge::Needs => "-->",
            Edge::Reference => "-.->",
        };
        out.push_str(&format!(
            "  {} {arrow} {}\n",
            plan.steps[a].id, plan.steps[b].id
        ));
    }
    for s in &plan.steps {
        if let OnError::Handler(h) = s.on_error {
            out.push_str(&format!(
                "  {} -- on error --> {}\n",
                s.id, plan.steps[h].id
            ));
        }
    }
    out
}

pub fn dot(plan: &Plan) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box];\n",
        q(&plan.name)
    );
    for (i, s) in plan.steps.iter().enumerate() {
        let l = label(plan, i).replace("<br/>", "\\n");
        let shape = if s.is_handler { ", shape=hexagon" } else { "" };
        out.push_str(&format!(
            "  \"{}\" [label=\"{}\"{shape}];\n",
            q(&s.id),
            q(&l)
        ));
    }
    for e in plan.graph.edge_references() {
        let (a, b) = (plan.graph[e.source()], plan.graph[e.target()]);
        let style = match e.weight() {
            Edge::Needs => "",
            Edge::Reference => " [style=dashed]",
        };
        out.push_str(&format!(
            "  \"{}\" -> \"{}\"{style};\n",
            q(&plan.steps[a].id),
            q(&plan.steps[b].id)
        ));
    }
    for s in &plan.steps {
        if let OnError::Handler(h) = s.on_error {
            out.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"on error\", color=red];\n",
                q(&s.id),
                q(&plan.steps[h].id)
            ));
        }
    }
    out.push_str("}\n");
    out
}
