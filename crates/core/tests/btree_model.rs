//! The btree against a `BTreeMap` model: seeded random inserts, updates,
//! deletes, lookups, next/prev and range reads with values of every size,
//! committed and reopened from the super block several times, with the
//! tree's invariants checked after every phase.
//!
//! Replay a failure with `SCOUTFS_TEST_SEED=<seed> cargo test -p scoutfs-core
//! --test btree_model`.

mod common;

use scoutfs_core::rng::Rng;
use scoutfs_core::store::btree::{self, Item};
use scoutfs_core::store::commit::{Store, Txn};
use scoutfs_core::tools::check;
use scoutfs_format::{Key, MAX_VAL_SIZE};
use std::collections::BTreeMap;

/// (seq, flags, value) of each key.
type Val = (u64, u8, Vec<u8>);
type Model = BTreeMap<Key, Val>;

const OPS: u64 = 200_000;
const PHASES: u64 = 8;

fn rand_key(rng: &mut Rng, space: u64) -> Key {
    Key::new(
        32,
        rng.below(space),
        (rng.below(2) * 4) as u8,
        rng.below(3),
        0,
        0,
    )
}

fn rand_val(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(4) {
        0 => 0,
        1 => rng.below(24) as usize,
        2 => rng.below(200) as usize,
        _ => MAX_VAL_SIZE - rng.below(64) as usize,
    };
    let b = rng.next_u64() as u8;
    (0..len).map(|i| b.wrapping_add(i as u8)).collect()
}

fn item_eq(got: Option<Item>, want: Option<(&Key, &Val)>, what: &str, seed: u64) {
    let want = want.map(|(k, (s, f, v))| Item {
        key: *k,
        seq: *s,
        flags: *f,
        val: v.clone(),
    });
    assert_eq!(got, want, "{what} differs from the model (seed {seed})");
}

/// One operation against the tree and the model. `grow` biases inserts.
fn step(txn: &mut Txn, model: &mut Model, rng: &mut Rng, space: u64, grow: u64, seed: u64) {
    let root = &mut txn.sb.srch_root;
    let k = rand_key(rng, space);
    match rng.below(100) {
        p if p < grow => {
            let (seq, flags, val) = (rng.next_u64(), rng.below(2) as u8, rand_val(rng));
            btree::insert(&mut txn.w, root, &k, seq, flags, &val).expect("insert");
            model.insert(k, (seq, flags, val));
        }
        p if p < 70 => {
            let existed = btree::delete(&mut txn.w, root, &k).expect("delete");
            assert_eq!(
                existed,
                model.remove(&k).is_some(),
                "delete of {k} (seed {seed})"
            );
        }
        p if p < 78 => item_eq(
            btree::lookup(&txn.w, root, &k).unwrap(),
            model.get_key_value(&k),
            "lookup",
            seed,
        ),
        p if p < 86 => item_eq(
            btree::next(&txn.w, root, &k).unwrap(),
            model.range(k..).next(),
            "next",
            seed,
        ),
        p if p < 94 => item_eq(
            btree::prev(&txn.w, root, &k).unwrap(),
            model.range(..=k).next_back(),
            "prev",
            seed,
        ),
        p if p < 97 => {
            let end = Key {
                first: k.first + rng.below(space / 8 + 1),
                ..k
            };
            let mut got = Vec::new();
            btree::for_each_range(&txn.w, root, &k, &end, |it| {
                got.push(it.clone());
                Ok(got.len() < 300)
            })
            .unwrap();
            let want: Vec<Item> = model
                .range(k..=end)
                .take(300)
                .map(|(k, (s, f, v))| Item {
                    key: *k,
                    seq: *s,
                    flags: *f,
                    val: v.clone(),
                })
                .collect();
            assert_eq!(got, want, "range {k}..={end} (seed {seed})");
        }
        _ => {
            let mut batch: BTreeMap<Key, Item> = BTreeMap::new();
            for _ in 0..rng.below(400) + 1 {
                let key = rand_key(rng, space);
                batch.insert(
                    key,
                    Item {
                        key,
                        seq: rng.next_u64(),
                        flags: 0,
                        val: rand_val(rng),
                    },
                );
            }
            let items: Vec<Item> = batch.into_values().collect();
            btree::insert_list(&mut txn.w, root, &items).expect("insert_list");
            for it in items {
                model.insert(it.key, (it.seq, it.flags, it.val));
            }
        }
    }
}

