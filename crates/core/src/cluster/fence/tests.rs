use super::*;
use std::os::unix::process::ExitStatusExt;

fn req(rid: u64) -> FenceRequest {
    FenceRequest {
        rid: Rid(rid),
        addr: "127.0.0.2:7123".parse().unwrap(),
        reason: FenceReason::ClientReconnect,
    }
}

/// A scratch directory removed on drop, on every path.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("scoutfs-fence-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sh(script: &str, timeout_ms: u64) -> Fencer {
    Fencer::new(
        Some(vec!["sh".into(), "-c".into(), script.into()]),
        Duration::from_millis(timeout_ms),
    )
}

/// Whether `pid` is a child of ours not yet reaped.
fn is_our_unreaped_child(pid: u32) -> bool {
    // SAFETY: waitpid with WNOHANG only asks; a child it would reap is one
    // a failing test left as a zombie anyway. -1 (ECHILD): reaped already.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
    r != -1
}

#[test]
fn exit_zero_is_fenced() {
    assert_eq!(sh("exit 0", 10_000).fence(req(1)), Ok(FenceOutcome::Fenced));
}

#[test]
fn non_zero_exit_is_failed_with_the_stderr_tail() {
    let out = sh("echo first >&2; echo cannot reach host >&2; exit 3", 10_000).fence(req(1));
    let Ok(FenceOutcome::Failed {
        status,
        stderr_tail,
    }) = out
    else {
        panic!("{out:?}");
    };
    assert_eq!(status.code(), Some(3));
    assert_eq!(stderr_tail, "first\ncannot reach host");
}

