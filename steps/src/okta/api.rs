//! The Okta Management API client behind the Okta steps (PROTOCOLS.md §3).
//!
//! Every request goes through the guarded client with `Authorization: SSWS <token>` (a
//! sensitive header, never logged) and `Accept: application/json`. A 429 waits for
//! `X-Rate-Limit-Reset` plus jitter, at most `okta.rate_limit_max_wait`, and tells Okta it
//! is a retry (`X-Okta-Retry-For`/`-Count`); a longer wait, or a third 429 in a row, is a
//! retryable error for the step's `retry:`. Pages follow `Link: <...>; rel="next"`, only
//! within the org's origin, so the token is never sent elsewhere.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use engine::{StepContext, StepError};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, LINK};
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;
use url::Url;

use super::Group;
use crate::net::{read_body, redact_url, step_error, GuardedClient, Secret, MAX_BODY_BYTES};

/// Pages of one listing before giving up (200 groups a page).
const MAX_PAGES: usize = 100;
/// 429s waited out for one request before handing over to the step's `retry:`.
const MAX_RATE_LIMIT_WAITS: u32 = 2;
/// Error bodies are small; read no more of them than this.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub struct OktaApi {
    base: Url,
    token: Secret,
    http: Arc<GuardedClient>,
    max_wait: Duration,
}

#[derive(Deserialize)]
struct ApiGroup {
    id: String,
    #[serde(default)]
    profile: Option<ApiGroupProfile>,
}

#[derive(Deserialize)]
struct ApiGroupProfile {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct ApiUser {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiError {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_summary: Option<String>,
}

impl OktaApi {
    pub fn new(
        url: &str,
        token: Secret,
        http: Arc<GuardedClient>,
        max_wait: Duration,
    ) -> Result<Self, StepError> {
        let bad = |why: &str| StepError::permanent(format!("invalid config `okta.url`: {why}"));
        let base = Url::parse(url).map_err(|e| bad(&format!("`{url}`: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad(&format!(
                "`{}` is not an http(s) URL",
                redact_url(&base)
            )));
        }
        Ok(OktaApi {
            base,
            token,
            http,
            max_wait,
        })
    }

    /// `{okta.url}/a/b/c`, each segment percent-encoded (a login may hold `/` or `?`).
    fn endpoint(&self, segments: &[&str]) -> Result<Url, StepError> {
        let mut u = self.base.clone();
        u.set_query(None);
        u.set_fragment(None);
        u.path_segments_mut()
            .map_err(|()| StepError::permanent("invalid config `okta.url`: it cannot have a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(u)
    }

    fn auth(&self) -> Result<HeaderValue, StepError> {
        let mut v =
            HeaderValue::from_str(&format!("SSWS {}", self.token.expose())).map_err(|_| {
                StepError::permanent("invalid config `okta.token`: not usable in an HTTP header")
            })?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// Send a request, waiting out rate limits; any other status comes back as is.
    async fn call(
        &self,
        ctx: &StepContext,
        method: Method,
        url: &Url,
    ) -> Result<Response, StepError> {
        let what = format!("okta: {method} {}", url.path());
        let mut waits = 0;
        let mut retry_for: Option<HeaderValue> = None;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .map_err(|e| StepError::permanent(format!("{what}: {e}")))?
                .header(AUTHORIZATION, self.auth()?)
                .header(ACCEPT, "application/json");
            if let Some(id) = &retry_for {
                req = req
                    .header("X-Okta-Retry-For", id.clone())
                    .header("X-Okta-Retry-Count", waits.to_string());
            }
            let resp = req.send().await.map_err(|e| step_error(e, &what))?;
            let status = resp.status();
            tracing::debug!(%method, path = %url.path(), status = status.as_u16(), "okta response");
            if status != StatusCode::TOO_MANY_REQUESTS {
                return Ok(resp);
            }
            waits += 1;
            let wait = self.rate_limit_wait(ctx, resp.headers(), &what, waits)?;
            retry_for = resp.headers().get("x-okta-request-id").cloned();
            tracing::warn!(path = %url.path(), wait_ms = wait.as_millis() as u64, "okta rate limit, waiting for the reset");
            tokio::time::sleep(wait).await;
        }
    }

    fn rate_limit_wait(
        &self,
        ctx: &StepContext,
        headers: &HeaderMap,
        what: &str,
        waits: u32,
    ) -> Result<Duration, StepError> {
        let reset = headers
            .get("x-rate-limit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                StepError::retryable(format!(
                    "{what}: rate limited (429) without a usable `X-Rate-Limit-Reset`"
                ))
            })?;
        if waits > MAX_RATE_LIMIT_WAITS {
            return Err(StepError::retryable(format!(
                "{what}: still rate limited (429) after waiting {MAX_RATE_LIMIT_WAITS} times"
            )));
        }
        let now = ctx.now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let until = Duration::from_secs(reset).saturating_sub(now);
        // Jitter keeps runs that hit the same limit from all returning in the same instant.
        let wait = until + Duration::from_millis(ctx.rng().gen_range(50..300));
        if wait > self.max_wait {
            return Err(StepError::retryable(format!(
                "{what}: rate limited (429); the limit resets in {}s, later than `okta.rate_limit_max_wait` ({})",
                until.as_secs(),
                humantime::format_duration(self.max_wait)
            )));
        }
        Ok(wait)
    }

