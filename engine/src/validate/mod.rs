//! Validate: check a parsed document against the playbook format, collecting every problem.
//!
//! This pass knows the format (keys, types, step types and their inputs, ids, `needs`,
//! durations, triggers) and turns a document into a [`RawPlaybook`]. Whatever needs templates
//! compiled (template syntax, references, cycles through implicit edges) is checked by
//! [`crate::compile`], which adds its diagnostics to the same list.

pub mod inputs;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::compile::template::is_template;
use crate::error::{did_you_mean, Code, Diagnostic};
use crate::load::raw::{self, RawPlaybook, RawStep};
use crate::load::yaml::{Document, Path};
use crate::load::SourceFile;
use crate::step::Registry;

/// The case events a playbook can be triggered by.
pub const CASE_EVENTS: &[&str] = &[
    "case.created",
    "case.updated",
    "case.state_changed",
    "case.assigned",
    "case.severity_changed",
    "case.sla_breached",
];

/// Reports diagnostics against one document of one file.
pub struct Reporter<'a> {
    pub file: &'a SourceFile,
    pub doc: &'a Document,
    pub playbook: Option<String>,
    pub diags: &'a mut Vec<Diagnostic>,
}

impl Reporter<'_> {
    /// Report at the value found at `path`.
    pub fn at(
        &mut self,
        code: Code,
        path: &Path,
        step: Option<&str>,
        message: String,
    ) -> &mut Diagnostic {
        let (pos, width) = self.doc.marks.value(path);
        self.push(code, pos, width, step, message)
    }

    /// Report at the key naming `path`.
    pub fn at_key(
        &mut self,
        code: Code,
        path: &Path,
        step: Option<&str>,
        message: String,
    ) -> &mut Diagnostic {
        let (pos, width) = self.doc.marks.key(path);
        self.push(code, pos, width, step, message)
    }

    fn push(
        &mut self,
        code: Code,
        pos: crate::error::Pos,
        width: usize,
        step: Option<&str>,
        message: String,
    ) -> &mut Diagnostic {
        let mut d = Diagnostic::new(code, &self.file.path, pos, message);
        d.width = width;
        d.playbook = self.playbook.clone();
        d.step = step.map(str::to_string);
        d.line_text = self.file.line(pos.line).map(str::to_string);
        self.diags.push(d);
        // The vector was just pushed to: `last_mut` cannot be `None`.
        let last = self.diags.len() - 1;
        &mut self.diags[last]
    }
}

/// Check one document; `None` when it is too broken to compile.
pub fn playbook(r: &mut Reporter<'_>, registry: &Registry) -> Option<RawPlaybook> {
    let root = Path::root();
    let Some(obj) = r.doc.value.as_object() else {
        r.at(
            Code::NotAMapping,
            &root,
            None,
            format!(
                "a playbook must be a mapping, found {}",
                kind_of(&r.doc.value)
            ),
        );
        return None;
    };
    r.playbook = obj
        .get("playbook")
        .and_then(Value::as_str)
        .map(str::to_string);
    let before = r.diags.len();
    check_keys(
        r,
        obj,
        &root,
        raw::PLAYBOOK_KEYS,
        &["playbook", "on", "steps"],
        None,
    );

    let name: Option<String> = field(r, obj, &root, "playbook", None);
    if let Some(n) = &name {
        if !valid_name(n) {
            r.at(
                Code::InvalidValue,
                &root.key("playbook"),
                None,
                format!("playbook name `{n}` must be lower-case letters, digits, `-`, `_` or `.`"),
            );
        }
    }
    let description = field(r, obj, &root, "description", None);
    let concurrency = field(r, obj, &root, "concurrency", None);
    let vars: Option<Map<String, Value>> = field(r, obj, &root, "vars", None);
    let output = obj.get("output").cloned();
    let on = trigger(r, obj.get("on"), &root.key("on"));
    let steps = steps(r, obj.get("steps"), &root.key("steps"), registry);

    if r.diags.len() > before {
        return None;
    }
    Some(RawPlaybook {
        playbook: name?,
        description,
        on: on?,
        concurrency,
        vars: vars.unwrap_or_default(),
        steps: steps?,
        output,
    })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Can `steps.<id>` name this step in a template?
pub fn valid_step_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

pub(crate) fn check_keys(
    r: &mut Reporter<'_>,
    obj: &Map<String, Value>,
    path: &Path,
    allowed: &[&str],
    required: &[&str],
    step: Option<&str>,
) {
    // A misspelt required key is reported once, as unknown with a suggestion, not again
    // as missing.
    let mut suggested = Vec::new();
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            let help = did_you_mean(key, allowed.iter().copied());
            suggested.extend(help);
            let d = r.at_key(
                Code::UnknownKey,
                &path.key(key),
                step,
                format!("unknown key `{key}`"),
            );
            d.help = Some(match help {
                Some(h) => format!("did you mean `{h}`?"),
                None => format!("expected one of {}", list(allowed)),
            });
        }
    }
    for key in required {
        if !obj.contains_key(*key) && !suggested.contains(key) {
            r.at(
                Code::MissingKey,
                path,
                step,
                format!("missing required key `{key}`"),
            );
        }
    }
}

