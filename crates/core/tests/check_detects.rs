//! `check` finds each kind of accounting error it exists to find: data
//! blocks both free and referenced, data and metadata blocks that are
//! neither, and a metadata block both referenced and free.

mod common;

use scoutfs_core::alloc::extent;
use scoutfs_core::btree;
use scoutfs_core::check::{check, NoProgress, Report};
use scoutfs_core::commit::Store;
use scoutfs_core::dev::{BlockDev, MemDev};
use scoutfs_core::rng::Rng;
use scoutfs_format::data::DataExtentVal;
use scoutfs_format::key::{ty, zone};
use scoutfs_format::Key;
use std::sync::Arc;
use zerocopy::IntoBytes;

fn run_check(meta: &MemDev, data: &MemDev) -> Report {
    let (m, d): (Arc<dyn BlockDev>, Arc<dyn BlockDev>) =
        (Arc::new(meta.clone()), Arc::new(data.clone()));
    check(&m, &d, &mut NoProgress).expect("check runs")
}

fn extent_item(txn: &mut scoutfs_core::commit::Txn, ino: u64, blkno: u64, len: u64) {
    let k = Key::new(zone::FS, ino, ty::DATA_EXTENT, len - 1, len, 0);
    let v = DataExtentVal::new(blkno, 0);
    btree::insert(&mut txn.w, &mut txn.sb.fs_root, &k, 1, 0, v.as_bytes()).unwrap();
}

fn fresh() -> (MemDev, MemDev, Store) {
    let (meta, data) = common::mem_fs(128 << 20, 64 << 20, 0xc4ec);
    let store = common::open(&meta);
    assert!(run_check(&meta, &data).is_clean());
    (meta, data, store)
}

fn assert_found(r: &Report, want: &str) {
    let all: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        all.iter().any(|p| p.contains(want)),
        "expected a problem with '{want}', got {all:?}"
    );
}

#[test]
fn data_blocks_referenced_while_free() {
    let (meta, data, mut store) = fresh();
    let mut txn = store.begin_with(Rng::new(1));
    extent_item(&mut txn, 5000, 1000, 8);
    store.commit(txn).unwrap();
    assert_found(&run_check(&meta, &data), "data blocks 1000..=1007 of");
}

#[test]
fn data_blocks_allocated_and_not_recorded_are_lost() {
    let (meta, data, mut store) = fresh();
    let mut txn = store.begin_with(Rng::new(2));
    let e = extent::alloc_extent(&mut txn.w, &mut txn.sb.data_alloc, 16)
        .unwrap()
        .unwrap();
    extent_item(&mut txn, 5000, e.start, 8);
    store.commit(txn).unwrap();
    let r = run_check(&meta, &data);
    assert_found(
        &r,
        &format!(
            "data blocks {}..={} (8 blocks) are neither",
            e.start + 8,
            e.start + 15
        ),
    );
    assert_eq!(r.data_referenced, 8);
}

#[test]
fn metadata_block_leaked_or_doubly_used() {
    let (meta, data, mut store) = fresh();
    let mut txn = store.begin_with(Rng::new(3));
    let leaked = txn.w.alloc_meta().unwrap();
    store.commit(txn).unwrap();
    assert_found(
        &run_check(&meta, &data),
        &format!("metadata blocks {leaked}..={leaked} (1 blocks) are neither"),
    );

    let mut txn = store.begin_with(Rng::new(4));
    let root = txn.sb.fs_root.blk.blkno.get();
    // Put the fs root's own block in the freed extent tree as well.
    extent::free_extent(&mut txn.w, &mut txn.sb.meta_alloc[1], root, 1).unwrap();
    let root_now = txn.sb.fs_root.blk.blkno.get();
    store.commit(txn).unwrap();
    assert_eq!(root, root_now);
    assert_found(
        &run_check(&meta, &data),
        &format!("metadata block {root} is"),
    );
}
