//! Playbook fixtures: every valid one loads, every invalid one fails with the code its
//! file name declares, and the full rendered diagnostics of each invalid one are
//! snapshotted, so a worse message (or a moved caret) is a failing test.
//!
//! Fixtures live in `tests/fixtures/playbooks/{valid,invalid}`; an invalid fixture is named
//! `eNNN-what-is-wrong.yaml` after the code its first diagnostic must have.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use caseflow::engine::compile::load_paths;
use caseflow::engine::error::{Code, Diagnostic};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const ENGINE: &str = env!("CARGO_BIN_EXE_engine");

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(MANIFEST_DIR)
        .join("tests/fixtures/playbooks")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .expect("fixture names are UTF-8")
        .to_string()
}

/// Rendered diagnostics with the checkout's absolute path removed, so snapshots are stable.
fn render(diags: &[Diagnostic]) -> String {
    let text: String = diags.iter().map(|d| d.to_string()).collect();
    text.replace(&format!("{MANIFEST_DIR}/"), "")
}

/// The code an invalid fixture declares: `e021-unknown-enum-value` -> `E021`.
fn declared_code(name: &str) -> Code {
    let prefix = name.split('-').next().unwrap_or_default().to_uppercase();
    Code::ALL
        .iter()
        .copied()
        .find(|c| c.as_str() == prefix)
        .unwrap_or_else(|| panic!("fixture `{name}` does not start with a known code"))
}

#[test]
fn every_valid_fixture_loads() {
    let registry = caseflow::builtin_registry();
    let files = fixtures("valid");
    for f in &files {
        if let Err(diags) = load_paths(std::slice::from_ref(f), &registry) {
            panic!("{} should be valid:\n{}", f.display(), render(&diags));
        }
    }
    // Together too: names are unique across the folder, as in a real `playbooks/`.
    let dir = Path::new(MANIFEST_DIR).join("tests/fixtures/playbooks/valid");
    let bundle = load_paths(&[dir], &registry).unwrap_or_else(|d| panic!("{}", render(&d)));
    assert!(bundle.get("full-format").is_some());
    // One file with several `---` documents gives several playbooks.
    for name in ["case-created-note", "case-state-watch", "sla-breach"] {
        assert!(bundle.get(name).is_some(), "playbook `{name}` missing");
    }
}

#[test]
fn full_format_fixture_compiles_every_key() {
    use caseflow::engine::compile::OnError;
    let registry = caseflow::builtin_registry();
    let path = Path::new(MANIFEST_DIR).join("tests/fixtures/playbooks/valid/full-format.yaml");
    let bundle = load_paths(&[path], &registry).unwrap_or_else(|d| panic!("{}", render(&d)));
    let plan = bundle.get("full-format").expect("playbook `full-format`");
    assert!(plan.trigger.condition.is_some());
    assert!(plan.concurrency.is_some());
    assert_eq!(plan.vars.len(), 2);
    assert!(plan.output.is_some());
    let step = |id: &str| {
        plan.steps
            .iter()
            .position(|s| s.id == id)
            .unwrap_or_else(|| panic!("step `{id}`"))
    };
    // `needs` as a string and as a list, and an implicit edge from a template reference.
    assert_eq!(plan.deps[step("announce")], vec![step("facts")]);
    assert_eq!(
        plan.deps[step("per_literal")],
        vec![step("facts"), step("announce")]
    );
    assert_eq!(plan.deps[step("per_ip")], vec![step("facts")]);
    let per_spec = &plan.steps[step("per_spec")];
    assert_eq!(per_spec.for_each.as_ref().map(|f| f.concurrency), Some(2));
    assert_eq!(per_spec.retry.attempts, 3);
    assert_eq!(per_spec.retry.backoff, Duration::from_millis(500));
    assert!(!per_spec.retry.jitter);
    assert_eq!(per_spec.timeout, Some(Duration::from_secs(30)));
    assert_eq!(per_spec.on_error, OnError::Continue);
    assert_eq!(
        plan.steps[step("risky")].on_error,
        OnError::Handler(step("cleanup"))
    );
    assert!(plan.steps[step("cleanup")].is_handler);
    assert_eq!(
        plan.steps[step("literal_if")].literal_condition,
        Some(false)
    );
    assert_eq!(plan.steps[step("literal_if")].on_error, OnError::Fail);
}

