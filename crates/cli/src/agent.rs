//! `scoutfs archive-agent`: a complete archive agent over the control
//! interface, keeping a second tier (a directory of another filesystem,
//! standing in for tape or an object store) and never walking the
//! namespace.
//!
//! - **Archive.** It walks the data_seq index from its saved position to
//!   the last complete seq. A file whose data has been still for the
//!   settle time is copied to `inodes/INO/DV` (DV its data_version), the
//!   data_version checked before and after the copy. The copy is written
//!   as a temporary file, synced, renamed into place and its directory
//!   synced: a copy under its final name is whole and durable. The
//!   position is saved (synced, renamed) after the copies it covers.
//! - **Release.** When the data device is fuller than the high-water mark
//!   it walks the data_seq index from the start (the files changed
//!   longest ago first) and releases files whose copy for their current
//!   data_version exists and has their size, until the free space it
//!   expects reaches the low-water mark. The release itself names that
//!   data_version, so a file changed since is refused by the mount.
//! - **Stage.** A second thread serves the waiters of every mount, told
//!   of each as it begins (`data-waiting --follow`), with a full listing
//!   every `--poll` in case a message was lost to a server's failover: for
//!   each file waited on, it stages the whole file from its newest copy
//!   whose data_version is not above the file's (the one its offline
//!   blocks were released from; writes since then changed only online
//!   blocks). A file with offline blocks and no copy fails its waiters
//!   with ENODATA.
//!
//! Every step can be repeated: a kill at any moment leaves at most a
//! temporary copy (removed at the next start), a position behind the
//! copies (they are found again and kept), or a release not yet done.

use scoutfs_core::cluster::fence::local::run_dir;
use scoutfs_core::mount::control::ControlClient;
use scoutfs_core::mount::fs::archive::{SeqIndex, WalkEntry};
use scoutfs_core::mount::fs::wait::{DWO_CHANGE_SIZE, DWO_READ, DWO_WRITE};
use scoutfs_format::consts::ROOT_INO;
use scoutfs_format::control::DATA_WAITING_ALL_MOUNTS;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const BLOCK: u64 = 4096;
/// Stages tried on a file that keeps changing under them.
const STAGE_TRIES: usize = 5;

/// A duration as a number and a unit (ms, s, m, h; seconds without one).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: not a duration (such as 500ms, 10s, 5m, 1h)");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(bad()),
    };
    Ok(Duration::from_millis(ms))
}

fn percent(s: &str) -> Result<u8, String> {
    match s.trim_end_matches('%').parse::<u8>() {
        Ok(p) if p <= 100 => Ok(p),
        _ => Err(format!("{s:?}: not a percentage (0..100)")),
    }
}

#[derive(clap::Args)]
pub(crate) struct AgentArgs {
    /// The mountpoint of a running mount (the agent reads, releases and
    /// stages through it; its indexes and waiters cover every mount).
    mount: PathBuf,
    /// The archive directory: another filesystem (the agent keeps
    /// `scoutfs-FSID/` there).
    archive: PathBuf,
    /// Archive a file once its data has not changed for this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    settle: Duration,
    /// Release archived files when the data device is fuller than this.
    #[arg(long, value_parser = percent, default_value = "80")]
    high: u8,
    /// ... until it is this full.
    #[arg(long, value_parser = percent, default_value = "60")]
    low: u8,
    /// How often to walk the index and look at the free space.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    interval: Duration,
    /// How often to list every mount's waiters, besides following them as
    /// they come.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    poll: Duration,
    /// Archive (and release, if over the high-water mark) once, and exit.
    #[arg(long)]
    once: bool,
}

/// The agent's files for one filesystem.
struct Archive {
    root: PathBuf,
    mount: PathBuf,
}

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Syncs a directory, making the names in it durable.
fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(dir.display(), e))
}

/// Writes `bytes` to `path` durably and atomically: a temporary file,
/// synced, renamed over it, and the directory synced.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| err(tmp.display(), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| err(tmp.display(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path.display(), e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

impl Archive {
    fn inode_dir(&self, ino: u64) -> PathBuf {
        self.root.join("inodes").join(ino.to_string())
    }

