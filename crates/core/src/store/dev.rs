//! Block devices: the bottom of the storage core.
//!
//! Everything above this module reads and writes the metadata and data
//! devices through [`BlockDev`]: positional reads and writes of whole
//! buffers, a flush that makes every completed write durable, a size that
//! may only grow, and a name for messages. A read or write that would extend past `size()`
//! fails with [`io::ErrorKind::UnexpectedEof`] and a message naming the
//! device, the offset, the length and the size; no request panics.
//!
//! Two implementations:
//! - [`FileDev`] opens an image file or a block device and uses `pread` /
//!   `pwrite` (`FileExt::read_exact_at` / `write_all_at`); `flush` is
//!   `fdatasync`. The size is the file's length, or for a block device the
//!   offset of its end: taken at open, and again when a request reaches past
//!   it (a device grown while mounted, `scoutfs resize-devices`). Directories, character devices,
//!   FIFOs and sockets are refused with [`io::ErrorKind::InvalidInput`]
//!   before they are opened (opening a FIFO would block).
//! - [`MemDev`] is an in-memory device for tests and simulation that models
//!   what the media may do, and injects faults. It is a cheap handle
//!   (`Clone` shares one device), so a test keeps a handle while the code
//!   under test owns another.
//!
//! # The fault model of `MemDev`
//!
//! The device holds a *durable* image (what survives power loss) and a
//! volatile write cache: the unflushed writes, in the order they completed.
//! Reads see the *current* image, which is the durable image with every
//! unflushed write applied in order (read-your-writes). `flush` makes every
//! unflushed write durable. [`MemDev::crash`] is a power loss followed by a
//! reboot; the [`CrashMode`] says which unflushed writes reached the media:
//! - `LoseAll`: none of them.
//! - `LoseSome { seed }`: each independently, with probability 1/2. The
//!   survivors are applied in their original order, so a later write wins
//!   over an earlier one where both survive, and an earlier one may survive
//!   where a later one over it is lost (the cache reorders).
//! - `Tear { seed }`: as `LoseSome`, and a surviving write that spans more
//!   than one [`SECTOR_SIZE`] sector is torn with probability 1/2: each of
//!   its sectors (split at absolute multiples of `SECTOR_SIZE`) then
//!   survives independently with probability 1/2. A sector is never torn.
//!
//! All randomness comes from the seed in the mode (splitmix64), so a crash
//! replays exactly. After a crash the device serves its durable state and
//! works normally. The write cache has a named limit
//! ([`WRITE_CACHE_BYTES_MAX_DEFAULT`], see
//! [`MemDev::set_write_cache_bytes_max`]): when the unflushed bytes pass it,
//! the oldest unflushed writes become durable on their own, as a real
//! device's cache writes back. Code above must never rely on an unflushed
//! write being lost, only on a flushed one being kept.
//!
//! Injected I/O errors (`io::ErrorKind::Other`, "injected I/O error"):
//! `fail_reads_after(n)` / `fail_writes_after(n)` / `fail_flushes_after(n)`
//! let the next `n` operations of that kind succeed and fail every one after
//! them; `fail_reads_at(range)` fails every read that overlaps a byte range
//! (an unreadable block). `clear_faults` removes them all; a crash does not
//! (bad media stays bad across a reboot). A failed write changes nothing; a
//! failed flush makes nothing durable. Range errors are checked first, so a
//! request past the end is always `UnexpectedEof`, and a read failed by a
//! bad range does not count against `fail_reads_after`. `corrupt_byte` flips
//! a byte of the media (current and durable images) to test checksums.
//! `stats` counts completed operations and bytes; failed ones count only as
//! `injected_errors`.
//!
//! # Data structures of `MemDev`
//!
//! Both images are vectors of copy-on-write chunks of [`MEM_CHUNK_BYTES`]
//! (`Option<Arc<Vec<u8>>>`; `None` reads as zeros), so a large sparse device
//! costs only what was written. A chunk is *clean* when its current and
//! durable versions are the same `Arc` (or both `None`); a write marks its
//! chunks dirty (a bitmap plus a list) and `Arc::make_mut` copies a shared
//! chunk once. `flush` points the durable image at the current chunks of the
//! dirty list; a crash applies the surviving writes to the durable image and
//! points the current image back at the durable chunks of the dirty list. So
//! reads, writes, flushes and crashes cost what they touch, never the size
//! of the device. Each unflushed write keeps a copy of its bytes, which a
//! crash needs to replay a subset.
//!
//! # Locking
//!
//! `FileDev` holds no locks; concurrent positional I/O is safe, and
//! concurrent overlapping writes land in no promised order. `MemDev` has one
//! mutex around its whole state, taken once per call and never while
//! holding another lock of this module; it serialises all I/O to one device.
//!
//! # Limits
//!
//! - `FileDev` does buffered I/O through the page cache (no `O_DIRECT`) and
//!   does not open block devices exclusively. A device that shrinks under
//!   a mount is not noticed until its missing blocks fail.
//!   `create` does not sync the parent directory.
//! - `MemDev` is at most [`MEM_DEV_BYTES_MAX`]; memory is the chunks written
//!   plus the bytes of unflushed writes (bounded by the write cache limit).
//!   It models sector-atomic media with a volatile write cache; it does not
//!   model misdirected writes or silent corruption other than `corrupt_byte`.

