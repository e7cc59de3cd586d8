//! Under `engine serve`, expired enrichment answers are removed from the store cache
//! every ten minutes (a tick hook of the engine's worker, registered by the binary like the
//! notification retry). Expired entries are never returned anyway; the purge only keeps
//! the store from growing with addresses seen once.

use std::time::{Duration, SystemTime};

use engine::cases::Timestamp;
use engine::Engine;

/// How often the purge runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Entries removed per pass at most (the next pass takes the rest).
pub const PURGE_LIMIT: usize = 10_000;

/// Register the purge on `engine` (nothing without a store).
pub fn register_cache_purge(engine: &Engine) {
    let Some(store) = engine.services().store.clone() else {
        return;
    };
    engine.on_tick(PURGE_EVERY, move || {
        let store = store.clone();
        Box::pin(async move {
            let now = Timestamp::from_system_time(SystemTime::now());
            match store.cache_purge(now, PURGE_LIMIT).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "expired cache entries purged"),
                Err(e) => tracing::warn!(error = %e, "cache purge failed"),
            }
        })
    });
}
