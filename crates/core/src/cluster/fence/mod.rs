//! Fencing: making sure a mount the server gave up on can no longer write to
//! the shared devices, before the server reclaims what that mount held.
//!
//! # Why
//!
//! The server reclaims a mount's locks, open log tree and allocators only
//! once that mount cannot act on them any more. A mount that is merely slow
//! or cut off from the network may still hold WRITE locks and still write
//! blocks; reclaiming under it would let two writers meet on one block.
//! Only the leader's server asks for fences, for three reasons
//! ([`FenceReason`]): a mount that was mounted did not recover with a new
//! server in time (`client_recovery`), a connected mount did not reconnect in
//! time (`client_reconnect`), or an older leader may still run its server
//! (`quorum_block_leader`). Fencing intent lives in persistent state (the
//! `mounted_clients` items and the quorum blocks), so a server that dies
//! while fencing leaves the next server to derive the same requests.
//!
//! # How
//!
//! The server cannot know how a site isolates a node (power it off, cut its
//! storage, kill a process), so fencing runs a command the administrator
//! configures (`scoutfs mount --fence-command`). Without one, [`Fencer`]
//! refuses with [`FenceError::NotConfigured`]: a server must never guess
//! that a silent mount is gone. The agent contract, for each request:
//!
//! - environment: `SCOUTFS_FENCE_RID` (16 lowercase hex digits),
//!   `SCOUTFS_FENCE_ADDR` (the mount's last IP address),
//!   `SCOUTFS_FENCE_PORT`, `SCOUTFS_FENCE_REASON` (`client_recovery`,
//!   `client_reconnect` or `quorum_block_leader`), and, when the fencer knows
//!   its filesystem, `SCOUTFS_FENCE_FSID` (16 hex digits);
//! - exit status 0: the mount is isolated ([`FenceOutcome::Fenced`]); any
//!   other status, or death by a signal: it could not be
//!   ([`FenceOutcome::Failed`], with the tail of its standard error);
//!   still running at the timeout: it is killed by its pid and reaped
//!   ([`FenceOutcome::TimedOut`]). Only that child is killed: an agent that
//!   starts children of its own must end them itself.
//! - stdin and stdout are `/dev/null`; agents report on stderr. The agent
//!   starts with no signals blocked, though the mount blocks some (the
//!   standard library resets the mask in the child).
//!
//! `scoutfs fence-local` ([`local`]) is the agent the project ships for
//! mounts on one host: it kills the mount's process (named by a record each
//! mount writes) and detaches its FUSE mount. Tests use it; sites with
//! several hosts configure their own (power, storage or network fencing).
//!
//! # Threads
//!
//! [`Fencer::start`] spawns the agent on the caller's thread (a fork and
//! exec) and returns a [`FenceHandle`] at once; one thread per request then
//! reads the agent's stderr, waits for it and enforces the timeout. The
//! server polls handles between heartbeats ([`FenceHandle::poll`]) or waits
//! ([`FenceHandle::wait`], and [`Fencer::fence`] for both at once).
//! Requests run concurrently; at most [`FENCE_RUNNING_MAX`] at once per
//! fencer. Dropping a handle does not stop its agent: the thread still
//! waits, kills at the timeout and reaps, so no agent is left a zombie.
//!
//! # Limits
//!
//! - The stderr kept is the last [`FENCE_STDERR_TAIL_BYTES`] bytes.
//! - A server that stops while agents run leaves their threads to finish
//!   (bounded by the timeout); there is no cancel yet.

pub mod local;

use crate::types::Rid;
use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an agent may run by default: the original's `FENCE_TIMEOUT_MS`.
pub const FENCE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// The bytes of an agent's stderr kept for [`FenceOutcome`].
pub const FENCE_STDERR_TAIL_BYTES: usize = 4096;
/// Fence requests one [`Fencer`] runs at once. A server fences at most the
/// mounts it knows; more than this many at once is a bug, refused rather
/// than met with a thread each.
pub const FENCE_RUNNING_MAX: usize = 64;
/// How often a request's thread looks at its agent when stderr is quiet.
const FENCE_POLL_MS: u64 = 10;

/// Why the server fences a mount (the original's reason names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FenceReason {
    /// A mount of the last server did not recover with this one in time.
    ClientRecovery,
    /// A connected mount disconnected and did not reconnect in time.
    ClientReconnect,
    /// An older leader that may still run its server.
    QuorumBlockLeader,
}

impl FenceReason {
    /// The value of `SCOUTFS_FENCE_REASON`.
    pub fn name(self) -> &'static str {
        match self {
            FenceReason::ClientRecovery => "client_recovery",
            FenceReason::ClientReconnect => "client_reconnect",
            FenceReason::QuorumBlockLeader => "quorum_block_leader",
        }
    }
}

