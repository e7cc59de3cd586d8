//! The `intel:` section of the config file.
//!
//! ```yaml
//! intel:
//!   abuseipdb: { key: "${ABUSEIPDB_KEY}", malicious_score: 75, suspicious_score: 25 }
//!   virustotal: { key: "${VT_KEY}", malicious_engines: 3, suspicious_engines: 1 }
//!   greynoise: { key: "${GREYNOISE_KEY}" }   # key optional (keyless community quota)
//!   lists:
//!     - { name: demo-blocklist, path: playbooks/data/intel/blocklist.netset, verdict: malicious }
//!     - { name: demo-allowlist, path: playbooks/data/intel/allowlist.netset, verdict: benign }
//!   cache_ttl: 1h      # 0s disables the cache
//!   timeout: 10s       # per request to a provider
//! ```
//!
//! A provider is used when its section is present; `url` defaults to the public service and
//! is only changed for tests and proxies. Relative list paths are resolved against the
//! directory the engine runs in (or the base directory given to [`crate::intel::Enricher`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{abuseipdb, virustotal, Verdict};
use crate::net::{ClientConfig, GuardedClient, Secret};

/// Every problem found in the `intel` section, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntelConfig {
    #[serde(default)]
    pub abuseipdb: Option<AbuseIpDbConfig>,
    #[serde(default)]
    pub virustotal: Option<VirusTotalConfig>,
    #[serde(default)]
    pub greynoise: Option<GreyNoiseConfig>,
    #[serde(default)]
    pub lists: Vec<ListConfig>,
    /// How long a result is reused; `0s` turns the cache off.
    #[serde(default = "default_cache_ttl", with = "crate::duration")]
    pub cache_ttl: Duration,
    /// Whole-request timeout for each provider call (connect timeout is the smaller of this
    /// and 5 s).
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbuseIpDbConfig {
    #[serde(default = "default_abuseipdb_url")]
    pub url: String,
    pub key: Secret,
    #[serde(default = "default_malicious_score")]
    pub malicious_score: u8,
    #[serde(default = "default_suspicious_score")]
    pub suspicious_score: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirusTotalConfig {
    #[serde(default = "default_virustotal_url")]
    pub url: String,
    pub key: Secret,
    #[serde(default = "default_malicious_engines")]
    pub malicious_engines: u32,
    #[serde(default = "default_suspicious_engines")]
    pub suspicious_engines: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreyNoiseConfig {
    #[serde(default = "default_greynoise_url")]
    pub url: String,
    #[serde(default)]
    pub key: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    pub path: PathBuf,
    /// What a listed address is: `malicious`, `suspicious` or `benign`.
    pub verdict: Verdict,
    /// The key under `providers` in the output; defaults to the file name without extension.
    #[serde(default)]
    pub name: Option<String>,
}

impl ListConfig {
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.path.display().to_string())
        })
    }
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_abuseipdb_url() -> String {
    abuseipdb::DEFAULT_URL.to_string()
}
fn default_virustotal_url() -> String {
    virustotal::DEFAULT_URL.to_string()
}
fn default_greynoise_url() -> String {
    super::greynoise::DEFAULT_URL.to_string()
}
fn default_malicious_score() -> u8 {
    abuseipdb::Thresholds::default().malicious_score
}
fn default_suspicious_score() -> u8 {
    abuseipdb::Thresholds::default().suspicious_score
}
fn default_malicious_engines() -> u32 {
    virustotal::Thresholds::default().malicious_engines
}
fn default_suspicious_engines() -> u32 {
    virustotal::Thresholds::default().suspicious_engines
}

impl IntelConfig {
    /// Read `intel` from the whole config file; a missing section gives the defaults (no
    /// providers, no lists).
    pub fn from_config(config: &Value) -> Result<IntelConfig, ConfigError> {
        match config.get("intel") {
            None | Some(Value::Null) => Ok(IntelConfig::default_values()),
            Some(v) => IntelConfig::from_value(v),
        }
    }