    /// The step error for a non-success response: names the call, the status and Okta's
    /// `errorSummary` and `errorCode`; 5xx retryable, the rest permanent.
    async fn status_error(&self, resp: Response, what: &str) -> StepError {
        let status = resp.status();
        let body = read_body(resp, MAX_ERROR_BODY, what)
            .await
            .unwrap_or_default();
        let detail = match serde_json::from_slice::<ApiError>(&body) {
            Ok(ApiError {
                error_code,
                error_summary,
            }) => {
                let summary: String = error_summary
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                match (summary.is_empty(), error_code) {
                    (false, Some(c)) => format!(": {summary} ({c})"),
                    (false, None) => format!(": {summary}"),
                    (true, Some(c)) => format!(" ({c})"),
                    (true, None) => String::new(),
                }
            }
            Err(_) => String::new(),
        };
        let hint = match status.as_u16() {
            401 => "; check `okta.token`",
            403 => "; the API token lacks the permission for this call",
            _ => "",
        };
        let msg = format!("{what} returned {status}{detail}{hint}");
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            StepError::retryable(msg)
        } else {
            StepError::permanent(msg)
        }
    }

    async fn expect_success(
        &self,
        ctx: &StepContext,
        method: Method,
        url: &Url,
    ) -> Result<Response, StepError> {
        let resp = self.call(ctx, method.clone(), url).await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let what = format!("okta: {method} {}", url.path());
            Err(self.status_error(resp, &what).await)
        }
    }

    /// `GET /api/v1/users/{user}/groups`, every page.
    pub async fn user_groups(
        &self,
        ctx: &StepContext,
        user: &str,
    ) -> Result<Vec<Group>, StepError> {
        let mut url = self.endpoint(&["api", "v1", "users", user, "groups"])?;
        url.query_pairs_mut().append_pair("limit", "200");
        let what = format!("okta: GET {}", url.path());
        let mut groups = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = self.expect_success(ctx, Method::GET, &url).await?;
            let next = next_link(
                &resp
                    .headers()
                    .get_all(LINK)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect::<Vec<_>>(),
            );
            let body = read_body(resp, MAX_BODY_BYTES, &what).await?;
            let page: Vec<ApiGroup> = serde_json::from_slice(&body).map_err(|e| {
                StepError::permanent(format!("{what}: the response is not a list of groups: {e}"))
            })?;
            groups.extend(page.into_iter().map(|g| {
                let name = g
                    .profile
                    .and_then(|p| p.name)
                    .unwrap_or_else(|| g.id.clone());
                Group { id: g.id, name }
            }));
            let Some(next) = next else {
                return Ok(groups);
            };
            let next = url.join(&next).map_err(|e| {
                StepError::permanent(format!("{what}: the next-page link is not a URL: {e}"))
            })?;
            if next.origin() != self.base.origin() {
                return Err(StepError::permanent(format!(
                    "{what}: the next-page link points to `{}`, outside the Okta org; not following it",
                    redact_url(&next)
                )));
            }
            url = next;
        }
        Err(StepError::permanent(format!(
            "{what}: more than {MAX_PAGES} pages of groups; stopped"
        )))
    }

    /// `POST /api/v1/users/{user}/lifecycle/suspend`. `Ok(true)` when the user was already
    /// suspended (Okta answers 400 then; a retried suspend must not fail).
    pub async fn suspend(&self, ctx: &StepContext, user: &str) -> Result<bool, StepError> {
        let url = self.endpoint(&["api", "v1", "users", user, "lifecycle", "suspend"])?;
        let resp = self.call(ctx, Method::POST, &url).await?;
        if resp.status().is_success() {
            return Ok(false);
        }
        let status = resp.status();
        let err = self
            .status_error(resp, &format!("okta: POST {}", url.path()))
            .await;
        if status == StatusCode::BAD_REQUEST
            && self.user_status(ctx, user).await?.as_deref() == Some("SUSPENDED")
        {
            return Ok(true);
        }
        Err(err)
    }

    async fn user_status(
        &self,
        ctx: &StepContext,
        user: &str,
    ) -> Result<Option<String>, StepError> {
        let url = self.endpoint(&["api", "v1", "users", user])?;
        let what = format!("okta: GET {}", url.path());
        let resp = self.expect_success(ctx, Method::GET, &url).await?;
        let body = read_body(resp, MAX_BODY_BYTES, &what).await?;
        let u: ApiUser = serde_json::from_slice(&body).map_err(|e| {
            StepError::permanent(format!("{what}: the response is not a user: {e}"))
        })?;
        Ok(u.status)
    }

    /// `DELETE /api/v1/users/{user}/sessions[?oauthTokens=true]`.
    pub async fn clear_sessions(
        &self,
        ctx: &StepContext,
        user: &str,
        oauth_tokens: bool,
    ) -> Result<(), StepError> {
        let mut url = self.endpoint(&["api", "v1", "users", user, "sessions"])?;
        if oauth_tokens {
            url.query_pairs_mut().append_pair("oauthTokens", "true");
        }
        self.expect_success(ctx, Method::DELETE, &url).await?;
        Ok(())
    }
}

