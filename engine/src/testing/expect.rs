//! Compare what a test expects with what its events did, and describe every difference.
//!
//! Expectations are partial: in a mapping only the keys written are compared. Lists of
//! runs, cases and notifications are complete (their length is checked); a case's
//! `tags`, `observables` and `comments` and a notification's `to` and `channels` are sets
//! (what is written must be there, more may be). `{ contains: x }` and `{ one_of: [...] }`
//! match instead of comparing. Each [`Failure`] names the field in the results
//! (`cases[0].severity`), where the expectation is written, and both values.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::run::Actual;
use super::spec::{Expected, PlaybookRuns, RunExpect, RunsExpect, StepExpect, TestCase, TestFile};
use crate::cases::Case;
use crate::error::Pos;
use crate::load::yaml::Path;
use crate::notify::Notification;
use crate::report::{RunReport, RunStatus};

/// One expectation that does not hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The field in the results, such as `cases[0].severity`.
    pub path: String,
    /// Where the expectation is written in the test file.
    #[serde(skip)]
    pub at: Pos,
    pub expected: String,
    pub actual: String,
}

/// Every expectation of `test` that `actual` does not meet.
pub fn check(file: &TestFile, test: &TestCase, actual: &Actual) -> Vec<Failure> {
    let mut c = Cmp {
        file,
        out: Vec::new(),
    };
    for pr in &test.expect.runs {
        c.playbook_runs(pr, &actual.runs);
    }
    c.unexpected_failures(test, &actual.runs);
    if let Some((path, cases)) = &test.expect.cases {
        c.cases(path, cases, &actual.cases);
    }
    if let Some((path, notes)) = &test.expect.notifications {
        c.notifications(path, notes, &actual.notifications);
    }
    c.out
}

struct Cmp<'a> {
    file: &'a TestFile,
    out: Vec<Failure>,
}

/// Longest rendering of a value in a failure; the field path says where to look.
const MAX_RENDER: usize = 400;

