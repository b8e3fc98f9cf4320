//! The directory entry decoder; a decoded entry re-encodes to its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scoutfs_format::dir::{decode_dirent, encode_dirent};

fuzz_target!(|data: &[u8]| {
    if let Ok((hdr, name)) = decode_dirent(data) {
        assert_eq!(encode_dirent(&hdr, name), data);
    }
});
