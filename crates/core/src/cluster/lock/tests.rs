//! Tests of the lock client state machine and the lock ranges.

use super::*;
use crate::cluster::lock::client::Acquire;
use crate::cluster::lock::client::ClientAction;
use crate::cluster::lock::client::LockClient;
use crate::types::Rid;
use LockMode::{Null, Read, Write, WriteOnly};

fn lc(idle_max: usize) -> LockClient {
    LockClient::new(Rid(0xabc), idle_max)
}

fn grant(key: Key, old: LockMode, new: LockMode, write_seq: u64) -> LockMsg {
    LockMsg {
        key,
        write_seq,
        old_mode: old,
        new_mode: new,
    }
}

/// Acquires a lock that isn't held yet and has it granted.
fn get(c: &mut LockClient, ino: u64, mode: LockMode, write_seq: u64) -> Key {
    let (s, e) = inode_lock_range(ino);
    let Acquire::Wait(Some(req)) = c.acquire(s, e, mode) else {
        panic!("expected a request");
    };
    assert_eq!(req, grant(s, c.lock_view(&s).unwrap().mode, mode, 0));
    let acts = c.on_grant(grant(s, req.old_mode, mode, write_seq));
    assert!(acts.contains(&ClientAction::Wake { start: s }));
    assert!(matches!(c.acquire(s, e, mode), Acquire::Held { .. }));
    c.check_invariants();
    s
}

fn end(s: Key) -> Key {
    inode_lock_range(s.first).1
}

impl LockClient {
    /// A write user of `s` dirtied transaction `seq` (taking and
    /// giving back a user around `mark_dirty`).
    fn dirtied_for_test(&mut self, s: Key, seq: u64) {
        let e = end(s);
        assert!(matches!(self.acquire(s, e, Write), Acquire::Held { .. }));
        self.mark_dirty(s, seq);
        assert!(self.release(s, Write).is_empty());
    }
}

#[test]
fn mode_values_and_rules() {
    for v in 0..4u8 {
        assert_eq!(LockMode::from_u8(v).map(|m| m as u8), Some(v));
    }
    assert_eq!(LockMode::from_u8(4), None);
    assert_eq!(LockMode::from_u8(255), None);
    assert!(Read.can_read() && Write.can_read() && !WriteOnly.can_read());
    assert!(!Read.can_write() && Write.can_write() && WriteOnly.can_write());
    assert!(!Null.can_read() && !Null.can_write());
    assert!(Write.satisfies(Read) && !Read.satisfies(Write));
    assert!(!Write.satisfies(WriteOnly) && !WriteOnly.satisfies(Write));
    assert!(!WriteOnly.satisfies(Read) && WriteOnly.satisfies(WriteOnly));
    assert!(modes_compatible(Read, Read) && modes_compatible(WriteOnly, WriteOnly));
    assert!(!modes_compatible(Write, Write) && !modes_compatible(Read, WriteOnly));
    assert!(!modes_compatible(Write, Read) && modes_compatible(Null, Write));
    assert_eq!(Rid(0x1f).to_string(), "000000000000001f");
    assert_eq!(WriteOnly.to_string(), "write_only");
}

#[test]
fn lock_ranges() {
    let (s, e) = inode_lock_range(5000);
    assert_eq!(s, Key::new(zone::FS, 4096, 0, 0, 0, 0));
    assert_eq!(e.first, 5119);
    assert_eq!(e.inc(), Key::new(zone::FS, 5120, 0, 0, 0, 0));
    assert!(s <= Key::inode(4096) && Key::inode(5119) <= e);
    assert_eq!(inode_lock_range(4096), inode_lock_range(5119));
    assert_eq!(s.dec(), inode_lock_range(4095).1);
    let (s, e) = index_lock_range(ty::INODE_INDEX_META_SEQ, 2047);
    assert_eq!(
        (s.zone, s.first, s.ty, s.second),
        (zone::INODE_INDEX, 0, 4, 1024)
    );
    assert_eq!((e.second, e.third, e.fourth), (2047, u64::MAX, u8::MAX));
    assert_eq!(e.inc(), index_lock_range(ty::INODE_INDEX_META_SEQ, 2048).0);
    let (s, e) = rename_lock_range();
    assert_eq!(s, e);
    assert_eq!((s.zone, s.ty), (zone::LOCK, ty::RENAME));
    let (s, e) = orphan_lock_range();
    let orphan = Key::new(zone::ORPHAN, 0, ty::ORPHAN, 77, 0, 0);
    assert!(s <= orphan && orphan <= e);
    assert_eq!(s.dec().zone, zone::ORPHAN - 1);
    assert_eq!(e.inc(), Key::new(zone::ORPHAN + 1, 0, 0, 0, 0, 0));
}

