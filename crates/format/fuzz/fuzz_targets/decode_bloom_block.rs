//! The bloom block validator: the input raw, and as the front of a zeroed
//! 64 KiB block.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scoutfs_format::bloom::validate_bloom_block;
use scoutfs_format::BLOCK_LG_SIZE;

fuzz_target!(|data: &[u8]| {
    let _ = validate_bloom_block(data);
    let mut block = vec![0u8; BLOCK_LG_SIZE];
    let n = data.len().min(BLOCK_LG_SIZE);
    block[..n].copy_from_slice(&data[..n]);
    let _ = validate_bloom_block(&block);
});
