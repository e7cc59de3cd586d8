//! `SledStore`: the default case store, in a sled database under the data dir. See the
//! [`super`] module for the key layout.

use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::cache::{self, Cache};
use super::combine::Combiner;
use super::group_commit::GroupCommit;
use super::hot_inbox::HotInbox;
use super::incoming::{Enqueued, Incoming, NewIncoming};
use super::keys::{self, Tree, TREE_COUNT};
use super::notifications::{self, Notifications};
use super::ops::{self, KvIter, KvRead, WriteSet};
use super::runs::{InboxEntry, RunFilter, RunOrigin, RunRecord, RunSummary, Runs};
use super::witness::{self, Counters};
use super::{
    inbox_ops, run_ops, CaseQuery, CaseRead, CaseWrite, Delivery, Durability, Inbox, PendingEvent,
    StoreError, StoreOptions, StoreStats, WriteMeta, WriteOutcome,
};
use crate::cases::{Case, CaseChange, CaseEvent, CaseEventKind, CaseId, NewCase, Timestamp};
use crate::notify::{Delivery as NotifyDelivery, Notification, Pending};
use crate::report::StepReport;

/// How often, at most, a flush also refreshes the witness file.
const WITNESS_EVERY: Duration = Duration::from_secs(1);

struct SledKv {
    trees: [sled::Tree; TREE_COUNT],
    path: PathBuf,
}

fn backend(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Maps a sled error: I/O problems are `Backend`, everything else means the files are
/// not a store this code can read.
fn sled_error(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => backend(
            path,
            format!("{io} (is another engine process using this data dir?)"),
        ),
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "the files are damaged (sled read corrupted data{}); restore the data dir from a backup, or move it away to start an empty store",
                at.map(|p| format!(" at {p:?}")).unwrap_or_default()
            ),
        },
        other => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "{other}; restore the data dir from a backup or point `--data-dir` elsewhere"
            ),
        },
    }
}

impl KvRead for SledKv {
    fn path(&self) -> &Path {
        &self.path
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.trees[tree.index()]
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| sled_error(&self.path, e))
    }

    fn range(&self, tree: Tree, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, rev: bool) -> KvIter<'_> {
        if keys::empty_bounds(&lo, &hi) {
            return Box::new(std::iter::empty());
        }
        let path = &self.path;
        let r = self.trees[tree.index()].range((lo, hi));
        let conv = move |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| sled_error(path, e))
        };
        if rev {
            Box::new(r.rev().map(conv))
        } else {
            Box::new(r.map(conv))
        }
    }
}

impl SledKv {
    /// Reads every record of the log that a page is made of, once: sled checks a record's
    /// CRC and decodes it when it reads it, so damaged files fail here instead of at the
    /// first query that meets them. The records are read past sled's cache (the vendored
    /// sled's `verify_pages`): read through it, a 1M-case store left the process ~200 MB
    /// larger for no query's sake.
    fn verify(&self, db: &sled::Db) -> Result<(), StoreError> {
        let started = Instant::now();
        let scanned = catch_unwind(AssertUnwindSafe(|| db.verify_pages()));
        match scanned {
            Ok(Ok(records)) => {
                tracing::debug!(records, ms = started.elapsed().as_millis() as u64, "store verified");
                Ok(())
            }
            Ok(Err(e)) => Err(sled_error(&self.path, e)),
            Err(_) => Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: "sled failed while reading the files; restore the data dir from a backup, or move it away to start an empty store".into(),
            }),
        }
    }

    /// Commits a write set in one multi-tree transaction. The closure only copies
    /// precomputed bytes: sled may run it more than once.
    fn commit(&self, ws: &WriteSet) -> Result<(), StoreError> {
        match ws.ops.as_slice() {
            [] => return Ok(()),
            // One key is atomic on its own. A sled transaction costs far more than the write:
            // it seals the log buffer before and after its batch (`pin_log`), two buffer
            // writes on sled's IO threads for every commit. Every writer holds the store's
            // writer lock, so no transaction runs beside this write.
            [(tree, key, value)] => {
                let tree = &self.trees[tree.index()];
                let done = match value {
                    Some(val) => tree.insert(key.as_slice(), val.as_slice()),
                    None => tree.remove(key.as_slice()),
                };
                return done.map(drop).map_err(|e| sled_error(&self.path, e));
            }
            _ => {}
        }
        // Only the trees the write touches take part: sled sets up and commits every tree
        // of a transaction, and most writes touch 2 to 5 of the 23.
        let mut slot = [usize::MAX; TREE_COUNT];
        let mut trees: Vec<sled::Tree> = Vec::new();
        for (tree, _, _) in &ws.ops {
            let i = tree.index();
            if slot.get(i) == Some(&usize::MAX) {
                slot[i] = trees.len();
                trees.push(self.trees[i].clone());
            }
        }
        let trees: &[sled::Tree] = &trees;
        let result: Result<(), TransactionError<()>> = trees.transaction(|views| {
            for (tree, key, value) in &ws.ops {
                let Some(view) = slot.get(tree.index()).and_then(|s| views.get(*s)) else {
                    return Err(ConflictableTransactionError::Abort(()));
                };
                // No old value is needed, and the writer lock keeps other writers out:
                // blind writes save a walk of the tree per key (vendored sled, change 5).
                view.write_blind(key.as_slice(), value.as_deref());
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(sled_error(&self.path, e)),
            Err(TransactionError::Abort(())) => Err(backend(&self.path, "transaction aborted")),
        }
    }
}

/// Whether a write waits for the disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// As the store's durability says.
    Policy,
    /// Never (the run journal: the executor syncs before anything depends on it).
    Never,
    /// Always (cursors).
    Always,
}

