//! Quorum: electing the mount that runs the server, and reading the quorum
//! blocks to find that server and the old leaders it must fence first.
//!
//! # What it is
//!
//! mkfs configures up to 15 quorum slots (the super block's `qconf`). A mount
//! that uses a slot runs one election [`Agent`]: a simplified Raft leader
//! election without a log. Agents exchange 32-byte UDP [`Message`]s and record
//! what they did as events in their own slot's quorum block (the format
//! crate's `quorum` module). The agent that wins an election starts the
//! server; clients find that server through the quorum blocks
//! ([`current_server`]); the new server first fences every older leader that
//! may still be running ([`leaders_to_fence`]).
//!
//! The agent is a state machine without I/O. Its inputs are [`Agent::start`]
//! (with every configured slot's quorum block), [`Agent::on_message`],
//! [`Agent::on_timer`], [`Agent::server_up`], [`Agent::server_stopped`] and
//! [`Agent::shutdown`], each with the current time in milliseconds of a
//! monotonic clock. Each returns an [`Output`]: [`Action`]s (events to
//! persist, messages to send, the server to start or stop) and the deadline
//! at which the driver calls `on_timer` next. Randomness (the election
//! timeout's jitter) comes from an [`Rng`] the caller seeds, so a seeded
//! simulation replays exactly. The driver owns the UDP socket, the device,
//! the clock and the server thread, and decides nothing.
//!
//! # The election
//!
//! Roles are follower, candidate and leader; every agent has a term.
//!
//! - At start the term is the greatest term of any event in any slot's
//!   block, so a restarted member is not far behind, and a BEGIN event is
//!   written. If some slot's ELECT term is greater than its STOP term a
//!   server may be running, and the first timeout is the heartbeat timeout;
//!   otherwise it is the election timeout.
//! - A message with a smaller term is ignored. A greater term makes us a
//!   follower of that term with no vote cast (a leader stops its server) and
//!   is persisted as a TERM event.
//! - A follower votes once per term, for the first candidate that asks.
//! - A heartbeat makes a candidate a follower and pushes the timeout out to
//!   the heartbeat timeout. A resignation of our term makes a follower use
//!   the short election timeout.
//! - When a follower or candidate times out and its own server is fully
//!   down, it becomes a candidate: term + 1, a vote for itself, a TERM event,
//!   REQUEST_VOTE to the others. (If its server is still stopping it waits
//!   another election timeout.)
//! - A candidate with the votes needed (a majority of the configured slots;
//!   1 with 1 or 2 slots) becomes leader: an ELECT event, a heartbeat to the
//!   others, and the server is started for that term.
//! - A leader sends heartbeats every [`HEARTBEAT_INTERVAL_MS`]. When its
//!   server reports up (it has fenced the old leaders) a FENCE event records
//!   it. When its server stops (an error, a lost term) the agent writes a
//!   STOP event, sends RESIGNATION and is a follower.
//! - At shutdown the server is stopped, then STOP, RESIGNATION and END.
//!
//! Timers: the election timeout is [`ELECT_MIN_MS`] plus a random
//! `0..ELECT_VAR_MS`; the follower heartbeat timeout is configured
//! ([`HEARTBEAT_TIMEOUT_DEFAULT_MS`], within
//! `HEARTBEAT_TIMEOUT_MIN_MS..=HEARTBEAT_TIMEOUT_MAX_MS`). The agent keeps one
//! deadline: a follower's or candidate's timeout, or a leader's next
//! heartbeat. Granting a vote restarts the election timeout, as in Raft, so
//! a voter does not stand while its candidate's first heartbeat is in
//! flight. Time given to the agent never goes backwards for it: an earlier
//! `now` than one already seen counts as that one. So the driver should use
//! a monotonic clock: a clock stepped back stalls the agent's timers, and a
//! leader's heartbeats, by the step.
//!
//! # Persistence before acting
//!
//! The actions of one output are ordered, and the driver must carry them out
//! in order: a [`Action::Persist`] must be written and flushed before any
//! later action of the list is carried out. If the write fails, the driver
//! carries out nothing more and stops the agent (and its server) as if the
//! mount had crashed. The agent always puts the write that records a term
//! (TERM) before a vote or a vote request in that term, and the ELECT write
//! before the first heartbeat of its leadership and before starting the
//! server. So whatever a crash interrupts, every vote and every claim of
//! leadership that left the mount is backed by its quorum block.
//!
//! The block has no field for the vote itself, so a restarted agent cannot
//! know whether it voted in the term it starts with. It withholds its vote in
//! that term ([`Vote::Withheld`]) and votes again only in greater terms.
//! Every term it ever voted in was persisted before the vote, so its start
//! term is at least that term: no slot votes twice in one term, across any
//! number of restarts, and two candidates cannot both gather a majority.
//!
//! # Fencing and stale leaders
//!
//! Elections alone can leave an old leader's server running: a leader cut
//! off from the others keeps its server until it hears a greater term. So a
//! new server first fences the old leaders the quorum blocks show
//! ([`leaders_to_fence`]), and then refuses to serve if the blocks show a
//! newer election than its own ([`newer_election`]), which catches a leader
//! of an old term elected late by a delayed vote. Both read the blocks after
//! our ELECT was written. The simulation checks that, with both, no two
//! servers are ever up at once.
//!
//! # Invariants ([`Agent::check_invariants`])
//!
//! A leader's server was started for its term and runs (or stops during
//! shutdown); a candidate's server is down; a follower's server is down or
//! stopping. Leaders and candidates voted for themselves; a candidate has
//! fewer votes than needed and a leader at least that many. Votes come only
//! from configured slots. The server's term never exceeds ours.
//!
//! # Limits
//!
//! - With 1 or 2 slots one vote wins, so two members can both lead one term
//!   (a split election). The original relied on fencing alone: the first
//!   server up fences the other leader. Here, too, a leader that hears a
//!   heartbeat of its own term from a lower slot steps down unless its
//!   server is already up, so a split resolves without fencing when the two
//!   hear each other before either server is up.
//! - There is no pre-vote: a member that was cut off and counted its term up
//!   deposes a working leader when it returns, as in the original.
//! - Membership is fixed at mkfs; the configuration version is not checked.
//! - Messages are checked (fsid, version, crc, slot) but not authenticated.

