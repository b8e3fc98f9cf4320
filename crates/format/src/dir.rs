//! Directory entries: the value stored for each link, and the name hash.
//!
//! Every link of a name in a directory to an inode is three fs items with
//! the same value, a 32-byte [`DirentHeader`] followed by the name bytes
//! (the name's length is the value's length minus 32):
//! - `DIRENT` at (dir ino, name hash, readdir pos), found by name lookup;
//! - `READDIR` at (dir ino, readdir pos), walked by readdir in pos order;
//! - `LINK_BACKREF` at (target ino, dir ino, readdir pos), walked to turn an
//!   inode number back into paths.
//!
//! Readdir positions come from the directory inode's `next_readdir_pos`,
//! start at `DIRENT_FIRST_POS` (0 and 1 are `.` and `..`, which are never
//! stored) and are never reused.
//!
//! The name hash is two halves. The low 32 bits are `fnv1a32(name)`, which
//! spreads names well. The high 32 bits are a "fingerprint" of the name's
//! leading bits (see [`dirent_name_fingerprint`]), so that the DIRENT items
//! of a directory sort roughly like their names do under memcmp; that keeps
//! names with common prefixes near each other in the btree. Hash collisions
//! are expected and resolved by comparing names at lookup.
//!
//! A name is 1..=255 bytes without `/` or NUL and is not `.` or `..`.

use crate::block::read_prefix;
use crate::consts::{DIRENT_FIRST_POS, DIRENT_LAST_POS, NAME_LEN};
use crate::error::{check_zero, DecodeError, Result};
use crate::hash::fnv1a32;
use crate::inode::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK};
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Directory entry types, as readdir reports them.
pub const DT_FIFO: u8 = 0;
pub const DT_CHR: u8 = 1;
pub const DT_DIR: u8 = 2;
pub const DT_BLK: u8 = 3;
pub const DT_REG: u8 = 4;
pub const DT_LNK: u8 = 5;
pub const DT_SOCK: u8 = 6;
pub const DT_WHT: u8 = 7;
/// The greatest valid entry type.
pub const DT_MAX: u8 = DT_WHT;

/// The entry type of an inode `mode`, or None if the mode has no file type.
pub const fn dt_from_mode(mode: u32) -> Option<u8> {
    match mode & S_IFMT {
        S_IFIFO => Some(DT_FIFO),
        S_IFCHR => Some(DT_CHR),
        S_IFDIR => Some(DT_DIR),
        S_IFBLK => Some(DT_BLK),
        S_IFREG => Some(DT_REG),
        S_IFLNK => Some(DT_LNK),
        S_IFSOCK => Some(DT_SOCK),
        _ => None,
    }
}

/// The header of a directory entry value; the name follows it.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct DirentHeader {
    /// The inode the name links to.
    pub ino: U64,
    /// [`dirent_name_hash`] of the name.
    pub hash: U64,
    /// The entry's readdir position in its directory.
    pub pos: U64,
    /// `DT_*` type of the target inode.
    pub ty: u8,
    pub pad: [u8; 7],
}

pub const DIRENT_HEADER_SIZE: usize = core::mem::size_of::<DirentHeader>();

impl DirentHeader {
    /// A header for `name`, with its hash filled in.
    pub fn new(ino: u64, name: &[u8], pos: u64, ty: u8) -> Self {
        DirentHeader {
            ino: ino.into(),
            hash: dirent_name_hash(name).into(),
            pos: pos.into(),
            ty,
            pad: [0; 7],
        }
    }
}

/// Whether `name` may be stored as a directory entry name.
pub fn dirent_name_valid(name: &[u8]) -> bool {
    (1..=NAME_LEN).contains(&name.len())
        && !name.iter().any(|&b| b == b'/' || b == 0)
        && name != b"."
        && name != b".."
}

/// 32 bits sampled evenly across the bits of `name`, first bit highest.
///
/// A name of at most 4 bytes is its own fingerprint: its bytes big-endian,
/// zero-filled on the right, so fingerprints of short names sort exactly as
/// the names do. Of a longer name of `n` bits, fingerprint bit `31 - i` is
/// name bit `i * n / 32` (bits numbered from the top of the first byte), so
/// the fingerprint always starts with the name's first bit and earlier bits
/// dominate the comparison, as they do in memcmp. Names that differ only
/// in bits that were not sampled get equal fingerprints; the fnv half of the
/// hash separates them.
pub fn dirent_name_fingerprint(name: &[u8]) -> u32 {
    let nbits = name.len() as u64 * 8;
    if nbits <= 32 {
        let mut be = [0u8; 4];
        be[..name.len()].copy_from_slice(name);
        return u32::from_be_bytes(be);
    }
    (0..32u64).fold(0u32, |fp, i| {
        let bit = i * nbits / 32;
        let byte = name[(bit / 8) as usize];
        (fp << 1) | ((byte >> (7 - bit % 8)) & 1) as u32
    })
}

