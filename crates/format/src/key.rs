//! Item keys: 32 bytes on disk, compared as (zone, first, type, second,
//! third, fourth).
//!
//! The on-disk byte order (first, second, third, fourth, zone, type, pad)
//! differs from the sort order; [`Key`] holds the fields in sort order so the
//! derived `Ord` is the format's order. All zeros is the smallest key and
//! all ones (with zero padding) the greatest.

use crate::block::read_prefix;
use crate::error::{check_zero, Result};
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Key zones: the top level of the sort order.
pub mod zone {
    pub const INODE_INDEX: u8 = 4;
    pub const ORPHAN: u8 = 8;
    pub const QUOTA: u8 = 10;
    pub const XATTR_TOTL: u8 = 12;
    pub const XATTR_INDX: u8 = 14;
    pub const FS: u8 = 16;
    pub const LOCK: u8 = 20;
    pub const LOG_TREES: u8 = 24;
    pub const MOUNTED_CLIENT: u8 = 28;
    pub const SRCH: u8 = 32;
    pub const FREE_EXTENT_BLKNO: u8 = 36;
    pub const FREE_EXTENT_ORDER: u8 = 40;
    pub const LOG_MERGE_STATUS: u8 = 44;
    pub const LOG_MERGE_RANGE: u8 = 48;
    pub const LOG_MERGE_REQUEST: u8 = 52;
    pub const LOG_MERGE_COMPLETE: u8 = 56;
    pub const LOG_MERGE_FREEING: u8 = 60;
}

/// Item types within a zone.
pub mod ty {
    /// INODE_INDEX zone.
    pub const INODE_INDEX_META_SEQ: u8 = 4;
    pub const INODE_INDEX_DATA_SEQ: u8 = 8;
    /// ORPHAN zone.
    pub const ORPHAN: u8 = 4;
    /// QUOTA zone.
    pub const QUOTA_RULE: u8 = 4;
    /// FS zone.
    pub const INODE: u8 = 4;
    pub const XATTR: u8 = 8;
    pub const DIRENT: u8 = 12;
    pub const READDIR: u8 = 16;
    pub const LINK_BACKREF: u8 = 20;
    pub const SYMLINK: u8 = 24;
    pub const DATA_EXTENT: u8 = 28;
    /// LOCK zone (lock names only, never stored).
    pub const RENAME: u8 = 4;
    /// SRCH zone.
    pub const SRCH_LOG: u8 = 4;
    pub const SRCH_BLOCKS: u8 = 8;
    pub const SRCH_PENDING: u8 = 12;
    pub const SRCH_BUSY: u8 = 16;
}

/// A key in sort order. Field order matters: the derived `Ord` is the format's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub zone: u8,
    pub first: u64,
    pub ty: u8,
    pub second: u64,
    pub third: u64,
    pub fourth: u8,
}

impl Key {
    pub const MIN: Key = Key {
        zone: 0,
        first: 0,
        ty: 0,
        second: 0,
        third: 0,
        fourth: 0,
    };
    pub const MAX: Key = Key {
        zone: u8::MAX,
        first: u64::MAX,
        ty: u8::MAX,
        second: u64::MAX,
        third: u64::MAX,
        fourth: u8::MAX,
    };

    pub const fn new(zone: u8, first: u64, ty: u8, second: u64, third: u64, fourth: u8) -> Key {
        Key {
            zone,
            first,
            ty,
            second,
            third,
            fourth,
        }
    }

    /// The key of an inode item.
    pub const fn inode(ino: u64) -> Key {
        Key::new(zone::FS, ino, ty::INODE, 0, 0, 0)
    }

    /// The next key in sort order, saturating at [`Key::MAX`].
    pub fn inc(&self) -> Key {
        let mut k = *self;
        k.fourth = k.fourth.wrapping_add(1);
        if k.fourth != 0 {
            return k;
        }
        k.third = k.third.wrapping_add(1);
        if k.third != 0 {
            return k;
        }
        k.second = k.second.wrapping_add(1);
        if k.second != 0 {
            return k;
        }
        k.ty = k.ty.wrapping_add(1);
        if k.ty != 0 {
            return k;
        }
        k.first = k.first.wrapping_add(1);
        if k.first != 0 {
            return k;
        }
        match k.zone.checked_add(1) {
            Some(z) => Key {
                zone: z,
                ..Key::MIN
            },
            None => Key::MAX,
        }
    }