use crate::lock::Rid;
use crate::rng::Rng;
use scoutfs_format::block::Timespec;
use scoutfs_format::consts::QUORUM_MAX_SLOTS;
use scoutfs_format::quorum::{
    quorum_msg_crc, QuorumBlock, QuorumEvent, QuorumMessage, QUORUM_EVENT_BEGIN,
    QUORUM_EVENT_ELECT, QUORUM_EVENT_END, QUORUM_EVENT_FENCE, QUORUM_EVENT_STOP, QUORUM_EVENT_TERM,
    QUORUM_MESSAGE_SIZE, QUORUM_MSG_HEARTBEAT, QUORUM_MSG_REQUEST_VOTE, QUORUM_MSG_RESIGNATION,
    QUORUM_MSG_VOTE,
};
use scoutfs_format::super_block::QuorumConfig;
use scoutfs_format::SuperBlock;
use std::fmt;
use std::net::SocketAddr;
use zerocopy::FromBytes;

/// The fixed part of the election timeout.
pub const ELECT_MIN_MS: u64 = 250;
/// The election timeout adds a random `0..ELECT_VAR_MS`, so that candidates
/// of one term rarely split the votes.
pub const ELECT_VAR_MS: u64 = 100;
/// How often a leader sends heartbeats.
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// How long a follower waits for a heartbeat before it stands for election.
pub const HEARTBEAT_TIMEOUT_DEFAULT_MS: u64 = 10_000;
pub const HEARTBEAT_TIMEOUT_MIN_MS: u64 = 2_000;
pub const HEARTBEAT_TIMEOUT_MAX_MS: u64 = 60_000;

/// A quorum slot number, `0..QUORUM_MAX_SLOTS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotNr(pub u8);

impl fmt::Display for SlotNr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An election term. Terms only grow; 0 is the term before any election.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A set of quorum slots, as a bitmap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotSet(u16);

impl SlotSet {
    /// The slots configured in the super block.
    pub fn from_config(q: &QuorumConfig) -> SlotSet {
        let mut s = SlotSet::default();
        for (i, a) in q.slots.iter().enumerate() {
            if a.to_socket().is_some() {
                s.insert(SlotNr(i as u8));
            }
        }
        s
    }

    pub fn contains(self, slot: SlotNr) -> bool {
        (slot.0 as usize) < QUORUM_MAX_SLOTS && self.0 & (1 << slot.0) != 0
    }

