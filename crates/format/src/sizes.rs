//! The compile-time size table of every on-disk structure. A layout change
//! that alters a size fails the build here and must bump the format version.

use core::mem::size_of;

macro_rules! sizes {
    ($($t:ty => $n:expr,)*) => { $(const _: () = assert!(size_of::<$t>() == $n);)* };
}

sizes! {
    crate::block::BlockHeader => 32,
    crate::block::BlockRef => 16,
    crate::block::Timespec => 16,
    crate::key::DiskKey => 32,
    crate::btree::BtreeRoot => 24,
    crate::btree::BtreeBlockHeader => 48,
    crate::btree::BtreeItem => 48,
    crate::alloc::AllocListHead => 32,
    crate::alloc::AllocListBlockHeader => 56,
    crate::alloc::AllocRoot => 40,
    crate::super_block::InetAddr => 32,
    crate::super_block::QuorumConfig => 488,
    crate::super_block::VolumeOptions => 520,
    crate::super_block::SuperBlock => 1520,
    crate::inode::Inode => 168,
    crate::dir::DirentHeader => 32,
    crate::xattr::XattrHeader => 8,
    crate::data::DataExtentVal => 16,
    crate::srch::SrchEntry => 24,
    crate::srch::SrchFile => 88,
    crate::log_trees::LogTrees => 472,
    crate::log_trees::MountedClientVal => 40,
    crate::bloom::BloomBlockHeader => 40,
    crate::quorum::QuorumEvent => 40,
    crate::quorum::QuorumBlock => 280,
    crate::quorum::QuorumMessage => 48,
}

// An alloc list block's array fills its 64 KiB block exactly.
const _: () = assert!(
    size_of::<crate::alloc::AllocListBlockHeader>() + crate::consts::ALLOC_LIST_MAX_BLOCKS * 8
        == crate::consts::BLOCK_LG_SIZE
);
// The largest item fits several times in a block, so a split leaves items on both sides.
const _: () = assert!(crate::btree::BTREE_MAX_ITEM_BYTES * 8 < crate::btree::BTREE_BLOCK_USABLE);
// A bloom block's bits fill its 64 KiB block exactly.
const _: () = assert!(
    size_of::<crate::bloom::BloomBlockHeader>() + crate::consts::FOREST_BLOOM_BITS / 8
        == crate::consts::BLOCK_LG_SIZE
);
// The last bloom function still has enough hash bits left to reach every bit.
const _: () = assert!(
    1u64 << (64
        - (crate::consts::FOREST_BLOOM_NRS as u32 - 1) * crate::consts::FOREST_BLOOM_FUNC_BITS)
        >= crate::consts::FOREST_BLOOM_BITS as u64
);
// A quorum block's struct fits in its 4 KiB block.
const _: () = assert!(size_of::<crate::quorum::QuorumBlock>() <= crate::consts::BLOCK_SM_SIZE);
// The largest values of the format fit in one item.
const _: () = assert!(size_of::<crate::log_trees::LogTrees>() <= crate::consts::MAX_VAL_SIZE);
const _: () = assert!(
    size_of::<crate::dir::DirentHeader>() + crate::consts::NAME_LEN <= crate::consts::MAX_VAL_SIZE
);
