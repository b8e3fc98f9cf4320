//! Real FUSE mounts through ordinary syscalls: a workload, unmount,
//! remount, the same tree and contents, and a clean `scoutfs check`; and
//! kill -9 of the mount process at random moments, after which the tree is
//! the state of some commit no older than the last acknowledged fsync, and
//! every file extended after it reads zeros past its old end.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn workload(m: &Path) {
    std::fs::create_dir_all(m.join("a/b/c")).unwrap();
    for i in 0..50 {
        std::fs::write(m.join(format!("a/f{i}")), vec![i as u8; i * 1000]).unwrap();
    }
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(m.join("a/b/big"), &big).unwrap();
    std::os::unix::fs::symlink("../f1", m.join("a/b/link")).unwrap();
    std::fs::hard_link(m.join("a/f2"), m.join("a/b/c/hard")).unwrap();
    std::fs::rename(m.join("a/f3"), m.join("a/b/c/moved")).unwrap();
    std::fs::remove_file(m.join("a/f4")).unwrap();
    std::fs::set_permissions(m.join("a/f5"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("a/f6"))
        .unwrap();
    f.set_len(100_000).unwrap();
    drop(f);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("a/f7"))
        .unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    std::fs::create_dir(m.join("empty")).unwrap();
    std::fs::remove_dir(m.join("empty")).unwrap();
}

#[test]
fn workload_unmount_remount_same_tree() {
    if !can_mount("workload_unmount_remount_same_tree") {
        return;
    }
    let dir = Scratch::new("real");
    let (meta, data) = mkfs(&dir);
    let mp = dir.path("mnt");
    let m = MountProc::start(&meta, &data, &mp, &[]);
    workload(&m.mp);
    let before = snapshot(&m.mp);
    assert!(before.len() > 50);
    m.unmount();
    assert_check_clean(&meta, &data);
    let m = MountProc::start(&meta, &data, &mp, &[]);
    let after = snapshot(&m.mp);
    assert_eq!(before, after, "the tree after remount");
    m.unmount();
    assert_check_clean(&meta, &data);
}

/// One step of the crash workload, each a single change (one syscall, or
/// one small write and its fsync); `i` numbers it. Returns whether the
/// step was an acknowledged fsync.
fn crash_op(m: &Path, i: usize) -> std::io::Result<bool> {
    let d = m.join(format!("d{}", i % 4));
    let ignore_missing = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        r => r.map(|_| false),
    };
    match i % 8 {
        0 | 1 => std::fs::File::create(d.join(format!("f{i}"))).map(|_| false),
        2 => {
            // One page, so the kernel sends it as one write.
            let p = m.join(format!("d{}/f{}", (i - 1) % 4, i - 1));
            let mut f = std::fs::OpenOptions::new().write(true).open(p)?;
            f.write_all(&vec![(i % 256) as u8; 1000 + (i * 37) % 3000])?;
            f.sync_all()?;
            Ok(true)
        }
        3 => std::fs::File::create(d.join(format!("e{i}"))).map(|_| false),
        4 => ignore_missing(std::fs::rename(
            m.join(format!("d{}/e{}", (i - 1) % 4, i - 1)),
            d.join(format!("r{i}")),
        )),
        5 => ignore_missing(std::fs::remove_file(m.join(format!(
            "d{}/r{}",
            (i - 1) % 4,
            i - 1
        )))),
        6 => std::os::unix::fs::symlink(format!("f{i}"), d.join(format!("s{i}"))).map(|_| false),
        _ => {
            // Past the end of the file fsynced at op i - 5, not synced: a
            // crash may leave these bytes past the committed end.
            let p = m.join(format!("d{}/f{}", (i - 6) % 4, i - 6));
            let f = std::fs::OpenOptions::new().append(true).open(p)?;
            (&f).write_all(&[0xee; 3000])?;
            Ok(false)
        }
    }
}

