//! The worker: what `engine serve` runs in the background, and the calls around it.
//!
//! Data flow: a caller [`Engine::ingest`]s events: they are queued in the store's inbox
//! with their dedup keys (durable before the call returns; concurrent callers share
//! flushes through the store's group commit) and the worker is woken. The worker
//! ([`Engine::run_worker`]) first resumes the runs a crash or a shutdown left unfinished,
//! then loops: take queued incoming events and pending case events, record the runs each
//! starts in the journal (consuming the entry in the same transaction), launch them in
//! that order (which fixes their turn on their concurrency keys), and sleep until woken
//! (new event, finished run, [`Engine::wake`]), until the SLA sweep or a tick hook is due,
//! or until shutdown. On shutdown it stops taking work, gives running runs a grace period,
//! parks the rest (the journal resumes them at the next start) and flushes.
//!
//! Callers follow runs with [`Engine::subscribe`] (every finished run) or
//! [`Engine::wait_for`] (the runs of one inbox entry).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{dedup_key, lock, Engine};
use crate::cases::{Actor, CaseChange, CaseId};
use crate::persist::{InboxEntry, NewIncoming, Store, StoreError, WriteMeta, WriteOutcome};
use crate::report::RunReport;

/// What [`Engine::ingest`] did with one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    /// Its inbox entry; `None` for a duplicate.
    pub seq: Option<u64>,
    /// Its dedup key (`<source>:<uuid>`), when it has one.
    pub key: Option<String>,
    /// Seen before: acknowledged, not stored, never run.
    pub duplicate: bool,
}

/// The worker's settings, from the config's `engine` section.
///
/// ```yaml
/// engine:
///   sla_every: 30s        # how often the SLA watcher sweeps
///   shutdown_grace: 10s   # how long running runs may take to finish at shutdown
///   max_runs: 512         # runs in flight before the worker stops taking new work
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    pub sla_every: Duration,
    pub shutdown_grace: Duration,
    pub max_runs: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            sla_every: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_runs: 512,
        }
    }
}

/// How often a worker on a store shared by several processes looks for runs to take over.
const TAKEOVER_EVERY: Duration = Duration::from_secs(1);

/// The longest interval or grace period the worker accepts (longer values are clamped).
const LONGEST: Duration = Duration::from_secs(24 * 3600);

fn duration(key: &str, v: &Value) -> Result<Duration, crate::Error> {
    let d = match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| crate::Error::Config(format!("`engine.{key}`: not a duration: {n}")))?,
        Value::String(s) => humantime::parse_duration(s.trim())
            .map_err(|e| crate::Error::Config(format!("`engine.{key}`: `{s}`: {e}")))?,
        other => {
            return Err(crate::Error::Config(format!(
                "`engine.{key}`: expected a duration such as `30s`, got {other}"
            )))
        }
    };
    Ok(d.min(LONGEST))
}

/// `now + d`, or a day from now when that does not fit.
fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).unwrap_or(now + LONGEST)
}

impl WorkerConfig {
    /// Reads `engine.sla_every`, `engine.shutdown_grace` and `engine.max_runs`; absent keys
    /// keep their defaults.
    pub fn from_config(config: &Value) -> Result<Self, crate::Error> {
        let mut c = WorkerConfig::default();
        let Some(engine) = config.get("engine") else {
            return Ok(c);
        };
        if let Some(v) = engine.get("sla_every") {
            c.sla_every = duration("sla_every", v)?.max(Duration::from_millis(10));
        }
        if let Some(v) = engine.get("shutdown_grace") {
            c.shutdown_grace = duration("shutdown_grace", v)?;
        }
        if let Some(v) = engine.get("max_runs") {
            c.max_runs = v
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                .ok_or_else(|| {
                    crate::Error::Config(format!(
                        "`engine.max_runs`: expected a positive number, got {v}"
                    ))
                })?;
        }
        Ok(c)
    }
}

