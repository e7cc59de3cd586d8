//! Notifications: the engine's durable outbox of messages to people and channels, and the
//! delivery state of each message on each network channel.
//!
//! Data flow: the `notify` step [`Outbox::push`]es a [`Notification`]; it is written to the
//! store ([`crate::persist::Notifications`]) and, under strict durability, on disk (sled
//! flush, PostgreSQL commit) before the step succeeds, so a notification is never lost once
//! its step has finished. The step then tries the network channels (Slack, webhook, ...)
//! and records each attempt's outcome as a [`Delivery`] with [`Outbox::record`] (the latest
//! record per notification and channel wins). Anything not yet delivered is listed by
//! [`Outbox::pending`], which the steps crate's `deliver_pending` works through later
//! (`engine serve` does so periodically). With PostgreSQL the outbox is shared: whichever
//! process's pass comes first delivers what any process queued, and [`Outbox::claim`]
//! keeps two processes (and two tasks of one) from sending the same one at once.
//!
//! Delivery is at least once: a crash between sending and recording sends again, which is
//! why webhooks carry the notification id as `Idempotency-Key`.
//!
//! Engines before store schema 5 kept the outbox in two JSON-lines files under the data
//! dir; [`Outbox::import_files`] moves them into the store once.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::persist::{MemoryStore, Store, StoreError};

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

/// Channels that are done once the notification is queued: `console` is printed by the
/// step that queues it, `outbox` is the queue itself. Every other channel is owed a
/// delivery until one is recorded as delivered or rejected.
pub const LOCAL_CHANNELS: [&str; 2] = ["console", "outbox"];

/// The outbox: notifications and their delivery records in a store, and what this process
/// has sent.
pub struct Outbox {
    store: Arc<dyn Store>,
    sent: Mutex<Vec<Notification>>,
    /// (id, channel) being delivered by this process right now.
    in_flight: Mutex<HashSet<(String, String)>>,
    /// Of those, the ones whose claim in the store is not yet released by a record.
    held: Mutex<HashSet<(String, String)>>,
    /// The `console` channel records without printing (`engine test` reads [`Outbox::sent`]).
    quiet: bool,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("sent", &lock(&self.sent).len())
            .field("quiet", &self.quiet)
            .finish()
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::in_memory()
    }
}

/// The files engines before store schema 5 kept the outbox in.
pub const OLD_FILES: [&str; 2] = [NOTIFICATIONS, DELIVERIES];
const NOTIFICATIONS: &str = "notifications.jsonl";
const DELIVERIES: &str = "deliveries.jsonl";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        path: path.to_path_buf(),
        detail: format!("cannot import the old notification outbox: {e}"),
    }
}

/// Every parseable line of a JSON-lines file; a missing file is empty. A line that does
/// not parse (torn by a crash mid-write) is skipped.
fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, StoreError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_error(path, e)),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| file_error(path, e))?;
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

/// What [`Outbox::import_files`] moved into the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// Notifications new to the store.
    pub notifications: usize,
    /// Delivery records new to the store.
    pub deliveries: usize,
}

/// The channels of `n` owed a delivery.
fn owed(n: &Notification) -> Vec<String> {
    n.channels
        .iter()
        .filter(|c| !LOCAL_CHANNELS.contains(&c.as_str()))
        .cloned()
        .collect()
}

impl Outbox {
    /// An outbox in a store of its own in memory (tests, embedding).
    pub fn in_memory() -> Self {
        Outbox::in_store(Arc::new(MemoryStore::new()))
    }

