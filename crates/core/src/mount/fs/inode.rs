//! Inodes: reading, creating and updating inode items, and keeping the
//! meta_seq/data_seq index items in step with them.
//!
//! `meta_seq` is the seq of the last transaction that changed the inode and
//! `data_seq` of the last that changed its contents or size. Each is also an
//! index item (INODE_INDEX, type, seq, ino) so archive agents can walk what
//! changed since a seq without walking the namespace. Directories have no
//! data_seq item (their contents are entries, found through meta_seq), as
//! `scoutfs check` verifies. Changing an inode in a
//! new transaction moves its index items: a deletion at the old seq and a
//! new item at the transaction's seq, written blindly under WRITE_ONLY locks
//! on the two index groups.
//!
//! Index locks must be held before the transaction (a mount must never wait
//! for a lock while holding its transaction: the lock may need another
//! mount's commit, which may wait for a lock we hold). The transaction's seq
//! is only known once held, so [`Fs::begin`] predicts it, locks the index
//! groups of the predicted and old seqs, holds, and retries if a commit
//! changed the seq in between.

use super::types::{Attr, Op, SetAttr};
use super::wait::MakeResume;
use super::{AtimeMode, Fs, FsError, FsResult, EISDIR, ENOENT};
use crate::cluster::lock::{index_lock_range, LockMode};
use crate::error::Error;
use crate::mount::locks::LockGuard;
use scoutfs_format::inode::{Inode, S_IFDIR, S_IFMT};
use scoutfs_format::key::{ty, zone};
use scoutfs_format::Key;
use scoutfs_format::Timespec;
use zerocopy::{FromBytes, IntoBytes};

pub fn now() -> Timespec {
    crate::clock::now_timespec()
}

pub fn inode_key(ino: u64) -> Key {
    Key::inode(ino)
}

pub fn index_key(ity: u8, seq: u64, ino: u64) -> Key {
    Key::new(zone::INODE_INDEX, 0, ity, seq, ino, 0)
}

impl Fs {
    /// Reads an inode item.
    pub fn read_inode(&self, g: &LockGuard, ino: u64) -> FsResult<Attr> {
        let v = self.get(g, &inode_key(ino))?.ok_or(ENOENT)?;
        let inode = Inode::read_from_bytes(&v).map_err(|_| {
            let e = Error::corrupt(
                crate::error::CorruptKind::ItemInvalid,
                0,
                0,
                format!("inode {ino} item of {} bytes", v.len()),
            );
            FsError::from(e)
        })?;
        Ok(Attr { ino, inode })
    }

