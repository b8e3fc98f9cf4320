//! Offline data on in-process mounts: release frees a file's blocks and
//! leaves it offline (times, data_version and data_seq unchanged), reads,
//! writes and size changes wait until stage brings the bytes back, waiters
//! fail with the errno `data_wait_err` gives, punch-offline and
//! move-blocks follow the original's rules, and a read on one mount of a
//! file released on another is woken by a stage from a third.

mod common;

use scoutfs_core::mount::fs::archive::*;
use scoutfs_core::mount::fs::offline::ESTALE;
use scoutfs_core::mount::fs::types::{NewNode, SetAttr};
use scoutfs_core::mount::fs::wait::*;
use scoutfs_core::mount::fs::{Fs, FsError, EINVAL, ENODATA};
use scoutfs_core::mount::{Mount, MountOptions, MountRole};
use scoutfs_format::ROOT_INO;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

const REG: u32 = libc::S_IFREG | 0o644;
const MB: u64 = 1 << 20;
const ROOT: Caller = Caller {
    uid: 0,
    admin: true,
};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// An archive copy in memory, read as `pread` would.
fn archive(bytes: &[u8]) -> impl Fn(&mut [u8], u64) -> std::io::Result<usize> + '_ {
    move |buf, at| {
        let at = (at as usize).min(bytes.len());
        let n = buf.len().min(bytes.len() - at);
        buf[..n].copy_from_slice(&bytes[at..at + n]);
        Ok(n)
    }
}

fn free_data(fs: &Fs) -> u64 {
    fs.statfs().unwrap().free_data_blocks
}

/// Waits (bounded) until `fs` lists `n` waiting blocks.
fn until_waiting(fs: &Fs, n: usize) -> Vec<Waiting> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let w = fs.data_waiting(0, u64::MAX, usize::MAX);
        if w.len() == n {
            return w;
        }
        assert!(Instant::now() < deadline, "waiting {w:?}, want {n}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn attrs(fs: &Fs, ino: u64) -> AttrX {
    fs.get_attr_x(ino).unwrap()
}

