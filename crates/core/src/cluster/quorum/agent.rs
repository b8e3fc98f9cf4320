//! The election agent of one quorum slot: the state machine the module
//! comment describes, its inputs, its ordered outputs and its invariants.

use super::blocks::{elected_unstopped, greatest_term};
use super::{EventKind, Message, MsgType, SlotNr, SlotSet, Term};
use crate::rng::Rng;
use crate::types::Rid;
use scoutfs_format::quorum::QuorumBlock;

/// The fixed part of the election timeout.
pub const ELECT_MIN_MS: u64 = 250;
/// The election timeout adds a random `0..ELECT_VAR_MS`, so that candidates
/// of one term rarely split the votes.
pub const ELECT_VAR_MS: u64 = 100;
/// How often a leader sends heartbeats.
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// How long a follower whose mount cannot reach the leader's server waits
/// for the leader's next heartbeat before it stands for election (see
/// [`Agent::server_unreachable`]): five heartbeat intervals.
pub const SUSPECT_SILENCE_MS: u64 = 5 * HEARTBEAT_INTERVAL_MS;
/// How long a follower waits for a heartbeat before it stands for election.
pub const HEARTBEAT_TIMEOUT_DEFAULT_MS: u64 = 10_000;
pub const HEARTBEAT_TIMEOUT_MIN_MS: u64 = 2_000;
pub const HEARTBEAT_TIMEOUT_MAX_MS: u64 = 60_000;

/// What an agent is configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Our slot.
    pub slot: SlotNr,
    /// Every configured slot, ours included.
    pub slots: SlotSet,
    /// Our mount's id, recorded in our events.
    pub rid: Rid,
    /// How long a follower waits for a heartbeat (a mount option).
    pub heartbeat_timeout_ms: u64,
}

/// Why an agent can't be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("quorum slot {0} is not configured")]
    SlotNotConfigured(SlotNr),
    #[error(
        "quorum heartbeat timeout of {0} ms is outside \
         {HEARTBEAT_TIMEOUT_MIN_MS}..={HEARTBEAT_TIMEOUT_MAX_MS} ms"
    )]
    HeartbeatTimeout(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

/// Our vote in the current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vote {
    /// Not cast yet: the first candidate to ask gets it.
    Free,
    /// Cast for this slot (our own as candidate or leader).
    For(SlotNr),
    /// The term we started in: we may have voted in it before a restart.
    Withheld,
}

/// The server as the agent has asked for it and heard of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Not running (stopped and reported stopped).
    Down,
    /// Started for `term`; `up` once it reported that it fenced and serves.
    Running { term: Term, up: bool },
    /// Asked to stop; it has not reported stopped yet.
    Stopping { term: Term, up: bool },
}

/// The agent's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Made; waiting for `start`.
    Created,
    Running,
    /// `shutdown` was called; waiting for the server to stop.
    ShuttingDown,
    /// Done: END is recorded (if BEGIN was) and every input is ignored.
    Ended,
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    Slot(SlotNr),
    /// Every configured slot but ours.
    Others,
}

/// What the driver does for the agent, in order (see the module comment:
/// a `Persist` is durable before any later action is carried out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Record these events in our slot's block in one write
    /// ([`record_events`](super::record_events)), and flush.
    Persist(Vec<(EventKind, Term)>),
    Send {
        to: Dest,
        msg: Message,
    },
    /// Start the server for this term. It fences old leaders first
    /// ([`leaders_to_fence`](super::leaders_to_fence)), then calls [`Agent::server_up`]; whenever it
    /// stops, [`Agent::server_stopped`].
    StartServer {
        term: Term,
    },
    /// Stop the server; call [`Agent::server_stopped`] once it has.
    StopServer,
}

/// The result of one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub actions: Vec<Action>,
    /// Call [`Agent::on_timer`] at this time (earlier is harmless). None
    /// before start and after the agent ended.
    pub deadline_ms: Option<u64>,
}

/// How far past our term a message's term may be. Terms grow by one per
/// election, and every member starts from the greatest term in the quorum
/// blocks, so a member is never this far ahead of another unless it held
/// a million elections the other never heard of (at the shortest timeout,
/// over a day of them). A message further ahead is dropped and counted: a
/// term pushed near `u64::MAX` would end elections for good.
pub const TERM_JUMP_MAX: u64 = 1 << 20;

/// Counts of what the agent did and ignored, for status and diagnosis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    pub elections: u64,
    pub elected: u64,
    pub votes_sent: u64,
    pub votes_refused: u64,
    pub votes_received: u64,
    pub votes_duplicate: u64,
    pub heartbeats_sent: u64,
    pub heartbeats_received: u64,
    pub resignations_received: u64,
    pub resignations_sent: u64,
    pub terms_adopted: u64,
    pub deposed: u64,
    pub split_leaders: u64,
    /// Timeouts that did not start an election: our server still stopping.
    pub candidacy_deferred: u64,
    /// Timeouts that did not start an election: the term is at its maximum.
    pub terms_exhausted: u64,
    pub stale_messages: u64,
    /// Messages whose term is further ahead of ours than elections could
    /// have taken it ([`TERM_JUMP_MAX`]): dropped, so no message can push
    /// the cluster's term toward its end.
    pub terms_too_far: u64,
    /// Messages from our own slot (two mounts on one slot?) or an
    /// unconfigured one.
    pub foreign_messages: u64,
    /// Messages and timers before start, during shutdown or after the end.
    pub ignored_inputs: u64,
    /// Server reports that match no server we asked for.
    pub unexpected_server_reports: u64,
    /// Times an unreachable server brought the election deadline closer.
    pub suspicions: u64,
}

