//! The web view through its router (no socket): escaping of every event-derived field,
//! the CSP on every page, login and cookie flags, CSRF refusals, and that actions become
//! a person's case changes with the case events playbooks trigger on.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE,
};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use super::*;
use crate::cases::{
    Actor, CaseChange, CaseEventKind, CaseId, NewCase, NewObservable, ObservableType, Severity,
    Timestamp, Verdict,
};
use crate::persist::{
    MemoryStore, RunInputRecord, RunOrigin, RunRecord, RunState, RunSummary, Store, WriteMeta,
};
use crate::report::StepReport;
use crate::schedule::ready::Status;
use crate::schedule::Engine;
use crate::step::{ErrorKind, Registry, Services, StepContext, StepError, TypedStep};

const XSS: &str = "<script>alert(1)</script>";
const XSS_ATTR: &str = "\"><img src=x onerror=alert(2)>";
const XSS_SQ: &str = "'><svg/onload=alert(3)>";
const TOKEN: &str = "correct horse battery staple";

struct Echo;

#[async_trait]
impl TypedStep for Echo {
    type Input = Map<String, Value>;
    type Output = Map<String, Value>;
    const NAME: &'static str = "echo";
    fn description(&self) -> &'static str {
        "returns its input"
    }
    fn example(&self) -> Value {
        json!({})
    }
    async fn run(
        &self,
        input: Map<String, Value>,
        _: &StepContext,
    ) -> Result<Map<String, Value>, StepError> {
        Ok(input)
    }
}

const PLAYBOOK: &str = r#"
playbook: triage
description: "Triage <b>bold</b> cases"
on:
  event: okta
  if: "{{ event.eventType == 'user.session.start' }}"
steps:
  - id: look
    uses: echo
  - id: decide
    uses: echo
    needs: look
"#;

fn hostile_run() -> RunRecord {
    let step = |id: &str, status, attempts, ms, error: Option<String>| StepReport {
        id: id.into(),
        uses: "echo".into(),
        status,
        attempts,
        duration_ms: ms,
        output: None,
        error: error.map(|message| StepError {
            kind: ErrorKind::Permanent,
            message,
        }),
        reason: None,
    };
    RunRecord {
        summary: RunSummary {
            run_id: "run-1".into(),
            playbook: "triage".into(),
            trigger: format!("okta {XSS}"),
            status: RunState::Failed,
            started_at: "2026-11-27T08:00:00.000Z".into(),
            finished_at: Some("2026-11-27T08:00:01.500Z".into()),
            duration_ms: Some(1500.0),
            event_key: Some(format!("okta:{XSS_SQ}")),
            inbox_seq: None,
            case_event: None,
            error: Some(format!("run failed: {XSS} {XSS_ATTR}")),
        },
        input: RunInputRecord {
            event: json!({ "displayMessage": XSS }),
            case: None,
            depth: 0,
            seed: None,
        },
        output: Some(json!({ "note": XSS })),
        steps: vec![
            step("look", Status::Succeeded, 2, 3.5, None),
            step(
                "decide",
                Status::Failed,
                3,
                1500.0,
                Some(format!("upstream said {XSS} {XSS_ATTR}")),
            ),
        ],
    }
}

struct App {
    router: Router,
    store: Arc<dyn Store>,
}

async fn app(token: Option<&str>) -> App {
    let mut registry = Registry::new();
    registry.register(Echo);
    let src = crate::load::parse_source(std::path::Path::new("t.yaml"), PLAYBOOK.into())
        .unwrap_or_else(|d| panic!("{d:?}"));
    let bundle =
        crate::compile::compile_sources(&[src], &registry).unwrap_or_else(|d| panic!("{d:?}"));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let services = Services::new()
        .with_store(store.clone())
        .with_config(json!({"teams": {"soc": ["dana.analyst@acme.example", XSS_ATTR]}}));
    let engine = Arc::new(Engine::new(bundle, services));
    let run = hostile_run();
    store
        .start_runs(RunOrigin::Direct, std::slice::from_ref(&run))
        .await
        .unwrap();
    store.finish_run(&run).await.unwrap();
    let state = WebState::new(engine, token).expect("the web view starts");
    App {
        router: router(state),
        store,
    }
}

