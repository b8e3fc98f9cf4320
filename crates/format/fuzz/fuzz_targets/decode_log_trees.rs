//! The log trees and mounted client decoders; decoded values re-encode to
//! their bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scoutfs_format::log_trees::{LogTrees, MountedClientVal};
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    if let Ok(lt) = LogTrees::decode(data) {
        assert_eq!(lt.as_bytes(), data);
    }
    if let Ok(mc) = MountedClientVal::decode(data) {
        assert_eq!(mc.as_bytes(), data);
    }
});