#[test]
fn grant_then_held_and_release_to_idle() {
    let mut c = lc(10);
    let s = get(&mut c, 1, Write, 42);
    let v = c.lock_view(&s).unwrap();
    assert_eq!(
        (v.mode, v.write_seq, v.users[2], v.idle),
        (Write, 42, 1, false)
    );
    // WRITE satisfies READ; refresh_gen stays with the grant.
    assert_eq!(
        c.acquire(s, end(s), Read),
        Acquire::Held {
            write_seq: 42,
            refresh_gen: v.refresh_gen
        }
    );
    assert!(c.release(s, Read).is_empty());
    assert!(c.release(s, Write).is_empty());
    assert!(c.lock_view(&s).unwrap().idle);
    assert_eq!(c.idle_len(), 1);
    c.check_invariants();
    // Each grant gets a new generation.
    let s2 = get(&mut c, 2000, Read, 0);
    assert!(c.lock_view(&s2).unwrap().refresh_gen > v.refresh_gen);
}

#[test]
fn read_holder_upgrades_to_write() {
    let mut c = lc(10);
    let s = get(&mut c, 1, Read, 0);
    let Acquire::Wait(Some(req)) = c.acquire(s, end(s), Write) else {
        panic!("expected an upgrade request");
    };
    assert_eq!((req.old_mode, req.new_mode), (Read, Write));
    // Readers still get in while the upgrade is in flight; a second
    // writer waits without a second request.
    assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
    assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
    c.check_invariants();
    let acts = c.on_grant(grant(s, Read, Write, 7));
    assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
    assert!(matches!(
        c.acquire(s, end(s), Write),
        Acquire::Held { write_seq: 7, .. }
    ));
    let v = c.lock_view(&s).unwrap();
    assert_eq!((v.mode, v.users), (Write, [0, 2, 1, 0]));
    c.check_invariants();
}

#[test]
fn admission_lets_waiters_in_under_the_mode_still_held() {
    let mut c = lc(10);
    let s = get(&mut c, 1, Write, 9);
    c.dirtied_for_test(s, 3);
    assert!(c.release(s, Write).is_empty());
    let acts = c.on_invalidate(grant(s, Write, Null, 0));
    assert!(matches!(
        acts[..],
        [ClientAction::Invalidate {
            new_mode: Null,
            sync: true,
            ..
        }]
    ));
    c.trans_committed(3);
    // A writer and a reader arrive during the work and wait; one
    // wanting a conversion can't be here (we hold WRITE).
    assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
    assert_eq!(c.acquire(s, end(s), Read), Acquire::Wait(None));
    assert!(!c.lock_view(&s).unwrap().admitting);
    assert_eq!(c.admit(s), vec![ClientAction::Wake { start: s }]);
    assert!(c.lock_view(&s).unwrap().admitting);
    assert!(matches!(
        c.acquire(s, end(s), Write),
        Acquire::Held { write_seq: 9, .. }
    ));
    assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
    // Newcomers get in too while admitting.
    assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
    c.check_invariants();
    c.dirtied_for_test(s, 4);
    assert!(!c.invalidation_ready(&s));
    c.end_admission(s);
    // Now newcomers wait again, and the users admitted must leave.
    assert_eq!(c.acquire(s, end(s), Read), Acquire::Wait(None));
    assert!(!c.invalidation_ready(&s));
    // (The last user of a mode to leave wakes the waiters to retry.)
    c.release(s, Read);
    c.release(s, Read);
    assert!(!c.invalidation_ready(&s));
    c.release(s, Write);
    c.check_invariants();
    assert!(c.invalidation_ready(&s));
    // What they dirtied is committed before the answer.
    assert_eq!(c.lock_view(&s).unwrap().dirty_trans_seq, 4);
    c.trans_committed(4);
    let (resp, acts) = c.invalidate_done(s);
    assert_eq!(resp, Some(grant(s, Write, Null, 0)));
    assert!(acts.is_empty());
    assert!(
        c.lock_view(&s).is_none(),
        "a null lock with nobody is forgotten"
    );
    c.check_invariants();
}

