//! The lock server: grants cluster range locks to mounts.
//!
//! # What it is
//!
//! A pure state machine run by the elected server. Inputs are LOCK requests
//! from mounts, their responses to our invalidations, farewells and, after
//! a server change, the mounts' reports of the locks they hold; each
//! returns the messages to send ([`ServerOut`]). It has no threads, clocks
//! or I/O, and its outputs are ordered only by its inputs and key order.
//! Modes, compatibility and the wire struct live in [`crate::cluster::lock`].
//!
//! # Data structures
//!
//! Per lock (by start key, created on the first request and dropped when
//! empty): `granted` (mount → mode, never `Null`), `invalidated` (mounts we
//! sent an invalidation to and await the response of: the mode they hold
//! and the mode we asked for), and `requested`, a FIFO of {mount, net id,
//! old mode, new mode}. A mount appears in at most one of granted and
//! invalidated, and at most once in requested.
//!
//! # Processing (after every input, per lock, in arrival order)
//!
//! 1. While any invalidation is outstanding, wait for the responses.
//! 2. Take the head request. Every granted entry that conflicts with it is
//!    sent an invalidation `{old = its mode, new = Read if the request is
//!    Read and it holds Write, else Null}` and moved to `invalidated`; if
//!    any was sent, wait. An entry conflicts if its mode is incompatible
//!    with the requested one ([`modes_compatible`]), except that a mount's
//!    own `Read` entry never conflicts with its upgrade to `Write` (it keeps
//!    its cache). A mount's other conversions between incompatible modes do
//!    invalidate its own entry first: `WriteOnly`→`Read` must commit the
//!    mount's blind writes before it, and then other readers, may read
//!    (other readers would be granted without asking it); `Read`→`WriteOnly`
//!    drops its cache before others may write blindly.
//! 3. Otherwise grant: the response to the request's net id carries
//!    `{old = the mount's existing mode or Null, new = requested}` and, for
//!    `Write` and `WriteOnly`, `write_seq = seq()` (the server's seq source,
//!    so items written under the grant sort after everything before it).
//!    `Null` results are not tracked. Repeat with the next request.
//!
//! A response moves the entry back to `granted` with the asked-for mode (or
//! drops it for `Null`). A farewell drops every entry of the mount, queued
//! requests included, and reprocesses the locks it touched in key order.
//!
//! # Recovery after a server change
//!
//! Grants live only in memory, so a new server ([`LockServer::recovering`])
//! starts from the mounts that were connected to the old one (the
//! `mounted_clients` records) and rebuilds exactly who holds what from
//! their reports before it decides anything:
//!
//! 1. When an expected mount greets ([`LockServer::greeted`]), ask it for
//!    its locks: [`ServerOut::Recover`] `{first = Key::MIN}`.
//! 2. Each answer ([`LockServer::recover`]) is a batch of entries `{key,
//!    mode, write_seq}` in ascending key order from `first` on, and whether
//!    more follow; if so, ask again from after the last key. Entries are
//!    installed as granted. A mount reports the mode it holds, the old
//!    one during an invalidation, so the rebuilt state never counts a mount
//!    at less than it may use.
//! 3. A mount that doesn't report in time is fenced by the server layer,
//!    which then calls [`LockServer::rid_gone`]: its entries and requests
//!    are dropped. A farewell counts the same.
//! 4. When every expected mount has reported or is gone, recovery ends and
//!    the requests queued meanwhile are processed, lock by lock in the
//!    order of each lock's first queued request, each lock's queue in
//!    arrival order.
//!
//! While recovering, requests (resent ones included, and those of new
//! mounts) are queued, never granted, and nothing is invalidated: a mount
//! that hasn't reported yet may hold anything. Invalidation responses are
//! protocol errors (nothing was sent). Items a mount wrote under a write
//! lock carry the grant's `write_seq` and may still be uncommitted, so the
//! new server's seq must exceed every reported `write_seq` before it grants
//! a write mode: the driver raises its seq source above a batch's largest
//! `write_seq` before passing the batch in (a batch may end recovery and
//! grant at once), and a grant asserts it
//! ([`LockServer::recovered_write_seq`]).
//!
//! # What the server layer does
//!
//! - At start, `recovering(rids)` with every mount of the `mounted_clients`
//!   records (`new()` when there are none).
//! - On a greeting from a mount of an earlier server (a client term that is
//!   nonzero and not ours), once the greeting is accepted: `greeted(rid)`.
//!   Send each [`ServerOut::Recover`] as `ServerRequest::LockRecover
//!   {first}` and remember its id like an invalidation's.
//! - On `ClientResponse::LockRecover {entries, more}`: raise the seq above
//!   the entries' greatest `write_seq`, then `recover(rid, &entries, more,
//!   seq)`, and carry out the outputs.
//! - Also raise the seq above the `max_item_seq` of every log tree a mount
//!   commits (COMMIT_LOG_TREES), as at start: a mount may commit through
//!   the new server and then be fenced before it reports the lock whose
//!   `write_seq` its items carry.
//! - After the recovery timeout, fence every rid of `recovery_pending()`,
//!   and a mount that sent a `ProtocolError`; once fenced, `rid_gone(rid)`.
//!   A farewell may come from a mount still recovering: `farewell`.
//! - Recovery gates only lock processing; other requests (commits above
//!   all) are served meanwhile, or mounts could not finish invalidations
//!   that must commit.
//!
//! # Protocol errors
//!
//! Messages come from the network, so impossible ones (a second request
//! from a mount for a lock it already has one queued on, a response without
//! an outstanding invalidation or with other modes, a report nobody asked
//! for, out of order, of a `Null` mode, claiming more without entries, or
//! conflicting with another mount's reported mode) are answered with
//! [`ServerOut::ProtocolError`] and otherwise ignored; a refused report
//! installs none of its batch. The driver should disconnect (and
//! eventually fence) that mount: two mounts claiming conflicting modes
//! means one of them is broken, and fencing it is the only safe way on.
//!
//! # Invariants ([`LockServer::check_invariants`])
//!
//! Entries of different mounts in granted and invalidated hold pairwise
//! compatible modes; no `Null` is stored; each invalidated entry asks for
//! `Read` from `Write` or for `Null`; a mount has at most one entry per lock
//! across granted and invalidated (so at most one pending invalidation) and
//! at most one queued request; a lock with queued requests has an
//! outstanding invalidation (processing always runs until it must wait),
//! except while recovering, when nothing is invalidated and every lock with
//! queued requests is listed for processing; no empty lock is kept.
//!
//! # Limits
//!
//! Recovery has no clock: its timeout (the original's 30 s) and the fencing
//! of late mounts are the server layer's. A farewell walks every lock. The
//! requested queue of a lock holds at most one entry per mount, so it is
//! bounded by the number of mounts; a report batch by
//! [`RECOVER_ENTRIES_MAX`].

