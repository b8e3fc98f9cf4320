//! The quorum driver: the sockets, device writes, clock and thread around one
//! slot's election [`Agent`], which decides everything.
//!
//! # What it does
//!
//! [`QuorumDriver::start`] reads the super block's quorum configuration,
//! refuses a slot that is not configured, binds a UDP socket on the slot's
//! address, reads every configured slot's quorum block (a corrupt block is an
//! error), starts the agent with them and persists its BEGIN event before it
//! returns, so a mount whose device can't record elections never joins one.
//! Then one thread ("scoutfs-quorum") runs the agent until shutdown:
//!
//! - it receives datagrams until the agent's deadline, decodes them with the
//!   [`MessageCodec`] (a datagram that is not a message for us is counted by
//!   kind in [`MessageCounts`] and dropped: bad input never stops the
//!   agent), feeds messages to [`Agent::on_message`] and calls
//!   [`Agent::on_timer`] when the deadline passes;
//! - it carries out each [`Output`]'s actions in order: a
//!   [`Action::Persist`] reads our slot's block, applies
//!   [`record_events`], writes it and flushes the
//!   device before any later action; a [`Action::Send`] goes to one slot's
//!   address or every other slot's; [`Action::StartServer`] and
//!   [`Action::StopServer`] call the mount's [`ServerControl`].
//!
//! Time is a monotonic clock ([`Instant`]) in milliseconds since the driver
//! started, so a wall clock stepped back cannot stall heartbeats. Event
//! timestamps in the blocks are wall clock time: they are for people.
//!
//! # The server's side
//!
//! The driver does not run the server; the mount does, through
//! [`ServerControl`]. Its `start` and `stop` are called on the driver thread
//! and must return quickly (hand the work to the server's own thread): while
//! they run, no heartbeat is sent and no vote is answered. The server
//! reports back through a [`QuorumHandle`] (given to
//! [`ServerControl::attach`] before anything else):
//! [`QuorumHandle::server_up`] once it has fenced the old leaders
//! ([`QuorumHandle::leaders_to_fence`]) and checked that no newer election
//! exists ([`QuorumHandle::newer_election`]), and
//! [`QuorumHandle::server_stopped`] whenever it stops, asked or not. Both
//! carry the term the server was started for, so a late report of an
//! earlier server is counted and ignored instead of recording a FENCE or
//! STOP for a server that never fenced or stopped. Reports are queued on a
//! channel and the driver thread is woken by an empty datagram sent to its
//! own socket; they are fed to the agent on the driver thread, so the agent
//! needs no lock.
//!
//! # Failure
//!
//! If a persist fails (the device failed, or our block shows writes that
//! aren't ours: another mount uses our slot), nothing more of that output
//! is carried out: the driver asks the server to stop if it started one,
//! tells the mount ([`ServerControl::quorum_failed`]), records the failure
//! in [`QuorumStatus::failed`], logs it and ends the thread without another
//! message or write, as if the mount had crashed.
//! Every vote and claim that left the mount was persisted first (see the
//! module comment on persistence), so the others are safe; they elect
//! someone else and fence us. [`QuorumDriver::shutdown`] returns the error.
//!
//! # Shutdown
//!
//! [`QuorumDriver::shutdown`] (and drop) feeds [`Agent::shutdown`]: the
//! server is asked to stop, and once it reports stopped the agent records
//! STOP, resigns and records END, and the thread ends. So shutdown waits for
//! the server's stop report without a time limit: recording STOP before the
//! server stopped would let the next leader skip fencing a running server.
//!
//! # Locking
//!
//! The agent, the socket's receive side and our block's write count belong
//! to the driver thread. The status is a mutex the thread publishes to after
//! every step; it is a leaf lock (nothing is called while holding it).
//!
//! # Limits
//!
//! - One receive waits at most [`WAKE_POLL_MAX_MS`], so a lost wake
//!   datagram delays a report or shutdown by at most that long.
//! - Datagrams larger than [`RECV_BUF_BYTES`] are truncated by the socket and
//!   counted as bad by their truncated length.
//! - Sends are not retried: the election tolerates lost messages.

