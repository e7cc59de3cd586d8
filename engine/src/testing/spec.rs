//! A playbook test file once checked: what each test feeds the engine and what it expects.
//!
//! [`super::check`] builds these from the YAML (every reference resolved, every file read,
//! every value of a known kind parsed); [`super::run`] and [`super::expect`] only read them.
//! Expectations keep their YAML [`Path`], so a failed one is reported where it is written.

use std::path::PathBuf;

use serde_json::Value;

use crate::cases::{CaseState, NewCase, Timestamp};
use crate::error::Pos;
use crate::load::yaml::{Marks, Path};
use crate::load::SourceFile;
use crate::step::StepError;

/// The keys each object of the test format accepts.
pub const FILE_KEYS: &[&str] = &["playbooks", "config", "source", "now", "seed", "tests"];
pub const TEST_KEYS: &[&str] = &[
    "name",
    "description",
    "source",
    "event",
    "events",
    "cases",
    "mocks",
    "config",
    "now",
    "seed",
    "expect",
];
pub const CASE_KEYS: &[&str] = &[
    "title",
    "description",
    "severity",
    "state",
    "resolution",
    "assignee",
    "tags",
    "fields",
    "observables",
    "sla",
    "comments",
    "created_at",
    "dedup_key",
];
pub const CASE_SLA_KEYS: &[&str] = &["policy", "due_at"];
pub const OBSERVABLE_KEYS: &[&str] = &["type", "value", "verdict", "enrichment"];
pub const MOCK_KEYS: &[&str] = &["playbook", "step", "uses", "output", "error", "timeout"];
pub const MOCK_ERROR_KEYS: &[&str] = &["kind", "message"];
pub const EXPECT_KEYS: &[&str] = &["runs", "cases", "notifications"];
pub const RUN_KEYS: &[&str] = &["status", "error", "output", "steps"];
pub const STEP_KEYS: &[&str] = &["status", "attempts", "output", "error"];
pub const EXPECT_CASE_KEYS: &[&str] = &[
    "id",
    "title",
    "description",
    "severity",
    "state",
    "resolution",
    "assignee",
    "tags",
    "fields",
    "observables",
    "sla",
    "comments",
];
pub const EXPECT_SLA_KEYS: &[&str] = &["policy", "due_at", "due_in", "due_within", "breached"];
pub const EXPECT_NOTIFICATION_KEYS: &[&str] = &[
    "to", "channels", "subject", "message", "text", "case", "playbook", "step",
];
/// Matchers: a mapping with one of these as its only key compares differently.
pub const MATCHER_KEYS: &[&str] = &["contains", "one_of"];

/// The clock of a test when neither the test nor its file sets `now`.
pub const DEFAULT_NOW: &str = "2026-01-01T00:00:00Z";
/// The seed of step randomness when neither the test nor its file sets `seed`.
pub const DEFAULT_SEED: u64 = 1;

/// One checked test file.
#[derive(Debug)]
pub struct TestFile {
    pub path: PathBuf,
    /// Positions in the test file, for failure locations.
    pub marks: Marks,
    /// The playbook files the tests run, parsed (compiled per test, with its mocks).
    pub playbooks: Vec<SourceFile>,
    pub tests: Vec<TestCase>,
}

impl TestFile {
    /// Where the value at `path` of the test file stands.
    pub fn pos(&self, path: &Path) -> Pos {
        self.marks.value(path).0
    }
}

/// One named test.
#[derive(Debug)]
pub struct TestCase {
    pub name: String,
    /// Where the test's item starts in the file.
    pub pos: Pos,
    /// The source the events come from (`on.event` of the playbooks they start).
    pub source: String,
    /// The events, in order, each with a label (file name or `event[i]`).
    pub events: Vec<(String, Value)>,
    /// Cases in the store before the first event.
    pub cases: Vec<ExistingCase>,
    pub mocks: Vec<Mock>,
    /// The file's config with the test's overrides merged in.
    pub config: Value,
    pub now: Timestamp,
    pub seed: u64,
    pub expect: Expect,
}

/// A case to start from.
#[derive(Debug, Clone)]
pub struct ExistingCase {
    pub new: NewCase,
    pub state: CaseState,
    pub resolution: Option<String>,
    pub created_at: Option<Timestamp>,
    pub comments: Vec<String>,
}

/// A mocked step result: which steps it replaces and what they return.
#[derive(Debug, Clone, PartialEq)]
pub struct Mock {
    pub playbook: Option<String>,
    pub step: Option<String>,
    pub uses: Option<String>,
    pub result: Result<Value, StepError>,
}

impl Mock {
    /// How specific the selector is: a step id in a playbook beats a step id, which beats
    /// a step type.
    pub fn rank(&self) -> u8 {
        match (&self.step, &self.playbook) {
            (Some(_), Some(_)) => 3,
            (Some(_), None) => 2,
            (None, Some(_)) => 1,
            (None, None) => 0,
        }
    }

    pub fn applies(&self, playbook: &str, step: &str, uses: &str) -> bool {
        self.playbook.as_deref().is_none_or(|p| p == playbook)
            && self.step.as_deref().is_none_or(|s| s == step)
            && self.uses.as_deref().is_none_or(|u| u == uses)
    }
}

/// A value to compare, with where it is written.
#[derive(Debug, Clone)]
pub struct Expected {
    pub path: Path,
    pub value: Value,
}

/// `expect:` of one test. Absent parts are not compared.
#[derive(Debug, Default)]
pub struct Expect {
    pub runs: Vec<PlaybookRuns>,
    /// Every case in the store after the test, in id order.
    pub cases: Option<(Path, Vec<Expected>)>,
    /// Every notification sent, in any order.
    pub notifications: Option<(Path, Vec<Expected>)>,
}

/// `runs.<playbook>`.
#[derive(Debug)]
pub struct PlaybookRuns {
    pub playbook: String,
    pub path: Path,
    pub runs: RunsExpect,
}

#[derive(Debug)]
pub enum RunsExpect {
    /// `<playbook>: 0`: how many times it ran.
    Count(usize),
    /// A mapping (one run) or a list (one per run, in order).
    Each(Vec<RunExpect>),
}

/// One run of a playbook.
#[derive(Debug)]
pub struct RunExpect {
    pub path: Path,
    pub status: Option<Expected>,
    /// A string: the run's error contains it.
    pub error: Option<Expected>,
    pub output: Option<Expected>,
    pub steps: Vec<StepExpect>,
}

/// `steps.<id>`: a status, or a mapping.
#[derive(Debug)]
pub struct StepExpect {
    pub id: String,
    pub path: Path,
    pub status: Option<Expected>,
    pub attempts: Option<Expected>,
    pub output: Option<Expected>,
    /// A string: the error message contains it; a mapping: `kind` and `message`.
    pub error: Option<Expected>,
}
