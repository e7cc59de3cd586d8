//! The IAM playbooks with every integration served by real HTTP servers on 127.0.0.1:
//! the Okta Management API, AbuseIPDB, VirusTotal, GreyNoise and a Slack incoming webhook.

use std::path::Path;

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The secret part of the Slack webhook URL: it must never be printed.
const SLACK_PATH: &str = "/services/T0001/B0001/slacksecret0001";

fn event(uuid: &str, login: &str, ip: &str) -> Value {
    json!({
        "uuid": uuid,
        "eventType": "user.account.report_suspicious_activity_by_enduser",
        "published": "2026-11-27T09:00:00.000Z",
        "displayMessage": "User report suspicious activity",
        "actor": {"id": "00u1", "type": "User", "alternateId": login, "displayName": login},
        "client": {"ipAddress": ip},
        "outcome": {"result": "SUCCESS"},
        "debugContext": {"debugData": {}}
    })
}

async fn okta() -> MockServer {
    let s = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v1/users/[^/]*alice[^/]*/groups$"))
        .and(header("authorization", "SSWS okta-test-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": "00g1exec", "profile": {"name": "Executives"}},
            {"id": "00g2all", "profile": {"name": "Everyone"}}
        ])))
        .mount(&s)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v1/users/[^/]*bob[^/]*/groups$"))
        .and(header("authorization", "SSWS okta-test-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": "00g2all", "profile": {"name": "Everyone"}}
        ])))
        .mount(&s)
        .await;
    s
}

async fn abuseipdb() -> MockServer {
    let s = MockServer::start().await;
    for (ip, score) in [("93.184.216.34", 100), ("1.1.1.1", 0)] {
        Mock::given(method("GET"))
            .and(path("/api/v2/check"))
            .and(query_param("ipAddress", ip))
            .and(header("key", "abuse-test-key"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {
                "ipAddress": ip, "isPublic": true, "ipVersion": 4, "isWhitelisted": score == 0,
                "abuseConfidenceScore": score, "countryCode": "US", "usageType": "Data Center",
                "isp": "Example", "domain": "example.com", "totalReports": score / 10,
                "numDistinctUsers": 1, "lastReportedAt": null
            }})))
            .mount(&s)
            .await;
    }
    s
}

async fn virustotal() -> MockServer {
    let s = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v3/ip_addresses/.+$"))
        .and(header("x-apikey", "vt-test-key"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&s)
        .await;
    s
}

async fn greynoise() -> MockServer {
    let s = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v3/community/1.1.1.1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ip": "1.1.1.1", "noise": false, "riot": true, "classification": "benign",
            "name": "Cloudflare", "link": "https://viz.greynoise.io/riot/1.1.1.1",
            "last_seen": "2026-11-26", "message": "Success"
        })))
        .mount(&s)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/community/93.184.216.34"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"ip": "93.184.216.34", "noise": false, "riot": false, "message": "IP not observed scanning the internet or contained in RIOT data set."})))
        .mount(&s)
        .await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_against_real_servers() {
    let (okta, abuse, vt, gn) = (
        okta().await,
        abuseipdb().await,
        virustotal().await,
        greynoise().await,
    );
    // Slack: the first post fails with a 503 and is retried; every later one is taken.
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SLACK_PATH))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&slack)
        .await;
    Mock::given(method("POST"))
        .and(path(SLACK_PATH))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&slack)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "okta": {"url": okta.uri(), "token": "${CASEFLOW_TEST_OKTA_TOKEN}", "vip_groups": ["Executives"]},
        "intel": {
            "abuseipdb": {"url": abuse.uri(), "key": "abuse-test-key"},
            "virustotal": {"url": vt.uri(), "key": "vt-test-key"},
            "greynoise": {"url": gn.uri()}
        },
        "teams": {"soc": ["dana@acme.example"], "stakeholders": ["ciso@acme.example"]},
        "notify": {
            "channels": ["outbox", "slack"],
            "slack": {"webhook_url": format!("{}{SLACK_PATH}", slack.uri())},
            "delivery": {"attempts": 3, "backoff": "10ms"}
        },
        "http": {"allow_hosts": ["127.0.0.1"]}
    });
    let config_path = dir.path().join("caseflow.yaml");
    std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
    let events = dir.path().join("events.json");
    std::fs::write(
        &events,
        serde_json::to_string(&json!([
            event("u-1", "alice.ceo@acme.example", "93.184.216.34"),
            event("u-2", "bob@acme.example", "1.1.1.1")
        ]))
        .unwrap(),
    )
    .unwrap();

    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .current_dir(repo)
        .env("CASEFLOW_TEST_OKTA_TOKEN", "okta-test-token")
        .args([
            "run",
            "playbooks/iam.yaml",
            "--json",
            "--seed",
            "3",
            "--event",
        ])
        .arg(&events)
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    assert!(!stdout.contains("okta-test-token") && !stderr.contains("okta-test-token"));
    assert!(!stdout.contains("abuse-test-key") && !stderr.contains("abuse-test-key"));
    assert!(!stdout.contains(SLACK_PATH) && !stderr.contains(SLACK_PATH));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "{cases:#?}");
    let find = |login: &str| {
        cases
            .iter()
            .find(|c| {
                c["observables"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|o| o["value"] == login)
            })
            .unwrap_or_else(|| panic!("no case for {login}"))
    };

    // Alice: a VIP per the Okta API, AbuseIPDB says 100: critical, in progress, assigned.
    let alice = find("alice.ceo@acme.example");
    assert_eq!(alice["severity"], "critical");
    assert_eq!(alice["state"], "in_progress");
    assert_eq!(alice["assignee"], "dana@acme.example");
    let ip = alice["observables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "ip")
        .unwrap();
    assert_eq!(ip["verdict"], "malicious");
    assert_eq!(ip["enrichment"]["abuseipdb"]["verdict"], "malicious");

    // Bob: not a VIP, GreyNoise RIOT says benign, VirusTotal is down: resolved anyway.
    let bob = find("bob@acme.example");
    assert_eq!(bob["state"], "resolved");
    assert_eq!(bob["severity"], "medium");

    assert!(!okta.received_requests().await.unwrap().is_empty());
    assert!(!abuse.received_requests().await.unwrap().is_empty());
    assert!(
        !vt.received_requests().await.unwrap().is_empty(),
        "VirusTotal was asked (and failed)"
    );

    // Slack got the VIP alert and the assignment.
    let posts: Vec<Value> = slack
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .collect();
    let texts: Vec<&str> = posts.iter().filter_map(|p| p["text"].as_str()).collect();
    let vip = texts.iter().filter(|t| t.starts_with("*VIP alert")).count();
    let assigned = texts
        .iter()
        .filter(|t| t.contains("assigned to dana@acme.example"))
        .count();
    // The VIP alert was posted twice: the 503, then its retry.
    assert_eq!((vip, assigned), (2, 1), "{texts:#?}");
    assert_eq!(texts.len(), 3, "{texts:#?}");
    let notes = v["notifications"].as_array().unwrap();
    assert!(!notes.is_empty());
    assert!(!serde_json::to_string(notes).unwrap().contains(SLACK_PATH));
}
