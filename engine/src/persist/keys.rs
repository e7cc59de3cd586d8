//! Tree names and key encodings shared by every key-value backend (sled, memory).
//! The layout itself is documented on the [`super`] module.

use super::StoreError;
use crate::cases::{Case, CaseId, Timestamp};

/// The trees of a store. The discriminant is the position in [`Tree::ALL`], which is
/// also the position of the tree in the sled transaction tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Tree {
    CaseidCase,
    ObservableCaseid,
    StateCaseid,
    SeverityCaseid,
    AssigneeCaseid,
    TagCaseid,
    CreatedatCaseid,
    UpdatedatCaseid,
    DedupkeyCaseid,
    SladueCaseid,
    IdempotencyResult,
    EventidCaseevent,
    Meta,
    EventkeyReceivedat,
    EventplaybookRunid,
    InboxseqEvent,
    InboxseqRunid,
    RunidRun,
    RunstepResult,
    UnfinishedRunid,
    CursorValue,
    CacheEntry,
    CacheExpiry,
    NotifyidSeq,
    NotifyseqNotification,
    NotifychannelDelivery,
    NotifyowedEmpty,
}

/// Number of trees.
pub(crate) const TREE_COUNT: usize = 27;

impl Tree {
    pub(crate) const ALL: [Tree; TREE_COUNT] = [
        Tree::CaseidCase,
        Tree::ObservableCaseid,
        Tree::StateCaseid,
        Tree::SeverityCaseid,
        Tree::AssigneeCaseid,
        Tree::TagCaseid,
        Tree::CreatedatCaseid,
        Tree::UpdatedatCaseid,
        Tree::DedupkeyCaseid,
        Tree::SladueCaseid,
        Tree::IdempotencyResult,
        Tree::EventidCaseevent,
        Tree::Meta,
        Tree::EventkeyReceivedat,
        Tree::EventplaybookRunid,
        Tree::InboxseqEvent,
        Tree::InboxseqRunid,
        Tree::RunidRun,
        Tree::RunstepResult,
        Tree::UnfinishedRunid,
        Tree::CursorValue,
        Tree::CacheEntry,
        Tree::CacheExpiry,
        Tree::NotifyidSeq,
        Tree::NotifyseqNotification,
        Tree::NotifychannelDelivery,
        Tree::NotifyowedEmpty,
    ];

