//! Offline data: releasing a file's blocks once an archive holds a copy,
//! staging the copy back, turning offline ranges into holes, moving blocks
//! between files, and the waiters of operations that met offline data.
//!
//! An offline extent maps no blocks (`SEF_OFFLINE`, block 0): its data is
//! in the archive. Reads, writes and size changes that touch one wait for
//! it to be staged (see `wait`). Release, stage and punch-offline change no
//! times, not the data_version and not the data_seq: the file's contents
//! are the same before and after, only where they are changes, so an agent
//! walking data_seq does not see its own work as a change. Each takes the
//! data_version the agent read when it copied the file, and refuses (ESTALE;
//! EINVAL for punch-offline, as the original) if the file changed since:
//! nothing is released or staged that is not the archived version.

use super::data::{first_offline, Ext, BLOCK, MAX_FILE_BYTES};
use super::inode::{now, seqs_of};
use super::types::Attr;
use super::wait::{Waiting, DWO_ALL};
use super::{Fs, FsError, FsResult, EINVAL, EIO, ENODATA, ENOSPC};
use crate::cluster::lock::LockMode;
use crate::cluster::net::msg::{WaitFail, WaitingQuery};
use crate::mount::locks::LockGuard;
use scoutfs_format::data::{SEF_OFFLINE, SEF_UNWRITTEN};

pub const ESTALE: FsError = FsError(libc::ESTALE);
pub const EOVERFLOW: FsError = FsError(libc::EOVERFLOW);

/// Extents changed per transaction hold.
const EXTENTS_PER_HOLD: usize = 64;
/// Blocks staged per lock and transaction hold (8 MiB).
const STAGE_CHUNK_BLOCKS: u64 = 2048;

/// Reads archived bytes at an offset of the file (a `pread` of the
/// archive copy); returns how many, 0 at its end.
pub type ArchiveRead<'a> = &'a dyn Fn(&mut [u8], u64) -> std::io::Result<usize>;

fn aligned(v: u64) -> bool {
    v.is_multiple_of(BLOCK)
}

impl Fs {
    fn check_version(a: &Attr, data_version: u64, err: FsError) -> FsResult<()> {
        if a.inode.data_version.get() != data_version {
            return Err(err);
        }
        Ok(())
    }

    /// RELEASE: frees the blocks of `off..off+len` (4 KiB aligned) of a
    /// regular file whose data_version is `data_version`, leaving offline
    /// extents where data was (holes and unwritten blocks become holes).
    /// The range may reach past the end of the file; once no block is left
    /// online, blocks past the end go too. The freed blocks are free space
    /// after the next commit.
    pub fn release_data(&self, ino: u64, off: u64, len: u64, data_version: u64) -> FsResult<()> {
        if !aligned(off) || !aligned(len) {
            return Err(EINVAL);
        }
        let end = off.checked_add(len).ok_or(EINVAL)?;
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        let a = self.regular_file(&g, ino)?;
        Self::check_version(&a, data_version, ESTALE)?;
        let (b0, b1) = (off / BLOCK, (end / BLOCK).min(a.size().div_ceil(BLOCK)));
        let mut from = b0;
        while from < b1 {
            let exts: Vec<Ext> = self
                .extents_in(&g, ino, from, b1)?
                .into_iter()
                .filter(|e| e.maps_blocks())
                .take(EXTENTS_PER_HOLD)
                .collect();
            let Some(last) = exts.last() else {
                break;
            };
            from = last.end();
            let mut a = self.read_inode(&g, ino)?;
            let op = self.begin_freeing(&[seqs_of(&a)])?;
            let (mut freed, mut offline) = (0, 0);
            for e in &exts {
                let (s, t) = (e.start.max(b0), e.end().min(b1));
                // Unwritten blocks read as zeros: a hole says as much.
                let map = (e.flags & SEF_UNWRITTEN == 0).then_some((0, SEF_OFFLINE));
                let (removed, _) = self.set_mapping(&op, &g, ino, s, t - s, map)?;
                self.free_data(&removed)?;
                freed += removed.iter().map(|r| r.1).sum::<u64>();
                if map.is_some() {
                    offline += t - s;
                }
            }
            let i = &mut a.inode;
            i.online_blocks = i.online_blocks.get().saturating_sub(freed).into();
            i.offline_blocks = (i.offline_blocks.get() + offline).into();
            self.write_inode(&op, &g, &mut a, false)?;
            drop(op);
            self.maybe_commit()?;
        }
        let a = self.read_inode(&g, ino)?;
        if a.inode.online_blocks.get() == 0 {
            self.truncate_blocks(&g, &a, a.size().div_ceil(BLOCK))?;
        }
        drop(g);
        self.waits.wake_inode(ino);
        self.maybe_commit()?;
        Ok(())
    }

