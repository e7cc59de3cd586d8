//! The notification outbox in the store: the notifications the `notify` step queued, the
//! latest delivery record of each (notification, channel), and which channels are still
//! owed. [`crate::notify::Outbox`] is the engine's face of it; this is what it keeps.
//!
//! A notification is pushed once (its id is the key; a second push is a no-op), with the
//! channels a delivery is owed on (the network channels: `console` and `outbox` are done by
//! being queued). Each delivery attempt is recorded; the latest record per (id, channel)
//! wins, and a `delivered` or `rejected` one settles the channel. Pending work is read from
//! an index of owed channels in push order, so a pass costs what is owed, not everything
//! ever sent.
//!
//! Claims keep two processes from sending the same (notification, channel) at once. On the
//! key-value stores one process owns the store, so [`Notifications::notification_claim`]
//! only refuses settled channels and the outbox's in-process claim does the rest; on
//! PostgreSQL a claim names its process and lasts as long as that process is registered
//! (see [`super::postgres`]: a process that died loses its claims once it is declared dead).
//!
//! Sled trees (schema version 5):
//!
//! | tree                     | key                          | value |
//! |--------------------------|------------------------------|-------|
//! | `notifyid_seq`           | id `str`                     | seq `u64` |
//! | `notifyseq_notification` | seq `u64`                    | `{"notification": ..., "owed": [channel]}` |
//! | `notifychannel_delivery` | id `str` ++ channel `str`    | latest delivery record JSON |
//! | `notifyowed_empty`       | seq `u64` ++ channel `str` (owed, not settled) | empty |

use std::ops::Bound;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::keys::{self, corrupt, Tree};
use super::ops::{meta_u64, to_json, KvRead, WriteSet};
use super::StoreError;
use crate::notify::{Delivery, DeliveryStatus, Notification, Pending};

/// The store's notification outbox.
#[async_trait]
pub trait Notifications: Send + Sync {
    /// Queues `n`, owing a delivery on each channel of `owed`. False (and nothing changes)
    /// when a notification with this id is queued already. Durable before it returns under
    /// strict durability.
    async fn notification_push(
        &self,
        n: &Notification,
        owed: &[String],
    ) -> Result<bool, StoreError>;

    /// Records a delivery attempt; it replaces the earlier record of (id, channel). A
    /// `delivered` or `rejected` record settles an owed channel, a `failed` one leaves it
    /// owed. Releases this process's claim on (id, channel). Durable before it returns
    /// under strict durability.
    async fn notification_record(&self, d: &Delivery) -> Result<(), StoreError>;

    /// Owed channels not settled, oldest notification first, at most `limit`. With
    /// `now_ms`, channels whose last attempt asked to wait past it (`not_before_ms`) are
    /// left out.
    async fn notifications_pending(
        &self,
        now_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError>;

    /// Claims (id, channel) for a delivery by this process. False when it is settled or
    /// another live process holds it.
    async fn notification_claim(&self, id: &str, channel: &str) -> Result<bool, StoreError>;

    /// Gives up this process's claim on (id, channel), if it holds one.
    async fn notification_release(&self, id: &str, channel: &str) -> Result<(), StoreError>;

    /// Every queued notification, oldest first.
    async fn notifications_all(&self) -> Result<Vec<Notification>, StoreError>;

    /// The latest delivery record of every (notification, channel) tried, by id and
    /// channel; of one notification only with `id`.
    async fn notification_deliveries(&self, id: Option<&str>) -> Result<Vec<Delivery>, StoreError>;

    /// How many (notification, channel) pairs stand at each status, for `/metrics`: kept as
    /// counters by sled and counted by PostgreSQL, so a scrape does not read every record
    /// ever written. The default counts [`Notifications::notification_deliveries`].
    async fn notification_counts(&self) -> Result<DeliveryCounts, StoreError> {
        let mut c = DeliveryCounts::default();
        for d in self.notification_deliveries(None).await? {
            c.add(d.status, 1);
        }
        Ok(c)
    }
}

/// (notification, channel) pairs by the status of their latest delivery attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub delivered: u64,
    pub failed: u64,
    pub rejected: u64,
}

impl DeliveryCounts {
    /// The count of `status`.
    pub fn get(&self, status: DeliveryStatus) -> u64 {
        match status {
            DeliveryStatus::Delivered => self.delivered,
            DeliveryStatus::Failed => self.failed,
            DeliveryStatus::Rejected => self.rejected,
        }
    }

    fn add(&mut self, status: DeliveryStatus, n: u64) {
        let slot = match status {
            DeliveryStatus::Delivered => &mut self.delivered,
            DeliveryStatus::Failed => &mut self.failed,
            DeliveryStatus::Rejected => &mut self.rejected,
        };
        *slot = slot.saturating_add(n);
    }
}

