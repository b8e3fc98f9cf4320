//! The inodes this mount has open, for the cluster's open-inode map.
//!
//! An inode whose last name is removed (nlink 0) keeps an orphan item and
//! all its items until no mount has it open; only then may a mount delete
//! it. Each mount counts its opens here (a file or directory handle, or a
//! create that returns an open file); the mount that would delete asks the
//! server for the inode's group (`OPEN_INO_MAP`), and the server asks every
//! mounted client, this one included, for its map of that group and answers
//! their union ([`crate::cluster::omap`]). The deleter asks while it holds the inode's write lock, and
//! an open takes the inode's read lock: an inode is either open somewhere
//! when the question is answered, or can no longer be opened.

use crate::cluster::net::msg::OpenInoMap;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Open counts by inode.
#[derive(Default)]
pub struct OpenInodes {
    open: Mutex<BTreeMap<u64, u64>>,
}

impl OpenInodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more open of `ino`.
    pub fn pin(&self, ino: u64) {
        *self.lock().entry(ino).or_insert(0) += 1;
    }

    /// One open of `ino` ended; true when it is open no more here.
    pub fn unpin(&self, ino: u64) -> bool {
        let mut m = self.lock();
        match m.get_mut(&ino) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                m.remove(&ino);
                true
            }
            None => true,
        }
    }

    pub fn is_open(&self, ino: u64) -> bool {
        self.lock().contains_key(&ino)
    }

    /// Inodes open here.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This mount's map of `group`.
    pub fn map(&self, group: u64) -> OpenInoMap {
        let n = scoutfs_format::wire::OPEN_INO_MAP_GROUP_NR;
        let mut m = OpenInoMap {
            group,
            ..Default::default()
        };
        let first = group.saturating_mul(n);
        let last = first.saturating_add(n - 1);
        for &ino in self.lock().range(first..=last).map(|(i, _)| i) {
            m.set(ino);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::OpenInodes;

    #[test]
    fn counts_opens_and_maps_a_group() {
        let o = OpenInodes::default();
        o.pin(1024 + 5);
        o.pin(1024 + 5);
        o.pin(1024 + 1023);
        o.pin(2048);
        let m = o.map(1);
        assert!(m.test(5) && m.test(1023) && !m.test(0) && !m.test(6));
        assert_eq!(m.bits.iter().map(|b| b.count_ones()).sum::<u32>(), 2);
        assert!(!o.unpin(1024 + 5));
        assert!(o.is_open(1024 + 5));
        assert!(o.unpin(1024 + 5));
        assert!(!o.is_open(1024 + 5));
        assert!(o.unpin(7), "an inode never opened is not open");
        assert_eq!(o.len(), 2);
        assert!(o.map(3).bits.iter().all(|&b| b == 0));
    }
}
