//! Playbook tests through the library API, with test steps: what passes, what fails and
//! where (the field path and the position of the expectation), mocks by step type and by
//! step id (per `for_each` item too), the SLA watcher at the test's clock, a failed run
//! nobody expected, and test files that do not check out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use engine::cases::{NewCase, Severity};
use engine::error::Code;
use engine::testing::{self, Outcome, Status};
use engine::{Registry, StepContext, StepError, TypedStep};
use serde_json::{json, Map, Value};

/// Returns its input.
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
        json!({})
    }
    async fn run(&self, input: Self::Input, _ctx: &StepContext) -> Result<Self::Output, StepError> {
        Ok(input)
    }
    fn check_config(&self, config: &Value) -> Result<(), String> {
        match config.get("echo").and_then(|e| e.get("volume")) {
            None => Ok(()),
            Some(v) if v.is_u64() => Ok(()),
            Some(v) => Err(format!(
                "config `echo.volume`: expected a number, found `{v}`"
            )),
        }
    }
}

/// Opens a case titled `title`.
struct OpenCase;

#[async_trait]
impl TypedStep for OpenCase {
    type Input = Map<String, Value>;
    type Output = Value;
    const NAME: &'static str = "test.open_case";
    fn description(&self) -> &'static str {
        "opens a case"
    }
    fn example(&self) -> Value {
        json!({"title": "t"})
    }
    async fn run(&self, input: Self::Input, ctx: &StepContext) -> Result<Value, StepError> {
        let title = input
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("untitled");
        let out = ctx
            .store()?
            .create(NewCase::new(title, Severity::Low), &ctx.write_meta())
            .await
            .map_err(StepError::permanent)?;
        Ok(json!({"case": out.case}))
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Echo).register(OpenCase);
    r
}

const PLAYBOOKS: &str = r#"
playbook: intake
on: { event: demo }
steps:
  - id: look
    uses: test.echo
    with: { who: "{{ event.user }}" }
  - id: each
    uses: test.echo
    for_each: "{{ event.items }}"
    with: { item: "{{ item }}" }
  - id: open
    uses: test.open_case
    if: "{{ steps.look.who != 'nobody' }}"
    with: { title: "case for {{ steps.look.who }}" }
output: { who: "{{ steps.look.who }}" }
---
playbook: on-breach
on: { event: case.sla_breached }
steps:
  - id: note
    uses: test.echo
    with: { case: "{{ case.id }}" }
"#;

/// A folder with the playbooks and `tests/t.test.yaml` holding `tests`.
fn suite(tests: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("p.yaml"), PLAYBOOKS).expect("write playbooks");
    std::fs::create_dir(dir.path().join("tests")).expect("tests folder");
    let file = dir.path().join("tests/t.test.yaml");
    std::fs::write(&file, tests).expect("write tests");
    (dir, file)
}

fn run(file: &Path, filter: Option<&str>) -> Vec<Outcome> {
    let mut diags = Vec::new();
    let loaded = testing::load_test_file(file, &registry(), &mut diags);
    assert!(diags.is_empty(), "{}", render(&diags));
    let loaded = Arc::new(loaded.expect("no diagnostics, so a test file"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(testing::run_all(&[loaded], filter, &registry, 4))
        .0
}

fn render(diags: &[engine::Diagnostic]) -> String {
    diags.iter().map(|d| d.to_string()).collect()
}

fn failures(o: &Outcome) -> Vec<(String, usize, String, String)> {
    match &o.status {
        Status::Failed(f) => f
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    f.at.line,
                    f.expected.clone(),
                    f.actual.clone(),
                )
            })
            .collect(),
        other => panic!("`{}` should have failed, but: {other:?}", o.name),
    }
}

