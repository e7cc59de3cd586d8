//! `engine store check` for PostgreSQL: every derived row (indexed columns, observables,
//! tags, timeline numbering) agrees with the case records, the outbox and the journal
//! refer to what exists, and the counters are ahead of what they numbered.

use std::collections::{BTreeSet, HashMap, HashSet};

use tokio_postgres::types::Json;

use super::runs::StepEntry;
use super::PgStore;
use crate::cases::{Case, CaseEvent, CaseId, Timestamp};
use crate::persist::runs::RunRecord;
use crate::persist::StoreError;

impl PgStore {
    pub(super) async fn pg_check(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn().await?;
        let q = |sql: &'static str| {
            let conn = &conn;
            async move { conn.query(sql, &[]).await.map_err(|e| self.db(e)) }
        };
        let mut problems = Vec::new();
        let mut obs: HashMap<i64, BTreeSet<(String, String, i64)>> = HashMap::new();
        for r in q("SELECT case_id, kind, value, created_at FROM case_observables").await? {
            obs.entry(r.get(0))
                .or_default()
                .insert((r.get(1), r.get(2), r.get(3)));
        }
        let mut tags: HashMap<i64, BTreeSet<(String, i64)>> = HashMap::new();
        for r in q("SELECT case_id, tag, created_at FROM case_tags").await? {
            tags.entry(r.get(0))
                .or_default()
                .insert((r.get(1), r.get(2)));
        }
        let mut timeline: HashMap<i64, Vec<i32>> = HashMap::new();
        for r in q("SELECT case_id, seq FROM case_timeline ORDER BY case_id, seq").await? {
            timeline.entry(r.get(0)).or_default().push(r.get(1));
        }
        let mut ids = HashSet::new();
        let mut max_id = 0i64;
        for r in q(
            "SELECT id, state, is_open, severity, assignee, dedup_key, created_at, updated_at, sla_due_at, record FROM cases",
        )
        .await?
        {
            let id: i64 = r.get(0);
            let cid = CaseId(id as u64);
            ids.insert(id);
            max_id = max_id.max(id);
            let c: Case = match r.try_get::<_, Json<Case>>(9) {
                Ok(Json(c)) => c,
                Err(e) => {
                    problems.push(format!("table `cases`: {cid}: bad case JSON: {e}"));
                    continue;
                }
            };
            if c.id != cid {
                problems.push(format!("table `cases`: row {cid} holds {}", c.id));
            }
            let sla_due = match (c.sla.due_at, c.sla.breached, c.state.is_open()) {
                (Some(d), false, true) => Some(d.unix_millis()),
                _ => None,
            };
            let columns_ok = r.get::<_, String>(1) == c.state.as_str()
                && r.get::<_, bool>(2) == c.state.is_open()
                && r.get::<_, i16>(3) == i16::from(c.severity.rank())
                && r.get::<_, Option<String>>(4) == c.assignee
                && r.get::<_, Option<String>>(5) == c.dedup_key
                && r.get::<_, i64>(6) == c.created_at.unix_millis()
                && r.get::<_, i64>(7) == c.updated_at.unix_millis()
                && r.get::<_, Option<i64>>(8) == sla_due;
            if !columns_ok {
                problems.push(format!(
                    "table `cases`: {cid}: indexed columns disagree with the record"
                ));
            }
            let created = c.created_at.unix_millis();
            let want_obs: BTreeSet<(String, String, i64)> = c
                .observables
                .iter()
                .map(|o| (o.kind.as_str().to_string(), o.value.clone(), created))
                .collect();
            let have_obs = obs.remove(&id).unwrap_or_default();
            for o in want_obs.difference(&have_obs) {
                problems.push(format!(
                    "table `case_observables`: entry for {cid} ({} {}): missing",
                    o.0, o.1
                ));
            }
            for o in have_obs.difference(&want_obs) {
                problems.push(format!(
                    "table `case_observables`: entry for {cid} ({} {}): stale, the case does not have it",
                    o.0, o.1
                ));
            }
            let want_tags: BTreeSet<(String, i64)> =
                c.tags.iter().map(|t| (t.clone(), created)).collect();
            let have_tags = tags.remove(&id).unwrap_or_default();
            for t in want_tags.difference(&have_tags) {
                problems.push(format!(
                    "table `case_tags`: entry for {cid} ({}): missing",
                    t.0
                ));
            }
            for t in have_tags.difference(&want_tags) {
                problems.push(format!(
                    "table `case_tags`: entry for {cid} ({}): stale, the case does not have it",
                    t.0
                ));
            }
            let seqs = timeline.remove(&id).unwrap_or_default();
            if seqs.iter().enumerate().any(|(i, s)| *s != i as i32) {
                problems.push(format!(
                    "table `case_timeline`: {cid}: entries are not numbered 0..{}",
                    seqs.len()
                ));
            }
        }
        let orphans: BTreeSet<i64> = obs.into_keys().chain(tags.into_keys()).collect();
        for id in orphans {
            problems.push(format!(
                "index rows for {} which has no case",
                CaseId(id as u64)
            ));
        }
        match q("SELECT value FROM caseflow_counters WHERE name = 'next_case_id'")
            .await?
            .first()
        {
            Some(r) => {
                let next: i64 = r.get(0);
                if max_id > 0 && max_id >= next {
                    problems.push(format!(
                        "counter next_case_id {next} is not above the largest case id {max_id}"
                    ));
                }
            }
            None => problems.push("table `caseflow_counters` has no `next_case_id`".into()),
        }
        let last_event: i64 = q(
            "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM case_event_ids",
        )
        .await?
        .first()
        .map_or(0, |r| r.get(0));
        let mut pending = HashSet::new();
        for r in q("SELECT id, case_id, event FROM case_events").await? {
            let id: i64 = r.get(0);
            pending.insert(id);
            match r.try_get::<_, Json<CaseEvent>>(2) {
                Ok(Json(e)) => {
                    if e.id as i64 != id {
                        problems.push(format!("outbox event under id {id} holds id {}", e.id));
                    }
                    if e.case_id.0 as i64 != r.get::<_, i64>(1)
                        || !ids.contains(&(e.case_id.0 as i64))
                    {
                        problems.push(format!("outbox event {id} refers to missing {}", e.case_id));
                    }
                }
                Err(e) => problems.push(format!(
                    "table `case_events`: event {id}: bad case event JSON: {e}"
                )),
            }
            if id > last_event {
                problems.push(format!(
                    "outbox event {id} is above the sequence case_event_ids ({last_event})"
                ));
            }
        }
        for r in q("SELECT event_id, playbook FROM case_event_deliveries").await? {
            let id: i64 = r.get(0);
            if !pending.contains(&id) {
                problems.push(format!(
                    "table `case_event_deliveries`: delivery record ({id}, `{}`) for an event that is not in the outbox",
                    r.get::<_, String>(1)
                ));
            }
        }
        let mut runs = HashSet::new();
        for r in q("SELECT run_id, status, unfinished, record FROM runs").await? {
            let id: String = r.get(0);
            match r.try_get::<_, Json<RunRecord>>(3) {
                Ok(Json(run)) => {
                    if run.summary.run_id != id {
                        problems.push(format!(
                            "table `runs`: record under `{id}` holds run `{}`",
                            run.summary.run_id
                        ));
                    }
                    let status: String = r.get(1);
                    let unfinished: bool = r.get(2);
                    if status != run.summary.status.as_str() {
                        problems.push(format!(
                            "run `{id}`: status column `{status}`, record `{}`",
                            run.summary.status.as_str()
                        ));
                    }
                    match (run.summary.status.is_finished(), unfinished) {
                        (false, false) => problems.push(format!(
                            "run `{id}` is {} but not listed as unfinished (it would never resume)",
                            run.summary.status.as_str()
                        )),
                        (true, true) => problems.push(format!(
                            "run `{id}` is {} but still listed as unfinished",
                            run.summary.status.as_str()
                        )),
                        _ => {}
                    }
                }
                Err(e) => problems.push(format!("table `runs`: `{id}`: bad run record: {e}")),
            }
            runs.insert(id);
        }
        for r in q("SELECT run_id, step_id, entry FROM run_steps").await? {
            let run: String = r.get(0);
            let step: String = r.get(1);
            if !runs.contains(&run) {
                problems.push(format!(
                    "table `run_steps`: step `{step}` of run `{run}`, which has no record"
                ));
            }
            if let Err(e) = r.try_get::<_, Json<StepEntry>>(2) {
                problems.push(format!(
                    "table `run_steps`: run `{run}` step `{step}`: bad journal entry: {e}"
                ));
            }
        }
        for r in q("SELECT seq, run_id FROM inbox_runs").await? {
            let run: String = r.get(1);
            if !runs.contains(&run) {
                problems.push(format!(
                    "table `inbox_runs`: inbox entry {} started run `{run}`, which has no record",
                    r.get::<_, i64>(0)
                ));
            }
        }
        for r in q("SELECT run_id, step_id, result FROM idempotency").await? {
            let bad = match r.try_get::<_, Json<serde_json::Value>>(2) {
                Err(e) => Some(e.to_string()),
                Ok(Json(v)) => {
                    serde_json::from_value::<Case>(v.get("case").cloned().unwrap_or_default())
                        .err()
                        .map(|e| e.to_string())
                }
            };
            if let Some(e) = bad {
                problems.push(format!(
                    "table `idempotency`: (run `{}`, step `{}`): bad idempotency record: {e}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1)
                ));
            }
        }
        for r in q("SELECT seq, received_at FROM inbox").await? {
            let at: i64 = r.get(1);
            if Timestamp::from_unix_millis(at).is_err() {
                problems.push(format!(
                    "table `inbox`: entry {}: bad time {at}",
                    r.get::<_, i64>(0)
                ));
            }
        }
        Ok(problems)
    }
}
