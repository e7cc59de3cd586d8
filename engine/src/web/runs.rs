//! `GET /runs`: recent runs (filters: playbook, status). `GET /runs/{id}`: one run, its
//! playbook's graph drawn as SVG with each step's status, and the step table (status,
//! attempts, duration, error or why it was skipped).

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::Serialize;
use serde_json::json;

use super::auth::Session;
use super::backend::{RunFilter, RunView};
use super::page::{self, WebError};
use super::{svg, WebState};

/// Most runs a listing shows.
pub const LIST_LIMIT: usize = 200;

#[derive(Serialize)]
struct RunRow {
    id: String,
    playbook: String,
    status: String,
    trigger: String,
    started: String,
    duration: String,
    error: Option<String>,
    event_key: Option<String>,
}

fn row(r: &RunView) -> RunRow {
    RunRow {
        id: r.id.clone(),
        playbook: r.playbook.clone(),
        status: r.status.clone(),
        trigger: r.trigger.clone(),
        started: r.started.clone(),
        duration: r.duration_ms.map_or("-".into(), svg::duration),
        error: r.error.clone(),
        event_key: r.event_key.clone(),
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
            "status" if !v.is_empty() => f.status = Some(v.to_ascii_lowercase()),
            _ => {}
        }
    }
    let runs = state
        .backend
        .list_runs(&f)
        .await
        .map_err(|e| WebError::internal("could not list runs", e))?;
    let playbooks: Vec<&str> = state
        .backend
        .engine()
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
            "filters": {"playbook": f.playbook, "status": f.status},
            "playbooks": playbooks,
            "statuses": ["succeeded", "failed", "running", "parked"],
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

/// `GET /runs/{id}`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let run = state
        .backend
        .get_run(&id)
        .await
        .map_err(|e| WebError::internal("could not read the run", e))?
        .ok_or_else(|| {
            WebError::not_found(
                "no such run: it may still be running (runs are listed once they finish), or be older than the runs the server keeps",
            )
        })?;
    let plan = state.backend.engine().bundle().get(&run.playbook).cloned();
    let graph = plan.as_ref().map(|p| svg::render(p, Some(&run.steps)));
    // Steps in the plan's order, with those the run never reached; then any the plan no
    // longer has (it changed since the run).
    let mut steps: Vec<StepRow> = Vec::new();
    let report = |id: &str| run.steps.iter().find(|s| s.id == id);
    let step_row = |s: &crate::report::StepReport| StepRow {
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
            .map(|v| super::view::json_text(&v)),
        reason: s.reason.clone(),
    };
    if let Some(p) = &plan {
        for s in &p.steps {
            steps.push(match report(&s.id) {
                Some(r) => step_row(r),
                None => StepRow {
                    id: s.id.clone(),
                    uses: s.uses.clone(),
                    status: "not run",
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
    let live = run.status == "running";
    let ctx = json!({
        "run": row(&run),
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
