//! Property tests of every decoder in the format crate.
//!
//! For each decoder:
//! (a) arbitrary bytes of arbitrary length (biased to lengths around the
//!     structure's size, and to mostly-zero contents that get past the first
//!     checks) never panic;
//! (b) valid encodings decode to the value they were made from, and the same
//!     encodings with single-byte changes or truncation never panic; some
//!     changes that must be refused (padding, order, accounting) are refused.
//!
//! Large contents (64 KiB blocks) come from a seeded generator inside the
//! strategy rather than from proptest's per-byte values, which keeps the
//! whole file to a few seconds in a debug build.

use proptest::prelude::*;
use scoutfs_format::alloc::{
    set_alloc_list_blkno, validate_alloc_list_block, AllocListBlockHeader, AllocListHead, AllocRoot,
};
use scoutfs_format::block::{BlockHeader, BlockRef, Timespec};
use scoutfs_format::bloom::{bloom_set_bit, validate_bloom_block, BloomBlockHeader};
use scoutfs_format::btree::{
    item_bytes, item_off, val_bytes, validate_btree_block, BtreeBlockHeader, BtreeItem, BtreeRoot,
    BTREE_BLOCK_USABLE,
};
use scoutfs_format::consts::*;
use scoutfs_format::data::{DataExtentVal, SEF_OFFLINE, SEF_UNWRITTEN};
use scoutfs_format::dir::{decode_dirent, encode_dirent, DirentHeader};
use scoutfs_format::inode::{Inode, LINK_MAX, S_IFMT};
use scoutfs_format::key::Key;
use scoutfs_format::log_trees::{LogTrees, MountedClientVal};
use scoutfs_format::quorum::{QuorumBlock, QuorumEvent, QUORUM_EVENT_NR};
use scoutfs_format::srch::{srch_max_blocks, SrchEntry, SrchFile, SRCH_MAX_HEIGHT};
use scoutfs_format::super_block::{InetAddr, QuorumConfig, SuperBlock, VolumeOptions};
use scoutfs_format::xattr::{decode_xattr_first_part, xattr_part_len, XattrHeader};
use std::net::{Ipv6Addr, SocketAddr};
use zerocopy::IntoBytes;

/// splitmix64: a small seeded generator for bulk bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------------------
// (a) arbitrary bytes

struct Decoder {
    name: &'static str,
    /// The natural length of its input.
    size: usize,
    ok: fn(&[u8]) -> bool,
}

const fn dec(name: &'static str, size: usize, ok: fn(&[u8]) -> bool) -> Decoder {
    Decoder { name, size, ok }
}

const DECODERS: &[Decoder] = &[
    dec("key", 32, |b| Key::decode(b).is_ok()),
    dec("block header", 32, |b| BlockHeader::decode(b).is_ok()),
    dec("block ref", 16, |b| BlockRef::decode(b).is_ok()),
    dec("timespec", 16, |b| Timespec::decode(b).is_ok()),
    dec("btree root", 24, |b| BtreeRoot::decode(b).is_ok()),
    dec("alloc list head", 32, |b| AllocListHead::decode(b).is_ok()),
    dec("alloc root", 40, |b| AllocRoot::decode(b).is_ok()),
    dec("super", BLOCK_SM_SIZE, |b| SuperBlock::decode(b).is_ok()),
    dec("btree block", BLOCK_LG_SIZE, |b| {
        validate_btree_block(b).is_ok()
    }),
    dec("alloc list block", BLOCK_LG_SIZE, |b| {
        validate_alloc_list_block(b).is_ok()
    }),
    dec("inode", 168, |b| Inode::decode(b).is_ok()),
    dec("dirent", 40, |b| decode_dirent(b).is_ok()),
    dec("xattr header", 8, |b| XattrHeader::decode(b).is_ok()),
    dec("xattr part 0", 40, |b| decode_xattr_first_part(b).is_ok()),
    dec("data extent", 16, |b| DataExtentVal::decode(b).is_ok()),
    dec("log trees", 472, |b| LogTrees::decode(b).is_ok()),
    dec("mounted client", 40, |b| {
        MountedClientVal::decode(b).is_ok()
    }),
    dec("srch entry", 24, |b| SrchEntry::decode(b).is_ok()),
    dec("srch file", 88, |b| SrchFile::decode(b).is_ok()),
    dec("bloom block", BLOCK_LG_SIZE, |b| {
        validate_bloom_block(b).is_ok()
    }),
    dec("quorum event", 40, |b| QuorumEvent::decode(b).is_ok()),
    dec("quorum block", BLOCK_SM_SIZE, |b| {
        QuorumBlock::decode(b).is_ok()
    }),
];

