//! The `scoutfs` command: making, printing and checking filesystems,
//! showing their cluster status, mounting them (and, as the project grows,
//! the archive commands).
//!
//! Every subcommand reports failures as one clear line on standard error
//! and a non-zero exit status; none panics on bad input. Long work shows a
//! progress bar when the output is a terminal.

mod agent;
mod control;
mod fence;
mod fuse;
mod kinval;
mod knotify;
mod log;
mod mount;
mod mountinfo;
mod progress;
mod size;

use clap::{Parser, Subcommand};
use scoutfs_core::store::dev::{BlockDev, FileDev};
use scoutfs_core::tools::check;
use scoutfs_core::tools::mkfs::{mkfs, MkfsOptions};
use scoutfs_format::consts::{FORMAT_VERSION, FORMAT_VERSION_MAX, FORMAT_VERSION_MIN};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "scoutfs",
    version,
    about = "A clustered archival filesystem",
    after_help = format!("Supported format versions: {FORMAT_VERSION_MIN}..={FORMAT_VERSION_MAX}")
)]
struct Cli {
    /// What to log, in `tracing`'s filter syntax: a level (error, warn,
    /// info, debug, trace) or targets with levels, e.g.
    /// `info,scoutfs_core::cluster::lock=debug` (default: $SCOUTFS_LOG,
    /// else info).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a new filesystem on a metadata and a data device.
    Mkfs(MkfsArgs),
    /// Print the super block, quorum blocks and every tree of a metadata device.
    Print {
        /// The metadata device or image file.
        meta: PathBuf,
    },
    /// Mount a filesystem with FUSE and serve it in the foreground until
    /// unmounted (umount MOUNTPOINT, Ctrl-C or SIGTERM).
    Mount(mount::MountArgs),
    /// Make (if needed) and mount a local filesystem on image files in one
    /// command, in the foreground until Ctrl-C.
    Up(mount::UpArgs),
    /// Check a filesystem offline: every reachable block, every reference,
    /// and that every block is used exactly once or free exactly once.
    Check {
        /// The metadata device or image file.
        meta: PathBuf,
        /// The data device or image file.
        data: PathBuf,
    },
    /// Show the quorum slots, the server, old leaders to fence, mounted
    /// clients and log trees, read offline from the metadata device.
    ///
    /// A slot's state comes from its quorum block: "never used" (never
    /// written); "leader" (its ELECT term is greater than its STOP term: the
    /// server may be running, and is up once a FENCE of that term follows);
    /// "fenced" (such a leader of a term below another server's FENCE);
    /// "unmounted cleanly" (END after its last BEGIN); "stopped" (STOP after
    /// its last BEGIN, no END: mounted as a follower, or crashed); "member"
    /// (started, neither: mounted as a follower, or crashed). Exits non-zero
    /// when any quorum block or tree could not be read.
    Status(StatusArgs),
    /// Show metadata and data space: total, used, reserved and free blocks
    /// of each device (64 KiB metadata blocks, 4 KiB data blocks).
    ///
    /// Free is what operations that allocate can still have. The metadata
    /// reserve is kept for operations that free space (unlink, truncate,
    /// the deletion of inodes), so that a full filesystem can always be
    /// emptied; it grows with the number of mounts.
    Df(DfArgs),
    /// The filesystem's ids and totals, from a running mount (fsid, this
    /// mount's rid, metadata and data blocks, inodes).
    Statfs(control::StatfsArgs),
    /// Grow the metadata or data device of a mounted filesystem, after the
    /// device itself has grown (an image file extended with `truncate -s`,
    /// a volume grown): the new space is free on every mount at once.
    /// Devices only grow; a smaller size is refused. Needs root.
    ResizeDevices(control::ResizeArgs),
    /// A file's archive attributes: meta_seq, data_seq, data_version,
    /// online and offline blocks, crtime.
    Stat(control::StatArgs),
    /// Every extended attribute of a file: the seqs, data_version, block
    /// counts, ctime, crtime, size, retention and project id.
    GetAttrX(control::GetAttrXArgs),
    /// Change extended attributes of a file: restore a new empty file
    /// (data version, size, offline), set times, retention or project id.
    SetAttrX(control::SetAttrXArgs),
    /// Restore the attributes of a new, empty file from an archive: its
    /// data version, size (all of it offline with -o), ctime and crtime.
    Setattr(control::SetattrArgs),
    /// List inodes by the seq of their last change (meta_seq) or of their
    /// last change of contents (data_seq), from FIRST to LAST, without
    /// walking the namespace. Stops at the last seq whose changes are
    /// complete on every mount, so a walk resumed from where the last one
    /// stopped misses nothing.
    WalkInodes(control::WalkArgs),
    /// Free the blocks of an archived file (or a range of it), leaving
    /// them offline: reads wait until they are staged. Refused if the
    /// file's data_version is not the archived one. Times and
    /// data_version stay.
    Release(control::ReleaseArgs),
    /// Write archived bytes back into a file's offline blocks (the mount
    /// reads the archive file itself), waking the operations that wait for
    /// them. Times, data_version and data_seq stay.
    Stage(control::StageArgs),
    /// Turn offline blocks into holes (restoring a sparse file).
    PunchOffline(control::PunchOfflineArgs),
    /// Move blocks from one file to another without copying them
    /// (--stage: into the destination's offline range).
    MoveBlocks(control::MoveBlocksArgs),
    /// List the operations waiting for offline data, on every mount of the
    /// filesystem (--local: this mount's): inode, block, and whether they
    /// read, write or change the size.
    DataWaiting(control::DataWaitingArgs),
    /// Make operations waiting for offline data fail with an error (the
    /// archive cannot bring the data back), on every mount (--local: this
    /// mount's). Needs root.
    DataWaitErr(control::DataWaitErrArgs),
    /// The paths of an inode, from the filesystem's root, one a line (one
    /// for each of its names). Needs root (CAP_DAC_READ_SEARCH).
    InoPath(control::InoEntriesArgs),
    /// An archive agent: copies files whose data changed (found through the
    /// data_seq index, never by walking the namespace) to an archive
    /// directory, releases archived files when the data device passes a
    /// high-water mark, and stages files back when they are read. It can
    /// be killed at any moment and started again.
    ArchiveAgent(agent::AgentArgs),
    /// The directory entries that link to an inode: directory, readdir
    /// position, type and name. Needs root (CAP_DAC_READ_SEARCH).
    GetReferringEntries(control::InoEntriesArgs),
    /// The inode numbers in use in an inode's group of 1,024. Needs root.
    GetAllocatedInos(control::AllocatedInosArgs),
    /// The local fence agent: fence a mount on this host by killing its
    /// process and detaching its FUSE mount.
    ///
    /// Servers run it as their fence command (`scoutfs mount
    /// --fence-command scoutfs --fence-arg fence-local`), which names the
    /// mount in SCOUTFS_FENCE_RID (and SCOUTFS_FENCE_FSID). It finds the
    /// record that mount's process wrote in the run directory, checks that
    /// the pid still names that process (by its start time; a recycled pid
    /// is never signalled), sends it SIGKILL, waits for it to exit, detaches
    /// its mount and removes the record. Exits 0 when the mount is fenced or
    /// already gone (no record, or its process ended); non-zero when it may
    /// still run.
    FenceLocal(fence::FenceLocalArgs),
    /// A mount's helper for kernel notifications (started by the mount).
    #[command(hide = true)]
    KernelNotify,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["meta", "path"])))]