use crate::rng::Rng;
use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The unit of atomic writes the media guarantees; `CrashMode::Tear` never
/// tears within one. It is the format's small block size.
pub const SECTOR_SIZE: usize = 4096;
const _: () = assert!(SECTOR_SIZE == scoutfs_format::BLOCK_SM_SIZE);

/// Bytes in one copy-on-write chunk of a [`MemDev`] image: one metadata
/// block, so a block write touches one chunk.
pub const MEM_CHUNK_BYTES: usize = 64 * 1024;

/// The largest [`MemDev`]: bounds the chunk tables (16 bytes per chunk).
pub const MEM_DEV_BYTES_MAX: u64 = 64 << 30;

/// The default bound on a [`MemDev`]'s unflushed bytes, past which the
/// oldest unflushed writes become durable on their own.
pub const WRITE_CACHE_BYTES_MAX_DEFAULT: u64 = 256 << 20;

/// A device of fixed size read and written at byte offsets.
pub trait BlockDev: Send + Sync {
    /// Fills all of `buf` from byte `off`.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// Writes all of `buf` at byte `off`. It is durable only after `flush`.
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Makes every write that completed before the call durable.
    fn flush(&self) -> io::Result<()>;
    /// The size in bytes.
    fn size(&self) -> u64;
    /// The name for messages (a path for a `FileDev`).
    fn name(&self) -> &str;
    /// Looks at the device's size again, keeps it, and returns it: a
    /// device grown under a mount (`scoutfs resize-devices`) serves its new
    /// blocks once this has seen them. Devices that cannot grow keep the
    /// size they opened with.
    fn refresh_size(&self) -> io::Result<u64> {
        Ok(self.size())
    }
}

impl<T: BlockDev + ?Sized> BlockDev for Arc<T> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        (**self).read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        (**self).write_at(buf, off)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn name(&self) -> &str {
        (**self).name()
    }
    fn refresh_size(&self) -> io::Result<u64> {
        (**self).refresh_size()
    }
}

/// The error of a request that extends past the end of a device.
fn check_range(name: &str, op: &str, off: u64, len: usize, size: u64) -> io::Result<()> {
    match off.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{name}: {op} of {len} bytes at offset {off} extends past the device size \
                 of {size} bytes"
            ),
        )),
    }
}

/// Prefixes an OS error with the device and what was being done.
fn annotate(name: &str, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{name}: {what}: {e}"))
}

/// A regular file (an image) or a block device.
#[derive(Debug)]
pub struct FileDev {
    file: File,
    name: String,
    /// The size last seen; it only grows ([`BlockDev::refresh_size`]).
    size: AtomicU64,
    writable: bool,
}

impl FileDev {
    /// Opens an existing image file or block device, for writing if
    /// `writable`. Anything else is refused with `InvalidInput`.
    pub fn open(path: impl AsRef<Path>, writable: bool) -> io::Result<FileDev> {
        let path = path.as_ref();
        let name = path.display().to_string();
        // Look before opening: opening a FIFO blocks and opening a tty acts.
        let meta = std::fs::metadata(path).map_err(|e| annotate(&name, "stat", e))?;
        check_file_type(&name, &meta)?;
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| annotate(&name, "open", e))?;
        // The path may name something else by now; judge what was opened.
        let meta = file.metadata().map_err(|e| annotate(&name, "fstat", e))?;
        check_file_type(&name, &meta)?;
        let size = current_size(&file, &name)?;
        Ok(FileDev {
            file,
            name,
            size: AtomicU64::new(size),
            writable,
        })
    }

    /// Creates a new sparse image file of `size_bytes`, open for writing.
    /// Fails with `AlreadyExists` if anything is at `path`.
    pub fn create(path: impl AsRef<Path>, size_bytes: u64) -> io::Result<FileDev> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| annotate(&name, "create", e))?;
        if let Err(e) = file.set_len(size_bytes) {
            drop(file);
            // Best effort not to leave a wrong-sized image behind; the
            // set_len error is the one worth reporting.
            let _ = std::fs::remove_file(path);
            return Err(annotate(&name, &format!("set length {size_bytes}"), e));
        }
        Ok(FileDev {
            file,
            name,
            size: AtomicU64::new(size_bytes),
            writable: true,
        })
    }

    /// Checks a request against the size, looking at the device again
    /// before refusing one past the end: the device may have grown.
    fn check(&self, op: &str, off: u64, len: usize) -> io::Result<()> {
        let size = self.size.load(Ordering::Acquire);
        if check_range(&self.name, op, off, len, size).is_ok() {
            return Ok(());
        }
        let size = self.refresh_size()?;
        check_range(&self.name, op, off, len, size)
    }

    /// Whether the device was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }
}