use super::agent::{
    Action, Agent, AgentConfig, AgentStats, Dest, Output, Phase, Role, ServerState,
    HEARTBEAT_TIMEOUT_DEFAULT_MS,
};
use super::blocks::{
    current_server, leader_came_up, leaders_to_fence, newer_election, record_events, OldLeader,
    ServerLocation,
};
use super::msg::{Message, MessageCodec, MessageError};
use super::{SlotNr, SlotSet, Term};
use crate::clock::now_timespec;
use crate::error::{CorruptKind, Error, Result};
use crate::rng::Rng;
use crate::store::block::{header_of, log_corruption, read_sm, write_sm};
use crate::store::commit::read_super;
use crate::store::dev::BlockDev;
use crate::types::Rid;
use scoutfs_format::consts::{magic, QUORUM_BLKNO};
use scoutfs_format::quorum::QuorumBlock;
use scoutfs_format::SuperBlock;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest one receive waits before the driver looks at its reports
/// again: a bound on the delay a lost wake datagram can cause.
pub const WAKE_POLL_MAX_MS: u64 = 250;
/// The receive buffer: larger than any message, so a wrong-sized datagram
/// is counted with its real length (up to this).
pub const RECV_BUF_BYTES: usize = 2048;
/// After a receive error other than a timeout, the driver waits this long
/// before receiving again, so a socket that keeps failing can't spin it.
const RECV_ERROR_BACKOFF_MS: u64 = 10;

/// How a quorum member runs (mount options).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuorumOptions {
    /// The mount's id, recorded in our events and used to fence us.
    pub rid: Rid,
    /// How long a follower waits for a heartbeat before it stands.
    pub heartbeat_timeout_ms: u64,
}

impl QuorumOptions {
    /// Options with the default heartbeat timeout.
    pub fn new(rid: Rid) -> QuorumOptions {
        QuorumOptions {
            rid,
            heartbeat_timeout_ms: HEARTBEAT_TIMEOUT_DEFAULT_MS,
        }
    }
}

/// The mount's server as the driver starts and stops it.
///
/// `start` and `stop` are called on the driver thread and must not block
/// for long: heartbeats and votes wait while they run.
pub trait ServerControl: Send {
    /// Called once, before `start` or `stop`, with the handle through which
    /// the server reports back ([`QuorumHandle::server_up`],
    /// [`QuorumHandle::server_stopped`]) and reads the quorum blocks.
    fn attach(&mut self, quorum: QuorumHandle);
    /// Start the server for `term`: fence the old leaders, check for a newer
    /// election, then report up (or stop and report stopped).
    fn start(&self, term: Term);
    /// Stop the server, then report stopped. It may already be stopping.
    fn stop(&self);
    /// The driver stopped as if the mount had crashed (a quorum block write
    /// failed; `stop` was called first if a server ran). The mount is no
    /// longer a quorum member and should shut down.
    fn quorum_failed(&self, why: &str);
}

/// Datagrams that were not messages for us, by why (see [`MessageError`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BadMessageCounts {
    pub length: u64,
    pub crc: u64,
    pub fsid: u64,
    pub version: u64,
    pub padding: u64,
    pub msg_type: u64,
    pub slot_range: u64,
    pub slot_unconfigured: u64,
    /// Well formed for us but without the cluster key's code: forged.
    pub unauthenticated: u64,
}

impl BadMessageCounts {
    fn count(&mut self, e: &MessageError) {
        let c = match e {
            MessageError::Length { .. } => &mut self.length,
            MessageError::Crc { .. } => &mut self.crc,
            MessageError::Fsid { .. } => &mut self.fsid,
            MessageError::Version { .. } => &mut self.version,
            MessageError::Padding => &mut self.padding,
            MessageError::Type(_) => &mut self.msg_type,
            MessageError::SlotRange(_) => &mut self.slot_range,
            MessageError::SlotUnconfigured(_) => &mut self.slot_unconfigured,
            MessageError::Unauthenticated => &mut self.unauthenticated,
        };
        *c += 1;
    }

    pub fn total(&self) -> u64 {
        self.length
            + self.crc
            + self.fsid
            + self.version
            + self.padding
            + self.msg_type
            + self.slot_range
            + self.slot_unconfigured
            + self.unauthenticated
    }
}

/// What went over the socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts {
    /// Datagrams sent (one per destination).
    pub sent: u64,
    pub send_errors: u64,
    /// Messages decoded and given to the agent.
    pub received: u64,
    /// Datagrams refused by the codec.
    pub bad: BadMessageCounts,
    pub recv_errors: u64,
}

