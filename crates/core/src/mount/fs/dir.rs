//! Directories: entries, lookup, create, link, unlink, rmdir, rename,
//! readdir, symlinks, and unlinked inodes (orphans).
//!
//! Each entry is three items with one value (a dirent header and the name):
//! DIRENT (dir, name hash, pos) found by hash for lookup; READDIR (dir, pos)
//! in creation order for readdir; LINK_BACKREF (target, dir, pos) so an inode
//! knows its names (and a directory its parent). Readdir positions come from
//! the directory's `next_readdir_pos`, start at 2 and are never reused, so a
//! readdir position stays valid across concurrent changes.
//!
//! Locks: every inode an operation touches is locked WRITE, in ascending
//! inode order, before the transaction is held. Names are looked up first
//! to learn which inodes to lock, and looked up again under the locks;
//! if the answer changed the operation starts over. Renames between
//! directories also take the global rename lock first, so the tree's shape
//! can't change while a rename checks that a directory isn't moved into
//! itself.
//!
//! An inode whose last name goes away is kept, with nlink 0 and an orphan
//! item, until `evict` (the kernel forgot it, or the last open closed); then
//! its items and data are freed.

use super::inode::{inode_key, now, seqs_of};
use super::types::{Attr, FoundEntry, NewNode, Op};
use super::{
    Fs, FsError, FsResult, EEXIST, EINVAL, EIO, EISDIR, ELOOP, EMLINK, ENAMETOOLONG, ENOENT,
    ENOTDIR, ENOTEMPTY, EPERM,
};
use crate::cluster::lock::{orphan_lock_range, rename_lock_range, LockMode};
use crate::cluster::net::msg::OpenInoMap;
use crate::error::Error;
use crate::mount::locks::LockGuard;
use scoutfs_format::consts::{DIRENT_FIRST_POS, MAX_VAL_SIZE, NAME_LEN, SYMLINK_MAX_SIZE};
use scoutfs_format::dir::*;
use scoutfs_format::inode::*;
use scoutfs_format::key::{ty, zone};
use scoutfs_format::Key;

/// rename flags (as Linux's renameat2).
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

/// One directory entry as readdir returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The position to continue from after this entry.
    pub next_pos: u64,
    pub ino: u64,
    pub dt: u8,
    pub name: Vec<u8>,
}

fn dirent_key(dir: u64, hash: u64, pos: u64) -> Key {
    Key::new(zone::FS, dir, ty::DIRENT, hash, pos, 0)
}
fn readdir_key(dir: u64, pos: u64) -> Key {
    Key::new(zone::FS, dir, ty::READDIR, pos, 0, 0)
}
fn backref_key(target: u64, dir: u64, pos: u64) -> Key {
    Key::new(zone::FS, target, ty::LINK_BACKREF, dir, pos, 0)
}
fn symlink_key(ino: u64, nr: u64) -> Key {
    Key::new(zone::FS, ino, ty::SYMLINK, nr, 0, 0)
}
fn orphan_key(ino: u64) -> Key {
    Key::new(zone::ORPHAN, 0, ty::ORPHAN, ino, 0, 0)
}

/// The directory entry type of a mode.
pub fn mode_dt(mode: u32) -> u8 {
    match mode & S_IFMT {
        S_IFIFO => DT_FIFO,
        S_IFCHR => DT_CHR,
        S_IFDIR => DT_DIR,
        S_IFBLK => DT_BLK,
        S_IFLNK => DT_LNK,
        S_IFSOCK => DT_SOCK,
        _ => DT_REG,
    }
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_LEN {
        return Err(ENAMETOOLONG);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(EINVAL);
    }
    if name == b"." || name == b".." {
        return Err(EEXIST);
    }
    Ok(())
}

impl Fs {
    /// Finds `name` in `dir` (the caller holds dir's lock).
    fn find(&self, g: &LockGuard, dir: u64, name: &[u8]) -> FsResult<Option<FoundEntry>> {
        let hash = dirent_name_hash(name);
        let mut k = dirent_key(dir, hash, 0);
        let last = dirent_key(dir, hash, u64::MAX);
        while let Some((key, v)) = self.next(g, &k, &last)? {
            let (h, n) = decode_dirent(&v).map_err(|e| {
                FsError::from(Error::corrupt(
                    crate::error::CorruptKind::ItemInvalid,
                    0,
                    0,
                    format!("dirent {key}: {e}"),
                ))
            })?;
            if n == name {
                return Ok(Some(FoundEntry {
                    ino: h.ino.get(),
                    hash,
                    pos: h.pos.get(),
                    dt: h.ty,
                }));
            }
            k = key.inc();
        }
        Ok(None)
    }

