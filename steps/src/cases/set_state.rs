//! `cases.set_state`: move a case through its states (resolving needs a reason).

use async_trait::async_trait;
use engine::cases::{CaseChange, CaseState};
use engine::{StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{change, CaseOutput};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub case: String,
    pub state: CaseState,
    /// Required for `resolved` and `closed`: the resolution.
    #[serde(default)]
    pub reason: Option<String>,
}

pub struct SetState;

#[async_trait]
impl TypedStep for SetState {
    type Input = Input;
    type Output = CaseOutput;
    const NAME: &'static str = "cases.set_state";

    fn description(&self) -> &'static str {
        "Move a case to another state (new, in_progress, on_hold, resolved, closed); resolving needs a `reason`."
    }

    fn example(&self) -> Value {
        json!({"case": "{{ case.id }}", "state": "resolved", "reason": "benign: IP on the allow-list"})
    }

    async fn run(&self, input: Input, ctx: &StepContext) -> Result<CaseOutput, StepError> {
        let out = change(
            ctx,
            &input.case,
            vec![CaseChange::SetState {
                to: input.state,
                reason: input.reason,
            }],
        )
        .await?;
        Ok(CaseOutput {
            case: out.case,
            created: None,
        })
    }
}