struct StatusArgs {
    /// Read the status offline from this metadata device or image file.
    #[arg(long, value_name = "META")]
    meta: Option<PathBuf>,
    /// A mountpoint of a running `scoutfs mount` on this host: the status
    /// of its filesystem, and this mount's own role.
    path: Option<PathBuf>,
    /// Print one line of JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
#[command(disable_help_flag = true)]
struct DfArgs {
    /// A path in a running `scoutfs mount` on this host [default:
    /// $SCOUTFS_MOUNT_PATH, else the working directory].
    #[arg(short = 'p', long = "path", conflicts_with = "meta")]
    path: Option<PathBuf>,
    /// Read the metadata device or image file offline instead.
    #[arg(long, value_name = "META")]
    meta: Option<PathBuf>,
    /// Sizes in bytes with units (KiB, MiB, ...) instead of block counts.
    #[arg(short = 'h', long = "human-readable")]
    human: bool,
    /// Print one line of JSON instead of the table.
    #[arg(long, conflicts_with = "human")]
    json: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

#[derive(clap::Args)]
pub(crate) struct MkfsArgs {
    /// The metadata device or image file.
    pub(crate) meta: PathBuf,
    /// The data device or image file.
    pub(crate) data: PathBuf,
    /// A quorum slot as NR,ADDR,PORT (NR 0..14); repeat for each member.
    #[arg(short = 'Q', long = "quorum-slot", value_parser = parse_slot, required = true)]
    pub(crate) quorum: Vec<(usize, SocketAddr)>,
    /// Use at most SIZE of the metadata device (K, M, G, T suffixes); an image
    /// file that does not exist is created with this size.
    #[arg(short = 'm', long = "max-meta-size", value_parser = size::parse_size)]
    pub(crate) max_meta: Option<u64>,
    /// Use at most SIZE of the data device; an image file that does not exist
    /// is created with this size.
    #[arg(short = 'd', long = "max-data-size", value_parser = size::parse_size)]
    pub(crate) max_data: Option<u64>,
    /// Data allocation zone size in 4 KiB blocks (a volume option).
    #[arg(short = 'z', long = "data-alloc-zone-blocks")]
    pub(crate) zone_blocks: Option<u64>,
    /// Overwrite devices that already hold a filesystem.
    #[arg(short = 'f', long)]
    pub(crate) force: bool,
}

fn parse_slot(s: &str) -> Result<(usize, SocketAddr), String> {
    let mut parts = s.splitn(3, ',');
    let (Some(nr), Some(addr), Some(port)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("'{s}' is not NR,ADDR,PORT"));
    };
    let nr: usize = nr
        .trim()
        .parse()
        .map_err(|_| format!("slot number '{nr}' is not a number"))?;
    let ip: std::net::IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("'{addr}' is not an IP address"))?;
    let port: u16 = port
        .trim()
        .parse()
        .map_err(|_| format!("port '{port}' is not a number from 1 to 65535"))?;
    Ok((nr, SocketAddr::new(ip, port)))
}

