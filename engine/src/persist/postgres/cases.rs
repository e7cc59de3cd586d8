//! Cases in PostgreSQL: reads, the query planner (SQL over indexed columns), and writes
//! that commit the case, its index rows, its timeline entries, its case events (the
//! outbox) and its idempotency record in one transaction.

use std::collections::BTreeSet;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;

use super::PgStore;
use crate::cases::{
    apply, normalize_observable, ApplyContext, Case, CaseChange, CaseError, CaseEvent,
    CaseEventKind, CaseId, NewCase, TimelineEntry, Timestamp,
};
use crate::persist::ops::{apply_changes, idempotency_conflict, replayed, Committed};
use crate::persist::{CaseQuery, CaseSort, StoreError, WriteMeta, WriteOutcome};

/// The columns every case read selects: id, record, timeline.
const CASE_COLUMNS: &str = "c.id, c.record, \
    (SELECT json_agg(t.entry ORDER BY t.seq) FROM case_timeline t WHERE t.case_id = c.id)";

type Param = Box<dyn ToSql + Sync + Send>;

/// A planned query: `FROM ... WHERE ...`, its parameters, and its `ORDER BY`.
struct Planned {
    body: String,
    params: Vec<Param>,
    order: &'static str,
}

fn params(p: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Decodes a row of [`CASE_COLUMNS`] starting at column 0.
    pub(super) fn decode_case(&self, row: &Row) -> Result<Case, StoreError> {
        let id: i64 = row.try_get(0).map_err(|e| self.db(e))?;
        let cid = CaseId(id as u64);
        let Json(mut case): Json<Case> = row
            .try_get(1)
            .map_err(|e| self.corrupt(format!("table `cases`: {cid}: bad case JSON: {e}")))?;
        if case.id != cid {
            return Err(self.corrupt(format!("table `cases`: row {cid} holds {}", case.id)));
        }
        let timeline: Option<Json<Vec<TimelineEntry>>> = row.try_get(2).map_err(|e| {
            self.corrupt(format!(
                "table `case_timeline`: {cid}: bad timeline entry: {e}"
            ))
        })?;
        case.timeline = timeline.map(|t| t.0).unwrap_or_default();
        Ok(case)
    }

    pub(super) async fn read_case(
        &self,
        c: &impl GenericClient,
        id: CaseId,
        for_update: bool,
    ) -> Result<Option<Case>, StoreError> {
        if for_update {
            // Lock first, read after, in a statement of its own: a `FOR UPDATE` that waited
            // for another writer re-reads the locked row but not the timeline subquery,
            // which would still show the statement's older snapshot.
            let lock = c
                .prepare_cached("SELECT 1 FROM cases WHERE id = $1 FOR UPDATE")
                .await
                .map_err(|e| self.db(e))?;
            if c.query(&lock, &[&to_i64(id.0)])
                .await
                .map_err(|e| self.db(e))?
                .is_empty()
            {
                return Ok(None);
            }
        }
        let sql = format!("SELECT {CASE_COLUMNS} FROM cases c WHERE c.id = $1");
        let stmt = c.prepare_cached(&sql).await.map_err(|e| self.db(e))?;
        let rows = c
            .query(&stmt, &[&to_i64(id.0)])
            .await
            .map_err(|e| self.db(e))?;
        rows.first().map(|r| self.decode_case(r)).transpose()
    }

    pub(super) async fn pg_get(&self, id: CaseId) -> Result<Option<Case>, StoreError> {
        let conn = self.conn().await?;
        self.read_case(&conn, id, false).await
    }

    /// The `FROM ... WHERE ...` of a query, its parameters, and the `ORDER BY`; `None`
    /// when nothing can match.
    fn plan_query(&self, q: &CaseQuery) -> Result<Option<Planned>, StoreError> {
        let mut p: Vec<Param> = Vec::new();
        let mut conds: Vec<String> = Vec::new();
        let arg = |v: Param, p: &mut Vec<Param>| {
            p.push(v);
            format!("${}", p.len())
        };
        if let (Some(a), Some(b)) = (q.created_after, q.created_before) {
            if a >= b {
                return Ok(None);
            }
        }
        // Observable and tag criteria drive the query from their own (selective) tables.
        let from = if let Some((kind, value)) = &q.observable {
            let v = normalize_observable(*kind, value).map_err(CaseError::from)?;
            let k = arg(Box::new(kind.as_str().to_string()), &mut p);
            let v = arg(Box::new(v), &mut p);
            conds.push(format!("o.kind = {k} AND o.value = {v}"));
            "case_observables o JOIN cases c ON c.id = o.case_id"
        } else {
            "cases c"
        };
        if let Some(tag) = &q.tag {
            let t = arg(Box::new(tag.trim().to_string()), &mut p);
            conds.push(format!(
                "EXISTS (SELECT 1 FROM case_tags g WHERE g.case_id = c.id AND g.tag = {t})"
            ));
        }
        if !q.states.is_empty() {
            let states: Vec<String> = q.states.iter().map(|s| s.as_str().to_string()).collect();
            let s = arg(Box::new(states), &mut p);
            conds.push(format!("c.state = ANY({s})"));
        }
        if let Some(sev) = q.severity {
            let s = arg(Box::new(i16::from(sev.rank())), &mut p);
            conds.push(format!("c.severity = {s}"));
        }
        if let Some(a) = &q.assignee {
            let a = arg(Box::new(a.trim().to_string()), &mut p);
            conds.push(format!("c.assignee = {a}"));
        }
        if let Some(t) = q.created_after {
            let t = arg(Box::new(t.unix_millis()), &mut p);
            conds.push(format!("c.created_at >= {t}"));
        }
        if let Some(t) = q.created_before {
            let t = arg(Box::new(t.unix_millis()), &mut p);
            conds.push(format!("c.created_at < {t}"));
        }
        let order = match q.sort {
            CaseSort::CreatedAtAsc => "c.created_at, c.id",
            CaseSort::CreatedAtDesc => "c.created_at DESC, c.id DESC",
            CaseSort::UpdatedAtAsc => "c.updated_at, c.id",
            CaseSort::UpdatedAtDesc => "c.updated_at DESC, c.id DESC",
            CaseSort::SeverityAsc => "c.severity, c.created_at, c.id",
            CaseSort::SeverityDesc => "c.severity DESC, c.created_at DESC, c.id DESC",
        };
        let mut sql = format!(" FROM {from}");
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        Ok(Some(Planned {
            body: sql,
            params: p,
            order,
        }))
    }

    pub(super) async fn pg_query(&self, q: &CaseQuery) -> Result<Vec<Case>, StoreError> {
        if q.limit == 0 {
            // Still reject an invalid observable, like the key-value stores.
            self.plan_query(q)?;
            return Ok(Vec::new());
        }
        let Some(Planned {
            body,
            params: mut p,
            order,
        }) = self.plan_query(q)?
        else {
            return Ok(Vec::new());
        };
        p.push(Box::new(to_i64(q.limit as u64)));
        let sql = format!(
            "SELECT {CASE_COLUMNS}{body} ORDER BY {order} LIMIT ${}",
            p.len()
        );
        let conn = self.conn().await?;
        let stmt = conn.prepare_cached(&sql).await.map_err(|e| self.db(e))?;
        let rows = conn
            .query(&stmt, &params(&p))
            .await
            .map_err(|e| self.db(e))?;
        rows.iter().map(|r| self.decode_case(r)).collect()
    }

    pub(super) async fn pg_count(&self, q: &CaseQuery) -> Result<u64, StoreError> {
        let Some(Planned {
            body, params: p, ..
        }) = self.plan_query(q)?
        else {
            return Ok(0);
        };
        let sql = format!("SELECT count(*){body}");
        let conn = self.conn().await?;
        let stmt = conn.prepare_cached(&sql).await.map_err(|e| self.db(e))?;
        let row = conn
            .query_one(&stmt, &params(&p))
            .await
            .map_err(|e| self.db(e))?;
        let n: i64 = row.get(0);
        Ok(n.max(0) as u64)
    }

    pub(super) async fn pg_sla_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Case>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {CASE_COLUMNS} FROM cases c WHERE c.sla_due_at <= $1 ORDER BY c.sla_due_at, c.id LIMIT $2"
            ))
            .await
            .map_err(|e| self.db(e))?;
        let rows = conn
            .query(&stmt, &[&now.unix_millis(), &to_i64(limit as u64)])
            .await
            .map_err(|e| self.db(e))?;
        rows.iter().map(|r| self.decode_case(r)).collect()
    }

    /// Locks the idempotency key for this transaction and returns its recorded outcome.
    async fn replay(
        &self,
        tx: &Transaction<'_>,
        meta: &WriteMeta,
    ) -> Result<Option<Committed>, StoreError> {
        let Some(k) = &meta.idempotency else {
            return Ok(None);
        };
        // Two processes running the same step (one took over from the other) serialise
        // here, so the second one replays the first one's result.
        let lock = tx
            .prepare_cached(
                "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2 || chr(31) || $3, 0))",
            )
            .await
            .map_err(|e| self.db(e))?;
        tx.execute(&lock, &[&self.schema, &k.run_id, &k.step_id])
            .await
            .map_err(|e| self.db(e))?;
        let stmt = tx
            .prepare_cached("SELECT result FROM idempotency WHERE run_id = $1 AND step_id = $2")
            .await
            .map_err(|e| self.db(e))?;
        let rows = tx
            .query(&stmt, &[&k.run_id, &k.step_id])
            .await
            .map_err(|e| self.db(e))?;
        match rows.first() {
            None => Ok(None),
            Some(r) => {
                let Json(c): Json<Committed> = r.try_get(0).map_err(|e| {
                    self.corrupt(format!(
                        "table `idempotency`: (run `{}`, step `{}`): bad idempotency record: {e}",
                        k.run_id, k.step_id
                    ))
                })?;
                Ok(Some(c))
            }
        }
    }

    async fn record_idempotency(
        &self,
        tx: &Transaction<'_>,
        meta: &WriteMeta,
        out: &WriteOutcome,
    ) -> Result<(), StoreError> {
        let Some(k) = &meta.idempotency else {
            return Ok(());
        };
        let rec = Committed {
            case_id: out.case.id,
            created: out.created,
            case: out.case.clone(),
            event_ids: out.event_ids.clone(),
        };
        let stmt = tx
            .prepare_cached(
                "INSERT INTO idempotency (run_id, step_id, case_id, result) VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(|e| self.db(e))?;
        tx.execute(
            &stmt,
            &[&k.run_id, &k.step_id, &to_i64(out.case.id.0), &Json(&rec)],
        )
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Event ids for `n` events, ascending.
    async fn event_ids(&self, tx: &Transaction<'_>, n: usize) -> Result<Vec<u64>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let stmt = tx
            .prepare_cached("SELECT nextval('case_event_ids') FROM generate_series(1, $1)")
            .await
            .map_err(|e| self.db(e))?;
        let rows = tx
            .query(&stmt, &[&(n as i32)])
            .await
            .map_err(|e| self.db(e))?;
        let mut ids: Vec<u64> = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    async fn make_events(
        &self,
        tx: &Transaction<'_>,
        kinds: &[CaseEventKind],
        before: Option<&Case>,
        after: &Case,
        meta: &WriteMeta,
    ) -> Result<Vec<CaseEvent>, StoreError> {
        let ids = self.event_ids(tx, kinds.len()).await?;
        Ok(kinds
            .iter()
            .zip(ids)
            .map(|(k, id)| CaseEvent::new(id, *k, before, after, &meta.actor, meta.at))
            .collect())
    }

    /// Writes the case row, its index rows and new timeline entries, and its events.
    pub(super) async fn write_case(
        &self,
        tx: &Transaction<'_>,
        before: Option<&Case>,
        after: &Case,
        events: &[CaseEvent],
    ) -> Result<(), StoreError> {
        let mut record = after.clone();
        let timeline = std::mem::take(&mut record.timeline);
        let id = to_i64(after.id.0);
        let sla_due = match (after.sla.due_at, after.sla.breached, after.state.is_open()) {
            (Some(due), false, true) => Some(due.unix_millis()),
            _ => None,
        };
        let stmt = tx
            .prepare_cached(
                "INSERT INTO cases (id, state, is_open, severity, assignee, dedup_key, created_at, updated_at, sla_due_at, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, is_open = EXCLUDED.is_open,
                   severity = EXCLUDED.severity, assignee = EXCLUDED.assignee,
                   dedup_key = EXCLUDED.dedup_key, updated_at = EXCLUDED.updated_at,
                   sla_due_at = EXCLUDED.sla_due_at, record = EXCLUDED.record",
            )
            .await
            .map_err(|e| self.db(e))?;
        tx.execute(
            &stmt,
            &[
                &id,
                &after.state.as_str(),
                &after.state.is_open(),
                &i16::from(after.severity.rank()),
                &after.assignee,
                &after.dedup_key,
                &after.created_at.unix_millis(),
                &after.updated_at.unix_millis(),
                &sla_due,
                &Json(&record),
            ],
        )
        .await
        .map_err(|e| self.db(e))?;
        // Observables and tags: the difference only.
        let old_obs: BTreeSet<(&str, &str)> = before
            .map(|b| {
                b.observables
                    .iter()
                    .map(|o| (o.kind.as_str(), o.value.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let new_obs: BTreeSet<(&str, &str)> = after
            .observables
            .iter()
            .map(|o| (o.kind.as_str(), o.value.as_str()))
            .collect();
        let (add_k, add_v): (Vec<&str>, Vec<&str>) = new_obs.difference(&old_obs).copied().unzip();
        let (del_k, del_v): (Vec<&str>, Vec<&str>) = old_obs.difference(&new_obs).copied().unzip();
        if !add_k.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO case_observables (case_id, kind, value, created_at)
                     SELECT $1, k, v, $4 FROM unnest($2::text[], $3::text[]) AS x(k, v)",
                )
                .await
                .map_err(|e| self.db(e))?;
            tx.execute(
                &stmt,
                &[&id, &add_k, &add_v, &after.created_at.unix_millis()],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        if !del_k.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM case_observables o USING unnest($2::text[], $3::text[]) AS x(k, v)
                     WHERE o.case_id = $1 AND o.kind = x.k AND o.value = x.v",
                )
                .await
                .map_err(|e| self.db(e))?;
            tx.execute(&stmt, &[&id, &del_k, &del_v])
                .await
                .map_err(|e| self.db(e))?;
        }
        let old_tags: BTreeSet<&str> = before
            .map(|b| b.tags.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let new_tags: BTreeSet<&str> = after.tags.iter().map(String::as_str).collect();
        let add: Vec<&str> = new_tags.difference(&old_tags).copied().collect();
        let del: Vec<&str> = old_tags.difference(&new_tags).copied().collect();
        if !add.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO case_tags (case_id, tag, created_at) SELECT $1, t, $3 FROM unnest($2::text[]) AS t",
                )
                .await
                .map_err(|e| self.db(e))?;
            tx.execute(&stmt, &[&id, &add, &after.created_at.unix_millis()])
                .await
                .map_err(|e| self.db(e))?;
        }
        if !del.is_empty() {
            let stmt = tx
                .prepare_cached("DELETE FROM case_tags WHERE case_id = $1 AND tag = ANY($2)")
                .await
                .map_err(|e| self.db(e))?;
            tx.execute(&stmt, &[&id, &del])
                .await
                .map_err(|e| self.db(e))?;
        }
        // The timeline only grows: append what is new (rewrite it all if it did not).
        let old_tl = before.map_or(&[][..], |b| b.timeline.as_slice());
        let from = if timeline.len() >= old_tl.len() && timeline[..old_tl.len()] == *old_tl {
            old_tl.len()
        } else {
            let stmt = tx
                .prepare_cached("DELETE FROM case_timeline WHERE case_id = $1")
                .await
                .map_err(|e| self.db(e))?;
            tx.execute(&stmt, &[&id]).await.map_err(|e| self.db(e))?;
            0
        };
        if from < timeline.len() {
            let seqs: Vec<i32> = (from..timeline.len()).map(|i| i as i32).collect();
            let entries: Vec<Json<&TimelineEntry>> = timeline[from..].iter().map(Json).collect();
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO case_timeline (case_id, seq, entry) SELECT $1, s, e FROM unnest($2::int4[], $3::json[]) AS x(s, e)",
                )
                .await
                .map_err(|e| self.db(e))?;
            tx.execute(&stmt, &[&id, &seqs, &entries])
                .await
                .map_err(|e| self.db(e))?;
        }
        if !events.is_empty() {
            let ids: Vec<i64> = events.iter().map(|e| to_i64(e.id)).collect();
            let bodies: Vec<Json<&CaseEvent>> = events.iter().map(Json).collect();
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO case_events (id, case_id, event) SELECT i, $1, e FROM unnest($2::int8[], $3::json[]) AS x(i, e)",
                )
                .await
                .map_err(|e| self.db(e))?;
            tx.execute(&stmt, &[&id, &ids, &bodies])
                .await
                .map_err(|e| self.db(e))?;
            self.notify(tx, "work").await?;
        }
        Ok(())
    }

    pub(super) async fn pg_create(
        &self,
        new: NewCase,
        meta: &WriteMeta,
    ) -> Result<WriteOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        if let Some(c) = self.replay(&tx, meta).await? {
            return Ok(replayed(c));
        }
        // Creates are serialised on the counter row: the dedup check below then sees every
        // case committed before, whichever process made it.
        let stmt = tx
            .prepare_cached(
                "SELECT value FROM caseflow_counters WHERE name = 'next_case_id' FOR UPDATE",
            )
            .await
            .map_err(|e| self.db(e))?;
        let rows = tx.query(&stmt, &[]).await.map_err(|e| self.db(e))?;
        let next: i64 = match rows.first() {
            Some(r) => r.get(0),
            None => return Err(self.corrupt("table `caseflow_counters` has no `next_case_id`")),
        };
        if let Some(d) = &new.dedup_key {
            let stmt = tx
                .prepare_cached(
                    "SELECT id FROM cases WHERE dedup_key = $1 AND is_open ORDER BY id DESC LIMIT 1",
                )
                .await
                .map_err(|e| self.db(e))?;
            let rows = tx.query(&stmt, &[d]).await.map_err(|e| self.db(e))?;
            if let Some(r) = rows.first() {
                let id = CaseId(r.get::<_, i64>(0) as u64);
                if let Some(open) = self.read_case(&tx, id, false).await? {
                    let out = WriteOutcome {
                        case: open,
                        created: false,
                        replayed: false,
                        events: Vec::new(),
                        event_ids: Vec::new(),
                    };
                    self.record_idempotency(&tx, meta, &out).await?;
                    tx.commit().await.map_err(|e| self.db(e))?;
                    return Ok(out);
                }
            }
        }
        let id = CaseId(next.max(1) as u64);
        let ctx = ApplyContext {
            actor: meta.actor.clone(),
            now: meta.at,
            new_id: id,
        };
        let applied = apply(None, &CaseChange::Create(new), &ctx)?;
        let events = self
            .make_events(&tx, &applied.events, None, &applied.case, meta)
            .await?;
        self.write_case(&tx, None, &applied.case, &events).await?;
        let stmt = tx
            .prepare_cached("UPDATE caseflow_counters SET value = $1 WHERE name = 'next_case_id'")
            .await
            .map_err(|e| self.db(e))?;
        tx.execute(&stmt, &[&to_i64(id.0 + 1)])
            .await
            .map_err(|e| self.db(e))?;
        let out = WriteOutcome {
            case: applied.case,
            created: true,
            replayed: false,
            event_ids: events.iter().map(|e| e.id).collect(),
            events,
        };
        self.record_idempotency(&tx, meta, &out).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(out)
    }

    pub(super) async fn pg_update(
        &self,
        id: CaseId,
        changes: &[CaseChange],
        meta: &WriteMeta,
    ) -> Result<WriteOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        if let Some(c) = self.replay(&tx, meta).await? {
            if c.case_id != id {
                return Err(idempotency_conflict(meta, c.case_id, id));
            }
            return Ok(replayed(c));
        }
        let before = self
            .read_case(&tx, id, true)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let (case, kinds) = apply_changes(&before, changes, meta)?;
        let events = if kinds.is_empty() {
            Vec::new()
        } else {
            let events = self
                .make_events(&tx, &kinds, Some(&before), &case, meta)
                .await?;
            self.write_case(&tx, Some(&before), &case, &events).await?;
            events
        };
        let out = WriteOutcome {
            case,
            created: false,
            replayed: false,
            event_ids: events.iter().map(|e| e.id).collect(),
            events,
        };
        self.record_idempotency(&tx, meta, &out).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(out)
    }
}
