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
    /// Filesystem ids and totals; no payload → [`super::ControlStatfs`].
    pub const STATFS_MORE: u16 = 10;
    /// Grow the devices (administrators only): [`super::ControlResize`] →
    /// nothing.
    pub const RESIZE_DEVICES: u16 = 14;
}

/// The STATFS_MORE answer, 64 bytes. Answers may grow at the end in
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
}

/// The RESIZE_DEVICES request, 16 bytes: new sizes in 64 KiB metadata and
/// 4 KiB data blocks; 0 leaves a device as it is.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ControlResize {
    pub meta_blocks: U64,
    pub data_blocks: U64,
}

pub const CONTROL_STATFS_LEN: usize = 64;
pub const CONTROL_RESIZE_LEN: usize = 16;

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<ControlHeader>() == CONTROL_HEADER_LEN);
    assert!(size_of::<ControlStatfs>() == CONTROL_STATFS_LEN);
    assert!(size_of::<ControlResize>() == CONTROL_RESIZE_LEN);
    // len is a le32; nfds a u8.
    assert!(CONTROL_RESPONSE_MAX <= u32::MAX as usize);
    assert!(CONTROL_FDS_MAX <= u8::MAX as usize);
};
