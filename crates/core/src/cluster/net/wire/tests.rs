//! Tests of the wire codec: field offsets, round trips and refusals.

use super::*;
use core::mem::offset_of;
use scoutfs_format::Key;

fn hdr(kind: Kind, cmd: Cmd, error: Option<ErrCode>) -> FrameHeader {
    FrameHeader {
        seq: 7,
        recv_seq: 3,
        id: 5,
        kind,
        cmd,
        error,
    }
}

fn lock_msg() -> LockMsg {
    LockMsg {
        key: Key::new(16, 1024, 0, 0, 0, 0),
        write_seq: 99,
        old_mode: LockMode::Read,
        new_mode: LockMode::Write,
    }
}

#[test]
fn header_offsets_match_the_spec() {
    assert_eq!(offset_of!(RawHeader, crc), 4);
    assert_eq!(offset_of!(RawHeader, seq), 8);
    assert_eq!(offset_of!(RawHeader, recv_seq), 16);
    assert_eq!(offset_of!(RawHeader, id), 24);
    assert_eq!(offset_of!(RawHeader, data_len), 32);
    assert_eq!(offset_of!(RawHeader, kind), 36);
    assert_eq!(offset_of!(RawHeader, cmd), 37);
    assert_eq!(offset_of!(RawHeader, error), 38);
    assert_eq!(offset_of!(RawHeader, pad), 39);
    assert_eq!(offset_of!(WireLock, write_seq), 32);
    assert_eq!(offset_of!(WireLock, old_mode), 40);
    assert_eq!(offset_of!(WireLock, pad), 42);
    assert_eq!(&WIRE_MAGIC.to_le_bytes(), b"SCNF");
}

#[test]
fn frame_round_trip() {
    let f = Frame::new(
        hdr(Kind::Request, Cmd::Lock, None),
        encode_lock(&lock_msg()),
    )
    .unwrap();
    let bytes = f.encode();
    assert_eq!(bytes.len(), HEADER_LEN + LOCK_LEN);
    assert_eq!(Frame::decode(&bytes), Ok(f));
}

#[test]
fn frame_new_refuses_invalid_headers() {
    let mut h = hdr(Kind::Request, Cmd::Statfs, None);
    h.seq = 0;
    assert!(Frame::new(h, vec![]).is_err());
    let mut h = hdr(Kind::Request, Cmd::Statfs, None);
    h.id = 0;
    assert!(Frame::new(h, vec![]).is_err());
    let h = hdr(Kind::Request, Cmd::Statfs, Some(ErrCode::Io));
    assert!(Frame::new(h, vec![]).is_err());
    let h = hdr(Kind::Response, Cmd::Statfs, Some(ErrCode::Io));
    assert!(Frame::new(h, vec![]).is_ok());
    let h = hdr(Kind::Response, Cmd::Statfs, None);
    assert!(Frame::new(h, vec![0; MAX_FRAME_DATA + 1]).is_err());
    assert!(Frame::new(h, vec![0; MAX_FRAME_DATA]).is_ok());
}

/// Rewrites a header byte and fixes the crc, so only the field is wrong.
fn with_byte(f: &Frame, offset: usize, v: u8) -> Vec<u8> {
    let mut b = f.encode();
    b[offset] = v;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[8..HEADER_LEN]), &b[HEADER_LEN..]);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn decode_refuses_bad_fields_with_good_crcs() {
    let f = Frame::new(hdr(Kind::Request, Cmd::Statfs, None), vec![]).unwrap();
    let field_err = |b: &[u8], want: &str| match Frame::decode(b) {
        Err(WireError::Header { field, .. }) => assert_eq!(field, want),
        other => panic!("{want}: {other:?}"),
    };
    field_err(&with_byte(&f, 36, 0), "kind");
    field_err(&with_byte(&f, 36, 3), "kind");
    field_err(&with_byte(&f, 37, 9), "cmd");
    field_err(&with_byte(&f, 37, 23), "cmd");
    field_err(&with_byte(&f, 38, 8), "error");
    field_err(&with_byte(&f, 38, 3), "error");
    field_err(&with_byte(&f, 39, 1), "pad");
    let mut b = with_byte(&f, 8, 0);
    b[4..8].copy_from_slice(&[0; 4]);
    assert!(matches!(Frame::decode(&b), Err(WireError::Crc { .. })));
}