/// The hash of a directory entry name: fingerprint high, fnv1a32 low.
pub fn dirent_name_hash(name: &[u8]) -> u64 {
    ((dirent_name_fingerprint(name) as u64) << 32) | fnv1a32(name) as u64
}

/// Decodes a directory entry value into its header and name.
pub fn decode_dirent(bytes: &[u8]) -> Result<(DirentHeader, &[u8])> {
    let what = "dirent";
    let hdr: DirentHeader = read_prefix(what, bytes)?;
    let name = &bytes[DIRENT_HEADER_SIZE..];
    if !dirent_name_valid(name) {
        return Err(DecodeError::Field {
            what,
            field: "name",
            value: name.len() as u64,
        });
    }
    check_zero(what, 25, &hdr.pad)?;
    let field = |field, value| Err(DecodeError::Field { what, field, value });
    if hdr.ty > DT_MAX {
        return field("type", hdr.ty as u64);
    }
    if hdr.ino.get() == 0 {
        return field("ino", 0);
    }
    if !(DIRENT_FIRST_POS..=DIRENT_LAST_POS).contains(&hdr.pos.get()) {
        return field("pos", hdr.pos.get());
    }
    if hdr.hash.get() != dirent_name_hash(name) {
        return field("hash", hdr.hash.get());
    }
    Ok((hdr, name))
}

/// The value bytes of a directory entry: the header, then the name.
/// The name must be valid; passing an invalid one is a bug.
pub fn encode_dirent(hdr: &DirentHeader, name: &[u8]) -> Vec<u8> {
    assert!(
        dirent_name_valid(name),
        "invalid dirent name of {} bytes",
        name.len()
    );
    let mut v = Vec::with_capacity(DIRENT_HEADER_SIZE + name.len());
    v.extend_from_slice(hdr.as_bytes());
    v.extend_from_slice(name);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let name = b"hello.txt";
        let hdr = DirentHeader::new(1025, name, 2, DT_REG);
        let bytes = encode_dirent(&hdr, name);
        assert_eq!(bytes.len(), 32 + name.len());
        let (h, n) = decode_dirent(&bytes).unwrap();
        assert_eq!((h, n), (hdr, &name[..]));
    }

    #[test]
    fn refuses_bad_names() {
        let long = vec![b'x'; NAME_LEN + 1];
        let names: [&[u8]; 5] = [b"", b"a/b", b"a\0b", b".", b".."];
        for name in names.iter().copied().chain([&long[..]]) {
            let mut bytes = DirentHeader::new(5, name, 2, DT_REG).as_bytes().to_vec();
            bytes.extend_from_slice(name);
            assert!(decode_dirent(&bytes).is_err(), "{name:?}");
        }
        let max = vec![b'y'; NAME_LEN];
        assert!(decode_dirent(&encode_dirent(&DirentHeader::new(5, &max, 2, 4), &max)).is_ok());
    }

    #[test]
    fn refuses_bad_header_fields() {
        let name = b"n";
        let good = DirentHeader::new(5, name, 3, DT_DIR);
        let bad = [
            DirentHeader {
                ty: DT_MAX + 1,
                ..good
            },
            DirentHeader {
                pad: [0, 0, 0, 1, 0, 0, 0],
                ..good
            },
            DirentHeader {
                ino: 0.into(),
                ..good
            },
            DirentHeader {
                pos: 1.into(),
                ..good
            },
            DirentHeader {
                pos: u64::MAX.into(),
                ..good
            },
            DirentHeader {
                hash: (good.hash.get() ^ 1).into(),
                ..good
            },
        ];
        for h in bad {
            let mut bytes = h.as_bytes().to_vec();
            bytes.extend_from_slice(name);
            assert!(decode_dirent(&bytes).is_err(), "{h:?}");
        }
        assert!(decode_dirent(&good.as_bytes()[..31]).is_err());
    }

    #[test]
    fn short_name_hashes_sort_like_names() {
        let mut names: Vec<&[u8]> = vec![b"a", b"ab", b"abc", b"abcd", b"b", b"ba", b"zz", b"A"];
        names.sort();
        let hashes: Vec<u64> = names.iter().map(|n| dirent_name_hash(n)).collect();
        assert!(hashes.windows(2).all(|w| w[0] < w[1]), "{hashes:x?}");
    }

    #[test]
    fn long_name_fingerprint_follows_leading_bits() {
        // The first sampled bit is the top bit of the first byte.
        let lo = [0x41u8; 200];
        let mut hi = lo;
        hi[0] = 0xc1;
        assert!(dirent_name_fingerprint(&lo) < dirent_name_fingerprint(&hi));
        assert_eq!(dirent_name_fingerprint(&[0xff; 255]), u32::MAX);
        assert_eq!(dirent_name_fingerprint(&[0x01; 9]) >> 31, 0);
    }

    #[test]
    fn dt_of_mode() {
        assert_eq!(dt_from_mode(S_IFDIR | 0o755), Some(DT_DIR));
        assert_eq!(dt_from_mode(S_IFLNK), Some(DT_LNK));
        assert_eq!(dt_from_mode(0o644), None);
    }
}