pub(crate) fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Deserialize one optional field, reporting a type error at its value.
pub(crate) fn field<T: DeserializeOwned>(
    r: &mut Reporter<'_>,
    obj: &Map<String, Value>,
    path: &Path,
    key: &str,
    step: Option<&str>,
) -> Option<T> {
    let v = obj.get(key)?;
    match serde_json::from_value::<T>(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            r.at(
                Code::InvalidValue,
                &path.key(key),
                step,
                format!("invalid `{key}`: {}", clean_serde(&e.to_string(), v)),
            );
            None
        }
    }
}

/// serde's messages name Rust types; say what the YAML held instead.
pub(crate) fn clean_serde(msg: &str, v: &Value) -> String {
    if msg.starts_with("data did not match any variant") || msg.starts_with("invalid type") {
        format!("unexpected {}", kind_of(v))
    } else {
        msg.to_string()
    }
}

fn trigger(r: &mut Reporter<'_>, v: Option<&Value>, path: &Path) -> Option<raw::RawTrigger> {
    let v = v?;
    let Some(obj) = v.as_object() else {
        r.at(
            Code::InvalidValue,
            path,
            None,
            format!(
                "`on` must be a mapping like `{{ event: okta }}`, found {}",
                kind_of(v)
            ),
        );
        return None;
    };
    check_keys(r, obj, path, raw::TRIGGER_KEYS, &["event"], None);
    let event: Option<String> = field(r, obj, path, "event", None);
    if let Some(e) = &event {
        if e.starts_with("case.") && !CASE_EVENTS.contains(&e.as_str()) {
            let d = r.at(
                Code::UnknownEvent,
                &path.key("event"),
                None,
                format!("unknown case event `{e}`"),
            );
            d.help = Some(match did_you_mean(e, CASE_EVENTS.iter().copied()) {
                Some(h) => format!("did you mean `{h}`?"),
                None => format!("expected one of {}", list(CASE_EVENTS)),
            });
        } else if e.is_empty() {
            r.at(
                Code::InvalidValue,
                &path.key("event"),
                None,
                "`event` is empty".into(),
            );
        }
    }
    let condition = field(r, obj, path, "if", None);
    Some(raw::RawTrigger {
        event: event?,
        condition,
    })
}

