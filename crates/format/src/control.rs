//! The control protocol between a mount and the programs that drive it
//! (the `scoutfs` commands, archive agents): frame headers and payloads as
//! they are on the socket, their sizes fixed at compile time. The codec
//! and the serving are the core's (`mount::control`); the specification is
//! `docs/control.md`.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The first four bytes of every frame: "SCTL" (scoutfs control).
pub const CONTROL_MAGIC: u32 = u32::from_le_bytes(*b"SCTL");
/// The protocol version this build speaks.
pub const CONTROL_VERSION: u16 = 1;
/// Bytes of a frame header, both ways.
pub const CONTROL_HEADER_LEN: usize = 32;
/// The most payload bytes of a request.
pub const CONTROL_REQUEST_MAX: usize = 64 * 1024;
/// The most payload bytes of one response frame (a long answer comes in
/// several frames, each flagged [`CONTROL_FLAG_MORE`] but the last).
pub const CONTROL_RESPONSE_MAX: usize = 1024 * 1024;
/// The most file descriptors one request may carry.
pub const CONTROL_FDS_MAX: usize = 4;
/// Response flag: more frames answer the same request.
pub const CONTROL_FLAG_MORE: u32 = 1;

/// A frame header, the same both ways. A request has `status` 0 and says
/// in `nfds` how many descriptors came with its first byte; a response has
/// `nfds` 0 and `status` 0 or the errno of the failure (then the payload
/// is a UTF-8 message).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlHeader {
    pub magic: U32,
    pub version: U16,
    pub op: U16,
    pub id: U64,
    pub len: U32,
    pub status: U32,
    pub flags: U32,
    pub nfds: u8,
    pub pad: [u8; 3],
}

/// Operations, numbered as the original's ioctls were.
pub mod op {
    /// Entries of an inode index: [`super::ControlWalk`] → frames of a
    /// [`super::ControlWalkHead`] and its [`super::ControlWalkEntry`]s.
    pub const WALK_INODES: u16 = 1;
    /// The paths of an inode from the root, through its entries from a
    /// position on: [`super::ControlInoEntries`] → frames of
    /// [`super::ControlEntry`] records (the path as the name).
    pub const INO_PATH: u16 = 2;
    /// Frees a range of a file's blocks, leaving it offline: one
    /// descriptor (opened for writing) and a [`super::ControlRange`] →
    /// nothing.
    pub const RELEASE: u16 = 3;
    /// Writes archived bytes into a file's offline range: two descriptors
    /// (the file, opened for writing; the archive copy, for reading) and a
    /// [`super::ControlRange`] → le64 bytes staged.
    pub const STAGE: u16 = 4;
    /// A file's seqs, data version, block counts and crtime: one
    /// descriptor → [`super::ControlStatMore`].
    pub const STAT_MORE: u16 = 5;
    /// The operations waiting for offline data: [`super::ControlWaitingReq`]
    /// → frames of [`super::ControlWaiting`].
    pub const DATA_WAITING: u16 = 6;
    /// Filesystem ids and totals; no payload → [`super::ControlStatfs`].
    pub const STATFS_MORE: u16 = 10;
    /// Fails waiting operations with an errno (administrators only):
    /// [`super::ControlWaitErr`] → le64 how many.
    pub const DATA_WAIT_ERR: u16 = 11;
    /// Moves extents between two files: two descriptors (from, to; both
    /// opened for writing) and a [`super::ControlMoveBlocks`] → nothing.
    pub const MOVE_BLOCKS: u16 = 13;
    /// Every extended attribute of a file: one descriptor →
    /// [`super::ControlAttrX`].
    pub const GET_ATTR_X: u16 = 18;
    /// Changes extended attributes of a file: one descriptor and a
    /// [`super::ControlAttrX`] → nothing.
    pub const SET_ATTR_X: u16 = 19;
    /// Turns a file's offline range into holes: one descriptor (opened for
    /// writing) and a [`super::ControlRange`] → nothing.
    pub const PUNCH_OFFLINE: u16 = 24;
    /// Grow the devices (administrators only): [`super::ControlResize`] →
    /// nothing.
    pub const RESIZE_DEVICES: u16 = 14;
    /// The inode numbers in use in an inode's group of 1,024
    /// (administrators only): le64 ino → le64 inode numbers.
    pub const GET_ALLOCATED_INOS: u16 = 16;
    /// The directory entries that link to an inode, from a position on:
    /// [`super::ControlInoEntries`] → frames of [`super::ControlEntry`]
    /// records.
    pub const GET_REFERRING_ENTRIES: u16 = 17;
}

