//! Tests of the lock server state machine: grants, invalidations, recovery and forgetting mounts.

use super::*;
use crate::cluster::lock::inode_lock_range;
use LockMode::{Null, Read, Write, WriteOnly};

const A: Rid = Rid(0xa);
const B: Rid = Rid(0xb);
const C: Rid = Rid(0xc);

struct T {
    s: LockServer,
    seq: u64,
    key: Key,
}

impl T {
    fn new() -> T {
        T {
            s: LockServer::new(),
            seq: 100,
            key: inode_lock_range(1).0,
        }
    }

    fn msg(&self, old: LockMode, new: LockMode) -> LockMsg {
        LockMsg {
            key: self.key,
            write_seq: 0,
            old_mode: old,
            new_mode: new,
        }
    }

    fn req(&mut self, rid: Rid, id: u64, old: LockMode, new: LockMode) -> Vec<ServerOut> {
        let msg = self.msg(old, new);
        let seq = &mut self.seq;
        let out = self.s.request(rid, id, msg, &mut || {
            *seq += 1;
            *seq
        });
        self.s.check_invariants();
        out
    }

    fn done(&mut self, rid: Rid, old: LockMode, new: LockMode) -> Vec<ServerOut> {
        let msg = self.msg(old, new);
        let seq = &mut self.seq;
        let out = self.s.invalidate_done(rid, msg, &mut || {
            *seq += 1;
            *seq
        });
        self.s.check_invariants();
        out
    }

    fn recover(&mut self, rid: Rid, entries: &[RecoverEntry], more: bool) -> Vec<ServerOut> {
        // The driver raises its seq above the batch first.
        let top = entries.iter().map(|e| e.write_seq).max().unwrap_or(0);
        self.seq = self.seq.max(top);
        let seq = &mut self.seq;
        let out = self.s.recover(rid, entries, more, &mut || {
            *seq += 1;
            *seq
        });
        self.s.check_invariants();
        out
    }

    fn gone(&mut self, rid: Rid) -> Vec<ServerOut> {
        let seq = &mut self.seq;
        let out = self.s.rid_gone(rid, &mut || {
            *seq += 1;
            *seq
        });
        self.s.check_invariants();
        out
    }

    fn entry(&self, mode: LockMode, write_seq: u64) -> RecoverEntry {
        RecoverEntry {
            key: self.key,
            mode,
            write_seq,
        }
    }

    fn farewell(&mut self, rid: Rid) -> Vec<ServerOut> {
        let seq = &mut self.seq;
        let out = self.s.farewell(rid, &mut || {
            *seq += 1;
            *seq
        });
        self.s.check_invariants();
        out
    }

    fn grant(&self, rid: Rid, id: u64, old: LockMode, new: LockMode, ws: u64) -> ServerOut {
        let mut msg = self.msg(old, new);
        msg.write_seq = ws;
        ServerOut::Grant {
            rid,
            net_id: id,
            msg,
        }
    }

    fn inv(&self, rid: Rid, old: LockMode, new: LockMode) -> ServerOut {
        ServerOut::Invalidate {
            rid,
            msg: self.msg(old, new),
        }
    }
}

#[test]
fn first_request_is_granted() {
    let mut t = T::new();
    let out = t.req(A, 1, Null, Read);
    assert_eq!(out, vec![t.grant(A, 1, Null, Read, 0)]);
    assert_eq!(t.s.held_mode(&t.key, A), Read);
    // Write modes get a fresh write_seq from the seq source.
    let k2 = inode_lock_range(5000).0;
    let mut msg = t.msg(Null, WriteOnly);
    msg.key = k2;
    let out = t.s.request(B, 2, msg, &mut || 555);
    assert!(matches!(&out[..], [ServerOut::Grant { msg, .. }] if msg.write_seq == 555));
}

#[test]
fn readers_share_and_write_only_shares() {
    let mut t = T::new();
    t.req(A, 1, Null, Read);
    assert_eq!(t.req(B, 1, Null, Read), vec![t.grant(B, 1, Null, Read, 0)]);
    let k = t.key;
    t.key = inode_lock_range(5000).0;
    assert_eq!(
        t.req(A, 2, Null, WriteOnly),
        vec![t.grant(A, 2, Null, WriteOnly, 101)]
    );
    assert_eq!(
        t.req(B, 2, Null, WriteOnly),
        vec![t.grant(B, 2, Null, WriteOnly, 102)]
    );
    assert_eq!(t.s.len(), 2);
    assert_eq!(t.s.held_mode(&k, B), Read);
}

