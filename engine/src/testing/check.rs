//! Check a playbook test file like a playbook: every problem collected, each at its
//! `path:line:col`, before any test runs.
//!
//! The file's playbooks are loaded (and validated) first, so a test naming a playbook or a
//! step that does not exist is an error (E060, E061) with a suggestion, not a test that
//! silently checks nothing. Event files are read here (E062), durations, timestamps, case
//! ids and enum values are parsed here, and the result is a [`TestFile`] the runner can
//! use without meeting a bad value.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::str::FromStr;

use serde_json::{Map, Value};

use super::spec::*;
use crate::cases::{
    normalize_observable, CaseId, CaseState, NewCase, NewObservable, ObservableType, Severity,
    Timestamp, Verdict,
};
use crate::error::{did_you_mean, Code, Diagnostic, Pos};
use crate::load::yaml::{Document, Path};
use crate::load::{self, SourceFile};
use crate::step::{ErrorKind, Registry, StepError};
use crate::validate::{check_keys, field, kind_of, list, parse_duration, Reporter};

const RUN_STATUSES: &[&str] = &["succeeded", "failed"];
const STEP_STATUSES: &[&str] = &["succeeded", "skipped", "failed", "cancelled"];
const ERROR_KINDS: &[&str] = &["retryable", "permanent", "timeout", "invalid_input"];

/// Read and check one test file. `None` when it has problems (all in `diags`).
pub fn load_test_file(
    path: &FsPath,
    registry: &Registry,
    diags: &mut Vec<Diagnostic>,
) -> Option<TestFile> {
    let file = match load::read_yaml(path) {
        Ok(f) => f,
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    let doc = match file.documents.as_slice() {
        [doc] => doc,
        [] => {
            diags.push(
                Diagnostic::new(
                    Code::Empty,
                    path,
                    Pos { line: 1, col: 1 },
                    "file holds no tests",
                )
                .with_help("a test file needs `tests`, a list of tests with `name` and `event`"),
            );
            return None;
        }
        [_, second, ..] => {
            let mut r = reporter(&file, second, diags);
            r.at(
                Code::InvalidValue,
                &Path::root(),
                None,
                "a test file holds one YAML document; put every test under `tests`".into(),
            );
            return None;
        }
    };
    let before = diags.len();
    let mut r = reporter(&file, doc, diags);
    let checked = check_file(&mut r, registry);
    if diags.len() > before {
        // People read a file top to bottom; a playbook's own problems stay with it.
        diags[before..].sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
        return None;
    }
    let (playbooks, tests) = checked?;
    Some(TestFile {
        path: file.path.clone(),
        marks: doc.marks.clone(),
        playbooks,
        tests,
    })
}

fn reporter<'a>(
    file: &'a SourceFile,
    doc: &'a Document,
    diags: &'a mut Vec<Diagnostic>,
) -> Reporter<'a> {
    Reporter {
        file,
        doc,
        playbook: None,
        diags,
    }
}

/// What a test may refer to: the loaded playbooks, their steps and the step types.
struct Known {
    /// Playbook name -> (step id -> step type).
    playbooks: BTreeMap<String, BTreeMap<String, String>>,
    registry: Registry,
}

impl Known {
    fn uses_anywhere(&self, uses: &str) -> bool {
        self.playbooks
            .values()
            .any(|steps| steps.values().any(|u| u == uses))
    }

    /// What the playbooks' step types find wrong in `config`, as `engine run` checks it.
    fn config_problems(&self, config: &Value) -> Vec<(String, String)> {
        let uses: std::collections::BTreeSet<&str> = self
            .playbooks
            .values()
            .flat_map(|steps| steps.values().map(String::as_str))
            .collect();
        self.registry.check_config(uses, config)
    }
}

/// Report config problems at `path` (the `config` that brings them in), except those
/// already reported for the file.
fn report_config(
    r: &mut Reporter<'_>,
    problems: Vec<(String, String)>,
    path: &Path,
    already: &[(String, String)],
) {
    for (step, message) in problems {
        if already.iter().any(|(_, m)| m == &message) {
            continue;
        }
        // Step types name the key (`config `sla.high`: ...`): point at it when the test
        // file writes it, else at the `config` that brings it in.
        let mut at = path.clone();
        if let Some(key) = message
            .strip_prefix("config `")
            .and_then(|rest| rest.split('`').next())
        {
            for part in key.split('.') {
                at = at.key(part);
            }
        }
        r.at(
            Code::InvalidValue,
            &at,
            None,
            format!("{message} (read by step type `{step}`)"),
        );
    }
}

/// Settings a test inherits from its file.
struct Defaults {
    dir: PathBuf,
    source: String,
    config: Value,
    /// Problems of `config`, reported once for the file.
    config_problems: Vec<(String, String)>,
    now: Timestamp,
    seed: u64,
}

