//! File data: extents, reads, writes, truncate and fallocate.
//!
//! File data lives in 4 KiB blocks on the data device. An inode's blocks
//! are mapped by DATA_EXTENT items keyed (ino, last logical block, length)
//! with the first physical block and flags as the value, so a "next"
//! search from a logical block finds the extent that may contain it. Holes
//! have no item and read as zeros; UNWRITTEN extents (fallocate) are
//! allocated but read as zeros until written.
//!
//! Writes go straight to the data device; blocks that weren't mapped are
//! allocated from the mount's `data_avail` extents and their mapping is an
//! item change in the open transaction. A write that extends a file at its
//! end preallocates up to as much again (at most 8 MiB) as UNWRITTEN blocks
//! past it, so a streaming file stays contiguous among concurrent writers;
//! truncate and unlink free what was never written. The transaction's commit flushes
//! the data device before the metadata that maps the blocks. Partial blocks
//! are completed with the block's old contents, or zeros when new.
//!
//! Freed blocks (truncate, punch, unlink) go to the mount's `data_freed`
//! and return to service only after the server takes them back at the next
//! transaction, once the freeing commit is durable. Large truncates free
//! extents in batches, one transaction hold per batch.

use super::blocking;
use super::inode::now;
use super::inode::seqs_of;
use super::types::{Attr, Op};
use super::wait::{MakeResume, Offline, DWO_CHANGE_SIZE, DWO_READ, DWO_WRITE};
use super::{Fs, FsError, FsResult, EFBIG, EINVAL, EIO, EISDIR, ENOENT, ENOSPC, EOPNOTSUPP};
use crate::cluster::lock::LockMode;
use crate::error::Error;
use crate::mount::locks::LockGuard;
use crate::store::alloc::extent;
use scoutfs_format::data::{DataExtentVal, SEF_OFFLINE, SEF_UNWRITTEN};
use scoutfs_format::inode::{S_IFDIR, S_IFREG};
use scoutfs_format::key::{ty, zone};
use scoutfs_format::Key;
use zerocopy::{FromBytes, IntoBytes};

pub const BLOCK: u64 = 4096;
/// The largest file: logical block numbers stay far from overflow.
pub const MAX_FILE_BYTES: u64 = 1 << 60;
/// The most blocks preallocated past a streaming write (8 MiB).
const PREALLOC_MAX_BLOCKS: u64 = 2048;
/// Extents changed per transaction hold in truncate and punch.
const EXTENTS_PER_HOLD: usize = 64;

pub const FALLOC_FL_KEEP_SIZE: u32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: u32 = 0x02;

/// One mapped run of logical blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ext {
    pub start: u64,
    pub len: u64,
    pub pblk: u64,
    pub flags: u8,
}

impl Ext {
    pub(super) fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Released: its data must be staged before it can be read.
    pub(super) fn offline(&self) -> bool {
        self.flags & SEF_OFFLINE != 0
    }

    /// It maps data device blocks (written, unwritten, or allocated ahead
    /// of staging).
    pub(super) fn maps_blocks(&self) -> bool {
        !self.offline() || self.flags & SEF_UNWRITTEN != 0
    }
}

fn ext_key(ino: u64, start: u64, len: u64) -> Key {
    Key::new(zone::FS, ino, ty::DATA_EXTENT, start + len - 1, len, 0)
}

fn dev_err(e: std::io::Error) -> FsError {
    FsError::from(Error::io("data device", e))
}

impl Fs {
    /// Extents overlapping logical blocks `from..to`.
    pub(super) fn extents_in(
        &self,
        g: &LockGuard,
        ino: u64,
        from: u64,
        to: u64,
    ) -> FsResult<Vec<Ext>> {
        let mut out = Vec::new();
        let mut k = Key::new(zone::FS, ino, ty::DATA_EXTENT, from, 0, 0);
        let last = Key::new(zone::FS, ino, ty::DATA_EXTENT, u64::MAX, u64::MAX, u8::MAX);
        while let Some((key, v)) = self.next(g, &k, &last)? {
            let (end, len) = (key.second, key.third);
            let val = DataExtentVal::read_from_bytes(&v).map_err(|_| EIO)?;
            if len == 0 || len > end + 1 {
                return Err(EIO);
            }
            let e = Ext {
                start: end + 1 - len,
                len,
                pblk: val.blkno.get(),
                flags: val.flags,
            };
            if e.start >= to {
                break;
            }
            out.push(e);
            k = key.inc();
        }
        Ok(out)
    }

