//! The item cache of one mount: fs items by key, complete over known ranges.
//!
//! Every fs read and write goes through here. Items come from the forest
//! (`forest::read_items`), a window of a leaf around the wanted key at a
//! time; the range a read covered is recorded as *known*: every key in it
//! is either cached or absent, which gives negative lookups without I/O.
//! Changes are made in the cache as *dirty* items and written into the
//! mount's log btree at commit.
//!
//! Each cached item remembers whether some version of its key may exist on
//! disk (`persistent`). Deleting such an item leaves a dirty deletion item
//! that will hide the older versions in the forest; deleting an item that
//! never reached disk just drops it.
//!
//! Every call carries a [`Cover`]: the cluster lock range and mode the
//! caller holds. A key outside the cover, or an access the mode doesn't
//! allow, is a bug and asserts. Reads need READ or WRITE; writes need WRITE,
//! or WRITE_ONLY for blind writes that never read (`put_blind`,
//! `delete_blind`). Item seqs are the greater of the transaction's seq and
//! the lock's write seq, so a newer change always wins in the forest.
//!
//! Invalidation (`invalidate`), when a lock is lost, drops the clean items
//! and the known ranges within the lock's range; the lock client has made
//! sure the transaction was committed first, so no dirty item is there.
//!
//! Memory: clean items and the known ranges are bounded by `limit_bytes`,
//! counted as the heap they take (see `cost`). Beyond it, clean items are
//! dropped from the start of the least recently used known range, a chunk
//! at a time, and the range shrinks with them; a range is never larger
//! than what one read found plus what was written into it, and none is
//! exempt, so the bound holds whatever the caller's pattern (a directory
//! of millions of entries made here is one range). Clean items exist only
//! inside known ranges (a blind write that commits outside them is
//! dropped), so eviction reaches every clean item. Dirty items stay until
//! their transaction commits (the transaction bounds them).
//!
//! Locking: one mutex around the cache. A forest read happens with the
//! mutex released; its results are inserted only for keys that are still
//! unknown, so a concurrent local change always wins. A read's roots may
//! predate a commit that finished while it ran, and the cache may let go
//! of what that commit wrote (a blind write outside known ranges at once,
//! others by eviction later): then the read could put back an older view.
//! So a read that overlapped a commit is thrown away and made again with
//! newer roots (`Inner::commits`). Within one lock grant no other mount
//! changes the lock's items, so our own commits are all a read can miss.

use crate::error::Result;
use crate::store::btree::Item;
use crate::store::forest::{ForestSource, ReadResult, RootsSource, Version};
use scoutfs_format::consts::ITEM_FLAG_DELETION;
use scoutfs_format::Key;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The lock a caller holds over a range of keys.
#[derive(Clone, Copy, Debug)]
pub struct Cover {
    pub start: Key,
    pub end: Key,
    pub read: bool,
    pub write: bool,
    pub write_only: bool,
    pub write_seq: u64,
}

impl Cover {
    fn covers(&self, k: &Key) -> bool {
        self.start <= *k && *k <= self.end
    }
}

/// Where items come from on a miss: the forest, through roots from the server.
pub trait Source {
    fn read(&self, key: &Key, lo: &Key, hi: &Key) -> Result<ReadResult>;
}

impl<R: RootsSource> Source for ForestSource<R> {
    fn read(&self, key: &Key, lo: &Key, hi: &Key) -> Result<ReadResult> {
        ForestSource::read(self, key, lo, hi)
    }
}

/// A cached item: 32 bytes beside its 32-byte key in the map's nodes.
#[derive(Clone, Debug)]
struct CItem {
    seq: u64,
    val: Box<[u8]>,
    deleted: bool,
    dirty: bool,
    persistent: bool,
}

struct Known {
    end: Key,
    /// When it was last used: its key in [`Inner::lru`].
    used: u64,
}

