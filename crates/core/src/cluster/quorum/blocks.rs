//! Quorum block events as the agent writes them, and the pure readers of
//! all slots' blocks: the greatest term, where clients find the server, the
//! old leaders a new server fences, and whether a newer election exists.

use super::{SlotNr, Term};
use crate::types::Rid;
use scoutfs_format::block::Timespec;
use scoutfs_format::quorum::{
    QuorumBlock, QuorumEvent, QUORUM_EVENT_BEGIN, QUORUM_EVENT_ELECT, QUORUM_EVENT_END,
    QUORUM_EVENT_FENCE, QUORUM_EVENT_STOP, QUORUM_EVENT_TERM,
};
use scoutfs_format::super_block::QuorumConfig;
use std::net::SocketAddr;

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
/// each [`Action::Persist`](super::agent::Action::Persist) and writes the block.
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
pub(super) fn elected_unstopped(block: &QuorumBlock) -> bool {
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

/// Whether old leader `old` ever served: its slot's block shows that it
/// finished fencing in its term (FENCE), which a leader records once its
/// server is up. One that never did was elected and is still starting, or
/// lost to a newer election and is stopping (and will record STOP).
pub fn leader_came_up(blocks: &[(SlotNr, QuorumBlock)], old: &OldLeader) -> bool {
    blocks
        .iter()
        .find(|(s, _)| *s == old.slot)
        .is_some_and(|(_, qb)| event_term(qb, EventKind::Fence) >= old.term)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::quorum::testing::blocks;
    use scoutfs_format::super_block::InetAddr;
    use EventKind as E;

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
    fn an_old_leader_came_up_once_it_recorded_its_fence() {
        let bs = blocks(&[
            // Elected in 5 and never up (lost to our newer election?).
            (0, &[(E::Elect, 5, 10)]),
            // Up in 4.
            (1, &[(E::Elect, 4, 11), (E::Fence, 4, 11)]),
            // Up in 3, elected again in 5 and not up yet.
            (
                2,
                &[(E::Elect, 3, 12), (E::Fence, 3, 12), (E::Elect, 5, 22)],
            ),
        ]);
        let ups: Vec<(u64, bool)> = leaders_to_fence(&bs, Term(6), Rid(99))
            .iter()
            .map(|o| (o.rid.0, leader_came_up(&bs, o)))
            .collect();
        assert_eq!(ups, [(10, false), (11, true), (22, false)]);
        assert!(leader_came_up(&bs, &old(2, 12, 3)));
        assert!(!leader_came_up(&bs, &old(3, 13, 1)), "no block");
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
