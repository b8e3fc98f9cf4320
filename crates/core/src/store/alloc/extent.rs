//! Free-extent btrees: the bulk of free metadata space and all free data
//! space.
//!
//! Each free extent is two items in the [`AllocRoot`]'s btree, both with
//! empty values:
//! - by position: (FREE_EXTENT_BLKNO zone, first = last block, second = len),
//!   so a "next" search from a block finds the extent that may contain it;
//! - by size: (FREE_EXTENT_ORDER zone, first = u64::MAX - order,
//!   second = last block, third = len), order = floor(log8(len)), so the
//!   first item is an extent of the largest size class.
//!
//! Freeing merges with both neighbours; a freed range that overlaps a free
//! extent is corruption (a double free), reported and refused. Allocation
//! takes the front of an extent of the largest class, which leaves small
//! freed extents time to merge before they are reused. `total_len` counts
//! free blocks. The btree blocks come from the writer's alloc lists, never
//! from the tree being changed.

use crate::error::{CorruptKind, Error, Result};
use crate::store::block::Writer;
use crate::store::btree::{self, Reader};
use scoutfs_format::alloc::extent_order;
use scoutfs_format::key::zone;
use scoutfs_format::{AllocRoot, Key};

/// A run of free blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Extent {
    pub start: u64,
    pub len: u64,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.start + self.len - 1
    }
}

fn blkno_key(end: u64, len: u64) -> Key {
    Key::new(zone::FREE_EXTENT_BLKNO, end, 0, len, 0, 0)
}

fn order_key(end: u64, len: u64) -> Key {
    Key::new(
        zone::FREE_EXTENT_ORDER,
        u64::MAX - extent_order(len),
        0,
        end,
        len,
        0,
    )
}

fn overlap(root: &AllocRoot, what: &str, e: Extent, have: Extent) -> Error {
    let r = &root.root.blk;
    let detail = format!(
        "{what} {}..={} overlaps free extent {}..={}",
        e.start,
        e.end(),
        have.start,
        have.end()
    );
    Error::corrupt(
        CorruptKind::AllocOverlap,
        r.blkno.get(),
        r.seq.get(),
        detail,
    )
}

/// The free extent whose last block is the first ≥ `blkno`.
pub fn next_extent<R: Reader + ?Sized>(
    rd: &R,
    root: &AllocRoot,
    blkno: u64,
) -> Result<Option<Extent>> {
    let Some(it) = btree::next(rd, &root.root, &blkno_key(blkno, 0))? else {
        return Ok(None);
    };
    if it.key.zone != zone::FREE_EXTENT_BLKNO {
        return Ok(None);
    }
    extent_of(root, it.key.first, it.key.second).map(Some)
}

/// The extent of an item's (end, len), which must describe blocks.
fn extent_of(root: &AllocRoot, end: u64, len: u64) -> Result<Extent> {
    if len == 0 || len - 1 > end || end == u64::MAX {
        let r = &root.root.blk;
        let detail = format!("free extent item with end {end} len {len}");
        return Err(Error::corrupt(
            CorruptKind::ItemInvalid,
            r.blkno.get(),
            r.seq.get(),
            detail,
        ));
    }
    Ok(Extent {
        start: end - (len - 1),
        len,
    })
}

/// Every free extent in block order.
pub fn extents<R: Reader + ?Sized>(rd: &R, root: &AllocRoot) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut b = 0;
    while let Some(e) = next_extent(rd, root, b)? {
        out.push(e);
        match e.end().checked_add(1) {
            Some(n) => b = n,
            None => break,
        }
    }
    Ok(out)
}

fn put_extent(w: &mut Writer, root: &mut AllocRoot, e: Extent) -> Result<()> {
    btree::insert(w, &mut root.root, &blkno_key(e.end(), e.len), 0, 0, &[])?;
    btree::insert(w, &mut root.root, &order_key(e.end(), e.len), 0, 0, &[])?;
    root.total_len = (root.total_len.get() + e.len).into();
    Ok(())
}

fn drop_extent(w: &mut Writer, root: &mut AllocRoot, e: Extent) -> Result<()> {
    let a = btree::delete(w, &mut root.root, &blkno_key(e.end(), e.len))?;
    let b = btree::delete(w, &mut root.root, &order_key(e.end(), e.len))?;
    if !a || !b || root.total_len.get() < e.len {
        let r = &root.root.blk;
        let detail = format!(
            "free extent {}..={} is missing one of its items",
            e.start,
            e.end()
        );
        return Err(Error::corrupt(
            CorruptKind::AllocTotals,
            r.blkno.get(),
            r.seq.get(),
            detail,
        ));
    }
    root.total_len = (root.total_len.get() - e.len).into();
    Ok(())
}

