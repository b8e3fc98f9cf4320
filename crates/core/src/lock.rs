//! Cluster range locks: the shared types and the per-mount lock client.
//!
//! # Locks, modes and names
//!
//! A lock covers an inclusive key range `[start, end]` and is named by its
//! start key. Lock ranges never overlap; the naming functions below
//! ([`inode_lock_range`], [`index_lock_range`], [`rename_lock_range`],
//! [`orphan_lock_range`], [`zone_lock_range`]) are the only ranges in use.
//! Modes ([`LockMode`]):
//! - `Read`: many mounts may read and cache items;
//! - `Write`: one mount reads and writes; it also satisfies `Read` users;
//! - `WriteOnly`: many mounts blindly create, delete or add deltas, never
//!   read (index-like items whose writers know overwriting is safe);
//! - `Null`: nothing; how a lock is given up.
//!
//! Locally a granted mode *satisfies* a wanted mode if they are equal or the
//! grant is `Write` and `Read` is wanted ([`LockMode::satisfies`]). Between
//! different mounts two modes are *compatible* if either is `Null` or both
//! are `Read` or both `WriteOnly` ([`modes_compatible`]).
//!
//! # The client state machine
//!
//! [`LockClient`] is a pure state machine: no threads, clocks or I/O. The
//! driver feeds it calls and messages and carries out the returned
//! [`ClientAction`]s and [`LockMsg`]s. Per lock it keeps the granted mode,
//! the `write_seq` of the grant, a refresh generation (a new, increasing
//! value per grant), user counts per mode, waiter counts per mode, at most
//! one request in flight (the mode asked for), a FIFO of invalidations from
//! the server (only the head is worked on), the newest transaction seq the
//! lock dirtied, and its place in the idle LRU.
//!
//! A new user for mode `m` is admitted if the granted mode satisfies `m`,
//! the request in flight (if any) asks for a mode that still satisfies `m`,
//! every queued invalidation's target mode satisfies `m`, and no waiter is
//! waiting for a mode conversion that users of `m` would hold up (fairness;
//! see below). Otherwise the caller becomes a *waiter*: [`Acquire::Wait`]
//! carries the request to send when one may be sent now, which is when no
//! request is in flight, no invalidation is queued, the granted mode doesn't
//! satisfy `m`, and no local user holds a mode that `m` doesn't satisfy (a
//! `Read` holder may ask for `Write`; a `Read` holder wanting `WriteOnly`
//! first waits for its `Read` users to leave). For conversions other than
//! `Read`→`Write` the server first invalidates our own lock (to commit our
//! `WriteOnly` items before anyone reads, or to drop our cache before
//! others write blindly), which arrives while our request is in flight.
//!
//! A grant answers our request: it sets the mode and `write_seq` and bumps
//! the refresh generation. A grant of `Null` (idle trimming) forgets the
//! lock. A grant that takes away reading (to `Null` or `WriteOnly`) emits
//! [`ClientAction::DropCache`]: other mounts may now write the range.
//!
//! An invalidation asks us to go from `old` to `new` (`Write`→`Read` or any
//! mode→`Null`). From arrival it blocks new users that `new` doesn't
//! satisfy. When no such users remain, [`ClientAction::Invalidate`] is
//! emitted; the driver then does the work (below) and calls
//! [`LockClient::invalidate_done`], which applies the new mode and returns
//! the response to send. Messages carry both modes so reordering can be
//! resolved: an invalidation whose `old` is the mode of our request in
//! flight overtook its grant and waits for it; an invalidation for a lock
//! we no longer know is answered at once ([`ClientAction::Respond`]).
//!
//! A lock is forgotten when it is `Null` with no users, waiters, request or
//! invalidation. Granted locks with no users, waiters, request or
//! invalidation are *idle* and kept in LRU order; [`LockClient::trim_idle`]
//! sends `Null` requests for the oldest idle locks beyond `idle_max`,
//! skipping locks whose items are still dirty in an open transaction.
//!
//! # Waiters and wakeups
//!
//! A call to [`LockClient::acquire`] that returns `Wait` registers one
//! waiter for that mode. Registrations last until the lock emits
//! [`ClientAction::Wake`], which clears them all: every caller waiting on
//! that lock must then call `acquire` again (and re-registers if it still
//! has to wait). A caller that stops waiting without a wakeup calls
//! [`LockClient::cancel_wait`]. Waiters keep a lock out of the idle LRU and
//! give fairness: while someone waits to convert to a mode `w` that the
//! granted mode doesn't satisfy, new users of modes `w` doesn't satisfy are
//! held back, so a stream of readers can't starve a `WriteOnly` waiter.
//!
//! # Admission
//!
//! Some work of an invalidation can wait on the callers waiting for the
//! lock: on one mount the kernel's cache of a directory's names is dropped
//! under the directory's lock and a file's pages under their page locks,
//! and a request in flight holds those while it waits for this lock. The
//! lock is still ours until the driver answers, so [`LockClient::admit`]
//! lets those callers (and newcomers) in under the mode still held,
//! fairness aside; they finish and let go of what the work waits for.
//! [`LockClient::end_admission`] stops it, and the invalidation may finish
//! once the users admitted have left ([`LockClient::invalidation_ready`]).
//! What they did must be undone like anything before the invalidation: the
//! driver commits again if they dirtied the transaction and drops the
//! caches again. Callers waiting for a mode the lock doesn't hold (a
//! conversion) are not admitted.
//!
//! # What the driver must do
//!
//! - Send every returned [`LockMsg`] to the server: requests from `acquire`
//!   and `trim_idle` as LOCK requests, responses from `invalidate_done` and
//!   `Respond` as answers to the server's LOCK request.
//! - `Invalidate { sync: true }`: commit the open transaction (and report it
//!   with [`LockClient::trans_committed`]) before `invalidate_done`. Unless
//!   the change is `Write`→`Read`, drop the item cache for `[start, end]`
//!   and the kernel's caches (attributes, entries, pages) it covers. After
//!   an admission, end it, wait for `invalidation_ready`, and do all of
//!   this again (the lock's `dirty_trans_seq` tells whether to commit).
//! - `DropCache`: drop clean cached items and kernel caches of the range.
//! - `Wake`: wake every caller waiting on that lock; they retry `acquire`.
//! - `ProtocolError`: the server sent something impossible; the message was
//!   ignored and the connection should be torn down and recovered.
//! - Call [`LockClient::mark_dirty`] when a holder of a write mode dirties
//!   the open transaction, and `trans_committed` after every commit.
//! - A caller must not wait for a mode on a lock while it holds a user of a
//!   mode that the wanted mode doesn't satisfy (it would wait for itself),
//!   and must take several locks in ascending key order.
//! - After a server change, follow "Recovery" below.
//!
//! The driver serialises all calls (one mutex around the machine). Grants
//! must be fed in the order the server sent them, and so must
//! invalidations; a grant and an invalidation may arrive swapped.
//!
//! # Recovery after a server change
//!
//! A new server starts with no lock state and rebuilds it from what every
//! mount reports (`lock_server`'s recovery). Our locks stay valid across
//! the change: users keep using them while the server recovers, because
//! the new server grants nothing until every mount it expects has reported
//! or been fenced. What the old server had in flight is handled so that the
//! report is exact, i.e. the new server ends up counting us at exactly the
//! mode we hold:
//!
//! - Requests in flight stay in flight: the net layer resends them, the new
//!   server queues them until recovery ends and then grants them against
//!   the recovered state, so a grant after the change answers a request we
//!   sent before it and is accepted like any other.
//! - Invalidations from the old server are void: it is gone and nobody
//!   waits for their answers (the net layer refuses answers to a previous
//!   server's requests). [`LockClient::server_changed`] drops the queued
//!   ones that haven't started. One the driver is already working on
//!   cannot be stopped (it may be committing), so it is marked void: its
//!   users stay blocked until [`LockClient::invalidate_done`], which then
//!   keeps the mode it had and returns no response. Keeping the old mode is
//!   safe (the work only committed and dropped caches, which a holder may
//!   always do) and is what makes the report exact whenever it was taken.
//! - The report ([`LockClient::recovery_batch`], [`RecoverEntry`]) is every
//!   lock with a granted mode other than `Null`, at that mode and its
//!   `write_seq`. During an invalidation that is the old mode: the target
//!   is applied only when the work (commit, cache drop) is done, and a new
//!   server told the lower mode early could grant a conflicting lock while
//!   our writes are still uncommitted or our cache still valid. A lock with
//!   a request in flight reports the mode granted so far, not the one asked
//!   for (the old server may have granted more, and taken it from others,
//!   but we never used it), except a lock we are giving up: with a `Null`
//!   request in flight it is not reported at all. The old server may
//!   already have granted it away (its `Null` grant is what got lost), and
//!   reporting it would clash with the new holder's report; it admits no
//!   users and holds nothing dirty (`trim_idle` asks only for clean idle
//!   locks), so counting it as given up is safe, and the resent request's
//!   grant (`Null` to `Null`) then forgets it. `write_seq` lets the new
//!   server raise its seq above every seq our uncommitted items carry.
//! - Nothing else changes while the server recovers: it sends no grants or
//!   invalidations, and void invalidations keep their mode, so batches of
//!   one report asked for one after another describe one state.
//!
//! What the driver does on a server change (the net layer's greeting reply
//! with `new_server`), before it handles any message from the new server:
//! call `server_changed` and carry out its actions; forget the server
//! request ids of every invalidation (they were the old server's), so an
//! `invalidate_done` that returns no response pops no id. On each
//! LOCK_RECOVER `{first}` from the server, answer with
//! `recovery_batch(first, RECOVER_ENTRIES_MAX)` as `{entries, more}`.
//!
//! # Invariants ([`LockClient::check_invariants`])
//!
//! Users only in modes the granted mode, the request in flight and the
//! invalidation being worked on (unless it admitted users) all satisfy; at most one request in flight
//! and one invalidation being worked on (the queue's head) per lock; queued
//! invalidations within [`INVALIDATIONS_QUEUED_MAX`]; only the one being
//! worked on may be void; a dirty lock is never `Null`; the LRU holds exactly the idle locks; no forgettable lock is kept;
//! lock ranges are ordered and disjoint.
//!
//! # Limits
//!
//! No non-blocking acquire, and no coverage registrations for other caches.
//! Clearing dirty marks walks every lock (bounded by idle_max plus locks in
//! use). Waiter registrations are counts, so a caller that doesn't retry
//! after a `Wake` loses its place; fairness is best effort.

