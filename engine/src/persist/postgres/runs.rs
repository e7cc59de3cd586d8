//! The run journal in PostgreSQL, with run ownership across processes and the
//! concurrency keys.
//!
//! A run belongs to the process that started it (`runs.owner`) until it finishes, is
//! parked (owner cleared: any process may resume it) or its process is removed (see
//! [`super::liveness`]); [`PgStore::pg_unfinished_runs`] and
//! [`PgStore::pg_take_over_runs`] claim such runs for this process. Journal writes are
//! fenced: they fail when this process was declared dead, or when the run now belongs to
//! another process.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::Transaction;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::types::Json;

use super::PgStore;
use crate::persist::runs::{
    InboxEntry, RunFilter, RunInputRecord, RunOrigin, RunRecord, RunState, RunSummary,
};
use crate::persist::StoreError;
use crate::report::StepReport;

/// How a run record is written: without its steps (same JSON as the sled store's).
#[derive(Debug, Serialize)]
struct StoredRun<'a> {
    #[serde(flatten)]
    summary: &'a RunSummary,
    input: &'a RunInputRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: &'a Option<Value>,
}

#[derive(Debug, Serialize)]
struct StepEntryRef<'a> {
    seq: u32,
    #[serde(flatten)]
    step: &'a StepReport,
}

#[derive(Deserialize)]
pub(super) struct StepEntry {
    #[allow(dead_code)]
    seq: u32,
    #[serde(flatten)]
    pub(super) step: StepReport,
}

fn stored(run: &RunRecord) -> StoredRun<'_> {
    StoredRun {
        summary: &run.summary,
        input: &run.input,
        output: &run.output,
    }
}

/// Which runs a claim takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Unowned, owned by a removed process, or by this one (start-up, `engine run`).
    Unfinished,
    /// Unowned or owned by a removed process (a live worker taking over).
    Orphaned,
}

impl PgStore {
    async fn put_run(
        &self,
        tx: &Transaction<'_>,
        run: &RunRecord,
        owner: Option<&str>,
    ) -> Result<(), StoreError> {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO runs (run_id, playbook, status, unfinished, owner, record)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (run_id) DO UPDATE SET playbook = EXCLUDED.playbook,
                   status = EXCLUDED.status, unfinished = EXCLUDED.unfinished,
                   owner = EXCLUDED.owner, record = EXCLUDED.record",
            )
            .await
            .map_err(|e| self.db(e))?;
        let s = &run.summary;
        tx.execute(
            &stmt,
            &[
                &s.run_id,
                &s.playbook,
                &s.status.as_str(),
                &!s.status.is_finished(),
                &owner,
                &Json(stored(run)),
            ],
        )
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn put_steps(
        &self,
        tx: &Transaction<'_>,
        run_id: &str,
        steps: &[(u32, &StepReport)],
    ) -> Result<(), StoreError> {
        if steps.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = steps.iter().map(|(_, s)| s.id.as_str()).collect();
        let seqs: Vec<i32> = steps.iter().map(|(n, _)| *n as i32).collect();
        let entries: Vec<Json<StepEntryRef<'_>>> = steps
            .iter()
            .map(|(seq, step)| Json(StepEntryRef { seq: *seq, step }))
            .collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO run_steps (run_id, step_id, seq, entry)
                 SELECT $1, s, n, e FROM unnest($2::text[], $3::int4[], $4::json[]) AS x(s, n, e)
                 ON CONFLICT (run_id, step_id) DO UPDATE SET seq = EXCLUDED.seq, entry = EXCLUDED.entry",
            )
            .await
            .map_err(|e| self.db(e))?;
        tx.execute(&stmt, &[&run_id, &ids, &seqs, &entries])
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Fails when `run_id` belongs to another process (it took the run over).
    async fn check_owner(&self, tx: &Transaction<'_>, run_id: &str) -> Result<(), StoreError> {
        let stmt = tx
            .prepare_cached("SELECT owner FROM runs WHERE run_id = $1 FOR UPDATE")
            .await
            .map_err(|e| self.db(e))?;
        let rows = tx.query(&stmt, &[&run_id]).await.map_err(|e| self.db(e))?;
        if let Some(r) = rows.first() {
            let owner: Option<String> = r.get(0);
            if let Some(o) = owner.filter(|o| *o != self.me.id) {
                return Err(self.backend(format!(
                    "run `{run_id}` is now run by another engine process (`{o}`); this process lost it"
                )));
            }
        }
        Ok(())
    }

