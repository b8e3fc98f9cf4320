//! Making a filesystem: the first super block, allocators, root directory
//! and quorum blocks on a metadata and a data device.
//!
//! mkfs builds its metadata with the same code every later commit uses. It
//! hand-makes one alloc list block at the first metadata blkno holding the
//! next few hundred block numbers, opens a [`Writer`] on it, puts the rest of
//! the metadata device into the `meta_alloc[0]` extent tree and the data
//! device into `data_alloc`, inserts the root inode and its index item into
//! `fs_root`, and commits (which also fills the next commit's avail list).
//!
//! Write order: quorum blocks and the data device's super block first, then
//! the commit's blocks, a flush, and the metadata super block last, so an
//! interrupted mkfs leaves no metadata super block behind it.
//!
//! mkfs refuses a device smaller than the minimum, and a device that holds
//! a scoutfs super block or another known filesystem signature unless forced.

use crate::clock::now_timespec;
use crate::error::{Error, Result};
use crate::rng::{os_random_u64, Rng};
use crate::store::alloc::extent;
use crate::store::block::ListState;
use crate::store::block::{set_header, write_sm, BlockCache, Writer};
use crate::store::btree;
use crate::store::commit::{meta_fill_target, write_super, Store, Txn};
use crate::store::dev::BlockDev;
use scoutfs_format::alloc::{set_alloc_list_blkno, AllocListBlockHeader};
use scoutfs_format::consts::*;
use scoutfs_format::inode::{Inode, S_IFDIR};
use scoutfs_format::key::{ty, zone};
use scoutfs_format::quorum::QuorumBlock;
use scoutfs_format::super_block::InetAddr;
use scoutfs_format::{AllocListHead, Key, SuperBlock, Timespec};
use std::net::SocketAddr;
use std::sync::Arc;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// The smallest metadata device mkfs accepts: 64 MiB.
pub const MIN_META_BYTES: u64 = 64 << 20;
/// The smallest data device mkfs accepts: 64 MiB.
pub const MIN_DATA_BYTES: u64 = 64 << 20;

/// What to make.
#[derive(Clone, Debug, Default)]
pub struct MkfsOptions {
    /// Quorum slots (slot number, address); at least one.
    pub quorum: Vec<(usize, SocketAddr)>,
    /// Use at most this many bytes of the metadata device.
    pub max_meta_bytes: Option<u64>,
    /// Use at most this many bytes of the data device.
    pub max_data_bytes: Option<u64>,
    /// Overwrite a device that already holds a filesystem.
    pub force: bool,
    /// The volume option `data_alloc_zone_blocks`.
    pub data_alloc_zone_blocks: Option<u64>,
    /// Fixed ids and times for reproducible images in tests.
    pub fsid: Option<u64>,
    pub now: Option<Timespec>,
}

/// What mkfs made.
#[derive(Clone, Debug)]
pub struct MkfsResult {
    pub fsid: u64,
    pub uuid: [u8; 16],
    pub total_meta_blocks: u64,
    pub total_data_blocks: u64,
}