use scoutfs_format::key::{ty, zone};
use scoutfs_format::Key;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Inode numbers (or seq values) covered by one inode (or index) lock.
pub const LOCK_GROUP_NR: u64 = 1024;
const LOCK_GROUP_MASK: u64 = LOCK_GROUP_NR - 1;

/// Invalidations queued per lock. The server keeps at most one outstanding
/// per lock and mount, so more than this is a protocol error.
pub const INVALIDATIONS_QUEUED_MAX: usize = 4;

/// Entries in one LOCK_RECOVER answer. 1024 entries of 48 bytes keep a
/// payload well under `wire::MAX_FRAME_DATA` (checked there at compile
/// time) while a mount with the default 10,000 idle locks reports in ten
/// round trips.
pub const RECOVER_ENTRIES_MAX: usize = 1024;

/// The mode of a cluster lock, as on the wire.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    Null = 0,
    Read = 1,
    Write = 2,
    WriteOnly = 3,
}

impl LockMode {
    /// Every mode, in wire order (index = value).
    pub const ALL: [LockMode; 4] = [
        LockMode::Null,
        LockMode::Read,
        LockMode::Write,
        LockMode::WriteOnly,
    ];

    pub fn from_u8(v: u8) -> Option<LockMode> {
        LockMode::ALL.get(v as usize).copied()
    }

    /// Holders may read (and cache) items.
    pub fn can_read(self) -> bool {
        matches!(self, LockMode::Read | LockMode::Write)
    }

    /// Holders may create, change or delete items.
    pub fn can_write(self) -> bool {
        matches!(self, LockMode::Write | LockMode::WriteOnly)
    }

    /// Whether a lock granted in `self` lets a local user of `want` in.
    pub fn satisfies(self, want: LockMode) -> bool {
        self == want || (self == LockMode::Write && want == LockMode::Read)
    }

    /// The index of this mode in per-mode counts (`LockView::users`).
    pub fn idx(self) -> usize {
        self as usize
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LockMode::Null => "null",
            LockMode::Read => "read",
            LockMode::Write => "write",
            LockMode::WriteOnly => "write_only",
        };
        f.write_str(s)
    }
}

/// Whether two different mounts may hold these modes at once.
pub fn modes_compatible(a: LockMode, b: LockMode) -> bool {
    a == LockMode::Null
        || b == LockMode::Null
        || (a == b && matches!(a, LockMode::Read | LockMode::WriteOnly))
}

/// A mount's random id, never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rid(pub u64);

impl fmt::Display for Rid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The payload of every LOCK message: requests, grants, invalidations and
/// their responses. `key` is the lock's start key; `write_seq` is set in
/// grants of write modes and zero elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockMsg {
    pub key: Key,
    pub write_seq: u64,
    pub old_mode: LockMode,
    pub new_mode: LockMode,
}

/// One lock a mount reports to a new server during recovery: the lock's
/// start key, the mode the mount holds (never `Null`; the old mode while an
/// invalidation is being carried out) and the `write_seq` of its grant
/// (zero for modes that can't write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoverEntry {
    pub key: Key,
    pub mode: LockMode,
    pub write_seq: u64,
}

/// The inode group lock of `ino`: every item of 1024 consecutive inodes.
pub fn inode_lock_range(ino: u64) -> (Key, Key) {
    let start = Key::new(zone::FS, ino & !LOCK_GROUP_MASK, 0, 0, 0, 0);
    let end = Key::new(
        zone::FS,
        ino | LOCK_GROUP_MASK,
        u8::MAX,
        u64::MAX,
        u64::MAX,
        u8::MAX,
    );
    (start, end)
}

/// The inode index lock of index type `ity` (meta_seq or data_seq) that
/// covers 1024 consecutive seq values around `seq`, for all inodes.
pub fn index_lock_range(ity: u8, seq: u64) -> (Key, Key) {
    let start = Key::new(zone::INODE_INDEX, 0, ity, seq & !LOCK_GROUP_MASK, 0, 0);
    let end = Key::new(
        zone::INODE_INDEX,
        0,
        ity,
        seq | LOCK_GROUP_MASK,
        u64::MAX,
        u8::MAX,
    );
    (start, end)
}

/// The global rename lock: one key that names no item.
pub fn rename_lock_range() -> (Key, Key) {
    let k = Key::new(zone::LOCK, 0, ty::RENAME, 0, 0, 0);
    (k, k)
}

/// The lock of every orphan item.
pub fn orphan_lock_range() -> (Key, Key) {
    zone_lock_range(zone::ORPHAN)
}

/// A lock of a whole zone (orphans, totl, indx, quota).
pub fn zone_lock_range(z: u8) -> (Key, Key) {
    let start = Key::new(z, 0, 0, 0, 0, 0);
    let end = Key::new(z, u64::MAX, u8::MAX, u64::MAX, u64::MAX, u8::MAX);
    (start, end)
}

/// The outcome of [`LockClient::acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// A user was added; release it with [`LockClient::release`].
    Held { write_seq: u64, refresh_gen: u64 },
    /// The caller is registered as a waiter: send the request if any, wait
    /// for a [`ClientAction::Wake`] of this lock, then call `acquire` again.
    Wait(Option<LockMsg>),
}

/// Work for the driver; see the module comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAction {
    /// Carry out an invalidation, then call `invalidate_done(start)`.
    Invalidate {
        start: Key,
        end: Key,
        old_mode: LockMode,
        new_mode: LockMode,
        sync: bool,
    },
    /// Send this response to the server's invalidation now.
    Respond(LockMsg),
    /// Waiters on this lock must retry `acquire`.
    Wake { start: Key },
    /// Drop clean cached items and kernel caches of the range.
    DropCache { start: Key, end: Key },
    /// An impossible message from the server was ignored.
    ProtocolError { key: Key, reason: String },
}

