//! The Okta System Log poller: the event types Okta cannot deliver by hook
//! (`security.threat.detected`, `policy.evaluate_sign_on`, ...) come into the same inbox as
//! hook deliveries, as source `okta`.
//!
//! Each poll pages `GET {okta.url}/api/v1/logs?since=...&sortOrder=ASCENDING&limit=...&filter=...`
//! with `Authorization: SSWS <okta.token>` (a sensitive header, never logged), following the
//! `Link: <...>; rel="next"` URLs as Okta asks (never building cursors; only within the
//! origin of `okta.url`, so the token goes nowhere else). After each page's events are
//! durably in the inbox, the `next` URL is saved as the cursor `okta.poll`; a restart resumes
//! from it, and an event seen twice (a page fetched again after a crash between ingest and
//! cursor) collapses by `uuid`. A poll that reads a short page is caught up and waits
//! `okta.poll.interval`. The first poll, with no cursor yet, starts `okta.poll.since` ago;
//! a changed `filter` restarts from the last event's `published` time.
//!
//! A 429 waits until `X-Rate-Limit-Reset` (epoch seconds) plus up to 1 s of jitter, at most
//! `okta.rate_limit_max_wait`, and says it is a retry (`X-Okta-Retry-For`/`-Count`); a
//! longer wait, or a third 429 in a row, ends the poll with an error and the next poll
//! tries again after the interval.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, LINK};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::config::PollConfig;
use super::metrics::Metrics;
use crate::persist::Store;
use crate::schedule::Engine;

/// The name of the poller's cursor in the store.
pub const CURSOR: &str = "okta.poll";
/// 429s waited out for one page before the poll ends.
const MAX_RATE_LIMIT_WAITS: u32 = 2;
/// Largest page body read (1000 events are a few MiB).
const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;

/// What is saved between pages and across restarts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    /// The `next` link of the last page read.
    pub next: String,
    /// The filter that link was made with.
    pub filter: String,
    /// `published` of the last event read, to restart from when the filter changes.
    #[serde(default)]
    pub last_published: Option<String>,
}

/// Poll until `stop` is cancelled.
pub async fn run(
    cfg: PollConfig,
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
        // A redirect could carry the token to another host.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "okta poller: cannot build an HTTP client; not polling");
            return;
        }
    };
    let poller = Poller {
        cfg,
        client,
        engine,
        store,
        metrics,
    };
    tracing::info!(url = %poller.cfg.url, filter = %poller.cfg.filter, "okta System Log poller started");
    loop {
        match poller.poll(&stop).await {
            Ok(n) if n > 0 => tracing::info!(events = n, "okta System Log polled"),
            Ok(_) => tracing::debug!("okta System Log polled: nothing new"),
            Err(e) => {
                poller.metrics.poll_failed();
                tracing::warn!(error = %e, "okta System Log poll failed; trying again after the interval");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poller.cfg.interval) => {}
        }
    }
}

struct Poller {
    cfg: PollConfig,
    client: reqwest::Client,
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

struct Page {
    events: Vec<Value>,
    next: Option<Url>,
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

impl Poller {
    /// The first poll's URL: `since` ago, or a given time.
    fn initial_url(&self, since: &str) -> Result<Url, String> {
        let mut u = self.cfg.url.clone();
        u.set_query(None);
        u.set_fragment(None);
        u.path_segments_mut()
            .map_err(|()| "`okta.url` cannot have a path".to_string())?
            .pop_if_empty()
            .extend(["api", "v1", "logs"]);
        u.query_pairs_mut()
            .append_pair("since", since)
            .append_pair("sortOrder", "ASCENDING")
            .append_pair("limit", &self.cfg.limit.to_string())
            .append_pair("filter", &self.cfg.filter);
        Ok(u)
    }