/// A case whose every event-derived field is hostile, with a hostile comment, assignee and
/// person on its timeline.
async fn hostile_case(store: &Arc<dyn Store>) -> CaseId {
    let playbook = |step: &str| {
        WriteMeta::new(
            Actor::Playbook {
                run_id: "run-1".into(),
                playbook: "triage".into(),
                step: step.into(),
            },
            Timestamp::now(),
        )
    };
    let mut new = NewCase::new(format!("Okta {XSS}"), Severity::High);
    new.description = format!("displayMessage: {XSS} {XSS_ATTR} {XSS_SQ}");
    new.tags.insert(format!("tag{XSS_ATTR}"));
    new.fields.insert(format!("field{XSS}"), json!(XSS_ATTR));
    new.fields.insert("nested".into(), json!({"k": XSS}));
    let mut ip = NewObservable::new(ObservableType::Ip, "203.0.113.45");
    ip.verdict = Some(Verdict::Malicious);
    ip.enrichment.insert(
        format!("prov{XSS}"),
        json!({"verdict": XSS_ATTR, "reason": XSS, "score": 97}),
    );
    ip.enrichment.insert("plain".into(), json!(XSS_SQ));
    new.observables = vec![
        NewObservable::new(ObservableType::User, "<script>alert(4)</script>"),
        ip,
    ];
    new.sla_due_at = Some(Timestamp::now().add_millis(3_600_000));
    let id = store
        .create(new, &playbook("create"))
        .await
        .unwrap()
        .case
        .id;
    store
        .update(
            id,
            vec![
                CaseChange::AddComment(format!("comment {XSS} {XSS_ATTR}")),
                CaseChange::Assign(Some(XSS_SQ.into())),
            ],
            &playbook("note"),
        )
        .await
        .unwrap();
    store
        .update(
            id,
            vec![CaseChange::AddComment(format!("by a person {XSS}"))],
            &WriteMeta::new(
                Actor::Person {
                    name: format!("eve{XSS}"),
                },
                Timestamp::now(),
            ),
        )
        .await
        .unwrap();
    id
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = axum::body::to_bytes(r.into_body(), 1 << 22).await.unwrap();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path).header(HOST, "127.0.0.1:8080");
    if let Some(c) = cookie {
        b = b.header(COOKIE, format!("{}={c}", auth::SESSION_COOKIE));
    }
    b.body(Body::empty()).unwrap()
}

fn post(path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Request<Body> {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut b = Request::post(path)
        .header(HOST, "127.0.0.1:8080")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(COOKIE, format!("{}={c}", auth::SESSION_COOKIE));
    }
    b.body(Body::from(body)).unwrap()
}

/// The session cookie a response sets, with its attributes.
fn set_cookie(r: &Resp) -> Option<String> {
    r.headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(auth::SESSION_COOKIE))
        .map(str::to_string)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap()
}

