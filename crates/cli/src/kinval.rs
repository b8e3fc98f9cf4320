//! Dropping the kernel's caches of the inodes a lost cluster lock covered.
//!
//! Before a mount gives up (or lowers) a lock, the kernel must forget what
//! it caches under it: attributes, directory entries and file pages.
//!
//! - Attributes are dropped at once: that takes no kernel lock, and a reply
//!   to a request sent before the drop is not cached (the kernel's attribute
//!   version).
//! - Names are dropped one by one under their directory's lock, and pages
//!   under their page locks, on a thread of its own, through the helper
//!   process of `knotify` (a wait in the kernel there can't keep this
//!   process from exiting when it is killed). A request in flight
//!   may hold those while it waits for this very lock (a create holds its
//!   directory, a read or a partial write its pages). The lock driver
//!   (`scoutfs_core::mount::locks`) then lets such requests run under the lock it
//!   still holds, so they let go, and drops again what they cached. Where
//!   that can't help (a request waits to convert the lock, or keeps coming
//!   back), the drop is given up on: every name the kernel caches for this
//!   mount is expired at once (`FUSE_NOTIFY_INC_EPOCH`, which takes no
//!   lock), so each is looked up again before its next use, and the pages
//!   are dropped when the thread gets to them.
//!
//! A drop of pages given up on may leave pages that a shared mapping
//! dirtied, to be written back after the lock went: their versions are
//! frozen until every thread of the drop is done (see
//! `scoutfs_core::mount::fs::pages`).
//!
//! A name is recorded (in [`Known`]) before the request that may cache it
//! runs, so a drop that starts after the request took its lock finds it:
//! the kernel caches the reply under the directory's lock, which the drop
//! then waits for.

use crate::fuse::Known;
use crate::knotify::KernelNotify;
use fuser::{INodeNo, Notifier};
use scoutfs_core::mount::fs::pages::PageVersions;
use scoutfs_core::mount::locks::PendingDrop;
use scoutfs_format::key::zone;
use scoutfs_format::Key;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        // An unknown notification is refused as invalid; other errors
        // (the connection is going away at unmount) say nothing of it.
        let unknown = matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS));
        if unknown && !self.unsupported.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the kernel can't expire cached names at once ({e}; needs Linux 6.16): \
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
    /// For attributes (no kernel lock taken).
    pub notifier: Notifier,
    /// For names and pages, which may wait in the kernel (see `knotify`).
    pub knotify: Arc<KernelNotify>,
    pub epoch: Arc<Epoch>,
    /// The versions the cached pages of open files hold.
    pub versions: Arc<PageVersions>,
}

impl KernelCaches {
    /// Drops what the kernel caches in `start..=end`: attributes at
    /// once, names and pages on a thread; returns that drop.
    pub fn drop_range(&self, start: &Key, end: &Key) -> Option<Box<dyn PendingDrop>> {
        if start.zone != zone::FS {
            return None;
        }
        let range = start.first..=end.first;
        let (inos, names): (Vec<u64>, crate::fuse::Names) = {
            let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
            let inos: Vec<u64> = k.inodes.range(range.clone()).map(|(i, _)| *i).collect();
            let dirs: Vec<u64> = k.names.range(range).map(|(d, _)| *d).collect();
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
            return None;
        }
        let ranges = page_ranges(&self.known, &inos);
        let live = Arc::new(LivePages {
            versions: self.versions.clone(),
            state: Mutex::default(),
        });
        let drop = NamesAndPages {
            names: spawn(
                &self.knotify,
                "scoutfs-kinval-names",
                names,
                (),
                |n, (d, name)| {
                    n.inval_entry(d, &name);
                },
            ),
            pages: RefCell::new(spawn_pages(&self.knotify, ranges.clone(), &live)),
            ranges: RefCell::new(ranges),
            inos,
            live,
            known: self.known.clone(),
            knotify: self.knotify.clone(),
            epoch: self.epoch.clone(),
        };
        Some(Box::new(drop))
    }
}

/// The page ranges to drop of each of `inos`: all but those of its reads
/// and writes that wait for a lock. The kernel holds those locked
/// meanwhile, and they are not up to date; they are filled or written
/// under the next grant. (The pages of one that got its lock are dropped
/// once the kernel has its answer: the drop waits for their page locks.)
fn page_ranges(known: &Mutex<Known>, inos: &[u64]) -> PageRanges {
    let k = known.lock().unwrap_or_else(|p| p.into_inner());
    inos.iter()
        .map(|&ino| {
            let waiting = k.io.get(&ino).map(|m| {
                m.values()
                    .filter(|io| io.waiting.load(Ordering::SeqCst))
                    .map(|io| (io.off, io.len))
                    .collect()
            });
            (ino, unlocked_ranges(waiting.unwrap_or_default()))
        })
        .collect()
}

fn spawn_pages(n: &Arc<KernelNotify>, ranges: PageRanges, live: &Arc<LivePages>) -> Option<Part> {
    let guard = LiveThread::new(live);
    spawn(
        n,
        "scoutfs-kinval-pages",
        ranges,
        guard,
        |n, (ino, ranges)| {
            for (off, len) in ranges {
                n.inval_pages(ino, off as i64, len as i64);
            }
        },
    )
}

/// The threads of one drop of pages still running, and the inodes whose
/// page versions were frozen when the drop was given up on: thawed when
/// the last thread is done (a page written back waits in the kernel's
/// drop until the mount has answered it).
struct LivePages {
    versions: Arc<PageVersions>,
    state: Mutex<LiveState>,
}