    /// Where this poll starts: the saved cursor when it fits the config, else `since`.
    async fn start(&self) -> Result<(Url, Option<String>), String> {
        let saved = self
            .store
            .get_cursor(CURSOR)
            .await
            .map_err(|e| format!("cannot read the cursor: {e}"))?;
        let cursor = match saved.as_deref().map(serde_json::from_str::<Cursor>) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "okta poller: the saved cursor is unreadable; starting from `okta.poll.since`");
                None
            }
        };
        if let Some(c) = cursor {
            let next = Url::parse(&c.next).ok();
            match next {
                Some(u) if same_origin(&u, &self.cfg.url) && c.filter == self.cfg.filter => {
                    return Ok((u, c.last_published));
                }
                _ => {
                    tracing::info!("okta poller: `okta.url` or `okta.poll.filter` changed; restarting from the last event read");
                    if let Some(p) = &c.last_published {
                        return Ok((self.initial_url(p)?, c.last_published.clone()));
                    }
                }
            }
        }
        let since = SystemTime::now()
            .checked_sub(self.cfg.since)
            .unwrap_or(UNIX_EPOCH);
        Ok((
            self.initial_url(&crate::schedule::executor::rfc3339(since))?,
            None,
        ))
    }

    /// Read pages until a short one; returns how many events were read.
    async fn poll(&self, stop: &CancellationToken) -> Result<usize, String> {
        let (mut url, mut last_published) = self.start().await?;
        let mut total = 0;
        loop {
            if stop.is_cancelled() {
                return Ok(total);
            }
            let page = self.fetch(&url, stop).await?;
            let n = page.events.len();
            if let Some(p) = page
                .events
                .iter()
                .rev()
                .find_map(|e| e.get("published").and_then(Value::as_str))
            {
                last_published = Some(p.to_string());
            }
            if n > 0 {
                let ingested = self
                    .engine
                    .ingest("okta", page.events)
                    .await
                    .map_err(|e| format!("cannot store polled events: {e}"))?;
                let dups = ingested.iter().filter(|i| i.duplicate).count();
                self.metrics.received("okta", "poll", n as u64, dups as u64);
                total += n;
            }
            // Only after the events are durable: a crash before this re-reads the page,
            // and its events collapse by uuid.
            let cursor = Cursor {
                next: page.next.as_ref().unwrap_or(&url).to_string(),
                filter: self.cfg.filter.clone(),
                last_published: last_published.clone(),
            };
            let json = serde_json::to_string(&cursor).map_err(|e| e.to_string())?;
            self.store
                .put_cursor(CURSOR, &json)
                .await
                .map_err(|e| format!("cannot save the cursor: {e}"))?;
            match page.next {
                Some(next) if n >= self.cfg.limit as usize => url = next,
                _ => return Ok(total),
            }
        }
    }

    fn auth(&self) -> Result<HeaderValue, String> {
        let mut v = HeaderValue::from_str(&format!("SSWS {}", self.cfg.token.expose()))
            .map_err(|_| "`okta.token` is not usable in an HTTP header".to_string())?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// One page, waiting out rate limits.
    async fn fetch(&self, url: &Url, stop: &CancellationToken) -> Result<Page, String> {
        let what = format!("GET {}", url.path());
        let mut waits = 0;
        let mut retry_for: Option<HeaderValue> = None;
        loop {
            let mut req = self
                .client
                .get(url.clone())
                .header(AUTHORIZATION, self.auth()?)
                .header(ACCEPT, "application/json");
            if let Some(id) = &retry_for {
                req = req
                    .header("X-Okta-Retry-For", id.clone())
                    .header("X-Okta-Retry-Count", waits.to_string());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| format!("okta: {what}: {}", e.without_url()))?;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = rate_limit_wait(resp.headers(), SystemTime::now());
                if waits >= MAX_RATE_LIMIT_WAITS || wait > self.cfg.max_wait {
                    return Err(format!(
                        "okta: {what}: rate limited (HTTP 429) for {}s, longer than allowed",
                        wait.as_secs()
                    ));
                }
                retry_for = resp.headers().get("x-okta-request-id").cloned();
                waits += 1;
                let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..1000));
                tracing::info!(
                    wait_ms = (wait + jitter).as_millis() as u64,
                    "okta: rate limited; waiting for X-Rate-Limit-Reset"
                );
                tokio::select! {
                    _ = stop.cancelled() => return Err("stopping".into()),
                    _ = tokio::time::sleep(wait + jitter) => {}
                }
                continue;
            }
            let next = next_link(resp.headers())
                .and_then(|n| url.join(&n).ok())
                .filter(|n| {
                    let ok = same_origin(n, &self.cfg.url);
                    if !ok {
                        tracing::warn!("okta: ignoring a `next` link to another origin");
                    }
                    ok
                });
            let body = read_body(resp)
                .await
                .map_err(|e| format!("okta: {what}: {e}"))?;
            if !status.is_success() {
                return Err(format!(
                    "okta: {what}: HTTP {status}{}",
                    error_summary(&body)
                ));
            }
            let events: Vec<Value> = serde_json::from_slice(&body)
                .map_err(|e| format!("okta: {what}: the body is not a list of events: {e}"))?;
            let events = events.into_iter().filter(Value::is_object).collect();
            return Ok(Page { events, next });
        }
    }
}

