//! `scoutfs mount` and `scoutfs up`: serving a filesystem with FUSE in the
//! foreground.
//!
//! The process blocks SIGINT, SIGTERM and SIGHUP before it starts any
//! thread; one thread waits for them and unmounts, which ends the FUSE
//! session; then the mount commits and says farewell. `umount MOUNTPOINT`
//! ends the session the same way.
//!
//! Before the mount's id (rid) can reach any server, the process records
//! itself for the local fence agent (`scoutfs fence-local`, see
//! `scoutfs_core::fence::local`): its pid, start time and mountpoint in the
//! run directory. The record is removed once the mount has ended.
//!
//! The fence options (`--fence-command`, `--fence-arg`,
//! `--fence-timeout-ms`) are parsed into the mount's options for its server,
//! which fences other mounts with them once mounts elect servers.

use crate::fuse::ScoutFuse;
use crate::size;
use fuser::{Config, INodeNo, MountOption, Session, SessionACL};
use scoutfs_core::dev::BlockDev;
use scoutfs_core::fence::local::{run_dir, sweep_stale, LocalRecord, RUN_DIR_ENV};
use scoutfs_core::fence::FENCE_TIMEOUT_MS_DEFAULT;
use scoutfs_core::fs::AtimeMode;
use scoutfs_core::lock::Rid;
use scoutfs_core::mount::{new_rid, Mount, MountOptions};
use scoutfs_format::key::zone;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct MountArgs {
    /// The metadata device or image file.
    #[arg(long = "meta")]
    meta: PathBuf,
    /// The data device or image file.
    data: PathBuf,
    /// The directory to mount on.
    mountpoint: PathBuf,
    /// This mount's quorum slot. Accepted for the cluster to come; today
    /// every mount serves its filesystem itself and must be the only one.
    #[arg(long = "quorum-slot")]
    quorum_slot: Option<usize>,
    /// Commit the open transaction at least this often.
    #[arg(long = "commit-interval-ms", default_value_t = 10_000)]
    commit_interval_ms: u64,
    /// Don't enforce POSIX ACLs.
    #[arg(long)]
    noacl: bool,
    /// When reads update access times: relatime (when the atime is not
    /// after the last change, or is a day old), strictatime (every read
    /// that isn't served from the kernel's page cache) or noatime.
    #[arg(long, default_value = "relatime", value_parser = ["relatime", "strictatime", "noatime"])]
    atime: String,
    /// The program this mount's server runs to fence another mount (one
    /// that stopped answering, or an old server) before it reclaims what
    /// that mount held. It gets SCOUTFS_FENCE_RID, SCOUTFS_FENCE_ADDR,
    /// SCOUTFS_FENCE_PORT, SCOUTFS_FENCE_REASON and SCOUTFS_FENCE_FSID in its
    /// environment and exits 0 once that mount can no longer write. Without
    /// it a server refuses to fence. For mounts on this host:
    /// `--fence-command scoutfs --fence-arg fence-local`.
    #[arg(long = "fence-command", value_name = "PROGRAM")]
    fence_command: Option<String>,
    /// An argument of the fence command; repeat for more.
    #[arg(
        long = "fence-arg",
        value_name = "ARG",
        requires = "fence_command",
        allow_hyphen_values = true
    )]
    fence_args: Vec<String>,
    /// How long the fence command may run before it is killed and the
    /// fence counts as failed.
    #[arg(
        long = "fence-timeout-ms",
        default_value_t = FENCE_TIMEOUT_MS_DEFAULT,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    fence_timeout_ms: u64,
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// The folder holding the image files (made if missing).
    #[arg(long, default_value = "scoutfs-up")]
    dir: PathBuf,
    /// Where to mount (default: DIR/mnt).
    #[arg(long)]
    mountpoint: Option<PathBuf>,
    /// Size of a new metadata image (sparse).
    #[arg(long, default_value = "1G", value_parser = size::parse_size)]
    meta_size: u64,
    /// Size of a new data image (sparse).
    #[arg(long, default_value = "8G", value_parser = size::parse_size)]
    data_size: u64,
}

