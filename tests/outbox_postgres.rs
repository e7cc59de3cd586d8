//! The notification outbox shared through PostgreSQL (a fresh schema of the test database,
//! see `engine/tests/support/pg.rs`): a notification queued by one engine process whose
//! Slack delivery failed is delivered by another process after the first one is gone,
//! exactly once, even when two live processes run their delivery passes at the same time,
//! to a Slack stand-in on 127.0.0.1 (wiremock).
//!
//! No server is a failure with instructions (`.ci/postgres.sh`), never a skip.

#[path = "../engine/tests/support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use caseflow::engine::notify::{DeliveryStatus, Notification, Outbox};
use caseflow::engine::persist::{Durability, Store};
use serde_json::{json, Value};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

const SLACK_PATH: &str = "/services/T0001/B0002/outboxPgSecret";

fn config(server: &MockServer) -> Value {
    json!({
        "http": {"allow_hosts": ["127.0.0.1"]},
        "notify": {
            "slack": {"webhook_url": format!("{}{SLACK_PATH}", server.uri())},
            "delivery": {"attempts": 1, "backoff": "10ms"},
        },
    })
}

fn note(id: &str) -> Notification {
    Notification {
        id: id.into(),
        at: "2026-01-01T00:00:00Z".into(),
        to: vec!["dana.analyst@acme.example".into()],
        subject: format!("CASE-000001 assigned ({id})"),
        message: "VIP login".into(),
        channels: vec!["console".into(), "slack".into()],
        case: Some("CASE-000001".into()),
        run_id: "run-a".into(),
        playbook: "iam-state-changed".into(),
        step: "notify".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_of_a_process_that_is_gone_is_delivered_once_by_another() {
    let server = MockServer::start().await;
    // Slack is down while process A runs the step.
    Mock::given(path(SLACK_PATH))
        .respond_with(ResponseTemplate::new(503).set_body_string("down"))
        .expect(1)
        .mount(&server)
        .await;
    let config = config(&server);
    let mut a = pg::fresh().await;
    let schema = a.schema.clone();
    {
        let store: Arc<dyn Store> = Arc::new(a.take());
        let outbox = Outbox::in_store(store);
        assert!(outbox.push(note("n1")).await.unwrap());
        let report = steps::notify::deliver_pending(&outbox, &config)
            .await
            .unwrap();
        assert_eq!((report.delivered, report.failed), (0, 1));
        // A goes away for good: its store handle, connections and registration with it.
    }
    server.verify().await;
    server.reset().await;
    // Slack is back, and slow enough that two passes overlap.
    Mock::given(path(SLACK_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("ok")
                .set_delay(Duration::from_millis(500)),
        )
        .mount(&server)
        .await;
    let b: Arc<dyn Store> = Arc::new(pg::open(&schema, Durability::Strict).await);
    let c: Arc<dyn Store> = Arc::new(pg::open(&schema, Durability::Strict).await);
    let (ob, oc) = (Outbox::in_store(b.clone()), Outbox::in_store(c));
    assert_eq!(
        ob.pending(|ch| ch == "slack").await.unwrap().len(),
        1,
        "B sees what A queued"
    );
    let (rb, rc) = tokio::join!(
        steps::notify::deliver_pending(&ob, &config),
        steps::notify::deliver_pending(&oc, &config)
    );
    let (rb, rc) = (rb.unwrap(), rc.unwrap());
    assert_eq!(
        rb.delivered + rc.delivered,
        1,
        "one pass delivers: {rb:?} {rc:?}"
    );
    assert_eq!(rb.waiting + rc.waiting, 1, "the other stands back");
    let requests = server.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 1, "sent exactly once");
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert!(
        body["text"].as_str().unwrap_or_default().contains("(n1)"),
        "{body}"
    );
    let d = ob.delivery("n1", "slack").await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 2));
    // Later passes of either process send nothing more.
    for o in [&ob, &oc] {
        let again = steps::notify::deliver_pending(o, &config).await.unwrap();
        assert_eq!(again, Default::default());
    }
    assert_eq!(
        server.received_requests().await.unwrap_or_default().len(),
        1
    );
    drop((ob, oc, b));
    pg::drop_schema(&schema);
}
