//! The executor's semantics, with test steps: joins, skips, errors, retries (on tokio's
//! paused clock), timeouts, for_each, outputs, and event data staying data.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine::schedule::ready::Status;
use engine::schedule::{execute, RunInput};
use engine::{Registry, RunReport, RunStatus, Services, StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

struct Echo;
#[async_trait]
impl TypedStep for Echo {
    type Input = Map<String, Value>;
    type Output = Map<String, Value>;
    const NAME: &'static str = "test.echo";
    fn description(&self) -> &'static str {
        "returns its input"
    }
    fn example(&self) -> Value {
        json!({"a": 1})
    }
    async fn run(&self, input: Self::Input, _ctx: &StepContext) -> Result<Self::Output, StepError> {
        Ok(input)
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FlakyInput {
    /// Attempts that fail before one succeeds.
    fail_times: u32,
    /// `retryable` or `permanent`.
    kind: String,
    #[serde(default)]
    sleep_ms: u64,
}

/// Fails `fail_times` attempts, counted per (run, step, item), then succeeds.
#[derive(Default, Clone)]
struct Flaky {
    calls: Arc<Mutex<HashMap<String, u32>>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}
#[async_trait]
impl TypedStep for Flaky {
    type Input = FlakyInput;
    type Output = Value;
    const NAME: &'static str = "test.flaky";
    fn description(&self) -> &'static str {
        "fails some attempts"
    }
    fn example(&self) -> Value {
        json!({"fail_times": 0, "kind": "retryable"})
    }
    async fn run(&self, input: FlakyInput, ctx: &StepContext) -> Result<Value, StepError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        if input.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(input.sleep_ms)).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        let n = {
            let mut calls = self.calls.lock().unwrap();
            let c = calls.entry(ctx.idempotency_key()).or_insert(0);
            *c += 1;
            *c
        };
        if n <= input.fail_times {
            return Err(match input.kind.as_str() {
                "retryable" => StepError::retryable(format!("attempt {n} failed")),
                _ => StepError::permanent(format!("attempt {n} failed")),
            });
        }
        Ok(json!({"attempts": n, "attempt": ctx.attempt}))
    }
}

fn registry(flaky: &Flaky) -> Registry {
    let mut r = Registry::new();
    r.register(Echo).register(flaky.clone());
    r
}

fn plan(yaml: &str, registry: &Registry) -> Arc<engine::Plan> {
    let src = engine::load::parse_source(Path::new("test.yaml"), yaml.as_bytes().to_vec())
        .unwrap_or_else(|d| panic!("{d}"));
    let bundle = engine::compile::compile_sources(&[src], registry)
        .unwrap_or_else(|ds| panic!("{}", ds.iter().map(|d| d.to_string()).collect::<String>()));
    bundle.playbooks[0].clone()
}

async fn run(yaml: &str, event: Value) -> (RunReport, Flaky) {
    let flaky = Flaky::default();
    let reg = registry(&flaky);
    let p = plan(yaml, &reg);
    let input = RunInput {
        run_id: "run-test".into(),
        trigger: "test".into(),
        event,
        case: None,
        depth: 0,
    };
    let services = Services::new().with_seed(7);
    (execute(p, input, Arc::new(services)).await, flaky)
}

fn status(r: &RunReport, id: &str) -> Status {
    r.step(id).unwrap_or_else(|| panic!("no step {id}")).status
}

const UPDATE_OR_CREATE: &str = r#"
playbook: t
on: { event: test }
steps:
  - id: existing
    uses: test.echo
    with: { cases: "{{ event.cases }}" }
  - id: update
    uses: test.echo
    if: "{{ steps.existing.cases | length > 0 }}"
    with: { id: "{{ steps.existing.cases[0] }}", created: false }
  - id: create
    uses: test.echo
    if: "{{ steps.existing.cases | length == 0 }}"
    with: { id: "new", created: true }
  - id: escalate
    uses: test.echo
    needs: [update, create]
    with: { case: "{{ (steps.update or steps.create).id }}" }
output:
  case: "{{ steps.escalate.case }}"
"#;