/// A read-only view of one lock, for tests, debugging and the simulation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockView {
    pub end: Key,
    pub mode: LockMode,
    pub write_seq: u64,
    pub refresh_gen: u64,
    pub users: [u32; 4],
    pub waiters: [u32; 4],
    pub request: Option<LockMode>,
    pub invalidations_queued: usize,
    /// The invalidation being worked on admits users (see "Admission").
    pub admitting: bool,
    pub dirty_trans_seq: u64,
    pub idle: bool,
}

/// One invalidation from the server; `target` is set once it is handed to
/// the driver (only the queue's head). `void` marks one the driver was
/// working on when the server that sent it was replaced. `admitting` is
/// set while the driver lets users in under the mode still held (see
/// "Admission"); `admitted` once it ever has.
#[derive(Clone, Debug)]
struct Invalidation {
    msg: LockMsg,
    target: Option<LockMode>,
    void: bool,
    admitting: bool,
    admitted: bool,
}

#[derive(Clone, Debug)]
struct ClientLock {
    end: Key,
    mode: LockMode,
    write_seq: u64,
    refresh_gen: u64,
    users: [u32; 4],
    waiters: [u32; 4],
    request: Option<LockMode>,
    invalidations: VecDeque<Invalidation>,
    dirty_trans_seq: u64,
    lru_seq: Option<u64>,
}

impl ClientLock {
    fn new(end: Key) -> ClientLock {
        ClientLock {
            end,
            mode: LockMode::Null,
            write_seq: 0,
            refresh_gen: 0,
            users: [0; 4],
            waiters: [0; 4],
            request: None,
            invalidations: VecDeque::new(),
            dirty_trans_seq: 0,
            lru_seq: None,
        }
    }

    fn has_users(&self) -> bool {
        self.users.iter().any(|&n| n > 0)
    }

    fn has_waiters(&self) -> bool {
        self.waiters.iter().any(|&n| n > 0)
    }

    /// Whether a user of some mode that `new` doesn't satisfy exists.
    fn users_block(&self, new: LockMode) -> bool {
        LockMode::ALL
            .iter()
            .any(|&m| self.users[m.idx()] > 0 && !new.satisfies(m))
    }

    /// Whether the protocol state lets a new user of `want` in. The one
    /// invalidation being worked on blocks by the mode it goes to, unless
    /// it admits users.
    fn usable(&self, want: LockMode) -> bool {
        self.mode.satisfies(want)
            && !matches!(self.request, Some(r) if !r.satisfies(want))
            && (self.admitting()
                || self
                    .invalidations
                    .iter()
                    .all(|i| i.target.unwrap_or(i.msg.new_mode).satisfies(want)))
    }

    fn admitting(&self) -> bool {
        self.invalidations.front().is_some_and(|i| i.admitting)
    }

    /// Whether a waiter for a conversion that users of `want` would hold up
    /// is registered.
    fn fairness_blocks(&self, want: LockMode) -> bool {
        LockMode::ALL
            .iter()
            .any(|&w| self.waiters[w.idx()] > 0 && !self.mode.satisfies(w) && !w.satisfies(want))
    }

    fn may_send_request(&self, want: LockMode) -> bool {
        self.request.is_none()
            && self.invalidations.is_empty()
            && !self.mode.satisfies(want)
            && !self.users_block(want)
    }

    fn is_idle(&self) -> bool {
        self.mode != LockMode::Null
            && !self.has_users()
            && !self.has_waiters()
            && self.request.is_none()
            && self.invalidations.is_empty()
    }

    fn is_forgettable(&self) -> bool {
        self.mode == LockMode::Null
            && !self.has_users()
            && !self.has_waiters()
            && self.request.is_none()
            && self.invalidations.is_empty()
    }
}

/// The lock client of one mount; see the module comment.
#[derive(Debug)]
pub struct LockClient {
    rid: Rid,
    idle_max: usize,
    locks: BTreeMap<Key, ClientLock>,
    /// Idle locks, oldest first, by the seq they became idle at.
    lru: BTreeMap<u64, Key>,
    next_lru_seq: u64,
    next_refresh_gen: u64,
}

impl LockClient {
    pub fn new(rid: Rid, idle_max: usize) -> LockClient {
        LockClient {
            rid,
            idle_max,
            locks: BTreeMap::new(),
            lru: BTreeMap::new(),
            next_lru_seq: 1,
            next_refresh_gen: 1,
        }
    }

    pub fn rid(&self) -> Rid {
        self.rid
    }

    /// Locks known (granted, requested or being invalidated).
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Idle locks in the LRU.
    pub fn idle_len(&self) -> usize {
        self.lru.len()
    }

    /// Start keys of every known lock, in key order.
    pub fn starts(&self) -> Vec<Key> {
        self.locks.keys().copied().collect()
    }

    pub fn lock_view(&self, start: &Key) -> Option<LockView> {
        self.locks.get(start).map(|l| LockView {
            end: l.end,
            mode: l.mode,
            write_seq: l.write_seq,
            refresh_gen: l.refresh_gen,
            users: l.users,
            waiters: l.waiters,
            request: l.request,
            invalidations_queued: l.invalidations.len(),
            admitting: l.admitting(),
            dirty_trans_seq: l.dirty_trans_seq,
            idle: l.lru_seq.is_some(),
        })
    }

    /// Whether the protocol state would admit a user of `mode` now
    /// (ignoring fairness). What the simulation checks across mounts.
    pub fn can_use(&self, start: &Key, mode: LockMode) -> bool {
        self.locks.get(start).is_some_and(|l| l.usable(mode))
    }

    /// Asks for a user of `[start, end]` in `mode` (not `Null`).
    pub fn acquire(&mut self, start: Key, end: Key, mode: LockMode) -> Acquire {
        assert!(mode != LockMode::Null, "acquire of a null lock {start:?}");
        assert!(start <= end, "lock range {start:?} > {end:?}");
        if !self.locks.contains_key(&start) {
            self.assert_disjoint(&start, &end);
            self.locks.insert(start, ClientLock::new(end));
        }
        let lock = self.lock_mut(&start);
        assert!(
            lock.end == end,
            "lock {start:?} has end {:?}, not {end:?}",
            lock.end
        );
        let res = if lock.usable(mode) && (lock.admitting() || !lock.fairness_blocks(mode)) {
            lock.users[mode.idx()] += 1;
            Acquire::Held {
                write_seq: lock.write_seq,
                refresh_gen: lock.refresh_gen,
            }
        } else {
            lock.waiters[mode.idx()] += 1;
            let mut msg = None;
            if lock.may_send_request(mode) {
                lock.request = Some(mode);
                msg = Some(LockMsg {
                    key: start,
                    write_seq: 0,
                    old_mode: lock.mode,
                    new_mode: mode,
                });
            }
            Acquire::Wait(msg)
        };
        let mut out = Vec::new();
        self.settle(start, false, &mut out);
        debug_assert!(out.is_empty());
        res
    }

    /// A caller registered by `acquire` stops waiting without a wakeup.
    pub fn cancel_wait(&mut self, start: Key, mode: LockMode) -> Vec<ClientAction> {
        let mut out = Vec::new();
        if let Some(lock) = self.locks.get_mut(&start) {
            let w = &mut lock.waiters[mode.idx()];
            *w = w.saturating_sub(1);
            self.settle(start, true, &mut out);
        }
        out
    }

    /// Drops a user added by `acquire`.
    pub fn release(&mut self, start: Key, mode: LockMode) -> Vec<ClientAction> {
        let lock = self.lock_mut(&start);
        let n = &mut lock.users[mode.idx()];
        assert!(*n > 0, "release of {start:?} in {mode} without a user");
        *n -= 1;
        let drained = *n == 0;
        let mut out = Vec::new();
        self.settle(start, drained, &mut out);
        out
    }

