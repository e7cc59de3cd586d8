//! The runs API: `GET /api/runs?playbook=...&status=succeeded&limit=50` lists runs newest
//! first (`{"runs": [{id, playbook, status, trigger, event_id, inbox_seq, started,
//! finished, duration_ms, error}]}`); `GET /api/runs/{id}` adds the steps (status,
//! attempts, duration, error) and the playbook's `output`.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde_json::{json, Value};

use super::app::AppState;
use super::backend::RunQuery;
use super::error::ApiError;

/// Largest `limit` of one listing.
pub const MAX_LIMIT: usize = 1000;

/// A run query from the query string.
pub fn query_from(raw: Option<&str>) -> Result<RunQuery, ApiError> {
    let mut q = RunQuery {
        limit: 50,
        ..RunQuery::default()
    };
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "playbook" => q.playbook = Some(v.into_owned()),
            "status" => q.status = Some(v.trim().to_ascii_lowercase()),
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
    let runs = state
        .backend
        .list_runs(&q)
        .await
        .map_err(|e| ApiError::internal("could not list runs", e))?;
    Ok(Json(json!({"count": runs.len(), "runs": runs})))
}

/// `GET /api/runs/{id}`.
#[tracing::instrument(skip_all, fields(run = %id))]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state
        .backend
        .get_run(&id)
        .await
        .map_err(|e| ApiError::internal("could not read the run", e))?
    {
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
        assert_eq!(q.status.as_deref(), Some("failed"));
        assert_eq!(q.limit, 3);
        assert!(query_from(Some("limit=0")).is_err());
        assert!(query_from(Some("x=1")).is_err());
    }
}