    /// Maps logical blocks `start..start+len` to `map` (or unmaps them);
    /// returns the physical runs that were mapped there before (offline
    /// extents map none), and how many offline blocks were there.
    pub(super) fn set_mapping(
        &self,
        op: &Op,
        g: &LockGuard,
        ino: u64,
        start: u64,
        len: u64,
        map: Option<(u64, u8)>,
    ) -> FsResult<(Vec<(u64, u64)>, u64)> {
        let end = start + len;
        let seq = op.seq();
        let mut removed = Vec::new();
        let mut offline = 0;
        for e in self.extents_in(g, ino, start, end)? {
            self.del(g, seq, &ext_key(ino, e.start, e.len))?;
            if e.start < start {
                let v = DataExtentVal::new(e.pblk, e.flags);
                self.put(
                    g,
                    seq,
                    &ext_key(ino, e.start, start - e.start),
                    v.as_bytes(),
                )?;
            }
            if e.end() > end {
                let v = DataExtentVal::new(e.pblk + (end - e.start), e.flags);
                self.put(g, seq, &ext_key(ino, end, e.end() - end), v.as_bytes())?;
            }
            let (s, t) = (e.start.max(start), e.end().min(end));
            if e.maps_blocks() {
                removed.push((e.pblk + (s - e.start), t - s));
            }
            if e.offline() {
                offline += t - s;
            }
        }
        if let Some((pblk, flags)) = map {
            let v = DataExtentVal::new(pblk, flags);
            self.put(g, seq, &ext_key(ino, start, len), v.as_bytes())?;
        }
        Ok((removed, offline))
    }

    /// Allocates up to `len` data blocks; None when the mount has none left.
    pub(super) fn alloc_data(&self, len: u64) -> FsResult<Option<(u64, u64)>> {
        let e = self
            .trans
            .with_alloc(|w, lt| extent::alloc_extent(w, &mut lt.data_avail, len))?;
        // The device may have grown since it was last looked at.
        let mut dev_blocks = self.data.size() / BLOCK;
        if e.is_some_and(|e| e.start + e.len > dev_blocks) {
            dev_blocks = self.data.refresh_size().unwrap_or(0) / BLOCK;
        }
        match e {
            Some(e)
                if e.start < scoutfs_format::DATA_DEV_START_BLKNO
                    || e.start + e.len > dev_blocks =>
            {
                let detail = format!(
                    "data allocator handed out blocks {}+{} outside the device",
                    e.start, e.len
                );
                Err(Error::corrupt(crate::error::CorruptKind::AllocOverlap, 0, 0, detail).into())
            }
            e => Ok(e.map(|e| (e.start, e.len))),
        }
    }

    /// Frees physical data blocks into the mount's freed extents.
    pub(super) fn free_data(&self, runs: &[(u64, u64)]) -> FsResult<()> {
        for &(p, n) in runs.iter().filter(|r| r.1 > 0) {
            self.trans
                .with_alloc(|w, lt| extent::free_extent(w, &mut lt.data_freed, p, n))?;
        }
        Ok(())
    }

    fn regular(&self, g: &LockGuard, ino: u64) -> FsResult<Attr> {
        let a = self.read_inode(g, ino)?;
        match a.file_type() {
            S_IFREG => Ok(a),
            S_IFDIR => Err(EISDIR),
            _ => Err(EINVAL),
        }
    }

    /// Reads up to `len` bytes at `off`, waiting (this thread blocked)
    /// while any of them is offline.
    pub fn read(&self, ino: u64, off: u64, len: usize) -> FsResult<Vec<u8>> {
        blocking(&self.waits, |r| self.read_or_wait(ino, off, len, r))
    }

    /// Reads up to `len` bytes at `off`; None when some of them are
    /// offline: `resume` then runs (on a resume thread) once they may have
    /// been staged, or the wait failed.
    pub fn read_or_wait(
        &self,
        ino: u64,
        off: u64,
        len: usize,
        resume: MakeResume<'_>,
    ) -> Option<FsResult<Vec<u8>>> {
        self.read_once(ino, off, len, resume).transpose()
    }