use crate::cluster::lock::{
    modes_compatible, LockMode, LockMsg, RecoverEntry, RECOVER_ENTRIES_MAX,
};
use crate::types::Rid;
use scoutfs_format::Key;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A message for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerOut {
    /// The response to request `net_id` of mount `rid`.
    Grant { rid: Rid, net_id: u64, msg: LockMsg },
    /// A server → mount request to give the lock up to `msg.new_mode`.
    Invalidate { rid: Rid, msg: LockMsg },
    /// A server → mount LOCK_RECOVER request: report the locks you hold
    /// from `first` on; the answer goes to [`LockServer::recover`].
    Recover { rid: Rid, first: Key },
    /// An impossible message from `rid` was ignored.
    ProtocolError { rid: Rid, reason: String },
}

/// A queued request: the mount's request `net_id` from `old_mode` (as it
/// saw it when sending) to `new_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requested {
    pub rid: Rid,
    pub net_id: u64,
    pub old_mode: LockMode,
    pub new_mode: LockMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Invalidated {
    mode: LockMode,
    target: LockMode,
}

#[derive(Clone, Debug, Default)]
struct ServerLock {
    granted: BTreeMap<Rid, LockMode>,
    invalidated: BTreeMap<Rid, Invalidated>,
    requested: VecDeque<Requested>,
}