    fn regular_file(&self, g: &LockGuard, ino: u64) -> FsResult<Attr> {
        let a = self.read_inode(g, ino)?;
        match a.file_type() {
            scoutfs_format::inode::S_IFREG => Ok(a),
            scoutfs_format::inode::S_IFDIR => Err(super::EISDIR),
            _ => Err(EINVAL),
        }
    }

    /// STAGE: writes the archived bytes of `off..off+len` (read with
    /// `read_archive` at the same offsets) into the offline blocks of that
    /// range of a regular file whose data_version is `data_version`. The
    /// range must lie within the file, start on a block and end on one or
    /// at the end of the file. Blocks that are not offline are left as
    /// they are, so staging again after an interruption is harmless.
    /// Waiters are woken as each part is in. Returns the bytes staged.
    pub fn stage(
        &self,
        ino: u64,
        data_version: u64,
        off: u64,
        len: u64,
        read_archive: ArchiveRead<'_>,
    ) -> FsResult<u64> {
        let end = off.checked_add(len).ok_or(EINVAL)?;
        if !aligned(off) {
            return Err(EINVAL);
        }
        let mut staged = 0;
        let mut b = off / BLOCK;
        loop {
            let mut retried = false;
            let step = loop {
                match self.stage_chunk(ino, data_version, end, b, read_archive) {
                    Err(e) if e == ENOSPC && !retried => {
                        retried = true;
                        self.trans.commit()?;
                    }
                    other => break other?,
                }
            };
            self.waits.wake_inode(ino);
            self.maybe_commit()?;
            match step {
                Some((next, bytes)) => {
                    staged += bytes;
                    b = next;
                }
                None => return Ok(staged),
            }
        }
    }

    /// The first offline run at or after block `b` within the range (up
    /// to [`STAGE_CHUNK_BLOCKS`]), checking the file's data_version and
    /// the range under `g`: (first block, end block, file size).
    fn offline_run(
        &self,
        g: &LockGuard,
        ino: u64,
        data_version: u64,
        end: u64,
        b: u64,
    ) -> FsResult<Option<(u64, u64, u64)>> {
        let a = self.regular_file(g, ino)?;
        Self::check_version(&a, data_version, ESTALE)?;
        let size = a.size();
        if end > size || (!aligned(end) && end != size) {
            return Err(EINVAL);
        }
        let b1 = end.div_ceil(BLOCK);
        let Some(s) = first_offline(&self.extents_in(g, ino, b, b1)?, b, b1) else {
            return Ok(None);
        };
        let e = self
            .extents_in(g, ino, s, s + 1)?
            .into_iter()
            .find(|e| e.offline() && e.start <= s)
            .ok_or(EIO)?;
        Ok(Some((s, e.end().min(b1).min(s + STAGE_CHUNK_BLOCKS), size)))
    }

