//! `log`: write a message to the engine's log (and the run report).

use async_trait::async_trait;
use engine::{StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The message.
    pub message: String,
    /// `info` (default), `warn` or `error`.
    #[serde(default)]
    pub level: Level,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Info,
    Warn,
    Error,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub message: String,
}

pub struct Log;

#[async_trait]
impl TypedStep for Log {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "log";

    fn description(&self) -> &'static str {
        "Write a message to the engine's log; the message is also the step's output."
    }

    fn example(&self) -> Value {
        json!({ "message": "user {{ event.actor.alternateId }} reported", "level": "info" })
    }

    async fn run(&self, input: Input, _ctx: &StepContext) -> Result<Output, StepError> {
        match input.level {
            Level::Info => tracing::info!(message = %input.message, "playbook log"),
            Level::Warn => tracing::warn!(message = %input.message, "playbook log"),
            Level::Error => tracing::error!(message = %input.message, "playbook log"),
        }
        Ok(Output {
            message: input.message,
        })
    }
}
