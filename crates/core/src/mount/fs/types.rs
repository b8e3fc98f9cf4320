//! The values the filesystem's operations take and return: an inode's
//! attributes, attribute changes, what a new node is, an operation in
//! progress, and what a lookup found.
//!
//! They are apart from the operations (`inode`, `dir`, `data`, `xattr`) so
//! that the operations, spread over those modules as methods of `Fs`, name
//! them without importing one another.

use crate::cluster::lock::index_lock_range;
use crate::mount::locks::LockGuard;
use crate::mount::trans::TransHold;
use scoutfs_format::inode::{Inode, S_IFDIR, S_IFLNK, S_IFMT};
use scoutfs_format::Timespec;

/// An inode's number and item.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub ino: u64,
    pub inode: Inode,
}

impl Attr {
    pub fn mode(&self) -> u32 {
        self.inode.mode.get()
    }
    pub fn is_dir(&self) -> bool {
        self.mode() & S_IFMT == S_IFDIR
    }
    pub fn file_type(&self) -> u32 {
        self.mode() & S_IFMT
    }
    pub fn size(&self) -> u64 {
        self.inode.size.get()
    }
    /// 512-byte sectors, for st_blocks.
    pub fn blocks_512(&self) -> u64 {
        self.inode.online_blocks.get() * 8
    }
    /// What a change of a file's data by an unprivileged caller does to its
    /// mode, as on a local filesystem: setuid goes, and setgid where group
    /// execute is set (setgid without it marks mandatory locking).
    pub fn drop_privs(&mut self) {
        let mut m = self.mode() & !libc::S_ISUID;
        if m & libc::S_IXGRP != 0 {
            m &= !libc::S_ISGID;
        }
        self.inode.mode = m.into();
    }
}

/// Attribute changes (chmod, chown, truncate, utimes).
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Timespec>,
    pub mtime: Option<Timespec>,
    pub ctime: Option<Timespec>,
}

/// What a new node is: the arguments of mknod, mkdir, create and symlink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewNode<'a> {
    /// File type and permission bits.
    pub mode: u32,
    /// Bits taken from `mode` unless the parent has a default ACL.
    pub umask: u32,
    /// The device number of a device node.
    pub rdev: u32,
    /// The creator's user and group.
    pub uid: u32,
    pub gid: u32,
    /// A symlink's target.
    pub link: Option<&'a [u8]>,
    /// The creator opens it (a create that returns a file handle): it is
    /// counted open ([`super::Fs::open`]) before anyone else can see it.
    pub open: bool,
}

impl<'a> NewNode<'a> {
    /// A node of `mode` (type and permissions) owned by root, no umask.
    pub fn new(mode: u32) -> NewNode<'a> {
        NewNode {
            mode,
            ..NewNode::default()
        }
    }

    pub fn owner(self, uid: u32, gid: u32) -> NewNode<'a> {
        NewNode { uid, gid, ..self }
    }

    pub fn umask(self, umask: u32) -> NewNode<'a> {
        NewNode { umask, ..self }
    }

    pub fn rdev(self, rdev: u32) -> NewNode<'a> {
        NewNode { rdev, ..self }
    }

    /// Opened by its creator: released with [`super::Fs::release`].
    pub fn opened(self) -> NewNode<'a> {
        NewNode { open: true, ..self }
    }

    /// A symlink to `target`.
    pub fn symlink(target: &'a [u8]) -> NewNode<'a> {
        NewNode {
            mode: S_IFLNK | 0o777,
            link: Some(target),
            ..NewNode::default()
        }
    }
}

/// A changing operation in progress: its transaction hold and the index
/// locks its inode updates need.
pub struct Op<'a> {
    pub hold: TransHold<'a>,
    /// The index locks `Fs::begin` took.
    pub(super) idx: Vec<LockGuard>,
}

impl Op<'_> {
    pub fn seq(&self) -> u64 {
        self.hold.seq()
    }

    pub(super) fn idx_guard(&self, ity: u8, seq: u64) -> &LockGuard {
        let (start, _) = index_lock_range(ity, seq);
        // begin() locked the groups of every seq this op may touch.
        self.idx
            .iter()
            .find(|g| g.start() == start)
            .unwrap_or_else(|| panic!("index lock for seq {seq} not taken"))
    }
}

/// A found entry: its header (ino, hash, pos, type).
#[derive(Clone, Copy, Debug)]
pub(super) struct FoundEntry {
    pub(super) ino: u64,
    pub(super) hash: u64,
    pub(super) pos: u64,
    pub(super) dt: u8,
}

/// A found xattr: its id and its whole value.
pub(super) struct FoundXattr {
    pub(super) hash: u64,
    pub(super) id: u64,
    pub(super) parts: usize,
    pub(super) value: Vec<u8>,
}
