//! `growth`: what the store's size costs. For each size of `--cases` (ascending), the store
//! is filled up to that many cases, then:
//!
//! - `cases.query` by observable: the store is reopened (sled's cache cold) and 2,000
//!   queries for the user of a random stored case (`observable user`, open states, newest
//!   first, limit 1: the query `iam-preprocess` makes) are timed; `query_us_at_<size>` is
//!   their mean;
//! - a full IAM chain: `engine serve` is started on the store (default options, so the
//!   store is verified at open) and `--events` chains run as in `iam`; `chain_ms_at_<size>`
//!   is their median, `rss_mb_at_<size>` the server's peak RSS.
//!
//! The stored cases look like the IAM playbooks' own: a user and an IP observable, tags
//! `okta`, `iam`, fields, state `new`. They are loaded through the store's API (one create
//! per transaction with its index entries and `case.created` event, the events then
//! acknowledged as a worker would), with relaxed durability: loading 1M takes minutes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::cases::{
    Actor, CaseState, NewCase, NewObservable, ObservableType, Severity, Timestamp,
};
use engine::persist::{
    CaseQuery, CaseRead, CaseSort, CaseWrite, Durability, SledStore, StoreOptions, WriteMeta,
};
use serde_json::{json, Value};

use super::iam::{check_cases, drive};
use super::standins::StandIns;
use super::{progress, round, rss_mb, served, Ctx, Latencies, Outcome};

/// `10k`, `1m`, `2500`.
fn label(n: u64) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}m", n / 1_000_000)
    } else if n >= 1_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn stored_user(i: u64) -> String {
    format!("stored{i}@acme.example")
}