    /// The previous key in sort order, saturating at [`Key::MIN`].
    pub fn dec(&self) -> Key {
        let mut k = *self;
        k.fourth = k.fourth.wrapping_sub(1);
        if k.fourth != u8::MAX {
            return k;
        }
        k.third = k.third.wrapping_sub(1);
        if k.third != u64::MAX {
            return k;
        }
        k.second = k.second.wrapping_sub(1);
        if k.second != u64::MAX {
            return k;
        }
        k.ty = k.ty.wrapping_sub(1);
        if k.ty != u8::MAX {
            return k;
        }
        k.first = k.first.wrapping_sub(1);
        if k.first != u64::MAX {
            return k;
        }
        match k.zone.checked_sub(1) {
            Some(z) => Key {
                zone: z,
                ..Key::MAX
            },
            None => Key::MIN,
        }
    }

    pub fn to_disk(&self) -> DiskKey {
        DiskKey {
            first: self.first.into(),
            second: self.second.into(),
            third: self.third.into(),
            fourth: self.fourth,
            zone: self.zone,
            ty: self.ty,
            pad: [0; 5],
        }
    }

    /// Decodes a key from the front of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Key> {
        let d: DiskKey = read_prefix("key", bytes)?;
        d.to_key()
    }
}

impl core::fmt::Display for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}.{}.{}",
            self.zone, self.first, self.ty, self.second, self.third, self.fourth
        )
    }
}

/// A key as stored: 32 bytes.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct DiskKey {
    pub first: U64,
    pub second: U64,
    pub third: U64,
    pub fourth: u8,
    pub zone: u8,
    pub ty: u8,
    pub pad: [u8; 5],
}

impl DiskKey {
    /// The key, after checking that its padding is zero.
    pub fn to_key(&self) -> Result<Key> {
        check_zero("key", 27, &self.pad)?;
        Ok(self.to_key_unchecked())
    }

    /// The key without the padding check, for blocks already verified.
    pub fn to_key_unchecked(&self) -> Key {
        Key {
            zone: self.zone,
            first: self.first.get(),
            ty: self.ty,
            second: self.second.get(),
            third: self.third.get(),
            fourth: self.fourth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_order_is_zone_first_type_second_third_fourth() {
        let a = Key::new(1, 5, 9, 0, 0, 0);
        let b = Key::new(1, 6, 0, 0, 0, 0);
        assert!(a < b, "first outranks type");
        let c = Key::new(2, 0, 0, 0, 0, 0);
        assert!(b < c, "zone outranks first");
        let d = Key::new(1, 5, 9, 1, 0, 0);
        assert!(a < d);
        assert!(Key::new(1, 5, 9, 1, 0, 7) < Key::new(1, 5, 9, 1, 1, 0));
    }

    #[test]
    fn inc_dec_round_trip_and_saturate() {
        let keys = [
            Key::MIN,
            Key::new(3, u64::MAX, 255, u64::MAX, u64::MAX, 255),
            Key::new(0, 0, 0, 0, 0, 255),
            Key::new(9, 1, 2, 3, 4, 5),
        ];
        for k in keys {
            assert!(k.inc() > k);
            assert_eq!(k.inc().dec(), k);
        }
        assert_eq!(Key::MAX.inc(), Key::MAX);
        assert_eq!(Key::MIN.dec(), Key::MIN);
    }

    #[test]
    fn disk_round_trip() {
        let k = Key::new(16, 77, 12, 0xdead, 0xbeef, 3);
        let d = k.to_disk();
        assert_eq!(Key::decode(d.as_bytes()).unwrap(), k);
        let mut bytes = d.as_bytes().to_vec();
        bytes[30] = 1;
        assert!(Key::decode(&bytes).is_err(), "nonzero padding is refused");
    }
}