/// The STATFS_MORE answer, 72 bytes. Answers may grow at the end in
/// later versions; a reader ignores bytes past the fields it knows.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlStatfs {
    pub fsid: U64,
    pub rid: U64,
    pub total_meta_blocks: U64,
    pub free_meta_blocks: U64,
    pub reserved_meta_blocks: U64,
    pub total_data_blocks: U64,
    pub free_data_blocks: U64,
    pub inode_count: U64,
    /// Every transaction at or below this seq is complete on every mount
    /// (the walk clamp): a meta_seq or data_seq at or below it is durable.
    pub committed_seq: U64,
}

/// The RESIZE_DEVICES request, 16 bytes: new sizes in 64 KiB metadata and
/// 4 KiB data blocks; 0 leaves a device as it is.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlResize {
    pub meta_blocks: U64,
    pub data_blocks: U64,
}

/// Which inode index a walk reads.
pub const WALK_INDEX_META_SEQ: u8 = 0;
pub const WALK_INDEX_DATA_SEQ: u8 = 1;

/// The WALK_INODES request, 40 bytes: entries from `first` to `last`
/// (both included, in (seq, ino) order) of `index`, at most `max_entries`
/// of them (0: no limit).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlWalk {
    pub first_seq: U64,
    pub first_ino: U64,
    pub last_seq: U64,
    pub last_ino: U64,
    pub max_entries: U32,
    pub index: u8,
    pub pad: [u8; 3],
}

/// The start of every WALK_INODES answer frame, 16 bytes, followed by
/// `nr` entries.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlWalkHead {
    /// The seq the walk was clamped to.
    pub last_seq: U64,
    pub nr: U32,
    pub pad: U32,
}

/// One index entry, 16 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlWalkEntry {
    pub seq: U64,
    pub ino: U64,
}

/// The STAT_MORE answer, 64 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlStatMore {
    pub meta_seq: U64,
    pub data_seq: U64,
    pub data_version: U64,
    pub online_blocks: U64,
    pub offline_blocks: U64,
    pub crtime_sec: U64,
    pub crtime_nsec: U32,
    pub pad: U32,
    pub size: U64,
}

/// `ControlAttrX::mask` bits, the original's.
pub mod ax {
    pub const META_SEQ: u64 = 1 << 0;
    pub const DATA_SEQ: u64 = 1 << 1;
    pub const DATA_VERSION: u64 = 1 << 2;
    pub const ONLINE_BLOCKS: u64 = 1 << 3;
    pub const OFFLINE_BLOCKS: u64 = 1 << 4;
    pub const CTIME: u64 = 1 << 5;
    pub const CRTIME: u64 = 1 << 6;
    pub const SIZE: u64 = 1 << 7;
    pub const RETENTION: u64 = 1 << 8;
    pub const PROJECT_ID: u64 = 1 << 9;
    /// `flags`: with SIZE, the whole size is one offline extent.
    pub const F_SIZE_OFFLINE: u64 = 1;
    /// `bits`: retention is set.
    pub const B_RETENTION: u64 = 1;
}

/// GET_ATTR_X's answer and SET_ATTR_X's request, 104 bytes. Times are
/// seconds (two's complement) and nanoseconds.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlAttrX {
    pub mask: U64,
    pub flags: U64,
    pub meta_seq: U64,
    pub data_seq: U64,
    pub data_version: U64,
    pub online_blocks: U64,
    pub offline_blocks: U64,
    pub ctime_sec: U64,
    pub crtime_sec: U64,
    pub ctime_nsec: U32,
    pub crtime_nsec: U32,
    pub size: U64,
    pub bits: U64,
    pub project_id: U64,
}

/// A range of a file and the data_version it must have (RELEASE, STAGE,
/// PUNCH_OFFLINE), 32 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlRange {
    pub offset: U64,
    pub length: U64,
    pub data_version: U64,
    pub flags: U64,
}

/// MOVE_BLOCKS flag: the moved blocks stage the destination's offline
/// range.
pub const MOVE_BLOCKS_STAGE: u64 = 1;

/// The MOVE_BLOCKS request, 40 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlMoveBlocks {
    pub from_off: U64,
    pub length: U64,
    pub to_off: U64,
    pub data_version: U64,
    pub flags: U64,
}

/// DATA_WAITING flag: every mount's waiters, not only this mount's.
pub const DATA_WAITING_ALL_MOUNTS: u32 = 1;
/// DATA_WAITING flag: after the waiters there are, the answer goes on with
/// each block operations begin to wait for, as they do, until the
/// connection closes (frames flagged MORE; an empty one every few seconds
/// while nothing comes).
pub const DATA_WAITING_FOLLOW: u32 = 2;