/// The election agent of one quorum slot (see the module comment).
#[derive(Clone, Debug)]
pub struct Agent {
    cfg: AgentConfig,
    rng: Rng,
    phase: Phase,
    role: Role,
    term: Term,
    vote: Vote,
    /// A candidate's or leader's votes in `term`, its own included.
    votes: SlotSet,
    deadline_ms: u64,
    /// The latest time an input carried.
    now_ms: u64,
    server: ServerState,
    /// The slot whose heartbeat of our term we last heard (or us as leader).
    leader: Option<SlotNr>,
    /// When we last heard a heartbeat (0: never).
    heard_ms: u64,
    stats: AgentStats,
}

impl Agent {
    /// An agent for `cfg.slot`; `rng` supplies the election jitter.
    pub fn new(cfg: AgentConfig, rng: Rng) -> Result<Agent, ConfigError> {
        if !cfg.slots.contains(cfg.slot) {
            return Err(ConfigError::SlotNotConfigured(cfg.slot));
        }
        let hb = cfg.heartbeat_timeout_ms;
        if !(HEARTBEAT_TIMEOUT_MIN_MS..=HEARTBEAT_TIMEOUT_MAX_MS).contains(&hb) {
            return Err(ConfigError::HeartbeatTimeout(hb));
        }
        Ok(Agent {
            cfg,
            rng,
            phase: Phase::Created,
            role: Role::Follower,
            term: Term(0),
            vote: Vote::Withheld,
            votes: SlotSet::default(),
            deadline_ms: 0,
            now_ms: 0,
            server: ServerState::Down,
            leader: None,
            heard_ms: 0,
            stats: AgentStats::default(),
        })
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn vote(&self) -> Vote {
        self.vote
    }
    /// A candidate's or leader's votes in its term.
    pub fn votes(&self) -> SlotSet {
        self.votes
    }
    pub fn server(&self) -> ServerState {
        self.server
    }
    /// The leader of our term as far as we know.
    pub fn leader(&self) -> Option<SlotNr> {
        self.leader
    }
    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
    /// When `on_timer` is due; None unless running or shutting down.
    pub fn deadline_ms(&self) -> Option<u64> {
        matches!(self.phase, Phase::Running | Phase::ShuttingDown).then_some(self.deadline_ms)
    }

    /// Starts the agent with every configured slot's quorum block.
    pub fn start(&mut self, blocks: &[(SlotNr, QuorumBlock)], now_ms: u64) -> Output {
        let now = self.clock(now_ms);
        if self.phase != Phase::Created {
            self.stats.ignored_inputs += 1;
            return self.output(Vec::new());
        }
        self.phase = Phase::Running;
        self.term = greatest_term(blocks);
        self.vote = Vote::Withheld;
        let server_visible = blocks.iter().any(|(_, qb)| elected_unstopped(qb));
        self.deadline_ms = if server_visible {
            now.saturating_add(self.cfg.heartbeat_timeout_ms)
        } else {
            self.election_deadline(now)
        };
        self.output(vec![Action::Persist(vec![(EventKind::Begin, self.term)])])
    }

    /// A decoded message from another slot.
    pub fn on_message(&mut self, msg: Message, now_ms: u64) -> Output {
        let now = self.clock(now_ms);
        let mut out = Vec::new();
        self.receive(msg, now, &mut out);
        self.output(out)
    }

    /// The deadline passed (or not: an early call does nothing).
    pub fn on_timer(&mut self, now_ms: u64) -> Output {
        let now = self.clock(now_ms);
        let mut out = Vec::new();
        if now >= self.deadline_ms {
            match (self.phase, self.role) {
                (Phase::Running | Phase::ShuttingDown, Role::Leader) => {
                    self.deadline_ms = now.saturating_add(HEARTBEAT_INTERVAL_MS);
                    self.send_others(MsgType::Heartbeat, self.term, &mut out);
                    self.stats.heartbeats_sent += 1;
                }
                (Phase::Running, _) => self.stand_for_election(now, &mut out),
                // Waiting for the server to stop, we stand for nothing.
                (Phase::ShuttingDown, _) => self.deadline_ms = self.election_deadline(now),
                (Phase::Created | Phase::Ended, _) => self.stats.ignored_inputs += 1,
            }
        }
        self.output(out)
    }

    /// The mount could not reach the server it was told of (a connection
    /// refused or broken). A server whose process died also stopped its
    /// leader's heartbeats: if none has been heard for
    /// [`SUSPECT_SILENCE_MS`], a follower stands for election then instead
    /// of waiting out the whole heartbeat timeout. A leader that still sends
    /// heartbeats keeps leading: a broken connection alone proves nothing.
    pub fn server_unreachable(&mut self, now_ms: u64) -> Output {
        let now = self.clock(now_ms);
        if self.phase == Phase::Running
            && self.role == Role::Follower
            && self.server == ServerState::Down
        {
            let quiet_until = self.heard_ms.saturating_add(SUSPECT_SILENCE_MS);
            if quiet_until < self.deadline_ms {
                self.deadline_ms = quiet_until.max(now);
                self.stats.suspicions += 1;
            }
        }
        self.output(Vec::new())
    }

    /// The server we started reports that it fenced the old leaders and
    /// serves.
    pub fn server_up(&mut self, now_ms: u64) -> Output {
        self.clock(now_ms);
        let mut out = Vec::new();
        match &mut self.server {
            ServerState::Running { term, up } | ServerState::Stopping { term, up } if !*up => {
                *up = true;
                out.push(Action::Persist(vec![(EventKind::Fence, *term)]));
            }
            _ => self.stats.unexpected_server_reports += 1,
        }
        self.output(out)
    }

    /// The server stopped, on its own or because we asked.
    pub fn server_stopped(&mut self, now_ms: u64) -> Output {
        let now = self.clock(now_ms);
        let mut out = Vec::new();
        let term = match self.server {
            ServerState::Running { term, .. } | ServerState::Stopping { term, .. } => term,
            ServerState::Down => {
                self.stats.unexpected_server_reports += 1;
                return self.output(out);
            }
        };
        self.server = ServerState::Down;
        if self.role == Role::Leader {
            self.role = Role::Follower;
            self.leader = None;
            self.deadline_ms = self.election_deadline(now);
        }
        out.push(Action::Persist(vec![(EventKind::Stop, term)]));
        self.send_others(MsgType::Resignation, term, &mut out);
        self.stats.resignations_sent += 1;
        if self.phase == Phase::ShuttingDown {
            out.push(Action::Persist(vec![(EventKind::End, self.term)]));
            self.phase = Phase::Ended;
        }
        self.output(out)
    }

    /// The mount is going away: stop the server, resign, record the end.
    pub fn shutdown(&mut self, now_ms: u64) -> Output {
        self.clock(now_ms);
        let mut out = Vec::new();
        match self.phase {
            Phase::Created => self.phase = Phase::Ended,
            Phase::Running => {
                self.phase = Phase::ShuttingDown;
                self.stop_server(&mut out);
                if self.server == ServerState::Down {
                    out.push(Action::Persist(vec![(EventKind::End, self.term)]));
                    self.phase = Phase::Ended;
                }
            }
            Phase::ShuttingDown | Phase::Ended => self.stats.ignored_inputs += 1,
        }
        self.output(out)
    }

    /// Asserts the invariants listed in the module comment.
    pub fn check_invariants(&self) {
        let me = self.cfg.slot;
        let needed = self.cfg.slots.votes_needed();
        let what = || format!("slot {me} term {} {:?} {:?}", self.term, self.role, self);
        match self.role {
            Role::Leader => {
                let serving = match self.server {
                    ServerState::Running { term, .. } => term == self.term,
                    ServerState::Stopping { term, .. } => {
                        term == self.term && self.phase == Phase::ShuttingDown
                    }
                    ServerState::Down => false,
                };
                assert!(serving, "leader without its server: {}", what());
                assert!(
                    self.votes.len() >= needed,
                    "leader without votes: {}",
                    what()
                );
            }
            Role::Candidate => {
                assert_eq!(self.server, ServerState::Down, "candidate: {}", what());
                assert!(self.votes.len() < needed, "candidate that won: {}", what());
            }
            Role::Follower => assert!(
                !matches!(self.server, ServerState::Running { .. }),
                "follower running a server: {}",
                what()
            ),
        }
        if self.role != Role::Follower {
            assert_eq!(self.vote, Vote::For(me), "{}", what());
            assert!(self.votes.contains(me), "{}", what());
            assert!(self.phase != Phase::Created, "{}", what());
        }
        assert_eq!(self.votes.0 & !self.cfg.slots.0, 0, "{}", what());
        if let Vote::For(s) = self.vote {
            assert!(self.cfg.slots.contains(s), "{}", what());
        }
        match self.server {
            ServerState::Running { term, .. } | ServerState::Stopping { term, .. } => {
                assert!(term <= self.term, "server of a later term: {}", what());
                assert!(
                    matches!(self.phase, Phase::Running | Phase::ShuttingDown),
                    "{}",
                    what()
                );
            }
            ServerState::Down => {}
        }
    }

    fn receive(&mut self, msg: Message, now: u64, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            self.stats.ignored_inputs += 1;
            return;
        }
        if msg.from == self.cfg.slot || !self.cfg.slots.contains(msg.from) {
            self.stats.foreign_messages += 1;
            return;
        }
        if msg.term < self.term {
            self.stats.stale_messages += 1;
            return;
        }
        if msg.term.0 - self.term.0 > TERM_JUMP_MAX {
            self.stats.terms_too_far += 1;
            return;
        }
        if msg.term > self.term {
            self.adopt_term(msg, now, out);
        }
        match msg.ty {
            MsgType::Heartbeat => self.on_heartbeat(msg, now, out),
            MsgType::Resignation => {
                self.stats.resignations_received += 1;
                if self.role == Role::Follower {
                    self.leader = None;
                    self.deadline_ms = self.election_deadline(now);
                }
            }
            MsgType::RequestVote => self.on_request_vote(msg, now, out),
            MsgType::Vote => {
                if self.role != Role::Candidate {
                    return;
                }
                if !self.votes.insert(msg.from) {
                    self.stats.votes_duplicate += 1;
                    return;
                }
                self.stats.votes_received += 1;
                self.maybe_elected(now, out);
            }
        }
    }

