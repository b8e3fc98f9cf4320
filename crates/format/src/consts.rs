//! Constants of the format: versions, block sizes, device layout, magics, limits.
//!
//! Block numbers are in units of the block size of what they address: 64 KiB
//! ("large", LG) for metadata blocks, 4 KiB ("small", SM) for the super block,
//! quorum blocks and file data.

/// The format version this build writes. Supers and greetings carry it.
/// Version 2 added the cluster key to the super block (and with it the
/// authentication of quorum messages and greetings).
pub const FORMAT_VERSION: u64 = 2;
/// The oldest format version this build can read. A version 1 filesystem
/// has no cluster key: its members authenticate with a key of zeros,
/// which anyone can forge, and say so when they mount.
pub const FORMAT_VERSION_MIN: u64 = 1;
/// The newest format version this build can read.
pub const FORMAT_VERSION_MAX: u64 = 2;
/// The first format version with a cluster key.
pub const FORMAT_VERSION_CLUSTER_KEY: u64 = 2;
/// Bytes of the cluster key.
pub const CLUSTER_KEY_LEN: usize = 32;
/// Bytes of the message authentication code in quorum messages and
/// greetings (HMAC-SHA256 cut to its first half).
pub const MAC_LEN: usize = 16;

/// statfs `f_type` of a mounted scoutfs-rs filesystem ("SCOU").
pub const SUPER_MAGIC: u32 = 0x554f_4353;

pub const BLOCK_SM_SHIFT: u32 = 12;
pub const BLOCK_SM_SIZE: usize = 1 << BLOCK_SM_SHIFT;
pub const BLOCK_LG_SHIFT: u32 = 16;
pub const BLOCK_LG_SIZE: usize = 1 << BLOCK_LG_SHIFT;
/// Small blocks per large block.
pub const BLOCK_SM_PER_LG: u64 = 1 << (BLOCK_LG_SHIFT - BLOCK_SM_SHIFT);

/// The super block, in SM blocks (byte 64 KiB), on both devices.
pub const SUPER_BLKNO: u64 = 16;
/// The first quorum block, in SM blocks; one block per slot follows.
pub const QUORUM_BLKNO: u64 = 17;
/// Number of quorum slots and blocks.
pub const QUORUM_MAX_SLOTS: usize = 15;
/// First allocatable metadata block, in LG blocks (byte 128 KiB).
pub const META_DEV_START_BLKNO: u64 = 2;
/// First allocatable data block, in SM blocks (byte 256 KiB).
pub const DATA_DEV_START_BLKNO: u64 = 64;

/// Byte offset of the super block on either device.
pub const SUPER_OFFSET: u64 = SUPER_BLKNO << BLOCK_SM_SHIFT;

/// Flag in `SuperBlock::flags` set on the metadata device's copy only.
pub const FLAG_IS_META_BDEV: u64 = 0x01;

/// Maximum value bytes of any item.
pub const MAX_VAL_SIZE: usize = 896;
/// Maximum height of any btree (a 10^9-item tree needs about 4).
pub const BTREE_MAX_HEIGHT: u8 = 20;
/// Values in btree blocks are padded to this alignment.
pub const BTREE_VALUE_ALIGN: usize = 8;

/// Block numbers held by one alloc list block.
pub const ALLOC_LIST_MAX_BLOCKS: usize = 8185;

/// `AllocListHead::flags` / `AllocRoot::flags`: the server could not fill it.
pub const ALLOC_FLAG_LOW: u32 = 1;

/// `BtreeItem::flags`: the item records a deletion that hides older versions.
pub const ITEM_FLAG_DELETION: u8 = 1;

/// The root directory's inode number.
pub const ROOT_INO: u64 = 1;
/// The most data allocation zones (`data_alloc_zone_blocks`) a data device
/// may be divided into.
pub const DATA_ALLOC_ZONES_MAX: u64 = 1024;

/// mkfs's first unallocated inode number (the root's 1024-inode group is used).
pub const FIRST_ALLOC_INO: u64 = 1024;
/// Inode numbers per inode lock group.
pub const LOCK_INODE_GROUP_NR: u64 = 1024;
pub const NAME_LEN: usize = 255;
pub const SYMLINK_MAX_SIZE: usize = 4096;
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_VALUE_MAX: usize = 65535;
pub const XATTR_MAX_PART_SIZE: usize = MAX_VAL_SIZE;
pub const DIRENT_FIRST_POS: u64 = 2;
pub const DIRENT_LAST_POS: u64 = u64::MAX - 1;

/// Bits in a bloom block and the hash functions per key.
pub const FOREST_BLOOM_BITS: usize = (BLOCK_LG_SIZE - 40) * 8;
pub const FOREST_BLOOM_NRS: usize = 3;
pub const FOREST_BLOOM_FUNC_BITS: u32 = 19;

/// Block header magics, one per kind of block.
pub mod magic {
    pub const SUPER: u32 = 0x103c_428b;
    pub const BTREE: u32 = 0xe597_f96d;
    pub const BLOOM: u32 = 0x3199_5604;
    pub const SRCH_BLOCK: u32 = 0x897e_4a7d;
    pub const SRCH_PARENT: u32 = 0xb23a_2a05;
    pub const ALLOC_LIST: u32 = 0x8a93_ac83;
    pub const QUORUM: u32 = 0xbc31_0868;
}

/// The name of a block magic, for messages.
pub fn magic_name(m: u32) -> &'static str {
    match m {
        magic::SUPER => "super",
        magic::BTREE => "btree",
        magic::BLOOM => "bloom",
        magic::SRCH_BLOCK => "srch_block",
        magic::SRCH_PARENT => "srch_parent",
        magic::ALLOC_LIST => "alloc_list",
        magic::QUORUM => "quorum",
        _ => "unknown",
    }
}
