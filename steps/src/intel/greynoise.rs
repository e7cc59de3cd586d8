//! GreyNoise Community API (PROTOCOLS.md §4.3).
//!
//! `GET {url}/v3/community/{ip}` with header `key` (optional: without a key GreyNoise
//! allows a small keyless quota). The verdict comes from `classification`:
//!
//! | response                                   | verdict     |
//! |--------------------------------------------|-------------|
//! | `classification: malicious`                | `malicious` |
//! | `classification: benign`, or `riot: true`  | `benign`    |
//! | `classification: unknown` (even if `noise`) | `unknown`  |
//! | HTTP 404 (not observed)                    | `unknown`   |
//!
//! `noise` alone (seen scanning, not classified) is reported as a detail but does not make
//! an address suspicious: mass scanners are background noise for almost every team.

use std::net::IpAddr;

use async_trait::async_trait;
use std::sync::Arc;

use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::json;

use super::http;
use super::{Provider, ProviderError, ProviderVerdict, Verdict};
use crate::net::{GuardedClient, Secret};

pub const DEFAULT_URL: &str = "https://api.greynoise.io";
pub const NAME: &str = "greynoise";

pub struct GreyNoise {
    client: Arc<GuardedClient>,
    url: Url,
    key: Option<Secret>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    noise: Option<bool>,
    #[serde(default)]
    riot: Option<bool>,
    #[serde(default)]
    classification: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    last_seen: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl GreyNoise {
    /// `url` is the base (`https://api.greynoise.io`); the path is appended.
    pub fn new(client: Arc<GuardedClient>, url: Url, key: Option<Secret>) -> Self {
        GreyNoise { client, url, key }
    }
}

#[async_trait]
impl Provider for GreyNoise {
    fn name(&self) -> &str {
        NAME
    }

    async fn check(&self, ip: IpAddr) -> Result<ProviderVerdict, ProviderError> {
        let url = http::join(&self.url, &["v3", "community", &ip.to_string()]);
        let mut req =
            http::get(&self.client, url)?.header(reqwest::header::ACCEPT, "application/json");
        let no_key = Secret::default();
        let key = self.key.as_ref().unwrap_or(&no_key);
        if !key.is_empty() {
            req = req.header("key", key.expose());
        }
        let resp = http::send(req, key).await?;
        let status = resp.status();
        let retry_after = http::retry_after(&resp);
        let body = http::body(resp, key).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(ProviderVerdict::new(Verdict::Unknown)
                .with("noise", Some(json!(false)))
                .with("riot", Some(json!(false)))
                .with("observed", Some(json!(false))));
        }
        if !status.is_success() {
            let detail = serde_json::from_slice::<Body>(&body)
                .ok()
                .and_then(|b| b.message);
            return Err(http::status_error(status, retry_after, detail, key));
        }
        let b = http::json::<Body>(&body, key)?;
        let classification = b.classification.as_deref().unwrap_or("unknown");
        let verdict = match classification {
            "malicious" => Verdict::Malicious,
            "benign" => Verdict::Benign,
            _ if b.riot == Some(true) => Verdict::Benign,
            "unknown" => Verdict::Unknown,
            other => {
                return Err(ProviderError::BadResponse(format!(
                    "unknown `classification` `{}`",
                    key.redact(&other.chars().take(40).collect::<String>())
                )))
            }
        };
        Ok(ProviderVerdict::new(verdict)
            .with("classification", Some(json!(classification)))
            .with("noise", b.noise.map(|v| json!(v)))
            .with("riot", b.riot.map(|v| json!(v)))
            .with("name", b.name.map(|v| json!(v)))
            .with("link", b.link.map(|v| json!(v)))
            .with("last_seen", b.last_seen.map(|v| json!(v))))
    }
}
