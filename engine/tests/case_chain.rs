//! Case events chaining playbooks through `Engine`: the cascade create -> case.created ->
//! state change -> case.state_changed, the loop guard, once-only delivery across a crash,
//! incoming-event dedup, and the SLA watcher. The steps are test steps that change cases
//! through `ctx.store()` with `ctx.write_meta()`, like the built-in case steps do.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use engine::cases::{
    Actor, CaseChange, CaseEventKind, CaseId, CaseState, NewCase, Severity, Timestamp,
};
use engine::persist::{CaseRead, CaseWrite, Inbox, MemoryStore, SledStore, Store, WriteMeta};
use engine::step::Clock;
use engine::{Engine, Registry, RunReport, RunStatus, Services, StepContext, StepError, TypedStep};
use serde_json::{json, Map, Value};

fn text(input: &Map<String, Value>, key: &str) -> Result<String, StepError> {
    match input.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Ok(v.to_string()),
        None => Err(StepError::invalid_input(format!("missing `{key}`"))),
    }
}

/// Opens a case titled `title`.
struct OpenCase;

#[async_trait]
impl TypedStep for OpenCase {
    type Input = Map<String, Value>;
    type Output = Map<String, Value>;
    const NAME: &'static str = "test.open_case";
    fn description(&self) -> &'static str {
        "opens a case"
    }
    fn example(&self) -> Value {
        json!({"title": "t"})
    }
    async fn run(&self, input: Self::Input, ctx: &StepContext) -> Result<Self::Output, StepError> {
        let store = ctx.store()?;
        let new = NewCase::new(text(&input, "title")?, Severity::Medium);
        let out = store
            .create(new, &ctx.write_meta())
            .await
            .map_err(StepError::permanent)?;
        let mut m = Map::new();
        m.insert("case_id".into(), json!(out.case.id));
        Ok(m)
    }
}

/// Sets the state of case `case_id` to `to`.
struct SetState;

#[async_trait]
impl TypedStep for SetState {
    type Input = Map<String, Value>;
    type Output = Map<String, Value>;
    const NAME: &'static str = "test.set_state";
    fn description(&self) -> &'static str {
        "changes a case's state"
    }
    fn example(&self) -> Value {
        json!({"case_id": "CASE-000001", "to": "in_progress"})
    }
    async fn run(&self, input: Self::Input, ctx: &StepContext) -> Result<Self::Output, StepError> {
        let id: CaseId = text(&input, "case_id")?
            .parse()
            .map_err(StepError::invalid_input)?;
        let to: CaseState = text(&input, "to")?
            .parse()
            .map_err(StepError::invalid_input)?;
        ctx.store()?
            .update(
                id,
                vec![CaseChange::SetState { to, reason: None }],
                &ctx.write_meta(),
            )
            .await
            .map_err(StepError::permanent)?;
        Ok(input)
    }
}

/// A playbook name and the input its `test.record` step got.
type Seen = (String, Map<String, Value>);

