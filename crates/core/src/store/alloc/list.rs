//! Alloc lists: linked blocks of free metadata block numbers.
//!
//! A list head names the first block; each block holds up to
//! `ALLOC_LIST_MAX_BLOCKS` entries in `blknos[start..start + nr]` and a ref
//! to the next block. Entries are free blocks; the list blocks themselves
//! are referenced blocks.
//!
//! A [`Writer`] owns two lists ([`ListState`], defined beside it so that the
//! block layer imports nothing of the allocators): it pops from *avail* and
//! pushes onto *freed*. Popping from a clean avail block copies the block
//! into one of its own entries (so allocating never needs another
//! allocation); pushing onto a clean freed block copies it into a block
//! popped from avail. A block freed while a list operation is under way is
//! queued in `pending` and pushed when the outermost operation finishes, so
//! the two lists never recurse into each other. An emptied dirty avail block
//! (allocated in this transaction) is itself handed out; an emptied clean one
//! is freed, since the durable super still references it.

use crate::error::{CorruptKind, Error, Result};
use crate::store::block::{ListState, Writer};
use scoutfs_format::alloc::{
    alloc_list_blkno, set_alloc_list_blkno, validate_alloc_list_block, AllocListBlockHeader,
};
use scoutfs_format::consts::{magic, ALLOC_LIST_MAX_BLOCKS};
use scoutfs_format::{AllocListHead, BlockRef};
use zerocopy::FromBytes;

fn hdr_mut(buf: &mut [u8]) -> &mut AllocListBlockHeader {
    // Every list buffer is a full 64 KiB block, longer than the header.
    AllocListBlockHeader::mut_from_prefix(buf)
        .map(|(h, _)| h)
        .unwrap_or_else(|_| unreachable!())
}

fn hdr(buf: &[u8]) -> AllocListBlockHeader {
    AllocListBlockHeader::read_from_prefix(buf)
        .map(|(h, _)| h)
        .unwrap_or_default()
}

/// The head's total less one, or corruption if it is already zero.
fn dec_total(head: &AllocListHead) -> Result<u64> {
    head.total_nr.get().checked_sub(1).ok_or_else(|| {
        let (b, s) = (head.first.blkno.get(), head.first.seq.get());
        Error::corrupt(
            CorruptKind::AllocTotals,
            b,
            s,
            "alloc list head counts fewer entries than its block",
        )
    })
}

/// The entries of one list block.
pub fn block_entries(buf: &[u8]) -> Vec<u64> {
    let h = hdr(buf);
    let (start, nr) = (h.start.get() as usize, h.nr.get() as usize);
    (start..start + nr)
        .map(|i| alloc_list_blkno(buf, i))
        .collect()
}

impl Writer {
    /// Allocates one metadata block from this writer's avail list.
    pub fn alloc_meta(&mut self) -> Result<u64> {
        if let Some(b) = self.take_reused() {
            return Ok(b);
        }
        let mut avail = self.lists.avail;
        let got = self.list_pop(&mut avail);
        self.lists.avail = avail;
        let res = got
            .and_then(|g| g.ok_or_else(|| Error::NoSpace("metadata avail list is empty".into())));
        let res = res
            .and_then(|b| self.check_alloc(b))
            .and_then(|b| self.drain_pending().map(|_| b));
        self.fail_on(res)
    }

    /// Frees one metadata block into this writer's freed list.
    pub fn free_meta(&mut self, blkno: u64) -> Result<()> {
        assert!(blkno != 0);
        self.lists.pending.push(blkno);
        let res = self.drain_pending();
        self.fail_on(res)
    }

    /// Blocks left in the avail list.
    pub fn avail_remaining(&self) -> u64 {
        self.lists.avail.total_nr.get()
    }

    pub fn lists(&self) -> &ListState {
        &self.lists
    }

    fn drain_pending(&mut self) -> Result<()> {
        if self.lists.draining {
            return Ok(());
        }
        self.lists.draining = true;
        let mut res = Ok(());
        while let Some(b) = self.lists.pending.pop() {
            let mut freed = self.lists.freed;
            res = self.list_push(&mut freed, b);
            self.lists.freed = freed;
            if res.is_err() {
                break;
            }
        }
        self.lists.draining = false;
        res
    }

    /// Pushes a free block number onto the list `head` (never the writer's
    /// own avail list). New list blocks come from the writer's avail list.
    pub fn list_push(&mut self, head: &mut AllocListHead, blkno: u64) -> Result<()> {
        let res = self.list_push_inner(head, blkno);
        self.fail_on(res)
    }

    fn list_push_inner(&mut self, head: &mut AllocListHead, blkno: u64) -> Result<()> {
        let mut buf = if head.first.is_none() {
            None
        } else {
            let mut r = head.first;
            let buf = self.cow(&mut r, magic::ALLOC_LIST)?;
            head.first = r;
            // The block's own count decides whether it is full.
            if hdr(&buf).nr.get() as usize >= ALLOC_LIST_MAX_BLOCKS {
                self.put(buf);
                None
            } else {
                Some(buf)
            }
        };
        let mut buf = match buf.take() {
            Some(b) => b,
            None => {
                let nb = self.alloc_meta()?;
                let (r, mut nbuf) = self.new_block_at(magic::ALLOC_LIST, nb);
                hdr_mut(&mut nbuf).next = head.first;
                head.first = r;
                head.first_nr = 0.into();
                nbuf
            }
        };
        let h = hdr_mut(&mut buf);
        let (mut start, nr) = (h.start.get() as usize, h.nr.get() as usize);
        if start + nr == ALLOC_LIST_MAX_BLOCKS {
            let entries: Vec<u64> = (start..start + nr)
                .map(|i| alloc_list_blkno(&buf, i))
                .collect();
            for (i, b) in entries.into_iter().enumerate() {
                set_alloc_list_blkno(&mut buf, i, b);
            }
            start = 0;
        }
        set_alloc_list_blkno(&mut buf, start + nr, blkno);
        let h = hdr_mut(&mut buf);
        h.start = (start as u32).into();
        h.nr = (nr as u32 + 1).into();
        head.first_nr = (nr as u32 + 1).into();
        head.total_nr = (head.total_nr.get() + 1).into();
        self.put(buf);
        Ok(())
    }