    /// Stages the first offline run at or after block `b` (up to
    /// [`STAGE_CHUNK_BLOCKS`]); returns the block after it and the bytes
    /// staged, or None when no offline block is left in the range.
    ///
    /// The archive is read holding no lock (it may be a file of this very
    /// filesystem, even of the same lock group); the run is checked again
    /// under the write lock before its blocks are mapped, and read again
    /// if the file changed meanwhile.
    fn stage_chunk(
        &self,
        ino: u64,
        data_version: u64,
        end: u64,
        b: u64,
        read_archive: ArchiveRead<'_>,
    ) -> FsResult<Option<(u64, u64)>> {
        let mut run = {
            let g = self.locks.lock_inode(ino, LockMode::Read)?;
            self.offline_run(&g, ino, data_version, end, b)?
        };
        loop {
            let Some((s, t, size)) = run else {
                return Ok(None);
            };
            // The archived bytes, up to the end of the file; the rest of
            // the last block is zeros.
            let (from, to) = (s * BLOCK, (t * BLOCK).min(size));
            let mut buf = vec![0u8; ((t - s) * BLOCK) as usize];
            let want = (to - from) as usize;
            let mut got = 0;
            while got < want {
                match read_archive(&mut buf[got..want], from + got as u64) {
                    Ok(0) => return Err(ENODATA),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(FsError(e.raw_os_error().unwrap_or(libc::EIO))),
                }
            }
            let g = self.locks.lock_inode(ino, LockMode::Write)?;
            let _local = self.lock_local(&[ino]);
            let now = self.offline_run(&g, ino, data_version, end, b)?;
            if now != run {
                // Changed while the archive was read: read what is
                // offline now.
                run = now;
                continue;
            }
            let mut a = self.read_inode(&g, ino)?;
            let op = self.begin(&[seqs_of(&a)])?;
            let mut at = s;
            let mut online = 0;
            while at < t {
                // Out of space part way: what is staged so far is kept
                // (and counted); the caller commits and goes on from it.
                let Some((pblk, n)) = self.alloc_data(t - at)? else {
                    break;
                };
                let data = &buf[((at - s) * BLOCK) as usize..((at - s + n) * BLOCK) as usize];
                self.data
                    .write_at(data, pblk * BLOCK)
                    .map_err(|e| FsError::from(crate::error::Error::io("data device", e)))?;
                self.set_mapping(&op, &g, ino, at, n, Some((pblk, 0)))?;
                online += n;
                at += n;
            }
            if online == 0 {
                return Err(ENOSPC);
            }
            let i = &mut a.inode;
            i.online_blocks = (i.online_blocks.get() + online).into();
            i.offline_blocks = i.offline_blocks.get().saturating_sub(online).into();
            self.write_inode(&op, &g, &mut a, false)?;
            self.trans.add_data_bytes(online * BLOCK);
            return Ok(Some((at, (at * BLOCK).min(size) - from)));
        }
    }

    /// PUNCH_OFFLINE: turns the offline extents of `off..off+len` (4 KiB
    /// aligned) into holes, for restoring sparse files. EINVAL if the
    /// data_version is not `data_version` or a block of the range is
    /// online. The size and data_version stay.
    pub fn punch_offline(&self, ino: u64, data_version: u64, off: u64, len: u64) -> FsResult<()> {
        let end = off.checked_add(len).ok_or(EINVAL)?;
        if !aligned(off) || !aligned(len) || len == 0 {
            return Err(EINVAL);
        }
        let (b0, b1) = (off / BLOCK, end / BLOCK);
        let g = self.locks.lock_inode(ino, LockMode::Write)?;
        let _local = self.lock_local(&[ino]);
        let a = self.regular_file(&g, ino)?;
        Self::check_version(&a, data_version, EINVAL)?;
        let exts = self.extents_in(&g, ino, b0, b1)?;
        if exts.iter().any(|e| e.maps_blocks()) {
            return Err(EINVAL);
        }
        for chunk in exts.chunks(EXTENTS_PER_HOLD) {
            let mut a = self.read_inode(&g, ino)?;
            let op = self.begin_freeing(&[seqs_of(&a)])?;
            let mut gone = 0;
            for e in chunk {
                let (s, t) = (e.start.max(b0), e.end().min(b1));
                gone += self.set_mapping(&op, &g, ino, s, t - s, None)?.1;
            }
            let i = &mut a.inode;
            i.offline_blocks = i.offline_blocks.get().saturating_sub(gone).into();
            self.write_inode(&op, &g, &mut a, false)?;
            drop(op);
            self.maybe_commit()?;
        }
        drop(g);
        self.waits.wake_inode(ino);
        Ok(())
    }