fn compare_all(store: &Store, model: &Model, seed: u64) {
    for (i, a) in store
        .sb
        .meta_alloc
        .iter()
        .chain([&store.sb.data_alloc])
        .enumerate()
    {
        btree::check_invariants(store.cache.as_ref(), &a.root)
            .unwrap_or_else(|e| panic!("alloc tree {i}: {e} (seed {seed})"));
    }
    let root = &store.sb.srch_root;
    let n = btree::check_invariants(store.cache.as_ref(), root).expect("invariants");
    assert_eq!(n as usize, model.len(), "item count (seed {seed})");
    let mut got = Vec::new();
    btree::for_each_range(store.cache.as_ref(), root, &Key::MIN, &Key::MAX, |it| {
        got.push(it.clone());
        Ok(true)
    })
    .unwrap();
    let want: Vec<Item> = model
        .iter()
        .map(|(k, (s, f, v))| Item {
            key: *k,
            seq: *s,
            flags: *f,
            val: v.clone(),
        })
        .collect();
    assert!(
        got == want,
        "reopened tree differs from the model (seed {seed})"
    );
}

#[test]
fn btree_matches_model_across_commits_and_reopens() {
    run(common::seed(0x5c0u64), OPS, None);
}

/// The same with a transaction that may hold only a few dirty blocks in
/// memory: most are written early and read back when changed again, and
/// so are the allocator's list blocks.
#[test]
fn btree_matches_model_with_dirty_blocks_spilled() {
    const RESIDENT: usize = 16;
    let (spilled, most) = run(common::seed(0x5c1u64), OPS / 8, Some(RESIDENT));
    assert!(spilled > 1000, "only {spilled} blocks were spilled");
    assert!(most <= RESIDENT, "{most} dirty blocks were held in memory");
}

/// Runs the model for `ops` operations; returns how many dirty blocks were
/// spilled and the most held in memory at once.
fn run(seed: u64, ops: u64, resident: Option<usize>) -> (u64, usize) {
    let (meta, data) = common::mem_fs(1 << 30, 64 << 20, 0xb7ee);
    let mut store = common::open(&meta);
    let mut rng = Rng::new(seed);
    let mut model = Model::new();
    let mut commits = 0;
    let mut most = 0;
    let mut spilled = 0;
    let begin = |store: &mut Store, rng: Rng| {
        let mut txn = store.begin_with(rng);
        if let Some(n) = resident {
            txn.w.set_resident_max(n);
        }
        txn
    };
    for phase in 0..PHASES {
        // Phases alternate between growing the tree and shrinking it, over
        // key spaces of different sizes, so splits, joins, root growth and
        // collapse all happen.
        let grow = if phase % 2 == 0 { 45 } else { 20 };
        let space = [4_000, 20_000, 60_000][phase as usize % 3];
        let mut txn = begin(&mut store, Rng::new(seed ^ phase));
        for _ in 0..ops / PHASES {
            step(&mut txn, &mut model, &mut rng, space, grow, seed);
            most = most.max(txn.w.resident_blocks());
            if txn.needs_commit() {
                store.commit(txn).expect("commit");
                commits += 1;
                txn = begin(&mut store, Rng::new(rng.next_u64()));
            }
        }
        btree::check_invariants(&txn.w, &txn.sb.srch_root).expect("invariants before commit");
        store.commit(txn).expect("commit");
        commits += 1;
        spilled += store
            .cache
            .counters
            .block_dirty_spilled
            .load(std::sync::atomic::Ordering::Relaxed);
        drop(store);
        store = common::open(&meta);
        compare_all(&store, &model, seed);
        let report = check::check(&store_dev(&meta), &store_dev(&data), &mut check::NoProgress)
            .expect("check runs");
        let first: Vec<String> = report
            .problems
            .iter()
            .take(10)
            .map(|p| p.to_string())
            .collect();
        assert!(
            report.problems.is_empty(),
            "check after phase {phase}: {first:?} (seed {seed})"
        );
    }
    if ops == OPS {
        assert!(commits > PHASES, "the run should commit within phases too");
    }
    assert!(model.len() > 100);
    (spilled, most)
}

fn store_dev(
    d: &scoutfs_core::store::dev::MemDev,
) -> std::sync::Arc<dyn scoutfs_core::store::dev::BlockDev> {
    std::sync::Arc::new(d.clone())
}
