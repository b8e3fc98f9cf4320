//! Messages between a mount's client and the server.
//!
//! These are the in-memory requests and responses; `wire` encodes them as
//! frames, `stream` carries them reliably (sequence numbers,
//! acknowledgements, resends) and `tcp` over sockets. Every request gets
//! exactly one response with the same id. Requests go both ways: the client asks for log trees, roots,
//! inode numbers, locks, statistics and which inodes the mounts have open;
//! the server asks a client to give up (invalidate) a lock, to commit its
//! transaction, to say which inodes of a group it has open, or (a new
//! server) to report the locks it holds.

use crate::cluster::lock::{LockMsg, RecoverEntry};
use crate::types::Roots;
use scoutfs_format::log_trees::LogTrees;
use scoutfs_format::Key;

/// Requests a client sends to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The first message of a mount: its random id.
    Greeting { rid: u64 },
    /// A run of inode numbers for new inodes.
    AllocInodes { count: u64 },
    /// Opens the mount's next transaction on its log tree.
    GetLogTrees,
    /// Records the mount's committed log tree and opens its next
    /// transaction (answered like `GetLogTrees`).
    CommitLogTrees(Box<LogTrees>),
    /// The roots of the last written super block.
    GetRoots,
    /// A lock request {key, old mode, new mode}.
    Lock(LockMsg),
    /// Space and inode counts.
    Statfs,
    /// Grow the devices to these totals, in their blocks (0: unchanged).
    ResizeDevices { meta: u64, data: u64 },
    /// The mount is unmounting: forget it.
    Farewell,
    /// Which inodes of a group any mount has open (the server asks every
    /// mount and answers their union).
    OpenInoMap { group: u64 },
    /// The last seq whose transactions are all complete, after the
    /// transactions open now have committed.
    GetLastSeq,
    /// The blocks operations wait for on every mount (the server asks
    /// each and answers their union).
    DataWaiting(WaitingQuery),
    /// Fails operations waiting for offline data on every mount.
    DataWaitErr(WaitFail),
    /// Blocks operations of this mount began to wait for (at most
    /// [`scoutfs_format::wire::DATA_WAITING_MAX`]); the server tells every
    /// other mount, for those that follow the waiters.
    WaitersNew(Vec<WaitingBlock>),
}

/// Which waiting blocks to list: those after (`after_ino`,
/// `after_iblock`), at most `max` (at most
/// [`scoutfs_format::wire::DATA_WAITING_MAX`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitingQuery {
    pub after_ino: u64,
    pub after_iblock: u64,
    pub max: u32,
}

/// A block that operations wait for, and their ops (READ 1, WRITE 2,
/// CHANGE_SIZE 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WaitingBlock {
    pub ino: u64,
    pub iblock: u64,
    pub ops: u8,
}

/// The waiting operations to fail: of `ino`, on blocks `from..to`, with
/// an op in `ops`, with `errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitFail {
    pub ino: u64,
    pub from: u64,
    pub to: u64,
    pub ops: u8,
    pub errno: i32,
}

/// One group's open-inode map: bit `ino % 1024` is set when the inode is
/// open (see [`scoutfs_format::wire::OPEN_INO_MAP_GROUP_NR`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenInoMap {
    pub group: u64,
    pub bits: [u64; 16],
}

impl OpenInoMap {
    /// The group an inode belongs to.
    pub fn group_of(ino: u64) -> u64 {
        ino / scoutfs_format::wire::OPEN_INO_MAP_GROUP_NR
    }

    /// A map of `group` with every inode open: the answer for a mount
    /// that can't say (not connected), so that nothing of it is deleted.
    pub fn all(group: u64) -> OpenInoMap {
        OpenInoMap {
            group,
            bits: [u64::MAX; 16],
        }
    }

    fn bit(ino: u64) -> (usize, u64) {
        let i = ino % scoutfs_format::wire::OPEN_INO_MAP_GROUP_NR;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Marks `ino` (of this map's group) open.
    pub fn set(&mut self, ino: u64) {
        let (w, b) = OpenInoMap::bit(ino);
        self.bits[w] |= b;
    }

    /// Whether `ino` (of this map's group) is open.
    pub fn test(&self, ino: u64) -> bool {
        let (w, b) = OpenInoMap::bit(ino);
        self.bits[w] & b != 0
    }

    /// Adds the open inodes of `other` (of the same group).
    pub fn union(&mut self, other: &OpenInoMap) {
        for (a, b) in self.bits.iter_mut().zip(other.bits) {
            *a |= b;
        }
    }
}

/// Filesystem totals for statfs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatfsInfo {
    pub total_meta_blocks: u64,
    /// Free metadata blocks, the reserve included.
    pub free_meta_blocks: u64,
    /// Of the free metadata blocks, those kept for operations that free
    /// space: no allocating operation can have them.
    pub reserved_meta_blocks: u64,
    pub total_data_blocks: u64,
    pub free_data_blocks: u64,
    pub inode_count: u64,
    pub fsid: u64,
}

/// Responses from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Greeting {
        fsid: u64,
        server_term: u64,
    },
    Inodes {
        ino: u64,
        nr: u64,
    },
    LogTrees(Box<LogTrees>),
    Done,
    Roots(Roots),
    /// A lock grant {key, write seq, old mode, new mode}.
    Lock(LockMsg),
    Statfs(StatfsInfo),
    OpenInoMap(Box<OpenInoMap>),
    LastSeq(u64),
    DataWaiting(Vec<WaitingBlock>),
    /// How many (waiters failed).
    Count(u64),
    /// The request failed; an errno.
    Error(i32),
}

/// Requests the server sends to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerRequest {
    /// Give the lock up from old mode to new mode, then answer.
    Invalidate(LockMsg),
    /// Commit the open transaction.
    SyncLogTrees,
    /// A new server recovering locks: report the locks you hold from
    /// `first` on (`lock::LockClient::recovery_batch`).
    LockRecover { first: Key },
    /// Which inodes of a group this mount has open.
    OpenInoMap { group: u64 },
    /// The blocks operations of this mount wait for.
    DataWaiting(WaitingQuery),
    /// Fail this mount's operations waiting for offline data.
    DataWaitErr(WaitFail),
    /// Blocks operations of another mount began to wait for.
    WaitersNew(Vec<WaitingBlock>),
}

/// A client's answers to the server's requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientResponse {
    InvalidateDone(LockMsg),
    Done,
    /// Locks held from the asked key on, ascending, at most
    /// `lock::RECOVER_ENTRIES_MAX` of them; `more` when more follow (the
    /// server asks again from after the last key).
    LockRecover {
        entries: Vec<RecoverEntry>,
        more: bool,
    },
    OpenInoMap(Box<OpenInoMap>),
    DataWaiting(Vec<WaitingBlock>),
    Count(u64),
}

/// Everything that travels from a client to the server.
#[derive(Debug)]
pub enum ToServer {
    Request { id: u64, req: Request },
    Response { id: u64, resp: ClientResponse },
}

/// Everything that travels from the server to a client.
#[derive(Debug)]
pub enum ToClient {
    Response { id: u64, resp: Response },
    Request { id: u64, req: ServerRequest },
}
