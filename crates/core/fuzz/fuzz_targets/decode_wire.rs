//! The wire decoders: a byte stream read in chunks whose sizes come from the
//! input's first byte (whose top bit also asks for the first frame's crc to
//! be made right, so the checks behind it see arbitrary fields), every
//! payload decoded as each direction would, and every success re-encoded to
//! the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scoutfs_core::cluster::net::msg::Response;
use scoutfs_core::cluster::net::wire::*;

/// Decodes a frame's payload every way its command allows and checks that
/// what decodes re-encodes to the same bytes.
fn payloads(f: &Frame) {
    let (h, data) = (f.hdr(), f.data());
    if h.cmd == Cmd::Greeting {
        if let Ok(g) = Greeting::decode(data) {
            // The fields re-encode to the same bytes; the code is the key's.
            let key = scoutfs_core::cluster::auth::ClusterKey::new([0; 32]);
            let again = g.encode(&key, h.id);
            assert_eq!(again[..40], data[..40]);
            assert_eq!(Greeting::authentic(data, &key, h.id), again[40..] == data[40..]);
        }
        return;
    }
    match h.kind {
        Kind::Request => {
            if let Ok(r) = decode_request(h.cmd, data) {
                assert_eq!(encode_request(&r).unwrap(), (h.cmd, data.to_vec()));
            }
            if let Ok(r) = decode_server_request(h.cmd, data) {
                assert_eq!(encode_server_request(&r), (h.cmd, data.to_vec()));
            }
        }
        Kind::Response => {
            if let Ok(r) = decode_response(h.cmd, h.error, data) {
                let (error, bytes) = encode_response(h.cmd, &r).unwrap();
                assert_eq!(bytes, data);
                match r {
                    // Errnos without a code of their own come back as EIO.
                    Response::Error(_) if h.error == Some(ErrCode::Other) => {}
                    _ => assert_eq!(error, h.error),
                }
            }
            if let Ok(r) = decode_client_response(h.cmd, h.error, data) {
                assert_eq!(encode_client_response(h.cmd, &r).unwrap(), data);
            }
        }
    }
}

/// Stores the right crc in the first frame of `stream`, so the checks
/// behind the crc see the fuzzer's bytes.
fn fix_crc(stream: &mut [u8]) {
    if stream.len() < HEADER_LEN {
        return;
    }
    let len = u32::from_le_bytes([stream[32], stream[33], stream[34], stream[35]]) as usize;
    let end = stream.len().min(HEADER_LEN + len);
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&stream[8..HEADER_LEN]),
        &stream[HEADER_LEN..end],
    );
    stream[4..8].copy_from_slice(&crc.to_le_bytes());
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, stream)) = input.split_first() else {
        return;
    };
    let mut stream = stream.to_vec();
    if mode & 0x80 != 0 {
        fix_crc(&mut stream);
    }
    let stream = &stream[..];
    if let Ok(f) = Frame::decode(stream) {
        assert_eq!(f.encode(), stream);
    }
    let chunk = (mode & 0x7f) as usize + 1;
    let mut r = FrameReader::new();
    for mut piece in stream.chunks(chunk) {
        while !piece.is_empty() {
            match r.feed(piece) {
                Ok((used, frame)) => {
                    piece = &piece[used..];
                    if let Some(f) = frame {
                        assert_eq!(Frame::decode(&f.encode()).as_ref(), Ok(&f));
                        payloads(&f);
                    }
                }
                Err(_) => return,
            }
        }
    }
});
