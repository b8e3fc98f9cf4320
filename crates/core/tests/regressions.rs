//! Regression tests, each named after what broke (found in review).

mod common;

use scoutfs_core::rng::Rng;
use scoutfs_core::store::alloc::extent;
use scoutfs_core::store::btree;
use scoutfs_core::store::dev::{BlockDev, CrashMode, MemDev};
use scoutfs_core::tools::check::{check, NoProgress, Report};
use scoutfs_format::consts::BLOCK_LG_SIZE;
use scoutfs_format::key::zone;
use scoutfs_format::{AllocRoot, Key};
use std::sync::Arc;

fn run_check(meta: &MemDev, data: &MemDev) -> Report {
    let (m, d): (Arc<dyn BlockDev>, Arc<dyn BlockDev>) =
        (Arc::new(meta.clone()), Arc::new(data.clone()));
    check(&m, &d, &mut NoProgress).expect("check runs")
}

fn k(i: u64) -> Key {
    Key::new(32, i, 0, 0, 0, 0)
}

/// A transient read error in the middle of an insert walk drops the dirty
/// parent (taken out of the writer, never put back); the txn can still be
/// committed and the super then references a block that was never written.
#[test]
fn failed_insert_poisons_the_transaction() {
    let (meta, data) = common::mem_fs(128 << 20, 64 << 20, 0x1111);
    let mut store = common::open(&meta);
    let mut txn = store.begin_with(Rng::new(1));
    for i in 0..3000u64 {
        btree::insert(&mut txn.w, &mut txn.sb.srch_root, &k(i), 1, 0, &[1u8; 60]).unwrap();
    }
    store.commit(txn).unwrap();
    assert!(run_check(&meta, &data).is_clean());
    assert!(store.sb.srch_root.height >= 2);
    let mut leaves = Vec::new();
    btree::walk_blocks(store.cache.as_ref(), &store.sb.srch_root, |r, b| {
        if btree::block::level(b) == 0 {
            leaves.push(r.blkno.get());
        }
        Ok(())
    })
    .unwrap();
    let last = *leaves.last().unwrap();
    store.cache.clear();
    let off = last * BLOCK_LG_SIZE as u64;
    meta.fail_reads_at(off..off + BLOCK_LG_SIZE as u64);
    let mut txn = store.begin_with(Rng::new(2));
    let e = btree::insert(
        &mut txn.w,
        &mut txn.sb.srch_root,
        &k(10_000),
        1,
        0,
        &[2u8; 60],
    );
    assert!(e.is_err());
    meta.clear_faults();
    // The caller carries on (another tree) and commits.
    btree::insert(
        &mut txn.w,
        &mut txn.sb.fs_root,
        &Key::new(4, 0, 4, 9, 9, 0),
        1,
        0,
        &[],
    )
    .unwrap();
    let res = store.commit(txn);
    assert!(
        res.is_err(),
        "a transaction with a failed change must not commit"
    );
    let r = run_check(&meta, &data);
    let all: Vec<String> = r.problems.iter().take(5).map(|p| p.to_string()).collect();
    assert!(r.is_clean(), "check after commit: {all:?}");
}

/// free_extent misses an overlap with an extent inside the freed range
/// when another extent ends right before the range.
#[test]
fn free_extent_refuses_an_inner_overlap_after_a_left_neighbour() {
    let (meta, _data) = common::mem_fs(128 << 20, 64 << 20, 0x2222);
    let store = common::open(&meta);
    let mut txn = store.begin_with(Rng::new(3));
    let mut root = AllocRoot::default();
    extent::free_extent(&mut txn.w, &mut root, 5, 5).unwrap(); // 5..=9
    extent::free_extent(&mut txn.w, &mut root, 12, 3).unwrap(); // 12..=14
    let r = extent::free_extent(&mut txn.w, &mut root, 10, 10); // 10..=19
    let ex = extent::extents(&txn.w, &root).unwrap();
    assert!(
        r.is_err(),
        "double free of 12..=14 accepted; extents now {ex:?} total {}",
        root.total_len.get()
    );
}

/// A free extent item ending at u64::MAX (valid crc, valid block) panics check.
#[test]
fn check_reports_a_free_extent_ending_at_u64_max() {
    let (meta, data) = common::mem_fs(128 << 20, 64 << 20, 0x3333);
    let mut store = common::open(&meta);
    let mut txn = store.begin_with(Rng::new(4));
    let key = Key::new(zone::FREE_EXTENT_BLKNO, u64::MAX, 0, 1, 0, 0);
    btree::insert(&mut txn.w, &mut txn.sb.data_alloc.root, &key, 0, 0, &[]).unwrap();
    store.commit(txn).unwrap();
    let r = run_check(&meta, &data);
    assert!(!r.is_clean(), "an extent at u64::MAX is reported");
}

/// A commit whose final flush fails leaves Store.sb at the old super while
/// the new one may be durable; carrying on reuses the new super's blocks.
#[test]
fn store_refuses_commits_after_a_failed_super_flush() {
    let (meta, data) = common::mem_fs(128 << 20, 64 << 20, 0x4444);
    let mut store = common::open(&meta);
    let mut txn = store.begin_with(Rng::new(5));
    for i in 0..500u64 {
        btree::insert(&mut txn.w, &mut txn.sb.srch_root, &k(i), 1, 0, &[1u8; 60]).unwrap();
    }
    meta.fail_flushes_after(1);
    let r = store.commit(txn);
    assert!(r.is_err());
    meta.clear_faults();
    let mut txn = store.begin_with(Rng::new(6));
    for i in 0..500u64 {
        btree::insert(
            &mut txn.w,
            &mut txn.sb.srch_root,
            &k(100_000 + i),
            1,
            0,
            &[3u8; 60],
        )
        .unwrap();
    }
    meta.fail_flushes_after(1);
    let r = store.commit(txn);
    assert!(
        r.is_err(),
        "the store refuses to commit after a failed super block flush"
    );
    meta.clear_faults();
    meta.crash(CrashMode::LoseAll);
    let r = run_check(&meta, &data);
    let all: Vec<String> = r.problems.iter().take(5).map(|p| p.to_string()).collect();
    assert!(r.is_clean(), "after crash: {all:?}");
}
