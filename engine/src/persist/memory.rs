//! `MemoryStore`: the case store in process memory, for tests and embedding. It keeps the
//! same trees and keys as the sled store in `BTreeMap`s and shares its planner, so it
//! behaves the same (indexes, outbox, idempotency), minus durability.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use serde_json::Value;

use super::cache::{self, Cache};
use super::incoming::{Enqueued, Incoming, NewIncoming};
use super::keys::{self, Tree, TREE_COUNT};
use super::notifications::{self, Notifications};
use super::ops::{self, KvIter, KvRead, WriteSet};
use super::runs::{InboxEntry, RunFilter, RunOrigin, RunRecord, RunSummary, Runs};
use super::{
    inbox_ops, run_ops, CaseQuery, CaseRead, CaseWrite, Delivery, Inbox, PendingEvent, StoreError,
    WriteMeta, WriteOutcome,
};
use crate::cases::{Case, CaseChange, CaseEvent, CaseEventKind, CaseId, NewCase, Timestamp};
use crate::notify::{Delivery as NotifyDelivery, Notification, Pending};
use crate::report::StepReport;

struct MemKv {
    trees: [BTreeMap<Vec<u8>, Vec<u8>>; TREE_COUNT],
    path: PathBuf,
}

impl KvRead for MemKv {
    fn path(&self) -> &Path {
        &self.path
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.trees[tree.index()].get(key).cloned())
    }

    fn range(&self, tree: Tree, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, rev: bool) -> KvIter<'_> {
        if keys::empty_bounds(&lo, &hi) {
            return Box::new(std::iter::empty());
        }
        let r = self.trees[tree.index()]
            .range((lo, hi))
            .map(|(k, v)| Ok((k.clone(), v.clone())));
        if rev {
            Box::new(r.rev())
        } else {
            Box::new(r)
        }
    }
}

impl MemKv {
    fn commit(&mut self, ws: WriteSet) {
        for (tree, key, value) in ws.ops {
            let t = &mut self.trees[tree.index()];
            match value {
                Some(v) => {
                    t.insert(key, v);
                }
                None => {
                    t.remove(&key);
                }
            }
        }
    }
}

/// The case store in memory. Every write is atomic (one lock); nothing survives the
/// process.
pub struct MemoryStore {
    kv: Mutex<MemKv>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let mut kv = MemKv {
            trees: Default::default(),
            path: PathBuf::from("<memory>"),
        };
        // A fresh store has no schema version yet, so this only writes it.
        if let Ok(ws) = ops::check_schema(&kv) {
            kv.commit(ws);
        }
        MemoryStore { kv: Mutex::new(kv) }
    }

    fn lock(&self) -> MutexGuard<'_, MemKv> {
        // A panic in another thread cannot leave the maps half-written: `commit` does not
        // fail midway, so the data behind a poisoned lock is still consistent.
        self.kv.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a planned write and commits it under one lock.
    fn write<T>(
        &self,
        plan: impl FnOnce(&MemKv) -> Result<(WriteSet, T), StoreError>,
    ) -> Result<T, StoreError> {
        let mut kv = self.lock();
        let (ws, out) = plan(&kv)?;
        kv.commit(ws);
        Ok(out)
    }
}

#[async_trait]
impl CaseRead for MemoryStore {
    async fn get(&self, id: CaseId) -> Result<Option<Case>, StoreError> {
        ops::read_case(&*self.lock(), id)
    }

    async fn query(&self, query: &CaseQuery) -> Result<Vec<Case>, StoreError> {
        ops::query(&*self.lock(), query)
    }

    async fn count(&self, query: &CaseQuery) -> Result<u64, StoreError> {
        ops::count(&*self.lock(), query)
    }

    async fn pending_events(&self, limit: usize) -> Result<Vec<CaseEvent>, StoreError> {
        ops::pending_events(&*self.lock(), limit)
    }

    async fn pending_events_for(
        &self,
        limit: usize,
        wanted: &[CaseEventKind],
    ) -> Result<Vec<PendingEvent>, StoreError> {
        ops::pending_events_for(&*self.lock(), limit, wanted)
    }

    async fn sla_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Case>, StoreError> {
        ops::sla_due(&*self.lock(), now, limit)
    }

    async fn check(&self) -> Result<Vec<String>, StoreError> {
        ops::check(&*self.lock())
    }
}

#[async_trait]
impl CaseWrite for MemoryStore {
    async fn create(&self, new: NewCase, meta: &WriteMeta) -> Result<WriteOutcome, StoreError> {
        self.write(|kv| ops::plan_create(kv, new, meta))
    }

    async fn update(
        &self,
        id: CaseId,
        changes: Vec<CaseChange>,
        meta: &WriteMeta,
    ) -> Result<WriteOutcome, StoreError> {
        self.write(|kv| ops::plan_update(kv, id, &changes, meta))
    }

