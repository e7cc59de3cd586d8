//! The case record and its parts, as stored and as playbooks see them in JSON.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CaseId, Timestamp};

/// Implements `Display`/`FromStr`/`as_str`/`ALL` for a fieldless enum from one name table,
/// so the serde names, the CLI names and the error messages cannot drift apart.
macro_rules! named_enum {
    ($ty:ident, $what:literal, [$($variant:ident => $name:literal),+ $(,)?]) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name used in YAML, JSON, the CLI and index keys.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let t = s.trim();
                $ty::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(t))
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        text: s.to_string(),
                        expected: $ty::ALL
                            .iter()
                            .map(|v| format!("`{}`", v.as_str()))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    };
}

/// A name that is not one of an enum's values (`--severity urgent`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{text}`, expected one of {expected}")]
pub struct UnknownName {
    /// Which kind of name (`severity`, `state`, ...).
    pub what: &'static str,
    /// The offending input.
    pub text: String,
    /// The accepted names.
    pub expected: String,
}

/// How bad a case is. Ordered: `informational < low < medium < high < critical`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth recording, nothing to do.
    Informational,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

named_enum!(Severity, "severity", [
    Informational => "informational",
    Low => "low",
    Medium => "medium",
    High => "high",
    Critical => "critical",
]);

impl Severity {
    /// Rank used in index keys (0 = informational .. 4 = critical).
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// Inverse of [`Severity::rank`].
    pub fn from_rank(r: u8) -> Option<Self> {
        Self::ALL.get(usize::from(r)).copied()
    }
}

/// Where a case is in its life. See [`CaseState::can_transition`] for the allowed moves.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    /// Created, nobody has looked yet.
    New,
    /// Someone (or a playbook) is working on it.
    InProgress,
    /// Waiting on something outside the team.
    OnHold,
    /// Done, with a resolution reason; may be reopened.
    Resolved,
    /// Archived; may be reopened.
    Closed,
}

named_enum!(CaseState, "case state", [
    New => "new",
    InProgress => "in_progress",
    OnHold => "on_hold",
    Resolved => "resolved",
    Closed => "closed",
]);

impl CaseState {
    /// The transition table. Moving to the same state is not a transition (callers treat
    /// it as a no-op).
    ///
    /// | from          | to                                       |
    /// |---------------|------------------------------------------|
    /// | `new`         | `in_progress`, `on_hold`, `resolved`, `closed` |
    /// | `in_progress` | `on_hold`, `resolved`, `closed`          |
    /// | `on_hold`     | `in_progress`, `resolved`, `closed`      |
    /// | `resolved`    | `closed`, `in_progress` (reopen)         |
    /// | `closed`      | `in_progress` (reopen)                   |
    pub fn can_transition(from: CaseState, to: CaseState) -> bool {
        use CaseState::*;
        matches!(
            (from, to),
            (New, InProgress | OnHold | Resolved | Closed)
                | (InProgress, OnHold | Resolved | Closed)
                | (OnHold, InProgress | Resolved | Closed)
                | (Resolved, Closed | InProgress)
                | (Closed, InProgress)
        )
    }

    /// `new`, `in_progress` and `on_hold`: the states in which a dedup key still matches.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            CaseState::New | CaseState::InProgress | CaseState::OnHold
        )
    }

    /// Entering this state requires a resolution reason.
    pub fn needs_resolution(self) -> bool {
        matches!(self, CaseState::Resolved | CaseState::Closed)
    }
}

/// What an observable is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ObservableType {
    /// An IPv4 or IPv6 address.
    Ip,
    /// A login name.
    User,
    /// An e-mail address.
    Email,
    /// A DNS domain.
    Domain,
    /// A URL.
    Url,
    /// A file hash (MD5, SHA-1, SHA-256, ...).
    Hash,
    /// A host name.
    Hostname,
}

named_enum!(ObservableType, "observable type", [
    Ip => "ip",
    User => "user",
    Email => "email",
    Domain => "domain",
    Url => "url",
    Hash => "hash",
    Hostname => "hostname",
]);

