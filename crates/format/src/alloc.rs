//! Allocator structures: alloc list heads and blocks for metadata block
//! numbers, and the roots of free-extent btrees.

use crate::block::{read_prefix, BlockHeader, BlockRef};
use crate::btree::BtreeRoot;
use crate::consts::*;
use crate::error::{check_zero, DecodeError, Result};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The head of a singly linked list of alloc list blocks.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct AllocListHead {
    pub first: BlockRef,
    /// Block numbers in the whole list.
    pub total_nr: U64,
    /// Block numbers in the first block.
    pub first_nr: U32,
    pub flags: U32,
}

impl AllocListHead {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let h: AllocListHead = read_prefix("alloc list head", bytes)?;
        h.validate()?;
        Ok(h)
    }
    pub fn validate(&self) -> Result<()> {
        let what = "alloc list head";
        if self.flags.get() & !ALLOC_FLAG_LOW != 0 {
            return Err(DecodeError::Field {
                what,
                field: "flags",
                value: self.flags.get() as u64,
            });
        }
        let first = self.first_nr.get() as u64;
        if first > ALLOC_LIST_MAX_BLOCKS as u64 || first > self.total_nr.get() {
            return Err(DecodeError::Field {
                what,
                field: "first_nr",
                value: first,
            });
        }
        if self.first.is_none() && (self.total_nr.get() != 0 || self.first.seq.get() != 0) {
            return Err(DecodeError::Field {
                what,
                field: "total_nr",
                value: self.total_nr.get(),
            });
        }
        Ok(())
    }
}

/// The header of an alloc list block; `ALLOC_LIST_MAX_BLOCKS` le64 block
/// numbers follow, of which `blknos[start..start + nr]` are in use.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct AllocListBlockHeader {
    pub hdr: BlockHeader,
    pub next: BlockRef,
    pub start: U32,
    pub nr: U32,
}

pub const ALLOC_LIST_BLOCK_HEADER_SIZE: usize = core::mem::size_of::<AllocListBlockHeader>();

/// Checks an alloc list block's header fields; returns (start, nr).
pub fn validate_alloc_list_block(block: &[u8]) -> Result<(usize, usize)> {
    let what = "alloc list block";
    if block.len() != BLOCK_LG_SIZE {
        return Err(DecodeError::Length {
            what,
            have: block.len(),
            expected: "65536".into(),
        });
    }
    let h: AllocListBlockHeader = read_prefix(what, block)?;
    let (start, nr) = (h.start.get() as usize, h.nr.get() as usize);
    if start > ALLOC_LIST_MAX_BLOCKS || nr > ALLOC_LIST_MAX_BLOCKS - start {
        return Err(DecodeError::Field {
            what,
            field: "start+nr",
            value: (start + nr) as u64,
        });
    }
    Ok((start, nr))
}

/// Block number `i` of an alloc list block's array.
pub fn alloc_list_blkno(block: &[u8], i: usize) -> u64 {
    let off = ALLOC_LIST_BLOCK_HEADER_SIZE + i * 8;
    block
        .get(off..off + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Stores block number `i` of an alloc list block's array.
pub fn set_alloc_list_blkno(block: &mut [u8], i: usize, blkno: u64) {
    let off = ALLOC_LIST_BLOCK_HEADER_SIZE + i * 8;
    block[off..off + 8].copy_from_slice(&blkno.to_le_bytes());
}

/// The root of a free-extent btree and the count of free blocks in it.
/// A zeroed root is a valid empty allocator.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct AllocRoot {
    pub total_len: U64,
    pub flags: U32,
    pub pad: [u8; 4],
    pub root: BtreeRoot,
}

impl AllocRoot {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let r: AllocRoot = read_prefix("alloc root", bytes)?;
        r.validate()?;
        Ok(r)
    }
    pub fn validate(&self) -> Result<()> {
        let what = "alloc root";
        check_zero(what, 12, &self.pad)?;
        if self.flags.get() & !ALLOC_FLAG_LOW != 0 {
            return Err(DecodeError::Field {
                what,
                field: "flags",
                value: self.flags.get() as u64,
            });
        }
        if self.root.is_empty() && self.total_len.get() != 0 {
            return Err(DecodeError::Field {
                what,
                field: "total_len of an empty tree",
                value: self.total_len.get(),
            });
        }
        self.root.validate()
    }
}

/// The order of an extent length: floor(log8(len)). 0 for 1..7, 1 for 8..63.
pub fn extent_order(len: u64) -> u64 {
    debug_assert!(len > 0);
    (63 - len.max(1).leading_zeros() as u64) / 3
}
