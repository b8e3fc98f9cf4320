//! Real quorum drivers: election threads, UDP over loopback and quorum block
//! writes on one shared in-memory device, in one process.
//!
//! The device is a [`MemDev`] whose clones share one image, like a shared
//! disk. The filesystem's quorum slots get ports picked at run time (bound
//! on 127.0.0.1:0 and released just before mkfs; a start that finds one
//! taken meanwhile makes a new filesystem with new ports). Each member's
//! [`ServerControl`] records what it was asked and, like a real server,
//! reads the blocks for the old leaders to fence and a newer election before
//! it reports up.
//!
//! Waits poll the drivers' status every few milliseconds for up to
//! [`WAIT_MS`] and fail with the last state seen. Measured times are printed
//! and checked against what the protocol allows (nothing is elected before
//! the first election timeout; a crashed leader is replaced only after the
//! followers' heartbeat timeout, and within that plus an election), not
//! against a speed target.

use scoutfs_core::cluster::quorum::agent::{
    Role, ServerState, ELECT_MIN_MS, ELECT_VAR_MS, HEARTBEAT_INTERVAL_MS,
};
use scoutfs_core::cluster::quorum::blocks::{event_term, record_events, EventKind, OldLeader};
use scoutfs_core::cluster::quorum::driver::{
    find_server, read_quorum_block, QuorumDriver, QuorumHandle, QuorumOptions, QuorumStatus,
    ServerControl,
};
use scoutfs_core::cluster::quorum::msg::{Message, MessageCodec, MsgType};
use scoutfs_core::cluster::quorum::{SlotNr, Term};
use scoutfs_core::store::commit::read_super;
use scoutfs_core::store::dev::{BlockDev, CrashMode, MemDev};
use scoutfs_core::tools::mkfs::{mkfs, MkfsOptions};
use scoutfs_core::types::Rid;
use scoutfs_core::Error;
use scoutfs_format::block::Timespec;
use scoutfs_format::consts::{BLOCK_SM_SHIFT, QUORUM_BLKNO};
use scoutfs_format::quorum::{QuorumMessage, QUORUM_MESSAGE_MAC_OFFSET, QUORUM_MSG_HEARTBEAT};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The followers' heartbeat timeout: the shortest allowed, to keep the
/// crashed-leader case short.
const HB_MS: u64 = 2_000;
/// How long any wait may take before the test fails.
const WAIT_MS: u64 = 10_000;
/// Allowed beyond heartbeat timeout + election timeout for a failover:
/// message latency, a split vote's extra round, a busy 2-core machine.
const FAILOVER_SLACK_MS: u64 = 1_500;
const DEV_BYTES: u64 = 64 << 20;

/// A server start as the recorder saw it.
#[derive(Clone, Debug)]
struct Start {
    term: Term,
    fence: Result<Vec<OldLeader>, String>,
    newer: Result<Option<(SlotNr, Term)>, String>,
}

#[derive(Default)]
struct Log {
    starts: Vec<Start>,
    stops: Vec<Term>,
    failures: Vec<String>,
}

/// A `ServerControl` that records starts and stops. With `auto_up` it
/// reports up right after reading the blocks, as a server that fenced
/// would; without, the test reports.
struct Recorder {
    log: Arc<Mutex<Log>>,
    quorum: Option<QuorumHandle>,
    auto_up: bool,
    term: Mutex<Option<Term>>,
}

impl ServerControl for Recorder {
    fn attach(&mut self, quorum: QuorumHandle) {
        self.quorum = Some(quorum);
    }

    fn start(&self, term: Term) {
        let q = self.quorum.as_ref().expect("attach comes before start");
        let fence = q.leaders_to_fence(term).map_err(|e| e.to_string());
        let newer = q.newer_election(term).map_err(|e| e.to_string());
        let ok = fence.is_ok() && matches!(newer, Ok(None));
        self.log
            .lock()
            .unwrap()
            .starts
            .push(Start { term, fence, newer });
        *self.term.lock().unwrap() = Some(term);
        if self.auto_up {
            if ok {
                q.server_up(term);
            } else {
                q.server_stopped(term);
            }
        }
    }

