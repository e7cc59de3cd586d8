//! How a store is opened, from the config file: the top-level `durability` key and the
//! `store` section.
//!
//! ```yaml
//! durability: strict        # or relaxed: acknowledge before the flush (faster, may lose
//!                           # the last `flush_every_ms` of acknowledged work in a crash)
//! store:
//!   flush_every_ms: 500     # sled's background flush interval
//!   verify_on_open: true    # read every record once at open, so damaged files stop the
//!                           # start instead of failing the first read that meets them
//!   cache_mb: 64            # sled's page cache in MiB (default 64; sled's own is 1 GiB)
//! ```

use serde_json::Value;

use super::Durability;
use crate::error::Error;

/// The default background flush interval (sled's).
pub const DEFAULT_FLUSH_EVERY_MS: u64 = 500;

/// The default page cache in MiB. sled's own default (1 GiB) made the cache most of the
/// resident memory on large stores (2.1 GB at 1M cases with `verify_on_open`) without making
/// queries faster: at 1M cases 64 MiB answered warm queries as fast (10 µs) as 1 GiB.
pub const DEFAULT_CACHE_MB: u64 = 64;

/// Options for opening a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// When writes return relative to the disk.
    pub durability: Durability,
    /// The backend's background flush interval in milliseconds (sled); 0 turns it off.
    pub flush_every_ms: u64,
    /// Read every record once when opening, so that damaged files (whose pages sled only
    /// reads, and checksums, on first use) stop the open. Costs a full read of the store.
    pub verify_on_open: bool,
    /// sled's page cache in MiB (`None`: sled's default, 1 GiB; the default options say
    /// [`DEFAULT_CACHE_MB`]).
    pub cache_mb: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Strict,
            flush_every_ms: DEFAULT_FLUSH_EVERY_MS,
            verify_on_open: true,
            cache_mb: Some(DEFAULT_CACHE_MB),
        }
    }
}

impl StoreOptions {
    /// Reads `durability` and `store.flush_every_ms` from a config tree; absent keys keep
    /// their defaults, invalid ones are an error naming the key.
    pub fn from_config(config: &Value) -> Result<Self, Error> {
        let mut o = StoreOptions::default();
        match config.get("durability") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                o.durability = match s.trim() {
                    "strict" => Durability::Strict,
                    "relaxed" => Durability::Relaxed,
                    other => {
                        return Err(Error::Config(format!(
                            "`durability`: expected `strict` or `relaxed`, got `{other}`"
                        )))
                    }
                }
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "`durability`: expected `strict` or `relaxed`, got {other}"
                )))
            }
        }
        match config.get("store") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("flush_every_ms", v) => {
                            o.flush_every_ms = v.as_u64().ok_or_else(|| {
                                Error::Config(format!(
                                    "`store.flush_every_ms`: expected a number of milliseconds, got {v}"
                                ))
                            })?
                        }
                        ("verify_on_open", Value::Bool(b)) => o.verify_on_open = *b,
                        ("cache_mb", v) => {
                            o.cache_mb = Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                                Error::Config(format!(
                                    "`store.cache_mb`: expected a number of MiB above 0, got {v}"
                                ))
                            })?)
                        }
                        ("verify_on_open", v) => {
                            return Err(Error::Config(format!(
                                "`store.verify_on_open`: expected true or false, got {v}"
                            )))
                        }
                        // Read by `postgres::PgOptions::from_config`.
                        ("postgres", _) => {}
                        (other, _) => {
                            return Err(Error::Config(format!(
                                "`store.{other}`: unknown key (known: `flush_every_ms`, `verify_on_open`, `cache_mb`, `postgres`)"
                            )))
                        }
                    }
                }
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "`store`: expected a mapping, got {other}"
                )))
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_come_from_the_config() {
        assert_eq!(
            StoreOptions::from_config(&json!({})).unwrap(),
            StoreOptions::default()
        );
        let o = StoreOptions::from_config(
            &json!({"durability": "relaxed", "store": {"flush_every_ms": 5000, "verify_on_open": false, "cache_mb": 64}}),
        )
        .unwrap();
        assert_eq!(o.cache_mb, Some(64));
        assert_eq!(o.durability, Durability::Relaxed);
        assert_eq!(o.flush_every_ms, 5000);
        assert!(!o.verify_on_open);
        for bad in [
            json!({"durability": "sometimes"}),
            json!({"durability": 1}),
            json!({"store": {"flush_every_ms": "soon"}}),
            json!({"store": {"flush_every": 1}}),
            json!({"store": {"verify_on_open": "yes"}}),
            json!({"store": {"cache_mb": 0}}),
            json!({"store": {"cache_mb": "big"}}),
            json!({"store": []}),
        ] {
            assert!(StoreOptions::from_config(&bad).is_err(), "{bad}");
        }
    }
}
