//! Planning and reading the run journal, shared by the key-value backends. Like
//! [`super::ops`], everything is read and encoded before the transaction.

use std::collections::HashSet;
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{self, corrupt, Tree};
use super::ops::{delivery_scan, meta_u64, to_json, KvRead, WriteSet};
use super::runs::{
    InboxEntry, RunFilter, RunInputRecord, RunOrigin, RunRecord, RunState, RunSummary,
};
use super::StoreError;
use crate::report::StepReport;

/// How a run record is written: without its steps, which have their own entries.
#[derive(Serialize)]
struct StoredRun<'a> {
    #[serde(flatten)]
    summary: &'a RunSummary,
    input: &'a RunInputRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: &'a Option<Value>,
}

/// One journal entry as written.
#[derive(Serialize)]
struct StepEntryRef<'a> {
    seq: u32,
    #[serde(flatten)]
    step: &'a StepReport,
}

/// One journal entry as read.
#[derive(Deserialize)]
struct StepEntry {
    seq: u32,
    #[serde(flatten)]
    step: StepReport,
}

fn put_run(kv: &dyn KvRead, ws: &mut WriteSet, run: &RunRecord) -> Result<(), StoreError> {
    let stored = StoredRun {
        summary: &run.summary,
        input: &run.input,
        output: &run.output,
    };
    ws.put(
        Tree::RunidRun,
        keys::run_key(&run.summary.run_id),
        to_json(kv.path(), &stored)?,
    );
    Ok(())
}

fn put_step(
    kv: &dyn KvRead,
    ws: &mut WriteSet,
    run_id: &str,
    seq: u32,
    step: &StepReport,
) -> Result<(), StoreError> {
    ws.put(
        Tree::RunstepResult,
        keys::step_key(run_id, &step.id),
        to_json(kv.path(), &StepEntryRef { seq, step })?,
    );
    Ok(())
}

/// Plans recording `runs` and consuming `origin`; see [`super::Runs::start_runs`].
pub(crate) fn plan_start_runs(
    kv: &dyn KvRead,
    origin: RunOrigin,
    runs: &[RunRecord],
) -> Result<(WriteSet, Vec<bool>), StoreError> {
    let mut ws = WriteSet::default();
    let mut started = vec![true; runs.len()];
    match origin {
        RunOrigin::Direct => {}
        RunOrigin::Inbox(seq) => {
            let k = keys::seq_key(seq);
            if kv.get(Tree::InboxseqEvent, &k)?.is_none() {
                return Ok((WriteSet::default(), vec![false; runs.len()]));
            }
            ws.del(Tree::InboxseqEvent, k);
            for run in runs {
                ws.put(
                    Tree::InboxseqRunid,
                    keys::inbox_run_key(seq, &run.summary.run_id),
                    Vec::new(),
                );
            }
        }
        RunOrigin::CaseEvent { event_id, ack } => {
            let k = keys::event_key(event_id);
            if kv.get(Tree::EventidCaseevent, &k)?.is_none() {
                return Ok((WriteSet::default(), vec![false; runs.len()]));
            }
            let mut delivered = HashSet::new();
            for entry in delivery_scan(kv, event_id) {
                let (dk, _) = entry?;
                delivered.insert(dk);
            }
            for (run, go) in runs.iter().zip(started.iter_mut()) {
                let dk = keys::delivery_key(event_id, &run.summary.playbook);
                if delivered.contains(&dk) {
                    *go = false;
                } else if !ack {
                    ws.put(
                        Tree::EventplaybookRunid,
                        dk.clone(),
                        run.summary.run_id.as_bytes().to_vec(),
                    );
                    delivered.insert(dk);
                }
            }
            if ack {
                ws.del(Tree::EventidCaseevent, k);
                for dk in delivered {
                    ws.del(Tree::EventplaybookRunid, dk);
                }
            }
        }
    }
    for (run, go) in runs.iter().zip(&started) {
        if *go {
            put_run(kv, &mut ws, run)?;
            ws.put(
                Tree::UnfinishedRunid,
                keys::run_key(&run.summary.run_id),
                Vec::new(),
            );
        }
    }
    Ok((ws, started))
}

/// Plans [`super::Runs::start_runs_many`]: each origin planned as by [`plan_start_runs`],
/// into one write set. The origins of a batch are distinct (inbox entries, case events), so
/// no plan reads what an earlier one of the batch writes.
pub(crate) fn plan_start_runs_many(
    kv: &dyn KvRead,
    batch: &[(RunOrigin, Vec<RunRecord>)],
) -> Result<(WriteSet, Vec<Vec<bool>>), StoreError> {
    let mut ws = WriteSet::default();
    let mut out = Vec::with_capacity(batch.len());
    for (origin, runs) in batch {
        let (one, started) = plan_start_runs(kv, *origin, runs)?;
        ws.ops.extend(one.ops);
        out.push(started);
    }
    Ok((ws, out))
}

