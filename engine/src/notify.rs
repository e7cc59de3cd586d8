//! Notifications: the engine's append-only outbox of messages to people and channels.
//!
//! The `notify` step appends here; `engine run` prints what was sent and includes it in
//! `--json`. The outbox is a JSON-lines file in the data directory, written and synced
//! before the step succeeds, so a notification is never lost once its step has finished;
//! channels that deliver over the network read it from there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Notification {
    /// Unique and stable across retries of the step that sent it.
    pub id: String,
    pub at: String,
    pub to: Vec<String>,
    pub subject: String,
    pub message: String,
    /// Where it goes: `console`, `outbox`, `slack`, `webhook`, ...
    pub channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    pub run_id: String,
    pub playbook: String,
    pub step: String,
}

/// The outbox: a JSON-lines file (optional) and what this process has sent.
#[derive(Debug, Default)]
pub struct Outbox {
    path: Option<PathBuf>,
    sent: Mutex<Vec<Notification>>,
}

impl Outbox {
    /// An outbox kept in memory only (tests, embedding).
    pub fn in_memory() -> Self {
        Outbox::default()
    }

    /// An outbox appending to `dir/notifications.jsonl`.
    pub fn in_dir(dir: &Path) -> Self {
        Outbox {
            path: Some(dir.join("notifications.jsonl")),
            sent: Mutex::new(Vec::new()),
        }
    }

    /// Append and sync. A notification whose id was already sent by this process is
    /// recorded once.
    pub fn push(&self, n: Notification) -> std::io::Result<bool> {
        let mut sent = match self.sent.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if sent.iter().any(|s| s.id == n.id) {
            return Ok(false);
        }
        if let Some(path) = &self.path {
            let mut line = serde_json::to_vec(&n).map_err(std::io::Error::other)?;
            line.push(b'\n');
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            f.write_all(&line)?;
            f.sync_data()?;
        }
        sent.push(n);
        Ok(true)
    }

    /// What this process has sent, in order.
    pub fn sent(&self) -> Vec<Notification> {
        match self.sent.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}
