//! The parts of the config file `engine serve` reads itself: `server.*`, `okta.hook_secret`
//! and `okta.poll` (with `okta.url`, `okta.token`, `okta.rate_limit_max_wait`). Everything
//! is checked at start-up, so a bad value stops the server before it listens.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::auth::Secret;
use super::ServeError;

/// Default request body limit (`server.body_limit`).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Default and longest wait of `POST /events/{source}?wait=true`.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a client has to send a request's headers (`server.header_timeout`).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Okta's default System Log filter: the event types Okta cannot deliver by hook.
pub const DEFAULT_POLL_FILTER: &str =
    "eventType eq \"security.threat.detected\" or eventType eq \"policy.evaluate_sign_on\"";

/// What `engine serve` reads from the config file.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// `server.api_token`: Bearer token for `/api/*` and `/events/*`.
    pub api_token: Option<Secret>,
    /// `okta.hook_secret`: the `Authorization` value Okta sends with every hook call.
    pub hook_secret: Option<Secret>,
    /// `server.body_limit`: largest request body (bytes).
    pub body_limit: usize,
    /// `server.wait_timeout`: longest `?wait=true` (also the default).
    pub wait_timeout: Duration,
    /// `server.shutdown_grace`: how long in-flight requests may take after SIGTERM.
    pub shutdown_grace: Duration,
    /// `server.header_timeout`: how long a client may take to send a request's headers
    /// (a connection that trickles them, "slowloris", is closed).
    pub header_timeout: Duration,
    /// `okta.poll`, when present.
    pub poll: Option<PollConfig>,
    /// `server.sources.<name>`: per-source settings of `POST /events/{source}`.
    pub sources: BTreeMap<String, SourceConfig>,
}

/// `server.sources.<name>`: how `POST /events/<name>` answers.
///
/// ```yaml
/// server:
///   sources:
///     okta: { wait: true }   # answer when the runs are finished, as with `?wait=true`
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceConfig {
    /// Answer synchronously unless the request says `?wait=false`: for senders that cannot
    /// add a query string to the URL they post to.
    pub wait: bool,
}

impl ServeConfig {
    /// Whether `POST /events/{source}` waits for the runs when the request does not say.
    pub fn waits_by_default(&self, source: &str) -> bool {
        self.sources.get(source).is_some_and(|s| s.wait)
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            api_token: None,
            hook_secret: None,
            body_limit: DEFAULT_BODY_LIMIT,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            shutdown_grace: Duration::from_secs(10),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            poll: None,
            sources: BTreeMap::new(),
        }
    }
}

/// `okta.poll`: System Log polling.
#[derive(Clone, Debug)]
pub struct PollConfig {
    /// `okta.url`.
    pub url: url::Url,
    /// `okta.token` (sent as `SSWS`).
    pub token: Secret,
    /// `okta.poll.filter` (Okta's `filter` expression).
    pub filter: String,
    /// `okta.poll.interval`: pause between polls once caught up.
    pub interval: Duration,
    /// `okta.poll.since`: how far back the first poll (no cursor yet) starts.
    pub since: Duration,
    /// `okta.poll.limit`: events per page (Okta allows up to 1000).
    pub limit: u32,
    /// `okta.rate_limit_max_wait`: longest wait for `X-Rate-Limit-Reset` after a 429.
    pub max_wait: Duration,
    /// `okta.poll.timeout`: whole-request timeout.
    pub timeout: Duration,
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

fn string(v: &Value, path: &str) -> Result<Option<String>, ServeError> {
    match get(v, path) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ServeError::Config(format!("`{path}` must be a string"))),
    }
}

fn secret(v: &Value, path: &str) -> Result<Option<Secret>, ServeError> {
    // Never echo the value: it is a secret even when it has the wrong type.
    match string(v, path)? {
        Some(s) if s.trim().is_empty() => Err(ServeError::Config(format!(
            "`{path}` is empty: remove it or set it (an empty secret would let anyone in)"
        ))),
        Some(s) => Ok(Some(Secret::new(s))),
        None => Ok(None),
    }
}

/// A duration from a string such as `30s` or `5m`.
pub fn duration(v: &Value, path: &str, default: Duration) -> Result<Duration, ServeError> {
    match string(v, path)? {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s.trim())
            .map_err(|e| ServeError::Config(format!("`{path}`: invalid duration `{s}`: {e}"))),
    }
}