    /// The copies of `ino`, as (data_version, size), newest first.
    fn copies(&self, ino: u64) -> Result<Vec<(u64, u64)>, String> {
        let dir = self.inode_dir(ino);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(dir.display(), e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| err(dir.display(), e))?;
            let Some(dv) = ent.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue; // a temporary copy
            };
            let len = ent.metadata().map_err(|e| err(dir.display(), e))?.len();
            out.push((dv, len));
        }
        out.sort_by(|a, b| b.cmp(a));
        Ok(out)
    }

    fn copy_path(&self, ino: u64, dv: u64) -> PathBuf {
        self.inode_dir(ino).join(dv.to_string())
    }

    fn position(&self) -> Result<WalkEntry, String> {
        let p = self.root.join("position");
        match std::fs::read_to_string(&p) {
            Ok(s) => {
                let mut it = s.split_whitespace().map(|n| n.parse::<u64>());
                match (it.next(), it.next()) {
                    (Some(Ok(seq)), Some(Ok(ino))) => Ok(WalkEntry { seq, ino }),
                    _ => Err(format!("{}: not a position: {s:?}", p.display())),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WalkEntry { seq: 0, ino: 0 }),
            Err(e) => Err(err(p.display(), e)),
        }
    }

    fn save_position(&self, at: WalkEntry) -> Result<(), String> {
        write_durably(
            &self.root.join("position"),
            format!("{} {}\n", at.seq, at.ino).as_bytes(),
        )
    }

    /// Opens the file with inode number `ino` through one of its paths
    /// (None if it has none: unlinked, or not a regular file).
    fn open(&self, c: &mut ControlClient, ino: u64, write: bool) -> Result<Option<File>, String> {
        let paths = c
            .ino_paths(ino, (0, 0), 4)
            .or_else(|e| match e.errno() {
                libc::ENOENT | libc::ESTALE => Ok(Vec::new()),
                _ => Err(e),
            })
            .map_err(|e| err(format!("the paths of inode {ino}"), e))?;
        for p in paths {
            let path = self.mount.join(std::ffi::OsStr::from_bytes(&p.path));
            // Only regular files are opened: opening a fifo would wait for
            // a writer, a device node would open the device. O_NONBLOCK
            // keeps a fifo put there since from waiting.
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_file() && m.ino() == ino => {}
                _ => continue,
            }
            let f = OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path);
            let f = match f {
                Ok(f) => f,
                Err(e) => match e.raw_os_error() {
                    // Renamed or removed since the path was read, or a
                    // symlink.
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => continue,
                    // Under retention: never written, so never released.
                    Some(libc::EPERM) if write => {
                        tracing::warn!(ino, path = %path.display(), "under retention: left as it is");
                        return Ok(None);
                    }
                    _ => return Err(err(path.display(), e)),
                },
            };
            let m = f.metadata().map_err(|e| err(path.display(), e))?;
            if m.ino() == ino && m.file_type().is_file() {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }
}

/// How long ago a file's data or inode last changed (its later of mtime
/// and ctime); zero for a time in the future.
fn since_change(m: &std::fs::Metadata) -> Duration {
    let at = |sec: i64, nsec: i64| {
        SystemTime::UNIX_EPOCH + Duration::new(sec.max(0) as u64, nsec.clamp(0, 999_999_999) as u32)
    };
    let t = at(m.mtime(), m.mtime_nsec()).max(at(m.ctime(), m.ctime_nsec()));
    SystemTime::now().duration_since(t).unwrap_or_default()
}

/// Copies `from` to `to` (a new file), returning the bytes copied.
fn copy_to(from: &mut File, to: &mut File) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let got = from.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        to.write_all(&buf[..got])?;
        n += got as u64;
    }
}

struct Agent {
    a: Archive,
    settle: Duration,
    high: u8,
    low: u8,
}

/// What happened to one index entry.
enum Step {
    /// Archived now, or already.
    Done,
    /// Changed too recently: the walk stops here and comes back.
    Unsettled,
}

