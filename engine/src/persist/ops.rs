//! Store logic shared by the key-value backends: planning writes (everything computed
//! before a transaction), running queries over the indexes, and the consistency check.
//! A backend supplies [`KvRead`] and a way to commit a [`WriteSet`] atomically.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::keys::{self, corrupt, Tree};
use super::{CaseQuery, CaseSort, PendingEvent, StoreError, WriteMeta, WriteOutcome};
use crate::cases::{
    apply, normalize_observable, Actor, ApplyContext, Case, CaseChange, CaseError, CaseEvent,
    CaseEventKind, CaseId, CaseState, NewCase, ObservableType, Severity, Timestamp,
};

/// One key-value pair from a range scan.
pub(crate) type KvPair = (Vec<u8>, Vec<u8>);
/// A range scan.
pub(crate) type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair, StoreError>> + 'a>;

/// Read access to the trees of one backend.
pub(crate) trait KvRead {
    /// The data directory, for error messages.
    fn path(&self) -> &Path;
    /// One value.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with `lo <= key < hi` (per the bounds), ascending or, with `rev`, descending.
    fn range(&self, tree: Tree, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, rev: bool) -> KvIter<'_>;
}

/// The writes of one transaction: `Some` inserts, `None` removes.
#[derive(Debug, Default)]
pub(crate) struct WriteSet {
    pub(crate) ops: Vec<(Tree, Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteSet {
    pub(crate) fn put(&mut self, tree: Tree, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.ops.push((tree, key.into(), Some(value)));
    }

    pub(crate) fn del(&mut self, tree: Tree, key: impl Into<Vec<u8>>) {
        self.ops.push((tree, key.into(), None));
    }
}

/// What `idempotency_result` (sled) and `idempotency.result` (PostgreSQL) hold for one
/// (run, step).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Committed {
    pub(crate) case_id: CaseId,
    pub(crate) created: bool,
    pub(crate) case: Case,
    pub(crate) event_ids: Vec<u64>,
}

/// How [`Committed`] is written: the case as JSON encoded once for the write (the case
/// record's own bytes), not encoded again. Decodes as `Committed`.
#[derive(Serialize)]
struct CommittedRecord<'a> {
    case_id: CaseId,
    created: bool,
    case: &'a RawValue,
    event_ids: &'a [u64],
}

/// How a [`CaseEvent`] of one write is written: the case after the write and before it as
/// JSON encoded once for all the write's events (and, for the case after, for the case
/// record), instead of twice for each event. Decodes as `CaseEvent`; the fields are its
/// own, in its order.
#[derive(Serialize)]
struct EventRecord<'a> {
    id: u64,
    kind: CaseEventKind,
    case_id: CaseId,
    at: Timestamp,
    actor: &'a Actor,
    case: &'a RawValue,
    before: Option<&'a RawValue>,
    from: &'a Option<String>,
    to: &'a Option<String>,
}

pub(crate) fn to_json<T: Serialize>(path: &Path, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| encode_error(path, e))
}

/// `v` as JSON, kept as JSON to be written as it is inside other records.
fn to_raw<T: Serialize>(path: &Path, v: &T) -> Result<Box<RawValue>, StoreError> {
    serde_json::value::to_raw_value(v).map_err(|e| encode_error(path, e))
}

fn encode_error(path: &Path, e: serde_json::Error) -> StoreError {
    StoreError::Backend {
        path: path.to_path_buf(),
        detail: format!("cannot encode a record: {e}"),
    }
}

/// Reads and decodes one case.
pub(crate) fn read_case(kv: &dyn KvRead, id: CaseId) -> Result<Option<Case>, StoreError> {
    let key = id.to_be_bytes();
    match kv.get(Tree::CaseidCase, &key)? {
        None => Ok(None),
        Some(bytes) => decode_case(kv.path(), &key, &bytes).map(Some),
    }
}

fn decode_case(path: &Path, key: &[u8], bytes: &[u8]) -> Result<Case, StoreError> {
    let c: Case = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(path, Tree::CaseidCase, key, format!("bad case JSON: {e}")))?;
    if c.id.to_be_bytes() != key {
        return Err(corrupt(
            path,
            Tree::CaseidCase,
            key,
            format!("record holds {}", c.id),
        ));
    }
    Ok(c)
}

fn decode_event(path: &Path, key: &[u8], bytes: &[u8]) -> Result<CaseEvent, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        corrupt(
            path,
            Tree::EventidCaseevent,
            key,
            format!("bad case event JSON: {e}"),
        )
    })
}

/// A `meta` counter; 1 when it was never written.
pub(crate) fn meta_u64(kv: &dyn KvRead, key: &[u8]) -> Result<u64, StoreError> {
    match kv.get(Tree::Meta, key)? {
        None => Ok(1),
        Some(v) => keys::u64_value(&v)
            .ok_or_else(|| corrupt(kv.path(), Tree::Meta, key, "counter is not 8 bytes")),
    }
}

