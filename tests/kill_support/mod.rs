//! Shared by the kill tests: the real `engine serve` as a child process that can be
//! SIGKILLed and started again on the same data dir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const HOOK_SECRET: &str = "Basic b2t0YTpraWxsLWxvb3Atc2VjcmV0";
pub const API_TOKEN: &str = "kill-loop-api-token-5e0c2a";

pub use crate::support::server::{engine, repo};

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Playbook files or directories (relative to the repository, or absolute).
    pub playbooks: Vec<PathBuf>,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    /// `CASEFLOW_LOG` of the child (`warn` when empty).
    pub log: String,
}

pub use crate::support::server::Server;

/// Starts the server and waits for its `listening on http://ADDR` line.
pub fn start(spec: &Spec) -> Server {
    let mut cmd = engine();
    cmd.arg("serve")
        .args(&spec.playbooks)
        .args(["--listen", "127.0.0.1:0", "--seed", "7"])
        .arg("--data-dir")
        .arg(&spec.data_dir)
        .arg("--config")
        .arg(&spec.config)
        .env("TEST_OKTA_HOOK_SECRET", HOOK_SECRET)
        .env("TEST_CASEFLOW_API_TOKEN", API_TOKEN)
        .env(
            "CASEFLOW_LOG",
            if spec.log.is_empty() {
                "warn"
            } else {
                &spec.log
            },
        );
    Server::spawn(cmd)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// `GET path` with the API token; panics unless 200.
pub async fn api(c: &reqwest::Client, s: &Server, path: &str) -> Value {
    let r = c
        .get(s.url(path))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// The runs of the journal with this query; panics when the API's largest listing (1000)
/// may have cut it short.
pub async fn runs(c: &reqwest::Client, s: &Server, query: &str) -> Vec<Value> {
    let sep = if query.is_empty() { "" } else { "&" };
    let list = api(c, s, &format!("/api/runs?limit=1000{sep}{query}")).await["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        list.len() < 1000,
        "`/api/runs?{query}` lists 1000 runs or more: the listing may be cut short (make the run smaller)"
    );
    list
}

/// Every run of these playbooks, listed per playbook and status (each listing of the API
/// holds at most 1000 runs).
pub async fn all_runs(c: &reqwest::Client, s: &Server, playbooks: &[&str]) -> Vec<Value> {
    let mut all = Vec::new();
    for p in playbooks {
        for status in ["running", "parked", "failed", "succeeded"] {
            all.extend(runs(c, s, &format!("playbook={p}&status={status}")).await);
        }
    }
    all
}

/// The inbox depth from `/healthz`.
pub async fn inbox_depth(c: &reqwest::Client, s: &Server) -> u64 {
    let v: Value = c
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["inbox_depth"].as_u64().expect("inbox_depth")
}

/// Waits until the server has nothing left to do: the inbox is empty, no run (of
/// `playbooks`) is running or parked, and the number of runs in the journal stayed the
/// same for `quiet`, or `done` (given every run) says so. Returns every run; panics after
/// `limit`.
pub async fn drained<F>(
    c: &reqwest::Client,
    s: &Server,
    playbooks: &[&str],
    quiet: Duration,
    limit: Duration,
    mut done: F,
) -> Vec<Value>
where
    F: FnMut(&[Value]) -> bool,
{
    let deadline = Instant::now() + limit;
    let mut last = (usize::MAX, Instant::now());
    loop {
        let depth = inbox_depth(c, s).await;
        let all = all_runs(c, s, playbooks).await;
        let open = all
            .iter()
            .filter(|r| r["status"] == "running" || r["status"] == "parked")
            .count();
        if depth == 0 && open == 0 {
            if done(&all) {
                return all;
            }
            if all.len() != last.0 {
                last = (all.len(), Instant::now());
            } else if last.1.elapsed() >= quiet {
                return all;
            }
        } else {
            last = (usize::MAX, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "not drained after {limit:?}: inbox depth {depth}, {open} runs running or parked of {}; stderr:\n{}",
            all.len(),
            tail(&s.stderr(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs the worker said it resumed at start-up (`resuming unfinished runs runs=N`, logged
/// at `info` by `engine::schedule::worker`).
pub fn resumed_runs(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("resuming unfinished runs"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("runs="))
                .and_then(|n| n.parse::<usize>().ok())
        })
        .sum()
}

/// `engine store check --data-dir DIR` (the server must be stopped): its exit code and
/// output.
pub fn store_check(data_dir: &Path) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_engine"))
        .current_dir(repo())
        .args(["store", "check", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("engine store check runs");
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}
