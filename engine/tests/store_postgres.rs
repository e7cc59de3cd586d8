//! PostgreSQL-only behaviour: reopening, migrations (newer schema refused, edited
//! migration refused, concurrent first opens), damage found by `check`, secrets kept out
//! of errors, TLS verification, `store copy` from sled, and what several processes sharing
//! one database rely on (two `PgStore`s on one schema are two processes): claims, run
//! takeover, fencing, concurrency keys, wake-ups, dedup and idempotency across processes,
//! the shared notification outbox and its claims.

mod support {
    pub mod pg;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::cases::{Actor, CaseChange, CaseId, NewCase, NewObservable, ObservableType, Severity};
use engine::persist::{
    CaseQuery, CaseRead, CaseWrite, Durability, Inbox, NewIncoming, Notifications, PgOptions,
    PgStore, RunInputRecord, RunOrigin, RunRecord, RunState, RunSummary, Runs, SledStore,
    StoreError, WriteMeta,
};
use engine::report::StepReport;
use engine::schedule::ready::Status;
use serde_json::json;
use support::pg;

fn meta(ms: i64) -> WriteMeta {
    WriteMeta::new(
        Actor::Person { name: "ana".into() },
        engine::cases::Timestamp::from_unix_millis(1_700_000_000_000 + ms).unwrap(),
    )
}

fn case_with_ip(i: u64) -> NewCase {
    let mut n = NewCase::new(format!("case {i}"), Severity::Medium);
    n.observables = vec![NewObservable::new(
        ObservableType::Ip,
        format!("10.0.{}.{}", (i >> 8) & 255, i & 255),
    )];
    n.tags = [format!("batch-{}", i % 3)].into();
    n
}

fn run_record(id: &str) -> RunRecord {
    RunRecord {
        summary: RunSummary {
            run_id: id.into(),
            playbook: "p".into(),
            trigger: "t".into(),
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
            event: json!({}),
            case: None,
            depth: 0,
            seed: None,
        },
        output: None,
        steps: Vec::new(),
    }
}

fn step(id: &str) -> StepReport {
    StepReport {
        id: id.into(),
        uses: "t".into(),
        status: Status::Succeeded,
        attempts: 1,
        duration_ms: 1.0,
        output: None,
        error: None,
        reason: None,
    }
}

fn incoming(key: &str) -> NewIncoming {
    NewIncoming {
        source: "okta".into(),
        key: Some(key.into()),
        event: json!({"uuid": key}),
        received_at: meta(0).at,
    }
}

/// Runs SQL in the test schema.
async fn sql(schema: &str, statements: &str) {
    let (client, conn) = tokio_postgres::connect(&pg::test_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{}", pg::no_server(&e)));
    tokio::spawn(conn);
    client
        .batch_execute(&format!("SET search_path TO {schema}; {statements}"))
        .await
        .unwrap();
}

/// Polls `f` until it returns `Some`, for at most `secs`.
async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_reopened_store_has_the_data_and_continues_the_counters() {
    let mut t = pg::fresh().await;
    let s = t.take();
    s.create(case_with_ip(1), &meta(0)).await.unwrap();
    s.create(case_with_ip(2), &meta(1)).await.unwrap();
    s.update(
        CaseId(2),
        vec![CaseChange::AddComment("hello".into())],
        &meta(2),
    )
    .await
    .unwrap();
    drop(s);
    let s = pg::open(&t.schema, Durability::Strict).await;
    let c = s.get(CaseId(2)).await.unwrap().unwrap();
    assert_eq!(c.comments.len(), 1);
    assert_eq!(c.timeline.len(), 2, "created + commented");
    let found = s
        .query(&CaseQuery::by_observable(ObservableType::Ip, "10.0.0.1", 5))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(s.pending_events(10).await.unwrap().len(), 3);
    let third = s.create(case_with_ip(3), &meta(3)).await.unwrap();
    assert_eq!(third.case.id, CaseId(3));
    assert_eq!(third.event_ids, [4]);
    assert!(s.check().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let mut t = pg::fresh().await;
    drop(t.take());
    sql(
        &t.schema,
        "INSERT INTO caseflow_schema_migrations (version, name, checksum) VALUES (99, 'future', 0)",
    )
    .await;
    let e = PgStore::open(&pg::options(&t.schema)).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("schema version 99 (`future`) is newer than this engine supports (3)"),
        "{msg}"
    );
    assert!(msg.contains(&t.schema), "names the schema: {msg}");
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let mut t = pg::fresh().await;
    drop(t.take());
    sql(
        &t.schema,
        "UPDATE caseflow_schema_migrations SET checksum = checksum + 1 WHERE version = 1",
    )
    .await;
    let e = PgStore::open(&pg::options(&t.schema)).await.unwrap_err();
    assert!(
        e.to_string().contains("was applied from different SQL"),
        "{e}"
    );
}

#[tokio::test]
async fn processes_opening_a_new_schema_together_migrate_it_once() {
    let schema = pg::fresh_schema();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let schema = schema.clone();
            tokio::spawn(async move { pg::open(&schema, Durability::Strict).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap());
    }
    let a = stores[0].create(case_with_ip(1), &meta(0)).await.unwrap();
    assert_eq!(a.case.id, CaseId(1));
    assert!(stores[3].get(CaseId(1)).await.unwrap().is_some());
    drop(stores);
    pg::drop_schema(&schema);
}

#[tokio::test]
async fn the_password_never_appears_in_errors() {
    // Wrong password against the real server, and a port where nothing listens.
    let url = pg::test_url();
    let mut u = url::Url::parse(&url).unwrap();
    u.set_password(Some("Wr0ngS3cretXYZ")).unwrap();
    u.set_query(Some("schema=nope"));
    let e = PgStore::open(&PgOptions::new(u.to_string()))
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("Wr0ngS3cretXYZ"), "{e}");
    assert!(e.contains("cannot connect"), "{e}");
    u.set_port(Some(1)).unwrap();
    let e = PgStore::open(&PgOptions::new(u.to_string()))
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("Wr0ngS3cretXYZ"), "{e}");
    assert!(e.contains(":1/"), "names the target: {e}");
    let e = PgStore::open(&PgOptions::new("postgres://u:Wr0ngS3cretXYZ@[::1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("Wr0ngS3cretXYZ"), "{e}");
    assert!(!format!("{:?}", PgOptions::new(url.clone())).contains(":caseflow@"));
}

#[tokio::test]
async fn tls_certificates_are_verified() {
    // `sslmode=require` with the server's self-signed certificate: refused, never a
    // silent fall back to plain text. (A server without TLS refuses the upgrade.)
    let mut u = url::Url::parse(&pg::test_url()).unwrap();
    u.set_query(Some("sslmode=require&schema=tls_check"));
    let e = PgStore::open(&PgOptions::new(u.to_string()))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot connect"), "{e}");
    assert!(
        e.contains("certificate") || e.contains("TLS") || e.contains("tls") || e.contains("SSL"),
        "{e}"
    );
}

#[tokio::test]
async fn check_finds_rows_out_of_line_with_the_cases() {
    let t = pg::fresh().await;
    t.create(case_with_ip(1), &meta(0)).await.unwrap();
    t.create(case_with_ip(2), &meta(1)).await.unwrap();
    assert!(t.check().await.unwrap().is_empty());
    sql(
        &t.schema,
        "DELETE FROM case_tags WHERE case_id = 1;
         INSERT INTO case_observables (case_id, kind, value, created_at) VALUES (2, 'user', 'ghost', 0);
         UPDATE cases SET state = 'closed' WHERE id = 2;
         INSERT INTO run_steps (run_id, step_id, seq, entry) VALUES ('nope', 's', 0, '{}');",
    )
    .await;
    let problems = t.check().await.unwrap();
    let has = |s: &str| problems.iter().any(|p| p.contains(s));
    assert!(
        has("table `case_tags`: entry for CASE-000001 (batch-1): missing"),
        "{problems:?}"
    );
    assert!(
        has("table `case_observables`: entry for CASE-000002 (user ghost): stale"),
        "{problems:?}"
    );
    assert!(has("CASE-000002: indexed columns disagree"), "{problems:?}");
    assert!(
        has("step `s` of run `nope`, which has no record"),
        "{problems:?}"
    );
    assert!(
        has("run `nope` step `s`: bad journal entry"),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 5, "{problems:?}");
}

#[tokio::test]
async fn bad_json_in_a_case_record_is_a_corrupt_error_naming_the_store() {
    let t = pg::fresh().await;
    t.create(case_with_ip(1), &meta(0)).await.unwrap();
    sql(
        &t.schema,
        "UPDATE cases SET record = '{\"id\": 1}' WHERE id = 1",
    )
    .await;
    let e = t.get(CaseId(1)).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("bad case JSON"), "{msg}");
    assert!(msg.contains(&t.schema), "{msg}");
    assert!(!msg.contains(":caseflow@"), "no password: {msg}");
    assert!(t
        .check()
        .await
        .unwrap()
        .iter()
        .any(|p| p.contains("bad case JSON")));
}

#[tokio::test]
async fn copy_moves_a_sled_store_over() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    for i in 1..=5 {
        sled.create(case_with_ip(i), &meta(i as i64)).await.unwrap();
    }
    sled.update(
        CaseId(2),
        vec![CaseChange::AddComment("x".into())],
        &meta(10).with_key("run-1", "comment"),
    )
    .await
    .unwrap();
    for e in sled.pending_events(3).await.unwrap() {
        sled.ack_event(e.id).await.unwrap();
    }
    sled.start_delivery(5, "pb", "run-9").await.unwrap();
    sled.enqueue_incoming(vec![incoming("okta:a"), incoming("okta:b")])
        .await
        .unwrap();
    sled.start_runs(RunOrigin::Inbox(1), &[run_record("run-a")])
        .await
        .unwrap();
    sled.record_steps("run-a", &[(0, &step("one"))])
        .await
        .unwrap();
    sled.put_cursor("okta", "c1").await.unwrap();
    let t = pg::fresh().await;
    let report = engine::persist::postgres::copy_store(&sled, &t)
        .await
        .unwrap();
    assert_eq!(report.cases, 5);
    assert_eq!(report.case_events, 3);
    assert_eq!(report.runs, 1);
    assert_eq!(report.steps, 1);
    let problems = t.check().await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    for q in [
        CaseQuery::all(),
        CaseQuery::by_observable(ObservableType::Ip, "10.0.0.3", 5),
        CaseQuery {
            tag: Some("batch-1".into()),
            ..CaseQuery::all()
        },
    ] {
        assert_eq!(t.query(&q).await.unwrap(), sled.query(&q).await.unwrap());
    }
    assert_eq!(
        t.pending_events(10).await.unwrap(),
        sled.pending_events(10).await.unwrap()
    );
    assert_eq!(
        t.deliveries(5).await.unwrap(),
        sled.deliveries(5).await.unwrap()
    );
    assert_eq!(
        t.get_run("run-a").await.unwrap(),
        sled.get_run("run-a").await.unwrap()
    );
    assert_eq!(t.get_cursor("okta").await.unwrap().as_deref(), Some("c1"));
    assert_eq!(
        t.inbox_entry(1).await.unwrap(),
        sled.inbox_entry(1).await.unwrap()
    );
    assert_eq!(t.inbox_depth().await.unwrap(), 1);
    // Keys, idempotency records and counters came along.
    assert!(t.enqueue_incoming(vec![incoming("okta:a")]).await.unwrap()[0].duplicate);
    let replay = t
        .update(
            CaseId(2),
            vec![CaseChange::AddComment("x".into())],
            &meta(11).with_key("run-1", "comment"),
        )
        .await
        .unwrap();
    assert!(replay.replayed);
    let next = t.create(case_with_ip(6), &meta(12)).await.unwrap();
    assert_eq!(next.case.id, CaseId(6));
    assert_eq!(next.event_ids, [7], "5 created + 1 comment before");
    assert_eq!(
        t.enqueue_incoming(vec![incoming("okta:c")]).await.unwrap()[0].seq,
        Some(3)
    );
    // The unfinished run is free for the first process to resume.
    assert_eq!(t.unfinished_runs().await.unwrap().len(), 1);
    let again = engine::persist::postgres::copy_store(&sled, &t)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("empty"), "{again}");
}