/// A case write waits for the disk as the store's durability says, except a step's write
/// in a journaled run: the journal's flush covers it (see [`WriteMeta::journaled`]).
fn case_flush(meta: &WriteMeta) -> Flush {
    if meta.journaled {
        Flush::Never
    } else {
        Flush::Policy
    }
}

/// The case store in a sled database. One process per data dir (sled locks it).
pub struct SledStore {
    db: sled::Db,
    kv: SledKv,
    durability: Durability,
    /// Serialises writers so reads made while planning a write stay valid until commit.
    write_lock: Mutex<()>,
    group: GroupCommit,
    /// Concurrent `enqueue_incoming` calls, written together.
    ingest: Combiner<Vec<NewIncoming>, Vec<Enqueued>>,
    /// The same for `enqueue_incoming_unsynced`, which does not wait for the disk.
    ingest_unsynced: Combiner<Vec<NewIncoming>, Vec<Enqueued>>,
    /// When the witness file was last written.
    witnessed: Mutex<Instant>,
    /// The events this process queued, decoded, until the worker reads them back.
    hot_inbox: HotInbox,
}

/// How long opening waits for a data dir locked by a handle that is going away.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl SledStore {
    /// Opens (or creates) the store in `dir` with [`Durability::Strict`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, Durability::Strict)
    }

    /// Opens (or creates) the store in `dir` with the given durability.
    pub fn open_with(dir: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        Self::open_with_options(
            dir,
            StoreOptions {
                durability,
                ..StoreOptions::default()
            },
        )
    }

    /// Opens (or creates) the store in `dir`. Fails with [`StoreError::Corrupt`] when the
    /// files are not a readable store, were written by a newer schema version, or lost
    /// data that was on disk (see [`super::witness`]): a damaged store never opens as an
    /// empty or older one.
    pub fn open_with_options(
        dir: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let path = dir.as_ref().to_path_buf();
        let mut config = sled::Config::new()
            .path(&path)
            .flush_every_ms((options.flush_every_ms > 0).then_some(options.flush_every_ms));
        if let Some(mb) = options.cache_mb {
            config = config.cache_capacity(mb.saturating_mul(1024 * 1024));
        }
        // sled 0.34 can panic on some damaged files; a store that cannot be opened must
        // be an error people can act on, not a crash.
        // The data dir is locked per process; a handle of this process that was just
        // dropped (or a process that is still exiting) lets go of the lock a moment later,
        // so a locked dir is tried again for a short while before it is an error.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let opened = loop {
            match catch_unwind(AssertUnwindSafe(|| config.open())) {
                Ok(Err(sled::Error::Io(e)))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        let db =
            match opened {
                Ok(Ok(db)) => db,
                Ok(Err(e)) => return Err(sled_error(&path, e)),
                Err(_) => return Err(StoreError::Corrupt {
                    path,
                    detail:
                        "sled failed while opening the files; restore the data dir from a backup"
                            .into(),
                }),
            };
        let witnessed = witness::read(&path)?;
        let mut opened = Vec::with_capacity(TREE_COUNT);
        for tree in Tree::ALL {
            opened.push(
                db.open_tree(tree.name())
                    .map_err(|e| sled_error(&path, e))?,
            );
        }
        let trees: [sled::Tree; TREE_COUNT] = opened
            .try_into()
            .map_err(|_| backend(&path, "wrong number of trees"))?;
        let kv = SledKv { trees, path };
        if options.verify_on_open {
            kv.verify(&db)?;
        }
        let had_schema = kv.get(Tree::Meta, keys::META_SCHEMA_VERSION)?.is_some();
        witness::verify(&kv.path, witnessed, had_schema, Counters::read(&kv)?)?;
        let init = ops::check_schema(&kv)?;
        kv.commit(&init)?;
        db.flush().map_err(|e| sled_error(&kv.path, e))?;
        witness::write(&kv.path, Counters::read(&kv)?)?;
        Ok(SledStore {
            db,
            kv,
            durability: options.durability,
            write_lock: Mutex::new(()),
            group: GroupCommit::default(),
            ingest: Combiner::default(),
            ingest_unsynced: Combiner::default(),
            witnessed: Mutex::new(Instant::now()),
            hot_inbox: HotInbox::default(),
        })
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        &self.kv.path
    }

    /// The trees, for reading the store as it is (`engine store copy`).
    pub(crate) fn kv(&self) -> &dyn KvRead {
        &self.kv
    }

    /// Commits and flushes so far.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.group.commits(),
            flushes: self.group.flushes(),
            flush_micros: self.group.flush_micros(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded value is `()`: a poisoned lock protects no state of its own.
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Plans and commits a write under the writer lock, then waits for the disk as `flush`
    /// says (sharing the flush with concurrent writers).
    async fn write<T>(
        &self,
        flush: Flush,
        plan: impl FnOnce(&SledKv) -> Result<(WriteSet, T), StoreError>,
    ) -> Result<T, StoreError> {
        let (ticket, out) = {
            let _guard = self.lock();
            let (ws, out) = plan(&self.kv)?;
            if ws.ops.is_empty() {
                (None, out)
            } else {
                self.kv.commit(&ws)?;
                (Some(self.group.committed()), out)
            }
        };
        let wait = match flush {
            Flush::Policy => self.durability == Durability::Strict,
            Flush::Never => false,
            Flush::Always => true,
        };
        if let (Some(ticket), true) = (ticket, wait) {
            self.durable(ticket).await?;
        }
        Ok(out)
    }

    /// Returns once commit `ticket` is on disk.
    async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        self.group
            .durable(ticket, || async {
                // Counters read before the flush are covered by it: safe for the witness.
                let refresh = self.witness_due();
                let counters = if refresh {
                    Some(Counters::read(&self.kv)?)
                } else {
                    None
                };
                self.db
                    .flush_async()
                    .await
                    .map_err(|e| sled_error(&self.kv.path, e))?;
                if let Some(c) = counters {
                    if let Err(e) = witness::write(&self.kv.path, c) {
                        tracing::warn!(error = %e, "could not refresh the store's witness file");
                    }
                }
                Ok(())
            })
            .await
    }

    /// Queues incoming events. Concurrent callers of one combiner share one transaction and
    /// (with `Flush::Policy`) one flush; see `combine`.
    async fn enqueue(
        &self,
        combiner: &Combiner<Vec<NewIncoming>, Vec<Enqueued>>,
        flush: Flush,
        events: Vec<NewIncoming>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        combiner
            .submit(events, |batch: Vec<Vec<NewIncoming>>| async move {
                let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
                let flat: Vec<NewIncoming> = batch.into_iter().flatten().collect();
                let out = self
                    .write(flush, |kv| inbox_ops::plan_enqueue(kv, &flat))
                    .await?;
                self.hot_inbox.keep(flat, &out);
                let mut out = out.into_iter();
                Ok(lens
                    .iter()
                    .map(|n| out.by_ref().take(*n).collect())
                    .collect())
            })
            .await
    }

    fn witness_due(&self) -> bool {
        let mut last = self.witnessed.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= WITNESS_EVERY {
            *last = Instant::now();
            true
        } else {
            false
        }
    }
}

