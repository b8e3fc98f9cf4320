//! The wire format of the messages between mounts and the server: frame
//! headers and payloads as they are on the wire, their sizes fixed at
//! compile time. What the fields mean, and the codec from messages to
//! these bytes, are the core's (`cluster::net::wire`); the specification is
//! `docs/wire.md`.

use crate::consts::MAC_LEN;
use crate::key::DiskKey;
use crate::log_trees::LogTrees;
use crate::BtreeRoot;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Entries in one LOCK_RECOVER answer. 1024 entries of 48 bytes keep a
/// payload well under [`MAX_FRAME_DATA`] (checked below at compile time)
/// while a mount with the default 10,000 idle locks reports in ten round
/// trips.
pub const RECOVER_ENTRIES_MAX: usize = 1024;

/// The first four bytes of every frame: "SCNF" (scoutfs net frame).
pub const WIRE_MAGIC: u32 = u32::from_le_bytes(*b"SCNF");
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 40;
/// The most payload bytes one frame may carry. Large enough for batches
/// (lock recovery, open inode maps), small enough that a reader may buffer a
/// whole frame.
pub const MAX_FRAME_DATA: usize = 64 * 1024;

/// `Greeting::flags`: the mount is unmounting and resends its farewell.
pub const GREETING_FLAG_FAREWELL: u64 = 1;
/// `Greeting::flags`: the mount is a quorum member.
pub const GREETING_FLAG_QUORUM: u64 = 2;
/// Every greeting flag; other bits are invalid.
pub const GREETING_FLAGS_KNOWN: u64 = GREETING_FLAG_FAREWELL | GREETING_FLAG_QUORUM;

/// A frame header as it is on the wire.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct RawHeader {
    pub magic: U32,
    pub crc: U32,
    pub seq: U64,
    pub recv_seq: U64,
    pub id: U64,
    pub data_len: U32,
    pub kind: u8,
    pub cmd: u8,
    pub error: u8,
    pub pad: u8,
}

/// The LOCK payload in both directions, 48 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireLock {
    pub key: DiskKey,
    pub write_seq: U64,
    pub old_mode: u8,
    pub new_mode: u8,
    pub pad: [u8; 6],
}

/// The head of a LOCK_RECOVER answer, 8 bytes; `nr` entries follow.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireRecoverHead {
    pub nr: U32,
    pub flags: u8,
    pub pad: [u8; 3],
}

/// One entry of a LOCK_RECOVER answer, 48 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireRecoverEntry {
    pub key: DiskKey,
    pub write_seq: U64,
    pub mode: u8,
    pub pad: [u8; 7],
}

/// `WireRecoverHead::flags`: more entries follow; ask again from after the
/// last key.
pub const RECOVER_FLAG_MORE: u8 = 1;

/// The ALLOC_INODES response, 16 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireInodes {
    pub ino: U64,
    pub nr: U64,
}

/// The GET_ROOTS response, 72 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireRoots {
    pub fs_root: BtreeRoot,
    pub logs_root: BtreeRoot,
    pub srch_root: BtreeRoot,
}

/// The STATFS response, 48 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireStatfs {
    pub total_meta_blocks: U64,
    pub free_meta_blocks: U64,
    pub reserved_meta_blocks: U64,
    pub total_data_blocks: U64,
    pub free_data_blocks: U64,
    pub inode_count: U64,
    pub fsid: U64,
}

/// The RESIZE_DEVICES request, 16 bytes: the devices' new sizes in their
/// blocks (64 KiB metadata, 4 KiB data); 0 leaves a device as it is.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireResizeDevices {
    pub new_total_meta_blocks: U64,
    pub new_total_data_blocks: U64,
}

/// Inodes per open-inode map group: a group's map is one bit per inode
/// (the inode lock groups' size).
pub const OPEN_INO_MAP_GROUP_NR: u64 = crate::consts::LOCK_INODE_GROUP_NR;

/// The OPEN_INO_MAP answer (both ways), 136 bytes: which inodes of a group
/// are open, bit `ino % 1024` of `bits[(ino % 1024) / 64]`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireOpenInoMap {
    pub group_nr: U64,
    pub bits: [U64; 16],
}

/// The most waiting blocks one DATA_WAITING answer carries.
pub const DATA_WAITING_MAX: usize = 2048;

