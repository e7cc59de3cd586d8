//! Shared by the network-step tests (`#[path = "net_support.rs"] mod support;`): run one
//! step of the built-in registry through a one-step playbook, the way the engine runs it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use engine::schedule::{execute, RunInput};
use engine::{Registry, RunReport, Services, StepReport};
use serde_json::{json, Value};

pub fn registry() -> Registry {
    let mut r = Registry::new();
    steps::register_builtin(&mut r);
    r
}

/// Run `uses` with `with` under `config`; `extra` adds step keys (`retry`, `timeout`).
pub async fn run_step_report(uses: &str, with: Value, config: Value, extra: Value) -> RunReport {
    let mut step = json!({"id": "s", "uses": uses, "with": with});
    if let (Some(step), Some(extra)) = (step.as_object_mut(), extra.as_object()) {
        step.extend(extra.clone());
    }
    let doc = json!({"playbook": "t", "on": {"event": "test"}, "steps": [step]});
    let registry = registry();
    let src = engine::load::parse_source(Path::new("test.yaml"), doc.to_string().into_bytes())
        .unwrap_or_else(|d| panic!("{d}"));
    let bundle = engine::compile::compile_sources(&[src], &registry)
        .unwrap_or_else(|ds| panic!("{}", ds.iter().map(|d| d.to_string()).collect::<String>()));
    let plan = bundle.playbooks[0].clone();
    let input = RunInput {
        run_id: "run-test".into(),
        trigger: "test".into(),
        event: json!({}),
        case: None,
        depth: 0,
    };
    let services = Services::new().with_seed(7).with_config(config);
    execute(plan, input, Arc::new(services)).await
}

pub async fn run_step(uses: &str, with: Value, config: Value) -> StepReport {
    step_of(run_step_report(uses, with, config, json!({})).await)
}

pub fn step_of(report: RunReport) -> StepReport {
    report.step("s").cloned().expect("the step ran")
}

/// The output of a step that must have succeeded.
pub fn ok(step: &StepReport) -> &Value {
    match (&step.output, &step.error) {
        (Some(o), None) => o,
        _ => panic!("step failed: {:?}", step.error),
    }
}

/// The error of a step that must have failed.
pub fn err(step: &StepReport) -> &engine::StepError {
    match &step.error {
        Some(e) => e,
        None => panic!("step succeeded: {:?}", step.output),
    }
}
