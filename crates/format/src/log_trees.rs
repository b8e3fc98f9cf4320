//! Per-mount log trees and mounted-client records: values of the server's
//! `logs_root` and `mounted_clients` btrees.
//!
//! A [`LogTrees`] item, keyed (LOG_TREES zone, rid, nr), describes one log
//! btree a mount wrote fs items into, with everything the mount's
//! transactions use beside it: the metadata alloc lists it allocates from
//! and frees to, its data extent allocators and the data zones they cover,
//! its bloom block, its current srch log file and its inode count delta.
//! Each mount (rid) has one open tree at a time; `nr` counts the trees a
//! rid has had. The server opens a transaction by setting `get_trans_seq`
//! and records its commit by setting `commit_trans_seq` to the same value, so
//! a tree's transaction is open exactly when `get_trans_seq >
//! commit_trans_seq`. A finalized tree (`LOG_TREES_FINALIZED`, with
//! `finalize_seq`) takes no more items and waits to be merged into `fs_root`:
//! the server finalizes the tree of a mount it reclaims (fenced, or said
//! farewell).
//!
//! A [`MountedClientVal`], keyed (MOUNTED_CLIENT zone, rid), exists while a
//! mount is mounted; it is deleted last when a departed or fenced mount is
//! reclaimed, and its existence at server start is what makes the server
//! wait for (or fence) that mount.

use crate::alloc::{AllocListHead, AllocRoot};
use crate::block::{read_prefix, BlockRef};
use crate::btree::BtreeRoot;
use crate::error::{check_zero, DecodeError, Result};
use crate::srch::SrchFile;
use crate::super_block::InetAddr;
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `LogTrees::flags`: the tree is finalized and waits to be merged.
pub const LOG_TREES_FINALIZED: u64 = 1;
/// Every flag a log trees item may carry.
pub const LOG_TREES_FLAGS_KNOWN: u64 = LOG_TREES_FINALIZED;
/// le64 words in the data zone bitmap: 1024 zones.
pub const DATA_ALLOC_ZONE_WORDS: usize = 16;
/// The most data allocation zones.
pub const DATA_ALLOC_MAX_ZONES: usize = DATA_ALLOC_ZONE_WORDS * 64;

/// One mount's log btree and its transaction resources, 472 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct LogTrees {
    /// Metadata blocks the mount allocates from.
    pub meta_avail: AllocListHead,
    /// Metadata blocks the mount freed; reused only after the server merges them.
    pub meta_freed: AllocListHead,
    /// The log btree of fs items.
    pub item_root: BtreeRoot,
    /// The bloom block over the lock start keys of items in `item_root`.
    pub bloom_ref: BlockRef,
    /// Data extents the mount may allocate from.
    pub data_avail: AllocRoot,
    /// Data extents the mount freed.
    pub data_freed: AllocRoot,
    /// The mount's current, unsorted srch log file.
    pub srch_file: SrchFile,
    /// The zone size in data blocks when `data_alloc_zones` was set; 0 if unset.
    pub data_alloc_zone_blocks: U64,
    /// Bit z: `data_avail` holds blocks of data zone z.
    pub data_alloc_zones: [U64; DATA_ALLOC_ZONE_WORDS],
    /// Inodes created minus inodes deleted, as two's complement.
    pub inode_count_delta: U64,
    /// The seq of the mount's open (or last) transaction.
    pub get_trans_seq: U64,
    /// Equal to `get_trans_seq` once that transaction committed.
    pub commit_trans_seq: U64,
    /// The greatest item seq written into `item_root`.
    pub max_item_seq: U64,
    /// The server seq when the tree was finalized.
    pub finalize_seq: U64,
    /// The mount's random id.
    pub rid: U64,
    /// The rid's count of log trees.
    pub nr: U64,
    /// `LOG_TREES_*` bits.
    pub flags: U64,
}

impl LogTrees {
    pub fn inode_count_delta(&self) -> i64 {
        self.inode_count_delta.get() as i64
    }

    pub fn is_finalized(&self) -> bool {
        self.flags.get() & LOG_TREES_FINALIZED != 0
    }

    /// Whether the mount has a transaction open in this tree.
    pub fn trans_open(&self) -> bool {
        self.get_trans_seq.get() > self.commit_trans_seq.get()
    }

    /// Decodes a log trees item value, which must be exactly 472 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "log trees";
        if bytes.len() != core::mem::size_of::<Self>() {
            return Err(DecodeError::Length {
                what,
                have: bytes.len(),
                expected: "472".into(),
            });
        }
        let lt: LogTrees = read_prefix(what, bytes)?;
        lt.validate()?;
        Ok(lt)
    }

    pub fn validate(&self) -> Result<()> {
        let what = "log trees";
        let field = |field, value| Err(DecodeError::Field { what, field, value });
        self.meta_avail.validate()?;
        self.meta_freed.validate()?;
        self.item_root.validate()?;
        self.data_avail.validate()?;
        self.data_freed.validate()?;
        self.srch_file.validate()?;
        if self.flags.get() & !LOG_TREES_FLAGS_KNOWN != 0 {
            return field("flags", self.flags.get());
        }
        if self.commit_trans_seq.get() > self.get_trans_seq.get() {
            return field("commit_trans_seq", self.commit_trans_seq.get());
        }
        let zones_set = self.data_alloc_zones.iter().any(|w| w.get() != 0);
        if zones_set && self.data_alloc_zone_blocks.get() == 0 {
            return field("data_alloc_zone_blocks", 0);
        }
        Ok(())
    }
}