    /// The server's response to our request.
    pub fn on_grant(&mut self, msg: LockMsg) -> Vec<ClientAction> {
        let start = msg.key;
        if let Err(reason) = self.check_grant(&msg) {
            return vec![ClientAction::ProtocolError { key: start, reason }];
        }
        let gen = self.next_refresh_gen;
        let lock = self.lock_mut(&start);
        let mut out = Vec::new();
        if lock.mode.can_read() && !msg.new_mode.can_read() {
            out.push(ClientAction::DropCache {
                start,
                end: lock.end,
            });
        }
        lock.request = None;
        lock.mode = msg.new_mode;
        lock.write_seq = if msg.new_mode.can_write() {
            msg.write_seq
        } else {
            0
        };
        assert!(
            !lock.users_block(lock.mode),
            "grant {msg:?} with users {:?}",
            lock.users
        );
        if lock.mode == LockMode::Null {
            assert!(
                lock.dirty_trans_seq == 0,
                "null grant of dirty lock {start:?}"
            );
        } else {
            lock.refresh_gen = gen;
            self.next_refresh_gen += 1;
        }
        self.settle(start, true, &mut out);
        out
    }

    fn check_grant(&self, msg: &LockMsg) -> Result<(), String> {
        let Some(lock) = self.locks.get(&msg.key) else {
            return Err(format!("grant {msg:?} for an unknown lock"));
        };
        let Some(req) = lock.request else {
            return Err(format!("grant {msg:?} without a request"));
        };
        if req != msg.new_mode {
            return Err(format!("grant {msg:?} for a request of {req}"));
        }
        // A void invalidation's answer never reached the old server, so
        // the new server may grant our resent request meanwhile.
        if lock
            .invalidations
            .front()
            .is_some_and(|i| i.target.is_some() && !i.void)
        {
            return Err(format!("grant {msg:?} during an invalidation"));
        }
        Ok(())
    }

    /// The server asks us to go from `msg.old_mode` to `msg.new_mode`.
    pub fn on_invalidate(&mut self, msg: LockMsg) -> Vec<ClientAction> {
        let start = msg.key;
        let valid = matches!(
            (msg.old_mode, msg.new_mode),
            (LockMode::Write, LockMode::Read)
                | (
                    LockMode::Read | LockMode::Write | LockMode::WriteOnly,
                    LockMode::Null
                )
        );
        if !valid {
            let reason = format!("invalidation {msg:?} between impossible modes");
            return vec![ClientAction::ProtocolError { key: start, reason }];
        }
        let Some(lock) = self.locks.get_mut(&start) else {
            // Late or duplicate: we already gave the lock up.
            return vec![ClientAction::Respond(msg)];
        };
        if lock.invalidations.len() >= INVALIDATIONS_QUEUED_MAX {
            let reason = format!("invalidation {msg:?} beyond the queue limit");
            return vec![ClientAction::ProtocolError { key: start, reason }];
        }
        lock.invalidations.push_back(Invalidation {
            msg,
            target: None,
            void: false,
            admitting: false,
            admitted: false,
        });
        let mut out = Vec::new();
        self.settle(start, false, &mut out);
        out
    }

    /// The driver can't finish the invalidation being worked on while
    /// callers wait for the lock (see "Admission"): lets them, and any
    /// newcomer, in under the mode still held until `end_admission`.
    pub fn admit(&mut self, start: Key) -> Vec<ClientAction> {
        let lock = self.lock_mut(&start);
        match lock.invalidations.front_mut() {
            Some(i) if i.target.is_some() => {
                i.admitting = true;
                i.admitted = true;
            }
            _ => panic!("admit on {start:?} without an invalidation in progress"),
        }
        let mut out = Vec::new();
        self.settle(start, true, &mut out);
        out
    }

    /// Stops admitting users to the invalidation being worked on; it may
    /// finish once those admitted have left ([`Self::invalidation_ready`]).
    pub fn end_admission(&mut self, start: Key) {
        let lock = self.lock_mut(&start);
        match lock.invalidations.front_mut() {
            Some(i) if i.target.is_some() => i.admitting = false,
            _ => panic!("end_admission on {start:?} without an invalidation in progress"),
        }
    }

    /// Whether the invalidation being worked on admits no users and no
    /// user it doesn't allow is left, so that `invalidate_done` may be
    /// called.
    pub fn invalidation_ready(&self, start: &Key) -> bool {
        self.locks.get(start).is_some_and(|l| {
            l.invalidations.front().is_some_and(|i| match i.target {
                Some(t) => !i.admitting && !l.users_block(t),
                None => false,
            })
        })
    }

    /// The driver finished an emitted `Invalidate`: returns the response
    /// to send to the server and further actions. There is no response
    /// when the invalidation was voided by a server change: the mode is
    /// then kept (see "Recovery" in the module comment).
    pub fn invalidate_done(&mut self, start: Key) -> (Option<LockMsg>, Vec<ClientAction>) {
        let lock = self.lock_mut(&start);
        let target = match lock.invalidations.front() {
            Some(Invalidation {
                target: Some(t), ..
            }) => *t,
            _ => panic!("invalidate_done for {start:?} without an invalidation in progress"),
        };
        assert!(
            lock.dirty_trans_seq == 0,
            "invalidate_done for {start:?} before its dirty trans {} committed",
            lock.dirty_trans_seq
        );
        assert!(!lock.users_block(target), "users {:?} left", lock.users);
        let Some(inv) = lock.invalidations.pop_front() else {
            unreachable!("the queue's head was just read");
        };
        assert!(
            !inv.admitting,
            "invalidate_done on {start:?} while admitting"
        );
        if !inv.void {
            lock.mode = target;
            if !target.can_write() {
                lock.write_seq = 0;
            }
        }
        let mut out = Vec::new();
        self.settle(start, true, &mut out);
        ((!inv.void).then_some(inv.msg), out)
    }

    /// The server was replaced (the net layer's greeting reply says
    /// `new_server`): the old server's invalidations are void. Queued ones
    /// are dropped; the one being worked on is marked void (module
    /// comment). Requests in flight are kept for the net layer's resend.
    pub fn server_changed(&mut self) -> Vec<ClientAction> {
        let keys: Vec<Key> = self
            .locks
            .iter()
            .filter(|(_, l)| !l.invalidations.is_empty())
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for key in keys {
            let lock = self.lock_mut(&key);
            let before = lock.invalidations.len();
            lock.invalidations.retain(|i| i.target.is_some());
            for i in lock.invalidations.iter_mut() {
                i.void = true;
            }
            // Waiters held back by a dropped invalidation may go on.
            let dropped = lock.invalidations.len() != before;
            self.settle(key, dropped, &mut out);
        }
        out
    }

    /// Every lock we hold, for a new server: see [`Self::recovery_batch`].
    pub fn recovery_report(&self) -> Vec<RecoverEntry> {
        self.recovery_batch(Key::MIN, usize::MAX).0
    }

    /// The answer to a LOCK_RECOVER `{first}`: the first `max` (at least
    /// one) locks from `first` on that we hold in a mode other than
    /// `Null`, each at its granted mode (the old mode during an
    /// invalidation, the granted one while a request is in flight), and
    /// whether more follow. Locks being given up (a `Null` request in
    /// flight) are left out (module comment). The server asks again from
    /// after the last key.
    pub fn recovery_batch(&self, first: Key, max: usize) -> (Vec<RecoverEntry>, bool) {
        assert!(max > 0, "a recovery batch of 0 entries");
        let mut held = self
            .locks
            .range(first..)
            .filter(|(_, l)| l.mode != LockMode::Null && l.request != Some(LockMode::Null))
            .map(|(k, l)| RecoverEntry {
                key: *k,
                mode: l.mode,
                write_seq: l.write_seq,
            });
        let entries: Vec<RecoverEntry> = held.by_ref().take(max).collect();
        let more = held.next().is_some();
        (entries, more)
    }

    /// A holder of a write mode dirtied open transaction `trans_seq`.
    pub fn mark_dirty(&mut self, start: Key, trans_seq: u64) {
        assert!(trans_seq > 0);
        let lock = self.lock_mut(&start);
        let writers = lock.users[LockMode::Write.idx()] + lock.users[LockMode::WriteOnly.idx()];
        assert!(
            lock.mode.can_write() && writers > 0,
            "mark_dirty of {start:?} without a write user"
        );
        lock.dirty_trans_seq = lock.dirty_trans_seq.max(trans_seq);
    }

