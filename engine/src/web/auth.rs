//! Who may use the web view, and proof that a change came from its own forms.
//!
//! **Login.** With `server.api_token` set, an analyst logs in with that token and a name
//! (the name goes on the case timeline; one shared token means anyone holding it may
//! choose any name). Without a token, `engine serve` listens on loopback only, and the web
//! view needs no login: every visitor is `local` until they pick a name on `/login`.
//!
//! **Session cookie.** `caseflow_session`, `HttpOnly; SameSite=Strict; Path=/`, 12 hours
//! (`Secure` as well when a TLS proxy says `X-Forwarded-Proto: https`). Its value is
//! `1.<expires>.<nonce>.<name>.<mac>`: a random nonce and the name (hex) signed with
//! HMAC-SHA-256 under a key derived from the API token, never the token itself. Nothing
//! is kept on the server, so sessions survive a restart; changing the token ends every
//! session. Without a token the key is random per process.
//!
//! **CSRF.** Every POST carries a `csrf` form field equal to HMAC(key, nonce) of the
//! session the cookie names; [`Form`] checks it before a handler sees the body, so a
//! POST without it, or with another session's, is refused with 403. A visitor who is not
//! logged in gets an anonymous session on `/login`, so the login form is protected too.
//! POSTs whose `Origin` is another site are refused as well.
//!
//! **DNS rebinding.** Without a token, requests must name a loopback host
//! (`localhost`, `127.0.0.1`, `[::1]`): a web page that points its own domain at
//! 127.0.0.1 cannot read or change cases.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use super::page::{self, WebError};
use super::WebState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "caseflow_session";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The name of a visitor who has not chosen one, when no login is needed.
pub const LOCAL_USER: &str = "local";
/// Longest name accepted at login.
pub const MAX_NAME: usize = 100;
/// Pause after a wrong token, so guessing is slow.
const WRONG_TOKEN_DELAY: Duration = Duration::from_millis(400);

/// Whether a token is needed, and the key sessions are signed with.
pub struct Auth {
    /// SHA-256 of the API token, compared with the digest of what a person types; `None`
    /// when no token is configured (loopback, no login).
    token_digest: Option<[u8; 32]>,
    key: hmac::Key,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("login_required", &self.login_required())
            .finish_non_exhaustive()
    }
}

