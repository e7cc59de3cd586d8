//! The `notify` step and delivery from the outbox to Slack and a webhook on 127.0.0.1
//! (wiremock): recipients, idempotency, 429 `Retry-After`, 5xx then success through
//! `deliver_pending`, 4xx not retried, `Idempotency-Key`, and the secret URL kept out of
//! errors, outputs, the outbox and logs.

#[path = "support/logs.rs"]
mod logs;
#[path = "support/cases.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::notify::{DeliveryStatus, Outbox};
use engine::step::Clock;
use engine::ErrorKind;
use serde_json::{json, Value};
use steps::notify::{deliver_pending, Deliverer};
use support::Harness;
use wiremock::matchers::{body_partial_json, body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SLACK_PATH: &str = "/services/T0001/B0002/XoXsEcReTtOkEn42";
const TOKEN: &str = "XoXsEcReTtOkEn42";

fn slack_config(server: &MockServer) -> Value {
    json!({
        "http": {"allow_hosts": ["127.0.0.1"]},
        "teams": {"soc": ["a@x", "b@x"]},
        "notify": {
            "channels": ["console", "outbox", "slack"],
            "slack": {"webhook_url": format!("{}{SLACK_PATH}", server.uri())},
            "delivery": {"attempts": 2, "backoff": "10ms", "max_retry_after": "5s"},
        },
    })
}

fn message() -> Value {
    json!({"to": ["team:soc", "", null, "a@x"], "subject": "CASE-000001 assigned",
        "message": "VIP login", "case": "CASE-000001"})
}

fn slack_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_string("ok")
}

/// The step's error for one channel ("" when there is none).
fn error_of<'a>(out: &'a Value, channel: &str) -> &'a str {
    out["errors"][channel].as_str().unwrap_or_default()
}

async fn status_of(outbox: &Outbox, id: &str, channel: &str) -> Option<DeliveryStatus> {
    outbox
        .delivery(id, channel)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|d| d.status)
}

#[tokio::test]
async fn teams_expand_and_empty_recipients_fail() {
    let h = Harness::new(json!({"teams": {"soc": ["a@x", "b@x"]}}));
    let out = h.ok("notify", message()).await;
    assert_eq!(out["to"], json!(["a@x", "b@x"]));
    assert_eq!(out["delivered"], json!({"console": true, "outbox": true}));
    let e = h
        .err("notify", json!({"to": ["", null], "subject": "s"}))
        .await;
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("no recipients"), "{}", e.message);
    let e = h
        .err("notify", json!({"to": ["team:nobody"], "subject": "s"}))
        .await;
    assert!(e.message.contains("no team `nobody`"), "{}", e.message);
}

#[tokio::test]
async fn unknown_or_unconfigured_channels_fail_before_anything_is_queued() {
    let h = Harness::new(json!({}));
    let e = h
        .err(
            "notify",
            json!({"to": ["a@x"], "subject": "s", "channels": ["slack", "email", "pager"]}),
        )
        .await;
    assert_eq!(e.kind, ErrorKind::Permanent);
    for needle in [
        "needs config `notify.slack.webhook_url`",
        "channel `email` needs config `notify.smtp`",
        "unknown channel `pager`",
    ] {
        assert!(e.message.contains(needle), "{needle}: {}", e.message);
    }
    assert!(h.outbox.sent().is_empty());
}

#[tokio::test]
async fn the_same_run_and_step_is_sent_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SLACK_PATH))
        .respond_with(slack_ok())
        // run-a once (its re-run sends nothing), run-b once.
        .expect(2)
        .mount(&server)
        .await;
    let h = Harness::new(slack_config(&server));
    let first = h
        .run_as("run-a", "notify", message())
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let again = h
        .run_as("run-a", "notify", message())
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(first["id"], "run-a:s");
    assert_eq!(first["queued"], true);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["queued"], false);
    assert_eq!(again["delivered"]["slack"], true);
    assert_eq!(h.outbox.sent().len(), 1);
    let other = h
        .run_as("run-b", "notify", message())
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(other["queued"], true);
    assert_eq!(h.outbox.sent().len(), 2);
}

#[tokio::test]
async fn slack_happy_path() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SLACK_PATH))
        .and(header("content-type", "application/json"))
        .and(body_string_contains("*CASE-000001 assigned*\\nVIP login"))
        .respond_with(slack_ok())
        .expect(1)
        .mount(&server)
        .await;
    let h = Harness::new(slack_config(&server));
    let out = h.ok("notify", message()).await;
    assert_eq!(
        out["delivered"],
        json!({"console": true, "outbox": true, "slack": true})
    );
    assert!(out.get("errors").is_none(), "{out:#}");
    let id = out["id"].as_str().unwrap_or_default();
    assert_eq!(
        status_of(&h.outbox, id, "slack").await,
        Some(DeliveryStatus::Delivered)
    );
    assert!(h
        .outbox
        .pending(steps::notify::config::is_network)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
}