#[derive(Default)]
struct Inner {
    items: BTreeMap<Key, CItem>,
    /// The keys of the dirty items, so a commit needn't scan the cache.
    dirty: std::collections::BTreeSet<Key>,
    known: BTreeMap<Key, Known>,
    /// The known ranges by when they were last used (tick to start).
    lru: BTreeMap<u64, Key>,
    /// Clean items and known ranges, by [`cost`] and [`KNOWN_COST`].
    clean_bytes: usize,
    dirty_items: usize,
    dirty_bytes: usize,
    tick: u64,
    /// Advances with every commit of dirty items: a forest read that began
    /// before may be older than them, and its result is discarded.
    commits: u64,
}

/// An item's share of the map's nodes: a 32-byte key and a 32-byte
/// [`CItem`] in nodes of 11 that are about two thirds full, with the
/// interior nodes above them.
const ITEM_NODE_BYTES: usize = 112;

/// A known range's share of its two maps' nodes ([`Inner::known`] and
/// [`Inner::lru`]).
const KNOWN_COST: usize = 176;

/// Clean items dropped at a time from the start of a range.
const EVICT_CHUNK: usize = 256;

/// The heap an item takes: its share of the map's nodes, and its value's
/// chunk as glibc's allocator hands it out (8 bytes of header, in steps of
/// 16, 32 at least; an empty value allocates nothing). Counting only the
/// value's bytes once let a mount's cache take twice its limit.
fn cost(v: &[u8]) -> usize {
    let chunk = if v.is_empty() {
        0
    } else {
        (v.len() + 8).div_ceil(16).max(2) * 16
    };
    ITEM_NODE_BYTES + chunk
}

impl Inner {
    /// The known range containing `k`, touched as used.
    fn known_at(&mut self, k: &Key) -> bool {
        self.tick += 1;
        let tick = self.tick;
        match self.known.range_mut(..=*k).next_back() {
            Some((s, kn)) if kn.end >= *k => {
                // Already the newest (a run of operations in one range):
                // its place in the order stays.
                if self
                    .lru
                    .last_key_value()
                    .is_some_and(|(t, _)| *t == kn.used)
                {
                    return true;
                }
                let old = std::mem::replace(&mut kn.used, tick);
                self.lru.remove(&old);
                self.lru.insert(tick, *s);
                true
            }
            _ => false,
        }
    }

    /// The end of the known range containing `k`, if any.
    fn known_end(&self, k: &Key) -> Option<Key> {
        match self.known.range(..=*k).next_back() {
            Some((_, kn)) if kn.end >= *k => Some(kn.end),
            _ => None,
        }
    }

    /// Records `start..=end` as known: the parts of it no range covers
    /// yet become ranges of their own. Ranges are never merged, so none
    /// grows past what one read found (and what is written into it).
    fn add_known(&mut self, start: Key, end: Key) {
        // Ranges are disjoint, so their ends rise with their starts: walk
        // back from `end` and stop at the first that ends before `start`.
        let mut taken: Vec<(Key, Key)> = self
            .known
            .range(..=end)
            .rev()
            .take_while(|(_, kn)| kn.end >= start)
            .map(|(s, kn)| (*s, kn.end))
            .collect();
        taken.reverse();
        let mut from = start;
        for (s, e) in taken {
            if s > from {
                self.insert_known(from, s.dec());
            }
            if e >= end {
                return;
            }
            from = e.inc();
        }
        self.insert_known(from, end);
    }

    fn insert_known(&mut self, start: Key, end: Key) {
        self.tick += 1;
        self.insert_known_used(start, end, self.tick);
    }

    /// A range as old as `used` (what is left of one that was).
    fn insert_known_used(&mut self, start: Key, end: Key, used: u64) {
        self.known.insert(start, Known { end, used });
        self.lru.insert(used, start);
        self.clean_bytes += KNOWN_COST;
    }

    fn drop_known(&mut self, start: &Key) -> Option<Known> {
        let kn = self.known.remove(start)?;
        self.lru.remove(&kn.used);
        self.clean_bytes -= KNOWN_COST;
        Some(kn)
    }

    /// Removes `start..=end` from the known ranges, keeping what lies outside.
    fn remove_known(&mut self, start: &Key, end: &Key) {
        let hit: Vec<(Key, Key, u64)> = self
            .known
            .range(..=*end)
            .rev()
            .take_while(|(_, kn)| kn.end >= *start)
            .map(|(s, kn)| (*s, kn.end, kn.used))
            .collect();
        for (s, e, used) in hit {
            self.drop_known(&s);
            // One range's two parts can't share its tick.
            if s < *start && e > *end {
                self.insert_known(end.inc(), e);
            } else if e > *end {
                self.insert_known_used(end.inc(), e, used);
            }
            if s < *start {
                self.insert_known_used(s, start.dec(), used);
            }
        }
    }