#[test]
fn release_frees_blocks_reads_wait_and_stage_brings_them_back() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xb1);
    let mnt = common::mount(&meta, &data);
    let fs = mnt.fs().clone();
    let f = fs.mknod(ROOT_INO, b"f", &NewNode::new(REG)).unwrap().ino;
    let bytes = pattern(41_000, 3);
    fs.write(f, 0, &bytes).unwrap();
    fs.sync().unwrap();
    fs.sync().unwrap();
    let before = attrs(&fs, f);
    assert_eq!((before.online_blocks, before.offline_blocks), (11, 0));
    let free0 = free_data(&fs);

    // Refusals: another data_version, unaligned ranges, a directory.
    let dv = before.data_version;
    assert_eq!(fs.release_data(f, 0, 45056, dv + 1), Err(ESTALE));
    assert_eq!(fs.release_data(f, 100, 4096, dv), Err(EINVAL));
    assert_eq!(fs.release_data(f, 0, 4095, dv), Err(EINVAL));
    assert!(fs.release_data(ROOT_INO, 0, 4096, 0).is_err());

    // Released (past the end is fine): offline, nothing else changed.
    fs.release_data(f, 0, 1 << 20, dv).unwrap();
    let after = attrs(&fs, f);
    assert_eq!((after.online_blocks, after.offline_blocks), (0, 11));
    assert_eq!(after.data_version, dv);
    assert_eq!(
        after.data_seq, before.data_seq,
        "release is no change of data"
    );
    assert_eq!((after.ctime, after.size), (before.ctime, before.size));
    assert_eq!(
        fs.getattr(f).unwrap().inode.mtime,
        fs.getattr(f).unwrap().inode.mtime
    );
    // The blocks are free once the freeing commit is durable.
    fs.sync().unwrap();
    fs.sync().unwrap();
    assert_eq!(free_data(&fs), free0 + 11, "released blocks are free again");

    // A read waits; it is listed; a stage wakes it with the right bytes.
    let reader = {
        let fs = fs.clone();
        std::thread::spawn(move || fs.read(f, 5000, 20_000))
    };
    let w = until_waiting(&fs, 1);
    assert_eq!(
        w,
        vec![Waiting {
            ino: f,
            iblock: 1,
            ops: DWO_READ
        }]
    );
    assert_eq!(
        fs.stage(f, dv + 1, 0, 41_000, &archive(&bytes)),
        Err(ESTALE)
    );
    assert_eq!(
        fs.stage(f, dv, 0, 50_000, &archive(&bytes)),
        Err(EINVAL),
        "past the end"
    );
    assert_eq!(fs.stage(f, dv, 1, 4095, &archive(&bytes)), Err(EINVAL));
    assert_eq!(
        fs.stage(f, dv, 0, 5000, &archive(&bytes)),
        Err(EINVAL),
        "unaligned end"
    );
    assert_eq!(
        fs.stage(f, dv, 0, 41_000, &archive(&bytes[..30_000])),
        Err(ENODATA),
        "an archive shorter than the range"
    );
    assert_eq!(
        fs.stage(f, dv, 0, 41_000, &archive(&bytes)).unwrap(),
        41_000
    );
    assert_eq!(reader.join().unwrap().unwrap(), bytes[5000..25_000]);
    // Staging again changes nothing (an agent restarted mid-stage).
    assert_eq!(fs.stage(f, dv, 0, 41_000, &archive(&bytes)).unwrap(), 0);
    let staged = attrs(&fs, f);
    assert_eq!((staged.online_blocks, staged.offline_blocks), (11, 0));
    assert_eq!(staged.data_version, dv);
    assert_eq!(
        staged.data_seq, before.data_seq,
        "stage is no change of data"
    );
    assert_eq!(staged.ctime, before.ctime);
    assert_eq!(fs.read(f, 0, 50_000).unwrap(), bytes);
    assert!(fs.data_waiting(0, u64::MAX, 10).is_empty());

    // A partial release, then a partial stage: only those blocks.
    fs.release_data(f, 4096, 8192, dv).unwrap();
    assert_eq!(attrs(&fs, f).offline_blocks, 2);
    assert_eq!(
        fs.read(f, 0, 4096).unwrap(),
        bytes[..4096],
        "online part reads"
    );
    fs.stage(f, dv, 4096, 4096, &archive(&bytes)).unwrap();
    assert_eq!(attrs(&fs, f).offline_blocks, 1);
    fs.stage(f, dv, 0, 41_000, &archive(&bytes)).unwrap();
    assert_eq!(fs.read(f, 0, 50_000).unwrap(), bytes);
    drop(fs);
    drop(mnt);
    common::assert_clean(&meta, &data);
}

#[test]
fn waiters_fail_with_the_given_errno_and_at_unmount() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xb2);
    let mnt = common::mount(&meta, &data);
    let fs = mnt.fs().clone();
    let f = fs.mknod(ROOT_INO, b"f", &NewNode::new(REG)).unwrap().ino;
    fs.write(f, 0, &pattern(3 * 4096, 1)).unwrap();
    let dv = attrs(&fs, f).data_version;
    fs.release_data(f, 0, 3 * 4096, dv).unwrap();

    let spawn = |what: &'static str| {
        let fs = fs.clone();
        std::thread::spawn(move || -> Result<(), FsError> {
            match what {
                "read" => fs.read(f, 4096, 10).map(drop),
                "write" => fs.write(f, 8192, b"x").map(drop),
                _ => fs.truncate(f, 10).map(drop),
            }
        })
    };
    let r = spawn("read");
    let w = spawn("write");
    let t = spawn("truncate");
    let listed = until_waiting(&fs, 3);
    let ops: Vec<(u64, u8)> = listed.iter().map(|w| (w.iblock, w.ops)).collect();
    assert_eq!(
        ops,
        vec![(0, DWO_CHANGE_SIZE), (1, DWO_READ), (2, DWO_WRITE)],
        "{listed:?}"
    );
    // Listing resumes after a position.
    let after = fs.data_waiting(f, 0, 10);
    assert_eq!(after.len(), 2);
    assert_eq!(
        fs.data_wait_err(f, 0, 1 << 20, 0, libc::EIO),
        Err(EINVAL),
        "no ops"
    );
    assert_eq!(
        fs.data_wait_err(f, 0, 1 << 20, DWO_READ, 0),
        Err(EINVAL),
        "errno 0"
    );
    // Only the reader, by its op and range.
    assert_eq!(
        fs.data_wait_err(f, 8192, 4096, DWO_READ, libc::ENOLINK),
        Ok(0)
    );
    assert_eq!(
        fs.data_wait_err(f, 4096, 4096, DWO_READ, libc::ENOLINK),
        Ok(1)
    );
    assert_eq!(r.join().unwrap(), Err(FsError(libc::ENOLINK)));
    // A read that comes to wait there right after fails the same way (the
    // kernel reads a page again when its readahead failed).
    assert_eq!(fs.read(f, 4096, 10), Err(FsError(libc::ENOLINK)));
    assert_eq!(
        fs.data_wait_err(f, 0, 1 << 20, DWO_WRITE, libc::EHOSTDOWN),
        Ok(1)
    );
    assert_eq!(w.join().unwrap(), Err(FsError(libc::EHOSTDOWN)));
    until_waiting(&fs, 1);
    // Unmounting fails what still waits.
    drop(fs);
    mnt.unmount().unwrap();
    assert_eq!(t.join().unwrap(), Err(FsError(libc::ESHUTDOWN)));
    common::assert_clean(&meta, &data);
}

