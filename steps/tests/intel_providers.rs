//! Each IP-intel provider against a real HTTP server on 127.0.0.1 (wiremock): verdicts,
//! headers, error statuses, timeouts, malformed bodies, and keys kept out of messages.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde_json::{json, Value};
use steps::intel::abuseipdb::{self, AbuseIpDb};
use steps::intel::greynoise::GreyNoise;
use steps::intel::virustotal::{self, VirusTotal};
use steps::intel::{Provider, ProviderError, ProviderVerdict, Verdict};
use steps::net::{AllowList, ClientConfig, GuardedClient, Secret as ApiKey};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "test-key-0123456789abcdef";

/// The outbound guard, with the test server's address allowed.
fn client() -> Arc<GuardedClient> {
    let config = ClientConfig {
        allow: AllowList::new(["127.0.0.1"]),
        timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    };
    Arc::new(GuardedClient::new(config).unwrap_or_else(|e| panic!("{e}")))
}

fn url(server: &MockServer) -> Url {
    Url::parse(&server.uri()).unwrap_or_else(|e| panic!("{e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn abuse(server: &MockServer) -> AbuseIpDb {
    AbuseIpDb::new(
        client(),
        url(server),
        ApiKey::new(KEY),
        abuseipdb::Thresholds::default(),
    )
}

fn vt(server: &MockServer) -> VirusTotal {
    VirusTotal::new(
        client(),
        url(server),
        ApiKey::new(KEY),
        virustotal::Thresholds::default(),
    )
}

fn gn(server: &MockServer) -> GreyNoise {
    GreyNoise::new(client(), url(server), Some(ApiKey::new(KEY)))
}

fn ok(r: Result<ProviderVerdict, ProviderError>) -> ProviderVerdict {
    r.unwrap_or_else(|e| panic!("expected a verdict, got: {e}"))
}

fn err(r: Result<ProviderVerdict, ProviderError>) -> ProviderError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            assert!(!e.to_string().contains(KEY), "key leaked: {e}");
            assert!(!format!("{e:?}").contains(KEY), "key leaked: {e:?}");
            e
        }
    }
}

fn abuse_body(score: u64, reports: u64) -> Value {
    json!({"data": {
        "ipAddress": "203.0.113.7", "isPublic": true, "ipVersion": 4, "isWhitelisted": null,
        "abuseConfidenceScore": score, "countryCode": "NL", "usageType": "Data Center/Web Hosting/Transit",
        "isp": "Example Hosting", "domain": "example.net", "hostnames": [], "isTor": false,
        "totalReports": reports, "numDistinctUsers": 3, "lastReportedAt": "2026-11-20T10:00:00+00:00"
    }})
}

// ---------------------------------------------------------------- AbuseIPDB

#[tokio::test]
async fn abuseipdb_high_score_is_malicious_and_sends_key_and_query() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/check"))
        .and(query_param("ipAddress", "203.0.113.7"))
        .and(query_param("maxAgeInDays", "90"))
        .and(header("Key", KEY))
        .and(header("Accept", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(abuse_body(100, 250)))
        .expect(1)
        .mount(&server)
        .await;
    let v = ok(abuse(&server).check(ip("203.0.113.7")).await);
    assert_eq!(v.verdict, Verdict::Malicious);
    assert_eq!(v.details["abuse_confidence_score"], json!(100));
    assert_eq!(v.details["total_reports"], json!(250));
    assert_eq!(v.details["country_code"], json!("NL"));
    assert_eq!(v.details["isp"], json!("Example Hosting"));
}

#[tokio::test]
async fn abuseipdb_thresholds() {
    let server = MockServer::start().await;
    let cases = [
        ("192.0.2.1", 75, 10, Verdict::Malicious),
        ("192.0.2.2", 74, 10, Verdict::Suspicious),
        ("192.0.2.3", 25, 1, Verdict::Suspicious),
        ("192.0.2.4", 24, 1, Verdict::Benign),
        ("192.0.2.5", 0, 0, Verdict::Unknown),
    ];
    for (addr, score, reports, _) in cases {
        Mock::given(path("/api/v2/check"))
            .and(query_param("ipAddress", addr))
            .respond_with(ResponseTemplate::new(200).set_body_json(abuse_body(score, reports)))
            .mount(&server)
            .await;
    }
    let p = abuse(&server);
    for (addr, score, reports, expected) in cases {
        let v = ok(p.check(ip(addr)).await);
        assert_eq!(v.verdict, expected, "score {score}, {reports} reports");
    }
}

