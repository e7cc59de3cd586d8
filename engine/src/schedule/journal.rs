//! The executor's side of the run journal: which step results of one run still have to
//! be written, and the rule for when they must be on disk.
//!
//! **The rule.** A step's result is durable before the run goes on: the executor queues an
//! entry ([`RunJournal::push`]) when a step finishes, is skipped, or fails, and after each
//! scheduling decision (whether or not it starts a step) calls [`RunJournal::sync`], which
//! commits the queued entries in one transaction and waits for the store's group commit
//! flush (under strict durability; concurrent runs share the flush). The first sync of a
//! run also covers its record, committed but not flushed by `Runs::start_runs`. So no step
//! can perform an outside effect (a case change, an HTTP call, a notification) based on a
//! result that a crash could still take back, and a step that finished is never run again
//! after a restart: only a step that was still running (or whose end had not been synced
//! yet) runs again, with the same idempotency key. The last decision of a run, when
//! nothing starts and nothing runs any more, does not sync: the entries still queued go
//! with the run's final record (`Runs::finish_run`, flushed under strict durability before
//! anyone learns the run ended), one commit and one flush instead of two of each. A crash
//! before that record is a crash before the last sync: the last step runs again. Under
//! `durability: relaxed` entries are committed before dependents start but reach the disk
//! with the store's background flush: a crash may re-run the last steps (with the same
//! idempotency keys).
//!
//! **Steps without outside effects.** A step type may declare itself effect-free
//! ([`crate::Step::effect_free`]: `set`, `cases.query`, lookups). Starting one does not
//! wait for the flush ([`RunJournal::before_start`] only commits), and its own end does not
//! force one. This keeps the rule for everything that matters: a step that can change the
//! world still starts only once the run's record and every finished step's entry are on
//! disk, and the end of a step that had effects is still flushed at the next decision. What
//! a crash can take back in addition is only effect-free work (the run's start before its
//! first effectful step, whose origin is then dispatched again; the entries of effect-free
//! steps, which then run again): running those twice changes nothing.

use std::sync::Arc;

use crate::persist::{Store, StoreError};
use crate::report::StepReport;

/// The journal of one run.
pub struct RunJournal {
    store: Arc<dyn Store>,
    run_id: String,
    /// The order number of the next entry.
    next_seq: u32,
    /// Entries not yet committed: (number, index of the step in the run's reports).
    queued: Vec<(u32, usize)>,
    /// Entries committed but possibly not on disk.
    unsynced: bool,
    /// Among the entries not known to be on disk, one of a step that may have had outside
    /// effects: flushed at the next decision even when nothing starts.
    effects_unsynced: bool,
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
            // The run's record may not be on disk yet: the first start syncs.
            unsynced: true,
            effects_unsynced: false,
        }
    }

    /// Queues the entry of a finished (or skipped, or failed) step: `reports[step]` as it
    /// stands when the entry is written. `effects`: the step ran and may have changed
    /// something outside the run (false for skipped steps and effect-free step types).
    pub fn push(&mut self, step: usize, effects: bool) {
        self.queued.push((self.next_seq, step));
        self.next_seq += 1;
        self.effects_unsynced |= effects;
    }

    /// Called after each scheduling decision, before the steps it starts: flushes (as
    /// [`RunJournal::sync`]) when one of them may have outside effects (`effects`) or when
    /// the end of a step with effects is not on disk yet; otherwise only commits the queued
    /// entries (see the module docs).
    pub async fn before_start(
        &mut self,
        reports: &[StepReport],
        effects: bool,
    ) -> Result<(), StoreError> {
        if effects || self.effects_unsynced {
            self.sync(reports).await
        } else {
            self.write(reports).await
        }
    }

    /// Commits the queued entries without waiting for the disk.
    pub async fn write(&mut self, reports: &[StepReport]) -> Result<(), StoreError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let entries: Vec<(u32, &StepReport)> = self
            .queued
            .iter()
            .filter_map(|(seq, i)| reports.get(*i).map(|r| (*seq, r)))
            .collect();
        self.store.record_steps(&self.run_id, &entries).await?;
        self.queued.clear();
        self.unsynced = true;
        Ok(())
    }

    /// Commits the queued entries and waits until every entry is durable (a no-op under
    /// relaxed durability). Called before a step starts.
    pub async fn sync(&mut self, reports: &[StepReport]) -> Result<(), StoreError> {
        self.write(reports).await?;
        if self.unsynced {
            self.store.sync().await?;
            self.unsynced = false;
        }
        self.effects_unsynced = false;
        Ok(())
    }
}