impl std::fmt::Display for FenceReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One mount to fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceRequest {
    pub rid: Rid,
    /// The mount's last address: its connection's peer address, or the
    /// quorum slot's address for an old leader.
    pub addr: SocketAddr,
    pub reason: FenceReason,
}

/// How an agent ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceOutcome {
    /// Exit status 0: the mount is isolated; the server may reclaim it.
    Fenced,
    /// Any other status (or a signal): the mount may still run.
    Failed {
        status: ExitStatus,
        stderr_tail: String,
    },
    /// Still running at the timeout: killed and reaped; the mount may still
    /// run.
    TimedOut { stderr_tail: String },
}

/// Why a fence request could not be run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    #[error(
        "fencing is not configured (no fence command; see scoutfs mount --fence-command): \
         mount {rid} cannot be fenced and will not be assumed gone"
    )]
    NotConfigured { rid: Rid },
    #[error("{running} fence requests are running already (limit {FENCE_RUNNING_MAX})")]
    TooMany { running: usize },
    #[error("fence command {program}: {msg}")]
    Spawn { program: String, msg: String },
    #[error("fence command {program} (pid {pid}): {msg}")]
    Wait {
        program: String,
        pid: u32,
        msg: String,
    },
}

impl From<FenceError> for crate::Error {
    fn from(e: FenceError) -> crate::Error {
        crate::Error::Fence(e.to_string())
    }
}

pub type FenceResult = std::result::Result<FenceOutcome, FenceError>;

/// Runs fence requests with the configured command. Cheap to clone; clones
/// share the count of running requests.
#[derive(Clone, Debug)]
pub struct Fencer {
    /// Program and arguments; never empty when `Some`.
    command: Option<Vec<String>>,
    timeout: Duration,
    fsid: Option<u64>,
    running: Arc<AtomicUsize>,
}

