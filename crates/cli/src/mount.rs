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
//! `scoutfs_core::cluster::fence::local`): its pid, start time and mountpoint in the
//! run directory. The record is removed once the mount has ended.
//!
//! A mount with `--quorum-slot` is a quorum member: it stands for election
//! and serves the filesystem while elected; one without is a client of the
//! elected server. The fence options (`--fence-command`, `--fence-arg`,
//! `--fence-timeout-ms`) are what its server fences other mounts with.
//!
//! `scoutfs up` makes a filesystem with three quorum slots on loopback (if
//! its folder has none) and runs three mounts of it, one per slot, as child
//! processes fenced with the local agent; Ctrl-C unmounts them together.

use crate::fuse::ScoutFuse;
use crate::kinval::{Epoch, KernelCaches};
use crate::size;
use fuser::{Config, MountOption, Session, SessionACL};
use scoutfs_core::cluster::fence::local::{run_dir, sweep_stale, LocalRecord, RUN_DIR_ENV};
use scoutfs_core::cluster::fence::FENCE_TIMEOUT_MS_DEFAULT;
use scoutfs_core::cluster::quorum::agent::{HEARTBEAT_TIMEOUT_MAX_MS, HEARTBEAT_TIMEOUT_MIN_MS};
use scoutfs_core::mount::control::{socket_path, ControlServer};
use scoutfs_core::mount::fs::AtimeMode;
use scoutfs_core::mount::{new_rid, Mount, MountOptions, MountRole};
use scoutfs_core::types::Rid;
use scoutfs_format::SuperBlock;
use std::os::fd::AsFd;
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
    /// This mount's quorum slot (one configured at mkfs with -Q): the mount
    /// stands for election and serves the filesystem while elected. Without
    /// it the mount is a client of the elected server.
    #[arg(long = "quorum-slot", value_parser = clap::value_parser!(u8).range(0..15))]
    quorum_slot: Option<u8>,
    /// How long a quorum member waits for the leader's heartbeat before it
    /// stands for election (a leader whose server is unreachable is given
    /// less).
    #[arg(
        long = "quorum-heartbeat-timeout-ms",
        default_value_t = scoutfs_core::cluster::quorum::agent::HEARTBEAT_TIMEOUT_DEFAULT_MS,
        value_parser = clap::value_parser!(u64).range(HEARTBEAT_TIMEOUT_MIN_MS..=HEARTBEAT_TIMEOUT_MAX_MS)
    )]
    heartbeat_timeout_ms: u64,
    /// How long this mount's server waits for the mounts of an earlier
    /// server to reconnect and recover before it fences them.
    #[arg(long = "recovery-timeout-ms", default_value_t = scoutfs_core::cluster::server::RECOVERY_TIMEOUT_MS_DEFAULT,
        value_parser = clap::value_parser!(u64).range(1..))]
    recovery_timeout_ms: u64,
    /// How long this mount's server lets a mount stay disconnected before
    /// it fences it.
    #[arg(long = "reconnect-timeout-ms", default_value_t = scoutfs_core::cluster::server::RECONNECT_TIMEOUT_MS_DEFAULT,
        value_parser = clap::value_parser!(u64).range(1..))]
    reconnect_timeout_ms: u64,
    /// Commit the open transaction at least this often.
    #[arg(long = "commit-interval-ms", default_value_t = 10_000)]
    commit_interval_ms: u64,
    /// How often, on average (±20%), to look for unlinked inodes that no
    /// mount has open any more, and free them.
    #[arg(long = "orphan-scan-ms", default_value_t = scoutfs_core::mount::setup::ORPHAN_SCAN_MS_DEFAULT,
        value_parser = clap::value_parser!(u64).range(100..=60_000))]
    orphan_scan_ms: u64,

    /// Don't enforce POSIX ACLs.
    #[arg(long)]
    noacl: bool,
    /// Refuse to open device nodes on this mount (by default they work,
    /// as on a local filesystem mounted by root).
    #[arg(long)]
    nodev: bool,
    /// Ignore setuid and setgid bits of programs run from this mount (by
    /// default they are honoured, as on a local filesystem).
    #[arg(long)]
    nosuid: bool,
    /// When reads update access times: relatime (when the atime is not
    /// after the last change, or is a day old), strictatime (every read
    /// that isn't served from the kernel's page cache) or noatime.
    #[arg(long, default_value = "relatime", value_parser = ["relatime", "strictatime", "noatime"])]
    atime: String,
    /// The program this mount's server runs to fence another mount (one
    /// that stopped answering, or an old server) before it reclaims what
    /// that mount held. It gets SCOUTFS_FENCE_RID, SCOUTFS_FENCE_ADDR,
    /// SCOUTFS_FENCE_PORT, SCOUTFS_FENCE_REASON and SCOUTFS_FENCE_FSID in its
    /// environment and exits 0 once that mount can no longer write. The
    /// default, when every quorum slot is a loopback address (so every
    /// mount is on this host), is the local agent, `scoutfs fence-local`;
    /// otherwise there is none and a server refuses to fence.
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
    /// Memory for cached metadata items (inodes, names, extents, xattrs),
    /// in MiB, counted as the heap they take; the least recently used go
    /// beyond it. A transaction's changed items (up to 64 MiB) come on top
    /// until they are committed.
    #[arg(long = "item-cache-mib", default_value_t = ITEM_CACHE_MIB_DEFAULT,
        value_parser = clap::value_parser!(u64).range(8..=1 << 20))]
    item_cache_mib: u64,
    /// The most of this mount's inodes the kernel may keep cached (with
    /// their names): past it, names are dropped from the kernel's cache,
    /// directory by directory, and it forgets what they named. The mount
    /// keeps about 100 bytes for each inode the kernel holds, the kernel
    /// about 1 KiB. 0: no limit (the kernel keeps what its memory allows).
    #[arg(long = "kernel-inodes-max", default_value_t = KERNEL_INODES_MAX_DEFAULT)]
    kernel_inodes_max: usize,
    /// Memory for cached 64 KiB metadata blocks, in MiB.
    #[arg(long = "block-cache-mib", default_value_t = BLOCK_CACHE_MIB_DEFAULT,
        value_parser = clap::value_parser!(u64).range(4..=1 << 20))]
    block_cache_mib: u64,
}

