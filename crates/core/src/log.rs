//! What every log line of a mount says about the mount: its id (rid) and
//! the term of the server it talks to.
//!
//! The core logs with `tracing`, one target per module
//! (`scoutfs_core::cluster::lock::server`, ...); the binary chooses the
//! levels and formats each line with these two values. They are
//! process-wide because a process serves one mount; in-process tests that
//! run several show the last one set.

use std::sync::atomic::{AtomicU64, Ordering};

static RID: AtomicU64 = AtomicU64::new(0);
static TERM: AtomicU64 = AtomicU64::new(0);

/// This process's mount id, once it has one.
pub fn set_rid(rid: u64) {
    RID.store(rid, Ordering::Relaxed);
}

/// The term of the server this mount was last greeted by (or serves as).
pub fn set_term(term: u64) {
    TERM.store(term, Ordering::Relaxed);
}

/// The mount id for log lines; 0 before there is one.
pub fn rid() -> u64 {
    RID.load(Ordering::Relaxed)
}

/// The server term for log lines; 0 before the first greeting.
pub fn term() -> u64 {
    TERM.load(Ordering::Relaxed)
}
