//! Reliable request/response messaging between a mount and the server, as
//! state machines without I/O.
//!
//! A connection can break at any time and the server can be replaced by a
//! new one (a new *term*); callers still want every request answered exactly
//! once. [`ClientNet`] (one per mount) and [`ServerNet`] (one per server)
//! take the driver's inputs (a call to send, a frame read, a connection made
//! or lost) and queue outputs the driver carries out: frames to write,
//! connections to close, messages to deliver. They own no sockets, threads
//! or clocks, so one thread can simulate both ends with a seeded network
//! (`tests/net_sim.rs`). Frames and payloads are `wire`'s.
//!
//! # Streams
//!
//! Each side of a mount–server pair keeps a *stream*: the client one for the
//! life of the mount, the server one per mount (rid) for its own life,
//! across that mount's reconnects. A stream numbers what it queues: `seq`
//! counts every message, and a request's `id` counts requests, in the same
//! order. It holds:
//! - our requests until their response arrives (a canceled one too, see
//!   below), keyed by id, which is also seq order;
//! - our responses until the peer's `recv_seq` acknowledges them;
//! - `recv_seq`, the greatest seq received; anything at or below it is a
//!   resend we already have and is dropped, so each message is delivered
//!   once however often it is resent;
//! - the peer's requests delivered to our handler and not yet answered, so a
//!   response goes out only for a request that is really outstanding, once.
//!
//! Every frame carries the sender's `recv_seq` at the time it is written.
//! After a greeting, everything queued is written again in seq order; a
//! receiver sees each connection's seqs increase, and since the messages a
//! broken connection loses are a tail of what was written, what it has
//! received is always all of some prefix (less canceled requests).
//!
//! # Greetings
//!
//! The client's first frame on a connection is a GREETING request and it
//! writes nothing else until the reply. Greetings sit outside the numbering:
//! their `seq` is the sender's next one, their `id` counts the client's
//! connection attempts. The server checks fsid and format version (a typed
//! [`Refusal`] on both sides, and an error reply), lets the newest greeting
//! of a rid win (an older one arriving late on another socket is refused,
//! and the rid's previous connection is closed), and reports the greeting as
//! [`ServerOutput::Greeting`]. The server layer records the mount and then
//! calls [`ServerNet::accept_greeting`], which writes the reply and every
//! queued frame, as the original's greeting handler commits before it
//! replies.
//!
//! A reply whose term equals the one the client greeted with is the same
//! server: the per-rid stream on the server still holds everything, and
//! both sides trust the acknowledgement in each other's greeting. A
//! different term is a new server, which knows nothing of the old one's
//! numbering: the client resets `recv_seq`, drops its queued responses and
//! the server requests it was handling (answers to them are refused), drops
//! canceled requests, and resends its requests, which the new server handles
//! again. Handlers must be idempotent for this reason. A mount that claims
//! the server's own term but is unknown to it was forgotten (fenced or said
//! farewell) and is refused for good.
//!
//! # Limits
//!
//! A stream queues at most `requests_max` of its own requests; one more is
//! [`NetError::QueueFull`] to the caller. A canceled request keeps its slot
//! until its response arrives or a new server appears, so the number of a
//! peer's requests a receiver holds (delivered and unanswered, or answered
//! and not acknowledged) never exceeds the sender's limit; a receiver
//! refuses a peer that exceeds its own limit ([`NetError::PeerOverrun`]), so
//! both ends must use the same limit (or the receiver a larger one). The
//! server holds at most `peers_max` mounts and `conns_max` connections.
//! Payloads are at most `wire::MAX_FRAME_DATA`, so a stream's memory is
//! bounded by its limits.
//!
//! # What the driver does
//!
//! - Read frames with `wire::FrameReader` and feed them with `on_frame`, in
//!   order, only from the current connection. An error means the peer broke
//!   the protocol or the frame was bad: close the connection (the machines
//!   already treat it as closing) and reconnect; a permanent refusal
//!   ([`Refusal::is_permanent`]) stops the mount's reconnecting.
//! - After every call drain `poll_output` and carry the outputs out in
//!   order: write frames, close connections, deliver messages.
//! - Client: connect to the server the quorum blocks name, call
//!   `on_connected` and write the greeting; on loss call `on_disconnected`
//!   and reconnect (the original retries every 100 ms).
//! - Server: `on_connected` per accepted socket, `on_disconnected` when it
//!   closes. Fencing a mount that does not come back, and `forget` after
//!   its farewell or fence, are the server layer's decisions, as are
//!   timeouts and keepalives.
//!
//! # Known limits
//!
//! No keepalive or heartbeat messages (TCP keepalive is the driver's); no
//! per-message priorities; a poison message (one that fails to decode every
//! time) makes the connection fail on every resend rather than being
//! skipped, which is loud on purpose.

use crate::cluster::auth::ClusterKey;
use crate::cluster::net::msg::{ClientResponse, Request, Response, ServerRequest};
use crate::cluster::net::wire::{
    self, Cmd, EncodeError, ErrCode, Frame, FrameHeader, Greeting, Kind, WireError,
    GREETING_FLAGS_KNOWN,
};
use crate::types::Rid;
use scoutfs_format::consts::{CLUSTER_KEY_LEN, FORMAT_VERSION};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Requests one stream may have queued (awaiting their responses).
pub const REQUESTS_QUEUED_MAX: usize = 1024;
/// Connections the server tracks at once.
pub const CONNS_MAX: usize = 1024;
/// Mounts (rids) the server keeps streams for.
pub const PEERS_MAX: usize = 1024;

