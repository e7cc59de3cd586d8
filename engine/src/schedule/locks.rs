//! Concurrency keys: runs that share a key run one at a time, in the order they were
//! queued.
//!
//! The order is fixed when a run is *queued* ([`KeyedLocks::queue`], synchronous), not
//! when its task first polls, so the dispatcher decides it: resumed runs are queued before
//! any new run at start-up, and new runs in inbox order. Each key keeps a chain: a ticket
//! waits for the one queued before it to be released and is released when its run ends.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// The chains, by key: the receiver that the next ticket for the key waits on.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    tails: Mutex<HashMap<String, oneshot::Receiver<()>>>,
}

impl KeyedLocks {
    /// Takes a place in the queue of `key` (no key: a ticket that never waits).
    pub(crate) fn queue(&self, key: Option<String>) -> Ticket {
        let Some(key) = key else {
            return Ticket {
                prev: None,
                release: None,
            };
        };
        let (tx, rx) = oneshot::channel();
        let mut tails = match self.tails.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Chains whose last run has finished: nothing to wait for, drop them.
        tails.retain(|_, rx| !matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
        let prev = tails.insert(key, rx);
        Ticket {
            prev,
            release: Some(tx),
        }
    }

    /// Keys with a run holding or waiting for them (after dropping finished chains).
    #[cfg(test)]
    fn live(&self) -> usize {
        let mut tails = self.tails.lock().unwrap_or_else(|p| p.into_inner());
        tails.retain(|_, rx| !matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
        tails.len()
    }
}

/// A place in a key's queue.
pub(crate) struct Ticket {
    /// Resolves (with an error: its sender is dropped) when the previous holder is done.
    prev: Option<oneshot::Receiver<()>>,
    /// Dropped to let the next one go.
    release: Option<oneshot::Sender<()>>,
}

impl Ticket {
    /// Waits for the runs queued before this one.
    pub(crate) async fn acquire(mut self) -> Held {
        if let Some(prev) = self.prev.as_mut() {
            let _ = prev.await;
        }
        self.prev = None;
        Held {
            _release: self.release.take(),
        }
    }
}

impl Drop for Ticket {
    /// A ticket dropped while still waiting (its run was aborted) must not let the next
    /// one overtake the current holder: its release waits for its own turn.
    fn drop(&mut self) {
        if let (Some(prev), Some(release)) = (self.prev.take(), self.release.take()) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = prev.await;
                    drop(release);
                });
            }
        }
    }
}

/// The key, held until dropped.
pub(crate) struct Held {
    _release: Option<oneshot::Sender<()>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_with_one_key_go_in_queue_order_and_others_do_not_wait() {
        let locks = KeyedLocks::default();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut set = tokio::task::JoinSet::new();
        // Queued in order 0..5; their tasks start in reverse order.
        let tickets: Vec<Ticket> = (0..5).map(|_| locks.queue(Some("k".into()))).collect();
        for (i, t) in tickets.into_iter().enumerate().rev() {
            let order = order.clone();
            set.spawn(async move {
                let _held = t.acquire().await;
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(2)).await;
                order.lock().unwrap().push(i);
            });
        }
        let other = locks.queue(Some("other".into()));
        let free = locks.queue(None);
        tokio::time::timeout(Duration::from_millis(100), async {
            let _a = other.acquire().await;
            let _b = free.acquire().await;
        })
        .await
        .expect("other keys and keyless runs do not wait");
        while set.join_next().await.is_some() {}
        assert_eq!(*order.lock().unwrap(), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(locks.live(), 0);
    }

    #[tokio::test]
    async fn an_aborted_waiter_does_not_let_the_next_overtake_the_holder() {
        let locks = KeyedLocks::default();
        let first = locks.queue(Some("k".into())).acquire().await;
        let second = locks.queue(Some("k".into()));
        let third = locks.queue(Some("k".into()));
        let waiting = tokio::spawn(second.acquire());
        tokio::time::sleep(Duration::from_millis(5)).await;
        waiting.abort();
        let _ = waiting.await;
        let t = tokio::spawn(third.acquire());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!t.is_finished(), "third ran while first held the key");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), t)
            .await
            .expect("third runs once first is done")
            .unwrap();
    }
}