fn stored_case(i: u64) -> NewCase {
    let user = stored_user(i);
    let ip = format!("81.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    let mut fields = serde_json::Map::new();
    fields.insert("okta_event_type".into(), json!("user.session.start"));
    fields.insert("okta_event_uuid".into(), json!(format!("stored-{i:09}")));
    NewCase {
        title: format!("Okta user.session.start: {user}"),
        description: format!(
            "Okta user.session.start at 2026-11-01T00:00:00.000Z (User login to Okta; outcome FAILURE, INVALID_CREDENTIALS) from {ip}."
        ),
        severity: Severity::Medium,
        assignee: None,
        tags: ["okta".to_string(), "iam".to_string()].into_iter().collect(),
        fields,
        observables: vec![
            NewObservable {
                kind: ObservableType::User,
                value: user,
                verdict: None,
                enrichment: Default::default(),
            },
            NewObservable {
                kind: ObservableType::Ip,
                value: ip,
                verdict: None,
                enrichment: Default::default(),
            },
        ],
        sla_policy: None,
        sla_due_at: None,
        dedup_key: None,
    }
}

fn open_store(data: &std::path::Path, durability: Durability) -> Result<SledStore, String> {
    std::fs::create_dir_all(data).map_err(|e| e.to_string())?;
    SledStore::open_with_options(
        data,
        StoreOptions {
            durability,
            verify_on_open: false,
            ..StoreOptions::default()
        },
    )
    .map_err(|e| e.to_string())
}

/// Create cases `from + 1..=to`.
async fn load(store: &SledStore, from: u64, to: u64) -> Result<(), String> {
    let t = Instant::now();
    let mut last = Instant::now();
    let base = Timestamp::now().add_millis(-(to as i64) * 10);
    for i in from + 1..=to {
        let meta = WriteMeta::new(Actor::System, base.add_millis(i as i64 * 10));
        store
            .create(stored_case(i), &meta)
            .await
            .map_err(|e| e.to_string())?;
        if i % 5_000 == 0 || i == to {
            // As a worker would: the `case.created` events are delivered (no playbook
            // would run for them here), so the server starts with nothing pending.
            loop {
                let pending = store
                    .pending_events(10_000)
                    .await
                    .map_err(|e| e.to_string())?;
                if pending.is_empty() {
                    break;
                }
                for e in pending {
                    store.ack_event(e.id).await.map_err(|e| e.to_string())?;
                }
            }
        }
        if last.elapsed() > Duration::from_secs(5) {
            last = Instant::now();
            let done = i - from;
            let rate = done as f64 / t.elapsed().as_secs_f64();
            progress!(
                "growth: loaded {i}/{to} cases ({rate:.0}/s, about {:.0} s left)",
                (to - i) as f64 / rate.max(1.0)
            );
        }
    }
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Mean and p99 µs of `queries` queries by user observable, as `iam-preprocess` asks:
/// a first pass on the freshly opened store (`cold`: every case read comes from the files)
/// and the same queries again (`warm`: what a running server sees for its working set).
async fn time_queries(
    store: &SledStore,
    size: u64,
    queries: u64,
) -> Result<((f64, f64), (f64, f64)), String> {
    let cold = query_pass(store, size, queries).await?;
    let warm = query_pass(store, size, queries).await?;
    Ok((cold, warm))
}

async fn query_pass(store: &SledStore, size: u64, queries: u64) -> Result<(f64, f64), String> {
    let mut lat = Latencies::default();
    for k in 0..queries {
        let i = 1 + (k * 7_919 + 13) % size;
        let q = CaseQuery {
            states: vec![CaseState::New, CaseState::InProgress, CaseState::OnHold],
            sort: CaseSort::CreatedAtDesc,
            ..CaseQuery::by_observable(ObservableType::User, stored_user(i), 1)
        };
        let t = Instant::now();
        let found = store.query(&q).await.map_err(|e| e.to_string())?;
        lat.push(t.elapsed());
        if found.len() != 1 {
            return Err(format!(
                "query for {} found {} cases",
                stored_user(i),
                found.len()
            ));
        }
    }
    Ok((lat.mean_ms() * 1e3, lat.ms(0.99) * 1e3))
}

pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, String> {
    let mut sizes = ctx.args.cases.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() || sizes[0] == 0 {
        return Err("`--cases` needs sizes of at least 1".into());
    }
    let n = ctx.events(200);
    let c = ctx.concurrency(16);
    let tag = ctx.tag();
    let standins = Arc::new(StandIns::start(&tag).await.map_err(|e| e.to_string())?);
    // A reused store (`--store`) says how many cases were loaded and chains run in it.
    let (data, progress_file) = match &ctx.args.store {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
            (dir.join("data"), Some(dir.join("bench-growth.json")))
        }
        None => (ctx.dir.join("data"), None),
    };
    let saved: Value = progress_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let save = |loaded: u64, chains: u64| {
        if let Some(f) = &progress_file {
            let _ = std::fs::write(f, json!({"loaded": loaded, "chains": chains}).to_string());
        }
    };
    let mut extra = serde_json::Map::new();
    let mut per_size = BTreeMap::new();
    let mut loaded = saved["loaded"].as_u64().unwrap_or(0);
    let mut chain_first = saved["chains"].as_u64().unwrap_or(0);
    if loaded > 0 {
        progress!(
            "growth: reusing {loaded} stored cases and {chain_first} chains' cases in {}",
            data.display()
        );
    }
    let mut total_seconds = 0.0;
    let mut last_lat = Latencies::default();
    let mut last_peak = 0.0;
    // Chains of earlier sizes add cases too; they are counted in the size reached.
    for &size in &sizes {
        // A reused store already far past this size cannot measure it: its queries and
        // chains would run on the bigger store (and the ratios would compare it with
        // itself).
        if loaded + chain_first > size + size / 10 {
            progress!(
                "growth: skipping {}: the store in {} holds {} cases already (measure it with a new --store)",
                label(size),
                data.display(),
                loaded + chain_first
            );
            continue;
        }
        let target = size.saturating_sub(chain_first);
        let t_load = Instant::now();
        {
            let store = open_store(&data, Durability::Relaxed)?;
            if target > loaded {
                progress!("growth: loading cases {}..{target}", loaded + 1);
                load(&store, loaded, target).await?;
                loaded = target;
                save(loaded, chain_first);
            }
        }
        let load_seconds = t_load.elapsed().as_secs_f64();
        let disk_mb = dir_size(&data) as f64 / (1024.0 * 1024.0);
        // Queries on a freshly opened store (sled's cache cold, the OS's warm).
        let ((query_us, query_p99_us), (warm_us, warm_p99_us)) = {
            let store = open_store(&data, Durability::Strict)?;
            time_queries(&store, loaded, 2_000).await?
        };
        progress!(
            "growth: {} cases stored ({disk_mb:.0} MB on disk); cases.query by observable {query_us:.1} µs cold (p99 {query_p99_us:.1}), {warm_us:.1} µs warm (p99 {warm_p99_us:.1}); starting engine serve",
            label(size)
        );
        let config = served::config(standins.config(), ctx.args.cache_mb, !ctx.args.no_verify);
        let t_start = Instant::now();
        let server = served::start_on(&ctx.exe, &ctx.dir, &data, &config)?;
        let start_seconds = t_start.elapsed().as_secs_f64();
        let (rss_started, _) = rss_mb(Some(server.pid()));
        let warm = drive(
            &server,
            &standins,
            &tag,
            chain_first,
            1,
            1,
            "growth warm-up",
        )
        .await;
        if let Err(e) = warm {
            return Err(format!("{e}; engine stderr: {}", server.stderr().trim()));
        }
        let chains = match drive(&server, &standins, &tag, chain_first + 1, n, c, "growth").await {
            Ok(ch) => ch,
            Err(e) => return Err(format!("{e}; engine stderr: {}", server.stderr().trim())),
        };
        let (peak, rss_now) = rss_mb(Some(server.pid()));
        server.stop()?;
        {
            let store = open_store(&data, Durability::Strict)?;
            check_cases(&store, &tag, chain_first, n + 1).await?;
        }
        chain_first += n + 1;
        save(loaded, chain_first);
        let per_chain = chains.per_chain(n);
        let mut lat = chains.lat;
        let chain_ms = lat.ms(0.5);
        let l = label(size);
        progress!(
            "growth: {l}: {n} chains in {:.2} s, p50 {chain_ms:.1} ms; server peak RSS {peak:.0} MB",
            chains.seconds
        );
        extra.insert(format!("query_us_at_{l}"), json!(round(query_us, 2)));
        extra.insert(format!("query_warm_us_at_{l}"), json!(round(warm_us, 2)));
        extra.insert(format!("chain_ms_at_{l}"), json!(round(chain_ms, 3)));
        extra.insert(format!("rss_mb_at_{l}"), json!(round(peak, 1)));
        let mut row = json!({
                "cases": size,
                "load_seconds": round(load_seconds, 1),
                "disk_mb": round(disk_mb, 1),
                "query_us": round(query_us, 2),
                "query_p99_us": round(query_p99_us, 2),
                "query_warm_us": round(warm_us, 2),
                "query_warm_p99_us": round(warm_p99_us, 2),
                "serve_start_seconds": round(start_seconds, 2),
                "rss_mb_after_start": round(rss_started, 1),
                "chains": n,
                "chains_per_s": round(n as f64 / chains.seconds.max(1e-9), 1),
                "chain_p50_ms": round(chain_ms, 3),
                "chain_p99_ms": round(lat.ms(0.99), 3),
                "peak_rss_mb": round(peak, 1),
                "rss_mb_after_chains": round(rss_now, 1),
        });
        if let Value::Object(m) = &mut row {
            m.extend(per_chain);
        }
        per_size.insert(size, row);
        total_seconds += chains.seconds;
        last_lat = lat;
        last_peak = peak;
    }
    let first = per_size.values().next().cloned().unwrap_or(Value::Null);
    let last = per_size.values().last().cloned().unwrap_or(Value::Null);
    let measured = per_size.len();
    let ratio = |k: &str| match (first[k].as_f64(), last[k].as_f64()) {
        (Some(a), Some(b)) if a > 0.0 && measured > 1 => json!(round(b / a, 2)),
        _ => Value::Null,
    };
    extra.insert("query_ratio".into(), ratio("query_us"));
    extra.insert("query_warm_ratio".into(), ratio("query_warm_us"));
    extra.insert("chain_ratio".into(), ratio("chain_p50_ms"));
    extra.insert("concurrency".into(), json!(c));
    extra.insert(
        "cache_mb".into(),
        ctx.args.cache_mb.map_or(Value::Null, |m| json!(m)),
    );
    extra.insert("verify_on_open".into(), json!(!ctx.args.no_verify));
    extra.insert(
        "sizes".into(),
        Value::Array(per_size.into_values().collect()),
    );
    Ok(Outcome {
        scenario: "growth",
        events: n * sizes.len() as u64,
        seconds: total_seconds,
        p50_ms: last_lat.ms(0.5),
        p99_ms: last_lat.ms(0.99),
        peak_rss_mb: last_peak,
        extra,
    })
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
