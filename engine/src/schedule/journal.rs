//! The executor's side of the run journal: which step results of one run still have to
//! be written, and the rule for when they must be on disk.
//!
//! **The rule.** A step's journal entry is durable before any step that starts after it
//! finished. The executor queues an entry ([`RunJournal::push`]) when a step finishes, is
//! skipped, or fails; before it starts one or more steps it calls [`RunJournal::sync`],
//! which commits the queued entries in one transaction and waits for the store's group
//! commit flush (under strict durability). When a decision starts nothing, the entries are
//! committed without waiting ([`RunJournal::write`]): the next start, or the run's final
//! record, makes them durable. So no step can perform an outside effect (a case change, an
//! HTTP call, a notification) based on a result that a crash could still take back, and a
//! step whose completion was journaled is never run again after a restart. Under
//! `durability: relaxed` entries are committed before dependents start but reach the disk
//! with the store's background flush: a crash may re-run the last steps (with the same
//! idempotency keys).

use std::sync::Arc;

use crate::persist::{Store, StoreError};
use crate::report::StepReport;

/// The journal of one run.
pub struct RunJournal {
    store: Arc<dyn Store>,
    run_id: String,
    /// The order number of the next entry.
    next_seq: u32,
    /// Entries not yet committed.
    queued: Vec<(u32, StepReport)>,
    /// Entries committed but possibly not on disk.
    unsynced: bool,
}

impl RunJournal {
    /// A journal for `run_id` whose first new entry is number `next_seq` (the number of
    /// entries already written, for a resumed run).
    pub fn new(store: Arc<dyn Store>, run_id: impl Into<String>, next_seq: u32) -> Self {
        RunJournal {
            store,
            run_id: run_id.into(),
            next_seq,
            queued: Vec::new(),
            unsynced: false,
        }
    }

    /// Queues a finished (or skipped, or failed) step's entry.
    pub fn push(&mut self, step: &StepReport) {
        self.queued.push((self.next_seq, step.clone()));
        self.next_seq += 1;
    }

    /// Commits the queued entries without waiting for the disk.
    pub async fn write(&mut self) -> Result<(), StoreError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        self.store.record_steps(&self.run_id, &self.queued).await?;
        self.queued.clear();
        self.unsynced = true;
        Ok(())
    }

    /// Commits the queued entries and waits until every entry is durable (a no-op under
    /// relaxed durability). Called before a step starts.
    pub async fn sync(&mut self) -> Result<(), StoreError> {
        self.write().await?;
        if self.unsynced {
            self.store.sync().await?;
            self.unsynced = false;
        }
        Ok(())
    }
}
