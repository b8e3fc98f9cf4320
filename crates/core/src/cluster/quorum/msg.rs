//! The election messages: one 48-byte UDP datagram each (the format
//! crate's `QuorumMessage`), and their decoding, which refuses anything not
//! meant for this filesystem's configured slots, and anything not made with
//! its cluster key (see `auth`), without ever panicking.

use super::{SlotNr, SlotSet, Term};
use crate::cluster::auth::ClusterKey;
use scoutfs_format::consts::QUORUM_MAX_SLOTS;
use scoutfs_format::quorum::{
    quorum_msg_crc, QuorumMessage, QUORUM_MESSAGE_MAC_OFFSET, QUORUM_MESSAGE_SIZE,
    QUORUM_MSG_HEARTBEAT, QUORUM_MSG_REQUEST_VOTE, QUORUM_MSG_RESIGNATION, QUORUM_MSG_VOTE,
};
use scoutfs_format::SuperBlock;
use std::fmt;
use zerocopy::FromBytes;

/// What a message says (the format's `QUORUM_MSG_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MsgType {
    RequestVote,
    Vote,
    Heartbeat,
    Resignation,
}

impl MsgType {
    pub const ALL: [MsgType; 4] = [
        MsgType::RequestVote,
        MsgType::Vote,
        MsgType::Heartbeat,
        MsgType::Resignation,
    ];

    fn wire(self) -> u8 {
        match self {
            MsgType::RequestVote => QUORUM_MSG_REQUEST_VOTE,
            MsgType::Vote => QUORUM_MSG_VOTE,
            MsgType::Heartbeat => QUORUM_MSG_HEARTBEAT,
            MsgType::Resignation => QUORUM_MSG_RESIGNATION,
        }
    }

    fn from_wire(ty: u8) -> Option<MsgType> {
        MsgType::ALL.into_iter().find(|t| t.wire() == ty)
    }

    pub fn name(self) -> &'static str {
        scoutfs_format::quorum::quorum_msg_name(self.wire())
    }
}

/// A decoded election message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub ty: MsgType,
    pub term: Term,
    pub from: SlotNr,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} term {} from slot {}",
            self.ty.name(),
            self.term,
            self.from
        )
    }
}

/// Why a datagram is not a message for us. The driver drops it and counts
/// it by kind; none of these is fatal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("quorum message of {len} bytes, not {QUORUM_MESSAGE_SIZE}")]
    Length { len: usize },
    #[error("quorum message crc {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("quorum message for fsid {got:#018x}, not ours ({expected:#018x})")]
    Fsid { got: u64, expected: u64 },
    #[error("quorum message of format version {got}, not ours ({expected})")]
    Version { got: u64, expected: u64 },
    #[error("quorum message padding is not zero")]
    Padding,
    #[error("quorum message of unknown type {0}")]
    Type(u8),
    #[error("quorum message from slot {0}, out of range")]
    SlotRange(u8),
    #[error("quorum message from slot {0}, which is not configured")]
    SlotUnconfigured(u8),
    #[error("quorum message without this cluster's authentication code (forged)")]
    Unauthenticated,
}

/// Encodes and decodes the messages of one filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageCodec {
    pub fsid: u64,
    /// The format version (the super block's `fmt_vers`).
    pub version: u64,
    /// The configured slots: messages from others are refused.
    pub slots: SlotSet,
    /// What every message is authenticated with.
    pub key: ClusterKey,
}

impl MessageCodec {
    /// The codec for the filesystem of a super block.
    pub fn for_super(sb: &SuperBlock) -> MessageCodec {
        MessageCodec {
            fsid: sb.hdr.fsid.get(),
            version: sb.fmt_vers.get(),
            slots: SlotSet::from_config(&sb.qconf),
            key: ClusterKey::of(sb),
        }
    }

    pub fn encode(&self, msg: &Message) -> [u8; QUORUM_MESSAGE_SIZE] {
        let mut b = QuorumMessage {
            fsid: self.fsid.into(),
            version: self.version.into(),
            term: msg.term.0.into(),
            ty: msg.ty.wire(),
            from: msg.from.0,
            pad: [0; 2],
            crc: 0.into(),
            mac: [0; scoutfs_format::consts::MAC_LEN],
        }
        .to_bytes();
        let mac = self.key.mac(&[&b[..QUORUM_MESSAGE_MAC_OFFSET]]);
        b[QUORUM_MESSAGE_MAC_OFFSET..].copy_from_slice(&mac);
        b
    }