    /// Adds a slot; false if it was already in the set.
    pub fn insert(&mut self, slot: SlotNr) -> bool {
        assert!(
            (slot.0 as usize) < QUORUM_MAX_SLOTS,
            "slot {slot} out of range"
        );
        let had = self.contains(slot);
        self.0 |= 1 << slot.0;
        !had
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The slots in ascending order.
    pub fn iter(self) -> impl Iterator<Item = SlotNr> {
        (0..QUORUM_MAX_SLOTS as u8)
            .map(SlotNr)
            .filter(move |&s| self.contains(s))
    }

    /// Votes that win an election among these slots: a majority, except
    /// that 1 or 2 slots need only 1 (so 2 slots can elect with one down).
    pub fn votes_needed(self) -> usize {
        match self.len() {
            0..=2 => 1,
            n => n / 2 + 1,
        }
    }
}

impl FromIterator<SlotNr> for SlotSet {
    fn from_iter<I: IntoIterator<Item = SlotNr>>(iter: I) -> SlotSet {
        let mut s = SlotSet::default();
        for slot in iter {
            s.insert(slot);
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Messages

/// What a message says (the format's `QUORUM_MSG_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MsgType {
    RequestVote,
    Vote,
    Heartbeat,
    Resignation,
}

impl MsgType {
    pub const ALL: [MsgType; 4] = [
        MsgType::RequestVote,
        MsgType::Vote,
        MsgType::Heartbeat,
        MsgType::Resignation,
    ];

    fn wire(self) -> u8 {
        match self {
            MsgType::RequestVote => QUORUM_MSG_REQUEST_VOTE,
            MsgType::Vote => QUORUM_MSG_VOTE,
            MsgType::Heartbeat => QUORUM_MSG_HEARTBEAT,
            MsgType::Resignation => QUORUM_MSG_RESIGNATION,
        }
    }

    fn from_wire(ty: u8) -> Option<MsgType> {
        MsgType::ALL.into_iter().find(|t| t.wire() == ty)
    }

    pub fn name(self) -> &'static str {
        scoutfs_format::quorum::quorum_msg_name(self.wire())
    }
}

/// A decoded election message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub ty: MsgType,
    pub term: Term,
    pub from: SlotNr,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} term {} from slot {}",
            self.ty.name(),
            self.term,
            self.from
        )
    }
}

/// Why a datagram is not a message for us. The driver drops it and counts
/// it by kind; none of these is fatal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("quorum message of {len} bytes, not {QUORUM_MESSAGE_SIZE}")]
    Length { len: usize },
    #[error("quorum message crc {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("quorum message for fsid {got:#018x}, not ours ({expected:#018x})")]
    Fsid { got: u64, expected: u64 },
    #[error("quorum message of format version {got}, not ours ({expected})")]
    Version { got: u64, expected: u64 },
    #[error("quorum message padding is not zero")]
    Padding,
    #[error("quorum message of unknown type {0}")]
    Type(u8),
    #[error("quorum message from slot {0}, out of range")]
    SlotRange(u8),
    #[error("quorum message from slot {0}, which is not configured")]
    SlotUnconfigured(u8),
}

/// Encodes and decodes the messages of one filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageCodec {
    pub fsid: u64,
    /// The format version (the super block's `fmt_vers`).
    pub version: u64,
    /// The configured slots: messages from others are refused.
    pub slots: SlotSet,
}

impl MessageCodec {
    /// The codec for the filesystem of a super block.
    pub fn for_super(sb: &SuperBlock) -> MessageCodec {
        MessageCodec {
            fsid: sb.hdr.fsid.get(),
            version: sb.fmt_vers.get(),
            slots: SlotSet::from_config(&sb.qconf),
        }
    }

    pub fn encode(&self, msg: &Message) -> [u8; QUORUM_MESSAGE_SIZE] {
        QuorumMessage {
            fsid: self.fsid.into(),
            version: self.version.into(),
            term: msg.term.0.into(),
            ty: msg.ty.wire(),
            from: msg.from.0,
            pad: [0; 2],
            crc: 0.into(),
        }
        .to_bytes()
    }

