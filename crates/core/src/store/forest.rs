//! The forest: reading fs items across `fs_root` and every mount's log btree.
//!
//! An fs item may have versions in the merged `fs_root` and in any number of
//! log btrees (one per mount, plus finalized ones awaiting merge). The
//! version with the greatest seq wins; on equal seqs the first read wins,
//! and `fs_root` is read first. A winning deletion item means the key does
//! not exist. This module is the only place that knows that rule.
//!
//! A read is by leaf: for each tree, the leaf that covers the wanted key is
//! read, and the result covers only the keys every tree's leaf covers (the
//! intersection of their ranges, clamped to the caller's lock range), so the
//! caller may cache the whole range as complete, negative entries included.
//!
//! Roots come from the server's last written super block. A block that was
//! rewritten after the roots were sampled reads as `Error::Stale`; the
//! caller re-reads roots and retries, a bounded number of times.

use crate::error::{CorruptKind, Error, Result};
use crate::store::block::BlockCache;
use crate::store::btree::{self, block as bblock, Reader};
use crate::types::Roots;
use scoutfs_format::consts::ITEM_FLAG_DELETION;
use scoutfs_format::key::zone;
use scoutfs_format::log_trees::LogTrees;
use scoutfs_format::{BtreeRoot, Key};
use std::collections::BTreeMap;

/// The newest version of a key: its seq, whether it is a deletion, and its
/// value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub seq: u64,
    pub deleted: bool,
    pub val: Vec<u8>,
}

/// Items read around a key: every key in `start..=end` is either in `items`
/// (its newest version) or has no version in any tree.
#[derive(Clone, Debug)]
pub struct ReadResult {
    pub items: BTreeMap<Key, Version>,
    pub start: Key,
    pub end: Key,
}

/// The item roots of every log tree recorded in `logs_root`.
pub fn log_roots<R: Reader + ?Sized>(rd: &R, logs_root: &BtreeRoot) -> Result<Vec<LogTrees>> {
    let mut out = Vec::new();
    let (start, end) = (
        Key::new(zone::LOG_TREES, 0, 0, 0, 0, 0),
        Key::new(
            zone::LOG_TREES,
            u64::MAX,
            u8::MAX,
            u64::MAX,
            u64::MAX,
            u8::MAX,
        ),
    );
    btree::for_each_range(rd, logs_root, &start, &end, |it| {
        let lt = LogTrees::decode(&it.val).map_err(|e| {
            Error::corrupt(
                CorruptKind::ItemInvalid,
                logs_root.blk.blkno.get(),
                logs_root.blk.seq.get(),
                e.to_string(),
            )
        })?;
        out.push(lt);
        Ok(true)
    })?;
    Ok(out)
}

/// Items a read takes from each tree's leaf on either side of its key.
pub const READ_WINDOW: usize = 64;

/// Reads the items around `key` from every tree, limited to `lo..=hi`.
pub fn read_items<R: Reader + ?Sized>(
    rd: &R,
    roots: &Roots,
    key: &Key,
    lo: &Key,
    hi: &Key,
) -> Result<ReadResult> {
    assert!(lo <= key && key <= hi);
    let mut res = ReadResult {
        items: BTreeMap::new(),
        start: *lo,
        end: *hi,
    };
    let mut trees = vec![roots.fs_root];
    trees.extend(
        log_roots(rd, &roots.logs_root)?
            .into_iter()
            .map(|lt| lt.item_root),
    );
    for root in trees.iter().filter(|r| !r.is_empty()) {
        let Some(leaf) = btree::find_leaf(rd, root, key)? else {
            continue;
        };
        if let Some(a) = leaf.after {
            res.start = res.start.max(a.inc());
        }
        res.end = res.end.min(leaf.upto);
        let b = &leaf.buf;
        // At most READ_WINDOW items each side of the key: a leaf holds
        // hundreds, and a cache that takes them all for one lookup spends
        // its time making room for them. Past the window, the range ends
        // before the first item left out.
        let key_of = |i: usize| bblock::key(b, i);
        let first = bblock::search(b, lo).unwrap_or_else(|i| i);
        let last = match bblock::search(b, hi) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        let at = bblock::search(b, key).unwrap_or_else(|i| i);
        let from = at.saturating_sub(READ_WINDOW).max(first);
        let to = (at + READ_WINDOW).min(last);
        if from > first {
            res.start = res.start.max(key_of(from - 1).inc());
        }
        if to < last {
            res.end = res.end.min(key_of(to).dec());
        }
        for i in from..to {
            let it = bblock::item(b, i);
            let k = it.key.to_key_unchecked();
            let seq = it.seq.get();
            let newer = res.items.get(&k).is_none_or(|v| seq > v.seq);
            if newer {
                let deleted = it.flags & ITEM_FLAG_DELETION != 0;
                res.items.insert(
                    k,
                    Version {
                        seq,
                        deleted,
                        val: bblock::val(b, i).to_vec(),
                    },
                );
            }
        }
    }
    let (s, e) = (res.start, res.end);
    res.items.retain(|k, _| *k >= s && *k <= e);
    Ok(res)
}