#[test]
fn admission_leaves_conversion_waiters_waiting() {
    let mut c = lc(10);
    let s = get(&mut c, 1, Read, 0);
    assert!(c.release(s, Read).is_empty());
    let acts = c.on_invalidate(grant(s, Read, Null, 0));
    assert_eq!(acts.len(), 1);
    assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
    assert_eq!(c.admit(s), vec![ClientAction::Wake { start: s }]);
    assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
    assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
    c.end_admission(s);
    assert!(!c.invalidation_ready(&s));
    c.release(s, Read);
    assert!(c.invalidation_ready(&s));
    let (resp, _) = c.invalidate_done(s);
    assert_eq!(resp, Some(grant(s, Read, Null, 0)));
    c.check_invariants();
}

#[test]
fn write_to_read_invalidation_waits_for_writers_and_syncs() {
    let mut c = lc(10);
    let s = get(&mut c, 1, Write, 5);
    c.mark_dirty(s, 3);
    let inv = grant(s, Write, Read, 0);
    assert!(c.on_invalidate(inv).is_empty());
    // New readers are compatible with the target, writers are not.
    assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
    assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
    c.check_invariants();
    let acts = c.release(s, Write);
    let want = ClientAction::Invalidate {
        start: s,
        end: end(s),
        old_mode: Write,
        new_mode: Read,
        sync: true,
    };
    assert_eq!(acts, vec![ClientAction::Wake { start: s }, want]);
    c.trans_committed(2);
    assert_eq!(c.lock_view(&s).unwrap().dirty_trans_seq, 3);
    c.trans_committed(3);
    let (resp, acts) = c.invalidate_done(s);
    assert_eq!(resp, Some(inv));
    assert!(acts.is_empty());
    let v = c.lock_view(&s).unwrap();
    assert_eq!((v.mode, v.users, v.write_seq), (Read, [0, 1, 0, 0], 0));
    c.check_invariants();
}

#[test]
#[should_panic(expected = "before its dirty trans")]
fn invalidate_done_before_commit_is_a_bug() {
    let mut c = lc(10);
    let s = get(&mut c, 1, Write, 5);
    c.mark_dirty(s, 3);
    c.release(s, Write);
    c.on_invalidate(grant(s, Write, Null, 0));
    c.invalidate_done(s);
}

#[test]
fn invalidation_to_null_forgets_the_lock() {
    let mut c = lc(10);
    let s = get(&mut c, 1, WriteOnly, 9);
    assert!(c.release(s, WriteOnly).is_empty());
    let inv = grant(s, WriteOnly, Null, 0);
    let acts = c.on_invalidate(inv);
    assert_eq!(
        acts,
        vec![ClientAction::Invalidate {
            start: s,
            end: end(s),
            old_mode: WriteOnly,
            new_mode: Null,
            sync: false
        }]
    );
    assert!(!c.lock_view(&s).unwrap().idle);
    // A waiter registered meanwhile is woken when it is done.
    assert_eq!(c.acquire(s, end(s), WriteOnly), Acquire::Wait(None));
    let (resp, acts) = c.invalidate_done(s);
    assert_eq!(resp, Some(inv));
    assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
    assert!(c.lock_view(&s).is_none());
    assert_eq!(c.idle_len(), 0);
    c.check_invariants();
}

#[test]
fn write_only_is_its_own_mode() {
    let mut c = lc(10);
    let s = get(&mut c, 1, WriteOnly, 9);
    // WRITE_ONLY holders may not read: READ needs a conversion, which
    // waits until the WRITE_ONLY users are gone.
    assert_eq!(c.acquire(s, end(s), Read), Acquire::Wait(None));
    // And the waiter holds back new WRITE_ONLY users.
    assert_eq!(c.acquire(s, end(s), WriteOnly), Acquire::Wait(None));
    let acts = c.release(s, WriteOnly);
    assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
    let Acquire::Wait(Some(req)) = c.acquire(s, end(s), Read) else {
        panic!("expected a conversion request");
    };
    assert_eq!((req.old_mode, req.new_mode), (WriteOnly, Read));
    assert_eq!(c.acquire(s, end(s), WriteOnly), Acquire::Wait(None));
    c.check_invariants();
    let acts = c.on_grant(grant(s, WriteOnly, Read, 0));
    assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
    assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
    c.check_invariants();
}

