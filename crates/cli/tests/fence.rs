//! The local fence agent against real mounts: `scoutfs fence-local` run by
//! the core's `Fencer`, as a server will run it.

mod common;

use common::*;
use scoutfs_core::cluster::fence::local::{proc_identity, LocalRecord};
use scoutfs_core::cluster::fence::{FenceOutcome, FenceReason, FenceRequest, Fencer};
use scoutfs_core::types::Rid;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A fencer running this build's `scoutfs fence-local` on `run`.
fn local_fencer(run: &Path) -> Fencer {
    let cmd = [bin(), "fence-local", "--run-dir", run.to_str().unwrap()];
    Fencer::new(
        Some(cmd.iter().map(|s| s.to_string()).collect()),
        Duration::from_secs(20),
    )
}

fn request(rid: Rid) -> FenceRequest {
    FenceRequest {
        rid,
        addr: "127.0.0.1:7000".parse().unwrap(),
        reason: FenceReason::ClientReconnect,
    }
}

/// The one record in `run`, with its path.
fn only_record(run: &Path) -> (std::path::PathBuf, LocalRecord) {
    // The fence records (`f.*`), not the mounts' status files (`m.*`).
    let files: Vec<_> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("f."))
        .collect();
    assert_eq!(files.len(), 1, "records: {files:?}");
    let rec = LocalRecord::read(&files[0]).unwrap();
    (files[0].clone(), rec)
}

#[test]
fn fence_local_kills_a_mount_and_its_acknowledged_state_survives() {
    if !can_mount("fence_local_kills_a_mount_and_its_acknowledged_state_survives") {
        return;
    }
    let t0 = Instant::now();
    let dir = Scratch::new("fence");
    let (meta, data) = mkfs(&dir);
    let run = dir.path("run");
    let mp = dir.path("mnt");
    let mut m = MountProc::start_env(&meta, &data, &mp, &[], &[("SCOUTFS_RUN_DIR", &run)]);

    // The record names this mount's process and mountpoint.
    let (path, rec) = only_record(&run);
    assert_eq!(rec.pid, m.pid());
    assert_eq!(rec.mountpoint, m.mp);
    assert_eq!(
        path.file_name().unwrap().to_str().unwrap(),
        LocalRecord::file_name(rec.fsid, rec.rid)
    );

    // Something acknowledged as durable before the fence.
    let mut f = std::fs::File::create(m.mp.join("kept")).unwrap();
    f.write_all(b"acknowledged before the fence").unwrap();
    f.sync_all().unwrap();
    drop(f);

    let fencer = local_fencer(&run).with_fsid(rec.fsid);
    let out = fencer.fence(request(rec.rid));
    assert_eq!(out, Ok(FenceOutcome::Fenced));

    // The process was killed (it is our child: reap it, bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the mount process still runs");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");
    m.child = None;
    assert!(
        !is_mounted(&m.mp),
        "a dead mount is left on {}",
        m.mp.display()
    );
    assert!(!path.exists(), "the record is still there");

    assert_check_clean(&meta, &data);
    // Fencing it again finds nothing to do.
    assert_eq!(fencer.fence(request(rec.rid)), Ok(FenceOutcome::Fenced));

    // A new mount sees what was acknowledged, and ends cleanly with its record.
    let m2 = MountProc::start_env(&meta, &data, &mp, &[], &[("SCOUTFS_RUN_DIR", &run)]);
    let (_, rec2) = only_record(&run);
    assert_ne!(rec2.rid, rec.rid);
    assert_eq!(
        std::fs::read(m2.mp.join("kept")).unwrap(),
        b"acknowledged before the fence"
    );
    m2.unmount();
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);
    assert_check_clean(&meta, &data);
    eprintln!("fence of a real mount took {:?} in all", t0.elapsed());
}

#[test]
fn fence_local_never_kills_a_process_whose_start_time_differs() {
    // A record naming this test's own pid with another start time: the
    // process it meant is gone and the pid was reused. Needs no mount.
    let dir = Scratch::new("fence-recycled");
    let run = dir.path("run");
    let mut rec =
        LocalRecord::for_this_process(0x5eed, Rid(0xdead_beef), &dir.path("mnt")).unwrap();
    rec.start_time += 1;
    let path = rec.write(&run).unwrap();
    let out = local_fencer(&run).fence(request(rec.rid));
    assert_eq!(out, Ok(FenceOutcome::Fenced));
    // We are still here, and so is our process as /proc shows it.
    let me = proc_identity(std::process::id()).unwrap().unwrap();
    assert_eq!(me.start_time, rec.start_time - 1);
    assert!(!path.exists(), "the stale record is still there");
}

#[test]
fn fence_local_without_a_rid_fails_clearly() {
    let o = Command::new(bin())
        .arg("fence-local")
        .env_remove("SCOUTFS_FENCE_RID")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("SCOUTFS_FENCE_RID is not set"), "{err}");
    let o = Command::new(bin())
        .args(["fence-local", "--rid", "xyz"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not 1 to 16 hex digits"), "{err}");
}

#[test]
fn mount_fence_options_are_parsed() {
    // Refused by the parser before anything is opened.
    for (args, want) in [
        (&["--fence-arg", "x"][..], "--fence-command"),
        (
            &["--fence-command", "true", "--fence-timeout-ms", "0"][..],
            "0",
        ),
    ] {
        let o = Command::new(bin())
            .args([
                "mount",
                "--meta",
                "/nonexistent/m",
                "/nonexistent/d",
                "/nonexistent/mnt",
            ])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Accepted: the mount goes on to fail at the missing device.
    let o = Command::new(bin())
        .args([
            "mount",
            "--meta",
            "/nonexistent/m",
            "/nonexistent/d",
            "/nonexistent/mnt",
        ])
        .args(["--fence-command", bin(), "--fence-arg", "fence-local"])
        .args(["--fence-arg", "--run-dir=/x", "--fence-timeout-ms", "5000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/mnt"), "{err}");
    // A fence command that can't run is refused when the mount starts,
    // not when a fence is needed.
    let dir = Scratch::new("fence-prog");
    let plain = dir.path("not-a-program");
    std::fs::write(&plain, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for (prog, want) in [
        ("/nonexistent/fence", "No such file"),
        (plain.to_str().unwrap(), "not an executable file"),
        ("no-such-fence-program", "no such program in $PATH"),
    ] {
        let o = Command::new(bin())
            .args([
                "mount",
                "--meta",
                "/nonexistent/m",
                "/nonexistent/d",
                "/nonexistent/mnt",
            ])
            .args(["--fence-command", prog])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{prog}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("--fence-command {prog}: {want}")),
            "{err}"
        );
    }
}
