//! The engine under test: this binary started as `engine serve` on the scenario's state,
//! with the IAM playbooks and a config pointing at the stand-ins.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The IAM playbooks, as shipped.
pub const IAM_PLAYBOOKS: &str = include_str!("../../playbooks/iam.yaml");
/// The Okta hook secret the bench's deliveries carry.
pub const HOOK_SECRET: &str = "Basic YmVuY2g6YmVuY2gtaG9vay1zZWNyZXQ=";

/// A running `engine serve`.
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
    pub data: PathBuf,
    stderr: Arc<Mutex<String>>,
}

/// Write the playbooks and `config` (JSON, which is YAML) under `dir` and start the server
/// on `dir/data`.
pub fn start(exe: &Path, dir: &Path, config: &Value) -> Result<Served, String> {
    start_on(exe, dir, &dir.join("data"), config)
}

/// Like [`start`], with the state in `data`.
pub fn start_on(exe: &Path, dir: &Path, data: &Path, config: &Value) -> Result<Served, String> {
    let playbooks = dir.join("iam.yaml");
    std::fs::write(&playbooks, IAM_PLAYBOOKS).map_err(|e| format!("write playbooks: {e}"))?;
    let config_path = dir.join("config.yaml");
    std::fs::write(
        &config_path,
        serde_json::to_string_pretty(config).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("write config: {e}"))?;
    let data = data.to_path_buf();
    let mut child = Command::new(exe)
        .arg("serve")
        .arg(&playbooks)
        .args(["--listen", "127.0.0.1:0", "--seed", "1"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&config_path)
        .env("CASEFLOW_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `engine serve`: {e}"))?;
    let stderr = Arc::new(Mutex::new(String::new()));
    if let Some(mut pipe) = child.stderr.take() {
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = crate::bench::lock(&sink);
                // Keep the last 64 KiB: enough to say why it failed.
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                if s.len() > 65536 {
                    let cut = s.len() - 65536;
                    let cut = (cut..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(0);
                    s.drain(..cut);
                }
            }
        });
    }
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Drain the rest so the child never blocks on a full pipe.
        for _ in lines {}
    });
    // A 1M-case store is verified at open: allow for it.
    let line = match rx.recv_timeout(Duration::from_secs(600)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`engine serve` did not start: {}",
                crate::bench::lock(&stderr).trim()
            ));
        }
    };
    let addr = line
        .strip_prefix("listening on http://")
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| format!("unexpected first line from `engine serve`: `{line}`"))?;
    Ok(Served {
        child,
        addr,
        data,
        stderr,
    })
}

impl Served {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server printed on stderr so far (its last 64 KiB).
    pub fn stderr(&self) -> String {
        crate::bench::lock(&self.stderr).clone()
    }

    /// SIGTERM, then wait for the orderly stop (the store is flushed and unlocked).
    pub fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "`engine serve` exited with {status}: {}",
                        self.stderr().trim()
                    ))
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    return Err("`engine serve` did not stop within 120 s of SIGTERM".into());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("waiting for `engine serve`: {e}")),
            }
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The engine's config for a scenario: the stand-ins, the hook secret, strict durability
/// and the store options.
pub fn config(standins: Value, cache_mb: Option<u64>, verify_on_open: bool) -> Value {
    let mut c = standins;
    c["okta"]["hook_secret"] = Value::String(HOOK_SECRET.into());
    c["durability"] = Value::String("strict".into());
    let mut store = serde_json::json!({"verify_on_open": verify_on_open});
    if let Some(mb) = cache_mb {
        store["cache_mb"] = mb.into();
    }
    c["store"] = store;
    c
}

/// The server's store counters from `/metrics` (`caseflow_store_commits_total`,
/// `caseflow_store_flushes_total`): how many writes a workload costs and how well they
/// share flushes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StoreCounters {
    pub commits: f64,
    pub flushes: f64,
    /// Seconds spent flushing (one flush at a time: near the elapsed time, the disk is
    /// what the workload waits for).
    pub flush_seconds: f64,
}

impl StoreCounters {
    /// Read from a Prometheus text exposition; a counter that is not there reads 0.
    pub fn parse(text: &str) -> Self {
        let value = |name: &str| {
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(m, _)| *m == name)
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        StoreCounters {
            commits: value("caseflow_store_commits_total"),
            flushes: value("caseflow_store_flushes_total"),
            flush_seconds: value("caseflow_store_flush_seconds_total"),
        }
    }

    /// What was counted after `earlier`.
    pub fn since(&self, earlier: &StoreCounters) -> Self {
        StoreCounters {
            commits: self.commits - earlier.commits,
            flushes: self.flushes - earlier.flushes,
            flush_seconds: self.flush_seconds - earlier.flush_seconds,
        }
    }
}

/// `GET /metrics` on the server at `addr`, its store counters.
pub async fn store_counters(addr: SocketAddr) -> Result<StoreCounters, String> {
    let answer = super::client::Conn::new(addr)
        .get("/metrics")
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    if answer.status != 200 {
        return Err(format!("GET /metrics answered {}", answer.status));
    }
    Ok(StoreCounters::parse(&String::from_utf8_lossy(&answer.body)))
}

#[cfg(test)]
mod tests {
    use super::StoreCounters;

    #[test]
    fn store_counters_are_read_from_the_exposition() {
        let text = "# HELP caseflow_store_commits_total store writes committed\n\
                    # TYPE caseflow_store_commits_total counter\n\
                    caseflow_store_commits_total 1234\n\
                    caseflow_store_commits_total_created 1.7e9\n\
                    caseflow_store_flushes_total 56\n\
                    caseflow_store_flush_seconds_total 0.5\n";
        let c = StoreCounters::parse(text);
        assert_eq!(
            c,
            StoreCounters {
                commits: 1234.0,
                flushes: 56.0,
                flush_seconds: 0.5,
            }
        );
        let later = StoreCounters::parse(
            "caseflow_store_commits_total 1300\ncaseflow_store_flushes_total 60\n\
             caseflow_store_flush_seconds_total 0.75\n",
        );
        assert_eq!(
            later.since(&c),
            StoreCounters {
                commits: 66.0,
                flushes: 4.0,
                flush_seconds: 0.25,
            }
        );
        assert_eq!(StoreCounters::parse(""), StoreCounters::default());
    }
}
