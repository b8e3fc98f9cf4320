//! Data waiters: reads, writes and size changes that met offline extents
//! (data released to an archive) and wait for them to be staged.
//!
//! A waiter is registered while its operation still holds the inode's
//! lock, so that no change to the inode can come between finding the
//! extent offline and waiting: every change that could end the wait either
//! comes later on this mount ([`DataWaits::wake_inode`]: stage, release,
//! punch, truncate) or from another mount, which must first take the
//! inode's lock from this one ([`DataWaits::wake_range`], called as the
//! lock is invalidated). While an inode has waiters, the lock client keeps
//! its lock cached (`Locks::pin`), so that only such an invalidation takes
//! it away. A woken waiter runs its operation again from the start: it may
//! find the data, or wait again.
//!
//! Waiting holds no thread: a waiter is a closure ([`Resume`]) run on one
//! of the resume threads when it is woken or failed, so a thousand waiting
//! reads through FUSE leave every request thread free. Blocking callers
//! (in-process users) wait on a channel instead ([`DataWaits::block`]).
//!
//! `data-wait-err` fails the matching waiters with an errno of the
//! agent's choosing ([`DataWaits::fail`]); unmounting fails them all.
//!
//! Each block (or op) that gains its first waiter is handed to the
//! followers of [`Feed`] (`data-waiting --follow`) and to the mount's
//! [`OnNewWaiter`] hook, which tells the server, which tells the other
//! mounts' feeds.

use crate::cluster::lock::inode_lock_range;
use crate::mount::locks::Locks;
use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

/// Op bits of a waiter, the original's.
pub const DWO_READ: u8 = 1;
pub const DWO_WRITE: u8 = 2;
pub const DWO_CHANGE_SIZE: u8 = 4;
pub const DWO_ALL: u8 = DWO_READ | DWO_WRITE | DWO_CHANGE_SIZE;

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// Something changed: run the operation again.
    Woken,
    /// Fail the operation with this errno.
    Failed(i32),
}

/// What a woken waiter runs (on a resume thread).
pub type Resume = Box<dyn FnOnce(WaitEnd) + Send>;

/// Makes the [`Resume`] of an operation that is about to wait (called at
/// most once, only when it waits, so that an operation that does not wait
/// keeps what the resume would have taken, such as its reply).
pub type MakeResume<'a> = &'a mut dyn FnMut() -> Resume;

/// An operation that found offline data: the block it waits for and what
/// kind of operation it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offline {
    pub iblock: u64,
    pub op: u8,
}

/// One entry of [`DataWaits::list`]: the waiters on one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Waiting {
    pub ino: u64,
    pub iblock: u64,
    /// The `DWO_*` bits of the waiters.
    pub ops: u8,
}

/// Resume threads: waiters run their operation again here.
const RESUME_THREADS: usize = 2;

struct Waiter {
    op: u8,
    resume: Resume,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// (ino, iblock, id) → waiter.
    waiters: BTreeMap<(u64, u64, u64), Waiter>,
    /// Inodes with waiters, by count, each pinning its lock.
    inodes: BTreeMap<u64, usize>,
    /// Set once unmounting: new waiters fail at once.
    closed: Option<i32>,
    /// Errors given by `fail`, applied to operations that come to wait on
    /// the same blocks soon after (see [`FAIL_LINGER`]).
    failed: Vec<Failed>,
}

/// An error `fail` gave to the waiters of a range.
struct Failed {
    ino: u64,
    from: u64,
    to: u64,
    ops: u8,
    errno: i32,
    until: std::time::Instant,
}

/// How long an error given to waiters also fails operations that come to
/// wait on the same blocks afterwards, unless the inode changes first. The
/// kernel answers a failed readahead by reading the page again at once; it
/// is that read the reader sees fail.
pub const FAIL_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Blocks that began to be waited on, as a follower gets them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedItem {
    /// Waited on by this mount (else by another, as the server told).
    pub local: bool,
    pub blocks: Vec<Waiting>,
}

/// Those that follow the waiters as they come (`data-waiting --follow`).
#[derive(Default)]
pub struct Feed {
    subs: Mutex<Vec<Sender<FeedItem>>>,
}

