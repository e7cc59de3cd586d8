//! What a finished run reports: per step status, attempts, duration, output, error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schedule::ready::Status;
use crate::step::StepError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
}

/// One run of one playbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub run_id: String,
    pub playbook: String,
    /// The event that started the run: its source or case event type.
    pub trigger: String,
    pub status: RunStatus,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_ms: f64,
    pub steps: Vec<StepReport>,
    /// The playbook's `output`, rendered, when the run succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why the run failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The dedup key of the incoming event that started the run (`okta:<uuid>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_key: Option<String>,
    /// The inbox entry that started the run (see `Engine::ingest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox_seq: Option<u64>,
}

impl RunReport {
    pub fn step(&self, id: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub id: String,
    pub uses: String,
    pub status: Status,
    pub attempts: u32,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    /// Why the step was skipped or cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