/// The sled counter of pairs at `status` (`Meta` tree).
fn count_key(status: DeliveryStatus) -> &'static [u8] {
    match status {
        DeliveryStatus::Delivered => b"notify_count_delivered",
        DeliveryStatus::Failed => b"notify_count_failed",
        DeliveryStatus::Rejected => b"notify_count_rejected",
    }
}

fn read_count(kv: &dyn KvRead, status: DeliveryStatus) -> Result<u64, StoreError> {
    let k = count_key(status);
    match kv.get(Tree::Meta, k)? {
        None => Ok(0),
        Some(v) => keys::u64_value(&v)
            .ok_or_else(|| corrupt(kv.path(), Tree::Meta, k, "counter is not 8 bytes")),
    }
}

/// The sled store's counters.
pub(crate) fn counts(kv: &dyn KvRead) -> Result<DeliveryCounts, StoreError> {
    Ok(DeliveryCounts {
        delivered: read_count(kv, DeliveryStatus::Delivered)?,
        failed: read_count(kv, DeliveryStatus::Failed)?,
        rejected: read_count(kv, DeliveryStatus::Rejected)?,
    })
}

/// What `notifyseq_notification` holds.
#[derive(Serialize, Deserialize)]
struct Queued {
    notification: Notification,
    owed: Vec<String>,
}

fn settled(status: DeliveryStatus) -> bool {
    matches!(status, DeliveryStatus::Delivered | DeliveryStatus::Rejected)
}

fn seq_of(kv: &dyn KvRead, id: &str) -> Result<Option<u64>, StoreError> {
    let k = keys::notify_key(&[id]);
    match kv.get(Tree::NotifyidSeq, &k)? {
        None => Ok(None),
        Some(v) => keys::u64_value(&v)
            .map(Some)
            .ok_or_else(|| corrupt(kv.path(), Tree::NotifyidSeq, &k, "seq is not 8 bytes")),
    }
}

fn read_queued(kv: &dyn KvRead, seq: u64) -> Result<Option<Queued>, StoreError> {
    let k = seq.to_be_bytes();
    match kv.get(Tree::NotifyseqNotification, &k)? {
        None => Ok(None),
        Some(v) => decode_queued(kv, &k, &v).map(Some),
    }
}

fn decode_queued(kv: &dyn KvRead, k: &[u8], v: &[u8]) -> Result<Queued, StoreError> {
    serde_json::from_slice(v).map_err(|e| {
        corrupt(
            kv.path(),
            Tree::NotifyseqNotification,
            k,
            format!("bad notification JSON: {e}"),
        )
    })
}

fn read_delivery(kv: &dyn KvRead, id: &str, channel: &str) -> Result<Option<Delivery>, StoreError> {
    let k = keys::notify_key(&[id, channel]);
    match kv.get(Tree::NotifychannelDelivery, &k)? {
        None => Ok(None),
        Some(v) => decode_delivery(kv, &k, &v).map(Some),
    }
}

fn decode_delivery(kv: &dyn KvRead, k: &[u8], v: &[u8]) -> Result<Delivery, StoreError> {
    serde_json::from_slice(v).map_err(|e| {
        corrupt(
            kv.path(),
            Tree::NotifychannelDelivery,
            k,
            format!("bad delivery record JSON: {e}"),
        )
    })
}

pub(crate) fn plan_push(
    kv: &dyn KvRead,
    n: &Notification,
    owed: &[String],
) -> Result<(WriteSet, bool), StoreError> {
    let mut ws = WriteSet::default();
    if seq_of(kv, &n.id)?.is_some() {
        return Ok((ws, false));
    }
    let seq = meta_u64(kv, keys::META_NEXT_NOTIFY_SEQ)?;
    let mut owed_now: Vec<String> = Vec::new();
    for c in owed {
        if !owed_now.contains(c) {
            owed_now.push(c.clone());
        }
    }
    for c in &owed_now {
        // A record made before the push (an import, say) already decides the channel.
        let done = read_delivery(kv, &n.id, c)?.is_some_and(|d| settled(d.status));
        if !done {
            ws.put(
                Tree::NotifyowedEmpty,
                keys::notify_owed_key(seq, c),
                Vec::new(),
            );
        }
    }
    let queued = Queued {
        notification: n.clone(),
        owed: owed_now,
    };
    ws.put(
        Tree::NotifyseqNotification,
        seq.to_be_bytes().to_vec(),
        to_json(kv.path(), &queued)?,
    );
    ws.put(
        Tree::NotifyidSeq,
        keys::notify_key(&[&n.id]),
        seq.to_be_bytes().to_vec(),
    );
    ws.put(
        Tree::Meta,
        keys::META_NEXT_NOTIFY_SEQ,
        (seq + 1).to_be_bytes().to_vec(),
    );
    Ok((ws, true))
}

