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
//! (`cancel_wait`). The drivers follow the lock client's contract: commit on
//! `sync`, drop the cache unless WRITE→READ, drop it on `DropCache`, wake
//! waiters on `Wake`.
//!
//! Checked after every step: no two mounts hold or could admit conflicting
//! modes on one lock; both machines' `check_invariants`; every request is
//! granted at most once. Every read sees every increment made so far (so
//! invalidations committed and caches were dropped when they had to be).
//! At the end new work stops and the cluster must drain within a step
//! bound: every task completed, every request granted exactly once, every
//! increment committed.
//!
//! A failure prints its seed and a replay command;
//! `SCOUTFS_SIM_SEED=<seed>` runs that seed alone and traces every step, and
//! `SCOUTFS_SIM_SEEDS=<n>` runs seeds 0..n instead of the default set.

use scoutfs_core::lock::{
    index_lock_range, inode_lock_range, modes_compatible, orphan_lock_range, rename_lock_range,
    Acquire, ClientAction, LockClient, LockMode, LockMsg, Rid,
};
use scoutfs_core::lock_server::{LockServer, ServerOut};
use scoutfs_core::rng::Rng;
use scoutfs_format::key::ty;
use scoutfs_format::Key;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Seeds run by the tests below, split in parts the harness runs in parallel.
const SEEDS: u64 = 1200;
const PARTS: u64 = 4;
/// Steps with new work, then steps allowed to drain.
const WORK_STEPS: u64 = 1200;
const DRAIN_STEPS_MAX: u64 = 20_000;
const TASKS_PER_MOUNT_MAX: usize = 3;

const MODES: [LockMode; 3] = [LockMode::Read, LockMode::Write, LockMode::WriteOnly];

#[derive(Clone, Debug)]
enum Up {
    Request { net_id: u64, msg: LockMsg },
    Response(LockMsg),
    Farewell,
}

#[derive(Clone, Debug)]
enum Down {
    Grant { net_id: u64, msg: LockMsg },
    Invalidate(LockMsg),
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
    sync: bool,
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
    /// The item cache: the counter's value as last read or written.
    cache: BTreeMap<Key, u64>,
    leaving: bool,
}

