//! The guarded HTTP client every outbound step uses, and how its failures become step errors.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use engine::{StepContext, StepError};
use reqwest::redirect::Policy;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use url::Url;

use super::guard::{check_url, AllowList, GuardError, GuardedResolver};

/// The largest response body a step reads (bigger ones are a permanent error).
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Config `http:` as the client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `http.allow_hosts`: hosts that skip the destination guard.
    pub allow: AllowList,
    /// `http.connect_timeout` (default 5s).
    pub connect_timeout: Duration,
    /// `http.timeout`: the whole request, body included (default 30s).
    pub timeout: Duration,
    /// `http.max_redirects` (default 5); each target is checked like the first URL.
    pub max_redirects: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            allow: AllowList::default(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_redirects: 5,
        }
    }
}

/// A wrong value in config `http:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config `http.{key}`: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

impl From<ConfigError> for StepError {
    fn from(e: ConfigError) -> Self {
        StepError::permanent(e)
    }
}

impl ClientConfig {
    /// Read config `http:` (every key optional).
    pub fn from_config(config: &Value) -> Result<Self, ConfigError> {
        let mut c = ClientConfig::default();
        let Some(http) = config.get("http").filter(|v| !v.is_null()) else {
            return Ok(c);
        };
        let err = |key, message: String| ConfigError { key, message };
        let Some(http) = http.as_object() else {
            return Err(err("", "`http` must be a mapping".into()));
        };
        if let Some(hosts) = http.get("allow_hosts") {
            let list = hosts
                .as_array()
                .ok_or_else(|| err("allow_hosts", "must be a list of host names".into()))?;
            let mut names = Vec::new();
            for (i, h) in list.iter().enumerate() {
                match h.as_str() {
                    Some(s) => names.push(s),
                    None => return Err(err("allow_hosts", format!("entry {i} is not a string"))),
                }
            }
            c.allow = AllowList::new(names);
        }
        let duration = |key: &'static str| -> Result<Option<Duration>, ConfigError> {
            match http.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => match humantime::parse_duration(s.trim()) {
                    Ok(d) if !d.is_zero() => Ok(Some(d)),
                    Ok(_) => Err(err(key, "must be longer than zero".into())),
                    Err(e) => Err(err(key, format!("`{s}` is not a duration: {e}"))),
                },
                Some(_) => Err(err(key, "must be a duration like `10s`".into())),
            }
        };
        if let Some(d) = duration("connect_timeout")? {
            c.connect_timeout = d;
        }
        if let Some(d) = duration("timeout")? {
            c.timeout = d;
        }
        if let Some(v) = http.get("max_redirects").filter(|v| !v.is_null()) {
            c.max_redirects = v
                .as_u64()
                .filter(|n| *n <= 20)
                .ok_or_else(|| err("max_redirects", "must be a number from 0 to 20".into()))?
                as usize;
        }
        Ok(c)
    }
}

/// A reqwest client behind the destination guard.
///
/// [`GuardedClient::request`] checks the URL first; the client's resolver checks every name
/// it resolves and its redirect policy checks every redirect target. Proxies from the
/// environment are ignored: through a proxy the resolver would only ever see the proxy.
#[derive(Debug, Clone)]
pub struct GuardedClient {
    client: reqwest::Client,
    config: ClientConfig,
}