impl ServerLock {
    fn is_empty(&self) -> bool {
        self.granted.is_empty() && self.invalidated.is_empty() && self.requested.is_empty()
    }
}

/// Whether a held entry conflicts with a request (the module comment).
fn entries_conflict(holder: Rid, held: LockMode, req: &Requested) -> bool {
    let own_upgrade =
        holder == req.rid && held == LockMode::Read && req.new_mode == LockMode::Write;
    !(modes_compatible(held, req.new_mode) || own_upgrade)
}

/// The mode an incompatible holder is asked to go to.
fn invalidation_target(held: LockMode, wanted: LockMode) -> LockMode {
    if wanted == LockMode::Read && held == LockMode::Write {
        LockMode::Read
    } else {
        LockMode::Null
    }
}

/// Where the recovery of one expected mount stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecoverState {
    /// It hasn't greeted this server yet.
    Waiting,
    /// It was asked for its locks from `first` on.
    Asked { first: Key },
}

/// The state of a recovering server.
#[derive(Clone, Debug, Default)]
struct Recovery {
    /// Expected mounts that haven't finished reporting.
    pending: BTreeMap<Rid, RecoverState>,
    /// Locks with queued requests, in the order of their first request.
    queued: Vec<Key>,
    queued_set: BTreeSet<Key>,
}

/// The lock server; see the module comment.
#[derive(Debug, Default)]
pub struct LockServer {
    locks: BTreeMap<Key, ServerLock>,
    recovery: Option<Recovery>,
    /// The greatest `write_seq` any mount reported.
    recovered_write_seq: u64,
}

impl LockServer {
    /// The lock server of a filesystem that nobody has mounted under an
    /// earlier server.
    pub fn new() -> LockServer {
        LockServer::default()
    }

    /// The lock server of a new server: it recovers the locks of the
    /// `expected` mounts (those mounted under the old server) before it
    /// grants anything. With none expected it starts ready.
    pub fn recovering(expected: impl IntoIterator<Item = Rid>) -> LockServer {
        let pending: BTreeMap<Rid, RecoverState> = expected
            .into_iter()
            .map(|r| (r, RecoverState::Waiting))
            .collect();
        let recovery = (!pending.is_empty()).then(|| Recovery {
            pending,
            ..Recovery::default()
        });
        LockServer {
            recovery,
            ..LockServer::default()
        }
    }

    /// Whether some expected mount hasn't reported or gone yet.
    pub fn is_recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// The expected mounts that haven't finished reporting, for the server
    /// layer's recovery timeout.
    pub fn recovery_pending(&self) -> Vec<Rid> {
        self.recovery
            .as_ref()
            .map_or_else(Vec::new, |r| r.pending.keys().copied().collect())
    }

    /// The greatest `write_seq` reported in recovery (0 if none): every
    /// write grant's seq is above it.
    pub fn recovered_write_seq(&self) -> u64 {
        self.recovered_write_seq
    }

    /// Locks with any state.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// The mode the server counts `rid` as holding (the old mode while an
    /// invalidation is outstanding).
    pub fn held_mode(&self, key: &Key, rid: Rid) -> LockMode {
        let Some(lock) = self.locks.get(key) else {
            return LockMode::Null;
        };
        match (lock.granted.get(&rid), lock.invalidated.get(&rid)) {
            (Some(m), _) => *m,
            (None, Some(inv)) => inv.mode,
            (None, None) => LockMode::Null,
        }
    }

    /// The queued requests of a lock, head first.
    pub fn queue(&self, key: &Key) -> Vec<Requested> {
        self.locks
            .get(key)
            .map_or_else(Vec::new, |l| l.requested.iter().copied().collect())
    }