#[tokio::test]
async fn abuseipdb_ipv6_is_url_encoded() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v2/check"))
        .and(query_param("ipAddress", "2001:db8::1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(abuse_body(5, 1)))
        .expect(1)
        .mount(&server)
        .await;
    let v = ok(abuse(&server).check(ip("2001:db8::1")).await);
    assert_eq!(v.verdict, Verdict::Benign);
    let requests = server.received_requests().await.unwrap_or_default();
    assert!(
        requests.iter().all(|r| r
            .url
            .query()
            .is_some_and(|q| q.contains("2001%3Adb8%3A%3A1"))),
        "IPv6 colons must be percent-encoded"
    );
}

#[tokio::test]
async fn abuseipdb_401_echoing_the_key_does_not_leak_it() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v2/check"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "errors": [{"detail": format!("Authentication failed for key {KEY}."), "status": 401}]
        })))
        .mount(&server)
        .await;
    let e = err(abuse(&server).check(ip("203.0.113.7")).await);
    assert_eq!(e, ProviderError::Unauthorized { status: 401 });
}

#[tokio::test]
async fn abuseipdb_422_detail_is_redacted() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v2/check"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "errors": [{"detail": format!("bad request with key {KEY}"), "status": 422}]
        })))
        .mount(&server)
        .await;
    let e = err(abuse(&server).check(ip("203.0.113.7")).await);
    assert_eq!(
        e.to_string(),
        "unexpected HTTP 422: bad request with key ***"
    );
}

#[tokio::test]
async fn abuseipdb_429_reports_retry_after() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v2/check"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "120")
                .set_body_json(json!({"errors": [{"detail": "Daily rate limit of 1000 requests exceeded", "status": 429}]})),
        )
        .mount(&server)
        .await;
    let e = err(abuse(&server).check(ip("203.0.113.7")).await);
    assert_eq!(
        e,
        ProviderError::RateLimited {
            retry_after_secs: Some(120)
        }
    );
    assert!(e.to_string().contains("retry after 120s"), "{e}");
}

#[tokio::test]
async fn abuseipdb_5xx() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v2/check"))
        .respond_with(ResponseTemplate::new(503).set_body_string("<html>down</html>"))
        .mount(&server)
        .await;
    let e = err(abuse(&server).check(ip("203.0.113.7")).await);
    assert_eq!(e, ProviderError::Server { status: 503 });
}

#[tokio::test]
async fn abuseipdb_timeout() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v2/check"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(abuse_body(100, 1))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let e = err(abuse(&server).check(ip("203.0.113.7")).await);
    assert_eq!(e, ProviderError::Timeout);
}

#[tokio::test]
async fn abuseipdb_malformed_json_and_missing_score() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v2/check"))
        .and(query_param("ipAddress", "203.0.113.1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"data\": {"))
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/check"))
        .and(query_param("ipAddress", "203.0.113.2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": {"totalReports": 3}})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/check"))
        .and(query_param("ipAddress", "203.0.113.3"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": {"abuseConfidenceScore": "high"}})),
        )
        .mount(&server)
        .await;
    let p = abuse(&server);
    let e = err(p.check(ip("203.0.113.1")).await);
    assert!(matches!(e, ProviderError::BadResponse(_)), "{e}");
    let e = err(p.check(ip("203.0.113.2")).await);
    assert!(e.to_string().contains("abuseConfidenceScore"), "{e}");
    let e = err(p.check(ip("203.0.113.3")).await);
    assert!(e.to_string().contains("`data.abuseConfidenceScore`"), "{e}");
}

#[tokio::test]
async fn connection_refused_is_a_network_error() {
    // A port nothing listens on (wiremock keeps dropped servers alive in a pool).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let dead = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap_or_else(|e| panic!("{e}"));
    let p = AbuseIpDb::new(
        client(),
        dead,
        ApiKey::new(KEY),
        abuseipdb::Thresholds::default(),
    );
    let e = err(p.check(ip("203.0.113.7")).await);
    assert!(matches!(e, ProviderError::Network(_)), "{e}");
}

// ---------------------------------------------------------------- VirusTotal

fn vt_body(malicious: u32, suspicious: u32, harmless: u32) -> Value {
    json!({"data": {"id": "203.0.113.7", "type": "ip_address", "links": {"self": "x"}, "attributes": {
        "as_owner": "Example AS", "asn": 64500, "country": "NL", "network": "203.0.113.0/24",
        "reputation": -12, "last_analysis_date": 1764000000,
        "last_analysis_stats": {"harmless": harmless, "malicious": malicious, "suspicious": suspicious, "undetected": 20, "timeout": 0},
        "last_analysis_results": {}, "tags": []
    }}})
}