/// Extends every regular file of the tree by a block and checks that what
/// lies past its old end reads as zeros, whatever a crash left on the
/// device there.
fn extend_reads_zeros(root: &Path, round: usize) {
    for n in 0..4 {
        for e in std::fs::read_dir(root.join(format!("d{n}"))).unwrap() {
            let e = e.unwrap();
            if !e.file_type().unwrap().is_file() {
                continue;
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(e.path())
                .unwrap();
            let size = f.metadata().unwrap().len();
            f.set_len(size + 4096).unwrap();
            let got = std::fs::read(e.path()).unwrap();
            let stale = got[size as usize..].iter().filter(|&&c| c != 0).count();
            assert_eq!(
                stale,
                0,
                "round {round}: {} extended from {size} shows old bytes",
                e.path().display()
            );
        }
    }
}

/// The workload's directories, made and synced before a round starts.
fn crash_dirs(m: &Path) {
    for n in 0..4 {
        std::fs::create_dir_all(m.join(format!("d{n}"))).unwrap();
    }
    std::fs::File::open(m).unwrap().sync_all().unwrap();
}

#[test]
fn kill9_recovers_a_commit_no_older_than_the_last_fsync() {
    if !can_mount("kill9_recovers_a_commit_no_older_than_the_last_fsync") {
        return;
    }
    const ROUNDS: usize = 40;
    let dir = Scratch::new("crash");
    let (meta, data) = mkfs(&dir);
    let mp = dir.path("mnt");
    let mut seed = 0x5eed_u64;
    let mut total_ops = 0;
    for round in 0..ROUNDS {
        // The expected state after each op, replayed on a plain directory.
        let m = MountProc::start(&meta, &data, &mp, &["--commit-interval-ms", "50"]);
        crash_dirs(&m.mp);
        let start = snapshot(&m.mp);
        let model = dir.path(&format!("model{round}"));
        std::fs::create_dir_all(&model).unwrap();
        copy_tree(&m.mp, &model);
        let done = Arc::new(AtomicUsize::new(0));
        let synced = Arc::new(AtomicUsize::new(0));
        let (d2, s2, root) = (done.clone(), synced.clone(), m.mp.clone());
        let worker = std::thread::spawn(move || {
            for i in 1..100_000 {
                match crash_op(&root, i) {
                    Ok(fsynced) => {
                        d2.store(i, Ordering::SeqCst);
                        if fsynced {
                            s2.store(i, Ordering::SeqCst);
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(100 + (seed >> 33) % 400));
        m.kill9();
        worker.join().unwrap();
        let (done, synced) = (done.load(Ordering::SeqCst), synced.load(Ordering::SeqCst));
        total_ops += done;
        let m = MountProc::start(&meta, &data, &mp, &[]);
        let got = snapshot(&m.mp);
        // Replay ops on the model until it matches, starting at the last
        // acknowledged fsync; the op in flight may or may not have landed.
        let mut states = Vec::new();
        for i in 1..=done + 1 {
            let _ = crash_op(&model, i);
            if i >= synced {
                states.push((i, snapshot(&model)));
            }
        }
        let matched = (synced == 0 && got == start) || states.iter().any(|(_, s)| *s == got);
        assert!(
            matched,
            "round {round}: after kill -9 at op {done} (last fsync at {synced}) the tree is no committed state: {:?}",
            diff(&states.last().map(|s| s.1.clone()).unwrap_or_default(), &got)
        );
        extend_reads_zeros(&m.mp, round);
        m.unmount();
        assert_check_clean(&meta, &data);
        std::fs::remove_dir_all(&model).unwrap();
    }
    assert!(
        total_ops > ROUNDS * 5,
        "the workload ran only {total_ops} ops"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = std::fs::symlink_metadata(&src).unwrap().file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&src, &dst);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn diff(want: &BTreeMap<String, String>, got: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in want {
        if got.get(k) != Some(v) {
            out.push(format!("{k}: want {v}, got {:?}", got.get(k)));
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("{k}: unexpected"));
    }
    out.truncate(10);
    out
}

#[test]
fn mount_refuses_bad_devices_and_mountpoints_clearly() {
    if !can_mount("mount_refuses_bad_devices_and_mountpoints_clearly") {
        return;
    }
    let dir = Scratch::new("mount-errors");
    let (meta, data) = mkfs(&dir);
    let other = Scratch::new("mount-errors-other");
    let (_meta2, data2) = mkfs(&other);
    let mp = dir.path("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    let empty = dir.path("empty.img");
    std::fs::write(&empty, vec![0u8; 1 << 20]).unwrap();
    // Every mount here is the member of slot 0: one that got past its
    // checks would serve (and never exit) instead of failing.
    let run = |m: &Path, d: &Path, p: &Path| {
        let o = std::process::Command::new(bin())
            .args([
                "mount",
                "--meta",
                m.to_str().unwrap(),
                d.to_str().unwrap(),
                p.to_str().unwrap(),
                "--quorum-slot",
                "0",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!text.contains("panicked"), "{text}");
        (o.status.success(), text)
    };
    for (m, d, p, want) in [
        (
            dir.path("missing.img"),
            data.clone(),
            mp.clone(),
            "missing.img",
        ),
        (
            empty.clone(),
            data.clone(),
            mp.clone(),
            "no scoutfs super block",
        ),
        (
            meta.clone(),
            data2.clone(),
            mp.clone(),
            "another filesystem",
        ),
        (meta.clone(), data.clone(), dir.path("nodir"), "nodir"),
        (meta.clone(), data.clone(), meta.clone(), "not a directory"),
    ] {
        let (ok, text) = run(&m, &d, &p);
        assert!(!ok, "mount {m:?} {d:?} {p:?} should fail");
        assert!(text.contains(want), "expected '{want}' in: {text}");
    }
    // A busy mountpoint: something is mounted there already.
    let m = MountProc::start(&meta, &data, &mp, &[]);
    let (ok, text) = run(&meta, &data, &mp);
    assert!(!ok && text.contains("busy"), "{text}");
    // A second mount in the slot of a running one.
    let mp2 = dir.path("mnt2");
    std::fs::create_dir_all(&mp2).unwrap();
    let (ok, text) = run(&meta, &data, &mp2);
    assert!(
        !ok && text.contains("is another mount using this slot?"),
        "{text}"
    );
    m.unmount();
    assert_check_clean(&meta, &data);
}

fn acl_bytes(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn has_xattr(p: &Path, name: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let r = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    r > 0
}

/// Appends to `p` as `uid`: whether the kernel allowed it.
fn append_as(uid: u32, p: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh")
        .arg("-c")
        .arg("echo more >> \"$0\"")
        .arg(p)
        .uid(uid)
        .gid(uid)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A directory's default ACL is inherited by what is made in it (the
/// umask ignored, as on a local filesystem), the kernel enforces the
/// inherited ACL, chmod rewrites it, and it survives a remount.
#[test]
fn inherited_default_acls_are_enforced_and_kept() {
    if !can_mount("inherited_default_acls_are_enforced_and_kept") {
        return;
    }
    const X: u32 = u32::MAX;
    let dir = Scratch::new("acl");
    let (meta, data) = mkfs(&dir);
    let mp = dir.path("mnt");
    let m = MountProc::start(&meta, &data, &mp, &[]);
    let d = m.mp.join("shared");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    // owner rwx, user 4242 rwx, group r-x, mask rwx, other ---
    let default = acl_bytes(&[
        (1, 7, X),
        (2, 7, 4242),
        (4, 5, X),
        (0x10, 7, X),
        (0x20, 0, X),
    ]);
    set_xattr(&d, "system.posix_acl_default", &default);

    let f = d.join("f");
    std::fs::write(&f, b"start\n").unwrap();
    let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o660,
        "0666 masked by the inherited ACL, not the umask"
    );
    assert!(has_xattr(&f, "system.posix_acl_access"));
    assert!(
        !has_xattr(&f, "system.posix_acl_default"),
        "files get no default"
    );
    assert!(
        append_as(4242, &f),
        "the named user may write through the ACL"
    );
    assert!(!append_as(4343, &f), "others may not");

    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let mode = std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o770);
    assert!(
        has_xattr(&sub, "system.posix_acl_default"),
        "directories inherit it"
    );
    std::fs::write(sub.join("g"), b"x").unwrap();
    assert!(append_as(4242, &sub.join("g")), "and pass it on");

    // chmod rewrites the mask: the named user loses write.
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(
        !append_as(4242, &f),
        "chmod 640 masks the named user's write"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o660)).unwrap();
    assert!(append_as(4242, &f));
    m.unmount();
    assert_check_clean(&meta, &data);

    let m = MountProc::start(&meta, &data, &mp, &[]);
    let f = m.mp.join("shared/f");
    assert!(has_xattr(&f, "system.posix_acl_access"));
    assert!(append_as(4242, &f), "the ACL survives a remount");
    assert!(!append_as(4343, &f));
    assert_eq!(
        std::fs::read(&f).unwrap(),
        b"start\nmore\nmore\nmore\n".to_vec()
    );
    m.unmount();
    assert_check_clean(&meta, &data);
}

fn atime_of(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().accessed().unwrap()
}

fn mtime_of(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

/// Through the kernel: relatime by default (a read after a change updates
/// the atime, stat sees it at once, a second read leaves it; O_NOATIME
/// reads never touch it), and `--atime noatime` leaves atimes alone.
#[test]
fn reads_update_atimes_by_the_mount_option() {
    use std::os::unix::fs::OpenOptionsExt;
    if !can_mount("reads_update_atimes_by_the_mount_option") {
        return;
    }
    let dir = Scratch::new("atime");
    let (meta, data) = mkfs(&dir);
    let mp = dir.path("mnt");
    let m = MountProc::start(&meta, &data, &mp, &[]);
    let f = m.mp.join("f");
    std::fs::write(&f, b"contents").unwrap();
    // Written and read back through the page cache in one open.
    assert!(atime_of(&f) <= mtime_of(&f));
    // Read with O_NOATIME: no change.
    let mut buf = Vec::new();
    let mut h = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(&f)
        .unwrap();
    std::io::Read::read_to_end(&mut h, &mut buf).unwrap();
    drop(h);
    assert!(atime_of(&f) <= mtime_of(&f), "O_NOATIME leaves it");
    assert_eq!(std::fs::read(&f).unwrap(), b"contents");
    let read_at = atime_of(&f);
    assert!(read_at > mtime_of(&f), "the first read after a change");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::read(&f).unwrap();
    assert_eq!(atime_of(&f), read_at, "relatime: once per change");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"!")
        .unwrap();
    std::fs::read(&f).unwrap();
    assert!(
        atime_of(&f) > mtime_of(&f),
        "read again after the next change"
    );
    // Directories: a listing is an access.
    let d = m.mp.join("d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("x"), b"").unwrap();
    std::fs::read_dir(&d).unwrap().count();
    assert!(atime_of(&d) > mtime_of(&d));
    m.unmount();

    let m = MountProc::start(&meta, &data, &mp, &["--atime", "noatime"]);
    let f = m.mp.join("f");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"?")
        .unwrap();
    let before = atime_of(&f);
    std::fs::read(&f).unwrap();
    assert_eq!(atime_of(&f), before, "noatime");
    assert!(before < mtime_of(&f));
    m.unmount();
    assert_check_clean(&meta, &data);
}

/// Runs `f` in a child process as `uid`:`gid` with no other groups and no
/// capabilities; its result is the child's exit status (0 or an errno).
/// `f` makes only system calls (a forked child of a threaded process may
/// do nothing else).
fn as_user(uid: u32, gid: u32, f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child makes only system calls and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let ok = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(gid) == 0
                && libc::setuid(uid) == 0;
            libc::_exit(if ok { f() } else { 127 });
        }
        let mut st = 0;
        assert_eq!(libc::waitpid(pid, &mut st, 0), pid);
        assert!(libc::WIFEXITED(st), "child status {st}");
        libc::WEXITSTATUS(st)
    }
}

/// An errno as an exit status (0 for success).
fn status(r: libc::c_int) -> i32 {
    if r == 0 {
        0
    } else {
        // SAFETY: reading errno right after the call.
        unsafe { *libc::__errno_location() }
    }
}

fn cpath(p: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// Regressions from xfstests: times before 1970 (generic/258) read back as
/// set, also after a remount; setgid is cleared by chmod and by an access
/// ACL from a caller outside the file's group (generic/375), setuid and
/// setgid by fallocate and hole punching from an unprivileged caller
/// (generic/683, 684); device nodes open on root's mount (generic/184).
#[test]
fn times_before_1970_setgid_rules_and_device_nodes() {
    use std::os::unix::fs::MetadataExt;
    if !can_mount("times_before_1970_setgid_rules_and_device_nodes") {
        return;
    }
    let dir = Scratch::new("posix-edges");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (meta, data) = mkfs(&dir);
    let mp = dir.path("mnt");
    let m = MountProc::start(&meta, &data, &mp, &[]);
    std::fs::set_permissions(&m.mp, std::fs::Permissions::from_mode(0o777)).unwrap();

    // A time before 1970, with nanoseconds.
    let old = m.mp.join("old");
    std::fs::write(&old, b"x").unwrap();
    let ts = [
        libc::timespec {
            tv_sec: -100_000_000,
            tv_nsec: 250_000_000,
        },
        libc::timespec {
            tv_sec: -1,
            tv_nsec: 999_999_999,
        },
    ];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, cpath(&old).as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat: {}", std::io::Error::last_os_error());
    let times = |p: &Path| {
        let md = std::fs::metadata(p).unwrap();
        (md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec())
    };
    assert_eq!(times(&old), (-100_000_000, 250_000_000, -1, 999_999_999));

    // chmod by the owner from outside the file's group clears setgid.
    let (uid, gid, other) = (4242, 4242, 4343);
    let f = m.mp.join("f");
    std::fs::write(&f, b"data").unwrap();
    std::os::unix::fs::chown(&f, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o2755)).unwrap();
    let c = cpath(&f);
    // SAFETY (each closure): system calls on a valid C string.
    assert_eq!(
        as_user(uid, gid, || status(unsafe {
            libc::chmod(c.as_ptr(), 0o2775)
        })),
        0
    );
    assert_eq!(mode_of(&f), 0o2775, "a member keeps setgid");
    assert_eq!(
        as_user(uid, other, || status(unsafe {
            libc::chmod(c.as_ptr(), 0o2777)
        })),
        0
    );
    assert_eq!(mode_of(&f), 0o777, "chmod from outside the group");

    // An access ACL that sets the mode, from outside the group.
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o2755)).unwrap();
    let acl = acl_bytes(&[
        (0x01, 7, u32::MAX),
        (0x04, 7, u32::MAX),
        (0x20, 7, u32::MAX),
    ]);
    let name = std::ffi::CString::new("system.posix_acl_access").unwrap();
    let set_acl = || {
        // SAFETY: valid C strings and a buffer of the given length.
        status(unsafe {
            libc::setxattr(c.as_ptr(), name.as_ptr(), acl.as_ptr().cast(), acl.len(), 0)
        })
    };
    assert_eq!(as_user(uid, other, set_acl), 0);
    assert_eq!(mode_of(&f), 0o777, "an ACL from outside the group");

    // fallocate and a hole punch by an unprivileged caller.
    let falloc = |mode: i32| {
        // SAFETY: system calls on a valid C string; the fd is closed.
        unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return 126;
            }
            let r = status(libc::fallocate(fd, mode, 0, 8192));
            libc::close(fd);
            r
        }
    };
    for (what, mode) in [
        ("fallocate", 0),
        (
            "punch",
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        ),
    ] {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o6775)).unwrap();
        assert_eq!(as_user(uid, gid, || falloc(mode)), 0, "{what}");
        assert_eq!(
            mode_of(&f),
            0o775,
            "{what} by the owner clears setuid and setgid"
        );
        // Without group execute, setgid stays.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o6764)).unwrap();
        assert_eq!(as_user(uid, gid, || falloc(mode)), 0, "{what}");
        assert_eq!(
            mode_of(&f),
            0o2764,
            "{what}: setgid without group execute stays"
        );
        // Root keeps both.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o6775)).unwrap();
        assert_eq!(falloc(mode), 0);
        assert_eq!(mode_of(&f), 0o6775, "{what} by root");
    }

    // A device node works as on a local filesystem (/dev/null's numbers).
    let null = m.mp.join("null");
    let cn = cpath(&null);
    // SAFETY: a valid C string.
    let r = unsafe { libc::mknod(cn.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(r, 0, "mknod: {}", std::io::Error::last_os_error());
    std::fs::write(&null, b"into nothing").expect("writing a device node");
    assert_eq!(std::fs::read(&null).unwrap(), b"");

    m.unmount();
    let m = MountProc::start(&meta, &data, &mp, &["--nodev"]);
    let old = m.mp.join("old");
    assert_eq!(times(&old), (-100_000_000, 250_000_000, -1, 999_999_999));
    let e = std::fs::write(m.mp.join("null"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "--nodev: {e}");
    m.unmount();
    assert_check_clean(&meta, &data);
}

/// Regression: bytes written past a file's committed end that never
/// committed (the mount was killed) stayed on the device, and showed
/// through when the file was extended after remount. Three ways to extend:
/// truncate, fallocate, and a write past the next block.
#[test]
fn an_extension_after_a_crash_reads_zeros() {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    if !can_mount("an_extension_after_a_crash_reads_zeros") {
        return;
    }
    let dir = Scratch::new("crash-extend");
    let (meta, data) = mkfs(&dir);
    let mp = dir.path("mnt");
    let ways = ["truncate", "fallocate", "write"];
    // No commit of its own between the fsync and the kill.
    let m = MountProc::start(&meta, &data, &mp, &["--commit-interval-ms", "3600000"]);
    let files: Vec<std::fs::File> = ways
        .iter()
        .map(|w| std::fs::File::create(m.mp.join(w)).unwrap())
        .collect();
    for f in &files {
        f.write_all_at(&[b'a'; 100], 0).unwrap();
    }
    files[0].sync_all().unwrap();
    for f in &files {
        f.write_all_at(&[b'b'; 3000], 100).unwrap();
    }
    m.kill9();
    let m = MountProc::start(&meta, &data, &mp, &[]);
    for w in ways {
        let p = m.mp.join(w);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        assert_eq!(f.metadata().unwrap().len(), 100, "{w}: the committed size");
        let size = match w {
            "truncate" => {
                f.set_len(4096).unwrap();
                4096
            }
            "fallocate" => {
                // SAFETY: fallocate on an open descriptor.
                let r = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, 4096) };
                assert_eq!(
                    r,
                    0,
                    "posix_fallocate: {}",
                    std::io::Error::from_raw_os_error(r)
                );
                4096
            }
            _ => {
                f.write_all_at(b"z", 5000).unwrap();
                5001
            }
        };
        f.sync_all().unwrap();
        let got = std::fs::read(&p).unwrap();
        assert_eq!(got.len(), size);
        assert!(
            got[..100].iter().all(|&c| c == b'a'),
            "{w}: the acknowledged bytes"
        );
        let stale = got[100..4096].iter().filter(|&&c| c != 0).count();
        assert_eq!(
            stale, 0,
            "{w}: bytes past the committed end must read as zeros"
        );
    }
    m.unmount();
    assert_check_clean(&meta, &data);
}

/// A filesystem of format version 1 (before the cluster key) still mounts
/// and works: its members authenticate with a key of zeros, say so, and
/// it stays version 1. (The image is made by this version's mkfs and
/// rewritten as version 1 wrote its super blocks: the key's bytes were
/// the zero tail of the block then.)
#[test]
fn a_format_version_1_filesystem_mounts_without_a_cluster_key() {
    use scoutfs_core::store::commit::{read_super, write_super};
    use scoutfs_core::store::dev::{BlockDev, FileDev};
    if !can_mount("a_format_version_1_filesystem_mounts_without_a_cluster_key") {
        return;
    }
    let dir = Scratch::new("v1-image");
    let (meta, data) = mkfs(&dir);
    for (path, is_meta) in [(&meta, true), (&data, false)] {
        let dev = FileDev::open(path, true).unwrap();
        let mut sb = read_super(&dev, is_meta).unwrap();
        assert_eq!(sb.fmt_vers.get(), 2);
        assert_eq!(
            sb.has_cluster_key(),
            is_meta,
            "only the metadata device holds the key"
        );
        sb.fmt_vers = 1.into();
        sb.cluster_key = [0; 32];
        let seq = sb.hdr.seq.get();
        write_super(&dev, &mut sb, seq).unwrap();
        dev.flush().unwrap();
    }
    let printed = scoutfs(&["print", meta.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(
        text.contains("cluster key none (format version 1"),
        "{text}"
    );
    let mp = dir.path("mnt");
    let log = dir.path("mount.log");
    let mut m = MountProc::spawn(&meta, &data, &mp, &["--quorum-slot", "0"], &[], Some(&log));
    m.wait_mounted(Duration::from_secs(20));
    std::fs::write(m.mp.join("f"), b"version 1").unwrap();
    m.unmount();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("has no cluster key"), "{said}");
    let m = MountProc::start(&meta, &data, &mp, &[]);
    assert_eq!(std::fs::read(m.mp.join("f")).unwrap(), b"version 1");
    m.unmount();
    let sb = read_super(&FileDev::open(&meta, false).unwrap(), true).unwrap();
    assert_eq!((sb.fmt_vers.get(), sb.has_cluster_key()), (1, false));
    assert_check_clean(&meta, &data);
}

/// The kernel's AIO `iocb` (x86_64 and other little-endian layouts).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    data: u64,
    key: u32,
    rw_flags: i32,
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}

/// The kernel's AIO completion event.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// Regression (xfstests generic/451): after an asynchronous O_DIRECT write
/// completed, a buffered read could return the bytes from before it: a
/// read racing the write put them in the page cache, and the kernel's
/// asynchronous direct I/O path never dropped them. Buffered reads race
/// each write here; the read after each completion must see it.
#[test]
fn a_buffered_read_after_an_aio_direct_write_sees_it() {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;
    if !can_mount("a_buffered_read_after_an_aio_direct_write_sees_it") {
        return;
    }
    const LEN: usize = 64 << 10;
    let dir = Scratch::new("aio-dio");
    let (meta, data) = mkfs(&dir);
    let mp = dir.path("mnt");
    let m = MountProc::start(&meta, &data, &mp, &[]);
    let path = m.mp.join("f");
    std::fs::write(&path, vec![0u8; LEN]).unwrap();
    let dio = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let layout = std::alloc::Layout::from_size_align(LEN, 4096).unwrap();
    // SAFETY: a non-zero size; freed below with the same layout.
    let buf = unsafe { std::alloc::alloc(layout) };
    assert!(!buf.is_null());
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup with a pointer to our context.
    let r = unsafe { libc::syscall(libc::SYS_io_setup, 8, &mut ctx) };
    assert_eq!(r, 0, "io_setup: {}", std::io::Error::last_os_error());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p2, s2) = (path.clone(), stop.clone());
    let racer = std::thread::spawn(move || {
        let f = std::fs::File::open(&p2).unwrap();
        let mut b = vec![0u8; LEN];
        while !s2.load(Ordering::Relaxed) {
            f.read_exact_at(&mut b, 0).unwrap();
        }
    });
    let reader = std::fs::File::open(&path).unwrap();
    let mut stale = Vec::new();
    for round in 1..=200u32 {
        let v = (round % 250) as u8 + 1;
        // SAFETY: `buf` holds LEN bytes.
        unsafe { std::ptr::write_bytes(buf, v, LEN) };
        let mut cb = Iocb {
            opcode: 1, // IOCB_CMD_PWRITE
            fildes: dio.as_raw_fd() as u32,
            buf: buf as u64,
            nbytes: LEN as u64,
            ..Default::default()
        };
        let mut cbp: *mut Iocb = &mut cb;
        // SAFETY: one valid iocb whose buffer lives until its completion.
        let r = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, &mut cbp) };
        assert_eq!(r, 1, "io_submit: {}", std::io::Error::last_os_error());
        let mut ev = [IoEvent::default(); 1];
        // SAFETY: room for one event; no timeout.
        let r =
            unsafe { libc::syscall(libc::SYS_io_getevents, ctx, 1, 1, ev.as_mut_ptr(), 0usize) };
        assert_eq!(r, 1, "io_getevents: {}", std::io::Error::last_os_error());
        assert_eq!(ev[0].res, LEN as i64, "the direct write");
        let mut got = vec![0u8; LEN];
        reader.read_exact_at(&mut got, 0).unwrap();
        let old = got.iter().filter(|&&c| c != v).count();
        if old > 0 {
            stale.push((round, old));
        }
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    // SAFETY: our context and allocation, no longer used.
    unsafe {
        libc::syscall(libc::SYS_io_destroy, ctx);
        std::alloc::dealloc(buf, layout);
    }
    assert!(
        stale.is_empty(),
        "buffered reads after a completed AIO direct write saw old bytes (round, bytes): {stale:?}"
    );
    drop((dio, reader));
    m.unmount();
    assert_check_clean(&meta, &data);
}

