//! Items inside one btree block.
//!
//! Layout (see `docs/format.md`): a header, a dense array of item headers
//! sorted by key, free space ("mid free"), and values packed down from the
//! end of the block, each padded to 8 bytes. Deleting an item closes the
//! array and leaves a hole among the values unless the value was the lowest;
//! when an insert doesn't fit in the mid free space but the block has room,
//! the values are compacted toward the end.
//!
//! Splits, joins and balances rebuild whole blocks from a list of owned items
//! ([`items_of`] / [`write_items`]): they are rare next to single inserts and
//! deletes, and rebuilding keeps them simple and the layout canonical.
//!
//! Callers pass buffers of verified blocks (or blocks they built), so the
//! accessors trust the header counts; they assert what they rely on.

use scoutfs_format::btree::{
    item_bytes, item_off, val_bytes, BtreeBlockHeader, BtreeItem, BTREE_BLOCK_HEADER_SIZE,
    BTREE_BLOCK_USABLE, BTREE_ITEM_SIZE,
};
use scoutfs_format::consts::{BLOCK_LG_SIZE, MAX_VAL_SIZE};
use scoutfs_format::key::Key;
use scoutfs_format::BlockRef;
use zerocopy::{FromBytes, IntoBytes};

/// An item owned outside any block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: Key,
    pub seq: u64,
    pub flags: u8,
    pub val: Vec<u8>,
}

fn bh(b: &[u8]) -> BtreeBlockHeader {
    BtreeBlockHeader::read_from_prefix(b)
        .map(|(h, _)| h)
        .unwrap_or_default()
}

fn bh_mut(b: &mut [u8]) -> &mut BtreeBlockHeader {
    // Btree buffers are whole 64 KiB blocks.
    BtreeBlockHeader::mut_from_prefix(b)
        .map(|(h, _)| h)
        .unwrap_or_else(|_| unreachable!())
}

pub fn nr(b: &[u8]) -> usize {
    bh(b).nr_items.get() as usize
}
pub fn level(b: &[u8]) -> u8 {
    bh(b).level
}
pub fn total(b: &[u8]) -> usize {
    bh(b).total_item_bytes.get() as usize
}
fn mid_free(b: &[u8]) -> usize {
    bh(b).mid_free_len.get() as usize
}
/// Bytes free for items and values, counting holes among the values.
pub fn free_bytes(b: &[u8]) -> usize {
    BTREE_BLOCK_USABLE - total(b)
}

fn set_counts(b: &mut [u8], nr: usize, total: usize, mid_free: usize) {
    let h = bh_mut(b);
    h.nr_items = (nr as u16).into();
    h.total_item_bytes = (total as u16).into();
    h.mid_free_len = (mid_free as u16).into();
}

pub fn item(b: &[u8], i: usize) -> BtreeItem {
    debug_assert!(i < nr(b));
    BtreeItem::read_from_prefix(&b[item_off(i)..])
        .map(|(it, _)| it)
        .unwrap_or_default()
}

pub fn key(b: &[u8], i: usize) -> Key {
    item(b, i).key.to_key_unchecked()
}

pub fn val(b: &[u8], i: usize) -> &[u8] {
    let it = item(b, i);
    let off = it.val_off.get() as usize;
    &b[off..off + it.val_len.get() as usize]
}

pub fn owned(b: &[u8], i: usize) -> Item {
    let it = item(b, i);
    Item {
        key: it.key.to_key_unchecked(),
        seq: it.seq.get(),
        flags: it.flags,
        val: val(b, i).to_vec(),
    }
}

/// The child reference of parent item `i`.
pub fn child_ref(b: &[u8], i: usize) -> BlockRef {
    BlockRef::read_from_bytes(val(b, i)).unwrap_or_default()
}

/// Replaces the child reference of parent item `i` (same size, in place).
pub fn set_child_ref(b: &mut [u8], i: usize, r: &BlockRef) {
    let off = item(b, i).val_off.get() as usize;
    b[off..off + 16].copy_from_slice(r.as_bytes());
}

/// Replaces the key of item `i`; the caller keeps the order.
pub fn set_key(b: &mut [u8], i: usize, k: &Key) {
    debug_assert!(i == 0 || key(b, i - 1) < *k);
    debug_assert!(i + 1 >= nr(b) || *k < key(b, i + 1));
    let off = item_off(i);
    b[off..off + 32].copy_from_slice(k.to_disk().as_bytes());
}

/// Binary search: Ok(index) of `k`, or Err(index where it would go).
pub fn search(b: &[u8], k: &Key) -> Result<usize, usize> {
    let (mut lo, mut hi) = (0, nr(b));
    while lo < hi {
        let mid = (lo + hi) / 2;
        match key(b, mid).cmp(k) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(mid),
        }
    }
    Err(lo)
}