fn steps(
    r: &mut Reporter<'_>,
    v: Option<&Value>,
    path: &Path,
    registry: &Registry,
) -> Option<Vec<RawStep>> {
    let v = v?;
    let Some(items) = v.as_array() else {
        r.at(
            Code::InvalidValue,
            path,
            None,
            format!("`steps` must be a list, found {}", kind_of(v)),
        );
        return None;
    };
    if items.is_empty() {
        r.at(Code::InvalidValue, path, None, "`steps` is empty".into());
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match step(r, item, &path.index(i), registry) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    // References between steps are checked on the raw items, so a step with a problem of
    // its own still has its ids, `needs` and `on_error` checked.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            continue;
        };
        let p = path.index(i);
        if let Some(&first) = seen.get(id) {
            let (first_pos, _) = r.doc.marks.value(&path.index(first).key("id"));
            r.at(
                Code::DuplicateStepId,
                &p.key("id"),
                Some(id),
                format!("duplicate step id `{id}`"),
            )
            .help = Some(format!(
                "first used on line {}; step ids must be unique within a playbook",
                first_pos.line
            ));
            ok = false;
        } else {
            seen.insert(id, i);
        }
    }
    let ids: BTreeSet<&str> = seen.keys().copied().collect();
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let sid = item.get("id").and_then(Value::as_str);
        let needs: Vec<(Path, &str)> = match item.get("needs") {
            Some(Value::String(n)) => vec![(p.key("needs"), n.as_str())],
            Some(Value::Array(ns)) => ns
                .iter()
                .enumerate()
                .filter_map(|(j, n)| Some((p.key("needs").index(j), n.as_str()?)))
                .collect(),
            _ => vec![],
        };
        for (np, need) in needs {
            if !ids.contains(need) {
                let d = r.at(
                    Code::DanglingNeeds,
                    &np,
                    sid,
                    format!("`needs` names unknown step `{need}`"),
                );
                d.help = Some(match did_you_mean(need, ids.iter().copied()) {
                    Some(h) => format!("did you mean `{h}`?"),
                    None => format!("steps in this playbook: {}", list_set(&ids)),
                });
                ok = false;
            }
        }
        if let Some(h) = item.get("on_error").and_then(Value::as_str) {
            if !matches!(h, "fail" | "continue") {
                if !ids.contains(h) {
                    let d = r.at(
                        Code::UnknownHandler,
                        &p.key("on_error"),
                        sid,
                        format!("`on_error` names unknown step `{h}`"),
                    );
                    d.help = Some(match did_you_mean(h, ids.iter().copied()) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => "use `fail`, `continue` or the id of a handler step".into(),
                    });
                    ok = false;
                } else if Some(h) == sid {
                    r.at(
                        Code::UnknownHandler,
                        &p.key("on_error"),
                        sid,
                        "a step cannot be its own error handler".into(),
                    );
                    ok = false;
                }
            }
        }
    }
    ok.then_some(out)
}

fn list_set(names: &BTreeSet<&str>) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn step(r: &mut Reporter<'_>, v: &Value, path: &Path, registry: &Registry) -> Option<RawStep> {
    let Some(obj) = v.as_object() else {
        r.at(
            Code::InvalidValue,
            path,
            None,
            format!(
                "a step must be a mapping with `id` and `uses`, found {}",
                kind_of(v)
            ),
        );
        return None;
    };
    let before = r.diags.len();
    let id_hint = obj.get("id").and_then(Value::as_str).map(str::to_string);
    let sid = id_hint.as_deref();
    check_keys(r, obj, path, raw::STEP_KEYS, &["id", "uses"], sid);

    let id: Option<String> = field(r, obj, path, "id", sid);
    if let Some(id) = &id {
        if !valid_step_id(id) {
            r.at(
                Code::InvalidStepId,
                &path.key("id"),
                sid,
                format!("step id `{id}` must start with a letter or `_` and hold only letters, digits and `_`"),
            )
            .help = Some(format!("templates refer to it as `steps.{}`", id.replace('-', "_")));
        }
    }
    let uses: Option<String> = field(r, obj, path, "uses", sid);
    let with: Option<Map<String, Value>> = match obj.get("with") {
        None | Some(Value::Null) => Some(Map::new()),
        Some(Value::Object(m)) => Some(m.clone()),
        Some(other) => {
            r.at(
                Code::InvalidValue,
                &path.key("with"),
                sid,
                format!(
                    "`with` must be a mapping of inputs, found {}",
                    kind_of(other)
                ),
            );
            None
        }
    };
    if let (Some(uses), Some(with)) = (&uses, &with) {
        match registry.get(uses) {
            None => {
                let d = r.at(
                    Code::UnknownStepType,
                    &path.key("uses"),
                    sid,
                    format!("unknown step type `{uses}`"),
                );
                d.help = Some(match did_you_mean(uses, registry.names()) {
                    Some(h) => format!("did you mean `{h}`?"),
                    None => "`engine steps` lists the step types".into(),
                });
            }
            Some(reg) => {
                // Inside for_each, inputs are rendered per item; still check literals.
                inputs::check(r, &reg.spec.input_schema, with, &path.key("with"), sid);
            }
        }
    }
    let condition = field(r, obj, path, "if", sid);
    let needs = field(r, obj, path, "needs", sid).unwrap_or_default();
    let for_each = for_each(r, obj, path, sid);
    let retry = retry(r, obj, path, sid);
    let timeout: Option<String> = field(r, obj, path, "timeout", sid);
    if let Some(t) = &timeout {
        duration(r, t, &path.key("timeout"), sid);
    }
    let on_error = field(r, obj, path, "on_error", sid);

    if r.diags.len() > before {
        return None;
    }
    Some(RawStep {
        id: id?,
        uses: uses?,
        with: with?,
        condition,
        needs,
        for_each,
        retry,
        timeout,
        on_error,
    })
}