    fn stop(&self) {
        let term = self.term.lock().unwrap().take();
        if let Some(term) = term {
            self.log.lock().unwrap().stops.push(term);
            if let Some(q) = &self.quorum {
                q.server_stopped(term);
            }
        }
    }

    fn quorum_failed(&self, why: &str) {
        self.log.lock().unwrap().failures.push(why.to_string());
    }
}

/// A quorum member under test.
struct Member {
    slot: SlotNr,
    rid: Rid,
    log: Arc<Mutex<Log>>,
    driver: QuorumDriver,
}

impl Member {
    fn status(&self) -> QuorumStatus {
        self.driver.status()
    }
    fn starts(&self) -> Vec<Start> {
        self.log.lock().unwrap().starts.clone()
    }
    fn stops(&self) -> Vec<Term> {
        self.log.lock().unwrap().stops.clone()
    }
    fn failures(&self) -> Vec<String> {
        self.log.lock().unwrap().failures.clone()
    }
}

fn start_member(meta: &MemDev, slot: u8, rid: u64, auto_up: bool) -> Result<Member, Error> {
    let log = Arc::new(Mutex::new(Log::default()));
    let server = Box::new(Recorder {
        log: log.clone(),
        quorum: None,
        auto_up,
        term: Mutex::new(None),
    });
    let opts = QuorumOptions {
        rid: Rid(rid),
        heartbeat_timeout_ms: HB_MS,
    };
    let dev: Arc<dyn BlockDev> = Arc::new(meta.clone());
    let driver = QuorumDriver::start(dev, SlotNr(slot), opts, server)?;
    Ok(Member {
        slot: SlotNr(slot),
        rid: Rid(rid),
        log,
        driver,
    })
}

/// A new filesystem whose quorum slots have free loopback ports.
fn make_fs(slots: &[u8]) -> (MemDev, Vec<(u8, SocketAddr)>) {
    let socks: Vec<UdpSocket> = slots
        .iter()
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    let quorum: Vec<(u8, SocketAddr)> = slots
        .iter()
        .zip(&socks)
        .map(|(&s, sock)| (s, sock.local_addr().unwrap()))
        .collect();
    drop(socks);
    let meta = MemDev::new_named("meta", DEV_BYTES);
    let data = MemDev::new_named("data", DEV_BYTES);
    let opts = MkfsOptions {
        quorum: quorum.iter().map(|&(s, a)| (s as usize, a)).collect(),
        now: Some(Timespec::new(1_700_000_000, 0)),
        ..Default::default()
    };
    mkfs(Arc::new(meta.clone()), Arc::new(data), &opts).expect("mkfs");
    (meta, quorum)
}

fn in_use(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
}

/// A filesystem with these slots and a started member on each, and when
/// they started. Ports taken by someone else between picking and binding
/// make a new filesystem, a few times.
fn cluster(slots: &[u8], auto_up: bool) -> (MemDev, Vec<Member>, Instant) {
    for _ in 0..5 {
        let (meta, _) = make_fs(slots);
        let t0 = Instant::now();
        let started: Result<Vec<Member>, Error> = slots
            .iter()
            .map(|&s| start_member(&meta, s, 0x100 + s as u64, auto_up))
            .collect();
        match started {
            Ok(members) => return (meta, members, t0),
            Err(e) if in_use(&e) => eprintln!("retrying with new ports: {e}"),
            Err(e) => panic!("starting the quorum members: {e}"),
        }
    }
    panic!("no free loopback ports after 5 tries");
}

