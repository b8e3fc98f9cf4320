//! A deterministic simulation of the cluster lock protocol.
//!
//! One thread runs a [`LockServer`] and 3–5 mounts, each a [`LockClient`]
//! with a simulated driver, connected by per-direction message queues. A
//! seeded generator picks every step: which connection delivers its next
//! message (so traffic between different pairs interleaves arbitrarily and
//! anything can be delayed), which task runs, when a driver finishes an
//! invalidation, when mounts trim idle locks or commit, and when a quiet
//! mount says farewell (it rejoins later as a new mount). Half of the seeds
//! also split each connection into a request lane and a response lane, so a
//! grant and a later invalidation may arrive in either order.
//!
//! Tasks take one or two locks (ascending key order) of a small set in
//! random modes, hold them a few steps while reading and incrementing a
//! counter per lock through a model of the item cache (a cached value, the
//! open transaction's increments, and a shared committed value), then
//! release them; now and then a waiting task gives up instead
//! (`cancel_wait`). The drivers follow the lock client's contract: commit
//! what the lock dirtied, drop the cache unless WRITE→READ, drop it on
//! `DropCache`, wake waiters on `Wake`. Now and then a driver admits the
//! tasks waiting for a lock it is giving up (as the real one does when its
//! kernel cache drop waits on them); they run under the mode still held
//! until the driver ends the admission, and the invalidation finishes once
//! they have left, committing what they dirtied.
//!
//! Server failover (most seeds): now and then the server crashes and a new
//! [`LockServer`] starts recovering the locks of every mount there was.
//! What the old server sent may still arrive (a prefix of each lane) until
//! the mount greets the new server; then the rest is gone, as are its own
//! messages to the old server, except requests, which the mount's net
//! layer resends in order (and a farewell, which is one). At its greeting
//! the mount's driver calls `server_changed` and the server asks it for its
//! locks, which it reports in batches (1–3 entries for some seeds, so
//! batching is exercised) while its tasks go on using them. The server
//! starts from a seq somewhere between its last durable seq and the old
//! server's and raises it above every reported `write_seq`, and above the
//! item seqs of every commit (a commit goes through the server, so a mount
//! that lost its server can't commit, nor finish an invalidation that must,
//! until it greets the new one). While recovering, some mounts are fenced:
//! they vanish with their uncommitted increments and their unanswered
//! requests, and a new mount takes their place.
//!
//! Checked after every step: no two mounts hold or could admit conflicting
//! modes on one lock (across crashes too: a mount keeps its locks, so a
//! WRITE holder stays exclusive); both machines' `check_invariants`; every
//! request is granted at most once per server; while recovering, every
//! mount that has reported is counted by the server at exactly the mode it
//! holds (or not at all while it gives the lock up: its `Null` request is
//! then granted from `Null`); every write grant's `write_seq` is above every item seq that
//! still exists (committed, or dirty in a live mount), and a WRITE holder
//! writes no seq below one already written to its lock. Every read sees
//! every increment made so far and not lost with a fenced mount (so
//! invalidations committed and caches were dropped when they had to be). At
//! the end new work and faults stop and the cluster must drain within a
//! step bound: every mount greeted, recovery over, every task completed (or
//! gone with its mount), every request granted exactly once (or lost with
//! its mount), the server and every mount agreeing on every lock, every
//! increment committed.
//!
//! A failure prints its seed and a replay command;
//! `SCOUTFS_SIM_SEED=<seed>` runs that seed alone and traces every step, and
//! `SCOUTFS_SIM_SEEDS=<n>` runs seeds 0..n instead of the default set.

mod common;

use scoutfs_core::cluster::lock::client::{Acquire, ClientAction, LockClient};
use scoutfs_core::cluster::lock::server::{LockServer, ServerOut};
use scoutfs_core::cluster::lock::{
    index_lock_range, inode_lock_range, modes_compatible, orphan_lock_range, rename_lock_range,
    LockMode, LockMsg, RecoverEntry, RECOVER_ENTRIES_MAX,
};
use scoutfs_core::rng::Rng;
use scoutfs_core::types::Rid;
use scoutfs_format::key::ty;
use scoutfs_format::Key;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Seeds run by the tests below, split in parts the harness runs in parallel.
const SEEDS: u64 = 1200;
const PARTS: u64 = 4;
/// Steps with new work, then steps allowed to drain.
const WORK_STEPS: u64 = 1200;
const DRAIN_STEPS_MAX: u64 = 20_000;
const TASKS_PER_MOUNT_MAX: usize = 3;
/// One in this many draws of a crash (and of a fence, while recovering)
/// happens: about two crashes per seed.
const CRASH_ODDS: u64 = 16;
const FENCE_ODDS: u64 = 4;

const MODES: [LockMode; 3] = [LockMode::Read, LockMode::Write, LockMode::WriteOnly];

#[derive(Clone, Debug)]
enum Up {
    Request {
        net_id: u64,
        msg: LockMsg,
    },
    Response(LockMsg),
    Farewell,
    /// The answer to a LOCK_RECOVER.
    Recover {
        entries: Vec<RecoverEntry>,
        more: bool,
    },
}

#[derive(Clone, Debug)]
enum Down {
    Grant { net_id: u64, msg: LockMsg },
    Invalidate(LockMsg),
    Recover { first: Key },
}

struct Task {
    locks: Vec<(Key, Key, LockMode)>,
    held: usize,
    waiting: bool,
    hold_steps: u32,
}

struct Invalidating {
    start: Key,
    old_mode: LockMode,
    new_mode: LockMode,
    /// The server era the mount was in when it started.
    era: u64,
}

