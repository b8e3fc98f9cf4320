//! The wire format: how messages between a mount and the server travel as
//! bytes over a stream (TCP).
//!
//! # Frames
//!
//! Every message is one *frame*: a fixed 40-byte little-endian header
//! followed by `data_len` payload bytes (the layout is in `docs/wire.md`):
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0 | `magic` le32 | [`WIRE_MAGIC`]: finds a stream that is not ours at once |
//! | 4 | `crc` le32 | crc32c of header bytes 8..40, then the payload |
//! | 8 | `seq` le64 | the sender's sequence number of this message, nonzero |
//! | 16 | `recv_seq` le64 | acknowledgement: the last seq the sender received |
//! | 24 | `id` le64 | request id, nonzero; a response echoes its request's |
//! | 32 | `data_len` le32 | payload bytes, at most [`MAX_FRAME_DATA`] |
//! | 36 | `kind` u8 | [`Kind`]: request 1 or response 2 |
//! | 37 | `cmd` u8 | [`Cmd`], the original's command numbers |
//! | 38 | `error` u8 | [`ErrCode`], 0 for none; responses only |
//! | 39 | `pad` u8 | zero |
//!
//! Unlike the original we checksum every frame: TCP's 16-bit checksum lets
//! corruption through at scale, and a corrupt lock grant or log tree root
//! would damage the filesystem, while a bad crc only costs a reconnect.
//!
//! # Validation
//!
//! Decoding is total: any byte string yields a frame or a typed
//! [`WireError`], never a panic, and never allocates more than a declared
//! length after checking it against [`MAX_FRAME_DATA`]. The streaming
//! [`FrameReader`] takes bytes in whatever chunks the socket delivers and
//! checks magic and length as soon as a header is complete, so an oversized
//! frame is refused before its payload arrives. A whole frame is then
//! checked in this order: crc (so a damaged frame reports as damaged), then
//! the fields: `seq` and `id` nonzero, `kind`, `cmd` and `error` known,
//! `pad` zero, and no error on a request. Payloads are checked by the
//! `decode_*` functions, which also know which commands may travel in which
//! direction (the server never receives SYNC_LOG_TREES, the client never
//! receives ALLOC_INODES). What the header fields mean across frames (seq
//! order, acknowledgements, greetings first) is `stream`'s business.
//!
//! # Payloads
//!
//! The in-memory messages are the enums of `msg`; this module maps each to
//! its command and payload bytes and back. A response's payload depends on
//! the command it answers, which the response frame echoes. An error
//! response ([`Response::Error`]) has an [`ErrCode`] and no payload; errnos
//! other than the seven the protocol names travel as [`ErrCode::Other`] and
//! decode as EIO, the original's "something failed over there".
//!
//! The GREETING payload is [`Greeting`] (fsid, format version, server term,
//! rid, flags) in both directions. It is `stream`'s handshake, not an ordinary
//! message: `msg`'s `Request::Greeting` and `Response::Greeting` hold only a
//! part of it, so the message codecs refuse them and [`Greeting::request`]
//! and [`Greeting::response`] give the `msg` view of a decoded greeting.
//!
//! # Limits
//!
//! A payload is at most [`MAX_FRAME_DATA`] (64 KiB); today's largest is a
//! LOCK_RECOVER answer of [`RECOVER_ENTRIES_MAX`] entries (49,160 bytes),
//! then a [`LogTrees`] (472 bytes). Only the commands `msg` has are
//! defined; the original's others keep their numbers free and decode as
//! unknown.

use crate::cluster::auth::ClusterKey;
use crate::cluster::lock::{LockMode, LockMsg, RecoverEntry};
use crate::cluster::net::msg::{
    ClientResponse, OpenInoMap, Request, Response, ServerRequest, StatfsInfo, WaitFail,
    WaitingBlock, WaitingQuery,
};
use crate::types::Roots;
use scoutfs_format::consts::MAC_LEN;
use scoutfs_format::error::check_zero;
use scoutfs_format::key::DiskKey;
use scoutfs_format::log_trees::LogTrees;
use scoutfs_format::{DecodeError, Key};
use std::fmt;
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use scoutfs_format::wire::*;

/// Whether a frame asks or answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Request = 1,
    Response = 2,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Request),
            2 => Some(Kind::Response),
            _ => None,
        }
    }
}

/// A command: what a request asks, and so what its response carries.
/// Numbers are the original's (`enum scoutfs_net_cmd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cmd {
    Greeting = 0,
    AllocInodes = 1,
    GetLogTrees = 2,
    CommitLogTrees = 3,
    SyncLogTrees = 4,
    GetRoots = 5,
    GetLastSeq = 6,
    Lock = 7,
    LockRecover = 8,
    OpenInoMap = 13,
    ResizeDevices = 17,
    Statfs = 18,
    Farewell = 19,
    DataWaiting = 20,
    DataWaitErr = 21,
    WaitersNew = 22,
}

impl Cmd {
    /// Every defined command.
    pub const ALL: [Cmd; 16] = [
        Cmd::Greeting,
        Cmd::AllocInodes,
        Cmd::GetLogTrees,
        Cmd::CommitLogTrees,
        Cmd::SyncLogTrees,
        Cmd::GetRoots,
        Cmd::GetLastSeq,
        Cmd::Lock,
        Cmd::LockRecover,
        Cmd::OpenInoMap,
        Cmd::ResizeDevices,
        Cmd::Statfs,
        Cmd::Farewell,
        Cmd::DataWaiting,
        Cmd::DataWaitErr,
        Cmd::WaitersNew,
    ];

