//! The wall clock, as the format's timestamps.
//!
//! Inode times, quorum events and mkfs all take "now" from here, so a
//! reader finds one place that says what a timestamp is.

use scoutfs_format::Timespec;

/// The current time. A clock set before 1970 reads as the epoch.
pub fn now_timespec() -> Timespec {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timespec::new(d.as_secs(), d.subsec_nanos())
}
