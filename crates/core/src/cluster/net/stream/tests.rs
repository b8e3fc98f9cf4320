//! Unit tests of the net machines: one client and one server joined by a
//! hand-driven connection whose frames pass through their bytes.

use super::*;
use crate::cluster::lock::{LockMode, LockMsg};
use scoutfs_format::Key;

const FSID: u64 = 0x5c0f;
const RID: Rid = Rid(0xabc);

fn lock_msg() -> LockMsg {
    LockMsg {
        key: Key::new(16, 1024, 0, 0, 0, 0),
        write_seq: 0,
        old_mode: LockMode::Write,
        new_mode: LockMode::Read,
    }
}

fn limits(requests_max: usize) -> Limits {
    Limits {
        requests_max,
        ..Limits::default()
    }
}

fn wire_copy(f: &Frame) -> Frame {
    Frame::decode(&f.encode()).unwrap()
}

/// A client, a server, and the current connection between them.
struct Pair {
    c: ClientNet,
    s: ServerNet,
    conn: ConnId,
    to_server: VecDeque<Frame>,
    to_client: VecDeque<Frame>,
    /// Deliveries to the client's callers and handler.
    at_client: Vec<ClientOutput>,
    /// Deliveries to the server's handler.
    at_server: Vec<ServerOutput>,
    closed: Vec<ConnId>,
    accept: bool,
}

impl Pair {
    fn new() -> Pair {
        Pair::with(ClientConfig::new(FSID, RID), ServerConfig::new(FSID, 1))
    }

    fn with(c: ClientConfig, s: ServerConfig) -> Pair {
        Pair {
            c: ClientNet::new(c).unwrap(),
            s: ServerNet::new(s).unwrap(),
            conn: ConnId(0),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            at_client: Vec::new(),
            at_server: Vec::new(),
            closed: Vec::new(),
            accept: true,
        }
    }

    /// Moves every output to its queue.
    fn drain(&mut self) {
        while let Some(o) = self.c.poll_output() {
            match o {
                ClientOutput::Frame(f) => self.to_server.push_back(wire_copy(&f)),
                o => self.at_client.push(o),
            }
        }
        while let Some(o) = self.s.poll_output() {
            match o {
                ServerOutput::Frame { conn, frame } if conn == self.conn => {
                    self.to_client.push_back(wire_copy(&frame))
                }
                ServerOutput::Frame { .. } => {}
                ServerOutput::Close { conn } => self.closed.push(conn),
                ServerOutput::Greeting { conn, .. } if self.accept => {
                    self.at_server.push(o);
                    assert!(self.s.accept_greeting(conn));
                }
                o => self.at_server.push(o),
            }
        }
    }

    fn connect(&mut self) {
        self.conn = ConnId(self.conn.0 + 1);
        self.s.on_connected(self.conn).unwrap();
        self.c.on_connected();
        self.drain();
    }

    /// Loses everything written to the connection and breaks it.
    fn break_conn(&mut self) {
        self.drain();
        self.to_server.clear();
        self.to_client.clear();
        self.c.on_disconnected();
        self.s.on_disconnected(self.conn);
    }

    /// Delivers everything in flight until both ends are quiet.
    fn run(&mut self) {
        loop {
            self.drain();
            if let Some(f) = self.to_server.pop_front() {
                self.s.on_frame(self.conn, &f).unwrap();
            } else if let Some(f) = self.to_client.pop_front() {
                self.c.on_frame(&f).unwrap();
            } else {
                break;
            }
            self.c.check_invariants();
            self.s.check_invariants();
        }
    }

    fn server_requests(&mut self) -> Vec<(u64, Request)> {
        let mut v = Vec::new();
        self.at_server.retain(|o| match o {
            ServerOutput::Request { id, req, .. } => {
                v.push((*id, req.clone()));
                false
            }
            _ => true,
        });
        v
    }

    fn client_responses(&mut self) -> Vec<(u64, Response)> {
        let mut v = Vec::new();
        self.at_client.retain(|o| match o {
            ClientOutput::Response { id, resp } => {
                v.push((*id, resp.clone()));
                false
            }
            _ => true,
        });
        v
    }
}