/// Bytes for decoder `d`: a length near its size (or anything up to twice
/// it), filled with random bytes, zeros, or zeros with a few random bytes.
fn arbitrary_input(d: usize, len_pick: u8, len_any: usize, fill: u8, seed: u64) -> Vec<u8> {
    let size = DECODERS[d].size;
    let len = match len_pick % 6 {
        0 => 0,
        1 => size - 1,
        2 | 3 => size,
        4 => size + 1,
        _ => len_any % (2 * size + 1),
    };
    let mut rng = Rng(seed);
    let mut bytes = vec![0u8; len];
    match fill % 3 {
        0 => rng.fill(&mut bytes),
        1 => {}
        _ => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(len as u64) as usize;
                if let Some(b) = bytes.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        d in 0..DECODERS.len(),
        len_pick in any::<u8>(),
        len_any in any::<usize>(),
        fill in any::<u8>(),
        seed in any::<u64>(),
    ) {
        let bytes = arbitrary_input(d, len_pick, len_any, fill, seed);
        let dec = &DECODERS[d];
        let _ = (dec.ok)(&bytes);
        // Anything shorter than a fixed header can never decode.
        if bytes.len() < dec.size.min(8) {
            prop_assert!(!(dec.ok)(&bytes), "{} accepted {} bytes", dec.name, bytes.len());
        }
    }
}

// ---------------------------------------------------------------------------
// (b) valid encodings: strategies

fn timespec() -> impl Strategy<Value = Timespec> {
    (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Timespec::new(s, n))
}

fn block_ref() -> impl Strategy<Value = BlockRef> {
    (any::<u64>(), any::<u64>()).prop_map(|(b, s)| BlockRef::new(b, s))
}

fn block_header() -> impl Strategy<Value = BlockHeader> {
    any::<[u64; 4]>().prop_map(|w| BlockHeader {
        crc: (w[0] as u32).into(),
        magic: ((w[0] >> 32) as u32).into(),
        fsid: w[1].into(),
        seq: w[2].into(),
        blkno: w[3].into(),
    })
}

fn key() -> impl Strategy<Value = Key> {
    (
        any::<u8>(),
        any::<u64>(),
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        any::<u8>(),
    )
        .prop_map(|(z, a, t, b, c, d)| Key::new(z, a, t, b, c, d))
}

fn btree_root() -> impl Strategy<Value = BtreeRoot> {
    prop_oneof![
        Just(BtreeRoot::default()),
        (1..=BTREE_MAX_HEIGHT, 1..=u64::MAX, any::<u64>()).prop_map(|(h, b, s)| BtreeRoot {
            blk: BlockRef::new(b, s),
            height: h,
            pad: [0; 7],
        }),
    ]
}

fn alloc_list_head() -> impl Strategy<Value = AllocListHead> {
    let empty = (0..=ALLOC_FLAG_LOW).prop_map(|f| AllocListHead {
        flags: f.into(),
        ..AllocListHead::default()
    });
    let full = (
        1..=u64::MAX,
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        0..=ALLOC_FLAG_LOW,
    )
        .prop_map(|(b, s, total, first, f)| {
            let cap = total.min(ALLOC_LIST_MAX_BLOCKS as u64);
            AllocListHead {
                first: BlockRef::new(b, s),
                total_nr: total.into(),
                first_nr: ((first as u64 % (cap + 1)) as u32).into(),
                flags: f.into(),
            }
        });
    prop_oneof![empty, full]
}

fn alloc_root() -> impl Strategy<Value = AllocRoot> {
    (any::<u64>(), 0..=ALLOC_FLAG_LOW, btree_root()).prop_map(|(t, f, r)| AllocRoot {
        // An empty tree holds no free blocks.
        total_len: if r.is_empty() { 0 } else { t }.into(),
        flags: f.into(),
        pad: [0; 4],
        root: r,
    })
}