/// Two processes on one schema.
async fn two() -> (pg::TestPg, PgStore) {
    let a = pg::fresh().await;
    let b = pg::open(&a.schema, Durability::Strict).await;
    (a, b)
}

#[tokio::test]
async fn claimed_inbox_entries_go_to_one_process_until_it_dies() {
    let (mut a, b) = two().await;
    let queued = a
        .enqueue_incoming(vec![
            incoming("okta:1"),
            incoming("okta:2"),
            incoming("okta:3"),
        ])
        .await
        .unwrap();
    assert!(queued.iter().all(|q| q.seq.is_some()));
    let mine = a.pending_incoming(2).await.unwrap();
    assert_eq!(mine.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2]);
    let theirs = b.pending_incoming(10).await.unwrap();
    assert_eq!(
        theirs.iter().map(|i| i.seq).collect::<Vec<_>>(),
        [3],
        "rows claimed by a live process are not handed out twice"
    );
    assert_eq!(
        a.pending_incoming(10).await.unwrap().len(),
        2,
        "a sees its own"
    );
    // A dies (its connections close): its claims go to B.
    drop(a.take());
    let got = eventually(10, || async {
        let p = b.pending_incoming(10).await.unwrap();
        (p.len() == 3).then_some(p)
    })
    .await
    .expect("the claims of a dead process are taken over");
    assert_eq!(got.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2, 3]);
}

