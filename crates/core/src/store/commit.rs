//! Committing a metadata image: the super block, its allocators and trees.
//!
//! A [`Store`] is an open metadata device with its last durable super block.
//! A [`Txn`] is one commit in progress: a [`Writer`] (dirty blocks and alloc
//! lists) and a working copy of the super block whose roots the caller
//! changes. This is the single-writer commit the offline tools, the tests
//! and the benchmark use, and the one the server builds its commits on.
//!
//! The allocators rotate so that nothing is reused before it is safe:
//! - A commit allocates from `server_meta_avail[0]` and frees into
//!   `server_meta_freed[0]`.
//! - At commit, `server_meta_freed[1]` — what the *previous* commit freed,
//!   durable now — is moved into the `meta_alloc[1]` ("freed") extent tree,
//!   and `server_meta_avail[1]` is refilled from `meta_alloc[0]` ("avail"),
//!   swapping the two trees when avail runs dry. Then the `[0]` and `[1]` lists
//!   swap, so the next commit allocates from the refilled list.
//! - Dirty blocks are written to blknos no durable structure references,
//!   the device is flushed, then the super block (seq + 1) is written and
//!   flushed. A crash before the last flush leaves the previous commit.
//!
//! Limits: a transaction may dirty at most what its avail list holds; callers
//! commit when [`Txn::needs_commit`] says the list is down to the reserve the
//! commit itself needs.

use crate::error::{CorruptKind, Error, Result};
use crate::rng::Rng;
use crate::store::alloc::extent;
use crate::store::block::ListState;
use crate::store::block::{header_of, read_sm, set_header, write_sm, BlockCache, Writer};
use crate::store::dev::BlockDev;
use scoutfs_format::consts::*;
use scoutfs_format::super_block::SUPER_BLOCK_SIZE;
use scoutfs_format::{BtreeRoot, SuperBlock};
use std::sync::Arc;
use zerocopy::IntoBytes;

/// Blocks a commit's server avail list is filled to: one full list block
/// on large devices, a sixteenth of the device on small ones.
pub fn meta_fill_target(sb: &SuperBlock) -> u64 {
    let usable = sb
        .total_meta_blocks
        .get()
        .saturating_sub(META_DEV_START_BLKNO);
    (usable / 16).clamp(32, ALLOC_LIST_MAX_BLOCKS as u64)
}

/// Avail blocks kept back for the commit's own allocator work.
pub fn meta_commit_reserve(sb: &SuperBlock) -> u64 {
    (meta_fill_target(sb) / 4).max(16)
}

