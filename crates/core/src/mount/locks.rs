//! The mount's lock driver: threads, waiting and messages around the
//! [`LockClient`] state machine.
//!
//! `lock` asks the state machine for a user of a range in a mode; when it
//! must wait, the request (if any) goes to the server and the caller sleeps
//! until the lock is woken, then asks again. Grants and invalidations from
//! the server are fed to the state machine in arrival order under one mutex.
//! Invalidations are carried out on a worker thread, never on the client's
//! receive thread: they may have to commit the transaction (when the lock
//! dirtied it), which needs the receive thread to deliver the commit's
//! response. Then the item cache drops the range (unless WRITE→READ), the
//! kernel's caches are told to drop it, and the answer goes to the server.
//! When the kernel's drop waits on requests that wait for this lock, they
//! are admitted under the mode still held (`cluster::lock::client`, "Admission"), on a
//! thread of the invalidation's own (an admitted user may wait for a lock
//! whose invalidation is queued behind it on the worker), and the commit
//! and drops are done again once they have left.
//!
//! When the server changes (a new term), the state machine is told before
//! anything the new server sends: the old server's requests are void (their
//! ids are forgotten), the caches stay (the locks are still held), and the
//! new server's LOCK_RECOVER requests are answered at once, on the receive
//! thread, from the machine's granted modes.
//!
//! Ordering rules for callers: take several locks in ascending key order
//! (`lock_inodes` does), and never wait for a lock while holding the
//! transaction.

use crate::cluster::client::{Client, Handler};
use crate::cluster::lock::client::{Acquire, ClientAction, LockClient};
use crate::cluster::lock::{inode_lock_range, LockMode, LockMsg, RECOVER_ENTRIES_MAX};
use crate::cluster::net::msg::{ClientResponse, ServerRequest};
use crate::error::{Error, Result};
use crate::mount::item::{Cover, ItemCache};
use crate::mount::omap::OpenInodes;
use crate::mount::trans::Trans;
use crate::types::Rid;
use scoutfs_format::key::zone;
use scoutfs_format::Key;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Idle granted locks kept before the oldest are given back.
pub const LOCK_IDLE_MAX_DEFAULT: usize = 10_000;

/// A drop of kernel caches that may still be running: names and pages
/// are dropped under kernel locks that a request in flight may hold while
/// it waits for the very lock being given up.
pub trait PendingDrop: Send {
    /// Waits up to `d` for the drop; true once it is done.
    fn wait(&self, d: Duration) -> bool;
    /// Whether only names are left to drop: `give_up` then loses nothing.
    fn pages_done(&self) -> bool;
    /// Looks again at what the drop must leave alone (requests that came
    /// to wait for a lock since it began), and starts it again if that
    /// changed.
    fn refresh(&self);
    /// The drop can't be waited for any longer: makes sure the kernel
    /// serves no name it would have dropped (the rest finishes later).
    fn give_up(&self);
}

/// Called with a key range whose kernel caches must be dropped before the
/// lock goes. Drops what it can at once and returns what is left, if
/// anything (see `scoutfs mount`).
/// Answers a DATA_WAITING or DATA_WAIT_ERR request of the server.
pub type WaitersHandler = Box<dyn Fn(&ServerRequest) -> ClientResponse + Send + Sync>;

/// Told of the range of each lock being invalidated (not a WRITE to READ
/// downgrade): another mount may change what it covers.
pub type LockLost = Box<dyn Fn(&Key, &Key) + Send + Sync>;

pub type KernelInvalidate = Box<dyn Fn(&Key, &Key) -> Option<Box<dyn PendingDrop>> + Send + Sync>;

thread_local! {
    static WAIT_FLAG: std::cell::RefCell<Option<Arc<AtomicBool>>> =
        const { std::cell::RefCell::new(None) };
}

/// While set, whether this thread waits for a lock is shown in `flag`
/// (the kernel cache drop leaves alone the pages of reads and writes that
/// wait: see `scoutfs mount`).
pub fn show_waits(flag: Option<Arc<AtomicBool>>) {
    WAIT_FLAG.with(|f| *f.borrow_mut() = flag);
}

fn shown_waiting(waiting: bool) {
    WAIT_FLAG.with(|f| {
        if let Some(f) = &*f.borrow() {
            f.store(waiting, Ordering::SeqCst);
        }
    });
}

