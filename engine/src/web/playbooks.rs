//! `GET /playbooks`: the playbooks the server loaded, with their triggers (event and
//! `on.if`). `GET /playbooks/{name}`: one playbook's graph, its steps (what each waits
//! for, its condition, retries, timeout, error route) and its recent runs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::Serialize;
use serde_json::json;

use super::auth::Session;
use super::page::{self, WebError};
use super::{svg, WebState};
use crate::compile::{OnError, Plan};
use crate::persist::RunFilter;

#[derive(Serialize)]
struct PlaybookRow {
    name: String,
    description: Option<String>,
    file: String,
    event: String,
    condition: Option<String>,
    steps: usize,
}

fn row(p: &Plan) -> PlaybookRow {
    PlaybookRow {
        name: p.name.clone(),
        description: p.description.clone(),
        file: p.file.display().to_string(),
        event: p.trigger.event.clone(),
        condition: p
            .trigger
            .condition
            .as_ref()
            .and_then(|c| p.templates.source(c)),
        steps: p.steps.len(),
    }
}

/// `GET /playbooks`.
pub async fn list(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
) -> Result<Response, WebError> {
    let rows: Vec<PlaybookRow> = state
        .engine
        .bundle()
        .playbooks
        .iter()
        .map(|p| row(p))
        .collect();
    page::render(
        &state,
        &session,
        "playbooks.html",
        "playbooks",
        false,
        StatusCode::OK,
        json!({ "playbooks": rows }),
    )
}

#[derive(Serialize)]
struct StepRow {
    id: String,
    uses: String,
    needs: Vec<String>,
    condition: Option<String>,
    for_each: bool,
    attempts: u32,
    timeout: Option<String>,
    on_error: String,
    handler: bool,
}

/// `GET /playbooks/{name}`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    let plan = state
        .engine
        .bundle()
        .get(&name)
        .cloned()
        .ok_or_else(|| WebError::not_found("no playbook of that name is loaded"))?;
    let steps: Vec<StepRow> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| StepRow {
            id: s.id.clone(),
            uses: s.uses.clone(),
            needs: plan.deps[i]
                .iter()
                .filter_map(|&d| plan.steps.get(d).map(|d| d.id.clone()))
                .collect(),
            condition: match (&s.condition, s.literal_condition) {
                (Some(c), _) => plan.templates.source(c),
                (None, Some(b)) => Some(b.to_string()),
                (None, None) => None,
            },
            for_each: s.for_each.is_some(),
            attempts: s.retry.attempts,
            timeout: s.timeout.map(|t| humantime::format_duration(t).to_string()),
            on_error: match s.on_error {
                OnError::Fail => "fail".into(),
                OnError::Continue => "continue".into(),
                OnError::Handler(h) => plan
                    .steps
                    .get(h)
                    .map_or("handler".into(), |h| format!("→ {}", h.id)),
            },
            handler: s.is_handler,
        })
        .collect();
    let runs = state
        .store
        .list_runs(&RunFilter {
            playbook: Some(plan.name.clone()),
            status: None,
            limit: 20,
        })
        .await?;
    let runs: Vec<_> = runs.iter().map(super::runs::row).collect();
    // Unescaped: `svg::render` escapes every piece of text it draws.
    let graph = svg::render(&plan, None);
    page::render_with(
        &state,
        &session,
        "playbook.html",
        "playbooks",
        false,
        StatusCode::OK,
        json!({ "playbook": row(&plan), "steps": steps, "runs": runs }),
        vec![("graph", graph)],
    )
}
