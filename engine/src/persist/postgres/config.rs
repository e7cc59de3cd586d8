//! Where the PostgreSQL store is and how to reach it: the database URL, the schema, the
//! pool, the lease, TLS; from `--database-url` / `CASEFLOW_DATABASE_URL` and the config's
//! `store.postgres` section.
//!
//! ```yaml
//! store:
//!   postgres:
//!     url: "${CASEFLOW_DATABASE_URL}"   # postgres://user:password@host:5432/db[?sslmode=require]
//!     schema: caseflow                  # default `public`; created when missing
//!     pool_size: 16                     # connections per process (plus one for liveness)
//!     lease: 20s                        # how long a silent process keeps its work
//!     ca_file: /etc/caseflow/db-ca.pem  # extra CA for the server's certificate
//! ```
//!
//! The password never leaves this module except to the driver: [`PgOptions::display_url`]
//! (used in every log line and error) has it removed.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::error::Error;

/// The default pool size per process.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// The default lease: how long a process that stopped answering keeps its claims.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(20);

/// How to open a PostgreSQL store.
#[derive(Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// The connection URL (`postgres://user:password@host:port/db?...`), or a libpq
    /// key=value string. May hold a password: never print it, use `display_url`.
    pub url: String,
    /// The schema the tables live in (created when missing). `None`: the URL's `schema`
    /// query parameter, else `public`.
    pub schema: Option<String>,
    /// Pooled connections per process.
    pub pool_size: usize,
    /// A process whose heartbeat is older than this loses its claims (a process that
    /// died is noticed at once: its session lock goes with its connection).
    pub lease: Duration,
    /// A PEM file with CA certificates trusted for the server's certificate, besides the
    /// public roots.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("lease", &self.lease)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl PgOptions {
    /// Options for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            schema: None,
            pool_size: DEFAULT_POOL_SIZE,
            lease: DEFAULT_LEASE,
            ca_file: None,
        }
    }

    /// The same options in another schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The URL without its password, for messages.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    /// The options of the config's `store.postgres` section, with `url` (the command
    /// line's `--database-url` or `CASEFLOW_DATABASE_URL`) taking precedence over
    /// `store.postgres.url`. `None` when neither gives a URL: the store is sled.
    pub fn from_config(url: Option<&str>, config: &Value) -> Result<Option<Self>, Error> {
        let section = config.get("store").and_then(|s| s.get("postgres"));
        let mut o = PgOptions::new(String::new());
        let mut config_url = None;
        match section {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let bad = |what: &str| {
                        Error::Config(format!("`store.postgres.{k}`: expected {what}, got {v}"))
                    };
                    match k.as_str() {
                        "url" => match v {
                            Value::String(s) if !s.trim().is_empty() => {
                                config_url = Some(s.trim().to_string())
                            }
                            Value::Null => {}
                            // The value may be a URL with a password: do not echo it.
                            _ => {
                                return Err(Error::Config(
                                    "`store.postgres.url`: expected a postgres:// URL".into(),
                                ))
                            }
                        },
                        "schema" => {
                            let s = v.as_str().ok_or_else(|| bad("a schema name"))?;
                            o.schema = Some(valid_schema(s).map_err(|e| {
                                Error::Config(format!("`store.postgres.schema`: {e}"))
                            })?);
                        }
                        "pool_size" => {
                            o.pool_size = v
                                .as_u64()
                                .filter(|n| (1..=1000).contains(n))
                                .map(|n| n as usize)
                                .ok_or_else(|| bad("a number of connections (1 to 1000)"))?
                        }
                        "lease" => {
                            o.lease = match v {
                                Value::String(s) => humantime::parse_duration(s.trim())
                                    .map_err(|e| {
                                        Error::Config(format!(
                                            "`store.postgres.lease`: `{s}`: {e}"
                                        ))
                                    })?,
                                Value::Number(n) => n
                                    .as_f64()
                                    .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e6)
                                    .map(Duration::from_secs_f64)
                                    .ok_or_else(|| bad("a duration such as `20s`"))?,
                                _ => return Err(bad("a duration such as `20s`")),
                            };
                            if o.lease < Duration::from_secs(1) {
                                return Err(bad("a duration of at least 1s"));
                            }
                        }
                        "ca_file" => {
                            o.ca_file =
                                Some(PathBuf::from(v.as_str().ok_or_else(|| bad("a path"))?))
                        }
                        other => {
                            return Err(Error::Config(format!(
                                "`store.postgres.{other}`: unknown key (known: `url`, `schema`, `pool_size`, `lease`, `ca_file`)"
                            )))
                        }
                    }
                }
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "`store.postgres`: expected a mapping, got {}",
                    kind(other)
                )))
            }
        }
        let url = url
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .or(config_url);
        Ok(url.map(|url| PgOptions { url, ..o }))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A schema name Caseflow accepts: lowercase letters, digits and `_`, not starting with a
