//! Resume without repeats across real kills: `engine serve` runs a playbook whose steps
//! call an HTTP server in this test process, which records every request's
//! `Idempotency-Key` and can hold requests until released. Events come in through
//! `POST /events/src`; the child is SIGKILLed twice, each time while a later step of every
//! run is held, and started again on the same data dir. The runs resume and finish, and
//! the recorded keys show what the journal promises:
//!
//! ```text
//! one ──┬── two (held at the first kill) ──┬── three (held at the second kill) ── tell (webhook)
//!       └── side ──────────────────────────┘
//! ```
//!
//! - a step whose completion was durably journaled is never sent again: `one` (durable
//!   before `two` and `side` started) once; `two` and `side` (durable before `three`
//!   started) never after the second kill; `tell` once;
//! - a step in flight at a kill is sent again after the restart with the same key
//!   (at-least-once): `two` and `three` exactly twice;
//! - `side` finished before the first kill but nothing had started after it, so its entry
//!   was committed, not necessarily flushed (the journal's rule: results are durable
//!   before anything *starts* after them): it may be sent once or twice, always with its
//!   one key.

mod support {
    pub mod server;
}
mod kill_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use kill_support::{api, client, runs, Server, Spec};
use serde_json::{json, Value};
use tokio::sync::watch;

const PLAYBOOK: &str = r#"
playbook: calls
on: { event: src }
steps:
  - id: one
    uses: http.request
    with: { method: POST, url: "{{ event.base }}/one", json: { n: "{{ event.n }}" } }
  - id: two
    uses: http.request
    with: { method: POST, url: "{{ event.base }}/two", json: { after: "{{ steps.one.status }}" } }
  - id: side
    uses: http.request
    with: { method: POST, url: "{{ event.base }}/side", json: { after: "{{ steps.one.status }}" } }
  - id: three
    uses: http.request
    with:
      method: POST
      url: "{{ event.base }}/three"
      json: { two: "{{ steps.two.status }}", side: "{{ steps.side.status }}" }
  - id: tell
    uses: notify
    with:
      to: [soc@example.com]
      subject: "done {{ steps.three.status }}"
      message: "run {{ run.id }}"
      channels: [webhook]
"#;

const RUNS: usize = 4;

/// The recording server: every request's path and `Idempotency-Key`, in arrival order;
/// requests to a held path wait until it is released.
#[derive(Clone)]
struct Recorder {
    log: Arc<Mutex<Vec<(String, String)>>>,
    held: watch::Sender<BTreeSet<String>>,
}

impl Recorder {
    fn hold(&self, paths: &[&str]) {
        self.held
            .send_replace(paths.iter().map(|p| p.to_string()).collect());
    }

