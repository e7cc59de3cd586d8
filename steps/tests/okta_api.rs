//! The Okta steps against a real HTTP server on 127.0.0.1 (wiremock) playing the Okta
//! Management API: pagination, VIP matching, error statuses, rate limits, retries,
//! timeouts, malformed bodies and the response actions.

#[path = "net_support.rs"]
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::ErrorKind;
use serde_json::{json, Value};
use support::{err, ok, run_step, run_step_report, step_of};
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "00aBcD-test-token-XyZ";
const GROUPS: &str = "/api/v1/users/jane@example.com/groups";

fn config(server: &MockServer, vip: &[&str]) -> Value {
    json!({
        "okta": {"url": server.uri(), "token": TOKEN, "vip_groups": vip},
        "http": {"allow_hosts": ["127.0.0.1"]},
    })
}

/// A Group object as Okta returns it (PROTOCOLS.md §3.2).
fn group(id: &str, name: &str, kind: &str) -> Value {
    json!({
        "id": id,
        "created": "2016-01-01T00:00:00.000Z",
        "lastUpdated": "2016-01-01T00:00:00.000Z",
        "lastMembershipUpdated": "2016-01-01T00:00:00.000Z",
        "objectClass": ["okta:user_group"],
        "type": kind,
        "profile": {"name": name, "description": null},
        "_links": {"users": {"href": format!("https://o.okta.com/api/v1/groups/{id}/users")}},
    })
}

fn okta_error(code: &str, summary: &str) -> Value {
    json!({"errorCode": code, "errorSummary": summary, "errorLink": code, "errorId": "oae123", "errorCauses": []})
}

fn user_groups() -> Value {
    json!({"user": "jane@example.com"})
}