/// A value as a failure shows it: compact JSON, matchers in words.
pub fn render(v: &Value) -> String {
    if let Some(m) = v.as_object().filter(|m| m.len() == 1) {
        if let Some(x) = m.get("contains") {
            return format!("text containing {}", render(x));
        }
        if let Some(Value::Array(items)) = m.get("one_of") {
            let shown: Vec<String> = items.iter().map(render).collect();
            return format!("one of {}", shown.join(", "));
        }
    }
    let s = v.to_string();
    if s.chars().count() > MAX_RENDER {
        let cut: String = s.chars().take(MAX_RENDER).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn render_opt(v: Option<&Value>) -> String {
    match v {
        None => "nothing".to_string(),
        Some(v) => render(v),
    }
}

fn duration_ms(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

fn is_matcher(m: &Map<String, Value>) -> bool {
    m.len() == 1 && (m.contains_key("contains") || m.contains_key("one_of"))
}

impl Cmp<'_> {
    fn fail(&mut self, at: &Path, path: &str, expected: String, actual: String) {
        let pos = self.file.pos(at);
        self.fail_at(pos, path, expected, actual);
    }

    fn fail_at(&mut self, at: Pos, path: &str, expected: String, actual: String) {
        self.out.push(Failure {
            path: path.to_string(),
            at,
            expected,
            actual,
        });
    }

    /// Does `act` meet `exp`? (No failure is recorded.)
    fn matches(&self, exp: &Value, act: Option<&Value>) -> bool {
        let mut probe = Cmp {
            file: self.file,
            out: Vec::new(),
        };
        probe.value(exp, act, &Path::root(), "");
        probe.out.is_empty()
    }

    /// The general comparison: partial mappings, element-wise lists, matchers, equality.
    fn value(&mut self, exp: &Value, act: Option<&Value>, at: &Path, path: &str) {
        match exp {
            Value::Object(m) if is_matcher(m) => {
                let ok = match (m.get("contains"), m.get("one_of")) {
                    (Some(needle), _) => match act {
                        Some(Value::String(s)) => match needle {
                            Value::String(n) => s.contains(n.as_str()),
                            other => s.contains(&other.to_string()),
                        },
                        Some(Value::Array(items)) => {
                            items.iter().any(|i| self.matches(needle, Some(i)))
                        }
                        _ => false,
                    },
                    (None, Some(Value::Array(options))) => {
                        options.iter().any(|o| self.matches(o, act))
                    }
                    _ => false,
                };
                if !ok {
                    self.fail(at, path, render(exp), render_opt(act));
                }
            }
            Value::Object(m) => match act {
                Some(Value::Object(a)) => {
                    for (k, v) in m {
                        self.value(v, a.get(k), &at.key(k), &join(path, k));
                    }
                }
                _ => self.fail(at, path, render(exp), render_opt(act)),
            },
            Value::Array(items) => match act {
                Some(Value::Array(a)) if a.len() == items.len() => {
                    for (i, (e, v)) in items.iter().zip(a).enumerate() {
                        self.value(e, Some(v), &at.index(i), &format!("{path}[{i}]"));
                    }
                }
                _ => self.fail(at, path, render(exp), render_opt(act)),
            },
            Value::Null => {
                if !matches!(act, None | Some(Value::Null)) {
                    self.fail(at, path, "nothing (null)".into(), render_opt(act));
                }
            }
            Value::Number(n) => {
                let same = act
                    .and_then(Value::as_f64)
                    .zip(n.as_f64())
                    .is_some_and(|(a, b)| a == b);
                if !same {
                    self.fail(at, path, render(exp), render_opt(act));
                }
            }
            _ => {
                if act != Some(exp) {
                    self.fail(at, path, render(exp), render_opt(act));
                }
            }
        }
    }

    fn playbook_runs(&mut self, pr: &PlaybookRuns, all: &[RunReport]) {
        let runs: Vec<&RunReport> = all.iter().filter(|r| r.playbook == pr.playbook).collect();
        let path = format!("runs.{}", pr.playbook);
        let expected = match &pr.runs {
            RunsExpect::Count(n) => *n,
            RunsExpect::Each(list) => list.len(),
        };
        if runs.len() != expected {
            self.fail(
                &pr.path,
                &path,
                runs_count(expected),
                runs_count(runs.len()),
            );
            return;
        }
        if let RunsExpect::Each(list) = &pr.runs {
            for (i, (re, r)) in list.iter().zip(runs).enumerate() {
                let p = if list.len() == 1 {
                    path.clone()
                } else {
                    format!("{path}[{i}]")
                };
                self.run(re, r, &p);
            }
        }
    }

    fn run(&mut self, re: &RunExpect, r: &RunReport, path: &str) {
        if let Some(e) = &re.status {
            let status = json!(r.status);
            self.value(&e.value, Some(&status), &e.path, &join(path, "status"));
        }
        if let Some(e) = &re.error {
            let error = r.error.clone().map(Value::from);
            self.value(&e.value, error.as_ref(), &e.path, &join(path, "error"));
        }
        if let Some(e) = &re.output {
            self.value(&e.value, r.output.as_ref(), &e.path, &join(path, "output"));
        }
        for se in &re.steps {
            self.step(se, r, &format!("{path}.steps.{}", se.id));
        }
    }

    fn step(&mut self, se: &StepExpect, r: &RunReport, path: &str) {
        let Some(s) = r.step(&se.id) else {
            self.fail(
                &se.path,
                path,
                "a step".into(),
                "no such step in the run".into(),
            );
            return;
        };
        if let Some(e) = &se.status {
            let status = json!(s.status);
            self.value(&e.value, Some(&status), &e.path, &join(path, "status"));
        }
        if let Some(e) = &se.attempts {
            let attempts = json!(s.attempts);
            self.value(&e.value, Some(&attempts), &e.path, &join(path, "attempts"));
        }
        if let Some(e) = &se.output {
            self.value(&e.value, s.output.as_ref(), &e.path, &join(path, "output"));
        }
        if let Some(e) = &se.error {
            let p = join(path, "error");
            let is_text = e.value.as_object().is_some_and(is_matcher);
            let actual = match (&s.error, is_text) {
                (None, _) => None,
                (Some(err), true) => Some(Value::from(err.message.clone())),
                (Some(err), false) => Some(json!({"kind": err.kind, "message": err.message})),
            };
            self.value(&e.value, actual.as_ref(), &e.path, &p);
        }
    }

    /// A run that failed is a test failure unless the test expects something of that
    /// playbook's status or error: otherwise a broken playbook could pass every test that
    /// only looks at cases.
    fn unexpected_failures(&mut self, test: &TestCase, runs: &[RunReport]) {
        for r in runs.iter().filter(|r| r.status == RunStatus::Failed) {
            let expected = test.expect.runs.iter().any(|pr| {
                pr.playbook == r.playbook
                    && match &pr.runs {
                        RunsExpect::Count(_) => false,
                        RunsExpect::Each(list) => list
                            .iter()
                            .any(|re| re.status.is_some() || re.error.is_some()),
                    }
            });
            if !expected {
                self.fail_at(
                    test.pos,
                    &format!("runs.{}", r.playbook),
                    "the run to succeed (or `status: failed` in `expect.runs`)".into(),
                    format!(
                        "failed: {}",
                        r.error.as_deref().unwrap_or("no error recorded")
                    ),
                );
            }
        }
    }

    fn cases(&mut self, at: &Path, expected: &[Expected], cases: &[Case]) {
        if expected.len() != cases.len() {
            let shown: Vec<String> = cases
                .iter()
                .map(|c| format!("{} {:?}", c.id, c.title))
                .collect();
            self.fail(
                at,
                "cases",
                count(expected.len(), "case"),
                if shown.is_empty() {
                    count(0, "case")
                } else {
                    format!("{}: {}", count(cases.len(), "case"), shown.join(", "))
                },
            );
            return;
        }
        for (i, (e, c)) in expected.iter().zip(cases).enumerate() {
            self.case(e, c, &format!("cases[{i}]"));
        }
    }

    fn case(&mut self, e: &Expected, case: &Case, path: &str) {
        let view = case_view(case);
        let Some(m) = e.value.as_object() else { return };
        for (k, v) in m {
            let at = e.path.key(k);
            let p = join(path, k);
            match k.as_str() {
                "tags" => self.subset(v, view.get("tags"), &at, &p),
                "comments" => self.subset(v, view.get("comments"), &at, &p),
                "observables" => self.observables(v, view.get("observables"), &at, &p),
                "sla" => self.sla(v, view.get("sla"), &at, &p),
                _ => self.value(v, view.get(k), &at, &p),
            }
        }
    }

    /// Every expected item matches some actual item.
    fn subset(&mut self, exp: &Value, act: Option<&Value>, at: &Path, path: &str) {
        let items = exp.as_array().map(Vec::as_slice).unwrap_or_default();
        let actual = act
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, e) in items.iter().enumerate() {
            if !actual.iter().any(|a| self.matches(e, Some(a))) {
                self.fail(
                    &at.index(i),
                    path,
                    format!("an item matching {}", render(e)),
                    render_opt(act),
                );
            }
        }
    }

    fn observables(&mut self, exp: &Value, act: Option<&Value>, at: &Path, path: &str) {
        let items = exp.as_array().map(Vec::as_slice).unwrap_or_default();
        let actual = act
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, e) in items.iter().enumerate() {
            let (kind, value) = (&e["type"], &e["value"]);
            let ep = at.index(i);
            let found = actual
                .iter()
                .find(|a| &a["type"] == kind && &a["value"] == value);
            let label = format!(
                "{path}[{} {}]",
                kind.as_str().unwrap_or("?"),
                value.as_str().unwrap_or("?")
            );
            match found {
                None => {
                    let shown: Vec<String> = actual
                        .iter()
                        .map(|a| {
                            format!(
                                "{} {}",
                                a["type"].as_str().unwrap_or("?"),
                                a["value"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    self.fail(
                        &ep,
                        path,
                        format!("an observable {} {}", render(kind), render(value)),
                        if shown.is_empty() {
                            "no observables".into()
                        } else {
                            shown.join(", ")
                        },
                    );
                }
                Some(a) => {
                    if let Some(m) = e.as_object() {
                        for (k, v) in m
                            .iter()
                            .filter(|(k, _)| !matches!(k.as_str(), "type" | "value"))
                        {
                            self.value(v, a.get(k), &ep.key(k), &join(&label, k));
                        }
                    }
                }
            }
        }
    }

    fn sla(&mut self, exp: &Value, act: Option<&Value>, at: &Path, path: &str) {
        let Some(m) = exp.as_object() else { return };
        let due_in = act.and_then(|a| a.get("due_in")).and_then(Value::as_u64);
        for (k, v) in m {
            let ep = at.key(k);
            let p = join(path, k);
            match k.as_str() {
                "due_in" | "due_within" => {
                    let want = v.as_u64().unwrap_or(0);
                    let ok = match due_in {
                        Some(d) if k == "due_in" => d == want,
                        Some(d) => d <= want,
                        None => false,
                    };
                    if !ok {
                        let expected = if k == "due_in" {
                            format!("due {} after the case was created", duration_ms(want))
                        } else {
                            format!("due within {} of the case's creation", duration_ms(want))
                        };
                        let actual = match due_in {
                            Some(d) => format!("due {} after the case was created", duration_ms(d)),
                            None => "no SLA deadline".into(),
                        };
                        self.fail(&ep, &p, expected, actual);
                    }
                }
                _ => self.value(v, act.and_then(|a| a.get(k)), &ep, &p),
            }
        }
    }

    fn notifications(&mut self, at: &Path, expected: &[Expected], sent: &[Notification]) {
        if expected.len() != sent.len() {
            let shown: Vec<String> = sent
                .iter()
                .map(|n| format!("{:?} to {}", n.subject, n.to.join(", ")))
                .collect();
            self.fail(
                at,
                "notifications",
                count(expected.len(), "notification"),
                if shown.is_empty() {
                    count(0, "notification")
                } else {
                    format!(
                        "{}: {}",
                        count(sent.len(), "notification"),
                        shown.join("; ")
                    )
                },
            );
            return;
        }
        let fits = |cmp: &Self, e: &Expected, n: &Notification| {
            let mut probe = Cmp {
                file: cmp.file,
                out: Vec::new(),
            };
            probe.notification(e, n, "");
            probe.out.is_empty()
        };
        // In the order sent, else in any order (runs started by one event finish in any
        // order); only when neither fits are the differences reported, in the order sent.
        if expected.iter().zip(sent).all(|(e, n)| fits(self, e, n)) {
            return;
        }
        let table: Vec<Vec<bool>> = expected
            .iter()
            .map(|e| sent.iter().map(|n| fits(self, e, n)).collect())
            .collect();
        if perfect_matching(&table) {
            return;
        }
        for (i, (e, n)) in expected.iter().zip(sent).enumerate() {
            self.notification(e, n, &format!("notifications[{i}]"));
        }
    }

    fn notification(&mut self, e: &Expected, n: &Notification, path: &str) {
        let Some(m) = e.value.as_object() else { return };
        let view = json!({
            "to": n.to,
            "channels": n.channels,
            "subject": n.subject,
            "message": n.message,
            "case": n.case,
            "playbook": n.playbook,
            "step": n.step,
        });
        for (k, v) in m {
            let at = e.path.key(k);
            let p = join(path, k);
            match k.as_str() {
                "to" | "channels" => self.subset(v, view.get(k), &at, &p),
                "text" => {
                    let needle = v.as_str().unwrap_or_default();
                    if !n.subject.contains(needle) && !n.message.contains(needle) {
                        self.fail(
                            &at,
                            &p,
                            format!("a subject or message containing {}", render(v)),
                            format!("subject {:?}, message {:?}", n.subject, n.message),
                        );
                    }
                }
                _ => self.value(v, view.get(k), &at, &p),
            }
        }
    }
}

/// Is there a way to pair every row with a distinct column where `table` is true?
/// (Kuhn's augmenting paths; tests send a handful of notifications.)
fn perfect_matching(table: &[Vec<bool>]) -> bool {
    fn augment(
        row: usize,
        table: &[Vec<bool>],
        seen: &mut [bool],
        owner: &mut [Option<usize>],
    ) -> bool {
        for col in 0..owner.len() {
            if table[row][col] && !seen[col] {
                seen[col] = true;
                if owner[col].is_none_or(|r| augment(r, table, seen, owner)) {
                    owner[col] = Some(row);
                    return true;
                }
            }
        }
        false
    }
    let cols = table.first().map_or(0, Vec::len);
    let mut owner = vec![None; cols];
    (0..table.len()).all(|row| augment(row, table, &mut vec![false; cols], &mut owner))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn runs_count(n: usize) -> String {
    match n {
        0 => "no run".into(),
        1 => "1 run".into(),
        n => format!("{n} runs"),
    }
}

/// A case as expectations see it: its JSON, comments as their texts, and the SLA
/// deadline also as milliseconds after creation (`sla.due_in`).
fn case_view(c: &Case) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "comments".into(),
            c.comments
                .iter()
                .map(|x| Value::from(x.text.clone()))
                .collect(),
        );
        let due_in = c
            .sla
            .due_at
            .map(|d| d.unix_millis() - c.created_at.unix_millis())
            .and_then(|ms| u64::try_from(ms).ok());
        m.insert(
            "sla".into(),
            json!({
                "policy": c.sla.policy,
                "due_at": c.sla.due_at,
                "breached": c.sla.breached,
                "due_in": due_in,
            }),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_pairs_rows_with_distinct_columns() {
        assert!(perfect_matching(&[vec![true, true], vec![true, false]]));
        assert!(!perfect_matching(&[vec![true, false], vec![true, false]]));
        assert!(perfect_matching(&[]));
    }

    #[test]
    fn matchers_render_in_words() {
        assert_eq!(
            render(&json!({"contains": "VIP"})),
            "text containing \"VIP\""
        );
        assert_eq!(
            render(&json!({"one_of": ["a", "b"]})),
            "one of \"a\", \"b\""
        );
        assert_eq!(render(&json!("x")), "\"x\"");
    }
}
