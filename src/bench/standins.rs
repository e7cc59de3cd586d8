//! Stand-ins for the systems the IAM playbooks call, served over real HTTP on 127.0.0.1:
//! the Okta Management API (user groups), AbuseIPDB, VirusTotal, GreyNoise and a Slack
//! incoming webhook. They answer at once with fixed, plausible bodies: every bench user's IP
//! is malicious (so every chain ends in an assigned case) and one user in ten is a VIP.
//!
//! The Slack stand-in is where a chain is seen to end: the assignment notification
//! (`CASE-... assigned to ...: Okta ...: <user>`) names the user, and the waiter registered
//! for that user is woken. So the bench measures from the delivery to the last thing the
//! chain does, in whichever process the engine runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The Okta API token the stand-in expects (`okta.token`).
pub const OKTA_TOKEN: &str = "bench-okta-token";
/// The AbuseIPDB and VirusTotal keys it expects.
pub const ABUSE_KEY: &str = "bench-abuse-key";
pub const VT_KEY: &str = "bench-vt-key";
/// The path of the Slack webhook.
pub const SLACK_PATH: &str = "/services/T0BENCH/B0BENCH/benchsecret";
/// Every bench user's login ends with this domain; the number before `@` is its index.
pub const USER_DOMAIN: &str = "bench.example";

/// The login of bench user `i` of run `tag` (lower case: the playbook lower-cases logins).
pub fn user(tag: &str, i: u64) -> String {
    format!("u{tag}-{i}@{USER_DOMAIN}")
}

/// The index of a bench login of run `tag` found anywhere in `text`.
fn user_index(tag: &str, text: &str) -> Option<u64> {
    let marker = format!("u{tag}-");
    let start = text.find(&marker)? + marker.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let rest = &text[start + digits.len()..];
    if !rest.starts_with(&format!("@{USER_DOMAIN}")) {
        return None;
    }
    digits.parse().ok()
}

/// Calls the stand-ins answered, by kind.
#[derive(Default, Debug)]
pub struct Counters {
    pub okta_groups: AtomicU64,
    pub abuseipdb: AtomicU64,
    pub virustotal: AtomicU64,
    pub greynoise: AtomicU64,
    pub slack: AtomicU64,
    pub slack_assigned: AtomicU64,
    pub slack_vip: AtomicU64,
    pub refused: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "okta_groups": g(&self.okta_groups),
            "abuseipdb": g(&self.abuseipdb),
            "virustotal": g(&self.virustotal),
            "greynoise": g(&self.greynoise),
            "slack": g(&self.slack),
            "slack_assigned": g(&self.slack_assigned),
            "slack_vip": g(&self.slack_vip),
            "refused": g(&self.refused),
        })
    }
}

/// What the handlers share.
pub struct Inner {
    /// The run's tag in bench logins.
    tag: String,
    pub counters: Counters,
    /// Chains waiting for their assignment notification, by user index.
    waiters: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

/// The running stand-ins.
pub struct StandIns {
    pub base: String,
    pub inner: Arc<Inner>,
    stop: CancellationToken,
}

impl StandIns {
    /// Serve every stand-in on one 127.0.0.1 port (paths do not overlap).
    pub async fn start(tag: &str) -> std::io::Result<StandIns> {
        let inner = Arc::new(Inner {
            tag: tag.to_string(),
            counters: Counters::default(),
            waiters: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/api/v1/users/{user}/groups", get(okta_groups))
            .route("/api/v2/check", get(abuseipdb))
            .route("/api/v3/ip_addresses/{ip}", get(virustotal))
            .route("/v3/community/{ip}", get(greynoise))
            .route(SLACK_PATH, post(slack))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let done = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { done.cancelled().await })
                .await;
        });
        Ok(StandIns { base, inner, stop })
    }

    /// A receiver that fires when user `i`'s case is assigned (its notification reached
    /// Slack).
    pub fn expect_assignment(&self, i: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        crate::bench::lock(&self.inner.waiters).insert(i, tx);
        rx
    }