/// Polls `f` until it returns Ok, for up to WAIT_MS; fails with its last
/// Err (a description of the state). Returns the value and the time taken.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> (T, Duration) {
    let t0 = Instant::now();
    loop {
        match f() {
            Ok(v) => return (v, t0.elapsed()),
            Err(state) if t0.elapsed() > Duration::from_millis(WAIT_MS) => {
                panic!("no {what} after {WAIT_MS} ms: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// One leader whose server is up, every other member following it in its
/// term: the leader's slot and term.
fn settled(ms: &[Option<Member>]) -> Result<(SlotNr, Term), String> {
    let sts: Vec<QuorumStatus> = ms.iter().flatten().map(|m| m.status()).collect();
    let state = || {
        let v: Vec<String> = sts
            .iter()
            .map(|s| {
                let (slot, role, term, leader) = (s.slot, s.role, s.term, s.leader);
                format!(
                    "slot {slot} {role:?} term {term} leader {leader:?} {:?}",
                    s.server
                )
            })
            .collect();
        v.join("; ")
    };
    let leaders: Vec<&QuorumStatus> = sts.iter().filter(|s| s.role == Role::Leader).collect();
    let &[l] = &leaders[..] else {
        return Err(state());
    };
    let (slot, term) = (l.slot, l.term);
    let up = l.server == ServerState::Running { term, up: true } && l.server_running;
    let follow = sts.iter().all(|s| {
        s.slot == slot || (s.role == Role::Follower && s.term == term && s.leader == Some(slot))
    });
    match up && follow {
        true => Ok((slot, term)),
        false => Err(state()),
    }
}

/// Waits for a settled cluster whose term is greater than `after`.
fn new_leader(what: &str, ms: &[Option<Member>], after: Term) -> (SlotNr, Term) {
    wait_for(what, || {
        settled(ms).and_then(|(slot, term)| match term > after {
            true => Ok((slot, term)),
            false => Err(format!("still term {term}")),
        })
    })
    .0
}

/// The position of the live member on `slot`.
fn on_slot(ms: &[Option<Member>], slot: SlotNr) -> usize {
    ms.iter()
        .position(|m| m.as_ref().is_some_and(|m| m.slot == slot))
        .expect("a live member on the slot")
}

fn block_term(meta: &MemDev, fsid: u64, slot: SlotNr, kind: EventKind) -> Term {
    let qb = read_quorum_block(meta, fsid, slot).expect("read a quorum block");
    event_term(&qb, kind)
}

/// The longest a failover may take: the heartbeat timeout, an election
/// timeout, and slack.
fn failover_max() -> Duration {
    Duration::from_millis(HB_MS + ELECT_MIN_MS + ELECT_VAR_MS + FAILOVER_SLACK_MS)
}

#[test]
fn three_members_elect_fail_over_and_fence() {
    let (meta, members, t0) = cluster(&[1, 4, 9], true);
    let sb = read_super(&meta, true).unwrap();
    let fsid = sb.hdr.fsid.get();
    let mut ms: Vec<Option<Member>> = members.into_iter().map(Some).collect();

    // One leader, followed by the others in its term.
    let ((slot1, term1), _) = wait_for("first leader", || settled(&ms));
    let took = t0.elapsed();
    println!(
        "first leader elected and up {} ms after start",
        took.as_millis()
    );
    assert!(took >= Duration::from_millis(ELECT_MIN_MS), "{took:?}");
    let leader1 = ms[on_slot(&ms, slot1)].as_ref().unwrap();
    let rid1 = leader1.rid;
    for m in ms.iter().flatten() {
        let starts = m.starts();
        if m.slot == slot1 {
            assert_eq!(starts.len(), 1, "{starts:?}");
            assert_eq!(starts[0].term, term1);
            assert_eq!(
                starts[0].fence,
                Ok(vec![]),
                "a new filesystem has no old leader"
            );
            assert_eq!(starts[0].newer, Ok(None));
        } else {
            assert!(starts.is_empty(), "slot {} started a server", m.slot);
        }
    }
    let loc = find_server(&meta).unwrap().expect("a server");
    assert_eq!((loc.slot, loc.term, loc.rid), (slot1, term1, rid1));
    assert_eq!(loc.addr, leader1.status().addr);
    assert_eq!(block_term(&meta, fsid, slot1, EventKind::Elect), term1);
    assert_eq!(block_term(&meta, fsid, slot1, EventKind::Fence), term1);

    let follower = ms.iter().flatten().find(|m| m.slot != slot1).unwrap();
    garbage_is_counted_and_ignored(follower, MessageCodec::for_super(&sb), slot1, term1);

    // A clean shutdown of the leader: it resigns, and a new leader follows.
    let t = Instant::now();
    let i1 = on_slot(&ms, slot1);
    ms[i1].take().unwrap().driver.shutdown().unwrap();
    let (slot2, term2) = new_leader("second leader", &ms, term1);
    let took = t.elapsed();
    println!(
        "after the leader's shutdown, new leader up in {} ms",
        took.as_millis()
    );
    assert!(took >= Duration::from_millis(ELECT_MIN_MS), "{took:?}");
    assert!(took < failover_max(), "{took:?}");
    let rid2 = ms[on_slot(&ms, slot2)].as_ref().unwrap().rid;
    assert_eq!(block_term(&meta, fsid, slot2, EventKind::Elect), term2);
    assert_eq!(block_term(&meta, fsid, slot1, EventKind::Stop), term1);
    assert!(block_term(&meta, fsid, slot1, EventKind::End) >= term1);
    assert_eq!(find_server(&meta).unwrap().map(|l| l.slot), Some(slot2));

    // The first leader's slot mounts again, with a new rid, and follows.
    ms[i1] = Some(start_member(&meta, slot1.0, 0x200 + slot1.0 as u64, true).unwrap());
    let (settled_on, _) = wait_for("the returned member following", || settled(&ms));
    assert_eq!(settled_on, (slot2, term2));

    // The second leader crashes: no resignation, no STOP. The others wait
    // out their heartbeat timeout, elect, and the new leader fences it.
    let before = read_quorum_block(&meta, fsid, slot2).unwrap();
    let t = Instant::now();
    let i2 = on_slot(&ms, slot2);
    ms[i2].take().unwrap().driver.kill_for_test();
    let (slot3, term3) = new_leader("third leader", &ms, term2);
    let took = t.elapsed();
    println!(
        "after the leader's crash, new leader up in {} ms",
        took.as_millis()
    );
    assert!(
        took >= Duration::from_millis(HB_MS - HEARTBEAT_INTERVAL_MS),
        "{took:?}"
    );
    assert!(took < failover_max(), "{took:?}");
    let after = read_quorum_block(&meta, fsid, slot2).unwrap();
    assert_eq!(before, after, "a killed member writes nothing");
    let start3 = ms[on_slot(&ms, slot3)]
        .as_ref()
        .unwrap()
        .starts()
        .pop()
        .unwrap();
    assert_eq!(start3.term, term3);
    let crashed = OldLeader {
        slot: slot2,
        rid: rid2,
        term: term2,
    };
    assert_eq!(start3.fence, Ok(vec![crashed]));
    assert_eq!(block_term(&meta, fsid, slot3, EventKind::Elect), term3);
    assert_eq!(find_server(&meta).unwrap().map(|l| l.slot), Some(slot3));

    for m in ms.iter_mut().filter_map(Option::take) {
        let (slot, leading) = (m.slot, m.status().role == Role::Leader);
        let log = m.log.clone();
        m.driver.shutdown().unwrap();
        assert_eq!(log.lock().unwrap().stops.len(), leading as usize);
        assert!(log.lock().unwrap().failures.is_empty());
        assert!(block_term(&meta, fsid, slot, EventKind::End) >= term3);
    }
    // Only the crashed leader's server may still be running.
    assert_eq!(find_server(&meta).unwrap().map(|l| l.slot), Some(slot2));
}

/// Datagrams that are not messages for us, sent to a follower: each is
/// counted by kind, and nothing changes.
fn garbage_is_counted_and_ignored(f: &Member, codec: MessageCodec, leader: SlotNr, term: Term) {
    let before = f.status();
    // Well formed and signed with the cluster key, each wrong in a field.
    let raw = |ty: u8, from: u8| {
        let mut b = QuorumMessage {
            fsid: codec.fsid.into(),
            version: codec.version.into(),
            term: (term.0 + 5).into(),
            ty,
            from,
            ..Default::default()
        }
        .to_bytes();
        let mac = codec.key.mac(&[&b[..QUORUM_MESSAGE_MAC_OFFSET]]);
        b[QUORUM_MESSAGE_MAC_OFFSET..].copy_from_slice(&mac);
        b
    };
    // A valid heartbeat of a greater term would depose the leader: these
    // are each wrong in one way.
    let heartbeat = Message {
        ty: MsgType::Heartbeat,
        term: Term(term.0 + 5),
        from: leader,
    };
    let other_fs = MessageCodec {
        fsid: codec.fsid ^ 1,
        ..codec
    };
    let mut bad_crc = codec.encode(&heartbeat);
    bad_crc[20] ^= 0x10;
    // Forged: valid crcs and every field right, but made without the key
    // (one pushing the term to its end, which would end elections).
    assert!(codec.key.is_secret(), "mkfs makes a cluster key");
    let forger = MessageCodec {
        key: scoutfs_core::cluster::auth::ClusterKey::new([0; 32]),
        ..codec
    };
    let to_the_end = Message {
        term: Term(u64::MAX),
        ..heartbeat
    };
    let datagrams: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        Vec::new(),
        vec![0xff; 100],
        bad_crc.to_vec(),
        other_fs.encode(&heartbeat).to_vec(),
        raw(9, leader.0).to_vec(),
        raw(QUORUM_MSG_HEARTBEAT, 14).to_vec(),
        raw(QUORUM_MSG_HEARTBEAT, 200).to_vec(),
        forger.encode(&heartbeat).to_vec(),
        forger.encode(&to_the_end).to_vec(),
        raw(QUORUM_MSG_HEARTBEAT, leader.0)[..QUORUM_MESSAGE_MAC_OFFSET].to_vec(),
    ];
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in &datagrams {
        sock.send_to(d, before.addr).unwrap();
    }
    let n = datagrams.len() as u64;
    let (st, _) = wait_for("garbage counted", || {
        let st = f.status();
        match st.messages.bad.total() - before.messages.bad.total() {
            c if c == n => Ok(st),
            c => Err(format!("{c} of {n} counted: {:?}", st.messages.bad)),
        }
    });
    let (b, a) = (before.messages.bad, st.messages.bad);
    assert_eq!(a.length - b.length, 4);
    assert_eq!(a.unauthenticated - b.unauthenticated, 2);
    assert_eq!(a.crc - b.crc, 1);
    assert_eq!(a.fsid - b.fsid, 1);
    assert_eq!(a.msg_type - b.msg_type, 1);
    assert_eq!(a.slot_unconfigured - b.slot_unconfigured, 1);
    assert_eq!(a.slot_range - b.slot_range, 1);
    assert_eq!(
        (st.role, st.term, st.leader),
        (Role::Follower, term, Some(leader))
    );
    assert!(st.failed.is_none());
}

/// Waits for the member's server to have been started, and returns its term.
fn started(m: &Member) -> Term {
    let (term, _) = wait_for("a server start", || match m.starts().first() {
        Some(s) => Ok(s.term),
        None => Err(format!("{:?}", m.status())),
    });
    term
}

/// Waits for the driver to stop as if crashed; returns why.
fn failed(m: &Member) -> String {
    wait_for("a failed driver", || {
        let st = m.status();
        st.failed.clone().ok_or_else(|| format!("{st:?}"))
    })
    .0
}

#[test]
fn a_lone_member_persists_its_election_before_starting_and_stops_when_a_write_fails() {
    let (meta, mut members, _) = cluster(&[3], false);
    let m = members.pop().unwrap();
    let fsid = read_super(&meta, true).unwrap().hdr.fsid.get();
    let term = started(&m);
    assert_eq!(term, Term(1));
    // The ELECT that came before the start was flushed: a power loss now
    // keeps it.
    meta.crash(CrashMode::LoseAll);
    assert_eq!(block_term(&meta, fsid, m.slot, EventKind::Elect), term);
    assert_eq!(block_term(&meta, fsid, m.slot, EventKind::Fence), Term(0));

    // The server comes up, but recording FENCE fails: the driver stops the
    // server and itself, as if the mount crashed.
    meta.fail_writes_after(0);
    m.driver.server_up(term);
    let why = failed(&m);
    assert!(why.contains("stopped as if crashed"), "{why}");
    assert_eq!(m.stops(), [term]);
    assert_eq!(m.failures(), [why]);
    meta.clear_faults();
    let persists = m.status().persists;
    let err = m.driver.shutdown().unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let qb = read_quorum_block(&meta, fsid, SlotNr(3)).unwrap();
    assert_eq!(event_term(&qb, EventKind::Fence), Term(0));
    assert_eq!(
        event_term(&qb, EventKind::End),
        Term(0),
        "nothing written after the failure"
    );
    // BEGIN, TERM and ELECT: one write each.
    assert_eq!((qb.write_nr.get(), persists), (3, 3));
}

#[test]
fn another_writer_of_our_slot_stops_the_driver() {
    let (meta, mut members, _) = cluster(&[0], false);
    let m = members.pop().unwrap();
    let fsid = read_super(&meta, true).unwrap().hdr.fsid.get();
    let term = started(&m);
    // A second mount on slot 0 (on another host, say) writes its BEGIN.
    let mut qb = read_quorum_block(&meta, fsid, SlotNr(0)).unwrap();
    record_events(
        &mut qb,
        Rid(0xbad),
        &[(EventKind::Begin, term)],
        Timespec::new(1, 0),
    );
    let mut buf = qb.to_block();
    scoutfs_core::store::block::write_sm(&meta, QUORUM_BLKNO, &mut buf).unwrap();
    meta.flush().unwrap();
    m.driver.server_up(term);
    let why = failed(&m);
    assert!(why.contains("another mount is using slot 0"), "{why}");
    assert_eq!(m.stops(), [term]);
    assert_eq!(m.failures(), [why]);
    assert!(m.driver.shutdown().is_err());
    let after = read_quorum_block(&meta, fsid, SlotNr(0)).unwrap();
    assert_eq!(
        (after.write_nr, after.events),
        (qb.write_nr, qb.events),
        "the driver wrote nothing over the other mount's block"
    );
}

#[test]
fn stale_server_reports_are_counted_and_ignored() {
    let (_meta, mut members, _) = cluster(&[2], false);
    let m = members.pop().unwrap();
    let term = started(&m);
    // Reports for a term we never started a server for.
    m.driver.server_up(Term(term.0 + 1));
    m.driver.server_stopped(Term(term.0 + 7));
    let (st, _) = wait_for("stale reports counted", || {
        let st = m.status();
        match st.stale_server_reports {
            2 => Ok(st),
            n => Err(format!("{n}")),
        }
    });
    assert_eq!(st.server, ServerState::Running { term, up: false });
    assert!(st.server_running);
    m.driver.server_up(term);
    let (st, _) = wait_for("server up", || {
        let st = m.status();
        match st.server {
            ServerState::Running { up: true, .. } => Ok(st),
            s => Err(format!("{s:?}")),
        }
    });
    assert_eq!(st.agent.unexpected_server_reports, 0);
    m.driver.shutdown().unwrap();
}

#[test]
fn start_refuses_unconfigured_slots_busy_addresses_and_corrupt_blocks() {
    let (meta, quorum) = make_fs(&[0, 2]);
    for slot in [1, 14, 15, 200] {
        let err = start_member(&meta, slot, 1, true).err().expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("quorum slot {slot} is not configured")),
            "{msg}"
        );
        assert!(msg.contains("configured slots: 0, 2"), "{msg}");
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let short = QuorumOptions {
        rid: Rid(1),
        heartbeat_timeout_ms: 1_000,
    };
    let server = Box::new(Recorder {
        log,
        quorum: None,
        auto_up: true,
        term: Mutex::new(None),
    });
    let err = QuorumDriver::start(Arc::new(meta.clone()), SlotNr(0), short, server)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("heartbeat timeout"), "{err}");

    let addr = quorum[0].1;
    match UdpSocket::bind(addr) {
        Ok(_holder) => {
            let err = start_member(&meta, 0, 1, true).err().expect("refused");
            let want = format!("quorum slot 0's address {addr} is in use");
            assert!(err.to_string().contains(&want), "{err}");
            assert!(in_use(&err));
        }
        // Someone took the port since mkfs: the start must fail the same.
        Err(_) => assert!(start_member(&meta, 0, 1, true).is_err()),
    }

    assert_eq!(find_server(&meta).unwrap(), None);
    // Slot 2's block goes bad: reading it is a corruption error, not a panic.
    meta.corrupt_byte(((QUORUM_BLKNO + 2) << BLOCK_SM_SHIFT) + 100);
    let err = find_server(&meta).unwrap_err();
    assert!(err.corruption().is_some(), "{err}");
    match start_member(&meta, 0, 1, true) {
        Err(e) => assert!(e.corruption().is_some() || in_use(&e), "{e}"),
        Ok(_) => panic!("started with a corrupt quorum block"),
    }
}
