//! The small fixed-size decoders, chosen by the first input byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scoutfs_format::alloc::{AllocListHead, AllocRoot};
use scoutfs_format::block::{BlockHeader, BlockRef, Timespec};
use scoutfs_format::btree::BtreeRoot;
use scoutfs_format::data::DataExtentVal;
use scoutfs_format::quorum::QuorumEvent;
use scoutfs_format::srch::{SrchEntry, SrchFile};
use zerocopy::IntoBytes;

/// Decodes `data` with `decode` and checks that a success re-encodes to the
/// front of the input.
fn check<T: IntoBytes + zerocopy::Immutable>(
    data: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, scoutfs_format::DecodeError>,
) {
    if let Ok(v) = decode(data) {
        let b = v.as_bytes();
        assert_eq!(b, &data[..b.len()]);
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&which, data)) = input.split_first() else {
        return;
    };
    match which % 11 {
        0 => check(data, BlockHeader::decode),
        1 => check(data, BlockRef::decode),
        2 => check(data, Timespec::decode),
        3 => check(data, BtreeRoot::decode),
        4 => check(data, AllocListHead::decode),
        5 => check(data, AllocRoot::decode),
        6 => check(data, DataExtentVal::decode),
        7 => check(data, SrchEntry::decode),
        8 => check(data, SrchFile::decode),
        9 => check(data, QuorumEvent::decode),
        _ => {
            // The bloom bit helpers on a decoded key.
            if let Ok(k) = scoutfs_format::Key::decode(data) {
                for bit in scoutfs_format::bloom::bloom_bits(&k) {
                    assert!((bit as usize) < scoutfs_format::FOREST_BLOOM_BITS);
                }
            }
        }
    }
});