pub(crate) fn plan_record(kv: &dyn KvRead, d: &Delivery) -> Result<WriteSet, StoreError> {
    let mut ws = WriteSet::default();
    // The counters of `counts`: this pair moves from its previous status (if any) to `d`'s.
    // Writers are serialised by the store, so read, change and write is safe here.
    let previous = read_delivery(kv, &d.id, &d.channel)?.map(|p| p.status);
    if previous != Some(d.status) {
        if let Some(p) = previous {
            let n = read_count(kv, p)?.saturating_sub(1);
            ws.put(Tree::Meta, count_key(p).to_vec(), n.to_be_bytes().to_vec());
        }
        let n = read_count(kv, d.status)?.saturating_add(1);
        ws.put(
            Tree::Meta,
            count_key(d.status).to_vec(),
            n.to_be_bytes().to_vec(),
        );
    }
    ws.put(
        Tree::NotifychannelDelivery,
        keys::notify_key(&[&d.id, &d.channel]),
        to_json(kv.path(), d)?,
    );
    if let Some(seq) = seq_of(kv, &d.id)? {
        let owed = read_queued(kv, seq)?.is_some_and(|q| q.owed.contains(&d.channel));
        if owed {
            let k = keys::notify_owed_key(seq, &d.channel);
            if settled(d.status) {
                ws.del(Tree::NotifyowedEmpty, k);
            } else {
                ws.put(Tree::NotifyowedEmpty, k, Vec::new());
            }
        }
    }
    Ok(ws)
}

pub(crate) fn pending(
    kv: &dyn KvRead,
    now_ms: Option<i64>,
    limit: usize,
) -> Result<Vec<Pending>, StoreError> {
    let mut out = Vec::new();
    let mut current: Option<(u64, Queued)> = None;
    for item in kv.range(
        Tree::NotifyowedEmpty,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    ) {
        if out.len() >= limit {
            break;
        }
        let (k, _) = item?;
        let seq = k.get(..8).and_then(keys::u64_value);
        let channel = k.get(8..).and_then(keys::single_str);
        let (Some(seq), Some(channel)) = (seq, channel) else {
            return Err(corrupt(
                kv.path(),
                Tree::NotifyowedEmpty,
                &k,
                "bad owed-channel key",
            ));
        };
        if current.as_ref().map(|(s, _)| *s) != Some(seq) {
            let Some(q) = read_queued(kv, seq)? else {
                return Err(corrupt(
                    kv.path(),
                    Tree::NotifyowedEmpty,
                    &k,
                    "owed channel of a notification that is not there",
                ));
            };
            current = Some((seq, q));
        }
        let Some((_, q)) = current.as_ref() else {
            continue;
        };
        let last = read_delivery(kv, &q.notification.id, &channel)?;
        let early = now_ms.is_some_and(|now| {
            last.as_ref()
                .and_then(|d| d.not_before_ms)
                .is_some_and(|t| t > now)
        });
        if !early {
            out.push(Pending {
                notification: q.notification.clone(),
                channel,
                last,
            });
        }
    }
    Ok(out)
}

/// Whether (id, channel) may be claimed: not settled.
pub(crate) fn claimable(kv: &dyn KvRead, id: &str, channel: &str) -> Result<bool, StoreError> {
    Ok(!read_delivery(kv, id, channel)?.is_some_and(|d| settled(d.status)))
}

pub(crate) fn all(kv: &dyn KvRead) -> Result<Vec<Notification>, StoreError> {
    Ok(queued(kv)?.into_iter().map(|(_, n, _)| n).collect())
}

/// Every queued notification with its seq and owed channels, oldest first.
pub(crate) fn queued(kv: &dyn KvRead) -> Result<Vec<(u64, Notification, Vec<String>)>, StoreError> {
    let mut out = Vec::new();
    for item in kv.range(
        Tree::NotifyseqNotification,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    ) {
        let (k, v) = item?;
        let seq = keys::u64_value(&k).ok_or_else(|| {
            corrupt(
                kv.path(),
                Tree::NotifyseqNotification,
                &k,
                "seq is not 8 bytes",
            )
        })?;
        let q = decode_queued(kv, &k, &v)?;
        out.push((seq, q.notification, q.owed));
    }
    Ok(out)
}

pub(crate) fn deliveries(kv: &dyn KvRead, id: Option<&str>) -> Result<Vec<Delivery>, StoreError> {
    let (lo, hi) = match id {
        None => (Bound::Unbounded, Bound::Unbounded),
        Some(id) => {
            let prefix = keys::notify_key(&[id]);
            let hi = match keys::prefix_end(&prefix) {
                Some(end) => Bound::Excluded(end),
                None => Bound::Unbounded,
            };
            (Bound::Included(prefix), hi)
        }
    };
    let mut out = Vec::new();
    for item in kv.range(Tree::NotifychannelDelivery, lo, hi, false) {
        let (k, v) = item?;
        out.push(decode_delivery(kv, &k, &v)?);
    }
    Ok(out)
}