fn check_file(
    r: &mut Reporter<'_>,
    registry: &Registry,
) -> Option<(Vec<SourceFile>, Vec<TestCase>)> {
    let root = Path::root();
    let Some(obj) = r.doc.value.as_object() else {
        r.at(
            Code::NotAMapping,
            &root,
            None,
            format!(
                "a test file must be a mapping with `tests`, found {}",
                kind_of(&r.doc.value)
            ),
        );
        return None;
    };
    check_keys(r, obj, &root, FILE_KEYS, &["tests"], None);
    let dir = r
        .file
        .path
        .parent()
        .map(FsPath::to_path_buf)
        .unwrap_or_default();

    let playbook_paths = playbook_paths(r, obj, &dir)?;
    let (sources, known) = load_playbooks(r, &playbook_paths, registry)?;

    let config = match obj.get("config") {
        None => bundled_config(r, &playbook_paths),
        Some(Value::String(p)) => {
            let p = dir.join(p);
            match crate::config::load(Some(&p)) {
                Ok(c) => Some(c),
                Err(e) => {
                    r.at(
                        Code::InvalidValue,
                        &root.key("config"),
                        None,
                        format!("cannot load the config: {e}"),
                    );
                    None
                }
            }
        }
        Some(Value::Object(m)) => Some(Value::Object(m.clone())),
        Some(other) => {
            r.at(
                Code::InvalidValue,
                &root.key("config"),
                None,
                format!(
                    "`config` is a config file path or a mapping, found {}",
                    kind_of(other)
                ),
            );
            None
        }
    };
    let now = match obj.get("now") {
        Some(v) => timestamp(r, v, &root.key("now"))?,
        None => Timestamp::from_str(DEFAULT_NOW).ok()?,
    };
    let seed = field::<u64>(r, obj, &root, "seed", None).unwrap_or(DEFAULT_SEED);
    let source = field::<String>(r, obj, &root, "source", None).unwrap_or_else(|| "okta".into());
    let config = config?;
    let config_problems = known.config_problems(&config);
    let at = if obj.contains_key("config") {
        root.key("config")
    } else {
        root.clone()
    };
    report_config(r, config_problems.clone(), &at, &[]);
    let defaults = Defaults {
        dir,
        source,
        config,
        config_problems,
        now,
        seed,
    };

    let tests_path = root.key("tests");
    let items = match obj.get("tests") {
        None => return None,
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => {
            r.at(
                Code::InvalidValue,
                &tests_path,
                None,
                "`tests` is empty".into(),
            );
            return None;
        }
        Some(other) => {
            r.at(
                Code::InvalidValue,
                &tests_path,
                None,
                format!("`tests` must be a list, found {}", kind_of(other)),
            );
            return None;
        }
    };
    let mut tests = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = tests_path.index(i);
        let before = r.diags.len();
        let name = item.get("name").and_then(Value::as_str).map(str::to_string);
        if let Some(n) = &name {
            if let Some(line) = names.get(n) {
                r.at(
                    Code::TestDuplicateName,
                    &path.key("name"),
                    None,
                    format!("duplicate test name `{n}`"),
                )
                .help = Some(format!(
                    "first used on line {line}; `--filter` and the report name tests by it"
                ));
            } else {
                names.insert(n.clone(), r.doc.marks.value(&path.key("name")).0.line);
            }
        }
        let test = check_test(r, item, &path, &defaults, &known);
        for d in &mut r.diags[before..] {
            d.test.clone_from(&name);
        }
        if let Some(t) = test {
            tests.push(t);
        }
    }
    Some((sources, tests))
}

/// `playbooks:` (paths relative to the test file), else the folder above a `tests/`
/// folder, else the test file's own folder.
fn playbook_paths(
    r: &mut Reporter<'_>,
    obj: &Map<String, Value>,
    dir: &FsPath,
) -> Option<Vec<PathBuf>> {
    let path = Path::root().key("playbooks");
    let given: Vec<(Path, String)> = match obj.get("playbooks") {
        None => {
            let base = if dir.file_name().is_some_and(|n| n == "tests") {
                dir.parent().map(FsPath::to_path_buf).unwrap_or_default()
            } else {
                dir.to_path_buf()
            };
            let base = if base.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                base
            };
            return Some(vec![base]);
        }
        Some(Value::String(s)) => vec![(path.clone(), s.clone())],
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) => out.push((path.index(i), s.to_string())),
                    None => {
                        r.at(
                            Code::InvalidValue,
                            &path.index(i),
                            None,
                            format!("a playbook path must be a string, found {}", kind_of(item)),
                        );
                    }
                }
            }
            out
        }
        Some(other) => {
            r.at(
                Code::InvalidValue,
                &path,
                None,
                format!(
                    "`playbooks` is a path or a non-empty list of paths, found {}",
                    kind_of(other)
                ),
            );
            return None;
        }
    };
    let mut out = Vec::new();
    for (p, s) in given {
        let full = dir.join(&s);
        if full.exists() {
            out.push(full);
        } else {
            r.at(
                Code::Io,
                &p,
                None,
                format!("no such file or directory: `{}`", shown(&full)),
            )
            .help = Some("playbook paths are relative to the test file".into());
        }
    }
    (!out.is_empty()).then_some(out)
}

fn load_playbooks(
    r: &mut Reporter<'_>,
    paths: &[PathBuf],
    registry: &Registry,
) -> Option<(Vec<SourceFile>, Known)> {
    let files = match load::discover(paths) {
        Ok(f) => f,
        Err(d) => {
            r.diags.push(d);
            return None;
        }
    };
    if files.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| format!("`{}`", shown(p))).collect();
        r.at(
            Code::InvalidValue,
            &Path::root().key("playbooks"),
            None,
            format!("no playbook files in {}", names.join(", ")),
        )
        .help =
            Some("name the playbooks with `playbooks:` (paths relative to the test file)".into());
        return None;
    }
    let mut sources = Vec::new();
    let mut ok = true;
    for f in &files {
        match load::read_file(f) {
            Ok(s) => sources.push(s),
            Err(d) => {
                r.diags.push(d);
                ok = false;
            }
        }
    }
    let bundle = match crate::compile::compile_sources(&sources, registry) {
        Ok(b) => b,
        Err(mut d) => {
            r.diags.append(&mut d);
            return None;
        }
    };
    if !ok {
        return None;
    }
    let playbooks = bundle
        .playbooks
        .iter()
        .map(|p| {
            let steps = p
                .steps
                .iter()
                .map(|s| (s.id.clone(), s.uses.clone()))
                .collect();
            (p.name.clone(), steps)
        })
        .collect();
    Some((
        sources,
        Known {
            playbooks,
            registry: registry.clone(),
        },
    ))
}