#[test]
fn a_thousand_waiters_hold_no_threads_and_all_wake() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xb3);
    let mnt = common::mount(&meta, &data);
    let fs = mnt.fs().clone();
    let f = fs.mknod(ROOT_INO, b"f", &NewNode::new(REG)).unwrap().ino;
    let bytes = pattern(64 * 4096, 9);
    fs.write(f, 0, &bytes).unwrap();
    let dv = attrs(&fs, f).data_version;
    fs.release_data(f, 0, bytes.len() as u64, dv).unwrap();
    let (tx, rx) = channel();
    for i in 0..1000u64 {
        let tx = tx.clone();
        let off = (i % 64) * 4096;
        let r = fs.read_or_wait(f, off, 4096, &mut || {
            let tx = tx.clone();
            Box::new(move |end| {
                let _ = tx.send((off, end));
            })
        });
        assert!(r.is_none(), "read {i} did not wait");
    }
    assert_eq!(fs.waits.count(), 1000);
    // Other files are served meanwhile.
    let g = fs.mknod(ROOT_INO, b"g", &NewNode::new(REG)).unwrap().ino;
    for i in 0..100u64 {
        fs.write(g, i * 4096, &[i as u8; 4096]).unwrap();
    }
    assert_eq!(fs.read(g, 99 * 4096, 1).unwrap(), [99]);
    fs.stage(f, dv, 0, bytes.len() as u64, &archive(&bytes))
        .unwrap();
    for _ in 0..1000 {
        let (off, end) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(end, WaitEnd::Woken);
        let got = fs.read(f, off, 4096).unwrap();
        assert_eq!(got, bytes[off as usize..off as usize + 4096]);
    }
    assert_eq!(fs.waits.count(), 0);
    drop(fs);
    drop(mnt);
    common::assert_clean(&meta, &data);
}