#[test]
fn a_passing_test_passes_and_mocks_replace_results() {
    let (_dir, file) = suite(
        r#"
source: demo
tests:
  - name: real steps
    event: { user: ann, items: [1, 2] }
    expect:
      runs:
        intake:
          status: succeeded
          output: { who: ann }
          steps:
            look: { status: succeeded, attempts: 1, output: { who: ann } }
            each: { output: [{ item: 1 }, { item: 2 }] }
            open: succeeded
        on-breach: 0
      cases:
        - { id: CASE-000001, title: case for ann, severity: low, state: new, assignee: null }
  - name: a mock by step type answers every step of that type
    event: { user: ann, items: [1] }
    mocks:
      - { uses: test.echo, output: { who: nobody, item: mocked } }
    expect:
      runs:
        intake:
          steps: { each: { output: [{ item: mocked }] }, open: skipped }
          output: { who: nobody }
      cases: []
  - name: a mock by step id beats a mock by type, and answers each item
    event: { user: ann, items: [1, 2, 3] }
    mocks:
      - { uses: test.echo, output: { who: nobody } }
      - { playbook: intake, step: each, output: { item: x } }
    expect:
      runs:
        intake:
          steps: { each: { output: [{ item: x }, { item: x }, { item: x }] }, open: skipped }
  - name: a mocked error fails the run, which the test expects
    event: { user: ann, items: [] }
    mocks:
      - { step: look, error: { kind: permanent, message: "directory said no" } }
    expect:
      runs:
        intake:
          status: failed
          error: directory said no
          steps:
            look: { status: failed, error: { kind: permanent, message: { contains: said no } } }
            open: cancelled
"#,
    );
    let outcomes = run(&file, None);
    assert_eq!(outcomes.len(), 4);
    for o in &outcomes {
        assert!(o.passed(), "`{}`: {:?}", o.name, o.status);
    }
}

#[test]
fn wrong_expectations_fail_with_the_field_and_the_line() {
    let (_dir, file) = suite(
        r#"
source: demo
tests:
  - name: wrong
    event: { user: ann, items: [1] }
    expect:
      runs:
        intake:
          output: { who: bob }
          steps: { open: skipped, each: { output: [{ item: 1 }, { item: 2 }] } }
        on-breach: 1
      cases:
        - title: { contains: bob }
          state: { one_of: [resolved, closed] }
"#,
    );
    let outcomes = run(&file, None);
    let got = failures(&outcomes[0]);
    let want = vec![
        (
            "runs.intake.output.who".to_string(),
            9,
            "\"bob\"".to_string(),
            "\"ann\"".to_string(),
        ),
        (
            "runs.intake.steps.open.status".into(),
            10,
            "\"skipped\"".into(),
            "\"succeeded\"".into(),
        ),
        (
            "runs.intake.steps.each.output".into(),
            10,
            "[{\"item\":1},{\"item\":2}]".into(),
            "[{\"item\":1}]".into(),
        ),
        ("runs.on-breach".into(), 11, "1 run".into(), "no run".into()),
        (
            "cases[0].title".into(),
            13,
            "text containing \"bob\"".into(),
            "\"case for ann\"".into(),
        ),
        (
            "cases[0].state".into(),
            14,
            "one of \"resolved\", \"closed\"".into(),
            "\"new\"".into(),
        ),
    ];
    assert_eq!(got, want);
}

#[test]
fn an_unexpected_failed_run_fails_the_test() {
    let (_dir, file) = suite(
        r#"
source: demo
tests:
  - name: nobody said this run may fail
    event: { user: ann, items: [] }
    mocks: [{ step: look, timeout: true }]
    expect:
      cases: []
"#,
    );
    let got = failures(&run(&file, None)[0]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "runs.intake");
    assert!(got[0].3.contains("timed out (mocked)"), "{got:?}");
}

