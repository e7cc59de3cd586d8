//! The worker API that `engine serve` builds on: ingest with dedup, wait_for, subscribe,
//! the run journal as the API lists it, cursors, case changes by people, shutdown that
//! parks runs, resume that finishes them, and concurrency keys across a restart.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine::cases::{Actor, CaseChange, CaseId, NewCase, Severity};
use engine::persist::{
    CaseRead, CaseWrite, Inbox, MemoryStore, RunFilter, RunState, Runs, SledStore, Store, WriteMeta,
};
use engine::schedule::ready::Status;
use engine::{Engine, Registry, RunStatus, Services, StepContext, StepError, TypedStep};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

/// Records each call (step id, input) and returns its input; `sleep_ms` waits first
/// unless the probe is told to hurry.
#[derive(Clone, Default)]
struct Probe(Arc<Mutex<Vec<(String, Value)>>>, Arc<AtomicBool>);

impl Probe {
    fn order(&self) -> Vec<(String, Value)> {
        self.0.lock().unwrap().clone()
    }

    fn calls(&self, step: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| s == step)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[async_trait]
impl TypedStep for Probe {
    type Input = Map<String, Value>;
    type Output = Map<String, Value>;
    const NAME: &'static str = "t.probe";
    fn description(&self) -> &'static str {
        "records its input"
    }
    fn example(&self) -> Value {
        json!({})
    }
    async fn run(&self, input: Self::Input, ctx: &StepContext) -> Result<Self::Output, StepError> {
        self.0
            .lock()
            .unwrap()
            .push((ctx.step.clone(), Value::Object(input.clone())));
        if let Some(ms) = input.get("sleep_ms").and_then(Value::as_u64) {
            if !self.1.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        Ok(input)
    }
}

/// Comments on a case as this step of this run.
struct Comment;

#[async_trait]
impl TypedStep for Comment {
    type Input = Map<String, Value>;
    type Output = Value;
    const NAME: &'static str = "t.comment";
    fn description(&self) -> &'static str {
        "comments on a case"
    }
    fn example(&self) -> Value {
        json!({"case": "CASE-000001", "text": "x"})
    }
    async fn run(&self, input: Self::Input, ctx: &StepContext) -> Result<Value, StepError> {
        let id: CaseId = input
            .get("case")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StepError::invalid_input("case"))?;
        let text = input.get("text").and_then(Value::as_str).unwrap_or("");
        let out = ctx
            .store()?
            .update(
                id,
                vec![CaseChange::AddComment(text.into())],
                &ctx.write_meta(),
            )
            .await
            .map_err(StepError::permanent)?;
        Ok(json!({"comments": out.case.comments.len()}))
    }
}

fn engine(playbooks: &str, probe: &Probe, store: Arc<dyn Store>, config: Value) -> Arc<Engine> {
    let mut r = Registry::new();
    r.register(probe.clone()).register(Comment);
    let src = engine::load::parse_source(Path::new("t.yaml"), playbooks.as_bytes().to_vec())
        .unwrap_or_else(|d| panic!("{d:?}"));
    let bundle = engine::compile::compile_sources(&[src], &r).unwrap_or_else(|d| panic!("{d:?}"));
    Arc::new(Engine::new(
        bundle,
        Services::new().with_store(store).with_config(config),
    ))
}

fn start(e: &Arc<Engine>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (e, stop) = (e.clone(), stop.clone());
        async move { e.run_worker(stop).await.expect("worker stops cleanly") }
    });
    (stop, task)
}

async fn stop(worker: (CancellationToken, tokio::task::JoinHandle<()>)) {
    worker.0.cancel();
    tokio::time::timeout(Duration::from_secs(10), worker.1)
        .await
        .expect("worker stops")
        .expect("worker task");
}

const ECHO: &str = r#"
playbook: echo
on: { event: src }
steps:
  - id: a
    uses: t.probe
    with: { n: "{{ event.n }}" }
  - id: b
    uses: t.probe
    with: { from_a: "{{ steps.a.n }}" }
