//! All YAML parsing lives here, so replacing the deprecated `serde_yaml` is a one-file change.
//!
//! Two parsers read the same text: `serde_yaml` gives the values (YAML 1.2 core schema,
//! alias expansion with its repetition limit), and `yaml-rust2`'s event parser gives the
//! line and column of every key and value. Both are indexed by the same [`Path`] so that a
//! problem found in a value can be reported where it stands in the file.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::error::Pos;

/// Largest playbook file accepted; anything bigger is not a playbook.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Deepest nesting accepted, well above any real playbook.
pub const MAX_DEPTH: usize = 64;
/// Most nodes one document may expand to (aliases included).
pub const MAX_NODES: usize = 200_000;

/// A path into a document: `steps[2].with.severity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Path(String);

impl Path {
    pub fn root() -> Self {
        Path(String::new())
    }
    pub fn key(&self, k: &str) -> Self {
        if self.0.is_empty() {
            Path(k.to_string())
        } else {
            Path(format!("{}.{k}", self.0))
        }
    }
    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<document>"
        } else {
            &self.0
        })
    }
}

/// Positions of keys and values in one document.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    start: Pos,
    values: HashMap<Path, (Pos, usize)>,
    keys: HashMap<Path, (Pos, usize)>,
}

impl Marks {
    /// Where the value at `path` starts, and its width; falls back to the nearest parent.
    pub fn value(&self, path: &Path) -> (Pos, usize) {
        self.lookup(&self.values, path)
    }
    /// Where the key naming `path` stands (for unknown keys); falls back to the value.
    pub fn key(&self, path: &Path) -> (Pos, usize) {
        match self.keys.get(path) {
            Some(m) => *m,
            None => self.value(path),
        }
    }
    fn lookup(&self, map: &HashMap<Path, (Pos, usize)>, path: &Path) -> (Pos, usize) {
        let mut p = path.0.as_str();
        loop {
            if let Some(m) = map.get(&Path(p.to_string())) {
                return *m;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return map.get(&Path::root()).copied().unwrap_or((self.start, 1)),
            }
        }
    }
}

/// One YAML document of a file, with its value and the positions of its parts.
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    pub marks: Marks,
}

/// A problem found while parsing, before any playbook semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Syntax { pos: Pos, message: String },
    TooComplex { pos: Pos, message: String },
}

/// Parse every `---` document of `src`.
pub fn parse_documents(src: &str) -> Result<Vec<Document>, ParseError> {
    if src.len() > MAX_FILE_BYTES {
        return Err(ParseError::TooComplex {
            pos: Pos { line: 1, col: 1 },
            message: format!("file is larger than {} bytes", MAX_FILE_BYTES),
        });
    }
    // libyaml (through serde_yaml) first: its syntax messages say where the broken
    // construct started, and its alias repetition limit stops alias bombs early.
    let mut values = Vec::new();
    for de in serde_yaml::Deserializer::from_str(src) {
        values.push(serde_yaml::Value::deserialize(de).map_err(|e| syntax_error(&e))?);
    }
    let mut marks = collect_marks(src)?;
    let mut docs = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let marks = if i < marks.len() {
            std::mem::take(&mut marks[i])
        } else {
            Marks::default()
        };
        let mut budget = MAX_NODES;
        let value = to_json(value, 0, &mut budget).map_err(|message| ParseError::TooComplex {
            pos: marks.start,
            message,
        })?;
        docs.push(Document { value, marks });
    }
    Ok(docs)
}

/// Deserialize a value of a document into a typed struct (for config files and tests).
pub fn from_str<T: serde::de::DeserializeOwned>(src: &str) -> Result<T, String> {
    serde_yaml::from_str(src).map_err(|e| match e.location() {
        Some(l) => format!("{}:{}: {e}", l.line(), l.column()),
        None => e.to_string(),
    })
}

/// Serialize a value as YAML (for `engine steps` examples).
pub fn to_string<T: serde::Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}

fn syntax_error(e: &serde_yaml::Error) -> ParseError {
    let pos = e
        .location()
        .map(|l| Pos {
            line: l.line(),
            col: l.column(),
        })
        .unwrap_or(Pos { line: 1, col: 1 });
    ParseError::from_libyaml(pos, &e.to_string())
}

