//! Notifications: the engine's durable outbox of messages to people and channels, and the
//! delivery state of each message on each network channel.
//!
//! Data flow: the `notify` step [`Outbox::push`]es a [`Notification`]; with a data directory
//! it is appended to `notifications.jsonl` and synced before the step succeeds, so a
//! notification is never lost once its step has finished. The step then tries the network
//! channels (Slack, webhook, ...) and records each attempt's outcome as a [`Delivery`] with
//! [`Outbox::record`] (appended to `deliveries.jsonl`, the latest record per notification
//! and channel wins). Anything not yet delivered is listed by [`Outbox::pending`], which the
//! steps crate's `deliver_pending` works through later (`engine serve` is to call it
//! periodically). Both files are append-only JSON lines, re-read on every `pending`, so one
//! process can deliver what another queued; a line torn by a crash is skipped.
//!
//! Delivery is at least once: a crash between sending and recording sends again, which is
//! why webhooks carry the notification id as `Idempotency-Key`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::de::DeserializeOwned;
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

/// Where a notification stands on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// The channel accepted it; never sent again.
    Delivered,
    /// Not delivered yet (outage, 5xx, 429, network): tried again by a later pass.
    Failed,
    /// The channel refused it for good (a 4xx other than 429, a revoked webhook): a person
    /// has to look; not tried again.
    Rejected,
}

/// The outcome of the latest delivery attempt of one notification on one channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// The notification id.
    pub id: String,
    pub channel: String,
    pub status: DeliveryStatus,
    /// When this was recorded (RFC 3339).
    pub at: String,
    /// Requests sent on this channel so far, over all passes.
    pub attempts: u32,
    /// Why it failed; never holds a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Do not try again before this (Unix milliseconds): a 429's `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
}

/// A notification still owed to one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub notification: Notification,
    pub channel: String,
    /// The last attempt, if there was one.
    pub last: Option<Delivery>,
}

#[derive(Debug, Default)]
struct State {
    /// Ids known to be in the outbox (loaded from the file on first use).
    ids: Option<HashSet<String>>,
    /// In memory only: every notification and delivery record.
    notifications: Vec<Notification>,
    deliveries: Vec<Delivery>,
    /// (id, channel) being delivered by this process right now.
    in_flight: HashSet<(String, String)>,
}

/// The outbox: JSON-lines files (optional) and what this process has sent.
#[derive(Debug, Default)]
pub struct Outbox {
    dir: Option<PathBuf>,
    sent: Mutex<Vec<Notification>>,
    state: Mutex<State>,
    /// The `console` channel records without printing (`engine test` reads [`Outbox::sent`]).
    quiet: bool,
}

const NOTIFICATIONS: &str = "notifications.jsonl";
const DELIVERIES: &str = "deliveries.jsonl";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn append_line<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    // After a crash mid-write the file ends in half a line: start a fresh one, so only
    // the torn record is lost and not this one too.
    if f.metadata()?.len() > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::End(-1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
    }
    f.write_all(&line)?;
    f.sync_data()
}

/// Every parseable line of a JSON-lines file; a missing file is empty. A line that does
/// not parse (torn by a crash mid-write) is skipped.
fn read_lines<T: DeserializeOwned>(path: &Path) -> std::io::Result<Vec<T>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(v) => out.push(v),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping a bad outbox line")
            }
        }
    }
    Ok(out)
}

/// The latest record per (id, channel).
fn latest(records: Vec<Delivery>) -> HashMap<(String, String), Delivery> {
    let mut map = HashMap::new();
    for d in records {
        map.insert((d.id.clone(), d.channel.clone()), d);
    }
    map
}

impl Outbox {
    /// An outbox kept in memory only (tests, embedding).
    pub fn in_memory() -> Self {
        Outbox::default()
    }

    /// An outbox in `dir`: `notifications.jsonl` and `deliveries.jsonl`.
    pub fn in_dir(dir: &Path) -> Self {
        Outbox {
            dir: Some(dir.to_path_buf()),
            ..Outbox::default()
        }
    }

