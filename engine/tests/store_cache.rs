//! The store's expiring cache on every backend (memory, sled, PostgreSQL): expiry,
//! replacement, purge by the expiry index, and (sled) entries that survive a reopen.

mod support {
    pub mod pg;
}

use std::sync::Arc;

use engine::cases::Timestamp;
use engine::persist::{Cache, MemoryStore, SledStore};
use serde_json::json;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + ms).unwrap()
}

async fn exercise(c: &dyn Cache) {
    assert_eq!(c.cache_get("intel", "1.2.3.4", at(0)).await.unwrap(), None);
    c.cache_put("intel", "1.2.3.4", &json!({"v": 1}), at(1000))
        .await
        .unwrap();
    c.cache_put("intel", "5.6.7.8", &json!({"v": 2}), at(500))
        .await
        .unwrap();
    c.cache_put("other", "1.2.3.4", &json!("x"), at(5000))
        .await
        .unwrap();
    assert_eq!(
        c.cache_get("intel", "1.2.3.4", at(999)).await.unwrap(),
        Some(json!({"v": 1}))
    );
    // Expired at its deadline, purged or not.
    assert_eq!(
        c.cache_get("intel", "1.2.3.4", at(1000)).await.unwrap(),
        None
    );
    assert_eq!(
        c.cache_get("other", "1.2.3.4", at(1000)).await.unwrap(),
        Some(json!("x")),
        "namespaces are apart"
    );
    // Replacing moves the expiry: the old deadline no longer purges it.
    c.cache_put("intel", "5.6.7.8", &json!({"v": 3}), at(3000))
        .await
        .unwrap();
    assert_eq!(c.cache_purge(at(1000), 100).await.unwrap(), 1);
    assert_eq!(
        c.cache_get("intel", "5.6.7.8", at(1000)).await.unwrap(),
        Some(json!({"v": 3}))
    );
    assert_eq!(c.cache_purge(at(1000), 100).await.unwrap(), 0);
    // The limit bounds one pass.
    for i in 0..5 {
        c.cache_put("bulk", &i.to_string(), &json!(i), at(10))
            .await
            .unwrap();
    }
    assert_eq!(c.cache_purge(at(20), 3).await.unwrap(), 3);
    assert_eq!(c.cache_purge(at(20), 3).await.unwrap(), 2);
    assert_eq!(c.cache_purge(at(10_000), 100).await.unwrap(), 2);
    assert_eq!(c.cache_get("other", "1.2.3.4", at(0)).await.unwrap(), None);
}

#[tokio::test]
async fn memory_cache() {
    exercise(&MemoryStore::new()).await;
}

#[tokio::test]
async fn sled_cache() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&SledStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn postgres_cache() {
    let s = support::pg::fresh().await;
    exercise(&*s).await;
}

#[tokio::test]
async fn sled_cache_entries_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Arc::new(SledStore::open(dir.path()).unwrap());
        s.cache_put(
            "intel",
            "9.9.9.9",
            &json!({"verdict": "malicious"}),
            at(60_000),
        )
        .await
        .unwrap();
        // Cache writes do not wait for the disk; a store flush (any strict write, or
        // sled's background flush) takes them along.
        engine::persist::CaseWrite::flush(s.as_ref()).await.unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        s.cache_get("intel", "9.9.9.9", at(0)).await.unwrap(),
        Some(json!({"verdict": "malicious"}))
    );
    assert!(engine::persist::CaseRead::check(&s)
        .await
        .unwrap()
        .is_empty());
}
