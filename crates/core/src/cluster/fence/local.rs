//! The local fence agent (`scoutfs fence-local`): fencing a mount on this
//! host by killing its process and detaching its FUSE mount.
//!
//! # Records
//!
//! Every `scoutfs mount` process writes a [`LocalRecord`] into the run
//! directory ([`run_dir`]: `$SCOUTFS_RUN_DIR`, else `/run/scoutfs`) before
//! its rid can reach any server, and removes it once it has unmounted. The
//! file is named `f.<fsid>.r.<rid>` (16 hex digits each, as the original
//! named its sysfs directories) and holds, one `key value` a line:
//! the pid, the process start time (`/proc/<pid>/stat` field 22, clock ticks
//! since boot), the boot id (`/proc/sys/kernel/random/boot_id`) and the
//! mountpoint (with `\ooo` octal escapes for backslash and control bytes,
//! as `/proc/mounts` does). It is written to a temporary name and renamed,
//! so a reader never sees half a record.
//!
//! Writing before the rid is visible matters: the agent answers "already
//! fenced" when it finds no record, which is only true if every process that
//! could still use the rid has one.
//!
//! # Why a start time and a boot id
//!
//! A pid names a process only while that process lives; afterwards the
//! kernel hands it to a new one. A record whose pid runs a process with a
//! different start time, or that was written in an earlier boot, names a
//! process that is gone, and the new holder of the pid is never signalled.
//! The check and the kill are made race-free with a pidfd: it is opened
//! first, the start time checked after, and the signal sent through it, so
//! it cannot reach a process that took the pid in between. Kernels without
//! pidfds (before 5.3) fall back to `kill(2)` right after the check.
//!
//! # The agent ([`fence_local`])
//!
//! 1. Find the record of the rid (and fsid, when given). None: the mount
//!    unmounted cleanly or never mounted here; fenced already.
//! 2. Its process gone (see above): fenced already. If the mount's helper
//!    process (recorded as `helper`, which sends kernel notifications that
//!    may wait in the kernel) still runs, it holds the FUSE connection open:
//!    it is killed and that connection aborted. The FUSE mount, if it is
//!    still there and dead (the kernel answers ENOTCONN), is detached; the
//!    record is removed.
//! 3. Refuse to kill the agent itself or the process that ran it (a server
//!    fencing its own mount is a bug, not a fence).
//! 4. SIGKILL (and its helper's), then abort its FUSE connection, and wait
//!    (bounded) until the
//!    process has exited. Exit closes its `/dev/fuse` descriptors, so the
//!    mount can no longer change anything; the kernel fails requests on it
//!    with ENOTCONN. The abort is what frees a thread that waits in the
//!    kernel (uninterruptibly, so a kill can't end it) for a directory's
//!    lock held by a request on its own mount, which only that mount could
//!    answer; the mount keeps such waits in its helper, so that its own
//!    process exits at once, but the helper and the connection would wait
//!    for good. Aborting answers every request at once. It is
//!    a forced unmount's first step (`umount2(MNT_FORCE)`), taken only when
//!    the mount on the mountpoint is the one the record names: the record
//!    carries the FUSE device number (`fuse_dev`) the mount got.
//! 5. Detach its FUSE mount (`umount2(MNT_DETACH | UMOUNT_NOFOLLOW)`) if it
//!    is still there, so no dead mount is left on the mountpoint. Only a
//!    scoutfs FUSE mount is detached; anything else there is an error.
//! 6. Remove the record (best effort: a record left behind names a process
//!    that is gone, so a later fence of the rid succeeds at once).
//!
//! # Trust
//!
//! The agent usually runs as root and kills what a file names. It reads a
//! record only through a descriptor opened without following symlinks, and
//! only if it is a regular file owned by root or by the agent's own user and
//! writable by no one else.
//!
//! # Limits
//!
//! - One host, one mount namespace and one pid namespace: the agent must run
//!   where the mount's process and mountpoint are visible (a `/proc` with
//!   `hidepid` hides other users' processes from a non-root agent; with a
//!   pidfd that is an error, never taken for "gone"). Fencing other hosts
//!   needs a site's own agent (power, storage or network fencing).
//! - A process stuck in the kernel (uninterruptible sleep on a device)
//!   ignores SIGKILL until it wakes; the agent then fails after
//!   [`KILL_WAIT_MS_DEFAULT`] and the server retries through a new election.
//! - Records are read at most [`RECORD_BYTES_MAX`] bytes long.