/// A mount's heap in one arena. glibc gives each thread that allocates
/// under contention an arena of its own (up to eight per core), and a
/// mount's threads take turns with its caches' items: a chunk freed into
/// one arena is of no use to another, and the memory the process keeps
/// grows with the arenas. With one, a million files created through a
/// mount took 727 MiB resident instead of 811 MiB, at the same rate (its
/// allocations are mostly made under the item cache's own lock anyway).
/// Called before any thread starts.
fn one_heap_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator; no thread
    // other than this one runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = log::init(cli.log_level.as_deref()) {
        eprintln!("scoutfs: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(l) = &cli.log_level {
        // The processes this one starts (the mounts of `up`, the kernel
        // notification helper, fence agents) log the same way. Set before
        // any thread starts.
        std::env::set_var("SCOUTFS_LOG", l);
    }
    if matches!(cli.cmd, Cmd::Mount(_) | Cmd::Up(_)) {
        one_heap_arena();
    }
    let res = match cli.cmd {
        Cmd::Mkfs(a) => cmd_mkfs(a),
        Cmd::Print { meta } => cmd_print(&meta),
        Cmd::Mount(a) => mount::cmd_mount(a),
        Cmd::Up(a) => mount::cmd_up(a),
        Cmd::Check { meta, data } => cmd_check(&meta, &data),
        Cmd::Status(a) => cmd_status(a),
        Cmd::Df(a) => cmd_df(a),
        Cmd::Statfs(a) => control::cmd_statfs(a),
        Cmd::ResizeDevices(a) => control::cmd_resize_devices(a),
        Cmd::Stat(a) => control::cmd_stat(a),
        Cmd::GetAttrX(a) => control::cmd_get_attr_x(a),
        Cmd::SetAttrX(a) => control::cmd_set_attr_x(a),
        Cmd::Setattr(a) => control::cmd_setattr(a),
        Cmd::WalkInodes(a) => control::cmd_walk_inodes(a),
        Cmd::Release(a) => control::cmd_release(a),
        Cmd::Stage(a) => control::cmd_stage(a),
        Cmd::PunchOffline(a) => control::cmd_punch_offline(a),
        Cmd::MoveBlocks(a) => control::cmd_move_blocks(a),
        Cmd::DataWaiting(a) => control::cmd_data_waiting(a),
        Cmd::DataWaitErr(a) => control::cmd_data_wait_err(a),
        Cmd::InoPath(a) => control::cmd_ino_path(a),
        Cmd::ArchiveAgent(a) => agent::cmd_archive_agent(a),
        Cmd::GetReferringEntries(a) => control::cmd_get_referring_entries(a),
        Cmd::GetAllocatedInos(a) => control::cmd_get_allocated_inos(a),
        Cmd::FenceLocal(a) => fence::cmd_fence_local(a),
        Cmd::KernelNotify => return knotify::helper_main(),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scoutfs: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn open_dev(path: &Path, writable: bool) -> Result<Arc<dyn BlockDev>, String> {
    // FileDev's errors name the path already.
    FileDev::open(path, writable)
        .map(|d| Arc::new(d) as Arc<dyn BlockDev>)
        .map_err(|e| e.to_string())
}

/// Opens a device for mkfs, creating an image file of `size` if it is missing.
fn open_or_create(path: &Path, size: Option<u64>, what: &str) -> Result<Arc<dyn BlockDev>, String> {
    if path.exists() {
        return open_dev(path, true);
    }
    let Some(size) = size else {
        return Err(format!(
            "{}: does not exist; give the {what} size to create an image file of that size",
            path.display()
        ));
    };
    let dev = FileDev::create(path, size)
        .map_err(|e| format!("{}: creating image file: {e}", path.display()))?;
    println!(
        "Created image file {} of {}",
        path.display(),
        size::human(size)
    );
    Ok(Arc::new(dev))
}

/// Whether two paths name one file or device (the same path, a link to
/// it, or another node of the same block device).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) if x.file_type().is_block_device() && y.file_type().is_block_device() => {
            x.rdev() == y.rdev()
        }
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        // Not made yet: the same path once made.
        _ => {
            let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            abs(a) == abs(b)
        }
    }
}

