//! Playbook tests: `*.test.yaml` files that feed events to playbooks and check what they did.
//!
//! Data flow: [`discover`] finds the test files; [`check::load_test_file`] checks each one
//! like a playbook (every problem as a diagnostic) and loads its playbooks, events and
//! config into a [`spec::TestFile`]; [`run_all`] runs every test concurrently, each in its
//! own world ([`run::run_test`]: a `MemoryStore`, an in-memory outbox, a fixed clock and
//! seed, a fresh registry wrapped by [`mock::wrap`]); [`expect::check`] compares the runs,
//! cases and notifications with the test's expectations. `engine test` (`cli/test.rs`)
//! prints the outcomes. The format is documented in `docs/playbook-tests.md`.

pub mod check;
pub mod expect;
pub mod mock;
pub mod run;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Code, Diagnostic, Pos};
use crate::step::Registry;
pub use check::load_test_file;
pub use expect::Failure;
pub use spec::TestFile;

/// Longest a test may take before it is reported as hung (real steps keep their own
/// timeouts; this catches a playbook that never finishes).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Is this a test file name (`*.test.yaml`, `*.test.yml`)?
pub fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

/// Expand paths into test files, in a stable order: directories are searched for
/// `*.test.yaml`; a file given by name must be one.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    let at_start = Pos { line: 1, col: 1 };
    for p in paths {
        if p.is_dir() {
            if let Err(e) = walk(p, &mut out) {
                diags.push(Diagnostic::new(
                    Code::Io,
                    p,
                    at_start,
                    format!("cannot read: {e}"),
                ));
            }
        } else if !p.exists() {
            diags.push(Diagnostic::new(
                Code::Io,
                p,
                at_start,
                "no such file or directory",
            ));
        } else if is_test_file(p) {
            out.push(p.clone());
        } else {
            diags.push(
                Diagnostic::new(Code::InvalidValue, p, at_start, "not a playbook test file")
                    .with_help(
                        "test files are named `*.test.yaml`; give a folder to find them all",
                    ),
            );
        }
    }
    out.dedup();
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if p.is_dir() {
            if !hidden {
                walk(&p, out)?;
            }
        } else if is_test_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// How one test went.
#[derive(Debug, Clone)]
pub enum Status {
    Passed,
    /// Expectations that do not hold.
    Failed(Vec<Failure>),
    /// The test could not run to the end (a store error, a hang).
    Error(String),
}

/// One test's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub file: PathBuf,
    pub name: String,
    /// Where the test starts in its file.
    pub pos: Pos,
    pub duration: Duration,
    pub status: Status,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self.status, Status::Passed)
    }
}

/// Run the tests of `files` whose name contains `filter` (all without one), at most
/// `parallel` at a time, each with a registry fresh from `make_registry`. Outcomes come
/// back in file and test order, with how many tests the filter left out.
pub async fn run_all(
    files: &[Arc<TestFile>],
    filter: Option<&str>,
    make_registry: &dyn Fn() -> Registry,
    parallel: usize,
) -> (Vec<Outcome>, usize) {
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut filtered_out = 0;
    let mut order = 0usize;
    let mut pending: Vec<(usize, Outcome)> = Vec::new();
    for file in files {
        for (i, test) in file.tests.iter().enumerate() {
            if filter.is_some_and(|f| !test.name.contains(f)) {
                filtered_out += 1;
                continue;
            }
            let file = file.clone();
            let registry = make_registry();
            let limit = limit.clone();
            let slot = order;
            order += 1;
            let skeleton = Outcome {
                file: file.path.clone(),
                name: test.name.clone(),
                pos: test.pos,
                duration: Duration::ZERO,
                status: Status::Error("the test task crashed".into()),
            };
            pending.push((slot, skeleton));
            set.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let test = &file.tests[i];
                let started = Instant::now();
                let ran = tokio::time::timeout(TEST_TIMEOUT, run::run_test(&file, test, registry));
                let status = match ran.await {
                    Err(_) => Status::Error(format!(
                        "did not finish within {}",
                        humantime::format_duration(TEST_TIMEOUT)
                    )),
                    Ok(Err(e)) => Status::Error(e),
                    Ok(Ok(actual)) => {
                        let failures = expect::check(&file, test, &actual);
                        if failures.is_empty() {
                            Status::Passed
                        } else {
                            Status::Failed(failures)
                        }
                    }
                };
                (slot, started.elapsed(), status)
            });
        }
    }
    while let Some(joined) = set.join_next().await {
        // A task that panicked keeps its "crashed" skeleton.
        if let Ok((slot, duration, status)) = joined {
            if let Some((_, o)) = pending.iter_mut().find(|(s, _)| *s == slot) {
                o.duration = duration;
                o.status = status;
            }
        }
    }
    (pending.into_iter().map(|(_, o)| o).collect(), filtered_out)
}
