//! Quorum: electing the mount that runs the server, and reading the quorum
//! blocks to find that server and the old leaders it must fence first.
//!
//! # What it is
//!
//! mkfs configures up to 15 quorum slots (the super block's `qconf`). A mount
//! that uses a slot runs one election [`Agent`](agent::Agent): a simplified Raft leader
//! election without a log. Agents exchange 32-byte UDP [`Message`](msg::Message)s and record
//! what they did as events in their own slot's quorum block (the format
//! crate's `quorum` module). The agent that wins an election starts the
//! server; clients find that server through the quorum blocks
//! ([`current_server`](blocks::current_server)); the new server first fences every older leader that
//! may still be running ([`leaders_to_fence`](blocks::leaders_to_fence)).
//!
//! The agent is a state machine without I/O. Its inputs are [`Agent::start`](agent::Agent::start)
//! (with every configured slot's quorum block), [`Agent::on_message`](agent::Agent::on_message),
//! [`Agent::on_timer`](agent::Agent::on_timer), [`Agent::server_up`](agent::Agent::server_up), [`Agent::server_stopped`](agent::Agent::server_stopped) and
//! [`Agent::shutdown`](agent::Agent::shutdown), each with the current time in milliseconds of a
//! monotonic clock. Each returns an [`Output`](agent::Output): [`Action`](agent::Action)s (events to
//! persist, messages to send, the server to start or stop) and the deadline
//! at which the driver calls `on_timer` next. Randomness (the election
//! timeout's jitter) comes from an [`Rng`](crate::rng::Rng) the caller seeds, so a seeded
//! simulation replays exactly. The driver owns the UDP socket, the device,
//! the clock and the server thread, and decides nothing.
//!
//! [`QuorumDriver`](driver::QuorumDriver) (in `driver.rs`) is that driver for a real mount: one
//! thread, a UDP socket on the slot's address, quorum block writes on the
//! metadata device, and a [`ServerControl`](driver::ServerControl) the mount implements to start
//! and stop its server. [`find_server`](driver::find_server) is the client's reader of the
//! blocks.
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
//! - A leader sends heartbeats every [`HEARTBEAT_INTERVAL_MS`](agent::HEARTBEAT_INTERVAL_MS). When its
//!   server reports up (it has fenced the old leaders) a FENCE event records
//!   it. When its server stops (an error, a lost term) the agent writes a
//!   STOP event, sends RESIGNATION and is a follower.
//! - At shutdown the server is stopped, then STOP, RESIGNATION and END.
//!
//! Timers: the election timeout is [`ELECT_MIN_MS`](agent::ELECT_MIN_MS) plus a random
//! `0..ELECT_VAR_MS`; the follower heartbeat timeout is configured
//! ([`HEARTBEAT_TIMEOUT_DEFAULT_MS`](agent::HEARTBEAT_TIMEOUT_DEFAULT_MS), within
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
//! in order: a [`Action::Persist`](agent::Action::Persist) must be written and flushed before any
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
//! that term ([`Vote::Withheld`](agent::Vote::Withheld)) and votes again only in greater terms.
//! Every term it ever voted in was persisted before the vote, so its start
//! term is at least that term: no slot votes twice in one term, across any
//! number of restarts, and two candidates cannot both gather a majority.
//!
//! # Fencing and stale leaders
//!
//! Elections alone can leave an old leader's server running: a leader cut
//! off from the others keeps its server until it hears a greater term. So a
//! new server first fences the old leaders the quorum blocks show
//! ([`leaders_to_fence`](blocks::leaders_to_fence)), and then refuses to serve if the blocks show a
//! newer election than its own ([`newer_election`](blocks::newer_election)), which catches a leader
//! of an old term elected late by a delayed vote. Both read the blocks after
//! our ELECT was written. The simulation checks that, with both, no two
//! servers are ever up at once.
//!
//! # Invariants ([`Agent::check_invariants`](agent::Agent::check_invariants))
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
//! - Messages are checked (fsid, version, crc, slot) and authenticated with
//!   the cluster key (`cluster::auth`).

pub mod agent;
pub mod blocks;
pub mod driver;
pub mod msg;

use scoutfs_format::consts::QUORUM_MAX_SLOTS;
use scoutfs_format::super_block::QuorumConfig;
use std::fmt;

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

/// Helpers shared by the submodules' tests.
#[cfg(test)]
mod testing {
    use super::*;
    use crate::cluster::quorum::blocks::{record_events, EventKind};
    use crate::cluster::quorum::msg::{Message, MsgType};
    use crate::types::Rid;
    use scoutfs_format::block::Timespec;
    use scoutfs_format::quorum::QuorumBlock;

    pub(super) fn set(nrs: &[u8]) -> SlotSet {
        nrs.iter().map(|&n| SlotNr(n)).collect()
    }

    pub(super) fn msg(ty: MsgType, term: u64, from: u8) -> Message {
        Message {
            ty,
            term: Term(term),
            from: SlotNr(from),
        }
    }

    /// A block with the given events, each in its own write.
    pub(super) fn block(events: &[(EventKind, u64, u64)]) -> QuorumBlock {
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
    pub(super) type Events<'a> = &'a [(EventKind, u64, u64)];

    pub(super) fn blocks(per_slot: &[(u8, Events)]) -> Vec<(SlotNr, QuorumBlock)> {
        per_slot
            .iter()
            .map(|&(s, evs)| (SlotNr(s), block(evs)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scoutfs_format::super_block::InetAddr;
    use std::net::SocketAddr;

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
}
