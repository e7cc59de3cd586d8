//! Acknowledgement latency of `engine serve` under concurrent Okta event-hook deliveries.
//!
//! Starts the real `engine serve playbooks/iam.yaml` (release build when run with
//! `cargo bench`) on 127.0.0.1:0 with a data dir on disk and strict durability, then, for
//! each concurrency level, sends deliveries from that many concurrent clients (one event
//! each, every uuid distinct) and measures the time from sending a request to its `200`:
//! the event is durably in the inbox by then (group commit). Two workloads:
//!
//! - `iam`: ThreatInsight events from distinct IPs, each starting the IAM pre-processing
//!   playbook (a case per event, then enrichment): acks compete with the runs for the CPU.
//! - `ingest`: events no playbook matches: the cost of acknowledging alone.
//!
//! `cargo bench --bench serve_ack` (env `SERVE_ACK_N`: deliveries per level, default 2000;
//! `SERVE_ACK_LEVELS`: e.g. `1,16,64`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

mod support;
use support::{event, SECRET};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n: usize = std::env::var("SERVE_ACK_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let levels: Vec<usize> = std::env::var("SERVE_ACK_LEVELS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().expect("temp dir");
    let config = tmp.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "okta: {{ directory: playbooks/data/directory.yaml, hook_secret: \"{SECRET}\" }}\n\
             intel: {{ lists: [{{ path: playbooks/data/intel/blocklist.netset, verdict: malicious }}] }}\n\
             teams: {{ soc: [a@example.com], stakeholders: [b@example.com] }}\n"
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_engine"))
        .current_dir(repo)
        .args(["serve", "playbooks/iam.yaml", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .arg("--config")
        .arg(&config)
        .env("CASEFLOW_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("engine starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening on ...")
        .to_string();
    let url = format!("{base}/hooks/okta");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let run = format!("{:x}", std::process::id());

    println!("engine serve acknowledgement latency, {n} deliveries (1 event each) per level");
    println!("| workload | clients | acks/s | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for workload in ["ingest", "iam"] {
        for &clients in &levels {
            let next = Arc::new(AtomicUsize::new(0));
            let offset = clients * 10_000_000 + if workload == "iam" { 1 << 30 } else { 0 };
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let (client, url, next, run) =
                    (client.clone(), url.clone(), next.clone(), run.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return lat;
                        }
                        let body = json!({"data": {"events": [event(workload, offset + i, &run)]}});
                        let t = Instant::now();
                        let r = client
                            .post(&url)
                            .header("authorization", SECRET)
                            .json(&body)
                            .send()
                            .await
                            .expect("request");
                        assert_eq!(r.status(), 200);
                        lat.push(t.elapsed());
                    }
                }));
            }
            let mut all = Vec::with_capacity(n);
            for t in tasks {
                all.extend(t.await.expect("client task"));
            }
            let wall = started.elapsed();
            all.sort();
            println!(
                "| {workload} | {clients} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                n as f64 / wall.as_secs_f64(),
                ms(percentile(&all, 0.50)),
                ms(percentile(&all, 0.90)),
                ms(percentile(&all, 0.99)),
                ms(*all.last().unwrap_or(&Duration::ZERO)),
            );
        }
    }
    // Let the worker catch up, then stop the server the way an operator does.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("engine exits");
    println!("engine serve exited with {status}");
}