    /// A greater term: follow it, unvoted, and persist it first of all that
    /// we might do in it.
    fn adopt_term(&mut self, msg: Message, now: u64, out: &mut Vec<Action>) {
        if self.role == Role::Leader {
            self.stats.deposed += 1;
            self.stop_server(out);
        }
        self.role = Role::Follower;
        self.term = msg.term;
        self.vote = Vote::Free;
        self.votes = SlotSet::default();
        self.leader = None;
        self.deadline_ms = if msg.ty == MsgType::Heartbeat {
            self.heard_ms = now;
            now.saturating_add(self.cfg.heartbeat_timeout_ms)
        } else {
            self.election_deadline(now)
        };
        self.stats.terms_adopted += 1;
        out.push(Action::Persist(vec![(EventKind::Term, msg.term)]));
    }

    fn on_heartbeat(&mut self, msg: Message, now: u64, out: &mut Vec<Action>) {
        self.stats.heartbeats_received += 1;
        if self.role == Role::Leader {
            // Another leader of our term: a split election of 1 or 2 slots,
            // or two mounts using one slot number. Once our server is up it
            // has fenced the other (the heartbeat may be from before), so we
            // keep leading; before that the lower slot leads.
            self.stats.split_leaders += 1;
            let up = matches!(self.server, ServerState::Running { up: true, .. });
            if msg.from > self.cfg.slot || up {
                return;
            }
            self.stop_server(out);
        }
        self.role = Role::Follower;
        self.leader = Some(msg.from);
        self.heard_ms = now;
        self.deadline_ms = now.saturating_add(self.cfg.heartbeat_timeout_ms);
    }