/// Two pages, the second linked from the first; each request must carry the token.
async fn mount_two_pages(server: &MockServer) {
    let next = format!("{}{GROUPS}?after=00g2&limit=200", server.uri());
    Mock::given(method("GET"))
        .and(path(GROUPS))
        .and(query_param("limit", "200"))
        .and(query_param_is_missing("after"))
        .and(header("authorization", format!("SSWS {TOKEN}").as_str()))
        .and(header("accept", "application/json"))
        .respond_with(
            ResponseTemplate::new(200)
                .append_header(
                    "link",
                    format!("<{}{GROUPS}?limit=200>; rel=\"self\"", server.uri()).as_str(),
                )
                .append_header("link", format!("<{next}>; rel=\"next\"").as_str())
                .set_body_json(json!([
                    group("00g1", "Everyone", "BUILT_IN"),
                    group("00g2", "Engineering", "OKTA_GROUP"),
                ])),
        )
        .expect(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(GROUPS))
        .and(query_param("after", "00g2"))
        .and(header("authorization", format!("SSWS {TOKEN}").as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .append_header("link", format!("<{next}>; rel=\"self\"").as_str())
                .set_body_json(json!([group("00gEXEC", "Executives", "OKTA_GROUP")])),
        )
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn groups_are_read_across_link_pages_and_vip_matched_by_id() {
    let server = MockServer::start().await;
    mount_two_pages(&server).await;
    let step = run_step(
        "okta.user_groups",
        user_groups(),
        config(&server, &["00gEXEC"]),
    )
    .await;
    let out = ok(&step);
    assert_eq!(
        out["groups"],
        json!([
            {"id": "00g1", "name": "Everyone"},
            {"id": "00g2", "name": "Engineering"},
            {"id": "00gEXEC", "name": "Executives"},
        ])
    );
    assert_eq!(out["is_vip"], true);
    assert_eq!(out["vip_groups"], json!(["Executives"]));
    assert_eq!(out["offline"], false);
}

#[tokio::test]
async fn vip_falls_back_to_the_group_name_and_no_match_is_not_vip() {
    let server = MockServer::start().await;
    mount_two_pages(&server).await;
    let by_name = run_step(
        "okta.user_groups",
        user_groups(),
        config(&server, &["executives"]),
    )
    .await;
    assert_eq!(ok(&by_name)["vip_groups"], json!(["Executives"]));

    let server = MockServer::start().await;
    mount_two_pages(&server).await;
    let none = run_step(
        "okta.user_groups",
        user_groups(),
        config(&server, &["00gBOARD"]),
    )
    .await;
    assert_eq!(ok(&none)["is_vip"], false);
    assert_eq!(ok(&none)["vip_groups"], json!([]));
}

#[tokio::test]
async fn unauthorized_is_a_permanent_error_with_okta_summary_and_no_token() {
    let server = MockServer::start().await;
    Mock::given(path(GROUPS))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(okta_error("E0000011", "Invalid token provided")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let report = run_step_report(
        "okta.user_groups",
        user_groups(),
        config(&server, &[]),
        json!({"retry": {"attempts": 3, "backoff": "10ms"}}),
    )
    .await;
    let step = step_of(report);
    let e = err(&step);
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert_eq!(step.attempts, 1, "a permanent error is not retried");
    assert!(e.message.contains("401 Unauthorized"), "{}", e.message);
    assert!(
        e.message.contains("Invalid token provided (E0000011)"),
        "{}",
        e.message
    );
    assert!(e.message.contains("check `okta.token`"), "{}", e.message);
    assert!(!e.message.contains(TOKEN));
}

#[tokio::test]
async fn forbidden_and_not_found_are_permanent_and_say_why() {
    let server = MockServer::start().await;
    Mock::given(path(GROUPS))
        .respond_with(ResponseTemplate::new(403).set_body_json(okta_error(
            "E0000006",
            "You do not have permission to perform the requested action",
        )))
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/users/ghost@example.com/groups"))
        .respond_with(ResponseTemplate::new(404).set_body_json(okta_error(
            "E0000007",
            "Not found: Resource not found: ghost@example.com (User)",
        )))
        .mount(&server)
        .await;
    let forbidden = run_step("okta.user_groups", user_groups(), config(&server, &[])).await;
    let e = err(&forbidden);
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.message.contains("403 Forbidden") && e.message.contains("E0000006"),
        "{}",
        e.message
    );

    let missing = run_step(
        "okta.user_groups",
        json!({"user": "ghost@example.com"}),
        config(&server, &[]),
    )
    .await;
    let e = err(&missing);
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert_eq!(
        e.message,
        "okta: GET /api/v1/users/ghost@example.com/groups returned 404 Not Found: Not found: Resource not found: ghost@example.com (User) (E0000007)"
    );
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn rate_limit_waits_for_the_reset_then_succeeds() {
    let server = MockServer::start().await;
    let reset = epoch_secs() + 2;
    Mock::given(path(GROUPS))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("x-rate-limit-limit", "50")
                .insert_header("x-rate-limit-remaining", "0")
                .insert_header("x-rate-limit-reset", reset.to_string().as_str())
                .insert_header("x-okta-request-id", "req-429")
                .set_body_json(okta_error(
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                )),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(GROUPS))
        .and(header("x-okta-retry-for", "req-429"))
        .and(header("x-okta-retry-count", "1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([group("00g1", "Everyone", "BUILT_IN")])),
        )
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let step = run_step("okta.user_groups", user_groups(), config(&server, &[])).await;
    let waited = started.elapsed();
    assert_eq!(ok(&step)["groups"][0]["name"], "Everyone");
    assert_eq!(step.attempts, 1, "the wait happens inside the attempt");
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
}

#[tokio::test]
async fn a_rate_limit_reset_too_far_away_is_a_retryable_error_at_once() {
    let server = MockServer::start().await;
    Mock::given(path(GROUPS))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header(
                    "x-rate-limit-reset",
                    (epoch_secs() + 3600).to_string().as_str(),
                )
                .set_body_json(okta_error(
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                )),
        )
        .mount(&server)
        .await;
    let started = Instant::now();
    let step = run_step("okta.user_groups", user_groups(), config(&server, &[])).await;
    let e = err(&step);
    assert_eq!(e.kind, ErrorKind::Retryable);
    assert!(e.message.contains("rate_limit_max_wait"), "{}", e.message);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn server_errors_are_retried_by_the_step_retry_policy() {
    let server = MockServer::start().await;
    Mock::given(path(GROUPS))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream unavailable"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(GROUPS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([group(
            "00gEXEC",
            "Executives",
            "OKTA_GROUP"
        )])))
        .expect(1)
        .mount(&server)
        .await;
    let report = run_step_report(
        "okta.user_groups",
        user_groups(),
        config(&server, &["00gEXEC"]),
        json!({"retry": {"attempts": 3, "backoff": "10ms"}}),
    )
    .await;
    let step = step_of(report);
    assert_eq!(ok(&step)["is_vip"], true);
    assert_eq!(step.attempts, 2);
}

