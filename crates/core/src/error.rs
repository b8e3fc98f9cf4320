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
    #[error("stale block {blkno}: expected seq {want_seq:#018x}, {found}")]
    Stale {
        blkno: u64,
        want_seq: u64,
        found: String,
    },
    #[error("{0}")]
    Corrupt(Box<Corruption>),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("out of space: {0}")]
    NoSpace(String),
    #[error("{0}")]
    Invalid(String),
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

    /// The corruption this error reports, if it is one.
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            Error::Corrupt(c) => Some(c),
            _ => None,
        }
    }

    /// The errno a filesystem call returns for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Stale { .. } | Error::Corrupt(_) | Error::Io { .. } => libc_eio(),
            Error::NoSpace(_) => 28,
            Error::Invalid(_) => 22,
        }
    }
}

const fn libc_eio() -> i32 {
    5
}