/// One mount: its lock client, connection queues and simulated driver.
struct Mount {
    lc: LockClient,
    next_net_id: u64,
    /// To the server; lane 1 carries responses when lanes are split.
    up: [VecDeque<Up>; 2],
    /// From the server; lane 1 carries invalidations when lanes are split.
    down: [VecDeque<Down>; 2],
    tasks: Vec<Task>,
    invalidating: Vec<Invalidating>,
    trans_seq: u64,
    /// Increments in the open transaction, per lock.
    dirty: BTreeMap<Key, u64>,
    /// The greatest item seq (write_seq) of the open transaction, per lock.
    dirty_seqs: BTreeMap<Key, u64>,
    /// The item cache: the counter's value as last read or written.
    cache: BTreeMap<Key, u64>,
    leaving: bool,
    /// Requests whose grant hasn't arrived: the net layer resends them to a
    /// new server.
    unanswered: BTreeMap<u64, LockMsg>,
    /// Locks left out of a report because a `Null` request was in flight:
    /// the new server grants that request from `Null`.
    unreported: BTreeSet<Key>,
    /// Greeted the current server; until then nothing it sends is read.
    connected: bool,
    /// The server era it last greeted.
    era: u64,
}

impl Mount {
    fn new(rid: Rid, idle_max: usize, era: u64) -> Mount {
        Mount {
            lc: LockClient::new(rid, idle_max),
            next_net_id: 1,
            up: [VecDeque::new(), VecDeque::new()],
            down: [VecDeque::new(), VecDeque::new()],
            tasks: Vec::new(),
            invalidating: Vec::new(),
            trans_seq: 1,
            dirty: BTreeMap::new(),
            dirty_seqs: BTreeMap::new(),
            cache: BTreeMap::new(),
            leaving: false,
            unanswered: BTreeMap::new(),
            unreported: BTreeSet::new(),
            connected: true,
            era,
        }
    }

    fn rid(&self) -> Rid {
        self.lc.rid()
    }

    fn runnable(&self) -> bool {
        !self.leaving && self.tasks.iter().any(|t| !t.waiting)
    }

    fn requests_in_flight(&self) -> bool {
        self.lc
            .starts()
            .iter()
            .any(|s| self.lc.lock_view(s).is_some_and(|v| v.request.is_some()))
    }

    fn quiet(&self) -> bool {
        !self.leaving
            && self.connected
            && self.tasks.is_empty()
            && self.invalidating.is_empty()
            && self.up.iter().all(|q| q.is_empty())
            && !self.requests_in_flight()
    }

    /// Invalidations the driver may take a step on now: end an admission,
    /// or finish once the users admitted have left (one that must commit
    /// waits until the mount reaches a server).
    fn finishable(&self) -> Vec<usize> {
        (0..self.invalidating.len())
            .filter(|&j| {
                let start = self.invalidating[j].start;
                let Some(v) = self.lc.lock_view(&start) else {
                    return false;
                };
                v.admitting
                    || (self.lc.invalidation_ready(&start)
                        && (self.connected || v.dirty_trans_seq == 0))
            })
            .collect()
    }

    /// Invalidations with callers waiting that the driver may admit.
    fn admittable(&self) -> Vec<usize> {
        (0..self.invalidating.len())
            .filter(|&j| {
                self.lc
                    .lock_view(&self.invalidating[j].start)
                    .is_some_and(|v| !v.admitting && v.waiters.iter().any(|&n| n > 0))
            })
            .collect()
    }
}

/// What a run exercised, summed over seeds and printed.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    steps: u64,
    requests: u64,
    conversions: u64,
    null_requests: u64,
    invalidations: u64,
    overtaken_grants: u64,
    answered_unknown: u64,
    waits: u64,
    reads: u64,
    writes: u64,
    farewells: u64,
    cancels: u64,
    tasks: u64,
    crashes: u64,
    fences: u64,
    resent: u64,
    recover_batches: u64,
    void_invalidations: u64,
    /// Admissions of waiters during an invalidation, and users admitted.
    admissions: u64,
    old_messages_read: u64,
    /// Locks reported while an invalidation was queued or in progress.
    reported_invalidating: u64,
    /// Locks left out of a report while being given up.
    unreported: u64,
}

impl common::sim::Totals for Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.requests += o.requests;
        self.conversions += o.conversions;
        self.null_requests += o.null_requests;
        self.invalidations += o.invalidations;
        self.overtaken_grants += o.overtaken_grants;
        self.answered_unknown += o.answered_unknown;
        self.waits += o.waits;
        self.reads += o.reads;
        self.writes += o.writes;
        self.farewells += o.farewells;
        self.cancels += o.cancels;
        self.tasks += o.tasks;
        self.crashes += o.crashes;
        self.fences += o.fences;
        self.resent += o.resent;
        self.recover_batches += o.recover_batches;
        self.void_invalidations += o.void_invalidations;
        self.admissions += o.admissions;
        self.old_messages_read += o.old_messages_read;
        self.reported_invalidating += o.reported_invalidating;
        self.unreported += o.unreported;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    DeliverUp,
    DeliverDown,
    RunTask,
    StartTask,
    FinishInvalidation,
    Admit,
    Trim,
    Commit,
    Farewell,
    Cancel,
    Crash,
    Greet,
    Fence,
}

