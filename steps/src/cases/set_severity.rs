//! `cases.set_severity`: change (or only raise) a case's severity; the SLA follows the
//! severity policy unless it was set explicitly.

use async_trait::async_trait;
use engine::cases::{CaseChange, Severity};
use engine::{StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{change, CaseOutput};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub case: String,
    pub severity: Severity,
    /// Only raise: a case already at this severity or above is left alone.
    #[serde(default)]
    pub raise_only: bool,
    /// A comment recorded with the change.
    #[serde(default)]
    pub reason: Option<String>,
}

pub struct SetSeverity;

#[async_trait]
impl TypedStep for SetSeverity {
    type Input = Input;
    type Output = CaseOutput;
    const NAME: &'static str = "cases.set_severity";

    fn description(&self) -> &'static str {
        "Set a case's severity (or only raise it); the SLA follows the severity policy unless set explicitly."
    }

    fn example(&self) -> Value {
        json!({"case": "{{ steps.create.case.id }}", "severity": "high", "raise_only": true, "reason": "VIP user"})
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        super::check_sla(config)
    }

    async fn run(&self, input: Input, ctx: &StepContext) -> Result<CaseOutput, StepError> {
        let case = super::load(ctx, &input.case).await?;
        if input.raise_only && case.severity >= input.severity {
            return Ok(CaseOutput {
                case,
                created: None,
            });
        }
        let mut changes = vec![CaseChange::SetSeverity(input.severity)];
        let follows_policy = case
            .sla
            .policy
            .as_deref()
            .is_none_or(|p| p.starts_with("severity:"));
        if follows_policy {
            changes.extend(super::severity_sla(ctx.config(), &case, input.severity)?);
        }
        if let Some(r) = input.reason.filter(|r| !r.trim().is_empty()) {
            changes.push(CaseChange::AddComment(r));
        }
        let out = change(ctx, &input.case, changes).await?;
        Ok(CaseOutput {
            case: out.case,
            created: None,
        })
    }
}
