//! `enrich.ip` run by the engine's executor, with providers on 127.0.0.1 (wiremock): private
//! addresses never leave, lists and providers combine, failures become `unknown` plus an
//! error entry, the cache avoids repeat requests on the step's clock, bad input fails.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use engine::schedule::{execute, RunInput};
use engine::step::Clock;
use engine::{ErrorKind, Registry, RunReport, Services, StepError};
use serde_json::{json, Value};
use steps::intel::EnrichIp;
use wiremock::matchers::{any, header, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ABUSE_KEY: &str = "abuse-key-5f2a9c";
const VT_KEY: &str = "vt-key-81d3e7";
const GN_KEY: &str = "gn-key-0c44b1";

/// A clock tests move by hand.
struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(ManualClock(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000),
        )))
    }
    fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn demo(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../playbooks/data/intel")
        .join(name)
        .display()
        .to_string()
}

/// All three providers on `server`, plus the demo lists.
fn config(server: &MockServer) -> Value {
    json!({"http": {"allow_hosts": ["127.0.0.1"]}, "intel": {
        "abuseipdb": {"url": server.uri(), "key": ABUSE_KEY},
        "virustotal": {"url": server.uri(), "key": VT_KEY},
        "greynoise": {"url": server.uri(), "key": GN_KEY},
        "lists": [
            {"name": "demo-blocklist", "path": demo("blocklist.netset"), "verdict": "malicious"},
            {"name": "demo-allowlist", "path": demo("allowlist.netset"), "verdict": "benign"},
        ],
        "cache_ttl": "1h",
        "timeout": "500ms",
    }})
}

const PLAYBOOK: &str = r#"
playbook: enrich
on: { event: test }
steps:
  - id: enrich
    uses: enrich.ip
    with: { ips: "{{ event.ips }}" }
"#;

struct Harness {
    plan: Arc<engine::Plan>,
    services: Arc<Services>,
}

impl Harness {
    /// The same harness with `store` in its services (a fresh step instance: as after a
    /// restart, nothing is cached in the process).
    fn with_store(
        config: Value,
        clock: Arc<ManualClock>,
        store: Arc<dyn engine::persist::Store>,
    ) -> Self {
        let mut h = Harness::new(config, clock.clone());
        let services = Services::new()
            .with_config((*h.services.config).clone())
            .with_clock(clock)
            .with_store(store);
        h.services = Arc::new(services);
        h
    }

    fn new(config: Value, clock: Arc<ManualClock>) -> Self {
        let mut registry = Registry::new();
        registry.register(EnrichIp::new());
        let src =
            engine::load::parse_source(Path::new("enrich.yaml"), PLAYBOOK.as_bytes().to_vec())
                .unwrap_or_else(|d| panic!("{d}"));
        let bundle = engine::compile::compile_sources(&[src], &registry).unwrap_or_else(|ds| {
            panic!("{}", ds.iter().map(|d| d.to_string()).collect::<String>())
        });
        Harness {
            plan: bundle.playbooks[0].clone(),
            services: Arc::new(Services::new().with_config(config).with_clock(clock)),
        }
    }

    async fn run(&self, ips: &[&str]) -> RunReport {
        let input = RunInput {
            run_id: "run-test".into(),
            trigger: "test".into(),
            event: json!({ "ips": ips }),
            case: None,
            depth: 0,
        };
        execute(self.plan.clone(), input, self.services.clone()).await
    }

    async fn output(&self, ips: &[&str]) -> Value {
        let report = self.run(ips).await;
        let step = report.step("enrich").unwrap_or_else(|| panic!("no step"));
        match (&step.output, &step.error) {
            (Some(o), _) => o.clone(),
            (None, e) => panic!("step failed: {e:?}"),
        }
    }

    async fn error(&self, ips: &[&str]) -> StepError {
        let report = self.run(ips).await;
        let step = report.step("enrich").unwrap_or_else(|| panic!("no step"));
        step.error
            .clone()
            .unwrap_or_else(|| panic!("expected an error, got {:?}", step.output))
    }
}