/// The named limits of a machine; tests shrink them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub requests_max: usize,
    pub conns_max: usize,
    pub peers_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            requests_max: REQUESTS_QUEUED_MAX,
            conns_max: CONNS_MAX,
            peers_max: PEERS_MAX,
        }
    }
}

impl Limits {
    fn check(&self) -> Result<(), NetError> {
        if self.requests_max == 0 || self.conns_max == 0 || self.peers_max == 0 {
            return Err(NetError::Config("limits must be nonzero"));
        }
        Ok(())
    }
}

/// Why a greeting was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The two ends serve different filesystems.
    Fsid { ours: u64, peer: u64 },
    /// The two ends speak different format versions.
    FormatVersion { ours: u64, peer: u64 },
    /// The mount claims the server's term but the server has forgotten it
    /// (it said farewell or was fenced).
    Forgotten { rid: Rid },
    /// The server has no room for another mount.
    TooManyMounts,
    /// An older connection attempt of the rid arrived after a newer one.
    StaleGreeting { rid: Rid, id: u64, newest: u64 },
    /// The server refused with an errno this version doesn't know.
    Server { errno: i32 },
    /// The greeting (or its reply) does not carry the cluster key's code:
    /// it came from a stranger. Dropped unanswered and counted.
    Unauthenticated,
}

impl Refusal {
    /// Whether reconnecting cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Refusal::Fsid { .. } | Refusal::FormatVersion { .. } | Refusal::Forgotten { .. }
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Fsid { ours, peer } => {
                write!(f, "fsid {peer:#018x} is not ours ({ours:#018x})")
            }
            Refusal::FormatVersion { ours, peer } => {
                write!(f, "format version {peer} is not ours ({ours})")
            }
            Refusal::Forgotten { rid } => write!(f, "mount {rid} was forgotten by this server"),
            Refusal::TooManyMounts => f.write_str("the server has no room for another mount"),
            Refusal::StaleGreeting { rid, id, newest } => {
                write!(f, "greeting {id} of mount {rid} is older than {newest}")
            }
            Refusal::Server { errno } => write!(f, "the server refused with errno {errno}"),
            Refusal::Unauthenticated => {
                f.write_str("the greeting lacks this cluster's authentication code")
            }
        }
    }
}

/// The id of one of the server's connections, chosen by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn {}", self.0)
    }
}

/// The errors of the streams. Those from `on_frame` mean the connection must be
/// closed; the others go back to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("bad frame: {0}")]
    Wire(#[from] WireError),
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    #[error("protocol violation: {what} ({value})")]
    Protocol { what: &'static str, value: u64 },
    #[error("greeting refused: {0}")]
    Refused(Refusal),
    #[error("{max} requests are already queued")]
    QueueFull { max: usize },
    #[error("the peer has more than {max} requests outstanding")]
    PeerOverrun { max: usize },
    #[error("request {id} is not awaiting a response")]
    UnknownRequest { id: u64 },
    #[error("no mount {rid} is known")]
    UnknownPeer { rid: Rid },
    #[error("{conn} is not known")]
    UnknownConn { conn: ConnId },
    #[error("{max} connections are already open")]
    TooManyConns { max: usize },
    #[error("not connected")]
    NotConnected,
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}

impl From<NetError> for crate::error::Error {
    fn from(e: NetError) -> crate::error::Error {
        use crate::error::Error;
        let why = e.to_string();
        match e {
            NetError::Wire(_)
            | NetError::Encode(_)
            | NetError::Protocol { .. }
            | NetError::PeerOverrun { .. }
            | NetError::UnknownRequest { .. } => Error::Protocol(why),
            NetError::Refused(_) => Error::Refused(why),
            NetError::UnknownPeer { .. }
            | NetError::UnknownConn { .. }
            | NetError::NotConnected => Error::Disconnected(why),
            NetError::QueueFull { .. } | NetError::TooManyConns { .. } => Error::Internal(why),
            NetError::Config(_) => Error::Config(why),
        }
    }
}

fn protocol(what: &'static str, value: u64) -> NetError {
    NetError::Protocol { what, value }
}

/// What a machine did, for tests, the simulation and statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames handed to the driver to write, greetings included.
    pub frames_out: u64,
    /// Of those, queued frames written after a greeting (resends, and
    /// messages queued while disconnected).
    pub frames_after_greeting: u64,
    /// Frames received on greeted connections.
    pub frames_in: u64,
    /// Received messages dropped as resends already received.
    pub duplicates: u64,
    /// Responses to canceled requests, dropped.
    pub canceled_responses: u64,
    /// Greetings answered (server) or replies accepted (client).
    pub greetings: u64,
    /// Greetings refused, by either side.
    pub refusals: u64,
    /// Of those, greetings or replies without the cluster key's code.
    pub unauthenticated: u64,
    /// Client: replies from a new server.
    pub new_servers: u64,
}

/// Builds a frame from fields the machines keep valid.
fn valid_frame(hdr: FrameHeader, data: Vec<u8>) -> Frame {
    // Seqs and ids start at 1 and only grow, greetings use the next seq,
    // requests never carry errors and payloads come from wire's encoders,
    // all far below the maximum: a failure here is a bug in this module.
    match Frame::new(hdr, data) {
        Ok(f) => f,
        Err(e) => panic!("net built an invalid frame {hdr:?}: {e}"),
    }
}

/// A message we queued.
#[derive(Clone, Debug)]
struct Queued {
    seq: u64,
    id: u64,
    cmd: Cmd,
    error: Option<ErrCode>,
    data: Vec<u8>,
    /// A request whose caller stopped waiting: its response is dropped.
    canceled: bool,
}

/// How a frame on a greeted connection is to be taken.
enum Class {
    Duplicate,
    Request,
    Response { canceled: bool },
}

