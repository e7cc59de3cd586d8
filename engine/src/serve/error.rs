//! Errors as HTTP answers: always `{"error": "..."}` (plus details where they help), never
//! a stack trace or a secret. Also the body extractor every handler uses, so a body over
//! the limit is a JSON 413 and malformed JSON a JSON 400.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            details: None,
        }
    }

    /// Extra fields merged into the JSON object beside `error`.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    pub fn unprocessable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, m)
    }
    /// A failure on our side. The detail goes to the log; the caller gets a generic
    /// message (internal errors may name paths).
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{context}; see the server log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let (Some(Value::Object(extra)), Some(obj)) = (self.details, body.as_object_mut()) {
            for (k, v) in extra {
                obj.entry(k).or_insert(v);
            }
        }
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<crate::persist::StoreError> for ApiError {
    fn from(e: crate::persist::StoreError) -> Self {
        use crate::persist::StoreError as E;
        match e {
            E::NotFound(id) => ApiError::not_found(format!("{id} not found")),
            E::InvalidTransition { case, from, to } => {
                ApiError::conflict(E::InvalidTransition { case, from, to }.to_string())
                    .with_details(json!({
                        "case": case.to_string(),
                        "from": from.as_str(),
                        "to": to.as_str(),
                    }))
            }
            E::Invalid(e) => ApiError::unprocessable(e.to_string()),
            e @ E::IdempotencyConflict { .. } => ApiError::conflict(e.to_string()),
            e => ApiError::internal("the case store failed", e),
        }
    }
}

/// The request body as JSON, read within the body limit: 413 when it is too large, 400
/// when it is not JSON or not the expected shape, all as `{"error": ...}`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            let status = r.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "request body too large")
            } else {
                ApiError::new(
                    status,
                    format!("cannot read the request body: {}", r.body_text()),
                )
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parse a body as `T`, with the position and path of what is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!("malformed JSON: {inner}"));
        }
        let what = "unexpected JSON";
        if path == "." {
            ApiError::bad_request(format!("{what}: {inner}"))
        } else {
            ApiError::bad_request(format!("{what} at `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}
