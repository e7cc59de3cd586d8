//! `engine store copy --from DIR --to URL`: moves a sled deployment to PostgreSQL.
//!
//! Everything the sled store keeps is copied in one transaction: cases (with their index
//! rows and timelines), the case-event outbox and its delivery records, idempotency
//! records, incoming-event keys, the inbox queue and what each taken entry started, the
//! run journal, cursors, the notification outbox (notifications, the channels still owed,
//! the latest delivery records), and the counters (so case numbers continue where they
//! were); not the expiring cache, which refills itself. The
//! target must be empty: a copy never merges into a store in use. Runs that were
//! unfinished stay unfinished and unowned, so the first engine process resumes them.

use std::ops::Bound;

use serde_json::Value;
use tokio_postgres::types::Json;

use super::PgStore;
use crate::cases::{Case, CaseEvent, CaseId, Timestamp};
use crate::notify::DeliveryStatus;
use crate::persist::keys::{self, Tree};
use crate::persist::ops::{meta_u64, KvRead};
use crate::persist::runs::RunRecord;
use crate::persist::{inbox_ops, notifications, SledStore, StoreError};

/// What a copy moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub cases: u64,
    pub case_events: u64,
    pub deliveries: u64,
    pub idempotency: u64,
    pub incoming_keys: u64,
    pub inbox: u64,
    pub runs: u64,
    pub steps: u64,
    pub cursors: u64,
    pub notifications: u64,
    pub notification_deliveries: u64,
}

impl std::fmt::Display for CopyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cases, {} pending case events ({} delivery records), {} idempotency records, {} incoming-event keys, {} queued events, {} runs ({} journal entries), {} cursors, {} notifications ({} delivery records)",
            self.cases,
            self.case_events,
            self.deliveries,
            self.idempotency,
            self.incoming_keys,
            self.inbox,
            self.runs,
            self.steps,
            self.cursors,
            self.notifications,
            self.notification_deliveries
        )
    }
}

fn all(kv: &dyn KvRead, tree: Tree) -> crate::persist::ops::KvIter<'_> {
    kv.range(tree, Bound::Unbounded, Bound::Unbounded, false)
}

