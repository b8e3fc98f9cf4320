//! srch: the `scoutfs.srch.` xattr search index, the structures other
//! items refer to.
//!
//! Setting or removing a `scoutfs.srch.` xattr appends a [`SrchEntry`]
//! {fnv1a64 of the full name, ino, xattr id} to the mount's current srch
//! "log file". An entry that appears twice means create then delete; the
//! pair cancels. A [`SrchFile`] describes one file of entries: its smallest
//! and greatest entries, its top block, and how many blocks and entries it
//! holds. Files are a radix tree of `SRCH_PARENT` blocks of block refs over
//! `SRCH_BLOCK` leaves of delta-encoded entries; a file of height 1 is a
//! single leaf and an empty file has height 0 and no block.
//!
//! Where these appear: the current log file in each `LogTrees` item
//! (`srch_file`), and rotated or compacted files as items in the super's
//! `srch_root` (`SRCH` zone). The contents of srch blocks, rotation and
//! compaction belong to a later issue: the structures here are defined and
//! decoded, but nothing writes non-empty srch files yet.

use crate::block::{read_prefix, BlockRef};
use crate::error::{check_zero, DecodeError, Result};
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Block refs in one srch parent block: (64 KiB - 32-byte header) / 16.
pub const SRCH_PARENT_REFS: u64 = 4094;
/// The greatest height of a srch file. 4094^5 leaves (2^60) is more than
/// any metadata device holds (2^48 LG blocks), so 6 levels never run out.
pub const SRCH_MAX_HEIGHT: u8 = 6;

/// The most leaf blocks a srch file of `height` (1..=SRCH_MAX_HEIGHT) holds.
pub const fn srch_max_blocks(height: u8) -> u64 {
    SRCH_PARENT_REFS.pow(height.saturating_sub(1) as u32)
}
const _: () = assert!(srch_max_blocks(SRCH_MAX_HEIGHT) >= 1 << 48);

/// One indexed xattr: sorted by (hash, ino, id).
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct SrchEntry {
    /// fnv1a64 of the whole xattr name.
    pub hash: U64,
    pub ino: U64,
    /// The xattr id within the inode.
    pub id: U64,
}

impl SrchEntry {
    pub fn new(hash: u64, ino: u64, id: u64) -> Self {
        SrchEntry {
            hash: hash.into(),
            ino: ino.into(),
            id: id.into(),
        }
    }

    /// The entry's sort key.
    pub fn sort_key(&self) -> (u64, u64, u64) {
        (self.hash.get(), self.ino.get(), self.id.get())
    }

    /// Every 24 bytes are an entry.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        read_prefix("srch entry", bytes)
    }
}

/// A file of srch entries.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct SrchFile {
    /// The smallest entry in the file.
    pub first: SrchEntry,
    /// The greatest entry in the file.
    pub last: SrchEntry,
    /// The file's top block; none for an empty file.
    pub blk: BlockRef,
    /// Leaf blocks in the file.
    pub blocks: U64,
    /// Entries in the file.
    pub entries: U64,
    /// Levels of blocks; 0 for an empty file, 1 for a single leaf.
    pub height: u8,
    pub pad: [u8; 7],
}

impl SrchFile {
    pub fn is_empty(&self) -> bool {
        self.height == 0
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let f: SrchFile = read_prefix("srch file", bytes)?;
        f.validate()?;
        Ok(f)
    }

    /// Checks the padding and that the height, block and counts agree.
    pub fn validate(&self) -> Result<()> {
        let what = "srch file";
        check_zero(what, 81, &self.pad)?;
        let field = |field, value| Err(DecodeError::Field { what, field, value });
        if self.height > SRCH_MAX_HEIGHT {
            return field("height", self.height as u64);
        }
        if (self.height == 0) != self.blk.is_none() {
            return field("blkno", self.blk.blkno.get());
        }
        let blocks = self.blocks.get();
        if (self.height == 0) != (blocks == 0) {
            return field("blocks", blocks);
        }
        if self.height > 0 && blocks > srch_max_blocks(self.height) {
            return field("blocks", blocks);
        }
        if self.height == 0 && self.entries.get() != 0 {
            return field("entries", self.entries.get());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SrchFile {
        SrchFile {
            first: SrchEntry::new(1, 2, 3),
            last: SrchEntry::new(u64::MAX, 9, 0),
            blk: BlockRef::new(77, 0xabc),
            blocks: 16.into(),
            entries: 40_000.into(),
            height: 2,
            pad: [0; 7],
        }
    }

    #[test]
    fn round_trip() {
        let f = sample();
        assert_eq!(SrchFile::decode(f.as_bytes()), Ok(f));
        assert_eq!(
            SrchFile::decode(SrchFile::default().as_bytes()),
            Ok(SrchFile::default())
        );
        let e = SrchEntry::new(5, 6, 7);
        assert_eq!(SrchEntry::decode(e.as_bytes()), Ok(e));
        assert!(SrchEntry::new(1, 9, 9).sort_key() < SrchEntry::new(2, 0, 0).sort_key());
    }

    #[test]
    fn refuses_inconsistent_files() {
        let good = sample();
        let bad = [
            SrchFile {
                pad: [1, 0, 0, 0, 0, 0, 0],
                ..good
            },
            SrchFile {
                height: SRCH_MAX_HEIGHT + 1,
                ..good
            },
            SrchFile { height: 0, ..good },
            SrchFile {
                blk: BlockRef::default(),
                ..good
            },
            SrchFile {
                blocks: 0.into(),
                ..good
            },
            SrchFile { height: 1, ..good },
            SrchFile {
                entries: 1.into(),
                ..SrchFile::default()
            },
        ];
        for f in bad {
            assert!(SrchFile::decode(f.as_bytes()).is_err(), "{f:?}");
        }
        assert!(SrchFile::decode(&good.as_bytes()[..87]).is_err());
    }
}
