//! `engine serve` over HTTP: the real binary on 127.0.0.1:0, spoken to with reqwest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const HOOK_SECRET: &str = "Basic b2t0YTpob29rLXNlY3JldA==";
const API_TOKEN: &str = "test-api-token-0123456789";
const OKTA_TOKEN: &str = "okta-api-token";

mod support {
    pub mod server;
}
use support::server::{engine, repo, Server};

/// The offline IAM config of `playbooks/data/config.yaml`, plus the server's keys, with the
/// secrets read from the environment as in production.
fn config(extra: &str) -> String {
    format!(
        r#"
okta:
  directory: playbooks/data/directory.yaml
  vip_groups: [Executives]
  hook_secret: "${{TEST_OKTA_HOOK_SECRET}}"
{extra}
intel:
  lists:
    - {{ path: playbooks/data/intel/blocklist.netset, verdict: malicious, name: demo-blocklist }}
    - {{ path: playbooks/data/intel/allowlist.netset, verdict: benign, name: demo-allowlist }}
teams:
  soc: [dana.analyst@acme.example, eli.analyst@acme.example, fay.analyst@acme.example]
  stakeholders: [ciso@acme.example]
server:
  api_token: "${{TEST_CASEFLOW_API_TOKEN}}"
  wait_timeout: 20s
http:
  allow_hosts: [127.0.0.1]
"#
    )
}

/// Starts `engine serve playbooks/iam.yaml` with `config` in a data dir under `dir`.
fn start(dir: &Path, config: &str) -> Server {
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    let mut cmd = engine();
    cmd.args([
        "serve",
        "playbooks/iam.yaml",
        "--listen",
        "127.0.0.1:0",
        "--seed",
        "7",
    ])
    .arg("--data-dir")
    .arg(dir.join("data"))
    .arg("--config")
    .arg(dir.join("config.yaml"))
    .env("TEST_OKTA_HOOK_SECRET", HOOK_SECRET)
    .env("TEST_CASEFLOW_API_TOKEN", API_TOKEN)
    .env("TEST_OKTA_TOKEN", OKTA_TOKEN)
    .env("CASEFLOW_LOG", "info");
    Server::spawn(cmd)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn fixture(name: &str) -> Value {
    let path = repo().join("../shared/fixtures/okta").join(name);
    let path = if path.exists() {
        path
    } else {
        PathBuf::from("/work/shared/fixtures/okta").join(name)
    };
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn sample(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo().join("playbooks/samples").join(name)).unwrap(),
    )
    .unwrap()
}

/// A ThreatInsight event from an IP no list knows: a case that stays `new`.
fn threat(uuid: &str, ip: &str) -> Value {
    let mut e = sample("05-threatinsight-unknown-ip.json");
    e["uuid"] = json!(uuid);
    e["actor"]["id"] = json!(ip);
    e["client"]["ipAddress"] = json!(ip);
    e
}

fn delivery(events: Vec<Value>) -> Value {
    json!({
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": "https://acme.okta.com/api/v1/eventHooks/who7hphp39JoHLni81d7",
        "eventId": "85b60edb-4263-4e13-993b-818e26201052",
        "contentType": "application/json",
        "data": { "events": events }
    })
}

async fn hook(c: &reqwest::Client, s: &Server, body: &Value) -> reqwest::Response {
    c.post(s.url("/hooks/okta"))
        .header("authorization", HOOK_SECRET)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn api(c: &reqwest::Client, s: &Server, path: &str) -> Value {
    let r = c
        .get(s.url(path))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// Poll `f` until it returns `Some`, for at most 20 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cases_with(c: &reqwest::Client, s: &Server, observable: &str) -> Vec<Value> {
    let v = api(c, s, &format!("/api/cases?observable={observable}")).await;
    v["cases"].as_array().cloned().unwrap_or_default()
}

async fn metrics(c: &reqwest::Client, s: &Server) -> String {
    let r = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

/// The value of one sample, by name and labels (`[]` for none).
fn sample_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test]
async fn okta_verification_checks_the_secret_like_deliveries() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), &config(""));
    let c = client();
    let url = s.url("/hooks/okta");
    let challenge = "X5Y1HvTKxCWqGuWtPAl7_aMzpRKDGvoA_DrmNrK6bw0";

    let r = c
        .get(&url)
        .header("x-okta-verification-challenge", challenge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no secret");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string());

    let r = c
        .get(&url)
        .header("x-okta-verification-challenge", challenge)
        .header("authorization", "Basic d3Jvbmc=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "wrong secret");

    let r = c
        .get(&url)
        .header("x-okta-verification-challenge", challenge)
        .header("authorization", HOOK_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"verification": challenge})
    );

    // Right secret, no challenge: a JSON 400, not a panic.
    let r = c
        .get(&url)
        .header("authorization", HOOK_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    assert!(
        !s.stderr().contains(HOOK_SECRET),
        "the secret is never logged"
    );
}

