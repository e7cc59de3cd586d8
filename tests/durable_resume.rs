//! Resume without repeats: a run whose steps call a server on 127.0.0.1 is cut off in the
//! middle of its second call (the worker task is aborted, as a crash would stop it), the
//! store is reopened and a new worker resumes the run. The server records every request's
//! `Idempotency-Key`: the first call, journaled before the second started, is never sent
//! again; the interrupted one is sent again with the same key; the run finishes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use caseflow::engine::notify::Outbox;
use caseflow::engine::persist::{RunFilter, RunState, Runs, SledStore, Store};
use caseflow::engine::schedule::ready::Status;
use caseflow::engine::{Engine, RunStatus, Services};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

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
  - id: three
    uses: http.request
    with: { method: POST, url: "{{ event.base }}/three", json: { after: "{{ steps.two.status }}" } }
  - id: tell
    uses: notify
    with:
      to: [soc@example.com]
      subject: "done {{ steps.three.status }}"
      message: "run {{ run.id }}"
      channels: [webhook]
"#;

fn engine(dir: &Path, server: &str) -> (Arc<Engine>, Arc<SledStore>) {
    let registry = caseflow::builtin_registry();
    let src = caseflow::engine::load::parse_source(Path::new("calls.yaml"), PLAYBOOK.into())
        .unwrap_or_else(|d| panic!("{d:?}"));
    let bundle = caseflow::engine::compile::compile_sources(&[src], &registry)
        .unwrap_or_else(|d| panic!("{d:?}"));
    let store = Arc::new(open(dir));
    let config = json!({
        "http": {"allow_hosts": ["127.0.0.1"]},
        "notify": {"webhook": {"url": format!("{server}/hook")}},
    });
    let mut services = Services::new()
        .with_config(config)
        .with_store(store.clone() as Arc<dyn Store>);
    services.insert(Arc::new(Outbox::in_store(store.clone() as Arc<dyn Store>)));
    (Arc::new(Engine::new(bundle, services)), store)
}

/// Opens the store, waiting for the previous process's handle (same process here) to let
/// go of sled's file lock.
fn open(dir: &Path) -> SledStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match SledStore::open(dir) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// The `Idempotency-Key` of every request the server got on `p`.
async fn keys(server: &MockServer, p: &str) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == p)
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("<none>")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_sends_no_journaled_call_again() {
    let server = MockServer::start().await;
    for p in ["/one", "/three", "/hook"] {
        Mock::given(method("POST"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
            .mount(&server)
            .await;
    }
    // The first `/two` hangs: the "crash" happens while it is in flight.
    Mock::given(method("POST"))
        .and(path("/two"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/two"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": 2})))
        .mount(&server)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let seq;
    {
        let (e, store) = engine(dir.path(), &server.uri());
        let stop = CancellationToken::new();
        let worker = tokio::spawn(e.clone().run_worker(stop.clone()));
        let got = e
            .ingest(
                "src",
                vec![json!({"uuid": "e1", "n": 5, "base": server.uri()})],
            )
            .await
            .unwrap();
        seq = got[0].seq.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while keys(&server, "/two").await.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the run reached its second call");
        // The crash: the worker and its runs stop where they are; nothing is parked.
        worker.abort();
        let _ = worker.await;
        let running = store
            .list_runs(&RunFilter {
                status: Some(RunState::Running),
                ..RunFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(running.len(), 1, "the run is unfinished in the journal");
        let run = store.get_run(&running[0].run_id).await.unwrap().unwrap();
        let journaled: Vec<&str> = run.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            journaled,
            ["one"],
            "`one` was journaled before `two` started"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (e, store) = engine(dir.path(), &server.uri());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(e.clone().run_worker(stop.clone()));
    let runs = e
        .wait_for(seq, Duration::from_secs(20))
        .await
        .unwrap()
        .expect("the resumed run finishes");
    stop.cancel();
    worker.await.unwrap().unwrap();

    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let id = &run.run_id;
    assert_eq!(
        keys(&server, "/one").await,
        [format!("{id}:one")],
        "sent once"
    );
    assert_eq!(
        keys(&server, "/two").await,
        [format!("{id}:two"), format!("{id}:two")],
        "the interrupted call is sent again, with the same key"
    );
    assert_eq!(keys(&server, "/three").await, [format!("{id}:three")]);
    assert_eq!(keys(&server, "/hook").await, [format!("{id}:tell")]);
    let one = run.step("one").unwrap();
    assert_eq!((one.status, one.attempts), (Status::Succeeded, 1));
    assert_eq!(
        run.step("three")
            .and_then(|s| s.output.as_ref())
            .map(|o| o["status"].clone()),
        Some(Value::from(200))
    );
    assert!(store.unfinished_runs().await.unwrap().is_empty());
    assert!(caseflow::engine::persist::CaseRead::check(store.as_ref())
        .await
        .unwrap()
        .is_empty());
}
