//! The shared state of every handler and the route table.
//!
//! | route | auth | handler |
//! |---|---|---|
//! | `GET /healthz`, `GET /metrics` | none | [`health`], [`super::metrics::handler`] |
//! | `GET, POST /hooks/okta` | `okta.hook_secret` | [`super::okta_hook`] |
//! | `POST /events/{source}` | Bearer `server.api_token` | [`super::events`] |
//! | `GET /api/cases`, `GET, PATCH /api/cases/{id}` | Bearer | [`super::api_cases`] |
//! | `GET /api/runs`, `GET /api/runs/{id}` | Bearer | [`super::api_runs`] |
//!
//! Every answer that is not a success is `{"error": ...}` JSON, including unknown routes
//! (404), wrong methods (405), bodies over `server.body_limit` (413) and panics (500,
//! without the panic message).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use super::config::ServeConfig;
use super::error::ApiError;
use super::metrics::Metrics;
use super::{api_cases, api_runs, auth, events, metrics, okta_hook, ServeError};
use crate::persist::Store;
use crate::schedule::Engine;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// The engine's store (the server refuses to start without one).
    pub store: Arc<dyn Store>,
    pub config: Arc<ServeConfig>,
    pub metrics: Arc<Metrics>,
    /// The listener is on a loopback address (unauthenticated local use is allowed).
    pub loopback: bool,
}

impl AppState {
    pub fn new(
        engine: Arc<Engine>,
        config: ServeConfig,
        loopback: bool,
    ) -> Result<Self, ServeError> {
        let store = engine
            .services()
            .store
            .clone()
            .ok_or_else(|| ServeError::Config("engine serve needs a case store".into()))?;
        Ok(AppState {
            engine,
            store,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            loopback,
        })
    }
}

/// The route table with its layers.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/cases", get(api_cases::list))
        .route(
            "/api/cases/{id}",
            get(api_cases::show).patch(api_cases::update),
        )
        .route("/api/runs", get(api_runs::list))
        .route("/api/runs/{id}", get(api_runs::show))
        .route("/events/{source}", post(events::post))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_bearer,
        ));
    let hooks = Router::new()
        .route(
            "/hooks/okta",
            get(okta_hook::verify).post(okta_hook::deliver),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_hook_secret,
        ));
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics::handler))
        .merge(api)
        .merge(hooks)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                // The path only: queries and headers may carry what does not belong in logs.
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the server log",
                )
                .into_response()
            },
        ))
        .with_state(state)
}

/// `GET /healthz`: the process serves and its store answers.
pub async fn health(State(state): State<AppState>) -> Response {
    match state.store.inbox_depth().await {
        Ok(depth) => Json(json!({"status": "ok", "inbox_depth": depth})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: the inbox cannot be read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "error": "the inbox cannot be read"})),
            )
                .into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}
