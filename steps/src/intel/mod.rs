//! IP enrichment: verdicts for IP addresses from local lists and threat-intel services.
//!
//! Data flow for one address (see [`Enricher::check`]):
//!
//! 1. the address is canonicalised (`::ffff:1.2.3.4` becomes `1.2.3.4`) and looked up in the
//!    in-process [`cache::TtlCache`];
//! 2. every local list ([`lists::LocalList`], netset/CIDR files) is consulted;
//! 3. if the address is public ([`scope::classify`]), every external [`Provider`]
//!    (AbuseIPDB, VirusTotal, GreyNoise) is asked concurrently; private, loopback, link-local,
//!    shared (CGNAT), multicast, reserved and unspecified addresses never leave the process;
//! 4. the per-provider [`Verdict`]s are combined with [`combine`]; a provider that fails
//!    counts as `unknown` and leaves an entry in `errors` instead of failing the enrichment.
//!
//! Providers are built from the `intel:` section of the config ([`config::IntelConfig`]) with
//! the step's [`crate::net::GuardedClient`], so every provider URL passes the outbound guard.
//! The `enrich.ip` step ([`step::EnrichIp`]) wraps an [`Enricher`].

pub mod abuseipdb;
pub mod cache;
pub mod config;
pub mod enricher;
pub mod greynoise;
mod http;
pub mod lists;
pub mod purge;
pub mod scope;
pub mod step;
pub mod virustotal;

use std::net::IpAddr;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use config::{ConfigError, IntelConfig};
pub use enricher::{Enricher, IpResult, ProviderFailure};
pub use purge::register_cache_purge;
pub use step::EnrichIp;

/// One provider's opinion of an address, or the combined opinion of all of them.
///
/// The order of the variants is the severity order [`combine`] uses:
/// `unknown < benign < suspicious < malicious`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No opinion: not listed, not observed, or the provider failed.
    Unknown,
    Benign,
    Suspicious,
    Malicious,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unknown => "unknown",
            Verdict::Benign => "benign",
            Verdict::Suspicious => "suspicious",
            Verdict::Malicious => "malicious",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Combine verdicts into one.
///
/// | any `malicious` | any `suspicious` | any `benign` | result       |
/// |-----------------|------------------|--------------|--------------|
/// | yes             | -                | -            | `malicious`  |
/// | no              | yes              | -            | `suspicious` |
/// | no              | no               | yes          | `benign`     |
/// | no              | no               | no           | `unknown`    |
///
/// So one provider's `benign` (an allowlist, say) never hides another's `malicious`, and a
/// failed provider (`unknown`) never changes the result. No verdicts at all give `unknown`.
pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    verdicts.into_iter().max().unwrap_or(Verdict::Unknown)
}

/// What one provider says about one address: a verdict and provider-specific details
/// (scores, counts, classification), flattened next to `verdict` in the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderVerdict {
    pub verdict: Verdict,
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

impl ProviderVerdict {
    pub fn new(verdict: Verdict) -> Self {
        ProviderVerdict {
            verdict,
            details: Map::new(),
        }
    }

    /// Add a detail; `None` values are left out.
    pub fn with(mut self, key: &str, value: impl Into<Option<Value>>) -> Self {
        if let Some(v) = value.into() {
            if !v.is_null() {
                self.details.insert(key.to_string(), v);
            }
        }
        self
    }
}

/// Why a provider gave no verdict. Messages never contain the API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("the API key was refused (HTTP {status})")]
    Unauthorized { status: u16 },
    #[error("rate limited or over quota (HTTP 429){}", retry_after_text(.retry_after_secs))]
    RateLimited { retry_after_secs: Option<u64> },
    #[error("server error (HTTP {status})")]
    Server { status: u16 },
    #[error("unexpected HTTP {status}{}", detail_text(.detail))]
    Status { status: u16, detail: Option<String> },
    #[error("timed out")]
    Timeout,
    #[error("request failed: {0}")]
    Network(String),
    /// The outbound guard refused the destination (config `http.allow_hosts` to allow it).
    #[error("{0}")]
    Refused(String),
    #[error("malformed response: {0}")]
    BadResponse(String),
}

fn retry_after_text(secs: &Option<u64>) -> String {
    match secs {
        Some(s) => format!(", retry after {s}s"),
        None => String::new(),
    }
}

fn detail_text(detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!(": {d}"),
        None => String::new(),
    }
}

/// A source of verdicts for IP addresses.
///
/// External providers are only ever called with public addresses; the [`Enricher`] filters
/// the others out before calling them.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The key under `providers` in the output (`abuseipdb`, a list's name, ...).
    fn name(&self) -> &str;
    async fn check(&self, ip: IpAddr) -> Result<ProviderVerdict, ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    /// The combination rule, as a table: inputs and the expected result.
    #[test]
    fn combination_table() {
        let table: &[(&[Verdict], Verdict)] = &[
            (&[], Unknown),
            (&[Unknown], Unknown),
            (&[Unknown, Unknown], Unknown),
            (&[Benign], Benign),
            (&[Unknown, Benign], Benign),
            (&[Benign, Unknown], Benign),
            (&[Suspicious], Suspicious),
            (&[Benign, Suspicious], Suspicious),
            (&[Suspicious, Benign, Unknown], Suspicious),
            (&[Malicious], Malicious),
            (&[Benign, Malicious], Malicious),
            (&[Malicious, Benign], Malicious),
            (&[Unknown, Suspicious, Malicious, Benign], Malicious),
            (&[Suspicious, Suspicious], Suspicious),
        ];
        for (inputs, expected) in table {
            assert_eq!(
                combine(inputs.iter().copied()),
                *expected,
                "combine({inputs:?})"
            );
        }
    }

    #[test]
    fn verdicts_serialize_lowercase() {
        assert_eq!(
            serde_json::to_value([Unknown, Benign, Suspicious, Malicious]).ok(),
            Some(serde_json::json!([
                "unknown",
                "benign",
                "suspicious",
                "malicious"
            ]))
        );
    }

    #[test]
    fn provider_verdict_flattens_details_and_drops_nulls() {
        let v = ProviderVerdict::new(Malicious)
            .with("score", Some(serde_json::json!(90)))
            .with("isp", Some(Value::Null))
            .with("country", None);
        assert_eq!(
            serde_json::to_value(&v).ok(),
            Some(serde_json::json!({"verdict": "malicious", "score": 90}))
        );
    }
}
