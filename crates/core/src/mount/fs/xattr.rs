//! Extended attributes.
//!
//! An xattr is stored in parts of at most 896 bytes, keyed (ino, name hash,
//! id, part): the first part starts with a header (value length, name
//! length), then the name, then as much of the value as fits; later parts
//! hold the rest of the value. The id is unique per inode (from
//! `next_xattr_id`), so names whose hashes collide keep separate items;
//! a lookup compares the names of every id with the wanted hash.
//!
//! Namespaces: `user.`, `trusted.`, `security.` and the POSIX ACLs
//! `system.posix_acl_access` and `system.posix_acl_default` (the kernel
//! enforces ACLs from them). Anything else is EOPNOTSUPP.

use super::acl;
use super::inode::now;
use super::inode::seqs_of;
use super::types::{Attr, FoundXattr, Op};
use super::{Fs, FsResult, E2BIG, EACCES, EEXIST, EINVAL, EIO, ENODATA, EOPNOTSUPP, ERANGE};
use crate::cluster::lock::LockMode;
use crate::mount::locks::LockGuard;
use scoutfs_format::consts::{XATTR_MAX_PART_SIZE, XATTR_NAME_MAX, XATTR_VALUE_MAX};
use scoutfs_format::key::{ty, zone};
use scoutfs_format::xattr::{xattr_name_hash, XattrHeader, XATTR_HEADER_SIZE};
use scoutfs_format::Key;
use zerocopy::IntoBytes;

pub const XATTR_CREATE: u32 = 1;
pub const XATTR_REPLACE: u32 = 2;

fn part_key(ino: u64, hash: u64, id: u64, part: u8) -> Key {
    Key::new(zone::FS, ino, ty::XATTR, hash, id, part)
}

fn check_xattr_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(ERANGE);
    }
    let ok = [&b"user."[..], b"trusted.", b"security."]
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default";
    if ok {
        Ok(())
    } else {
        Err(EOPNOTSUPP)
    }
}

impl Fs {
    /// Reads every part of the xattr with `id` whose first part is `first`.
    fn read_parts(
        &self,
        g: &LockGuard,
        ino: u64,
        hash: u64,
        id: u64,
        first: &[u8],
    ) -> FsResult<(Vec<u8>, Vec<u8>, usize)> {
        let h = XattrHeader::decode(first).map_err(|_| EIO)?;
        let (nl, vl) = (h.name_len as usize, h.val_len.get() as usize);
        let mut bytes = first[XATTR_HEADER_SIZE..].to_vec();
        let mut parts = 1;
        let total = nl + vl;
        while bytes.len() < total {
            let v = self
                .get(g, &part_key(ino, hash, id, parts as u8))?
                .ok_or(EIO)?;
            bytes.extend_from_slice(&v);
            parts += 1;
        }
        if bytes.len() != total {
            return Err(EIO);
        }
        let value = bytes.split_off(nl);
        Ok((bytes, value, parts))
    }

    fn find_xattr(&self, g: &LockGuard, ino: u64, name: &[u8]) -> FsResult<Option<FoundXattr>> {
        let hash = xattr_name_hash(name);
        let mut k = part_key(ino, hash, 0, 0);
        let last = part_key(ino, hash, u64::MAX, u8::MAX);
        while let Some((key, v)) = self.next(g, &k, &last)? {
            if key.fourth == 0 {
                let (n, value, parts) = self.read_parts(g, ino, hash, key.third, &v)?;
                if n == name {
                    return Ok(Some(FoundXattr {
                        hash,
                        id: key.third,
                        parts,
                        value,
                    }));
                }
            }
            k = key.inc();
        }
        Ok(None)
    }

