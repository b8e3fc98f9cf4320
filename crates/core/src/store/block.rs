//! Metadata blocks: the clean block cache and one writer's dirty blocks.
//!
//! Reading. Every read goes through a [`BlockRef`] {blkno, seq}. The 64 KiB
//! block's header must match the reference (magic, fsid, blkno, seq); if it
//! doesn't, the block was rewritten after the reference was read and the
//! result is [`Error::Stale`]. If the header matches but the crc32c doesn't,
//! or the contents are not a valid structure of their kind, the result is
//! [`Error::Corrupt`], counted and logged with blkno, seq and what was
//! expected. Verified blocks are immutable and shared (`Arc<Block>`) in a
//! CLOCK (second chance) cache bounded by `max_blocks`; eviction only drops the cache's
//! reference, so readers holding a block keep it alive.
//!
//! Writing. A [`Writer`] owns the dirty blocks of one transaction (a server
//! commit, later a mount's transaction) in a map by blkno, plus the two alloc
//! lists it allocates from and frees into (see `alloc::list`). Dirtying a
//! clean block is copy-on-write: the contents are copied into a newly
//! allocated blkno with a fresh random seq, the caller's reference is
//! updated, and the old blkno is freed. A block already dirty in this writer
//! is modified in place. Dirty blocks are taken out of the map while a caller
//! modifies them and put back after, so several can be changed at once
//! without aliasing. `write_out` checksums and writes every dirty block in
//! blkno order, flushes the device, and moves the blocks into the clean cache.
//!
//! Memory. A transaction may dirty more blocks than it should hold: random
//! keys inserted into a large log btree dirty nearly every leaf. Past
//! `resident_max` dirty blocks, the writer writes the least recently put
//! half to their (newly allocated, so unreferenced) places on the device
//! and drops them from memory. They stay dirty: a later change reads one
//! back and modifies it in place, and the flush in `write_out` makes them
//! durable with the rest before any super block can reference them. A
//! crash before then leaves them in free space, like any uncommitted block.
//!
//! Small blocks (the super block and quorum blocks, 4 KiB) are read and
//! written synchronously with the same header checks by `read_sm`/`write_sm`.
//!
//! Locking: the cache has one mutex around its map; a Writer is owned by one
//! thread. Blocks never change after they are verified.

mod buf;

pub use buf::BlockBuf;

use crate::counters::{self, Counters};
use crate::error::{CorruptKind, Error, Result};
use crate::rng::Rng;
use crate::store::dev::BlockDev;
use scoutfs_format::alloc::validate_alloc_list_block;
use scoutfs_format::block::{block_crc, set_block_crc, stored_crc, BlockHeader};
use scoutfs_format::btree::validate_btree_block;
use scoutfs_format::consts::*;
use scoutfs_format::{AllocListHead, BlockRef};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use zerocopy::IntoBytes;

/// Default bound of the clean cache: 64 MiB of blocks.
pub const CACHE_BLOCKS_DEFAULT: usize = 1024;

/// A verified, immutable metadata block.
pub struct Block {
    data: BlockBuf,
}

impl Block {
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
    pub fn header(&self) -> BlockHeader {
        header_of(&self.data)
    }
}

/// The header of a block buffer (always at least 32 bytes here).
pub fn header_of(buf: &[u8]) -> BlockHeader {
    BlockHeader::decode(buf).unwrap_or_default()
}

/// Sets the identity fields of a block's header (the crc is set at write).
pub fn set_header(buf: &mut [u8], magic: u32, fsid: u64, seq: u64, blkno: u64) {
    let h = BlockHeader {
        crc: 0.into(),
        magic: magic.into(),
        fsid: fsid.into(),
        seq: seq.into(),
        blkno: blkno.into(),
    };
    buf[..32].copy_from_slice(h.as_bytes());
}