    /// A LOCK request `net_id` from mount `rid`.
    pub fn request(
        &mut self,
        rid: Rid,
        net_id: u64,
        msg: LockMsg,
        seq: &mut dyn FnMut() -> u64,
    ) -> Vec<ServerOut> {
        let lock = self.locks.entry(msg.key).or_default();
        if lock.requested.iter().any(|r| r.rid == rid) {
            let reason = format!("second request {msg:?} (net id {net_id}) on one lock");
            return vec![ServerOut::ProtocolError { rid, reason }];
        }
        lock.requested.push_back(Requested {
            rid,
            net_id,
            old_mode: msg.old_mode,
            new_mode: msg.new_mode,
        });
        if let Some(rec) = self.recovery.as_mut() {
            if rec.queued_set.insert(msg.key) {
                rec.queued.push(msg.key);
            }
            return Vec::new();
        }
        let mut out = Vec::new();
        self.process(msg.key, seq, &mut out);
        out
    }

    /// Mount `rid` greeted this server after a server change: if it is
    /// expected and not asked yet, ask for its locks. Repeated greetings
    /// (reconnects) ask nothing more: the net layer resends the question.
    pub fn greeted(&mut self, rid: Rid) -> Vec<ServerOut> {
        let Some(st) = self.recovery.as_mut().and_then(|r| r.pending.get_mut(&rid)) else {
            return Vec::new();
        };
        if *st != RecoverState::Waiting {
            return Vec::new();
        }
        *st = RecoverState::Asked { first: Key::MIN };
        vec![ServerOut::Recover {
            rid,
            first: Key::MIN,
        }]
    }

    /// Mount `rid` answered our LOCK_RECOVER with `entries` (from the key
    /// we asked for on, ascending) and whether `more` follow. The seq
    /// source must already be above every entry's `write_seq` (module
    /// comment).
    pub fn recover(
        &mut self,
        rid: Rid,
        entries: &[RecoverEntry],
        more: bool,
        seq: &mut dyn FnMut() -> u64,
    ) -> Vec<ServerOut> {
        if let Err(reason) = self.check_report(rid, entries, more) {
            return vec![ServerOut::ProtocolError { rid, reason }];
        }
        for e in entries {
            let lock = self.locks.entry(e.key).or_default();
            lock.granted.insert(rid, e.mode);
            self.recovered_write_seq = self.recovered_write_seq.max(e.write_seq);
        }
        let Some(rec) = self.recovery.as_mut() else {
            unreachable!("check_report found recovery");
        };
        match entries.last() {
            Some(last) if more => {
                let first = last.key.inc();
                rec.pending.insert(rid, RecoverState::Asked { first });
                vec![ServerOut::Recover { rid, first }]
            }
            _ => {
                rec.pending.remove(&rid);
                let mut out = Vec::new();
                self.maybe_end_recovery(seq, &mut out);
                out
            }
        }
    }

    /// Why a report can't be installed, if it can't.
    fn check_report(&self, rid: Rid, entries: &[RecoverEntry], more: bool) -> Result<(), String> {
        let asked = self.recovery.as_ref().and_then(|r| r.pending.get(&rid));
        let Some(RecoverState::Asked { first }) = asked else {
            return Err(format!(
                "a lock report of {} entries nobody asked for",
                entries.len()
            ));
        };
        if entries.len() > RECOVER_ENTRIES_MAX {
            return Err(format!("a lock report of {} entries", entries.len()));
        }
        match entries.last() {
            None if more => return Err("an empty lock report that claims more".into()),
            Some(last) if more && last.key == Key::MAX => {
                return Err("a lock report that claims more after the last key".into())
            }
            _ => {}
        }
        let mut prev: Option<Key> = None;
        for e in entries {
            if e.key < *first || prev.is_some_and(|p| p >= e.key) {
                return Err(format!("lock report {e:?} out of order (from {first:?})"));
            }
            prev = Some(e.key);
            if e.mode == LockMode::Null {
                return Err(format!("lock report {e:?} of a null mode"));
            }
            let Some(lock) = self.locks.get(&e.key) else {
                continue;
            };
            if lock.granted.contains_key(&rid) {
                return Err(format!("lock report {e:?} repeats a key"));
            }
            let clash = lock
                .granted
                .iter()
                .find(|(_, &m)| !modes_compatible(m, e.mode));
            if let Some((other, m)) = clash {
                return Err(format!(
                    "lock report {e:?} conflicts with {other} holding {m}"
                ));
            }
        }
        Ok(())
    }

