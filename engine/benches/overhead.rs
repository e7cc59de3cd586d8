//! Engine overhead per step: a 50-step playbook of no-op steps, run end to end by
//! [`engine::schedule::execute`].
//!
//! The step does nothing but hand back its input, so the time of a run is the engine's:
//! rendering `with:` and `if:` templates, the scheduling decision, spawning and joining a
//! task per step, and the report. Three shapes stress different parts of it:
//!
//! - `chain`: `s0 -> s1 -> ... -> s49`, each step reading the previous one's output;
//! - `fan`: one root, 48 steps that read it, one step that needs all 48;
//! - `mixed`: 16 "update OR create" diamonds, each with two mutually exclusive `if`
//!   branches and a join, so a third of the steps are skipped.
//!
//! Each shape runs on a current-thread and on a multi-thread tokio runtime. Overhead per
//! step is the time of a run divided by 50 (the `thrpt` line criterion prints is steps per
//! second); a table of µs per step is printed at the end.
//!
//! Run with `cargo bench -p caseflow-engine --bench overhead`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput};
use engine::compile::compile_sources;
use engine::load::parse_source;
use engine::schedule::{execute, RunInput};
use engine::{Plan, Registry, RunStatus, Services, StepContext, StepError, TypedStep};
use serde_json::{json, Map, Value};

/// Steps in every shape.
const STEPS: usize = 50;

/// Hands back its input: all a run costs is the engine.
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

    async fn run(
        &self,
        input: Map<String, Value>,
        _ctx: &StepContext,
    ) -> Result<Map<String, Value>, StepError> {
        Ok(input)
    }
}

fn header(name: &str) -> String {
    format!("playbook: {name}\non:\n  event: bench\nsteps:\n")
}

/// `s0 -> s1 -> ... -> s49`, each step reading the previous one's output.
fn chain() -> String {
    let mut y = header("chain");
    y.push_str("  - id: s0\n    uses: noop\n    with:\n      n: \"{{ event.n }}\"\n");
    for i in 1..STEPS {
        let _ = write!(
            y,
            "  - id: s{i}\n    uses: noop\n    with:\n      n: \"{{{{ steps.s{p}.n }}}}\"\n",
            p = i - 1
        );
    }
    y.push_str("output:\n  n: \"{{ steps.s49.n }}\"\n");
    y
}

/// One root, 48 steps reading it, one step needing all 48.
fn fan() -> String {
    let mut y = header("fan");
    y.push_str("  - id: root\n    uses: noop\n    with:\n      n: \"{{ event.n }}\"\n");
    let middle: Vec<String> = (0..STEPS - 2).map(|i| format!("m{i}")).collect();
    for id in &middle {
        let _ = write!(
            y,
            "  - id: {id}\n    uses: noop\n    with:\n      n: \"{{{{ steps.root.n }}}}\"\n"
        );
    }
    let _ = write!(
        y,
        "  - id: join\n    uses: noop\n    needs: [{}]\n    with:\n      n: \"{{{{ steps.m0.n }}}}\"\n",
        middle.join(", ")
    );
    y.push_str("output:\n  n: \"{{ steps.join.n }}\"\n");
    y
}

/// A root, 16 diamonds (`a` runs when `n > 0`, `b` when not, `j` joins whichever ran), and
/// a last step: 1 + 48 + 1 steps, 16 of them skipped by a false `if`.
fn mixed() -> String {
    let mut y = header("mixed");
    y.push_str("  - id: j0\n    uses: noop\n    with:\n      n: \"{{ event.n }}\"\n");
    let diamonds = (STEPS - 2) / 3;
    for i in 1..=diamonds {
        let p = i - 1;
        let _ = write!(
            y,
            "  - id: a{i}\n    uses: noop\n    if: \"{{{{ steps.j{p}.n > 0 }}}}\"\n    with:\n      n: \"{{{{ steps.j{p}.n }}}}\"\n\
             \x20 - id: b{i}\n    uses: noop\n    if: \"{{{{ steps.j{p}.n <= 0 }}}}\"\n    with:\n      n: \"{{{{ steps.j{p}.n }}}}\"\n\
             \x20 - id: j{i}\n    uses: noop\n    with:\n      n: \"{{{{ (steps.a{i} or steps.b{i}).n }}}}\"\n"
        );
    }
    let _ = write!(
        y,
        "  - id: last\n    uses: noop\n    with:\n      n: \"{{{{ steps.j{diamonds}.n }}}}\"\n"
    );
    y.push_str("output:\n  n: \"{{ steps.last.n }}\"\n");
    y
}

