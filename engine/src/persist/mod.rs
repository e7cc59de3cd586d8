//! Persistence: the case store traits and their implementations.
//!
//! Callers hold a `&dyn Store` (or `Arc<dyn Store>`): [`CaseRead`] for queries and the
//! case-event outbox, [`CaseWrite`] for changes. A write applies a list of
//! [`CaseChange`]s with the pure [`crate::cases::apply`], then commits the case, its index
//! entries, its case events (the transactional outbox) and its idempotency record in
//! **one** transaction, so a trigger is never lost and never fired for a change that did
//! not commit. Nothing in the traits names sled: a PostgreSQL implementation would map
//! the trees below to tables and the transaction to `BEGIN ... COMMIT` with
//! `SELECT ... FOR UPDATE` on the case row.
//!
//! Implementations: [`MemoryStore`] (tests, embedding) and [`SledStore`] (default, on
//! disk). Both share the key layout and the query planner, so the memory store exercises
//! the same index logic. [`PgStore`] keeps the same data in PostgreSQL tables for several
//! engine processes sharing one database; see [`postgres`].
//!
//! The engine's own bookkeeping lives here too: the [`Inbox`] (dedup keys, the queue of
//! incoming events with their bodies, case-event delivery records, cursors) and the
//! [`Runs`] journal (one record per run and one entry per finished step).
//!
//! # Key layout (sled; schema version 5)
//!
//! Trees are named `<key>_<value>`. Integers are big-endian so byte order is numeric
//! order; timestamps are unix milliseconds as `i64` with the sign bit flipped (`ts`
//! below), so byte order is time order. Strings (`str`) are escaped (`0x00` -> `0x01
//! 0x01`, `0x01` -> `0x01 0x02`) and end with a `0x00` separator, so any string can be a
//! key part and keys sort like the strings.
//!
//! | tree                 | key                                              | value |
//! |----------------------|--------------------------------------------------|-------|
//! | `caseid_case`        | case id `u64`                                    | case JSON |
//! | `observable_caseid`  | type `str` ++ value `str` ++ created_at `ts` ++ id `u64` | empty |
//! | `state_caseid`       | state `str` ++ created_at `ts` ++ id `u64`       | empty |
//! | `severity_caseid`    | severity rank `u8` (0 informational .. 4 critical) ++ created_at `ts` ++ id `u64` | empty |
//! | `assignee_caseid`    | assignee `str` ++ created_at `ts` ++ id `u64`    | empty |
//! | `tag_caseid`         | tag `str` ++ created_at `ts` ++ id `u64`         | empty |
//! | `createdat_caseid`   | created_at `ts` ++ id `u64`                      | empty |
//! | `updatedat_caseid`   | updated_at `ts` ++ id `u64`                      | empty |
//! | `dedupkey_caseid`    | dedup key `str` ++ id `u64`                      | `0x01` if the case is open, else `0x00` |
//! | `sladue_caseid`      | sla.due_at `ts` ++ id `u64` (open, not yet breached cases only) | empty |
//! | `idempotency_result` | run id `str` ++ step id `str`                    | JSON `{case_id, created, case, event_ids}` |
//! | `eventid_caseevent`  | case event id `u64` (undelivered only)           | case event JSON |
//! | `eventplaybook_runid`| case event id `u64` ++ playbook `str` (undelivered events only) | run id (UTF-8) |
//! | `eventkey_receivedat`| incoming event key `str` (such as `okta:<uuid>`) | received at `ts` |
//! | `inboxseq_event`     | inbox seq `u64` (queued, not yet taken)          | JSON `{seq, source, key, event, received_at}` |
//! | `inboxseq_runid`     | inbox seq `u64` ++ run id `str`                  | empty |
//! | `runid_run`          | run id `str`                                     | JSON run record (summary, input, output) |
//! | `runstep_result`     | run id `str` ++ step id `str`                    | JSON journal entry `{seq, id, uses, status, attempts, duration_ms, output, error, reason}` |
//! | `unfinished_runid`   | run id `str` (running or parked runs only)       | empty |
//! | `cursor_value`       | cursor name `str`                                | the value (UTF-8) |
//! | `cache_entry`        | namespace `str` ++ key `str`                     | expires at `ts` ++ JSON value |
//! | `cache_expiry`       | expires at `ts` ++ namespace `str` ++ key `str`  | empty |
//! | `notifyid_seq`       | notification id `str`                            | seq `u64` |
//! | `notifyseq_notification` | seq `u64`                                    | JSON `{notification, owed: [channel]}` |
//! | `notifychannel_delivery` | notification id `str` ++ channel `str`       | latest delivery record JSON |
//! | `notifyowed_empty`   | seq `u64` ++ channel `str` (owed, not yet delivered or rejected) | empty |
//! | `meta`               | `schema_version` / `next_case_id` / `next_event_id` / `next_inbox_seq` / `next_notify_seq` | `u32` / `u64` / `u64` / `u64` / `u64` |
//!
//! Index keys end with `created_at ++ id`, so a forward range scan of one prefix yields
//! oldest first and a reverse scan newest first; a query reads about `limit` entries of
//! its most selective index (observable > assignee > tag > state > severity >
//! created_at) and filters the rest of its criteria on the case records it loads.
//!
//! The [`Inbox`] trees make the engine run things once: `eventkey_receivedat` records each
//! incoming event's key before it runs (a second delivery of the same Okta `uuid` is
//! skipped), and `eventplaybook_runid` records each playbook a case event starts before
//! the run starts; acknowledging the event removes it and its records in one transaction,
//! so a redelivery after a crash skips the playbooks already started.
//!
//! The inbox queue (`inboxseq_event`) holds each accepted incoming event until the worker
//! takes it: the transaction that records the runs it starts (`runid_run`,
//! `unfinished_runid`, `inboxseq_runid`) deletes it, so an event is started exactly once
//! even across crashes. See [`incoming`] and [`runs`].
//!
//! Ids come from the `meta` counters, written in the same transaction, so case numbers
//! are sequential. A store whose `schema_version` is newer than this code is refused;
//! key formats never change in place (a new layout means a new version and a migration).
//! Migrations so far only added trees, which start empty, so opening an older store just
//! writes the new version: 1 -> 2 added the two inbox trees, 2 -> 3 the inbox queue, the
//! run journal and the cursors, 3 -> 4 the expiring cache ([`cache`]), 4 -> 5 the
//! notification outbox ([`notifications`]; the JSON-lines files older engines kept beside
//! the store are imported by [`crate::notify::Outbox::import_files`]).
//!
//! Strict writes share flushes ([`group_commit`]); sled's silent recovery from damaged
//! files is caught by a witness file ([`witness`]).
//! Writers are serialised by a process-local lock (sled allows one process per data
//! dir): reads for a write happen under the lock and outside the transaction, and the
//! transaction closure only writes precomputed bytes, because sled may re-run it.