/// `data/config.yaml` beside the playbooks, as `engine run` uses it; an empty config
/// when there is none.
fn bundled_config(r: &mut Reporter<'_>, playbooks: &[PathBuf]) -> Option<Value> {
    let first = playbooks.first()?;
    let dir = if first.is_dir() {
        first.clone()
    } else {
        first.parent().map(FsPath::to_path_buf).unwrap_or_default()
    };
    let candidate = dir.join("data").join("config.yaml");
    if !candidate.is_file() {
        return Some(Value::Object(Map::new()));
    }
    match crate::config::load(Some(&candidate)) {
        Ok(c) => Some(c),
        Err(e) => {
            r.at(
                Code::InvalidValue,
                &Path::root(),
                None,
                format!("cannot load the playbooks' config: {e}"),
            )
            .help = Some("name another one with `config:`".into());
            None
        }
    }
}

fn check_test(
    r: &mut Reporter<'_>,
    item: &Value,
    path: &Path,
    defaults: &Defaults,
    known: &Known,
) -> Option<TestCase> {
    let Some(obj) = item.as_object() else {
        r.at(
            Code::InvalidValue,
            path,
            None,
            format!(
                "a test must be a mapping with `name` and `event`, found {}",
                kind_of(item)
            ),
        );
        return None;
    };
    let before = r.diags.len();
    check_keys(r, obj, path, TEST_KEYS, &["name"], None);
    let name: Option<String> = field(r, obj, path, "name", None);
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        r.at(
            Code::InvalidValue,
            &path.key("name"),
            None,
            "`name` is empty".into(),
        );
    }
    let _description: Option<String> = field(r, obj, path, "description", None);
    let source: String =
        field(r, obj, path, "source", None).unwrap_or_else(|| defaults.source.clone());
    let events = events(r, obj, path, &defaults.dir);
    let cases = existing_cases(r, obj.get("cases"), &path.key("cases"));
    let mocks = mocks(r, obj.get("mocks"), &path.key("mocks"), known);
    let mut config = defaults.config.clone();
    match obj.get("config") {
        None => {}
        Some(Value::Object(m)) => {
            merge(&mut config, &Value::Object(m.clone()));
            let problems = known.config_problems(&config);
            report_config(r, problems, &path.key("config"), &defaults.config_problems);
        }
        Some(other) => {
            r.at(
                Code::InvalidValue,
                &path.key("config"),
                None,
                format!(
                    "`config` of a test is a mapping merged into the file's config, found {}",
                    kind_of(other)
                ),
            );
        }
    }
    let now = match obj.get("now") {
        Some(v) => timestamp(r, v, &path.key("now")),
        None => Some(defaults.now),
    };
    let seed = field::<u64>(r, obj, path, "seed", None).unwrap_or(defaults.seed);
    let expect = match obj.get("expect") {
        None => Some(Expect::default()),
        Some(v) => expect(r, v, &path.key("expect"), known),
    };
    if r.diags.len() > before {
        return None;
    }
    Some(TestCase {
        name: name?,
        pos: r.doc.marks.value(path).0,
        source,
        events: events?,
        cases: cases?,
        mocks: mocks?,
        config,
        now: now?,
        seed,
        expect: expect?,
    })
}

/// Merge `over` into `base`: mappings key by key, anything else replaces; `null` removes.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(slot) = b.get_mut(k) {
                    merge(slot, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn timestamp(r: &mut Reporter<'_>, v: &Value, path: &Path) -> Option<Timestamp> {
    match v.as_str().map(Timestamp::from_str) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            r.at(Code::InvalidValue, path, None, e.to_string());
            None
        }
        None => {
            r.at(
                Code::InvalidValue,
                path,
                None,
                format!(
                    "expected an RFC 3339 time such as `2026-01-01T00:00:00Z`, found {}",
                    kind_of(v)
                ),
            );
            None
        }
    }
}

/// A value of a named enum (`severity: high`).
fn named<T: FromStr>(r: &mut Reporter<'_>, v: &Value, path: &Path) -> Option<T>
where
    T::Err: std::fmt::Display,
{
    match v.as_str() {
        Some(s) => match s.parse::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                r.at(Code::InvalidValue, path, None, e.to_string());
                None
            }
        },
        None => {
            r.at(
                Code::InvalidValue,
                path,
                None,
                format!("expected a name, found {}", kind_of(v)),
            );
            None
        }
    }
}

fn events(
    r: &mut Reporter<'_>,
    obj: &Map<String, Value>,
    path: &Path,
    dir: &FsPath,
) -> Option<Vec<(String, Value)>> {
    let items: Vec<(Path, &Value, String)> = match (obj.get("event"), obj.get("events")) {
        (Some(_), Some(_)) => {
            r.at_key(
                Code::InvalidValue,
                &path.key("events"),
                None,
                "give `event` or `events`, not both".into(),
            );
            return None;
        }
        // Starting cases and the SLA watcher are enough for some tests.
        (None, None) => return Some(Vec::new()),
        (Some(e), None) => vec![(path.key("event"), e, "event".to_string())],
        (None, Some(Value::Array(items))) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, e)| (path.key("events").index(i), e, format!("events[{i}]")))
            .collect(),
        (None, Some(other)) => {
            r.at(
                Code::InvalidValue,
                &path.key("events"),
                None,
                format!(
                    "`events` must be a non-empty list, found {}",
                    kind_of(other)
                ),
            );
            return None;
        }
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (p, v, label) in items {
        match v {
            Value::Object(_) => out.push((label, v.clone())),
            Value::String(file) => match read_events(&dir.join(file)) {
                Ok(mut evs) => out.append(&mut evs),
                Err(e) => {
                    r.at(Code::TestEvent, &p, None, e).help =
                        Some("event paths are relative to the test file".into());
                    ok = false;
                }
            },
            other => {
                r.at(
                    Code::TestEvent,
                    &p,
                    None,
                    format!(
                        "an event is a JSON file path or a mapping, found {}",
                        kind_of(other)
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `a/b/../c` as `a/c`, for messages only (reading follows the file system).
fn shown(path: &FsPath) -> String {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.display().to_string()
}

/// The events of a JSON file (an event, an array of them, or an Okta event-hook body).
fn read_events(path: &FsPath) -> Result<Vec<(String, Value)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read event file `{}`: {e}", shown(path)))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("event file `{}` is not JSON: {e}", shown(path)))?;
    let events =
        crate::cli::events::split(v).map_err(|e| format!("event file `{}`: {e}", shown(path)))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("event")
        .to_string();
    let n = events.len();
    Ok(events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let label = if n == 1 {
                name.clone()
            } else {
                format!("{name}[{i}]")
            };
            (label, e)
        })
        .collect())
}

fn list_of<'v>(r: &mut Reporter<'_>, v: Option<&'v Value>, path: &Path) -> Option<&'v [Value]> {
    match v {
        None | Some(Value::Null) => Some(&[]),
        Some(Value::Array(items)) => Some(items),
        Some(other) => {
            r.at(
                Code::InvalidValue,
                path,
                None,
                format!("expected a list, found {}", kind_of(other)),
            );
            None
        }
    }
}

fn mapping<'v>(
    r: &mut Reporter<'_>,
    v: &'v Value,
    path: &Path,
    what: &str,
) -> Option<&'v Map<String, Value>> {
    match v.as_object() {
        Some(m) => Some(m),
        None => {
            r.at(
                Code::InvalidValue,
                path,
                None,
                format!("{what} must be a mapping, found {}", kind_of(v)),
            );
            None
        }
    }
}

