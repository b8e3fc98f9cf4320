//! The filesystem: POSIX namespace, attributes, xattrs and file data on
//! top of items, cluster locks and the transaction.
//!
//! One API serves FUSE and in-process tests. Every
//! operation follows the same order: take the cluster locks it needs (inode
//! groups in ascending inode order, then index groups), hold the
//! transaction, change items in the item cache, release the hold, drop the
//! locks. No operation does disk I/O except misses in the item cache and
//! file data.
//!
//! Items of an inode (all in its 1024-inode lock group):
//! - the inode item (FS, ino, INODE);
//! - per directory entry three items with the same value: DIRENT (dir,
//!   name hash, pos) for lookup, READDIR (dir, pos) for readdir order,
//!   LINK_BACKREF (target, dir, pos) for ino-to-path;
//! - SYMLINK (ino, part) holding the target;
//! - DATA_EXTENT (ino, last block, len) mapping file blocks;
//! - XATTR (ino, name hash, id, part).
//!
//! Index items (INODE_INDEX, META_SEQ/DATA_SEQ, seq, ino) follow each
//! inode's meta_seq and data_seq under WRITE_ONLY index locks.
//!
//! Errors are [`FsError`]: an errno, mapped in one place from lower errors.

pub mod acl;
pub mod archive;
pub mod data;
pub mod dir;
pub mod inode;
pub mod offline;
pub mod pages;
pub mod paths;
pub mod types;
pub mod wait;
pub mod xattr;

use crate::cluster::client::Client;

use crate::error::Error;
use crate::mount::item::ItemCache;
use crate::mount::locks::{LockGuard, Locks};
use crate::mount::trans::Trans;
use crate::store::block::BlockCache;
use crate::store::commit::check_growth;
use crate::store::dev::BlockDev;
use crate::store::forest::ForestSource;
use crate::types::Roots;
use scoutfs_format::Key;
use std::sync::{Arc, Mutex};

/// An errno from a filesystem operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsError(pub i32);

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for FsError {}

impl From<Error> for FsError {
    /// Corruption is logged once: the block cache logs bad blocks as it
    /// reads them, this logs the rest (btree and item corruption).
    fn from(e: Error) -> FsError {
        use crate::error::CorruptKind::{BlockCrc, BlockInvalid};
        if let Some(c) = e.corruption() {
            if !matches!(c.kind, BlockCrc | BlockInvalid) {
                crate::store::block::log_corruption(c);
            }
        }
        FsError(e.errno())
    }
}

pub type FsResult<T> = std::result::Result<T, FsError>;

pub const ENOENT: FsError = FsError(libc::ENOENT);
pub const EEXIST: FsError = FsError(libc::EEXIST);
pub const ENOTDIR: FsError = FsError(libc::ENOTDIR);
pub const EISDIR: FsError = FsError(libc::EISDIR);
pub const ENOTEMPTY: FsError = FsError(libc::ENOTEMPTY);
pub const EINVAL: FsError = FsError(libc::EINVAL);
pub const ENAMETOOLONG: FsError = FsError(libc::ENAMETOOLONG);
pub const EMLINK: FsError = FsError(libc::EMLINK);
pub const EFBIG: FsError = FsError(libc::EFBIG);
pub const ENODATA: FsError = FsError(libc::ENODATA);
pub const ERANGE: FsError = FsError(libc::ERANGE);
pub const EPERM: FsError = FsError(libc::EPERM);
pub const EIO: FsError = FsError(libc::EIO);
pub const ENOSPC: FsError = FsError(libc::ENOSPC);
pub const EOPNOTSUPP: FsError = FsError(libc::EOPNOTSUPP);
pub const ELOOP: FsError = FsError(libc::ELOOP);
pub const EXDEV: FsError = FsError(libc::EXDEV);
pub const E2BIG: FsError = FsError(libc::E2BIG);
pub const EACCES: FsError = FsError(libc::EACCES);

