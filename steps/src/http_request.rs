//! `http.request`: a generic HTTP call for integrations that have no step of their own.
//!
//! The request goes through the guarded client (destination guard, timeouts, checked
//! redirects) with `Idempotency-Key` set to the step's key, stable across retries. The
//! response comes back as `{status, headers, body}`, the body as JSON when it parses.
//! A status outside `expect` (default: any 2xx) fails the step: 5xx, 408 and 429 retryable,
//! the rest permanent.

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine::{StepContext, StepError, TypedStep};
use reqwest::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use crate::net::{read_body, redact_url, step_error, GuardedClient, MAX_BODY_BYTES};

#[derive(Debug, Default, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl From<Method> for reqwest::Method {
    fn from(m: Method) -> Self {
        match m {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
            Method::Head => reqwest::Method::HEAD,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// `GET` (default), `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
    #[serde(default)]
    pub method: Method,
    /// An http(s) URL; private and loopback destinations need config `http.allow_hosts`.
    pub url: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameters added to the URL; a list value repeats the parameter.
    #[serde(default)]
    pub query: BTreeMap<String, Value>,
    /// A JSON body (sets `Content-Type: application/json`).
    #[serde(default)]
    pub json: Option<Value>,
    /// Statuses that count as success; default any 2xx.
    #[serde(default)]
    pub expect: Vec<u16>,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub status: u16,
    /// Response headers, lower-case names; repeated headers joined with `, `. `set-cookie`
    /// is left out (session secrets do not belong in run reports).
    pub headers: BTreeMap<String, String>,
    /// The body as JSON when it parses, else as text.
    pub body: Value,
}

pub struct HttpRequest;

/// Header names whose values are marked sensitive (kept out of any debug output).
fn is_sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "proxy-authorization"
        || n == "cookie"
        || ["key", "token", "secret", "auth", "signature"]
            .iter()
            .any(|w| n.contains(w))
}

fn query_value(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[async_trait]
impl TypedStep for HttpRequest {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "http.request";

    /// A `GET` or `HEAD` (HTTP's safe methods; `GET` is the default) reads: it starts
    /// without waiting for the run journal's flush, and after a crash it may be sent once
    /// more. Any other method, or one chosen by a template, has effects.
    fn effect_free(&self, with: &Value) -> bool {
        match with.get("method") {
            None => true,
            Some(Value::String(m)) => m == "GET" || m == "HEAD",
            Some(_) => false,
        }
    }

    fn description(&self) -> &'static str {
        "Call an HTTP API (through the outbound guard; `Idempotency-Key` sent); output status, headers and body."
    }

    fn example(&self) -> Value {
        json!({
            "method": "POST",
            "url": "https://tickets.example.com/api/issues",
            "headers": { "Authorization": "Bearer {{ event.token }}" },
            "json": { "title": "Suspicious sign-in for {{ event.actor.alternateId }}" },
            "expect": [200, 201]
        })
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        crate::net::ClientConfig::from_config(config)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn run(&self, input: Input, ctx: &StepContext) -> Result<Output, StepError> {
        let mut url = Url::parse(input.url.trim()).map_err(|e| {
            StepError::invalid_input(format!("invalid input `url`: `{}`: {e}", input.url))
        })?;
        if !input.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &input.query {
                match v {
                    Value::Array(items) => {
                        for i in items.iter().filter_map(query_value) {
                            pairs.append_pair(k, &i);
                        }
                    }
                    other => {
                        if let Some(s) = query_value(other) {
                            pairs.append_pair(k, &s);
                        }
                    }
                }
            }
        }
        let method: reqwest::Method = input.method.into();
        let what = format!("http.request: {method} {}", redact_url(&url));
        let client = GuardedClient::for_context(ctx)?;
        let mut req = client
            .request(method, url)
            .map_err(|e| StepError::permanent(format!("{what}: {e}")))?;
        let mut has_key = false;
        for (name, value) in &input.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                StepError::invalid_input(format!(
                    "invalid input `headers`: `{name}` is not a header name"
                ))
            })?;
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                StepError::invalid_input(format!(
                    "invalid input `headers.{name}`: not a valid header value"
                ))
            })?;
            v.set_sensitive(is_sensitive(name));
            has_key |= n.as_str() == "idempotency-key";
            req = req.header(n, v);
        }
        if !has_key {
            req = req.header("Idempotency-Key", ctx.idempotency_key());
        }
        if let Some(body) = &input.json {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| step_error(e, &what))?;
        let status = resp.status();
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in resp.headers() {
            if name == reqwest::header::SET_COOKIE {
                continue;
            }
            let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_string())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        let bytes = read_body(resp, MAX_BODY_BYTES, &what).await?;
        let text = String::from_utf8_lossy(&bytes);
        let expected = if input.expect.is_empty() {
            status.is_success()
        } else {
            input.expect.contains(&status.as_u16())
        };
        if !expected {
            let snippet: String = text.chars().take(200).collect();
            let msg = if snippet.trim().is_empty() {
                format!("{what} returned {status}")
            } else {
                format!("{what} returned {status}: {}", snippet.trim())
            };
            let code = status.as_u16();
            return Err(if status.is_server_error() || code == 429 || code == 408 {
                StepError::retryable(msg)
            } else {
                StepError::permanent(msg)
            });
        }
        let body = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(text.into_owned()));
        Ok(Output {
            status: status.as_u16(),
            headers,
            body,
        })
    }
}
