//! The user's main job: `engine run playbooks/iam.yaml` on the shipped samples, offline.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run_iam(data: &Path, extra: &[&str]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_engine"))
        .current_dir(repo())
        .args([
            "run",
            "playbooks/iam.yaml",
            "--json",
            "--seed",
            "7",
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .output()
        .expect("engine runs");
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    serde_json::from_slice(&o.stdout).expect("--json prints JSON")
}

fn case_with<'a>(out: &'a Value, kind: &str, value: &str) -> Vec<&'a Value> {
    out["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["observables"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["type"] == kind && o["value"] == value)
        })
        .collect()
}

fn verdict(case: &Value, ip: &str) -> Value {
    case["observables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "ip" && o["value"] == ip)
        .map(|o| o["verdict"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn every_playbook_in_the_repo_validates() {
    let o = Command::new(env!("CARGO_BIN_EXE_engine"))
        .current_dir(repo())
        .args(["validate", "playbooks"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let registry = caseflow::builtin_registry();
    let bundle = caseflow::engine::load_paths(&[repo().join("playbooks")], &registry)
        .unwrap_or_else(|d| panic!("{}", d.iter().map(|d| d.to_string()).collect::<String>()));
    let names: Vec<&str> = bundle.playbooks.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["iam-preprocess", "iam-case-created", "iam-state-changed"]
    );
}

#[test]
fn the_samples_run_the_whole_chain() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_iam(dir.path(), &[]);
    let runs = out["runs"].as_array().unwrap();
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:#?}");
    assert_eq!(
        out["cases"].as_array().unwrap().len(),
        3,
        "{:#?}",
        out["cases"]
    );

    // A non-VIP user from a benign IP: the case is resolved.
    let bob = case_with(&out, "user", "bob.builder@acme.example");
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0]["state"], "resolved");
    assert_eq!(bob[0]["severity"], "medium");
    assert_eq!(verdict(bob[0], "192.0.2.10"), "benign");
    assert!(bob[0]["assignee"].is_null());

    // A VIP from a malicious IP: critical, in progress, assigned to the SOC, and a second
    // event for the same user updated the same case.
    let alice = case_with(&out, "user", "alice.ceo@acme.example");
    assert_eq!(
        alice.len(),
        1,
        "the second event must not open a second case"
    );
    let alice = alice[0];
    assert_eq!(alice["state"], "in_progress");
    assert_eq!(alice["severity"], "critical");
    assert!(alice["tags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("vip")));
    assert_eq!(verdict(alice, "203.0.113.45"), "malicious");
    // The second event's IP was added to the open case and enriched there.
    assert_eq!(verdict(alice, "198.51.100.66"), "malicious");
    let assignee = alice["assignee"].as_str().expect("assigned");
    assert!(
        [
            "dana.analyst@acme.example",
            "eli.analyst@acme.example",
            "fay.analyst@acme.example"
        ]
        .contains(&assignee),
        "{assignee}"
    );
    assert!(alice["sla"]["due_at"].is_string());

    // A ThreatInsight event with only an IP, unknown to every source: left for a person.
    let ip_case = case_with(&out, "ip", "45.33.32.156");
    assert_eq!(ip_case.len(), 1);
    assert_eq!(ip_case[0]["state"], "new");
    assert_eq!(verdict(ip_case[0], "45.33.32.156"), "unknown");
    let comments = ip_case[0]["comments"].as_array().unwrap();
    assert!(comments.iter().any(|c| c["text"]
        .as_str()
        .unwrap_or("")
        .contains("a person needs to look")));

    // Stakeholders hear about the VIP; the assignee hears about the assignment.
    let notes = out["notifications"].as_array().unwrap();
    assert!(notes
        .iter()
        .any(|n| n["subject"].as_str().unwrap().starts_with("VIP alert")
            && n["to"]
                .as_array()
                .unwrap()
                .contains(&Value::from("ciso@acme.example"))));
    assert!(notes.iter().any(
        |n| n["to"].as_array().unwrap().contains(&Value::from(assignee))
            && n["subject"].as_str().unwrap().contains("assigned to")
    ));

    // The successful login opened nothing.
    assert!(case_with(&out, "user", "carol@acme.example").is_empty());
}

#[test]
fn assignment_is_reproducible_with_a_seed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = run_iam(a.path(), &[]);
    let second = run_iam(b.path(), &[]);
    let who = |out: &Value| case_with(out, "user", "alice.ceo@acme.example")[0]["assignee"].clone();
    assert_eq!(who(&first), who(&second));
}

#[test]
fn the_official_okta_samples_go_through_the_iam_playbooks() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = repo().join("../shared/fixtures/okta");
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let out = run_iam(dir.path(), &["--event", path.to_str().unwrap()]);
        for r in out["runs"].as_array().unwrap() {
            assert_eq!(r["status"], "succeeded", "{}: {r:#}", path.display());
        }
    }
}

/// An Okta System Log event for `user` from `ip`, as `--event` takes it.
fn okta_event(uuid: &str, event_type: &str, user: &str, ip: &str) -> Value {
    serde_json::json!({
        "uuid": uuid,
        "published": "2026-11-27T10:00:00.000Z",
        "eventType": event_type,
        "displayMessage": "test event",
        "actor": { "id": "00u1carolexample001", "type": "User", "alternateId": user },
        "client": { "ipAddress": ip },
        "outcome": { "result": "FAILURE", "reason": "INVALID_CREDENTIALS" }
    })
}

#[test]
fn a_new_malicious_ip_on_an_open_case_is_enriched_and_escalates_it() {
    let dir = tempfile::tempdir().unwrap();
    let events = tempfile::tempdir().unwrap();
    let write = |name: &str, v: Value| {
        let p = events.path().join(name);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        p.to_str().unwrap().to_string()
    };
    // First: a non-VIP user from an address no source knows. The case stays new.
    let first = write(
        "first.json",
        okta_event(
            "u-1",
            "user.account.lock",
            "carol@acme.example",
            "45.33.32.156",
        ),
    );
    let out = run_iam(dir.path(), &["--event", &first]);
    let carol = case_with(&out, "user", "carol@acme.example");
    assert_eq!(carol.len(), 1);
    assert_eq!(carol[0]["state"], "new");
    assert_eq!(carol[0]["severity"], "medium");
    let id = carol[0]["id"].clone();

    // Second: the same user from a blocklisted address. Same case, the new IP gets its
    // verdict, the case is raised and moved to in_progress, and so assigned.
    let second = write(
        "second.json",
        okta_event(
            "u-2",
            "user.session.start",
            "carol@acme.example",
            "203.0.113.9",
        ),
    );
    let out = run_iam(dir.path(), &["--event", &second]);
    let carol = case_with(&out, "user", "carol@acme.example");
    assert_eq!(carol.len(), 1, "{:#?}", out["cases"]);
    let carol = carol[0];
    assert_eq!(carol["id"], id, "the open case is updated, not a new one");
    assert_eq!(verdict(carol, "203.0.113.9"), "malicious");
    assert_eq!(verdict(carol, "45.33.32.156"), "unknown");
    assert_eq!(carol["severity"], "high");
    assert_eq!(carol["state"], "in_progress");
    assert!(carol["assignee"].is_string(), "{carol:#}");
    assert!(carol["tags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("malicious-ip")));
    let runs = out["runs"].as_array().unwrap();
    assert!(runs.iter().any(|r| r["playbook"] == "iam-state-changed"));
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:#?}");
}