/// Runs `attempt` (an `_or_wait` operation) until it does not wait,
/// blocking this thread meanwhile.
pub(crate) fn blocking<T>(
    waits: &wait::DataWaits,
    attempt: impl Fn(wait::MakeResume<'_>) -> Option<FsResult<T>>,
) -> FsResult<T> {
    waits
        .block(|r| attempt(r).map(|x| x.map_err(|e| e.0)))
        .map_err(FsError)
}

/// EPERM if `a` is under retention (see `archive`).
pub(crate) fn check_retention(a: &types::Attr) -> FsResult<()> {
    if a.inode.flags.get() & scoutfs_format::inode::INO_FLAG_RETENTION != 0 {
        return Err(EPERM);
    }
    Ok(())
}

/// Sends this mount's new waiters to the server until the mount goes.
fn send_new_waiters(
    rx: &std::sync::mpsc::Receiver<wait::Waiting>,
    client: &std::sync::Weak<Client>,
) {
    use crate::cluster::net::msg::WaitingBlock;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < scoutfs_format::wire::DATA_WAITING_MAX {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let Some(client) = client.upgrade() else {
            return;
        };
        let blocks = batch
            .iter()
            .map(|w| WaitingBlock {
                ino: w.ino,
                iblock: w.iblock,
                ops: w.ops,
            })
            .collect();
        if let Err(e) = client.waiters_new(blocks) {
            tracing::debug!("telling the server of new waiters: {e}");
        }
    }
}

impl Fs {
    /// The roots of the last written super block.
    pub fn roots(&self) -> crate::error::Result<Roots> {
        self.src.roots()
    }
}

/// Runs of inode numbers handed out by the server.
#[derive(Default)]
struct InoRun {
    next: u64,
    end: u64,
}

/// Stripes of the local inode mutexes.
const INODE_MUTEX_STRIPES: usize = 256;

/// Inode numbers asked of the server at a time.
pub const INODE_ALLOC_NR: u64 = 10 * 1024;

/// When reads update access times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AtimeMode {
    /// When the atime is not after the mtime or ctime, or is a day old:
    /// "has it been read since it changed" stays answerable, and most
    /// reads write nothing (Linux's default).
    #[default]
    Relatime,
    /// At every read that reaches the filesystem.
    Strict,
    /// Never.
    Off,
}

/// Options of the filesystem layer.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// Enforce POSIX ACLs stored in `system.posix_acl_*` xattrs.
    pub acl: bool,
    pub atime: AtimeMode,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            acl: true,
            atime: AtimeMode::default(),
        }
    }
}

/// The mounted filesystem.
pub struct Fs {
    pub(crate) items: Arc<ItemCache>,
    pub(crate) trans: Arc<Trans>,
    pub(crate) locks: Arc<Locks>,
    pub(crate) src: ForestSource<Arc<Client>>,
    pub(crate) data: Arc<dyn BlockDev>,
    pub(crate) client: Arc<Client>,
    inos: Mutex<InoRun>,
    /// Local per-inode serialisation of read-modify-write changes (the
    /// cluster lock only excludes other mounts): striped mutexes.
    ilocks: Vec<Mutex<()>>,
    /// Files this mount's writes preallocated past their end, to trim at
    /// their last close here.
    preallocated: Mutex<std::collections::HashSet<u64>>,
    /// Inodes whose last name went away on this mount and that may still
    /// be waiting for the kernel to forget them to be freed (see
    /// [`Fs::evict`]).
    unlinked: Mutex<std::collections::HashSet<u64>>,
    pub opts: FsOptions,
    pub fsid: u64,
    /// Operations waiting for offline data to be staged.
    pub waits: Arc<wait::DataWaits>,
    /// The versions the kernel's cached pages of open files hold.
    pub pages: Arc<pages::PageVersions>,
}

