//! sled-only behaviour: reopening from disk, corrupt and newer stores, and the query
//! scaling measurement (`--ignored`).

use std::time::Instant;

use engine::cases::{
    Actor, CaseChange, CaseId, CaseState, NewCase, NewObservable, ObservableType, Severity,
    Timestamp,
};
use engine::persist::{
    CaseQuery, CaseRead, CaseWrite, Durability, Inbox, NewIncoming, Notifications, RunInputRecord,
    RunOrigin, RunRecord, RunState, RunSummary, Runs, SledStore, Store, StoreError, WriteMeta,
};
use engine::report::StepReport;
use engine::schedule::journal::RunJournal;
use engine::schedule::ready::Status;

fn meta(ms: i64) -> WriteMeta {
    WriteMeta::new(
        Actor::Person { name: "ana".into() },
        Timestamp::from_unix_millis(1_700_000_000_000 + ms).unwrap(),
    )
}

fn case_with_ip(i: u64) -> NewCase {
    let mut n = NewCase::new(format!("case {i}"), Severity::Medium);
    n.observables = vec![NewObservable::new(
        ObservableType::Ip,
        format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
    )];
    n.tags = [format!("batch-{}", i % 10)].into();
    n
}

#[tokio::test]
async fn reopened_store_has_the_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.create(case_with_ip(1), &meta(0)).await.unwrap();
        s.create(case_with_ip(2), &meta(1)).await.unwrap();
        s.update(
            CaseId(2),
            vec![CaseChange::SetState {
                to: CaseState::InProgress,
                reason: None,
            }],
            &meta(2),
        )
        .await
        .unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        s.get(CaseId(2)).await.unwrap().unwrap().state,
        CaseState::InProgress
    );
    let found = s
        .query(&CaseQuery::by_observable(ObservableType::Ip, "10.0.0.1", 5))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, CaseId(1));
    assert_eq!(s.pending_events(10).await.unwrap().len(), 3);
    // Counters survive: the next case continues the sequence.
    let third = s.create(case_with_ip(3), &meta(3)).await.unwrap();
    assert_eq!(third.case.id, CaseId(3));
    assert_eq!(third.event_ids, [4]);
    assert!(s.check().await.unwrap().is_empty());
}

#[tokio::test]
async fn garbage_in_a_case_record_is_a_corrupt_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.create(case_with_ip(1), &meta(0)).await.unwrap();
    }
    {
        let db = open_raw(dir.path());
        let t = db.open_tree("caseid_case").unwrap();
        t.insert(1u64.to_be_bytes(), &b"{not json"[..]).unwrap();
        db.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    let e = s.get(CaseId(1)).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains("tree `caseid_case` key `CASE-000001`: bad case JSON"),
        "{msg}"
    );
    assert!(msg.contains("engine store check"), "{msg}");
    let e = s.query(&CaseQuery::all()).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    let e = s
        .update(
            CaseId(1),
            vec![CaseChange::AddComment("x".into())],
            &meta(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    let problems = s.check().await.unwrap();
    assert!(
        problems.iter().any(|p| p.contains("bad case JSON")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn check_finds_stale_and_missing_index_entries() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.create(case_with_ip(1), &meta(0)).await.unwrap();
    }
    {
        let db = open_raw(dir.path());
        let tags = db.open_tree("tag_caseid").unwrap();
        let (k, _) = tags.first().unwrap().unwrap();
        tags.remove(k).unwrap();
        db.open_tree("assignee_caseid")
            .unwrap()
            .insert(b"ghost\0xxxxxxxx\0\0\0\0\0\0\0\x09", &b""[..])
            .unwrap();
        db.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    let problems = s.check().await.unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p == "tree `tag_caseid`: entry for CASE-000001: missing"),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p == "tree `assignee_caseid`: entry for CASE-000009: stale, no case has it"),
        "{problems:?}"
    );
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path()).unwrap());
    {
        let db = open_raw(dir.path());
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &6u32.to_be_bytes()[..])
            .unwrap();
        db.flush().unwrap();
    }
    let e = SledStore::open(dir.path()).err().unwrap();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("schema version 6 is newer than this engine supports (5)"),
        "{e}"
    );
}

