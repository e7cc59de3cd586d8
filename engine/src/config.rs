//! The configuration file (`--config`): YAML, every key optional, `${VAR}` read from the
//! environment. Steps read their own sections from it through [`crate::step::StepContext`].

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::Error;

/// Read a config file; `None` gives an empty config.
pub fn load(path: Option<&Path>) -> Result<Value, Error> {
    let Some(path) = path else {
        return Ok(Value::Object(Map::new()));
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut v: Value = crate::load::yaml::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    if v.is_null() {
        v = Value::Object(Map::new());
    }
    if !v.is_object() {
        return Err(Error::Config(format!(
            "{}: the config must be a mapping",
            path.display()
        )));
    }
    let mut missing = Vec::new();
    expand_env(&mut v, &mut missing);
    if !missing.is_empty() {
        missing.sort();
        missing.dedup();
        return Err(Error::Config(format!(
            "{}: environment variable(s) not set: {}",
            path.display(),
            missing.join(", ")
        )));
    }
    Ok(v)
}

/// Resolve `${VAR}` in every string of a config tree; names of unset variables go to `missing`.
pub fn expand_env(v: &mut Value, missing: &mut Vec<String>) {
    match v {
        Value::String(s) => *s = expand_str(s, missing),
        Value::Array(items) => items.iter_mut().for_each(|i| expand_env(i, missing)),
        Value::Object(map) => map.iter_mut().for_each(|(_, c)| expand_env(c, missing)),
        _ => {}
    }
}

fn expand_str(s: &str, missing: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match std::env::var(name) {
                    Ok(val) => out.push_str(&val),
                    Err(_) => missing.push(name.to_string()),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_are_expanded_and_missing_ones_named() {
        std::env::set_var("CASEFLOW_TEST_TOKEN", "s3cret");
        let mut v = serde_json::json!({"okta": {"token": "${CASEFLOW_TEST_TOKEN}", "x": "a${CASEFLOW_NOPE_X}b"}});
        let mut missing = Vec::new();
        expand_env(&mut v, &mut missing);
        assert_eq!(v["okta"]["token"], "s3cret");
        assert_eq!(missing, vec!["CASEFLOW_NOPE_X".to_string()]);
    }
}