    fn set(&mut self, k: Key, it: CItem) {
        if it.dirty {
            self.dirty.insert(k);
        } else {
            self.dirty.remove(&k);
        }
        self.account(&it, 1);
        if let Some(old) = self.items.insert(k, it) {
            self.account(&old, -1);
        }
    }

    fn remove(&mut self, k: &Key) {
        self.dirty.remove(k);
        if let Some(old) = self.items.remove(k) {
            self.account(&old, -1);
        }
    }

    fn account(&mut self, it: &CItem, sign: isize) {
        let c = cost(&it.val) as isize * sign;
        if it.dirty {
            self.dirty_items = (self.dirty_items as isize + sign) as usize;
            self.dirty_bytes = (self.dirty_bytes as isize + c) as usize;
        } else {
            self.clean_bytes = (self.clean_bytes as isize + c) as usize;
        }
    }
}

fn check_write(c: &Cover, key: &Key) {
    assert!(
        c.covers(key) && (c.write || c.write_only),
        "writing {key} without a write lock"
    );
}

/// Writes a dirty item (or a deletion) into the cache. A deletion of an
/// item that may exist on disk leaves a deletion item; otherwise the item
/// just goes.
fn write_item(g: &mut Inner, key: &Key, seq: u64, val: Option<&[u8]>, persistent_hint: bool) {
    let persistent = g.items.get(key).map_or(persistent_hint, |it| it.persistent);
    match val {
        Some(v) => g.set(
            *key,
            CItem {
                seq,
                deleted: false,
                val: v.into(),
                dirty: true,
                persistent,
            },
        ),
        None if persistent => g.set(
            *key,
            CItem {
                seq,
                deleted: true,
                val: Box::default(),
                dirty: true,
                persistent,
            },
        ),
        None => g.remove(key),
    }
}

/// The item cache of one mount.
pub struct ItemCache {
    inner: Mutex<Inner>,
    limit_bytes: usize,
}

