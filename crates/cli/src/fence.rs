//! `scoutfs fence-local`: the local fence agent a server's fence command
//! runs (`--fence-command scoutfs --fence-arg fence-local`) to fence a
//! mount on this host. The work is `scoutfs_core::cluster::fence::local`; this reads
//! the request from the environment the fencer sets (or from flags, to
//! fence by hand), says what it did on stderr (which the server keeps the
//! tail of), and exits 0 only when the mount can no longer write.

use scoutfs_core::cluster::fence::local::{
    fence_local, run_dir, LocalFenceOutcome, KILL_WAIT_MS_DEFAULT,
};
use scoutfs_core::types::Rid;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct FenceLocalArgs {
    /// The mount to fence, 16 hex digits [default: $SCOUTFS_FENCE_RID].
    #[arg(long, value_name = "RID")]
    rid: Option<String>,
    /// Its filesystem's fsid, to choose among filesystems
    /// [default: $SCOUTFS_FENCE_FSID when set].
    #[arg(long, value_name = "FSID")]
    fsid: Option<String>,
    /// Where mounts record themselves [default: $SCOUTFS_RUN_DIR, else
    /// /run/scoutfs].
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// How long to wait for the killed mount process to exit.
    #[arg(long, default_value_t = KILL_WAIT_MS_DEFAULT)]
    kill_wait_ms: u64,
}

/// A flag's value, else the environment's; `None` if neither is set.
fn arg_or_env(arg: Option<String>, env: &str) -> Result<Option<String>, String> {
    match arg {
        Some(a) => Ok(Some(a)),
        None => match std::env::var(env) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(_) => Err(format!("{env} is not text")),
        },
    }
}

fn parse_id(s: &str, what: &str) -> Result<u64, String> {
    let ok = !s.is_empty() && s.len() <= 16 && s.bytes().all(|c| c.is_ascii_hexdigit());
    match u64::from_str_radix(s, 16) {
        Ok(v) if ok && v != 0 => Ok(v),
        _ => Err(format!(
            "{what} '{s}' is not 1 to 16 hex digits (and not 0)"
        )),
    }
}

pub fn cmd_fence_local(a: FenceLocalArgs) -> Result<ExitCode, String> {
    let rid = arg_or_env(a.rid, "SCOUTFS_FENCE_RID")?.ok_or(
        "fence-local: no mount to fence: SCOUTFS_FENCE_RID is not set \
         (a server's fence command sets it) and --rid was not given",
    )?;
    let rid = Rid(parse_id(&rid, "fence-local: rid")?);
    let fsid = arg_or_env(a.fsid, "SCOUTFS_FENCE_FSID")?
        .map(|f| parse_id(&f, "fence-local: fsid"))
        .transpose()?;
    let dir = a.run_dir.unwrap_or_else(run_dir);
    let why = match (
        std::env::var("SCOUTFS_FENCE_REASON"),
        std::env::var("SCOUTFS_FENCE_ADDR"),
    ) {
        (Ok(r), Ok(ip)) => {
            let port = std::env::var("SCOUTFS_FENCE_PORT").unwrap_or_default();
            format!(" ({r}; last seen at {ip} port {port})")
        }
        _ => String::new(),
    };
    eprintln!("scoutfs fence-local: fencing mount {rid}{why}");
    let wait = Duration::from_millis(a.kill_wait_ms);
    let out = fence_local(&dir, rid, fsid, wait)
        .map_err(|e| format!("fence-local: mount {rid} may still run: {e}"))?;
    let left = match out {
        LocalFenceOutcome::NoRecord => {
            eprintln!(
                "scoutfs fence-local: no record of mount {rid} in {}: it unmounted, or never \
                 mounted on this host; fenced",
                dir.display()
            );
            None
        }
        LocalFenceOutcome::Gone {
            record,
            why,
            detached,
            left,
        } => {
            let what = if detached {
                format!(
                    "; its dead FUSE mount on {} was detached",
                    record.mountpoint.display()
                )
            } else {
                String::new()
            };
            eprintln!(
                "scoutfs fence-local: mount {rid} (pid {}) is gone: {why}{what}; fenced",
                record.pid
            );
            left
        }
        LocalFenceOutcome::Killed {
            record,
            detached,
            left,
        } => {
            let mp = record.mountpoint.display();
            let what = if detached {
                format!("detached its FUSE mount on {mp}")
            } else {
                format!("nothing was mounted on {mp} any more")
            };
            eprintln!(
                "scoutfs fence-local: killed mount {rid} (pid {}) and {what}; fenced",
                record.pid
            );
            left
        }
    };
    if let Some(e) = left {
        eprintln!("scoutfs fence-local: warning: the record stays: {e}");
    }
    Ok(ExitCode::SUCCESS)
}