fn existing_cases(
    r: &mut Reporter<'_>,
    v: Option<&Value>,
    path: &Path,
) -> Option<Vec<ExistingCase>> {
    let items = list_of(r, v, path)?;
    let before = r.diags.len();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let Some(obj) = mapping(r, item, &p, "a case") else {
            continue;
        };
        check_keys(r, obj, &p, CASE_KEYS, &["title"], None);
        let title: Option<String> = field(r, obj, &p, "title", None);
        let description: Option<String> = field(r, obj, &p, "description", None);
        let severity = obj
            .get("severity")
            .map(|v| named::<Severity>(r, v, &p.key("severity")));
        let state = obj
            .get("state")
            .map(|v| named::<CaseState>(r, v, &p.key("state")));
        let resolution: Option<String> = field(r, obj, &p, "resolution", None);
        let assignee: Option<String> = field(r, obj, &p, "assignee", None);
        let tags: Option<Vec<String>> = field(r, obj, &p, "tags", None);
        let fields: Option<Map<String, Value>> = field(r, obj, &p, "fields", None);
        let comments: Option<Vec<String>> = field(r, obj, &p, "comments", None);
        let dedup_key: Option<String> = field(r, obj, &p, "dedup_key", None);
        let created_at = obj
            .get("created_at")
            .and_then(|v| timestamp(r, v, &p.key("created_at")));
        let mut observables = Vec::new();
        for (j, o) in list_of(r, obj.get("observables"), &p.key("observables"))
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let op = p.key("observables").index(j);
            let Some(m) = mapping(r, o, &op, "an observable") else {
                continue;
            };
            check_keys(r, m, &op, OBSERVABLE_KEYS, &["type", "value"], None);
            let kind = m
                .get("type")
                .and_then(|v| named::<ObservableType>(r, v, &op.key("type")));
            let value: Option<String> = field(r, m, &op, "value", None);
            let verdict = match m.get("verdict") {
                None | Some(Value::Null) => None,
                Some(v) => named::<Verdict>(r, v, &op.key("verdict")),
            };
            let enrichment: Option<Map<String, Value>> = field(r, m, &op, "enrichment", None);
            if let (Some(kind), Some(value)) = (kind, value) {
                if let Err(e) = normalize_observable(kind, &value) {
                    r.at(Code::InvalidValue, &op.key("value"), None, e.to_string());
                }
                let mut n = NewObservable::new(kind, value);
                n.verdict = verdict;
                n.enrichment = enrichment.unwrap_or_default();
                observables.push(n);
            }
        }
        let (sla_policy, sla_due_at) = match obj.get("sla") {
            None => (None, None),
            Some(v) => match mapping(r, v, &p.key("sla"), "`sla`") {
                Some(m) => {
                    check_keys(r, m, &p.key("sla"), CASE_SLA_KEYS, &[], None);
                    let policy: Option<String> = field(r, m, &p.key("sla"), "policy", None);
                    let due = m
                        .get("due_at")
                        .and_then(|v| timestamp(r, v, &p.key("sla").key("due_at")));
                    (policy, due)
                }
                None => (None, None),
            },
        };
        let state = match state {
            Some(Some(s)) => s,
            Some(None) => continue,
            None => CaseState::New,
        };
        let severity = match severity {
            Some(Some(s)) => s,
            Some(None) => continue,
            None => Severity::Medium,
        };
        let Some(title) = title else { continue };
        let mut new = NewCase::new(title, severity);
        new.description = description.unwrap_or_default();
        new.assignee = assignee;
        new.tags = tags.unwrap_or_default().into_iter().collect();
        new.fields = fields.unwrap_or_default();
        new.observables = observables;
        new.sla_policy = sla_policy;
        new.sla_due_at = sla_due_at;
        new.dedup_key = dedup_key;
        out.push(ExistingCase {
            new,
            state,
            resolution,
            created_at,
            comments: comments.unwrap_or_default(),
        });
    }
    (r.diags.len() == before).then_some(out)
}

