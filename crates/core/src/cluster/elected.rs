//! The server of a quorum member: started when its slot wins an election,
//! stopped when it loses leadership or unmounts.
//!
//! [`ElectedServer`] is the mount's [`ServerControl`]. The quorum driver's
//! calls must return at once, so they are queued to one worker thread
//! ("scoutfs-elected") that carries them out in order:
//!
//! - **start(term)**: fence every old leader the quorum blocks name
//!   ([`QuorumHandle::leaders_to_fence`]) with the mount's fencer (reason
//!   `quorum_block_leader`, at the old slot's address), waiting for each;
//!   refuse to serve if a newer election shows in the blocks; open the
//!   metadata store afresh (the super block as the last server left it) and
//!   start a [`Server`] of that term on the slot's address, telling it which
//!   mounts were fenced so it reclaims them first. Then report up. Any
//!   failure is logged and reported as stopped, so the agent resigns and
//!   another election follows.
//! - **stop**: stop the server (it closes every connection and its thread
//!   ends), then report stopped.
//! - a server that ends on its own (a fence it asked for failed) is stopped
//!   and reported the same way.
//!
//! Reports carry the term the server was started for; the agent ignores a
//! late report of an earlier server.

use crate::cluster::fence::{FenceOutcome, FenceReason, FenceRequest, Fencer};
use crate::cluster::quorum::blocks::OldLeader;
use crate::cluster::quorum::driver::{QuorumHandle, ServerControl};
use crate::cluster::quorum::{SlotNr, SlotSet, Term};
use crate::cluster::server::{Server, ServerOptions};
use crate::error::{Error, Result};
use crate::store::commit::Store;
use crate::store::dev::BlockDev;
use scoutfs_format::SuperBlock;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What an elected server is started with (from the mount's options).
#[derive(Clone)]
pub struct ElectedOptions {
    pub fencer: Fencer,
    /// Metadata blocks the server's block cache keeps.
    pub cache_blocks: usize,
    pub recovery_timeout: Duration,
    pub reconnect_timeout: Duration,
    pub merge_interval: Duration,
    /// The data device (the server grows it, RESIZE_DEVICES).
    pub data_dev: Option<Arc<dyn BlockDev>>,
}

enum Cmd {
    Attach(QuorumHandle),
    Start(Term),
    Stop,
    /// The server of this term ended on its own.
    Exited(Term),
    Dump,
    Quit,
}

/// How long a new server waits for an old leader that never came up to
/// record its stop before fencing it (see `Worker::old_leaders`).
pub const NEVER_UP_GRACE: Duration = Duration::from_millis(1000);

/// The [`ServerControl`] of a quorum member's mount.
pub struct ElectedServer {
    tx: Mutex<Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    failure: StartFailure,
}

/// Why this mount's server could not start, when the cause is the
/// filesystem itself (corruption, or the device failing): another term
/// won't fix it, and a mount that is still starting says so at once rather
/// than wait for a server that will never answer.
pub type StartFailure = Arc<Mutex<Option<String>>>;

impl ElectedServer {
    /// A control for the server of `slot` on the filesystem of `meta`.
    /// `sb` is the super block the mount read (for the quorum slots).
    pub fn new(
        meta: Arc<dyn BlockDev>,
        sb: &SuperBlock,
        slot: SlotNr,
        opts: ElectedOptions,
    ) -> Result<Self> {
        let addr = sb
            .qconf
            .slots
            .get(slot.0 as usize)
            .and_then(|a| a.to_socket())
            .ok_or_else(|| Error::Config(format!("quorum slot {slot} is not configured")))?;
        let (tx, rx) = channel();
        let failure = StartFailure::default();
        let mut w = Worker {
            failure: failure.clone(),
            meta,
            addr,
            slot_addrs: (0..sb.qconf.slots.len())
                .map(|i| sb.qconf.slots[i].to_socket())
                .collect(),
            votes_needed: SlotSet::from_config(&sb.qconf).votes_needed(),
            opts,
            quorum: None,
            running: None,
            last_term: None,
            tx: tx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("scoutfs-elected".into())
            .spawn(move || w.run(rx))
            .map_err(|e| Error::io("starting the elected server's thread", e))?;
        Ok(ElectedServer {
            tx: Mutex::new(tx),
            thread: Some(thread),
            failure,
        })
    }

    /// Where a start that failed because of the filesystem itself says why.
    pub fn start_failure(&self) -> StartFailure {
        self.failure.clone()
    }

    /// Something that asks the running server, if any, to print its state.
    pub fn dumper(&self) -> Box<dyn Fn() + Send + Sync> {
        let tx = Mutex::new(self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone());
        Box::new(move || {
            let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(Cmd::Dump);
        })
    }

    fn send(&self, c: Cmd) {
        let _ = self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(c);
    }
}

impl ServerControl for ElectedServer {
    fn attach(&mut self, quorum: QuorumHandle) {
        self.send(Cmd::Attach(quorum));
    }
    fn start(&self, term: Term) {
        self.send(Cmd::Start(term));
    }
    fn stop(&self) {
        self.send(Cmd::Stop);
    }
    fn quorum_failed(&self, why: &str) {
        tracing::warn!(
            "this mount left the quorum ({why}); it keeps running as a client \
             and should be unmounted"
        );
    }
}

impl Drop for ElectedServer {
    fn drop(&mut self) {
        self.send(Cmd::Quit);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    meta: Arc<dyn BlockDev>,
    addr: SocketAddr,
    slot_addrs: Vec<Option<SocketAddr>>,
    votes_needed: usize,
    opts: ElectedOptions,
    quorum: Option<QuorumHandle>,
    running: Option<(Term, Server)>,
    /// The term of the last start, for a stop with nothing running.
    last_term: Option<Term>,
    tx: Sender<Cmd>,
    failure: StartFailure,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Cmd>) {
        while let Ok(c) = rx.recv() {
            match c {
                Cmd::Attach(q) => self.quorum = Some(q),
                Cmd::Start(term) => {
                    self.stop_running();
                    self.last_term = Some(term);
                    match self.start(term) {
                        Ok(server) => {
                            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                            tracing::info!(
                                "serving the filesystem as the server of term {} on {}",
                                term.0,
                                self.addr
                            );
                            self.running = Some((term, server));
                            if let Some(q) = &self.quorum {
                                q.server_up(term);
                            }
                        }
                        Err(e) => {
                            tracing::error!("the server of term {} did not start: {e}", term.0);
                            if e.corruption().is_some() || matches!(e.root(), Error::Io { .. }) {
                                let why =
                                    format!("the server of term {} could not start: {e}", term.0);
                                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                            }
                            if let Some(q) = &self.quorum {
                                q.server_stopped(term);
                            }
                        }
                    }
                }
                Cmd::Stop => {
                    if !self.stop_running() {
                        // Nothing runs (its start failed and was reported):
                        // say so again for the agent that asks.
                        if let (Some(q), Some(t)) = (&self.quorum, self.last_term) {
                            q.server_stopped(t);
                        }
                    }
                }
                Cmd::Exited(term) => {
                    if self.running.as_ref().is_some_and(|(t, _)| *t == term) {
                        self.stop_running();
                    }
                }
                Cmd::Dump => match &self.running {
                    Some((_, s)) => s.dump(),
                    None => tracing::info!("this mount runs no server"),
                },
                Cmd::Quit => {
                    self.stop_running();
                    return;
                }
            }
        }
    }

    /// Stops the running server, if any, and reports it stopped.
    fn stop_running(&mut self) -> bool {
        let Some((term, server)) = self.running.take() else {
            return false;
        };
        server.stop();
        tracing::info!("the server of term {} stopped", term.0);
        if let Some(q) = &self.quorum {
            q.server_stopped(term);
        }
        true
    }

    /// The old leaders to fence before serving in `term`. A leader that was
    /// elected but never came up is usually a live mount that lost to our
    /// newer election and is stopping: it is given [`NEVER_UP_GRACE`] to
    /// record its STOP (then it needs no fence) before it is fenced like
    /// the rest. One that comes up meanwhile is fenced.
    fn old_leaders(&self, q: &QuorumHandle, term: Term) -> Result<Vec<OldLeader>> {
        let deadline = std::time::Instant::now() + NEVER_UP_GRACE;
        loop {
            let old = q.leaders_to_fence_and_up(term)?;
            let waiting = old.iter().any(|(_, up)| !up);
            if !waiting || std::time::Instant::now() >= deadline {
                return Ok(old.into_iter().map(|(o, _)| o).collect());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start(&mut self, term: Term) -> Result<Server> {
        let q = self
            .quorum
            .clone()
            .ok_or_else(|| Error::Internal("the quorum driver is not attached".into()))?;
        let mut fenced = Vec::new();
        for old in self.old_leaders(&q, term)? {
            let addr = self
                .slot_addrs
                .get(old.slot.0 as usize)
                .copied()
                .flatten()
                .unwrap_or(self.addr);
            tracing::warn!(
                "fencing the server of term {} (mount {:#018x}, slot {})",
                old.term.0,
                old.rid.0,
                old.slot
            );
            let req = FenceRequest {
                rid: old.rid,
                addr,
                reason: FenceReason::QuorumBlockLeader,
            };
            match self.opts.fencer.fence(req)? {
                FenceOutcome::Fenced => fenced.push(old.rid.0),
                other => {
                    return Err(Error::Fence(format!(
                        "fencing mount {:#018x}: {other:?}",
                        old.rid.0
                    )))
                }
            }
        }
        if let Some((slot, newer)) = q.newer_election(term)? {
            return Err(Error::Conflict(format!(
                "slot {slot} was elected in the newer term {}",
                newer.0
            )));
        }
        let store = Store::open(self.meta.clone(), self.opts.cache_blocks)?;
        let tx = self.tx.clone();
        let failure = self.failure.clone();
        let opts = ServerOptions {
            term: term.0,
            alone: false,
            fenced,
            fencer: self.opts.fencer.clone(),
            recovery_timeout: self.opts.recovery_timeout,
            reconnect_timeout: self.opts.reconnect_timeout,
            votes_needed: self.votes_needed,
            merge_interval: self.opts.merge_interval,
            data_dev: self.opts.data_dev.clone(),
            on_exit: Some(Box::new(move |why: Error| {
                // A server that ended on corruption: the next won't do
                // better.
                if why.corruption().is_some() {
                    let why = format!("the server of term {} stopped: {why}", term.0);
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                }
                let _ = tx.send(Cmd::Exited(term));
            })),
        };
        Server::start(store, self.addr, opts)
    }
}
