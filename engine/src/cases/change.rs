//! The pure change layer: `apply` turns a case and one [`CaseChange`] into the new case,
//! the case events the change emits and the timeline entries it appended. No store, no
//! clock, no I/O: the store calls it before its transaction, tests call it directly.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{
    normalize_observable, Actor, Case, CaseEventKind, CaseId, CaseState, Comment,
    InvalidObservable, NewCase, NewObservable, Observable, ObservableType, Severity, Sla,
    TimelineEntry, Timestamp, Verdict,
};

/// One change to a case, as a playbook step or a person asks for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseChange {
    /// Create the case (only valid when there is no case yet).
    Create(NewCase),
    /// Replace the title (must not be empty).
    SetTitle(String),
    /// Replace the description.
    SetDescription(String),
    /// Add a comment (must not be empty).
    AddComment(String),
    /// Add observables; values are normalised and merged with existing ones of the same
    /// type and value (verdict replaced when given, enrichment merged by provider).
    AddObservables(Vec<NewObservable>),
    /// Set the verdict and merge enrichment of an existing observable.
    SetObservableVerdict {
        /// Observable type.
        #[serde(rename = "type")]
        kind: ObservableType,
        /// Observable value (normalised before lookup).
        value: String,
        /// New verdict; `None` keeps the current one.
        #[serde(default)]
        verdict: Option<Verdict>,
        /// Enrichment by provider, merged into the existing map.
        #[serde(default)]
        enrichment: Map<String, Value>,
    },
    /// Add tags (trimmed, must not be empty).
    AddTags(Vec<String>),
    /// Remove tags; absent tags are ignored.
    RemoveTags(Vec<String>),
    /// Merge custom fields; a `null` value removes the field.
    SetFields(Map<String, Value>),
    /// Change the severity.
    SetSeverity(Severity),
    /// Move to another state; `resolved` and `closed` need a reason (closing a resolved
    /// case may reuse its resolution).
    SetState {
        /// Target state.
        to: CaseState,
        /// Resolution reason or note.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Assign to someone, or unassign with `None`.
    Assign(Option<String>),
    /// Set the SLA policy and deadline; clears the breached flag when the deadline moves.
    SetSla {
        /// Policy name.
        #[serde(default)]
        policy: Option<String>,
        /// Deadline.
        #[serde(default)]
        due_at: Option<Timestamp>,
    },
    /// Record that the SLA deadline passed (emits `case.sla_breached` once).
    MarkSlaBreached,
}

impl CaseChange {
    /// Short name used in messages (`set_state`).
    pub fn name(&self) -> &'static str {
        match self {
            CaseChange::Create(_) => "create",
            CaseChange::SetTitle(_) => "set_title",
            CaseChange::SetDescription(_) => "set_description",
            CaseChange::AddComment(_) => "add_comment",
            CaseChange::AddObservables(_) => "add_observables",
            CaseChange::SetObservableVerdict { .. } => "set_observable_verdict",
            CaseChange::AddTags(_) => "add_tags",
            CaseChange::RemoveTags(_) => "remove_tags",
            CaseChange::SetFields(_) => "set_fields",
            CaseChange::SetSeverity(_) => "set_severity",
            CaseChange::SetState { .. } => "set_state",
            CaseChange::Assign(_) => "assign",
            CaseChange::SetSla { .. } => "set_sla",
            CaseChange::MarkSlaBreached => "mark_sla_breached",
        }
    }
}