    pub(super) async fn pg_start_runs(
        &self,
        origin: RunOrigin,
        runs: &[RunRecord],
    ) -> Result<Vec<bool>, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        self.fence(&tx).await?;
        let mut started = vec![true; runs.len()];
        match origin {
            RunOrigin::Direct => {}
            RunOrigin::Inbox(seq) => {
                let stmt = tx
                    .prepare_cached("DELETE FROM inbox WHERE seq = $1")
                    .await
                    .map_err(|e| self.db(e))?;
                let n = tx
                    .execute(&stmt, &[&(seq as i64)])
                    .await
                    .map_err(|e| self.db(e))?;
                if n == 0 {
                    return Ok(vec![false; runs.len()]);
                }
                if !runs.is_empty() {
                    let ids: Vec<&str> = runs.iter().map(|r| r.summary.run_id.as_str()).collect();
                    let stmt = tx
                        .prepare_cached(
                            "INSERT INTO inbox_runs (seq, run_id) SELECT $1, r FROM unnest($2::text[]) AS r
                             ON CONFLICT DO NOTHING",
                        )
                        .await
                        .map_err(|e| self.db(e))?;
                    tx.execute(&stmt, &[&(seq as i64), &ids])
                        .await
                        .map_err(|e| self.db(e))?;
                }
            }
            RunOrigin::CaseEvent { event_id, ack } => {
                let id = event_id as i64;
                let stmt = tx
                    .prepare_cached("SELECT 1 FROM case_events WHERE id = $1 FOR UPDATE")
                    .await
                    .map_err(|e| self.db(e))?;
                if tx
                    .query(&stmt, &[&id])
                    .await
                    .map_err(|e| self.db(e))?
                    .is_empty()
                {
                    return Ok(vec![false; runs.len()]);
                }
                let stmt = tx
                    .prepare_cached(
                        "SELECT playbook FROM case_event_deliveries WHERE event_id = $1",
                    )
                    .await
                    .map_err(|e| self.db(e))?;
                let mut delivered: HashSet<String> = tx
                    .query(&stmt, &[&id])
                    .await
                    .map_err(|e| self.db(e))?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let insert = tx
                    .prepare_cached(
                        "INSERT INTO case_event_deliveries (event_id, playbook, run_id) VALUES ($1, $2, $3)",
                    )
                    .await
                    .map_err(|e| self.db(e))?;
                for (run, go) in runs.iter().zip(started.iter_mut()) {
                    let pb = &run.summary.playbook;
                    if delivered.contains(pb) {
                        *go = false;
                    } else if !ack {
                        tx.execute(&insert, &[&id, pb, &run.summary.run_id])
                            .await
                            .map_err(|e| self.db(e))?;
                        delivered.insert(pb.clone());
                    }
                }
                if ack {
                    for sql in [
                        "DELETE FROM case_events WHERE id = $1",
                        "DELETE FROM case_event_deliveries WHERE event_id = $1",
                    ] {
                        let stmt = tx.prepare_cached(sql).await.map_err(|e| self.db(e))?;
                        tx.execute(&stmt, &[&id]).await.map_err(|e| self.db(e))?;
                    }
                }
            }
        }
        for (run, go) in runs.iter().zip(&started) {
            if *go {
                self.put_run(&tx, run, Some(&self.me.id)).await?;
            }
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(started)
    }