#[tokio::test]
async fn a_server_error_without_retry_fails_retryable() {
    let server = MockServer::start().await;
    Mock::given(path(GROUPS))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(okta_error("E0000009", "Internal Server Error")),
        )
        .mount(&server)
        .await;
    let step = run_step("okta.user_groups", user_groups(), config(&server, &[])).await;
    let e = err(&step);
    assert_eq!(e.kind, ErrorKind::Retryable);
    assert!(
        e.message.contains("500 Internal Server Error"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let server = MockServer::start().await;
    Mock::given(path(GROUPS))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let mut cfg = config(&server, &[]);
    cfg["http"]["timeout"] = json!("300ms");
    let started = Instant::now();
    let step = run_step("okta.user_groups", user_groups(), cfg).await;
    let e = err(&step);
    assert_eq!(e.kind, ErrorKind::Timeout, "{}", e.message);
    assert!(e.message.contains("timed out"), "{}", e.message);
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn malformed_json_is_a_clear_permanent_error() {
    let server = MockServer::start().await;
    Mock::given(path(GROUPS))
        .respond_with(
            ResponseTemplate::new(200).set_body_string("[{\"id\": \"00g1\", \"profile\": {"),
        )
        .mount(&server)
        .await;
    let step = run_step("okta.user_groups", user_groups(), config(&server, &[])).await;
    let e = err(&step);
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("not a list of groups"), "{}", e.message);
}

#[tokio::test]
async fn a_next_link_to_another_host_is_not_followed() {
    let server = MockServer::start().await;
    Mock::given(path(GROUPS))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("link", "<https://evil.example/steal?after=x>; rel=\"next\"")
                .set_body_json(json!([group("00g1", "Everyone", "BUILT_IN")])),
        )
        .mount(&server)
        .await;
    let step = run_step("okta.user_groups", user_groups(), config(&server, &[])).await;
    let e = err(&step);
    assert!(e.message.contains("outside the Okta org"), "{}", e.message);
    assert!(e.message.contains("https://evil.example/steal") && !e.message.contains("after=x"));
}

#[tokio::test]
async fn the_okta_url_passes_the_outbound_guard() {
    let server = MockServer::start().await;
    let cfg = json!({"okta": {"url": server.uri(), "token": TOKEN}});
    let step = run_step("okta.user_groups", user_groups(), cfg).await;
    let e = err(&step);
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.message
            .contains("destination not allowed: `127.0.0.1` is a loopback address"),
        "{}",
        e.message
    );
    assert!(server
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty());
}

#[tokio::test]
async fn a_url_without_a_token_is_a_config_error() {
    let cfg = json!({"okta": {"url": "https://example.okta.com"}});
    let step = run_step("okta.user_groups", user_groups(), cfg).await;
    assert_eq!(
        err(&step).message,
        "config `okta.token` is required when `okta.url` is set"
    );
}

#[tokio::test]
async fn suspend_posts_the_lifecycle_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/users/00u1/lifecycle/suspend"))
        .and(header("authorization", format!("SSWS {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    let step = run_step(
        "okta.suspend_user",
        json!({"user": "00u1"}),
        config(&server, &[]),
    )
    .await;
    assert_eq!(
        ok(&step),
        &json!({"user": "00u1", "action": "suspend", "offline": false})
    );
}

#[tokio::test]
async fn suspending_a_suspended_user_succeeds_and_says_so() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/users/00u1/lifecycle/suspend"))
        .respond_with(ResponseTemplate::new(400).set_body_json(okta_error(
            "E0000001",
            "Api validation failed: Cannot suspend a user that is not active",
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/users/00u1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "00u1", "status": "SUSPENDED"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/users/00u2/lifecycle/suspend"))
        .respond_with(ResponseTemplate::new(400).set_body_json(okta_error(
            "E0000001",
            "Api validation failed: Cannot suspend a user that is not active",
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/users/00u2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "00u2", "status": "STAGED"})),
        )
        .mount(&server)
        .await;
    let already = run_step(
        "okta.suspend_user",
        json!({"user": "00u1"}),
        config(&server, &[]),
    )
    .await;
    assert_eq!(ok(&already)["already"], true);
    let staged = run_step(
        "okta.suspend_user",
        json!({"user": "00u2"}),
        config(&server, &[]),
    )
    .await;
    let e = err(&staged);
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.message.contains("400 Bad Request") && e.message.contains("not active"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn clear_sessions_deletes_sessions_and_optionally_oauth_tokens() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/users/00u1/sessions"))
        .and(query_param("oauthTokens", "true"))
        .and(header("authorization", format!("SSWS {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let step = run_step(
        "okta.clear_sessions",
        json!({"user": "00u1", "oauth_tokens": true}),
        config(&server, &[]),
    )
    .await;
    assert_eq!(
        ok(&step),
        &json!({"user": "00u1", "action": "clear_sessions", "offline": false, "oauth_tokens": true})
    );

    let missing = run_step(
        "okta.clear_sessions",
        json!({"user": "00u9"}),
        config(&server, &[]),
    )
    .await;
    assert_eq!(err(&missing).kind, ErrorKind::Permanent);
}

#[tokio::test]
async fn a_login_with_reserved_characters_stays_one_path_segment() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v1/users/a%2Fb%3Fc/groups"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(1)
        .mount(&server)
        .await;
    let step = run_step(
        "okta.user_groups",
        json!({"user": "a/b?c"}),
        config(&server, &[]),
    )
    .await;
    assert_eq!(ok(&step)["groups"], json!([]));
}
