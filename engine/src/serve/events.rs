//! `POST /events/{source}`: events from sources other than Okta's hooks, for playbooks
//! whose `on.event` names that source.
//!
//! The body is one event object, an array of them, or an Okta-style delivery
//! (`{"data": {"events": [...]}}`). Events are stored in the inbox before the answer.
//! Without `wait` the answer is `202` with what was stored:
//! `{"events": [{"seq": 12, "key": "src:uuid", "duplicate": false}], "accepted": 1, "duplicates": 0}`.
//! With `?wait=true` (optionally `&timeout=10s`, at most `server.wait_timeout`) the answer
//! comes when the runs each event started have finished, like the synchronous webhooks of
//! Torq and Tines: `200` with each event's `runs` (`run_id`, `playbook`, `status`, `output`,
//! `error`); events still running at the timeout have `"finished": false` and the answer is
//! `202`. A source configured with `server.sources.<name>.wait: true` answers that way
//! without the query string (for senders that post to a fixed URL); `?wait=false` still gets
//! the quick `202`. Case-event sources (`case.*`) cannot be posted: only the engine emits
//! those.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::app::AppState;
use super::error::{ApiError, JsonBody};
use crate::report::RunReport;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    #[serde(default)]
    wait: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

/// A source name: short, lower-case letters, digits, `_`, `-`, `.`; not a case event.
pub fn check_source(source: &str) -> Result<(), ApiError> {
    let ok = !source.is_empty()
        && source.len() <= 64
        && source
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
    if !ok {
        return Err(ApiError::bad_request(
            "invalid source: use 1 to 64 of `a-z`, `0-9`, `_`, `-`, `.`",
        ));
    }
    if source == "case" || source.starts_with("case.") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "case events come from the case store only; post changes to `PATCH /api/cases/{id}`",
        ));
    }
    Ok(())
}

fn flag(v: &Option<String>, name: &str) -> Result<bool, ApiError> {
    match v.as_deref().map(str::trim) {
        None | Some("false") | Some("0") => Ok(false),
        Some("") | Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "`{name}` must be `true` or `false`, not `{other}`"
        ))),
    }
}

fn run_outcome(r: &RunReport) -> Value {
    json!({
        "run_id": r.run_id,
        "playbook": r.playbook,
        "status": r.status,
        "duration_ms": r.duration_ms,
        "output": r.output,
        "error": r.error,
    })
}

/// See the module docs.
#[tracing::instrument(skip_all, fields(%source))]
pub async fn post(
    State(state): State<AppState>,
    Path(source): Path<String>,
    params: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
    body: Result<JsonBody<Value>, ApiError>,
) -> Result<Response, ApiError> {
    let reject = |reason: &'static str, e: ApiError| {
        state.metrics.rejected("events", reason);
        e
    };
    check_source(&source).map_err(|e| reject("bad_source", e))?;
    let Query(params) =
        params.map_err(|e| reject("bad_query", ApiError::bad_request(e.body_text())))?;
    // `server.sources.<source>.wait` answers synchronously for senders that cannot add
    // `?wait=true` to the URL; `?wait=false` still asks for the quick answer.
    let wait = match &params.wait {
        None => state.config.waits_by_default(&source),
        Some(_) => flag(&params.wait, "wait").map_err(|e| reject("bad_query", e))?,
    };
    let timeout = match &params.timeout {
        None => state.config.wait_timeout,
        Some(t) => humantime::parse_duration(t.trim())
            .map_err(|e| {
                reject(
                    "bad_query",
                    ApiError::bad_request(format!("invalid `timeout` `{t}`: {e}")),
                )
            })?
            .min(state.config.wait_timeout),
    };
    let JsonBody(body) = body.map_err(|e| {
        let reason = if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "malformed"
        };
        reject(reason, e)
    })?;
    let events = crate::cli::events::split(body)
        .map_err(|e| reject("malformed", ApiError::bad_request(e)))?;
    let n = events.len();
    // A waiting sender is answered after the runs, so the events need only be on disk by
    // then (`sync` below): the run's own flushes usually cover them, one flush fewer on
    // the way to the answer.
    let ingested = if wait {
        state.engine.ingest_unsynced(&source, events).await
    } else {
        state.engine.ingest(&source, events).await
    }
    .map_err(|e| ApiError::internal("could not store the events", e))?;
    let duplicates = ingested.iter().filter(|i| i.duplicate).count();
    state
        .metrics
        .received(&source, "api", n as u64, duplicates as u64);
    if !wait {
        let items: Vec<Value> = ingested
            .iter()
            .map(|i| json!({"seq": i.seq, "key": i.key, "duplicate": i.duplicate}))
            .collect();
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"events": items, "accepted": n - duplicates, "duplicates": duplicates})),
        )
            .into_response());
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut all_finished = true;
    let mut out = Vec::with_capacity(ingested.len());
    for ing in &ingested {
        let mut item = json!({"seq": ing.seq, "key": ing.key, "duplicate": ing.duplicate});
        if let Some(seq) = ing.seq {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let runs = state
                .engine
                .wait_for(seq, left.max(Duration::from_millis(1)))
                .await
                .map_err(|e| ApiError::internal("could not read the runs", e))?;
            match runs {
                Some(runs) => {
                    item["finished"] = json!(true);
                    item["runs"] = runs.iter().map(run_outcome).collect();
                }
                None => {
                    all_finished = false;
                    item["finished"] = json!(false);
                }
            }
        }
        out.push(item);
    }
    // Nothing is acknowledged before it is on disk (strict durability), duplicates and
    // events no playbook took included.
    state
        .store
        .sync()
        .await
        .map_err(|e| ApiError::internal("could not store the events", e))?;
    let status = if all_finished {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(json!({"events": out, "finished": all_finished, "duplicates": duplicates})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_names_and_never_case_events() {
        assert!(check_source("crowdstrike").is_ok());
        assert!(check_source("okta").is_ok());
        assert!(check_source("my-siem.v2").is_ok());
        for bad in ["", "Upper", "a/b", "case.created", "case", &"x".repeat(65)] {
            assert!(check_source(bad).is_err(), "{bad}");
        }
    }
}