impl ParseError {
    /// libyaml says `problem at line 8 column 3, while parsing a flow mapping at line 7
    /// column 11`; the position is printed separately, the context is kept in the message.
    fn from_libyaml(pos: Pos, text: &str) -> ParseError {
        let (problem, context) = match text.split_once(", while ") {
            Some((p, c)) => (p, Some(c)),
            None => (text, None),
        };
        let strip = |s: &str| match s.find(" at line ") {
            Some(i) => s[..i].to_string(),
            None => s.to_string(),
        };
        let mut message = strip(problem);
        if let Some(c) = context {
            // `parsing a flow mapping at line 7 column 11` -> `... started at 7:11`
            let started = c
                .find(" at line ")
                .map(|i| &c[i + " at line ".len()..])
                .and_then(|rest| rest.split_once(" column "))
                .map(|(l, col)| format!(" (started at {l}:{col})"))
                .unwrap_or_default();
            message = format!("{message}, while {}{started}", strip(c));
        }
        if message.contains("repetition limit") {
            let message = "aliases expand to too many values".to_string();
            ParseError::TooComplex { pos, message }
        } else if message.contains("recursion limit") {
            let message = "nesting too deep".to_string();
            ParseError::TooComplex { pos, message }
        } else {
            ParseError::Syntax { pos, message }
        }
    }
}

fn to_json(v: serde_yaml::Value, depth: usize, budget: &mut usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
    }
    if *budget == 0 {
        return Err(format!("document expands to more than {MAX_NODES} values"));
    }
    *budget -= 1;
    Ok(match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(seq) => Value::Array(
            seq.into_iter()
                .map(|v| to_json(v, depth + 1, budget))
                .collect::<Result<_, _>>()?,
        ),
        serde_yaml::Value::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Null => "null".to_string(),
                    _ => return Err("mapping keys must be plain scalars".to_string()),
                };
                out.insert(key, to_json(v, depth + 1, budget)?);
            }
            Value::Object(out)
        }
        serde_yaml::Value::Tagged(t) => to_json(t.value, depth, budget)?,
    })
}

enum Frame {
    /// `first` until the first key is seen: a block mapping's start mark is reported at
    /// the first key's `:`, so the first key's own position is the better start.
    Map {
        path: Path,
        key: Option<String>,
        first: bool,
    },
    Seq {
        path: Path,
        next: usize,
    },
}

#[derive(Default)]
struct MarkCollector {
    docs: Vec<Marks>,
    stack: Vec<Frame>,
    too_deep: bool,
}

impl MarkCollector {
    fn current(&mut self) -> Option<&mut Marks> {
        self.docs.last_mut()
    }

    /// The path of the next value, or `None` when the next scalar is a mapping key.
    fn next_value_path(&mut self) -> Option<Path> {
        match self.stack.last_mut() {
            None => Some(Path::root()),
            Some(Frame::Map { path, key, .. }) => key.take().map(|k| path.key(&k)),
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                Some(p)
            }
        }
    }

    fn record_value(&mut self, path: Path, mark: Marker, width: usize) {
        let pos = to_pos(mark);
        if let Some(m) = self.current() {
            m.values.insert(path, (pos, width.max(1)));
        }
    }

    fn start_container(&mut self, mark: Marker, seq: bool) {
        if self.stack.len() > MAX_DEPTH {
            self.too_deep = true;
        }
        let path = match self.next_value_path() {
            Some(p) => p,
            // A complex key: give it a path nobody will look up.
            None => Path("<complex key>".to_string()),
        };
        self.record_value(path.clone(), mark, 1);
        self.stack.push(if seq {
            Frame::Seq { path, next: 0 }
        } else {
            Frame::Map {
                path,
                key: None,
                first: true,
            }
        });
    }
}

