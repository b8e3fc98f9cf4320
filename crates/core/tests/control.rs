//! The control socket of an in-process mount: its operations answer as
//! the mount's own calls do, and hostile peers (frames that are not
//! frames, other versions, oversized payloads, wrong descriptor counts,
//! frames that stop, random bytes) get an error, are counted, and leave
//! the mount serving.

mod common;

use scoutfs_core::mount::control::{header, recv_frame, send_frame, ControlClient, ControlServer};
use scoutfs_core::rng::Rng;
use scoutfs_format::control::*;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;
use zerocopy::IntoBytes;

const MB: u64 = 1 << 20;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("scoutfs-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends raw bytes and returns the status and message of the answer, or
/// None if the mount closed the connection without one.
fn raw(sock: &UnixStream, bytes: &[u8]) -> Option<(i32, String)> {
    let mut s = sock;
    s.write_all(bytes).ok()?;
    match recv_frame(sock, CONTROL_RESPONSE_MAX, false) {
        Ok(Some(f)) => Some((
            f.hdr.status.get() as i32,
            String::from_utf8_lossy(&f.payload).into_owned(),
        )),
        _ => None,
    }
}

fn hdr_bytes(op: u16, len: usize, f: impl FnOnce(&mut ControlHeader)) -> Vec<u8> {
    let mut h = header(op, 7, len);
    f(&mut h);
    h.as_bytes().to_vec()
}

/// Sends one request as user and group 65534 from a forked child, and
/// returns the answer's status (or 200 and up when the child failed).
fn as_nobody(path: &std::path::Path, op: u16, payload: &[u8]) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let mut frame = header(op, 1, payload.len()).as_bytes().to_vec();
    frame.extend_from_slice(payload);
    // SAFETY: a zeroed sockaddr_un is valid; the path fits (checked).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: the child makes only async-signal-safe calls on buffers
    // prepared before the fork, then _exit()s.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(200);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if fd < 0 || libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) != 0 {
                libc::_exit(201);
            }
            if libc::write(fd, frame.as_ptr() as *const libc::c_void, frame.len())
                != frame.len() as isize
            {
                libc::_exit(202);
            }
            let mut h = [0u8; CONTROL_HEADER_LEN];
            let mut got = 0;
            while got < h.len() {
                let n = libc::read(
                    fd,
                    h[got..].as_mut_ptr() as *mut libc::c_void,
                    h.len() - got,
                );
                if n <= 0 {
                    libc::_exit(203);
                }
                got += n as usize;
            }
            let status = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
            libc::_exit(status.min(199) as i32);
        }
        let mut st = 0;
        assert_eq!(libc::waitpid(pid, &mut st, 0), pid);
        assert!(libc::WIFEXITED(st), "the child did not exit");
        libc::WEXITSTATUS(st)
    }
}

