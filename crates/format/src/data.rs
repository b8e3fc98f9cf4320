//! File data extents: the value of a `(FS zone, ino, DATA_EXTENT type,
//! last logical block, length)` item.
//!
//! An extent maps `len` logical 4 KiB blocks of a file, ending at logical
//! block `end` (both in the key), to `len` consecutive data device blocks
//! starting at `blkno`. Keying by the last block makes a "next item at or
//! after block b" search land on the extent that contains b. Holes have no
//! item.
//!
//! Flags:
//! - `SEF_OFFLINE`: the blocks were released to an archive; reads wait for
//!   staging. A released extent without `SEF_UNWRITTEN` maps no blocks, so
//!   its `blkno` is 0.
//! - `SEF_UNWRITTEN`: blocks are allocated but read as zeros (fallocate,
//!   or allocated ahead of staging together with `SEF_OFFLINE`).
//!
//! Every extent that maps blocks has `blkno >= DATA_DEV_START_BLKNO`; the
//! invariant that each data block is either free in `data_alloc` or mapped by
//! exactly one extent is checked by `scoutfs check`, not here.

use crate::block::read_prefix;
use crate::consts::DATA_DEV_START_BLKNO;
use crate::error::{check_zero, DecodeError, Result};
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Released: the contents must be staged before they can be read.
pub const SEF_OFFLINE: u8 = 1;
/// Allocated but never written: reads return zeros.
pub const SEF_UNWRITTEN: u8 = 2;
/// Every flag an extent may carry.
pub const SEF_KNOWN: u8 = SEF_OFFLINE | SEF_UNWRITTEN;

/// The value of a data extent item, 16 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct DataExtentVal {
    /// First data device block (SM units), or 0 for a released extent.
    pub blkno: U64,
    /// `SEF_*` bits.
    pub flags: u8,
    pub pad: [u8; 7],
}

impl DataExtentVal {
    pub fn new(blkno: u64, flags: u8) -> Self {
        DataExtentVal {
            blkno: blkno.into(),
            flags,
            pad: [0; 7],
        }
    }

    /// Whether the extent maps data device blocks.
    pub fn maps_blocks(&self) -> bool {
        self.flags & SEF_OFFLINE == 0 || self.flags & SEF_UNWRITTEN != 0
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "data extent";
        if bytes.len() != core::mem::size_of::<Self>() {
            return Err(DecodeError::Length {
                what,
                have: bytes.len(),
                expected: "16".into(),
            });
        }
        let v: DataExtentVal = read_prefix(what, bytes)?;
        v.validate()?;
        Ok(v)
    }

    pub fn validate(&self) -> Result<()> {
        let what = "data extent";
        if self.flags & !SEF_KNOWN != 0 {
            return Err(DecodeError::Field {
                what,
                field: "flags",
                value: self.flags as u64,
            });
        }
        check_zero(what, 9, &self.pad)?;
        let blkno = self.blkno.get();
        let ok = if self.maps_blocks() {
            blkno >= DATA_DEV_START_BLKNO
        } else {
            blkno == 0
        };
        if !ok {
            return Err(DecodeError::Field {
                what,
                field: "blkno",
                value: blkno,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for v in [
            DataExtentVal::new(64, 0),
            DataExtentVal::new(1 << 40, SEF_UNWRITTEN),
            DataExtentVal::new(0, SEF_OFFLINE),
            DataExtentVal::new(100, SEF_OFFLINE | SEF_UNWRITTEN),
        ] {
            assert_eq!(DataExtentVal::decode(v.as_bytes()), Ok(v));
        }
    }

    #[test]
    fn refuses_bad_values() {
        let bad = [
            DataExtentVal::new(64, 4),
            DataExtentVal::new(63, 0),
            DataExtentVal::new(0, SEF_UNWRITTEN),
            DataExtentVal::new(64, SEF_OFFLINE),
            DataExtentVal {
                pad: [0, 0, 0, 0, 0, 0, 1],
                ..DataExtentVal::new(64, 0)
            },
        ];
        for v in bad {
            assert!(DataExtentVal::decode(v.as_bytes()).is_err(), "{v:?}");
        }
        assert!(DataExtentVal::decode(&[0; 15]).is_err());
        assert!(DataExtentVal::decode(&[0; 17]).is_err());
    }
}