/// Checks a block read through `r` against it: identity first (Stale), then
/// the checksum and the structure of its kind (Corrupt).
pub fn verify_block(buf: &[u8], r: &BlockRef, fsid: u64, magic: u32) -> Result<()> {
    let h = header_of(buf);
    let (blkno, seq) = (r.blkno.get(), r.seq.get());
    if h.magic.get() != magic
        || h.fsid.get() != fsid
        || h.blkno.get() != blkno
        || h.seq.get() != seq
    {
        return Err(Error::Stale {
            blkno,
            want_seq: seq,
            found: format!(
                "found {} block {} seq {:#018x} fsid {:#018x} (want {} fsid {:#018x})",
                magic_name(h.magic.get()),
                h.blkno.get(),
                h.seq.get(),
                h.fsid.get(),
                magic_name(magic),
                fsid
            ),
        });
    }
    let (want, have) = (block_crc(buf), stored_crc(buf));
    if want != have {
        let detail = format!(
            "{} crc {:#010x}, computed {:#010x}",
            magic_name(magic),
            have,
            want
        );
        return Err(Error::corrupt(CorruptKind::BlockCrc, blkno, seq, detail));
    }
    let invalid = match magic {
        magic::BTREE => validate_btree_block(buf).err(),
        magic::ALLOC_LIST => validate_alloc_list_block(buf).err(),
        _ => None,
    };
    match invalid {
        Some(e) => Err(Error::corrupt(
            CorruptKind::BlockInvalid,
            blkno,
            seq,
            e.to_string(),
        )),
        None => Ok(()),
    }
}

/// The cached blocks with CLOCK (second chance) replacement: a hit only
/// sets the entry's referenced bit; eviction sweeps a hand over the slots,
/// clearing bits and taking the first entry that wasn't used since the
/// hand last passed.
struct Clock {
    map: HashMap<u64, usize>,
    slots: Vec<Option<(Arc<Block>, bool)>>,
    free: Vec<usize>,
    hand: usize,
    /// How many times the cache was cleared: a read that began before a
    /// clear does not insert what it read.
    clears: u64,
}

impl Clock {
    fn remove(&mut self, blkno: u64) {
        if let Some(i) = self.map.remove(&blkno) {
            self.slots[i] = None;
            self.free.push(i);
        }
    }

    /// A slot for a new entry: a free one, or the next victim of the hand.
    fn slot(&mut self, max: usize) -> (usize, bool) {
        if let Some(i) = self.free.pop() {
            return (i, false);
        }
        if self.slots.len() < max {
            self.slots.push(None);
            return (self.slots.len() - 1, false);
        }
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            match &mut self.slots[i] {
                Some((_, referenced)) if *referenced => *referenced = false,
                Some((b, _)) => {
                    let victim = b.header().blkno.get();
                    self.map.remove(&victim);
                    self.slots[i] = None;
                    return (i, true);
                }
                None => return (i, false),
            }
        }
    }
}

/// The cache of clean, verified metadata blocks of one device.
pub struct BlockCache {
    dev: Arc<dyn BlockDev>,
    fsid: u64,
    max_blocks: usize,
    clock: Mutex<Clock>,
    pub counters: Arc<Counters>,
}

impl BlockCache {
    pub fn new(dev: Arc<dyn BlockDev>, fsid: u64, max_blocks: usize) -> BlockCache {
        assert!(max_blocks > 0);
        BlockCache {
            dev,
            fsid,
            max_blocks,
            clock: Mutex::new(Clock {
                map: HashMap::new(),
                slots: Vec::new(),
                free: Vec::new(),
                hand: 0,
                clears: 0,
            }),
            counters: Arc::new(Counters::default()),
        }
    }

