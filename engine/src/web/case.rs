//! `GET /cases/{id}`: one case, with its observables and each provider's findings, custom
//! fields, comments and timeline (a playbook actor links to its run), and the forms that
//! change it. Each form posts to `/cases/{id}/<action>`; the change is made through
//! [`crate::Engine::update_case`] as the logged-in person, so the case triggers fire
//! as they do for the API. Success redirects back to the page (`?done=<action>`); a
//! refused change (an invalid transition, an empty comment) shows the page again with
//! the reason and 409 or 422.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use serde_json::json;

use super::auth::{redirect, Form, Session, LOCAL_USER};
use super::page::{self, WebError};
use super::queue::team_members;
use super::{view, WebState};
use crate::cases::{Actor, CaseChange, CaseId, CaseState, Severity, Timestamp};

/// Longest comment accepted from the form.
pub const MAX_COMMENT: usize = 16 * 1024;

fn case_id(id: &str) -> Result<CaseId, WebError> {
    id.parse::<CaseId>()
        .map_err(|_| WebError::not_found(format!("no case `{id}`")))
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    done: Option<String>,
}

/// The notice after a change: a fixed text per action, never text from the request.
fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "state" => "State changed.",
        "assign" => "Assignee changed.",
        "severity" => "Severity changed.",
        "comment" => "Comment added.",
        _ => return None,
    })
}

/// `GET /cases/{id}`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, WebError> {
    let id = case_id(&id)?;
    show(&state, &session, id, notice(q.done.as_deref()), None).await
}

async fn show(
    state: &WebState,
    session: &Session,
    id: CaseId,
    notice: Option<&str>,
    error: Option<WebError>,
) -> Result<Response, WebError> {
    let Some(case) = state.store.get(id).await? else {
        return Err(WebError::not_found(format!("{id} not found")));
    };
    let now = Timestamp::now();
    let transitions: Vec<&str> = CaseState::ALL
        .iter()
        .filter(|to| CaseState::can_transition(case.state, **to))
        .map(|s| s.as_str())
        .collect();
    let needs_reason: Vec<&str> = CaseState::ALL
        .iter()
        .filter(|s| s.needs_resolution())
        .map(|s| s.as_str())
        .collect();
    let mut people = team_members(&state.engine.services().config);
    people.extend(case.assignee.clone());
    let status = error.as_ref().map_or(StatusCode::OK, |e| e.status);
    page::render(
        state,
        session,
        "case.html",
        "queue",
        error.is_none(),
        status,
        json!({
            "case": view::case_detail(&case, now),
            "transitions": transitions,
            "needs_reason": needs_reason,
            "severities": Severity::ALL.iter().rev().map(|s| s.as_str()).collect::<Vec<_>>(),
            "people": people,
            "notice": notice,
            "error": error.map(|e| e.message),
        }),
    )
}

/// Applies `changes` as the session's person, then back to the page.
async fn change(
    state: &WebState,
    session: &Session,
    id: &str,
    action: &str,
    changes: Result<Vec<CaseChange>, WebError>,
) -> Response {
    let id = match case_id(id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let result = match changes {
        Ok(changes) => {
            let actor = Actor::Person {
                name: session.user.clone().unwrap_or_else(|| LOCAL_USER.into()),
            };
            state
                .engine
                .update_case(id, changes, actor)
                .await
                .map_err(WebError::from)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(out) => {
            tracing::info!(case = %id, action, events = out.events.len(), "case changed from the web view");
            redirect(&format!("/cases/{id}?done={action}"))
        }
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            show(state, session, id, None, Some(e))
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        Err(e) => e.into_response(),
    }
}

fn invalid(m: impl Into<String>) -> WebError {
    WebError::new(StatusCode::UNPROCESSABLE_ENTITY, m)
}

/// `POST /cases/{id}/state` (`to`, `reason`).
pub async fn set_state(
    State(state): State<WebState>,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    let changes = form
        .get("to")
        .ok_or_else(|| invalid("choose a state"))
        .and_then(|to| to.parse::<CaseState>().map_err(|e| invalid(e.to_string())))
        .map(|to| {
            vec![CaseChange::SetState {
                to,
                reason: form.get("reason").map(str::to_string),
            }]
        });
    change(&state, &form.session, &id, "state", changes).await
}

/// `POST /cases/{id}/assign` (`assignee`; blank unassigns).
pub async fn assign(State(state): State<WebState>, Path(id): Path<String>, form: Form) -> Response {
    let changes = match form.get("assignee") {
        Some(a) if a.len() > 200 => Err(invalid("the assignee is longer than 200 bytes")),
        a => Ok(vec![CaseChange::Assign(a.map(str::to_string))]),
    };
    change(&state, &form.session, &id, "assign", changes).await
}

/// `POST /cases/{id}/severity` (`severity`).
pub async fn set_severity(
    State(state): State<WebState>,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    let changes = form
        .get("severity")
        .ok_or_else(|| invalid("choose a severity"))
        .and_then(|s| s.parse::<Severity>().map_err(|e| invalid(e.to_string())))
        .map(|s| vec![CaseChange::SetSeverity(s)]);
    change(&state, &form.session, &id, "severity", changes).await
}

/// `POST /cases/{id}/comment` (`text`).
pub async fn comment(
    State(state): State<WebState>,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    let text = form.raw("text").trim_end();
    let changes = if text.len() > MAX_COMMENT {
        Err(invalid(format!(
            "the comment is longer than {} KiB",
            MAX_COMMENT / 1024
        )))
    } else {
        // An empty comment is refused by the case rules, with their message.
        Ok(vec![CaseChange::AddComment(text.to_string())])
    };
    change(&state, &form.session, &id, "comment", changes).await
}
