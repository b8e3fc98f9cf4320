//! The election agent of one quorum slot: the state machine the module
//! comment describes, its inputs, its ordered outputs and its invariants.

use super::blocks::EventKind;
use super::blocks::{elected_unstopped, greatest_term};
use super::msg::{Message, MsgType};
use super::{SlotNr, SlotSet, Term};
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
    /// ([`record_events`](super::blocks::record_events)), and flush.
    Persist(Vec<(EventKind, Term)>),
    Send {
        to: Dest,
        msg: Message,
    },
    /// Start the server for this term. It fences old leaders first
    /// ([`leaders_to_fence`](super::blocks::leaders_to_fence)), then calls [`Agent::server_up`]; whenever it
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
mod tests;