/// Why a change was refused. Nothing is changed when `apply` returns one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    /// The state machine does not allow this move.
    #[error("cannot move {case} from `{from}` to `{to}`{}", allowed_hint(*from))]
    InvalidTransition {
        /// The case.
        case: CaseId,
        /// Current state.
        from: CaseState,
        /// Requested state.
        to: CaseState,
    },
    /// Resolving or closing without a reason.
    #[error("moving {case} to `{to}` needs a resolution reason")]
    ResolutionRequired {
        /// The case.
        case: CaseId,
        /// Requested state.
        to: CaseState,
    },
    /// An observable value failed normalisation.
    #[error(transparent)]
    InvalidObservable(#[from] InvalidObservable),
    /// `set_observable_verdict` named an observable the case does not have.
    #[error("{case} has no {kind} observable `{value}`")]
    ObservableNotFound {
        /// The case.
        case: CaseId,
        /// Observable type.
        kind: ObservableType,
        /// Normalised value.
        value: String,
    },
    /// A text that must not be empty was empty (title, comment, tag).
    #[error("the {what} must not be empty")]
    Empty {
        /// Which text.
        what: &'static str,
    },
    /// `create` on an existing case.
    #[error("{0} already exists")]
    AlreadyExists(CaseId),
    /// A change other than `create` with no case to change.
    #[error("`{0}` needs an existing case")]
    NoCase(&'static str),
}

fn allowed_hint(from: CaseState) -> String {
    let allowed: Vec<String> = CaseState::ALL
        .iter()
        .filter(|to| CaseState::can_transition(from, **to))
        .map(|to| format!("`{to}`"))
        .collect();
    format!(" (from `{from}` it can move to {})", allowed.join(", "))
}

/// The result of applying one change.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The case after the change.
    pub case: Case,
    /// The case events the change emits, in order (empty for a no-op).
    pub events: Vec<CaseEventKind>,
    /// The timeline entries appended to `case.timeline` (empty for a no-op).
    pub timeline: Vec<TimelineEntry>,
}

/// Who changes, when, and the id a `create` gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyContext {
    /// Recorded in the timeline and events.
    pub actor: Actor,
    /// Change time; becomes `updated_at` unless the change is a no-op.
    pub now: Timestamp,
    /// The id for [`CaseChange::Create`]; ignored by other changes.
    pub new_id: CaseId,
}

