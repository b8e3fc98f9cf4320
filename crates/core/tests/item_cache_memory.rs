//! The item cache counts the memory it holds as the heap really gives it:
//! its limit is a limit on memory, not on a smaller number that leaves the
//! rest uncounted. (It counted the value bytes and a flat 96 per item, and
//! a mount's cache took about twice its limit.)
//!
//! The test binary's allocator counts every chunk the heap hands out, as
//! glibc sizes them, and the cache's own figure must be close to what its
//! items took.

use scoutfs_core::error::Result;
use scoutfs_core::mount::item::{Cover, ItemCache, Source};
use scoutfs_core::store::forest::ReadResult;
use scoutfs_format::Key;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static HEAP: AtomicIsize = AtomicIsize::new(0);

fn chunk(ptr: *mut u8) -> isize {
    // SAFETY: `ptr` came from the system allocator (malloc) and is live.
    (unsafe { libc::malloc_usable_size(ptr as *mut libc::c_void) } + 8) as isize
}

// SAFETY: every call is passed to the system allocator unchanged; the
// counting only reads the sizes of live chunks.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            HEAP.fetch_add(chunk(p), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HEAP.fetch_sub(chunk(p), Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let old = chunk(p);
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            HEAP.fetch_add(chunk(q) - old, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

/// A device with nothing on it: every read learns the whole cover.
struct Empty;

impl Source for Empty {
    fn read(&self, _k: &Key, lo: &Key, hi: &Key) -> Result<ReadResult> {
        Ok(ReadResult {
            items: BTreeMap::new(),
            start: *lo,
            end: *hi,
        })
    }
}

fn cover(ino: u64) -> Cover {
    let group = ino & !1023;
    Cover {
        start: Key::new(32, group, 0, 0, 0, 0),
        end: Key::new(32, group + 1023, 255, u64::MAX, u64::MAX, 255),
        read: true,
        write: true,
        write_only: false,
        write_seq: 1,
    }
}

/// The items of `files` empty files as a create makes them (an inode, a
/// name, its readdir position, its back reference and two index items),
/// in `order`; returns (heap taken, cache's own count) once committed.
fn fill(files: u64, shuffle: bool) -> (isize, usize) {
    let mut inos: Vec<u64> = (0..files).map(|i| 4096 + i).collect();
    if shuffle {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..inos.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            inos.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }
    let before = HEAP.load(Ordering::Relaxed);
    let cache = ItemCache::new(usize::MAX);
    for &ino in &inos {
        let c = cover(ino);
        let dir = ino & !1023;
        let items: [(Key, usize); 6] = [
            (Key::new(32, ino, 1, 0, 0, 0), 140),
            (Key::new(32, dir, 5, ino.wrapping_mul(0x9e37), 0, 0), 40),
            (Key::new(32, dir, 6, ino, 0, 0), 40),
            (Key::new(32, ino, 7, dir, ino, 0), 12),
            (Key::new(32, dir, 9, ino, ino, 0), 0),
            (Key::new(32, dir, 10, ino, ino, 0), 0),
        ];
        for (k, len) in items {
            assert!(cache.create(&Empty, &c, &k, 2, &vec![7u8; len]).unwrap());
        }
    }
    cache.write_done();
    let heap = HEAP.load(Ordering::Relaxed) - before;
    let (_, dirty, clean) = cache.usage();
    assert_eq!(dirty, 0);
    drop(cache);
    (heap, clean)
}

#[test]
fn the_item_cache_counts_the_heap_its_items_take() {
    for shuffle in [false, true] {
        let (heap, counted) = fill(100_000, shuffle);
        let ratio = heap as f64 / counted as f64;
        eprintln!(
            "{} order: heap {heap} bytes, counted {counted} ({ratio:.2})",
            if shuffle { "random" } else { "inode" }
        );
        assert!(
            (0.8..=1.2).contains(&ratio),
            "the cache counts {counted} bytes for {heap} of heap ({ratio:.2})"
        );
    }
}