impl Fencer {
    /// A fencer running `command` (program, then arguments) for each
    /// request, for at most `timeout`. `None` or an empty command: fencing
    /// is not configured and every request is refused.
    pub fn new(command: Option<Vec<String>>, timeout: Duration) -> Fencer {
        Fencer {
            command: command.filter(|c| !c.is_empty()),
            timeout,
            fsid: None,
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Also passes `SCOUTFS_FENCE_FSID`, so an agent on a host with mounts
    /// of several filesystems finds the right one.
    pub fn with_fsid(mut self, fsid: u64) -> Fencer {
        self.fsid = Some(fsid);
        self
    }

    pub fn is_configured(&self) -> bool {
        self.command.is_some()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Requests running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Runs a request to its end: [`Fencer::start`] then
    /// [`FenceHandle::wait`].
    pub fn fence(&self, req: FenceRequest) -> FenceResult {
        self.start(req)?.wait()
    }

    /// Starts the agent for `req` and returns at once.
    pub fn start(&self, req: FenceRequest) -> std::result::Result<FenceHandle, FenceError> {
        let Some(cmd) = &self.command else {
            return Err(FenceError::NotConfigured { rid: req.rid });
        };
        let slot = RunningSlot::take(&self.running)?;
        let program = cmd[0].clone();
        let mut c = Command::new(&program);
        c.args(&cmd[1..])
            .env("SCOUTFS_FENCE_RID", format!("{:016x}", req.rid.0))
            .env("SCOUTFS_FENCE_ADDR", req.addr.ip().to_string())
            .env("SCOUTFS_FENCE_PORT", req.addr.port().to_string())
            .env("SCOUTFS_FENCE_REASON", req.reason.name())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(fsid) = self.fsid {
            c.env("SCOUTFS_FENCE_FSID", format!("{fsid:016x}"));
        }
        let mut child = c.spawn().map_err(|e| FenceError::Spawn {
            program: program.clone(),
            msg: e.to_string(),
        })?;
        let pid = child.id();
        let stderr = child.stderr.take();
        let (tx, rx) = channel();
        let deadline = Instant::now() + self.timeout;
        let run = Run {
            program: program.clone(),
            child,
            stderr,
            tail: Vec::new(),
            deadline,
        };
        // The closure owns the child: if the thread cannot start, dropping
        // it here would leave the child running unreaped, so it is killed.
        let spawned = std::thread::Builder::new()
            .name(format!("scoutfs-fence-{:016x}", req.rid.0))
            .spawn(move || {
                let out = run.finish();
                // Given back first: whoever sees the outcome sees the slot free.
                drop(slot);
                let _ = tx.send(out);
            });
        if let Err(e) = spawned {
            // SAFETY: kill and waitpid of our own unreaped child, by pid.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
                libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
            }
            return Err(FenceError::Spawn {
                program,
                msg: format!("starting its thread: {e}"),
            });
        }
        Ok(FenceHandle {
            req,
            program,
            pid,
            started: Instant::now(),
            rx,
            done: None,
        })
    }
}

/// One place among the [`FENCE_RUNNING_MAX`] running requests, given back
/// on drop.
struct RunningSlot(Arc<AtomicUsize>);

impl RunningSlot {
    fn take(running: &Arc<AtomicUsize>) -> std::result::Result<RunningSlot, FenceError> {
        let was = running.fetch_add(1, Ordering::SeqCst);
        let slot = RunningSlot(running.clone());
        if was >= FENCE_RUNNING_MAX {
            return Err(FenceError::TooMany { running: was });
        }
        Ok(slot)
    }
}

impl Drop for RunningSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running fence request.
#[derive(Debug)]
pub struct FenceHandle {
    req: FenceRequest,
    program: String,
    pid: u32,
    started: Instant,
    rx: Receiver<FenceResult>,
    done: Option<FenceResult>,
}

impl FenceHandle {
    pub fn request(&self) -> &FenceRequest {
        &self.req
    }

    /// The agent's pid (for logs).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The outcome if the agent has ended (and was reaped), without
    /// blocking; the same outcome on every later call.
    pub fn poll(&mut self) -> Option<FenceResult> {
        if self.done.is_none() {
            match self.rx.try_recv() {
                Ok(r) => self.done = Some(r),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => self.done = Some(Err(self.lost())),
            }
        }
        self.done.clone()
    }

    /// Waits for the outcome (at most the fencer's timeout, plus the time
    /// to kill and reap an agent that overran it).
    pub fn wait(mut self) -> FenceResult {
        if let Some(r) = self.done.take() {
            return r;
        }
        self.rx.recv().unwrap_or_else(|_| Err(self.lost()))
    }

    fn lost(&self) -> FenceError {
        FenceError::Wait {
            program: self.program.clone(),
            pid: self.pid,
            msg: "the request's thread ended without an outcome".into(),
        }
    }
}

/// What a request's thread owns: the child, its stderr and the deadline.
struct Run {
    program: String,
    child: Child,
    stderr: Option<ChildStderr>,
    tail: Vec<u8>,
    deadline: Instant,
}

impl Run {
    fn finish(mut self) -> FenceResult {
        if let Some(e) = &self.stderr {
            set_nonblocking(e.as_raw_fd());
        }
        loop {
            self.wait_stderr();
            self.read_stderr();
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.read_stderr();
                    let stderr_tail = self.tail_text();
                    return Ok(if status.success() {
                        FenceOutcome::Fenced
                    } else {
                        FenceOutcome::Failed {
                            status,
                            stderr_tail,
                        }
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(self.wait_err(&e)),
            }
            if Instant::now() >= self.deadline {
                // Not yet reaped, so the pid is still this child's: kill
                // cannot reach another process.
                let _ = self.child.kill();
                if let Err(e) = self.child.wait() {
                    return Err(self.wait_err(&e));
                }
                self.read_stderr();
                return Ok(FenceOutcome::TimedOut {
                    stderr_tail: self.tail_text(),
                });
            }
        }
    }

    /// Sleeps until stderr has bytes, the poll interval passes or the
    /// deadline comes, whichever is first.
    fn wait_stderr(&self) {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(FENCE_POLL_MS as u128) as i32;
        match &self.stderr {
            Some(e) => {
                let mut p = libc::pollfd {
                    fd: e.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on one valid pollfd we own.
                unsafe {
                    libc::poll(&mut p, 1, ms);
                }
            }
            None => std::thread::sleep(Duration::from_millis(ms as u64)),
        }
    }

    /// Reads what stderr holds now, keeping the tail; closes it at EOF.
    fn read_stderr(&mut self) {
        let Some(e) = &mut self.stderr else { return };
        let mut buf = [0u8; 4096];
        loop {
            match e.read(&mut buf) {
                Ok(0) => {
                    self.stderr = None;
                    return;
                }
                Ok(n) => {
                    self.tail.extend_from_slice(&buf[..n]);
                    let over = self.tail.len().saturating_sub(FENCE_STDERR_TAIL_BYTES);
                    self.tail.drain(..over);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.stderr = None;
                    return;
                }
            }
        }
    }

    fn tail_text(&self) -> String {
        String::from_utf8_lossy(&self.tail).trim_end().to_string()
    }

    fn wait_err(&self, e: &std::io::Error) -> FenceError {
        FenceError::Wait {
            program: self.program.clone(),
            pid: self.child.id(),
            msg: e.to_string(),
        }
    }
}

fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

#[cfg(test)]
mod tests;
