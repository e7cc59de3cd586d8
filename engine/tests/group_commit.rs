//! Group commit: concurrent strict ingests share transactions and flushes, and every
//! acknowledged event is there after a reopen. Relaxed durability acknowledges without
//! flushing at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::persist::{Durability, Inbox, SledStore, StoreOptions};
use engine::{Engine, Services};
use serde_json::json;

fn engine_on(store: Arc<SledStore>) -> Arc<Engine> {
    let bundle = engine::compile::compile_sources(&[], &engine::Registry::new())
        .unwrap_or_else(|d| panic!("{d:?}"));
    Arc::new(Engine::new(bundle, Services::new().with_store(store)))
}

fn open(dir: &std::path::Path, durability: Durability) -> SledStore {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledStore::open_with_options(
            dir,
            StoreOptions {
                durability,
                ..StoreOptions::default()
            },
        ) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

const N: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingests_share_flushes_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    let (flushes, commits, elapsed);
    {
        let store = Arc::new(open(dir.path(), Durability::Strict));
        let e = engine_on(store.clone());
        let before = store.stats();
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..N {
            let e = e.clone();
            set.spawn(async move {
                let got = e
                    .ingest("okta", vec![json!({"uuid": format!("u-{i}"), "n": i})])
                    .await
                    .unwrap();
                (i, got[0].seq.unwrap())
            });
        }
        while let Some(r) = set.join_next().await {
            acked.push(r.unwrap());
        }
        elapsed = started.elapsed();
        let after = store.stats();
        flushes = after.flushes - before.flushes;
        commits = after.commits - before.commits;
    }
    println!(
        "group commit: {N} concurrent ingests, {commits} commits, {flushes} flushes, {:.1} ms ({:.0} events/s)",
        elapsed.as_secs_f64() * 1e3,
        N as f64 / elapsed.as_secs_f64()
    );
    assert!(
        commits >= 1 && commits < N as u64,
        "{commits} transactions for {N} calls"
    );
    assert!(flushes >= 1);
    assert!(
        flushes < N as u64 / 2,
        "{flushes} flushes for {N} acknowledged events: no group commit"
    );

    // Every acknowledged event is in the reopened store, with its body.
    let store = open(dir.path(), Durability::Strict);
    let queued = store.pending_incoming(usize::MAX).await.unwrap();
    assert_eq!(queued.len(), N);
    for (i, seq) in &acked {
        let q = queued
            .iter()
            .find(|q| q.seq == *seq)
            .expect("acked event present");
        assert_eq!(q.event["n"], json!(i));
        assert_eq!(q.key.as_deref(), Some(format!("okta:u-{i}").as_str()));
    }
    // Their keys are recorded too: a redelivery is a duplicate.
    let again = store
        .enqueue_incoming(vec![engine::persist::NewIncoming {
            source: "okta".into(),
            key: Some("okta:u-7".into()),
            event: json!({}),
            received_at: engine::cases::Timestamp::now(),
        }])
        .await
        .unwrap();
    assert!(again[0].duplicate);
}

#[tokio::test]
async fn relaxed_durability_acknowledges_without_flushing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), Durability::Relaxed));
    let e = engine_on(store.clone());
    let before = store.stats();
    for i in 0..20 {
        e.ingest("okta", vec![json!({"uuid": format!("r-{i}")})])
            .await
            .unwrap();
    }
    let after = store.stats();
    assert_eq!(
        after.commits - before.commits,
        20,
        "one transaction per sequential call"
    );
    assert_eq!(
        after.flushes, before.flushes,
        "relaxed: no flush before the ack"
    );
}

/// `ingest_unsynced` (the synchronous `?wait=true` path) commits without a flush; the
/// `sync` the caller makes before it answers is the flush, and what it acknowledged is
/// there after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_ingest_waits_for_the_callers_sync() {
    use engine::persist::CaseWrite;
    let dir = tempfile::tempdir().unwrap();
    let seq;
    {
        let store = Arc::new(open(dir.path(), Durability::Strict));
        let e = engine_on(store.clone());
        let before = store.stats();
        let got = e
            .ingest_unsynced("okta", vec![json!({"uuid": "w-1"})])
            .await
            .unwrap();
        seq = got[0].seq.unwrap();
        let after = store.stats();
        assert_eq!(after.commits, before.commits + 1);
        assert_eq!(after.flushes, before.flushes, "no flush of its own");
        store.sync().await.unwrap();
        assert_eq!(store.stats().flushes, before.flushes + 1);
        // The synced path flushes before it returns.
        e.ingest("okta", vec![json!({"uuid": "w-2"})])
            .await
            .unwrap();
        assert_eq!(store.stats().flushes, before.flushes + 2);
    }
    let store = open(dir.path(), Durability::Strict);
    let pending = store.pending_incoming(10).await.unwrap();
    assert!(pending.iter().any(|p| p.seq == seq), "{pending:?}");
    assert_eq!(pending.len(), 2);
}