/// An analyst's or a provider's conclusion about an observable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Known good.
    Benign,
    /// Worth a look.
    Suspicious,
    /// Known bad.
    Malicious,
    /// Looked at, no conclusion.
    Unknown,
}

named_enum!(Verdict, "verdict", [
    Benign => "benign",
    Suspicious => "suspicious",
    Malicious => "malicious",
    Unknown => "unknown",
]);

/// A typed value attached to a case (an IP, a user, ...), normalised on the way in so the
/// observable index finds `2001:DB8::1` and `2001:db8:0::1` as the same address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Observable {
    /// What the value is.
    #[serde(rename = "type")]
    pub kind: ObservableType,
    /// The normalised value (see [`super::normalize_observable`]).
    pub value: String,
    /// The latest conclusion, if any.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// Enrichment results keyed by provider (`{"virustotal": {...}}`).
    #[serde(default)]
    pub enrichment: Map<String, Value>,
    /// When the observable was first added to this case.
    pub first_seen: Timestamp,
}

/// The service-level agreement on a case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Sla {
    /// Name of the SLA policy, e.g. `p1-4h`.
    #[serde(default)]
    pub policy: Option<String>,
    /// When the case must be resolved.
    #[serde(default)]
    pub due_at: Option<Timestamp>,
    /// Set once `case.sla_breached` has been emitted.
    #[serde(default)]
    pub breached: bool,
}

/// Who made a change: a playbook step, a person, or the engine itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Actor {
    /// A step of a playbook run.
    Playbook {
        /// The run id.
        run_id: String,
        /// The playbook name.
        playbook: String,
        /// The step id.
        step: String,
    },
    /// A person (CLI, UI).
    Person {
        /// Their name or login.
        name: String,
    },
    /// The engine (SLA watcher, migrations).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Playbook {
                run_id,
                playbook,
                step,
            } => write!(f, "playbook `{playbook}` step `{step}` (run {run_id})"),
            Actor::Person { name } => write!(f, "`{name}`"),
            Actor::System => f.write_str("the engine"),
        }
    }
}

/// One line of a case's history: every change appends at least one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelineEntry {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: Actor,
    /// Machine-readable kind: `created`, `state_changed`, `comment`, ...
    pub kind: String,
    /// Human-readable summary.
    pub message: String,
    /// Details (old and new values), `null` when there are none.
    #[serde(default)]
    pub data: Value,
}

/// A free-text note on a case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Comment {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: Actor,
    /// The text.
    pub text: String,
}

/// A case: what the SOC works on, created and changed by playbooks and people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Case {
    /// The case number.
    pub id: CaseId,
    /// One-line summary.
    pub title: String,
    /// Longer description.
    #[serde(default)]
    pub description: String,
    /// How bad.
    pub severity: Severity,
    /// Where in its life.
    pub state: CaseState,
    /// Why it was resolved or closed; cleared on reopen.
    #[serde(default)]
    pub resolution: Option<String>,
    /// Who works on it.
    #[serde(default)]
    pub assignee: Option<String>,
    /// Service-level agreement.
    #[serde(default)]
    pub sla: Sla,
    /// Labels.
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Custom fields.
    #[serde(default)]
    pub fields: Map<String, Value>,
    /// Typed values under investigation, unique by (type, value).
    #[serde(default)]
    pub observables: Vec<Observable>,
    /// Notes.
    #[serde(default)]
    pub comments: Vec<Comment>,
    /// Every change, oldest first.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Correlation key: creating a case with the key of an open case returns that case.
    #[serde(default)]
    pub dedup_key: Option<String>,
}

impl Case {
    /// The observable of this type and (already normalised) value, if present.
    pub fn observable(&self, kind: ObservableType, value: &str) -> Option<&Observable> {
        self.observables
            .iter()
            .find(|o| o.kind == kind && o.value == value)
    }
}