/// How often a waiting cache drop looks at who waits for the lock.
const DROP_POLL: Duration = Duration::from_millis(2);
/// How long a cache drop is waited for while nobody waits for the lock:
/// what it waits on is a request in flight that will finish.
const DROP_WAIT_IDLE: Duration = Duration::from_secs(1);
/// How long it is waited for while callers that can't be admitted wait for
/// the lock (they may hold what it waits on until they get the lock).
const DROP_WAIT_BUSY: Duration = Duration::from_millis(20);
/// Rounds of admission per invalidation: each may let in requests that
/// cache more, which the next round drops; a mount that keeps sending
/// requests for the lock can't hold it forever.
const ADMISSION_ROUNDS_MAX: u32 = 4;

/// An invalidation being carried out (see `Locks::invalidate`).
struct Invalidating {
    start: Key,
    end: Key,
    /// WRITE to READ: only commit.
    keep: bool,
    /// Admissions so far.
    round: u32,
    /// The kernel cache drop being waited for, when handed to a thread.
    pending: Option<Box<dyn PendingDrop>>,
    own_thread: bool,
}

/// How waiting for a kernel cache drop ended.
enum Waited {
    Done {
        admitted: bool,
    },
    /// Callers must be admitted: on a thread of the invalidation's own.
    HandOff,
}

enum Work {
    Invalidate {
        start: Key,
        end: Key,
        old: LockMode,
        new: LockMode,
    },
    Sync {
        id: u64,
    },
}

struct State {
    machine: LockClient,
    /// Locks kept cached while idle (by how many pins): inodes with data
    /// waiters, which must hear of any change another mount makes.
    pinned: BTreeMap<Key, usize>,
    /// Wake generations per lock: waiters sleep until theirs changes.
    wakes: BTreeMap<Key, u64>,
    /// Server request ids of the invalidations queued per lock, in order.
    inval_ids: BTreeMap<Key, VecDeque<u64>>,
}

pub struct Locks {
    st: Mutex<State>,
    cv: Condvar,
    /// The worker waits here for users admitted by an invalidation to leave.
    drained: Condvar,
    client: OnceLock<Arc<Client>>,
    trans: OnceLock<Weak<Trans>>,
    items: Arc<ItemCache>,
    work: Mutex<Option<Sender<Work>>>,
    kernel: OnceLock<KernelInvalidate>,
    /// Told of each range whose lock is taken away, once nothing can use
    /// it any more and before the server hears so (data waiters look
    /// again).
    lost: OnceLock<LockLost>,
    /// Answers the server's questions about this mount's data waiters.
    waiters: OnceLock<WaitersHandler>,
    me: OnceLock<Weak<Locks>>,
    /// The inodes this mount has open: the server asks for them through
    /// this handler (see `omap`).
    open: Arc<OpenInodes>,
    /// Server requests that came before `start` gave us the client and
    /// the worker (a new server may ask for our locks, or for our open
    /// inodes, while the mount is still starting); handled there. None
    /// once started.
    early: Mutex<Option<Vec<(u64, ServerRequest)>>>,
}

/// A held lock; released on drop.
pub struct LockGuard {
    locks: Arc<Locks>,
    start: Key,
    end: Key,
    mode: LockMode,
    write_seq: u64,
}

impl LockGuard {
    pub fn start(&self) -> Key {
        self.start
    }

    /// The cover item operations check.
    pub fn cover(&self) -> Cover {
        Cover {
            start: self.start,
            end: self.end,
            read: self.mode.can_read(),
            write: self.mode == LockMode::Write,
            write_only: self.mode == LockMode::WriteOnly,
            write_seq: self.write_seq,
        }
    }

    /// The seq the server granted this lock at (0 unless it can write):
    /// greater than the version of every item written under this lock's
    /// range before the grant, on any mount.
    pub fn write_seq(&self) -> u64 {
        self.write_seq
    }

    /// Whether this is the inode group lock of `ino`.
    pub fn covers_inode(&self, ino: u64) -> bool {
        self.start.zone == zone::FS && self.start.first <= ino && ino <= self.end.first
    }