    fn read_once(
        &self,
        ino: u64,
        off: u64,
        len: usize,
        resume: MakeResume<'_>,
    ) -> FsResult<Option<Vec<u8>>> {
        let g = self.locks.lock_inode(ino, LockMode::Read)?;
        let a = self.regular(&g, ino)?;
        self.pages.read(ino, a.inode.data_version.get());
        let size = a.size();
        if off >= size || len == 0 {
            return Ok(Some(Vec::new()));
        }
        let len = (len as u64).min(size - off);
        let mut out = vec![0u8; len as usize];
        let (b0, b1) = (off / BLOCK, (off + len).div_ceil(BLOCK));
        let exts = self.extents_in(&g, ino, b0, b1)?;
        if let Some(iblock) = first_offline(&exts, b0, b1) {
            self.wait_offline(ino, iblock, DWO_READ, resume)?;
            return Ok(None);
        }
        for e in exts {
            if e.flags & SEF_UNWRITTEN != 0 {
                continue;
            }
            let from = (e.start * BLOCK).max(off);
            let to = (e.end() * BLOCK).min(off + len);
            if from >= to {
                continue;
            }
            let phys = e.pblk * BLOCK + (from - e.start * BLOCK);
            let buf = &mut out[(from - off) as usize..(to - off) as usize];
            self.data.read_at(buf, phys).map_err(dev_err)?;
        }
        Ok(Some(out))
    }

    /// Registers `resume` to wait for block `iblock` of `ino`; the caller
    /// holds the inode's lock.
    pub(super) fn wait_offline(
        &self,
        ino: u64,
        iblock: u64,
        op: u8,
        resume: MakeResume<'_>,
    ) -> FsResult<()> {
        self.waits.add(ino, Offline { iblock, op }, resume());
        Ok(())
    }

    /// Writes `buf` at `off`; returns the bytes written. Waits (this
    /// thread blocked) while the blocks it writes are offline.
    pub fn write(&self, ino: u64, off: u64, buf: &[u8]) -> FsResult<usize> {
        blocking(&self.waits, |r| self.write_or_wait(ino, Some(off), buf, r)).map(|(n, _)| n)
    }

    /// Writes `buf` at the end of the file, as it is under the inode's
    /// lock (O_APPEND: another mount may have grown the file since this
    /// mount's kernel last saw its size); returns the bytes written and
    /// the offset they went to.
    pub fn append(&self, ino: u64, buf: &[u8]) -> FsResult<(usize, u64)> {
        blocking(&self.waits, |r| self.write_or_wait(ino, None, buf, r))
    }

    /// Writes `buf` at `off` (None: at the end of the file); returns the
    /// bytes written and where. None when blocks it would write are
    /// offline: `resume` runs once they may have been staged.
    pub fn write_or_wait(
        &self,
        ino: u64,
        off: Option<u64>,
        buf: &[u8],
        resume: MakeResume<'_>,
    ) -> Option<FsResult<(usize, u64)>> {
        self.write_any(ino, off, buf, false, resume)
    }

    /// Writes back pages of `ino` that a shared mapping dirtied, `buf` at
    /// `off`: as [`Fs::write_or_wait`], but refused with EIO if another
    /// mount changed the file since the kernel cached the pages (their
    /// bytes around the stores would undo that change; see
    /// [`pages`](super::pages)).
    pub fn write_back_or_wait(
        &self,
        ino: u64,
        off: u64,
        buf: &[u8],
        resume: MakeResume<'_>,
    ) -> Option<FsResult<(usize, u64)>> {
        self.write_any(ino, Some(off), buf, true, resume)
    }

    fn write_any(
        &self,
        ino: u64,
        off: Option<u64>,
        buf: &[u8],
        write_back: bool,
        resume: MakeResume<'_>,
    ) -> Option<FsResult<(usize, u64)>> {
        if buf.is_empty() {
            return Some(Ok((0, off.unwrap_or(0))));
        }
        let mut retried = false;
        loop {
            match self.write_once(ino, off, buf, write_back, resume) {
                Err(e) if e == ENOSPC && !retried => {
                    // The mount's data extents ran out: a commit gets more.
                    retried = true;
                    if let Err(e) = self.trans.commit() {
                        return Some(Err(e.into()));
                    }
                }
                Ok(None) => return None,
                other => {
                    return Some(other.and_then(|at| {
                        self.maybe_commit()?;
                        Ok((buf.len(), at.unwrap_or(0)))
                    }))
                }
            }
        }
    }

