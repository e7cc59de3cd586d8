//! `cases.update`, `cases.set_severity`, `cases.set_sla` and `cases.set_state` run by the
//! engine against a `MemoryStore`.

#[path = "support/cases.rs"]
mod support;

use engine::ErrorKind;
use serde_json::json;
use support::{millis_between, Harness, HOUR_MS};

#[tokio::test]
async fn update_adds_comment_observables_tags_and_fields() {
    let h = Harness::new(json!({}));
    let id = h
        .create(
            json!({"title": "t", "observables": [{"type": "ip", "value": "203.0.113.7"}],
            "fields": {"keep": 1, "drop": 2}}),
        )
        .await;
    let out = h
        .ok(
            "cases.update",
            json!({
                "case": id,
                "comment": "enriched",
                "observables": [
                    {"type": "ip", "value": "203.0.113.7", "verdict": "malicious",
                     "enrichment": {"abuseipdb": {"score": 100}}},
                    {"type": "domain", "value": "Evil.Example"},
                    {"type": "ip", "value": ""},
                ],
                "tags": ["enriched", "okta"],
                "fields": {"ticket": "INC-1", "drop": null},
                "title": "new title",
            }),
        )
        .await;
    let case = &out["case"];
    assert_eq!(case["title"], "new title");
    assert_eq!(case["comments"][0]["text"], "enriched");
    assert_eq!(case["tags"], json!(["enriched", "okta"]));
    assert_eq!(case["fields"], json!({"keep": 1, "ticket": "INC-1"}));
    let obs = case["observables"].as_array().cloned().unwrap_or_default();
    assert_eq!(obs.len(), 2, "{obs:#?}");
    assert_eq!(obs[0]["verdict"], "malicious");
    assert_eq!(obs[0]["enrichment"]["abuseipdb"]["score"], 100);
    assert_eq!(obs[1]["value"], "evil.example");
    // Written to the store, not only returned.
    assert_eq!(h.case(&id).await["observables"][0]["verdict"], "malicious");
}

#[tokio::test]
async fn update_of_a_missing_case_is_permanent() {
    let h = Harness::new(json!({}));
    let e = h
        .err(
            "cases.update",
            json!({"case": "CASE-000042", "comment": "x"}),
        )
        .await;
    assert_eq!(e.kind, ErrorKind::Permanent);
    let e = h
        .err("cases.update", json!({"case": "nope", "comment": "x"}))
        .await;
    assert!(
        e.message.contains("invalid case id `nope`"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn set_severity_recomputes_the_sla_from_the_policy() {
    let h = Harness::new(json!({"sla": {"high": "5h"}}));
    let id = h.create(json!({"title": "t"})).await;
    h.clock.advance(std::time::Duration::from_secs(600));
    let out = h
        .ok(
            "cases.set_severity",
            json!({"case": id, "severity": "high", "reason": "VIP"}),
        )
        .await;
    let case = &out["case"];
    assert_eq!(case["severity"], "high");
    assert_eq!(case["sla"]["policy"], "severity:high");
    // From creation, not from the change.
    assert_eq!(
        millis_between(&case["created_at"], &case["sla"]["due_at"]),
        5 * HOUR_MS
    );
    assert_eq!(case["comments"][0]["text"], "VIP");
}

#[tokio::test]
async fn raise_only_leaves_a_higher_severity_alone() {
    let h = Harness::new(json!({}));
    let id = h
        .create(json!({"title": "t", "severity": "critical"}))
        .await;
    let out = h
        .ok(
            "cases.set_severity",
            json!({"case": id, "severity": "high", "raise_only": true}),
        )
        .await;
    assert_eq!(out["case"]["severity"], "critical");
    let out = h
        .ok(
            "cases.set_severity",
            json!({"case": id, "severity": "high"}),
        )
        .await;
    assert_eq!(out["case"]["severity"], "high");
    let out = h
        .ok(
            "cases.set_severity",
            json!({"case": id, "severity": "critical", "raise_only": true}),
        )
        .await;
    assert_eq!(out["case"]["severity"], "critical");
}

#[tokio::test]
async fn an_explicit_sla_survives_a_severity_change() {
    let h = Harness::new(json!({}));
    let id = h.create(json!({"title": "t", "severity": "low"})).await;
    let out = h
        .ok("cases.set_sla", json!({"case": id, "duration": "2h"}))
        .await;
    let due = out["case"]["sla"]["due_at"].clone();
    assert_eq!(
        millis_between(&out["case"]["created_at"], &due),
        2 * HOUR_MS
    );
    let out = h
        .ok(
            "cases.set_severity",
            json!({"case": id, "severity": "critical"}),
        )
        .await;
    assert_eq!(out["case"]["severity"], "critical");
    assert_eq!(out["case"]["sla"]["due_at"], due);
    // Back to the policy on request.
    let out = h
        .ok("cases.set_sla", json!({"case": id, "policy": "severity"}))
        .await;
    assert_eq!(out["case"]["sla"]["policy"], "severity:critical");
    assert_eq!(
        millis_between(&out["case"]["created_at"], &out["case"]["sla"]["due_at"]),
        4 * HOUR_MS
    );
}

#[tokio::test]
async fn set_sla_takes_exactly_one_of_duration_and_policy() {
    let h = Harness::new(json!({}));
    let id = h.create(json!({"title": "t"})).await;
    for with in [
        json!({"case": id, "duration": "1h", "policy": "severity"}),
        json!({"case": id}),
    ] {
        let e = h.err("cases.set_sla", with).await;
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(e.message.contains("exactly one"), "{}", e.message);
    }
    let e = h
        .err("cases.set_sla", json!({"case": id, "duration": "soon"}))
        .await;
    assert!(
        e.message.contains("invalid `duration` `soon`"),
        "{}",
        e.message
    );
    let e = h
        .err("cases.set_sla", json!({"case": id, "policy": "gold"}))
        .await;
    assert!(
        e.message.contains("unknown SLA policy `gold`"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn resolving_needs_a_reason() {
    let h = Harness::new(json!({}));
    let id = h.create(json!({"title": "t"})).await;
    let e = h
        .err("cases.set_state", json!({"case": id, "state": "resolved"}))
        .await;
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.message.contains("needs a resolution reason"),
        "{}",
        e.message
    );
    let out = h
        .ok(
            "cases.set_state",
            json!({"case": id, "state": "resolved", "reason": "false positive"}),
        )
        .await;
    assert_eq!(out["case"]["state"], "resolved");
    assert_eq!(out["case"]["resolution"], "false positive");
}

#[tokio::test]
async fn an_invalid_transition_is_permanent_and_names_from_and_to() {
    let h = Harness::new(json!({}));
    let id = h.create(json!({"title": "t"})).await;
    h.ok(
        "cases.set_state",
        json!({"case": id, "state": "closed", "reason": "dup"}),
    )
    .await;
    let e = h
        .err("cases.set_state", json!({"case": id, "state": "on_hold"}))
        .await;
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.message.contains("from `closed` to `on_hold`"),
        "{}",
        e.message
    );
    assert_eq!(h.case(&id).await["state"], "closed");
}
