//! Shared by the `cases_*` and `notify_*` tests (`#[path = "support/cases.rs"] mod support;`):
//! run one built-in step at a time through the engine's executor against one
//! [`MemoryStore`], a clock the test moves, a fixed seed and an in-memory outbox.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use engine::notify::Outbox;
use engine::persist::MemoryStore;
use engine::schedule::{execute, RunInput};
use engine::step::Clock;
use engine::{Registry, Services, StepError};
use serde_json::{json, Value};

/// 2026-09-21T12:00:00Z, a fixed start for every test.
pub const START_MS: u64 = 1_790_000_000_000;

pub struct TestClock(Mutex<SystemTime>);

impl TestClock {
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += d;
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Harness {
    pub store: Arc<MemoryStore>,
    pub outbox: Arc<Outbox>,
    pub clock: Arc<TestClock>,
    pub config: Value,
    pub seed: u64,
    runs: AtomicU32,
}

impl Harness {
    pub fn new(config: Value) -> Self {
        Harness {
            store: Arc::new(MemoryStore::new()),
            outbox: Arc::new(Outbox::in_memory()),
            clock: Arc::new(TestClock(Mutex::new(
                SystemTime::UNIX_EPOCH + Duration::from_millis(START_MS),
            ))),
            config,
            seed: 7,
            runs: AtomicU32::new(0),
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn services(&self) -> Arc<Services> {
        let mut s = Services::new()
            .with_seed(self.seed)
            .with_config(self.config.clone())
            .with_store(self.store.clone())
            .with_clock(self.clock.clone());
        s.insert(self.outbox.clone());
        Arc::new(s)
    }

    /// Run `uses` with `with` as step `s` of a new run.
    pub async fn run(&self, uses: &str, with: Value) -> Result<Value, StepError> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        self.run_as(&format!("run-{n}"), uses, with).await
    }

    /// Run `uses` as step `s` of run `run_id` (the same id twice: a re-run of the step).
    pub async fn run_as(&self, run_id: &str, uses: &str, with: Value) -> Result<Value, StepError> {
        let mut registry = Registry::new();
        steps::register_builtin(&mut registry);
        let doc = json!({"playbook": "t", "on": {"event": "test"},
            "steps": [{"id": "s", "uses": uses, "with": with}]});
        let src = engine::load::parse_source(Path::new("t.yaml"), doc.to_string().into_bytes())
            .unwrap_or_else(|d| panic!("{d}"));
        let bundle = engine::compile::compile_sources(&[src], &registry).unwrap_or_else(|ds| {
            panic!("{}", ds.iter().map(|d| d.to_string()).collect::<String>())
        });
        let input = RunInput {
            run_id: run_id.to_string(),
            trigger: "test".into(),
            event: json!({}),
            case: None,
            depth: 0,
        };
        let report = execute(bundle.playbooks[0].clone(), input, self.services()).await;
        let step = report
            .step("s")
            .cloned()
            .unwrap_or_else(|| panic!("no step"));
        match (step.output, step.error) {
            (_, Some(e)) => Err(e),
            (Some(o), None) => Ok(o),
            (None, None) => panic!("step neither succeeded nor failed"),
        }
    }

    pub async fn ok(&self, uses: &str, with: Value) -> Value {
        self.run(uses, with)
            .await
            .unwrap_or_else(|e| panic!("{uses} failed: {e:?}"))
    }

    pub async fn err(&self, uses: &str, with: Value) -> StepError {
        match self.run(uses, with).await {
            Ok(o) => panic!("{uses} succeeded: {o:#}"),
            Err(e) => e,
        }
    }

    /// Create a case; its id.
    pub async fn create(&self, with: Value) -> String {
        let out = self.ok("cases.create", with).await;
        out["case"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {out:#}"))
            .to_string()
    }

    pub async fn case(&self, id: &str) -> Value {
        let id = id.parse().unwrap_or_else(|e| panic!("{e}"));
        let c = engine::persist::CaseRead::get(self.store.as_ref(), id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no case {id}"));
        serde_json::to_value(c).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Milliseconds between two RFC 3339 timestamps of case JSON.
pub fn millis_between(from: &Value, to: &Value) -> i64 {
    let p = |v: &Value| -> i64 {
        let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
        s.parse::<engine::cases::Timestamp>()
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .unix_millis()
    };
    p(to) - p(from)
}

pub const HOUR_MS: i64 = 3_600_000;