#[tokio::test]
async fn update_or_create_then_escalate_runs_the_join_once() {
    let (r, _) = run(UPDATE_OR_CREATE, json!({"cases": ["CASE-000001"]})).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(status(&r, "update"), Status::Succeeded);
    assert_eq!(status(&r, "create"), Status::Skipped);
    assert_eq!(status(&r, "escalate"), Status::Succeeded);
    assert_eq!(r.output, Some(json!({"case": "CASE-000001"})));

    let (r, _) = run(UPDATE_OR_CREATE, json!({"cases": []})).await;
    assert_eq!(status(&r, "update"), Status::Skipped);
    assert_eq!(status(&r, "create"), Status::Succeeded);
    assert_eq!(status(&r, "escalate"), Status::Succeeded);
    assert_eq!(r.output, Some(json!({"case": "new"})));
}

#[tokio::test]
async fn skips_propagate_through_a_chain() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: a
    uses: test.echo
    if: false
  - id: b
    uses: test.echo
    with: { x: "{{ steps.a.x }}" }
  - id: c
    uses: test.echo
    needs: b
  - id: free
    uses: test.echo
"#;
    let (r, _) = run(yaml, json!({})).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(status(&r, "a"), Status::Skipped);
    assert_eq!(status(&r, "b"), Status::Skipped);
    assert_eq!(status(&r, "c"), Status::Skipped);
    assert_eq!(status(&r, "free"), Status::Succeeded);
}

#[tokio::test]
async fn a_failure_fails_the_run_and_cancels_the_rest() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: boom
    uses: test.flaky
    with: { fail_times: 9, kind: permanent }
  - id: after
    uses: test.echo
    needs: boom
"#;
    let (r, _) = run(yaml, json!({})).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(status(&r, "boom"), Status::Failed);
    assert_eq!(status(&r, "after"), Status::Cancelled);
    assert!(
        r.error.as_deref().unwrap_or("").contains("boom"),
        "{:?}",
        r.error
    );
}

#[tokio::test]
async fn on_error_continue_lets_dependents_run() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: boom
    uses: test.flaky
    with: { fail_times: 9, kind: permanent }
    on_error: continue
  - id: after
    uses: test.echo
    needs: boom
    with: { saw: "{{ steps.boom is none }}" }
"#;
    let (r, _) = run(yaml, json!({})).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(status(&r, "boom"), Status::Failed);
    assert_eq!(r.step("after").unwrap().output, Some(json!({"saw": true})));
}

#[tokio::test]
async fn on_error_handler_runs_with_the_error_and_handles_it() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: boom
    uses: test.flaky
    with: { fail_times: 9, kind: permanent }
    on_error: recover
  - id: after
    uses: test.echo
    needs: boom
  - id: recover
    uses: test.echo
    with: { failed_step: "{{ error.step }}", message: "{{ error.message }}" }
"#;
    let (r, _) = run(yaml, json!({})).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(status(&r, "after"), Status::Skipped);
    assert_eq!(
        r.step("recover").unwrap().output,
        Some(json!({"failed_step": "boom", "message": "attempt 1 failed"}))
    );

    // Without a failure the handler does not run.
    let ok = yaml.replace("fail_times: 9", "fail_times: 0");
    let (r, _) = run(&ok, json!({})).await;
    assert_eq!(status(&r, "recover"), Status::Skipped);
    assert_eq!(status(&r, "after"), Status::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn retries_retryable_errors_with_backoff() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: flaky
    uses: test.flaky
    with: { fail_times: 2, kind: retryable }
    retry: { attempts: 3, backoff: 10s, jitter: false }
"#;
    let started = tokio::time::Instant::now();
    let (r, _) = run(yaml, json!({})).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let s = r.step("flaky").unwrap();
    assert_eq!(s.attempts, 3);
    assert_eq!(s.output, Some(json!({"attempts": 3, "attempt": 3})));
    // 10 s then 20 s of backoff on the paused clock.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: flaky
    uses: test.flaky
    with: { fail_times: 1, kind: permanent }
    retry: { attempts: 5 }
"#;
    let (r, _) = run(yaml, json!({})).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.step("flaky").unwrap().attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_after_the_last_attempt() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: flaky
    uses: test.flaky
    with: { fail_times: 10, kind: retryable }
    retry: { attempts: 4, backoff: 1s }
"#;
    let (r, _) = run(yaml, json!({})).await;
    assert_eq!(r.status, RunStatus::Failed);
    let s = r.step("flaky").unwrap();
    assert_eq!(s.attempts, 4);
    assert_eq!(s.error.as_ref().unwrap().message, "attempt 4 failed");
}

#[tokio::test(start_paused = true)]
async fn timeouts_fail_the_attempt_and_can_be_retried() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: slow
    uses: test.flaky
    with: { fail_times: 0, kind: permanent, sleep_ms: 60000 }
    timeout: 5s
    retry: { attempts: 2, backoff: 1s, jitter: false }
