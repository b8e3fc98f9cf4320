//! The mount's transaction: one open at a time, committed as a whole.
//!
//! Changes to fs items are made while *holding* the transaction. A commit
//! (timer, sync/fsync, a lock invalidation that needs it, dirty limits,
//! unmount) stops new holders, waits for current ones to finish, and then,
//! in this order:
//! 1. flushes the data device, so file data is durable before the metadata
//!    that references it;
//! 2. inserts the item cache's dirty items into the mount's log btree;
//! 3. writes every dirty metadata block and flushes the metadata device;
//! 4. sends COMMIT_LOG_TREES with the new roots and allocator heads; the
//!    server records them and opens the next transaction in one commit
//!    before answering with it, so the transaction is now durable;
//! 5. marks the items clean, tells the lock client which seq committed,
//!    and takes up the next transaction.
//!
//! Holders must not hold twice on one thread (a commit waiting between the
//! two holds would deadlock); fs operations take one hold each.
//!
//! Allocation: the transaction's [`Writer`] allocates metadata blocks from
//! the mount's `meta_avail` list and frees into `meta_freed`; data extents
//! come from `data_avail` and freed ones go to `data_freed`. The server
//! refills and reclaims them as it opens each transaction.
//!
//! Space: a hold says whether its operation allocates ([`Trans::hold`]) or
//! only frees ([`Trans::hold_freeing`]: unlink, rmdir, truncate, punch,
//! the deletion of inodes). When the server's free metadata is down to
//! the reserve it keeps for freeing, it flags the mount's `meta_avail`
//! LOW: allocating holds then fail with ENOSPC, and freeing ones go on.
//! Before any hold, the open transaction must leave room in `meta_avail`
//! for its own commit: the commit writes every dirty item into the log
//! btree, which copies at most every leaf those items fall in (no more
//! than the items, nor than the tree's leaves plus those its new bytes
//! can fill) and their parents. When that bound nears what the list
//! holds, the transaction is committed first, and the server refills it.

use crate::cluster::client::Client;

use crate::error::{Error, Result};
use crate::mount::item::ItemCache;
use crate::rng::Rng;
use crate::store::block::ListState;
use crate::store::block::{BlockCache, Writer};
use crate::store::btree;
use crate::store::dev::BlockDev;
use scoutfs_format::consts::{ALLOC_FLAG_LOW, BLOCK_LG_SIZE};
use scoutfs_format::log_trees::LogTrees;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// File data written in a transaction past which a commit writes it back
/// before stopping writers.
pub const PREFLUSH_DATA_BYTES: u64 = 8 << 20;

/// When a transaction should be committed before it grows further, and
/// how much of it may be held in memory.
#[derive(Clone, Copy, Debug)]
pub struct TransLimits {
    pub dirty_items_max: usize,
    pub dirty_bytes_max: usize,
    /// Dirty metadata blocks kept in memory while the commit builds the log
    /// btree; more are written early (see `block`, "Memory").
    pub resident_blocks_max: usize,
}

impl Default for TransLimits {
    fn default() -> Self {
        TransLimits {
            dirty_items_max: 200_000,
            dirty_bytes_max: 64 << 20,
            resident_blocks_max: crate::store::block::DIRTY_RESIDENT_DEFAULT,
        }
    }
}

struct TransState {
    holders: usize,
    committing: bool,
    w: Option<Writer>,
    lt: LogTrees,
    /// Bytes of file data written since the last commit.
    data_bytes: u64,
    /// Inodes created less inodes deleted in the open transaction.
    inode_delta: i64,
    /// A commit failed: the mount can no longer make changes durable.
    /// Its errno and message.
    broken: Option<(i32, String)>,
    /// Data blocks the mount could allocate when the transaction opened.
    data_avail_at_open: u64,
    /// An early commit was asked for in this transaction.
    asked_early: bool,
    /// The committed log btree's (leaves, parent blocks).
    tree_shape: (u64, u64),
    /// When the transaction opened (and the server last said whether
    /// space is low).
    opened: Instant,
}