impl Drop for SledStore {
    /// A clean close: flush, and record the counters in the witness file.
    fn drop(&mut self) {
        let counters = Counters::read(&self.kv);
        match (counters, self.db.flush()) {
            (Ok(c), Ok(_)) => {
                if let Err(e) = witness::write(&self.kv.path, c) {
                    tracing::warn!(error = %e, "could not write the store's witness file");
                }
            }
            (Err(e), _) => {
                tracing::warn!(error = %e, "could not read the store's counters at close")
            }
            (_, Err(e)) => tracing::warn!(error = %e, "could not flush the store at close"),
        }
    }
}

#[async_trait]
impl CaseRead for SledStore {
    async fn get(&self, id: CaseId) -> Result<Option<Case>, StoreError> {
        ops::read_case(&self.kv, id)
    }

    async fn query(&self, query: &CaseQuery) -> Result<Vec<Case>, StoreError> {
        ops::query(&self.kv, query)
    }

    async fn count(&self, query: &CaseQuery) -> Result<u64, StoreError> {
        ops::count(&self.kv, query)
    }

    async fn pending_events(&self, limit: usize) -> Result<Vec<CaseEvent>, StoreError> {
        ops::pending_events(&self.kv, limit)
    }

    async fn pending_events_for(
        &self,
        limit: usize,
        wanted: &[CaseEventKind],
    ) -> Result<Vec<PendingEvent>, StoreError> {
        ops::pending_events_for(&self.kv, limit, wanted)
    }

