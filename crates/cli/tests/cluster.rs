//! Real clusters: three `scoutfs mount` processes of one filesystem, each a
//! quorum member on its own loopback port, fenced with the local agent.
//!
//! - every change made on one mount is visible on the others as soon as the
//!   call that made it returns;
//! - mkdir, rename and rmdir across every combination of mounts;
//! - a directory renamed onto a directory (same parent or another, empty
//!   or not), made on one mount and renamed on another;
//! - concurrent creates in separate and shared directories;
//! - two mounts appending to one file in turn keep every byte;
//! - stores through a shared mapping, once written back (msync or close),
//!   are read on the other mounts, and their writes are loaded through
//!   mappings that exist; a page written back after another mount's
//!   fsynced write to it never undoes that write;
//! - failover: the mount that runs the server is killed (kill -9) in the
//!   middle of a workload on the others, during lock invalidations and
//!   during commits: a new server is elected, the old one is fenced, the
//!   workload goes on without an error, nothing acknowledged by fsync is
//!   lost, and `scoutfs check` is clean afterwards;
//! - a non-server mount killed and restarted;
//! - unmounting in every order;
//! - space across mounts: files written on one mount and deleted on
//!   another free their space with every mount up; a file open on one
//!   mount and unlinked on another keeps working for its opener, and its
//!   space returns once it is closed there, or once its mount is killed
//!   and fenced.

mod common;

