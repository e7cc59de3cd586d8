//! A configured Okta token never reaches logs (at TRACE), errors, step outputs or reports,
//! while it is provably sent to Okta.

#[path = "support/logs.rs"]
mod logs;
#[path = "net_support.rs"]
mod support;

use serde_json::json;
use support::run_step_report;
use wiremock::matchers::{header, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "00SeCrEt-okta-token-4242";

#[tokio::test]
async fn the_token_never_appears_in_logs_errors_or_outputs() {
    let (logs, _guard) = logs::capture();

    let server = MockServer::start().await;
    let auth = format!("SSWS {TOKEN}");
    Mock::given(path("/api/v1/users/ok@example.com/groups"))
        .and(header("authorization", auth.as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([{"id": "00g1", "profile": {"name": "Everyone"}}])),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/users/bad@example.com/groups"))
        .and(header("authorization", auth.as_str()))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"errorCode": "E0000011", "errorSummary": "Invalid token provided"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v1/users/slow@example.com/groups"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let config = json!({
        "okta": {"url": server.uri(), "token": TOKEN, "vip_groups": ["00g1"]},
        "http": {"allow_hosts": ["127.0.0.1"]},
    });

    let mut reports = Vec::new();
    for user in ["ok@example.com", "bad@example.com", "slow@example.com"] {
        reports.push(
            run_step_report(
                "okta.user_groups",
                json!({"user": user}),
                config.clone(),
                json!({"retry": {"attempts": 2, "backoff": "10ms"}}),
            )
            .await,
        );
    }
    reports.push(
        run_step_report(
            "okta.suspend_user",
            json!({"user": "bad@example.com"}),
            config.clone(),
            json!({}),
        )
        .await,
    );

    // The runs did what they should, so the token was really in play.
    assert_eq!(
        reports[0].steps[0]
            .output
            .as_ref()
            .map(|o| o["is_vip"].clone()),
        Some(json!(true))
    );
    assert!(reports[1].steps[0].error.is_some());
    assert!(reports[2].steps[0].error.is_some());

    let logs = logs.text();
    assert!(
        logs.contains("okta response"),
        "TRACE logs were captured:\n{logs}"
    );
    assert!(logs.contains("attempt failed, retrying"), "{logs}");
    assert!(
        !logs.contains(TOKEN),
        "the token leaked into the logs:\n{logs}"
    );
    for r in &reports {
        let text = serde_json::to_string(r).unwrap();
        assert!(
            !text.contains(TOKEN),
            "the token leaked into a report: {text}"
        );
        assert!(!format!("{r:?}").contains(TOKEN));
    }

    // The parsed config itself prints and serializes as `***`.
    let okta = steps::okta::OktaConfig::from_config(&config).unwrap();
    assert!(!format!("{okta:?}").contains(TOKEN));
    assert_eq!(serde_json::to_value(&okta.token).unwrap(), json!("***"));
}