#[test]
fn punch_offline_and_move_blocks_follow_the_rules() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xb4);
    let mnt = common::mount(&meta, &data);
    let fs = mnt.fs().clone();
    // A sparse file restored: all offline, then its holes punched.
    let r = fs.mknod(ROOT_INO, b"r", &NewNode::new(REG)).unwrap().ino;
    let restore = AttrX {
        mask: AX_DATA_VERSION | AX_SIZE,
        flags: AX_F_SIZE_OFFLINE,
        data_version: 7,
        size: 5 * 4096,
        ..AttrX::default()
    };
    fs.set_attr_x(r, &restore, ROOT).unwrap();
    assert_eq!(
        fs.punch_offline(r, 8, 4096, 8192),
        Err(EINVAL),
        "data_version"
    );
    assert_eq!(fs.punch_offline(r, 7, 100, 4096), Err(EINVAL), "unaligned");
    fs.punch_offline(r, 7, 4096, 8192).unwrap();
    let x = attrs(&fs, r);
    assert_eq!((x.offline_blocks, x.data_version, x.size), (3, 7, 5 * 4096));
    assert_eq!(
        fs.read(r, 4096, 8192).unwrap(),
        vec![0; 8192],
        "holes read zeros"
    );
    let archived = pattern(5 * 4096, 4);
    fs.stage(r, 7, 0, 4096, &archive(&archived)).unwrap();
    assert_eq!(
        fs.punch_offline(r, 7, 0, 4096),
        Err(EINVAL),
        "an online block"
    );

    // move-blocks with stage: the destination's offline range takes the
    // source's blocks; only the source changes as a file.
    let tmp = fs.mknod(ROOT_INO, b"tmp", &NewNode::new(REG)).unwrap().ino;
    fs.write(tmp, 0, &archived[3 * 4096..]).unwrap();
    let tmp_before = attrs(&fs, tmp);
    let free0 = free_data(&fs);
    assert_eq!(
        fs.move_blocks(tmp, 0, 8192, r, 3 * 4096, 8, true),
        Err(ESTALE)
    );
    assert_eq!(
        fs.move_blocks(tmp, 0, 8192, r, 4096, 7, true),
        Err(EINVAL),
        "the destination range is not offline"
    );
    fs.move_blocks(tmp, 0, 8192, r, 3 * 4096, 7, true).unwrap();
    let x = attrs(&fs, r);
    assert_eq!(
        (x.offline_blocks, x.online_blocks, x.data_version),
        (0, 3, 7)
    );
    let mut want = archived.clone();
    want[4096..3 * 4096].fill(0);
    assert_eq!(fs.read(r, 0, 5 * 4096).unwrap(), want);
    let t = attrs(&fs, tmp);
    assert_eq!(t.online_blocks, 0);
    assert_eq!(t.data_version, tmp_before.data_version + 1);
    assert_eq!(
        fs.read(tmp, 0, 8192).unwrap(),
        vec![0; 8192],
        "the source is a hole"
    );
    assert_eq!(free_data(&fs), free0, "no block copied or freed");

    // Without stage: offline blocks in either range refuse; the
    // destination grows and both change as files.
    let off = fs.mknod(ROOT_INO, b"off", &NewNode::new(REG)).unwrap().ino;
    fs.set_attr_x(off, &restore, ROOT).unwrap();
    let src = fs.mknod(ROOT_INO, b"src", &NewNode::new(REG)).unwrap().ino;
    fs.write(src, 0, &pattern(10_000, 5)).unwrap();
    assert_eq!(fs.move_blocks(src, 0, 8192, off, 0, 0, false), Err(ENODATA));
    assert_eq!(fs.move_blocks(off, 0, 8192, src, 0, 0, false), Err(ENODATA));
    assert_eq!(
        fs.move_blocks(src, 0, 8192, src, 8192, 0, false),
        Err(EINVAL)
    );
    assert_eq!(
        fs.move_blocks(src, 0, 5000, r, 0, 0, false),
        Err(EINVAL),
        "unaligned length"
    );
    let dst = fs.mknod(ROOT_INO, b"dst", &NewNode::new(REG)).unwrap().ino;
    let d0 = attrs(&fs, dst);
    fs.move_blocks(src, 8192, 10_000 - 8192, dst, 4096, 0, false)
        .unwrap();
    let d = attrs(&fs, dst);
    assert_eq!(d.size, 4096 + 10_000 - 8192);
    assert_eq!(d.data_version, d0.data_version + 1);
    assert_eq!(
        fs.read(dst, 4096, 4096).unwrap(),
        pattern(10_000, 5)[8192..]
    );
    // Retention refuses it.
    fs.set_attr_x(
        dst,
        &AttrX {
            mask: AX_RETENTION,
            bits: AX_B_RETENTION,
            ..AttrX::default()
        },
        ROOT,
    )
    .unwrap();
    assert_eq!(
        fs.move_blocks(src, 0, 4096, dst, 0, 0, false),
        Err(FsError(libc::EPERM))
    );
    let clear = AttrX {
        mask: AX_RETENTION,
        ..AttrX::default()
    };
    fs.set_attr_x(dst, &clear, ROOT).unwrap();
    // Unlinking files with offline extents frees nothing that is not
    // theirs.
    for (name, ino) in [(&b"off"[..], off), (b"r", r)] {
        fs.unlink(ROOT_INO, name).unwrap();
        fs.evict(ino).unwrap();
    }
    let _ = SetAttr::default();
    drop(fs);
    drop(mnt);
    common::assert_clean(&meta, &data);
}

fn member(
    meta: &scoutfs_core::store::dev::MemDev,
    data: &scoutfs_core::store::dev::MemDev,
    role: MountRole,
) -> Mount {
    let opts = MountOptions {
        role,
        merge_interval_ms: 300,
        commit_interval_ms: 500,
        heartbeat_timeout_ms: 2_000,
        ..Default::default()
    };
    common::mount_with(meta, data, &opts)
}

