//! A deterministic simulation of quorum election and server failover.
//!
//! One thread runs 1–5 quorum slots (random slot numbers), each a mount
//! with an election [`Agent`], a simulated server and a simulated clock,
//! over a simulated network and one shared disk of quorum blocks. A seeded
//! generator picks everything; simulated time jumps from one due event to
//! the next (a packet's arrival, an agent's deadline, a server finishing
//! its start or stop, a restart, a fault), ties broken at random.
//!
//! The drivers follow the agent's contract: actions are carried out in
//! order, a `Persist` is applied to the slot's quorum block before the next
//! action, and messages travel as encoded datagrams. A simulated server
//! takes 10–300 ms to start; when it is ready it reads the quorum blocks,
//! refuses to serve if they show a newer election than its own
//! ([`newer_election`]), fences every old leader [`leaders_to_fence`] names
//! (the fenced mount dies, as with the test fence agent) and reports up. A
//! stop takes up to 500 ms.
//!
//! For a random first part of the run (2–12 s of simulated time) faults
//! come every 20–800 ms: a mount crashes (agent and server die, the quorum
//! blocks survive, it mounts again later with a new rid) or unmounts
//! cleanly; a crash in the middle of an output's actions; partitions (two
//! random groups, one isolated mount, or one direction of one link) that
//! heal after 0.2–6 s; network weather (drop up to 30 %, duplicate up to
//! 10 %, delay up to 400 ms and so reorder, corrupt up to 3 %); clock steps
//! of one mount (forward up to 15 s, like a paused process, or back up to
//! 1 s, which the agent clamps); a server failing on its own; datagrams of
//! another filesystem. Then the network heals: no drops, delays up to 20 ms,
//! every mount up again, no more faults.
//!
//! Checked after every step and every action:
//! - each agent's `check_invariants`;
//! - no slot votes for two candidates in one term, or sends two votes in
//!   one term, across all its restarts;
//! - a leader (an ELECT write, or an agent in the leader role) has the votes
//!   needed in its term: votes actually sent, plus its own;
//! - with 3 or more slots, at most one leader per term over the whole run
//!   (with 1 or 2 slots one vote wins, so a split election can make two);
//! - persisted before acting: a vote or vote request is sent only after the
//!   sender's block records its term, a heartbeat only after its ELECT, a
//!   resignation only after its STOP, a server starts only after its ELECT;
//! - each slot's persisted TERM, ELECT and greatest term never go back;
//! - never two servers up at once (fencing and the newer-election check);
//! - damaged and foreign datagrams are always refused, valid ones never.
//!
//! Liveness: from the heal, within the heartbeat timeout (2, 3, 5 or 10 s
//! by seed) plus [`SETTLE_SLACK_MS`], the cluster reaches one leader whose
//! server is up, with every mount running, in its term, following it, and
//! it holds from then to the end of the run, at least [`STABLE_MS`] later.
//! The slack covers a backward clock step, a server stop, restarts and a
//! few split elections.
//!
//! A failure prints its seed and a replay command; `SCOUTFS_SIM_SEED=<seed>`
//! runs that seed alone and traces every step, and `SCOUTFS_SIM_SEEDS=<n>`
//! runs seeds 0..n instead of the default set.

mod common;

use scoutfs_core::cluster::quorum::agent::{Action, Agent, AgentConfig, Dest, Phase, Role};
use scoutfs_core::cluster::quorum::blocks::{
    event_term, leaders_to_fence, newer_election, record_events, EventKind,
};
use scoutfs_core::cluster::quorum::msg::{Message, MessageCodec, MessageError, MsgType};
use scoutfs_core::cluster::quorum::{SlotNr, SlotSet, Term};
use scoutfs_core::rng::Rng;
use scoutfs_core::types::Rid;
use scoutfs_format::block::Timespec;
use scoutfs_format::consts::QUORUM_MAX_SLOTS;
use scoutfs_format::quorum::QUORUM_MESSAGE_SIZE;
use scoutfs_format::quorum::{QuorumBlock, QUORUM_EVENT_ELECT};
use std::collections::{BTreeMap, BTreeSet};