#[test]
fn requests_and_responses_travel_both_ways() {
    let mut p = Pair::new();
    let id = p.c.send_request(&Request::Statfs).unwrap();
    assert!(
        p.c.poll_output().is_none(),
        "nothing is written before a connection"
    );
    p.connect();
    p.run();
    assert!(p.at_client.contains(&ClientOutput::Greeted {
        server_term: 1,
        new_server: true
    }));
    assert_eq!(p.server_requests(), vec![(id, Request::Statfs)]);
    p.s.send_response(RID, id, &Response::Error(libc::ENOSPC))
        .unwrap();
    let sid =
        p.s.send_request(RID, &ServerRequest::Invalidate(lock_msg()))
            .unwrap();
    p.run();
    assert_eq!(
        p.client_responses(),
        vec![(id, Response::Error(libc::ENOSPC))]
    );
    assert!(p.at_client.contains(&ClientOutput::Request {
        server_term: 1,
        id: sid,
        req: ServerRequest::Invalidate(lock_msg())
    }));
    p.c.send_response(1, sid, &ClientResponse::InvalidateDone(lock_msg()))
        .unwrap();
    p.run();
    assert!(p.at_server.contains(&ServerOutput::Response {
        rid: RID,
        id: sid,
        resp: ClientResponse::InvalidateDone(lock_msg())
    }));
    assert_eq!(
        p.c.send_response(1, sid, &ClientResponse::InvalidateDone(lock_msg())),
        Err(NetError::UnknownRequest { id: sid }),
        "answered once only"
    );
    assert_eq!(
        p.s.queued(RID),
        Some((0, 0)),
        "the client's answer acknowledged"
    );
    assert_eq!(p.c.queued_responses(), 1, "awaiting acknowledgement");
    assert_eq!(p.c.queued_requests(), 0);
}

#[test]
fn responses_stay_queued_until_acknowledged() {
    let mut p = Pair::new();
    p.connect();
    p.run();
    let a = p.c.send_request(&Request::GetRoots).unwrap();
    p.run();
    p.s.send_response(RID, a, &Response::Error(libc::EIO))
        .unwrap();
    p.run();
    assert_eq!(p.s.queued(RID), Some((0, 1)));
    p.c.send_request(&Request::Statfs).unwrap();
    p.run();
    assert_eq!(
        p.s.queued(RID),
        Some((0, 0)),
        "the next frame acknowledged it"
    );
}

#[test]
fn reconnecting_to_the_same_server_delivers_each_message_once() {
    let mut p = Pair::new();
    p.connect();
    p.run();
    let ids: Vec<u64> = (0..3)
        .map(|n| {
            p.c.send_request(&Request::AllocInodes { count: n })
                .unwrap()
        })
        .collect();
    p.run();
    assert_eq!(p.server_requests().len(), 3);
    for &id in &ids[..2] {
        p.s.send_response(RID, id, &Response::Inodes { ino: id, nr: 1 })
            .unwrap();
    }
    p.drain();
    // The responses are lost with the connection.
    p.break_conn();
    p.connect();
    p.run();
    assert_eq!(
        p.at_client[1],
        ClientOutput::Greeted {
            server_term: 1,
            new_server: false
        }
    );
    assert!(
        p.server_requests().is_empty(),
        "resent requests are dropped"
    );
    assert!(p.s.counters().duplicates >= 3);
    let got = p.client_responses();
    assert_eq!(got.len(), 2);
    p.s.send_response(RID, ids[2], &Response::Inodes { ino: 9, nr: 1 })
        .unwrap();
    p.break_conn();
    p.connect();
    p.run();
    assert_eq!(
        p.client_responses(),
        vec![(ids[2], Response::Inodes { ino: 9, nr: 1 })]
    );
    assert_eq!(
        p.c.counters().duplicates,
        0,
        "the greeting acknowledged the earlier responses: not resent"
    );
    assert_eq!(p.c.queued_requests(), 0);
}