    pub fn dev(&self) -> &Arc<dyn BlockDev> {
        &self.dev
    }
    pub fn fsid(&self) -> u64 {
        self.fsid
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clock> {
        // A panic while holding the lock leaves the map consistent (each
        // update is a single insert or remove), so a poisoned lock is usable.
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads and verifies the block `r` refers to, which must be of `magic`.
    pub fn read(&self, r: &BlockRef, magic: u32) -> Result<Arc<Block>> {
        let blkno = r.blkno.get();
        if let Some(b) = self.lookup(blkno) {
            if b.header().seq.get() == r.seq.get() && b.header().magic.get() == magic {
                counters::inc(&self.counters.block_cache_hit);
                return Ok(b);
            }
            self.forget(blkno);
        }
        counters::inc(&self.counters.block_cache_miss);
        let clears = self.lock().clears;
        let mut data = BlockBuf::for_overwrite();
        self.read_raw(blkno, &mut data)?;
        if let Err(e) = verify_block(&data, r, self.fsid, magic) {
            self.note_error(&e);
            return Err(e);
        }
        let b = Arc::new(Block { data });
        // A copy read before a clear is not put back: after `clear` every
        // block comes from the device again.
        let mut c = self.lock();
        if c.clears == clears {
            self.insert_locked(&mut c, b.clone());
        }
        Ok(b)
    }

    /// Reads a block's bytes from the device without any checks.
    pub fn read_raw(&self, blkno: u64, buf: &mut [u8]) -> Result<()> {
        let off = blkno.checked_mul(BLOCK_LG_SIZE as u64);
        let res = match off {
            Some(off) => self.dev.read_at(buf, off),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "blkno overflow",
            )),
        };
        counters::add(&self.counters.block_read_bytes, buf.len() as u64);
        res.map_err(|e| {
            counters::inc(&self.counters.block_io_error);
            Error::io(
                format!("{}: reading metadata block {}", self.dev.name(), blkno),
                e,
            )
        })
    }

    /// Counts (and logs, for corruption) an error from a block read.
    pub fn note_error(&self, e: &Error) {
        match e {
            Error::Stale { .. } => counters::inc(&self.counters.block_stale),
            Error::Corrupt(c) => {
                counters::inc(&self.counters.block_corrupt);
                log_corruption(c);
            }
            _ => {}
        }
    }

    fn lookup(&self, blkno: u64) -> Option<Arc<Block>> {
        let mut c = self.lock();
        let i = *c.map.get(&blkno)?;
        let (b, referenced) = c.slots[i].as_mut()?;
        *referenced = true;
        Some(b.clone())
    }

    /// Adds a verified block, evicting clean blocks beyond the bound.
    pub fn insert(&self, b: Arc<Block>) {
        let mut c = self.lock();
        self.insert_locked(&mut c, b);
    }

    fn insert_locked(&self, c: &mut Clock, b: Arc<Block>) {
        let blkno = b.header().blkno.get();
        c.remove(blkno);
        let (i, evicted) = c.slot(self.max_blocks);
        if evicted {
            counters::inc(&self.counters.block_cache_evict);
        }
        c.slots[i] = Some((b, false));
        c.map.insert(blkno, i);
    }

    /// Drops a block from the cache.
    pub fn forget(&self, blkno: u64) {
        self.lock().remove(blkno);
    }

    /// Drops every cached block (a cold cache).
    pub fn clear(&self) {
        let mut c = self.lock();
        c.map.clear();
        c.slots.clear();
        c.free.clear();
        c.hand = 0;
        c.clears += 1;
    }

    pub fn cached_blocks(&self) -> usize {
        self.lock().map.len()
    }
}

/// The last corruption this process reported, for errors that reach the
/// user as an errno (EIO) far from where it was found.
static LAST_CORRUPTION: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Writes a corruption report to the log (standard error).
pub fn log_corruption(c: &crate::error::Corruption) {
    tracing::error!("{c}");
    *LAST_CORRUPTION.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.to_string());
}

/// The last corruption this process reported, if any.
pub fn last_corruption() -> Option<String> {
    LAST_CORRUPTION
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// For a message that reports EIO: the last corruption this process
/// found, if any (in a mount's process, its own or its server's; the
/// likely cause, named as what it is).
pub fn eio_cause(errno: i32) -> String {
    match (errno == libc::EIO).then(last_corruption).flatten() {
        Some(c) => format!(" (the last corruption this process found: {c})"),
        None => String::new(),
    }
}

/// A block buffer read for a writer: either one of its own dirty blocks or a
/// clean block from the cache.
pub enum BlockBytes<'a> {
    Dirty(&'a [u8]),
    Clean(Arc<Block>),
}

impl std::ops::Deref for BlockBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            BlockBytes::Dirty(b) => b,
            BlockBytes::Clean(b) => b.bytes(),
        }
    }
}