/// digit, at most 63 bytes (so it never needs quoting).
pub(crate) fn valid_schema(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a valid schema name (lowercase letters, digits and `_`, at most 63)"
        ))
    }
}

/// `url` without its password: `postgres://user:secret@host/db` ->
/// `postgres://user@host/db`; `password=secret` in a key=value string -> `password=***`.
pub fn redact(url: &str) -> String {
    if let Some((scheme, _)) = url.split_once("://") {
        // Any scheme, not only PostgreSQL's: a mistyped `mysql://user:pw@...` is shown in
        // the error that refuses it, and must not show its password there.
        let scheme = if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            scheme
        } else {
            "?"
        };
        // A URL that parses into something other than `scheme://authority...` (say
        // `pa:ss://user:pw@host`, whose "path" would keep the password) counts as unparseable.
        match url::Url::parse(url)
            .ok()
            .filter(|u| u.scheme().eq_ignore_ascii_case(scheme) && u.has_host())
        {
            Some(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(None);
                }
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k.eq_ignore_ascii_case("password") {
                            "***".to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                if !pairs.is_empty() {
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                }
                u.to_string()
            }
            // Not parseable: show only the scheme, which cannot hold a secret.
            None => format!("{scheme}://<unparseable url>"),
        }
    } else {
        // key=value form: hide the value of `password`.
        let mut out = Vec::new();
        let mut hide_next = false;
        for word in url.split_whitespace() {
            if hide_next {
                out.push("***".to_string());
                hide_next = false;
                continue;
            }
            match word.split_once('=') {
                Some((k, _)) if k.trim().eq_ignore_ascii_case("password") => {
                    out.push(format!("{k}=***"))
                }
                None if word.eq_ignore_ascii_case("password") => {
                    out.push(word.to_string());
                    hide_next = true;
                }
                _ => out.push(word.to_string()),
            }
        }
        out.join(" ")
    }
}

/// The URL split into what the driver takes and what Caseflow reads itself: the
/// `schema` query parameter, and whether `sslmode` was given.
pub(crate) struct ParsedUrl {
    /// For `tokio_postgres::Config::from_str`.
    pub(crate) driver: String,
    pub(crate) schema: Option<String>,
    pub(crate) sslmode_given: bool,
}