fn mocks(r: &mut Reporter<'_>, v: Option<&Value>, path: &Path, known: &Known) -> Option<Vec<Mock>> {
    let items = list_of(r, v, path)?;
    let before = r.diags.len();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let Some(obj) = mapping(r, item, &p, "a mock") else {
            continue;
        };
        check_keys(r, obj, &p, MOCK_KEYS, &[], None);
        let playbook: Option<String> = field(r, obj, &p, "playbook", None);
        let step: Option<String> = field(r, obj, &p, "step", None);
        let uses: Option<String> = field(r, obj, &p, "uses", None);
        if let Some(pb) = &playbook {
            playbook_ref(r, pb, &p.key("playbook"), known);
        }
        if step.is_none() && uses.is_none() {
            r.at(
                Code::MissingKey,
                &p,
                None,
                "a mock needs `step` (a step id) or `uses` (a step type)".into(),
            );
        }
        if let Some(s) = &step {
            step_ref(r, playbook.as_deref(), s, &p.key("step"), known);
        }
        if let Some(u) = &uses {
            if known.registry.get(u).is_none() {
                let d = r.at(
                    Code::UnknownStepType,
                    &p.key("uses"),
                    None,
                    format!("unknown step type `{u}`"),
                );
                d.help = Some(match did_you_mean(u, known.registry.names()) {
                    Some(h) => format!("did you mean `{h}`?"),
                    None => "`engine steps` lists the step types".into(),
                });
            } else if !known.uses_anywhere(u) {
                r.at(
                    Code::TestUnknownStep,
                    &p.key("uses"),
                    None,
                    format!(
                        "no loaded playbook has a step of type `{u}`: the mock would never apply"
                    ),
                );
            }
        }
        let given: Vec<&str> = ["output", "error", "timeout"]
            .into_iter()
            .filter(|k| obj.contains_key(*k))
            .collect();
        let [only] = given.as_slice() else {
            r.at(
                Code::InvalidValue,
                &p,
                None,
                format!(
                    "a mock gives exactly one of `output`, `error` and `timeout`, found {}",
                    if given.is_empty() {
                        "none".to_string()
                    } else {
                        list(&given)
                    }
                ),
            );
            continue;
        };
        let result = match *only {
            "output" => Ok(obj.get("output").cloned().unwrap_or(Value::Null)),
            "timeout" => match obj.get("timeout") {
                Some(Value::Bool(true)) => Err(StepError::timeout("timed out (mocked)")),
                _ => {
                    r.at(
                        Code::InvalidValue,
                        &p.key("timeout"),
                        None,
                        "`timeout` takes `true`: the step times out on every attempt".into(),
                    );
                    continue;
                }
            },
            _ => match mock_error(r, obj.get("error"), &p.key("error")) {
                Some(e) => Err(e),
                None => continue,
            },
        };
        out.push(Mock {
            playbook,
            step,
            uses,
            result,
        });
    }
    (r.diags.len() == before).then_some(out)
}

/// `error: message` (permanent) or `error: { kind, message }`.
fn mock_error(r: &mut Reporter<'_>, v: Option<&Value>, path: &Path) -> Option<StepError> {
    match v? {
        Value::String(m) => Some(StepError::permanent(m)),
        Value::Object(m) => {
            check_keys(r, m, path, MOCK_ERROR_KEYS, &["message"], None);
            let message: Option<String> = field(r, m, path, "message", None);
            let kind = match m.get("kind") {
                None => Some(ErrorKind::Permanent),
                Some(k) => match k.as_str() {
                    Some(s) if ERROR_KINDS.contains(&s) => {
                        serde_json::from_value::<ErrorKind>(k.clone()).ok()
                    }
                    _ => {
                        let shown = match k.as_str() {
                            Some(s) => format!("`{s}`"),
                            None => kind_of(k).to_string(),
                        };
                        r.at(
                            Code::InvalidValue,
                            &path.key("kind"),
                            None,
                            format!(
                                "unknown error kind {shown}, expected one of {}",
                                list(ERROR_KINDS)
                            ),
                        );
                        None
                    }
                },
            };
            Some(StepError {
                kind: kind?,
                message: message?,
            })
        }
        other => {
            r.at(
                Code::InvalidValue,
                path,
                None,
                format!(
                    "`error` is a message or `{{ kind, message }}`, found {}",
                    kind_of(other)
                ),
            );
            None
        }
    }
}

fn playbook_ref(r: &mut Reporter<'_>, name: &str, path: &Path, known: &Known) -> bool {
    if known.playbooks.contains_key(name) {
        return true;
    }
    let d = r.at(
        Code::TestUnknownPlaybook,
        path,
        None,
        format!("unknown playbook `{name}`"),
    );
    d.help = Some(
        match did_you_mean(name, known.playbooks.keys().map(String::as_str)) {
            Some(h) => format!("did you mean `{h}`?"),
            None => format!(
                "loaded playbooks: {}",
                list(
                    &known
                        .playbooks
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                )
            ),
        },
    );
    false
}

/// A step id of `playbook`, or of any loaded playbook.
fn step_ref(r: &mut Reporter<'_>, playbook: Option<&str>, id: &str, path: &Path, known: &Known) {
    let candidates: Vec<&str> = match playbook {
        Some(pb) => match known.playbooks.get(pb) {
            Some(steps) => steps.keys().map(String::as_str).collect(),
            // The unknown playbook is reported on its own.
            None => return,
        },
        None => known
            .playbooks
            .values()
            .flat_map(|s| s.keys().map(String::as_str))
            .collect(),
    };
    if candidates.contains(&id) {
        return;
    }
    let message = match playbook {
        Some(pb) => format!("playbook `{pb}` has no step `{id}`"),
        None => format!("no loaded playbook has a step `{id}`"),
    };
    let d = r.at(Code::TestUnknownStep, path, None, message);
    d.help = Some(match did_you_mean(id, candidates.iter().copied()) {
        Some(h) => format!("did you mean `{h}`?"),
        None => format!("steps: {}", list(&candidates)),
    });
}

