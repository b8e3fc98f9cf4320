//! A deterministic simulation of reliable messaging (`net`) between one
//! mount and a succession of servers.
//!
//! One thread runs a [`ClientNet`] and the current [`ServerNet`], joined by
//! simulated TCP connections that carry bytes: frames are encoded, cut into
//! chunks of random sizes and reassembled by a `FrameReader` on each side. A
//! seeded generator picks every step: the client sends a request or cancels
//! one; the server's handler answers a request, accepts a greeting or asks
//! the client something (a lock invalidation, a sync); the client's handler
//! answers; a chunk of bytes moves in either direction. Faults: a connection
//! breaks (each direction keeps a random prefix of what was in flight, the
//! rest is lost, and each side notices at its own later step, reading what
//! arrived meanwhile), the client abandons a working connection (a
//! keepalive timeout), a byte in flight is corrupted (the reader refuses the
//! frame and that side closes), and the server dies and a new one with a
//! greater term takes over. Everything queued is resent after reconnecting,
//! so messages arrive again and again across connections.
//!
//! The server's handler is idempotent by request id, like the real one: the
//! first server to handle a request records its effect and answer in a
//! durable model (inode numbers are handed out once per request id), and
//! later servers answer the same.
//!
//! Checked after every step: both machines' `check_invariants` and their
//! queue bounds; no server's handler gets a request twice, and what it gets
//! is what the client sent; every response the client's callers get is the
//! durable answer, for a request that was outstanding and not canceled, and
//! comes once; every request the client's handler gets comes once from its
//! server, and every answer a server gets answers its own request, once; an
//! answer to a replaced server's request is refused. At the end faults and
//! new work stop and everything must drain within a step bound: every
//! request the client made and did not cancel has exactly one response, the
//! last server's requests are all answered, and nothing is left queued.
//!
//! A failure prints its seed and a replay command;
//! `SCOUTFS_SIM_SEED=<seed>` runs that seed alone and traces every step, and
//! `SCOUTFS_SIM_SEEDS=<n>` runs seeds 0..n instead of the default set.

mod common;

use scoutfs_core::cluster::lock::{LockMode, LockMsg, RecoverEntry};
use scoutfs_core::cluster::net::msg::{
    ClientResponse, OpenInoMap, Request, Response, ServerRequest, StatfsInfo, WaitingBlock,
};
use scoutfs_core::cluster::net::stream::{
    ClientConfig, ClientNet, ClientOutput, ConnId, Limits, NetCounters, NetError, Refusal,
    ServerConfig, ServerNet, ServerOutput,
};
use scoutfs_core::cluster::net::wire::{encode_request, FrameReader, GREETING_FLAG_QUORUM};
use scoutfs_core::rng::Rng;
use scoutfs_core::types::Rid;
use scoutfs_format::log_trees::LogTrees;
use scoutfs_format::Key;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Seeds run by the tests below, split in parts the harness runs in parallel.
/// The client's answer to a server request: it echoes the request, so an
/// answer delivered for the wrong request is caught.
fn answer(req: &ServerRequest) -> ClientResponse {
    match req {
        ServerRequest::Invalidate(m) => ClientResponse::InvalidateDone(*m),
        ServerRequest::SyncLogTrees => ClientResponse::Done,
        ServerRequest::OpenInoMap { group } => ClientResponse::OpenInoMap(Box::new(OpenInoMap {
            group: *group,
            bits: [*group; 16],
        })),
        ServerRequest::LockRecover { first } => ClientResponse::LockRecover {
            entries: vec![RecoverEntry {
                key: *first,
                mode: LockMode::Read,
                write_seq: first.first,
            }],
            more: first.first % 2 == 0,
        },
        ServerRequest::DataWaiting(q) => ClientResponse::DataWaiting(vec![WaitingBlock {
            ino: q.after_ino,
            iblock: q.after_iblock,
            ops: 1,
        }]),
        ServerRequest::DataWaitErr(f) => ClientResponse::Count(f.ino),
        ServerRequest::WaitersNew(_) => ClientResponse::Done,
    }
}

const SEEDS: u64 = 1200;
const PARTS: u64 = 4;
/// Steps with new work and faults, then steps allowed to drain.
const WORK_STEPS: u64 = 1000;
const DRAIN_STEPS_MAX: u64 = 20_000;
/// Connections the simulation keeps (open on at least one side) at most.
const CONNS_MAX: usize = 16;

