//! The mount's side of the control socket: a listener thread and a thread
//! per connection (at most [`CONNECTIONS_MAX`]), each answering its
//! requests in order.
//!
//! Nothing a peer sends can disturb the mount: a frame that is not one
//! (bad magic, another version, an oversized payload, too many
//! descriptors, a frame that stops arriving) is answered with an error
//! when an answer can still be framed, counted, and its connection
//! closed; an unknown operation or a malformed payload is answered with
//! an error and counted, and the connection goes on. Operations the
//! original reserved for `CAP_SYS_ADMIN` check the peer's credentials as
//! the socket gave them at connect (`SO_PEERCRED`).

use super::proto::{
    attr_x_from_wire, attr_x_to_wire, header, payload_prefix, recv_frame, send_frame, Frame,
    FrameError,
};
use crate::error::{Error, Result};
use crate::mount::fs::archive::{Caller, SeqIndex, WalkEntry, AX_PROJECT_ID, AX_RETENTION};
use crate::mount::fs::Fs;
use scoutfs_format::control::*;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use zerocopy::IntoBytes;

/// Connections served at once; more are closed as they arrive.
pub const CONNECTIONS_MAX: usize = 64;

/// Capability numbers (`linux/capability.h`).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_ADMIN: u32 = 21;

/// How often an idle connection and the listener look for a stop.
const POLL: Duration = Duration::from_millis(200);

/// What the control socket has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlStats {
    pub connections: u64,
    /// Connections closed at once: [`CONNECTIONS_MAX`] were open.
    pub connections_refused: u64,
    pub requests: u64,
    /// Requests answered with an error.
    pub failed: u64,
    /// Frames that were not frames, unknown operations and malformed
    /// payloads.
    pub malformed: u64,
    /// Requests refused for the caller's credentials.
    pub denied: u64,
}

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    connections_refused: AtomicU64,
    requests: AtomicU64,
    failed: AtomicU64,
    malformed: AtomicU64,
    denied: AtomicU64,
}

