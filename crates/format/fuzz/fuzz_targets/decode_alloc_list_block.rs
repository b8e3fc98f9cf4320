//! The alloc list block validator: the input raw, and as the front of a
//! zeroed 64 KiB block.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scoutfs_format::alloc::{alloc_list_blkno, validate_alloc_list_block};
use scoutfs_format::BLOCK_LG_SIZE;

fuzz_target!(|data: &[u8]| {
    let _ = validate_alloc_list_block(data);
    let mut block = vec![0u8; BLOCK_LG_SIZE];
    let n = data.len().min(BLOCK_LG_SIZE);
    block[..n].copy_from_slice(&data[..n]);
    if let Ok((start, nr)) = validate_alloc_list_block(&block) {
        // Every entry a valid block names is inside the block.
        for i in start..start + nr {
            let _ = alloc_list_blkno(&block, i);
        }
    }
});
