//! The copy-on-write btree of items.
//!
//! Items are (key, seq, flags, value ≤ 896 bytes) in 64 KiB blocks (layout in
//! `block` and `docs/format.md`). Parent items hold a child reference and the
//! greatest key that may appear in that child's subtree; the right spine
//! carries `Key::MAX`, so appending never updates parent keys, and in a
//! parent block the last item's key is the block's own bound.
//!
//! Writes walk down from the root with a [`Writer`], dirtying every block on
//! the path by copy-on-write (a clean block moves to a new blkno with a new
//! seq; the old one is freed to the writer's allocator). They keep the tree
//! balanced on the way down, so no walk ever has to come back up:
//! - inserting: a child with less free space than the largest item is split
//!   before descending into it; the new left sibling takes the lower half and
//!   the existing block keeps its bound (a full root grows the tree first);
//! - deleting: a child holding less than a quarter block of items is joined
//!   with a sibling (merged into the right one when both fit, else balanced);
//!   a root parent left with one child is removed, shrinking the tree.
//!
//! Reads walk with any [`Reader`]: the clean cache, or a writer that sees its
//! own dirty blocks. Every block is checked to be at the level its parent
//! implies. Heights are limited to `BTREE_MAX_HEIGHT` (20); a parent holds
//! about a thousand children, so 10^9 items need a height of about 4.

pub mod block;

use crate::counters;
use crate::error::{CorruptKind, Error, Result};
use crate::store::block::{BlockBytes, BlockCache, Writer};
pub use block::Item;
use scoutfs_format::btree::{BTREE_JOIN_LOW_BYTES, BTREE_MAX_ITEM_BYTES};
use scoutfs_format::consts::{magic, BTREE_MAX_HEIGHT, MAX_VAL_SIZE};
use scoutfs_format::{BlockRef, BtreeRoot, Key};
use zerocopy::IntoBytes;

/// A block buffer taken out of a writer for modification.
type Buf = crate::store::block::BlockBuf;

/// Anything btree blocks can be read through.
pub trait Reader {
    fn read_block(&self, r: &BlockRef, magic: u32) -> Result<BlockBytes<'_>>;
}

impl Reader for Writer {
    fn read_block(&self, r: &BlockRef, magic: u32) -> Result<BlockBytes<'_>> {
        self.read(r, magic)
    }
}

impl Reader for BlockCache {
    fn read_block(&self, r: &BlockRef, magic: u32) -> Result<BlockBytes<'_>> {
        Ok(BlockBytes::Clean(self.read(r, magic)?))
    }
}

impl<T: Reader + ?Sized> Reader for std::sync::Arc<T> {
    fn read_block(&self, r: &BlockRef, magic: u32) -> Result<BlockBytes<'_>> {
        (**self).read_block(r, magic)
    }
}

fn level_err(r: &BlockRef, want: u8, have: u8) -> Error {
    let detail = format!("btree block at level {have}, its parent implies {want}");
    Error::corrupt(CorruptKind::BtreeLevel, r.blkno.get(), r.seq.get(), detail)
}

fn twice_err(r: &BlockRef) -> Error {
    let detail = "btree block is referenced twice";
    Error::corrupt(
        CorruptKind::BtreeKeyBounds,
        r.blkno.get(),
        r.seq.get(),
        detail,
    )
}

fn no_child_err(r: &BlockRef, k: &Key) -> Error {
    let detail = format!("parent block has no child for key {k}");
    Error::corrupt(
        CorruptKind::BtreeNoChildRef,
        r.blkno.get(),
        r.seq.get(),
        detail,
    )
}

/// The leaf that may hold `key`, with the range of keys it covers: keys
/// greater than `after` (None: from the smallest) up to `upto`.
pub struct Leaf<'a> {
    pub buf: BlockBytes<'a>,
    pub after: Option<Key>,
    pub upto: Key,
}