/// What a received frame delivers.
enum Incoming<Q, R> {
    Nothing,
    Request { id: u64, req: Q },
    Response { id: u64, resp: R },
}

/// The payload decoders of one direction's requests and responses.
type DecodeRequest<Q> = fn(Cmd, &[u8]) -> Result<Q, WireError>;
type DecodeResponse<R> = fn(Cmd, Option<ErrCode>, &[u8]) -> Result<R, WireError>;

/// One end's numbering and queues toward one peer.
#[derive(Clone, Debug)]
struct Stream {
    /// The last seq given to a queued message.
    last_seq: u64,
    /// The last id given to a queued request.
    last_id: u64,
    /// The greatest seq received from the peer.
    recv_seq: u64,
    /// The greatest of our seqs the peer acknowledged.
    acked_seq: u64,
    /// Our requests awaiting responses, by id (and so by seq).
    requests: BTreeMap<u64, Queued>,
    /// Our responses awaiting acknowledgement, by seq.
    responses: BTreeMap<u64, Queued>,
    /// The peer's requests given to our handler and not answered: id → cmd.
    incoming: BTreeMap<u64, Cmd>,
    /// The id of the last request received.
    last_in_id: u64,
    requests_max: usize,
}

impl Stream {
    fn new(requests_max: usize) -> Stream {
        Stream {
            last_seq: 0,
            last_id: 0,
            recv_seq: 0,
            acked_seq: 0,
            requests: BTreeMap::new(),
            responses: BTreeMap::new(),
            incoming: BTreeMap::new(),
            last_in_id: 0,
            requests_max,
        }
    }

    fn frame(&self, q: &Queued, kind: Kind) -> Frame {
        let hdr = FrameHeader {
            seq: q.seq,
            recv_seq: self.recv_seq,
            id: q.id,
            kind,
            cmd: q.cmd,
            error: q.error,
        };
        valid_frame(hdr, q.data.clone())
    }

    /// The header of a greeting frame: outside the numbering, it carries
    /// the next seq and our acknowledgement.
    fn greeting_header(&self, id: u64, kind: Kind, error: Option<ErrCode>) -> FrameHeader {
        FrameHeader {
            seq: self.last_seq + 1,
            recv_seq: self.recv_seq,
            id,
            kind,
            cmd: Cmd::Greeting,
            error,
        }
    }

    /// Queues a request; returns its id and its frame.
    fn queue_request(&mut self, cmd: Cmd, data: Vec<u8>) -> Result<(u64, Frame), NetError> {
        if self.requests.len() >= self.requests_max {
            return Err(NetError::QueueFull {
                max: self.requests_max,
            });
        }
        self.last_seq += 1;
        self.last_id += 1;
        let q = Queued {
            seq: self.last_seq,
            id: self.last_id,
            cmd,
            error: None,
            data,
            canceled: false,
        };
        let frame = self.frame(&q, Kind::Request);
        self.requests.insert(q.id, q);
        Ok((self.last_id, frame))
    }

    /// The command of the peer's outstanding request `id`.
    fn response_cmd(&self, id: u64) -> Result<Cmd, NetError> {
        self.incoming
            .get(&id)
            .copied()
            .ok_or(NetError::UnknownRequest { id })
    }

    /// Queues the response to the peer's outstanding request `id`.
    fn queue_response(&mut self, id: u64, error: Option<ErrCode>, data: Vec<u8>) -> Frame {
        let Some(cmd) = self.incoming.remove(&id) else {
            panic!("response to request {id}, which response_cmd didn't find");
        };
        self.last_seq += 1;
        let q = Queued {
            seq: self.last_seq,
            id,
            cmd,
            error,
            data,
            canceled: false,
        };
        let frame = self.frame(&q, Kind::Response);
        self.responses.insert(q.seq, q);
        frame
    }

    /// Marks a queued request canceled; false if it isn't queued.
    fn cancel(&mut self, id: u64) -> bool {
        match self.requests.get_mut(&id) {
            Some(q) if !q.canceled => {
                q.canceled = true;
                true
            }
            _ => false,
        }
    }

    /// Every queued message's frame, in seq order.
    fn pending_frames(&self) -> Vec<Frame> {
        let mut all: Vec<(&Queued, Kind)> = self
            .requests
            .values()
            .map(|q| (q, Kind::Request))
            .chain(self.responses.values().map(|q| (q, Kind::Response)))
            .collect();
        all.sort_by_key(|(q, _)| q.seq);
        all.into_iter().map(|(q, k)| self.frame(q, k)).collect()
    }

    /// Drops the responses the peer has acknowledged.
    fn apply_ack(&mut self, ack: u64) -> Result<(), NetError> {
        if ack > self.last_seq {
            return Err(protocol("acknowledges a seq never sent", ack));
        }
        if ack > self.acked_seq {
            self.acked_seq = ack;
            self.responses = self.responses.split_off(&(ack + 1));
        }
        Ok(())
    }

    fn classify(&self, hdr: &FrameHeader) -> Result<Class, NetError> {
        if hdr.seq <= self.recv_seq {
            return Ok(Class::Duplicate);
        }
        match hdr.kind {
            Kind::Request => {
                if hdr.id <= self.last_in_id {
                    return Err(protocol("request id does not increase", hdr.id));
                }
                if self.incoming.len() + self.responses.len() >= self.requests_max {
                    return Err(NetError::PeerOverrun {
                        max: self.requests_max,
                    });
                }
                Ok(Class::Request)
            }
            Kind::Response => match self.requests.get(&hdr.id) {
                None => Err(protocol("response to no queued request", hdr.id)),
                Some(q) if q.cmd != hdr.cmd => Err(protocol(
                    "response command differs from its request's",
                    hdr.cmd as u64,
                )),
                Some(q) => Ok(Class::Response {
                    canceled: q.canceled,
                }),
            },
        }
    }