impl Mount {
    fn new(rid: Rid, idle_max: usize) -> Mount {
        Mount {
            lc: LockClient::new(rid, idle_max),
            next_net_id: 1,
            up: [VecDeque::new(), VecDeque::new()],
            down: [VecDeque::new(), VecDeque::new()],
            tasks: Vec::new(),
            invalidating: Vec::new(),
            trans_seq: 1,
            dirty: BTreeMap::new(),
            cache: BTreeMap::new(),
            leaving: false,
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
            && self.tasks.is_empty()
            && self.invalidating.is_empty()
            && self.up.iter().all(|q| q.is_empty())
            && !self.requests_in_flight()
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
}

impl Stats {
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
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    DeliverUp,
    DeliverDown,
    RunTask,
    StartTask,
    FinishInvalidation,
    Trim,
    Commit,
    Farewell,
    Cancel,
}

struct Sim {
    seed: u64,
    rng: Rng,
    trace: bool,
    server: LockServer,
    server_seq: u64,
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
            step: 0,
        };
        for _ in 0..nr_mounts {
            let m = sim.new_mount();
            sim.mounts.push(m);
        }
        sim.log(format_args!(
            "mounts {nr_mounts} idle_max {idle_max} split {split} locks {}",
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
        Mount::new(rid, self.idle_max)
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
        if ms.iter().any(|m| m.up.iter().any(|q| !q.is_empty())) {
            v.push((Event::DeliverUp, 6));
        }
        if ms.iter().any(|m| m.down.iter().any(|q| !q.is_empty())) {
            v.push((Event::DeliverDown, 6));
        }
        if ms.iter().any(|m| m.runnable()) {
            v.push((Event::RunTask, 6));
        }
        if ms.iter().any(|m| !m.invalidating.is_empty()) {
            v.push((Event::FinishInvalidation, 3));
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
        // Farewells are rare: most of their draws do nothing.
        if matches!(ev, Event::Farewell | Event::Cancel) && self.rng.below(8) != 0 {
            ev = Event::Commit;
        }
        self.step += 1;
        match ev {
            Event::DeliverUp => self.deliver_up(),
            Event::DeliverDown => self.deliver_down(),
            Event::RunTask => self.run_task(),
            Event::StartTask => self.start_task(),
            Event::FinishInvalidation => self.finish_invalidation(),
            Event::Trim => self.trim(),
            Event::Commit => {
                let i = self.below(self.mounts.len());
                self.commit(i);
            }
            Event::Farewell => self.farewell(),
            Event::Cancel => self.cancel(),
        }
        self.check();
        true
    }

    fn send_up(&mut self, i: usize, msg: Up) {
        let lane = match msg {
            Up::Response(_) if self.split => 1,
            _ => 0,
        };
        if let Up::Request { net_id, .. } = msg {
            let rid = self.mounts[i].rid();
            assert!(self.pending.insert((rid, net_id)), "net id reused");
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
        let Some(i) = self.pick_mount(|m| m.up.iter().any(|q| !q.is_empty())) else {
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
        let mut next = || {
            seq += 1;
            seq
        };
        let outs = match msg {
            Up::Request { net_id, msg } => self.server.request(rid, net_id, msg, &mut next),
            Up::Response(msg) => self.server.invalidate_done(rid, msg, &mut next),
            Up::Farewell => {
                let outs = self.server.farewell(rid, &mut next);
                assert!(self.mounts[i].up.iter().all(|q| q.is_empty()));
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
                        assert!(msg.write_seq > 0, "write grant without write_seq");
                    }
                    (rid, Down::Grant { net_id, msg })
                }
                ServerOut::Invalidate { rid, msg } => (rid, Down::Invalidate(msg)),
                ServerOut::Recover { rid, .. } => {
                    panic!("server: asks {rid} to recover without a server change")
                }
                ServerOut::ProtocolError { rid, reason } => {
                    panic!("server: protocol error from {rid}: {reason}")
                }
            };
            let lane = match down {
                Down::Invalidate(_) if self.split => 1,
                _ => 0,
            };
            let Some(m) = self.mounts.iter_mut().find(|m| m.rid() == rid) else {
                panic!("server sent to {rid}, which is gone");
            };
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
        if self.mounts[i].leaving {
            assert!(
                matches!(msg, Down::Invalidate(_)),
                "grant to a leaving mount"
            );
            return;
        }
        let acts = match msg {
            Down::Grant { net_id, msg } => {
                assert!(
                    self.granted.remove(&(rid, net_id)),
                    "second grant of request {net_id} of {rid}"
                );
                self.grants += 1;
                // The server's idea of our old mode is ours: every change
                // reached it before it granted.
                let mode = self.mounts[i].lc.lock_view(&msg.key).map(|v| v.mode);
                assert_eq!(mode, Some(msg.old_mode), "grant {msg:?} to {rid}");
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
                    m.invalidating.push(Invalidating {
                        start,
                        old_mode,
                        new_mode,
                        sync,
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

    fn finish_invalidation(&mut self) {
        let Some(i) = self.pick_mount(|m| !m.invalidating.is_empty()) else {
            return;
        };
        let n = self.mounts[i].invalidating.len();
        let j = self.below(n);
        let inv = self.mounts[i].invalidating.remove(j);
        if inv.sync {
            self.commit(i);
        }
        let m = &mut self.mounts[i];
        if !(inv.old_mode == LockMode::Write && inv.new_mode == LockMode::Read) {
            m.cache.remove(&inv.start);
        }
        let (resp, acts) = m.lc.invalidate_done(inv.start);
        let Some(resp) = resp else {
            panic!("no response without a server change");
        };
        let rid = m.rid();
        self.log(format_args!("{rid} invalidated {resp:?}"));
        self.send_up(i, Up::Response(resp));
        self.actions(i, acts);
    }

    fn commit(&mut self, i: usize) {
        let m = &mut self.mounts[i];
        for (k, d) in std::mem::take(&mut m.dirty) {
            *self.committed.entry(k).or_insert(0) += d;
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
        for m in &self.mounts {
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
        assert_eq!(self.tasks_started, self.tasks_done, "tasks lost");
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
        assert_eq!(self.stats.requests, self.grants);
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

fn replay_env() -> Option<u64> {
    let s = std::env::var("SCOUTFS_SIM_SEED").ok()?;
    match s.parse() {
        Ok(v) => Some(v),
        Err(_) => panic!("SCOUTFS_SIM_SEED={s} is not a number"),
    }
}

/// `SCOUTFS_SIM_SEEDS=<n>` runs more seeds (a longer soak), else [`SEEDS`].
fn seed_count() -> u64 {
    match std::env::var("SCOUTFS_SIM_SEEDS") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("SCOUTFS_SIM_SEEDS={s} is not a number")),
        Err(_) => SEEDS,
    }
}

fn run_part(part: u64) {
    let seeds: Vec<u64> = match replay_env() {
        Some(seed) if part == 0 => vec![seed],
        Some(_) => Vec::new(),
        None => (0..seed_count()).filter(|s| s % PARTS == part).collect(),
    };
    let trace = replay_env().is_some();
    let mut totals = Stats::default();
    for seed in seeds {
        match catch_unwind(AssertUnwindSafe(|| run_seed(seed, trace))) {
            Ok(st) => totals.add(&st),
            Err(e) => {
                eprintln!("lock_sim: seed {seed} failed");
                eprintln!(
                    "replay: SCOUTFS_SIM_SEED={seed} cargo test -p scoutfs-core --test lock_sim"
                );
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!("lock_sim part {part}: {totals:?}");
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