#[test]
fn a_new_server_gets_the_requests_and_none_of_the_old_answers() {
    let mut p = Pair::new();
    p.connect();
    p.run();
    let a = p.c.send_request(&Request::GetLogTrees).unwrap();
    let sid = p.s.send_request(RID, &ServerRequest::SyncLogTrees).unwrap();
    p.run();
    assert_eq!(p.server_requests(), vec![(a, Request::GetLogTrees)]);
    p.c.send_response(1, sid, &ClientResponse::Done).unwrap();
    p.break_conn();
    assert_eq!(p.c.queued_responses(), 1);
    let sid2 = p.s.send_request(RID, &ServerRequest::SyncLogTrees).unwrap();
    p.drain();
    // The old server's request is pending at the client when it dies.
    p.s = ServerNet::new(ServerConfig::new(FSID, 2)).unwrap();
    p.at_client.clear();
    p.connect();
    p.run();
    assert_eq!(
        p.at_client,
        [ClientOutput::Greeted {
            server_term: 2,
            new_server: true
        }]
    );
    assert_eq!(p.c.queued_responses(), 0);
    assert_eq!(p.c.outstanding_server_requests(), 0);
    assert_eq!(p.server_requests(), vec![(a, Request::GetLogTrees)]);
    assert_eq!(
        p.c.send_response(1, sid2, &ClientResponse::Done),
        Err(NetError::UnknownRequest { id: sid2 })
    );
    // The new server numbers its own requests from 1 again.
    let nid = p.s.send_request(RID, &ServerRequest::SyncLogTrees).unwrap();
    p.run();
    assert_eq!(nid, 1);
    assert!(p.at_client.contains(&ClientOutput::Request {
        server_term: 2,
        id: 1,
        req: ServerRequest::SyncLogTrees
    }));
    // An answer to the old server's request 1 is not taken for the new one's.
    assert_eq!(
        p.c.send_response(1, 1, &ClientResponse::Done),
        Err(NetError::UnknownRequest { id: 1 })
    );
    p.c.send_response(2, 1, &ClientResponse::Done).unwrap();
}

#[test]
fn other_filesystems_and_formats_are_refused_on_both_sides() {
    let cases = [
        (
            ClientConfig::new(FSID + 1, RID),
            Refusal::Fsid {
                ours: FSID,
                peer: FSID + 1,
            },
            Refusal::Fsid {
                ours: FSID + 1,
                peer: FSID,
            },
        ),
        (
            ClientConfig {
                fmt_vers: FORMAT_VERSION + 1,
                ..ClientConfig::new(FSID, RID)
            },
            Refusal::FormatVersion {
                ours: FORMAT_VERSION,
                peer: FORMAT_VERSION + 1,
            },
            Refusal::FormatVersion {
                ours: FORMAT_VERSION + 1,
                peer: FORMAT_VERSION,
            },
        ),
    ];
    for (cc, server_says, client_says) in cases {
        let mut p = Pair::with(cc, ServerConfig::new(FSID, 1));
        p.connect();
        let g = p.to_server.pop_front().unwrap();
        assert_eq!(
            p.s.on_frame(p.conn, &g),
            Err(NetError::Refused(server_says))
        );
        p.drain();
        assert_eq!(p.closed, [p.conn]);
        let reply = p.to_client.pop_front().unwrap();
        assert_eq!(p.c.on_frame(&reply), Err(NetError::Refused(client_says)));
        assert!(client_says.is_permanent());
        assert!(p.s.peers().next().is_none());
    }
}

/// Greetings made without the cluster's key are dropped unanswered and
/// counted; a reply made without it is refused by the mount (and it
/// reconnects), so neither side ever acts on a stranger's greeting.
#[test]
fn greetings_without_the_cluster_key_are_dropped_and_counted() {
    use crate::cluster::auth::ClusterKey;
    let key = ClusterKey::new([0x42; 32]);
    let stranger = ClusterKey::new([0x43; 32]);
    let keyed_server = ServerConfig {
        key,
        ..ServerConfig::new(FSID, 1)
    };
    // A mount without the key: no answer at all, the connection closed.
    let mut p = Pair::with(ClientConfig::new(FSID, RID), keyed_server);
    p.connect();
    let g = p.to_server.pop_front().unwrap();
    let refused = Err(NetError::Refused(Refusal::Unauthenticated));
    assert_eq!(p.s.on_frame(p.conn, &g), refused);
    p.drain();
    assert_eq!(p.closed, [p.conn]);
    assert!(p.to_client.is_empty(), "a stranger gets no reply");
    assert!(p.at_server.is_empty());
    assert_eq!(p.s.counters().unauthenticated, 1);
    assert!(p.s.peers().next().is_none());
    // A keyed greeting replayed under a newer greeting id: refused too.
    let mut p = Pair::with(
        ClientConfig {
            key,
            ..ClientConfig::new(FSID, RID)
        },
        keyed_server,
    );
    p.connect();
    let g = p.to_server.pop_front().unwrap();
    let replay = frame(
        1,
        0,
        g.hdr().id + 1,
        Kind::Request,
        Cmd::Greeting,
        g.data().to_vec(),
    );
    assert_eq!(p.s.on_frame(p.conn, &replay), refused);
    // A server without the key: its reply is refused and not permanent.
    let mut p = Pair::with(
        ClientConfig {
            key: stranger,
            ..ClientConfig::new(FSID, RID)
        },
        ServerConfig {
            key: stranger,
            ..ServerConfig::new(FSID, 1)
        },
    );
    p.c = ClientNet::new(ClientConfig {
        key,
        ..ClientConfig::new(FSID, RID)
    })
    .unwrap();
    p.c.on_connected();
    let g = p.c.poll_output();
    let Some(ClientOutput::Frame(g)) = g else {
        panic!("no greeting: {g:?}")
    };
    let g = Greeting::decode(g.data()).unwrap();
    let data = Greeting {
        server_term: 1,
        ..g
    }
    .encode(&stranger, 1);
    let reply = frame(1, 0, 1, Kind::Response, Cmd::Greeting, data);
    assert_eq!(p.c.on_frame(&reply), refused);
    assert!(!Refusal::Unauthenticated.is_permanent());
    assert_eq!(p.c.counters().unauthenticated, 1);
    assert!(!p.c.is_ready());
    // With the key on both sides, all is well.
    let mut p = Pair::with(
        ClientConfig {
            key,
            ..ClientConfig::new(FSID, RID)
        },
        keyed_server,
    );
    p.connect();
    p.run();
    assert!(p.c.is_ready());
}