/// Makes a filesystem on the two devices.
pub fn mkfs(
    meta: Arc<dyn BlockDev>,
    data: Arc<dyn BlockDev>,
    opts: &MkfsOptions,
) -> Result<MkfsResult> {
    let qconf = quorum_config(&opts.quorum)?;
    let total_meta_blocks = device_blocks(
        meta.as_ref(),
        opts.max_meta_bytes,
        MIN_META_BYTES,
        BLOCK_LG_SHIFT,
    )?;
    let total_data_blocks = device_blocks(
        data.as_ref(),
        opts.max_data_bytes,
        MIN_DATA_BYTES,
        BLOCK_SM_SHIFT,
    )?;
    if let Some(z) = opts.data_alloc_zone_blocks {
        if z == 0 || z > total_data_blocks || total_data_blocks.div_ceil(z) > DATA_ALLOC_ZONES_MAX {
            return Err(Error::Config(format!(
                "data alloc zone of {z} blocks must be nonzero, fit the data device, and make at most {DATA_ALLOC_ZONES_MAX} zones"
            )));
        }
    }
    if !opts.force {
        refuse_existing(meta.as_ref())?;
        refuse_existing(data.as_ref())?;
    }
    let fsid = opts.fsid.unwrap_or_else(|| os_random_u64() | 1);
    let mut uuid = [0u8; 16];
    uuid[..8].copy_from_slice(&os_random_u64().to_le_bytes());
    uuid[8..].copy_from_slice(&fsid.to_le_bytes());
    let now = opts.now.unwrap_or_else(now_timespec);

    let mut sb = SuperBlock::zeroed();
    sb.hdr.fsid = fsid.into();
    sb.fmt_vers = FORMAT_VERSION.into();
    sb.uuid = uuid;
    sb.next_ino = FIRST_ALLOC_INO.into();
    sb.inode_count = 1.into();
    sb.total_meta_blocks = total_meta_blocks.into();
    sb.total_data_blocks = total_data_blocks.into();
    sb.qconf = qconf;
    if let Some(z) = opts.data_alloc_zone_blocks {
        sb.volopt.set_bits = scoutfs_format::super_block::VOLOPT_DATA_ALLOC_ZONE_BLOCKS_BIT.into();
        sb.volopt.data_alloc_zone_blocks = z.into();
    }

    // An old super block goes first, so an interrupted mkfs leaves none.
    let zeros = vec![0u8; BLOCK_SM_SIZE];
    meta.write_at(&zeros, SUPER_OFFSET)
        .and_then(|_| meta.flush())
        .map_err(|e| Error::io(format!("{}: clearing the super block", meta.name()), e))?;
    write_quorum_blocks(meta.as_ref(), fsid)?;
    let mut data_sb = sb;
    write_super(data.as_ref(), &mut data_sb, 1)?;
    data.flush()
        .map_err(|e| Error::io(format!("{}: flush", data.name()), e))?;

    let cache = Arc::new(BlockCache::new(meta.clone(), fsid, 256));
    let rng = Rng::new(opts.fsid.map_or_else(os_random_u64, |f| f ^ 0x5eed));
    let mut w = bootstrap_writer(cache.clone(), &sb, rng);
    build_trees(&mut w, &mut sb, now)?;
    sb.flags = FLAG_IS_META_BDEV.into();
    // Only the metadata device's copy holds the key (see `auth`).
    let key = crate::cluster::auth::ClusterKey::random()
        .map_err(|e| Error::io("making the cluster key from the OS's entropy", e))?;
    sb.cluster_key = key.bytes();
    let mut store = Store::from_parts(cache, sb);
    store.commit(Txn { w, sb })?;
    Ok(MkfsResult {
        fsid,
        uuid,
        total_meta_blocks,
        total_data_blocks,
    })
}

fn quorum_config(
    slots: &[(usize, SocketAddr)],
) -> Result<scoutfs_format::super_block::QuorumConfig> {
    let mut q = scoutfs_format::super_block::QuorumConfig {
        version: 1.into(),
        ..Default::default()
    };
    if slots.is_empty() {
        return Err(Error::Config(
            "at least one quorum slot is needed (-Q NR,ADDR,PORT)".into(),
        ));
    }
    for (i, &(nr, addr)) in slots.iter().enumerate() {
        if nr >= QUORUM_MAX_SLOTS {
            return Err(Error::Config(format!(
                "quorum slot {nr} is out of range 0..{QUORUM_MAX_SLOTS}"
            )));
        }
        if q.slots[nr].to_socket().is_some() {
            return Err(Error::Config(format!("quorum slot {nr} is given twice")));
        }
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(Error::Config(format!(
                "quorum slot {nr}: {addr} needs a real address and port"
            )));
        }
        if slots[..i].iter().any(|&(_, a)| a == addr) {
            return Err(Error::Config(format!(
                "quorum slot {nr}: address {addr} is used by another slot"
            )));
        }
        q.slots[nr] = InetAddr::from_socket(addr);
    }
    Ok(q)
}

/// The number of blocks of `1 << shift` bytes mkfs will use on `dev`.
fn device_blocks(dev: &dyn BlockDev, max: Option<u64>, min: u64, shift: u32) -> Result<u64> {
    let bytes = max.map_or(dev.size(), |m| m.min(dev.size()));
    if bytes < min {
        let why = if max.is_some_and(|m| m < dev.size()) {
            " (as limited)"
        } else {
            ""
        };
        return Err(Error::Config(format!(
            "{}: {} bytes{why} is too small; at least {} MiB is needed",
            dev.name(),
            bytes,
            min >> 20
        )));
    }
    Ok(bytes >> shift)
}

/// Signatures of filesystems and volumes mkfs won't overwrite unforced:
/// (byte offset, bytes, name).
const SIGNATURES: &[(u64, &[u8], &str)] = &[
    (1080, &[0x53, 0xef], "ext2/3/4"),
    (0, b"XFSB", "XFS"),
    (65600, b"_BHRfS_M", "btrfs"),
    (0, b"LUKS\xba\xbe", "LUKS"),
    (4086, b"SWAPSPACE2", "swap"),
    (510, &[0x55, 0xaa], "a partition table"),
];

