//! `scoutfs check`: an offline consistency check of a whole filesystem.
//!
//! It reads the metadata super block (a device that holds none is an error,
//! not a report), then verifies everything reachable from it and records
//! every problem it finds instead of stopping at the first:
//! - the data device's super block belongs with the metadata one;
//! - every quorum block has a valid header, crc and contents;
//! - every block of every btree (fs, logs, log merge, mounted clients, srch,
//!   the metadata and data allocators, and each log tree's item tree) reads
//!   with a matching header, a good crc and a valid structure, sits at the
//!   level its parent implies, and holds only keys within its parent's
//!   bounds; item values decode as their key says;
//! - every alloc list's blocks read and its counts agree;
//! - each free-extent tree's two indexes agree and match its total;
//! - **the allocator invariant**: every metadata block from the first
//!   allocatable one is referenced exactly once or free exactly once, and
//!   every data block is free or referenced by a file extent exactly once;
//! - the inode index holds exactly the meta_seq and data_seq items the
//!   inodes call for (directories have no data_seq item);
//! - each inode's `online_blocks` is the number of blocks its extents map
//!   and its `offline_blocks` the number its offline extents hold.
//!
//! A block that can't be read is reported with its blkno and seq and its
//! subtree is skipped; blocks it would have accounted for then show up as
//! lost, which the report says. Memory: one byte per metadata block, and
//! for data one entry per extent (data devices are far larger and are
//! accounted in extents, never block by block).

use crate::error::{CorruptKind, Error, Result};
pub use crate::progress::{NoProgress, Progress};
use crate::store::alloc::extent::Extent;
use crate::store::alloc::list;
use crate::store::block::{read_sm, BlockCache};
use crate::store::btree::block as bblock;
use crate::store::commit::{check_pair, read_super};
use crate::store::dev::BlockDev;
use scoutfs_format::consts::*;
use scoutfs_format::key::{ty, zone};
use scoutfs_format::log_trees::LogTrees;
use scoutfs_format::quorum::QuorumBlock;
use scoutfs_format::{AllocListHead, AllocRoot, BlockRef, BtreeRoot, Key, SuperBlock};
use std::fmt;
use std::sync::Arc;

/// The fs tree's item zone, where inodes and file extents are.
const FS_LO: Key = Key::new(zone::FS, 0, 0, 0, 0, 0);
const FS_HI: Key = Key::new(zone::FS, u64::MAX, u8::MAX, u64::MAX, u64::MAX, u8::MAX);

/// How many inode index entries one pass that names differences holds.
const INDEX_SHARE: u64 = 4 << 20;

/// How many inode index differences a report names one by one.
const INDEX_PROBLEMS_NAMED: u64 = 32;

/// An inode index entry: (index type, seq, ino).
type IndexEntry = (u8, u64, u64);

/// An order-free sum of index entries: equal sums mean equal sets, short
/// of a 128-bit hash collision.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct EntrySum {
    count: u64,
    sum: u128,
}

impl EntrySum {
    fn add(&mut self, e: IndexEntry) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(entry_hash(e));
    }
}

/// The splitmix64 finalizer.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn entry_hash((ity, seq, ino): IndexEntry) -> u128 {
    let a = mix(seq ^ mix(ino ^ ((ity as u64) << 56)));
    let b = mix(ino.rotate_left(29) ^ mix(seq.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ ity as u64));
    ((a as u128) << 64) | b as u128
}

/// The index entries the item at `k` (in the FS zone) calls for: an
/// inode's meta_seq, and its data_seq unless it is a directory.
fn inode_entries(k: &Key, v: &crate::store::forest::Version) -> impl Iterator<Item = IndexEntry> {
    let inode = match (k.ty == ty::INODE && !v.deleted)
        .then(|| scoutfs_format::inode::Inode::decode(&v.val))
    {
        Some(Ok(i)) => Some(i),
        _ => None,
    };
    let meta = inode.map(|i| (ty::INODE_INDEX_META_SEQ, i.meta_seq.get(), k.first));
    let data = inode
        .filter(|i| i.mode.get() & scoutfs_format::inode::S_IFMT != scoutfs_format::inode::S_IFDIR)
        .map(|i| (ty::INODE_INDEX_DATA_SEQ, i.data_seq.get(), k.first));
    meta.into_iter().chain(data)
}