fn inet_addr() -> impl Strategy<Value = InetAddr> {
    prop_oneof![
        Just(InetAddr::default()),
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(a, p)| InetAddr::from_socket(SocketAddr::from((a, p)))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(a, p)| InetAddr::from_socket(SocketAddr::from((Ipv6Addr::from(a), p)))),
    ]
}

fn super_block() -> impl Strategy<Value = SuperBlock> {
    let ids = (
        block_header(),
        any::<u64>(),
        0..=FLAG_IS_META_BDEV,
        any::<[u8; 16]>(),
    );
    let counts = (
        any::<[u64; 3]>(),
        META_DEV_START_BLKNO + 1..,
        DATA_DEV_START_BLKNO + 1..,
    );
    let qconf = (any::<u64>(), proptest::array::uniform15(inet_addr())).prop_map(|(v, slots)| {
        QuorumConfig {
            version: v.into(),
            slots,
        }
    });
    let allocs = (
        [alloc_root(), alloc_root(), alloc_root()],
        [
            alloc_list_head(),
            alloc_list_head(),
            alloc_list_head(),
            alloc_list_head(),
        ],
    );
    let roots = [
        btree_root(),
        btree_root(),
        btree_root(),
        btree_root(),
        btree_root(),
    ];
    let volopt = (0..=1u64, any::<u64>(), any::<[u8; 32]>());
    (ids, counts, qconf, allocs, roots, volopt).prop_map(
        |((hdr, id, flags, uuid), (c, meta, data), qconf, (ar, lh), r, (bits, zone, key))| {
            let mut sb = SuperBlock::zeroed();
            sb.hdr = hdr;
            sb.id = id.into();
            sb.fmt_vers = FORMAT_VERSION.into();
            sb.flags = flags.into();
            sb.uuid = uuid;
            sb.seq = c[0].into();
            sb.next_ino = c[1].into();
            sb.inode_count = c[2].into();
            sb.total_meta_blocks = meta.into();
            sb.total_data_blocks = data.into();
            sb.qconf = qconf;
            sb.meta_alloc = [ar[0], ar[1]];
            sb.data_alloc = ar[2];
            sb.server_meta_avail = [lh[0], lh[1]];
            sb.server_meta_freed = [lh[2], lh[3]];
            [
                sb.fs_root,
                sb.logs_root,
                sb.log_merge,
                sb.mounted_clients,
                sb.srch_root,
            ] = r;
            sb.volopt = VolumeOptions {
                set_bits: bits.into(),
                ..VolumeOptions::default()
            };
            sb.volopt.data_alloc_zone_blocks = (zone * bits).into();
            // The metadata device's copy holds a key (never all zeros); the
            // data device's none.
            if flags == FLAG_IS_META_BDEV {
                sb.cluster_key = key;
                sb.cluster_key[0] |= 1;
            }
            sb
        },
    )
}

fn inode() -> impl Strategy<Value = Inode> {
    let types = prop::sample::select(vec![1u32, 2, 4, 6, 8, 10, 12]);
    let ids = (
        0..=LINK_MAX,
        any::<[u32; 3]>(),
        types,
        0..=0o7777u32,
        0..=3u32,
    );
    let times = [timespec(), timespec(), timespec(), timespec()];
    (any::<[u64; 10]>(), ids, times).prop_map(|(w, (nlink, ugr, ty, perm, flags), t)| Inode {
        size: w[0].into(),
        meta_seq: w[1].into(),
        data_seq: w[2].into(),
        data_version: w[3].into(),
        online_blocks: w[4].into(),
        offline_blocks: w[5].into(),
        next_readdir_pos: w[6].into(),
        next_xattr_id: w[7].into(),
        version: w[8].into(),
        nlink: nlink.into(),
        uid: ugr[0].into(),
        gid: ugr[1].into(),
        mode: (((ty << 12) & S_IFMT) | perm).into(),
        rdev: ugr[2].into(),
        flags: flags.into(),
        atime: t[0],
        ctime: t[1],
        mtime: t[2],
        crtime: t[3],
        proj: w[9].into(),
    })
}

fn name_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1..=255u8, 1..=max).prop_map(|v| {
        v.into_iter()
            .map(|b| if b == b'/' { b'_' } else { b })
            .collect()
    })
}