use crate::error::{Error, Result};
use crate::types::Rid;
use std::ffi::{CString, OsString};
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where mounts write their records unless `SCOUTFS_RUN_DIR` says.
pub const RUN_DIR_DEFAULT: &str = "/run/scoutfs";
/// The environment variable that moves the run directory (tests use a
/// scratch directory).
pub const RUN_DIR_ENV: &str = "SCOUTFS_RUN_DIR";
/// How long the agent waits for a killed process to exit.
pub const KILL_WAIT_MS_DEFAULT: u64 = 10_000;
/// The longest record the agent reads (a record is about 200 bytes plus
/// the mountpoint).
pub const RECORD_BYTES_MAX: u64 = 8192;
const RECORD_MAGIC: &str = "scoutfs fence record 1";
/// How often the agent looks for the exit without a pidfd to wait on.
const PROC_POLL_MS: u64 = 10;

/// The run directory: `$SCOUTFS_RUN_DIR` if set and not empty, else
/// [`RUN_DIR_DEFAULT`].
pub fn run_dir() -> PathBuf {
    run_dir_from(std::env::var_os(RUN_DIR_ENV))
}

/// The run directory for a value of `SCOUTFS_RUN_DIR`.
pub fn run_dir_from(env: Option<OsString>) -> PathBuf {
    match env {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(RUN_DIR_DEFAULT),
    }
}

/// Enough of a process, as `/proc/<pid>/stat` shows it, to know it is the
/// same process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcIdentity {
    /// Field 3: `R`, `S`, `D`, `Z` (exited, not yet reaped), ...
    pub state: u8,
    /// Field 22: clock ticks after boot at which the process started.
    pub start_time: u64,
}

/// The identity of process `pid`, or `None` if no process has that pid.
pub fn proc_identity(pid: u32) -> io::Result<Option<ProcIdentity>> {
    let path = format!("/proc/{pid}/stat");
    match std::fs::read(&path) {
        Ok(b) => parse_stat(&b).map(Some).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{path}: cannot parse"))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn parse_stat(b: &[u8]) -> Option<ProcIdentity> {
    // Field 2, the command name, is in parentheses and may itself hold
    // spaces and ')': the fixed fields start after the last ')'.
    let close = b.iter().rposition(|&c| c == b')')?;
    let rest = std::str::from_utf8(&b[close + 1..]).ok()?;
    let mut f = rest.split_ascii_whitespace();
    let state = *f.next()?.as_bytes().first()?;
    // After field 3, nth(k) is field 4 + k.
    let start_time = f.nth(18)?.parse().ok()?;
    Some(ProcIdentity { state, start_time })
}

/// This boot's id: start times count from boot, so they compare only
/// within one boot.
pub fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
}

/// What a mount process records so the local agent can fence it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRecord {
    pub fsid: u64,
    pub rid: Rid,
    pub pid: u32,
    pub start_time: u64,
    pub boot_id: String,
    pub mountpoint: PathBuf,
    /// The device number (`major:minor`, as mountinfo shows it) of its FUSE
    /// mount, recorded once mounted: the connection the agent may abort.
    pub fuse_dev: Option<String>,
    /// The pid and start time of the mount's helper process, which holds
    /// the FUSE connection open too (it sends the kernel notifications
    /// that may wait in the kernel).
    pub helper: Option<(u32, u64)>,
}

impl LocalRecord {
    /// The record of the calling process, mounting `mountpoint`.
    pub fn for_this_process(fsid: u64, rid: Rid, mountpoint: &Path) -> Result<LocalRecord> {
        let pid = std::process::id();
        let id = proc_identity(pid)
            .map_err(|e| Error::io("reading this process's start time", e))?
            .ok_or_else(|| Error::Fence("/proc does not show this process".into()))?;
        Ok(LocalRecord {
            fsid,
            rid,
            pid,
            start_time: id.start_time,
            boot_id: boot_id().map_err(|e| Error::io("reading the boot id", e))?,
            mountpoint: mountpoint.to_path_buf(),
            fuse_dev: None,
            helper: None,
        })
    }