/// Walks from the root to the leaf that covers `key`.
pub fn find_leaf<'a, R: Reader + ?Sized>(
    rd: &'a R,
    root: &BtreeRoot,
    key: &Key,
) -> Result<Option<Leaf<'a>>> {
    if root.height == 0 {
        return Ok(None);
    }
    let mut r = root.blk;
    let mut lvl = root.height - 1;
    let (mut after, mut upto) = (None, Key::MAX);
    loop {
        let b = rd.read_block(&r, magic::BTREE)?;
        if block::level(&b) != lvl {
            return Err(level_err(&r, lvl, block::level(&b)));
        }
        if lvl == 0 {
            return Ok(Some(Leaf {
                buf: b,
                after,
                upto,
            }));
        }
        let i = block::search(&b, key).unwrap_or_else(|i| i);
        if i >= block::nr(&b) {
            return Err(no_child_err(&r, key));
        }
        upto = block::key(&b, i);
        if i > 0 {
            after = Some(block::key(&b, i - 1));
        }
        r = block::child_ref(&b, i);
        lvl -= 1;
    }
}

/// The item with exactly `key`.
pub fn lookup<R: Reader + ?Sized>(rd: &R, root: &BtreeRoot, key: &Key) -> Result<Option<Item>> {
    let Some(leaf) = find_leaf(rd, root, key)? else {
        return Ok(None);
    };
    Ok(block::search(&leaf.buf, key)
        .ok()
        .map(|i| block::owned(&leaf.buf, i)))
}

/// The first item with a key ≥ `key`.
pub fn next<R: Reader + ?Sized>(rd: &R, root: &BtreeRoot, key: &Key) -> Result<Option<Item>> {
    let mut k = *key;
    loop {
        let Some(leaf) = find_leaf(rd, root, &k)? else {
            return Ok(None);
        };
        let i = block::search(&leaf.buf, &k).unwrap_or_else(|i| i);
        if i < block::nr(&leaf.buf) {
            return Ok(Some(block::owned(&leaf.buf, i)));
        }
        if leaf.upto == Key::MAX {
            return Ok(None);
        }
        k = leaf.upto.inc();
    }
}

/// The last item with a key ≤ `key`.
pub fn prev<R: Reader + ?Sized>(rd: &R, root: &BtreeRoot, key: &Key) -> Result<Option<Item>> {
    let mut k = *key;
    loop {
        let Some(leaf) = find_leaf(rd, root, &k)? else {
            return Ok(None);
        };
        let i = match block::search(&leaf.buf, &k) {
            Ok(i) => Some(i),
            Err(0) => None,
            Err(i) => Some(i - 1),
        };
        if let Some(i) = i {
            return Ok(Some(block::owned(&leaf.buf, i)));
        }
        match leaf.after {
            Some(a) => k = a,
            None => return Ok(None),
        }
    }
}

/// Calls `f` with each item whose key is in `start..=end`, in order, until
/// it returns false. Reads a leaf at a time.
pub fn for_each_range<R: Reader + ?Sized>(
    rd: &R,
    root: &BtreeRoot,
    start: &Key,
    end: &Key,
    mut f: impl FnMut(&Item) -> Result<bool>,
) -> Result<()> {
    let mut k = *start;
    while k <= *end {
        let Some(leaf) = find_leaf(rd, root, &k)? else {
            return Ok(());
        };
        let items: Vec<Item> = {
            let b = &leaf.buf;
            let from = block::search(b, &k).unwrap_or_else(|i| i);
            (from..block::nr(b))
                .map(|i| block::owned(b, i))
                .take_while(|it| it.key <= *end)
                .collect()
        };
        for it in &items {
            if !f(it)? {
                return Ok(());
            }
        }
        if leaf.upto >= *end {
            return Ok(());
        }
        k = leaf.upto.inc();
    }
    Ok(())
}

/// Inserts an item, replacing any item with the same key.
pub fn insert(
    w: &mut Writer,
    root: &mut BtreeRoot,
    key: &Key,
    seq: u64,
    flags: u8,
    val: &[u8],
) -> Result<()> {
    let it = Item {
        key: *key,
        seq,
        flags,
        val: val.to_vec(),
    };
    insert_list(w, root, std::slice::from_ref(&it))
}

/// Inserts a list of items sorted by key (no duplicates), replacing items
/// with the same keys. Each walk fills one leaf with as many as fit.
pub fn insert_list(w: &mut Writer, root: &mut BtreeRoot, items: &[Item]) -> Result<()> {
    assert!(
        items.windows(2).all(|p| p[0].key < p[1].key),
        "insert_list items must be sorted"
    );
    if let Some(it) = items.iter().find(|it| it.val.len() > MAX_VAL_SIZE) {
        return Err(Error::Internal(format!(
            "item value of {} bytes",
            it.val.len()
        )));
    }
    let mut rest = items;
    while !rest.is_empty() {
        let res = insert_walk(w, root, rest);
        let done = w.fail_on(res)?;
        assert!(done > 0);
        rest = &rest[done..];
    }
    Ok(())
}