/// Copies the sled store `from` into the empty PostgreSQL store `to`.
pub async fn copy_store(from: &SledStore, to: &PgStore) -> Result<CopyReport, StoreError> {
    let kv = from.kv();
    let bad = |tree: Tree, key: &[u8], what: String| keys::corrupt(kv.path(), tree, key, what);
    let mut conn = to.conn().await?;
    let tx = conn.transaction().await.map_err(|e| to.db(e))?;
    let empty: bool = tx
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM cases) AND NOT EXISTS (SELECT 1 FROM runs)
                AND NOT EXISTS (SELECT 1 FROM inbox) AND NOT EXISTS (SELECT 1 FROM incoming_keys)
                AND NOT EXISTS (SELECT 1 FROM notifications)",
            &[],
        )
        .await
        .map_err(|e| to.db(e))?
        .get(0);
    if !empty {
        return Err(to.backend(
            "the target already holds cases, runs or events; copy only into an empty database or schema",
        ));
    }
    let mut report = CopyReport::default();
    for entry in all(kv, Tree::CaseidCase) {
        let (k, v) = entry?;
        let case: Case = serde_json::from_slice(&v)
            .map_err(|e| bad(Tree::CaseidCase, &k, format!("bad case JSON: {e}")))?;
        to.write_case(&tx, None, &case, &[]).await?;
        report.cases += 1;
    }
    for entry in all(kv, Tree::EventidCaseevent) {
        let (k, v) = entry?;
        let e: CaseEvent = serde_json::from_slice(&v).map_err(|e| {
            bad(
                Tree::EventidCaseevent,
                &k,
                format!("bad case event JSON: {e}"),
            )
        })?;
        tx.execute(
            "INSERT INTO case_events (id, case_id, event) VALUES ($1, $2, $3)",
            &[&(e.id as i64), &(e.case_id.0 as i64), &Json(&e)],
        )
        .await
        .map_err(|e| to.db(e))?;
        report.case_events += 1;
    }
    for entry in all(kv, Tree::EventplaybookRunid) {
        let (k, v) = entry?;
        let event = k.get(..8).and_then(keys::u64_value);
        let playbook = k.get(8..).and_then(keys::single_str);
        let (Some(event), Some(playbook), Ok(run_id)) = (event, playbook, String::from_utf8(v))
        else {
            return Err(bad(
                Tree::EventplaybookRunid,
                &k,
                "bad delivery record".into(),
            ));
        };
        tx.execute(
            "INSERT INTO case_event_deliveries (event_id, playbook, run_id) VALUES ($1, $2, $3)",
            &[&(event as i64), &playbook, &run_id],
        )
        .await
        .map_err(|e| to.db(e))?;
        report.deliveries += 1;
    }
    for entry in all(kv, Tree::IdempotencyResult) {
        let (k, v) = entry?;
        let parts = keys::strs(&k);
        let rec: Value = serde_json::from_slice(&v).map_err(|e| {
            bad(
                Tree::IdempotencyResult,
                &k,
                format!("bad idempotency record: {e}"),
            )
        })?;
        let case_id = rec
            .get("case_id")
            .and_then(|v| serde_json::from_value::<CaseId>(v.clone()).ok())
            .map(|c| c.0);
        let (Some([run, step]), Some(case_id)) = (parts.as_deref(), case_id) else {
            return Err(bad(
                Tree::IdempotencyResult,
                &k,
                "bad idempotency record".into(),
            ));
        };
        tx.execute(
            "INSERT INTO idempotency (run_id, step_id, case_id, result) VALUES ($1, $2, $3, $4)",
            &[run, step, &(case_id as i64), &Json(&rec)],
        )
        .await
        .map_err(|e| to.db(e))?;
        report.idempotency += 1;
    }
    for entry in all(kv, Tree::EventkeyReceivedat) {
        let (k, v) = entry?;
        let key = keys::single_str(&k);
        let at = <[u8; 8]>::try_from(v.as_slice())
            .ok()
            .and_then(|b| Timestamp::from_key_bytes(b).ok());
        let (Some(key), Some(at)) = (key, at) else {
            return Err(bad(
                Tree::EventkeyReceivedat,
                &k,
                "bad incoming-event key".into(),
            ));
        };
        tx.execute(
            "INSERT INTO incoming_keys (key, received_at) VALUES ($1, $2)",
            &[&key, &at.unix_millis()],
        )
        .await
        .map_err(|e| to.db(e))?;
        report.incoming_keys += 1;
    }
    for entry in all(kv, Tree::InboxseqEvent) {
        let (k, v) = entry?;
        let i = inbox_ops::decode_incoming(kv, &k, &v)?;
        tx.execute(
            "INSERT INTO inbox (seq, source, key, event, received_at) VALUES ($1, $2, $3, $4, $5)",
            &[
                &(i.seq as i64),
                &i.source,
                &i.key,
                &Json(&i.event),
                &i.received_at.unix_millis(),
            ],
        )
        .await
        .map_err(|e| to.db(e))?;
        report.inbox += 1;
    }
    for entry in all(kv, Tree::InboxseqRunid) {
        let (k, _) = entry?;
        let seq = k.get(..8).and_then(keys::u64_value);
        let run = k.get(8..).and_then(keys::single_str);
        let (Some(seq), Some(run)) = (seq, run) else {
            return Err(bad(Tree::InboxseqRunid, &k, "bad key".into()));
        };
        tx.execute(
            "INSERT INTO inbox_runs (seq, run_id) VALUES ($1, $2)",
            &[&(seq as i64), &run],
        )
        .await
        .map_err(|e| to.db(e))?;
    }
    for entry in all(kv, Tree::RunidRun) {
        let (k, v) = entry?;
        let run: RunRecord = serde_json::from_slice(&v)
            .map_err(|e| bad(Tree::RunidRun, &k, format!("bad run record: {e}")))?;
        let raw: Value = serde_json::from_slice(&v)
            .map_err(|e| bad(Tree::RunidRun, &k, format!("bad run record: {e}")))?;
        let s = &run.summary;
        tx.execute(
            "INSERT INTO runs (run_id, playbook, status, unfinished, owner, record) VALUES ($1, $2, $3, $4, NULL, $5)",
            &[
                &s.run_id,
                &s.playbook,
                &s.status.as_str(),
                &!s.status.is_finished(),
                &Json(&raw),
            ],
        )
        .await
        .map_err(|e| to.db(e))?;
        report.runs += 1;
    }
    for entry in all(kv, Tree::RunstepResult) {
        let (k, v) = entry?;
        let parts = keys::strs(&k);
        let raw: Value = serde_json::from_slice(&v)
            .map_err(|e| bad(Tree::RunstepResult, &k, format!("bad journal entry: {e}")))?;
        let seq = raw.get("seq").and_then(Value::as_u64);
        let (Some([run, step]), Some(seq)) = (parts.as_deref(), seq) else {
            return Err(bad(Tree::RunstepResult, &k, "bad journal entry".into()));
        };
        tx.execute(
            "INSERT INTO run_steps (run_id, step_id, seq, entry) VALUES ($1, $2, $3, $4)",
            &[run, step, &(seq as i32), &Json(&raw)],
        )
        .await
        .map_err(|e| to.db(e))?;
        report.steps += 1;
    }
    for entry in all(kv, Tree::CursorValue) {
        let (k, v) = entry?;
        let (Some(name), Ok(value)) = (keys::single_str(&k), String::from_utf8(v)) else {
            return Err(bad(Tree::CursorValue, &k, "bad cursor".into()));
        };
        tx.execute(
            "INSERT INTO cursors (name, value) VALUES ($1, $2)",
            &[&name, &value],
        )
        .await
        .map_err(|e| to.db(e))?;
        report.cursors += 1;
    }
    for (seq, n, owed) in notifications::queued(kv)? {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO notifications (id, seq, notification) VALUES ($1, $2, $3)",
            &[&n.id, &seq, &Json(&n)],
        )
        .await
        .map_err(|e| to.db(e))?;
        tx.execute(
            "INSERT INTO notification_channels (id, channel, seq, owed)
             SELECT $1, c, $2, true FROM unnest($3::text[]) c ON CONFLICT DO NOTHING",
            &[&n.id, &seq, &owed],
        )
        .await
        .map_err(|e| to.db(e))?;
        report.notifications += 1;
    }
    for d in notifications::deliveries(kv, None)? {
        let settled = matches!(
            d.status,
            DeliveryStatus::Delivered | DeliveryStatus::Rejected
        );
        tx.execute(
            "INSERT INTO notification_channels (id, channel, seq, settled, delivery, not_before_ms)
             VALUES ($1, $2, COALESCE((SELECT seq FROM notifications WHERE id = $1), 0), $3, $4, $5)
             ON CONFLICT (id, channel) DO UPDATE SET settled = EXCLUDED.settled,
                delivery = EXCLUDED.delivery, not_before_ms = EXCLUDED.not_before_ms",
            &[&d.id, &d.channel, &settled, &Json(&d), &d.not_before_ms],
        )
        .await
        .map_err(|e| to.db(e))?;
        report.notification_deliveries += 1;
    }
    // Counters continue where sled's were.
    let next_case = meta_u64(kv, keys::META_NEXT_CASE_ID)? as i64;
    let next_event = meta_u64(kv, keys::META_NEXT_EVENT_ID)? as i64;
    let next_seq = meta_u64(kv, keys::META_NEXT_INBOX_SEQ)? as i64;
    let next_notify = meta_u64(kv, keys::META_NEXT_NOTIFY_SEQ)? as i64;
    tx.execute(
        "UPDATE caseflow_counters SET value = $1 WHERE name = 'next_case_id'",
        &[&next_case],
    )
    .await
    .map_err(|e| to.db(e))?;
    for (seq, next) in [
        ("case_event_ids", next_event),
        ("inbox_seqs", next_seq),
        ("notification_seqs", next_notify),
    ] {
        // setval(n, false): the next nextval returns n.
        tx.execute(
            "SELECT setval($1::text::regclass, $2, false)",
            &[&seq, &next.max(1)],
        )
        .await
        .map_err(|e| to.db(e))?;
    }
    tx.commit().await.map_err(|e| to.db(e))?;
    Ok(report)
}
