//! Property tests of the wire format (`scoutfs_core::cluster::net::wire`).
//!
//! - Every message of `msg`, in each direction, survives encoding into a
//!   frame, the frame's bytes, decoding and payload decoding unchanged
//!   (errnos the protocol doesn't name come back as EIO).
//! - A LOCK_RECOVER answer with changed, cut or added bytes never panics its
//!   decoder; whatever it accepts is within the entry limit and encodes
//!   back to exactly the same bytes (one encoding per message).
//! - Arbitrary bytes, and valid frames with random changes, never panic the
//!   frame decoder, the streaming reader or any payload decoder.
//! - Any single flipped bit of a valid frame is refused (the crc, or the
//!   magic or length checks before it), and the reader never yields a frame
//!   from such bytes.
//! - Feeding a stream to the reader in arbitrary chunks gives the same
//!   frames, and the same first error, as feeding it whole.
//! - A header declaring more than `MAX_FRAME_DATA` is refused as soon as
//!   the header's last byte arrives.

use proptest::prelude::*;
use scoutfs_core::cluster::lock::{LockMode, LockMsg, RecoverEntry, RECOVER_ENTRIES_MAX};
use scoutfs_core::cluster::net::msg::{
    ClientResponse, OpenInoMap, Request, Response, ServerRequest, StatfsInfo,
};
use scoutfs_core::cluster::net::wire::*;
use scoutfs_core::types::Roots;
use scoutfs_format::block::BlockRef;
use scoutfs_format::btree::BtreeRoot;
use scoutfs_format::key::Key;
use scoutfs_format::log_trees::LogTrees;

fn arb_key() -> impl Strategy<Value = Key> {
    (
        any::<u8>(),
        any::<u64>(),
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        any::<u8>(),
    )
        .prop_map(|(z, a, t, b, c, d)| Key::new(z, a, t, b, c, d))
}

fn arb_mode() -> impl Strategy<Value = LockMode> {
    (0u8..4).prop_map(|m| LockMode::from_u8(m).unwrap())
}

fn arb_lock() -> impl Strategy<Value = LockMsg> {
    (arb_key(), any::<u64>(), arb_mode(), arb_mode()).prop_map(|(key, write_seq, o, n)| LockMsg {
        key,
        write_seq,
        old_mode: o,
        new_mode: n,
    })
}

fn arb_recover_entries() -> impl Strategy<Value = Vec<RecoverEntry>> {
    let entry =
        (arb_key(), arb_mode(), any::<u64>()).prop_map(|(key, mode, write_seq)| RecoverEntry {
            key,
            mode,
            write_seq,
        });
    prop::collection::vec(entry, 0..12)
}

fn arb_root() -> impl Strategy<Value = BtreeRoot> {
    prop_oneof![
        Just(BtreeRoot::default()),
        (1u64.., any::<u64>(), 1u8..=20).prop_map(|(blkno, seq, height)| BtreeRoot {
            blk: BlockRef::new(blkno, seq),
            height,
            pad: [0; 7],
        }),
    ]
}

fn arb_log_trees() -> impl Strategy<Value = Box<LogTrees>> {
    (
        arb_root(),
        any::<(u64, u64, u64, u64)>(),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        0u64..2,
    )
        .prop_map(
            |(root, (bloom, delta, max_seq, rid), (get, nr, fin), flags)| {
                let commit = get / 2;
                Box::new(LogTrees {
                    item_root: root,
                    bloom_ref: BlockRef::new(bloom, bloom ^ 1),
                    inode_count_delta: delta.into(),
                    get_trans_seq: get.into(),
                    commit_trans_seq: commit.into(),
                    max_item_seq: max_seq.into(),
                    finalize_seq: fin.into(),
                    rid: rid.into(),
                    nr: nr.into(),
                    flags: flags.into(),
                    ..Default::default()
                })
            },
        )
}

