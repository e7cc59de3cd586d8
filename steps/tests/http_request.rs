//! `http.request` against a real server on 127.0.0.1.

#[path = "net_support.rs"]
mod support;

use std::time::Duration;

use engine::ErrorKind;
use serde_json::{json, Value};
use support::{err, ok, run_step, run_step_report, step_of};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn allowed() -> Value {
    json!({"http": {"allow_hosts": ["127.0.0.1"]}})
}

#[tokio::test]
async fn posts_json_with_headers_query_and_idempotency_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/issues"))
        .and(query_param("project", "SEC"))
        .and(query_param("n", "3"))
        .and(header("x-team", "blue"))
        .and(header("idempotency-key", "run-test:s"))
        .and(body_json(json!({"title": "hi"})))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("x-id", "42")
                .insert_header("set-cookie", "session=abc")
                .set_body_json(json!({"id": 42})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let step = run_step(
        "http.request",
        json!({
            "method": "POST",
            "url": format!("{}/api/issues", server.uri()),
            "headers": {"X-Team": "blue"},
            "query": {"project": "SEC", "n": 3},
            "json": {"title": "hi"},
            "expect": [201],
        }),
        allowed(),
    )
    .await;
    let out = ok(&step);
    assert_eq!(out["status"], 201);
    assert_eq!(out["body"], json!({"id": 42}));
    assert_eq!(out["headers"]["x-id"], "42");
    assert!(out["headers"].get("set-cookie").is_none());
}

#[tokio::test]
async fn a_text_body_comes_back_as_text() {
    let server = MockServer::start().await;
    Mock::given(path("/t"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{not json"))
        .mount(&server)
        .await;
    let step = run_step(
        "http.request",
        json!({"url": format!("{}/t", server.uri())}),
        allowed(),
    )
    .await;
    assert_eq!(ok(&step)["body"], "{not json");
}

#[tokio::test]
async fn unexpected_statuses_fail_by_kind() {
    let server = MockServer::start().await;
    for (p, status) in [("/a", 404), ("/b", 429), ("/c", 502), ("/d", 200)] {
        Mock::given(path(p))
            .respond_with(ResponseTemplate::new(status).set_body_string("nope"))
            .mount(&server)
            .await;
    }
    let url = |p: &str| format!("{}{p}", server.uri());
    let e404 = run_step("http.request", json!({"url": url("/a")}), allowed()).await;
    assert_eq!(err(&e404).kind, ErrorKind::Permanent);
    assert!(
        err(&e404).message.contains("returned 404 Not Found: nope"),
        "{}",
        err(&e404).message
    );
    let e429 = run_step("http.request", json!({"url": url("/b")}), allowed()).await;
    assert_eq!(err(&e429).kind, ErrorKind::Retryable);
    let e502 = run_step("http.request", json!({"url": url("/c")}), allowed()).await;
    assert_eq!(err(&e502).kind, ErrorKind::Retryable);
    let not_expected = run_step(
        "http.request",
        json!({"url": url("/d"), "expect": [204]}),
        allowed(),
    )
    .await;
    assert_eq!(err(&not_expected).kind, ErrorKind::Permanent);
}

#[tokio::test]
async fn a_5xx_then_success_is_retried_with_the_same_idempotency_key() {
    let server = MockServer::start().await;
    Mock::given(path("/flaky"))
        .and(header("idempotency-key", "run-test:s"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/flaky"))
        .and(header("idempotency-key", "run-test:s"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .expect(1)
        .mount(&server)
        .await;
    let report = run_step_report(
        "http.request",
        json!({"method": "PUT", "url": format!("{}/flaky", server.uri())}),
        allowed(),
        json!({"retry": {"attempts": 3, "backoff": "10ms"}}),
    )
    .await;
    let step = step_of(report);
    assert_eq!(ok(&step)["body"], json!({"ok": true}));
    assert_eq!(step.attempts, 2);
}

#[tokio::test]
async fn a_slow_response_times_out() {
    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let config = json!({"http": {"allow_hosts": ["127.0.0.1"], "timeout": "300ms"}});
    let step = run_step(
        "http.request",
        json!({"url": format!("{}/slow?key=abc", server.uri())}),
        config,
    )
    .await;
    let e = err(&step);
    assert_eq!(e.kind, ErrorKind::Timeout, "{}", e.message);
    assert!(
        !e.message.contains("key=abc"),
        "the query stays out of errors: {}",
        e.message
    );
}

#[tokio::test]
async fn refused_destinations_are_never_contacted() {
    let server = MockServer::start().await;
    for url in [
        server.uri(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "file:///etc/passwd".to_string(),
    ] {
        let step = run_step("http.request", json!({"url": url}), json!({})).await;
        let e = err(&step);
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(
            e.message.contains("destination not allowed: "),
            "{}",
            e.message
        );
    }
    assert!(server
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty());
}

#[tokio::test]
async fn a_bad_url_or_header_is_invalid_input() {
    let bad_url = run_step("http.request", json!({"url": "not a url"}), allowed()).await;
    assert_eq!(err(&bad_url).kind, ErrorKind::InvalidInput);
    let bad_header = run_step(
        "http.request",
        json!({"url": "http://127.0.0.1:1/", "headers": {"bad header": "x"}}),
        allowed(),
    )
    .await;
    assert_eq!(err(&bad_header).kind, ErrorKind::InvalidInput);
}

/// Which `http.request` steps the engine may start without waiting for the run journal's
/// flush: as compiled from a playbook, a literal `GET` or `HEAD` (or no method: `GET`) reads;
/// any other method, or one a template chooses, may change something.
#[test]
fn gets_and_heads_are_reads_other_methods_have_effects() {
    let step = |id: &str, with: Value| json!({"id": id, "uses": "http.request", "with": with});
    let url = "https://api.example/x";
    let doc = json!({"playbook": "t", "on": {"event": "test"}, "steps": [
        step("default", json!({"url": url})),
        step("get", json!({"method": "GET", "url": url})),
        step("head", json!({"method": "HEAD", "url": url})),
        step("post", json!({"method": "POST", "url": url, "json": {}})),
        step("delete", json!({"method": "DELETE", "url": url})),
        step("templated", json!({"method": "{{ event.method }}", "url": url})),
    ]});
    let src =
        engine::load::parse_source(std::path::Path::new("t.yaml"), doc.to_string().into_bytes())
            .unwrap_or_else(|d| panic!("{d}"));
    let bundle = engine::compile::compile_sources(&[src], &support::registry())
        .unwrap_or_else(|ds| panic!("{}", ds.iter().map(|d| d.to_string()).collect::<String>()));
    let free: Vec<(&str, bool)> = bundle.playbooks[0]
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.effect_free))
        .collect();
    assert_eq!(
        free,
        [
            ("default", true),
            ("get", true),
            ("head", true),
            ("post", false),
            ("delete", false),
            ("templated", false)
        ]
    );
}