/// Records its playbook and input.
#[derive(Clone, Default)]
struct Record {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Record {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Case ids seen by `playbook`, in order.
    fn cases_of(&self, playbook: &str) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|(p, _)| p == playbook)
            .map(|(_, m)| m["case_id"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

#[async_trait]
impl TypedStep for Record {
    type Input = Map<String, Value>;
    type Output = Map<String, Value>;
    const NAME: &'static str = "test.record";
    fn description(&self) -> &'static str {
        "records what it saw"
    }
    fn example(&self) -> Value {
        json!({})
    }
    async fn run(&self, input: Self::Input, ctx: &StepContext) -> Result<Self::Output, StepError> {
        self.seen
            .lock()
            .unwrap()
            .push((ctx.playbook.clone(), input.clone()));
        Ok(input)
    }
}

/// A clock stopped at one instant.
struct FixedClock(SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

const T0_MS: i64 = 1_700_000_000_000;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0_MS + ms).unwrap()
}

fn fixed_clock(ms: i64) -> Arc<dyn Clock> {
    Arc::new(FixedClock(
        SystemTime::UNIX_EPOCH + Duration::from_millis((T0_MS + ms) as u64),
    ))
}

fn person() -> WriteMeta {
    WriteMeta::new(Actor::Person { name: "ana".into() }, t(0))
}

fn engine_with(
    playbooks: &str,
    record: &Record,
    store: Arc<dyn Store>,
    config: Value,
    clock_ms: i64,
) -> Engine {
    let mut r = Registry::new();
    r.register(OpenCase)
        .register(SetState)
        .register(record.clone());
    let src =
        engine::load::parse_source(Path::new("t.yaml"), playbooks.as_bytes().to_vec()).unwrap();
    let bundle = engine::compile::compile_sources(&[src], &r).unwrap();
    Engine::new(
        bundle,
        Services::new()
            .with_store(store)
            .with_config(config)
            .with_clock(fixed_clock(clock_ms)),
    )
}

fn names(runs: &[RunReport]) -> Vec<&str> {
    runs.iter().map(|r| r.playbook.as_str()).collect()
}

/// The playbook that opens a case from a `manual` event, shared by the tests' bundles.
macro_rules! opener {
    () => {
        r#"
playbook: opener
on: { event: manual }
steps:
  - id: open
    uses: test.open_case
    with: { title: "{{ event.title }}" }
"#
    };
}

const CASCADE: &str = concat!(
    opener!(),
    r#"---
playbook: triage
on: { event: case.created }
steps:
  - id: start
    uses: test.set_state
    with: { case_id: "{{ event.case_id }}", to: in_progress }
---
playbook: assign
on:
  event: case.state_changed
  if: "{{ event.to == 'in_progress' }}"
steps:
  - id: note
    uses: test.record
    with:
      case_id: "{{ event.case_id }}"
      from: "{{ event.from }}"
      to: "{{ event.to }}"
      depth: "{{ run.depth }}"
      state: "{{ case.state }}"
"#
);

#[tokio::test]
async fn create_cascades_through_case_created_and_state_changed_playbooks() {
    let record = Record::default();
    let store = Arc::new(MemoryStore::new());
    let e = engine_with(CASCADE, &record, store.clone(), json!({}), 0);
    let runs = e
        .handle("manual", json!({"title": "Suspicious login"}))
        .await
        .unwrap();
    assert_eq!(names(&runs), ["opener", "triage", "assign"], "{runs:#?}");
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));

    let seen = record.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0].1;
    assert_eq!(got["case_id"], "CASE-000001");
    assert_eq!(got["from"], "new");
    assert_eq!(got["to"], "in_progress");
    assert_eq!(got["state"], "in_progress");
    // opener ran at depth 0, triage at 1 (case.created by opener), assign at 2.
    assert_eq!(got["depth"].to_string().trim_matches('"'), "2");

    let case = store.get(CaseId(1)).await.unwrap().unwrap();
    assert_eq!(case.state, CaseState::InProgress);
    let by_triage = case
        .timeline
        .iter()
        .find(|t| t.kind == "state_changed")
        .expect("state change on the timeline");
    assert!(
        matches!(&by_triage.actor, Actor::Playbook { playbook, step, .. } if playbook == "triage" && step == "start"),
        "{:?}",
        by_triage.actor
    );
    assert!(store.pending_events(10).await.unwrap().is_empty());
}

const OPENER: &str = opener!();

/// The opener and one `case.created` playbook per name, each recording what it saw.
fn fan_out(names: &[&str]) -> String {
    let mut yaml = OPENER.to_string();
    for who in names {
        yaml.push_str(&format!(
            r#"---
playbook: {who}
on: {{ event: case.created }}
steps:
  - id: note
    uses: test.record
    with: {{ who: {who}, case_id: "{{{{ event.case_id }}}}", title: "{{{{ case.title }}}}", event_title: "{{{{ event.case.title }}}}" }}
"#
        ));
    }
    yaml
}