#[tokio::test]
async fn an_inbox_entry_starts_its_runs_once_across_processes() {
    let (mut guard, b) = two().await;
    let a = Arc::new(guard.take());
    let b = Arc::new(b);
    let mut events = Vec::new();
    for i in 0..20 {
        events.push(incoming(&format!("okta:{i}")));
    }
    a.enqueue_incoming(events).await.unwrap();
    let mut tasks = Vec::new();
    for seq in 1..=20u64 {
        for (n, s) in [
            (0, a.clone() as Arc<dyn Runs + Send + Sync>),
            (1, b.clone()),
        ] {
            tasks.push(tokio::spawn(async move {
                s.start_runs(RunOrigin::Inbox(seq), &[run_record(&format!("r{seq}-{n}"))])
                    .await
                    .unwrap()[0]
            }));
        }
    }
    let mut started = 0;
    for t in tasks {
        started += usize::from(t.await.unwrap());
    }
    assert_eq!(started, 20);
    assert_eq!(a.inbox_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn runs_of_a_dead_process_are_taken_over_and_its_late_writes_refused() {
    let (mut a, b) = two().await;
    a.start_runs(RunOrigin::Direct, &[run_record("run-a")])
        .await
        .unwrap();
    a.record_steps("run-a", &[(0, &step("one"))]).await.unwrap();
    assert!(b.take_over_runs().await.unwrap().is_empty(), "a is alive");
    assert!(
        b.unfinished_runs().await.unwrap().is_empty(),
        "a's run is a's"
    );
    // B declares A dead (as after A stopped answering for the lease): A is fenced.
    let a_id = a.process_id().to_string();
    sql(
        &a.schema,
        &format!("DELETE FROM engine_processes WHERE id = '{a_id}'"),
    )
    .await;
    let taken = b.take_over_runs().await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].steps.len(), 1, "with its journal");
    let e = a
        .record_steps("run-a", &[(1, &step("two"))])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("declared dead"), "{e}");
    assert!(
        a.pending_incoming(10).await.is_err(),
        "a fenced process claims no more work"
    );
    let mut done = run_record("run-a");
    done.summary.status = RunState::Succeeded;
    assert!(a.finish_run(&done).await.is_err());
    // B finishes it; nothing of A's late writes is in the journal.
    b.record_steps("run-a", &[(1, &step("two-b"))])
        .await
        .unwrap();
    b.finish_run(&done).await.unwrap();
    let run = b.get_run("run-a").await.unwrap().unwrap();
    assert_eq!(
        run.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["one", "two-b"]
    );
    assert!(b.check().await.unwrap().is_empty());
    drop(a.take());
}