struct Sim {
    seed: u64,
    rng: Rng,
    trace: bool,
    server: LockServer,
    server_seq: u64,
    /// Counts servers; each crash starts the next.
    era: u64,
    /// Whether this seed crashes its server.
    crashes: bool,
    /// Entries per LOCK_RECOVER answer.
    recover_batch_max: usize,
    mounts: Vec<Mount>,
    keys: Vec<(Key, Key)>,
    split: bool,
    idle_max: usize,
    next_rid: u64,
    draining: bool,
    /// Requests sent and not yet granted by the server.
    pending: BTreeSet<(Rid, u64)>,
    /// Grants the server sent that the mount hasn't received yet.
    granted: BTreeSet<(Rid, u64)>,
    stats: Stats,
    grants: u64,
    tasks_started: u64,
    tasks_done: u64,
    /// The model: every increment made, and those committed.
    truth: BTreeMap<Key, u64>,
    committed: BTreeMap<Key, u64>,
    /// The greatest item seq committed per lock.
    committed_seqs: BTreeMap<Key, u64>,
    /// Requests and tasks that vanished with fenced mounts.
    requests_lost: u64,
    tasks_aborted: u64,
    step: u64,
}

fn lock_set() -> Vec<(Key, Key)> {
    let mut v = vec![
        inode_lock_range(1),
        inode_lock_range(1024),
        inode_lock_range(2048 + 7),
        inode_lock_range(3 * 1024 + 1023),
        index_lock_range(ty::INODE_INDEX_META_SEQ, 5000),
        orphan_lock_range(),
        rename_lock_range(),
    ];
    v.sort();
    v
}

impl Sim {
    fn new(seed: u64, trace: bool) -> Sim {
        let mut rng = Rng::new(seed);
        let nr_mounts = 3 + rng.below(3) as usize;
        let idle_max = rng.below(4) as usize;
        let split = rng.below(2) == 1;
        let crashes = rng.below(4) != 0;
        let recover_batch_max = match rng.below(2) {
            0 => 1 + rng.below(3) as usize,
            _ => RECOVER_ENTRIES_MAX,
        };
        let mut keys = lock_set();
        // Fewer locks for some seeds: more contention.
        let keep = 2 + rng.below(keys.len() as u64 - 1) as usize;
        while keys.len() > keep {
            keys.remove(rng.below(keys.len() as u64) as usize);
        }
        let mut sim = Sim {
            seed,
            rng,
            trace,
            server: LockServer::new(),
            server_seq: 0,
            era: 1,
            crashes,
            recover_batch_max,
            mounts: Vec::new(),
            keys,
            split,
            idle_max,
            next_rid: 1,
            draining: false,
            pending: BTreeSet::new(),
            granted: BTreeSet::new(),
            stats: Stats::default(),
            grants: 0,
            tasks_started: 0,
            tasks_done: 0,
            truth: BTreeMap::new(),
            committed: BTreeMap::new(),
            committed_seqs: BTreeMap::new(),
            requests_lost: 0,
            tasks_aborted: 0,
            step: 0,
        };
        for _ in 0..nr_mounts {
            let m = sim.new_mount();
            sim.mounts.push(m);
        }
        sim.log(format_args!(
            "mounts {nr_mounts} idle_max {idle_max} split {split} locks {} \
             crashes {crashes} recover batch {recover_batch_max}",
            sim.keys.len()
        ));
        sim
    }

    fn log(&self, args: std::fmt::Arguments<'_>) {
        if self.trace {
            eprintln!("[{} {}] {args}", self.seed, self.step);
        }
    }

