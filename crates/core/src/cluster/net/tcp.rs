//! The TCP drivers of the messaging machines in `stream`: sockets, threads and
//! nothing else. They decide nothing; every rule of delivery (numbering,
//! acknowledgement, resends, greetings) is the machines'.
//!
//! Each side keeps its machine under one mutex. A thread that changes it
//! (a reader with a frame, a caller with a request) drains every output
//! before letting go: frames go to the connection's writer thread through
//! a channel, in the order the machine made them, while the mutex is still
//! held, so concurrent callers can't reorder seqs on the wire; messages for
//! the layer above are handed over after the mutex is released, so a
//! handler may call back in (on the server, where a mount's old and new
//! connection may both be read for a moment, a second mutex keeps the
//! handing over in the machine's order). Writes never happen under the
//! mutex: a peer that stops reading can't stall the side that must read
//! its frames.
//!
//! The client connects to the server's address ([`ServerAddr`]: fixed, or
//! looked up again before every attempt, as the quorum blocks name the
//! elected server), retrying every [`CONNECT_RETRY_MS`], and reconnects
//! whenever the connection breaks;
//! the machine resends whatever wasn't acknowledged. Frames queued for a
//! connection that is gone are dropped by its writer (the machine sends
//! them again on the next one, after the greeting).

use crate::cluster::auth::ClusterKey;
use crate::cluster::net::msg::{ClientResponse, Request, Response, ServerRequest};
use crate::cluster::net::stream::{
    ClientConfig, ClientNet, ClientOutput, ConnId, NetError, ServerConfig, ServerNet, ServerOutput,
};
use crate::cluster::net::wire::{Frame, FrameReader};
use crate::error::{Error, Result};
use crate::types::Rid;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a client retries connecting to the server.
pub const CONNECT_RETRY_MS: u64 = 100;
/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT_MS: u64 = 1000;
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 << 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads frames from `stream` until it ends or fails, handing each to
/// `frame`; stops early when `frame` returns false. False when it stopped
/// at bytes that are not a valid frame.
fn read_frames(mut stream: &TcpStream, mut frame: impl FnMut(Frame) -> bool) -> bool {
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(n) => n,
        };
        let mut input = &buf[..n];
        while !input.is_empty() {
            match reader.feed(input) {
                Ok((used, f)) => {
                    input = &input[used..];
                    if let Some(f) = f {
                        if !frame(f) {
                            return true;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("bad frame, closing the connection: {e}");
                    return false;
                }
            }
        }
    }
}

/// A writer thread for one connection: writes the frames sent to it in
/// order, and shuts the socket down at the first failure.
fn spawn_writer(stream: TcpStream, name: &str) -> Option<Sender<Vec<u8>>> {
    let (tx, rx) = channel::<Vec<u8>>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut s = &stream;
            while let Ok(bytes) = rx.recv() {
                if s.write_all(&bytes).is_err() {
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        })
        .ok()?;
    Some(tx)
}

// ---------------------------------------------------------------- client

/// Where a client finds the server.
#[derive(Clone)]
pub enum ServerAddr {
    /// Always this address.
    Fixed(SocketAddr),
    /// Looked up before every connection attempt.
    Find(Arc<dyn FindServer>),
}

/// How a client finds a server that moves.
pub trait FindServer: Send + Sync {
    /// The server's address now; `None` while there is none (an election
    /// is under way).
    fn find(&self) -> Option<SocketAddr>;
    /// Connecting to `addr` (from `find`) failed, or the connection to it
    /// ended: the server there may be gone.
    fn unreachable(&self, _addr: SocketAddr) {}
}

impl ServerAddr {
    fn get(&self) -> Option<SocketAddr> {
        match self {
            ServerAddr::Fixed(a) => Some(*a),
            ServerAddr::Find(f) => f.find(),
        }
    }

    fn unreachable(&self, addr: SocketAddr) {
        if let ServerAddr::Find(f) = self {
            f.unreachable(addr);
        }
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Fixed(a) => write!(f, "the server at {a}"),
            ServerAddr::Find(_) => f.write_str("the elected server"),
        }
    }
}

/// What the client link hands to the layer above.
pub trait ClientDeliver: Send + Sync {
    /// The response to request `id`.
    fn response(&self, id: u64, resp: Response);
    /// A request of the server of `server_term`, to answer with
    /// [`ClientLink::respond`].
    fn request(&self, server_term: u64, id: u64, req: ServerRequest);
    /// The server answered a greeting; `new_server`: it is not the one
    /// greeted before (its term differs), so what the old one asked is void
    /// and the locks must be recovered. Comes before anything the new
    /// server sends.
    fn greeted(&self, server_term: u64, new_server: bool);
}