/// Metadata blocks an operation may allocate while it holds the
/// transaction (data allocator extents and the list blocks of freeing).
const OP_META_BLOCKS: u64 = 16;
/// How long an allocating hold refused for low space trusts the server's
/// word before it commits to ask again (the space may have come back).
const LOW_RECHECK: Duration = Duration::from_secs(1);

/// What the commit thread waits for.
#[derive(Default)]
struct CommitWake {
    soon: bool,
    stopped: bool,
}

/// Told the seq of each committed transaction.
pub type OnCommit = Box<dyn Fn(u64) + Send>;

pub struct Trans {
    st: Mutex<TransState>,
    cv: Condvar,
    client: Arc<Client>,
    items: Arc<ItemCache>,
    cache: Arc<BlockCache>,
    data: Arc<dyn BlockDev>,
    limits: TransLimits,
    on_commit: Mutex<Option<OnCommit>>,
    wake: Mutex<CommitWake>,
    wake_cv: Condvar,
}

/// A hold on the open transaction; released on drop.
pub struct TransHold<'a> {
    t: &'a Trans,
    seq: u64,
}

impl TransHold<'_> {
    /// The open transaction's seq: every item changed under this hold
    /// carries at least this seq.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Drop for TransHold<'_> {
    fn drop(&mut self) {
        let mut st = self.t.state();
        st.holders -= 1;
        if st.holders == 0 {
            self.t.cv.notify_all();
        }
    }
}

fn writer_for(cache: &Arc<BlockCache>, lt: &LogTrees, limits: &TransLimits) -> Writer {
    let mut w = Writer::new(
        cache.clone(),
        ListState::new(lt.meta_avail, lt.meta_freed),
        Rng::from_os(),
    );
    w.set_resident_max(limits.resident_blocks_max);
    w
}

impl Trans {
    /// Opens the mount's first transaction.
    pub fn open(
        client: Arc<Client>,
        items: Arc<ItemCache>,
        cache: Arc<BlockCache>,
        data: Arc<dyn BlockDev>,
        limits: TransLimits,
    ) -> Result<Trans> {
        let lt = client.get_log_trees()?;
        let w = Some(writer_for(&cache, &lt, &limits));
        let st = TransState {
            holders: 0,
            committing: false,
            w,
            data_avail_at_open: lt.data_avail.total_len.get(),
            tree_shape: btree::shape(cache.as_ref(), &lt.item_root)?,
            lt,
            data_bytes: 0,
            inode_delta: 0,
            broken: None,
            asked_early: false,
            opened: Instant::now(),
        };
        Ok(Trans {
            st: Mutex::new(st),
            cv: Condvar::new(),
            client,
            items,
            cache,
            data,
            limits,
            on_commit: Mutex::new(None),
            wake: Mutex::default(),
            wake_cv: Condvar::new(),
        })
    }

    fn wake(&self) -> std::sync::MutexGuard<'_, CommitWake> {
        self.wake.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the commit thread to commit now rather than at its interval.
    pub fn commit_soon(&self) {
        self.wake().soon = true;
        self.wake_cv.notify_all();
    }

    /// For the commit thread: waits until a commit is due (`interval` has
    /// passed or one was asked for). False once `stop_committer` was called.
    pub fn wait_commit_due(&self, interval: std::time::Duration) -> bool {
        let mut w = self.wake();
        if !w.soon && !w.stopped {
            w = self
                .wake_cv
                .wait_timeout(w, interval)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        w.soon = false;
        !w.stopped
    }

    /// Ends the commit thread's waiting.
    pub fn stop_committer(&self) {
        self.wake().stopped = true;
        self.wake_cv.notify_all();
    }

    /// Sets what to tell after each commit (the committed seq).
    pub fn set_on_commit(&self, f: OnCommit) {
        *self.on_commit.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TransState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the open transaction for an operation that may allocate
    /// space, waiting while a commit is under way. ENOSPC
    /// ([`Error::NoSpace`]) when metadata space is down to the reserve.
    pub fn hold(&self) -> Result<TransHold<'_>> {
        self.hold_as(true)
    }

    /// Holds the open transaction for an operation that only frees space
    /// (it may dirty items and blocks, but never fails for want of space).
    pub fn hold_freeing(&self) -> Result<TransHold<'_>> {
        self.hold_as(false)
    }