output:
  n: "{{ steps.b.from_a }}"
"#;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn ingested_events_run_once_and_are_journaled() {
    let probe = Probe::default();
    let store = Arc::new(MemoryStore::new());
    let e = engine(ECHO, &probe, store.clone(), json!({}));
    let mut finished = e.subscribe();
    let got = e
        .ingest(
            "src",
            vec![
                json!({"uuid": "u1", "n": 1}),
                json!({"uuid": "u1", "n": 99}),
                json!({"n": 2}),
            ],
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].key.as_deref(), Some("src:u1"));
    assert!(!got[0].duplicate && got[1].duplicate && !got[2].duplicate);
    assert_eq!((got[1].seq, got[2].key.as_deref()), (None, None));
    let (s1, s2) = (got[0].seq.unwrap(), got[2].seq.unwrap());
    assert!(s2 > s1);
    // A later delivery of the same uuid is a duplicate too.
    let again = e.ingest("src", vec![json!({"uuid": "u1"})]).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(store.inbox_depth().await.unwrap(), 2);
    // Nothing runs before a worker does.
    assert_eq!(
        e.wait_for(s1, Duration::from_millis(50)).await.unwrap(),
        None
    );

    let worker = start(&e);
    let r1 = e
        .wait_for(s1, 5 * SECOND)
        .await
        .unwrap()
        .expect("runs finish");
    let r2 = e
        .wait_for(s2, 5 * SECOND)
        .await
        .unwrap()
        .expect("runs finish");
    assert_eq!(r1.len(), 1);
    assert_eq!(r1[0].status, RunStatus::Succeeded, "{:?}", r1[0].error);
    assert_eq!(r1[0].output, Some(json!({"n": 1})));
    assert_eq!(
        (r1[0].inbox_seq, r1[0].event_key.as_deref()),
        (Some(s1), Some("src:u1"))
    );
    assert_eq!(
        (r2[0].inbox_seq, r2[0].event_key.as_deref()),
        (Some(s2), None)
    );
    let heard = tokio::time::timeout(SECOND, finished.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(heard.inbox_seq == Some(s1) || heard.inbox_seq == Some(s2));
    assert_eq!(probe.calls("a").len(), 2, "u1 once, the keyless event once");
    assert_eq!(store.inbox_depth().await.unwrap(), 0);

    let runs = store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].run_id, r2[0].run_id, "newest first");
    assert!(runs.iter().all(|r| r.status == RunState::Succeeded));
    assert!(runs.iter().all(|r| r.finished_at.is_some()));
    let run = store.get_run(&r1[0].run_id).await.unwrap().unwrap();
    assert_eq!(run.input.event, json!({"uuid": "u1", "n": 1}));
    let steps: Vec<(&str, Status, u32)> = run
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.status, s.attempts))
        .collect();
    assert_eq!(
        steps,
        [("a", Status::Succeeded, 1), ("b", Status::Succeeded, 1)]
    );
    let none = RunFilter {
        status: Some(RunState::Failed),
        ..RunFilter::default()
    };
    assert!(store.list_runs(&none).await.unwrap().is_empty());
    let by_name = RunFilter {
        playbook: Some("echo".into()),
        limit: 1,
        ..RunFilter::default()
    };
    assert_eq!(store.list_runs(&by_name).await.unwrap().len(), 1);
    assert!(store.check().await.unwrap().is_empty());
    stop(worker).await;
}