    /// Parse the `intel` section itself and check it, collecting every problem.
    pub fn from_value(v: &Value) -> Result<IntelConfig, ConfigError> {
        let cfg: IntelConfig = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                ConfigError(vec![format!("`intel`: {}", e.inner())])
            } else {
                ConfigError(vec![format!("`intel.{path}`: {}", e.inner())])
            }
        })?;
        let problems = cfg.problems();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError(problems))
        }
    }

    fn default_values() -> IntelConfig {
        IntelConfig {
            cache_ttl: default_cache_ttl(),
            timeout: default_timeout(),
            ..IntelConfig::default()
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(a) = &self.abuseipdb {
            if a.key.is_empty() {
                p.push("`intel.abuseipdb.key` is empty".to_string());
            }
            if a.malicious_score > 100 || a.suspicious_score > 100 {
                p.push("`intel.abuseipdb` scores must be between 0 and 100".to_string());
            }
            if a.suspicious_score > a.malicious_score {
                p.push(format!(
                    "`intel.abuseipdb.suspicious_score` ({}) is above `malicious_score` ({})",
                    a.suspicious_score, a.malicious_score
                ));
            }
            if let Err(e) = super::http::base_url(&a.url) {
                p.push(format!("`intel.abuseipdb.url`: {e}"));
            }
        }
        if let Some(v) = &self.virustotal {
            if v.key.is_empty() {
                p.push("`intel.virustotal.key` is empty".to_string());
            }
            if v.malicious_engines == 0 || v.suspicious_engines == 0 {
                p.push("`intel.virustotal` engine counts must be at least 1".to_string());
            }
            if v.suspicious_engines > v.malicious_engines {
                p.push(format!(
                    "`intel.virustotal.suspicious_engines` ({}) is above `malicious_engines` ({})",
                    v.suspicious_engines, v.malicious_engines
                ));
            }
            if let Err(e) = super::http::base_url(&v.url) {
                p.push(format!("`intel.virustotal.url`: {e}"));
            }
        }
        if let Some(g) = &self.greynoise {
            if let Err(e) = super::http::base_url(&g.url) {
                p.push(format!("`intel.greynoise.url`: {e}"));
            }
        }
        let reserved = [abuseipdb::NAME, virustotal::NAME, super::greynoise::NAME];
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.lists.iter().enumerate() {
            let name = l.name();
            if l.verdict == Verdict::Unknown {
                p.push(format!(
                    "`intel.lists[{i}].verdict` must be malicious, suspicious or benign"
                ));
            }
            if name.is_empty() {
                p.push(format!("`intel.lists[{i}].name` is empty"));
            } else if reserved.contains(&name.as_str()) {
                p.push(format!(
                    "`intel.lists[{i}].name` `{name}` is the name of a provider"
                ));
            } else if !seen.insert(name.clone()) {
                p.push(format!(
                    "`intel.lists[{i}].name` `{name}` is used by another list"
                ));
            }
        }
        if self.timeout.is_zero() {
            p.push("`intel.timeout` must be more than 0s".to_string());
        }
        p
    }

    /// The guarded client used when the embedder put none in the services: config `http`
    /// (allow list) with this section's timeout, and no redirects (the providers' APIs
    /// never redirect; following one could leave the provider's host).
    pub fn client(&self, config: &Value) -> Result<GuardedClient, crate::net::ConfigError> {
        let mut c = ClientConfig::from_config(config)?;
        c.timeout = self.timeout;
        c.connect_timeout = self.timeout.min(Duration::from_secs(5));
        c.max_redirects = 0;
        GuardedClient::new(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_section_gives_defaults() {
        let c = IntelConfig::from_config(&json!({})).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.abuseipdb.is_none() && c.lists.is_empty());
        assert_eq!(c.cache_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn defaults_and_durations() {
        let c = IntelConfig::from_config(&json!({"intel": {
            "abuseipdb": {"key": "k1234"},
            "virustotal": {"key": "k5678", "malicious_engines": 5},
            "greynoise": {},
            "cache_ttl": "30m",
            "timeout": 3,
        }}))
        .unwrap_or_else(|e| panic!("{e}"));
        let a = c.abuseipdb.unwrap_or_else(|| panic!("abuseipdb"));
        assert_eq!((a.malicious_score, a.suspicious_score), (75, 25));
        assert_eq!(a.url, "https://api.abuseipdb.com");
        let v = c.virustotal.unwrap_or_else(|| panic!("virustotal"));
        assert_eq!((v.malicious_engines, v.suspicious_engines), (5, 1));
        assert!(c.greynoise.is_some_and(|g| g.key.is_none()));
        assert_eq!(c.cache_ttl, Duration::from_secs(1800));
        assert_eq!(c.timeout, Duration::from_secs(3));
    }

    #[test]
    fn every_problem_is_reported() {
        let e = IntelConfig::from_config(&json!({"intel": {
            "abuseipdb": {"key": "", "malicious_score": 20, "url": "ftp://x"},
            "virustotal": {"key": "k", "malicious_engines": 0},
            "lists": [
                {"path": "a.netset", "verdict": "unknown"},
                {"path": "b/a.txt", "verdict": "benign"},
                {"path": "c", "verdict": "benign", "name": "greynoise"},
            ],
        }}))
        .err()
        .map(|e| e.0)
        .unwrap_or_default();
        let text = e.join("\n");
        for needle in [
            "`intel.abuseipdb.key` is empty",
            "`intel.abuseipdb.suspicious_score` (25) is above `malicious_score` (20)",
            "`intel.abuseipdb.url`",
            "engine counts must be at least 1",
            "`intel.lists[0].verdict`",
            "`intel.lists[1].name` `a` is used by another list",
            "`intel.lists[2].name` `greynoise` is the name of a provider",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_path() {
        let e =
            IntelConfig::from_config(&json!({"intel": {"abuseipdb": {"key": "k", "score": 1}}}))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
        assert!(
            e.starts_with("`intel.abuseipdb.score`: unknown field"),
            "{e}"
        );
        let e = IntelConfig::from_config(&json!({"intel": {"cache_ttl": "soon"}}))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("cache_ttl"), "{e}");
    }

    #[test]
    fn keys_do_not_show_in_debug() {
        let c = IntelConfig::from_config(&json!({"intel": {"abuseipdb": {"key": "topsecret"}}}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
