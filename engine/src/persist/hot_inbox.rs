//! The incoming events a store queued in this process, kept decoded until the worker
//! reads them back.
//!
//! The worker takes an entry moments after the HTTP handler wrote it, and decoding the
//! entry's JSON again was a tenth of the server's CPU under `engine bench --scenario
//! ingest`. The store hands the worker the event it was given instead. This is only a
//! copy: the entry on disk is what decides what is queued (an entry is returned only if
//! it is still there), an event missing here is decoded from disk as before, and after a
//! restart everything is.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::incoming::{Enqueued, Incoming, NewIncoming};

/// At most this many events are kept (about 3 KB each for an Okta event): beyond it, as
/// when the worker falls behind, the worker decodes what it reads.
pub(crate) const HOT_INBOX_MAX: usize = 2048;

#[derive(Default)]
pub(crate) struct HotInbox {
    events: Mutex<BTreeMap<u64, Incoming>>,
}

impl HotInbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Incoming>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the events that `queued` says were stored (not the duplicates), as long as
    /// there is room.
    pub(crate) fn keep(&self, items: Vec<NewIncoming>, queued: &[Enqueued]) {
        let mut events = self.lock();
        for (item, q) in items.into_iter().zip(queued) {
            let Some(seq) = q.seq else { continue };
            if events.len() >= HOT_INBOX_MAX {
                break;
            }
            events.insert(
                seq,
                Incoming {
                    seq,
                    source: item.source,
                    key: item.key,
                    event: item.event,
                    received_at: item.received_at,
                },
            );
        }
    }

    /// Takes the events of `seqs` (the entries on disk, oldest first; `None` for a key
    /// that is not a sequence number) that are kept: `Some` for each that is, `None` for
    /// the rest. Kept events older than the oldest entry on disk have left the queue and
    /// are dropped.
    pub(crate) fn take(&self, seqs: &[Option<u64>]) -> Vec<Option<Incoming>> {
        let mut events = self.lock();
        if let Some(first) = seqs.iter().flatten().next() {
            *events = events.split_off(first);
        }
        seqs.iter()
            .map(|s| s.and_then(|s| events.remove(&s)))
            .collect()
    }

    /// How many events are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::Timestamp;
    use serde_json::json;

    fn item(n: u64) -> NewIncoming {
        NewIncoming {
            source: "okta".into(),
            key: Some(format!("okta:{n}")),
            event: json!({ "uuid": n }),
            received_at: Timestamp::now(),
        }
    }

    fn stored(seq: u64) -> Enqueued {
        Enqueued {
            seq: Some(seq),
            duplicate: false,
        }
    }

    #[test]
    fn keeps_what_was_stored_and_hands_each_out_once() {
        let hot = HotInbox::default();
        let dup = Enqueued {
            seq: None,
            duplicate: true,
        };
        hot.keep(
            vec![item(1), item(2), item(3)],
            &[stored(10), dup, stored(11)],
        );
        assert_eq!(hot.len(), 2);
        let got = hot.take(&[Some(10), Some(11), Some(12)]);
        assert_eq!(
            got[0].as_ref().map(|i| (i.seq, i.event.clone())),
            Some((10, json!({"uuid": 1})))
        );
        assert_eq!(
            got[1].as_ref().map(|i| i.key.clone()),
            Some(Some("okta:3".into()))
        );
        assert!(got[2].is_none());
        assert!(hot.take(&[Some(10), Some(11)]).iter().all(Option::is_none));
        assert_eq!(hot.len(), 0);
    }

    #[test]
    fn drops_what_left_the_queue_and_stays_bounded() {
        let hot = HotInbox::default();
        hot.keep(
            vec![item(1), item(2), item(3)],
            &[stored(1), stored(2), stored(3)],
        );
        // The oldest entry on disk is 3: 1 and 2 were taken another way.
        let got = hot.take(&[None, Some(3)]);
        assert!(got[0].is_none());
        assert_eq!(got[1].as_ref().map(|i| i.seq), Some(3));
        assert_eq!(hot.len(), 0);
        // An empty queue on disk says nothing about events kept after it was read.
        hot.keep(vec![item(4)], &[stored(4)]);
        assert!(hot.take(&[]).is_empty());
        assert_eq!(hot.len(), 1);

        let many = (0..HOT_INBOX_MAX as u64 + 10).collect::<Vec<_>>();
        let hot = HotInbox::default();
        hot.keep(
            many.iter().map(|n| item(*n)).collect(),
            &many.iter().map(|n| stored(*n)).collect::<Vec<_>>(),
        );
        assert_eq!(hot.len(), HOT_INBOX_MAX);
    }
}
