//! Group commit: many writers, one flush.
//!
//! A strict write must be on disk before it returns, and one flush (an fdatasync,
//! ~180 µs here) costs far more than the commit itself. So a writer does not flush on its
//! own: after its transaction commits it takes a *ticket* (commits are numbered in the
//! order they finished) and waits at the gate. One writer at a time flushes; before it
//! starts it reads how many commits have finished, and when the flush returns every one of
//! those is durable. Writers that committed while a flush was running find, once they get
//! the gate, that a later flush already covered their ticket, or flush once for all of
//! them. Under load, each flush acknowledges every write that queued behind the previous
//! one: the batch forms by itself, with no timer and no added latency when idle.
//!
//! Correctness rests on one property of the backend's flush (sled's `flush_async`):
//! everything committed before the flush starts is durable when it returns.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts commits and flushes and lets writers share flushes.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    /// Commits finished so far (the last ticket handed out).
    committed: AtomicU64,
    /// Every ticket up to this one is durable.
    durable: AtomicU64,
    /// Held by the writer that flushes.
    gate: tokio::sync::Mutex<()>,
    /// Flushes done, for tests and metrics.
    flushes: AtomicU64,
    /// Time spent in flushes, in microseconds.
    flush_micros: AtomicU64,
}

impl GroupCommit {
    /// Called right after a commit finished: its ticket.
    pub(crate) fn committed(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The ticket of everything committed so far.
    pub(crate) fn current(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// Returns once `ticket` is durable, running `flush` when no finished flush covers it.
    /// `flush` must make durable everything committed before it starts.
    pub(crate) async fn durable<F, Fut, E>(&self, ticket: u64, flush: F) -> Result<(), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let _gate = self.gate.lock().await;
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let upto = self.committed.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        flush().await?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.durable.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// Flushes done so far.
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Time spent flushing so far, in microseconds.
    pub(crate) fn flush_micros(&self) -> u64 {
        self.flush_micros.load(Ordering::Relaxed)
    }

    /// Commits done so far.
    pub(crate) fn commits(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes_and_each_is_covered() {
        let g = Arc::new(GroupCommit::default());
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let g = g.clone();
            set.spawn(async move {
                let t = g.committed();
                g.durable(t, || async {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    Ok::<(), ()>(())
                })
                .await
                .map(|()| t)
            });
        }
        let mut n = 0;
        while let Some(t) = set.join_next().await {
            let t = t.unwrap().unwrap();
            assert!(g.durable.load(Ordering::SeqCst) >= t);
            n += 1;
        }
        assert_eq!(n, 64);
        assert!(g.flushes() >= 1);
        assert!(g.flushes() < 64, "{} flushes for 64 writers", g.flushes());
    }

    #[tokio::test]
    async fn a_failed_flush_is_returned_and_covers_nothing() {
        let g = GroupCommit::default();
        let t = g.committed();
        let e = g.durable(t, || async { Err::<(), _>("disk full") }).await;
        assert_eq!(e, Err("disk full"));
        assert_eq!(g.durable.load(Ordering::SeqCst), 0);
        g.durable(t, || async { Ok::<(), &str>(()) }).await.unwrap();
        assert_eq!(g.flushes(), 1);
    }
}
