//! What archive agents use: the extended attributes of an inode (the
//! seqs, data_version, block counts, crtime, retention and project id),
//! restoring a new file's attributes, and walking the meta_seq/data_seq
//! index of changed inodes.
//!
//! Retention: a regular file under retention (`INO_FLAG_RETENTION`, set
//! and cleared by administrators through [`Fs::set_attr_x`]) refuses
//! every change with EPERM, as an immutable file does: writes, truncates,
//! attribute changes, new links, unlinking, renaming it or over it, and
//! its `user.` xattrs. What stays allowed: xattrs of other namespaces, and
//! a `set_attr_x` that clears retention (and may change other attributes
//! in the same call).
//!
//! Walking: the index holds an item (seq, ino) for each inode's meta_seq
//! and for each non-directory's data_seq. A walk returns them in (seq,
//! ino) order up to the last seq whose transactions are complete on every
//! mount ([`Fs::last_seq`]): a seq at or below it will never gain an
//! inode, so an agent that saves where it stopped and walks again from
//! there misses nothing, and never sees a seq go backwards. Each group of
//! index seqs is read under a READ lock (other mounts commit what they
//! changed in it first), and groups with no items are skipped by a hint
//! from the committed trees.

use super::data::BLOCK;
use super::inode::{now, seqs_of};
use super::types::Attr;
use super::{check_retention, Fs, FsResult, EINVAL, EPERM};
use crate::cluster::lock::{index_lock_range, LockMode};
use scoutfs_format::data::SEF_OFFLINE;
use scoutfs_format::inode::INO_FLAG_RETENTION;
use scoutfs_format::key::{ty, zone};
use scoutfs_format::{Key, Timespec};

/// `AttrX::mask` bits: which fields a get fills in or a set changes. The
/// original's numbering.
pub const AX_META_SEQ: u64 = 1 << 0;
pub const AX_DATA_SEQ: u64 = 1 << 1;
pub const AX_DATA_VERSION: u64 = 1 << 2;
pub const AX_ONLINE_BLOCKS: u64 = 1 << 3;
pub const AX_OFFLINE_BLOCKS: u64 = 1 << 4;
pub const AX_CTIME: u64 = 1 << 5;
pub const AX_CRTIME: u64 = 1 << 6;
pub const AX_SIZE: u64 = 1 << 7;
pub const AX_RETENTION: u64 = 1 << 8;
pub const AX_PROJECT_ID: u64 = 1 << 9;
/// Every field.
pub const AX_ALL: u64 = (1 << 10) - 1;
/// The fields a set may change; the seqs and block counts are the
/// filesystem's own.
pub const AX_SETTABLE: u64 =
    AX_DATA_VERSION | AX_CTIME | AX_CRTIME | AX_SIZE | AX_RETENTION | AX_PROJECT_ID;

/// `AttrX::flags`: with `AX_SIZE`, the whole new size is one offline
/// extent (a restored file whose data is in the archive).
pub const AX_F_SIZE_OFFLINE: u64 = 1;
/// `AttrX::bits`: retention is set.
pub const AX_B_RETENTION: u64 = 1;

/// An inode's extended attributes (the original's `inode_attr_x`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttrX {
    pub mask: u64,
    pub flags: u64,
    pub meta_seq: u64,
    pub data_seq: u64,
    pub data_version: u64,
    pub online_blocks: u64,
    pub offline_blocks: u64,
    pub ctime: Timespec,
    pub crtime: Timespec,
    pub size: u64,
    pub bits: u64,
    pub project_id: u64,
}

/// Who asks for a change: the owner of a file, or an administrator
/// (root, or CAP_SYS_ADMIN), may change what the original let them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub admin: bool,
}

/// One of the two inode indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqIndex {
    /// Every inode, by the seq of its last change.
    MetaSeq,
    /// Every file that is not a directory, by the seq of its last change
    /// of contents or size.
    DataSeq,
}