fn result<'a>(out: &'a Value, ip: &str) -> &'a Value {
    out["results"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["ip"] == ip))
        .unwrap_or_else(|| panic!("no result for {ip} in {out:#}"))
}

async fn mount_abuse(server: &MockServer, ip: &str, score: u64, expect: u64) {
    Mock::given(path("/api/v2/check"))
        .and(query_param("ipAddress", ip))
        .and(header("Key", ABUSE_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {
            "abuseConfidenceScore": score, "totalReports": 4, "countryCode": "NL"
        }})))
        .expect(expect)
        .mount(server)
        .await;
}

async fn mount_vt(server: &MockServer, ip: &str, malicious: u32, expect: u64) {
    Mock::given(path(format!("/api/v3/ip_addresses/{ip}")))
        .and(header("x-apikey", VT_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {"attributes": {
            "last_analysis_stats": {"malicious": malicious, "suspicious": 0, "harmless": 60, "undetected": 10}
        }}})))
        .expect(expect)
        .mount(server)
        .await;
}

async fn mount_gn_404(server: &MockServer, ip: &str, expect: u64) {
    Mock::given(path(format!("/v3/community/{ip}")))
        .and(header("key", GN_KEY))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"noise": false, "riot": false})),
        )
        .expect(expect)
        .mount(server)
        .await;
}

#[tokio::test]
async fn non_public_addresses_never_reach_a_provider() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let h = Harness::new(config(&server), ManualClock::new());
    let out = h
        .output(&[
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:192.168.1.1",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
        ])
        .await;
    for ip in [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fd00::1",
    ] {
        let r = result(&out, ip);
        assert_eq!(r["verdict"], "benign", "{ip}: {r:#}");
        assert!(
            r["reason"]
                .as_str()
                .is_some_and(|s| s.starts_with("private address")),
            "{ip}: {r:#}"
        );
        assert!(r["providers"].get("abuseipdb").is_none(), "{ip}");
    }
    // The IPv4-mapped form is reported as the IPv4 address and deduplicated.
    assert_eq!(
        out["results"]
            .as_array()
            .map(|rs| rs.iter().filter(|r| r["ip"] == "192.168.1.1").count()),
        Some(1)
    );
    for ip in ["100.64.0.1", "224.0.0.1", "0.0.0.0", "255.255.255.255"] {
        let r = result(&out, ip);
        assert_eq!(r["verdict"], "unknown", "{ip}: {r:#}");
        assert!(r["reason"].is_string(), "{ip}");
    }
    assert_eq!(out["verdict"], "benign");
    assert!(server
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty());
}

#[tokio::test]
async fn lists_still_apply_to_private_addresses() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let list = dir.path().join("internal-bad.netset");
    std::fs::write(&list, "# compromised build host\n10.20.30.40\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(&server);
    cfg["intel"]["lists"] = json!([{"path": list.display().to_string(), "verdict": "suspicious"}]);
    let h = Harness::new(cfg, ManualClock::new());
    let out = h.output(&["10.20.30.40", "10.20.30.41"]).await;
    let hit = result(&out, "10.20.30.40");
    assert_eq!(hit["verdict"], "suspicious");
    assert_eq!(hit["providers"]["internal-bad"]["listed"], true);
    assert_eq!(result(&out, "10.20.30.41")["verdict"], "benign");
    assert_eq!(out["verdict"], "suspicious");
}

