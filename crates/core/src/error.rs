//! The core's errors.
//!
//! Three kinds matter to callers and are kept apart on purpose:
//! - [`Error::Stale`]: a block's header does not match the reference that led
//!   to it. The block was rewritten after the roots were read; a reader
//!   re-reads newer roots and retries (bounded and counted). Never shown to
//!   users of a mount.
//! - [`Error::Corrupt`]: the bytes are wrong where they should be right: a bad
//!   checksum on a block whose header matches, an invalid structure, a btree
//!   that contradicts itself. Named by [`CorruptKind`] (see
//!   `docs/corruption.md`), counted, logged with blkno/seq/expected; EIO.
//! - [`Error::Io`]: the device failed.
//!
//! The rest say who must act: the server answered with an errno
//! ([`Error::Server`], which reaches a FUSE caller as that errno), the
//! connection is gone ([`Error::Disconnected`]), a peer broke the protocol
//! ([`Error::Protocol`]), the caller's arguments or devices are wrong
//! ([`Error::Config`]), and so on. [`Error::errno`] is the one place an
//! error becomes an errno; [`Error::context`] adds what was being done
//! without changing which it is.

use std::fmt;

/// What was found corrupt. Each kind has a stable name for logs and docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorruptKind {
    /// A block's header matches its reference but its crc does not.
    BlockCrc,
    /// A block's contents are not a valid structure of its kind.
    BlockInvalid,
    /// A super block fails validation.
    SuperInvalid,
    /// A btree block's level is not the one its parent implies.
    BtreeLevel,
    /// A parent block has no child for a key within its bounds.
    BtreeNoChildRef,
    /// A btree item lies outside the key range its parent gives its block.
    BtreeKeyBounds,
    /// An item value has the wrong size or content for its key.
    ItemInvalid,
    /// A free extent overlaps another, or a freed block is already free.
    AllocOverlap,
    /// An allocator's recorded totals disagree with its contents.
    AllocTotals,
}

impl CorruptKind {
    pub fn name(&self) -> &'static str {
        match self {
            CorruptKind::BlockCrc => "SC_BLOCK_CRC",
            CorruptKind::BlockInvalid => "SC_BLOCK_INVALID",
            CorruptKind::SuperInvalid => "SC_SUPER_INVALID",
            CorruptKind::BtreeLevel => "SC_BTREE_BLOCK_LEVEL",
            CorruptKind::BtreeNoChildRef => "SC_BTREE_NO_CHILD_REF",
            CorruptKind::BtreeKeyBounds => "SC_BTREE_KEY_BOUNDS",
            CorruptKind::ItemInvalid => "SC_ITEM_INVALID",
            CorruptKind::AllocOverlap => "SC_ALLOC_OVERLAP",
            CorruptKind::AllocTotals => "SC_ALLOC_TOTALS",
        }
    }
}