    /// The mount's helper process, if the record names one that still runs.
    fn helper_victim(&self) -> Result<Option<Victim>> {
        let Some((pid, start_time)) = self.helper else {
            return Ok(None);
        };
        let rec = LocalRecord {
            pid,
            start_time,
            helper: None,
            ..self.clone()
        };
        Ok(match Victim::open(&rec)? {
            Found::Live(v) => Some(v),
            Found::Gone(_) => None,
        })
    }

    /// The record's file name in the run directory.
    pub fn file_name(fsid: u64, rid: Rid) -> String {
        format!("f.{fsid:016x}.r.{:016x}", rid.0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = format!(
            "{RECORD_MAGIC}\nfsid {:016x}\nrid {:016x}\npid {}\nstart_time {}\n\
             boot_id {}\nmountpoint ",
            self.fsid, self.rid.0, self.pid, self.start_time, self.boot_id
        )
        .into_bytes();
        b.extend(escape(self.mountpoint.as_os_str().as_bytes()));
        b.push(b'\n');
        if let Some(d) = &self.fuse_dev {
            b.extend(format!("fuse_dev {d}\n").into_bytes());
        }
        if let Some((pid, start)) = self.helper {
            b.extend(format!("helper {pid} {start}\n").into_bytes());
        }
        b
    }

    /// Parses a record; every field must be there exactly once, but for
    /// `fuse_dev` and `helper` (at most once).
    pub fn decode(b: &[u8]) -> std::result::Result<LocalRecord, String> {
        let mut lines = b.split(|&c| c == b'\n');
        if lines.next() != Some(RECORD_MAGIC.as_bytes()) {
            return Err(format!(
                "not a record (the first line is not '{RECORD_MAGIC}')"
            ));
        }
        let mut f: [Option<&[u8]>; 8] = [None; 8];
        const KEYS: [&str; 8] = [
            "fsid",
            "rid",
            "pid",
            "start_time",
            "boot_id",
            "mountpoint",
            "fuse_dev",
            "helper",
        ];
        for line in lines.filter(|l| !l.is_empty()) {
            let sp = line.iter().position(|&c| c == b' ').unwrap_or(line.len());
            let (k, v) = (&line[..sp], line.get(sp + 1..).unwrap_or(&[]));
            let Some(i) = KEYS.iter().position(|key| key.as_bytes() == k) else {
                return Err(format!("unknown field '{}'", String::from_utf8_lossy(k)));
            };
            if f[i].replace(v).is_some() {
                return Err(format!("field '{}' appears twice", KEYS[i]));
            }
        }
        let get = |i: usize| f[i].ok_or_else(|| format!("field '{}' is missing", KEYS[i]));
        let text = |i: usize| -> std::result::Result<&str, String> {
            std::str::from_utf8(get(i)?).map_err(|_| format!("field '{}' is not text", KEYS[i]))
        };
        let hex = |i: usize| {
            u64::from_str_radix(text(i)?, 16).map_err(|_| format!("field '{}' is not hex", KEYS[i]))
        };
        let num = |i: usize| {
            text(i)?
                .parse::<u64>()
                .map_err(|_| format!("field '{}' is not a number", KEYS[i]))
        };
        let pid = u32::try_from(num(2)?).map_err(|_| "field 'pid' is too large".to_string())?;
        let mp = unescape(get(5)?).ok_or("field 'mountpoint' has a bad escape")?;
        if pid == 0 || mp.is_empty() {
            return Err("pid 0 or an empty mountpoint".into());
        }
        let fuse_dev = match f[6] {
            None => None,
            Some(_) => {
                let d = text(6)?;
                if parse_dev(d).is_none() {
                    return Err("field 'fuse_dev' is not MAJOR:MINOR".into());
                }
                Some(d.to_string())
            }
        };
        let helper = match f[7] {
            None => None,
            Some(_) => {
                let bad = || "field 'helper' is not PID START_TIME".to_string();
                let (p, s) = text(7)?.split_once(' ').ok_or_else(bad)?;
                let pid: u32 = p.parse().map_err(|_| bad())?;
                let start: u64 = s.parse().map_err(|_| bad())?;
                if pid == 0 {
                    return Err(bad());
                }
                Some((pid, start))
            }
        };
        Ok(LocalRecord {
            fsid: hex(0)?,
            rid: Rid(hex(1)?),
            pid,
            start_time: num(3)?,
            boot_id: text(4)?.to_string(),
            mountpoint: PathBuf::from(OsString::from_vec(mp)),
            fuse_dev,
            helper,
        })
    }

    /// Writes the record into `dir` (made if missing), replacing an older
    /// one of the same rid, and returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| Error::io(ctx("making the fence record directory", dir), e))?;
        let path = dir.join(Self::file_name(self.fsid, self.rid));
        let tmp = dir.join(format!(
            ".{}.tmp.{}",
            Self::file_name(self.fsid, self.rid),
            std::process::id()
        ));
        let res = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&self.encode()))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(ctx("writing the fence record", &path), e));
        }
        Ok(path)
    }

    /// Removes the record of `fsid` and `rid` from `dir`; no record is fine.
    pub fn remove(dir: &Path, fsid: u64, rid: Rid) -> Result<()> {
        let path = dir.join(Self::file_name(fsid, rid));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(
                format!("removing the fence record {}", path.display()),
                e,
            )),
        }
    }

    /// Reads a record, trusting only a regular file (not followed through
    /// a symlink) owned by root or by us and writable by no one else.
    pub fn read(path: &Path) -> Result<LocalRecord> {
        let what = |w: &str| format!("fence record {}: {w}", path.display());
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| Error::io(what("opening"), e))?;
        let md = f.metadata().map_err(|e| Error::io(what("stat"), e))?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if !md.file_type().is_file() || (md.uid() != 0 && md.uid() != euid) {
            return Err(Error::Fence(what(&format!(
                "not trusted: not a regular file owned by root or uid {euid}"
            ))));
        }
        if md.mode() & 0o022 != 0 {
            return Err(Error::Fence(what(&format!(
                "not trusted: writable by others (mode {:o})",
                md.mode() & 0o7777
            ))));
        }
        let mut b = Vec::new();
        f.take(RECORD_BYTES_MAX + 1)
            .read_to_end(&mut b)
            .map_err(|e| Error::io(what("reading"), e))?;
        if b.len() as u64 > RECORD_BYTES_MAX {
            return Err(Error::Fence(what("longer than a record can be")));
        }
        LocalRecord::decode(&b).map_err(|e| Error::Fence(what(&e)))
    }

    /// The record of `rid` in `dir` (of `fsid`, when given), if there is
    /// one. Without an fsid, records of the rid in two filesystems are an
    /// error: which to fence is not ours to guess.
    pub fn find(dir: &Path, rid: Rid, fsid: Option<u64>) -> Result<Option<(PathBuf, LocalRecord)>> {
        let paths = match fsid {
            Some(fsid) => {
                let p = dir.join(Self::file_name(fsid, rid));
                if p.symlink_metadata().is_ok() {
                    vec![p]
                } else {
                    vec![]
                }
            }
            None => record_files(dir)?
                .into_iter()
                .filter(|(_, n)| n.ends_with(&format!(".r.{:016x}", rid.0)))
                .map(|(p, _)| p)
                .collect(),
        };
        if paths.len() > 1 {
            return Err(Error::Fence(format!(
                "{} records for rid {rid} in {} (several filesystems); \
                 give the fsid (SCOUTFS_FENCE_FSID) to choose",
                paths.len(),
                dir.display()
            )));
        }
        let Some(p) = paths.into_iter().next() else {
            return Ok(None);
        };
        let rec = LocalRecord::read(&p)?;
        if rec.rid != rid || fsid.is_some_and(|f| f != rec.fsid) {
            return Err(Error::Fence(format!(
                "fence record {}: holds fsid {:016x} rid {}, not what its name says",
                p.display(),
                rec.fsid,
                rec.rid
            )));
        }
        Ok(Some((p, rec)))
    }

    /// Why the recorded process is certainly gone, or `None` if a process
    /// with its pid and start time runs (or has exited but is not reaped).
    pub fn gone_reason(&self) -> Result<Option<String>> {
        let boot = boot_id().map_err(|e| Error::io("reading the boot id", e))?;
        if boot != self.boot_id {
            return Ok(Some(format!(
                "the host restarted after pid {} mounted (boot id {}, now {boot})",
                self.pid, self.boot_id
            )));
        }
        let id = proc_identity(self.pid)
            .map_err(|e| Error::io(format!("reading /proc/{}/stat", self.pid), e))?;
        Ok(match id {
            None => Some(format!("pid {} is not running", self.pid)),
            Some(id) if id.start_time != self.start_time => Some(format!(
                "pid {} now names another process (started at tick {}, the mount's at {})",
                self.pid, id.start_time, self.start_time
            )),
            Some(_) => None,
        })
    }
}