/// The visitor a valid cookie names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Random, hex; the CSRF token is derived from it.
    pub nonce: String,
    /// Logged in as this name; `None` for an anonymous (pre-login) session.
    pub user: Option<String>,
    /// Unix seconds.
    pub expires: u64,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(H[usize::from(x >> 4)] as char);
        s.push(H[usize::from(x & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if SystemRandom::new().fill(&mut b).is_err() {
        // The OS random source does not fail on supported systems; if it ever does, a
        // time-and-rand seed still gives distinct nonces (the MAC protects integrity).
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8 ^ rand::random::<u8>();
        }
    }
    b
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Auth {
    /// With `Some(token)`, logging in needs the token and sessions are signed with a key
    /// derived from it; with `None`, no login and a random key.
    pub fn new(api_token: Option<&str>) -> Self {
        match api_token {
            Some(token) => {
                let derive = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
                let key = hmac::sign(&derive, b"caseflow web session key v1");
                Auth {
                    token_digest: Some(sha256(token.as_bytes())),
                    key: hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()),
                }
            }
            None => Auth {
                token_digest: None,
                key: hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>()),
            },
        }
    }

    /// Whether a person must log in with the API token.
    pub fn login_required(&self) -> bool {
        self.token_digest.is_some()
    }

    /// Whether `presented` is the API token (true when none is configured). Both sides
    /// are hashed first, so the comparison takes the same time whatever the lengths.
    pub fn check_token(&self, presented: &str) -> bool {
        match &self.token_digest {
            Some(d) => bool::from(d.ct_eq(&sha256(presented.trim().as_bytes()))),
            None => true,
        }
    }

    /// A new session for `user` (`None`: anonymous) and its cookie value.
    pub fn issue(&self, user: Option<&str>, now: u64) -> (Session, String) {
        let session = Session {
            nonce: hex(&random_bytes::<16>()),
            user: user.map(str::to_string),
            expires: now + SESSION_TTL.as_secs(),
        };
        let value = self.encode(&session);
        (session, value)
    }

    fn encode(&self, s: &Session) -> String {
        let name = s
            .user
            .as_deref()
            .map_or("-".to_string(), |u| hex(u.as_bytes()));
        let body = format!("1.{}.{}.{name}", s.expires, s.nonce);
        let mac = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", hex(mac.as_ref()))
    }

    /// The session a cookie value names, if it is intact and not expired.
    pub fn verify(&self, value: &str, now: u64) -> Option<Session> {
        let (body, mac) = value.rsplit_once('.')?;
        hmac::verify(&self.key, body.as_bytes(), &unhex(mac)?).ok()?;
        let mut parts = body.split('.');
        if parts.next()? != "1" {
            return None;
        }
        let expires: u64 = parts.next()?.parse().ok()?;
        let nonce = parts.next()?.to_string();
        let name = parts.next()?;
        if parts.next().is_some() || expires <= now {
            return None;
        }
        let user = match name {
            "-" => None,
            h => Some(String::from_utf8(unhex(h)?).ok()?),
        };
        Some(Session {
            nonce,
            user,
            expires,
        })
    }

    /// The CSRF token of a session.
    pub fn csrf(&self, s: &Session) -> String {
        hex(hmac::sign(&self.key, format!("csrf.{}", s.nonce).as_bytes()).as_ref())
    }

    /// Whether `presented` is the CSRF token of `s`, compared in constant time.
    pub fn check_csrf(&self, s: &Session, presented: &str) -> bool {
        let expected = self.csrf(s);
        expected.len() == presented.len()
            && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The `Set-Cookie` value for a session cookie; `None` clears it.
pub fn cookie(value: Option<&str>, secure: bool) -> String {
    let (v, age) = match value {
        Some(v) => (v, SESSION_TTL.as_secs()),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}{secure}")
}

/// Whether the request came through a TLS-terminating proxy (so the cookie gets `Secure`).
pub fn behind_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

/// A host name without its port: `127.0.0.1:8080` -> `127.0.0.1`, `[::1]:80` -> `::1`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// `localhost`, `*.localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host_name(host).to_ascii_lowercase();
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A local path to go back to after login: must start with one `/` (no `//host`, no
/// scheme), so the login form cannot send anyone elsewhere.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control()) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// Paths a visitor who is not logged in may open.
fn is_public(path: &str) -> bool {
    path == "/login" || path.starts_with("/assets/")
}

/// Middleware on every web route: the host check, the session (issued or verified), and
/// the way to `/login` for visitors who are not logged in. Handlers find the [`Session`]
/// in the request's extensions.
pub async fn guard(State(state): State<WebState>, mut req: Request, next: Next) -> Response {
    let auth = &state.auth;
    let headers = req.headers();
    if !auth.login_required() {
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !is_loopback_host(host) {
            return WebError::new(
                StatusCode::FORBIDDEN,
                "without `server.api_token` the web view answers only on a loopback address (localhost, 127.0.0.1, [::1])",
            )
            .into_response();
        }
    }
    let path = req.uri().path().to_string();
    if path.starts_with("/assets/") {
        return next.run(req).await;
    }
    let now = now_secs();
    let secure = behind_tls(headers);
    let mut set_cookie = None;
    let session = match cookie_value(headers).and_then(|v| auth.verify(v, now)) {
        Some(s) => s,
        None => {
            let navigation = matches!(*req.method(), Method::GET | Method::HEAD);
            let cross_site = headers
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes() == b"cross-site");
            if navigation && cross_site {
                // SameSite=Strict keeps the cookie off navigations from other sites (a
                // link in a Slack message): reload once from this site, which sends it.
                let target = req
                    .uri()
                    .path_and_query()
                    .map_or("/".to_string(), |p| p.to_string());
                return page::bounce(&state, &safe_next(Some(&target)));
            }
            let user = (!auth.login_required()).then_some(LOCAL_USER);
            let (s, value) = auth.issue(user, now);
            set_cookie = Some(value);
            s
        }
    };
    if session.user.is_none() && !is_public(&path) {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            let back = req
                .uri()
                .path_and_query()
                .map_or("/".to_string(), |p| p.to_string());
            let to = format!(
                "/login?next={}",
                url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
            );
            return redirect(&to);
        }
        return WebError::new(StatusCode::FORBIDDEN, "log in first").into_response();
    }
    if req.method() == Method::POST {
        if let Err(e) = check_origin(req.headers()) {
            return e.into_response();
        }
    }
    req.extensions_mut().insert(session);
    let mut resp = next.run(req).await;
    if let Some(v) = set_cookie {
        // A handler that set its own cookie (login, logout) wins.
        if !resp.headers().contains_key(SET_COOKIE) {
            if let Ok(h) = HeaderValue::from_str(&cookie(Some(&v), secure)) {
                resp.headers_mut().append(SET_COOKIE, h);
            }
        }
    }
    resp
}

/// A POST whose `Origin` names another site is refused (a browser always sends `Origin`
/// on a form POST; tools that send none are let through to the CSRF check).
fn check_origin(headers: &HeaderMap) -> Result<(), WebError> {
    let Some(origin) = headers.get(ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Ok(());
    };
    let origin_host = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest.trim_end_matches('/'));
    // Behind a proxy the browser's host may arrive as `X-Forwarded-Host`.
    let same = [HOST.as_str(), "x-forwarded-host"].iter().any(|h| {
        headers
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|host| !host.is_empty() && origin_host.eq_ignore_ascii_case(host.trim()))
    });
    if same {
        Ok(())
    } else {
        Err(WebError::new(
            StatusCode::FORBIDDEN,
            "this form was sent from another site",
        ))
    }
}

