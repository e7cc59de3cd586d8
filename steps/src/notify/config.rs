//! The `notify:` section of the config file.
//!
//! ```yaml
//! notify:
//!   channels: [console, outbox, slack]     # default for steps that name none
//!   slack:
//!     webhook_url: "${SLACK_WEBHOOK_URL}"  # a secret: never printed
//!   webhook:
//!     url: "${NOTIFY_WEBHOOK_URL}"         # a secret too (tokens travel in URLs)
//!     headers: { Authorization: "Bearer ${NOTIFY_WEBHOOK_TOKEN}" }
//!   smtp:                                  # channel `email`
//!     host: smtp.acme.example
//!     port: 587                            # default: 587 starttls, 465 tls, 25 none
//!     tls: starttls                        # starttls (default) | tls | none
//!     username: caseflow
//!     password: "${SMTP_PASSWORD}"         # a secret
//!     from: "Caseflow <caseflow@acme.example>"
//!     timeout: 30s
//!   delivery:
//!     attempts: 3          # requests per channel per pass (5xx, 429, network errors)
//!     backoff: 1s          # wait after the first failed request, doubling
//!     max_retry_after: 30s # a 429 asking for longer ends the pass; the next pass waits
//!     interval: 30s        # `engine serve`: a pass over what is still owed this often
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::net::Secret;

/// Channels handled in the process, when the step runs.
pub const LOCAL_CHANNELS: &[&str] = &["console", "outbox"];
/// Channels delivered over the network, from the outbox, with retries.
pub const NETWORK_CHANNELS: &[&str] = &["slack", "webhook", "email"];

/// Whether a channel is delivered over the network (and so tracked in the outbox).
pub fn is_network(channel: &str) -> bool {
    NETWORK_CHANNELS.contains(&channel)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Channels for a `notify` step that names none (default `console` and `outbox`).
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// The SMTP server of channel `email`.
    #[serde(default)]
    pub smtp: Option<super::email::SmtpConfig>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// A Slack incoming webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub webhook_url: Secret,
}

/// A generic JSON webhook: `POST` of the notification with `Idempotency-Key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Secret,
    /// Extra request headers (values are secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

/// Retry policy of one delivery pass.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_backoff", with = "crate::duration")]
    pub backoff: Duration,
    #[serde(default = "default_max_retry_after", with = "crate::duration")]
    pub max_retry_after: Duration,
    /// How often `engine serve` makes a pass over what is still owed.
    #[serde(default = "default_interval", with = "crate::duration")]
    pub interval: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            attempts: default_attempts(),
            backoff: default_backoff(),
            max_retry_after: default_max_retry_after(),
            interval: default_interval(),
        }
    }
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_retry_after() -> Duration {
    Duration::from_secs(30)
}
fn default_interval() -> Duration {
    Duration::from_secs(30)
}

/// Every problem in the `notify` section, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

impl NotifyConfig {
    /// Read `notify` from the whole config file; a missing section gives the defaults.
    pub fn from_config(config: &Value) -> Result<NotifyConfig, ConfigError> {
        let v = match config.get("notify") {
            None | Some(Value::Null) => return Ok(NotifyConfig::default()),
            Some(v) => v,
        };
        let cfg: NotifyConfig = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                ConfigError(vec![format!("`notify`: {}", e.inner())])
            } else {
                ConfigError(vec![format!("`notify.{path}`: {}", e.inner())])
            }
        })?;
        let mut problems = Vec::new();
        for c in cfg.channels.iter().flatten() {
            if let Err(e) = cfg.check_channel(c) {
                problems.push(format!("`notify.channels`: {e}"));
            }
        }
        if cfg.delivery.attempts == 0 {
            problems.push("`notify.delivery.attempts` must be at least 1".to_string());
        }
        if cfg.delivery.interval < Duration::from_millis(10) {
            problems.push("`notify.delivery.interval` must be at least 10ms".to_string());
        }
        for (key, url) in [
            (
                "slack.webhook_url",
                cfg.slack.as_ref().map(|s| &s.webhook_url),
            ),
            ("webhook.url", cfg.webhook.as_ref().map(|w| &w.url)),
        ] {
            if let Some(url) = url {
                if let Err(e) = parse_url(url) {
                    problems.push(format!("`notify.{key}`: {e}"));
                }
            }
        }
        if let Some(smtp) = &cfg.smtp {
            problems.extend(smtp.problems());
        }
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError(problems))
        }
    }

    /// The channels a step uses when it names none.
    pub fn default_channels(&self) -> Vec<String> {
        self.channels
            .clone()
            .unwrap_or_else(|| LOCAL_CHANNELS.iter().map(|c| c.to_string()).collect())
    }

    /// `Ok` when `channel` exists and is configured.
    pub fn check_channel(&self, channel: &str) -> Result<(), String> {
        match channel {
            "console" | "outbox" => Ok(()),
            "slack" if self.slack.is_some() => Ok(()),
            "slack" => Err("channel `slack` needs config `notify.slack.webhook_url`".into()),
            "webhook" if self.webhook.is_some() => Ok(()),
            "webhook" => Err("channel `webhook` needs config `notify.webhook.url`".into()),
            "email" if self.smtp.is_some() => Ok(()),
            "email" => Err("channel `email` needs config `notify.smtp`".into()),
            other => Err(format!(
                "unknown channel `{other}` (channels: console, outbox, slack, webhook, email)"
            )),
        }
    }
}

/// Parse a secret URL; the message never shows it.
pub fn parse_url(url: &Secret) -> Result<url::Url, String> {
    let u = url::Url::parse(url.expose().trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let c = NotifyConfig::from_config(&json!({})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.default_channels(), ["console", "outbox"]);
        assert_eq!(c.delivery.attempts, 3);
        assert_eq!(c.delivery.max_retry_after, Duration::from_secs(30));
    }

    #[test]
    fn every_problem_is_reported_and_no_secret_shown() {
        let e = NotifyConfig::from_config(&json!({"notify": {
            "channels": ["console", "slack", "pager"],
            "webhook": {"url": "ftp://hooks.example/t0ps3cret"},
            "delivery": {"attempts": 0},
        }}))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        for needle in [
            "needs config `notify.slack.webhook_url`",
            "unknown channel `pager`",
            "`notify.delivery.attempts` must be at least 1",
            "`notify.webhook.url`: must be an http or https URL",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in {e}");
        }
        assert!(!e.contains("t0ps3cret"), "{e}");
    }

    #[test]
    fn unknown_keys_name_the_path() {
        let e = NotifyConfig::from_config(&json!({"notify": {"slack": {"url": "x"}}}))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("`notify.slack"), "{e}");
    }
}