/// The DATA_WAITING request, 24 bytes: waiters after (`after_ino`,
/// `after_iblock`), at most `max` (0: no limit).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlWaitingReq {
    pub after_ino: U64,
    pub after_iblock: U64,
    pub max: U32,
    pub flags: U32,
}

/// One waited-on block, 24 bytes: the `DWO_*` ops (read 1, write 2,
/// change size 4) of the operations waiting for it.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlWaiting {
    pub ino: U64,
    pub iblock: U64,
    pub ops: u8,
    pub pad: [u8; 7],
}

/// DATA_WAIT_ERR flag: the waiters of every mount, not only this mount's.
pub const DATA_WAIT_ERR_ALL_MOUNTS: u64 = 1;

/// The DATA_WAIT_ERR request, 48 bytes: the waiters of `ino` on bytes
/// `offset..offset+count` whose op is in `ops` fail with `errno`.
/// `data_version` is not used (as in the original since v1.26).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlWaitErr {
    pub ino: U64,
    pub data_version: U64,
    pub offset: U64,
    pub count: U64,
    pub ops: U32,
    pub errno: U32,
    pub flags: U64,
}

pub const CONTROL_STATFS_LEN: usize = 72;
pub const CONTROL_RANGE_LEN: usize = 32;
/// The INO_PATH and GET_REFERRING_ENTRIES request, 32 bytes: the entries
/// of `ino` from (`dir_ino`, `dir_pos`) on, in that order, at most `max`
/// (0: every one).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlInoEntries {
    pub ino: U64,
    pub dir_ino: U64,
    pub dir_pos: U64,
    pub max: U32,
    pub pad: U32,
}

/// The head of one record of an INO_PATH or GET_REFERRING_ENTRIES answer,
/// 32 bytes: an entry of directory `dir_ino` at readdir position
/// `dir_pos` links to `ino`, of type `dt`. `name_len` bytes follow (the
/// entry's name, or for INO_PATH the whole path from the root), then
/// zeros to the next multiple of 8.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlEntry {
    pub dir_ino: U64,
    pub dir_pos: U64,
    pub ino: U64,
    pub name_len: U16,
    pub dt: u8,
    pub pad: [u8; 5],
}

pub const CONTROL_INO_ENTRIES_LEN: usize = 32;
pub const CONTROL_ENTRY_LEN: usize = 32;
pub const CONTROL_MOVE_BLOCKS_LEN: usize = 40;
pub const CONTROL_WAITING_REQ_LEN: usize = 24;
pub const CONTROL_WAITING_LEN: usize = 24;
pub const CONTROL_WAIT_ERR_LEN: usize = 48;
pub const CONTROL_RESIZE_LEN: usize = 16;
pub const CONTROL_WALK_LEN: usize = 40;
pub const CONTROL_WALK_HEAD_LEN: usize = 16;
pub const CONTROL_WALK_ENTRY_LEN: usize = 16;
pub const CONTROL_STAT_MORE_LEN: usize = 64;
pub const CONTROL_ATTR_X_LEN: usize = 104;

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<ControlHeader>() == CONTROL_HEADER_LEN);
    assert!(size_of::<ControlStatfs>() == CONTROL_STATFS_LEN);
    assert!(size_of::<ControlResize>() == CONTROL_RESIZE_LEN);
    assert!(size_of::<ControlWalk>() == CONTROL_WALK_LEN);
    assert!(size_of::<ControlRange>() == CONTROL_RANGE_LEN);
    assert!(size_of::<ControlMoveBlocks>() == CONTROL_MOVE_BLOCKS_LEN);
    assert!(size_of::<ControlWaitingReq>() == CONTROL_WAITING_REQ_LEN);
    assert!(size_of::<ControlWaiting>() == CONTROL_WAITING_LEN);
    assert!(size_of::<ControlWaitErr>() == CONTROL_WAIT_ERR_LEN);
    assert!(size_of::<ControlWalkHead>() == CONTROL_WALK_HEAD_LEN);
    assert!(size_of::<ControlWalkEntry>() == CONTROL_WALK_ENTRY_LEN);
    assert!(size_of::<ControlStatMore>() == CONTROL_STAT_MORE_LEN);
    assert!(size_of::<ControlAttrX>() == CONTROL_ATTR_X_LEN);
    assert!(size_of::<ControlInoEntries>() == CONTROL_INO_ENTRIES_LEN);
    assert!(size_of::<ControlEntry>() == CONTROL_ENTRY_LEN);
    // len is a le32; nfds a u8.
    assert!(CONTROL_RESPONSE_MAX <= u32::MAX as usize);
    assert!(CONTROL_FDS_MAX <= u8::MAX as usize);
};
