//! The server's one door into the engine: ingestion, the worker, runs, cursors and case
//! changes. Handlers and the poller only call [`Backend`], so the engine API they need is
//! written down in one place.
//!
//! Until the engine's durable inbox lands (branch `durable`: `Engine::ingest`,
//! `Engine::run_worker`, `Engine::wait_for`, run records and cursors in the store), the
//! [`Shim`] below stands in for it with the same contract where it can: an event's dedup
//! key (`okta:<uuid>`) is recorded durably (flushed) before `ingest` returns, so a duplicate
//! is never run twice, but the queue of events waiting for the worker, the run history and
//! the results for `wait_for` live in memory, and cursors in `<data-dir>/cursors.json`.
//! A crash loses queued events that were acknowledged but not yet run; the durable inbox
//! is what removes that gap.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::cases::{Actor, CaseChange, CaseId, Timestamp};
use crate::persist::{Store, StoreError, WriteMeta, WriteOutcome};
use crate::report::{RunReport, RunStatus, StepReport};
use crate::schedule::{dedup_key, Engine};

/// What happened to one ingested event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ingested {
    /// Its inbox sequence number; `None` for a duplicate.
    pub seq: Option<u64>,
    /// Its dedup key (`<source>:<uuid>`), when it has one.
    pub key: Option<String>,
    /// The key was seen before: acknowledged, not run again.
    pub duplicate: bool,
}

/// Which runs `GET /api/runs` lists.
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    pub playbook: Option<String>,
    pub status: Option<String>,
    /// Newest first, at most this many.
    pub limit: usize,
}

/// One run in a listing.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    pub id: String,
    pub playbook: String,
    pub status: String,
    /// The event source or case event type that started it.
    pub trigger: String,
    /// The incoming event's dedup key (`okta:<uuid>`), when it had one.
    pub event_id: Option<String>,
    /// The inbox entry that started it directly.
    pub inbox_seq: Option<u64>,
    pub started: String,
    pub finished: Option<String>,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One run with its steps.
#[derive(Clone, Debug, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunRow,
    pub steps: Vec<StepReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

fn status_name(s: RunStatus) -> String {
    match serde_json::to_value(s) {
        Ok(Value::String(s)) => s,
        _ => format!("{s:?}").to_lowercase(),
    }
}

fn finished_at(r: &RunReport) -> Option<String> {
    let start = humantime::parse_rfc3339_weak(r.started_at.trim_end_matches('Z')).ok()?;
    let end = start + Duration::from_secs_f64((r.duration_ms / 1000.0).max(0.0));
    Some(crate::schedule::executor::rfc3339(end))
}

impl RunRow {
    fn from_report(r: &RunReport, event_id: Option<String>, inbox_seq: Option<u64>) -> Self {
        RunRow {
            id: r.run_id.clone(),
            playbook: r.playbook.clone(),
            status: status_name(r.status),
            trigger: r.trigger.clone(),
            event_id,
            inbox_seq,
            started: r.started_at.clone(),
            finished: finished_at(r),
            duration_ms: r.duration_ms,
            error: r.error.clone(),
        }
    }
}