    pub fn from_u8(v: u8) -> Option<Cmd> {
        Cmd::ALL.iter().copied().find(|c| *c as u8 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            Cmd::Greeting => "GREETING",
            Cmd::AllocInodes => "ALLOC_INODES",
            Cmd::GetLogTrees => "GET_LOG_TREES",
            Cmd::CommitLogTrees => "COMMIT_LOG_TREES",
            Cmd::SyncLogTrees => "SYNC_LOG_TREES",
            Cmd::GetRoots => "GET_ROOTS",
            Cmd::GetLastSeq => "GET_LAST_SEQ",
            Cmd::Lock => "LOCK",
            Cmd::LockRecover => "LOCK_RECOVER",
            Cmd::OpenInoMap => "OPEN_INO_MAP",
            Cmd::ResizeDevices => "RESIZE_DEVICES",
            Cmd::Statfs => "STATFS",
            Cmd::Farewell => "FAREWELL",
            Cmd::DataWaiting => "DATA_WAITING",
            Cmd::DataWaitErr => "DATA_WAIT_ERR",
            Cmd::WaitersNew => "WAITERS_NEW",
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of a failed request as it travels: the errnos the protocol
/// names, and one code for every other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrCode {
    NoEnt = 1,
    NoMem = 2,
    Io = 3,
    NoSpc = 4,
    Inval = 5,
    NoLink = 6,
    /// Any other errno; decodes as EIO.
    Other = 7,
    /// A quota is exceeded (EDQUOT).
    DQuot = 8,
}

impl ErrCode {
    pub const ALL: [ErrCode; 8] = [
        ErrCode::NoEnt,
        ErrCode::NoMem,
        ErrCode::Io,
        ErrCode::NoSpc,
        ErrCode::Inval,
        ErrCode::NoLink,
        ErrCode::Other,
        ErrCode::DQuot,
    ];

    /// The code of a (positive) errno. This is the one place errnos become
    /// wire codes.
    pub fn from_errno(errno: i32) -> ErrCode {
        match errno {
            libc::ENOENT => ErrCode::NoEnt,
            libc::ENOMEM => ErrCode::NoMem,
            libc::EIO => ErrCode::Io,
            libc::ENOSPC => ErrCode::NoSpc,
            libc::EINVAL => ErrCode::Inval,
            libc::ENOLINK => ErrCode::NoLink,
            libc::EDQUOT => ErrCode::DQuot,
            _ => ErrCode::Other,
        }
    }

    /// The errno a receiver reports for this code.
    pub fn errno(self) -> i32 {
        match self {
            ErrCode::NoEnt => libc::ENOENT,
            ErrCode::NoMem => libc::ENOMEM,
            ErrCode::Io | ErrCode::Other => libc::EIO,
            ErrCode::NoSpc => libc::ENOSPC,
            ErrCode::Inval => libc::EINVAL,
            ErrCode::NoLink => libc::ENOLINK,
            ErrCode::DQuot => libc::EDQUOT,
        }
    }

    fn from_u8(v: u8) -> Option<ErrCode> {
        ErrCode::ALL.iter().copied().find(|c| *c as u8 == v)
    }
}

/// Why bytes are not a valid frame or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame magic {found:#010x}, expected {:#010x}", WIRE_MAGIC)]
    Magic { found: u32 },
    #[error(
        "frame payload of {len} bytes exceeds the maximum of {}",
        MAX_FRAME_DATA
    )]
    TooLong { len: u64 },
    #[error("frame of {have} bytes, its header says {need}")]
    Length { have: usize, need: usize },
    #[error("frame crc {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("frame header field {field} has invalid value {value}")]
    Header { field: &'static str, value: u64 },
    #[error("{cmd} {what} is not expected here")]
    Unexpected { cmd: Cmd, what: &'static str },
    #[error("{cmd} payload of {have} bytes, expected {expected}")]
    PayloadLength {
        cmd: Cmd,
        have: usize,
        expected: usize,
    },
    #[error("{cmd} payload field {field} has invalid value {value}")]
    PayloadField {
        cmd: Cmd,
        field: &'static str,
        value: u64,
    },
    #[error("{cmd} payload: {source}")]
    Payload { cmd: Cmd, source: DecodeError },
    #[error("the stream is out of step after an earlier error")]
    Poisoned,
}

/// Why a message cannot be encoded: a caller's mistake, not the peer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("greetings are net's handshake and travel as wire::Greeting")]
    Greeting,
    #[error("a {resp} response does not answer {cmd}")]
    Mismatch { cmd: Cmd, resp: &'static str },
    #[error("errno {errno} is not an error")]
    Errno { errno: i32 },
    #[error("{cmd} with {nr} entries, at most {max} fit")]
    TooMany { cmd: Cmd, nr: usize, max: usize },
}

/// The decoded header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub seq: u64,
    pub recv_seq: u64,
    pub id: u64,
    pub kind: Kind,
    pub cmd: Cmd,
    /// Set only on responses.
    pub error: Option<ErrCode>,
}

impl FrameHeader {
    fn validate(&self) -> Result<(), WireError> {
        let bad = |field, value| Err(WireError::Header { field, value });
        if self.seq == 0 {
            return bad("seq", 0);
        }
        if self.id == 0 {
            return bad("id", 0);
        }
        if let (Kind::Request, Some(e)) = (self.kind, self.error) {
            return bad("error", e as u64);
        }
        Ok(())
    }
}

/// One message: a valid header and its payload. Built only through
/// [`Frame::new`] or decoding, so every frame encodes to valid bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    hdr: FrameHeader,
    data: Vec<u8>,
}

