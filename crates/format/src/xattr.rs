//! Extended attributes: how one xattr is split into fs items ("parts").
//!
//! An xattr is stored as the byte string header (8 bytes) + name + value,
//! cut into consecutive parts of at most `XATTR_MAX_PART_SIZE` (896, the
//! largest item value) bytes. Part `p` is the item at key
//! (FS zone, ino, XATTR type, name hash, xattr id, p). So part 0 holds the
//! [`XattrHeader`], the whole name (8 + 255 < 896) and the start of the
//! value; later parts hold the rest of the value. Every part but the last is
//! full. The worst case (255-byte name, 65535-byte value) takes
//! [`XATTR_NR_PARTS_MAX`] = 74 parts.
//!
//! The name hash is [`xattr_name_hash`] (crc32c of the name). The xattr id
//! comes from the inode's `next_xattr_id` and is never reused, so two xattrs
//! whose names collide in the hash still have distinct keys; lookup walks the
//! ids under one hash and compares names.
//!
//! Names are 1..=255 bytes without NUL; values are 0..=65535 bytes.

use crate::block::read_prefix;
use crate::consts::{XATTR_MAX_PART_SIZE, XATTR_NAME_MAX, XATTR_VALUE_MAX};
use crate::error::{check_zero, DecodeError, Result};
use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The header at the start of an xattr's first part.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct XattrHeader {
    /// Length of the whole value, across all parts.
    pub val_len: U16,
    /// Length of the name, 1..=255.
    pub name_len: u8,
    pub pad: [u8; 5],
}

pub const XATTR_HEADER_SIZE: usize = core::mem::size_of::<XattrHeader>();

/// The number of parts an xattr with this name and value length takes.
pub const fn xattr_parts(name_len: usize, val_len: usize) -> usize {
    (XATTR_HEADER_SIZE + name_len + val_len).div_ceil(XATTR_MAX_PART_SIZE)
}

/// The greatest number of parts of any xattr.
pub const XATTR_NR_PARTS_MAX: usize = xattr_parts(XATTR_NAME_MAX, XATTR_VALUE_MAX);
const _: () = assert!(XATTR_NR_PARTS_MAX == 74);
// Part 0 always holds the whole header and name.
const _: () = assert!(XATTR_HEADER_SIZE + XATTR_NAME_MAX <= XATTR_MAX_PART_SIZE);

/// The length of part `part` of an xattr, 0 past the last part.
pub const fn xattr_part_len(name_len: usize, val_len: usize, part: usize) -> usize {
    let total = XATTR_HEADER_SIZE + name_len + val_len;
    let start = part.saturating_mul(XATTR_MAX_PART_SIZE);
    if start >= total {
        return 0;
    }
    let rest = total - start;
    if rest < XATTR_MAX_PART_SIZE {
        rest
    } else {
        XATTR_MAX_PART_SIZE
    }
}

/// The hash of an xattr name in its item keys: crc32c of the name.
pub fn xattr_name_hash(name: &[u8]) -> u64 {
    crc32c::crc32c(name) as u64
}

impl XattrHeader {
    pub fn new(name_len: u8, val_len: u16) -> Self {
        XattrHeader {
            val_len: val_len.into(),
            name_len,
            pad: [0; 5],
        }
    }

    /// Decodes the header from the front of a first part.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let h: XattrHeader = read_prefix("xattr header", bytes)?;
        h.validate()?;
        Ok(h)
    }

    pub fn validate(&self) -> Result<()> {
        let what = "xattr header";
        if self.name_len == 0 {
            return Err(DecodeError::Field {
                what,
                field: "name_len",
                value: 0,
            });
        }
        check_zero(what, 3, &self.pad)
    }

    /// The number of parts of this xattr.
    pub fn parts(&self) -> usize {
        xattr_parts(self.name_len as usize, self.val_len.get() as usize)
    }
}

/// Decodes an xattr's first part: (header, name, the value bytes it holds).
/// The part must be exactly as long as the header says part 0 is.
pub fn decode_xattr_first_part(part: &[u8]) -> Result<(XattrHeader, &[u8], &[u8])> {
    let what = "xattr part 0";
    let h = XattrHeader::decode(part)?;
    let (name_len, val_len) = (h.name_len as usize, h.val_len.get() as usize);
    let want = xattr_part_len(name_len, val_len, 0);
    if part.len() != want {
        return Err(DecodeError::Length {
            what,
            have: part.len(),
            expected: want.to_string(),
        });
    }
    let (name, val) = part[XATTR_HEADER_SIZE..].split_at(name_len);
    if let Some(i) = name.iter().position(|&b| b == 0) {
        return Err(DecodeError::Field {
            what,
            field: "name NUL at",
            value: i as u64,
        });
    }
    Ok((h, name, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_counts() {
        assert_eq!(xattr_parts(1, 0), 1);
        assert_eq!(xattr_parts(4, 884), 1);
        assert_eq!(xattr_parts(4, 885), 2);
        assert_eq!(xattr_parts(255, 65535), 74);
        let (n, v) = (10, 2000);
        let lens: Vec<usize> = (0..4).map(|p| xattr_part_len(n, v, p)).collect();
        assert_eq!(lens, [896, 896, 226, 0]);
        assert_eq!(lens.iter().sum::<usize>(), 8 + n + v);
        assert_eq!(xattr_part_len(n, v, usize::MAX), 0);
    }

    #[test]
    fn first_part_round_trip() {
        let name = b"user.test";
        let val = [7u8; 1000];
        let h = XattrHeader::new(name.len() as u8, val.len() as u16);
        let mut part = h.as_bytes().to_vec();
        part.extend_from_slice(name);
        part.extend_from_slice(&val);
        part.truncate(XATTR_MAX_PART_SIZE);
        let (h2, n2, v2) = decode_xattr_first_part(&part).unwrap();
        assert_eq!((h2, n2), (h, &name[..]));
        assert_eq!(v2.len(), 896 - 8 - name.len());
        assert_eq!(h2.parts(), 2);
        assert!(decode_xattr_first_part(&part[..part.len() - 1]).is_err());
    }

    #[test]
    fn refuses_bad_headers() {
        assert!(XattrHeader::decode(XattrHeader::new(0, 5).as_bytes()).is_err());
        let mut h = XattrHeader::new(3, 5);
        assert!(XattrHeader::decode(h.as_bytes()).is_ok());
        h.pad[4] = 9;
        assert!(XattrHeader::decode(h.as_bytes()).is_err());
        assert!(XattrHeader::decode(&[1, 0, 1]).is_err());
        let mut part = XattrHeader::new(3, 0).as_bytes().to_vec();
        part.extend_from_slice(b"a\0b");
        assert!(decode_xattr_first_part(&part).is_err(), "NUL in name");
    }
}