impl ItemCache {
    pub fn new(limit_bytes: usize) -> ItemCache {
        ItemCache {
            inner: Mutex::new(Inner::default()),
            limit_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each update leaves the maps consistent, so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts what a forest read found, where the cache doesn't know
    /// better: a range made known meanwhile, or a dirty item, is newer.
    /// A read that began when `commits` commits had been made is discarded
    /// if another came since (see "Locking" above).
    fn insert_read(&self, res: crate::store::forest::ReadResult, commits: u64) {
        let mut g = self.lock();
        if g.commits != commits {
            return;
        }
        for (k, v) in res.items {
            if g.items.contains_key(&k) || g.known_end(&k).is_some() {
                continue;
            }
            let Version { seq, deleted, val } = v;
            g.set(
                k,
                CItem {
                    seq,
                    deleted,
                    val: val.into_boxed_slice(),
                    dirty: false,
                    persistent: true,
                },
            );
        }
        g.add_known(res.start, res.end);
    }

    /// Runs `f` on the cache once `key` is known, under one hold of the
    /// cache's mutex, so an eviction can't come between learning the range
    /// and using it. Reads the key's leaf from the source as needed.
    fn known_op<T>(
        &self,
        src: &dyn Source,
        c: &Cover,
        key: &Key,
        mut f: impl FnMut(&mut Inner) -> T,
    ) -> Result<T> {
        loop {
            let commits = {
                let mut g = self.lock();
                if g.known_at(key) {
                    let r = f(&mut g);
                    drop(g);
                    self.shrink();
                    return Ok(r);
                }
                g.commits
            };
            assert!(c.read, "reading {key} without a read lock");
            let res = src.read(key, &c.start, &c.end)?;
            self.insert_read(res, commits);
        }
    }

    /// The value of `key`, if it exists.
    pub fn lookup(&self, src: &dyn Source, c: &Cover, key: &Key) -> Result<Option<Vec<u8>>> {
        assert!(c.covers(key) && c.read, "lookup of {key} outside its lock");
        self.known_op(src, c, key, |g| {
            g.items
                .get(key)
                .filter(|it| !it.deleted)
                .map(|it| it.val.to_vec())
        })
    }

    /// The first item with a key in `key..=last` (within the lock).
    pub fn next(
        &self,
        src: &dyn Source,
        c: &Cover,
        key: &Key,
        last: &Key,
    ) -> Result<Option<(Key, Vec<u8>)>> {
        Ok(self.next_many(src, c, key, last, 1)?.pop())
    }

    /// Up to `max` items in `key..=last` in key order (within the lock),
    /// each range of the cache searched under one hold of its mutex.
    pub fn next_many(
        &self,
        src: &dyn Source,
        c: &Cover,
        key: &Key,
        last: &Key,
        max: usize,
    ) -> Result<Vec<(Key, Vec<u8>)>> {
        assert!(
            c.covers(key) && c.covers(last) && c.read,
            "next from {key} outside its lock"
        );
        let mut out = Vec::new();
        let mut k = *key;
        while out.len() < max {
            let end = self.known_op(src, c, &k, |g| {
                let end = g.known_end(&k).unwrap_or(k).min(*last);
                out.extend(
                    g.items
                        .range(k..=end)
                        .filter(|(_, it)| !it.deleted)
                        .take(max - out.len())
                        .map(|(k, it)| (*k, it.val.to_vec())),
                );
                end
            })?;
            if out.len() >= max || end >= *last {
                break;
            }
            k = end.inc();
        }
        Ok(out)
    }

    /// The last item with a key in `first..=key` (within the lock).
    pub fn prev(
        &self,
        src: &dyn Source,
        c: &Cover,
        key: &Key,
        first: &Key,
    ) -> Result<Option<(Key, Vec<u8>)>> {
        assert!(
            c.covers(key) && c.covers(first) && c.read,
            "prev from {key} outside its lock"
        );
        let mut k = *key;
        loop {
            let step = self.known_op(src, c, &k, |g| {
                let start = match g.known.range(..=k).next_back() {
                    Some((s, kn)) if kn.end >= k => *s,
                    _ => k,
                }
                .max(*first);
                let found = g
                    .items
                    .range(start..=k)
                    .rev()
                    .find(|(_, it)| !it.deleted)
                    .map(|(k, it)| (*k, it.val.to_vec()));
                (found, start)
            })?;
            match step {
                (Some(f), _) => return Ok(Some(f)),
                (None, start) if start <= *first => return Ok(None),
                (None, start) => k = start.dec(),
            }
        }
    }

    /// Creates `key`; false if it already exists.
    pub fn create(
        &self,
        src: &dyn Source,
        c: &Cover,
        key: &Key,
        seq: u64,
        val: &[u8],
    ) -> Result<bool> {
        check_write(c, key);
        let seq = seq.max(c.write_seq);
        self.known_op(src, c, key, |g| {
            if g.items.get(key).is_some_and(|it| !it.deleted) {
                return false;
            }
            write_item(g, key, seq, Some(val), false);
            true
        })
    }

    /// Replaces the value of `key`, creating it if needed.
    pub fn put(&self, src: &dyn Source, c: &Cover, key: &Key, seq: u64, val: &[u8]) -> Result<()> {
        check_write(c, key);
        let seq = seq.max(c.write_seq);
        self.known_op(src, c, key, |g| write_item(g, key, seq, Some(val), false))
    }

    /// Deletes `key`; false if it didn't exist.
    pub fn delete(&self, src: &dyn Source, c: &Cover, key: &Key, seq: u64) -> Result<bool> {
        check_write(c, key);
        let seq = seq.max(c.write_seq);
        self.known_op(src, c, key, |g| {
            if g.items.get(key).is_none_or(|it| it.deleted) {
                return false;
            }
            write_item(g, key, seq, None, false);
            true
        })
    }

    /// Creates or replaces `key` without reading (WRITE_ONLY locks).
    pub fn put_blind(&self, c: &Cover, key: &Key, seq: u64, val: &[u8]) {
        check_write(c, key);
        write_item(&mut self.lock(), key, seq.max(c.write_seq), Some(val), true);
    }

    /// Deletes `key` without reading: always leaves a deletion item.
    pub fn delete_blind(&self, c: &Cover, key: &Key, seq: u64) {
        check_write(c, key);
        write_item(&mut self.lock(), key, seq.max(c.write_seq), None, true);
    }

    /// Drops clean items and known ranges in `start..=end`.
    pub fn invalidate(&self, start: &Key, end: &Key) {
        let mut g = self.lock();
        let clean: Vec<Key> = g
            .items
            .range(*start..=*end)
            .filter(|(_, it)| !it.dirty)
            .map(|(k, _)| *k)
            .collect();
        for k in clean {
            g.remove(&k);
        }
        g.remove_known(start, end);
    }

    /// The dirty items in key order, as the log btree stores them.
    pub fn dirty_items(&self) -> Vec<Item> {
        let g = self.lock();
        // Sized once: a grown copy would leave the larger freed chunks of
        // its doublings behind in the heap.
        let mut out = Vec::with_capacity(g.dirty.len());
        out.extend(
            g.dirty
                .iter()
                .filter_map(|k| g.items.get(k).map(|it| (k, it)))
                .map(|(k, it)| Item {
                    key: *k,
                    seq: it.seq,
                    flags: if it.deleted { ITEM_FLAG_DELETION } else { 0 },
                    val: it.val.to_vec(),
                }),
        );
        out
    }

    /// The dirty items are durable in the log btree: they become clean.
    pub fn write_done(&self) {
        let mut g = self.lock();
        let dirty = std::mem::take(&mut g.dirty);
        if !dirty.is_empty() {
            g.commits += 1;
        }
        for k in dirty {
            // Clean items live only in known ranges, where eviction finds
            // them; one written blindly outside them is dropped now that it
            // is on disk, and read again when it is next wanted.
            let known = g.known_end(&k).is_some();
            let Some(it) = g.items.get_mut(&k) else {
                continue;
            };
            let c = cost(&it.val);
            g.dirty_items -= 1;
            g.dirty_bytes -= c;
            if known {
                let it = g.items.get_mut(&k).unwrap_or_else(|| unreachable!());
                it.dirty = false;
                it.persistent = true;
                g.clean_bytes += c;
            } else {
                g.items.remove(&k);
            }
        }
        drop(g);
        self.shrink();
    }

    /// What the cache holds, for an operator: "N items in R ranges, clean
    /// X of its limit, dirty Y" (MiB).
    pub fn report(&self) -> String {
        let g = self.lock();
        format!(
            "{} items in {} ranges, clean {} of {} MiB, dirty {} MiB",
            g.items.len(),
            g.known.len(),
            g.clean_bytes >> 20,
            self.limit_bytes >> 20,
            g.dirty_bytes >> 20
        )
    }

    /// (dirty items, dirty bytes, clean bytes).
    pub fn usage(&self) -> (usize, usize, usize) {
        let g = self.lock();
        (g.dirty_items, g.dirty_bytes, g.clean_bytes)
    }

    /// Drops clean items until the cache fits its limit, a chunk at a
    /// time from the start of the least recently used known range, which
    /// shrinks past them (and goes once empty). The caller's operation is
    /// done by now; the range it used is the most recently used, so it goes
    /// last.
    fn shrink(&self) {
        let mut g = self.lock();
        while g.clean_bytes > self.limit_bytes {
            let Some((&used, &s)) = g.lru.iter().next() else {
                break;
            };
            let e = g.known[&s].end;
            // A chunk of clean items, passing at most as many dirty ones
            // (they stay, outside the range, until their commit).
            let mut chunk = Vec::with_capacity(EVICT_CHUNK);
            let mut last = None;
            for (n, (k, it)) in g.items.range(s..=e).enumerate() {
                if chunk.len() == EVICT_CHUNK || n == 2 * EVICT_CHUNK {
                    break;
                }
                if !it.dirty {
                    chunk.push(*k);
                }
                last = Some(*k);
            }
            for k in &chunk {
                g.remove(k);
            }
            g.drop_known(&s);
            // The rest of the range stays known, as old as it was.
            if let Some(l) = last.filter(|l| *l < e) {
                g.insert_known_used(l.inc(), e, used);
            }
        }
    }

    /// Checks the cache's bookkeeping (tests).
    pub fn check_invariants(&self) {
        let g = self.lock();
        let mut prev: Option<Key> = None;
        for (s, kn) in &g.known {
            assert!(*s <= kn.end);
            assert!(prev.is_none_or(|p| p < *s), "known ranges overlap");
            assert_eq!(g.lru.get(&kn.used), Some(s), "lru disagrees at {s}");
            prev = Some(kn.end);
        }
        assert_eq!(g.lru.len(), g.known.len());
        let (mut di, mut db) = (0, 0);
        let mut cb = g.known.len() * KNOWN_COST;
        for (k, it) in &g.items {
            assert_eq!(it.dirty, g.dirty.contains(k), "dirty set disagrees at {k}");
            if it.dirty {
                di += 1;
                db += cost(&it.val);
            } else {
                cb += cost(&it.val);
            }
        }
        assert_eq!((di, db, cb), (g.dirty_items, g.dirty_bytes, g.clean_bytes));
        for (k, it) in &g.items {
            assert!(
                it.dirty || g.known_end(k).is_some(),
                "clean item {k} outside the known ranges"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(n: u64) -> Key {
        Key::new(32, n, 0, 0, 0, 0)
    }

    fn cover() -> Cover {
        Cover {
            start: key(0),
            end: key(1000),
            read: true,
            write: true,
            write_only: false,
            write_seq: 1,
        }
    }

    /// Key `n` on disk with `val`.
    fn on_disk(n: u64, val: &[u8]) -> BTreeMap<Key, Version> {
        let v = Version {
            seq: 5,
            deleted: false,
            val: val.to_vec(),
        };
        BTreeMap::from([(key(n), v)])
    }

    /// A forest whose reads follow a script: read `n` (from 0) of `key`
    /// within `lo..=hi` is answered by `script(n, key, lo, hi)`, which may
    /// also change the cache as if it happened while the read ran.
    struct Scripted<F> {
        reads: AtomicUsize,
        script: F,
    }

    impl<F: Fn(usize, &Key, &Key, &Key) -> ReadResult> Source for Scripted<F> {
        fn read(&self, k: &Key, lo: &Key, hi: &Key) -> Result<ReadResult> {
            let n = self.reads.fetch_add(1, Ordering::SeqCst);
            Ok((self.script)(n, k, lo, hi))
        }
    }

    fn scripted<F: Fn(usize, &Key, &Key, &Key) -> ReadResult>(script: F) -> Scripted<F> {
        Scripted {
            reads: AtomicUsize::new(0),
            script,
        }
    }

    fn result(items: BTreeMap<Key, Version>, start: Key, end: Key) -> ReadResult {
        ReadResult { items, start, end }
    }

    #[test]
    fn a_read_older_than_a_commit_that_dropped_items_is_read_again() {
        let cache = ItemCache::new(1 << 20);
        let c = cover();
        // A new inode's item, written blindly outside any known range.
        cache.put_blind(&c, &key(7), 5, b"inode");
        let src = scripted(|n, _, lo, hi| {
            if n == 0 {
                // Roots taken before the commit, which lands while the
                // read runs and drops the item (it is on disk now).
                cache.write_done();
                result(BTreeMap::new(), *lo, *hi)
            } else {
                result(on_disk(7, b"inode"), *lo, *hi)
            }
        });
        let got = cache.lookup(&src, &c, &key(7)).unwrap();
        assert_eq!(got.as_deref(), Some(&b"inode"[..]));
        assert_eq!(
            src.reads.load(Ordering::SeqCst),
            2,
            "the stale read is redone"
        );
        cache.check_invariants();
    }

    #[test]
    fn a_read_older_than_a_commit_whose_items_were_let_go_is_read_again() {
        let cache = ItemCache::new(1 << 20);
        let c = cover();
        let src = scripted(|n, k, lo, hi| match n {
            // Learn 0..=10 while nothing is on disk yet.
            0 => result(BTreeMap::new(), key(0), key(10)),
            1 => {
                assert_eq!(*k, key(20));
                // While this read runs, key 7 is committed and then let go
                // of (evicted, or its range dropped).
                cache.write_done();
                cache.invalidate(&key(0), &key(10));
                result(BTreeMap::new(), *lo, *hi)
            }
            _ => result(on_disk(7, b"seven"), *lo, *hi),
        });
        assert_eq!(cache.lookup(&src, &c, &key(7)).unwrap(), None);
        cache.put(&src, &c, &key(7), 5, b"seven").unwrap();
        assert_eq!(cache.lookup(&src, &c, &key(20)).unwrap(), None);
        let got = cache.lookup(&src, &c, &key(7)).unwrap();
        assert_eq!(got.as_deref(), Some(&b"seven"[..]));
        cache.check_invariants();
    }

    /// A disk the cache reads whole covers from, written by the cache's
    /// commits.
    struct Disk(Mutex<BTreeMap<Key, Version>>);

    impl Source for Disk {
        fn read(&self, _k: &Key, lo: &Key, hi: &Key) -> Result<ReadResult> {
            let d = self.0.lock().unwrap();
            let items = d.range(*lo..=*hi).map(|(k, v)| (*k, v.clone())).collect();
            Ok(result(items, *lo, *hi))
        }
    }

    impl Disk {
        fn commit(&self, cache: &ItemCache) {
            let mut d = self.0.lock().unwrap();
            for it in cache.dirty_items() {
                d.insert(
                    it.key,
                    Version {
                        seq: it.seq,
                        deleted: it.flags & ITEM_FLAG_DELETION != 0,
                        val: it.val,
                    },
                );
            }
            drop(d);
            cache.write_done();
        }
    }

    #[test]
    fn one_range_larger_than_the_limit_is_evicted_in_part() {
        // Everything is written into the one range the first read learned,
        // as a directory's entries are; it must shrink, not stay whole.
        let limit = 64 << 10;
        let cache = ItemCache::new(limit);
        let disk = Disk(Mutex::new(BTreeMap::new()));
        let c = cover();
        for n in 0..1000 {
            let v = vec![n as u8; 40];
            assert!(cache.create(&disk, &c, &key(n), 5, &v).unwrap());
            if n % 100 == 99 {
                disk.commit(&cache);
                let (_, _, clean) = cache.usage();
                assert!(clean <= limit, "{clean} clean bytes over {limit}");
                cache.check_invariants();
            }
        }
        // Everything evicted reads back; what stays is the most recent.
        for n in (0..1000).rev() {
            let got = cache.lookup(&disk, &c, &key(n)).unwrap();
            assert_eq!(got, Some(vec![n as u8; 40]), "key {n}");
        }
        cache.check_invariants();
        assert!(cache.usage().2 <= limit);
    }

    #[test]
    fn ranges_learned_by_reads_are_evicted_least_recently_used_first() {
        let cache = ItemCache::new(8 * (KNOWN_COST + cost(b"v")));
        let mut on_disk = BTreeMap::new();
        for n in 0..100 {
            on_disk.insert(
                key(n),
                Version {
                    seq: 1,
                    deleted: false,
                    val: b"v".to_vec(),
                },
            );
        }
        let reads = AtomicUsize::new(0);
        // Each read learns one key and the gap after it.
        let src = scripted(|_, k, _, _| {
            reads.fetch_add(1, Ordering::SeqCst);
            let items = on_disk
                .range(*k..=*k)
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            result(items, *k, *k)
        });
        for n in 0..6 {
            cache.lookup(&src, &cover(), &key(n)).unwrap();
        }
        // Touch 0: it is the newest now.
        cache.lookup(&src, &cover(), &key(0)).unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 6);
        for n in 10..13 {
            cache.lookup(&src, &cover(), &key(n)).unwrap();
        }
        cache.check_invariants();
        // Nine ranges for room for eight: 1 went, and 0 stayed.
        let before = reads.load(Ordering::SeqCst);
        cache.lookup(&src, &cover(), &key(0)).unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), before, "0 was evicted");
        cache.lookup(&src, &cover(), &key(1)).unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), before + 1, "1 stayed");
    }
}