const FSID: u64 = 0x005c_0ff5;
const RID: Rid = Rid(0x1d);

/// One simulated TCP connection.
struct Conn {
    id: ConnId,
    /// The term of the server it was made to.
    term: u64,
    /// Bytes the client wrote and the server has not read.
    up: VecDeque<u8>,
    /// Bytes the server wrote and the client has not read.
    down: VecDeque<u8>,
    up_reader: FrameReader,
    down_reader: FrameReader,
    /// The network broke: whatever is written from now on is lost.
    broken: bool,
    /// The client still uses it (it hasn't noticed a break or given up).
    client_open: bool,
    /// The server still has it.
    server_open: bool,
}

impl Conn {
    fn new(id: ConnId, term: u64) -> Conn {
        Conn {
            id,
            term,
            up: VecDeque::new(),
            down: VecDeque::new(),
            up_reader: FrameReader::new(),
            down_reader: FrameReader::new(),
            broken: false,
            client_open: true,
            server_open: true,
        }
    }

    /// Whether the client would see an error or end of stream.
    fn dead_to_client(&self) -> bool {
        self.broken || !self.server_open
    }

    fn dead_to_server(&self) -> bool {
        self.broken || !self.client_open
    }
}

/// One server incarnation and its handler's model.
struct Server {
    net: ServerNet,
    term: u64,
    /// Request ids given to this server's handler.
    delivered: BTreeSet<u64>,
    /// The handler's unanswered requests.
    pending: Vec<(u64, Request)>,
    /// Greetings the server layer has yet to accept.
    greetings: Vec<ConnId>,
    /// Requests this server asked the client, and those answered.
    asked: BTreeMap<u64, ServerRequest>,
    answered: BTreeSet<u64>,
}

impl Server {
    fn new(term: u64, limits: Limits) -> Server {
        let cfg = ServerConfig {
            limits,
            ..ServerConfig::new(FSID, term)
        };
        Server {
            net: ServerNet::new(cfg).expect("a valid server configuration"),
            term,
            delivered: BTreeSet::new(),
            pending: Vec::new(),
            greetings: Vec::new(),
            asked: BTreeMap::new(),
            answered: BTreeSet::new(),
        }
    }
}

/// What a run exercised, summed over seeds and printed.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    steps: u64,
    requests: u64,
    responses: u64,
    cancels: u64,
    queue_full: u64,
    server_requests: u64,
    server_answers: u64,
    void_answers: u64,
    connects: u64,
    breaks: u64,
    abandons: u64,
    corruptions: u64,
    server_changes: u64,
    stale_greetings: u64,
    resent_frames: u64,
    duplicates: u64,
    canceled_responses: u64,
}

impl common::sim::Totals for Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.requests += o.requests;
        self.responses += o.responses;
        self.cancels += o.cancels;
        self.queue_full += o.queue_full;
        self.server_requests += o.server_requests;
        self.server_answers += o.server_answers;
        self.void_answers += o.void_answers;
        self.connects += o.connects;
        self.breaks += o.breaks;
        self.abandons += o.abandons;
        self.corruptions += o.corruptions;
        self.server_changes += o.server_changes;
        self.stale_greetings += o.stale_greetings;
        self.resent_frames += o.resent_frames;
        self.duplicates += o.duplicates;
        self.canceled_responses += o.canceled_responses;
    }
}

impl Stats {
    fn count(&mut self, c: NetCounters) {
        self.resent_frames += c.frames_after_greeting;
        self.duplicates += c.duplicates;
        self.canceled_responses += c.canceled_responses;
    }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    ClientSend,
    ClientCancel,
    ClientAnswer,
    ServerSend,
    ServerAnswer,
    ServerAccept,
    DeliverUp,
    DeliverDown,
    Connect,
    ClientNotice,
    ServerNotice,
    Break,
    Abandon,
    Corrupt,
    ServerChange,
}

