//! The case store through the real binary: running the samples twice on one data dir,
//! and `engine cases list|show|update` after a run.

use std::path::Path;
use std::process::{Command, Output};

use caseflow::engine::notify::{Delivery, DeliveryStatus, Notification};
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn engine(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .current_dir(repo())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("engine runs")
}

fn ok_json(o: Output) -> Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    serde_json::from_slice(&o.stdout).expect("--json prints JSON")
}

fn run_samples(data: &Path) -> Value {
    ok_json(engine(
        &["run", "playbooks/iam.yaml", "--json", "--seed", "7"],
        data,
    ))
}

fn list(data: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["cases", "list", "--json"];
    args.extend_from_slice(extra);
    match ok_json(engine(&args, data)) {
        Value::Array(a) => a,
        other => panic!("not a list: {other:#}"),
    }
}

fn show(data: &Path, id: &str) -> Value {
    ok_json(engine(&["cases", "show", id, "--json"], data))
}

fn with_observable<'a>(cases: &'a [Value], value: &str) -> &'a Value {
    cases
        .iter()
        .find(|c| {
            c["observables"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["value"] == value))
        })
        .unwrap_or_else(|| panic!("no case with {value}: {cases:#?}"))
}

fn sample_uuids() -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("playbooks/samples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let events = match &v {
            Value::Array(a) => a.clone(),
            Value::Object(m) => match m.get("data").and_then(|d| d.get("events")) {
                Some(Value::Array(a)) => a.clone(),
                _ => vec![v.clone()],
            },
            _ => Vec::new(),
        };
        n += events
            .iter()
            .filter(|e| e["uuid"].as_str().is_some_and(|u| !u.is_empty()))
            .count();
    }
    n
}

/// The outbox of the data dir, oldest first, read by `engine notifications --json` with
/// whether each is still owed. (A child process, not a store opened here: sled may hold a
/// dropped handle's lock for a while on a loaded machine, which the next `engine` child
/// would meet.)
fn outbox(data: &Path) -> Vec<(Notification, bool)> {
    let out = ok_json(engine(
        &["notifications", "--json", "--limit", "100000"],
        data,
    ));
    let mut items: Vec<(Notification, bool)> = out["notifications"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| {
            (
                serde_json::from_value(i["notification"].clone()).expect("a notification"),
                i["owed"].as_bool().expect("owed"),
            )
        })
        .collect();
    items.reverse();
    items
}

/// Every notification in the outbox of the data dir, oldest first.
fn queued(data: &Path) -> Vec<Notification> {
    outbox(data).into_iter().map(|(n, _)| n).collect()
}

#[tokio::test]
async fn running_the_samples_twice_opens_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_samples(dir.path());
    assert_eq!(first["duplicates"], 0);
    assert_eq!(first["cases"].as_array().unwrap().len(), 3);
    let before = list(dir.path(), &["--limit", "100"]);
    assert_eq!(before.len(), 3);
    let notes = queued(dir.path());
    assert!(!notes.is_empty());

    let second = run_samples(dir.path());
    assert!(second["runs"].as_array().unwrap().is_empty(), "{second:#}");
    assert!(second["cases"].as_array().unwrap().is_empty(), "{second:#}");
    assert!(second["notifications"].as_array().unwrap().is_empty());
    let expected = sample_uuids();
    assert!(expected > 0);
    assert_eq!(second["duplicates"], expected);
    // Not one byte of any case changed, and nobody was notified again.
    assert_eq!(list(dir.path(), &["--limit", "100"]), before);
    assert_eq!(queued(dir.path()), notes);

    // The readable summary says so too.
    let o = engine(&["run", "playbooks/iam.yaml", "--seed", "7"], dir.path());
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("skipped: duplicate"), "{text}");
    assert!(
        text.contains(&format!("({expected} duplicate(s) skipped)")),
        "{text}"
    );
    // And says why on stderr, with the way to run them afresh.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("every event was already received") && err.contains("--data-dir"),
        "{err}"
    );
}