#[test]
fn a_forgotten_mount_is_refused() {
    let mut p = Pair::new();
    p.connect();
    p.run();
    assert!(p.s.forget(RID));
    p.drain();
    assert_eq!(p.closed, [p.conn]);
    p.break_conn();
    p.connect();
    let g = p.to_server.pop_front().unwrap();
    let refusal = Refusal::Forgotten { rid: RID };
    assert_eq!(p.s.on_frame(p.conn, &g), Err(NetError::Refused(refusal)));
    p.drain();
    let reply = p.to_client.pop_front().unwrap();
    assert_eq!(p.c.on_frame(&reply), Err(NetError::Refused(refusal)));
}

#[test]
fn the_newest_greeting_wins() {
    let mut p = Pair::new();
    p.connect();
    p.run();
    let old = p.conn;
    // The client gives up on `old` and greets again before the server
    // notices; the first attempt's greeting arrives last.
    p.c.on_disconnected();
    p.c.on_connected();
    let g1 = p.c.poll_output();
    p.c.on_disconnected();
    p.c.on_connected();
    let Some(ClientOutput::Frame(g2)) = p.c.poll_output() else {
        panic!("no greeting");
    };
    p.conn = ConnId(10);
    p.s.on_connected(p.conn).unwrap();
    p.s.on_frame(p.conn, &g2).unwrap();
    p.drain();
    assert_eq!(p.closed, [old], "the mount's older connection is closed");
    p.run();
    assert!(p.c.is_ready() && p.s.is_ready(RID));
    let Some(ClientOutput::Frame(g1)) = g1 else {
        panic!("no greeting");
    };
    p.s.on_connected(ConnId(11)).unwrap();
    let r = p.s.on_frame(ConnId(11), &g1);
    assert!(matches!(
        r,
        Err(NetError::Refused(Refusal::StaleGreeting {
            id: 2,
            newest: 3,
            ..
        }))
    ));
    assert!(p.s.is_ready(RID), "the stale greeting changed nothing");
    p.s.on_frame(old, &g2).unwrap();
    p.s.check_invariants();
}

#[test]
fn a_full_queue_is_an_error_to_the_caller() {
    let mut p = Pair::with(
        ClientConfig {
            limits: limits(2),
            ..ClientConfig::new(FSID, RID)
        },
        ServerConfig {
            limits: limits(2),
            ..ServerConfig::new(FSID, 1)
        },
    );
    let a = p.c.send_request(&Request::Statfs).unwrap();
    p.c.send_request(&Request::Statfs).unwrap();
    assert_eq!(
        p.c.send_request(&Request::Statfs),
        Err(NetError::QueueFull { max: 2 })
    );
    p.connect();
    p.run();
    p.s.send_response(RID, a, &Response::Error(libc::EIO))
        .unwrap();
    p.run();
    p.c.send_request(&Request::Statfs).unwrap();
}