#[test]
fn own_upgrade_is_granted_without_invalidation() {
    let mut t = T::new();
    t.req(A, 1, Null, Read);
    assert_eq!(
        t.req(A, 2, Read, Write),
        vec![t.grant(A, 2, Read, Write, 101)]
    );
}

#[test]
fn own_conversion_from_write_only_invalidates_itself_first() {
    let mut t = T::new();
    t.req(A, 1, Null, WriteOnly);
    t.req(B, 1, Null, WriteOnly);
    // A wants to read: B and A's own blind writes must be committed.
    assert_eq!(
        t.req(A, 2, WriteOnly, Read),
        vec![t.inv(A, WriteOnly, Null), t.inv(B, WriteOnly, Null)]
    );
    assert!(t.done(A, WriteOnly, Null).is_empty());
    assert_eq!(
        t.done(B, WriteOnly, Null),
        vec![t.grant(A, 2, Null, Read, 0)]
    );
    // And back: READ to WRITE_ONLY drops A's cache the same way.
    assert_eq!(t.req(A, 3, Read, WriteOnly), vec![t.inv(A, Read, Null)]);
    assert_eq!(
        t.done(A, Read, Null),
        vec![t.grant(A, 3, Null, WriteOnly, 103)]
    );
}

#[test]
fn read_request_downgrades_a_writer_to_read() {
    let mut t = T::new();
    t.req(A, 1, Null, Write);
    assert_eq!(t.req(B, 1, Null, Read), vec![t.inv(A, Write, Read)]);
    assert_eq!(t.s.held_mode(&t.key, A), Write);
    assert_eq!(t.done(A, Write, Read), vec![t.grant(B, 1, Null, Read, 0)]);
    assert_eq!(t.s.held_mode(&t.key, A), Read);
    assert_eq!(t.s.held_mode(&t.key, B), Read);
}

#[test]
fn write_request_invalidates_every_reader_to_null() {
    let mut t = T::new();
    t.req(A, 1, Null, Read);
    t.req(B, 1, Null, Read);
    // C asks for WRITE: both readers go to NULL; the grant waits for both.
    assert_eq!(
        t.req(C, 1, Null, Write),
        vec![t.inv(A, Read, Null), t.inv(B, Read, Null)]
    );
    assert!(t.done(B, Read, Null).is_empty());
    assert_eq!(t.done(A, Read, Null), vec![t.grant(C, 1, Null, Write, 101)]);
    assert_eq!(t.s.held_mode(&t.key, A), Null);
}

#[test]
fn upgrade_among_readers_invalidates_only_the_others() {
    let mut t = T::new();
    t.req(A, 1, Null, Read);
    t.req(B, 1, Null, Read);
    assert_eq!(t.req(A, 2, Read, Write), vec![t.inv(B, Read, Null)]);
    assert_eq!(t.done(B, Read, Null), vec![t.grant(A, 2, Read, Write, 101)]);
}

#[test]
fn read_and_write_only_conflict() {
    let mut t = T::new();
    t.req(A, 1, Null, WriteOnly);
    assert_eq!(t.req(B, 1, Null, Read), vec![t.inv(A, WriteOnly, Null)]);
    assert_eq!(
        t.done(A, WriteOnly, Null),
        vec![t.grant(B, 1, Null, Read, 0)]
    );
}

#[test]
fn requests_are_granted_in_arrival_order() {
    let mut t = T::new();
    t.req(A, 1, Null, Write);
    assert_eq!(t.req(B, 1, Null, Write), vec![t.inv(A, Write, Null)]);
    // C's READ queues behind B's WRITE.
    assert!(t.req(C, 1, Null, Read).is_empty());
    assert_eq!(t.s.queue(&t.key).len(), 2);
    let out = t.done(A, Write, Null);
    assert_eq!(
        out,
        vec![t.grant(B, 1, Null, Write, 102), t.inv(B, Write, Read)]
    );
    let out = t.done(B, Write, Read);
    assert_eq!(out, vec![t.grant(C, 1, Null, Read, 0)]);
}