/// `MountedClientVal::flags`: the mount is a quorum member.
pub const MOUNTED_CLIENT_QUORUM: u8 = 1;
/// Every flag a mounted client may carry.
pub const MOUNTED_CLIENT_FLAGS_KNOWN: u8 = MOUNTED_CLIENT_QUORUM;

/// The value of a mounted client item, 40 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct MountedClientVal {
    /// The address the mount connected from.
    pub addr: InetAddr,
    /// `MOUNTED_CLIENT_*` bits.
    pub flags: u8,
    pub pad: [u8; 7],
}

impl MountedClientVal {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "mounted client";
        if bytes.len() != core::mem::size_of::<Self>() {
            return Err(DecodeError::Length {
                what,
                have: bytes.len(),
                expected: "40".into(),
            });
        }
        let v: MountedClientVal = read_prefix(what, bytes)?;
        v.validate()?;
        Ok(v)
    }

    pub fn validate(&self) -> Result<()> {
        let what = "mounted client";
        self.addr.validate()?;
        if self.flags & !MOUNTED_CLIENT_FLAGS_KNOWN != 0 {
            return Err(DecodeError::Field {
                what,
                field: "flags",
                value: self.flags as u64,
            });
        }
        check_zero(what, 33, &self.pad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srch::SrchEntry;
    use core::mem::offset_of;

    fn sample() -> LogTrees {
        let mut lt = LogTrees {
            meta_avail: AllocListHead {
                first: BlockRef::new(10, 1),
                total_nr: 9000.into(),
                first_nr: 815.into(),
                flags: 0.into(),
            },
            item_root: BtreeRoot {
                blk: BlockRef::new(11, 2),
                height: 3,
                pad: [0; 7],
            },
            bloom_ref: BlockRef::new(12, 3),
            srch_file: SrchFile {
                first: SrchEntry::new(1, 2, 3),
                last: SrchEntry::new(4, 5, 6),
                blk: BlockRef::new(13, 4),
                blocks: 1.into(),
                entries: 2.into(),
                height: 1,
                pad: [0; 7],
            },
            inode_count_delta: (-5i64 as u64).into(),
            get_trans_seq: 40.into(),
            commit_trans_seq: 39.into(),
            max_item_seq: 40.into(),
            rid: 0x1234_5678_9abc_def0.into(),
            nr: 2.into(),
            ..Default::default()
        };
        lt.data_alloc_zone_blocks = (1u64 << 20).into();
        lt.data_alloc_zones[3] = 0x10.into();
        lt
    }

    #[test]
    fn field_offsets_match_the_spec() {
        assert_eq!(offset_of!(LogTrees, item_root), 64);
        assert_eq!(offset_of!(LogTrees, bloom_ref), 88);
        assert_eq!(offset_of!(LogTrees, data_avail), 104);
        assert_eq!(offset_of!(LogTrees, srch_file), 184);
        assert_eq!(offset_of!(LogTrees, data_alloc_zones), 280);
        assert_eq!(offset_of!(LogTrees, inode_count_delta), 408);
        assert_eq!(offset_of!(LogTrees, rid), 448);
        assert_eq!(offset_of!(LogTrees, flags), 464);
    }

    #[test]
    fn round_trip() {
        let lt = sample();
        assert_eq!(LogTrees::decode(lt.as_bytes()), Ok(lt));
        assert_eq!(lt.inode_count_delta(), -5);
        assert!(lt.trans_open() && !lt.is_finalized());
        let mc = MountedClientVal {
            addr: InetAddr::from_socket("127.0.0.2:7000".parse().unwrap()),
            flags: MOUNTED_CLIENT_QUORUM,
            pad: [0; 7],
        };
        assert_eq!(MountedClientVal::decode(mc.as_bytes()), Ok(mc));
    }

    #[test]
    fn refuses_bad_log_trees() {
        let mut bad = vec![];
        let mut lt = sample();
        lt.flags = 2.into();
        bad.push(lt);
        let mut lt = sample();
        lt.commit_trans_seq = 41.into();
        bad.push(lt);
        let mut lt = sample();
        lt.data_alloc_zone_blocks = 0.into();
        bad.push(lt);
        let mut lt = sample();
        lt.item_root.pad[0] = 1;
        bad.push(lt);
        let mut lt = sample();
        lt.srch_file.height = 0;
        bad.push(lt);
        let mut lt = sample();
        lt.data_freed.flags = 8.into();
        bad.push(lt);
        let mut lt = sample();
        lt.meta_freed.first_nr = 1.into();
        bad.push(lt);
        for lt in bad {
            assert!(LogTrees::decode(lt.as_bytes()).is_err(), "{lt:?}");
        }
        assert!(LogTrees::decode(&sample().as_bytes()[..471]).is_err());
    }

    #[test]
    fn refuses_bad_mounted_clients() {
        let good = MountedClientVal::default();
        assert!(MountedClientVal::decode(good.as_bytes()).is_ok());
        let mut v = good;
        v.flags = 2;
        assert!(MountedClientVal::decode(v.as_bytes()).is_err());
        let mut v = good;
        v.pad[6] = 1;
        assert!(MountedClientVal::decode(v.as_bytes()).is_err());
        let mut v = good;
        v.addr.family = 9.into();
        assert!(MountedClientVal::decode(v.as_bytes()).is_err());
    }
}