/// Seeds run by the tests below, split in parts the harness runs in parallel.
const SEEDS: u64 = 4000;
const PARTS: u64 = 4;
const FSID: u64 = 0x5eed_f00d;
/// How long faults happen.
const CHAOS_MIN_MS: u64 = 2_000;
const CHAOS_MAX_MS: u64 = 12_000;
/// After the heal: the longest delay, the time allowed beyond the heartbeat
/// timeout to settle, and how long the settled state must then hold.
const HEALED_DELAY_MAX_MS: u64 = 20;
const SETTLE_SLACK_MS: u64 = 6_000;
const STABLE_MS: u64 = 2_000;
const HEARTBEAT_TIMEOUTS_MS: [u64; 4] = [2_000, 3_000, 5_000, 10_000];
/// A bound on steps per seed, to catch an agent that never lets time pass.
const STEPS_MAX: u64 = 500_000;
/// Global time starts here, so clocks stepped back stay positive.
const EPOCH_MS: u64 = 1 << 40;

/// The simulated server of one mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    None,
    Starting {
        term: Term,
        ready_at: u64,
    },
    Up {
        term: Term,
    },
    Stopping {
        term: Term,
        done_at: u64,
        was_up: bool,
    },
}

/// One quorum slot's mount.
struct Node {
    slot: SlotNr,
    /// None while the mount is down.
    agent: Option<Agent>,
    rid: Rid,
    /// The mount's clock is global time plus this.
    offset_ms: i64,
    server: Server,
    /// When a down mount mounts again.
    restart_at: Option<u64>,
}

impl Node {
    fn local(&self, now: u64) -> u64 {
        (now as i64 + self.offset_ms) as u64
    }

    fn global(&self, local: u64) -> u64 {
        (local as i64 - self.offset_ms) as u64
    }

    fn serving(&self) -> bool {
        matches!(
            self.server,
            Server::Up { .. } | Server::Stopping { was_up: true, .. }
        )
    }
}

struct Packet {
    at: u64,
    to: usize,
    bytes: [u8; QUORUM_MESSAGE_SIZE],
    /// Damaged or from another filesystem: must be refused.
    bad: bool,
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Deliver(usize),
    Timer(usize),
    Server(usize),
    Restart(usize),
    Fault,
    Heal,
    Unpartition,
}

/// The earliest due events.
struct Earliest {
    at: u64,
    evs: Vec<Ev>,
}

impl Earliest {
    fn see(&mut self, at: u64, ev: Ev) {
        if at < self.at {
            self.at = at;
            self.evs.clear();
        }
        if at == self.at {
            self.evs.push(ev);
        }
    }
}

/// What a run exercised, summed over seeds and printed.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    seeds: u64,
    steps: u64,
    sim_secs: u64,
    elections: u64,
    elected: u64,
    votes: u64,
    split_leaders: u64,
    crashes: u64,
    mid_output_crashes: u64,
    unmounts: u64,
    fenced: u64,
    superseded: u64,
    server_failures: u64,
    partitions: u64,
    clock_steps: u64,
    datagrams: u64,
    dropped: u64,
    duplicated: u64,
    refused: u64,
    /// Times a settled cluster changed leader again after the heal.
    unsettled: u64,
    settle_ms_max: u64,
    /// The longest settle beyond the seed's heartbeat timeout.
    settle_beyond_hb_ms_max: u64,
}

impl common::sim::Totals for Stats {
    fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.steps += o.steps;
        self.sim_secs += o.sim_secs;
        self.elections += o.elections;
        self.elected += o.elected;
        self.votes += o.votes;
        self.split_leaders += o.split_leaders;
        self.crashes += o.crashes;
        self.mid_output_crashes += o.mid_output_crashes;
        self.unmounts += o.unmounts;
        self.fenced += o.fenced;
        self.superseded += o.superseded;
        self.server_failures += o.server_failures;
        self.partitions += o.partitions;
        self.clock_steps += o.clock_steps;
        self.datagrams += o.datagrams;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.refused += o.refused;
        self.unsettled += o.unsettled;
        self.settle_ms_max = self.settle_ms_max.max(o.settle_ms_max);
        self.settle_beyond_hb_ms_max = self.settle_beyond_hb_ms_max.max(o.settle_beyond_hb_ms_max);
    }
}

