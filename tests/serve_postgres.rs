//! Two `engine serve` processes on one PostgreSQL database (a fresh schema of the test
//! database, see `engine/tests/support/pg.rs`), deliveries spread over both:
//!
//! - one of them is killed with SIGKILL mid-stream three times and restarted; afterwards
//!   no acknowledged event is lost (each has its pre-processing run, finished), no user has
//!   two cases, and every run finished;
//! - a burst of 50 alerts for one user, half to each process, opens one case.
//!
//! No server is a failure with instructions (`.ci/postgres.sh`), never a skip.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "../engine/tests/support/pg_server.rs"]
mod pg_server;
use pg_server::test_url;

const HOOK_SECRET: &str = "Basic b2t0YTpob29rLXNlY3JldA==";
/// In the demo blocklist: the case is escalated and stays open, so later alerts for the
/// same user update it instead of opening another.
const BAD_IP: &str = "203.0.113.9";

mod support {
    pub mod server;
}
use support::server::{engine, repo, Server};

/// A fresh schema, dropped at the end.
struct Schema {
    name: String,
}

impl Schema {
    async fn new() -> Schema {
        let name = format!("serve_{}_{:08x}", std::process::id(), rand::random::<u32>());
        let s = Schema { name };
        // Fail early, with instructions, when there is no server.
        let _ = s.client().await;
        s
    }

    fn url(&self) -> String {
        let base = test_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}schema={}", self.name)
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&test_url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no PostgreSQL server for this test ({e}); start one with `eval \"$(bash .ci/postgres.sh)\"` or set CASEFLOW_TEST_DATABASE_URL"
                )
            });
        tokio::spawn(conn);
        client
    }

    async fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let c = self.client().await;
        c.batch_execute(&format!("SET search_path TO {}", self.name))
            .await
            .unwrap();
        c.query(sql, &[]).await.unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        self.query(sql).await[0].get(0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) =
                    tokio_postgres::connect(&test_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                        ))
                        .await;
                }
            });
        })
        .join();
    }
}

fn config(durability: &str) -> String {
    format!(
        r#"
durability: {durability}
okta:
  directory: playbooks/data/directory.yaml
  vip_groups: [Executives]
  hook_secret: "${{TEST_OKTA_HOOK_SECRET}}"
intel:
  lists:
    - {{ path: playbooks/data/intel/blocklist.netset, verdict: malicious, name: demo-blocklist }}
    - {{ path: playbooks/data/intel/allowlist.netset, verdict: benign, name: demo-allowlist }}
teams:
  soc: [dana.analyst@acme.example, eli.analyst@acme.example]
  stakeholders: [ciso@acme.example]
server:
  api_token: test-api-token-0123456789
http:
  allow_hosts: [127.0.0.1]
"#
    )
}

/// `engine serve` on the database at `url`, its own data dir `dir/name`.
fn start(dir: &Path, name: &str, url: &str) -> Server {
    let mut cmd = engine();
    cmd.args(["serve", "playbooks/iam.yaml", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join(name))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .env("CASEFLOW_DATABASE_URL", url)
        .env("TEST_OKTA_HOOK_SECRET", HOOK_SECRET)
        .env("CASEFLOW_LOG", "warn");
    Server::spawn(cmd)
}

fn alert(uuid: &str, user: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("playbooks/samples/01-nonvip-benign-ip.json"))
        .expect("sample event");
    let mut e: Value = serde_json::from_str(&text).expect("sample is JSON");
    e["uuid"] = json!(uuid);
    e["actor"]["alternateId"] = json!(user);
    e["actor"]["id"] = json!(format!("00u-{user}"));
    e["client"]["ipAddress"] = json!(BAD_IP);
    e["debugContext"]["debugData"]["suspiciousActivityEventIp"] = json!(BAD_IP);
    e
}

fn delivery(events: Vec<Value>) -> Value {
    json!({
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": "https://acme.okta.com/api/v1/eventHooks/who7hphp39JoHLni81d7",
        "eventId": "85b60edb-4263-4e13-993b-818e26201052",
        "contentType": "application/json",
        "data": { "events": events }
    })
}

