//! Event input for `engine run`: files, stdin, and the playbooks' sample events.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Read events from a file (`-` is stdin): an event-hook body (`{"data": {"events": [...]}}`),
/// an array of events, or one event. Each comes with a label for the summary.
pub fn read(path: &Path) -> Result<Vec<(String, Value)>, String> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read events from stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("`{}` is not JSON: {e}", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("stdin")
        .to_string();
    let events = split(v).map_err(|e| format!("`{}`: {e}", path.display()))?;
    let n = events.len();
    Ok(events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            (
                if n == 1 {
                    name.clone()
                } else {
                    format!("{name}[{i}]")
                },
                e,
            )
        })
        .collect())
}

/// Split a JSON document into events.
pub fn split(v: Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(items) => {
            if let Some(bad) = items.iter().position(|e| !e.is_object()) {
                return Err(format!("event {bad} is not a JSON object"));
            }
            Ok(items)
        }
        Value::Object(ref m) => match m.get("data").and_then(|d| d.get("events")) {
            Some(Value::Array(items)) => split(Value::Array(items.clone())),
            Some(_) => Err("`data.events` is not a list".into()),
            None => Ok(vec![v]),
        },
        _ => Err("expected an event object, an array of events, or an event-hook body".into()),
    }
}

/// The sample events shipped next to the playbooks: `samples/*.json` beside each path.
pub fn samples(paths: &[PathBuf]) -> Result<Vec<(String, Value)>, String> {
    let mut dirs = Vec::new();
    for p in paths {
        let base = if p.is_dir() {
            p.clone()
        } else {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let dir = base.join("samples");
        if dir.is_dir() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let mut out = Vec::new();
    for dir in &dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            out.extend(read(&f)?);
        }
    }
    if out.is_empty() {
        return Err("no events: pass `--event FILE` (or `-` for stdin), or add sample events in a `samples/` folder next to the playbooks".into());
    }
    Ok(out)
}