    /// The config sections that point the IAM steps here.
    pub fn config(&self) -> Value {
        let b = &self.base;
        json!({
            "okta": {"url": b, "token": OKTA_TOKEN, "vip_groups": ["Executives"]},
            "intel": {
                "abuseipdb": {"url": b, "key": ABUSE_KEY},
                "virustotal": {"url": b, "key": VT_KEY},
                "greynoise": {"url": b},
                "timeout": "10s"
            },
            "teams": {
                "soc": ["dana.analyst@acme.example", "eli.analyst@acme.example", "fay.analyst@acme.example"],
                "stakeholders": ["ciso@acme.example"]
            },
            "notify": {
                "channels": ["outbox", "slack"],
                "slack": {"webhook_url": format!("{b}{SLACK_PATH}")},
                "delivery": {"attempts": 3, "backoff": "50ms"}
            },
            "http": {"allow_hosts": ["127.0.0.1"]}
        })
    }
}

impl Drop for StandIns {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn refuse(inner: &Inner) -> Response {
    inner.counters.refused.fetch_add(1, Ordering::Relaxed);
    (StatusCode::UNAUTHORIZED, Json(json!({"error": "bad key"}))).into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn okta_groups(
    State(inner): State<Arc<Inner>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    if header(&headers, "authorization") != format!("SSWS {OKTA_TOKEN}") {
        return refuse(&inner);
    }
    inner.counters.okta_groups.fetch_add(1, Ordering::Relaxed);
    let vip = user_index(&inner.tag, &user).is_some_and(|i| i % 10 == 0);
    let mut groups = vec![json!({"id": "00gbenchall", "profile": {"name": "Everyone"}})];
    if vip {
        groups.push(json!({"id": "00gbenchexec", "profile": {"name": "Executives"}}));
    }
    Json(Value::Array(groups)).into_response()
}

async fn abuseipdb(
    State(inner): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if header(&headers, "key") != ABUSE_KEY {
        return refuse(&inner);
    }
    inner.counters.abuseipdb.fetch_add(1, Ordering::Relaxed);
    let ip = q.get("ipAddress").cloned().unwrap_or_default();
    Json(json!({"data": {
        "ipAddress": ip, "isPublic": true, "ipVersion": 4, "isWhitelisted": false,
        "abuseConfidenceScore": 100, "countryCode": "NL", "usageType": "Data Center/Web Hosting/Transit",
        "isp": "Bench Hosting", "domain": "bench.example", "totalReports": 42,
        "numDistinctUsers": 7, "lastReportedAt": "2026-11-27T08:00:00+00:00"
    }}))
    .into_response()
}

async fn virustotal(
    State(inner): State<Arc<Inner>>,
    Path(_ip): Path<String>,
    headers: HeaderMap,
) -> Response {
    if header(&headers, "x-apikey") != VT_KEY {
        return refuse(&inner);
    }
    inner.counters.virustotal.fetch_add(1, Ordering::Relaxed);
    Json(json!({"data": {"attributes": {
        "last_analysis_stats": {"malicious": 7, "suspicious": 1, "harmless": 55, "undetected": 30},
        "reputation": -25, "as_owner": "Bench Hosting", "asn": 64500, "country": "NL",
        "network": "45.0.0.0/8", "last_analysis_date": 1_795_000_000
    }}}))
    .into_response()
}

async fn greynoise(State(inner): State<Arc<Inner>>, Path(ip): Path<String>) -> Response {
    inner.counters.greynoise.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "ip": ip, "noise": true, "riot": false, "classification": "malicious",
        "name": "unknown", "link": format!("https://viz.greynoise.io/ip/{ip}"),
        "last_seen": "2026-11-26", "message": "Success"
    }))
    .into_response()
}

async fn slack(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    inner.counters.slack.fetch_add(1, Ordering::Relaxed);
    let text = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["text"].as_str().map(str::to_string))
        .unwrap_or_default();
    if text.starts_with("*VIP alert") {
        inner.counters.slack_vip.fetch_add(1, Ordering::Relaxed);
    } else if text.contains(" assigned to ") {
        inner
            .counters
            .slack_assigned
            .fetch_add(1, Ordering::Relaxed);
        if let Some(i) = user_index(&inner.tag, &text) {
            if let Some(tx) = crate::bench::lock(&inner.waiters).remove(&i) {
                let _ = tx.send(());
            }
        }
    }
    (StatusCode::OK, "ok").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_in_notification_texts() {
        let u = user("a1", 42);
        assert_eq!(user_index("a1", &u), Some(42));
        let text = format!("*CASE-000007 assigned to dana@acme.example: Okta x: {u}*");
        assert_eq!(user_index("a1", &text), Some(42));
        assert_eq!(user_index("b2", &text), None);
        assert_eq!(user_index("a1", "ua1-42@elsewhere.example"), None);
    }
}
