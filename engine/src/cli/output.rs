//! What `engine run` and `engine steps` print.

use serde_json::{json, Value};

use crate::cases::Case;
use crate::notify::Notification;
use crate::report::{RunReport, RunStatus};
use crate::schedule::ready::Status;
use crate::step::Registry;

pub struct EventRuns {
    pub label: String,
    pub event: Value,
    pub runs: Vec<RunReport>,
    /// Seen before (same dedup key): nothing ran.
    pub duplicate: bool,
}

pub fn run_json(
    events: &[EventRuns],
    cases: &[Case],
    notifications: &[Notification],
    duplicates: usize,
) {
    let runs: Vec<&RunReport> = events.iter().flat_map(|e| e.runs.iter()).collect();
    let out = json!({
        "runs": runs,
        "cases": cases,
        "notifications": notifications,
        "duplicates": duplicates,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
}

pub fn run_summary(events: &[EventRuns], cases: &[Case], notifications: &[Notification]) {
    let mut total = 0;
    let mut failed = 0;
    for e in events {
        let kind = e
            .event
            .get("eventType")
            .or_else(|| e.event.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("event");
        println!("event {} ({kind})", e.label);
        if e.duplicate {
            println!("  skipped: duplicate (already received)");
        } else if e.runs.is_empty() {
            println!("  no playbook triggered");
        }
        for r in &e.runs {
            total += 1;
            let mark = match r.status {
                RunStatus::Succeeded => "succeeded",
                RunStatus::Failed => {
                    failed += 1;
                    "FAILED"
                }
            };
            println!(
                "  run {} {} {mark} in {:.1} ms",
                r.playbook, r.run_id, r.duration_ms
            );
            for s in &r.steps {
                let line = match s.status {
                    Status::Succeeded => {
                        format!("ok      {} ({}) {:.1} ms", s.id, s.uses, s.duration_ms)
                    }
                    Status::Skipped => {
                        format!("skipped {}: {}", s.id, s.reason.as_deref().unwrap_or(""))
                    }
                    Status::Failed => format!(
                        "failed  {} ({}) after {} attempt(s): {}",
                        s.id,
                        s.uses,
                        s.attempts,
                        s.error.as_ref().map(|e| e.message.as_str()).unwrap_or("")
                    ),
                    Status::Cancelled => {
                        format!("cancel  {}: {}", s.id, s.reason.as_deref().unwrap_or(""))
                    }
                    Status::Pending | Status::Running => format!("?       {}", s.id),
                };
                println!("    {line}");
            }
            if let Some(err) = &r.error {
                println!("    error: {err}");
            }
        }
    }
    if !cases.is_empty() {
        println!("cases changed:");
        for c in cases {
            case_line(c);
        }
    }
    if !notifications.is_empty() {
        println!("notifications:");
        for n in notifications {
            println!("  to {}: {}", n.to.join(", "), n.subject);
            if !n.message.is_empty() {
                println!("      {}", n.message);
            }
        }
    }
    let duplicates = events.iter().filter(|e| e.duplicate).count();
    let skipped = if duplicates > 0 {
        format!(" ({duplicates} duplicate(s) skipped)")
    } else {
        String::new()
    };
    println!(
        "{} event(s){skipped}, {total} run(s), {failed} failed, {} case(s) changed, {} notification(s)",
        events.len(),
        cases.len(),
        notifications.len()
    );
}

/// One case in a few lines: id, severity, state, assignee, SLA, title, observables.
pub fn case_line(c: &Case) {
    let assignee = c.assignee.as_deref().unwrap_or("unassigned");
    let sla = match &c.sla.due_at {
        Some(d) if c.sla.breached => format!("SLA BREACHED (due {d})"),
        Some(d) => format!("SLA due {d}"),
        None => "no SLA".to_string(),
    };
    println!(
        "  {}  {:<13} {:<11} {assignee}  {sla}",
        c.id,
        c.severity.as_str(),
        c.state.as_str()
    );
    println!("      {}", c.title);
    let obs = super::cases::observables(c);
    if !obs.is_empty() {
        println!("      observables: {}", obs.join(", "));
    }
    if let Some(r) = &c.resolution {
        println!("      resolution: {r}");
    }
}

/// A case with its timeline.
pub fn case_detail(c: &Case) {
    case_line(c);
    if !c.tags.is_empty() {
        println!(
            "      tags: {}",
            c.tags.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    println!("      timeline:");
    for t in &c.timeline {
        println!("        {}  {}  {} ({})", t.at, t.kind, t.message, t.actor);
    }
}

pub fn steps(registry: &Registry, as_json: bool) {
    if as_json {
        let specs: Vec<_> = registry.specs().collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&specs).unwrap_or_default()
        );
        return;
    }
    for spec in registry.specs() {
        println!("{}\n  {}", spec.name, spec.description);
        if let Some(props) = spec
            .input_schema
            .get("properties")
            .and_then(Value::as_object)
        {
            let required: Vec<&str> = spec
                .input_schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!("  inputs:");
            for (name, p) in props {
                let desc = p.get("description").and_then(Value::as_str).unwrap_or("");
                let req = if required.contains(&name.as_str()) {
                    " (required)"
                } else {
                    ""
                };
                println!("    {name}{req}: {desc}");
            }
        }
        let example = json!({ "id": "example", "uses": spec.name, "with": spec.example });
        println!("  example:");
        for line in crate::load::yaml::to_string(&vec![example]).lines() {
            println!("    {line}");
        }
        println!();
    }
}