impl MarkedEventReceiver for MarkCollector {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => {
                self.docs.push(Marks {
                    start: to_pos(mark),
                    ..Marks::default()
                });
                self.stack.clear();
            }
            Event::Scalar(text, style, ..) => match self.next_value_path() {
                Some(path) => {
                    // The mark of a quoted scalar is its opening quote: underline both.
                    let quotes = match style {
                        TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => 2,
                        _ => 0,
                    };
                    self.record_value(path, mark, text.chars().count() + quotes)
                }
                None => {
                    if let Some(Frame::Map { path, key, first }) = self.stack.last_mut() {
                        let p = path.key(&text);
                        *key = Some(text.clone());
                        let pos = to_pos(mark);
                        if let Some(m) = self.docs.last_mut() {
                            m.keys.insert(p, (pos, text.chars().count().max(1)));
                            if std::mem::take(first) {
                                if let Some(start) = m.values.get_mut(path) {
                                    if pos < start.0 {
                                        *start = (pos, 1);
                                    }
                                }
                            }
                        }
                    }
                }
            },
            Event::Alias(_) => {
                if let Some(path) = self.next_value_path() {
                    self.record_value(path, mark, 1);
                }
            }
            Event::SequenceStart(..) => self.start_container(mark, true),
            Event::MappingStart(..) => self.start_container(mark, false),
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

fn to_pos(m: Marker) -> Pos {
    Pos {
        line: m.line().max(1),
        col: m.col() + 1,
    }
}

fn collect_marks(src: &str) -> Result<Vec<Marks>, ParseError> {
    // Drive the event parser by hand: its own `load` recurses once per nesting level,
    // which a hostile file could use to exhaust the stack.
    let mut collector = MarkCollector::default();
    let mut parser = Parser::new_from_str(src);
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| ParseError::Syntax {
            pos: to_pos(*e.marker()),
            message: e.info().to_string(),
        })?;
        if ev == Event::StreamEnd {
            break;
        }
        collector.on_event(ev, mark);
        if collector.too_deep {
            return Err(ParseError::TooComplex {
                pos: to_pos(mark),
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
    }
    Ok(collector.docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_point_at_keys_and_values() {
        let src = "playbook: a\nsteps:\n  - id: x\n    uses: cases.crate\n";
        let docs = parse_documents(src).unwrap();
        assert_eq!(docs.len(), 1);
        let m = &docs[0].marks;
        let uses = Path::root().key("steps").index(0).key("uses");
        assert_eq!(m.value(&uses), (Pos { line: 4, col: 11 }, 11));
        assert_eq!(m.key(&uses).0, Pos { line: 4, col: 5 });
        // A block mapping starts at its first key, not at that key's `:`.
        assert_eq!(m.value(&Path::root()).0, Pos { line: 1, col: 1 });
        assert_eq!(
            m.value(&Path::root().key("steps").index(0)).0,
            Pos { line: 3, col: 5 }
        );
        // Unknown deeper paths fall back to the nearest parent.
        assert_eq!(m.value(&uses.key("nope")).0, Pos { line: 4, col: 11 });
    }

    #[test]
    fn several_documents() {
        let docs = parse_documents("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value["b"], 2);
        assert_eq!(docs[1].marks.value(&Path::root().key("b")).0.line, 3);
    }

    #[test]
    fn syntax_errors_have_positions() {
        match parse_documents("a: [1, 2\nb: c\n") {
            Err(ParseError::Syntax { pos, .. }) => assert!(pos.line >= 1),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_keep_libyaml_context() {
        match parse_documents("a: [1, 2\nb: c\n") {
            Err(ParseError::Syntax { pos, message }) => {
                assert_eq!(pos.line, 2);
                assert!(
                    message.contains("while parsing a flow sequence (started at 1:4)"),
                    "{message}"
                );
                assert!(!message.contains(" at line "), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn alias_bombs_are_rejected_quickly() {
        let mut src = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for name in ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] {
            src.push_str(&format!(
                "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = name;
        }
        let started = std::time::Instant::now();
        assert!(matches!(
            parse_documents(&src),
            Err(ParseError::TooComplex { .. })
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let src = format!("{}{}", "[".repeat(500), "]".repeat(500));
        assert!(matches!(
            parse_documents(&src),
            Err(ParseError::TooComplex { .. }) | Err(ParseError::Syntax { .. })
        ));
    }
}