#[tokio::test]
async fn slack_429_waits_for_retry_after_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(path(SLACK_PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_string("rate_limited"),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(SLACK_PATH))
        .respond_with(slack_ok())
        .expect(1)
        .mount(&server)
        .await;
    let h = Harness::new(slack_config(&server));
    let started = Instant::now();
    let out = h.ok("notify", message()).await;
    assert_eq!(out["delivered"]["slack"], true, "{out:#}");
    // The second request waited for the server's Retry-After, not the 10ms backoff.
    assert!(started.elapsed() >= Duration::from_secs(1));
    let id = out["id"].as_str().unwrap_or_default();
    let d = h
        .outbox
        .delivery(id, "slack")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d.map(|d| (d.status, d.attempts)),
        Some((DeliveryStatus::Delivered, 2))
    );
}

#[tokio::test]
async fn a_long_retry_after_is_left_to_a_later_pass() {
    let server = MockServer::start().await;
    Mock::given(path(SLACK_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .expect(1)
        .mount(&server)
        .await;
    let h = Harness::new(slack_config(&server));
    let out = h.ok("notify", message()).await;
    assert_eq!(out["delivered"]["slack"], false);
    assert!(error_of(&out, "slack").contains("HTTP 429"), "{out:#}");
    // The next pass does not knock before the hour is up (on the engine's clock).
    let deliverer = Deliverer::from_config(&h.config).unwrap_or_else(|e| panic!("{e}"));
    h.clock.advance(Duration::from_secs(3599));
    let report = deliverer.deliver_pending(&h.outbox, h.clock.now()).await;
    assert_eq!((report.waiting, report.delivered), (1, 0));
    // After it, the pass sends again.
    server.reset().await;
    Mock::given(path(SLACK_PATH))
        .respond_with(slack_ok())
        .expect(1)
        .mount(&server)
        .await;
    h.clock.advance(Duration::from_secs(2));
    let report = deliverer.deliver_pending(&h.outbox, h.clock.now()).await;
    assert_eq!((report.waiting, report.delivered), (0, 1));
}

#[tokio::test]
async fn slack_5xx_is_delivered_by_a_later_pass_from_the_store() {
    let server = MockServer::start().await;
    Mock::given(path(SLACK_PATH))
        .respond_with(ResponseTemplate::new(500).set_body_string("rollup_error"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path(SLACK_PATH))
        .respond_with(slack_ok())
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut h = Harness::new(slack_config(&server));
    let store: Arc<dyn engine::persist::Store> =
        Arc::new(engine::persist::SledStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
    h.outbox = Arc::new(Outbox::in_store(store.clone()));
    let out = h.ok("notify", message()).await;
    // Slack being down does not fail the step.
    assert_eq!(out["delivered"]["slack"], false);
    assert_eq!(out["delivered"]["outbox"], true);
    assert!(
        error_of(&out, "slack").contains("HTTP 500 `rollup_error`"),
        "{out:#}"
    );
    // Another outbox on the store (engine serve's retry) delivers it.
    let later = Outbox::in_store(store);
    let report = deliver_pending(&later, &h.config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.delivered, report.failed), (1, 0));
    let id = out["id"].as_str().unwrap_or_default();
    let d = later
        .delivery(id, "slack")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        d.map(|d| (d.status, d.attempts)),
        Some((DeliveryStatus::Delivered, 3))
    );
    // Nothing left: a third pass sends nothing.
    let report = deliver_pending(&later, &h.config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report, Default::default());
}

#[tokio::test]
async fn slack_4xx_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path(SLACK_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_string("invalid_payload"))
        .expect(1)
        .mount(&server)
        .await;
    let h = Harness::new(slack_config(&server));
    let out = h.ok("notify", message()).await;
    assert_eq!(out["delivered"]["slack"], false);
    assert!(
        error_of(&out, "slack").contains("HTTP 400 `invalid_payload`"),
        "{out:#}"
    );
    let id = out["id"].as_str().unwrap_or_default();
    assert_eq!(
        status_of(&h.outbox, id, "slack").await,
        Some(DeliveryStatus::Rejected)
    );
    let report = deliver_pending(&h.outbox, &h.config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report, Default::default());
}

#[tokio::test]
async fn webhook_posts_the_notification_with_an_idempotency_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .and(header("Idempotency-Key", "run-w:s"))
        .and(header("Authorization", "Bearer wh-token-77"))
        .and(body_partial_json(json!({
            "id": "run-w:s", "to": ["a@x", "b@x"], "subject": "CASE-000001 assigned",
            "case": "CASE-000001", "channels": ["webhook"], "playbook": "t", "step": "s"
        })))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let config = json!({
        "http": {"allow_hosts": ["127.0.0.1"]},
        "teams": {"soc": ["a@x", "b@x"]},
        "notify": {"webhook": {"url": format!("{}/hook", server.uri()),
            "headers": {"Authorization": "Bearer wh-token-77"}}},
    });
    let h = Harness::new(config);
    let mut with = message();
    with["channels"] = json!(["webhook"]);
    let out = h
        .run_as("run-w", "notify", with)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(out["delivered"], json!({"webhook": true}), "{out:#}");
}