#[test]
fn the_control_socket_answers_and_survives_hostile_peers() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xc1);
    let mnt = common::mount(&meta, &data);
    let dir = TempDir::new("control");
    let path = dir.0.join("ctl.0.1");
    // A mount that gets the same FUSE device number replaces a socket left
    // there; the old server, stopping late, leaves the new one's alone.
    let old = ControlServer::start(&path, mnt.fs().clone(), mnt.rid(), None).unwrap();
    let server = ControlServer::start(&path, mnt.fs().clone(), mnt.rid(), None).unwrap();
    old.stop();
    assert!(
        path.exists(),
        "a stopping server removed its successor's socket"
    );

    // STATFS_MORE answers what the mount knows.
    let mut c = ControlClient::connect(&path).unwrap();
    let m = c.statfs().unwrap();
    let own = mnt.fs().statfs().unwrap();
    assert_eq!(m.rid, mnt.rid());
    let s = m.fs;
    assert_eq!(s.fsid, 0xc1);
    assert_eq!(s.total_data_blocks, own.total_data_blocks);
    assert_eq!(s.total_meta_blocks, own.total_meta_blocks);

    // RESIZE_DEVICES (this test runs as root): refusals carry their reason.
    let e = c.resize_devices(0, s.total_data_blocks - 1).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert!(e.to_string().contains("shrinking"), "{e}");
    data.grow(96 * MB);
    c.resize_devices(0, (96 * MB) >> 12).unwrap();
    assert_eq!(c.statfs().unwrap().fs.total_data_blocks, (96 * MB) >> 12);

    // An unknown operation and a short payload: an error, and the
    // connection goes on.
    let e = c.call(999, &[], &[]).unwrap_err();
    assert_eq!(e.errno(), libc::EOPNOTSUPP);
    let e = c.call(op::RESIZE_DEVICES, &[1, 2, 3], &[]).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert!(e.to_string().contains("too short"), "{e}");
    // The archive operations: short payloads, an unknown index, a missing
    // descriptor, a descriptor of a file this mount does not serve.
    for o in [
        op::WALK_INODES,
        op::SET_ATTR_X,
        op::INO_PATH,
        op::GET_REFERRING_ENTRIES,
        op::GET_ALLOCATED_INOS,
    ] {
        let e = c.call(o, &[0; 4], &[]).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL, "operation {o}: {e}");
    }
    let bad_index = ControlWalk {
        index: 7,
        ..ControlWalk::default()
    };
    let e = c
        .call(op::WALK_INODES, bad_index.as_bytes(), &[])
        .unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    let e = c.call(op::STAT_MORE, &[], &[]).unwrap_err();
    assert_eq!(e.errno(), libc::EBADF, "{e}");
    let outside = std::fs::File::open(&dir.0).unwrap();
    let e = c.call(op::GET_ATTR_X, &[], &[outside.as_fd()]).unwrap_err();
    assert_eq!(e.errno(), libc::EBADF, "{e}");
    // A walk answers in frames, clamped to the last complete seq.
    let fs = mnt.fs();
    for i in 0..10 {
        let ino = fs
            .mknod(
                scoutfs_format::ROOT_INO,
                format!("w{i}").as_bytes(),
                &scoutfs_core::mount::fs::types::NewNode::new(libc::S_IFREG | 0o644),
            )
            .unwrap()
            .ino;
        fs.write(ino, 0, b"w").unwrap();
    }
    let mut got = Vec::new();
    use scoutfs_core::mount::fs::archive::{SeqIndex, WalkEntry};
    let all = WalkEntry {
        seq: u64::MAX,
        ino: u64::MAX,
    };
    c.walk_inodes(
        SeqIndex::DataSeq,
        WalkEntry { seq: 0, ino: 0 },
        all,
        0,
        |last, es| {
            assert!(es.iter().all(|e| e.seq <= last));
            got.extend_from_slice(es);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(got.len(), 10, "{got:?}");
    let mut two = Vec::new();
    c.walk_inodes(
        SeqIndex::DataSeq,
        WalkEntry { seq: 0, ino: 0 },
        all,
        2,
        |_, es| {
            two.extend_from_slice(es);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(two[..], got[..2], "max_entries");

    // A descriptor the header does not announce.
    let f = std::fs::File::open(&dir.0).unwrap();
    let sock = UnixStream::connect(&path).unwrap();
    send_frame(&sock, &header(op::STATFS_MORE, 1, 0), &[], &[f.as_fd()]).unwrap();
    let (status, why) = match recv_frame(&sock, CONTROL_RESPONSE_MAX, false) {
        Ok(Some(f)) => (
            f.hdr.status.get() as i32,
            String::from_utf8_lossy(&f.payload).into_owned(),
        ),
        _ => panic!("no answer to a frame with an unannounced descriptor"),
    };
    assert_eq!(status, libc::EINVAL, "{why}");
    assert!(c.statfs().is_ok());

    // Frames that are not frames: an answer, then the connection closes.
    let cases: Vec<(Vec<u8>, i32)> = vec![
        (
            hdr_bytes(op::STATFS_MORE, 0, |h| h.magic = 0x1234.into()),
            libc::EINVAL,
        ),
        (
            hdr_bytes(op::STATFS_MORE, 0, |h| h.version = 9.into()),
            libc::EPROTONOSUPPORT,
        ),
        (
            hdr_bytes(op::STATFS_MORE, CONTROL_REQUEST_MAX + 1, |_| {}),
            libc::EMSGSIZE,
        ),
    ];
    for (bytes, want) in cases {
        let sock = UnixStream::connect(&path).unwrap();
        let got = raw(&sock, &bytes).expect("an answer to a bad frame");
        assert_eq!(got.0, want, "{}", got.1);
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(
            recv_frame(&sock, CONTROL_RESPONSE_MAX, false).is_err(),
            "the connection of a bad frame stays open"
        );
    }

    // More descriptors than a request may carry.
    let files: Vec<std::fs::File> = (0..CONTROL_FDS_MAX + 1)
        .map(|_| std::fs::File::open(&dir.0).unwrap())
        .collect();
    let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    let sock = UnixStream::connect(&path).unwrap();
    let mut h = header(op::STATFS_MORE, 1, 0);
    h.nfds = fds.len() as u8;
    send_frame(&sock, &h, &[], &fds).unwrap();
    let got = recv_frame(&sock, CONTROL_RESPONSE_MAX, false);
    assert!(
        matches!(&got, Ok(Some(f)) if f.hdr.status.get() as i32 == libc::EINVAL),
        "too many descriptors were not refused"
    );

    // Half a frame, then the peer goes away; and random bytes.
    {
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(&hdr_bytes(op::STATFS_MORE, 0, |_| {})[..10])
            .unwrap();
    }
    let mut rng = Rng::new(0xc0);
    for _ in 0..200 {
        let n = (rng.next_u64() % 96) as usize;
        let mut bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        // Half of them with a good magic and version, so they get further.
        if rng.next_u64().is_multiple_of(2) && n >= CONTROL_HEADER_LEN {
            bytes[..4].copy_from_slice(&CONTROL_MAGIC.to_le_bytes());
            bytes[4..6].copy_from_slice(&CONTROL_VERSION.to_le_bytes());
            bytes[16..20].copy_from_slice(&((n - CONTROL_HEADER_LEN) as u32).to_le_bytes());
            bytes[28] = 0;
        }
        let mut s = UnixStream::connect(&path).unwrap();
        let _ = s.write_all(&bytes);
    }

    // A caller that is not root may ask STATFS_MORE, not RESIZE_DEVICES.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let resize = ControlResize {
            meta_blocks: 0.into(),
            data_blocks: ((128 * MB) >> 12).into(),
        };
        assert_eq!(
            as_nobody(&path, op::RESIZE_DEVICES, resize.as_bytes()),
            libc::EPERM
        );
        assert_eq!(as_nobody(&path, op::STATFS_MORE, &[]), 0);
        let entries = ControlInoEntries {
            ino: 1.into(),
            ..ControlInoEntries::default()
        };
        for o in [op::INO_PATH, op::GET_REFERRING_ENTRIES] {
            assert_eq!(as_nobody(&path, o, entries.as_bytes()), libc::EPERM);
        }
        assert_eq!(
            as_nobody(&path, op::GET_ALLOCATED_INOS, &1u64.to_le_bytes()),
            libc::EPERM
        );
        assert_eq!(server.stats().denied, 4);
    }

    // The mount still serves, through the socket and its own calls, and
    // counted what it was sent.
    let mut c2 = ControlClient::connect(&path).unwrap();
    assert_eq!(c2.statfs().unwrap().rid, mnt.rid());
    let st = server.stats();
    eprintln!("control stats: {st:?}");
    assert!(st.malformed >= 8, "{st:?}");
    assert!(st.connections >= 200, "{st:?}");
    drop((c, c2));
    server.stop();
    assert!(!path.exists(), "the socket outlived its server");
    mnt.unmount().unwrap();
    common::assert_clean(&meta, &data);
}
