//! The web view end to end, in a real browser: the real `engine serve` binary on
//! 127.0.0.1:0 with `playbooks/iam.yaml` and a temp data dir, fed the sample Okta events
//! and one whose `displayMessage` is `<script>alert(1)</script>`, then Debian's headless
//! Chromium driven by playwright-core (`tests/e2e/web.e2e.js`): log in, the queue, the
//! hostile case rendered inert, moving it to in_progress and seeing the assignment arrive,
//! a comment, a run's graph. Afterwards the API confirms what the browser did.
//!
//! Needs `/usr/bin/chromium` (`apt-get install -y chromium`), `node`, and
//! `tests/e2e/node_modules` (`npm ci` in `tests/e2e`, which the test runs itself when they are
//! missing); `.ci/run` installs them. Without
//! them the test fails and says how to install them: it never passes silently.
//! Screenshots go to `CASEFLOW_SCREENSHOTS` when set (`docs/screenshots` refreshes the
//! ones in the docs), else to a temp dir under the target directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support {
    pub mod server;
}
mod web_support;

use web_support::{api, feed, hostile_event, repo, samples, API_TOKEN, TEAM, XSS_USER};

/// The browser part must finish within this (it takes about 10 s).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// How many steps `iam-case-created` has in the playbooks the server loads.
fn case_created_steps() -> usize {
    let registry = caseflow::builtin_registry();
    let bundle = caseflow::engine::load_paths(&[repo().join("playbooks/iam.yaml")], &registry)
        .unwrap_or_else(|d| panic!("{d:?}"));
    bundle
        .get("iam-case-created")
        .map(|p| p.steps.len())
        .unwrap_or_else(|| panic!("no iam-case-created playbook"))
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
        missing.push(
            "`node` (Node.js 18 or later) on PATH: `sudo apt-get install -y nodejs npm`"
                .to_string(),
        );
    }
    let playwright = repo().join("tests/e2e/node_modules/playwright-core/package.json");
    if !playwright.exists() {
        // The lockfile pins it; `npm ci` fetches it once (no browser download).
        let _ = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(repo().join("tests/e2e"))
            .status();
    }
    if !playwright.exists() {
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
        .env("IAM_CASE_CREATED_STEPS", case_created_steps().to_string())
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
    let server = web_support::start(dir.path());
    let base = server.base.clone();
    let http = reqwest::Client::new();

    for event in samples() {
        feed(&http, &base, &event).await;
    }
    feed(&http, &base, &hostile_event()).await;
    let cases = api(
        &http,
        &base,
        "/api/cases?observable=user:carol@acme.example",
    )
    .await;
    let case = &cases["cases"][0];
    let id = case["id"]
        .as_str()
        .expect("the hostile event opened a case")
        .to_string();
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
    assert!(comment["text"]
        .as_str()
        .unwrap()
        .contains("<script>alert(5)</script>"));
}
