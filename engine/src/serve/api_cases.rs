//! The cases API for people and tools.
//!
//! - `GET /api/cases?state=new&state=in_progress&severity=high&assignee=...&tag=...&observable=ip:203.0.113.9&created_after=...&created_before=...&sort=-created_at&limit=50`
//!   (the filters of `engine cases list`; `state` may repeat or be comma-separated):
//!   `{"cases": [...], "count": n}`, served from the store's indexes.
//! - `GET /api/cases/{id}`: `{"case": {...}}` with observables, comments and timeline.
//! - `PATCH /api/cases/{id}` with `{"state", "reason", "assignee", "severity", "comment",
//!   "actor"}` (all optional, at least one change): applied as one change by a person
//!   (`actor`, default `api`); the case events it causes start playbooks exactly as a
//!   playbook's change would. A transition the state machine refuses is `409` with
//!   `{"error", "case", "from", "to"}`; other invalid changes `422`; unknown case `404`.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::app::AppState;
use super::error::{ApiError, JsonBody};
use crate::cases::{Actor, CaseChange, CaseId, CaseState, ObservableType, Severity, Timestamp};
use crate::persist::{CaseQuery, CaseSort};

/// Largest `limit` of one listing.
pub const MAX_LIMIT: usize = 1000;

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    s.trim()
        .parse::<T>()
        .map_err(|e| ApiError::bad_request(format!("invalid `{what}`: {e}")))
}

/// A case query from the query string.
pub fn query_from(raw: Option<&str>) -> Result<CaseQuery, ApiError> {
    let mut q = CaseQuery {
        limit: 50,
        ..CaseQuery::default()
    };
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "state" => {
                for s in v.split(',').filter(|s| !s.trim().is_empty()) {
                    q.states.push(parse::<CaseState>("state", s)?);
                }
            }
            "severity" => q.severity = Some(parse::<Severity>("severity", &v)?),
            "assignee" => q.assignee = Some(v.into_owned()),
            "tag" => q.tag = Some(v.into_owned()),
            "observable" => {
                let (kind, value) = v.split_once(':').ok_or_else(|| {
                    ApiError::bad_request("`observable` must be `type:value`, e.g. `ip:203.0.113.9`")
                })?;
                q.observable = Some((
                    parse::<ObservableType>("observable", kind)?,
                    value.to_string(),
                ));
            }
            "created_after" => q.created_after = Some(parse::<Timestamp>("created_after", &v)?),
            "created_before" => {
                q.created_before = Some(parse::<Timestamp>("created_before", &v)?)
            }
            "sort" => q.sort = parse::<CaseSort>("sort", &v)?,
            "limit" => {
                let n: usize = parse("limit", &v)?;
                if n == 0 || n > MAX_LIMIT {
                    return Err(ApiError::bad_request(format!(
                        "`limit` must be from 1 to {MAX_LIMIT}"
                    )));
                }
                q.limit = n;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}` (known: state, severity, assignee, tag, observable, created_after, created_before, sort, limit)"
                )))
            }
        }
    }
    Ok(q)
}

/// `GET /api/cases`.
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query_from(raw.as_deref())?;
    let cases = state.store.query(&q).await?;
    Ok(Json(json!({"count": cases.len(), "cases": cases})))
}

fn case_id(id: &str) -> Result<CaseId, ApiError> {
    id.parse::<CaseId>()
        .map_err(|e| ApiError::bad_request(format!("invalid case id: {e}")))
}

/// `GET /api/cases/{id}`.
#[tracing::instrument(skip_all, fields(case = %id))]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = case_id(&id)?;
    match state.store.get(id).await? {
        Some(case) => Ok(Json(json!({ "case": case }))),
        None => Err(ApiError::not_found(format!("{id} not found"))),
    }
}

/// The body of `PATCH /api/cases/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasePatch {
    #[serde(default)]
    pub state: Option<String>,
    /// Resolution reason (needed to resolve or close).
    #[serde(default)]
    pub reason: Option<String>,
    /// `""` unassigns; absent or `null` leaves the assignee as it is (like every field).
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    /// Who makes the change (recorded on the timeline); default `api`.
    #[serde(default)]
    pub actor: Option<String>,
}

impl CasePatch {
    /// The changes, in the order `engine cases update` applies them.
    pub fn changes(&self) -> Result<Vec<CaseChange>, ApiError> {
        let mut changes = Vec::new();
        if let Some(s) = &self.severity {
            changes.push(CaseChange::SetSeverity(parse("severity", s)?));
        }
        if let Some(a) = &self.assignee {
            let a = a.trim();
            changes.push(CaseChange::Assign((!a.is_empty()).then(|| a.to_string())));
        }
        if let Some(c) = &self.comment {
            changes.push(CaseChange::AddComment(c.clone()));
        }
        if let Some(s) = &self.state {
            changes.push(CaseChange::SetState {
                to: parse("state", s)?,
                reason: self.reason.clone(),
            });
        } else if self.reason.is_some() {
            return Err(ApiError::bad_request("`reason` goes with `state`"));
        }
        if changes.is_empty() {
            return Err(ApiError::bad_request(
                "nothing to change: give `state`, `assignee`, `severity` or `comment`",
            ));
        }
        Ok(changes)
    }
}

/// `PATCH /api/cases/{id}`.
#[tracing::instrument(skip_all, fields(case = %id))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<CasePatch>,
) -> Result<Json<Value>, ApiError> {
    let id = case_id(&id)?;
    let changes = patch.changes()?;
    let name = patch
        .actor
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or("api");
    if name.len() > 200 {
        return Err(ApiError::bad_request("`actor` is longer than 200 bytes"));
    }
    let actor = Actor::Person {
        name: name.to_string(),
    };
    let out = state.engine.update_case(id, changes, actor).await?;
    tracing::info!(events = out.events.len(), "case changed through the API");
    Ok(Json(json!({
        "case": out.case,
        "events": out.events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_become_case_queries() {
        let q = query_from(Some(
            "state=new,in_progress&state=on_hold&severity=high&observable=ip:203.0.113.9&limit=5&sort=-severity",
        ))
        .unwrap();
        assert_eq!(q.states.len(), 3);
        assert_eq!(q.severity, Some(Severity::High));
        assert_eq!(q.limit, 5);
        assert_eq!(q.sort, CaseSort::SeverityDesc);
        assert!(q.observable.is_some());
        for bad in [
            "state=nope",
            "limit=0",
            "limit=5000",
            "observable=ip",
            "colour=red",
        ] {
            assert!(query_from(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(query_from(None).unwrap().limit, 50);
    }

    #[test]
    fn patches_need_a_change() {
        let p: CasePatch = serde_json::from_value(json!({"actor": "dana"})).unwrap();
        assert!(p.changes().is_err());
        let p: CasePatch =
            serde_json::from_value(json!({"state": "in_progress", "comment": "on it"})).unwrap();
        assert_eq!(p.changes().unwrap().len(), 2);
        assert!(serde_json::from_value::<CasePatch>(json!({"stat": "new"})).is_err());
    }
}
