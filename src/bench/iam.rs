//! `iam`: full IAM chains, from the Okta delivery to the assigned case.
//!
//! Each chain is one suspicious sign-in (`user.session.start`, `FAILURE`) of its own user
//! from its own public IP, delivered to `/hooks/okta`. The shipped IAM playbooks then run
//! against the stand-ins: `iam-preprocess` asks Okta for the user's groups (one user in ten
//! is a VIP: severity, SLA and a stakeholder alert on Slack) and opens a case;
//! `iam-case-created` enriches its IP with AbuseIPDB, VirusTotal and GreyNoise (all say
//! malicious), records the verdicts, raises the severity and moves the case to
//! `in_progress`; `iam-state-changed` assigns it and notifies on Slack. A chain ends when
//! the assignment notification reaches the Slack stand-in.
//!
//! `--concurrency` chains are in flight at a time (a sender posts the next event when its
//! chain ended), so the latency is that of a chain at that load, not of a backlog.
//! Afterwards the server is stopped and the store reopened: every user must have exactly
//! one case, `in_progress`, assigned, with a malicious IP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::cases::{CaseState, ObservableType, Verdict};
use engine::persist::Store;
use engine::persist::{CaseQuery, SledStore, StoreOptions};
use serde_json::{json, Value};

use super::client::Conn;
use super::ingest::{progress_ticker, wait_drained};
use super::standins::{self, StandIns};
use super::{cpu_seconds, progress, round, rss_mb, served, Ctx, Latencies, Outcome};

/// The public IP of chain `i` (45.0.0.0/8 is public, so the providers are asked).
pub fn ip(i: u64) -> String {
    format!(
        "45.{}.{}.{}",
        100 + (i >> 16) % 100,
        (i >> 8) & 255,
        1 + (i & 255) % 254
    )
}

/// The suspicious sign-in that starts chain `i`.
pub fn event(tag: &str, i: u64) -> Value {
    let login = standins::user(tag, i);
    json!({
        "uuid": format!("{tag}-iam-{i:09}"),
        "published": "2026-11-27T08:09:30.000Z",
        "eventType": "user.session.start",
        "version": "0",
        "severity": "WARN",
        "displayMessage": "User login to Okta",
        "actor": {"id": format!("00u{i:08}"), "type": "User", "alternateId": login, "displayName": "Bench User"},
        "client": {"ipAddress": ip(i), "zone": "null", "device": "Computer",
                   "userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Windows", "browser": "CHROME"}},
        "outcome": {"result": "FAILURE", "reason": "INVALID_CREDENTIALS"},
        "target": null,
        "transaction": {"type": "WEB", "id": format!("tx{i}"), "detail": {}},
        "debugContext": {"debugData": {"threatSuspected": "true"}}
    })
}

fn delivery(e: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": "https://acme.okta.com/api/v1/eventHooks/whobench",
        "contentType": "application/json",
        "data": {"events": [e]}
    }))
    .unwrap_or_default()
}

/// What a batch of chains took.
pub struct Chains {
    pub seconds: f64,
    pub lat: Latencies,
    /// Engine CPU seconds over the batch.
    pub cpu: f64,
    /// CPU seconds of this process (the load generator and the stand-ins) over the batch:
    /// what the workload itself takes from the same cores.
    pub harness_cpu: f64,
    /// The server's store commits and flushes over the batch (`/metrics`).
    pub store: served::StoreCounters,
}

impl Chains {
    /// The batch's per-chain figures for `--json`: engine and harness CPU, store commits
    /// and flushes.
    pub fn per_chain(&self, n: u64) -> serde_json::Map<String, Value> {
        let per = |x: f64| json!(round(x / n.max(1) as f64, 3));
        let mut m = serde_json::Map::new();
        m.insert("engine_cpu_ms_per_chain".into(), per(self.cpu * 1e3));
        m.insert(
            "harness_cpu_ms_per_chain".into(),
            per(self.harness_cpu * 1e3),
        );
        m.insert("commits_per_chain".into(), per(self.store.commits));
        m.insert("flushes_per_chain".into(), per(self.store.flushes));
        // The share of the batch's time the store spent flushing (flushes are one at a
        // time: near 1, the disk sets the pace).
        m.insert(
            "flushing_share".into(),
            json!(round(self.store.flush_seconds / self.seconds.max(1e-9), 3)),
        );
        m
    }
}

