//! `check` finds each kind of accounting error it exists to find: data
//! blocks both free and referenced, data and metadata blocks that are
//! neither, and a metadata block both referenced and free.

mod common;

use scoutfs_core::rng::Rng;
use scoutfs_core::store::alloc::extent;
use scoutfs_core::store::btree;
use scoutfs_core::store::commit::Store;
use scoutfs_core::store::dev::{BlockDev, MemDev};
use scoutfs_core::tools::check::{check, NoProgress, Report};
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

fn extent_item(txn: &mut scoutfs_core::store::commit::Txn, ino: u64, blkno: u64, len: u64) {
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

/// Blocks rewritten with garbage under a valid header and checksum, as a
/// buggy writer might leave them: check and print never panic, and check
/// reports most of them (a change that only touches an opaque value is
/// valid).
#[test]
fn garbage_with_valid_checksums_never_panics() {
    use scoutfs_format::block::set_block_crc;
    use scoutfs_format::consts::BLOCK_LG_SIZE;
    let (meta, data, mut store) = fresh();
    let mut txn = store.begin_with(Rng::new(5));
    for i in 0..3000u64 {
        let k = Key::new(32, i, 0, 0, 0, 0);
        btree::insert(&mut txn.w, &mut txn.sb.srch_root, &k, 1, 0, &[1u8; 60]).unwrap();
    }
    store.commit(txn).unwrap();
    let mut blocks = Vec::new();
    for root in [
        store.sb.srch_root,
        store.sb.fs_root,
        store.sb.meta_alloc[0].root,
        store.sb.data_alloc.root,
    ] {
        btree::walk_blocks(store.cache.as_ref(), &root, |r, _| {
            blocks.push(r.blkno.get());
            Ok(())
        })
        .unwrap();
    }
    let mut rng = Rng::new(common::seed(77));
    let (mut rounds, mut reported) = (0, 0);
    for _ in 0..300 {
        let b = blocks[rng.below(blocks.len() as u64) as usize];
        let off = b * BLOCK_LG_SIZE as u64;
        let mut buf = vec![0u8; BLOCK_LG_SIZE];
        meta.read_at(&mut buf, off).unwrap();
        let orig = buf.clone();
        // Garble a few bytes of the btree header and the item array (of
        // its first 40 items): bytes past the items are unused, and a
        // change there is nothing to report.
        let nr = u16::from_le_bytes([buf[32], buf[33]]).min(40) as u64;
        for _ in 0..1 + rng.below(4) {
            let i = 32 + rng.below(16 + 48 * nr) as usize;
            buf[i] ^= 1 << rng.below(8);
        }
        set_block_crc(&mut buf);
        meta.write_at(&buf, off).unwrap();
        let r = run_check(&meta, &data);
        let dev: Arc<dyn BlockDev> = Arc::new(meta.clone());
        scoutfs_core::tools::print::print(&dev, &mut std::io::sink(), &mut NoProgress).unwrap();
        rounds += 1;
        reported += !r.is_clean() as u32;
        meta.write_at(&orig, off).unwrap();
    }
    assert!(run_check(&meta, &data).is_clean());
    assert!(
        reported * 2 > rounds,
        "check reported only {reported} of {rounds} garbled blocks"
    );
}

/// The inode index: a filesystem used through a mount checks clean (every
/// inode has its meta_seq item and, unless a directory, its data_seq item,
/// and nothing else is indexed); an index item no inode has and an inode
/// without its item are each named; past the named ones the rest are
/// counted.
#[test]
fn inode_index_items_left_over_or_missing() {
    use scoutfs_core::mount::fs::types::NewNode;
    use scoutfs_format::ROOT_INO;
    let (meta, data) = common::mem_fs(128 << 20, 64 << 20, 0x1dec);
    let file = {
        let mnt = common::mount(&meta, &data);
        let fs = mnt.fs();
        let dir = fs
            .mknod(ROOT_INO, b"d", &NewNode::new(libc::S_IFDIR | 0o755))
            .unwrap();
        let reg = NewNode::new(libc::S_IFREG | 0o644);
        let file = fs.mknod(dir.ino, b"f", &reg).unwrap();
        fs.mknod(dir.ino, b"g", &reg).unwrap();
        fs.sync().unwrap();
        // Later transactions move the index items of all three.
        fs.write(file.ino, 0, &[5u8; 10000]).unwrap();
        fs.rename(dir.ino, b"f", ROOT_INO, b"f2", 0).unwrap();
        fs.unlink(dir.ino, b"g").unwrap();
        mnt.unmount().unwrap();
        file.ino
    };
    // The next mount's server merges the log trees into fs_root.
    common::mount(&meta, &data).unmount().unwrap();
    let r = run_check(&meta, &data);
    assert!(r.is_clean(), "{:?}", r.problems);

    let mut store = common::open(&meta);
    let fs_items = |store: &Store, ity: u8, ino: u64| -> Vec<Key> {
        let lo = Key::new(zone::INODE_INDEX, 0, ity, 0, ino, 0);
        let hi = Key::new(zone::INODE_INDEX, 0, ity, u64::MAX, u64::MAX, 0);
        let mut keys = Vec::new();
        btree::for_each_range(store.cache.as_ref(), &store.sb.fs_root, &lo, &hi, |it| {
            if it.key.third == ino {
                keys.push(it.key);
            }
            Ok(true)
        })
        .unwrap();
        keys
    };
    let meta_item = fs_items(&store, ty::INODE_INDEX_META_SEQ, file);
    assert_eq!(meta_item.len(), 1, "one meta_seq item for the file");
    let gone = 999_999;
    assert!(fs_items(&store, ty::INODE_INDEX_DATA_SEQ, gone).is_empty());
    let mut txn = store.begin_with(Rng::new(9));
    btree::delete(&mut txn.w, &mut txn.sb.fs_root, &meta_item[0]).unwrap();
    let stale = Key::new(zone::INODE_INDEX, 0, ty::INODE_INDEX_DATA_SEQ, 3, gone, 0);
    btree::insert(&mut txn.w, &mut txn.sb.fs_root, &stale, 1, 0, &[]).unwrap();
    store.commit(txn).unwrap();
    let r = run_check(&meta, &data);
    assert_found(
        &r,
        &format!(
            "no index item for the inode: meta_seq {} of inode {file}",
            meta_item[0].second
        ),
    );
    assert_found(
        &r,
        &format!("an index item no inode has: data_seq 3 of inode {gone}"),
    );
    assert_eq!(r.problems.len(), 2, "{:?}", r.problems);

    // Many more: 32 are named, the rest counted.
    let mut txn = store.begin_with(Rng::new(10));
    for ino in 100_000..100_050u64 {
        let k = Key::new(zone::INODE_INDEX, 0, ty::INODE_INDEX_META_SEQ, 7, ino, 0);
        btree::insert(&mut txn.w, &mut txn.sb.fs_root, &k, 1, 0, &[]).unwrap();
    }
    store.commit(txn).unwrap();
    let r = run_check(&meta, &data);
    assert_eq!(r.problems.len(), 33, "{:?}", r.problems);
    assert_found(&r, "inode index: 20 more differences");
}

#[test]
fn inode_block_counts_that_are_not_their_extents() {
    use scoutfs_core::mount::fs::types::NewNode;
    use scoutfs_format::inode::Inode;
    use scoutfs_format::ROOT_INO;
    use zerocopy::{FromBytes, IntoBytes};
    let (meta, data) = common::mem_fs(128 << 20, 64 << 20, 0xb10c);
    let file = {
        let mnt = common::mount(&meta, &data);
        let fs = mnt.fs();
        let reg = NewNode::new(libc::S_IFREG | 0o644);
        let f = fs.mknod(ROOT_INO, b"f", &reg).unwrap().ino;
        fs.write(f, 0, &[1u8; 5 * 4096]).unwrap();
        let dv = fs.get_attr_x(f).unwrap().data_version;
        fs.release_data(f, 8192, 8192, dv).unwrap();
        mnt.unmount().unwrap();
        f
    };
    common::mount(&meta, &data).unmount().unwrap();
    let r = run_check(&meta, &data);
    assert!(r.is_clean(), "{:?}", r.problems);
    // The inode says one block more online than its extents map.
    let mut store = common::open(&meta);
    let key = Key::inode(file);
    let val = btree::lookup(store.cache.as_ref(), &store.sb.fs_root, &key)
        .unwrap()
        .expect("the inode item")
        .val;
    let mut inode = Inode::read_from_bytes(&val).unwrap();
    assert_eq!(
        (inode.online_blocks.get(), inode.offline_blocks.get()),
        (3, 2)
    );
    inode.online_blocks = 4.into();
    let mut txn = store.begin_with(Rng::new(11));
    btree::insert(
        &mut txn.w,
        &mut txn.sb.fs_root,
        &key,
        1,
        0,
        inode.as_bytes(),
    )
    .unwrap();
    store.commit(txn).unwrap();
    let r = run_check(&meta, &data);
    assert_found(
        &r,
        &format!(
            "inode {file} counts 4 online and 2 offline blocks; its extents map 3 and hold 2 offline"
        ),
    );
}