#[tokio::test]
async fn virustotal_malicious_sends_x_apikey() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/ip_addresses/203.0.113.7"))
        .and(header("x-apikey", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(vt_body(7, 1, 50)))
        .expect(1)
        .mount(&server)
        .await;
    let v = ok(vt(&server).check(ip("203.0.113.7")).await);
    assert_eq!(v.verdict, Verdict::Malicious);
    assert_eq!(v.details["malicious"], json!(7));
    assert_eq!(v.details["as_owner"], json!("Example AS"));
    assert_eq!(v.details["reputation"], json!(-12));
}

#[tokio::test]
async fn virustotal_thresholds() {
    let server = MockServer::start().await;
    let cases = [
        ("192.0.2.1", (3, 0, 60), Verdict::Malicious),
        ("192.0.2.2", (2, 0, 60), Verdict::Suspicious),
        ("192.0.2.3", (0, 1, 60), Verdict::Suspicious),
        ("192.0.2.4", (0, 0, 60), Verdict::Benign),
        ("192.0.2.5", (0, 0, 0), Verdict::Unknown),
    ];
    for (addr, (m, s, h), _) in cases {
        Mock::given(path(format!("/api/v3/ip_addresses/{addr}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(vt_body(m, s, h)))
            .mount(&server)
            .await;
    }
    let p = vt(&server);
    for (addr, stats, expected) in cases {
        let v = ok(p.check(ip(addr)).await);
        assert_eq!(v.verdict, expected, "{stats:?}");
    }
}

#[tokio::test]
async fn virustotal_errors() {
    let server = MockServer::start().await;
    let err_body =
        |code: &str| json!({"error": {"code": code, "message": format!("{code} for {KEY}")}});
    let routes = [
        (
            "198.51.100.1",
            ResponseTemplate::new(401).set_body_json(err_body("WrongCredentialsError")),
        ),
        (
            "198.51.100.2",
            ResponseTemplate::new(429).set_body_json(err_body("QuotaExceededError")),
        ),
        (
            "198.51.100.3",
            ResponseTemplate::new(500).set_body_string("oops"),
        ),
        (
            "198.51.100.4",
            ResponseTemplate::new(200).set_body_string("not json"),
        ),
        (
            "198.51.100.5",
            ResponseTemplate::new(200).set_body_json(json!({"data": {"attributes": {}}})),
        ),
        (
            "198.51.100.6",
            ResponseTemplate::new(400).set_body_json(err_body("InvalidArgumentError")),
        ),
        (
            "198.51.100.7",
            ResponseTemplate::new(200)
                .set_body_json(vt_body(9, 0, 0))
                .set_delay(Duration::from_secs(3)),
        ),
    ];
    for (addr, resp) in routes {
        Mock::given(path(format!("/api/v3/ip_addresses/{addr}")))
            .respond_with(resp)
            .mount(&server)
            .await;
    }
    let p = vt(&server);
    assert_eq!(
        err(p.check(ip("198.51.100.1")).await),
        ProviderError::Unauthorized { status: 401 }
    );
    assert_eq!(
        err(p.check(ip("198.51.100.2")).await),
        ProviderError::RateLimited {
            retry_after_secs: None
        }
    );
    assert_eq!(
        err(p.check(ip("198.51.100.3")).await),
        ProviderError::Server { status: 500 }
    );
    assert!(matches!(
        err(p.check(ip("198.51.100.4")).await),
        ProviderError::BadResponse(_)
    ));
    let e = err(p.check(ip("198.51.100.5")).await);
    assert!(e.to_string().contains("last_analysis_stats"), "{e}");
    let e = err(p.check(ip("198.51.100.6")).await);
    assert!(e.to_string().contains("InvalidArgumentError"), "{e}");
    assert_eq!(
        err(p.check(ip("198.51.100.7")).await),
        ProviderError::Timeout
    );
}

#[tokio::test]
async fn virustotal_not_found_is_unknown() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v3/ip_addresses/203.0.113.9"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"error": {"code": "NotFoundError", "message": "Resource not found."}}),
        ))
        .mount(&server)
        .await;
    let v = ok(vt(&server).check(ip("203.0.113.9")).await);
    assert_eq!(v.verdict, Verdict::Unknown);
    // A 404 that is not VirusTotal's (a wrong base URL) is an error.
    let other = MockServer::start().await;
    let e = err(vt(&other).check(ip("203.0.113.9")).await);
    assert!(
        matches!(e, ProviderError::Status { status: 404, .. }),
        "{e}"
    );
}