/// Applies `change` to `case` (`None` when creating). Validates everything first and
/// returns the new case, the events to emit and the timeline entries appended. A change
/// that changes nothing (same state, tag already present, ...) returns the case as is,
/// with no events and no timeline entry.
pub fn apply(
    case: Option<&Case>,
    change: &CaseChange,
    ctx: &ApplyContext,
) -> Result<Applied, CaseError> {
    let mut c = match (case, change) {
        (None, CaseChange::Create(new)) => return create(new, ctx),
        (Some(c), CaseChange::Create(_)) => return Err(CaseError::AlreadyExists(c.id)),
        (None, other) => return Err(CaseError::NoCase(other.name())),
        (Some(c), _) => c.clone(),
    };
    let mut log = Log::default();
    match change {
        CaseChange::Create(_) => {}
        CaseChange::SetTitle(t) => {
            let t = non_empty(t, "title")?;
            if t != c.title {
                log.push(
                    CaseEventKind::Updated,
                    "title_changed",
                    format!("title changed to \"{t}\""),
                    json!({"from": c.title, "to": t}),
                );
                c.title = t;
            }
        }
        CaseChange::SetDescription(d) => {
            if *d != c.description {
                log.push(
                    CaseEventKind::Updated,
                    "description_changed",
                    "description changed".into(),
                    Value::Null,
                );
                c.description = d.clone();
            }
        }
        CaseChange::AddComment(text) => {
            let text = non_empty(text, "comment")?;
            c.comments.push(Comment {
                at: ctx.now,
                actor: ctx.actor.clone(),
                text: text.clone(),
            });
            log.push(
                CaseEventKind::Updated,
                "comment",
                "comment added".into(),
                json!({"text": text}),
            );
        }
        CaseChange::AddObservables(obs) => {
            let normalised = normalise_all(obs, ctx.now)?;
            let mut added = Vec::new();
            let mut merged = Vec::new();
            for o in normalised {
                match c
                    .observables
                    .iter_mut()
                    .find(|e| e.kind == o.kind && e.value == o.value)
                {
                    Some(existing) => {
                        if merge_observable(existing, o.verdict, &o.enrichment) {
                            merged.push(json!({"type": o.kind, "value": o.value}));
                        }
                    }
                    None => {
                        added.push(json!({"type": o.kind, "value": o.value}));
                        c.observables.push(o);
                    }
                }
            }
            if !added.is_empty() {
                log.push(
                    CaseEventKind::Updated,
                    "observables_added",
                    format!("{} observable(s) added", added.len()),
                    Value::Array(added),
                );
            }
            if !merged.is_empty() {
                log.push(
                    CaseEventKind::Updated,
                    "observables_updated",
                    format!("{} observable(s) updated", merged.len()),
                    Value::Array(merged),
                );
            }
        }
        CaseChange::SetObservableVerdict {
            kind,
            value,
            verdict,
            enrichment,
        } => {
            let value = normalize_observable(*kind, value)?;
            let Some(o) = c
                .observables
                .iter_mut()
                .find(|o| o.kind == *kind && o.value == value)
            else {
                return Err(CaseError::ObservableNotFound {
                    case: c.id,
                    kind: *kind,
                    value,
                });
            };
            if merge_observable(o, *verdict, enrichment) {
                let providers: Vec<&String> = enrichment.keys().collect();
                log.push(
                    CaseEventKind::Updated,
                    "observable_verdict",
                    match verdict {
                        Some(v) => format!("{kind} `{value}` marked {v}"),
                        None => format!("{kind} `{value}` enriched"),
                    },
                    json!({"type": kind, "value": value, "verdict": verdict, "providers": providers}),
                );
            }
        }
        CaseChange::AddTags(tags) => {
            let mut added = Vec::new();
            for t in tags {
                let t = non_empty(t, "tag")?;
                if !c.tags.contains(&t) {
                    added.push(t);
                }
            }
            if !added.is_empty() {
                c.tags.extend(added.iter().cloned());
                log.push(
                    CaseEventKind::Updated,
                    "tags_added",
                    format!("tags added: {}", added.join(", ")),
                    json!(added),
                );
            }
        }
        CaseChange::RemoveTags(tags) => {
            let removed: Vec<String> = tags
                .iter()
                .map(|t| t.trim().to_string())
                .filter(|t| c.tags.remove(t))
                .collect();
            if !removed.is_empty() {
                log.push(
                    CaseEventKind::Updated,
                    "tags_removed",
                    format!("tags removed: {}", removed.join(", ")),
                    json!(removed),
                );
            }
        }
        CaseChange::SetFields(fields) => {
            let mut changed = Vec::new();
            for (k, v) in fields {
                let differs = match v {
                    Value::Null => c.fields.remove(k).is_some(),
                    v => c.fields.insert(k.clone(), v.clone()).as_ref() != Some(v),
                };
                if differs {
                    changed.push(k.clone());
                }
            }
            if !changed.is_empty() {
                log.push(
                    CaseEventKind::Updated,
                    "fields_set",
                    format!("fields set: {}", changed.join(", ")),
                    Value::Object(fields.clone()),
                );
            }
        }
        CaseChange::SetSeverity(s) => {
            if *s != c.severity {
                log.push(
                    CaseEventKind::SeverityChanged,
                    "severity_changed",
                    format!("severity {} -> {}", c.severity, s),
                    json!({"from": c.severity, "to": s}),
                );
                c.severity = *s;
            }
        }
        CaseChange::SetState { to, reason } => {
            let (from, to) = (c.state, *to);
            let reason = reason
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_string);
            if from != to {
                if !CaseState::can_transition(from, to) {
                    return Err(CaseError::InvalidTransition {
                        case: c.id,
                        from,
                        to,
                    });
                }
                if to.needs_resolution() {
                    let kept = (from == CaseState::Resolved)
                        .then(|| c.resolution.clone())
                        .flatten();
                    match reason.clone().or(kept) {
                        Some(r) => c.resolution = Some(r),
                        None => return Err(CaseError::ResolutionRequired { case: c.id, to }),
                    }
                } else if !from.is_open() {
                    // Reopening: the old resolution stays in the timeline only.
                    c.resolution = None;
                }
                let mut message = format!("state {from} -> {to}");
                if let Some(r) = &reason {
                    message.push_str(&format!(": {r}"));
                }
                log.push(
                    CaseEventKind::StateChanged,
                    "state_changed",
                    message,
                    json!({"from": from, "to": to, "reason": reason}),
                );
                c.state = to;
            }
        }
        CaseChange::Assign(who) => {
            let who = who
                .as_deref()
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(str::to_string);
            if who != c.assignee {
                log.push(
                    CaseEventKind::Assigned,
                    "assigned",
                    match &who {
                        Some(w) => format!("assigned to {w}"),
                        None => "unassigned".into(),
                    },
                    json!({"from": c.assignee, "to": who}),
                );
                c.assignee = who;
            }
        }
        CaseChange::SetSla { policy, due_at } => {
            if *policy != c.sla.policy || *due_at != c.sla.due_at {
                let breached = c.sla.breached && *due_at == c.sla.due_at;
                log.push(
                    CaseEventKind::Updated,
                    "sla_set",
                    match due_at {
                        Some(d) => format!("SLA due at {d}"),
                        None => "SLA cleared".into(),
                    },
                    json!({"policy": policy, "due_at": due_at}),
                );
                c.sla = Sla {
                    policy: policy.clone(),
                    due_at: *due_at,
                    breached,
                };
            }
        }
        CaseChange::MarkSlaBreached => {
            if !c.sla.breached {
                c.sla.breached = true;
                log.push(
                    CaseEventKind::SlaBreached,
                    "sla_breached",
                    "SLA breached".into(),
                    json!({"policy": c.sla.policy, "due_at": c.sla.due_at}),
                );
            }
        }
    }
    Ok(log.finish(c, ctx))
}