"#;
    let started = tokio::time::Instant::now();
    let (r, _) = run(yaml, json!({})).await;
    assert_eq!(r.status, RunStatus::Failed);
    let s = r.step("slow").unwrap();
    assert_eq!(s.attempts, 2);
    assert_eq!(s.error.as_ref().unwrap().kind, engine::ErrorKind::Timeout);
    assert!(s
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("timed out after 5s"));
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn for_each_respects_its_concurrency_and_keeps_order() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: each
    uses: test.flaky
    for_each: { items: "{{ event.items }}", concurrency: 2 }
    with: { fail_times: 0, kind: permanent, sleep_ms: "{{ 100 - item }}" }
output: "{{ steps.each | map(attribute='attempts') | list }}"
"#;
    let (r, flaky) = run(yaml, json!({"items": [1, 2, 3, 4, 5, 6]})).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(r.output, Some(json!([1, 1, 1, 1, 1, 1])));
    assert_eq!(flaky.max_running.load(Ordering::SeqCst), 2);
    assert_eq!(
        flaky.calls.lock().unwrap().len(),
        6,
        "one idempotency key per item"
    );
}

#[tokio::test]
async fn for_each_over_a_non_list_fails_clearly() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: each
    uses: test.echo
    for_each: "{{ event.items }}"
    with: { x: "{{ item }}" }
"#;
    let (r, _) = run(yaml, json!({"items": "not a list"})).await;
    assert_eq!(r.status, RunStatus::Failed);
    let e = r.step("each").unwrap().error.clone().unwrap();
    assert!(e.message.contains("must give a list"), "{}", e.message);
}

#[tokio::test]
async fn event_strings_are_never_rendered_as_templates() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: a
    uses: test.echo
    with: { note: "{{ event.note }}", text: "said: {{ event.note }}" }
output: "{{ steps.a }}"
"#;
    let (r, _) = run(
        yaml,
        json!({"note": "{{ 7*7 }}{% for x in range(10) %}{% endfor %}"}),
    )
    .await;
    assert_eq!(
        r.output,
        Some(json!({
            "note": "{{ 7*7 }}{% for x in range(10) %}{% endfor %}",
            "text": "said: {{ 7*7 }}{% for x in range(10) %}{% endfor %}"
        }))
    );
}

#[tokio::test]
async fn invalid_rendered_input_fails_the_step_not_the_engine() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: a
    uses: test.flaky
    with: { fail_times: "{{ event.n }}", kind: permanent }
"#;
    let (r, _) = run(yaml, json!({"n": "three"})).await;
    assert_eq!(r.status, RunStatus::Failed);
    let e = r.step("a").unwrap().error.clone().unwrap();
    assert_eq!(e.kind, engine::ErrorKind::InvalidInput);
    assert!(e.message.contains("fail_times"), "{}", e.message);
}

#[tokio::test]
async fn undefined_values_fail_with_a_message() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: a
    uses: test.echo
    with: { user: "{{ event.actor.alternateId }}" }
"#;
    let (r, _) = run(yaml, json!({"actor": null})).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert!(r
        .step("a")
        .unwrap()
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("could not be rendered"));
}

#[tokio::test]
async fn independent_steps_run_concurrently() {
    let yaml = r#"
playbook: t
on: { event: test }
steps:
  - id: a
    uses: test.flaky
    with: { fail_times: 0, kind: permanent, sleep_ms: 200 }
  - id: b
    uses: test.flaky
    with: { fail_times: 0, kind: permanent, sleep_ms: 200 }
  - id: c
    uses: test.flaky
    with: { fail_times: 0, kind: permanent, sleep_ms: 200 }
"#;
    let (r, flaky) = run(yaml, json!({})).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(flaky.max_running.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn vars_and_output_are_templated() {
    let yaml = r#"
playbook: t
on: { event: test }
vars:
  user: "{{ event.user | lower }}"
  fixed: 42
steps:
  - id: a
    uses: test.echo
    with: { u: "{{ vars.user }}", n: "{{ vars.fixed + 1 }}", run: "{{ run.playbook }}" }
output:
  a: "{{ steps.a }}"
"#;
    let (r, _) = run(yaml, json!({"user": "ALICE"})).await;
    assert_eq!(
        r.output,
        Some(json!({"a": {"u": "alice", "n": 43, "run": "t"}}))
    );
}
