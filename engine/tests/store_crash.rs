//! Store crash loop: a child process (this test binary, re-run with an environment
//! variable) writes cases, comments, inbox entries and journaled runs to a sled store and
//! prints a line for each write once it is acknowledged (strict: flushed). The parent
//! SIGKILLs it at a random moment, reopens the store, runs the consistency check and
//! verifies that every acknowledged write is there; 100 times over one growing store.
//! Four kills in five land at a random moment after the child has opened the store; the
//! fifth at a random moment after its start, often while it is still opening the store
//! (recovering from the previous kill).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::cases::{Actor, CaseChange, CaseId, NewCase, NewObservable, ObservableType, Severity};
use engine::persist::{
    CaseRead, CaseWrite, Inbox, InboxEntry, NewIncoming, RunInputRecord, RunOrigin, RunRecord,
    RunState, RunSummary, Runs, SledStore, StoreOptions, WriteMeta,
};
use engine::report::StepReport;
use engine::schedule::ready::Status;
use rand::{Rng, SeedableRng};
use serde_json::json;

const CHILD: &str = "CASEFLOW_CRASH_CHILD_DIR";
const ITERATIONS: usize = 100;

fn meta() -> WriteMeta {
    WriteMeta::new(
        Actor::Person {
            name: "crash".into(),
        },
        engine::cases::Timestamp::now(),
    )
}

/// Opens the store; `verify`: read every record (the parent's reopen after each kill).
fn open_with_retry(dir: &Path, verify: bool) -> SledStore {
    let options = StoreOptions {
        verify_on_open: verify,
        ..StoreOptions::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match SledStore::open_with_options(dir, options) {
            Ok(s) => return s,
            // The lock of a killed process is released by the kernel; of a dropped
            // in-process handle, by sled's flusher thread a moment later.
            Err(engine::persist::StoreError::Backend { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("reopen failed: {e}"),
        }
    }
}

/// The child: write until killed, printing what was acknowledged.
#[tokio::test]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD) else {
        return;
    };
    let store = open_with_retry(Path::new(&dir), false);
    let tag: u64 = rand::random::<u32>().into();
    println!("opened");
    for n in 0u64.. {
        let mut new = NewCase::new(format!("crash {tag}-{n}"), Severity::Low);
        new.observables = vec![NewObservable::new(
            ObservableType::User,
            format!("u{}@example.com", n % 7),
        )];
        let out = store.create(new, &meta()).await.unwrap();
        println!("acked case {}", out.case.id);
        let out = store
            .update(
                out.case.id,
                vec![CaseChange::AddComment(format!("n {n}"))],
                &meta(),
            )
            .await
            .unwrap();
        println!("acked comment {} {}", out.case.id, out.case.comments.len());
        if n % 3 == 0 {
            let q = store
                .enqueue_incoming(vec![NewIncoming {
                    source: "okta".into(),
                    key: Some(format!("okta:{tag}-{n}")),
                    event: json!({"n": n}),
                    received_at: engine::cases::Timestamp::now(),
                }])
                .await
                .unwrap();
            println!("acked seq {}", q[0].seq.unwrap_or(0));
        }
        if n % 4 == 0 {
            let mut run = run_record();
            store
                .start_runs(RunOrigin::Direct, std::slice::from_ref(&run))
                .await
                .unwrap();
            let step = StepReport {
                id: "a".into(),
                uses: "t".into(),
                status: Status::Succeeded,
                attempts: 1,
                duration_ms: 1.0,
                output: Some(json!({"n": n})),
                error: None,
                reason: None,
            };
            store
                .record_steps(&run.summary.run_id, &[(0, &step)])
                .await
                .unwrap();
            store.sync().await.unwrap();
            println!("acked step {}", run.summary.run_id);
            run.summary.status = RunState::Succeeded;
            run.steps = vec![step];
            store.finish_run(&run).await.unwrap();
            println!("acked run {}", run.summary.run_id);
        }
    }
}