impl Frame {
    /// A frame, if the header is valid and the payload within the maximum.
    pub fn new(hdr: FrameHeader, data: Vec<u8>) -> Result<Frame, WireError> {
        if data.len() > MAX_FRAME_DATA {
            return Err(WireError::TooLong {
                len: data.len() as u64,
            });
        }
        hdr.validate()?;
        Ok(Frame { hdr, data })
    }

    pub fn hdr(&self) -> &FrameHeader {
        &self.hdr
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// Bytes of the encoded frame.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let h = &self.hdr;
        let mut raw = RawHeader {
            magic: WIRE_MAGIC.into(),
            crc: 0.into(),
            seq: h.seq.into(),
            recv_seq: h.recv_seq.into(),
            id: h.id.into(),
            // Frame::new checked the length against MAX_FRAME_DATA.
            data_len: (self.data.len() as u32).into(),
            kind: h.kind as u8,
            cmd: h.cmd as u8,
            error: h.error.map_or(0, |e| e as u8),
            pad: 0,
        };
        raw.crc = frame_crc(&raw, &self.data).into();
        out.extend_from_slice(raw.as_bytes());
        out.extend_from_slice(&self.data);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes exactly one whole frame.
    pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
        let Ok((raw, rest)) = RawHeader::read_from_prefix(bytes) else {
            return Err(WireError::Length {
                have: bytes.len(),
                need: HEADER_LEN,
            });
        };
        let len = check_header(&raw)?;
        if rest.len() != len {
            return Err(WireError::Length {
                have: bytes.len(),
                need: HEADER_LEN + len,
            });
        }
        finish(&raw, rest.to_vec())
    }
}

/// crc32c of the header after its crc field, then the payload.
fn frame_crc(raw: &RawHeader, data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&raw.as_bytes()[8..]);
    crc32c::crc32c_append(crc, data)
}

/// What must hold before reading on: the magic and a payload length within
/// the maximum. Returns the payload length.
fn check_header(raw: &RawHeader) -> Result<usize, WireError> {
    if raw.magic.get() != WIRE_MAGIC {
        return Err(WireError::Magic {
            found: raw.magic.get(),
        });
    }
    let len = raw.data_len.get();
    if len as usize > MAX_FRAME_DATA {
        return Err(WireError::TooLong { len: len as u64 });
    }
    Ok(len as usize)
}

/// Checks a whole frame's crc and then its fields.
fn finish(raw: &RawHeader, data: Vec<u8>) -> Result<Frame, WireError> {
    let computed = frame_crc(raw, &data);
    if computed != raw.crc.get() {
        return Err(WireError::Crc {
            stored: raw.crc.get(),
            computed,
        });
    }
    let bad = |field, value: u8| WireError::Header {
        field,
        value: value as u64,
    };
    let kind = Kind::from_u8(raw.kind).ok_or(bad("kind", raw.kind))?;
    let cmd = Cmd::from_u8(raw.cmd).ok_or(bad("cmd", raw.cmd))?;
    let error = match raw.error {
        0 => None,
        e => Some(ErrCode::from_u8(e).ok_or(bad("error", e))?),
    };
    if raw.pad != 0 {
        return Err(bad("pad", raw.pad));
    }
    let hdr = FrameHeader {
        seq: raw.seq.get(),
        recv_seq: raw.recv_seq.get(),
        id: raw.id.get(),
        kind,
        cmd,
        error,
    };
    hdr.validate()?;
    Ok(Frame { hdr, data })
}

/// Assembles frames from a byte stream delivered in arbitrary chunks.
///
/// It buffers at most one header and one payload, whose length was checked
/// against [`MAX_FRAME_DATA`] before anything was allocated for it. After an
/// error the stream has lost its framing: every later call fails with
/// [`WireError::Poisoned`] and the connection must be closed.
#[derive(Debug)]
pub struct FrameReader {
    hdr: [u8; HEADER_LEN],
    hdr_have: usize,
    /// The header and its payload length once the header is complete.
    raw: Option<(RawHeader, usize)>,
    data: Vec<u8>,
    poisoned: bool,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader {
            hdr: [0; HEADER_LEN],
            hdr_have: 0,
            raw: None,
            data: Vec::new(),
            poisoned: false,
        }
    }

    /// Consumes bytes of `input` until a frame is complete or the input is
    /// used up. Returns how many bytes it consumed and the frame, if one
    /// completed; call again with the rest of the input.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Frame>), WireError> {
        if self.poisoned {
            return Err(WireError::Poisoned);
        }
        let r = self.feed_inner(input);
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn feed_inner(&mut self, input: &[u8]) -> Result<(usize, Option<Frame>), WireError> {
        let mut used = 0;
        let (raw, len) = match self.raw {
            Some(r) => r,
            None => {
                let take = (HEADER_LEN - self.hdr_have).min(input.len());
                self.hdr[self.hdr_have..self.hdr_have + take].copy_from_slice(&input[..take]);
                self.hdr_have += take;
                used += take;
                if self.hdr_have < HEADER_LEN {
                    return Ok((used, None));
                }
                let Ok(raw) = RawHeader::read_from_bytes(&self.hdr) else {
                    unreachable!("the header buffer is exactly a header long");
                };
                let len = check_header(&raw)?;
                self.data = Vec::with_capacity(len);
                self.raw = Some((raw, len));
                (raw, len)
            }
        };
        let take = (len - self.data.len()).min(input.len() - used);
        self.data.extend_from_slice(&input[used..used + take]);
        used += take;
        if self.data.len() < len {
            return Ok((used, None));
        }
        self.raw = None;
        self.hdr_have = 0;
        let frame = finish(&raw, std::mem::take(&mut self.data))?;
        Ok((used, Some(frame)))
    }

    /// Whether the reader is between frames (nothing partial buffered).
    pub fn is_idle(&self) -> bool {
        self.hdr_have == 0 && !self.poisoned
    }
}

