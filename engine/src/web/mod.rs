//! The analysts' web view: the case queue, a case's page with its actions, runs with
//! their step graphs, and the loaded playbooks, served by `engine serve` at `/`.
//!
//! Data flow: a browser asks for a page; [`auth::guard`] checks the session cookie (or
//! sends the visitor to `/login`); the page handler reads cases and runs through
//! [`WebBackend`], turns them into plain view data ([`view`]) and renders an embedded
//! minijinja template ([`page`]) that escapes every string. A form POST (change state,
//! assign, change severity, comment) is checked for its CSRF token by [`auth::Form`] and
//! becomes [`WebBackend::update_case`] as a person's change, so the case events it causes
//! start the same playbooks a playbook's change would (moving an IAM case to `in_progress`
//! makes `iam-state-changed` assign it). The browser then sees the result arrive through
//! the page's live sections, which a small script ([`assets`]) refreshes every few
//! seconds.
//!
//! | route | page |
//! |---|---|
//! | `GET /` | the queue: open cases by severity, then SLA due; filters |
//! | `GET /cases/{id}` | a case; `POST /cases/{id}/{state,assign,severity,comment}` change it |
//! | `GET /runs`, `GET /runs/{id}` | recent runs; one run's graph (SVG, [`svg`]) and steps |
//! | `GET /playbooks`, `GET /playbooks/{name}` | loaded playbooks, triggers, graphs |
//! | `GET, POST /login`, `POST /logout` | see [`auth`] |
//! | `GET /assets/{file}` | CSS, script, icon, embedded in the binary |
//!
//! Every response carries a strict Content-Security-Policy ([`CSP`]: scripts and styles
//! only from this server, no inline script, no framing), `nosniff`, and
//! `Referrer-Policy: same-origin` (not `no-referrer`: with it browsers send `Origin: null`
//! on form POSTs, which the origin check refuses).

pub mod assets;
pub mod auth;
pub mod case;
pub mod page;
pub mod playbooks;
pub mod queue;
pub mod runs;
pub mod svg;
pub mod view;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::persist::Store;
use crate::schedule::Engine;

pub use auth::Auth;
pub use page::WebError;

/// The Content-Security-Policy of every web response: nothing inline, nothing from
/// elsewhere. The run graph is inline SVG with presentation attributes, which this allows.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Largest form a page posts (a comment, mostly).
pub const FORM_LIMIT: usize = 64 * 1024;

/// Tunables of the web view.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// How often live sections (queue, case, run) refresh, in seconds.
    pub refresh_secs: u32,
    /// Most cases the queue shows at once.
    pub queue_limit: usize,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            refresh_secs: 3,
            queue_limit: 500,
        }
    }
}

/// What every web handler can reach.
#[derive(Clone)]
pub struct WebState {
    pub engine: Arc<Engine>,
    /// The engine's store: cases and the run journal.
    pub store: Arc<dyn Store>,
    pub auth: Arc<Auth>,
    pub templates: Arc<page::Templates>,
    pub options: Arc<WebOptions>,
}

impl WebState {
    /// The web view of `engine`, which must have a store. With `api_token`, a person logs
    /// in with it; without, no login (the server must then listen on loopback only; see
    /// [`auth`]).
    pub fn new(engine: Arc<Engine>, api_token: Option<&str>) -> Result<Self, crate::Error> {
        let store = engine
            .services()
            .store
            .clone()
            .ok_or_else(|| crate::Error::Config("the web view needs a case store".into()))?;
        let templates = page::Templates::new()
            .map_err(|e| crate::Error::Runtime(format!("web view templates: {e}")))?;
        Ok(WebState {
            engine,
            store,
            auth: Arc::new(Auth::new(api_token)),
            templates: Arc::new(templates),
            options: Arc::new(WebOptions::default()),
        })
    }

    pub fn with_options(mut self, options: WebOptions) -> Self {
        self.options = Arc::new(options);
        self
    }
}

/// The web view's routes, for merging into the server's router (it sets no fallback).
/// Its state is applied here, so it merges into a router of any state type (`S` is `()`
/// for a router of its own).
pub fn router<S: Clone + Send + Sync + 'static>(state: WebState) -> Router<S> {
    Router::new()
        .route("/", get(queue::page))
        .route("/cases/{id}", get(case::page))
        .route("/cases/{id}/state", post(case::set_state))
        .route("/cases/{id}/assign", post(case::assign))
        .route("/cases/{id}/severity", post(case::set_severity))
        .route("/cases/{id}/comment", post(case::comment))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::page))
        .route("/playbooks", get(playbooks::list))
        .route("/playbooks/{name}", get(playbooks::page))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/{file}", get(assets::serve))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

#[cfg(test)]
mod tests;
