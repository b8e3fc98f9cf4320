//! Quorum blocks: each quorum slot's persistent record of its elections.
//!
//! The metadata device holds one 4 KiB quorum block per slot, slot `s` at
//! SM blkno `QUORUM_BLKNO + s` (17..=31). Only the mount using a slot writes
//! its block; every quorum member reads all of them. A block is a
//! [`QuorumBlock`] (280 bytes) followed by zeros to the end of the 4 KiB.
//!
//! The block records the latest event of each kind, indexed by the
//! `QUORUM_EVENT_*` constants: BEGIN (the quorum agent started), TERM (the
//! greatest term this slot has used or seen), ELECT (it won an election for
//! `term`), FENCE (as leader of `term` it finished fencing older leaders),
//! STOP (its server stopped) and END (the agent shut down). Each write of the
//! block increments the block's `write_nr` and stamps the events it changes
//! with that number, so an event's `write_nr` never exceeds the block's. A
//! starting agent takes the greatest TERM over all slots; a new leader
//! fences every slot whose ELECT term is greater than its STOP term.
//!
//! The block is rewritten in place, not copied on write, so no block ref
//! names its header `seq`; a reader checks its magic, fsid, blkno and the
//! crc over the whole 4 KiB. An aligned 4 KiB write is assumed atomic.

use crate::block::{read_prefix, BlockHeader, Timespec};
use crate::consts::BLOCK_SM_SIZE;
use crate::error::{check_zero, DecodeError, Result};
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const QUORUM_EVENT_BEGIN: usize = 0;
pub const QUORUM_EVENT_TERM: usize = 1;
pub const QUORUM_EVENT_ELECT: usize = 2;
pub const QUORUM_EVENT_FENCE: usize = 3;
pub const QUORUM_EVENT_STOP: usize = 4;
pub const QUORUM_EVENT_END: usize = 5;
/// The number of event kinds.
pub const QUORUM_EVENT_NR: usize = 6;

/// The name of an event index, for messages.
pub fn quorum_event_name(i: usize) -> &'static str {
    ["begin", "term", "elect", "fence", "stop", "end"]
        .get(i)
        .copied()
        .unwrap_or("unknown")
}

/// The latest event of one kind.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct QuorumEvent {
    /// The block `write_nr` that recorded the event.
    pub write_nr: U64,
    /// The mount that used the slot.
    pub rid: U64,
    /// The election term of the event.
    pub term: U64,
    /// When the event happened.
    pub ts: Timespec,
}

impl QuorumEvent {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let e: QuorumEvent = read_prefix("quorum event", bytes)?;
        e.ts.validate()?;
        Ok(e)
    }
}

/// The used front of a quorum block.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct QuorumBlock {
    pub hdr: BlockHeader,
    /// Incremented by every write of the block.
    pub write_nr: U64,
    pub events: [QuorumEvent; QUORUM_EVENT_NR],
}

pub const QUORUM_BLOCK_SIZE: usize = core::mem::size_of::<QuorumBlock>();

impl QuorumBlock {
    /// Decodes a whole 4 KiB quorum block; the bytes after the struct must
    /// be zero. The header is checked by the block reader.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "quorum block";
        if bytes.len() != BLOCK_SM_SIZE {
            return Err(DecodeError::Length {
                what,
                have: bytes.len(),
                expected: "4096".into(),
            });
        }
        let qb: QuorumBlock = read_prefix(what, bytes)?;
        check_zero(what, QUORUM_BLOCK_SIZE, &bytes[QUORUM_BLOCK_SIZE..])?;
        qb.validate()?;
        Ok(qb)
    }

    pub fn validate(&self) -> Result<()> {
        for e in &self.events {
            e.ts.validate()?;
            if e.write_nr.get() > self.write_nr.get() {
                let value = e.write_nr.get();
                return Err(DecodeError::Field {
                    what: "quorum block",
                    field: "event",
                    value,
                });
            }
        }
        Ok(())
    }

    /// The 4 KiB block image (before its crc is set).
    pub fn to_block(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SM_SIZE];
        b[..QUORUM_BLOCK_SIZE].copy_from_slice(self.as_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> QuorumBlock {
        let mut qb = QuorumBlock {
            write_nr: 9.into(),
            ..Default::default()
        };
        qb.events[QUORUM_EVENT_ELECT] = QuorumEvent {
            write_nr: 8.into(),
            rid: 0xfeed.into(),
            term: 3.into(),
            ts: Timespec::new(100, 5),
        };
        qb.events[QUORUM_EVENT_TERM] = QuorumEvent {
            write_nr: 9.into(),
            ..qb.events[2]
        };
        qb
    }

    #[test]
    fn round_trip() {
        let qb = sample();
        assert_eq!(QuorumBlock::decode(&qb.to_block()), Ok(qb));
        let e = qb.events[QUORUM_EVENT_ELECT];
        assert_eq!(QuorumEvent::decode(e.as_bytes()), Ok(e));
        assert_eq!(quorum_event_name(QUORUM_EVENT_FENCE), "fence");
        assert_eq!(quorum_event_name(QUORUM_EVENT_NR), "unknown");
    }

    #[test]
    fn refuses_bad_blocks() {
        let good = sample().to_block();
        assert!(
            QuorumBlock::decode(&good[..QUORUM_BLOCK_SIZE]).is_err(),
            "must be 4 KiB"
        );
        let mut tail = good.clone();
        tail[4095] = 1;
        assert!(QuorumBlock::decode(&tail).is_err(), "nonzero tail");
        let mut qb = sample();
        qb.events[QUORUM_EVENT_STOP].ts.nsec = 2_000_000_000.into();
        assert!(QuorumBlock::decode(&qb.to_block()).is_err(), "bad timespec");
        let mut qb = sample();
        qb.events[QUORUM_EVENT_END].write_nr = 10.into();
        assert!(
            QuorumBlock::decode(&qb.to_block()).is_err(),
            "event after the block"
        );
    }
}
