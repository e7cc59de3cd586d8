//! Delivery of outbox notifications to the network channels (Slack, webhook, e-mail).
//!
//! One [`Deliverer::deliver`] call is a *pass* over one notification on one channel: up to
//! `notify.delivery.attempts` requests, waiting `backoff` (doubling) after a 5xx or network
//! error and a 429's `Retry-After` when it is at most `max_retry_after`. The pass ends with a
//! [`Delivery`] record in the outbox:
//!
//! | response                                   | record      | tried again by a later pass |
//! |--------------------------------------------|-------------|-----------------------------|
//! | 2xx (Slack answers `200 ok`)                | `delivered` | never                       |
//! | 429, 5xx, timeout, network error           | `failed`    | yes (after a 429's `Retry-After`) |
//! | channel not configured                     | `failed`    | yes, once it is configured  |
//! | other 4xx, destination refused by the guard | `rejected`  | no: a person has to look    |
//!
//! [`deliver_pending`] runs one pass over everything the outbox still owes; `engine serve`
//! is to call it periodically (every 30 s is plenty), and an embedder can call it from a
//! timer. `engine run` does not: what a one-shot run could not deliver waits for a pass.
//! Every request goes through [`GuardedClient`]; no error text holds a secret URL.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use engine::notify::{Delivery, DeliveryStatus, Notification, Outbox};
use engine::StepError;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use super::config::{is_network, parse_url, NotifyConfig};
use crate::net::{read_body, step_error, GuardedClient, Secret};

/// What one pass did with one notification on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: DeliveryStatus,
    /// Requests sent in this pass.
    pub requests: u32,
    pub error: Option<String>,
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        self.status == DeliveryStatus::Delivered
    }
}

/// What [`deliver_pending`] did, by count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub delivered: usize,
    /// Still owed; tried again by the next pass.
    pub failed: usize,
    /// Refused for good.
    pub rejected: usize,
    /// Not tried: a 429 asked to wait longer, or this process is delivering it already.
    pub waiting: usize,
}

/// The result of one request.
enum Attempt {
    Delivered,
    /// Worth trying again; `wait` is what the server asked for (429 `Retry-After`).
    Retry {
        error: String,
        wait: Option<Duration>,
    },
    Reject(String),
}

/// Sends notifications to the network channels of a `notify` config.
#[derive(Debug, Clone)]
pub struct Deliverer {
    client: Arc<GuardedClient>,
    config: NotifyConfig,
}

impl Deliverer {
    pub fn new(client: Arc<GuardedClient>, config: NotifyConfig) -> Self {
        Deliverer { client, config }
    }

    /// A deliverer for the whole config file (`notify:` and `http:`).
    pub fn from_config(config: &Value) -> Result<Self, StepError> {
        let notify = NotifyConfig::from_config(config)
            .map_err(|e| StepError::permanent(format!("config: {e}")))?;
        let client = GuardedClient::from_config(config)?;
        Ok(Deliverer::new(Arc::new(client), notify))
    }

    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    /// One pass over `n` on `channel`, recorded in `outbox`. A channel already delivered
    /// or rejected is not tried again; its recorded outcome is returned.
    pub async fn deliver(
        &self,
        outbox: &Outbox,
        n: &Notification,
        channel: &str,
        now: SystemTime,
    ) -> Outcome {
        let unreadable = |e: engine::persist::StoreError| Outcome {
            status: DeliveryStatus::Failed,
            requests: 0,
            error: Some(format!("cannot read the delivery state: {e}")),
        };
        // Claimed first, read second: what another task or process recorded before the
        // claim is seen, so a delivered notification is never sent again.
        let claim = match outbox.claim(&n.id, channel).await {
            Ok(c) => c,
            Err(e) => return unreadable(e),
        };
        let prev = match outbox.delivery(&n.id, channel).await {
            Ok(p) => p,
            Err(e) => return unreadable(e),
        };
        if let Some(p) = prev.as_ref().filter(|p| p.status != DeliveryStatus::Failed) {
            return Outcome {
                status: p.status,
                requests: 0,
                error: p.error.clone(),
            };
        }
        let Some(_claim) = claim else {
            return Outcome {
                status: DeliveryStatus::Failed,
                requests: 0,
                error: Some("being delivered by another task".into()),
            };
        };
        let (outcome, wait) = self.pass(n, channel).await;
        let record = Delivery {
            id: n.id.clone(),
            channel: channel.to_string(),
            status: outcome.status,
            at: timestamp(now),
            attempts: prev.map_or(0, |p| p.attempts) + outcome.requests,
            error: outcome.error.clone(),
            not_before_ms: wait.map(|w| millis(now + w)),
        };
        if let Err(e) = outbox.record(record).await {
            // The next pass sends again (at least once); say so.
            tracing::warn!(id = %n.id, channel, error = %e, "cannot record a delivery");
        }
        outcome
    }

