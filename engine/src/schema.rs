//! The JSON Schema of the playbook format, with each registered step type's inputs, so
//! YAML editors can autocomplete and check playbooks (`engine schema`).

use serde_json::{json, Value};

use crate::load::raw::RawPlaybook;
use crate::step::Registry;

/// The schema of one playbook document.
pub fn playbook_schema(registry: &Registry) -> Value {
    let mut root = schemars::schema_for!(RawPlaybook).to_value();
    root["$id"] = json!("https://caseflow.dev/schema/playbook.json");
    root["title"] = json!("Caseflow playbook");
    let mut defs = root.get("$defs").cloned().unwrap_or_else(|| json!({}));
    let names: Vec<Value> = registry.names().map(|n| json!(n)).collect();
    let mut branches = Vec::new();
    for spec in registry.specs() {
        let prefix = format!("{}.", spec.name);
        let mut input = spec.input_schema.clone();
        if let Some(Value::Object(own)) = input.as_object_mut().and_then(|o| o.remove("$defs")) {
            for (k, v) in own {
                let mut v = v;
                rewrite_refs(&mut v, &prefix);
                defs[format!("{prefix}{k}")] = v;
            }
        }
        rewrite_refs(&mut input, &prefix);
        if let Some(o) = input.as_object_mut() {
            o.remove("$schema");
            o.insert("description".into(), json!(spec.description));
        }
        branches.push(json!({
            "if": { "properties": { "uses": { "const": spec.name } }, "required": ["uses"] },
            "then": { "properties": { "with": input } }
        }));
    }
    if let Some(step) = defs.get_mut("RawStep").and_then(Value::as_object_mut) {
        if let Some(props) = step.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert(
                "uses".into(),
                json!({ "description": "The step type (see `engine steps`).", "type": "string", "enum": names }),
            );
        }
        step.insert("allOf".into(), Value::Array(branches));
    }
    root["$defs"] = defs;
    root
}

fn rewrite_refs(v: &mut Value, prefix: &str) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/$defs/") {
                    *r = format!("#/$defs/{prefix}{name}");
                }
            }
            for (_, child) in map.iter_mut() {
                rewrite_refs(child, prefix);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_refs(i, prefix)),
        _ => {}
    }
}