    /// Decodes any bytes: a message for us, or why not. The crc is checked
    /// first, so damage is reported as damage and not as a foreign message.
    pub fn decode(&self, bytes: &[u8]) -> Result<Message, MessageError> {
        let len = bytes.len();
        let m = QuorumMessage::read_from_bytes(bytes).map_err(|_| MessageError::Length { len })?;
        let computed = quorum_msg_crc(bytes);
        if m.crc.get() != computed {
            let stored = m.crc.get();
            return Err(MessageError::Crc { stored, computed });
        }
        if m.fsid.get() != self.fsid {
            let (got, expected) = (m.fsid.get(), self.fsid);
            return Err(MessageError::Fsid { got, expected });
        }
        if m.version.get() != self.version {
            let (got, expected) = (m.version.get(), self.version);
            return Err(MessageError::Version { got, expected });
        }
        if m.pad != [0; 2] {
            return Err(MessageError::Padding);
        }
        let ty = MsgType::from_wire(m.ty).ok_or(MessageError::Type(m.ty))?;
        if m.from as usize >= QUORUM_MAX_SLOTS {
            return Err(MessageError::SlotRange(m.from));
        }
        if !self.slots.contains(SlotNr(m.from)) {
            return Err(MessageError::SlotUnconfigured(m.from));
        }
        Ok(Message {
            ty,
            term: Term(m.term.get()),
            from: SlotNr(m.from),
        })
    }
}

// ---------------------------------------------------------------------------
// Quorum block events

/// The kinds of quorum block events (the format's `QUORUM_EVENT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    Begin,
    Term,
    Elect,
    Fence,
    Stop,
    End,
}

impl EventKind {
    /// The event's index in a quorum block.
    pub fn index(self) -> usize {
        match self {
            EventKind::Begin => QUORUM_EVENT_BEGIN,
            EventKind::Term => QUORUM_EVENT_TERM,
            EventKind::Elect => QUORUM_EVENT_ELECT,
            EventKind::Fence => QUORUM_EVENT_FENCE,
            EventKind::Stop => QUORUM_EVENT_STOP,
            EventKind::End => QUORUM_EVENT_END,
        }
    }
}

/// Applies one write of events to a slot's block: the block's `write_nr`
/// grows by one and stamps every event written. The driver calls this for
/// each [`Action::Persist`] and writes the block.
pub fn record_events(
    block: &mut QuorumBlock,
    rid: Rid,
    events: &[(EventKind, Term)],
    ts: Timespec,
) {
    // A block that already counted to u64::MAX stays there; its events still
    // never exceed it, which is all readers check.
    let nr = block.write_nr.get().saturating_add(1);
    block.write_nr = nr.into();
    for &(kind, term) in events {
        block.events[kind.index()] = QuorumEvent {
            write_nr: nr.into(),
            rid: rid.0.into(),
            term: term.0.into(),
            ts,
        };
    }
}

/// The term of one event of a block (0 if never written).
pub fn event_term(block: &QuorumBlock, kind: EventKind) -> Term {
    Term(block.events[kind.index()].term.get())
}

fn event_rid(block: &QuorumBlock, kind: EventKind) -> Rid {
    Rid(block.events[kind.index()].rid.get())
}

/// The greatest term of any event in any of the blocks.
pub fn greatest_term(blocks: &[(SlotNr, QuorumBlock)]) -> Term {
    blocks
        .iter()
        .flat_map(|(_, qb)| qb.events.iter().map(|e| Term(e.term.get())))
        .max()
        .unwrap_or_default()
}

/// A slot's server that may be running: its ELECT term is greater than its
/// STOP term.
fn elected_unstopped(block: &QuorumBlock) -> bool {
    event_term(block, EventKind::Elect) > event_term(block, EventKind::Stop)
}

/// Where clients find the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLocation {
    pub slot: SlotNr,
    pub addr: SocketAddr,
    pub rid: Rid,
    pub term: Term,
}

/// The server clients should connect to: among configured slots whose
/// ELECT term is greater than their STOP term, the greatest ELECT term (the
/// lower slot on a tie, the one that keeps leading a split election).
pub fn current_server(
    qconf: &QuorumConfig,
    blocks: &[(SlotNr, QuorumBlock)],
) -> Option<ServerLocation> {
    blocks
        .iter()
        .filter(|(_, qb)| elected_unstopped(qb))
        .filter_map(|(slot, qb)| {
            let addr = qconf.slots.get(slot.0 as usize)?.to_socket()?;
            Some(ServerLocation {
                slot: *slot,
                addr,
                rid: event_rid(qb, EventKind::Elect),
                term: event_term(qb, EventKind::Elect),
            })
        })
        .max_by_key(|l| (l.term, std::cmp::Reverse(l.slot)))
}

/// A previous leader that may still run a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OldLeader {
    pub slot: SlotNr,
    pub rid: Rid,
    pub term: Term,
}

