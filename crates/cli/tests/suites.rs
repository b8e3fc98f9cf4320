//! Suites nobody here wrote, run against a real FUSE mount: pjdfstest (POSIX
//! conformance) and fsx (the file system exerciser), both pinned versions
//! from crates.io that scripts/test installs into `.tools` and names with
//! SCOUTFS_TOOLS.
//!
//! pjdfstest failures are compared with
//! `tests/pjdfstest-expected-failures.txt`: a failure not on that list fails
//! the test; a listed test that now passes is printed so the list can
//! shrink. fsx must finish its operations without a miscompare. After each
//! suite the filesystem is unmounted and `scoutfs check` must be clean.
//!
//! Both skip, saying why, without root and /dev/fuse or without the tools;
//! with CI=true a missing tool fails instead, so CI always runs them.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The pinned versions scripts/test installs.
const PJDFSTEST_VERSION: &str = "pjdfstest 0.2.2";
const FSX_VERSION: &str = "fsx 0.3.2";

/// Tests pjdfstest skips on this filesystem, and why. Any other skip fails
/// the test, so coverage cannot shrink unnoticed.
const EXPECTED_SKIPS: &[(&str, &str)] = &[(
    "link::link_count_max",
    "glibc's pathconf(_PC_LINK_MAX) answers 127 (unknown) for FUSE's statfs type, \
     so pjdfstest cannot know the limit",
)];

/// The path of an installed external tool, or None (after saying why) when
/// the test should skip. With CI=true a missing tool is a failure.
fn tool(test: &str, name: &str, version: &str) -> Option<PathBuf> {
    let ci = std::env::var("CI").map(|v| v == "true").unwrap_or(false);
    let found = std::env::var_os("SCOUTFS_TOOLS")
        .map(|d| PathBuf::from(d).join(name))
        .filter(|p| p.is_file());
    let Some(path) = found else {
        let why = format!(
            "{name} not found: SCOUTFS_TOOLS={:?} (scripts/test installs {version} into .tools \
             and sets it)",
            std::env::var_os("SCOUTFS_TOOLS")
        );
        assert!(!ci, "{test}: CI=true and {why}");
        eprintln!("SKIPPED {test}: {why}");
        return None;
    };
    let v = Command::new(&path).arg("--version").output().unwrap();
    let got = String::from_utf8_lossy(&v.stdout).trim().to_string();
    if got != version {
        eprintln!(
            "note: {} is {got:?}, scripts/test pins {version:?}",
            path.display()
        );
    }
    Some(path)
}

/// An empty directory with a short path, removed on drop (after any mount
/// on it, when declared before the mount).
struct ShortDir(PathBuf);