#[tokio::test]
async fn a_killed_process_is_noticed_without_waiting_for_the_lease() {
    let (mut a, b) = two().await;
    a.start_runs(RunOrigin::Direct, &[run_record("run-k")])
        .await
        .unwrap();
    // Dropping the store closes its connections, as a kill does: its session lock goes.
    drop(a.take());
    let started = Instant::now();
    let taken = eventually(10, || async {
        let t = b.take_over_runs().await.unwrap();
        (!t.is_empty()).then_some(t)
    })
    .await
    .expect("taken over");
    assert_eq!(taken[0].summary.run_id, "run-k");
    assert!(
        started.elapsed() < pg::options("x").lease,
        "noticed by the lock, not the lease: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn parked_runs_are_resumed_by_any_process() {
    let (a, b) = two().await;
    a.start_runs(RunOrigin::Direct, &[run_record("run-p")])
        .await
        .unwrap();
    a.park_runs(&["run-p".into()]).await.unwrap();
    let taken = b.take_over_runs().await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].summary.status, RunState::Parked);
    assert!(a.take_over_runs().await.unwrap().is_empty(), "b has it now");
}

#[tokio::test]
async fn a_concurrency_key_is_held_across_processes() {
    let (mut a, b) = two().await;
    a.acquire_key("okta-user:1", "r1").await.unwrap();
    let b = Arc::new(b);
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire_key("okta-user:1", "r2").await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiter.is_finished(), "b waits while a holds the key");
    b.acquire_key("okta-user:2", "r3").await.unwrap();
    a.release_key("okta-user:1", "r1").await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("b gets the key once a releases it")
        .unwrap()
        .unwrap();
    // A key held by a process that dies is free again.
    a.acquire_key("okta-user:3", "r4").await.unwrap();
    drop(a.take());
    tokio::time::timeout(Duration::from_secs(10), b.acquire_key("okta-user:3", "r5"))
        .await
        .expect("a dead process's key is taken over")
        .unwrap();
}