/// The record files (name `f.*`) in `dir`; a missing directory has none.
fn record_files(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        if let Some(n) = e.file_name().to_str() {
            if n.starts_with("f.") && n.contains(".r.") {
                out.push((e.path(), n.to_string()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes the records in `dir` whose processes are certainly gone (killed
/// without unmounting, or from an earlier boot) and returns how many. A
/// mount calls this before it writes its own, so crashed mounts do not
/// leave records behind for long. Records it cannot read or trust are left
/// alone.
pub fn sweep_stale(dir: &Path) -> usize {
    let mut removed = 0;
    for (p, _) in record_files(dir).unwrap_or_default() {
        let gone = LocalRecord::read(&p).and_then(|r| r.gone_reason());
        if matches!(gone, Ok(Some(_))) && std::fs::remove_file(&p).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// What the local agent did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalFenceOutcome {
    /// No record: the mount unmounted cleanly or never mounted on this host.
    NoRecord,
    /// The recorded process was gone already; nothing was signalled.
    /// `detached`: its FUSE mount was still there, dead, and was detached.
    Gone {
        record: LocalRecord,
        why: String,
        detached: bool,
        /// Why the record could not be removed, if it could not (the
        /// fence stands; a later one finds the process gone again).
        left: Option<String>,
    },
    /// The process was killed and has exited; `detached` says whether its
    /// FUSE mount was still there and was detached.
    Killed {
        record: LocalRecord,
        detached: bool,
        left: Option<String>,
    },
}

/// Fences the mount `rid` (of `fsid`, when given) recorded in `dir`: see
/// the module comment for the steps. An `Err` means the mount may still
/// run.
pub fn fence_local(
    dir: &Path,
    rid: Rid,
    fsid: Option<u64>,
    kill_wait: Duration,
) -> Result<LocalFenceOutcome> {
    let Some((path, record)) = LocalRecord::find(dir, rid, fsid)? else {
        return Ok(LocalFenceOutcome::NoRecord);
    };
    let victim = match Victim::open(&record)? {
        Found::Gone(why) => {
            // Its helper may live on, holding the connection open with a
            // thread asleep in the kernel on a request of that mount: then
            // the mount is the recorded one; end the helper and abort it.
            let aborted = match record.helper_victim()? {
                Some(h) => {
                    h.kill()?;
                    abort_connection(&record)?
                }
                None => false,
            };
            let detached = detach_dead(&record.mountpoint)? || aborted;
            let left = LocalRecord::remove(dir, record.fsid, record.rid).err();
            let left = left.map(|e| e.to_string());
            return Ok(LocalFenceOutcome::Gone {
                record,
                why,
                detached,
                left,
            });
        }
        Found::Live(v) => v,
    };
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() } as u32;
    if record.pid == std::process::id() || record.pid == parent {
        return Err(Error::Fence(format!(
            "{}: pid {} is this agent or the process that ran it; a mount does not fence itself",
            path.display(),
            record.pid
        )));
    }
    victim.kill()?;
    if let Some(h) = record.helper_victim()? {
        h.kill()?;
    }
    let aborted = abort_connection(&record)?;
    victim.wait_exit(kill_wait, &record)?;
    let detached = detach(&record.mountpoint)? || aborted;
    let left = LocalRecord::remove(dir, record.fsid, record.rid).err();
    let left = left.map(|e| e.to_string());
    Ok(LocalFenceOutcome::Killed {
        record,
        detached,
        left,
    })
}

/// The recorded process, pinned by a pidfd where the kernel has them.
struct Victim {
    pid: u32,
    pidfd: Option<OwnedFd>,
}

enum Found {
    Live(Victim),
    Gone(String),
}

impl Victim {
    fn open(rec: &LocalRecord) -> Result<Found> {
        // The pidfd is opened before the start time is checked: if the
        // check passes, the pidfd names the recorded process for good.
        // SAFETY: a plain syscall with integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, rec.pid as libc::pid_t, 0) };
        let pidfd = if fd >= 0 {
            // SAFETY: the kernel just gave us this descriptor.
            Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
        } else {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ESRCH) => {
                    return Ok(Found::Gone(format!("pid {} is not running", rec.pid)))
                }
                Some(libc::ENOSYS) => None,
                _ => {
                    let e = io::Error::last_os_error();
                    return Err(Error::io(format!("pidfd_open of pid {}", rec.pid), e));
                }
            }
        };
        let Some(why) = rec.gone_reason()? else {
            return Ok(Found::Live(Victim {
                pid: rec.pid,
                pidfd,
            }));
        };
        // A live process that /proc does not show (mounted with hidepid,
        // or another pid namespace) is not gone: we cannot tell, so fail.
        let hidden = pidfd.as_ref().is_some_and(|fd| !readable(fd, 0))
            && proc_identity(rec.pid).ok().flatten().is_none();
        if hidden {
            return Err(Error::Fence(format!(
                "pid {} runs but /proc does not show it (hidepid, or another pid namespace): \
                 its start time cannot be checked",
                rec.pid
            )));
        }
        Ok(Found::Gone(why))
    }

    fn kill(&self) -> Result<()> {
        // SAFETY: signals sent by a pidfd we own, or by a pid whose start
        // time was checked just before.
        let r = unsafe {
            match &self.pidfd {
                Some(fd) => libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                ) as i32,
                None => libc::kill(self.pid as libc::pid_t, libc::SIGKILL),
            }
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // It exited on its own in between.
            Some(libc::ESRCH) => Ok(()),
            _ => Err(Error::io(format!("sending SIGKILL to pid {}", self.pid), e)),
        }
    }

    /// Waits until the process has exited (a zombie counts: its files,
    /// and so its FUSE connection, are closed).
    fn wait_exit(&self, limit: Duration, rec: &LocalRecord) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = left.as_millis().min(PROC_POLL_MS as u128) as i32;
            if self.exited(ms, rec)? {
                return Ok(());
            }
            if left.is_zero() {
                return Err(Error::Fence(format!(
                    "pid {} did not exit within {} ms of SIGKILL (stuck in the kernel?); \
                     its mount on {} is left as it is",
                    self.pid,
                    limit.as_millis(),
                    rec.mountpoint.display()
                )));
            }
        }
    }

    /// Whether the process has exited, waiting up to `ms` for it.
    fn exited(&self, ms: i32, rec: &LocalRecord) -> Result<bool> {
        if let Some(fd) = &self.pidfd {
            return Ok(readable(fd, ms));
        }
        std::thread::sleep(Duration::from_millis(ms as u64));
        let id = proc_identity(self.pid)
            .map_err(|e| Error::io(format!("reading /proc/{}/stat", self.pid), e))?;
        Ok(match id {
            None => true,
            Some(id) => id.start_time != rec.start_time || id.state == b'Z' || id.state == b'X',
        })
    }
}

/// Whether `fd` becomes readable within `ms`: a pidfd is, once its process
/// has exited.
fn readable(fd: &OwnedFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd we own.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r > 0 && p.revents & libc::POLLIN != 0
}

/// A mount as `/proc/self/mountinfo` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MountEntry {
    /// `major:minor` of its device.
    dev: String,
    fstype: String,
    source: String,
}

