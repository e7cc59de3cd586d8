//! The web view's static files, embedded in the binary (no CDN, works offline): the
//! stylesheet, the one script (live sections, SLA countdown, small form helpers; the CSP
//! allows no inline script) and the icon. Pages link them as `/assets/<file>?v=<version>`,
//! where the version is a hash of their contents, so browsers may cache them for good.

use std::sync::OnceLock;

use axum::extract::{Path, RawQuery};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::page::WebError;

/// `(name, content type, bytes)` of every asset.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("assets/favicon.svg"),
    ),
];

/// A hash of every asset (FNV-1a, hex): changes when any of them does.
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (name, _, bytes) in ASSETS {
            for b in name.bytes().chain(bytes.iter().copied()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{:012x}", h & 0xffff_ffff_ffff)
    })
}

/// `GET /assets/{file}`.
pub async fn serve(Path(file): Path<String>, RawQuery(q): RawQuery) -> Response {
    let Some((_, ctype, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == file) else {
        return WebError::not_found("no such file").into_response();
    };
    let versioned = q.as_deref() == Some(&format!("v={}", version()));
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut r = (StatusCode::OK, *bytes).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}