use common::*;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A filesystem with three quorum slots and a mount per slot.
struct Cluster {
    dir: Scratch,
    meta: PathBuf,
    data: PathBuf,
    run: PathBuf,
    mounts: Vec<Option<MountProc>>,
    /// Mounts start with the rename wedge fault point on.
    wedge_fault: bool,
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        Cluster::start_with(name, false)
    }

    fn start_with(name: &str, wedge_fault: bool) -> Cluster {
        Cluster::start_on_devices(name, wedge_fault, "512M", "2G")
    }

    /// A cluster on devices of the given sizes.
    fn start_sized(name: &str, meta: &str, data: &str) -> Cluster {
        Cluster::start_on_devices(name, false, meta, data)
    }

    fn start_on_devices(name: &str, wedge_fault: bool, meta: &str, data: &str) -> Cluster {
        let dir = Scratch::new(name);
        let (meta, data) = mkfs_slots_sized(&dir, 3, meta, data);
        let run = dir.path("run");
        std::fs::create_dir_all(&run).unwrap();
        let mut c = Cluster {
            dir,
            meta,
            data,
            run,
            mounts: vec![None, None, None],
            wedge_fault,
        };
        for slot in 0..3 {
            c.spawn(slot);
        }
        for m in c.mounts.iter_mut().flatten() {
            m.wait_mounted(Duration::from_secs(30));
        }
        c
    }

    /// Starts the mount of `slot` (not waiting for it).
    fn spawn(&mut self, slot: usize) {
        let s = slot.to_string();
        let mp = self.dir.path(&format!("mnt{slot}"));
        let log = self.dir.path(&format!("mount{slot}.log"));
        let extra = [
            "--quorum-slot",
            &s,
            "--fence-command",
            bin(),
            "--fence-arg",
            "fence-local",
            "--reconnect-timeout-ms",
            "3000",
            "--orphan-scan-ms",
            "1000",
        ];
        let mut env = vec![("SCOUTFS_RUN_DIR", self.run.as_path())];
        if self.wedge_fault {
            env.push(("SCOUTFS_FAULT_RENAME_WEDGE", Path::new("1")));
        }
        let m = MountProc::spawn(&self.meta, &self.data, &mp, &extra, &env, Some(&log));
        self.mounts[slot] = Some(m);
    }

    fn mp(&self, slot: usize) -> &Path {
        &self.mounts[slot].as_ref().expect("mounted").mp
    }

    fn p(&self, slot: usize, rel: &str) -> PathBuf {
        self.mp(slot).join(rel)
    }

    /// The slot whose mount serves now, from the quorum blocks.
    fn server_slot(&self) -> Option<usize> {
        let o = scoutfs(&["status", "--meta", self.meta.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("server: slot "))
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
    }

    /// Waits (bounded) for a server other than `old` to serve.
    fn wait_new_server(&self, old: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.server_slot().filter(|&s| s != old) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no new server within {limit:?}; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `scoutfs df` of the mount of `slot`: (data total, data free).
    fn df_data(&self, slot: usize) -> (u64, u64) {
        df_data_env(self.mp(slot), &[("SCOUTFS_RUN_DIR", &self.run)])
    }

    /// The metadata row of `scoutfs df` of the mount of `slot`.
    fn df_meta(&self, slot: usize) -> DfRow {
        df_row(self.mp(slot), &[("SCOUTFS_RUN_DIR", &self.run)], "meta")
    }

    /// The last `n` lines of each mount's log.
    fn log_tails(&self, n: usize) -> String {
        (0..3)
            .map(|s| {
                let t = std::fs::read_to_string(self.dir.path(&format!("mount{s}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                let tail = lines[lines.len().saturating_sub(n)..].join("\n");
                format!("--- mount {s} (last {n} lines):\n{tail}\n")
            })
            .collect()
    }

    fn logs(&self) -> String {
        (0..3)
            .map(|s| {
                let t = std::fs::read_to_string(self.dir.path(&format!("mount{s}.log")))
                    .unwrap_or_default();
                format!("--- mount {s}:\n{t}")
            })
            .collect()
    }

    /// Unmounts every mount at once and waits for each, then checks the
    /// filesystem.
    fn finish(mut self) {
        let mut left: Vec<MountProc> = self.mounts.iter_mut().filter_map(Option::take).collect();
        for m in left.iter_mut() {
            m.begin_unmount();
        }
        for m in left {
            m.wait_exit(Duration::from_secs(60));
        }
        assert_check_clean(&self.meta, &self.data);
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn setxattr(p: &Path, name: &str, val: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), val.as_ptr().cast(), val.len(), 0) };
    assert_eq!(
        r,
        0,
        "setxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::ENODATA), "getxattr: {e}");
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

fn removexattr(p: &Path, name: &str) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings.
    let r = unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) };
    assert_eq!(r, 0, "removexattr: {}", std::io::Error::last_os_error());
}

fn set_mtime(p: &Path, secs: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 1,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 2,
        },
    ];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat: {}", std::io::Error::last_os_error());
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

#[test]
fn every_change_is_seen_on_the_other_mounts_when_the_call_returns() {
    if !can_mount("every_change_is_seen_on_the_other_mounts_when_the_call_returns") {
        return;
    }
    let c = Cluster::start("cluster-coherence");
    let mut checked = 0;
    for a in 0..3 {
        for b in 0..3 {
            if a == b {
                continue;
            }
            let name = format!("f{a}{b}");
            let (pa, pb) = (c.p(a, &name), c.p(b, &name));
            // Contents and size.
            std::fs::write(&pa, b"first").unwrap();
            assert_eq!(read(&pb), b"first");
            let mut f = std::fs::OpenOptions::new().append(true).open(&pa).unwrap();
            f.write_all(b" second").unwrap();
            drop(f);
            assert_eq!(read(&pb), b"first second");
            assert_eq!(std::fs::metadata(&pb).unwrap().len(), 12);
            // Written on b, read back on a (a's cached pages are stale).
            std::fs::write(&pb, b"from b").unwrap();
            assert_eq!(read(&pa), b"from b");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&pa)
                .unwrap()
                .set_len(2)
                .unwrap();
            assert_eq!(read(&pb), b"fr");
            // Modes, owners and times.
            std::fs::set_permissions(&pa, std::fs::Permissions::from_mode(0o640)).unwrap();
            assert_eq!(std::fs::metadata(&pb).unwrap().mode() & 0o7777, 0o640);
            std::os::unix::fs::chown(&pa, Some(4242), Some(4343)).unwrap();
            let md = std::fs::metadata(&pb).unwrap();
            assert_eq!((md.uid(), md.gid()), (4242, 4343));
            set_mtime(&pa, 1_000_000 + (a * 3 + b) as i64);
            let md = std::fs::metadata(&pb).unwrap();
            assert_eq!(
                (md.mtime(), md.mtime_nsec()),
                (1_000_000 + (a * 3 + b) as i64, 2)
            );
            assert_eq!(
                (md.atime(), md.atime_nsec()),
                (1_000_000 + (a * 3 + b) as i64, 1)
            );
            // Extended attributes.
            setxattr(&pa, "user.tag", b"v1");
            assert_eq!(getxattr(&pb, "user.tag").as_deref(), Some(&b"v1"[..]));
            setxattr(&pb, "user.tag", b"v2");
            assert_eq!(getxattr(&pa, "user.tag").as_deref(), Some(&b"v2"[..]));
            removexattr(&pa, "user.tag");
            assert_eq!(getxattr(&pb, "user.tag"), None);
            // Directory entries: hard links, symlinks, renames, unlinks.
            let link = format!("l{a}{b}");
            std::fs::hard_link(&pa, c.p(a, &link)).unwrap();
            assert_eq!(std::fs::metadata(&pb).unwrap().nlink(), 2);
            assert_eq!(read(&c.p(b, &link)), b"fr");
            let sym = format!("s{a}{b}");
            std::os::unix::fs::symlink(&name, c.p(a, &sym)).unwrap();
            assert_eq!(
                std::fs::read_link(c.p(b, &sym)).unwrap(),
                PathBuf::from(&name)
            );
            let renamed = format!("r{a}{b}");
            std::fs::rename(&pa, c.p(a, &renamed)).unwrap();
            assert!(!exists(&pb));
            assert_eq!(read(&c.p(b, &renamed)), b"fr");
            std::fs::remove_file(c.p(a, &renamed)).unwrap();
            std::fs::remove_file(c.p(a, &link)).unwrap();
            std::fs::remove_file(c.p(a, &sym)).unwrap();
            assert!(!exists(&c.p(b, &renamed)));
            assert!(!exists(&c.p(b, &link)));
            assert!(!exists(&c.p(b, &sym)));
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
    // `status PATH` on each mount: its own slot and role, one serving.
    let mut serving = 0;
    for s in 0..3 {
        let mp = c.mp(s).to_str().unwrap().to_string();
        let o = std::process::Command::new(bin())
            .args(["status", &mp])
            .env("SCOUTFS_RUN_DIR", &c.run)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(text.contains(&format!("this mount: {mp} (pid ")), "{text}");
        assert!(text.contains(&format!("quorum slot {s},")), "{text}");
        assert!(text.contains("recorded in mounted clients"), "{text}");
        serving += usize::from(text.contains("leader, serving"));
        let o = std::process::Command::new(bin())
            .args(["status", "--json", &mp])
            .env("SCOUTFS_RUN_DIR", &c.run)
            .output()
            .unwrap();
        let json = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(json.contains(&format!("\"slot\":{s},")), "{json}");
        assert!(json.trim_end().ends_with("\"recorded\":true}}"), "{json}");
    }
    assert_eq!(serving, 1, "exactly one mount serves");
    // All three see the same (empty) tree.
    let snaps: Vec<_> = (0..3).map(|s| snapshot(c.mp(s))).collect();
    assert!(
        snaps.iter().all(|s| s == &snaps[0] && s.is_empty()),
        "{snaps:?}"
    );
    c.finish();
}

#[test]
fn mkdir_rename_rmdir_across_every_combination_of_mounts() {
    if !can_mount("mkdir_rename_rmdir_across_every_combination_of_mounts") {
        return;
    }
    let c = Cluster::start("cluster-dirs");
    std::fs::create_dir(c.p(0, "other")).unwrap();
    let mut n = 0;
    for a in 0..3 {
        for b in 0..3 {
            for r in 0..3 {
                let d = format!("d{a}{b}{r}");
                std::fs::create_dir(c.p(a, &d)).unwrap();
                std::fs::write(c.p(a, &format!("{d}/inside")), d.as_bytes()).unwrap();
                // Renamed on b into another directory, and seen everywhere.
                let to = format!("other/{d}");
                std::fs::rename(c.p(b, &d), c.p(b, &to)).unwrap();
                for s in 0..3 {
                    assert!(!exists(&c.p(s, &d)), "{d} still seen on mount {s}");
                    assert_eq!(read(&c.p(s, &format!("{to}/inside"))), d.as_bytes());
                }
                // Emptied and removed on r.
                std::fs::remove_file(c.p(r, &format!("{to}/inside"))).unwrap();
                std::fs::remove_dir(c.p(r, &to)).unwrap();
                for s in 0..3 {
                    assert!(!exists(&c.p(s, &to)), "{to} still seen on mount {s}");
                }
                n += 1;
            }
        }
    }
    assert_eq!(n, 27);
    for s in 0..3 {
        assert_eq!(std::fs::metadata(c.p(s, "other")).unwrap().nlink(), 2);
        assert_eq!(std::fs::read_dir(c.p(s, "other")).unwrap().count(), 0);
    }
    c.finish();
}

/// Regression: renaming a directory onto an existing directory read the
/// target's entries under its new parent's lock, an assertion that took the
/// mount down whenever the two sat in different lock groups.
#[test]
fn rename_of_a_directory_onto_a_directory_in_every_combination() {
    if !can_mount("rename_of_a_directory_onto_a_directory_in_every_combination") {
        return;
    }
    let c = Cluster::start("cluster-rename-dirs");
    std::fs::create_dir(c.p(0, "p")).unwrap();
    std::fs::create_dir(c.p(0, "q")).unwrap();
    let mut n = 0;
    for a in 0..3 {
        for b in 0..3 {
            for (same, full) in [(true, false), (true, true), (false, false), (false, true)] {
                let src = format!("p/s{a}{b}{same}{full}");
                let dst_dir = if same { "p" } else { "q" };
                let dst = format!("{dst_dir}/t{a}{b}{same}{full}");
                std::fs::create_dir(c.p(a, &src)).unwrap();
                std::fs::write(c.p(a, &format!("{src}/f")), src.as_bytes()).unwrap();
                std::fs::create_dir(c.p(a, &dst)).unwrap();
                if full {
                    std::fs::write(c.p(a, &format!("{dst}/g")), b"kept").unwrap();
                }
                // Renamed on mount b, seen the same on every mount.
                let r = std::fs::rename(c.p(b, &src), c.p(b, &dst));
                if full {
                    let e = r.expect_err("rename onto a full directory");
                    assert_eq!(
                        e.raw_os_error(),
                        Some(libc::ENOTEMPTY),
                        "{src} -> {dst}: {e}"
                    );
                    for s in 0..3 {
                        assert_eq!(read(&c.p(s, &format!("{src}/f"))), src.as_bytes());
                        assert_eq!(read(&c.p(s, &format!("{dst}/g"))), b"kept");
                    }
                    std::fs::remove_file(c.p(b, &format!("{dst}/g"))).unwrap();
                    std::fs::rename(c.p(b, &src), c.p(b, &dst)).unwrap();
                } else {
                    r.unwrap_or_else(|e| panic!("{src} -> {dst}: {e}"));
                }
                for s in 0..3 {
                    assert!(!exists(&c.p(s, &src)), "{src} still seen on mount {s}");
                    assert_eq!(read(&c.p(s, &format!("{dst}/f"))), src.as_bytes());
                    let names = std::fs::read_dir(c.p(s, &dst)).unwrap().count();
                    assert_eq!(names, 1, "{dst} on mount {s}");
                }
                n += 1;
            }
        }
    }
    assert_eq!(n, 36);
    // Every renamed directory replaced one: 18 directories in each parent.
    for s in 0..3 {
        for d in ["p", "q"] {
            let m = std::fs::metadata(c.p(s, d)).unwrap();
            assert_eq!(m.nlink(), 2 + 18, "{d} on mount {s}");
            assert_eq!(std::fs::read_dir(c.p(s, d)).unwrap().count(), 18);
        }
    }
    let logs = c.logs();
    assert!(!logs.contains("panicked"), "a mount panicked:\n{logs}");
    c.finish();
}

#[test]
fn concurrent_creates_in_separate_and_shared_directories() {
    if !can_mount("concurrent_creates_in_separate_and_shared_directories") {
        return;
    }
    const EACH: usize = 150;
    let c = Cluster::start("cluster-creates");
    std::fs::create_dir(c.p(0, "shared")).unwrap();
    for s in 0..3 {
        std::fs::create_dir(c.p(s, &format!("own{s}"))).unwrap();
    }
    std::thread::scope(|sc| {
        for s in 0..3 {
            let mp = c.mp(s).to_path_buf();
            sc.spawn(move || {
                for i in 0..EACH {
                    for name in [format!("own{s}/f{i}"), format!("shared/m{s}-f{i}")] {
                        let path = mp.join(&name);
                        if let Err(e) = std::fs::write(&path, format!("{s}.{i}")) {
                            // What the mount sees right after, for the report.
                            let dir = path.parent().unwrap_or(&mp);
                            let after = std::fs::metadata(dir).map(|m| m.is_dir());
                            let again = std::fs::write(&path, format!("{s}.{i}"));
                            let logs: Vec<String> = (0..3)
                                .map(|m| {
                                    let l = mp.with_file_name(format!("mount{m}.log"));
                                    std::fs::read_to_string(l).unwrap_or_default()
                                })
                                .collect();
                            panic!(
                                "creating {name} on mount {s}: {e}; then its \
                                 directory: {after:?}, a second try: {again:?}; \
                                 mount logs: {logs:#?}"
                            );
                        }
                    }
                }
            });
        }
    });
    for view in 0..3 {
        let shared = std::fs::read_dir(c.p(view, "shared")).unwrap().count();
        assert_eq!(shared, 3 * EACH, "shared directory seen from mount {view}");
        for s in 0..3 {
            let own = std::fs::read_dir(c.p(view, &format!("own{s}")))
                .unwrap()
                .count();
            assert_eq!(own, EACH);
            for i in (0..EACH).step_by(37) {
                let want = format!("{s}.{i}");
                assert_eq!(read(&c.p(view, &format!("own{s}/f{i}"))), want.as_bytes());
                assert_eq!(
                    read(&c.p(view, &format!("shared/m{s}-f{i}"))),
                    want.as_bytes()
                );
            }
        }
    }
    c.finish();
}

#[test]
fn two_mounts_appending_to_one_file_in_turn_keep_every_byte() {
    if !can_mount("two_mounts_appending_to_one_file_in_turn_keep_every_byte") {
        return;
    }
    const TURNS: usize = 200;
    let c = Cluster::start("cluster-append");
    std::fs::write(c.p(0, "log"), b"").unwrap();
    let mut want = Vec::new();
    let mut files: Vec<std::fs::File> = (0..2)
        .map(|s| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(c.p(s + 1, "log"))
                .unwrap()
        })
        .collect();
    for i in 0..TURNS {
        for (s, f) in files.iter_mut().enumerate() {
            let line = format!("mount {} turn {i}\n", s + 1);
            f.write_all(line.as_bytes()).unwrap();
            want.extend_from_slice(line.as_bytes());
        }
    }
    drop(files);
    for s in 0..3 {
        assert_eq!(read(&c.p(s, "log")), want, "as seen from mount {s}");
    }
    c.finish();
}

/// What a workload thread saw acknowledged: files it wrote and fsynced.
struct Acked {
    files: Vec<(PathBuf, Vec<u8>)>,
    errors: Vec<String>,
}

/// Creates, writes and fsyncs files in `dir` until `stop`, recording each
/// one fsync acknowledged; `shared` is a file it also appends to under
/// O_APPEND (lock traffic with the other workload).
fn workload(dir: PathBuf, shared: Option<PathBuf>, stop: Arc<AtomicBool>) -> Acked {
    let mut acked = Acked {
        files: Vec::new(),
        errors: Vec::new(),
    };
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let p = dir.join(format!("w{i}"));
        let body = format!("{} {i}", dir.display())
            .repeat(1 + i % 7)
            .into_bytes();
        let r = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o644)
                .open(&p)?;
            f.write_all(&body)?;
            f.sync_all()?;
            if let Some(s) = &shared {
                let mut f = std::fs::OpenOptions::new().append(true).open(s)?;
                f.write_all(format!("{} {i}\n", dir.display()).as_bytes())?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => acked.files.push((p, body)),
            Err(e) => acked.errors.push(format!("{}: {e}", p.display())),
        }
        i += 1;
    }
    acked
}

