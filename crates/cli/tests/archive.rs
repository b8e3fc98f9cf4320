//! The archive commands against a real FUSE mount, through its control
//! socket: `stat`, `get-attr-x`, `set-attr-x`, `setattr` restore,
//! `walk-inodes` (text and JSON, resumed from a saved position) and
//! `statfs`'s committed seq; retention refusing changes made through the
//! kernel; refusals for unprivileged callers and bad arguments, with the
//! mount serving throughout.

mod common;

use common::{can_mount, MountProc, Scratch};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    common::scoutfs(args)
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "scoutfs {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Fails with a message on stderr that contains `want`, and no panic.
fn fails(args: &[&str], want: &str) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "scoutfs {args:?} succeeded");
    assert!(
        err.contains(want),
        "scoutfs {args:?}: {err:?} lacks {want:?}"
    );
    assert!(
        !err.contains("panicked"),
        "scoutfs {args:?} panicked: {err}"
    );
}

fn as_nobody(args: &[&str]) -> Output {
    Command::new(common::bin())
        .args(args)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap()
}

/// A number field of a one-line JSON object.
fn json_num(line: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

fn walk(mp: &str, index: &str, first: &str) -> Vec<(u64, u64)> {
    ok(&["walk-inodes", index, first, "-1", "-p", mp])
        .lines()
        .map(|l| {
            let p: Vec<u64> = l.split('.').map(|n| n.parse().unwrap()).collect();
            assert_eq!((p.len(), p[1]), (3, 0), "line {l:?}");
            (p[0], p[2])
        })
        .collect()
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

#[test]
fn archive_commands_on_a_real_mount() {
    if !can_mount("archive_commands_on_a_real_mount") {
        return;
    }
    let dir = Scratch::new("archive");
    let (meta, data) = common::mkfs(&dir);
    let m = MountProc::start(&meta, &data, &dir.path("mnt"), &[]);
    let mp = m.mp.to_str().unwrap().to_string();
    let d = m.mp.join("d");
    std::fs::create_dir(&d).unwrap();
    let files: Vec<_> = (0..20).map(|i| d.join(format!("f{i}"))).collect();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(f, vec![i as u8; 5000 + i]).unwrap();
    }

    // stat: the seqs, one write's data version, two blocks online.
    let f0 = files[0].to_str().unwrap();
    let s = ok(&["stat", f0, "--json"]);
    assert_eq!(json_num(&s, "data_version"), 1, "{s}");
    assert_eq!(json_num(&s, "online_blocks"), 2, "{s}");
    assert_eq!(json_num(&s, "offline_blocks"), 0, "{s}");
    let data_seq = json_num(&s, "data_seq");
    assert!(data_seq > 0 && json_num(&s, "meta_seq") >= data_seq);
    assert_eq!(
        ok(&["stat", f0, "-s", "data_seq"]).trim(),
        data_seq.to_string()
    );
    let x = ok(&["get-attr-x", f0]);
    assert!(
        x.contains("size: 5000") && x.contains("retention: 0"),
        "{x}"
    );

    // walk-inodes: every file in data_seq, in order; the directory only
    // in meta_seq; statfs's committed seq is the walk's clamp or later.
    let dw = walk(&mp, "data_seq", "0");
    let mw = walk(&mp, "meta_seq", "0");
    for w in [&dw, &mw] {
        assert!(w.windows(2).all(|p| p[0] < p[1]), "out of order: {w:?}");
    }
    let dset: BTreeSet<u64> = dw.iter().map(|e| e.1).collect();
    let mset: BTreeSet<u64> = mw.iter().map(|e| e.1).collect();
    for f in &files {
        assert!(dset.contains(&ino(f)) && mset.contains(&ino(f)));
    }
    assert!(mset.contains(&ino(&d)) && !dset.contains(&ino(&d)));
    let committed: u64 = ok(&["statfs", "-p", &mp, "-s", "committed_seq"])
        .trim()
        .parse()
        .unwrap();
    let top = dw.last().unwrap().0;
    assert!(committed >= top, "committed seq {committed} below {top}");

    // Resumed from a saved position (JSON gives where to go on from), a
    // walk sees the files changed since, and nothing before it.
    let js = ok(&["walk-inodes", "data_seq", "0", "-1", "-p", &mp, "--json"]);
    let last_line = js.lines().last().unwrap();
    let next = last_line.split("\"next\":\"").nth(1).unwrap();
    let next = next.trim_end_matches("\"}").to_string();
    let saved = format!("{}", committed + 1);
    std::fs::write(&files[3], b"changed").unwrap();
    std::fs::write(d.join("new"), b"new").unwrap();
    let again = walk(&mp, "data_seq", &saved);
    let aset: BTreeSet<u64> = again.iter().map(|e| e.1).collect();
    assert_eq!(
        aset,
        [ino(&files[3]), ino(&d.join("new"))].into_iter().collect(),
        "walked from {saved}: {again:?}"
    );
    assert!(again.iter().all(|e| e.0 > committed));
    // From the JSON position: the same two (their seqs are after it).
    let from_next = walk(&mp, "data_seq", &next);
    assert_eq!(from_next, again);

    // setattr restores a new empty file: its size all offline, times set.
    let r = m.mp.join("restored");
    std::fs::write(&r, b"").unwrap();
    let rs = r.to_str().unwrap();
    ok(&[
        "setattr",
        rs,
        "-V",
        "9",
        "-s",
        "10000",
        "-o",
        "-t",
        "1600000000.5",
        "-r",
        "1500000000.7",
    ]);
    let x = ok(&["get-attr-x", rs, "--json"]);
    assert_eq!(json_num(&x, "data_version"), 9, "{x}");
    assert_eq!(json_num(&x, "offline_blocks"), 3, "{x}");
    assert_eq!(json_num(&x, "online_blocks"), 0, "{x}");
    assert!(x.contains("\"crtime\":\"1500000000.000000007\""), "{x}");
    assert!(x.contains("\"ctime\":\"1600000000.000000005\""), "{x}");
    assert_eq!(std::fs::metadata(&r).unwrap().len(), 10_000);
    assert_eq!(
        std::fs::metadata(&r).unwrap().blocks(),
        0,
        "st_blocks counts online blocks"
    );
    fails(&["setattr", rs, "-V", "10"], "Invalid argument");

    // Retention: set by root, refusing changes through the kernel.
    let kept = &files[5];
    let ks = kept.to_str().unwrap();
    ok(&["set-attr-x", ks, "--retention", "1"]);
    let eperm = |what: &str, r: std::io::Result<()>| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{what}: {e}");
    };
    eperm("write", std::fs::write(kept, b"x"));
    eperm(
        "open for append",
        std::fs::OpenOptions::new()
            .append(true)
            .open(kept)
            .map(|_| ()),
    );
    eperm("unlink", std::fs::remove_file(kept));
    eperm("rename", std::fs::rename(kept, d.join("moved")));
    eperm("link", std::fs::hard_link(kept, d.join("linked")));
    eperm(
        "chmod",
        std::fs::set_permissions(kept, std::os::unix::fs::PermissionsExt::from_mode(0o600)),
    );
    assert_eq!(std::fs::read(kept).unwrap(), vec![5u8; 5005]);

    // Unprivileged callers: refused, with the reason.
    let o = as_nobody(&["set-attr-x", ks, "--retention", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("administrators"),
        "{err}"
    );
    let o = as_nobody(&["set-attr-x", f0, "--project-id", "3"]);
    assert!(!o.status.success());
    let o = as_nobody(&["setattr", rs, "-V", "4"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("Operation not permitted"),
        "{err}"
    );
    // Anyone may stat and walk.
    let o = as_nobody(&["stat", f0]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = as_nobody(&["walk-inodes", "meta_seq", "0", "-1", "-p", &mp]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    ok(&["set-attr-x", ks, "--retention", "0", "--project-id", "12"]);
    std::fs::write(kept, b"free again").unwrap();
    assert_eq!(ok(&["get-attr-x", ks, "-s", "project_id"]).trim(), "12");

    // Bad arguments: clear errors, no panics.
    fails(&["stat", "/nonexistent/file"], "No such file");
    fails(&["stat", "/"], "not in a scoutfs mount");
    fails(
        &["walk-inodes", "size", "0", "-1", "-p", &mp],
        "invalid value",
    );
    fails(
        &["walk-inodes", "data_seq", "x", "-1", "-p", &mp],
        "not a position",
    );
    fails(
        &["walk-inodes", "data_seq", "1.2.3.4", "-1", "-p", &mp],
        "not a position",
    );
    fails(
        &["walk-inodes", "data_seq", "1.5", "-1", "-p", &mp],
        "minor",
    );
    fails(&["set-attr-x", f0], "nothing to set");
    fails(&["set-attr-x", f0, "--retention", "2"], "invalid value");
    fails(&["setattr", rs, "-s", "10"], "--data-version");
    fails(&["setattr", rs, "-V", "1", "-t", "1.x"], "nanoseconds");
    fails(&["setattr", rs, "-V", "1", "-r", "x.1"], "not a time");
    fails(&["stat", f0, "-s", "nope"], "no field");
    // The mount still serves.
    assert_eq!(std::fs::read(&files[1]).unwrap(), vec![1u8; 5001]);
    drop(m);
    common::assert_check_clean(&meta, &data);
}

fn num(args: &[&str]) -> u64 {
    ok(args).trim().parse().unwrap()
}

#[test]
fn release_stage_and_waiters_on_a_real_mount() {
    if !can_mount("release_stage_and_waiters_on_a_real_mount") {
        return;
    }
    let dir = Scratch::new("offline");
    let (meta, data) = common::mkfs(&dir);
    let m = MountProc::start(&meta, &data, &dir.path("mnt"), &[]);
    let mp = m.mp.to_str().unwrap().to_string();
    let f = m.mp.join("f");
    let bytes: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&f, &bytes).unwrap();
    let arch = dir.path("archive-copy");
    std::fs::write(&arch, &bytes).unwrap();
    let fs_ = f.to_str().unwrap();
    let arch_s = arch.to_str().unwrap();
    let dv = num(&["stat", fs_, "-s", "data_version"]).to_string();
    // An fsync commits (sync(2) does not reach a FUSE mount).
    let commit = || std::fs::File::open(&f).unwrap().sync_all().unwrap();
    commit();
    let free0 = num(&["statfs", "-p", &mp, "-s", "free_data_blocks"]);

    // Release: offline, st_blocks 0, the blocks free within a commit.
    fails(&["release", fs_, "-V", "999"], "data_version");
    fails(&["release", fs_, "-V", &dv, "-o", "100"], "aligned");
    let o = as_nobody(&["release", fs_, "-V", &dv]);
    assert!(!o.status.success(), "nobody released a file of root's");
    ok(&["release", fs_, "-V", &dv]);
    assert_eq!(num(&["stat", fs_, "-s", "offline_blocks"]), 256);
    assert_eq!(std::fs::metadata(&f).unwrap().blocks(), 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while num(&["statfs", "-p", &mp, "-s", "free_data_blocks"]) < free0 + 256 {
        assert!(
            std::time::Instant::now() < deadline,
            "released blocks not free"
        );
        Command::new("sync").status().unwrap();
    }

    // Readers wait without holding the mount's request threads: 40 of them
    // (the mount serves with 4), and other files are served meanwhile.
    let readers: Vec<_> = (0..40)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || std::fs::read(f))
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ino_s = format!("ino {} iblock", ino(&f));
    loop {
        let w = ok(&["data-waiting", "-p", &mp]);
        if w.contains(&ino_s) && w.contains("ops read") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no waiter listed: {w}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let other = m.mp.join("other");
    std::fs::create_dir(&other).unwrap();
    for i in 0..100 {
        let p = other.join(format!("o{i}"));
        std::fs::write(&p, format!("file {i}")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("file {i}"));
    }
    let js = ok(&["data-waiting", "-p", &mp, "--json"]);
    assert!(js.lines().all(|l| l.contains("\"ops\":[\"read\"]")), "{js}");
    // Stage wakes them all with the archived bytes.
    fails(&["stage", arch_s, fs_, "-V", "999"], "data_version");
    ok(&["stage", arch_s, fs_, "-V", &dv]);
    for r in readers {
        assert!(
            r.join().unwrap().unwrap() == bytes,
            "a reader got other bytes"
        );
    }
    assert_eq!(num(&["stat", fs_, "-s", "offline_blocks"]), 0);
    assert_eq!(num(&["stat", fs_, "-s", "data_version"]).to_string(), dv);

    // data-wait-err fails a waiting read with the errno given (root only).
    ok(&["release", fs_, "-V", &dv]);
    let reader = {
        let f = f.clone();
        std::thread::spawn(move || std::fs::read(f))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ok(&["data-waiting", "-p", &mp]).contains(&ino_s) {
        assert!(std::time::Instant::now() < deadline, "no waiter");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ino_arg = ino(&f).to_string();
    let werr = [
        "data-wait-err",
        "-I",
        &ino_arg,
        "-F",
        "0",
        "-C",
        "1M",
        "-O",
        "read",
        "-E",
        "EIO",
        "-p",
        &mp,
    ];
    let o = as_nobody(&werr);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("root"), "{err}");
    fails(
        &[
            "data-wait-err",
            "-I",
            &ino_arg,
            "-F",
            "0",
            "-C",
            "1",
            "-O",
            "sideways",
            "-E",
            "5",
            "-p",
            &mp,
        ],
        "ops are",
    );
    fails(
        &[
            "data-wait-err",
            "-I",
            &ino_arg,
            "-F",
            "0",
            "-C",
            "1",
            "-O",
            "read",
            "-E",
            "nope",
            "-p",
            &mp,
        ],
        "not an errno",
    );
    assert!(ok(&werr).starts_with("1 "));
    let e = reader.join().unwrap().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    ok(&["stage", arch_s, fs_, "-V", &dv]);
    assert!(std::fs::read(&f).unwrap() == bytes);

    // A sparse restore: all offline, holes punched, a range staged by
    // moving the blocks of a temporary file.
    let r = m.mp.join("restored");
    std::fs::write(&r, b"").unwrap();
    let rs = r.to_str().unwrap();
    ok(&["setattr", rs, "-V", "3", "-s", "40960", "-o"]);
    ok(&["punch-offline", rs, "-V", "3", "-o", "8K", "-l", "16K"]);
    fails(
        &["punch-offline", rs, "-V", "4", "-o", "0", "-l", "4K"],
        "data_version",
    );
    assert_eq!(num(&["stat", rs, "-s", "offline_blocks"]), 6);
    let tmp = m.mp.join("tmp");
    std::fs::write(&tmp, &bytes[..8192]).unwrap();
    let ts = tmp.to_str().unwrap();
    ok(&[
        "move-blocks",
        ts,
        "-f",
        "0",
        "-l",
        "8K",
        rs,
        "-t",
        "0",
        "--stage",
        "-V",
        "3",
    ]);
    fails(
        &["move-blocks", ts, "-f", "0", "-l", "8K", rs, "-t", "24K"],
        "offline",
    );
    // The rest is still offline (a read of it would wait): the staged and
    // punched part only, without readahead (which would reach the offline
    // blocks and wait for them).
    let mut head = vec![0u8; 8192 + 16384];
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut rf = std::fs::File::open(&r).unwrap();
    // SAFETY: advice on a descriptor we hold.
    let adv = unsafe { libc::posix_fadvise(rf.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(adv, 0);
    rf.read_exact(&mut head).unwrap();
    assert!(head[..8192] == bytes[..8192] && head[8192..].iter().all(|&b| b == 0));
    assert_eq!(num(&["stat", rs, "-s", "offline_blocks"]), 4);
    drop(m);
    common::assert_check_clean(&meta, &data);
}

#[test]
fn paths_entries_and_allocated_inodes_by_inode_number() {
    if !can_mount("paths_entries_and_allocated_inodes_by_inode_number") {
        return;
    }
    let dir = Scratch::new("archive-paths");
    let (meta, data) = common::mkfs(&dir);
    let m = MountProc::start(&meta, &data, &dir.path("mnt"), &[]);
    let mp = m.mp.to_str().unwrap().to_string();
    // A file with three names in two directories, one of them deep, and a
    // name that is not UTF-8.
    let deep = m.mp.join("a/b/c");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::create_dir(m.mp.join("z")).unwrap();
    let f = deep.join("file");
    std::fs::write(&f, b"x").unwrap();
    std::fs::hard_link(&f, m.mp.join("z/second")).unwrap();
    use std::os::unix::ffi::OsStrExt;
    let odd = m.mp.join(std::ffi::OsStr::from_bytes(b"z/odd\xff\"name"));
    std::fs::hard_link(&f, &odd).unwrap();
    let i = ino(&f).to_string();

    let o = run(&["ino-path", &i, "-p", &mp]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let paths = o.stdout;
    let mut got: Vec<&[u8]> = paths.split(|&b| b == b'\n').collect();
    got.retain(|l| !l.is_empty());
    got.sort();
    let mut want: Vec<&[u8]> = vec![b"a/b/c/file", b"z/second", b"z/odd\xff\"name"];
    want.sort();
    assert_eq!(got, want, "{paths:?}");
    assert_eq!(
        ok(&["ino-path", "1", "-p", &mp]),
        "\n",
        "the root's path is empty"
    );
    assert_eq!(
        ok(&["ino-path", &ino(&deep).to_string(), "-p", &mp]),
        "a/b/c\n"
    );
    // JSON, resumed from each line's next position: every path once.
    let json = ok(&["ino-path", &i, "--json", "-p", &mp]);
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 3, "{json}");
    assert!(json.contains("\"path\":\"a/b/c/file\""), "{json}");
    assert!(
        json.contains("\"path_hex\":\"7a2f6f6464ff226e616d65\""),
        "{json}"
    );
    assert!(json.contains("odd\u{fffd}\\\"name"), "{json}");
    let next = lines[0]
        .split("\"next\":\"")
        .nth(1)
        .unwrap()
        .trim_end_matches("\"}");
    let rest = ok(&["ino-path", &i, "--from", next, "--json", "-p", &mp]);
    assert_eq!(rest.lines().collect::<Vec<_>>(), lines[1..].to_vec());

    // The entries: directory, position, type and name of each.
    let es = ok(&["get-referring-entries", &i, "-p", &mp]);
    assert_eq!(es.lines().count(), 3, "{es}");
    let c_ino = ino(&deep);
    assert!(
        es.contains(&format!("dir {c_ino} pos ")) && es.contains(" type reg name file\n"),
        "{es}"
    );
    let ej = ok(&["get-referring-entries", &i, "--json", "-p", &mp]);
    assert!(
        ej.contains(&format!("\"dir_ino\":{c_ino},")) && ej.contains("\"name\":\"second\""),
        "{ej}"
    );
    // A rename moves the entry; an unlink removes it.
    std::fs::rename(m.mp.join("z/second"), m.mp.join("a/moved")).unwrap();
    std::fs::remove_file(&odd).unwrap();
    let mut after: Vec<String> = ok(&["ino-path", &i, "-p", &mp])
        .lines()
        .map(String::from)
        .collect();
    after.sort();
    assert_eq!(after, ["a/b/c/file", "a/moved"]);

    // Allocated inodes: the group of the file holds it and its directories.
    let inos: Vec<u64> = ok(&["get-allocated-inos", "-i", &i, "-p", &mp])
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        inos.contains(&ino(&f)) && inos.windows(2).all(|w| w[0] < w[1]),
        "{inos:?}"
    );
    for d in [&deep, &m.mp.join("z")] {
        let di = ino(d);
        assert_eq!(
            inos.contains(&di),
            di / 1024 == ino(&f) / 1024,
            "{di} in {inos:?}"
        );
    }
    assert_eq!(
        ok(&["get-allocated-inos", "-i", &i, "-s", "-p", &mp]).trim(),
        i
    );
    // An unused number: nothing, and -s says so with its status.
    let unused = (ino(&f) | 1023).to_string();
    assert!(!inos.contains(&(ino(&f) | 1023)));
    assert!(
        !run(&["get-allocated-inos", "-i", &unused, "-s", "-p", &mp])
            .status
            .success()
    );

    // Refusals: no such inode, an unprivileged caller, bad arguments.
    fails(&["ino-path", &unused, "-p", &mp], "No such file");
    fails(
        &["get-referring-entries", &unused, "-p", &mp],
        "No such file",
    );
    for args in [
        vec!["ino-path", i.as_str(), "-p", mp.as_str()],
        vec!["get-referring-entries", i.as_str(), "-p", mp.as_str()],
        vec!["get-allocated-inos", "-i", i.as_str(), "-p", mp.as_str()],
    ] {
        let o = as_nobody(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("needs root"),
            "{args:?}: {err}"
        );
    }
    fails(&["ino-path", "x", "-p", &mp], "invalid value");
    fails(
        &["ino-path", &i, "--from", "3", "-p", &mp],
        "not an entry position",
    );
    fails(&["get-allocated-inos", "-p", &mp], "--ino");
    // The mount still serves.
    assert_eq!(std::fs::read(&f).unwrap(), b"x");
    drop(m);
    common::assert_check_clean(&meta, &data);
}

#[test]
fn an_mmap_fault_on_a_released_file_waits_for_its_stage() {
    if !can_mount("an_mmap_fault_on_a_released_file_waits_for_its_stage") {
        return;
    }
    let dir = Scratch::new("archive-mmap");
    let (meta, data) = common::mkfs(&dir);
    let m = MountProc::start(&meta, &data, &dir.path("mnt"), &[]);
    let mp = m.mp.to_str().unwrap().to_string();
    let bytes: Vec<u8> = (0..256u32 << 10).map(|i| (i % 251) as u8).collect();
    let f = m.mp.join("mapped");
    std::fs::write(&f, &bytes).unwrap();
    let copy = dir.path("copy");
    std::fs::write(&copy, &bytes).unwrap();
    let fs_ = f.to_str().unwrap();
    let dv = ok(&["stat", fs_, "-s", "data_version"]);
    ok(&["release", fs_, "-V", dv.trim()]);
    // Faults on the mapping of the released file wait.
    let offsets = [0usize, 100_000, 200_000, (256 << 10) - 1];
    let faulter = {
        let f = f.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&f).unwrap();
            use std::os::fd::AsRawFd;
            let len = 256 << 10;
            // SAFETY: a new shared read-only mapping of an open file,
            // read within its length and unmapped before the file closes.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                );
                assert_ne!(p, libc::MAP_FAILED);
                let got: Vec<u8> = offsets
                    .iter()
                    .map(|&o| std::ptr::read_volatile((p as *const u8).add(o)))
                    .collect();
                libc::munmap(p, len);
                got
            }
        })
    };
    let i = ino(&f);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ok(&["data-waiting", "-p", &mp]).contains(&format!("ino {i} ")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the fault does not wait"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!faulter.is_finished(), "a fault returned before the stage");
    ok(&["stage", copy.to_str().unwrap(), fs_, "-V", dv.trim()]);
    let got = faulter.join().unwrap();
    let want: Vec<u8> = offsets.iter().map(|&o| bytes[o]).collect();
    assert_eq!(got, want);
    drop(m);
    common::assert_check_clean(&meta, &data);
}
