//! The vendored sled's memory (vendor/README.md, change 3). Its page cache counted a node
//! by its size in the log, which for short keys is a fraction of what the node holds in
//! memory, so a cache of a few MiB kept many times that in nodes: the engine's index trees
//! (short keys, empty values) at 1M cases held ~400 MB in a cache of 64 MiB. And opening a
//! store kept room for four locations for each page, where most pages have one.
//!
//! This test opens a store of short keys, checks the heap it took, reads every key through
//! a 4 MiB cache and checks how much the heap grew. It is alone in its file: the figures
//! are the whole process's heap.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

fn open(path: &std::path::Path) -> sled::Db {
    sled::Config::new()
        .path(path)
        .cache_capacity(4 * 1024 * 1024)
        .flush_every_ms(None)
        .open()
        .unwrap()
}

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_mb() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

const KEYS: u64 = 400_000;

fn key(i: u64) -> [u8; 12] {
    // Like an index entry: a short shared prefix and an id.
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(b"new\0");
    k[4..].copy_from_slice(&i.to_be_bytes());
    k
}

#[test]
fn reading_a_store_keeps_the_cache_near_its_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = open(&path);
        let tree = db.open_tree("index").unwrap();
        for i in 0..KEYS {
            tree.insert(key(i), &[]).unwrap();
        }
        db.flush().unwrap();
    }
    // A fresh handle has no node in memory, only sled's table of where each page is.
    let base = live_mb();
    let db = open(&path);
    let tree = db.open_tree("index").unwrap();
    let opened = live_mb() - base;
    // About 40k pages. 11 MB with each page's locations at their length, most of it fixed
    // (the page table's first level, the log buffers); 17 MB when each page's locations
    // had room for four (change 3 of vendor/README.md).
    assert!(
        opened < 14.0,
        "opening a store of {KEYS} keys took {opened:.1} MB of heap"
    );
    // Reading every key pages every node in.
    let before = live_mb();
    let mut n = 0u64;
    for item in tree.iter() {
        let (k, v) = item.unwrap();
        assert_eq!(&k[..], &key(n)[..]);
        assert!(v.is_empty());
        n += 1;
    }
    let grew = live_mb() - before;
    assert_eq!(n, KEYS);
    // Counted by their size in the log, the nodes read took 36 MB here; counted with what
    // they take in memory, 12 MB: the cache's 4 MiB, the pages' records and what sled's
    // epochs have not freed yet.
    assert!(
        grew < 24.0,
        "reading {KEYS} keys through a 4 MiB cache grew the heap by {grew:.1} MB"
    );
}