#[test]
fn every_invalid_fixture_fails_with_its_code_and_snapshot() {
    let registry = caseflow::builtin_registry();
    let files = fixtures("invalid");
    let mut failures = Vec::new();
    for f in &files {
        let name = stem(f);
        let want = declared_code(&name);
        let diags = match load_paths(std::slice::from_ref(f), &registry) {
            Ok(_) => {
                failures.push(format!("{name}: loaded, but should be invalid"));
                continue;
            }
            Err(d) => d,
        };
        if diags.is_empty() {
            failures.push(format!("{name}: failed without a diagnostic"));
            continue;
        }
        if diags[0].code != want {
            failures.push(format!(
                "{name}: first diagnostic is {}, file name declares {want}:\n{}",
                diags[0].code,
                render(&diags)
            ));
        }
        for d in &diags {
            if d.pos.line == 0 || d.pos.col == 0 {
                failures.push(format!("{name}: diagnostic without a position: {d}"));
            }
        }
        let rendered = render(&diags);
        let snap = std::panic::catch_unwind(|| insta::assert_snapshot!(name.clone(), rendered));
        if snap.is_err() {
            failures.push(format!("{name}: snapshot differs (see the diff above)"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_code_has_an_invalid_fixture() {
    // Codes of playbook test files have theirs in `tests/fixtures/playbook-tests/invalid`
    // (`eNNN-*.test.yaml`, see tests/playbook_tests.rs).
    let dir = Path::new(MANIFEST_DIR).join("tests/fixtures/playbook-tests/invalid");
    let test_files = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path());
    let declared: Vec<Code> = fixtures("invalid")
        .into_iter()
        .chain(test_files)
        .map(|f| declared_code(&stem(&f)))
        .collect();
    for code in Code::ALL {
        assert!(declared.contains(code), "no invalid fixture for {code}");
    }
}

#[test]
fn several_problems_are_all_collected() {
    let registry = caseflow::builtin_registry();
    let path =
        Path::new(MANIFEST_DIR).join("tests/fixtures/playbooks/invalid/e050-several-problems.yaml");
    let diags = load_paths(&[path], &registry).expect_err("fixture is invalid");
    let codes: Vec<&str> = diags.iter().map(|d| d.code.as_str()).collect();
    let want = [
        "E050", "E010", "E020", "E034", "E031", "E012", "E022", "E021", "E030", "E012", "E033",
        "E041", "E040",
    ];
    assert_eq!(codes, want, "{}", render(&diags));
    // Both documents, each with its own playbook named.
    let named = |p: &str| {
        diags
            .iter()
            .filter(|d| d.playbook.as_deref() == Some(p))
            .count()
    };
    assert_eq!(named("several-problems"), 10);
    assert_eq!(named("several-problems-templates"), 3);
}

#[test]
fn every_code_is_explained_in_docs() {
    let path = Path::new(MANIFEST_DIR).join("docs/errors.md");
    let doc = std::fs::read_to_string(&path).expect("docs/errors.md");
    for code in Code::ALL {
        let heading = format!("## {code}: ");
        assert!(
            doc.lines().any(|l| l.starts_with(&heading)),
            "docs/errors.md has no `{heading}...` heading"
        );
    }
}

/// Run the real binary, killing it (and failing) if it hangs.
fn engine(args: &[&str]) -> Output {
    let mut child = Command::new(ENGINE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the engine binary");
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        out.read_to_end(&mut b).map(|_| b)
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        err.read_to_end(&mut b).map(|_| b)
    });
    // A hang guard, not a speed claim: generous enough for a loaded CI machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the engine") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`engine {}` did not finish", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_t.join().expect("stdout thread").expect("read stdout"),
        stderr: err_t.join().expect("stderr thread").expect("read stderr"),
    }
}

fn fixture(kind: &str, name: &str) -> String {
    format!("{MANIFEST_DIR}/tests/fixtures/playbooks/{kind}/{name}")
}

#[test]
fn binary_validate_accepts_a_valid_fixture() {
    let out = engine(&["validate", &fixture("valid", "several-documents.yaml")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok: 3 playbooks in 1 file"), "{stdout}");
}

/// Does `line` start with `path:LINE:COL: error[E0..]`?
fn is_headline(line: &str, path: &str) -> bool {
    let Some(rest) = line.strip_prefix(path).and_then(|r| r.strip_prefix(':')) else {
        return false;
    };
    let mut parts = rest.splitn(3, ':');
    let (Some(l), Some(c), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    number(l) && number(c) && tail.starts_with(" error[E0")
}

#[test]
fn binary_validate_rejects_an_invalid_fixture() {
    let path = fixture("invalid", "e021-unknown-enum-value.yaml");
    let out = engine(&["validate", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(is_headline(first, &path), "{stderr}");
    assert!(
        first.contains(&format!("{path}:9:14: error[E021]")),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `error`?") || stderr.contains("expected one of"));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn binary_without_arguments_is_a_usage_error() {
    let out = engine(&[]);
    assert_eq!(out.status.code(), Some(2));
    let out = engine(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn binary_rejects_an_alias_bomb_without_crashing() {
    let path = fixture("invalid", "e005-alias-bomb.yaml");
    let out = engine(&["validate", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[E005]"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn binary_rejects_a_huge_file_without_crashing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("huge.yaml");
    // 50 MB of flat, valid YAML: size alone must get it rejected.
    let mut text = String::from("playbook: huge\non: { event: okta }\nvars:\n");
    let line = format!("  k{{}}: {}\n", "x".repeat(100));
    let mut i = 0;
    while text.len() < 50 * 1024 * 1024 {
        text.push_str(&line.replace("{}", &i.to_string()));
        i += 1;
    }
    text.push_str("steps:\n  - { id: a, uses: log, with: { message: hi } }\n");
    std::fs::write(&path, text).expect("write the huge file");
    let p = path.to_str().expect("UTF-8 temp path");
    let out = engine(&["validate", p]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{p}:1:1: error[E005]")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