impl Feed {
    /// Starts following; the receiver gets every item published from now
    /// on, and dropping it stops.
    pub fn subscribe(&self) -> Receiver<FeedItem> {
        let (tx, rx) = channel();
        self.subs.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// Hands an item to every follower, forgetting those that stopped.
    pub fn publish(&self, item: FeedItem) {
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.send(item.clone()).is_ok());
    }
}

/// Told of each block that an operation of this mount began to wait for,
/// with the op (the mount tells the server, which tells the others).
pub type OnNewWaiter = Box<dyn Fn(Waiting) + Send + Sync>;

/// The mount's data waiters.
pub struct DataWaits {
    st: Mutex<State>,
    locks: Arc<Locks>,
    resume: Mutex<Option<Sender<(Resume, WaitEnd)>>>,
    /// Followers of new waiters, this mount's and (as the server tells)
    /// other mounts'.
    pub feed: Feed,
    on_new: OnceLock<OnNewWaiter>,
}

impl DataWaits {
    pub fn new(locks: Arc<Locks>) -> Arc<DataWaits> {
        let (tx, rx) = channel::<(Resume, WaitEnd)>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..RESUME_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("scoutfs-resume-{i}"))
                .spawn(move || resume_loop(&rx));
            if let Err(e) = spawned {
                tracing::warn!("starting a resume thread: {e}");
            }
        }
        Arc::new(DataWaits {
            st: Mutex::new(State::default()),
            locks,
            resume: Mutex::new(Some(tx)),
            feed: Feed::default(),
            on_new: OnceLock::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiter on `ino`; the caller holds the inode's lock.
    pub fn add(&self, ino: u64, off: Offline, resume: Resume) {
        let mut st = self.state();
        if let Some(errno) = st.closed {
            drop(st);
            self.run(resume, WaitEnd::Failed(errno));
            return;
        }
        let now = std::time::Instant::now();
        st.failed.retain(|f| f.until > now);
        let failed = st
            .failed
            .iter()
            .find(|f| f.ino == ino && (f.from..f.to).contains(&off.iblock) && f.ops & off.op != 0);
        if let Some(f) = failed {
            let errno = f.errno;
            drop(st);
            self.run(resume, WaitEnd::Failed(errno));
            return;
        }
        // Whether this op is new on this block, for the followers.
        let had = st
            .waiters
            .range((ino, off.iblock, 0)..=(ino, off.iblock, u64::MAX))
            .fold(0, |ops, (_, w)| ops | w.op);
        st.next_id += 1;
        let id = st.next_id;
        st.waiters
            .insert((ino, off.iblock, id), Waiter { op: off.op, resume });
        let n = st.inodes.entry(ino).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.locks.pin(inode_lock_range(ino).0);
        }
        drop(st);
        if had & off.op == 0 {
            let w = Waiting {
                ino,
                iblock: off.iblock,
                ops: off.op,
            };
            self.feed.publish(FeedItem {
                local: true,
                blocks: vec![w],
            });
            if let Some(f) = self.on_new.get() {
                f(w);
            }
        }
    }

    /// Sets what is told of each new waiter (once).
    pub fn set_on_new(&self, f: OnNewWaiter) {
        let _ = self.on_new.set(f);
    }

    /// Takes the waiters matching `pick` out, unpinning their inodes.
    fn take(&self, pick: impl Fn(u64, u64, u8) -> bool) -> Vec<Resume> {
        let mut st = self.state();
        let keys: Vec<(u64, u64, u64)> = st
            .waiters
            .iter()
            .filter(|(k, w)| pick(k.0, k.1, w.op))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(w) = st.waiters.remove(&k) {
                out.push(w.resume);
            }
            let last = match st.inodes.get_mut(&k.0) {
                Some(n) => {
                    *n -= 1;
                    *n == 0
                }
                None => false,
            };
            if last {
                st.inodes.remove(&k.0);
                self.locks.unpin(inode_lock_range(k.0).0);
            }
        }
        out
    }

    fn run(&self, r: Resume, end: WaitEnd) {
        let tx = self
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match tx {
            Some(tx) => {
                if let Err(e) = tx.send((r, end)) {
                    // No resume thread: run it here.
                    let (r, end) = e.0;
                    r(end);
                }
            }
            None => r(end),
        }
    }

    /// Something of `ino` changed on this mount: its waiters look again.
    pub fn wake_inode(&self, ino: u64) {
        {
            let mut st = self.state();
            st.failed.retain(|f| f.ino != ino);
            if !st.inodes.contains_key(&ino) {
                return;
            }
        }
        for r in self.take(|i, _, _| i == ino) {
            self.run(r, WaitEnd::Woken);
        }
    }

    /// The lock of inodes `first..=last` is being taken away (another
    /// mount may change them): their waiters look again.
    pub fn wake_range(&self, first: u64, last: u64) {
        let any = {
            let mut st = self.state();
            st.failed.retain(|f| !(first..=last).contains(&f.ino));
            st.inodes.range(first..=last).next().is_some()
        };
        if any {
            for r in self.take(|i, _, _| (first..=last).contains(&i)) {
                self.run(r, WaitEnd::Woken);
            }
        }
    }

    /// Fails the waiters of `ino` on blocks `from..to` whose op is in
    /// `ops` with `errno`, and those that come to wait there within
    /// [`FAIL_LINGER`] unless the inode changes first; returns how many
    /// were waiting.
    pub fn fail(&self, ino: u64, from: u64, to: u64, ops: u8, errno: i32) -> usize {
        {
            let mut st = self.state();
            let now = std::time::Instant::now();
            st.failed.retain(|f| f.until > now);
            st.failed.push(Failed {
                ino,
                from,
                to,
                ops,
                errno,
                until: now + FAIL_LINGER,
            });
        }
        let rs = self.take(|i, b, op| i == ino && (from..to).contains(&b) && op & ops != 0);
        let n = rs.len();
        for r in rs {
            self.run(r, WaitEnd::Failed(errno));
        }
        n
    }

    /// The waiters after (`ino`, `iblock`), in (ino, iblock) order, one
    /// entry per block with the ops of its waiters, at most `max`.
    pub fn list(&self, after_ino: u64, after_iblock: u64, max: usize) -> Vec<Waiting> {
        let st = self.state();
        let mut out: Vec<Waiting> = Vec::new();
        let from = (after_ino, after_iblock.saturating_add(1), 0);
        let from = if after_iblock == u64::MAX {
            (after_ino.saturating_add(1), 0, 0)
        } else {
            from
        };
        for (k, w) in st.waiters.range(from..) {
            match out.last_mut() {
                Some(l) if l.ino == k.0 && l.iblock == k.1 => l.ops |= w.op,
                _ => {
                    if out.len() == max {
                        break;
                    }
                    out.push(Waiting {
                        ino: k.0,
                        iblock: k.1,
                        ops: w.op,
                    });
                }
            }
        }
        out
    }

    /// How many operations wait.
    pub fn count(&self) -> usize {
        self.state().waiters.len()
    }

    /// Unmounting: every waiter fails with `errno`, and so does every
    /// later one; the resume threads end once they have run them.
    pub fn close(&self, errno: i32) {
        self.state().closed = Some(errno);
        for r in self.take(|_, _, _| true) {
            self.run(r, WaitEnd::Failed(errno));
        }
        self.resume.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Runs `attempt` until it does not wait: for callers that may block
    /// their thread. `attempt` gets what makes the resume to register when
    /// it waits, and returns None then.
    pub fn block<T>(
        &self,
        mut attempt: impl FnMut(MakeResume<'_>) -> Option<Result<T, i32>>,
    ) -> Result<T, i32> {
        loop {
            let (tx, rx): (Sender<WaitEnd>, Receiver<WaitEnd>) = channel();
            let mut make = || -> Resume {
                let tx = tx.clone();
                Box::new(move |end| {
                    let _ = tx.send(end);
                })
            };
            if let Some(r) = attempt(&mut make) {
                return r;
            }
            drop(tx);
            match rx.recv() {
                Ok(WaitEnd::Woken) => continue,
                Ok(WaitEnd::Failed(errno)) => return Err(errno),
                Err(_) => return Err(libc::EIO),
            }
        }
    }
}

fn resume_loop(rx: &Mutex<Receiver<(Resume, WaitEnd)>>) {
    loop {
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok((r, end)) => r(end),
            Err(_) => return,
        }
    }
}