/// A duration as [`duration`] reads it, refused when it is zero.
fn positive_duration(v: &Value, path: &str, default: Duration) -> Result<Duration, ServeError> {
    let d = duration(v, path, default)?;
    if d.is_zero() {
        return Err(ServeError::Config(format!("`{path}` must be more than 0s")));
    }
    Ok(d)
}

/// A size in bytes: an integer, or a string with `B`, `KiB`, `MiB` (or `KB`, `MB`).
fn size(v: &Value, path: &str, default: usize) -> Result<usize, ServeError> {
    let bad = |s: &str| {
        ServeError::Config(format!(
            "`{path}`: invalid size `{s}` (e.g. `1MiB`, `512KiB`, `65536`)"
        ))
    };
    match get(v, path) {
        None => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(&n.to_string())),
        Some(Value::String(s)) => {
            let t = s.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: usize = num.parse().map_err(|_| bad(s))?;
            let mult = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" | "kib" => 1024,
                "m" | "mb" | "mib" => 1024 * 1024,
                _ => return Err(bad(s)),
            };
            n.checked_mul(mult).filter(|n| *n > 0).ok_or_else(|| bad(s))
        }
        Some(_) => Err(bad("a non-number")),
    }
}

impl ServeConfig {
    /// Read and check the server's keys of a config file (as JSON).
    pub fn from_config(config: &Value) -> Result<Self, ServeError> {
        Ok(ServeConfig {
            api_token: secret(config, "server.api_token")?,
            hook_secret: secret(config, "okta.hook_secret")?,
            body_limit: size(config, "server.body_limit", DEFAULT_BODY_LIMIT)?,
            wait_timeout: positive_duration(config, "server.wait_timeout", DEFAULT_WAIT_TIMEOUT)?,
            shutdown_grace: duration(config, "server.shutdown_grace", Duration::from_secs(10))?,
            header_timeout: positive_duration(
                config,
                "server.header_timeout",
                DEFAULT_HEADER_TIMEOUT,
            )?,
            poll: PollConfig::from_config(config)?,
            sources: sources(config)?,
        })
    }
}

/// `server.sources`: a mapping from source names (as in `POST /events/{source}`) to
/// `{wait: bool}`.
fn sources(config: &Value) -> Result<BTreeMap<String, SourceConfig>, ServeError> {
    let Some(v) = get(config, "server.sources") else {
        return Ok(BTreeMap::new());
    };
    let Some(map) = v.as_object() else {
        return Err(ServeError::Config(
            "`server.sources` must be a mapping of source names, e.g. `{okta: {wait: true}}`"
                .into(),
        ));
    };
    let mut out = BTreeMap::new();
    for (name, settings) in map {
        super::events::check_source(name)
            .map_err(|e| ServeError::Config(format!("`server.sources.{name}`: {}", e.message())))?;
        let mut source = SourceConfig::default();
        match settings {
            Value::Null => {}
            Value::Object(keys) => {
                for (k, v) in keys {
                    match (k.as_str(), v) {
                        ("wait", Value::Bool(b)) => source.wait = *b,
                        ("wait", _) => {
                            return Err(ServeError::Config(format!(
                                "`server.sources.{name}.wait` must be true or false"
                            )))
                        }
                        _ => {
                            return Err(ServeError::Config(format!(
                                "unknown key `server.sources.{name}.{k}` (known: wait)"
                            )))
                        }
                    }
                }
            }
            _ => {
                return Err(ServeError::Config(format!(
                    "`server.sources.{name}` must be a mapping such as `{{wait: true}}`"
                )))
            }
        }
        out.insert(name.clone(), source);
    }
    Ok(out)
}