/// Dirties the root for a modifying walk, creating an empty leaf root for
/// an empty tree.
fn dirty_root(w: &mut Writer, root: &mut BtreeRoot) -> Result<Buf> {
    if root.height == 0 {
        let (r, mut buf) = w.new_block(magic::BTREE)?;
        block::init(&mut buf, 0);
        root.blk = r;
        root.height = 1;
        return Ok(buf);
    }
    let buf = w.cow(&mut root.blk, magic::BTREE)?;
    if block::level(&buf) != root.height - 1 {
        let e = level_err(&root.blk, root.height - 1, block::level(&buf));
        w.put(buf);
        return Err(e);
    }
    Ok(buf)
}

/// Dirties child `i` of the parent `pbuf`, updating its reference.
fn dirty_child(w: &mut Writer, pbuf: &mut [u8], i: usize) -> Result<Buf> {
    let mut r = block::child_ref(pbuf, i);
    let buf = w.cow(&mut r, magic::BTREE)?;
    block::set_child_ref(pbuf, i, &r);
    let want = block::level(pbuf) - 1;
    if block::level(&buf) != want {
        let e = level_err(&r, want, block::level(&buf));
        w.put(buf);
        return Err(e);
    }
    Ok(buf)
}

/// One insert walk: returns how many of `items` were inserted into the leaf.
fn insert_walk(w: &mut Writer, root: &mut BtreeRoot, items: &[Item]) -> Result<usize> {
    let key = items[0].key;
    let mut buf = dirty_root(w, root)?;
    if block::free_bytes(&buf) < BTREE_MAX_ITEM_BYTES {
        if root.height >= BTREE_MAX_HEIGHT {
            w.put(buf);
            return Err(Error::Internal("btree reached its maximum height".into()));
        }
        let (pr, mut pbuf) = w.new_block(magic::BTREE)?;
        block::init(&mut pbuf, root.height);
        block::insert(&mut pbuf, 0, &Key::MAX, 0, 0, root.blk.as_bytes());
        let (l, r) = split(w, &mut pbuf, 0, buf, &key)?;
        w.put(l);
        w.put(r);
        root.blk = pr;
        root.height += 1;
        buf = pbuf;
    }
    let mut upto = Key::MAX;
    while block::level(&buf) > 0 {
        let i = block::search(&buf, &key).unwrap_or_else(|i| i);
        if i >= block::nr(&buf) {
            let e = no_child_err(&root.blk, &key);
            w.put(buf);
            return Err(e);
        }
        let mut child = dirty_child(w, &mut buf, i)?;
        let mut bound = block::key(&buf, i);
        if block::free_bytes(&child) < BTREE_MAX_ITEM_BYTES {
            let (l, r) = split(w, &mut buf, i, child, &key)?;
            let lkey = block::key(&buf, i);
            if key <= lkey {
                bound = lkey;
                w.put(r);
                child = l;
            } else {
                w.put(l);
                child = r;
            }
        }
        upto = upto.min(bound);
        w.put(buf);
        buf = child;
    }
    let mut done = 0;
    for it in items {
        if it.key > upto || block::free_bytes(&buf) < BTREE_MAX_ITEM_BYTES {
            break;
        }
        match block::search(&buf, &it.key) {
            Ok(i) => {
                block::remove(&mut buf, i);
                block::insert(&mut buf, i, &it.key, it.seq, it.flags, &it.val);
            }
            Err(i) => block::insert(&mut buf, i, &it.key, it.seq, it.flags, &it.val),
        }
        done += 1;
    }
    w.put(buf);
    Ok(done)
}