/// Checks the schema version; returns the writes that initialise a fresh store.
pub(crate) fn check_schema(kv: &dyn KvRead) -> Result<WriteSet, StoreError> {
    let mut ws = WriteSet::default();
    match kv.get(Tree::Meta, keys::META_SCHEMA_VERSION)? {
        None => {
            if kv
                .range(Tree::CaseidCase, Bound::Unbounded, Bound::Unbounded, false)
                .next()
                .is_some()
            {
                return Err(StoreError::Corrupt {
                    path: kv.path().to_path_buf(),
                    detail: "cases exist but `meta` has no schema_version; restore the data dir from a backup".into(),
                });
            }
            ws.put(
                Tree::Meta,
                keys::META_SCHEMA_VERSION,
                keys::SCHEMA_VERSION.to_be_bytes().to_vec(),
            );
        }
        Some(v) => {
            let version = <[u8; 4]>::try_from(v.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| {
                    corrupt(
                        kv.path(),
                        Tree::Meta,
                        keys::META_SCHEMA_VERSION,
                        "schema_version is not 4 bytes",
                    )
                })?;
            if version > keys::SCHEMA_VERSION {
                return Err(StoreError::Corrupt {
                    path: kv.path().to_path_buf(),
                    detail: format!(
                        "schema version {version} is newer than this engine supports ({}); upgrade caseflow or use another data dir",
                        keys::SCHEMA_VERSION
                    ),
                });
            }
            if version < keys::OLDEST_UPGRADABLE_VERSION {
                return Err(StoreError::Corrupt {
                    path: kv.path().to_path_buf(),
                    detail: format!(
                        "schema version {version} is older than this engine can upgrade ({}); use another data dir",
                        keys::OLDEST_UPGRADABLE_VERSION
                    ),
                });
            }
            if version < keys::SCHEMA_VERSION {
                // Versions 1 -> 2 -> 3 only added trees, which start empty: no key changes.
                ws.put(
                    Tree::Meta,
                    keys::META_SCHEMA_VERSION,
                    keys::SCHEMA_VERSION.to_be_bytes().to_vec(),
                );
            }
        }
    }
    Ok(ws)
}

/// If `meta` carries an idempotency key already used, the recorded outcome.
fn replay(kv: &dyn KvRead, meta: &WriteMeta) -> Result<Option<(Committed, Vec<u8>)>, StoreError> {
    let Some(k) = &meta.idempotency else {
        return Ok(None);
    };
    let key = keys::idempotency_key(&k.run_id, &k.step_id);
    match kv.get(Tree::IdempotencyResult, &key)? {
        None => Ok(None),
        Some(bytes) => {
            let c: Committed = serde_json::from_slice(&bytes).map_err(|e| {
                corrupt(
                    kv.path(),
                    Tree::IdempotencyResult,
                    &key,
                    format!("bad idempotency record: {e}"),
                )
            })?;
            Ok(Some((c, key)))
        }
    }
}

pub(crate) fn replayed(c: Committed) -> WriteOutcome {
    WriteOutcome {
        case: c.case,
        created: c.created,
        replayed: true,
        events: Vec::new(),
        event_ids: c.event_ids,
    }
}

/// Adds the idempotency record of a fresh outcome to `ws`. `case`: `out.case` as JSON
/// when the write already encoded it (see [`write_case`]).
fn record(
    kv: &dyn KvRead,
    ws: &mut WriteSet,
    meta: &WriteMeta,
    out: &WriteOutcome,
    case: Option<&RawValue>,
) -> Result<(), StoreError> {
    if let Some(k) = &meta.idempotency {
        let encoded;
        let case = match case {
            Some(c) => c,
            None => {
                encoded = to_raw(kv.path(), &out.case)?;
                &encoded
            }
        };
        let rec = CommittedRecord {
            case_id: out.case.id,
            created: out.created,
            case,
            event_ids: &out.event_ids,
        };
        ws.put(
            Tree::IdempotencyResult,
            keys::idempotency_key(&k.run_id, &k.step_id),
            to_json(kv.path(), &rec)?,
        );
    }
    Ok(())
}

/// One event of a write as stored: with the write's cases as encoded once, or encoded
/// on its own when it is not about exactly those cases.
fn event_json(
    path: &Path,
    e: &CaseEvent,
    before: Option<(&Case, &RawValue)>,
    after: (&Case, &RawValue),
) -> Result<Vec<u8>, StoreError> {
    let same = e.case == *after.0 && e.before.as_ref() == before.map(|b| b.0);
    if !same {
        return to_json(path, e);
    }
    to_json(
        path,
        &EventRecord {
            id: e.id,
            kind: e.kind,
            case_id: e.case_id,
            at: e.at,
            actor: &e.actor,
            case: after.1,
            before: before.map(|b| b.1),
            from: &e.from,
            to: &e.to,
        },
    )
}

