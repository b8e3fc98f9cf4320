//! Kernel notifications that may wait in the kernel, sent from a helper
//! process so that they can never keep the mount's process alive.
//!
//! Dropping a cached name (`FUSE_NOTIFY_INVAL_ENTRY`) takes its directory's
//! lock in the kernel, and dropping cached pages (`FUSE_NOTIFY_INVAL_INODE`
//! with a range) takes their page locks; a request to this mount may hold
//! either while it waits for our answer (a rename holds its directories, a
//! read its pages). The notifying thread then sleeps in the kernel, and a
//! thread asleep there can't be killed: if the mount is killed (kill -9, or
//! a fence) in that moment, its process can never finish exiting, its
//! sockets stay open, and the cluster waits for a server that is neither
//! alive nor gone.
//!
//! So those notifications are written by a helper process (`scoutfs
//! kernel-notify`, started by the mount with a duplicate of its FUSE device
//! as descriptor 3), one thread there per notification in flight. The
//! mount's threads wait for the helper's answer in user space, where a kill
//! ends them. If the mount dies, the helper is killed too (parent death
//! signal); one of its threads that sleeps in the kernel keeps it, and the
//! FUSE connection, until that request is answered or the connection is
//! aborted (the fence agent aborts it); the mount's process itself is gone
//! and the cluster goes on.
//!
//! Notifications that take no kernel lock (attributes, the name epoch) are
//! still written by the mount itself, and so is everything if the helper
//! dies (a dropped name must still be dropped; the mount is then back to
//! waiting in the kernel itself, and says so).
//!
//! The pipe protocol, both ways in native byte order: the mount writes
//! `[len u32][id u64][len bytes of a FUSE notification]`; the helper
//! answers `[id u64][errno i32]` (0 when the kernel took it) once the
//! write returns.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// The FUSE notification codes we send through the helper.
const FUSE_NOTIFY_INVAL_INODE: i32 = 2;
const FUSE_NOTIFY_INVAL_ENTRY: i32 = 3;
/// The longest notification: a header, an entry's 16 bytes, a 255-byte
/// name and its NUL.
const NOTIFY_BYTES_MAX: usize = 16 + 16 + 256;
/// Notifications the helper writes at once (a thread each); more wait.
const HELPER_THREADS_MAX: usize = 64;
/// The descriptor the helper finds the FUSE device on.
const HELPER_FUSE_FD: i32 = 3;

/// The mount's end of the helper.
pub struct KernelNotify {
    /// The FUSE device, for writing notifications here if the helper is
    /// gone (they must still be made: a name the kernel keeps after the
    /// lock went would be stale).
    fuse: OwnedFd,
    child: Mutex<Child>,
    to_helper: Mutex<ChildStdin>,
    waiters: Arc<Mutex<Waiters>>,
}

#[derive(Default)]
struct Waiters {
    next_id: u64,
    by_id: HashMap<u64, SyncSender<i32>>,
    /// The helper is gone: nothing more will be answered.
    dead: bool,
}

