//! Cases, actors and times turned into the plain data the templates show. Everything here
//! is text for the templates to escape; nothing is marked safe.

use serde::Serialize;
use serde_json::Value;

use crate::cases::{Actor, Case, Observable, Timestamp};

/// A time as the pages show it.
#[derive(Clone, Debug, Serialize)]
pub struct When {
    /// RFC 3339, for `<time datetime>` and tooltips.
    pub iso: String,
    /// `2026-11-27 08:01:12 UTC`.
    pub short: String,
    /// Unix milliseconds, for the countdown script.
    pub ms: i64,
}

pub fn when(t: Timestamp) -> When {
    let iso = t.to_string();
    let short = match (iso.get(..10), iso.get(11..19)) {
        (Some(d), Some(hms)) => format!("{d} {hms} UTC"),
        _ => iso.clone(),
    };
    When {
        iso,
        short,
        ms: t.unix_millis(),
    }
}

/// A span of time, coarse: `2d 4h`, `3h 12m`, `5m`, `40s`.
pub fn span(ms: i64) -> String {
    let s = ms.unsigned_abs() / 1000;
    let (d, h, m) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

/// A case's SLA at `now`.
#[derive(Clone, Debug, Serialize)]
pub struct SlaView {
    pub policy: Option<String>,
    pub due: Option<When>,
    /// The deadline passed while the case was open (flagged by the SLA watcher, or due
    /// and not yet swept).
    pub breached: bool,
    /// `due in 3h 12m`, `breached 2h ago`, `no SLA`, `met` (closed in time).
    pub text: String,
    /// Whether the countdown keeps running (open cases with a deadline).
    pub live: bool,
}

pub fn sla(case: &Case, now: Timestamp) -> SlaView {
    let open = case.state.is_open();
    let due = case.sla.due_at;
    let overdue = due.is_some_and(|d| d.unix_millis() <= now.unix_millis());
    let breached = case.sla.breached || (open && overdue);
    let text = match due {
        None => "no SLA".to_string(),
        Some(d) => {
            let left = d.unix_millis() - now.unix_millis();
            if breached && open {
                format!("breached {} ago", span(left))
            } else if breached {
                "breached".to_string()
            } else if !open {
                "met".to_string()
            } else {
                format!("due in {}", span(left))
            }
        }
    };
    SlaView {
        policy: case.sla.policy.clone(),
        due: due.map(when),
        breached,
        text,
        live: open && due.is_some(),
    }
}

/// A JSON value as one line of text: strings as they are, the rest as compact JSON.
pub fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// Who made a change.
#[derive(Clone, Debug, Serialize)]
pub struct ActorView {
    /// `person`, `playbook` or `system`.
    pub kind: &'static str,
    pub name: String,
    pub playbook: Option<String>,
    pub step: Option<String>,
    /// Links to `/runs/{run_id}`.
    pub run_id: Option<String>,
}

pub fn actor(a: &Actor) -> ActorView {
    match a {
        Actor::Person { name } => ActorView {
            kind: "person",
            name: name.clone(),
            playbook: None,
            step: None,
            run_id: None,
        },
        Actor::Playbook {
            run_id,
            playbook,
            step,
        } => ActorView {
            kind: "playbook",
            name: format!("{playbook} / {step}"),
            playbook: Some(playbook.clone()),
            step: Some(step.clone()),
            run_id: Some(run_id.clone()),
        },
        Actor::System => ActorView {
            kind: "system",
            name: "engine".to_string(),
            playbook: None,
            step: None,
            run_id: None,
        },
    }
}

/// One row of the queue.
#[derive(Clone, Debug, Serialize)]
pub struct CaseRow {
    pub id: String,
    pub title: String,
    pub severity: &'static str,
    pub state: &'static str,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
    pub sla: SlaView,
    pub created: When,
    pub updated: When,
    pub observables: usize,
}

pub fn case_row(c: &Case, now: Timestamp) -> CaseRow {
    CaseRow {
        id: c.id.to_string(),
        title: c.title.clone(),
        severity: c.severity.as_str(),
        state: c.state.as_str(),
        assignee: c.assignee.clone(),
        tags: c.tags.iter().cloned().collect(),
        sla: sla(c, now),
        created: when(c.created_at),
        updated: when(c.updated_at),
        observables: c.observables.len(),
    }
}

/// One provider's findings on an observable.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub provider: String,
    pub verdict: Option<String>,
    /// `(key, value)` pairs of everything else the provider said.
    pub details: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ObservableView {
    pub kind: &'static str,
    pub value: String,
    pub verdict: Option<&'static str>,
    pub first_seen: When,
    pub findings: Vec<Finding>,
}

fn observable(o: &Observable) -> ObservableView {
    let findings = o
        .enrichment
        .iter()
        .map(|(provider, v)| match v {
            Value::Object(m) => Finding {
                provider: provider.clone(),
                verdict: m.get("verdict").map(json_text),
                details: m
                    .iter()
                    .filter(|(k, _)| k.as_str() != "verdict")
                    .map(|(k, v)| (k.clone(), json_text(v)))
                    .collect(),
            },
            other => Finding {
                provider: provider.clone(),
                verdict: None,
                details: vec![(String::new(), json_text(other))],
            },
        })
        .collect();
    ObservableView {
        kind: o.kind.as_str(),
        value: o.value.clone(),
        verdict: o.verdict.map(|v| v.as_str()),
        first_seen: when(o.first_seen),
        findings,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct EntryView {
    pub at: When,
    pub actor: ActorView,
    pub kind: String,
    pub message: String,
    /// The entry's details (old and new values) as compact JSON, when there are any.
    pub data: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CommentView {
    pub at: When,
    pub actor: ActorView,
    pub text: String,
}

/// A case with everything its page shows.
#[derive(Clone, Debug, Serialize)]
pub struct CaseDetail {
    #[serde(flatten)]
    pub row: CaseRow,
    pub description: String,
    pub resolution: Option<String>,
    pub dedup_key: Option<String>,
    pub fields: Vec<(String, String)>,
    pub observables: Vec<ObservableView>,
    pub comments: Vec<CommentView>,
    /// Newest first.
    pub timeline: Vec<EntryView>,
}

pub fn case_detail(c: &Case, now: Timestamp) -> CaseDetail {
    CaseDetail {
        row: case_row(c, now),
        description: c.description.clone(),
        resolution: c.resolution.clone(),
        dedup_key: c.dedup_key.clone(),
        fields: c
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), json_text(v)))
            .collect(),
        observables: c.observables.iter().map(observable).collect(),
        comments: c
            .comments
            .iter()
            .map(|cm| CommentView {
                at: when(cm.at),
                actor: actor(&cm.actor),
                text: cm.text.clone(),
            })
            .collect(),
        timeline: c
            .timeline
            .iter()
            .rev()
            .map(|e| EntryView {
                at: when(e.at),
                actor: actor(&e.actor),
                kind: e.kind.clone(),
                message: e.message.clone(),
                data: (!e.data.is_null()).then(|| e.data.to_string()),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{CaseId, CaseState, Severity, Sla};

    fn case(state: CaseState, due: Option<i64>, breached: bool) -> Case {
        let t = Timestamp::from_unix_millis(1_700_000_000_000).unwrap();
        Case {
            id: CaseId(7),
            title: "t".into(),
            description: String::new(),
            severity: Severity::High,
            state,
            resolution: None,
            assignee: None,
            sla: Sla {
                policy: None,
                due_at: due.map(|ms| t.add_millis(ms)),
                breached,
            },
            tags: Default::default(),
            fields: Default::default(),
            observables: Vec::new(),
            comments: Vec::new(),
            timeline: Vec::new(),
            created_at: t,
            updated_at: t,
            dedup_key: None,
        }
    }

    #[test]
    fn sla_countdown_and_breach() {
        let now = Timestamp::from_unix_millis(1_700_000_000_000).unwrap();
        let s = sla(
            &case(CaseState::New, Some(3 * 3_600_000 + 60_000), false),
            now,
        );
        assert_eq!(
            (s.text.as_str(), s.breached, s.live),
            ("due in 3h 1m", false, true)
        );
        let s = sla(&case(CaseState::InProgress, Some(-7_200_000), false), now);
        assert_eq!((s.text.as_str(), s.breached), ("breached 2h 0m ago", true));
        let s = sla(&case(CaseState::Resolved, Some(-7_200_000), false), now);
        assert_eq!((s.text.as_str(), s.breached, s.live), ("met", false, false));
        let s = sla(&case(CaseState::Closed, Some(-7_200_000), true), now);
        assert_eq!((s.text.as_str(), s.breached), ("breached", true));
        assert_eq!(sla(&case(CaseState::New, None, false), now).text, "no SLA");
    }

    #[test]
    fn spans_and_times() {
        assert_eq!(span(90_000_000 + 3_600_000 * 24), "2d 1h");
        assert_eq!(span(-61_000), "1m");
        assert_eq!(span(5_000), "5s");
        let w = when(Timestamp::from_unix_millis(0).unwrap());
        assert_eq!(w.short, "1970-01-01 00:00:00 UTC");
        assert_eq!(w.iso, "1970-01-01T00:00:00.000Z");
    }
}
