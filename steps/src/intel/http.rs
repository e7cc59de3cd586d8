//! What every HTTP provider shares: URL building, sending, reading a
//! bounded body, and turning error statuses into [`ProviderError`]s without leaking the key.

use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::ProviderError;
use crate::net::{GuardError, GuardedClient, Secret};

/// Bodies larger than this are refused; a verdict never needs more.
const MAX_BODY: usize = 2 * 1024 * 1024;

/// Parse a base URL (`https://api.abuseipdb.com`, `http://127.0.0.1:8080/prefix`).
pub fn base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("invalid URL `{s}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("URL `{s}` must be http or https"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(format!("URL `{s}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "URL `{}` must not carry credentials; use `key`",
            url.host_str().unwrap_or_default()
        ));
    }
    Ok(url)
}

/// `base` with path segments appended (each one percent-encoded as needed).
pub fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Start a request through the outbound guard; a refused destination is a `Refused` error.
pub fn get(client: &GuardedClient, url: Url) -> Result<RequestBuilder, ProviderError> {
    client
        .request(reqwest::Method::GET, url)
        .map_err(|e| ProviderError::Refused(e.to_string()))
}

/// Send a request; transport failures become `Timeout`, `Refused` or `Network`.
pub async fn send(req: RequestBuilder, key: &Secret) -> Result<Response, ProviderError> {
    req.send().await.map_err(|e| transport(e, key))
}

fn transport(e: reqwest::Error, key: &Secret) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout;
    }
    // A name that resolves to a refused address, or a redirect to one.
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(g) = s.downcast_ref::<GuardError>() {
            return ProviderError::Refused(g.to_string());
        }
        source = s.source();
    }
    // The URL is left out: it names the provider, which the error entry already does.
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    ProviderError::Network(key.redact(&msg))
}

/// Read the body, refusing bodies over [`MAX_BODY`].
pub async fn body(mut resp: Response, key: &Secret) -> Result<Vec<u8>, ProviderError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ProviderError::BadResponse("response body too large".into()));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(e, key))? {
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(ProviderError::BadResponse("response body too large".into()));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Parse a JSON body into `T`; the error names the path of the bad field.
pub fn json<T: DeserializeOwned>(body: &[u8], key: &Secret) -> Result<T, ProviderError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = if path == "." {
            e.inner().to_string()
        } else {
            format!("`{path}`: {}", e.inner())
        };
        ProviderError::BadResponse(key.redact(&msg))
    })
}

/// The error for a non-success status. `detail` is a message the provider put in the body.
pub fn status_error(
    status: StatusCode,
    retry_after: Option<u64>,
    detail: Option<String>,
    key: &Secret,
) -> ProviderError {
    let code = status.as_u16();
    match code {
        401 | 403 => ProviderError::Unauthorized { status: code },
        429 => ProviderError::RateLimited {
            retry_after_secs: retry_after,
        },
        500..=599 => ProviderError::Server { status: code },
        _ => ProviderError::Status {
            status: code,
            detail: detail.map(|d| {
                let d = key.redact(d.trim());
                d.chars().take(200).collect()
            }),
        },
    }
}

/// `Retry-After` in seconds, when the server sent it in that form.
pub fn retry_after(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert!(base_url("https://api.abuseipdb.com").is_ok());
        assert!(base_url("ftp://example.com").is_err());
        assert!(base_url("not a url").is_err());
        assert!(base_url("https://user:pw@example.com").is_err());
        let b = base_url("http://127.0.0.1:9/prefix/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            join(&b, &["v3", "community", "2001:db8::1"]).as_str(),
            "http://127.0.0.1:9/prefix/v3/community/2001:db8::1"
        );
    }
}