/// Dirty blocks a writer keeps in memory unless told otherwise (64 MiB).
pub const DIRTY_RESIDENT_DEFAULT: usize = 1024;

/// A dirty block in memory, with when it was last put back.
struct Dirty {
    buf: BlockBuf,
    used: u64,
}

/// A dirty block written early to free its memory.
struct Spilled {
    seq: u64,
    magic: u32,
}

/// The two lists a writer allocates from and frees into.
#[derive(Clone, Debug, Default)]
pub struct ListState {
    pub avail: AllocListHead,
    pub freed: AllocListHead,
    /// Blocks freed while a list operation was under way (see `alloc::list`).
    pub(crate) pending: Vec<u64>,
    /// A list operation is under way.
    pub(crate) draining: bool,
}

impl ListState {
    pub fn new(avail: AllocListHead, freed: AllocListHead) -> ListState {
        ListState {
            avail,
            freed,
            pending: Vec::new(),
            draining: false,
        }
    }

    /// No list operation is under way and nothing waits to be freed.
    pub fn quiescent(&self) -> bool {
        self.pending.is_empty() && !self.draining
    }
}

/// The dirty blocks and allocator of one transaction.
pub struct Writer {
    pub(crate) cache: Arc<BlockCache>,
    dirty: BTreeMap<u64, Dirty>,
    /// Dirty blocks already written to the device (see "Memory" above).
    spilled: BTreeMap<u64, Spilled>,
    /// How many dirty blocks stay in memory before some are spilled.
    resident_max: usize,
    /// Advances with every put: a dirty block's `used` orders spilling.
    tick: u64,
    /// Bytes of spilled blocks, reported by `write_out`.
    spilled_bytes: u64,
    pub(crate) rng: Rng,
    pub(crate) lists: ListState,
    /// Set by the first error after a change began: blocks may have been
    /// taken out and not put back, so the transaction can't be written.
    failed: Option<String>,
    /// Metadata blocks on the device: allocations must fall below it.
    dev_blocks: u64,
    /// Blocks this transaction allocated and freed again: never durable,
    /// so handed out again before the avail list (see [`Writer::settle`]).
    reuse: Vec<u64>,
}

impl Writer {
    /// A writer allocating from `avail` and freeing into `freed`.
    pub fn new(cache: Arc<BlockCache>, lists: ListState, rng: Rng) -> Writer {
        let dev_blocks = cache.dev().size() / BLOCK_LG_SIZE as u64;
        Writer {
            cache,
            dirty: BTreeMap::new(),
            spilled: BTreeMap::new(),
            resident_max: DIRTY_RESIDENT_DEFAULT,
            tick: 0,
            spilled_bytes: 0,
            rng,
            lists,
            failed: None,
            dev_blocks,
            reuse: Vec::new(),
        }
    }

    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    /// Keeps at most about `n` dirty blocks in memory (at least 2), writing
    /// the least recently used of the rest early.
    pub fn set_resident_max(&mut self, n: usize) {
        self.resident_max = n.max(2);
    }

