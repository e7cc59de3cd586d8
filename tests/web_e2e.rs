//! The web view end to end, in a real browser: the real `engine serve` binary on
//! 127.0.0.1:0 with `playbooks/iam.yaml` and a temp data dir, fed the sample Okta events
//! and one whose `displayMessage` is `<script>alert(1)</script>`, then Debian's headless
//! Chromium driven by playwright-core (`tests/e2e/web.e2e.js`): log in, the queue, the
//! hostile case rendered inert, moving it to in_progress and seeing the assignment arrive,
//! a comment, a run's graph. Afterwards the API confirms what the browser did.
//!
//! Needs `/usr/bin/chromium` (`apt-get install -y chromium`), `node`, and
//! `tests/e2e/node_modules` (`npm ci` in `tests/e2e`); `.ci/run` installs them. Without
//! them the test fails and says how to install them: it never passes silently.
//! Screenshots go to `CASEFLOW_SCREENSHOTS` when set (`docs/screenshots` refreshes the
//! ones in the docs), else to a temp dir under the target directory.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const API_TOKEN: &str = "e2e-web-token-7c1f0d9a4b";
const XSS_USER: &str = "carol@acme.example";
const TEAM: [&str; 3] = [
    "dana.analyst@acme.example",
    "eli.analyst@acme.example",
    "fay.analyst@acme.example",
];
/// The browser part must finish within this (it takes about 10 s).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fails with the way to install what is missing.
fn check_prerequisites() {
    let mut missing = Vec::new();
    if !chromium().exists() {
        missing.push(format!(
            "Chromium at `{}`: install Debian's package with `sudo apt-get install -y chromium` (or set CHROMIUM to a Chromium binary)",
            chromium().display()
        ));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("`node` (Node.js 18 or later) on PATH: `sudo apt-get install -y nodejs npm`".to_string());
    }
    if !repo()
        .join("tests/e2e/node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push(
            "playwright-core in tests/e2e/node_modules: run `npm ci` in tests/e2e (it downloads no browser)".to_string(),
        );
    }
    assert!(
        missing.is_empty(),
        "the web end-to-end test needs:\n  - {}\n(.ci/run installs all of this before the tests)",
        missing.join("\n  - ")
    );
}

fn config() -> String {
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

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        std::fs::write(dir.join("config.yaml"), config()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_engine"))
            .current_dir(repo())
            .args(["serve", "playbooks/iam.yaml", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .env("TEST_CASEFLOW_API_TOKEN", API_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("engine starts");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("`engine serve` printed its address");
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line `{line}`"))
            .to_string();
        Server { child, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An Okta account lockout whose message and reason are markup.
fn hostile_event() -> Value {
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

async fn feed(http: &reqwest::Client, base: &str, event: &Value) {
    let r = http
        .post(format!("{base}/events/okta?wait=true"))
        .bearer_auth(API_TOKEN)
        .json(event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

async fn api(http: &reqwest::Client, base: &str, path: &str) -> Value {
    http.get(format!("{base}{path}"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Runs the browser script, killing it when it takes longer than `BROWSER_TIMEOUT`.
fn run_browser(base: &str, shots: &Path) -> (bool, String) {
    let mut child = Command::new("node")
        .current_dir(repo().join("tests/e2e"))
        .arg("web.e2e.js")
        .env("CASEFLOW_URL", base)
        .env("CASEFLOW_TOKEN", API_TOKEN)
        .env("CASEFLOW_XSS_USER", XSS_USER)
        .env("CASEFLOW_SHOTS", shots)
        .env("CHROMIUM", chromium())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        s + &e
    });
    let start = Instant::now();
    let ok = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.success();
        }
        if start.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (ok, reader.join().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_work_a_case_in_the_browser() {
    check_prerequisites();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let base = server.base.clone();
    let http = reqwest::Client::new();

    let mut samples: Vec<PathBuf> = std::fs::read_dir(repo().join("playbooks/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    samples.sort();
    for s in &samples {
        let event: Value = serde_json::from_slice(&std::fs::read(s).unwrap()).unwrap();
        feed(&http, &base, &event).await;
    }
    feed(&http, &base, &hostile_event()).await;
    let cases = api(&http, &base, "/api/cases?observable=user:carol@acme.example").await;
    let case = &cases["cases"][0];
    let id = case["id"].as_str().expect("the hostile event opened a case").to_string();
    assert_eq!(case["state"], "new", "{case}");
    assert!(case["description"]
        .as_str()
        .unwrap()
        .contains("<script>alert(1)</script>"));

    let shots = std::env::var_os("CASEFLOW_SCREENSHOTS")
        .map(|d| {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                repo().join(d)
            }
        })
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-e2e-shots"));
    let b = base.clone();
    let (ok, log) = tokio::task::spawn_blocking(move || run_browser(&b, &shots))
        .await
        .unwrap();
    println!("{log}");
    assert!(ok, "the browser test failed:\n{log}");

    // What the browser did, as the API sees it.
    let case = api(&http, &base, &format!("/api/cases/{id}")).await["case"].clone();
    assert_eq!(case["state"], "in_progress");
    let assignee = case["assignee"].as_str().expect("assigned");
    assert!(TEAM.contains(&assignee), "{assignee}");
    let timeline = case["timeline"].as_array().unwrap();
    let by = |kind: &str| {
        timeline
            .iter()
            .find(|e| e["kind"] == kind)
            .map(|e| e["actor"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        by("state_changed"),
        json!({"type": "person", "name": "dana.analyst@acme.example"})
    );
    assert_eq!(by("assigned")["playbook"], "iam-state-changed");
    let comment = case["comments"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(comment["actor"]["name"], "dana.analyst@acme.example");
    assert!(comment["text"].as_str().unwrap().contains("<script>alert(5)</script>"));
}