#[test]
fn a_canceled_request_keeps_its_slot_until_answered() {
    let mut p = Pair::with(
        ClientConfig {
            limits: limits(1),
            ..ClientConfig::new(FSID, RID)
        },
        ServerConfig {
            limits: limits(1),
            ..ServerConfig::new(FSID, 1)
        },
    );
    p.connect();
    p.run();
    let a = p.c.send_request(&Request::Statfs).unwrap();
    assert!(p.c.cancel(a));
    assert!(!p.c.cancel(a));
    assert!(matches!(
        p.c.send_request(&Request::Statfs),
        Err(NetError::QueueFull { .. })
    ));
    p.run();
    p.s.send_response(RID, a, &Response::Error(libc::EIO))
        .unwrap();
    p.run();
    assert!(p.client_responses().is_empty());
    assert_eq!(p.c.counters().canceled_responses, 1);
    p.c.send_request(&Request::Statfs).unwrap();
}

#[test]
fn a_peer_beyond_our_limit_is_refused() {
    let mut p = Pair::with(
        ClientConfig {
            limits: limits(2),
            ..ClientConfig::new(FSID, RID)
        },
        ServerConfig {
            limits: limits(1),
            ..ServerConfig::new(FSID, 1)
        },
    );
    p.connect();
    p.run();
    p.c.send_request(&Request::Statfs).unwrap();
    p.c.send_request(&Request::Statfs).unwrap();
    p.drain();
    let f = p.to_server.pop_front().unwrap();
    p.s.on_frame(p.conn, &f).unwrap();
    let f = p.to_server.pop_front().unwrap();
    assert_eq!(
        p.s.on_frame(p.conn, &f),
        Err(NetError::PeerOverrun { max: 1 })
    );
    p.drain();
    assert_eq!(p.closed, [p.conn]);
    assert!(!p.s.is_ready(RID));
}

fn frame(seq: u64, recv_seq: u64, id: u64, kind: Kind, cmd: Cmd, data: Vec<u8>) -> Frame {
    let hdr = FrameHeader {
        seq,
        recv_seq,
        id,
        kind,
        cmd,
        error: None,
    };
    Frame::new(hdr, data).unwrap()
}

#[test]
fn protocol_violations_close_the_connection() {
    let statfs = |seq, ack, id| frame(seq, ack, id, Kind::Request, Cmd::Statfs, vec![]);
    // Anything but a greeting first.
    let mut s = ServerNet::new(ServerConfig::new(FSID, 1)).unwrap();
    s.on_connected(ConnId(1)).unwrap();
    assert!(matches!(
        s.on_frame(ConnId(1), &statfs(1, 0, 1)),
        Err(NetError::Protocol { .. })
    ));
    assert_eq!(
        s.poll_output(),
        Some(ServerOutput::Close { conn: ConnId(1) })
    );
    assert_eq!(s.on_frame(ConnId(1), &statfs(1, 0, 1)), Ok(()), "ignored");
    assert_eq!(
        s.on_frame(ConnId(2), &statfs(1, 0, 1)),
        Err(NetError::UnknownConn { conn: ConnId(2) })
    );

    let bad: [(&str, Frame); 5] = [
        ("ack of an unsent seq", statfs(5, 1, 5)),
        ("id not increasing", statfs(6, 0, 1)),
        (
            "response to nothing",
            frame(6, 0, 9, Kind::Response, Cmd::Statfs, vec![]),
        ),
        (
            "server-only command",
            frame(6, 0, 9, Kind::Request, Cmd::SyncLogTrees, vec![]),
        ),
        (
            "second greeting",
            frame(6, 0, 9, Kind::Request, Cmd::Greeting, vec![]),
        ),
    ];
    for (what, f) in bad {
        let mut p = Pair::new();
        p.connect();
        p.run();
        for _ in 0..2 {
            p.c.send_request(&Request::Statfs).unwrap();
        }
        p.run();
        assert!(p.s.on_frame(p.conn, &f).is_err(), "{what}");
        p.drain();
        assert_eq!(p.closed, [p.conn], "{what}");
        p.s.check_invariants();
    }

    // The client: a request before the greeting reply, a reply to another
    // greeting, a response for a request it never sent.
    let mut p = Pair::new();
    p.connect();
    assert!(p.c.on_frame(&statfs(1, 0, 1)).is_err());
    assert_eq!(p.c.on_frame(&statfs(1, 0, 1)), Err(NetError::NotConnected));
    p.connect();
    let g = Greeting {
        fsid: FSID,
        fmt_vers: FORMAT_VERSION,
        server_term: 1,
        rid: RID.0,
        flags: 0,
    };
    let data = g.encode(&ClientConfig::new(FSID, RID).key, 1);
    let reply = frame(1, 0, 1, Kind::Response, Cmd::Greeting, data);
    assert!(p.c.on_frame(&reply).is_err(), "greeting 2 is current");
    p.to_client.clear();
    p.to_server.clear();
    p.connect();
    p.run();
    let f = frame(1, 0, 7, Kind::Response, Cmd::Statfs, vec![]);
    assert!(p.c.on_frame(&f).is_err());
    assert!(!p.c.is_ready());
}

