//! Schedule: decide which playbooks an event starts, and run them.
//!
//! [`ready`] is the pure scheduling decision, [`retry`] the pure backoff rules, and
//! [`executor`] runs one plan on tokio, journaling each step ([`journal`]). [`Engine`] ties
//! them to events: it matches each event against every playbook's trigger (`on.event` and
//! `on.if`), serialises runs that share a `concurrency` key ([`locks`]), and runs the rest
//! concurrently.
//!
//! Every run goes the same way ([`lifecycle`]): its record is written to the store's run
//! journal in the transaction that consumes what started it (an inbox entry, a case event),
//! it takes its place in its concurrency key's queue, runs with its journal, and its final
//! record is written. Two drivers use that path: the one-shot calls ([`Engine::handle`],
//! [`Engine::drain_case_events`], [`Engine::resume`], used by `engine run` and tests) wait
//! for what they start; the [`worker`] ([`Engine::run_worker`], used by `engine serve`)
//! takes queued incoming events and case events as they come and runs them in the
//! background. Use one or the other on a store, not both at once.

pub mod executor;
pub mod journal;
mod lifecycle;
mod locks;
pub mod ready;
pub mod retry;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use minijinja::Value as MjValue;
use rand::Rng;
use serde_json::Value;
use tokio::sync::{broadcast, Notify};

use crate::cases::{Actor, Case, CaseChange, CaseEvent, CaseEventKind, CaseId, Timestamp};
use crate::compile::{lazy_json, Bundle, Plan};
use crate::persist::{Incoming, NewIncoming, PendingEvent, RunOrigin, Store, WriteMeta};
use crate::report::{RunReport, RunStatus};
use crate::step::Services;
pub use executor::{execute, execute_with, Execution, RunInput};
use lifecycle::{Job, Lineage};
use locks::KeyedLocks;
pub use worker::{Ingested, TickFuture, TickHook, WorkerConfig};

/// How deep a chain of case-event runs may go before the loop guard stops it.
pub const DEFAULT_MAX_DEPTH: u32 = 8;

/// How many finished-run reports a slow subscriber may fall behind before it misses some.
const REPORT_BACKLOG: usize = 1024;

/// Runs playbooks of a bundle for the events it is given.
pub struct Engine {
    bundle: Bundle,
    shared: Arc<Shared>,
    worker: WorkerConfig,
}

/// What the engine shares with the tasks of its runs, which outlive a borrow of it.
pub(crate) struct Shared {
    services: Arc<Services>,
    locks: KeyedLocks,
    max_depth: u32,
    /// Every finished run.
    finished: broadcast::Sender<Arc<RunReport>>,
    /// New work for the worker: incoming events, case events, finished runs.
    wake: Notify,
    /// The worker took inbox entries (for [`Engine::wait_for`]).
    progress: Notify,
    /// Runs of this process that were queued and have not finished (parked at shutdown).
    in_flight: Mutex<HashSet<String>>,
    /// The depth of the runs this process launched (see [`Depths`]).
    depths: Depths,
    /// Periodic hooks run by the worker.
    ticks: Mutex<Vec<TickHook>>,
}

/// How many run depths [`Depths`] holds before it starts over.
const DEPTHS_MAX: usize = 8192;

/// The depth of the runs this process launched, by run id: the loop guard needs the
/// depth of the run that caused a case event, and reading it from the run's record meant
/// decoding the whole record (a case event's run holds the event with two cases, 12 KB)
/// for one number, 1% of an IAM chain's CPU. A run's depth never changes, so what is
/// here is always right; a run not here (another process's, an older one, or after the
/// map started over at [`DEPTHS_MAX`]) is read from the store as before.
#[derive(Default)]
struct Depths(Mutex<HashMap<String, u32>>);

impl Depths {
    fn insert(&self, run_id: &str, depth: u32) {
        let mut m = lock(&self.0);
        if m.len() >= DEPTHS_MAX {
            m.clear();
        }
        m.insert(run_id.to_string(), depth);
    }