struct Sim {
    rng: Rng,
    trace: bool,
    now: u64,
    step: u64,
    codec: MessageCodec,
    slots: SlotSet,
    hb_timeout_ms: u64,
    nodes: Vec<Node>,
    /// Each node's slot's quorum block: the disk, which survives crashes.
    disk: Vec<QuorumBlock>,
    net: Vec<Packet>,
    /// Cut links (from, to) by node index, until `cut_until`.
    cut: BTreeSet<(usize, usize)>,
    cut_until: Option<u64>,
    drop_pct: u64,
    dup_pct: u64,
    corrupt_pct: u64,
    delay_max_ms: u64,
    next_fault: u64,
    chaos_end: u64,
    healed_at: Option<u64>,
    next_rid: u64,
    /// (voter, term) → the candidate it voted for, over the whole run.
    votes_cast: BTreeMap<(SlotNr, Term), SlotNr>,
    /// (voter, term) of every VOTE message sent.
    vote_msgs: BTreeSet<(SlotNr, Term)>,
    /// (term, candidate) → its voters, itself included.
    votes_for: BTreeMap<(Term, SlotNr), SlotSet>,
    leaders: BTreeMap<Term, BTreeSet<SlotNr>>,
    /// When the cluster settled after the heal, and on whom.
    settled: Option<(u64, SlotNr, Term)>,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64, trace: bool) -> Sim {
        let mut rng = Rng::new(seed);
        let n = 1 + rng.below(5) as usize;
        let mut slots = SlotSet::default();
        while slots.len() < n {
            slots.insert(SlotNr(rng.below(QUORUM_MAX_SLOTS as u64) as u8));
        }
        let hb_timeout_ms = HEARTBEAT_TIMEOUTS_MS[rng.below(4) as usize];
        let chaos_end = EPOCH_MS + CHAOS_MIN_MS + rng.below(CHAOS_MAX_MS - CHAOS_MIN_MS);
        let mut sim = Sim {
            rng,
            trace,
            now: EPOCH_MS,
            step: 0,
            codec: MessageCodec {
                fsid: FSID,
                version: 1,
                slots,
                key: scoutfs_core::cluster::auth::ClusterKey::new([0x51; 32]),
            },
            slots,
            hb_timeout_ms,
            nodes: Vec::new(),
            disk: vec![QuorumBlock::default(); n],
            net: Vec::new(),
            cut: BTreeSet::new(),
            cut_until: None,
            drop_pct: 0,
            dup_pct: 0,
            corrupt_pct: 0,
            delay_max_ms: 10,
            next_fault: EPOCH_MS,
            chaos_end,
            healed_at: None,
            next_rid: 1,
            votes_cast: BTreeMap::new(),
            vote_msgs: BTreeSet::new(),
            votes_for: BTreeMap::new(),
            leaders: BTreeMap::new(),
            settled: None,
            stats: Stats::default(),
        };
        for slot in slots.iter() {
            let offset_ms = sim.rng.below(1 << 30) as i64 - (1 << 29);
            let restart_at = Some(EPOCH_MS + sim.rng.below(1_000));
            sim.nodes.push(Node {
                slot,
                agent: None,
                rid: Rid(0),
                offset_ms,
                server: Server::None,
                restart_at,
            });
        }
        sim.weather();
        sim.log(format_args!(
            "slots {:?}, heartbeat timeout {hb_timeout_ms} ms, chaos for {} ms",
            slots.iter().map(|s| s.0).collect::<Vec<_>>(),
            chaos_end - EPOCH_MS
        ));
        sim
    }

    fn log(&self, args: std::fmt::Arguments) {
        if self.trace {
            eprintln!("[{} +{}ms] {args}", self.step, self.now - EPOCH_MS);
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n.max(1))
    }

    fn node_of(&self, slot: SlotNr) -> usize {
        self.nodes
            .iter()
            .position(|n| n.slot == slot)
            .unwrap_or_else(|| panic!("slot {slot} is not simulated"))
    }

    fn blocks(&self) -> Vec<(SlotNr, QuorumBlock)> {
        self.nodes
            .iter()
            .zip(&self.disk)
            .map(|(n, qb)| (n.slot, *qb))
            .collect()
    }

    fn end_at(&self) -> u64 {
        self.healed_at.map_or(u64::MAX, |h| {
            h + self.hb_timeout_ms + SETTLE_SLACK_MS + STABLE_MS
        })
    }

    fn run(&mut self) {
        loop {
            let (at, ev) = self.next_event();
            if at > self.end_at() {
                break;
            }
            self.step += 1;
            assert!(self.step < STEPS_MAX, "no end after {STEPS_MAX} steps");
            self.now = self.now.max(at);
            self.handle(ev);
            self.check();
        }
        self.check_end();
    }

    fn next_event(&mut self) -> (u64, Ev) {
        let mut e = Earliest {
            at: u64::MAX,
            evs: Vec::new(),
        };
        for (i, p) in self.net.iter().enumerate() {
            e.see(p.at, Ev::Deliver(i));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(d) = n.agent.as_ref().and_then(|a| a.deadline_ms()) {
                e.see(n.global(d).max(self.now), Ev::Timer(i));
            }
            match n.server {
                Server::Starting { ready_at: t, .. } | Server::Stopping { done_at: t, .. } => {
                    e.see(t, Ev::Server(i))
                }
                Server::None | Server::Up { .. } => {}
            }
            if let Some(t) = n.restart_at {
                e.see(t, Ev::Restart(i));
            }
        }
        if self.healed_at.is_none() {
            e.see(self.next_fault, Ev::Fault);
            e.see(self.chaos_end, Ev::Heal);
        }
        if let Some(t) = self.cut_until {
            e.see(t, Ev::Unpartition);
        }
        let i = self.below(e.evs.len() as u64) as usize;
        (e.at, e.evs[i])
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver(i) => self.deliver(i),
            Ev::Timer(i) => {
                let local = self.nodes[i].local(self.now);
                let Some(a) = self.nodes[i].agent.as_mut() else {
                    unreachable!("timer of a down mount")
                };
                let out = a.on_timer(local);
                if let Some(d) = out.deadline_ms {
                    assert!(
                        d > local,
                        "slot {}: deadline {d} not after {local}",
                        a.config().slot
                    );
                }
                self.after_call(i, out.actions);
            }
            Ev::Server(i) => self.server_event(i),
            Ev::Restart(i) => self.mount(i),
            Ev::Fault => {
                self.fault();
                self.next_fault = self.now + 20 + self.below(780);
            }
            Ev::Heal => self.heal(),
            Ev::Unpartition => {
                self.log(format_args!("partition heals"));
                self.cut.clear();
                self.cut_until = None;
            }
        }
    }

    fn deliver(&mut self, i: usize) {
        let p = self.net.swap_remove(i);
        let msg = match self.codec.decode(&p.bytes) {
            Err(e) => {
                assert!(p.bad, "a valid datagram refused: {e}");
                self.stats.refused += 1;
                return;
            }
            Ok(m) => {
                assert!(!p.bad, "a damaged or foreign datagram accepted: {m}");
                m
            }
        };
        let local = self.nodes[p.to].local(self.now);
        let Some(a) = self.nodes[p.to].agent.as_mut() else {
            return;
        };
        let out = a.on_message(msg, local);
        let slot = a.config().slot;
        self.log(format_args!("slot {slot} receives {msg}"));
        self.after_call(p.to, out.actions);
    }

    fn mount(&mut self, i: usize) {
        let rid = Rid(self.next_rid);
        self.next_rid += 1;
        let cfg = AgentConfig {
            slot: self.nodes[i].slot,
            slots: self.slots,
            rid,
            heartbeat_timeout_ms: self.hb_timeout_ms,
        };
        let mut agent = Agent::new(cfg, Rng::new(self.rng.next_u64())).expect("agent config");
        let blocks = self.blocks();
        let out = agent.start(&blocks, self.nodes[i].local(self.now));
        let n = &mut self.nodes[i];
        assert_eq!(n.server, Server::None);
        n.agent = Some(agent);
        n.rid = rid;
        n.restart_at = None;
        self.log(format_args!(
            "slot {} mounts as {rid}, term {}",
            cfg.slot,
            event_term_of(&out.actions)
        ));
        self.after_call(i, out.actions);
    }

    /// Records what an agent's call did, then carries out its actions.
    fn after_call(&mut self, i: usize, actions: Vec<Action>) {
        let Some(a) = self.nodes[i].agent.as_ref() else {
            return;
        };
        let (slot, term, role) = (a.config().slot, a.term(), a.role());
        if !actions.is_empty() {
            self.log(format_args!(
                "slot {slot} {role:?} term {term}: {actions:?}"
            ));
        }
        self.exec(i, actions);
        let ended = self.nodes[i]
            .agent
            .as_ref()
            .is_some_and(|a| a.phase() == Phase::Ended);
        if ended {
            assert_eq!(self.nodes[i].server, Server::None, "ended with a server");
            self.log(format_args!("slot {slot} unmounted"));
            self.down(i, 2_000);
        }
    }

    fn exec(&mut self, i: usize, actions: Vec<Action>) {
        let crash_at = (self.healed_at.is_none() && !actions.is_empty() && self.below(100) < 3)
            .then(|| self.below(actions.len() as u64) as usize);
        for (k, act) in actions.into_iter().enumerate() {
            if crash_at == Some(k) {
                self.stats.mid_output_crashes += 1;
                self.crash(i, "before an action");
                return;
            }
            match act {
                Action::Persist(events) => self.persist(i, &events),
                Action::Send { to, msg } => self.send(i, to, msg),
                Action::StartServer { term } => {
                    let n = &self.nodes[i];
                    let qb = &self.disk[i];
                    assert_eq!(
                        n.server,
                        Server::None,
                        "slot {} starts a second server",
                        n.slot
                    );
                    assert_eq!(
                        event_term(qb, EventKind::Elect),
                        term,
                        "server before ELECT"
                    );
                    assert_eq!(
                        qb.events[QUORUM_EVENT_ELECT].rid.get(),
                        n.rid.0,
                        "ELECT of another mount"
                    );
                    let ready_at = self.now + 10 + self.below(290);
                    self.nodes[i].server = Server::Starting { term, ready_at };
                }
                Action::StopServer => {
                    let done_at = self.now + self.below(500);
                    let n = &mut self.nodes[i];
                    n.server = match n.server {
                        Server::Starting { term, .. } => Server::Stopping {
                            term,
                            done_at,
                            was_up: false,
                        },
                        Server::Up { term } => Server::Stopping {
                            term,
                            done_at,
                            was_up: true,
                        },
                        s => panic!("slot {} stops its server {s:?}", n.slot),
                    };
                }
            }
        }
    }

    fn persist(&mut self, i: usize, events: &[(EventKind, Term)]) {
        let slot = self.nodes[i].slot;
        let before = self.disk[i];
        let mut after = before;
        let ts = Timespec::new((self.now - EPOCH_MS) / 1000, 0);
        record_events(&mut after, self.nodes[i].rid, events, ts);
        for kind in [EventKind::Term, EventKind::Elect] {
            assert!(
                event_term(&after, kind) >= event_term(&before, kind),
                "slot {slot}: persisted {kind:?} term went back"
            );
        }
        assert!(
            greatest(&after) >= greatest(&before),
            "slot {slot}: term went back"
        );
        assert!(after.validate().is_ok());
        self.disk[i] = after;
        for &(kind, term) in events {
            // A candidacy's own vote counts once its term is written: what
            // a mount did only in memory before a crash never happened.
            let candidate = self.nodes[i]
                .agent
                .as_ref()
                .is_some_and(|a| a.role() != Role::Follower && a.term() == term);
            if kind == EventKind::Term && candidate {
                self.cast(slot, term, slot);
            }
            if kind == EventKind::Elect {
                self.stats.elected += 1;
                self.check_leader(slot, term);
            }
        }
    }

    fn send(&mut self, i: usize, to: Dest, msg: Message) {
        let slot = self.nodes[i].slot;
        let qb = &self.disk[i];
        let persisted = match msg.ty {
            MsgType::RequestVote | MsgType::Vote => event_term(qb, EventKind::Term) >= msg.term,
            MsgType::Heartbeat => event_term(qb, EventKind::Elect) == msg.term,
            MsgType::Resignation => event_term(qb, EventKind::Stop) == msg.term,
        };
        assert!(persisted, "slot {slot} sent {msg} before persisting it");
        assert_eq!(msg.from, slot);
        match msg.ty {
            MsgType::Vote => {
                let Dest::Slot(c) = to else {
                    panic!("a vote to everyone")
                };
                assert!(
                    self.vote_msgs.insert((slot, msg.term)),
                    "slot {slot} sent a second vote in term {}",
                    msg.term
                );
                self.stats.votes += 1;
                self.cast(slot, msg.term, c);
            }
            MsgType::RequestVote => self.stats.elections += 1,
            MsgType::Heartbeat | MsgType::Resignation => {}
        }
        let bytes = self.codec.encode(&msg);
        let dests: Vec<usize> = match to {
            Dest::Slot(s) => vec![self.node_of(s)],
            Dest::Others => (0..self.nodes.len()).filter(|&j| j != i).collect(),
        };
        for d in dests {
            self.transmit(i, d, bytes);
        }
    }

    fn transmit(&mut self, from: usize, to: usize, bytes: [u8; QUORUM_MESSAGE_SIZE]) {
        self.stats.datagrams += 1;
        if self.cut.contains(&(from, to)) || self.below(100) < self.drop_pct {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.below(100) < self.dup_pct { 2 } else { 1 };
        self.stats.duplicated += copies - 1;
        for _ in 0..copies {
            let mut p = Packet {
                at: self.now + self.below(self.delay_max_ms + 1),
                to,
                bytes,
                bad: false,
            };
            if self.below(100) < self.corrupt_pct {
                let bit = self.below(256);
                p.bytes[bit as usize / 8] ^= 1 << (bit % 8);
                p.bad = true;
            }
            self.net.push(p);
        }
    }

    /// A vote of `voter` for `cand` in `term`, its own or sent.
    fn cast(&mut self, voter: SlotNr, term: Term, cand: SlotNr) {
        let prev = *self.votes_cast.entry((voter, term)).or_insert(cand);
        assert_eq!(
            prev, cand,
            "slot {voter} voted for {prev} and for {cand} in term {term}"
        );
        self.votes_for
            .entry((term, cand))
            .or_default()
            .insert(voter);
    }

    fn check_leader(&mut self, slot: SlotNr, term: Term) {
        let votes = self
            .votes_for
            .get(&(term, slot))
            .copied()
            .unwrap_or_default();
        assert!(
            votes.len() >= self.slots.votes_needed(),
            "slot {slot} leads term {term} with the votes of {:?}",
            votes.iter().collect::<Vec<_>>()
        );
        let leaders = self.leaders.entry(term).or_default();
        leaders.insert(slot);
        if self.slots.len() >= 3 {
            assert!(
                leaders.len() <= 1,
                "two leaders of term {term}: {leaders:?}"
            );
        }
    }

    fn server_event(&mut self, i: usize) {
        match self.nodes[i].server {
            Server::Starting { term, .. } => self.server_ready(i, term),
            Server::Stopping { .. } => {
                self.nodes[i].server = Server::None;
                self.server_stopped(i);
            }
            s => unreachable!("server event in {s:?}"),
        }
    }

    /// A started server reads the blocks, checks for a newer election,
    /// fences old leaders and serves.
    fn server_ready(&mut self, i: usize, term: Term) {
        let blocks = self.blocks();
        let slot = self.nodes[i].slot;
        if let Some((s, t)) = newer_election(&blocks, term) {
            self.log(format_args!(
                "slot {slot}'s server of term {term} sees term {t} of slot {s}: stops"
            ));
            self.stats.superseded += 1;
            self.nodes[i].server = Server::None;
            self.server_stopped(i);
            return;
        }
        for old in leaders_to_fence(&blocks, term, self.nodes[i].rid) {
            let victim = self
                .nodes
                .iter()
                .position(|n| n.agent.is_some() && n.rid == old.rid);
            if let Some(j) = victim {
                self.log(format_args!("slot {slot}'s server fences {old:?}"));
                self.stats.fenced += 1;
                self.crash(j, "fenced");
            }
        }
        self.nodes[i].server = Server::Up { term };
        let local = self.nodes[i].local(self.now);
        let Some(a) = self.nodes[i].agent.as_mut() else {
            unreachable!("a server without its mount")
        };
        let out = a.server_up(local);
        self.after_call(i, out.actions);
    }

    fn server_stopped(&mut self, i: usize) {
        let local = self.nodes[i].local(self.now);
        let Some(a) = self.nodes[i].agent.as_mut() else {
            unreachable!("a server without its mount")
        };
        let out = a.server_stopped(local);
        self.after_call(i, out.actions);
    }

    /// The mount dies with its server; it mounts again later.
    fn crash(&mut self, i: usize, why: &str) {
        self.log(format_args!("slot {} crashes ({why})", self.nodes[i].slot));
        self.stats.crashes += 1;
        self.down(i, 4_000);
    }

    fn down(&mut self, i: usize, restart_max_ms: u64) {
        let delay = if self.healed_at.is_some() {
            0
        } else {
            self.below(restart_max_ms)
        };
        let n = &mut self.nodes[i];
        n.agent = None;
        n.server = Server::None;
        n.restart_at = Some(self.now + delay);
    }

    fn weather(&mut self) {
        self.drop_pct = [0, 0, 5, 30][self.below(4) as usize];
        self.dup_pct = [0, 2, 10][self.below(3) as usize];
        self.corrupt_pct = [0, 1, 3][self.below(3) as usize];
        self.delay_max_ms = [1, 20, 100, 400, 1_500][self.below(5) as usize];
        self.log(format_args!(
            "weather: drop {}% dup {}% corrupt {}% delay <= {} ms",
            self.drop_pct, self.dup_pct, self.corrupt_pct, self.delay_max_ms
        ));
    }

    fn fault(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .agent
                    .as_ref()
                    .is_some_and(|a| a.phase() == Phase::Running)
            })
            .collect();
        let pick = |sim: &mut Sim, v: &[usize]| v.get(sim.below(v.len() as u64) as usize).copied();
        match self.below(10) {
            0 | 1 => {
                if let Some(i) = pick(self, &up) {
                    self.crash(i, "fault");
                }
            }
            2 => {
                if let Some(i) = pick(self, &up) {
                    self.stats.unmounts += 1;
                    self.log(format_args!("slot {} unmounts", self.nodes[i].slot));
                    let local = self.nodes[i].local(self.now);
                    let out = self.nodes[i].agent.as_mut().map(|a| a.shutdown(local));
                    self.after_call(i, out.map(|o| o.actions).unwrap_or_default());
                }
            }
            3 | 4 => self.partition(),
            5 => self.weather(),
            6 => {
                let i = self.below(self.nodes.len() as u64) as usize;
                let step = if self.below(2) == 0 {
                    1 + self.below(15_000) as i64
                } else {
                    -1 - self.below(1_000) as i64
                };
                self.stats.clock_steps += 1;
                self.log(format_args!(
                    "slot {}'s clock steps {step} ms",
                    self.nodes[i].slot
                ));
                self.nodes[i].offset_ms += step;
            }
            7 => {
                let serving: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| {
                        matches!(
                            self.nodes[i].server,
                            Server::Starting { .. } | Server::Up { .. }
                        )
                    })
                    .collect();
                if let Some(i) = pick(self, &serving) {
                    self.log(format_args!("slot {}'s server fails", self.nodes[i].slot));
                    self.stats.server_failures += 1;
                    self.nodes[i].server = Server::None;
                    self.server_stopped(i);
                }
            }
            _ => self.foreign_datagram(),
        }
    }

    fn partition(&mut self) {
        let n = self.nodes.len();
        self.cut.clear();
        match self.below(3) {
            0 => {
                let side: Vec<bool> = (0..n).map(|_| self.below(2) == 0).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            self.cut.insert((a, b));
                        }
                    }
                }
            }
            1 => {
                let x = self.below(n as u64) as usize;
                for o in (0..n).filter(|&o| o != x) {
                    self.cut.insert((x, o));
                    self.cut.insert((o, x));
                }
            }
            _ => {
                let a = self.below(n as u64) as usize;
                let b = self.below(n as u64) as usize;
                if a != b {
                    self.cut.insert((a, b));
                }
            }
        }
        self.stats.partitions += 1;
        self.cut_until = Some(self.now + 200 + self.below(5_800));
        self.log(format_args!("partition {:?}", self.cut));
    }

    /// A datagram of another filesystem, or of ours from an unused slot.
    fn foreign_datagram(&mut self) {
        let to = self.below(self.nodes.len() as u64) as usize;
        let msg = Message {
            ty: MsgType::Heartbeat,
            term: Term(u64::MAX - self.below(3)),
            from: self.nodes[0].slot,
        };
        let mut other = MessageCodec {
            fsid: FSID + 1,
            ..self.codec
        };
        let unused = (0..QUORUM_MAX_SLOTS as u8)
            .map(SlotNr)
            .find(|&s| !self.slots.contains(s));
        let from = match unused {
            Some(s) if self.below(2) == 0 => {
                other.fsid = FSID;
                other.slots.insert(s);
                s
            }
            _ => msg.from,
        };
        let bytes = other.encode(&Message { from, ..msg });
        let expect_fsid = other.fsid != FSID;
        let err = self.codec.decode(&bytes).expect_err("a foreign datagram");
        assert_eq!(
            matches!(err, MessageError::Fsid { .. }),
            expect_fsid,
            "{err}"
        );
        self.net.push(Packet {
            at: self.now,
            to,
            bytes,
            bad: true,
        });
    }

    fn heal(&mut self) {
        self.healed_at = Some(self.now);
        self.log(format_args!("the network heals"));
        self.cut.clear();
        self.cut_until = None;
        self.drop_pct = 0;
        self.dup_pct = 0;
        self.corrupt_pct = 0;
        self.delay_max_ms = HEALED_DELAY_MAX_MS;
        self.net.retain(|p| !p.bad);
        for p in &mut self.net {
            p.at = p.at.min(self.now + HEALED_DELAY_MAX_MS);
        }
        for n in &mut self.nodes {
            if let Some(t) = &mut n.restart_at {
                *t = (*t).min(self.now);
            }
        }
    }

    /// The checks made after every step.
    fn check(&mut self) {
        let mut serving = Vec::new();
        let mut leaders = Vec::new();
        for n in &self.nodes {
            if n.serving() {
                serving.push(n.slot);
            }
            let Some(a) = &n.agent else { continue };
            a.check_invariants();
            if a.is_leader() {
                leaders.push((n.slot, a.term()));
            }
        }
        assert!(serving.len() <= 1, "servers up at once: {serving:?}");
        for (slot, term) in leaders {
            self.check_leader(slot, term);
        }
        if self.healed_at.is_some() {
            match (self.stable(), self.settled) {
                (Some(now), Some((_, slot, term))) if now == (slot, term) => {}
                (Some((slot, term)), _) => {
                    self.log(format_args!("settled: slot {slot} leads term {term}"));
                    self.settled = Some((self.now, slot, term));
                }
                (None, Some(_)) => {
                    self.log(format_args!("unsettled"));
                    self.stats.unsettled += 1;
                    self.settled = None;
                }
                (None, None) => {}
            }
        }
    }

    /// One leader with its server up, every mount running and following it.
    fn stable(&self) -> Option<(SlotNr, Term)> {
        let mut leader = None;
        for n in &self.nodes {
            let a = n.agent.as_ref()?;
            if a.phase() != Phase::Running {
                return None;
            }
            if a.is_leader() {
                if leader.is_some() || n.server != (Server::Up { term: a.term() }) {
                    return None;
                }
                leader = Some((n.slot, a.term()));
            }
        }
        let (slot, term) = leader?;
        let follows = |a: &Agent| a.term() == term && (a.is_leader() || a.leader() == Some(slot));
        self.nodes
            .iter()
            .all(|n| n.agent.as_ref().is_some_and(follows))
            .then_some((slot, term))
    }

    /// The cluster settled within the bound and held until the end.
    fn check_end(&mut self) {
        let healed = self.healed_at.expect("the run ends after the heal");
        let Some((at, _, _)) = self.settled else {
            panic!("no stable leader at the end")
        };
        assert!(
            at <= healed + self.hb_timeout_ms + SETTLE_SLACK_MS,
            "settled for good {} ms after the heal, beyond {} + {SETTLE_SLACK_MS} ms",
            at - healed,
            self.hb_timeout_ms
        );
        self.stats.settle_ms_max = at - healed;
        self.stats.settle_beyond_hb_ms_max = (at - healed).saturating_sub(self.hb_timeout_ms);
        for n in &self.nodes {
            if let Some(a) = &n.agent {
                self.stats.split_leaders += a.stats().split_leaders;
            }
        }
        self.stats.seeds = 1;
        self.stats.steps = self.step;
        self.stats.sim_secs = (self.now - EPOCH_MS) / 1000;
    }
}

fn greatest(qb: &QuorumBlock) -> u64 {
    qb.events.iter().map(|e| e.term.get()).max().unwrap_or(0)
}

/// The BEGIN term in a start's actions, for the trace.
fn event_term_of(actions: &[Action]) -> Term {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Persist(evs) => evs.first().map(|e| e.1),
            _ => None,
        })
        .unwrap_or_default()
}

fn run_seed(seed: u64, trace: bool) -> Stats {
    let mut sim = Sim::new(seed, trace);
    sim.run();
    sim.stats
}

fn run_part(part: u64) {
    common::sim::run_part("quorum_sim", part, PARTS, SEEDS, run_seed);
}

#[test]
fn quorum_sim_part0() {
    run_part(0);
}

#[test]
fn quorum_sim_part1() {
    run_part(1);
}

#[test]
fn quorum_sim_part2() {
    run_part(2);
}

#[test]
fn quorum_sim_part3() {
    run_part(3);
}
