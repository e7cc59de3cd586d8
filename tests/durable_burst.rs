//! Burst: 50 concurrent deliveries of suspicious-activity events for one user, each with
//! its own uuid, through `ingest` and the worker with the IAM playbooks (offline data).
//! The pre-processing playbook's concurrency key (the user) serialises its runs, so the
//! first creates the case and the other 49 update it: exactly one case, 50
//! pre-processing runs. Twenty trials, each on a fresh sled store. The store is relaxed
//! (no flush per step): this test is about ordering, and with strict durability the 50
//! serialised runs spend most of their time in fsync (about 2 s a trial here); the
//! durability tests (`durable_resume`, `store_crash`, `group_commit`) use strict.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caseflow::engine::cases::ObservableType;
use caseflow::engine::notify::Outbox;
use caseflow::engine::persist::{CaseQuery, Durability, RunFilter, SledStore, Store};
use caseflow::engine::{Engine, RunStatus, Services};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const TRIALS: usize = 20;

/// `BURST_TRIALS` overrides the number of trials (profiling, soak runs).
fn trials() -> usize {
    std::env::var("BURST_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(TRIALS)
}
const BURST: usize = 50;
const USER: &str = "bob.builder@acme.example";
/// In the demo blocklist: the case is escalated (in_progress, assigned), so it stays open
/// while later events keep updating it.
const IP: &str = "203.0.113.9";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn event(i: usize) -> Value {
    let text = std::fs::read_to_string(repo().join("playbooks/samples/01-nonvip-benign-ip.json"))
        .expect("sample event");
    let mut e: Value = serde_json::from_str(&text).expect("sample is JSON");
    e["uuid"] = format!("burst-{i:04}").into();
    e["client"]["ipAddress"] = IP.into();
    e["debugContext"]["debugData"]["suspiciousActivityEventIp"] = IP.into();
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_one_user_opens_exactly_one_case() {
    let registry = caseflow::builtin_registry();
    let bundle = caseflow::engine::load_paths(&[repo().join("playbooks/iam.yaml")], &registry)
        .unwrap_or_else(|d| panic!("{d:?}"));
    let config = caseflow::engine::config::load(Some(&repo().join("playbooks/data/config.yaml")))
        .expect("offline config");
    let started = Instant::now();
    for trial in 0..trials() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open_with(dir.path(), Durability::Relaxed).unwrap());
        let mut services = Services::new()
            .with_config(config.clone())
            .with_store(store.clone())
            .with_seed(trial as u64);
        services.insert(Arc::new(Outbox::in_memory()));
        let e = Arc::new(Engine::new(bundle.clone(), services));
        let mut finished = e.subscribe();
        let stop = CancellationToken::new();
        let worker = tokio::spawn(e.clone().run_worker(stop.clone()));

        let mut set = tokio::task::JoinSet::new();
        for i in 0..BURST {
            let e = e.clone();
            set.spawn(async move { e.ingest("okta", vec![event(i)]).await });
        }
        let mut seqs = Vec::new();
        while let Some(r) = set.join_next().await {
            let got = r.unwrap().unwrap();
            assert!(!got[0].duplicate);
            seqs.push(got[0].seq.unwrap());
        }
        for seq in &seqs {
            let runs = e
                .wait_for(*seq, Duration::from_secs(30))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("trial {trial}: inbox entry {seq} did not finish"));
            assert_eq!(runs.len(), 1, "trial {trial}");
            assert_eq!(runs[0].playbook, "iam-preprocess");
            assert_eq!(runs[0].status, RunStatus::Succeeded, "{:?}", runs[0].error);
        }
        // The chain the one case starts: case created (enrich, escalate), state changed
        // (assign, notify).
        let mut chain = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while chain.len() < 2 {
            let r = tokio::time::timeout_at(deadline, finished.recv())
                .await
                .unwrap_or_else(|_| panic!("trial {trial}: the case's chain did not finish"))
                .unwrap();
            if r.playbook != "iam-preprocess" {
                assert_eq!(
                    r.status,
                    RunStatus::Succeeded,
                    "{}: {:?}",
                    r.playbook,
                    r.error
                );
                chain.push(r.playbook.clone());
            }
        }
        chain.sort();
        assert_eq!(
            chain,
            ["iam-case-created", "iam-state-changed"],
            "trial {trial}"
        );
        stop.cancel();
        worker.await.unwrap().unwrap();

        let cases = store.query(&CaseQuery::all()).await.unwrap();
        assert_eq!(cases.len(), 1, "trial {trial}: {} cases", cases.len());
        let case = &cases[0];
        assert!(case.observable(ObservableType::User, USER).is_some());
        assert!(case.state.is_open(), "trial {trial}: {:?}", case.state);
        assert!(case.assignee.is_some(), "trial {trial}");
        // One comment per update: 49 later events.
        assert!(
            case.comments.len() >= BURST - 1,
            "trial {trial}: {} comments",
            case.comments.len()
        );
        let pre = store
            .list_runs(&RunFilter {
                playbook: Some("iam-preprocess".into()),
                limit: 1000,
                ..RunFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(pre.len(), BURST, "trial {trial}");
        let created: usize = pre
            .iter()
            .filter(|r| r.status == caseflow::engine::persist::RunState::Succeeded)
            .count();
        assert_eq!(created, BURST);
        assert!(store.unfinished_runs().await.unwrap().is_empty());
        assert_eq!(store.inbox_depth().await.unwrap(), 0);
        assert!(store.check().await.unwrap().is_empty());
    }
    println!(
        "burst: {} trials of {BURST} concurrent events for one user: one case each, {:.1} s",
        trials(),
        started.elapsed().as_secs_f64()
    );
}
