//! `cases.update`: a partial update of one case in one atomic change.

use std::collections::BTreeSet;

use async_trait::async_trait;
use engine::cases::CaseChange;
use engine::{StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{change, observables, CaseOutput, ObservableInput};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The case id, e.g. `CASE-000123`.
    pub case: String,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub observables: Vec<ObservableInput>,
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Custom fields to merge; `null` removes one.
    #[serde(default)]
    pub fields: Map<String, Value>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

pub struct Update;

#[async_trait]
impl TypedStep for Update {
    type Input = Input;
    type Output = CaseOutput;
    const NAME: &'static str = "cases.update";

    fn description(&self) -> &'static str {
        "Update a case: add a comment, observables, tags, fields; change title or description."
    }

    fn example(&self) -> Value {
        json!({
            "case": "{{ steps.existing.cases[0].id }}",
            "comment": "Seen again: {{ event.eventType }} from {{ vars.ip }}",
            "observables": [{"type": "ip", "value": "{{ vars.ip }}"}]
        })
    }

    async fn run(&self, input: Input, ctx: &StepContext) -> Result<CaseOutput, StepError> {
        let mut changes = Vec::new();
        if let Some(t) = input.title {
            changes.push(CaseChange::SetTitle(t));
        }
        if let Some(d) = input.description {
            changes.push(CaseChange::SetDescription(d));
        }
        let obs = observables(&input.observables);
        if !obs.is_empty() {
            changes.push(CaseChange::AddObservables(obs));
        }
        if !input.tags.is_empty() {
            changes.push(CaseChange::AddTags(input.tags.into_iter().collect()));
        }
        if !input.fields.is_empty() {
            changes.push(CaseChange::SetFields(input.fields));
        }
        if let Some(c) = input.comment.filter(|c| !c.trim().is_empty()) {
            changes.push(CaseChange::AddComment(c));
        }
        let out = change(ctx, &input.case, changes).await?;
        Ok(CaseOutput {
            case: out.case,
            created: None,
        })
    }
}