/// A logged-in session cookie and its CSRF token.
async fn login(app: &App, token: Option<&str>) -> (String, String) {
    let r = send(&app.router, get("/login", None)).await;
    let anon = cookie_value(&set_cookie(&r).expect("an anonymous session"));
    let csrf = csrf_of(&r.body);
    let r = send(
        &app.router,
        post(
            "/login",
            Some(&anon),
            &[
                ("csrf", &csrf),
                ("token", token.unwrap_or("")),
                ("name", "dana.analyst@acme.example"),
                ("next", "/"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let c = cookie_value(&set_cookie(&r).expect("a session"));
    let r = send(&app.router, get("/", Some(&c))).await;
    assert_eq!(r.status, StatusCode::OK);
    (c, csrf_of(&r.body))
}

fn csrf_of(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..].split('"').next().unwrap().to_string()
}

/// Nothing hostile made it into the page as markup.
fn assert_inert(path: &str, body: &str) {
    for raw in [
        "<script>alert",
        "<img src=x",
        "<svg/onload",
        "<b>bold</b>",
        "onerror=alert(2)>",
    ] {
        assert!(!body.contains(raw), "{path}: `{raw}` unescaped in:\n{body}");
    }
    // The one script tag is the page's own.
    assert!(
        body.matches("<script").count() <= 1,
        "{path}: a script tag other than the page's own"
    );
    if body.contains("<script") {
        assert!(body.contains("<script src=\"/assets/app.js?v="), "{path}");
    }
}

#[tokio::test]
async fn every_event_derived_string_is_escaped_on_every_page() {
    let app = app(Some(TOKEN)).await;
    let id = hostile_case(&app.store).await;
    let (c, _) = login(&app, Some(TOKEN)).await;
    let pages = [
        "/".to_string(),
        "/?state=all".to_string(),
        format!("/cases/{id}"),
        "/runs".to_string(),
        "/runs/run-1".to_string(),
        "/playbooks".to_string(),
        "/playbooks/triage".to_string(),
        "/login".to_string(),
    ];
    for p in &pages {
        let r = send(&app.router, get(p, Some(&c))).await;
        assert_eq!(r.status, StatusCode::OK, "{p}: {}", r.body);
        assert_inert(p, &r.body);
    }
    let case = send(&app.router, get(&format!("/cases/{id}"), Some(&c)))
        .await
        .body;
    // Each hostile field is there, as text.
    let esc = "&lt;script&gt;alert(1)&lt;&#x2f;script&gt;";
    for needle in [
        format!("Okta {esc}"),                                 // title
        format!("displayMessage: {esc}"),                      // description
        format!("comment {esc}"),                              // comment (by a playbook)
        format!("by a person {esc}"),                          // comment (by a person)
        format!("eve{esc}"),                                   // a person's name
        "&lt;script&gt;alert(4)&lt;&#x2f;script&gt;".into(),   // user observable
        format!("prov{esc}"),                                  // enrichment provider
        "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;".into(), // enrichment verdict, field value
        format!("field{esc}"),                                 // custom field name
        "tag&quot;&gt;&lt;img".into(),                         // tag
        "&#x27;&gt;&lt;svg&#x2f;onload=alert(3)&gt;".into(),   // assignee
    ] {
        assert!(
            case.contains(&needle),
            "missing `{needle}` in the case page:\n{case}"
        );
    }
    let run = send(&app.router, get("/runs/run-1", Some(&c))).await.body;
    assert!(
        run.contains(&format!("upstream said {esc}")),
        "step error in the table"
    );
    assert!(
        run.contains("upstream said &lt;script&gt;alert(1)&lt;/script&gt;"),
        "step error in the graph tooltip"
    );
    assert!(
        run.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "the graph is drawn"
    );
    let queue = send(&app.router, get("/", Some(&c))).await.body;
    assert!(queue.contains(&format!("Okta {esc}")));
}

#[tokio::test]
async fn every_response_carries_the_csp() {
    let app = app(Some(TOKEN)).await;
    let id = hostile_case(&app.store).await;
    let (c, csrf) = login(&app, Some(TOKEN)).await;
    let mut reqs = vec![
        get("/", Some(&c)),
        get(&format!("/cases/{id}"), Some(&c)),
        get("/cases/CASE-999999", Some(&c)),
        get("/runs", Some(&c)),
        get("/runs/run-1", Some(&c)),
        get("/runs/nope", Some(&c)),
        get("/playbooks", Some(&c)),
        get("/playbooks/triage", Some(&c)),
        get("/login", None),
        get("/", None),
        get("/assets/app.js", None),
        get("/assets/app.css", None),
        get("/assets/nope.js", None),
        post(&format!("/cases/{id}/comment"), Some(&c), &[("text", "x")]),
    ];
    reqs.push(post(
        &format!("/cases/{id}/comment"),
        Some(&c),
        &[("csrf", &csrf), ("text", "hello")],
    ));
    for req in reqs {
        let what = format!("{} {}", req.method(), req.uri());
        let r = send(&app.router, req).await;
        assert_eq!(
            r.headers
                .get(CONTENT_SECURITY_POLICY)
                .and_then(|v| v.to_str().ok()),
            Some(CSP),
            "{what} ({})",
            r.status
        );
        assert_eq!(
            r.headers.get("x-content-type-options").unwrap(),
            "nosniff",
            "{what}"
        );
        assert_eq!(r.headers.get("x-frame-options").unwrap(), "DENY", "{what}");
    }
    assert!(CSP.contains("script-src 'self'") && !CSP.contains("unsafe-inline"));
    assert!(CSP.contains("frame-ancestors 'none'"));
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_without_the_token() {
    let app = app(Some(TOKEN)).await;
    // Not logged in: pages send you to the login form, and back afterwards.
    let r = send(&app.router, get("/runs?playbook=triage", None)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers.get(LOCATION).unwrap(),
        "/login?next=%2Fruns%3Fplaybook%3Dtriage"
    );
    let r = send(&app.router, get("/login?next=%2Fruns", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("name=\"token\""));
    let anon_set = set_cookie(&r).unwrap();
    let anon = cookie_value(&anon_set);
    let csrf = csrf_of(&r.body);
    // An anonymous session does not open pages.
    let r = send(&app.router, get("/", Some(&anon))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    // A wrong token: 401, no session.
    let r = send(
        &app.router,
        post(
            "/login",
            Some(&anon),
            &[("csrf", &csrf), ("token", "wrong"), ("name", "x")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("wrong token"));
    assert!(set_cookie(&r).is_none());
    // The right token without the CSRF token: 403.
    let r = send(
        &app.router,
        post("/login", Some(&anon), &[("token", TOKEN)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = send(
        &app.router,
        post(
            "/login",
            Some(&anon),
            &[
                ("csrf", &csrf),
                ("token", TOKEN),
                ("name", "dana"),
                ("next", "/runs"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers.get(LOCATION).unwrap(), "/runs");
    let set = set_cookie(&r).unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(
            set.split("; ").any(|a| a == flag),
            "{flag} missing from `{set}`"
        );
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP: a Secure cookie would never come back"
    );
    let value = cookie_value(&set);
    assert_ne!(value, anon, "a new session at login");
    for part in TOKEN.split(' ') {
        assert!(!value.contains(part), "the cookie must not carry the token");
    }
    let r = send(&app.router, get("/runs", Some(&value))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains(">dana<"));

    // Behind TLS the cookie is Secure too.
    let r = send(&app.router, get("/login", None)).await;
    let anon = cookie_value(&set_cookie(&r).unwrap());
    let csrf = csrf_of(&r.body);
    let mut req = post("/login", Some(&anon), &[("csrf", &csrf), ("token", TOKEN)]);
    req.headers_mut()
        .insert("x-forwarded-proto", "https".parse().unwrap());
    let r = send(&app.router, req).await;
    assert!(set_cookie(&r).unwrap().ends_with("; Secure"));

    // Open redirects are refused.
    let r = send(&app.router, get("/login", None)).await;
    let anon = cookie_value(&set_cookie(&r).unwrap());
    let csrf = csrf_of(&r.body);
    let r = send(
        &app.router,
        post(
            "/login",
            Some(&anon),
            &[
                ("csrf", &csrf),
                ("token", TOKEN),
                ("next", "//evil.example/x"),
            ],
        ),
    )
    .await;
    assert_eq!(r.headers.get(LOCATION).unwrap(), "/");

    // Logging out clears the cookie.
    let r = send(&app.router, get("/", Some(&value))).await;
    let csrf = csrf_of(&r.body);
    let r = send(
        &app.router,
        post("/logout", Some(&value), &[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(set_cookie(&r).unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn changes_without_the_right_csrf_token_are_refused() {
    let app = app(Some(TOKEN)).await;
    let id = hostile_case(&app.store).await;
    let (c, csrf) = login(&app, Some(TOKEN)).await;
    let (other, other_csrf) = login(&app, Some(TOKEN)).await;
    assert_ne!(csrf, other_csrf);
    let before = app.store.get(id).await.unwrap().unwrap();
    let path = format!("/cases/{id}/state");
    for (what, req) in [
        ("no token", post(&path, Some(&c), &[("to", "in_progress")])),
        (
            "a wrong token",
            post(&path, Some(&c), &[("to", "in_progress"), ("csrf", "00ff")]),
        ),
        (
            "another session's token",
            post(
                &path,
                Some(&c),
                &[("to", "in_progress"), ("csrf", &other_csrf)],
            ),
        ),
        (
            "no session",
            post(&path, None, &[("to", "in_progress"), ("csrf", &csrf)]),
        ),
        (
            "an empty token",
            post(
                &format!("/cases/{id}/comment"),
                Some(&other),
                &[("text", "hi"), ("csrf", "")],
            ),
        ),
    ] {
        let r = send(&app.router, req).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.body);
    }
    // Another site's form, even with the token.
    let mut req = post(&path, Some(&c), &[("to", "in_progress"), ("csrf", &csrf)]);
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(send(&app.router, req).await.status, StatusCode::FORBIDDEN);
    // Not a form.
    let req = Request::post(&path)
        .header(HOST, "127.0.0.1:8080")
        .header(COOKIE, format!("{}={c}", auth::SESSION_COOKIE))
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(format!("{{\"csrf\":\"{csrf}\"}}")))
        .unwrap();
    assert_eq!(
        send(&app.router, req).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(app.store.get(id).await.unwrap().unwrap(), before);

    // Forms are small.
    let big = "x".repeat(FORM_LIMIT + 1);
    let r = send(
        &app.router,
        post(
            &format!("/cases/{id}/comment"),
            Some(&c),
            &[("csrf", &csrf), ("text", &big)],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.store.get(id).await.unwrap().unwrap(), before);

    // Same-origin, with the token: accepted.
    let mut req = post(&path, Some(&c), &[("to", "in_progress"), ("csrf", &csrf)]);
    req.headers_mut()
        .insert("origin", "http://127.0.0.1:8080".parse().unwrap());
    let r = send(&app.router, req).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

#[tokio::test]
async fn actions_are_a_persons_case_changes() {
    let app = app(Some(TOKEN)).await;
    let id = hostile_case(&app.store).await;
    let (c, csrf) = login(&app, Some(TOKEN)).await;
    let page = format!("/cases/{id}");
    let dana = Actor::Person {
        name: "dana.analyst@acme.example".into(),
    };
    let r = send(
        &app.router,
        post(
            &format!("{page}/state"),
            Some(&c),
            &[("csrf", &csrf), ("to", "in_progress")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers.get(LOCATION).unwrap().to_str().unwrap(),
        format!("{page}?done=state")
    );
    let r = send(&app.router, get(&format!("{page}?done=state"), Some(&c))).await;
    assert!(r.body.contains("State changed."));
    assert!(r.body.contains("state-in_progress"));

    for (action, fields) in [
        ("assign", vec![("assignee", "eli.analyst@acme.example")]),
        ("severity", vec![("severity", "critical")]),
        ("comment", vec![("text", "  looked at it\nline two")]),
    ] {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields);
        let r = send(
            &app.router,
            post(&format!("{page}/{action}"), Some(&c), &form),
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{action}: {}", r.body);
    }
    let case = app.store.get(id).await.unwrap().unwrap();
    let by_dana: Vec<&str> = case
        .timeline
        .iter()
        .filter(|e| e.actor == dana)
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(
        by_dana,
        ["state_changed", "assigned", "severity_changed", "comment"]
    );
    // The case events playbooks trigger on, as a playbook's change would emit them.
    let events: Vec<(CaseEventKind, Actor)> = app
        .store
        .pending_events(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.case_id == id && e.actor == dana)
        .map(|e| (e.kind, e.actor))
        .collect();
    for kind in [
        CaseEventKind::StateChanged,
        CaseEventKind::Assigned,
        CaseEventKind::SeverityChanged,
        CaseEventKind::Updated,
    ] {
        assert!(events.iter().any(|(k, _)| *k == kind), "{kind} missing");
    }
    assert_eq!(case.state, crate::cases::CaseState::InProgress);
    assert_eq!(case.assignee.as_deref(), Some("eli.analyst@acme.example"));
    assert_eq!(case.severity, Severity::Critical);
    assert_eq!(case.comments.last().unwrap().text, "looked at it\nline two");
    assert_eq!(case.comments.last().unwrap().actor, dana);

    // A refused transition shows the page with the reason, 409, and changes nothing.
    let r = send(
        &app.router,
        post(
            &format!("{page}/state"),
            Some(&c),
            &[("csrf", &csrf), ("to", "new")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("cannot move"), "{}", r.body);
    assert!(
        !r.body.contains("data-refresh"),
        "no live refresh of a POST's URL"
    );
    // Resolving needs a reason.
    let r = send(
        &app.router,
        post(
            &format!("{page}/state"),
            Some(&c),
            &[("csrf", &csrf), ("to", "resolved")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("resolution reason"));
    let r = send(
        &app.router,
        post(
            &format!("{page}/comment"),
            Some(&c),
            &[("csrf", &csrf), ("text", "   ")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = send(
        &app.router,
        post(
            &format!("{page}/severity"),
            Some(&c),
            &[("csrf", &csrf), ("severity", "urgent")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.store.get(id).await.unwrap().unwrap().state,
        crate::cases::CaseState::InProgress
    );
    let r = send(
        &app.router,
        post(
            "/cases/CASE-999999/comment",
            Some(&c),
            &[("csrf", &csrf), ("text", "x")],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_a_token_no_login_but_loopback_names_only() {
    let app = app(None).await;
    let id = hostile_case(&app.store).await;
    let r = send(&app.router, get("/", None)).await;
    assert_eq!(r.status, StatusCode::OK, "no login");
    let c = cookie_value(&set_cookie(&r).expect("a session for the CSRF token"));
    assert!(r.body.contains(">local<"));
    assert!(!r.body.contains("Log out"));
    let r = send(&app.router, get(&format!("/cases/{id}"), Some(&c))).await;
    assert!(set_cookie(&r).is_none(), "the session is kept");
    let csrf = csrf_of(&r.body);
    // Changes still need the session's CSRF token.
    let path = format!("/cases/{id}/comment");
    let r = send(&app.router, post(&path, Some(&c), &[("text", "hi")])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &app.router,
        post(&path, None, &[("text", "hi"), ("csrf", &csrf)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &app.router,
        post(&path, Some(&c), &[("text", "hi"), ("csrf", &csrf)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // Picking a name.
    let r = send(
        &app.router,
        post("/login", Some(&c), &[("csrf", &csrf), ("name", "fay")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let c2 = cookie_value(&set_cookie(&r).unwrap());
    let r = send(&app.router, get("/", Some(&c2))).await;
    assert!(r.body.contains(">fay<"));
    // A page that rebinds its own name to 127.0.0.1 gets nothing.
    let req = Request::get("/")
        .header(HOST, "attacker.example:8080")
        .body(Body::empty())
        .unwrap();
    let r = send(&app.router, req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.body.contains("Okta"));
    let req = Request::get("/")
        .header(HOST, "localhost:8080")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app.router, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn links_from_other_sites_reload_once_to_send_the_cookie() {
    let app = app(Some(TOKEN)).await;
    let mut req = get("/cases/CASE-000001", None);
    req.headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    let r = send(&app.router, req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body
            .contains("data-bounce=\"&#x2f;cases&#x2f;CASE-000001\""),
        "{}",
        r.body
    );
    assert!(
        set_cookie(&r).is_none(),
        "the session the browser withheld is not replaced"
    );
}

#[tokio::test]
async fn the_queue_is_ordered_by_severity_then_sla() {
    let app = app(None).await;
    let store = &app.store;
    let meta = WriteMeta::new(Actor::System, Timestamp::now());
    let now = Timestamp::now();
    let mk = |title: &str, sev, due: Option<i64>| {
        let mut n = NewCase::new(title, sev);
        n.sla_due_at = due.map(|ms| now.add_millis(ms));
        n.tags.insert(if sev == Severity::Low {
            "low".into()
        } else {
            "iam".into()
        });
        n
    };
    let mut ids = Vec::new();
    for n in [
        mk("medium late", Severity::Medium, Some(7_200_000)),
        mk("high none", Severity::High, None),
        mk("high soon", Severity::High, Some(60_000)),
        mk("medium breached", Severity::Medium, Some(-60_000)),
        mk("high later", Severity::High, Some(3_600_000)),
        mk("low", Severity::Low, None),
    ] {
        ids.push(store.create(n, &meta).await.unwrap().case.id.to_string());
    }
    let r = send(&app.router, get("/", None)).await;
    let order: Vec<&str> = r
        .body
        .match_indices("data-case=\"")
        .map(|(i, _)| r.body[i + 11..].split('"').next().unwrap())
        .collect();
    let expect: Vec<&str> = [2, 4, 1, 3, 0, 5]
        .iter()
        .map(|&i| ids[i].as_str())
        .collect();
    assert_eq!(order, expect);
    assert!(r.body.contains("1 breached"));
    assert!(r.body.contains("breached 1m ago"));
    assert!(r.body.contains("data-due="), "countdowns for the script");
    assert!(r.body.contains("data-refresh=\"3\""), "auto-refresh");
    // Filters.
    let r = send(&app.router, get("/?severity=high", None)).await;
    assert_eq!(r.body.matches("data-case=").count(), 3);
    let r = send(&app.router, get("/?tag=low", None)).await;
    assert_eq!(r.body.matches("data-case=").count(), 1);
    let r = send(&app.router, get("/?assignee=unassigned&state=new", None)).await;
    assert_eq!(r.body.matches("data-case=").count(), 6);
    let r = send(&app.router, get("/?assignee=dana", None)).await;
    assert_eq!(r.body.matches("data-case=").count(), 0);
    let r = send(&app.router, get("/?state=bogus", None)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_playbooks_page_lists_triggers() {
    let app = app(None).await;
    let r = send(&app.router, get("/playbooks", None)).await;
    assert!(r.body.contains("triage"));
    assert!(r.body.contains("okta"));
    assert!(
        r.body
            .contains("event.eventType == &#x27;user.session.start&#x27;"),
        "{}",
        r.body
    );
    let r = send(&app.router, get("/playbooks/triage", None)).await;
    assert_eq!(r.body.matches("<g class=\"step plan\"").count(), 2);
    assert!(r.body.contains("/runs/run-1"), "recent runs");
    let r = send(&app.router, get("/playbooks/nope", None)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn assets_are_embedded_and_versioned() {
    let app = app(Some(TOKEN)).await;
    for (file, ctype) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = send(
            &app.router,
            get(&format!("/assets/{file}?v={}", assets::version()), None),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{file} without login");
        assert_eq!(r.headers.get(CONTENT_TYPE).unwrap(), ctype);
        assert!(r
            .headers
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("immutable"));
        assert!(!r.body.is_empty());
    }
    let js = send(&app.router, get("/assets/app.js", None)).await.body;
    assert!(
        !js.contains("innerHTML ="),
        "the script never writes HTML strings"
    );
    assert!(!js.contains("eval("));
}