    fn get(&self, run_id: &str) -> Option<u32> {
        lock(&self.0).get(run_id).copied()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Engine {
    pub fn new(bundle: Bundle, services: Services) -> Self {
        let max_depth = services
            .config
            .get("engine")
            .and_then(|e| e.get("max_depth"))
            .and_then(Value::as_u64)
            .map(|d| d.clamp(1, 100) as u32)
            .unwrap_or(DEFAULT_MAX_DEPTH);
        let worker = WorkerConfig::from_config(&services.config).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "invalid `engine` worker settings; using the defaults");
            WorkerConfig::default()
        });
        let (finished, _) = broadcast::channel(REPORT_BACKLOG);
        Engine {
            bundle,
            shared: Arc::new(Shared {
                services: Arc::new(services),
                locks: KeyedLocks::default(),
                max_depth,
                finished,
                wake: Notify::new(),
                progress: Notify::new(),
                in_flight: Mutex::new(HashSet::new()),
                depths: Depths::default(),
                ticks: Mutex::new(Vec::new()),
            }),
            worker,
        }
    }

    fn store(&self) -> Option<&Arc<dyn Store>> {
        self.shared.services.store.as_ref()
    }

    /// Run the playbooks an outside event starts, then every playbook the case events they
    /// cause start, until no case event is left. Returns every run, in order. The event
    /// always runs; see [`Engine::handle_once`] for deduplicated delivery.
    pub async fn handle(&self, source: &str, event: Value) -> Result<Vec<RunReport>, crate::Error> {
        Ok(self.handle_once(source, event, None).await?.runs)
    }

    /// Like [`Engine::handle`], but with a dedup key (see [`dedup_key`]) the event runs only
    /// the first time the store sees that key: with a store, the event is queued in the
    /// inbox with its key (durably) and taken from it at once, so it goes the same way as
    /// an event the worker takes; a later delivery with the same key is reported as a
    /// duplicate and runs nothing. Without a key the event always runs; without a store it
    /// runs without inbox or journal.
    pub async fn handle_once(
        &self,
        source: &str,
        event: Value,
        dedup_key: Option<&str>,
    ) -> Result<Handled, crate::Error> {
        let Some(store) = self.store().cloned() else {
            let runs = self.dispatch_at(source, event, None, 0).await;
            return Ok(Handled {
                duplicate: false,
                runs,
            });
        };
        let received_at = self.now();
        let queued = store
            .enqueue_incoming(vec![NewIncoming {
                source: source.to_string(),
                key: dedup_key.map(str::to_string),
                event: event.clone(),
                received_at,
            }])
            .await?;
        let Some(seq) = queued.first().and_then(|q| q.seq) else {
            tracing::info!(key = dedup_key.unwrap_or(""), "duplicate event skipped");
            return Ok(Handled {
                duplicate: true,
                runs: Vec::new(),
            });
        };
        let incoming = Incoming {
            seq,
            source: source.to_string(),
            key: dedup_key.map(str::to_string),
            event,
            received_at,
        };
        let jobs = self.take_incoming(incoming).await?;
        let mut runs = self.run_to_end(jobs).await;
        runs.extend(self.drain_case_events().await?);
        Ok(Handled {
            duplicate: false,
            runs,
        })
    }

    /// Catches up after a stop or a crash, and waits for it: resumes every unfinished run
    /// of the store (running or parked; journaled steps are not run again, see
    /// [`journal`]), then runs the incoming events still queued in the inbox, then
    /// delivers pending case events. Returns every run that finished. The worker does the
    /// same at start, in the background.
    pub async fn resume(&self) -> Result<Vec<RunReport>, crate::Error> {
        let Some(store) = self.store().cloned() else {
            return Ok(Vec::new());
        };
        let jobs = self.resumable().await?;
        let mut reports = self.run_to_end(jobs).await;
        loop {
            let queued = store.pending_incoming(64).await?;
            if queued.is_empty() {
                break;
            }
            for incoming in queued {
                let jobs = self.take_incoming(incoming).await?;
                reports.extend(self.run_to_end(jobs).await);
            }
        }
        reports.extend(self.drain_case_events().await?);
        Ok(reports)
    }

    /// The SLA watcher: marks every open case whose SLA was due at or before `now` as
    /// breached (one `case.sla_breached` per case, also for deadlines that passed while
    /// the engine was stopped), then delivers the case events that causes.
    pub async fn check_sla(&self, now: Timestamp) -> Result<SlaSweep, crate::Error> {
        let breached = self.mark_sla_breaches(now).await?;
        let runs = if breached.is_empty() {
            Vec::new()
        } else {
            self.drain_case_events().await?
        };
        Ok(SlaSweep { breached, runs })
    }

    /// Marks overdue cases breached (their `case.sla_breached` events wait in the outbox).
    async fn mark_sla_breaches(&self, now: Timestamp) -> Result<Vec<CaseId>, crate::Error> {
        let mut sweep = SlaSweep::default();
        let Some(store) = self.store().cloned() else {
            return Ok(Vec::new());
        };
        let mut failed = std::collections::HashSet::new();
        loop {
            let due: Vec<Case> = store
                .sla_due(now, 64 + failed.len())
                .await?
                .into_iter()
                .filter(|c| !failed.contains(&c.id))
                .collect();
            if due.is_empty() {
                break;
            }
            for c in due {
                let meta = WriteMeta::new(Actor::System, now);
                match store
                    .update(c.id, vec![CaseChange::MarkSlaBreached], &meta)
                    .await
                {
                    Ok(out) if !out.events.is_empty() => sweep.breached.push(c.id),
                    Ok(_) => {}
                    Err(e) => {
                        // One case that cannot be changed must not stop the others; it
                        // is tried again on the next sweep.
                        tracing::error!(case = %c.id, error = %e, "could not mark the SLA breached");
                        failed.insert(c.id);
                    }
                }
            }
        }
        Ok(sweep.breached)
    }

    /// Deliver pending case events to the playbooks they trigger, until none is left, and
    /// wait for the runs. Each event is acknowledged in the transaction that records the
    /// runs it starts (they are in the run journal from then on, so a crash resumes them
    /// instead of losing them); playbooks with a delivery record for the event (see
    /// [`Engine::deliver_case_event`]) are not started again.
    pub async fn drain_case_events(&self) -> Result<Vec<RunReport>, crate::Error> {
        let Some(store) = self.store().cloned() else {
            return Ok(Vec::new());
        };
        let mut reports = Vec::new();
        loop {
            let pending = store.pending_events(64).await?;
            if pending.is_empty() {
                return Ok(reports);
            }
            for ev in pending {
                let jobs = self.take_case_event(&ev, true).await?;
                reports.extend(self.run_to_end(jobs).await);
            }
        }
    }

    /// Start the playbooks one case event triggers and wait for them, without
    /// acknowledging the event. Each (event, playbook) pair is recorded in the store with
    /// its run's journal record before the run starts, so a redelivery after a crash skips
    /// the playbooks already started (and the worker resumes their runs): a pair never
    /// runs twice.
    pub async fn deliver_case_event(&self, ev: &CaseEvent) -> Result<Vec<RunReport>, crate::Error> {
        let jobs = self.take_case_event(ev, false).await?;
        Ok(self.run_to_end(jobs).await)
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(self.shared.services.clock.now())
    }

    /// The depth of a run, from its journal record (case events only exist with a store).
    async fn depth_of(&self, run_id: &str) -> u32 {
        if let Some(depth) = self.shared.depths.get(run_id) {
            return depth;
        }
        match self.store() {
            Some(store) => match store.run_record(run_id).await {
                Ok(Some(r)) => r.input.depth,
                Ok(None) => 0,
                Err(e) => {
                    tracing::warn!(%run_id, error = %e, "cannot read the run's depth; counting from 0");
                    0
                }
            },
            None => 0,
        }
    }

    /// Too deep: say so on the case, once for the runs the event would start.
    async fn loop_guard_message(&self, ev: &CaseEvent, depth: u32, names: &[&str]) -> String {
        let message = format!(
            "loop guard: `{}` on {} would start {} at depth {depth}, beyond the limit of {} (a playbook keeps re-triggering itself through case events; raise `engine.max_depth` only if the chain is meant to be this long)",
            ev.kind.as_str(),
            ev.case_id,
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            self.shared.max_depth
        );
        tracing::error!(case = %ev.case_id, %message);
        if let Some(store) = self.store() {
            let meta = WriteMeta::new(Actor::System, self.now());
            let change = CaseChange::AddComment(message.clone());
            if let Err(e) = store.update(ev.case_id, vec![change], &meta).await {
                tracing::error!(error = %e, "could not record the loop guard on the case");
            }
        }
        message
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.shared.services
    }

    /// The playbooks this event starts, with trigger-evaluation errors for the others.
    pub fn matching(&self, source: &str, event: &Value) -> (Vec<Arc<Plan>>, Vec<(String, String)>) {
        self.matching_with(source, || MjValue::from_serialize(event))
    }

    /// [`Engine::matching`] for an event the caller owns: the conditions read it where
    /// they look instead of having it converted whole ([`lazy_json`]).
    fn matching_owned(
        &self,
        source: &str,
        event: Value,
    ) -> (Vec<Arc<Plan>>, Vec<(String, String)>, Value) {
        let event = Arc::new(event);
        let (hits, errors) = self.matching_with(source, || lazy_json::lazy(event.clone()));
        // The context is gone, and with it every other reference to the event.
        let event = Arc::try_unwrap(event).unwrap_or_else(|shared| (*shared).clone());
        (hits, errors, event)
    }

    fn matching_with(
        &self,
        source: &str,
        event: impl Fn() -> MjValue,
    ) -> (Vec<Arc<Plan>>, Vec<(String, String)>) {
        let mut hits = Vec::new();
        let mut errors = Vec::new();
        let mut ctx = None;
        for plan in &self.bundle.playbooks {
            if plan.trigger.event != source {
                continue;
            }
            match &plan.trigger.condition {
                None => hits.push(plan.clone()),
                Some(c) => {
                    // Built for the first condition that needs it: none may.
                    let ctx = ctx.get_or_insert_with(|| {
                        minijinja::context! {
                            event => event(),
                            now => executor::rfc3339(self.shared.services.clock.now()),
                        }
                    });
                    match plan.templates.truth(c, ctx) {
                        Ok(true) => hits.push(plan.clone()),
                        Ok(false) => {}
                        Err(e) => errors.push((plan.name.clone(), format!("`on.if`: {e}"))),
                    }
                }
            }
        }
        (hits, errors)
    }

    /// Run every playbook the event starts and wait for them (case events they cause are
    /// left in the store's outbox; see [`Engine::handle`]).
    pub async fn dispatch(
        &self,
        source: &str,
        event: Value,
        case: Option<Value>,
    ) -> Vec<RunReport> {
        self.dispatch_at(source, event, case, 0).await
    }

    async fn dispatch_at(
        &self,
        source: &str,
        event: Value,
        case: Option<Value>,
        depth: u32,
    ) -> Vec<RunReport> {
        let (plans, errors, event) = self.matching_owned(source, event);
        for (playbook, e) in &errors {
            tracing::warn!(%playbook, error = %e, "trigger could not be evaluated");
        }
        let jobs = plans
            .into_iter()
            .map(|p| {
                self.job(
                    p,
                    source,
                    event.clone(),
                    case.clone(),
                    depth,
                    Lineage::default(),
                )
            })
            .collect();
        match self.start_jobs(RunOrigin::Direct, jobs).await {
            Ok(jobs) => self.run_to_end(jobs).await,
            Err(e) => {
                tracing::error!(error = %e, "could not record the runs; nothing started");
                Vec::new()
            }
        }
    }

    /// The runs an incoming event starts, recorded in the journal as its inbox entry is
    /// taken (none when another dispatcher took it first).
    async fn take_incoming(&self, incoming: Incoming) -> Result<Vec<Job>, crate::Error> {
        let (origin, jobs) = self.prepare_incoming(incoming);
        self.start_jobs(origin, jobs).await
    }

    /// The runs an incoming event would start, and the origin their records consume.
    fn prepare_incoming(&self, incoming: Incoming) -> (RunOrigin, Vec<Job>) {
        let Incoming {
            seq,
            source,
            key,
            event,
            ..
        } = incoming;
        let (plans, errors, event) = self.matching_owned(&source, event);
        for (playbook, e) in &errors {
            tracing::warn!(%playbook, error = %e, "trigger could not be evaluated");
        }
        let lineage = Lineage {
            event_key: key,
            inbox_seq: Some(seq),
            case_event: None,
        };
        let mut event = Some(event);
        let last = plans.len().saturating_sub(1);
        let jobs = plans
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                // The last run takes the event; the others get copies.
                let event = if i == last {
                    event.take().unwrap_or_default()
                } else {
                    event.clone().unwrap_or_default()
                };
                self.job(p, &source, event, None, 0, lineage.clone())
            })
            .collect();
        (RunOrigin::Inbox(seq), jobs)
    }

    /// The runs a case event starts, recorded in the journal with the event's delivery
    /// (acknowledged when `ack`); beyond the depth limit they are recorded as blocked by the
    /// loop guard, which says so on the case.
    async fn take_case_event(&self, ev: &CaseEvent, ack: bool) -> Result<Vec<Job>, crate::Error> {
        let (origin, jobs, depth) = self.prepare_case_event(ev, ack).await;
        let wanted = jobs.len();
        let jobs = self.start_jobs(origin, jobs).await?;
        Ok(self.guard_case_event(ev, depth, wanted, jobs).await)
    }

    /// The runs a case event would start, the origin their records consume, and their
    /// depth (for the loop guard, [`Engine::guard_case_event`]).
    async fn prepare_case_event(&self, ev: &CaseEvent, ack: bool) -> (RunOrigin, Vec<Job>, u32) {
        let origin = RunOrigin::CaseEvent {
            event_id: ev.id,
            ack,
        };
        if !self.listens_to(ev.kind) {
            // No playbook listens: acknowledge without building the payload.
            return (origin, Vec::new(), 0);
        }
        let depth = match &ev.actor {
            Actor::Playbook { run_id, .. } => self.depth_of(run_id).await + 1,
            _ => 1,
        };
        let (plans, errors, payload) = self.matching_owned(ev.kind.as_str(), ev.to_payload());
        for (playbook, e) in &errors {
            tracing::warn!(%playbook, error = %e, "trigger could not be evaluated");
        }
        // The case as the payload already holds it, not converted a second time.
        let case = payload.get("case").cloned();
        let lineage = Lineage {
            event_key: None,
            inbox_seq: None,
            case_event: Some(ev.id),
        };
        // Every job but the last gets copies; the last takes the payload.
        let n = plans.len();
        let mut jobs: Vec<Job> = Vec::with_capacity(n);
        let mut plans = plans.into_iter();
        let kind = ev.kind.as_str();
        for p in plans.by_ref().take(n.saturating_sub(1)) {
            jobs.push(self.job(
                p,
                kind,
                payload.clone(),
                case.clone(),
                depth,
                lineage.clone(),
            ));
        }
        if let Some(p) = plans.next() {
            jobs.push(self.job(p, kind, payload, case, depth, lineage));
        }
        (origin, jobs, depth)
    }

    /// The started runs of a case event (`wanted` were prepared), blocked by the loop
    /// guard beyond the depth limit.
    async fn guard_case_event(
        &self,
        ev: &CaseEvent,
        depth: u32,
        wanted: usize,
        mut jobs: Vec<Job>,
    ) -> Vec<Job> {
        if jobs.len() < wanted {
            tracing::info!(
                event = ev.id,
                "case event already delivered to some playbooks; not running them again"
            );
        }
        if depth > self.shared.max_depth && !jobs.is_empty() {
            let names: Vec<&str> = jobs.iter().map(|j| j.plan.name.as_str()).collect();
            let message = self.loop_guard_message(ev, depth, &names).await;
            for j in &mut jobs {
                j.blocked = Some(message.clone());
            }
        }
        jobs
    }

    /// Takes queued incoming events and pending case events together: the runs each
    /// starts are recorded, and each is consumed, in one transaction for the whole batch
    /// (one `start_runs` per entry was a transaction, and most of the worker's cost, per
    /// event). Returns the jobs in the order of `incoming`, then `events`.
    pub(crate) async fn take_batch(
        &self,
        incoming: Vec<Incoming>,
        events: &[PendingEvent],
    ) -> Result<Vec<Job>, crate::Error> {
        let incoming_len = incoming.len();
        let mut batch = Vec::with_capacity(incoming_len + events.len());
        for i in incoming {
            batch.push(self.prepare_incoming(i));
        }
        let mut guards = Vec::with_capacity(events.len());
        for ev in events {
            match ev {
                PendingEvent::Full(ev) => {
                    let (origin, jobs, depth) = self.prepare_case_event(ev, true).await;
                    guards.push((depth, jobs.len()));
                    batch.push((origin, jobs));
                }
                // No playbook listens: consumed, nothing starts.
                PendingEvent::Unwanted { id, .. } => {
                    guards.push((0, 0));
                    batch.push((
                        RunOrigin::CaseEvent {
                            event_id: *id,
                            ack: true,
                        },
                        Vec::new(),
                    ));
                }
            }
        }
        let started = self.start_jobs_many(batch).await?;
        let mut out = Vec::new();
        let mut started = started.into_iter();
        for jobs in started.by_ref().take(incoming_len) {
            out.extend(jobs);
        }
        for ((ev, (depth, wanted)), jobs) in events.iter().zip(guards).zip(started) {
            if let PendingEvent::Full(ev) = ev {
                out.extend(self.guard_case_event(ev, depth, wanted, jobs).await);
            }
        }
        Ok(out)
    }

    /// Whether some playbook of the bundle listens to case events of `kind`.
    fn listens_to(&self, kind: CaseEventKind) -> bool {
        self.bundle
            .playbooks
            .iter()
            .any(|p| p.trigger.event == kind.as_str())
    }

    /// The case event kinds some playbook of the bundle listens to.
    pub(crate) fn wanted_case_events(&self) -> Vec<CaseEventKind> {
        CaseEventKind::ALL
            .iter()
            .copied()
            .filter(|k| self.listens_to(*k))
            .collect()
    }

    fn concurrency_key(&self, plan: &Plan, event: &Value) -> Option<String> {
        let t = plan.concurrency.as_ref()?;
        let mut ctx = serde_json::json!({
            "event": event,
            "now": executor::rfc3339(self.shared.services.clock.now()),
        });
        // The key may use `vars`; a variable that cannot be rendered is left out, and the
        // run itself reports the error.
        let base = MjValue::from_serialize(&ctx);
        let mut vars = serde_json::Map::new();
        for (k, v) in &plan.vars {
            if let Ok(v) = plan.templates.render_tree(v, &base) {
                vars.insert(k.clone(), v);
            }
        }
        ctx["vars"] = Value::Object(vars);
        let ctx = MjValue::from_serialize(&ctx);
        match plan.templates.render_tree(t, &ctx) {
            Ok(Value::String(s)) => Some(s),
            Ok(other) => Some(other.to_string()),
            Err(e) => {
                // Without a key the run could overlap with others; serialise it with every
                // other keyless failure of this playbook instead.
                tracing::warn!(playbook = %plan.name, error = %e, "concurrency key could not be rendered");
                Some(format!("{}:<unrenderable>", plan.name))
            }
        }
    }
}