    /// The `console` channel is delivered by recording only, not printed: for `engine test`,
    /// whose output is the test report.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Whether the `console` channel prints to the terminal.
    pub fn prints_console(&self) -> bool {
        !self.quiet
    }

    fn file(&self, name: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(name))
    }

    /// Append and sync. A notification whose id is already in the outbox (sent by this or
    /// an earlier process) is not recorded again: `Ok(false)`.
    pub fn push(&self, n: Notification) -> std::io::Result<bool> {
        let mut state = lock(&self.state);
        if state.ids.is_none() {
            let ids = match self.file(NOTIFICATIONS) {
                Some(path) => read_lines::<Notification>(&path)?
                    .into_iter()
                    .map(|n| n.id)
                    .collect(),
                None => HashSet::new(),
            };
            state.ids = Some(ids);
        }
        if state.ids.as_ref().is_some_and(|ids| ids.contains(&n.id)) {
            return Ok(false);
        }
        match self.file(NOTIFICATIONS) {
            Some(path) => append_line(&path, &n)?,
            None => state.notifications.push(n.clone()),
        }
        if let Some(ids) = state.ids.as_mut() {
            ids.insert(n.id.clone());
        }
        lock(&self.sent).push(n);
        Ok(true)
    }

    /// What this process has sent, in order.
    pub fn sent(&self) -> Vec<Notification> {
        lock(&self.sent).clone()
    }

    /// Record the outcome of a delivery attempt (appended and synced).
    pub fn record(&self, d: Delivery) -> std::io::Result<()> {
        match self.file(DELIVERIES) {
            Some(path) => {
                let _state = lock(&self.state);
                append_line(&path, &d)
            }
            None => {
                lock(&self.state).deliveries.push(d);
                Ok(())
            }
        }
    }

    /// Every notification in the outbox, oldest first.
    pub fn notifications(&self) -> std::io::Result<Vec<Notification>> {
        match self.file(NOTIFICATIONS) {
            Some(path) => read_lines(&path),
            None => Ok(lock(&self.state).notifications.clone()),
        }
    }

    /// The latest delivery record of every (notification, channel) pair tried so far.
    pub fn deliveries(&self) -> std::io::Result<Vec<Delivery>> {
        let records = match self.file(DELIVERIES) {
            Some(path) => read_lines(&path)?,
            None => lock(&self.state).deliveries.clone(),
        };
        let mut out: Vec<Delivery> = latest(records).into_values().collect();
        out.sort_by(|a, b| (&a.id, &a.channel).cmp(&(&b.id, &b.channel)));
        Ok(out)
    }

    /// The latest delivery record of one notification on one channel.
    pub fn delivery(&self, id: &str, channel: &str) -> std::io::Result<Option<Delivery>> {
        Ok(self
            .deliveries()?
            .into_iter()
            .find(|d| d.id == id && d.channel == channel))
    }

    /// Every (notification, channel) not yet delivered or rejected, oldest notification
    /// first, over the channels for which `deliverable` is true (the network channels; the
    /// outbox knows no channel by itself).
    pub fn pending(&self, deliverable: impl Fn(&str) -> bool) -> std::io::Result<Vec<Pending>> {
        let notifications = self.notifications()?;
        let records = match self.file(DELIVERIES) {
            Some(path) => read_lines(&path)?,
            None => lock(&self.state).deliveries.clone(),
        };
        let mut last = latest(records);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for n in notifications {
            if !seen.insert(n.id.clone()) {
                continue;
            }
            for channel in n.channels.iter().filter(|c| deliverable(c)) {
                let prev = last.remove(&(n.id.clone(), channel.clone()));
                let done = prev.as_ref().is_some_and(|d| {
                    matches!(
                        d.status,
                        DeliveryStatus::Delivered | DeliveryStatus::Rejected
                    )
                });
                if !done {
                    out.push(Pending {
                        notification: n.clone(),
                        channel: channel.clone(),
                        last: prev,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Mark (id, channel) as being delivered by this process; `None` when it already is
    /// (a step and a background pass racing), so the same process never sends it twice at
    /// once. The mark goes when the claim is dropped.
    pub fn claim(&self, id: &str, channel: &str) -> Option<Claim<'_>> {
        let key = (id.to_string(), channel.to_string());
        // Decided under the lock, built after it: a refused claim is dropped, and its
        // `Drop` takes the lock.
        let free = lock(&self.state).in_flight.insert(key.clone());
        free.then(|| Claim { outbox: self, key })
    }
}

/// A delivery in progress; see [`Outbox::claim`].
#[derive(Debug)]
pub struct Claim<'a> {
    outbox: &'a Outbox,
    key: (String, String),
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.outbox.state).in_flight.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(id: &str, channels: &[&str]) -> Notification {
        Notification {
            id: id.into(),
            at: "2026-01-01T00:00:00Z".into(),
            to: vec!["a@example.com".into()],
            subject: "s".into(),
            message: "m".into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            case: None,
            run_id: "r".into(),
            playbook: "p".into(),
            step: "s".into(),
        }
    }

    fn rec(id: &str, channel: &str, status: DeliveryStatus) -> Delivery {
        Delivery {
            id: id.into(),
            channel: channel.into(),
            status,
            at: "2026-01-01T00:00:01Z".into(),
            attempts: 1,
            error: None,
            not_before_ms: None,
        }
    }

    fn check_pending(outbox: &Outbox) {
        assert!(outbox
            .push(note("n1", &["console", "slack", "webhook"]))
            .unwrap());
        assert!(outbox.push(note("n2", &["slack"])).unwrap());
        assert!(!outbox.push(note("n1", &["slack"])).unwrap());
        let net = |c: &str| c == "slack" || c == "webhook";
        assert_eq!(outbox.pending(net).unwrap().len(), 3);
        outbox
            .record(rec("n1", "slack", DeliveryStatus::Failed))
            .unwrap();
        outbox
            .record(rec("n1", "webhook", DeliveryStatus::Rejected))
            .unwrap();
        outbox
            .record(rec("n2", "slack", DeliveryStatus::Failed))
            .unwrap();
        outbox
            .record(rec("n2", "slack", DeliveryStatus::Delivered))
            .unwrap();
        let p = outbox.pending(net).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].notification.id.as_str(), p[0].channel.as_str()),
            ("n1", "slack")
        );
        assert_eq!(
            p[0].last.as_ref().map(|d| d.status),
            Some(DeliveryStatus::Failed)
        );
    }

    #[test]
    fn pending_lists_what_is_neither_delivered_nor_rejected() {
        check_pending(&Outbox::in_memory());
        let dir = tempfile::tempdir().unwrap();
        check_pending(&Outbox::in_dir(dir.path()));
    }

    #[test]
    fn a_later_process_sees_the_files_and_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let first = Outbox::in_dir(dir.path());
        first.push(note("n1", &["slack"])).unwrap();
        // A crash mid-write leaves half a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(NOTIFICATIONS))
            .unwrap();
        f.write_all(b"{\"id\":\"n2\",\"at").unwrap();
        drop(f);
        let second = Outbox::in_dir(dir.path());
        assert!(
            !second.push(note("n1", &["slack"])).unwrap(),
            "already queued"
        );
        assert!(second.push(note("n3", &["slack"])).unwrap());
        let p = second.pending(|c| c == "slack").unwrap();
        let ids: Vec<&str> = p.iter().map(|p| p.notification.id.as_str()).collect();
        assert_eq!(ids, ["n1", "n3"]);
        // What this process sent, not what the file holds.
        let sent: Vec<String> = second.sent().into_iter().map(|n| n.id).collect();
        assert_eq!(sent, ["n3"]);
    }

    #[test]
    fn a_claim_is_exclusive_until_dropped() {
        let o = Outbox::in_memory();
        let c = o.claim("n1", "slack");
        assert!(c.is_some());
        assert!(o.claim("n1", "slack").is_none());
        assert!(o.claim("n1", "webhook").is_some());
        drop(c);
        assert!(o.claim("n1", "slack").is_some());
    }
}