fn arb_statfs() -> impl Strategy<Value = StatfsInfo> {
    any::<[u64; 7]>().prop_map(|v| StatfsInfo {
        total_meta_blocks: v[0],
        free_meta_blocks: v[1],
        reserved_meta_blocks: v[6],
        total_data_blocks: v[2],
        free_data_blocks: v[3],
        inode_count: v[4],
        fsid: v[5],
    })
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<u64>().prop_map(|count| Request::AllocInodes { count }),
        Just(Request::GetLogTrees),
        arb_log_trees().prop_map(Request::CommitLogTrees),
        Just(Request::GetRoots),
        arb_lock().prop_map(Request::Lock),
        Just(Request::Statfs),
        any::<(u64, u64)>().prop_map(|(meta, data)| Request::ResizeDevices { meta, data }),
        Just(Request::Farewell),
        any::<u64>().prop_map(|group| Request::OpenInoMap { group }),
    ]
}

fn arb_omap() -> impl Strategy<Value = OpenInoMap> {
    (any::<u64>(), any::<[u64; 16]>()).prop_map(|(group, bits)| OpenInoMap { group, bits })
}

/// Commands a client may send, each of which may fail.
const CLIENT_CMDS: [Cmd; 9] = [
    Cmd::AllocInodes,
    Cmd::GetLogTrees,
    Cmd::CommitLogTrees,
    Cmd::GetRoots,
    Cmd::Lock,
    Cmd::Statfs,
    Cmd::Farewell,
    Cmd::OpenInoMap,
    Cmd::ResizeDevices,
];

/// A server response and the command it answers.
fn arb_response() -> impl Strategy<Value = (Cmd, Response)> {
    prop_oneof![
        any::<(u64, u64)>().prop_map(|(ino, nr)| (Cmd::AllocInodes, Response::Inodes { ino, nr })),
        arb_log_trees().prop_map(|lt| (Cmd::GetLogTrees, Response::LogTrees(lt))),
        arb_log_trees().prop_map(|lt| (Cmd::CommitLogTrees, Response::LogTrees(lt))),
        Just((Cmd::Farewell, Response::Done)),
        Just((Cmd::ResizeDevices, Response::Done)),
        (arb_root(), arb_root(), arb_root()).prop_map(|(a, b, c)| (
            Cmd::GetRoots,
            Response::Roots(Roots {
                fs_root: a,
                logs_root: b,
                srch_root: c
            })
        )),
        arb_lock().prop_map(|m| (Cmd::Lock, Response::Lock(m))),
        arb_statfs().prop_map(|s| (Cmd::Statfs, Response::Statfs(s))),
        arb_omap().prop_map(|m| (Cmd::OpenInoMap, Response::OpenInoMap(Box::new(m)))),
        (0..CLIENT_CMDS.len(), 1i32..4096)
            .prop_map(|(c, errno)| (CLIENT_CMDS[c], Response::Error(errno))),
    ]
}

fn arb_server_request() -> impl Strategy<Value = ServerRequest> {
    prop_oneof![
        arb_lock().prop_map(ServerRequest::Invalidate),
        Just(ServerRequest::SyncLogTrees),
        arb_key().prop_map(|first| ServerRequest::LockRecover { first }),
        any::<u64>().prop_map(|group| ServerRequest::OpenInoMap { group }),
    ]
}

fn arb_client_response() -> impl Strategy<Value = (Cmd, ClientResponse)> {
    prop_oneof![
        arb_lock().prop_map(|m| (Cmd::Lock, ClientResponse::InvalidateDone(m))),
        Just((Cmd::SyncLogTrees, ClientResponse::Done)),
        (arb_recover_entries(), any::<bool>()).prop_map(|(entries, more)| (
            Cmd::LockRecover,
            ClientResponse::LockRecover { entries, more }
        )),
        arb_omap().prop_map(|m| (Cmd::OpenInoMap, ClientResponse::OpenInoMap(Box::new(m)))),
    ]
}

fn arb_header(kind: Kind, cmd: Cmd, error: Option<ErrCode>) -> impl Strategy<Value = FrameHeader> {
    (1u64.., any::<u64>(), 1u64..).prop_map(move |(seq, recv_seq, id)| FrameHeader {
        seq,
        recv_seq,
        id,
        kind,
        cmd,
        error,
    })
}

/// Any valid frame: any header, any payload up to 600 bytes.
fn arb_frame() -> impl Strategy<Value = Frame> {
    let kind = prop_oneof![Just(Kind::Request), Just(Kind::Response)];
    let cmd = (0..Cmd::ALL.len()).prop_map(|i| Cmd::ALL[i]);
    let err = prop_oneof![
        Just(None),
        (0..ErrCode::ALL.len()).prop_map(|i| Some(ErrCode::ALL[i]))
    ];
    (kind, cmd, err)
        .prop_flat_map(|(k, c, e)| {
            let e = if k == Kind::Request { None } else { e };
            (
                arb_header(k, c, e),
                prop::collection::vec(any::<u8>(), 0..600),
            )
        })
        .prop_map(|(h, d)| Frame::new(h, d).unwrap())
}

