//! The real `engine` binary: commands, exit codes, event input, output formats.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn engine() -> Command {
    Command::new(env!("CARGO_BIN_EXE_engine"))
}

/// Run the binary; `engine run` gets a fresh data dir unless the test gives one.
fn run(args: &[&str]) -> Output {
    let mut cmd = engine();
    cmd.args(args);
    if args.first() == Some(&"run") && !args.contains(&"--data-dir") {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        cmd.arg("--data-dir").arg(dir);
    }
    cmd.output().expect("engine binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn okta_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/okta")
}

/// A playbook that extracts the fields an IAM playbook reads, tolerating nulls.
const EXTRACT: &str = r#"
playbook: extract
on: { event: okta }
steps:
  - id: facts
    uses: set
    with:
      type: "{{ event.eventType }}"
      user: "{{ event | dig('actor.alternateId') if (event | dig('actor.type')) == 'User' else none }}"
      ip: "{{ event | dig('client.ipAddress') }}"
output: "{{ steps.facts }}"
"#;

fn workspace(playbook: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p.yaml"), playbook).expect("write playbook");
    dir
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(run(&["run"]).status.code(), Some(2));
    assert_eq!(
        run(&["graph", "x.yaml", "--format", "png"]).status.code(),
        Some(2)
    );
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("validate"));
}

#[test]
fn official_okta_samples_run_without_error() {
    let dir = workspace(EXTRACT);
    let mut seen = 0;
    for entry in std::fs::read_dir(okta_fixtures()).expect("shared fixtures are present") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let o = run(&[
            "run",
            dir.path().join("p.yaml").to_str().unwrap(),
            "--event",
            path.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            stderr(&o)
        );
        let out: Value = serde_json::from_str(&stdout(&o)).expect("--json prints JSON");
        let runs = out["runs"].as_array().unwrap();
        assert!(!runs.is_empty(), "{}", path.display());
        for r in runs {
            assert_eq!(r["status"], "succeeded", "{}: {r}", path.display());
            assert!(r["output"]["type"].is_string());
        }
        seen += 1;
    }
    assert!(seen >= 6, "expected the six official samples, saw {seen}");
}

