//! `cases.set_sla`: a resolution deadline, as a duration from the case's creation or the
//! policy for its severity.

use async_trait::async_trait;
use engine::cases::CaseChange;
use engine::{StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{change, due, CaseOutput};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub case: String,
    /// Resolve within this long of the case's creation, e.g. `4h`. Kept when the severity changes later.
    #[serde(default)]
    pub duration: Option<String>,
    /// `severity`: the config's `sla` policy for the case's severity.
    #[serde(default)]
    pub policy: Option<String>,
}

pub struct SetSla;

#[async_trait]
impl TypedStep for SetSla {
    type Input = Input;
    type Output = CaseOutput;
    const NAME: &'static str = "cases.set_sla";

    fn description(&self) -> &'static str {
        "Set a case's resolution SLA: a duration from creation (`duration: 4h`) or the severity policy (`policy: severity`)."
    }

    fn example(&self) -> Value {
        json!({"case": "{{ steps.create.case.id }}", "duration": "4h"})
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        super::check_sla(config)
    }

    async fn run(&self, input: Input, ctx: &StepContext) -> Result<CaseOutput, StepError> {
        let case = super::load(ctx, &input.case).await?;
        let change_ = match (input.duration.as_deref(), input.policy.as_deref()) {
            (Some(d), None) => {
                let dur = humantime::parse_duration(d.trim())
                    .map_err(|e| StepError::permanent(format!("invalid `duration` `{d}`: {e}")))?;
                CaseChange::SetSla {
                    policy: Some(format!("fixed:{d}")),
                    due_at: Some(due(case.created_at, dur)),
                }
            }
            (None, Some("severity")) => super::severity_sla(ctx.config(), &case, case.severity)?
                .ok_or_else(|| {
                    StepError::permanent(format!(
                        "no SLA policy for severity `{}`",
                        case.severity.as_str()
                    ))
                })?,
            (None, Some(p)) => {
                return Err(StepError::permanent(format!(
                    "unknown SLA policy `{p}` (use `severity`)"
                )))
            }
            _ => {
                return Err(StepError::permanent(
                    "give exactly one of `duration` and `policy`",
                ))
            }
        };
        let out = change(ctx, &input.case, vec![change_]).await?;
        Ok(CaseOutput {
            case: out.case,
            created: None,
        })
    }
}
