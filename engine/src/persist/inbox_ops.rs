//! Planning for the inbox queue and the named cursors, shared by the key-value backends.
//! Like [`super::ops`], everything is read and encoded before the transaction.

use std::collections::HashSet;
use std::ops::Bound;

use serde::Serialize;
use serde_json::Value;

use super::hot_inbox::HotInbox;
use super::incoming::{Enqueued, Incoming, NewIncoming};
use super::keys::{self, corrupt, Tree};
use super::ops::{meta_u64, to_json, KvRead, WriteSet};
use super::StoreError;
use crate::cases::Timestamp;

/// How a queued event is written (borrowing, so the body is not copied first).
#[derive(Serialize)]
struct IncomingRef<'a> {
    seq: u64,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    event: &'a Value,
    received_at: Timestamp,
}

/// Plans queuing `items`: each new one under the next sequence number with its dedup key;
/// a key already recorded, or repeated within `items`, is a duplicate and is not stored.
pub(crate) fn plan_enqueue(
    kv: &dyn KvRead,
    items: &[NewIncoming],
) -> Result<(WriteSet, Vec<Enqueued>), StoreError> {
    let first = meta_u64(kv, keys::META_NEXT_INBOX_SEQ)?;
    let mut next = first;
    let mut ws = WriteSet::default();
    let mut out = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    for item in items {
        if let Some(k) = &item.key {
            let kk = keys::inbox_key(k);
            if !seen.insert(k.as_str()) || kv.get(Tree::EventkeyReceivedat, &kk)?.is_some() {
                out.push(Enqueued {
                    seq: None,
                    duplicate: true,
                });
                continue;
            }
            ws.put(
                Tree::EventkeyReceivedat,
                kk,
                item.received_at.to_key_bytes().to_vec(),
            );
        }
        let rec = IncomingRef {
            seq: next,
            source: &item.source,
            key: item.key.as_deref(),
            event: &item.event,
            received_at: item.received_at,
        };
        ws.put(
            Tree::InboxseqEvent,
            keys::seq_key(next),
            to_json(kv.path(), &rec)?,
        );
        out.push(Enqueued {
            seq: Some(next),
            duplicate: false,
        });
        next += 1;
    }
    if next != first {
        ws.put(
            Tree::Meta,
            keys::META_NEXT_INBOX_SEQ,
            next.to_be_bytes().to_vec(),
        );
    }
    Ok((ws, out))
}

pub(crate) fn decode_incoming(
    kv: &dyn KvRead,
    key: &[u8],
    bytes: &[u8],
) -> Result<Incoming, StoreError> {
    let rec: Incoming = serde_json::from_slice(bytes).map_err(|e| {
        corrupt(
            kv.path(),
            Tree::InboxseqEvent,
            key,
            format!("bad inbox entry: {e}"),
        )
    })?;
    if keys::seq_key(rec.seq) != key {
        return Err(corrupt(
            kv.path(),
            Tree::InboxseqEvent,
            key,
            format!("entry holds seq {}", rec.seq),
        ));
    }
    Ok(rec)
}

/// Queued events, oldest first, at most `limit`; the ones `kept` holds are taken from it
/// instead of decoding their entries.
pub(crate) fn pending_incoming(
    kv: &dyn KvRead,
    limit: usize,
    kept: Option<&HotInbox>,
) -> Result<Vec<Incoming>, StoreError> {
    let entries = kv
        .range(
            Tree::InboxseqEvent,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
        )
        .take(limit)
        .collect::<Result<Vec<_>, _>>()?;
    let hot = match kept {
        Some(kept) => {
            let seqs: Vec<Option<u64>> = entries
                .iter()
                .map(|(k, _)| {
                    <[u8; 8]>::try_from(k.as_slice())
                        .ok()
                        .map(u64::from_be_bytes)
                })
                .collect();
            kept.take(&seqs)
        }
        None => Vec::new(),
    };
    let mut hot = hot.into_iter();
    entries
        .iter()
        .map(|(k, v)| match hot.next().flatten() {
            Some(incoming) => Ok(incoming),
            None => decode_incoming(kv, k, v),
        })
        .collect()
}

/// How many events are queued. Counts the entries: the queue is meant to stay short.
pub(crate) fn inbox_depth(kv: &dyn KvRead) -> Result<u64, StoreError> {
    let mut n = 0u64;
    for e in kv.range(
        Tree::InboxseqEvent,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    ) {
        e?;
        n += 1;
    }
    Ok(n)
}

pub(crate) fn get_cursor(kv: &dyn KvRead, name: &str) -> Result<Option<String>, StoreError> {
    let k = keys::cursor_key(name);
    match kv.get(Tree::CursorValue, &k)? {
        None => Ok(None),
        Some(v) => String::from_utf8(v)
            .map(Some)
            .map_err(|_| corrupt(kv.path(), Tree::CursorValue, &k, "cursor is not UTF-8")),
    }
}

pub(crate) fn plan_put_cursor(name: &str, value: &str) -> WriteSet {
    let mut ws = WriteSet::default();
    ws.put(
        Tree::CursorValue,
        keys::cursor_key(name),
        value.as_bytes().to_vec(),
    );
    ws
}