    /// Locks the index groups an operation on inodes with these current
    /// (meta_seq, data_seq) pairs needs, and holds the transaction for an
    /// operation that may allocate (ENOSPC when space is low).
    pub fn begin(&self, seqs: &[(u64, u64)]) -> FsResult<Op<'_>> {
        self.begin_as(seqs, true)
    }

    /// [`Fs::begin`] for an operation that only frees space: it never
    /// fails for want of it.
    pub fn begin_freeing(&self, seqs: &[(u64, u64)]) -> FsResult<Op<'_>> {
        self.begin_as(seqs, false)
    }

    fn begin_as(&self, seqs: &[(u64, u64)], allocating: bool) -> FsResult<Op<'_>> {
        loop {
            let next = self.trans.current_seq();
            let mut ranges = Vec::new();
            for &(m, d) in seqs {
                ranges.push(index_lock_range(ty::INODE_INDEX_META_SEQ, m));
                ranges.push(index_lock_range(ty::INODE_INDEX_DATA_SEQ, d));
            }
            ranges.push(index_lock_range(ty::INODE_INDEX_META_SEQ, next));
            ranges.push(index_lock_range(ty::INODE_INDEX_DATA_SEQ, next));
            ranges.sort();
            ranges.dedup();
            let mut idx = Vec::with_capacity(ranges.len());
            for (s, e) in ranges {
                idx.push(self.locks.lock(s, e, LockMode::WriteOnly)?);
            }
            let hold = if allocating {
                self.trans.hold()?
            } else {
                self.trans.hold_freeing()?
            };
            if hold.seq() == next {
                return Ok(Op { hold, idx });
            }
        }
    }

    /// Writes an inode item, moving its index items to this transaction's
    /// seq. `data` says the contents or size changed.
    pub fn write_inode(&self, op: &Op, g: &LockGuard, a: &mut Attr, data: bool) -> FsResult<()> {
        let seq = op.seq();
        let ino = a.ino;
        let old_meta = a.inode.meta_seq.get();
        if old_meta != seq {
            self.move_index(op, g, ty::INODE_INDEX_META_SEQ, old_meta, seq, ino);
            a.inode.meta_seq = seq.into();
        }
        let old_data = a.inode.data_seq.get();
        if data && old_data != seq && !a.is_dir() {
            self.move_index(op, g, ty::INODE_INDEX_DATA_SEQ, old_data, seq, ino);
            a.inode.data_seq = seq.into();
        }
        a.inode.version = (a.inode.version.get() + 1).into();
        self.put(g, seq, &inode_key(ino), a.inode.as_bytes())
    }

    /// Moves an inode's index item from seq `old` to `new`.
    ///
    /// The items are versioned by the inode's lock as well as by the
    /// index lock and the transaction. Every mount holds the index groups
    /// WRITE_ONLY at once, each from its own grant, and a mount's
    /// transaction may have opened before another mount's later one: by
    /// those two alone, a mount deleting the item another mount created
    /// (having taken the inode from it) could give the deletion the lower
    /// version, and the stale item would win. The inode lock was granted
    /// to this mount after the last mount to change the inode let it go,
    /// so its write_seq is greater than every version that mount gave the
    /// inode's index items.
    fn move_index(&self, op: &Op, g: &LockGuard, ity: u8, old: u64, new: u64, ino: u64) {
        let version = new.max(g.write_seq());
        let og = op.idx_guard(ity, old);
        self.items
            .delete_blind(&og.cover(), &index_key(ity, old, ino), version);
        let ng = op.idx_guard(ity, new);
        self.items
            .put_blind(&ng.cover(), &index_key(ity, new, ino), version, &[]);
    }

    /// Creates a new inode item (and its index items) in this transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn create_inode(
        &self,
        op: &Op,
        g: &LockGuard,
        ino: u64,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
        proj: u64,
    ) -> FsResult<Attr> {
        let t = now();
        let seq = op.seq();
        let inode = Inode {
            nlink: (if mode & S_IFMT == S_IFDIR { 2 } else { 1 }).into(),
            mode: mode.into(),
            rdev: rdev.into(),
            uid: uid.into(),
            gid: gid.into(),
            meta_seq: seq.into(),
            data_seq: seq.into(),
            next_readdir_pos: scoutfs_format::DIRENT_FIRST_POS.into(),
            next_xattr_id: 1.into(),
            version: 1.into(),
            atime: t,
            ctime: t,
            mtime: t,
            crtime: t,
            proj: proj.into(),
            ..Default::default()
        };
        let itys: &[u8] = match mode & S_IFMT == S_IFDIR {
            true => &[ty::INODE_INDEX_META_SEQ],
            false => &[ty::INODE_INDEX_META_SEQ, ty::INODE_INDEX_DATA_SEQ],
        };
        // Versioned by the inode lock too, as in `move_index`.
        let version = seq.max(g.write_seq());
        for &ity in itys {
            let ig = op.idx_guard(ity, seq);
            self.items
                .put_blind(&ig.cover(), &index_key(ity, seq, ino), version, &[]);
        }
        // Inode numbers are never reused: a new inode's key is new.
        self.put_new(g, seq, &inode_key(ino), inode.as_bytes());
        self.trans.add_inodes(1);
        Ok(Attr { ino, inode })
    }

    /// Deletes an inode item and its index items (the caller removed
    /// everything else the inode had).
    pub fn delete_inode(&self, op: &Op, g: &LockGuard, a: &Attr) -> FsResult<()> {
        let seq = op.seq();
        let mut items = vec![(ty::INODE_INDEX_META_SEQ, a.inode.meta_seq.get())];
        if !a.is_dir() {
            items.push((ty::INODE_INDEX_DATA_SEQ, a.inode.data_seq.get()));
        }
        // Versioned by the inode lock too, as in `move_index`.
        let version = seq.max(g.write_seq());
        for (ity, s) in items {
            let ig = op.idx_guard(ity, s);
            self.items
                .delete_blind(&ig.cover(), &index_key(ity, s, a.ino), version);
        }
        self.del(g, seq, &inode_key(a.ino))?;
        self.trans.add_inodes(-1);
        Ok(())
    }
}

impl Fs {
    /// Changes attributes; a size change truncates or extends the file
    /// (waiting, this thread blocked, while blocks it changes are
    /// offline).
    pub fn setattr(&self, ino: u64, s: &SetAttr) -> FsResult<Attr> {
        super::blocking(&self.waits, |r| self.setattr_or_wait(ino, s, r))
    }

