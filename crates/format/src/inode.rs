//! The inode item: the value of an `(FS zone, ino, INODE type)` key.
//!
//! One fixed 168-byte value per inode. It has the layout the original calls
//! version 2 (with `proj` at the end); our format version 1 has only this
//! layout, so there is no 160-byte variant to accept.
//!
//! Fields and their rules:
//! - `meta_seq` is the transaction seq of the last change to the inode and
//!   `data_seq` that of the last change to its contents or size; both are
//!   indexed by `INODE_INDEX` items so archivers can find what changed.
//! - `data_version` counts changes of contents or size (not staging or
//!   release), so an archiver can tell whether what it copied is current.
//! - `online_blocks`/`offline_blocks` count 4 KiB data blocks present and
//!   released.
//! - `next_readdir_pos` (directories) and `next_xattr_id` hand out readdir
//!   positions and xattr ids that are never reused.
//! - `mode` holds the POSIX file type and permission bits; the type is
//!   always one of the seven `S_IF*` types.
//! - `flags` holds only `INO_FLAG_*` bits.
//!
//! Decoding checks the exact length, the flags, the mode's type, the link
//! count limit and the four timespecs. It cannot check the seqs or counts
//! against anything else; that is `scoutfs check`'s job.

use crate::block::{read_prefix, Timespec};
use crate::error::{DecodeError, Result};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A truncate is in progress and will be finished later.
pub const INO_FLAG_TRUNCATE: u32 = 1;
/// The inode is under retention: it cannot be changed or removed.
pub const INO_FLAG_RETENTION: u32 = 2;
/// Every flag an inode may carry.
pub const INO_FLAGS_KNOWN: u32 = INO_FLAG_TRUNCATE | INO_FLAG_RETENTION;

/// The greatest link count (the original's S32_MAX).
pub const LINK_MAX: u32 = i32::MAX as u32;

/// POSIX file type bits of `mode` and the seven types.
pub const S_IFMT: u32 = 0o170_000;
pub const S_IFSOCK: u32 = 0o140_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFBLK: u32 = 0o060_000;
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFCHR: u32 = 0o020_000;
pub const S_IFIFO: u32 = 0o010_000;
/// Every bit `mode` may have: the type and the 12 permission bits.
pub const MODE_BITS_KNOWN: u32 = S_IFMT | 0o7777;

/// Whether `mode` names one of the seven file types.
pub const fn mode_type_valid(mode: u32) -> bool {
    matches!(
        mode & S_IFMT,
        S_IFSOCK | S_IFLNK | S_IFREG | S_IFBLK | S_IFDIR | S_IFCHR | S_IFIFO
    )
}

/// The inode item value, 168 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct Inode {
    /// File size in bytes.
    pub size: U64,
    /// Seq of the last transaction that changed the inode.
    pub meta_seq: U64,
    /// Seq of the last transaction that changed contents or size.
    pub data_seq: U64,
    /// Incremented by every change that could alter contents or size.
    pub data_version: U64,
    /// 4 KiB data blocks that are present.
    pub online_blocks: U64,
    /// 4 KiB data blocks that were released and must be staged to be read.
    pub offline_blocks: U64,
    /// The next readdir position a new entry in this directory gets.
    pub next_readdir_pos: U64,
    /// The next xattr id an xattr of this inode gets.
    pub next_xattr_id: U64,
    /// The change counter (i_version).
    pub version: U64,
    pub nlink: U32,
    pub uid: U32,
    pub gid: U32,
    pub mode: U32,
    pub rdev: U32,
    /// `INO_FLAG_*` bits.
    pub flags: U32,
    pub atime: Timespec,
    pub ctime: Timespec,
    pub mtime: Timespec,
    pub crtime: Timespec,
    /// Project id, for quotas.
    pub proj: U64,
}

pub const INODE_SIZE: usize = core::mem::size_of::<Inode>();

