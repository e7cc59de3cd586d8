//! Commit combining: concurrent requests of one kind are written in one transaction, with
//! one flush, and every caller gets its own answer.
//!
//! sled's flush costs about 70 µs per transaction it has to write out (measured in
//! `engine/benches/durability.rs`), so sharing the fsync between separate transactions
//! ([`super::group_commit`]) is not enough for the ingest path: 150 events in 150
//! transactions take ~12 ms to flush, in one transaction ~0.5 ms. A caller queues its
//! request, then either receives its answer or becomes the *leader*: the leader takes every
//! queued request, runs them as one batch (one plan, one transaction, one flush) and hands
//! each caller its part of the result. While one leader works the next batch queues up, so
//! under load batches grow by themselves; an idle caller leads a batch of one at once.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::StoreError;

type Reply<R> = oneshot::Sender<Result<R, StoreError>>;

/// A queue of requests `Q` answered with `R`.
pub(crate) struct Combiner<Q, R> {
    queue: Mutex<Vec<(Q, Reply<R>)>>,
    leader: tokio::sync::Mutex<()>,
}

impl<Q, R> Default for Combiner<Q, R> {
    fn default() -> Self {
        Combiner {
            queue: Mutex::new(Vec::new()),
            leader: tokio::sync::Mutex::new(()),
        }
    }
}

impl<Q, R> Combiner<Q, R> {
    /// Submits `request` and waits for its answer. `batch` runs a batch of requests (in
    /// queue order) and returns one answer per request, in the same order; when it fails,
    /// every request of the batch gets the error.
    pub(crate) async fn submit<F, Fut>(&self, request: Q, batch: F) -> Result<R, StoreError>
    where
        F: Fn(Vec<Q>) -> Fut,
        Fut: Future<Output = Result<Vec<R>, StoreError>>,
    {
        let (tx, mut rx) = oneshot::channel();
        self.lock_queue().push((request, tx));
        loop {
            tokio::select! {
                biased;
                answer = &mut rx => {
                    return answer.unwrap_or_else(|_| Err(interrupted()));
                }
                _gate = self.leader.lock() => {
                    let taken = std::mem::take(&mut *self.lock_queue());
                    if taken.is_empty() {
                        // An earlier leader took ours; its answer is on the way.
                        continue;
                    }
                    let (requests, replies): (Vec<Q>, Vec<Reply<R>>) = taken.into_iter().unzip();
                    let n = replies.len();
                    match batch(requests).await {
                        Ok(answers) if answers.len() == n => {
                            for (reply, answer) in replies.into_iter().zip(answers) {
                                // A caller that went away does not need its answer.
                                let _ = reply.send(Ok(answer));
                            }
                        }
                        Ok(answers) => {
                            let e = StoreError::Backend {
                                path: "<batch>".into(),
                                detail: format!("a batch of {n} gave {} answers", answers.len()),
                            };
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            }
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<(Q, Reply<R>)>> {
        // A panic while holding the lock cannot leave the Vec half-changed.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The leader of our batch was cancelled before it answered: whether the request was
/// written is unknown, so the caller must retry (safe: events carry dedup keys).
fn interrupted() -> StoreError {
    StoreError::Backend {
        path: "<batch>".into(),
        detail: "the batch this request was part of was interrupted; retry".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_batches_and_get_their_own_answers() {
        let c: Arc<Combiner<u32, u32>> = Arc::new(Combiner::default());
        let batches = Arc::new(AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let (c, batches) = (c.clone(), batches.clone());
            set.spawn(async move {
                let got = c
                    .submit(i, |reqs: Vec<u32>| {
                        let batches = batches.clone();
                        async move {
                            batches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            Ok(reqs.into_iter().map(|r| r * 10).collect())
                        }
                    })
                    .await
                    .unwrap();
                assert_eq!(got, i * 10);
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let n = batches.load(Ordering::SeqCst);
        assert!((1..200).contains(&n), "{n} batches for 200 requests");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_request_in_it() {
        let c: Combiner<u32, u32> = Combiner::default();
        let e = c
            .submit(1, |_| async {
                Err::<Vec<u32>, _>(StoreError::Backend {
                    path: "p".into(),
                    detail: "disk full".into(),
                })
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        let ok = c.submit(2, |r| async move { Ok(r) }).await.unwrap();
        assert_eq!(ok, 2);
    }
}