    /// Records the first error of a change: the writer can no longer be
    /// written out and its transaction must be discarded.
    pub fn fail_on<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if self.failed.is_none() {
                self.failed = Some(e.to_string());
            }
        }
        r
    }

    /// Metadata blocks on the device as far as this writer knows.
    fn blocks_on_dev(&self) -> u64 {
        self.dev_blocks
            .max(self.cache.dev.size() / BLOCK_LG_SIZE as u64)
    }

    /// Why the writer can't be written out, if it can't.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Checks that an allocated metadata block number is one a writer may
    /// write: never the super or quorum blocks, never past the device.
    /// The device may have grown since the writer began (`scoutfs
    /// resize-devices`): a block past its size then is looked at again.
    pub(crate) fn check_alloc(&self, blkno: u64) -> Result<u64> {
        let mut blocks = self.blocks_on_dev();
        if blkno >= blocks {
            let size = self.cache.dev.refresh_size().unwrap_or(0);
            blocks = blocks.max(size / BLOCK_LG_SIZE as u64);
        }
        if blkno < META_DEV_START_BLKNO || blkno >= blocks {
            let detail = format!(
                "allocator handed out metadata block {blkno} outside {META_DEV_START_BLKNO}..{blocks}"
            );
            return Err(Error::corrupt(CorruptKind::AllocOverlap, blkno, 0, detail));
        }
        Ok(blkno)
    }

    /// The blocks this transaction has dirtied, in memory or spilled.
    pub fn dirty_blocks(&self) -> usize {
        self.dirty.len() + self.spilled.len()
    }

    /// The dirty blocks held in memory.
    pub fn resident_blocks(&self) -> usize {
        self.dirty.len()
    }

    /// Whether `r` names a block this writer has dirtied (and may change).
    pub fn is_dirty(&self, r: &BlockRef) -> bool {
        let blkno = r.blkno.get();
        let seq = r.seq.get();
        self.dirty
            .get(&blkno)
            .is_some_and(|d| header_of(&d.buf).seq.get() == seq)
            || self.spilled.get(&blkno).is_some_and(|s| s.seq == seq)
    }

    /// Reads a block: this writer's dirty version, or a verified clean one.
    /// A spilled dirty block is read from the device like a clean one.
    pub fn read(&self, r: &BlockRef, magic: u32) -> Result<BlockBytes<'_>> {
        if let Some(d) = self.dirty.get(&r.blkno.get()) {
            if header_of(&d.buf).seq.get() == r.seq.get() {
                return Ok(BlockBytes::Dirty(&d.buf));
            }
        }
        Ok(BlockBytes::Clean(self.cache.read(r, magic)?))
    }

    /// Takes dirty block `blkno` out for modification, reading it back if
    /// it was spilled. The caller has checked `is_dirty`. A failed read
    /// fails the transaction: the block's contents are lost to it.
    pub(crate) fn take_dirty(&mut self, blkno: u64) -> Result<BlockBuf> {
        if let Some(d) = self.dirty.remove(&blkno) {
            return Ok(d.buf);
        }
        let Some(sp) = self.spilled.remove(&blkno) else {
            unreachable!("dirty block {blkno} is neither in memory nor spilled")
        };
        let r = BlockRef::new(blkno, sp.seq);
        let res = self
            .cache
            .read(&r, sp.magic)
            .map(|b| BlockBuf::copy_of(b.bytes()));
        // It is about to change under the same seq: no cached copy may stay.
        self.cache.forget(blkno);
        self.fail_on(res)
    }

    /// Takes a block out for modification: a dirty block as it is, or a clean
    /// one copied into a newly allocated blkno (copy-on-write), in which case
    /// `r` is updated and the old blkno freed. Give it back with [`put`].
    ///
    /// [`put`]: Writer::put
    pub fn cow(&mut self, r: &mut BlockRef, magic: u32) -> Result<BlockBuf> {
        if self.is_dirty(r) {
            return self.take_dirty(r.blkno.get());
        }
        let clean = self.cache.read(r, magic)?;
        let mut buf = BlockBuf::copy_of(clean.bytes());
        let res = self.alloc_meta().and_then(|blkno| {
            self.free_meta(r.blkno.get())?;
            Ok(blkno)
        });
        let blkno = self.fail_on(res)?;
        let seq = self.rng.nonzero();
        set_header(&mut buf, magic, self.cache.fsid, seq, blkno);
        *r = BlockRef::new(blkno, seq);
        Ok(buf)
    }

    /// A new zeroed block of `magic` at a newly allocated blkno.
    pub fn new_block(&mut self, magic: u32) -> Result<(BlockRef, BlockBuf)> {
        let blkno = self.alloc_meta()?;
        Ok(self.new_block_at(magic, blkno))
    }

    /// A new zeroed block at a blkno the caller already allocated.
    pub fn new_block_at(&mut self, magic: u32, blkno: u64) -> (BlockRef, BlockBuf) {
        let mut buf = BlockBuf::zeroed();
        let seq = self.rng.nonzero();
        set_header(&mut buf, magic, self.cache.fsid, seq, blkno);
        (BlockRef::new(blkno, seq), buf)
    }

    /// Gives a block taken by `cow` or `new_block` back to the dirty set.
    /// Past the resident limit, some dirty blocks are written early; an
    /// error there fails the transaction and keeps them in memory.
    pub fn put(&mut self, buf: BlockBuf) {
        let blkno = header_of(&buf).blkno.get();
        self.tick += 1;
        let prev = self.dirty.insert(
            blkno,
            Dirty {
                buf,
                used: self.tick,
            },
        );
        assert!(prev.is_none(), "dirty block {blkno} put twice");
        assert!(
            !self.spilled.contains_key(&blkno),
            "dirty block {blkno} put while spilled"
        );
        if self.dirty.len() > self.resident_max && self.failed.is_none() {
            let res = self.spill();
            let _ = self.fail_on(res);
        }
    }

    /// Checksums and writes one dirty block in place, counting it.
    fn write_block(&self, blkno: u64, buf: &mut [u8]) -> Result<()> {
        assert!(
            blkno >= META_DEV_START_BLKNO && blkno < self.blocks_on_dev(),
            "writing metadata block {blkno}"
        );
        set_block_crc(buf);
        let dev = &self.cache.dev;
        let ctr = &self.cache.counters;
        // A block is checked before it is written as it is after it is
        // read: a bug that built a bad block stops the commit here instead
        // of leaving a corrupt filesystem for the next reader.
        let h = header_of(buf);
        let (magic, seq) = (h.magic.get(), h.seq.get());
        let r = BlockRef {
            blkno: blkno.into(),
            seq: seq.into(),
        };
        if let Err(e) = verify_block(buf, &r, self.cache.fsid, magic) {
            counters::inc(&ctr.block_write_refused);
            let detail = format!("refusing to write an invalid block: {e}");
            return Err(Error::corrupt(
                CorruptKind::BlockInvalid,
                blkno,
                seq,
                detail,
            ));
        }
        dev.write_at(buf, blkno * BLOCK_LG_SIZE as u64)
            .map_err(|e| {
                counters::inc(&ctr.block_io_error);
                Error::io(format!("{}: writing metadata block {blkno}", dev.name()), e)
            })?;
        counters::inc(&ctr.block_write_blocks);
        counters::add(&ctr.block_write_bytes, buf.len() as u64);
        Ok(())
    }

    /// Writes the least recently put half of the dirty blocks to the device
    /// and drops them from memory, in blkno order.
    fn spill(&mut self) -> Result<()> {
        let keep = self.resident_max / 2;
        let mut by_age: Vec<(u64, u64)> = self.dirty.iter().map(|(b, d)| (d.used, *b)).collect();
        by_age.sort_unstable();
        let mut victims: Vec<u64> = by_age[..by_age.len().saturating_sub(keep)]
            .iter()
            .map(|&(_, b)| b)
            .collect();
        victims.sort_unstable();
        for blkno in victims {
            let Some(mut d) = self.dirty.remove(&blkno) else {
                continue;
            };
            if let Err(e) = self.write_block(blkno, &mut d.buf) {
                self.dirty.insert(blkno, d);
                return Err(e);
            }
            let h = header_of(&d.buf);
            self.spilled.insert(
                blkno,
                Spilled {
                    seq: h.seq.get(),
                    magic: h.magic.get(),
                },
            );
            self.cache.forget(blkno);
            self.spilled_bytes += d.buf.len() as u64;
            counters::inc(&self.cache.counters.block_dirty_spilled);
        }
        Ok(())
    }

    /// Frees a block that a structure no longer references. A block this
    /// transaction allocated was never durable: it is allocated again
    /// before anything from the avail list.
    pub fn free_block(&mut self, r: &BlockRef) -> Result<()> {
        if self.is_dirty(r) {
            let blkno = r.blkno.get();
            self.dirty.remove(&blkno);
            if self.spilled.remove(&blkno).is_some() {
                self.cache.forget(blkno);
            }
            self.reuse.push(blkno);
            return Ok(());
        }
        self.free_meta(r.blkno.get())
    }

    /// Allocates a block freed earlier in this transaction, if any.
    pub(crate) fn take_reused(&mut self) -> Option<u64> {
        self.reuse.pop()
    }

    /// Frees into the freed list the blocks freed in this transaction and
    /// not allocated again. Called before the lists are recorded.
    pub fn settle(&mut self) -> Result<()> {
        while let Some(b) = self.reuse.pop() {
            self.free_meta(b)?;
        }
        Ok(())
    }

    /// Checksums and writes every dirty block in blkno order, flushes the
    /// device, and moves the blocks into the clean cache. Returns the bytes
    /// written.
    pub fn write_out(&mut self) -> Result<u64> {
        if let Some(why) = &self.failed {
            return Err(Error::Internal(format!(
                "the transaction failed earlier: {why}"
            )));
        }
        assert!(
            self.lists.quiescent(),
            "write_out during an allocator operation"
        );
        assert!(self.reuse.is_empty(), "write_out before settle");
        let dev = self.cache.dev.clone();
        let mut bytes = 0u64;
        let dirty = std::mem::take(&mut self.dirty);
        let mut written = Vec::with_capacity(dirty.len());
        for (blkno, Dirty { mut buf, .. }) in dirty {
            self.write_block(blkno, &mut buf)?;
            bytes += buf.len() as u64;
            written.push(buf);
        }
        dev.flush()
            .map_err(|e| Error::io(format!("{}: flush", dev.name()), e))?;
        for data in written {
            self.cache.insert(Arc::new(Block { data }));
        }
        // The spilled blocks were written before the flush: durable too.
        self.spilled.clear();
        Ok(bytes + std::mem::take(&mut self.spilled_bytes))
    }
}