impl PollConfig {
    /// `None` when `okta.poll` is absent.
    pub fn from_config(config: &Value) -> Result<Option<Self>, ServeError> {
        let Some(poll) = get(config, "okta.poll") else {
            return Ok(None);
        };
        if !poll.is_object() {
            return Err(ServeError::Config("`okta.poll` must be a mapping".into()));
        }
        if let Some(obj) = poll.as_object() {
            let known = ["interval", "filter", "since", "limit", "timeout"];
            if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(ServeError::Config(format!(
                    "unknown key `okta.poll.{k}` (known: {})",
                    known.join(", ")
                )));
            }
        }
        let url = string(config, "okta.url")?.ok_or_else(|| {
            ServeError::Config("`okta.poll` needs `okta.url` (e.g. https://acme.okta.com)".into())
        })?;
        let url = url::Url::parse(url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| {
                ServeError::Config(format!("`okta.url`: `{url}` is not an http(s) URL"))
            })?;
        let token = secret(config, "okta.token")?
            .ok_or_else(|| ServeError::Config("`okta.poll` needs `okta.token`".into()))?;
        let limit = match get(config, "okta.poll.limit") {
            None => 1000,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=1000).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| {
                    ServeError::Config("`okta.poll.limit` must be a number from 1 to 1000".into())
                })?,
        };
        let interval = duration(config, "okta.poll.interval", Duration::from_secs(60))?;
        if interval < Duration::from_millis(10) {
            return Err(ServeError::Config(
                "`okta.poll.interval` must be at least 10ms".into(),
            ));
        }
        Ok(Some(PollConfig {
            url,
            token,
            filter: string(config, "okta.poll.filter")?
                .unwrap_or_else(|| DEFAULT_POLL_FILTER.to_string()),
            interval,
            since: duration(config, "okta.poll.since", Duration::from_secs(15 * 60))?,
            limit,
            max_wait: duration(config, "okta.rate_limit_max_wait", Duration::from_secs(60))?,
            timeout: duration(config, "okta.poll.timeout", Duration::from_secs(30))?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_sizes() {
        let c = ServeConfig::from_config(&json!({})).unwrap();
        assert_eq!(c.body_limit, DEFAULT_BODY_LIMIT);
        assert!(c.api_token.is_none() && c.hook_secret.is_none() && c.poll.is_none());
        let c = ServeConfig::from_config(&json!({"server": {"body_limit": "512KiB"}})).unwrap();
        assert_eq!(c.body_limit, 512 * 1024);
        let c = ServeConfig::from_config(&json!({"server": {"body_limit": 2048}})).unwrap();
        assert_eq!(c.body_limit, 2048);
        assert!(ServeConfig::from_config(&json!({"server": {"body_limit": "lots"}})).is_err());
    }

    #[test]
    fn header_timeout_defaults_to_10s_and_must_be_positive() {
        let c = ServeConfig::from_config(&json!({})).unwrap();
        assert_eq!(c.header_timeout, DEFAULT_HEADER_TIMEOUT);
        let c = ServeConfig::from_config(&json!({"server": {"header_timeout": "2s"}})).unwrap();
        assert_eq!(c.header_timeout, Duration::from_secs(2));
        let e = ServeConfig::from_config(&json!({"server": {"header_timeout": "0s"}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("header_timeout"), "{e}");
        assert!(ServeConfig::from_config(&json!({"server": {"header_timeout": "soon"}})).is_err());
    }

    #[test]
    fn sources_say_which_answer_synchronously() {
        let c = ServeConfig::from_config(&json!({"server": {"sources": {
            "okta": {"wait": true}, "siem": {"wait": false}, "edr": null}}}))
        .unwrap();
        assert!(c.waits_by_default("okta"));
        assert!(!c.waits_by_default("siem") && !c.waits_by_default("edr"));
        assert!(!c.waits_by_default("other"));
        for bad in [
            json!({"server": {"sources": []}}),
            json!({"server": {"sources": {"okta": {"wait": "yes"}}}}),
            json!({"server": {"sources": {"okta": {"sync": true}}}}),
            json!({"server": {"sources": {"okta": true}}}),
            json!({"server": {"sources": {"case.created": {"wait": true}}}}),
            json!({"server": {"sources": {"Bad/Name": {"wait": true}}}}),
        ] {
            assert!(ServeConfig::from_config(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_never_echoed() {
        let e = ServeConfig::from_config(&json!({"server": {"api_token": 123456789}}))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("123456789"), "{e}");
        assert!(ServeConfig::from_config(&json!({"okta": {"hook_secret": " "}})).is_err());
    }

    #[test]
    fn poll_needs_url_and_token() {
        let e = ServeConfig::from_config(&json!({"okta": {"poll": {}}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("okta.url"), "{e}");
        let c = ServeConfig::from_config(&json!({"okta": {
            "url": "https://acme.okta.com", "token": "t0k3n",
            "poll": {"interval": "5s"}}}))
        .unwrap();
        let p = c.poll.unwrap();
        assert_eq!(p.interval, Duration::from_secs(5));
        assert_eq!(p.filter, DEFAULT_POLL_FILTER);
        assert!(!format!("{p:?}").contains("t0k3n"));
        assert!(ServeConfig::from_config(&json!({"okta": {
            "url": "https://acme.okta.com", "token": "t", "poll": {"intervall": "5s"}}}))
        .is_err());
    }
}
