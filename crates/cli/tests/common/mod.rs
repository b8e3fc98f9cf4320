//! Helpers for tests that run `scoutfs` processes and real FUSE mounts.
//! Every mount is unmounted and every process killed (by pid) on drop, on
//! every path, so a failing test leaves nothing behind.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_scoutfs")
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "scoutfs-test-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SCOUTFS_TEST_KEEP=1 keeps the images of a failed run to look at.
        if std::env::var_os("SCOUTFS_TEST_KEEP").is_some() && std::thread::panicking() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether this machine can run FUSE mounts (root and /dev/fuse). Tests
/// that need them say so when they skip.
pub fn can_mount(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    if !(root && fuse) {
        eprintln!("SKIPPED {test}: needs root and /dev/fuse (root={root}, /dev/fuse={fuse})");
    }
    root && fuse
}

/// Makes a filesystem on two new image files in `dir`, with one quorum
/// slot on a free loopback port.
pub fn mkfs(dir: &Scratch) -> (PathBuf, PathBuf) {
    mkfs_slots(dir, 1)
}

/// A loopback port free for both TCP and UDP now (a quorum slot uses
/// both). Chosen below Linux's ephemeral range (32768 and up), so the
/// kernel does not hand it to an outgoing connection before the mount
/// binds it; at random, so tests running at once rarely pick the same.
pub fn free_port() -> u16 {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ (std::process::id() << 16);
    loop {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let port = 20_000 + (x % 12_000) as u16;
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if udp.is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Makes a filesystem on two new image files in `dir`, with `slots`
/// quorum slots (0..slots) on free loopback ports.
pub fn mkfs_slots(dir: &Scratch, slots: usize) -> (PathBuf, PathBuf) {
    mkfs_slots_sized(dir, slots, "512M", "2G")
}

/// [`mkfs_slots`] with devices of the given sizes (`mkfs -m`, `-d`).
pub fn mkfs_slots_sized(dir: &Scratch, slots: usize, meta: &str, data: &str) -> (PathBuf, PathBuf) {
    let (m, d) = (dir.path("meta.img"), dir.path("data.img"));
    let mut args: Vec<String> = vec![
        "mkfs".into(),
        m.to_str().unwrap().into(),
        d.to_str().unwrap().into(),
        "-m".into(),
        meta.into(),
        "-d".into(),
        data.into(),
    ];
    for slot in 0..slots {
        args.push("-Q".into());
        args.push(format!("{slot},127.0.0.1,{}", free_port()));
    }
    let o = Command::new(bin()).args(&args).output().unwrap();
    assert!(
        o.status.success(),
        "mkfs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (m, d)
}

pub fn is_mounted(mp: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = mp.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(want))
}

/// Lazily unmounts `mp` if something is mounted there.
pub fn force_unmount(mp: &Path) {
    if is_mounted(mp) {
        let c = std::ffi::CString::new(mp.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string path.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// A running `scoutfs mount` process.
pub struct MountProc {
    pub child: Option<Child>,
    pub mp: PathBuf,
    /// Where its stderr goes, if not to a pipe.
    pub log: Option<PathBuf>,
}

impl MountProc {
    /// Starts `scoutfs mount` as the member of quorum slot 0 (unless
    /// `extra` names a slot) and waits (bounded) for the mount to appear.
    pub fn start(meta: &Path, data: &Path, mp: &Path, extra: &[&str]) -> MountProc {
        MountProc::start_env(meta, data, mp, extra, &[])
    }

    /// [`MountProc::start`] with more environment variables for the mount.
    pub fn start_env(
        meta: &Path,
        data: &Path,
        mp: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> MountProc {
        let mut all: Vec<&str> = extra.to_vec();
        if !extra.contains(&"--quorum-slot") {
            all.extend_from_slice(&["--quorum-slot", "0"]);
        }
        MountProc::start_exact(meta, data, mp, &all, env)
    }

    /// Starts `scoutfs mount` with exactly these extra arguments (no slot
    /// added: without `--quorum-slot` the mount is a client).
    pub fn start_exact(
        meta: &Path,
        data: &Path,
        mp: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> MountProc {
        let mut m = MountProc::spawn(meta, data, mp, extra, env, None);
        m.wait_mounted(Duration::from_secs(20));
        m
    }

    /// Starts `scoutfs mount` without waiting for the mount (the members of
    /// a quorum must all start before any can be elected). Its stderr goes
    /// to `log` if given, else to a pipe read when it fails.
    pub fn spawn(
        meta: &Path,
        data: &Path,
        mp: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
        log: Option<&Path>,
    ) -> MountProc {
        std::fs::create_dir_all(mp).unwrap();
        let mp = std::fs::canonicalize(mp).unwrap();
        let mut args = vec![
            "mount",
            "--meta",
            meta.to_str().unwrap(),
            data.to_str().unwrap(),
            mp.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let stderr = match log {
            Some(p) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .unwrap(),
            ),
            None => Stdio::piped(),
        };
        let child = Command::new(bin())
            .args(&args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        MountProc {
            child: Some(child),
            mp,
            log: log.map(Path::to_path_buf),
        }
    }

    /// Waits (at most `limit`) for the mount to appear; panics with the
    /// mount's error if it exits first.
    pub fn wait_mounted(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !is_mounted(&self.mp) {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                if let Some(mut e) = self.child.as_mut().unwrap().stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                if let Some(l) = &self.log {
                    err = std::fs::read_to_string(l).unwrap_or_default();
                }
                panic!("scoutfs mount exited with {st}: {err}");
            }
            assert!(
                Instant::now() < deadline,
                "mount {} did not appear within {limit:?}",
                self.mp.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Unmounts with umount(8) and waits (bounded) for a clean exit.
    pub fn unmount(mut self) {
        self.begin_unmount();
        self.wait_exit(Duration::from_secs(30));
    }

    /// Unmounts with umount(8), which returns once the kernel has detached
    /// the mount; the process then says farewell and exits. A mount is
    /// busy for as long as any process's call on it lasts (another
    /// program's `df` or `statfs` of every mount, say): that is retried for
    /// up to 5 s. Busy for longer, something holds it, and the failure
    /// names the processes whose files or directories are in it.
    pub fn begin_unmount(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let o = Command::new("umount").arg(&self.mp).output().unwrap();
            if o.status.success() {
                return;
            }
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            if !err.contains("busy") || Instant::now() >= deadline {
                panic!("umount: {err}holding it: {:?}", holders(&self.mp));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most `limit`) for the process to exit, and asserts that
    /// it exited cleanly.
    pub fn wait_exit(mut self, limit: Duration) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                assert!(st.success(), "scoutfs mount exited with {st}: {err}");
                return;
            }
            if Instant::now() >= deadline {
                // Ask for its lock state (SIGUSR1) before ending it, and
                // report that with the rest of its log.
                // SAFETY: signalling our own child process, still unreaped.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGUSR1);
                }
                std::thread::sleep(Duration::from_secs(1));
                let _ = child.kill();
                let _ = child.wait();
                let log = self
                    .log
                    .as_ref()
                    .and_then(|l| std::fs::read_to_string(l).ok())
                    .unwrap_or_default();
                panic!(
                    "scoutfs mount of {} did not exit within {limit:?} of umount; its log:\n{log}",
                    self.mp.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9, leaving the dead mount for a fence agent to detach (the
    /// caller must make sure it goes, e.g. with [`force_unmount`]).
    pub fn kill9_keep_mount(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Nothing left to drop but the path: skip the unmount of drop.
        self.mp = PathBuf::new();
    }

    /// kill -9, then clear the dead mount.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        force_unmount(&self.mp);
    }
}

impl Drop for MountProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            force_unmount(&self.mp);
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.mp.as_os_str().is_empty() {
            force_unmount(&self.mp);
        }
    }
}

/// What a tree holds: path -> description (type, mode, size, content or
/// target, xattrs). Times are left out.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut ents: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    ents.sort_by_key(|e| e.file_name());
    for e in ents {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let desc = if ft.is_dir() {
            walk(root, &p, out);
            format!("dir {:o} nlink {}", md.mode() & 0o7777, md.nlink())
        } else if ft.is_symlink() {
            format!("symlink {}", std::fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            let data = std::fs::read(&p).unwrap();
            format!(
                "file {:o} size {} nlink {} sum {:016x}",
                md.mode() & 0o7777,
                md.len(),
                md.nlink(),
                fnv(&data)
            )
        } else if ft.is_fifo() {
            format!("fifo {:o}", md.mode() & 0o7777)
        } else {
            format!("other {:o} rdev {}", md.mode(), md.rdev())
        };
        out.insert(rel, desc);
    }
}

pub fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// `scoutfs check`, asserting it is clean.
pub fn assert_check_clean(meta: &Path, data: &Path) {
    let o = Command::new(bin())
        .args(["check", meta.to_str().unwrap(), data.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "check: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The processes with a working directory, root or open file under `mp`
/// (pid, command, path), from /proc.
pub fn holders(mp: &Path) -> Vec<(u32, String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        let mut links: Vec<PathBuf> = ["cwd", "root"].iter().map(|l| p.path().join(l)).collect();
        if let Ok(fds) = std::fs::read_dir(p.path().join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        for l in links {
            if let Ok(t) = std::fs::read_link(&l) {
                if t.starts_with(mp) {
                    out.push((pid, comm.trim().to_string(), t));
                }
            }
        }
    }
    out
}

/// Runs the `scoutfs` binary with `args`; fails the test if it panicked
/// (a panic is never an acceptable answer to any input).
pub fn scoutfs(args: &[&str]) -> std::process::Output {
    scoutfs_env(args, &[])
}

/// [`scoutfs`] with environment variables set.
pub fn scoutfs_env(args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scoutfs"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run scoutfs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "scoutfs {args:?} panicked: {stderr}"
    );
    assert_ne!(out.status.code(), Some(101), "scoutfs {args:?} panicked");
    out
}

/// `scoutfs df --json` of a mount: (data total, data free) in blocks.
pub fn df_data(mp: &Path) -> (u64, u64) {
    df_data_env(mp, &[])
}

/// [`df_data`] with environment variables set (a mount's run directory).
pub fn df_data_env(mp: &Path, env: &[(&str, &Path)]) -> (u64, u64) {
    let r = df_row(mp, env, "data");
    (r.total, r.free)
}

/// Polls `scoutfs df` of `mp` until at least `want` data blocks are free
/// (the space of deleted files returns within a commit or two), for up to
/// `limit`: (total, free) once they are, or as last seen when time ran
/// out.
pub fn poll_data_free(
    mp: &Path,
    env: &[(&str, &Path)],
    want: u64,
    limit: std::time::Duration,
) -> Result<(u64, u64), (u64, u64)> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let (total, free) = df_data_env(mp, env);
        if free >= want {
            return Ok((total, free));
        }
        if std::time::Instant::now() >= deadline {
            return Err((total, free));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// One row of `scoutfs df --json`, in blocks of its size.
#[derive(Clone, Copy, Debug)]
pub struct DfRow {
    pub total: u64,
    pub used: u64,
    pub free: u64,
}

/// The `row` ("meta" or "data") of `scoutfs df --json` of a mount.
pub fn df_row(mp: &Path, env: &[(&str, &Path)], row: &str) -> DfRow {
    let o = scoutfs_env(&["df", "--json", "-p", mp.to_str().unwrap()], env);
    assert!(
        o.status.success(),
        "df: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let at = out
        .find(&format!("\"{row}\":{{"))
        .unwrap_or_else(|| panic!("no {row} row in {out}"));
    let fields = &out[at..at + out[at..].find('}').expect("a closed row")];
    let n = |k: &str| -> u64 {
        let key = format!("\"{k}\":");
        let from = fields
            .find(&key)
            .unwrap_or_else(|| panic!("df {row}.{k}: {out}"))
            + key.len();
        let digits: String = fields[from..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().unwrap()
    };
    DfRow {
        total: n("total"),
        used: n("used"),
        free: n("free"),
    }
}

/// A child process killed (by pid) and reaped on drop, on every path: a
/// test that fails leaves no helper (an archive agent, a follower) running
/// with files of a mount open.
pub struct Killer(pub Option<Child>);

impl Killer {
    /// Kills it (SIGKILL) and reaps it now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
