//! Dropping the kernel's caches of the inodes a lost cluster lock covered.
//!
//! Before a mount gives up (or lowers) a lock, the kernel must forget what
//! it caches under it: attributes, directory entries and file pages. Each
//! kind has its own cost:
//!
//! - Attributes are dropped at once: that takes no kernel lock, and a reply
//!   to a request sent before the drop is not cached (the kernel's attribute
//!   version).
//! - Names are dropped one by one under their directory's lock, and pages
//!   under their page locks. A request in flight may hold those while it
//!   waits for this very lock (a create holds its directory, a write its
//!   pages), and it gets the lock only after the other mount is done. So
//!   the drop runs on a thread of its own, waited for (at most
//!   [`IDLE_WAIT`]) while nobody waits for the lock. Once somebody does
//!   (or at once when the caller must not block), and the names are not
//!   dropped yet, every name the kernel caches for this mount is expired at
//!   once (`FUSE_NOTIFY_INC_EPOCH`, which takes no lock): each is looked up
//!   again before its next use. The thread finishes the drop as soon as
//!   the waiting requests are answered.
//!
//! A name is recorded (in [`Known`]) before the request that may cache it
//! runs, so a drop that starts after the request took its lock finds it:
//! the kernel caches the reply under the directory's lock, which the drop
//! then waits for.
//!
//! What stays: pages held locked by a request that waits for the lock are
//! dropped only when it has been answered. A `read` of another page of such
//! a file in that moment may return what the page held before. The
//! attributes were dropped, so a read past the cached size, a `stat`, or
//! an open sees the other mount's change.

use crate::fuse::Known;
use fuser::{INodeNo, Notifier};
use scoutfs_format::key::zone;
use scoutfs_format::Key;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a drop waits while nobody waits for the lock.
pub const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How often a waiting drop looks for callers waiting for the lock.
const WAITERS_POLL: Duration = Duration::from_millis(2);

/// The FUSE notification that expires every cached entry of a connection
/// (protocol 7.44, Linux 6.16).
const FUSE_NOTIFY_INC_EPOCH: i32 = 8;

/// Expires every name the kernel caches for this mount.
pub struct Epoch {
    fd: OwnedFd,
    unsupported: AtomicBool,
}

impl Epoch {
    /// `fd` is (a duplicate of) the session's FUSE device.
    pub fn new(fd: OwnedFd) -> Epoch {
        Epoch {
            fd,
            unsupported: AtomicBool::new(false),
        }
    }

    /// Whether the kernel expired its names.
    pub fn bump(&self) -> bool {
        if self.unsupported.load(Ordering::Relaxed) {
            return false;
        }
        // struct fuse_out_header: len, error (the notification code), unique 0.
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&16u32.to_ne_bytes());
        hdr[4..8].copy_from_slice(&FUSE_NOTIFY_INC_EPOCH.to_ne_bytes());
        // SAFETY: writes 16 bytes from a live buffer to an fd we own.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), hdr.as_ptr().cast(), hdr.len()) };
        if n == hdr.len() as isize {
            return true;
        }
        let e = std::io::Error::last_os_error();
        if !self.unsupported.swap(true, Ordering::Relaxed) {
            eprintln!(
                "scoutfs: the kernel can't expire cached names at once ({e}; needs Linux 6.16): \
                 names cached in a directory whose lock goes while a request there waits for \
                 it are dropped when that request is answered"
            );
        }
        false
    }
}

/// Drops the kernel's caches of the inodes in a lock's range.
pub struct KernelCaches {
    pub known: Arc<Mutex<Known>>,
    pub notifier: Notifier,
    pub epoch: Epoch,
}

impl KernelCaches {
    /// Drops what the kernel caches in `start..=end`; `may_wait` tells
    /// whether the drop may still wait for the kernel locks it needs.
    pub fn drop_range(&self, start: &Key, end: &Key, may_wait: &dyn Fn() -> bool) {
        if start.zone != zone::FS {
            return;
        }
        let in_range = |i: &u64| *i >= start.first && *i <= end.first;
        let (inos, names): (Vec<u64>, Vec<(u64, Vec<u8>)>) = {
            let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
            let inos = k.inodes.keys().copied().filter(in_range).collect();
            let dirs: Vec<u64> = k.names.keys().copied().filter(in_range).collect();
            let mut names = Vec::new();
            for d in dirs {
                for (n, _) in k.names.remove(&d).unwrap_or_default() {
                    names.push((d, n));
                }
            }
            (inos, names)
        };
        for &ino in &inos {
            let _ = self.notifier.inval_inode(INodeNo(ino), -1, 0);
        }
        if inos.is_empty() && names.is_empty() {
            return;
        }
        let had_names = !names.is_empty();
        let n = self.notifier.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("scoutfs-kinval".into())
            .spawn(move || {
                for (d, name) in names {
                    let _ = n.inval_entry(INodeNo(d), std::ffi::OsStr::from_bytes(&name));
                }
                for ino in inos {
                    let _ = n.inval_inode(INodeNo(ino), 0, 0);
                }
                let _ = tx.send(());
            });
        if spawned.is_ok() {
            let began = Instant::now();
            let mut waited = false;
            while may_wait() {
                if rx.recv_timeout(WAITERS_POLL).is_ok() {
                    return;
                }
                if began.elapsed() >= IDLE_WAIT {
                    waited = true;
                    break;
                }
            }
            // One last look: it may have finished while we looked.
            if rx.try_recv().is_ok() {
                return;
            }
            if waited {
                eprintln!("scoutfs: dropping kernel caches waits for a request in flight");
            }
        }
        if had_names {
            self.epoch.bump();
        }
    }
}