    /// Ends recovery once nobody is pending, then processes what queued.
    fn maybe_end_recovery(&mut self, seq: &mut dyn FnMut() -> u64, out: &mut Vec<ServerOut>) {
        if self.recovery.as_ref().is_none_or(|r| !r.pending.is_empty()) {
            return;
        }
        let Some(rec) = self.recovery.take() else {
            return;
        };
        for key in rec.queued {
            self.process(key, seq, out);
        }
    }

    /// Mount `rid` answered our invalidation.
    pub fn invalidate_done(
        &mut self,
        rid: Rid,
        msg: LockMsg,
        seq: &mut dyn FnMut() -> u64,
    ) -> Vec<ServerOut> {
        let inv = self
            .locks
            .get(&msg.key)
            .and_then(|l| l.invalidated.get(&rid).copied());
        let Some(inv) = inv else {
            let reason = format!("response {msg:?} without an invalidation");
            return vec![ServerOut::ProtocolError { rid, reason }];
        };
        if inv.mode != msg.old_mode || inv.target != msg.new_mode {
            let reason = format!("response {msg:?} to an invalidation {inv:?}");
            return vec![ServerOut::ProtocolError { rid, reason }];
        }
        if let Some(lock) = self.locks.get_mut(&msg.key) {
            lock.invalidated.remove(&rid);
            if inv.target != LockMode::Null {
                lock.granted.insert(rid, inv.target);
            }
        }
        let mut out = Vec::new();
        self.process(msg.key, seq, &mut out);
        out
    }

    /// Mount `rid` said farewell: the same as [`Self::rid_gone`] (it
    /// committed before, and its cache goes with it).
    pub fn farewell(&mut self, rid: Rid, seq: &mut dyn FnMut() -> u64) -> Vec<ServerOut> {
        self.rid_gone(rid, seq)
    }

    /// Mount `rid` is gone (fenced, or said farewell): forget everything it
    /// held or asked for, and stop waiting for its recovery.
    pub fn rid_gone(&mut self, rid: Rid, seq: &mut dyn FnMut() -> u64) -> Vec<ServerOut> {
        let mut touched = Vec::new();
        for (key, lock) in self.locks.iter_mut() {
            let before = lock.requested.len();
            lock.requested.retain(|r| r.rid != rid);
            let g = lock.granted.remove(&rid).is_some();
            let i = lock.invalidated.remove(&rid).is_some();
            if g || i || lock.requested.len() != before {
                touched.push(*key);
            }
        }
        let mut out = Vec::new();
        if let Some(rec) = self.recovery.as_mut() {
            rec.pending.remove(&rid);
            // Locks left empty are dropped; queued ones are processed
            // when recovery ends (here, if `rid` was the last).
            for key in touched {
                if self.locks.get(&key).is_some_and(|l| l.is_empty()) {
                    self.locks.remove(&key);
                }
            }
            self.maybe_end_recovery(seq, &mut out);
            return out;
        }
        for key in touched {
            self.process(key, seq, &mut out);
        }
        out
    }