/// The size of an open image file or block device.
fn current_size(file: &File, name: &str) -> io::Result<u64> {
    let meta = file.metadata().map_err(|e| annotate(name, "fstat", e))?;
    if meta.file_type().is_block_device() {
        let mut f = file;
        f.seek(SeekFrom::End(0))
            .map_err(|e| annotate(name, "seek to end", e))
    } else {
        Ok(meta.len())
    }
}

fn check_file_type(name: &str, meta: &Metadata) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_file() || ft.is_block_device() {
        return Ok(());
    }
    let what = if ft.is_dir() {
        "a directory"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "of an unknown type"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{name}: is {what}, not a regular file or a block device"),
    ))
}

impl BlockDev for FileDev {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.check("read", off, buf.len())?;
        self.file.read_exact_at(buf, off).map_err(|e| {
            let what = format!("read of {} bytes at offset {off}", buf.len());
            annotate(&self.name, &what, e)
        })
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.check("write", off, buf.len())?;
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{}: write at offset {off}: opened read-only", self.name),
            ));
        }
        self.file.write_all_at(buf, off).map_err(|e| {
            let what = format!("write of {} bytes at offset {off}", buf.len());
            annotate(&self.name, &what, e)
        })
    }

    fn flush(&self) -> io::Result<()> {
        if !self.writable {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| annotate(&self.name, "fdatasync", e))
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// A device never shrinks under a mount: a smaller size than before
    /// (a truncated image) is kept out, and its blocks fail as the file's
    /// reads and writes fail.
    fn refresh_size(&self) -> io::Result<u64> {
        let now = current_size(&self.file, &self.name)?;
        Ok(self.size.fetch_max(now, Ordering::AcqRel).max(now))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Which unflushed writes of a [`MemDev`] survive a power loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// No unflushed write survives.
    LoseAll,
    /// Each unflushed write survives whole with probability 1/2.
    LoseSome { seed: u64 },
    /// As `LoseSome`, and a survivor spanning several sectors may keep only
    /// some of its sectors.
    Tear { seed: u64 },
}

/// What a crash did to the unflushed writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Writes that reached the media whole.
    pub kept: u64,
    /// Writes of which nothing reached the media.
    pub lost: u64,
    /// Writes of which some sectors reached the media and some did not.
    pub torn: u64,
}

/// Counters of a [`MemDev`] since it was made (shared by all handles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemDevStats {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Requests failed by an injected fault (not counted above).
    pub injected_errors: u64,
    pub crashes: u64,
    /// Writes made durable because the write cache passed its limit.
    pub writebacks: u64,
    /// Now, not cumulative: the writes in the volatile cache.
    pub unflushed_writes: u64,
    /// Now, not cumulative: the bytes of those writes.
    pub unflushed_bytes: u64,
}

/// An in-memory device with a volatile write cache, crashes and injected
/// faults. Clones are handles to the same device.
#[derive(Clone)]
pub struct MemDev {
    shared: Arc<MemShared>,
}

struct MemShared {
    name: String,
    /// Grows under the state's lock, after the chunk tables ([`MemDev::grow`]).
    size: AtomicU64,
    state: Mutex<MemState>,
}

/// One chunk of an image; `None` is all zeros.
type Chunk = Option<Arc<Vec<u8>>>;

struct PendingWrite {
    off: u64,
    data: Vec<u8>,
}

#[derive(Default)]
struct Faults {
    /// Operations of each kind that may still succeed; `Some(0)` fails all.
    reads_ok_left: Option<u64>,
    writes_ok_left: Option<u64>,
    flushes_ok_left: Option<u64>,
    bad_read_ranges: Vec<Range<u64>>,
}