impl SeqIndex {
    fn ty(self) -> u8 {
        match self {
            SeqIndex::MetaSeq => ty::INODE_INDEX_META_SEQ,
            SeqIndex::DataSeq => ty::INODE_INDEX_DATA_SEQ,
        }
    }
}

/// An index entry: an inode and the seq it is indexed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WalkEntry {
    pub seq: u64,
    pub ino: u64,
}

/// What one call of [`Fs::walk_inodes`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    pub entries: Vec<WalkEntry>,
    /// The seq the walk was clamped to.
    pub last_seq: u64,
    /// Where the next call goes on from, when `max` entries were found
    /// before the end of the range.
    pub next: Option<WalkEntry>,
}

impl Fs {
    /// Every extended attribute of `ino`.
    pub fn get_attr_x(&self, ino: u64) -> FsResult<AttrX> {
        let g = self.locks.lock_inode(ino, LockMode::Read)?;
        let a = self.read_inode(&g, ino)?;
        let i = &a.inode;
        let retained = i.flags.get() & INO_FLAG_RETENTION != 0;
        Ok(AttrX {
            mask: AX_ALL,
            flags: 0,
            meta_seq: i.meta_seq.get(),
            data_seq: i.data_seq.get(),
            data_version: i.data_version.get(),
            online_blocks: i.online_blocks.get(),
            offline_blocks: i.offline_blocks.get(),
            ctime: i.ctime,
            crtime: i.crtime,
            size: i.size.get(),
            bits: if retained { AX_B_RETENTION } else { 0 },
            project_id: i.proj.get(),
        })
    }

    /// Changes the fields of `x.mask` (the original's SET_ATTR_X):
    /// - `AX_DATA_VERSION` (not 0) and `AX_SIZE` (only with a data
    ///   version, and with `AX_F_SIZE_OFFLINE` leaving the whole size one
    ///   offline extent) restore a regular file that has no data yet;
    /// - `AX_CTIME`, `AX_CRTIME` set those times; without `AX_CTIME` the
    ///   ctime becomes now;
    /// - `AX_RETENTION` (regular files) and `AX_PROJECT_ID` are for
    ///   administrators.
    ///
    /// The owner or an administrator may call it (EPERM otherwise). Under
    /// retention only a call that clears it may change anything.
    pub fn set_attr_x(&self, ino: u64, x: &AttrX, who: Caller) -> FsResult<Attr> {
        let m = x.mask;
        if m & !AX_ALL != 0
            || m & !AX_SETTABLE & AX_ALL != 0
            || x.flags & !AX_F_SIZE_OFFLINE != 0
            || x.bits & !AX_B_RETENTION != 0
            || (x.flags & AX_F_SIZE_OFFLINE != 0 && m & AX_SIZE == 0)
            || (m & AX_SIZE != 0 && m & AX_DATA_VERSION == 0)
            || (m & AX_DATA_VERSION != 0 && x.data_version == 0)
            || (m & AX_SIZE != 0 && x.size > super::data::MAX_FILE_BYTES)
        {
            return Err(EINVAL);
        }
        for t in [&x.ctime, &x.crtime] {
            if t.validate().is_err() {
                return Err(EINVAL);
            }
        }
        if m & (AX_RETENTION | AX_PROJECT_ID) != 0 && !who.admin {
            return Err(EPERM);
        }
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        let mut a = self.read_inode(&g, ino)?;
        if !who.admin && a.inode.uid.get() != who.uid {
            return Err(EPERM);
        }
        let clears = m & AX_RETENTION != 0 && x.bits & AX_B_RETENTION == 0;
        if !clears {
            check_retention(&a)?;
        }
        let reg = a.file_type() == scoutfs_format::inode::S_IFREG;
        if m & AX_RETENTION != 0 && !reg {
            return Err(EINVAL);
        }
        let restores = m & (AX_DATA_VERSION | AX_SIZE) != 0;
        if restores {
            let i = &a.inode;
            let empty = i.size.get() == 0
                && i.online_blocks.get() == 0
                && i.offline_blocks.get() == 0
                && self.extents_in(&g, ino, 0, u64::MAX / BLOCK)?.is_empty();
            if !reg || !empty {
                return Err(EINVAL);
            }
        }
        if m == 0 {
            return Ok(a);
        }
        {
            let op = self.begin(&[seqs_of(&a)])?;
            if m & AX_DATA_VERSION != 0 {
                let before = a.inode.data_version.get();
                a.inode.data_version = x.data_version.into();
                self.pages.changed(ino, before, x.data_version);
            }
            if m & AX_SIZE != 0 {
                a.inode.size = x.size.into();
                let blocks = x.size.div_ceil(BLOCK);
                if x.flags & AX_F_SIZE_OFFLINE != 0 && blocks > 0 {
                    self.set_mapping(&op, &g, ino, 0, blocks, Some((0, SEF_OFFLINE)))?;
                    a.inode.offline_blocks = blocks.into();
                }
            }
            if m & AX_CRTIME != 0 {
                a.inode.crtime = x.crtime;
            }
            if m & AX_RETENTION != 0 {
                let f = a.inode.flags.get() & !INO_FLAG_RETENTION;
                let set = if x.bits & AX_B_RETENTION != 0 {
                    INO_FLAG_RETENTION
                } else {
                    0
                };
                a.inode.flags = (f | set).into();
            }
            if m & AX_PROJECT_ID != 0 {
                a.inode.proj = x.project_id.into();
            }
            a.inode.ctime = if m & AX_CTIME != 0 { x.ctime } else { now() };
            self.write_inode(&op, &g, &mut a, restores)?;
        }
        drop(g);
        self.maybe_commit()?;
        Ok(a)
    }

