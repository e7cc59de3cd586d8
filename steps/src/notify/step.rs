//! `notify`: a message to people or channels, recorded durably in the engine's outbox and
//! then delivered to each channel (see [`super`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine::notify::{Notification, Outbox};
use engine::{StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::{is_network, NotifyConfig};
use super::deliver::Deliverer;
use crate::net::GuardedClient;

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
    /// `console`, `outbox`, `slack`, `webhook` (default: config `notify.channels`, else
    /// `console` and `outbox`).
    #[serde(default)]
    pub channels: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub id: String,
    pub to: Vec<String>,
    /// False when this notification id was already in the outbox (a retried step).
    pub queued: bool,
    pub channels: Vec<String>,
    /// Per channel: whether it has been delivered. A network channel that is `false` is
    /// retried from the outbox by `deliver_pending`, unless it was rejected for good.
    pub delivered: BTreeMap<String, bool>,
    /// Per channel that is not delivered: why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, String>,
}

pub struct Notify;

fn recipients(input_to: Vec<Option<String>>, config: &Value) -> Result<Vec<String>, StepError> {
    let mut to: Vec<String> = Vec::new();
    let mut add = |r: String| {
        if !to.contains(&r) {
            to.push(r);
        }
    };
    for r in input_to.into_iter().flatten() {
        let r = r.trim();
        if r.is_empty() {
            continue;
        }
        match r.strip_prefix("team:") {
            Some(team) => {
                let members = config
                    .get("teams")
                    .and_then(|t| t.get(team))
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        StepError::permanent(format!("no team `{team}` in config `teams`"))
                    })?;
                members
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .for_each(|m| add(m.to_string()));
            }
            None => add(r.to_string()),
        }
    }
    Ok(to)
}

#[async_trait]
impl TypedStep for Notify {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "notify";

    fn description(&self) -> &'static str {
        "Send a message to people or channels (console, outbox, slack, webhook) through the durable outbox; a channel that is down is retried later, never dropped."
    }

    fn example(&self) -> Value {
        json!({
            "to": ["team:stakeholders", "{{ steps.assign.assignee }}"],
            "subject": "{{ case.id }} assigned",
            "message": "{{ case.title }} ({{ case.severity }})",
            "case": "{{ case.id }}"
        })
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        super::config::NotifyConfig::from_config(config)
            .map(|_| ())
            .map_err(|e| e.to_string())?;
        crate::net::ClientConfig::from_config(config)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn run(&self, input: Input, ctx: &StepContext) -> Result<Output, StepError> {
        let config = NotifyConfig::from_config(ctx.config())
            .map_err(|e| StepError::permanent(format!("config: {e}")))?;
        let to = recipients(input.to, ctx.config())?;
        if to.is_empty() {
            return Err(StepError::permanent(
                "no recipients: every entry of `to` was empty",
            ));
        }
        let mut channels: Vec<String> = Vec::new();
        let wanted = if input.channels.is_empty() {
            config.default_channels()
        } else {
            input.channels
        };
        let mut problems = Vec::new();
        for c in wanted {
            let c = c.trim().to_string();
            if let Err(e) = config.check_channel(&c) {
                problems.push(e);
            } else if !channels.contains(&c) {
                channels.push(c);
            }
        }
        if !problems.is_empty() {
            return Err(StepError::permanent(problems.join("; ")));
        }
        let outbox = ctx
            .service::<Outbox>()
            .ok_or_else(|| StepError::permanent("this engine has no notification outbox"))?;
        let n = Notification {
            id: ctx.idempotency_key(),
            at: ctx.timestamp().to_string(),
            to: to.clone(),
            subject: input.subject,
            message: input.message,
            channels: channels.clone(),
            case: input.case,
            run_id: ctx.run_id.clone(),
            playbook: ctx.playbook.clone(),
            step: ctx.step.clone(),
        };
        // Durable before anything is sent: once this returns, an outage only delays.
        let queued = outbox
            .push(n.clone())
            .await
            .map_err(|e| StepError::retryable(format!("cannot write the outbox: {e}")))?;

        let mut delivered = BTreeMap::new();
        let mut errors = BTreeMap::new();
        if channels.iter().any(|c| c == "console") {
            if queued && outbox.prints_console() {
                eprintln!("{}", console_line(&n));
            }
            delivered.insert("console".to_string(), true);
        }
        if channels.iter().any(|c| c == "outbox") {
            delivered.insert("outbox".to_string(), true);
        }
        let network: Vec<&String> = channels.iter().filter(|c| is_network(c)).collect();
        if !network.is_empty() {
            let client = GuardedClient::for_context(ctx)?;
            let deliverer = Deliverer::new(client, config);
            for c in network {
                let out = deliverer.deliver(&outbox, &n, c, ctx.now()).await;
                delivered.insert(c.clone(), out.delivered());
                if let Some(e) = out.error {
                    errors.insert(c.clone(), e);
                }
            }
        }
        Ok(Output {
            id: n.id,
            to,
            queued,
            channels,
            delivered,
            errors,
        })
    }
}

/// `notify CASE-000001: subject -> a@x, b@y: message` (one line).
fn console_line(n: &Notification) -> String {
    let mut line = String::from("notify ");
    if let Some(c) = &n.case {
        line.push_str(c);
        line.push_str(": ");
    }
    line.push_str(&n.subject);
    line.push_str(" -> ");
    line.push_str(&n.to.join(", "));
    let msg = n.message.split_whitespace().collect::<Vec<_>>().join(" ");
    if !msg.is_empty() {
        line.push_str(": ");
        line.push_str(&msg);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teams_expand_and_duplicates_go() {
        let config = json!({"teams": {"soc": ["a@x", "b@x", " "]}});
        let to = recipients(
            vec![
                Some("b@x".into()),
                None,
                Some(" ".into()),
                Some("team:soc".into()),
            ],
            &config,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(to, ["b@x", "a@x"]);
        let e = recipients(vec![Some("team:nope".into())], &config).err();
        assert!(e.is_some_and(|e| e.message.contains("no team `nope`")));
    }
}