/// The `rel="next"` target among `Link` header values: one link or several per value,
/// comma-separated; `rel` quoted or not, possibly with several relation types.
pub fn next_link(values: &[&str]) -> Option<String> {
    for v in values {
        let mut rest = *v;
        while let Some(start) = rest.find('<') {
            let after = &rest[start + 1..];
            let end = after.find('>')?;
            let target = &after[..end];
            let tail = &after[end + 1..];
            let params_end = tail.find('<').unwrap_or(tail.len());
            let is_next = tail[..params_end].split(';').any(|p| {
                let p = p.trim_matches(|c: char| c == ',' || c.is_whitespace());
                match p.split_once('=') {
                    Some((k, v)) if k.trim().eq_ignore_ascii_case("rel") => v
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next")),
                    _ => false,
                }
            });
            if is_next {
                return Some(target.to_string());
            }
            rest = &tail[params_end..];
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn next_links_are_found_in_separate_or_combined_header_values() {
        let a = "<https://o.okta.com/api/v1/users/x/groups?limit=2>; rel=\"self\"";
        let b = "<https://o.okta.com/api/v1/users/x/groups?after=00g2&limit=2>; rel=\"next\"";
        assert_eq!(next_link(&[a]), None);
        assert_eq!(
            next_link(&[a, b]).as_deref(),
            Some("https://o.okta.com/api/v1/users/x/groups?after=00g2&limit=2")
        );
        let both = format!("{a}, {b}");
        assert_eq!(next_link(&[&both]), next_link(&[a, b]));
        assert_eq!(next_link(&["</p2>; rel=next"]).as_deref(), Some("/p2"));
        assert_eq!(
            next_link(&["</p2>; rel=\"prev next\""]).as_deref(),
            Some("/p2")
        );
        assert_eq!(next_link(&["</p2>; title=\"next\""]), None);
    }
}