/// Splits `child` (item `i` of `parent`) into a new left sibling holding the
/// lower part and `child` keeping the upper part and its bound. Returns the
/// (left, right) buffers for the caller to put back.
///
/// The cut is in the middle, unless the insert of `key` that splits goes
/// at or past the child's last item: then the left keeps all but that
/// item. Keys that only grow (new inode numbers, the sorted items a merge
/// or a commit adds) would otherwise leave every left half half empty for
/// good, as nothing is inserted below them again; this way they fill their
/// blocks.
fn split(
    w: &mut Writer,
    parent: &mut [u8],
    i: usize,
    mut child: Buf,
    key: &Key,
) -> Result<(Buf, Buf)> {
    let lvl = block::level(&child);
    let items = block::items_of(&child);
    let at = items.partition_point(|it| it.key < *key);
    let k = if at + 1 >= items.len() {
        items.len() - 1
    } else {
        block::split_point(&items)
    };
    let (lr, mut left) = match w.new_block(magic::BTREE) {
        Ok(v) => v,
        Err(e) => {
            w.put(child);
            return Err(e);
        }
    };
    block::write_items(&mut left, lvl, &items[..k]);
    block::write_items(&mut child, lvl, &items[k..]);
    block::insert(parent, i, &items[k - 1].key, 0, 0, lr.as_bytes());
    counters::inc(&w.cache().counters.btree_split);
    Ok((left, child))
}

/// Deletes the item with `key`; returns whether it existed. A missing key
/// dirties nothing.
pub fn delete(w: &mut Writer, root: &mut BtreeRoot, key: &Key) -> Result<bool> {
    if lookup(w, root, key)?.is_none() {
        return Ok(false);
    }
    let res = delete_walk(w, root, key);
    w.fail_on(res)
}

fn delete_walk(w: &mut Writer, root: &mut BtreeRoot, key: &Key) -> Result<bool> {
    let mut buf = dirty_root(w, root)?;
    while block::level(&buf) > 0 {
        let i = block::search(&buf, key).unwrap_or_else(|i| i);
        if i >= block::nr(&buf) {
            let e = no_child_err(&root.blk, key);
            w.put(buf);
            return Err(e);
        }
        let mut child = dirty_child(w, &mut buf, i)?;
        if block::total(&child) < BTREE_JOIN_LOW_BYTES && block::nr(&buf) > 1 {
            child = join(w, &mut buf, i, child, key)?;
        }
        w.put(buf);
        buf = child;
    }
    let found = match block::search(&buf, key) {
        Ok(i) => {
            block::remove(&mut buf, i);
            true
        }
        Err(_) => false,
    };
    w.put(buf);
    collapse_root(w, root)?;
    Ok(found)
}

/// Joins `child` (item `i` of `parent`) with a sibling: merged into the right
/// block of the pair when both fit, else balanced. Returns the block that
/// covers `key`; the other is put back or freed.
fn join(w: &mut Writer, parent: &mut [u8], i: usize, child: Buf, key: &Key) -> Result<Buf> {
    let s = if i > 0 { i - 1 } else { i + 1 };
    let sib = match dirty_child(w, parent, s) {
        Ok(b) => b,
        Err(e) => {
            w.put(child);
            return Err(e);
        }
    };
    let li = i.min(s);
    let (mut left, mut right) = if s < i { (sib, child) } else { (child, sib) };
    let lvl = block::level(&left);
    let mut all = block::items_of(&left);
    all.extend(block::items_of(&right));
    let ctr = &w.cache().counters;
    if block::items_bytes(&all) + BTREE_MAX_ITEM_BYTES <= scoutfs_format::btree::BTREE_BLOCK_USABLE
    {
        counters::inc(&ctr.btree_join);
        block::write_items(&mut right, lvl, &all);
        let lref = block::child_ref(parent, li);
        block::remove(parent, li);
        drop(left);
        w.free_block(&lref)?;
        return Ok(right);
    }
    counters::inc(&ctr.btree_balance);
    let k = block::split_point(&all);
    block::write_items(&mut left, lvl, &all[..k]);
    block::write_items(&mut right, lvl, &all[k..]);
    block::set_key(parent, li, &all[k - 1].key);
    if *key <= all[k - 1].key {
        w.put(right);
        Ok(left)
    } else {
        w.put(left);
        Ok(right)
    }
}

/// Removes root parents with a single child, and an empty root leaf.
fn collapse_root(w: &mut Writer, root: &mut BtreeRoot) -> Result<()> {
    while root.height > 0 {
        let (n, lvl, child) = {
            let b = w.read(&root.blk, magic::BTREE)?;
            let child = if block::nr(&b) > 0 && block::level(&b) > 0 {
                Some(block::child_ref(&b, 0))
            } else {
                None
            };
            (block::nr(&b), block::level(&b), child)
        };
        if lvl > 0 && n == 1 {
            let old = root.blk;
            root.blk = child.unwrap_or_default();
            root.height -= 1;
            w.free_block(&old)?;
        } else if lvl == 0 && n == 0 {
            let old = root.blk;
            *root = BtreeRoot::default();
            w.free_block(&old)?;
        } else {
            break;
        }
    }
    Ok(())
}

