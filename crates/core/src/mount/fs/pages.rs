//! The file versions that the kernel's cached pages of open files hold,
//! so that a page written back from a shared mapping never undoes another
//! mount's write.
//!
//! FUSE tells a mount nothing when a store through a shared mapping first
//! dirties a cached page (the original took the inode's WRITE lock in its
//! page_mkwrite). The kernel writes the page back later, whole: the bytes
//! stored, and the rest of the page as it was cached. That rest is only
//! current if no other mount changed the file since this mount cached the
//! page. Losing the inode's lock drops the cached pages, and the kernel
//! writes dirty ones back as it drops them. But that write-back needs the
//! WRITE lock, which it can only get after the mount that is taking the
//! lock away: the drop is given up on, and the page arrives after the
//! other mount's write, stale around the stores.
//!
//! So, per open file, this keeps the data_version its cached pages hold:
//! the version of this mount's last read or write of it (each under the
//! inode's lock). A drop that is given up on freezes it for the pages it
//! leaves, until the drop is done (it waits for their write-backs). A
//! write-back is applied only if the file is still at that version, or at
//! what this mount's own changes since made it; else it fails with EIO,
//! which the kernel reports to the mapping's msync, fsync or close. Bytes
//! stored through a mapping and never written back were never
//! acknowledged; another mount's write that was must not be undone.

use std::collections::HashMap;
use std::sync::Mutex;

/// What the kernel's pages of one open file hold.
#[derive(Debug, Default)]
struct Entry {
    /// The data_version of this mount's last read or change of the file.
    seen: u64,
    /// While pages a given-up drop left may still be written back: the
    /// version they hold, and how many such drops are not done.
    frozen: Option<(u64, u32)>,
}

/// The data_versions of the open files' cached pages (see the module
/// comment).
#[derive(Debug, Default)]
pub struct PageVersions {
    files: Mutex<HashMap<u64, Entry>>,
}

impl PageVersions {
    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `ino` was opened here, at `data_version` (under its lock). A file
    /// already open keeps what it has.
    pub(crate) fn opened(&self, ino: u64, data_version: u64) {
        self.files().entry(ino).or_insert(Entry {
            seen: data_version,
            frozen: None,
        });
    }

    /// The last close of `ino` here: no mapping of it is left.
    pub(crate) fn closed(&self, ino: u64) {
        self.files().remove(&ino);
    }

    /// This mount read `ino` at `data_version` (under its lock).
    pub(crate) fn read(&self, ino: u64, data_version: u64) {
        if let Some(e) = self.files().get_mut(&ino) {
            e.seen = data_version;
        }
    }

    /// This mount changed `ino`'s data from `before` to `after` (under its
    /// WRITE lock). Frozen pages at `before` had only this change since.
    pub(crate) fn changed(&self, ino: u64, before: u64, after: u64) {
        if let Some(e) = self.files().get_mut(&ino) {
            e.seen = after;
            if let Some((v, _)) = e.frozen.as_mut() {
                if *v == before {
                    *v = after;
                }
            }
        }
    }

    /// A drop of `inos`' pages was given up on: pages it has yet to drop
    /// hold the versions seen now. Returns the open ones, to [`thaw`]
    /// once the drop is done.
    ///
    /// [`thaw`]: PageVersions::thaw
    pub fn freeze(&self, inos: &[u64]) -> Vec<u64> {
        let mut files = self.files();
        let mut out = Vec::new();
        for ino in inos {
            if let Some(e) = files.get_mut(ino) {
                e.frozen = Some(match e.frozen {
                    Some((v, n)) => (v, n + 1),
                    None => (e.seen, 1),
                });
                out.push(*ino);
            }
        }
        out
    }

    /// A given-up drop of `inos`' pages is done.
    pub fn thaw(&self, inos: &[u64]) {
        let mut files = self.files();
        for ino in inos {
            if let Some(e) = files.get_mut(ino) {
                e.frozen = match e.frozen {
                    Some((v, n)) if n > 1 => Some((v, n - 1)),
                    _ => None,
                };
            }
        }
    }

    /// The data_version a write-back of `ino`'s pages must find: None if
    /// the file is not open here (nothing to hold it to).
    pub(crate) fn write_back_base(&self, ino: u64) -> Option<u64> {
        let files = self.files();
        let e = files.get(&ino)?;
        Some(e.frozen.map_or(e.seen, |(v, _)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::PageVersions;

    #[test]
    fn a_frozen_version_follows_only_this_mounts_changes() {
        let p = PageVersions::default();
        assert_eq!(p.write_back_base(7), None, "not open");
        p.opened(7, 5);
        p.read(7, 5);
        assert_eq!(p.write_back_base(7), Some(5));
        // Given up: frozen at 5. Another mount wrote 6; this one reads
        // it and writes 7: the frozen pages still hold 5.
        assert_eq!(p.freeze(&[7, 8]), vec![7]);
        p.read(7, 6);
        p.changed(7, 6, 7);
        assert_eq!(p.write_back_base(7), Some(5));
        // Two overlapping drops: frozen until both are done.
        p.freeze(&[7]);
        p.thaw(&[7]);
        assert_eq!(p.write_back_base(7), Some(5));
        p.thaw(&[7]);
        assert_eq!(p.write_back_base(7), Some(7), "thawed: what was seen last");
        // Frozen with no other change: this mount's own changes carry it.
        p.freeze(&[7]);
        p.changed(7, 7, 8);
        assert_eq!(p.write_back_base(7), Some(8));
        p.thaw(&[7]);
        p.opened(7, 100);
        assert_eq!(p.write_back_base(7), Some(8), "a second open keeps it");
        p.closed(7);
        assert_eq!(p.write_back_base(7), None, "closed");
    }
}