    fn on_request_vote(&mut self, msg: Message, now: u64, out: &mut Vec<Action>) {
        if self.role != Role::Follower || self.vote != Vote::Free {
            self.stats.votes_refused += 1;
            return;
        }
        self.vote = Vote::For(msg.from);
        self.deadline_ms = self.election_deadline(now);
        self.stats.votes_sent += 1;
        out.push(Action::Send {
            to: Dest::Slot(msg.from),
            msg: self.message(MsgType::Vote, self.term),
        });
    }

    fn stand_for_election(&mut self, now: u64, out: &mut Vec<Action>) {
        self.deadline_ms = self.election_deadline(now);
        if self.server != ServerState::Down {
            self.stats.candidacy_deferred += 1;
            return;
        }
        let Some(next) = self.term.0.checked_add(1) else {
            self.stats.terms_exhausted += 1;
            return;
        };
        self.role = Role::Candidate;
        self.term = Term(next);
        self.vote = Vote::For(self.cfg.slot);
        self.votes = SlotSet::default();
        self.votes.insert(self.cfg.slot);
        self.leader = None;
        self.stats.elections += 1;
        out.push(Action::Persist(vec![(EventKind::Term, self.term)]));
        self.send_others(MsgType::RequestVote, self.term, out);
        self.maybe_elected(now, out);
    }

    fn maybe_elected(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.role != Role::Candidate || self.votes.len() < self.cfg.slots.votes_needed() {
            return;
        }
        // Candidates stand only with their server down (stand_for_election).
        assert_eq!(self.server, ServerState::Down, "slot {}", self.cfg.slot);
        self.role = Role::Leader;
        self.leader = Some(self.cfg.slot);
        self.deadline_ms = now.saturating_add(HEARTBEAT_INTERVAL_MS);
        self.stats.elected += 1;
        out.push(Action::Persist(vec![(EventKind::Elect, self.term)]));
        self.send_others(MsgType::Heartbeat, self.term, out);
        self.stats.heartbeats_sent += 1;
        out.push(Action::StartServer { term: self.term });
        self.server = ServerState::Running {
            term: self.term,
            up: false,
        };
    }

    fn stop_server(&mut self, out: &mut Vec<Action>) {
        if let ServerState::Running { term, up } = self.server {
            self.server = ServerState::Stopping { term, up };
            out.push(Action::StopServer);
        }
    }

    fn send_others(&self, ty: MsgType, term: Term, out: &mut Vec<Action>) {
        if self.cfg.slots.len() > 1 {
            out.push(Action::Send {
                to: Dest::Others,
                msg: self.message(ty, term),
            });
        }
    }

    fn message(&self, ty: MsgType, term: Term) -> Message {
        Message {
            ty,
            term,
            from: self.cfg.slot,
        }
    }

    fn election_deadline(&mut self, now: u64) -> u64 {
        now.saturating_add(ELECT_MIN_MS + self.rng.below(ELECT_VAR_MS))
    }

    /// Our time: inputs' times, never going backwards.
    fn clock(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        self.now_ms
    }

