//! What durability costs, on this machine's disk:
//!
//! 1. **Ingest**: events acknowledged durably per second and the p50/p99 acknowledgement
//!    latency, for 1 to 256 concurrent callers of `Engine::ingest` on a strict sled store,
//!    with the flushes counted. One caller is the baseline without group commit (each
//!    event waits for its own flush); `relaxed` acknowledges without flushing.
//! 2. **Journal**: a 50-step chain of no-op steps run through `Engine::handle_once` (inbox,
//!    run record, a journal entry per step, a sync before each step), in µs per step, on a
//!    memory store (the same path without a disk: the baseline) and on sled, relaxed and
//!    strict. The executor alone is measured by the `overhead` bench.
//! 3. **verify_on_open**: opening a store of 10k and 50k cases with and without reading
//!    every record.
//!
//! Run with `cargo bench -p caseflow-engine --bench durability` (`DURABILITY_QUICK=1` for
//! a short run).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine::cases::{Actor, NewCase, NewObservable, ObservableType, Severity, Timestamp};
use engine::persist::{
    CaseWrite, Durability, MemoryStore, SledStore, Store, StoreOptions, WriteMeta,
};
use engine::{Engine, Registry, RunStatus, Services, StepContext, StepError, TypedStep};
use serde_json::{json, Map, Value};

struct Noop;

#[async_trait]
impl TypedStep for Noop {
    type Input = Map<String, Value>;
    type Output = Map<String, Value>;
    const NAME: &'static str = "noop";
    fn description(&self) -> &'static str {
        "Return the input unchanged."
    }
    fn example(&self) -> Value {
        json!({ "n": 1 })
    }
    async fn run(&self, input: Self::Input, _: &StepContext) -> Result<Self::Output, StepError> {
        Ok(input)
    }
}

fn quick() -> bool {
    std::env::var_os("DURABILITY_QUICK").is_some()
}

fn open(dir: &Path, durability: Durability, verify: bool) -> SledStore {
    SledStore::open_with_options(
        dir,
        StoreOptions {
            durability,
            verify_on_open: verify,
            ..StoreOptions::default()
        },
    )
    .expect("store opens")
}

fn empty_engine(store: Arc<dyn Store>) -> Arc<Engine> {
    let bundle = engine::compile::compile_sources(&[], &Registry::new()).expect("empty bundle");
    Arc::new(Engine::new(bundle, Services::new().with_store(store)))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn ingest(callers: usize, events: usize, durability: Durability) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(open(dir.path(), durability, false));
    let e = empty_engine(store.clone());
    let before = store.stats();
    let per = events / callers;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..callers {
        let e = e.clone();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let ev =
                    json!({"uuid": format!("{c}-{i}"), "eventType": "user.session.start", "n": i});
                let t = Instant::now();
                e.ingest("okta", vec![ev]).await.expect("ingest");
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut lat = Vec::with_capacity(events);
    while let Some(r) = set.join_next().await {
        lat.extend(r.expect("caller"));
    }
    let elapsed = started.elapsed();
    lat.sort();
    let after = store.stats();
    let n = lat.len();
    format!(
        "| {callers} | {} | {n} | {:.0} | {:.2} | {:.2} | {} | {:.2} |",
        match durability {
            Durability::Strict => "strict",
            Durability::Relaxed => "relaxed",
        },
        n as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        after.flushes - before.flushes,
        (after.flush_micros - before.flush_micros) as f64
            / 1e3
            / (after.flushes - before.flushes).max(1) as f64,
    )
}

const STEPS: usize = 50;

fn chain() -> String {
    let mut y = String::from("playbook: chain\non: { event: t }\nsteps:\n");
    y.push_str("  - id: s0\n    uses: noop\n    with: { n: \"{{ event.n }}\" }\n");
    for i in 1..STEPS {
        y.push_str(&format!(
            "  - id: s{i}\n    uses: noop\n    with: {{ n: \"{{{{ steps.s{}.n + 1 }}}}\" }}\n",
            i - 1
        ));
    }
    y
}

async fn journal(kind: &str, runs: usize) -> String {
    let mut registry = Registry::new();
    registry.register(Noop);
    let src =
        engine::load::parse_source(Path::new("chain.yaml"), chain().into_bytes()).expect("parses");
    let bundle = engine::compile::compile_sources(&[src], &registry).expect("compiles");
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = match kind {
        "memory store" => Arc::new(MemoryStore::new()),
        "sled relaxed" => Arc::new(open(dir.path(), Durability::Relaxed, false)),
        _ => Arc::new(open(dir.path(), Durability::Strict, false)),
    };
    // The first runs of a kind warm allocators and caches: untimed.
    let warmup = runs / 5;
    let mut started = Instant::now();
    for i in 0..runs + warmup {
        if i == warmup {
            started = Instant::now();
        }
        let e = Engine::new(bundle.clone(), Services::new().with_store(store.clone()));
        let mut h = e
            .handle_once("t", json!({"n": 0}), None)
            .await
            .expect("runs");
        let report = h.runs.remove(0);
        assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    }
    let per_step = started.elapsed().as_secs_f64() * 1e6 / (runs * STEPS) as f64;
    format!("| {kind} | {runs} | {per_step:.1} |")
}

async fn verify(cases: usize) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let s = open(dir.path(), Durability::Relaxed, false);
        for i in 0..cases {
            let mut n = NewCase::new(format!("case {i}"), Severity::Medium);
            n.observables = vec![NewObservable::new(
                ObservableType::Ip,
                format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            )];
            s.create(n, &WriteMeta::new(Actor::System, Timestamp::now()))
                .await
                .expect("create");
        }
    }
    let time_open = |verify: bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = Instant::now();
            match SledStore::open_with_options(
                dir.path(),
                StoreOptions {
                    verify_on_open: verify,
                    ..StoreOptions::default()
                },
            ) {
                Ok(s) => {
                    let d = t.elapsed();
                    drop(s);
                    return d;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    let plain = time_open(false);
    let verified = time_open(true);
    format!(
        "| {cases} | {:.0} | {:.0} |",
        plain.as_secs_f64() * 1e3,
        verified.as_secs_f64() * 1e3
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let events = if quick() { 1000 } else { 4000 };
    println!("## Ingest ({events} events each)\n");
    println!("| callers | durability | events | acked/s | p50 ms | p99 ms | flushes | ms/flush |");
    println!("|---|---|---|---|---|---|---|---|");
    for (callers, d) in [
        (1, Durability::Strict),
        (8, Durability::Strict),
        (64, Durability::Strict),
        (256, Durability::Strict),
        (64, Durability::Relaxed),
    ] {
        let n = if callers == 1 { events / 4 } else { events };
        println!("{}", rt.block_on(ingest(callers, n, d)));
    }
    let runs = if quick() { 20 } else { 100 };
    println!("\n## Journal: 50-step chain, µs per step\n");
    println!("| path | runs | µs/step |");
    println!("|---|---|---|");
    for kind in ["memory store", "sled relaxed", "sled strict"] {
        println!("{}", rt.block_on(journal(kind, runs)));
    }
    println!("\n## Open, with and without verify_on_open\n");
    println!("| cases | open ms | open + verify ms |");
    println!("|---|---|---|");
    let sizes: &[usize] = if quick() { &[2_000] } else { &[10_000, 50_000] };
    for n in sizes {
        println!("{}", rt.block_on(verify(*n)));
    }
}
