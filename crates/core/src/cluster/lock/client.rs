//! The client state machine of cluster locks, one per mount.
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
//! mount reports (`lock::server`'s recovery). Our locks stay valid across
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

use super::{LockMode, LockMsg, RecoverEntry, INVALIDATIONS_QUEUED_MAX};
use crate::types::Rid;
use scoutfs_format::Key;
use std::collections::{BTreeMap, VecDeque};

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
        self.trim_idle_except(|_| false)
    }

    /// [`LockClient::trim_idle`], keeping the locks for which `keep` says
    /// so (they count against `idle_max` all the same).
    pub fn trim_idle_except(&mut self, keep: impl Fn(&Key) -> bool) -> Vec<LockMsg> {
        let mut excess = self.lru.len().saturating_sub(self.idle_max);
        let mut chosen = Vec::new();
        for key in self.lru.values() {
            if excess == 0 {
                break;
            }
            if !keep(key) && self.locks.get(key).is_some_and(|l| l.dirty_trans_seq == 0) {
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