    /// Up to `attempts` requests; the outcome and how long a 429 asked to wait.
    async fn pass(&self, n: &Notification, channel: &str) -> (Outcome, Option<Duration>) {
        let policy = &self.config.delivery;
        let mut requests = 0;
        let mut backoff = policy.backoff;
        loop {
            requests += 1;
            let (error, wait) = match self.send(n, channel).await {
                Attempt::Delivered => {
                    return (
                        Outcome {
                            status: DeliveryStatus::Delivered,
                            requests,
                            error: None,
                        },
                        None,
                    )
                }
                Attempt::Reject(error) => {
                    tracing::warn!(id = %n.id, channel, %error, "notification rejected");
                    return (
                        Outcome {
                            status: DeliveryStatus::Rejected,
                            requests,
                            error: Some(error),
                        },
                        None,
                    );
                }
                Attempt::Retry { error, wait } => (error, wait),
            };
            let too_long = wait.is_some_and(|w| w > policy.max_retry_after);
            if requests >= policy.attempts || too_long {
                tracing::info!(id = %n.id, channel, %error, "notification not delivered yet");
                let outcome = Outcome {
                    status: DeliveryStatus::Failed,
                    requests,
                    error: Some(error),
                };
                return (outcome, wait.filter(|_| too_long));
            }
            let pause = match wait {
                Some(w) => w,
                None => {
                    let b = backoff;
                    backoff = backoff.saturating_mul(2);
                    b
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One request.
    async fn send(&self, n: &Notification, channel: &str) -> Attempt {
        if channel == "email" {
            let Some(smtp) = &self.config.smtp else {
                return not_configured("email", "notify.smtp");
            };
            return match super::email::send(smtp, n).await {
                super::email::Sent::Delivered => Attempt::Delivered,
                super::email::Sent::Retry(error) => Attempt::Retry { error, wait: None },
                super::email::Sent::Reject(error) => Attempt::Reject(error),
            };
        }
        let (url, body, headers, idempotent): (&Secret, Value, Vec<(&str, &Secret)>, bool) =
            match channel {
                "slack" => match &self.config.slack {
                    Some(s) => (&s.webhook_url, slack_body(n), Vec::new(), false),
                    None => return not_configured("slack", "notify.slack.webhook_url"),
                },
                "webhook" => match &self.config.webhook {
                    Some(w) => (
                        &w.url,
                        json!(n),
                        w.headers.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                        true,
                    ),
                    None => return not_configured("webhook", "notify.webhook.url"),
                },
                other => return Attempt::Reject(format!("`{other}` is not a network channel")),
            };
        let redact = |s: String| s.replace(url.expose(), Secret::REDACTED);
        let target = match parse_url(url) {
            Ok(u) => u,
            Err(e) => return Attempt::Reject(format!("{channel}: {e}")),
        };
        let req = match self.client.request(Method::POST, target) {
            Ok(r) => r,
            Err(e) => return Attempt::Reject(redact(format!("{channel}: {e}"))),
        };
        let mut req = req.json(&body);
        if idempotent {
            req = req.header("Idempotency-Key", &n.id);
        }
        for (name, value) in headers {
            req = req.header(name, value.expose());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let e = step_error(e, channel);
                return match e.kind {
                    engine::ErrorKind::Permanent => Attempt::Reject(redact(e.message)),
                    _ => Attempt::Retry {
                        error: redact(e.message),
                        wait: None,
                    },
                };
            }
        };
        let status = resp.status();
        let wait = retry_after(&resp);
        let text: String = read_body(resp, 4096, channel)
            .await
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim()
                    .chars()
                    .take(200)
                    .collect()
            })
            .unwrap_or_default();
        let detail = |s: StatusCode, text: &str| {
            let mut m = format!("{channel}: HTTP {}", s.as_u16());
            if !text.is_empty() {
                m.push_str(&format!(" `{text}`"));
            }
            redact(m)
        };
        if status.is_success() {
            Attempt::Delivered
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            Attempt::Retry {
                error: detail(status, &text),
                wait: Some(wait.unwrap_or(self.config.delivery.backoff)),
            }
        } else if status.is_server_error() {
            Attempt::Retry {
                error: detail(status, &text),
                wait: None,
            }
        } else {
            Attempt::Reject(detail(status, &text))
        }
    }

    /// One pass over everything `outbox` still owes the network channels.
    pub async fn deliver_pending(&self, outbox: &Outbox, now: SystemTime) -> PassReport {
        let mut report = PassReport::default();
        let pending = match outbox.pending(is_network).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the notification outbox");
                return report;
            }
        };
        let now_ms = millis(now);
        for p in pending {
            let early = p
                .last
                .as_ref()
                .and_then(|d| d.not_before_ms)
                .is_some_and(|t| t > now_ms);
            if early {
                report.waiting += 1;
                continue;
            }
            let out = self.deliver(outbox, &p.notification, &p.channel, now).await;
            match (out.status, out.requests) {
                (_, 0) => report.waiting += 1,
                (DeliveryStatus::Delivered, _) => report.delivered += 1,
                (DeliveryStatus::Failed, _) => report.failed += 1,
                (DeliveryStatus::Rejected, _) => report.rejected += 1,
            }
        }
        report
    }
}