/// A reader that fails with `Stale` is retried this many times with newer
/// roots before the error is returned (as corruption).
pub const STALE_RETRIES_MAX: usize = 10;

/// Runs `read` again while it fails with `Stale` (it met a block rewritten
/// since it read its roots; it reads newer ones each time), at most
/// [`STALE_RETRIES_MAX`] times; returns its last result.
pub fn retry_while_stale<T>(mut read: impl FnMut() -> Result<T>) -> Result<T> {
    let mut retries = 0;
    loop {
        match read() {
            Err(Error::Stale { .. }) if retries < STALE_RETRIES_MAX => retries += 1,
            res => return res,
        }
    }
}

/// Where a reader gets the roots of the last written super block (for a
/// mount, the server).
pub trait RootsSource: Send + Sync {
    fn roots(&self) -> Result<Roots>;
}

impl<T: RootsSource + ?Sized> RootsSource for std::sync::Arc<T> {
    fn roots(&self) -> Result<Roots> {
        (**self).roots()
    }
}

/// Reads fs items with roots from the last written super block, and
/// again with newer roots when a block was rewritten meanwhile (at most
/// [`STALE_RETRIES_MAX`] times; a block still stale after that is
/// reported as corruption).
pub struct ForestSource<R> {
    roots: R,
    cache: std::sync::Arc<BlockCache>,
}

impl<R: RootsSource> ForestSource<R> {
    pub fn new(roots: R, cache: std::sync::Arc<BlockCache>) -> ForestSource<R> {
        ForestSource { roots, cache }
    }

    /// The metadata block cache the forest reads through.
    pub fn cache(&self) -> &std::sync::Arc<BlockCache> {
        &self.cache
    }

    /// The roots of the last written super block.
    pub fn roots(&self) -> Result<Roots> {
        self.roots.roots()
    }

    /// [`read_items`] around `key` within `lo..=hi`, retried on stale blocks.
    pub fn read(&self, key: &Key, lo: &Key, hi: &Key) -> Result<ReadResult> {
        self.retry_stale(|roots| read_items(self.cache.as_ref(), roots, key, lo, hi))
    }

    /// Up to `max` keys in `lo..=hi` of the merged fs tree alone (not the
    /// log trees), in order, retried on stale blocks.
    pub fn merged_keys(&self, lo: &Key, hi: &Key, max: usize) -> Result<Vec<Key>> {
        self.retry_stale(|roots| {
            let mut keys = Vec::new();
            btree::for_each_range(self.cache.as_ref(), &roots.fs_root, lo, hi, |it| {
                keys.push(it.key);
                Ok(keys.len() < max)
            })?;
            Ok(keys)
        })
    }