fn for_each(
    r: &mut Reporter<'_>,
    obj: &Map<String, Value>,
    path: &Path,
    sid: Option<&str>,
) -> Option<raw::RawForEach> {
    let v = obj.get("for_each")?;
    let p = path.key("for_each");
    match v {
        Value::String(s) if is_template(s) => Some(raw::RawForEach::Items(v.clone())),
        Value::Array(_) => Some(raw::RawForEach::Items(v.clone())),
        Value::Object(m) => {
            check_keys(r, m, &p, raw::FOR_EACH_KEYS, &["items"], sid);
            let spec: Option<raw::ForEachSpec> = field(r, obj, path, "for_each", sid);
            if let Some(s) = &spec {
                if s.concurrency == Some(0) {
                    r.at(
                        Code::InvalidValue,
                        &p.key("concurrency"),
                        sid,
                        "`concurrency` must be at least 1".into(),
                    );
                }
            }
            spec.map(raw::RawForEach::Spec)
        }
        other => {
            r.at(
                Code::InvalidValue,
                &p,
                sid,
                format!("`for_each` takes a template giving a list, a list, or `{{ items, concurrency }}`; found {}", kind_of(other)),
            );
            None
        }
    }
}

fn retry(
    r: &mut Reporter<'_>,
    obj: &Map<String, Value>,
    path: &Path,
    sid: Option<&str>,
) -> Option<raw::RawRetry> {
    let v = obj.get("retry")?;
    let p = path.key("retry");
    let Some(m) = v.as_object() else {
        r.at(
            Code::InvalidValue,
            &p,
            sid,
            format!(
                "`retry` must be a mapping like `{{ attempts: 3, backoff: 1s }}`, found {}",
                kind_of(v)
            ),
        );
        return None;
    };
    check_keys(r, m, &p, raw::RETRY_KEYS, &["attempts"], sid);
    let attempts: Option<u32> = field(r, m, &p, "attempts", sid);
    if let Some(a) = attempts {
        if !(1..=20).contains(&a) {
            r.at(
                Code::InvalidValue,
                &p.key("attempts"),
                sid,
                format!("`attempts` must be between 1 and 20, found {a}"),
            );
        }
    }
    let backoff: Option<String> = field(r, m, &p, "backoff", sid);
    if let Some(b) = &backoff {
        duration(r, b, &p.key("backoff"), sid);
    }
    let max_backoff: Option<String> = field(r, m, &p, "max_backoff", sid);
    if let Some(b) = &max_backoff {
        duration(r, b, &p.key("max_backoff"), sid);
    }
    let jitter = field(r, m, &p, "jitter", sid);
    let on = field(r, m, &p, "on", sid);
    Some(raw::RawRetry {
        attempts: attempts?,
        backoff,
        max_backoff,
        jitter,
        on,
    })
}

/// Parse a duration like `30s`, `1m`, `500ms`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        // humantime appends every unit it knows; the help line shows the common ones.
        let msg = e.to_string();
        match msg.split_once(", supported units") {
            Some((head, _)) => head.replace('"', "`"),
            None => msg,
        }
    })
}

fn duration(r: &mut Reporter<'_>, s: &str, path: &Path, sid: Option<&str>) -> Option<Duration> {
    match parse_duration(s) {
        Ok(d) if d.is_zero() => {
            r.at(
                Code::InvalidValue,
                path,
                sid,
                "a duration must be more than zero".into(),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            r.at(
                Code::InvalidValue,
                path,
                sid,
                format!("invalid duration `{s}`: {e}"),
            )
            .help = Some("write durations like `500ms`, `30s`, `5m`, `1h`".into());
            None
        }
    }
}
