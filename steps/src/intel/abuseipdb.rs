//! AbuseIPDB APIv2 `check` (PROTOCOLS.md §4.1).
//!
//! `GET {url}/api/v2/check?ipAddress=<ip>&maxAgeInDays=90` with headers `Key` and
//! `Accept: application/json`. The verdict comes from `data.abuseConfidenceScore`, as
//! AbuseIPDB advises (not from `isWhitelisted`):
//!
//! | condition                                            | verdict      |
//! |------------------------------------------------------|--------------|
//! | score >= `malicious_score` (default 75)              | `malicious`  |
//! | score >= `suspicious_score` (default 25)             | `suspicious` |
//! | lower score, and reported at least once or whitelisted | `benign`   |
//! | score 0, never reported, not whitelisted             | `unknown`    |
//!
//! An address nobody ever reported is not known to be good, so it stays `unknown`.

use std::net::IpAddr;

use async_trait::async_trait;
use std::sync::Arc;

use reqwest::Url;
use serde::Deserialize;
use serde_json::json;

use super::http;
use super::{Provider, ProviderError, ProviderVerdict, Verdict};
use crate::net::{GuardedClient, Secret};

pub const DEFAULT_URL: &str = "https://api.abuseipdb.com";
pub const NAME: &str = "abuseipdb";

/// Score thresholds (0-100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub malicious_score: u8,
    pub suspicious_score: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            malicious_score: 75,
            suspicious_score: 25,
        }
    }
}

pub struct AbuseIpDb {
    client: Arc<GuardedClient>,
    url: Url,
    key: Secret,
    thresholds: Thresholds,
}

impl AbuseIpDb {
    /// `url` is the base (`https://api.abuseipdb.com`); the path is appended.
    pub fn new(client: Arc<GuardedClient>, url: Url, key: Secret, thresholds: Thresholds) -> Self {
        AbuseIpDb {
            client,
            url,
            key,
            thresholds,
        }
    }

    pub fn verdict(&self, score: u8, total_reports: u64, whitelisted: bool) -> Verdict {
        let t = self.thresholds;
        if score >= t.malicious_score {
            Verdict::Malicious
        } else if score >= t.suspicious_score {
            Verdict::Suspicious
        } else if total_reports > 0 || whitelisted {
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
#[serde(rename_all = "camelCase")]
struct Data {
    abuse_confidence_score: u8,
    #[serde(default)]
    total_reports: Option<u64>,
    #[serde(default)]
    num_distinct_users: Option<u64>,
    #[serde(default)]
    is_whitelisted: Option<bool>,
    #[serde(default)]
    country_code: Option<String>,
    #[serde(default)]
    usage_type: Option<String>,
    #[serde(default)]
    isp: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    is_tor: Option<bool>,
    #[serde(default)]
    last_reported_at: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    detail: Option<String>,
}

#[async_trait]
impl Provider for AbuseIpDb {
    fn name(&self) -> &str {
        NAME
    }

    async fn check(&self, ip: IpAddr) -> Result<ProviderVerdict, ProviderError> {
        let mut url = http::join(&self.url, &["api", "v2", "check"]);
        url.query_pairs_mut()
            .append_pair("ipAddress", &ip.to_string())
            .append_pair("maxAgeInDays", "90");
        let req = http::get(&self.client, url)?
            .header("Key", self.key.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        let resp = http::send(req, &self.key).await?;
        let status = resp.status();
        let retry_after = http::retry_after(&resp);
        let body = http::body(resp, &self.key).await?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<ErrorBody>(&body)
                .ok()
                .and_then(|b| b.errors.into_iter().find_map(|e| e.detail));
            return Err(http::status_error(status, retry_after, detail, &self.key));
        }
        let d = http::json::<Body>(&body, &self.key)?.data;
        if d.abuse_confidence_score > 100 {
            return Err(ProviderError::BadResponse(format!(
                "`data.abuseConfidenceScore` is {}, over 100",
                d.abuse_confidence_score
            )));
        }
        let verdict = self.verdict(
            d.abuse_confidence_score,
            d.total_reports.unwrap_or(0),
            d.is_whitelisted.unwrap_or(false),
        );
        Ok(ProviderVerdict::new(verdict)
            .with(
                "abuse_confidence_score",
                Some(json!(d.abuse_confidence_score)),
            )
            .with("total_reports", d.total_reports.map(|v| json!(v)))
            .with("num_distinct_users", d.num_distinct_users.map(|v| json!(v)))
            .with("is_whitelisted", d.is_whitelisted.map(|v| json!(v)))
            .with("country_code", d.country_code.map(|v| json!(v)))
            .with("usage_type", d.usage_type.map(|v| json!(v)))
            .with("isp", d.isp.map(|v| json!(v)))
            .with("domain", d.domain.map(|v| json!(v)))
            .with("is_tor", d.is_tor.map(|v| json!(v)))
            .with("last_reported_at", d.last_reported_at.map(|v| json!(v))))
    }
}