    /// MOVE_BLOCKS: moves the extents of `from`'s `from_off..+len` to
    /// `to` at `to_off`, without copying. Offsets are 4 KiB aligned, and
    /// so is `len` unless the range ends at the end of `from`.
    ///
    /// - Without `stage`: neither range may hold offline blocks (ENODATA);
    ///   what `to` had there is freed, `to` grows to hold the range, and
    ///   both files' ctime, mtime, data_version and data_seq change.
    /// - With `stage`: `to`'s range must be offline, within its size, and
    ///   its data_version `data_version` (ESTALE): the moved blocks stage
    ///   it, and only `from` changes as a file does (`to`'s times and
    ///   data_version stay).
    ///
    /// `from`'s range becomes a hole.
    #[allow(clippy::too_many_arguments)]
    pub fn move_blocks(
        &self,
        from: u64,
        from_off: u64,
        len: u64,
        to: u64,
        to_off: u64,
        data_version: u64,
        stage: bool,
    ) -> FsResult<()> {
        if from == to {
            return Err(EINVAL);
        }
        let from_end = from_off.checked_add(len).ok_or(EOVERFLOW)?;
        let to_end = to_off.checked_add(len).ok_or(EOVERFLOW)?;
        if from_end > MAX_FILE_BYTES || to_end > MAX_FILE_BYTES {
            return Err(EOVERFLOW);
        }
        if !aligned(from_off) || !aligned(to_off) || len == 0 {
            return Err(EINVAL);
        }
        let gs = self.locks.lock_inodes(&[from, to], LockMode::Write)?;
        let _local = self.lock_local(&[from, to]);
        let (gf, gt) = super::dir::guards_for(&gs, from, to);
        let mut fa = self.regular_file(gf, from)?;
        let mut ta = self.regular_file(gt, to)?;
        super::check_retention(&fa)?;
        super::check_retention(&ta)?;
        if from_end > fa.size() || (!aligned(len) && from_end != fa.size()) {
            return Err(EINVAL);
        }
        let blocks = len.div_ceil(BLOCK);
        let (f0, f1) = (from_off / BLOCK, from_off / BLOCK + blocks);
        let (t0, t1) = (to_off / BLOCK, to_off / BLOCK + blocks);
        let src = self.extents_in(gf, from, f0, f1)?;
        if first_offline(&src, f0, f1).is_some() {
            return Err(ENODATA);
        }
        let dst = self.extents_in(gt, to, t0, t1)?;
        if stage {
            Self::check_version(&ta, data_version, ESTALE)?;
            if to_end > ta.size().next_multiple_of(BLOCK) {
                return Err(EINVAL);
            }
            // Every block of the range offline, and none mapped.
            let mut covered = t0;
            for e in &dst {
                if e.maps_blocks() || e.start > covered {
                    return Err(EINVAL);
                }
                covered = covered.max(e.end());
            }
            if covered < t1 {
                return Err(EINVAL);
            }
        } else if first_offline(&dst, t0, t1).is_some() {
            return Err(ENODATA);
        }
        let op = self.begin(&[seqs_of(&fa), seqs_of(&ta)])?;
        if !stage {
            let (removed, _) = self.set_mapping(&op, gt, to, t0, t1 - t0, None)?;
            self.free_data(&removed)?;
            let freed = removed.iter().map(|r| r.1).sum::<u64>();
            let i = &mut ta.inode;
            i.online_blocks = i.online_blocks.get().saturating_sub(freed).into();
        }
        let (mut moved, mut offline) = (0, 0);
        for e in &src {
            let (s, t) = (e.start.max(f0), e.end().min(f1));
            let pblk = e.pblk + (s - e.start);
            self.set_mapping(&op, gf, from, s, t - s, None)?;
            let at = t0 + (s - f0);
            offline += self
                .set_mapping(&op, gt, to, at, t - s, Some((pblk, e.flags)))?
                .1;
            moved += t - s;
        }
        let t = now();
        let fi = &mut fa.inode;
        fi.online_blocks = fi.online_blocks.get().saturating_sub(moved).into();
        self.bump_data_version(from, fi);
        fi.mtime = t;
        fi.ctime = t;
        self.write_inode(&op, gf, &mut fa, true)?;
        let ti = &mut ta.inode;
        ti.online_blocks = (ti.online_blocks.get() + moved).into();
        ti.offline_blocks = ti.offline_blocks.get().saturating_sub(offline).into();
        if !stage {
            ti.size = ti
                .size
                .get()
                .max(to_end.min(to_off + (from_end - from_off)))
                .into();
            self.bump_data_version(to, ti);
            ti.mtime = t;
            ti.ctime = t;
        }
        self.write_inode(&op, gt, &mut ta, !stage)?;
        drop(op);
        drop(gs);
        self.waits.wake_inode(to);
        self.maybe_commit()
    }

