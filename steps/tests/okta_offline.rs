//! The Okta steps without `okta.url`: answers from the directory file, actions recorded.

#[path = "net_support.rs"]
mod support;

use engine::ErrorKind;
use serde_json::{json, Value};
use support::{err, ok, run_step};

const DIRECTORY: &str = "
groups:
  - { id: 00g1, name: Everyone }
  - { id: 00gEXEC, name: Executives }
users:
  - id: 00u1
    login: ceo@example.com
    groups: [00g1, 00gEXEC]
  - { id: 00u2, login: dev@example.com, groups: [Everyone] }
";

fn with_directory(text: &str, vip: &[&str]) -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("directory.yaml");
    std::fs::write(&path, text).expect("write directory");
    let config = json!({"okta": {"directory": path, "vip_groups": vip}});
    (dir, config)
}

#[tokio::test]
async fn a_known_user_gets_their_groups_and_vip_status() {
    let (_dir, config) = with_directory(DIRECTORY, &["00gEXEC"]);
    let step = run_step(
        "okta.user_groups",
        json!({"user": "CEO@example.com"}),
        config.clone(),
    )
    .await;
    assert_eq!(
        ok(&step),
        &json!({
            "user": "CEO@example.com",
            "groups": [{"id": "00g1", "name": "Everyone"}, {"id": "00gEXEC", "name": "Executives"}],
            "is_vip": true,
            "vip_groups": ["Executives"],
            "offline": true,
        })
    );
    let dev = run_step("okta.user_groups", json!({"user": "00u2"}), config).await;
    assert_eq!(ok(&dev)["is_vip"], false);
    assert_eq!(
        ok(&dev)["groups"],
        json!([{"id": "00g1", "name": "Everyone"}])
    );
}

#[tokio::test]
async fn an_unknown_user_has_no_groups() {
    let (_dir, config) = with_directory(DIRECTORY, &["00gEXEC"]);
    let step = run_step(
        "okta.user_groups",
        json!({"user": "nobody@example.com"}),
        config,
    )
    .await;
    let out = ok(&step);
    assert_eq!(out["groups"], json!([]));
    assert_eq!(out["is_vip"], false);
}

#[tokio::test]
async fn a_missing_directory_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nope.yaml");
    let config = json!({"okta": {"directory": path}});
    let step = run_step("okta.user_groups", json!({"user": "00u1"}), config).await;
    let e = err(&step);
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.message.starts_with(&format!(
            "okta directory `{}` could not be read",
            path.display()
        )),
        "{}",
        e.message
    );
    assert!(e.message.contains("okta.url"), "{}", e.message);
}

#[tokio::test]
async fn the_default_directory_is_used_without_config() {
    // Tests run in the crate directory, where no `playbooks/data/directory.yaml` exists.
    let step = run_step("okta.user_groups", json!({"user": "00u1"}), json!({})).await;
    assert!(
        err(&step).message.contains("playbooks/data/directory.yaml"),
        "{}",
        err(&step).message
    );
}

#[tokio::test]
async fn a_broken_directory_file_says_where() {
    let (_dir, config) = with_directory("users: [ {id: 00u1, groups: oops\n", &[]);
    let step = run_step("okta.user_groups", json!({"user": "00u1"}), config).await;
    let e = err(&step);
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("is invalid: "), "{}", e.message);

    let (_dir, config) = with_directory("user: []\n", &[]);
    let step = run_step("okta.user_groups", json!({"user": "00u1"}), config).await;
    assert!(
        err(&step).message.contains("unknown field `user`"),
        "{}",
        err(&step).message
    );
}

#[tokio::test]
async fn actions_are_recorded_offline() {
    let (_dir, config) = with_directory(DIRECTORY, &[]);
    let s = run_step("okta.suspend_user", json!({"user": "00u1"}), config.clone()).await;
    assert_eq!(
        ok(&s),
        &json!({"user": "00u1", "action": "suspend", "offline": true})
    );
    let c = run_step("okta.clear_sessions", json!({"user": "00u1"}), config).await;
    assert_eq!(
        ok(&c),
        &json!({"user": "00u1", "action": "clear_sessions", "offline": true, "oauth_tokens": false})
    );
}

#[tokio::test]
async fn an_empty_user_is_invalid_input() {
    let (_dir, config) = with_directory(DIRECTORY, &[]);
    let step = run_step("okta.user_groups", json!({"user": "  "}), config).await;
    assert_eq!(err(&step).kind, ErrorKind::InvalidInput);
}