fn cmd_mkfs(a: MkfsArgs) -> Result<ExitCode, String> {
    use scoutfs_core::tools::mkfs::{MIN_DATA_BYTES, MIN_META_BYTES};
    for (size, min, what) in [
        (a.max_meta, MIN_META_BYTES, "metadata"),
        (a.max_data, MIN_DATA_BYTES, "data"),
    ] {
        if size.is_some_and(|s| s < min) {
            return Err(format!(
                "mkfs: the {what} device needs at least {}",
                size::human(min)
            ));
        }
        // The largest file Linux can make (its sizes are signed).
        if size.is_some_and(|s| s > i64::MAX as u64) {
            return Err(format!(
                "mkfs: the {what} device can be at most {} ({} bytes)",
                size::human(i64::MAX as u64),
                i64::MAX
            ));
        }
    }
    if same_file(&a.meta, &a.data) {
        return Err(format!(
            "mkfs: {} and {} are the same file; the metadata and data devices must differ",
            a.meta.display(),
            a.data.display()
        ));
    }
    let created: Vec<&Path> = [&a.meta, &a.data]
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.as_path())
        .collect();
    let res = make(&a);
    if res.is_err() {
        // Image files this run created are removed again; nothing else is touched.
        for p in created {
            let _ = std::fs::remove_file(p);
        }
    }
    res
}

pub(crate) fn make(a: &MkfsArgs) -> Result<ExitCode, String> {
    let meta = open_or_create(&a.meta, a.max_meta, "--max-meta-size")?;
    let data = open_or_create(&a.data, a.max_data, "--max-data-size")?;
    let opts = MkfsOptions {
        quorum: a.quorum.clone(),
        max_meta_bytes: a.max_meta,
        max_data_bytes: a.max_data,
        force: a.force,
        data_alloc_zone_blocks: a.zone_blocks,
        ..Default::default()
    };
    let mut bar = progress::Bar::for_stdout();
    bar.spin("making filesystem");
    let r = mkfs(meta, data, &opts).map_err(|e| format!("mkfs: {e}"))?;
    bar.done();
    println!("Created scoutfs filesystem:");
    println!("  meta device path:     {}", a.meta.display());
    println!("  data device path:     {}", a.data.display());
    println!("  fsid:                 {:016x}", r.fsid);
    println!("  format version:       {FORMAT_VERSION}");
    println!(
        "  64KB metadata blocks: {} ({})",
        r.total_meta_blocks,
        size::human(r.total_meta_blocks << 16)
    );
    println!(
        "  4KB data blocks:      {} ({})",
        r.total_data_blocks,
        size::human(r.total_data_blocks << 12)
    );
    let slots: Vec<String> = a
        .quorum
        .iter()
        .map(|(n, addr)| format!("{n}: {addr}"))
        .collect();
    println!("  quorum slots:         {}", slots.join(", "));
    Ok(ExitCode::SUCCESS)
}