    /// The index trees derived from cases (rebuilt from `caseid_case` by `check`).
    pub(crate) const INDEXES: [Tree; 9] = [
        Tree::ObservableCaseid,
        Tree::StateCaseid,
        Tree::SeverityCaseid,
        Tree::AssigneeCaseid,
        Tree::TagCaseid,
        Tree::CreatedatCaseid,
        Tree::UpdatedatCaseid,
        Tree::DedupkeyCaseid,
        Tree::SladueCaseid,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Tree::CaseidCase => "caseid_case",
            Tree::ObservableCaseid => "observable_caseid",
            Tree::StateCaseid => "state_caseid",
            Tree::SeverityCaseid => "severity_caseid",
            Tree::AssigneeCaseid => "assignee_caseid",
            Tree::TagCaseid => "tag_caseid",
            Tree::CreatedatCaseid => "createdat_caseid",
            Tree::UpdatedatCaseid => "updatedat_caseid",
            Tree::DedupkeyCaseid => "dedupkey_caseid",
            Tree::SladueCaseid => "sladue_caseid",
            Tree::IdempotencyResult => "idempotency_result",
            Tree::EventidCaseevent => "eventid_caseevent",
            Tree::Meta => "meta",
            Tree::EventkeyReceivedat => "eventkey_receivedat",
            Tree::EventplaybookRunid => "eventplaybook_runid",
            Tree::InboxseqEvent => "inboxseq_event",
            Tree::InboxseqRunid => "inboxseq_runid",
            Tree::RunidRun => "runid_run",
            Tree::RunstepResult => "runstep_result",
            Tree::UnfinishedRunid => "unfinished_runid",
            Tree::CursorValue => "cursor_value",
            Tree::CacheEntry => "cache_entry",
            Tree::CacheExpiry => "cache_expiry",
            Tree::NotifyidSeq => "notifyid_seq",
            Tree::NotifyseqNotification => "notifyseq_notification",
            Tree::NotifychannelDelivery => "notifychannel_delivery",
            Tree::NotifyowedEmpty => "notifyowed_empty",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// `meta` key: schema version, `u32` big-endian.
pub(crate) const META_SCHEMA_VERSION: &[u8] = b"schema_version";
/// `meta` key: the next case id, `u64` big-endian.
pub(crate) const META_NEXT_CASE_ID: &[u8] = b"next_case_id";
/// `meta` key: the next case event id, `u64` big-endian.
pub(crate) const META_NEXT_EVENT_ID: &[u8] = b"next_event_id";
/// `meta` key: the next incoming-event (inbox) sequence number, `u64` big-endian.
pub(crate) const META_NEXT_INBOX_SEQ: &[u8] = b"next_inbox_seq";
/// `meta` key: the next notification sequence number, `u64` big-endian.
pub(crate) const META_NEXT_NOTIFY_SEQ: &[u8] = b"next_notify_seq";
/// The schema version this code writes and reads. Version 2 added the
/// `eventkey_receivedat` and `eventplaybook_runid` trees; version 3 the inbox queue
/// (`inboxseq_event`, `inboxseq_runid`), the run journal (`runid_run`, `runstep_result`,
/// `unfinished_runid`) and `cursor_value`; version 4 the cache (`cache_entry`,
/// `cache_expiry`); version 5 the notification outbox (`notifyid_seq`,
/// `notifyseq_notification`, `notifychannel_delivery`, `notifyowed_empty`). Older stores
/// are upgraded by writing the new version: every upgrade so far only added trees, which
/// start empty; no key changed.
pub(crate) const SCHEMA_VERSION: u32 = 5;
/// The oldest schema version this code upgrades in place.
pub(crate) const OLDEST_UPGRADABLE_VERSION: u32 = 1;

/// Appends a string so that the encoding sorts like the string and is self-delimiting:
/// `0x00` -> `0x01 0x01`, `0x01` -> `0x01 0x02`, then a `0x00` terminator. Any string can
/// be a key part, and no string's key is a prefix of another's.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            0 => out.extend_from_slice(&[1, 1]),
            1 => out.extend_from_slice(&[1, 2]),
            b => out.push(b),
        }
    }
    out.push(0);
}