/// Reads a 4 KiB block (super or quorum) at SM blkno `blkno` and checks its
/// magic, blkno and crc; the fsid is checked when `fsid` is given.
pub fn read_sm(dev: &dyn BlockDev, blkno: u64, magic: u32, fsid: Option<u64>) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; BLOCK_SM_SIZE];
    dev.read_at(&mut buf, blkno << BLOCK_SM_SHIFT)
        .map_err(|e| {
            Error::io(
                format!("{}: reading block {} (4 KiB units)", dev.name(), blkno),
                e,
            )
        })?;
    let h = header_of(&buf);
    let seq = h.seq.get();
    let bad = |detail: String| {
        Err(Error::corrupt(
            CorruptKind::BlockInvalid,
            blkno,
            seq,
            detail,
        ))
    };
    if h.magic.get() != magic {
        return bad(format!(
            "{} has magic {:#010x}, not {} ({:#010x})",
            dev.name(),
            h.magic.get(),
            magic_name(magic),
            magic
        ));
    }
    if h.blkno.get() != blkno {
        return bad(format!(
            "header blkno {} is not its location {}",
            h.blkno.get(),
            blkno
        ));
    }
    if let Some(f) = fsid {
        if h.fsid.get() != f {
            return bad(format!("fsid {:#018x}, expected {:#018x}", h.fsid.get(), f));
        }
    }
    if block_crc(&buf) != stored_crc(&buf) {
        let detail = format!(
            "crc {:#010x}, computed {:#010x}",
            stored_crc(&buf),
            block_crc(&buf)
        );
        return Err(Error::corrupt(CorruptKind::BlockCrc, blkno, seq, detail));
    }
    Ok(buf)
}

/// Checksums and writes a 4 KiB block at SM blkno `blkno` (no flush).
pub fn write_sm(dev: &dyn BlockDev, blkno: u64, buf: &mut [u8]) -> Result<()> {
    assert_eq!(buf.len(), BLOCK_SM_SIZE);
    assert_eq!(header_of(buf).blkno.get(), blkno);
    set_block_crc(buf);
    dev.write_at(buf, blkno << BLOCK_SM_SHIFT).map_err(|e| {
        Error::io(
            format!("{}: writing block {} (4 KiB units)", dev.name(), blkno),
            e,
        )
    })
}