/// `303 See Other` to a local path.
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// The fields of a form POST (`application/x-www-form-urlencoded`), after its `csrf`
/// field was checked against the session: every POST handler takes one, so no change
/// can skip the check.
#[derive(Debug)]
pub struct Form {
    pub session: Session,
    fields: HashMap<String, String>,
}

impl Form {
    /// A field, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// A field as sent (not trimmed), `""` when absent.
    pub fn raw(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

impl FromRequest<WebState> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &WebState) -> Result<Self, Self::Rejection> {
        let forbidden = |m: &str| WebError::new(StatusCode::FORBIDDEN, m).into_response();
        let Some(session) = req.extensions().get::<Session>().cloned() else {
            return Err(forbidden("no session: reload the page"));
        };
        let form_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form_type {
            return Err(WebError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a form (application/x-www-form-urlencoded)",
            )
            .into_response());
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let mut fields = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(&body) {
            fields
                .entry(k.into_owned())
                .or_insert_with(|| v.into_owned());
        }
        let presented = fields.get("csrf").map_or("", String::as_str);
        if !state.auth.check_csrf(&session, presented) {
            tracing::warn!("web form refused: missing or wrong CSRF token");
            return Err(forbidden(
                "the form's security token is missing or stale: reload the page and try again",
            ));
        }
        Ok(Form { session, fields })
    }
}

/// `GET /login`.
pub async fn login_page(
    State(state): State<WebState>,
    axum::Extension(session): axum::Extension<Session>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, WebError> {
    let next = url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned());
    page::login(
        &state,
        &session,
        &safe_next(next.as_deref()),
        None,
        StatusCode::OK,
    )
}

