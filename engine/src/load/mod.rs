//! Load: files on disk to YAML documents with positions.
//!
//! `engine run` and `engine validate` accept files and directories; a directory
//! contributes every `*.yaml`/`*.yml` file below it except test files (`*.test.yaml`) and
//! the `samples/`, `data/` and `tests/` folders, which hold events, offline data and tests.

// A `Diagnostic` is the one error of these functions, returned once per file: boxing it
// would only add noise at every call site.
#![allow(clippy::result_large_err)]

pub mod raw;
pub mod yaml;

use std::path::{Path, PathBuf};

use crate::error::{Code, Diagnostic, Pos};

/// One playbook file, read and parsed.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    pub documents: Vec<yaml::Document>,
}

impl SourceFile {
    /// The text of 1-based line `line`, for snippets.
    pub fn line(&self, line: usize) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)?)
    }
}

/// Expand paths into playbook files, in a stable order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostic> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out).map_err(|e| io_diag(p, &e))?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(Diagnostic::new(
                Code::Io,
                p,
                Pos { line: 1, col: 1 },
                "no such file or directory",
            ));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if !matches!(name, "samples" | "data" | "tests") && !name.starts_with('.') {
                walk(&p, out)?;
            }
        } else if (name.ends_with(".yaml") || name.ends_with(".yml"))
            && !name.ends_with(".test.yaml")
            && !name.ends_with(".test.yml")
        {
            out.push(p);
        }
    }
    Ok(())
}

fn io_diag(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::new(
        Code::Io,
        path,
        Pos { line: 1, col: 1 },
        format!("cannot read: {e}"),
    )
}

/// Read and parse one file. Problems come back as diagnostics, never as a panic.
pub fn read_file(path: &Path) -> Result<SourceFile, Diagnostic> {
    parse_source(path, read_bytes(path)?)
}

/// Read and parse a YAML file that is not a playbook (a playbook test file): the same
/// limits and diagnostics, but an empty file is the caller's to judge.
pub fn read_yaml(path: &Path) -> Result<SourceFile, Diagnostic> {
    parse_yaml(path, read_bytes(path)?)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    use std::io::Read;
    // Read one byte past the limit, so a huge (or endless) file costs no more than that.
    let limit = yaml::MAX_FILE_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit).read_to_end(&mut bytes))
        .map_err(|e| io_diag(path, &e))?;
    Ok(bytes)
}

/// Parse a file's bytes (also used for playbooks that do not come from disk).
pub fn parse_source(path: &Path, bytes: Vec<u8>) -> Result<SourceFile, Diagnostic> {
    let file = parse_yaml(path, bytes)?;
    if file.documents.is_empty() {
        return Err(Diagnostic::new(
            Code::Empty,
            path,
            Pos { line: 1, col: 1 },
            "file holds no playbook",
        )
        .with_help("a playbook needs at least `playbook`, `on` and `steps`"));
    }
    Ok(file)
}

/// Size, UTF-8 and YAML checks; the documents that are not empty.
fn parse_yaml(path: &Path, bytes: Vec<u8>) -> Result<SourceFile, Diagnostic> {
    if bytes.len() > yaml::MAX_FILE_BYTES {
        return Err(Diagnostic::new(
            Code::TooComplex,
            path,
            Pos { line: 1, col: 1 },
            format!("file rejected: larger than {} bytes", yaml::MAX_FILE_BYTES),
        )
        .with_help("a playbook is a few kilobytes; is this the right file?"));
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let col = valid.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            return Err(Diagnostic::new(
                Code::InvalidUtf8,
                path,
                Pos { line, col },
                match e.as_bytes().get(valid.len()) {
                    Some(b) => format!("file is not valid UTF-8: unexpected byte 0x{b:02X}"),
                    None => "file is not valid UTF-8: it ends inside a character".to_string(),
                },
            )
            .with_help("save the file as UTF-8"));
        }
    };
    let documents = match yaml::parse_documents(&text) {
        Ok(d) => d,
        Err(yaml::ParseError::Syntax { pos, message }) => {
            let mut d = Diagnostic::new(
                Code::YamlSyntax,
                path,
                pos,
                format!("invalid YAML: {message}"),
            );
            d.line_text = text
                .lines()
                .nth(pos.line.saturating_sub(1))
                .map(str::to_string);
            return Err(d);
        }
        Err(yaml::ParseError::TooComplex { pos, message }) => {
            return Err(Diagnostic::new(
                Code::TooComplex,
                path,
                pos,
                format!("file rejected: {message}"),
            )
            .with_help(
                "playbooks are small and shallow; aliases (`*name`) that expand to huge \
                 values and deep nesting are refused so loading stays fast",
            ))
        }
    };
    let documents: Vec<_> = documents
        .into_iter()
        .filter(|d| !d.value.is_null())
        .collect();
    Ok(SourceFile {
        path: path.to_path_buf(),
        text,
        documents,
    })
}