/// The item btrees rooted in the super block, by name (the allocator
/// trees are in `meta_alloc` and `data_alloc`).
pub fn super_roots(sb: &SuperBlock) -> [(&'static str, &BtreeRoot); 5] {
    [
        ("fs_root", &sb.fs_root),
        ("logs_root", &sb.logs_root),
        ("log_merge", &sb.log_merge),
        ("mounted_clients", &sb.mounted_clients),
        ("srch_root", &sb.srch_root),
    ]
}

/// What every commit keeps true of the super block, checked against the
/// last durable one before anything is written: the same filesystem and
/// device sizes (or larger: [`grow_devices`]), seqs and inode numbers that
/// never go back, and no more free space recorded than the devices have.
fn check_commit(old: &SuperBlock, new: &SuperBlock) -> Result<()> {
    crate::ensure!(
        new.hdr.fsid == old.hdr.fsid,
        "commit of fsid {:#x} over {:#x}",
        new.hdr.fsid.get(),
        old.hdr.fsid.get()
    );
    crate::ensure!(
        new.total_meta_blocks.get() >= old.total_meta_blocks.get()
            && new.total_data_blocks.get() >= old.total_data_blocks.get(),
        "a commit shrank the devices from {}/{} to {}/{} blocks",
        old.total_meta_blocks.get(),
        old.total_data_blocks.get(),
        new.total_meta_blocks.get(),
        new.total_data_blocks.get()
    );
    crate::ensure!(
        new.seq.get() >= old.seq.get(),
        "seq went back from {} to {}",
        old.seq.get(),
        new.seq.get()
    );
    crate::ensure!(
        new.next_ino.get() >= old.next_ino.get(),
        "next inode went back from {} to {}",
        old.next_ino.get(),
        new.next_ino.get()
    );
    let meta_free: u64 = new
        .meta_alloc
        .iter()
        .map(|a| a.total_len.get())
        .sum::<u64>()
        + new
            .server_meta_avail
            .iter()
            .map(|h| h.total_nr.get())
            .sum::<u64>()
        + new
            .server_meta_freed
            .iter()
            .map(|h| h.total_nr.get())
            .sum::<u64>();
    crate::ensure!(
        meta_free <= new.total_meta_blocks.get(),
        "{meta_free} free metadata blocks of {}",
        new.total_meta_blocks.get()
    );
    crate::ensure!(
        new.data_alloc.total_len.get() <= new.total_data_blocks.get(),
        "{} free data blocks of {}",
        new.data_alloc.total_len.get(),
        new.total_data_blocks.get()
    );
    Ok(())
}

/// Reads and checks a super block: `meta` says which device's copy it must be.
pub fn read_super(dev: &dyn BlockDev, meta: bool) -> Result<SuperBlock> {
    let which = if meta { "metadata" } else { "data" };
    let min = SUPER_OFFSET + BLOCK_SM_SIZE as u64;
    if dev.size() < min {
        return Err(Error::Config(format!(
            "{}: {} bytes is too small to hold a scoutfs {which} device",
            dev.name(),
            dev.size()
        )));
    }
    let buf = read_sm(dev, SUPER_BLKNO, magic::SUPER, None).map_err(|e| match e {
        Error::Corrupt(c) if c.kind == CorruptKind::BlockInvalid => Error::Config(format!(
            "{}: no scoutfs super block at byte {SUPER_OFFSET}: {}",
            dev.name(),
            c.detail
        )),
        e => e,
    })?;
    let seq = header_of(&buf).seq.get();
    let sb = SuperBlock::decode(&buf)
        .map_err(|e| Error::corrupt(CorruptKind::SuperInvalid, SUPER_BLKNO, seq, e.to_string()))?;
    let is_meta = sb.flags.get() & FLAG_IS_META_BDEV != 0;
    if is_meta != meta {
        let holds = if is_meta { "metadata" } else { "data" };
        return Err(Error::Config(format!(
            "{}: holds a scoutfs {holds} device's super block, expected the {which} device",
            dev.name()
        )));
    }
    let (blocks, shift) = if meta {
        (sb.total_meta_blocks.get(), BLOCK_LG_SHIFT)
    } else {
        (sb.total_data_blocks.get(), BLOCK_SM_SHIFT)
    };
    let need = blocks.saturating_mul(1 << shift);
    if dev.size() < need {
        return Err(Error::Config(format!(
            "{}: device is {} bytes but the filesystem needs {need} (truncated?)",
            dev.name(),
            dev.size()
        )));
    }
    Ok(sb)
}

/// Checks that a data device's super block belongs with a metadata one.
///
/// The data device's copy of the data size may be larger than the
/// metadata device's: a growth writes it first, and a crash before the
/// growth's commit leaves it ahead (the data device is large enough for
/// either; the metadata device's is the filesystem's size).
pub fn check_pair(meta: &SuperBlock, data: &SuperBlock, data_name: &str) -> Result<()> {
    if meta.uuid != data.uuid || meta.hdr.fsid != data.hdr.fsid {
        return Err(Error::Config(format!(
            "{data_name}: data device belongs to another filesystem (fsid {:#018x}, expected {:#018x})",
            data.hdr.fsid.get(),
            meta.hdr.fsid.get()
        )));
    }
    if meta.fmt_vers != data.fmt_vers || data.total_data_blocks.get() < meta.total_data_blocks.get()
    {
        return Err(Error::Config(format!(
            "{data_name}: data device's super block disagrees with the metadata device's"
        )));
    }
    Ok(())
}

/// What [`grow_devices`] refuses: the message says why.
fn refuse(why: String) -> Error {
    Error::Errno {
        what: why,
        errno: libc::EINVAL,
    }
}

/// The sizes a growth asks for, checked: `(meta, data)` blocks from the
/// current totals `now` and the asked ones (0: unchanged), or `None` when
/// nothing would change. A smaller size than now is refused, and so is one
/// the device does not hold (asked again: it may have grown since it was
/// opened) or one that makes more than [`DATA_ALLOC_ZONES_MAX`] data
/// allocation zones of `zone` blocks (0: no zones).
pub fn check_growth(
    now: (u64, u64),
    ask: (u64, u64),
    meta_dev: &dyn BlockDev,
    data_dev: &dyn BlockDev,
    zone: u64,
) -> Result<Option<(u64, u64)>> {
    let new = |now: u64, ask: u64| if ask == 0 { now } else { ask };
    let (meta, data) = (new(now.0, ask.0), new(now.1, ask.1));
    let devs = [
        ("metadata", meta_dev, now.0, meta, BLOCK_LG_SHIFT),
        ("data", data_dev, now.1, data, BLOCK_SM_SHIFT),
    ];
    for (what, _, old, new, _) in devs {
        if new < old {
            return Err(refuse(format!(
                "the {what} device holds {old} blocks: shrinking it to {new} is not supported"
            )));
        }
    }
    if (meta, data) == now {
        return Ok(None);
    }
    for (what, dev, old, new, shift) in devs {
        if new == old {
            continue;
        }
        let size = dev
            .refresh_size()
            .map_err(|e| Error::io(format!("{}: size", dev.name()), e))?;
        let need = new.saturating_mul(1 << shift);
        if size < need {
            return Err(refuse(format!(
                "{}: growing the {what} device to {new} blocks needs {need} bytes, \
                 it has {size} (grow the device first)",
                dev.name()
            )));
        }
    }
    if zone != 0 && data.div_ceil(zone) > DATA_ALLOC_ZONES_MAX {
        return Err(refuse(format!(
            "{data} data blocks would make more than {DATA_ALLOC_ZONES_MAX} \
             allocation zones of {zone} blocks"
        )));
    }
    Ok(Some((meta, data)))
}

/// Grows the filesystem in `txn` to `meta_blocks` 64 KiB metadata blocks
/// and `data_blocks` 4 KiB data blocks, as [`check_growth`] allows: the new
/// blocks become free extents and the super block's totals grow. Returns
/// whether anything grew.
///
/// The data device's own super block is written with its new size and
/// flushed first, so the devices agree whenever the caller commits
/// `txn`; if it never does, the data device's copy is ahead, which
/// [`check_pair`] accepts.
pub fn grow_devices(
    txn: &mut Txn,
    data_dev: &dyn BlockDev,
    meta_blocks: u64,
    data_blocks: u64,
) -> Result<bool> {
    let old_meta = txn.sb.total_meta_blocks.get();
    let old_data = txn.sb.total_data_blocks.get();
    let meta_dev = txn.w.cache().dev().clone();
    let Some((meta, data)) = check_growth(
        (old_meta, old_data),
        (meta_blocks, data_blocks),
        meta_dev.as_ref(),
        data_dev,
        txn.sb.volopt.data_alloc_zone_blocks.get(),
    )?
    else {
        return Ok(false);
    };
    if data > old_data {
        let mut dsb = read_super(data_dev, false)?;
        check_pair(&txn.sb, &dsb, data_dev.name())?;
        dsb.total_data_blocks = data.into();
        let seq = dsb.hdr.seq.get() + 1;
        write_super(data_dev, &mut dsb, seq)?;
        data_dev
            .flush()
            .map_err(|e| Error::io(format!("{}: flush", data_dev.name()), e))?;
        extent::free_extent(
            &mut txn.w,
            &mut txn.sb.data_alloc,
            old_data,
            data - old_data,
        )?;
    }
    if meta > old_meta {
        extent::free_extent(
            &mut txn.w,
            &mut txn.sb.meta_alloc[0],
            old_meta,
            meta - old_meta,
        )?;
    }
    txn.sb.total_meta_blocks = meta.into();
    txn.sb.total_data_blocks = data.into();
    Ok(true)
}

/// Writes a super block at SM blkno 16 of `dev` with the given seq (no flush).
pub fn write_super(dev: &dyn BlockDev, sb: &mut SuperBlock, seq: u64) -> Result<()> {
    let fsid = sb.hdr.fsid.get();
    let mut buf = vec![0u8; BLOCK_SM_SIZE];
    buf[..SUPER_BLOCK_SIZE].copy_from_slice(sb.as_bytes());
    set_header(&mut buf, magic::SUPER, fsid, seq, SUPER_BLKNO);
    write_sm(dev, SUPER_BLKNO, &mut buf)?;
    sb.hdr = header_of(&buf);
    Ok(())
}

/// An open metadata device and its last durable super block.
pub struct Store {
    pub cache: Arc<BlockCache>,
    pub sb: SuperBlock,
    /// A super block write or its flush failed: which super block is
    /// durable is unknown until the device is opened again.
    failed: bool,
}

/// One commit in progress.
pub struct Txn {
    pub w: Writer,
    pub sb: SuperBlock,
}

/// What a commit wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitStats {
    pub blocks: u64,
    pub bytes: u64,
}