impl Agent {
    /// Archives `ino` if it has no copy of its current data_version.
    fn archive_one(&self, c: &mut ControlClient, ino: u64) -> Result<Step, String> {
        let Some(mut f) = self.a.open(c, ino, false)? else {
            return Ok(Step::Done); // gone, or not a file
        };
        let before = c
            .stat_more(f.as_fd())
            .map_err(|e| err(format!("stat of inode {ino}"), e))?;
        let m = f.metadata().map_err(|e| err(format!("inode {ino}"), e))?;
        if since_change(&m) < self.settle {
            return Ok(Step::Unsettled);
        }
        let dv = before.data_version;
        if self.a.copy_path(ino, dv).exists() {
            return Ok(Step::Done);
        }
        if before.offline_blocks > 0 {
            // Released at an older version and written since: its offline
            // blocks come back from their copy first.
            drop(f);
            self.stage_file(c, ino)?;
            let Some(g) = self.a.open(c, ino, false)? else {
                return Ok(Step::Done);
            };
            f = g;
            let now = c
                .stat_more(f.as_fd())
                .map_err(|e| err(format!("stat of inode {ino}"), e))?;
            if now.data_version != dv {
                return Ok(Step::Done); // changed: seen again at its new seq
            }
            if now.offline_blocks > 0 {
                // No copy to stage from (its waiters were failed): reading
                // it would wait forever, and the walk must go on.
                tracing::error!(ino, "offline blocks and no archive copy: not archived");
                return Ok(Step::Done);
            }
        }
        let dir = self.a.inode_dir(ino);
        std::fs::create_dir_all(&dir).map_err(|e| err(dir.display(), e))?;
        let tmp = dir.join(format!(".tmp-{dv}"));
        let mut out = File::create(&tmp).map_err(|e| err(tmp.display(), e))?;
        let n = copy_to(&mut f, &mut out)
            .and_then(|n| out.sync_all().map(|_| n))
            .map_err(|e| err(format!("copying inode {ino} to {}", tmp.display()), e))?;
        let after = c
            .stat_more(f.as_fd())
            .map_err(|e| err(format!("stat of inode {ino}"), e))?;
        if after.data_version != dv || n != after.size {
            // Changed while copied: its new version is indexed at a later
            // seq and archived then.
            let _ = std::fs::remove_file(&tmp);
            return Ok(Step::Done);
        }
        let dst = self.a.copy_path(ino, dv);
        std::fs::rename(&tmp, &dst).map_err(|e| err(dst.display(), e))?;
        sync_dir(&dir)?;
        sync_dir(&self.a.root.join("inodes"))?;
        tracing::info!(ino, data_version = dv, bytes = n, "archived");
        Ok(Step::Done)
    }

    /// Walks the data_seq index from the saved position to the last
    /// complete seq, archiving; saves the position after each batch.
    fn archive_pass(&self, c: &mut ControlClient) -> Result<u64, String> {
        let mut pos = self.a.position()?;
        let end = WalkEntry {
            seq: u64::MAX,
            ino: u64::MAX,
        };
        let mut archived = 0;
        loop {
            let mut batch = Vec::new();
            let mut clamp = 0;
            c.walk_inodes(SeqIndex::DataSeq, pos, end, 1024, |last, es| {
                clamp = last;
                batch.extend_from_slice(es);
                Ok(())
            })
            .map_err(|e| err("walk-inodes data_seq", e))?;
            let full = batch.len() == 1024;
            for e in &batch {
                match self.archive_one(c, e.ino)? {
                    Step::Done => archived += 1,
                    Step::Unsettled => {
                        if *e != pos {
                            self.a.save_position(*e)?;
                        }
                        return Ok(archived);
                    }
                }
            }
            let next = match batch.last() {
                Some(l) if full => match l.ino.checked_add(1) {
                    Some(i) => WalkEntry { seq: l.seq, ino: i },
                    None => WalkEntry {
                        seq: l.seq.saturating_add(1),
                        ino: 0,
                    },
                },
                // Nothing at or below the clamp can be indexed again.
                _ => WalkEntry {
                    seq: clamp.saturating_add(1).max(pos.seq),
                    ino: 0,
                },
            };
            if next != pos {
                self.a.save_position(next)?;
                pos = next;
            }
            if !full {
                return Ok(archived);
            }
        }
    }