#[derive(Default)]
struct LiveState {
    threads: usize,
    frozen: Vec<u64>,
}

impl LivePages {
    fn state(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The drop was given up on: freezes the versions of `inos`' pages
    /// if a thread still drops them.
    fn freeze(&self, inos: &[u64]) {
        let mut st = self.state();
        if st.threads > 0 {
            let frozen = self.versions.freeze(inos);
            st.frozen.extend(frozen);
        }
    }
}

/// One running thread of a drop of pages; the last one to end thaws.
struct LiveThread(Arc<LivePages>);

impl LiveThread {
    fn new(live: &Arc<LivePages>) -> LiveThread {
        live.state().threads += 1;
        LiveThread(live.clone())
    }
}

impl Drop for LiveThread {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.threads -= 1;
        if st.threads == 0 {
            let frozen = std::mem::take(&mut st.frozen);
            self.0.versions.thaw(&frozen);
        }
    }
}

/// Runs `f` on each of `items` on a thread, then drops `guard`; `None` if
/// there are none.
fn spawn<T: Send + 'static, G: Send + 'static>(
    n: &Arc<KernelNotify>,
    name: &str,
    items: Vec<T>,
    guard: G,
    f: fn(&KernelNotify, T),
) -> Option<Part> {
    if items.is_empty() {
        return None;
    }
    let n = n.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for i in items {
                f(&n, i);
            }
            drop(guard);
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        tracing::error!("no thread to drop kernel caches: {e}");
    }
    Some(Part {
        rx,
        done: Cell::new(false),
    })
}

/// The page-aligned ranges (offset, length; 0 to the end) that avoid the
/// pages of `busy` (offset, length) byte ranges.
fn unlocked_ranges(mut busy: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    const PAGE: u64 = 4096;
    busy.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0u64;
    for (off, len) in busy {
        let a = off / PAGE * PAGE;
        let b = off.saturating_add(len).div_ceil(PAGE).saturating_mul(PAGE);
        if a > from {
            out.push((from, a - from));
        }
        from = from.max(b);
    }
    if from <= i64::MAX as u64 {
        out.push((from, 0));
    }
    out
}

/// One kind of cache being dropped on its thread.
struct Part {
    rx: Receiver<()>,
    done: Cell<bool>,
}

impl Part {
    fn wait(&self, d: Duration) -> bool {
        if !self.done.get() {
            self.done.set(self.rx.recv_timeout(d).is_ok());
        }
        self.done.get()
    }
}

/// Per inode, the byte ranges (offset, length; 0 to the end) to drop.
type PageRanges = Vec<(u64, Vec<(u64, u64)>)>;

/// Names and pages being dropped, each on its thread.
struct NamesAndPages {
    names: Option<Part>,
    /// The latest drop of pages, and the ranges it drops.
    pages: RefCell<Option<Part>>,
    ranges: RefCell<PageRanges>,
    inos: Vec<u64>,
    /// Every thread of this drop of pages, the replaced ones too.
    live: Arc<LivePages>,
    known: Arc<Mutex<Known>>,
    knotify: Arc<KernelNotify>,
    epoch: Arc<Epoch>,
}

impl PendingDrop for NamesAndPages {
    fn wait(&self, d: Duration) -> bool {
        // Both run at once: the time waited for one counts for the other.
        let deadline = Instant::now() + d;
        let names = self
            .names
            .as_ref()
            .is_none_or(|p| p.wait(deadline.saturating_duration_since(Instant::now())));
        names && self.pages_wait(deadline.saturating_duration_since(Instant::now()))
    }

    fn pages_done(&self) -> bool {
        self.pages_wait(Duration::ZERO)
    }

    /// A read or write may have locked its pages and then come to wait
    /// for a lock after the pages drop began (and stopped at them): a new
    /// drop leaves them out.
    fn refresh(&self) {
        if self.pages_wait(Duration::ZERO) {
            return;
        }
        let ranges = page_ranges(&self.known, &self.inos);
        if ranges != *self.ranges.borrow() {
            *self.pages.borrow_mut() = spawn_pages(&self.knotify, ranges.clone(), &self.live);
            *self.ranges.borrow_mut() = ranges;
        }
    }

    fn give_up(&self) {
        if self.names.as_ref().is_some_and(|p| !p.wait(Duration::ZERO)) {
            self.epoch.bump();
        }
        self.live.freeze(&self.inos);
    }
}

impl NamesAndPages {
    fn pages_wait(&self, d: Duration) -> bool {
        self.pages.borrow().as_ref().is_none_or(|p| p.wait(d))
    }
}

#[cfg(test)]
mod tests {
    use super::unlocked_ranges;

    #[test]
    fn unlocked_ranges_skip_the_pages_of_requests_in_flight() {
        assert_eq!(unlocked_ranges(vec![]), vec![(0, 0)]);
        assert_eq!(unlocked_ranges(vec![(10, 100)]), vec![(4096, 0)]);
        assert_eq!(
            unlocked_ranges(vec![(8192, 4096), (100, 1)]),
            vec![(4096, 4096), (12288, 0)]
        );
        // Overlapping and unaligned ranges merge.
        assert_eq!(
            unlocked_ranges(vec![(5000, 5000), (4096, 100), (20000, 1)]),
            vec![(0, 4096), (12288, 4096), (20480, 0)]
        );
        assert_eq!(unlocked_ranges(vec![(u64::MAX - 5, 5)]).len(), 1);
    }
}