fn note(id: &str) -> engine::notify::Notification {
    engine::notify::Notification {
        id: id.into(),
        at: "2026-01-01T00:00:00Z".into(),
        to: vec!["a@example.com".into()],
        subject: "s".into(),
        message: "m".into(),
        channels: vec!["console".into(), "slack".into()],
        case: None,
        run_id: "r".into(),
        playbook: "p".into(),
        step: "s".into(),
    }
}

/// Rewrites a current store as an older schema version wrote it: the version in `meta`,
/// without the trees that version did not have.
fn downgrade(dir: &std::path::Path, version: u32) {
    let db = open_raw(dir);
    db.open_tree("meta")
        .unwrap()
        .insert("schema_version", &version.to_be_bytes()[..])
        .unwrap();
    let mut added = vec![
        "notifyid_seq",
        "notifyseq_notification",
        "notifychannel_delivery",
        "notifyowed_empty",
    ];
    if version < 4 {
        added.extend(["cache_entry", "cache_expiry"]);
    }
    if version < 3 {
        added.extend([
            "inboxseq_event",
            "inboxseq_runid",
            "runid_run",
            "runstep_result",
            "unfinished_runid",
            "cursor_value",
        ]);
    }
    if version < 2 {
        added.extend(["eventkey_receivedat", "eventplaybook_runid"]);
    }
    for t in added {
        db.drop_tree(t).unwrap();
    }
    db.flush().unwrap();
}

#[tokio::test]
async fn older_stores_are_upgraded_in_place() {
    for version in [1u32, 2, 3, 4] {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.create(case_with_ip(1), &meta(0)).await.unwrap();
            if version >= 2 {
                assert!(s.record_incoming("okta:u0", meta(0).at).await.unwrap());
            }
        }
        downgrade(dir.path(), version);
        {
            let s = SledStore::open(dir.path()).unwrap();
            assert_eq!(s.get(CaseId(1)).await.unwrap().unwrap().title, "case 1");
            assert!(s.record_incoming("okta:u1", meta(1).at).await.unwrap());
            assert_eq!(
                s.record_incoming("okta:u0", meta(1).at).await.unwrap(),
                version == 1,
                "inbox keys of versions 2 to 4 are kept"
            );
            assert_eq!(s.inbox_depth().await.unwrap(), 0);
            // The outbox trees of version 5 start empty and work.
            assert!(s.notifications_all().await.unwrap().is_empty());
            assert!(s
                .notification_push(&note("n1"), &["slack".into()])
                .await
                .unwrap());
            assert_eq!(s.notifications_pending(None, 10).await.unwrap().len(), 1);
            assert!(s.check().await.unwrap().is_empty());
        }
        let db = open_raw(dir.path());
        let v = db.open_tree("meta").unwrap().get("schema_version").unwrap();
        assert_eq!(
            v.as_deref(),
            Some(&5u32.to_be_bytes()[..]),
            "from {version}"
        );
    }
}

#[tokio::test]
async fn inbox_records_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        assert!(s.record_incoming("okta:a", meta(0).at).await.unwrap());
        assert!(!s.record_incoming("okta:a", meta(1).at).await.unwrap());
        s.create(case_with_ip(1), &meta(2)).await.unwrap();
        assert!(s.start_delivery(1, "pb", "run-1").await.unwrap());
        // Dropped without an ack: as if the process died after the run started.
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert!(!s.record_incoming("okta:a", meta(3).at).await.unwrap());
    assert!(s.record_incoming("okta:b", meta(3).at).await.unwrap());
    assert!(!s.start_delivery(1, "pb", "run-2").await.unwrap());
    assert!(s.start_delivery(1, "other", "run-3").await.unwrap());
    let d = s.deliveries(1).await.unwrap();
    assert_eq!(
        d.iter()
            .map(|d| (d.playbook.as_str(), d.run_id.as_str()))
            .collect::<Vec<_>>(),
        [("other", "run-3"), ("pb", "run-1")]
    );
    assert!(s.check().await.unwrap().is_empty());
    assert!(s.ack_event(1).await.unwrap());
    assert!(s.deliveries(1).await.unwrap().is_empty());
    assert!(s.check().await.unwrap().is_empty());
}