/// The item cache of a mount by default (MiB).
pub const ITEM_CACHE_MIB_DEFAULT: u64 = 256;
/// The inodes the kernel may hold of a mount by default.
pub const KERNEL_INODES_MAX_DEFAULT: usize = 1 << 18;
/// The block cache of a mount by default (MiB).
pub const BLOCK_CACHE_MIB_DEFAULT: u64 = 128;

#[derive(clap::Args)]
pub struct UpArgs {
    /// The folder holding the image files (made if missing).
    #[arg(long, default_value = "scoutfs-up")]
    dir: PathBuf,
    /// Where to mount: mount N goes on PREFIX-N (default: DIR/mnt-N).
    #[arg(long = "mountpoint-prefix")]
    mountpoint_prefix: Option<PathBuf>,
    /// How many mounts to run, each a quorum member (a new filesystem gets
    /// this many quorum slots on loopback).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=15))]
    mounts: u8,
    /// Size of a new metadata image (sparse).
    #[arg(long, default_value = "1G", value_parser = size::parse_size)]
    meta_size: u64,
    /// Size of a new data image (sparse).
    #[arg(long, default_value = "8G", value_parser = size::parse_size)]
    data_size: u64,
}

pub fn cmd_mount(a: MountArgs) -> Result<ExitCode, String> {
    let mut opts = MountOptions {
        role: match a.quorum_slot {
            Some(slot) => MountRole::Quorum { slot },
            None => MountRole::Client,
        },
        heartbeat_timeout_ms: a.heartbeat_timeout_ms,
        recovery_timeout_ms: a.recovery_timeout_ms,
        reconnect_timeout_ms: a.reconnect_timeout_ms,
        commit_interval_ms: a.commit_interval_ms,
        orphan_scan_ms: a.orphan_scan_ms,
        item_cache_bytes: (a.item_cache_mib << 20) as usize,
        block_cache_blocks: (a.block_cache_mib << 20) as usize
            / scoutfs_format::consts::BLOCK_LG_SIZE,
        ..Default::default()
    };
    opts.fs.acl = !a.noacl;
    opts.fs.atime = match a.atime.as_str() {
        "strictatime" => AtimeMode::Strict,
        "noatime" => AtimeMode::Off,
        _ => AtimeMode::Relatime,
    };
    if let Some(p) = &a.fence_command {
        check_program(p).map_err(|e| format!("--fence-command {p}: {e}"))?;
    }
    opts.fence_command = a
        .fence_command
        .map(|p| std::iter::once(p).chain(a.fence_args).collect());
    opts.fence_timeout_ms = a.fence_timeout_ms;
    let kernel = KernelFlags {
        dev: !a.nodev,
        suid: !a.nosuid,
        inodes_max: a.kernel_inodes_max,
    };
    serve(&a.meta, &a.data, &a.mountpoint, &opts, kernel)
}

