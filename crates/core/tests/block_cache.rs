//! The block cache's read rule: a header that doesn't match the reference
//! is Stale, a bad checksum under a matching header is Corrupt, a device
//! failure is an I/O error; each is counted. The cache stays within its
//! bound, and copy-on-write gives blocks new numbers and seqs. Writes are
//! checked as reads are, and a commit as against the last durable one.

mod common;

use scoutfs_core::error::{CorruptKind, Error};
use scoutfs_core::rng::Rng;
use scoutfs_core::store::block::BlockCache;
use scoutfs_core::store::btree;
use scoutfs_core::store::dev::{BlockDev, MemDev};
use scoutfs_format::consts::{magic, BLOCK_LG_SIZE};
use scoutfs_format::{BlockRef, Key};
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn fs_with_items(n: u64) -> (MemDev, scoutfs_core::store::commit::Store) {
    let (meta, _data) = common::mem_fs(128 << 20, 64 << 20, 0xcac4e);
    let mut store = common::open(&meta);
    let mut txn = store.begin_with(Rng::new(1));
    for i in 0..n {
        let k = Key::new(32, i, 0, 0, 0, 0);
        btree::insert(&mut txn.w, &mut txn.sb.srch_root, &k, 1, 0, &[7u8; 200]).unwrap();
    }
    store.commit(txn).unwrap();
    (meta, store)
}

fn cache_of(meta: &MemDev, fsid: u64, max: usize) -> BlockCache {
    let dev: Arc<dyn BlockDev> = Arc::new(meta.clone());
    BlockCache::new(dev, fsid, max)
}

#[test]
fn stale_corrupt_and_io_errors_are_distinct_and_counted() {
    let (meta, store) = fs_with_items(10);
    let fsid = store.sb.hdr.fsid.get();
    let r = store.sb.srch_root.blk;
    let c = cache_of(&meta, fsid, 16);
    assert!(c.read(&r, magic::BTREE).is_ok());

    // A reference with another seq: the block was rewritten since.
    let stale = BlockRef::new(r.blkno.get(), r.seq.get() ^ 1);
    assert!(matches!(
        c.read(&stale, magic::BTREE),
        Err(Error::Stale { .. })
    ));
    // The wrong kind of block is stale too: the header names another magic.
    c.clear();
    assert!(matches!(
        c.read(&r, magic::ALLOC_LIST),
        Err(Error::Stale { .. })
    ));
    assert_eq!(c.counters.block_stale.load(Ordering::Relaxed), 2);

    // A flipped byte past the header: the header matches, the crc doesn't.
    c.clear();
    meta.corrupt_byte(r.blkno.get() * BLOCK_LG_SIZE as u64 + 5000);
    match c.read(&r, magic::BTREE) {
        Err(Error::Corrupt(k)) => {
            assert_eq!(k.kind, CorruptKind::BlockCrc);
            assert_eq!((k.blkno, k.seq), (r.blkno.get(), r.seq.get()));
        }
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
    assert_eq!(c.counters.block_corrupt.load(Ordering::Relaxed), 1);

    // An unreadable block is an I/O error.
    let off = r.blkno.get() * BLOCK_LG_SIZE as u64;
    meta.fail_reads_at(off..off + 1);
    assert!(matches!(c.read(&r, magic::BTREE), Err(Error::Io { .. })));
    assert_eq!(c.counters.block_io_error.load(Ordering::Relaxed), 1);
    // None of these errors left a bad block in the cache.
    assert_eq!(c.cached_blocks(), 0);
}

#[test]
fn cache_stays_within_its_bound_and_hits_after_a_miss() {
    let (meta, store) = fs_with_items(4000);
    let c = cache_of(&meta, store.sb.hdr.fsid.get(), 3);
    let root = store.sb.srch_root;
    let mut blocks = 0;
    btree::walk_blocks(&c, &root, |_, _| {
        blocks += 1;
        Ok(())
    })
    .unwrap();
    assert!(blocks > 5, "a tree larger than the cache");
    assert!(c.cached_blocks() <= 3);
    assert!(c.counters.block_cache_evict.load(Ordering::Relaxed) >= blocks - 3);
    let misses = c.counters.block_cache_miss.load(Ordering::Relaxed);
    c.read(&root.blk, magic::BTREE).unwrap();
    c.read(&root.blk, magic::BTREE).unwrap();
    assert!(c.counters.block_cache_hit.load(Ordering::Relaxed) >= 1);
    assert!(c.counters.block_cache_miss.load(Ordering::Relaxed) <= misses + 1);
}

#[test]
fn copy_on_write_moves_blocks_and_frees_the_old_ones() {
    let (_meta, mut store) = fs_with_items(10);
    let before = store.sb.srch_root.blk;
    let mut txn = store.begin_with(Rng::new(2));
    btree::insert(
        &mut txn.w,
        &mut txn.sb.srch_root,
        &Key::new(32, 99, 0, 0, 0, 0),
        2,
        0,
        b"x",
    )
    .unwrap();
    let after = txn.sb.srch_root.blk;
    assert_ne!(
        after.blkno, before.blkno,
        "a clean block is copied to a new blkno"
    );
    assert_ne!(after.seq, before.seq, "with a new seq");
    let (freed, _) =
        scoutfs_core::store::alloc::list::read_list(&txn.w, &txn.w.lists().freed).unwrap();
    assert!(
        freed.contains(&before.blkno.get()),
        "the old blkno is freed: {freed:?}"
    );
    // A block already dirty in this transaction is changed in place.
    btree::insert(
        &mut txn.w,
        &mut txn.sb.srch_root,
        &Key::new(32, 100, 0, 0, 0, 0),
        2,
        0,
        b"y",
    )
    .unwrap();
    assert_eq!(txn.sb.srch_root.blk, after);
    store.commit(txn).unwrap();
}

/// A writer checks each block as a read would before writing it: a block
/// built wrong fails the commit, is counted, and never reaches the device.
#[test]
fn a_block_built_wrong_is_refused_before_it_is_written() {
    let (meta, mut store) = fs_with_items(1);
    let mut txn = store.begin_with(Rng::new(2));
    let (r, mut buf) = txn.w.new_block(magic::BTREE).unwrap();
    // A btree block whose header claims far more items than a block holds.
    buf[32..64].fill(0xff);
    txn.w.put(buf);
    let e = store.commit(txn).unwrap_err();
    let c = e
        .corruption()
        .unwrap_or_else(|| panic!("not a corruption: {e}"));
    assert_eq!(c.kind, CorruptKind::BlockInvalid, "{e}");
    assert_eq!(c.blkno, r.blkno.get());
    assert!(e.to_string().contains("refusing to write"), "{e}");
    let refused = store
        .cache
        .counters
        .block_write_refused
        .load(Ordering::Relaxed);
    assert_eq!(refused, 1);
    let mut on_dev = vec![0u8; BLOCK_LG_SIZE];
    meta.read_at(&mut on_dev, r.blkno.get() * BLOCK_LG_SIZE as u64)
        .unwrap();
    assert!(
        on_dev.iter().all(|&b| b == 0),
        "the refused block was written"
    );
}

/// A commit checks the super block against the last durable one: a seq or
/// inode number that goes back is a bug, and nothing is written.
#[test]
fn a_commit_that_takes_the_next_inode_back_is_refused() {
    let (meta, mut store) = fs_with_items(1);
    let before = store.sb;
    let mut txn = store.begin_with(Rng::new(3));
    txn.sb.next_ino = (before.next_ino.get() - 1).into();
    // Debug builds (the tests) stop at the invariant; release builds fail
    // the commit with an internal error.
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.commit(txn)));
    match res {
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(msg.contains("invariant: next inode went back"), "{msg}");
        }
        Ok(r) => {
            let e = r.expect_err("the commit went through");
            assert!(e.to_string().contains("next inode went back"), "{e}");
        }
    }
    let durable = common::open(&meta).sb;
    assert_eq!(durable.hdr.seq, before.hdr.seq, "a super block was written");
}