fn expect(r: &mut Reporter<'_>, v: &Value, path: &Path, known: &Known) -> Option<Expect> {
    let obj = mapping(r, v, path, "`expect`")?;
    check_keys(r, obj, path, EXPECT_KEYS, &[], None);
    let before = r.diags.len();
    let mut out = Expect::default();
    if let Some(v) = obj.get("runs") {
        let p = path.key("runs");
        if let Some(m) = mapping(r, v, &p, "`runs` (playbook name -> runs)") {
            for (pb, v) in m {
                let pp = p.key(pb);
                if !playbook_ref(r, pb, &pp, known) {
                    // Point at the name, not its value.
                    if let Some(d) = r.diags.last_mut() {
                        let (pos, width) = r.doc.marks.key(&pp);
                        d.pos = pos;
                        d.width = width;
                        d.line_text = r.file.line(pos.line).map(str::to_string);
                    }
                    continue;
                }
                if let Some(runs) = playbook_runs(r, pb, v, &pp, known) {
                    out.runs.push(PlaybookRuns {
                        playbook: pb.clone(),
                        path: pp,
                        runs,
                    });
                }
            }
        }
    }
    if let Some(v) = obj.get("cases") {
        let p = path.key("cases");
        if let Some(items) = list_of(r, Some(v), &p) {
            let mut cases = Vec::new();
            for (i, item) in items.iter().enumerate() {
                if let Some(c) = expect_case(r, item, &p.index(i)) {
                    cases.push(c);
                }
            }
            out.cases = Some((p, cases));
        }
    }
    if let Some(v) = obj.get("notifications") {
        let p = path.key("notifications");
        if let Some(items) = list_of(r, Some(v), &p) {
            let mut notes = Vec::new();
            for (i, item) in items.iter().enumerate() {
                if let Some(n) = expect_notification(r, item, &p.index(i), known) {
                    notes.push(n);
                }
            }
            out.notifications = Some((p, notes));
        }
    }
    (r.diags.len() == before).then_some(out)
}

fn playbook_runs(
    r: &mut Reporter<'_>,
    playbook: &str,
    v: &Value,
    path: &Path,
    known: &Known,
) -> Option<RunsExpect> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(c) => Some(RunsExpect::Count(c as usize)),
            None => {
                r.at(
                    Code::InvalidValue,
                    path,
                    None,
                    "a run count must be a whole number, 0 or more".into(),
                );
                None
            }
        },
        Value::Object(_) => Some(RunsExpect::Each(vec![run(r, playbook, v, path, known)?])),
        Value::Array(items) if !items.is_empty() => {
            let mut runs = Vec::new();
            for (i, item) in items.iter().enumerate() {
                runs.push(run(r, playbook, item, &path.index(i), known));
            }
            runs.into_iter()
                .collect::<Option<Vec<_>>>()
                .map(RunsExpect::Each)
        }
        other => {
            r.at(
                Code::InvalidValue,
                path,
                None,
                format!(
                    "expected a run count, a run (mapping) or a list of runs, found {}",
                    kind_of(other)
                ),
            );
            None
        }
    }
}

fn run(
    r: &mut Reporter<'_>,
    playbook: &str,
    v: &Value,
    path: &Path,
    known: &Known,
) -> Option<RunExpect> {
    let obj = mapping(r, v, path, "a run")?;
    let before = r.diags.len();
    check_keys(r, obj, path, RUN_KEYS, &[], None);
    let status = obj
        .get("status")
        .and_then(|v| scalar(r, v, &path.key("status"), Some(RUN_STATUSES)));
    let error = obj
        .get("error")
        .and_then(|v| text(r, v, &path.key("error")));
    let output = obj
        .get("output")
        .and_then(|v| free(r, v, &path.key("output")));
    let mut steps = Vec::new();
    if let Some(v) = obj.get("steps") {
        let sp = path.key("steps");
        if let Some(m) = mapping(r, v, &sp, "`steps` (step id -> status)") {
            for (id, v) in m {
                let p = sp.key(id);
                let before_step = r.diags.len();
                step_ref(r, Some(playbook), id, &p, known);
                if r.diags.len() > before_step {
                    if let Some(d) = r.diags.last_mut() {
                        let (pos, width) = r.doc.marks.key(&p);
                        d.pos = pos;
                        d.width = width;
                        d.line_text = r.file.line(pos.line).map(str::to_string);
                    }
                    continue;
                }
                if let Some(s) = step_expect(r, id, v, &p) {
                    steps.push(s);
                }
            }
        }
    }
    if r.diags.len() > before {
        return None;
    }
    Some(RunExpect {
        path: path.clone(),
        status,
        error,
        output,
        steps,
    })
}

fn step_expect(r: &mut Reporter<'_>, id: &str, v: &Value, path: &Path) -> Option<StepExpect> {
    let mut s = StepExpect {
        id: id.to_string(),
        path: path.clone(),
        status: None,
        attempts: None,
        output: None,
        error: None,
    };
    match v {
        Value::Object(obj) if !is_matcher(obj) => {
            check_keys(r, obj, path, STEP_KEYS, &[], None);
            s.status = obj
                .get("status")
                .and_then(|v| scalar(r, v, &path.key("status"), Some(STEP_STATUSES)));
            s.attempts = obj.get("attempts").and_then(|v| {
                let p = path.key("attempts");
                if v.as_u64().is_some() || v.as_object().is_some_and(is_matcher) {
                    scalar(r, v, &p, None)
                } else {
                    r.at(
                        Code::InvalidValue,
                        &p,
                        None,
                        format!("`attempts` is a number, found {}", kind_of(v)),
                    );
                    None
                }
            });
            s.output = obj
                .get("output")
                .and_then(|v| free(r, v, &path.key("output")));
            s.error = match obj.get("error") {
                Some(Value::Object(m)) if !is_matcher(m) => {
                    let ep = path.key("error");
                    check_keys(r, m, &ep, MOCK_ERROR_KEYS, &[], None);
                    if let Some(k) = m.get("kind") {
                        scalar(r, k, &ep.key("kind"), Some(ERROR_KINDS));
                    }
                    if let Some(msg) = m.get("message") {
                        scalar(r, msg, &ep.key("message"), None);
                    }
                    Some(Expected {
                        path: ep,
                        value: Value::Object(m.clone()),
                    })
                }
                Some(v) => text(r, v, &path.key("error")),
                None => None,
            };
        }
        _ => s.status = scalar(r, v, path, Some(STEP_STATUSES)),
    }
    Some(s)
}