#[test]
fn request_crossing_an_invalidation_is_granted_from_null() {
    let mut t = T::new();
    t.req(A, 1, Null, Read);
    assert_eq!(t.req(B, 1, Null, Write), vec![t.inv(A, Read, Null)]);
    // A asked for WRITE before it saw the invalidation.
    assert!(t.req(A, 2, Read, Write).is_empty());
    let out = t.done(A, Read, Null);
    assert_eq!(
        out,
        vec![t.grant(B, 1, Null, Write, 101), t.inv(B, Write, Null)]
    );
    let out = t.done(B, Write, Null);
    assert_eq!(out, vec![t.grant(A, 2, Null, Write, 102)]);
}

#[test]
fn null_request_is_granted_and_forgotten() {
    let mut t = T::new();
    t.req(A, 1, Null, Read);
    assert_eq!(t.req(A, 2, Read, Null), vec![t.grant(A, 2, Read, Null, 0)]);
    assert!(t.s.is_empty());
}

#[test]
fn protocol_errors_are_reported_not_fatal() {
    let mut t = T::new();
    t.req(A, 1, Null, Write);
    t.req(B, 1, Null, Write);
    let out = t.req(B, 2, Null, Read);
    assert!(matches!(
        &out[..],
        [ServerOut::ProtocolError { rid: B, .. }]
    ));
    let out = t.done(B, Write, Null);
    assert!(matches!(
        &out[..],
        [ServerOut::ProtocolError { rid: B, .. }]
    ));
    let out = t.done(A, Write, Read);
    assert!(matches!(
        &out[..],
        [ServerOut::ProtocolError { rid: A, .. }]
    ));
    // The real response still works.
    assert_eq!(
        t.done(A, Write, Null),
        vec![t.grant(B, 1, Null, Write, 102)]
    );
}

#[test]
fn farewell_drops_entries_and_unblocks_requests() {
    let mut t = T::new();
    t.req(A, 1, Null, Read);
    assert_eq!(t.req(B, 1, Null, Write), vec![t.inv(A, Read, Null)]);
    assert!(t.req(C, 1, Null, Read).is_empty());
    // A leaves without answering: B is granted, then C's READ
    // downgrades B.
    let out = t.farewell(A);
    assert_eq!(
        out,
        vec![t.grant(B, 1, Null, Write, 101), t.inv(B, Write, Read)]
    );
    // B leaves too: C is granted.
    assert_eq!(t.farewell(B), vec![t.grant(C, 1, Null, Read, 0)]);
    assert_eq!(t.farewell(C), vec![]);
    assert!(t.s.is_empty());
}

fn is_error(out: &[ServerOut], who: Rid) -> bool {
    matches!(out, [ServerOut::ProtocolError { rid, .. }] if *rid == who)
}

#[test]
fn recovery_queues_requests_until_every_mount_reported() {
    let mut t = T::new();
    t.s = LockServer::recovering([A, B]);
    assert!(t.s.is_recovering());
    // A resent request arrives before anyone reported: it waits.
    assert!(t.req(C, 1, Null, Read).is_empty());
    assert!(t.req(B, 1, Null, Write).is_empty());
    assert_eq!(t.s.recovery_pending(), vec![A, B]);
    let recover_a = ServerOut::Recover {
        rid: A,
        first: Key::MIN,
    };
    assert_eq!(t.s.greeted(A), vec![recover_a]);
    assert!(t.s.greeted(A).is_empty(), "asked once");
    assert!(t.s.greeted(C).is_empty(), "not expected");
    let e = t.entry(Write, 500);
    assert!(t.recover(A, &[e], false).is_empty());
    assert_eq!(t.s.held_mode(&t.key, A), Write);
    assert_eq!(t.s.recovery_pending(), vec![B]);
    assert_eq!(t.s.greeted(B).len(), 1);
    // B held nothing; its report ends recovery and the queue runs in
    // arrival order: C's READ first downgrades A.
    assert_eq!(t.recover(B, &[], false), vec![t.inv(A, Write, Read)]);
    assert!(!t.s.is_recovering());
    assert_eq!(t.s.recovered_write_seq(), 500);
    assert_eq!(
        t.done(A, Write, Read),
        vec![
            t.grant(C, 1, Null, Read, 0),
            t.inv(A, Read, Null),
            t.inv(C, Read, Null)
        ]
    );
    t.done(A, Read, Null);
    // Write seqs continue above every recovered one.
    assert_eq!(t.done(C, Read, Null), vec![t.grant(B, 1, Null, Write, 501)]);
}