impl KernelNotify {
    /// Starts the helper with a duplicate of the FUSE device `fuse`.
    pub fn start(fuse: OwnedFd) -> std::io::Result<KernelNotify> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()?;
        let raw = fuse.as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.arg("kernel-notify")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: only dup2 (async-signal-safe) between fork and exec; the
        // duplicate at fd 3 has no close-on-exec flag.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, HELPER_FUSE_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let (Some(to_helper), Some(from_helper)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(std::io::Error::other("the helper's pipes are missing"));
        };
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let w2 = waiters.clone();
        std::thread::Builder::new()
            .name("scoutfs-knotify".into())
            .spawn(move || read_answers(from_helper, &w2))?;
        Ok(KernelNotify {
            fuse,
            child: Mutex::new(child),
            to_helper: Mutex::new(to_helper),
            waiters,
        })
    }

    /// The helper's pid.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|p| p.into_inner()).id()
    }

    /// Drops the kernel's cached entry `name` in `parent`, waiting (in
    /// user space) until the kernel has. False if it failed or the helper
    /// is gone.
    pub fn inval_entry(&self, parent: u64, name: &[u8]) -> bool {
        self.send(&entry_msg(parent, name))
    }

    /// Drops the kernel's cached pages of `ino` in `off..off + len` (0:
    /// to the end), waiting as [`KernelNotify::inval_entry`] does.
    pub fn inval_pages(&self, ino: u64, off: i64, len: i64) -> bool {
        self.send(&inode_msg(ino, off, len))
    }

    fn send(&self, msg: &[u8]) -> bool {
        let (tx, rx): (SyncSender<i32>, Receiver<i32>) = sync_channel(1);
        let id = {
            let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if w.dead {
                drop(w);
                return self.write_here(msg);
            }
            w.next_id += 1;
            let id = w.next_id;
            w.by_id.insert(id, tx);
            id
        };
        let mut frame = Vec::with_capacity(12 + msg.len());
        frame.extend_from_slice(&(msg.len() as u32).to_ne_bytes());
        frame.extend_from_slice(&id.to_ne_bytes());
        frame.extend_from_slice(msg);
        let sent = {
            let mut p = self.to_helper.lock().unwrap_or_else(|p| p.into_inner());
            p.write_all(&frame).and_then(|_| p.flush())
        };
        let answer = match sent {
            Ok(()) => rx.recv().unwrap_or(libc::EPIPE),
            Err(_) => libc::EPIPE,
        };
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .remove(&id);
        match answer {
            0 => true,
            // The helper went away with it: made here after all.
            libc::EPIPE => self.write_here(msg),
            _ => false,
        }
    }

    /// Writes a notification from this process (the helper is gone).
    fn write_here(&self, msg: &[u8]) -> bool {
        // SAFETY: writes `msg`, a live buffer, to a descriptor we own.
        let r = unsafe { libc::write(self.fuse.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
        r == msg.len() as isize
    }
}

impl Drop for KernelNotify {
    fn drop(&mut self) {
        // Closing its input ends the helper once its writes return; one
        // that sleeps in the kernel goes when that request is answered.
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = c.kill();
        let _ = c.try_wait();
    }
}

/// Hands each answer of the helper to its waiter; when the helper is gone,
/// fails everything waiting and everything after.
fn read_answers(mut from: impl Read, waiters: &Mutex<Waiters>) {
    let mut a = [0u8; 12];
    while from.read_exact(&mut a).is_ok() {
        let id = u64::from_ne_bytes(a[..8].try_into().unwrap_or_default());
        let errno = i32::from_ne_bytes(a[8..].try_into().unwrap_or_default());
        let w = waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = w.by_id.get(&id) {
            let _ = tx.try_send(errno);
        }
    }
    let mut w = waiters.lock().unwrap_or_else(|p| p.into_inner());
    w.dead = true;
    for (_, tx) in w.by_id.drain() {
        let _ = tx.try_send(libc::EPIPE);
    }
    tracing::warn!(
        "the kernel notification helper is gone; this mount drops cached names \
         and pages itself (a kill of it may then wait on the kernel)"
    );
}

fn header(len: usize, code: i32) -> Vec<u8> {
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&code.to_ne_bytes());
    b.extend_from_slice(&0u64.to_ne_bytes());
    b
}

