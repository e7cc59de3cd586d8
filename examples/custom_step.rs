//! Writing a custom step: a typed input, a JSON output, registered next to the built-ins.
//!
//! `cargo run --example custom_step`. The step `ticket.open` stands in for an integration
//! Caseflow has no step for yet (a ticketing system). Its input is checked when the playbook
//! loads (a literal `priority: P9` is an error before any run) and again after rendering.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use caseflow::engine::schedule::{execute, RunInput};
use caseflow::engine::{self, Services, StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TicketInput {
    /// One-line summary.
    title: String,
    /// `P1` (most urgent) to `P4`.
    priority: Priority,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema, Clone, Copy)]
enum Priority {
    P1,
    P2,
    P3,
    P4,
}

#[derive(Debug, Serialize)]
struct Ticket {
    key: String,
    title: String,
    priority: Priority,
}

struct OpenTicket;

#[async_trait]
impl TypedStep for OpenTicket {
    type Input = TicketInput;
    type Output = Ticket;
    const NAME: &'static str = "ticket.open";

    fn description(&self) -> &'static str {
        "Open a ticket in the (pretend) ticketing system."
    }

    fn example(&self) -> Value {
        json!({"title": "Investigate {{ event.user }}", "priority": "P2"})
    }

    async fn run(&self, input: TicketInput, ctx: &StepContext) -> Result<Ticket, StepError> {
        // A real integration would send `ctx.idempotency_key()` so a retry opens no second ticket.
        Ok(Ticket {
            key: format!(
                "SEC-{}",
                ctx.run_id
                    .get(ctx.run_id.len().saturating_sub(4)..)
                    .unwrap_or("0")
            ),
            title: input.title,
            priority: input.priority,
        })
    }
}

const PLAYBOOK: &str = r#"
playbook: open-ticket
on: { event: demo }
steps:
  - id: ticket
    uses: ticket.open
    with:
      title: "Investigate {{ event.user }}"
      priority: "{{ 'P1' if event.vip else 'P3' }}"
output: "{{ steps.ticket }}"
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut registry = caseflow::builtin_registry();
    registry.register(OpenTicket);

    let source =
        engine::load::parse_source(Path::new("open-ticket.yaml"), PLAYBOOK.as_bytes().to_vec())
            .map_err(|d| d.to_string())?;
    let bundle = engine::compile::compile_sources(&[source], &registry)
        .map_err(|diags| diags.iter().map(|d| d.to_string()).collect::<String>())?;

    let input = RunInput {
        run_id: engine::schedule::new_run_id(),
        trigger: "demo".into(),
        event: json!({"user": "alice@example.com", "vip": true}),
        case: None,
        depth: 0,
    };
    let report = execute(
        bundle.playbooks[0].clone(),
        input,
        Arc::new(Services::new()),
    )
    .await;
    println!("{}", serde_json::to_string_pretty(&report.output)?);
    Ok(())
}