    /// [`Fs::setattr`]; None when a size change waits for offline blocks:
    /// `resume` runs once they may have been staged.
    pub fn setattr_or_wait(
        &self,
        ino: u64,
        s: &SetAttr,
        resume: MakeResume<'_>,
    ) -> Option<FsResult<Attr>> {
        self.setattr_once(ino, s, resume).transpose()
    }

    fn setattr_once(
        &self,
        ino: u64,
        s: &SetAttr,
        resume: MakeResume<'_>,
    ) -> FsResult<Option<Attr>> {
        if let Some(size) = s.size {
            let a = self.getattr(ino)?;
            if a.is_dir() {
                return Err(EISDIR);
            }
            super::check_retention(&a)?;
            if (a.size() != size || a.file_type() == scoutfs_format::inode::S_IFREG)
                && self.truncate_once(ino, size, resume)?.is_none()
            {
                return Ok(None);
            }
        }
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        let mut a = self.read_inode(&g, ino)?;
        super::check_retention(&a)?;
        let changes = s.mode.is_some()
            || s.uid.is_some()
            || s.gid.is_some()
            || s.atime.is_some()
            || s.mtime.is_some()
            || s.ctime.is_some();
        if !changes {
            return Ok(Some(a));
        }
        {
            let op = self.begin_freeing(&[seqs_of(&a)])?;
            if let Some(m) = s.mode {
                let t = a.mode() & S_IFMT;
                a.inode.mode = (t | (m & 0o7777)).into();
                self.chmod_acl(&op, &g, &mut a)?;
            }
            if let Some(u) = s.uid {
                a.inode.uid = u.into();
            }
            if let Some(gid) = s.gid {
                a.inode.gid = gid.into();
            }
            if let Some(t) = s.atime {
                a.inode.atime = t;
            }
            if let Some(t) = s.mtime {
                a.inode.mtime = t;
            }
            a.inode.ctime = s.ctime.unwrap_or_else(now);
            self.write_inode(&op, &g, &mut a, false)?;
        }
        drop(g);
        self.maybe_commit()?;
        Ok(Some(a))
    }

    /// Whether a read now should update `a`'s atime, by the mount's mode.
    pub fn atime_due(&self, a: &Attr) -> bool {
        let at = |t: &Timespec| (t.signed_sec(), t.nsec.get());
        let i = &a.inode;
        match self.opts.atime {
            AtimeMode::Off => false,
            AtimeMode::Strict => true,
            AtimeMode::Relatime => {
                let atime = at(&i.atime);
                atime <= at(&i.mtime)
                    || atime <= at(&i.ctime)
                    || now().signed_sec().saturating_sub(atime.0) >= RELATIME_MAX_AGE_SECS as i64
            }
        }
    }

    /// Whether the next read of `ino` should reach the filesystem so that
    /// its atime is updated (the FUSE layer then drops the kernel's cached
    /// pages at open).
    pub fn atime_wanted(&self, ino: u64) -> FsResult<bool> {
        if self.opts.atime == AtimeMode::Off {
            return Ok(false);
        }
        let g = self.locks.lock_inode(ino, LockMode::Read)?;
        let a = self.read_inode(&g, ino)?;
        // Nothing of a file under retention changes, its atime included.
        let retained = super::check_retention(&a).is_err();
        Ok(!retained && self.atime_due(&a))
    }

    /// Records an access of `ino` (a read or a readdir): updates its atime
    /// if the mount's mode says it is due. Like a local filesystem, a
    /// failure to update the atime doesn't fail the read; it is returned
    /// for the caller to ignore. True when the atime changed.
    pub fn accessed(&self, ino: u64) -> FsResult<bool> {
        if !self.atime_wanted(ino)? {
            return Ok(false);
        }
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        let mut a = self.read_inode(&g, ino)?;
        if !self.atime_due(&a) || super::check_retention(&a).is_err() {
            return Ok(false);
        }
        {
            let op = self.begin_freeing(&[seqs_of(&a)])?;
            a.inode.atime = now();
            self.write_inode(&op, &g, &mut a, false)?;
        }
        drop(g);
        self.maybe_commit()?;
        Ok(true)
    }
}

/// Relatime updates an atime at least this often when it is read.
pub const RELATIME_MAX_AGE_SECS: u64 = 24 * 60 * 60;

/// The (meta_seq, data_seq) of an inode, for `Fs::begin`.
pub fn seqs_of(a: &Attr) -> (u64, u64) {
    (a.inode.meta_seq.get(), a.inode.data_seq.get())
}
