//! `SledStore`: the default case store, in a sled database under the data dir. See the
//! [`super`] module for the key layout.

use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::keys::{self, Tree, TREE_COUNT};
use super::ops::{self, KvIter, KvRead, WriteSet};
use super::{
    CaseQuery, CaseRead, CaseWrite, Delivery, Durability, Inbox, StoreError, WriteMeta,
    WriteOutcome,
};
use crate::cases::{Case, CaseChange, CaseEvent, CaseId, NewCase, Timestamp};

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
    /// Commits a write set in one multi-tree transaction. The closure only copies
    /// precomputed bytes: sled may run it more than once.
    fn commit(&self, ws: &WriteSet) -> Result<(), StoreError> {
        if ws.ops.is_empty() {
            return Ok(());
        }
        let trees: &[sled::Tree] = &self.trees;
        let result: Result<(), TransactionError<()>> = trees.transaction(|views| {
            for (tree, key, value) in &ws.ops {
                let Some(view) = views.get(tree.index()) else {
                    return Err(ConflictableTransactionError::Abort(()));
                };
                match value {
                    Some(val) => {
                        view.insert(key.as_slice(), val.as_slice())?;
                    }
                    None => {
                        view.remove(key.as_slice())?;
                    }
                }
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

/// The case store in a sled database. One process per data dir (sled locks it).
pub struct SledStore {
    db: sled::Db,
    kv: SledKv,
    durability: Durability,
    /// Serialises writers so reads made while planning a write stay valid until commit.
    write_lock: Mutex<()>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir` with [`Durability::Strict`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, Durability::Strict)
    }

    /// Opens (or creates) the store in `dir`. Fails with [`StoreError::Corrupt`] when the
    /// files are not a readable store or were written by a newer schema version.
    pub fn open_with(dir: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        let path = dir.as_ref().to_path_buf();
        let config = sled::Config::new().path(&path);
        // sled 0.34 can panic on some damaged files; a store that cannot be opened must
        // be an error people can act on, not a crash.
        let db =
            match catch_unwind(AssertUnwindSafe(|| config.open())) {
                Ok(Ok(db)) => db,
                Ok(Err(e)) => return Err(sled_error(&path, e)),
                Err(_) => return Err(StoreError::Corrupt {
                    path,
                    detail:
                        "sled failed while opening the files; restore the data dir from a backup"
                            .into(),
                }),
            };
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
        let init = ops::check_schema(&kv)?;
        kv.commit(&init)?;
        if !init.ops.is_empty() {
            db.flush().map_err(|e| sled_error(&kv.path, e))?;
        }
        Ok(SledStore {
            db,
            kv,
            durability,
            write_lock: Mutex::new(()),
        })
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        &self.kv.path
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded value is `()`: a poisoned lock protects no state of its own.
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Plans and commits a write under the writer lock, then flushes if strict.
    async fn write<T>(
        &self,
        plan: impl FnOnce(&SledKv) -> Result<(WriteSet, T), StoreError>,
    ) -> Result<T, StoreError> {
        let (committed, out) = {
            let _guard = self.lock();
            let (ws, out) = plan(&self.kv)?;
            self.kv.commit(&ws)?;
            (!ws.ops.is_empty(), out)
        };
        if committed && self.durability == Durability::Strict {
            self.flush().await?;
        }
        Ok(out)
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
        self.write(|kv| ops::plan_create(kv, new, meta)).await
    }

    async fn update(
        &self,
        id: CaseId,
        changes: Vec<CaseChange>,
        meta: &WriteMeta,
    ) -> Result<WriteOutcome, StoreError> {
        self.write(|kv| ops::plan_update(kv, id, &changes, meta))
            .await
    }

    async fn ack_event(&self, event_id: u64) -> Result<bool, StoreError> {
        self.write(|kv| ops::plan_ack(kv, event_id)).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // sled 0.34's `flush_async` never wakes some of its futures when several are polled
        // at once (spacejam/sled#1308, fixed only on sled's main branch): concurrent writers
        // under `engine serve` hung for good. A blocking flush on tokio's blocking pool
        // does the same work and every caller returns.
        let db = self.db.clone();
        let path = self.kv.path.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Backend {
                path: path.clone(),
                detail: format!("flush task failed: {e}"),
            })?
            .map(|_| ())
            .map_err(|e| sled_error(&path, e))
    }
}

#[async_trait]
impl Inbox for SledStore {
    async fn record_incoming(&self, key: &str, at: Timestamp) -> Result<bool, StoreError> {
        self.write(|kv| ops::plan_record_incoming(kv, key, at))
            .await
    }

    async fn start_delivery(
        &self,
        event_id: u64,
        playbook: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        self.write(|kv| ops::plan_start_delivery(kv, event_id, playbook, run_id))
            .await
    }

    async fn deliveries(&self, event_id: u64) -> Result<Vec<Delivery>, StoreError> {
        ops::deliveries(&self.kv, event_id)
    }
}