    /// Takes a frame on a greeted connection: acknowledgement, resend
    /// check, payload, then (only if all is well) the new state.
    fn receive<Q, R>(
        &mut self,
        frame: &Frame,
        counters: &mut NetCounters,
        decode_request: DecodeRequest<Q>,
        decode_response: DecodeResponse<R>,
    ) -> Result<Incoming<Q, R>, NetError> {
        let hdr = *frame.hdr();
        if hdr.cmd == Cmd::Greeting {
            return Err(protocol("a second greeting on a connection", hdr.id));
        }
        counters.frames_in += 1;
        self.apply_ack(hdr.recv_seq)?;
        match self.classify(&hdr)? {
            Class::Duplicate => {
                counters.duplicates += 1;
                Ok(Incoming::Nothing)
            }
            Class::Request => {
                let req = decode_request(hdr.cmd, frame.data())?;
                self.recv_seq = hdr.seq;
                self.last_in_id = hdr.id;
                self.incoming.insert(hdr.id, hdr.cmd);
                Ok(Incoming::Request { id: hdr.id, req })
            }
            Class::Response { canceled } => {
                let resp = decode_response(hdr.cmd, hdr.error, frame.data())?;
                self.recv_seq = hdr.seq;
                self.requests.remove(&hdr.id);
                if canceled {
                    counters.canceled_responses += 1;
                    return Ok(Incoming::Nothing);
                }
                Ok(Incoming::Response { id: hdr.id, resp })
            }
        }
    }

    /// Forgets the peer's numbering: the peer is a new server.
    fn new_peer(&mut self) {
        self.recv_seq = 0;
        self.acked_seq = 0;
        self.last_in_id = 0;
        self.responses.clear();
        self.incoming.clear();
        self.requests.retain(|_, q| !q.canceled);
    }

    fn check_invariants(&self) {
        assert!(self.requests.len() <= self.requests_max);
        assert!(self.incoming.len() + self.responses.len() <= self.requests_max);
        assert!(self.acked_seq <= self.last_seq);
        let mut prev_seq = 0;
        for (id, q) in &self.requests {
            assert_eq!(*id, q.id);
            assert!(q.seq > prev_seq && q.seq <= self.last_seq && q.id <= self.last_id);
            assert!(q.error.is_none());
            prev_seq = q.seq;
        }
        for (seq, q) in &self.responses {
            assert_eq!(*seq, q.seq);
            assert!(q.seq > self.acked_seq && q.seq <= self.last_seq);
            assert!(q.id <= self.last_in_id && !self.incoming.contains_key(&q.id));
        }
        if let Some((id, _)) = self.incoming.last_key_value() {
            assert!(*id <= self.last_in_id);
        }
    }
}

/// A mount's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    pub fsid: u64,
    pub fmt_vers: u64,
    /// The mount's random id, never 0.
    pub rid: Rid,
    /// `wire::GREETING_FLAG_*` sent in greetings.
    pub flags: u64,
    /// What greetings are authenticated with (see `auth`).
    pub key: ClusterKey,
    pub limits: Limits,
}

impl ClientConfig {
    /// A plain mount of this build's format version with default limits.
    pub fn new(fsid: u64, rid: Rid) -> ClientConfig {
        ClientConfig {
            fsid,
            fmt_vers: FORMAT_VERSION,
            rid,
            flags: 0,
            key: ClusterKey::new([0; CLUSTER_KEY_LEN]),
            limits: Limits::default(),
        }
    }
}

