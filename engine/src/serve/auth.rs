//! Who may call what: Okta's hook secret on `/hooks/okta`, the API token on `/api/*` and
//! `/events/*`. Secrets are compared in constant time (`subtle`); only a length mismatch
//! returns early, which tells an attacker the length and nothing of the content. Neither
//! the secrets nor the presented values are ever logged or echoed.

use std::fmt;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::app::AppState;
use super::error::ApiError;

/// A secret from the config: prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, in time that does not depend on where the
    /// two first differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Checks Okta's `Authorization` value against `okta.hook_secret` (sent verbatim by Okta,
/// scheme included if the admin configured one). Without a configured secret the hook is
/// open on a loopback listener (local testing) and closed otherwise.
pub fn check_hook(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match &state.config.hook_secret {
        Some(secret) => match headers.get(AUTHORIZATION) {
            Some(v) if secret.matches(v.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::unauthorized("wrong hook secret")),
            None => Err(ApiError::unauthorized("missing `Authorization` header")),
        },
        None if state.loopback => Ok(()),
        None => Err(ApiError::not_found(
            "okta event hooks are not enabled: set `okta.hook_secret`",
        )),
    }
}

/// Checks `Authorization: Bearer <server.api_token>`. Without a configured token the
/// server only listens on loopback (see [`super::Server::bind`]) and lets every local
/// caller in.
pub fn check_bearer(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.config.api_token else {
        return Ok(());
    };
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "missing `Authorization: Bearer <token>` header",
        ));
    };
    let v = value.as_bytes();
    let presented = match v.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => v[7..].trim_ascii(),
        _ => {
            return Err(ApiError::unauthorized(
                "expected `Authorization: Bearer <token>`",
            ))
        }
    };
    if token.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("wrong API token"))
    }
}

/// Middleware for `/api/*` and `/events/*`: runs before the body is read, so an
/// unauthenticated caller cannot make the server buffer a large body.
pub async fn require_bearer(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Err(e) = check_bearer(&state, req.headers()) {
        state
            .metrics
            .rejected(source_of(req.uri().path()), "unauthorized");
        return Err(e);
    }
    Ok(next.run(req).await)
}

/// Middleware for `/hooks/okta` (GET verification and POST deliveries alike).
pub async fn require_hook_secret(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Err(e) = check_hook(&state, req.headers()) {
        state.metrics.rejected("okta", "unauthorized");
        tracing::warn!("okta hook call refused: {}", e.message());
        return Err(e);
    }
    Ok(next.run(req).await)
}

/// The metrics label of a refused request: the event source, or `api`.
fn source_of(path: &str) -> &str {
    match path.strip_prefix("/events/") {
        Some(s) if !s.is_empty() && s.len() <= 64 && !s.contains('/') => "events",
        _ => "api",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly_and_never_print() {
        let s = Secret::new("Basic c2VjcmV0");
        assert!(s.matches(b"Basic c2VjcmV0"));
        assert!(!s.matches(b"Basic c2VjcmV1"));
        assert!(!s.matches(b"Basic c2VjcmV0 "));
        assert!(!s.matches(b""));
        assert_eq!(format!("{s} {s:?}"), "*** ***");
    }
}