/// A device that runs `during` inside each read, between the cache's
/// lookup and its insert.
struct DuringRead {
    dev: MemDev,
    during: std::sync::Mutex<Option<Box<dyn FnMut() + Send>>>,
}

impl BlockDev for DuringRead {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.dev.read_at(buf, off)?;
        if let Some(f) = self.during.lock().unwrap().as_mut() {
            f();
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.dev.write_at(buf, off)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.dev.flush()
    }
    fn size(&self) -> u64 {
        self.dev.size()
    }
    fn name(&self) -> &str {
        "during-read"
    }
}

/// A read that began before `clear` does not put back what it read: after
/// the clear every block comes from the device again, so a block changed
/// under the cache (here, corrupted) is seen.
#[test]
fn a_read_racing_a_clear_leaves_nothing_cached() {
    let (meta, store) = fs_with_items(10);
    let fsid = store.sb.hdr.fsid.get();
    let r = store.sb.srch_root.blk;
    let dev = Arc::new(DuringRead {
        dev: meta.clone(),
        during: std::sync::Mutex::new(None),
    });
    let c = Arc::new(BlockCache::new(dev.clone(), fsid, 16));
    // The clear lands while the device read is under way; the block is
    // corrupted on the device after that read.
    let weak = Arc::downgrade(&c);
    let off = r.blkno.get() * BLOCK_LG_SIZE as u64 + 5000;
    let m = meta.clone();
    *dev.during.lock().unwrap() = Some(Box::new(move || {
        m.corrupt_byte(off);
        if let Some(c) = weak.upgrade() {
            c.clear();
        }
    }));
    assert!(
        c.read(&r, magic::BTREE).is_ok(),
        "the read saw the old bytes"
    );
    assert_eq!(c.cached_blocks(), 0, "and did not cache them");
    *dev.during.lock().unwrap() = None;
    assert!(matches!(c.read(&r, magic::BTREE), Err(Error::Corrupt(_))));
    // The byte flipped back: without a clear, a read caches what it read.
    meta.corrupt_byte(off);
    c.read(&r, magic::BTREE).unwrap();
    assert_eq!(c.cached_blocks(), 1);
}