/// The old leaders a new server of `our_term` (run by mount `our_rid`) must
/// fence before it serves, from every configured slot's block.
///
/// Per slot, at most two: the ELECT mount if its ELECT term is greater than
/// its STOP term; and the FENCE mount if STOP < FENCE < ELECT, an older
/// server of the slot that finished fencing (so it served), never recorded a
/// stop, and was followed by a newer election of the slot. Skipped: entries
/// older than the greatest FENCE term of any slot (that leader fenced them),
/// newer than our term (a newer leader deals with us), and our own mount.
/// Each mount appears once (at its greatest term), ordered by slot and term.
pub fn leaders_to_fence(
    blocks: &[(SlotNr, QuorumBlock)],
    our_term: Term,
    our_rid: Rid,
) -> Vec<OldLeader> {
    let fenced_below = blocks
        .iter()
        .map(|(_, qb)| event_term(qb, EventKind::Fence))
        .max()
        .unwrap_or_default();
    let mut found = Vec::new();
    for (slot, qb) in blocks {
        let elect = event_term(qb, EventKind::Elect);
        let fence = event_term(qb, EventKind::Fence);
        let stop = event_term(qb, EventKind::Stop);
        if elect > stop {
            let rid = event_rid(qb, EventKind::Elect);
            found.push(OldLeader {
                slot: *slot,
                rid,
                term: elect,
            });
        }
        if fence > stop && fence < elect {
            let rid = event_rid(qb, EventKind::Fence);
            found.push(OldLeader {
                slot: *slot,
                rid,
                term: fence,
            });
        }
    }
    found.retain(|o| o.term >= fenced_below && o.term <= our_term && o.rid != our_rid);
    found.sort_by_key(|o| (o.rid, std::cmp::Reverse(o.term)));
    found.dedup_by_key(|o| o.rid);
    found.sort_by_key(|o| (o.slot, o.term, o.rid));
    found
}

/// A newer election than `our_term`, if any block shows one: the slot and
/// term of the greatest ELECT term above ours.
///
/// A server checks this after it fenced and before it serves, and stops if
/// there is one. Fencing alone misses a leader whose last vote was delayed:
/// it may win an old term after a newer leader read the blocks to fence.
/// Then the newer ELECT was written before that read, the old ELECT after
/// it, and so before the old server's own check, which finds the newer one.
pub fn newer_election(blocks: &[(SlotNr, QuorumBlock)], our_term: Term) -> Option<(SlotNr, Term)> {
    blocks
        .iter()
        .map(|(slot, qb)| (*slot, event_term(qb, EventKind::Elect)))
        .filter(|&(_, term)| term > our_term)
        .max_by_key(|&(slot, term)| (term, std::cmp::Reverse(slot)))
}