    /// Pops a free block number from the list `head`, or None if it is empty.
    pub(crate) fn list_pop(&mut self, head: &mut AllocListHead) -> Result<Option<u64>> {
        loop {
            if head.first.is_none() {
                return Ok(None);
            }
            let r = head.first;
            if !self.is_dirty(&r) {
                let clean =
                    crate::store::block::BlockBuf::copy_of(&self.read(&r, magic::ALLOC_LIST)?);
                let h = hdr(&clean);
                let (start, nr) = (h.start.get() as usize, h.nr.get() as usize);
                if nr == 0 {
                    // The durable super still references it: free, don't reuse.
                    self.advance(head, &h.next)?;
                    self.lists.pending.push(r.blkno.get());
                    continue;
                }
                // Copy the block into its own last entry.
                let new = alloc_list_blkno(&clean, start + nr - 1);
                let mut buf = clean;
                let seq = self.rng.nonzero();
                crate::store::block::set_header(
                    &mut buf,
                    magic::ALLOC_LIST,
                    self.cache.fsid(),
                    seq,
                    new,
                );
                hdr_mut(&mut buf).nr = (nr as u32 - 1).into();
                head.first = BlockRef::new(new, seq);
                head.first_nr = (nr as u32 - 1).into();
                head.total_nr = dec_total(head)?.into();
                self.put(buf);
                self.lists.pending.push(r.blkno.get());
                continue;
            }
            let blkno = r.blkno.get();
            let mut buf = self.take_dirty(blkno)?;
            let h = hdr(&buf);
            let (start, nr) = (h.start.get() as usize, h.nr.get() as usize);
            if nr == 0 {
                // Allocated in this transaction: hand out the block itself.
                self.advance(head, &h.next)?;
                return Ok(Some(blkno));
            }
            let got = alloc_list_blkno(&buf, start + nr - 1);
            hdr_mut(&mut buf).nr = (nr as u32 - 1).into();
            head.first_nr = (nr as u32 - 1).into();
            let total = dec_total(head);
            self.put(buf);
            head.total_nr = total?.into();
            return Ok(Some(got));
        }
    }

    /// Makes `next` the first block of the list.
    fn advance(&mut self, head: &mut AllocListHead, next: &BlockRef) -> Result<()> {
        head.first = *next;
        head.first_nr = if next.is_none() {
            0.into()
        } else {
            let b = self.read(next, magic::ALLOC_LIST)?;
            hdr(&b).nr
        };
        Ok(())
    }

    /// Frees every list block of `head` and returns its entries; the list is
    /// left empty. The entries are the caller's to place.
    pub fn list_take_all(&mut self, head: &mut AllocListHead) -> Result<Vec<u64>> {
        let (entries, blocks) = read_list(self, head)?;
        *head = AllocListHead::default();
        for b in blocks {
            let res = self.free_block(&b);
            self.fail_on(res)?;
        }
        Ok(entries)
    }
}

/// Reads a whole list: its entries and the refs of its blocks, checking that
/// the counts in the head agree with the blocks.
pub fn read_list(w: &Writer, head: &AllocListHead) -> Result<(Vec<u64>, Vec<BlockRef>)> {
    walk_list(head, |r| Ok(Box::from(&*w.read(r, magic::ALLOC_LIST)?)))
}

/// Walks a list with `read`, returning its entries and block refs.
pub fn walk_list(
    head: &AllocListHead,
    mut read: impl FnMut(&BlockRef) -> Result<Box<[u8]>>,
) -> Result<(Vec<u64>, Vec<BlockRef>)> {
    let mut entries = Vec::new();
    let mut blocks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut r = head.first;
    while !r.is_none() {
        if !seen.insert(r.blkno.get()) {
            let detail = "alloc list comes back to a block it passed (a loop)";
            return Err(Error::corrupt(
                CorruptKind::AllocTotals,
                r.blkno.get(),
                r.seq.get(),
                detail,
            ));
        }
        let buf = read(&r)?;
        validate_alloc_list_block(&buf).map_err(|e| {
            Error::corrupt(
                CorruptKind::BlockInvalid,
                r.blkno.get(),
                r.seq.get(),
                e.to_string(),
            )
        })?;
        let e = block_entries(&buf);
        if blocks.is_empty() && e.len() as u32 != head.first_nr.get() {
            let detail = format!(
                "first block holds {} entries, head says {}",
                e.len(),
                head.first_nr.get()
            );
            return Err(Error::corrupt(
                CorruptKind::AllocTotals,
                r.blkno.get(),
                r.seq.get(),
                detail,
            ));
        }
        entries.extend(e);
        blocks.push(r);
        r = hdr(&buf).next;
    }
    if entries.len() as u64 != head.total_nr.get() {
        let detail = format!(
            "list holds {} entries, head says {}",
            entries.len(),
            head.total_nr.get()
        );
        return Err(Error::corrupt(
            CorruptKind::AllocTotals,
            head.first.blkno.get(),
            head.first.seq.get(),
            detail,
        ));
    }
    Ok((entries, blocks))
}