/// Builds a new case from a [`NewCase`].
fn create(new: &NewCase, ctx: &ApplyContext) -> Result<Applied, CaseError> {
    let title = non_empty(&new.title, "title")?;
    let mut tags = std::collections::BTreeSet::new();
    for t in &new.tags {
        tags.insert(non_empty(t, "tag")?);
    }
    let mut observables: Vec<Observable> = Vec::new();
    for o in normalise_all(&new.observables, ctx.now)? {
        match observables
            .iter_mut()
            .find(|e| e.kind == o.kind && e.value == o.value)
        {
            Some(e) => {
                merge_observable(e, o.verdict, &o.enrichment);
            }
            None => observables.push(o),
        }
    }
    let mut fields = new.fields.clone();
    fields.retain(|_, v| !v.is_null());
    let c = Case {
        id: ctx.new_id,
        title: title.clone(),
        description: new.description.clone(),
        severity: new.severity,
        state: CaseState::New,
        resolution: None,
        assignee: new
            .assignee
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string),
        sla: Sla {
            policy: new.sla_policy.clone(),
            due_at: new.sla_due_at,
            breached: false,
        },
        tags,
        fields,
        observables,
        comments: Vec::new(),
        timeline: Vec::new(),
        created_at: ctx.now,
        updated_at: ctx.now,
        dedup_key: new.dedup_key.clone(),
    };
    let mut log = Log::default();
    log.push(
        CaseEventKind::Created,
        "created",
        format!("case created: {title}"),
        json!({"severity": c.severity}),
    );
    Ok(log.finish(c, ctx))
}

/// Collects the events and timeline entries of one change.
#[derive(Default)]
struct Log {
    events: Vec<CaseEventKind>,
    entries: Vec<(String, String, Value)>,
}

impl Log {
    fn push(&mut self, event: CaseEventKind, kind: &str, message: String, data: Value) {
        if !self.events.contains(&event) {
            self.events.push(event);
        }
        self.entries.push((kind.to_string(), message, data));
    }

    fn finish(self, mut case: Case, ctx: &ApplyContext) -> Applied {
        let timeline: Vec<TimelineEntry> = self
            .entries
            .into_iter()
            .map(|(kind, message, data)| TimelineEntry {
                at: ctx.now,
                actor: ctx.actor.clone(),
                kind,
                message,
                data,
            })
            .collect();
        if !timeline.is_empty() {
            case.updated_at = ctx.now.max(case.updated_at);
            case.timeline.extend(timeline.iter().cloned());
        }
        Applied {
            case,
            events: self.events,
            timeline,
        }
    }
}

