//! `cases.create`: open a case, or return the open case with the same `dedup_key`.

use std::collections::BTreeSet;

use async_trait::async_trait;
use engine::cases::{NewCase, Severity};
use engine::{StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{observables, store_error, CaseOutput, ObservableInput};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Default `medium`.
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub observables: Vec<ObservableInput>,
    #[serde(default)]
    pub tags: BTreeSet<String>,
    #[serde(default)]
    pub fields: Map<String, Value>,
    /// An open case with this key is returned instead of a new one (atomically).
    #[serde(default)]
    pub dedup_key: Option<String>,
}

pub struct Create;

#[async_trait]
impl TypedStep for Create {
    type Input = Input;
    type Output = CaseOutput;
    const NAME: &'static str = "cases.create";

    fn description(&self) -> &'static str {
        "Open a case (SLA from the severity policy); with `dedup_key`, return the open case with that key instead."
    }

    fn example(&self) -> Value {
        json!({
            "title": "Suspicious activity for {{ vars.user }}",
            "severity": "medium",
            "observables": [{"type": "user", "value": "{{ vars.user }}"}, {"type": "ip", "value": "{{ vars.ip }}"}],
            "tags": ["okta"]
        })
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        super::check_sla(config)
    }

    async fn run(&self, input: Input, ctx: &StepContext) -> Result<CaseOutput, StepError> {
        let severity = input.severity.unwrap_or(Severity::Medium);
        let meta = ctx.write_meta();
        let sla = super::sla_for(ctx.config(), severity).map_err(StepError::permanent)?;
        let new = NewCase {
            title: input.title,
            description: input.description,
            severity,
            assignee: None,
            tags: input.tags,
            fields: input.fields,
            observables: observables(&input.observables),
            sla_policy: sla.map(|_| format!("severity:{}", severity.as_str())),
            sla_due_at: sla.map(|d| super::due(meta.at, d)),
            dedup_key: input.dedup_key,
        };
        let out = ctx.store()?.create(new, &meta).await.map_err(store_error)?;
        Ok(CaseOutput {
            case: out.case,
            created: Some(out.created),
        })
    }
}