    /// Items under this lock were dirtied in transaction `seq`.
    pub fn dirtied(&self, seq: u64) {
        if self.mode.can_write() {
            self.locks.state().machine.mark_dirty(self.start, seq);
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let mut st = self.locks.state();
        let acts = st.machine.release(self.start, self.mode);
        self.locks.apply(&mut st, acts);
        if st.machine.invalidation_ready(&self.start) {
            self.locks.drained.notify_all();
        }
        let idle = st.trim_idle();
        drop(st);
        for m in idle {
            self.locks.send(m);
        }
    }
}

impl State {
    fn trim_idle(&mut self) -> Vec<LockMsg> {
        let pinned = &self.pinned;
        self.machine.trim_idle_except(|k| pinned.contains_key(k))
    }
}

impl Locks {
    pub fn new(rid: u64, items: Arc<ItemCache>, idle_max: usize) -> Arc<Locks> {
        let st = State {
            machine: LockClient::new(Rid(rid), idle_max),
            pinned: BTreeMap::new(),
            wakes: BTreeMap::new(),
            inval_ids: BTreeMap::new(),
        };
        let locks = Arc::new(Locks {
            st: Mutex::new(st),
            cv: Condvar::new(),
            drained: Condvar::new(),
            client: OnceLock::new(),
            trans: OnceLock::new(),
            items,
            work: Mutex::new(None),
            kernel: OnceLock::new(),
            lost: OnceLock::new(),
            waiters: OnceLock::new(),
            me: OnceLock::new(),
            open: Arc::default(),
            early: Mutex::new(Some(Vec::new())),
        });
        let _ = locks.me.set(Arc::downgrade(&locks));
        locks
    }

    /// The inodes this mount has open.
    pub fn open_inodes(&self) -> &Arc<OpenInodes> {
        &self.open
    }

    /// Connects the driver to the client and transaction and starts its
    /// worker thread.
    pub fn start(self: &Arc<Self>, client: Arc<Client>, trans: &Arc<Trans>) {
        let _ = self.client.set(client);
        let _ = self.trans.set(Arc::downgrade(trans));
        let (tx, rx) = channel::<Work>();
        *self.work.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let me = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("scoutfs-lock-worker".into())
            .spawn(move || {
                while let Ok(w) = rx.recv() {
                    let Some(locks) = me.upgrade() else { break };
                    locks.do_work(w);
                }
            });
        let early = self
            .early
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        for (id, req) in early {
            self.handle_server_request(id, req);
        }
    }

