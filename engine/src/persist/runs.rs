//! The run journal: one record per run (what started it, its input, where it stands) and
//! one entry per finished step, so a run interrupted by a crash can resume where it was.
//!
//! Data flow: the engine writes a run's record with [`Runs::start_runs`] *before* the run
//! starts, in the same transaction that consumes what started it (the inbox entry, or the
//! case event's delivery), so a crash can neither lose the run nor start it twice. The
//! executor appends each finished step with [`Runs::record_steps`] and makes what it wrote
//! durable ([`super::CaseWrite::sync`]) before it starts any step with outside effects —
//! the first included — so a step whose completion was journaled is never run again, and no
//! step acts for a run whose record a crash could still take back (effect-free steps, which
//! act on nothing, start after a commit alone: `schedule::journal`).
//! [`Runs::finish_run`] writes the final state.
//! After a crash, [`Runs::unfinished_runs`] returns what to resume, with its journal.
//!
//! A run's start and its step entries are committed, not flushed: the executor's sync
//! before each step start flushes them (one group-commit flush for every run starting a
//! step at that moment). A crash can take back only what was not synced: a run's start
//! (its origin is then still pending and is dispatched again; none of its steps had
//! started) or the entries of steps nothing had started after (those steps run again,
//! with the same idempotency keys). A run's end is flushed before it is reported.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use crate::cases::UnknownName;
use crate::report::{RunReport, RunStatus, StepReport};

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Started and not finished (or interrupted by a crash: resumed at start-up).
    Running,
    /// Finished; every failure was continued or handled.
    Succeeded,
    /// Finished with a failure.
    Failed,
    /// Stopped by a shutdown before it finished; resumed at the next start-up.
    Parked,
}

impl RunState {
    /// Every state.
    pub const ALL: [RunState; 4] = [
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Parked,
    ];

    /// `running`, `succeeded`, `failed`, `parked`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Parked => "parked",
        }
    }

    /// True for `succeeded` and `failed`: nothing more will happen to the run.
    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Failed)
    }
}

impl From<RunStatus> for RunState {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Succeeded => RunState::Succeeded,
            RunStatus::Failed => RunState::Failed,
        }
    }
}

impl std::str::FromStr for RunState {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| UnknownName {
                what: "run status",
                text: s.to_string(),
                expected: "`running`, `succeeded`, `failed`, `parked`".into(),
            })
    }
}

/// One run, as `GET /api/runs` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Sortable by start time (see [`crate::schedule::new_run_id`]).
    pub run_id: String,
    pub playbook: String,
    /// The event source or case event type that started the run.
    pub trigger: String,
    pub status: RunState,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC; set once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Set once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// The dedup key of the incoming event that started it (`okta:<uuid>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_key: Option<String>,
    /// The inbox entry that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox_seq: Option<u64>,
    /// The case event that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_event: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a run was started with: enough to run it again from the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInputRecord {
    /// The event (for case events, their payload).
    pub event: Value,
    /// The case, for case events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<Value>,
    /// How many runs led to this one (the loop guard's count).
    #[serde(default)]
    pub depth: u32,
    /// The run's seed for step randomness, so a resumed run draws the same numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// A run with its input, output and journal, as `GET /api/runs/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(flatten)]
    pub summary: RunSummary,
    pub input: RunInputRecord,
    /// The playbook's `output`, rendered, when the run succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The journal: each step that finished (or was skipped or cancelled), in the order
    /// it did. Steps still pending or running are absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepReport>,
}

impl RunRecord {
    /// An empty record that allocates nothing, to stand in for one moved out for a
    /// moment (see `schedule::lifecycle`). Never stored.
    pub(crate) fn placeholder() -> Self {
        RunRecord {
            summary: RunSummary {
                run_id: String::new(),
                playbook: String::new(),
                trigger: String::new(),
                status: RunState::Running,
                started_at: String::new(),
                finished_at: None,
                duration_ms: None,
                event_key: None,
                inbox_seq: None,
                case_event: None,
                error: None,
            },
            input: RunInputRecord {
                event: Value::Null,
                case: None,
                depth: 0,
                seed: None,
            },
            output: None,
            steps: Vec::new(),
        }
    }

    /// The report of a finished run; `None` while it is running or parked.
    pub fn to_report(&self) -> Option<RunReport> {
        let status = match self.summary.status {
            RunState::Succeeded => RunStatus::Succeeded,
            RunState::Failed => RunStatus::Failed,
            RunState::Running | RunState::Parked => return None,
        };
        Some(RunReport {
            run_id: self.summary.run_id.clone(),
            playbook: self.summary.playbook.clone(),
            trigger: self.summary.trigger.clone(),
            status,
            started_at: self.summary.started_at.clone(),
            duration_ms: self.summary.duration_ms.unwrap_or(0.0),
            steps: self.steps.clone(),
            output: self.output.clone(),
            error: self.summary.error.clone(),
            event_key: self.summary.event_key.clone(),
            inbox_seq: self.summary.inbox_seq,
        })
    }
}

