//! A damaged store (truncated or corrupted files) stops the open with an error naming the
//! data dir and what to do; it never opens as an empty or older store, not even on a
//! second try. sled alone would open every one of these silently with data missing.

use std::path::Path;
use std::time::{Duration, Instant};

use engine::cases::{Actor, NewCase, Severity, Timestamp};
use engine::persist::{CaseQuery, CaseRead, CaseWrite, SledStore, StoreError, WriteMeta};

/// A closed store with 200 cases in `dir`.
async fn store_with_cases(dir: &Path) {
    let s = SledStore::open(dir).unwrap();
    for i in 0..200 {
        s.create(
            NewCase::new(format!("case {i}"), Severity::Medium),
            &WriteMeta::new(Actor::System, Timestamp::now()),
        )
        .await
        .unwrap();
    }
    drop(s);
    wait_unlocked(dir);
}

/// sled lets go of its lock a moment after the last handle drops.
fn wait_unlocked(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match sled::Config::new().path(dir).open() {
            Ok(db) => {
                drop(db);
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
            // Locked by a handle that is going away.
            Err(sled::Error::Io(_)) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return,
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn remove_snapshots(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("snap.") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

fn truncate(file: &Path, len: impl Fn(u64) -> u64) {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let l = f.metadata().unwrap().len();
    f.set_len(len(l)).unwrap();
    f.sync_all().unwrap();
}

fn flip(file: &Path, at: impl Fn(u64) -> u64) {
    let mut b = std::fs::read(file).unwrap();
    let start = at(b.len() as u64) as usize;
    for x in b.iter_mut().skip(start).take(16) {
        *x ^= 0xa5;
    }
    std::fs::write(file, b).unwrap();
}

/// The open's error; or, when the damage hit bytes the store does not need, proof that
/// nothing is missing: every case there and a clean check.
fn refused(dir: &Path, what: &str) -> String {
    let e = match SledStore::open(dir) {
        Ok(s) => {
            let (n, problems) = count_and_check(&s);
            assert!(
                n == 200 && problems.is_empty(),
                "{what}: opened with {n} case(s) and {problems:?} instead of refusing"
            );
            return "intact".into();
        }
        Err(e) => e,
    };
    assert!(matches!(e, StoreError::Corrupt { .. }), "{what}: {e}");
    let msg = e.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{what}: {msg}");
    assert!(
        msg.contains("restore the data dir from a backup"),
        "{what}: {msg}"
    );
    msg
}

fn count_and_check(s: &SledStore) -> (u64, Vec<String>) {
    tokio::task::block_in_place(|| {
        let rt = tokio::runtime::Handle::current();
        (
            rt.block_on(s.count(&CaseQuery::all())).unwrap_or(0),
            rt.block_on(s.check())
                .unwrap_or_else(|e| vec![e.to_string()]),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_refused_with_advice() {
    let base = tempfile::tempdir().unwrap();
    let good = base.path().join("good");
    store_with_cases(&good).await;
    type Damage = (&'static str, Box<dyn Fn(&Path)>);
    let damages: Vec<Damage> = vec![
        (
            "db truncated to nothing",
            Box::new(|d| truncate(&d.join("db"), |_| 0)),
        ),
        (
            "db truncated to 100 bytes",
            Box::new(|d| truncate(&d.join("db"), |_| 100)),
        ),
        (
            "db truncated to half",
            Box::new(|d| truncate(&d.join("db"), |l| l / 2)),
        ),
        (
            "db corrupted at the start",
            Box::new(|d| flip(&d.join("db"), |_| 10)),
        ),
        (
            "db corrupted in the middle",
            Box::new(|d| flip(&d.join("db"), |l| l / 3)),
        ),
        (
            "db deleted",
            Box::new(|d| std::fs::remove_file(d.join("db")).unwrap()),
        ),
        // Without sled's snapshot (as after a crash, which leaves none) sled recovers by
        // scanning the log and stops at the damage, silently: the witness catches it.
        (
            "db truncated to half, no snapshot",
            Box::new(|d| {
                remove_snapshots(d);
                truncate(&d.join("db"), |l| l / 2)
            }),
        ),
        (
            "db truncated by 100 bytes, no snapshot",
            Box::new(|d| {
                remove_snapshots(d);
                truncate(&d.join("db"), |l| l.saturating_sub(100))
            }),
        ),
        (
            "db corrupted in the middle, no snapshot",
            Box::new(|d| {
                remove_snapshots(d);
                flip(&d.join("db"), |l| l / 3)
            }),
        ),
        (
            "witness garbled",
            Box::new(|d| std::fs::write(d.join("caseflow-store.json"), b"{oops").unwrap()),
        ),
    ];
    let mut outcomes = Vec::new();
    for (what, damage) in damages {
        let dir = base.path().join(what.replace(' ', "-"));
        copy_dir(&good, &dir);
        damage(&dir);
        let first = refused(&dir, what);
        wait_unlocked(&dir);
        // The failed open did not "repair" the store into an empty one.
        let second = refused(&dir, what);
        assert_eq!(first, second, "{what}");
        println!("{what}: {first}");
        outcomes.push((what, first));
    }
    // Losing the files, or most of them, is always refused.
    for (what, outcome) in &outcomes {
        if what.contains("truncated to") || what.contains("deleted") || what.contains("witness") {
            assert_ne!(outcome, "intact", "{what}");
        }
    }
    // The undamaged original still opens with everything.
    let s = SledStore::open(&good).unwrap();
    assert_eq!(s.count(&CaseQuery::all()).await.unwrap(), 200);
    assert!(s.check().await.unwrap().is_empty());
}

/// `verify_on_open` is what catches a damaged page that opening alone does not read: the
/// same damage opens without it (and fails later, at the first read of that page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_open_reads_the_pages_an_open_alone_does_not() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("store");
    store_with_cases(&dir).await;
    flip(&dir.join("db"), |l| l / 3);
    let unverified = engine::persist::StoreOptions {
        verify_on_open: false,
        ..engine::persist::StoreOptions::default()
    };
    match SledStore::open_with_options(&dir, unverified) {
        Ok(s) => drop(s),
        Err(e) => panic!("the damage was found without verify_on_open: {e}"),
    }
    wait_unlocked(&dir);
    let e = match SledStore::open(&dir) {
        Ok(_) => panic!("a damaged page opened with verify_on_open"),
        Err(e) => e,
    };
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("restore the data dir"), "{e}");
}