    fn dir_attr(&self, g: &LockGuard, dir: u64) -> FsResult<Attr> {
        let a = self.read_inode(g, dir)?;
        if !a.is_dir() {
            return Err(ENOTDIR);
        }
        Ok(a)
    }

    /// Looks up `name` in `parent`. "." is `parent` itself, whatever its
    /// type: that is how the kernel finds an inode by number alone (for a
    /// file handle whose inode it no longer caches).
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > NAME_LEN {
            return Err(ENAMETOOLONG);
        }
        if name == b"." {
            return self.getattr(parent);
        }
        let ino = {
            let g = self.locks.lock_inode(parent, LockMode::Read)?;
            self.dir_attr(&g, parent)?;
            if name == b"." {
                parent
            } else if name == b".." {
                self.parent_of(&g, parent)?
            } else {
                self.find(&g, parent, name)?.ok_or(ENOENT)?.ino
            }
        };
        self.getattr(ino)
    }

    /// The attributes of an inode.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let g = self.locks.lock_inode(ino, LockMode::Read)?;
        self.read_inode(&g, ino)
    }

    /// A directory's parent, from its one backref (the root is its own).
    fn parent_of(&self, g: &LockGuard, dir: u64) -> FsResult<u64> {
        if dir == scoutfs_format::ROOT_INO {
            return Ok(dir);
        }
        let first = backref_key(dir, 0, 0);
        let last = backref_key(dir, u64::MAX, u64::MAX);
        Ok(self
            .next(g, &first, &last)?
            .map_or(scoutfs_format::ROOT_INO, |(k, _)| k.second))
    }

    /// Adds the three items of an entry `name` in `dir` for `target`.
    #[allow(clippy::too_many_arguments)]
    fn add_entry(
        &self,
        op: &Op,
        gd: &LockGuard,
        gt: &LockGuard,
        d: &mut Attr,
        name: &[u8],
        target: u64,
        dt: u8,
    ) -> FsResult<()> {
        let seq = op.seq();
        let pos = d.inode.next_readdir_pos.get();
        d.inode.next_readdir_pos = (pos + 1).into();
        let hash = dirent_name_hash(name);
        let val = encode_dirent(&DirentHeader::new(target, name, pos, dt), name);
        // Readdir positions are never reused, so these keys are new.
        self.put_new(gd, seq, &dirent_key(d.ino, hash, pos), &val);
        self.put_new(gd, seq, &readdir_key(d.ino, pos), &val);
        self.put_new(gt, seq, &backref_key(target, d.ino, pos), &val);
        d.inode.size = (d.inode.size.get() + name.len() as u64).into();
        let t = now();
        d.inode.mtime = t;
        d.inode.ctime = t;
        Ok(())
    }

    /// Removes the three items of an entry.
    fn remove_entry(
        &self,
        op: &Op,
        gd: &LockGuard,
        gt: &LockGuard,
        d: &mut Attr,
        f: &FoundEntry,
        name_len: usize,
    ) -> FsResult<()> {
        let seq = op.seq();
        self.del(gd, seq, &dirent_key(d.ino, f.hash, f.pos))?;
        self.del(gd, seq, &readdir_key(d.ino, f.pos))?;
        self.del(gt, seq, &backref_key(f.ino, d.ino, f.pos))?;
        d.inode.size = d.inode.size.get().saturating_sub(name_len as u64).into();
        let t = now();
        d.inode.mtime = t;
        d.inode.ctime = t;
        Ok(())
    }

    /// Creates a file, device, fifo, socket, directory or symlink, as a
    /// user would: `umask` applies unless the parent has a default ACL,
    /// which the node inherits instead (see `acl`); in a set-group-id
    /// directory the node takes the directory's group, and a new directory
    /// keeps the bit. The parent is locked once, for writing, and its group
    /// read under that lock.
    pub fn mknod(&self, parent: u64, name: &[u8], node: &NewNode<'_>) -> FsResult<Attr> {
        let NewNode {
            mode,
            umask,
            rdev,
            uid,
            link,
            ..
        } = *node;
        check_name(name)?;
        if let Some(t) = link {
            if t.is_empty() || t.len() >= SYMLINK_MAX_SIZE {
                return Err(if t.is_empty() { ENOENT } else { ENAMETOOLONG });
            }
        }
        if !mode_type_valid(mode) {
            return Err(EINVAL);
        }
        let ino = self.alloc_ino()?;
        let gs = self.locks.lock_inodes(&[parent, ino], LockMode::Write)?;
        let _local = self.lock_local(&[parent, ino]);
        let (gd, gi) = guards_for(&gs, parent, ino);
        let mut d = self.dir_attr(gd, parent)?;
        if self.find(gd, parent, name)?.is_some() {
            return Err(EEXIST);
        }
        let (mut mode, mut gid) = (mode, node.gid);
        if d.mode() & libc::S_ISGID != 0 {
            gid = d.inode.gid.get();
            if mode & S_IFMT == S_IFDIR {
                mode |= libc::S_ISGID;
            }
        }
        let is_dir = mode & S_IFMT == S_IFDIR;
        if is_dir && d.inode.nlink.get() >= LINK_MAX {
            return Err(EMLINK);
        }
        let (mode, acls) = if link.is_some() {
            (mode, Vec::new())
        } else {
            let default = self.default_acl(gd, parent)?;
            super::acl::inherit(default.as_deref(), mode, umask, is_dir).map_err(|_| EIO)?
        };
        let a = {
            let op = self.begin(&[(d.inode.meta_seq.get(), d.inode.data_seq.get())])?;
            let mut a =
                self.create_inode(&op, gi, ino, mode, rdev, uid, gid, d.inode.proj.get())?;
            for (xname, value) in &acls {
                self.store_xattr(&op, gi, &mut a, xname, value, true)?;
            }
            if !acls.is_empty() {
                self.write_inode(&op, gi, &mut a, false)?;
            }
            if let Some(t) = link {
                for (nr, part) in t.chunks(MAX_VAL_SIZE).enumerate() {
                    self.put_new(gi, op.seq(), &symlink_key(ino, nr as u64), part);
                }
                a.inode.size = (t.len() as u64).into();
                self.write_inode(&op, gi, &mut a, true)?;
            }
            self.add_entry(&op, gd, gi, &mut d, name, ino, mode_dt(mode))?;
            if is_dir {
                d.inode.nlink = (d.inode.nlink.get() + 1).into();
            }
            self.write_inode(&op, gd, &mut d, false)?;
            a
        };
        if node.open {
            self.opened_here(&a);
        }
        drop(gs);
        self.maybe_commit()?;
        Ok(a)
    }

    /// The target of a symlink.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let g = self.locks.lock_inode(ino, LockMode::Read)?;
        let a = self.read_inode(&g, ino)?;
        if a.file_type() != S_IFLNK {
            return Err(EINVAL);
        }
        let mut out = Vec::new();
        let (mut k, last) = (symlink_key(ino, 0), symlink_key(ino, u64::MAX));
        while let Some((key, v)) = self.next(&g, &k, &last)? {
            out.extend_from_slice(&v);
            k = key.inc();
        }
        if out.len() as u64 != a.size() {
            let detail = format!(
                "symlink {ino} holds {} bytes, its size is {}",
                out.len(),
                a.size()
            );
            return Err(
                Error::corrupt(crate::error::CorruptKind::ItemInvalid, 0, 0, detail).into(),
            );
        }
        Ok(out)
    }

    /// Adds a hard link `newparent/newname` to `ino`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        check_name(newname)?;
        let gs = self.locks.lock_inodes(&[ino, newparent], LockMode::Write)?;
        let _local = self.lock_local(&[ino, newparent]);
        let (gi, gd) = guards_for(&gs, ino, newparent);
        let mut d = self.dir_attr(gd, newparent)?;
        let mut a = self.read_inode(gi, ino)?;
        if a.is_dir() {
            return Err(EPERM);
        }
        super::check_retention(&a)?;
        if a.inode.nlink.get() >= LINK_MAX {
            return Err(EMLINK);
        }
        if self.find(gd, newparent, newname)?.is_some() {
            return Err(EEXIST);
        }
        if a.inode.nlink.get() == 0 {
            return Err(ENOENT);
        }
        {
            let op = self.begin(&[seqs_of(&d), seqs_of(&a)])?;
            self.add_entry(&op, gd, gi, &mut d, newname, ino, mode_dt(a.mode()))?;
            self.write_inode(&op, gd, &mut d, false)?;
            a.inode.nlink = (a.inode.nlink.get() + 1).into();
            a.inode.ctime = now();
            self.write_inode(&op, gi, &mut a, false)?;
        }
        drop(gs);
        self.maybe_commit()?;
        Ok(a)
    }

    /// Removes a non-directory entry.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.remove_name(parent, name, false)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name == b"." {
            return Err(EINVAL);
        }
        if name == b".." {
            return Err(ENOTEMPTY);
        }
        self.remove_name(parent, name, true)
    }

    /// Finds the inode `name` names in `parent`, under a read lock.
    fn peek(&self, parent: u64, name: &[u8]) -> FsResult<FoundEntry> {
        if name.len() > NAME_LEN {
            return Err(ENAMETOOLONG);
        }
        let g = self.locks.lock_inode(parent, LockMode::Read)?;
        self.dir_attr(&g, parent)?;
        self.find(&g, parent, name)?.ok_or(ENOENT)
    }

    fn remove_name(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        loop {
            let f = self.peek(parent, name)?;
            let og = self.locks.lock(
                orphan_lock_range().0,
                orphan_lock_range().1,
                LockMode::WriteOnly,
            )?;
            let gs = self.locks.lock_inodes(&[parent, f.ino], LockMode::Write)?;
            let _local = self.lock_local(&[parent, f.ino]);
            let (gd, gt) = guards_for(&gs, parent, f.ino);
            let mut d = self.dir_attr(gd, parent)?;
            match self.find(gd, parent, name)? {
                Some(now_f) if now_f.ino == f.ino && now_f.pos == f.pos => {}
                _ => continue,
            }
            let mut a = self.read_inode(gt, f.ino)?;
            super::check_retention(&a)?;
            if dir && !a.is_dir() {
                return Err(ENOTDIR);
            }
            if !dir && a.is_dir() {
                return Err(EISDIR);
            }
            if dir && self.dir_has_entries(gt, f.ino)? {
                return Err(ENOTEMPTY);
            }
            {
                let op = self.begin_freeing(&[seqs_of(&d), seqs_of(&a)])?;
                self.remove_entry(&op, gd, gt, &mut d, &f, name.len())?;
                if dir {
                    d.inode.nlink = d.inode.nlink.get().saturating_sub(1).into();
                }
                self.write_inode(&op, gd, &mut d, false)?;
                self.drop_link(&op, gt, &og, &mut a)?;
            }
            drop(gs);
            self.maybe_commit()?;
            return Ok(());
        }
    }

    /// One name of `a` went away: nlink drops; at zero it becomes an orphan.
    fn drop_link(&self, op: &Op, g: &LockGuard, og: &LockGuard, a: &mut Attr) -> FsResult<()> {
        let n = a.inode.nlink.get();
        let left = if a.is_dir() { 0 } else { n.saturating_sub(1) };
        a.inode.nlink = left.into();
        a.inode.ctime = now();
        if left == 0 {
            self.items
                .put_blind(&og.cover(), &orphan_key(a.ino), op.seq(), &[]);
            self.unlinked_set().insert(a.ino);
        }
        self.write_inode(op, g, a, false)
    }

    fn dir_has_entries(&self, g: &LockGuard, dir: u64) -> FsResult<bool> {
        Ok(self
            .next(g, &readdir_key(dir, 0), &readdir_key(dir, u64::MAX))?
            .is_some())
    }

    /// The position the next entry made in `dir` will take. A listing that
    /// stops there returns each entry at most once while entries are
    /// renamed (a renamed entry takes a new position, past this one).
    pub fn readdir_end(&self, dir: u64) -> FsResult<u64> {
        let g = self.locks.lock_inode(dir, LockMode::Read)?;
        Ok(self.dir_attr(&g, dir)?.inode.next_readdir_pos.get())
    }

    /// Entries of `dir` from position `pos` (0 and 1 are "." and ".."), at
    /// most `max`, all below position `end` (`u64::MAX` for every entry).
    pub fn readdir(&self, dir: u64, pos: u64, max: usize, end: u64) -> FsResult<Vec<DirEntry>> {
        let g = self.locks.lock_inode(dir, LockMode::Read)?;
        self.dir_attr(&g, dir)?;
        let mut out = Vec::new();
        if pos == 0 {
            out.push(DirEntry {
                next_pos: 1,
                ino: dir,
                dt: DT_DIR,
                name: b".".to_vec(),
            });
        }
        if pos <= 1 && out.len() < max {
            let parent = self.parent_of(&g, dir)?;
            out.push(DirEntry {
                next_pos: DIRENT_FIRST_POS,
                ino: parent,
                dt: DT_DIR,
                name: b"..".to_vec(),
            });
        }
        let first = readdir_key(dir, pos.max(DIRENT_FIRST_POS));
        let last = readdir_key(dir, end.saturating_sub(1));
        let want = max.saturating_sub(out.len());
        if end <= pos.max(DIRENT_FIRST_POS) {
            return Ok(out);
        }
        for (key, v) in self.next_many(&g, &first, &last, want)? {
            let (h, name) = decode_dirent(&v).map_err(|e| {
                FsError::from(Error::corrupt(
                    crate::error::CorruptKind::ItemInvalid,
                    0,
                    0,
                    format!("readdir {key}: {e}"),
                ))
            })?;
            out.push(DirEntry {
                next_pos: key.second + 1,
                ino: h.ino.get(),
                dt: h.ty,
                name: name.to_vec(),
            });
        }
        Ok(out)
    }

    /// The kernel forgot `ino`: frees it if its last name went away here
    /// and no mount has it open (see [`Fs::delete_if_unused`]).
    ///
    /// Only an inode unlinked on this mount is looked at: one unlinked on
    /// another mount is freed there (its kernel forgets it too), or by the
    /// last close on any mount, or by an orphan scan. Reading every inode
    /// the kernel forgets cost a cold read each when it dropped its caches
    /// (a third of a mount's time, stat'ing at random among millions).
    pub fn evict(&self, ino: u64) -> FsResult<()> {
        if !self.unlinked_set().contains(&ino) {
            return Ok(());
        }
        self.delete_if_unused(ino)?;
        // Freed, given a name again, or open (its last close frees it).
        self.unlinked_set().remove(&ino);
        Ok(())
    }

    fn unlinked_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        // A set of numbers is consistent after any panic.
        self.unlinked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens `ino` (a file or directory handle): it counts as open on
    /// this mount, so no mount deletes it, until [`Fs::release`]. Taken
    /// under the inode's lock, so an inode being deleted can't be opened.
    pub fn open(&self, ino: u64) -> FsResult<Attr> {
        self.open_for(ino, false)
    }

    /// [`Fs::open`] for writing (`write`: the open may change the file, by
    /// its access mode or O_TRUNC): refused with EPERM under retention.
    pub fn open_for(&self, ino: u64, write: bool) -> FsResult<Attr> {
        let g = self.locks.lock_inode(ino, LockMode::Read)?;
        let a = self.read_inode(&g, ino)?;
        if write {
            super::check_retention(&a)?;
        }
        self.opened_here(&a);
        Ok(a)
    }

    /// `a` is open here (read under its lock): no mount deletes it until
    /// its last close here, and a file's cached pages hold its version.
    fn opened_here(&self, a: &Attr) {
        self.locks.open_inodes().pin(a.ino);
        if a.file_type() == scoutfs_format::inode::S_IFREG {
            self.pages.opened(a.ino, a.inode.data_version.get());
        }
    }

    /// Closes one handle of `ino`; the last close here gives back what
    /// writes preallocated past its end, and frees it if its last name is
    /// gone and no other mount has it open.
    pub fn release(&self, ino: u64) -> FsResult<()> {
        if self.locks.open_inodes().unpin(ino) {
            self.pages.closed(ino);
            self.trim_prealloc(ino)?;
            self.delete_if_unused(ino)?;
        }
        Ok(())
    }

    /// Frees an inode whose last name is gone and that no mount has open:
    /// its items, its data and its orphan item. Under the inode's write
    /// lock (nobody can open it meanwhile), the server asks every mount
    /// whether it has the inode open (`omap`); if one does, the inode
    /// stays an orphan, and the last close there, or a later orphan scan,
    /// frees it.
    pub fn delete_if_unused(&self, ino: u64) -> FsResult<Deletion> {
        if self.locks.open_inodes().is_open(ino) {
            return Ok(Deletion::Open);
        }
        // Most inodes the kernel forgets are still linked.
        {
            let g = self.locks.lock_inode(ino, LockMode::Read)?;
            match self.read_inode(&g, ino) {
                Ok(a) if a.inode.nlink.get() > 0 => return Ok(Deletion::Linked),
                Ok(_) => {}
                Err(e) if e == ENOENT => return Ok(Deletion::Gone),
                Err(e) => return Err(e),
            }
        }
        let og = self.locks.lock(
            orphan_lock_range().0,
            orphan_lock_range().1,
            LockMode::WriteOnly,
        )?;
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let a = match self.read_inode(&g, ino) {
            Ok(a) => a,
            Err(e) if e == ENOENT => return Ok(Deletion::Gone),
            Err(e) => return Err(e),
        };
        if a.inode.nlink.get() > 0 {
            return Ok(Deletion::Linked);
        }
        let map = self
            .client
            .open_ino_map(OpenInoMap::group_of(ino))
            .map_err(FsError::from)?;
        if map.test(ino) {
            return Ok(Deletion::Open);
        }
        let _local = self.lock_local(&[ino]);
        self.truncate_blocks(&g, &a, 0)?;
        // Freeing the blocks wrote the inode, and moved its index items to
        // that transaction's seq: delete those, not the ones read before.
        let a = self.read_inode(&g, ino)?;
        let op = self.begin_freeing(&[seqs_of(&a)])?;
        self.delete_inode_items(&op, &g, ino)?;
        self.delete_inode(&op, &g, &a)?;
        self.items
            .delete_blind(&og.cover(), &orphan_key(ino), op.seq());
        drop(op);
        drop(g);
        self.unlinked_set().remove(&ino);
        self.maybe_commit()?;
        Ok(Deletion::Deleted)
    }

    /// Deletes every item of an inode but the inode item and its extents.
    fn delete_inode_items(&self, op: &Op, g: &LockGuard, ino: u64) -> FsResult<()> {
        for t in [
            ty::XATTR,
            ty::LINK_BACKREF,
            ty::SYMLINK,
            ty::DIRENT,
            ty::READDIR,
        ] {
            let first = Key::new(zone::FS, ino, t, 0, 0, 0);
            let last = Key::new(zone::FS, ino, t, u64::MAX, u64::MAX, u8::MAX);
            let mut k = first;
            while let Some((key, _)) = self.next(g, &k, &last)? {
                self.del(g, op.seq(), &key)?;
                k = key.inc();
            }
        }
        Ok(())
    }
}