#[tokio::test]
async fn commits_of_one_process_wake_the_other() {
    let (a, b) = two().await;
    let signal = b.wake_signal().expect("a shared store has a wake signal");
    // Take any permit left by registration.
    let _ = tokio::time::timeout(Duration::from_millis(100), signal.notified()).await;
    let woken = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(5), signal.notified())
            .await
            .is_ok()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.enqueue_incoming(vec![incoming("okta:w")]).await.unwrap();
    assert!(woken.await.unwrap(), "b was woken by a's enqueue");
}

#[tokio::test]
async fn dedup_keys_and_idempotency_hold_across_processes() {
    let (mut guard, b) = two().await;
    let (a, b) = (Arc::new(guard.take()), Arc::new(b));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s: Arc<dyn CaseWrite + Send + Sync> = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut n = NewCase::new("burst", Severity::High);
            n.dedup_key = Some("okta-user:1".into());
            s.create(n, &meta(i)).await.unwrap().created
        }));
    }
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.unwrap());
    }
    assert_eq!(created, 1, "one case for one dedup key");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s: Arc<dyn CaseWrite + Send + Sync> = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            s.create(
                NewCase::new("same step", Severity::Low),
                &meta(i).with_key("run-x", "create"),
            )
            .await
            .unwrap()
        }));
    }
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await.unwrap());
    }
    assert_eq!(outs.iter().filter(|o| !o.replayed).count(), 1);
    assert!(outs.iter().all(|o| o.case.id == outs[0].case.id));
    assert_eq!(a.count(&CaseQuery::all()).await.unwrap(), 2);
    assert!(a.check().await.unwrap().is_empty());
}

#[tokio::test]
async fn updates_of_one_case_from_two_processes_all_apply() {
    let (mut guard, b) = two().await;
    let a = guard.take();
    let id = a.create(case_with_ip(1), &meta(0)).await.unwrap().case.id;
    let metas: Vec<WriteMeta> = (0..20).map(|i| meta(1 + i)).collect();
    let mut updates = Vec::new();
    for (i, m) in metas.iter().enumerate() {
        let s: &PgStore = if i % 2 == 0 { &a } else { &b };
        updates.push(s.update(id, vec![CaseChange::AddComment(format!("c{i}"))], m));
    }
    for r in futures_util::future::join_all(updates).await {
        r.unwrap();
    }
    let c = b.get(id).await.unwrap().unwrap();
    assert_eq!(c.comments.len(), 20);
    assert_eq!(c.timeline.len(), 21);
    assert!(a.check().await.unwrap().is_empty());
}

fn notification(id: &str) -> engine::notify::Notification {
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
        step: id.into(),
    }
}

fn delivered(id: &str) -> engine::notify::Delivery {
    engine::notify::Delivery {
        id: id.into(),
        channel: "slack".into(),
        status: engine::notify::DeliveryStatus::Delivered,
        at: "2026-01-01T00:00:01Z".into(),
        attempts: 1,
        error: None,
        not_before_ms: None,
    }
}