#[test]
fn reader_refuses_oversize_as_soon_as_the_header_is_read() {
    let f = Frame::new(hdr(Kind::Request, Cmd::Statfs, None), vec![]).unwrap();
    let mut b = f.encode();
    b[32..36].copy_from_slice(&(MAX_FRAME_DATA as u32 + 1).to_le_bytes());
    let mut r = FrameReader::new();
    assert_eq!(r.feed(&b[..HEADER_LEN - 1]), Ok((HEADER_LEN - 1, None)));
    assert_eq!(
        r.feed(&b[HEADER_LEN - 1..]),
        Err(WireError::TooLong {
            len: MAX_FRAME_DATA as u64 + 1
        })
    );
    assert_eq!(r.feed(&[0]), Err(WireError::Poisoned));
}

#[test]
fn reader_splits_back_to_back_frames() {
    let a = Frame::new(hdr(Kind::Request, Cmd::Statfs, None), vec![]).unwrap();
    let b = Frame::new(
        hdr(Kind::Request, Cmd::Lock, None),
        encode_lock(&lock_msg()),
    )
    .unwrap();
    let mut bytes = a.encode();
    b.encode_into(&mut bytes);
    let mut r = FrameReader::new();
    let (used, got) = r.feed(&bytes).unwrap();
    assert_eq!((used, got), (HEADER_LEN, Some(a)));
    let (used2, got) = r.feed(&bytes[used..]).unwrap();
    assert_eq!((used + used2, got), (bytes.len(), Some(b)));
    assert!(r.is_idle());
}

#[test]
fn errnos_map_to_codes_and_back() {
    for e in [
        libc::ENOENT,
        libc::ENOMEM,
        libc::EIO,
        libc::ENOSPC,
        libc::EINVAL,
        libc::ENOLINK,
        libc::EDQUOT,
    ] {
        assert_ne!(ErrCode::from_errno(e), ErrCode::Other);
        assert_eq!(ErrCode::from_errno(e).errno(), e);
    }
    assert_eq!(ErrCode::from_errno(libc::EEXIST), ErrCode::Other);
    assert_eq!(ErrCode::Other.errno(), libc::EIO);
    assert_eq!(
        encode_response(Cmd::Statfs, &Response::Error(0)),
        Err(EncodeError::Errno { errno: 0 })
    );
}

#[test]
fn greetings_refuse_bad_rids_and_flags_and_map_to_msg() {
    let g = Greeting {
        fsid: 1,
        fmt_vers: 1,
        server_term: 3,
        rid: 9,
        flags: GREETING_FLAG_QUORUM,
    };
    let key = ClusterKey::new([0x33; 32]);
    let b = g.encode(&key, 5);
    assert_eq!(Greeting::decode(&b), Ok(g));
    assert!(Greeting::authentic(&b, &key, 5));
    // Another key, another greeting id, or any changed byte: not ours.
    assert!(!Greeting::authentic(&b, &ClusterKey::new([0x34; 32]), 5));
    assert!(!Greeting::authentic(&b, &key, 6), "a replay under a new id");
    for i in 0..b.len() {
        let mut bad = b.clone();
        bad[i] ^= 0x80;
        assert!(!Greeting::authentic(&bad, &key, 5), "byte {i}");
    }
    assert!(!Greeting::authentic(&b[..GREETING_LEN - 1], &key, 5));
    assert_eq!(g.request(), Request::Greeting { rid: 9 });
    assert_eq!(
        g.response(),
        Response::Greeting {
            fsid: 1,
            server_term: 3
        }
    );
    let bad_rid = Greeting { rid: 0, ..g };
    assert!(Greeting::decode(&bad_rid.encode(&key, 5)).is_err());
    let bad_flags = Greeting { flags: 4, ..g };
    assert!(Greeting::decode(&bad_flags.encode(&key, 5)).is_err());
    assert!(Greeting::decode(&b[..GREETING_LEN - 1]).is_err());
    assert_eq!(
        encode_request(&Request::Greeting { rid: 9 }),
        Err(EncodeError::Greeting)
    );
    assert!(decode_request(Cmd::Greeting, &b).is_err());
}

