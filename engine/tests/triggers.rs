//! Trigger matching and concurrency keys through `Engine::dispatch`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::{Engine, Registry, RunStatus, Services, StepContext, StepError, TypedStep};
use serde_json::{json, Map, Value};

/// Sleeps 50 ms and records how many instances ran at once.
#[derive(Clone, Default)]
struct Slow {
    running: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

#[async_trait]
impl TypedStep for Slow {
    type Input = Map<String, Value>;
    type Output = Map<String, Value>;
    const NAME: &'static str = "test.slow";
    fn description(&self) -> &'static str {
        "sleeps"
    }
    fn example(&self) -> Value {
        json!({})
    }
    async fn run(&self, input: Self::Input, _ctx: &StepContext) -> Result<Self::Output, StepError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(input)
    }
}

const PLAYBOOKS: &str = r#"
playbook: locks
on:
  event: okta
  if: "{{ event.eventType == 'user.account.lock' }}"
vars:
  user: "{{ event.user | lower }}"
concurrency: "user:{{ vars.user }}"
steps:
  - id: s
    uses: test.slow
    with: { user: "{{ vars.user }}" }
---
playbook: other-source
on: { event: crowdstrike }
steps:
  - id: s
    uses: test.slow
"#;

fn engine(slow: &Slow) -> Engine {
    let mut r = Registry::new();
    r.register(slow.clone());
    let src =
        engine::load::parse_source(Path::new("t.yaml"), PLAYBOOKS.as_bytes().to_vec()).unwrap();
    let bundle = engine::compile::compile_sources(&[src], &r).unwrap();
    Engine::new(bundle, Services::new())
}

#[tokio::test]
async fn triggers_match_source_and_condition() {
    let slow = Slow::default();
    let e = engine(&slow);
    let runs = e
        .dispatch(
            "okta",
            json!({"eventType": "user.account.lock", "user": "A"}),
            None,
        )
        .await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].playbook, "locks");
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert!(e
        .dispatch(
            "okta",
            json!({"eventType": "user.session.start", "user": "A"}),
            None
        )
        .await
        .is_empty());
    let other = e.dispatch("crowdstrike", json!({}), None).await;
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].playbook, "other-source");
    // A trigger that cannot be evaluated starts nothing (and does not crash).
    assert!(e
        .dispatch("okta", json!({"user": "A"}), None)
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_the_same_key_never_overlap() {
    let slow = Slow::default();
    let e = Arc::new(engine(&slow));
    let mut set = tokio::task::JoinSet::new();
    for user in ["Alice", "ALICE", "alice", "alice"] {
        let e = e.clone();
        set.spawn(async move {
            e.dispatch(
                "okta",
                json!({"eventType": "user.account.lock", "user": user}),
                None,
            )
            .await
        });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap()[0].status, RunStatus::Succeeded);
    }
    assert_eq!(
        slow.max.load(Ordering::SeqCst),
        1,
        "same key ran concurrently"
    );

    let slow = Slow::default();
    let e = Arc::new(engine(&slow));
    let mut set = tokio::task::JoinSet::new();
    for user in ["a", "b", "c"] {
        let e = e.clone();
        set.spawn(async move {
            e.dispatch(
                "okta",
                json!({"eventType": "user.account.lock", "user": user}),
                None,
            )
            .await
        });
    }
    while set.join_next().await.is_some() {}
    assert_eq!(
        slow.max.load(Ordering::SeqCst),
        3,
        "different keys should run concurrently"
    );
}