/// A quorum member's state, for `scoutfs status` and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumStatus {
    pub slot: SlotNr,
    pub rid: Rid,
    /// The slot's address, bound by the driver.
    pub addr: SocketAddr,
    pub phase: Phase,
    pub role: Role,
    pub term: Term,
    /// The leader of our term, if we know it (us when we lead).
    pub leader: Option<SlotNr>,
    /// The server as the agent sees it.
    pub server: ServerState,
    /// Whether our server was started and has not reported stopped.
    pub server_running: bool,
    pub messages: MessageCounts,
    /// Writes of our quorum block.
    pub persists: u64,
    /// The most a timer ran after its deadline: a stalled driver thread
    /// (a blocking `ServerControl`, an overloaded host) shows here first.
    pub timer_late_max_ms: u64,
    /// Server reports for a term other than the running server's.
    pub stale_server_reports: u64,
    pub agent: AgentStats,
    /// Why the driver stopped as if crashed, if it did.
    pub failed: Option<String>,
}

/// What the rest of the mount asks of the driver thread.
enum Command {
    ServerUp(Term),
    ServerStopped(Term),
    ServerUnreachable,
    Shutdown,
    /// End the thread at once, writing and sending nothing (a test's crash).
    Kill,
}

/// Reads the quorum blocks of one filesystem.
#[derive(Clone)]
struct BlockReader {
    meta: Arc<dyn BlockDev>,
    fsid: u64,
    slots: SlotSet,
}

impl BlockReader {
    fn read(&self, slot: SlotNr) -> Result<QuorumBlock> {
        read_quorum_block(self.meta.as_ref(), self.fsid, slot)
    }

    fn read_all(&self) -> Result<Vec<(SlotNr, QuorumBlock)>> {
        self.slots.iter().map(|s| Ok((s, self.read(s)?))).collect()
    }
}

/// Reads and checks one slot's quorum block: header (magic, fsid, blkno),
/// crc, and the block's fields. A bad block is a logged corruption error.
pub fn read_quorum_block(meta: &dyn BlockDev, fsid: u64, slot: SlotNr) -> Result<QuorumBlock> {
    let blkno = QUORUM_BLKNO + slot.0 as u64;
    let res = read_sm(meta, blkno, magic::QUORUM, Some(fsid)).and_then(|buf| {
        QuorumBlock::decode(&buf).map_err(|e| {
            let seq = header_of(&buf).seq.get();
            let detail = format!("quorum block of slot {slot}: {e}");
            Error::corrupt(CorruptKind::BlockInvalid, blkno, seq, detail)
        })
    });
    if let Err(Error::Corrupt(c)) = &res {
        log_corruption(c);
    }
    res
}

/// Every configured slot's quorum block, in slot order.
pub fn read_quorum_blocks(
    meta: &dyn BlockDev,
    sb: &SuperBlock,
) -> Result<Vec<(SlotNr, QuorumBlock)>> {
    SlotSet::from_config(&sb.qconf)
        .iter()
        .map(|s| Ok((s, read_quorum_block(meta, sb.hdr.fsid.get(), s)?)))
        .collect()
}

/// Where a client finds the server now, from the super block and the quorum
/// blocks on the metadata device: None while no server is elected.
pub fn find_server(meta: &dyn BlockDev) -> Result<Option<ServerLocation>> {
    let sb = read_super(meta, true)?;
    let blocks = read_quorum_blocks(meta, &sb)?;
    Ok(current_server(&sb.qconf, &blocks))
}

/// What the server side (and status readers) hold of a driver: cheap to
/// clone, usable from any thread, and harmless after the driver ended
/// (reports are then dropped).
#[derive(Clone)]
pub struct QuorumHandle {
    tx: Sender<Command>,
    /// The driver's socket, to wake it; weak so that a handle kept by the
    /// server does not keep the slot's port bound after the driver ended.
    wake: Weak<UdpSocket>,
    addr: SocketAddr,
    rid: Rid,
    reader: BlockReader,
    status: Arc<Mutex<QuorumStatus>>,
}

impl QuorumHandle {
    fn command(&self, c: Command) {
        if self.tx.send(c).is_ok() {
            if let Some(sock) = self.wake.upgrade() {
                // Lost or failed, the wake only costs up to WAKE_POLL_MAX_MS.
                let _ = sock.send_to(&[], self.addr);
            }
        }
    }