impl Fs {
    /// Renames `parent/name` to `newparent/newname` (renameat2 flags).
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(EINVAL);
        }
        check_name(newname).map_err(|e| if e == EEXIST { EINVAL } else { e })?;
        if name == b"." || name == b".." {
            return Err(EINVAL);
        }
        // Cross-directory renames are serialized so the ancestry check holds.
        let _rename = if parent != newparent {
            let (s, e) = rename_lock_range();
            Some(self.locks.lock(s, e, LockMode::Write)?)
        } else {
            None
        };
        loop {
            let src = self.peek(parent, name)?;
            let dst = match self.peek(newparent, newname) {
                Ok(f) => Some(f),
                Err(e) if e == ENOENT => None,
                Err(e) => return Err(e),
            };
            if dst.is_some_and(|d| d.ino == src.ino) {
                return Ok(());
            }
            // Moving a directory under itself is refused. The walk up from
            // the new parent takes each directory's lock in turn, so it runs
            // before this rename holds any inode lock (a lock it held would
            // wait on its own invalidation). Its answer holds: directories
            // only change parents in cross-directory renames, which wait
            // for the rename lock we hold.
            let under_itself = parent != newparent && self.is_ancestor(src.ino, newparent)?;
            let og = self.locks.lock(
                orphan_lock_range().0,
                orphan_lock_range().1,
                LockMode::WriteOnly,
            )?;
            let mut inos = vec![parent, newparent, src.ino];
            inos.extend(dst.map(|d| d.ino));
            let gs = self.locks.lock_inodes(&inos, LockMode::Write)?;
            let _local = self.lock_local(&inos);
            let g = |ino: u64| gs.iter().find(|g| g.covers_inode(ino)).unwrap_or(&gs[0]);
            let same = |a: Option<FoundEntry>, b: Option<FoundEntry>| match (a, b) {
                (Some(a), Some(b)) => a.ino == b.ino && a.pos == b.pos,
                (None, None) => true,
                _ => false,
            };
            let mut pd = self.dir_attr(g(parent), parent)?;
            let mut nd = if newparent == parent {
                pd
            } else {
                self.dir_attr(g(newparent), newparent)?
            };
            if !same(self.find(g(parent), parent, name)?, Some(src))
                || !same(self.find(g(newparent), newparent, newname)?, dst)
            {
                continue;
            }
            let mut sa = self.read_inode(g(src.ino), src.ino)?;
            let mut da = match dst {
                Some(d) => Some(self.read_inode(g(d.ino), d.ino)?),
                None => None,
            };
            let gd = dst.map(|d| g(d.ino));
            super::check_retention(&sa)?;
            if let Some(da) = &da {
                super::check_retention(da)?;
            }
            self.rename_checks(gd, &sa, da.as_ref(), flags)?;
            if sa.is_dir() && under_itself {
                return Err(EINVAL);
            }
            let mut seqs = vec![seqs_of(&pd), seqs_of(&nd), seqs_of(&sa)];
            seqs.extend(da.as_ref().map(seqs_of));
            {
                let op = self.begin(&seqs)?;
                let gp = g(parent);
                let gn = g(newparent);
                self.remove_entry(&op, gp, g(src.ino), &mut pd, &src, name.len())?;
                if newparent == parent {
                    nd = pd;
                }
                if let (Some(d), Some(da)) = (dst, da.as_mut()) {
                    self.remove_entry(&op, gn, g(d.ino), &mut nd, &d, newname.len())?;
                    if flags & RENAME_EXCHANGE != 0 {
                        self.add_entry(
                            &op,
                            gp,
                            g(d.ino),
                            if newparent == parent {
                                &mut nd
                            } else {
                                &mut pd
                            },
                            name,
                            d.ino,
                            d.dt,
                        )?;
                        if newparent == parent {
                            pd = nd;
                        }
                        da.inode.ctime = now();
                        self.write_inode(&op, g(d.ino), da, false)?;
                    } else {
                        if da.is_dir() {
                            nd.inode.nlink = nd.inode.nlink.get().saturating_sub(1).into();
                        }
                        self.drop_link(&op, g(d.ino), &og, da)?;
                    }
                }
                self.add_entry(&op, gn, g(src.ino), &mut nd, newname, src.ino, src.dt)?;
                if newparent == parent {
                    pd = nd;
                } else {
                    self.move_dir_links(&mut pd, &mut nd, &sa, da.as_ref(), flags);
                }
                sa.inode.ctime = now();
                self.write_inode(&op, g(src.ino), &mut sa, false)?;
                self.write_inode(&op, gp, &mut pd, false)?;
                if newparent != parent {
                    self.write_inode(&op, gn, &mut nd, false)?;
                }
            }
            drop(gs);
            self.maybe_commit()?;
            return Ok(());
        }
    }

    /// Whether the rename may replace (or exchange with) `da`; `gd` is the
    /// guard of the target's own lock, under which its entries are read.
    fn rename_checks(
        &self,
        gd: Option<&LockGuard>,
        sa: &Attr,
        da: Option<&Attr>,
        flags: u32,
    ) -> FsResult<()> {
        let (d, gd) = match (da, gd) {
            (None, _) if flags & RENAME_EXCHANGE != 0 => return Err(ENOENT),
            (None, _) => return Ok(()),
            (Some(d), Some(gd)) => (d, gd),
            (Some(_), None) => return Err(EIO),
        };
        if flags & RENAME_NOREPLACE != 0 {
            return Err(EEXIST);
        }
        if flags & RENAME_EXCHANGE != 0 {
            return Ok(());
        }
        match (sa.is_dir(), d.is_dir()) {
            (true, false) => Err(ENOTDIR),
            (false, true) => Err(EISDIR),
            (true, true) if self.dir_has_entries(gd, d.ino)? => Err(ENOTEMPTY),
            _ => Ok(()),
        }
    }

    /// Directory link counts when directories change parents.
    fn move_dir_links(
        &self,
        pd: &mut Attr,
        nd: &mut Attr,
        sa: &Attr,
        da: Option<&Attr>,
        flags: u32,
    ) {
        let dec = |a: &mut Attr| a.inode.nlink = a.inode.nlink.get().saturating_sub(1).into();
        let inc = |a: &mut Attr| a.inode.nlink = (a.inode.nlink.get() + 1).into();
        if sa.is_dir() {
            dec(pd);
            inc(nd);
        }
        if flags & RENAME_EXCHANGE != 0 && da.is_some_and(|d| d.is_dir()) {
            dec(nd);
            inc(pd);
        }
    }

    /// Whether `anc` is `dir` or one of its ancestors (under the rename lock).
    fn is_ancestor(&self, anc: u64, mut dir: u64) -> FsResult<bool> {
        for _ in 0..4096 {
            if dir == anc {
                return Ok(true);
            }
            if dir == scoutfs_format::ROOT_INO {
                return Ok(false);
            }
            let g = self.locks.lock_inode(dir, LockMode::Read)?;
            dir = self.parent_of(&g, dir)?;
        }
        Err(ELOOP)
    }
}

