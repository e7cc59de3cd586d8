//! One run's way through the engine, the same for every driver (one-shot calls, the
//! worker, resume):
//!
//! 1. [`Engine::job`]: a new run id, the input, the concurrency key, a seed.
//! 2. [`Engine::start_jobs`]: the run records are written to the journal in the
//!    transaction that consumes what started them ([`RunOrigin`]); runs the store refuses
//!    (already started by someone else) are dropped here.
//! 3. [`Engine::launch`]: the run takes its place in its key's queue, synchronously, so
//!    the order of `launch` calls is the order runs with one key get to go; then it is
//!    spawned.
//! 4. [`run_job`]: waits for its key, executes with its journal (resumed runs start from
//!    their journaled steps), writes the final record, tells subscribers, wakes the worker.

use std::sync::Arc;

use serde_json::Value;
use tokio::task::JoinSet;

use super::executor::{self, Execution, RunInput};
use super::journal::RunJournal;
use super::locks::Ticket;
use super::{lock, Engine, Shared};
use crate::compile::Plan;
use crate::persist::{RunInputRecord, RunOrigin, RunRecord, RunState, RunSummary};
use crate::report::{RunReport, RunStatus};

/// Where a run came from, kept on its record and report.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lineage {
    pub(crate) event_key: Option<String>,
    pub(crate) inbox_seq: Option<u64>,
    pub(crate) case_event: Option<u64>,
}

/// A run about to start or resume.
pub(crate) struct Job {
    pub(crate) plan: Arc<Plan>,
    pub(crate) record: RunRecord,
    /// Its concurrency key, rendered.
    pub(crate) key: Option<String>,
    /// Set when the run must fail without running (loop guard, playbook gone).
    pub(crate) blocked: Option<String>,
}

/// Moves the jobs' records out for the store, which reads them by reference: copying
/// them instead (a case event's run holds the event with two cases, 12 KB of JSON) and
/// dropping the copies was 3% of an IAM chain's CPU. [`put_back`] returns them.
fn take_records(jobs: &mut [Job]) -> Vec<RunRecord> {
    jobs.iter_mut()
        .map(|j| std::mem::replace(&mut j.record, RunRecord::placeholder()))
        .collect()
}

/// Puts the records [`take_records`] took back into their jobs, in order.
fn put_back(jobs: &mut [Job], records: Vec<RunRecord>) {
    for (j, r) in jobs.iter_mut().zip(records) {
        j.record = r;
    }
}

impl Engine {
    /// A new run of `plan`.
    pub(crate) fn job(
        &self,
        plan: Arc<Plan>,
        trigger: &str,
        event: Value,
        case: Option<Value>,
        depth: u32,
        lineage: Lineage,
    ) -> Job {
        let key = self.concurrency_key(&plan, &event);
        let seed = self
            .shared
            .services
            .seed
            .unwrap_or_else(|| rand::Rng::gen(&mut rand::thread_rng()));
        let record = RunRecord {
            summary: RunSummary {
                run_id: super::new_run_id(),
                playbook: plan.name.clone(),
                trigger: trigger.to_string(),
                status: RunState::Running,
                started_at: executor::rfc3339(self.shared.services.clock.now()),
                finished_at: None,
                duration_ms: None,
                event_key: lineage.event_key,
                inbox_seq: lineage.inbox_seq,
                case_event: lineage.case_event,
                error: None,
            },
            input: RunInputRecord {
                event,
                case,
                depth,
                seed: Some(seed),
            },
            output: None,
            steps: Vec::new(),
        };
        Job {
            plan,
            record,
            key,
            blocked: None,
        }
    }

    /// Records the jobs in the run journal, consuming `origin` in the same transaction;
    /// returns the ones that may start. Without a store every job may start.
    pub(crate) async fn start_jobs(
        &self,
        origin: RunOrigin,
        jobs: Vec<Job>,
    ) -> Result<Vec<Job>, crate::Error> {
        let Some(store) = self.store() else {
            return Ok(jobs);
        };
        if jobs.is_empty() && origin == RunOrigin::Direct {
            return Ok(jobs);
        }
        let mut jobs = jobs;
        let records = take_records(&mut jobs);
        let started = store.start_runs(origin, &records).await?;
        put_back(&mut jobs, records);
        Ok(jobs
            .into_iter()
            .zip(started)
            .filter_map(|(j, go)| go.then_some(j))
            .collect())
    }