/// See the module docs.
pub struct Backend {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    shim: Shim,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Backend {
    /// The engine must have a store: the server keeps everything it acknowledges there.
    pub fn new(engine: Arc<Engine>, data_dir: Option<PathBuf>) -> Result<Self, String> {
        let store = engine
            .services()
            .store
            .clone()
            .ok_or("engine serve needs a case store")?;
        Ok(Backend {
            engine,
            store,
            shim: Shim::new(data_dir),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Record `events` from `source`; durable (dedup keys flushed) before it returns.
    pub async fn ingest(
        &self,
        source: &str,
        events: Vec<Value>,
    ) -> Result<Vec<Ingested>, crate::Error> {
        let mut out = Vec::with_capacity(events.len());
        let now = Timestamp::now();
        for event in events {
            let key = dedup_key(source, &event);
            if let Some(k) = &key {
                if !self.store.record_incoming(k, now).await? {
                    out.push(Ingested {
                        seq: None,
                        key,
                        duplicate: true,
                    });
                    continue;
                }
            }
            let seq = self.shim.next_seq.fetch_add(1, Ordering::SeqCst) + 1;
            lock(&self.shim.queue).push_back(Entry {
                seq,
                source: source.to_string(),
                event,
                key: key.clone(),
            });
            out.push(Ingested {
                seq: Some(seq),
                key,
                duplicate: false,
            });
        }
        self.shim.work.notify_one();
        Ok(out)
    }

    /// Every finished run, as it finishes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RunReport>> {
        self.shim.runs_tx.subscribe()
    }

    /// The runs inbox entry `seq` started directly, once they have all finished; `None`
    /// when that takes longer than `timeout`.
    pub async fn wait_for(
        &self,
        seq: u64,
        timeout: Duration,
    ) -> Result<Option<Vec<RunReport>>, crate::Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shim.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(runs) = lock(&self.shim.results).get(&seq) {
                return Ok(Some(runs.clone()));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// A person's change to a case; the case events it causes start playbooks like a
    /// playbook's change would.
    pub async fn update_case(
        &self,
        id: CaseId,
        changes: Vec<CaseChange>,
        actor: Actor,
    ) -> Result<WriteOutcome, StoreError> {
        let meta = WriteMeta::new(actor, Timestamp::now());
        let out = self.store.update(id, changes, &meta).await?;
        self.wake();
        Ok(out)
    }

    /// Tell the worker there may be case events to deliver.
    pub fn wake(&self) {
        self.shim.woken.store(true, Ordering::SeqCst);
        self.shim.work.notify_one();
    }

    /// Runs, newest first.
    pub async fn list_runs(&self, q: &RunQuery) -> Result<Vec<RunRow>, crate::Error> {
        let recent = lock(&self.shim.recent);
        Ok(recent
            .iter()
            .rev()
            .filter(|r| q.playbook.as_ref().is_none_or(|p| &r.run.playbook == p))
            .filter(|r| q.status.as_ref().is_none_or(|s| &r.run.status == s))
            .take(q.limit)
            .map(|r| r.run.clone())
            .collect())
    }

    pub async fn get_run(&self, id: &str) -> Result<Option<RunDetail>, crate::Error> {
        let recent = lock(&self.shim.recent);
        Ok(recent.iter().rev().find(|r| r.run.id == id).cloned())
    }

    /// Events acknowledged and not yet finished.
    pub async fn inbox_depth(&self) -> Result<u64, crate::Error> {
        let queued = lock(&self.shim.queue).len() as u64;
        Ok(queued + self.shim.in_flight.load(Ordering::SeqCst))
    }

    pub async fn get_cursor(&self, name: &str) -> Result<Option<String>, crate::Error> {
        self.shim.get_cursor(name)
    }

    /// Durable before it returns.
    pub async fn put_cursor(&self, name: &str, value: &str) -> Result<(), crate::Error> {
        self.shim.put_cursor(name, value)
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }

    /// Run what was ingested, the case events it causes and the SLA watcher until `stop`;
    /// then let runs in progress finish and return.
    pub async fn run_worker(self: Arc<Self>, stop: CancellationToken) -> Result<(), crate::Error> {
        let limit = Arc::new(Semaphore::new(64));
        let mut set = tokio::task::JoinSet::new();
        let mut sla = tokio::time::interval(Duration::from_secs(60));
        sla.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Case events left from an earlier process, and deadlines passed while stopped.
        self.wake();
        loop {
            let entries: Vec<Entry> = lock(&self.shim.queue).drain(..).collect();
            for entry in entries {
                self.shim.in_flight.fetch_add(1, Ordering::SeqCst);
                let me = self.clone();
                let permit = limit.clone().acquire_owned().await;
                set.spawn(async move {
                    let _permit = permit;
                    me.run_entry(entry).await;
                    me.shim.in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
            if self.shim.woken.swap(false, Ordering::SeqCst) {
                let me = self.clone();
                set.spawn(async move { me.drain().await });
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.shim.work.notified() => {}
                _ = sla.tick() => {
                    let me = self.clone();
                    set.spawn(async move {
                        match me.engine.check_sla(Timestamp::now()).await {
                            Ok(sweep) => me.shim.record(&sweep.runs, None, None),
                            Err(e) => tracing::error!(error = %e, "SLA sweep failed"),
                        }
                    });
                }
                Some(r) = set.join_next(), if !set.is_empty() => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "worker task failed");
                    }
                }
            }
        }
        let left = lock(&self.shim.queue).len();
        if left > 0 {
            tracing::warn!(
                events = left,
                "stopping with events not yet started (they are not resumed until the durable inbox lands)"
            );
        }
        while set.join_next().await.is_some() {}
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(seq = entry.seq, source = %entry.source, key = entry.key.as_deref().unwrap_or("")))]
    async fn run_entry(&self, entry: Entry) {
        let runs = self.engine.dispatch(&entry.source, entry.event, None).await;
        self.shim.record(&runs, entry.key.clone(), Some(entry.seq));
        lock(&self.shim.results).insert(entry.seq, runs);
        self.shim.forget_old_results();
        self.shim.done.notify_waiters();
        self.drain().await;
    }

    async fn drain(&self) {
        match self.engine.drain_case_events().await {
            Ok(runs) => self.shim.record(&runs, None, None),
            Err(e) => tracing::error!(error = %e, "delivering case events failed"),
        }
    }
}

/// How many finished runs and `wait_for` results the shim keeps in memory.
const KEEP: usize = 10_000;

struct Entry {
    seq: u64,
    source: String,
    event: Value,
    key: Option<String>,
}

/// See the module docs.
struct Shim {
    next_seq: AtomicU64,
    queue: Mutex<VecDeque<Entry>>,
    in_flight: AtomicU64,
    work: Notify,
    woken: AtomicBool,
    results: Mutex<HashMap<u64, Vec<RunReport>>>,
    done: Notify,
    runs_tx: broadcast::Sender<Arc<RunReport>>,
    recent: Mutex<VecDeque<RunDetail>>,
    cursors_file: Option<PathBuf>,
    cursors: Mutex<Option<HashMap<String, String>>>,
}

impl Shim {
    fn new(data_dir: Option<PathBuf>) -> Self {
        let (runs_tx, _) = broadcast::channel(1024);
        let start = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Shim {
            // Sequence numbers stay unique across restarts without persisting a counter.
            next_seq: AtomicU64::new(start * 1000),
            queue: Mutex::new(VecDeque::new()),
            in_flight: AtomicU64::new(0),
            work: Notify::new(),
            woken: AtomicBool::new(false),
            results: Mutex::new(HashMap::new()),
            done: Notify::new(),
            runs_tx,
            recent: Mutex::new(VecDeque::new()),
            cursors_file: data_dir.map(|d| d.join("cursors.json")),
            cursors: Mutex::new(None),
        }
    }

    fn record(&self, runs: &[RunReport], key: Option<String>, seq: Option<u64>) {
        let mut recent = lock(&self.recent);
        for r in runs {
            recent.push_back(RunDetail {
                run: RunRow::from_report(r, key.clone(), seq),
                steps: r.steps.clone(),
                output: r.output.clone(),
            });
            // No receiver is fine: metrics may not be listening.
            let _ = self.runs_tx.send(Arc::new(r.clone()));
        }
        while recent.len() > KEEP {
            recent.pop_front();
        }
    }

    fn forget_old_results(&self) {
        let mut results = lock(&self.results);
        if results.len() > KEEP {
            let mut seqs: Vec<u64> = results.keys().copied().collect();
            seqs.sort_unstable();
            for s in &seqs[..seqs.len() - KEEP] {
                results.remove(s);
            }
        }
    }

    fn load_cursors(&self) -> Result<HashMap<String, String>, crate::Error> {
        let Some(path) = &self.cursors_file else {
            return Ok(HashMap::new());
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                crate::Error::Runtime(format!(
                    "`{}` is damaged ({e}); delete it to poll again from `okta.poll.since`",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
            Err(source) => Err(crate::Error::Io {
                path: path.clone(),
                source,
            }),
        }
    }

    fn get_cursor(&self, name: &str) -> Result<Option<String>, crate::Error> {
        let mut cursors = lock(&self.cursors);
        if cursors.is_none() {
            *cursors = Some(self.load_cursors()?);
        }
        Ok(cursors.as_ref().and_then(|c| c.get(name).cloned()))
    }

    fn put_cursor(&self, name: &str, value: &str) -> Result<(), crate::Error> {
        let mut cursors = lock(&self.cursors);
        if cursors.is_none() {
            *cursors = Some(self.load_cursors()?);
        }
        let map = cursors.get_or_insert_with(HashMap::new);
        map.insert(name.to_string(), value.to_string());
        let Some(path) = &self.cursors_file else {
            return Ok(());
        };
        let io = |source| crate::Error::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(map).map_err(|e| crate::Error::Runtime(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}