/// Adds the case record, its index diff, its events and the counters to `ws`. Returns the
/// case as it encoded it, for the idempotency record.
fn write_case(
    kv: &dyn KvRead,
    ws: &mut WriteSet,
    before: Option<&Case>,
    after: &Case,
    events: &[CaseEvent],
) -> Result<Box<RawValue>, StoreError> {
    let after_json = to_raw(kv.path(), after)?;
    ws.put(
        Tree::CaseidCase,
        after.id.to_be_bytes(),
        after_json.get().as_bytes().to_vec(),
    );
    let old: BTreeMap<(Tree, Vec<u8>), Vec<u8>> = before
        .map(keys::index_entries)
        .unwrap_or_default()
        .into_iter()
        .map(|(t, k, v)| ((t, k), v))
        .collect();
    let new: BTreeMap<(Tree, Vec<u8>), Vec<u8>> = keys::index_entries(after)
        .into_iter()
        .map(|(t, k, v)| ((t, k), v))
        .collect();
    for (tk, _) in old.iter().filter(|(tk, _)| !new.contains_key(*tk)) {
        ws.del(tk.0, tk.1.clone());
    }
    for (tk, v) in new.iter().filter(|(tk, v)| old.get(*tk) != Some(*v)) {
        ws.put(tk.0, tk.1.clone(), v.clone());
    }
    let before_json = match (before, events.is_empty()) {
        (Some(b), false) => Some((b, to_raw(kv.path(), b)?)),
        _ => None,
    };
    let before_ref = before_json.as_ref().map(|(c, j)| (*c, &**j));
    for e in events {
        ws.put(
            Tree::EventidCaseevent,
            keys::event_key(e.id),
            event_json(kv.path(), e, before_ref, (after, &after_json))?,
        );
    }
    if let Some(last) = events.last() {
        ws.put(
            Tree::Meta,
            keys::META_NEXT_EVENT_ID,
            (last.id + 1).to_be_bytes().to_vec(),
        );
    }
    Ok(after_json)
}

fn make_events(
    kv: &dyn KvRead,
    kinds: &[crate::cases::CaseEventKind],
    before: Option<&Case>,
    after: &Case,
    meta: &WriteMeta,
) -> Result<Vec<CaseEvent>, StoreError> {
    let first = meta_u64(kv, keys::META_NEXT_EVENT_ID)?;
    Ok(kinds
        .iter()
        .zip(first..)
        .map(|(k, id)| CaseEvent::new(id, *k, before, after, &meta.actor, meta.at))
        .collect())
}

/// Plans a create: replay, dedup hit, or a new case with `case.created`.
pub(crate) fn plan_create(
    kv: &dyn KvRead,
    new: NewCase,
    meta: &WriteMeta,
) -> Result<(WriteSet, WriteOutcome), StoreError> {
    if let Some((c, _)) = replay(kv, meta)? {
        return Ok((WriteSet::default(), replayed(c)));
    }
    let mut ws = WriteSet::default();
    if let Some(d) = &new.dedup_key {
        if let Some(open) = open_case_with_dedup_key(kv, d)? {
            let out = WriteOutcome {
                case: open,
                created: false,
                replayed: false,
                events: Vec::new(),
                event_ids: Vec::new(),
            };
            record(kv, &mut ws, meta, &out, None)?;
            return Ok((ws, out));
        }
    }
    let id = CaseId(meta_u64(kv, keys::META_NEXT_CASE_ID)?);
    let ctx = ApplyContext {
        actor: meta.actor.clone(),
        now: meta.at,
        new_id: id,
    };
    let applied = apply(None, &CaseChange::Create(new), &ctx)?;
    let events = make_events(kv, &applied.events, None, &applied.case, meta)?;
    let case_json = write_case(kv, &mut ws, None, &applied.case, &events)?;
    ws.put(
        Tree::Meta,
        keys::META_NEXT_CASE_ID,
        (id.0 + 1).to_be_bytes().to_vec(),
    );
    let out = WriteOutcome {
        case: applied.case,
        created: true,
        replayed: false,
        event_ids: events.iter().map(|e| e.id).collect(),
        events,
    };
    record(kv, &mut ws, meta, &out, Some(&case_json))?;
    Ok((ws, out))
}