/// Calls `f` with every inode index entry in the forest.
fn index_entries(
    cache: &BlockCache,
    trees: &[BtreeRoot],
    mut f: impl FnMut(IndexEntry),
) -> Result<()> {
    let lo = Key::new(zone::INODE_INDEX, 0, 0, 0, 0, 0);
    let hi = Key::new(
        zone::INODE_INDEX,
        u64::MAX,
        u8::MAX,
        u64::MAX,
        u64::MAX,
        u8::MAX,
    );
    crate::store::forest::merge_versions(cache, trees, &lo, &hi, |k, v| {
        if !v.deleted {
            f((k.ty, k.second, k.third));
        }
        Ok(true)
    })
}

/// One thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The metadata block (LG units) or small block (SM units, for super and
    /// quorum blocks) the problem is in, when it is in one.
    pub blkno: Option<u64>,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.blkno {
            Some(b) => write!(f, "block {b}: {}", self.what),
            None => write!(f, "{}", self.what),
        }
    }
}

/// What `check` found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub meta_blocks: u64,
    pub meta_referenced: u64,
    pub meta_free: u64,
    pub data_blocks: u64,
    pub data_referenced: u64,
    pub data_free: u64,
    pub btree_blocks: u64,
    pub items: u64,
    pub trees: u64,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Unknown,
    Referenced,
    Free,
}

/// Which block of a device is used how.
struct UseMap {
    first: u64,
    uses: Vec<Use>,
    what: &'static str,
}

impl UseMap {
    fn new(first: u64, total: u64, what: &'static str) -> UseMap {
        UseMap {
            first,
            uses: vec![Use::Unknown; total.saturating_sub(first) as usize],
            what,
        }
    }

    fn mark(&mut self, blkno: u64, u: Use, by: &str, problems: &mut Vec<Problem>) -> bool {
        let idx = blkno
            .checked_sub(self.first)
            .map(|i| i as usize)
            .filter(|&i| i < self.uses.len());
        let Some(i) = idx else {
            let what = format!(
                "{} block {blkno} ({by}) is outside the device's allocatable blocks",
                self.what
            );
            problems.push(Problem {
                blkno: Some(blkno),
                what,
            });
            return false;
        };
        let was = self.uses[i];
        if was != Use::Unknown {
            let name = |u: Use| if u == Use::Free { "free" } else { "referenced" };
            let what = format!(
                "{} block {blkno} is {} and also {} by {by}",
                self.what,
                name(was),
                name(u)
            );
            problems.push(Problem {
                blkno: Some(blkno),
                what,
            });
            return false;
        }
        self.uses[i] = u;
        true
    }

    fn count(&self, u: Use) -> u64 {
        self.uses.iter().filter(|&&x| x == u).count() as u64
    }

    /// Problems for blocks neither referenced nor free, as ranges.
    fn lost(&self, problems: &mut Vec<Problem>) {
        let mut i = 0;
        while i < self.uses.len() {
            if self.uses[i] != Use::Unknown {
                i += 1;
                continue;
            }
            let start = i;
            while i < self.uses.len() && self.uses[i] == Use::Unknown {
                i += 1;
            }
            let (a, b) = (self.first + start as u64, self.first + i as u64 - 1);
            let what = format!(
                "{} blocks {a}..={b} ({} blocks) are neither referenced nor free",
                self.what,
                b - a + 1
            );
            problems.push(Problem {
                blkno: Some(a),
                what,
            });
        }
    }
}

/// Data blocks accounted in extents: every free extent and every file
/// extent, checked at the end for overlaps and gaps.
struct ExtentMap {
    first: u64,
    total: u64,
    extents: Vec<(u64, u64, Use, String)>,
}