/// `FUSE_NOTIFY_INVAL_ENTRY`: header, {parent, namelen, flags}, name, NUL.
fn entry_msg(parent: u64, name: &[u8]) -> Vec<u8> {
    let mut b = header(16 + 16 + name.len() + 1, FUSE_NOTIFY_INVAL_ENTRY);
    b.extend_from_slice(&parent.to_ne_bytes());
    b.extend_from_slice(&(name.len() as u32).to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(name);
    b.push(0);
    b
}

/// `FUSE_NOTIFY_INVAL_INODE`: header, {ino, off, len}.
fn inode_msg(ino: u64, off: i64, len: i64) -> Vec<u8> {
    let mut b = header(16 + 24, FUSE_NOTIFY_INVAL_INODE);
    b.extend_from_slice(&ino.to_ne_bytes());
    b.extend_from_slice(&off.to_ne_bytes());
    b.extend_from_slice(&len.to_ne_bytes());
    b
}

/// The helper's work: notifications waiting for a thread, and how many
/// threads there are and how many of them wait for work.
#[derive(Default)]
struct Pool {
    queue: std::collections::VecDeque<(u64, Vec<u8>)>,
    threads: usize,
    idle: usize,
}

/// `scoutfs kernel-notify`: the helper's side. Reads notifications on
/// stdin and writes each to the FUSE device on descriptor 3 from a pool
/// of threads (one per notification in flight, at most
/// [`HELPER_THREADS_MAX`], kept for the next), answering on stdout. Ends
/// when stdin closes or the mount dies.
pub fn helper_main() -> std::process::ExitCode {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: fcntl on a descriptor number.
    if unsafe { libc::fcntl(HELPER_FUSE_FD, libc::F_GETFD) } < 0 {
        eprintln!(
            "scoutfs kernel-notify: no FUSE device on descriptor 3 (started by a mount only)"
        );
        return std::process::ExitCode::FAILURE;
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let pool = Arc::new((Mutex::new(Pool::default()), std::sync::Condvar::new()));
    let mut input = std::io::stdin().lock();
    let mut head = [0u8; 12];
    while input.read_exact(&mut head).is_ok() {
        let len = u32::from_ne_bytes(head[..4].try_into().unwrap_or_default()) as usize;
        let id = u64::from_ne_bytes(head[4..].try_into().unwrap_or_default());
        if len > NOTIFY_BYTES_MAX {
            tracing::error!("a notification of {len} bytes; stopping");
            return std::process::ExitCode::FAILURE;
        }
        let mut msg = vec![0u8; len];
        if input.read_exact(&mut msg).is_err() {
            break;
        }
        let (p, cv) = &*pool;
        let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
        p.queue.push_back((id, msg));
        cv.notify_one();
        // A new thread for a notification no idle thread will take, unless
        // there are as many as may be (some may sleep in the kernel): then
        // it waits its turn.
        if p.queue.len() <= p.idle || p.threads >= HELPER_THREADS_MAX {
            continue;
        }
        p.threads += 1;
        drop(p);
        let (out, pool) = (out.clone(), pool.clone());
        if std::thread::Builder::new()
            .spawn(move || helper_worker(&out, &pool))
            .is_err()
        {
            tracing::error!("no thread for a notification; stopping");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}

/// A thread of the helper's pool: writes queued notifications to the FUSE
/// device and answers each.
fn helper_worker(out: &Mutex<std::io::Stdout>, pool: &(Mutex<Pool>, std::sync::Condvar)) {
    let (p, cv) = pool;
    loop {
        let (id, msg) = {
            let mut g = p.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(w) = g.queue.pop_front() {
                    break w;
                }
                g.idle += 1;
                g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
                g.idle -= 1;
            }
        };
        // SAFETY: writes `msg`, a live buffer, to the FUSE device.
        let r = unsafe { libc::write(HELPER_FUSE_FD, msg.as_ptr().cast(), msg.len()) };
        let errno = match r {
            r if r == msg.len() as isize => 0,
            _ => std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        };
        let mut a = [0u8; 12];
        a[..8].copy_from_slice(&id.to_ne_bytes());
        a[8..].copy_from_slice(&errno.to_ne_bytes());
        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = o.write_all(&a).and_then(|_| o.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_laid_out_as_the_kernel_reads_them() {
        let e = entry_msg(7, b"name");
        assert_eq!(e.len(), 16 + 16 + 5);
        assert_eq!(
            u32::from_ne_bytes(e[..4].try_into().unwrap()) as usize,
            e.len()
        );
        assert_eq!(i32::from_ne_bytes(e[4..8].try_into().unwrap()), 3);
        assert_eq!(u64::from_ne_bytes(e[16..24].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(e[24..28].try_into().unwrap()), 4);
        assert_eq!(&e[32..], b"name\0");
        let i = inode_msg(9, 4096, -1);
        assert_eq!(i.len(), 40);
        assert_eq!(i32::from_ne_bytes(i[4..8].try_into().unwrap()), 2);
        assert_eq!(i64::from_ne_bytes(i[32..40].try_into().unwrap()), -1);
        assert!(entry_msg(1, &[b'x'; 255]).len() <= NOTIFY_BYTES_MAX);
    }
}
