//! Cluster range locks: the shared types, the client and server state
//! machines.
//!
//! # Locks, modes and names
//!
//! A lock covers an inclusive key range `[start, end]` and is named by its
//! start key. Lock ranges never overlap; the naming functions below
//! ([`inode_lock_range`], [`index_lock_range`], [`rename_lock_range`],
//! [`orphan_lock_range`], [`zone_lock_range`]) are the only ranges in use.
//! Modes ([`LockMode`]):
//! - `Read`: many mounts may read and cache items;
//! - `Write`: one mount reads and writes; it also satisfies `Read` users;
//! - `WriteOnly`: many mounts blindly create, delete or add deltas, never
//!   read (index-like items whose writers know overwriting is safe);
//! - `Null`: nothing; how a lock is given up.
//!
//! Locally a granted mode *satisfies* a wanted mode if they are equal or the
//! grant is `Write` and `Read` is wanted ([`LockMode::satisfies`]). Between
//! different mounts two modes are *compatible* if either is `Null` or both
//! are `Read` or both `WriteOnly` ([`modes_compatible`]).
//!
//! The mount's lock client is [`client::LockClient`] (one per mount), the
//! server's lock service [`server::LockServer`]; both are state machines
//! without I/O. Their drivers are the mount's `mount::locks` and the
//! server's message loop.

pub mod client;
pub mod server;
#[cfg(test)]
mod tests;

use scoutfs_format::key::{ty, zone};
use scoutfs_format::Key;
use std::fmt;

/// Inode numbers (or seq values) covered by one inode (or index) lock.
pub const LOCK_GROUP_NR: u64 = 1024;
const LOCK_GROUP_MASK: u64 = LOCK_GROUP_NR - 1;

/// Invalidations queued per lock. The server keeps at most one outstanding
/// per lock and mount, so more than this is a protocol error.
pub const INVALIDATIONS_QUEUED_MAX: usize = 4;

/// Entries in one LOCK_RECOVER answer (a limit of the wire format).
pub use scoutfs_format::wire::RECOVER_ENTRIES_MAX;

/// The mode of a cluster lock, as on the wire.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    Null = 0,
    Read = 1,
    Write = 2,
    WriteOnly = 3,
}

impl LockMode {
    /// Every mode, in wire order (index = value).
    pub const ALL: [LockMode; 4] = [
        LockMode::Null,
        LockMode::Read,
        LockMode::Write,
        LockMode::WriteOnly,
    ];

    pub fn from_u8(v: u8) -> Option<LockMode> {
        LockMode::ALL.get(v as usize).copied()
    }

    /// Holders may read (and cache) items.
    pub fn can_read(self) -> bool {
        matches!(self, LockMode::Read | LockMode::Write)
    }

    /// Holders may create, change or delete items.
    pub fn can_write(self) -> bool {
        matches!(self, LockMode::Write | LockMode::WriteOnly)
    }

    /// Whether a lock granted in `self` lets a local user of `want` in.
    pub fn satisfies(self, want: LockMode) -> bool {
        self == want || (self == LockMode::Write && want == LockMode::Read)
    }

    /// The index of this mode in per-mode counts (`LockView::users`).
    pub fn idx(self) -> usize {
        self as usize
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LockMode::Null => "null",
            LockMode::Read => "read",
            LockMode::Write => "write",
            LockMode::WriteOnly => "write_only",
        };
        f.write_str(s)
    }
}

/// Whether two different mounts may hold these modes at once.
pub fn modes_compatible(a: LockMode, b: LockMode) -> bool {
    a == LockMode::Null
        || b == LockMode::Null
        || (a == b && matches!(a, LockMode::Read | LockMode::WriteOnly))
}

/// The payload of every LOCK message: requests, grants, invalidations and
/// their responses. `key` is the lock's start key; `write_seq` is set in
/// grants of write modes and zero elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockMsg {
    pub key: Key,
    pub write_seq: u64,
    pub old_mode: LockMode,
    pub new_mode: LockMode,
}

/// One lock a mount reports to a new server during recovery: the lock's
/// start key, the mode the mount holds (never `Null`; the old mode while an
/// invalidation is being carried out) and the `write_seq` of its grant
/// (zero for modes that can't write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoverEntry {
    pub key: Key,
    pub mode: LockMode,
    pub write_seq: u64,
}

/// The inode group lock of `ino`: every item of 1024 consecutive inodes.
pub fn inode_lock_range(ino: u64) -> (Key, Key) {
    let start = Key::new(zone::FS, ino & !LOCK_GROUP_MASK, 0, 0, 0, 0);
    let end = Key::new(
        zone::FS,
        ino | LOCK_GROUP_MASK,
        u8::MAX,
        u64::MAX,
        u64::MAX,
        u8::MAX,
    );
    (start, end)
}

/// The inode index lock of index type `ity` (meta_seq or data_seq) that
/// covers 1024 consecutive seq values around `seq`, for all inodes.
pub fn index_lock_range(ity: u8, seq: u64) -> (Key, Key) {
    let start = Key::new(zone::INODE_INDEX, 0, ity, seq & !LOCK_GROUP_MASK, 0, 0);
    let end = Key::new(
        zone::INODE_INDEX,
        0,
        ity,
        seq | LOCK_GROUP_MASK,
        u64::MAX,
        u8::MAX,
    );
    (start, end)
}

/// The global rename lock: one key that names no item.
pub fn rename_lock_range() -> (Key, Key) {
    let k = Key::new(zone::LOCK, 0, ty::RENAME, 0, 0, 0);
    (k, k)
}

/// The lock of every orphan item.
pub fn orphan_lock_range() -> (Key, Key) {
    zone_lock_range(zone::ORPHAN)
}

/// A lock of a whole zone (orphans, totl, indx, quota).
pub fn zone_lock_range(z: u8) -> (Key, Key) {
    let start = Key::new(z, 0, 0, 0, 0, 0);
    let end = Key::new(z, u64::MAX, u8::MAX, u64::MAX, u64::MAX, u8::MAX);
    (start, end)
}
