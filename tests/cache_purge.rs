//! The purge `engine serve` registers (`caseflow::serve_hooks`): expired store-cache
//! entries are removed when the worker starts (and every ten minutes after), fresh ones
//! are kept.

use std::sync::Arc;
use std::time::Duration;

use caseflow::engine::cases::Timestamp;
use caseflow::engine::persist::{Cache, MemoryStore, Store};
use caseflow::engine::{Engine, Services};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_worker_purges_expired_cache_entries() {
    let registry = caseflow::builtin_registry();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bundle = caseflow::engine::load_paths(&[repo.join("playbooks/iam.yaml")], &registry)
        .unwrap_or_else(|d| panic!("{d:?}"));
    let store = Arc::new(MemoryStore::new());
    let now = Timestamp::now();
    store
        .cache_put("intel", "old", &json!(1), now.add_millis(-1000))
        .await
        .unwrap();
    store
        .cache_put("intel", "fresh", &json!(2), now.add_millis(3_600_000))
        .await
        .unwrap();
    let services = Services::new().with_store(store.clone() as Arc<dyn Store>);
    let engine = Arc::new(Engine::new(bundle, services));
    for hook in caseflow::serve_hooks() {
        hook(&engine);
    }
    let stop = CancellationToken::new();
    let worker = tokio::spawn(engine.clone().run_worker(stop.clone()));
    // The hook runs when the worker starts. Probe with a purge of our own: if it still
    // finds the expired entry, the hook has not run yet, so put the entry back and wait.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.cache_purge(now, usize::MAX).await.unwrap() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the purge did not run"
        );
        store
            .cache_put("intel", "old", &json!(1), now.add_millis(-1000))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        store.cache_get("intel", "fresh", now).await.unwrap(),
        Some(json!(2))
    );
    stop.cancel();
    worker.await.unwrap().unwrap();
}