    async fn sla_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Case>, StoreError> {
        ops::sla_due(&self.kv, now, limit)
    }

    async fn check(&self) -> Result<Vec<String>, StoreError> {
        ops::check(&self.kv)
    }
}

#[async_trait]
impl CaseWrite for SledStore {
    async fn create(&self, new: NewCase, meta: &WriteMeta) -> Result<WriteOutcome, StoreError> {
        self.write(case_flush(meta), |kv| ops::plan_create(kv, new, meta))
            .await
    }

    async fn update(
        &self,
        id: CaseId,
        changes: Vec<CaseChange>,
        meta: &WriteMeta,
    ) -> Result<WriteOutcome, StoreError> {
        self.write(case_flush(meta), |kv| {
            ops::plan_update(kv, id, &changes, meta)
        })
        .await
    }

    async fn ack_event(&self, event_id: u64) -> Result<bool, StoreError> {
        self.write(Flush::Policy, |kv| ops::plan_ack(kv, event_id))
            .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.durable(self.group.current()).await
    }

    fn write_stats(&self) -> Option<StoreStats> {
        Some(self.stats())
    }

    async fn sync(&self) -> Result<(), StoreError> {
        match self.durability {
            Durability::Strict => self.flush().await,
            Durability::Relaxed => Ok(()),
        }
    }
}

#[async_trait]
impl Inbox for SledStore {
    async fn record_incoming(&self, key: &str, at: Timestamp) -> Result<bool, StoreError> {
        self.write(Flush::Policy, |kv| ops::plan_record_incoming(kv, key, at))
            .await
    }

    async fn start_delivery(
        &self,
        event_id: u64,
        playbook: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        self.write(Flush::Policy, |kv| {
            ops::plan_start_delivery(kv, event_id, playbook, run_id)
        })
        .await
    }

    async fn deliveries(&self, event_id: u64) -> Result<Vec<Delivery>, StoreError> {
        ops::deliveries(&self.kv, event_id)
    }

    async fn enqueue_incoming(
        &self,
        events: Vec<NewIncoming>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        self.enqueue(&self.ingest, Flush::Policy, events).await
    }

    async fn enqueue_incoming_unsynced(
        &self,
        events: Vec<NewIncoming>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        self.enqueue(&self.ingest_unsynced, Flush::Never, events)
            .await
    }

    async fn pending_incoming(&self, limit: usize) -> Result<Vec<Incoming>, StoreError> {
        inbox_ops::pending_incoming(&self.kv, limit, Some(&self.hot_inbox))
    }

    async fn inbox_depth(&self) -> Result<u64, StoreError> {
        inbox_ops::inbox_depth(&self.kv)
    }

    async fn get_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        inbox_ops::get_cursor(&self.kv, name)
    }

    async fn put_cursor(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.write(Flush::Always, |_| {
            Ok((inbox_ops::plan_put_cursor(name, value), ()))
        })
        .await
    }
}

#[async_trait]
impl Cache for SledStore {
    async fn cache_get(
        &self,
        namespace: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<Value>, StoreError> {
        cache::get(&self.kv, namespace, key, now)
    }

    async fn cache_put(
        &self,
        namespace: &str,
        key: &str,
        value: &Value,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(Flush::Never, |kv| {
            Ok((cache::plan_put(kv, namespace, key, value, expires_at)?, ()))
        })
        .await
    }

    async fn cache_purge(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        self.write(Flush::Never, |kv| cache::plan_purge(kv, now, limit))
            .await
    }
}

#[async_trait]
impl Notifications for SledStore {
    async fn notification_push(
        &self,
        n: &Notification,
        owed: &[String],
    ) -> Result<bool, StoreError> {
        self.write(Flush::Policy, |kv| notifications::plan_push(kv, n, owed))
            .await
    }