    /// Releases archived files, the least recently changed first, while
    /// the data device is fuller than the high-water mark, until the
    /// space freed would bring it to the low-water mark.
    fn release_pass(&self, c: &mut ControlClient) -> Result<u64, String> {
        let s = c.statfs().map_err(|e| err("statfs", e))?;
        let total = s.fs.total_data_blocks.max(1);
        let used = total.saturating_sub(s.fs.free_data_blocks);
        if used * 100 <= total * self.high as u64 {
            return Ok(0);
        }
        let target = total * self.low as u64 / 100;
        let mut to_free = used.saturating_sub(target);
        let mut released = 0;
        let mut pos = WalkEntry { seq: 0, ino: 0 };
        let end = WalkEntry {
            seq: u64::MAX,
            ino: u64::MAX,
        };
        while to_free > 0 {
            let mut batch = Vec::new();
            c.walk_inodes(SeqIndex::DataSeq, pos, end, 1024, |_, es| {
                batch.extend_from_slice(es);
                Ok(())
            })
            .map_err(|e| err("walk-inodes data_seq", e))?;
            let Some(last) = batch.last().copied() else {
                break;
            };
            for e in &batch {
                let Some(f) = self.a.open(c, e.ino, true)? else {
                    continue;
                };
                let st = c
                    .stat_more(f.as_fd())
                    .map_err(|err_| err(format!("stat of inode {}", e.ino), err_))?;
                if st.online_blocks == 0 {
                    continue;
                }
                let copy = self.a.copy_path(e.ino, st.data_version);
                match std::fs::metadata(&copy) {
                    Ok(m) if m.len() == st.size => {}
                    _ => continue, // not archived at this version
                }
                // Durable before the release, even if a kill came between
                // its rename and the syncs that followed.
                File::open(&copy)
                    .and_then(|f| f.sync_all())
                    .map_err(|err_| err(copy.display(), err_))?;
                sync_dir(&self.a.inode_dir(e.ino))?;
                sync_dir(&self.a.root.join("inodes"))?;
                let len = st.size.div_ceil(BLOCK) * BLOCK;
                match c.release(f.as_fd(), 0, len, st.data_version) {
                    Ok(()) => {}
                    // Changed since its stat: archived again later.
                    Err(e) if e.errno() == libc::ESTALE => continue,
                    Err(err_) => return Err(err(format!("release of inode {}", e.ino), err_)),
                }
                tracing::info!(ino = e.ino, data_version = st.data_version, "released");
                released += 1;
                to_free = to_free.saturating_sub(st.online_blocks);
                if to_free == 0 {
                    break;
                }
            }
            if batch.len() < 1024 {
                break;
            }
            pos = WalkEntry {
                seq: last.seq,
                ino: last.ino.saturating_add(1),
            };
        }
        Ok(released)
    }

    /// Stages every offline block of `ino` from its copy; a file that
    /// changed between its stat and the stage (ESTALE) is looked at again.
    fn stage_file(&self, c: &mut ControlClient, ino: u64) -> Result<(), String> {
        for _ in 0..STAGE_TRIES {
            if self.stage_once(c, ino)? {
                return Ok(());
            }
        }
        tracing::warn!(
            ino,
            "changed during each of {STAGE_TRIES} stages: left for the next listing"
        );
        Ok(())
    }

    /// One try of `stage_file`: false if the file changed meanwhile.
    fn stage_once(&self, c: &mut ControlClient, ino: u64) -> Result<bool, String> {
        let Some(f) = self.a.open(c, ino, true)? else {
            return Ok(true);
        };
        let st = c
            .stat_more(f.as_fd())
            .map_err(|e| err(format!("stat of inode {ino}"), e))?;
        if st.offline_blocks == 0 {
            return Ok(true);
        }
        let copy = self
            .a
            .copies(ino)?
            .into_iter()
            .find(|&(dv, _)| dv <= st.data_version);
        let Some((dv, _)) = copy else {
            tracing::error!(
                ino,
                "offline blocks and no archive copy: failing its waiters"
            );
            c.data_wait_err(
                ino,
                0,
                u64::MAX,
                (DWO_READ | DWO_WRITE | DWO_CHANGE_SIZE).into(),
                libc::ENODATA,
                true,
            )
            .map_err(|e| err(format!("data-wait-err of inode {ino}"), e))?;
            return Ok(true);
        };
        let path = self.a.copy_path(ino, dv);
        let src = File::open(&path).map_err(|e| err(path.display(), e))?;
        match c.stage(f.as_fd(), src.as_fd(), 0, st.size, st.data_version) {
            Ok(n) => {
                tracing::info!(ino, data_version = st.data_version, bytes = n, "staged");
                Ok(true)
            }
            // Changed since its stat.
            Err(e) if e.errno() == libc::ESTALE => Ok(false),
            Err(e) => Err(err(format!("stage of inode {ino}"), e)),
        }
    }
}

/// Removes the temporary copies a kill left.
fn clean_temporaries(root: &Path) -> Result<(), String> {
    let inodes = root.join("inodes");
    let rd = match std::fs::read_dir(&inodes) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(inodes.display(), e)),
    };
    for d in rd.flatten() {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            if f.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    Ok(())
}