/// A file handle (`name_to_handle_at`) as bytes: `handle_bytes` u32,
/// `handle_type` i32, then the handle.
fn handle_of(p: &Path) -> Vec<u8> {
    let mut h = vec![0u8; 8 + 128];
    h[..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id = 0;
    let c = cpath(p);
    // SAFETY: a valid C string and a handle buffer of the size it says.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            h.as_mut_ptr().cast(),
            &mut mount_id,
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "name_to_handle_at {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    h
}

/// Opens a file handle on the mount of `mount_fd`: the descriptor, or the
/// errno.
fn open_handle(mount_fd: &std::fs::File, h: &[u8], flags: i32) -> Result<std::fs::File, i32> {
    use std::os::unix::io::{AsRawFd, FromRawFd};
    let mut h = h.to_vec();
    // SAFETY: a handle buffer as name_to_handle_at filled it.
    let fd = unsafe { libc::open_by_handle_at(mount_fd.as_raw_fd(), h.as_mut_ptr().cast(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: a descriptor the kernel just gave us.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Regression (xfstests generic/426, 477): file handles of files and
/// directories open after the kernel has forgotten their inodes (here, a
/// remount), which is what NFS re-export needs; a deleted file's handle is
/// stale.
#[test]
fn file_handles_open_after_a_remount() {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    if !can_mount("file_handles_open_after_a_remount") {
        return;
    }
    let dir = Scratch::new("handles");
    let (meta, data) = mkfs(&dir);
    let mp = dir.path("mnt");
    let m = MountProc::start(&meta, &data, &mp, &[]);
    std::fs::create_dir_all(m.mp.join("d/e")).unwrap();
    std::fs::write(m.mp.join("d/e/f"), b"contents").unwrap();
    std::fs::write(m.mp.join("d/gone"), b"x").unwrap();
    let ino_f = std::fs::metadata(m.mp.join("d/e/f")).unwrap().ino();
    let ino_e = std::fs::metadata(m.mp.join("d/e")).unwrap().ino();
    let (hf, he, hg) = (
        handle_of(&m.mp.join("d/e/f")),
        handle_of(&m.mp.join("d/e")),
        handle_of(&m.mp.join("d/gone")),
    );
    std::fs::remove_file(m.mp.join("d/gone")).unwrap();
    m.unmount();
    let m = MountProc::start(&meta, &data, &mp, &[]);
    let root = std::fs::File::open(&m.mp).unwrap();
    let mut f = open_handle(&root, &hf, libc::O_RDONLY).expect("the file's handle");
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(
        (s.as_str(), f.metadata().unwrap().ino()),
        ("contents", ino_f)
    );
    let e = open_handle(&root, &he, libc::O_RDONLY | libc::O_DIRECTORY).expect("the dir's handle");
    let md = e.metadata().unwrap();
    assert!(md.is_dir() && md.ino() == ino_e);
    assert_eq!(
        open_handle(&root, &hg, libc::O_RDONLY).err(),
        Some(libc::ESTALE)
    );
    drop((f, e, root));
    m.unmount();
    assert_check_clean(&meta, &data);
}

/// A mount of an image whose allocator block is corrupt fails at once with
/// the cause (the block, its checksum), not with a bare errno, nor after
/// the 30 s wait for a server that will never answer. Two blocks: the free
/// extent tree's root (read when the mount asks for its log tree) and the
/// server's first allocator list block (read when the server records the
/// mount, before it answers the greeting).
#[test]
fn a_corrupt_allocator_block_is_named_when_the_mount_fails() {
    use scoutfs_core::store::commit::read_super;
    use scoutfs_core::store::dev::{BlockDev, FileDev};
    if !can_mount("a_corrupt_allocator_block_is_named_when_the_mount_fails") {
        return;
    }
    for which in ["meta_alloc", "server_meta_avail"] {
        let dir = Scratch::new("corrupt-alloc");
        let (meta, data) = mkfs(&dir);
        let dev = FileDev::open(&meta, true).unwrap();
        let sb = read_super(&dev, true).unwrap();
        let blkno = match which {
            "meta_alloc" => sb.meta_alloc[0].root.blk.blkno.get(),
            _ => sb.server_meta_avail[0].first.blkno.get(),
        };
        assert!(blkno > 0, "mkfs leaves a {which} block");
        // One byte in the middle of the block: its crc no longer matches.
        let at = blkno * 65536 + 30_000;
        let mut b = [0u8; 1];
        dev.read_at(&mut b, at).unwrap();
        dev.write_at(&[b[0] ^ 0x5a], at).unwrap();
        dev.flush().unwrap();
        let mp = dir.path("mnt");
        std::fs::create_dir_all(&mp).unwrap();
        let t0 = std::time::Instant::now();
        let o = scoutfs(&[
            "mount",
            "--meta",
            meta.to_str().unwrap(),
            data.to_str().unwrap(),
            mp.to_str().unwrap(),
            "--quorum-slot",
            "0",
        ]);
        let took = t0.elapsed();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{which}: a mount of a corrupt image: {err}"
        );
        assert!(!is_mounted(&mp));
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.contains(&format!("block {blkno} ")) && last.contains("SC_BLOCK_CRC"),
            "{which}: the final error names the block and its crc:\n{err}"
        );
        assert!(
            took < Duration::from_secs(20),
            "{which}: failed after {took:?}:\n{err}"
        );
    }
}

/// A full data device: the writer sees ENOSPC ("No space left on device"),
/// as the server or the mount's allocator said it, never EINVAL; and the
/// unmount's final commit does not report "Invalid argument".
#[test]
fn a_full_data_device_reports_enospc_to_the_writer() {
    if !can_mount("a_full_data_device_reports_enospc_to_the_writer") {
        return;
    }
    let dir = Scratch::new("enospc");
    let (meta, data) = common::mkfs_slots_sized(&dir, 1, "64M", "64M");
    let mp = dir.path("mnt");
    let log = dir.path("mount.log");
    let mut m = MountProc::spawn(&meta, &data, &mp, &["--quorum-slot", "0"], &[], Some(&log));
    m.wait_mounted(Duration::from_secs(20));
    let start = common::df_data(&m.mp);
    let file = m.mp.join("fill");
    let o = dd_128m(&file);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "dd wrote 128 MiB to a 64 MiB device: {err}"
    );
    assert!(err.contains("No space left on device"), "dd: {err}");
    let len = std::fs::metadata(&file).unwrap().len();
    assert!(len >= 32 << 20, "dd stopped at {len} bytes");
    // A second writer on the full device sees ENOSPC too.
    let e = std::fs::write(m.mp.join("more"), vec![1u8; 1 << 20])
        .and_then(|_| std::fs::File::open(m.mp.join("more")).and_then(|f| f.sync_all()));
    let e = e.expect_err("a write to a full device succeeded");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    // Deleting on a full device works, and the space comes back: on
    // `scoutfs df` and on statfs of the mountpoint.
    std::fs::remove_file(&file).unwrap();
    let _ = std::fs::remove_file(m.mp.join("more"));
    let empty = wait_data_free(&m.mp, start.1 - 16);
    // Filled again, to the same size.
    let o = dd_128m(&file);
    assert!(!o.status.success(), "dd wrote 128 MiB to a 64 MiB device");
    let len2 = std::fs::metadata(&file).unwrap().len();
    assert!(
        len2.abs_diff(len) <= 2 << 20,
        "the second fill wrote {len2} bytes, the first {len}"
    );
    // Full, it unmounts cleanly and mounts again, and is emptied.
    m.unmount();
    common::assert_check_clean(&meta, &data);
    let mut m = MountProc::spawn(&meta, &data, &mp, &["--quorum-slot", "0"], &[], Some(&log));
    m.wait_mounted(Duration::from_secs(20));
    std::fs::remove_file(m.mp.join("fill")).unwrap();
    let after = wait_data_free(&m.mp, start.1 - 16);
    assert_eq!(after.0, empty.0);
    m.unmount();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("Invalid argument"), "the mount's log: {log}");
    assert!(!log.contains("commit failed"), "the mount's log: {log}");
    common::assert_check_clean(&meta, &data);
}

/// Writes 128 MiB of zeros to `file` with dd (conv=fsync).
fn dd_128m(file: &Path) -> std::process::Output {
    std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", "count=128", "conv=fsync"])
        .output()
        .unwrap()
}

/// Waits until `scoutfs df` shows at least `want` data blocks free (the
/// space of deleted files returns within a commit or two), and statfs
/// of the mountpoint agrees; returns (total, free).
fn wait_data_free(mp: &Path, want: u64) -> (u64, u64) {
    let (total, free) = common::poll_data_free(mp, &[], want, Duration::from_secs(30))
        .unwrap_or_else(|(total, free)| {
            panic!("deleted space did not come back: {free} of {total} data blocks free")
        });
    let st = nix_statvfs(mp);
    assert_eq!(st.0, total, "statfs blocks");
    assert!(st.1 >= want, "statfs free blocks {} of {total}", st.1);
    (total, free)
}

/// statvfs of a path: (blocks, free blocks).
fn nix_statvfs(p: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a struct statvfs to fill.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(r, 0, "statvfs {}", p.display());
    (st.f_blocks, st.f_bfree)
}

/// `scoutfs resize-devices` grows both devices of a mounted filesystem
/// while a workload writes and deletes files on it: shrinking and growing
/// past a device's end are refused with their reason, the new space shows
/// at once in `df`, `statfs` and statfs(2), it fills, and the grown
/// filesystem checks clean and mounts again.
#[test]
fn the_devices_grow_while_mounted_and_the_new_space_fills() {
    if !can_mount("the_devices_grow_while_mounted_and_the_new_space_fills") {
        return;
    }
    let dir = Scratch::new("grow");
    let (meta, data) = common::mkfs_slots_sized(&dir, 1, "64M", "64M");
    let mp = dir.path("mnt");
    let log = dir.path("mount.log");
    let mut m = MountProc::spawn(&meta, &data, &mp, &["--quorum-slot", "0"], &[], Some(&log));
    m.wait_mounted(Duration::from_secs(20));
    let p = m.mp.to_str().unwrap().to_string();
    let resize = |args: &[&str]| {
        let mut all = vec!["resize-devices", "-p", &p];
        all.extend_from_slice(args);
        common::scoutfs(&all)
    };

    // A workload of 1 MiB files written, synced and deleted, throughout.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wdir = m.mp.join("w");
    std::fs::create_dir(&wdir).unwrap();
    let worker = {
        let stop = stop.clone();
        let wdir = wdir.clone();
        std::thread::spawn(move || {
            let buf = vec![0x3cu8; 1 << 20];
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let f = wdir.join(format!("f{}", n % 16));
                let mut file = std::fs::File::create(&f).unwrap();
                file.write_all(&buf).unwrap();
                file.sync_all().unwrap();
                assert_eq!(
                    std::fs::read(&f).unwrap(),
                    buf,
                    "{} read back wrong",
                    f.display()
                );
                if n.is_multiple_of(3) {
                    std::fs::remove_file(&f).unwrap();
                }
                n += 1;
            }
            n
        })
    };

    let o = resize(&["-d", "32M"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("shrinking"), "{err}");
    let o = resize(&["-d", "128M"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("grow the device first"),
        "{err}"
    );
    let o = resize(&["-d", "64M", "-m", "0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("unchanged"));

    for (img, size) in [(&meta, 96u64 << 20), (&data, 128 << 20)] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(img)
            .unwrap()
            .set_len(size)
            .unwrap();
    }
    let o = resize(&["-m", "96M", "-d", "128M"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("data: grew from 16384 to 32768 blocks"),
        "{out}"
    );
    assert!(
        out.contains("metadata: grew from 1024 to 1536 blocks"),
        "{out}"
    );
    let o = common::scoutfs(&["statfs", "-p", &p, "-s", "total_data_blocks"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "32768");
    assert_eq!(common::df_row(&m.mp, &[], "meta").total, 1536);
    assert_eq!(
        nix_statvfs(&m.mp).0,
        32768,
        "statfs(2) blocks after growing"
    );

    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let rounds = worker
        .join()
        .expect("the workload failed while the devices grew");
    assert!(rounds > 4, "the workload ran only {rounds} rounds");

    // The new space fills: more than the old device held.
    std::fs::remove_dir_all(&wdir).unwrap();
    let file = m.mp.join("fill");
    let o = dd_128m(&file);
    assert!(
        !o.status.success(),
        "dd wrote 128 MiB to a 128 MiB device with metadata"
    );
    let len = std::fs::metadata(&file).unwrap().len();
    eprintln!("grow: {rounds} workload rounds; filled {len} bytes after growing to 128 MiB");
    assert!(len > 96 << 20, "only {len} bytes filled the grown device");
    m.unmount();
    common::assert_check_clean(&meta, &data);
    let mut m = MountProc::spawn(&meta, &data, &mp, &["--quorum-slot", "0"], &[], Some(&log));
    m.wait_mounted(Duration::from_secs(20));
    assert_eq!(std::fs::metadata(m.mp.join("fill")).unwrap().len(), len);
    m.unmount();
    common::assert_check_clean(&meta, &data);
}