    /// An outbox in `store` (the engine's store: sled under the data dir, or PostgreSQL
    /// shared by every engine process).
    pub fn in_store(store: Arc<dyn Store>) -> Self {
        Outbox {
            store,
            sent: Mutex::new(Vec::new()),
            in_flight: Mutex::default(),
            held: Mutex::default(),
            quiet: false,
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

    /// Moves the outbox files an older engine kept in `dir` (`notifications.jsonl`,
    /// `deliveries.jsonl`) into the store, then renames them to `*.imported`. Idempotent:
    /// a notification already in the store is not queued again, and a delivery record only
    /// goes in where the store has none for its notification and channel, so an import cut
    /// short by a crash is finished by the next one. Nothing to do without the files.
    pub async fn import_files(&self, dir: &Path) -> Result<Imported, StoreError> {
        let paths: Vec<PathBuf> = OLD_FILES.iter().map(|f| dir.join(f)).collect();
        if !paths.iter().any(|p| p.exists()) {
            return Ok(Imported::default());
        }
        let notifications: Vec<Notification> = read_lines(&dir.join(NOTIFICATIONS))?;
        let mut latest: HashMap<(String, String), Delivery> = HashMap::new();
        for d in read_lines::<Delivery>(&dir.join(DELIVERIES))? {
            latest.insert((d.id.clone(), d.channel.clone()), d);
        }
        let mut report = Imported::default();
        for n in &notifications {
            if self.store.notification_push(n, &owed(n)).await? {
                report.notifications += 1;
            }
        }
        let mut records: Vec<Delivery> = latest.into_values().collect();
        records.sort_by(|a, b| (&a.id, &a.channel).cmp(&(&b.id, &b.channel)));
        for d in records {
            let known = self
                .store
                .notification_deliveries(Some(&d.id))
                .await?
                .iter()
                .any(|r| r.channel == d.channel);
            if !known {
                self.store.notification_record(&d).await?;
                report.deliveries += 1;
            }
        }
        // On disk before the files go, whatever the durability.
        self.store.flush().await?;
        for p in paths.iter().filter(|p| p.exists()) {
            let mut to = p.clone().into_os_string();
            to.push(".imported");
            std::fs::rename(p, &to).map_err(|e| file_error(p, e))?;
        }
        tracing::info!(
            dir = %dir.display(),
            notifications = report.notifications,
            deliveries = report.deliveries,
            "imported the old notification outbox files into the store"
        );
        Ok(report)
    }

    /// Queues `n` (durable before it returns under strict durability). A notification
    /// whose id is already in the outbox (sent by this or another process) is not recorded
    /// again: `Ok(false)`.
    pub async fn push(&self, n: Notification) -> Result<bool, StoreError> {
        let queued = self.store.notification_push(&n, &owed(&n)).await?;
        if queued {
            lock(&self.sent).push(n);
        }
        Ok(queued)
    }

    /// What this process has sent, in order.
    pub fn sent(&self) -> Vec<Notification> {
        lock(&self.sent).clone()
    }

    /// Records the outcome of a delivery attempt; it replaces the earlier record of the
    /// same notification and channel, and releases this process's claim on it.
    pub async fn record(&self, d: Delivery) -> Result<(), StoreError> {
        self.store.notification_record(&d).await?;
        lock(&self.held).remove(&(d.id, d.channel));
        Ok(())
    }

    /// Every notification in the outbox, oldest first.
    pub async fn notifications(&self) -> Result<Vec<Notification>, StoreError> {
        self.store.notifications_all().await
    }

    /// The latest delivery record of every (notification, channel) pair tried so far.
    pub async fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        self.store.notification_deliveries(None).await
    }

    /// (notification, channel) pairs by the status of their latest attempt (for `/metrics`:
    /// cheap whatever the size of the outbox).
    pub async fn counts(&self) -> Result<crate::persist::DeliveryCounts, StoreError> {
        self.store.notification_counts().await
    }

    /// The latest delivery record of one notification on one channel.
    pub async fn delivery(&self, id: &str, channel: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(self
            .store
            .notification_deliveries(Some(id))
            .await?
            .into_iter()
            .find(|d| d.channel == channel))
    }

    /// Every (notification, channel) not yet delivered or rejected, oldest notification
    /// first, over the channels for which `deliverable` is true (the network channels).
    pub async fn pending(
        &self,
        deliverable: impl Fn(&str) -> bool,
    ) -> Result<Vec<Pending>, StoreError> {
        let mut all = self.store.notifications_pending(None, usize::MAX).await?;
        all.retain(|p| deliverable(&p.channel));
        Ok(all)
    }

    /// Claims (id, channel) for a delivery by this process: `None` when this process is
    /// delivering it already (a step and a background pass racing), another process holds
    /// it, or it is delivered or rejected by now. The claim goes with [`Outbox::record`] or
    /// when the [`Claim`] is dropped; the claim of a process that died goes with it.
    pub async fn claim(&self, id: &str, channel: &str) -> Result<Option<Claim<'_>>, StoreError> {
        let key = (id.to_string(), channel.to_string());
        if !lock(&self.in_flight).insert(key.clone()) {
            return Ok(None);
        }
        // From here on, dropping `claim` (refused, failed) takes the in-process mark away.
        let claim = Claim {
            outbox: self,
            key: key.clone(),
        };
        if self.store.notification_claim(id, channel).await? {
            lock(&self.held).insert(key);
            Ok(Some(claim))
        } else {
            Ok(None)
        }
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
        let outbox = self.outbox;
        let still_held = lock(&outbox.held).remove(&self.key);
        lock(&outbox.in_flight).remove(&self.key);
        if !still_held {
            return;
        }
        // Dropped without a record (the task was cancelled, the record failed): give the
        // claim back so another process need not wait for this one to die.
        let store = outbox.store.clone();
        let (id, channel) = self.key.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.notification_release(&id, &channel).await {
                    tracing::debug!(id, channel, error = %e, "cannot release a notification claim");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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

    async fn check_pending(outbox: &Outbox) {
        assert!(outbox
            .push(note("n1", &["console", "slack", "webhook"]))
            .await
            .unwrap());
        assert!(outbox.push(note("n2", &["slack"])).await.unwrap());
        assert!(!outbox.push(note("n1", &["slack"])).await.unwrap());
        let net = |c: &str| c == "slack" || c == "webhook";
        assert_eq!(outbox.pending(net).await.unwrap().len(), 3);
        for (id, ch, st) in [
            ("n1", "slack", DeliveryStatus::Failed),
            ("n1", "webhook", DeliveryStatus::Rejected),
            ("n2", "slack", DeliveryStatus::Failed),
            ("n2", "slack", DeliveryStatus::Delivered),
        ] {
            outbox.record(rec(id, ch, st)).await.unwrap();
        }
        let p = outbox.pending(net).await.unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].notification.id.as_str(), p[0].channel.as_str()),
            ("n1", "slack")
        );
        assert_eq!(
            p[0].last.as_ref().map(|d| d.status),
            Some(DeliveryStatus::Failed)
        );
        let sent: Vec<String> = outbox.sent().into_iter().map(|n| n.id).collect();
        assert_eq!(sent, ["n1", "n2"]);
    }

    #[tokio::test]
    async fn pending_lists_what_is_neither_delivered_nor_rejected() {
        check_pending(&Outbox::in_memory()).await;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::persist::SledStore::open(dir.path()).unwrap();
        check_pending(&Outbox::in_store(Arc::new(store))).await;
    }

    #[tokio::test]
    async fn a_claim_is_exclusive_until_dropped_and_refused_once_settled() {
        let o = Outbox::in_memory();
        o.push(note("n1", &["slack", "webhook"])).await.unwrap();
        let c = o.claim("n1", "slack").await.unwrap();
        assert!(c.is_some());
        assert!(o.claim("n1", "slack").await.unwrap().is_none());
        assert!(o.claim("n1", "webhook").await.unwrap().is_some());
        drop(c);
        let c = o.claim("n1", "slack").await.unwrap();
        assert!(c.is_some());
        o.record(rec("n1", "slack", DeliveryStatus::Delivered))
            .await
            .unwrap();
        drop(c);
        assert!(
            o.claim("n1", "slack").await.unwrap().is_none(),
            "delivered: nothing left to claim"
        );
    }

    #[tokio::test]
    async fn old_files_are_imported_once_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join(NOTIFICATIONS)).unwrap();
        for n in [note("n1", &["console", "slack"]), note("n2", &["slack"])] {
            writeln!(f, "{}", serde_json::to_string(&n).unwrap()).unwrap();
        }
        // A crash mid-write left half a line.
        write!(f, "{{\"id\":\"n3\",\"at").unwrap();
        drop(f);
        let mut f = std::fs::File::create(dir.path().join(DELIVERIES)).unwrap();
        for d in [
            rec("n1", "slack", DeliveryStatus::Failed),
            rec("n1", "slack", DeliveryStatus::Delivered),
            rec("n2", "slack", DeliveryStatus::Failed),
        ] {
            writeln!(f, "{}", serde_json::to_string(&d).unwrap()).unwrap();
        }
        drop(f);
        let store = Arc::new(crate::persist::SledStore::open(dir.path()).unwrap());
        let o = Outbox::in_store(store.clone());
        let got = o.import_files(dir.path()).await.unwrap();
        assert_eq!(
            got,
            Imported {
                notifications: 2,
                deliveries: 2
            }
        );
        assert!(!dir.path().join(NOTIFICATIONS).exists());
        assert!(dir.path().join("notifications.jsonl.imported").exists());
        assert!(dir.path().join("deliveries.jsonl.imported").exists());
        let p = o.pending(|c| c == "slack").await.unwrap();
        let ids: Vec<&str> = p.iter().map(|p| p.notification.id.as_str()).collect();
        assert_eq!(ids, ["n2"], "n1 was delivered before the upgrade");
        assert!(o.sent().is_empty(), "imported, not sent by this process");
        // Files written again (an old binary ran) are imported again, without duplicates.
        std::fs::copy(
            dir.path().join("notifications.jsonl.imported"),
            dir.path().join(NOTIFICATIONS),
        )
        .unwrap();
        let again = o.import_files(dir.path()).await.unwrap();
        assert_eq!(again, Imported::default());
        assert_eq!(o.notifications().await.unwrap().len(), 2);
        assert_eq!(
            o.import_files(dir.path()).await.unwrap(),
            Imported::default(),
            "nothing to do without the files"
        );
    }
}