/// Checks that `prog` names an executable file, as exec would find it (by
/// path when it has a slash, else in $PATH): a fence command that can't
/// run would be found out only when a fence is needed.
fn check_program(prog: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        let p = Path::new(prog);
        return match std::fs::metadata(p) {
            Err(e) => Err(e.to_string()),
            Ok(_) if runnable(p) => Ok(()),
            Ok(_) => Err("not an executable file".into()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| runnable(&d.join(prog))) {
        Ok(())
    } else {
        Err("no such program in $PATH".into())
    }
}

/// Flags of the kernel's mount, not of the filesystem.
#[derive(Clone, Copy)]
struct KernelFlags {
    dev: bool,
    suid: bool,
    /// The most inodes of the mount the kernel may cache.
    inodes_max: usize,
}

pub fn cmd_up(a: UpArgs) -> Result<ExitCode, String> {
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let (meta, data) = (a.dir.join("meta.img"), a.dir.join("data.img"));
    if !meta.exists() {
        let mut quorum = Vec::new();
        for slot in 0..a.mounts as usize {
            let port = free_port()?;
            let addr = format!("127.0.0.1:{port}")
                .parse()
                .map_err(|e| format!("{e}"))?;
            quorum.push((slot, addr));
        }
        let m = crate::MkfsArgs {
            meta: meta.clone(),
            data: data.clone(),
            quorum,
            max_meta: Some(a.meta_size),
            max_data: Some(a.data_size),
            zone_blocks: None,
            force: false,
        };
        crate::make(&m)?;
    }
    let dev = crate::open_dev(&meta, false)?;
    let sb =
        scoutfs_core::store::commit::read_super(dev.as_ref(), true).map_err(|e| e.to_string())?;
    let slots: Vec<u8> = (0..sb.qconf.slots.len() as u8)
        .filter(|&i| sb.qconf.slots[i as usize].to_socket().is_some())
        .take(a.mounts as usize)
        .collect();
    let exe = std::env::current_exe().map_err(|e| format!("finding the scoutfs binary: {e}"))?;
    let set = block_signals();
    let mut children = Vec::new();
    let mut mps = Vec::new();
    for (n, slot) in slots.iter().enumerate() {
        let mp = match &a.mountpoint_prefix {
            Some(p) => PathBuf::from(format!("{}-{}", p.display(), n + 1)),
            None => a.dir.join(format!("mnt-{}", n + 1)),
        };
        std::fs::create_dir_all(&mp).map_err(|e| format!("{}: {e}", mp.display()))?;
        let child = std::process::Command::new(&exe)
            .arg("mount")
            .arg("--meta")
            .arg(&meta)
            .arg(&data)
            .arg(&mp)
            .arg("--quorum-slot")
            .arg(slot.to_string())
            .arg("--fence-command")
            .arg(&exe)
            .arg("--fence-arg")
            .arg("fence-local")
            .spawn()
            .map_err(|e| format!("starting mount {}: {e}", n + 1))?;
        children.push(child);
        mps.push(mp);
    }
    eprintln!(
        "scoutfs up: {} mounts of one filesystem (the images are in {}):",
        mps.len(),
        a.dir.display()
    );
    for (n, mp) in mps.iter().enumerate() {
        eprintln!(
            "  mount {} (quorum slot {}): {}",
            n + 1,
            slots[n],
            mp.display()
        );
    }
    eprintln!(
        "A change made in one is seen in the others at once. \
         See the cluster with: scoutfs status --meta {}\n\
         Press Ctrl-C here to unmount them all; the filesystem stays in {}.",
        meta.display(),
        a.dir.display()
    );
    // Ctrl-C: every mount gets SIGTERM at once (the last quorum members
    // leave together), then each is waited for.
    let pids: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
    std::thread::spawn(move || {
        let sig = wait_signal(set);
        eprintln!("scoutfs up: signal {sig}: unmounting every mount");
        for pid in pids {
            // SAFETY: signalling our own child by its pid; it is not reaped
            // before the waits below, so the pid is still its.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    });
    let mut failed = 0;
    for (n, mut c) in children.into_iter().enumerate() {
        match c.wait() {
            Ok(st) if st.success() => {}
            Ok(st) => {
                eprintln!("scoutfs up: mount {} ended with {st}", n + 1);
                failed += 1;
            }
            Err(e) => {
                eprintln!("scoutfs up: waiting for mount {}: {e}", n + 1);
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A free TCP port on loopback for a new filesystem's quorum slot.
/// Chosen at random below Linux's ephemeral range (32768 and up), so the
/// kernel never hands it to an outgoing connection, and free for both TCP
/// and UDP now (a quorum slot uses both).
fn free_port() -> Result<u16, String> {
    for _ in 0..1000 {
        let port = 20_000 + (scoutfs_core::rng::os_random_u64() % 12_000) as u16;
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if udp.is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free loopback port found for a quorum slot".into())
}

/// The fence command of a mount given none: the local agent when every
/// quorum slot is a loopback address. Then every mount of the filesystem
/// runs on this host (no other host can reach a server there), so the
/// agent's records name every mount, and a mount with no record is truly
/// gone. Otherwise none: a site with several hosts must say how to fence.
fn local_fencing(sb: &SuperBlock) -> Result<Option<Vec<String>>, String> {
    let slots: Vec<_> = sb
        .qconf
        .slots
        .iter()
        .filter_map(|a| a.to_socket())
        .collect();
    if slots.is_empty() || !slots.iter().all(|a| a.ip().is_loopback()) {
        return Ok(None);
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding the scoutfs binary: {e}"))?;
    Ok(Some(vec![
        exe.to_string_lossy().into_owned(),
        "fence-local".into(),
    ]))
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

/// Blocks the signals that end a mount in this thread and every thread
/// started after, and returns the set.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a local, zero-initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
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
fn record_mount(fsid: u64, rid: u64, mp: &Path) -> Result<RecordGuard, String> {
    let dir = run_dir();
    sweep_stale(&dir);
    let written = LocalRecord::for_this_process(fsid, Rid(rid), mp).and_then(|r| r.write(&dir));
    if let Err(e) = written {
        return Err(format!(
            "mount: recording this mount for the fence agent: {e} \
             (the directory is set by {RUN_DIR_ENV})"
        ));
    }
    Ok(RecordGuard {
        dir,
        fsid,
        rid,
        mp: mp.to_path_buf(),
    })
}

/// Removes this mount's fence record on drop.
struct RecordGuard {
    dir: PathBuf,
    fsid: u64,
    rid: u64,
    mp: PathBuf,
}

impl RecordGuard {
    /// Adds the FUSE mount's device number and the pid of the helper that
    /// holds it open too to the record, once mounted: the agent kills the
    /// helper and aborts that connection when it fences this mount.
    fn add_fuse(&self, helper_pid: u32) -> Result<(), String> {
        use scoutfs_core::cluster::fence::local::{fuse_dev_at, proc_identity};
        let e = |e: scoutfs_core::error::Error| format!("mount: recording the FUSE device: {e}");
        let dev = fuse_dev_at(&self.mp).map_err(e)?;
        let mut r = LocalRecord::for_this_process(self.fsid, Rid(self.rid), &self.mp).map_err(e)?;
        r.fuse_dev = dev;
        if let Ok(Some(id)) = proc_identity(helper_pid) {
            r.helper = Some((helper_pid, id.start_time));
        }
        r.write(&self.dir).map_err(e)?;
        Ok(())
    }
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        if let Err(e) = LocalRecord::remove(&self.dir, self.fsid, Rid(self.rid)) {
            tracing::warn!("{e}");
        }
    }
}

/// Serves the mount's control socket, named by its FUSE mount's device
/// number in the run directory.
fn start_control(mp: &Path, mnt: &Mount) -> Result<ControlServer, String> {
    use scoutfs_core::cluster::fence::local::fuse_dev_at;
    let e = |e: String| format!("mount: the control socket: {e}");
    let dev = fuse_dev_at(mp)
        .map_err(|x| e(x.to_string()))?
        .ok_or_else(|| e(format!("{} is not a scoutfs FUSE mount", mp.display())))?;
    let (major, minor) = dev
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| e(format!("the device number {dev:?} of {}", mp.display())))?;
    let dev = libc::makedev(major, minor);
    let path = socket_path(&run_dir(), dev);
    ControlServer::start(&path, mnt.fs().clone(), mnt.rid(), Some(dev))
        .map_err(|x| e(x.to_string()))
}

fn serve(
    meta: &Path,
    data: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    kernel: KernelFlags,
) -> Result<ExitCode, String> {
    let set = block_signals();
    let mp = check_mountpoint(mountpoint)?;
    if crate::same_file(meta, data) {
        return Err(format!(
            "{} and {} are the same file; the metadata and data devices must differ",
            meta.display(),
            data.display()
        ));
    }
    let m = crate::open_dev(meta, true)?;
    let d = crate::open_dev(data, true)?;
    let sb = scoutfs_core::store::commit::read_super(m.as_ref(), true)
        .map_err(|e| format!("mount: {e}"))?;
    let fsid = sb.hdr.fsid.get();
    let mut opts = opts.clone();
    if opts.fence_command.is_none() {
        opts.fence_command = local_fencing(&sb)?;
    }
    let rid = new_rid();
    opts.rid = Some(rid);
    // Dropped after the mount (declared before it), on every path.
    let record = record_mount(fsid, rid, &mp)?;
    let info = crate::mountinfo::MountInfo {
        pid: std::process::id(),
        rid,
        fsid,
        meta: std::fs::canonicalize(meta).unwrap_or_else(|_| meta.to_path_buf()),
        mountpoint: mp.clone(),
        slot: match opts.role {
            MountRole::Quorum { slot } => Some(slot),
            _ => None,
        },
    };
    let _info = info.write(&run_dir())?;
    let mnt = Mount::open(m, d, &opts).map_err(|e| format!("mount: {e}"))?;
    let fuse = ScoutFuse::new(mnt.fs().clone(), kernel.inodes_max);
    let known = fuse.known();
    let notifier_slot = fuse.notifier_slot();
    let knotify_slot = fuse.knotify_slot();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("scoutfs:{}", data.display())),
        MountOption::Subtype("scoutfs".into()),
        MountOption::DefaultPermissions,
    ];
    if opts.fs.atime == AtimeMode::Off {
        config.mount_options.push(MountOption::NoAtime);
    }
    // FUSE mounts default to nodev and nosuid (right for a user's mount);
    // this one is root's, like a local filesystem's.
    config.mount_options.push(match kernel.dev {
        true => MountOption::Dev,
        false => MountOption::NoDev,
    });
    config.mount_options.push(match kernel.suid {
        true => MountOption::Suid,
        false => MountOption::NoSuid,
    });
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
    let epoch = match session.as_fd().try_clone_to_owned() {
        Ok(fd) => Arc::new(Epoch::new(fd)),
        Err(e) => {
            drop(session);
            let _ = mnt.unmount();
            return Err(format!("{}: the FUSE device: {e}", mp.display()));
        }
    };
    let knotify = match session
        .as_fd()
        .try_clone_to_owned()
        .and_then(crate::knotify::KernelNotify::start)
    {
        Ok(k) => Arc::new(k),
        Err(e) => {
            drop(session);
            let _ = mnt.unmount();
            return Err(format!("starting the kernel notification helper: {e}"));
        }
    };
    if let Err(e) = record.add_fuse(knotify.pid()) {
        // The agent can still kill this process; it then can't abort the
        // connection a thread of the helper may wait on.
        tracing::warn!("{e}");
    }
    let _ = knotify_slot.set(knotify.clone());
    let control = match start_control(&mp, &mnt) {
        Ok(c) => c,
        Err(e) => {
            drop(session);
            let _ = mnt.unmount();
            return Err(e);
        }
    };
    let attrs = session.notifier();
    let pages = knotify.clone();
    control.set_inode_changed(Box::new(move |ino, data| {
        let _ = attrs.inval_inode(fuser::INodeNo(ino), -1, 0);
        if data {
            // Pages may be locked by a read that waits for this mount (for
            // offline data): dropped through the helper, on a thread,
            // waited for (so that a read after the answer reaches the
            // mount) but not for long.
            let k = pages.clone();
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            std::thread::spawn(move || {
                k.inval_pages(ino, 0, 0);
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(std::time::Duration::from_secs(2));
        }
    }));
    let kernel_known = known.clone();
    let caches = KernelCaches {
        known,
        notifier,
        knotify,
        epoch,
        versions: mnt.fs().pages.clone(),
    };
    mnt.locks()
        .set_kernel_invalidate(Box::new(move |start, end| caches.drop_range(start, end)));
    let mut unmounter = session.unmount_callable();
    let dump = mnt.state_dumper();
    std::thread::spawn(move || loop {
        let sig = wait_signal(set);
        // SIGUSR1: print what the mount holds, for diagnosis.
        if sig == libc::SIGUSR1 {
            let (inodes, names) = {
                let k = kernel_known.lock().unwrap_or_else(|p| p.into_inner());
                (
                    k.inodes.len(),
                    k.names.values().map(|d| d.len()).sum::<usize>(),
                )
            };
            tracing::info!("kernel caches {inodes} inodes and up to {names} names of this mount");
            dump();
            continue;
        }
        tracing::info!("signal {sig}: unmounting");
        match unmounter.unmount() {
            Ok(()) => return,
            // Busy (a process has a file open in it): the next signal
            // tries again.
            Err(e) => tracing::error!("unmount: {e}; signal again to retry"),
        }
    });
    tracing::info!(
        "mounted {} on {} (mount id {rid:016x})",
        data.display(),
        mp.display()
    );
    let res = session.run();
    control.stop();
    let done = mnt.unmount();
    res.map_err(|e| format!("FUSE session: {e}"))?;
    done.map_err(|e| format!("unmount: {e}"))?;
    tracing::info!("unmounted {}", mp.display());
    Ok(ExitCode::SUCCESS)
}
