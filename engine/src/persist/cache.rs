//! A small expiring key-value cache in the store, for results that are worth keeping
//! across runs and restarts but cheap to lose: IP enrichment answers of quota-limited
//! providers, say. Entries live in `cache_entry` (namespace ++ key -> expiry ++ JSON) with
//! an expiry index in `cache_expiry`, so [`Cache::cache_purge`] reads only what expired.
//!
//! Writes are committed but never wait for the disk: a cache entry lost in a crash costs
//! one more provider call, never a wrong answer, so a cache write must not cost an fsync.
//! An expired entry is never returned, purged or not.

use std::ops::Bound;

use async_trait::async_trait;
use serde_json::Value;

use super::keys::{self, Tree};
use super::ops::{KvRead, WriteSet};
use super::StoreError;
use crate::cases::Timestamp;

/// The store's expiring cache.
#[async_trait]
pub trait Cache: Send + Sync {
    /// The value under (`namespace`, `key`) if it has not expired at `now`.
    async fn cache_get(
        &self,
        namespace: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<Value>, StoreError>;

    /// Keeps `value` under (`namespace`, `key`) until `expires_at`, replacing what was
    /// there. Committed, not flushed (see the module docs).
    async fn cache_put(
        &self,
        namespace: &str,
        key: &str,
        value: &Value,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;

    /// Removes at most `limit` entries that expired at or before `now`; returns how many.
    async fn cache_purge(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError>;
}

/// Splits a stored entry into its expiry and its JSON.
fn decode(kv: &dyn KvRead, key: &[u8], v: &[u8]) -> Result<(Timestamp, Value), StoreError> {
    let bad = |detail: &str| keys::corrupt(kv.path(), Tree::CacheEntry, key, detail);
    let (ts, json) = v
        .split_first_chunk::<8>()
        .ok_or_else(|| bad("cache entry is too short"))?;
    let at = Timestamp::from_key_bytes(*ts).map_err(|_| bad("cache entry has a bad expiry"))?;
    let value = serde_json::from_slice(json).map_err(|_| bad("cache entry is not JSON"))?;
    Ok((at, value))
}

pub(crate) fn get(
    kv: &dyn KvRead,
    namespace: &str,
    key: &str,
    now: Timestamp,
) -> Result<Option<Value>, StoreError> {
    let k = keys::cache_key(namespace, key);
    let Some(v) = kv.get(Tree::CacheEntry, &k)? else {
        return Ok(None);
    };
    let (expires_at, value) = decode(kv, &k, &v)?;
    Ok((expires_at > now).then_some(value))
}

pub(crate) fn plan_put(
    kv: &dyn KvRead,
    namespace: &str,
    key: &str,
    value: &Value,
    expires_at: Timestamp,
) -> Result<WriteSet, StoreError> {
    let k = keys::cache_key(namespace, key);
    let mut ws = WriteSet::default();
    if let Some(old) = kv.get(Tree::CacheEntry, &k)? {
        // A damaged old entry is simply replaced; its expiry key, if any, purges nothing.
        if let Ok((old_at, _)) = decode(kv, &k, &old) {
            ws.del(Tree::CacheExpiry, keys::cache_expiry_key(old_at, &k));
        }
    }
    let json = serde_json::to_vec(value).map_err(|e| StoreError::Backend {
        path: kv.path().to_path_buf(),
        detail: format!("cache value is not JSON: {e}"),
    })?;
    let mut v = Vec::with_capacity(8 + json.len());
    v.extend_from_slice(&expires_at.to_key_bytes());
    v.extend_from_slice(&json);
    ws.put(
        Tree::CacheExpiry,
        keys::cache_expiry_key(expires_at, &k),
        Vec::new(),
    );
    ws.put(Tree::CacheEntry, k, v);
    Ok(ws)
}

pub(crate) fn plan_purge(
    kv: &dyn KvRead,
    now: Timestamp,
    limit: usize,
) -> Result<(WriteSet, usize), StoreError> {
    let mut ws = WriteSet::default();
    let mut n = 0;
    // Every expiry key at or before `now` sorts below `now + 1 ms`.
    let hi = keys::cache_expiry_key(now.add_millis(1), &[]);
    for item in kv.range(
        Tree::CacheExpiry,
        Bound::Unbounded,
        Bound::Excluded(hi),
        false,
    ) {
        if n >= limit {
            break;
        }
        let (k, _) = item?;
        let entry = k.get(8..).unwrap_or_default().to_vec();
        let at = k
            .first_chunk::<8>()
            .and_then(|b| Timestamp::from_key_bytes(*b).ok());
        // Only delete the entry when this expiry is still its current one.
        if let (Some(at), Some(v)) = (at, kv.get(Tree::CacheEntry, &entry)?) {
            if v.first_chunk::<8>() == Some(&at.to_key_bytes()) {
                ws.del(Tree::CacheEntry, entry);
            }
        }
        ws.del(Tree::CacheExpiry, k);
        n += 1;
    }
    Ok((ws, n))
}
