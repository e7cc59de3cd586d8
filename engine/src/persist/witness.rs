//! The witness file: how a damaged sled store is told apart from a new or intact one.
//!
//! sled recovers from a torn or corrupted log by keeping what comes before the damage,
//! silently: a truncated `db` file opens as an empty store, a corrupted one as an older
//! one. A crash can only lose writes that were never flushed, so an open that finds
//! *flushed* data missing means the files were damaged, and the engine must not go on as
//! if nothing happened.
//!
//! `caseflow-store.json`, next to sled's files, records the store's counters
//! (`next_case_id`, `next_event_id`, `next_inbox_seq`) as they were at a moment when they
//! were on disk: written at open (after the open's flush), after a flush at most once a
//! second, and at a clean close — always with counters read *before* the flush that
//! covered them. The counters only grow. So on open:
//! - a witness and no store (`meta` has no schema version): the files were lost or
//!   truncated to nothing — refused;
//! - a counter of the store below the witness's: flushed writes are missing — refused;
//! - no witness: a new store, or one from before the witness existed — written now.
//!
//! Damage that loses only what was written after the last witness update goes unseen
//! here; `engine store check` finds the inconsistencies it leaves.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keys;
use super::ops::{meta_u64, KvRead};
use super::StoreError;

/// The file name, in the data dir.
pub(crate) const FILE: &str = "caseflow-store.json";

/// Counters that only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub(crate) next_case_id: u64,
    pub(crate) next_event_id: u64,
    #[serde(default)]
    pub(crate) next_inbox_seq: u64,
}

impl Counters {
    pub(crate) fn read(kv: &dyn KvRead) -> Result<Self, StoreError> {
        Ok(Counters {
            next_case_id: meta_u64(kv, keys::META_NEXT_CASE_ID)?,
            next_event_id: meta_u64(kv, keys::META_NEXT_EVENT_ID)?,
            next_inbox_seq: meta_u64(kv, keys::META_NEXT_INBOX_SEQ)?,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Witness {
    /// What this file is, for people who find it.
    about: String,
    schema_version: u32,
    #[serde(flatten)]
    counters: Counters,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn corrupt(dir: &Path, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: dir.to_path_buf(),
        detail,
    }
}

/// The counters the witness holds; `None` when there is no witness.
pub(crate) fn read(dir: &Path) -> Result<Option<Counters>, StoreError> {
    let p = path(dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Backend {
                path: dir.to_path_buf(),
                detail: format!("cannot read `{FILE}`: {e}"),
            })
        }
    };
    let w: Witness = serde_json::from_slice(&bytes).map_err(|e| {
        corrupt(
            dir,
            format!("`{FILE}` is damaged ({e}); restore the data dir from a backup, or move it away to start an empty store"),
        )
    })?;
    Ok(Some(w.counters))
}

/// Refuses a store that lost flushed data; see the module docs.
pub(crate) fn verify(
    dir: &Path,
    witness: Option<Counters>,
    had_schema: bool,
    now: Counters,
) -> Result<(), StoreError> {
    let Some(w) = witness else {
        return Ok(());
    };
    let advice = "the files were truncated or corrupted (a crash cannot do this: it only loses writes that were never flushed); restore the data dir from a backup, or move it away to start an empty store";
    if !had_schema {
        return Err(corrupt(
            dir,
            format!(
                "the store is empty or unreadable, but `{FILE}` says it held {} case(s); {advice}",
                w.next_case_id.saturating_sub(1)
            ),
        ));
    }
    let lost: Vec<String> = [
        ("next_case_id", w.next_case_id, now.next_case_id),
        ("next_event_id", w.next_event_id, now.next_event_id),
        ("next_inbox_seq", w.next_inbox_seq, now.next_inbox_seq),
    ]
    .into_iter()
    .filter(|(_, want, got)| got < want)
    .map(|(name, want, got)| format!("{name} is {got}, was {want}"))
    .collect();
    if !lost.is_empty() {
        return Err(corrupt(
            dir,
            format!(
                "data that was on disk is missing ({}); {advice}",
                lost.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Replaces the witness (write a temporary file, sync, rename, sync the dir).
pub(crate) fn write(dir: &Path, counters: Counters) -> Result<(), StoreError> {
    let w = Witness {
        about: "written by caseflow: counters of the store in this directory, used to detect damaged files at open; do not edit".into(),
        schema_version: keys::SCHEMA_VERSION,
        counters,
    };
    let io = |e: std::io::Error| StoreError::Backend {
        path: dir.to_path_buf(),
        detail: format!("cannot write `{FILE}`: {e}"),
    };
    let bytes = serde_json::to_vec_pretty(&w).map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path(dir)).map_err(io)?;
    // The rename is durable once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(case: u64, event: u64, seq: u64) -> Counters {
        Counters {
            next_case_id: case,
            next_event_id: event,
            next_inbox_seq: seq,
        }
    }

    #[test]
    fn a_witness_round_trips_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), c(5, 9, 3)).unwrap();
        let w = read(dir.path()).unwrap();
        assert_eq!(w, Some(c(5, 9, 3)));
        assert!(verify(dir.path(), w, true, c(5, 9, 3)).is_ok());
        assert!(verify(dir.path(), w, true, c(6, 12, 3)).is_ok());
        assert!(verify(dir.path(), None, false, c(1, 1, 1)).is_ok());
        let e = verify(dir.path(), w, true, c(4, 9, 3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("next_case_id is 4, was 5"), "{e}");
        assert!(e.contains("restore the data dir"), "{e}");
        let e = verify(dir.path(), w, false, c(1, 1, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty or unreadable"), "{e}");
        assert!(e.contains("held 4 case(s)"), "{e}");
    }

    #[test]
    fn a_garbled_witness_is_a_corrupt_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{nope").unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(FILE), "{e}");
    }
}
