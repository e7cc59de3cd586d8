//! The enrichment of one or many addresses: lists, scope filter, providers, combination,
//! cache. See the module docs of [`crate::intel`] for the flow.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use engine::cases::Timestamp;
use engine::persist::{Cache, Store};
use serde::{Deserialize, Serialize};

use super::cache::{TtlCache, DEFAULT_CAPACITY};
use super::config::{ConfigError, IntelConfig};
use super::http::base_url;
use super::lists::LocalList;
use super::scope::{classify, Scope};
use super::{abuseipdb, combine, greynoise, virustotal, Provider, ProviderVerdict, Verdict};
use crate::net::GuardedClient;

/// The store cache's namespace for enrichment answers.
pub const STORE_NAMESPACE: &str = "intel";

/// The external providers' answers for `key` in the store cache, if fresh and readable.
async fn stored_answers(
    store: &dyn Cache,
    key: &str,
    now: SystemTime,
) -> Option<BTreeMap<String, ProviderVerdict>> {
    match store
        .cache_get(STORE_NAMESPACE, key, Timestamp::from_system_time(now))
        .await
    {
        Ok(Some(v)) => serde_json::from_value(v).ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the store cache; asking the providers");
            None
        }
    }
}

/// Addresses enriched at the same time by [`Enricher::check_all`].
const PARALLEL_IPS: usize = 4;

/// The enrichment of one address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpResult {
    /// Canonical form (`::ffff:1.2.3.4` is reported as `1.2.3.4`).
    pub ip: String,
    /// [`combine`] over `providers`; for non-public addresses see `reason`.
    pub verdict: Verdict,
    /// Why the external providers were not asked (`private address (RFC 1918)`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every provider consulted, by name: lists always, external ones for public addresses.
    pub providers: BTreeMap<String, ProviderVerdict>,
    /// Providers that failed; each counts as `unknown` in `verdict`.
    pub errors: Vec<ProviderFailure>,
    /// True when this result came from the cache.
    #[serde(default)]
    pub cached: bool,
}

/// A provider that gave no verdict, and why (never containing an API key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderFailure {
    pub provider: String,
    pub message: String,
}

/// Local lists plus external providers, with a result cache.
pub struct Enricher {
    lists: Vec<Arc<LocalList>>,
    providers: Vec<Arc<dyn Provider>>,
    cache: TtlCache<IpResult>,
}

impl Enricher {
    /// From parts; `providers` are the external ones (only asked about public addresses).
    pub fn new(
        lists: Vec<LocalList>,
        providers: Vec<Arc<dyn Provider>>,
        cache_ttl: Duration,
    ) -> Self {
        Enricher {
            lists: lists.into_iter().map(Arc::new).collect(),
            providers,
            cache: TtlCache::new(cache_ttl, DEFAULT_CAPACITY),
        }
    }