fn refuse_existing(dev: &dyn BlockDev) -> Result<()> {
    if let Ok(sb) = crate::store::commit::read_super(dev, true)
        .or_else(|_| crate::store::commit::read_super(dev, false))
    {
        return Err(Error::Config(format!(
            "{}: already holds a scoutfs filesystem (fsid {:#018x}); use --force to overwrite it",
            dev.name(),
            sb.hdr.fsid.get()
        )));
    }
    let mut head = vec![0u8; SUPER_OFFSET as usize + BLOCK_SM_SIZE];
    let n = head.len().min(dev.size() as usize);
    dev.read_at(&mut head[..n], 0)
        .map_err(|e| Error::io(format!("{}: reading", dev.name()), e))?;
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&head[SUPER_OFFSET as usize + 4..SUPER_OFFSET as usize + 8]);
    if u32::from_le_bytes(magic) == magic::SUPER {
        return Err(Error::Config(format!(
            "{}: holds a damaged scoutfs super block; use --force to overwrite it",
            dev.name()
        )));
    }
    for &(off, sig, name) in SIGNATURES {
        let off = off as usize;
        if head.get(off..off + sig.len()) == Some(sig) {
            return Err(Error::Config(format!(
                "{}: appears to hold {name}; use --force to overwrite it",
                dev.name()
            )));
        }
    }
    Ok(())
}

fn write_quorum_blocks(meta: &dyn BlockDev, fsid: u64) -> Result<()> {
    for slot in 0..QUORUM_MAX_SLOTS as u64 {
        let blkno = QUORUM_BLKNO + slot;
        let qb = QuorumBlock::new_zeroed();
        let mut buf = vec![0u8; BLOCK_SM_SIZE];
        buf[..qb.as_bytes().len()].copy_from_slice(qb.as_bytes());
        set_header(&mut buf, magic::QUORUM, fsid, 1, blkno);
        write_sm(meta, blkno, &mut buf)?;
    }
    Ok(())
}

/// A writer whose avail list is one hand-made block at the first metadata
/// blkno, holding the block numbers right after it.
fn bootstrap_writer(cache: Arc<BlockCache>, sb: &SuperBlock, rng: Rng) -> Writer {
    let start = META_DEV_START_BLKNO;
    let usable = sb.total_meta_blocks.get() - start;
    let n = (meta_fill_target(sb) * 2)
        .min(usable - 1)
        .min(ALLOC_LIST_MAX_BLOCKS as u64);
    let mut w = Writer::new(cache, ListState::default(), rng);
    let (r, mut buf) = w.new_block_at(magic::ALLOC_LIST, start);
    for i in 0..n {
        set_alloc_list_blkno(&mut buf, i as usize, start + 1 + i);
    }
    if let Ok((h, _)) = AllocListBlockHeader::mut_from_prefix(&mut buf[..]) {
        h.nr = (n as u32).into();
    }
    w.put(buf);
    let avail = AllocListHead {
        first: r,
        total_nr: n.into(),
        first_nr: (n as u32).into(),
        flags: 0.into(),
    };
    w.lists = ListState::new(avail, AllocListHead::default());
    w
}

fn build_trees(w: &mut Writer, sb: &mut SuperBlock, now: Timespec) -> Result<()> {
    let first_free = META_DEV_START_BLKNO + 1 + w.avail_remaining();
    let total = sb.total_meta_blocks.get();
    if first_free < total {
        extent::free_extent(w, &mut sb.meta_alloc[0], first_free, total - first_free)?;
    }
    let data_total = sb.total_data_blocks.get();
    extent::free_extent(
        w,
        &mut sb.data_alloc,
        DATA_DEV_START_BLKNO,
        data_total - DATA_DEV_START_BLKNO,
    )?;

    let mut root = Inode {
        nlink: 2.into(),
        mode: (S_IFDIR | 0o755).into(),
        next_readdir_pos: DIRENT_FIRST_POS.into(),
        next_xattr_id: 1.into(),
        atime: now,
        ctime: now,
        mtime: now,
        crtime: now,
        ..Default::default()
    };
    root.version = 1.into();
    btree::insert(
        w,
        &mut sb.fs_root,
        &Key::inode(ROOT_INO),
        1,
        0,
        root.as_bytes(),
    )?;
    let index = Key::new(
        zone::INODE_INDEX,
        0,
        ty::INODE_INDEX_META_SEQ,
        0,
        ROOT_INO,
        0,
    );
    btree::insert(w, &mut sb.fs_root, &index, 1, 0, &[])
}
