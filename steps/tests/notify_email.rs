//! Channel `email` against a real SMTP server on 127.0.0.1 (a small sink that speaks
//! SMTP): the message and its recipients, AUTH with the configured credentials, a 4yz reply
//! delivered by a later pass from the outbox, a 5yz reply rejected for good, and the
//! password kept out of errors, outputs and the outbox.

#[path = "support/smtp.rs"]
mod smtp;
#[path = "support/cases.rs"]
mod support;

use engine::notify::{DeliveryStatus, Outbox};
use engine::step::Clock;
use serde_json::{json, Value};
use smtp::SmtpSink;
use steps::notify::Deliverer;
use support::Harness;

const PASSWORD: &str = "sMtPpAsSwOrD77";

fn config(sink: &SmtpSink) -> Value {
    json!({
        "teams": {"stakeholders": ["ciso@acme.example", "cfo@acme.example"]},
        "notify": {
            "channels": ["outbox", "email"],
            "smtp": {
                "host": "127.0.0.1", "port": sink.port, "tls": "none",
                "username": "caseflow", "password": PASSWORD,
                "from": "Caseflow <caseflow@acme.example>", "timeout": "5s"
            },
            "delivery": {"attempts": 2, "backoff": "10ms"}
        }
    })
}

async fn status_of(outbox: &Outbox, id: &str) -> Option<DeliveryStatus> {
    outbox
        .delivery(id, "email")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|d| d.status)
}

#[tokio::test]
async fn a_notification_is_mailed_to_its_addresses() {
    let sink = SmtpSink::start().await;
    let h = Harness::new(config(&sink));
    let out = h
        .ok(
            "notify",
            json!({"to": ["team:stakeholders", "#soc-channel"], "subject": "VIP alert CASE-000001",
                "message": "Severity high.", "case": "CASE-000001"}),
        )
        .await;
    assert_eq!(out["delivered"]["email"], true, "{out:#}");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.from, "<caseflow@acme.example>");
    assert_eq!(m.to, ["<ciso@acme.example>", "<cfo@acme.example>"]);
    assert!(
        m.data.contains("Subject: VIP alert CASE-000001"),
        "{}",
        m.data
    );
    assert!(m.data.contains("Severity high."), "{}", m.data);
    assert!(m.data.contains("Case: CASE-000001"), "{}", m.data);
    assert!(m.data.contains("Message-ID: <"), "{}", m.data);
    assert_eq!(
        m.auth.as_deref(),
        Some(format!("\0caseflow\0{PASSWORD}").as_str())
    );
    assert!(!out.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn a_transient_reply_is_delivered_by_a_later_pass_and_a_permanent_one_is_rejected() {
    let sink = SmtpSink::start().await;
    let h = Harness::new(config(&sink));
    // Both attempts of the step's pass get 451: the mail waits in the outbox.
    sink.fail_next(&["451 4.3.0 mailbox busy", "451 4.3.0 mailbox busy"]);
    let out = h
        .ok(
            "notify",
            json!({"to": ["ciso@acme.example"], "subject": "first"}),
        )
        .await;
    assert_eq!(out["delivered"]["email"], false, "{out:#}");
    let err = out["errors"]["email"].as_str().unwrap_or_default();
    assert!(err.contains("451") || err.contains("busy"), "{err}");
    let id = out["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        status_of(&h.outbox, &id).await,
        Some(DeliveryStatus::Failed)
    );
    assert!(sink.received().is_empty());

    let deliverer = Deliverer::from_config(&h.config).unwrap_or_else(|e| panic!("{e}"));
    let report = deliverer.deliver_pending(&h.outbox, h.clock.now()).await;
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(
        status_of(&h.outbox, &id).await,
        Some(DeliveryStatus::Delivered)
    );
    assert_eq!(sink.received().len(), 1);
    assert!(sink.received()[0].data.contains("Subject: first"));

    // 550: refused for good, never sent again.
    sink.fail_next(&["550 5.7.1 relay denied"]);
    let out = h
        .ok(
            "notify",
            json!({"to": ["ciso@acme.example"], "subject": "second"}),
        )
        .await;
    let id = out["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        status_of(&h.outbox, &id).await,
        Some(DeliveryStatus::Rejected)
    );
    let sessions = sink.sessions();
    let report = deliverer.deliver_pending(&h.outbox, h.clock.now()).await;
    assert_eq!((report.delivered, report.failed), (0, 0), "{report:?}");
    assert_eq!(
        sink.sessions(),
        sessions,
        "a rejected mail is not tried again"
    );
    let deliveries =
        serde_json::to_string(&h.outbox.deliveries().await.unwrap_or_default()).unwrap_or_default();
    assert!(deliveries.contains("relay denied"), "{deliveries}");
    assert!(!deliveries.contains(PASSWORD));
}

#[tokio::test]
async fn email_without_smtp_config_is_a_config_error() {
    let h = Harness::new(json!({"notify": {"channels": ["email"]}}));
    let e = h
        .err("notify", json!({"to": ["a@acme.example"], "subject": "s"}))
        .await;
    assert!(
        e.message.contains("needs config `notify.smtp`"),
        "{}",
        e.message
    );
}
