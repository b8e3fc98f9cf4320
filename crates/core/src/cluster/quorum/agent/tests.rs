//! Tests of the election agent: elections, terms, timers and the events it persists.

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
    deadline.is_some_and(|d| (now + ELECT_MIN_MS..now + ELECT_MIN_MS + ELECT_VAR_MS).contains(&d))
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