/// One pass over every notification `outbox` still owes Slack or the webhook, with the
/// channels and HTTP client of `config` (the whole config file). Call it again later for
/// what is still `failed` (`engine serve` is to do so periodically). A config error delivers
/// nothing and is returned.
pub async fn deliver_pending(outbox: &Outbox, config: &Value) -> Result<PassReport, StepError> {
    let d = Deliverer::from_config(config)?;
    Ok(d.deliver_pending(outbox, SystemTime::now()).await)
}

fn not_configured(channel: &str, key: &str) -> Attempt {
    // Not a rejection: once the config is fixed, the next pass delivers it.
    Attempt::Retry {
        error: format!("channel `{channel}` needs config `{key}`"),
        wait: None,
    }
}

/// Slack mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `{"text": ...}` for an incoming webhook: subject in bold, the message, then the case
/// and the recipients (the webhook posts to its own channel; `to` says who is meant).
pub fn slack_body(n: &Notification) -> Value {
    let mut text = format!("*{}*", slack_escape(&n.subject));
    if !n.message.trim().is_empty() {
        text.push('\n');
        text.push_str(&slack_escape(&n.message));
    }
    let mut context = Vec::new();
    if let Some(case) = &n.case {
        context.push(format!("case {}", slack_escape(case)));
    }
    if !n.to.is_empty() {
        context.push(format!("to {}", slack_escape(&n.to.join(", "))));
    }
    if !context.is_empty() {
        text.push('\n');
        text.push_str(&format!("_{}_", context.join(" · ")));
    }
    json!({ "text": text })
}

/// `Retry-After` in seconds (the form Slack sends).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

fn timestamp(t: SystemTime) -> String {
    engine::cases::Timestamp::from_system_time(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_escapes_and_names_case_and_recipients() {
        let n = Notification {
            id: "r:s".into(),
            at: String::new(),
            to: vec!["a@x".into(), "#soc".into()],
            subject: "CASE-000001 <VIP>".into(),
            message: "A & B".into(),
            channels: vec!["slack".into()],
            case: Some("CASE-000001".into()),
            run_id: "r".into(),
            playbook: "p".into(),
            step: "s".into(),
        };
        assert_eq!(
            slack_body(&n)["text"],
            "*CASE-000001 &lt;VIP&gt;*\nA &amp; B\n_case CASE-000001 · to a@x, #soc_"
        );
    }
}
