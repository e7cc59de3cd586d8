//! The one error type people read: a diagnostic with a stable code and a location.
//!
//! Every problem found while loading, validating or compiling a playbook becomes a
//! [`Diagnostic`]. They are collected, never thrown one at a time, so `engine validate`
//! reports everything wrong with a file in one pass. Codes are stable and explained in
//! `docs/errors.md`.

use std::fmt;
use std::path::{Path, PathBuf};

/// A stable error code; the string is what users grep for and what `docs/errors.md` explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// E001: the file is not valid YAML.
    YamlSyntax,
    /// E002: the file holds no playbook.
    Empty,
    /// E003: a document (or a value that must be a mapping) is not a mapping.
    NotAMapping,
    /// E004: the file is not UTF-8.
    InvalidUtf8,
    /// E005: the file is too large or too deeply nested / too repetitive (alias bombs).
    TooComplex,
    /// E006: the file cannot be read.
    Io,
    /// E010: a key the format does not know.
    UnknownKey,
    /// E011: a required key is missing.
    MissingKey,
    /// E012: a value has the wrong type or an invalid form.
    InvalidValue,
    /// E013: two playbooks share a name.
    DuplicatePlaybook,
    /// E020: `uses` names no registered step type.
    UnknownStepType,
    /// E021: a literal step input does not fit the step's input type.
    InvalidStepInput,
    /// E022: a required step input is missing.
    MissingStepInput,
    /// E023: a step id that cannot be referenced from templates.
    InvalidStepId,
    /// E030: two steps share an id.
    DuplicateStepId,
    /// E031: `needs` names a step that does not exist.
    DanglingNeeds,
    /// E032: steps depend on each other in a cycle.
    Cycle,
    /// E033: a template refers to a step that does not exist.
    UnknownStepReference,
    /// E034: `on_error` names a step that does not exist.
    UnknownHandler,
    /// E040: template syntax error.
    TemplateSyntax,
    /// E041: a template uses a variable that is never defined.
    UnknownVariable,
    /// E050: the trigger names an unknown case event.
    UnknownEvent,
    /// E060: a playbook test names a playbook that is not loaded.
    TestUnknownPlaybook,
    /// E061: a playbook test names a step (or step type) no loaded playbook has.
    TestUnknownStep,
    /// E062: an event of a playbook test cannot be read.
    TestEvent,
    /// E063: two tests in one file share a name.
    TestDuplicateName,
}

