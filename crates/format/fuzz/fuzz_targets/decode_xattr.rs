//! The xattr header and first-part decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scoutfs_format::xattr::{decode_xattr_first_part, XattrHeader, XATTR_NR_PARTS_MAX};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = XattrHeader::decode(data) {
        assert!((1..=XATTR_NR_PARTS_MAX).contains(&h.parts()));
    }
    if let Ok((h, name, val)) = decode_xattr_first_part(data) {
        assert_eq!(name.len(), h.name_len as usize);
        assert!(val.len() <= h.val_len.get() as usize);
    }
});
