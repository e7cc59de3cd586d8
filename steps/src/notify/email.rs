//! Channel `email`: a notification as a plain-text message over SMTP (config `notify.smtp`).
//!
//! The recipients are the notification's `to` entries that are e-mail addresses (team
//! members usually are); other entries (a Slack handle, say) are left out. The
//! `Message-ID` is derived from the notification id, so a message sent twice after a crash
//! (delivery is at least once) carries the same id and mail clients show it once.
//!
//! The SMTP server comes from the operator's config, never from a playbook or an event, so
//! it is not subject to the outbound guard of templated URLs (a local relay on 127.0.0.1
//! is a common set-up).
//!
//! SMTP replies map onto the outbox's delivery states like HTTP statuses do: a 4yz reply
//! (transient), a timeout or a connection failure is `failed` and tried again; a 5yz reply
//! (permanent: unknown mailbox, relay denied, bad credentials) is `rejected`.

use std::time::Duration;

use engine::notify::Notification;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use crate::net::Secret;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with `STARTTLS`, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

/// Config `notify.smtp`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// The sender, `name <address>` or an address.
    pub from: String,
    /// For the whole SMTP conversation of one message; default 30s.
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }

    /// Every problem, for the config check; never shows the password.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.host.trim().is_empty() {
            p.push("`notify.smtp.host` is empty".to_string());
        }
        if let Err(e) = self.from.trim().parse::<Mailbox>() {
            p.push(format!(
                "`notify.smtp.from`: `{}` is not an e-mail address ({e})",
                self.from
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            p.push("`notify.smtp.username` and `notify.smtp.password` go together".to_string());
        }
        if self.timeout.is_zero() {
            p.push("`notify.smtp.timeout` must be more than zero".to_string());
        }
        p
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let host = self.host.trim();
        let tls = match self.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls | SmtpTls::Tls => {
                let params = TlsParameters::new(host.to_string())
                    .map_err(|e| format!("email: TLS set-up for `{host}`: {e}"))?;
                if self.tls == SmtpTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(self.port())
            .tls(tls)
            .timeout(Some(self.timeout));
        if let (Some(user), Some(pass)) = (&self.username, &self.password) {
            b = b.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
        }
        Ok(b.build())
    }
}

/// The result of one attempt to send one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Delivered,
    /// Worth trying again (4yz reply, timeout, connection failure).
    Retry(String),
    /// Refused for good (5yz reply, no address to send to, an unusable message).
    Reject(String),
}

/// The notification as an e-mail to the addresses among its recipients.
pub fn message(cfg: &SmtpConfig, n: &Notification) -> Result<Message, String> {
    let from: Mailbox = cfg
        .from
        .trim()
        .parse()
        .map_err(|e| format!("email: `notify.smtp.from`: {e}"))?;
    let to: Vec<Mailbox> =
        n.to.iter()
            .filter(|t| t.contains('@'))
            .filter_map(|t| t.trim().parse().ok())
            .collect();
    if to.is_empty() {
        return Err(format!(
            "email: no e-mail address among the recipients ({})",
            n.to.join(", ")
        ));
    }
    let domain = from.email.domain().to_string();
    let mut b = Message::builder()
        .from(from)
        .subject(one_line(&n.subject))
        .message_id(Some(format!("<{}@{domain}>", message_id_part(&n.id))))
        .header(ContentType::TEXT_PLAIN);
    for t in to {
        b = b.to(t);
    }
    let mut body = n.message.clone();
    if let Some(case) = &n.case {
        body.push_str(&format!("\n\nCase: {case}"));
    }
    body.push_str(&format!(
        "\nSent by Caseflow: playbook {} run {} step {}.\n",
        n.playbook, n.run_id, n.step
    ));
    b.body(body).map_err(|e| format!("email: {e}"))
}

/// Headers hold one line: a subject rendered from a template may not.
fn one_line(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A notification id as the left part of a `Message-ID` (letters, digits, `-`, `.`).
fn message_id_part(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Send `n` once. Error texts name the server, never the password.
pub async fn send(cfg: &SmtpConfig, n: &Notification) -> Sent {
    let msg = match message(cfg, n) {
        Ok(m) => m,
        Err(e) => return Sent::Reject(e),
    };
    let transport = match cfg.transport() {
        Ok(t) => t,
        Err(e) => return Sent::Reject(e),
    };
    let server = format!("{}:{}", cfg.host.trim(), cfg.port());
    match transport.send(msg).await {
        Ok(_) => Sent::Delivered,
        Err(e) => {
            let text = format!("email: {server}: {e}");
            let text = match &cfg.password {
                Some(p) => p.redact(&text),
                None => text,
            };
            if e.is_permanent() {
                Sent::Reject(text)
            } else {
                Sent::Retry(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SmtpConfig {
        serde_json::from_value(serde_json::json!({
            "host": "smtp.acme.example", "from": "Caseflow <caseflow@acme.example>"
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn note(to: &[&str]) -> Notification {
        Notification {
            id: "n-1/a b".into(),
            at: "2026-11-27T10:00:00Z".into(),
            to: to.iter().map(|s| s.to_string()).collect(),
            subject: "VIP alert\nCASE-000001".into(),
            message: "Severity high.".into(),
            channels: vec!["email".into()],
            case: Some("CASE-000001".into()),
            run_id: "run-1".into(),
            playbook: "iam-preprocess".into(),
            step: "vip_notify".into(),
        }
    }

    #[test]
    fn defaults() {
        let c = cfg();
        assert_eq!((c.tls, c.port()), (SmtpTls::Starttls, 587));
        assert!(c.problems().is_empty());
    }

    #[test]
    fn message_goes_to_the_addresses_only_with_a_stable_id() {
        let m = message(&cfg(), &note(&["ciso@acme.example", "#soc", "team-lead"]))
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&m.formatted()).to_string();
        assert!(text.contains("To: ciso@acme.example"), "{text}");
        assert!(!text.contains("#soc"), "{text}");
        assert!(text.contains("Subject: VIP alert CASE-000001"), "{text}");
        assert!(
            text.contains("Message-ID: <n-1-a-b@acme.example>"),
            "{text}"
        );
        assert!(text.contains("Case: CASE-000001"), "{text}");
        let e = message(&cfg(), &note(&["#soc"])).unwrap_err();
        assert!(e.contains("no e-mail address"), "{e}");
    }

    #[test]
    fn config_problems() {
        let c: SmtpConfig = serde_json::from_value(serde_json::json!({
            "host": " ", "from": "not an address", "username": "u", "timeout": "0s"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let p = c.problems().join("\n");
        assert!(p.contains("`notify.smtp.host` is empty"), "{p}");
        assert!(p.contains("`notify.smtp.from`"), "{p}");
        assert!(p.contains("go together"), "{p}");
        assert!(p.contains("more than zero"), "{p}");
    }
}