#[tokio::test]
async fn lists_and_providers_combine_worst_wins() {
    let server = MockServer::start().await;
    // 203.0.113.7: on the demo blocklist, clean at every provider -> malicious.
    mount_abuse(&server, "203.0.113.7", 0, 1).await;
    mount_vt(&server, "203.0.113.7", 0, 1).await;
    mount_gn_404(&server, "203.0.113.7", 1).await;
    // 192.0.2.10: on the demo allowlist, but AbuseIPDB says 90 -> malicious all the same.
    mount_abuse(&server, "192.0.2.10", 90, 1).await;
    mount_vt(&server, "192.0.2.10", 0, 1).await;
    mount_gn_404(&server, "192.0.2.10", 1).await;
    // 192.0.2.11: allowlisted, clean everywhere -> benign.
    mount_abuse(&server, "192.0.2.11", 0, 1).await;
    mount_vt(&server, "192.0.2.11", 0, 1).await;
    mount_gn_404(&server, "192.0.2.11", 1).await;
    // 2001:db8::5: one VirusTotal engine -> suspicious.
    mount_abuse(&server, "2001:db8::5", 0, 1).await;
    mount_vt(&server, "2001:db8::5", 1, 1).await;
    mount_gn_404(&server, "2001:db8::5", 1).await;

    let h = Harness::new(config(&server), ManualClock::new());
    let out = h
        .output(&["203.0.113.7", "192.0.2.10", "192.0.2.11", "2001:db8::5"])
        .await;
    let r = result(&out, "203.0.113.7");
    assert_eq!(r["verdict"], "malicious");
    assert_eq!(r["providers"]["demo-blocklist"]["verdict"], "malicious");
    assert_eq!(r["providers"]["abuseipdb"]["verdict"], "benign");
    assert_eq!(r["providers"]["virustotal"]["verdict"], "benign");
    assert_eq!(r["providers"]["greynoise"]["verdict"], "unknown");
    assert_eq!(r["errors"], json!([]));
    let r = result(&out, "192.0.2.10");
    assert_eq!(r["verdict"], "malicious");
    assert_eq!(r["providers"]["demo-allowlist"]["verdict"], "benign");
    assert_eq!(r["providers"]["abuseipdb"]["abuse_confidence_score"], 90);
    assert_eq!(result(&out, "192.0.2.11")["verdict"], "benign");
    assert_eq!(result(&out, "2001:db8::5")["verdict"], "suspicious");
    assert_eq!(out["verdict"], "malicious");
    // Input order is kept.
    let order: Vec<&str> = out["results"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["ip"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        order,
        ["203.0.113.7", "192.0.2.10", "192.0.2.11", "2001:db8::5"]
    );
}

#[tokio::test]
async fn a_failing_provider_is_unknown_with_an_error_and_never_fails_the_step() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v2/check"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "60"))
        .mount(&server)
        .await;
    Mock::given(path("/api/v3/ip_addresses/8.8.4.4"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(
                    json!({"data": {"attributes": {"last_analysis_stats": {"malicious": 5}}}}),
                )
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    Mock::given(path("/v3/community/8.8.4.4"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(format!("{{\"key\": \"{GN_KEY}\"")),
        )
        .mount(&server)
        .await;
    let h = Harness::new(config(&server), ManualClock::new());
    let out = h.output(&["8.8.4.4"]).await;
    let r = result(&out, "8.8.4.4");
    assert_eq!(r["verdict"], "unknown");
    let mut errors: Vec<(String, String)> = r["errors"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    (
                        e["provider"].as_str().unwrap_or_default().to_string(),
                        e["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    errors.sort();
    assert_eq!(errors.len(), 3, "{r:#}");
    assert_eq!(errors[0].0, "abuseipdb");
    assert!(
        errors[0].1.contains("429") && errors[0].1.contains("60s"),
        "{errors:?}"
    );
    assert_eq!(errors[1].0, "greynoise");
    assert!(errors[1].1.starts_with("malformed response"), "{errors:?}");
    assert_eq!(
        errors[2],
        ("virustotal".to_string(), "timed out".to_string())
    );
    for p in ["abuseipdb", "virustotal", "greynoise"] {
        assert_eq!(r["providers"][p]["verdict"], "unknown");
    }
    let text = out.to_string();
    for key in [ABUSE_KEY, VT_KEY, GN_KEY] {
        assert!(!text.contains(key), "a key leaked into the output: {text}");
    }
}

#[tokio::test]
async fn the_cache_avoids_a_second_request_until_the_ttl_passes() {
    let server = MockServer::start().await;
    mount_abuse(&server, "203.0.113.50", 80, 2).await;
    mount_vt(&server, "203.0.113.50", 0, 2).await;
    mount_gn_404(&server, "203.0.113.50", 2).await;
    let clock = ManualClock::new();
    let h = Harness::new(config(&server), clock.clone());

    let first = h.output(&["203.0.113.50"]).await;
    assert_eq!(result(&first, "203.0.113.50")["cached"], false);
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(3));

    clock.advance(Duration::from_secs(59 * 60));
    let second = h.output(&["203.0.113.50"]).await;
    let r = result(&second, "203.0.113.50");
    assert_eq!(r["cached"], true);
    assert_eq!(r["verdict"], "malicious");
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(3));

    clock.advance(Duration::from_secs(60));
    let third = h.output(&["203.0.113.50"]).await;
    assert_eq!(result(&third, "203.0.113.50")["cached"], false);
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(6));
}

#[tokio::test]
async fn provider_answers_are_kept_in_the_store_across_restarts_and_lists_stay_fresh() {
    let server = MockServer::start().await;
    mount_abuse(&server, "203.0.113.60", 80, 1).await;
    mount_vt(&server, "203.0.113.60", 0, 1).await;
    mount_gn_404(&server, "203.0.113.60", 1).await;
    let clock = ManualClock::new();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("data");
    {
        let store: Arc<dyn engine::persist::Store> =
            Arc::new(engine::persist::SledStore::open(&data).unwrap_or_else(|e| panic!("{e}")));
        let h = Harness::with_store(config(&server), clock.clone(), store.clone());
        let first = h.output(&["203.0.113.60"]).await;
        assert_eq!(result(&first, "203.0.113.60")["cached"], false);
        assert_eq!(result(&first, "203.0.113.60")["verdict"], "malicious");
        store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    }
    // A restart: a new step instance and a reopened store. The providers are not asked
    // again; a list added meanwhile counts at once.
    let allow = dir.path().join("allow.netset");
    std::fs::write(&allow, "203.0.113.60\n").unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(&server);
    cfg["intel"]["lists"] =
        json!([{"name": "ours", "path": allow.display().to_string(), "verdict": "benign"}]);
    let store: Arc<dyn engine::persist::Store> =
        Arc::new(engine::persist::SledStore::open(&data).unwrap_or_else(|e| panic!("{e}")));
    clock.advance(Duration::from_secs(30 * 60));
    let h = Harness::with_store(cfg.clone(), clock.clone(), store.clone());
    let second = h.output(&["203.0.113.60"]).await;
    let r = result(&second, "203.0.113.60");
    assert_eq!(r["cached"], true, "{r:#}");
    assert_eq!(r["providers"]["abuseipdb"]["verdict"], "malicious");
    assert_eq!(r["providers"]["ours"]["verdict"], "benign");
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(3));
    // After the TTL the providers are asked again (and the mocks' `expect(1)` would fail).
    clock.advance(Duration::from_secs(31 * 60));
    let h = Harness::with_store(cfg, clock.clone(), store);
    let third = h.output(&["203.0.113.60"]).await;
    assert_eq!(result(&third, "203.0.113.60")["cached"], false);
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(6));
    server.reset().await;
}

#[tokio::test]
async fn results_with_errors_are_not_cached() {
    let server = MockServer::start().await;
    Mock::given(path("/api/v2/check"))
        .respond_with(ResponseTemplate::new(503))
        .expect(2)
        .mount(&server)
        .await;
    mount_vt(&server, "203.0.113.60", 0, 2).await;
    mount_gn_404(&server, "203.0.113.60", 2).await;
    let h = Harness::new(config(&server), ManualClock::new());
    for _ in 0..2 {
        let out = h.output(&["203.0.113.60"]).await;
        assert_eq!(result(&out, "203.0.113.60")["cached"], false);
    }
}

#[tokio::test]
async fn invalid_addresses_are_a_permanent_error_naming_them() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let h = Harness::new(config(&server), ManualClock::new());
    let e = h.error(&["8.8.8.8", "not-an-ip", "10.0.0.256", ""]).await;
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert_eq!(
        e.message,
        "not an IP address: `not-an-ip`, `10.0.0.256`, ``"
    );
}