/// Adds `start..start+len` to the free space, merging with neighbours.
/// Freeing blocks that are already free is refused as corruption.
pub fn free_extent(w: &mut Writer, root: &mut AllocRoot, start: u64, len: u64) -> Result<()> {
    let res = free_inner(w, root, start, len);
    w.fail_on(res)
}

fn free_inner(w: &mut Writer, root: &mut AllocRoot, start: u64, len: u64) -> Result<()> {
    assert!(len > 0 && start.checked_add(len).is_some_and(|e| e < u64::MAX));
    let mut e = Extent { start, len };
    // The first free extent ending at or after `start` overlaps if it
    // begins within the freed range.
    if let Some(x) = next_extent(w, root, start)? {
        if x.start <= e.end() {
            return Err(overlap(root, "freed", e, x));
        }
    }
    if start > 0 {
        if let Some(left) = next_extent(w, root, start - 1)?.filter(|l| l.end() + 1 == start) {
            drop_extent(w, root, left)?;
            e = Extent {
                start: left.start,
                len: left.len + e.len,
            };
        }
    }
    if let Some(right) = next_extent(w, root, e.end() + 1)?.filter(|r| r.start == e.end() + 1) {
        drop_extent(w, root, right)?;
        e.len += right.len;
    }
    put_extent(w, root, e)
}

/// Removes `start..start+len`, which must lie within one free extent.
pub fn remove_extent(w: &mut Writer, root: &mut AllocRoot, start: u64, len: u64) -> Result<()> {
    let res = remove_inner(w, root, start, len);
    w.fail_on(res)
}

fn remove_inner(w: &mut Writer, root: &mut AllocRoot, start: u64, len: u64) -> Result<()> {
    let want = Extent { start, len };
    let found = next_extent(w, root, start)?;
    let Some(have) = found.filter(|h| h.start <= start && h.end() >= want.end()) else {
        let r = &root.root.blk;
        let detail = format!("blocks {}..={} are not free", start, want.end());
        return Err(Error::corrupt(
            CorruptKind::AllocOverlap,
            r.blkno.get(),
            r.seq.get(),
            detail,
        ));
    };
    drop_extent(w, root, have)?;
    if have.start < start {
        put_extent(
            w,
            root,
            Extent {
                start: have.start,
                len: start - have.start,
            },
        )?;
    }
    if have.end() > want.end() {
        put_extent(
            w,
            root,
            Extent {
                start: want.end() + 1,
                len: have.end() - want.end(),
            },
        )?;
    }
    Ok(())
}

/// Allocates up to `len_max` blocks from the front of an extent of the
/// largest size class. None when the tree is empty.
pub fn alloc_extent(w: &mut Writer, root: &mut AllocRoot, len_max: u64) -> Result<Option<Extent>> {
    let res = alloc_inner(w, root, len_max);
    w.fail_on(res)
}

fn alloc_inner(w: &mut Writer, root: &mut AllocRoot, len_max: u64) -> Result<Option<Extent>> {
    assert!(len_max > 0);
    let first = Key::new(zone::FREE_EXTENT_ORDER, 0, 0, 0, 0, 0);
    let Some(it) = btree::next(w, &root.root, &first)? else {
        return Ok(None);
    };
    if it.key.zone != zone::FREE_EXTENT_ORDER {
        return Ok(None);
    }
    let e = extent_of(root, it.key.second, it.key.third)?;
    let got = Extent {
        start: e.start,
        len: e.len.min(len_max),
    };
    remove_extent(w, root, got.start, got.len)?;
    Ok(Some(got))
}

/// Frees a list of single blocks, sorted here and freed as runs.
pub fn free_blocks(w: &mut Writer, root: &mut AllocRoot, mut blknos: Vec<u64>) -> Result<()> {
    blknos.sort_unstable();
    let mut i = 0;
    while i < blknos.len() {
        let mut j = i + 1;
        while j < blknos.len() && blknos[j] == blknos[j - 1] + 1 {
            j += 1;
        }
        free_extent(w, root, blknos[i], (j - i) as u64)?;
        i = j;
    }
    Ok(())
}