fn cmd_print(meta: &Path) -> Result<ExitCode, String> {
    let dev = open_dev(meta, false)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut bar = progress::Bar::for_redirected_stdout();
    let res = scoutfs_core::tools::print::print(&dev, &mut out, &mut bar);
    bar.done();
    let res = res.and_then(|_| {
        out.flush()
            .map_err(|e| scoutfs_core::Error::io("writing output", e))
    });
    match res {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A reader that stopped early (print | head) is not an error.
        Err(scoutfs_core::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(format!("print: {e}")),
    }
}

fn cmd_check(meta: &Path, data: &Path) -> Result<ExitCode, String> {
    let m = open_dev(meta, false)?;
    let d = open_dev(data, false)?;
    let mut bar = progress::Bar::for_stdout();
    let report = check::check(&m, &d, &mut bar).map_err(|e| format!("check: {e}"))?;
    bar.done();
    for p in &report.problems {
        println!("problem: {p}");
    }
    println!(
        "metadata: {} blocks, {} referenced, {} free; {} btree blocks in {} trees, {} items",
        report.meta_blocks,
        report.meta_referenced,
        report.meta_free,
        report.btree_blocks,
        report.trees,
        report.items
    );
    println!(
        "data: {} blocks, {} referenced, {} free",
        report.data_blocks, report.data_referenced, report.data_free
    );
    if report.is_clean() {
        println!("check: clean");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("check: {} problems found", report.problems.len());
        Ok(ExitCode::FAILURE)
    }
}

fn cmd_df(a: DfArgs) -> Result<ExitCode, String> {
    let meta = match a.meta {
        Some(meta) => meta,
        None => {
            let path = control::mount_path(a.path, "df")?;
            let full =
                std::fs::canonicalize(&path).map_err(|e| format!("df {}: {e}", path.display()))?;
            let dir = scoutfs_core::cluster::fence::local::run_dir();
            mountinfo::MountInfo::containing(&dir, &full)
                .map_err(|e| format!("df {e}"))?
                .meta
        }
    };
    let dev = open_dev(&meta, false)?;
    let df = scoutfs_core::tools::df::read_df(&dev).map_err(|e| format!("df: {e}"))?;
    let text = if a.json {
        df.to_json() + "\n"
    } else if a.human {
        df.table(Some(&size::human))
    } else {
        df.table(None)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A reader that stopped early (df | head) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(format!("df: writing output: {e}")),
    }
}

fn cmd_status(a: StatusArgs) -> Result<ExitCode, String> {
    let mut this = None;
    let meta = match (a.meta, a.path) {
        (Some(meta), _) => meta,
        (None, path) => {
            let path = path.unwrap_or_default();
            let mp = std::fs::canonicalize(&path)
                .map_err(|e| format!("status {}: {e}", path.display()))?;
            let dir = scoutfs_core::cluster::fence::local::run_dir();
            let info = mountinfo::MountInfo::find(&dir, &mp).map_err(|e| format!("status {e}"))?;
            let meta = info.meta.clone();
            this = Some(info);
            meta
        }
    };
    let dev = open_dev(&meta, false)?;
    let st = scoutfs_core::tools::status::read_status(&dev).map_err(|e| format!("status: {e}"))?;
    let text = match (&this, a.json) {
        (None, true) => st.to_json() + "\n",
        (None, false) => st.to_string(),
        (Some(i), json) => {
            let rid = scoutfs_core::types::Rid(i.rid);
            let serving = st.server.is_some_and(|s| s.rid == rid);
            let recorded = st
                .mounted_clients
                .as_ref()
                .ok()
                .map(|l| l.iter().any(|c| c.rid == rid));
            let role = match (i.slot, serving) {
                (Some(s), true) => format!("quorum slot {s}, leader, serving"),
                (Some(s), false) => format!("quorum slot {s}, not serving"),
                (None, _) => "client (not a quorum member)".to_string(),
            };
            if json {
                let j = st.to_json();
                let mp = scoutfs_core::tools::status::json_str(&i.mountpoint.to_string_lossy());
                format!(
                    "{},\"this_mount\":{{\"mountpoint\":{mp},\"pid\":{},\"rid\":\"{:016x}\",\
                     \"slot\":{},\"serving\":{serving},\"recorded\":{}}}}}\n",
                    &j[..j.len() - 1],
                    i.pid,
                    i.rid,
                    i.slot.map_or("null".to_string(), |s| s.to_string()),
                    recorded.map_or("null".to_string(), |r| r.to_string()),
                )
            } else {
                format!(
                    "{}this mount: {} (pid {}, rid {:016x}): {role}; {}\n",
                    st,
                    i.mountpoint.display(),
                    i.pid,
                    i.rid,
                    match recorded {
                        Some(true) => "recorded in mounted clients",
                        Some(false) => "NOT recorded in mounted clients",
                        None => "mounted clients unreadable",
                    }
                )
            }
        }
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => {}
        // A reader that stopped early (status | head) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(format!("status: writing output: {e}")),
    }
    let problems = st.problems();
    for p in &problems {
        eprintln!("scoutfs: status: {p}");
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