#[test]
fn released_on_one_mount_waited_on_another_staged_from_a_third() {
    let (meta, data) = common::quorum_fs(1, 0x0ff1);
    let mounts = common::Together(vec![
        member(&meta, &data, MountRole::Quorum { slot: 0 }),
        member(&meta, &data, MountRole::Client),
        member(&meta, &data, MountRole::Client),
    ]);
    let fss: Vec<Arc<Fs>> = mounts.0.iter().map(|m| m.fs().clone()).collect();
    let f = fss[0]
        .mknod(ROOT_INO, b"f", &NewNode::new(REG))
        .unwrap()
        .ino;
    let bytes = pattern(300_000, 7);
    fss[0].write(f, 0, &bytes).unwrap();
    let dv = attrs(&fss[1], f).data_version;
    let free0 = free_data(&fss[2]);
    fss[1]
        .release_data(f, 0, 300_000u64.next_multiple_of(4096), dv)
        .unwrap();
    // The freed blocks show on every mount within a commit or two.
    let deadline = Instant::now() + Duration::from_secs(20);
    while free_data(&fss[2]) < free0 + 74 {
        assert!(
            Instant::now() < deadline,
            "released blocks did not come back"
        );
        for fs in &fss {
            fs.sync().unwrap();
        }
    }
    // Mounts 0 and 2 follow new waiters.
    let far = fss[0].waits.feed.subscribe();
    let near = fss[2].waits.feed.subscribe();
    // Readers on mount 2 wait, while mount 0 writes another file.
    let readers: Vec<_> = (0..4u64)
        .map(|i| {
            let fs = fss[2].clone();
            std::thread::spawn(move || fs.read(f, i * 70_000, 10_000))
        })
        .collect();
    until_waiting(&fss[2], 4);
    // Each follower heard of the four: mount 2 from itself, mount 0 from
    // the server.
    for (rx, local) in [(&near, true), (&far, false)] {
        let mut heard = Vec::new();
        while heard.len() < 4 {
            let item = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("heard only {heard:?}"));
            assert_eq!(item.local, local, "{item:?}");
            heard.extend(item.blocks);
        }
        heard.sort();
        let blocks: Vec<u64> = heard.iter().map(|w| w.iblock).collect();
        assert_eq!(blocks, [0, 17, 34, 51], "{heard:?}");
        assert!(heard.iter().all(|w| w.ino == f && w.ops == DWO_READ));
    }
    // Any mount lists every mount's waiters.
    let listed = fss[0].data_waiting_all(0, u64::MAX, 100).unwrap();
    let want: Vec<Waiting> = (0..4u64)
        .map(|i| Waiting {
            ino: f,
            iblock: i * 70_000 / 4096,
            ops: DWO_READ,
        })
        .collect();
    assert_eq!(listed, want);
    assert_eq!(
        fss[0].data_waiting_all(f, 17, 100).unwrap(),
        want[2..],
        "listing resumes after a position"
    );
    assert_eq!(fss[1].data_waiting_all(0, u64::MAX, 1).unwrap(), want[..1]);
    // Any mount fails another mount's waiters.
    let extra = {
        let fs = fss[2].clone();
        std::thread::spawn(move || fs.read(f, 200_000, 10))
    };
    until_waiting(&fss[2], 5);
    let n = fss[1]
        .data_wait_err_all(f, 200_000, 10, DWO_READ, libc::ENOLINK)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(extra.join().unwrap(), Err(FsError(libc::ENOLINK)));
    let g = fss[0]
        .mknod(ROOT_INO, b"g", &NewNode::new(REG))
        .unwrap()
        .ino;
    fss[0].write(g, 0, b"meanwhile").unwrap();
    assert_eq!(fss[2].read(g, 0, 9).unwrap(), b"meanwhile");
    // Mount 1 stages; mount 2's readers get the archived bytes.
    fss[1].stage(f, dv, 0, 300_000, &archive(&bytes)).unwrap();
    for (i, r) in readers.into_iter().enumerate() {
        let off = i * 70_000;
        assert_eq!(r.join().unwrap().unwrap(), bytes[off..off + 10_000]);
    }
    assert_eq!(attrs(&fss[0], f).offline_blocks, 0);
    drop(fss);
    mounts.unmount();
    common::assert_clean(&meta, &data);
}