#[tokio::test]
async fn every_playbook_on_one_case_event_gets_the_event_and_the_case() {
    let record = Record::default();
    let store = Arc::new(MemoryStore::new());
    let playbooks = fan_out(&["first", "second", "third"]);
    let e = engine_with(&playbooks, &record, store.clone(), json!({}), 0);
    let runs = e
        .handle("manual", json!({"title": "Fan out"}))
        .await
        .unwrap();
    assert_eq!(runs.len(), 4, "{runs:#?}");
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
    let mut seen: Vec<Map<String, Value>> = record.seen().into_iter().map(|(_, v)| v).collect();
    seen.sort_by_key(|v| v["who"].as_str().unwrap_or_default().to_string());
    let who: Vec<&str> = seen.iter().filter_map(|v| v["who"].as_str()).collect();
    assert_eq!(who, ["first", "second", "third"]);
    for v in &seen {
        assert_eq!(v["case_id"], "CASE-000001", "{v:?}");
        assert_eq!(v["title"], "Fan out", "{v:?}");
        assert_eq!(v["event_title"], "Fan out", "{v:?}");
    }
}

const FLIP: &str = r#"
playbook: flip
on: { event: case.state_changed }
steps:
  - id: flip
    uses: test.set_state
    with:
      case_id: "{{ event.case_id }}"
      to: "{{ 'on_hold' if event.to == 'in_progress' else 'in_progress' }}"
"#;

async fn run_flip(config: Value) -> (Vec<RunReport>, Arc<MemoryStore>) {
    let record = Record::default();
    let store = Arc::new(MemoryStore::new());
    let e = engine_with(FLIP, &record, store.clone(), config, 0);
    let c = store
        .create(NewCase::new("loop", Severity::Low), &person())
        .await
        .unwrap();
    store
        .update(
            c.case.id,
            vec![CaseChange::SetState {
                to: CaseState::InProgress,
                reason: None,
            }],
            &person(),
        )
        .await
        .unwrap();
    let runs = e.drain_case_events().await.unwrap();
    (runs, store)
}

