//! The inode decoder; a decoded inode re-encodes to its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scoutfs_format::Inode;
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    if let Ok(ino) = Inode::decode(data) {
        assert_eq!(ino.as_bytes(), data);
    }
});