#[tokio::test]
async fn wait_for_knows_entries_that_start_nothing_and_refuses_unknown_ones() {
    let probe = Probe::default();
    let e = engine(ECHO, &probe, Arc::new(MemoryStore::new()), json!({}));
    let worker = start(&e);
    let got = e.ingest("other", vec![json!({"n": 1})]).await.unwrap();
    let seq = got[0].seq.unwrap();
    let runs = e.wait_for(seq, 5 * SECOND).await.unwrap();
    assert!(
        runs.is_some_and(|r| r.is_empty()),
        "dispatched, nothing started"
    );
    assert!(e.wait_for(seq + 100, SECOND).await.is_err());
    assert!(e.ingest("src", vec![json!("not an object")]).await.is_err());
    assert!(e.ingest(" ", vec![json!({})]).await.is_err());
    stop(worker).await;
}

#[tokio::test]
async fn cursors_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get_cursor("okta").await.unwrap(), None);
        s.put_cursor("okta", "2026-01-01T00:00:00Z").await.unwrap();
        s.put_cursor("okta", "2026-01-02T00:00:00Z").await.unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        s.get_cursor("okta").await.unwrap().as_deref(),
        Some("2026-01-02T00:00:00Z")
    );
}

const ON_CREATED: &str = r#"
playbook: note
on: { event: case.updated }
steps:
  - id: note
    uses: t.probe
    with: { case: "{{ event.case_id }}", by: "{{ event.actor.kind | default('?') }}" }
"#;

#[tokio::test]
async fn a_change_by_a_person_wakes_the_worker_for_the_case_playbooks() {
    let probe = Probe::default();
    let store = Arc::new(MemoryStore::new());
    let c = store
        .create(
            NewCase::new("t", Severity::Low),
            &WriteMeta::new(Actor::System, engine::cases::Timestamp::now()),
        )
        .await
        .unwrap();
    let e = engine(ON_CREATED, &probe, store.clone(), json!({}));
    let mut finished = e.subscribe();
    let worker = start(&e);
    let out = e
        .update_case(
            c.case.id,
            vec![CaseChange::AddComment("looked at it".into())],
            Actor::Person { name: "ana".into() },
        )
        .await
        .unwrap();
    assert_eq!(out.case.comments.len(), 1);
    let report = tokio::time::timeout(5 * SECOND, finished.recv())
        .await
        .expect("the playbook ran")
        .unwrap();
    assert_eq!(report.playbook, "note");
    assert_eq!(report.trigger, "case.updated");
    assert_eq!(probe.calls("note").len(), 1);
    assert!(store.pending_events(10).await.unwrap().is_empty());
    stop(worker).await;
}

const SLOW: &str = r#"
playbook: slow
on: { event: src }
concurrency: "k:{{ event.k }}"
steps:
  - id: a
    uses: t.probe
    with: { n: "{{ event.n }}" }
  - id: b
    uses: t.probe
    with: { n: "{{ steps.a.n }}", sleep_ms: "{{ event.sleep_ms }}" }
"#;