fn open_case_with_dedup_key(kv: &dyn KvRead, key: &str) -> Result<Option<Case>, StoreError> {
    let prefix = keys::str_prefix(&[key]);
    let hi = keys::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
    for entry in kv.range(Tree::DedupkeyCaseid, Bound::Included(prefix), hi, true) {
        let (k, v) = entry?;
        if v != [1] {
            continue;
        }
        let Some(id) = keys::id_suffix(&k) else {
            continue;
        };
        if let Some(c) = read_case(kv, id)? {
            if c.state.is_open() && c.dedup_key.as_deref() == Some(key) {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// Plans an update: replay, or all `changes` applied in order with their events.
/// A write whose idempotency key already recorded a change of another case.
pub(crate) fn idempotency_conflict(
    meta: &WriteMeta,
    recorded: CaseId,
    requested: CaseId,
) -> StoreError {
    let (run_id, step_id) = meta
        .idempotency
        .as_ref()
        .map(|k| (k.run_id.clone(), k.step_id.clone()))
        .unwrap_or_default();
    StoreError::IdempotencyConflict {
        run_id,
        step_id,
        recorded,
        requested,
    }
}

/// `changes` applied in order to `before`: the case after them, and the kinds of case
/// events they cause (each once, in order of first appearance). Every backend's update.
pub(crate) fn apply_changes(
    before: &Case,
    changes: &[CaseChange],
    meta: &WriteMeta,
) -> Result<(Case, Vec<CaseEventKind>), StoreError> {
    let ctx = ApplyContext {
        actor: meta.actor.clone(),
        now: meta.at,
        new_id: before.id,
    };
    let mut case = before.clone();
    let mut kinds = Vec::new();
    for ch in changes {
        if matches!(ch, CaseChange::Create(_)) {
            return Err(CaseError::AlreadyExists(before.id).into());
        }
        let a = apply(Some(&case), ch, &ctx)?;
        for k in a.events {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        case = a.case;
    }
    Ok((case, kinds))
}

pub(crate) fn plan_update(
    kv: &dyn KvRead,
    id: CaseId,
    changes: &[CaseChange],
    meta: &WriteMeta,
) -> Result<(WriteSet, WriteOutcome), StoreError> {
    if let Some((c, _)) = replay(kv, meta)? {
        if c.case_id != id {
            return Err(idempotency_conflict(meta, c.case_id, id));
        }
        return Ok((WriteSet::default(), replayed(c)));
    }
    let before = read_case(kv, id)?.ok_or(StoreError::NotFound(id))?;
    let (case, kinds) = apply_changes(&before, changes, meta)?;
    let mut ws = WriteSet::default();
    let (events, case_json) = if kinds.is_empty() {
        (Vec::new(), None)
    } else {
        let events = make_events(kv, &kinds, Some(&before), &case, meta)?;
        let json = write_case(kv, &mut ws, Some(&before), &case, &events)?;
        (events, Some(json))
    };
    let out = WriteOutcome {
        case,
        created: false,
        replayed: false,
        event_ids: events.iter().map(|e| e.id).collect(),
        events,
    };
    record(kv, &mut ws, meta, &out, case_json.as_deref())?;
    Ok((ws, out))
}

/// Plans removing a delivered event together with its delivery records.
pub(crate) fn plan_ack(kv: &dyn KvRead, event_id: u64) -> Result<(WriteSet, bool), StoreError> {
    let key = keys::event_key(event_id);
    let mut ws = WriteSet::default();
    let present = kv.get(Tree::EventidCaseevent, &key)?.is_some();
    if present {
        ws.del(Tree::EventidCaseevent, key);
    }
    for entry in delivery_scan(kv, event_id) {
        let (k, _) = entry?;
        ws.del(Tree::EventplaybookRunid, k);
    }
    Ok((ws, present))
}

/// Delivery records of one case event.
pub(crate) fn delivery_scan(kv: &dyn KvRead, event_id: u64) -> KvIter<'_> {
    let prefix = keys::event_key(event_id).to_vec();
    let hi = keys::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
    kv.range(Tree::EventplaybookRunid, Bound::Included(prefix), hi, false)
}

/// Plans recording an incoming event key; the bool says whether it is new.
pub(crate) fn plan_record_incoming(
    kv: &dyn KvRead,
    key: &str,
    at: Timestamp,
) -> Result<(WriteSet, bool), StoreError> {
    let k = keys::inbox_key(key);
    let mut ws = WriteSet::default();
    if kv.get(Tree::EventkeyReceivedat, &k)?.is_some() {
        return Ok((ws, false));
    }
    ws.put(Tree::EventkeyReceivedat, k, at.to_key_bytes().to_vec());
    Ok((ws, true))
}

/// Plans recording that `playbook` starts as `run_id` for case event `event_id`; the bool
/// says whether it is new (false: that playbook already started for that event).
pub(crate) fn plan_start_delivery(
    kv: &dyn KvRead,
    event_id: u64,
    playbook: &str,
    run_id: &str,
) -> Result<(WriteSet, bool), StoreError> {
    let k = keys::delivery_key(event_id, playbook);
    let mut ws = WriteSet::default();
    if kv.get(Tree::EventplaybookRunid, &k)?.is_some() {
        return Ok((ws, false));
    }
    ws.put(Tree::EventplaybookRunid, k, run_id.as_bytes().to_vec());
    Ok((ws, true))
}

/// The playbooks already started for a case event, with their run ids.
pub(crate) fn deliveries(
    kv: &dyn KvRead,
    event_id: u64,
) -> Result<Vec<super::Delivery>, StoreError> {
    let mut out = Vec::new();
    for entry in delivery_scan(kv, event_id) {
        let (k, v) = entry?;
        let bad = || {
            corrupt(
                kv.path(),
                Tree::EventplaybookRunid,
                &k,
                "bad delivery record",
            )
        };
        let name = k.get(8..).and_then(keys::single_str).ok_or_else(bad)?;
        let run_id = String::from_utf8(v.clone()).map_err(|_| bad())?;
        out.push(super::Delivery {
            event_id,
            playbook: name,
            run_id,
        });
    }
    Ok(out)
}

/// The outbox's entries, oldest first.
fn outbox(kv: &dyn KvRead) -> KvIter<'_> {
    kv.range(
        Tree::EventidCaseevent,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    )
}

/// Undelivered events, oldest first.
pub(crate) fn pending_events(kv: &dyn KvRead, limit: usize) -> Result<Vec<CaseEvent>, StoreError> {
    outbox(kv)
        .take(limit)
        .map(|e| e.and_then(|(k, v)| decode_event(kv.path(), &k, &v)))
        .collect()
}

/// The part of a stored case event that consuming it needs; its cases are skipped, not
/// built.
#[derive(Deserialize)]
struct EventHead {
    id: u64,
    kind: CaseEventKind,
}

/// [`pending_events`], decoding in full only the events whose kind is `wanted`.
pub(crate) fn pending_events_for(
    kv: &dyn KvRead,
    limit: usize,
    wanted: &[CaseEventKind],
) -> Result<Vec<PendingEvent>, StoreError> {
    outbox(kv)
        .take(limit)
        .map(|e| {
            let (k, v) = e?;
            let head: EventHead = serde_json::from_slice(&v).map_err(|e| {
                corrupt(
                    kv.path(),
                    Tree::EventidCaseevent,
                    &k,
                    format!("bad case event JSON: {e}"),
                )
            })?;
            if wanted.contains(&head.kind) {
                decode_event(kv.path(), &k, &v).map(|e| PendingEvent::Full(Box::new(e)))
            } else {
                Ok(PendingEvent::Unwanted {
                    id: head.id,
                    kind: head.kind,
                })
            }
        })
        .collect()
}

/// Open, unbreached cases due at or before `now`.
pub(crate) fn sla_due(
    kv: &dyn KvRead,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Case>, StoreError> {
    let hi = Bound::Included(keys::timed_key(&[], now, CaseId(u64::MAX)));
    let mut out = Vec::new();
    for entry in kv.range(Tree::SladueCaseid, Bound::Unbounded, hi, false) {
        if out.len() >= limit {
            break;
        }
        let (k, _) = entry?;
        let Some(id) = keys::id_suffix(&k) else {
            continue;
        };
        if let Some(c) = read_case(kv, id)? {
            if c.state.is_open() && !c.sla.breached && c.sla.due_at.is_some_and(|d| d <= now) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// A query's criteria, normalised, checked on each loaded case.
struct Filter {
    observable: Option<(ObservableType, String)>,
    states: Vec<CaseState>,
    severity: Option<Severity>,
    assignee: Option<String>,
    tag: Option<String>,
    after: Option<Timestamp>,
    before: Option<Timestamp>,
}

impl Filter {
    fn new(q: &CaseQuery) -> Result<Self, StoreError> {
        let observable = match &q.observable {
            Some((k, v)) => Some((*k, normalize_observable(*k, v).map_err(CaseError::from)?)),
            None => None,
        };
        let mut states = q.states.clone();
        states.sort();
        states.dedup();
        Ok(Filter {
            observable,
            states,
            severity: q.severity,
            assignee: q.assignee.as_deref().map(|a| a.trim().to_string()),
            tag: q.tag.as_deref().map(|t| t.trim().to_string()),
            after: q.created_after,
            before: q.created_before,
        })
    }

    fn matches(&self, c: &Case) -> bool {
        self.observable
            .as_ref()
            .is_none_or(|(k, v)| c.observable(*k, v).is_some())
            && (self.states.is_empty() || self.states.contains(&c.state))
            && self.severity.is_none_or(|s| s == c.severity)
            && self
                .assignee
                .as_ref()
                .is_none_or(|a| c.assignee.as_ref() == Some(a))
            && self.tag.as_ref().is_none_or(|t| c.tags.contains(t))
            && self.after.is_none_or(|t| c.created_at >= t)
            && self.before.is_none_or(|t| c.created_at < t)
    }

    fn empty_range(&self) -> bool {
        matches!((self.after, self.before), (Some(a), Some(b)) if a >= b)
    }
}

/// Merges several index scans (each sorted by `time ++ id`) into one sorted stream.
struct Merge<'a> {
    iters: Vec<KvIter<'a>>,
    heads: Vec<Option<KvPair>>,
    started: bool,
    pending_err: Option<StoreError>,
    rev: bool,
}

impl<'a> Merge<'a> {
    fn new(iters: Vec<KvIter<'a>>, rev: bool) -> Self {
        let heads = iters.iter().map(|_| None).collect();
        Merge {
            iters,
            heads,
            started: false,
            pending_err: None,
            rev,
        }
    }

    fn refill(&mut self, i: usize) -> Result<(), StoreError> {
        self.heads[i] = self.iters[i].next().transpose()?;
        Ok(())
    }
}

impl Iterator for Merge<'_> {
    type Item = Result<KvPair, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending_err.take() {
            return Some(Err(e));
        }
        if !self.started {
            self.started = true;
            for i in 0..self.iters.len() {
                if let Err(e) = self.refill(i) {
                    return Some(Err(e));
                }
            }
        }
        let mut best: Option<(usize, &[u8])> = None;
        for (i, head) in self.heads.iter().enumerate() {
            let Some((k, _)) = head else { continue };
            let k = keys::time_id_suffix(k);
            let better = match best {
                None => true,
                Some((_, bk)) if self.rev => k > bk,
                Some((_, bk)) => k < bk,
            };
            if better {
                best = Some((i, k));
            }
        }
        let i = best?.0;
        let item = self.heads[i].take();
        if let Err(e) = self.refill(i) {
            self.pending_err = Some(e);
        }
        item.map(Ok)
    }
}

/// A range scan of the entries under `prefix`, limited to the query's creation times
/// when `timed` (the key continues with `created_at`).
fn prefix_scan<'a>(
    kv: &'a dyn KvRead,
    tree: Tree,
    prefix: &[u8],
    f: &Filter,
    timed: bool,
    rev: bool,
) -> KvIter<'a> {
    let id0 = CaseId(0);
    let lo = match (timed, f.after) {
        (true, Some(t)) => Bound::Included(keys::timed_key(prefix, t, id0)),
        _ if prefix.is_empty() => Bound::Unbounded,
        _ => Bound::Included(prefix.to_vec()),
    };
    let hi = match (timed, f.before) {
        (true, Some(t)) => Bound::Excluded(keys::timed_key(prefix, t, id0)),
        _ => keys::prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded),
    };
    kv.range(tree, lo, hi, rev)
}

/// An in-memory result order.
type CaseOrder = fn(&Case, &Case) -> Ordering;

/// Runs `q`, calling `visit` with each matching case in order until it returns false.
fn run_query(
    kv: &dyn KvRead,
    q: &CaseQuery,
    visit: &mut dyn FnMut(Case) -> bool,
) -> Result<(), StoreError> {
    let f = Filter::new(q)?;
    if f.empty_range() || q.limit == 0 {
        return Ok(());
    }
    let (tree, prefixes): (Tree, Vec<Vec<u8>>) = if let Some((k, v)) = &f.observable {
        (
            Tree::ObservableCaseid,
            vec![keys::str_prefix(&[k.as_str(), v])],
        )
    } else if let Some(a) = &f.assignee {
        (Tree::AssigneeCaseid, vec![keys::str_prefix(&[a])])
    } else if let Some(t) = &f.tag {
        (Tree::TagCaseid, vec![keys::str_prefix(&[t])])
    } else if !f.states.is_empty() {
        (
            Tree::StateCaseid,
            f.states
                .iter()
                .map(|s| keys::str_prefix(&[s.as_str()]))
                .collect(),
        )
    } else if let Some(s) = f.severity {
        (Tree::SeverityCaseid, vec![vec![s.rank()]])
    } else {
        (Tree::CreatedatCaseid, vec![Vec::new()])
    };
    let selective = matches!(
        tree,
        Tree::ObservableCaseid | Tree::AssigneeCaseid | Tree::TagCaseid
    );
    let by_created = |rev: bool| -> KvIter<'_> {
        let heads = prefixes
            .iter()
            .map(|p| prefix_scan(kv, tree, p, &f, true, rev))
            .collect();
        Box::new(Merge::new(heads, rev))
    };
    let (stream, sort_in_memory): (KvIter<'_>, Option<CaseOrder>) = match q.sort {
        CaseSort::CreatedAtAsc => (by_created(false), None),
        CaseSort::CreatedAtDesc => (by_created(true), None),
        // A selective index has few entries per key: read them all and sort.
        CaseSort::UpdatedAtAsc
        | CaseSort::UpdatedAtDesc
        | CaseSort::SeverityAsc
        | CaseSort::SeverityDesc
            if selective =>
        {
            let cmp: CaseOrder = match q.sort {
                CaseSort::UpdatedAtAsc => |a, b| (a.updated_at, a.id).cmp(&(b.updated_at, b.id)),
                CaseSort::UpdatedAtDesc => |a, b| (b.updated_at, b.id).cmp(&(a.updated_at, a.id)),
                CaseSort::SeverityAsc => {
                    |a, b| (a.severity, a.created_at, a.id).cmp(&(b.severity, b.created_at, b.id))
                }
                _ => |a, b| (b.severity, b.created_at, b.id).cmp(&(a.severity, a.created_at, a.id)),
            };
            (by_created(false), Some(cmp))
        }
        CaseSort::UpdatedAtAsc | CaseSort::UpdatedAtDesc => {
            let rev = q.sort == CaseSort::UpdatedAtDesc;
            (
                prefix_scan(kv, Tree::UpdatedatCaseid, &[], &f, false, rev),
                None,
            )
        }
        CaseSort::SeverityAsc | CaseSort::SeverityDesc => {
            let rev = q.sort == CaseSort::SeverityDesc;
            match f.severity {
                Some(s) => (
                    prefix_scan(kv, Tree::SeverityCaseid, &[s.rank()], &f, true, rev),
                    None,
                ),
                None => (
                    prefix_scan(kv, Tree::SeverityCaseid, &[], &f, false, rev),
                    None,
                ),
            }
        }
    };
    let mut seen = HashSet::new();
    let mut buffered = Vec::new();
    for entry in stream {
        let (k, _) = entry?;
        let Some(id) = keys::id_suffix(&k) else {
            return Err(corrupt(kv.path(), tree, &k, "index key too short"));
        };
        if !seen.insert(id) {
            continue;
        }
        let Some(c) = read_case(kv, id)? else {
            tracing::warn!(case = %id, "index entry without a case; run `engine store check`");
            continue;
        };
        if !f.matches(&c) {
            continue;
        }
        if sort_in_memory.is_some() {
            buffered.push(c);
        } else if !visit(c) {
            return Ok(());
        }
    }
    if let Some(cmp) = sort_in_memory {
        buffered.sort_by(cmp);
        for c in buffered {
            if !visit(c) {
                break;
            }
        }
    }
    Ok(())
}