fn is_matcher(m: &Map<String, Value>) -> bool {
    m.len() == 1 && m.keys().all(|k| MATCHER_KEYS.contains(&k.as_str()))
}

/// A scalar, `null`, `{ contains: text }` or `{ one_of: [...] }`; with `allowed`, every
/// name written must be one of them.
fn scalar(
    r: &mut Reporter<'_>,
    v: &Value,
    path: &Path,
    allowed: Option<&[&str]>,
) -> Option<Expected> {
    let check_name = |r: &mut Reporter<'_>, v: &Value, p: &Path| -> bool {
        let Some(allowed) = allowed else { return true };
        match v.as_str() {
            Some(s) if allowed.contains(&s) => true,
            _ => {
                let shown = match v.as_str() {
                    Some(s) => format!("`{s}`"),
                    None => kind_of(v).to_string(),
                };
                let d = r.at(
                    Code::InvalidValue,
                    p,
                    None,
                    format!("unexpected {shown}, expected one of {}", list(allowed)),
                );
                if let Some(h) = v
                    .as_str()
                    .and_then(|s| did_you_mean(s, allowed.iter().copied()))
                {
                    d.help = Some(format!("did you mean `{h}`?"));
                }
                false
            }
        }
    };
    let ok = match v {
        Value::Object(m) if is_matcher(m) => matcher(r, m, path, &check_name),
        Value::Object(_) | Value::Array(_) => {
            r.at(
                Code::InvalidValue,
                path,
                None,
                format!(
                    "expected a value, `{{ contains: ... }}` or `{{ one_of: [...] }}`, found {}",
                    kind_of(v)
                ),
            );
            false
        }
        _ => check_name(r, v, path),
    };
    ok.then(|| Expected {
        path: path.clone(),
        value: v.clone(),
    })
}

fn matcher(
    r: &mut Reporter<'_>,
    m: &Map<String, Value>,
    path: &Path,
    check_name: &dyn Fn(&mut Reporter<'_>, &Value, &Path) -> bool,
) -> bool {
    if let Some(v) = m.get("one_of") {
        let p = path.key("one_of");
        match v.as_array() {
            Some(items) if !items.is_empty() => {
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    ok &= check_name(r, item, &p.index(i));
                }
                ok
            }
            _ => {
                r.at(
                    Code::InvalidValue,
                    &p,
                    None,
                    "`one_of` takes a non-empty list".into(),
                );
                false
            }
        }
    } else {
        true
    }
}

/// A string (a substring to find) or a matcher.
fn text(r: &mut Reporter<'_>, v: &Value, path: &Path) -> Option<Expected> {
    match v {
        Value::String(s) => Some(Expected {
            path: path.clone(),
            value: serde_json::json!({ "contains": s }),
        }),
        Value::Object(m) if is_matcher(m) => scalar(r, v, path, None),
        other => {
            r.at(
                Code::InvalidValue,
                path,
                None,
                format!(
                    "expected text the message contains, found {}",
                    kind_of(other)
                ),
            );
            None
        }
    }
}

/// Any value, compared partially (`output`, `fields`).
fn free(_r: &mut Reporter<'_>, v: &Value, path: &Path) -> Option<Expected> {
    Some(Expected {
        path: path.clone(),
        value: v.clone(),
    })
}

/// A case expectation, values checked and made canonical (case ids, durations,
/// observable values), so the comparison is plain equality.
fn expect_case(r: &mut Reporter<'_>, v: &Value, path: &Path) -> Option<Expected> {
    let obj = mapping(r, v, path, "an expected case")?;
    let before = r.diags.len();
    check_keys(r, obj, path, EXPECT_CASE_KEYS, &[], None);
    let mut out = Map::new();
    for (k, v) in obj {
        let p = path.key(k);
        let value = match k.as_str() {
            "id" => match v.as_str().map(CaseId::from_str) {
                Some(Ok(id)) => Some(Value::from(id.to_string())),
                Some(Err(e)) => {
                    r.at(Code::InvalidValue, &p, None, e.to_string());
                    None
                }
                None => scalar(r, v, &p, None).map(|e| e.value),
            },
            "severity" => {
                let names: Vec<&str> = Severity::ALL.iter().map(|s| s.as_str()).collect();
                scalar(r, v, &p, Some(&names)).map(|e| e.value)
            }
            "state" => {
                let names: Vec<&str> = CaseState::ALL.iter().map(|s| s.as_str()).collect();
                scalar(r, v, &p, Some(&names)).map(|e| e.value)
            }
            "title" | "description" | "resolution" | "assignee" => {
                scalar(r, v, &p, None).map(|e| e.value)
            }
            "tags" => match v.as_array() {
                Some(items) if items.iter().all(Value::is_string) => Some(v.clone()),
                _ => {
                    r.at(
                        Code::InvalidValue,
                        &p,
                        None,
                        "`tags` is a list of tags the case must have".into(),
                    );
                    None
                }
            },
            "comments" => match v.as_array() {
                Some(items) => {
                    let mut ok = true;
                    for (i, item) in items.iter().enumerate() {
                        ok &= text(r, item, &p.index(i)).is_some();
                    }
                    ok.then(|| {
                        Value::Array(
                            items
                                .iter()
                                .map(|i| match i {
                                    Value::String(s) => serde_json::json!({ "contains": s }),
                                    other => other.clone(),
                                })
                                .collect(),
                        )
                    })
                }
                None => {
                    r.at(
                        Code::InvalidValue,
                        &p,
                        None,
                        "`comments` is a list of texts the case's comments contain".into(),
                    );
                    None
                }
            },
            "fields" => Some(v.clone()),
            "observables" => expect_observables(r, v, &p),
            "sla" => expect_sla(r, v, &p),
            _ => None,
        };
        if let Some(value) = value {
            out.insert(k.clone(), value);
        }
    }
    (r.diags.len() == before).then(|| Expected {
        path: path.clone(),
        value: Value::Object(out),
    })
}