/// What the client machine asks of its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutput {
    /// Write this frame to the current connection.
    Frame(Frame),
    /// The server answered the greeting; with `new_server`, the requests of
    /// the previous server being handled are void (answers are refused) and
    /// the lock client should recover its locks.
    Greeted { server_term: u64, new_server: bool },
    /// The response to the request `send_request` numbered `id`.
    Response { id: u64, resp: Response },
    /// A request from the server of `server_term`, for the handler to
    /// answer with `send_response(server_term, id, ..)`. A new server numbers
    /// its requests afresh, so the term says which server asked.
    Request {
        server_term: u64,
        id: u64,
        req: ServerRequest,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientConn {
    Disconnected,
    /// Our greeting `id` is written; nothing else may be until its reply.
    Greeting {
        id: u64,
    },
    Ready,
}

/// The client end: one per mount, for the mount's life.
#[derive(Debug)]
pub struct ClientNet {
    cfg: ClientConfig,
    stream: Stream,
    conn: ClientConn,
    /// The term of the last server that answered our greeting; 0 before.
    server_term: u64,
    /// The id of our last greeting.
    greeting_id: u64,
    out: VecDeque<ClientOutput>,
    counters: NetCounters,
}

impl ClientNet {
    pub fn new(cfg: ClientConfig) -> Result<ClientNet, NetError> {
        cfg.limits.check()?;
        if cfg.rid.0 == 0 {
            return Err(NetError::Config("a mount's rid is never 0"));
        }
        if cfg.flags & !GREETING_FLAGS_KNOWN != 0 {
            return Err(NetError::Config("unknown greeting flags"));
        }
        Ok(ClientNet {
            cfg,
            stream: Stream::new(cfg.limits.requests_max),
            conn: ClientConn::Disconnected,
            server_term: 0,
            greeting_id: 0,
            out: VecDeque::new(),
            counters: NetCounters::default(),
        })
    }

    pub fn rid(&self) -> Rid {
        self.cfg.rid
    }

    /// The term of the last server that accepted our greeting, 0 before.
    pub fn server_term(&self) -> u64 {
        self.server_term
    }

    /// Whether a greeted connection is up.
    pub fn is_ready(&self) -> bool {
        self.conn == ClientConn::Ready
    }

    pub fn counters(&self) -> NetCounters {
        self.counters
    }

    /// Our requests awaiting responses (canceled ones included).
    pub fn queued_requests(&self) -> usize {
        self.stream.requests.len()
    }

    /// Whether our request `id` still awaits its response.
    pub fn awaiting(&self, id: u64) -> bool {
        self.stream.requests.contains_key(&id)
    }

    /// Our responses awaiting acknowledgement.
    pub fn queued_responses(&self) -> usize {
        self.stream.responses.len()
    }

    /// Server requests delivered and not yet answered.
    pub fn outstanding_server_requests(&self) -> usize {
        self.stream.incoming.len()
    }

    /// The greeting flags of later connections (FAREWELL while unmounting).
    pub fn set_flags(&mut self, flags: u64) -> Result<(), NetError> {
        if flags & !GREETING_FLAGS_KNOWN != 0 {
            return Err(NetError::Config("unknown greeting flags"));
        }
        self.cfg.flags = flags;
        Ok(())
    }

    /// The next output for the driver.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    fn emit(&mut self, frame: Frame) {
        if self.conn == ClientConn::Ready {
            self.counters.frames_out += 1;
            self.out.push_back(ClientOutput::Frame(frame));
        }
    }

    /// Queues a request to the server (written now if connected) and
    /// returns its id, which its response will carry.
    pub fn send_request(&mut self, req: &Request) -> Result<u64, NetError> {
        let (cmd, data) = wire::encode_request(req)?;
        let (id, frame) = self.stream.queue_request(cmd, data)?;
        self.emit(frame);
        Ok(id)
    }

    /// The caller of request `id` stops waiting: its response, if one
    /// comes, is dropped. False if `id` isn't awaiting a response.
    pub fn cancel(&mut self, id: u64) -> bool {
        self.stream.cancel(id)
    }

    /// Answers request `id` of the server of `server_term`. Refused if it
    /// isn't outstanding: answered already, or asked by a server that has
    /// since been replaced (whose answers nobody waits for).
    pub fn send_response(
        &mut self,
        server_term: u64,
        id: u64,
        resp: &ClientResponse,
    ) -> Result<(), NetError> {
        if server_term != self.server_term {
            return Err(NetError::UnknownRequest { id });
        }
        let cmd = self.stream.response_cmd(id)?;
        let data = wire::encode_client_response(cmd, resp)?;
        let frame = self.stream.queue_response(id, None, data);
        self.emit(frame);
        Ok(())
    }

    /// A new connection to the server is up (any earlier one is gone):
    /// writes our greeting.
    pub fn on_connected(&mut self) {
        self.greeting_id += 1;
        self.conn = ClientConn::Greeting {
            id: self.greeting_id,
        };
        let g = Greeting {
            fsid: self.cfg.fsid,
            fmt_vers: self.cfg.fmt_vers,
            server_term: self.server_term,
            rid: self.cfg.rid.0,
            flags: self.cfg.flags,
        };
        let hdr = self
            .stream
            .greeting_header(self.greeting_id, Kind::Request, None);
        self.counters.frames_out += 1;
        let data = g.encode(&self.cfg.key, self.greeting_id);
        self.out
            .push_back(ClientOutput::Frame(valid_frame(hdr, data)));
    }

    /// The connection is gone; everything stays queued for the next.
    pub fn on_disconnected(&mut self) {
        self.conn = ClientConn::Disconnected;
    }

    /// A frame read from the current connection. An error means the
    /// connection must be closed; the machine already counts it closed.
    pub fn on_frame(&mut self, frame: &Frame) -> Result<(), NetError> {
        let r = match self.conn {
            ClientConn::Disconnected => return Err(NetError::NotConnected),
            ClientConn::Greeting { id } => self.greeting_reply(frame, id),
            ClientConn::Ready => self.receive(frame),
        };
        if r.is_err() {
            self.conn = ClientConn::Disconnected;
        }
        r
    }

    fn receive(&mut self, frame: &Frame) -> Result<(), NetError> {
        let got = self.stream.receive(
            frame,
            &mut self.counters,
            wire::decode_server_request,
            wire::decode_response,
        )?;
        match got {
            Incoming::Nothing => {}
            Incoming::Request { id, req } => self.out.push_back(ClientOutput::Request {
                server_term: self.server_term,
                id,
                req,
            }),
            Incoming::Response { id, resp } => {
                self.out.push_back(ClientOutput::Response { id, resp })
            }
        }
        Ok(())
    }

    fn greeting_reply(&mut self, frame: &Frame, greeting_id: u64) -> Result<(), NetError> {
        let hdr = *frame.hdr();
        if hdr.kind != Kind::Response || hdr.cmd != Cmd::Greeting {
            return Err(protocol(
                "the first frame is not a greeting reply",
                hdr.cmd as u64,
            ));
        }
        if hdr.id != greeting_id {
            return Err(protocol("a reply to another greeting", hdr.id));
        }
        let g = Greeting::decode(frame.data())?;
        if g.rid != self.cfg.rid.0 {
            return Err(protocol("a greeting reply for another mount", g.rid));
        }
        // Another filesystem's server can't know our key: its reply says
        // why it refused. Anything else must carry our code.
        let ours = g.fsid == self.cfg.fsid && g.fmt_vers == self.cfg.fmt_vers;
        if ours && !Greeting::authentic(frame.data(), &self.cfg.key, hdr.id) {
            self.counters.unauthenticated += 1;
            return Err(NetError::Refused(Refusal::Unauthenticated));
        }
        let refused = if g.fsid != self.cfg.fsid {
            Some(Refusal::Fsid {
                ours: self.cfg.fsid,
                peer: g.fsid,
            })
        } else if g.fmt_vers != self.cfg.fmt_vers {
            Some(Refusal::FormatVersion {
                ours: self.cfg.fmt_vers,
                peer: g.fmt_vers,
            })
        } else {
            hdr.error.map(|e| match e {
                ErrCode::NoLink => Refusal::Forgotten { rid: self.cfg.rid },
                ErrCode::NoMem => Refusal::TooManyMounts,
                e => Refusal::Server { errno: e.errno() },
            })
        };
        if let Some(r) = refused {
            self.counters.refusals += 1;
            return Err(NetError::Refused(r));
        }
        if g.server_term == 0 {
            return Err(protocol("a server term of 0", 0));
        }
        let new_server = g.server_term != self.server_term;
        if new_server {
            self.stream.new_peer();
            self.counters.new_servers += 1;
        } else {
            self.stream.apply_ack(hdr.recv_seq)?;
        }
        self.server_term = g.server_term;
        self.conn = ClientConn::Ready;
        self.counters.greetings += 1;
        self.out.push_back(ClientOutput::Greeted {
            server_term: g.server_term,
            new_server,
        });
        for f in self.stream.pending_frames() {
            self.counters.frames_out += 1;
            self.counters.frames_after_greeting += 1;
            self.out.push_back(ClientOutput::Frame(f));
        }
        Ok(())
    }

    /// Asserts the machine's invariants; tests call it after every step.
    pub fn check_invariants(&self) {
        self.stream.check_invariants();
        if let ClientConn::Greeting { id } = self.conn {
            assert_eq!(id, self.greeting_id);
        }
        assert!(self.cfg.rid.0 != 0);
    }
}