pub mod cache;
mod combine;
pub mod group_commit;
mod hot_inbox;
mod inbox_ops;
pub mod incoming;
mod keys;
mod memory;
pub mod notifications;
mod ops;
mod options;
pub mod postgres;
mod run_ops;
pub mod runs;
mod sled_store;
pub mod witness;

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cases::{
    Actor, Case, CaseChange, CaseError, CaseEvent, CaseEventKind, CaseId, CaseState, NewCase,
    ObservableType, Severity, Timestamp, UnknownName,
};

pub use cache::Cache;
pub use incoming::{Enqueued, Incoming, NewIncoming};
pub use memory::MemoryStore;
pub use notifications::{DeliveryCounts, Notifications};
pub use options::{StoreOptions, DEFAULT_CACHE_MB, DEFAULT_FLUSH_EVERY_MS};
pub use postgres::{PgOptions, PgStore};
pub use runs::{
    InboxEntry, RunFilter, RunInputRecord, RunOrigin, RunRecord, RunState, RunSummary, Runs,
};
pub use sled_store::SledStore;

/// Why a store operation failed. Validation errors change nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No case with this id.
    #[error("{0} not found")]
    NotFound(CaseId),
    /// The state machine refused the change.
    #[error("{}", CaseError::InvalidTransition { case: *case, from: *from, to: *to })]
    InvalidTransition {
        /// The case.
        case: CaseId,
        /// Its current state.
        from: CaseState,
        /// The requested state.
        to: CaseState,
    },
    /// Another validation error (empty title, invalid observable, missing reason, ...).
    #[error(transparent)]
    Invalid(CaseError),
    /// An idempotency key was reused for a different case.
    #[error("idempotency key (run `{run_id}`, step `{step_id}`) already changed {recorded}, not {requested}")]
    IdempotencyConflict {
        /// Run id of the key.
        run_id: String,
        /// Step id of the key.
        step_id: String,
        /// The case the key committed a change to.
        recorded: CaseId,
        /// The case this call asked to change.
        requested: CaseId,
    },
    /// Stored data cannot be read: bad JSON, bad key, unknown schema version, a store the
    /// backend refuses to open. `detail` says where and what to do.
    #[error("case store at `{}` is unusable: {detail}", path.display())]
    Corrupt {
        /// The data directory.
        path: PathBuf,
        /// What is wrong and what to do about it.
        detail: String,
    },
    /// The backend failed (I/O error, data dir locked by another process).
    #[error("case store at `{}` failed: {detail}", path.display())]
    Backend {
        /// The data directory.
        path: PathBuf,
        /// The backend's message.
        detail: String,
    },
}