    fn output(&self, actions: Vec<Action>) -> Output {
        Output {
            actions,
            deadline_ms: self.deadline_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::quorum::testing::{blocks, msg, set};
    use Action::{Persist, Send, StartServer, StopServer};
    use EventKind as E;

    const HB_MS: u64 = HEARTBEAT_TIMEOUT_DEFAULT_MS;

    fn agent(slot: u8, slots: &[u8]) -> Agent {
        let cfg = AgentConfig {
            slot: SlotNr(slot),
            slots: set(slots),
            rid: Rid(0x100 + slot as u64),
            heartbeat_timeout_ms: HB_MS,
        };
        Agent::new(cfg, Rng::new(7 + slot as u64)).unwrap()
    }

    fn persist(kind: EventKind, term: u64) -> Action {
        Persist(vec![(kind, Term(term))])
    }

    fn send(to: Dest, ty: MsgType, term: u64, from: u8) -> Action {
        Send {
            to,
            msg: msg(ty, term, from),
        }
    }

    /// Runs the agent's timer at its deadline; returns the output and time.
    fn fire(a: &mut Agent) -> (Output, u64) {
        let at = a.deadline_ms().expect("a deadline");
        let out = a.on_timer(at);
        a.check_invariants();
        (out, at)
    }

    /// Slot 0 of {0, 1, 2} elected in term 1 with slot 1's vote.
    fn leader() -> (Agent, u64) {
        let mut a = agent(0, &[0, 1, 2]);
        a.start(&[], 0);
        let (_, now) = fire(&mut a);
        let out = a.on_message(msg(MsgType::Vote, 1, 1), now + 5);
        assert_eq!(a.role(), Role::Leader, "{out:?}");
        a.check_invariants();
        (a, now + 5)
    }

    fn in_election_window(deadline: Option<u64>, now: u64) -> bool {
        deadline
            .is_some_and(|d| (now + ELECT_MIN_MS..now + ELECT_MIN_MS + ELECT_VAR_MS).contains(&d))
    }

    #[test]
    fn config_is_checked() {
        let cfg = AgentConfig {
            slot: SlotNr(1),
            slots: set(&[0, 2]),
            rid: Rid(1),
            heartbeat_timeout_ms: HB_MS,
        };
        let e = Agent::new(cfg, Rng::new(1)).unwrap_err();
        assert_eq!(e, ConfigError::SlotNotConfigured(SlotNr(1)));
        let cfg = AgentConfig {
            slots: set(&[1]),
            ..cfg
        };
        for (ms, ok) in [
            (1_999, false),
            (2_000, true),
            (60_000, true),
            (60_001, false),
        ] {
            let cfg = AgentConfig {
                heartbeat_timeout_ms: ms,
                ..cfg
            };
            assert_eq!(Agent::new(cfg, Rng::new(1)).is_ok(), ok, "{ms} ms");
        }
    }

    #[test]
    fn start_takes_the_greatest_term_of_all_slots_and_writes_begin() {
        let mut a = agent(0, &[0, 1, 2]);
        let bs = blocks(&[
            (0, &[(E::Term, 4, 1)]),
            (1, &[(E::Term, 9, 2), (E::Elect, 9, 2), (E::Stop, 9, 2)]),
            (2, &[(E::Begin, 11, 3)]),
        ]);
        let out = a.start(&bs, 1_000);
        a.check_invariants();
        assert_eq!(out.actions, [persist(E::Begin, 11)]);
        assert_eq!(a.term(), Term(11));
        assert_eq!(a.vote(), Vote::Withheld);
        assert_eq!(a.role(), Role::Follower);
        // No server is running (9 was stopped): the election timeout.
        assert!(in_election_window(out.deadline_ms, 1_000), "{out:?}");
        // A second start is ignored.
        assert!(a.start(&bs, 2_000).actions.is_empty());
        assert_eq!(a.stats().ignored_inputs, 1);
    }

    #[test]
    fn start_waits_the_heartbeat_timeout_when_a_server_is_visible() {
        let mut a = agent(0, &[0, 1, 2]);
        let bs = blocks(&[(2, &[(E::Elect, 3, 3), (E::Stop, 2, 3)])]);
        let out = a.start(&bs, 1_000);
        assert_eq!(out.deadline_ms, Some(1_000 + HB_MS));
        assert_eq!(a.term(), Term(3));
    }

    #[test]
    fn inputs_before_start_are_ignored() {
        let mut a = agent(0, &[0, 1]);
        for out in [
            a.on_message(msg(MsgType::RequestVote, 5, 1), 10),
            a.on_timer(1_000_000),
            a.server_up(10),
            a.server_stopped(10),
        ] {
            assert_eq!(out.actions, []);
            assert_eq!(out.deadline_ms, None);
        }
        a.check_invariants();
        assert_eq!(a.term(), Term(0));
        // Shutting down before start ends without writing anything.
        assert_eq!(a.shutdown(10).actions, []);
        assert_eq!(a.phase(), Phase::Ended);
    }

    #[test]
    fn election_timeout_makes_a_candidate_that_persists_its_term_first() {
        let mut a = agent(0, &[0, 1, 2]);
        let out = a.start(&blocks(&[(1, &[(E::Term, 6, 2)])]), 100);
        let deadline = out.deadline_ms.unwrap();
        // Early timers do nothing.
        let early = a.on_timer(deadline - 1);
        assert_eq!(early.actions, []);
        assert_eq!(early.deadline_ms, Some(deadline));
        let (out, now) = fire(&mut a);
        assert_eq!(
            out.actions,
            [
                persist(E::Term, 7),
                send(Dest::Others, MsgType::RequestVote, 7, 0)
            ]
        );
        assert_eq!(a.role(), Role::Candidate);
        assert_eq!(a.vote(), Vote::For(SlotNr(0)));
        assert!(in_election_window(out.deadline_ms, now));
        // No votes: the next timeout is a new election in the next term.
        let (out, _) = fire(&mut a);
        assert_eq!(out.actions[0], persist(E::Term, 8));
        assert_eq!(a.stats().elections, 2);
    }

    #[test]
    fn election_timeouts_are_jittered_by_the_rng() {
        let mut deadlines = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let cfg = *agent(0, &[0, 1, 2]).config();
            let mut a = Agent::new(cfg, Rng::new(seed)).unwrap();
            let out = a.start(&[], 0);
            assert!(in_election_window(out.deadline_ms, 0));
            deadlines.insert(out.deadline_ms);
        }
        assert!(deadlines.len() > 5, "{deadlines:?}");
    }

    #[test]
    fn a_follower_votes_once_per_term_for_the_first_requester() {
        let mut a = agent(0, &[0, 1, 2, 3]);
        a.start(&blocks(&[(0, &[(E::Term, 5, 1)])]), 0);
        let out = a.on_message(msg(MsgType::RequestVote, 6, 1), 10);
        assert_eq!(
            out.actions,
            [
                persist(E::Term, 6),
                send(Dest::Slot(SlotNr(1)), MsgType::Vote, 6, 0)
            ]
        );
        assert_eq!(a.vote(), Vote::For(SlotNr(1)));
        // Granting a vote restarts the election timeout.
        assert!(in_election_window(out.deadline_ms, 10));
        // The second requester and a duplicate of the first get nothing.
        assert_eq!(
            a.on_message(msg(MsgType::RequestVote, 6, 2), 11).actions,
            []
        );
        assert_eq!(
            a.on_message(msg(MsgType::RequestVote, 6, 1), 12).actions,
            []
        );
        assert_eq!(a.stats().votes_refused, 2);
        // A new term frees the vote.
        let out = a.on_message(msg(MsgType::RequestVote, 7, 2), 13);
        assert_eq!(
            out.actions,
            [
                persist(E::Term, 7),
                send(Dest::Slot(SlotNr(2)), MsgType::Vote, 7, 0)
            ]
        );
        assert_eq!(a.stats().votes_sent, 2);
        a.check_invariants();
    }

    #[test]
    fn a_restarted_agent_withholds_its_vote_in_its_start_term() {
        let mut a = agent(0, &[0, 1, 2]);
        a.start(&blocks(&[(0, &[(E::Term, 5, 1)])]), 0);
        // It may have voted in term 5 before it restarted.
        assert_eq!(
            a.on_message(msg(MsgType::RequestVote, 5, 1), 10).actions,
            []
        );
        assert_eq!(a.vote(), Vote::Withheld);
        assert_eq!(a.stats().votes_refused, 1);
    }

    #[test]
    fn smaller_terms_are_ignored() {
        let mut a = agent(0, &[0, 1, 2]);
        a.start(&blocks(&[(0, &[(E::Term, 5, 1)])]), 0);
        let d = a.deadline_ms();
        for ty in MsgType::ALL {
            assert_eq!(a.on_message(msg(ty, 4, 1), 10).actions, []);
        }
        assert_eq!(a.stats().stale_messages, 4);
        assert_eq!((a.term(), a.deadline_ms()), (Term(5), d));
    }

    #[test]
    fn terms_too_far_ahead_are_ignored() {
        let mut a = agent(0, &[0, 1, 2]);
        a.start(&blocks(&[(0, &[(E::Term, 5, 1)])]), 0);
        let d = a.deadline_ms();
        for term in [5 + TERM_JUMP_MAX + 1, u64::MAX] {
            for ty in MsgType::ALL {
                assert_eq!(a.on_message(msg(ty, term, 1), 10).actions, []);
            }
        }
        assert_eq!(a.stats().terms_too_far, 8);
        assert_eq!((a.term(), a.deadline_ms()), (Term(5), d));
        // The furthest a term may go is adopted.
        let out = a.on_message(msg(MsgType::Heartbeat, 5 + TERM_JUMP_MAX, 1), 10);
        assert!(!out.actions.is_empty());
        assert_eq!(a.term(), Term(5 + TERM_JUMP_MAX));
    }

    #[test]
    fn messages_from_our_own_slot_are_ignored() {
        let mut a = agent(0, &[0, 1, 2]);
        a.start(&[], 0);
        assert_eq!(a.on_message(msg(MsgType::Heartbeat, 9, 0), 10).actions, []);
        assert_eq!(a.on_message(msg(MsgType::Heartbeat, 9, 7), 10).actions, []);
        assert_eq!(a.stats().foreign_messages, 2);
        assert_eq!(a.term(), Term(0));
    }

    #[test]
    fn a_candidate_with_a_majority_leads_persisting_elect_before_acting() {
        let mut a = agent(0, &[0, 1, 2, 3, 4]);
        a.start(&[], 0);
        let (_, now) = fire(&mut a);
        assert_eq!(a.on_message(msg(MsgType::Vote, 1, 3), now + 1).actions, []);
        // A duplicated vote counts once.
        assert_eq!(a.on_message(msg(MsgType::Vote, 1, 3), now + 2).actions, []);
        assert_eq!(a.stats().votes_duplicate, 1);
        assert_eq!(a.role(), Role::Candidate);
        let out = a.on_message(msg(MsgType::Vote, 1, 1), now + 3);
        assert_eq!(
            out.actions,
            [
                persist(E::Elect, 1),
                send(Dest::Others, MsgType::Heartbeat, 1, 0),
                StartServer { term: Term(1) },
            ]
        );
        assert_eq!(a.role(), Role::Leader);
        assert_eq!(a.leader(), Some(SlotNr(0)));
        assert_eq!(a.votes(), set(&[0, 1, 3]));
        assert_eq!(
            a.server(),
            ServerState::Running {
                term: Term(1),
                up: false
            }
        );
        assert_eq!(out.deadline_ms, Some(now + 3 + HEARTBEAT_INTERVAL_MS));
        a.check_invariants();
        // Late votes change nothing.
        assert_eq!(a.on_message(msg(MsgType::Vote, 1, 2), now + 4).actions, []);
    }

    #[test]
    fn one_or_two_slots_elect_with_one_vote() {
        let mut a = agent(4, &[4]);
        a.start(&[], 0);
        let (out, _) = fire(&mut a);
        assert_eq!(
            out.actions,
            [
                persist(E::Term, 1),
                persist(E::Elect, 1),
                StartServer { term: Term(1) }
            ]
        );
        let mut a = agent(1, &[0, 1]);
        a.start(&[], 0);
        let (out, _) = fire(&mut a);
        assert_eq!(
            out.actions,
            [
                persist(E::Term, 1),
                send(Dest::Others, MsgType::RequestVote, 1, 1),
                persist(E::Elect, 1),
                send(Dest::Others, MsgType::Heartbeat, 1, 1),
                StartServer { term: Term(1) },
            ]
        );
        a.check_invariants();
    }

    #[test]
    fn a_leader_sends_heartbeats_every_interval() {
        let (mut a, now) = leader();
        let next = now + HEARTBEAT_INTERVAL_MS;
        assert_eq!(a.deadline_ms(), Some(next));
        let (out, at) = fire(&mut a);
        assert_eq!(at, next);
        assert_eq!(out.actions, [send(Dest::Others, MsgType::Heartbeat, 1, 0)]);
        assert_eq!(out.deadline_ms, Some(next + HEARTBEAT_INTERVAL_MS));
        // A late timer schedules from when it ran.
        let out = a.on_timer(next + 5_000);
        assert_eq!(out.deadline_ms, Some(next + 5_000 + HEARTBEAT_INTERVAL_MS));
    }

    #[test]
    fn heartbeats_hold_followers_and_candidates_back() {
        let mut a = agent(1, &[0, 1, 2]);
        a.start(&[], 0);
        let out = a.on_message(msg(MsgType::Heartbeat, 3, 0), 50);
        assert_eq!(out.actions, [persist(E::Term, 3)]);
        assert_eq!(out.deadline_ms, Some(50 + HB_MS));
        assert_eq!(a.leader(), Some(SlotNr(0)));
        let out = a.on_message(msg(MsgType::Heartbeat, 3, 0), 150);
        assert_eq!(out.actions, []);
        assert_eq!(out.deadline_ms, Some(150 + HB_MS));
        assert_eq!(a.stats().heartbeats_received, 2);
        // A candidate that hears the leader of its term follows it.
        let (_, now) = fire(&mut a);
        assert_eq!((a.role(), a.term()), (Role::Candidate, Term(4)));
        let out = a.on_message(msg(MsgType::Heartbeat, 4, 2), now + 1);
        assert_eq!(out.actions, []);
        assert_eq!(a.role(), Role::Follower);
        assert_eq!(a.leader(), Some(SlotNr(2)));
        assert_eq!(out.deadline_ms, Some(now + 1 + HB_MS));
        a.check_invariants();
    }

    #[test]
    fn a_resignation_of_our_term_shortens_the_wait() {
        let mut a = agent(1, &[0, 1, 2]);
        a.start(&[], 0);
        a.on_message(msg(MsgType::Heartbeat, 3, 0), 50);
        let out = a.on_message(msg(MsgType::Resignation, 3, 0), 80);
        assert_eq!(out.actions, []);
        assert!(in_election_window(out.deadline_ms, 80));
        assert_eq!(a.leader(), None);
        assert_eq!(a.stats().resignations_received, 1);
        // An old term's resignation is ignored.
        a.on_message(msg(MsgType::Heartbeat, 4, 2), 100);
        let out = a.on_message(msg(MsgType::Resignation, 3, 0), 120);
        assert_eq!(out.deadline_ms, Some(100 + HB_MS));
    }

    #[test]
    fn a_greater_term_deposes_a_leader() {
        let (mut a, now) = leader();
        let out = a.on_message(msg(MsgType::RequestVote, 2, 2), now + 10);
        // The server stops at once; the new term is persisted before the vote.
        assert_eq!(
            out.actions,
            [
                StopServer,
                persist(E::Term, 2),
                send(Dest::Slot(SlotNr(2)), MsgType::Vote, 2, 0)
            ]
        );
        assert_eq!(a.role(), Role::Follower);
        assert_eq!(a.stats().deposed, 1);
        assert_eq!(
            a.server(),
            ServerState::Stopping {
                term: Term(1),
                up: false
            }
        );
        a.check_invariants();
    }

    #[test]
    fn a_member_stands_only_with_its_server_down() {
        let (mut a, now) = leader();
        a.on_message(msg(MsgType::Heartbeat, 2, 1), now + 10);
        assert!(matches!(a.server(), ServerState::Stopping { .. }));
        // The heartbeat timeout passes while the server is still stopping.
        let (out, at) = fire(&mut a);
        assert_eq!(out.actions, []);
        assert_eq!(a.role(), Role::Follower);
        assert_eq!(a.stats().candidacy_deferred, 1);
        assert!(in_election_window(out.deadline_ms, at));
        // It stops: the stop is recorded with the server's term, and resigned.
        let out = a.server_stopped(at + 1);
        assert_eq!(
            out.actions,
            [
                persist(E::Stop, 1),
                send(Dest::Others, MsgType::Resignation, 1, 0)
            ]
        );
        let (out, _) = fire(&mut a);
        assert_eq!(out.actions[0], persist(E::Term, 3));
        assert_eq!(a.role(), Role::Candidate);
        a.check_invariants();
    }

    #[test]
    fn the_server_reports_fence_and_stop_events() {
        let (mut a, now) = leader();
        assert_eq!(a.server_up(now + 1).actions, [persist(E::Fence, 1)]);
        assert_eq!(a.server_up(now + 2).actions, []);
        assert_eq!(a.stats().unexpected_server_reports, 1);
        // The server fails: the leader resigns and becomes a follower.
        let out = a.server_stopped(now + 3);
        assert_eq!(
            out.actions,
            [
                persist(E::Stop, 1),
                send(Dest::Others, MsgType::Resignation, 1, 0)
            ]
        );
        assert_eq!((a.role(), a.server()), (Role::Follower, ServerState::Down));
        assert!(in_election_window(out.deadline_ms, now + 3));
        assert_eq!(a.server_stopped(now + 4).actions, []);
        assert_eq!(a.stats().unexpected_server_reports, 2);
        a.check_invariants();
    }

    #[test]
    fn a_server_that_comes_up_while_stopping_still_records_its_fence() {
        let (mut a, now) = leader();
        a.on_message(msg(MsgType::Heartbeat, 2, 1), now + 10);
        assert_eq!(a.server_up(now + 11).actions, [persist(E::Fence, 1)]);
        assert_eq!(
            a.server(),
            ServerState::Stopping {
                term: Term(1),
                up: true
            }
        );
    }

    #[test]
    fn shutdown_stops_the_server_then_resigns_and_ends() {
        let (mut a, now) = leader();
        a.server_up(now);
        assert_eq!(a.shutdown(now + 1).actions, [StopServer]);
        assert_eq!(a.phase(), Phase::ShuttingDown);
        // Still the leader while the server stops: heartbeats go on, and
        // messages are ignored (no votes on the way out).
        let (out, at) = fire(&mut a);
        assert_eq!(out.actions, [send(Dest::Others, MsgType::Heartbeat, 1, 0)]);
        assert_eq!(
            a.on_message(msg(MsgType::RequestVote, 5, 1), at).actions,
            []
        );
        assert_eq!(a.shutdown(at).actions, []);
        let out = a.server_stopped(at + 1);
        assert_eq!(
            out.actions,
            [
                persist(E::Stop, 1),
                send(Dest::Others, MsgType::Resignation, 1, 0),
                persist(E::End, 1),
            ]
        );
        assert_eq!(out.deadline_ms, None);
        assert_eq!(a.phase(), Phase::Ended);
        assert_eq!(a.on_timer(at + 100_000).actions, []);
        a.check_invariants();
    }

    #[test]
    fn shutdown_without_a_server_ends_at_once() {
        let mut a = agent(2, &[0, 1, 2]);
        a.start(&[], 0);
        a.on_message(msg(MsgType::Heartbeat, 4, 0), 10);
        let out = a.shutdown(20);
        assert_eq!(out.actions, [persist(E::End, 4)]);
        assert_eq!((out.deadline_ms, a.phase()), (None, Phase::Ended));
    }

    #[test]
    fn a_split_election_of_two_slots_resolves_to_the_lower_slot() {
        let mut low = agent(0, &[0, 1]);
        let mut high = agent(1, &[0, 1]);
        low.start(&[], 0);
        high.start(&[], 0);
        fire(&mut low);
        fire(&mut high);
        assert!(low.is_leader() && high.is_leader());
        assert_eq!((low.term(), high.term()), (Term(1), Term(1)));
        assert_eq!(
            low.on_message(msg(MsgType::Heartbeat, 1, 1), 1_000).actions,
            []
        );
        assert!(low.is_leader());
        let out = high.on_message(msg(MsgType::Heartbeat, 1, 0), 1_000);
        assert_eq!(out.actions, [StopServer]);
        assert_eq!(
            (high.role(), high.leader()),
            (Role::Follower, Some(SlotNr(0)))
        );
        assert_eq!(out.deadline_ms, Some(1_000 + HB_MS));
        assert_eq!(low.stats().split_leaders + high.stats().split_leaders, 2);
        high.check_invariants();
    }

    #[test]
    fn a_split_leader_whose_server_is_up_keeps_leading() {
        let mut high = agent(1, &[0, 1]);
        high.start(&[], 0);
        let (_, now) = fire(&mut high);
        high.server_up(now + 1);
        // The server fenced slot 0; its heartbeat was sent before that.
        let out = high.on_message(msg(MsgType::Heartbeat, 1, 0), now + 2);
        assert_eq!(out.actions, []);
        assert!(high.is_leader());
        assert_eq!(high.stats().split_leaders, 1);
    }

    #[test]
    fn time_never_goes_backwards() {
        let mut a = agent(0, &[0, 1, 2]);
        let out = a.start(&[], 10_000);
        let d = out.deadline_ms.unwrap();
        assert!(d >= 10_000 + ELECT_MIN_MS);
        assert_eq!(a.on_timer(0).actions, []);
        // A vote given "at time 5" restarts the timeout from 10 000.
        let out = a.on_message(msg(MsgType::RequestVote, 1, 1), 5);
        assert!(in_election_window(out.deadline_ms, 10_000));
    }

    #[test]
    fn the_greatest_term_does_not_overflow() {
        // Quorum blocks that hold the greatest term (written before terms
        // were bounded) leave it there; no election can overflow it.
        let mut a = agent(0, &[0, 1, 2]);
        a.start(&blocks(&[(1, &[(E::Term, u64::MAX, 1)])]), 0);
        let (out, _) = fire(&mut a);
        assert_eq!(out.actions, []);
        assert_eq!(a.stats().terms_exhausted, 1);
        assert_eq!((a.role(), a.term()), (Role::Follower, Term(u64::MAX)));
    }
}
