//! `cases.assign` run by the engine against a `MemoryStore`: seeded random choice,
//! round robin, excluding the current assignee, explicit assignees and empty teams.

#[path = "support/cases.rs"]
mod support;

use engine::ErrorKind;
use serde_json::{json, Value};
use support::Harness;

fn teams() -> Value {
    json!({"teams": {"soc": ["a@x", "b@x", "c@x"], "solo": ["s@x"], "empty": []}})
}

async fn assign(h: &Harness, with: Value) -> String {
    let out = h.ok("cases.assign", with).await;
    assert_eq!(out["case"]["assignee"], out["assignee"]);
    out["assignee"].as_str().unwrap_or_default().to_string()
}

/// Who `cases.assign` picks at random for five fresh cases under `seed`.
async fn random_picks(seed: u64) -> Vec<String> {
    let h = Harness::new(teams()).with_seed(seed);
    let mut picks = Vec::new();
    for _ in 0..5 {
        let id = h.create(json!({"title": "t"})).await;
        picks.push(assign(&h, json!({"case": id})).await);
    }
    picks
}

#[tokio::test]
async fn random_is_deterministic_under_a_fixed_seed() {
    let first = random_picks(42).await;
    assert_eq!(first, random_picks(42).await);
    for p in &first {
        assert!(["a@x", "b@x", "c@x"].contains(&p.as_str()), "{p}");
    }
}

#[tokio::test]
async fn round_robin_goes_through_the_team_by_case_number() {
    let h = Harness::new(teams());
    let mut picks = Vec::new();
    for _ in 0..4 {
        let id = h.create(json!({"title": "t"})).await;
        picks.push(
            assign(
                &h,
                json!({"case": id, "team": "soc", "strategy": "round_robin"}),
            )
            .await,
        );
    }
    assert_eq!(picks[0], picks[3]);
    let mut distinct = picks[..3].to_vec();
    distinct.sort();
    assert_eq!(distinct, ["a@x", "b@x", "c@x"]);
}

#[tokio::test]
async fn the_current_assignee_is_excluded_unless_asked_not_to() {
    let h = Harness::new(teams());
    let id = h.create(json!({"title": "t"})).await;
    assert_eq!(assign(&h, json!({"case": id, "team": "solo"})).await, "s@x");
    let e = h
        .err("cases.assign", json!({"case": id, "team": "solo"}))
        .await;
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.message.contains("no eligible assignee in team `solo`"),
        "{}",
        e.message
    );
    assert_eq!(
        assign(
            &h,
            json!({"case": id, "team": "solo", "exclude_current": false})
        )
        .await,
        "s@x"
    );
    for _ in 0..5 {
        let before = h.case(&id).await["assignee"].clone();
        let now = assign(&h, json!({"case": id, "team": "soc"})).await;
        assert_ne!(json!(now), before);
    }
}

#[tokio::test]
async fn an_empty_or_unknown_team_is_an_error() {
    let h = Harness::new(teams());
    let id = h.create(json!({"title": "t"})).await;
    for team in ["empty", "nobody"] {
        let e = h
            .err("cases.assign", json!({"case": id, "team": team}))
            .await;
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(
            e.message.contains(&format!("team `{team}`")),
            "{}",
            e.message
        );
    }
}

#[tokio::test]
async fn an_explicit_assignee_needs_no_team() {
    let h = Harness::new(json!({}));
    let id = h.create(json!({"title": "t"})).await;
    assert_eq!(
        assign(&h, json!({"case": id, "assignee": "z@x"})).await,
        "z@x"
    );
    assert_eq!(h.case(&id).await["assignee"], "z@x");
}

#[tokio::test]
async fn least_loaded_counts_open_cases_only() {
    let h = Harness::new(teams());
    let mut ids = Vec::new();
    for who in ["a@x", "a@x", "b@x"] {
        let id = h.create(json!({"title": "t"})).await;
        assert_eq!(assign(&h, json!({"case": id, "assignee": who})).await, who);
        ids.push(id);
    }
    let least = json!({"team": "soc", "strategy": "least_loaded"});
    let with = |id: &str| {
        let mut w = least.clone();
        w["case"] = json!(id);
        w
    };
    // a has 2, b has 1, c has none.
    let id = h.create(json!({"title": "t"})).await;
    assert_eq!(assign(&h, with(&id)).await, "c@x");
    // Resolving both of a's cases leaves a with no open case: a is next.
    for id in &ids[..2] {
        h.ok(
            "cases.set_state",
            json!({"case": id, "state": "resolved", "reason": "done"}),
        )
        .await;
    }
    let id = h.create(json!({"title": "t"})).await;
    assert_eq!(assign(&h, with(&id)).await, "a@x");
}
