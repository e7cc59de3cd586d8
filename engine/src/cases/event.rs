//! Case events: what a committed change tells the rest of the engine (and the playbooks
//! whose `on:` matches). The store writes them to its outbox in the same transaction as
//! the change itself.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Actor, Case, CaseId, Timestamp};

/// The kinds of case event, named as playbooks write them in `on:`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum CaseEventKind {
    /// A case was created.
    #[serde(rename = "case.created")]
    Created,
    /// Title, description, comments, observables, tags, fields or SLA changed.
    #[serde(rename = "case.updated")]
    Updated,
    /// The state changed (`from`/`to` are state names).
    #[serde(rename = "case.state_changed")]
    StateChanged,
    /// The assignee changed (`from`/`to` are assignees, `null` when unassigned).
    #[serde(rename = "case.assigned")]
    Assigned,
    /// The severity changed (`from`/`to` are severity names).
    #[serde(rename = "case.severity_changed")]
    SeverityChanged,
    /// The SLA deadline passed while the case was open.
    #[serde(rename = "case.sla_breached")]
    SlaBreached,
}

impl CaseEventKind {
    /// Every kind.
    pub const ALL: &'static [CaseEventKind] = &[
        CaseEventKind::Created,
        CaseEventKind::Updated,
        CaseEventKind::StateChanged,
        CaseEventKind::Assigned,
        CaseEventKind::SeverityChanged,
        CaseEventKind::SlaBreached,
    ];

    /// The dotted name (`case.state_changed`).
    pub fn as_str(self) -> &'static str {
        match self {
            CaseEventKind::Created => "case.created",
            CaseEventKind::Updated => "case.updated",
            CaseEventKind::StateChanged => "case.state_changed",
            CaseEventKind::Assigned => "case.assigned",
            CaseEventKind::SeverityChanged => "case.severity_changed",
            CaseEventKind::SlaBreached => "case.sla_breached",
        }
    }

    /// The kind with this dotted name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for CaseEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One committed change, as stored in the outbox until a dispatcher has delivered it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CaseEvent {
    /// Monotonic id, assigned by the store in commit order.
    pub id: u64,
    /// What happened.
    pub kind: CaseEventKind,
    /// The case it happened to.
    pub case_id: CaseId,
    /// When it was committed.
    pub at: Timestamp,
    /// Who did it.
    pub actor: Actor,
    /// The case after the change.
    pub case: Case,
    /// The case before the change (`None` for `case.created`).
    #[serde(default)]
    pub before: Option<Case>,
    /// Old value for state, assignee and severity changes.
    #[serde(default)]
    pub from: Option<String>,
    /// New value for state, assignee and severity changes.
    #[serde(default)]
    pub to: Option<String>,
}

impl CaseEvent {
    /// Builds the event of `kind` for a change from `before` to `after`, filling `from`
    /// and `to` from the field the kind is about.
    pub fn new(
        id: u64,
        kind: CaseEventKind,
        before: Option<&Case>,
        after: &Case,
        actor: &Actor,
        at: Timestamp,
    ) -> Self {
        let (from, to) = match kind {
            CaseEventKind::StateChanged => (
                before.map(|b| b.state.as_str().to_string()),
                Some(after.state.as_str().to_string()),
            ),
            CaseEventKind::SeverityChanged => (
                before.map(|b| b.severity.as_str().to_string()),
                Some(after.severity.as_str().to_string()),
            ),
            CaseEventKind::Assigned => (
                before.and_then(|b| b.assignee.clone()),
                after.assignee.clone(),
            ),
            _ => (None, None),
        };
        CaseEvent {
            id,
            kind,
            case_id: after.id,
            at,
            actor: actor.clone(),
            case: after.clone(),
            before: before.cloned(),
            from,
            to,
        }
    }

    /// The event as a playbook sees it (`event` in templates):
    /// `{"type": "case.state_changed", "id": 7, "case_id": "CASE-000001", "at": "...",
    /// "actor": {...}, "case": {...}, "before": {...}, "from": "new", "to": "in_progress"}`.
    pub fn to_payload(&self) -> Value {
        // Serialising these types cannot fail (string keys, no custom errors); `Null`
        // keeps this path free of panics all the same.
        fn v<T: Serialize>(x: &T) -> Value {
            serde_json::to_value(x).unwrap_or(Value::Null)
        }
        let mut m = Map::new();
        m.insert("type".into(), Value::from(self.kind.as_str()));
        m.insert("id".into(), Value::from(self.id));
        m.insert("case_id".into(), v(&self.case_id));
        m.insert("at".into(), v(&self.at));
        m.insert("actor".into(), v(&self.actor));
        m.insert("case".into(), v(&self.case));
        m.insert("before".into(), v(&self.before));
        m.insert("from".into(), v(&self.from));
        m.insert("to".into(), v(&self.to));
        Value::Object(m)
    }
}
