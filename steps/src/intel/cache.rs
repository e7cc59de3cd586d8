//! An in-process cache of enrichment results, keyed by address, with a TTL on the step's
//! clock (`ctx.now()`), so tests move time instead of sleeping.
//!
//! It is deliberately small: the persistent cache of the external providers' answers lives
//! in the store ([`engine::persist::Cache`], see [`super::Enricher::check_with`]); this one
//! saves even the store lookup for repeated addresses within one process.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Entries kept at most; beyond it expired entries go first, then the oldest.
pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Debug)]
pub struct TtlCache<V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<IpAddr, (SystemTime, V)>>,
}

impl<V: Clone> TtlCache<V> {
    /// A zero `ttl` disables the cache.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TtlCache {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn fresh(&self, stored: SystemTime, now: SystemTime) -> bool {
        // A clock that went backwards makes the entry stale rather than eternal.
        now.duration_since(stored).is_ok_and(|age| age < self.ttl)
    }

    pub fn get(&self, ip: IpAddr, now: SystemTime) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&ip) {
            Some((stored, v)) if self.fresh(*stored, now) => Some(v.clone()),
            _ => None,
        }
    }

    pub fn insert(&self, ip: IpAddr, now: SystemTime, value: V) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&ip) {
            entries.retain(|_, (stored, _)| self.fresh(*stored, now));
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, (stored, _))| *stored)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(ip, (now, value));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = TtlCache::new(Duration::from_secs(60), 10);
        c.insert(ip(1), t0, "a");
        assert_eq!(c.get(ip(1), t0 + Duration::from_secs(59)), Some("a"));
        assert_eq!(c.get(ip(1), t0 + Duration::from_secs(60)), None);
        assert_eq!(c.get(ip(1), t0 - Duration::from_secs(1)), None);
        assert_eq!(c.get(ip(2), t0), None);
    }

    #[test]
    fn zero_ttl_disables() {
        let t0 = SystemTime::UNIX_EPOCH;
        let c = TtlCache::new(Duration::ZERO, 10);
        c.insert(ip(1), t0, 1);
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_evicts_the_oldest() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let c = TtlCache::new(Duration::from_secs(3600), 2);
        c.insert(ip(1), t0, 1);
        c.insert(ip(2), t0 + Duration::from_secs(1), 2);
        c.insert(ip(3), t0 + Duration::from_secs(2), 3);
        assert_eq!(c.len(), 2);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(
            (c.get(ip(1), now), c.get(ip(2), now), c.get(ip(3), now)),
            (None, Some(2), Some(3))
        );
    }
}