/// The server's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub fsid: u64,
    pub fmt_vers: u64,
    /// The election term this server runs in, never 0.
    pub server_term: u64,
    /// What greetings are authenticated with (see `auth`).
    pub key: ClusterKey,
    pub limits: Limits,
}

impl ServerConfig {
    /// A server of this build's format version with default limits.
    pub fn new(fsid: u64, server_term: u64) -> ServerConfig {
        ServerConfig {
            fsid,
            fmt_vers: FORMAT_VERSION,
            server_term,
            key: ClusterKey::new([0; CLUSTER_KEY_LEN]),
            limits: Limits::default(),
        }
    }
}

/// What the server machine asks of its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerOutput {
    /// Write this frame to `conn`.
    Frame { conn: ConnId, frame: Frame },
    /// Close `conn`; frames read from it are ignored until
    /// `on_disconnected`.
    Close { conn: ConnId },
    /// A mount greeted on `conn`: record it (a `client_term` of 0 is its
    /// first connection, one unlike ours follows a server change), then
    /// call `accept_greeting(conn)`.
    Greeting {
        conn: ConnId,
        rid: Rid,
        client_term: u64,
        flags: u64,
    },
    /// A mount's request, for the handler to answer with `send_response`.
    Request { rid: Rid, id: u64, req: Request },
    /// A mount's answer to our request `id`.
    Response {
        rid: Rid,
        id: u64,
        resp: ClientResponse,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnState {
    AwaitGreeting,
    /// Greeted; the reply waits for `accept_greeting`.
    AwaitAccept {
        rid: Rid,
    },
    Ready {
        rid: Rid,
    },
    /// Closed by us; reads are ignored until the driver reports it gone.
    Closing,
}

/// A mount's stream and where it is connected.
#[derive(Debug)]
struct Peer {
    stream: Stream,
    conn: Option<ConnId>,
    /// The id of the newest greeting seen.
    greeting_id: u64,
    flags: u64,
}

/// The server end: one per server, for the server's life.
#[derive(Debug)]
pub struct ServerNet {
    cfg: ServerConfig,
    conns: BTreeMap<ConnId, ConnState>,
    peers: BTreeMap<Rid, Peer>,
    out: VecDeque<ServerOutput>,
    counters: NetCounters,
}

impl ServerNet {
    pub fn new(cfg: ServerConfig) -> Result<ServerNet, NetError> {
        cfg.limits.check()?;
        if cfg.server_term == 0 {
            return Err(NetError::Config("a server term is never 0"));
        }
        Ok(ServerNet {
            cfg,
            conns: BTreeMap::new(),
            peers: BTreeMap::new(),
            out: VecDeque::new(),
            counters: NetCounters::default(),
        })
    }

    pub fn server_term(&self) -> u64 {
        self.cfg.server_term
    }

    pub fn counters(&self) -> NetCounters {
        self.counters
    }

    /// The mounts the server keeps streams for.
    pub fn peers(&self) -> impl Iterator<Item = Rid> + '_ {
        self.peers.keys().copied()
    }

    /// Whether `rid` has a greeted, accepted connection.
    pub fn is_ready(&self, rid: Rid) -> bool {
        let conn = self.peers.get(&rid).and_then(|p| p.conn);
        conn.is_some_and(|c| self.conns.get(&c) == Some(&ConnState::Ready { rid }))
    }

    /// `rid`'s queued requests and responses.
    pub fn queued(&self, rid: Rid) -> Option<(usize, usize)> {
        let s = &self.peers.get(&rid)?.stream;
        Some((s.requests.len(), s.responses.len()))
    }

    /// The next output for the driver.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.out.pop_front()
    }

    fn emit(&mut self, rid: Rid, frame: Frame) {
        let conn = self.peers.get(&rid).and_then(|p| p.conn);
        if let Some(conn) = conn {
            if self.conns.get(&conn) == Some(&ConnState::Ready { rid }) {
                self.counters.frames_out += 1;
                self.out.push_back(ServerOutput::Frame { conn, frame });
            }
        }
    }

    /// Queues a request to `rid` (written now if it is connected) and
    /// returns its id.
    pub fn send_request(&mut self, rid: Rid, req: &ServerRequest) -> Result<u64, NetError> {
        let peer = self
            .peers
            .get_mut(&rid)
            .ok_or(NetError::UnknownPeer { rid })?;
        let (cmd, data) = wire::encode_server_request(req);
        let (id, frame) = peer.stream.queue_request(cmd, data)?;
        self.emit(rid, frame);
        Ok(id)
    }

    /// Stops waiting for `rid`'s answer to our request `id`.
    pub fn cancel(&mut self, rid: Rid, id: u64) -> bool {
        self.peers
            .get_mut(&rid)
            .is_some_and(|p| p.stream.cancel(id))
    }

    /// Answers `rid`'s request `id`.
    pub fn send_response(&mut self, rid: Rid, id: u64, resp: &Response) -> Result<(), NetError> {
        let peer = self
            .peers
            .get_mut(&rid)
            .ok_or(NetError::UnknownPeer { rid })?;
        let cmd = peer.stream.response_cmd(id)?;
        let (error, data) = wire::encode_response(cmd, resp)?;
        let frame = peer.stream.queue_response(id, error, data);
        self.emit(rid, frame);
        Ok(())
    }

    /// Drops everything about `rid` (after its farewell, or once fenced) and
    /// closes its connection. A later greeting from it claiming our term is
    /// refused.
    pub fn forget(&mut self, rid: Rid) -> bool {
        let Some(peer) = self.peers.remove(&rid) else {
            return false;
        };
        if let Some(conn) = peer.conn {
            self.close(conn);
        }
        true
    }

    /// The driver accepted a socket.
    pub fn on_connected(&mut self, conn: ConnId) -> Result<(), NetError> {
        if self.conns.contains_key(&conn) {
            return Err(protocol("a connection id in use", conn.0));
        }
        if self.conns.len() >= self.cfg.limits.conns_max {
            return Err(NetError::TooManyConns {
                max: self.cfg.limits.conns_max,
            });
        }
        self.conns.insert(conn, ConnState::AwaitGreeting);
        Ok(())
    }

    /// The socket of `conn` is closed.
    pub fn on_disconnected(&mut self, conn: ConnId) {
        let rid = match self.conns.remove(&conn) {
            Some(ConnState::AwaitAccept { rid } | ConnState::Ready { rid }) => rid,
            _ => return,
        };
        if let Some(p) = self.peers.get_mut(&rid) {
            if p.conn == Some(conn) {
                p.conn = None;
            }
        }
    }

    /// Marks `conn` closing, detaches it from its mount, and tells the
    /// driver to close it.
    fn close(&mut self, conn: ConnId) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        let was = std::mem::replace(state, ConnState::Closing);
        match was {
            ConnState::Closing => return,
            ConnState::AwaitAccept { rid } | ConnState::Ready { rid } => {
                if let Some(p) = self.peers.get_mut(&rid) {
                    if p.conn == Some(conn) {
                        p.conn = None;
                    }
                }
            }
            ConnState::AwaitGreeting => {}
        }
        self.out.push_back(ServerOutput::Close { conn });
    }

    /// A frame read from `conn`. An error means the connection must be
    /// closed; the machine has already asked for that.
    pub fn on_frame(&mut self, conn: ConnId, frame: &Frame) -> Result<(), NetError> {
        let r = match self.conns.get(&conn) {
            None => return Err(NetError::UnknownConn { conn }),
            Some(ConnState::Closing) => return Ok(()),
            Some(ConnState::AwaitGreeting) => self.greeting(conn, frame),
            Some(ConnState::AwaitAccept { .. }) => Err(protocol(
                "a frame before the greeting reply",
                frame.hdr().cmd as u64,
            )),
            Some(&ConnState::Ready { rid }) => self.receive(rid, frame),
        };
        if r.is_err() {
            self.close(conn);
        }
        r
    }

    fn receive(&mut self, rid: Rid, frame: &Frame) -> Result<(), NetError> {
        let Some(peer) = self.peers.get_mut(&rid) else {
            panic!("ready connection of unknown mount {rid}");
        };
        let got = peer.stream.receive(
            frame,
            &mut self.counters,
            wire::decode_request,
            wire::decode_client_response,
        )?;
        match got {
            Incoming::Nothing => {}
            Incoming::Request { id, req } => {
                self.out.push_back(ServerOutput::Request { rid, id, req })
            }
            Incoming::Response { id, resp } => {
                self.out.push_back(ServerOutput::Response { rid, id, resp })
            }
        }
        Ok(())
    }

    fn greeting(&mut self, conn: ConnId, frame: &Frame) -> Result<(), NetError> {
        let hdr = *frame.hdr();
        if hdr.kind != Kind::Request || hdr.cmd != Cmd::Greeting {
            return Err(protocol(
                "the first frame is not a greeting",
                hdr.cmd as u64,
            ));
        }
        let g = Greeting::decode(frame.data())?;
        let rid = Rid(g.rid);
        // A mount of another filesystem is told why it is refused (our
        // reply carries our code, which it can't check but needn't trust);
        // a greeting for us must carry our code, or it came from a
        // stranger and gets no answer at all.
        let ours = g.fsid == self.cfg.fsid && g.fmt_vers == self.cfg.fmt_vers;
        if ours && !Greeting::authentic(frame.data(), &self.cfg.key, hdr.id) {
            self.counters.unauthenticated += 1;
            self.counters.refusals += 1;
            return Err(NetError::Refused(Refusal::Unauthenticated));
        }
        if g.fsid != self.cfg.fsid {
            let why = Refusal::Fsid {
                ours: self.cfg.fsid,
                peer: g.fsid,
            };
            return self.refuse(conn, hdr.id, &g, ErrCode::Inval, why);
        }
        if g.fmt_vers != self.cfg.fmt_vers {
            let why = Refusal::FormatVersion {
                ours: self.cfg.fmt_vers,
                peer: g.fmt_vers,
            };
            return self.refuse(conn, hdr.id, &g, ErrCode::Inval, why);
        }
        let same_server = g.server_term == self.cfg.server_term;
        match self.peers.get(&rid).map(|p| p.greeting_id) {
            Some(newest) if hdr.id <= newest => {
                self.counters.refusals += 1;
                let why = Refusal::StaleGreeting {
                    rid,
                    id: hdr.id,
                    newest,
                };
                return Err(NetError::Refused(why));
            }
            None if same_server => {
                let why = Refusal::Forgotten { rid };
                return self.refuse(conn, hdr.id, &g, ErrCode::NoLink, why);
            }
            None if self.peers.len() >= self.cfg.limits.peers_max => {
                return self.refuse(conn, hdr.id, &g, ErrCode::NoMem, Refusal::TooManyMounts);
            }
            _ => {}
        }
        let requests_max = self.cfg.limits.requests_max;
        let peer = self.peers.entry(rid).or_insert_with(|| Peer {
            stream: Stream::new(requests_max),
            conn: None,
            greeting_id: 0,
            flags: 0,
        });
        if same_server {
            // Only our own numbering can be acknowledged.
            peer.stream.apply_ack(hdr.recv_seq)?;
        }
        peer.greeting_id = hdr.id;
        peer.flags = g.flags;
        // The newest greeting wins: the mount's older connection is dead.
        if let Some(old) = peer.conn.replace(conn) {
            self.conns.insert(old, ConnState::Closing);
            self.out.push_back(ServerOutput::Close { conn: old });
        }
        self.conns.insert(conn, ConnState::AwaitAccept { rid });
        self.counters.greetings += 1;
        self.out.push_back(ServerOutput::Greeting {
            conn,
            rid,
            client_term: g.server_term,
            flags: g.flags,
        });
        Ok(())
    }

    /// Writes an error reply carrying our greeting, so the mount can say
    /// exactly why, and fails; `on_frame` then closes the connection.
    fn refuse(
        &mut self,
        conn: ConnId,
        greeting_id: u64,
        g: &Greeting,
        code: ErrCode,
        why: Refusal,
    ) -> Result<(), NetError> {
        let reply = Greeting {
            fsid: self.cfg.fsid,
            fmt_vers: self.cfg.fmt_vers,
            server_term: self.cfg.server_term,
            rid: g.rid,
            flags: g.flags,
        };
        let hdr = Stream::new(1).greeting_header(greeting_id, Kind::Response, Some(code));
        self.counters.frames_out += 1;
        self.counters.refusals += 1;
        self.out.push_back(ServerOutput::Frame {
            conn,
            frame: valid_frame(hdr, reply.encode(&self.cfg.key, greeting_id)),
        });
        Err(NetError::Refused(why))
    }

    /// Answers the greeting on `conn` and writes everything queued for its
    /// mount. False if `conn` no longer awaits that (closed, superseded).
    pub fn accept_greeting(&mut self, conn: ConnId) -> bool {
        let Some(&ConnState::AwaitAccept { rid }) = self.conns.get(&conn) else {
            return false;
        };
        let Some(peer) = self.peers.get(&rid) else {
            panic!("{conn} awaits acceptance for unknown mount {rid}");
        };
        let reply = Greeting {
            fsid: self.cfg.fsid,
            fmt_vers: self.cfg.fmt_vers,
            server_term: self.cfg.server_term,
            rid: rid.0,
            flags: peer.flags,
        };
        let hdr = peer
            .stream
            .greeting_header(peer.greeting_id, Kind::Response, None);
        let frames = peer.stream.pending_frames();
        self.conns.insert(conn, ConnState::Ready { rid });
        self.counters.frames_out += 1 + frames.len() as u64;
        self.counters.frames_after_greeting += frames.len() as u64;
        let data = reply.encode(&self.cfg.key, peer.greeting_id);
        let frame = valid_frame(hdr, data);
        self.out.push_back(ServerOutput::Frame { conn, frame });
        for frame in frames {
            self.out.push_back(ServerOutput::Frame { conn, frame });
        }
        true
    }

    /// Asserts the machine's invariants; tests call it after every step.
    pub fn check_invariants(&self) {
        assert!(self.conns.len() <= self.cfg.limits.conns_max);
        assert!(self.peers.len() <= self.cfg.limits.peers_max);
        for (rid, p) in &self.peers {
            p.stream.check_invariants();
            if let Some(c) = p.conn {
                match self.conns.get(&c) {
                    Some(ConnState::AwaitAccept { rid: r } | ConnState::Ready { rid: r }) => {
                        assert_eq!(r, rid)
                    }
                    other => panic!("mount {rid}'s {c} is {other:?}"),
                }
            }
        }
        for (c, st) in &self.conns {
            if let ConnState::AwaitAccept { rid } | ConnState::Ready { rid } = st {
                assert_eq!(self.peers.get(rid).and_then(|p| p.conn), Some(*c));
            }
        }
    }
}

#[cfg(test)]
mod tests;