impl Code {
    pub const ALL: &'static [Code] = &[
        Code::YamlSyntax,
        Code::Empty,
        Code::NotAMapping,
        Code::InvalidUtf8,
        Code::TooComplex,
        Code::Io,
        Code::UnknownKey,
        Code::MissingKey,
        Code::InvalidValue,
        Code::DuplicatePlaybook,
        Code::UnknownStepType,
        Code::InvalidStepInput,
        Code::MissingStepInput,
        Code::InvalidStepId,
        Code::DuplicateStepId,
        Code::DanglingNeeds,
        Code::Cycle,
        Code::UnknownStepReference,
        Code::UnknownHandler,
        Code::TemplateSyntax,
        Code::UnknownVariable,
        Code::UnknownEvent,
        Code::TestUnknownPlaybook,
        Code::TestUnknownStep,
        Code::TestEvent,
        Code::TestDuplicateName,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::YamlSyntax => "E001",
            Code::Empty => "E002",
            Code::NotAMapping => "E003",
            Code::InvalidUtf8 => "E004",
            Code::TooComplex => "E005",
            Code::Io => "E006",
            Code::UnknownKey => "E010",
            Code::MissingKey => "E011",
            Code::InvalidValue => "E012",
            Code::DuplicatePlaybook => "E013",
            Code::UnknownStepType => "E020",
            Code::InvalidStepInput => "E021",
            Code::MissingStepInput => "E022",
            Code::InvalidStepId => "E023",
            Code::DuplicateStepId => "E030",
            Code::DanglingNeeds => "E031",
            Code::Cycle => "E032",
            Code::UnknownStepReference => "E033",
            Code::UnknownHandler => "E034",
            Code::TemplateSyntax => "E040",
            Code::UnknownVariable => "E041",
            Code::UnknownEvent => "E050",
            Code::TestUnknownPlaybook => "E060",
            Code::TestUnknownStep => "E061",
            Code::TestEvent => "E062",
            Code::TestDuplicateName => "E063",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a problem is: 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// One problem with a playbook file, printable as `path:line:col: error[CODE]: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub file: PathBuf,
    pub pos: Pos,
    /// Width of the offending text, for the caret line (at least 1).
    pub width: usize,
    pub playbook: Option<String>,
    pub step: Option<String>,
    /// The test a problem of a playbook test file is in.
    pub test: Option<String>,
    pub help: Option<String>,
    /// The source line the position points into, for the snippet.
    pub line_text: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, file: &Path, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            file: file.to_path_buf(),
            pos,
            width: 1,
            playbook: None,
            step: None,
            test: None,
            help: None,
            line_text: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The first line alone: the stable, machine-readable form.
    pub fn headline(&self) -> String {
        let mut s = format!(
            "{}:{}:{}: error[{}]: {}",
            self.file.display(),
            self.pos.line,
            self.pos.col,
            self.code,
            self.message
        );
        match (&self.playbook, &self.step) {
            (Some(p), Some(st)) => s.push_str(&format!(" (playbook `{p}`, step `{st}`)")),
            (Some(p), None) => s.push_str(&format!(" (playbook `{p}`)")),
            _ => {}
        }
        if let Some(t) = &self.test {
            s.push_str(&format!(" (test `{t}`)"));
        }
        s
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.headline())?;
        if let Some(text) = &self.line_text {
            let num = self.pos.line.to_string();
            let pad = " ".repeat(num.len());
            writeln!(f, "{pad} |")?;
            writeln!(f, "{num} | {text}")?;
            let indent: String = text
                .chars()
                .take(self.pos.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{pad} | {indent}{}", "^".repeat(self.width.max(1)))?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

/// Errors of the engine's library API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Playbooks did not load: every problem found, in file order.
    #[error("{} problem(s) in playbooks:\n{}", .0.len(), render_all(.0))]
    Invalid(Vec<Diagnostic>),
    /// A file or directory could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An event could not be understood.
    #[error("invalid event: {0}")]
    Event(String),
    /// A configuration problem.
    #[error("invalid config: {0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::persist::StoreError),
    /// Anything else the runtime reports.
    #[error("{0}")]
    Runtime(String),
}

fn render_all(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| d.to_string()).collect()
}

/// Suggest the closest of `candidates` to `name`, when one is close enough to be a typo:
/// few edits (transpositions count as one) or a strong common prefix.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = match name.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        n => n / 4 + 1,
    };
    let mut best: Option<(&str, usize, f64)> = None;
    for c in candidates {
        let dist = strsim::osa_distance(name, c);
        let jw = strsim::jaro_winkler(name, c);
        if dist > limit && jw < 0.9 {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, d, j)) => dist < d || (dist == d && jw > j),
        };
        if better {
            best = Some((c, dist, jw));
        }
    }
    best.map(|(c, _, _)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = ["playbook", "description", "on", "steps", "output", "vars"];
        assert_eq!(did_you_mean("stpes", keys), Some("steps"));
        assert_eq!(did_you_mean("descripton", keys), Some("description"));
        assert_eq!(did_you_mean("lgo", ["log", "set"]), Some("log"));
        assert_eq!(
            did_you_mean("cases.crate", ["cases.create", "cases.update"]),
            Some("cases.create")
        );
        assert_eq!(did_you_mean("zzz", keys), None);
        assert_eq!(did_you_mean("timeout", keys), None);
    }
}
