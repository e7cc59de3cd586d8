//! `GET /runs`: recent runs from the engine's run journal (filters: playbook, status).
//! `GET /runs/{id}`: one run, its playbook's graph drawn as SVG with each step's status,
//! and the step table (status, attempts, duration, error or why it was skipped). A run
//! still going shows the steps finished so far and refreshes itself.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::Serialize;
use serde_json::json;

use super::auth::Session;
use super::page::{self, WebError};
use super::{svg, view, WebState};
use crate::persist::{RunFilter, RunState, RunSummary};
use crate::report::StepReport;

/// Most runs a listing shows.
pub const LIST_LIMIT: usize = 200;

/// One run as the pages show it.
#[derive(Serialize)]
pub struct RunRow {
    id: String,
    playbook: String,
    status: &'static str,
    trigger: String,
    started: String,
    finished: Option<String>,
    duration: String,
    error: Option<String>,
    event_key: Option<String>,
    case_event: Option<u64>,
}

pub fn row(r: &RunSummary) -> RunRow {
    RunRow {
        id: r.run_id.clone(),
        playbook: r.playbook.clone(),
        status: r.status.as_str(),
        trigger: r.trigger.clone(),
        started: r.started_at.clone(),
        finished: r.finished_at.clone(),
        duration: r.duration_ms.map_or("-".into(), svg::duration),
        error: r.error.clone(),
        event_key: r.event_key.clone(),
        case_event: r.case_event,
    }
}

/// `GET /runs`.
pub async fn list(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let mut f = RunFilter {
        limit: LIST_LIMIT,
        ..RunFilter::default()
    };
    for (k, v) in url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        let v = v.trim();
        match k.as_ref() {
            "playbook" if !v.is_empty() => f.playbook = Some(v.to_string()),
            "status" if !v.is_empty() => {
                f.status = Some(
                    v.parse::<RunState>()
                        .map_err(|e| WebError::new(StatusCode::BAD_REQUEST, e.to_string()))?,
                )
            }
            _ => {}
        }
    }
    let runs = state.store.list_runs(&f).await?;
    let playbooks: Vec<&str> = state
        .engine
        .bundle()
        .playbooks
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    page::render(
        &state,
        &session,
        "runs.html",
        "runs",
        true,
        StatusCode::OK,
        json!({
            "runs": runs.iter().map(row).collect::<Vec<_>>(),
            "filters": {"playbook": f.playbook, "status": f.status.map(RunState::as_str)},
            "playbooks": playbooks,
            "statuses": RunState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        }),
    )
}

#[derive(Serialize)]
struct StepRow {
    id: String,
    uses: String,
    status: &'static str,
    attempts: u32,
    duration: String,
    error: Option<String>,
    error_kind: Option<String>,
    reason: Option<String>,
}

fn step_row(s: &StepReport) -> StepRow {
    StepRow {
        id: s.id.clone(),
        uses: s.uses.clone(),
        status: svg::status_name(s.status),
        attempts: s.attempts,
        duration: svg::duration(s.duration_ms),
        error: s.error.as_ref().map(|e| e.message.clone()),
        error_kind: s
            .error
            .as_ref()
            .and_then(|e| serde_json::to_value(e.kind).ok())
            .map(|v| view::json_text(&v)),
        reason: s.reason.clone(),
    }
}

/// `GET /runs/{id}`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let run = state
        .store
        .get_run(&id)
        .await?
        .ok_or_else(|| WebError::not_found("no such run"))?;
    let plan = state.engine.bundle().get(&run.summary.playbook).cloned();
    let graph = plan.as_ref().map(|p| svg::render(p, Some(&run.steps)));
    // Steps in the plan's order, with those the run has not reached; then any the plan no
    // longer has (it changed since the run).
    let live = matches!(run.summary.status, RunState::Running | RunState::Parked);
    let mut steps: Vec<StepRow> = Vec::new();
    if let Some(p) = &plan {
        for s in &p.steps {
            steps.push(match run.steps.iter().find(|r| r.id == s.id) {
                Some(r) => step_row(r),
                None => StepRow {
                    id: s.id.clone(),
                    uses: s.uses.clone(),
                    status: if live { "pending" } else { "not run" },
                    attempts: 0,
                    duration: "-".into(),
                    error: None,
                    error_kind: None,
                    reason: None,
                },
            });
        }
    }
    for s in &run.steps {
        if !steps.iter().any(|r| r.id == s.id) {
            steps.push(step_row(s));
        }
    }
    let output = run
        .output
        .as_ref()
        .and_then(|o| serde_json::to_string_pretty(o).ok());
    let ctx = json!({
        "run": row(&run.summary),
        "steps": steps,
        "output": output,
        "has_plan": plan.is_some(),
    });
    // Unescaped: `svg::render` escapes every piece of text it draws.
    let safe = graph.map(|g| ("graph", g)).into_iter().collect();
    page::render_with(
        &state,
        &session,
        "run.html",
        "runs",
        live,
        StatusCode::OK,
        ctx,
        safe,
    )
}