#[tokio::test]
async fn the_secret_url_never_reaches_errors_outputs_the_outbox_or_logs() {
    let (logs, _guard) = logs::capture();

    let server = MockServer::start().await;
    Mock::given(path(SLACK_PATH))
        .respond_with(ResponseTemplate::new(404).set_body_string("no_service"))
        .expect(1)
        .mount(&server)
        .await;
    let mut texts = Vec::new();
    // Refused by the guard (no allow list), a 404, and a closed port.
    let refused =
        json!({"notify": {"slack": {"webhook_url": format!("{}{SLACK_PATH}", server.uri())}}});
    let closed = json!({"http": {"allow_hosts": ["127.0.0.1"]},
        "notify": {"slack": {"webhook_url": format!("http://127.0.0.1:1{SLACK_PATH}")},
                   "delivery": {"attempts": 1}}});
    for config in [refused, slack_config(&server), closed] {
        let h = Harness::new(config.clone());
        let mut with = message();
        with["to"] = json!(["a@x"]);
        with["channels"] = json!(["slack"]);
        let out = h.ok("notify", with).await;
        assert_eq!(out["delivered"]["slack"], false, "{out:#}");
        texts.push(out.to_string());
        let again = deliver_pending(&h.outbox, &config)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        texts.push(format!("{again:?}"));
        let deliveries = h
            .outbox
            .deliveries()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        texts.push(serde_json::to_string(&deliveries).unwrap_or_default());
    }
    assert!(texts[0].contains("destination not allowed"), "{}", texts[0]);
    assert!(texts[3].contains("no_service"), "{}", texts[3]);
    let logs = logs.text();
    assert!(logs.contains("notification"), "tracing saw nothing: {logs}");
    for t in texts.iter().chain([&logs]) {
        assert!(!t.contains(TOKEN), "secret leaked: {t}");
    }
}

/// The "going live" example of `docs/configuration.md` parses for every section the steps
/// read (with its `${VAR}`s filled in).
#[test]
fn the_documented_live_config_is_valid() {
    let doc = include_str!("../../docs/configuration.md");
    let start = doc
        .find("## Example: going live")
        .and_then(|i| doc[i..].find("```yaml").map(|j| i + j + "```yaml".len()))
        .unwrap_or_else(|| panic!("no example"));
    let end = doc[start..]
        .find("```")
        .map(|j| start + j)
        .unwrap_or_else(|| panic!("unterminated example"));
    let mut config: Value =
        engine::load::yaml::from_str(&doc[start..end]).unwrap_or_else(|e| panic!("{e}"));
    let mut vars = Vec::new();
    engine::config::expand_env(&mut config, &mut vars);
    assert!(vars.contains(&"SLACK_WEBHOOK_URL".to_string()), "{vars:?}");
    // Stand-ins for the environment.
    config["okta"]["token"] = json!("t0ken");
    config["intel"]["abuseipdb"]["key"] = json!("k1234");
    config["intel"]["virustotal"]["key"] = json!("k5678");
    config["intel"]["greynoise"]["key"] = json!("k9012");
    config["notify"]["slack"]["webhook_url"] = json!("https://hooks.slack.com/services/T/B/x");
    steps::notify::NotifyConfig::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
    steps::intel::IntelConfig::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
    steps::okta::OktaConfig::from_config(&config).unwrap_or_else(|e| panic!("{e:?}"));
    steps::net::ClientConfig::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config["engine"]["max_depth"], 8);
    assert_eq!(config["teams"]["soc"].as_array().map(Vec::len), Some(3));
}
