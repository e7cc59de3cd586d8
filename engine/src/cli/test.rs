//! `engine test PATH...`: run playbook tests and report, one line per test, then the
//! differences of each failed test and `N passed, M failed`. Exit 1 on any failure or
//! any problem in a test file (reported like `engine validate`, before anything runs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{print_diagnostics, runtime};
use crate::step::Registry;
use crate::testing::{self, Outcome, Status};

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Test files (`*.test.yaml`) or folders to search for them.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Run only the tests whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TestArgs, make_registry: &dyn Fn() -> Registry) -> Result<ExitCode, String> {
    let files = match testing::discover(&args.paths) {
        Ok(f) => f,
        Err(diags) => {
            print_diagnostics(&diags);
            return Ok(ExitCode::from(1));
        }
    };
    if files.is_empty() {
        let shown: Vec<String> = args
            .paths
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect();
        return Err(format!(
            "no playbook test files (`*.test.yaml`) in {}",
            shown.join(", ")
        ));
    }
    let registry = make_registry();
    let mut diags = Vec::new();
    let mut loaded = Vec::new();
    for f in &files {
        if let Some(t) = testing::load_test_file(f, &registry, &mut diags) {
            loaded.push(Arc::new(t));
        }
    }
    if !diags.is_empty() {
        print_diagnostics(&diags);
        return Ok(ExitCode::from(1));
    }
    if let Some(f) = &args.filter {
        if !loaded
            .iter()
            .any(|t| t.tests.iter().any(|t| t.name.contains(f.as_str())))
        {
            return Err(format!("no test name contains `{f}`"));
        }
    }
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .min(16);
    let (outcomes, filtered_out) = runtime()?.block_on(testing::run_all(
        &loaded,
        args.filter.as_deref(),
        make_registry,
        parallel,
    ));
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    if args.json {
        print_json(&outcomes, filtered_out);
    } else {
        print_report(&outcomes, filtered_out);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_report(outcomes: &[Outcome], filtered_out: usize) {
    for o in outcomes {
        let mark = match o.status {
            Status::Passed => "ok",
            Status::Failed(_) => "FAILED",
            Status::Error(_) => "ERROR",
        };
        println!("{mark:<6} {}:{}: {}", o.file.display(), o.pos.line, o.name);
    }
    let bad: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    if !bad.is_empty() {
        println!("\nfailures:");
    }
    for o in bad {
        println!("\n--- {}:{}: {}", o.file.display(), o.pos.line, o.name);
        match &o.status {
            Status::Passed => {}
            Status::Error(e) => println!("error: {e}"),
            Status::Failed(failures) => {
                for f in failures {
                    println!(
                        "{}:{}:{}: {}",
                        o.file.display(),
                        f.at.line,
                        f.at.col,
                        f.path
                    );
                    println!("    expected: {}", f.expected);
                    println!("    actual:   {}", f.actual);
                }
            }
        }
    }
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    let failed = outcomes.len() - passed;
    let filtered = if filtered_out > 0 {
        format!("; {filtered_out} filtered out")
    } else {
        String::new()
    };
    println!("\n{passed} passed, {failed} failed{filtered}");
}

fn print_json(outcomes: &[Outcome], filtered_out: usize) {
    let tests: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let (status, failures, error) = match &o.status {
                Status::Passed => ("passed", Vec::new(), None),
                Status::Failed(f) => ("failed", f.clone(), None),
                Status::Error(e) => ("error", Vec::new(), Some(e.clone())),
            };
            let failures: Vec<Value> = failures
                .iter()
                .map(|f| {
                    json!({
                        "path": f.path,
                        "at": format!("{}:{}:{}", o.file.display(), f.at.line, f.at.col),
                        "expected": f.expected,
                        "actual": f.actual,
                    })
                })
                .collect();
            let mut t = json!({
                "file": o.file.display().to_string(),
                "line": o.pos.line,
                "name": o.name,
                "status": status,
                "duration_ms": o.duration.as_secs_f64() * 1000.0,
                "failures": failures,
            });
            if let Some(e) = error {
                t["error"] = Value::from(e);
            }
            t
        })
        .collect();
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    let out = json!({
        "tests": tests,
        "passed": passed,
        "failed": outcomes.len() - passed,
        "filtered_out": filtered_out,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
}