#[tokio::test]
async fn config_problems_are_permanent_errors_naming_the_key() {
    let h = Harness::new(
        json!({"http": {"allow_hosts": ["127.0.0.1"]}, "intel": {
            "abuseipdb": {"key": ""},
            "lists": [{"path": "/nonexistent/list.netset", "verdict": "malicious"}],
        }}),
        ManualClock::new(),
    );
    let e = h.error(&["8.8.8.8"]).await;
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.message.contains("`intel.abuseipdb.key` is empty"),
        "{}",
        e.message
    );

    let h = Harness::new(
        json!({"http": {"allow_hosts": ["127.0.0.1"]}, "intel": {"lists": [{"path": "/nonexistent/list.netset", "verdict": "malicious"}]}}),
        ManualClock::new(),
    );
    let e = h.error(&["8.8.8.8"]).await;
    assert!(
        e.message.contains("`intel.lists[0]`") && e.message.contains("/nonexistent/list.netset"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn without_config_every_public_address_is_unknown() {
    let h = Harness::new(json!({}), ManualClock::new());
    let out = h.output(&["203.0.113.7", "10.0.0.1"]).await;
    assert_eq!(result(&out, "203.0.113.7")["verdict"], "unknown");
    assert_eq!(result(&out, "203.0.113.7")["providers"], json!({}));
    assert_eq!(result(&out, "10.0.0.1")["verdict"], "benign");
    assert_eq!(out["verdict"], "benign");
    let empty = h.output(&[]).await;
    assert_eq!(empty, json!({"results": [], "verdict": "unknown"}));
}

#[test]
fn the_documented_example_is_valid() {
    let mut registry = Registry::new();
    registry.register(EnrichIp::new());
    let spec = registry
        .get("enrich.ip")
        .map(|s| s.spec.clone())
        .unwrap_or_else(|| panic!("not registered"));
    engine::validate::inputs::fits(&spec.input_schema, &spec.example)
        .unwrap_or_else(|e| panic!("example does not fit: {e}"));
    let doc = json!({
        "playbook": "example",
        "on": {"event": "okta"},
        "steps": [{"id": "example", "uses": "enrich.ip", "with": spec.example}],
    });
    let src = engine::load::parse_source(Path::new("example.yaml"), doc.to_string().into_bytes())
        .unwrap_or_else(|d| panic!("{d}"));
    if let Err(ds) = engine::compile::compile_sources(&[src], &registry) {
        panic!("{}", ds.iter().map(|d| d.to_string()).collect::<String>());
    }
}

#[tokio::test]
async fn provider_urls_pass_the_outbound_guard() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(0)
        .mount(&server)
        .await;
    // The same providers without `http.allow_hosts`: 127.0.0.1 is refused before sending.
    let mut cfg = config(&server);
    if let Some(c) = cfg.as_object_mut() {
        c.remove("http");
    }
    let h = Harness::new(cfg, ManualClock::new());
    let out = h.output(&["8.8.8.8"]).await;
    let r = result(&out, "8.8.8.8");
    assert_eq!(r["verdict"], "unknown", "{r:#}");
    let errors = r["errors"].to_string();
    assert!(
        errors.contains("destination not allowed") && errors.contains("abuseipdb"),
        "{errors}"
    );
}
