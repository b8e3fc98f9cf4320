//! The quorum block decoder: the input raw, and padded or cut to 4 KiB.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scoutfs_format::quorum::QuorumBlock;
use scoutfs_format::BLOCK_SM_SIZE;

fuzz_target!(|data: &[u8]| {
    let _ = QuorumBlock::decode(data);
    let mut block = vec![0u8; BLOCK_SM_SIZE];
    let n = data.len().min(BLOCK_SM_SIZE);
    block[..n].copy_from_slice(&data[..n]);
    if let Ok(qb) = QuorumBlock::decode(&block) {
        assert_eq!(qb.to_block(), block);
    }
});
