//! The vendored sled's change to how its log reaches the disk (vendor/README.md, change 2):
//! log buffers are written without a sync each, a flush syncs once, and a freed segment is
//! synced over before it is written over. These tests drive sled itself through many
//! segments' worth of overwrites, so segments are cleaned, freed and reused, and check that
//! every flushed value comes back after the store is closed and opened again.
//!
//! Change 7: a freed segment is written over without a sync of its own when a flush has
//! synced since it was freed; otherwise the file grows instead, by at most 16 segments,
//! and past that the segment is synced and reused. The tests run with no flush at all,
//! with one every few rounds, and with one every round: the file stays bounded in each.

use std::collections::BTreeMap;

use sled::Transactional;

fn open(path: &std::path::Path) -> sled::Db {
    // A closed handle's file lock goes with the last of sled's pool jobs that still hold
    // the file, which on a loaded machine can be a moment after the drop: wait for it
    // (bounded) instead of failing the reopen.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let opened = sled::Config::new()
            .path(path)
            // Small segments: many are filled, cleaned and reused by a few MB of writes.
            .segment_size(64 * 1024)
            .cache_capacity(1024 * 1024)
            .flush_every_ms(None)
            .open();
        match opened {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other.unwrap(),
        }
    }
}

fn value(key: u32, round: u32) -> Vec<u8> {
    let mut v = format!("{key}:{round}:").into_bytes();
    v.resize(700 + (key as usize * 37) % 300, b'x');
    v
}

#[test]
fn overwrites_through_reused_segments_read_back_after_reopening() {
    overwrite_and_read_back(Some(10));
}

#[test]
fn without_flushes_freed_segments_are_still_reused() {
    overwrite_and_read_back(None);
}

#[test]
fn with_a_flush_every_round_freed_segments_are_reused() {
    overwrite_and_read_back(Some(1));
}

/// Overwrites 60 keys 120 times, flushing every `flush_every` rounds (or only at the end),
/// then checks the file's size and reads every key back after reopening.
fn overwrite_and_read_back(flush_every: Option<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut last = BTreeMap::new();
    {
        let db = open(&path);
        let tree = db.open_tree("t").unwrap();
        for round in 0..120u32 {
            for key in 0..60u32 {
                tree.insert(key.to_be_bytes(), value(key, round)).unwrap();
                last.insert(key, round);
            }
            // Transactions seal log buffers (`pin_log`): the path whose per-buffer sync the
            // patch removed.
            let t2 = db.open_tree("u").unwrap();
            (&tree, &t2)
                .transaction(|(a, b)| {
                    a.insert(&b"round"[..], &round.to_be_bytes()[..])?;
                    b.insert(&b"round"[..], &round.to_be_bytes()[..])?;
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .unwrap();
            if flush_every.is_some_and(|n| round % n == n - 1) {
                db.flush().unwrap();
            }
        }
        db.flush().unwrap();
    }
    // About 5 MB went through the log; live data is about 50 KB. Without segment reuse the
    // file would hold all of it; the segments waiting for a sync add at most 1 MiB here.
    let size = std::fs::metadata(path.join("db")).unwrap().len();
    assert!(
        size < 3 * 1024 * 1024,
        "log file {size} bytes: segments were not reused"
    );

    let db = open(&path);
    let tree = db.open_tree("t").unwrap();
    for (key, round) in &last {
        let got = tree
            .get(key.to_be_bytes())
            .unwrap()
            .expect("a flushed key is missing");
        assert_eq!(&got[..], &value(*key, *round)[..], "key {key}");
    }
    let round = tree.get(b"round").unwrap().unwrap();
    assert_eq!(&round[..], &119u32.to_be_bytes()[..]);
    let other = db.open_tree("u").unwrap().get(b"round").unwrap().unwrap();
    assert_eq!(&other[..], &119u32.to_be_bytes()[..]);
}
