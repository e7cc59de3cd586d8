//! The CLI on a damaged data dir: exit 1 with an error naming the dir and what to do,
//! for every command that opens the store; nothing printed as if the store were empty.

use std::path::Path;
use std::process::{Command, Output};

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

fn damage(data: &Path, remove_snapshots: bool) {
    if remove_snapshots {
        for e in std::fs::read_dir(data).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with("snap.") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(data.join("db"))
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
}

#[test]
fn every_command_refuses_a_damaged_store_with_exit_1() {
    for remove_snapshots in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = engine(
            &["run", "playbooks/iam.yaml", "--json", "--seed", "1"],
            &data,
        );
        assert_eq!(
            first.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        damage(&data, remove_snapshots);
        for args in [
            &["cases", "list"][..],
            &["cases", "list", "--json"],
            &["store", "check"],
            &["run", "playbooks/iam.yaml", "--json"],
        ] {
            let o = engine(args, &data);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains(&data.display().to_string()), "{args:?}: {err}");
            assert!(err.contains("restore the data dir"), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert!(
                o.stdout.is_empty(),
                "{args:?}: printed {}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
    }
}