#[test]
fn payloads_refuse_wrong_directions_and_bad_fields() {
    assert!(decode_request(Cmd::SyncLogTrees, &[]).is_err());
    assert!(decode_server_request(Cmd::Statfs, &[]).is_err());
    assert!(decode_response(Cmd::SyncLogTrees, None, &[]).is_err());
    assert!(decode_client_response(Cmd::Statfs, None, &[]).is_err());
    assert!(decode_client_response(Cmd::SyncLogTrees, Some(ErrCode::Io), &[]).is_err());
    assert!(decode_response(Cmd::Statfs, Some(ErrCode::Io), &[0]).is_err());
    assert!(decode_request(Cmd::GetRoots, &[0]).is_err());
    let mut lock = encode_lock(&lock_msg());
    lock[40] = 4;
    assert!(decode_request(Cmd::Lock, &lock).is_err());
    let mut lock = encode_lock(&lock_msg());
    lock[47] = 1;
    assert!(decode_request(Cmd::Lock, &lock).is_err());
    let mut lock = encode_lock(&lock_msg());
    lock[31] = 1;
    assert!(decode_request(Cmd::Lock, &lock).is_err(), "key padding");
    assert_eq!(
        encode_response(Cmd::Lock, &Response::Done),
        Err(EncodeError::Mismatch {
            cmd: Cmd::Lock,
            resp: "done"
        })
    );
    assert!(encode_client_response(Cmd::Lock, &ClientResponse::Done).is_err());
}

fn recover_entry(i: u64) -> RecoverEntry {
    RecoverEntry {
        key: Key::new(16, i * 1024, 0, 0, 0, 0),
        mode: LockMode::ALL[1 + (i % 3) as usize],
        write_seq: i * 7,
    }
}

#[test]
fn lock_recover_layout_and_limits() {
    assert_eq!(offset_of!(WireRecoverHead, flags), 4);
    assert_eq!(offset_of!(WireRecoverHead, pad), 5);
    assert_eq!(offset_of!(WireRecoverEntry, write_seq), 32);
    assert_eq!(offset_of!(WireRecoverEntry, mode), 40);
    assert_eq!(offset_of!(WireRecoverEntry, pad), 41);
    // A full batch fits a frame and round-trips.
    let entries: Vec<RecoverEntry> = (0..RECOVER_ENTRIES_MAX as u64).map(recover_entry).collect();
    let resp = ClientResponse::LockRecover {
        entries,
        more: true,
    };
    let data = encode_client_response(Cmd::LockRecover, &resp).unwrap();
    assert_eq!(data.len(), RECOVER_MAX_LEN);
    let f = Frame::new(hdr(Kind::Response, Cmd::LockRecover, None), data).unwrap();
    let f = Frame::decode(&f.encode()).unwrap();
    assert_eq!(
        decode_client_response(Cmd::LockRecover, None, f.data()),
        Ok(resp)
    );
    // One more is the caller's mistake.
    let entries: Vec<RecoverEntry> = (0..=RECOVER_ENTRIES_MAX as u64)
        .map(recover_entry)
        .collect();
    let resp = ClientResponse::LockRecover {
        entries,
        more: false,
    };
    assert!(matches!(
        encode_client_response(Cmd::LockRecover, &resp),
        Err(EncodeError::TooMany { .. })
    ));
    let req = ServerRequest::LockRecover {
        first: Key::new(16, 5, 0, 0, 0, 0),
    };
    let (cmd, data) = encode_server_request(&req);
    assert_eq!((cmd, data.len()), (Cmd::LockRecover, KEY_LEN));
    assert_eq!(decode_server_request(cmd, &data), Ok(req));
}