#[test]
fn losing_read_by_conversion_drops_the_cache() {
    let mut c = lc(10);
    let s = get(&mut c, 1, Read, 0);
    let Acquire::Wait(None) = c.acquire(s, end(s), WriteOnly) else {
        panic!("the conversion must wait for readers");
    };
    let acts = c.release(s, Read);
    assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
    let Acquire::Wait(Some(req)) = c.acquire(s, end(s), WriteOnly) else {
        panic!("expected a conversion request");
    };
    assert_eq!((req.old_mode, req.new_mode), (Read, WriteOnly));
    // Readers are held back while it is in flight.
    assert_eq!(c.acquire(s, end(s), Read), Acquire::Wait(None));
    let acts = c.on_grant(grant(s, Read, WriteOnly, 11));
    assert_eq!(
        acts,
        vec![
            ClientAction::DropCache {
                start: s,
                end: end(s)
            },
            ClientAction::Wake { start: s }
        ]
    );
    c.check_invariants();
}

#[test]
fn unknown_lock_invalidation_is_answered() {
    let mut c = lc(10);
    let (s, _) = inode_lock_range(1);
    let inv = grant(s, Read, Null, 0);
    assert_eq!(c.on_invalidate(inv), vec![ClientAction::Respond(inv)]);
    assert!(c.is_empty());
}

#[test]
fn invalidation_that_overtook_its_grant_waits_for_it() {
    let mut c = lc(10);
    let (s, e) = inode_lock_range(1);
    let Acquire::Wait(Some(_)) = c.acquire(s, e, Write) else {
        panic!("expected a request");
    };
    // The server granted WRITE and then asked for it back; the
    // invalidation arrives first.
    assert!(c.on_invalidate(grant(s, Write, Null, 0)).is_empty());
    let acts = c.on_grant(grant(s, Null, Write, 3));
    assert_eq!(acts.len(), 2, "{acts:?}");
    assert_eq!(acts[0], ClientAction::Wake { start: s });
    assert!(matches!(
        acts[1],
        ClientAction::Invalidate {
            old_mode: Write,
            ..
        }
    ));
    // The woken waiter may not use it: the invalidation blocks WRITE.
    assert_eq!(c.acquire(s, e, Write), Acquire::Wait(None));
    let v = c.lock_view(&s).unwrap();
    assert_eq!((v.mode, v.invalidations_queued), (Write, 1));
    c.check_invariants();
}

#[test]
fn invalidation_crossing_our_upgrade() {
    let mut c = lc(10);
    let s = get(&mut c, 1, Read, 0);
    let Acquire::Wait(Some(_)) = c.acquire(s, end(s), Write) else {
        panic!("expected an upgrade request");
    };
    let inv = grant(s, Read, Null, 0);
    assert!(c.on_invalidate(inv).is_empty());
    let acts = c.release(s, Read);
    assert!(matches!(
        acts[..],
        [
            ClientAction::Wake { .. },
            ClientAction::Invalidate { new_mode: Null, .. }
        ]
    ));
    let (resp, _) = c.invalidate_done(s);
    assert_eq!(resp, Some(inv));
    // The request is still in flight, so the null lock is kept.
    let v = c.lock_view(&s).unwrap();
    assert_eq!((v.mode, v.request), (Null, Some(Write)));
    c.on_grant(grant(s, Null, Write, 4));
    assert!(matches!(
        c.acquire(s, end(s), Write),
        Acquire::Held { write_seq: 4, .. }
    ));
    c.check_invariants();
}

