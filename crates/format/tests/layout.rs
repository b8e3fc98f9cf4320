//! The field offsets of every on-disk structure, as `docs/format.md` lists
//! them. A failure here means the document or the layout is wrong; a layout
//! change also needs a format version bump and an old-image test.

use core::mem::offset_of;
use scoutfs_format::alloc::{AllocListBlockHeader, AllocListHead, AllocRoot};
use scoutfs_format::block::{BlockHeader, BlockRef, Timespec};
use scoutfs_format::bloom::BloomBlockHeader;
use scoutfs_format::btree::{BtreeBlockHeader, BtreeItem, BtreeRoot};
use scoutfs_format::data::DataExtentVal;
use scoutfs_format::dir::DirentHeader;
use scoutfs_format::inode::Inode;
use scoutfs_format::key::DiskKey;
use scoutfs_format::log_trees::{LogTrees, MountedClientVal};
use scoutfs_format::quorum::{QuorumBlock, QuorumEvent, QuorumMessage};
use scoutfs_format::srch::{SrchEntry, SrchFile};
use scoutfs_format::super_block::{InetAddr, QuorumConfig, SuperBlock, VolumeOptions};
use scoutfs_format::xattr::XattrHeader;

/// Asserts each field's offset and the struct's size.
macro_rules! layout {
    ($t:ty, $size:expr, { $($f:ident: $off:expr),* $(,)? }) => {
        $(assert_eq!(offset_of!($t, $f), $off, "{}.{}", stringify!($t), stringify!($f));)*
        assert_eq!(core::mem::size_of::<$t>(), $size, "size of {}", stringify!($t));
    };
}

#[test]
fn common_structures() {
    layout!(BlockHeader, 32, { crc: 0, magic: 4, fsid: 8, seq: 16, blkno: 24 });
    layout!(BlockRef, 16, { blkno: 0, seq: 8 });
    layout!(Timespec, 16, { sec: 0, nsec: 8, pad: 12 });
    layout!(DiskKey, 32, { first: 0, second: 8, third: 16, fourth: 24, zone: 25, ty: 26, pad: 27 });
    layout!(BtreeRoot, 24, { blk: 0, height: 16, pad: 17 });
    layout!(InetAddr, 32, { family: 0, port: 2, pad: 4, addr: 8, pad2: 24 });
}

#[test]
fn btree_and_allocators() {
    layout!(BtreeBlockHeader, 48, {
        hdr: 0, nr_items: 32, total_item_bytes: 34, mid_free_len: 36, level: 38, pad: 39,
    });
    layout!(BtreeItem, 48, { key: 0, seq: 32, val_off: 40, val_len: 42, flags: 44, pad: 45 });
    layout!(AllocListHead, 32, { first: 0, total_nr: 16, first_nr: 24, flags: 28 });
    layout!(AllocListBlockHeader, 56, { hdr: 0, next: 32, start: 48, nr: 52 });
    layout!(AllocRoot, 40, { total_len: 0, flags: 8, pad: 12, root: 16 });
}

#[test]
fn super_block() {
    layout!(QuorumConfig, 488, { version: 0, slots: 8 });
    layout!(VolumeOptions, 520, { set_bits: 0, data_alloc_zone_blocks: 8, future: 16 });
    layout!(SuperBlock, 1520, {
        hdr: 0, id: 32, fmt_vers: 40, flags: 48, uuid: 56, seq: 72, next_ino: 80,
        inode_count: 88, total_meta_blocks: 96, total_data_blocks: 104, qconf: 112,
        meta_alloc: 600, data_alloc: 680, server_meta_avail: 720, server_meta_freed: 784,
        fs_root: 848, logs_root: 872, log_merge: 896, mounted_clients: 920, srch_root: 944,
        volopt: 968, cluster_key: 1488,
    });
}

#[test]
fn fs_items() {
    layout!(Inode, 168, {
        size: 0, meta_seq: 8, data_seq: 16, data_version: 24, online_blocks: 32,
        offline_blocks: 40, next_readdir_pos: 48, next_xattr_id: 56, version: 64, nlink: 72,
        uid: 76, gid: 80, mode: 84, rdev: 88, flags: 92, atime: 96, ctime: 112, mtime: 128,
        crtime: 144, proj: 160,
    });
    layout!(DirentHeader, 32, { ino: 0, hash: 8, pos: 16, ty: 24, pad: 25 });
    layout!(XattrHeader, 8, { val_len: 0, name_len: 2, pad: 3 });
    layout!(DataExtentVal, 16, { blkno: 0, flags: 8, pad: 9 });
}

#[test]
fn server_items_and_other_blocks() {
    layout!(LogTrees, 472, {
        meta_avail: 0, meta_freed: 32, item_root: 64, bloom_ref: 88, data_avail: 104,
        data_freed: 144, srch_file: 184, data_alloc_zone_blocks: 272, data_alloc_zones: 280,
        inode_count_delta: 408, get_trans_seq: 416, commit_trans_seq: 424, max_item_seq: 432,
        finalize_seq: 440, rid: 448, nr: 456, flags: 464,
    });
    layout!(MountedClientVal, 40, { addr: 0, flags: 32, pad: 33 });
    layout!(SrchEntry, 24, { hash: 0, ino: 8, id: 16 });
    layout!(SrchFile, 88, {
        first: 0, last: 24, blk: 48, blocks: 64, entries: 72, height: 80, pad: 81,
    });
    layout!(BloomBlockHeader, 40, { hdr: 0, total_set: 32 });
    layout!(QuorumEvent, 40, { write_nr: 0, rid: 8, term: 16, ts: 24 });
    layout!(QuorumBlock, 280, { hdr: 0, write_nr: 32, events: 40 });
    layout!(QuorumMessage, 48, {
        fsid: 0, version: 8, term: 16, ty: 24, from: 25, pad: 26, crc: 28, mac: 32,
    });
}

/// The block checksum is the standard CRC-32C of everything after the crc
/// field, as `docs/format.md` specifies it.
#[test]
fn block_crc_is_standard_crc32c() {
    let mut block = vec![0u8; 4];
    block.extend_from_slice(b"123456789");
    assert_eq!(scoutfs_format::block::block_crc(&block), 0xe306_9283);
    scoutfs_format::block::set_block_crc(&mut block);
    assert_eq!(&block[..4], &0xe306_9283u32.to_le_bytes());
    assert_eq!(scoutfs_format::block::stored_crc(&block), 0xe306_9283);
}

/// The hashes the format persists, at published FNV-1a vectors.
#[test]
fn persisted_hashes_are_fnv1a() {
    use scoutfs_format::hash::{fnv1a32, fnv1a64};
    assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    // A short name's hash: the name as its fingerprint, fnv1a32 below.
    let h = scoutfs_format::dir::dirent_name_hash(b"ab");
    assert_eq!(h, (0x6162_0000u64 << 32) | fnv1a32(b"ab") as u64);
}