#[tokio::test]
async fn deliveries_with_a_wrong_or_missing_secret_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), &config(""));
    let c = client();
    let body = delivery(vec![threat(
        "a0000000-0000-0000-0000-000000000001",
        "45.33.32.1",
    )]);

    for auth in [
        None,
        Some("Basic d3Jvbmc="),
        Some("basic b2t0YTpob29rLXNlY3JldA=="),
    ] {
        let mut req = c.post(s.url("/hooks/okta")).json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cases_with(&c, &s, "ip:45.33.32.1").await.is_empty());
    let m = metrics(&c, &s).await;
    assert_eq!(
        sample_value(
            &m,
            "caseflow_events_rejected_total",
            &[("source", "okta"), ("reason", "unauthorized")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample_value(&m, "caseflow_events_received_total", &[("source", "okta")]),
        None
    );

    // Nothing was recorded: the same event with the right secret is new, not a duplicate.
    let r = hook(&c, &s, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-caseflow-duplicates"), "0");
    eventually("the case", || async {
        let cases = cases_with(&c, &s, "ip:45.33.32.1").await;
        (cases.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_official_sample_batches_and_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), &config(""));
    let c = client();

    // Okta's own delivery sample (a successful login: stored, no case).
    let official = fixture("okta-docs-event-hook-delivery-user.session.start.json");
    let r = hook(&c, &s, &official).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-caseflow-events"), "1");
    assert_eq!(header(&r, "x-caseflow-duplicates"), "0");
    assert!(
        r.bytes().await.unwrap().is_empty(),
        "Okta expects an empty body"
    );
    let r = hook(&c, &s, &official).await;
    assert_eq!(r.status(), 200, "a redelivery is acknowledged");
    assert_eq!(header(&r, "x-caseflow-duplicates"), "1");

    // One delivery of three events for three IPs, one of them repeated inside the batch.
    let batch = delivery(vec![
        threat("b0000000-0000-0000-0000-000000000001", "45.33.32.11"),
        threat("b0000000-0000-0000-0000-000000000002", "45.33.32.12"),
        threat("b0000000-0000-0000-0000-000000000003", "45.33.32.13"),
        threat("b0000000-0000-0000-0000-000000000001", "45.33.32.11"),
    ]);
    let r = hook(&c, &s, &batch).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-caseflow-events"), "4");
    assert_eq!(header(&r, "x-caseflow-duplicates"), "1");
    // The whole batch again: all duplicates, and nothing runs a second time.
    let r = hook(&c, &s, &batch).await;
    assert_eq!(header(&r, "x-caseflow-duplicates"), "4");

    for ip in ["45.33.32.11", "45.33.32.12", "45.33.32.13"] {
        let case = eventually(ip, || async {
            let cases = cases_with(&c, &s, &format!("ip:{ip}")).await;
            cases.into_iter().next()
        })
        .await;
        assert_eq!(case["state"], "new");
    }
    eventually("three pre-processing runs", || async {
        let v = api(&c, &s, "/api/runs?playbook=iam-preprocess&status=succeeded").await;
        (v["count"].as_u64() >= Some(3)).then_some(())
    })
    .await;
    // The official sample (a successful login) starts nothing; the three threat events one
    // run each; duplicates never.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = api(&c, &s, "/api/runs?playbook=iam-preprocess").await["runs"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(runs.len(), 3, "{runs:#?}");
    let uuids: std::collections::BTreeSet<_> =
        runs.iter().map(|r| r["event_key"].to_string()).collect();
    assert_eq!(uuids.len(), 3);

    let m = metrics(&c, &s).await;
    assert_eq!(
        sample_value(
            &m,
            "caseflow_events_received_total",
            &[("source", "okta"), ("via", "hook")]
        ),
        Some(10.0)
    );
    assert_eq!(
        sample_value(
            &m,
            "caseflow_events_duplicate_total",
            &[("source", "okta"), ("via", "hook")]
        ),
        Some(6.0)
    );
}

#[tokio::test]
async fn api_needs_the_token_and_patch_fires_the_state_changed_playbook() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), &config(""));
    let c = client();

    // 401 without or with a wrong token, on /api and /events alike.
    for path in ["/api/cases", "/api/runs", "/api/cases/CASE-000001"] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c.get(s.url(path)).bearer_auth("nope").send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    }
    let r = c
        .post(s.url("/events/okta"))
        .json(&threat(
            "c0000000-0000-0000-0000-000000000001",
            "45.33.32.21",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A synchronous event: the answer carries the run's outcome and the declared output.
    let r = c
        .post(s.url("/events/okta?wait=true"))
        .bearer_auth(API_TOKEN)
        .json(&threat(
            "c0000000-0000-0000-0000-000000000001",
            "45.33.32.21",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["finished"], true, "{v}");
    let run = &v["events"][0]["runs"][0];
    assert_eq!(run["playbook"], "iam-preprocess");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"]["created"], true);
    let id = run["output"]["case"].as_str().unwrap().to_string();

    // The case-created playbook finds no verdict for the IP: the case waits for a person.
    let case = eventually("the enrichment", || async {
        let v = api(&c, &s, &format!("/api/cases/{id}")).await;
        let case = v["case"].clone();
        let enriched = case["observables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["type"] == "ip" && o["verdict"] == "unknown");
        enriched.then_some(case)
    })
    .await;
    assert_eq!(case["state"], "new");
    assert!(case["assignee"].is_null());

    // An analyst takes it: the state-changed playbook assigns and notifies.
    let r = c
        .patch(s.url(&format!("/api/cases/{id}")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"state": "in_progress", "comment": "looking into it", "actor": "dana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["case"]["state"], "in_progress");
    assert!(v["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "case.state_changed"));
    let case = eventually("the assignment", || async {
        let v = api(&c, &s, &format!("/api/cases/{id}")).await;
        v["case"]["assignee"].is_string().then(|| v["case"].clone())
    })
    .await;
    let assignee = case["assignee"].as_str().unwrap();
    assert!(assignee.ends_with(".analyst@acme.example"), "{assignee}");
    let timeline = case["timeline"].to_string();
    assert!(
        timeline.contains("dana"),
        "the person is on the timeline: {timeline}"
    );
    // The run goes on after the assignment (it notifies): wait for its end.
    let run_id = eventually("the state-changed run to finish", || async {
        let runs = api(
            &c,
            &s,
            "/api/runs?playbook=iam-state-changed&status=succeeded",
        )
        .await;
        runs["runs"][0]["run_id"].as_str().map(str::to_string)
    })
    .await;
    let detail = api(&c, &s, &format!("/api/runs/{run_id}")).await;
    assert_eq!(detail["run"]["status"], "succeeded");
    assert_eq!(detail["run"]["output"]["assignee"], assignee);
    let steps = detail["run"]["steps"].as_array().unwrap();
    assert!(steps
        .iter()
        .any(|st| st["id"] == "assign" && st["attempts"] == 1));

    // An invalid transition is a 409 with a JSON error.
    let r = c
        .patch(s.url(&format!("/api/cases/{id}")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"state": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["from"].as_str(), v["to"].as_str()),
        (Some("in_progress"), Some("new"))
    );
    assert!(v["error"].as_str().unwrap().contains("cannot move"));

    // Unknown case, unknown field, unknown run.
    let r = c
        .patch(s.url("/api/cases/CASE-009999"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"comment": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .patch(s.url(&format!("/api/cases/{id}")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"stat": "closed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .get(s.url("/api/runs/run-nope"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Filters as in `engine cases list`.
    let v = api(&c, &s, "/api/cases?state=in_progress&limit=10").await;
    assert_eq!(v["count"], 1);
    let v = api(&c, &s, "/api/cases?state=new,resolved").await;
    assert_eq!(v["count"], 0);
    let v = api(&c, &s, &format!("/api/cases?assignee={assignee}")).await;
    assert_eq!(v["cases"][0]["id"], id.as_str());
    let r = c
        .get(s.url("/api/cases?state=bogus"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// `server.sources.okta.wait: true`: a sender that posts to a fixed URL (no query string)
/// gets the synchronous answer; `?wait=false` still gets the quick one, and other sources
/// keep the default.
#[tokio::test]
async fn a_source_configured_to_wait_answers_when_its_runs_are_done() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("").replace(
        "  wait_timeout: 20s\n",
        "  wait_timeout: 20s\n  sources:\n    okta: { wait: true }\n",
    );
    assert!(cfg.contains("okta: { wait: true }"));
    let s = start(tmp.path(), &cfg);
    let c = client();
    let post = |path: &str, body: Value| {
        c.post(s.url(path))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
    };

    let r = post(
        "/events/okta",
        threat("d0000000-0000-0000-0000-000000000001", "45.33.32.31"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["finished"], true, "{v}");
    let run = &v["events"][0]["runs"][0];
    assert_eq!(run["playbook"], "iam-preprocess", "{v}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"]["created"], true);

    // An event no playbook takes: finished at once, with no runs.
    let mut ignored = threat("d0000000-0000-0000-0000-000000000002", "45.33.32.32");
    ignored["eventType"] = json!("user.session.end");
    let r = post("/events/okta", ignored).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["finished"], true, "{v}");
    assert_eq!(v["events"][0]["runs"], json!([]), "{v}");

    // The query string still decides when it is there.
    let r = post(
        "/events/okta?wait=false",
        threat("d0000000-0000-0000-0000-000000000003", "45.33.32.33"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["accepted"], 1, "{v}");
    assert!(v.get("finished").is_none(), "{v}");

    // Another source keeps the quick answer.
    let r = post("/events/siem", json!({"uuid": "s-1", "kind": "alert"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (code, _) = s.terminate();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_json_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), &config(""));
    let c = client();

    for (path, auth) in [("/hooks/okta", HOOK_SECRET), ("/events/siem", "")] {
        let mut req = c.post(s.url(path)).body("{\"data\": {\"events\": [");
        req = if auth.is_empty() {
            req.bearer_auth(API_TOKEN)
        } else {
            req.header("authorization", auth)
        };
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("malformed JSON"),
            "{v}"
        );
    }
    // Valid JSON that is not a delivery.
    let r = hook(&c, &s, &json!({"data": {"events": "no"}})).await;
    assert_eq!(r.status(), 400);

    // Over the 1 MiB default: 413, with and without a Content-Length.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let r = c
        .post(s.url("/hooks/okta"))
        .header("authorization", HOOK_SECRET)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let (status, body) = chunked_post(&s, "/events/siem", big.as_bytes());
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    drop(big);

    // Case events cannot be posted from outside; unknown routes and methods are JSON too.
    let r = c
        .post(s.url("/events/case.created"))
        .bearer_auth(API_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = c.delete(s.url("/hooks/okta")).send().await.unwrap();
    assert_eq!(r.status(), 405);

    let m = metrics(&c, &s).await;
    assert_eq!(
        sample_value(
            &m,
            "caseflow_events_rejected_total",
            &[("reason", "too_large"), ("source", "okta")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_value(
            &m,
            "caseflow_events_rejected_total",
            &[("reason", "malformed"), ("source", "okta")]
        ),
        Some(2.0)
    );
}

/// POST with `Transfer-Encoding: chunked` (no Content-Length) over a plain socket;
/// returns the status and the body.
fn chunked_post(s: &Server, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://");
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(64 * 1024) {
        // The server may answer and close before the whole body is sent.
        if sock
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || sock.write_all(chunk).is_err()
            || sock.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = sock.write_all(b"0\r\n\r\n");
    let mut answer = Vec::new();
    let _ = sock.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// Every line of a Prometheus text exposition, checked strictly: `# HELP name text`,
/// `# TYPE name kind`, or `name{label="value",...} number`.
fn check_exposition(text: &str) {
    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    assert!(text.ends_with('\n'), "ends with a newline");
    let mut typed = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(is_name(name), "{line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(is_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_string(), kind.to_string());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            assert!(
                value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                "{line}"
            );
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                        assert!(is_name(k), "{line}");
                        assert!(!v.trim_end_matches('"').contains('\n'), "{line}");
                    }
                    name
                }
                None => series,
            };
            assert!(is_name(name), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(typed.contains_key(family), "sample before its TYPE: {line}");
        }
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), &config(""));
    let c = client();
    // Something to count: a VIP login from a blocklisted IP runs the whole IAM chain.
    let r = c
        .post(s.url("/events/okta?wait=true"))
        .bearer_auth(API_TOKEN)
        .json(&sample("02-vip-malicious-ip.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = eventually("the chain's runs in the metrics", || async {
        let m = metrics(&c, &s).await;
        sample_value(
            &m,
            "caseflow_runs_total",
            &[("playbook", "iam-state-changed"), ("status", "succeeded")],
        )
        .is_some()
        .then_some(m)
    })
    .await;
    check_exposition(&text);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    for name in [
        "caseflow_events_received_total",
        "caseflow_events_duplicate_total",
        "caseflow_inbox_depth",
        "caseflow_runs_total",
        "caseflow_step_duration_seconds",
        "caseflow_open_cases",
        "caseflow_notifications_pending",
        "caseflow_notification_deliveries",
        "caseflow_okta_poll_errors_total",
        "caseflow_store_commits_total",
        "caseflow_store_flushes_total",
        "caseflow_store_flush_seconds_total",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric == name),
            "{name} missing in:\n{text}"
        );
    }
    // The chain committed and (strict durability) flushed; flushes are shared, so there
    // are no more of them than commits.
    let commits = sample_value(&text, "caseflow_store_commits_total", &[]).unwrap_or(0.0);
    let flushes = sample_value(&text, "caseflow_store_flushes_total", &[]).unwrap_or(0.0);
    assert!(commits >= 3.0, "commits {commits}");
    assert!(
        flushes >= 1.0 && flushes <= commits,
        "flushes {flushes}, commits {commits}"
    );
    let later = metrics(&c, &s).await;
    assert!(
        sample_value(&later, "caseflow_store_commits_total", &[]).unwrap_or(0.0) >= commits,
        "a counter went down"
    );
    // The case is critical (VIP, malicious) and in progress.
    assert_eq!(
        sample_value(&text, "caseflow_open_cases", &[("severity", "critical")]),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&text, "caseflow_open_cases", &[("severity", "low")]),
        Some(0.0)
    );
    let hist = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "caseflow_step_duration_seconds"
                && s.labels.get("uses") == Some("cases.create")
        })
        .expect("cases.create durations");
    match &hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.iter().any(|b| b.count >= 1.0));
        }
        other => panic!("not a histogram: {other:?}"),
    }
    let health: Value = c
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero_and_a_restart_remembers() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), &config(""));
    let c = client();
    let events: Vec<Value> = (0..20)
        .map(|i| {
            threat(
                &format!("d0000000-0000-0000-0000-0000000000{i:02}"),
                &format!("45.33.40.{i}"),
            )
        })
        .collect();
    let r = hook(&c, &s, &delivery(events.clone())).await;
    assert_eq!(r.status(), 200);
    let (code, stderr) = s.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let s = start(tmp.path(), &config(""));
    // Acknowledged uuids are remembered across the restart.
    let r = hook(&c, &s, &delivery(events)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-caseflow-duplicates"), "20");
    // Whatever the stop left queued or parked is picked up: every event gets its case,
    // and its pre-processing run happened once.
    eventually("a case per event after the restart", || async {
        let v = api(&c, &s, "/api/cases?limit=100").await;
        (v["count"] == 20).then_some(())
    })
    .await;
    let runs = eventually("every pre-processing run finished", || async {
        let v = api(&c, &s, "/api/runs?playbook=iam-preprocess&limit=100").await;
        let runs = v["runs"].as_array().cloned().unwrap_or_default();
        let done = runs.len() >= 20 && runs.iter().all(|r| r["status"] == "succeeded");
        done.then_some(runs)
    })
    .await;
    let keys: std::collections::BTreeSet<_> =
        runs.iter().map(|r| r["event_key"].to_string()).collect();
    assert_eq!((runs.len(), keys.len()), (20, 20));
    let (code, stderr) = s.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn without_a_token_only_loopback_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    std::fs::write(&cfg, "okta: { directory: playbooks/data/directory.yaml }\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_engine"))
        .current_dir(repo())
        .args(["serve", "playbooks/iam.yaml", "--listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("server.api_token"), "{err}");
    assert!(o.stdout.is_empty(), "never listened");
}

mod poller {
    use super::*;
    use wiremock::matchers::{header as has_header, method, path, query_param};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    fn page(events: &[Value], base: &str, next: &str) -> ResponseTemplate {
        ResponseTemplate::new(200)
            .set_body_json(events)
            .append_header(
                "link",
                format!("<{base}/api/v1/logs?limit=2>; rel=\"self\""),
            )
            .append_header(
                "link",
                format!("<{base}/api/v1/logs?limit=2&after={next}&filter=x>; rel=\"next\""),
            )
    }

    fn no_after(r: &Request) -> bool {
        !r.url.query_pairs().any(|(k, _)| k == "after")
    }

    fn after(r: &Request) -> Option<String> {
        r.url
            .query_pairs()
            .find(|(k, _)| k == "after")
            .map(|(_, v)| v.into_owned())
    }

    fn poll_config(base: &str) -> String {
        config(&format!(
            "  url: {base}\n  token: \"${{TEST_OKTA_TOKEN}}\"\n  rate_limit_max_wait: 5s\n  poll: {{ interval: 200ms, limit: 2, since: 1h }}"
        ))
    }

    fn start(dir: &Path, base: &str) -> Server {
        super::start(dir, &poll_config(base))
    }

    #[tokio::test]
    async fn pages_follow_links_rate_limits_wait_and_a_restart_resumes_at_the_cursor() {
        let okta = MockServer::start().await;
        let base = okta.uri();
        let e1 = threat("e0000000-0000-0000-0000-000000000001", "45.33.50.1");
        let e2 = threat("e0000000-0000-0000-0000-000000000002", "45.33.50.2");
        let e3 = threat("e0000000-0000-0000-0000-000000000003", "45.33.50.3");
        let e4 = threat("e0000000-0000-0000-0000-000000000004", "45.33.50.4");
        let auth = || has_header("authorization", format!("SSWS {OKTA_TOKEN}").as_str());
        Mock::given(method("GET"))
            .and(path("/api/v1/logs"))
            .and(auth())
            .and(no_after)
            .and(query_param("sortOrder", "ASCENDING"))
            .respond_with(page(&[e1.clone(), e2.clone()], &base, "p2"))
            .mount(&okta)
            .await;
        // Page 2 repeats e2 (Okta may): it collapses by uuid.
        Mock::given(method("GET"))
            .and(path("/api/v1/logs"))
            .and(auth())
            .and(query_param("after", "p2"))
            .respond_with(page(&[e2.clone(), e3.clone()], &base, "p3"))
            .mount(&okta)
            .await;
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1;
        Mock::given(method("GET"))
            .and(path("/api/v1/logs"))
            .and(query_param("after", "p3"))
            .respond_with(
                ResponseTemplate::new(429)
                    .append_header("x-rate-limit-reset", reset.to_string())
                    .append_header("x-okta-request-id", "req-429")
                    .set_body_json(json!({"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit due to too many requests."})),
            )
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&okta)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v1/logs"))
            .and(auth())
            .and(query_param("after", "p3"))
            .respond_with(page(&[], &base, "p3"))
            .mount(&okta)
            .await;

        let tmp = tempfile::tempdir().unwrap();
        let s = start(tmp.path(), &base);
        let c = client();
        for ip in ["45.33.50.1", "45.33.50.2", "45.33.50.3"] {
            eventually(ip, || async {
                cases_with(&c, &s, &format!("ip:{ip}"))
                    .await
                    .into_iter()
                    .next()
            })
            .await;
        }
        // Caught up at p3, after waiting out the 429 and saying it was a retry.
        eventually("a poll of p3 after the 429", || async {
            let reqs = okta.received_requests().await.unwrap_or_default();
            let p3: Vec<_> = reqs
                .iter()
                .filter(|r| after(r).as_deref() == Some("p3"))
                .collect();
            (p3.len() >= 2).then_some(())
        })
        .await;
        let reqs = okta.received_requests().await.unwrap();
        let retry = reqs
            .iter()
            .find(|r| r.headers.get("x-okta-retry-count").is_some())
            .expect("a retry after the 429");
        assert_eq!(retry.headers.get("x-okta-retry-for").unwrap(), "req-429");
        let first = &reqs[0];
        assert!(first.url.query_pairs().any(|(k, _)| k == "since"));
        assert!(first
            .url
            .query_pairs()
            .any(|(k, v)| k == "filter" && v.contains("security.threat.detected")));
        let m = metrics(&c, &s).await;
        assert_eq!(
            sample_value(
                &m,
                "caseflow_events_received_total",
                &[("source", "okta"), ("via", "poll")]
            ),
            Some(4.0)
        );
        assert_eq!(
            sample_value(
                &m,
                "caseflow_events_duplicate_total",
                &[("source", "okta"), ("via", "poll")]
            ),
            Some(1.0)
        );
        let (code, stderr) = s.terminate();
        assert_eq!(code, Some(0), "{stderr}");
        assert!(!stderr.contains(OKTA_TOKEN), "the token is never logged");

        // While stopped, a new event arrives at the cursor.
        Mock::given(method("GET"))
            .and(path("/api/v1/logs"))
            .and(auth())
            .and(query_param("after", "p3"))
            .respond_with(page(std::slice::from_ref(&e4), &base, "p4"))
            .with_priority(1)
            .mount(&okta)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v1/logs"))
            .and(query_param("after", "p4"))
            .respond_with(page(&[], &base, "p4"))
            .mount(&okta)
            .await;
        let before = okta.received_requests().await.unwrap().len();
        let s = start(tmp.path(), &base);
        eventually("the case of the event polled after the restart", || async {
            cases_with(&c, &s, "ip:45.33.50.4").await.into_iter().next()
        })
        .await;
        let reqs = okta.received_requests().await.unwrap();
        let after_restart = &reqs[before..];
        assert_eq!(
            after(&after_restart[0]).as_deref(),
            Some("p3"),
            "resumed at the cursor"
        );
        assert!(
            after_restart.iter().all(|r| !no_after(r)),
            "never from `since` again"
        );
        // Every polled event ran exactly once, across the restart (the run journal keeps
        // the runs of the first process).
        let runs = api(&c, &s, "/api/runs?playbook=iam-preprocess").await;
        let mut keys: Vec<String> = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event_key"].as_str().unwrap().to_string())
            .collect();
        keys.sort();
        let expected: Vec<String> = (1..=4)
            .map(|i| format!("okta:e0000000-0000-0000-0000-00000000000{i}"))
            .collect();
        assert_eq!(keys, expected, "{runs}");
        let (code, _) = s.terminate();
        assert_eq!(code, Some(0));
    }
}

#[tokio::test]
async fn the_outbox_retry_runs_while_serving() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let hooks = MockServer::start().await;
    // The first delivery fails; the step's own pass gives up (one attempt), the
    // server's periodic pass delivers it.
    Mock::given(method("POST"))
        .and(path("/notify"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&hooks)
        .await;
    Mock::given(method("POST"))
        .and(path("/notify"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hooks)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let notify = format!(
        "notify:\n  channels: [outbox, webhook]\n  webhook: {{ url: \"{}/notify\" }}\n  delivery: {{ attempts: 1, backoff: 10ms, interval: 200ms }}\n",
        hooks.uri()
    );
    let s = start(tmp.path(), &(config("") + &notify));
    let c = client();
    let r = c
        .post(s.url("/events/okta?wait=true"))
        .bearer_auth(API_TOKEN)
        .json(&sample("02-vip-malicious-ip.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Two notifications (VIP alert, assignment); one of them needed the retry.
    let m = eventually("every notification delivered", || async {
        let m = metrics(&c, &s).await;
        let delivered = sample_value(
            &m,
            "caseflow_notification_deliveries",
            &[("status", "delivered")],
        );
        let pending = sample_value(&m, "caseflow_notifications_pending", &[]);
        (delivered == Some(2.0) && pending == Some(0.0)).then_some(m)
    })
    .await;
    assert_eq!(
        sample_value(
            &m,
            "caseflow_notification_deliveries",
            &[("status", "failed")]
        ),
        Some(0.0)
    );
    let sent = hooks.received_requests().await.unwrap();
    assert_eq!(sent.len(), 3, "one failed attempt, then two deliveries");
    let keys: std::collections::BTreeSet<_> = sent
        .iter()
        .filter_map(|r| {
            r.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(keys.len(), 2, "the retry carries the same Idempotency-Key");
}

/// `?wait=true` stores the event without a flush of its own (the run's flushes cover it),
/// so the answer must wait for one: here no playbook takes the event, and the 200 comes
/// only after a flush.
#[tokio::test]
async fn a_waiting_sender_is_answered_once_the_event_is_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), &config(""));
    let c = client();
    let flushes = |text: &str| sample_value(text, "caseflow_store_flushes_total", &[]).unwrap();
    let before = flushes(&metrics(&c, &s).await);
    let r = c
        .post(s.url("/events/okta?wait=true"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"uuid": "no-playbook-takes-this", "eventType": "system.import.done"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["events"][0]["runs"], json!([]), "{body}");
    assert!(
        flushes(&metrics(&c, &s).await) > before,
        "answered before a flush"
    );
}

/// A client that trickles its headers ("slowloris") is cut off after
/// `server.header_timeout`, however steadily it trickles; other clients are served meanwhile.
#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("").replace(
        "  wait_timeout: 20s\n",
        "  wait_timeout: 20s\n  header_timeout: 1s\n",
    );
    let s = start(tmp.path(), &cfg);
    let addr = s.url("").trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    // One header byte every 100 ms, for up to 10 s: never a whole request.
    let trickle = tokio::spawn(async move {
        wr.write_all(b"POST /hooks/okta HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if wr.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let c = client();
    let r = c.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "another client is served meanwhile");
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        let mut buf = [0u8; 1024];
        // A 408 may come first; then the end of the stream.
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection is still open after 8 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    trickle.abort();
}

/// A SIGTERM sent as soon as the address is printed stops the server in order (exit 0):
/// the handler is installed before the address is printed. It used to be installed just
/// after, and a supervisor quick enough killed the server instead.
#[test]
fn sigterm_right_after_the_address_stops_the_server_in_order() {
    for round in 0..10 {
        let tmp = tempfile::tempdir().unwrap();
        let s = start(tmp.path(), &config(""));
        let (code, stderr) = s.terminate();
        assert_eq!(code, Some(0), "round {round}: {stderr}");
    }
}

/// The binary turns transparent huge pages off for itself (src/main.rs): with them, the
/// allocator's 2 MiB pages kept ~40 MB more resident at 1M cases. Linux reports the
/// process's setting as `THP_enabled` in `/proc/<pid>/status`.
#[cfg(target_os = "linux")]
#[test]
fn the_server_runs_without_transparent_huge_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path(), &config(""));
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(str::trim);
    // Kernels before 5.0 do not report it; there is nothing to check there.
    if let Some(thp) = thp {
        assert_eq!(thp, "0", "THP_enabled of `engine serve`: {thp}");
    }
    let (code, stderr) = s.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}
