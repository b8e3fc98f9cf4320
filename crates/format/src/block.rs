//! The header every metadata block starts with, references to blocks, and
//! the block checksum.
//!
//! A block proves its identity: a reader holds a [`BlockRef`] {blkno, seq}
//! and checks the block's header magic, fsid, seq and blkno against it before
//! trusting any byte, then the crc32c over the rest of the block.

use crate::error::{check_len, check_zero, Result};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Reads a fixed-size structure from the front of `bytes`.
pub fn read_prefix<T: FromBytes + KnownLayout + Immutable>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T> {
    check_len(what, bytes, core::mem::size_of::<T>())?;
    // The length was checked just above, so the read cannot fail.
    Ok(T::read_from_prefix(bytes)
        .map(|(v, _)| v)
        .unwrap_or_else(|_| unreachable!()))
}

/// The 32-byte header at the start of every metadata block.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct BlockHeader {
    /// crc32c of the whole block after this field.
    pub crc: U32,
    /// Which kind of block this is (`consts::magic`).
    pub magic: U32,
    /// The filesystem's random id from mkfs.
    pub fsid: U64,
    /// Random on every copy-on-write; +1 on every super block write.
    pub seq: U64,
    /// The block's own number, in units of its block size.
    pub blkno: U64,
}

impl BlockHeader {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        read_prefix("block header", bytes)
    }
}

/// A reference to a metadata block: where it is and which version it must be.
/// A zero blkno means "no block".
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct BlockRef {
    pub blkno: U64,
    pub seq: U64,
}

impl BlockRef {
    pub fn new(blkno: u64, seq: u64) -> Self {
        BlockRef {
            blkno: blkno.into(),
            seq: seq.into(),
        }
    }
    pub fn is_none(&self) -> bool {
        self.blkno.get() == 0
    }
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        read_prefix("block ref", bytes)
    }
}

impl core::fmt::Display for BlockRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{:016x}", self.blkno.get(), self.seq.get())
    }
}

/// Seconds and nanoseconds since the epoch. `sec` holds a signed count in
/// two's complement (a time before 1970 is negative); `nsec` counts
/// forward from it, so -0.25 s is `sec` -1, `nsec` 750,000,000.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct Timespec {
    pub sec: U64,
    pub nsec: U32,
    pub pad: [u8; 4],
}

impl Timespec {
    pub fn new(sec: u64, nsec: u32) -> Self {
        Timespec {
            sec: sec.into(),
            nsec: nsec.into(),
            pad: [0; 4],
        }
    }
    /// A time `sec` seconds (negative before 1970) and `nsec` after the
    /// epoch.
    pub fn from_signed(sec: i64, nsec: u32) -> Self {
        Timespec::new(sec as u64, nsec)
    }
    /// The signed seconds since the epoch.
    pub fn signed_sec(&self) -> i64 {
        self.sec.get() as i64
    }
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let t: Timespec = read_prefix("timespec", bytes)?;
        t.validate()?;
        Ok(t)
    }
    pub fn validate(&self) -> Result<()> {
        check_zero("timespec", 12, &self.pad)?;
        if self.nsec.get() >= 1_000_000_000 {
            return Err(crate::DecodeError::Field {
                what: "timespec",
                field: "nsec",
                value: self.nsec.get() as u64,
            });
        }
        Ok(())
    }
}

/// The checksum of a block: crc32c of every byte after the crc field.
/// Blocks are at least a header long; a shorter buffer has no checksum (0).
pub fn block_crc(block: &[u8]) -> u32 {
    block.get(4..).map_or(0, crc32c::crc32c)
}

/// Stores the checksum of `block` in its header.
pub fn set_block_crc(block: &mut [u8]) {
    let crc = block_crc(block);
    block[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// The checksum stored in a block's header.
pub fn stored_crc(block: &[u8]) -> u32 {
    block
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}
