//! The inbox queue: incoming events with their bodies, kept until the worker takes them.
//!
//! Data flow: [`super::Inbox::enqueue_incoming`] writes each new event under the next
//! inbox sequence number together with its dedup key (`eventkey_receivedat`), in one
//! transaction, and returns once that is durable (strict) — that is the acknowledgement.
//! A duplicate key is acknowledged without being stored. The worker reads the queue with
//! [`super::Inbox::pending_incoming`] and takes an entry with
//! [`super::Runs::start_runs`]`(`[`super::RunOrigin::Inbox`]`)`, which deletes it in the
//! transaction that records the runs it starts.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cases::Timestamp;

/// An incoming event to queue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewIncoming {
    /// Where it came from (`okta`, or the `{source}` of `POST /events/{source}`).
    pub source: String,
    /// Its dedup key (`<source>:<uuid>`), when it has one; see [`crate::schedule::dedup_key`].
    pub key: Option<String>,
    /// The event as received.
    pub event: Value,
    pub received_at: Timestamp,
}

/// A queued incoming event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incoming {
    /// Its inbox sequence number: increasing in arrival order.
    pub seq: u64,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub event: Value,
    pub received_at: Timestamp,
}

/// What queuing one event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// Its inbox sequence number; `None` for a duplicate.
    pub seq: Option<u64>,
    /// Its key was seen before (or earlier in the same call): not stored, never runs.
    pub duplicate: bool,
}