    /// Transactions up to `seq` are durable.
    pub fn trans_committed(&mut self, seq: u64) {
        for lock in self.locks.values_mut() {
            if lock.dirty_trans_seq != 0 && lock.dirty_trans_seq <= seq {
                lock.dirty_trans_seq = 0;
            }
        }
    }

    /// `Null` requests for the oldest clean idle locks beyond `idle_max`.
    pub fn trim_idle(&mut self) -> Vec<LockMsg> {
        let mut excess = self.lru.len().saturating_sub(self.idle_max);
        let mut chosen = Vec::new();
        for key in self.lru.values() {
            if excess == 0 {
                break;
            }
            if self.locks.get(key).is_some_and(|l| l.dirty_trans_seq == 0) {
                chosen.push(*key);
                excess -= 1;
            }
        }
        let mut msgs = Vec::with_capacity(chosen.len());
        for key in chosen {
            let lock = self.lock_mut(&key);
            lock.request = Some(LockMode::Null);
            msgs.push(LockMsg {
                key,
                write_seq: 0,
                old_mode: lock.mode,
                new_mode: LockMode::Null,
            });
            let mut out = Vec::new();
            self.settle(key, false, &mut out);
            debug_assert!(out.is_empty());
        }
        msgs
    }

    fn lock_mut(&mut self, start: &Key) -> &mut ClientLock {
        match self.locks.get_mut(start) {
            Some(l) => l,
            None => panic!("no lock at {start:?}"),
        }
    }

    fn assert_disjoint(&self, start: &Key, end: &Key) {
        if let Some((s, l)) = self.locks.range(..*start).next_back() {
            assert!(l.end < *start, "lock {start:?} overlaps {s:?}..{:?}", l.end);
        }
        if let Some((s, _)) = self.locks.range(*start..).next() {
            assert!(*end < *s, "lock {start:?}..{end:?} overlaps {s:?}");
        }
    }

    /// After any change to a lock: wake waiters (if asked and any exist),
    /// start the head invalidation if it can start, forget the lock or
    /// fix its LRU membership.
    fn settle(&mut self, start: Key, wake: bool, out: &mut Vec<ClientAction>) {
        let Some(lock) = self.locks.get_mut(&start) else {
            return;
        };
        if wake && lock.has_waiters() {
            lock.waiters = [0; 4];
            out.push(ClientAction::Wake { start });
        }
        start_invalidation(start, lock, out);
        if lock.is_forgettable() {
            if let Some(seq) = lock.lru_seq {
                self.lru.remove(&seq);
            }
            self.locks.remove(&start);
            return;
        }
        match (lock.is_idle(), lock.lru_seq) {
            (true, None) => {
                lock.lru_seq = Some(self.next_lru_seq);
                self.lru.insert(self.next_lru_seq, start);
                self.next_lru_seq += 1;
            }
            (false, Some(seq)) => {
                lock.lru_seq = None;
                self.lru.remove(&seq);
            }
            _ => {}
        }
    }

    /// Asserts the invariants listed in the module comment.
    pub fn check_invariants(&self) {
        let mut prev_end: Option<Key> = None;
        let mut idle = 0;
        for (start, lock) in &self.locks {
            assert!(*start <= lock.end);
            if let Some(pe) = prev_end {
                assert!(pe < *start, "lock {start:?} overlaps the one before");
            }
            prev_end = Some(lock.end);
            check_lock(start, lock);
            assert!(lock.refresh_gen < self.next_refresh_gen);
            match lock.lru_seq {
                Some(seq) => {
                    idle += 1;
                    assert!(seq < self.next_lru_seq);
                    assert_eq!(self.lru.get(&seq), Some(start), "lru of {start:?}");
                }
                None => assert!(!lock.is_idle(), "idle lock {start:?} not in the lru"),
            }
        }
        assert_eq!(idle, self.lru.len(), "lru holds stale locks");
    }
}

/// Hands the head invalidation to the driver once no user blocks it.
fn start_invalidation(start: Key, lock: &mut ClientLock, out: &mut Vec<ClientAction>) {
    let Some(head) = lock.invalidations.front() else {
        return;
    };
    if head.target.is_some() {
        return;
    }
    let (old, new) = (head.msg.old_mode, head.msg.new_mode);
    let target = if old == lock.mode {
        new
    } else if lock.request == Some(old) {
        // It overtook the grant of our request: wait for the grant.
        return;
    } else if new == LockMode::Read && lock.mode.can_read() {
        // The server thinks we hold more than we do: never go up.
        LockMode::Read
    } else {
        LockMode::Null
    };
    if lock.users_block(target) {
        return;
    }
    if let Some(h) = lock.invalidations.front_mut() {
        h.target = Some(target);
    }
    out.push(ClientAction::Invalidate {
        start,
        end: lock.end,
        old_mode: lock.mode,
        new_mode: target,
        sync: lock.dirty_trans_seq != 0,
    });
}