    /// The server started for `term` fenced the old leaders and serves.
    pub fn server_up(&self, term: Term) {
        self.command(Command::ServerUp(term));
    }

    /// The server started for `term` stopped (asked to, or on its own).
    pub fn server_stopped(&self, term: Term) {
        self.command(Command::ServerStopped(term));
    }

    /// The mount's client could not reach the server the blocks name (see
    /// [`Agent::server_unreachable`]).
    pub fn server_unreachable(&self) {
        self.command(Command::ServerUnreachable);
    }

    /// Every configured slot's quorum block as it is on the device now.
    pub fn read_blocks(&self) -> Result<Vec<(SlotNr, QuorumBlock)>> {
        self.reader.read_all()
    }

    /// The old leaders a server of `term` on this mount must fence before it
    /// serves, read from the blocks now.
    pub fn leaders_to_fence(&self, term: Term) -> Result<Vec<OldLeader>> {
        Ok(leaders_to_fence(&self.read_blocks()?, term, self.rid))
    }

    /// [`QuorumHandle::leaders_to_fence`], each with whether it ever came
    /// up (see [`leader_came_up`]).
    pub fn leaders_to_fence_and_up(&self, term: Term) -> Result<Vec<(OldLeader, bool)>> {
        let blocks = self.read_blocks()?;
        Ok(leaders_to_fence(&blocks, term, self.rid)
            .into_iter()
            .map(|o| {
                let up = leader_came_up(&blocks, &o);
                (o, up)
            })
            .collect())
    }

    /// A newer election than `term` in the blocks now: a server of `term`
    /// that finds one must stop instead of serving.
    pub fn newer_election(&self, term: Term) -> Result<Option<(SlotNr, Term)>> {
        Ok(newer_election(&self.read_blocks()?, term))
    }

    pub fn status(&self) -> QuorumStatus {
        lock(&self.status).clone()
    }

    pub fn rid(&self) -> Rid {
        self.rid
    }
}

fn lock(m: &Mutex<QuorumStatus>) -> MutexGuard<'_, QuorumStatus> {
    // The status is replaced whole under the lock, so a panic elsewhere
    // can't leave it half written: a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running quorum member: the agent's thread and its socket.
pub struct QuorumDriver {
    handle: QuorumHandle,
    thread: Option<JoinHandle<Result<()>>>,
}

impl QuorumDriver {
    /// Starts the quorum member of `slot` on the filesystem of `meta` (see
    /// the module comment). Returns once BEGIN is persisted and the thread
    /// runs.
    pub fn start(
        meta: Arc<dyn BlockDev>,
        slot: SlotNr,
        opts: QuorumOptions,
        server: Box<dyn ServerControl>,
    ) -> Result<QuorumDriver> {
        let sb = read_super(meta.as_ref(), true)?;
        let (slots, addr) = slot_address(&sb, slot)?;
        let cfg = AgentConfig {
            slot,
            slots,
            rid: opts.rid,
            heartbeat_timeout_ms: opts.heartbeat_timeout_ms,
        };
        let agent = Agent::new(cfg, Rng::from_os()).map_err(|e| Error::Config(e.to_string()))?;
        let socket = Arc::new(bind(slot, addr)?);
        let reader = BlockReader {
            meta,
            fsid: sb.hdr.fsid.get(),
            slots,
        };
        let blocks = reader.read_all()?;
        let (mut driver, handle) = Driver::new(&sb, agent, (socket, addr), reader, &blocks, server);
        driver.step(|a, now| a.start(&blocks, now))?;
        let thread = std::thread::Builder::new()
            .name("scoutfs-quorum".into())
            .spawn(move || driver.run())
            .map_err(|e| Error::io("starting the quorum thread", e))?;
        Ok(QuorumDriver {
            handle,
            thread: Some(thread),
        })
    }

    /// A handle for the server side and status readers.
    pub fn handle(&self) -> QuorumHandle {
        self.handle.clone()
    }

    pub fn status(&self) -> QuorumStatus {
        self.handle.status()
    }

    /// See [`QuorumHandle::server_up`].
    pub fn server_up(&self, term: Term) {
        self.handle.server_up(term)
    }

    /// See [`QuorumHandle::server_stopped`].
    pub fn server_stopped(&self, term: Term) {
        self.handle.server_stopped(term)
    }