impl GuardedClient {
    pub fn new(config: ClientConfig) -> Result<Self, ConfigError> {
        let allow = config.allow.clone();
        let max = config.max_redirects;
        let policy = Policy::custom(move |attempt| {
            if attempt.previous().len() > max {
                return attempt.error(GuardError::TooManyRedirects(max));
            }
            match check_url(attempt.url(), &allow) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(config.allow.clone())))
            .redirect(policy)
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("caseflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError {
                key: "",
                message: format!("the HTTP client could not be built: {e}"),
            })?;
        Ok(GuardedClient { client, config })
    }

    /// A client for config `http:`.
    pub fn from_config(config: &Value) -> Result<Self, ConfigError> {
        Self::new(ClientConfig::from_config(config)?)
    }

    /// The embedder's shared client if one was put in the services
    /// (`services.insert(Arc::new(GuardedClient::..))`), else the engine's client for the
    /// config's `http:` settings, built on first use and then reused, so its connections
    /// are kept alive between steps (building a client, TLS roots included, costs far more
    /// than a request to a nearby API).
    pub fn for_context(ctx: &StepContext) -> Result<Arc<Self>, ConfigError> {
        if let Some(c) = ctx.service::<GuardedClient>() {
            return Ok(c);
        }
        let config = ClientConfig::from_config(ctx.config())?;
        ctx.shared(ClientCache::default).get(config)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Check a URL against the guard without sending anything.
    pub fn check(&self, url: &Url) -> Result<(), GuardError> {
        check_url(url, &self.config.allow)
    }

    /// Start a request to a checked URL.
    pub fn request(&self, method: Method, url: Url) -> Result<RequestBuilder, GuardError> {
        self.check(&url)?;
        Ok(self.client.request(method, url))
    }
}

/// Clients by their settings, for [`GuardedClient::for_context`]: one engine's steps share
/// them (see `engine::Services::shared`).
#[derive(Default)]
pub struct ClientCache(std::sync::Mutex<Vec<(ClientConfig, Arc<GuardedClient>)>>);

impl ClientCache {
    /// The client for `config`, built the first time it is asked for.
    pub fn get(&self, config: ClientConfig) -> Result<Arc<GuardedClient>, ConfigError> {
        let mut clients = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = clients.iter().find(|(k, _)| *k == config) {
            return Ok(c.clone());
        }
        let client = Arc::new(GuardedClient::new(config.clone())?);
        // A handful of settings at most (the config's, the intel section's); bounded anyway.
        if clients.len() >= 16 {
            clients.remove(0);
        }
        clients.push((config, client.clone()));
        Ok(client)
    }
}

/// The reqwest client of [`GuardedClient::from_config`]: resolver and redirect guard built
/// in. A URL whose host is an IP literal is not resolved, so call [`check_url`] before
/// sending, or use [`GuardedClient::request`], which does.
pub fn guarded_client(config: &Value) -> Result<reqwest::Client, ConfigError> {
    GuardedClient::from_config(config).map(|c| c.client)
}

/// A URL fit for messages: scheme, host, port and path; no credentials, query or fragment
/// (where API keys tend to travel).
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Turn a transport failure into a step error: a guard refusal or a bad request is
/// permanent, a timeout is a timeout, anything on the network is retryable. `what` names
/// the call (`okta: GET /api/v1/users/x/groups`). The message never holds the URL's query.
pub fn step_error(e: reqwest::Error, what: &str) -> StepError {
    let e = e.without_url();
    let mut guard: Option<&GuardError> = None;
    let mut chain: Vec<String> = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(g) = s.downcast_ref::<GuardError>() {
            guard = Some(g);
        }
        let text = s.to_string();
        if !chain.iter().any(|c| c.contains(&text)) {
            chain.push(text);
        }
        source = s.source();
    }
    if let Some(g) = guard {
        return StepError::permanent(format!("{what}: {g}"));
    }
    let detail = if chain.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {}", chain.join(": "))
    };
    if e.is_timeout() {
        StepError::timeout(format!("{what}: timed out ({detail})"))
    } else if e.is_builder() || e.is_redirect() {
        StepError::permanent(format!("{what}: {detail}"))
    } else {
        StepError::retryable(format!("{what}: {detail}"))
    }
}

/// Read a response body, refusing more than `limit` bytes.
pub async fn read_body(mut resp: Response, limit: usize, what: &str) -> Result<Vec<u8>, StepError> {
    let too_big =
        || StepError::permanent(format!("{what}: response body larger than {limit} bytes"));
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| step_error(e, what))? {
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
