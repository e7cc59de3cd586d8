//! A real `engine serve` child process for the integration tests: started from a command
//! the test builds (its playbooks, data dir or database, config and environment), ready
//! once it printed `listening on http://ADDR`, its stderr kept to explain a failure, and
//! killed when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The repository (playbooks, samples, `.ci/`).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `engine` in the repository, for `serve` and the other subcommands.
pub fn engine() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
    c.current_dir(repo());
    c
}

/// A running `engine serve`.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Spawns `cmd`, an `engine serve ... --listen 127.0.0.1:0` command, and waits (60 s at
    /// most) for the address it prints first.
    pub fn spawn(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("engine starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        let out = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "engine serve printed no address ({status:?}); stderr:\n{}",
                    stderr.lock().unwrap_or_else(|p| p.into_inner())
                );
            }
        };
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line `{line}`"))
            .to_string();
        Server {
            child,
            base,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL. True when the signal is what ended the process (it was still running).
    pub fn kill9(&mut self) -> bool {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for the killed child");
        status.signal() == Some(SIGKILL)
    }

    /// SIGTERM, then the exit code and stderr; fails the test after 30 s.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        // Sent directly, not through kill(1): a server is stopped the moment a supervisor
        // may stop it.
        #[cfg(target_os = "linux")]
        {
            let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
            // SAFETY: kill(2) with a pid this test spawned and has not yet waited for.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        }
        #[cfg(not(target_os = "linux"))]
        {
            let pid = self.child.id().to_string();
            let status = Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill runs");
            assert!(status.success());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for the child") {
                // The stderr thread catches up with the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return (s.code(), self.stderr());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "engine did not stop after SIGTERM; stderr: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

const SIGKILL: i32 = 9;

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("engine serve's stderr:\n{}", self.stderr());
        }
    }
}
