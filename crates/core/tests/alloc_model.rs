//! The allocators against a bitset model, across crashes.
//!
//! Seeded rounds allocate and free data extents (recorded as file extent
//! items in the fs tree, so the metadata allocator churns too), commit, and
//! then crash the in-memory device at a chosen point: between commits, in
//! the middle of a commit's block writes, or at its flush. Unflushed writes
//! are lost all, some, or torn. After every crash the filesystem is reopened
//! from its super block and must equal the last durable commit exactly: the
//! data allocator's free blocks are precisely the blocks the model doesn't
//! hold, and `check` proves every metadata and data block is referenced
//! exactly once or free exactly once.
//!
//! Replay a failure with `SCOUTFS_TEST_SEED=<seed>`.

mod common;

use scoutfs_core::rng::Rng;
use scoutfs_core::store::alloc::extent;
use scoutfs_core::store::btree;
use scoutfs_core::store::commit::{Store, Txn};
use scoutfs_core::store::dev::{BlockDev, CrashMode, MemDev};
use scoutfs_core::tools::check;
use scoutfs_format::data::DataExtentVal;
use scoutfs_format::key::{ty, zone};
use scoutfs_format::{Key, DATA_DEV_START_BLKNO};
use std::collections::BTreeMap;
use std::sync::Arc;
use zerocopy::IntoBytes;

const ROUNDS: u64 = 1000;
const DATA_BYTES: u64 = 64 << 20;

/// Extents the model owns: start -> len.
type Model = BTreeMap<u64, u64>;

fn extent_key(start: u64, len: u64) -> Key {
    // One inode per extent keeps keys unique; the logical end is unused here.
    Key::new(zone::FS, 4096 + start, ty::DATA_EXTENT, len - 1, len, 0)
}

fn op(txn: &mut Txn, model: &mut Model, rng: &mut Rng, seed: u64) {
    if model.is_empty() || rng.below(100) < 55 {
        let span = if rng.below(4) == 0 { 300 } else { 16 };
        let want = 1 + rng.below(span);
        let got = extent::alloc_extent(&mut txn.w, &mut txn.sb.data_alloc, want).expect("alloc");
        let Some(e) = got else { return };
        assert!(
            e.len >= 1 && e.len <= want,
            "alloc of {want} gave {e:?} (seed {seed})"
        );
        let v = DataExtentVal::new(e.start, 0);
        btree::insert(
            &mut txn.w,
            &mut txn.sb.fs_root,
            &extent_key(e.start, e.len),
            1,
            0,
            v.as_bytes(),
        )
        .unwrap();
        for (&s, &l) in model.range(..e.start + e.len).next_back().into_iter() {
            assert!(
                s + l <= e.start,
                "allocated {e:?} overlaps held {s}+{l} (seed {seed})"
            );
        }
        model.insert(e.start, e.len);
    } else {
        let nth = rng.below(model.len() as u64) as usize;
        let (&start, &len) = model.iter().nth(nth).unwrap();
        extent::free_extent(&mut txn.w, &mut txn.sb.data_alloc, start, len).expect("free");
        assert!(btree::delete(&mut txn.w, &mut txn.sb.fs_root, &extent_key(start, len)).unwrap());
        model.remove(&start);
    }
}

/// The reopened filesystem equals the durable model, and check is clean.
fn verify(meta: &MemDev, data: &MemDev, model: &Model, seed: u64, round: u64) -> Store {
    let store = common::open(meta);
    let total = store.sb.total_data_blocks.get();
    let mut held = vec![false; total as usize];
    for (&s, &l) in model {
        held[s as usize..(s + l) as usize]
            .iter_mut()
            .for_each(|h| *h = true);
    }
    let mut free = vec![false; total as usize];
    for e in extent::extents(store.cache.as_ref(), &store.sb.data_alloc).unwrap() {
        free[e.start as usize..=e.end() as usize]
            .iter_mut()
            .for_each(|f| *f = true);
    }
    for b in DATA_DEV_START_BLKNO..total {
        let (h, f) = (held[b as usize], free[b as usize]);
        assert!(
            h != f,
            "round {round}: data block {b} held={h} free={f} (seed {seed})"
        );
    }
    let mut items = 0;
    btree::for_each_range(
        store.cache.as_ref(),
        &store.sb.fs_root,
        &Key::inode(4096),
        &Key::MAX,
        |it| {
            let start = it.key.first - 4096;
            assert_eq!(
                model.get(&start),
                Some(&it.key.third),
                "round {round}: extent item {} (seed {seed})",
                it.key
            );
            items += 1;
            Ok(true)
        },
    )
    .unwrap();
    assert_eq!(
        items,
        model.len(),
        "round {round}: extent items (seed {seed})"
    );
    let (m, d): (Arc<dyn BlockDev>, Arc<dyn BlockDev>) =
        (Arc::new(meta.clone()), Arc::new(data.clone()));
    let report = check::check(&m, &d, &mut check::NoProgress).expect("check runs");
    let first: Vec<String> = report
        .problems
        .iter()
        .take(8)
        .map(|p| p.to_string())
        .collect();
    assert!(
        report.is_clean(),
        "round {round}: check found {first:?} (seed {seed})"
    );
    assert_eq!(
        report.data_referenced,
        held.iter().filter(|&&h| h).count() as u64
    );
    store
}

#[test]
fn allocators_match_bitset_model_across_crashes() {
    let seed = common::seed(0xa110c);
    let (meta, data) = common::mem_fs(128 << 20, DATA_BYTES, 0xa11);
    let mut rng = Rng::new(seed);
    let mut durable = Model::new();
    let mut store = verify(&meta, &data, &durable, seed, 0);
    let (mut interrupted, mut survived) = (0, 0);
    for round in 1..=ROUNDS {
        let mut model = durable.clone();
        let mut txn = store.begin_with(Rng::new(rng.next_u64()));
        for _ in 0..1 + rng.below(60) {
            op(&mut txn, &mut model, &mut rng, seed);
        }
        // Where this round's power loss comes: after the commit, in the
        // middle of its writes, or at its first flush.
        let point = rng.below(4);
        match point {
            0 | 1 => {}
            2 => meta.fail_writes_after(rng.below(txn.w.dirty_blocks() as u64 + 2)),
            _ => meta.fail_flushes_after(0),
        }
        match store.commit(txn) {
            Ok(_) => {
                durable = model;
                survived += 1;
            }
            Err(e) => {
                assert!(
                    point >= 2,
                    "round {round}: commit failed without a fault: {e} (seed {seed})"
                );
                interrupted += 1;
            }
        }
        meta.clear_faults();
        let mode = match rng.below(3) {
            0 => CrashMode::LoseAll,
            1 => CrashMode::LoseSome {
                seed: rng.next_u64(),
            },
            _ => CrashMode::Tear {
                seed: rng.next_u64(),
            },
        };
        if point != 0 {
            meta.crash(mode);
        }
        drop(store);
        store = verify(&meta, &data, &durable, seed, round);
    }
    assert!(
        interrupted > 10 && survived > 10,
        "interrupted {interrupted}, survived {survived}"
    );
}
