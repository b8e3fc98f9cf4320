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
    String::from_utf8(o.stdout).unwrap()
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
