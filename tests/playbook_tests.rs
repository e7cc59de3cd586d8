//! `engine test`, the real binary: the shipped IAM tests pass, a deliberately wrong test
//! file fails with a diff naming each wrong field (snapshotted), `--json` and `--filter`,
//! and invalid test files are reported like invalid playbooks (each code snapshotted).
//!
//! Fixtures: `tests/fixtures/playbook-tests/wrong/` (runs, with wrong expectations) and
//! `tests/fixtures/playbook-tests/invalid/eNNN-what-is-wrong.test.yaml` (does not load; the
//! first diagnostic has the code of its name).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `engine test ARGS` from the repository root, as CI runs it (the offline config's
/// paths are relative to it).
fn engine_test(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .current_dir(repo())
        .arg("test")
        .args(args)
        .output()
        .expect("engine runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const WRONG: &str = "tests/fixtures/playbook-tests/wrong";

#[test]
fn the_shipped_playbook_tests_pass() {
    let o = engine_test(&["playbooks/"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    let summary = out.lines().last().unwrap_or_default();
    let passed: usize = summary
        .split(" passed")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in {out}"));
    assert!(passed >= 10, "{out}");
    assert!(summary.ends_with(", 0 failed"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), passed);
    // Notifications are recorded for the report, not printed over it.
    assert!(!stderr(&o).contains("notify CASE-"), "{}", stderr(&o));
}

#[test]
fn a_wrong_expectation_fails_with_a_diff_per_field() {
    let o = engine_test(&[WRONG]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    insta::assert_snapshot!("wrong_expectations_report", stdout(&o));
}

#[test]
fn json_reports_each_failure_with_its_place() {
    let o = engine_test(&[WRONG, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out: Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!(out["passed"], 1);
    assert_eq!(out["failed"], 1);
    let tests = out["tests"].as_array().expect("tests");
    assert_eq!(tests[0]["status"], "passed");
    assert_eq!(tests[1]["status"], "failed");
    assert_eq!(tests[1]["name"], "wrong about the VIP case");
    let failures = tests[1]["failures"].as_array().expect("failures");
    let severity = failures
        .iter()
        .find(|f| f["path"] == "cases[0].severity")
        .expect("the severity is wrong");
    assert_eq!(severity["expected"], "\"high\"");
    assert_eq!(severity["actual"], "\"critical\"");
    assert_eq!(
        severity["at"],
        format!("{WRONG}/iam-wrong.test.yaml:21:21").as_str()
    );
}

#[test]
fn filter_runs_only_matching_tests() {
    let o = engine_test(&[WRONG, "--filter", "right about"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("right about the benign case"), "{out}");
    assert!(!out.contains("wrong about"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("1 passed, 0 failed; 1 filtered out"),
        "{out}"
    );
    let none = engine_test(&[WRONG, "--filter", "no such test"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("no test name contains `no such test`"));
}

fn invalid_fixtures() -> Vec<PathBuf> {
    let dir = repo().join("tests/fixtures/playbook-tests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("invalid fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

#[test]
fn every_invalid_test_file_is_reported_with_its_code_and_snapshot() {
    for f in invalid_fixtures() {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".test.yaml"))
            .expect("fixtures are named eNNN-*.test.yaml")
            .to_string();
        let code = name.split('-').next().unwrap_or_default().to_uppercase();
        let rel = format!("tests/fixtures/playbook-tests/invalid/{name}.test.yaml");
        let o = engine_test(&[&rel]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(o.stdout.is_empty(), "{name}: nothing runs: {}", stdout(&o));
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("{rel}:")) && first.contains(&format!(": error[{code}]: ")),
            "{name}: first line `{first}`"
        );
        insta::assert_snapshot!(name, err);
    }
}

#[test]
fn bad_paths_and_non_test_files_are_refused() {
    let o = engine_test(&["playbooks/iam.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("playbooks/iam.yaml:1:1: error[E012]: not a playbook test file"),
        "{}",
        stderr(&o)
    );
    let o = engine_test(&["no/such/dir"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error[E006]"), "{}", stderr(&o));
    let o = engine_test(&["playbooks/samples"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no playbook test files"),
        "{}",
        stderr(&o)
    );
    let o = engine_test(&[]);
    assert_eq!(o.status.code(), Some(2), "usage error");
}