fn compile(yaml: String) -> Arc<Plan> {
    let mut registry = Registry::new();
    registry.register(Noop);
    let source = parse_source(Path::new("bench.yaml"), yaml.into_bytes())
        .unwrap_or_else(|d| panic!("bench playbook does not parse: {d:?}"));
    let bundle = compile_sources(&[source], &registry)
        .unwrap_or_else(|d| panic!("bench playbook does not compile: {d:?}"));
    let plan = bundle.playbooks[0].clone();
    assert_eq!(plan.steps.len(), STEPS);
    plan
}

fn input() -> RunInput {
    RunInput {
        run_id: "bench".into(),
        trigger: "bench".into(),
        event: json!({ "n": 7 }),
        case: None,
        depth: 0,
    }
}

fn runtimes() -> [(&'static str, tokio::runtime::Runtime); 2] {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime");
    let multi = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("multi-thread runtime");
    [("current_thread", current), ("multi_thread", multi)]
}

fn overhead(c: &mut Criterion) {
    let services = Arc::new(Services::default());
    let shapes = [
        ("chain", chain(), 0),
        ("fan", fan(), 0),
        ("mixed", mixed(), (STEPS - 2) / 3),
    ];
    for (shape, yaml, skipped) in shapes {
        let plan = compile(yaml);
        let mut group = c.benchmark_group(shape);
        group.throughput(Throughput::Elements(STEPS as u64));
        for (rt_name, rt) in runtimes() {
            // A benchmark of a run that fails measures the wrong thing: check one first.
            let report = rt.block_on(execute(plan.clone(), input(), services.clone()));
            assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
            assert_eq!(report.output, Some(json!({ "n": 7 })));
            let n_skipped = report
                .steps
                .iter()
                .filter(|s| s.status == engine::schedule::ready::Status::Skipped)
                .count();
            assert_eq!(n_skipped, skipped, "{shape}");
            group.bench_function(BenchmarkId::from_parameter(rt_name), |b| {
                b.iter(|| rt.block_on(execute(plan.clone(), input(), services.clone())))
            });
        }
        group.finish();
    }
}

/// Criterion's estimates as µs per step, for `docs/benchmarks.md`.
fn print_table() {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion");
    let mut rows = Vec::new();
    for shape in ["chain", "fan", "mixed"] {
        for rt in ["current_thread", "multi_thread"] {
            let path = dir.join(shape).join(rt).join("new/estimates.json");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            // Criterion's headline figure is the slope (time per iteration fitted over
            // samples of growing size); the median resists the noise of a shared machine.
            let ns = |k: &str| v[k]["point_estimate"].as_f64();
            let Some(typical) = ns("slope").or_else(|| ns("mean")) else {
                continue;
            };
            let median = ns("median").unwrap_or(f64::NAN);
            rows.push(format!(
                "| {shape} | {rt} | {:.1} | {:.2} | {:.2} |",
                typical / 1000.0,
                typical / 1000.0 / STEPS as f64,
                median / 1000.0 / STEPS as f64,
            ));
        }
    }
    if rows.is_empty() {
        return;
    }
    println!(
        "\nengine overhead per step (latest estimates in {}):\n",
        dir.display()
    );
    println!("| shape | runtime | µs per run | µs per step | µs per step (median) |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    overhead(&mut c);
    c.final_summary();
    // `cargo test --benches` runs each benchmark once and writes no estimates.
    if !std::env::args().any(|a| a == "--test") {
        print_table();
    }
}
