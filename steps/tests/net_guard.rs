//! The outbound guard: a table of refused and allowed URLs (checked, never requested), the
//! resolver and the redirect policy against real servers on 127.0.0.1.

use std::net::Ipv4Addr;

use serde_json::json;
use steps::net::{check_url, AllowList, GuardError, GuardedClient};
use url::{Host, Url};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn check(u: &str, allow: &AllowList) -> Result<(), GuardError> {
    let url = Url::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"));
    check_url(&url, allow)
}

#[test]
fn url_crate_normalises_numeric_ipv4_hosts_for_http() {
    for u in [
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "https://0x7f.0.0.1/",
    ] {
        let url = Url::parse(u).unwrap();
        assert_eq!(
            url.host(),
            Some(Host::Ipv4(Ipv4Addr::new(127, 0, 0, 1))),
            "{u}"
        );
    }
}

#[test]
fn refused_destinations() {
    let none = AllowList::default();
    let table = [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.8.9.10:8080/x", "loopback"),
        ("http://localhost/", "loopback name"),
        ("http://LOCALHOST./", "loopback name"),
        ("http://api.localhost/", "loopback name"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::1]/", "loopback"),
        ("http://[::]/", "unspecified"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://172.31.255.254/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://100.64.0.1/", "CGNAT"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00::1]/", "unique-local"),
        ("http://[fc00::1]/", "unique-local"),
        ("http://224.0.0.1/", "multicast"),
        ("http://255.255.255.255/", "broadcast"),
        ("file:///etc/passwd", "scheme `file`"),
        ("gopher://example.com/", "scheme `gopher`"),
        ("ftp://example.com/", "scheme `ftp`"),
    ];
    for (u, reason) in table {
        let e = check(u, &none).expect_err(u);
        let msg = e.to_string();
        assert!(msg.starts_with("destination not allowed: "), "{u}: {msg}");
        assert!(msg.contains(reason), "{u}: `{msg}` should say {reason}");
    }
}

#[test]
fn public_destinations_are_allowed() {
    let none = AllowList::default();
    for u in [
        "https://example.okta.com/api/v1/users",
        "https://8.8.8.8/",
        "http://172.32.0.1/",
        "https://[2606:4700:4700::1111]/",
    ] {
        assert_eq!(check(u, &none), Ok(()), "{u}");
    }
}

#[test]
fn allow_hosts_lets_listed_hosts_through_and_only_them() {
    let allow = AllowList::new(["127.0.0.1", "[::1]", "Internal.Example"]);
    assert_eq!(check("http://127.0.0.1:8080/", &allow), Ok(()));
    assert_eq!(check("http://2130706433/", &allow), Ok(()));
    assert_eq!(check("http://[::1]/", &allow), Ok(()));
    assert_eq!(check("http://internal.example/", &allow), Ok(()));
    assert!(check("http://127.0.0.2/", &allow).is_err());
    assert!(check("http://localhost/", &allow).is_err());
    // The allow list never makes a non-http scheme acceptable.
    assert!(check("file://127.0.0.1/etc/passwd", &allow).is_err());

    let from_config = AllowList::from_config(&json!({"http": {"allow_hosts": ["127.0.0.1"]}}));
    assert_eq!(check("http://127.0.0.1/", &from_config), Ok(()));
}

fn client(config: serde_json::Value) -> GuardedClient {
    GuardedClient::from_config(&config).expect("client")
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_by_the_resolver() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let port = server.address().port();

    // The raw reqwest client skips check_url's `localhost` rule, so only the resolver
    // stands between this request and the server.
    let raw = steps::net::guarded_client(&json!({})).unwrap();
    let e = raw
        .get(format!("http://localhost:{port}/"))
        .send()
        .await
        .expect_err("refused");
    let se = steps::net::step_error(e, "test");
    assert_eq!(se.kind, engine::ErrorKind::Permanent, "{}", se.message);
    assert!(
        se.message
            .contains("destination not allowed: `localhost` resolves to"),
        "{}",
        se.message
    );

    // With the name allowed, the same request goes through.
    let allowed =
        steps::net::guarded_client(&json!({"http": {"allow_hosts": ["localhost"]}})).unwrap();
    let resp = allowed
        .get(format!("http://localhost:{port}/"))
        .send()
        .await
        .expect("allowed");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn redirects_to_refused_destinations_are_not_followed() {
    let server = MockServer::start().await;
    let port = server.address().port();
    Mock::given(path("/to-metadata"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", "http://169.254.169.254/latest/meta-data/"),
        )
        .mount(&server)
        .await;
    Mock::given(path("/to-localhost"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("http://localhost:{port}/ok")),
        )
        .mount(&server)
        .await;
    Mock::given(path("/to-ok"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/ok"))
        .mount(&server)
        .await;
    Mock::given(path("/loop"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/loop"))
        .mount(&server)
        .await;
    Mock::given(path("/ok"))
        .respond_with(ResponseTemplate::new(200).set_body_string("fine"))
        .mount(&server)
        .await;

    let c = client(json!({"http": {"allow_hosts": ["127.0.0.1"], "max_redirects": 3}}));
    let url = |p: &str| Url::parse(&format!("{}{p}", server.uri())).unwrap();

    let ok = c
        .request(reqwest::Method::GET, url("/to-ok"))
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "fine");

    for (p, expect) in [
        (
            "/to-metadata",
            "destination not allowed: `169.254.169.254` is the cloud metadata address",
        ),
        (
            "/to-localhost",
            "destination not allowed: `localhost` is a loopback name",
        ),
        ("/loop", "too many redirects"),
    ] {
        let e = c
            .request(reqwest::Method::GET, url(p))
            .unwrap()
            .send()
            .await
            .expect_err(p);
        let se = steps::net::step_error(e, "test");
        assert_eq!(se.kind, engine::ErrorKind::Permanent, "{p}: {}", se.message);
        assert!(se.message.contains(expect), "{p}: {}", se.message);
    }
}

#[test]
fn the_guarded_client_checks_ip_literals_before_sending() {
    let c = client(json!({}));
    let e = c
        .request(
            reqwest::Method::GET,
            Url::parse("http://0x7f000001:1/").unwrap(),
        )
        .expect_err("refused");
    assert_eq!(
        e.to_string(),
        "destination not allowed: `127.0.0.1` is a loopback address"
    );
}

#[test]
fn bad_http_config_is_a_clear_error() {
    for (config, expect) in [
        (
            json!({"http": {"timeout": "soon"}}),
            "invalid config `http.timeout`",
        ),
        (
            json!({"http": {"allow_hosts": "127.0.0.1"}}),
            "invalid config `http.allow_hosts`",
        ),
        (
            json!({"http": {"max_redirects": -1}}),
            "invalid config `http.max_redirects`",
        ),
    ] {
        let e = GuardedClient::from_config(&config).expect_err("invalid");
        assert!(e.to_string().starts_with(expect), "{e}");
    }
}
