//! The PostgreSQL server of the tests that need one (`engine/tests/store_*.rs`,
//! `tests/serve_postgres.rs`): `CASEFLOW_TEST_DATABASE_URL` when set; otherwise the local
//! server of `.ci/postgres.sh`, which this starts (installing Debian's `postgresql` when
//! missing) the first time a test asks and nothing answers on 127.0.0.1:5432, so the
//! README's `cargo test --workspace` needs no step before it. Concurrent test binaries
//! take turns with `flock`. When the script cannot run (no root, no sudo, no apt) the
//! tests fail and say how to point them at a server: never a skip.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The database `.ci/postgres.sh` creates.
pub const DEFAULT_URL: &str = "postgres://caseflow:caseflow@127.0.0.1:5432/caseflow_test";

/// The URL of the test database, the local server started when needed.
pub fn test_url() -> String {
    if let Some(url) = std::env::var("CASEFLOW_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        return url;
    }
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(start_local_server);
    DEFAULT_URL.to_string()
}

fn answers() -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], 5432));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Runs `.ci/postgres.sh` unless a server answers; its failure is reported on stderr and
/// the test's connection then fails with the usual instructions.
fn start_local_server() {
    if answers() {
        return;
    }
    let Some(script) = script() else {
        eprintln!(
            "pg_server: .ci/postgres.sh not found above {}",
            env!("CARGO_MANIFEST_DIR")
        );
        return;
    };
    eprintln!(
        "pg_server: no PostgreSQL on 127.0.0.1:5432, running {}",
        script.display()
    );
    let status = Command::new("flock")
        .arg("/tmp/caseflow-test-postgres.lock")
        .arg("bash")
        .arg(&script)
        .stdout(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("pg_server: {} exited with {s}", script.display()),
        Err(e) => eprintln!("pg_server: cannot run {}: {e}", script.display()),
    }
}

fn script() -> Option<PathBuf> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|d| d.join(".ci/postgres.sh"))
        .find(|p| p.is_file())
}