fn non_empty(s: &str, what: &'static str) -> Result<String, CaseError> {
    let t = s.trim();
    if t.is_empty() {
        Err(CaseError::Empty { what })
    } else {
        Ok(t.to_string())
    }
}

/// Normalises every value first, so one bad value rejects the whole change.
fn normalise_all(obs: &[NewObservable], now: Timestamp) -> Result<Vec<Observable>, CaseError> {
    obs.iter()
        .map(|o| {
            Ok(Observable {
                kind: o.kind,
                value: normalize_observable(o.kind, &o.value)?,
                verdict: o.verdict,
                enrichment: o.enrichment.clone(),
                first_seen: now,
            })
        })
        .collect()
}

/// Sets the verdict (when given) and merges enrichment; true when anything changed.
fn merge_observable(
    o: &mut Observable,
    verdict: Option<Verdict>,
    enrichment: &Map<String, Value>,
) -> bool {
    let mut changed = false;
    if verdict.is_some() && verdict != o.verdict {
        o.verdict = verdict;
        changed = true;
    }
    for (provider, data) in enrichment {
        if o.enrichment.get(provider) != Some(data) {
            o.enrichment.insert(provider.clone(), data.clone());
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::CaseEvent;

    fn ctx(ms: i64) -> ApplyContext {
        ApplyContext {
            actor: Actor::Person { name: "ana".into() },
            now: Timestamp::from_unix_millis(ms).unwrap(),
            new_id: CaseId(1),
        }
    }

    fn new_case() -> Case {
        let mut n = NewCase::new("  Suspicious login ", Severity::Medium);
        n.observables = vec![
            NewObservable::new(ObservableType::Ip, "2001:DB8::1"),
            NewObservable::new(ObservableType::User, "Alice"),
        ];
        n.tags = ["okta".to_string()].into();
        apply(None, &CaseChange::Create(n), &ctx(1000))
            .unwrap()
            .case
    }

    fn run(c: &Case, ch: CaseChange) -> Result<Applied, CaseError> {
        apply(Some(c), &ch, &ctx(2000))
    }

    #[test]
    fn create_builds_a_normalised_new_case() {
        let n = NewCase::new("x", Severity::Low);
        let a = apply(None, &CaseChange::Create(n), &ctx(1000)).unwrap();
        assert_eq!(a.events, [CaseEventKind::Created]);
        assert_eq!(a.timeline.len(), 1);
        let c = new_case();
        assert_eq!(c.id, CaseId(1));
        assert_eq!(c.title, "Suspicious login");
        assert_eq!(c.state, CaseState::New);
        assert_eq!(c.observables[0].value, "2001:db8::1");
        assert_eq!(c.observables[1].value, "alice");
        assert_eq!(c.created_at, c.updated_at);
        assert_eq!(c.timeline[0].kind, "created");
    }

    #[test]
    fn create_rejects_bad_input_and_existing_cases() {
        let mut n = NewCase::new("x", Severity::Low);
        n.observables = vec![NewObservable::new(ObservableType::Ip, "999.1.1.1")];
        let e = apply(None, &CaseChange::Create(n), &ctx(0)).unwrap_err();
        assert!(matches!(e, CaseError::InvalidObservable(_)), "{e}");
        let e = apply(
            None,
            &CaseChange::Create(NewCase::new(" ", Severity::Low)),
            &ctx(0),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "the title must not be empty");
        let c = new_case();
        let e = run(&c, CaseChange::Create(NewCase::new("y", Severity::Low))).unwrap_err();
        assert_eq!(e, CaseError::AlreadyExists(CaseId(1)));
        let e = apply(None, &CaseChange::AddComment("hi".into()), &ctx(0)).unwrap_err();
        assert_eq!(e.to_string(), "`add_comment` needs an existing case");
    }

    #[test]
    fn state_changes_follow_the_table_and_need_a_reason() {
        let c = new_case();
        let a = run(
            &c,
            CaseChange::SetState {
                to: CaseState::InProgress,
                reason: None,
            },
        )
        .unwrap();
        assert_eq!(a.events, [CaseEventKind::StateChanged]);
        assert_eq!(a.case.state, CaseState::InProgress);
        assert_eq!(a.case.updated_at.unix_millis(), 2000);
        let ev = CaseEvent::new(
            9,
            a.events[0],
            Some(&c),
            &a.case,
            &ctx(0).actor,
            a.case.updated_at,
        );
        assert_eq!(ev.from.as_deref(), Some("new"));
        assert_eq!(ev.to.as_deref(), Some("in_progress"));

        let e = run(
            &a.case,
            CaseChange::SetState {
                to: CaseState::Resolved,
                reason: Some("  ".into()),
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "moving CASE-000001 to `resolved` needs a resolution reason"
        );
        let r = run(
            &a.case,
            CaseChange::SetState {
                to: CaseState::Resolved,
                reason: Some("fp".into()),
            },
        )
        .unwrap()
        .case;
        assert_eq!(r.resolution.as_deref(), Some("fp"));
        let e = run(
            &r,
            CaseChange::SetState {
                to: CaseState::OnHold,
                reason: None,
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot move CASE-000001 from `resolved` to `on_hold` (from `resolved` it can move to `in_progress`, `closed`)"
        );
        // Closing a resolved case reuses its resolution.
        let closed = run(
            &r,
            CaseChange::SetState {
                to: CaseState::Closed,
                reason: None,
            },
        )
        .unwrap()
        .case;
        assert_eq!(closed.resolution.as_deref(), Some("fp"));
        // Closing a new case without a reason is refused.
        let e = run(
            &c,
            CaseChange::SetState {
                to: CaseState::Closed,
                reason: None,
            },
        )
        .unwrap_err();
        assert!(matches!(e, CaseError::ResolutionRequired { .. }));
        // Reopen clears the resolution.
        let reopened = run(
            &closed,
            CaseChange::SetState {
                to: CaseState::InProgress,
                reason: None,
            },
        )
        .unwrap()
        .case;
        assert_eq!(reopened.resolution, None);
        assert!(reopened.state.is_open());
    }

    #[test]
    fn same_value_changes_are_no_ops() {
        let c = new_case();
        for ch in [
            CaseChange::SetState {
                to: CaseState::New,
                reason: None,
            },
            CaseChange::SetSeverity(Severity::Medium),
            CaseChange::Assign(None),
            CaseChange::Assign(Some("  ".into())),
            CaseChange::AddTags(vec!["okta".into()]),
            CaseChange::RemoveTags(vec!["absent".into()]),
            CaseChange::SetTitle("Suspicious login".into()),
            CaseChange::AddObservables(vec![NewObservable::new(ObservableType::User, " ALICE ")]),
            CaseChange::SetFields([("x".to_string(), Value::Null)].into_iter().collect()),
        ] {
            let a = run(&c, ch.clone()).unwrap();
            assert!(a.events.is_empty(), "{ch:?}");
            assert_eq!(a.case, c, "{ch:?}");
        }
    }

    #[test]
    fn each_change_emits_its_event_and_timeline_entry() {
        let c = new_case();
        let cases = [
            (
                CaseChange::SetSeverity(Severity::High),
                CaseEventKind::SeverityChanged,
                "severity_changed",
            ),
            (
                CaseChange::Assign(Some("bob".into())),
                CaseEventKind::Assigned,
                "assigned",
            ),
            (
                CaseChange::AddComment("looks bad".into()),
                CaseEventKind::Updated,
                "comment",
            ),
            (
                CaseChange::SetTitle("t2".into()),
                CaseEventKind::Updated,
                "title_changed",
            ),
            (
                CaseChange::SetDescription("d".into()),
                CaseEventKind::Updated,
                "description_changed",
            ),
            (
                CaseChange::AddTags(vec![" phishing ".into()]),
                CaseEventKind::Updated,
                "tags_added",
            ),
            (
                CaseChange::RemoveTags(vec!["okta".into()]),
                CaseEventKind::Updated,
                "tags_removed",
            ),
            (
                CaseChange::SetFields(
                    [("ticket".to_string(), json!("INC-1"))]
                        .into_iter()
                        .collect(),
                ),
                CaseEventKind::Updated,
                "fields_set",
            ),
            (
                CaseChange::AddObservables(vec![NewObservable::new(
                    ObservableType::Domain,
                    "Evil.COM.",
                )]),
                CaseEventKind::Updated,
                "observables_added",
            ),
            (
                CaseChange::SetSla {
                    policy: Some("p1".into()),
                    due_at: Some(Timestamp::EPOCH),
                },
                CaseEventKind::Updated,
                "sla_set",
            ),
            (
                CaseChange::MarkSlaBreached,
                CaseEventKind::SlaBreached,
                "sla_breached",
            ),
        ];
        for (ch, event, kind) in cases {
            let a = run(&c, ch.clone()).unwrap();
            assert_eq!(a.events, [event], "{ch:?}");
            assert_eq!(a.timeline.len(), 1, "{ch:?}");
            assert_eq!(a.timeline[0].kind, kind);
            assert_eq!(a.case.timeline.len(), c.timeline.len() + 1);
            assert_eq!(a.case.timeline.last(), a.timeline.last());
            assert_eq!(a.timeline[0].actor, ctx(0).actor);
        }
    }

    #[test]
    fn verdicts_and_enrichment_merge_per_provider() {
        let c = new_case();
        let a = run(
            &c,
            CaseChange::SetObservableVerdict {
                kind: ObservableType::Ip,
                value: "2001:db8:0::1".into(),
                verdict: Some(Verdict::Malicious),
                enrichment: [("vt".to_string(), json!({"score": 9}))]
                    .into_iter()
                    .collect(),
            },
        )
        .unwrap();
        let o = a
            .case
            .observable(ObservableType::Ip, "2001:db8::1")
            .unwrap();
        assert_eq!(o.verdict, Some(Verdict::Malicious));
        let b = run(
            &a.case,
            CaseChange::SetObservableVerdict {
                kind: ObservableType::Ip,
                value: "2001:db8::1".into(),
                verdict: None,
                enrichment: [("abuseipdb".to_string(), json!(1))].into_iter().collect(),
            },
        )
        .unwrap();
        let o = b
            .case
            .observable(ObservableType::Ip, "2001:db8::1")
            .unwrap();
        assert_eq!(o.verdict, Some(Verdict::Malicious));
        assert_eq!(o.enrichment.len(), 2);
        assert_eq!(o.first_seen.unix_millis(), 1000);
        let e = run(
            &c,
            CaseChange::SetObservableVerdict {
                kind: ObservableType::Ip,
                value: "10.0.0.1".into(),
                verdict: Some(Verdict::Benign),
                enrichment: Map::new(),
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "CASE-000001 has no ip observable `10.0.0.1`");
    }

    #[test]
    fn invalid_observable_rejects_the_whole_change() {
        let c = new_case();
        let e = run(
            &c,
            CaseChange::AddObservables(vec![
                NewObservable::new(ObservableType::Domain, "ok.com"),
                NewObservable::new(ObservableType::Ip, "1.2.3"),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid ip observable `1.2.3`: not an IPv4 or IPv6 address"
        );
    }

    #[test]
    fn sla_breach_is_reported_once_and_reset_by_a_new_deadline() {
        let c = new_case();
        let b = run(&c, CaseChange::MarkSlaBreached).unwrap().case;
        assert!(b.sla.breached);
        assert!(run(&b, CaseChange::MarkSlaBreached)
            .unwrap()
            .events
            .is_empty());
        let moved = run(
            &b,
            CaseChange::SetSla {
                policy: None,
                due_at: Some(Timestamp::EPOCH),
            },
        )
        .unwrap()
        .case;
        assert!(!moved.sla.breached);
    }

    #[test]
    fn changes_round_trip_through_json() {
        let ch = CaseChange::SetState {
            to: CaseState::Resolved,
            reason: Some("fp".into()),
        };
        let j = serde_json::to_value(&ch).unwrap();
        assert_eq!(j, json!({"set_state": {"to": "resolved", "reason": "fp"}}));
        assert_eq!(serde_json::from_value::<CaseChange>(j).unwrap(), ch);
        let c = new_case();
        let back: Case = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
