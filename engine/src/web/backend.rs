//! The web view's door into the engine: cases from the store, a person's changes, and the
//! run history. Pages call only [`WebBackend`], so the engine API they rely on is written
//! down here, and the server's [`Backend`] is one implementation of it (tests have their
//! own).

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::cases::{Actor, CaseChange, CaseId};
use crate::persist::{Store, StoreError, WriteOutcome};
use crate::report::StepReport;
use crate::schedule::Engine;
use crate::serve::backend::{Backend, RunDetail, RunQuery, RunRow};

/// Which runs a listing shows. Empty criteria match every run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub playbook: Option<String>,
    /// `succeeded`, `failed`, `running`, ...
    pub status: Option<String>,
    /// Newest first, at most this many.
    pub limit: usize,
}

/// One run as the web view shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RunView {
    pub id: String,
    pub playbook: String,
    /// `succeeded`, `failed`, or (with a run journal) `running` or `parked`.
    pub status: String,
    /// The event source or case event type that started it.
    pub trigger: String,
    /// RFC 3339.
    pub started: String,
    pub duration_ms: Option<f64>,
    pub error: Option<String>,
    /// The incoming event's dedup key (`okta:<uuid>`), when it had one.
    pub event_key: Option<String>,
    /// Every step that finished, was skipped or cancelled (empty in listings).
    pub steps: Vec<StepReport>,
    /// The playbook's rendered `output`.
    pub output: Option<Value>,
}

/// What the pages need from the engine. See the module docs.
#[async_trait]
pub trait WebBackend: Send + Sync + 'static {
    /// The engine: its playbooks (for the playbooks page and run graphs) and config.
    fn engine(&self) -> &Arc<Engine>;

    /// The case store, for reads.
    fn store(&self) -> &Arc<dyn Store>;

    /// A person's change to a case. The case events it causes must start playbooks
    /// exactly as a playbook's change would (the same triggers as `PATCH /api/cases/{id}`).
    async fn update_case(
        &self,
        id: CaseId,
        changes: Vec<CaseChange>,
        actor: Actor,
    ) -> Result<WriteOutcome, StoreError>;

    /// Runs, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunView>, crate::Error>;

    /// One run with its steps.
    async fn get_run(&self, id: &str) -> Result<Option<RunView>, crate::Error>;
}

fn from_row(r: RunRow, steps: Vec<StepReport>, output: Option<Value>) -> RunView {
    RunView {
        id: r.id,
        playbook: r.playbook,
        status: r.status,
        trigger: r.trigger,
        started: r.started,
        duration_ms: Some(r.duration_ms),
        error: r.error,
        event_key: r.event_id,
        steps,
        output,
    }
}

#[async_trait]
impl WebBackend for Backend {
    fn engine(&self) -> &Arc<Engine> {
        Backend::engine(self)
    }

    fn store(&self) -> &Arc<dyn Store> {
        Backend::store(self)
    }

    async fn update_case(
        &self,
        id: CaseId,
        changes: Vec<CaseChange>,
        actor: Actor,
    ) -> Result<WriteOutcome, StoreError> {
        Backend::update_case(self, id, changes, actor).await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunView>, crate::Error> {
        let q = RunQuery {
            playbook: filter.playbook.clone(),
            status: filter.status.clone(),
            limit: filter.limit,
        };
        Ok(Backend::list_runs(self, &q)
            .await?
            .into_iter()
            .map(|r| from_row(r, Vec::new(), None))
            .collect())
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunView>, crate::Error> {
        Ok(Backend::get_run(self, id)
            .await?
            .map(|RunDetail { run, steps, output }| from_row(run, steps, output)))
    }
}