    /// Decodes any bytes: a message for us, or why not. The crc is checked
    /// first, so damage is reported as damage and not as a foreign message;
    /// then the fsid and version (another filesystem's members), then the
    /// code: a message that passes those and not this is forged.
    pub fn decode(&self, bytes: &[u8]) -> Result<Message, MessageError> {
        let len = bytes.len();
        let m = QuorumMessage::read_from_bytes(bytes).map_err(|_| MessageError::Length { len })?;
        let computed = quorum_msg_crc(bytes);
        if m.crc.get() != computed {
            let stored = m.crc.get();
            return Err(MessageError::Crc { stored, computed });
        }
        if m.fsid.get() != self.fsid {
            let (got, expected) = (m.fsid.get(), self.fsid);
            return Err(MessageError::Fsid { got, expected });
        }
        if m.version.get() != self.version {
            let (got, expected) = (m.version.get(), self.version);
            return Err(MessageError::Version { got, expected });
        }
        let signed = &bytes[..QUORUM_MESSAGE_MAC_OFFSET];
        if !self
            .key
            .verify(&[signed], &bytes[QUORUM_MESSAGE_MAC_OFFSET..])
        {
            return Err(MessageError::Unauthenticated);
        }
        if m.pad != [0; 2] {
            return Err(MessageError::Padding);
        }
        let ty = MsgType::from_wire(m.ty).ok_or(MessageError::Type(m.ty))?;
        if m.from as usize >= QUORUM_MAX_SLOTS {
            return Err(MessageError::SlotRange(m.from));
        }
        if !self.slots.contains(SlotNr(m.from)) {
            return Err(MessageError::SlotUnconfigured(m.from));
        }
        Ok(Message {
            ty,
            term: Term(m.term.get()),
            from: SlotNr(m.from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::quorum::testing::{msg, set};
    use proptest::prelude::{any, prop_assert_eq, proptest};

    const FSID: u64 = 0xf5_1d00;

    fn codec() -> MessageCodec {
        MessageCodec {
            fsid: FSID,
            version: 1,
            slots: set(&[0, 1, 2, 14]),
            key: ClusterKey::new([0x6b; 32]),
        }
    }

    /// A datagram with a valid crc and code over any fields.
    fn signed(c: &MessageCodec, m: QuorumMessage) -> Vec<u8> {
        let mut b = m.to_bytes();
        let mac = c.key.mac(&[&b[..QUORUM_MESSAGE_MAC_OFFSET]]);
        b[QUORUM_MESSAGE_MAC_OFFSET..].copy_from_slice(&mac);
        b.to_vec()
    }

    #[test]
    fn codec_round_trips_every_type() {
        let c = codec();
        for ty in MsgType::ALL {
            for (term, from) in [(0, 0), (9, 14), (u64::MAX, 2)] {
                let m = msg(ty, term, from);
                let b = c.encode(&m);
                assert_eq!(c.decode(&b), Ok(m));
                assert_eq!(b[24], ty.wire());
            }
        }
        let m = msg(MsgType::Heartbeat, 4, 2);
        assert_eq!(m.to_string(), "heartbeat term 4 from slot 2");
    }

    #[test]
    fn codec_refuses_each_kind_of_bad_datagram() {
        let c = codec();
        let good = c.encode(&msg(MsgType::Vote, 3, 1));
        for len in [0, 31, 47, 49] {
            let mut b = good.to_vec();
            b.resize(len, 0);
            assert_eq!(c.decode(&b), Err(MessageError::Length { len }));
        }
        let mut b = good;
        b[16] ^= 1;
        assert!(matches!(c.decode(&b), Err(MessageError::Crc { .. })));
        let other = MessageCodec { fsid: 1, ..c };
        let b = other.encode(&msg(MsgType::Vote, 3, 1));
        assert_eq!(
            c.decode(&b),
            Err(MessageError::Fsid {
                got: 1,
                expected: FSID
            })
        );
        let other = MessageCodec { version: 2, ..c };
        let b = other.encode(&msg(MsgType::Vote, 3, 1));
        assert_eq!(
            c.decode(&b),
            Err(MessageError::Version {
                got: 2,
                expected: 1
            })
        );
        // Well formed, with a valid crc, but made without our key: forged.
        let forger = MessageCodec {
            key: ClusterKey::new([0x6c; 32]),
            ..c
        };
        let forged = forger.encode(&msg(MsgType::Heartbeat, u64::MAX, 1));
        assert_eq!(c.decode(&forged), Err(MessageError::Unauthenticated));
        let mut unsigned = forged;
        unsigned[32..].fill(0);
        assert_eq!(c.decode(&unsigned), Err(MessageError::Unauthenticated));
        // Valid crcs and codes over invalid fields.
        let raw = |ty: u8, from: u8, pad: [u8; 2]| {
            signed(
                &c,
                QuorumMessage {
                    fsid: FSID.into(),
                    version: 1.into(),
                    term: 3.into(),
                    ty,
                    from,
                    pad,
                    crc: 0.into(),
                    mac: [0; 16],
                },
            )
        };
        assert_eq!(
            c.decode(&raw(1, 1, [0, 0])).map(|m| m.ty),
            Ok(MsgType::Vote)
        );
        assert_eq!(c.decode(&raw(1, 1, [0, 9])), Err(MessageError::Padding));
        assert_eq!(c.decode(&raw(4, 1, [0, 0])), Err(MessageError::Type(4)));
        assert_eq!(c.decode(&raw(255, 1, [0, 0])), Err(MessageError::Type(255)));
        assert_eq!(
            c.decode(&raw(1, 15, [0, 0])),
            Err(MessageError::SlotRange(15))
        );
        assert_eq!(
            c.decode(&raw(1, 200, [0, 0])),
            Err(MessageError::SlotRange(200))
        );
        assert_eq!(
            c.decode(&raw(1, 3, [0, 0])),
            Err(MessageError::SlotUnconfigured(3))
        );
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let c = codec();
        let good = c.encode(&msg(MsgType::RequestVote, 77, 14));
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good;
                b[i] ^= 1 << bit;
                assert!(c.decode(&b).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let c = codec();
            if let Ok(m) = c.decode(&bytes) {
                prop_assert_eq!(&c.encode(&m)[..], &bytes[..]);
            }
        }

        #[test]
        fn decoding_valid_messages_with_noise(term in any::<u64>(), ty in 0u8..6, from in 0u8..20,
                                              fsid_bit in 0u32..3) {
            let c = codec();
            let fsid = if fsid_bit == 0 { FSID } else { FSID ^ (1 << fsid_bit) };
            let b = signed(&c, QuorumMessage {
                fsid: fsid.into(), version: 1.into(), term: term.into(), ty, from,
                pad: [0; 2], crc: 0.into(), mac: [0; 16],
            });
            let ok = fsid == FSID && ty < 4 && c.slots.contains(SlotNr(from));
            prop_assert_eq!(c.decode(&b).is_ok(), ok);
        }
    }
}