#[tokio::test]
async fn shutdown_parks_what_is_still_running_and_the_next_worker_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::default();
    let config = json!({"engine": {"shutdown_grace": "100ms"}});
    let seq;
    {
        let store = Arc::new(SledStore::open(dir.path()).unwrap());
        let e = engine(SLOW, &probe, store.clone(), config.clone());
        let worker = start(&e);
        let got = e
            .ingest("src", vec![json!({"n": 7, "k": 1, "sleep_ms": 60_000})])
            .await
            .unwrap();
        seq = got[0].seq.unwrap();
        wait_until(|| probe.calls("b").len() == 1).await;
        stop(worker).await;
        let parked = store
            .list_runs(&RunFilter {
                status: Some(RunState::Parked),
                ..RunFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(parked.len(), 1);
        let run = store.get_run(&parked[0].run_id).await.unwrap().unwrap();
        assert_eq!(
            run.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["a"],
            "only `a` finished"
        );
        assert!(store.check().await.unwrap().is_empty());
    }
    // The next start resumes it before anything new with its key: `a` is not run again,
    // `b` is, and only then the new run for the same key.
    probe.1.store(true, Ordering::SeqCst);
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let e = engine(SLOW, &probe, store.clone(), config);
    let next = e
        .ingest("src", vec![json!({"n": 8, "k": 1, "sleep_ms": 0})])
        .await
        .unwrap()[0]
        .seq
        .unwrap();
    let worker = start(&e);
    let resumed = e
        .wait_for(seq, 5 * SECOND)
        .await
        .unwrap()
        .expect("resumed run finishes");
    assert_eq!(
        resumed[0].status,
        RunStatus::Succeeded,
        "{:?}",
        resumed[0].error
    );
    let a = resumed[0].step("a").unwrap();
    assert_eq!((a.status, a.attempts), (Status::Succeeded, 1));
    let new = e
        .wait_for(next, 5 * SECOND)
        .await
        .unwrap()
        .expect("new run finishes");
    assert_eq!(new[0].status, RunStatus::Succeeded, "{:?}", new[0].error);
    let order: Vec<(String, Value)> = probe
        .order()
        .into_iter()
        .map(|(s, v)| (s, v["n"].clone()))
        .collect();
    assert_eq!(
        order,
        [
            ("a".to_string(), json!(7)),
            ("b".to_string(), json!(7)),
            ("b".to_string(), json!(7)),
            ("a".to_string(), json!(8)),
            ("b".to_string(), json!(8)),
        ]
    );
    stop(worker).await;
    assert!(store.unfinished_runs().await.unwrap().is_empty());
    assert!(store.check().await.unwrap().is_empty());
}

async fn wait_until(f: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition reached in time");
}

/// The engine and store settings of the "going live" example in `docs/configuration.md`
/// are valid.
#[test]
fn the_documented_engine_and_store_settings_parse() {
    let doc = include_str!("../../docs/configuration.md");
    let start = doc
        .find("## Example: going live")
        .and_then(|i| doc[i..].find("```yaml").map(|j| i + j + "```yaml".len()))
        .expect("an example");
    let end = doc[start..]
        .find("```")
        .map(|j| start + j)
        .expect("its end");
    let config: Value = engine::load::yaml::from_str(&doc[start..end]).unwrap();
    let store = engine::persist::StoreOptions::from_config(&config).unwrap();
    assert_eq!(store, engine::persist::StoreOptions::default());
    let worker = engine::schedule::WorkerConfig::from_config(&config).unwrap();
    assert_eq!(worker, engine::schedule::WorkerConfig::default());
    let mut relaxed = config.clone();
    relaxed["durability"] = json!("relaxed");
    relaxed["engine"]["shutdown_grace"] = json!("1m");
    assert_eq!(
        engine::persist::StoreOptions::from_config(&relaxed)
            .unwrap()
            .durability,
        engine::persist::Durability::Relaxed
    );
    assert_eq!(
        engine::schedule::WorkerConfig::from_config(&relaxed)
            .unwrap()
            .shutdown_grace,
        Duration::from_secs(60)
    );
    relaxed["engine"]["sla_every"] = json!("often");
    assert!(engine::schedule::WorkerConfig::from_config(&relaxed).is_err());
}

const NOTE: &str = r#"
playbook: note
on: { event: src }
steps:
  - id: c
    uses: t.comment
    with: { case: "{{ event.case }}", text: "seen" }
"#;

/// The state a crash leaves between a step's case change and its journal entry: the run
/// is recorded, its step committed the comment under the run's idempotency key, and the
/// journal has no entry for the step. Resuming runs the step again, which replays the
/// recorded change: one comment, not two.
#[tokio::test]
async fn a_case_change_committed_before_the_crash_is_replayed_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let case = store
        .create(
            NewCase::new("t", Severity::Low),
            &WriteMeta::new(Actor::System, engine::cases::Timestamp::now()),
        )
        .await
        .unwrap()
        .case;
    let run_id = engine::schedule::new_run_id();
    let record = engine::persist::RunRecord {
        summary: engine::persist::RunSummary {
            run_id: run_id.clone(),
            playbook: "note".into(),
            trigger: "src".into(),
            status: RunState::Running,
            started_at: "2026-01-01T00:00:00.000Z".into(),
            finished_at: None,
            duration_ms: None,
            event_key: None,
            inbox_seq: None,
            case_event: None,
            error: None,
        },
        input: engine::persist::RunInputRecord {
            event: json!({"case": case.id.to_string()}),
            case: None,
            depth: 0,
            seed: Some(1),
        },
        output: None,
        steps: Vec::new(),
    };
    store
        .start_runs(engine::persist::RunOrigin::Direct, &[record])
        .await
        .unwrap();
    let actor = Actor::Playbook {
        run_id: run_id.clone(),
        playbook: "note".into(),
        step: "c".into(),
    };
    store
        .update(
            case.id,
            vec![CaseChange::AddComment("seen".into())],
            &WriteMeta::new(actor, engine::cases::Timestamp::now()).with_key(&run_id, "c"),
        )
        .await
        .unwrap();

    let e = engine(NOTE, &Probe::default(), store.clone(), json!({}));
    let runs = e.resume().await.unwrap();
    let run = runs
        .iter()
        .find(|r| r.run_id == run_id)
        .expect("the run resumed");
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.step("c").unwrap().output, Some(json!({"comments": 1})));
    let after = store.get(case.id).await.unwrap().unwrap();
    assert_eq!(after.comments.len(), 1, "{:?}", after.comments);
    assert!(store.unfinished_runs().await.unwrap().is_empty());
}