fn expect_observables(r: &mut Reporter<'_>, v: &Value, path: &Path) -> Option<Value> {
    let items = list_of(r, Some(v), path)?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let m = mapping(r, item, &p, "an expected observable")?;
        check_keys(r, m, &p, OBSERVABLE_KEYS, &["type", "value"], None);
        let kind = m
            .get("type")
            .and_then(|v| named::<ObservableType>(r, v, &p.key("type")));
        let value: Option<String> = field(r, m, &p, "value", None);
        let mut o = m.clone();
        if let (Some(kind), Some(value)) = (kind, value) {
            match normalize_observable(kind, &value) {
                Ok(n) => {
                    o.insert("value".into(), Value::from(n));
                }
                Err(e) => {
                    r.at(Code::InvalidValue, &p.key("value"), None, e.to_string());
                }
            }
        }
        if let Some(v) = m.get("verdict").filter(|v| !v.is_null()) {
            let names: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
            scalar(r, v, &p.key("verdict"), Some(&names));
        }
        out.push(Value::Object(o));
    }
    Some(Value::Array(out))
}

fn expect_sla(r: &mut Reporter<'_>, v: &Value, path: &Path) -> Option<Value> {
    let m = mapping(r, v, path, "`sla`")?;
    check_keys(r, m, path, EXPECT_SLA_KEYS, &[], None);
    let mut out = Map::new();
    for (k, v) in m {
        let p = path.key(k);
        let value = match k.as_str() {
            "due_in" | "due_within" => match v.as_str().map(parse_duration) {
                Some(Ok(d)) => Some(Value::from(d.as_millis() as u64)),
                Some(Err(e)) => {
                    r.at(
                        Code::InvalidValue,
                        &p,
                        None,
                        format!("invalid duration: {e}"),
                    )
                    .help = Some("write durations like `4h`, `72h`, `7d`".into());
                    None
                }
                None => {
                    r.at(
                        Code::InvalidValue,
                        &p,
                        None,
                        format!("expected a duration such as `4h`, found {}", kind_of(v)),
                    );
                    None
                }
            },
            "due_at" => match v {
                Value::Null => Some(Value::Null),
                _ => timestamp(r, v, &p).map(|t| Value::from(t.to_string())),
            },
            "breached" => match v {
                Value::Bool(_) => Some(v.clone()),
                _ => {
                    r.at(
                        Code::InvalidValue,
                        &p,
                        None,
                        format!("`breached` is `true` or `false`, found {}", kind_of(v)),
                    );
                    None
                }
            },
            "policy" => scalar(r, v, &p, None).map(|e| e.value),
            _ => None,
        };
        if let Some(value) = value {
            out.insert(k.clone(), value);
        }
    }
    Some(Value::Object(out))
}

fn expect_notification(
    r: &mut Reporter<'_>,
    v: &Value,
    path: &Path,
    known: &Known,
) -> Option<Expected> {
    let obj = mapping(r, v, path, "an expected notification")?;
    let before = r.diags.len();
    check_keys(r, obj, path, EXPECT_NOTIFICATION_KEYS, &[], None);
    let mut out = Map::new();
    for (k, v) in obj {
        let p = path.key(k);
        let value = match k.as_str() {
            "to" | "channels" => match v {
                Value::String(s) => Some(Value::Array(vec![Value::from(s.clone())])),
                Value::Array(items) if items.iter().all(Value::is_string) => Some(v.clone()),
                other => {
                    r.at(
                        Code::InvalidValue,
                        &p,
                        None,
                        format!(
                            "`{k}` is a name or a list of names, found {}",
                            kind_of(other)
                        ),
                    );
                    None
                }
            },
            "text" => match v.as_str() {
                Some(_) => Some(v.clone()),
                None => {
                    r.at(
                        Code::InvalidValue,
                        &p,
                        None,
                        format!(
                            "`text` is text the subject or the message contains, found {}",
                            kind_of(v)
                        ),
                    );
                    None
                }
            },
            "case" => match v.as_str().map(CaseId::from_str) {
                Some(Ok(id)) => Some(Value::from(id.to_string())),
                Some(Err(e)) => {
                    r.at(Code::InvalidValue, &p, None, e.to_string());
                    None
                }
                None => scalar(r, v, &p, None).map(|e| e.value),
            },
            "playbook" => match v.as_str() {
                Some(pb) => playbook_ref(r, pb, &p, known).then(|| v.clone()),
                None => scalar(r, v, &p, None).map(|e| e.value),
            },
            "subject" | "message" | "step" => scalar(r, v, &p, None).map(|e| e.value),
            _ => None,
        };
        if let Some(value) = value {
            out.insert(k.clone(), value);
        }
    }
    (r.diags.len() == before).then(|| Expected {
        path: path.clone(),
        value: Value::Object(out),
    })
}

#[cfg(test)]
mod tests {
    use super::merge;
    use serde_json::json;

    #[test]
    fn merge_replaces_leaves_merges_mappings_and_null_removes() {
        let mut base = json!({"intel": {"lists": [1], "timeout": "10s"}, "teams": {"soc": ["a"]}});
        merge(
            &mut base,
            &json!({"intel": {"abuseipdb": {"key": "k"}, "lists": []}, "teams": null}),
        );
        assert_eq!(
            base,
            json!({"intel": {"lists": [], "timeout": "10s", "abuseipdb": {"key": "k"}}})
        );
    }
}