#[test]
fn an_event_hook_body_is_split_into_its_events() {
    let dir = workspace(EXTRACT);
    let hook = okta_fixtures().join("okta-docs-event-hook-delivery-user.session.start.json");
    let o = run(&[
        "run",
        dir.path().join("p.yaml").to_str().unwrap(),
        "--event",
        hook.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let runs = out["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["output"]["type"], "user.session.start");
    assert_eq!(runs[0]["output"]["user"], "admin@okta.com");
    assert_eq!(runs[0]["output"]["ip"], "142.126.158.61");
}

#[test]
fn events_can_come_from_stdin() {
    let dir = workspace(EXTRACT);
    let mut child = engine()
        .args([
            "run",
            dir.path().join("p.yaml").to_str().unwrap(),
            "--event",
            "-",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"[{"eventType": "a", "actor": null, "client": null}, {"eventType": "b"}]"#)
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(out["runs"].as_array().unwrap().len(), 2);
    assert_eq!(out["runs"][0]["output"]["user"], Value::Null);
    assert!(out["cases"].is_array() && out["notifications"].is_array());
}

#[test]
fn malformed_event_files_get_a_clear_error() {
    let dir = workspace(EXTRACT);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let o = run(&[
        "run",
        dir.path().join("p.yaml").to_str().unwrap(),
        "--event",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.json` is not JSON"),
        "{}",
        stderr(&o)
    );

    std::fs::write(&bad, "[1, 2]").unwrap();
    let o = run(&[
        "run",
        dir.path().join("p.yaml").to_str().unwrap(),
        "--event",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("event 0 is not a JSON object"),
        "{}",
        stderr(&o)
    );

    let o = run(&[
        "run",
        dir.path().join("p.yaml").to_str().unwrap(),
        "--event",
        "/nonexistent/e.json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn without_events_or_samples_run_says_what_to_do() {
    let dir = workspace(EXTRACT);
    let o = run(&["run", dir.path().join("p.yaml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--event"), "{}", stderr(&o));
}

#[test]
fn sample_events_next_to_the_playbooks_are_used_by_default() {
    let dir = workspace(EXTRACT);
    std::fs::create_dir(dir.path().join("samples")).unwrap();
    std::fs::write(
        dir.path().join("samples/one.json"),
        r#"{"eventType": "x", "actor": {"type": "User", "alternateId": "a@b.c"}}"#,
    )
    .unwrap();
    let o = run(&["run", dir.path().join("p.yaml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("event one.json"), "{s}");
    assert!(s.contains("run extract"), "{s}");
    assert!(s.contains("1 event(s), 1 run(s), 0 failed"), "{s}");
}

#[test]
fn a_failed_run_exits_1() {
    let dir = workspace(
        r#"
playbook: strict
on: { event: okta }
steps:
  - id: a
    uses: log
    with: { message: "{{ event.actor.alternateId }}" }
"#,
    );
    let ev = dir.path().join("e.json");
    std::fs::write(&ev, r#"{"eventType": "x"}"#).unwrap();
    let o = run(&[
        "run",
        dir.path().join("p.yaml").to_str().unwrap(),
        "--event",
        ev.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("failed"), "{}", stdout(&o));
}

#[test]
fn invalid_playbooks_exit_1_with_located_errors() {
    let dir = workspace("playbook: x\non: { event: okta }\nsteps:\n  - id: a\n    uses: lgo\n");
    let o = run(&["validate", dir.path().join("p.yaml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("p.yaml:5:11: error[E020]: unknown step type `lgo`"),
        "{e}"
    );
    assert!(e.contains("did you mean `log`?"), "{e}");
    // `run` refuses to start on an invalid playbook, with the same errors.
    let o = run(&["run", dir.path().join("p.yaml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error[E020]"));
}

#[test]
fn graph_prints_mermaid_and_dot() {
    let dir = workspace(EXTRACT);
    let p = dir.path().join("p.yaml");
    let o = run(&["graph", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("flowchart TD"));
    let o = run(&[
        "graph",
        p.to_str().unwrap(),
        "--format",
        "dot",
        "--playbook",
        "extract",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("digraph \"extract\""));
    let o = run(&["graph", p.to_str().unwrap(), "--playbook", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no playbook `nope`"));
}

#[test]
fn schema_describes_the_format_and_every_step_type() {
    let o = run(&["schema"]);
    assert_eq!(o.status.code(), Some(0));
    let schema: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let props = &schema["properties"];
    for key in [
        "playbook",
        "description",
        "on",
        "concurrency",
        "vars",
        "steps",
        "output",
    ] {
        assert!(props.get(key).is_some(), "schema lacks `{key}`");
    }
    let step = &schema["$defs"]["RawStep"];
    let uses: Vec<&str> = step["properties"]["uses"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let registry = caseflow::builtin_registry();
    for name in registry.names() {
        assert!(uses.contains(&name), "schema lacks step `{name}`");
    }
    assert_eq!(
        step["allOf"].as_array().unwrap().len(),
        registry.names().count()
    );
}

#[test]
fn steps_lists_every_step_with_an_example() {
    let o = run(&["steps"]);
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    for name in caseflow::builtin_registry().names() {
        assert!(s.contains(name), "{name} missing from `engine steps`");
    }
    let o = run(&["steps", "--json"]);
    let specs: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(specs
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["example"].is_object()));
}

/// Every step's documented example is valid: it fits the input schema, and a playbook using
/// it compiles.
#[test]
fn every_step_example_is_valid() {
    let registry = caseflow::builtin_registry();
    for spec in registry.specs() {
        engine::validate::inputs::fits(&spec.input_schema, &spec.example)
            .unwrap_or_else(|e| panic!("example of `{}` does not fit: {e}", spec.name));
        // Examples refer to earlier steps and vars the way a playbook would: give them some.
        let text = spec.example.to_string();
        let names = |prefix: &str| -> std::collections::BTreeSet<String> {
            text.match_indices(prefix)
                .map(|(i, _)| {
                    text[i + prefix.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect()
                })
                .collect()
        };
        let mut steps: Vec<Value> = names("steps.")
            .into_iter()
            .map(|id| serde_json::json!({"id": id, "uses": "set", "with": {"x": 1}}))
            .collect();
        steps.push(serde_json::json!({"id": "example", "uses": spec.name, "with": spec.example}));
        let vars: serde_json::Map<String, Value> = names("vars.")
            .into_iter()
            .map(|v| (v, Value::from("x")))
            .collect();
        let doc = serde_json::json!({
            "playbook": "example",
            "on": {"event": "okta"},
            "vars": vars,
            "steps": steps,
        });
        let yaml = serde_json::to_string(&doc).unwrap();
        let src = engine::load::parse_source(Path::new("example.yaml"), yaml.into_bytes()).unwrap();
        if let Err(ds) = engine::compile::compile_sources(&[src], &registry) {
            panic!(
                "example of `{}` is invalid: {}",
                spec.name,
                ds.iter().map(|d| d.to_string()).collect::<String>()
            );
        }
    }
}

#[test]
fn store_check_reports_a_consistent_store_and_refuses_a_missing_one() {
    let dir = workspace(EXTRACT);
    let data = dir.path().join("data");
    let o = run(&[
        "run",
        dir.path().join("p.yaml").to_str().unwrap(),
        "--event",
        okta_fixtures()
            .join("okta-docs-logevent-user.lifecycle.deactivate.json")
            .to_str()
            .unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&["store", "check", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("is consistent"));
    let o = run(&[
        "store",
        "check",
        "--data-dir",
        dir.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no store at"));
}

#[test]
fn a_bad_config_stops_run_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("caseflow.yaml");
    std::fs::write(
        &config,
        "sla: { high: tomorrow, urgent: 1h }\nteams: { soc: dana@acme.example }\n\
         okta: { url: 'https://acme.okta.com' }\nnotify: { channels: [pager] }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = engine()
        .current_dir(repo)
        .args(["run", "playbooks/iam.yaml", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for expected in [
        "config `sla.high`: `tomorrow` is not a duration",
        "config `sla.urgent`: unknown severity",
        "config `teams.soc`: expected a list of people",
        "unknown channel `pager`",
        "`okta.url` is set but `okta.token` is not",
        "4 problem(s) in the config; nothing was run",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    assert!(err.contains(&config.display().to_string()), "{err}");
    assert!(!data.exists(), "nothing was opened or stored");
}