    /// The first key in `lo..=hi` of any tree, the merged one or a log
    /// tree, deletions included: a hint, read without locks from the last
    /// written super block, of where items may be (a walk of a sparse key
    /// space skips the lock ranges before it). Keys of transactions not yet
    /// committed are not in it.
    pub fn next_key_hint(&self, lo: &Key, hi: &Key) -> Result<Option<Key>> {
        self.retry_stale(|roots| {
            let mut trees = vec![roots.fs_root];
            trees.extend(
                log_roots(self.cache.as_ref(), &roots.logs_root)?
                    .into_iter()
                    .map(|lt| lt.item_root),
            );
            let mut best: Option<Key> = None;
            for root in trees.iter().filter(|r| !r.is_empty()) {
                let upto = best.map_or(*hi, |b| b.min(*hi));
                btree::for_each_range(self.cache.as_ref(), root, lo, &upto, |it| {
                    best = Some(best.map_or(it.key, |b| b.min(it.key)));
                    Ok(false)
                })?;
            }
            Ok(best)
        })
    }

    /// Runs `f` with the roots of the last written super block, and again
    /// with newer roots when it met a block rewritten meanwhile.
    /// A block still stale after the retries is corruption.
    fn retry_stale<T>(&self, f: impl Fn(&Roots) -> Result<T>) -> Result<T> {
        let res = retry_while_stale(|| {
            let res = f(&self.roots.roots()?);
            if let Err(e @ Error::Stale { .. }) = &res {
                self.cache.note_error(e);
            }
            res
        });
        match res {
            Err(e @ Error::Stale { .. }) => {
                let detail = format!("a block stayed stale after retries: {e}");
                Err(Error::corrupt(CorruptKind::BlockInvalid, 0, 0, detail))
            }
            other => other,
        }
    }
}

/// A cursor over one tree's items, a leaf at a time.
struct Cursor {
    root: BtreeRoot,
    items: Vec<btree::Item>,
    pos: usize,
    next: Option<Key>,
}

impl Cursor {
    fn fill<R: Reader + ?Sized>(&mut self, rd: &R, hi: &Key) -> Result<()> {
        while self.pos >= self.items.len() {
            let Some(k) = self.next.filter(|k| k <= hi) else {
                self.next = None;
                return Ok(());
            };
            self.items.clear();
            self.pos = 0;
            match btree::find_leaf(rd, &self.root, &k)? {
                None => self.next = None,
                Some(leaf) => {
                    let b = &leaf.buf;
                    let from = bblock::search(b, &k).unwrap_or_else(|i| i);
                    self.items.extend(
                        (from..bblock::nr(b))
                            .map(|i| bblock::owned(b, i))
                            .take_while(|it| it.key <= *hi),
                    );
                    self.next = (leaf.upto < *hi).then(|| leaf.upto.inc());
                }
            }
        }
        Ok(())
    }

    fn peek(&self) -> Option<&btree::Item> {
        self.items.get(self.pos)
    }
}

/// Calls `f` with the newest version of every key in `lo..=hi` across the
/// given trees (the first tree wins ties, as `fs_root` does), deletions
/// included, in key order, until it returns false. Memory is one leaf per
/// tree.
pub fn merge_versions<R: Reader + ?Sized>(
    rd: &R,
    trees: &[BtreeRoot],
    lo: &Key,
    hi: &Key,
    mut f: impl FnMut(&Key, &Version) -> Result<bool>,
) -> Result<()> {
    let mut cursors: Vec<Cursor> = trees
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| Cursor {
            root: *r,
            items: Vec::new(),
            pos: 0,
            next: Some(*lo),
        })
        .collect();
    loop {
        for c in cursors.iter_mut() {
            c.fill(rd, hi)?;
        }
        let Some(key) = cursors
            .iter()
            .filter_map(|c| c.peek().map(|it| it.key))
            .min()
        else {
            return Ok(());
        };
        let mut best: Option<Version> = None;
        for c in cursors.iter_mut() {
            if let Some(it) = c.peek().filter(|it| it.key == key) {
                if best.as_ref().is_none_or(|b| it.seq > b.seq) {
                    let deleted = it.flags & ITEM_FLAG_DELETION != 0;
                    best = Some(Version {
                        seq: it.seq,
                        deleted,
                        val: it.val.clone(),
                    });
                }
                c.pos += 1;
            }
        }
        if let Some(v) = best {
            if !f(&key, &v)? {
                return Ok(());
            }
        }
    }
}