    /// The operations of this mount waiting for offline data, after
    /// (`after_ino`, `after_iblock`) in (ino, iblock) order, at most `max`.
    pub fn data_waiting(&self, after_ino: u64, after_iblock: u64, max: usize) -> Vec<Waiting> {
        self.waits.list(after_ino, after_iblock, max)
    }

    /// The operations of every mount waiting for offline data, after
    /// (`after_ino`, `after_iblock`) in (ino, iblock) order, at most `max`
    /// (the server asks each mount; one that does not answer within 5 s is
    /// left out).
    pub fn data_waiting_all(
        &self,
        after_ino: u64,
        after_iblock: u64,
        max: usize,
    ) -> FsResult<Vec<Waiting>> {
        let mut out: Vec<Waiting> = Vec::new();
        let (mut ino, mut iblock) = (after_ino, after_iblock);
        while out.len() < max {
            let want = (max - out.len()).min(scoutfs_format::wire::DATA_WAITING_MAX);
            let got = self.client.data_waiting(WaitingQuery {
                after_ino: ino,
                after_iblock: iblock,
                max: want as u32,
            })?;
            let n = got.len();
            out.extend(got.into_iter().map(|w| Waiting {
                ino: w.ino,
                iblock: w.iblock,
                ops: w.ops,
            }));
            match out.last() {
                Some(l) if n == want => (ino, iblock) = (l.ino, l.iblock),
                _ => break,
            }
        }
        Ok(out)
    }

    /// [`Fs::data_wait_err`] on every mount; returns how many failed.
    pub fn data_wait_err_all(
        &self,
        ino: u64,
        off: u64,
        count: u64,
        ops: u8,
        errno: i32,
    ) -> FsResult<u64> {
        Ok(self
            .client
            .data_wait_err(wait_fail(ino, off, count, ops, errno)?)?)
    }

    /// DATA_WAIT_ERR: fails this mount's operations waiting on blocks of
    /// `off..off+count` of `ino` whose op is in `ops` with `errno`;
    /// returns how many.
    pub fn data_wait_err(
        &self,
        ino: u64,
        off: u64,
        count: u64,
        ops: u8,
        errno: i32,
    ) -> FsResult<usize> {
        let f = wait_fail(ino, off, count, ops, errno)?;
        Ok(self.waits.fail(f.ino, f.from, f.to, f.ops, f.errno))
    }
}

/// The waiters of `ino` on the blocks of bytes `off..off+count` with an op
/// in `ops`, to fail with `errno`: EINVAL for no ops, unknown op bits or
/// an errno out of 1..4095.
fn wait_fail(ino: u64, off: u64, count: u64, ops: u8, errno: i32) -> FsResult<WaitFail> {
    if ops == 0 || ops & !DWO_ALL != 0 || !(1..4096).contains(&errno) {
        return Err(EINVAL);
    }
    Ok(WaitFail {
        ino,
        from: off / BLOCK,
        to: off.saturating_add(count).div_ceil(BLOCK),
        ops,
        errno,
    })
}