#[test]
fn unopenable_path_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"hello").unwrap();
    let e = SledStore::open(&file).err().unwrap();
    assert!(e.to_string().contains("not-a-dir"), "{e}");
}

#[test]
fn a_locked_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledStore::open(dir.path()).unwrap();
    match SledStore::open(dir.path()) {
        // sled locks the directory per process; within one process a second open may
        // succeed on some platforms, so only check the message when it fails.
        Ok(_) => {}
        Err(e) => assert!(
            e.to_string().contains(&dir.path().display().to_string()),
            "{e}"
        ),
    }
}

/// Bytes under `dir`, recursively.
fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.metadata() {
            Ok(m) if m.is_dir() => total += dir_size(&entry.path()),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}

/// `VmRSS` and `VmHWM` (peak) of this process in MiB, where `/proc` exists.
fn rss_mib() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or("?".to_string(), |kb| (kb / 1024).to_string())
    };
    format!("rss {} MiB (peak {} MiB)", field("VmRSS:"), field("VmHWM:"))
}

/// Prints µs per `query(observable, limit 1)` at 10k and 100k cases, and at 1M with
/// `CASEFLOW_SCALING_1M=1`, with the disk and memory used. Run with
/// `CASEFLOW_SCALING_1M=1 cargo test --release -p caseflow-engine --test store_sled -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn store_query_scaling() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open_with(dir.path(), Durability::Relaxed).unwrap();
    let mut loaded = 0u64;
    let mut targets = vec![10_000u64, 100_000];
    if std::env::var_os("CASEFLOW_SCALING_1M").is_some() {
        targets.push(1_000_000);
    }
    for target in targets {
        let start = loaded;
        let t0 = Instant::now();
        while loaded < target {
            loaded += 1;
            s.create(case_with_ip(loaded), &meta(loaded as i64))
                .await
                .unwrap();
            if loaded % 5_000 == 0 {
                // Drain the outbox as a dispatcher would, in batches.
                for e in s.pending_events(10_000).await.unwrap() {
                    s.ack_event(e.id).await.unwrap();
                }
            }
        }
        s.flush().await.unwrap();
        let load = t0.elapsed();
        let queries = 2_000u64;
        let ip_of = |i: u64| {
            let n = 1 + (i * 7919) % target;
            format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
        };
        // First pass: each query reads a case not read before (cold pages); second pass:
        // the same queries again (warm), which isolates index cost from page-in cost.
        let mut per_pass = Vec::new();
        for _pass in 0..2 {
            let t1 = Instant::now();
            for i in 0..queries {
                let q = CaseQuery::by_observable(ObservableType::Ip, ip_of(i), 1);
                assert_eq!(s.query(&q).await.unwrap().len(), 1);
            }
            per_pass.push(t1.elapsed().as_secs_f64() * 1e6 / queries as f64);
        }
        let per = format!("cold {:.1} µs, warm {:.1} µs", per_pass[0], per_pass[1]);
        // A tag query with limit 1 over 1/10 of all cases, for contrast.
        let t2 = Instant::now();
        for i in 0..queries {
            let q = CaseQuery {
                tag: Some(format!("batch-{}", i % 10)),
                limit: 1,
                ..Default::default()
            };
            assert_eq!(s.query(&q).await.unwrap().len(), 1);
        }
        let per_tag = t2.elapsed().as_secs_f64() * 1e6 / queries as f64;
        println!(
            "cases={target:>7} load={:.1}s ({:.0} µs/create) query(observable, limit 1): {per};  query(tag, limit 1)={per_tag:.1} µs; disk {:.0} MiB; {}",
            load.as_secs_f64(),
            load.as_secs_f64() * 1e6 / (target - start) as f64,
            dir_size(dir.path()) as f64 / (1024.0 * 1024.0),
            rss_mib(),
        );
    }
}

