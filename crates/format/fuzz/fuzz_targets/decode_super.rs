//! The super block decoder: the input raw, and padded or cut to 4 KiB so
//! the fuzzer reaches the field checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scoutfs_format::super_block::SuperBlock;
use scoutfs_format::BLOCK_SM_SIZE;
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    let _ = SuperBlock::decode(data);
    let mut block = vec![0u8; BLOCK_SM_SIZE];
    let n = data.len().min(BLOCK_SM_SIZE);
    block[..n].copy_from_slice(&data[..n]);
    if let Ok(sb) = SuperBlock::decode(&block) {
        assert_eq!(sb.as_bytes(), &block[..sb.as_bytes().len()]);
    }
});