    fn log(&self) -> Vec<(String, String)> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, path: &str) -> usize {
        self.log().iter().filter(|(p, _)| p == path).count()
    }

    /// Waits until `path` got `n` requests.
    async fn wait_for(&self, path: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(path) < n {
            assert!(
                Instant::now() < deadline,
                "{path}: {} requests of {n}; log: {:?}",
                self.count(path),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn record(
    State(r): State<Recorder>,
    UrlPath(step): UrlPath<String>,
    headers: HeaderMap,
) -> Json<Value> {
    let path = format!("/{step}");
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_string();
    r.log.lock().unwrap().push((path.clone(), key));
    let mut held = r.held.subscribe();
    let _ = held.wait_for(|set| !set.contains(&path)).await;
    Json(json!({"ok": true, "path": path}))
}

async fn recorder() -> (Recorder, String) {
    let (held, _) = watch::channel(BTreeSet::new());
    let r = Recorder {
        log: Arc::new(Mutex::new(Vec::new())),
        held,
    };
    let app = Router::new()
        .route("/{step}", post(record))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, base)
}

fn spec(dir: &Path, base: &str) -> Spec {
    std::fs::write(dir.join("calls.yaml"), PLAYBOOK).unwrap();
    let config = format!(
        "http:\n  allow_hosts: [127.0.0.1]\nnotify:\n  webhook: {{ url: \"{base}/hook\" }}\n"
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    Spec {
        playbooks: vec![dir.join("calls.yaml")],
        data_dir: dir.join("data"),
        config: dir.join("config.yaml"),
        log: "warn,engine::schedule::worker=info".into(),
    }
}

/// The steps each run's journal holds, by run id (from `/api/runs/{id}`).
async fn journaled(
    c: &reqwest::Client,
    s: &Server,
    ids: &[String],
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for id in ids {
        let v = api(c, s, &format!("/api/runs/{id}")).await;
        let steps = v["run"]["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|st| st["status"] == "succeeded")
            .map(|st| st["id"].as_str().unwrap().to_string())
            .collect();
        out.insert(id.clone(), steps);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_runs_send_no_journaled_step_again_across_kills() {
    let started = Instant::now();
    let (rec, base) = recorder().await;
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path(), &base);
    let c = client();

    // Life 1: the runs reach `two`, which is held; `side` finishes.
    rec.hold(&["/two"]);
    let mut s = kill_support::start(&spec);
    for n in 0..RUNS {
        let r = c
            .post(s.url("/events/src"))
            .json(&json!({"uuid": format!("ev-{n}"), "n": n, "base": base}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    rec.wait_for("/two", RUNS).await;
    rec.wait_for("/side", RUNS).await;
    let ids: Vec<String> = runs(&c, &s, "playbook=calls")
        .await
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), RUNS);
    // Let `side`'s journal entries be committed before the kill.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_kill1 = journaled(&c, &s, &ids).await;
    for (id, steps) in &at_kill1 {
        assert!(steps.contains(&"one".to_string()), "{id}: {steps:?}");
        assert!(!steps.contains(&"two".to_string()), "{id}: {steps:?}");
    }
    assert!(s.kill9(), "the first kill landed");
    let after_kill1 = rec.log().len();

    // Life 2: `two` answers now, `three` is held.
    rec.hold(&["/three"]);
    let mut s = kill_support::start(&spec);
    rec.wait_for("/three", RUNS).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_kill2 = journaled(&c, &s, &ids).await;
    for (id, steps) in &at_kill2 {
        for step in ["one", "two", "side"] {
            assert!(steps.contains(&step.to_string()), "{id}: {steps:?}");
        }
        assert!(!steps.contains(&"three".to_string()), "{id}: {steps:?}");
    }
    let resumed1 = kill_support::resumed_runs(&s.stderr());
    assert!(s.kill9(), "the second kill landed");
    let after_kill2 = rec.log().len();

    // Life 3: nothing held; every run finishes.
    rec.hold(&[]);
    let s = kill_support::start(&spec);
    let deadline = Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let all = runs(&c, &s, "playbook=calls").await;
        if all.len() == RUNS && all.iter().all(|r| r["status"] != "running") {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "runs did not finish: {all:#?}; stderr:\n{}",
            kill_support::tail(&s.stderr(), 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    rec.wait_for("/hook", RUNS).await;
    // Give a repeated request time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resumed2 = kill_support::resumed_runs(&s.stderr());
    let log = rec.log();

    for r in &finished {
        assert_eq!(r["status"], "succeeded", "{r}");
    }
    let mut side_repeats = 0;
    for id in &ids {
        let key = |step: &str| format!("{id}:{step}");
        let sent = |path: &str, range: std::ops::Range<usize>| {
            log[range]
                .iter()
                .filter(|(p, k)| p == path && k.starts_with(&format!("{id}:")))
                .map(|(_, k)| k.clone())
                .collect::<Vec<_>>()
        };
        let all = log.len();
        // Every request carries its step's key, the same on every attempt.
        for (path, step) in [
            ("/one", "one"),
            ("/two", "two"),
            ("/side", "side"),
            ("/three", "three"),
            ("/hook", "tell"),
        ] {
            for k in sent(path, 0..all) {
                assert_eq!(k, key(step), "{path}");
            }
        }
        assert_eq!(
            sent("/one", 0..all).len(),
            1,
            "{id}: `one` was journaled before the first kill"
        );
        assert_eq!(sent("/two", 0..after_kill1).len(), 1);
        assert_eq!(
            sent("/two", 0..all).len(),
            2,
            "{id}: `two`, in flight at the first kill, is sent again once"
        );
        assert_eq!(
            sent("/two", after_kill2..all).len(),
            0,
            "{id}: `two` was journaled before the second kill"
        );
        let side = sent("/side", 0..all).len();
        assert!((1..=2).contains(&side), "{id}: `side` sent {side} times");
        assert_eq!(
            sent("/side", after_kill2..all).len(),
            0,
            "{id}: `side` was journaled before the second kill"
        );
        if side == 2 {
            side_repeats += 1;
        }
        assert_eq!(sent("/three", 0..after_kill2).len(), 1);
        assert_eq!(
            sent("/three", 0..all).len(),
            2,
            "{id}: `three`, in flight at the second kill, is sent again once"
        );
        assert_eq!(
            sent("/hook", 0..all).len(),
            1,
            "{id}: the notification once"
        );
        let detail = api(&c, &s, &format!("/api/runs/{id}")).await;
        let steps = detail["run"]["steps"].as_array().unwrap();
        let one = steps.iter().find(|st| st["id"] == "one").unwrap();
        assert_eq!(
            (one["status"].as_str(), one["attempts"].as_u64()),
            (Some("succeeded"), Some(1))
        );
    }
    let side_journaled_at_kill1 = at_kill1
        .values()
        .filter(|st| st.contains(&"side".to_string()))
        .count();
    let (code, stderr) = s.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let (check_code, check_out) = kill_support::store_check(&spec.data_dir);
    assert_eq!(check_code, Some(0), "engine store check: {check_out}");
    println!(
        "kill resume: {RUNS} runs, 2 SIGKILLs, resumed {resumed1} then {resumed2} runs, {} requests in all; `one` sent once per run, `two` and `three` twice (same key), `side` repeated in {side_repeats} of {RUNS} runs ({side_journaled_at_kill1} of its entries were committed at the first kill), `tell` once; {:.1} s",
        log.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (resumed1, resumed2),
        (RUNS, RUNS),
        "every run was interrupted twice"
    );
}
