//! The runs API, from the engine's run journal: `GET /api/runs?playbook=...&status=...&limit=50`
//! lists runs newest first (`{"runs": [{run_id, playbook, trigger, status, started_at,
//! finished_at, duration_ms, event_key, inbox_seq, case_event, error}]}`; `status` is
//! `running`, `succeeded`, `failed` or `parked`); `GET /api/runs/{id}` adds the input
//! event, the playbook's `output` and the steps (status, attempts, duration, error).

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde_json::{json, Value};

use super::app::AppState;
use super::error::ApiError;
use crate::persist::{RunFilter, RunState};

/// Largest `limit` of one listing.
pub const MAX_LIMIT: usize = 1000;

/// A run filter from the query string.
pub fn query_from(raw: Option<&str>) -> Result<RunFilter, ApiError> {
    let mut q = RunFilter {
        limit: 50,
        ..RunFilter::default()
    };
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "playbook" => q.playbook = Some(v.into_owned()),
            "status" => {
                q.status = Some(
                    v.trim()
                        .to_ascii_lowercase()
                        .parse::<RunState>()
                        .map_err(|e| ApiError::bad_request(format!("invalid `status`: {e}")))?,
                )
            }
            "limit" => {
                q.limit = v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("`limit` must be from 1 to {MAX_LIMIT}"))
                    })?
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}` (known: playbook, status, limit)"
                )))
            }
        }
    }
    Ok(q)
}

/// `GET /api/runs`.
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query_from(raw.as_deref())?;
    let runs = state.store.list_runs(&q).await?;
    Ok(Json(json!({"count": runs.len(), "runs": runs})))
}

/// `GET /api/runs/{id}`.
#[tracing::instrument(skip_all, fields(run = %id))]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.store.get_run(&id).await? {
        Some(run) => Ok(Json(json!({ "run": run }))),
        None => Err(ApiError::not_found(format!("run `{id}` not found"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_queries() {
        let q = query_from(Some("playbook=iam-preprocess&status=Failed&limit=3")).unwrap();
        assert_eq!(q.playbook.as_deref(), Some("iam-preprocess"));
        assert_eq!(q.status, Some(RunState::Failed));
        assert_eq!(q.limit, 3);
        for bad in ["limit=0", "x=1", "status=done"] {
            assert!(query_from(Some(bad)).is_err(), "{bad}");
        }
    }
}