    pub(super) async fn pg_record_steps(
        &self,
        run_id: &str,
        steps: &[(u32, &StepReport)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        self.fence(&tx).await?;
        self.check_owner(&tx, run_id).await?;
        self.put_steps(&tx, run_id, steps).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(())
    }

    pub(super) async fn pg_finish_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let run_id = &run.summary.run_id;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        self.fence(&tx).await?;
        self.check_owner(&tx, run_id).await?;
        let stmt = tx
            .prepare_cached("SELECT step_id FROM run_steps WHERE run_id = $1")
            .await
            .map_err(|e| self.db(e))?;
        let journaled: HashSet<String> = tx
            .query(&stmt, &[run_id])
            .await
            .map_err(|e| self.db(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Entries are numbered from 0 without gaps, so the next number is their count.
        let mut next = u32::try_from(journaled.len()).unwrap_or(u32::MAX);
        let mut missing = Vec::new();
        for step in &run.steps {
            if !journaled.contains(&step.id) {
                missing.push((next, step));
                next = next.saturating_add(1);
            }
        }
        self.put_steps(&tx, run_id, &missing).await?;
        let owner = if run.summary.status.is_finished() {
            None
        } else {
            Some(self.me.id.as_str())
        };
        self.put_run(&tx, run, owner).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(())
    }

    pub(super) async fn pg_park_runs(&self, run_ids: &[String]) -> Result<(), StoreError> {
        if run_ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        self.fence(&tx).await?;
        let stmt = tx
            .prepare_cached(
                "SELECT record FROM runs WHERE run_id = ANY($1) AND status = 'running'
                   AND (owner IS NULL OR owner = $2) ORDER BY run_id FOR UPDATE",
            )
            .await
            .map_err(|e| self.db(e))?;
        let rows = tx
            .query(&stmt, &[&run_ids, &self.me.id])
            .await
            .map_err(|e| self.db(e))?;
        for r in &rows {
            let mut run = self.decode_run(r, 0)?;
            run.summary.status = RunState::Parked;
            // Unowned: any process may resume it now.
            self.put_run(&tx, &run, None).await?;
        }
        if !rows.is_empty() {
            self.notify(&tx, "work").await?;
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(())
    }

    fn decode_run(&self, row: &tokio_postgres::Row, col: usize) -> Result<RunRecord, StoreError> {
        let Json(run): Json<RunRecord> = row
            .try_get(col)
            .map_err(|e| self.corrupt(format!("table `runs`: bad run record: {e}")))?;
        Ok(run)
    }

    async fn read_steps(
        &self,
        c: &impl deadpool_postgres::GenericClient,
        run_id: &str,
    ) -> Result<Vec<StepReport>, StoreError> {
        let stmt = c
            .prepare_cached("SELECT entry FROM run_steps WHERE run_id = $1 ORDER BY seq")
            .await
            .map_err(|e| self.db(e))?;
        let rows = c.query(&stmt, &[&run_id]).await.map_err(|e| self.db(e))?;
        rows.iter()
            .map(|r| {
                r.try_get::<_, Json<StepEntry>>(0)
                    .map(|Json(e)| e.step)
                    .map_err(|e| {
                        self.corrupt(format!(
                            "table `run_steps`: run `{run_id}`: bad journal entry: {e}"
                        ))
                    })
            })
            .collect()
    }

    async fn claim_runs(&self, claim: Claim) -> Result<Vec<RunRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        self.fence(&tx).await?;
        let sql = format!(
            "WITH picked AS (
                SELECT r.run_id FROM runs r
                WHERE r.unfinished AND (r.owner IS NULL {}
                   OR NOT EXISTS (SELECT 1 FROM engine_processes p WHERE p.id = r.owner))
                ORDER BY r.run_id FOR UPDATE SKIP LOCKED)
             UPDATE runs x SET owner = $1 FROM picked WHERE x.run_id = picked.run_id
             RETURNING x.run_id, x.record",
            if claim == Claim::Unfinished {
                "OR r.owner = $1"
            } else {
                "AND $1::text IS NOT NULL"
            }
        );
        let stmt = tx.prepare_cached(&sql).await.map_err(|e| self.db(e))?;
        let rows = tx
            .query(&stmt, &[&self.me.id])
            .await
            .map_err(|e| self.db(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut run = self.decode_run(r, 1)?;
            if run.summary.status.is_finished() {
                tracing::warn!(run_id = %run.summary.run_id, "unfinished run with a finished record; run `engine store check`");
                continue;
            }
            run.steps = self.read_steps(&tx, &run.summary.run_id).await?;
            out.push(run);
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        out.sort_by(|a, b| a.summary.run_id.cmp(&b.summary.run_id));
        Ok(out)
    }

    pub(super) async fn pg_unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.claim_runs(Claim::Unfinished).await
    }

    pub(super) async fn pg_take_over_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let runs = self.claim_runs(Claim::Orphaned).await?;
        if !runs.is_empty() {
            tracing::warn!(
                runs = runs.len(),
                "taking over runs another engine process left"
            );
        }
        Ok(runs)
    }

    pub(super) async fn pg_list_runs(&self, f: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        if f.limit == 0 {
            return Ok(Vec::new());
        }
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT record FROM runs
                 WHERE ($1::text IS NULL OR playbook = $1) AND ($2::text IS NULL OR status = $2)
                 ORDER BY run_id COLLATE \"C\" DESC LIMIT $3",
            )
            .await
            .map_err(|e| self.db(e))?;
        let rows = conn
            .query(
                &stmt,
                &[
                    &f.playbook,
                    &f.status.map(|s| s.as_str()),
                    &i64::try_from(f.limit).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        rows.iter()
            .map(|r| self.decode_run(r, 0).map(|r| r.summary))
            .collect()
    }

    pub(super) async fn pg_run_record(
        &self,
        run_id: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT record FROM runs WHERE run_id = $1")
            .await
            .map_err(|e| self.db(e))?;
        let rows = conn
            .query(&stmt, &[&run_id])
            .await
            .map_err(|e| self.db(e))?;
        rows.first().map(|r| self.decode_run(r, 0)).transpose()
    }

    pub(super) async fn pg_get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let Some(mut run) = self.pg_run_record(run_id).await? else {
            return Ok(None);
        };
        let conn = self.conn().await?;
        run.steps = self.read_steps(&conn, run_id).await?;
        Ok(Some(run))
    }

    pub(super) async fn pg_inbox_entry(&self, seq: u64) -> Result<InboxEntry, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT 1 FROM inbox WHERE seq = $1")
            .await
            .map_err(|e| self.db(e))?;
        if !conn
            .query(&stmt, &[&(seq as i64)])
            .await
            .map_err(|e| self.db(e))?
            .is_empty()
        {
            return Ok(InboxEntry::Queued);
        }
        let stmt = conn
            .prepare_cached("SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM inbox_seqs")
            .await
            .map_err(|e| self.db(e))?;
        let last: i64 = conn
            .query_one(&stmt, &[])
            .await
            .map_err(|e| self.db(e))?
            .get(0);
        if seq == 0 || seq as i64 > last {
            return Ok(InboxEntry::Unknown);
        }
        let stmt = conn
            .prepare_cached(
                "SELECT run_id FROM inbox_runs WHERE seq = $1 ORDER BY run_id COLLATE \"C\"",
            )
            .await
            .map_err(|e| self.db(e))?;
        let runs = conn
            .query(&stmt, &[&(seq as i64)])
            .await
            .map_err(|e| self.db(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(InboxEntry::Dispatched(runs))
    }

    /// Takes concurrency key `key` for `run_id`, waiting while another live process's run
    /// holds it. Runs of this process are ordered by the engine's own key queue before
    /// they get here, so a row this process holds is stale and taken over.
    pub(super) async fn pg_acquire_key(&self, key: &str, run_id: &str) -> Result<(), StoreError> {
        let mut waited = false;
        loop {
            // Registered before the attempt, so a release in between is not missed.
            let released = self.me.keys.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let conn = self.conn().await?;
            let stmt = conn
                .prepare_cached(
                    "INSERT INTO concurrency_keys AS k (key, run_id, owner) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE SET run_id = EXCLUDED.run_id, owner = EXCLUDED.owner,
                       acquired_at = now()
                     WHERE k.run_id = EXCLUDED.run_id OR k.owner = EXCLUDED.owner
                        OR NOT EXISTS (SELECT 1 FROM engine_processes p WHERE p.id = k.owner)
                     RETURNING k.run_id",
                )
                .await
                .map_err(|e| self.db(e))?;
            let got = !conn
                .query(&stmt, &[&key, &run_id, &self.me.id])
                .await
                .map_err(|e| self.db(e))?
                .is_empty();
            drop(conn);
            if got {
                if waited {
                    tracing::debug!(%key, %run_id, "concurrency key taken after waiting for another process");
                }
                return Ok(());
            }
            if self.me.is_fenced() {
                return Err(self.backend("this process was declared dead; it takes no keys"));
            }
            waited = true;
            // A release elsewhere notifies; the timeout covers a lost notification.
            let _ = tokio::time::timeout(Duration::from_millis(250), released).await;
        }
    }

    pub(super) async fn pg_release_key(&self, key: &str, run_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        let stmt = tx
            .prepare_cached("DELETE FROM concurrency_keys WHERE key = $1 AND run_id = $2")
            .await
            .map_err(|e| self.db(e))?;
        let n = tx
            .execute(&stmt, &[&key, &run_id])
            .await
            .map_err(|e| self.db(e))?;
        if n > 0 {
            self.notify(&tx, "key").await?;
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(())
    }
}