struct MemState {
    current: Vec<Chunk>,
    durable: Vec<Chunk>,
    /// A bit per chunk that may differ between current and durable.
    dirty_bits: Vec<u64>,
    /// The chunks with their dirty bit set, each once.
    dirty_list: Vec<usize>,
    unflushed: VecDeque<PendingWrite>,
    unflushed_bytes: u64,
    write_cache_bytes_max: u64,
    faults: Faults,
    stats: MemDevStats,
}

/// The part of one chunk that a byte range covers.
struct Piece {
    chunk: usize,
    in_chunk: Range<usize>,
    in_buf: Range<usize>,
}

/// Splits `len` bytes at `off` into their pieces of chunks.
fn pieces(off: u64, len: usize) -> impl Iterator<Item = Piece> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done == len {
            return None;
        }
        let pos = off + done as u64;
        let chunk = (pos / MEM_CHUNK_BYTES as u64) as usize;
        let start = (pos % MEM_CHUNK_BYTES as u64) as usize;
        let n = (MEM_CHUNK_BYTES - start).min(len - done);
        let piece = Piece {
            chunk,
            in_chunk: start..start + n,
            in_buf: done..done + n,
        };
        done += n;
        Some(piece)
    })
}

/// Splits `len` bytes at `off` at absolute sector boundaries; buffer ranges.
fn sector_pieces(off: u64, len: usize) -> impl Iterator<Item = Range<usize>> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done == len {
            return None;
        }
        let pos = off + done as u64;
        let n = (SECTOR_SIZE - (pos % SECTOR_SIZE as u64) as usize).min(len - done);
        let range = done..done + n;
        done += n;
        Some(range)
    })
}

fn read_chunks(chunks: &[Chunk], off: u64, buf: &mut [u8]) {
    for p in pieces(off, buf.len()) {
        let dst = &mut buf[p.in_buf];
        match &chunks[p.chunk] {
            Some(c) => dst.copy_from_slice(&c[p.in_chunk]),
            None => dst.fill(0),
        }
    }
}

fn write_chunks(chunks: &mut [Chunk], off: u64, data: &[u8]) {
    for p in pieces(off, data.len()) {
        let slot = &mut chunks[p.chunk];
        if p.in_chunk.len() == MEM_CHUNK_BYTES {
            // A whole chunk: a new one, rather than copying a shared one.
            *slot = Some(Arc::new(data[p.in_buf].to_vec()));
            continue;
        }
        let c = slot.get_or_insert_with(|| Arc::new(vec![0; MEM_CHUNK_BYTES]));
        Arc::make_mut(c)[p.in_chunk].copy_from_slice(&data[p.in_buf]);
    }
}

fn chunks_same(a: &Chunk, b: &Chunk) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Takes one operation from a "succeed n more times" budget; true to fail.
fn take_op_fault(ok_left: &mut Option<u64>) -> bool {
    match ok_left {
        None => false,
        Some(0) => true,
        Some(n) => {
            *n -= 1;
            false
        }
    }
}

fn injected_error(name: &str, what: &str) -> io::Error {
    io::Error::other(format!("{name}: injected I/O error: {what}"))
}

impl MemState {
    fn new(nr_chunks: usize) -> MemState {
        MemState {
            current: vec![None; nr_chunks],
            durable: vec![None; nr_chunks],
            dirty_bits: vec![0; nr_chunks.div_ceil(64)],
            dirty_list: Vec::new(),
            unflushed: VecDeque::new(),
            unflushed_bytes: 0,
            write_cache_bytes_max: WRITE_CACHE_BYTES_MAX_DEFAULT,
            faults: Faults::default(),
            stats: MemDevStats::default(),
        }
    }

    fn is_dirty(&self, chunk: usize) -> bool {
        self.dirty_bits[chunk / 64] & (1 << (chunk % 64)) != 0
    }

    fn mark_dirty(&mut self, chunk: usize) {
        if !self.is_dirty(chunk) {
            self.dirty_bits[chunk / 64] |= 1 << (chunk % 64);
            self.dirty_list.push(chunk);
        }
    }

    /// Makes each dirty chunk clean by setting one image from the other.
    fn clean_all(&mut self, durable_from_current: bool) {
        let mut list = std::mem::take(&mut self.dirty_list);
        for &chunk in &list {
            if durable_from_current {
                self.durable[chunk] = self.current[chunk].clone();
            } else {
                self.current[chunk] = self.durable[chunk].clone();
            }
            self.dirty_bits[chunk / 64] &= !(1 << (chunk % 64));
        }
        list.clear();
        self.dirty_list = list;
    }