#[test]
fn the_sla_watcher_runs_at_the_test_clock() {
    let (_dir, file) = suite(
        r#"
source: demo
now: 2026-03-01T12:00:00Z
tests:
  - name: a deadline in the past is breached before the events
    cases:
      - { title: old, sla: { due_at: 2026-03-01T11:00:00Z } }
      - { title: fresh, sla: { due_at: 2026-03-01T13:00:00Z } }
      - { title: closed, state: closed, sla: { due_at: 2026-03-01T11:00:00Z } }
    expect:
      runs: { on-breach: { steps: { note: { output: { case: CASE-000001 } } } } }
      cases:
        - { title: old, sla: { breached: true } }
        - { title: fresh, sla: { breached: false, due_at: 2026-03-01T13:00:00Z } }
        - { title: closed, state: closed, resolution: set by the test, sla: { breached: false } }
"#,
    );
    let outcomes = run(&file, None);
    assert!(outcomes[0].passed(), "{:?}", outcomes[0].status);
}

#[test]
fn the_filter_selects_tests_by_name() {
    let (_dir, file) = suite(
        r#"
source: demo
tests:
  - { name: first one, event: { user: a, items: [] } }
  - { name: second one, event: { user: b, items: [] } }
"#,
    );
    let names: Vec<String> = run(&file, Some("second"))
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["second one"]);
}

#[test]
fn test_files_are_checked_like_playbooks() {
    let (dir, file) = suite(
        r#"
source: demo
tests:
  - name: typo
    events: [{ user: a, items: [] }, missing.json]
    mocks: [{ step: lok, output: {} }, { uses: test.echo }]
    expect:
      runs:
        intak: 1
        intake: { steps: { opne: skipped } }
      cases: [{ severity: huge }]
  - name: typo
    evnt: {}
"#,
    );
    let mut diags = Vec::new();
    assert!(testing::load_test_file(&file, &registry(), &mut diags).is_none());
    let codes: Vec<(Code, usize)> = diags.iter().map(|d| (d.code, d.pos.line)).collect();
    assert_eq!(
        codes,
        [
            (Code::TestEvent, 5),
            (Code::TestUnknownStep, 6),
            (Code::InvalidValue, 6),
            (Code::TestUnknownPlaybook, 9),
            (Code::TestUnknownStep, 10),
            (Code::InvalidValue, 11),
            (Code::TestDuplicateName, 12),
            (Code::UnknownKey, 13),
        ],
        "{}",
        render(&diags)
    );
    assert!(diags.iter().all(|d| d.file == file));
    assert!(diags[0].test.as_deref() == Some("typo"));
    let text = render(&diags);
    assert!(text.contains("did you mean `look`?"), "{text}");
    assert!(text.contains("did you mean `intake`?"), "{text}");
    assert!(text.contains("did you mean `open`?"), "{text}");
    assert!(text.contains("did you mean `event`?"), "{text}");
    drop(dir);
}

#[test]
fn discovery_finds_test_files_and_refuses_other_files() {
    let (dir, file) = suite("tests: []\n");
    let found = testing::discover(&[dir.path().to_path_buf()]).expect("a folder");
    assert_eq!(found, [file]);
    let err = testing::discover(&[dir.path().join("p.yaml")]).expect_err("not a test file");
    assert!(err[0].message.contains("not a playbook test file"));
}

#[test]
fn config_problems_are_reported_where_the_test_writes_them() {
    let (_dir, file) = suite(
        r#"
source: demo
config: { echo: { volume: 3 } }
tests:
  - name: loud
    event: { user: a, items: [] }
    config:
      echo: { volume: loud }
  - name: fine
    event: { user: a, items: [] }
"#,
    );
    let mut diags = Vec::new();
    assert!(testing::load_test_file(&file, &registry(), &mut diags).is_none());
    assert_eq!(diags.len(), 1, "{}", render(&diags));
    assert_eq!((diags[0].pos.line, diags[0].pos.col), (8, 23));
    assert_eq!(diags[0].test.as_deref(), Some("loud"));
    assert!(
        diags[0].message.contains("(read by step type `test.echo`)"),
        "{}",
        render(&diags)
    );
}
