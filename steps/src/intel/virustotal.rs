//! VirusTotal API v3 IP address report (PROTOCOLS.md §4.2).
//!
//! `GET {url}/api/v3/ip_addresses/{ip}` with header `x-apikey`. The verdict comes from
//! `data.attributes.last_analysis_stats`:
//!
//! | condition                                                   | verdict      |
//! |-------------------------------------------------------------|--------------|
//! | `malicious` >= `malicious_engines` (default 3)              | `malicious`  |
//! | `malicious + suspicious` >= `suspicious_engines` (default 1) | `suspicious` |
//! | otherwise, `harmless` > 0                                   | `benign`     |
//! | otherwise (no engine has an opinion)                        | `unknown`    |
//!
//! A 404 with error code `NotFoundError` means VirusTotal has no report: `unknown`, not an
//! error.

use std::net::IpAddr;

use async_trait::async_trait;
use std::sync::Arc;

use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::json;

use super::http;
use super::{Provider, ProviderError, ProviderVerdict, Verdict};
use crate::net::{GuardedClient, Secret};

pub const DEFAULT_URL: &str = "https://www.virustotal.com";
pub const NAME: &str = "virustotal";

/// Engine-count thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub malicious_engines: u32,
    pub suspicious_engines: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            malicious_engines: 3,
            suspicious_engines: 1,
        }
    }
}

pub struct VirusTotal {
    client: Arc<GuardedClient>,
    url: Url,
    key: Secret,
    thresholds: Thresholds,
}

/// `last_analysis_stats`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Stats {
    #[serde(default)]
    pub malicious: u32,
    #[serde(default)]
    pub suspicious: u32,
    #[serde(default)]
    pub harmless: u32,
    #[serde(default)]
    pub undetected: u32,
}

impl VirusTotal {
    /// `url` is the base (`https://www.virustotal.com`); the path is appended.
    pub fn new(client: Arc<GuardedClient>, url: Url, key: Secret, thresholds: Thresholds) -> Self {
        VirusTotal {
            client,
            url,
            key,
            thresholds,
        }
    }

    pub fn verdict(&self, s: Stats) -> Verdict {
        let t = self.thresholds;
        if s.malicious >= t.malicious_engines {
            Verdict::Malicious
        } else if s.malicious.saturating_add(s.suspicious) >= t.suspicious_engines {
            Verdict::Suspicious
        } else if s.harmless > 0 {
            Verdict::Benign
        } else {
            Verdict::Unknown
        }
    }
}

#[derive(Deserialize)]
struct Body {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    attributes: Attributes,
}

#[derive(Deserialize)]
struct Attributes {
    last_analysis_stats: Stats,
    #[serde(default)]
    reputation: Option<i64>,
    #[serde(default)]
    as_owner: Option<String>,
    #[serde(default)]
    asn: Option<u64>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    last_analysis_date: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorItem,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[async_trait]
impl Provider for VirusTotal {
    fn name(&self) -> &str {
        NAME
    }

    async fn check(&self, ip: IpAddr) -> Result<ProviderVerdict, ProviderError> {
        let url = http::join(&self.url, &["api", "v3", "ip_addresses", &ip.to_string()]);
        let req = http::get(&self.client, url)?
            .header("x-apikey", self.key.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        let resp = http::send(req, &self.key).await?;
        let status = resp.status();
        let retry_after = http::retry_after(&resp);
        let body = http::body(resp, &self.key).await?;
        if !status.is_success() {
            let err = serde_json::from_slice::<ErrorBody>(&body)
                .ok()
                .map(|b| b.error);
            if status == StatusCode::NOT_FOUND
                && err
                    .as_ref()
                    .is_some_and(|e| e.code.as_deref() == Some("NotFoundError"))
            {
                return Ok(ProviderVerdict::new(Verdict::Unknown).with("found", Some(json!(false))));
            }
            let detail = err.map(|e| match (e.code, e.message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (c, m) => c.or(m).unwrap_or_default(),
            });
            return Err(http::status_error(status, retry_after, detail, &self.key));
        }
        let a = http::json::<Body>(&body, &self.key)?.data.attributes;
        let s = a.last_analysis_stats;
        Ok(ProviderVerdict::new(self.verdict(s))
            .with("malicious", Some(json!(s.malicious)))
            .with("suspicious", Some(json!(s.suspicious)))
            .with("harmless", Some(json!(s.harmless)))
            .with("undetected", Some(json!(s.undetected)))
            .with("reputation", a.reputation.map(|v| json!(v)))
            .with("as_owner", a.as_owner.map(|v| json!(v)))
            .with("asn", a.asn.map(|v| json!(v)))
            .with("country", a.country.map(|v| json!(v)))
            .with("network", a.network.map(|v| json!(v)))
            .with("last_analysis_date", a.last_analysis_date.map(|v| json!(v))))
    }
}