/// Delivers one event to `base`; true when it was acknowledged (200).
async fn deliver(c: &reqwest::Client, base: &str, event: Value) -> bool {
    match c
        .post(format!("{base}/hooks/okta"))
        .header("authorization", HOOK_SECRET)
        .json(&delivery(vec![event]))
        .send()
        .await
    {
        Ok(r) => r.status() == 200,
        Err(_) => false,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Waits until the shared store is idle: nothing queued, no undelivered case event, no
/// unfinished run.
async fn wait_idle(s: &Schema, secs: u64, servers: &[&Server]) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let busy = s
            .count(
                "SELECT (SELECT count(*) FROM inbox) + (SELECT count(*) FROM case_events)
                      + (SELECT count(*) FROM runs WHERE unfinished)",
            )
            .await;
        if busy == 0 {
            return;
        }
        if Instant::now() > deadline {
            let stderr: Vec<String> = servers.iter().map(|s| s.stderr()).collect();
            panic!("still busy ({busy} left) after {secs}s; stderr: {stderr:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Users with more than one case, and the number of cases per user.
async fn cases_per_user(s: &Schema) -> BTreeMap<String, i64> {
    s.query(
        "SELECT o.value, count(*) FROM case_observables o WHERE o.kind = 'user' GROUP BY o.value",
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn check_cli(url: &str) {
    let o = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["store", "check", "--database-url", url])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("is consistent"), "{out}");
    assert!(!out.contains(":caseflow@"), "no password in output: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_lose_nothing_when_one_is_killed_three_times() {
    let schema = Schema::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config("strict")).unwrap();
    let url = schema.url();
    let mut a = start(dir.path(), "a", &url);
    let b = start(dir.path(), "b", &url);
    let c = client();
    const USERS: usize = 8;
    const EVENTS: usize = 96;
    let mut acked = BTreeSet::new();
    let mut kills = 0;
    let started = Instant::now();
    for i in 0..EVENTS {
        // Kill A every 24 events, while its earlier deliveries are still running, and
        // restart it at once.
        if i > 0 && i % 24 == 0 && kills < 3 {
            assert!(a.kill9(), "the server was running when killed");
            kills += 1;
            a = start(dir.path(), "a", &url);
        }
        let uuid = format!("kill-{i:04}");
        let user = format!("user{}@acme.example", i % USERS);
        let (first, second) = if i % 2 == 0 {
            (&a.base, &b.base)
        } else {
            (&b.base, &a.base)
        };
        // As Okta does: a delivery that was not acknowledged is sent again (here to the
        // other process).
        if deliver(&c, first, alert(&uuid, &user)).await
            || deliver(&c, second, alert(&uuid, &user)).await
        {
            acked.insert(format!("okta:{uuid}"));
        }
    }
    assert_eq!(kills, 3);
    wait_idle(&schema, 120, &[&a, &b]).await;
    let took = started.elapsed();
    // Every acknowledged event has its pre-processing run, and it finished.
    let runs: BTreeMap<String, String> = schema
        .query("SELECT record->>'event_key', status FROM runs WHERE playbook = 'iam-preprocess'")
        .await
        .iter()
        .map(|r| (r.get::<_, Option<String>>(0).unwrap_or_default(), r.get(1)))
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|k| !runs.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never run: {missing:?}"
    );
    assert!(
        acked.len() >= EVENTS - 3,
        "most deliveries acknowledged: {}",
        acked.len()
    );
    let unfinished = schema
        .count("SELECT count(*) FROM runs WHERE status NOT IN ('succeeded', 'failed')")
        .await;
    assert_eq!(unfinished, 0);
    let failed: Vec<String> = schema
        .query("SELECT run_id || ' ' || playbook || ': ' || coalesce(record->>'error', '') FROM runs WHERE status = 'failed'")
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let per_user = cases_per_user(&schema).await;
    assert_eq!(per_user.len(), USERS, "{per_user:?}");
    assert!(
        per_user.values().all(|n| *n == 1),
        "a user with two cases: {per_user:?}"
    );
    let dup_runs = schema
        .count(
            "SELECT count(*) FROM (SELECT record->>'event_key' FROM runs WHERE playbook = 'iam-preprocess'
             GROUP BY 1 HAVING count(*) > 1) d",
        )
        .await;
    assert_eq!(dup_runs, 0, "an event ran twice");
    check_cli(&url);
    let b_log = b.stderr();
    eprintln!(
        "{} events acknowledged of {EVENTS}, 3 kills, idle after {:.1}s; b noticed a dead process {} time(s) and took over runs {} time(s)",
        acked.len(),
        took.as_secs_f64(),
        b_log.matches("engine processes gone").count(),
        b_log.matches("taking over runs").count(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_one_user_over_two_processes_opens_one_case() {
    let schema = Schema::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config("strict")).unwrap();
    let url = schema.url();
    let a = start(dir.path(), "a", &url);
    let b = start(dir.path(), "b", &url);
    let c = client();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let c = c.clone();
        set.spawn(async move {
            deliver(
                &c,
                &base,
                alert(&format!("burst-{i:04}"), "bob.builder@acme.example"),
            )
            .await
        });
    }
    let mut acked = 0;
    while let Some(r) = set.join_next().await {
        acked += usize::from(r.unwrap());
    }
    assert_eq!(acked, 50);
    wait_idle(&schema, 180, &[&a, &b]).await;
    let per_user = cases_per_user(&schema).await;
    assert_eq!(
        per_user.get("bob.builder@acme.example"),
        Some(&1),
        "{per_user:?}"
    );
    assert_eq!(schema.count("SELECT count(*) FROM cases").await, 1);
    let preprocess: Vec<(String, String)> = schema
        .query("SELECT status, coalesce(record->>'error', '') FROM runs WHERE playbook = 'iam-preprocess'")
        .await
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(preprocess.len(), 50);
    assert!(
        preprocess.iter().all(|(s, _)| s == "succeeded"),
        "{preprocess:#?}"
    );
    check_cli(&url);
}

fn engine_cmd() -> Command {
    let mut c = engine();
    c.env_remove("CASEFLOW_DATABASE_URL");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_an_engine_run_deployment_and_hides_the_password() {
    let schema = Schema::new().await;
    let url = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = engine_cmd()
        .args(["run", "playbooks/iam.yaml", "--seed", "1", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list = |args: &[&str]| {
        let o = engine_cmd()
            .args(["cases", "list", "--json"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let on_sled = list(&["--data-dir", data.to_str().unwrap()]);
    let o = engine_cmd()
        .args(["store", "copy", "--from"])
        .arg(&data)
        .args(["--to", &url])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("copied 3 cases"), "{out}");
    assert!(out.contains("the copy is consistent"), "{out}");
    assert!(!out.contains(":caseflow@"), "no password: {out}");
    assert_eq!(list(&["--database-url", &url]), on_sled);
    // The same events again, now on PostgreSQL: the dedup keys came along.
    let o = engine_cmd()
        .args([
            "run",
            "playbooks/iam.yaml",
            "--seed",
            "1",
            "--database-url",
            &url,
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("5 duplicate(s) skipped"), "{text}");
    // A second copy into the same schema is refused.
    let o = engine_cmd()
        .args(["store", "copy", "--from"])
        .arg(&data)
        .args(["--to", &url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("empty database or schema"), "{err}");
    assert!(!err.contains(":caseflow@"), "{err}");
    // --help shows that the variable is read, never its value.
    let o = engine_cmd()
        .args(["serve", "--help"])
        .env("CASEFLOW_DATABASE_URL", "postgres://u:Sup3rS3cret@db/x")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("CASEFLOW_DATABASE_URL"), "{help}");
    assert!(!help.contains("Sup3rS3cret"), "{help}");
    // A wrong password: an error naming the server, not the password.
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    let bad = format!("{scheme}://{user}:Sup3rS3cret@{host}");
    let o = engine_cmd()
        .args(["cases", "list", "--database-url", &bad])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("Sup3rS3cret"), "{err}");
}