    /// [`Engine::start_jobs`] for several origins in one store transaction; one list of
    /// the jobs that may start per origin, in order.
    pub(crate) async fn start_jobs_many(
        &self,
        batch: Vec<(RunOrigin, Vec<Job>)>,
    ) -> Result<Vec<Vec<Job>>, crate::Error> {
        let Some(store) = self.store() else {
            return Ok(batch.into_iter().map(|(_, jobs)| jobs).collect());
        };
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = batch;
        let records: Vec<(RunOrigin, Vec<RunRecord>)> = batch
            .iter_mut()
            .map(|(o, jobs)| (*o, take_records(jobs)))
            .collect();
        let started = store.start_runs_many(&records).await?;
        for ((_, jobs), (_, records)) in batch.iter_mut().zip(records) {
            put_back(jobs, records);
        }
        if started.len() != batch.len() {
            return Err(crate::Error::Runtime(format!(
                "the store started {} of {} batches",
                started.len(),
                batch.len()
            )));
        }
        Ok(batch
            .into_iter()
            .zip(started)
            .map(|((_, jobs), go)| {
                jobs.into_iter()
                    .zip(go)
                    .filter_map(|(j, go)| go.then_some(j))
                    .collect()
            })
            .collect())
    }

    /// The store's unfinished runs as jobs, oldest first. A run whose playbook is no longer
    /// loaded fails with a message saying so.
    pub(crate) async fn resumable(&self) -> Result<Vec<Job>, crate::Error> {
        let Some(store) = self.store() else {
            return Ok(Vec::new());
        };
        let records = store.unfinished_runs().await?;
        Ok(self.resume_jobs(records))
    }

    /// Runs another process sharing the store left (it died, or parked them at shutdown),
    /// taken over by this one, as jobs; see [`crate::persist::Runs::take_over_runs`].
    pub(crate) async fn taken_over(&self) -> Result<Vec<Job>, crate::Error> {
        let Some(store) = self.store() else {
            return Ok(Vec::new());
        };
        let records = store.take_over_runs().await?;
        Ok(self.resume_jobs(records))
    }

    fn resume_jobs(&self, records: Vec<RunRecord>) -> Vec<Job> {
        let mut jobs = Vec::new();
        for record in records {
            let name = record.summary.playbook.clone();
            let (plan, blocked) = match self.bundle.get(&name) {
                Some(p) => (p.clone(), None),
                None => match self.bundle.playbooks.first() {
                    // Any plan will do: a blocked job does not run it.
                    Some(p) => (
                        p.clone(),
                        Some(format!(
                            "cannot resume: playbook `{name}` is no longer loaded"
                        )),
                    ),
                    None => {
                        tracing::error!(run_id = %record.summary.run_id, playbook = %name, "cannot resume: no playbook loaded");
                        continue;
                    }
                },
            };
            tracing::info!(
                run_id = %record.summary.run_id,
                playbook = %name,
                journaled = record.steps.len(),
                "resuming run"
            );
            let key = self.concurrency_key(&plan, &record.input.event);
            jobs.push(Job {
                plan,
                record,
                key,
                blocked,
            });
        }
        jobs
    }

    /// Queues the job for its concurrency key (fixing its turn now) and spawns it.
    pub(crate) fn launch(&self, job: Job, set: &mut JoinSet<Arc<RunReport>>) {
        let ticket = self.shared.locks.queue(job.key.clone());
        lock(&self.shared.in_flight).insert(job.record.summary.run_id.clone());
        self.shared
            .depths
            .insert(&job.record.summary.run_id, job.record.input.depth);
        set.spawn(run_job(self.shared.clone(), job, ticket));
    }