fn dirent() -> impl Strategy<Value = (DirentHeader, Vec<u8>)> {
    let name = name_bytes(NAME_LEN).prop_filter("dot names", |n| n != b"." && n != b"..");
    (
        1..=u64::MAX,
        DIRENT_FIRST_POS..=DIRENT_LAST_POS,
        0..=7u8,
        name,
    )
        .prop_map(|(ino, pos, ty, name)| (DirentHeader::new(ino, &name, pos, ty), name))
}

/// A first xattr part: (header, name, the value bytes it holds, the part).
fn xattr_part() -> impl Strategy<Value = (XattrHeader, Vec<u8>, Vec<u8>)> {
    (name_bytes(XATTR_NAME_MAX), any::<u16>(), any::<u64>()).prop_map(|(name, val_len, seed)| {
        let h = XattrHeader::new(name.len() as u8, val_len);
        let len = xattr_part_len(name.len(), val_len as usize, 0);
        let mut part = h.as_bytes().to_vec();
        part.extend_from_slice(&name);
        let mut val = vec![0u8; len - part.len()];
        Rng(seed).fill(&mut val);
        part.extend_from_slice(&val);
        (h, name, part)
    })
}

fn data_extent() -> impl Strategy<Value = DataExtentVal> {
    (0..=(SEF_OFFLINE | SEF_UNWRITTEN), DATA_DEV_START_BLKNO..).prop_map(|(flags, b)| {
        let maps = flags & SEF_OFFLINE == 0 || flags & SEF_UNWRITTEN != 0;
        DataExtentVal::new(if maps { b } else { 0 }, flags)
    })
}

fn srch_entry() -> impl Strategy<Value = SrchEntry> {
    any::<[u64; 3]>().prop_map(|w| SrchEntry::new(w[0], w[1], w[2]))
}

fn srch_file() -> impl Strategy<Value = SrchFile> {
    let parts = (
        srch_entry(),
        srch_entry(),
        0..=SRCH_MAX_HEIGHT,
        block_ref(),
        any::<[u64; 2]>(),
    );
    parts.prop_map(|(first, last, height, mut blk, w)| {
        let (blocks, entries) = if height == 0 {
            blk = BlockRef::default();
            (0, 0)
        } else {
            blk.blkno = blk.blkno.get().max(1).into();
            (1 + w[0] % srch_max_blocks(height), w[1])
        };
        SrchFile {
            first,
            last,
            blk,
            blocks: blocks.into(),
            entries: entries.into(),
            height,
            pad: [0; 7],
        }
    })
}

fn log_trees() -> impl Strategy<Value = LogTrees> {
    let lists = (
        alloc_list_head(),
        alloc_list_head(),
        btree_root(),
        block_ref(),
    );
    let data = (
        alloc_root(),
        alloc_root(),
        srch_file(),
        any::<u64>(),
        any::<u64>(),
    );
    let seqs = (any::<[u64; 7]>(), 0..=1u64);
    (lists, data, seqs).prop_map(|((ma, mf, ir, bloom), (da, df, sf, zb, seed), (w, f))| {
        let mut zones = [0u64; 16];
        if zb != 0 {
            let mut rng = Rng(seed);
            zones.iter_mut().for_each(|z| *z = rng.next() & rng.next());
        }
        LogTrees {
            meta_avail: ma,
            meta_freed: mf,
            item_root: ir,
            bloom_ref: bloom,
            data_avail: da,
            data_freed: df,
            srch_file: sf,
            data_alloc_zone_blocks: zb.into(),
            data_alloc_zones: zones.map(Into::into),
            inode_count_delta: w[0].into(),
            get_trans_seq: w[1].max(w[2]).into(),
            commit_trans_seq: w[1].min(w[2]).into(),
            max_item_seq: w[3].into(),
            finalize_seq: w[4].into(),
            rid: w[5].into(),
            nr: w[6].into(),
            flags: f.into(),
        }
    })
}

fn mounted_client() -> impl Strategy<Value = MountedClientVal> {
    (inet_addr(), 0..=1u8).prop_map(|(addr, flags)| MountedClientVal {
        addr,
        flags,
        pad: [0; 7],
    })
}

