//! Bloom filter blocks: which cluster locks a log btree holds items under.
//!
//! Each log btree (`LogTrees::bloom_ref`) has one 64 KiB bloom block: a
//! 40-byte [`BloomBlockHeader`] and then `FOREST_BLOOM_BITS` (523,968) bits.
//! When a mount first writes an item covered by a lock into a log tree, it
//! sets the [`bloom_bits`] of that lock's start key. A reader looking for
//! items under a lock skips every log tree whose bloom block lacks one of the
//! key's bits; a false positive only costs a btree walk.
//!
//! Bits are numbered from bit 0 of the first byte after the header, least
//! significant bit first within each byte. `total_set` counts the set bits,
//! so a writer can tell when a filter is too full to help.
//!
//! The bit positions are part of the format: h = `fnv1a64` of the key's 32
//! on-disk bytes; for each of the `FOREST_BLOOM_NRS` (3) functions the bit
//! is `(h as u32) % FOREST_BLOOM_BITS`, then `h >>= FOREST_BLOOM_FUNC_BITS`.

use crate::block::{read_prefix, BlockHeader};
use crate::consts::{BLOCK_LG_SIZE, FOREST_BLOOM_BITS, FOREST_BLOOM_FUNC_BITS, FOREST_BLOOM_NRS};
use crate::error::{DecodeError, Result};
use crate::hash::fnv1a64;
use crate::key::Key;
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The header of a bloom block; the bit array follows it to the block's end.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct BloomBlockHeader {
    pub hdr: BlockHeader,
    /// The number of set bits.
    pub total_set: U64,
}

pub const BLOOM_BLOCK_HEADER_SIZE: usize = core::mem::size_of::<BloomBlockHeader>();

/// The bloom bits of `key`, one per hash function.
pub fn bloom_bits(key: &Key) -> [u32; FOREST_BLOOM_NRS] {
    let mut h = fnv1a64(key.to_disk().as_bytes());
    let mut bits = [0u32; FOREST_BLOOM_NRS];
    for b in bits.iter_mut() {
        *b = (h as u32) % FOREST_BLOOM_BITS as u32;
        h >>= FOREST_BLOOM_FUNC_BITS;
    }
    bits
}

fn bit_place(bit: u32) -> (usize, u8) {
    assert!(
        (bit as usize) < FOREST_BLOOM_BITS,
        "bloom bit {bit} out of range"
    );
    (BLOOM_BLOCK_HEADER_SIZE + bit as usize / 8, 1 << (bit % 8))
}

/// Whether `bit` is set in a 64 KiB bloom block. A bit out of range is a bug.
pub fn bloom_bit_is_set(block: &[u8], bit: u32) -> bool {
    let (off, mask) = bit_place(bit);
    block[off] & mask != 0
}

/// Sets `bit` in a 64 KiB bloom block, counting it in `total_set` if it was
/// clear; returns whether it was clear.
pub fn bloom_set_bit(block: &mut [u8], bit: u32) -> bool {
    let (off, mask) = bit_place(bit);
    if block[off] & mask != 0 {
        return false;
    }
    block[off] |= mask;
    let mut total = [0u8; 8];
    total.copy_from_slice(&block[32..40]);
    let total = u64::from_le_bytes(total).saturating_add(1);
    block[32..40].copy_from_slice(&total.to_le_bytes());
    true
}

/// Whether every bit of `key` is set: false means no item under it exists.
pub fn bloom_may_contain(block: &[u8], key: &Key) -> bool {
    bloom_bits(key).iter().all(|&b| bloom_bit_is_set(block, b))
}

/// Checks a bloom block's length and that `total_set` counts its set bits.
/// The block header is checked by the block reader.
pub fn validate_bloom_block(block: &[u8]) -> Result<BloomBlockHeader> {
    let what = "bloom block";
    if block.len() != BLOCK_LG_SIZE {
        return Err(DecodeError::Length {
            what,
            have: block.len(),
            expected: "65536".into(),
        });
    }
    let h: BloomBlockHeader = read_prefix(what, block)?;
    let set: u64 = block[BLOOM_BLOCK_HEADER_SIZE..]
        .iter()
        .map(|b| b.count_ones() as u64)
        .sum();
    if set != h.total_set.get() {
        return Err(DecodeError::Field {
            what,
            field: "total_set",
            value: h.total_set.get(),
        });
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{ty, zone};

    #[test]
    fn bits_follow_the_formula() {
        let k = Key::new(zone::FS, 1024, ty::INODE, 0, 0, 0);
        let h = fnv1a64(k.to_disk().as_bytes());
        let bits = bloom_bits(&k);
        assert_eq!(bits[0], (h as u32) % 523_968);
        assert_eq!(bits[1], ((h >> 19) as u32) % 523_968);
        assert_eq!(bits[2], ((h >> 38) as u32) % 523_968);
        assert_ne!(bloom_bits(&Key::inode(1025)), bits);
    }

    #[test]
    fn set_test_and_validate() {
        let mut block = vec![0u8; BLOCK_LG_SIZE];
        let k = Key::inode(77);
        assert!(!bloom_may_contain(&block, &k));
        let bits = bloom_bits(&k);
        let newly: usize = bits
            .iter()
            .filter(|&&b| bloom_set_bit(&mut block, b))
            .count();
        assert!(bloom_may_contain(&block, &k));
        assert!(!bloom_set_bit(&mut block, bits[0]), "already set");
        assert!(bloom_set_bit(&mut block, FOREST_BLOOM_BITS as u32 - 1));
        let h = validate_bloom_block(&block).unwrap();
        assert_eq!(h.total_set.get(), newly as u64 + 1);
        block[BLOCK_LG_SIZE - 1] ^= 0x40;
        assert!(validate_bloom_block(&block).is_err(), "count disagrees");
        assert!(validate_bloom_block(&block[..1000]).is_err());
    }
}