    fn hold_as(&self, allocating: bool) -> Result<TransHold<'_>> {
        let mut committed = false;
        loop {
            let mut st = self.state();
            while st.committing {
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if let Some((errno, why)) = &st.broken {
                return Err(Error::Shutdown {
                    errno: *errno,
                    why: why.clone(),
                });
            }
            let low = st.lt.meta_avail.flags.get() & ALLOC_FLAG_LOW != 0;
            let stale_low = low && allocating && st.opened.elapsed() >= LOW_RECHECK;
            let tight = self.avail(&st) < self.commit_need(&st) + OP_META_BLOCKS;
            if !committed && (tight || stale_low) {
                // Commit first: the server refills the list, and says
                // again whether space is low.
                drop(st);
                committed = true;
                self.commit()?;
                continue;
            }
            if allocating && low {
                return Err(Error::NoSpace(
                    "metadata space is down to the reserve kept for freeing".into(),
                ));
            }
            st.holders += 1;
            let seq = st.lt.get_trans_seq.get();
            return Ok(TransHold { t: self, seq });
        }
    }

    /// Blocks left in the transaction's metadata avail list.
    fn avail(&self, st: &TransState) -> u64 {
        st.w.as_ref().map_or(0, |w| w.avail_remaining())
    }

    /// At most how many metadata blocks committing the open transaction
    /// allocates (see the module comment, "Space").
    fn commit_need(&self, st: &TransState) -> u64 {
        let (items, bytes, _) = self.items.usage();
        if items == 0 {
            return 0;
        }
        let (leaves, parents) = st.tree_shape;
        let h = u64::from(st.lt.item_root.height);
        // Leaves split by the new bytes: at most one per half block.
        let new_leaves = bytes as u64 / (BLOCK_LG_SIZE as u64 / 2) + 1;
        let dirty_leaves = (items as u64).min(leaves + new_leaves);
        let dirty_parents = (dirty_leaves * h.max(1)).min(parents + new_leaves + 1);
        // And a new root, when the tree grows a level.
        dirty_leaves + dirty_parents + 2
    }

    /// The seq of the open transaction (a hold may see a later one if a
    /// commit comes in between).
    pub fn current_seq(&self) -> u64 {
        self.state().lt.get_trans_seq.get()
    }

    /// Runs `f` with the transaction's writer and log trees (data extent
    /// allocation). The caller holds the transaction.
    pub fn with_alloc<T>(
        &self,
        f: impl FnOnce(&mut Writer, &mut LogTrees) -> Result<T>,
    ) -> Result<T> {
        let mut st = self.state();
        let st = &mut *st;
        let w =
            st.w.as_mut()
                .ok_or_else(|| Error::Internal("no open transaction".into()))?;
        let r = f(w, &mut st.lt);
        // Running low on data blocks: commit early (in the background) so
        // the server refills them before a write runs out and has to wait
        // for a commit.
        if !st.asked_early && st.lt.data_avail.total_len.get() < st.data_avail_at_open / 4 {
            st.asked_early = true;
            self.commit_soon();
        }
        r
    }

    /// Counts inodes created (+) or deleted (-) in this transaction.
    pub fn add_inodes(&self, n: i64) {
        self.state().inode_delta += n;
    }

    /// Counts file data written in this transaction.
    pub fn add_data_bytes(&self, n: u64) {
        self.state().data_bytes += n;
    }