/// Kills the mount that serves in the middle of a workload on the other
/// two and checks the failover (see the module comment).
fn failover(name: &str, shared: bool) {
    let mut c = Cluster::start(name);
    let old = c.server_slot().expect("a server is elected");
    let others: Vec<usize> = (0..3).filter(|&s| s != old).collect();
    let shared_file = shared.then(|| "shared.log".to_string());
    if let Some(f) = &shared_file {
        std::fs::write(c.p(others[0], f), b"").unwrap();
    }
    for &s in &others {
        std::fs::create_dir(c.p(s, &format!("work{s}"))).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = others
        .iter()
        .map(|&s| {
            let dir = c.p(s, &format!("work{s}"));
            let sh = shared_file.as_ref().map(|f| c.p(s, f));
            let stop = stop.clone();
            std::thread::spawn(move || workload(dir, sh, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let killed = c.mounts[old].take().unwrap();
    let killed_mp = killed.mp.clone();
    let t0 = Instant::now();
    killed.kill9_keep_mount();
    let new = c.wait_new_server(old, Duration::from_secs(20));
    let elected = t0.elapsed();
    // The workload goes on for a while under the new server.
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    let results: Vec<Acked> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    for (r, s) in results.iter().zip(&others) {
        assert!(
            r.errors.is_empty(),
            "workload on mount {s} saw errors: {:?}\n{}",
            r.errors,
            c.logs()
        );
        assert!(r.files.len() > 3, "workload on mount {s} made no progress");
    }
    // The fence agent detached the dead mount.
    assert!(!is_mounted(&killed_mp), "the killed mount was not fenced");
    let log = c.logs();
    assert!(log.contains("fencing the server of term"), "{log}");
    eprintln!("{name}: slot {new} elected {elected:?} after the kill of slot {old}");
    // Every acknowledged file, from every mount, after the killed slot
    // rejoins.
    c.spawn(old);
    c.mounts[old]
        .as_mut()
        .unwrap()
        .wait_mounted(Duration::from_secs(30));
    for view in 0..3 {
        for r in &results {
            for (p, body) in &r.files {
                let rel = p
                    .strip_prefix(c.mp(others[0]))
                    .or_else(|_| p.strip_prefix(c.mp(others[1])));
                let rel = rel.unwrap();
                assert_eq!(&read(&c.p(view, rel.to_str().unwrap())), body);
            }
        }
    }
    if let Some(f) = &shared_file {
        let lines = read(&c.p(old, f));
        let n = lines.iter().filter(|&&b| b == b'\n').count();
        let total: usize = results.iter().map(|r| r.files.len()).sum();
        assert_eq!(n, total, "every acknowledged append is in the shared file");
    }
    c.finish();
}

/// Regression: a server's mount killed while a kernel notification of
/// its own waited in the kernel (on the directory lock of a rename on that
/// mount, itself waiting for the mount's answer) could not exit: its
/// sockets stayed open, the fence agent's kill never finished, and no new
/// server could start. The notification is now sent by a helper process,
/// and the agent aborts the dead mount's FUSE connection.
#[test]
fn a_server_killed_while_a_rename_waits_on_its_notification_is_replaced() {
    if !can_mount("a_server_killed_while_a_rename_waits_on_its_notification_is_replaced") {
        return;
    }
    let mut c = Cluster::start_with("cluster-wedge", true);
    let old = c.server_slot().expect("a server is elected");
    let others: Vec<usize> = (0..3).filter(|&s| s != old).collect();
    std::fs::create_dir(c.p(old, "d")).unwrap();
    std::fs::write(c.p(old, "d/a"), b"a").unwrap();
    let (from, to) = (c.p(old, "d/a"), c.p(old, "d/wedge"));
    let renamer = std::thread::spawn(move || std::fs::rename(from, to));
    let log = c.dir.path(&format!("mount{old}.log"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("wedging a rename")
    {
        assert!(
            Instant::now() < deadline,
            "the rename never reached the fault point"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Time for the notification to reach the kernel and wait there.
    std::thread::sleep(Duration::from_millis(300));
    let killed = c.mounts[old].take().unwrap();
    let (pid, killed_mp) = (killed.pid(), killed.mp.clone());
    let t0 = Instant::now();
    killed.kill9_keep_mount();
    let new = c.wait_new_server(old, Duration::from_secs(30));
    let elected = t0.elapsed();
    eprintln!("slot {new} serves {elected:?} after the kill of slot {old}");
    // The rename on the dead mount failed once its connection was aborted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !renamer.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the rename on the dead mount never returned"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(renamer.join().unwrap().is_err(), "a rename on a dead mount");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the killed mount exited"
    );
    // The status shows the new leader once elected; its fence of the old
    // one (kill, abort, wait for the exit, detach) may still be finishing:
    // the detach is its last step.
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(&killed_mp) {
        assert!(
            Instant::now() < deadline,
            "the dead mount was not detached within 10 s of the new server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The cluster goes on.
    std::fs::write(c.p(others[0], "after"), b"on").unwrap();
    assert_eq!(read(&c.p(others[1], "after")), b"on");
    assert!(
        elected < Duration::from_secs(2),
        "a new server after {elected:?}\n{}",
        c.logs()
    );
    c.finish();
}

#[test]
fn failover_when_the_server_mount_is_killed_during_commits() {
    if !can_mount("failover_when_the_server_mount_is_killed_during_commits") {
        return;
    }
    failover("cluster-failover-commits", false);
}

#[test]
fn failover_when_the_server_mount_is_killed_during_lock_invalidations() {
    if !can_mount("failover_when_the_server_mount_is_killed_during_lock_invalidations") {
        return;
    }
    failover("cluster-failover-invalidations", true);
}

#[test]
fn a_killed_client_mount_is_fenced_and_can_mount_again() {
    if !can_mount("a_killed_client_mount_is_fenced_and_can_mount_again") {
        return;
    }
    let mut c = Cluster::start("cluster-kill-client");
    let server = c.server_slot().expect("a server is elected");
    let victim = (server + 1) % 3;
    let other = (server + 2) % 3;
    let mut f = std::fs::File::create(c.p(victim, "synced")).unwrap();
    f.write_all(b"acknowledged").unwrap();
    f.sync_all().unwrap();
    drop(f);
    // A lock the victim holds for writing, that another mount will want.
    std::fs::write(c.p(victim, "held"), b"victim").unwrap();
    let killed = c.mounts[victim].take().unwrap();
    let mp = killed.mp.clone();
    killed.kill9_keep_mount();
    // The others go on; the victim's lock is freed once it is fenced
    // (after the reconnect timeout).
    std::fs::write(c.p(other, "held"), b"other").unwrap();
    assert_eq!(read(&c.p(server, "held")), b"other");
    assert_eq!(read(&c.p(other, "synced")), b"acknowledged");
    assert!(!is_mounted(&mp), "the killed mount was not fenced");
    assert!(c.logs().contains("client_reconnect"), "{}", c.logs());
    c.spawn(victim);
    c.mounts[victim]
        .as_mut()
        .unwrap()
        .wait_mounted(Duration::from_secs(30));
    assert_eq!(read(&c.p(victim, "held")), b"other");
    assert_eq!(read(&c.p(victim, "synced")), b"acknowledged");
    c.finish();
}

#[test]
fn unmounting_in_every_order() {
    if !can_mount("unmounting_in_every_order") {
        return;
    }
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for (n, order) in orders.iter().enumerate() {
        let mut c = Cluster::start(&format!("cluster-unmount-{n}"));
        for s in 0..3 {
            std::fs::write(c.p(s, &format!("from{s}")), format!("{order:?}")).unwrap();
        }
        // The first leaves alone (two members stay, enough to elect); the
        // second's farewell waits until the third leaves with it.
        let mut first = c.mounts[order[0]].take().unwrap();
        first.begin_unmount();
        first.wait_exit(Duration::from_secs(30));
        let mut second = c.mounts[order[1]].take().unwrap();
        let mut third = c.mounts[order[2]].take().unwrap();
        second.begin_unmount();
        third.begin_unmount();
        second.wait_exit(Duration::from_secs(30));
        third.wait_exit(Duration::from_secs(30));
        assert_check_clean(&c.meta, &c.data);
        // Everything written is there for the next mount.
        let again = Cluster::start_on(c);
        for s in 0..3 {
            assert_eq!(
                read(&again.p(0, &format!("from{s}"))),
                format!("{order:?}").as_bytes()
            );
        }
        again.finish();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Mounts still running are ended by their own drop; a killed one
        // the fence agent did not detach (a failed test) goes here.
        for m in self.mounts.iter_mut() {
            m.take();
        }
        for slot in 0..3 {
            force_unmount(&self.dir.path(&format!("mnt{slot}")));
        }
    }
}

impl Cluster {
    /// Mounts the three slots again on the devices of a cluster that was
    /// unmounted.
    fn start_on(mut c: Cluster) -> Cluster {
        for slot in 0..3 {
            c.spawn(slot);
        }
        for m in c.mounts.iter_mut().flatten() {
            m.wait_mounted(Duration::from_secs(30));
        }
        c
    }
}

/// A mount whose creates in a directory keep waiting for the directory's
/// lock (each holds the kernel's lock of the directory while it waits)
/// still drops the names it caches there before it gives the lock up:
/// a name removed on another mount is gone on this one when the removal
/// returns.
#[test]
fn names_cached_on_a_busy_mount_are_dropped_before_the_lock_goes() {
    if !can_mount("names_cached_on_a_busy_mount_are_dropped_before_the_lock_goes") {
        return;
    }
    const ROUNDS: usize = 300;
    let c = Cluster::start("cluster-busy-names");
    std::fs::create_dir(c.p(0, "d")).unwrap();
    let stop = AtomicBool::new(false);
    let mut stale = Vec::new();
    std::thread::scope(|sc| {
        let busy_dir = c.p(1, "d");
        let stop = &stop;
        let busy = sc.spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(busy_dir.join(format!("busy{n}")), b"b").unwrap();
                n += 1;
            }
            n
        });
        for i in 0..ROUNDS {
            let name = format!("d/x{i}");
            std::fs::write(c.p(2, &name), b"x").unwrap();
            assert!(
                exists(&c.p(1, &name)),
                "round {i}: mount 1 doesn't see {name}"
            );
            std::fs::remove_file(c.p(2, &name)).unwrap();
            if exists(&c.p(1, &name)) {
                stale.push(i);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let created = busy.join().unwrap();
        eprintln!("busy creates meanwhile: {created}");
        assert!(created > 0);
    });
    assert!(
        stale.is_empty(),
        "mount 1 still saw names removed on mount 2 in rounds {stale:?}"
    );
    c.finish();
}

/// The same for pages: a mount whose reads, and writes of part of a page
/// the kernel doesn't cache, keep waiting for the file's lock (the kernel
/// holds those pages locked meanwhile) still drops the other pages it
/// caches: a read there after another mount's write returns sees the new
/// bytes.
#[test]
fn pages_cached_on_a_busy_mount_are_dropped_before_the_lock_goes() {
    if !can_mount("pages_cached_on_a_busy_mount_are_dropped_before_the_lock_goes") {
        return;
    }
    use std::os::unix::fs::FileExt;
    const ROUNDS: usize = 300;
    const PAGE: usize = 4096;
    let c = Cluster::start("cluster-busy-pages");
    std::fs::write(c.p(0, "f"), vec![0u8; 3 * PAGE]).unwrap();
    let stop = AtomicBool::new(false);
    let mut stale = Vec::new();
    std::thread::scope(|sc| {
        let busy_file = c.p(1, "f");
        let stop = &stop;
        let busy = sc.spawn(move || {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(busy_file)
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f.write_all_at(&[0xbb; 100], 10).unwrap();
                n += 1;
            }
            n
        });
        let busy_file = c.p(1, "f");
        let busy_reader = sc.spawn(move || {
            let f = std::fs::File::open(busy_file).unwrap();
            let mut buf = vec![0u8; PAGE];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f.read_exact_at(&mut buf, 2 * PAGE as u64).unwrap();
                n += 1;
            }
            n
        });
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(c.p(2, "f"))
            .unwrap();
        let reader = std::fs::File::open(c.p(1, "f")).unwrap();
        let mut buf = vec![0u8; PAGE];
        for i in 0..ROUNDS {
            let v = (i % 250) as u8 + 1;
            writer.write_all_at(&vec![v; PAGE], PAGE as u64).unwrap();
            reader.read_exact_at(&mut buf, PAGE as u64).unwrap();
            if buf.iter().any(|&b| b != v) {
                stale.push(i);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let written = busy.join().unwrap();
        let read = busy_reader.join().unwrap();
        eprintln!("busy writes meanwhile: {written}, reads: {read}");
        assert!(written > 0 && read > 0);
    });
    assert!(
        stale.is_empty(),
        "mount 1 read bytes older than mount 2's write in rounds {stale:?}"
    );
    c.finish();
}

/// A shared read/write mapping of the first `len` bytes of a file, with
/// the file kept open; unmapped when dropped.
struct Mapping {
    addr: *mut u8,
    len: usize,
    _file: std::fs::File,
}

impl Mapping {
    fn new(p: &Path, len: usize) -> Mapping {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        // SAFETY: a new shared mapping of an open file, at an address the
        // kernel chooses; nothing else refers to it.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            addr,
            libc::MAP_FAILED,
            "mmap {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        Mapping {
            addr: addr.cast(),
            len,
            _file: file,
        }
    }

    /// Stores `bytes` at `off` through the mapping.
    fn store(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len);
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: within the mapping (checked above), which lives as
            // long as `self`, of a file never shorter than it.
            unsafe { std::ptr::write_volatile(self.addr.add(off + i), b) };
        }
    }

    /// Every byte of the mapping, each loaded from it now.
    fn load(&self) -> Vec<u8> {
        // SAFETY: as in `store`.
        (0..self.len)
            .map(|i| unsafe { std::ptr::read_volatile(self.addr.add(i)) })
            .collect()
    }

    /// msync(MS_SYNC): the stores are written to the filesystem.
    fn sync(&self) {
        // SAFETY: the whole of a live mapping.
        let r = unsafe { libc::msync(self.addr.cast(), self.len, libc::MS_SYNC) };
        assert_eq!(r, 0, "msync: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

/// The bytes of write number `seed` over `off..off + len`: for two seeds
/// below 251, every byte differs, so a byte left from any earlier write is
/// caught wherever it is.
fn mmap_pattern(seed: usize, off: usize, len: usize) -> Vec<u8> {
    (off..off + len)
        .map(|o| ((o * 31 + seed * 97) % 251) as u8)
        .collect()
}

/// Where `got` differs from `want`: the first offset, its bytes, and how
/// many bytes differ.
fn mmap_diff(got: &[u8], want: &[u8]) -> Option<String> {
    assert_eq!(got.len(), want.len());
    let first = got.iter().zip(want).position(|(g, w)| g != w)?;
    let n = got.iter().zip(want).filter(|(g, w)| g != w).count();
    Some(format!(
        "{n} bytes differ, the first at {first}: {:#04x}, not {:#04x}",
        got[first], want[first]
    ))
}

/// mmap against read(2) and write(2) across mounts (the original's
/// "mmap"). Bytes stored through a shared mapping on one mount and
/// written back, by msync(MS_SYNC) or by closing the file, are what a
/// read on another mount returns; bytes written on another mount are what
/// a mapping that already exists here loads next, with no new mapping: a
/// mount that gives up a file's lock drops the file's cached pages, and
/// the kernel unmaps the pages it drops from every mapping, so the next
/// load faults and reads through the lock again.
///
/// Not guaranteed, so not tested: stores through a mapping not yet written
/// back (no msync, fsync or close since). FUSE tells the mount nothing of
/// them, so it takes no lock for them: they are in its page cache only,
/// another mount reads the older bytes meanwhile, and the whole pages they
/// dirtied are written whenever the kernel writes them back.
#[test]
fn mmap_writes_and_reads_are_coherent_with_other_mounts() {
    if !can_mount("mmap_writes_and_reads_are_coherent_with_other_mounts") {
        return;
    }
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    const LEN: usize = 4 * PAGE;
    const ROUNDS: usize = 50;
    let c = Cluster::start("cluster-mmap");
    // Seed 0 is the file as written; then two writes a round, seeds below
    // 251.
    let mut model = mmap_pattern(0, 0, LEN);
    std::fs::write(c.p(0, "f"), &model).unwrap();
    let maps: Vec<Mapping> = (0..3).map(|s| Mapping::new(&c.p(s, "f"), LEN)).collect();
    let files: Vec<std::fs::File> = (0..3)
        .map(|s| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(c.p(s, "f"))
                .unwrap()
        })
        .collect();
    let pread = |s: usize| {
        let mut buf = vec![0u8; LEN];
        files[s].read_exact_at(&mut buf, 0).unwrap();
        buf
    };
    // Every mount maps the file and loads it (its pages cached there).
    for (s, m) in maps.iter().enumerate() {
        assert_eq!(m.load(), model, "mount {s}'s mapping of the new file");
    }

    // Stored through mount 1's mapping over parts of three pages, synced,
    // read on mount 2.
    let (off, len) = (PAGE / 2, 2 * PAGE + 100);
    let bytes = mmap_pattern(1, off, len);
    maps[1].store(off, &bytes);
    maps[1].sync();
    model[off..off + len].copy_from_slice(&bytes);
    assert_eq!(
        mmap_diff(&pread(2), &model),
        None,
        "mount 2 reads mount 1's stores"
    );
    // Written on mount 2 over the same pages, loaded through mount 1's
    // mapping as it is, and mount 0's.
    let bytes = mmap_pattern(2, off, len);
    files[2].write_all_at(&bytes, off as u64).unwrap();
    model[off..off + len].copy_from_slice(&bytes);
    for s in [1, 0] {
        assert_eq!(
            mmap_diff(&maps[s].load(), &model),
            None,
            "mount {s}'s live mapping after mount 2's write"
        );
    }

    // Rounds: mount m stores through its mapping and syncs, mount r reads;
    // then r writes and the mappings of both others load. Offsets and
    // lengths vary, within a page and across pages; each check is of the
    // whole file, so a page written back whole over bytes it held stale
    // is caught too.
    const { assert!(4 + 2 * (ROUNDS - 1) < 251) };
    let mut stale = Vec::new();
    for i in 0..ROUNDS {
        let (m, r) = (i % 3, (i + 1) % 3);
        let off = (i * 1531) % (LEN - 2 * PAGE);
        let len = 1 + (i * 2749) % (2 * PAGE);
        let bytes = mmap_pattern(3 + 2 * i, off, len);
        let how = if i % 2 == 0 {
            maps[m].store(off, &bytes);
            maps[m].sync();
            "msync"
        } else {
            // The original's sequence: stores through a mapping of its
            // own, unmapped and closed with no msync (the close writes
            // the file's dirty pages back).
            let once = Mapping::new(&c.p(m, "f"), LEN);
            once.store(off, &bytes);
            drop(once);
            "close"
        };
        model[off..off + len].copy_from_slice(&bytes);
        if let Some(d) = mmap_diff(&pread(r), &model) {
            stale.push(format!(
                "round {i}: mount {r} read(2) after mount {m}'s mmap stores and {how}: {d}"
            ));
        }
        let off = (i * 2311 + 700) % (LEN - 2 * PAGE);
        let len = 1 + (i * 1877) % (2 * PAGE);
        let bytes = mmap_pattern(4 + 2 * i, off, len);
        files[r].write_all_at(&bytes, off as u64).unwrap();
        model[off..off + len].copy_from_slice(&bytes);
        for s in (0..3).filter(|&s| s != r) {
            if let Some(d) = mmap_diff(&maps[s].load(), &model) {
                stale.push(format!(
                    "round {i}: mount {s}'s mapping after mount {r}'s write(2): {d}"
                ));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{} stale checks in {ROUNDS} rounds, the first:\n{}",
        stale.len(),
        stale[..stale.len().min(20)].join("\n")
    );
    drop(files);
    drop(maps);
    // What every mount reads at last, and a new mapping there loads.
    for s in 0..3 {
        assert_eq!(
            mmap_diff(&read(&c.p(s, "f")), &model),
            None,
            "mount {s} at last"
        );
        let m = Mapping::new(&c.p(s, "f"), LEN);
        assert_eq!(
            mmap_diff(&m.load(), &model),
            None,
            "mount {s}'s new mapping"
        );
    }
    c.finish();
}

/// Stores through a shared mapping on mount 1 that are not written back
/// yet, and a write on mount 2 to other bytes of the same page, fsynced:
/// mount 1's kernel writes the page back whole when its lock goes, after
/// mount 2's write (it needs the WRITE lock mount 2 is taking). The page's
/// other bytes are then older than mount 2's write, so the write-back is
/// refused (EIO, reported to mount 1's msync) rather than undo a write
/// that fsync acknowledged. Mount 1's stores were never acknowledged:
/// each round, they are either all in the file or none of them.
#[test]
fn a_page_written_back_from_a_mapping_never_undoes_another_mounts_write() {
    if !can_mount("a_page_written_back_from_a_mapping_never_undoes_another_mounts_write") {
        return;
    }
    use std::os::unix::fs::FileExt;
    const LEN: usize = 4 * 4096;
    const ROUNDS: usize = 12;
    let c = Cluster::start("cluster-mmap-write-back");
    std::fs::write(c.p(0, "f"), mmap_pattern(0, 0, LEN)).unwrap();
    let f2 = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(c.p(2, "f"))
        .unwrap();
    let f0 = std::fs::File::open(c.p(0, "f")).unwrap();
    let pread = |f: &std::fs::File| {
        let mut b = vec![0u8; LEN];
        f.read_exact_at(&mut b, 0).unwrap();
        b
    };
    let m1 = Mapping::new(&c.p(1, "f"), LEN);
    let (o1, o2) = (4096 + 10, 4096 + 2000);
    let (mut lost, mut torn, mut applied) = (Vec::new(), Vec::new(), 0);
    for i in 0..ROUNDS {
        let before = pread(&f0);
        // A page of a drop given up on goes when the drop's thread gets to
        // it (after the write-back it waited for is answered).
        let deadline = Instant::now() + Duration::from_secs(10);
        while m1.load() != before {
            assert!(
                Instant::now() < deadline,
                "round {i}: mount 1's mapping holds other bytes than the file"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let b1 = mmap_pattern(1 + 2 * i, o1, 20);
        m1.store(o1, &b1);
        let b2 = mmap_pattern(2 + 2 * i, o2, 20);
        f2.write_all_at(&b2, o2 as u64).unwrap();
        f2.sync_all().unwrap();
        // The write-back happens as mount 1's lock goes, and is answered
        // (applied or refused) before the lock comes back.
        std::thread::sleep(Duration::from_millis(300));
        let now = pread(&f0);
        if now[o2..o2 + 20] != b2[..] {
            lost.push(i);
        }
        if now[o1..o1 + 20] == b1[..] {
            applied += 1;
        } else if now[o1..o1 + 20] != before[o1..o1 + 20] {
            torn.push(i);
        }
        assert_eq!(
            pread(&f2),
            now,
            "round {i}: mount 2 reads what mount 0 does"
        );
    }
    // Whatever mount 1's msync says of its last stores, the file is
    // whole.
    // SAFETY: the whole of a live mapping.
    let r = unsafe { libc::msync(m1.addr.cast(), LEN, libc::MS_SYNC) };
    eprintln!(
        "mount 1's stores applied in {applied} of {ROUNDS} rounds; last msync: {}",
        if r == 0 {
            "ok".to_string()
        } else {
            std::io::Error::last_os_error().to_string()
        }
    );
    assert!(
        lost.is_empty(),
        "mount 2's fsynced write undone in rounds {lost:?}"
    );
    assert!(
        torn.is_empty(),
        "mount 1's stores in part in rounds {torn:?}"
    );
    drop(m1);
    drop((f0, f2));
    c.finish();
}

/// Creates files named `prefix`N in the shared directory `pool` (the other
/// worker's creates there make the directory's lock go back and forth, with
/// its cached names dropped each time), writes and fsyncs each, and appends
/// a line to `shared`, until `stop`; records what fsync acknowledged.
fn soak_worker(pool: PathBuf, prefix: String, shared: PathBuf, stop: Arc<AtomicBool>) -> Acked {
    let mut acked = Acked {
        files: Vec::new(),
        errors: Vec::new(),
    };
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let p = pool.join(format!("{prefix}{i}"));
        let body = format!("{prefix} {i}").repeat(1 + i % 5).into_bytes();
        let r = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&p)?;
            f.write_all(&body)?;
            f.sync_all()?;
            let mut f = std::fs::OpenOptions::new().append(true).open(&shared)?;
            f.write_all(format!("{prefix} {i}\n").as_bytes())?;
            // A listing of the shared directory (its names, cached or not).
            let _ = std::fs::read_dir(&pool)?.count();
            Ok(())
        })();
        match r {
            Ok(()) => acked.files.push((p, body)),
            Err(e) => acked.errors.push(format!("{}: {e}", p.display())),
        }
        i += 1;
    }
    acked
}

/// The failover soak (opt-in, `scripts/soak-failover`): SCOUTFS_SOAK_KILLS
/// (default 100) rounds of a cross-mount workload on the two mounts that
/// don't serve, a kill -9 of the one that does, the time until a new
/// server serves, and a check that every acknowledged file is there; the
/// killed mount then rejoins. Prints the failover times' median, p90, p99
/// and max, and fails if p99 reaches 2 s or anything acknowledged is lost.
#[test]
#[ignore]
fn failover_soak() {
    if !can_mount("failover_soak") {
        return;
    }
    let kills: usize = std::env::var("SCOUTFS_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut c = Cluster::start("cluster-soak");
    let mut times = Vec::new();
    let mut acked_total = 0;
    for round in 0..kills {
        let old = c.server_slot().expect("a server is elected");
        let others: Vec<usize> = (0..3).filter(|&s| s != old).collect();
        let pool = format!("pool{round}");
        let shared = format!("shared{round}");
        std::fs::create_dir(c.p(others[0], &pool)).unwrap();
        std::fs::write(c.p(others[0], &shared), b"").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = others
            .iter()
            .map(|&s| {
                let (p, sh, stop) = (c.p(s, &pool), c.p(s, &shared), stop.clone());
                std::thread::spawn(move || soak_worker(p, format!("s{s}-"), sh, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + (round as u64 * 37) % 400));
        let killed = c.mounts[old].take().unwrap();
        let t0 = Instant::now();
        killed.kill9_keep_mount();
        let new = c.wait_new_server(old, Duration::from_secs(60));
        times.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        let results: Vec<Acked> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        for (r, s) in results.iter().zip(&others) {
            assert!(
                r.errors.is_empty(),
                "round {round}: the workload on mount {s} saw {} errors, the first: {:?}\n{}",
                r.errors.len(),
                &r.errors[..r.errors.len().min(5)],
                c.log_tails(80)
            );
        }
        // Every acknowledged file on both survivors, and every append.
        for &view in &others {
            for r in &results {
                for (p, body) in &r.files {
                    let name = p.file_name().unwrap().to_str().unwrap();
                    assert_eq!(&read(&c.p(view, &format!("{pool}/{name}"))), body);
                }
            }
        }
        let lines = read(&c.p(others[1], &shared));
        let total: usize = results.iter().map(|r| r.files.len()).sum();
        assert_eq!(lines.iter().filter(|&&b| b == b'\n').count(), total);
        acked_total += total;
        eprintln!(
            "round {round}: slot {new} serves {:?} after the kill of slot {old}; {total} files acknowledged",
            times[round]
        );
        c.spawn(old);
        c.mounts[old]
            .as_mut()
            .unwrap()
            .wait_mounted(Duration::from_secs(60));
    }
    let mut sorted = times.clone();
    sorted.sort();
    let at =
        |q: f64| sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
    eprintln!(
        "failover soak: {kills} kills, {acked_total} files acknowledged and found; failover median {:?}, p90 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.9),
        at(0.99),
        sorted[sorted.len() - 1]
    );
    assert!(
        at(0.99) < Duration::from_secs(2),
        "failover p99 {:?}",
        at(0.99)
    );
    c.finish();
}

/// Waits (bounded) until `scoutfs df` of `mp` shows at least `want` free
/// data blocks; returns the free blocks.
fn wait_df_free(c: &Cluster, slot: usize, want: u64, limit: Duration, what: &str) -> u64 {
    let env = [("SCOUTFS_RUN_DIR", c.run.as_path())];
    match poll_data_free(c.mp(slot), &env, want, limit) {
        Ok((_, free)) => free,
        Err((_, free)) => panic!(
            "{what}: {free} data blocks free on mount {slot} after {limit:?}, \
             want {want}; logs:\n{}",
            c.log_tails(40)
        ),
    }
}

const MIB: usize = 1 << 20;

/// Blocks of 4 KiB in `mib` MiB.
fn blocks(mib: u64) -> u64 {
    mib * 256
}

#[test]
fn files_written_on_one_mount_and_deleted_on_another_free_their_space() {
    if !can_mount("files_written_on_one_mount_and_deleted_on_another_free_their_space") {
        return;
    }
    let c = Cluster::start("cluster-cross-free");
    let (_, start) = c.df_data(2);
    std::fs::create_dir(c.p(0, "d")).unwrap();
    let buf = vec![0x5au8; MIB];
    for i in 0..32 {
        let mut f = std::fs::File::create(c.p(0, &format!("d/f{i}"))).unwrap();
        f.write_all(&buf).unwrap();
        f.sync_all().unwrap();
    }
    let (_, full) = c.df_data(2);
    assert!(
        full + blocks(32) <= start,
        "32 MiB written: {full} of {start} blocks free"
    );
    for i in 0..32 {
        std::fs::remove_file(c.p(1, &format!("d/f{i}"))).unwrap();
    }
    // Nothing has them open: mount 1 frees each as its kernel forgets it,
    // and the space shows on mount 2 after mount 1's next commits.
    let t = Instant::now();
    let back = wait_df_free(
        &c,
        2,
        start - blocks(1),
        Duration::from_secs(40),
        "deleted on another mount",
    );
    eprintln!(
        "space of 32 MiB deleted on mount 1 back on mount 2 after {:?} ({back} of {start} blocks free)",
        t.elapsed()
    );
    c.finish();
}

#[test]
fn a_file_open_on_one_mount_and_unlinked_on_another_lives_until_closed_or_killed() {
    if !can_mount("a_file_open_on_one_mount_and_unlinked_on_another_lives_until_closed_or_killed") {
        return;
    }
    let mut c = Cluster::start("cluster-open-unlink");
    let server = c.server_slot().expect("a server is elected");
    // The opener is not the server: killing it is not a failover.
    let (a, b, other) = ((server + 1) % 3, (server + 2) % 3, server);
    let (_, start) = c.df_data(other);
    let buf = vec![0xa7u8; MIB];

    // Closed on A.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(c.p(a, "held"))
        .unwrap();
    for _ in 0..16 {
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
    std::fs::remove_file(c.p(b, "held")).unwrap();
    assert!(!exists(&c.p(a, "held")), "the name is gone on A too");
    // A keeps writing and reading through several orphan scans.
    for _ in 0..8 {
        f.write_all(&buf).unwrap();
        f.sync_all().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut back = vec![0u8; MIB];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut back, 20 * MIB as u64).unwrap();
    assert_eq!(back, buf, "A reads what it wrote after the unlink");
    assert_eq!(f.metadata().unwrap().len(), 24 * MIB as u64);
    let (_, held) = c.df_data(other);
    assert!(
        held + blocks(24) <= start,
        "24 MiB still open on A: {held} of {start} blocks free"
    );
    let t = Instant::now();
    drop(f);
    wait_df_free(
        &c,
        other,
        start - blocks(1),
        Duration::from_secs(40),
        "closed on A",
    );
    eprintln!("space back after the close in {:?}", t.elapsed());

    // Killed on A: once A is fenced, an orphan scan on another mount
    // frees it.
    let (_, start) = c.df_data(other);
    let mut f = std::fs::File::create(c.p(a, "held2")).unwrap();
    for _ in 0..16 {
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
    std::fs::remove_file(c.p(b, "held2")).unwrap();
    let (_, held) = c.df_data(other);
    assert!(
        held + blocks(16) <= start,
        "16 MiB still open on A: {held} of {start} blocks free"
    );
    let t = Instant::now();
    let killed = c.mounts[a].take().unwrap();
    killed.kill9_keep_mount();
    drop(f);
    wait_df_free(
        &c,
        other,
        start - blocks(1),
        Duration::from_secs(60),
        "A killed",
    );
    eprintln!("space back after A was killed in {:?}", t.elapsed());
    c.finish();
}

/// Writes files of 1 MiB pieces in `dir` until the device is full; returns
/// the bytes written. Only ENOSPC may end it.
fn fill_dir(dir: &Path) -> u64 {
    let buf = vec![0x42u8; MIB];
    let mut total = 0u64;
    for i in 0.. {
        let p = dir.join(format!("fill{i}"));
        let mut f = match std::fs::File::create(&p) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return total,
            Err(e) => panic!("create {}: {e}", p.display()),
        };
        for _ in 0..8 {
            match f.write_all(&buf) {
                Ok(()) => total += MIB as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return total,
                Err(e) => panic!("write {}: {e}", p.display()),
            }
        }
    }
    total
}

/// Fills the data device from the three mounts at once; returns what each
/// wrote.
fn fill_from_all(c: &Cluster, round: usize) -> Vec<u64> {
    let dirs: Vec<PathBuf> = (0..3)
        .map(|s| {
            let d = c.p(s, &format!("fill{round}-{s}"));
            std::fs::create_dir(&d).unwrap();
            d
        })
        .collect();
    std::thread::scope(|sc| {
        let hs: Vec<_> = dirs.iter().map(|d| sc.spawn(move || fill_dir(d))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Deletes the fill of each mount from the next one.
fn delete_fills(c: &Cluster, round: usize) {
    for s in 0..3 {
        let d = c.p((s + 1) % 3, &format!("fill{round}-{s}"));
        std::fs::remove_dir_all(&d).unwrap_or_else(|e| panic!("rm -r {}: {e}", d.display()));
    }
}

#[test]
fn three_mounts_fill_the_data_device_at_once_and_get_it_all_back() {
    if !can_mount("three_mounts_fill_the_data_device_at_once_and_get_it_all_back") {
        return;
    }
    let c = Cluster::start_sized("cluster-fill", "256M", "256M");
    let (total, start) = c.df_data(0);
    let mut sums = Vec::new();
    for round in 0..2 {
        let wrote = fill_from_all(&c, round);
        let sum: u64 = wrote.iter().sum();
        eprintln!(
            "round {round}: the mounts wrote {wrote:?} bytes, {sum} in all, of {start} free blocks"
        );
        // Every mount got space, and together nearly all of it.
        assert!(wrote.iter().all(|&w| w > 0), "{wrote:?}");
        assert!(
            sum >= start * 4096 * 95 / 100,
            "round {round}: {sum} bytes written of {} free",
            start * 4096
        );
        delete_fills(&c, round);
        let back = wait_df_free(
            &c,
            2,
            start - blocks(1),
            Duration::from_secs(60),
            "deleted fills",
        );
        eprintln!("round {round}: {back} of {total} blocks free again ({start} at the start)");
        sums.push(sum);
    }
    let diff = sums[0].abs_diff(sums[1]);
    assert!(
        diff <= sums[0] / 50,
        "the second fill wrote {} bytes, the first {}",
        sums[1],
        sums[0]
    );
    c.finish();
}

/// The data device grown through one mount is filled from all three at
/// once: the new space is every mount's without a remount.
#[test]
fn the_data_device_grows_on_one_mount_and_all_three_fill_it() {
    if !can_mount("the_data_device_grows_on_one_mount_and_all_three_fill_it") {
        return;
    }
    let c = Cluster::start_sized("cluster-grow", "64M", "64M");
    let env = [("SCOUTFS_RUN_DIR", c.run.as_path())];
    let (total, _) = c.df_data(1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&c.data)
        .unwrap()
        .set_len(192 << 20)
        .unwrap();
    let mp = c.mp(2).to_str().unwrap().to_string();
    let o = scoutfs_env(&["resize-devices", "-p", &mp, "-d", "192M"], &env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for s in 0..3 {
        assert_eq!(c.df_data(s).0, 192 << 8, "slot {s} sees the old size");
    }
    let (_, free) = c.df_data(0);
    let wrote = fill_from_all(&c, 0);
    let sum: u64 = wrote.iter().sum();
    eprintln!(
        "grew from {total} to {} blocks; the mounts wrote {wrote:?}, {sum} bytes",
        192 << 8
    );
    assert!(wrote.iter().all(|&w| w > 0), "{wrote:?}");
    assert!(
        sum >= free * 4096 * 95 / 100,
        "{sum} bytes written of {} free after growing",
        free * 4096
    );
    c.finish();
}

/// Creates and deletes files in `dir` until `stop`: each file is fsynced
/// before it counts as made, and every other one made is deleted again.
/// Returns (files made and kept with their bodies, files deleted).
fn churn(dir: PathBuf, stop: Arc<AtomicBool>) -> (Vec<(PathBuf, Vec<u8>)>, Vec<PathBuf>) {
    let (mut kept, mut gone) = (Vec::new(), Vec::new());
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let p = dir.join(format!("c{i}"));
        let body = format!("{} {i} ", dir.display())
            .repeat(1 + (i * 37) % 2000)
            .into_bytes();
        let mut f = std::fs::File::create(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        f.write_all(&body).unwrap();
        f.sync_all().unwrap();
        drop(f);
        if i % 2 == 1 {
            std::fs::remove_file(&p).unwrap();
            gone.push(p);
        } else {
            kept.push((p, body));
        }
        i += 1;
    }
    (kept, gone)
}

#[test]
fn churn_across_three_mounts_with_a_failover_loses_nothing_and_returns_the_space() {
    if !can_mount("churn_across_three_mounts_with_a_failover_loses_nothing_and_returns_the_space") {
        return;
    }
    let mut c = Cluster::start("cluster-churn");
    let old = c.server_slot().expect("a server is elected");
    let others: Vec<usize> = (0..3).filter(|&s| s != old).collect();
    let watch = others[0];
    let (_, data_start) = c.df_data(watch);
    let meta_start = c.df_meta(watch).used;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = others
        .iter()
        .map(|&s| {
            let dir = c.p(s, &format!("churn{s}"));
            std::fs::create_dir(&dir).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || churn(dir, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let killed = c.mounts[old].take().unwrap();
    killed.kill9_keep_mount();
    c.wait_new_server(old, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    c.spawn(old);
    c.mounts[old]
        .as_mut()
        .unwrap()
        .wait_mounted(Duration::from_secs(30));
    // Nothing acknowledged is lost, and nothing deleted comes back, on any
    // mount.
    let rel = |p: &Path| -> String {
        let s = others
            .iter()
            .find_map(|&s| p.strip_prefix(c.mp(s)).ok())
            .expect("a path of a mount");
        s.to_str().unwrap().to_string()
    };
    let (mut made, mut deleted) = (0, 0);
    for (kept, gone) in &results {
        made += kept.len() + gone.len();
        deleted += gone.len();
        for view in 0..3 {
            for (p, body) in kept {
                assert_eq!(
                    &read(&c.p(view, &rel(p))),
                    body,
                    "{} on mount {view}",
                    p.display()
                );
            }
            for p in gone {
                assert!(
                    !exists(&c.p(view, &rel(p))),
                    "{} came back on mount {view}",
                    p.display()
                );
            }
        }
    }
    assert!(made > 20, "the churn made {made} files");
    // Delete the rest: the space returns to where it started.
    for (kept, _) in &results {
        for (p, _) in kept {
            std::fs::remove_file(c.p(old, &rel(p))).unwrap();
        }
    }
    let t = Instant::now();
    let back = wait_df_free(
        &c,
        watch,
        data_start - blocks(1),
        Duration::from_secs(60),
        "churned files deleted",
    );
    let meta_deadline = Instant::now() + Duration::from_secs(60);
    let mut meta = c.df_meta(watch).used;
    while meta > meta_start + 64 && Instant::now() < meta_deadline {
        std::thread::sleep(Duration::from_millis(500));
        meta = c.df_meta(watch).used;
    }
    eprintln!(
        "churn: {made} files made, {deleted} deleted during it; after deleting the rest: \
         data free {back} blocks (start {data_start}), metadata used {meta} blocks \
         (start {meta_start}), after {:?}",
        t.elapsed()
    );
    assert!(
        meta <= meta_start + 64,
        "metadata used {meta} blocks, {meta_start} at the start"
    );
    c.finish();
}

#[test]
fn released_on_one_mount_read_on_another_listed_and_staged_from_a_third() {
    if !can_mount("released_on_one_mount_read_on_another_listed_and_staged_from_a_third") {
        return;
    }
    let c = Cluster::start("cluster-offline");
    let env = [("SCOUTFS_RUN_DIR", c.run.as_path())];
    let run = |args: &[&str]| {
        let o = common::scoutfs_env(args, &env);
        assert!(
            o.status.success(),
            "scoutfs {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let bytes: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(c.p(0, "f"), &bytes).unwrap();
    let arch = c.dir.path("archive-copy");
    std::fs::write(&arch, &bytes).unwrap();
    let f1 = c.p(1, "f");
    let dv = run(&["stat", f1.to_str().unwrap(), "-s", "data_version"]);
    run(&["release", f1.to_str().unwrap(), "-V", dv.trim()]);
    // Mount 0 follows every mount's waiters.
    let mut follower = std::process::Command::new(bin())
        .args(["data-waiting", "--follow", "--json", "-p"])
        .arg(c.mp(0))
        .env("SCOUTFS_RUN_DIR", &c.run)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map(|f| Killer(Some(f)))
        .unwrap();
    let followed = {
        let out = follower.0.as_mut().unwrap().stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        rx
    };
    // Nothing waits yet: the follower prints nothing until a read does.
    assert!(followed.recv_timeout(Duration::from_millis(500)).is_err());
    // A read on mount 2 waits; mount 0 lists it; mount 1's stage wakes it.
    let reader = {
        let f = c.p(2, "f");
        std::thread::spawn(move || std::fs::read(f))
    };
    let m0 = c.mp(0).to_str().unwrap().to_string();
    let ino = std::fs::metadata(c.p(0, "f")).unwrap().ino();
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let w = run(&["data-waiting", "-p", &m0]);
        if w.contains(&format!("ino {ino} iblock")) {
            break w;
        }
        assert!(Instant::now() < deadline, "mount 0 lists no waiter: {w:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(listed.contains("ops read"), "{listed}");
    // The follower on mount 0 was told as the read on mount 2 began.
    let line = followed
        .recv_timeout(Duration::from_secs(20))
        .expect("the follower printed no waiter");
    assert!(
        line.starts_with(&format!("{{\"ino\":{ino},\"iblock\":")) && line.contains("\"read\""),
        "{line}"
    );
    follower.kill();
    assert!(
        !run(&["data-waiting", "--local", "-p", &m0]).contains(&format!("ino {ino}")),
        "mount 0 itself has no waiter"
    );
    run(&[
        "stage",
        arch.to_str().unwrap(),
        f1.to_str().unwrap(),
        "-V",
        dv.trim(),
    ]);
    assert!(
        reader.join().unwrap().unwrap() == bytes,
        "mount 2 read other bytes"
    );
    // Again; now mount 0 fails mount 2's waiting read.
    run(&["release", f1.to_str().unwrap(), "-V", dv.trim()]);
    let reader = {
        let f = c.p(2, "f");
        std::thread::spawn(move || std::fs::read(f))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run(&["data-waiting", "-p", &m0]).contains(&format!("ino {ino}")) {
        assert!(Instant::now() < deadline, "no waiter listed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ino_s = ino.to_string();
    let failed = run(&[
        "data-wait-err",
        "-I",
        &ino_s,
        "-F",
        "0",
        "-C",
        "3M",
        "-O",
        "read",
        "-E",
        "ENOLINK",
        "-p",
        &m0,
    ]);
    assert!(failed.starts_with("1 "), "{failed}");
    let e = reader.join().unwrap().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOLINK), "{e}");
    run(&[
        "stage",
        arch.to_str().unwrap(),
        c.p(0, "f").to_str().unwrap(),
        "-V",
        dv.trim(),
    ]);
    for s in 0..3 {
        assert!(read(&c.p(s, "f")) == bytes, "mount {s} reads other bytes");
    }
    c.finish();
}

/// Deterministic bytes for a file's version.
fn agent_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What a file's `scoutfs stat` says: (data_version, offline_blocks).
fn agent_stat(c: &Cluster, slot: usize, rel: &str) -> (u64, u64) {
    let o = scoutfs_env(
        &["stat", c.p(slot, rel).to_str().unwrap()],
        &[("SCOUTFS_RUN_DIR", c.run.as_path())],
    );
    assert!(
        o.status.success(),
        "stat {rel}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("stat {rel}: no {name}: {text}"))
    };
    (field("data_version"), field("offline_blocks"))
}

fn start_agent(c: &Cluster, archive: &Path, log: &Path) -> Killer {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    std::process::Command::new(bin())
        .args([
            "archive-agent",
            c.mp(0).to_str().unwrap(),
            archive.to_str().unwrap(),
        ])
        .args(["--settle", "0", "--high", "40", "--low", "25"])
        // Waiters reach it as they come (a listing only at its start).
        .args(["--interval", "200ms", "--poll", "1h"])
        .env("SCOUTFS_RUN_DIR", &c.run)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map(|a| Killer(Some(a)))
        .unwrap()
}

/// The files of the agent's test, by path under the mount: what was last
/// written (acknowledged), and what writes in flight may have left.
#[derive(Default)]
struct AgentModel {
    done: std::collections::BTreeMap<String, Vec<u8>>,
    pending: std::collections::BTreeMap<String, Vec<u8>>,
}

#[test]
fn the_archive_agent_archives_releases_and_stages_across_kill9_rounds() {
    if !can_mount("the_archive_agent_archives_releases_and_stages_across_kill9_rounds") {
        return;
    }
    let c = Arc::new(Cluster::start_sized("cluster-agent", "512M", "128M"));
    let archive = c.dir.path("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let log = c.dir.path("agent.log");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("agent test seed {seed}");
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // The tree: 40 files of 1.5..2.5 MiB in 4 directories, written from
    // every mount: 60..100 MiB of the 128 MiB data device, past the
    // high-water mark (40%) whatever the seed.
    let model = Arc::new(std::sync::Mutex::new(AgentModel::default()));
    for d in 0..4 {
        std::fs::create_dir(c.p(d % 3, &format!("d{d}"))).unwrap();
    }
    for i in 0..40u64 {
        let rel = format!("d{}/f{i}", i % 4);
        let len = (1536 << 10) + next(1 << 20) as usize;
        let bytes = agent_bytes(seed ^ i, len);
        std::fs::write(c.p((i % 3) as usize, &rel), &bytes).unwrap();
        model.lock().unwrap().done.insert(rel, bytes);
    }
    let mut agent = start_agent(&c, &archive, &log);
    let copies = |ino: u64, dv: u64| -> Option<Vec<u8>> {
        let fs_dir = std::fs::read_dir(&archive)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("scoutfs-"))?;
        std::fs::read(
            fs_dir
                .path()
                .join("inodes")
                .join(ino.to_string())
                .join(dv.to_string()),
        )
        .ok()
    };
    let mut max_released = 0;
    let rounds = 24;
    for round in 0..rounds {
        // Readers and writers on every mount, of different files; a read
        // of a released file waits for the agent, dead or alive.
        let names: Vec<String> = model.lock().unwrap().done.keys().cloned().collect();
        let mut picked = std::collections::BTreeSet::new();
        let mut workers = Vec::new();
        for w in 0..5 {
            let rel = names[next(names.len() as u64) as usize].clone();
            if !picked.insert(rel.clone()) {
                continue;
            }
            let slot = next(3) as usize;
            let (c, model) = (c.clone(), model.clone());
            let writes = w >= 3;
            let new = agent_bytes(
                seed ^ (round * 100 + w),
                (64 << 10) + next(3 << 20) as usize,
            );
            workers.push(std::thread::spawn(move || {
                let p = c.p(slot, &rel);
                if writes {
                    model
                        .lock()
                        .unwrap()
                        .pending
                        .insert(rel.clone(), new.clone());
                    std::fs::write(&p, &new).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    let mut m = model.lock().unwrap();
                    m.pending.remove(&rel);
                    m.done.insert(rel, new);
                } else {
                    let want = model.lock().unwrap().done[&rel].clone();
                    assert!(
                        read(&p) == want,
                        "round {round}: {rel} on mount {slot} reads other bytes"
                    );
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(100 + next(1400)));
        agent.kill();
        // No file is released without a copy of its bytes at its version.
        let (done, pending) = {
            let m = model.lock().unwrap();
            (m.done.clone(), m.pending.clone())
        };
        let mut released = 0;
        for (rel, bytes) in &done {
            let (dv, offline) = agent_stat(&c, 0, rel);
            if offline == 0 {
                continue;
            }
            released += 1;
            let ino = std::fs::metadata(c.p(0, rel)).unwrap().ino();
            let copy = copies(ino, dv).unwrap_or_else(|| {
                panic!("round {round}: {rel} released at version {dv} without a copy")
            });
            assert!(
                &copy == bytes || pending.get(rel) == Some(&copy),
                "round {round}: {rel}'s copy at version {dv} is not its bytes"
            );
        }
        max_released = max_released.max(released);
        agent = start_agent(&c, &archive, &log);
        for w in workers {
            w.join().unwrap();
        }
    }
    // Every file archived at its last version, then read on every mount.
    let done = model.lock().unwrap().done.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    for rel in done.keys() {
        let ino = std::fs::metadata(c.p(0, rel)).unwrap().ino();
        while copies(ino, agent_stat(&c, 0, rel).0).is_none() {
            assert!(
                Instant::now() < deadline,
                "{rel} is not archived; agent log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for (rel, bytes) in &done {
        for slot in 0..3 {
            assert!(
                &read(&c.p(slot, rel)) == bytes,
                "{rel} on mount {slot} reads other bytes"
            );
        }
    }
    agent.kill();
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!(
        "agent: {max_released} files released at most at once; {} archived, {} released, {} staged",
        text.matches(" archived").count(),
        text.matches(" released").count(),
        text.matches(" staged").count()
    );
    assert!(max_released > 0, "the agent released nothing; log:\n{text}");
    assert!(
        text.contains(" staged"),
        "the agent staged nothing; log:\n{text}"
    );
    Arc::try_unwrap(c).ok().expect("workers are done").finish();
}