/// Decodes a key part that is exactly one escaped string (`push_str`'s output).
pub(crate) fn single_str(bytes: &[u8]) -> Option<String> {
    let (last, body) = bytes.split_last()?;
    if *last != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut it = body.iter();
    while let Some(&b) = it.next() {
        match b {
            0 => return None,
            1 => match it.next() {
                Some(1) => out.push(0),
                Some(2) => out.push(1),
                _ => return None,
            },
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Key of a string-prefixed index entry's prefix (one or more escaped strings).
pub(crate) fn str_prefix(parts: &[&str]) -> Vec<u8> {
    let mut k = Vec::new();
    for p in parts {
        push_str(&mut k, p);
    }
    k
}

/// `prefix ++ time BE ++ id BE`: the shape of every index key that sorts by time.
pub(crate) fn timed_key(prefix: &[u8], t: Timestamp, id: CaseId) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 16);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&t.to_key_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The case id in the last eight bytes of an index key.
pub(crate) fn id_suffix(key: &[u8]) -> Option<CaseId> {
    let start = key.len().checked_sub(8)?;
    let b: [u8; 8] = key.get(start..)?.try_into().ok()?;
    Some(CaseId(u64::from_be_bytes(b)))
}

/// The `time ++ id` suffix of a timed key, used to merge several index streams by time.
pub(crate) fn time_id_suffix(key: &[u8]) -> &[u8] {
    &key[key.len().saturating_sub(16)..]
}

/// The smallest key greater than every key starting with `prefix`; `None` when there is
/// none (empty prefix or all `0xff`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// True when no key can satisfy both bounds (ranges like that make `BTreeMap::range`
/// panic, so backends check first).
pub(crate) fn empty_bounds(lo: &std::ops::Bound<Vec<u8>>, hi: &std::ops::Bound<Vec<u8>>) -> bool {
    use std::ops::Bound::*;
    match (lo, hi) {
        (Included(l), Included(h)) => l > h,
        (Included(l) | Excluded(l), Included(h) | Excluded(h)) => l >= h,
        _ => false,
    }
}

pub(crate) fn u64_value(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// Every index entry `(tree, key, value)` a case has. Updates diff the old case's
/// entries against the new one's.
pub(crate) fn index_entries(c: &Case) -> Vec<(Tree, Vec<u8>, Vec<u8>)> {
    let (id, created) = (c.id, c.created_at);
    let mut out = Vec::with_capacity(8 + c.observables.len() + c.tags.len());
    for o in &c.observables {
        let p = str_prefix(&[o.kind.as_str(), &o.value]);
        out.push((
            Tree::ObservableCaseid,
            timed_key(&p, created, id),
            Vec::new(),
        ));
    }
    let p = str_prefix(&[c.state.as_str()]);
    out.push((Tree::StateCaseid, timed_key(&p, created, id), Vec::new()));
    out.push((
        Tree::SeverityCaseid,
        timed_key(&[c.severity.rank()], created, id),
        Vec::new(),
    ));
    if let Some(a) = &c.assignee {
        let p = str_prefix(&[a]);
        out.push((Tree::AssigneeCaseid, timed_key(&p, created, id), Vec::new()));
    }
    for t in &c.tags {
        let p = str_prefix(&[t]);
        out.push((Tree::TagCaseid, timed_key(&p, created, id), Vec::new()));
    }
    out.push((
        Tree::CreatedatCaseid,
        timed_key(&[], created, id),
        Vec::new(),
    ));
    out.push((
        Tree::UpdatedatCaseid,
        timed_key(&[], c.updated_at, id),
        Vec::new(),
    ));
    if let Some(d) = &c.dedup_key {
        let mut k = str_prefix(&[d]);
        k.extend_from_slice(&id.to_be_bytes());
        out.push((Tree::DedupkeyCaseid, k, vec![u8::from(c.state.is_open())]));
    }
    if let (Some(due), false, true) = (c.sla.due_at, c.sla.breached, c.state.is_open()) {
        out.push((Tree::SladueCaseid, timed_key(&[], due, id), Vec::new()));
    }
    out
}

/// Key of a case event in the outbox.
pub(crate) fn event_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Key of an incoming event in the inbox.
pub(crate) fn inbox_key(key: &str) -> Vec<u8> {
    str_prefix(&[key])
}

/// Key of a delivery record: case event id `u64` ++ playbook `str`.
pub(crate) fn delivery_key(event_id: u64, playbook: &str) -> Vec<u8> {
    let mut k = event_key(event_id).to_vec();
    push_str(&mut k, playbook);
    k
}

/// Key of a queued incoming event, and the prefix of its run index entries.
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Key of an `inboxseq_runid` entry: inbox seq `u64` ++ run id `str`.
pub(crate) fn inbox_run_key(seq: u64, run_id: &str) -> Vec<u8> {
    let mut k = seq_key(seq).to_vec();
    push_str(&mut k, run_id);
    k
}

/// Key of a run record (`runid_run`, `unfinished_runid`), and the prefix of its journal.
pub(crate) fn run_key(run_id: &str) -> Vec<u8> {
    str_prefix(&[run_id])
}

/// Key of one step's journal entry: run id `str` ++ step id `str`.
pub(crate) fn step_key(run_id: &str, step_id: &str) -> Vec<u8> {
    str_prefix(&[run_id, step_id])
}

/// Key of a cache entry: namespace `str` ++ key `str`.
pub(crate) fn cache_key(namespace: &str, key: &str) -> Vec<u8> {
    str_prefix(&[namespace, key])
}

/// Key of a cache entry's expiry: expires at `ts` ++ the entry's key.
pub(crate) fn cache_expiry_key(expires_at: Timestamp, entry: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + entry.len());
    k.extend_from_slice(&expires_at.to_key_bytes());
    k.extend_from_slice(entry);
    k
}

/// Key of a notification's id (`notifyid_seq`) and of a notification and channel
/// (`notifychannel_delivery`: id `str` ++ channel `str`).
pub(crate) fn notify_key(parts: &[&str]) -> Vec<u8> {
    str_prefix(parts)
}

/// Key of a channel still owed by a notification: seq `u64` ++ channel `str`.
pub(crate) fn notify_owed_key(seq: u64, channel: &str) -> Vec<u8> {
    let mut k = seq.to_be_bytes().to_vec();
    push_str(&mut k, channel);
    k
}

/// Key of a named cursor.
pub(crate) fn cursor_key(name: &str) -> Vec<u8> {
    str_prefix(&[name])
}

/// Splits a key made of escaped strings into the strings.
pub(crate) fn strs(mut bytes: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let end = bytes.iter().position(|b| *b == 0)?;
        out.push(single_str(&bytes[..=end])?);
        bytes = &bytes[end + 1..];
    }
    Some(out)
}

/// Key of an idempotency record.
pub(crate) fn idempotency_key(run_id: &str, step_id: &str) -> Vec<u8> {
    str_prefix(&[run_id, step_id])
}

/// Builds the `Corrupt` error for an undecodable value, with the advice people need.
pub(crate) fn corrupt(
    path: &std::path::Path,
    tree: Tree,
    key: &[u8],
    detail: impl std::fmt::Display,
) -> StoreError {
    let key = match (tree, u64_value(key)) {
        (Tree::CaseidCase, Some(id)) => CaseId(id).to_string(),
        (Tree::EventidCaseevent, Some(id)) => format!("event {id}"),
        (Tree::InboxseqEvent, Some(seq)) => format!("inbox entry {seq}"),
        (Tree::NotifyseqNotification, Some(seq)) => format!("notification {seq}"),
        (
            Tree::RunidRun
            | Tree::RunstepResult
            | Tree::UnfinishedRunid
            | Tree::CursorValue
            | Tree::CacheEntry
            | Tree::NotifyidSeq
            | Tree::NotifychannelDelivery,
            _,
        ) => strs(key)
            .map(|p| p.join(" "))
            .unwrap_or_else(|| String::from_utf8_lossy(key).into_owned()),
        (Tree::EventplaybookRunid, _) if key.len() >= 8 => format!(
            "event {} playbook {}",
            u64_value(&key[..8]).unwrap_or_default(),
            String::from_utf8_lossy(&key[8..])
        ),
        _ => String::from_utf8_lossy(key).into_owned(),
    };
    StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!(
            "tree `{}` key `{key}`: {detail}; run `engine store check` and restore the data dir from a backup",
            tree.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn escaped_strings_sort_like_strings_and_never_prefix(a in ".{0,6}", b in ".{0,6}", x in any::<u8>()) {
            let a = a.replace('z', "\u{0}").replace('y', "\u{1}");
            let (mut ka, mut kb) = (Vec::new(), Vec::new());
            push_str(&mut ka, &a);
            push_str(&mut kb, &b);
            prop_assert_eq!(a.as_bytes().cmp(b.as_bytes()), ka.cmp(&kb));
            if a != b {
                prop_assert!(!kb.starts_with(&ka));
            }
            let mut longer = ka.clone();
            longer.push(x);
            prop_assert!(longer.starts_with(&ka));
        }
    }

    #[test]
    fn single_str_decodes_push_str() {
        for s in ["", "a", "pb-1", "x\u{0}y\u{1}z"] {
            let mut k = Vec::new();
            push_str(&mut k, s);
            assert_eq!(single_str(&k).as_deref(), Some(s));
        }
        assert_eq!(single_str(b"ab"), None);
        assert_eq!(single_str(b"a\0b\0"), None);
    }

    #[test]
    fn strs_splits_multi_part_keys() {
        assert_eq!(
            strs(&step_key("run-1", "a\u{0}b")),
            Some(vec!["run-1".to_string(), "a\u{0}b".to_string()])
        );
        assert_eq!(strs(b""), Some(vec![]));
        assert_eq!(strs(b"abc"), None);
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab\0"), Some(b"ab\x01".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