/// The guards of two inodes from `lock_inodes` (which sorts and dedups).
pub fn guards_for(gs: &[LockGuard], a: u64, b: u64) -> (&LockGuard, &LockGuard) {
    let find = |ino: u64| gs.iter().find(|g| g.covers_inode(ino)).unwrap_or(&gs[0]);
    (find(a), find(b))
}

/// The inode key, re-exported for the other fs modules.
pub fn ikey(ino: u64) -> Key {
    inode_key(ino)
}

const _: () = assert!(S_IFDIR == libc::S_IFDIR);

/// Orphans looked at per pass of a scan.
const ORPHANS_PER_PASS: usize = 256;

/// What [`Fs::delete_if_unused`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// It was freed.
    Deleted,
    /// It has a name.
    Linked,
    /// A mount has it open.
    Open,
    /// It was freed before.
    Gone,
}

impl Fs {
    /// Frees the orphans (inodes whose last name is gone) that no mount
    /// has open: those left by a mount that crashed or was fenced while it
    /// had them open, and those another mount closed after they were
    /// unlinked here. Reads the orphan items of the merged fs tree alone,
    /// without locks (the other mounts' orphan locks stay where they are);
    /// an orphan newer than the last merge waits for the next scan. Each
    /// candidate is then checked and freed under its locks, while
    /// `go_on()` says so. Returns how many were freed.
    pub fn scan_orphans(&self, go_on: &dyn Fn() -> bool) -> FsResult<u64> {
        let (start, end) = orphan_lock_range();
        let mut freed = 0;
        let mut k = start;
        loop {
            let keys = self
                .src
                .merged_keys(&k, &end, ORPHANS_PER_PASS)
                .map_err(FsError::from)?;
            let Some(last) = keys.last().copied() else {
                return Ok(freed);
            };
            for key in &keys {
                if !go_on() {
                    return Ok(freed);
                }
                let ino = key.second;
                match self.delete_if_unused(ino)? {
                    Deletion::Deleted => freed += 1,
                    // A name again (an orphan given one by linkat): its
                    // orphan item is stale.
                    Deletion::Linked => self.forget_orphan(ino)?,
                    Deletion::Open | Deletion::Gone => {}
                }
            }
            if keys.len() < ORPHANS_PER_PASS || last == end {
                return Ok(freed);
            }
            k = last.inc();
        }
    }

    /// Deletes an orphan item whose inode is gone or has names again.
    fn forget_orphan(&self, ino: u64) -> FsResult<()> {
        let og = self.locks.lock(
            orphan_lock_range().0,
            orphan_lock_range().1,
            LockMode::WriteOnly,
        )?;
        let hold = self.trans.hold_freeing()?;
        self.items
            .delete_blind(&og.cover(), &orphan_key(ino), hold.seq());
        og.dirtied(hold.seq());
        Ok(())
    }
}