    /// The value of xattr `name`. Reads take the inode's local mutex too:
    /// a replace on this mount deletes the old parts and stores the new
    /// ones under it, and a read between the two must not see neither.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        check_xattr_name(name).map_err(|e| if e == EOPNOTSUPP { ENODATA } else { e })?;
        let g = self.locks.lock_inode(ino, LockMode::Read)?;
        let _local = self.lock_local(&[ino]);
        self.read_inode(&g, ino)?;
        Ok(self.find_xattr(&g, ino, name)?.ok_or(ENODATA)?.value)
    }

    /// The names of every xattr of an inode.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        let g = self.locks.lock_inode(ino, LockMode::Read)?;
        let _local = self.lock_local(&[ino]);
        self.read_inode(&g, ino)?;
        let mut names = Vec::new();
        let mut k = Key::new(zone::FS, ino, ty::XATTR, 0, 0, 0);
        let last = Key::new(zone::FS, ino, ty::XATTR, u64::MAX, u64::MAX, u8::MAX);
        while let Some((key, v)) = self.next(&g, &k, &last)? {
            if key.fourth == 0 {
                let (n, _, _) = self.read_parts(&g, ino, key.second, key.third, &v)?;
                names.push(n);
            }
            k = key.inc();
        }
        Ok(names)
    }

    /// Sets xattr `name` (flags XATTR_CREATE / XATTR_REPLACE).
    ///
    /// With ACLs enforced, an access ACL also sets the mode's permission
    /// bits, and one that says no more than the mode isn't kept (as on a
    /// local filesystem); a default ACL only goes on a directory.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: u32) -> FsResult<()> {
        self.setxattr_as(ino, name, value, flags, &|_| true)
    }

    /// `setxattr` by a caller that may or may not keep a file's setgid bit
    /// when it changes its mode: `keep_sgid(gid)` tells whether it is in
    /// group `gid` or has CAP_FSETID. If not, an access ACL that sets the
    /// mode also clears setgid, as chmod by such a caller does.
    pub fn setxattr_as(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: u32,
        keep_sgid: &dyn Fn(u32) -> bool,
    ) -> FsResult<()> {
        check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(E2BIG);
        }
        let is_acl = self.opts.acl && (name == acl::ACCESS || name == acl::DEFAULT);
        let parsed = if is_acl {
            Some(acl::Acl::parse(value)?)
        } else {
            None
        };
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        let mut a = self.read_inode(&g, ino)?;
        if name.starts_with(b"user.") {
            super::check_retention(&a)?;
        }
        let old = self.find_xattr(&g, ino, name)?;
        match (&old, flags & (XATTR_CREATE | XATTR_REPLACE)) {
            (Some(_), XATTR_CREATE) => return Err(EEXIST),
            (None, XATTR_REPLACE) => return Err(ENODATA),
            (_, f) if f == XATTR_CREATE | XATTR_REPLACE => return Err(EINVAL),
            _ => {}
        }
        let mut keep = true;
        if let Some(acl) = &parsed {
            if name == acl::DEFAULT && !a.is_dir() {
                return Err(EACCES);
            }
            if name == acl::ACCESS {
                let (bits, equiv) = acl.mode_bits();
                let mut mode = (a.mode() & !0o777) | bits;
                if !keep_sgid(a.inode.gid.get()) {
                    mode &= !libc::S_ISGID;
                }
                a.inode.mode = mode.into();
                keep = !equiv;
            }
        }
        {
            let op = self.begin(&[seqs_of(&a)])?;
            if let Some(o) = &old {
                self.delete_parts(&op, &g, ino, o)?;
            }
            if keep {
                self.store_xattr(&op, &g, &mut a, name, value, false)?;
            }
            a.inode.ctime = now();
            self.write_inode(&op, &g, &mut a, false)?;
        }
        drop(g);
        self.maybe_commit()
    }

    /// Writes the parts of a new xattr of `a` (the caller writes the
    /// inode). `fresh`: the inode is new, so its items can't exist yet.
    pub(super) fn store_xattr(
        &self,
        op: &Op,
        g: &LockGuard,
        a: &mut Attr,
        name: &[u8],
        value: &[u8],
        fresh: bool,
    ) -> FsResult<()> {
        let ino = a.ino;
        let id = a.inode.next_xattr_id.get();
        a.inode.next_xattr_id = (id + 1).into();
        let hash = xattr_name_hash(name);
        let mut bytes = XattrHeader::new(name.len() as u8, value.len() as u16)
            .as_bytes()
            .to_vec();
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        for (part, chunk) in bytes.chunks(XATTR_MAX_PART_SIZE).enumerate() {
            let k = part_key(ino, hash, id, part as u8);
            if fresh {
                self.put_new(g, op.seq(), &k, chunk);
            } else {
                self.put(g, op.seq(), &k, chunk)?;
            }
        }
        Ok(())
    }

    /// Rewrites an inode's access ACL from its new mode (chmod), if it has
    /// one and ACLs are enforced.
    pub(super) fn chmod_acl(&self, op: &Op, g: &LockGuard, a: &mut Attr) -> FsResult<()> {
        if !self.opts.acl {
            return Ok(());
        }
        let Some(old) = self.find_xattr(g, a.ino, acl::ACCESS)? else {
            return Ok(());
        };
        let mut acl = acl::Acl::parse(&old.value).map_err(|_| EIO)?;
        acl.chmod(a.mode());
        self.delete_parts(op, g, a.ino, &old)?;
        self.store_xattr(op, g, a, acl::ACCESS, &acl.encode(), false)
    }

    /// The default ACL of directory `dir`, if it has one.
    pub(super) fn default_acl(&self, g: &LockGuard, dir: u64) -> FsResult<Option<Vec<u8>>> {
        if !self.opts.acl {
            return Ok(None);
        }
        Ok(self.find_xattr(g, dir, acl::DEFAULT)?.map(|f| f.value))
    }

    fn delete_parts(&self, op: &Op, g: &LockGuard, ino: u64, f: &FoundXattr) -> FsResult<()> {
        for part in 0..f.parts {
            self.del(g, op.seq(), &part_key(ino, f.hash, f.id, part as u8))?;
        }
        Ok(())
    }

    /// Removes xattr `name`.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        check_xattr_name(name).map_err(|e| if e == EOPNOTSUPP { ENODATA } else { e })?;
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        let mut a = self.read_inode(&g, ino)?;
        if name.starts_with(b"user.") {
            super::check_retention(&a)?;
        }
        let f = self.find_xattr(&g, ino, name)?.ok_or(ENODATA)?;
        {
            let op = self.begin_freeing(&[seqs_of(&a)])?;
            self.delete_parts(&op, &g, ino, &f)?;
            a.inode.ctime = now();
            self.write_inode(&op, &g, &mut a, false)?;
        }
        drop(g);
        self.maybe_commit()
    }
}