    fn write(&mut self, off: u64, data: &[u8]) {
        for p in pieces(off, data.len()) {
            self.mark_dirty(p.chunk);
        }
        write_chunks(&mut self.current, off, data);
        self.unflushed.push_back(PendingWrite {
            off,
            data: data.to_vec(),
        });
        self.unflushed_bytes += data.len() as u64;
        self.write_back_over_limit();
    }

    /// The oldest unflushed writes become durable until the cache fits.
    fn write_back_over_limit(&mut self) {
        while self.unflushed_bytes > self.write_cache_bytes_max {
            let Some(w) = self.unflushed.pop_front() else {
                unreachable!("unflushed bytes {} with no writes", self.unflushed_bytes);
            };
            self.unflushed_bytes -= w.data.len() as u64;
            write_chunks(&mut self.durable, w.off, &w.data);
            self.stats.writebacks += 1;
        }
    }

    fn flush(&mut self) {
        self.clean_all(true);
        self.unflushed.clear();
        self.unflushed_bytes = 0;
    }

    fn crash(&mut self, mode: CrashMode) -> CrashReport {
        let seed = match mode {
            CrashMode::LoseAll => 0,
            CrashMode::LoseSome { seed } | CrashMode::Tear { seed } => seed,
        };
        let mut rng = Rng::new(seed);
        let mut report = CrashReport::default();
        for w in std::mem::take(&mut self.unflushed) {
            let survives = mode != CrashMode::LoseAll && rng.coin();
            let spans_sectors = sector_pieces(w.off, w.data.len()).nth(1).is_some();
            if !survives {
                report.lost += 1;
            } else if matches!(mode, CrashMode::Tear { .. }) && spans_sectors && rng.coin() {
                self.apply_torn(&w, &mut rng, &mut report);
            } else {
                write_chunks(&mut self.durable, w.off, &w.data);
                report.kept += 1;
            }
        }
        self.unflushed_bytes = 0;
        // Reboot: what is read now is what reached the media.
        self.clean_all(false);
        self.stats.crashes += 1;
        report
    }

    fn apply_torn(&mut self, w: &PendingWrite, rng: &mut Rng, report: &mut CrashReport) {
        let (mut kept, mut lost) = (0u64, 0u64);
        for r in sector_pieces(w.off, w.data.len()) {
            if rng.coin() {
                write_chunks(&mut self.durable, w.off + r.start as u64, &w.data[r]);
                kept += 1;
            } else {
                lost += 1;
            }
        }
        match (kept, lost) {
            (_, 0) => report.kept += 1,
            (0, _) => report.lost += 1,
            _ => report.torn += 1,
        }
    }

    fn read_fails(&mut self, off: u64, len: usize) -> bool {
        let end = off + len as u64;
        let bad = &self.faults.bad_read_ranges;
        if bad.iter().any(|r| off < r.end && r.start < end) {
            return true;
        }
        take_op_fault(&mut self.faults.reads_ok_left)
    }
}

impl MemDev {
    /// A zeroed device of `size_bytes` named "mem".
    pub fn new(size_bytes: u64) -> MemDev {
        MemDev::new_named("mem", size_bytes)
    }

    /// A zeroed device of `size_bytes` with a name for messages.
    pub fn new_named(name: &str, size_bytes: u64) -> MemDev {
        assert!(
            size_bytes <= MEM_DEV_BYTES_MAX,
            "{name}: MemDev of {size_bytes} bytes is over the limit of {MEM_DEV_BYTES_MAX}"
        );
        let nr_chunks = size_bytes.div_ceil(MEM_CHUNK_BYTES as u64) as usize;
        MemDev {
            shared: Arc::new(MemShared {
                name: name.to_string(),
                size: AtomicU64::new(size_bytes),
                state: Mutex::new(MemState::new(nr_chunks)),
            }),
        }
    }

    /// A device whose durable contents are `image` (e.g. a snapshot).
    pub fn from_image(name: &str, image: &[u8]) -> MemDev {
        let dev = MemDev::new_named(name, image.len() as u64);
        {
            let mut st = dev.state();
            for (i, bytes) in image.chunks(MEM_CHUNK_BYTES).enumerate() {
                if bytes.iter().any(|&b| b != 0) {
                    let mut chunk = bytes.to_vec();
                    chunk.resize(MEM_CHUNK_BYTES, 0);
                    st.durable[i] = Some(Arc::new(chunk));
                    st.current[i] = st.durable[i].clone();
                }
            }
        }
        dev
    }