    /// Grants queued requests in order until one must wait (module comment).
    fn process(&mut self, key: Key, seq: &mut dyn FnMut() -> u64, out: &mut Vec<ServerOut>) {
        assert!(
            self.recovery.is_none(),
            "processing {key:?} while recovering"
        );
        let floor = self.recovered_write_seq;
        let Some(lock) = self.locks.get_mut(&key) else {
            return;
        };
        while lock.invalidated.is_empty() {
            let Some(head) = lock.requested.front().copied() else {
                break;
            };
            let conflicting: Vec<(Rid, LockMode)> = lock
                .granted
                .iter()
                .filter(|(&r, &m)| entries_conflict(r, m, &head))
                .map(|(&r, &m)| (r, m))
                .collect();
            for (r, mode) in conflicting {
                let target = invalidation_target(mode, head.new_mode);
                lock.granted.remove(&r);
                lock.invalidated.insert(r, Invalidated { mode, target });
                let msg = LockMsg {
                    key,
                    write_seq: 0,
                    old_mode: mode,
                    new_mode: target,
                };
                out.push(ServerOut::Invalidate { rid: r, msg });
            }
            if !lock.invalidated.is_empty() {
                break;
            }
            lock.requested.pop_front();
            out.push(grant(lock, key, &head, floor, seq));
        }
        if lock.is_empty() {
            self.locks.remove(&key);
        }
    }

    /// Asserts the invariants listed in the module comment.
    pub fn check_invariants(&self) {
        for (key, lock) in &self.locks {
            assert!(!lock.is_empty(), "empty lock {key:?} kept");
            let mut holders: Vec<(Rid, LockMode)> = Vec::new();
            for (&rid, &mode) in &lock.granted {
                assert!(mode != LockMode::Null, "null grant of {rid} on {key:?}");
                holders.push((rid, mode));
            }
            for (&rid, inv) in &lock.invalidated {
                assert!(
                    !lock.granted.contains_key(&rid),
                    "{rid} granted and invalidated on {key:?}"
                );
                let ok = inv.mode != LockMode::Null
                    && (inv.target == LockMode::Null
                        || (inv.target == LockMode::Read && inv.mode == LockMode::Write));
                assert!(ok, "invalidation {inv:?} of {rid} on {key:?}");
                holders.push((rid, inv.mode));
            }
            for (i, &(ra, ma)) in holders.iter().enumerate() {
                for &(rb, mb) in &holders[i + 1..] {
                    assert!(
                        modes_compatible(ma, mb),
                        "{ra} holds {ma} and {rb} holds {mb} on {key:?}"
                    );
                }
            }
            for (i, a) in lock.requested.iter().enumerate() {
                assert!(
                    lock.requested.iter().skip(i + 1).all(|b| b.rid != a.rid),
                    "two requests of {} on {key:?}",
                    a.rid
                );
            }
            match &self.recovery {
                Some(rec) => {
                    assert!(
                        lock.invalidated.is_empty(),
                        "invalidating {key:?} in recovery"
                    );
                    assert!(
                        lock.requested.is_empty() || rec.queued_set.contains(key),
                        "requests on {key:?} not listed for after recovery"
                    );
                }
                None => assert!(
                    lock.requested.is_empty() || !lock.invalidated.is_empty(),
                    "requests on {key:?} stalled with nothing outstanding"
                ),
            }
        }
        if let Some(rec) = &self.recovery {
            assert!(!rec.pending.is_empty(), "recovery with nobody pending");
            assert_eq!(rec.queued.len(), rec.queued_set.len());
        }
    }
}

/// Grants `req` (already taken off the queue) and records the result. A
/// write seq must exceed `floor`, the greatest recovered one.
fn grant(
    lock: &mut ServerLock,
    key: Key,
    req: &Requested,
    floor: u64,
    seq: &mut dyn FnMut() -> u64,
) -> ServerOut {
    let old_mode = lock
        .granted
        .get(&req.rid)
        .copied()
        .unwrap_or(LockMode::Null);
    let write_seq = if req.new_mode.can_write() { seq() } else { 0 };
    assert!(
        write_seq == 0 || write_seq > floor,
        "write seq {write_seq} of {key:?} not above the recovered {floor}: \
         the seq source wasn't raised before recovery ended"
    );
    if req.new_mode == LockMode::Null {
        lock.granted.remove(&req.rid);
    } else {
        lock.granted.insert(req.rid, req.new_mode);
    }
    ServerOut::Grant {
        rid: req.rid,
        net_id: req.net_id,
        msg: LockMsg {
            key,
            write_seq,
            old_mode,
            new_mode: req.new_mode,
        },
    }
}

#[cfg(test)]
mod tests;