impl Inode {
    /// Decodes an inode item value, which must be exactly 168 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "inode";
        if bytes.len() != INODE_SIZE {
            return Err(DecodeError::Length {
                what,
                have: bytes.len(),
                expected: "168".into(),
            });
        }
        let ino: Inode = read_prefix(what, bytes)?;
        ino.validate()?;
        Ok(ino)
    }

    pub fn validate(&self) -> Result<()> {
        let what = "inode";
        let flags = self.flags.get();
        if flags & !INO_FLAGS_KNOWN != 0 {
            return Err(DecodeError::Field {
                what,
                field: "flags",
                value: flags as u64,
            });
        }
        let mode = self.mode.get();
        if mode & !MODE_BITS_KNOWN != 0 || !mode_type_valid(mode) {
            return Err(DecodeError::Field {
                what,
                field: "mode",
                value: mode as u64,
            });
        }
        if self.nlink.get() > LINK_MAX {
            let value = self.nlink.get() as u64;
            return Err(DecodeError::Field {
                what,
                field: "nlink",
                value,
            });
        }
        for t in [&self.atime, &self.ctime, &self.mtime, &self.crtime] {
            t.validate()?;
        }
        Ok(())
    }

    pub fn is_dir(&self) -> bool {
        self.mode.get() & S_IFMT == S_IFDIR
    }

    pub fn is_reg(&self) -> bool {
        self.mode.get() & S_IFMT == S_IFREG
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Inode {
        let t = Timespec::new(1_700_000_000, 999_999_999);
        Inode {
            size: 12345.into(),
            meta_seq: 7.into(),
            data_seq: 6.into(),
            data_version: 3.into(),
            online_blocks: 4.into(),
            next_readdir_pos: 2.into(),
            next_xattr_id: 9.into(),
            nlink: 1.into(),
            uid: 1000.into(),
            gid: 100.into(),
            mode: (S_IFREG | 0o644).into(),
            flags: INO_FLAG_RETENTION.into(),
            atime: t,
            ctime: t,
            mtime: t,
            crtime: t,
            proj: 42.into(),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip() {
        let ino = sample();
        assert_eq!(Inode::decode(ino.as_bytes()), Ok(ino));
        assert!(ino.is_reg() && !ino.is_dir());
    }

    #[test]
    fn field_offsets_match_the_spec() {
        assert_eq!(core::mem::offset_of!(Inode, nlink), 72);
        assert_eq!(core::mem::offset_of!(Inode, flags), 92);
        assert_eq!(core::mem::offset_of!(Inode, atime), 96);
        assert_eq!(core::mem::offset_of!(Inode, crtime), 144);
        assert_eq!(core::mem::offset_of!(Inode, proj), 160);
    }

    #[test]
    fn refuses_wrong_length() {
        let bytes = sample().as_bytes().to_vec();
        assert!(
            Inode::decode(&bytes[..160]).is_err(),
            "no 160-byte v1 inodes"
        );
        let mut long = bytes.clone();
        long.push(0);
        assert!(Inode::decode(&long).is_err());
        assert!(Inode::decode(&[]).is_err());
    }

    #[test]
    fn refuses_unknown_flags_mode_and_bad_times() {
        let mut ino = sample();
        ino.flags = 4.into();
        assert!(Inode::decode(ino.as_bytes()).is_err());

        let mut ino = sample();
        ino.mode = 0o644.into();
        assert!(
            Inode::decode(ino.as_bytes()).is_err(),
            "mode without a type"
        );
        ino.mode = (S_IFDIR | 0o1_000_000).into();
        assert!(
            Inode::decode(ino.as_bytes()).is_err(),
            "mode bits beyond the type"
        );

        let mut ino = sample();
        ino.nlink = (LINK_MAX + 1).into();
        assert!(Inode::decode(ino.as_bytes()).is_err());

        let mut ino = sample();
        ino.mtime.nsec = 1_000_000_000.into();
        assert!(Inode::decode(ino.as_bytes()).is_err());
        let mut ino = sample();
        ino.crtime.pad[3] = 1;
        assert!(Inode::decode(ino.as_bytes()).is_err());
    }
}
