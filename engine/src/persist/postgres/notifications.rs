//! The notification outbox in PostgreSQL (`notifications`, `notification_channels`), shared
//! by every engine process on the schema: a notification queued by one process is
//! delivered by whichever process's pass gets to it first.
//!
//! A claim is `claimed_by` on the (notification, channel) row, taken in one statement that
//! locks the row: a second process waits for the first's commit, then sees the claim and is
//! refused. A claim lasts as long as its process is registered in `engine_processes`: a
//! process that died is removed within a second (its session lock goes with its connection),
//! one that hangs once its heartbeat is older than `store.postgres.lease`, and its claims
//! are free from then on. Recording an attempt releases the claim in the same statement.

use tokio_postgres::types::Json;

use super::PgStore;
use crate::notify::{Delivery, DeliveryStatus, Notification, Pending};
use crate::persist::StoreError;

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    pub(super) async fn pg_notification_push(
        &self,
        n: &Notification,
        owed: &[String],
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO notifications (id, notification) VALUES ($1, $2)
                 ON CONFLICT (id) DO NOTHING RETURNING seq",
            )
            .await
            .map_err(|e| self.db(e))?;
        let rows = tx
            .query(&stmt, &[&n.id, &Json(n)])
            .await
            .map_err(|e| self.db(e))?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        let seq: i64 = row.get(0);
        if !owed.is_empty() {
            // A record made before the push (an import) keeps deciding the channel.
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO notification_channels (id, channel, seq, owed)
                     SELECT $1, c, $2, true FROM unnest($3::text[]) c
                     ON CONFLICT (id, channel) DO UPDATE SET owed = true, seq = EXCLUDED.seq",
                )
                .await
                .map_err(|e| self.db(e))?;
            let mut channels: Vec<&str> = Vec::new();
            for c in owed {
                if !channels.contains(&c.as_str()) {
                    channels.push(c);
                }
            }
            tx.execute(&stmt, &[&n.id, &seq, &channels])
                .await
                .map_err(|e| self.db(e))?;
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(true)
    }

    pub(super) async fn pg_notification_record(&self, d: &Delivery) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO notification_channels (id, channel, seq, settled, delivery, not_before_ms)
                 VALUES ($1, $2, COALESCE((SELECT seq FROM notifications WHERE id = $1), 0), $3, $4, $5)
                 ON CONFLICT (id, channel) DO UPDATE SET
                    settled = EXCLUDED.settled, delivery = EXCLUDED.delivery,
                    not_before_ms = EXCLUDED.not_before_ms,
                    claimed_by = CASE WHEN notification_channels.claimed_by = $6 THEN NULL
                                      ELSE notification_channels.claimed_by END",
            )
            .await
            .map_err(|e| self.db(e))?;
        let settled = matches!(
            d.status,
            DeliveryStatus::Delivered | DeliveryStatus::Rejected
        );
        conn.execute(
            &stmt,
            &[
                &d.id,
                &d.channel,
                &settled,
                &Json(d),
                &d.not_before_ms,
                &self.me.id,
            ],
        )
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    pub(super) async fn pg_notifications_pending(
        &self,
        now_ms: Option<i64>,
        max: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT n.notification, c.channel, c.delivery
                 FROM notification_channels c JOIN notifications n ON n.id = c.id
                 WHERE c.owed AND NOT c.settled
                   AND ($1::bigint IS NULL OR c.not_before_ms IS NULL OR c.not_before_ms <= $1)
                 ORDER BY c.seq, c.channel COLLATE \"C\" LIMIT $2",
            )
            .await
            .map_err(|e| self.db(e))?;
        let rows = conn
            .query(&stmt, &[&now_ms, &limit(max)])
            .await
            .map_err(|e| self.db(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let channel: String = r.get(1);
            let bad = |e: tokio_postgres::Error| {
                self.corrupt(format!(
                    "table `notifications`: a notification owed on `{channel}`: bad JSON: {e}"
                ))
            };
            let Json(notification): Json<Notification> = r.try_get(0).map_err(bad)?;
            let last: Option<Json<Delivery>> = r.try_get(2).map_err(bad)?;
            out.push(Pending {
                notification,
                channel: channel.clone(),
                last: last.map(|Json(d)| d),
            });
        }
        Ok(out)
    }

    pub(super) async fn pg_notification_claim(
        &self,
        id: &str,
        channel: &str,
    ) -> Result<bool, StoreError> {
        self.refuse_if_fenced()?;
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO notification_channels (id, channel, seq, claimed_by)
                 VALUES ($1, $2, COALESCE((SELECT seq FROM notifications WHERE id = $1), 0), $3)
                 ON CONFLICT (id, channel) DO UPDATE SET claimed_by = EXCLUDED.claimed_by
                 WHERE NOT notification_channels.settled
                   AND (notification_channels.claimed_by IS NULL
                        OR notification_channels.claimed_by = EXCLUDED.claimed_by
                        OR NOT EXISTS (SELECT 1 FROM engine_processes p
                                       WHERE p.id = notification_channels.claimed_by))
                 RETURNING 1",
            )
            .await
            .map_err(|e| self.db(e))?;
        let rows = conn
            .query(&stmt, &[&id, &channel, &self.me.id])
            .await
            .map_err(|e| self.db(e))?;
        Ok(!rows.is_empty())
    }

    pub(super) async fn pg_notification_release(
        &self,
        id: &str,
        channel: &str,
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "UPDATE notification_channels SET claimed_by = NULL
                 WHERE id = $1 AND channel = $2 AND claimed_by = $3",
            )
            .await
            .map_err(|e| self.db(e))?;
        conn.execute(&stmt, &[&id, &channel, &self.me.id])
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    pub(super) async fn pg_notifications_all(&self) -> Result<Vec<Notification>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT id, notification FROM notifications ORDER BY seq")
            .await
            .map_err(|e| self.db(e))?;
        let rows = conn.query(&stmt, &[]).await.map_err(|e| self.db(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.get(0);
            let Json(n): Json<Notification> = r.try_get(1).map_err(|e| {
                self.corrupt(format!("table `notifications`: `{id}`: bad JSON: {e}"))
            })?;
            out.push(n);
        }
        Ok(out)
    }

    pub(super) async fn pg_notification_counts(
        &self,
    ) -> Result<crate::persist::notifications::DeliveryCounts, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE delivery->>'status' = 'delivered'),
                        count(*) FILTER (WHERE delivery->>'status' = 'failed'),
                        count(*) FILTER (WHERE delivery->>'status' = 'rejected')
                 FROM notification_channels WHERE delivery IS NOT NULL",
            )
            .await
            .map_err(|e| self.db(e))?;
        let row = conn.query_one(&stmt, &[]).await.map_err(|e| self.db(e))?;
        let n = |i: usize| -> u64 {
            row.try_get::<_, i64>(i)
                .ok()
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0)
        };
        Ok(crate::persist::notifications::DeliveryCounts {
            delivered: n(0),
            failed: n(1),
            rejected: n(2),
        })
    }

    pub(super) async fn pg_notification_deliveries(
        &self,
        id: Option<&str>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT id, channel, delivery FROM notification_channels
                 WHERE delivery IS NOT NULL AND ($1::text IS NULL OR id = $1)
                 ORDER BY id COLLATE \"C\", channel COLLATE \"C\"",
            )
            .await
            .map_err(|e| self.db(e))?;
        let rows = conn.query(&stmt, &[&id]).await.map_err(|e| self.db(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.get(0);
            let channel: String = r.get(1);
            let Json(d): Json<Delivery> = r.try_get(2).map_err(|e| {
                self.corrupt(format!(
                    "table `notification_channels`: ({id}, {channel}): bad JSON: {e}"
                ))
            })?;
            out.push(d);
        }
        Ok(out)
    }
}
