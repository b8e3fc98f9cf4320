//! From inode numbers back to names, for programs that learn of files by
//! number (an inode index walk, a data waiter) and never walk the
//! namespace: the entries that link to an inode, its paths from the root,
//! and the inode numbers in use around it.
//!
//! Every entry has a LINK_BACKREF item under its target inode, keyed
//! (target, dir, readdir pos), so an inode's names are one range of its
//! own items, and a directory's parent is its one backref. A path is built
//! upward from the entry to the root, reading each directory under its own
//! READ lock, one lock at a time. Like the original's, a path is not
//! atomic with renames of its directories: a rename racing the walk can
//! give a path that never existed as a whole, and a directory removed
//! during the walk makes it fail with ESTALE.

use super::inode::inode_key;
use super::{Fs, FsError, FsResult, EIO, ENAMETOOLONG, ENOENT};
use crate::cluster::lock::LockMode;
use crate::error::{CorruptKind, Error};
use crate::mount::locks::LockGuard;
use scoutfs_format::consts::ROOT_INO;
use scoutfs_format::dir::{decode_dirent, DirentHeader};
use scoutfs_format::key::{ty, zone};
use scoutfs_format::Key;

/// The longest path built (Linux's PATH_MAX, with its NUL).
pub const PATH_MAX: usize = 4096;
/// The inode numbers one allocation group holds.
pub const INO_GROUP_NR: u64 = 1024;

/// One directory entry that links to an inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referring {
    pub dir_ino: u64,
    pub dir_pos: u64,
    pub ino: u64,
    /// `DT_*` type of the inode.
    pub dt: u8,
    pub name: Vec<u8>,
}

/// One path of an inode, and the entry it ends in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InoPath {
    pub dir_ino: u64,
    pub dir_pos: u64,
    /// `DT_*` type of the inode.
    pub dt: u8,
    /// Relative to the filesystem's root, without a leading `/`; empty for
    /// the root itself.
    pub path: Vec<u8>,
}

fn backref_range(target: u64, dir: u64, pos: u64) -> (Key, Key) {
    (
        Key::new(zone::FS, target, ty::LINK_BACKREF, dir, pos, 0),
        Key::new(
            zone::FS,
            target,
            ty::LINK_BACKREF,
            u64::MAX,
            u64::MAX,
            u8::MAX,
        ),
    )
}

fn entry_of(key: &Key, val: &[u8]) -> FsResult<Referring> {
    let bad = |why: String| {
        FsError::from(Error::corrupt(
            CorruptKind::ItemInvalid,
            0,
            0,
            format!("link backref {key}: {why}"),
        ))
    };
    let (h, name): (DirentHeader, &[u8]) = decode_dirent(val).map_err(|e| bad(e.to_string()))?;
    if h.ino.get() != key.first || h.pos.get() != key.third {
        return Err(bad(format!(
            "names inode {} at pos {}",
            h.ino.get(),
            h.pos.get()
        )));
    }
    Ok(Referring {
        dir_ino: key.second,
        dir_pos: key.third,
        ino: key.first,
        dt: h.ty,
        name: name.to_vec(),
    })
}

impl Fs {
    fn backrefs(
        &self,
        g: &LockGuard,
        ino: u64,
        after: (u64, u64),
        max: usize,
    ) -> FsResult<Vec<Referring>> {
        let (first, last) = backref_range(ino, after.0, after.1);
        self.next_many(g, &first, &last, max)?
            .iter()
            .map(|(k, v)| entry_of(k, v))
            .collect()
    }

    /// The entries that link to `ino`, from (`dir_ino`, `dir_pos`) on, in
    /// (dir, pos) order, at most `max`. ENOENT if the inode doesn't exist.
    pub fn referring_entries(
        &self,
        ino: u64,
        from: (u64, u64),
        max: usize,
    ) -> FsResult<Vec<Referring>> {
        let g = self.locks.lock_inode(ino, LockMode::Read)?;
        if self.get(&g, &inode_key(ino))?.is_none() {
            return Err(ENOENT);
        }
        self.backrefs(&g, ino, from, max)
    }

    /// The path of `ino` through its first entry at or after (`dir_ino`,
    /// `dir_pos`); None when it has no more entries. The root's path is
    /// empty. ENOENT if the inode doesn't exist, ENAMETOOLONG past
    /// [`PATH_MAX`], ESTALE if a directory of the path went away.
    pub fn ino_path(&self, ino: u64, from: (u64, u64)) -> FsResult<Option<InoPath>> {
        if ino == ROOT_INO {
            return Ok((from == (0, 0)).then(|| InoPath {
                dir_ino: 0,
                dir_pos: 0,
                dt: scoutfs_format::dir::DT_DIR,
                path: Vec::new(),
            }));
        }
        let Some(entry) = self.referring_entries(ino, from, 1)?.pop() else {
            return Ok(None);
        };
        let mut parts = vec![entry.name];
        let mut len = parts[0].len();
        let mut dir = entry.dir_ino;
        while dir != ROOT_INO {
            let up = {
                let g = self.locks.lock_inode(dir, LockMode::Read)?;
                self.backrefs(&g, dir, (0, 0), 1)?.pop()
            };
            // A directory has one entry; none means it was removed while
            // the path was read.
            let Some(up) = up else {
                return Err(FsError(libc::ESTALE));
            };
            len += 1 + up.name.len();
            if len >= PATH_MAX {
                return Err(ENAMETOOLONG);
            }
            if up.dt != scoutfs_format::dir::DT_DIR {
                return Err(EIO);
            }
            parts.push(up.name);
            dir = up.dir_ino;
        }
        parts.reverse();
        Ok(Some(InoPath {
            dir_ino: entry.dir_ino,
            dir_pos: entry.dir_pos,
            dt: entry.dt,
            path: parts.join(&b'/'),
        }))
    }

    /// The inode numbers in use in the group of [`INO_GROUP_NR`] that
    /// holds `ino`, in order.
    pub fn allocated_inos(&self, ino: u64) -> FsResult<Vec<u64>> {
        let g = self.locks.lock_inode(ino, LockMode::Read)?;
        let start = ino & !(INO_GROUP_NR - 1);
        let end = start + (INO_GROUP_NR - 1);
        let last = Key::new(zone::FS, end, u8::MAX, u64::MAX, u64::MAX, u8::MAX);
        let mut out = Vec::new();
        let mut k = inode_key(start);
        // The first item at or after each inode number: an inode's own
        // item comes first among its items, so one read per inode in use.
        while let Some((key, _)) = self.next(&g, &k, &last)? {
            if key.ty == ty::INODE {
                out.push(key.first);
            }
            if key.first >= end {
                break;
            }
            k = inode_key(key.first + 1);
        }
        Ok(out)
    }
}