    /// Stops the worker thread (at unmount).
    pub fn stop(&self) {
        self.work.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Sets what drops the kernel's caches of a key range.
    pub fn set_kernel_invalidate(&self, f: KernelInvalidate) {
        let _ = self.kernel.set(f);
    }

    /// Sets what answers the server's questions about data waiters.
    pub fn set_waiters_handler(&self, f: WaitersHandler) {
        let _ = self.waiters.set(f);
    }

    /// Sets what is told of each lock range being taken away.
    pub fn set_lock_lost(&self, f: LockLost) {
        let _ = self.lost.set(f);
    }

    /// Keeps the lock starting at `start` cached while idle, until as many
    /// `unpin`s.
    pub fn pin(&self, start: Key) {
        *self.state().pinned.entry(start).or_insert(0) += 1;
    }

    /// Ends one `pin`.
    pub fn unpin(&self, start: Key) {
        let mut st = self.state();
        if let Some(n) = st.pinned.get_mut(&start) {
            *n -= 1;
            if *n == 0 {
                st.pinned.remove(&start);
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, m: LockMsg) {
        if let Some(c) = self.client.get() {
            tracing::debug!(key = %m.key, old = %m.old_mode, new = %m.new_mode, "lock request");
            if let Err(e) = c.send_lock(m) {
                tracing::warn!("lock request {m:?} not sent: {e}");
            }
        }
    }

    /// Waits for a user of `start..=end` in `mode`.
    pub fn lock(&self, start: Key, end: Key, mode: LockMode) -> Result<LockGuard> {
        let me = self
            .me
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| Error::Disconnected("the lock driver stopped".into()))?;
        let mut st = self.state();
        loop {
            match st.machine.acquire(start, end, mode) {
                Acquire::Held { write_seq, .. } => {
                    shown_waiting(false);
                    return Ok(LockGuard {
                        locks: me,
                        start,
                        end,
                        mode,
                        write_seq,
                    });
                }
                Acquire::Wait(msg) => {
                    // Shown before the state's mutex is let go: a drop
                    // that sees the lock given up sees this wait.
                    shown_waiting(true);
                    let gen = st.wakes.get(&start).copied().unwrap_or(0);
                    if let Some(m) = msg {
                        self.send(m);
                    }
                    while st.wakes.get(&start).copied().unwrap_or(0) == gen {
                        st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                }
            }
        }
    }

    /// The item cache these locks guard.
    pub fn items(&self) -> &Arc<ItemCache> {
        &self.items
    }

    /// How many locks this mount knows.
    pub fn count(&self) -> usize {
        self.state().machine.len()
    }

    /// Every lock this mount knows, as the state machine sees it (for
    /// diagnosis).
    pub fn dump(&self) -> String {
        let st = self.state();
        let mut out = String::new();
        for start in st.machine.starts() {
            if let Some(v) = st.machine.lock_view(&start) {
                out.push_str(&format!("  {start}: {v:?}\n"));
            }
        }
        out
    }

    /// The inode group lock of `ino`.
    pub fn lock_inode(&self, ino: u64, mode: LockMode) -> Result<LockGuard> {
        let (s, e) = inode_lock_range(ino);
        self.lock(s, e, mode)
    }

    /// The group locks of several inodes, in ascending order, one per group.
    pub fn lock_inodes(&self, inos: &[u64], mode: LockMode) -> Result<Vec<LockGuard>> {
        let mut ranges: Vec<(Key, Key)> = inos.iter().map(|&i| inode_lock_range(i)).collect();
        ranges.sort();
        ranges.dedup();
        ranges
            .into_iter()
            .map(|(s, e)| self.lock(s, e, mode))
            .collect()
    }

    /// Carries out the state machine's actions (with its mutex held).
    fn apply(&self, st: &mut State, acts: Vec<ClientAction>) {
        for a in acts {
            match a {
                ClientAction::Invalidate {
                    start,
                    end,
                    old_mode,
                    new_mode,
                    // Whether to commit is looked up when the work runs
                    // (users admitted meanwhile may dirty the lock).
                    sync: _,
                } => {
                    self.queue(Work::Invalidate {
                        start,
                        end,
                        old: old_mode,
                        new: new_mode,
                    });
                }
                ClientAction::Respond(m) => {
                    let id = st.inval_ids.get_mut(&m.key).and_then(|q| q.pop_back());
                    self.respond(id, m);
                }
                ClientAction::Wake { start } => {
                    *st.wakes.entry(start).or_insert(0) += 1;
                    self.cv.notify_all();
                }
                ClientAction::DropCache { start, end } => {
                    // On the receive thread, which must not block.
                    self.items.invalidate(&start, &end);
                    if let Some(p) = self.kernel_drop(&start, &end) {
                        if !p.wait(Duration::ZERO) {
                            p.give_up();
                        }
                    }
                }
                ClientAction::ProtocolError { key, reason } => {
                    tracing::warn!("lock protocol error on {key}: {reason}");
                }
            }
        }
    }

    /// Handles a request of the server (see [`Handler::server_request`]).
    fn handle_server_request(&self, id: u64, req: ServerRequest) {
        match req {
            ServerRequest::Invalidate(m) => {
                tracing::debug!(key = %m.key, old = %m.old_mode, new = %m.new_mode, "lock invalidation");
                let mut st = self.state();
                st.inval_ids.entry(m.key).or_default().push_back(id);
                let acts = st.machine.on_invalidate(m);
                self.apply(&mut st, acts);
            }
            ServerRequest::SyncLogTrees => self.queue(Work::Sync { id }),
            req @ (ServerRequest::DataWaiting(_)
            | ServerRequest::DataWaitErr(_)
            | ServerRequest::WaitersNew(_)) => {
                // Answered empty when the mount has no waiters yet.
                let resp = match self.waiters.get() {
                    Some(f) => f(&req),
                    None => match req {
                        ServerRequest::DataWaiting(_) => ClientResponse::DataWaiting(Vec::new()),
                        ServerRequest::WaitersNew(_) => ClientResponse::Done,
                        _ => ClientResponse::Count(0),
                    },
                };
                if let Some(c) = self.client.get() {
                    if let Err(e) = c.respond(id, resp) {
                        tracing::warn!("data waiters answer not sent: {e}");
                    }
                }
            }
            ServerRequest::OpenInoMap { group } => {
                if let Some(c) = self.client.get() {
                    let resp = ClientResponse::OpenInoMap(Box::new(self.open.map(group)));
                    if let Err(e) = c.respond(id, resp) {
                        tracing::warn!("open inode map answer not sent: {e}");
                    }
                }
            }
            ServerRequest::LockRecover { first } => {
                let (entries, more) = self
                    .state()
                    .machine
                    .recovery_batch(first, RECOVER_ENTRIES_MAX);
                if let Some(c) = self.client.get() {
                    let resp = ClientResponse::LockRecover { entries, more };
                    if let Err(e) = c.respond(id, resp) {
                        tracing::warn!("lock recovery answer not sent: {e}");
                    }
                }
            }
        }
    }

    fn queue(&self, w: Work) {
        if let Some(tx) = self.work.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(w);
        }
    }

    fn respond(&self, id: Option<u64>, m: LockMsg) {
        let (Some(id), Some(c)) = (id, self.client.get()) else {
            return;
        };
        if let Err(e) = c.respond(id, ClientResponse::InvalidateDone(m)) {
            tracing::warn!("lock response {m:?} not sent: {e}");
        }
    }

    fn kernel_drop(&self, start: &Key, end: &Key) -> Option<Box<dyn PendingDrop>> {
        self.kernel.get().and_then(|k| k(start, end))
    }

    /// Goes on with `inv` on a thread of its own; gives it back if there is
    /// none.
    fn hand_off(&self, inv: Invalidating) -> Option<Invalidating> {
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return Some(inv);
        };
        let slot = Arc::new(Mutex::new(None::<Invalidating>));
        let theirs = slot.clone();
        // Held until `inv` is in it, so the thread finds it there.
        let mut held = slot.lock().unwrap_or_else(|p| p.into_inner());
        let spawned = std::thread::Builder::new()
            .name("scoutfs-lock-admit".into())
            .spawn(move || {
                let taken = theirs.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(inv) = taken {
                    me.invalidate(inv);
                }
            });
        match spawned {
            Ok(_) => {
                *held = Some(inv);
                None
            }
            Err(e) => {
                tracing::error!("no thread for a lock admission: {e}");
                Some(inv)
            }
        }
    }

    /// Whether callers wait for lock `start`, and whether any of them
    /// could be admitted (wants a mode the lock holds) while it isn't.
    fn waiting(&self, start: &Key) -> (bool, bool) {
        let Some(v) = self.state().machine.lock_view(start) else {
            return (false, false);
        };
        let admissible = !v.admitting
            && LockMode::ALL.iter().any(|&m| {
                v.waiters[m.idx()] > 0
                    && v.mode.satisfies(m)
                    && !matches!(v.request, Some(r) if !r.satisfies(m))
            });
        (v.waiters.iter().any(|&n| n > 0), admissible)
    }

    /// Waits for a kernel cache drop of lock `start`'s invalidation.
    /// When callers wait for the lock, they may hold what the drop waits
    /// on. If only names are left, the drop is given up on (which expires
    /// every cached name at once, exact if coarse). Else they are admitted
    /// (if `admit`, and only on a thread of the invalidation's own, else
    /// it asks for one) to run under the mode still held and let go of the
    /// pages. Gives the drop up when that can't help (module comment of
    /// `cluster::lock::client`, "Admission").
    fn wait_drop(&self, start: Key, p: &dyn PendingDrop, admit: bool, own: bool) -> Waited {
        let began = Instant::now();
        let mut admitted = false;
        loop {
            if p.wait(DROP_POLL) {
                return Waited::Done { admitted };
            }
            p.refresh();
            let (waiters, admissible) = self.waiting(&start);
            if waiters && p.pages_done() {
                p.give_up();
                return Waited::Done { admitted };
            }
            if admissible && admit {
                if !own {
                    return Waited::HandOff;
                }
                let mut st = self.state();
                let acts = st.machine.admit(start);
                self.apply(&mut st, acts);
                admitted = true;
                continue;
            }
            let limit = if waiters {
                DROP_WAIT_BUSY
            } else {
                DROP_WAIT_IDLE
            };
            if began.elapsed() >= limit {
                if !waiters {
                    tracing::debug!("dropping kernel caches waits for a request in flight");
                }
                p.give_up();
                return Waited::Done { admitted };
            }
        }
    }

    /// Ends the admission of lock `start`'s invalidation and waits for the
    /// users it let in to leave.
    fn end_admission(&self, start: Key) {
        let mut st = self.state();
        st.machine.end_admission(start);
        while !st.machine.invalidation_ready(&start) {
            st = self.drained.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn dirty(&self, start: &Key) -> bool {
        self.state()
            .machine
            .lock_view(start)
            .is_some_and(|v| v.dirty_trans_seq != 0)
    }

    fn do_work(&self, w: Work) {
        match w {
            Work::Sync { id } => {
                self.commit();
                if let Some(c) = self.client.get() {
                    let _ = c.respond(id, ClientResponse::Done);
                }
            }
            Work::Invalidate {
                start,
                end,
                old,
                new,
            } => {
                // WRITE to READ: nobody can change the range while we
                // read it, so every cache stays true.
                let keep = old == LockMode::Write && new == LockMode::Read;
                self.invalidate(Invalidating {
                    start,
                    end,
                    keep,
                    round: 0,
                    pending: None,
                    own_thread: false,
                });
            }
        }
    }

    /// Carries out an invalidation: commit what the lock dirtied, drop the
    /// item cache and the kernel's caches, admitting waiting callers when
    /// the kernel's drop waits on them, then answer. Admitted users may
    /// wait for other locks whose invalidations are queued behind this one
    /// on the worker, so an invalidation that admits goes on on a thread of
    /// its own.
    fn invalidate(&self, mut inv: Invalidating) {
        loop {
            let p = match inv.pending.take() {
                Some(p) => p,
                None => {
                    if self.dirty(&inv.start) {
                        self.commit();
                    }
                    if inv.keep {
                        break;
                    }
                    self.items.invalidate(&inv.start, &inv.end);
                    match self.kernel_drop(&inv.start, &inv.end) {
                        Some(p) => p,
                        None => break,
                    }
                }
            };
            let admit = inv.round < ADMISSION_ROUNDS_MAX;
            match self.wait_drop(inv.start, &*p, admit, inv.own_thread) {
                Waited::Done { admitted: false } => break,
                Waited::Done { admitted: true } => {
                    // What the users let in did is undone like the rest.
                    self.end_admission(inv.start);
                    inv.round += 1;
                }
                Waited::HandOff => {
                    inv.pending = Some(p);
                    inv.own_thread = true;
                    if let Some(inv) = self.hand_off(inv) {
                        // No thread: admission waits here then, which is
                        // safe unless an admitted user waits for a lock
                        // queued behind this one.
                        self.invalidate(inv);
                    }
                    return;
                }
            }
        }
        if !inv.keep {
            // Told last, once nothing can use the lock any more: a user
            // admitted during the drop may have come to wait on data under
            // it, and only this call ends such a wait.
            if let Some(f) = self.lost.get() {
                f(&inv.start, &inv.end);
            }
        }
        let mut st = self.state();
        let (m, acts) = st.machine.invalidate_done(inv.start);
        if let Some(m) = m {
            let id = st.inval_ids.get_mut(&inv.start).and_then(|q| q.pop_front());
            self.respond(id, m);
        }
        self.apply(&mut st, acts);
    }

    fn commit(&self) {
        if let Some(t) = self.trans.get().and_then(Weak::upgrade) {
            if let Err(e) = t.commit() {
                tracing::error!("commit for a lock invalidation failed: {e}");
            }
        }
    }

    /// Every transaction up to `seq` is durable.
    pub fn trans_committed(&self, seq: u64) {
        self.state().machine.trans_committed(seq);
    }
}

impl Handler for Locks {
    fn lock_granted(&self, msg: LockMsg) {
        tracing::debug!(key = %msg.key, mode = %msg.new_mode, write_seq = msg.write_seq, "lock granted");
        let mut st = self.state();
        let acts = st.machine.on_grant(msg);
        self.apply(&mut st, acts);
    }

    fn server_request(&self, id: u64, req: ServerRequest) {
        let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reqs) = early.as_mut() {
            reqs.push((id, req));
            return;
        }
        drop(early);
        self.handle_server_request(id, req);
    }

    fn server_changed(&self) {
        // Requests of the old server held for `start` mean nothing now.
        if let Some(reqs) = self
            .early
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            reqs.clear();
        }
        let mut st = self.state();
        // The old server's request ids mean nothing to the new one.
        st.inval_ids.clear();
        let acts = st.machine.server_changed();
        self.apply(&mut st, acts);
    }
}