pub fn cmd_mount(a: MountArgs) -> Result<ExitCode, String> {
    let opts = MountOptions {
        commit_interval_ms: a.commit_interval_ms,
        ..Default::default()
    };
    let mut opts = opts;
    opts.fs.acl = !a.noacl;
    opts.fs.atime = match a.atime.as_str() {
        "strictatime" => AtimeMode::Strict,
        "noatime" => AtimeMode::Off,
        _ => AtimeMode::Relatime,
    };
    opts.fence_command = a
        .fence_command
        .map(|p| std::iter::once(p).chain(a.fence_args).collect());
    opts.fence_timeout_ms = a.fence_timeout_ms;
    serve(&a.meta, &a.data, &a.mountpoint, &opts, None)
}

pub fn cmd_up(a: UpArgs) -> Result<ExitCode, String> {
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let (meta, data) = (a.dir.join("meta.img"), a.dir.join("data.img"));
    if !meta.exists() {
        let port = free_port()?;
        let m = crate::MkfsArgs {
            meta: meta.clone(),
            data: data.clone(),
            quorum: vec![(
                0,
                format!("127.0.0.1:{port}")
                    .parse()
                    .map_err(|e| format!("{e}"))?,
            )],
            max_meta: Some(a.meta_size),
            max_data: Some(a.data_size),
            zone_blocks: None,
            force: false,
        };
        crate::make(&m)?;
    }
    let mnt = a.mountpoint.clone().unwrap_or_else(|| a.dir.join("mnt"));
    std::fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
    let hint = format!(
        "Use it like any directory, e.g.\n  cp -r /etc {0}/ && ls {0}/etc\n\
         Archive tools: scoutfs walk-inodes, search-xattrs, release and stage (coming).\n\
         Press Ctrl-C here to unmount; the filesystem stays in {1}.",
        mnt.display(),
        a.dir.display()
    );
    serve(&meta, &data, &mnt, &MountOptions::default(), Some(hint))
}

/// A free TCP port on loopback for a new filesystem's quorum slot.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Refuses a mountpoint that isn't a directory or is already mounted on.
fn check_mountpoint(p: &Path) -> Result<PathBuf, String> {
    let md = std::fs::metadata(p).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTCONN) => format!(
            "{}: a mount there has lost its server; unmount it first (umount {0})",
            p.display()
        ),
        _ => format!("{}: {e}", p.display()),
    })?;
    if !md.is_dir() {
        return Err(format!(
            "{}: the mountpoint is not a directory",
            p.display()
        ));
    }
    let abs = std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if let Some(parent) = abs.parent() {
        let pm = std::fs::metadata(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        if pm.dev() != md.dev() {
            return Err(format!(
                "{}: the mountpoint is busy (something is mounted there)",
                p.display()
            ));
        }
    }
    Ok(abs)
}

/// An exclusive advisory lock on the metadata device, held while mounted.
fn exclusive(meta: &Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(meta).map_err(|e| format!("{}: {e}", meta.display()))?;
    // SAFETY: flock on a file descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(format!(
            "{}: the filesystem is already mounted by another scoutfs process on this host",
            meta.display()
        ));
    }
    Ok(f)
}

/// Blocks the signals that end a mount in this thread and every thread
/// started after, and returns the set.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a local, zero-initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: sigwait on a valid set, writing into a local.
    unsafe {
        libc::sigwait(&set, &mut sig);
    }
    sig
}

/// Records this process for the local fence agent; the record goes when
/// the returned guard drops, once the mount has ended.
///
/// Called before the rid reaches any server: the agent takes "no record"
/// to mean "fenced already", which is true only if a process that may still
/// use the rid always has one.
fn record_mount(meta: &Arc<dyn BlockDev>, rid: u64, mp: &Path) -> Result<RecordGuard, String> {
    let sb =
        scoutfs_core::commit::read_super(meta.as_ref(), true).map_err(|e| format!("mount: {e}"))?;
    let fsid = sb.hdr.fsid.get();
    let dir = run_dir();
    sweep_stale(&dir);
    let written = LocalRecord::for_this_process(fsid, Rid(rid), mp).and_then(|r| r.write(&dir));
    if let Err(e) = written {
        return Err(format!(
            "mount: recording this mount for the fence agent: {e} \
             (the directory is set by {RUN_DIR_ENV})"
        ));
    }
    Ok(RecordGuard { dir, fsid, rid })
}