/// The DATA_WAITING request (both ways), 24 bytes: the blocks waited for
/// after (`after_ino`, `after_iblock`), at most `max`
/// ([`DATA_WAITING_MAX`] at most).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireWaitingReq {
    pub after_ino: U64,
    pub after_iblock: U64,
    pub max: U32,
    pub pad: U32,
}

/// The head of a DATA_WAITING answer, 8 bytes, followed by `nr` entries.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireWaitingHead {
    pub nr: U32,
    pub pad: U32,
}

/// A block operations wait for, 24 bytes: `ops` has READ 1, WRITE 2,
/// CHANGE_SIZE 4.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireWaiting {
    pub ino: U64,
    pub iblock: U64,
    pub ops: u8,
    pub pad: [u8; 7],
}

/// The DATA_WAIT_ERR request (both ways), 32 bytes: the operations
/// waiting on blocks `from..to` of `ino` with an op in `ops` fail with
/// `errno`. The answer is a le64 count.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireWaitErr {
    pub ino: U64,
    pub from: U64,
    pub to: U64,
    pub ops: U32,
    pub errno: U32,
}

/// The GREETING payload, 56 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct WireGreeting {
    pub fsid: U64,
    pub fmt_vers: U64,
    pub server_term: U64,
    pub rid: U64,
    pub flags: U64,
    /// The cluster key's code of the greeting id (the frame's `id`) and
    /// the 40 bytes above (see `auth`).
    pub mac: [u8; MAC_LEN],
}

/// The bytes of a greeting its code covers.
pub const GREETING_SIGNED_LEN: usize = 40;

/// Payload sizes, fixed here so a layout change fails the build.
pub const LOCK_LEN: usize = 48;
pub const INODES_LEN: usize = 16;
pub const ROOTS_LEN: usize = 72;
pub const STATFS_LEN: usize = 56;
pub const RESIZE_DEVICES_LEN: usize = 16;
pub const GREETING_LEN: usize = 56;
pub const OPEN_INO_MAP_LEN: usize = 136;
pub const WAITING_REQ_LEN: usize = 24;
pub const WAITING_HEAD_LEN: usize = 8;
pub const WAITING_LEN: usize = 24;
pub const WAIT_ERR_LEN: usize = 32;
pub const COUNT_LEN: usize = 8;
pub const LOG_TREES_LEN: usize = 472;
pub const KEY_LEN: usize = 32;
pub const RECOVER_HEAD_LEN: usize = 8;
pub const RECOVER_ENTRY_LEN: usize = 48;
/// The largest LOCK_RECOVER answer.
pub const RECOVER_MAX_LEN: usize = RECOVER_HEAD_LEN + RECOVER_ENTRIES_MAX * RECOVER_ENTRY_LEN;

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<RawHeader>() == HEADER_LEN);
    assert!(size_of::<WireLock>() == LOCK_LEN);
    assert!(size_of::<WireWaitingReq>() == WAITING_REQ_LEN);
    assert!(size_of::<WireWaitingHead>() == WAITING_HEAD_LEN);
    assert!(size_of::<WireWaiting>() == WAITING_LEN);
    assert!(size_of::<WireWaitErr>() == WAIT_ERR_LEN);
    assert!(WAITING_HEAD_LEN + DATA_WAITING_MAX * WAITING_LEN <= MAX_FRAME_DATA);
    assert!(size_of::<WireInodes>() == INODES_LEN);
    assert!(size_of::<WireRoots>() == ROOTS_LEN);
    assert!(size_of::<WireStatfs>() == STATFS_LEN);
    assert!(size_of::<WireResizeDevices>() == RESIZE_DEVICES_LEN);
    assert!(size_of::<WireGreeting>() == GREETING_LEN);
    assert!(size_of::<WireOpenInoMap>() == OPEN_INO_MAP_LEN);
    assert!(OPEN_INO_MAP_GROUP_NR == 16 * 64);
    assert!(size_of::<LogTrees>() == LOG_TREES_LEN);
    assert!(size_of::<DiskKey>() == KEY_LEN);
    assert!(size_of::<WireRecoverHead>() == RECOVER_HEAD_LEN);
    assert!(size_of::<WireRecoverEntry>() == RECOVER_ENTRY_LEN);
    // The largest payloads fit a frame, the recovery batch with room to
    // grow.
    assert!(LOG_TREES_LEN <= MAX_FRAME_DATA);
    assert!(RECOVER_MAX_LEN <= MAX_FRAME_DATA * 4 / 5);
    // data_len is a le32.
    assert!(MAX_FRAME_DATA <= u32::MAX as usize);
};