    /// The last seq whose transactions are complete on every mount, once
    /// the transactions open now (on every mount) have committed: every
    /// change made before the call is indexed at or below it, and nothing
    /// will be indexed at or below it again.
    pub fn last_seq(&self) -> FsResult<u64> {
        Ok(self.client.get_last_seq()?)
    }

    /// Up to `max` entries of the index from `first` to `last` (both
    /// included, in (seq, ino) order), clamped to [`Fs::last_seq`].
    pub fn walk_inodes(
        &self,
        index: SeqIndex,
        first: WalkEntry,
        last: WalkEntry,
        max: usize,
    ) -> FsResult<Walk> {
        let last_seq = self.last_seq()?;
        let mut walk = Walk {
            last_seq,
            ..Walk::default()
        };
        let end = if last.seq > last_seq {
            WalkEntry {
                seq: last_seq,
                ino: u64::MAX,
            }
        } else {
            last
        };
        if first > end || max == 0 {
            return Ok(walk);
        }
        let ity = index.ty();
        let key = |e: WalkEntry| Key::new(zone::INODE_INDEX, 0, ity, e.seq, e.ino, 0);
        let hi = key(end);
        let mut pos = first;
        loop {
            // Skip the groups without committed items (anything written
            // at a seq this low is committed: see `last_seq`).
            let Some(hint) = self.src.next_key_hint(&key(pos), &hi)? else {
                return Ok(walk);
            };
            if hint.zone != zone::INODE_INDEX || hint.ty != ity {
                return Ok(walk);
            }
            if hint.second > pos.seq {
                pos = WalkEntry {
                    seq: hint.second,
                    ino: 0,
                };
            }
            let (gs, ge) = index_lock_range(ity, pos.seq);
            let g = self.locks.lock(gs, ge, LockMode::Read)?;
            let upto = ge.min(hi);
            let mut k = key(pos);
            while let Some((found, _)) = self.next(&g, &k, &upto)? {
                let e = WalkEntry {
                    seq: found.second,
                    ino: found.third,
                };
                if walk.entries.len() == max {
                    walk.next = Some(e);
                    return Ok(walk);
                }
                walk.entries.push(e);
                k = found.inc();
            }
            if upto >= hi {
                return Ok(walk);
            }
            let Some(seq) = ge.second.checked_add(1) else {
                return Ok(walk);
            };
            pos = WalkEntry { seq, ino: 0 };
        }
    }
}
