//! The mount's messages over real TCP sockets on loopback: connections
//! broken under a busy mount are made again and every request is answered
//! exactly once (the work is all there, `check` is clean), and bytes that
//! aren't frames close only the connection that sent them.

mod common;

use common::assert_clean;
use scoutfs_core::mount::fs::types::NewNode;

use scoutfs_core::mount::fs::Fs;
use scoutfs_core::mount::{Mount, MountOptions};
use scoutfs_core::store::dev::MemDev;
use scoutfs_format::ROOT_INO;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const REG: u32 = libc::S_IFREG | 0o644;
const DIR: u32 = libc::S_IFDIR | 0o755;

fn mount(meta: &MemDev, data: &MemDev) -> Mount {
    let opts = MountOptions {
        // Small transactions: many commits, so many server round trips.
        commit_interval_ms: 50,
        ..Default::default()
    };
    common::mount_with(meta, data, &opts)
}

/// Ends the test process if `done` isn't set within `secs`: a request
/// that is never answered would otherwise hang the test instead of
/// failing it.
fn watchdog(done: Arc<AtomicBool>, secs: u64) {
    std::thread::spawn(move || {
        for _ in 0..secs * 10 {
            if done.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("a request went unanswered for {secs} s");
        std::process::exit(1);
    });
}

/// Every file `work` made in `rounds` rounds is there with its contents.
fn assert_work(fs: &Fs, rounds: usize) {
    let d = fs.lookup(ROOT_INO, b"d").unwrap();
    for r in 0..rounds {
        for i in 0..40 {
            let name = format!("r{r}-f{i}");
            let f = fs.lookup(d.ino, name.as_bytes()).unwrap();
            assert_eq!(fs.read(f.ino, 0, 64).unwrap(), name.as_bytes());
        }
    }
}

fn work(fs: &Fs, dir: u64, round: usize) {
    for i in 0..40 {
        let name = format!("r{round}-f{i}");
        let f = fs.mknod(dir, name.as_bytes(), &NewNode::new(REG)).unwrap();
        fs.write(f.ino, 0, name.as_bytes()).unwrap();
    }
    fs.sync().unwrap();
}

/// Every connection broken again and again while a mount works (creates,
/// writes, commits): the mount reconnects and goes on without an error,
/// and after remount everything it acknowledged is there.
#[test]
fn broken_connections_are_made_again_and_nothing_is_lost() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0x7c01);
    let rounds = 30;
    let done = Arc::new(AtomicBool::new(false));
    watchdog(done.clone(), 120);
    {
        let mnt = mount(&meta, &data);
        let fs = mnt.fs().clone();
        let d = fs.mknod(ROOT_INO, b"d", &NewNode::new(DIR)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let server = mnt.server().expect("the mount runs its server");
        std::thread::scope(|s| {
            let st = stop.clone();
            s.spawn(move || {
                let mut breaks = 0;
                while !st.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(7));
                    server.link().break_connections();
                    breaks += 1;
                }
                assert!(breaks > 5, "the connections were broken {breaks} times");
            });
            for r in 0..rounds {
                work(&fs, d.ino, r);
            }
            stop.store(true, Ordering::SeqCst);
        });
        mnt.unmount().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    assert_clean(&meta, &data);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    assert_work(fs, rounds);
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

/// Sends `bytes` to the server at `addr` on a connection of their own and
/// asserts that the server closes it without an answer.
fn send_and_expect_close(addr: std::net::SocketAddr, bytes: &[u8], what: &str) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = [0u8; 64];
    let r = s.read(&mut buf);
    let closed = match &r {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(
        closed,
        "{what}: the connection wasn't closed unanswered: {r:?}"
    );
}