/// An observable as given by a caller, before normalisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewObservable {
    /// What the value is.
    #[serde(rename = "type")]
    pub kind: ObservableType,
    /// The raw value.
    pub value: String,
    /// An initial verdict.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// Initial enrichment, keyed by provider.
    #[serde(default)]
    pub enrichment: Map<String, Value>,
}

impl NewObservable {
    /// An observable with no verdict and no enrichment.
    pub fn new(kind: ObservableType, value: impl Into<String>) -> Self {
        NewObservable {
            kind,
            value: value.into(),
            verdict: None,
            enrichment: Map::new(),
        }
    }
}

/// What a caller gives to create a case; the store assigns id, state and times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCase {
    /// One-line summary (must not be empty).
    pub title: String,
    /// Longer description.
    #[serde(default)]
    pub description: String,
    /// How bad.
    pub severity: Severity,
    /// Who works on it.
    #[serde(default)]
    pub assignee: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Custom fields.
    #[serde(default)]
    pub fields: Map<String, Value>,
    /// Typed values under investigation.
    #[serde(default)]
    pub observables: Vec<NewObservable>,
    /// SLA policy name.
    #[serde(default)]
    pub sla_policy: Option<String>,
    /// SLA deadline.
    #[serde(default)]
    pub sla_due_at: Option<Timestamp>,
    /// Correlation key (see [`Case::dedup_key`]).
    #[serde(default)]
    pub dedup_key: Option<String>,
}

impl NewCase {
    /// A case with only a title and a severity.
    pub fn new(title: impl Into<String>, severity: Severity) -> Self {
        NewCase {
            title: title.into(),
            description: String::new(),
            severity,
            assignee: None,
            tags: BTreeSet::new(),
            fields: Map::new(),
            observables: Vec::new(),
            sla_policy: None,
            sla_due_at: None,
            dedup_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table_matches_the_design() {
        use CaseState::*;
        let allowed = [
            (New, InProgress),
            (New, OnHold),
            (New, Resolved),
            (New, Closed),
            (InProgress, OnHold),
            (InProgress, Resolved),
            (InProgress, Closed),
            (OnHold, InProgress),
            (OnHold, Resolved),
            (OnHold, Closed),
            (Resolved, Closed),
            (Resolved, InProgress),
            (Closed, InProgress),
        ];
        for &from in CaseState::ALL {
            for &to in CaseState::ALL {
                assert_eq!(
                    CaseState::can_transition(from, to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn open_states_and_resolution() {
        let open: Vec<_> = CaseState::ALL.iter().filter(|s| s.is_open()).collect();
        assert_eq!(
            open,
            [&CaseState::New, &CaseState::InProgress, &CaseState::OnHold]
        );
        assert!(CaseState::Resolved.needs_resolution());
        assert!(CaseState::Closed.needs_resolution());
        assert!(!CaseState::InProgress.needs_resolution());
    }

    #[test]
    fn severity_is_ordered_and_named() {
        assert!(Severity::Informational < Severity::Low);
        assert!(Severity::High < Severity::Critical);
        for &s in Severity::ALL {
            assert_eq!(Severity::from_rank(s.rank()), Some(s));
            assert_eq!(s.as_str().parse::<Severity>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), Value::from(s.as_str()));
        }
        let e = "urgent".parse::<Severity>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown severity `urgent`, expected one of `informational`, `low`, `medium`, `high`, `critical`"
        );
        assert_eq!(
            serde_json::to_value(CaseState::InProgress).unwrap(),
            Value::from("in_progress")
        );
    }

    #[test]
    fn actor_json_shape() {
        let a = Actor::Playbook {
            run_id: "r1".into(),
            playbook: "phish".into(),
            step: "triage".into(),
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"type": "playbook", "run_id": "r1", "playbook": "phish", "step": "triage"})
        );
        assert_eq!(
            serde_json::to_value(Actor::System).unwrap(),
            serde_json::json!({"type": "system"})
        );
    }
}