// ---------------------------------------------------------------------------
// The agent

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
    /// ([`record_events`]), and flush.
    Persist(Vec<(EventKind, Term)>),
    Send {
        to: Dest,
        msg: Message,
    },
    /// Start the server for this term. It fences old leaders first
    /// ([`leaders_to_fence`]), then calls [`Agent::server_up`]; whenever it
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
    /// Messages from our own slot (two mounts on one slot?) or an
    /// unconfigured one.
    pub foreign_messages: u64,
    /// Messages and timers before start, during shutdown or after the end.
    pub ignored_inputs: u64,
    /// Server reports that match no server we asked for.
    pub unexpected_server_reports: u64,
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
    use crate::rng::Rng;
    use proptest::prelude::{any, prop_assert_eq, proptest};
    use scoutfs_format::super_block::InetAddr;
    use Action::{Persist, Send, StartServer, StopServer};
    use EventKind as E;

    const FSID: u64 = 0xf5_1d00;
    const HB_MS: u64 = HEARTBEAT_TIMEOUT_DEFAULT_MS;

    fn set(nrs: &[u8]) -> SlotSet {
        nrs.iter().map(|&n| SlotNr(n)).collect()
    }

    fn agent(slot: u8, slots: &[u8]) -> Agent {
        let cfg = AgentConfig {
            slot: SlotNr(slot),
            slots: set(slots),
            rid: Rid(0x100 + slot as u64),
            heartbeat_timeout_ms: HB_MS,
        };
        Agent::new(cfg, Rng::new(7 + slot as u64)).unwrap()
    }

    fn msg(ty: MsgType, term: u64, from: u8) -> Message {
        Message {
            ty,
            term: Term(term),
            from: SlotNr(from),
        }
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

    /// A block with the given events, each in its own write.
    fn block(events: &[(EventKind, u64, u64)]) -> QuorumBlock {
        let mut qb = QuorumBlock::default();
        for &(kind, term, rid) in events {
            record_events(
                &mut qb,
                Rid(rid),
                &[(kind, Term(term))],
                Timespec::new(1, 0),
            );
        }
        qb
    }

    /// Events of one slot: (kind, term, rid).
    type Events<'a> = &'a [(EventKind, u64, u64)];

    fn blocks(per_slot: &[(u8, Events)]) -> Vec<(SlotNr, QuorumBlock)> {
        per_slot
            .iter()
            .map(|&(s, evs)| (SlotNr(s), block(evs)))
            .collect()
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

    fn codec() -> MessageCodec {
        MessageCodec {
            fsid: FSID,
            version: 1,
            slots: set(&[0, 1, 2, 14]),
        }
    }

    #[test]
    fn codec_round_trips_every_type() {
        let c = codec();
        for ty in MsgType::ALL {
            for (term, from) in [(0, 0), (9, 14), (u64::MAX, 2)] {
                let m = msg(ty, term, from);
                let b = c.encode(&m);
                assert_eq!(c.decode(&b), Ok(m));
                assert_eq!(b[24], ty.wire());
            }
        }
        let m = msg(MsgType::Heartbeat, 4, 2);
        assert_eq!(m.to_string(), "heartbeat term 4 from slot 2");
    }

    #[test]
    fn codec_refuses_each_kind_of_bad_datagram() {
        let c = codec();
        let good = c.encode(&msg(MsgType::Vote, 3, 1));
        for len in [0, 31, 33] {
            let mut b = good.to_vec();
            b.resize(len, 0);
            assert_eq!(c.decode(&b), Err(MessageError::Length { len }));
        }
        let mut b = good;
        b[16] ^= 1;
        assert!(matches!(c.decode(&b), Err(MessageError::Crc { .. })));
        let other = MessageCodec { fsid: 1, ..c };
        let b = other.encode(&msg(MsgType::Vote, 3, 1));
        assert_eq!(
            c.decode(&b),
            Err(MessageError::Fsid {
                got: 1,
                expected: FSID
            })
        );
        let other = MessageCodec { version: 2, ..c };
        let b = other.encode(&msg(MsgType::Vote, 3, 1));
        assert_eq!(
            c.decode(&b),
            Err(MessageError::Version {
                got: 2,
                expected: 1
            })
        );
        // Valid crcs over invalid fields.
        let raw = |ty: u8, from: u8, pad: [u8; 2]| {
            QuorumMessage {
                fsid: FSID.into(),
                version: 1.into(),
                term: 3.into(),
                ty,
                from,
                pad,
                crc: 0.into(),
            }
            .to_bytes()
        };
        assert_eq!(
            c.decode(&raw(1, 1, [0, 0])).map(|m| m.ty),
            Ok(MsgType::Vote)
        );
        assert_eq!(c.decode(&raw(1, 1, [0, 9])), Err(MessageError::Padding));
        assert_eq!(c.decode(&raw(4, 1, [0, 0])), Err(MessageError::Type(4)));
        assert_eq!(c.decode(&raw(255, 1, [0, 0])), Err(MessageError::Type(255)));
        assert_eq!(
            c.decode(&raw(1, 15, [0, 0])),
            Err(MessageError::SlotRange(15))
        );
        assert_eq!(
            c.decode(&raw(1, 200, [0, 0])),
            Err(MessageError::SlotRange(200))
        );
        assert_eq!(
            c.decode(&raw(1, 3, [0, 0])),
            Err(MessageError::SlotUnconfigured(3))
        );
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let c = codec();
        let good = c.encode(&msg(MsgType::RequestVote, 77, 14));
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good;
                b[i] ^= 1 << bit;
                assert!(c.decode(&b).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let c = codec();
            if let Ok(m) = c.decode(&bytes) {
                prop_assert_eq!(&c.encode(&m)[..], &bytes[..]);
            }
        }

        #[test]
        fn decoding_valid_messages_with_noise(term in any::<u64>(), ty in 0u8..6, from in 0u8..20,
                                              fsid_bit in 0u32..3) {
            let c = codec();
            let fsid = if fsid_bit == 0 { FSID } else { FSID ^ (1 << fsid_bit) };
            let b = QuorumMessage {
                fsid: fsid.into(), version: 1.into(), term: term.into(), ty, from,
                pad: [0; 2], crc: 0.into(),
            }.to_bytes();
            let ok = fsid == FSID && ty < 4 && c.slots.contains(SlotNr(from));
            prop_assert_eq!(c.decode(&b).is_ok(), ok);
        }
    }

    #[test]
    fn votes_needed_is_a_majority_except_for_one_or_two_slots() {
        let needed: Vec<usize> = (1..=15u8)
            .map(|n| (0..n).map(SlotNr).collect::<SlotSet>().votes_needed())
            .collect();
        assert_eq!(needed, [1, 1, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8]);
    }

    #[test]
    fn slot_sets_come_from_the_quorum_config() {
        let mut q = QuorumConfig::default();
        for (n, port) in [(3usize, 7001u16), (9, 7002)] {
            q.slots[n] = InetAddr::from_socket(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        let s = SlotSet::from_config(&q);
        assert_eq!(s.iter().collect::<Vec<_>>(), [SlotNr(3), SlotNr(9)]);
        assert_eq!(s.len(), 2);
        assert!(!s.contains(SlotNr(4)) && !s.contains(SlotNr(200)));
        let mut s2 = s;
        assert!(!s2.insert(SlotNr(3)));
        assert!(s2.insert(SlotNr(14)));
        assert!(SlotSet::default().is_empty());
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
        let mut a = agent(0, &[0, 1, 2]);
        a.start(&[], 0);
        a.on_message(msg(MsgType::Heartbeat, u64::MAX, 1), 10);
        let (out, _) = fire(&mut a);
        assert_eq!(out.actions, []);
        assert_eq!(a.stats().terms_exhausted, 1);
        assert_eq!((a.role(), a.term()), (Role::Follower, Term(u64::MAX)));
    }

    #[test]
    fn recorded_events_are_stamped_with_the_write_nr() {
        let mut qb = QuorumBlock::default();
        let ts = Timespec::new(5, 6);
        record_events(&mut qb, Rid(9), &[(E::Begin, Term(3))], ts);
        record_events(
            &mut qb,
            Rid(9),
            &[(E::Stop, Term(2)), (E::End, Term(3))],
            ts,
        );
        assert_eq!(qb.write_nr.get(), 2);
        let e = qb.events[QUORUM_EVENT_BEGIN];
        assert_eq!((e.write_nr.get(), e.rid.get(), e.term.get()), (1, 9, 3));
        assert_eq!(qb.events[QUORUM_EVENT_STOP].write_nr.get(), 2);
        assert_eq!(event_term(&qb, E::End), Term(3));
        assert_eq!(event_term(&qb, E::Elect), Term(0));
        assert!(qb.validate().is_ok());
        let mut full = QuorumBlock {
            write_nr: u64::MAX.into(),
            ..Default::default()
        };
        record_events(&mut full, Rid(1), &[(E::Term, Term(1))], ts);
        assert!(full.validate().is_ok());
    }

    fn qconf(slots: &[(u8, u16)]) -> QuorumConfig {
        let mut q = QuorumConfig::default();
        for &(n, port) in slots {
            q.slots[n as usize] = InetAddr::from_socket(SocketAddr::from(([127, 0, 0, 2], port)));
        }
        q
    }

    #[test]
    fn clients_find_the_greatest_unstopped_election() {
        let q = qconf(&[(0, 7000), (1, 7001), (2, 7002)]);
        assert_eq!(current_server(&q, &[]), None);
        let bs = blocks(&[
            (0, &[(E::Elect, 3, 10), (E::Stop, 3, 10)]),
            (1, &[(E::Elect, 5, 11)]),
            (2, &[(E::Elect, 4, 12)]),
            // Not configured: ignored.
            (7, &[(E::Elect, 9, 13)]),
        ]);
        let s = current_server(&q, &bs).unwrap();
        assert_eq!((s.slot, s.rid, s.term), (SlotNr(1), Rid(11), Term(5)));
        assert_eq!(s.addr.port(), 7001);
        // A split election: the lower slot, which keeps leading.
        let bs = blocks(&[(2, &[(E::Elect, 6, 12)]), (1, &[(E::Elect, 6, 11)])]);
        assert_eq!(current_server(&q, &bs).unwrap().slot, SlotNr(1));
        let bs = blocks(&[(1, &[(E::Elect, 6, 11), (E::Stop, 6, 11)])]);
        assert_eq!(current_server(&q, &bs), None);
    }

    fn old(slot: u8, rid: u64, term: u64) -> OldLeader {
        OldLeader {
            slot: SlotNr(slot),
            rid: Rid(rid),
            term: Term(term),
        }
    }

    #[test]
    fn a_new_leader_fences_elected_unstopped_slots() {
        let bs = blocks(&[
            // Stopped cleanly: nothing to fence.
            (0, &[(E::Elect, 2, 10), (E::Fence, 2, 10), (E::Stop, 2, 10)]),
            // Elected and never stopped.
            (1, &[(E::Elect, 4, 11), (E::Fence, 4, 11)]),
            // Elected, not yet fenced, never stopped.
            (2, &[(E::Elect, 3, 12)]),
            // Us, just elected.
            (3, &[(E::Elect, 5, 99)]),
        ]);
        let f = leaders_to_fence(&bs, Term(5), Rid(99));
        // Slot 2's term 3 is older than slot 1's fence of term 4: done.
        assert_eq!(f, [old(1, 11, 4)]);
    }

    #[test]
    fn a_slot_can_hold_two_old_leaders() {
        // Slot 1 served term 3 as mount 11 (fenced, never stopped), then its
        // next mount 21 won term 5 and never stopped either.
        let bs = blocks(&[
            (
                1,
                &[(E::Elect, 3, 11), (E::Fence, 3, 11), (E::Elect, 5, 21)],
            ),
            (2, &[(E::Elect, 6, 99)]),
        ]);
        let f = leaders_to_fence(&bs, Term(6), Rid(99));
        assert_eq!(f, [old(1, 11, 3), old(1, 21, 5)]);
        // Our own slot's older server is fenced too, but never we ourselves.
        let bs = blocks(&[(
            2,
            &[(E::Elect, 3, 11), (E::Fence, 3, 11), (E::Elect, 6, 99)],
        )]);
        assert_eq!(leaders_to_fence(&bs, Term(6), Rid(99)), [old(2, 11, 3)]);
        // A fence stopped later is not an old leader.
        let bs = blocks(&[(1, &[(E::Fence, 3, 11), (E::Stop, 3, 11), (E::Elect, 5, 21)])]);
        assert_eq!(leaders_to_fence(&bs, Term(6), Rid(99)), [old(1, 21, 5)]);
    }

    #[test]
    fn fencing_skips_newer_terms_and_already_fenced_ones() {
        let bs = blocks(&[
            (0, &[(E::Elect, 8, 10)]),
            (1, &[(E::Elect, 4, 11)]),
            (2, &[(E::Elect, 5, 12), (E::Fence, 5, 12)]),
        ]);
        // Term 8 is newer than ours; term 4 older than the fence of term 5.
        assert_eq!(leaders_to_fence(&bs, Term(7), Rid(99)), [old(2, 12, 5)]);
        // A split election's other leader of our own term is fenced.
        let bs = blocks(&[(0, &[(E::Elect, 7, 10)]), (1, &[(E::Elect, 7, 99)])]);
        assert_eq!(leaders_to_fence(&bs, Term(7), Rid(99)), [old(0, 10, 7)]);
        // One mount is fenced once, at its greatest term.
        let bs = blocks(&[
            (
                0,
                &[(E::Elect, 3, 10), (E::Fence, 3, 10), (E::Elect, 5, 10)],
            ),
            (1, &[(E::Elect, 6, 99)]),
        ]);
        assert_eq!(leaders_to_fence(&bs, Term(6), Rid(99)), [old(0, 10, 5)]);
        assert_eq!(leaders_to_fence(&[], Term(6), Rid(99)), []);
    }

    #[test]
    fn a_newer_election_supersedes_a_server() {
        let bs = blocks(&[
            (0, &[(E::Elect, 4, 10), (E::Stop, 4, 10)]),
            (1, &[(E::Elect, 6, 11)]),
            (2, &[(E::Elect, 5, 12)]),
        ]);
        // Stopped or not, a newer ELECT means our term is over.
        assert_eq!(newer_election(&bs, Term(3)), Some((SlotNr(1), Term(6))));
        assert_eq!(newer_election(&bs, Term(5)), Some((SlotNr(1), Term(6))));
        assert_eq!(newer_election(&bs, Term(6)), None);
        assert_eq!(newer_election(&[], Term(0)), None);
    }

    #[test]
    fn the_greatest_term_covers_every_event_of_every_slot() {
        let bs = blocks(&[
            (0, &[(E::Term, 3, 1), (E::End, 2, 1)]),
            (5, &[(E::Begin, 12, 2)]),
        ]);
        assert_eq!(greatest_term(&bs), Term(12));
        assert_eq!(greatest_term(&[]), Term(0));
    }
}