/// The GREETING payload: who is talking, about which filesystem, to which
/// server incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Greeting {
    pub fsid: u64,
    /// The format version of the sender (`FORMAT_VERSION`).
    pub fmt_vers: u64,
    /// From a client: the term of the last server it greeted, 0 at first.
    /// From the server: its term.
    pub server_term: u64,
    /// The mount's random id, never 0; the server echoes it.
    pub rid: u64,
    /// `GREETING_FLAG_*`.
    pub flags: u64,
}

impl Greeting {
    /// The payload of greeting `id` (its frame's id), with its code under
    /// `key`.
    pub fn encode(&self, key: &ClusterKey, id: u64) -> Vec<u8> {
        let mut w = WireGreeting {
            fsid: self.fsid.into(),
            fmt_vers: self.fmt_vers.into(),
            server_term: self.server_term.into(),
            rid: self.rid.into(),
            flags: self.flags.into(),
            mac: [0; MAC_LEN],
        };
        w.mac = key.mac(&[&id.to_le_bytes(), &w.as_bytes()[..GREETING_SIGNED_LEN]]);
        w.as_bytes().to_vec()
    }

    /// Whether `data`, the payload of greeting `id`, carries the code
    /// `key` gives it: false for anything a stranger sent.
    pub fn authentic(data: &[u8], key: &ClusterKey, id: u64) -> bool {
        data.len() == GREETING_LEN
            && key.verify(
                &[&id.to_le_bytes(), &data[..GREETING_SIGNED_LEN]],
                &data[GREETING_SIGNED_LEN..],
            )
    }

    /// Decodes a greeting. Any fsid and format version decode, so the
    /// receiver can say exactly why it refuses one.
    pub fn decode(data: &[u8]) -> Result<Greeting, WireError> {
        let cmd = Cmd::Greeting;
        let w: WireGreeting = exact(cmd, data)?;
        let g = Greeting {
            fsid: w.fsid.get(),
            fmt_vers: w.fmt_vers.get(),
            server_term: w.server_term.get(),
            rid: w.rid.get(),
            flags: w.flags.get(),
        };
        if g.rid == 0 {
            return Err(field(cmd, "rid", 0));
        }
        if g.flags & !GREETING_FLAGS_KNOWN != 0 {
            return Err(field(cmd, "flags", g.flags));
        }
        Ok(g)
    }

    /// The part of a client's greeting that `msg::Request::Greeting` holds.
    pub fn request(&self) -> Request {
        Request::Greeting { rid: self.rid }
    }

    /// The part of the server's greeting that `msg::Response::Greeting` holds.
    pub fn response(&self) -> Response {
        Response::Greeting {
            fsid: self.fsid,
            server_term: self.server_term,
        }
    }
}

fn field(cmd: Cmd, field: &'static str, value: u64) -> WireError {
    WireError::PayloadField { cmd, field, value }
}

/// Reads a payload that must be exactly one `T`.
fn exact<T: FromBytes + KnownLayout + Immutable>(cmd: Cmd, data: &[u8]) -> Result<T, WireError> {
    T::read_from_bytes(data).map_err(|_| WireError::PayloadLength {
        cmd,
        have: data.len(),
        expected: core::mem::size_of::<T>(),
    })
}

fn empty(cmd: Cmd, data: &[u8]) -> Result<(), WireError> {
    if !data.is_empty() {
        return Err(WireError::PayloadLength {
            cmd,
            have: data.len(),
            expected: 0,
        });
    }
    Ok(())
}

fn encode_lock(m: &LockMsg) -> Vec<u8> {
    WireLock {
        key: m.key.to_disk(),
        write_seq: m.write_seq.into(),
        old_mode: m.old_mode as u8,
        new_mode: m.new_mode as u8,
        pad: [0; 6],
    }
    .as_bytes()
    .to_vec()
}

fn decode_lock(data: &[u8]) -> Result<LockMsg, WireError> {
    let cmd = Cmd::Lock;
    let w: WireLock = exact(cmd, data)?;
    let key = w
        .key
        .to_key()
        .map_err(|source| WireError::Payload { cmd, source })?;
    check_zero("lock", 42, &w.pad).map_err(|source| WireError::Payload { cmd, source })?;
    let mode = |f, v: u8| LockMode::from_u8(v).ok_or(field(cmd, f, v as u64));
    Ok(LockMsg {
        key,
        write_seq: w.write_seq.get(),
        old_mode: mode("old_mode", w.old_mode)?,
        new_mode: mode("new_mode", w.new_mode)?,
    })
}

fn decode_key(cmd: Cmd, data: &[u8]) -> Result<Key, WireError> {
    let k: DiskKey = exact(cmd, data)?;
    k.to_key()
        .map_err(|source| WireError::Payload { cmd, source })
}

fn encode_recover(entries: &[RecoverEntry], more: bool) -> Result<Vec<u8>, EncodeError> {
    let cmd = Cmd::LockRecover;
    if entries.len() > RECOVER_ENTRIES_MAX {
        return Err(EncodeError::TooMany {
            cmd,
            nr: entries.len(),
            max: RECOVER_ENTRIES_MAX,
        });
    }
    let head = WireRecoverHead {
        // At most RECOVER_ENTRIES_MAX, checked above.
        nr: (entries.len() as u32).into(),
        flags: if more { RECOVER_FLAG_MORE } else { 0 },
        pad: [0; 3],
    };
    let mut out = Vec::with_capacity(RECOVER_HEAD_LEN + entries.len() * RECOVER_ENTRY_LEN);
    out.extend_from_slice(head.as_bytes());
    for e in entries {
        let w = WireRecoverEntry {
            key: e.key.to_disk(),
            write_seq: e.write_seq.into(),
            mode: e.mode as u8,
            pad: [0; 7],
        };
        out.extend_from_slice(w.as_bytes());
    }
    Ok(out)
}

