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
//!
//! Quorum members elect the server's host with [`QuorumMessage`]s, 48-byte
//! UDP datagrams {fsid, format version, term, type, from slot, crc, mac}.
//! This module holds only their layout and checksum; the election code
//! decodes them (and refuses other filesystems' and versions' messages, and
//! any whose mac the cluster key doesn't give) because it knows which fsid,
//! version, slots and key to expect.

use crate::block::{read_prefix, BlockHeader, Timespec};
use crate::consts::BLOCK_SM_SIZE;
use crate::error::{check_zero, DecodeError, Result};
use zerocopy::little_endian::{U32, U64};
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

/// Message types ([`QuorumMessage::ty`]): a candidate asks for votes.
pub const QUORUM_MSG_REQUEST_VOTE: u8 = 0;
/// A member votes for the candidate it sends this to.
pub const QUORUM_MSG_VOTE: u8 = 1;
/// The leader of `term` is alive.
pub const QUORUM_MSG_HEARTBEAT: u8 = 2;
/// The leader of `term` stopped its server and gave up leadership.
pub const QUORUM_MSG_RESIGNATION: u8 = 3;
/// The number of message types; greater types are invalid.
pub const QUORUM_MSG_TYPE_NR: u8 = 4;

/// The name of a message type, for messages.
pub fn quorum_msg_name(ty: u8) -> &'static str {
    ["request_vote", "vote", "heartbeat", "resignation"]
        .get(ty as usize)
        .copied()
        .unwrap_or("unknown")
}

/// A quorum election message, one UDP datagram of exactly this struct.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct QuorumMessage {
    /// The filesystem's id: members of other filesystems are ignored.
    pub fsid: U64,
    /// The sender's format version (the super block's `fmt_vers`).
    pub version: U64,
    /// The sender's election term.
    pub term: U64,
    /// `QUORUM_MSG_*`.
    pub ty: u8,
    /// The sender's quorum slot.
    pub from: u8,
    pub pad: [u8; 2],
    /// [`quorum_msg_crc`] of the bytes before this field.
    pub crc: U32,
    /// The message authentication code of the bytes before this field
    /// under the cluster key (computed by the election code, which holds
    /// the key): a datagram without the right one is forged.
    pub mac: [u8; crate::consts::MAC_LEN],
}

pub const QUORUM_MESSAGE_SIZE: usize = core::mem::size_of::<QuorumMessage>();
/// The bytes the crc covers: everything before the crc field.
pub const QUORUM_MESSAGE_CRC_OFFSET: usize = 28;
/// The bytes the mac covers: everything before the mac field.
pub const QUORUM_MESSAGE_MAC_OFFSET: usize = 32;

/// The crc of a message's bytes: CRC-32C (the block checksum's function) of
/// the bytes before the crc field. Shorter input has no crc (0).
pub fn quorum_msg_crc(bytes: &[u8]) -> u32 {
    bytes
        .get(..QUORUM_MESSAGE_CRC_OFFSET)
        .map_or(0, crc32c::crc32c)
}

impl QuorumMessage {
    /// The datagram: the struct's bytes with its crc set (the mac as it
    /// is: the caller sets it over these bytes).
    pub fn to_bytes(&self) -> [u8; QUORUM_MESSAGE_SIZE] {
        let mut b = [0u8; QUORUM_MESSAGE_SIZE];
        b.copy_from_slice(self.as_bytes());
        let crc = quorum_msg_crc(&b);
        b[QUORUM_MESSAGE_CRC_OFFSET..QUORUM_MESSAGE_MAC_OFFSET].copy_from_slice(&crc.to_le_bytes());
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
    fn message_bytes_carry_their_crc() {
        let m = QuorumMessage {
            fsid: 0x1234.into(),
            version: 1.into(),
            term: 7.into(),
            ty: QUORUM_MSG_VOTE,
            from: 3,
            ..Default::default()
        };
        let b = m.to_bytes();
        assert_eq!(QUORUM_MESSAGE_SIZE, 48);
        assert_eq!(&b[..28], &m.as_bytes()[..28]);
        let crc = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        assert_eq!(&b[32..], &[0; 16], "the mac is the caller's");
        assert_eq!(crc, crc32c::crc32c(&b[..28]));
        assert_eq!(quorum_msg_crc(&b), crc);
        assert_eq!(quorum_msg_crc(&b[..27]), 0);
        assert_eq!(quorum_msg_name(QUORUM_MSG_HEARTBEAT), "heartbeat");
        assert_eq!(quorum_msg_name(QUORUM_MSG_TYPE_NR), "unknown");
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
