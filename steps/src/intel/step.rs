//! `enrich.ip`: verdicts for IP addresses from local lists, AbuseIPDB, VirusTotal and
//! GreyNoise (see [`crate::intel`]).
//!
//! The [`Enricher`] is built from `ctx.config()` on the first run and kept for the life of
//! the step (lists are loaded once; the result cache lives in it). Every provider request
//! goes through the outbound guard: the embedder's [`GuardedClient`] from the step services,
//! else one built from config `http` with `intel.timeout`. Verdicts are written back onto a
//! case with `cases.update` (observables with `verdict` and `enrichment`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use engine::{StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::config::IntelConfig;
use super::enricher::{Enricher, IpResult};
use super::{combine, Verdict};
use crate::net::GuardedClient;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// IPv4 or IPv6 addresses; duplicates are enriched once.
    pub ips: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Output {
    /// One result per distinct address, in input order.
    pub results: Vec<IpResult>,
    /// The worst verdict over all addresses (`unknown` for an empty list).
    pub verdict: Verdict,
}

/// The `enrich.ip` step.
pub struct EnrichIp {
    client: Option<Arc<GuardedClient>>,
    base_dir: Option<PathBuf>,
    enricher: OnceCell<Arc<Enricher>>,
}

impl Default for EnrichIp {
    fn default() -> Self {
        EnrichIp::new()
    }
}

impl EnrichIp {
    /// Uses the services' [`GuardedClient`], or builds one from config `http` and
    /// `intel.timeout` on the first run.
    pub fn new() -> Self {
        EnrichIp {
            client: None,
            base_dir: None,
            enricher: OnceCell::new(),
        }
    }

    /// Use `client` for every provider call. Its timeouts apply instead of `intel.timeout`.
    pub fn with_client(client: Arc<GuardedClient>) -> Self {
        EnrichIp {
            client: Some(client),
            ..EnrichIp::new()
        }
    }

    /// Resolve relative list paths against `dir` instead of the working directory.
    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Use a ready enricher (tests, embedders); the config is then not read.
    pub fn with_enricher(enricher: Arc<Enricher>) -> Self {
        EnrichIp {
            client: None,
            base_dir: None,
            enricher: OnceCell::new_with(Some(enricher)),
        }
    }

    async fn enricher(&self, ctx: &StepContext) -> Result<Arc<Enricher>, StepError> {
        self.enricher
            .get_or_try_init(|| async {
                let config = ctx.config();
                let cfg = IntelConfig::from_config(config)
                    .map_err(|e| StepError::permanent(format!("config: {e}")))?;
                let client = match self
                    .client
                    .clone()
                    .or_else(|| ctx.service::<GuardedClient>())
                {
                    Some(c) => c,
                    None => Arc::new(cfg.client(config)?),
                };
                let base = self.base_dir.clone().unwrap_or_default();
                // Lists can be large: read them off the async workers.
                let built =
                    tokio::task::spawn_blocking(move || Enricher::from_config(&cfg, client, &base))
                        .await
                        .map_err(|e| {
                            StepError::retryable(format!("loading `intel` failed: {e}"))
                        })?;
                built
                    .map(Arc::new)
                    .map_err(|e| StepError::permanent(format!("config: {e}")))
            })
            .await
            .cloned()
    }
}

/// Parse every address; the error names each value that is not one.
pub fn parse_ips(values: &[String]) -> Result<Vec<IpAddr>, StepError> {
    let mut ips = Vec::with_capacity(values.len());
    let mut bad = Vec::new();
    for v in values {
        match v.trim().parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => bad.push(format!("`{}`", v.chars().take(100).collect::<String>())),
        }
    }
    if bad.is_empty() {
        Ok(ips)
    } else {
        Err(StepError::permanent(format!(
            "not an IP address: {}",
            bad.join(", ")
        )))
    }
}

#[async_trait]
impl TypedStep for EnrichIp {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "enrich.ip";
    // Lookups only (reputation APIs, local lists); what it writes is the verdict cache,
    // which may lose its last entries in a crash without harm.
    const EFFECT_FREE: bool = true;

    fn description(&self) -> &'static str {
        "Verdicts (benign, suspicious, malicious, unknown) for IP addresses from local lists, AbuseIPDB, VirusTotal and GreyNoise; private addresses never leave the process."
    }

    fn example(&self) -> Value {
        json!({ "ips": ["{{ event.client.ipAddress }}", "203.0.113.7"] })
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        IntelConfig::from_config(config)
            .map(|_| ())
            .map_err(|e| format!("config `intel`: {e}"))?;
        crate::net::ClientConfig::from_config(config)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn run(&self, input: Input, ctx: &StepContext) -> Result<Output, StepError> {
        let ips = parse_ips(&input.ips)?;
        let enricher = self.enricher(ctx).await?;
        let results = enricher
            .check_all_with(&ips, ctx.now(), ctx.store().ok())
            .await;
        let verdict = combine(results.iter().map(|r| r.verdict));
        Ok(Output { results, verdict })
    }
}