async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the body: {}", e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_PAGE_BYTES {
            return Err(format!("the body is larger than {MAX_PAGE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `: E0000047 API call exceeded rate limit` from an Okta error body, if it is one.
fn error_summary(body: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OktaError {
        #[serde(default)]
        error_code: Option<String>,
        #[serde(default)]
        error_summary: Option<String>,
    }
    match serde_json::from_slice::<OktaError>(body) {
        Ok(e) => {
            let parts: Vec<String> = [e.error_code, e.error_summary]
                .into_iter()
                .flatten()
                .map(|s| s.chars().take(200).collect())
                .collect();
            if parts.is_empty() {
                String::new()
            } else {
                format!(": {}", parts.join(" "))
            }
        }
        Err(_) => String::new(),
    }
}

/// How long a 429 asks to wait: until `X-Rate-Limit-Reset` (epoch seconds); 1 s when the
/// header is missing or already past.
pub fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Duration {
    let reset = headers
        .get("x-rate-limit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    match reset {
        Some(r) if r > now => Duration::from_secs(r - now),
        _ => Duration::from_secs(1),
    }
}

/// The `rel="next"` target of the `Link` headers: any number of header lines, each with
/// any number of comma-separated `<url>; param; ...` values.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK) {
        let Ok(text) = value.to_str() else { continue };
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            let after = &rest[open + 1..];
            let close = after.find('>')?;
            let target = &after[..close];
            let params_end = after[close + 1..]
                .find('<')
                .map(|i| close + 1 + i)
                .unwrap_or(after.len());
            let params = &after[close + 1..params_end];
            let is_next = params.split(';').any(|p| {
                let p = p.trim().trim_end_matches(',').trim();
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("rel")
                        && v.trim()
                            .trim_matches('"')
                            .split_ascii_whitespace()
                            .any(|r| r.eq_ignore_ascii_case("next"))
                })
            });
            if is_next {
                return Some(target.to_string());
            }
            rest = &after[params_end..];
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(LINK, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn next_links_in_separate_or_joined_headers() {
        let sep = headers(&[
            "<https://acme.okta.com/api/v1/logs?limit=2>; rel=\"self\"",
            "<https://acme.okta.com/api/v1/logs?limit=2&after=abc>; rel=\"next\"",
        ]);
        assert_eq!(
            next_link(&sep).as_deref(),
            Some("https://acme.okta.com/api/v1/logs?limit=2&after=abc")
        );
        let joined = headers(&[
            "<https://a/x?limit=2>; rel=\"self\", <https://a/x?after=q%2C1>; rel=\"next\"",
        ]);
        assert_eq!(
            next_link(&joined).as_deref(),
            Some("https://a/x?after=q%2C1")
        );
        assert_eq!(next_link(&headers(&["<https://a/x>; rel=\"self\""])), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
        assert_eq!(next_link(&headers(&["garbage <unclosed"])), None);
    }

    #[test]
    fn rate_limit_waits_until_reset() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-reset", HeaderValue::from_static("1007"));
        assert_eq!(rate_limit_wait(&h, now), Duration::from_secs(7));
        h.insert("x-rate-limit-reset", HeaderValue::from_static("900"));
        assert_eq!(rate_limit_wait(&h, now), Duration::from_secs(1));
        assert_eq!(
            rate_limit_wait(&HeaderMap::new(), now),
            Duration::from_secs(1)
        );
    }
}