#[test]
fn lock_recover_refuses_bad_fields() {
    let resp = ClientResponse::LockRecover {
        entries: vec![recover_entry(1), recover_entry(2)],
        more: false,
    };
    let good = encode_client_response(Cmd::LockRecover, &resp).unwrap();
    let refused = |b: &[u8]| decode_client_response(Cmd::LockRecover, None, b).is_err();
    assert!(!refused(&good));
    let edit = |at: usize, v: u8| {
        let mut b = good.clone();
        b[at] = v;
        b
    };
    assert!(refused(&edit(0, 3)), "count and length disagree");
    assert!(refused(&edit(4, 2)), "unknown flag");
    assert!(refused(&edit(7, 1)), "head padding");
    assert!(refused(&edit(8 + 40, 4)), "unknown mode");
    assert!(refused(&edit(8 + 47, 1)), "entry padding");
    assert!(refused(&edit(8 + 31, 1)), "key padding");
    let mut b = good.clone();
    b[..4].copy_from_slice(&(RECOVER_ENTRIES_MAX as u32 + 1).to_le_bytes());
    assert!(refused(&b), "beyond the limit");
    assert!(refused(&good[..good.len() - 1]));
    assert!(refused(&good[..3]));
    assert!(refused(&[good.clone(), vec![0]].concat()));
    // Wrong directions and commands.
    assert!(decode_request(Cmd::LockRecover, &[0; KEY_LEN]).is_err());
    assert!(decode_response(Cmd::LockRecover, None, &good).is_err());
    assert!(decode_client_response(Cmd::LockRecover, Some(ErrCode::Io), &good).is_err());
    assert!(decode_server_request(Cmd::LockRecover, &[0; KEY_LEN - 1]).is_err());
    assert!(encode_client_response(Cmd::Lock, &resp).is_err());
    assert!(encode_client_response(Cmd::LockRecover, &ClientResponse::Done).is_err());
}

#[test]
fn last_seq_round_trips_and_refuses_bad_lengths() {
    let (cmd, data) = encode_request(&Request::GetLastSeq).unwrap();
    assert_eq!((cmd, data.len()), (Cmd::GetLastSeq, 0));
    assert_eq!(decode_request(cmd, &data), Ok(Request::GetLastSeq));
    assert!(decode_request(Cmd::GetLastSeq, &[0]).is_err());
    let resp = Response::LastSeq(0x1234_5678_9abc);
    let (err, data) = encode_response(Cmd::GetLastSeq, &resp).unwrap();
    assert_eq!((err, data.len()), (None, 8));
    assert_eq!(decode_response(Cmd::GetLastSeq, None, &data), Ok(resp));
    assert!(decode_response(Cmd::GetLastSeq, None, &data[..7]).is_err());
    assert_eq!(Cmd::from_u8(6), Some(Cmd::GetLastSeq));
}