struct ClientShared {
    net: Mutex<ClientNet>,
    /// The current connection's writer, if connected.
    writer: Mutex<Option<Sender<Vec<u8>>>>,
    /// The current connection, to shut it down at close.
    stream: Mutex<Option<TcpStream>>,
    /// Greeted at least once; or a permanent error.
    state: Mutex<LinkState>,
    state_cv: Condvar,
    stop: AtomicBool,
    deliver: Arc<dyn ClientDeliver>,
}

#[derive(Default)]
struct LinkState {
    greeted: bool,
    failed: Option<String>,
}

/// A mount's connection to the server.
pub struct ClientLink {
    sh: Arc<ClientShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ClientLink {
    /// Starts connecting to the server at `addr` as mount `rid` of
    /// filesystem `fsid`, greeting with `flags` (`wire::GREETING_FLAG_*`);
    /// returns once the server has answered the first greeting, or fails
    /// if it refuses the mount for good, doesn't answer within `timeout`,
    /// or `abandon` (asked as it waits) gives a reason to stop waiting.
    pub fn connect(
        addr: ServerAddr,
        (fsid, key): (u64, ClusterKey),
        rid: u64,
        flags: u64,
        deliver: Arc<dyn ClientDeliver>,
        timeout: Duration,
        abandon: &dyn Fn() -> Option<String>,
    ) -> Result<ClientLink> {
        let mut cfg = ClientConfig::new(fsid, Rid(rid));
        cfg.flags = flags;
        cfg.key = key;
        let net = ClientNet::new(cfg).map_err(Error::from)?;
        let sh = Arc::new(ClientShared {
            net: Mutex::new(net),
            writer: Mutex::new(None),
            stream: Mutex::new(None),
            state: Mutex::default(),
            state_cv: Condvar::new(),
            stop: AtomicBool::new(false),
            deliver,
        });
        let s2 = sh.clone();
        let a2 = addr.clone();
        let thread = std::thread::Builder::new()
            .name("scoutfs-client-net".into())
            .spawn(move || s2.run(a2))
            .map_err(|e| Error::io("spawning the client's network thread", e))?;
        let link = ClientLink {
            sh,
            thread: Mutex::new(Some(thread)),
        };
        let deadline = std::time::Instant::now() + timeout;
        let mut st = lock(&link.sh.state);
        loop {
            if st.greeted || st.failed.is_some() {
                break;
            }
            if let Some(why) = abandon() {
                return Err(Error::Disconnected(why));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let slice = left.min(Duration::from_millis(100));
            st = link
                .sh
                .state_cv
                .wait_timeout(st, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if let Some(why) = &st.failed {
            return Err(Error::Refused(format!("{addr}: {why}")));
        }
        if !st.greeted {
            return Err(Error::Timeout(format!(
                "{addr} didn't answer within {} ms",
                timeout.as_millis()
            )));
        }
        drop(st);
        Ok(link)
    }

    /// The greeting flags of later connections (FAREWELL once unmounting).
    pub fn set_flags(&self, flags: u64) -> Result<()> {
        lock(&self.sh.net).set_flags(flags).map_err(Error::from)
    }

    /// Sends a request; `sent(id)` runs before it can be answered (to
    /// record who waits for its response). Returns its id.
    pub fn request(&self, req: &Request, sent: impl FnOnce(u64)) -> Result<u64> {
        if let Some(why) = &lock(&self.sh.state).failed {
            return Err(Error::Refused(why.clone()));
        }
        let mut net = lock(&self.sh.net);
        let id = net
            .send_request(req)
            .map_err(|e| Error::from(e).context(format!("sending {req:?}")))?;
        sent(id);
        let out = self.sh.drain(&mut net);
        drop(net);
        self.sh.hand_over(out);
        Ok(id)
    }

    /// Answers the request `id` of the server of `server_term`.
    pub fn respond(&self, server_term: u64, id: u64, resp: &ClientResponse) -> Result<()> {
        let mut net = lock(&self.sh.net);
        net.send_response(server_term, id, resp)
            .map_err(|e| Error::from(e).context(format!("answering server request {id}")))?;
        let out = self.sh.drain(&mut net);
        drop(net);
        self.sh.hand_over(out);
        Ok(())
    }

    /// Closes the connection for good.
    pub fn close(&self) {
        self.sh.stop.store(true, Ordering::SeqCst);
        if let Some(s) = lock(&self.sh.stream).take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        lock(&self.sh.writer).take();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for ClientLink {
    fn drop(&mut self) {
        self.close();
    }
}

enum Delivery {
    Greeted(u64, bool),
    Response(u64, Response),
    Request(u64, u64, ServerRequest),
}

impl ClientShared {
    /// Drains the machine's outputs: frames to the writer (in order, under
    /// the machine's mutex), messages returned for `hand_over`.
    fn drain(&self, net: &mut ClientNet) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Some(o) = net.poll_output() {
            match o {
                ClientOutput::Frame(f) => {
                    if let Some(w) = lock(&self.writer).as_ref() {
                        let _ = w.send(f.encode());
                    }
                }
                ClientOutput::Greeted {
                    server_term,
                    new_server,
                } => {
                    lock(&self.state).greeted = true;
                    self.state_cv.notify_all();
                    out.push(Delivery::Greeted(server_term, new_server));
                }
                ClientOutput::Response { id, resp } => out.push(Delivery::Response(id, resp)),
                ClientOutput::Request {
                    server_term,
                    id,
                    req,
                } => out.push(Delivery::Request(server_term, id, req)),
            }
        }
        out
    }

    fn hand_over(&self, out: Vec<Delivery>) {
        for d in out {
            match d {
                Delivery::Greeted(term, new) => self.deliver.greeted(term, new),
                Delivery::Response(id, resp) => self.deliver.response(id, resp),
                Delivery::Request(term, id, req) => self.deliver.request(term, id, req),
            }
        }
    }

    fn fail(&self, why: String) {
        lock(&self.state).failed = Some(why);
        self.state_cv.notify_all();
    }

    /// The connection thread: connect, greet, read; again when it breaks.
    fn run(&self, target: ServerAddr) {
        while !self.stop.load(Ordering::SeqCst) {
            let Some(addr) = target.get() else {
                std::thread::sleep(Duration::from_millis(CONNECT_RETRY_MS));
                continue;
            };
            let stream = match TcpStream::connect_timeout(
                &addr,
                Duration::from_millis(CONNECT_TIMEOUT_MS),
            ) {
                Ok(s) => s,
                Err(_) => {
                    target.unreachable(addr);
                    std::thread::sleep(Duration::from_millis(CONNECT_RETRY_MS));
                    continue;
                }
            };
            // Connecting on loopback to a port nobody listens on can meet
            // itself, when the kernel picks that port as the source.
            if stream.local_addr().ok() == stream.peer_addr().ok() {
                drop(stream);
                target.unreachable(addr);
                std::thread::sleep(Duration::from_millis(CONNECT_RETRY_MS));
                continue;
            }
            let _ = stream.set_nodelay(true);
            let (Ok(w), Ok(keep)) = (stream.try_clone(), stream.try_clone()) else {
                continue;
            };
            *lock(&self.stream) = Some(keep);
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Some(writer) = spawn_writer(w, "scoutfs-client-write") else {
                // No thread to write with: this connection can't greet.
                let _ = stream.shutdown(Shutdown::Both);
                lock(&self.stream).take();
                std::thread::sleep(Duration::from_millis(CONNECT_RETRY_MS));
                continue;
            };
            let out = {
                let mut net = lock(&self.net);
                *lock(&self.writer) = Some(writer);
                net.on_connected();
                self.drain(&mut net)
            };
            self.hand_over(out);
            let _ = read_frames(&stream, |f| {
                let mut net = lock(&self.net);
                let r = net.on_frame(&f);
                let out = self.drain(&mut net);
                drop(net);
                self.hand_over(out);
                match r {
                    Ok(()) => true,
                    Err(NetError::Refused(why)) if why.is_permanent() => {
                        self.fail(why.to_string());
                        self.stop.store(true, Ordering::SeqCst);
                        false
                    }
                    Err(e) => {
                        tracing::warn!("closing the connection to the server: {e}");
                        false
                    }
                }
            });
            let _ = stream.shutdown(Shutdown::Both);
            {
                let mut net = lock(&self.net);
                lock(&self.writer).take();
                net.on_disconnected();
                let out = self.drain(&mut net);
                drop(net);
                self.hand_over(out);
            }
            lock(&self.stream).take();
            if !self.stop.load(Ordering::SeqCst) {
                target.unreachable(addr);
                std::thread::sleep(Duration::from_millis(CONNECT_RETRY_MS));
            }
        }
    }
}

// ---------------------------------------------------------------- server

/// What the server link hands to the server.
pub trait ServerDeliver: Send + Sync {
    /// Mount `rid` greeted (a `client_term` of 0: its first connection);
    /// record it, then call [`ServerLink::accept`] with `conn`.
    fn greeting(&self, conn: ConnId, rid: u64, client_term: u64, flags: u64);
    /// A mount's request, to answer with [`ServerLink::respond`].
    fn request(&self, rid: u64, id: u64, req: Request);
    /// A mount's answer to the server's request `id`.
    fn response(&self, rid: u64, id: u64, resp: ClientResponse);
}

struct Conn {
    writer: Sender<Vec<u8>>,
    stream: TcpStream,
}

struct ServerShared {
    net: Mutex<ServerNet>,
    /// Held from draining a reader's outputs until they are handed over:
    /// the readers of a mount's old and new connection hand over in the
    /// order the machine delivered.
    delivery: Mutex<()>,
    conns: Mutex<HashMap<ConnId, Conn>>,
    /// Mounts that said farewell, forgotten once their connection is gone.
    leaving: Mutex<HashSet<u64>>,
    next_conn: AtomicU64,
    bad_frames: AtomicU64,
    stop: AtomicBool,
    deliver: Arc<dyn ServerDeliver>,
}

enum ServerDelivery {
    Greeting(ConnId, u64, u64, u64),
    Request(u64, u64, Request),
    Response(u64, u64, ClientResponse),
}

/// The server's listening socket and its connections.
pub struct ServerLink {
    sh: Arc<ServerShared>,
    addr: SocketAddr,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ServerLink {
    /// Listens on `addr` (port 0 picks a free one) as the server of `term`.
    pub fn listen(
        addr: SocketAddr,
        (fsid, key): (u64, ClusterKey),
        term: u64,
        deliver: Arc<dyn ServerDeliver>,
    ) -> Result<ServerLink> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| Error::io(format!("server: listening on {addr}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("server: its address", e))?;
        let mut cfg = ServerConfig::new(fsid, term);
        cfg.key = key;
        let net = ServerNet::new(cfg).map_err(Error::from)?;
        let sh = Arc::new(ServerShared {
            net: Mutex::new(net),
            delivery: Mutex::new(()),
            conns: Mutex::default(),
            leaving: Mutex::default(),
            next_conn: AtomicU64::new(1),
            bad_frames: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            deliver,
        });
        let s2 = sh.clone();
        let thread = std::thread::Builder::new()
            .name("scoutfs-server-accept".into())
            .spawn(move || s2.accept_loop(listener))
            .map_err(|e| Error::io("spawning the server's accept thread", e))?;
        Ok(ServerLink {
            sh,
            addr,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers a greeting the server has recorded.
    pub fn accept(&self, conn: ConnId) {
        self.sh.with_net(|net| {
            net.accept_greeting(conn);
        });
    }

    /// Answers mount `rid`'s request `id`.
    pub fn respond(&self, rid: u64, id: u64, resp: &Response) {
        self.sh.with_net(|net| {
            if let Err(e) = net.send_response(Rid(rid), id, resp) {
                tracing::warn!("answering {rid:#x} request {id}: {e}");
            }
        });
    }

    /// Sends a request to mount `rid`; returns its id.
    pub fn request(&self, rid: u64, req: &ServerRequest) -> Result<u64> {
        let mut id = Err(Error::Internal("the server's request was not sent".into()));
        self.sh.with_net(|net| {
            id = net
                .send_request(Rid(rid), req)
                .map_err(|e| Error::from(e).context(format!("server request to {rid:#x}")));
        });
        id
    }

    /// Forgets mount `rid` once it has no connection (after its farewell,
    /// whose answer must reach it first).
    pub fn forget_when_gone(&self, rid: u64) {
        lock(&self.sh.leaving).insert(rid);
        self.sh.forget_gone();
    }

    /// Breaks every connection (fault injection for tests: mounts
    /// reconnect and resend).
    pub fn break_connections(&self) {
        for c in lock(&self.sh.conns).values() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// Whether mount `rid` has a greeted, accepted connection now.
    pub fn is_ready(&self, rid: u64) -> bool {
        lock(&self.sh.net).is_ready(Rid(rid))
    }

    /// The address connection `conn` comes from, while it is open.
    pub fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        lock(&self.sh.conns)
            .get(&conn)
            .and_then(|c| c.stream.peer_addr().ok())
    }

    /// Forgets mount `rid` now (it was fenced): its connection, if any, is
    /// closed and its queued messages dropped.
    pub fn forget(&self, rid: u64) {
        self.sh.with_net(|net| {
            net.forget(Rid(rid));
        });
    }

    /// Frames refused and connections closed for bad input, so far.
    pub fn bad_frames(&self) -> u64 {
        self.sh.bad_frames.load(Ordering::Relaxed)
    }

    /// Greetings dropped for want of the cluster key's code.
    pub fn unauthenticated(&self) -> u64 {
        lock(&self.sh.net).counters().unauthenticated
    }

    /// Stops listening and closes every connection.
    pub fn close(&self) {
        self.sh.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
        for (_, c) in lock(&self.sh.conns).drain() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerLink {
    fn drop(&mut self) {
        self.close();
    }
}

impl ServerShared {
    fn with_net(&self, f: impl FnOnce(&mut ServerNet)) {
        let mut net = lock(&self.net);
        f(&mut net);
        let out = self.drain(&mut net);
        let order = lock(&self.delivery);
        drop(net);
        self.hand_over(out);
        drop(order);
    }

    fn drain(&self, net: &mut ServerNet) -> Vec<ServerDelivery> {
        let mut out = Vec::new();
        while let Some(o) = net.poll_output() {
            match o {
                ServerOutput::Frame { conn, frame } => {
                    if let Some(c) = lock(&self.conns).get(&conn) {
                        let _ = c.writer.send(frame.encode());
                    }
                }
                ServerOutput::Close { conn } => {
                    if let Some(c) = lock(&self.conns).get(&conn) {
                        let _ = c.stream.shutdown(Shutdown::Both);
                    }
                }
                ServerOutput::Greeting {
                    conn,
                    rid,
                    client_term,
                    flags,
                } => out.push(ServerDelivery::Greeting(conn, rid.0, client_term, flags)),
                ServerOutput::Request { rid, id, req } => {
                    out.push(ServerDelivery::Request(rid.0, id, req))
                }
                ServerOutput::Response { rid, id, resp } => {
                    out.push(ServerDelivery::Response(rid.0, id, resp))
                }
            }
        }
        out
    }

    fn hand_over(&self, out: Vec<ServerDelivery>) {
        for d in out {
            match d {
                ServerDelivery::Greeting(conn, rid, term, flags) => {
                    self.deliver.greeting(conn, rid, term, flags)
                }
                ServerDelivery::Request(rid, id, req) => self.deliver.request(rid, id, req),
                ServerDelivery::Response(rid, id, resp) => self.deliver.response(rid, id, resp),
            }
        }
    }

    fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        for stream in listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let _ = stream.set_nodelay(true);
            let (Ok(w), Ok(keep)) = (stream.try_clone(), stream.try_clone()) else {
                continue;
            };
            let Some(writer) = spawn_writer(w, "scoutfs-server-write") else {
                continue;
            };
            let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
            let mut refused = false;
            {
                let mut net = lock(&self.net);
                match net.on_connected(conn) {
                    Ok(()) => {
                        lock(&self.conns).insert(
                            conn,
                            Conn {
                                writer,
                                stream: keep,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::warn!("refusing a connection: {e}");
                        refused = true;
                    }
                }
            }
            if refused {
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            let sh = self.clone();
            let spawned = std::thread::Builder::new()
                .name("scoutfs-server-read".into())
                .spawn(move || sh.serve_conn(conn, stream));
            if spawned.is_err() {
                self.drop_conn(conn);
            }
        }
    }

    fn serve_conn(&self, conn: ConnId, stream: TcpStream) {
        let mut refused = false;
        let clean = read_frames(&stream, |f| {
            let mut net = lock(&self.net);
            let r = net.on_frame(conn, &f);
            let out = self.drain(&mut net);
            let order = lock(&self.delivery);
            drop(net);
            self.hand_over(out);
            drop(order);
            if let Err(e) = &r {
                tracing::warn!("closing a connection: {e}");
                refused = true;
            }
            r.is_ok()
        });
        if !clean || refused {
            self.bad_frames.fetch_add(1, Ordering::Relaxed);
        }
        let _ = stream.shutdown(Shutdown::Both);
        self.drop_conn(conn);
    }

    fn drop_conn(&self, conn: ConnId) {
        lock(&self.conns).remove(&conn);
        let mut net = lock(&self.net);
        net.on_disconnected(conn);
        let out = self.drain(&mut net);
        let order = lock(&self.delivery);
        drop(net);
        self.hand_over(out);
        drop(order);
        self.forget_gone();
    }

    fn forget_gone(&self) {
        let mut net = lock(&self.net);
        lock(&self.leaving).retain(|&rid| {
            if net.is_ready(Rid(rid)) {
                return true;
            }
            net.forget(Rid(rid));
            false
        });
        let out = self.drain(&mut net);
        let order = lock(&self.delivery);
        drop(net);
        self.hand_over(out);
        drop(order);
    }
}