    fn state(&self) -> MutexGuard<'_, MemState> {
        // Poisoned only by a panic (a failed assertion) while locked; the
        // state is still whole enough for a test to inspect, so go on.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Power loss and reboot: unflushed writes survive as `mode` says.
    pub fn crash(&self, mode: CrashMode) -> CrashReport {
        self.state().crash(mode)
    }

    /// After `ok_first` more successful reads, every read fails.
    pub fn fail_reads_after(&self, ok_first: u64) {
        self.state().faults.reads_ok_left = Some(ok_first);
    }

    /// After `ok_first` more successful writes, every write fails.
    pub fn fail_writes_after(&self, ok_first: u64) {
        self.state().faults.writes_ok_left = Some(ok_first);
    }

    /// After `ok_first` more successful flushes, every flush fails.
    pub fn fail_flushes_after(&self, ok_first: u64) {
        self.state().faults.flushes_ok_left = Some(ok_first);
    }

    /// Every read that overlaps the byte range `bytes` fails (a bad block).
    pub fn fail_reads_at(&self, bytes: Range<u64>) {
        self.state().faults.bad_read_ranges.push(bytes);
    }

    /// Grows the device to `size_bytes` of zeros (as an image file
    /// extended with `truncate` is); a smaller size changes nothing.
    pub fn grow(&self, size_bytes: u64) {
        assert!(
            size_bytes <= MEM_DEV_BYTES_MAX,
            "{}: MemDev of {size_bytes} bytes is over the limit of {MEM_DEV_BYTES_MAX}",
            self.name()
        );
        let mut st = self.state();
        if size_bytes <= self.size() {
            return;
        }
        let nr_chunks = size_bytes.div_ceil(MEM_CHUNK_BYTES as u64) as usize;
        st.current.resize(nr_chunks, None);
        st.durable.resize(nr_chunks, None);
        st.dirty_bits.resize(nr_chunks.div_ceil(64), 0);
        self.shared.size.store(size_bytes, Ordering::Release);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.state().faults = Faults::default();
    }

    /// Flips every bit of the byte at `off` on the media (both images). An
    /// unflushed write over it that survives a crash rewrites it.
    pub fn corrupt_byte(&self, off: u64) {
        let size = self.size();
        assert!(
            off < size,
            "{}: corrupt_byte({off}) past size {size}",
            self.name()
        );
        let mut st = self.state();
        let chunk = (off / MEM_CHUNK_BYTES as u64) as usize;
        let was_dirty = st.is_dirty(chunk);
        for image in [true, false] {
            if image || was_dirty {
                let chunks = if image {
                    &mut st.current
                } else {
                    &mut st.durable
                };
                let mut b = [0u8];
                read_chunks(chunks, off, &mut b);
                write_chunks(chunks, off, &[!b[0]]);
            }
        }
        if !was_dirty {
            // Current and durable were one; keep them so.
            st.durable[chunk] = st.current[chunk].clone();
        }
    }

    /// The bytes that would be read after a `CrashMode::LoseAll` crash.
    pub fn snapshot_durable(&self) -> Vec<u8> {
        let mut image = vec![0; self.size() as usize];
        read_chunks(&self.state().durable, 0, &mut image);
        image
    }

    pub fn stats(&self) -> MemDevStats {
        let st = self.state();
        MemDevStats {
            unflushed_writes: st.unflushed.len() as u64,
            unflushed_bytes: st.unflushed_bytes,
            ..st.stats
        }
    }

    /// Sets the write cache limit; writes back at once if it is passed.
    pub fn set_write_cache_bytes_max(&self, bytes_max: u64) {
        let mut st = self.state();
        st.write_cache_bytes_max = bytes_max;
        st.write_back_over_limit();
    }