/// A LOCK_RECOVER answer: its length must match its count, which is within
/// the limit. Which modes and key orders make sense is the lock server's
/// business.
fn decode_recover(data: &[u8]) -> Result<ClientResponse, WireError> {
    let cmd = Cmd::LockRecover;
    let Ok((head, rest)) = WireRecoverHead::read_from_prefix(data) else {
        return Err(WireError::PayloadLength {
            cmd,
            have: data.len(),
            expected: RECOVER_HEAD_LEN,
        });
    };
    let nr = head.nr.get() as usize;
    if nr > RECOVER_ENTRIES_MAX {
        return Err(field(cmd, "nr", nr as u64));
    }
    if head.flags & !RECOVER_FLAG_MORE != 0 {
        return Err(field(cmd, "flags", head.flags as u64));
    }
    let payload = |source| WireError::Payload { cmd, source };
    check_zero("lock recover", 5, &head.pad).map_err(payload)?;
    if rest.len() != nr * RECOVER_ENTRY_LEN {
        return Err(WireError::PayloadLength {
            cmd,
            have: data.len(),
            expected: RECOVER_HEAD_LEN + nr * RECOVER_ENTRY_LEN,
        });
    }
    let mut entries = Vec::with_capacity(nr);
    for chunk in rest.chunks_exact(RECOVER_ENTRY_LEN) {
        let w: WireRecoverEntry = exact(cmd, chunk)?;
        let key = w.key.to_key().map_err(payload)?;
        check_zero("lock recover entry", 41, &w.pad).map_err(payload)?;
        let mode = LockMode::from_u8(w.mode).ok_or(field(cmd, "mode", w.mode as u64))?;
        entries.push(RecoverEntry {
            key,
            mode,
            write_seq: w.write_seq.get(),
        });
    }
    Ok(ClientResponse::LockRecover {
        entries,
        more: head.flags & RECOVER_FLAG_MORE != 0,
    })
}

fn decode_log_trees(cmd: Cmd, data: &[u8]) -> Result<Box<LogTrees>, WireError> {
    if data.len() != LOG_TREES_LEN {
        return Err(WireError::PayloadLength {
            cmd,
            have: data.len(),
            expected: LOG_TREES_LEN,
        });
    }
    let lt = LogTrees::decode(data).map_err(|source| WireError::Payload { cmd, source })?;
    Ok(Box::new(lt))
}

fn decode_roots(data: &[u8]) -> Result<Roots, WireError> {
    let cmd = Cmd::GetRoots;
    let w: WireRoots = exact(cmd, data)?;
    for r in [&w.fs_root, &w.logs_root, &w.srch_root] {
        r.validate()
            .map_err(|source| WireError::Payload { cmd, source })?;
    }
    Ok(Roots {
        fs_root: w.fs_root,
        logs_root: w.logs_root,
        srch_root: w.srch_root,
    })
}

fn encode_omap(m: &OpenInoMap) -> Vec<u8> {
    WireOpenInoMap {
        group_nr: m.group.into(),
        bits: m.bits.map(U64::new),
    }
    .as_bytes()
    .to_vec()
}

fn encode_waiting_query(q: &WaitingQuery) -> Vec<u8> {
    WireWaitingReq {
        after_ino: q.after_ino.into(),
        after_iblock: q.after_iblock.into(),
        max: q.max.into(),
        pad: 0.into(),
    }
    .as_bytes()
    .to_vec()
}

fn decode_waiting_query(cmd: Cmd, data: &[u8]) -> Result<WaitingQuery, WireError> {
    let w: WireWaitingReq = exact(cmd, data)?;
    let field = |field, value: u32| WireError::PayloadField {
        cmd,
        field,
        value: value.into(),
    };
    if w.max.get() as usize > DATA_WAITING_MAX {
        return Err(field("max", w.max.get()));
    }
    if w.pad.get() != 0 {
        return Err(field("pad", w.pad.get()));
    }
    Ok(WaitingQuery {
        after_ino: w.after_ino.get(),
        after_iblock: w.after_iblock.get(),
        max: w.max.get(),
    })
}

fn encode_waiting(cmd: Cmd, ws: &[WaitingBlock]) -> Result<Vec<u8>, EncodeError> {
    if ws.len() > DATA_WAITING_MAX {
        return Err(EncodeError::TooMany {
            cmd,
            nr: ws.len(),
            max: DATA_WAITING_MAX,
        });
    }
    let mut out = WireWaitingHead {
        nr: (ws.len() as u32).into(),
        pad: 0.into(),
    }
    .as_bytes()
    .to_vec();
    for w in ws {
        let e = WireWaiting {
            ino: w.ino.into(),
            iblock: w.iblock.into(),
            ops: w.ops,
            pad: [0; 7],
        };
        out.extend_from_slice(e.as_bytes());
    }
    Ok(out)
}

