//! `notify`: a message to people or channels, recorded durably in the engine's outbox.

use async_trait::async_trait;
use engine::notify::{Notification, Outbox};
use engine::{StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// People (e-mail addresses) or channels (`#soc`). Empty entries are dropped; a team
    /// name from config `teams` written as `team:<name>` expands to its members.
    pub to: Vec<Option<String>>,
    pub subject: String,
    #[serde(default)]
    pub message: String,
    /// The case the message is about.
    #[serde(default)]
    pub case: Option<String>,
    /// Channels (default: config `notify.channels`, else `console` and `outbox`).
    #[serde(default)]
    pub channels: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub id: String,
    pub to: Vec<String>,
    pub queued: bool,
}

pub struct Notify;

#[async_trait]
impl TypedStep for Notify {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "notify";

    fn description(&self) -> &'static str {
        "Send a message to people or channels through the durable outbox (console and outbox by default)."
    }

    fn example(&self) -> Value {
        json!({
            "to": ["team:stakeholders", "{{ steps.assign.assignee }}"],
            "subject": "{{ case.id }} assigned",
            "message": "{{ case.title }} ({{ case.severity }})",
            "case": "{{ case.id }}"
        })
    }

    async fn run(&self, input: Input, ctx: &StepContext) -> Result<Output, StepError> {
        let mut to: Vec<String> = Vec::new();
        for r in input.to.into_iter().flatten() {
            let r = r.trim().to_string();
            if r.is_empty() {
                continue;
            }
            match r.strip_prefix("team:") {
                Some(team) => {
                    let members = ctx
                        .config()
                        .get("teams")
                        .and_then(|t| t.get(team))
                        .and_then(Value::as_array)
                        .ok_or_else(|| {
                            StepError::permanent(format!("no team `{team}` in config `teams`"))
                        })?;
                    to.extend(members.iter().filter_map(Value::as_str).map(str::to_string));
                }
                None => to.push(r),
            }
        }
        to.dedup();
        if to.is_empty() {
            return Err(StepError::permanent("no recipients"));
        }
        let channels = if input.channels.is_empty() {
            ctx.config()
                .get("notify")
                .and_then(|n| n.get("channels"))
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_else(|| vec!["console".to_string(), "outbox".to_string()])
        } else {
            input.channels
        };
        let n = Notification {
            id: ctx.idempotency_key(),
            at: ctx.timestamp().to_string(),
            to: to.clone(),
            subject: input.subject,
            message: input.message,
            channels,
            case: input.case,
            run_id: ctx.run_id.clone(),
            playbook: ctx.playbook.clone(),
            step: ctx.step.clone(),
        };
        let id = n.id.clone();
        let outbox = ctx
            .service::<Outbox>()
            .ok_or_else(|| StepError::permanent("this engine has no notification outbox"))?;
        let queued = tokio::task::spawn_blocking(move || outbox.push(n))
            .await
            .map_err(|e| StepError::retryable(format!("outbox write crashed: {e}")))?
            .map_err(|e| StepError::retryable(format!("cannot write the outbox: {e}")))?;
        Ok(Output { id, to, queued })
    }
}