/// Run chains `first..first + n` with `c` in flight against the server at `addr`.
pub async fn drive(
    server: &served::Served,
    standins: &Arc<StandIns>,
    tag: &str,
    first: u64,
    n: u64,
    c: usize,
    name: &'static str,
) -> Result<Chains, String> {
    let (addr, pid) = (server.addr, server.pid());
    let headers = Arc::new(format!("authorization: {}\r\n", served::HOOK_SECRET));
    let next = Arc::new(AtomicUsize::new(0));
    let store0 = served::store_counters(addr).await?;
    let (cpu0, harness0) = (cpu_seconds(Some(pid)), cpu_seconds(None));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c.min(n as usize).max(1) {
        let (next, headers, standins, tag) = (
            next.clone(),
            headers.clone(),
            standins.clone(),
            tag.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut lat = Latencies::default();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as u64;
                if k >= n {
                    return Ok::<_, String>(lat);
                }
                let i = first + k;
                let body = delivery(event(&tag, i));
                let assigned = standins.expect_assignment(i);
                let t = Instant::now();
                let a = conn
                    .post("/hooks/okta", &headers, &body)
                    .await
                    .map_err(|e| format!("delivery {i}: {e}"))?;
                if a.status != 200 {
                    return Err(format!("delivery {i} answered {}", a.status));
                }
                match tokio::time::timeout(Duration::from_secs(120), assigned).await {
                    Ok(Ok(())) => lat.push(t.elapsed()),
                    _ => {
                        return Err(format!(
                            "chain {i} did not end with an assignment within 120 s"
                        ))
                    }
                }
            }
        }));
    }
    let ticker = progress_ticker(next.clone(), n as usize, name, "chains");
    let mut lat = Latencies::default();
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => lat.extend(l),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(e.to_string())),
        }
    }
    ticker.abort();
    if let Some(e) = failure {
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    let (cpu, harness_cpu) = (cpu_seconds(Some(pid)) - cpu0, cpu_seconds(None) - harness0);
    let store = served::store_counters(addr).await?.since(&store0);
    Ok(Chains {
        seconds,
        lat,
        cpu,
        harness_cpu,
        store,
    })
}

/// Every chain `first..first + n` left one case for its user: `in_progress`, assigned,
/// with a malicious IP. Returns how many were checked.
pub async fn check_cases(store: &dyn Store, tag: &str, first: u64, n: u64) -> Result<u64, String> {
    for i in first..first + n {
        let login = standins::user(tag, i);
        let q = CaseQuery::by_observable(ObservableType::User, login.clone(), 10);
        let cases = store.query(&q).await.map_err(|e| e.to_string())?;
        let [case] = cases.as_slice() else {
            return Err(format!("{login} has {} cases, not 1", cases.len()));
        };
        let malicious = case
            .observables
            .iter()
            .any(|o| o.kind == ObservableType::Ip && o.verdict == Some(Verdict::Malicious));
        if case.state != CaseState::InProgress || case.assignee.is_none() || !malicious {
            return Err(format!(
                "{login}'s case {} is {:?}, assignee {:?}, malicious IP {malicious}",
                case.id, case.state, case.assignee
            ));
        }
    }
    Ok(n)
}

pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, String> {
    let n = ctx.events(2_000);
    let c = ctx.concurrency(64);
    let tag = ctx.tag();
    let standins = Arc::new(StandIns::start(&tag).await.map_err(|e| e.to_string())?);
    let config = served::config(standins.config(), ctx.args.cache_mb, !ctx.args.no_verify);
    let server = served::start(&ctx.exe, &ctx.dir, &config)?;
    progress!(
        "iam: engine serve pid {} on {}; {n} chains, {c} in flight",
        server.pid(),
        server.addr
    );
    // Warm up: connections, the intel client, the first flushes. Its user is chain n.
    let warm = drive(&server, &standins, &tag, n, 1, 1, "iam warm-up").await;
    if let Err(e) = warm {
        return Err(format!("{e}; engine stderr: {}", server.stderr().trim()));
    }
    let chains = match drive(&server, &standins, &tag, 0, n, c, "iam").await {
        Ok(ch) => ch,
        Err(e) => return Err(format!("{e}; engine stderr: {}", server.stderr().trim())),
    };
    let per_chain = chains.per_chain(n);
    let Chains {
        seconds, mut lat, ..
    } = chains;
    progress!("iam: {n} chains in {seconds:.2} s; checking the cases");
    wait_drained(server.addr, Duration::from_secs(60)).await?;
    let (peak, _) = rss_mb(Some(server.pid()));
    let data = server.data.clone();
    server.stop()?;
    let store = SledStore::open_with_options(
        &data,
        StoreOptions {
            verify_on_open: false,
            ..StoreOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let checked = check_cases(&store, &tag, 0, n).await?;
    let mut extra = serde_json::Map::new();
    extra.insert("concurrency".into(), json!(c));
    extra.insert("durability".into(), json!("strict"));
    extra.insert("mean_ms".into(), json!(round(lat.mean_ms(), 3)));
    extra.extend(per_chain);
    extra.insert("cases_checked".into(), json!(checked));
    extra.insert("standin_calls".into(), standins.inner.counters.snapshot());
    Ok(Outcome {
        scenario: "iam",
        events: n,
        seconds,
        p50_ms: lat.ms(0.50),
        p99_ms: lat.ms(0.99),
        peak_rss_mb: peak,
        extra,
    })
}
