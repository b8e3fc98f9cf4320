//! Btree roots, blocks and items.
//!
//! A btree block is a 48-byte header, then a dense array of 48-byte item
//! headers sorted by key, then free space, then item values packed down from
//! the end of the block, each padded to 8 bytes. Leaf items (level 0) hold
//! fs or server values; parent items (level > 0) hold a 16-byte [`BlockRef`]
//! to a child and the greatest key that may appear in that child's subtree,
//! so the right spine carries [`Key::MAX`].

use crate::block::{read_prefix, BlockHeader, BlockRef};
use crate::consts::*;
use crate::error::{check_zero, DecodeError, Result};
use crate::key::{DiskKey, Key};
use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The root of a btree: its top block and the number of levels.
/// Height 0 is an empty tree; height H has its root at level H-1.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct BtreeRoot {
    pub blk: BlockRef,
    pub height: u8,
    pub pad: [u8; 7],
}

impl BtreeRoot {
    pub fn is_empty(&self) -> bool {
        self.height == 0
    }
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let r: BtreeRoot = read_prefix("btree root", bytes)?;
        r.validate()?;
        Ok(r)
    }
    pub fn validate(&self) -> Result<()> {
        check_zero("btree root", 17, &self.pad)?;
        let what = "btree root";
        if self.height > BTREE_MAX_HEIGHT {
            return Err(DecodeError::Field {
                what,
                field: "height",
                value: self.height as u64,
            });
        }
        if (self.height == 0) != self.blk.is_none()
            || (self.blk.is_none() && self.blk.seq.get() != 0)
        {
            return Err(DecodeError::Field {
                what,
                field: "blkno",
                value: self.blk.blkno.get(),
            });
        }
        Ok(())
    }
}

/// The header of a btree block.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct BtreeBlockHeader {
    pub hdr: BlockHeader,
    pub nr_items: U16,
    /// Sum over items of the item header and the padded value length.
    pub total_item_bytes: U16,
    /// Free bytes right after the item array that no value uses; at most
    /// the gap up to the lowest value (holes may make it smaller).
    pub mid_free_len: U16,
    /// 0 for leaves.
    pub level: u8,
    pub pad: [u8; 9],
}

/// One item header in a btree block.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct BtreeItem {
    pub key: DiskKey,
    pub seq: U64,
    /// Byte offset of the value from the start of the block.
    pub val_off: U16,
    pub val_len: U16,
    pub flags: u8,
    pub pad: [u8; 3],
}

pub const BTREE_BLOCK_HEADER_SIZE: usize = core::mem::size_of::<BtreeBlockHeader>();
pub const BTREE_ITEM_SIZE: usize = core::mem::size_of::<BtreeItem>();
/// Bytes of a block available to items and values.
pub const BTREE_BLOCK_USABLE: usize = BLOCK_LG_SIZE - BTREE_BLOCK_HEADER_SIZE;
/// The most bytes one item can take: header and largest padded value.
pub const BTREE_MAX_ITEM_BYTES: usize = BTREE_ITEM_SIZE + MAX_VAL_SIZE;
/// A non-root block with fewer item bytes than this is joined with a sibling.
pub const BTREE_JOIN_LOW_BYTES: usize = BTREE_BLOCK_USABLE / 4;
/// Flags an item may carry.
pub const ITEM_FLAGS_KNOWN: u8 = ITEM_FLAG_DELETION;

/// Bytes a value takes in a block: its length rounded up to 8.
pub const fn val_bytes(len: usize) -> usize {
    (len + BTREE_VALUE_ALIGN - 1) & !(BTREE_VALUE_ALIGN - 1)
}

/// Bytes an item takes in a block, header and padded value.
pub const fn item_bytes(val_len: usize) -> usize {
    BTREE_ITEM_SIZE + val_bytes(val_len)
}

/// Byte offset of item header `i`.
pub const fn item_off(i: usize) -> usize {
    BTREE_BLOCK_HEADER_SIZE + i * BTREE_ITEM_SIZE
}

/// Checks everything in a btree block that its header does not: the item
/// array, values, key order, flags and the free-space accounting. The block
/// header (magic, fsid, seq, blkno, crc) is checked by the block reader.
/// Returns the block's level. Never panics, whatever the bytes.
pub fn validate_btree_block(block: &[u8]) -> Result<u8> {
    let what = "btree block";
    if block.len() != BLOCK_LG_SIZE {
        return Err(DecodeError::Length {
            what,
            have: block.len(),
            expected: "65536".into(),
        });
    }
    let bh: BtreeBlockHeader = read_prefix(what, block)?;
    check_zero(what, 39, &bh.pad)?;
    if bh.level >= BTREE_MAX_HEIGHT {
        return Err(DecodeError::Field {
            what,
            field: "level",
            value: bh.level as u64,
        });
    }
    let nr = bh.nr_items.get() as usize;
    let items_end = item_off(nr);
    if items_end > BLOCK_LG_SIZE {
        return Err(DecodeError::Field {
            what,
            field: "nr_items",
            value: nr as u64,
        });
    }
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(nr);
    let mut total = 0usize;
    let mut prev: Option<Key> = None;
    for i in 0..nr {
        let it: BtreeItem = read_prefix(what, &block[item_off(i)..])?;
        let key = it.key.to_key()?;
        check_zero(what, item_off(i) + 45, &it.pad)?;
        if it.flags & !ITEM_FLAGS_KNOWN != 0 {
            return Err(DecodeError::Field {
                what,
                field: "item flags",
                value: it.flags as u64,
            });
        }
        if prev.is_some_and(|p| p >= key) {
            return Err(DecodeError::Field {
                what,
                field: "item key order",
                value: i as u64,
            });
        }
        prev = Some(key);
        let (off, len) = (it.val_off.get() as usize, it.val_len.get() as usize);
        let want_len = if bh.level > 0 {
            core::mem::size_of::<BlockRef>()
        } else {
            len
        };
        if bh.level > 0 && (it.flags != 0 || it.seq.get() != 0) {
            return Err(DecodeError::Field {
                what,
                field: "parent item flags or seq",
                value: i as u64,
            });
        }
        if len == 0 && off != 0 {
            return Err(DecodeError::Field {
                what,
                field: "val_off of an empty value",
                value: off as u64,
            });
        }
        if len > MAX_VAL_SIZE || len != want_len {
            return Err(DecodeError::Field {
                what,
                field: "val_len",
                value: len as u64,
            });
        }
        if len > 0 {
            if off % BTREE_VALUE_ALIGN != 0 || off < items_end || off + val_bytes(len) > block.len()
            {
                return Err(DecodeError::Field {
                    what,
                    field: "val_off",
                    value: off as u64,
                });
            }
            spans.push((off, off + val_bytes(len)));
        }
        total += item_bytes(len);
    }
    if total != bh.total_item_bytes.get() as usize {
        return Err(DecodeError::Field {
            what,
            field: "total_item_bytes",
            value: total as u64,
        });
    }
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[0].1 > w[1].0) {
        return Err(DecodeError::Field {
            what,
            field: "overlapping values",
            value: nr as u64,
        });
    }
    // Holes left by deleted values may sit below the lowest value, so the
    // recorded mid free space may be smaller than the gap, never larger.
    let lowest = spans.first().map_or(BLOCK_LG_SIZE, |s| s.0);
    if bh.mid_free_len.get() as usize > lowest - items_end {
        let value = bh.mid_free_len.get() as u64;
        return Err(DecodeError::Field {
            what,
            field: "mid_free_len",
            value,
        });
    }
    Ok(bh.level)
}