// ---------------------------------------------------------------- GreyNoise

#[tokio::test]
async fn greynoise_classifications() {
    let server = MockServer::start().await;
    let body = |ip: &str, class: &str, noise: bool, riot: bool| {
        json!({"ip": ip, "noise": noise, "riot": riot, "classification": class, "name": "Example",
               "link": format!("https://viz.greynoise.io/ip/{ip}"), "last_seen": "2026-11-26", "message": "Success"})
    };
    let cases = [
        ("203.0.113.1", "malicious", true, false, Verdict::Malicious),
        ("203.0.113.2", "benign", true, false, Verdict::Benign),
        ("203.0.113.3", "unknown", false, true, Verdict::Benign),
        ("203.0.113.4", "unknown", true, false, Verdict::Unknown),
    ];
    for (addr, class, noise, riot, _) in cases {
        Mock::given(method("GET"))
            .and(path(format!("/v3/community/{addr}")))
            .and(header("key", KEY))
            .respond_with(ResponseTemplate::new(200).set_body_json(body(addr, class, noise, riot)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let p = gn(&server);
    for (addr, class, _, _, expected) in cases {
        let v = ok(p.check(ip(addr)).await);
        assert_eq!(v.verdict, expected, "{addr}");
        assert_eq!(v.details["classification"], json!(class));
    }
}

#[tokio::test]
async fn greynoise_404_is_unknown_not_an_error() {
    let server = MockServer::start().await;
    Mock::given(path("/v3/community/198.51.100.9"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "ip": "198.51.100.9", "noise": false, "riot": false,
            "message": "IP not observed scanning the internet or contained in RIOT data set."
        })))
        .expect(1)
        .mount(&server)
        .await;
    let v = ok(gn(&server).check(ip("198.51.100.9")).await);
    assert_eq!(v.verdict, Verdict::Unknown);
    assert_eq!(v.details["observed"], json!(false));
}

#[tokio::test]
async fn greynoise_errors() {
    let server = MockServer::start().await;
    let routes = [
        (
            "198.51.100.1",
            ResponseTemplate::new(401).set_body_json(json!({"message": "invalid key"})),
        ),
        (
            "198.51.100.2",
            ResponseTemplate::new(429).set_body_json(json!({"message": "rate limit reached"})),
        ),
        ("198.51.100.3", ResponseTemplate::new(502)),
        (
            "198.51.100.4",
            ResponseTemplate::new(200).set_body_string("{\"ip\":"),
        ),
        (
            "198.51.100.5",
            ResponseTemplate::new(200).set_body_json(json!({"classification": "evil"})),
        ),
        (
            "198.51.100.6",
            ResponseTemplate::new(200)
                .set_body_json(json!({"classification": "malicious"}))
                .set_delay(Duration::from_secs(3)),
        ),
    ];
    for (addr, resp) in routes {
        Mock::given(path(format!("/v3/community/{addr}")))
            .respond_with(resp)
            .mount(&server)
            .await;
    }
    let p = gn(&server);
    assert_eq!(
        err(p.check(ip("198.51.100.1")).await),
        ProviderError::Unauthorized { status: 401 }
    );
    assert!(matches!(
        err(p.check(ip("198.51.100.2")).await),
        ProviderError::RateLimited { .. }
    ));
    assert_eq!(
        err(p.check(ip("198.51.100.3")).await),
        ProviderError::Server { status: 502 }
    );
    assert!(matches!(
        err(p.check(ip("198.51.100.4")).await),
        ProviderError::BadResponse(_)
    ));
    assert!(matches!(
        err(p.check(ip("198.51.100.5")).await),
        ProviderError::BadResponse(_)
    ));
    assert_eq!(
        err(p.check(ip("198.51.100.6")).await),
        ProviderError::Timeout
    );
}

#[tokio::test]
async fn greynoise_without_a_key_sends_no_key_header() {
    let server = MockServer::start().await;
    Mock::given(path("/v3/community/203.0.113.5"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"classification": "benign", "riot": true})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let p = GreyNoise::new(client(), url(&server), None);
    let v = ok(p.check(ip("203.0.113.5")).await);
    assert_eq!(v.verdict, Verdict::Benign);
    let requests = server.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 1);
    assert!(requests.iter().all(|r| !r.headers.contains_key("key")));
}