impl From<CaseError> for StoreError {
    fn from(e: CaseError) -> Self {
        match e {
            CaseError::InvalidTransition { case, from, to } => {
                StoreError::InvalidTransition { case, from, to }
            }
            e => StoreError::Invalid(e),
        }
    }
}

/// When a write returns relative to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Flush to disk before a write returns (the default: an acknowledged change
    /// survives a crash).
    #[default]
    Strict,
    /// Return after commit; the backend flushes in the background (sled: every 500 ms).
    /// For bulk loads and tests.
    Relaxed,
}

/// Identifies one playbook step's write so a retried step does not apply it twice.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// The run.
    pub run_id: String,
    /// The step in that run.
    pub step_id: String,
}

/// Who writes, when, and under which idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteMeta {
    /// Recorded in the timeline and the case events.
    pub actor: Actor,
    /// The time of the change (taken from the caller's clock so tests can fix it).
    pub at: Timestamp,
    /// When set, a second write with the same key returns the first one's result.
    pub idempotency: Option<IdempotencyKey>,
    /// Made by a step of a run with a journal: under strict durability the store may return
    /// once the write is committed, without waiting for a flush of its own. The run's
    /// journal entry for the step is committed after the write and flushed before anything
    /// with an outside effect starts (`schedule::journal`), and a flush makes everything
    /// committed before it durable; so a crash that takes the write back takes the step's
    /// entry with it, and the step runs again under the same idempotency key: applied once.
    pub journaled: bool,
}

impl WriteMeta {
    /// A write by `actor` at `at`, without an idempotency key.
    pub fn new(actor: Actor, at: Timestamp) -> Self {
        WriteMeta {
            actor,
            at,
            idempotency: None,
            journaled: false,
        }
    }

    /// The same write under an idempotency key.
    pub fn with_key(mut self, run_id: impl Into<String>, step_id: impl Into<String>) -> Self {
        self.idempotency = Some(IdempotencyKey {
            run_id: run_id.into(),
            step_id: step_id.into(),
        });
        self
    }
}

/// What a committed write did.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOutcome {
    /// The case after the write (for a replay: as the first write left it).
    pub case: Case,
    /// True when this write created the case; false for updates and for a create that
    /// matched an open case's dedup key.
    pub created: bool,
    /// True when an earlier write with the same idempotency key is returned instead.
    pub replayed: bool,
    /// The case events committed with the write (empty for a replay or a no-op).
    pub events: Vec<CaseEvent>,
    /// Their ids (kept on replay).
    pub event_ids: Vec<u64>,
}

/// The order of query results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseSort {
    /// Oldest first.
    CreatedAtAsc,
    /// Newest first (the default).
    #[default]
    CreatedAtDesc,
    /// Least recently changed first.
    UpdatedAtAsc,
    /// Most recently changed first.
    UpdatedAtDesc,
    /// Least severe first, then oldest first.
    SeverityAsc,
    /// Most severe first, then newest first.
    SeverityDesc,
}

impl std::str::FromStr for CaseSort {
    type Err = UnknownName;

    /// `created_at`, `-created_at`, `updated_at`, `-updated_at`, `severity`, `-severity`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "created_at" => CaseSort::CreatedAtAsc,
            "-created_at" => CaseSort::CreatedAtDesc,
            "updated_at" => CaseSort::UpdatedAtAsc,
            "-updated_at" => CaseSort::UpdatedAtDesc,
            "severity" => CaseSort::SeverityAsc,
            "-severity" => CaseSort::SeverityDesc,
            _ => {
                return Err(UnknownName {
                    what: "sort",
                    text: s.to_string(),
                    expected: "`created_at`, `-created_at`, `updated_at`, `-updated_at`, `severity`, `-severity`".into(),
                })
            }
        })
    }
}