#[tokio::test]
async fn the_loop_guard_stops_a_playbook_that_keeps_changing_state() {
    let (runs, store) = run_flip(json!({})).await;
    // Depths 1..=8 run, the 9th is stopped.
    assert_eq!(runs.len(), 9, "{runs:#?}");
    assert!(runs[..8].iter().all(|r| r.status == RunStatus::Succeeded));
    let stopped = &runs[8];
    assert_eq!(stopped.status, RunStatus::Failed);
    let err = stopped.error.as_deref().unwrap();
    assert!(err.contains("loop guard"), "{err}");
    assert!(err.contains("`flip`"), "{err}");
    assert!(err.contains("case.state_changed"), "{err}");
    assert!(err.contains("depth 9, beyond the limit of 8"), "{err}");

    let case = store.get(CaseId(1)).await.unwrap().unwrap();
    assert!(
        case.comments.iter().any(|c| c.text.contains("loop guard")
            && c.text.contains("`flip`")
            && c.text.contains("CASE-000001")),
        "{:#?}",
        case.comments
    );
    // The comment is on the timeline as the engine's own change.
    assert!(case.timeline.iter().any(|t| t.actor == Actor::System));
    assert!(store.pending_events(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_loop_guard_depth_comes_from_config() {
    let (runs, _) = run_flip(json!({"engine": {"max_depth": 3}})).await;
    assert_eq!(runs.len(), 4, "{runs:#?}");
    assert_eq!(runs[3].status, RunStatus::Failed);
    assert!(runs[3]
        .error
        .as_deref()
        .unwrap()
        .contains("beyond the limit of 3"));
}

const TWO_ON_CREATED: &str = r#"
playbook: first
on: { event: case.created }
steps:
  - id: r
    uses: test.record
    with: { case_id: "{{ event.case_id }}" }
---
playbook: second
on: { event: case.created }
steps:
  - id: r
    uses: test.record
    with: { case_id: "{{ event.case_id }}" }
"#;

fn sled_engine(dir: &Path, record: &Record) -> (Engine, Arc<SledStore>) {
    let store = Arc::new(SledStore::open(dir).unwrap());
    let e = engine_with(TWO_ON_CREATED, record, store.clone(), json!({}), 0);
    (e, store)
}

#[tokio::test]
async fn a_crash_between_runs_and_ack_never_runs_a_playbook_twice_for_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let record = Record::default();
    {
        let (e, store) = sled_engine(dir.path(), &record);
        for title in ["a", "b", "c"] {
            store
                .create(NewCase::new(title, Severity::Low), &person())
                .await
                .unwrap();
        }
        let pending = store.pending_events(10).await.unwrap();
        assert_eq!(pending.len(), 3);
        // Event 1 is delivered to both playbooks; the process dies before the ack.
        let runs = e.deliver_case_event(&pending[0]).await.unwrap();
        assert_eq!(names(&runs), ["first", "second"]);
        // Event 2: the engine recorded `first` and died before it started `second`.
        assert!(store
            .start_delivery(pending[1].id, "first", "run-lost")
            .await
            .unwrap());
        // Dropping the engine and the store here is the crash: nothing was acknowledged.
    }
    let (e, store) = sled_engine(dir.path(), &record);
    assert_eq!(store.pending_events(10).await.unwrap().len(), 3);
    let runs = e.drain_case_events().await.unwrap();
    // Event 1: nothing again; event 2: only `second`; event 3: both.
    assert_eq!(names(&runs), ["second", "first", "second"], "{runs:#?}");
    assert_eq!(record.cases_of("first"), ["CASE-000001", "CASE-000003"]);
    assert_eq!(
        record.cases_of("second"),
        ["CASE-000001", "CASE-000002", "CASE-000003"]
    );
    assert!(store.pending_events(10).await.unwrap().is_empty());
    assert!(store.deliveries(1).await.unwrap().is_empty());
    assert!(store.check().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_case_committed_before_a_crash_triggers_its_playbooks_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The commit happened; the process died before any dispatcher saw the event.
        let store = SledStore::open(dir.path()).unwrap();
        store
            .create(NewCase::new("committed", Severity::High), &person())
            .await
            .unwrap();
    }
    let record = Record::default();
    {
        let (e, _store) = sled_engine(dir.path(), &record);
        let runs = e.drain_case_events().await.unwrap();
        assert_eq!(names(&runs), ["first", "second"]);
        assert!(e.drain_case_events().await.unwrap().is_empty());
    }
    // And a restart after the ack delivers nothing again.
    let (e, _store) = sled_engine(dir.path(), &record);
    assert!(e.drain_case_events().await.unwrap().is_empty());
    assert_eq!(record.cases_of("first"), ["CASE-000001"]);
    assert_eq!(record.cases_of("second"), ["CASE-000001"]);
}

#[tokio::test]
async fn an_incoming_event_with_a_seen_key_runs_nothing() {
    let record = Record::default();
    let store = Arc::new(MemoryStore::new());
    let e = engine_with(CASCADE, &record, store.clone(), json!({}), 0);
    let ev = json!({"uuid": "u-1", "title": "once"});
    let key = engine::schedule::dedup_key("manual", &ev);
    assert_eq!(key.as_deref(), Some("manual:u-1"));
    let first = e
        .handle_once("manual", ev.clone(), key.as_deref())
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(names(&first.runs), ["opener", "triage", "assign"]);
    let again = e
        .handle_once("manual", ev.clone(), key.as_deref())
        .await
        .unwrap();
    assert!(again.duplicate);
    assert!(again.runs.is_empty());
    assert_eq!(store.count(&Default::default()).await.unwrap(), 1);
    // Without a key an event always runs.
    assert_eq!(
        engine::schedule::dedup_key("manual", &json!({"title": "x"})),
        None
    );
    let keyless = e
        .handle_once("manual", json!({"title": "x"}), None)
        .await
        .unwrap();
    assert!(!keyless.duplicate);
    assert_eq!(store.count(&Default::default()).await.unwrap(), 2);
}

const ON_BREACH: &str = r#"
playbook: escalate
on: { event: case.sla_breached }
steps:
  - id: r
    uses: test.record
    with: { case_id: "{{ event.case_id }}", breached: "{{ case.sla.breached }}" }
"#;

fn with_sla(title: &str, due_ms: i64) -> NewCase {
    let mut n = NewCase::new(title, Severity::High);
    n.sla_policy = Some("high".into());
    n.sla_due_at = Some(t(due_ms));
    n
}

const HOUR: i64 = 3_600_000;

#[tokio::test]
async fn the_sla_watcher_marks_each_overdue_open_case_once() {
    let record = Record::default();
    let store = Arc::new(MemoryStore::new());
    let e = engine_with(ON_BREACH, &record, store.clone(), json!({}), 0);
    store
        .create(with_sla("soon", HOUR), &person())
        .await
        .unwrap();
    store
        .create(with_sla("later", 3 * HOUR), &person())
        .await
        .unwrap();
    let closed = store
        .create(with_sla("closed", HOUR), &person())
        .await
        .unwrap();
    store
        .update(
            closed.case.id,
            vec![CaseChange::SetState {
                to: CaseState::Closed,
                reason: Some("false positive".into()),
            }],
            &person(),
        )
        .await
        .unwrap();
    store
        .create(NewCase::new("no sla", Severity::Low), &person())
        .await
        .unwrap();
    e.drain_case_events().await.unwrap();

    assert!(e.check_sla(t(HOUR - 1)).await.unwrap().breached.is_empty());
    let sweep = e.check_sla(t(2 * HOUR)).await.unwrap();
    assert_eq!(sweep.breached, [CaseId(1)]);
    assert_eq!(names(&sweep.runs), ["escalate"]);
    assert_eq!(record.cases_of("escalate"), ["CASE-000001"]);
    assert_eq!(record.seen()[0].1["breached"], json!(true));
    let c = store.get(CaseId(1)).await.unwrap().unwrap();
    assert!(c.sla.breached);
    assert!(c
        .timeline
        .iter()
        .any(|t| t.kind == "sla_breached" && t.actor == Actor::System));

    // Once per case: the next sweep only finds the case whose deadline passed since.
    let sweep = e.check_sla(t(4 * HOUR)).await.unwrap();
    assert_eq!(sweep.breached, [CaseId(2)]);
    assert!(e.check_sla(t(10 * HOUR)).await.unwrap().breached.is_empty());
    assert_eq!(record.cases_of("escalate"), ["CASE-000001", "CASE-000002"]);
    let closed = store.get(closed.case.id).await.unwrap().unwrap();
    assert!(!closed.sla.breached);
}

#[tokio::test]
async fn deadlines_that_passed_while_the_engine_was_stopped_are_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.create(with_sla("a", HOUR), &person()).await.unwrap();
        store
            .create(with_sla("b", 2 * HOUR), &person())
            .await
            .unwrap();
        for ev in store.pending_events(10).await.unwrap() {
            store.ack_event(ev.id).await.unwrap();
        }
    }
    // The engine comes back a day later.
    let record = Record::default();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let e = engine_with(ON_BREACH, &record, store.clone(), json!({}), 24 * HOUR);
    let sweep = e.check_sla(t(24 * HOUR)).await.unwrap();
    assert_eq!(sweep.breached, [CaseId(1), CaseId(2)]);
    assert_eq!(record.cases_of("escalate"), ["CASE-000001", "CASE-000002"]);
    let kinds: Vec<CaseEventKind> = store
        .get(CaseId(2))
        .await
        .unwrap()
        .unwrap()
        .timeline
        .iter()
        .filter(|t| t.kind == "sla_breached")
        .map(|_| CaseEventKind::SlaBreached)
        .collect();
    assert_eq!(kinds.len(), 1);
    assert!(store.sla_due(t(48 * HOUR), 10).await.unwrap().is_empty());
}