    /// Writes `buf` at `off` (None: at the end of the file); returns the
    /// offset it went to, or None when it waits for offline blocks.
    fn write_once(
        &self,
        ino: u64,
        off: Option<u64>,
        buf: &[u8],
        write_back: bool,
        resume: MakeResume<'_>,
    ) -> FsResult<Option<u64>> {
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        let mut a = self.regular(&g, ino)?;
        super::check_retention(&a)?;
        if write_back {
            let now = a.inode.data_version.get();
            match self.pages.write_back_base(ino) {
                Some(base) if base != now => {
                    tracing::warn!(
                        ino,
                        base,
                        now,
                        "pages written back through a mapping are refused (EIO): another \
                         mount changed the file since they were cached here"
                    );
                    return Err(EIO);
                }
                _ => {}
            }
        }
        let off = off.unwrap_or_else(|| a.size());
        let end = off
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= MAX_FILE_BYTES)
            .ok_or(EFBIG)?;
        // Offline blocks it writes must be staged first (a partial block
        // keeps the rest of its bytes).
        let (b0, b1) = (off / BLOCK, end.div_ceil(BLOCK));
        // Read once: nothing changes them while the inode's lock is held.
        let exts = self.extents_in(&g, ino, b0, b1)?;
        if let Some(iblock) = first_offline(&exts, b0, b1) {
            self.wait_offline(ino, iblock, DWO_WRITE, resume)?;
            return Ok(None);
        }
        // A write that starts past the block holding the end of the file
        // leaves that block's tail as it is on the device: zero it first
        // (a write that starts in it rewrites it whole, zeros past the
        // old end included).
        if off / BLOCK > a.size() / BLOCK {
            self.zero_tail(&g, &a, a.size())?;
        }
        let op = self.begin(&[seqs_of(&a)])?;
        let mut b = b0;
        let mut added = 0;
        let mut it = exts.iter().peekable();
        while b < b1 {
            while it.peek().is_some_and(|e| e.end() <= b) {
                it.next();
            }
            match it.peek() {
                Some(e) if e.start <= b => {
                    let run_end = e.end().min(b1);
                    let unwritten = e.flags & SEF_UNWRITTEN != 0;
                    let pblk = e.pblk + (b - e.start);
                    self.write_run(pblk, b, run_end, off, end, buf, !unwritten, &a)?;
                    if unwritten {
                        self.set_mapping(&op, &g, ino, b, run_end - b, Some((pblk, 0)))?;
                    }
                    b = run_end;
                }
                next => {
                    let hole_end = next.map_or(b1, |e| e.start.min(b1));
                    let want = hole_end - b;
                    let extra = if next.is_none() {
                        self.prealloc_blocks(&g, &a, b1)?
                    } else {
                        0
                    };
                    let Some((pblk, got)) = self.alloc_data(want + extra)? else {
                        // The blocks mapped so far stay (past the size
                        // until the write is done again) and are counted.
                        if added > 0 {
                            a.inode.online_blocks = (a.inode.online_blocks.get() + added).into();
                            self.write_inode(&op, &g, &mut a, true)?;
                        }
                        return Err(ENOSPC);
                    };
                    let n = got.min(want);
                    self.write_run(pblk, b, b + n, off, end, buf, false, &a)?;
                    self.set_mapping(&op, &g, ino, b, n, Some((pblk, 0)))?;
                    if got > n {
                        // Speculative: the last close here gives back what
                        // the file did not grow into (`trim_prealloc`).
                        self.preallocated
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(ino);
                        // Preallocated past the write: read as zeros until written.
                        self.set_mapping(
                            &op,
                            &g,
                            ino,
                            b + n,
                            got - n,
                            Some((pblk + n, SEF_UNWRITTEN)),
                        )?;
                    }
                    added += got;
                    b += n;
                }
            }
        }
        let t = now();
        a.inode.size = a.size().max(end).into();
        a.inode.online_blocks = (a.inode.online_blocks.get() + added).into();
        self.bump_data_version(ino, &mut a.inode);
        a.inode.mtime = t;
        a.inode.ctime = t;
        self.write_inode(&op, &g, &mut a, true)?;
        self.trans.add_data_bytes(end - off);
        Ok(Some(off))
    }

    /// Blocks to preallocate past a write that extends the file at its end,
    /// so streaming writes stay contiguous: as many as the file already has,
    /// up to `PREALLOC_MAX_BLOCKS`. None for a file's first blocks (a small
    /// file written at once gets exactly its blocks), nor unless the write
    /// reaches the end of the file and nothing is mapped beyond it.
    fn prealloc_blocks(&self, g: &LockGuard, a: &Attr, b1: u64) -> FsResult<u64> {
        let size_blocks = a.size().div_ceil(BLOCK);
        if b1 < size_blocks || !self.extents_in(g, a.ino, b1, u64::MAX / BLOCK)?.is_empty() {
            return Ok(0);
        }
        Ok(size_blocks.min(PREALLOC_MAX_BLOCKS))
    }

    /// Writes the part of `buf` (file bytes `off..end`) that falls in
    /// logical blocks `b..b_end` at physical block `pblk`, completing
    /// partial blocks with their old contents (`keep`) or zeros.
    #[allow(clippy::too_many_arguments)]
    fn write_run(
        &self,
        pblk: u64,
        b: u64,
        b_end: u64,
        off: u64,
        end: u64,
        buf: &[u8],
        keep: bool,
        a: &Attr,
    ) -> FsResult<()> {
        let (from, to) = ((b * BLOCK).max(off), (b_end * BLOCK).min(end));
        let (bs, be) = (from / BLOCK * BLOCK, to.div_ceil(BLOCK) * BLOCK);
        let data = &buf[(from - off) as usize..(to - off) as usize];
        let phys = pblk * BLOCK;
        if from == bs && to == be {
            return self.data.write_at(data, phys).map_err(dev_err);
        }
        let mut block = vec![0u8; (be - bs) as usize];
        // Old contents matter only below the file's size; past it, zeros.
        let old_end = a.size().min(be);
        if keep && old_end > bs {
            let n = (old_end - bs) as usize;
            if from > bs {
                let head = ((from - bs) as usize).min(n);
                self.data
                    .read_at(&mut block[..head], phys)
                    .map_err(dev_err)?;
            }
            if to < be && to < old_end {
                let (t, e) = ((to - bs) as usize, n);
                self.data
                    .read_at(&mut block[t..e], phys + t as u64)
                    .map_err(dev_err)?;
            }
        }
        block[(from - bs) as usize..(to - bs) as usize].copy_from_slice(data);
        self.data.write_at(&block, phys).map_err(dev_err)
    }

    /// Sets a regular file's size, freeing blocks past a smaller one.
    /// Waits (this thread blocked) while blocks it changes are offline.
    pub fn truncate(&self, ino: u64, size: u64) -> FsResult<Attr> {
        blocking(&self.waits, |r| self.truncate_or_wait(ino, size, r))
    }

    /// [`Fs::truncate`]; None when blocks between the old and the new size
    /// are offline: `resume` runs once they may have been staged.
    pub fn truncate_or_wait(
        &self,
        ino: u64,
        size: u64,
        resume: MakeResume<'_>,
    ) -> Option<FsResult<Attr>> {
        self.truncate_once(ino, size, resume).transpose()
    }

    pub(super) fn truncate_once(
        &self,
        ino: u64,
        size: u64,
        resume: MakeResume<'_>,
    ) -> FsResult<Option<Attr>> {
        if size > MAX_FILE_BYTES {
            return Err(EFBIG);
        }
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        let mut a = self.regular(&g, ino)?;
        super::check_retention(&a)?;
        // A size change over offline blocks waits for them (the original's
        // rule): from the block of the smaller size to the larger's end.
        let (lo, hi) = (a.size().min(size), a.size().max(size));
        let (c0, c1) = (lo / BLOCK, hi.div_ceil(BLOCK).max(lo / BLOCK + 1));
        if let Some(iblock) = first_offline(&self.extents_in(&g, ino, c0, c1)?, c0, c1) {
            self.wait_offline(ino, iblock, DWO_CHANGE_SIZE, resume)?;
            return Ok(None);
        }
        if size < a.size() {
            self.zero_tail(&g, &a, size)?;
            self.truncate_blocks(&g, &a, size.div_ceil(BLOCK))?;
            a = self.read_inode(&g, ino)?;
        } else if size > a.size() {
            self.zero_tail(&g, &a, a.size())?;
        }
        let op = self.begin_freeing(&[seqs_of(&a)])?;
        let t = now();
        a.inode.size = size.into();
        self.bump_data_version(ino, &mut a.inode);
        a.inode.mtime = t;
        a.inode.ctime = t;
        self.write_inode(&op, &g, &mut a, true)?;
        drop(op);
        drop(g);
        self.waits.wake_inode(ino);
        self.maybe_commit()?;
        Ok(Some(a))
    }

    /// Zeros the bytes of the block holding `size` that lie past it: done
    /// when the size shrinks and again whenever it grows, since the device
    /// may hold anything there. A crash can leave bytes of writes that
    /// never committed past the committed size, in a block that did.
    fn zero_tail(&self, g: &LockGuard, a: &Attr, size: u64) -> FsResult<()> {
        let within = size % BLOCK;
        if within == 0 {
            return Ok(());
        }
        let b = size / BLOCK;
        if let Some(e) = self.extents_in(g, a.ino, b, b + 1)?.first() {
            if e.start <= b && e.flags & (SEF_UNWRITTEN | SEF_OFFLINE) == 0 {
                let zeros = vec![0u8; (BLOCK - within) as usize];
                let phys = (e.pblk + (b - e.start)) * BLOCK + within;
                self.data.write_at(&zeros, phys).map_err(dev_err)?;
            }
        }
        Ok(())
    }

    /// Unmaps and frees every block from logical block `from` on, in
    /// batches of extents per transaction hold.
    /// Frees the blocks a write preallocated past the end of `ino` that the
    /// file did not grow into, at the last close of the file on this mount
    /// (a file written in pieces would otherwise keep up to
    /// `PREALLOC_MAX_BLOCKS` it never uses). Blocks a caller reserved with
    /// fallocate stay.
    pub(crate) fn trim_prealloc(&self, ino: u64) -> FsResult<()> {
        let mut set = self.preallocated.lock().unwrap_or_else(|p| p.into_inner());
        if !set.remove(&ino) {
            return Ok(());
        }
        drop(set);
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        let a = match self.read_inode(&g, ino) {
            Ok(a) => a,
            Err(e) if e == ENOENT => return Ok(()),
            Err(e) => return Err(e),
        };
        self.unmap_range(&g, ino, a.size().div_ceil(BLOCK), u64::MAX / BLOCK)?;
        drop(g);
        self.maybe_commit()
    }

    pub(crate) fn truncate_blocks(&self, g: &LockGuard, a: &Attr, from: u64) -> FsResult<()> {
        self.unmap_range(g, a.ino, from, u64::MAX / BLOCK)
    }

    /// Unmaps and frees logical blocks `from..to`.
    fn unmap_range(&self, g: &LockGuard, ino: u64, from: u64, to: u64) -> FsResult<()> {
        loop {
            let exts = self.extents_in(g, ino, from, to)?;
            if exts.is_empty() {
                return Ok(());
            }
            let mut a = self.read_inode(g, ino)?;
            let op = self.begin_freeing(&[seqs_of(&a)])?;
            let (mut freed, mut offline) = (0, 0);
            for e in exts.iter().take(EXTENTS_PER_HOLD) {
                let (s, t) = (e.start.max(from), e.end().min(to));
                let (removed, off) = self.set_mapping(&op, g, ino, s, t - s, None)?;
                self.free_data(&removed)?;
                freed += removed.iter().map(|r| r.1).sum::<u64>();
                offline += off;
            }
            let i = &mut a.inode;
            i.online_blocks = i.online_blocks.get().saturating_sub(freed).into();
            i.offline_blocks = i.offline_blocks.get().saturating_sub(offline).into();
            self.write_inode(&op, g, &mut a, true)?;
            drop(op);
            self.maybe_commit()?;
        }
    }

    /// fallocate: allocate (mode 0 or KEEP_SIZE) or punch a hole
    /// (PUNCH_HOLE | KEEP_SIZE).
    pub fn fallocate(&self, ino: u64, mode: u32, off: u64, len: u64) -> FsResult<()> {
        self.fallocate_as(ino, mode, off, len, true)
    }

    /// `fallocate` by a caller that may keep the file's setuid and setgid
    /// bits (`keep_privs`, CAP_FSETID) or not: then, as a write would, it
    /// clears setuid, and setgid where group execute is set.
    pub fn fallocate_as(
        &self,
        ino: u64,
        mode: u32,
        off: u64,
        len: u64,
        keep_privs: bool,
    ) -> FsResult<()> {
        // What the caller reserves past the end is theirs to keep.
        self.preallocated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ino);
        let end = off
            .checked_add(len)
            .filter(|&e| len > 0 && e <= MAX_FILE_BYTES)
            .ok_or(if len == 0 { EINVAL } else { EFBIG })?;
        if mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE {
            return self.punch(ino, off, end, keep_privs);
        }
        if mode & !FALLOC_FL_KEEP_SIZE != 0 {
            return Err(EOPNOTSUPP);
        }
        let mut retried = false;
        loop {
            let keep_size = mode & FALLOC_FL_KEEP_SIZE != 0;
            match self.preallocate(ino, off, end, keep_size, keep_privs) {
                Err(e) if e == ENOSPC && !retried => {
                    retried = true;
                    self.trans.commit()?;
                }
                other => {
                    other?;
                    return self.maybe_commit();
                }
            }
        }
    }

    fn preallocate(
        &self,
        ino: u64,
        off: u64,
        end: u64,
        keep_size: bool,
        keep_privs: bool,
    ) -> FsResult<()> {
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        let mut a = self.regular(&g, ino)?;
        super::check_retention(&a)?;
        if !keep_size && end > a.size() {
            self.zero_tail(&g, &a, a.size())?;
        }
        let op = self.begin(&[seqs_of(&a)])?;
        let (b0, b1) = (off / BLOCK, end.div_ceil(BLOCK));
        let exts = self.extents_in(&g, ino, b0, b1)?;
        let mut b = b0;
        let mut added = 0;
        for e in exts.iter().map(Some).chain(std::iter::once(None)) {
            let hole_end = e.map_or(b1, |e| e.start.clamp(b, b1));
            while b < hole_end {
                let Some((pblk, n)) = self.alloc_data(hole_end - b)? else {
                    return Err(ENOSPC);
                };
                self.set_mapping(&op, &g, ino, b, n, Some((pblk, SEF_UNWRITTEN)))?;
                added += n;
                b += n;
            }
            if let Some(e) = e {
                b = b.max(e.end());
            }
        }
        a.inode.online_blocks = (a.inode.online_blocks.get() + added).into();
        if !keep_size && end > a.size() {
            a.inode.size = end.into();
            self.bump_data_version(ino, &mut a.inode);
        }
        if !keep_privs {
            a.drop_privs();
        }
        a.inode.ctime = now();
        self.write_inode(&op, &g, &mut a, true)
    }

    fn punch(&self, ino: u64, off: u64, end: u64, keep_privs: bool) -> FsResult<()> {
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        super::check_retention(&self.regular(&g, ino)?)?;
        // Whole blocks in the range are unmapped; the partial ones at its
        // edges are zeroed in place.
        let (full0, full1) = (off.div_ceil(BLOCK), end / BLOCK);
        if full0 > full1 {
            self.zero_bytes(&g, ino, off, end)?;
        } else {
            if off < full0 * BLOCK {
                self.zero_bytes(&g, ino, off, full0 * BLOCK)?;
            }
            if end > full1 * BLOCK {
                self.zero_bytes(&g, ino, full1 * BLOCK, end)?;
            }
            if full0 < full1 {
                self.unmap_range(&g, ino, full0, full1)?;
            }
        }
        let mut a = self.read_inode(&g, ino)?;
        let op = self.begin_freeing(&[seqs_of(&a)])?;
        self.bump_data_version(ino, &mut a.inode);
        if !keep_privs {
            a.drop_privs();
        }
        let t = now();
        a.inode.mtime = t;
        a.inode.ctime = t;
        self.write_inode(&op, &g, &mut a, true)?;
        drop(op);
        drop(g);
        self.maybe_commit()
    }

    /// Writes zeros over mapped, written bytes `from..to` within one block.
    fn zero_bytes(&self, g: &LockGuard, ino: u64, from: u64, to: u64) -> FsResult<()> {
        let b = from / BLOCK;
        for e in self.extents_in(g, ino, b, b + 1)? {
            if e.start <= b && e.flags & (SEF_UNWRITTEN | SEF_OFFLINE) == 0 {
                let phys = (e.pblk + (b - e.start)) * BLOCK + from % BLOCK;
                self.data
                    .write_at(&vec![0u8; (to - from) as usize], phys)
                    .map_err(dev_err)?;
            }
        }
        Ok(())
    }
}

/// The first offline block of `exts` within `b0..b1`.
pub(super) fn first_offline(exts: &[Ext], b0: u64, b1: u64) -> Option<u64> {
    exts.iter()
        .filter(|e| e.offline() && e.start < b1 && e.end() > b0)
        .map(|e| e.start.max(b0))
        .min()
}