/// Encodes a frame, decodes it whole and through the reader byte by byte,
/// and returns the decoded frame.
fn through_the_wire(f: &Frame) -> Frame {
    let bytes = f.encode();
    let whole = Frame::decode(&bytes).unwrap();
    let mut r = FrameReader::new();
    let mut got = None;
    for (i, b) in bytes.iter().enumerate() {
        let (used, frame) = r.feed(std::slice::from_ref(b)).unwrap();
        assert_eq!(used, 1);
        assert_eq!(frame.is_some(), i == bytes.len() - 1);
        got = got.or(frame);
    }
    assert_eq!(got.as_ref(), Some(&whole));
    whole
}

/// Every result the reader gives for `stream` fed in `chunks` (sizes, cycled).
fn read_stream(stream: &[u8], chunks: &[usize]) -> Vec<Result<Frame, WireError>> {
    let mut r = FrameReader::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut c = 0;
    while pos < stream.len() {
        let n = chunks[c % chunks.len()].max(1).min(stream.len() - pos);
        c += 1;
        let mut chunk = &stream[pos..pos + n];
        pos += n;
        while !chunk.is_empty() {
            match r.feed(chunk) {
                Ok((used, frame)) => {
                    chunk = &chunk[used..];
                    out.extend(frame.map(Ok));
                }
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

/// Runs every decoder over `bytes` as a frame and as every payload.
fn decode_everything(bytes: &[u8]) {
    let _ = Frame::decode(bytes);
    let _ = read_stream(bytes, &[1, 7, 40, 3]);
    let _ = Greeting::decode(bytes);
    for cmd in Cmd::ALL {
        let _ = decode_request(cmd, bytes);
        let _ = decode_server_request(cmd, bytes);
        for e in [None, Some(ErrCode::Io)] {
            let _ = decode_response(cmd, e, bytes);
            let _ = decode_client_response(cmd, e, bytes);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(req in arb_request(), h in arb_header(Kind::Request, Cmd::Statfs, None)) {
        let (cmd, data) = encode_request(&req).unwrap();
        let f = through_the_wire(&Frame::new(FrameHeader { cmd, ..h }, data).unwrap());
        prop_assert_eq!(f.hdr().cmd, cmd);
        prop_assert_eq!(decode_request(cmd, f.data()).unwrap(), req);
    }

    #[test]
    fn responses_round_trip((cmd, resp) in arb_response(), h in arb_header(Kind::Response, Cmd::Statfs, None)) {
        let (error, data) = encode_response(cmd, &resp).unwrap();
        let f = through_the_wire(&Frame::new(FrameHeader { cmd, error, ..h }, data).unwrap());
        let got = decode_response(cmd, f.hdr().error, f.data()).unwrap();
        match resp {
            Response::Error(e) if ErrCode::from_errno(e) == ErrCode::Other => {
                prop_assert_eq!(got, Response::Error(libc::EIO))
            }
            resp => prop_assert_eq!(got, resp),
        }
    }

    #[test]
    fn server_requests_round_trip(req in arb_server_request(), h in arb_header(Kind::Request, Cmd::Lock, None)) {
        let (cmd, data) = encode_server_request(&req);
        let f = through_the_wire(&Frame::new(FrameHeader { cmd, ..h }, data).unwrap());
        prop_assert_eq!(decode_server_request(cmd, f.data()).unwrap(), req);
    }

    #[test]
    fn client_responses_round_trip((cmd, resp) in arb_client_response(), h in arb_header(Kind::Response, Cmd::Lock, None)) {
        let data = encode_client_response(cmd, &resp).unwrap();
        let f = through_the_wire(&Frame::new(FrameHeader { cmd, ..h }, data).unwrap());
        prop_assert_eq!(decode_client_response(cmd, None, f.data()).unwrap(), resp);
    }

    #[test]
    fn greetings_round_trip(fsid: u64, fmt_vers: u64, server_term: u64, rid in 1u64.., flags in 0u64..4) {
        let g = Greeting { fsid, fmt_vers, server_term, rid, flags };
        let key = scoutfs_core::cluster::auth::ClusterKey::new([7; 32]);
        let b = g.encode(&key, rid);
        prop_assert_eq!(Greeting::decode(&b).unwrap(), g);
        prop_assert!(Greeting::authentic(&b, &key, rid));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        decode_everything(&bytes);
    }

    /// Plausible headers (right magic, small lengths) with random fields,
    /// so decoding gets past the first checks.
    #[test]
    fn plausible_headers_never_panic(
        fields: [u8; 36],
        len in 0u32..80,
        tail in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let mut bytes = WIRE_MAGIC.to_le_bytes().to_vec();
        bytes.extend_from_slice(&fields[..28]);
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&fields[32..]);
        bytes.extend_from_slice(&tail);
        decode_everything(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(
        f in arb_frame(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 0..50),
    ) {
        let mut bytes = f.encode();
        for (at, v) in edits {
            let i = at % bytes.len();
            bytes[i] = v;
        }
        decode_everything(&bytes);
        bytes.truncate(cut.index(bytes.len() + 1));
        decode_everything(&bytes);
        bytes.extend_from_slice(&extra);
        decode_everything(&bytes);
        // Payload decoders also see valid payloads with changed bytes.
        decode_everything(f.data());
    }

    #[test]
    fn mutated_lock_recover_answers_are_refused_or_canonical(
        entries in arb_recover_entries(),
        more: bool,
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let resp = ClientResponse::LockRecover { entries, more };
        let good = encode_client_response(Cmd::LockRecover, &resp).unwrap();
        let mut bytes = good.clone();
        for (at, v) in edits {
            let i = at % bytes.len();
            bytes[i] = v;
        }
        let cut = cut.index(bytes.len() + 1);
        for b in [bytes.clone(), bytes[..cut].to_vec(), [bytes.clone(), extra].concat()] {
            match decode_client_response(Cmd::LockRecover, None, &b) {
                Ok(got @ ClientResponse::LockRecover { .. }) => {
                    let ClientResponse::LockRecover { entries, .. } = &got else { unreachable!() };
                    prop_assert!(entries.len() <= RECOVER_ENTRIES_MAX);
                    prop_assert_eq!(encode_client_response(Cmd::LockRecover, &got).unwrap(), b);
                }
                Ok(other) => prop_assert!(false, "decoded as {:?}", other),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn any_flipped_bit_is_refused(f in arb_frame(), bit in any::<prop::sample::Index>()) {
        let mut bytes = f.encode();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(Frame::decode(&bytes).is_err());
        let results = read_stream(&bytes, &[bytes.len()]);
        prop_assert!(results.iter().all(|r| r.is_err()), "{:?}", results);
    }

    #[test]
    fn chunked_streams_read_like_whole_streams(
        frames in prop::collection::vec(arb_frame(), 1..6),
        chunks in prop::collection::vec(1usize..100, 1..20),
        damage in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let mut stream = Vec::new();
        for f in &frames {
            f.encode_into(&mut stream);
        }
        if let Some((at, v)) = damage {
            let i = at.index(stream.len());
            stream[i] = v;
        }
        let whole = read_stream(&stream, &[stream.len()]);
        let chunked = read_stream(&stream, &chunks);
        prop_assert_eq!(&whole, &chunked);
        if damage.is_none() {
            let want: Vec<_> = frames.into_iter().map(Ok).collect();
            prop_assert_eq!(whole, want);
        }
    }

    #[test]
    fn oversize_is_refused_at_the_header(f in arb_frame(), len in (MAX_FRAME_DATA as u32 + 1)..) {
        let mut bytes = f.encode();
        bytes[32..36].copy_from_slice(&len.to_le_bytes());
        let mut r = FrameReader::new();
        let (used, frame) = r.feed(&bytes[..HEADER_LEN - 1]).unwrap();
        prop_assert_eq!((used, frame), (HEADER_LEN - 1, None));
        prop_assert_eq!(
            r.feed(&bytes[HEADER_LEN - 1..]),
            Err(WireError::TooLong { len: len as u64 })
        );
        prop_assert!(Frame::decode(&bytes).is_err());
    }
}