struct Shared {
    fs: Arc<Fs>,
    rid: u64,
    /// The device number of the mount's FUSE mount: a descriptor passed
    /// with a request must be of a file there.
    dev: Option<u64>,
    stop: AtomicBool,
    open: AtomicUsize,
    counts: Counts,
    /// Told of each inode an operation changed, so that the kernel forgets
    /// what it cached of it.
    changed: std::sync::OnceLock<InodeChanged>,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

/// A mount's control socket being served.
pub struct ControlServer {
    shared: Arc<Shared>,
    path: PathBuf,
    /// The inode of the socket file this server bound.
    ino: Option<u64>,
    listener: Option<JoinHandle<()>>,
}

/// Called with the inode an operation changed, and whether where its data
/// is changed (then the kernel's cached pages go too, not only its
/// attributes).
pub type InodeChanged = Box<dyn Fn(u64, bool) + Send + Sync>;

/// The peer's credentials at connect.
#[derive(Clone, Copy, Debug)]
struct Peer {
    pid: i32,
    uid: u32,
}

impl ControlServer {
    /// Serves `fs` (of the mount `rid`, whose FUSE mount has device number
    /// `dev`; None: operations on files are refused) on a new socket at
    /// `path`, replacing any socket there (see below).
    pub fn start(path: &Path, fs: Arc<Fs>, rid: u64, dev: Option<u64>) -> Result<ControlServer> {
        let ctx = |what: &str| format!("{what} {}", path.display());
        // The path is named by this mount's FUSE device number: a socket
        // there is a mount's whose FUSE mount is gone (one still ending
        // may answer for a moment), and is replaced.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(ctx("removing the stale socket"), e)),
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| Error::io(ctx("binding the control socket"), e))?;
        // Anyone may connect: each operation checks its caller (descriptors
        // the caller opened, or its credentials).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| Error::io(ctx("setting the mode of"), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(ctx("setting up"), e))?;
        let shared = Arc::new(Shared {
            fs,
            rid,
            dev,
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            counts: Counts::default(),
            changed: std::sync::OnceLock::new(),
            conns: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || listen(listener, s))
            .map_err(|e| Error::io("starting the control thread", e))?;
        let ino = std::fs::symlink_metadata(path).ok().map(|m| m.ino());
        Ok(ControlServer {
            shared,
            path: path.to_path_buf(),
            ino,
            listener: Some(handle),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets what is told of each inode an operation changes (the FUSE
    /// mount drops the kernel's cached attributes of it).
    pub fn set_inode_changed(&self, f: InodeChanged) {
        let _ = self.shared.changed.set(f);
    }

    pub fn stats(&self) -> ControlStats {
        let c = &self.shared.counts;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ControlStats {
            connections: l(&c.connections),
            connections_refused: l(&c.connections_refused),
            requests: l(&c.requests),
            failed: l(&c.failed),
            malformed: l(&c.malformed),
            denied: l(&c.denied),
        }
    }

    /// Stops serving: no new connection is taken, each open one ends
    /// after the request it is answering, and the socket is removed.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
        let conns = std::mem::take(&mut *lock(&self.shared.conns));
        for h in conns {
            let _ = h.join();
        }
        // Only our own socket: a new mount with the same FUSE device
        // number may have replaced it already.
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| Some(m.ino()) == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if self.listener.is_some() {
            self.stop_now();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn listen(listener: UnixListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Acquire) {
        let sock = match listener.accept() {
            Ok((sock, _)) => sock,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(POLL / 4);
                continue;
            }
            Err(e) => {
                tracing::warn!("control socket: accept: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        crate::counters::inc(&shared.counts.connections);
        if shared.open.load(Ordering::Acquire) >= CONNECTIONS_MAX {
            crate::counters::inc(&shared.counts.connections_refused);
            continue;
        }
        shared.open.fetch_add(1, Ordering::AcqRel);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                serve(&sock, &s);
                s.open.fetch_sub(1, Ordering::AcqRel);
            });
        let mut conns = lock(&shared.conns);
        conns.retain(|h| !h.is_finished());
        match spawned {
            Ok(h) => conns.push(h),
            Err(e) => {
                shared.open.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!("control socket: starting a connection thread: {e}");
            }
        }
    }
}

fn peer_of(sock: &UnixStream) -> io::Result<Peer> {
    // SAFETY: a zeroed ucred is valid; getsockopt writes at most `len`
    // bytes into it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
    })
}

/// Whether the peer may do what the original reserved for CAP_SYS_ADMIN:
/// root, or a process that holds the capability.
fn is_admin(peer: &Peer) -> bool {
    has_cap(peer, CAP_SYS_ADMIN)
}

/// Whether the peer is root or holds capability `cap`.
fn has_cap(peer: &Peer, cap: u32) -> bool {
    if peer.uid == 0 {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", peer.pid)) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

fn serve(sock: &UnixStream, shared: &Shared) {
    let peer = match peer_of(sock) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("control socket: the peer's credentials: {e}");
            return;
        }
    };
    if sock.set_read_timeout(Some(POLL)).is_err()
        || sock
            .set_write_timeout(Some(super::proto::FRAME_TIMEOUT))
            .is_err()
    {
        return;
    }
    while !shared.stop.load(Ordering::Acquire) {
        let frame = match recv_frame(sock, CONTROL_REQUEST_MAX, true) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(FrameError::Closed) => return,
            Err(FrameError::Io(e)) => {
                crate::counters::inc(&shared.counts.malformed);
                tracing::debug!("control socket: pid {}: {e}", peer.pid);
                return;
            }
            Err(FrameError::Bad(errno, why)) => {
                // The stream is out of step: answer if we can, and close.
                crate::counters::inc(&shared.counts.malformed);
                tracing::debug!("control socket: pid {}: {why}", peer.pid);
                let _ = answer(sock, 0, 0, Err((errno, why)));
                return;
            }
        };
        crate::counters::inc(&shared.counts.requests);
        let (op, id) = (frame.hdr.op.get(), frame.hdr.id.get());
        let mut more = |payload: Vec<u8>| {
            let mut hdr = header(op, id, payload.len());
            hdr.flags = CONTROL_FLAG_MORE.into();
            send_frame(sock, &hdr, &payload, &[])
                .map_err(|e| (libc::EPIPE, format!("sending an answer: {e}")))
        };
        let res = handle(shared, &peer, frame, &mut more);
        if let Err((errno, _)) = &res {
            crate::counters::inc(&shared.counts.failed);
            if *errno == libc::EPERM {
                crate::counters::inc(&shared.counts.denied);
            }
        }
        if answer(sock, op, id, res).is_err() {
            return;
        }
    }
}

fn answer(
    sock: &UnixStream,
    op: u16,
    id: u64,
    res: std::result::Result<Vec<u8>, (i32, String)>,
) -> io::Result<()> {
    let (status, payload) = match res {
        Ok(p) => (0, p),
        Err((errno, why)) => (errno, why.into_bytes()),
    };
    let mut hdr = header(op, id, payload.len());
    hdr.status = (status as u32).into();
    send_frame(sock, &hdr, &payload, &[])
}

/// An error's message for the peer, without the errno's text (the peer
/// adds it).
fn message(e: &Error) -> String {
    match e {
        Error::Errno { what, .. } => what.clone(),
        e => e.to_string(),
    }
}

fn failed(e: Error) -> (i32, String) {
    (e.errno(), message(&e))
}

type Answer = std::result::Result<Vec<u8>, (i32, String)>;

/// What a request's answer frames but the last go to.
type More<'a> = dyn FnMut(Vec<u8>) -> std::result::Result<(), (i32, String)> + 'a;

fn fs_failed(what: &str, e: crate::mount::fs::FsError) -> (i32, String) {
    (e.0, what.to_string())
}

/// The inode of the file the request's descriptor `i` opened, which must
/// be in this mount, and the descriptor's status flags (`O_ACCMODE` bits,
/// `O_APPEND`, ...).
fn file_of(
    shared: &Shared,
    fds: &[std::os::fd::OwnedFd],
    i: usize,
    op: u16,
) -> std::result::Result<(u64, i32), (i32, String)> {
    let Some(fd) = fds.get(i) else {
        return Err((
            libc::EBADF,
            format!("operation {op} needs {} descriptors", i + 1),
        ));
    };
    let Some(dev) = shared.dev else {
        return Err((libc::EBADF, "this mount serves no files".into()));
    };
    // SAFETY: a zeroed stat is valid; fstat writes it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        let e = io::Error::last_os_error();
        return Err((
            e.raw_os_error().unwrap_or(libc::EBADF),
            format!("fstat: {e}"),
        ));
    }
    if st.st_dev != dev {
        return Err((
            libc::EXDEV,
            "the descriptor is of a file in another filesystem".into(),
        ));
    }
    Ok((st.st_ino, status_flags(fd)?))
}

fn status_flags(fd: &std::os::fd::OwnedFd) -> std::result::Result<i32, (i32, String)> {
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if fl < 0 {
        return Err((libc::EBADF, "fcntl: the descriptor's flags".into()));
    }
    Ok(fl)
}

/// EBADF unless the flags are of a descriptor opened for writing.
fn for_writing(fl: i32, what: &str) -> std::result::Result<(), (i32, String)> {
    match fl & libc::O_ACCMODE {
        libc::O_WRONLY | libc::O_RDWR => Ok(()),
        _ => Err((
            libc::EBADF,
            format!("{what} needs the file opened for writing"),
        )),
    }
}

fn handle(shared: &Shared, peer: &Peer, frame: Frame, more: &mut More<'_>) -> Answer {
    let Frame { hdr, payload, fds } = frame;
    let op = hdr.op.get();
    if fds.len() != hdr.nfds as usize {
        crate::counters::inc(&shared.counts.malformed);
        return Err((
            libc::EINVAL,
            format!(
                "the header says {} descriptors, {} came",
                hdr.nfds,
                fds.len()
            ),
        ));
    }
    let fs = &shared.fs;
    match op {
        op::STATFS_MORE => {
            let s = fs.statfs().map_err(|e| (e.0, "statfs".to_string()))?;
            let committed_seq = fs.last_seq().map_err(|e| fs_failed("the last seq", e))?;
            Ok(ControlStatfs {
                fsid: fs.fsid.into(),
                rid: shared.rid.into(),
                total_meta_blocks: s.total_meta_blocks.into(),
                free_meta_blocks: s.free_meta_blocks.into(),
                reserved_meta_blocks: s.reserved_meta_blocks.into(),
                total_data_blocks: s.total_data_blocks.into(),
                free_data_blocks: s.free_data_blocks.into(),
                inode_count: s.inode_count.into(),
                committed_seq: committed_seq.into(),
            }
            .as_bytes()
            .to_vec())
        }
        op::WALK_INODES => {
            let w: ControlWalk = request(shared, op, &payload)?;
            let index = match w.index {
                WALK_INDEX_META_SEQ => SeqIndex::MetaSeq,
                WALK_INDEX_DATA_SEQ => SeqIndex::DataSeq,
                i => return Err((libc::EINVAL, format!("no inode index {i}"))),
            };
            walk(fs, index, &w, more)
        }
        op::STAT_MORE => {
            let (ino, _) = file_of(shared, &fds, 0, op)?;
            let x = fs.get_attr_x(ino).map_err(|e| fs_failed("stat", e))?;
            Ok(ControlStatMore {
                meta_seq: x.meta_seq.into(),
                data_seq: x.data_seq.into(),
                data_version: x.data_version.into(),
                online_blocks: x.online_blocks.into(),
                offline_blocks: x.offline_blocks.into(),
                crtime_sec: x.crtime.sec.get().into(),
                crtime_nsec: x.crtime.nsec.get().into(),
                pad: 0.into(),
                size: x.size.into(),
            }
            .as_bytes()
            .to_vec())
        }
        op::GET_ATTR_X => {
            let (ino, _) = file_of(shared, &fds, 0, op)?;
            let x = fs.get_attr_x(ino).map_err(|e| fs_failed("get attr x", e))?;
            Ok(attr_x_to_wire(&x).as_bytes().to_vec())
        }
        op::SET_ATTR_X => {
            let w: ControlAttrX = request(shared, op, &payload)?;
            let (ino, _) = file_of(shared, &fds, 0, op)?;
            let who = Caller {
                uid: peer.uid,
                admin: is_admin(peer),
            };
            let x = attr_x_from_wire(&w);
            let res = fs.set_attr_x(ino, &x, who);
            changed(shared, ino, false);
            res.map_err(|e| {
                let why = match e.0 {
                    libc::EPERM if x.mask & (AX_RETENTION | AX_PROJECT_ID) != 0 && !who.admin => {
                        "retention and project ids are for administrators (CAP_SYS_ADMIN)"
                    }
                    libc::EPERM => "the file is under retention, or not the caller's",
                    libc::EINVAL => "fields or values not allowed (see docs/control.md)",
                    _ => "set attr x",
                };
                fs_failed(why, e)
            })?;
            Ok(Vec::new())
        }
        op::RESIZE_DEVICES => {
            let r: ControlResize = request(shared, op, &payload)?;
            if !is_admin(peer) {
                return Err((
                    libc::EPERM,
                    "resizing the devices needs root (CAP_SYS_ADMIN)".into(),
                ));
            }
            fs.resize_devices(r.meta_blocks.get(), r.data_blocks.get())
                .map_err(failed)?;
            Ok(Vec::new())
        }
        op::RELEASE | op::PUNCH_OFFLINE => {
            let r: ControlRange = request(shared, op, &payload)?;
            let (ino, fl) = file_of(shared, &fds, 0, op)?;
            let (off, len, dv) = (r.offset.get(), r.length.get(), r.data_version.get());
            let res = if op == op::RELEASE {
                for_writing(fl, "release")?;
                fs.release_data(ino, off, len, dv)
            } else {
                for_writing(fl, "punch-offline")?;
                fs.punch_offline(ino, dv, off, len)
            };
            changed(shared, ino, true);
            res.map_err(|e| range_failed(op, e))?;
            Ok(Vec::new())
        }
        op::STAGE => {
            let r: ControlRange = request(shared, op, &payload)?;
            let (ino, fl) = file_of(shared, &fds, 0, op)?;
            for_writing(fl, "stage")?;
            if fl & (libc::O_APPEND | libc::O_DIRECT | libc::O_DSYNC) != 0 {
                return Err((
                    libc::EINVAL,
                    "stage: the file must not be opened with O_APPEND, O_DIRECT or O_DSYNC".into(),
                ));
            }
            let Some(archive) = fds.get(1) else {
                return Err((
                    libc::EBADF,
                    "stage needs the archive file's descriptor".into(),
                ));
            };
            if status_flags(archive)? & libc::O_ACCMODE == libc::O_WRONLY {
                return Err((
                    libc::EBADF,
                    "the archive file is not open for reading".into(),
                ));
            }
            let raw = archive.as_raw_fd();
            let pread = |buf: &mut [u8], at: u64| -> io::Result<usize> {
                // SAFETY: buf is valid for writes of its length.
                let n = unsafe {
                    libc::pread(
                        raw,
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        at as i64,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            };
            let res = fs.stage(
                ino,
                r.data_version.get(),
                r.offset.get(),
                r.length.get(),
                &pread,
            );
            changed(shared, ino, false);
            let n = res.map_err(|e| range_failed(op, e))?;
            Ok(n.to_le_bytes().to_vec())
        }
        op::MOVE_BLOCKS => {
            let m: ControlMoveBlocks = request(shared, op, &payload)?;
            let (from, ffl) = file_of(shared, &fds, 0, op)?;
            let (to, tfl) = file_of(shared, &fds, 1, op)?;
            for_writing(ffl, "move-blocks (the source)")?;
            for_writing(tfl, "move-blocks (the destination)")?;
            if m.flags.get() & !MOVE_BLOCKS_STAGE != 0 {
                return Err((libc::EINVAL, "move-blocks: unknown flags".into()));
            }
            let res = fs.move_blocks(
                from,
                m.from_off.get(),
                m.length.get(),
                to,
                m.to_off.get(),
                m.data_version.get(),
                m.flags.get() & MOVE_BLOCKS_STAGE != 0,
            );
            changed(shared, from, true);
            changed(shared, to, true);
            res.map_err(|e| range_failed(op, e))?;
            Ok(Vec::new())
        }
        op::DATA_WAITING => {
            let r: ControlWaitingReq = request(shared, op, &payload)?;
            let max = match r.max.get() {
                0 => usize::MAX,
                n => n as usize,
            };
            let per_frame = CONTROL_RESPONSE_MAX / CONTROL_WAITING_LEN;
            let mut left = max;
            let (mut ino, mut iblock) = (r.after_ino.get(), r.after_iblock.get());
            let all = r.flags.get() & DATA_WAITING_ALL_MOUNTS != 0;
            let follow = r.flags.get() & DATA_WAITING_FOLLOW != 0;
            if r.flags.get() & !(DATA_WAITING_ALL_MOUNTS | DATA_WAITING_FOLLOW) != 0 {
                return Err((libc::EINVAL, "data-waiting: unknown flags".into()));
            }
            // Following from before the listing, so nothing falls between.
            let feed = follow.then(|| fs.waits.feed.subscribe());
            let mut listed = std::collections::HashSet::new();
            loop {
                let got = if all {
                    fs.data_waiting_all(ino, iblock, left.min(per_frame))
                        .map_err(|e| fs_failed("asking the mounts for their waiters", e))?
                } else {
                    fs.data_waiting(ino, iblock, left.min(per_frame))
                };
                left -= got.len();
                let frame = waiting_frame(&got);
                if feed.is_some() {
                    listed.extend(got.iter().map(|w| (w.ino, w.iblock)));
                }
                match got.last() {
                    Some(l) if got.len() == per_frame && left > 0 => {
                        (ino, iblock) = (l.ino, l.iblock);
                        more(frame)?;
                    }
                    _ => match feed {
                        None => return Ok(frame),
                        Some(rx) => {
                            more(frame)?;
                            return follow_waiters(shared, &rx, all, listed, more);
                        }
                    },
                }
            }
        }
        op::DATA_WAIT_ERR => {
            let r: ControlWaitErr = request(shared, op, &payload)?;
            if !is_admin(peer) {
                return Err((
                    libc::EPERM,
                    "failing waiters needs root (CAP_SYS_ADMIN)".into(),
                ));
            }
            let ops = u8::try_from(r.ops.get()).unwrap_or(0);
            if r.flags.get() & !DATA_WAIT_ERR_ALL_MOUNTS != 0 {
                return Err((libc::EINVAL, "data-wait-err: unknown flags".into()));
            }
            let (ino, off, count, errno) = (
                r.ino.get(),
                r.offset.get(),
                r.count.get(),
                r.errno.get() as i32,
            );
            let n = if r.flags.get() & DATA_WAIT_ERR_ALL_MOUNTS != 0 {
                fs.data_wait_err_all(ino, off, count, ops, errno)
            } else {
                fs.data_wait_err(ino, off, count, ops, errno)
                    .map(|n| n as u64)
            };
            let n = n.map_err(|e| {
                fs_failed(
                    "ops must be read, write or change_size bits; errno 1..4095",
                    e,
                )
            })?;
            Ok(n.to_le_bytes().to_vec())
        }
        op::INO_PATH | op::GET_REFERRING_ENTRIES => {
            let r: ControlInoEntries = request(shared, op, &payload)?;
            if !has_cap(peer, CAP_DAC_READ_SEARCH) && !is_admin(peer) {
                return Err((
                    libc::EPERM,
                    "finding names by inode number needs root (CAP_DAC_READ_SEARCH)".into(),
                ));
            }
            entries(fs, op, &r, more)
        }
        op::GET_ALLOCATED_INOS => {
            let ino: zerocopy::little_endian::U64 = request(shared, op, &payload)?;
            if !is_admin(peer) {
                return Err((
                    libc::EPERM,
                    "listing allocated inodes needs root (CAP_SYS_ADMIN)".into(),
                ));
            }
            let inos = fs
                .allocated_inos(ino.get())
                .map_err(|e| fs_failed("allocated inodes", e))?;
            Ok(inos.iter().flat_map(|i| i.to_le_bytes()).collect())
        }
        _ => {
            crate::counters::inc(&shared.counts.malformed);
            Err((libc::EOPNOTSUPP, format!("unknown operation {op}")))
        }
    }
}

/// DATA_WAITING answer entries.
fn waiting_frame(ws: &[crate::mount::fs::wait::Waiting]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ws.len() * CONTROL_WAITING_LEN);
    for w in ws {
        let e = ControlWaiting {
            ino: w.ino.into(),
            iblock: w.iblock.into(),
            ops: w.ops,
            pad: [0; 7],
        };
        frame.extend_from_slice(e.as_bytes());
    }
    frame
}

/// How often a follower with nothing new gets an empty frame (which is
/// how a follower that went away is noticed).
const FOLLOW_KEEPALIVE: Duration = Duration::from_secs(2);

/// Sends each block that operations begin to wait for (of this mount, or
/// of every mount with `all`), until the peer or the mount goes. Blocks
/// the listing gave are left out of what comes until the first quiet
/// moment (they may be reported in both).
fn follow_waiters(
    shared: &Shared,
    rx: &std::sync::mpsc::Receiver<crate::mount::fs::wait::FeedItem>,
    all: bool,
    mut listed: std::collections::HashSet<(u64, u64)>,
    more: &mut More<'_>,
) -> Answer {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        match rx.recv_timeout(FOLLOW_KEEPALIVE) {
            Ok(item) => {
                if !item.local && !all {
                    continue;
                }
                let ws: Vec<_> = item
                    .blocks
                    .into_iter()
                    .filter(|w| !listed.contains(&(w.ino, w.iblock)))
                    .collect();
                if !ws.is_empty() {
                    more(waiting_frame(&ws))?;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                listed.clear();
                more(Vec::new())?;
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(Vec::new()),
        }
    }
}

/// Drops what the kernel caches of `ino`'s attributes.
fn changed(shared: &Shared, ino: u64, pages: bool) {
    if let Some(f) = shared.changed.get() {
        f(ino, pages);
    }
}

/// The request's payload as a `T`; one too short is malformed (counted).
fn request<T: zerocopy::FromBytes>(
    shared: &Shared,
    op: u16,
    payload: &[u8],
) -> std::result::Result<T, (i32, String)> {
    payload_prefix(op, payload).inspect_err(|_| crate::counters::inc(&shared.counts.malformed))
}

/// The reason for a failed release, stage, punch or move, by its errno.
fn range_failed(op: u16, e: crate::mount::fs::FsError) -> (i32, String) {
    let why = match (op, e.0) {
        (_, libc::ESTALE) => "the file's data_version is not the one given: it changed since it was archived",
        (op::PUNCH_OFFLINE, libc::EINVAL) => {
            "offsets must be 4 KiB aligned, the data_version the file's, and no block of the range online"
        }
        (op::STAGE, libc::EINVAL) => {
            "the range must start on a 4 KiB block, end on one or at the end of the file, and lie within the file"
        }
        (op::STAGE, libc::ENODATA) => "the archive file ends before the range does",
        (op::MOVE_BLOCKS, libc::ENODATA) => "offline blocks in a range (stage them first)",
        (op::MOVE_BLOCKS, libc::EINVAL) => {
            "offsets must be 4 KiB aligned (the length too unless it ends the source), two different files, and with --stage the destination range offline within its size"
        }
        (_, libc::EINVAL) => "offset and length must be 4 KiB aligned",
        (_, libc::EPERM) => "the file is under retention",
        _ => "",
    };
    (e.0, why.to_string())
}

/// The records of INO_PATH (paths) or GET_REFERRING_ENTRIES (entries)
/// answers, sent in frames of at most [`CONTROL_RESPONSE_MAX`] bytes.
fn entries(fs: &Fs, op: u16, r: &ControlInoEntries, more: &mut More<'_>) -> Answer {
    let ino = r.ino.get();
    let mut from = (r.dir_ino.get(), r.dir_pos.get());
    let mut left = match r.max.get() {
        0 => usize::MAX,
        n => n as usize,
    };
    let mut frame = Vec::new();
    // How many entries one read asks for (each at most 32 + 256 bytes).
    const BATCH: usize = 256;
    while left > 0 {
        let got: Vec<(u64, u64, u8, Vec<u8>)> = if op == op::INO_PATH {
            match fs.ino_path(ino, from) {
                Ok(Some(p)) => vec![(p.dir_ino, p.dir_pos, p.dt, p.path)],
                Ok(None) => Vec::new(),
                Err(e) => return Err(fs_failed(&format!("the paths of inode {ino}"), e)),
            }
        } else {
            fs.referring_entries(ino, from, left.min(BATCH))
                .map_err(|e| fs_failed(&format!("the entries of inode {ino}"), e))?
                .into_iter()
                .map(|e| (e.dir_ino, e.dir_pos, e.dt, e.name))
                .collect()
        };
        let Some(&(dir, pos, _, _)) = got.last() else {
            break;
        };
        left -= got.len();
        for (dir_ino, dir_pos, dt, name) in got {
            let rec = ControlEntry {
                dir_ino: dir_ino.into(),
                dir_pos: dir_pos.into(),
                ino: ino.into(),
                name_len: (name.len() as u16).into(),
                dt,
                pad: [0; 5],
            };
            let len = CONTROL_ENTRY_LEN + name.len().next_multiple_of(8);
            if frame.len() + len > CONTROL_RESPONSE_MAX {
                more(std::mem::take(&mut frame))?;
            }
            frame.extend_from_slice(rec.as_bytes());
            frame.extend_from_slice(&name);
            frame.resize(
                frame.len() + (name.len().next_multiple_of(8) - name.len()),
                0,
            );
        }
        from = match pos.checked_add(1) {
            Some(p) => (dir, p),
            None => match dir.checked_add(1) {
                Some(d) => (d, 0),
                None => break,
            },
        };
        if op == op::INO_PATH && dir == 0 {
            break; // the root's one path
        }
    }
    Ok(frame)
}

/// Entries per WALK_INODES answer frame.
const WALK_FRAME_ENTRIES: usize = 4096;

/// Walks in batches, each sent as a frame as it is found.
fn walk(fs: &Fs, index: SeqIndex, w: &ControlWalk, more: &mut More<'_>) -> Answer {
    let mut pos = WalkEntry {
        seq: w.first_seq.get(),
        ino: w.first_ino.get(),
    };
    let last = WalkEntry {
        seq: w.last_seq.get(),
        ino: w.last_ino.get(),
    };
    let mut left = match w.max_entries.get() {
        0 => usize::MAX,
        n => n as usize,
    };
    loop {
        let batch = fs
            .walk_inodes(index, pos, last, left.min(WALK_FRAME_ENTRIES))
            .map_err(|e| fs_failed("walking the inode index", e))?;
        left -= batch.entries.len();
        let mut frame = ControlWalkHead {
            last_seq: batch.last_seq.into(),
            nr: (batch.entries.len() as u32).into(),
            pad: 0.into(),
        }
        .as_bytes()
        .to_vec();
        for e in &batch.entries {
            let we = ControlWalkEntry {
                seq: e.seq.into(),
                ino: e.ino.into(),
            };
            frame.extend_from_slice(we.as_bytes());
        }
        match batch.next {
            Some(next) if left > 0 => {
                more(frame)?;
                pos = next;
            }
            _ => return Ok(frame),
        }
    }
}