    async fn notification_record(&self, d: &NotifyDelivery) -> Result<(), StoreError> {
        self.write(Flush::Policy, |kv| {
            Ok((notifications::plan_record(kv, d)?, ()))
        })
        .await
    }

    async fn notifications_pending(
        &self,
        now_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        notifications::pending(&self.kv, now_ms, limit)
    }

    async fn notification_claim(&self, id: &str, channel: &str) -> Result<bool, StoreError> {
        notifications::claimable(&self.kv, id, channel)
    }

    async fn notification_release(&self, _id: &str, _channel: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn notifications_all(&self) -> Result<Vec<Notification>, StoreError> {
        notifications::all(&self.kv)
    }

    async fn notification_deliveries(
        &self,
        id: Option<&str>,
    ) -> Result<Vec<NotifyDelivery>, StoreError> {
        notifications::deliveries(&self.kv, id)
    }

    async fn notification_counts(&self) -> Result<notifications::DeliveryCounts, StoreError> {
        notifications::counts(&self.kv)
    }
}

#[async_trait]
impl Runs for SledStore {
    async fn start_runs(
        &self,
        origin: RunOrigin,
        runs: &[RunRecord],
    ) -> Result<Vec<bool>, StoreError> {
        self.write(Flush::Never, |kv| {
            run_ops::plan_start_runs(kv, origin, runs)
        })
        .await
    }

    async fn start_runs_many(
        &self,
        batch: &[(RunOrigin, Vec<RunRecord>)],
    ) -> Result<Vec<Vec<bool>>, StoreError> {
        self.write(Flush::Never, |kv| run_ops::plan_start_runs_many(kv, batch))
            .await
    }

    async fn record_steps(
        &self,
        run_id: &str,
        steps: &[(u32, &StepReport)],
    ) -> Result<(), StoreError> {
        self.write(Flush::Never, |kv| {
            Ok((run_ops::plan_record_steps(kv, run_id, steps)?, ()))
        })
        .await
    }

    async fn finish_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.write(Flush::Policy, |kv| {
            Ok((run_ops::plan_finish_run(kv, run)?, ()))
        })
        .await
    }

    async fn park_runs(&self, run_ids: &[String]) -> Result<(), StoreError> {
        self.write(Flush::Policy, |kv| {
            Ok((run_ops::plan_park(kv, run_ids)?, ()))
        })
        .await
    }

    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        run_ops::unfinished_runs(&self.kv)
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        run_ops::list_runs(&self.kv, filter)
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        run_ops::get_run(&self.kv, run_id)
    }

    async fn run_record(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        run_ops::read_run_record(&self.kv, run_id)
    }

    async fn inbox_entry(&self, seq: u64) -> Result<InboxEntry, StoreError> {
        run_ops::inbox_entry(&self.kv, seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::Inbox;
    use serde_json::json;

    fn okta(uuid: &str) -> NewIncoming {
        NewIncoming {
            source: "okta".into(),
            key: Some(format!("okta:{uuid}")),
            event: json!({"uuid": uuid, "eventType": "user.session.start", "n": 1.5}),
            received_at: Timestamp::now(),
        }
    }

    #[tokio::test]
    async fn the_worker_gets_the_queued_events_as_they_are_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let queued = store
            .enqueue_incoming(vec![okta("a"), okta("b"), okta("a")])
            .await
            .unwrap();
        assert!(queued[2].duplicate);
        // The two stored events are kept decoded; the duplicate is not.
        assert_eq!(store.hot_inbox.len(), 2);
        let hot = store.pending_incoming(10).await.unwrap();
        assert_eq!(store.hot_inbox.len(), 0);
        // Read again (nothing kept now), the entries are decoded from disk: the same.
        let decoded = store.pending_incoming(10).await.unwrap();
        assert_eq!(hot, decoded);
        assert_eq!(hot.len(), 2);
        assert_eq!(hot[0].event["uuid"], "a");
        assert_eq!(Some(hot[1].seq), queued[1].seq);
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.pending_incoming(10).await.unwrap(), decoded);
    }

    #[tokio::test]
    async fn a_taken_entry_is_not_handed_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let queued = store
            .enqueue_incoming(vec![okta("a"), okta("b")])
            .await
            .unwrap();
        let first = queued[0].seq.unwrap();
        // The first entry leaves the queue without the worker having read it.
        store
            .start_runs(RunOrigin::Inbox(first), &[])
            .await
            .unwrap();
        let pending = store.pending_incoming(10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].event["uuid"], "b");
        // What the worker did not take was dropped with it.
        assert_eq!(store.hot_inbox.len(), 0);
    }
}
