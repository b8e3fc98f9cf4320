//! The non-cryptographic hashes of the format.
//!
//! FNV-1a (Fowler, Noll, Vo; the "1a" variant xors the byte in before the
//! multiply) in its 32- and 64-bit widths. The format uses it wherever a hash
//! is persisted or decides placement: the low half of directory entry name
//! hashes (`dir`), bloom filter bits (`bloom`) and srch entry hashes (`srch`).
//! The values are part of the format: changing either function changes where
//! items sort and which bloom bits are set, so it needs a format version bump.
//!
//! Both functions are total (any bytes, including none) and never panic.

const FNV32_OFFSET: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;
const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 32-bit FNV-1a of `bytes`.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV32_OFFSET, |h, &b| {
        (h ^ b as u32).wrapping_mul(FNV32_PRIME)
    })
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV64_OFFSET, |h, &b| {
        (h ^ b as u64).wrapping_mul(FNV64_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Published FNV-1a test vectors.
    #[test]
    fn known_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