/// A boxed future a tick hook returns.
pub type TickFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Periodic work the worker runs beside the runs (such as delivering notifications that
/// are still owed: `steps::notify::deliver_pending`). See [`Engine::on_tick`].
pub struct TickHook {
    every: Duration,
    next: Instant,
    hook: Arc<dyn Fn() -> TickFuture + Send + Sync>,
    busy: Arc<AtomicBool>,
}

/// How often [`Engine::wait_for`] asks the store about runs it has not seen finish: the
/// runs of an entry may be taken by another process on the same database.
const STORE_RECHECK: Duration = Duration::from_millis(200);

impl Engine {
    /// Durably records incoming events (strict durability: flushed before return, with one
    /// flush shared by concurrent callers) and wakes the worker, which runs them later.
    /// Each event must be a JSON object; its dedup key is [`dedup_key`]`(source, event)`.
    /// A duplicate (a key seen before, or twice in `events`) is acknowledged, counted in
    /// the answer and never stored or run.
    pub async fn ingest(
        &self,
        source: &str,
        events: Vec<Value>,
    ) -> Result<Vec<Ingested>, crate::Error> {
        self.ingest_with(source, events, true).await
    }

    /// As [`Engine::ingest`], but the events may not be on disk when it returns: for a
    /// caller that acknowledges them only after [`crate::persist::CaseWrite::sync`], such as
    /// the synchronous `POST /events/<source>?wait=true`, which answers once the runs are
    /// done. A run's steps with outside effects still start only after its journal's flush,
    /// which covers the events; a run's end is flushed too, so under strict durability the
    /// final `sync` usually finds nothing left to write.
    pub async fn ingest_unsynced(
        &self,
        source: &str,
        events: Vec<Value>,
    ) -> Result<Vec<Ingested>, crate::Error> {
        self.ingest_with(source, events, false).await
    }

    async fn ingest_with(
        &self,
        source: &str,
        events: Vec<Value>,
        synced: bool,
    ) -> Result<Vec<Ingested>, crate::Error> {
        let store = self.store_required()?;
        if source.trim().is_empty() {
            return Err(crate::Error::Event("the event source is empty".into()));
        }
        if let Some(i) = events.iter().position(|e| !e.is_object()) {
            return Err(crate::Error::Event(format!(
                "event {i} is not a JSON object"
            )));
        }
        let received_at = self.now();
        let items: Vec<NewIncoming> = events
            .into_iter()
            .map(|event| NewIncoming {
                source: source.to_string(),
                key: dedup_key(source, &event),
                event,
                received_at,
            })
            .collect();
        let keys: Vec<Option<String>> = items.iter().map(|i| i.key.clone()).collect();
        let span = tracing::debug_span!("ingest", %source, events = items.len());
        let queued = if synced {
            store.enqueue_incoming(items).instrument(span).await?
        } else {
            store
                .enqueue_incoming_unsynced(items)
                .instrument(span)
                .await?
        };
        let out: Vec<Ingested> = keys
            .into_iter()
            .zip(queued)
            .map(|(key, q)| Ingested {
                seq: q.seq,
                key,
                duplicate: q.duplicate,
            })
            .collect();
        if out.iter().any(|i| !i.duplicate) {
            self.wake();
        }
        Ok(out)
    }

    /// Every run that finishes from now on, wherever it was started (worker, one-shot
    /// calls, resume). A receiver that falls more than 1024 reports behind misses the
    /// oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RunReport>> {
        self.shared.finished.subscribe()
    }

    /// Waits until the runs started directly by inbox entry `seq` have finished, at most
    /// `timeout`; `None` on timeout. An entry that started no run gives an empty list; an
    /// entry number never handed out is an error. Reports are sorted by playbook.
    ///
    /// The store is read until the worker has taken the entry (which names its runs); from
    /// then on the reports come from [`Engine::subscribe`], and the store is read again only
    /// for a run that finished before this call subscribed, or when the subscription lagged.
    /// (Re-reading every run with its journal whenever the worker made progress cost more
    /// than the runs themselves with many callers waiting.) On a store other processes share,
    /// it is asked again every [`STORE_RECHECK`], for runs another process finished.
    pub async fn wait_for(
        &self,
        seq: u64,
        timeout: Duration,
    ) -> Result<Option<Vec<RunReport>>, crate::Error> {
        let store = self.store_required()?;
        let deadline = deadline_after(timeout);
        let mut finished = self.subscribe();
        // Only a store other processes write (PostgreSQL) can finish this entry's runs
        // elsewhere; the others report every run on `finished`.
        let shared_store = store.wake_signal().is_some();
        // This entry's runs, once the worker took it; and those seen finished so far.
        let mut runs: Option<Vec<String>> = None;
        let mut done: Vec<RunReport> = Vec::new();
        // Whether the store must be asked about the runs not seen finished (first time, or
        // after the subscription lagged).
        let mut check_store = true;
        loop {
            // Registered before the store is read, so progress in between is not missed.
            let progressed = self.shared.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            if runs.is_none() {
                match store.inbox_entry(seq).await? {
                    InboxEntry::Unknown => {
                        return Err(crate::Error::Event(format!("no inbox entry {seq}")))
                    }
                    InboxEntry::Queued => {}
                    InboxEntry::Dispatched(run_ids) => runs = Some(run_ids),
                }
            }
            if let Some(ids) = &runs {
                if check_store {
                    check_store = false;
                    for id in ids {
                        if done.iter().any(|r| &r.run_id == id) {
                            continue;
                        }
                        // The summary first: reading a running run's journal is wasted.
                        let ended = store
                            .run_record(id)
                            .await?
                            .is_some_and(|r| r.to_report().is_some());
                        if ended {
                            if let Some(report) =
                                store.get_run(id).await?.and_then(|r| r.to_report())
                            {
                                done.push(report);
                            }
                        }
                    }
                }
                if ids.iter().all(|id| done.iter().any(|r| &r.run_id == id)) {
                    let mut reports: Vec<RunReport> = done
                        .into_iter()
                        .filter(|r| ids.contains(&r.run_id))
                        .collect();
                    reports.sort_by(|a, b| a.playbook.cmp(&b.playbook));
                    return Ok(Some(reports));
                }
            }
            let waiting_for_worker = runs.is_none();
            let recheck_at = Instant::now() + STORE_RECHECK;
            let recheck = shared_store && !waiting_for_worker;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return Ok(None),
                    _ = &mut progressed, if waiting_for_worker => break,
                    // Another process sharing the store (PostgreSQL) may run this entry's
                    // runs; their reports never reach this process's subscription.
                    _ = tokio::time::sleep_until(recheck_at), if recheck => {
                        check_store = true;
                        break;
                    }
                    r = finished.recv() => match r {
                        Ok(report) if report.inbox_seq == Some(seq) => {
                            if !done.iter().any(|d| d.run_id == report.run_id) {
                                done.push((*report).clone());
                            }
                            break;
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            check_store = true;
                            break;
                        }
                        // The engine owns the sender: it cannot close while `self` lives.
                        Err(broadcast::error::RecvError::Closed) => return Ok(None),
                    },
                }
            }
        }
    }

    /// A person's change to a case (API, CLI): committed like a playbook's change, with the
    /// same case events, and the worker is woken to run the playbooks they trigger.
    pub async fn update_case(
        &self,
        id: CaseId,
        changes: Vec<CaseChange>,
        actor: Actor,
    ) -> Result<WriteOutcome, StoreError> {
        let store = self.store().cloned().ok_or_else(|| StoreError::Backend {
            path: "<none>".into(),
            detail: "this engine has no case store".into(),
        })?;
        let out = store
            .update(id, changes, &WriteMeta::new(actor, self.now()))
            .await?;
        if !out.events.is_empty() {
            self.wake();
        }
        Ok(out)
    }

    /// Tells the worker there may be new work (it also wakes by itself for ingested
    /// events, finished runs and case changes made with [`Engine::update_case`]).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Runs `hook` from the worker every `every` (first right after start-up), never two at
    /// once. `engine serve` uses it for notification retries, which live in the steps crate:
    /// `engine.on_tick(every, move || Box::pin(deliver_pending(...)))`.
    pub fn on_tick<F>(&self, every: Duration, hook: F)
    where
        F: Fn() -> TickFuture + Send + Sync + 'static,
    {
        lock(&self.shared.ticks).push(TickHook {
            every: every.clamp(Duration::from_millis(10), LONGEST),
            next: Instant::now(),
            hook: Arc::new(hook),
            busy: Arc::new(AtomicBool::new(false)),
        });
    }

    /// Background work until `shutdown` is cancelled; see the module docs. Returns an error
    /// when the store fails (after parking what runs): the journal makes a restart safe.
    pub async fn run_worker(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<(), crate::Error> {
        let store = self.store_required()?;
        let span = tracing::info_span!("worker");
        async move {
            let mut runs: JoinSet<Arc<RunReport>> = JoinSet::new();
            let mut hooks: JoinSet<()> = JoinSet::new();
            let worked = self.work(&store, &shutdown, &mut runs, &mut hooks).await;
            if let Err(e) = &worked {
                tracing::error!(error = %e, "the worker stops on a store error");
            }
            hooks.shutdown().await;
            let stopped = self.stop(&store, &mut runs).await;
            worked.and(stopped)
        }
        .instrument(span)
        .await
    }

    fn store_required(&self) -> Result<Arc<dyn Store>, crate::Error> {
        self.store().cloned().ok_or_else(|| {
            crate::Error::Runtime(
                "this engine has no store; the inbox and the worker need one".into(),
            )
        })
    }

    async fn work(
        &self,
        store: &Arc<dyn Store>,
        shutdown: &CancellationToken,
        runs: &mut JoinSet<Arc<RunReport>>,
        hooks: &mut JoinSet<()>,
    ) -> Result<(), crate::Error> {
        let cfg = self.worker;
        // Resumed runs are queued on their keys before anything new.
        let resumed = self.resumable().await?;
        if !resumed.is_empty() {
            tracing::info!(runs = resumed.len(), "resuming unfinished runs");
        }
        for job in resumed {
            self.launch(job, runs);
        }
        // Deadlines that passed while the engine was stopped are swept at once.
        let mut next_sla = Instant::now();
        // Other processes sharing the store wake this one when they commit work, and their
        // runs are taken over once they are gone (stores of one process have neither).
        let external = store.wake_signal();
        let mut next_takeover = Instant::now() + TAKEOVER_EVERY;
        let wanted_events = self.wanted_case_events();
        loop {
            let woken = self.shared.wake.notified();
            tokio::pin!(woken);
            let woken_elsewhere = async {
                match &external {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(woken_elsewhere);
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let mut found = false;
            // Everything queued is taken in one transaction per kind (inbox entries, then
            // case events), and launched in queue order.
            let room = cfg.max_runs.saturating_sub(runs.len());
            if room > 0 {
                let queued = store.pending_incoming(room.min(256)).await?;
                if !queued.is_empty() {
                    let span = tracing::info_span!("dispatch", inbox_entries = queued.len());
                    for job in self.take_batch(queued, &[]).instrument(span).await? {
                        self.launch(job, runs);
                    }
                    found = true;
                    self.shared.progress.notify_waiters();
                }
            }
            let room = cfg.max_runs.saturating_sub(runs.len());
            if room > 0 {
                let events = store
                    .pending_events_for(room.min(256), &wanted_events)
                    .await?;
                if !events.is_empty() {
                    let span = tracing::info_span!("dispatch", case_events = events.len());
                    for job in self
                        .take_batch(Vec::new(), &events)
                        .instrument(span)
                        .await?
                    {
                        self.launch(job, runs);
                    }
                    found = true;
                }
            }
            let now = Instant::now();
            if external.is_some() && now >= next_takeover {
                next_takeover = now + TAKEOVER_EVERY;
                for job in self.taken_over().await? {
                    self.launch(job, runs);
                    found = true;
                }
            }
            if now >= next_sla {
                next_sla = now + cfg.sla_every;
                let breached = self.mark_sla_breaches(self.now()).await?;
                if !breached.is_empty() {
                    tracing::info!(cases = breached.len(), "SLA breached");
                    found = true;
                }
            }
            let next_hook = self.run_due_hooks(now, hooks);
            while let Some(r) = runs.try_join_next() {
                if let Err(e) = r {
                    tracing::error!(error = %e, "run task crashed");
                }
            }
            while hooks.try_join_next().is_some() {}
            if found && runs.len() < cfg.max_runs {
                continue;
            }
            let mut next_tick = next_hook.map_or(next_sla, |h| h.min(next_sla));
            if external.is_some() {
                next_tick = next_tick.min(next_takeover);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = &mut woken => {}
                _ = &mut woken_elsewhere => {}
                _ = tokio::time::sleep_until(next_tick) => {}
                Some(r) = runs.join_next(), if !runs.is_empty() => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "run task crashed");
                    }
                }
            }
        }
    }

    /// Starts the tick hooks that are due and not still running; returns when the next one
    /// is due.
    fn run_due_hooks(&self, now: Instant, hooks: &mut JoinSet<()>) -> Option<Instant> {
        let mut ticks = lock(&self.shared.ticks);
        for t in ticks.iter_mut() {
            if t.next <= now {
                t.next = now + t.every;
                if !t.busy.swap(true, Ordering::SeqCst) {
                    let fut = (t.hook)();
                    let busy = t.busy.clone();
                    hooks.spawn(async move {
                        fut.await;
                        busy.store(false, Ordering::SeqCst);
                    });
                }
            }
        }
        ticks.iter().map(|t| t.next).min()
    }

    /// Shutdown: wait up to the grace period for running runs, park the rest, flush.
    async fn stop(
        &self,
        store: &Arc<dyn Store>,
        runs: &mut JoinSet<Arc<RunReport>>,
    ) -> Result<(), crate::Error> {
        if !runs.is_empty() {
            tracing::info!(runs = runs.len(), grace = ?self.worker.shutdown_grace, "waiting for running runs");
        }
        let grace = tokio::time::sleep(self.worker.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                r = runs.join_next() => match r {
                    None => break,
                    Some(Err(e)) if !e.is_cancelled() => tracing::error!(error = %e, "run task crashed"),
                    Some(_) => {}
                },
                _ = &mut grace => break,
            }
        }
        runs.shutdown().await;
        let left: Vec<String> = lock(&self.shared.in_flight).drain().collect();
        if !left.is_empty() {
            tracing::warn!(runs = left.len(), "parking runs that did not finish in the grace period; they resume at the next start");
            store.park_runs(&left).await?;
        }
        store.flush().await?;
        Ok(())
    }
}