/// `POST /login`: token (when one is configured) and name.
pub async fn login(State(state): State<WebState>, headers: HeaderMap, form: Form) -> Response {
    let next = safe_next(form.get("next"));
    let name = form.get("name").unwrap_or(LOCAL_USER).to_string();
    let refuse = |msg: &str, status| {
        page::login(&state, &form.session, &next, Some(msg), status)
            .unwrap_or_else(IntoResponse::into_response)
    };
    if name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return refuse(
            &format!("the name must be at most {MAX_NAME} bytes, on one line"),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    if !state.auth.check_token(form.raw("token")) {
        tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        tracing::warn!("web login refused: wrong token");
        return refuse("wrong token", StatusCode::UNAUTHORIZED);
    }
    // A new nonce: a session fixed before login is not the one used after it.
    let (_, value) = state.auth.issue(Some(&name), now_secs());
    let mut resp = redirect(&next);
    if let Ok(v) = HeaderValue::from_str(&cookie(Some(&value), behind_tls(&headers))) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    tracing::info!(user = %name, "web login");
    resp
}

/// `POST /logout`.
pub async fn logout(headers: HeaderMap, _form: Form) -> Response {
    let mut resp = redirect("/login");
    if let Ok(v) = HeaderValue::from_str(&cookie(None, behind_tls(&headers))) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_round_trip_and_resist_tampering() {
        let a = Auth::new(Some("s3cret-token"));
        let (s, v) = a.issue(Some("dana <x>"), 1000);
        assert!(!v.contains("s3cret"), "the token never goes in the cookie");
        assert_eq!(a.verify(&v, 1001), Some(s.clone()));
        assert_eq!(a.verify(&v, s.expires), None, "expired");
        // Another name, the same MAC: refused.
        let forged = v.replacen(&hex(b"dana <x>"), &hex(b"admin"), 1);
        assert_eq!(a.verify(&forged, 1001), None);
        let longer = v.replacen(
            &format!("1.{}.", s.expires),
            &format!("1.{}.", s.expires + 9999),
            1,
        );
        assert_eq!(a.verify(&longer, 1001), None);
        assert_eq!(a.verify("garbage", 1001), None);
        assert_eq!(a.verify("", 1001), None);
        // Another token signs other sessions.
        assert_eq!(Auth::new(Some("other")).verify(&v, 1001), None);
        // The same token (a restart) keeps them.
        assert_eq!(Auth::new(Some("s3cret-token")).verify(&v, 1001), Some(s));
    }

    #[test]
    fn tokens_and_csrf_compare_exactly() {
        let a = Auth::new(Some("tok"));
        assert!(a.login_required());
        assert!(a.check_token("tok"));
        assert!(a.check_token(" tok\n"), "pasted with whitespace");
        assert!(!a.check_token("tok2"));
        assert!(!a.check_token(""));
        let (s1, _) = a.issue(None, 0);
        let (s2, _) = a.issue(None, 0);
        assert_ne!(s1.nonce, s2.nonce);
        let t1 = a.csrf(&s1);
        assert!(a.check_csrf(&s1, &t1));
        assert!(!a.check_csrf(&s2, &t1), "another session's token");
        assert!(!a.check_csrf(&s1, ""));
        assert!(!a.check_csrf(&s1, &t1[..10]));
        let open = Auth::new(None);
        assert!(!open.login_required());
        assert!(open.check_token("anything"));
    }

    #[test]
    fn cookie_flags() {
        let c = cookie(Some("v"), false);
        assert_eq!(
            c,
            "caseflow_session=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
        );
        assert!(cookie(Some("v"), true).ends_with("; Secure"));
        assert!(cookie(None, false).contains("Max-Age=0"));
    }

    #[test]
    fn hosts_and_next_paths() {
        for h in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:9",
            "a.localhost",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["evil.example", "10.0.0.1:80", "", "localhost.evil.example"] {
            assert!(!is_loopback_host(h), "{h}");
        }
        assert_eq!(safe_next(Some("/cases/CASE-000001")), "/cases/CASE-000001");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "evil",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