impl Txn {
    /// The avail list is down to what the commit itself needs.
    pub fn needs_commit(&self) -> bool {
        self.w.avail_remaining() <= meta_commit_reserve(&self.sb)
    }
}

impl Store {
    /// A store over a cache and a super block already read (mkfs).
    pub fn from_parts(cache: Arc<BlockCache>, sb: SuperBlock) -> Store {
        Store {
            cache,
            sb,
            failed: false,
        }
    }

    /// Opens the metadata device: reads and checks its super block.
    pub fn open(dev: Arc<dyn BlockDev>, cache_blocks: usize) -> Result<Store> {
        let sb = read_super(dev.as_ref(), true)?;
        let cache = Arc::new(BlockCache::new(dev, sb.hdr.fsid.get(), cache_blocks));
        Ok(Store {
            cache,
            sb,
            failed: false,
        })
    }

    /// Begins a commit with random block seqs.
    pub fn begin(&self) -> Txn {
        self.begin_with(Rng::from_os())
    }

    /// Begins a commit whose block seqs come from `rng` (tests replay seeds).
    pub fn begin_with(&self, rng: Rng) -> Txn {
        let lists = ListState::new(self.sb.server_meta_avail[0], self.sb.server_meta_freed[0]);
        Txn {
            w: Writer::new(self.cache.clone(), lists, rng),
            sb: self.sb,
        }
    }