#[test]
fn recovery_reports_come_in_batches() {
    let mut t = T::new();
    t.s = LockServer::recovering([A]);
    t.s.greeted(A);
    let k1 = t.key;
    let k2 = inode_lock_range(5000).0;
    let k3 = inode_lock_range(9000).0;
    let e = |key, mode| RecoverEntry {
        key,
        mode,
        write_seq: 0,
    };
    let first = k1.inc();
    assert_eq!(
        t.recover(A, &[e(k1, Read)], true),
        vec![ServerOut::Recover { rid: A, first }]
    );
    // Out of order: before the key asked for, or not ascending.
    assert!(is_error(&t.recover(A, &[e(k1, Read)], false), A));
    assert!(is_error(
        &t.recover(A, &[e(k3, Read), e(k2, Read)], false),
        A
    ));
    assert!(is_error(&t.recover(A, &[e(k2, Null)], false), A));
    assert!(is_error(&t.recover(A, &[], true), A));
    assert!(t.s.is_recovering(), "refused batches change nothing");
    assert_eq!(t.s.held_mode(&k2, A), Null);
    assert!(t
        .recover(A, &[e(k2, WriteOnly), e(k3, Read)], false)
        .is_empty());
    assert!(!t.s.is_recovering());
    assert_eq!(
        (
            t.s.held_mode(&k1, A),
            t.s.held_mode(&k2, A),
            t.s.held_mode(&k3, A)
        ),
        (Read, WriteOnly, Read)
    );
    assert!(is_error(&t.recover(A, &[], false), A), "not asked");
}

#[test]
fn conflicting_reports_are_protocol_errors() {
    let mut t = T::new();
    t.s = LockServer::recovering([A, B, C]);
    for r in [A, B, C] {
        t.s.greeted(r);
    }
    assert!(t.recover(A, &[t.entry(Read, 0)], false).is_empty());
    let out = t.recover(B, &[t.entry(Write, 9)], false);
    assert!(is_error(&out, B), "{out:?}");
    assert_eq!(t.s.held_mode(&t.key, B), Null);
    assert_eq!(t.s.recovered_write_seq(), 0);
    // Readers share; B is fenced and recovery ends without it.
    assert!(t.recover(C, &[t.entry(Read, 0)], false).is_empty());
    assert!(t.gone(B).is_empty());
    assert!(!t.s.is_recovering());
    assert!(is_error(&t.done(A, Read, Null), A));
}

#[test]
fn fenced_mounts_end_recovery_and_lose_their_locks() {
    let mut t = T::new();
    t.s = LockServer::recovering([A, B]);
    t.s.greeted(A);
    t.s.greeted(B);
    assert!(t.recover(A, &[t.entry(WriteOnly, 300)], false).is_empty());
    assert!(t.req(A, 7, WriteOnly, Read).is_empty());
    assert!(t.req(C, 1, Null, WriteOnly).is_empty());
    // Nothing is invalidated while B may still hold anything.
    assert!(t.s.queue(&t.key).len() == 2);
    // B never reports: fenced. A's conversion goes first.
    assert_eq!(t.gone(B), vec![t.inv(A, WriteOnly, Null)]);
    assert_eq!(
        t.done(A, WriteOnly, Null),
        vec![t.grant(A, 7, Null, Read, 0), t.inv(A, Read, Null)]
    );
    assert_eq!(
        t.done(A, Read, Null),
        vec![t.grant(C, 1, Null, WriteOnly, 301)]
    );
    // Expecting nobody is not recovering.
    assert!(!LockServer::recovering([]).is_recovering());
}

#[test]
#[should_panic(expected = "not above the recovered")]
fn granting_below_a_recovered_write_seq_is_a_bug() {
    let mut t = T::new();
    t.s = LockServer::recovering([A]);
    t.s.greeted(A);
    let e = t.entry(WriteOnly, 900);
    // The driver forgot to raise its seq before passing the batch in.
    t.s.request(B, 1, t.msg(Null, WriteOnly), &mut || 1);
    t.s.recover(A, &[e], false, &mut || 5);
}