/// Which runs [`Runs::list_runs`] returns. Empty criteria match every run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFilter {
    pub playbook: Option<String>,
    pub status: Option<RunState>,
    /// At most this many, newest first.
    pub limit: usize,
}

impl Default for RunFilter {
    /// Every run, newest first, at most 100.
    fn default() -> Self {
        RunFilter {
            playbook: None,
            status: None,
            limit: 100,
        }
    }
}

/// What consumes the start of a set of runs, in the same transaction as their records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOrigin {
    /// An incoming event: its inbox entry leaves the queue. Nothing starts when the entry
    /// was already taken (another dispatcher, or a crash after the commit).
    Inbox(u64),
    /// A case event. Playbooks that already have a delivery record for it are not started
    /// again. With `ack`, the event and its delivery records leave the outbox; without,
    /// a delivery record is written per playbook started (acknowledged later with
    /// [`super::CaseWrite::ack_event`]). Nothing starts when the event is not pending.
    CaseEvent { event_id: u64, ack: bool },
    /// Nothing to consume: runs started directly ([`crate::Engine::dispatch`]).
    Direct,
}

/// Where an inbox entry stands, for waiting on its runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboxEntry {
    /// No entry with this number was ever queued.
    Unknown,
    /// Queued, not yet taken by the worker.
    Queued,
    /// Taken: these runs started from it (possibly none).
    Dispatched(Vec<String>),
}

/// The run journal.
#[async_trait]
pub trait Runs: Send + Sync {
    /// Records `runs` (state `running`, no steps) and consumes `origin`, in one
    /// transaction. Returns, per run, whether it was recorded (false: it must not start).
    /// Committed, not flushed: sync before the run's first step.
    async fn start_runs(
        &self,
        origin: RunOrigin,
        runs: &[RunRecord],
    ) -> Result<Vec<bool>, StoreError>;

    /// [`Runs::start_runs`] for several distinct origins at once (the worker's take of what
    /// is queued), in one transaction where the store can: one result list per origin, in
    /// order. Committed, not flushed, like `start_runs`. The default takes them one by one.
    async fn start_runs_many(
        &self,
        batch: &[(RunOrigin, Vec<RunRecord>)],
    ) -> Result<Vec<Vec<bool>>, StoreError> {
        let mut out = Vec::with_capacity(batch.len());
        for (origin, runs) in batch {
            out.push(self.start_runs(*origin, runs).await?);
        }
        Ok(out)
    }

    /// Appends journal entries (`seq` orders them) for a running run. Committed, not
    /// flushed: call [`super::CaseWrite::sync`] before anything depends on them being on
    /// disk (the executor does, before it starts the next step).
    async fn record_steps(
        &self,
        run_id: &str,
        steps: &[(u32, &StepReport)],
    ) -> Result<(), StoreError>;

    /// Writes a run's final record and its steps the journal does not have yet; the run is
    /// no longer unfinished. Durable before it returns under strict durability.
    async fn finish_run(&self, run: &RunRecord) -> Result<(), StoreError>;

    /// Marks running runs `parked` (a shutdown stopped them); they resume at the next
    /// start-up like crashed ones.
    async fn park_runs(&self, run_ids: &[String]) -> Result<(), StoreError>;

    /// Every run that is running or parked, oldest first, with its journal.
    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError>;

    /// Runs matching `filter`, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError>;

    /// One run with its journal.
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError>;

    /// One run's record without its journal (`steps` empty): cheaper than
    /// [`Runs::get_run`] when only the summary or the input is wanted.
    async fn run_record(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError>;

    /// Whether inbox entry `seq` was taken, and the runs it started.
    async fn inbox_entry(&self, seq: u64) -> Result<InboxEntry, StoreError>;

    /// Unfinished runs that no live process owns any more (their process died, or parked
    /// them at shutdown), now owned by this one: a running worker resumes them. Stores that
    /// one process owns (sled, memory) have none: [`Runs::unfinished_runs`] at start-up
    /// covers them.
    async fn take_over_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        Ok(Vec::new())
    }

    /// Holds concurrency key `key` for `run_id` against the runs of *other processes*
    /// sharing the store, waiting while one of them holds it (runs of one engine are
    /// already ordered by its own key queue). Released with [`Runs::release_key`], or when
    /// the holding process dies. Single-process stores return at once.
    async fn acquire_key(&self, _key: &str, _run_id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Lets go of a key taken with [`Runs::acquire_key`].
    async fn release_key(&self, _key: &str, _run_id: &str) -> Result<(), StoreError> {
        Ok(())
    }
}