/// Open the sled files directly, waiting for a just-dropped store's background thread to
/// release its file lock (sled lets go of it a moment after the last handle drops).
fn open_raw(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open {}: {e}", path.display()),
        }
    }
}

fn run(id: &str) -> RunRecord {
    RunRecord {
        summary: RunSummary {
            run_id: id.into(),
            playbook: "p".into(),
            trigger: "okta".into(),
            status: RunState::Running,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: None,
            duration_ms: None,
            event_key: None,
            inbox_seq: None,
            case_event: None,
            error: None,
        },
        input: RunInputRecord {
            event: serde_json::json!({}),
            case: None,
            depth: 0,
            seed: None,
        },
        output: None,
        steps: Vec::new(),
    }
}

/// What the worker and the journal leave to a later flush under strict durability: the
/// take of many inbox entries is one commit and no flush; a step's case write in a
/// journaled run commits without a flush, a person's is flushed; the journal flushes
/// before an effectful step or after the end of one, not for effect-free steps.
#[tokio::test]
async fn strict_writes_that_a_later_flush_covers() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
    let items: Vec<NewIncoming> = (0..3)
        .map(|i| NewIncoming {
            source: "okta".into(),
            key: Some(format!("okta:{i}")),
            event: serde_json::json!({"i": i}),
            received_at: Timestamp::from_unix_millis(1_700_000_000_000).unwrap(),
        })
        .collect();
    let seqs: Vec<u64> = s
        .enqueue_incoming(items)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| e.seq)
        .collect();
    let before = s.stats();
    let batch: Vec<(RunOrigin, Vec<RunRecord>)> = seqs
        .iter()
        .map(|q| (RunOrigin::Inbox(*q), vec![run(&format!("r{q}"))]))
        .collect();
    s.start_runs_many(&batch).await.unwrap();
    let after = s.stats();
    assert_eq!(
        after.commits - before.commits,
        1,
        "one transaction for the batch"
    );
    assert_eq!(after.flushes, before.flushes, "start_runs is not flushed");
    assert_eq!(s.inbox_depth().await.unwrap(), 0);

    let mut journaled = meta(1).with_key("r1", "create");
    journaled.journaled = true;
    s.create(case_with_ip(1), &journaled).await.unwrap();
    assert_eq!(
        s.stats().flushes,
        after.flushes,
        "a journaled step's write waits for the journal"
    );
    s.create(case_with_ip(2), &meta(2)).await.unwrap();
    let flushed = s.stats().flushes;
    assert_eq!(flushed, after.flushes + 1, "a person's write is flushed");

    let step = |id: &str| StepReport {
        id: id.into(),
        uses: "x".into(),
        status: Status::Succeeded,
        attempts: 1,
        duration_ms: 0.0,
        output: None,
        error: None,
        reason: None,
    };
    let reports = vec![step("query"), step("create"), step("next")];
    let store: std::sync::Arc<dyn Store> = s.clone();
    let mut j = RunJournal::new(store, "r1", 0);
    // The first step is effect-free: committed, not flushed.
    j.before_start(&reports, false).await.unwrap();
    j.push(0, false);
    j.before_start(&reports, false).await.unwrap();
    assert_eq!(s.stats().flushes, flushed);
    // An effectful step starts: flushed first.
    j.before_start(&reports, true).await.unwrap();
    assert_eq!(s.stats().flushes, flushed + 1);
    // It finished: its entry is flushed at the next decision even if only effect-free
    // steps (or none) start.
    j.push(1, true);
    j.before_start(&reports, false).await.unwrap();
    assert_eq!(s.stats().flushes, flushed + 2);
    j.push(2, false);
    j.before_start(&reports, false).await.unwrap();
    assert_eq!(s.stats().flushes, flushed + 2);
}
