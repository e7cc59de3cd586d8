//! `engine bench` runs: every scenario at a small size, its JSON, and the cases it leaves.
//! A benchmark measures; this test only checks that the command does what it says.

use std::path::{Path, PathBuf};
use std::process::Command;

use engine::cases::{CaseState, ObservableType, Verdict};
use engine::persist::{CaseQuery, CaseRead, SledStore, StoreOptions};
use serde_json::Value;

fn kept(root: &Path, scenario: &str) -> PathBuf {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("caseflow-bench-{scenario}-")))
        })
        .unwrap_or_else(|| panic!("no kept directory for {scenario} in {}", root.display()))
}

fn open(data: &Path) -> SledStore {
    SledStore::open_with_options(
        data,
        StoreOptions {
            verify_on_open: false,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_its_cases_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args([
            "bench",
            "--scenario",
            "ingest,iam,steps,growth",
            "--events",
            "12",
            "--concurrency",
            "4",
            "--batch",
            "3",
            "--cases",
            "150,300",
            "--json",
            "--keep",
            "--dir",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    // Progress went to stderr, figures to stdout.
    assert!(stderr.contains("bench: iam:"), "{stderr}");
    let objects: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ingest", "iam", "steps", "growth"]);
    for o in &objects {
        for k in [
            "events",
            "seconds",
            "events_per_s",
            "p50_ms",
            "p99_ms",
            "peak_rss_mb",
        ] {
            assert!(o[k].is_number(), "{k} in {o}");
        }
        assert!(o["events"].as_u64().unwrap() > 0, "{o}");
        assert!(o["peak_rss_mb"].as_f64().unwrap() > 1.0, "{o}");
    }
    let [ingest, iam, steps, growth] = &objects[..] else {
        unreachable!()
    };
    assert_eq!(ingest["events"], 12);
    assert_eq!(ingest["events_per_delivery"], 3);
    assert_eq!(ingest["deliveries"], 4);
    assert_eq!(ingest["stored"], true);
    assert_eq!(iam["events"], 12);
    assert_eq!(iam["cases_checked"], 12);
    assert_eq!(iam["standin_calls"]["refused"], 0);
    assert!(iam["standin_calls"]["slack_assigned"].as_u64().unwrap() >= 12);
    // A chain writes cases and journals three runs: several commits, at least one flush
    // (strict durability), read from the server's /metrics.
    assert!(iam["commits_per_chain"].as_f64().unwrap() >= 5.0, "{iam}");
    assert!(iam["flushes_per_chain"].as_f64().unwrap() > 0.0, "{iam}");
    for k in ["engine_cpu_ms_per_chain", "harness_cpu_ms_per_chain"] {
        assert!(iam[k].as_f64().unwrap() >= 0.0, "{k} in {iam}");
    }
    let sizes = growth["sizes"].as_array().unwrap();
    assert!(
        sizes[1]["commits_per_chain"].as_f64().unwrap() >= 5.0,
        "{growth}"
    );
    assert!(steps["overhead_us_per_step"].as_f64().unwrap() > 0.0);
    assert_eq!(steps["steps_per_run"], 50);
    for k in ["query_us_at_150", "query_us_at_300", "chain_ms_at_300"] {
        assert!(growth[k].as_f64().unwrap() > 0.0, "{k} in {growth}");
    }
    assert_eq!(growth["sizes"].as_array().unwrap().len(), 2);

    // The IAM chains left one assigned, in-progress case per user, with a malicious IP
    // (12 chains and the warm-up's).
    let iam_dir = kept(tmp.path(), "iam");
    let store = open(&iam_dir.join("data"));
    let cases = store
        .query(&CaseQuery {
            tag: Some("iam".into()),
            ..CaseQuery::all()
        })
        .await
        .unwrap();
    assert_eq!(cases.len(), 13, "{cases:#?}");
    for c in &cases {
        assert_eq!(c.state, CaseState::InProgress, "{c:#?}");
        assert!(c.assignee.is_some(), "{c:#?}");
        assert!(c
            .observables
            .iter()
            .any(|o| o.kind == ObservableType::Ip && o.verdict == Some(Verdict::Malicious)));
    }
    drop(store);

    // Growth stored its cases, plus the chains' own.
    let growth_dir = kept(tmp.path(), "growth");
    let store = open(&growth_dir.join("data"));
    let all = store.count(&CaseQuery::all()).await.unwrap();
    assert!(all >= 300, "{all} cases");
    let stored = store
        .query(&CaseQuery::by_observable(
            ObservableType::User,
            "stored150@acme.example",
            5,
        ))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
}

#[test]
fn bench_is_listed_and_refuses_nonsense() {
    let help = Command::new(env!("CARGO_BIN_EXE_engine"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("bench ")),
        "{text}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["bench", "--scenario", "everything"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let zero = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["bench", "--scenario", "steps", "--events", "0"])
        .output()
        .unwrap();
    assert_eq!(zero.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--events"));
}

/// `growth --store`: a second run on the same store measures the sizes it has reached,
/// skips one the store is already far past (its figures would be the bigger store's), and
/// gives no ratio from a single size.
#[test]
fn growth_on_a_reused_store_skips_the_sizes_it_is_past() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let run = |cases: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_engine"))
            .args([
                "bench",
                "--scenario",
                "growth",
                "--events",
                "4",
                "--concurrency",
                "2",
                "--cases",
                cases,
                "--json",
                "--dir",
            ])
            .arg(tmp.path())
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
        let json: Value = serde_json::from_str(stdout.trim()).unwrap();
        (json, stderr)
    };
    let (first, _) = run("100,400");
    assert_eq!(first["sizes"].as_array().unwrap().len(), 2, "{first}");
    assert!(first["query_ratio"].as_f64().is_some(), "{first}");

    let (again, stderr) = run("100,400");
    let sizes: Vec<u64> = again["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cases"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [400], "{again}");
    assert!(stderr.contains("skipping 100"), "{stderr}");
    assert!(again["query_ratio"].is_null(), "{again}");
    assert!(again.get("query_us_at_100").is_none(), "{again}");
    assert!(again["query_us_at_400"].as_f64().unwrap() > 0.0, "{again}");
}
