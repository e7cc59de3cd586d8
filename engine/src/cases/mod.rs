//! Cases: the model and its rules.
//!
//! A [`Case`] is what a SOC works on: created by a playbook step (or a person) from an
//! alert, enriched with [`Observable`]s, moved through its [`CaseState`]s, and closed.
//! This module is pure data and rules, with no storage:
//!
//! - [`CaseId`] and [`Timestamp`] are the integer-backed identifiers and times that index
//!   keys use, with their human forms (`CASE-000123`, RFC 3339).
//! - [`normalize_observable`] gives each observable value one canonical spelling.
//! - [`apply`] validates one [`CaseChange`] against a case and returns the new case, the
//!   [`CaseEventKind`]s it emits and the timeline entries it appended.
//! - [`CaseEvent`] is what the store writes to its outbox in the same transaction as the
//!   change, and what playbooks receive (see [`CaseEvent::to_payload`]).
//!
//! Data flow: caller -> `persist::CaseWrite::update(changes)` -> `apply` per change
//! (pure) -> one store transaction writing the case, its index entries and its events.

mod change;
mod event;
mod id;
mod model;
mod normalize;
mod time;

pub use change::{apply, Applied, ApplyContext, CaseChange, CaseError};
pub use event::{CaseEvent, CaseEventKind};
pub use id::{CaseId, ParseCaseIdError};
pub use model::{
    Actor, Case, CaseState, Comment, NewCase, NewObservable, Observable, ObservableType, Severity,
    Sla, TimelineEntry, UnknownName, Verdict,
};
pub use normalize::{normalize_observable, InvalidObservable};
pub use time::{Timestamp, TimestampError};