    /// Whether the transaction has grown enough that it should commit.
    pub fn needs_commit(&self) -> bool {
        let (items, bytes, _) = self.items.usage();
        let st = self.state();
        let meta_low = self.avail(&st) < self.commit_need(&st) + 2 * OP_META_BLOCKS;
        items > self.limits.dirty_items_max || bytes > self.limits.dirty_bytes_max || meta_low
    }

    /// Whether anything was changed since the last commit.
    pub fn is_dirty(&self) -> bool {
        let st = self.state();
        self.items.usage().0 > 0
            || st.data_bytes > 0
            || st.w.as_ref().is_some_and(|w| w.dirty_blocks() > 0)
    }

    /// Commits the open transaction and opens the next. Returns the
    /// committed transaction's seq.
    pub fn commit(&self) -> Result<u64> {
        // After much file data, write it back while writers go on: the
        // flush under the commit barrier then has only what came after, so
        // a large streaming write isn't stopped for a long flush. (Small
        // transactions skip it: one flush is cheaper than two.)
        if self.state().data_bytes >= PREFLUSH_DATA_BYTES {
            self.data
                .flush()
                .map_err(|e| Error::io(format!("{}: flush", self.data.name()), e))?;
        }
        let mut st = self.state();
        while st.committing {
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.committing = true;
        while st.holders > 0 {
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let res = self.commit_locked(&mut st);
        if let Err(e) = &res {
            st.broken = Some((e.errno(), e.to_string()));
        }
        st.committing = false;
        self.cv.notify_all();
        let seq = res?;
        drop(st);
        if let Some(f) = self
            .on_commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            f(seq);
        }
        Ok(seq)
    }

    fn commit_locked(&self, st: &mut TransState) -> Result<u64> {
        if let Some((errno, why)) = &st.broken {
            return Err(Error::Shutdown {
                errno: *errno,
                why: format!("an earlier commit failed: {why}"),
            });
        }
        let seq = st.lt.get_trans_seq.get();
        self.data
            .flush()
            .map_err(|e| Error::io(format!("{}: flush", self.data.name()), e))?;
        let items = self.items.dirty_items();
        let mut w =
            st.w.take()
                .ok_or_else(|| Error::Internal("no open transaction".into()))?;
        if !items.is_empty() {
            btree::insert_list(&mut w, &mut st.lt.item_root, &items)?;
            st.tree_shape = btree::shape(&w, &st.lt.item_root)?;
            let max = items.iter().map(|it| it.seq).max().unwrap_or(0);
            st.lt.max_item_seq = st.lt.max_item_seq.get().max(max).into();
        }
        crate::ensure!(
            st.lt.data_avail.total_len.get() <= st.data_avail_at_open,
            "data avail grew from {} to {} within a transaction",
            st.data_avail_at_open,
            st.lt.data_avail.total_len.get()
        );
        w.settle()?;
        w.write_out()?;
        st.lt.inode_count_delta = ((st.lt.inode_count_delta() + st.inode_delta) as u64).into();
        st.lt.meta_avail = w.lists().avail;
        st.lt.meta_freed = w.lists().freed;
        let next = self.client.commit_log_trees(st.lt)?;
        crate::ensure!(
            next.rid == st.lt.rid && next.get_trans_seq.get() > seq,
            "the server opened log tree {:#x} seq {} after {:#x} seq {seq}",
            next.rid.get(),
            next.get_trans_seq.get(),
            st.lt.rid.get()
        );
        self.items.write_done();
        st.data_bytes = 0;
        st.inode_delta = 0;
        if next.nr != st.lt.nr {
            // The server finalized the tree for a merge; this one is new.
            st.tree_shape = btree::shape(self.cache.as_ref(), &next.item_root)?;
        }
        st.opened = Instant::now();
        st.lt = next;
        st.w = Some(writer_for(&self.cache, &st.lt, &self.limits));
        st.data_avail_at_open = st.lt.data_avail.total_len.get();
        st.asked_early = false;
        Ok(seq)
    }
}