#[test]
fn idle_locks_are_trimmed_oldest_first_skipping_dirty() {
    let mut c = lc(1);
    let a = get(&mut c, 1, Write, 1);
    let b = get(&mut c, 1024, Read, 0);
    let d = get(&mut c, 2048, Read, 0);
    c.mark_dirty(a, 8);
    c.release(a, Write);
    assert!(
        c.trim_idle().is_empty(),
        "one idle lock is within the limit"
    );
    c.release(b, Read);
    c.release(d, Read);
    assert_eq!(c.idle_len(), 3);
    // `a` is oldest but dirty, so `b` and `d` go.
    let msgs = c.trim_idle();
    assert_eq!(msgs, vec![grant(b, Read, Null, 0), grant(d, Read, Null, 0)]);
    assert_eq!(c.idle_len(), 1);
    assert!(c.trim_idle().is_empty(), "one request per lock at a time");
    c.check_invariants();
    // A user wanting `b` meanwhile waits for the null grant.
    assert_eq!(c.acquire(b, end(b), Read), Acquire::Wait(None));
    let acts = c.on_grant(grant(b, Read, Null, 0));
    assert_eq!(
        acts,
        vec![
            ClientAction::DropCache {
                start: b,
                end: end(b)
            },
            ClientAction::Wake { start: b }
        ]
    );
    assert!(c.lock_view(&b).is_none());
    c.on_grant(grant(d, Read, Null, 0));
    assert_eq!(c.len(), 1);
    c.check_invariants();
    // Once committed, the dirty lock is trimmed like any other.
    let e = get(&mut c, 4096, Read, 0);
    c.release(e, Read);
    let msgs = c.trim_idle();
    assert_eq!(
        msgs,
        vec![grant(e, Read, Null, 0)],
        "the dirty oldest stays"
    );
    c.on_grant(msgs[0]);
    let f = get(&mut c, 8192, Read, 0);
    c.release(f, Read);
    c.trans_committed(8);
    assert_eq!(c.trim_idle(), vec![grant(a, Write, Null, 0)]);
    c.check_invariants();
}

#[test]
fn cancelled_waiter_releases_fairness() {
    let mut c = lc(10);
    let s = get(&mut c, 1, Read, 0);
    assert_eq!(c.acquire(s, end(s), WriteOnly), Acquire::Wait(None));
    assert_eq!(c.acquire(s, end(s), Read), Acquire::Wait(None));
    let acts = c.cancel_wait(s, WriteOnly);
    assert_eq!(acts, vec![ClientAction::Wake { start: s }]);
    assert!(matches!(c.acquire(s, end(s), Read), Acquire::Held { .. }));
    c.check_invariants();
}

#[test]
fn impossible_server_messages_are_errors() {
    let mut c = lc(10);
    let (s, _) = inode_lock_range(1);
    let acts = c.on_grant(grant(s, Null, Read, 0));
    assert!(matches!(acts[..], [ClientAction::ProtocolError { .. }]));
    let acts = c.on_invalidate(grant(s, Read, WriteOnly, 0));
    assert!(matches!(acts[..], [ClientAction::ProtocolError { .. }]));
    let s = get(&mut c, 1, Read, 0);
    let acts = c.on_grant(grant(s, Read, Write, 1));
    assert!(matches!(acts[..], [ClientAction::ProtocolError { .. }]));
    c.check_invariants();
}

fn entry(key: Key, mode: LockMode, write_seq: u64) -> RecoverEntry {
    RecoverEntry {
        key,
        mode,
        write_seq,
    }
}

#[test]
fn recovery_reports_granted_modes() {
    let mut c = lc(0);
    let a = get(&mut c, 1, Write, 5);
    let b = get(&mut c, 1024, Read, 0);
    let d = get(&mut c, 2048, WriteOnly, 6);
    // A request in flight reports the mode granted so far.
    let Acquire::Wait(Some(_)) = c.acquire(b, end(b), Write) else {
        panic!("expected an upgrade request");
    };
    // An invalidation being worked on reports the old mode.
    c.release(a, Write);
    let acts = c.on_invalidate(grant(a, Write, Null, 0));
    assert!(matches!(acts[..], [ClientAction::Invalidate { .. }]));
    // A lock asked for but never granted isn't reported.
    let (s, e) = inode_lock_range(4096);
    let Acquire::Wait(Some(_)) = c.acquire(s, e, Read) else {
        panic!("expected a request");
    };
    // A lock being given up isn't reported.
    let g = get(&mut c, 8192, Read, 0);
    c.release(g, Read);
    assert_eq!(c.trim_idle(), vec![grant(g, Read, Null, 0)]);
    let want = vec![
        entry(a, Write, 5),
        entry(b, Read, 0),
        entry(d, WriteOnly, 6),
    ];
    assert_eq!(c.recovery_report(), want);
    assert_eq!(c.recovery_batch(Key::MIN, 2), (want[..2].to_vec(), true));
    assert_eq!(c.recovery_batch(b.inc(), 2), (want[2..].to_vec(), false));
    assert_eq!(c.recovery_batch(d, 1), (want[2..].to_vec(), false));
    assert_eq!(c.recovery_batch(d.inc(), 1), (vec![], false));
    c.check_invariants();
    // The new server didn't count it: its resent request is granted
    // from `Null`, which forgets it.
    c.server_changed();
    let acts = c.on_grant(grant(g, Null, Null, 0));
    assert!(matches!(acts[..], [ClientAction::DropCache { .. }]));
    assert!(c.lock_view(&g).is_none());
    c.check_invariants();
}