pub(crate) fn split_url(url: &str) -> Result<ParsedUrl, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut u = url::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
        let mut schema = None;
        let mut sslmode_given = false;
        let mut keep = Vec::new();
        for (k, v) in u.query_pairs() {
            if k == "schema" {
                schema = Some(valid_schema(&v)?);
            } else {
                if k == "sslmode" {
                    sslmode_given = true;
                }
                keep.push((k.into_owned(), v.into_owned()));
            }
        }
        if keep.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(keep);
        }
        Ok(ParsedUrl {
            driver: u.to_string(),
            schema,
            sslmode_given,
        })
    } else if let Some((scheme, _)) = url.split_once("://") {
        let scheme: String = scheme
            .chars()
            .take(20)
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        Err(format!(
            "not a PostgreSQL URL (scheme `{scheme}`; expected postgres:// or postgresql://, or key=value settings)"
        ))
    } else {
        Ok(ParsedUrl {
            driver: url.to_string(),
            schema: None,
            sslmode_given: url
                .split_whitespace()
                .any(|w| w.trim_start().starts_with("sslmode")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_password_is_redacted() {
        assert_eq!(
            redact("postgres://ana:s3cret@db.example:5432/caseflow?sslmode=require"),
            "postgres://ana@db.example:5432/caseflow?sslmode=require"
        );
        assert_eq!(
            redact("postgres://ana@db/x?password=s3cret&application_name=a"),
            "postgres://ana@db/x?password=***&application_name=a"
        );
        assert_eq!(
            redact("host=db user=ana password=s3cret dbname=x"),
            "host=db user=ana password=*** dbname=x"
        );
        assert!(!redact("postgres://a:%s3cret@[oops").contains("s3cret"));
        // Not PostgreSQL's scheme: refused later, but never shown with its password.
        assert_eq!(redact("mysql://ana:s3cret@db/x"), "mysql://ana@db/x");
        assert!(!redact("mysql://ana:s3cret@[oops").contains("s3cret"));
        assert!(!redact("pa:ss://ana:s3cret@db/x").contains("s3cret"));
        let o = PgOptions::new("postgres://ana:s3cret@db/x");
        assert!(!format!("{o:?}").contains("s3cret"));
    }

    #[test]
    fn options_come_from_the_flag_and_the_config() {
        assert_eq!(PgOptions::from_config(None, &json!({})).unwrap(), None);
        let c = json!({"store": {"postgres": {"url": "postgres://c@db/x", "schema": "cf",
            "pool_size": 4, "lease": "5s", "ca_file": "/ca.pem"}}});
        let o = PgOptions::from_config(None, &c).unwrap().unwrap();
        assert_eq!(o.url, "postgres://c@db/x");
        assert_eq!(o.schema.as_deref(), Some("cf"));
        assert_eq!(o.pool_size, 4);
        assert_eq!(o.lease, Duration::from_secs(5));
        let o = PgOptions::from_config(Some("postgres://flag@db/y"), &c)
            .unwrap()
            .unwrap();
        assert_eq!(o.url, "postgres://flag@db/y", "the flag wins");
        for bad in [
            json!({"store": {"postgres": {"pool_size": 0}}}),
            json!({"store": {"postgres": {"schema": "Bad-Name"}}}),
            json!({"store": {"postgres": {"lease": "soon"}}}),
            json!({"store": {"postgres": {"lease": "10ms"}}}),
            json!({"store": {"postgres": {"host": "db"}}}),
            json!({"store": {"postgres": "postgres://x"}}),
        ] {
            assert!(PgOptions::from_config(None, &bad).is_err(), "{bad}");
        }
        let e =
            PgOptions::from_config(None, &json!({"store": {"postgres": {"url": 7}}})).unwrap_err();
        assert!(e.to_string().contains("store.postgres.url"), "{e}");
    }

    #[test]
    fn the_schema_parameter_is_ours() {
        let p = split_url("postgres://a:b@h/db?schema=t_1&sslmode=disable").unwrap();
        assert_eq!(p.schema.as_deref(), Some("t_1"));
        assert_eq!(p.driver, "postgres://a:b@h/db?sslmode=disable");
        assert!(p.sslmode_given);
        let p = split_url("postgres://h/db?schema=t_1").unwrap();
        assert_eq!(p.driver, "postgres://h/db");
        assert!(!p.sslmode_given);
        assert!(split_url("postgres://h/db?schema=DROP%20TABLE").is_err());
    }
}