#[test]
fn a_person_moving_a_case_to_in_progress_fires_the_assignment() {
    let dir = tempfile::tempdir().unwrap();
    run_samples(dir.path());
    let open = list(dir.path(), &["--state", "new"]);
    let case = with_observable(&open, "45.33.32.156");
    let id = case["id"].as_str().unwrap().to_string();
    assert!(case["assignee"].is_null());

    let out = ok_json(engine(
        &[
            "cases",
            "update",
            &id,
            "--state",
            "in_progress",
            "--as",
            "pat.person",
            "--playbooks",
            "playbooks/iam.yaml",
            "--json",
        ],
        dir.path(),
    ));
    let runs = out["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["playbook"], "iam-state-changed");
    assert_eq!(runs[0]["status"], "succeeded", "{:#}", runs[0]);

    let after = show(dir.path(), &id);
    assert_eq!(after["state"], "in_progress");
    let assignee = after["assignee"].as_str().expect("assigned");
    assert!(
        [
            "dana.analyst@acme.example",
            "eli.analyst@acme.example",
            "fay.analyst@acme.example"
        ]
        .contains(&assignee),
        "{assignee}"
    );
    let timeline = after["timeline"].as_array().unwrap();
    let moved = timeline
        .iter()
        .find(|t| t["kind"] == "state_changed")
        .expect("state change on the timeline");
    assert_eq!(moved["actor"]["type"], "person");
    assert_eq!(moved["actor"]["name"], "pat.person");
    let assigned = timeline
        .iter()
        .find(|t| t["kind"] == "assigned")
        .expect("assignment on the timeline");
    assert_eq!(assigned["actor"]["playbook"], "iam-state-changed");
    let notes = out["notifications"].as_array().unwrap();
    assert!(notes
        .iter()
        .any(|n| n["to"].as_array().unwrap().contains(&Value::from(assignee))));
}

#[test]
fn invalid_changes_and_unknown_ids_are_clear_errors_that_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    run_samples(dir.path());
    let resolved = list(dir.path(), &["--state", "resolved"]);
    let case = with_observable(&resolved, "192.0.2.10");
    let id = case["id"].as_str().unwrap().to_string();
    let before = list(dir.path(), &["--limit", "100"]);

    let o = engine(
        &[
            "cases",
            "update",
            &id,
            "--state",
            "on_hold",
            "--comment",
            "should not land",
            "--playbooks",
            "playbooks/iam.yaml",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("cannot move {id} from `resolved` to `on_hold`")),
        "{err}"
    );

    let o = engine(
        &["cases", "update", "CASE-999999", "--state", "in_progress"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("CASE-999999 not found"), "{err}");

    let o = engine(&["cases", "show", "CASE-999999"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no case CASE-999999"));

    let o = engine(
        &["cases", "update", "not-a-case", "--state", "closed"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid case id `not-a-case`"));

    let o = engine(&["cases", "update", &id, "--state", "sideways"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid state `sideways`"));

    assert_eq!(list(dir.path(), &["--limit", "100"]), before);
}

#[test]
fn cases_list_and_show_print_json() {
    let dir = tempfile::tempdir().unwrap();
    assert!(list(dir.path(), &[]).is_empty());
    run_samples(dir.path());
    let all = list(dir.path(), &[]);
    assert_eq!(all.len(), 3);
    // Newest first.
    let ids: Vec<&str> = all.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted);

    let critical = list(dir.path(), &["--severity", "critical"]);
    assert_eq!(critical.len(), 1);
    assert_eq!(critical[0]["state"], "in_progress");
    let assignee = critical[0]["assignee"].as_str().unwrap();
    assert_eq!(list(dir.path(), &["--assignee", assignee]).len(), 1);
    assert_eq!(list(dir.path(), &["--limit", "1"]).len(), 1);

    let id = critical[0]["id"].as_str().unwrap();
    let one = show(dir.path(), id);
    assert_eq!(one, critical[0]);
    assert!(!one["timeline"].as_array().unwrap().is_empty());

    let o = engine(&["cases", "list", "--state", "open-ish"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid state `open-ish`"));
}

fn old_note(id: &str, channels: &[&str]) -> Notification {
    Notification {
        id: id.into(),
        at: "2026-01-01T00:00:00Z".into(),
        to: vec!["dana.analyst@acme.example".into()],
        subject: format!("queued by an older engine ({id})"),
        message: "m".into(),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        case: None,
        run_id: "old-run".into(),
        playbook: "p".into(),
        step: id.into(),
    }
}

/// A data dir an engine before store schema 5 left: its outbox in two JSON-lines files.
/// The next engine imports them into the store once and renames them; nothing is lost and
/// nothing is queued twice.
#[tokio::test]
async fn the_outbox_files_of_an_older_engine_are_imported_on_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let lines = |v: Vec<String>| v.join("\n") + "\n";
    let notes = [
        old_note("old-1", &["console", "slack"]),
        old_note("old-2", &["slack"]),
    ];
    std::fs::write(
        dir.path().join("notifications.jsonl"),
        lines(
            notes
                .iter()
                .map(|n| serde_json::to_string(n).unwrap())
                .collect(),
        ),
    )
    .unwrap();
    let delivered = Delivery {
        id: "old-2".into(),
        channel: "slack".into(),
        status: DeliveryStatus::Delivered,
        at: "2026-01-01T00:00:01Z".into(),
        attempts: 1,
        error: None,
        not_before_ms: None,
    };
    std::fs::write(
        dir.path().join("deliveries.jsonl"),
        lines(vec![serde_json::to_string(&delivered).unwrap()]),
    )
    .unwrap();
    run_samples(dir.path());
    for f in ["notifications.jsonl", "deliveries.jsonl"] {
        assert!(!dir.path().join(f).exists(), "{f} was imported");
        assert!(dir.path().join(format!("{f}.imported")).exists());
    }
    let all = outbox(dir.path());
    let first: Vec<Notification> = all.iter().take(2).map(|(n, _)| n.clone()).collect();
    assert_eq!(first, notes, "imported first, as they were");
    assert!(all.len() > 2, "and the run's own after them");
    let owed = |id: &str| all.iter().any(|(n, owed)| n.id == id && *owed);
    assert!(owed("old-1"), "old-1 still owes slack: {all:?}");
    assert!(!owed("old-2"), "old-2 was delivered before");
    // A second start has nothing to import and queues nothing twice.
    let before = queued(dir.path());
    run_samples(dir.path());
    assert_eq!(queued(dir.path()), before);
}

/// `engine notifications` lists the outbox and says what each network channel still owes:
/// here a webhook that refuses connections, so every notification stays owed, with the
/// error, and the webhook's URL (a secret: tokens travel in URLs) is never printed.
#[test]
fn notifications_show_what_a_channel_still_owes() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = std::fs::read_to_string(repo().join("playbooks/data/config.yaml")).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "{base}\nhttp:\n  allow_hosts: [127.0.0.1]\nnotify:\n  channels: [console, outbox, webhook]\n  \
             webhook:\n    url: \"http://127.0.0.1:{port}/hook?token=s3cret-hook-token\"\n  \
             delivery: {{ attempts: 1, backoff: 10ms }}\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let o = engine(
        &[
            "run",
            "playbooks/iam.yaml",
            "--seed",
            "7",
            "--config",
            config.to_str().unwrap(),
        ],
        &data,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let all = ok_json(engine(&["notifications", "--json"], &data));
    let items = all["notifications"].as_array().unwrap();
    assert_eq!(all["count"], 3, "{all:#}");
    for item in items {
        assert_eq!(item["owed"], true, "{item:#}");
        let d = &item["deliveries"]["webhook"];
        assert_eq!(d["status"], "failed", "{item:#}");
        assert_eq!(d["attempts"], 1, "{item:#}");
    }
    // Newest first.
    let at: Vec<&str> = items
        .iter()
        .map(|i| i["notification"]["at"].as_str().unwrap())
        .collect();
    let mut sorted = at.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(at, sorted);

    let o = engine(&["notifications", "--pending", "--limit", "2"], &data);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        text.matches("webhook: failed, will be retried").count(),
        2,
        "{text}"
    );
    assert!(!text.contains("s3cret-hook-token"), "{text}");
    assert!(
        !String::from_utf8_lossy(&engine(&["notifications", "--json"], &data).stdout)
            .contains("s3cret-hook-token")
    );

    // A store with nothing queued says so.
    let empty = dir.path().join("empty");
    let o = engine(&["notifications", "--pending"], &empty);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "nothing owed");
}
