//! Shared by the web tests: the real `engine serve` with the IAM playbooks and an API
//! token, the events fed to it, and API reads.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

pub const API_TOKEN: &str = "e2e-web-token-7c1f0d9a4b";
pub const XSS_USER: &str = "carol@acme.example";
pub const TEAM: [&str; 3] = [
    "dana.analyst@acme.example",
    "eli.analyst@acme.example",
    "fay.analyst@acme.example",
];
pub use crate::support::server::{engine, repo};

pub fn config() -> String {
    r#"
okta:
  directory: playbooks/data/directory.yaml
  vip_groups: [Executives]
intel:
  lists:
    - { path: playbooks/data/intel/blocklist.netset, verdict: malicious, name: demo-blocklist }
    - { path: playbooks/data/intel/allowlist.netset, verdict: benign, name: demo-allowlist }
teams:
  soc: [dana.analyst@acme.example, eli.analyst@acme.example, fay.analyst@acme.example]
  stakeholders: [ciso@acme.example]
server:
  api_token: "${TEST_CASEFLOW_API_TOKEN}"
  wait_timeout: 20s
"#
    .to_string()
}

pub use crate::support::server::Server;

/// `engine serve playbooks/iam.yaml` with [`config`] in a data dir under `dir`.
pub fn start(dir: &Path) -> Server {
    std::fs::write(dir.join("config.yaml"), config()).unwrap();
    let mut cmd = engine();
    cmd.args(["serve", "playbooks/iam.yaml", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .env("TEST_CASEFLOW_API_TOKEN", API_TOKEN);
    Server::spawn(cmd)
}

/// An Okta account lockout whose message and reason are markup.
pub fn hostile_event() -> Value {
    json!({
        "uuid": "e2e0web0-0000-4000-8000-00000000x55",
        "published": "2026-11-27T09:00:00.000Z",
        "eventType": "user.account.lock",
        "version": "0",
        "severity": "WARN",
        "displayMessage": "<script>alert(1)</script>",
        "actor": {"id": "00u1carolexample001", "type": "User", "alternateId": XSS_USER, "displayName": "Carol"},
        "client": {"ipAddress": "45.33.32.200"},
        "outcome": {"result": "FAILURE", "reason": "<img src=x onerror=alert(2)>"},
        "target": null,
        "debugContext": {"debugData": {}}
    })
}

pub async fn feed(http: &reqwest::Client, base: &str, event: &Value) {
    let r = http
        .post(format!("{base}/events/okta?wait=true"))
        .bearer_auth(API_TOKEN)
        .json(event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

pub async fn api(http: &reqwest::Client, base: &str, path: &str) -> Value {
    http.get(format!("{base}{path}"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The sample Okta events of `playbooks/samples`, in file order.
pub fn samples() -> Vec<Value> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo().join("playbooks/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}