#[tokio::test]
async fn a_notification_claim_holds_while_its_process_lives_and_goes_with_it() {
    let (mut a, b) = two().await;
    a.notification_push(&notification("n1"), &["slack".into()])
        .await
        .unwrap();
    // B sees what A queued.
    assert_eq!(b.notifications_pending(None, 10).await.unwrap().len(), 1);
    assert!(a.notification_claim("n1", "slack").await.unwrap());
    assert!(
        !b.notification_claim("n1", "slack").await.unwrap(),
        "a live process's claim is not taken"
    );
    // A few heartbeats later it still holds.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!b.notification_claim("n1", "slack").await.unwrap());
    // A released claim is free at once.
    a.notification_release("n1", "slack").await.unwrap();
    assert!(b.notification_claim("n1", "slack").await.unwrap());
    assert!(
        !a.notification_claim("n1", "slack").await.unwrap(),
        "now b's"
    );
    b.notification_release("n1", "slack").await.unwrap();
    // A claims and dies without recording: once it is declared dead, B takes the claim.
    assert!(a.notification_claim("n1", "slack").await.unwrap());
    drop(a.take());
    eventually(10, || async {
        b.notification_claim("n1", "slack")
            .await
            .unwrap()
            .then_some(())
    })
    .await
    .expect("the claim of a dead process is taken after it was declared dead");
    b.notification_record(&delivered("n1")).await.unwrap();
    assert!(b.notifications_pending(None, 10).await.unwrap().is_empty());
    assert!(
        !b.notification_claim("n1", "slack").await.unwrap(),
        "delivered: never claimed again"
    );
}

#[tokio::test]
async fn a_claim_of_a_process_that_stopped_answering_goes_after_the_lease() {
    let (a, b) = two().await;
    a.notification_push(&notification("n1"), &["slack".into()])
        .await
        .unwrap();
    // A process that hangs keeps its session (and so its lock) but stops its heartbeat:
    // stand in for one with a session holding a process lock and a row of its own.
    let (hung, conn) = tokio_postgres::connect(&pg::test_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{}", pg::no_server(&e)));
    tokio::spawn(conn);
    let key = 1_000_000 + (rand::random::<u32>() % 1_000_000) as i32;
    hung.execute("SELECT pg_advisory_lock(1128680535, $1)", &[&key])
        .await
        .unwrap();
    sql(
        &a.schema,
        &format!(
            "INSERT INTO engine_processes (id, lock_key, host, pid) VALUES ('hung', {key}, 'h', 1);
             UPDATE notification_channels SET claimed_by = 'hung' WHERE id = 'n1'"
        ),
    )
    .await;
    // Alive as far as anyone can tell: its claim holds over several heartbeats.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!b.notification_claim("n1", "slack").await.unwrap());
    // Its heartbeat is now older than the lease.
    sql(
        &a.schema,
        "UPDATE engine_processes SET heartbeat_at = now() - interval '1 hour' WHERE id = 'hung'",
    )
    .await;
    eventually(10, || async {
        b.notification_claim("n1", "slack")
            .await
            .unwrap()
            .then_some(())
    })
    .await
    .expect("taken once the hung process's lease expired");
}

#[tokio::test]
async fn copy_moves_the_notification_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    for id in ["n1", "n2", "n3"] {
        sled.notification_push(&notification(id), &["slack".into()])
            .await
            .unwrap();
    }
    sled.notification_record(&delivered("n2")).await.unwrap();
    let t = pg::fresh().await;
    let report = engine::persist::postgres::copy_store(&sled, &t)
        .await
        .unwrap();
    assert_eq!(
        (report.notifications, report.notification_deliveries),
        (3, 1)
    );
    assert_eq!(
        t.notifications_all().await.unwrap(),
        sled.notifications_all().await.unwrap()
    );
    assert_eq!(
        t.notifications_pending(None, 10).await.unwrap(),
        sled.notifications_pending(None, 10).await.unwrap()
    );
    assert_eq!(
        t.notification_deliveries(None).await.unwrap(),
        sled.notification_deliveries(None).await.unwrap()
    );
    // The sequence continues after the copied notifications.
    t.notification_push(&notification("n4"), &["slack".into()])
        .await
        .unwrap();
    let ids: Vec<String> = t
        .notifications_pending(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.notification.id)
        .collect();
    assert_eq!(ids, ["n1", "n3", "n4"]);
}