/// Removes this mount's fence record on drop.
struct RecordGuard {
    dir: PathBuf,
    fsid: u64,
    rid: u64,
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        if let Err(e) = LocalRecord::remove(&self.dir, self.fsid, Rid(self.rid)) {
            eprintln!("scoutfs: {e}");
        }
    }
}

fn serve(
    meta: &Path,
    data: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    hint: Option<String>,
) -> Result<ExitCode, String> {
    let set = block_signals();
    let mp = check_mountpoint(mountpoint)?;
    // Until quorum election exists, one mount per filesystem on this host:
    // the server runs inside the mount, and two servers would corrupt it.
    let _excl = exclusive(meta)?;
    let m = crate::open_dev(meta, true)?;
    let d = crate::open_dev(data, true)?;
    let mut opts = opts.clone();
    let rid = new_rid();
    opts.rid = Some(rid);
    // Dropped after the mount (declared before it), on every path.
    let _record = record_mount(&m, rid, &mp)?;
    let mnt = Mount::open(m, d, &opts).map_err(|e| format!("mount: {e}"))?;
    let fuse = ScoutFuse::new(mnt.fs().clone());
    let known = fuse.known();
    let notifier_slot = fuse.notifier_slot();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("scoutfs:{}", data.display())),
        MountOption::Subtype("scoutfs".into()),
        MountOption::DefaultPermissions,
    ];
    if opts.fs.atime == AtimeMode::Off {
        config.mount_options.push(MountOption::NoAtime);
    }
    config.acl = SessionACL::All;
    config.n_threads = Some(4);
    config.clone_fd = true;
    let mut session = match Session::new(fuse, &mp, &config) {
        Ok(s) => s,
        Err(e) => {
            let _ = mnt.unmount();
            return Err(format!("{}: mounting with FUSE: {e}", mp.display()));
        }
    };
    let notifier = session.notifier();
    let _ = notifier_slot.set(session.notifier());
    mnt.locks()
        .set_kernel_invalidate(Box::new(move |start, end| {
            if start.zone != zone::FS {
                return;
            }
            let in_range = |i: &u64| *i >= start.first && *i <= end.first;
            let (inos, names): (Vec<u64>, Vec<(u64, Vec<u8>)>) = {
                let mut k = known.lock().unwrap_or_else(|p| p.into_inner());
                let inos = k.inodes.keys().copied().filter(in_range).collect();
                let dirs: Vec<u64> = k.names.keys().copied().filter(in_range).collect();
                let mut names = Vec::new();
                for d in dirs {
                    for n in k.names.remove(&d).unwrap_or_default() {
                        names.push((d, n));
                    }
                }
                (inos, names)
            };
            for (d, n) in names {
                let _ = notifier.inval_entry(INodeNo(d), std::ffi::OsStr::from_bytes(&n));
            }
            for ino in inos {
                let _ = notifier.inval_inode(INodeNo(ino), 0, 0);
            }
        }));
    let mut unmounter = session.unmount_callable();
    std::thread::spawn(move || {
        let sig = wait_signal(set);
        eprintln!("scoutfs: signal {sig}: unmounting");
        if let Err(e) = unmounter.unmount() {
            eprintln!("scoutfs: unmount: {e}");
        }
    });
    eprintln!(
        "scoutfs: mounted {} on {} (mount id {rid:016x})",
        data.display(),
        mp.display()
    );
    if let Some(h) = hint {
        eprintln!("{h}");
    }
    let res = session.run();
    let done = mnt.unmount();
    res.map_err(|e| format!("FUSE session: {e}"))?;
    done.map_err(|e| format!("unmount: {e}"))?;
    eprintln!("scoutfs: unmounted {}", mp.display());
    Ok(ExitCode::SUCCESS)
}