    /// See [`QuorumHandle::read_blocks`].
    pub fn read_blocks(&self) -> Result<Vec<(SlotNr, QuorumBlock)>> {
        self.handle.read_blocks()
    }

    /// See [`QuorumHandle::leaders_to_fence`].
    pub fn leaders_to_fence(&self, term: Term) -> Result<Vec<OldLeader>> {
        self.handle.leaders_to_fence(term)
    }

    /// See [`QuorumHandle::newer_election`].
    pub fn newer_election(&self, term: Term) -> Result<Option<(SlotNr, Term)>> {
        self.handle.newer_election(term)
    }

    /// Stops the server (waiting for its stop report), resigns, records
    /// STOP and END, and ends the thread. The error is the failure that
    /// stopped the driver earlier, or one of these writes.
    pub fn shutdown(mut self) -> Result<()> {
        self.end(Command::Shutdown)
    }

    /// Ends the thread at once without stopping the server, sending or
    /// writing anything: what the others see of a mount that crashed. For
    /// tests of fencing and failover; a mount never calls it.
    #[doc(hidden)]
    pub fn kill_for_test(mut self) {
        let _ = self.end(Command::Kill);
    }

    fn end(&mut self, how: Command) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.handle.command(how);
        match thread.join() {
            Ok(res) => res,
            Err(_) => Err(Error::Internal("the quorum thread panicked".into())),
        }
    }
}

impl Drop for QuorumDriver {
    fn drop(&mut self) {
        if let Err(e) = self.end(Command::Shutdown) {
            tracing::error!("quorum slot {}: {e}", self.handle.status().slot);
        }
    }
}

/// The configured slots and `slot`'s address, or why `slot` can't be used.
fn slot_address(sb: &SuperBlock, slot: SlotNr) -> Result<(SlotSet, SocketAddr)> {
    let slots = SlotSet::from_config(&sb.qconf);
    let addr = sb
        .qconf
        .slots
        .get(slot.0 as usize)
        .and_then(|a| a.to_socket());
    match addr {
        Some(addr) if slots.contains(slot) => Ok((slots, addr)),
        _ => {
            let list: Vec<String> = slots.iter().map(|s| s.to_string()).collect();
            Err(Error::Config(format!(
                "quorum slot {slot} is not configured in the super block \
                 (configured slots: {})",
                list.join(", ")
            )))
        }
    }
}

/// Binds the slot's socket, with an error that says what to look at.
fn bind(slot: SlotNr, addr: SocketAddr) -> Result<UdpSocket> {
    UdpSocket::bind(addr).map_err(|e| {
        let why = match e.kind() {
            ErrorKind::AddrInUse => "is in use (is another mount using this slot?)",
            ErrorKind::AddrNotAvailable => "is not an address of this host",
            ErrorKind::PermissionDenied => "may not be bound by this process",
            _ => "can't be bound",
        };
        Error::io(format!("quorum slot {slot}'s address {addr} {why}"), e)
    })
}

fn initial_status(agent: &Agent, addr: SocketAddr) -> QuorumStatus {
    let cfg = agent.config();
    QuorumStatus {
        slot: cfg.slot,
        rid: cfg.rid,
        addr,
        phase: agent.phase(),
        role: agent.role(),
        term: agent.term(),
        leader: agent.leader(),
        server: agent.server(),
        server_running: false,
        messages: MessageCounts::default(),
        persists: 0,
        timer_late_max_ms: 0,
        stale_server_reports: 0,
        agent: *agent.stats(),
        failed: None,
    }
}

/// The driver thread's state.
struct Driver {
    agent: Agent,
    codec: MessageCodec,
    socket: Arc<UdpSocket>,
    /// The socket's address: an empty datagram from it is a wake (and
    /// where handles send their wakes).
    local: SocketAddr,
    /// Every configured slot's address, ours included.
    addrs: Vec<(SlotNr, SocketAddr)>,
    reader: BlockReader,
    /// Our block's `write_nr` after our last write: any other value on the
    /// device means someone else writes our slot.
    own_write_nr: u64,
    server: Box<dyn ServerControl>,
    /// The term of the server we started that has not reported stopped.
    running: Option<Term>,
    rx: Receiver<Command>,
    epoch: Instant,
    /// Our copy of the status, published after every step.
    st: QuorumStatus,
    status: Arc<Mutex<QuorumStatus>>,
}

