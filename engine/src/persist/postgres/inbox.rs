//! The inbox (incoming events and their keys), the case-event outbox as the dispatcher
//! sees it (claims, deliveries, acknowledgements), and cursors.
//!
//! Claims: `pending_incoming` and `pending_events` return rows that no live process
//! claimed, or that this process claimed, oldest first, and mark them as this process's
//! (`FOR UPDATE SKIP LOCKED`: rows another transaction is claiming right now are skipped,
//! not waited for). A row is consumed by `start_runs` or `ack_event`, whoever claimed it;
//! a claim only decides who sees the row.

use std::collections::HashSet;

use tokio_postgres::types::Json;

use super::PgStore;
use crate::cases::{CaseEvent, Timestamp};
use crate::persist::incoming::{Enqueued, Incoming, NewIncoming};
use crate::persist::{Delivery, StoreError};

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The claim condition on a table aliased `x` with a `claimed_by` column; `$1` is this
/// process.
const CLAIMABLE: &str = "(x.claimed_by IS NULL OR x.claimed_by = $1 \
    OR NOT EXISTS (SELECT 1 FROM engine_processes p WHERE p.id = x.claimed_by))";

impl PgStore {
    pub(super) async fn pg_record_incoming(
        &self,
        key: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO incoming_keys (key, received_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .await
            .map_err(|e| self.db(e))?;
        let n = conn
            .execute(&stmt, &[&key, &at.unix_millis()])
            .await
            .map_err(|e| self.db(e))?;
        Ok(n == 1)
    }

    pub(super) async fn pg_enqueue(
        &self,
        items: &[NewIncoming],
    ) -> Result<Vec<Enqueued>, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        // Keys repeated within the call: only the first counts.
        let mut seen = HashSet::new();
        let mut first_of_key = vec![false; items.len()];
        let (mut keys, mut ats) = (Vec::new(), Vec::new());
        for (i, item) in items.iter().enumerate() {
            if let Some(k) = &item.key {
                if seen.insert(k.as_str()) {
                    first_of_key[i] = true;
                    keys.push(k.as_str());
                    ats.push(item.received_at.unix_millis());
                }
            }
        }
        // A key another transaction is inserting makes this one wait for it: then it is a
        // duplicate, or (if that one rolled back) new. Never both new.
        let new_keys: HashSet<String> = if keys.is_empty() {
            HashSet::new()
        } else {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO incoming_keys (key, received_at)
                     SELECT k, a FROM unnest($1::text[], $2::int8[]) AS x(k, a)
                     ON CONFLICT (key) DO NOTHING RETURNING key",
                )
                .await
                .map_err(|e| self.db(e))?;
            tx.query(&stmt, &[&keys, &ats])
                .await
                .map_err(|e| self.db(e))?
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        let take: Vec<bool> = items
            .iter()
            .enumerate()
            .map(|(i, item)| match &item.key {
                None => true,
                Some(k) => first_of_key[i] && new_keys.contains(k),
            })
            .collect();
        let n = take.iter().filter(|t| **t).count();
        let mut out = Vec::with_capacity(items.len());
        if n > 0 {
            let stmt = tx
                .prepare_cached("SELECT nextval('inbox_seqs') FROM generate_series(1, $1)")
                .await
                .map_err(|e| self.db(e))?;
            let mut seqs: Vec<i64> = tx
                .query(&stmt, &[&(n as i32)])
                .await
                .map_err(|e| self.db(e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            seqs.sort_unstable();
            let mut seqs = seqs.into_iter();
            let (mut s_seq, mut s_source, mut s_key, mut s_event, mut s_at) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (item, go) in items.iter().zip(&take) {
                if !go {
                    out.push(Enqueued {
                        seq: None,
                        duplicate: true,
                    });
                    continue;
                }
                let seq = seqs
                    .next()
                    .ok_or_else(|| self.backend("the inbox sequence gave too few numbers"))?;
                s_seq.push(seq);
                s_source.push(item.source.as_str());
                s_key.push(item.key.as_deref());
                s_event.push(Json(&item.event));
                s_at.push(item.received_at.unix_millis());
                out.push(Enqueued {
                    seq: Some(seq as u64),
                    duplicate: false,
                });
            }
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO inbox (seq, source, key, event, received_at)
                     SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::json[], $5::int8[])",
                )
                .await
                .map_err(|e| self.db(e))?;
            tx.execute(&stmt, &[&s_seq, &s_source, &s_key, &s_event, &s_at])
                .await
                .map_err(|e| self.db(e))?;
            self.notify(&tx, "work").await?;
        } else {
            out.extend(items.iter().map(|_| Enqueued {
                seq: None,
                duplicate: true,
            }));
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(out)
    }

    /// Claims up to `limit` claimable rows of `table` (ordered by `key`) for this process
    /// and returns their `returning` columns (the table is aliased `i`). Rows another
    /// transaction is claiming right now are skipped, so two processes never get the same.
    async fn claim_rows(
        &self,
        table: &str,
        key: &str,
        returning: &str,
        limit: usize,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.refuse_if_fenced()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "WITH picked AS (
                    SELECT x.{key} FROM {table} x WHERE {CLAIMABLE}
                    ORDER BY x.{key} LIMIT $2 FOR UPDATE SKIP LOCKED)
                 UPDATE {table} i SET claimed_by = $1 FROM picked WHERE i.{key} = picked.{key}
                 RETURNING {returning}"
            ))
            .await
            .map_err(|e| self.db(e))?;
        conn.query(&stmt, &[&self.me.id, &to_i64(limit as u64)])
            .await
            .map_err(|e| self.db(e))
    }

    pub(super) async fn pg_pending_incoming(
        &self,
        limit: usize,
    ) -> Result<Vec<Incoming>, StoreError> {
        let rows = self
            .claim_rows(
                "inbox",
                "seq",
                "i.seq, i.source, i.key, i.event, i.received_at",
                limit,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let seq: i64 = r.get(0);
            let Json(event) = r.try_get(3).map_err(|e| {
                self.corrupt(format!("table `inbox`: entry {seq}: bad event JSON: {e}"))
            })?;
            let at: i64 = r.get(4);
            out.push(Incoming {
                seq: seq as u64,
                source: r.get(1),
                key: r.get(2),
                event,
                received_at: Timestamp::from_unix_millis(at).map_err(|e| {
                    self.corrupt(format!("table `inbox`: entry {seq}: bad time: {e}"))
                })?,
            });
        }
        out.sort_by_key(|i| i.seq);
        Ok(out)
    }

    pub(super) async fn pg_inbox_depth(&self) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT count(*) FROM inbox")
            .await
            .map_err(|e| self.db(e))?;
        let n: i64 = conn
            .query_one(&stmt, &[])
            .await
            .map_err(|e| self.db(e))?
            .get(0);
        Ok(n.max(0) as u64)
    }

    pub(super) async fn pg_pending_events(
        &self,
        limit: usize,
    ) -> Result<Vec<CaseEvent>, StoreError> {
        let rows = self
            .claim_rows("case_events", "id", "i.id, i.event", limit)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.get(0);
            let Json(ev): Json<CaseEvent> = r.try_get(1).map_err(|e| {
                self.corrupt(format!(
                    "table `case_events`: event {id}: bad case event JSON: {e}"
                ))
            })?;
            out.push(ev);
        }
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    pub(super) async fn pg_ack_event(&self, event_id: u64) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        let del = tx
            .prepare_cached("DELETE FROM case_events WHERE id = $1")
            .await
            .map_err(|e| self.db(e))?;
        let n = tx
            .execute(&del, &[&to_i64(event_id)])
            .await
            .map_err(|e| self.db(e))?;
        let deliveries = tx
            .prepare_cached("DELETE FROM case_event_deliveries WHERE event_id = $1")
            .await
            .map_err(|e| self.db(e))?;
        tx.execute(&deliveries, &[&to_i64(event_id)])
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(n == 1)
    }

    pub(super) async fn pg_start_delivery(
        &self,
        event_id: u64,
        playbook: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO case_event_deliveries (event_id, playbook, run_id) VALUES ($1, $2, $3)
                 ON CONFLICT (event_id, playbook) DO NOTHING",
            )
            .await
            .map_err(|e| self.db(e))?;
        let n = conn
            .execute(&stmt, &[&to_i64(event_id), &playbook, &run_id])
            .await
            .map_err(|e| self.db(e))?;
        Ok(n == 1)
    }

    pub(super) async fn pg_deliveries(&self, event_id: u64) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT playbook, run_id FROM case_event_deliveries WHERE event_id = $1 ORDER BY playbook COLLATE \"C\"",
            )
            .await
            .map_err(|e| self.db(e))?;
        let rows = conn
            .query(&stmt, &[&to_i64(event_id)])
            .await
            .map_err(|e| self.db(e))?;
        Ok(rows
            .iter()
            .map(|r| Delivery {
                event_id,
                playbook: r.get(0),
                run_id: r.get(1),
            })
            .collect())
    }

    pub(super) async fn pg_get_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT value FROM cursors WHERE name = $1")
            .await
            .map_err(|e| self.db(e))?;
        let rows = conn.query(&stmt, &[&name]).await.map_err(|e| self.db(e))?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    pub(super) async fn pg_put_cursor(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        // On disk before it returns, whatever the session's durability.
        tx.batch_execute("SET LOCAL synchronous_commit = on")
            .await
            .map_err(|e| self.db(e))?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO cursors (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            )
            .await
            .map_err(|e| self.db(e))?;
        tx.execute(&stmt, &[&name, &value])
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(())
    }
}