fn decode_waiting(cmd: Cmd, data: &[u8]) -> Result<Vec<WaitingBlock>, WireError> {
    let field = |field, value: u64| WireError::PayloadField { cmd, field, value };
    let length = |expected| WireError::PayloadLength {
        cmd,
        have: data.len(),
        expected,
    };
    let (head, rest) =
        WireWaitingHead::read_from_prefix(data).map_err(|_| length(WAITING_HEAD_LEN))?;
    let nr = head.nr.get() as usize;
    if nr > DATA_WAITING_MAX {
        return Err(field("nr", nr as u64));
    }
    if head.pad.get() != 0 {
        return Err(field("pad", head.pad.get().into()));
    }
    if rest.len() != nr * WAITING_LEN {
        return Err(length(WAITING_HEAD_LEN + nr * WAITING_LEN));
    }
    rest.chunks_exact(WAITING_LEN)
        .map(|c| {
            let w = WireWaiting::read_from_bytes(c).map_err(|_| length(WAITING_LEN))?;
            if w.ops == 0 || w.ops & !7 != 0 {
                return Err(field("ops", w.ops.into()));
            }
            if w.pad != [0; 7] {
                return Err(field("pad", 1));
            }
            Ok(WaitingBlock {
                ino: w.ino.get(),
                iblock: w.iblock.get(),
                ops: w.ops,
            })
        })
        .collect()
}

fn encode_wait_fail(f: &WaitFail) -> Vec<u8> {
    WireWaitErr {
        ino: f.ino.into(),
        from: f.from.into(),
        to: f.to.into(),
        ops: u32::from(f.ops).into(),
        errno: (f.errno as u32).into(),
    }
    .as_bytes()
    .to_vec()
}

fn decode_wait_fail(cmd: Cmd, data: &[u8]) -> Result<WaitFail, WireError> {
    let w: WireWaitErr = exact(cmd, data)?;
    let (ops, errno) = (w.ops.get(), w.errno.get());
    let field = |field, value: u32| WireError::PayloadField {
        cmd,
        field,
        value: value.into(),
    };
    if ops == 0 || ops & !7 != 0 {
        return Err(field("ops", ops));
    }
    if !(1..4096).contains(&errno) {
        return Err(field("errno", errno));
    }
    Ok(WaitFail {
        ino: w.ino.get(),
        from: w.from.get(),
        to: w.to.get(),
        ops: ops as u8,
        errno: errno as i32,
    })
}

fn decode_omap(cmd: Cmd, data: &[u8]) -> Result<OpenInoMap, WireError> {
    let w: WireOpenInoMap = exact(cmd, data)?;
    Ok(OpenInoMap {
        group: w.group_nr.get(),
        bits: w.bits.map(|b| b.get()),
    })
}

/// The command and payload of a client's request.
pub fn encode_request(req: &Request) -> Result<(Cmd, Vec<u8>), EncodeError> {
    Ok(match req {
        Request::Greeting { .. } => return Err(EncodeError::Greeting),
        Request::AllocInodes { count } => (Cmd::AllocInodes, count.to_le_bytes().to_vec()),
        Request::GetLogTrees => (Cmd::GetLogTrees, Vec::new()),
        Request::CommitLogTrees(lt) => (Cmd::CommitLogTrees, lt.as_bytes().to_vec()),
        Request::GetRoots => (Cmd::GetRoots, Vec::new()),
        Request::Lock(m) => (Cmd::Lock, encode_lock(m)),
        Request::Statfs => (Cmd::Statfs, Vec::new()),
        Request::ResizeDevices { meta, data } => (
            Cmd::ResizeDevices,
            WireResizeDevices {
                new_total_meta_blocks: (*meta).into(),
                new_total_data_blocks: (*data).into(),
            }
            .as_bytes()
            .to_vec(),
        ),
        Request::Farewell => (Cmd::Farewell, Vec::new()),
        Request::OpenInoMap { group } => (Cmd::OpenInoMap, group.to_le_bytes().to_vec()),
        Request::GetLastSeq => (Cmd::GetLastSeq, Vec::new()),
        Request::DataWaiting(q) => (Cmd::DataWaiting, encode_waiting_query(q)),
        Request::DataWaitErr(f) => (Cmd::DataWaitErr, encode_wait_fail(f)),
        Request::WaitersNew(ws) => (Cmd::WaitersNew, encode_waiting(Cmd::WaitersNew, ws)?),
    })
}

/// A client's request, as the server receives it.
pub fn decode_request(cmd: Cmd, data: &[u8]) -> Result<Request, WireError> {
    Ok(match cmd {
        Cmd::AllocInodes => {
            let count: U64 = exact(cmd, data)?;
            Request::AllocInodes { count: count.get() }
        }
        Cmd::GetLogTrees => empty(cmd, data).map(|_| Request::GetLogTrees)?,
        Cmd::CommitLogTrees => Request::CommitLogTrees(decode_log_trees(cmd, data)?),
        Cmd::GetRoots => empty(cmd, data).map(|_| Request::GetRoots)?,
        Cmd::GetLastSeq => empty(cmd, data).map(|_| Request::GetLastSeq)?,
        Cmd::DataWaiting => Request::DataWaiting(decode_waiting_query(cmd, data)?),
        Cmd::DataWaitErr => Request::DataWaitErr(decode_wait_fail(cmd, data)?),
        Cmd::WaitersNew => Request::WaitersNew(decode_waiting(cmd, data)?),
        Cmd::Lock => Request::Lock(decode_lock(data)?),
        Cmd::Statfs => empty(cmd, data).map(|_| Request::Statfs)?,
        Cmd::ResizeDevices => {
            let w: WireResizeDevices = exact(cmd, data)?;
            Request::ResizeDevices {
                meta: w.new_total_meta_blocks.get(),
                data: w.new_total_data_blocks.get(),
            }
        }
        Cmd::Farewell => empty(cmd, data).map(|_| Request::Farewell)?,
        Cmd::OpenInoMap => {
            let group: U64 = exact(cmd, data)?;
            Request::OpenInoMap { group: group.get() }
        }
        Cmd::Greeting | Cmd::SyncLogTrees | Cmd::LockRecover => {
            return Err(WireError::Unexpected {
                cmd,
                what: "request to the server",
            })
        }
    })
}

