use super::*;
use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let d = std::env::temp_dir().join(format!(
            "scoutfs-fence-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child we start and always end (by its pid, through `Child`).
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("30")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn record(fsid: u64, rid: u64, pid: u32, mp: &Path) -> LocalRecord {
    LocalRecord {
        fsid,
        rid: Rid(rid),
        pid,
        start_time: proc_identity(pid).unwrap().unwrap().start_time,
        boot_id: boot_id().unwrap(),
        mountpoint: mp.to_path_buf(),
        fuse_dev: None,
        helper: None,
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_record_round_trips_with_any_mountpoint() {
    let odd = OsString::from_vec(b"/mnt/a b\\c\nd\te\xff\x7f".to_vec());
    let r = LocalRecord {
        fsid: 0x0123_4567_89ab_cdef,
        rid: Rid(u64::MAX),
        pid: 4_000_000,
        start_time: 123_456_789,
        boot_id: "6e0f6c1c-1f5a-4f0e-9a3b-0d6f0e5b7c11".into(),
        mountpoint: PathBuf::from(odd),
        fuse_dev: Some("0:57".into()),
        helper: Some((77, 12345)),
    };
    let b = r.encode();
    assert_eq!(b.iter().filter(|&&c| c == b'\n').count(), 9);
    assert_eq!(LocalRecord::decode(&b), Ok(r));
}

#[test]
fn bad_records_are_refused_by_name() {
    let r = record(1, 2, std::process::id(), Path::new("/mnt/x"));
    let good = String::from_utf8(r.encode()).unwrap();
    let cases = [
        (
            good.replacen("scoutfs fence record 1", "hello", 1),
            "not a record",
        ),
        (good.replacen("pid ", "pid x", 1), "'pid' is not a number"),
        (good.replacen("rid ", "rid g", 1), "'rid' is not hex"),
        (
            good.replacen("boot_id", "color", 1),
            "unknown field 'color'",
        ),
        (good.clone() + "pid 7\n", "'pid' appears twice"),
        (
            good.clone() + "fuse_dev 0-5\n",
            "'fuse_dev' is not MAJOR:MINOR",
        ),
        (
            good.replacen("mountpoint /mnt/x", "", 1),
            "'mountpoint' is missing",
        ),
        (good.replacen("/mnt/x", "/mnt/\\9", 1), "bad escape"),
        (good.replacen("/mnt/x", "/mnt/\\77", 1), "bad escape"),
        (good.replacen("/mnt/x", "/mnt/\\777", 1), "bad escape"),
        (good.replacen("pid ", "pid 99999999999", 1), "too large"),
    ];
    for (text, want) in cases {
        let e = LocalRecord::decode(text.as_bytes()).unwrap_err();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = LocalRecord::decode(&b);
        let _ = unescape(&b);
        let _ = parse_stat(&b);
        let _ = parse_mountinfo(&b, b"/mnt");
    }

    #[test]
    fn escaping_round_trips(b in proptest::collection::vec(any::<u8>(), 0..100)) {
        let e = escape(&b);
        prop_assert!(!e.contains(&b'\n') && !e.contains(&b' '));
        prop_assert_eq!(unescape(&e), Some(b));
    }
}

#[test]
fn stat_fields_are_found_after_an_odd_command_name() {
    // Fields 3 to 5 here, 6 to 21 in the loop, then 22.
    let mut line = b"1234 (a) b) (c d) S 1 1234".to_vec();
    for f in 6..=21 {
        line.extend(format!(" {f}").as_bytes());
    }
    line.extend(b" 987654 23 24\n");
    let id = parse_stat(&line).unwrap();
    assert_eq!((id.state, id.start_time), (b'S', 987_654));
    assert_eq!(parse_stat(b"1 (x) S 1 2 3"), None);
}

#[test]
fn this_process_is_seen_and_a_free_pid_is_not() {
    let id = proc_identity(std::process::id()).unwrap().unwrap();
    assert!(
        matches!(id.state, b'R' | b'S'),
        "state {}",
        id.state as char
    );
    assert!(id.start_time > 0);
    // Above the largest pid_max Linux allows (2^22).
    assert_eq!(proc_identity(0x7fff_fff0).unwrap(), None);
}

#[test]
fn records_are_written_found_and_removed() {
    let d = Dir::new("records");
    let dir = d.0.join("run");
    let me = LocalRecord::for_this_process(0xf5, Rid(0xabc), Path::new("/mnt/s")).unwrap();
    let p = me.write(&dir).unwrap();
    assert_eq!(p, dir.join("f.00000000000000f5.r.0000000000000abc"));
    let mode = std::fs::metadata(&p).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(
        LocalRecord::find(&dir, Rid(0xabc), None).unwrap(),
        Some((p.clone(), me.clone()))
    );
    assert_eq!(
        LocalRecord::find(&dir, Rid(0xabc), Some(0xf5)).unwrap(),
        Some((p.clone(), me.clone()))
    );
    assert_eq!(
        LocalRecord::find(&dir, Rid(0xabc), Some(0xf6)).unwrap(),
        None
    );
    assert_eq!(LocalRecord::find(&dir, Rid(0xabd), None).unwrap(), None);
    assert_eq!(me.gone_reason().unwrap(), None);
    // The same rid in another filesystem: only the fsid can choose.
    let other = LocalRecord {
        fsid: 0xf6,
        ..me.clone()
    };
    other.write(&dir).unwrap();
    let e = LocalRecord::find(&dir, Rid(0xabc), None).unwrap_err();
    assert!(e.to_string().contains("SCOUTFS_FENCE_FSID"), "{e}");
    assert_eq!(
        LocalRecord::find(&dir, Rid(0xabc), Some(0xf6))
            .unwrap()
            .unwrap()
            .1,
        other
    );
    LocalRecord::remove(&dir, 0xf5, Rid(0xabc)).unwrap();
    LocalRecord::remove(&dir, 0xf5, Rid(0xabc)).unwrap();
    assert!(!p.exists());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        [OsString::from("f.00000000000000f6.r.0000000000000abc")]
    );
    assert_eq!(
        LocalRecord::find(&d.0.join("missing"), Rid(1), None).unwrap(),
        None
    );
}

#[test]
fn untrusted_records_are_not_read() {
    let d = Dir::new("trust");
    let me = LocalRecord::for_this_process(1, Rid(2), Path::new("/mnt/s")).unwrap();
    let p = me.write(&d.0).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = LocalRecord::find(&d.0, Rid(2), None).unwrap_err();
    assert!(e.to_string().contains("writable by others"), "{e}");
    // A symlink is not followed, even to a good record.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let real = d.0.join("real");
    std::fs::rename(&p, &real).unwrap();
    std::os::unix::fs::symlink(&real, &p).unwrap();
    assert!(LocalRecord::find(&d.0, Rid(2), Some(1)).is_err());
    // A record under another rid's name.
    std::fs::remove_file(&p).unwrap();
    std::fs::rename(&real, d.0.join(LocalRecord::file_name(1, Rid(3)))).unwrap();
    let e = LocalRecord::find(&d.0, Rid(3), None).unwrap_err();
    assert!(e.to_string().contains("not what its name says"), "{e}");
}

#[test]
fn no_record_is_already_fenced() {
    let d = Dir::new("none");
    let out = fence_local(&d.0, Rid(9), None, WAIT).unwrap();
    assert_eq!(out, LocalFenceOutcome::NoRecord);
    let out = fence_local(&d.0.join("missing"), Rid(9), Some(1), WAIT).unwrap();
    assert_eq!(out, LocalFenceOutcome::NoRecord);
}

#[test]
fn a_recycled_pid_is_not_killed() {
    // The record names this very process with another start time: the
    // process it meant is gone and this one must survive.
    let d = Dir::new("recycled");
    let mut r = LocalRecord::for_this_process(1, Rid(5), Path::new("/nonexistent")).unwrap();
    r.start_time += 1;
    let p = r.write(&d.0).unwrap();
    let out = fence_local(&d.0, Rid(5), None, WAIT).unwrap();
    let LocalFenceOutcome::Gone { why, left, .. } = out else {
        panic!("{out:?}");
    };
    assert!(why.contains("now names another process"), "{why}");
    assert_eq!(left, None);
    assert!(!p.exists());
    assert!(proc_identity(std::process::id()).unwrap().is_some());
}

#[test]
fn a_record_of_an_earlier_boot_is_gone() {
    let d = Dir::new("boot");
    let mut r = LocalRecord::for_this_process(1, Rid(6), Path::new("/nonexistent")).unwrap();
    r.boot_id = "00000000-0000-0000-0000-000000000000".into();
    r.write(&d.0).unwrap();
    let out = fence_local(&d.0, Rid(6), None, WAIT).unwrap();
    assert!(
        matches!(&out, LocalFenceOutcome::Gone { why, .. } if why.contains("restarted")),
        "{out:?}"
    );
}

#[test]
fn a_process_that_exited_is_gone() {
    let d = Dir::new("exited");
    let mut c = Command::new("true").spawn().unwrap();
    let r = record(1, 7, c.id(), Path::new("/nonexistent"));
    c.wait().unwrap();
    r.write(&d.0).unwrap();
    let out = fence_local(&d.0, Rid(7), None, WAIT).unwrap();
    assert!(matches!(out, LocalFenceOutcome::Gone { .. }), "{out:?}");
}

#[test]
fn the_agent_does_not_fence_itself() {
    let d = Dir::new("self");
    let r = LocalRecord::for_this_process(1, Rid(8), Path::new("/nonexistent")).unwrap();
    let p = r.write(&d.0).unwrap();
    let e = fence_local(&d.0, Rid(8), None, WAIT).unwrap_err();
    assert!(e.to_string().contains("does not fence itself"), "{e}");
    assert!(p.exists());
}

#[test]
fn a_recorded_process_is_killed_and_its_record_removed() {
    let d = Dir::new("kill");
    let mp = d.0.join("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    let mut s = Sleeper::start();
    let r = record(0xf, 0x10, s.0.id(), &mp);
    let p = r.write(&d.0).unwrap();
    let out = fence_local(&d.0, Rid(0x10), Some(0xf), WAIT).unwrap();
    assert_eq!(
        out,
        LocalFenceOutcome::Killed {
            record: r,
            detached: false,
            left: None
        }
    );
    let st = s.0.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    assert!(!p.exists());
    assert!(mp.is_dir());
    // Again: the record is gone, so it is fenced already.
    let out = fence_local(&d.0, Rid(0x10), Some(0xf), WAIT).unwrap();
    assert_eq!(out, LocalFenceOutcome::NoRecord);
}

#[test]
fn a_killed_process_that_is_not_reaped_yet_counts_as_exited() {
    // The sleeper stays our unreaped child (a zombie) after the kill; its
    // parent need not reap it for the fence to finish.
    let d = Dir::new("zombie");
    let s = Sleeper::start();
    record(1, 0x11, s.0.id(), Path::new("/nonexistent"))
        .write(&d.0)
        .unwrap();
    let out = fence_local(&d.0, Rid(0x11), None, WAIT).unwrap();
    assert!(matches!(out, LocalFenceOutcome::Killed { .. }), "{out:?}");
    let id = proc_identity(s.0.id()).unwrap().unwrap();
    assert_eq!(id.state, b'Z');
}

#[test]
fn without_a_pidfd_the_kill_and_exit_are_seen_through_proc() {
    // Kernels before 5.3 have no pidfds: the kill goes by pid right after
    // the start-time check, and the exit is read from /proc (a zombie
    // counts as exited).
    let mut s = Sleeper::start();
    let r = record(1, 0x12, s.0.id(), Path::new("/nonexistent"));
    let v = Victim {
        pid: r.pid,
        pidfd: None,
    };
    v.kill().unwrap();
    v.wait_exit(WAIT, &r).unwrap();
    assert_eq!(proc_identity(r.pid).unwrap().unwrap().state, b'Z');
    assert_eq!(s.0.wait().unwrap().signal(), Some(libc::SIGKILL));
    // Killing what has exited and been reaped is not an error.
    v.kill().unwrap();
}

#[test]
fn a_process_that_ignores_sigkill_too_long_fails_the_fence() {
    // A process cannot ignore SIGKILL; a zero wait stands in for one stuck
    // in the kernel. The record and the mount are left as they are.
    let d = Dir::new("stuck");
    let s = Sleeper::start();
    let p = record(1, 0x13, s.0.id(), Path::new("/nonexistent"))
        .write(&d.0)
        .unwrap();
    let v = Victim {
        pid: s.0.id(),
        pidfd: None,
    };
    let r = LocalRecord::read(&p).unwrap();
    let e = v.wait_exit(Duration::ZERO, &r).unwrap_err();
    assert!(e.to_string().contains("did not exit"), "{e}");
    assert!(p.exists());
}

#[test]
fn stale_records_are_swept_and_live_ones_kept() {
    let d = Dir::new("sweep");
    let me = LocalRecord::for_this_process(1, Rid(1), Path::new("/m")).unwrap();
    me.write(&d.0).unwrap();
    let mut stale = LocalRecord {
        rid: Rid(2),
        ..me.clone()
    };
    stale.start_time += 1;
    stale.write(&d.0).unwrap();
    let mut old = LocalRecord {
        rid: Rid(3),
        ..me.clone()
    };
    old.boot_id = "x".into();
    old.write(&d.0).unwrap();
    std::fs::write(d.0.join("f.junk.r.junk"), b"junk").unwrap();
    assert_eq!(sweep_stale(&d.0), 2);
    let mut left: Vec<_> = std::fs::read_dir(&d.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            LocalRecord::file_name(1, Rid(1)),
            "f.junk.r.junk".to_string()
        ]
    );
}

#[test]
fn mountinfo_finds_the_topmost_mount_and_knows_scoutfs() {
    let info = b"22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
        40 22 0:50 / /mnt/a\\040b rw shared:5 - ext4 /dev/sda1 rw\n\
        41 40 0:51 / /mnt/a\\040b rw,nosuid - fuse.scoutfs scoutfs:/img/data.img rw\n\
        42 22 0:52 / /mnt/c rw - fuse scoutfs:/d rw\n\
        43 22 0:53 / /mnt/d rw - fuse.sshfs host:/x rw\n";
    let top = parse_mountinfo(info, b"/mnt/a b").unwrap();
    assert_eq!(top.fstype, "fuse.scoutfs");
    assert_eq!(top.dev, "0:51");
    assert!(top.is_scoutfs());
    assert!(parse_mountinfo(info, b"/mnt/c").unwrap().is_scoutfs());
    assert!(!parse_mountinfo(info, b"/mnt/d").unwrap().is_scoutfs());
    assert_eq!(parse_mountinfo(info, b"/mnt/e"), None);
    assert_eq!(parse_mountinfo(info, b"/mnt/a\\040b"), None);
}

#[test]
fn detach_leaves_other_filesystems_alone() {
    // "/" is mounted and is never a scoutfs FUSE mount.
    let e = detach(Path::new("/")).unwrap_err();
    assert!(e.to_string().contains("not a scoutfs FUSE mount"), "{e}");
    let d = Dir::new("detach");
    assert!(!detach(&d.0).unwrap());
}

#[test]
fn the_run_dir_comes_from_the_environment() {
    let d = |v: Option<&str>| run_dir_from(v.map(OsString::from));
    assert_eq!(d(Some("/tmp/elsewhere")), PathBuf::from("/tmp/elsewhere"));
    assert_eq!(d(Some("")), PathBuf::from(RUN_DIR_DEFAULT));
    assert_eq!(d(None), PathBuf::from(RUN_DIR_DEFAULT));
}