    /// Commits: rotates the allocators, writes every dirty block, flushes,
    /// then writes and flushes the super block. On error nothing durable has
    /// changed. If the super block write or its flush fails, the new super
    /// block may or may not be durable: the store refuses further commits.
    pub fn commit(&mut self, txn: Txn) -> Result<CommitStats> {
        if self.failed {
            return Err(Error::Shutdown {
                errno: libc::EIO,
                why: "an earlier super block write failed; open the device again".into(),
            });
        }
        let Txn { mut w, mut sb } = txn;
        check_commit(&self.sb, &sb)?;
        let res = w.settle().and_then(|_| rotate_meta_alloc(&mut w, &mut sb));
        w.fail_on(res)?;
        let blocks = w.dirty_blocks() as u64;
        let bytes = w.write_out()?;
        let dev = self.cache.dev().clone();
        let seq = sb.hdr.seq.get() + 1;
        let res = write_super(dev.as_ref(), &mut sb, seq).and_then(|_| {
            dev.flush()
                .map_err(|e| Error::io(format!("{}: flush", dev.name()), e))
        });
        if res.is_err() {
            self.failed = true;
        }
        res?;
        self.sb = sb;
        Ok(CommitStats {
            blocks: blocks + 1,
            bytes: bytes + BLOCK_SM_SIZE as u64,
        })
    }
}

/// Moves the previous commit's freed blocks into the freed tree, refills the
/// next commit's avail list, records this commit's lists and swaps them.
pub fn rotate_meta_alloc(w: &mut Writer, sb: &mut SuperBlock) -> Result<()> {
    let mut prev_freed = sb.server_meta_freed[1];
    let entries = w.list_take_all(&mut prev_freed)?;
    sb.server_meta_freed[1] = prev_freed;
    extent::free_blocks(w, &mut sb.meta_alloc[1], entries)?;

    let target = meta_fill_target(sb);
    let mut next_avail = sb.server_meta_avail[1];
    while next_avail.total_nr.get() < target {
        if sb.meta_alloc[0].total_len.get() == 0 {
            if sb.meta_alloc[1].total_len.get() == 0 {
                break;
            }
            sb.meta_alloc.swap(0, 1);
        }
        let want = target - next_avail.total_nr.get();
        let Some(e) = extent::alloc_extent(w, &mut sb.meta_alloc[0], want)? else {
            break;
        };
        for b in e.start..e.start + e.len {
            w.list_push(&mut next_avail, b)?;
        }
    }
    let low = next_avail.total_nr.get() < target;
    next_avail.flags = if low { ALLOC_FLAG_LOW.into() } else { 0.into() };
    sb.server_meta_avail[1] = next_avail;

    w.settle()?;
    assert!(w.lists().quiescent());
    sb.server_meta_avail[0] = w.lists().avail;
    sb.server_meta_freed[0] = w.lists().freed;
    sb.server_meta_avail.swap(0, 1);
    sb.server_meta_freed.swap(0, 1);
    Ok(())
}