/// Cases matching `q`, at most `q.limit`.
pub(crate) fn query(kv: &dyn KvRead, q: &CaseQuery) -> Result<Vec<Case>, StoreError> {
    let mut out = Vec::new();
    run_query(kv, q, &mut |c| {
        out.push(c);
        out.len() < q.limit
    })?;
    Ok(out)
}

/// Number of cases matching `q`, ignoring its limit.
pub(crate) fn count(kv: &dyn KvRead, q: &CaseQuery) -> Result<u64, StoreError> {
    let q = CaseQuery {
        limit: usize::MAX,
        ..q.clone()
    };
    let mut n = 0u64;
    run_query(kv, &q, &mut |_| {
        n += 1;
        true
    })?;
    Ok(n)
}

fn describe_key(tree: Tree, key: &[u8]) -> String {
    match keys::id_suffix(key) {
        Some(id) => format!("tree `{}`: entry for {id}", tree.name()),
        None => format!("tree `{}`: entry {key:?}", tree.name()),
    }
}

/// The consistency check behind `engine store check`.
pub(crate) fn check(kv: &dyn KvRead) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    let mut expected: BTreeMap<(Tree, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let mut max_id = 0u64;
    let mut ids = HashSet::new();
    for entry in kv.range(Tree::CaseidCase, Bound::Unbounded, Bound::Unbounded, false) {
        let (k, v) = entry?;
        match decode_case(kv.path(), &k, &v) {
            Ok(c) => {
                max_id = max_id.max(c.id.0);
                ids.insert(c.id);
                for (t, key, val) in keys::index_entries(&c) {
                    expected.insert((t, key), val);
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    for tree in Tree::INDEXES {
        for entry in kv.range(tree, Bound::Unbounded, Bound::Unbounded, false) {
            let (k, v) = entry?;
            match expected.remove(&(tree, k.clone())) {
                None => problems.push(format!("{}: stale, no case has it", describe_key(tree, &k))),
                Some(want) if want != v => problems.push(format!(
                    "{}: value {v:?}, expected {want:?}",
                    describe_key(tree, &k)
                )),
                Some(_) => {}
            }
        }
    }
    for ((tree, k), _) in expected {
        problems.push(format!("{}: missing", describe_key(tree, &k)));
    }
    match meta_u64(kv, keys::META_NEXT_CASE_ID) {
        Ok(next) if max_id >= next && max_id > 0 => problems.push(format!(
            "meta next_case_id {next} is not above the largest case id {max_id}"
        )),
        Ok(_) => {}
        Err(e) => problems.push(e.to_string()),
    }
    let next_event = meta_u64(kv, keys::META_NEXT_EVENT_ID);
    for entry in kv.range(
        Tree::EventidCaseevent,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    ) {
        let (k, v) = entry?;
        match decode_event(kv.path(), &k, &v) {
            Ok(e) => {
                if keys::event_key(e.id) != k.as_slice() {
                    problems.push(format!("outbox event under key {k:?} holds id {}", e.id));
                }
                if !ids.contains(&e.case_id) {
                    problems.push(format!(
                        "outbox event {} refers to missing {}",
                        e.id, e.case_id
                    ));
                }
                if let Ok(next) = &next_event {
                    if e.id >= *next {
                        problems.push(format!(
                            "outbox event {} is not below meta next_event_id {next}",
                            e.id
                        ));
                    }
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    for entry in kv.range(
        Tree::EventplaybookRunid,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    ) {
        let (k, _) = entry?;
        let pending = match k.get(..8) {
            Some(id) => kv.get(Tree::EventidCaseevent, id)?.is_some(),
            None => false,
        };
        if !pending {
            problems.push(format!(
                "tree `{}`: delivery record {k:?} for an event that is not in the outbox",
                Tree::EventplaybookRunid.name()
            ));
        }
    }
    super::run_ops::check(kv, &mut problems)?;
    for entry in kv.range(
        Tree::IdempotencyResult,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    ) {
        let (k, v) = entry?;
        if let Err(e) = serde_json::from_slice::<Committed>(&v) {
            problems.push(
                corrupt(
                    kv.path(),
                    Tree::IdempotencyResult,
                    &k,
                    format!("bad idempotency record: {e}"),
                )
                .to_string(),
            );
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use std::ops::RangeBounds;

    use super::*;
    use crate::cases::{NewObservable, Timestamp};

    /// Trees in memory, written by applying write sets.
    #[derive(Default)]
    struct Kv(BTreeMap<(usize, Vec<u8>), Vec<u8>>);

    impl KvRead for Kv {
        fn path(&self) -> &Path {
            Path::new("mem")
        }
        fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.get(&(tree.index(), key.to_vec())).cloned())
        }
        fn range(
            &self,
            tree: Tree,
            lo: Bound<Vec<u8>>,
            hi: Bound<Vec<u8>>,
            rev: bool,
        ) -> KvIter<'_> {
            let t = tree.index();
            let mut v: Vec<KvPair> = self
                .0
                .iter()
                .filter(|((i, k), _)| *i == t && (lo.as_ref(), hi.as_ref()).contains(&k))
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect();
            if rev {
                v.reverse();
            }
            Box::new(v.into_iter().map(Ok))
        }
    }

    impl Kv {
        fn apply(&mut self, ws: WriteSet) {
            for (tree, key, value) in ws.ops {
                match value {
                    Some(v) => self.0.insert((tree.index(), key), v),
                    None => self.0.remove(&(tree.index(), key)),
                };
            }
        }
        fn value(&self, tree: Tree, key: &[u8]) -> Vec<u8> {
            self.get(tree, key).unwrap().expect("written")
        }
    }

    fn meta(step: &str, ms: i64) -> WriteMeta {
        WriteMeta::new(
            Actor::Playbook {
                run_id: "r1".into(),
                playbook: "p".into(),
                step: step.into(),
            },
            Timestamp::from_unix_millis(1_700_000_000_000 + ms).unwrap(),
        )
        .with_key("r1", step)
    }

    /// The events and idempotency records of a write, whose cases are encoded once for the
    /// write, are byte for byte what encoding each `CaseEvent` and `Committed` gives: the
    /// stored format is unchanged, and a field added to either type and not to its record
    /// fails here.
    #[test]
    fn records_with_the_cases_encoded_once_are_the_plain_encoding() {
        let mut kv = Kv::default();
        let mut new = NewCase::new("t", Severity::Medium);
        new.observables = vec![NewObservable::new(ObservableType::Ip, "192.0.2.1")];
        let (ws, created) = plan_create(&kv, new, &meta("create", 0)).unwrap();
        kv.apply(ws);
        let changes = [
            CaseChange::SetSeverity(Severity::High),
            CaseChange::AddTags(vec!["x".into()]),
            CaseChange::AddComment("seen".into()),
        ];
        let (ws, updated) = plan_update(&kv, created.case.id, &changes, &meta("up", 1)).unwrap();
        kv.apply(ws);
        assert!(updated.events.len() >= 2, "{:?}", updated.events);
        for out in [&created, &updated] {
            assert!(!out.events.is_empty());
            for e in &out.events {
                assert_eq!(
                    kv.value(Tree::EventidCaseevent, &keys::event_key(e.id)),
                    serde_json::to_vec(e).unwrap(),
                    "event {} ({:?})",
                    e.id,
                    e.kind
                );
                let decoded: CaseEvent = serde_json::from_slice(
                    &kv.value(Tree::EventidCaseevent, &keys::event_key(e.id)),
                )
                .unwrap();
                assert_eq!(&decoded, e);
            }
        }
        assert_eq!(
            kv.value(Tree::CaseidCase, &updated.case.id.to_be_bytes()),
            serde_json::to_vec(&updated.case).unwrap()
        );
        for (step, out) in [("create", &created), ("up", &updated)] {
            let plain = Committed {
                case_id: out.case.id,
                created: out.created,
                case: out.case.clone(),
                event_ids: out.event_ids.clone(),
            };
            assert_eq!(
                kv.value(Tree::IdempotencyResult, &keys::idempotency_key("r1", step)),
                serde_json::to_vec(&plain).unwrap(),
                "{step}"
            );
        }
        // A replay gives the recorded outcome back.
        let (ws, again) = plan_update(&kv, created.case.id, &changes, &meta("up", 2)).unwrap();
        assert!(ws.ops.is_empty() && again.replayed);
        assert_eq!(again.case, updated.case);
        assert_eq!(again.event_ids, updated.event_ids);
    }
}