fn run_record() -> RunRecord {
    RunRecord {
        summary: RunSummary {
            run_id: engine::schedule::new_run_id(),
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

#[derive(Default)]
struct Acked {
    cases: Vec<u64>,
    comments: Vec<(u64, usize)>,
    seqs: Vec<u64>,
    steps: Vec<String>,
    runs: Vec<String>,
    opened: bool,
}

fn parse(line: &str, acked: &mut Acked) {
    // The harness's `test crash_child ... ` has no newline: the first line follows it.
    let line = line.rsplit(" ... ").next().unwrap_or(line);
    let parts: Vec<&str> = line.split_whitespace().collect();
    let id = |s: &str| s.parse::<CaseId>().map(|c| c.0).unwrap_or(0);
    match parts.as_slice() {
        ["opened"] => acked.opened = true,
        ["acked", "case", c] => acked.cases.push(id(c)),
        ["acked", "comment", c, n] => acked.comments.push((id(c), n.parse().unwrap_or(0))),
        ["acked", "seq", s] => acked.seqs.push(s.parse().unwrap_or(0)),
        ["acked", "step", r] => acked.steps.push(r.to_string()),
        ["acked", "run", r] => acked.runs.push(r.to_string()),
        _ => {}
    }
}

#[tokio::test]
async fn kill_and_reopen_loop_loses_nothing_acknowledged() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed: u64 = std::env::var("CASEFLOW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash loop seed {seed} (set CASEFLOW_CRASH_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut kills, mut during_open, mut writes, mut lost) = (0usize, 0usize, 0usize, Vec::new());
    let started = Instant::now();
    for i in 0..ITERATIONS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let acked = Arc::new(Mutex::new(Acked::default()));
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn({
            let acked = acked.clone();
            move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    parse(&line, &mut acked.lock().unwrap());
                }
            }
        });
        if i % 5 != 0 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !acked.lock().unwrap().opened && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..50)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "iteration {i}: the child must die by the kill"
        );
        kills += 1;
        reader.join().unwrap();
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        if !acked.opened {
            during_open += 1;
        }
        writes += acked.cases.len()
            + acked.comments.len()
            + acked.seqs.len()
            + acked.steps.len()
            + acked.runs.len();

        let store = open_with_retry(dir.path(), true);
        let problems = store.check().await.unwrap();
        assert!(problems.is_empty(), "iteration {i}: {problems:#?}");
        for c in &acked.cases {
            if store.get(CaseId(*c)).await.unwrap().is_none() {
                lost.push(format!("case {c}"));
            }
        }
        for (c, n) in &acked.comments {
            let have = store
                .get(CaseId(*c))
                .await
                .unwrap()
                .map_or(0, |c| c.comments.len());
            if have < *n {
                lost.push(format!("comment {n} of case {c}"));
            }
        }
        for s in &acked.seqs {
            if store.inbox_entry(*s).await.unwrap() != InboxEntry::Queued {
                lost.push(format!("inbox entry {s}"));
            }
        }
        for r in &acked.steps {
            let has = store
                .get_run(r)
                .await
                .unwrap()
                .is_some_and(|r| !r.steps.is_empty());
            if !has {
                lost.push(format!("journal entry of {r}"));
            }
        }
        for r in &acked.runs {
            let done = store
                .get_run(r)
                .await
                .unwrap()
                .is_some_and(|r| r.summary.status == RunState::Succeeded);
            if !done {
                lost.push(format!("end of run {r}"));
            }
        }
        assert!(lost.is_empty(), "iteration {i}: lost {lost:?}");
        drop(store);
    }
    let store = open_with_retry(dir.path(), true);
    let cases = store
        .count(&engine::persist::CaseQuery::all())
        .await
        .unwrap();
    println!(
        "crash loop: {kills} SIGKILLs ({during_open} before the child had opened the store), {writes} acknowledged writes, {} lost, {cases} cases in the store, {:.1} s",
        lost.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(kills, ITERATIONS);
    assert!(
        writes > ITERATIONS,
        "the children acknowledged too little to prove anything"
    );
    assert!(
        during_open <= ITERATIONS / 5,
        "most kills must land while writing"
    );
}
