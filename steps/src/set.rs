//! `set`: name values computed from the event and earlier steps, for later steps to use.

use async_trait::async_trait;
use engine::{StepContext, StepError, TypedStep};
use serde_json::{json, Map, Value};

pub struct Set;

#[async_trait]
impl TypedStep for Set {
    /// Any mapping: each key becomes a field of the output.
    type Input = Map<String, Value>;
    type Output = Map<String, Value>;
    const NAME: &'static str = "set";
    // Computes from its input only.
    const EFFECT_FREE: bool = true;

    fn description(&self) -> &'static str {
        "Compute named values once (e.g. the user and IP of an event); later steps read them as `steps.<id>.<name>`."
    }

    fn example(&self) -> Value {
        json!({ "user": "{{ event.actor.alternateId | lower }}", "ip": "{{ event.client.ipAddress }}" })
    }

    async fn run(
        &self,
        input: Map<String, Value>,
        _ctx: &StepContext,
    ) -> Result<Map<String, Value>, StepError> {
        Ok(input)
    }
}