/// What [`Engine::handle_once`] did with one incoming event.
#[derive(Debug, Default)]
pub struct Handled {
    /// The event's dedup key was seen before: nothing ran.
    pub duplicate: bool,
    /// Every run it caused, in order.
    pub runs: Vec<RunReport>,
}

/// What one [`Engine::check_sla`] sweep did.
#[derive(Debug, Default)]
pub struct SlaSweep {
    /// The cases marked breached, in deadline order.
    pub breached: Vec<CaseId>,
    /// The runs their `case.sla_breached` events (and what those caused) started.
    pub runs: Vec<RunReport>,
}

/// The dedup key of an incoming event: `<source>:<uuid>` when the event has a non-empty
/// string `uuid` (Okta System Log events do), else `None` (such events always run).
pub fn dedup_key(source: &str, event: &Value) -> Option<String> {
    match event.get("uuid") {
        Some(Value::String(u)) if !u.trim().is_empty() => Some(format!("{source}:{}", u.trim())),
        _ => None,
    }
}

/// Whether all runs succeeded.
pub fn all_succeeded(reports: &[RunReport]) -> bool {
    reports.iter().all(|r| r.status == RunStatus::Succeeded)
}

/// A sortable, unique run id: `run-` and 20 hex digits: milliseconds since the epoch, a
/// counter within the millisecond, and randomness. Ids from one process sort in the order
/// they were made (the counter never goes back, even if the clock does); ids from different
/// processes sort by time and differ by their random part.
pub fn new_run_id() -> String {
    static LAST: Mutex<(u64, u16)> = Mutex::new((0, 0));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let (ms, n) = {
        let mut last = lock(&LAST);
        *last = if now > last.0 {
            (now, 0)
        } else if last.1 == u16::MAX {
            (last.0 + 1, 0)
        } else {
            (last.0, last.1 + 1)
        };
        *last
    };
    let r: u16 = rand::thread_rng().gen();
    format!("run-{ms:012x}{n:04x}{r:04x}")
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    #[test]
    fn depths_are_kept_and_start_over_when_full() {
        let d = Depths::default();
        d.insert("run-a", 3);
        assert_eq!(d.get("run-a"), Some(3));
        assert_eq!(d.get("run-b"), None);
        for i in 0..DEPTHS_MAX {
            d.insert(&format!("run-{i}"), 1);
        }
        // Full at the last insert: it started over, so only the newest are there.
        assert_eq!(d.get("run-a"), None);
        assert_eq!(d.get(&format!("run-{}", DEPTHS_MAX - 1)), Some(1));
        assert!(lock(&d.0).len() <= DEPTHS_MAX);
    }
}
