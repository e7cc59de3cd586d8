//! Ingest and IAM throughput of `engine serve` on PostgreSQL with one and with two
//! processes, against the sled store as the baseline measured in the same run.
//!
//! For each setup (`sled, 1 process`, `postgres, 1 process`, `postgres, 2 processes`) it
//! starts the real `engine serve playbooks/iam.yaml` processes (strict durability; the
//! PostgreSQL ones share a fresh schema of `CASEFLOW_TEST_DATABASE_URL`), then:
//!
//! - `ingest`: `PG_BENCH_INGEST` deliveries (default 2000, one event each, no playbook
//!   matches) from 64 concurrent clients spread over the processes: acknowledged events/s.
//! - `iam`: `PG_BENCH_IAM` ThreatInsight events from distinct IPs (default 300; each opens a
//!   case, which is enriched) from 16 clients: IAM chains finished per second, from the first
//!   delivery until every run has finished.
//!
//! `cargo bench --bench pg_throughput` (needs a PostgreSQL server: `eval "$(bash
//! .ci/postgres.sh)"`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use support::{event, SECRET};
const TOKEN: &str = "bench-api-token-0123456789";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start(repo: &Path, dir: &Path, name: &str, url: Option<&str>) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engine"));
    cmd.current_dir(repo)
        .args(["serve", "playbooks/iam.yaml", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join(name))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .env("CASEFLOW_LOG", "error")
        .env_remove("CASEFLOW_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(url) = url {
        cmd.env("CASEFLOW_DATABASE_URL", url);
    }
    let mut child = cmd.spawn().expect("engine starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening on ...")
        .to_string();
    Server { child, base }
}

/// Sends events `0..n` of `workload` from `clients` concurrent clients, round-robin over
/// `bases`; returns the wall time.
async fn send(
    client: &reqwest::Client,
    bases: &[String],
    workload: &'static str,
    n: usize,
    clients: usize,
    run: &str,
) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = format!("{}/hooks/okta", bases[c % bases.len()]);
        let (client, next, run) = (client.clone(), next.clone(), run.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let body = json!({"data": {"events": [event(workload, i, &run)]}});
                let r = client
                    .post(&url)
                    .header("authorization", SECRET)
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    started.elapsed()
}

/// Waits until `want` pre-processing runs exist and nothing runs or waits any more.
async fn wait_done(client: &reqwest::Client, base: &str, want: usize) {
    let get = |path: String| {
        let client = client.clone();
        async move {
            client
                .get(path)
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("api")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut quiet_since: Option<Instant> = None;
    loop {
        let pre = get(format!(
            "{base}/api/runs?playbook=iam-preprocess&limit=1000"
        ))
        .await;
        let done = pre["runs"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|r| r["status"] != "running").count());
        let running = get(format!("{base}/api/runs?status=running&limit=1")).await;
        let depth = get(format!("{base}/healthz")).await["inbox_depth"]
            .as_u64()
            .unwrap_or(1);
        let idle =
            done >= want && running["runs"].as_array().is_some_and(|r| r.is_empty()) && depth == 0;
        match (idle, quiet_since) {
            // Case events may still start runs: idle for 300 ms counts as done.
            (true, Some(t)) if t.elapsed() > Duration::from_millis(300) => return,
            (true, None) => quiet_since = Some(Instant::now()),
            (true, Some(_)) => {}
            (false, _) => quiet_since = None,
        }
        assert!(Instant::now() < deadline, "not done after 600 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let ingest: usize = std::env::var("PG_BENCH_INGEST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let iam: usize = std::env::var("PG_BENCH_IAM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let db = std::env::var("CASEFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://caseflow:caseflow@127.0.0.1:5432/caseflow_test".into());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    println!("engine serve throughput: {ingest} ingest deliveries (64 clients), {iam} IAM chains (16 clients), strict durability");
    println!("| store | processes | ingest acks/s | IAM chains/s | IAM wall s |");
    println!("|---|---:|---:|---:|---:|");
    let mut baseline = None;
    for (store, processes) in [("sled", 1usize), ("postgres", 1), ("postgres", 2)] {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            tmp.path().join("config.yaml"),
            format!(
                "okta: {{ directory: playbooks/data/directory.yaml, hook_secret: \"{SECRET}\" }}\n\
                 intel: {{ lists: [{{ path: playbooks/data/intel/blocklist.netset, verdict: malicious }}] }}\n\
                 teams: {{ soc: [a@example.com], stakeholders: [b@example.com] }}\n\
                 server: {{ api_token: {TOKEN} }}\n"
            ),
        )
        .expect("config");
        let schema = format!("bench_{}_{}", std::process::id(), processes);
        let url = (store == "postgres").then(|| {
            let sep = if db.contains('?') { '&' } else { '?' };
            format!("{db}{sep}schema={schema}")
        });
        let servers: Vec<Server> = (0..processes)
            .map(|p| start(repo, tmp.path(), &format!("data{p}"), url.as_deref()))
            .collect();
        let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
        let run = format!("{:x}{processes}{store}", std::process::id());
        let wall = send(&client, &bases, "ingest", ingest, 64, &run).await;
        let acks = ingest as f64 / wall.as_secs_f64();
        let started = Instant::now();
        send(&client, &bases, "iam", iam, 16, &run).await;
        wait_done(&client, &bases[0], iam).await;
        let iam_wall = started.elapsed().as_secs_f64();
        let chains = iam as f64 / iam_wall;
        let (ra, rc) = match baseline {
            None => {
                baseline = Some((acks, chains));
                (1.0, 1.0)
            }
            Some((a, c)) => (acks / a, chains / c),
        };
        println!(
            "| {store} | {processes} | {acks:.0} ({ra:.2}x) | {chains:.1} ({rc:.2}x) | {iam_wall:.1} |"
        );
        drop(servers);
        if store == "postgres" {
            if let Ok((c, conn)) = tokio_postgres::connect(&db, tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                let _ = c
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
            }
        }
    }
}
