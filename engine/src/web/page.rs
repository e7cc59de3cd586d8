//! Rendering pages: the embedded minijinja templates (HTML auto-escaping on for every one
//! of them), the context every page shares, and the error page.
//!
//! Templates receive plain data ([`super::view`]) and escape all of it; the only value
//! marked safe anywhere is the run graph, which [`super::svg`] builds with its own
//! escaping.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::{AutoEscape, Environment, Value as MjValue};
use serde_json::{json, Map, Value};

use super::auth::Session;
use super::{assets, svg, WebState};
use crate::persist::StoreError;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("login.html", include_str!("templates/login.html")),
    ("bounce.html", include_str!("templates/bounce.html")),
    ("queue.html", include_str!("templates/queue.html")),
    ("case.html", include_str!("templates/case.html")),
    ("runs.html", include_str!("templates/runs.html")),
    ("run.html", include_str!("templates/run.html")),
    ("playbooks.html", include_str!("templates/playbooks.html")),
    ("playbook.html", include_str!("templates/playbook.html")),
];

/// The compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Templates {
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        // Every template escapes HTML, whatever its name: event data lands in all of them.
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_recursion_limit(64);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_filter("urlencode", |s: String| path_segment(&s));
        for (name, src) in TEMPLATES {
            env.add_template(name, src)?;
        }
        Ok(Templates { env })
    }

    /// Renders template `name` with `ctx` (an object), plus `safe` strings that are
    /// inserted unescaped (only markup this module's callers built with escaping).
    pub fn render(
        &self,
        name: &str,
        ctx: &Value,
        safe: Vec<(&'static str, String)>,
    ) -> Result<String, minijinja::Error> {
        let mut fields: Vec<(String, MjValue)> = match ctx {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), MjValue::from_serialize(v)))
                .collect(),
            _ => Vec::new(),
        };
        for (k, v) in safe {
            fields.push((k.to_string(), MjValue::from_safe_string(v)));
        }
        self.env
            .get_template(name)?
            .render(MjValue::from_iter(fields))
    }
}

/// `s` percent-encoded for one URL path segment (everything but unreserved characters).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A page that could not be shown: a status and a message for the person (never an
/// internal detail; those go to the log).
#[derive(Debug)]
pub struct WebError {
    pub status: StatusCode,
    pub message: String,
}

impl WebError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        WebError {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A 500 whose detail is logged, not shown.
    pub fn internal(what: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "web view: {what}");
        #[cfg(test)]
        eprintln!("web view: {what}: {detail:#}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what}; see the server log"),
        )
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => WebError::not_found(format!("{id} not found")),
            e @ StoreError::InvalidTransition { .. } => {
                WebError::new(StatusCode::CONFLICT, e.to_string())
            }
            e @ (StoreError::Invalid(_) | StoreError::IdempotencyConflict { .. }) => {
                WebError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            e => WebError::internal("the case store failed", e),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        // Self-contained (no templates, no session): it must work when those do not.
        let body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} · Caseflow</title><link rel=\"stylesheet\" href=\"/assets/app.css?v={v}\"></head><body><header class=\"top\"><a class=\"brand\" href=\"/\">Caseflow</a></header><main><section class=\"card error-page\"><h1>{code}</h1><p class=\"error\">{msg}</p><p><a href=\"/\">Back to the queue</a></p></section></main></body></html>\n",
            code = self.status.as_u16(),
            v = assets::version(),
            msg = svg::escape(&self.message),
        );
        html(self.status, body)
    }
}

/// An HTML response; pages are never cached (they hold case data and CSRF tokens).
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// The context every page shares.
fn base(state: &WebState, session: Option<&Session>, nav: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("nav".into(), json!(nav));
    m.insert("asset_version".into(), json!(assets::version()));
    m.insert("login_required".into(), json!(state.auth.login_required()));
    if let Some(s) = session {
        m.insert("user".into(), json!(s.user));
        m.insert("csrf".into(), json!(state.auth.csrf(s)));
    }
    m
}

/// Renders `template` for `session` with `ctx` (an object) merged over the shared context.
/// `refresh` (seconds) turns on the page's live sections.
pub fn render(
    state: &WebState,
    session: &Session,
    template: &str,
    nav: &str,
    refresh: bool,
    status: StatusCode,
    ctx: Value,
) -> Result<Response, WebError> {
    render_with(
        state,
        session,
        template,
        nav,
        refresh,
        status,
        ctx,
        Vec::new(),
    )
}

/// [`render`] with markup inserted unescaped: only for strings built with escaping (the
/// run graph from [`svg::render`]).
#[allow(clippy::too_many_arguments)]
pub fn render_with(
    state: &WebState,
    session: &Session,
    template: &str,
    nav: &str,
    refresh: bool,
    status: StatusCode,
    ctx: Value,
    safe: Vec<(&'static str, String)>,
) -> Result<Response, WebError> {
    let mut m = base(state, Some(session), nav);
    if refresh {
        m.insert("refresh".into(), json!(state.options.refresh_secs));
    }
    if let Value::Object(extra) = ctx {
        m.extend(extra);
    }
    let body = state
        .templates
        .render(template, &Value::Object(m), safe)
        .map_err(|e| WebError::internal("the page could not be rendered", e))?;
    Ok(html(status, body))
}

/// The login page (also where a person without a token to type picks a name).
pub fn login(
    state: &WebState,
    session: &Session,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, WebError> {
    render(
        state,
        session,
        "login.html",
        "login",
        false,
        status,
        json!({"next": next, "error": error, "current": session.user}),
    )
}

/// A page that reloads `target` from this site (see [`super::auth::guard`]).
pub fn bounce(state: &WebState, target: &str) -> Response {
    let mut m = base(state, None, "");
    m.insert("target".into(), json!(target));
    match state
        .templates
        .render("bounce.html", &Value::Object(m), Vec::new())
    {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => WebError::internal("the page could not be rendered", e).into_response(),
    }
}