fn quorum_event(max_write_nr: u64) -> impl Strategy<Value = QuorumEvent> {
    (0..=max_write_nr, any::<[u64; 2]>(), timespec()).prop_map(|(nr, w, ts)| QuorumEvent {
        write_nr: nr.into(),
        rid: w[0].into(),
        term: w[1].into(),
        ts,
    })
}

fn quorum_block() -> impl Strategy<Value = QuorumBlock> {
    (any::<u64>(), block_header()).prop_flat_map(|(write_nr, hdr)| {
        proptest::array::uniform6(quorum_event(write_nr)).prop_map(move |events| QuorumBlock {
            hdr,
            write_nr: write_nr.into(),
            events,
        })
    })
}

// ---------------------------------------------------------------------------
// (b) valid encodings: mutation helpers

/// Single-byte changes (position, nonzero xor) and a truncation length.
fn mutations() -> impl Strategy<Value = (Vec<(usize, u8)>, usize)> {
    (
        proptest::collection::vec((any::<usize>(), 1..=255u8), 1..8),
        any::<usize>(),
    )
}

/// Decodes each single-byte change of `bytes` and a truncation; returns
/// whether the truncated bytes decoded. Panics propagate as failures.
fn mutate(bytes: &[u8], muts: &[(usize, u8)], trunc: usize, ok: impl Fn(&[u8]) -> bool) -> bool {
    let mut b = bytes.to_vec();
    for &(i, x) in muts {
        let i = i % b.len();
        b[i] ^= x;
        let _ = ok(&b);
        b[i] ^= x;
    }
    ok(&bytes[..trunc % bytes.len()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn small_structs_round_trip_and_survive_mutation(
        k in key(), t in timespec(), r in block_ref(), h in block_header(),
        root in btree_root(), head in alloc_list_head(), ar in alloc_root(),
        (muts, trunc) in mutations(),
    ) {
        let dk = k.to_disk();
        prop_assert_eq!(Key::decode(dk.as_bytes()), Ok(k));
        prop_assert!(!mutate(dk.as_bytes(), &muts, trunc, |b| Key::decode(b).is_ok()));
        prop_assert_eq!(Timespec::decode(t.as_bytes()), Ok(t));
        prop_assert!(!mutate(t.as_bytes(), &muts, trunc, |b| Timespec::decode(b).is_ok()));
        prop_assert_eq!(BlockRef::decode(r.as_bytes()), Ok(r));
        prop_assert!(!mutate(r.as_bytes(), &muts, trunc, |b| BlockRef::decode(b).is_ok()));
        prop_assert_eq!(BlockHeader::decode(h.as_bytes()), Ok(h));
        prop_assert!(!mutate(h.as_bytes(), &muts, trunc, |b| BlockHeader::decode(b).is_ok()));
        prop_assert_eq!(BtreeRoot::decode(root.as_bytes()), Ok(root));
        prop_assert!(!mutate(root.as_bytes(), &muts, trunc, |b| BtreeRoot::decode(b).is_ok()));
        prop_assert_eq!(AllocListHead::decode(head.as_bytes()), Ok(head));
        prop_assert!(!mutate(head.as_bytes(), &muts, trunc, |b| AllocListHead::decode(b).is_ok()));
        prop_assert_eq!(AllocRoot::decode(ar.as_bytes()), Ok(ar));
        prop_assert!(!mutate(ar.as_bytes(), &muts, trunc, |b| AllocRoot::decode(b).is_ok()));
    }

    #[test]
    fn key_padding_is_refused(k in key(), i in 27..32usize, x in 1..=255u8) {
        let mut b = k.to_disk().as_bytes().to_vec();
        b[i] ^= x;
        prop_assert!(Key::decode(&b).is_err());
    }

    #[test]
    fn super_block_round_trips(sb in super_block(), (muts, trunc) in mutations()) {
        let mut block = vec![0u8; BLOCK_SM_SIZE];
        block[..sb.as_bytes().len()].copy_from_slice(sb.as_bytes());
        prop_assert_eq!(SuperBlock::decode(&block), Ok(sb));
        prop_assert!(!mutate(&block, &muts, trunc, |b| SuperBlock::decode(b).is_ok()));
        // Mutate inside the struct too, where most of the checks are.
        let in_struct: Vec<_> = muts.iter().map(|&(i, x)| (i % 1488, x)).collect();
        mutate(&block, &in_struct, trunc, |b| SuperBlock::decode(b).is_ok());
        block[BLOCK_SM_SIZE - 1] = 1;
        prop_assert!(SuperBlock::decode(&block).is_err(), "nonzero tail");
    }

    #[test]
    fn inode_round_trips(ino in inode(), (muts, trunc) in mutations()) {
        prop_assert_eq!(Inode::decode(ino.as_bytes()), Ok(ino));
        prop_assert!(!mutate(ino.as_bytes(), &muts, trunc, |b| Inode::decode(b).is_ok()));
    }

    #[test]
    fn dirent_round_trips((hdr, name) in dirent(), (muts, trunc) in mutations()) {
        let bytes = encode_dirent(&hdr, &name);
        prop_assert_eq!(decode_dirent(&bytes), Ok((hdr, &name[..])));
        mutate(&bytes, &muts, trunc, |b| decode_dirent(b).is_ok());
        // Any change to the name is caught by the hash, or the name rules.
        let i = 32 + muts[0].0 % name.len();
        let mut b = bytes.clone();
        b[i] ^= muts[0].1;
        prop_assert!(decode_dirent(&b).is_err());
    }

    #[test]
    fn xattr_round_trips((h, name, part) in xattr_part(), (muts, trunc) in mutations()) {
        prop_assert_eq!(XattrHeader::decode(&part), Ok(h));
        let (h2, n2, v2) = decode_xattr_first_part(&part).unwrap();
        prop_assert_eq!((h2, n2), (h, &name[..]));
        prop_assert_eq!(v2, &part[8 + name.len()..]);
        mutate(&part, &muts, trunc, |b| XattrHeader::decode(b).is_ok());
        prop_assert!(!mutate(&part, &muts, trunc, |b| decode_xattr_first_part(b).is_ok()));
    }

    #[test]
    fn data_extent_round_trips(v in data_extent(), (muts, trunc) in mutations()) {
        prop_assert_eq!(DataExtentVal::decode(v.as_bytes()), Ok(v));
        prop_assert!(!mutate(v.as_bytes(), &muts, trunc, |b| DataExtentVal::decode(b).is_ok()));
    }

    #[test]
    fn srch_round_trips(e in srch_entry(), f in srch_file(), (muts, trunc) in mutations()) {
        prop_assert_eq!(SrchEntry::decode(e.as_bytes()), Ok(e));
        prop_assert!(!mutate(e.as_bytes(), &muts, trunc, |b| SrchEntry::decode(b).is_ok()));
        prop_assert_eq!(SrchFile::decode(f.as_bytes()), Ok(f));
        prop_assert!(!mutate(f.as_bytes(), &muts, trunc, |b| SrchFile::decode(b).is_ok()));
    }

    #[test]
    fn log_trees_round_trip(
        lt in log_trees(), mc in mounted_client(), (muts, trunc) in mutations(),
    ) {
        prop_assert_eq!(LogTrees::decode(lt.as_bytes()), Ok(lt));
        prop_assert!(!mutate(lt.as_bytes(), &muts, trunc, |b| LogTrees::decode(b).is_ok()));
        prop_assert_eq!(MountedClientVal::decode(mc.as_bytes()), Ok(mc));
        let ok = |b: &[u8]| MountedClientVal::decode(b).is_ok();
        prop_assert!(!mutate(mc.as_bytes(), &muts, trunc, ok));
    }

    #[test]
    fn quorum_round_trips(qb in quorum_block(), (muts, trunc) in mutations()) {
        let block = qb.to_block();
        prop_assert_eq!(QuorumBlock::decode(&block), Ok(qb));
        prop_assert!(!mutate(&block, &muts, trunc, |b| QuorumBlock::decode(b).is_ok()));
        let in_struct: Vec<_> = muts.iter().map(|&(i, x)| (i % 280, x)).collect();
        mutate(&block, &in_struct, trunc, |b| QuorumBlock::decode(b).is_ok());
        for e in &qb.events {
            prop_assert_eq!(QuorumEvent::decode(e.as_bytes()), Ok(*e));
            prop_assert!(!mutate(e.as_bytes(), &muts, trunc, |b| QuorumEvent::decode(b).is_ok()));
        }
        prop_assert_eq!(qb.events.len(), QUORUM_EVENT_NR);
    }
}

// ---------------------------------------------------------------------------
// 64 KiB blocks

/// A valid btree block of `level` built from `seed`: sorted unique keys,
/// values packed down from the end in a random order.
fn build_btree_block(level: u8, want_items: usize, big_vals: bool, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut keys = std::collections::BTreeSet::new();
    // A narrow key space makes neighbours share leading fields.
    let narrow = rng.below(2) == 0;
    while keys.len() < want_items {
        let f = |r: &mut Rng| if narrow { r.below(4) } else { r.next() };
        let k = Key::new(
            f(&mut rng) as u8,
            f(&mut rng),
            f(&mut rng) as u8,
            f(&mut rng),
            0,
            0,
        );
        keys.insert(Key {
            third: rng.next(),
            fourth: rng.next() as u8,
            ..k
        });
    }
    let mut lens = Vec::new();
    let mut total = 0;
    for _ in &keys {
        let len = match (level, big_vals) {
            (1.., _) => 16,
            (0, true) => rng.below(MAX_VAL_SIZE as u64 + 1) as usize,
            (0, false) => [0, 1, 8, 13, 16][rng.below(5) as usize],
        };
        if total + item_bytes(len) > BTREE_BLOCK_USABLE {
            break;
        }
        total += item_bytes(len);
        lens.push(len);
    }
    let nr = lens.len();
    let mut block = vec![0u8; BLOCK_LG_SIZE];
    rng.fill(&mut block[item_off(nr)..]);
    // Place values in a random order; zero-length values have no place.
    let mut order: Vec<usize> = (0..nr).collect();
    for i in (1..nr).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut offs = vec![0usize; nr];
    let mut low = BLOCK_LG_SIZE;
    for &i in &order {
        if lens[i] > 0 {
            low -= val_bytes(lens[i]);
            offs[i] = low;
        }
    }
    for (i, k) in keys.iter().take(nr).enumerate() {
        let item = BtreeItem {
            key: k.to_disk(),
            seq: if level == 0 { rng.next() } else { 0 }.into(),
            val_off: (offs[i] as u16).into(),
            val_len: (lens[i] as u16).into(),
            flags: if level == 0 { rng.below(2) as u8 } else { 0 },
            pad: [0; 3],
        };
        block[item_off(i)..item_off(i + 1)].copy_from_slice(item.as_bytes());
    }
    let hdr = BtreeBlockHeader {
        hdr: BlockHeader {
            magic: magic::BTREE.into(),
            seq: rng.next().into(),
            ..Default::default()
        },
        nr_items: (nr as u16).into(),
        total_item_bytes: (total as u16).into(),
        mid_free_len: ((low - item_off(nr)) as u16).into(),
        level,
        pad: [0; 9],
    };
    block[..48].copy_from_slice(hdr.as_bytes());
    block
}

/// Byte positions where a change matters most: the headers and item array,
/// then anywhere.
fn pick_offsets(nr_items: usize, muts: &[(usize, u8)]) -> Vec<(usize, u8)> {
    let hot = item_off(nr_items) + 64;
    muts.iter()
        .enumerate()
        .map(|(j, &(i, x))| {
            (
                if j % 4 == 3 {
                    i % BLOCK_LG_SIZE
                } else {
                    i % hot
                },
                x,
            )
        })
        .collect()
}

fn nr_items(block: &[u8]) -> usize {
    u16::from_le_bytes([block[32], block[33]]) as usize
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn btree_blocks_validate_and_survive_mutation(
        level in prop_oneof![Just(0u8), 1..BTREE_MAX_HEIGHT],
        want in prop_oneof![0..4usize, 4..100usize, 100..1400usize],
        big_vals in any::<bool>(),
        seed in any::<u64>(),
        (muts, trunc) in mutations(),
    ) {
        let block = build_btree_block(level, want, big_vals, seed);
        prop_assert_eq!(validate_btree_block(&block), Ok(level));
        let nr = nr_items(&block);
        let muts = pick_offsets(nr, &muts);
        prop_assert!(!mutate(&block, &muts, trunc, |b| validate_btree_block(b).is_ok()));

        let mut bad = block.clone();
        bad[39 + seed as usize % 9] = 1;
        prop_assert!(validate_btree_block(&bad).is_err(), "header padding");
        // mid_free_len may undercount the gap to the lowest value (holes), never exceed it.
        let gap = u16::from_le_bytes([block[36], block[37]]);
        let mut bad = block.clone();
        bad[36..38].copy_from_slice(&(gap + 8).to_le_bytes());
        prop_assert!(validate_btree_block(&bad).is_err(), "mid_free_len past the lowest value");
        if gap >= 8 {
            let mut less = block.clone();
            less[36..38].copy_from_slice(&(gap - 8).to_le_bytes());
            prop_assert_eq!(validate_btree_block(&less), Ok(level), "mid_free_len below the gap");
        }
        if nr >= 1 {
            let i = seed as usize % nr;
            let mut bad = block.clone();
            bad[item_off(i) + 45 + (seed >> 32) as usize % 3] = 1;
            prop_assert!(validate_btree_block(&bad).is_err(), "item padding");
            let mut bad = block.clone();
            bad[34] ^= 8;
            prop_assert!(validate_btree_block(&bad).is_err(), "total_item_bytes");
        }
        if nr >= 2 {
            let i = seed as usize % (nr - 1);
            let mut bad = block.clone();
            let (a, b) = (item_off(i), item_off(i + 1));
            let first: Vec<u8> = bad[a..a + 32].to_vec();
            bad.copy_within(b..b + 32, a);
            bad[b..b + 32].copy_from_slice(&first);
            prop_assert!(validate_btree_block(&bad).is_err(), "key order");
        }
    }

    #[test]
    fn alloc_list_blocks_validate_and_survive_mutation(
        start in 0..=ALLOC_LIST_MAX_BLOCKS,
        nr_pick in any::<usize>(),
        hdr in block_header(),
        next in block_ref(),
        seed in any::<u64>(),
        (muts, trunc) in mutations(),
    ) {
        let nr = nr_pick % (ALLOC_LIST_MAX_BLOCKS - start + 1);
        let mut block = vec![0u8; BLOCK_LG_SIZE];
        let h = AllocListBlockHeader {
            hdr,
            next,
            start: (start as u32).into(),
            nr: (nr as u32).into(),
        };
        block[..56].copy_from_slice(h.as_bytes());
        let mut rng = Rng(seed);
        for i in start..start + nr {
            set_alloc_list_blkno(&mut block, i, rng.next());
        }
        prop_assert_eq!(validate_alloc_list_block(&block), Ok((start, nr)));
        let muts: Vec<_> = muts.iter().map(|&(i, x)| (i % 64, x)).collect();
        prop_assert!(!mutate(&block, &muts, trunc, |b| validate_alloc_list_block(b).is_ok()));
        block[51] = 0x80;
        prop_assert!(validate_alloc_list_block(&block).is_err(), "start past the array");
    }

    #[test]
    fn bloom_blocks_validate_and_survive_mutation(
        hdr in block_header(),
        nr_bits in prop_oneof![0..10u32, 10..5000u32],
        seed in any::<u64>(),
        (muts, trunc) in mutations(),
    ) {
        let mut block = vec![0u8; BLOCK_LG_SIZE];
        let h = BloomBlockHeader { hdr, total_set: 0.into() };
        block[..40].copy_from_slice(h.as_bytes());
        let mut rng = Rng(seed);
        let set = (0..nr_bits)
            .filter(|_| bloom_set_bit(&mut block, rng.below(FOREST_BLOOM_BITS as u64) as u32))
            .count() as u64;
        let want = BloomBlockHeader { hdr, total_set: set.into() };
        prop_assert_eq!(validate_bloom_block(&block), Ok(want));
        // A changed count, or a change of how many bits are set, never validates.
        for &(i, x) in &muts {
            let i = 32 + i % (BLOCK_LG_SIZE - 32);
            let changes_count = i < 40 || (block[i] ^ x).count_ones() != block[i].count_ones();
            block[i] ^= x;
            prop_assert_eq!(validate_bloom_block(&block).is_ok(), !changes_count);
            block[i] ^= x;
        }
        prop_assert!(!mutate(&block, &muts, trunc, |b| validate_bloom_block(b).is_ok()));
    }
}