fn parse_dev(d: &str) -> Option<(u32, u32)> {
    let (ma, mi) = d.split_once(':')?;
    Some((ma.parse().ok()?, mi.parse().ok()?))
}

/// The device number (`major:minor`) of the scoutfs FUSE mount on `mp`,
/// from mountinfo (a stat of the mountpoint would ask that mount itself).
pub fn fuse_dev_at(mp: &Path) -> Result<Option<String>> {
    Ok(mount_at(mp)?.filter(|m| m.is_scoutfs()).map(|m| m.dev))
}

/// Aborts the FUSE connection of the killed mount of `rec`: every request
/// on it fails at once, so no thread of the process (nor any caller on
/// the mount) waits for an answer it can't get. Only the mount on the
/// mountpoint with the recorded device number is touched; `true` if it
/// was unmounted too (a forced unmount unmounts what nothing holds busy).
fn abort_connection(rec: &LocalRecord) -> Result<bool> {
    let Some(dev) = &rec.fuse_dev else {
        return Ok(false);
    };
    match mount_at(&rec.mountpoint)? {
        Some(m) if m.is_scoutfs() && &m.dev == dev => {}
        _ => return Ok(false),
    }
    let c = CString::new(rec.mountpoint.as_os_str().as_bytes())
        .map_err(|_| Error::Fence(format!("{}: a NUL in the path", rec.mountpoint.display())))?;
    // SAFETY: umount2 on a valid C string.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_FORCE | libc::UMOUNT_NOFOLLOW) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // Aborted, but still in use (the unmount itself is refused), or
        // gone in between: either way no request waits on it any more.
        Some(libc::EBUSY) | Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(false),
        _ => Err(Error::io(
            format!(
                "aborting the FUSE connection on {}",
                rec.mountpoint.display()
            ),
            e,
        )),
    }
}