    /// Asserts the invariants of the model (cost: chunks plus unflushed writes).
    pub fn check_invariants(&self) {
        let st = self.state();
        let nr_chunks = self.size().div_ceil(MEM_CHUNK_BYTES as u64) as usize;
        assert_eq!(st.current.len(), nr_chunks);
        assert_eq!(st.durable.len(), nr_chunks);
        for c in st.current.iter().chain(st.durable.iter()).flatten() {
            assert_eq!(c.len(), MEM_CHUNK_BYTES);
        }
        let set: u64 = st.dirty_bits.iter().map(|w| w.count_ones() as u64).sum();
        assert_eq!(
            set,
            st.dirty_list.len() as u64,
            "dirty list and bits differ"
        );
        for &chunk in &st.dirty_list {
            assert!(st.is_dirty(chunk), "chunk {chunk} listed but not dirty");
        }
        for chunk in (0..nr_chunks).filter(|&c| !st.is_dirty(c)) {
            let (cur, dur) = (&st.current[chunk], &st.durable[chunk]);
            assert!(chunks_same(cur, dur), "clean chunk {chunk} differs");
        }
        let mut bytes = 0u64;
        for w in &st.unflushed {
            check_range(
                self.name(),
                "pending write",
                w.off,
                w.data.len(),
                self.size(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            for p in pieces(w.off, w.data.len()) {
                assert!(
                    st.is_dirty(p.chunk),
                    "pending write in clean chunk {}",
                    p.chunk
                );
            }
            bytes += w.data.len() as u64;
        }
        assert_eq!(bytes, st.unflushed_bytes);
        assert!(st.unflushed_bytes <= st.write_cache_bytes_max);
    }
}

impl fmt::Debug for MemDev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemDev")
            .field("name", &self.shared.name)
            .field("size", &self.size())
            .field("stats", &self.stats())
            .finish()
    }
}

