//! Run one test: a fresh in-memory store with the test's cases, a fixed clock and seed,
//! the playbooks compiled against a registry that answers the test's mocks, and the
//! events fed through [`Engine::handle_once`] exactly as `engine run` feeds them, with
//! the SLA watcher ([`Engine::check_sla`]) before and after, at the test's `now`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::spec::{TestCase, TestFile};
use crate::cases::{Actor, Case, CaseChange, Timestamp};
use crate::notify::{Notification, Outbox};
use crate::persist::{CaseQuery, MemoryStore, Store, WriteMeta};
use crate::report::RunReport;
use crate::schedule::{dedup_key, Engine};
use crate::step::{Clock, Registry, Services};

/// What a test's events did.
#[derive(Debug, Default)]
pub struct Actual {
    /// Every run, in the order the engine finished handling them.
    pub runs: Vec<RunReport>,
    /// Every case in the store afterwards, in id order.
    pub cases: Vec<Case>,
    /// Every notification sent, in order.
    pub notifications: Vec<Notification>,
}

/// A clock that always says the same time: timestamps, SLA deadlines and `now` in
/// templates come out the same on every run.
struct FixedClock(SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

fn system_time(t: Timestamp) -> SystemTime {
    let ms = t.unix_millis();
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Who the test's own cases are created by.
fn tester() -> Actor {
    Actor::Person {
        name: "engine test".into(),
    }
}

/// Run `test` of `file` with the step types of `registry` (fresh per test, so no step
/// keeps state from another test).
pub async fn run_test(
    file: &TestFile,
    test: &TestCase,
    registry: Registry,
) -> Result<Actual, String> {
    let registry = super::mock::wrap(&registry, &test.mocks);
    let mut bundle = crate::compile::compile_sources(&file.playbooks, &registry).map_err(|d| {
        format!(
            "the playbooks did not compile: {}",
            d.first().map(|d| d.headline()).unwrap_or_default()
        )
    })?;
    // Retries happen, but without waiting: a mocked outage must not make tests slow.
    for plan in &mut bundle.playbooks {
        if let Some(plan) = Arc::get_mut(plan) {
            for s in &mut plan.steps {
                s.retry.backoff = Duration::ZERO;
                s.retry.max_backoff = Duration::ZERO;
            }
        }
    }
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    seed_cases(store.as_ref(), test).await?;
    let outbox = Arc::new(Outbox::in_memory().quiet());
    let mut services = Services::new()
        .with_config(test.config.clone())
        .with_store(store.clone())
        .with_clock(Arc::new(FixedClock(system_time(test.now))))
        .with_seed(test.seed);
    services.insert(outbox.clone());
    let engine = Engine::new(bundle, services);

    let mut actual = Actual::default();
    // As `engine run`: deadlines already passed first, then the events, then the SLA
    // watcher again (at the test's fixed `now`).
    let swept = engine
        .check_sla(test.now)
        .await
        .map_err(|e| format!("SLA watcher: {e}"))?;
    actual.runs.extend(swept.runs);
    for (label, event) in &test.events {
        let key = dedup_key(&test.source, event);
        let handled = engine
            .handle_once(&test.source, event.clone(), key.as_deref())
            .await
            .map_err(|e| format!("event {label}: {e}"))?;
        actual.runs.extend(handled.runs);
    }
    let swept = engine
        .check_sla(test.now)
        .await
        .map_err(|e| format!("SLA watcher: {e}"))?;
    actual.runs.extend(swept.runs);
    let mut cases = store
        .query(&CaseQuery::all())
        .await
        .map_err(|e| e.to_string())?;
    cases.sort_by_key(|c| c.id);
    actual.cases = cases;
    actual.notifications = outbox.sent();
    Ok(actual)
}

/// Create the test's starting cases, then drop the case events that caused: the cases
/// were there before the test, so no playbook hears of their creation.
async fn seed_cases(store: &dyn Store, test: &TestCase) -> Result<(), String> {
    for (i, c) in test.cases.iter().enumerate() {
        let meta = WriteMeta::new(tester(), c.created_at.unwrap_or(test.now));
        let err = |e: crate::persist::StoreError| format!("case {i} of `cases`: {e}");
        let created = store.create(c.new.clone(), &meta).await.map_err(err)?;
        let mut changes: Vec<CaseChange> = c
            .comments
            .iter()
            .map(|t| CaseChange::AddComment(t.clone()))
            .collect();
        if c.state != created.case.state {
            let reason = c.resolution.clone().or_else(|| {
                c.state
                    .needs_resolution()
                    .then(|| "set by the test".to_string())
            });
            changes.push(CaseChange::SetState {
                to: c.state,
                reason,
            });
        }
        if !changes.is_empty() {
            store
                .update(created.case.id, changes, &meta)
                .await
                .map_err(err)?;
        }
    }
    loop {
        let pending = store.pending_events(256).await.map_err(|e| e.to_string())?;
        if pending.is_empty() {
            return Ok(());
        }
        for ev in pending {
            store.ack_event(ev.id).await.map_err(|e| e.to_string())?;
        }
    }
}