impl MountEntry {
    fn is_scoutfs(&self) -> bool {
        self.fstype == "fuse.scoutfs"
            || (self.fstype.starts_with("fuse") && self.source.starts_with("scoutfs:"))
    }
}

/// The topmost mount on `mp`, if any.
fn mount_at(mp: &Path) -> Result<Option<MountEntry>> {
    let info = std::fs::read("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading /proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&info, mp.as_os_str().as_bytes()))
}

fn parse_mountinfo(info: &[u8], mp: &[u8]) -> Option<MountEntry> {
    let mut found = None;
    for line in info.split(|&c| c == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
        if fields.len() < 5 || unescape(fields[4]).as_deref() != Some(mp) {
            continue;
        }
        // Optional fields end at "-"; the type and source follow it.
        let Some(dash) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        let text = |i: usize| {
            fields
                .get(i)
                .and_then(|f| unescape(f))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        found = Some(MountEntry {
            dev: text(2),
            fstype: text(dash + 1),
            source: text(dash + 2),
        });
    }
    found
}

/// Detaches the scoutfs FUSE mount on `mp`; `false` if nothing is mounted
/// there. Anything but a scoutfs FUSE mount is left alone, with an error.
/// Detaches the scoutfs FUSE mount on `mp` only if its process is gone
/// (the kernel answers ENOTCONN): the mount of a process that died
/// without the agent. A live mount there (a new one) is left alone.
fn detach_dead(mp: &Path) -> Result<bool> {
    let dead = matches!(
        std::fs::metadata(mp),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN)
    );
    if !dead {
        return Ok(false);
    }
    detach(mp)
}

fn detach(mp: &Path) -> Result<bool> {
    let Some(m) = mount_at(mp)? else {
        return Ok(false);
    };
    if !m.is_scoutfs() {
        return Err(Error::Fence(format!(
            "{}: a {} mount of {} is there, not a scoutfs FUSE mount; not unmounting it",
            mp.display(),
            m.fstype,
            m.source
        )));
    }
    let c = CString::new(mp.as_os_str().as_bytes())
        .map_err(|_| Error::Fence(format!("{}: a NUL in the path", mp.display())))?;
    // SAFETY: umount2 on a valid C string.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // Unmounted by someone else in between.
        Some(libc::EINVAL) if mount_at(mp)?.is_none() => Ok(false),
        _ => Err(Error::io(
            format!("detaching the dead FUSE mount on {}", mp.display()),
            e,
        )),
    }
}

/// Escapes backslash, space and control bytes as `\ooo`.
fn escape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for &c in b {
        if c == b'\\' || c == b' ' || c < 0x20 || c == 0x7f {
            out.extend_from_slice(format!("\\{c:03o}").as_bytes());
        } else {
            out.push(c);
        }
    }
    out
}

/// Undoes `\ooo` escapes; `None` for a malformed one.
fn unescape(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let oct = b.get(i + 1..i + 4)?;
        if !oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
            return None;
        }
        let v = oct.iter().fold(0u32, |v, c| v * 8 + (c - b'0') as u32);
        out.push(u8::try_from(v).ok()?);
        i += 4;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