    /// Runs the jobs (queued in the order given) and waits for all; reports are sorted by
    /// playbook.
    pub(crate) async fn run_to_end(&self, jobs: Vec<Job>) -> Vec<RunReport> {
        let mut set = JoinSet::new();
        for job in jobs {
            self.launch(job, &mut set);
        }
        let mut reports = Vec::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(report) => reports.push(Arc::unwrap_or_clone(report)),
                Err(e) => tracing::error!(error = %e, "run task crashed"),
            }
        }
        reports.sort_by(|a, b| a.playbook.cmp(&b.playbook));
        reports
    }
}

/// One run, from its turn for its key to its final record.
async fn run_job(shared: Arc<Shared>, job: Job, ticket: Ticket) -> Arc<RunReport> {
    let _held = ticket.acquire().await;
    let Job {
        plan,
        mut record,
        mut blocked,
        key,
    } = job;
    let run_id = record.summary.run_id.clone();
    let store = shared.services.store.clone();
    // This engine's own queue ordered the run among its runs with the same key; the store
    // holds the key against other processes sharing it (a no-op for sled).
    let mut store_key = None;
    if let (Some(store), Some(key), None) = (&store, &key, &blocked) {
        match store.acquire_key(key, &run_id).await {
            Ok(()) => store_key = Some(key.clone()),
            Err(e) => blocked = Some(format!("cannot take concurrency key `{key}`: {e}")),
        }
    }
    let mut report = match blocked {
        Some(message) => RunReport {
            run_id: run_id.clone(),
            playbook: record.summary.playbook.clone(),
            trigger: record.summary.trigger.clone(),
            status: RunStatus::Failed,
            started_at: record.summary.started_at.clone(),
            duration_ms: 0.0,
            steps: Vec::new(),
            output: None,
            error: Some(message),
            event_key: None,
            inbox_seq: None,
        },
        None => {
            let input = RunInput {
                run_id: run_id.clone(),
                trigger: record.summary.trigger.clone(),
                // Lent to the run and handed back for the final record, not copied.
                event: std::mem::take(&mut record.input.event),
                case: record.input.case.take(),
                depth: record.input.depth,
            };
            let restored = std::mem::take(&mut record.steps);
            let journal = store.clone().map(|s| {
                RunJournal::new(
                    s,
                    run_id.clone(),
                    u32::try_from(restored.len()).unwrap_or(u32::MAX),
                )
            });
            let execution = Execution {
                journal,
                restored,
                seed: record.input.seed,
            };
            let (report, event, case) =
                executor::execute_returning_input(plan, input, shared.services.clone(), execution)
                    .await;
            record.input.event = event;
            record.input.case = case;
            report
        }
    };
    report.started_at = record.summary.started_at.clone();
    report.event_key = record.summary.event_key.clone();
    report.inbox_seq = record.summary.inbox_seq;
    if let Some(store) = &store {
        let summary = &mut record.summary;
        summary.status = report.status.into();
        summary.finished_at = Some(executor::rfc3339(shared.services.clock.now()));
        summary.duration_ms = Some(report.duration_ms);
        summary.error = report.error.clone();
        // Lent to the record for the write, not copied.
        record.output = report.output.take();
        record.steps = std::mem::take(&mut report.steps);
        if let Err(e) = store.finish_run(&record).await {
            // The run stays `running` in the journal and is resumed at the next start.
            tracing::error!(%run_id, error = %e, "could not record the end of the run");
        }
        report.output = record.output.take();
        report.steps = std::mem::take(&mut record.steps);
        if let Some(key) = &store_key {
            if let Err(e) = store.release_key(key, &run_id).await {
                // Another process takes the key once this one is gone.
                tracing::error!(%run_id, %key, error = %e, "could not release the concurrency key");
            }
        }
    }
    lock(&shared.in_flight).remove(&run_id);
    // Shared with the subscribers, not cloned: the worker drops its copy unread.
    let report = Arc::new(report);
    // No subscriber is not an error.
    let _ = shared.finished.send(report.clone());
    shared.wake.notify_one();
    report
}