    fn new_mount(&mut self) -> Mount {
        let rid = Rid(0x1000 + self.next_rid);
        self.next_rid += 1;
        Mount::new(rid, self.idle_max, self.era)
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    /// A random index of `mounts` matching `f`.
    fn pick_mount(&mut self, f: impl Fn(&Mount) -> bool) -> Option<usize> {
        let ids: Vec<usize> = (0..self.mounts.len())
            .filter(|&i| f(&self.mounts[i]))
            .collect();
        if ids.is_empty() {
            return None;
        }
        Some(ids[self.below(ids.len())])
    }

    fn possible_events(&self) -> Vec<(Event, u64)> {
        let ms = &self.mounts;
        let mut v = Vec::new();
        if ms
            .iter()
            .any(|m| m.connected && m.up.iter().any(|q| !q.is_empty()))
        {
            v.push((Event::DeliverUp, 6));
        }
        if ms.iter().any(|m| !m.connected) {
            v.push((Event::Greet, 3));
        }
        if ms.iter().any(|m| m.down.iter().any(|q| !q.is_empty())) {
            v.push((Event::DeliverDown, 6));
        }
        if ms.iter().any(|m| m.runnable()) {
            v.push((Event::RunTask, 6));
        }
        if ms.iter().any(|m| !m.finishable().is_empty()) {
            v.push((Event::FinishInvalidation, 3));
        }
        if ms.iter().any(|m| !m.admittable().is_empty()) {
            v.push((Event::Admit, 1));
        }
        if v.is_empty() && self.draining {
            return v;
        }
        if !self.draining {
            let room = ms
                .iter()
                .any(|m| !m.leaving && m.tasks.len() < TASKS_PER_MOUNT_MAX);
            if room {
                v.push((Event::StartTask, 3));
            }
            if ms.iter().any(|m| m.quiet()) {
                v.push((Event::Farewell, 1));
            }
            if ms.iter().any(|m| m.tasks.iter().any(|t| t.waiting)) {
                v.push((Event::Cancel, 1));
            }
            if self.crashes {
                v.push((Event::Crash, 1));
            }
            if self.server.is_recovering() {
                v.push((Event::Fence, 1));
            }
        }
        v.push((Event::Trim, 1));
        v.push((Event::Commit, 1));
        v
    }

    /// One step; false when nothing but trims and commits could happen.
    fn step(&mut self) -> bool {
        let evs = self.possible_events();
        if evs.is_empty() {
            return false;
        }
        let total: u64 = evs.iter().map(|e| e.1).sum();
        let mut r = self.rng.below(total);
        let mut ev = evs[0].0;
        for (e, w) in evs {
            if r < w {
                ev = e;
                break;
            }
            r -= w;
        }
        // Farewells and faults are rare: most of their draws do nothing.
        let odds = match ev {
            Event::Farewell | Event::Cancel => 8,
            Event::Crash => CRASH_ODDS,
            Event::Fence => FENCE_ODDS,
            _ => 1,
        };
        if self.rng.below(odds) != 0 {
            ev = Event::Commit;
        }
        self.step += 1;
        match ev {
            Event::DeliverUp => self.deliver_up(),
            Event::DeliverDown => self.deliver_down(),
            Event::RunTask => self.run_task(),
            Event::StartTask => self.start_task(),
            Event::FinishInvalidation => self.finish_invalidation(),
            Event::Admit => self.admit(),
            Event::Trim => self.trim(),
            Event::Commit => {
                // A commit needs the server (COMMIT_LOG_TREES).
                let i = self.below(self.mounts.len());
                if self.mounts[i].connected {
                    self.commit(i);
                }
            }
            Event::Farewell => self.farewell(),
            Event::Cancel => self.cancel(),
            Event::Crash => self.crash(),
            Event::Greet => self.greet(),
            Event::Fence => self.fence(),
        }
        self.check();
        true
    }

    fn send_up(&mut self, i: usize, msg: Up) {
        let lane = match msg {
            Up::Response(_) | Up::Recover { .. } if self.split => 1,
            _ => 0,
        };
        if let Up::Request { net_id, msg } = msg {
            let rid = self.mounts[i].rid();
            assert!(self.pending.insert((rid, net_id)), "net id reused");
            self.mounts[i].unanswered.insert(net_id, msg);
        }
        self.mounts[i].up[lane].push_back(msg);
    }

    fn send_request(&mut self, i: usize, msg: LockMsg) {
        let net_id = self.mounts[i].next_net_id;
        self.mounts[i].next_net_id += 1;
        let rid = self.mounts[i].rid();
        self.log(format_args!("{rid} sends request {net_id} {msg:?}"));
        self.stats.requests += 1;
        match (msg.old_mode, msg.new_mode) {
            (_, LockMode::Null) => self.stats.null_requests += 1,
            (LockMode::Null, _) => {}
            _ => self.stats.conversions += 1,
        }
        self.send_up(i, Up::Request { net_id, msg });
    }

    fn pop_lane(&mut self, lanes: [bool; 2]) -> usize {
        match lanes {
            [true, true] => self.below(2),
            [true, false] => 0,
            _ => 1,
        }
    }

    fn deliver_up(&mut self) {
        let Some(i) = self.pick_mount(|m| m.connected && m.up.iter().any(|q| !q.is_empty())) else {
            return;
        };
        let lanes = [
            !self.mounts[i].up[0].is_empty(),
            !self.mounts[i].up[1].is_empty(),
        ];
        let lane = self.pop_lane(lanes);
        let Some(msg) = self.mounts[i].up[lane].pop_front() else {
            unreachable!("the lane is not empty");
        };
        let rid = self.mounts[i].rid();
        self.log(format_args!("server receives from {rid}: {msg:?}"));
        let mut seq = self.server_seq;
        if let Up::Recover { entries, .. } = &msg {
            // Raise the seq above every seq the mount's items may carry
            // before the batch can end recovery and grant.
            let top = entries.iter().map(|e| e.write_seq).max();
            seq = seq.max(top.unwrap_or(0));
        }
        let mut next = || {
            seq += 1;
            seq
        };
        let outs = match msg {
            Up::Request { net_id, msg } => self.server.request(rid, net_id, msg, &mut next),
            Up::Response(msg) => self.server.invalidate_done(rid, msg, &mut next),
            Up::Recover { entries, more } => {
                self.stats.recover_batches += 1;
                self.server.recover(rid, &entries, more, &mut next)
            }
            Up::Farewell => {
                let outs = self.server.farewell(rid, &mut next);
                // The connection closes: only answers to a new server's
                // recovery may be left, and they go with it.
                let m = &self.mounts[i];
                assert!(m
                    .up
                    .iter()
                    .flatten()
                    .all(|u| matches!(u, Up::Recover { .. })));
                assert!(m.unanswered.is_empty());
                self.log(format_args!("{rid} is gone"));
                self.mounts[i] = self.new_mount();
                outs
            }
        };
        self.server_seq = seq;
        self.route(outs);
    }

    fn route(&mut self, outs: Vec<ServerOut>) {
        for out in outs {
            self.log(format_args!("server sends {out:?}"));
            let (rid, down) = match out {
                ServerOut::Grant { rid, net_id, msg } => {
                    assert!(
                        self.pending.remove(&(rid, net_id)),
                        "grant of request {net_id} of {rid} that isn't waiting"
                    );
                    assert!(self.granted.insert((rid, net_id)));
                    if msg.new_mode.can_write() {
                        let live = self.live_item_seq();
                        assert!(
                            msg.write_seq > live,
                            "write grant {msg:?} to {rid} at or below item seq {live}"
                        );
                    }
                    (rid, Down::Grant { net_id, msg })
                }
                ServerOut::Invalidate { rid, msg } => (rid, Down::Invalidate(msg)),
                ServerOut::Recover { rid, first } => (rid, Down::Recover { first }),
                ServerOut::ProtocolError { rid, reason } => {
                    panic!("server: protocol error from {rid}: {reason}")
                }
            };
            let lane = match down {
                Down::Invalidate(_) | Down::Recover { .. } if self.split => 1,
                _ => 0,
            };
            let Some(m) = self.mounts.iter_mut().find(|m| m.rid() == rid) else {
                panic!("server sent to {rid}, which is gone");
            };
            assert!(m.connected, "server sent to {rid}, which hasn't greeted it");
            m.down[lane].push_back(down);
        }
    }

    fn deliver_down(&mut self) {
        let Some(i) = self.pick_mount(|m| m.down.iter().any(|q| !q.is_empty())) else {
            return;
        };
        let lanes = [
            !self.mounts[i].down[0].is_empty(),
            !self.mounts[i].down[1].is_empty(),
        ];
        let lane = self.pop_lane(lanes);
        let Some(msg) = self.mounts[i].down[lane].pop_front() else {
            unreachable!("the lane is not empty");
        };
        let rid = self.mounts[i].rid();
        self.log(format_args!("{rid} receives {msg:?}"));
        if !self.mounts[i].connected {
            self.stats.old_messages_read += 1;
        }
        if self.mounts[i].leaving {
            assert!(
                !matches!(msg, Down::Grant { .. }),
                "grant to a leaving mount"
            );
            if matches!(msg, Down::Invalidate(_)) {
                return;
            }
        }
        let acts = match msg {
            Down::Recover { first } => {
                let m = &mut self.mounts[i];
                let (entries, more) = m.lc.recovery_batch(first, self.recover_batch_max);
                let upto = entries.last().filter(|_| more).map_or(Key::MAX, |e| e.key);
                let asked: Vec<Key> = m.lc.starts().into_iter().filter(|k| first <= *k).collect();
                for k in asked.into_iter().filter(|k| *k <= upto) {
                    let v = m.lc.lock_view(&k).expect("a known lock");
                    if v.mode != LockMode::Null && v.request == Some(LockMode::Null) {
                        m.unreported.insert(k);
                        self.stats.unreported += 1;
                    } else if v.mode != LockMode::Null && v.invalidations_queued > 0 {
                        self.stats.reported_invalidating += 1;
                    }
                }
                self.log(format_args!("{rid} reports {entries:?} more {more}"));
                self.send_up(i, Up::Recover { entries, more });
                return;
            }
            Down::Grant { net_id, msg } => {
                assert!(
                    self.granted.remove(&(rid, net_id)),
                    "second grant of request {net_id} of {rid}"
                );
                let m = &mut self.mounts[i];
                assert!(m.unanswered.remove(&net_id).is_some());
                self.grants += 1;
                // The server's idea of our old mode is ours: every change
                // reached it before it granted. A lock we were giving up
                // when we reported wasn't counted: granted from `Null`.
                let mode = m.lc.lock_view(&msg.key).map(|v| v.mode);
                let unreported = m.unreported.remove(&msg.key);
                if unreported {
                    assert_eq!(msg.old_mode, LockMode::Null, "grant {msg:?} to {rid}");
                    assert_eq!(msg.new_mode, LockMode::Null, "grant {msg:?} to {rid}");
                } else {
                    assert_eq!(mode, Some(msg.old_mode), "grant {msg:?} to {rid}");
                }
                self.mounts[i].lc.on_grant(msg)
            }
            Down::Invalidate(msg) => {
                self.stats.invalidations += 1;
                match self.mounts[i].lc.lock_view(&msg.key) {
                    None => self.stats.answered_unknown += 1,
                    Some(v) if v.mode != msg.old_mode && v.request == Some(msg.old_mode) => {
                        self.stats.overtaken_grants += 1
                    }
                    Some(_) => {}
                }
                self.mounts[i].lc.on_invalidate(msg)
            }
        };
        self.actions(i, acts);
    }

    /// The simulated driver carries out the lock client's actions.
    fn actions(&mut self, i: usize, acts: Vec<ClientAction>) {
        for act in acts {
            self.log(format_args!("{} action {act:?}", self.mounts[i].rid()));
            let m = &mut self.mounts[i];
            match act {
                ClientAction::Invalidate {
                    start,
                    end: _,
                    old_mode,
                    new_mode,
                    sync,
                } => {
                    assert!(m.invalidating.iter().all(|v| v.start != start));
                    let dirty = m.lc.lock_view(&start).map(|v| v.dirty_trans_seq != 0);
                    assert_eq!(Some(sync), dirty, "sync of {start:?}");
                    m.invalidating.push(Invalidating {
                        start,
                        old_mode,
                        new_mode,
                        era: m.era,
                    });
                }
                ClientAction::Respond(msg) => self.send_up(i, Up::Response(msg)),
                ClientAction::Wake { start } => {
                    for t in m.tasks.iter_mut() {
                        if t.waiting && t.locks[t.held].0 == start {
                            t.waiting = false;
                        }
                    }
                }
                ClientAction::DropCache { start, end: _ } => {
                    m.cache.remove(&start);
                }
                ClientAction::ProtocolError { key, reason } => {
                    panic!("client: protocol error on {key:?}: {reason}")
                }
            }
        }
    }

    /// The driver lets the callers waiting for a lock it is giving up in
    /// (as when its cache drop waits on them).
    fn admit(&mut self) {
        let Some(i) = self.pick_mount(|m| !m.admittable().is_empty()) else {
            return;
        };
        let ready = self.mounts[i].admittable();
        let j = ready[self.below(ready.len())];
        let start = self.mounts[i].invalidating[j].start;
        self.stats.admissions += 1;
        let acts = self.mounts[i].lc.admit(start);
        self.log(format_args!("{} admits on {start:?}", self.mounts[i].rid()));
        self.actions(i, acts);
    }

    fn finish_invalidation(&mut self) {
        let Some(i) = self.pick_mount(|m| !m.finishable().is_empty()) else {
            return;
        };
        let ready = self.mounts[i].finishable();
        let j = ready[self.below(ready.len())];
        let start = self.mounts[i].invalidating[j].start;
        let view = self.mounts[i].lc.lock_view(&start);
        if view.as_ref().is_some_and(|v| v.admitting) {
            // Its users run on; the work is done again once they left.
            self.mounts[i].lc.end_admission(start);
            self.log(format_args!(
                "{} ends admission on {start:?}",
                self.mounts[i].rid()
            ));
            return;
        }
        let inv = self.mounts[i].invalidating.remove(j);
        // What it must commit may have grown while it admitted users.
        let dirty = view.is_some_and(|v| v.dirty_trans_seq != 0);
        if dirty {
            self.commit(i);
        }
        let m = &mut self.mounts[i];
        if !(inv.old_mode == LockMode::Write && inv.new_mode == LockMode::Read) {
            m.cache.remove(&inv.start);
        }
        let (resp, acts) = m.lc.invalidate_done(inv.start);
        let rid = m.rid();
        let current = inv.era == m.era;
        self.log(format_args!("{rid} invalidated {resp:?}"));
        // Only the server the mount knew when it started wants the answer.
        assert_eq!(resp.is_some(), current, "{rid} answers {resp:?}");
        match resp {
            Some(resp) => self.send_up(i, Up::Response(resp)),
            None => self.stats.void_invalidations += 1,
        }
        self.actions(i, acts);
    }

    /// The greatest seq of an item of lock `k` that still exists:
    /// committed, or dirty in a live mount.
    fn item_seq(&self, k: &Key) -> u64 {
        let dirty = self.mounts.iter().filter_map(|m| m.dirty_seqs.get(k));
        let committed = self.committed_seqs.get(k);
        dirty.chain(committed).copied().max().unwrap_or(0)
    }

    /// The greatest seq of any item that still exists.
    fn live_item_seq(&self) -> u64 {
        self.keys
            .iter()
            .map(|(k, _)| self.item_seq(k))
            .max()
            .unwrap_or(0)
    }

    /// Drops what `lane` of mount `i` still has from a server: a grant
    /// that never arrives makes its request wait for the next server.
    fn drop_down(&mut self, i: usize, keep: [usize; 2]) {
        let rid = self.mounts[i].rid();
        for (lane, keep) in keep.into_iter().enumerate() {
            let lost: Vec<Down> = self.mounts[i].down[lane].drain(keep..).collect();
            for d in lost {
                if let Down::Grant { net_id, .. } = d {
                    assert!(self.granted.remove(&(rid, net_id)));
                    assert!(self.pending.insert((rid, net_id)));
                }
            }
        }
    }

    /// The server dies; a new one starts recovering every mount's locks.
    fn crash(&mut self) {
        self.era += 1;
        self.stats.crashes += 1;
        for i in 0..self.mounts.len() {
            // What reached the mount's socket before the end may still be
            // read; the mount notices the loss only after it.
            let keep = [0, 1].map(|l| {
                let n = self.mounts[i].down[l].len() as u64;
                self.rng.below(n + 1) as usize
            });
            self.drop_down(i, keep);
            self.mounts[i].connected = false;
        }
        // Grants were never durable: the new seq may start anywhere from
        // what is (the items' seqs, as in the log trees) to the old one.
        let durable = self.committed_seqs.values().copied().max().unwrap_or(0);
        let lag = self.rng.below(self.server_seq + 1);
        self.server_seq = durable.max(self.server_seq - lag);
        let expected: Vec<Rid> = self.mounts.iter().map(|m| m.rid()).collect();
        self.log(format_args!(
            "server crashes: era {} seq {} expects {expected:?}",
            self.era, self.server_seq
        ));
        self.server = LockServer::recovering(expected);
    }

    /// A mount greets the new server (the net layer's new_server).
    fn greet(&mut self) {
        let Some(i) = self.pick_mount(|m| !m.connected) else {
            return;
        };
        let rid = self.mounts[i].rid();
        self.log(format_args!("{rid} greets server era {}", self.era));
        self.drop_down(i, [0, 0]);
        let m = &mut self.mounts[i];
        m.connected = true;
        m.era = self.era;
        // Answers to the old server are dropped; requests are resent in
        // order, and a farewell is one.
        m.up = [VecDeque::new(), VecDeque::new()];
        for (&net_id, &msg) in &m.unanswered {
            m.up[0].push_back(Up::Request { net_id, msg });
            self.stats.resent += 1;
        }
        if m.leaving {
            m.up[0].push_back(Up::Farewell);
        }
        let acts = m.lc.server_changed();
        self.actions(i, acts);
        let outs = self.server.greeted(rid);
        self.route(outs);
    }

    /// A mount that may not have recovered is fenced: it is gone with its
    /// open transaction and its requests; a new mount takes its place.
    fn fence(&mut self) {
        let Some(i) = self.pick_mount(|_| true) else {
            return;
        };
        let new = self.new_mount();
        let m = std::mem::replace(&mut self.mounts[i], new);
        let rid = m.rid();
        self.log(format_args!("{rid} is fenced"));
        self.stats.fences += 1;
        for (k, d) in m.dirty {
            let t = self.truth.entry(k).or_insert(0);
            *t -= d;
            if *t == 0 {
                self.truth.remove(&k);
            }
        }
        for net_id in m.unanswered.keys() {
            self.pending.remove(&(rid, *net_id));
            self.granted.remove(&(rid, *net_id));
            self.requests_lost += 1;
        }
        self.tasks_aborted += m.tasks.len() as u64;
        let mut seq = self.server_seq;
        let outs = self.server.rid_gone(rid, &mut || {
            seq += 1;
            seq
        });
        self.server_seq = seq;
        self.route(outs);
    }

    /// The mount's open transaction becomes durable through the server,
    /// which raises its seq above the log tree's item seqs (a mount may
    /// commit and then be fenced before it reports the lock's write_seq).
    fn commit(&mut self, i: usize) {
        assert!(self.mounts[i].connected, "a commit without a server");
        let top = self.mounts[i].dirty_seqs.values().copied().max();
        self.server_seq = self.server_seq.max(top.unwrap_or(0));
        let m = &mut self.mounts[i];
        for (k, d) in std::mem::take(&mut m.dirty) {
            *self.committed.entry(k).or_insert(0) += d;
        }
        for (k, s) in std::mem::take(&mut m.dirty_seqs) {
            let c = self.committed_seqs.entry(k).or_insert(0);
            *c = (*c).max(s);
        }
        m.lc.trans_committed(m.trans_seq);
        m.trans_seq += 1;
    }

    fn trim(&mut self) {
        let Some(i) = self.pick_mount(|m| !m.leaving) else {
            return;
        };
        for msg in self.mounts[i].lc.trim_idle() {
            self.send_request(i, msg);
        }
    }

    fn farewell(&mut self) {
        let Some(i) = self.pick_mount(|m| m.quiet()) else {
            return;
        };
        self.commit(i);
        let rid = self.mounts[i].rid();
        assert!(self.pending.iter().all(|(r, _)| *r != rid));
        assert!(self.granted.iter().all(|(r, _)| *r != rid));
        self.log(format_args!("{rid} says farewell"));
        self.stats.farewells += 1;
        self.mounts[i].leaving = true;
        self.send_up(i, Up::Farewell);
    }

    /// A waiting task gives up (an interrupted lock attempt).
    fn cancel(&mut self) {
        let Some(i) = self.pick_mount(|m| m.tasks.iter().any(|t| t.waiting)) else {
            return;
        };
        let waiting: Vec<usize> = (0..self.mounts[i].tasks.len())
            .filter(|&j| self.mounts[i].tasks[j].waiting)
            .collect();
        let j = waiting[self.below(waiting.len())];
        let t = self.mounts[i].tasks.remove(j);
        let (s, _, mode) = t.locks[t.held];
        self.log(format_args!(
            "{} cancels waiting for {s:?} {mode}",
            self.mounts[i].rid()
        ));
        let acts = self.mounts[i].lc.cancel_wait(s, mode);
        self.actions(i, acts);
        self.release_all(i, t.locks[..t.held].to_vec());
        self.stats.cancels += 1;
        self.tasks_done += 1;
    }

    fn release_all(&mut self, i: usize, mut locks: Vec<(Key, Key, LockMode)>) {
        if self.rng.below(2) == 0 {
            locks.reverse();
        }
        for (s, _, mode) in locks {
            let acts = self.mounts[i].lc.release(s, mode);
            self.actions(i, acts);
        }
    }

    fn start_task(&mut self) {
        let Some(i) = self.pick_mount(|m| !m.leaving && m.tasks.len() < TASKS_PER_MOUNT_MAX) else {
            return;
        };
        let nr = if self.rng.below(3) == 0 { 2 } else { 1 };
        let mut idx: Vec<usize> = Vec::new();
        while idx.len() < nr.min(self.keys.len()) {
            let k = self.below(self.keys.len());
            if !idx.contains(&k) {
                idx.push(k);
            }
        }
        idx.sort();
        let locks = idx
            .into_iter()
            .map(|k| {
                let mode = MODES[self.below(MODES.len())];
                (self.keys[k].0, self.keys[k].1, mode)
            })
            .collect();
        self.tasks_started += 1;
        self.mounts[i].tasks.push(Task {
            locks,
            held: 0,
            waiting: false,
            hold_steps: 0,
        });
    }

    fn run_task(&mut self) {
        let Some(i) = self.pick_mount(|m| m.runnable()) else {
            return;
        };
        let ready: Vec<usize> = (0..self.mounts[i].tasks.len())
            .filter(|&j| !self.mounts[i].tasks[j].waiting)
            .collect();
        let j = ready[self.below(ready.len())];
        let t = &self.mounts[i].tasks[j];
        if t.held < t.locks.len() {
            self.task_acquire(i, j);
        } else {
            self.task_hold(i, j);
        }
    }

    fn task_acquire(&mut self, i: usize, j: usize) {
        let (s, e, mode) = self.mounts[i].tasks[j].locks[self.mounts[i].tasks[j].held];
        let res = self.mounts[i].lc.acquire(s, e, mode);
        self.log(format_args!(
            "{} task acquires {s:?} {mode}: {res:?}",
            self.mounts[i].rid()
        ));
        match res {
            Acquire::Held {
                write_seq,
                refresh_gen,
            } => {
                assert!(refresh_gen > 0);
                assert!(!mode.can_write() || write_seq > 0, "write lock without seq");
                let hold = 1 + self.rng.below(4) as u32;
                let t = &mut self.mounts[i].tasks[j];
                t.held += 1;
                t.hold_steps = hold;
            }
            Acquire::Wait(msg) => {
                self.stats.waits += 1;
                self.mounts[i].tasks[j].waiting = true;
                if let Some(msg) = msg {
                    self.send_request(i, msg);
                }
            }
        }
    }

    /// One operation under the held locks, or the release of all of them.
    fn task_hold(&mut self, i: usize, j: usize) {
        let nr = self.mounts[i].tasks[j].locks.len();
        let which = self.below(nr);
        let (k, _, mode) = self.mounts[i].tasks[j].locks[which];
        self.model_op(i, k, mode);
        let t = &mut self.mounts[i].tasks[j];
        t.hold_steps -= 1;
        if t.hold_steps > 0 {
            return;
        }
        let t = self.mounts[i].tasks.remove(j);
        self.release_all(i, t.locks);
        self.tasks_done += 1;
    }

    /// Reads (and for write modes, increments) the counter of lock `k`.
    fn model_op(&mut self, i: usize, k: Key, mode: LockMode) {
        let truth = self.truth.get(&k).copied().unwrap_or(0);
        let committed = self.committed.get(&k).copied().unwrap_or(0);
        let m = &mut self.mounts[i];
        let own_dirty = m.dirty.get(&k).copied().unwrap_or(0);
        if mode.can_read() {
            self.stats.reads += 1;
            let v = *m.cache.entry(k).or_insert(committed + own_dirty);
            assert_eq!(
                v,
                truth,
                "{} read a stale value of {k:?} under {mode}",
                m.rid()
            );
        }
        if mode.can_write() {
            self.stats.writes += 1;
            let Some(write_seq) = m.lc.lock_view(&k).map(|v| v.write_seq) else {
                panic!("{} writes {k:?} without its lock", m.rid());
            };
            if mode == LockMode::Write {
                // Items of the exclusive writer win over every earlier one.
                let rid = m.rid();
                let floor = self.item_seq(&k);
                assert!(
                    write_seq >= floor,
                    "{rid} writes {k:?} at seq {write_seq} below item seq {floor}"
                );
            }
            let m = &mut self.mounts[i];
            let s = m.dirty_seqs.entry(k).or_insert(0);
            *s = (*s).max(write_seq);
            *m.dirty.entry(k).or_insert(0) += 1;
            self.truth.insert(k, truth + 1);
            if mode == LockMode::Write {
                m.cache.insert(k, truth + 1);
            }
            m.lc.mark_dirty(k, m.trans_seq);
        }
    }

    /// The checks made after every step.
    fn check(&self) {
        self.server.check_invariants();
        for m in &self.mounts {
            m.lc.check_invariants();
        }
        // While the server recovers nothing changes a reported mount's
        // modes, so the server must count each exactly as it holds them.
        let pending = self.server.recovery_pending();
        if self.server.is_recovering() {
            for m in self.mounts.iter().filter(|m| !pending.contains(&m.rid())) {
                for (k, _) in &self.keys {
                    let v = m.lc.lock_view(k);
                    let mode = v.as_ref().map_or(LockMode::Null, |v| v.mode);
                    let giving_up = v.is_some_and(|v| v.request == Some(LockMode::Null));
                    let held = self.server.held_mode(k, m.rid());
                    assert!(
                        held == mode || (giving_up && held == LockMode::Null),
                        "{} holds {mode} on {k:?}, recovered as {held}",
                        m.rid()
                    );
                }
            }
        }
        for (k, _) in &self.keys {
            let held: Vec<(Rid, Vec<LockMode>)> = self
                .mounts
                .iter()
                .map(|m| (m.rid(), usable_modes(&m.lc, k)))
                .collect();
            for (a, (ra, ma)) in held.iter().enumerate() {
                for (rb, mb) in &held[a + 1..] {
                    for x in ma {
                        for y in mb {
                            assert!(
                                modes_compatible(*x, *y),
                                "{ra} may use {x} and {rb} may use {y} on {k:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    fn run(&mut self) {
        while self.step < WORK_STEPS {
            self.step();
        }
        self.draining = true;
        self.log(format_args!("draining"));
        let limit = self.step + DRAIN_STEPS_MAX;
        while self.step() {
            assert!(
                self.step < limit,
                "no quiescence after {DRAIN_STEPS_MAX} steps: deadlock?"
            );
        }
        self.check_end();
    }

    fn check_end(&mut self) {
        assert!(!self.server.is_recovering(), "recovery never ended");
        for m in &self.mounts {
            assert!(m.connected, "{} never greeted", m.rid());
            assert!(m.tasks.is_empty(), "{} has stuck tasks", m.rid());
            for s in m.lc.starts() {
                let Some(v) = m.lc.lock_view(&s) else {
                    continue;
                };
                assert_eq!(v.users, [0; 4], "users left on {s:?}");
                assert_eq!(v.waiters, [0; 4], "waiters left on {s:?}");
                assert!(v.request.is_none() && v.invalidations_queued == 0);
            }
        }
        for m in &self.mounts {
            for (k, _) in &self.keys {
                let mode = m.lc.lock_view(k).map_or(LockMode::Null, |v| v.mode);
                let held = self.server.held_mode(k, m.rid());
                assert_eq!(mode, held, "{} and the server disagree on {k:?}", m.rid());
            }
        }
        assert_eq!(
            self.tasks_started,
            self.tasks_done + self.tasks_aborted,
            "tasks lost"
        );
        assert!(
            self.pending.is_empty(),
            "requests never granted: {:?}",
            self.pending
        );
        assert!(
            self.granted.is_empty(),
            "grants never received: {:?}",
            self.granted
        );
        assert_eq!(self.stats.requests, self.grants + self.requests_lost);
        for i in 0..self.mounts.len() {
            self.commit(i);
        }
        assert_eq!(self.truth, self.committed, "increments lost");
    }
}

/// The modes a mount holds users of or would admit now.
fn usable_modes(lc: &LockClient, k: &Key) -> Vec<LockMode> {
    let Some(v) = lc.lock_view(k) else {
        return Vec::new();
    };
    MODES
        .iter()
        .copied()
        .filter(|&m| v.users[m as usize] > 0 || lc.can_use(k, m))
        .collect()
}

/// Runs one seed.
fn run_seed(seed: u64, trace: bool) -> Stats {
    let mut sim = Sim::new(seed, trace);
    sim.run();
    sim.stats.steps = sim.step;
    sim.stats.tasks = sim.tasks_done;
    sim.stats
}

fn run_part(part: u64) {
    common::sim::run_part("lock_sim", part, PARTS, SEEDS, run_seed);
}

#[test]
fn lock_sim_part0() {
    run_part(0);
}

#[test]
fn lock_sim_part1() {
    run_part(1);
}

#[test]
fn lock_sim_part2() {
    run_part(2);
}

#[test]
fn lock_sim_part3() {
    run_part(3);
}