fn response_name(resp: &Response) -> &'static str {
    match resp {
        Response::Greeting { .. } => "greeting",
        Response::Inodes { .. } => "inodes",
        Response::LogTrees(_) => "log trees",
        Response::Done => "done",
        Response::Roots(_) => "roots",
        Response::Lock(_) => "lock",
        Response::Statfs(_) => "statfs",
        Response::OpenInoMap(_) => "open inode map",
        Response::LastSeq(_) => "last seq",
        Response::DataWaiting(_) => "data waiting",
        Response::Count(_) => "count",
        Response::Error(_) => "error",
    }
}

/// The error code and payload of the server's response to `cmd`.
pub fn encode_response(
    cmd: Cmd,
    resp: &Response,
) -> Result<(Option<ErrCode>, Vec<u8>), EncodeError> {
    let data = match (cmd, resp) {
        (Cmd::Greeting, _) | (_, Response::Greeting { .. }) => return Err(EncodeError::Greeting),
        (_, Response::Error(errno)) if *errno <= 0 => {
            return Err(EncodeError::Errno { errno: *errno })
        }
        (_, Response::Error(errno)) => return Ok((Some(ErrCode::from_errno(*errno)), Vec::new())),
        (Cmd::AllocInodes, Response::Inodes { ino, nr }) => WireInodes {
            ino: (*ino).into(),
            nr: (*nr).into(),
        }
        .as_bytes()
        .to_vec(),
        (Cmd::GetLogTrees | Cmd::CommitLogTrees, Response::LogTrees(lt)) => lt.as_bytes().to_vec(),
        (Cmd::Farewell | Cmd::ResizeDevices | Cmd::WaitersNew, Response::Done) => Vec::new(),
        (Cmd::GetRoots, Response::Roots(r)) => WireRoots {
            fs_root: r.fs_root,
            logs_root: r.logs_root,
            srch_root: r.srch_root,
        }
        .as_bytes()
        .to_vec(),
        (Cmd::Lock, Response::Lock(m)) => encode_lock(m),
        (Cmd::OpenInoMap, Response::OpenInoMap(m)) => encode_omap(m),
        (Cmd::GetLastSeq, Response::LastSeq(seq)) => seq.to_le_bytes().to_vec(),
        (Cmd::DataWaiting, Response::DataWaiting(ws)) => encode_waiting(cmd, ws)?,
        (Cmd::DataWaitErr, Response::Count(n)) => n.to_le_bytes().to_vec(),
        (Cmd::Statfs, Response::Statfs(s)) => WireStatfs {
            total_meta_blocks: s.total_meta_blocks.into(),
            free_meta_blocks: s.free_meta_blocks.into(),
            reserved_meta_blocks: s.reserved_meta_blocks.into(),
            total_data_blocks: s.total_data_blocks.into(),
            free_data_blocks: s.free_data_blocks.into(),
            inode_count: s.inode_count.into(),
            fsid: s.fsid.into(),
        }
        .as_bytes()
        .to_vec(),
        _ => {
            return Err(EncodeError::Mismatch {
                cmd,
                resp: response_name(resp),
            })
        }
    };
    Ok((None, data))
}

/// The server's response to a client's `cmd` request, as the client
/// receives it.
pub fn decode_response(
    cmd: Cmd,
    error: Option<ErrCode>,
    data: &[u8],
) -> Result<Response, WireError> {
    if matches!(cmd, Cmd::Greeting | Cmd::SyncLogTrees | Cmd::LockRecover) {
        return Err(WireError::Unexpected {
            cmd,
            what: "response from the server",
        });
    }
    if let Some(e) = error {
        empty(cmd, data)?;
        return Ok(Response::Error(e.errno()));
    }
    Ok(match cmd {
        Cmd::AllocInodes => {
            let w: WireInodes = exact(cmd, data)?;
            Response::Inodes {
                ino: w.ino.get(),
                nr: w.nr.get(),
            }
        }
        Cmd::GetLogTrees | Cmd::CommitLogTrees => Response::LogTrees(decode_log_trees(cmd, data)?),
        Cmd::Farewell | Cmd::ResizeDevices | Cmd::WaitersNew => {
            empty(cmd, data).map(|_| Response::Done)?
        }
        Cmd::GetRoots => Response::Roots(decode_roots(data)?),
        Cmd::Lock => Response::Lock(decode_lock(data)?),
        Cmd::OpenInoMap => Response::OpenInoMap(Box::new(decode_omap(cmd, data)?)),
        Cmd::GetLastSeq => {
            let seq: U64 = exact(cmd, data)?;
            Response::LastSeq(seq.get())
        }
        Cmd::DataWaiting => Response::DataWaiting(decode_waiting(cmd, data)?),
        Cmd::DataWaitErr => {
            let n: U64 = exact(cmd, data)?;
            Response::Count(n.get())
        }
        Cmd::Statfs => {
            let w: WireStatfs = exact(cmd, data)?;
            Response::Statfs(StatfsInfo {
                total_meta_blocks: w.total_meta_blocks.get(),
                free_meta_blocks: w.free_meta_blocks.get(),
                reserved_meta_blocks: w.reserved_meta_blocks.get(),
                total_data_blocks: w.total_data_blocks.get(),
                free_data_blocks: w.free_data_blocks.get(),
                inode_count: w.inode_count.get(),
                fsid: w.fsid.get(),
            })
        }
        Cmd::Greeting | Cmd::SyncLogTrees | Cmd::LockRecover => unreachable!("refused above"),
    })
}

