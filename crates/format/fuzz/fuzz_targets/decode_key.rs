//! The key decoder; a decoded key re-encodes to the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scoutfs_format::Key;
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = Key::decode(data) {
        assert_eq!(k.to_disk().as_bytes(), &data[..32]);
        assert!(k.inc() >= k && k.dec() <= k);
    }
});