#[test]
fn data_waiter_messages_round_trip_and_refuse_bad_fields() {
    use crate::cluster::net::msg::{WaitFail, WaitingBlock, WaitingQuery};
    let q = WaitingQuery {
        after_ino: 5,
        after_iblock: u64::MAX,
        max: 2048,
    };
    let (cmd, data) = encode_request(&Request::DataWaiting(q)).unwrap();
    assert_eq!(decode_request(cmd, &data), Ok(Request::DataWaiting(q)));
    assert_eq!(
        decode_server_request(cmd, &data),
        Ok(ServerRequest::DataWaiting(q))
    );
    let mut big = data.clone();
    big[16..20].copy_from_slice(&2049u32.to_le_bytes());
    assert!(decode_request(cmd, &big).is_err(), "max over the limit");
    let ws: Vec<WaitingBlock> = (0..2048u64)
        .map(|i| WaitingBlock {
            ino: i,
            iblock: i * 3,
            ops: 1 + (i % 7) as u8,
        })
        .collect();
    let resp = Response::DataWaiting(ws.clone());
    let (_, bytes) = encode_response(Cmd::DataWaiting, &resp).unwrap();
    assert_eq!(decode_response(Cmd::DataWaiting, None, &bytes), Ok(resp));
    let cr = ClientResponse::DataWaiting(ws[..3].to_vec());
    let b = encode_client_response(Cmd::DataWaiting, &cr).unwrap();
    assert_eq!(decode_client_response(Cmd::DataWaiting, None, &b), Ok(cr));
    let mut bad = b.clone();
    bad[8 + 16] = 8;
    assert!(
        decode_client_response(Cmd::DataWaiting, None, &bad).is_err(),
        "ops"
    );
    assert!(decode_client_response(Cmd::DataWaiting, None, &b[..b.len() - 1]).is_err());
    let mut too_many = ws.clone();
    too_many.push(ws[0]);
    assert!(encode_response(Cmd::DataWaiting, &Response::DataWaiting(too_many)).is_err());

    let f = WaitFail {
        ino: 9,
        from: 1,
        to: 4,
        ops: 6,
        errno: libc::EIO,
    };
    let (cmd, data) = encode_request(&Request::DataWaitErr(f)).unwrap();
    assert_eq!(decode_request(cmd, &data), Ok(Request::DataWaitErr(f)));
    for (at, v) in [(24, 0u32), (24, 8), (28, 0), (28, 4096)] {
        let mut bad = data.clone();
        bad[at..at + 4].copy_from_slice(&v.to_le_bytes());
        assert!(decode_request(cmd, &bad).is_err(), "byte {at} = {v}");
    }
    let (_, n) = encode_response(Cmd::DataWaitErr, &Response::Count(3)).unwrap();
    assert_eq!(
        decode_response(Cmd::DataWaitErr, None, &n),
        Ok(Response::Count(3))
    );
}

#[test]
fn new_waiter_messages_round_trip_both_ways() {
    use crate::cluster::net::msg::WaitingBlock;
    let ws: Vec<WaitingBlock> = (0..5u64)
        .map(|i| WaitingBlock {
            ino: 100 + i,
            iblock: i,
            ops: 1 << (i % 3),
        })
        .collect();
    let (cmd, data) = encode_request(&Request::WaitersNew(ws.clone())).unwrap();
    assert_eq!(cmd, Cmd::WaitersNew);
    assert_eq!(
        decode_request(cmd, &data),
        Ok(Request::WaitersNew(ws.clone()))
    );
    let (scmd, sdata) = encode_server_request(&ServerRequest::WaitersNew(ws.clone()));
    assert_eq!((scmd, &sdata), (cmd, &data));
    assert_eq!(
        decode_server_request(cmd, &data),
        Ok(ServerRequest::WaitersNew(ws.clone()))
    );
    let (_, done) = encode_response(cmd, &Response::Done).unwrap();
    assert_eq!(decode_response(cmd, None, &done), Ok(Response::Done));
    let b = encode_client_response(cmd, &ClientResponse::Done).unwrap();
    assert_eq!(
        decode_client_response(cmd, None, &b),
        Ok(ClientResponse::Done)
    );
    assert!(
        decode_response(cmd, None, &[0]).is_err(),
        "an answer carries nothing"
    );
    let mut bad = data.clone();
    bad[8 + 16] = 0;
    assert!(decode_request(cmd, &bad).is_err(), "no ops");
    assert!(decode_request(cmd, &data[..data.len() - 1]).is_err());
    let too_many = vec![ws[0]; scoutfs_format::wire::DATA_WAITING_MAX + 1];
    assert!(encode_request(&Request::WaitersNew(too_many)).is_err());
    assert_eq!(Cmd::from_u8(22), Some(Cmd::WaitersNew));
}