fn check_lock(start: &Key, lock: &ClientLock) {
    assert_eq!(lock.users[0], 0, "null users on {start:?}");
    assert_eq!(lock.waiters[0], 0, "null waiters on {start:?}");
    // Users admitted by an invalidation may hold modes its target doesn't
    // allow until they leave.
    let working = lock
        .invalidations
        .front()
        .filter(|i| !i.admitted)
        .and_then(|i| i.target);
    for m in LockMode::ALL {
        if lock.users[m.idx()] == 0 {
            continue;
        }
        assert!(
            lock.mode.satisfies(m),
            "{m} users under {} on {start:?}",
            lock.mode
        );
        if let Some(r) = lock.request {
            assert!(
                r.satisfies(m),
                "{m} users while requesting {r} on {start:?}"
            );
        }
        if let Some(t) = working {
            assert!(
                t.satisfies(m),
                "{m} users while invalidating to {t} on {start:?}"
            );
        }
    }
    assert!(lock.invalidations.len() <= INVALIDATIONS_QUEUED_MAX);
    assert!(
        lock.invalidations
            .iter()
            .skip(1)
            .all(|i| i.target.is_none() && !i.void),
        "more than one invalidation in progress on {start:?}"
    );
    assert!(
        lock.invalidations
            .front()
            .is_none_or(|i| !i.void || i.target.is_some()),
        "a void invalidation not in progress on {start:?}"
    );
    assert!(
        lock.invalidations
            .iter()
            .all(|i| !i.admitted || i.target.is_some()),
        "an invalidation not in progress admitted users on {start:?}"
    );
    assert!(
        lock.dirty_trans_seq == 0 || lock.mode != LockMode::Null,
        "dirty null lock {start:?}"
    );
    assert!(lock.mode == LockMode::Null || lock.refresh_gen != 0);
    assert!(!lock.is_forgettable(), "forgettable lock {start:?} kept");
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockMode::{Null, Read, Write, WriteOnly};

    fn lc(idle_max: usize) -> LockClient {
        LockClient::new(Rid(0xabc), idle_max)
    }

    fn grant(key: Key, old: LockMode, new: LockMode, write_seq: u64) -> LockMsg {
        LockMsg {
            key,
            write_seq,
            old_mode: old,
            new_mode: new,
        }
    }

    /// Acquires a lock that isn't held yet and has it granted.
    fn get(c: &mut LockClient, ino: u64, mode: LockMode, write_seq: u64) -> Key {
        let (s, e) = inode_lock_range(ino);
        let Acquire::Wait(Some(req)) = c.acquire(s, e, mode) else {
            panic!("expected a request");
        };
        assert_eq!(req, grant(s, c.lock_view(&s).unwrap().mode, mode, 0));
        let acts = c.on_grant(grant(s, req.old_mode, mode, write_seq));
        assert!(acts.contains(&ClientAction::Wake { start: s }));
        assert!(matches!(c.acquire(s, e, mode), Acquire::Held { .. }));
        c.check_invariants();
        s
    }

    fn end(s: Key) -> Key {
        inode_lock_range(s.first).1
    }

    impl LockClient {
        /// A write user of `s` dirtied transaction `seq` (taking and
        /// giving back a user around `mark_dirty`).
        fn dirtied_for_test(&mut self, s: Key, seq: u64) {
            let e = end(s);
            assert!(matches!(self.acquire(s, e, Write), Acquire::Held { .. }));
            self.mark_dirty(s, seq);
            assert!(self.release(s, Write).is_empty());
        }
    }

    #[test]
    fn mode_values_and_rules() {
        for v in 0..4u8 {
            assert_eq!(LockMode::from_u8(v).map(|m| m as u8), Some(v));
        }
        assert_eq!(LockMode::from_u8(4), None);
        assert_eq!(LockMode::from_u8(255), None);
        assert!(Read.can_read() && Write.can_read() && !WriteOnly.can_read());
        assert!(!Read.can_write() && Write.can_write() && WriteOnly.can_write());
        assert!(!Null.can_read() && !Null.can_write());
        assert!(Write.satisfies(Read) && !Read.satisfies(Write));
        assert!(!Write.satisfies(WriteOnly) && !WriteOnly.satisfies(Write));
        assert!(!WriteOnly.satisfies(Read) && WriteOnly.satisfies(WriteOnly));
        assert!(modes_compatible(Read, Read) && modes_compatible(WriteOnly, WriteOnly));
        assert!(!modes_compatible(Write, Write) && !modes_compatible(Read, WriteOnly));
        assert!(!modes_compatible(Write, Read) && modes_compatible(Null, Write));
        assert_eq!(Rid(0x1f).to_string(), "000000000000001f");
        assert_eq!(WriteOnly.to_string(), "write_only");
    }

    #[test]
    fn lock_ranges() {
        let (s, e) = inode_lock_range(5000);
        assert_eq!(s, Key::new(zone::FS, 4096, 0, 0, 0, 0));
        assert_eq!(e.first, 5119);
        assert_eq!(e.inc(), Key::new(zone::FS, 5120, 0, 0, 0, 0));
        assert!(s <= Key::inode(4096) && Key::inode(5119) <= e);
        assert_eq!(inode_lock_range(4096), inode_lock_range(5119));
        assert_eq!(s.dec(), inode_lock_range(4095).1);
        let (s, e) = index_lock_range(ty::INODE_INDEX_META_SEQ, 2047);
        assert_eq!(
            (s.zone, s.first, s.ty, s.second),
            (zone::INODE_INDEX, 0, 4, 1024)
        );
        assert_eq!((e.second, e.third, e.fourth), (2047, u64::MAX, u8::MAX));
        assert_eq!(e.inc(), index_lock_range(ty::INODE_INDEX_META_SEQ, 2048).0);
        let (s, e) = rename_lock_range();
        assert_eq!(s, e);
        assert_eq!((s.zone, s.ty), (zone::LOCK, ty::RENAME));
        let (s, e) = orphan_lock_range();
        let orphan = Key::new(zone::ORPHAN, 0, ty::ORPHAN, 77, 0, 0);
        assert!(s <= orphan && orphan <= e);
        assert_eq!(s.dec().zone, zone::ORPHAN - 1);
        assert_eq!(e.inc(), Key::new(zone::ORPHAN + 1, 0, 0, 0, 0, 0));
    }

    #[test]
    fn grant_then_held_and_release_to_idle() {
        let mut c = lc(10);
        let s = get(&mut c, 1, Write, 42);
        let v = c.lock_view(&s).unwrap();
        assert_eq!(
            (v.mode, v.write_seq, v.users[2], v.idle),
            (Write, 42, 1, false)
        );
        // WRITE satisfies READ; refresh_gen stays with the grant.
        assert_eq!(
            c.acquire(s, end(s), Read),
            Acquire::Held {
                write_seq: 42,
                refresh_gen: v.refresh_gen
            }
        );
        assert!(c.release(s, Read).is_empty());
        assert!(c.release(s, Write).is_empty());
        assert!(c.lock_view(&s).unwrap().idle);
        assert_eq!(c.idle_len(), 1);
        c.check_invariants();
        // Each grant gets a new generation.
        let s2 = get(&mut c, 2000, Read, 0);
        assert!(c.lock_view(&s2).unwrap().refresh_gen > v.refresh_gen);
    }

    #[test]
    fn read_holder_upgrades_to_write() {
        let mut c = lc(10);
        let s = get(&mut c, 1, Read, 0);
        let Acquire::Wait(Some(req)) = c.acquire(s, end(s), Write) else {
            panic!("expected an upgrade request");
        };
        assert_eq!((req.old_mode, req.new_mode), (Read, Write));
        // Readers still get in while the upgrade is in flight; a second
        // writer waits without a second request.
        assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
        assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
        c.check_invariants();
        let acts = c.on_grant(grant(s, Read, Write, 7));
        assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
        assert!(matches!(
            c.acquire(s, end(s), Write),
            Acquire::Held { write_seq: 7, .. }
        ));
        let v = c.lock_view(&s).unwrap();
        assert_eq!((v.mode, v.users), (Write, [0, 2, 1, 0]));
        c.check_invariants();
    }

    #[test]
    fn admission_lets_waiters_in_under_the_mode_still_held() {
        let mut c = lc(10);
        let s = get(&mut c, 1, Write, 9);
        c.dirtied_for_test(s, 3);
        assert!(c.release(s, Write).is_empty());
        let acts = c.on_invalidate(grant(s, Write, Null, 0));
        assert!(matches!(
            acts[..],
            [ClientAction::Invalidate {
                new_mode: Null,
                sync: true,
                ..
            }]
        ));
        c.trans_committed(3);
        // A writer and a reader arrive during the work and wait; one
        // wanting a conversion can't be here (we hold WRITE).
        assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
        assert_eq!(c.acquire(s, end(s), Read), Acquire::Wait(None));
        assert!(!c.lock_view(&s).unwrap().admitting);
        assert_eq!(c.admit(s), vec![ClientAction::Wake { start: s }]);
        assert!(c.lock_view(&s).unwrap().admitting);
        assert!(matches!(
            c.acquire(s, end(s), Write),
            Acquire::Held { write_seq: 9, .. }
        ));
        assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
        // Newcomers get in too while admitting.
        assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
        c.check_invariants();
        c.dirtied_for_test(s, 4);
        assert!(!c.invalidation_ready(&s));
        c.end_admission(s);
        // Now newcomers wait again, and the users admitted must leave.
        assert_eq!(c.acquire(s, end(s), Read), Acquire::Wait(None));
        assert!(!c.invalidation_ready(&s));
        // (The last user of a mode to leave wakes the waiters to retry.)
        c.release(s, Read);
        c.release(s, Read);
        assert!(!c.invalidation_ready(&s));
        c.release(s, Write);
        c.check_invariants();
        assert!(c.invalidation_ready(&s));
        // What they dirtied is committed before the answer.
        assert_eq!(c.lock_view(&s).unwrap().dirty_trans_seq, 4);
        c.trans_committed(4);
        let (resp, acts) = c.invalidate_done(s);
        assert_eq!(resp, Some(grant(s, Write, Null, 0)));
        assert!(acts.is_empty());
        assert!(
            c.lock_view(&s).is_none(),
            "a null lock with nobody is forgotten"
        );
        c.check_invariants();
    }

    #[test]
    fn admission_leaves_conversion_waiters_waiting() {
        let mut c = lc(10);
        let s = get(&mut c, 1, Read, 0);
        assert!(c.release(s, Read).is_empty());
        let acts = c.on_invalidate(grant(s, Read, Null, 0));
        assert_eq!(acts.len(), 1);
        assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
        assert_eq!(c.admit(s), vec![ClientAction::Wake { start: s }]);
        assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
        assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
        c.end_admission(s);
        assert!(!c.invalidation_ready(&s));
        c.release(s, Read);
        assert!(c.invalidation_ready(&s));
        let (resp, _) = c.invalidate_done(s);
        assert_eq!(resp, Some(grant(s, Read, Null, 0)));
        c.check_invariants();
    }

    #[test]
    fn write_to_read_invalidation_waits_for_writers_and_syncs() {
        let mut c = lc(10);
        let s = get(&mut c, 1, Write, 5);
        c.mark_dirty(s, 3);
        let inv = grant(s, Write, Read, 0);
        assert!(c.on_invalidate(inv).is_empty());
        // New readers are compatible with the target, writers are not.
        assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
        assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
        c.check_invariants();
        let acts = c.release(s, Write);
        let want = ClientAction::Invalidate {
            start: s,
            end: end(s),
            old_mode: Write,
            new_mode: Read,
            sync: true,
        };
        assert_eq!(acts, vec![ClientAction::Wake { start: s }, want]);
        c.trans_committed(2);
        assert_eq!(c.lock_view(&s).unwrap().dirty_trans_seq, 3);
        c.trans_committed(3);
        let (resp, acts) = c.invalidate_done(s);
        assert_eq!(resp, Some(inv));
        assert!(acts.is_empty());
        let v = c.lock_view(&s).unwrap();
        assert_eq!((v.mode, v.users, v.write_seq), (Read, [0, 1, 0, 0], 0));
        c.check_invariants();
    }

    #[test]
    #[should_panic(expected = "before its dirty trans")]
    fn invalidate_done_before_commit_is_a_bug() {
        let mut c = lc(10);
        let s = get(&mut c, 1, Write, 5);
        c.mark_dirty(s, 3);
        c.release(s, Write);
        c.on_invalidate(grant(s, Write, Null, 0));
        c.invalidate_done(s);
    }

    #[test]
    fn invalidation_to_null_forgets_the_lock() {
        let mut c = lc(10);
        let s = get(&mut c, 1, WriteOnly, 9);
        assert!(c.release(s, WriteOnly).is_empty());
        let inv = grant(s, WriteOnly, Null, 0);
        let acts = c.on_invalidate(inv);
        assert_eq!(
            acts,
            vec![ClientAction::Invalidate {
                start: s,
                end: end(s),
                old_mode: WriteOnly,
                new_mode: Null,
                sync: false
            }]
        );
        assert!(!c.lock_view(&s).unwrap().idle);
        // A waiter registered meanwhile is woken when it is done.
        assert_eq!(c.acquire(s, end(s), WriteOnly), Acquire::Wait(None));
        let (resp, acts) = c.invalidate_done(s);
        assert_eq!(resp, Some(inv));
        assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
        assert!(c.lock_view(&s).is_none());
        assert_eq!(c.idle_len(), 0);
        c.check_invariants();
    }

    #[test]
    fn write_only_is_its_own_mode() {
        let mut c = lc(10);
        let s = get(&mut c, 1, WriteOnly, 9);
        // WRITE_ONLY holders may not read: READ needs a conversion, which
        // waits until the WRITE_ONLY users are gone.
        assert_eq!(c.acquire(s, end(s), Read), Acquire::Wait(None));
        // And the waiter holds back new WRITE_ONLY users.
        assert_eq!(c.acquire(s, end(s), WriteOnly), Acquire::Wait(None));
        let acts = c.release(s, WriteOnly);
        assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
        let Acquire::Wait(Some(req)) = c.acquire(s, end(s), Read) else {
            panic!("expected a conversion request");
        };
        assert_eq!((req.old_mode, req.new_mode), (WriteOnly, Read));
        assert_eq!(c.acquire(s, end(s), WriteOnly), Acquire::Wait(None));
        c.check_invariants();
        let acts = c.on_grant(grant(s, WriteOnly, Read, 0));
        assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
        assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
        c.check_invariants();
    }

    #[test]
    fn losing_read_by_conversion_drops_the_cache() {
        let mut c = lc(10);
        let s = get(&mut c, 1, Read, 0);
        let Acquire::Wait(None) = c.acquire(s, end(s), WriteOnly) else {
            panic!("the conversion must wait for readers");
        };
        let acts = c.release(s, Read);
        assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
        let Acquire::Wait(Some(req)) = c.acquire(s, end(s), WriteOnly) else {
            panic!("expected a conversion request");
        };
        assert_eq!((req.old_mode, req.new_mode), (Read, WriteOnly));
        // Readers are held back while it is in flight.
        assert_eq!(c.acquire(s, end(s), Read), Acquire::Wait(None));
        let acts = c.on_grant(grant(s, Read, WriteOnly, 11));
        assert_eq!(
            acts,
            vec![
                ClientAction::DropCache {
                    start: s,
                    end: end(s)
                },
                ClientAction::Wake { start: s }
            ]
        );
        c.check_invariants();
    }

    #[test]
    fn unknown_lock_invalidation_is_answered() {
        let mut c = lc(10);
        let (s, _) = inode_lock_range(1);
        let inv = grant(s, Read, Null, 0);
        assert_eq!(c.on_invalidate(inv), vec![ClientAction::Respond(inv)]);
        assert!(c.is_empty());
    }

    #[test]
    fn invalidation_that_overtook_its_grant_waits_for_it() {
        let mut c = lc(10);
        let (s, e) = inode_lock_range(1);
        let Acquire::Wait(Some(_)) = c.acquire(s, e, Write) else {
            panic!("expected a request");
        };
        // The server granted WRITE and then asked for it back; the
        // invalidation arrives first.
        assert!(c.on_invalidate(grant(s, Write, Null, 0)).is_empty());
        let acts = c.on_grant(grant(s, Null, Write, 3));
        assert_eq!(acts.len(), 2, "{acts:?}");
        assert_eq!(acts[0], ClientAction::Wake { start: s });
        assert!(matches!(
            acts[1],
            ClientAction::Invalidate {
                old_mode: Write,
                ..
            }
        ));
        // The woken waiter may not use it: the invalidation blocks WRITE.
        assert_eq!(c.acquire(s, e, Write), Acquire::Wait(None));
        let v = c.lock_view(&s).unwrap();
        assert_eq!((v.mode, v.invalidations_queued), (Write, 1));
        c.check_invariants();
    }

    #[test]
    fn invalidation_crossing_our_upgrade() {
        let mut c = lc(10);
        let s = get(&mut c, 1, Read, 0);
        let Acquire::Wait(Some(_)) = c.acquire(s, end(s), Write) else {
            panic!("expected an upgrade request");
        };
        let inv = grant(s, Read, Null, 0);
        assert!(c.on_invalidate(inv).is_empty());
        let acts = c.release(s, Read);
        assert!(matches!(
            acts[..],
            [
                ClientAction::Wake { .. },
                ClientAction::Invalidate { new_mode: Null, .. }
            ]
        ));
        let (resp, _) = c.invalidate_done(s);
        assert_eq!(resp, Some(inv));
        // The request is still in flight, so the null lock is kept.
        let v = c.lock_view(&s).unwrap();
        assert_eq!((v.mode, v.request), (Null, Some(Write)));
        c.on_grant(grant(s, Null, Write, 4));
        assert!(matches!(
            c.acquire(s, end(s), Write),
            Acquire::Held { write_seq: 4, .. }
        ));
        c.check_invariants();
    }

    #[test]
    fn idle_locks_are_trimmed_oldest_first_skipping_dirty() {
        let mut c = lc(1);
        let a = get(&mut c, 1, Write, 1);
        let b = get(&mut c, 1024, Read, 0);
        let d = get(&mut c, 2048, Read, 0);
        c.mark_dirty(a, 8);
        c.release(a, Write);
        assert!(
            c.trim_idle().is_empty(),
            "one idle lock is within the limit"
        );
        c.release(b, Read);
        c.release(d, Read);
        assert_eq!(c.idle_len(), 3);
        // `a` is oldest but dirty, so `b` and `d` go.
        let msgs = c.trim_idle();
        assert_eq!(msgs, vec![grant(b, Read, Null, 0), grant(d, Read, Null, 0)]);
        assert_eq!(c.idle_len(), 1);
        assert!(c.trim_idle().is_empty(), "one request per lock at a time");
        c.check_invariants();
        // A user wanting `b` meanwhile waits for the null grant.
        assert_eq!(c.acquire(b, end(b), Read), Acquire::Wait(None));
        let acts = c.on_grant(grant(b, Read, Null, 0));
        assert_eq!(
            acts,
            vec![
                ClientAction::DropCache {
                    start: b,
                    end: end(b)
                },
                ClientAction::Wake { start: b }
            ]
        );
        assert!(c.lock_view(&b).is_none());
        c.on_grant(grant(d, Read, Null, 0));
        assert_eq!(c.len(), 1);
        c.check_invariants();
        // Once committed, the dirty lock is trimmed like any other.
        let e = get(&mut c, 4096, Read, 0);
        c.release(e, Read);
        let msgs = c.trim_idle();
        assert_eq!(
            msgs,
            vec![grant(e, Read, Null, 0)],
            "the dirty oldest stays"
        );
        c.on_grant(msgs[0]);
        let f = get(&mut c, 8192, Read, 0);
        c.release(f, Read);
        c.trans_committed(8);
        assert_eq!(c.trim_idle(), vec![grant(a, Write, Null, 0)]);
        c.check_invariants();
    }

    #[test]
    fn cancelled_waiter_releases_fairness() {
        let mut c = lc(10);
        let s = get(&mut c, 1, Read, 0);
        assert_eq!(c.acquire(s, end(s), WriteOnly), Acquire::Wait(None));
        assert_eq!(c.acquire(s, end(s), Read), Acquire::Wait(None));
        let acts = c.cancel_wait(s, WriteOnly);
        assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
        assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
        c.check_invariants();
    }

    #[test]
    fn impossible_server_messages_are_errors() {
        let mut c = lc(10);
        let (s, _) = inode_lock_range(1);
        let acts = c.on_grant(grant(s, Null, Read, 0));
        assert!(matches!(acts[..], [ClientAction::ProtocolError { .. }]));
        let acts = c.on_invalidate(grant(s, Read, WriteOnly, 0));
        assert!(matches!(acts[..], [ClientAction::ProtocolError { .. }]));
        let s = get(&mut c, 1, Read, 0);
        let acts = c.on_grant(grant(s, Read, Write, 1));
        assert!(matches!(acts[..], [ClientAction::ProtocolError { .. }]));
        c.check_invariants();
    }

    fn entry(key: Key, mode: LockMode, write_seq: u64) -> RecoverEntry {
        RecoverEntry {
            key,
            mode,
            write_seq,
        }
    }

    #[test]
    fn recovery_reports_granted_modes() {
        let mut c = lc(0);
        let a = get(&mut c, 1, Write, 5);
        let b = get(&mut c, 1024, Read, 0);
        let d = get(&mut c, 2048, WriteOnly, 6);
        // A request in flight reports the mode granted so far.
        let Acquire::Wait(Some(_)) = c.acquire(b, end(b), Write) else {
            panic!("expected an upgrade request");
        };
        // An invalidation being worked on reports the old mode.
        c.release(a, Write);
        let acts = c.on_invalidate(grant(a, Write, Null, 0));
        assert!(matches!(acts[..], [ClientAction::Invalidate { .. }]));
        // A lock asked for but never granted isn't reported.
        let (s, e) = inode_lock_range(4096);
        let Acquire::Wait(Some(_)) = c.acquire(s, e, Read) else {
            panic!("expected a request");
        };
        // A lock being given up isn't reported.
        let g = get(&mut c, 8192, Read, 0);
        c.release(g, Read);
        assert_eq!(c.trim_idle(), vec![grant(g, Read, Null, 0)]);
        let want = vec![
            entry(a, Write, 5),
            entry(b, Read, 0),
            entry(d, WriteOnly, 6),
        ];
        assert_eq!(c.recovery_report(), want);
        assert_eq!(c.recovery_batch(Key::MIN, 2), (want[..2].to_vec(), true));
        assert_eq!(c.recovery_batch(b.inc(), 2), (want[2..].to_vec(), false));
        assert_eq!(c.recovery_batch(d, 1), (want[2..].to_vec(), false));
        assert_eq!(c.recovery_batch(d.inc(), 1), (vec![], false));
        c.check_invariants();
        // The new server didn't count it: its resent request is granted
        // from `Null`, which forgets it.
        c.server_changed();
        let acts = c.on_grant(grant(g, Null, Null, 0));
        assert!(matches!(acts[..], [ClientAction::DropCache { .. }]));
        assert!(c.lock_view(&g).is_none());
        c.check_invariants();
    }

    #[test]
    fn server_change_voids_invalidations_and_keeps_requests() {
        let mut c = lc(10);
        let a = get(&mut c, 1, Write, 5);
        let b = get(&mut c, 1024, Read, 0);
        c.mark_dirty(a, 3);
        // `a` is being invalidated (the driver is committing) with a
        // second invalidation queued; `b` has one queued behind a reader.
        c.release(a, Write);
        let acts = c.on_invalidate(grant(a, Write, Read, 0));
        assert!(matches!(
            acts[..],
            [ClientAction::Invalidate { sync: true, .. }]
        ));
        assert!(c.on_invalidate(grant(a, Read, Null, 0)).is_empty());
        let Acquire::Wait(Some(req)) = c.acquire(b, end(b), Write) else {
            panic!("expected an upgrade request");
        };
        assert!(c.on_invalidate(grant(b, Read, Null, 0)).is_empty());
        assert_eq!(c.acquire(b, end(b), Read), Acquire::Wait(None));
        let acts = c.server_changed();
        // The reader held back by `b`'s dropped invalidation may go on.
        assert_eq!(acts, vec![ClientAction::Wake { start: b }]);
        assert!(matches!(c.acquire(b, end(b), Read), Acquire::Held { .. }));
        c.release(b, Read);
        // The void invalidation still blocks writers until it is done.
        assert_eq!(c.acquire(a, end(a), Write), Acquire::Wait(None));
        c.check_invariants();
        assert_eq!(
            c.recovery_report(),
            vec![entry(a, Write, 5), entry(b, Read, 0)]
        );
        c.trans_committed(3);
        let (resp, acts) = c.invalidate_done(a);
        assert_eq!(resp, None, "the old server is gone");
        assert_eq!(acts, vec![ClientAction::Wake { start: a }]);
        let v = c.lock_view(&a).unwrap();
        assert_eq!((v.mode, v.write_seq, v.invalidations_queued), (Write, 5, 0));
        assert!(matches!(
            c.acquire(a, end(a), Write),
            Acquire::Held { write_seq: 5, .. }
        ));
        // The resent request is granted by the new server.
        let acts = c.on_grant(grant(b, req.old_mode, Write, 9));
        assert!(acts.is_empty(), "{acts:?}");
        assert!(matches!(
            c.acquire(b, end(b), Write),
            Acquire::Held { write_seq: 9, .. }
        ));
        c.check_invariants();
    }

    #[test]
    fn grant_during_a_void_invalidation_is_accepted() {
        let mut c = lc(10);
        let s = get(&mut c, 1, Read, 0);
        let Acquire::Wait(Some(_)) = c.acquire(s, end(s), Write) else {
            panic!("expected an upgrade request");
        };
        c.release(s, Read);
        let acts = c.on_invalidate(grant(s, Read, Null, 0));
        assert!(matches!(acts[..], [ClientAction::Invalidate { .. }]));
        assert!(matches!(
            c.on_grant(grant(s, Read, Write, 4))[..],
            [ClientAction::ProtocolError { .. }]
        ));
        c.server_changed();
        // The new server recovered us at READ and granted the upgrade
        // while the driver was still dropping the cache for the old one.
        assert!(c.on_grant(grant(s, Read, Write, 7)).is_empty());
        assert_eq!(c.lock_view(&s).unwrap().mode, Write);
        assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
        c.check_invariants();
        let (resp, acts) = c.invalidate_done(s);
        assert_eq!((resp, acts), (None, vec![ClientAction::Wake { start: s }]));
        assert!(matches!(
            c.acquire(s, end(s), Write),
            Acquire::Held { write_seq: 7, .. }
        ));
        c.check_invariants();
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn overlapping_ranges_are_a_bug() {
        let mut c = lc(10);
        let (s, _) = inode_lock_range(1);
        c.acquire(s, Key::MAX, Read);
        c.acquire(inode_lock_range(5000).0, inode_lock_range(5000).1, Read);
    }
}