struct Sim {
    seed: u64,
    rng: Rng,
    trace: bool,
    step: u64,
    limits: Limits,
    /// The client's greeting flags.
    flags: u64,
    chunk_max: usize,
    /// Per-seed weights of the faults.
    break_w: u64,
    corrupt_w: u64,
    change_w: u64,
    client: ClientNet,
    /// The connection the client uses, if any.
    client_conn: Option<ConnId>,
    server: Server,
    conns: Vec<Conn>,
    next_conn: u64,
    /// Every request the client sent, by id.
    sent: BTreeMap<u64, Request>,
    /// Requests awaiting their response, and whether canceled.
    outstanding: BTreeMap<u64, bool>,
    /// Requests whose response was delivered.
    answered: BTreeSet<u64>,
    /// The durable effect of each handled request: its answer.
    durable: BTreeMap<u64, Response>,
    next_ino: u64,
    /// The client handler's unanswered server requests: (term, id, request).
    handling: Vec<(u64, u64, ServerRequest)>,
    /// Server requests the client was given, by (term, id).
    client_seen: BTreeSet<(u64, u64)>,
    /// What each server asked, by term, to check what the client got.
    asked_by_term: BTreeMap<u64, BTreeMap<u64, ServerRequest>>,
    draining: bool,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64, trace: bool) -> Sim {
        let mut rng = Rng::new(seed);
        let limits = Limits {
            requests_max: 1 + rng.below(8) as usize,
            ..Limits::default()
        };
        let flags = if rng.below(2) == 1 {
            GREETING_FLAG_QUORUM
        } else {
            0
        };
        let cfg = ClientConfig {
            flags,
            limits,
            ..ClientConfig::new(FSID, RID)
        };
        let first_term = 1 + rng.below(5);
        let chunk_max = [3, 16, 64, 256, 4096][rng.below(5) as usize];
        // Fault weights, against about 500 for the ordinary events.
        let break_w = [0, 1, 3, 8][rng.below(4) as usize];
        let corrupt_w = [0, 1, 2][rng.below(3) as usize];
        let change_w = [0, 1, 3][rng.below(3) as usize];
        let sim = Sim {
            seed,
            rng,
            trace,
            step: 0,
            limits,
            flags,
            chunk_max,
            break_w,
            corrupt_w,
            change_w,
            client: ClientNet::new(cfg).expect("a valid client configuration"),
            client_conn: None,
            server: Server::new(first_term, limits),
            conns: Vec::new(),
            next_conn: 1,
            sent: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            answered: BTreeSet::new(),
            durable: BTreeMap::new(),
            next_ino: 1024,
            handling: Vec::new(),
            client_seen: BTreeSet::new(),
            asked_by_term: BTreeMap::new(),
            draining: false,
            stats: Stats::default(),
        };
        sim.log(format_args!(
            "requests_max {} chunk_max {chunk_max} faults: break {break_w} corrupt {corrupt_w} \
             change {change_w}",
            limits.requests_max
        ));
        sim
    }

    fn log(&self, args: std::fmt::Arguments<'_>) {
        if self.trace {
            eprintln!("[{} {}] {args}", self.seed, self.step);
        }
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    fn conn_idx(&self, id: ConnId) -> Option<usize> {
        self.conns.iter().position(|c| c.id == id)
    }

    fn possible_events(&self) -> Vec<(Event, u64)> {
        let mut ev = Vec::new();
        let work = !self.draining;
        let cur = self.client_conn.and_then(|id| self.conn_idx(id));
        let server_readable = self
            .conns
            .iter()
            .any(|c| c.server_open && c.term == self.server.term && !c.up.is_empty());
        let server_notices = self.conns.iter().any(|c| {
            c.server_open && c.term == self.server.term && c.dead_to_server() && c.up.is_empty()
        });
        let mut push = |e, w: u64, ok: bool| {
            if ok && w > 0 {
                ev.push((e, w));
            }
        };
        push(Event::ClientSend, 40, work);
        push(
            Event::ClientCancel,
            3,
            work && self.outstanding.values().any(|c| !c),
        );
        push(Event::ClientAnswer, 40, !self.handling.is_empty());
        push(
            Event::ServerSend,
            15,
            work && self.server.net.peers().any(|r| r == RID),
        );
        push(Event::ServerAnswer, 40, !self.server.pending.is_empty());
        push(Event::ServerAccept, 40, !self.server.greetings.is_empty());
        push(Event::DeliverUp, 100, server_readable);
        push(
            Event::DeliverDown,
            100,
            cur.is_some_and(|i| !self.conns[i].down.is_empty()),
        );
        push(
            Event::Connect,
            40,
            cur.is_none() && self.conns.len() < CONNS_MAX,
        );
        // Each side notices a dead connection once it has read what arrived,
        // or at once (a reset); either may be first.
        let dead = cur.is_some_and(|i| self.conns[i].dead_to_client());
        push(Event::ClientNotice, 30, dead);
        push(Event::ServerNotice, 30, server_notices);
        push(Event::Break, self.break_w, work && cur.is_some());
        // A keepalive timeout. When draining, only for a connection where
        // nothing is in flight and nobody has work: one stuck on a frame
        // whose corrupted length promises bytes that never come.
        let stalled = cur.is_some_and(|i| {
            let c = &self.conns[i];
            c.up.is_empty()
                && c.down.is_empty()
                && self.server.greetings.is_empty()
                && self.server.pending.is_empty()
                && self.handling.is_empty()
        });
        push(
            Event::Abandon,
            if work { 1 } else { 10 },
            cur.is_some() && (work || stalled),
        );
        let in_flight = self
            .conns
            .iter()
            .any(|c| !c.up.is_empty() || !c.down.is_empty());
        push(Event::Corrupt, self.corrupt_w, work && in_flight);
        push(Event::ServerChange, self.change_w, work);
        ev
    }

    fn step(&mut self) -> bool {
        let ev = self.possible_events();
        let total: u64 = ev.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return false;
        }
        let mut pick = self.rng.below(total);
        let mut chosen = ev[0].0;
        for (e, w) in ev {
            if pick < w {
                chosen = e;
                break;
            }
            pick -= w;
        }
        self.log(format_args!("{chosen:?}"));
        match chosen {
            Event::ClientSend => self.client_send(),
            Event::ClientCancel => self.client_cancel(),
            Event::ClientAnswer => self.client_answer(),
            Event::ServerSend => self.server_send(),
            Event::ServerAnswer => self.server_answer(),
            Event::ServerAccept => self.server_accept(),
            Event::DeliverUp => self.deliver_up(),
            Event::DeliverDown => self.deliver_down(),
            Event::Connect => self.connect(),
            Event::ClientNotice | Event::Abandon => self.client_drop_conn(chosen),
            Event::ServerNotice => self.server_notice(),
            Event::Break => self.break_conn(),
            Event::Corrupt => self.corrupt(),
            Event::ServerChange => self.server_change(),
        }
        self.conns.retain(|c| c.client_open || c.server_open);
        true
    }

    // --- the client and its callers ---------------------------------------

    fn random_request(&mut self) -> Request {
        let n = self.rng.next_u64();
        match self.below(8) {
            0 => Request::AllocInodes { count: 1 + n % 100 },
            1 => Request::GetLogTrees,
            2 => Request::CommitLogTrees(Box::new(LogTrees {
                rid: RID.0.into(),
                nr: 1.into(),
                get_trans_seq: n.into(),
                ..Default::default()
            })),
            3 => Request::GetRoots,
            4 => Request::Lock(LockMsg {
                key: Key::inode(n % 4096),
                write_seq: 0,
                old_mode: LockMode::Null,
                new_mode: LockMode::Write,
            }),
            5 => Request::Statfs,
            6 => Request::OpenInoMap { group: n % 100 },
            _ => Request::Farewell,
        }
    }

    fn client_send(&mut self) {
        let req = self.random_request();
        match self.client.send_request(&req) {
            Ok(id) => {
                let cmd = encode_request(&req).map(|(c, _)| c);
                self.log(format_args!("client request {id}: {cmd:?}"));
                self.stats.requests += 1;
                assert!(self.sent.insert(id, req).is_none(), "id {id} reused");
                self.outstanding.insert(id, false);
            }
            Err(NetError::QueueFull { max }) => {
                assert_eq!(max, self.limits.requests_max);
                assert_eq!(self.client.queued_requests(), max);
                self.stats.queue_full += 1;
            }
            Err(e) => panic!("send_request: {e}"),
        }
        self.client_outputs();
    }

    fn client_cancel(&mut self) {
        let live: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, c)| !**c)
            .map(|(id, _)| *id)
            .collect();
        let id = live[self.below(live.len())];
        assert!(self.client.cancel(id), "request {id} was not awaiting");
        self.outstanding.insert(id, true);
        self.stats.cancels += 1;
        self.log(format_args!("client cancels {id}"));
    }

    fn client_answer(&mut self) {
        let i = self.below(self.handling.len());
        let (term, id, req) = self.handling.remove(i);
        let resp = answer(&req);
        match self.client.send_response(term, id, &resp) {
            Ok(()) => assert_eq!(term, self.client.server_term()),
            Err(NetError::UnknownRequest { .. }) => {
                assert_ne!(term, self.client.server_term(), "request {id} refused");
                self.stats.void_answers += 1;
            }
            Err(e) => panic!("send_response: {e}"),
        }
        self.log(format_args!("client answers {term}.{id}"));
        self.client_outputs();
    }

    fn client_outputs(&mut self) {
        while let Some(o) = self.client.poll_output() {
            match o {
                ClientOutput::Frame(f) => {
                    let i = self.client_conn.and_then(|id| self.conn_idx(id));
                    let Some(i) = i else {
                        panic!("a frame without a connection: {f:?}");
                    };
                    let c = &mut self.conns[i];
                    if !c.broken && c.server_open {
                        c.up.extend(f.encode());
                    }
                }
                ClientOutput::Greeted {
                    server_term,
                    new_server,
                } => self.greeted(server_term, new_server),
                ClientOutput::Response { id, resp } => self.client_response(id, resp),
                ClientOutput::Request {
                    server_term,
                    id,
                    req,
                } => {
                    self.log(format_args!("client gets {server_term}.{id}: {req:?}"));
                    assert!(
                        self.client_seen.insert((server_term, id)),
                        "server request {server_term}.{id} delivered twice"
                    );
                    let asked = self.asked_by_term.get(&server_term);
                    assert_eq!(asked.and_then(|a| a.get(&id)), Some(&req));
                    self.handling.push((server_term, id, req));
                }
            }
        }
    }

    fn greeted(&mut self, server_term: u64, new_server: bool) {
        let i = self.client_conn.and_then(|id| self.conn_idx(id));
        let conn_term = i.map(|i| self.conns[i].term);
        assert_eq!(Some(server_term), conn_term, "a reply from another server");
        self.log(format_args!("greeted by {server_term}, new {new_server}"));
    }

    fn client_response(&mut self, id: u64, resp: Response) {
        self.log(format_args!("client response {id}: {resp:?}"));
        match self.outstanding.remove(&id) {
            Some(false) => {}
            Some(true) => panic!("response {id} delivered after its cancel"),
            None => panic!("response {id} to no outstanding request"),
        }
        assert!(self.answered.insert(id), "request {id} answered twice");
        assert_eq!(self.durable.get(&id), Some(&resp), "response {id}");
        self.stats.responses += 1;
    }

    // --- the server and its handler ---------------------------------------

    /// The handler: the first server to handle a request decides its effect
    /// and answer; later ones find it in the durable model.
    fn handle(&mut self, id: u64, req: &Request) -> Response {
        if let Some(r) = self.durable.get(&id) {
            return r.clone();
        }
        let resp = match req {
            _ if id % 11 == 5 => Response::Error(libc::ENOSPC),
            Request::AllocInodes { count } => {
                let ino = self.next_ino;
                self.next_ino += count;
                Response::Inodes { ino, nr: *count }
            }
            Request::GetLogTrees | Request::CommitLogTrees(_) => {
                Response::LogTrees(Box::new(LogTrees {
                    rid: RID.0.into(),
                    get_trans_seq: id.into(),
                    ..Default::default()
                }))
            }
            Request::Farewell | Request::ResizeDevices { .. } | Request::WaitersNew(_) => {
                Response::Done
            }
            Request::GetRoots => Response::Roots(Default::default()),
            Request::Lock(m) => Response::Lock(LockMsg {
                write_seq: id,
                old_mode: m.new_mode,
                ..*m
            }),
            Request::Statfs => Response::Statfs(StatfsInfo {
                inode_count: id,
                fsid: FSID,
                ..Default::default()
            }),
            Request::OpenInoMap { group } => Response::OpenInoMap(Box::new(OpenInoMap {
                group: *group,
                bits: [id; 16],
            })),
            Request::GetLastSeq => Response::LastSeq(id),
            Request::DataWaiting(_) => Response::DataWaiting(Vec::new()),
            Request::DataWaitErr(_) => Response::Count(id),
            Request::Greeting { .. } => panic!("a greeting as a request"),
        };
        self.durable.insert(id, resp.clone());
        resp
    }

    fn server_answer(&mut self) {
        let i = self.below(self.server.pending.len());
        let (id, req) = self.server.pending.remove(i);
        let resp = self.handle(id, &req);
        self.log(format_args!("server {} answers {id}", self.server.term));
        self.server
            .net
            .send_response(RID, id, &resp)
            .unwrap_or_else(|e| panic!("send_response {id}: {e}"));
        self.server_outputs();
    }

    fn server_send(&mut self) {
        let req = if self.rng.below(3) == 0 {
            ServerRequest::SyncLogTrees
        } else if self.rng.below(5) == 0 {
            ServerRequest::OpenInoMap {
                group: self.rng.below(100),
            }
        } else if self.rng.below(4) == 0 {
            ServerRequest::LockRecover {
                first: Key::inode(self.rng.below(4096)),
            }
        } else {
            let n = self.rng.next_u64();
            ServerRequest::Invalidate(LockMsg {
                key: Key::inode(n % 4096),
                write_seq: 0,
                old_mode: LockMode::Write,
                new_mode: LockMode::Null,
            })
        };
        match self.server.net.send_request(RID, &req) {
            Ok(id) => {
                self.log(format_args!("server {} asks {id}", self.server.term));
                self.stats.server_requests += 1;
                assert!(self.server.asked.insert(id, req.clone()).is_none());
                self.asked_by_term
                    .entry(self.server.term)
                    .or_default()
                    .insert(id, req);
            }
            Err(NetError::QueueFull { .. }) => self.stats.queue_full += 1,
            Err(e) => panic!("server send_request: {e}"),
        }
        self.server_outputs();
    }

    fn server_accept(&mut self) {
        let i = self.below(self.server.greetings.len());
        let conn = self.server.greetings.remove(i);
        let accepted = self.server.net.accept_greeting(conn);
        self.log(format_args!("server accepts {conn}: {accepted}"));
        self.server_outputs();
    }

    fn server_outputs(&mut self) {
        while let Some(o) = self.server.net.poll_output() {
            match o {
                ServerOutput::Frame { conn, frame } => {
                    let Some(i) = self.conn_idx(conn) else {
                        panic!("a frame for unknown {conn}");
                    };
                    let c = &mut self.conns[i];
                    assert!(c.server_open, "a frame for closed {conn}");
                    if !c.broken && c.client_open {
                        c.down.extend(frame.encode());
                    }
                }
                ServerOutput::Close { conn } => self.server_close(conn),
                ServerOutput::Greeting {
                    conn,
                    rid,
                    client_term,
                    flags,
                } => {
                    assert_eq!(rid, RID);
                    assert!(client_term <= self.server.term);
                    assert_eq!(flags, self.flags);
                    self.server.greetings.push(conn);
                }
                ServerOutput::Request { rid, id, req } => {
                    assert_eq!(rid, RID);
                    self.log(format_args!("server {} gets {id}", self.server.term));
                    assert!(
                        self.server.delivered.insert(id),
                        "request {id} delivered twice to server {}",
                        self.server.term
                    );
                    assert_eq!(self.sent.get(&id), Some(&req), "request {id}");
                    self.server.pending.push((id, req));
                }
                ServerOutput::Response { rid, id, resp } => {
                    assert_eq!(rid, RID);
                    let Some(req) = self.server.asked.get(&id) else {
                        panic!("answer {id} to nothing server {} asked", self.server.term);
                    };
                    let want = answer(req);
                    assert_eq!(resp, want, "answer {id}");
                    assert!(self.server.answered.insert(id), "{id} answered twice");
                    self.stats.server_answers += 1;
                }
            }
        }
    }

    /// The server's driver closes `conn`: no more reads or writes.
    fn server_close(&mut self, conn: ConnId) {
        self.log(format_args!("server closes {conn}"));
        if let Some(i) = self.conn_idx(conn) {
            let c = &mut self.conns[i];
            c.server_open = false;
            c.up.clear();
        }
        self.server.net.on_disconnected(conn);
    }

    // --- connections -------------------------------------------------------

    fn connect(&mut self) {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.push(Conn::new(id, self.server.term));
        self.server
            .net
            .on_connected(id)
            .unwrap_or_else(|e| panic!("on_connected: {e}"));
        self.client_conn = Some(id);
        self.client.on_connected();
        self.stats.connects += 1;
        self.log(format_args!("connect {id} to server {}", self.server.term));
        self.client_outputs();
    }

    /// The client notices its connection died, or gives up on it.
    fn client_drop_conn(&mut self, why: Event) {
        let Some(id) = self.client_conn.take() else {
            return;
        };
        if let Some(i) = self.conn_idx(id) {
            let c = &mut self.conns[i];
            c.client_open = false;
            c.down.clear();
        }
        if let Event::Abandon = why {
            self.stats.abandons += 1;
        }
        self.log(format_args!("client drops {id} ({why:?})"));
        self.client.on_disconnected();
    }

    fn server_notice(&mut self) {
        let dead: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| {
                c.server_open && c.term == self.server.term && c.dead_to_server() && c.up.is_empty()
            })
            .map(|c| c.id)
            .collect();
        let id = dead[self.below(dead.len())];
        if let Some(i) = self.conn_idx(id) {
            self.conns[i].server_open = false;
        }
        self.log(format_args!("server notices {id} closed"));
        self.server.net.on_disconnected(id);
    }

    /// The network breaks the client's connection: a random prefix of what
    /// is in flight each way still arrives, the rest is lost.
    fn break_conn(&mut self) {
        let Some(i) = self.client_conn.and_then(|id| self.conn_idx(id)) else {
            return;
        };
        let keep_up = self.below(self.conns[i].up.len() + 1);
        let keep_down = self.below(self.conns[i].down.len() + 1);
        let c = &mut self.conns[i];
        c.broken = true;
        c.up.truncate(keep_up);
        c.down.truncate(keep_down);
        let id = c.id;
        self.stats.breaks += 1;
        self.log(format_args!(
            "break {id} keeping {keep_up} up {keep_down} down"
        ));
    }

    fn corrupt(&mut self) {
        let with: Vec<usize> = (0..self.conns.len())
            .filter(|&i| !self.conns[i].up.is_empty() || !self.conns[i].down.is_empty())
            .collect();
        let i = with[self.below(with.len())];
        let up =
            !self.conns[i].up.is_empty() && (self.conns[i].down.is_empty() || self.below(2) == 0);
        let bit = self.rng.next_u64();
        let c = &mut self.conns[i];
        let buf = if up { &mut c.up } else { &mut c.down };
        let at = (bit as usize >> 3) % buf.len();
        buf[at] ^= 1 << (bit & 7);
        let id = c.id;
        self.stats.corruptions += 1;
        let dir = if up { "up" } else { "down" };
        self.log(format_args!("corrupt {id} {dir} byte {at}"));
    }

    /// The server dies; a new one with a greater term takes over. What it
    /// wrote may still arrive; nothing more is read from its sockets.
    fn server_change(&mut self) {
        let old = self.server.term;
        for c in self.conns.iter_mut().filter(|c| c.term == old) {
            c.server_open = false;
            c.up.clear();
        }
        let stats = self.server.net.counters();
        self.stats.count(stats);
        let term = old + 1 + self.rng.below(3);
        self.server = Server::new(term, self.limits);
        self.stats.server_changes += 1;
        self.log(format_args!("server {old} dies, server {term} starts"));
    }

    fn deliver_up(&mut self) {
        let ids: Vec<usize> = (0..self.conns.len())
            .filter(|&i| {
                let c = &self.conns[i];
                c.server_open && c.term == self.server.term && !c.up.is_empty()
            })
            .collect();
        let i = ids[self.below(ids.len())];
        let n = (1 + self.below(self.chunk_max)).min(self.conns[i].up.len());
        let bytes: Vec<u8> = self.conns[i].up.drain(..n).collect();
        let id = self.conns[i].id;
        let mut rest = &bytes[..];
        while !rest.is_empty() && self.conns[i].server_open {
            match self.conns[i].up_reader.feed(rest) {
                Ok((used, frame)) => {
                    rest = &rest[used..];
                    let Some(f) = frame else { continue };
                    self.log(format_args!("{id} up: {:?}", f.hdr()));
                    match self.server.net.on_frame(id, &f) {
                        Ok(()) => {}
                        Err(NetError::Refused(Refusal::StaleGreeting { .. })) => {
                            self.stats.stale_greetings += 1;
                        }
                        Err(e) => panic!("the server refused a good client's frame: {e}"),
                    }
                    self.server_outputs();
                }
                Err(e) => {
                    self.log(format_args!("{id} up: {e}"));
                    assert!(
                        self.stats.corruptions > 0,
                        "a bad frame without corruption: {e}"
                    );
                    self.server_close(id);
                }
            }
        }
    }

    fn deliver_down(&mut self) {
        let Some(i) = self.client_conn.and_then(|id| self.conn_idx(id)) else {
            return;
        };
        let n = (1 + self.below(self.chunk_max)).min(self.conns[i].down.len());
        let bytes: Vec<u8> = self.conns[i].down.drain(..n).collect();
        let id = self.conns[i].id;
        let mut rest = &bytes[..];
        while !rest.is_empty() && self.client_conn == Some(id) {
            match self.conns[i].down_reader.feed(rest) {
                Ok((used, frame)) => {
                    rest = &rest[used..];
                    let Some(f) = frame else { continue };
                    self.log(format_args!("{id} down: {:?}", f.hdr()));
                    if let Err(e) = self.client.on_frame(&f) {
                        panic!("the client refused a good server's frame: {e}");
                    }
                    self.client_outputs();
                }
                Err(e) => {
                    self.log(format_args!("{id} down: {e}"));
                    assert!(
                        self.stats.corruptions > 0,
                        "a bad frame without corruption: {e}"
                    );
                    self.client_drop_conn(Event::ClientNotice);
                }
            }
        }
    }

    // --- checks --------------------------------------------------------------

    fn check(&self) {
        self.client.check_invariants();
        self.server.net.check_invariants();
        let max = self.limits.requests_max;
        assert!(self.client.queued_requests() <= max);
        assert!(self.client.queued_responses() + self.client.outstanding_server_requests() <= max);
        if let Some((reqs, resps)) = self.server.net.queued(RID) {
            assert!(reqs <= max && resps <= max);
        }
        assert!(self.conns.len() <= CONNS_MAX);
        let live = self.outstanding.values().filter(|c| !**c).count();
        assert!(live <= self.client.queued_requests());
        for (id, canceled) in &self.outstanding {
            assert!(*canceled || self.client.awaiting(*id), "request {id} lost");
        }
        assert!(self.server.answered.len() <= self.server.asked.len());
    }

    fn drained(&self) -> bool {
        self.outstanding.values().all(|c| *c)
            && self.client.queued_requests() == 0
            && self.handling.is_empty()
            && self.server.pending.is_empty()
            && self.server.answered.len() == self.server.asked.len()
    }

    fn run(&mut self) {
        while self.step < WORK_STEPS {
            self.step += 1;
            self.step();
            self.check();
        }
        self.draining = true;
        self.log(format_args!("draining"));
        while !self.drained() {
            assert!(
                self.step < WORK_STEPS + DRAIN_STEPS_MAX,
                "did not drain: {} outstanding, {} queued, {} of {} server requests answered",
                self.outstanding.len(),
                self.client.queued_requests(),
                self.server.answered.len(),
                self.server.asked.len()
            );
            self.step += 1;
            assert!(self.step(), "nothing can happen but work remains");
            self.check();
        }
        // Every request not canceled got exactly one response.
        for id in self.sent.keys() {
            assert!(
                self.answered.contains(id) || self.outstanding.get(id) == Some(&true),
                "request {id} never answered"
            );
        }
        let (c, s) = (self.client.counters(), self.server.net.counters());
        self.stats.count(c);
        self.stats.count(s);
    }
}

/// Runs one seed.
fn run_seed(seed: u64, trace: bool) -> Stats {
    let mut sim = Sim::new(seed, trace);
    sim.run();
    sim.stats.steps = sim.step;
    sim.stats
}

fn run_part(part: u64) {
    common::sim::run_part("net_sim", part, PARTS, SEEDS, run_seed);
}

#[test]
fn net_sim_part0() {
    run_part(0);
}

#[test]
fn net_sim_part1() {
    run_part(1);
}

#[test]
fn net_sim_part2() {
    run_part(2);
}

#[test]
fn net_sim_part3() {
    run_part(3);
}