/// Plans appending journal entries.
pub(crate) fn plan_record_steps(
    kv: &dyn KvRead,
    run_id: &str,
    steps: &[(u32, &StepReport)],
) -> Result<WriteSet, StoreError> {
    let mut ws = WriteSet::default();
    for (seq, step) in steps {
        put_step(kv, &mut ws, run_id, *seq, step)?;
    }
    Ok(ws)
}

/// Plans writing a finished run: its record, the steps the journal does not have yet
/// (cancelled ones; journaled entries are kept as they are, not decoded or rewritten),
/// and its removal from the unfinished runs.
pub(crate) fn plan_finish_run(kv: &dyn KvRead, run: &RunRecord) -> Result<WriteSet, StoreError> {
    let run_id = &run.summary.run_id;
    let prefix = keys::run_key(run_id);
    let hi = keys::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
    let mut journaled = HashSet::new();
    for entry in kv.range(Tree::RunstepResult, Bound::Included(prefix), hi, false) {
        let (k, _) = entry?;
        journaled.insert(k);
    }
    // Entries are numbered from 0 without gaps, so the next number is their count.
    let mut next = u32::try_from(journaled.len()).unwrap_or(u32::MAX);
    let mut ws = WriteSet::default();
    put_run(kv, &mut ws, run)?;
    for step in &run.steps {
        if !journaled.contains(&keys::step_key(run_id, &step.id)) {
            put_step(kv, &mut ws, run_id, next, step)?;
            next = next.saturating_add(1);
        }
    }
    ws.del(Tree::UnfinishedRunid, keys::run_key(run_id));
    Ok(ws)
}

/// Plans marking running runs parked.
pub(crate) fn plan_park(kv: &dyn KvRead, run_ids: &[String]) -> Result<WriteSet, StoreError> {
    let mut ws = WriteSet::default();
    for id in run_ids {
        if let Some(mut run) = read_run_record(kv, id)? {
            if run.summary.status == RunState::Running {
                run.summary.status = RunState::Parked;
                put_run(kv, &mut ws, &run)?;
            }
        }
    }
    Ok(ws)
}

fn decode_run(kv: &dyn KvRead, key: &[u8], bytes: &[u8]) -> Result<RunRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        corrupt(
            kv.path(),
            Tree::RunidRun,
            key,
            format!("bad run record: {e}"),
        )
    })
}

/// A run record without its steps.
pub(crate) fn read_run_record(
    kv: &dyn KvRead,
    run_id: &str,
) -> Result<Option<RunRecord>, StoreError> {
    let k = keys::run_key(run_id);
    match kv.get(Tree::RunidRun, &k)? {
        None => Ok(None),
        Some(v) => decode_run(kv, &k, &v).map(Some),
    }
}

/// A run's journal entries in the order they were written.
fn read_steps(kv: &dyn KvRead, run_id: &str) -> Result<Vec<(u32, StepReport)>, StoreError> {
    let prefix = keys::run_key(run_id);
    let hi = keys::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
    let mut out = Vec::new();
    for entry in kv.range(Tree::RunstepResult, Bound::Included(prefix), hi, false) {
        let (k, v) = entry?;
        let e: StepEntry = serde_json::from_slice(&v).map_err(|e| {
            corrupt(
                kv.path(),
                Tree::RunstepResult,
                &k,
                format!("bad journal entry: {e}"),
            )
        })?;
        out.push((e.seq, e.step));
    }
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out)
}

/// A run with its journal.
pub(crate) fn get_run(kv: &dyn KvRead, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
    let Some(mut run) = read_run_record(kv, run_id)? else {
        return Ok(None);
    };
    run.steps = read_steps(kv, run_id)?
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    Ok(Some(run))
}

/// Running and parked runs, oldest first, with their journals.
pub(crate) fn unfinished_runs(kv: &dyn KvRead) -> Result<Vec<RunRecord>, StoreError> {
    let mut out = Vec::new();
    for entry in kv.range(
        Tree::UnfinishedRunid,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    ) {
        let (k, _) = entry?;
        let id = keys::single_str(&k)
            .ok_or_else(|| corrupt(kv.path(), Tree::UnfinishedRunid, &k, "bad run id"))?;
        match get_run(kv, &id)? {
            Some(run) if !run.summary.status.is_finished() => out.push(run),
            // A crash cannot leave these (the record and the index change together);
            // `engine store check` reports them.
            Some(_) | None => {
                tracing::warn!(run_id = %id, "unfinished-run entry without a running run; run `engine store check`")
            }
        }
    }
    Ok(out)
}

