//! `cases.create` and `cases.query` run by the engine against a `MemoryStore`.

#[path = "support/cases.rs"]
mod support;

use engine::ErrorKind;
use serde_json::json;
use support::{millis_between, Harness, HOUR_MS};

#[tokio::test]
async fn create_defaults_to_medium_with_the_configured_sla() {
    let h = Harness::new(json!({"sla": {"medium": "10h", "critical": "30m"}}));
    let out = h.ok("cases.create", json!({"title": "t"})).await;
    assert_eq!(out["created"], true);
    let case = &out["case"];
    assert_eq!(case["severity"], "medium");
    assert_eq!(case["state"], "new");
    assert_eq!(case["sla"]["policy"], "severity:medium");
    assert_eq!(
        millis_between(&case["created_at"], &case["sla"]["due_at"]),
        10 * HOUR_MS
    );

    let out = h
        .ok(
            "cases.create",
            json!({"title": "c", "severity": "critical"}),
        )
        .await;
    let case = &out["case"];
    assert_eq!(
        millis_between(&case["created_at"], &case["sla"]["due_at"]),
        HOUR_MS / 2
    );
}

#[tokio::test]
async fn create_uses_the_default_policy_without_config() {
    let h = Harness::new(json!({}));
    for (severity, hours) in [("critical", 4), ("high", 24), ("medium", 72), ("low", 168)] {
        let out = h
            .ok(
                "cases.create",
                json!({"title": severity, "severity": severity}),
            )
            .await;
        let case = &out["case"];
        assert_eq!(
            millis_between(&case["created_at"], &case["sla"]["due_at"]),
            hours * HOUR_MS,
            "{severity}"
        );
    }
}

#[tokio::test]
async fn dedup_key_returns_the_open_case() {
    let h = Harness::new(json!({}));
    let first = h
        .ok(
            "cases.create",
            json!({"title": "a", "dedup_key": "okta:u1"}),
        )
        .await;
    let second = h
        .ok(
            "cases.create",
            json!({"title": "b", "dedup_key": "okta:u1"}),
        )
        .await;
    assert_eq!(first["created"], true);
    assert_eq!(second["created"], false);
    assert_eq!(second["case"]["id"], first["case"]["id"]);
    assert_eq!(second["case"]["title"], "a");
    let other = h
        .ok(
            "cases.create",
            json!({"title": "c", "dedup_key": "okta:u2"}),
        )
        .await;
    assert_eq!(other["created"], true);
    assert_ne!(other["case"]["id"], first["case"]["id"]);
}

#[tokio::test]
async fn dedup_key_opens_a_new_case_once_the_old_one_is_resolved() {
    let h = Harness::new(json!({}));
    let id = h.create(json!({"title": "a", "dedup_key": "k"})).await;
    h.ok(
        "cases.set_state",
        json!({"case": id, "state": "resolved", "reason": "fp"}),
    )
    .await;
    let again = h
        .ok("cases.create", json!({"title": "b", "dedup_key": "k"}))
        .await;
    assert_eq!(again["created"], true);
    assert_ne!(again["case"]["id"], json!(id));
}

#[tokio::test]
async fn null_and_empty_observables_are_dropped() {
    let h = Harness::new(json!({}));
    let out = h
        .ok(
            "cases.create",
            json!({"title": "t", "observables": [
                {"type": "ip", "value": null},
                {"type": "user"},
                {"type": "email", "value": "  "},
                {"type": "ip", "value": "2001:DB8:0::1"},
                {"type": "user", "value": "Alice@Acme.example"},
            ]}),
        )
        .await;
    let obs = out["case"]["observables"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pairs: Vec<(String, String)> = obs
        .iter()
        .map(|o| (o["type"].to_string(), o["value"].to_string()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("\"ip\"".to_string(), "\"2001:db8::1\"".to_string()),
            ("\"user\"".to_string(), "\"alice@acme.example\"".to_string()),
        ]
    );
}

async fn seeded() -> (Harness, Vec<String>) {
    let h = Harness::new(json!({}));
    let mut ids = Vec::new();
    for (title, severity, user) in [
        ("one", "low", "alice"),
        ("two", "high", "bob"),
        ("three", "medium", "alice"),
    ] {
        ids.push(
            h.create(json!({"title": title, "severity": severity,
                "observables": [{"type": "user", "value": user}], "tags": [severity]}))
                .await,
        );
        h.clock.advance(std::time::Duration::from_secs(3600));
    }
    (h, ids)
}

fn ids(out: &serde_json::Value) -> Vec<String> {
    out["cases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn query_by_observable_newest_first() {
    let (h, c) = seeded().await;
    let out = h
        .ok(
            "cases.query",
            json!({"observable": {"type": "user", "value": "ALICE"}}),
        )
        .await;
    assert_eq!(out["count"], 2);
    assert_eq!(ids(&out), [c[2].clone(), c[0].clone()]);
    // A missing value matches nothing (not everything).
    let out = h
        .ok(
            "cases.query",
            json!({"observable": {"type": "user", "value": null}}),
        )
        .await;
    assert_eq!(out["count"], 0);
}

#[tokio::test]
async fn query_by_state_list_sort_and_limit() {
    let (h, c) = seeded().await;
    h.ok(
        "cases.set_state",
        json!({"case": c[1], "state": "in_progress"}),
    )
    .await;
    h.ok(
        "cases.set_state",
        json!({"case": c[2], "state": "resolved", "reason": "benign"}),
    )
    .await;
    let out = h
        .ok(
            "cases.query",
            json!({"state": ["new", "in_progress"], "sort": "created_at"}),
        )
        .await;
    assert_eq!(ids(&out), [c[0].clone(), c[1].clone()]);
    let out = h
        .ok("cases.query", json!({"sort": "-severity", "limit": 2}))
        .await;
    assert_eq!(ids(&out), [c[1].clone(), c[2].clone()]);
    assert_eq!(out["count"], 2);
    let out = h.ok("cases.query", json!({"tag": "low"})).await;
    assert_eq!(ids(&out), [c[0].clone()]);
    let e = h.err("cases.query", json!({"sort": "colour"})).await;
    assert_eq!(e.kind, ErrorKind::Permanent);
}

#[tokio::test]
async fn query_created_after_a_relative_duration() {
    let (h, c) = seeded().await;
    // Cases were created at 0h, 1h and 2h; now is 3h.
    let out = h.ok("cases.query", json!({"created_after": "150m"})).await;
    assert_eq!(
        ids(&out),
        [c[1].clone(), c[2].clone()]
            .iter()
            .rev()
            .cloned()
            .collect::<Vec<_>>()
    );
    let out = h.ok("cases.query", json!({"created_after": "24h"})).await;
    assert_eq!(out["count"], 3);
    let out = h.ok("cases.query", json!({"created_before": "150m"})).await;
    assert_eq!(ids(&out), [c[0].clone()]);
    let e = h
        .err("cases.query", json!({"created_after": "yesterday"}))
        .await;
    assert!(
        e.message.contains("invalid time `yesterday`"),
        "{}",
        e.message
    );
}