impl ExtentMap {
    fn add(&mut self, start: u64, len: u64, u: Use, by: String, problems: &mut Vec<Problem>) {
        let end = start.saturating_add(len);
        if len == 0 || start < self.first || end > self.total {
            let what = format!("data blocks {start}+{len} ({by}) are outside the data device");
            problems.push(Problem { blkno: None, what });
            return;
        }
        self.extents.push((start, end, u, by));
    }

    /// Reports overlaps and unaccounted gaps; returns (referenced, free).
    fn finish(&mut self, problems: &mut Vec<Problem>) -> (u64, u64) {
        self.extents.sort_by_key(|e| (e.0, e.1));
        let (mut referenced, mut free) = (0, 0);
        let mut covered = self.first;
        let mut last_by = String::new();
        for (start, end, u, by) in &self.extents {
            if *start > covered {
                let what = format!(
                    "data blocks {covered}..={} ({} blocks) are neither referenced nor free",
                    start - 1,
                    start - covered
                );
                problems.push(Problem { blkno: None, what });
            } else if *start < covered {
                let what = format!(
                    "data blocks {start}..={} of {by} are also {last_by}",
                    (*end).min(covered) - 1
                );
                problems.push(Problem { blkno: None, what });
            }
            let fresh = end.saturating_sub((*start).max(covered));
            match u {
                Use::Free => free += fresh,
                _ => referenced += fresh,
            }
            if *end > covered {
                covered = *end;
                last_by = by.clone();
            }
        }
        if covered < self.total {
            let what = format!(
                "data blocks {covered}..={} ({} blocks) are neither referenced nor free",
                self.total - 1,
                self.total - covered
            );
            problems.push(Problem { blkno: None, what });
        }
        (referenced, free)
    }
}

struct Checker<'a> {
    cache: BlockCache,
    /// fs_root and every log tree's item root: the forest of fs items.
    fs_trees: Vec<BtreeRoot>,
    meta: UseMap,
    data: ExtentMap,
    report: Report,
    progress: &'a mut dyn Progress,
}

/// Checks the filesystem on `meta` and `data`. Returns an error only when
/// the metadata device holds no readable super block.
pub fn check(
    meta: &Arc<dyn BlockDev>,
    data: &Arc<dyn BlockDev>,
    progress: &mut dyn Progress,
) -> Result<Report> {
    let sb = read_super(meta.as_ref(), true)?;
    let total_meta = sb.total_meta_blocks.get();
    let total_data = sb.total_data_blocks.get();
    let mut c = Checker {
        cache: BlockCache::new(meta.clone(), sb.hdr.fsid.get(), 64),
        fs_trees: vec![sb.fs_root],
        meta: UseMap::new(META_DEV_START_BLKNO, total_meta, "metadata"),
        data: ExtentMap {
            first: DATA_DEV_START_BLKNO,
            total: total_data,
            extents: Vec::new(),
        },
        report: Report {
            meta_blocks: total_meta,
            data_blocks: total_data,
            ..Default::default()
        },
        progress,
    };
    c.data_super(&sb, data.as_ref());
    c.quorum_blocks(meta.as_ref(), sb.hdr.fsid.get());
    c.progress.begin(
        "checking metadata",
        total_meta.saturating_sub(META_DEV_START_BLKNO),
    );
    c.super_trees(&sb);
    c.data_extents();
    c.progress.finish();
    let problems = &mut c.report.problems;
    c.meta.lost(problems);
    (c.report.data_referenced, c.report.data_free) = c.data.finish(problems);
    c.report.meta_referenced = c.meta.count(Use::Referenced);
    c.report.meta_free = c.meta.count(Use::Free);
    Ok(c.report)
}