/// Garbage, an oversized frame header and zeros on their own connections:
/// each is closed and counted; the mount never notices.
#[test]
fn bad_bytes_close_only_their_connection() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0x7c02);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let server = mnt.server().unwrap();
    let addr = server.link().addr();
    let d = fs.mknod(ROOT_INO, b"d", &NewNode::new(DIR)).unwrap();
    let mut huge = Vec::new();
    huge.extend_from_slice(b"SCNF");
    huge.extend_from_slice(&[0xff; 60]);
    let inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: scoutfs.example\r\nAccept: */*\r\n\r\n".to_vec(),
        huge,
        vec![0u8; 4096],
    ];
    for (n, bytes) in inputs.iter().enumerate() {
        send_and_expect_close(addr, bytes, &format!("input {n}"));
        let f = fs
            .mknod(d.ino, format!("after-{n}").as_bytes(), &NewNode::new(REG))
            .unwrap();
        fs.write(f.ino, 0, b"still here").unwrap();
        fs.sync().unwrap();
    }
    // The counter moves once the server thread has seen each close.
    let mut counted = 0;
    for _ in 0..100 {
        counted = server.link().bad_frames();
        if counted >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(counted, 3, "each bad connection counted once");
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

/// Greetings over TCP that are well formed, with valid crcs, but made
/// without the cluster key (or replayed under another greeting id) get no
/// answer: the server closes the connection, counts each, and the mount
/// goes on.
#[test]
fn forged_greetings_are_dropped_unanswered_and_counted() {
    use scoutfs_core::cluster::auth::ClusterKey;
    use scoutfs_core::cluster::net::wire::{Cmd, Frame, FrameHeader, Greeting, Kind};
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0x7c03);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let server = mnt.server().unwrap();
    let addr = server.link().addr();
    let sb = scoutfs_core::store::commit::read_super(&meta, true).unwrap();
    let key = ClusterKey::of(&sb);
    assert!(key.is_secret());
    let g = Greeting {
        fsid: sb.hdr.fsid.get(),
        fmt_vers: scoutfs_format::consts::FORMAT_VERSION,
        server_term: 0,
        rid: 0x5eed,
        flags: 0,
    };
    let frame = |id: u64, data: Vec<u8>| {
        let hdr = FrameHeader {
            seq: 1,
            recv_seq: 0,
            id,
            kind: Kind::Request,
            cmd: Cmd::Greeting,
            error: None,
        };
        Frame::new(hdr, data).unwrap().encode()
    };
    let forged = [
        frame(1, g.encode(&ClusterKey::new([0; 32]), 1)),
        frame(1, g.encode(&ClusterKey::new([0x77; 32]), 1)),
        // Made with the key for greeting 1, sent as greeting 2.
        frame(2, g.encode(&key, 1)),
    ];
    for (n, bytes) in forged.iter().enumerate() {
        send_and_expect_close(addr, bytes, &format!("forged greeting {n}"));
    }
    let mut counted = 0;
    for _ in 0..100 {
        counted = server.link().unauthenticated();
        if counted >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(counted, 3, "each forged greeting counted once");
    let f = fs.mknod(ROOT_INO, b"after", &NewNode::new(REG)).unwrap();
    fs.write(f.ino, 0, b"still here").unwrap();
    fs.sync().unwrap();
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

/// The server is replaced by one of the next term, again and again, while
/// the mount works: the mount reconnects to a new server, reports the
/// locks it holds, and its unanswered requests (commits among them) are
/// handled by the new server once; the work goes on without an error and
/// everything acknowledged is there after remount.
#[test]
fn a_new_server_recovers_the_mounts_locks_and_work_goes_on() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0x7c03);
    let rounds = 60;
    let done = Arc::new(AtomicBool::new(false));
    watchdog(done.clone(), 120);
    {
        let mut mnt = mount(&meta, &data);
        let fs = mnt.fs().clone();
        let d = fs.mknod(ROOT_INO, b"d", &NewNode::new(DIR)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (fs, stop) = (fs.clone(), stop.clone());
            std::thread::spawn(move || {
                for r in 0..rounds {
                    work(&fs, d.ino, r);
                }
                stop.store(true, Ordering::SeqCst);
            })
        };
        let mut restarts = 0;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
            mnt.restart_server().unwrap();
            restarts += 1;
        }
        worker.join().unwrap();
        assert!(restarts >= 10, "the server was replaced {restarts} times");
        assert_eq!(mnt.server().unwrap().term(), 1 + restarts);
        // Locks still work under the last server: a fresh directory and
        // a sync need new grants and a commit.
        let e = fs.mknod(ROOT_INO, b"after", &NewNode::new(DIR)).unwrap();
        fs.mknod(e.ino, b"f", &NewNode::new(REG)).unwrap();
        fs.sync().unwrap();
        mnt.unmount().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    assert_clean(&meta, &data);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    assert_work(fs, rounds);
    let e = fs.lookup(ROOT_INO, b"after").unwrap();
    fs.lookup(e.ino, b"f").unwrap();
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}