/// A block that names itself: file, version and block number, then bytes
/// that follow from them. A read can tell a whole block of some write from
/// a torn, misplaced or invented one.
fn race_block(file: u64, version: u64, block: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(4096);
    b.extend_from_slice(&file.to_le_bytes());
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&block.to_le_bytes());
    let mut x = file.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ version.rotate_left(17) ^ block ^ 1;
    while b.len() < 4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.push(x as u8);
    }
    b
}

/// Checks every whole block of a read of `file` at block `first`: zeros
/// (a hole), or a block some write of this file made at this place, of a
/// version already handed out.
fn check_race_read(file: u64, first: u64, bytes: &[u8], max_version: u64) {
    for (i, b) in bytes.chunks_exact(4096).enumerate() {
        let block = first + i as u64;
        if b.iter().all(|&x| x == 0) {
            continue;
        }
        let v = u64::from_le_bytes(b[8..16].try_into().unwrap());
        assert!(
            v <= max_version && b == race_block(file, v, block).as_slice(),
            "file {file} block {block}: not a block written there (version {v}, newest {max_version})"
        );
    }
}

#[test]
fn stage_and_release_race_reads_writes_and_truncates_on_other_mounts() {
    const FILES: u64 = 6;
    const BLOCKS: u64 = 64;
    let (meta, data) = common::quorum_fs(1, 0x0ff2);
    let mounts = common::Together(vec![
        member(&meta, &data, MountRole::Quorum { slot: 0 }),
        member(&meta, &data, MountRole::Client),
        member(&meta, &data, MountRole::Client),
    ]);
    let fss: Vec<Arc<Fs>> = mounts.0.iter().map(|m| m.fs().clone()).collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("race seed {seed}");
    let rng = |s: &mut u64, n: u64| {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s % n
    };
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    // The model: each file's blocks by the version that last wrote them
    // (0: a hole), as acknowledged by the writer on mount 2.
    let versions = Arc::new(AtomicU64::new(1));
    let mut files = Vec::new();
    let mut model: Vec<Vec<u64>> = Vec::new();
    for i in 0..FILES {
        let f = fss[0]
            .mknod(ROOT_INO, format!("r{i}").as_bytes(), &NewNode::new(REG))
            .unwrap()
            .ino;
        let mut buf = Vec::new();
        for b in 0..BLOCKS {
            buf.extend_from_slice(&race_block(f, 1, b));
        }
        fss[0].write(f, 0, &buf).unwrap();
        files.push(f);
        model.push(vec![1; BLOCKS as usize]);
    }
    let model = Arc::new(Mutex::new(model));
    // Archive copies by file and data_version.
    type Copies = BTreeMap<(u64, u64), Vec<u8>>;
    let copies: Arc<Mutex<Copies>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // The stager stops last: a read or write may wait until then.
    let stop_stager = Arc::new(AtomicBool::new(false));
    let released = Arc::new(AtomicU64::new(0));
    let staged = Arc::new(AtomicU64::new(0));
    // Stages a file's offline blocks from its copy at the version they
    // were released at (the newest not above its data_version).
    let stage_file = {
        let copies = copies.clone();
        move |fs: &Fs, f: u64| -> bool {
            let x = attrs(fs, f);
            if x.offline_blocks == 0 {
                return false;
            }
            let copy = copies
                .lock()
                .unwrap()
                .range((f, 0)..=(f, x.data_version))
                .next_back()
                .map(|(_, b)| b.clone())
                .expect("offline blocks have a copy");
            let res = fs.stage(f, x.data_version, 0, x.size, &archive(&copy));
            match res {
                Ok(_) => true,
                Err(e) if e == ESTALE => false,
                Err(e) => panic!("stage of {f}: {e:?}"),
            }
        }
    };
    std::thread::scope(|s| {
        let mut workers = Vec::new();
        // Mount 0 archives and releases.
        {
            let (fs, files, copies, stop, released) = (&fss[0], &files, &copies, &stop, &released);
            let mut r = seed ^ 11;
            workers.push(s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let f = files[rng(&mut r, FILES) as usize];
                    let x = attrs(fs, f);
                    if x.offline_blocks > 0 || x.size == 0 {
                        continue;
                    }
                    let bytes = fs.read(f, 0, x.size as usize).unwrap();
                    if attrs(fs, f).data_version != x.data_version {
                        continue; // changed while copied
                    }
                    copies.lock().unwrap().insert((f, x.data_version), bytes);
                    match fs.release_data(f, 0, x.size.next_multiple_of(4096), x.data_version) {
                        Ok(()) => {
                            released.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e == ESTALE => {}
                        Err(e) => panic!("release of {f}: {e:?}"),
                    }
                    std::thread::sleep(Duration::from_millis(rng(&mut r, 20)));
                }
            }));
        }
        // Mount 1 serves every mount's waiters, and stages at random.
        {
            let (fs, files, stop, staged, stage_file) =
                (&fss[1], &files, &stop_stager, &staged, &stage_file);
            let mut r = seed ^ 13;
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut inos: Vec<u64> = fs
                        .data_waiting_all(0, u64::MAX, 1000)
                        .unwrap()
                        .iter()
                        .map(|w| w.ino)
                        .collect();
                    inos.dedup();
                    if rng(&mut r, 4) == 0 {
                        inos.push(files[rng(&mut r, FILES) as usize]);
                    }
                    for f in inos {
                        if stage_file(fs, f) {
                            staged.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        // Mount 2 writes block ranges and truncates, in turn.
        {
            let (fs, files, stop, model, versions) = (&fss[2], &files, &stop, &model, &versions);
            let mut r = seed ^ 17;
            workers.push(s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = rng(&mut r, FILES) as usize;
                    let f = files[i];
                    if rng(&mut r, 5) == 0 {
                        let blocks = rng(&mut r, BLOCKS + 1);
                        fs.truncate(f, blocks * 4096).unwrap();
                        // Shorter, or longer with a hole.
                        let mut m = model.lock().unwrap();
                        m[i].resize(blocks as usize, 0);
                    } else {
                        let first = rng(&mut r, BLOCKS);
                        let n = 1 + rng(&mut r, BLOCKS - first);
                        let v = versions.fetch_add(1, Ordering::SeqCst) + 1;
                        let mut buf = Vec::new();
                        for b in first..first + n {
                            buf.extend_from_slice(&race_block(f, v, b));
                        }
                        fs.write(f, first * 4096, &buf).unwrap();
                        let mut m = model.lock().unwrap();
                        let end = (first + n) as usize;
                        if m[i].len() < end {
                            m[i].resize(end, 0);
                        }
                        for b in first as usize..end {
                            m[i][b] = v;
                        }
                    }
                }
            }));
        }
        // Mounts 0 and 1 read.
        for slot in [0usize, 1] {
            let (fs, files, stop, versions) = (&fss[slot], &files, &stop, &versions);
            let mut r = seed ^ (23 + slot as u64);
            workers.push(s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let f = files[rng(&mut r, FILES) as usize];
                    let first = rng(&mut r, BLOCKS);
                    let n = 1 + rng(&mut r, 16);
                    let got = fs.read(f, first * 4096, (n * 4096) as usize).unwrap();
                    // Every version written so far was handed out by now.
                    let newest = versions.load(Ordering::SeqCst);
                    check_race_read(f, first, &got, newest);
                }
            }));
        }
        std::thread::sleep(Duration::from_secs(6));
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            if let Err(p) = w.join() {
                stop_stager.store(true, Ordering::Relaxed);
                std::panic::resume_unwind(p);
            }
        }
        stop_stager.store(true, Ordering::Relaxed);
    });
    let (released, staged) = (
        released.load(Ordering::Relaxed),
        staged.load(Ordering::Relaxed),
    );
    eprintln!("race: {released} releases, {staged} stages");
    assert!(
        released > 0 && staged > 0,
        "{released} releases, {staged} stages"
    );
    // Everything staged; then every mount reads exactly the model.
    for &f in &files {
        stage_file(&fss[1], f);
    }
    let model = model.lock().unwrap().clone();
    for (i, &f) in files.iter().enumerate() {
        let want: Vec<u8> = model[i]
            .iter()
            .enumerate()
            .flat_map(|(b, &v)| {
                if v == 0 {
                    vec![0; 4096]
                } else {
                    race_block(f, v, b as u64)
                }
            })
            .collect();
        for (slot, fs) in fss.iter().enumerate() {
            let x = attrs(fs, f);
            assert_eq!(
                (x.size, x.offline_blocks),
                (want.len() as u64, 0),
                "file {i} on mount {slot}"
            );
            assert!(
                fs.read(f, 0, want.len()).unwrap() == want,
                "file {i} on mount {slot} is not what was written"
            );
        }
    }
    drop(fss);
    mounts.unmount();
    common::assert_clean(&meta, &data);
}
