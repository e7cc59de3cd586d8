//! The expiring cache in PostgreSQL (`cache_entries`). Writes commit without waiting for
//! the WAL flush (`synchronous_commit = off` for the transaction): a lost entry costs one
//! more provider call, never a wrong answer. An expired entry is never returned.

use serde_json::Value;
use tokio_postgres::types::Json;

use super::PgStore;
use crate::cases::Timestamp;
use crate::persist::StoreError;

impl PgStore {
    pub(super) async fn pg_cache_get(
        &self,
        namespace: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<Value>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT value FROM cache_entries WHERE namespace = $1 AND key = $2 AND expires_at > $3",
            )
            .await
            .map_err(|e| self.db(e))?;
        let rows = conn
            .query(&stmt, &[&namespace, &key, &now.unix_millis()])
            .await
            .map_err(|e| self.db(e))?;
        match rows.first() {
            None => Ok(None),
            Some(r) => {
                let Json(v): Json<Value> = r.try_get(0).map_err(|e| {
                    self.corrupt(format!(
                        "table `cache_entries`: ({namespace}, {key}): bad JSON: {e}"
                    ))
                })?;
                Ok(Some(v))
            }
        }
    }

    pub(super) async fn pg_cache_put(
        &self,
        namespace: &str,
        key: &str,
        value: &Value,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .map_err(|e| self.db(e))?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO cache_entries (namespace, key, value, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
            )
            .await
            .map_err(|e| self.db(e))?;
        tx.execute(
            &stmt,
            &[&namespace, &key, &Json(value), &expires_at.unix_millis()],
        )
        .await
        .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    pub(super) async fn pg_cache_purge(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .map_err(|e| self.db(e))?;
        let stmt = tx
            .prepare_cached(
                "DELETE FROM cache_entries c USING (
                    SELECT namespace, key FROM cache_entries WHERE expires_at <= $1
                    ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) x
                 WHERE c.namespace = x.namespace AND c.key = x.key",
            )
            .await
            .map_err(|e| self.db(e))?;
        let n = tx
            .execute(
                &stmt,
                &[
                    &now.unix_millis(),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