/// A corruption report: what, where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    pub kind: CorruptKind,
    pub blkno: u64,
    pub seq: u64,
    pub detail: String,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corruption {}: block {} seq {:#018x}: {}",
            self.kind.name(),
            self.blkno,
            self.seq,
            self.detail
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A block was rewritten after the roots that led to it were read.
    #[error("stale block {blkno}: expected seq {want_seq:#018x}, {found}")]
    Stale {
        blkno: u64,
        want_seq: u64,
        found: String,
    },
    /// Bytes that should be right are wrong (`docs/corruption.md`).
    #[error("{0}")]
    Corrupt(Box<Corruption>),
    /// A device or file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// No free space for what was asked.
    #[error("out of space: {0}")]
    NoSpace(String),
    /// The server answered a request with an errno; callers see that
    /// errno. `cause` says more when the server's log has it (corruption
    /// behind an EIO).
    #[error("the server failed {what}: {}{cause}", std::io::Error::from_raw_os_error(*.errno))]
    Server {
        what: &'static str,
        errno: i32,
        cause: String,
    },
    /// An operation of this process failed with an errno.
    #[error("{what}: {}", std::io::Error::from_raw_os_error(*.errno))]
    Errno { what: String, errno: i32 },
    /// The connection to the server is closed or could not be made.
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// The server refused this mount (another filesystem, another format
    /// version, the wrong cluster key, or a mount it already forgot).
    #[error("refused: {0}")]
    Refused(String),
    /// Nothing answered in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A peer sent what the protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The caller's arguments, options or devices are wrong.
    #[error("{0}")]
    Config(String),
    /// Another mount or process holds what this one needs (a quorum slot,
    /// a newer election).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A mount could not be fenced, or a fence agent refused.
    #[error("fencing: {0}")]
    Fence(String),
    /// The mount can no longer commit: an earlier commit failed. `errno` is
    /// that failure's.
    #[error("the mount can't commit: {why}")]
    Shutdown { errno: i32, why: String },
    /// A thread of ours ended, or a limit the layers above enforce was
    /// passed: a bug, reported instead of a panic.
    #[error("internal error: {0}")]
    Internal(String),
    /// What was being done when `source` happened.
    #[error("{what}: {source}")]
    Context { what: String, source: Box<Error> },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn corrupt(kind: CorruptKind, blkno: u64, seq: u64, detail: impl Into<String>) -> Error {
        Error::Corrupt(Box::new(Corruption {
            kind,
            blkno,
            seq,
            detail: detail.into(),
        }))
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// This error, saying what was being done; its kind and errno stay.
    pub fn context(self, what: impl Into<String>) -> Error {
        Error::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// The error under any context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }

    /// The corruption this error reports, if it is one.
    pub fn corruption(&self) -> Option<&Corruption> {
        match self.root() {
            Error::Corrupt(c) => Some(c),
            _ => None,
        }
    }

    /// The errno a filesystem call returns for this error: the one place
    /// errors become errnos.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Stale { .. } | Error::Corrupt(_) | Error::Io { .. } => libc::EIO,
            Error::NoSpace(_) => libc::ENOSPC,
            Error::Server { errno, .. } | Error::Errno { errno, .. } => *errno,
            Error::Shutdown { errno, .. } => *errno,
            Error::Disconnected(_) => libc::ENOTCONN,
            Error::Refused(_) => libc::ECONNREFUSED,
            Error::Timeout(_) => libc::ETIMEDOUT,
            Error::Protocol(_) => libc::EPROTO,
            Error::Config(_) => libc::EINVAL,
            Error::Conflict(_) => libc::EBUSY,
            Error::Fence(_) | Error::Internal(_) => libc::EIO,
            Error::Context { source, .. } => source.errno(),
        }
    }
}

/// Adds context to a result's error.
pub trait ResultExt<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.context(what()))
    }
}

/// Checks an invariant of a write path; a violation is a bug. Debug builds
/// (the tests) panic at once; release builds return [`Error::Internal`] so
/// the commit fails and nothing is written from a state that is wrong.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            let msg = format!($($arg)+);
            debug_assert!(false, "invariant: {msg}");
            return Err($crate::error::Error::Internal(format!("invariant: {msg}")));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_pass_through_context() {
        let e = Error::Server {
            what: "commit",
            errno: libc::ENOSPC,
            cause: String::new(),
        };
        let e = e.context("final commit").context("unmount");
        assert_eq!(e.errno(), libc::ENOSPC);
        assert_eq!(
            e.to_string(),
            format!(
                "unmount: final commit: the server failed commit: {}",
                std::io::Error::from_raw_os_error(libc::ENOSPC)
            )
        );
        let c = Error::corrupt(CorruptKind::BlockCrc, 7, 9, "x").context("reading");
        assert_eq!(c.corruption().map(|c| c.blkno), Some(7));
        assert_eq!(c.errno(), libc::EIO);
    }
}