/// Runs matching `filter`, newest first. Running and parked runs come from their index;
/// other filters scan the runs newest first until `limit` match.
pub(crate) fn list_runs(kv: &dyn KvRead, f: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
    let mut out = Vec::new();
    if f.limit == 0 {
        return Ok(out);
    }
    let tree = match f.status {
        Some(RunState::Running | RunState::Parked) => Tree::UnfinishedRunid,
        _ => Tree::RunidRun,
    };
    for entry in kv.range(tree, Bound::Unbounded, Bound::Unbounded, true) {
        let (k, v) = entry?;
        let run = if tree == Tree::RunidRun {
            decode_run(kv, &k, &v)?
        } else {
            let id = keys::single_str(&k)
                .ok_or_else(|| corrupt(kv.path(), Tree::UnfinishedRunid, &k, "bad run id"))?;
            match read_run_record(kv, &id)? {
                Some(r) => r,
                None => continue,
            }
        };
        let s = run.summary;
        if f.status.is_some_and(|st| st != s.status)
            || f.playbook.as_ref().is_some_and(|p| *p != s.playbook)
        {
            continue;
        }
        out.push(s);
        if out.len() >= f.limit {
            break;
        }
    }
    Ok(out)
}

/// Where inbox entry `seq` stands.
pub(crate) fn inbox_entry(kv: &dyn KvRead, seq: u64) -> Result<InboxEntry, StoreError> {
    if kv.get(Tree::InboxseqEvent, &keys::seq_key(seq))?.is_some() {
        return Ok(InboxEntry::Queued);
    }
    if seq == 0 || seq >= meta_u64(kv, keys::META_NEXT_INBOX_SEQ)? {
        return Ok(InboxEntry::Unknown);
    }
    let prefix = keys::seq_key(seq).to_vec();
    let hi = keys::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
    let mut runs = Vec::new();
    for entry in kv.range(Tree::InboxseqRunid, Bound::Included(prefix), hi, false) {
        let (k, _) = entry?;
        let id = k
            .get(8..)
            .and_then(keys::single_str)
            .ok_or_else(|| corrupt(kv.path(), Tree::InboxseqRunid, &k, "bad run id"))?;
        runs.push(id);
    }
    Ok(InboxEntry::Dispatched(runs))
}

/// The journal's part of the consistency check.
pub(crate) fn check(kv: &dyn KvRead, problems: &mut Vec<String>) -> Result<(), StoreError> {
    let mut unfinished = HashSet::new();
    for entry in kv.range(
        Tree::UnfinishedRunid,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    ) {
        let (k, _) = entry?;
        match keys::single_str(&k) {
            Some(id) => {
                unfinished.insert(id);
            }
            None => problems.push(format!("tree `unfinished_runid`: bad key {k:?}")),
        }
    }
    let mut runs = HashSet::new();
    for entry in kv.range(Tree::RunidRun, Bound::Unbounded, Bound::Unbounded, false) {
        let (k, v) = entry?;
        let run = match decode_run(kv, &k, &v) {
            Ok(r) => r,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let id = run.summary.run_id.clone();
        if keys::run_key(&id) != k {
            problems.push(format!(
                "tree `runid_run`: record under key {k:?} holds run `{id}`"
            ));
        }
        let listed = unfinished.remove(&id);
        match (run.summary.status.is_finished(), listed) {
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
        runs.insert(id);
    }
    for id in unfinished {
        problems.push(format!("tree `unfinished_runid`: run `{id}` has no record"));
    }
    for entry in kv.range(
        Tree::RunstepResult,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    ) {
        let (k, v) = entry?;
        let parts = keys::strs(&k);
        match parts.as_deref() {
            Some([run, _step]) if runs.contains(run) => {}
            Some([run, step]) => problems.push(format!(
                "tree `runstep_result`: step `{step}` of run `{run}`, which has no record"
            )),
            _ => problems.push(format!("tree `runstep_result`: bad key {k:?}")),
        }
        if let Err(e) = serde_json::from_slice::<StepEntry>(&v) {
            problems.push(
                corrupt(
                    kv.path(),
                    Tree::RunstepResult,
                    &k,
                    format!("bad journal entry: {e}"),
                )
                .to_string(),
            );
        }
    }
    let next_seq = meta_u64(kv, keys::META_NEXT_INBOX_SEQ)?;
    for entry in kv.range(
        Tree::InboxseqEvent,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    ) {
        let (k, v) = entry?;
        match super::inbox_ops::decode_incoming(kv, &k, &v) {
            Ok(rec) if rec.seq >= next_seq => problems.push(format!(
                "inbox entry {} is not below meta next_inbox_seq {next_seq}",
                rec.seq
            )),
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    for entry in kv.range(
        Tree::InboxseqRunid,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    ) {
        let (k, _) = entry?;
        match k.get(8..).and_then(keys::single_str) {
            Some(id) if runs.contains(&id) => {}
            Some(id) => problems.push(format!(
                "tree `inboxseq_runid`: inbox entry {} started run `{id}`, which has no record",
                keys::u64_value(&k[..8]).unwrap_or_default()
            )),
            None => problems.push(format!("tree `inboxseq_runid`: bad key {k:?}")),
        }
    }
    Ok(())
}