/// The command and payload of the server's request to a client.
pub fn encode_server_request(req: &ServerRequest) -> (Cmd, Vec<u8>) {
    match req {
        ServerRequest::Invalidate(m) => (Cmd::Lock, encode_lock(m)),
        ServerRequest::SyncLogTrees => (Cmd::SyncLogTrees, Vec::new()),
        ServerRequest::LockRecover { first } => {
            (Cmd::LockRecover, first.to_disk().as_bytes().to_vec())
        }
        ServerRequest::OpenInoMap { group } => (Cmd::OpenInoMap, group.to_le_bytes().to_vec()),
        ServerRequest::DataWaiting(q) => (Cmd::DataWaiting, encode_waiting_query(q)),
        ServerRequest::DataWaitErr(f) => (Cmd::DataWaitErr, encode_wait_fail(f)),
        ServerRequest::WaitersNew(ws) => (
            Cmd::WaitersNew,
            // The server forwards what a client sent, which decoded
            // within the limit.
            encode_waiting(Cmd::WaitersNew, ws).unwrap_or_default(),
        ),
    }
}

/// The server's request, as a client receives it.
pub fn decode_server_request(cmd: Cmd, data: &[u8]) -> Result<ServerRequest, WireError> {
    match cmd {
        Cmd::Lock => Ok(ServerRequest::Invalidate(decode_lock(data)?)),
        Cmd::SyncLogTrees => empty(cmd, data).map(|_| ServerRequest::SyncLogTrees),
        Cmd::LockRecover => Ok(ServerRequest::LockRecover {
            first: decode_key(cmd, data)?,
        }),
        Cmd::OpenInoMap => {
            let group: U64 = exact(cmd, data)?;
            Ok(ServerRequest::OpenInoMap { group: group.get() })
        }
        Cmd::DataWaiting => Ok(ServerRequest::DataWaiting(decode_waiting_query(cmd, data)?)),
        Cmd::DataWaitErr => Ok(ServerRequest::DataWaitErr(decode_wait_fail(cmd, data)?)),
        Cmd::WaitersNew => Ok(ServerRequest::WaitersNew(decode_waiting(cmd, data)?)),
        _ => Err(WireError::Unexpected {
            cmd,
            what: "request to a client",
        }),
    }
}

/// The payload of a client's response to the server's `cmd` request.
pub fn encode_client_response(cmd: Cmd, resp: &ClientResponse) -> Result<Vec<u8>, EncodeError> {
    match (cmd, resp) {
        (Cmd::Lock, ClientResponse::InvalidateDone(m)) => Ok(encode_lock(m)),
        (Cmd::SyncLogTrees | Cmd::WaitersNew, ClientResponse::Done) => Ok(Vec::new()),
        (Cmd::LockRecover, ClientResponse::LockRecover { entries, more }) => {
            encode_recover(entries, *more)
        }
        (Cmd::OpenInoMap, ClientResponse::OpenInoMap(m)) => Ok(encode_omap(m)),
        (Cmd::DataWaiting, ClientResponse::DataWaiting(ws)) => encode_waiting(cmd, ws),
        (Cmd::DataWaitErr, ClientResponse::Count(n)) => Ok(n.to_le_bytes().to_vec()),
        (_, ClientResponse::DataWaiting(_)) => Err(EncodeError::Mismatch {
            cmd,
            resp: "data waiting",
        }),
        (_, ClientResponse::Count(_)) => Err(EncodeError::Mismatch { cmd, resp: "count" }),
        (_, ClientResponse::OpenInoMap(_)) => Err(EncodeError::Mismatch {
            cmd,
            resp: "open inode map",
        }),
        (_, ClientResponse::InvalidateDone(_)) => Err(EncodeError::Mismatch {
            cmd,
            resp: "invalidate done",
        }),
        (_, ClientResponse::Done) => Err(EncodeError::Mismatch { cmd, resp: "done" }),
        (_, ClientResponse::LockRecover { .. }) => Err(EncodeError::Mismatch {
            cmd,
            resp: "lock recover",
        }),
    }
}

/// A client's response to the server's `cmd` request, as the server
/// receives it. Clients answer without errors: [`ClientResponse`] has none.
pub fn decode_client_response(
    cmd: Cmd,
    error: Option<ErrCode>,
    data: &[u8],
) -> Result<ClientResponse, WireError> {
    if error.is_some() {
        return Err(WireError::Unexpected {
            cmd,
            what: "error response from a client",
        });
    }
    match cmd {
        Cmd::Lock => Ok(ClientResponse::InvalidateDone(decode_lock(data)?)),
        Cmd::SyncLogTrees | Cmd::WaitersNew => empty(cmd, data).map(|_| ClientResponse::Done),
        Cmd::LockRecover => decode_recover(data),
        Cmd::OpenInoMap => Ok(ClientResponse::OpenInoMap(Box::new(decode_omap(
            cmd, data,
        )?))),
        Cmd::DataWaiting => Ok(ClientResponse::DataWaiting(decode_waiting(cmd, data)?)),
        Cmd::DataWaitErr => {
            let n: U64 = exact(cmd, data)?;
            Ok(ClientResponse::Count(n.get()))
        }
        _ => Err(WireError::Unexpected {
            cmd,
            what: "response from a client",
        }),
    }
}

#[cfg(test)]
mod tests;