fn connect(mount: &Path) -> Result<ControlClient, String> {
    ControlClient::for_path(mount, &run_dir()).map_err(|e| err("archive-agent", e))
}

pub(crate) fn cmd_archive_agent(a: AgentArgs) -> Result<ExitCode, String> {
    if a.low > a.high {
        return Err("archive-agent: --low is above --high".into());
    }
    let m = std::fs::metadata(&a.mount).map_err(|e| err(a.mount.display(), e))?;
    if m.ino() != ROOT_INO {
        return Err(format!(
            "archive-agent: {} is not the root of a scoutfs mount",
            a.mount.display()
        ));
    }
    let mut c = connect(&a.mount)?;
    let fsid = c.statfs().map_err(|e| err("statfs", e))?.fs.fsid;
    let root = a.archive.join(format!("scoutfs-{fsid:016x}"));
    std::fs::create_dir_all(root.join("inodes")).map_err(|e| err(root.display(), e))?;
    sync_dir(&a.archive)?;
    clean_temporaries(&root)?;
    let agent = Arc::new(Agent {
        a: Archive {
            root,
            mount: a.mount.clone(),
        },
        settle: a.settle,
        high: a.high,
        low: a.low,
    });
    tracing::info!(fsid = format!("{fsid:016x}"), archive = %agent.a.root.display(), "archive agent started");
    if a.once {
        agent.archive_pass(&mut c)?;
        agent.release_pass(&mut c)?;
        return Ok(ExitCode::SUCCESS);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stager = {
        let (agent, stop, mount, poll) = (agent.clone(), stop.clone(), a.mount.clone(), a.poll);
        std::thread::Builder::new()
            .name("stager".into())
            .spawn(move || serve_waiters(&agent, &mount, poll, &stop))
            .map_err(|e| err("starting the stager", e))?
    };
    let res: Result<(), String> = loop {
        if let Err(e) = agent
            .archive_pass(&mut c)
            .and_then(|_| agent.release_pass(&mut c))
        {
            // The next pass starts again from the saved position; a mount
            // that went away ends the agent.
            tracing::warn!("archive pass: {e}");
            match connect(&a.mount) {
                Ok(n) => c = n,
                Err(e) => break Err(e),
            }
        }
        if stager.is_finished() {
            break Err("archive-agent: the stager stopped".into());
        }
        std::thread::sleep(a.interval);
    };
    stop.store(true, Ordering::Release);
    let staged = stager.join();
    match (res, staged) {
        (Err(e), _) => Err(e),
        (_, Ok(Err(e))) => Err(e),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Stages the files waited on, on any mount, as they are waited on.
fn serve_waiters(
    agent: &Agent,
    mount: &Path,
    poll: Duration,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut c = connect(mount)?;
    // A follower thread hands over each file as it is first waited on.
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    {
        let mount = mount.to_path_buf();
        std::thread::Builder::new()
            .name("follower".into())
            .spawn(move || loop {
                let res = connect(&mount).and_then(|mut f| {
                    f.data_waiting_follow(DATA_WAITING_ALL_MOUNTS, |ws| {
                        for &(ino, _, _) in ws {
                            tx.send(ino).map_err(|_| {
                                scoutfs_core::error::Error::Disconnected(
                                    "the stager stopped".into(),
                                )
                            })?;
                        }
                        Ok(())
                    })
                    .map_err(|e| err("data-waiting --follow", e))
                });
                if let Err(e) = res {
                    tracing::warn!("{e}");
                }
                std::thread::sleep(Duration::from_secs(1));
            })
            .map_err(|e| err("starting the follower", e))?;
    }
    let mut listed = std::time::Instant::now() - poll;
    while !stop.load(Ordering::Acquire) {
        let mut inos = HashSet::new();
        if listed.elapsed() >= poll {
            match c.data_waiting(0, u64::MAX, 0, DATA_WAITING_ALL_MOUNTS) {
                Ok(ws) => inos.extend(ws.iter().map(|w| w.0)),
                Err(e) => {
                    tracing::warn!("data-waiting: {e}");
                    c = connect(mount)?;
                }
            }
            listed = std::time::Instant::now();
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(ino) => {
                inos.insert(ino);
                inos.extend(rx.try_iter());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err("archive-agent: the follower stopped".into())
            }
        }
        for ino in inos {
            if let Err(e) = agent.stage_file(&mut c, ino) {
                tracing::warn!(ino, "staging: {e}");
            }
        }
    }
    Ok(())
}