/// Which cases to return. Criteria combine with AND; empty ones match everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseQuery {
    /// Cases with this observable (the value is normalised like stored values).
    pub observable: Option<(ObservableType, String)>,
    /// Cases in any of these states (empty: any state).
    pub states: Vec<CaseState>,
    /// Cases of exactly this severity.
    pub severity: Option<Severity>,
    /// Cases assigned to exactly this person.
    pub assignee: Option<String>,
    /// Cases with this tag.
    pub tag: Option<String>,
    /// Created at or after (inclusive).
    pub created_after: Option<Timestamp>,
    /// Created before (exclusive).
    pub created_before: Option<Timestamp>,
    /// Result order.
    pub sort: CaseSort,
    /// At most this many results (`usize::MAX`: all).
    pub limit: usize,
}

impl Default for CaseQuery {
    /// Everything, newest first, at most 100.
    fn default() -> Self {
        CaseQuery {
            observable: None,
            states: Vec::new(),
            severity: None,
            assignee: None,
            tag: None,
            created_after: None,
            created_before: None,
            sort: CaseSort::default(),
            limit: 100,
        }
    }
}

impl CaseQuery {
    /// Every case, newest first, no limit.
    pub fn all() -> Self {
        CaseQuery {
            limit: usize::MAX,
            ..Default::default()
        }
    }

    /// Cases with one observable, newest first.
    pub fn by_observable(kind: ObservableType, value: impl Into<String>, limit: usize) -> Self {
        CaseQuery {
            observable: Some((kind, value.into())),
            limit,
            ..Default::default()
        }
    }

    /// Open cases (`new`, `in_progress`, `on_hold`), newest first, no limit.
    pub fn open() -> Self {
        CaseQuery {
            states: CaseState::ALL
                .iter()
                .copied()
                .filter(|s| s.is_open())
                .collect(),
            ..Self::all()
        }
    }
}

/// A pending case event as [`CaseRead::pending_events_for`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub enum PendingEvent {
    /// The whole event: its kind is wanted.
    Full(Box<CaseEvent>),
    /// An event of a kind nobody wants: enough to consume it.
    Unwanted {
        /// The event's id.
        id: u64,
        /// Its kind.
        kind: CaseEventKind,
    },
}

impl PendingEvent {
    /// `event` in full when its kind is in `wanted`.
    pub fn new(event: CaseEvent, wanted: &[CaseEventKind]) -> Self {
        if wanted.contains(&event.kind) {
            PendingEvent::Full(Box::new(event))
        } else {
            PendingEvent::Unwanted {
                id: event.id,
                kind: event.kind,
            }
        }
    }
}

/// Reading cases and the case-event outbox.
#[async_trait]
pub trait CaseRead: Send + Sync {
    /// One case, `None` when there is no such id.
    async fn get(&self, id: CaseId) -> Result<Option<Case>, StoreError>;

    /// Cases matching `query`, in its order, at most `query.limit`. Served from indexes:
    /// the cost grows with the number of results read, not the number of cases stored.
    /// An invalid observable value in the query is an error.
    async fn query(&self, query: &CaseQuery) -> Result<Vec<Case>, StoreError>;

    /// How many cases match `query`, ignoring its limit.
    async fn count(&self, query: &CaseQuery) -> Result<u64, StoreError>;

    /// Undelivered case events, oldest first, at most `limit`.
    async fn pending_events(&self, limit: usize) -> Result<Vec<CaseEvent>, StoreError>;

    /// [`CaseRead::pending_events`] as the dispatcher takes them: an event whose kind is
    /// not in `wanted` (no playbook listens to it) comes without its cases, which a store
    /// may then leave undecoded. Most of a chain's events are of such kinds, and each holds
    /// the case twice (after and before).
    async fn pending_events_for(
        &self,
        limit: usize,
        wanted: &[CaseEventKind],
    ) -> Result<Vec<PendingEvent>, StoreError> {
        Ok(self
            .pending_events(limit)
            .await?
            .into_iter()
            .map(|e| PendingEvent::new(e, wanted))
            .collect())
    }

    /// Open cases whose SLA is due at or before `now` and not yet marked breached, in
    /// deadline order (for the SLA watcher, including deadlines that passed while the
    /// engine was stopped).
    async fn sla_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Case>, StoreError>;

    /// Consistency check of indexes, outbox and counters against the cases. Returns
    /// one line per problem (empty when consistent); an `Err` only when the store
    /// cannot be read at all.
    async fn check(&self) -> Result<Vec<String>, StoreError>;
}

/// Changing cases and acknowledging case events.
#[async_trait]
pub trait CaseWrite: Send + Sync {
    /// Creates a case and emits `case.created`, atomically. With a dedup key that an open
    /// case already has, returns that case (`created: false`; the newest, when reopening
    /// left several) and changes nothing. With an
    /// idempotency key already used, returns the first call's result (`replayed: true`).
    async fn create(&self, new: NewCase, meta: &WriteMeta) -> Result<WriteOutcome, StoreError>;