impl ShortDir {
    fn new(name: &str) -> ShortDir {
        let p = PathBuf::from(format!("/tmp/sfs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        ShortDir(p)
    }
}

impl Drop for ShortDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Runs `cmd` with stdout and stderr into `log`, killing it and failing
/// clearly if it runs longer than `limit`. Returns its status and output.
fn run_bounded(what: &str, mut cmd: Command, log: &Path, limit: Duration) -> (ExitStatus, String) {
    let f = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    let mut k = Killer(Some(cmd.spawn().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = k.0.as_mut().unwrap().try_wait().unwrap() {
            k.0 = None;
            break st;
        }
        if start.elapsed() > limit {
            let pid = k.0.as_ref().unwrap().id();
            drop(k);
            let out = std::fs::read_to_string(log).unwrap_or_default();
            panic!(
                "{what} (pid {pid}) ran longer than {limit:?} and was killed; its last output:\n{}",
                tail(&out, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(log).unwrap())
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// One pjdfstest run: each test's outcome, and for failures the panic
/// message and for skips the reasons.
#[derive(Default)]
struct PjdRun {
    outcomes: BTreeMap<String, Outcome>,
    details: BTreeMap<String, String>,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses pjdfstest's output: one line per test, `NAME  ok|FAILED|skipped`,
/// then tab-indented lines (the panic message and backtrace of a failure,
/// the reasons of a skip), and a closing `Summary: ...` line whose counts
/// must agree with the lines (so a crashed or cut-off run is caught).
fn parse_pjdfstest(out: &str) -> PjdRun {
    let out = strip_ansi(out);
    let mut run = PjdRun::default();
    let mut last: Option<String> = None;
    let mut in_backtrace = false;
    let mut summary: Option<BTreeMap<String, usize>> = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("Summary:") {
            // "Summary: 0 failed, 1 skipped, 397 passed, 0 expected failures, 398 total"
            let mut m = BTreeMap::new();
            for part in rest.split(',') {
                let mut w = part.split_whitespace();
                let n: usize = w.next().unwrap().parse().unwrap();
                m.insert(w.collect::<Vec<_>>().join(" "), n);
            }
            summary = Some(m);
            last = None;
            continue;
        }
        if line.starts_with('\t') || line.starts_with(' ') || line.is_empty() {
            let Some(name) = &last else { continue };
            let t = line.trim();
            if t.starts_with("Stack backtrace:") || t.starts_with("Backtrace:") {
                in_backtrace = true;
            }
            if !in_backtrace && !t.is_empty() {
                let d = run.details.entry(name.clone()).or_default();
                if !d.is_empty() {
                    d.push_str("; ");
                }
                d.push_str(t);
            }
            continue;
        }
        let mut w = line.splitn(2, char::is_whitespace);
        let (name, status) = (w.next().unwrap(), w.next().unwrap_or("").trim());
        let outcome = match status {
            "ok" => Outcome::Passed,
            "FAILED" => Outcome::Failed,
            "skipped" => Outcome::Skipped,
            _ => {
                last = None;
                continue;
            }
        };
        assert!(name.contains("::"), "unexpected pjdfstest line: {line:?}");
        assert!(
            run.outcomes.insert(name.to_string(), outcome).is_none(),
            "pjdfstest ran {name} twice"
        );
        last = Some(name.to_string());
        in_backtrace = false;
    }
    let summary = summary.unwrap_or_else(|| {
        panic!(
            "pjdfstest printed no Summary line (did it crash?); its last output:\n{}",
            tail(&out, 40)
        )
    });
    let count = |o| run.outcomes.values().filter(|x| **x == o).count();
    assert_eq!(
        (summary["failed"], summary["skipped"], summary["passed"]),
        (
            count(Outcome::Failed),
            count(Outcome::Skipped),
            count(Outcome::Passed)
        ),
        "pjdfstest's summary disagrees with its test lines"
    );
    run
}

/// The expected-failures file: `NAME # reason` per line; blank lines and
/// lines starting with `#` are comments. Every entry needs a reason.
fn expected_failures() -> BTreeMap<String, String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pjdfstest-expected-failures.txt");
    let text = std::fs::read_to_string(&p).unwrap();
    let mut m = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (name, reason) = t.split_once('#').unwrap_or((t, ""));
        let (name, reason) = (name.trim(), reason.trim());
        assert!(
            !name.contains(char::is_whitespace) && !reason.is_empty(),
            "{}:{}: want `TEST_NAME # reason`, got {line:?}",
            p.display(),
            i + 1
        );
        assert!(
            m.insert(name.to_string(), reason.to_string()).is_none(),
            "{}:{}: {name} is listed twice",
            p.display(),
            i + 1
        );
    }
    m
}

fn pjdfstest_config(allow_remount: bool) -> String {
    format!(
        "# Written by crates/cli/tests/suites.rs.\n\
         [features]\n\
         posix_fallocate = {{}}\n\
         utimensat = {{}}\n\
         utime_now = {{}}\n\
         rename_ctime = {{}}\n\
         \n\
         [settings]\n\
         naptime = 0.01\n\
         allow_remount = {allow_remount}\n\
         \n\
         [dummy_auth]\n\
         entries = [[\"nobody\", \"nogroup\"], [\"daemon\", \"daemon\"]]\n"
    )
}

/// One bounded pjdfstest run on `dir` inside the mount.
fn run_pjdfstest(
    bin: &Path,
    scratch: &Scratch,
    label: &str,
    allow_remount: bool,
    dir: &Path,
    patterns: &[&str],
) -> PjdRun {
    let conf = scratch.path(&format!("pjdfstest-{label}.toml"));
    std::fs::write(&conf, pjdfstest_config(allow_remount)).unwrap();
    // A second, distinct filesystem for the EXDEV tests.
    let secondary = scratch.path("secondary-fs");
    std::fs::create_dir_all(&secondary).unwrap();
    let mut cmd = Command::new(bin);
    if allow_remount {
        // pjdfstest remounts with `mount -o remount,ro MOUNTPOINT`. Where
        // the fuse package's mount.fuse helper is installed, mount(8) hands
        // the remount to it, and it runs the mount's source
        // ("scoutfs:DATA") as a program and fails. `mount -i` skips helpers
        // and remounts with mount(2) itself, on any machine.
        let real = ["/usr/bin/mount", "/bin/mount"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mount(8) not found");
        let wrap = scratch.path("pjdfstest-bin");
        std::fs::create_dir_all(&wrap).unwrap();
        std::fs::write(
            wrap.join("mount"),
            format!("#!/bin/sh\nexec {real} -i \"$@\"\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(wrap.join("mount"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", wrap.display()));
    }
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .arg("-c")
        .arg(&conf)
        .arg("-s")
        .arg(&secondary)
        .arg("-p")
        .arg(dir)
        .args(patterns);
    let log = scratch.path(&format!("pjdfstest-{label}.log"));
    let (_status, out) = run_bounded(
        &format!("pjdfstest ({label})"),
        cmd,
        &log,
        Duration::from_secs(600),
    );
    // Its exit status only says whether anything failed; the lines say what.
    parse_pjdfstest(&out)
}

#[test]
fn pjdfstest_against_a_real_mount() {
    let test = "pjdfstest_against_a_real_mount";
    if !can_mount(test) {
        return;
    }
    let Some(bin) = tool(test, "pjdfstest", PJDFSTEST_VERSION) else {
        return;
    };
    let expected = expected_failures();
    let dir = Scratch::new("pjdfstest");
    let (meta, data) = mkfs(&dir);
    // A short mountpoint: pjdfstest binds sockets at paths three levels
    // below its directory, and a socket's path must fit in 108 bytes.
    let mp = ShortDir::new("pjd");
    let m = MountProc::start(&meta, &data, &mp.0, &[]);
    let work = m.mp.join("p");
    std::fs::create_dir(&work).unwrap();
    let start = Instant::now();

    // Everything, without remounts. posix_fallocate::affected_only_create_flags
    // leaks an fd opened for writing, so a later read-only remount in the same
    // process fails with EBUSY on any filesystem (tmpfs too): the EROFS tests
    // run on their own below.
    let mut run = run_pjdfstest(&bin, &dir, "all", false, &work, &[]);
    // The EROFS tests, which remount the mount read-only and back.
    let erofs = run_pjdfstest(&bin, &dir, "erofs", true, &work, &["erofs"]);
    assert!(!erofs.outcomes.is_empty(), "no EROFS tests ran");
    for (name, o) in erofs.outcomes {
        assert_eq!(
            run.outcomes.get(&name),
            Some(&Outcome::Skipped),
            "{name} should have been skipped without allow_remount"
        );
        run.outcomes.insert(name.clone(), o);
        match erofs.details.get(&name) {
            Some(d) => run.details.insert(name, d.clone()),
            None => run.details.remove(&name),
        };
    }
    let elapsed = start.elapsed();

    let with = |o| -> BTreeSet<&String> {
        run.outcomes
            .iter()
            .filter(|(_, x)| **x == o)
            .map(|(n, _)| n)
            .collect()
    };
    let (passed, failed, skipped) = (
        with(Outcome::Passed),
        with(Outcome::Failed),
        with(Outcome::Skipped),
    );
    println!(
        "pjdfstest: {} passed, {} failed, {} skipped",
        passed.len(),
        failed.len(),
        skipped.len()
    );
    println!("pjdfstest took {:.1} s", elapsed.as_secs_f64());

    let mut problems = Vec::new();
    for name in &failed {
        let d = run.details.get(*name).map(String::as_str).unwrap_or("");
        match expected.get(*name) {
            Some(reason) => println!("expected failure {name} ({reason}): {d}"),
            None => problems.push(format!("FAILED {name}: {d}")),
        }
    }
    for (name, reason) in &expected {
        match run.outcomes.get(name) {
            Some(Outcome::Passed) => println!(
                "{name} now passes: remove it from pjdfstest-expected-failures.txt (was: {reason})"
            ),
            Some(Outcome::Skipped) => println!("{name} is listed as failing but was skipped"),
            Some(Outcome::Failed) => {}
            None => println!("{name} is listed as failing but pjdfstest has no such test"),
        }
    }
    let allowed: BTreeMap<&str, &str> = EXPECTED_SKIPS.iter().copied().collect();
    for name in &skipped {
        let d = run.details.get(*name).map(String::as_str).unwrap_or("");
        match allowed.get(name.as_str()) {
            Some(why) => println!("skipped {name}: {why}"),
            None => problems.push(format!("SKIPPED {name} (coverage lost): {d}")),
        }
    }
    assert!(
        passed.len() > 300,
        "only {} pjdfstest tests passed: did the suite run?",
        passed.len()
    );
    assert!(
        problems.is_empty(),
        "pjdfstest on a real mount: {} unexpected result(s) (regressions; if one is a \
         deliberate limitation, list it with its reason in \
         crates/cli/tests/pjdfstest-expected-failures.txt):\n{}",
        problems.len(),
        problems.join("\n")
    );

    m.unmount();
    assert_check_clean(&meta, &data);
}

/// fsx's configuration: every operation it has on Linux, with the file up
/// to 1 MiB. Operations are at least a byte: fsx 0.3.2 would otherwise
/// issue a zero-length posix_fallocate now and then, which the kernel
/// refuses with EINVAL before the filesystem sees it, and fsx counts as a
/// failure.
const FSX_CONFIG: &str = "\
# Written by crates/cli/tests/suites.rs.
flen = 1048576
nomsyncafterwrite = false
nosizechecks = false
blockmode = false

[opsize]
max = 65536
min = 1
align = 1

[weights]
close_open = 1
read = 10
write = 10
mapread = 10
mapwrite = 10
invalidate = 1
truncate = 5
fsync = 1
fdatasync = 1
posix_fallocate = 5
punch_hole = 5
sendfile = 2
posix_fadvise = 1
copy_file_range = 2
";

const FSX_OPS: u64 = 100_000;

#[test]
fn fsx_against_a_real_mount() {
    let test = "fsx_against_a_real_mount";
    if !can_mount(test) {
        return;
    }
    let Some(bin) = tool(test, "fsx", FSX_VERSION) else {
        return;
    };
    // SCOUTFS_FSX_SEED=<n> replays or explores another sequence.
    let seed: u64 = std::env::var("SCOUTFS_FSX_SEED")
        .map(|s| s.parse().expect("SCOUTFS_FSX_SEED"))
        .unwrap_or(20_240_601);
    let dir = Scratch::new("fsx");
    let (meta, data) = mkfs(&dir); // a 2G data device
    let mp = dir.path("mnt");
    let m = MountProc::start(&meta, &data, &mp, &[]);
    let conf = dir.path("fsx.toml");
    std::fs::write(&conf, FSX_CONFIG).unwrap();
    let artifacts = dir.path("fsx-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let file = m.mp.join("fsx.file");

    let mut cmd = Command::new(&bin);
    cmd.current_dir(&artifacts)
        .arg("-f")
        .arg(&conf)
        .arg("-N")
        .arg(FSX_OPS.to_string())
        .arg("-S")
        .arg(seed.to_string())
        .arg("-P")
        .arg(&artifacts)
        .arg(&file);
    let start = Instant::now();
    let (status, out) = run_bounded(
        "fsx",
        cmd,
        &dir.path("fsx.log"),
        Duration::from_secs(20 * 60),
    );
    let elapsed = start.elapsed();
    println!(
        "fsx: {FSX_OPS} operations, seed {seed}, {:.1} s",
        elapsed.as_secs_f64()
    );
    assert!(
        status.success() && out.contains("All operations completed A-OK!"),
        "fsx -N {FSX_OPS} -S {seed} on a real mount failed ({status}); replay with \
         SCOUTFS_FSX_SEED={seed} SCOUTFS_TEST_KEEP=1 (artifacts in {}); its output:\n{}",
        artifacts.display(),
        tail(&out, 80)
    );

    // What fsx left is the same after unmount, check and remount.
    let before = std::fs::read(&file).unwrap();
    m.unmount();
    assert_check_clean(&meta, &data);
    let m = MountProc::start(&meta, &data, &mp, &[]);
    let after = std::fs::read(m.mp.join("fsx.file")).unwrap();
    assert_eq!(before.len(), after.len(), "fsx.file's size after remount");
    assert!(before == after, "fsx.file's contents differ after remount");
    m.unmount();
    assert_check_clean(&meta, &data);
}

/// The parser on pjdfstest's own output format, so a change in it cannot
/// turn failures into silence.
#[test]
fn pjdfstest_output_parses() {
    let out = "\
chmod::ok_one                                                                 ok
\u{1b}[34mlink::fails\u{1b}[0m                                                         \u{1b}[31mFAILED\u{1b}[0m
\tassertion `left == right` failed
\t  left: Err(EPERM)
\t right: Ok(())

Stack backtrace:
   0: anyhow::error::<impl anyhow::Error>::msg
link::link_count_max                                                     skipped
\tCannot get value for LINK_MAX: filesystem limit is unknown

Summary: 1 failed, 1 skipped, 1 passed, 0 expected failures, 3 total
";
    let run = parse_pjdfstest(out);
    assert_eq!(run.outcomes.len(), 3);
    assert_eq!(run.outcomes["chmod::ok_one"], Outcome::Passed);
    assert_eq!(run.outcomes["link::fails"], Outcome::Failed);
    assert_eq!(run.outcomes["link::link_count_max"], Outcome::Skipped);
    assert_eq!(
        run.details["link::fails"],
        "assertion `left == right` failed; left: Err(EPERM); right: Ok(())"
    );
    assert!(run.details["link::link_count_max"].contains("LINK_MAX"));
    // A summary that disagrees with the lines (a cut-off run) is an error,
    // and so is no summary (a crash).
    let bad = out.replace("1 passed", "2 passed");
    assert!(std::panic::catch_unwind(|| parse_pjdfstest(&bad)).is_err());
    let cut = &out[..out.find("Summary").unwrap()];
    assert!(std::panic::catch_unwind(|| parse_pjdfstest(cut)).is_err());
}

#[test]
fn expected_failures_file_is_well_formed() {
    // Every entry has a reason (expected_failures() asserts it).
    for (name, reason) in expected_failures() {
        assert!(name.contains("::"), "{name} is not a pjdfstest test name");
        assert!(!reason.is_empty());
    }
}