    async fn ack_event(&self, event_id: u64) -> Result<bool, StoreError> {
        self.write(|kv| ops::plan_ack(kv, event_id))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl Inbox for MemoryStore {
    async fn record_incoming(&self, key: &str, at: Timestamp) -> Result<bool, StoreError> {
        self.write(|kv| ops::plan_record_incoming(kv, key, at))
    }

    async fn start_delivery(
        &self,
        event_id: u64,
        playbook: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        self.write(|kv| ops::plan_start_delivery(kv, event_id, playbook, run_id))
    }

    async fn deliveries(&self, event_id: u64) -> Result<Vec<Delivery>, StoreError> {
        ops::deliveries(&*self.lock(), event_id)
    }

    async fn enqueue_incoming(
        &self,
        events: Vec<NewIncoming>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        self.write(|kv| inbox_ops::plan_enqueue(kv, &events))
    }

    async fn pending_incoming(&self, limit: usize) -> Result<Vec<Incoming>, StoreError> {
        inbox_ops::pending_incoming(&*self.lock(), limit, None)
    }

    async fn inbox_depth(&self) -> Result<u64, StoreError> {
        Ok(self.lock().trees[Tree::InboxseqEvent.index()].len() as u64)
    }

    async fn get_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        inbox_ops::get_cursor(&*self.lock(), name)
    }

    async fn put_cursor(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.write(|_| Ok((inbox_ops::plan_put_cursor(name, value), ())))
    }
}

#[async_trait]
impl Cache for MemoryStore {
    async fn cache_get(
        &self,
        namespace: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<Value>, StoreError> {
        cache::get(&*self.lock(), namespace, key, now)
    }

    async fn cache_put(
        &self,
        namespace: &str,
        key: &str,
        value: &Value,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|kv| Ok((cache::plan_put(kv, namespace, key, value, expires_at)?, ())))
    }

    async fn cache_purge(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        self.write(|kv| cache::plan_purge(kv, now, limit))
    }
}

#[async_trait]
impl Notifications for MemoryStore {
    async fn notification_push(
        &self,
        n: &Notification,
        owed: &[String],
    ) -> Result<bool, StoreError> {
        self.write(|kv| notifications::plan_push(kv, n, owed))
    }

    async fn notification_record(&self, d: &NotifyDelivery) -> Result<(), StoreError> {
        self.write(|kv| Ok((notifications::plan_record(kv, d)?, ())))
    }

    async fn notifications_pending(
        &self,
        now_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        notifications::pending(&*self.lock(), now_ms, limit)
    }

    async fn notification_claim(&self, id: &str, channel: &str) -> Result<bool, StoreError> {
        notifications::claimable(&*self.lock(), id, channel)
    }

    async fn notification_release(&self, _id: &str, _channel: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn notifications_all(&self) -> Result<Vec<Notification>, StoreError> {
        notifications::all(&*self.lock())
    }

    async fn notification_deliveries(
        &self,
        id: Option<&str>,
    ) -> Result<Vec<NotifyDelivery>, StoreError> {
        notifications::deliveries(&*self.lock(), id)
    }
}

#[async_trait]
impl Runs for MemoryStore {
    async fn start_runs(
        &self,
        origin: RunOrigin,
        runs: &[RunRecord],
    ) -> Result<Vec<bool>, StoreError> {
        self.write(|kv| run_ops::plan_start_runs(kv, origin, runs))
    }

    async fn start_runs_many(
        &self,
        batch: &[(RunOrigin, Vec<RunRecord>)],
    ) -> Result<Vec<Vec<bool>>, StoreError> {
        self.write(|kv| run_ops::plan_start_runs_many(kv, batch))
    }

    async fn record_steps(
        &self,
        run_id: &str,
        steps: &[(u32, &StepReport)],
    ) -> Result<(), StoreError> {
        self.write(|kv| Ok((run_ops::plan_record_steps(kv, run_id, steps)?, ())))
    }

    async fn finish_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.write(|kv| Ok((run_ops::plan_finish_run(kv, run)?, ())))
    }

    async fn park_runs(&self, run_ids: &[String]) -> Result<(), StoreError> {
        self.write(|kv| Ok((run_ops::plan_park(kv, run_ids)?, ())))
    }

    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        run_ops::unfinished_runs(&*self.lock())
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        run_ops::list_runs(&*self.lock(), filter)
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        run_ops::get_run(&*self.lock(), run_id)
    }

    async fn run_record(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        run_ops::read_run_record(&*self.lock(), run_id)
    }

    async fn inbox_entry(&self, seq: u64) -> Result<InboxEntry, StoreError> {
        run_ops::inbox_entry(&*self.lock(), seq)
    }
}