impl Fs {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        items: Arc<ItemCache>,
        trans: Arc<Trans>,
        locks: Arc<Locks>,
        client: Arc<Client>,
        cache: Arc<BlockCache>,
        data: Arc<dyn BlockDev>,
        opts: FsOptions,
        fsid: u64,
    ) -> Fs {
        let src = ForestSource::new(client.clone(), cache);
        let waits = wait::DataWaits::new(locks.clone());
        let w = Arc::downgrade(&waits);
        // The server asks every mount for its waiters (data-waiting and
        // data-wait-err on any mount cover them all).
        let wh = w.clone();
        locks.set_waiters_handler(Box::new(move |req| {
            use crate::cluster::net::msg::{ClientResponse, ServerRequest, WaitingBlock};
            let Some(w) = wh.upgrade() else {
                return match req {
                    ServerRequest::DataWaiting(_) => ClientResponse::DataWaiting(Vec::new()),
                    ServerRequest::WaitersNew(_) => ClientResponse::Done,
                    _ => ClientResponse::Count(0),
                };
            };
            match req {
                ServerRequest::DataWaiting(q) => ClientResponse::DataWaiting(
                    w.list(q.after_ino, q.after_iblock, q.max as usize)
                        .into_iter()
                        .map(|x| WaitingBlock {
                            ino: x.ino,
                            iblock: x.iblock,
                            ops: x.ops,
                        })
                        .collect(),
                ),
                ServerRequest::DataWaitErr(f) => {
                    ClientResponse::Count(w.fail(f.ino, f.from, f.to, f.ops, f.errno) as u64)
                }
                ServerRequest::WaitersNew(ws) => {
                    w.feed.publish(wait::FeedItem {
                        local: false,
                        blocks: ws
                            .iter()
                            .map(|b| wait::Waiting {
                                ino: b.ino,
                                iblock: b.iblock,
                                ops: b.ops,
                            })
                            .collect(),
                    });
                    ClientResponse::Done
                }
                _ => ClientResponse::Count(0),
            }
        }));
        // New waiters of this mount go to the server, which tells the
        // other mounts' followers; a thread sends them, in batches, so
        // that no operation waits on the server to register a waiter.
        {
            let (tx, rx) = std::sync::mpsc::channel::<wait::Waiting>();
            let client = Arc::downgrade(&client);
            let spawned = std::thread::Builder::new()
                .name("scoutfs-waiters".into())
                .spawn(move || send_new_waiters(&rx, &client));
            match spawned {
                Ok(_) => {
                    let tx = Mutex::new(tx);
                    waits.set_on_new(Box::new(move |w| {
                        let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(w);
                    }));
                }
                Err(e) => tracing::warn!("starting the new waiters thread: {e}"),
            }
        }
        // Another mount is about to change inodes this mount has waiters
        // on: they look again once it has.
        locks.set_lock_lost(Box::new(move |start, end| {
            if start.zone == scoutfs_format::key::zone::FS {
                if let Some(w) = w.upgrade() {
                    w.wake_range(start.first, end.first);
                }
            }
        }));
        Fs {
            items,
            trans,
            locks,
            src,
            data,
            client,
            inos: Mutex::default(),
            ilocks: (0..INODE_MUTEX_STRIPES).map(|_| Mutex::new(())).collect(),
            preallocated: Mutex::default(),
            unlinked: Mutex::default(),
            opts,
            fsid,
            waits,
            pages: Arc::default(),
        }
    }

    /// Adds one to `ino`'s data_version: its contents or size changed
    /// here (under its WRITE lock).
    pub(crate) fn bump_data_version(&self, ino: u64, i: &mut scoutfs_format::inode::Inode) {
        let before = i.data_version.get();
        i.data_version = (before + 1).into();
        self.pages.changed(ino, before, before + 1);
    }

    /// Drops every clean item from the item cache.
    pub fn drop_item_cache(&self) {
        self.items.invalidate(&Key::MIN, &Key::MAX);
    }

    pub fn trans(&self) -> &Arc<Trans> {
        &self.trans
    }

    /// Serialises local changes to these inodes. Taken after the cluster
    /// locks and before the transaction hold, always in stripe order.
    pub(crate) fn lock_local(&self, inos: &[u64]) -> Vec<std::sync::MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = inos
            .iter()
            .map(|i| (*i as usize).wrapping_mul(0x9e37_79b9) % INODE_MUTEX_STRIPES)
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .map(|i| self.ilocks[i].lock().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    /// A new inode number, from the mount's current run.
    pub(crate) fn alloc_ino(&self) -> FsResult<u64> {
        let mut run = self.inos.lock().unwrap_or_else(|p| p.into_inner());
        if run.next >= run.end {
            let (ino, nr) = self.client.alloc_inodes(INODE_ALLOC_NR)?;
            if nr == 0 {
                return Err(ENOSPC);
            }
            *run = InoRun {
                next: ino,
                end: ino + nr,
            };
        }
        run.next += 1;
        Ok(run.next - 1)
    }

    /// Reads an item under a lock.
    pub(crate) fn get(&self, g: &LockGuard, key: &Key) -> FsResult<Option<Vec<u8>>> {
        Ok(self.items.lookup(&self.src, &g.cover(), key)?)
    }

    /// The first item in `key..=last` under a lock.
    pub(crate) fn next(
        &self,
        g: &LockGuard,
        key: &Key,
        last: &Key,
    ) -> FsResult<Option<(Key, Vec<u8>)>> {
        Ok(self.items.next(&self.src, &g.cover(), key, last)?)
    }

    /// Up to `max` items in `key..=last` under a lock, in key order.
    pub(crate) fn next_many(
        &self,
        g: &LockGuard,
        key: &Key,
        last: &Key,
        max: usize,
    ) -> FsResult<Vec<(Key, Vec<u8>)>> {
        Ok(self
            .items
            .next_many(&self.src, &g.cover(), key, last, max)?)
    }

    /// Creates or replaces an item under a write lock.
    pub(crate) fn put(&self, g: &LockGuard, seq: u64, key: &Key, val: &[u8]) -> FsResult<()> {
        self.items.put(&self.src, &g.cover(), key, seq, val)?;
        g.dirtied(seq);
        Ok(())
    }

    /// Creates an item whose key can't exist yet (a new inode's items, an
    /// entry at a never-used readdir position): no read is needed.
    pub(crate) fn put_new(&self, g: &LockGuard, seq: u64, key: &Key, val: &[u8]) {
        self.items.put_blind(&g.cover(), key, seq, val);
        g.dirtied(seq);
    }

    /// Deletes an item under a write lock; false if it didn't exist.
    pub(crate) fn del(&self, g: &LockGuard, seq: u64, key: &Key) -> FsResult<bool> {
        let found = self.items.delete(&self.src, &g.cover(), key, seq)?;
        g.dirtied(seq);
        Ok(found)
    }

    /// Commits everything changed so far (fsync, sync, syncfs).
    pub fn sync(&self) -> FsResult<()> {
        if self.trans.is_dirty() {
            self.trans.commit()?;
        }
        Ok(())
    }

    /// Commits when the transaction has grown past its limits; called after
    /// each changing operation, with no hold.
    pub(crate) fn maybe_commit(&self) -> FsResult<()> {
        if self.trans.needs_commit() {
            self.trans.commit()?;
        }
        Ok(())
    }

    /// Filesystem totals for statfs.
    pub fn statfs(&self) -> FsResult<crate::cluster::net::msg::StatfsInfo> {
        Ok(self.client.statfs()?)
    }

    /// Grows the devices to `meta_blocks` 64 KiB and `data_blocks` 4 KiB
    /// blocks (0: unchanged), once the devices themselves have grown. What
    /// this mount can check it checks first, so that a refusal says why;
    /// the server checks again, adds the new blocks to the free space in a
    /// commit, and every mount allocates from them at its next refill.
    pub fn resize_devices(&self, meta_blocks: u64, data_blocks: u64) -> crate::error::Result<()> {
        let st = self.client.statfs()?;
        let now = (st.total_meta_blocks, st.total_data_blocks);
        let meta_dev = self.src.cache().dev().clone();
        let ask = (meta_blocks, data_blocks);
        if check_growth(now, ask, meta_dev.as_ref(), self.data.as_ref(), 0)?.is_none() {
            return Ok(());
        }
        self.client.resize_devices(meta_blocks, data_blocks)
    }
}