    /// Build providers and load lists from the `intel` config. Every provider sends through
    /// `client`, the outbound guard; relative list paths are resolved against
    /// `base_dir`. Every problem (bad URL, unreadable list, bad list lines) is reported.
    pub fn from_config(
        cfg: &IntelConfig,
        client: Arc<GuardedClient>,
        base_dir: &Path,
    ) -> Result<Enricher, ConfigError> {
        let mut problems = Vec::new();
        let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
        if let Some(a) = &cfg.abuseipdb {
            match base_url(&a.url) {
                Ok(url) => providers.push(Arc::new(abuseipdb::AbuseIpDb::new(
                    client.clone(),
                    url,
                    a.key.clone(),
                    abuseipdb::Thresholds {
                        malicious_score: a.malicious_score,
                        suspicious_score: a.suspicious_score,
                    },
                ))),
                Err(e) => problems.push(format!("`intel.abuseipdb.url`: {e}")),
            }
        }
        if let Some(v) = &cfg.virustotal {
            match base_url(&v.url) {
                Ok(url) => providers.push(Arc::new(virustotal::VirusTotal::new(
                    client.clone(),
                    url,
                    v.key.clone(),
                    virustotal::Thresholds {
                        malicious_engines: v.malicious_engines,
                        suspicious_engines: v.suspicious_engines,
                    },
                ))),
                Err(e) => problems.push(format!("`intel.virustotal.url`: {e}")),
            }
        }
        if let Some(g) = &cfg.greynoise {
            match base_url(&g.url) {
                Ok(url) => providers.push(Arc::new(greynoise::GreyNoise::new(
                    client.clone(),
                    url,
                    g.key.clone(),
                ))),
                Err(e) => problems.push(format!("`intel.greynoise.url`: {e}")),
            }
        }
        let mut lists = Vec::new();
        for (i, l) in cfg.lists.iter().enumerate() {
            let path = base_dir.join(&l.path);
            match LocalList::load(l.name(), l.verdict, &path) {
                Ok(list) => lists.push(list),
                Err(e) => problems.push(format!("`intel.lists[{i}]`: {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(Enricher::new(lists, providers, cfg.cache_ttl))
    }

    /// Names of the external providers, in the order they were configured.
    pub fn provider_names(&self) -> Vec<&str> {
        self.providers.iter().map(|p| p.name()).collect()
    }

    /// Names of the local lists.
    pub fn list_names(&self) -> Vec<&str> {
        self.lists.iter().map(|l| l.name()).collect()
    }

    /// Enrich one address. Never fails: a failing provider counts as `unknown` and is
    /// reported in `errors`. Results without errors are cached until `now + cache_ttl`.
    pub async fn check(&self, ip: IpAddr, now: SystemTime) -> IpResult {
        self.check_with(ip, now, None).await
    }

    /// Like [`Enricher::check`], with the store's cache for the external providers'
    /// answers: kept across runs and restarts for `cache_ttl`, under the address and the
    /// names of the providers asked. List verdicts are never taken from it (lists are read
    /// fresh, so an edited list counts at once), and a store error only costs the lookup.
    pub async fn check_with(
        &self,
        ip: IpAddr,
        now: SystemTime,
        store: Option<&dyn Cache>,
    ) -> IpResult {
        let ip = ip.to_canonical();
        if let Some(mut hit) = self.cache.get(ip, now) {
            hit.cached = true;
            return hit;
        }
        let mut providers = BTreeMap::new();
        for list in &self.lists {
            providers.insert(list.name().to_string(), list.lookup(ip));
        }
        let scope = classify(ip);
        let mut errors = Vec::new();
        let mut cached = false;
        let store_key = self.store_key(ip);
        let store_hit = match (scope.is_public(), store) {
            (true, Some(store)) if !self.providers.is_empty() => {
                stored_answers(store, &store_key, now).await
            }
            _ => None,
        };
        if let Some(answers) = store_hit {
            providers.extend(answers);
            cached = true;
        } else if scope.is_public() {
            let mut set = tokio::task::JoinSet::new();
            for (i, p) in self.providers.iter().enumerate() {
                let p = p.clone();
                set.spawn(async move { (i, p.check(ip).await) });
            }
            let mut answers = Vec::new();
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok(answer) => answers.push(answer),
                    Err(e) => tracing::error!(error = %e, "intel provider task failed"),
                }
            }
            answers.sort_by_key(|(i, _)| *i);
            let mut answered = vec![false; self.providers.len()];
            for (i, answer) in answers {
                answered[i] = true;
                let name = self.providers[i].name().to_string();
                match answer {
                    Ok(v) => {
                        providers.insert(name, v);
                    }
                    Err(e) => {
                        tracing::warn!(provider = %name, %ip, error = %e, "intel provider failed");
                        providers.insert(name.clone(), ProviderVerdict::new(Verdict::Unknown));
                        errors.push(ProviderFailure {
                            provider: name,
                            message: e.to_string(),
                        });
                    }
                }
            }
            for (i, done) in answered.into_iter().enumerate() {
                if !done {
                    let name = self.providers[i].name().to_string();
                    providers.insert(name.clone(), ProviderVerdict::new(Verdict::Unknown));
                    errors.push(ProviderFailure {
                        provider: name,
                        message: "the provider call crashed".to_string(),
                    });
                }
            }
        }
        let combined = combine(providers.values().map(|v| v.verdict));
        let (verdict, reason) = match scope {
            Scope::Public => (combined, None),
            Scope::Private(reason) if combined == Verdict::Unknown => {
                (Verdict::Benign, Some(reason))
            }
            Scope::Private(reason) | Scope::Special(reason) => (combined, Some(reason)),
        };
        let result = IpResult {
            ip: ip.to_string(),
            verdict,
            reason: reason.map(str::to_string),
            providers,
            errors,
            cached,
        };
        if result.errors.is_empty() {
            // A result with a failed provider is not cached: the next run asks again.
            self.cache.insert(ip, now, result.clone());
            if let (false, true, Some(store)) = (cached, scope.is_public(), store) {
                self.store_answers(store, &store_key, &result, now).await;
            }
        }
        result
    }

    /// The store cache key: the address and the external providers asked, so adding or
    /// removing a provider asks again.
    fn store_key(&self, ip: IpAddr) -> String {
        let mut names: Vec<&str> = self.providers.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        format!("{ip}|{}", names.join(","))
    }

    /// Keeps the external providers' answers of `result` in the store for `cache_ttl`.
    async fn store_answers(
        &self,
        store: &dyn Cache,
        key: &str,
        result: &IpResult,
        now: SystemTime,
    ) {
        let ttl = self.cache.ttl();
        if self.providers.is_empty() || ttl.is_zero() {
            return;
        }
        let answers: BTreeMap<&str, &ProviderVerdict> = self
            .providers
            .iter()
            .filter_map(|p| result.providers.get_key_value(p.name()))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let Ok(value) = serde_json::to_value(&answers) else {
            return;
        };
        let expires = Timestamp::from_system_time(now + ttl);
        if let Err(e) = store.cache_put(STORE_NAMESPACE, key, &value, expires).await {
            tracing::warn!(error = %e, "could not keep an enrichment result in the store cache");
        }
    }

    /// Enrich several addresses (a few at a time), in the given order, each once.
    pub async fn check_all(self: &Arc<Self>, ips: &[IpAddr], now: SystemTime) -> Vec<IpResult> {
        self.check_all_with(ips, now, None).await
    }

    /// Like [`Enricher::check_all`], with the store's cache (see [`Enricher::check_with`]).
    pub async fn check_all_with(
        self: &Arc<Self>,
        ips: &[IpAddr],
        now: SystemTime,
        store: Option<Arc<dyn Store>>,
    ) -> Vec<IpResult> {
        let mut unique: Vec<IpAddr> = Vec::new();
        for ip in ips {
            let ip = ip.to_canonical();
            if !unique.contains(&ip) {
                unique.push(ip);
            }
        }
        let mut results: Vec<Option<IpResult>> = vec![None; unique.len()];
        for (chunk_no, chunk) in unique.chunks(PARALLEL_IPS).enumerate() {
            let mut set = tokio::task::JoinSet::new();
            for (j, ip) in chunk.iter().enumerate() {
                let me = self.clone();
                let ip = *ip;
                let store = store.clone();
                set.spawn(async move {
                    let cache = store.as_deref().map(|s| s as &dyn Cache);
                    (j, me.check_with(ip, now, cache).await)
                });
            }
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok((j, r)) => results[chunk_no * PARALLEL_IPS + j] = Some(r),
                    Err(e) => tracing::error!(error = %e, "intel enrichment task failed"),
                }
            }
        }
        results
            .into_iter()
            .zip(unique)
            .map(|(r, ip)| {
                r.unwrap_or_else(|| IpResult {
                    ip: ip.to_string(),
                    verdict: Verdict::Unknown,
                    reason: None,
                    providers: BTreeMap::new(),
                    errors: vec![ProviderFailure {
                        provider: "enrich.ip".to_string(),
                        message: "the enrichment crashed".to_string(),
                    }],
                    cached: false,
                })
            })
            .collect()
    }
}