#[test]
fn configurations_refuse_zero_ids_and_limits() {
    assert!(ClientNet::new(ClientConfig::new(FSID, Rid(0))).is_err());
    let flags = ClientConfig {
        flags: 4,
        ..ClientConfig::new(FSID, RID)
    };
    assert!(ClientNet::new(flags).is_err());
    assert!(ServerNet::new(ServerConfig::new(FSID, 0)).is_err());
    let zero = ServerConfig {
        limits: limits(0),
        ..ServerConfig::new(FSID, 1)
    };
    assert!(ServerNet::new(zero).is_err());
    let mut c = ClientNet::new(ClientConfig::new(FSID, RID)).unwrap();
    assert!(c.set_flags(wire::GREETING_FLAG_FAREWELL).is_ok());
    assert!(c.set_flags(8).is_err());
    assert_eq!(
        c.send_request(&Request::Greeting { rid: RID.0 }),
        Err(NetError::Encode(EncodeError::Greeting))
    );
}

#[test]
fn greetings_wait_for_the_server_layer() {
    let mut p = Pair::new();
    p.accept = false;
    let id = p.c.send_request(&Request::Farewell).unwrap();
    p.connect();
    p.run();
    assert!(!p.c.is_ready());
    let Some(ServerOutput::Greeting {
        conn,
        rid,
        client_term,
        flags,
    }) = p.at_server.pop()
    else {
        panic!("no greeting delivered");
    };
    assert_eq!((conn, rid, client_term, flags), (p.conn, RID, 0, 0));
    p.s.send_request(RID, &ServerRequest::SyncLogTrees).unwrap();
    p.drain();
    assert!(p.to_client.is_empty(), "nothing before the reply");
    assert!(p.s.accept_greeting(conn));
    assert!(!p.s.accept_greeting(conn));
    p.run();
    assert!(p.c.is_ready());
    assert_eq!(p.server_requests(), vec![(id, Request::Farewell)]);
    assert!(p.at_client.contains(&ClientOutput::Request {
        server_term: 1,
        id: 1,
        req: ServerRequest::SyncLogTrees
    }));
}

#[test]
fn the_server_bounds_mounts_and_connections() {
    let cfg = ServerConfig {
        limits: Limits {
            requests_max: 4,
            conns_max: 2,
            peers_max: 1,
        },
        ..ServerConfig::new(FSID, 1)
    };
    let mut p = Pair::with(ClientConfig::new(FSID, RID), cfg);
    p.connect();
    p.run();
    // A second mount finds no room, and says so.
    let mut other = ClientNet::new(ClientConfig::new(FSID, Rid(7))).unwrap();
    other.on_connected();
    let Some(ClientOutput::Frame(g)) = other.poll_output() else {
        panic!("no greeting");
    };
    p.s.on_connected(ConnId(50)).unwrap();
    assert_eq!(
        p.s.on_frame(ConnId(50), &g),
        Err(NetError::Refused(Refusal::TooManyMounts))
    );
    let Some(ServerOutput::Frame { frame, .. }) = p.s.poll_output() else {
        panic!("no refusal");
    };
    assert_eq!(
        other.on_frame(&wire_copy(&frame)),
        Err(NetError::Refused(Refusal::TooManyMounts))
    );
    assert!(!Refusal::TooManyMounts.is_permanent());
    // Two connections are open (one closing); a third is refused.
    assert_eq!(
        p.s.on_connected(ConnId(51)),
        Err(NetError::TooManyConns { max: 2 })
    );
    p.s.on_disconnected(ConnId(50));
    p.s.on_connected(ConnId(51)).unwrap();
    p.s.check_invariants();
}
