//! `ingest`: Okta event-hook deliveries to `/hooks/okta`, acknowledged durably.
//!
//! `--concurrency` senders (one keep-alive connection each) post deliveries of `--batch`
//! events (successful sign-ins, which no IAM playbook takes: the figure is the cost of
//! acknowledging) until `--events` are acknowledged; the latency of one delivery is from
//! writing the request to reading its `200`, by which time its events are flushed to disk
//! (strict durability; concurrent deliveries share flushes). The worker still takes every
//! event from the inbox and journals that it started nothing; how long it takes to catch up
//! after the last acknowledgement is reported as `drain_seconds`. Afterwards the server is
//! stopped and the store reopened: every event must have its inbox entry, none queued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::persist::{Inbox, Runs};
use engine::persist::{InboxEntry, SledStore, StoreOptions};
use serde_json::{json, Value};

use super::client::Conn;
use super::standins::StandIns;
use super::{cpu_seconds, progress, round, rss_mb, served, Ctx, Latencies, Outcome};

fn event(tag: &str, i: u64) -> Value {
    json!({
        "uuid": format!("{tag}-ingest-{i:09}"),
        "published": "2026-11-27T08:09:30.000Z",
        "eventType": "user.session.start",
        "version": "0",
        "severity": "INFO",
        "displayMessage": "User login to Okta",
        "actor": {"id": format!("00u{i:08}"), "type": "User", "alternateId": format!("user{}@acme.example", i % 5000), "displayName": "A User"},
        "client": {"ipAddress": format!("45.{}.{}.{}", 30 + (i >> 16) % 100, (i >> 8) & 255, i & 255), "zone": "null", "device": "Computer",
                   "userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Mac OS X", "browser": "CHROME"}},
        "outcome": {"result": "SUCCESS", "reason": null},
        "target": null,
        "transaction": {"type": "WEB", "id": format!("tx{i}"), "detail": {}},
        "debugContext": {"debugData": {"requestUri": "/api/v1/authn"}},
        "authenticationContext": {"authenticationStep": 0, "externalSessionId": format!("s{i}")},
        "securityContext": {"asNumber": 64500, "asOrg": "bench", "isp": "bench", "domain": "bench.example", "isProxy": false}
    })
}

fn delivery(events: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": "https://acme.okta.com/api/v1/eventHooks/whobench",
        "eventId": format!("{:x}", events.len()),
        "contentType": "application/json",
        "data": {"events": events}
    }))
    .unwrap_or_default()
}

pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, String> {
    let n = ctx.events(20_000);
    let c = ctx.concurrency(64);
    let batch = ctx.args.batch as u64;
    let tag = ctx.tag();
    let standins = StandIns::start(&tag).await.map_err(|e| e.to_string())?;
    let config = served::config(standins.config(), ctx.args.cache_mb, !ctx.args.no_verify);
    let server = served::start(&ctx.exe, &ctx.dir, &config)?;
    progress!(
        "ingest: engine serve pid {} on {}; {n} events in deliveries of {batch}, {c} in flight",
        server.pid(),
        server.addr
    );
    let bodies: Arc<Vec<(u64, Vec<u8>)>> = Arc::new(
        (0..n)
            .step_by(batch as usize)
            .map(|first| {
                let last = (first + batch).min(n);
                let events = (first..last).map(|i| event(&tag, i)).collect();
                (last - first, delivery(events))
            })
            .collect(),
    );
    let headers = format!("authorization: {}\r\n", served::HOOK_SECRET);
    // Warm up: connections, the first flush, the allocator.
    {
        let mut conn = Conn::new(server.addr);
        let body = delivery(vec![event(&format!("{tag}w"), 0)]);
        let a = conn
            .post("/hooks/okta", &headers, &body)
            .await
            .map_err(|e| format!("warm-up delivery: {e}"))?;
        if a.status != 200 {
            return Err(format!("warm-up delivery answered {}", a.status));
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_seconds(Some(server.pid()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (bodies, next, headers, addr) =
            (bodies.clone(), next.clone(), headers.clone(), server.addr);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut lat = Latencies::default();
            let mut acked = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((events, body)) = bodies.get(i) else {
                    return Ok::<_, String>((lat, acked));
                };
                let t = Instant::now();
                let a = conn
                    .post("/hooks/okta", &headers, body)
                    .await
                    .map_err(|e| format!("delivery {i}: {e}"))?;
                if a.status != 200 {
                    return Err(format!(
                        "delivery {i} answered {}: {}",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    ));
                }
                lat.push(t.elapsed());
                acked += events;
            }
        }));
    }
    let ticker = progress_ticker(next.clone(), bodies.len(), "ingest", "deliveries");
    let mut lat = Latencies::default();
    let mut acked = 0;
    for t in tasks {
        let (l, a) = t.await.map_err(|e| e.to_string())??;
        lat.extend(l);
        acked += a;
    }
    let seconds = started.elapsed().as_secs_f64();
    ticker.abort();
    let cpu = cpu_seconds(Some(server.pid())) - cpu0;
    progress!(
        "ingest: {acked} events acknowledged in {seconds:.2} s; waiting for the worker to drain the inbox"
    );
    let drain = wait_drained(server.addr, Duration::from_secs(600)).await?;
    let (peak, _) = rss_mb(Some(server.pid()));
    let data = server.data.clone();
    server.stop()?;
    // Every acknowledged event is in the store: entries 1..=n+1 (n plus the warm-up)
    // were handed out and none is still queued.
    let store = SledStore::open_with_options(
        &data,
        StoreOptions {
            verify_on_open: false,
            ..StoreOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let last = n + 1;
    let ok_last = matches!(
        store.inbox_entry(last).await.map_err(|e| e.to_string())?,
        InboxEntry::Dispatched(_)
    );
    let beyond = matches!(
        store
            .inbox_entry(last + 1)
            .await
            .map_err(|e| e.to_string())?,
        InboxEntry::Unknown
    );
    let depth = store.inbox_depth().await.map_err(|e| e.to_string())?;
    if !(ok_last && beyond && depth == 0) {
        return Err(format!(
            "the store does not hold the acknowledged events: entry {last} dispatched: {ok_last}, entry {} unknown: {beyond}, inbox depth {depth}",
            last + 1
        ));
    }
    let mut extra = serde_json::Map::new();
    extra.insert("deliveries".into(), json!(lat.len()));
    extra.insert("events_per_delivery".into(), json!(batch));
    extra.insert("concurrency".into(), json!(c));
    extra.insert("durability".into(), json!("strict"));
    extra.insert("p50_ms_is".into(), json!("per delivery"));
    extra.insert("mean_ms".into(), json!(round(lat.mean_ms(), 3)));
    extra.insert("drain_seconds".into(), json!(round(drain, 3)));
    extra.insert(
        "engine_cpu_us_per_event".into(),
        json!(round(cpu * 1e6 / acked.max(1) as f64, 1)),
    );
    extra.insert("stored".into(), json!(true));
    Ok(Outcome {
        scenario: "ingest",
        events: acked,
        seconds,
        p50_ms: lat.ms(0.50),
        p99_ms: lat.ms(0.99),
        peak_rss_mb: peak,
        extra,
    })
}

/// Seconds until `/healthz` says the inbox is empty.
pub async fn wait_drained(addr: std::net::SocketAddr, limit: Duration) -> Result<f64, String> {
    let t = Instant::now();
    let mut conn = Conn::new(addr);
    loop {
        let a = conn.get("/healthz").await.map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        if v["inbox_depth"].as_u64() == Some(0) {
            return Ok(t.elapsed().as_secs_f64());
        }
        if t.elapsed() > limit {
            return Err(format!("the inbox did not drain within {limit:?}: {v}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints `done/total` every two seconds until aborted.
pub fn progress_ticker(
    next: Arc<AtomicUsize>,
    total: usize,
    name: &'static str,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let t = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let done = next.load(Ordering::Relaxed).min(total);
            progress!(
                "{name}: {done}/{total} {what} sent after {:.0} s",
                t.elapsed().as_secs_f64()
            );
        }
    })
}
