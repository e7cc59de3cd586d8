//! `steps`: the engine's cost per step, without I/O.
//!
//! A 50-step chain of no-op steps (`s0 -> s1 -> ... -> s49`, each rendering a `with:` that
//! reads the previous step's output) is compiled once, then run `--events` times with
//! `--concurrency` runs in flight by [`engine::schedule::execute`] on this process's
//! multi-thread runtime (the one `engine serve` uses): template rendering, the scheduling
//! decision, a task per step, recording outputs, the report. No store, no journal.
//!
//! `overhead_us_per_step` is the CPU time the process spent divided by the steps run: what
//! a step costs whatever the parallelism. `wall_us_per_step` is a run's median duration
//! divided by 50, which adds the hand-offs between worker threads (each step of a chain
//! waits for the one before it).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use engine::compile::compile_sources;
use engine::load::parse_source;
use engine::schedule::{execute, RunInput};
use engine::{Registry, RunStatus, Services, StepContext, StepError, TypedStep};
use serde_json::{json, Map, Value};

use super::{cpu_seconds, progress, round, rss_mb, Ctx, Latencies, Outcome};

/// Steps in the chain.
pub const STEPS: usize = 50;

/// Hands back its input: all a run costs is the engine.
struct Noop;

#[async_trait]
impl TypedStep for Noop {
    type Input = Map<String, Value>;
    type Output = Map<String, Value>;
    const NAME: &'static str = "bench.noop";

    fn description(&self) -> &'static str {
        "Return the input unchanged (engine bench)."
    }

    fn example(&self) -> Value {
        json!({ "n": 1 })
    }

    async fn run(
        &self,
        input: Map<String, Value>,
        _ctx: &StepContext,
    ) -> Result<Map<String, Value>, StepError> {
        Ok(input)
    }
}

fn chain() -> String {
    let mut y = String::from("playbook: bench-chain\non:\n  event: bench\nsteps:\n");
    y.push_str("  - id: s0\n    uses: bench.noop\n    with:\n      n: \"{{ event.n }}\"\n");
    for i in 1..STEPS {
        let _ = write!(
            y,
            "  - id: s{i}\n    uses: bench.noop\n    with:\n      n: \"{{{{ steps.s{p}.n }}}}\"\n",
            p = i - 1
        );
    }
    let _ = write!(y, "output:\n  n: \"{{{{ steps.s{}.n }}}}\"\n", STEPS - 1);
    y
}

pub async fn run(ctx: &Ctx<'_>, mut registry: Registry) -> Result<Outcome, String> {
    let n = ctx.events(2_000);
    let c = ctx.concurrency(8);
    registry.register(Noop);
    let source = parse_source(Path::new("bench-chain.yaml"), chain().into_bytes())
        .map_err(|d| d.to_string())?;
    let bundle = compile_sources(&[source], &registry).map_err(|ds| {
        ds.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let plan = bundle.playbooks[0].clone();
    let services = Arc::new(Services::default());
    let input = |k: usize| RunInput {
        run_id: format!("bench-{k}"),
        trigger: "bench".into(),
        event: json!({ "n": k }),
        case: None,
        depth: 0,
    };
    // A run that fails measures the wrong thing: check one first (and warm up).
    for k in 0..20 {
        let r = execute(plan.clone(), input(k), services.clone()).await;
        if r.status != RunStatus::Succeeded || r.output != Some(json!({ "n": k })) {
            return Err(format!("the no-op chain did not run: {:?}", r.error));
        }
    }
    progress!("steps: {n} runs of {STEPS} no-op steps, {c} in flight");
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_seconds(None);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (plan, services, next) = (plan.clone(), services.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            let mut ok = 0u64;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n as usize {
                    return (lat, ok);
                }
                let t = Instant::now();
                let r = execute(plan.clone(), input(k), services.clone()).await;
                lat.push(t.elapsed());
                ok += u64::from(r.status == RunStatus::Succeeded);
            }
        }));
    }
    let mut lat = Latencies::default();
    let mut ok = 0;
    for t in tasks {
        let (l, k) = t.await.map_err(|e| e.to_string())?;
        lat.extend(l);
        ok += k;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(None) - cpu0;
    if ok != n {
        return Err(format!("{} of {n} runs failed", n - ok));
    }
    let steps = (n as usize * STEPS) as f64;
    let p50 = lat.ms(0.50);
    let mut extra = serde_json::Map::new();
    extra.insert("steps_per_run".into(), json!(STEPS));
    extra.insert("concurrency".into(), json!(c));
    extra.insert(
        "overhead_us_per_step".into(),
        json!(round(cpu * 1e6 / steps, 2)),
    );
    extra.insert(
        "wall_us_per_step".into(),
        json!(round(p50 * 1e3 / STEPS as f64, 2)),
    );
    extra.insert(
        "steps_per_s".into(),
        json!(round(steps / seconds.max(1e-9), 0)),
    );
    Ok(Outcome {
        scenario: "steps",
        events: n,
        seconds,
        p50_ms: p50,
        p99_ms: lat.ms(0.99),
        peak_rss_mb: rss_mb(None).0,
        extra,
    })
}