    /// Applies `changes` in order to one case, atomically with their case events: all of
    /// them or (on any error) none. Idempotent per `meta.idempotency` like `create`.
    async fn update(
        &self,
        id: CaseId,
        changes: Vec<CaseChange>,
        meta: &WriteMeta,
    ) -> Result<WriteOutcome, StoreError>;

    /// Removes a delivered case event from the outbox, with its delivery records, in one
    /// transaction; false when it was not there.
    async fn ack_event(&self, event_id: u64) -> Result<bool, StoreError>;

    /// Waits until everything committed so far is on disk.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Waits until everything committed so far is on disk when the store's durability is
    /// [`Durability::Strict`] (sharing the flush with concurrent writers); returns at once
    /// when it is [`Durability::Relaxed`].
    async fn sync(&self) -> Result<(), StoreError>;

    /// Commits and flushes since the store was opened, for `/metrics` and benchmarks;
    /// `None` for stores that do not count them.
    fn write_stats(&self) -> Option<StoreStats> {
        None
    }
}

/// What a store wrote since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Writes committed (a transaction, or a single key).
    pub commits: u64,
    /// Flushes to disk (group commit: under load, far fewer than commits).
    pub flushes: u64,
    /// Time spent in those flushes, in microseconds.
    pub flush_micros: u64,
}

/// One playbook started for one case event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The case event.
    pub event_id: u64,
    /// The playbook it started.
    pub playbook: String,
    /// The run that playbook started as.
    pub run_id: String,
}

/// The engine's once-only bookkeeping: incoming events by their key, and case-event
/// deliveries by (event, playbook). Under [`Durability::Strict`] a record is on disk
/// before the call returns, so a crash after it cannot run the same thing twice.
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Records an incoming event under `key` (such as `okta:<uuid>`) received at `at`.
    /// True when the key is new; false for a duplicate delivery, which must not run.
    async fn record_incoming(&self, key: &str, at: Timestamp) -> Result<bool, StoreError>;

    /// Records that `playbook` starts as run `run_id` for the case event `event_id`.
    /// False when that playbook was already started for that event (it must not start
    /// again). The records go when the event is acknowledged ([`CaseWrite::ack_event`]).
    async fn start_delivery(
        &self,
        event_id: u64,
        playbook: &str,
        run_id: &str,
    ) -> Result<bool, StoreError>;

    /// The playbooks already started for a pending case event.
    async fn deliveries(&self, event_id: u64) -> Result<Vec<Delivery>, StoreError>;

    /// Queues incoming events with their dedup keys, in one transaction (concurrent calls
    /// may share it); see [`incoming`]. One result per event, in order. Durable before it
    /// returns under strict durability.
    async fn enqueue_incoming(&self, events: Vec<NewIncoming>)
        -> Result<Vec<Enqueued>, StoreError>;

    /// As [`Inbox::enqueue_incoming`], but the events may not be on disk when it returns:
    /// for a caller that acknowledges them only later, after [`CaseWrite::sync`] (the
    /// synchronous `POST /events/<source>?wait=true`, which answers when the runs are
    /// done). Whatever the run does with outside effects waits for its journal's flush,
    /// which covers the events too. Stores that are durable at every commit need not
    /// override it.
    async fn enqueue_incoming_unsynced(
        &self,
        events: Vec<NewIncoming>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        self.enqueue_incoming(events).await
    }

    /// Queued incoming events, oldest first, at most `limit`.
    async fn pending_incoming(&self, limit: usize) -> Result<Vec<Incoming>, StoreError>;

    /// How many incoming events are queued.
    async fn inbox_depth(&self) -> Result<u64, StoreError>;

    /// A named cursor (such as where an Okta System Log poller got to).
    async fn get_cursor(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Sets a named cursor; on disk before it returns, whatever the durability.
    async fn put_cursor(&self, name: &str, value: &str) -> Result<(), StoreError>;

    /// Notified when another process sharing the store committed work (an incoming
    /// event, a case event, a parked run) or died: the worker wakes on it besides its own
    /// wake-ups. `None` for stores only this process writes.
    fn wake_signal(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
}

/// A full case store.
pub trait Store: CaseRead + CaseWrite + Inbox + Runs + Cache + Notifications {}

impl<T: CaseRead + CaseWrite + Inbox + Runs + Cache + Notifications + ?Sized> Store for T {}