#[test]
fn death_by_signal_is_failed() {
    let out = sh("kill -9 $$", 10_000).fence(req(1));
    let Ok(FenceOutcome::Failed { status, .. }) = out else {
        panic!("{out:?}");
    };
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn the_stderr_tail_is_bounded_and_keeps_the_end() {
    let script = "i=0; while [ $i -lt 500 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxx >&2; \
                  i=$((i+1)); done; echo the-end >&2; exit 1";
    let Ok(FenceOutcome::Failed { stderr_tail, .. }) = sh(script, 10_000).fence(req(1)) else {
        panic!("not failed");
    };
    assert!(stderr_tail.len() <= FENCE_STDERR_TAIL_BYTES);
    assert!(stderr_tail.len() > FENCE_STDERR_TAIL_BYTES / 2);
    assert!(stderr_tail.ends_with("line-499-xxxxxxxxxxxxxxxxxxxx\nthe-end"));
}

#[test]
fn an_agent_past_the_timeout_is_killed_and_reaped() {
    // exec: the shell becomes the sleep, so the pid we kill is all there is.
    let f = sh("echo started >&2; exec sleep 30", 300);
    let h = f.start(req(1)).unwrap();
    let pid = h.pid();
    let start = Instant::now();
    let out = h.wait();
    assert_eq!(
        out,
        Ok(FenceOutcome::TimedOut {
            stderr_tail: "started".into()
        })
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the kill took too long"
    );
    assert!(!is_our_unreaped_child(pid), "pid {pid} was left a zombie");
    assert_eq!(f.running(), 0);
}

#[test]
fn the_agent_gets_the_request_in_its_environment() {
    let script = r#"printf '%s|%s|%s|%s|%s' "$SCOUTFS_FENCE_RID" "$SCOUTFS_FENCE_ADDR" \
        "$SCOUTFS_FENCE_PORT" "$SCOUTFS_FENCE_REASON" "${SCOUTFS_FENCE_FSID-unset}" >&2; exit 1"#;
    let env_of = |f: &Fencer, r: FenceRequest| match f.fence(r) {
        Ok(FenceOutcome::Failed { stderr_tail, .. }) => stderr_tail,
        o => panic!("{o:?}"),
    };
    let f = sh(script, 10_000);
    assert_eq!(
        env_of(&f, req(0xabc)),
        "0000000000000abc|127.0.0.2|7123|client_reconnect|unset"
    );
    let f = f.with_fsid(0x1234_5678_9abc_def0);
    let r = FenceRequest {
        rid: Rid(u64::MAX),
        addr: "[::1]:9".parse().unwrap(),
        reason: FenceReason::QuorumBlockLeader,
    };
    assert_eq!(
        env_of(&f, r),
        "ffffffffffffffff|::1|9|quorum_block_leader|123456789abcdef0"
    );
    let r = FenceRequest {
        reason: FenceReason::ClientRecovery,
        ..req(1)
    };
    assert!(env_of(&f, r).contains("|client_recovery|"));
}

#[test]
fn without_a_command_fencing_is_refused() {
    for f in [
        Fencer::new(None, Duration::from_secs(1)),
        Fencer::new(Some(vec![]), Duration::from_secs(1)),
    ] {
        assert!(!f.is_configured());
        let e = f.fence(req(0x77)).unwrap_err();
        assert_eq!(e, FenceError::NotConfigured { rid: Rid(0x77) });
        assert!(e.to_string().contains("fencing is not configured"), "{e}");
        assert!(e.to_string().contains("0000000000000077"), "{e}");
    }
}

#[test]
fn a_missing_program_is_a_spawn_error() {
    let f = Fencer::new(
        Some(vec!["/nonexistent/scoutfs-fence-agent".into()]),
        Duration::from_secs(1),
    );
    let e = f.fence(req(1)).unwrap_err();
    assert!(matches!(e, FenceError::Spawn { .. }), "{e:?}");
    assert_eq!(f.running(), 0);
}

#[test]
fn poll_does_not_block_and_then_keeps_the_outcome() {
    // The agent waits for a file the test makes, so the first poll is
    // certain to find it running.
    let dir = Dir::new("poll");
    let go = dir.0.join("go");
    let script = format!(
        "i=0; while [ ! -e '{}' ]; do sleep 0.01; i=$((i+1)); \
         [ $i -gt 1000 ] && exit 1; done; exit 0",
        go.display()
    );
    let f = sh(&script, 20_000);
    let mut h = f.start(req(5)).unwrap();
    assert_eq!(h.poll(), None);
    assert_eq!(f.running(), 1);
    assert_eq!(h.request().rid, Rid(5));
    std::fs::write(&go, b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        if let Some(o) = h.poll() {
            break o;
        }
        assert!(Instant::now() < deadline, "the agent did not finish");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(out, Ok(FenceOutcome::Fenced));
    assert_eq!(h.poll(), Some(Ok(FenceOutcome::Fenced)));
    assert_eq!(h.wait(), Ok(FenceOutcome::Fenced));
}

#[test]
fn requests_run_concurrently() {
    // Each agent marks itself and waits until all have: run one at a time,
    // the first would wait forever and time out.
    const N: usize = 4;
    let dir = Dir::new("conc");
    let script = format!(
        "d='{}'; : > \"$d/$SCOUTFS_FENCE_RID\"; i=0; \
         while [ $(ls \"$d\" | wc -l) -lt {N} ]; do sleep 0.01; i=$((i+1)); \
         [ $i -gt 1000 ] && exit 1; done; exit 0",
        dir.0.display()
    );
    let f = sh(&script, 20_000);
    let hs: Vec<FenceHandle> = (0..N as u64)
        .map(|i| f.start(req(i + 1)).unwrap())
        .collect();
    for h in hs {
        assert_eq!(h.wait(), Ok(FenceOutcome::Fenced));
    }
    assert_eq!(f.running(), 0);
}

#[test]
fn more_than_the_running_limit_is_refused() {
    let f = sh("exit 0", 1000);
    f.running.store(FENCE_RUNNING_MAX, Ordering::SeqCst);
    let e = f.start(req(1)).unwrap_err();
    assert_eq!(
        e,
        FenceError::TooMany {
            running: FENCE_RUNNING_MAX
        }
    );
    assert_eq!(f.running(), FENCE_RUNNING_MAX);
}

#[test]
fn a_dropped_handle_still_reaps_its_agent() {
    let f = sh("exec sleep 30", 200);
    let h = f.start(req(1)).unwrap();
    let pid = h.pid();
    drop(h);
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.running() > 0 {
        assert!(
            Instant::now() < deadline,
            "the request's thread did not end"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!is_our_unreaped_child(pid), "pid {pid} was left a zombie");
}