impl Checker<'_> {
    fn problem(&mut self, blkno: Option<u64>, what: String) {
        self.report.problems.push(Problem { blkno, what });
    }

    fn error(&mut self, r: &BlockRef, e: Error) {
        let blkno = match &e {
            Error::Corrupt(c) => c.blkno,
            _ => r.blkno.get(),
        };
        self.problem(Some(blkno), format!("corrupt: {e}"));
    }

    fn data_super(&mut self, meta_sb: &SuperBlock, data: &dyn BlockDev) {
        match read_super(data, false).and_then(|d| check_pair(meta_sb, &d, data.name())) {
            Ok(()) => {}
            Err(e) => self.problem(Some(SUPER_BLKNO), format!("data device super block: {e}")),
        }
    }

    fn quorum_blocks(&mut self, meta: &dyn BlockDev, fsid: u64) {
        for slot in 0..QUORUM_MAX_SLOTS as u64 {
            let blkno = QUORUM_BLKNO + slot;
            let res = read_sm(meta, blkno, magic::QUORUM, Some(fsid)).and_then(|b| {
                QuorumBlock::decode(&b)
                    .map_err(|e| Error::corrupt(CorruptKind::BlockInvalid, blkno, 0, e.to_string()))
            });
            if let Err(e) = res {
                self.problem(Some(blkno), format!("quorum block of slot {slot}: {e}"));
            }
        }
    }

    fn super_trees(&mut self, sb: &SuperBlock) {
        for (name, root) in crate::store::commit::super_roots(sb) {
            self.tree(name, root, false);
        }
        for (i, a) in sb.meta_alloc.iter().enumerate() {
            self.alloc_root(&format!("meta_alloc[{i}]"), a, true);
        }
        self.alloc_root("data_alloc", &sb.data_alloc, false);
        for (i, h) in sb.server_meta_avail.iter().enumerate() {
            self.alloc_list(&format!("server_meta_avail[{i}]"), h);
        }
        for (i, h) in sb.server_meta_freed.iter().enumerate() {
            self.alloc_list(&format!("server_meta_freed[{i}]"), h);
        }
    }

    /// Verifies every block of a tree and each item's value; marks the
    /// blocks referenced. Returns the leaf items it could read.
    fn tree(&mut self, name: &str, root: &BtreeRoot, keep: bool) -> Vec<bblock::Item> {
        self.report.trees += 1;
        let mut items = Vec::new();
        if root.height == 0 {
            return items;
        }
        let mut stack: Vec<(BlockRef, u8, Option<Key>, Key)> =
            vec![(root.blk, root.height - 1, None, Key::MAX)];
        while let Some((r, lvl, after, upto)) = stack.pop() {
            if !self.meta.mark(
                r.blkno.get(),
                Use::Referenced,
                &format!("{name} btree"),
                &mut self.report.problems,
            ) {
                continue;
            }
            self.progress.advance(1);
            self.report.btree_blocks += 1;
            let b = match self.cache.read(&r, magic::BTREE) {
                Ok(b) => b,
                Err(e) => {
                    self.error(&r, e);
                    continue;
                }
            };
            let b = b.bytes();
            if bblock::level(b) != lvl {
                let what = format!(
                    "{name}: btree block at level {}, its parent implies {lvl}",
                    bblock::level(b)
                );
                self.problem(Some(r.blkno.get()), what);
                continue;
            }
            let n = bblock::nr(b);
            let out = (0..n)
                .map(|i| bblock::key(b, i))
                .find(|k| *k > upto || after.is_some_and(|a| *k <= a));
            if let Some(k) = out {
                self.problem(
                    Some(r.blkno.get()),
                    format!("{name}: key {k} outside its parent's bounds"),
                );
                continue;
            }
            if lvl == 0 {
                for i in 0..n {
                    let it = bblock::owned(b, i);
                    // A deletion item only hides older versions: its value
                    // means nothing.
                    let deletion = it.flags & scoutfs_format::ITEM_FLAG_DELETION != 0;
                    if deletion {
                    } else if let Err(what) = self.item(name, &it) {
                        self.problem(
                            Some(r.blkno.get()),
                            format!("{name}: item {}: {what}", it.key),
                        );
                    }
                    if keep {
                        items.push(it);
                    }
                }
                self.report.items += n as u64;
                continue;
            }
            if n == 0 || bblock::key(b, n - 1) != upto {
                self.problem(
                    Some(r.blkno.get()),
                    format!("{name}: parent block's last key is not its bound"),
                );
            }
            // Pushed last to first so leaves are visited in key order.
            for i in (0..n).rev() {
                let after = if i == 0 {
                    after
                } else {
                    Some(bblock::key(b, i - 1))
                };
                stack.push((bblock::child_ref(b, i), lvl - 1, after, bblock::key(b, i)));
            }
        }
        items
    }

    /// Accounts the data blocks mapped by the newest version of every file
    /// extent in the forest, and checks the inode index against the inodes
    /// (see [`Checker::inode_index`]).
    fn data_extents(&mut self) {
        let trees = std::mem::take(&mut self.fs_trees);
        let mut found = Vec::new();
        let mut want = EntrySum::default();
        let mut counts = BlockCounts::default();
        let res =
            crate::store::forest::merge_versions(&self.cache, &trees, &FS_LO, &FS_HI, |k, v| {
                if v.deleted {
                    return Ok(true);
                }
                if k.first != counts.ino {
                    counts.done();
                    counts = BlockCounts {
                        ino: k.first,
                        problems: std::mem::take(&mut counts.problems),
                        more: counts.more,
                        ..BlockCounts::default()
                    };
                }
                if k.ty == ty::INODE {
                    if let Ok(i) = scoutfs_format::inode::Inode::decode(&v.val) {
                        counts.inode = Some((i.online_blocks.get(), i.offline_blocks.get()));
                    }
                }
                if k.ty == ty::DATA_EXTENT {
                    if let Ok(x) = scoutfs_format::data::DataExtentVal::decode(&v.val) {
                        if x.maps_blocks() {
                            found.push((x.blkno.get(), k.third, k.first));
                            counts.online += k.third;
                        }
                        if x.flags & scoutfs_format::data::SEF_OFFLINE != 0 {
                            counts.offline += k.third;
                        }
                    }
                }
                for e in inode_entries(k, v) {
                    want.add(e);
                }
                Ok(true)
            });
        counts.done();
        let (named, more) = (counts.problems, counts.more);
        for p in named {
            self.problem(None, p);
        }
        if more > 0 {
            self.problem(
                None,
                format!("{more} more inodes whose block counts are not their extents'"),
            );
        }
        let read_all = res.is_ok();
        if let Err(e) = res {
            self.problem(
                None,
                format!("file extents could not all be read, data accounting is incomplete: {e}"),
            );
        }
        for (blkno, len, ino) in found {
            let by = format!("file extent of inode {ino}");
            self.data
                .add(blkno, len, Use::Referenced, by, &mut self.report.problems);
        }
        if read_all {
            self.inode_index(&trees, want);
        }
    }

    /// The inode index (INODE_INDEX META_SEQ and DATA_SEQ items) must hold
    /// exactly one item per inode and kind at the inode's meta_seq and
    /// data_seq (directories have no data_seq item). The two sides are
    /// compared as order-free sums in one pass each; only when they differ
    /// are the differences named, a share of the entries at a time, so
    /// memory stays bounded however many inodes there are.
    fn inode_index(&mut self, trees: &[BtreeRoot], want: EntrySum) {
        let mut have = EntrySum::default();
        let res = index_entries(&self.cache, trees, |e| have.add(e));
        if let Err(e) = res {
            self.problem(None, format!("the inode index could not all be read: {e}"));
            return;
        }
        if want == have {
            return;
        }
        let parts = want.count.max(have.count) / INDEX_SHARE + 1;
        let mut named = 0u64;
        let mut more = 0u64;
        for part in 0..parts {
            let mine = |e: &IndexEntry| (entry_hash(*e) as u64) % parts == part;
            let mut wanted = std::collections::HashSet::new();
            let mut extra = Vec::new();
            let res =
                crate::store::forest::merge_versions(&self.cache, trees, &FS_LO, &FS_HI, |k, v| {
                    wanted.extend(inode_entries(k, v).filter(|e| mine(e)));
                    Ok(true)
                })
                .and_then(|()| {
                    index_entries(&self.cache, trees, |e| {
                        if mine(&e) && !wanted.remove(&e) {
                            extra.push(e);
                        }
                    })
                });
            if let Err(e) = res {
                self.problem(None, format!("the inode index could not all be read: {e}"));
                return;
            }
            let mut missing: Vec<IndexEntry> = wanted.into_iter().collect();
            missing.sort_unstable();
            let found = extra
                .into_iter()
                .map(|e| (e, "an index item no inode has"))
                .chain(
                    missing
                        .into_iter()
                        .map(|e| (e, "no index item for the inode")),
                );
            for ((ity, seq, ino), what) in found {
                if named == INDEX_PROBLEMS_NAMED {
                    more += 1;
                    continue;
                }
                named += 1;
                let kind = if ity == ty::INODE_INDEX_META_SEQ {
                    "meta_seq"
                } else {
                    "data_seq"
                };
                self.problem(
                    None,
                    format!("inode index: {what}: {kind} {seq} of inode {ino}"),
                );
            }
        }
        if more > 0 {
            self.problem(None, format!("inode index: {more} more differences"));
        }
        if named == 0 {
            // Sums that differ over equal sets: a hash collision, reported
            // rather than passed over.
            self.problem(
                None,
                format!(
                    "inode index: {} items for {} expected, but no difference found",
                    have.count, want.count
                ),
            );
        }
    }

    /// Checks an item's value by its key; follows what it references.
    fn item(&mut self, tree: &str, it: &bblock::Item) -> std::result::Result<(), String> {
        let k = &it.key;
        match (k.zone, k.ty) {
            (zone::FS, ty::INODE) => scoutfs_format::inode::Inode::decode(&it.val)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            (zone::FS, ty::DIRENT | ty::READDIR | ty::LINK_BACKREF) => {
                scoutfs_format::dir::decode_dirent(&it.val)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            (zone::FS, ty::DATA_EXTENT) => {
                // Only the value is checked here: blocks are accounted from
                // the forest's newest versions (`data_extents`).
                scoutfs_format::data::DataExtentVal::decode(&it.val)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            (zone::LOG_TREES, _) if tree == "logs_root" => {
                let lt = LogTrees::decode(&it.val).map_err(|e| e.to_string())?;
                self.fs_trees.push(lt.item_root);
                self.log_trees(&lt, "log tree");
                Ok(())
            }
            (zone::LOG_MERGE_FREEING, _) if tree == "log_merge" => {
                // Merged (its items are in fs_root), its blocks not yet
                // freed: they are still referenced, but not read.
                let lt = LogTrees::decode(&it.val).map_err(|e| e.to_string())?;
                self.log_trees(&lt, "merged log tree");
                Ok(())
            }
            (zone::FREE_EXTENT_BLKNO | zone::FREE_EXTENT_ORDER, _) if !it.val.is_empty() => {
                Err("free extent items have no value".into())
            }
            _ => Ok(()),
        }
    }

    fn log_trees(&mut self, lt: &LogTrees, what: &str) {
        let who = format!("{what} {}.{}", lt.rid.get(), lt.nr.get());
        self.alloc_list(&format!("{who} meta_avail"), &lt.meta_avail);
        self.alloc_list(&format!("{who} meta_freed"), &lt.meta_freed);
        self.tree(&format!("{who} items"), &lt.item_root, false);
        if !lt.bloom_ref.is_none() {
            let r = lt.bloom_ref;
            if self.meta.mark(
                r.blkno.get(),
                Use::Referenced,
                &format!("{who} bloom"),
                &mut self.report.problems,
            ) {
                if let Err(e) = self.cache.read(&r, magic::BLOOM) {
                    self.error(&r, e);
                }
            }
        }
        self.alloc_root(&format!("{who} data_avail"), &lt.data_avail, false);
        self.alloc_root(&format!("{who} data_freed"), &lt.data_freed, false);
    }

    /// Checks a free-extent tree and marks its extents free.
    fn alloc_root(&mut self, name: &str, a: &AllocRoot, meta: bool) {
        let items = self.tree(name, &a.root, true);
        let mut by_pos = Vec::new();
        let mut by_order = Vec::new();
        for it in &items {
            let k = &it.key;
            let (end, len) = match k.zone {
                zone::FREE_EXTENT_BLKNO => (k.first, k.second),
                zone::FREE_EXTENT_ORDER => (k.second, k.third),
                _ => {
                    self.problem(None, format!("{name}: item {k} is not a free extent"));
                    continue;
                }
            };
            if len == 0 || len - 1 > end || end == u64::MAX {
                self.problem(
                    None,
                    format!("{name}: free extent item {k} has a bad length"),
                );
                continue;
            }
            let e = Extent {
                start: end - (len - 1),
                len,
            };
            if k.zone == zone::FREE_EXTENT_BLKNO {
                by_pos.push(e);
            } else {
                if k.first != u64::MAX - scoutfs_format::alloc::extent_order(len) {
                    self.problem(
                        None,
                        format!("{name}: free extent item {k} is in the wrong order class"),
                    );
                }
                by_order.push(e);
            }
        }
        by_pos.sort();
        by_order.sort();
        if by_pos != by_order {
            self.problem(
                None,
                format!("{name}: its position and size indexes disagree"),
            );
        }
        let total: u64 = by_pos.iter().map(|e| e.len).sum();
        if total != a.total_len.get() {
            self.problem(
                None,
                format!(
                    "{name}: holds {total} free blocks, its root says {}",
                    a.total_len.get()
                ),
            );
        }
        for w in by_pos.windows(2) {
            if w[0].end().saturating_add(1) >= w[1].start {
                self.problem(
                    None,
                    format!(
                        "{name}: free extents {:?} and {:?} touch or overlap",
                        w[0], w[1]
                    ),
                );
            }
        }
        let problems = &mut self.report.problems;
        for e in &by_pos {
            if !meta {
                self.data
                    .add(e.start, e.len, Use::Free, name.to_string(), problems);
                continue;
            }
            for b in e.start..=e.end() {
                if !self.meta.mark(b, Use::Free, name, problems) {
                    break;
                }
            }
        }
    }

    /// Checks an alloc list: its blocks are referenced, its entries free.
    fn alloc_list(&mut self, name: &str, head: &AllocListHead) {
        let cache = &self.cache;
        let res = list::walk_list(head, |r| {
            Ok(Box::from(cache.read(r, magic::ALLOC_LIST)?.bytes()))
        });
        match res {
            Ok((entries, blocks)) => {
                for r in blocks {
                    self.progress.advance(1);
                    self.meta.mark(
                        r.blkno.get(),
                        Use::Referenced,
                        &format!("{name} list block"),
                        &mut self.report.problems,
                    );
                }
                for b in entries {
                    self.meta
                        .mark(b, Use::Free, name, &mut self.report.problems);
                }
            }
            Err(e) => {
                let r = head.first;
                self.error(&r, e);
            }
        }
    }
}

/// The block counts of the inode being read (`Checker::data_extents`),
/// against its extents: `online_blocks` counts the blocks its extents map,
/// `offline_blocks` those of its offline extents.
#[derive(Default)]
struct BlockCounts {
    ino: u64,
    /// (online_blocks, offline_blocks) of its inode item.
    inode: Option<(u64, u64)>,
    online: u64,
    offline: u64,
    /// The first differences found, named; the rest counted.
    problems: Vec<String>,
    more: u64,
}

impl BlockCounts {
    /// The inode's extents are all counted: compare.
    fn done(&mut self) {
        let Some((online, offline)) = self.inode else {
            return;
        };
        if (online, offline) == (self.online, self.offline) {
            return;
        }
        if self.problems.len() < 32 {
            self.problems.push(format!(
                "inode {} counts {online} online and {offline} offline blocks; its extents map {} and hold {} offline",
                self.ino, self.online, self.offline
            ));
        } else {
            self.more += 1;
        }
    }
}