/// Whether the thread goes on.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

impl Driver {
    /// The driver of a started socket, before the agent starts, and the
    /// handle given to the server side.
    fn new(
        sb: &SuperBlock,
        agent: Agent,
        (socket, addr): (Arc<UdpSocket>, SocketAddr),
        reader: BlockReader,
        blocks: &[(SlotNr, QuorumBlock)],
        mut server: Box<dyn ServerControl>,
    ) -> (Driver, QuorumHandle) {
        let cfg = *agent.config();
        let addr = socket.local_addr().unwrap_or(addr);
        let own_write_nr = blocks
            .iter()
            .find(|(s, _)| *s == cfg.slot)
            .map_or(0, |(_, qb)| qb.write_nr.get());
        let st = initial_status(&agent, addr);
        let status = Arc::new(Mutex::new(st.clone()));
        let (tx, rx) = channel();
        let handle = QuorumHandle {
            tx,
            wake: Arc::downgrade(&socket),
            addr,
            rid: cfg.rid,
            reader: reader.clone(),
            status: status.clone(),
        };
        server.attach(handle.clone());
        let driver = Driver {
            addrs: sb
                .quorum_slots()
                .map(|(s, a)| (SlotNr(s as u8), a))
                .collect(),
            agent,
            codec: MessageCodec::for_super(sb),
            local: addr,
            socket,
            reader,
            own_write_nr,
            server,
            running: None,
            rx,
            epoch: Instant::now(),
            st,
            status,
        };
        (driver, handle)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn me(&self) -> SlotNr {
        self.agent.config().slot
    }

    /// The thread: commands, timers and datagrams until the agent ends.
    fn run(mut self) -> Result<()> {
        let res = self.run_loop();
        if let Err(e) = &res {
            self.fail(e);
        }
        self.publish();
        res
    }

    fn run_loop(&mut self) -> Result<()> {
        loop {
            if self.commands()? == Flow::Exit {
                return Ok(());
            }
            let now = self.now_ms();
            let Some(deadline) = self.agent.deadline_ms() else {
                // Ended (or never started): nothing more will happen.
                return Ok(());
            };
            if now >= deadline {
                let late = now - deadline;
                self.st.timer_late_max_ms = self.st.timer_late_max_ms.max(late);
                self.step(|a, now| a.on_timer(now))?;
                continue;
            }
            self.receive(deadline - now)?;
        }
    }

    /// Feeds every queued command to the agent.
    fn commands(&mut self) -> Result<Flow> {
        loop {
            let c = match self.rx.try_recv() {
                Ok(c) => c,
                // A handle lives inside our ServerControl, so the channel
                // never disconnects while we run; treat it as empty.
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return Ok(Flow::Continue),
            };
            match c {
                Command::Kill => return Ok(Flow::Exit),
                Command::Shutdown => self.step(|a, now| a.shutdown(now))?,
                Command::ServerUp(term) if self.running == Some(term) => {
                    self.step(|a, now| a.server_up(now))?
                }
                Command::ServerStopped(term) if self.running == Some(term) => {
                    self.running = None;
                    self.step(|a, now| a.server_stopped(now))?
                }
                Command::ServerUnreachable => self.step(|a, now| a.server_unreachable(now))?,
                Command::ServerUp(_) | Command::ServerStopped(_) => {
                    self.st.stale_server_reports += 1;
                    self.publish();
                }
            }
        }
    }

    /// Waits up to `timeout_ms` for one datagram and handles it.
    fn receive(&mut self, timeout_ms: u64) -> Result<()> {
        let mut buf = [0u8; RECV_BUF_BYTES];
        let wait = Duration::from_millis(timeout_ms.clamp(1, WAKE_POLL_MAX_MS));
        let res = self
            .socket
            .set_read_timeout(Some(wait))
            .and_then(|_| self.socket.recv_from(&mut buf));
        match res {
            // Our own empty datagram: a command is queued.
            Ok((0, from)) if from == self.local => Ok(()),
            Ok((len, _)) => match self.codec.decode(&buf[..len]) {
                Ok(msg) => {
                    self.st.messages.received += 1;
                    self.step(|a, now| a.on_message(msg, now))
                }
                Err(e) => {
                    self.st.messages.bad.count(&e);
                    self.publish();
                    Ok(())
                }
            },
            Err(e) if is_timeout(&e) => Ok(()),
            Err(_) => {
                self.st.messages.recv_errors += 1;
                self.publish();
                std::thread::sleep(Duration::from_millis(RECV_ERROR_BACKOFF_MS));
                Ok(())
            }
        }
    }

    /// One input to the agent and its actions, in order.
    fn step(&mut self, input: impl FnOnce(&mut Agent, u64) -> Output) -> Result<()> {
        let now = self.now_ms();
        let out = input(&mut self.agent, now);
        self.agent.check_invariants();
        let res = self.carry_out(out.actions);
        self.publish();
        res
    }

    fn carry_out(&mut self, actions: Vec<Action>) -> Result<()> {
        for action in actions {
            match action {
                Action::Persist(events) => self.persist(&events)?,
                Action::Send { to, msg } => self.send(to, &msg),
                Action::StartServer { term } => {
                    assert!(self.running.is_none(), "server started twice");
                    self.running = Some(term);
                    self.server.start(term);
                }
                Action::StopServer => self.server.stop(),
            }
        }
        Ok(())
    }

    /// Records `events` in our block: read, modify, write, flush.
    fn persist(&mut self, events: &[(super::blocks::EventKind, Term)]) -> Result<()> {
        let me = self.me();
        let mut qb = self.reader.read(me)?;
        if qb.write_nr.get() != self.own_write_nr {
            return Err(Error::Conflict(format!(
                "quorum slot {me}'s block has write_nr {}, but our last write left {}: \
                 another mount is using slot {me}",
                qb.write_nr.get(),
                self.own_write_nr
            )));
        }
        record_events(&mut qb, self.agent.config().rid, events, now_timespec());
        let blkno = QUORUM_BLKNO + me.0 as u64;
        let mut buf = qb.to_block();
        let dev = self.reader.meta.as_ref();
        write_sm(dev, blkno, &mut buf)?;
        dev.flush().map_err(|e| {
            Error::io(
                format!("{}: flush after quorum block {blkno}", dev.name()),
                e,
            )
        })?;
        self.own_write_nr = qb.write_nr.get();
        self.st.persists += 1;
        Ok(())
    }

    fn send(&mut self, to: Dest, msg: &Message) {
        let bytes = self.codec.encode(msg);
        let me = self.me();
        for &(slot, addr) in &self.addrs {
            let wanted = match to {
                Dest::Slot(s) => s == slot,
                Dest::Others => slot != me,
            };
            if !wanted {
                continue;
            }
            match self.socket.send_to(&bytes, addr) {
                Ok(n) if n == bytes.len() => self.st.messages.sent += 1,
                _ => self.st.messages.send_errors += 1,
            }
        }
    }

    /// Stops as if the mount crashed: only the server is told.
    fn fail(&mut self, e: &Error) {
        let me = self.me();
        let why = format!(
            "quorum slot {me} stopped as if crashed, term {}: {e}",
            self.agent.term()
        );
        tracing::warn!("{why}");
        if self.running.is_some() {
            self.server.stop();
        }
        self.server.quorum_failed(&why);
        self.st.failed = Some(why);
    }

    fn publish(&mut self) {
        let a = &self.agent;
        self.st.phase = a.phase();
        self.st.role = a.role();
        self.st.term = a.term();
        self.st.leader = a.leader();
        self.st.server = a.server();
        self.st.server_running = self.running.is_some();
        self.st.agent = *a.stats();
        *lock(&self.status) = self.st.clone();
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_bad_datagram_has_its_counter() {
        let errors = [
            MessageError::Length { len: 3 },
            MessageError::Crc {
                stored: 1,
                computed: 2,
            },
            MessageError::Fsid {
                got: 1,
                expected: 2,
            },
            MessageError::Version {
                got: 1,
                expected: 2,
            },
            MessageError::Padding,
            MessageError::Type(9),
            MessageError::SlotRange(20),
            MessageError::SlotUnconfigured(3),
        ];
        let mut c = BadMessageCounts::default();
        for (i, e) in errors.iter().enumerate() {
            for _ in 0..=i {
                c.count(e);
            }
        }
        let by_kind = [
            c.length,
            c.crc,
            c.fsid,
            c.version,
            c.padding,
            c.msg_type,
            c.slot_range,
            c.slot_unconfigured,
        ];
        assert_eq!(by_kind, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(c.total(), 36);
    }
}