#[test]
fn absurd_durations_in_the_config_do_not_panic() {
    for v in [json!(1e30), json!(-1), json!("100000000000y")] {
        let _ = engine::schedule::WorkerConfig::from_config(&json!({"engine": {"sla_every": v}}));
    }
    let c =
        engine::schedule::WorkerConfig::from_config(&json!({"engine": {"shutdown_grace": 1e12}}))
            .unwrap();
    assert_eq!(c.shutdown_grace, Duration::from_secs(24 * 3600));
}

const ONE_EFFECT: &str = r#"
playbook: one
on: { event: src }
steps:
  - id: a
    uses: t.probe
    with: { n: "{{ event.n }}" }
output:
  n: "{{ steps.a.n }}"
"#;

/// A run's last entries go with its final record: after its last step nothing is synced
/// on its own, so a strict run of one step with effects costs the worker's take, one flush
/// before the step starts and the final record (committed and flushed), and the record
/// still holds the step's result.
#[tokio::test]
async fn the_end_of_a_run_is_written_once_with_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let probe = Probe::default();
    let e = engine(ONE_EFFECT, &probe, store.clone(), json!({}));
    let got = e.ingest("src", vec![json!({"n": 7})]).await.unwrap();
    let seq = got[0].seq.unwrap();
    let before = store.stats();
    let worker = start(&e);
    let reports = e
        .wait_for(seq, 5 * SECOND)
        .await
        .unwrap()
        .expect("the run finishes");
    let after = store.stats();
    stop(worker).await;
    assert_eq!(
        reports[0].status,
        RunStatus::Succeeded,
        "{:?}",
        reports[0].error
    );
    assert_eq!(
        (
            after.commits - before.commits,
            after.flushes - before.flushes
        ),
        (2, 2),
        "the take (committed), the sync before `a` (flushed), the final record (both)"
    );
    let run = store.get_run(&reports[0].run_id).await.unwrap().unwrap();
    assert_eq!(run.summary.status, RunState::Succeeded);
    let steps: Vec<(&str, Status, Option<Value>)> = run
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.status, s.output.clone()))
        .collect();
    assert_eq!(steps, [("a", Status::Succeeded, Some(json!({"n": 7})))]);
    assert!(store.unfinished_runs().await.unwrap().is_empty());
    assert_eq!(probe.calls("a").len(), 1);
}