impl BlockDev for MemDev {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        check_range(self.name(), "read", off, buf.len(), self.size())?;
        let mut st = self.state();
        if st.read_fails(off, buf.len()) {
            st.stats.injected_errors += 1;
            let what = format!("read of {} bytes at offset {off}", buf.len());
            return Err(injected_error(self.name(), &what));
        }
        read_chunks(&st.current, off, buf);
        st.stats.reads += 1;
        st.stats.bytes_read += buf.len() as u64;
        Ok(())
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        check_range(self.name(), "write", off, buf.len(), self.size())?;
        let mut st = self.state();
        if take_op_fault(&mut st.faults.writes_ok_left) {
            st.stats.injected_errors += 1;
            let what = format!("write of {} bytes at offset {off}", buf.len());
            return Err(injected_error(self.name(), &what));
        }
        st.write(off, buf);
        st.stats.writes += 1;
        st.stats.bytes_written += buf.len() as u64;
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let mut st = self.state();
        if take_op_fault(&mut st.faults.flushes_ok_left) {
            st.stats.injected_errors += 1;
            return Err(injected_error(self.name(), "flush"));
        }
        st.flush();
        st.stats.flushes += 1;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.shared.size.load(Ordering::Acquire)
    }

    fn name(&self) -> &str {
        &self.shared.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = MEM_CHUNK_BYTES as u64;

    fn read(dev: &MemDev, off: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        dev.read_at(&mut buf, off).unwrap();
        buf
    }

    #[test]
    fn pieces_split_at_chunk_boundaries() {
        let got: Vec<_> = pieces(CHUNK - 10, 20 + MEM_CHUNK_BYTES)
            .map(|p| (p.chunk, p.in_chunk, p.in_buf))
            .collect();
        let n = MEM_CHUNK_BYTES;
        assert_eq!(
            got,
            vec![
                (0, n - 10..n, 0..10),
                (1, 0..n, 10..10 + n),
                (2, 0..10, 10 + n..20 + n)
            ]
        );
        assert_eq!(pieces(5, 0).count(), 0);
    }

    #[test]
    fn sector_pieces_split_at_absolute_sectors() {
        let got: Vec<_> = sector_pieces(4000, 8300).collect();
        assert_eq!(got, vec![0..96, 96..4192, 4192..8288, 8288..8300]);
        assert_eq!(sector_pieces(4096, 4096).count(), 1);
    }

    #[test]
    fn check_range_refuses_overflow_and_names_everything() {
        assert!(check_range("d", "read", 10, 0, 10).is_ok());
        assert!(check_range("d", "read", 0, 10, 10).is_ok());
        let e = check_range("d", "read", u64::MAX, 1, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = check_range("dev9", "write", 11, 0, 10).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("dev9") && msg.contains("11") && msg.contains("10"),
            "{msg}"
        );
    }

    #[test]
    fn unwritten_reads_zero_and_writes_span_chunks() {
        let dev = MemDev::new(4 * CHUNK);
        assert_eq!(read(&dev, 3 * CHUNK, 100), vec![0; 100]);
        let data: Vec<u8> = (0..MEM_CHUNK_BYTES + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        dev.write_at(&data, CHUNK - 50).unwrap();
        dev.check_invariants();
        assert_eq!(read(&dev, CHUNK - 50, data.len()), data);
        assert_eq!(read(&dev, CHUNK - 51, 1), vec![0]);
        assert_eq!(dev.state().dirty_list.len(), 3);
        dev.flush().unwrap();
        dev.check_invariants();
        assert!(dev.state().dirty_list.is_empty());
        assert_eq!(
            dev.snapshot_durable()[CHUNK as usize - 50..][..data.len()],
            data[..]
        );
    }

    #[test]
    fn flush_shares_chunks_and_write_copies_once() {
        let dev = MemDev::new(2 * CHUNK);
        dev.write_at(&[1; 10], 0).unwrap();
        dev.flush().unwrap();
        {
            let st = dev.state();
            assert!(chunks_same(&st.current[0], &st.durable[0]));
        }
        dev.write_at(&[2; 10], 5).unwrap();
        {
            let st = dev.state();
            assert!(!chunks_same(&st.current[0], &st.durable[0]));
        }
        dev.check_invariants();
        assert_eq!(
            dev.snapshot_durable()[..15],
            [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn write_cache_limit_writes_back_oldest_first() {
        let dev = MemDev::new(8 * CHUNK);
        dev.set_write_cache_bytes_max(2 * SECTOR_SIZE as u64);
        for i in 0..4u8 {
            dev.write_at(&[i + 1; SECTOR_SIZE], i as u64 * SECTOR_SIZE as u64)
                .unwrap();
            dev.check_invariants();
        }
        let stats = dev.stats();
        assert_eq!((stats.writebacks, stats.unflushed_writes), (2, 2));
        dev.crash(CrashMode::LoseAll);
        dev.check_invariants();
        assert_eq!(read(&dev, 0, 1), vec![1]);
        assert_eq!(read(&dev, SECTOR_SIZE as u64, 1), vec![2]);
        assert_eq!(read(&dev, 2 * SECTOR_SIZE as u64, 1), vec![0]);
        dev.write_at(&[9; 3 * SECTOR_SIZE], 0).unwrap();
        assert_eq!(
            dev.stats().unflushed_writes,
            0,
            "a write over the limit goes through"
        );
    }

    #[test]
    fn corrupt_byte_flips_clean_and_dirty_chunks() {
        let dev = MemDev::new(2 * CHUNK);
        dev.write_at(&[7; 4], 0).unwrap();
        dev.flush().unwrap();
        dev.corrupt_byte(1);
        dev.check_invariants();
        assert_eq!(read(&dev, 0, 4), vec![7, !7, 7, 7]);
        dev.write_at(&[8; 2], CHUNK).unwrap();
        dev.corrupt_byte(CHUNK + 1);
        dev.corrupt_byte(CHUNK + 10);
        dev.check_invariants();
        assert_eq!(read(&dev, CHUNK, 3), vec![8, !8, 0]);
        let durable = dev.snapshot_durable();
        assert_eq!(durable[..4], [7, !7, 7, 7]);
        assert_eq!(durable[CHUNK as usize..][..3], [0, 0xff, 0]);
        assert_eq!(durable[CHUNK as usize + 10], 0xff);
    }

    #[test]
    fn from_image_round_trips() {
        let mut image = vec![0u8; 3 * MEM_CHUNK_BYTES + 17];
        image[5] = 1;
        image[3 * MEM_CHUNK_BYTES + 16] = 2;
        let dev = MemDev::from_image("img", &image);
        dev.check_invariants();
        assert_eq!(dev.size(), image.len() as u64);
        assert_eq!(dev.snapshot_durable(), image);
        assert_eq!(read(&dev, 0, image.len()), image);
        assert!(dev.state().current[1].is_none(), "zero chunks stay sparse");
    }

    #[test]
    fn op_budget_counts_down_then_fails_every_time() {
        let mut left = Some(2);
        assert!(!take_op_fault(&mut left));
        assert!(!take_op_fault(&mut left));
        assert!(take_op_fault(&mut left));
        assert!(take_op_fault(&mut left));
        assert!(!take_op_fault(&mut None));
    }

    #[test]
    fn torn_report_counts_partial_writes() {
        let dev = MemDev::new(64 * CHUNK);
        for i in 0..64 {
            dev.write_at(&[1; MEM_CHUNK_BYTES], i * CHUNK).unwrap();
        }
        let r = dev.crash(CrashMode::Tear { seed: 3 });
        dev.check_invariants();
        assert_eq!(r.kept + r.lost + r.torn, 64);
        assert!(r.kept > 0 && r.lost > 0 && r.torn > 0, "{r:?}");
        let image = dev.snapshot_durable();
        let torn = (0..64)
            .filter(|&i| {
                let block = &image[i * MEM_CHUNK_BYTES..][..MEM_CHUNK_BYTES];
                block.contains(&0) && block.contains(&1)
            })
            .count();
        assert_eq!(torn as u64, r.torn);
    }
}
