//! Okta event hooks (PROTOCOLS.md §1): the one-time verification `GET` and the deliveries.
//!
//! The secret is checked by [`super::auth::require_hook_secret`] before anything here runs,
//! for the `GET` too. A delivery is `{"data": {"events": [LogEvent, ...]}}`; every event is
//! written to the inbox (durable before the answer) and the answer is `200` with an empty
//! body, as Okta asks, well inside its 3 s timeout: playbooks run afterwards on the worker.
//! An event whose `uuid` was seen before is acknowledged the same way and counted as a
//! duplicate; it never runs twice. A store failure answers 500, so Okta retries once.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::app::AppState;
use super::error::{parse_json, ApiError};

/// The header of Okta's verification request.
pub const CHALLENGE_HEADER: &str = "x-okta-verification-challenge";

/// `GET /hooks/okta`: echo the challenge as `{"verification": ...}`.
#[tracing::instrument(skip_all)]
pub async fn verify(headers: HeaderMap) -> Result<Response, ApiError> {
    let challenge = headers
        .get(CHALLENGE_HEADER)
        .ok_or_else(|| ApiError::bad_request(format!("missing `{CHALLENGE_HEADER}` header")))?
        .to_str()
        .map_err(|_| ApiError::bad_request(format!("`{CHALLENGE_HEADER}` is not text")))?;
    tracing::info!("okta event hook verified");
    Ok(Json(json!({ "verification": challenge })).into_response())
}

/// The events of a delivery body.
pub fn events_of(body: Value) -> Result<Vec<Value>, ApiError> {
    let Value::Object(mut envelope) = body else {
        return Err(ApiError::bad_request(
            "expected an Okta event hook delivery: {\"data\": {\"events\": [...]}}",
        ));
    };
    let events = match envelope.get_mut("data").and_then(|d| d.get_mut("events")) {
        Some(Value::Array(items)) => std::mem::take(items),
        Some(_) => return Err(ApiError::bad_request("`data.events` is not a list")),
        None => return Err(ApiError::bad_request("missing `data.events`")),
    };
    if let Some(i) = events.iter().position(|e| !e.is_object()) {
        return Err(ApiError::bad_request(format!(
            "`data.events[{i}]` is not an object"
        )));
    }
    Ok(events)
}

/// `POST /hooks/okta`: store every event, then answer 200 with an empty body.
#[tracing::instrument(skip_all, fields(events, duplicates))]
pub async fn deliver(
    State(state): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| {
        let status = r.status();
        state.metrics.rejected(
            "okta",
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "unreadable"
            },
        );
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "request body too large")
        } else {
            ApiError::new(status, "cannot read the request body")
        }
    })?;
    let events = parse_json::<Value>(&body)
        .and_then(events_of)
        .inspect_err(|_| state.metrics.rejected("okta", "malformed"))?;
    let n = events.len();
    let ingested = state
        .engine
        .ingest("okta", events)
        .await
        .map_err(|e| ApiError::internal("could not store the delivery", e))?;
    let duplicates = ingested.iter().filter(|i| i.duplicate).count();
    state
        .metrics
        .received("okta", "hook", n as u64, duplicates as u64);
    let span = tracing::Span::current();
    span.record("events", n);
    span.record("duplicates", duplicates);
    tracing::info!(events = n, duplicates, "okta delivery stored");
    let mut res = StatusCode::OK.into_response();
    // Okta ignores these; they help people reading logs or testing the hook by hand.
    let h = res.headers_mut();
    h.insert("x-caseflow-events", HeaderValue::from(n));
    h.insert("x-caseflow-duplicates", HeaderValue::from(duplicates));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_must_hold_a_list_of_objects() {
        assert_eq!(
            events_of(json!({"data": {"events": [{"uuid": "a"}, {"uuid": "b"}]}}))
                .unwrap()
                .len(),
            2
        );
        assert!(events_of(json!({"data": {"events": []}}))
            .unwrap()
            .is_empty());
        for bad in [
            json!([]),
            json!({"data": {}}),
            json!({"data": {"events": {}}}),
            json!({"data": {"events": [1]}}),
        ] {
            assert!(events_of(bad.clone()).is_err(), "{bad}");
        }
    }
}