/// Makes `b` an empty block of `level` (the block header is kept).
pub fn init(b: &mut [u8], level: u8) {
    b[32..].fill(0);
    bh_mut(b).level = level;
    set_counts(b, 0, 0, BTREE_BLOCK_USABLE);
}

/// Inserts an item at index `i`. The caller checked the order and that
/// `free_bytes` has room for it.
pub fn insert(b: &mut [u8], i: usize, k: &Key, seq: u64, flags: u8, v: &[u8]) {
    assert!(v.len() <= MAX_VAL_SIZE);
    let need = item_bytes(v.len());
    assert!(free_bytes(b) >= need, "btree block has no room for an item");
    if mid_free(b) < need {
        compact(b);
    }
    let (n, tot, mf) = (nr(b), total(b), mid_free(b));
    assert!(i <= n && mf >= need);
    let items_end = item_off(n);
    let lowest = items_end + mf;
    let val_off = lowest - val_bytes(v.len());
    b.copy_within(item_off(i)..items_end, item_off(i) + BTREE_ITEM_SIZE);
    let it = BtreeItem {
        key: k.to_disk(),
        seq: seq.into(),
        val_off: (if v.is_empty() { 0 } else { val_off } as u16).into(),
        val_len: (v.len() as u16).into(),
        flags,
        pad: [0; 3],
    };
    b[item_off(i)..item_off(i + 1)].copy_from_slice(it.as_bytes());
    b[val_off..val_off + val_bytes(v.len())].fill(0);
    b[val_off..val_off + v.len()].copy_from_slice(v);
    let used = BTREE_ITEM_SIZE + if v.is_empty() { 0 } else { val_bytes(v.len()) };
    set_counts(b, n + 1, tot + need, mf - used);
}

/// Removes item `i`.
pub fn remove(b: &mut [u8], i: usize) {
    let (n, tot, mut mf) = (nr(b), total(b), mid_free(b));
    assert!(i < n);
    let it = item(b, i);
    let len = it.val_len.get() as usize;
    let lowest = item_off(n) + mf;
    if len > 0 && it.val_off.get() as usize == lowest {
        mf += val_bytes(len);
    }
    b.copy_within(item_off(i + 1)..item_off(n), item_off(i));
    b[item_off(n - 1)..item_off(n)].fill(0);
    mf += BTREE_ITEM_SIZE;
    if n == 1 {
        mf = BTREE_BLOCK_USABLE;
    }
    set_counts(b, n - 1, tot - item_bytes(len), mf);
}

/// Packs every value against the end of the block, closing holes.
fn compact(b: &mut [u8]) {
    let n = nr(b);
    let vals: Vec<Vec<u8>> = (0..n).map(|i| val(b, i).to_vec()).collect();
    let mut lowest = BLOCK_LG_SIZE;
    b[item_off(n)..].fill(0);
    for (i, v) in vals.iter().enumerate() {
        if v.is_empty() {
            continue;
        }
        lowest -= val_bytes(v.len());
        b[lowest..lowest + v.len()].copy_from_slice(v);
        let off = item_off(i) + 40;
        b[off..off + 2].copy_from_slice(&(lowest as u16).to_le_bytes());
    }
    let tot = total(b);
    set_counts(b, n, tot, lowest - item_off(n));
}

/// Every item of a block, in order.
pub fn items_of(b: &[u8]) -> Vec<Item> {
    (0..nr(b)).map(|i| owned(b, i)).collect()
}

/// Rewrites `b` as a block of `level` holding exactly `items` (sorted).
pub fn write_items(b: &mut [u8], level: u8, items: &[Item]) {
    init(b, level);
    for (i, it) in items.iter().enumerate() {
        insert(b, i, &it.key, it.seq, it.flags, &it.val);
    }
}

/// Where to cut `items` so both sides hold about half the bytes, at least
/// one item each.
pub fn split_point(items: &[Item]) -> usize {
    assert!(items.len() >= 2);
    let total: usize = items.iter().map(|it| item_bytes(it.val.len())).sum();
    let mut acc = 0;
    for (i, it) in items.iter().enumerate() {
        acc += item_bytes(it.val.len());
        if acc * 2 >= total {
            return (i + 1).clamp(1, items.len() - 1);
        }
    }
    items.len() - 1
}

/// Bytes the given items take in a block.
pub fn items_bytes(items: &[Item]) -> usize {
    items.iter().map(|it| item_bytes(it.val.len())).sum()
}

const _: () = assert!(BTREE_BLOCK_HEADER_SIZE == 48);