/// Frees every block of a tree and leaves it empty.
pub fn free_tree(w: &mut Writer, root: &mut BtreeRoot) -> Result<()> {
    let mut refs = Vec::new();
    walk_blocks(w, root, |r, _| {
        refs.push(*r);
        Ok(())
    })?;
    *root = BtreeRoot::default();
    for r in refs {
        let res = w.free_block(&r);
        w.fail_on(res)?;
    }
    Ok(())
}

/// How many leaves and parent blocks a tree has, reading only its parents.
pub fn shape<R: Reader + ?Sized>(rd: &R, root: &BtreeRoot) -> Result<(u64, u64)> {
    if root.height <= 1 {
        return Ok((u64::from(root.height), 0));
    }
    let (mut leaves, mut parents) = (0, 0);
    let mut stack = vec![(root.blk, root.height - 1)];
    while let Some((r, lvl)) = stack.pop() {
        let b = rd.read_block(&r, magic::BTREE)?;
        if block::level(&b) != lvl {
            return Err(level_err(&r, lvl, block::level(&b)));
        }
        parents += 1;
        if lvl == 1 {
            leaves += block::nr(&b) as u64;
        } else {
            stack.extend((0..block::nr(&b)).map(|i| (block::child_ref(&b, i), lvl - 1)));
        }
    }
    Ok((leaves, parents))
}

/// Calls `f` with the reference and bytes of every block of the tree,
/// parents before their children.
pub fn walk_blocks<R: Reader + ?Sized>(
    rd: &R,
    root: &BtreeRoot,
    mut f: impl FnMut(&BlockRef, &[u8]) -> Result<()>,
) -> Result<()> {
    if root.height == 0 {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(root.blk, root.height - 1)];
    while let Some((r, lvl)) = stack.pop() {
        if !seen.insert(r.blkno.get()) {
            return Err(twice_err(&r));
        }
        let b = rd.read_block(&r, magic::BTREE)?;
        if block::level(&b) != lvl {
            return Err(level_err(&r, lvl, block::level(&b)));
        }
        f(&r, &b)?;
        if lvl > 0 {
            for i in (0..block::nr(&b)).rev() {
                stack.push((block::child_ref(&b, i), lvl - 1));
            }
        }
    }
    Ok(())
}

/// Checks the whole tree: levels, key order across blocks, every item within
/// the bounds its parent gives its block, and each parent's last key equal
/// to its bound. Returns the number of items. For tests, simulation and
/// `check`.
pub fn check_invariants<R: Reader + ?Sized>(rd: &R, root: &BtreeRoot) -> Result<u64> {
    if root.height == 0 {
        return Ok(0);
    }
    let mut items = 0u64;
    let mut stack: Vec<(BlockRef, u8, Option<Key>, Key)> =
        vec![(root.blk, root.height - 1, None, Key::MAX)];
    let mut seen = std::collections::HashSet::new();
    while let Some((r, lvl, after, upto)) = stack.pop() {
        if !seen.insert(r.blkno.get()) {
            return Err(twice_err(&r));
        }
        let b = rd.read_block(&r, magic::BTREE)?;
        if block::level(&b) != lvl {
            return Err(level_err(&r, lvl, block::level(&b)));
        }
        let n = block::nr(&b);
        let bounds_err = |detail: String| {
            Error::corrupt(
                CorruptKind::BtreeKeyBounds,
                r.blkno.get(),
                r.seq.get(),
                detail,
            )
        };
        for i in 0..n {
            let k = block::key(&b, i);
            if k > upto || after.is_some_and(|a| k <= a) {
                return Err(bounds_err(format!("key {k} outside ({after:?}, {upto}]")));
            }
        }
        if lvl == 0 {
            items += n as u64;
            continue;
        }
        if n == 0 || block::key(&b, n - 1) != upto {
            return Err(bounds_err(format!(
                "parent block's last key is not its bound {upto}"
            )));
        }
        let mut prev = after;
        for i in 0..n {
            let k = block::key(&b, i);
            stack.push((block::child_ref(&b, i), lvl - 1, prev, k));
            prev = Some(k);
        }
    }
    Ok(items)
}