#[test]
fn server_change_voids_invalidations_and_keeps_requests() {
    let mut c = lc(10);
    let a = get(&mut c, 1, Write, 5);
    let b = get(&mut c, 1024, Read, 0);
    c.mark_dirty(a, 3);
    // `a` is being invalidated (the driver is committing) with a
    // second invalidation queued; `b` has one queued behind a reader.
    c.release(a, Write);
    let acts = c.on_invalidate(grant(a, Write, Read, 0));
    assert!(matches!(
        acts[..],
        [ClientAction::Invalidate { sync: true, .. }]
    ));
    assert!(c.on_invalidate(grant(a, Read, Null, 0)).is_empty());
    let Acquire::Wait(Some(req)) = c.acquire(b, end(b), Write) else {
        panic!("expected an upgrade request");
    };
    assert!(c.on_invalidate(grant(b, Read, Null, 0)).is_empty());
    assert_eq!(c.acquire(b, end(b), Read), Acquire::Wait(None));
    let acts = c.server_changed();
    // The reader held back by `b`'s dropped invalidation may go on.
    assert_eq!(acts, vec![ClientAction::Wake { start: b }]);
    assert!(matches!(c.acquire(b, end(b), Read), Acquire::Held { .. }));
    c.release(b, Read);
    // The void invalidation still blocks writers until it is done.
    assert_eq!(c.acquire(a, end(a), Write), Acquire::Wait(None));
    c.check_invariants();
    assert_eq!(
        c.recovery_report(),
        vec![entry(a, Write, 5), entry(b, Read, 0)]
    );
    c.trans_committed(3);
    let (resp, acts) = c.invalidate_done(a);
    assert_eq!(resp, None, "the old server is gone");
    assert_eq!(acts, vec![ClientAction::Wake { start: a }]);
    let v = c.lock_view(&a).unwrap();
    assert_eq!((v.mode, v.write_seq, v.invalidations_queued), (Write, 5, 0));
    assert!(matches!(
        c.acquire(a, end(a), Write),
        Acquire::Held { write_seq: 5, .. }
    ));
    // The resent request is granted by the new server.
    let acts = c.on_grant(grant(b, req.old_mode, Write, 9));
    assert!(acts.is_empty(), "{acts:?}");
    assert!(matches!(
        c.acquire(b, end(b), Write),
        Acquire::Held { write_seq: 9, .. }
    ));
    c.check_invariants();
}

#[test]
fn grant_during_a_void_invalidation_is_accepted() {
    let mut c = lc(10);
    let s = get(&mut c, 1, Read, 0);
    let Acquire::Wait(Some(_)) = c.acquire(s, end(s), Write) else {
        panic!("expected an upgrade request");
    };
    c.release(s, Read);
    let acts = c.on_invalidate(grant(s, Read, Null, 0));
    assert!(matches!(acts[..], [ClientAction::Invalidate { .. }]));
    assert!(matches!(
        c.on_grant(grant(s, Read, Write, 4))[..],
        [ClientAction::ProtocolError { .. }]
    ));
    c.server_changed();
    // The new server recovered us at READ and granted the upgrade
    // while the driver was still dropping the cache for the old one.
    assert!(c.on_grant(grant(s, Read, Write, 7)).is_empty());
    assert_eq!(c.lock_view(&s).unwrap().mode, Write);
    assert_eq!(c.acquire(s, end(s), Write), Acquire::Wait(None));
    c.check_invariants();
    let (resp, acts) = c.invalidate_done(s);
    assert_eq!((resp, acts), (None, vec![ClientAction::Wake { start: s }]));
    assert!(matches!(
        c.acquire(s, end(s), Write),
        Acquire::Held { write_seq: 7, .. }
    ));
    c.check_invariants();
}

#[test]
#[should_panic(expected = "overlaps")]
fn overlapping_ranges_are_a_bug() {
    let mut c = lc(10);
    let (s, _) = inode_lock_range(1);
    c.acquire(s, Key::MAX, Read);
    c.acquire(inode_lock_range(5000).0, inode_lock_range(5000).1, Read);
}
