//! Offline data on in-process mounts: release frees a file's blocks and
//! leaves it offline (times, data_version and data_seq unchanged), reads,
//! writes and size changes wait until stage brings the bytes back, waiters
//! fail with the errno `data_wait_err` gives, punch-offline and
//! move-blocks follow the original's rules, and a read on one mount of a
//! file released on another is woken by a stage from a third. After the
//! original's tests: block counts through writes, appends, releases and
//! stages (basic-block-counts, simple-release-extents), staging in parts
//! while readers wait and read (stage-multi-part), stage and release racing
//! reads, writes and truncates on other mounts (stage-release-race-alloc),
//! and cycles on each mount's own files over many rounds
//! (archive-light-cycle).

mod common;

use scoutfs_core::mount::fs::archive::*;
use scoutfs_core::mount::fs::offline::ESTALE;
use scoutfs_core::mount::fs::types::NewNode;
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

/// Waits (bounded) until `fs` has `n` operations waiting.
fn until_waiters(fs: &Fs, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs.waits.count() != n {
        assert!(
            Instant::now() < deadline,
            "{} waiting, want {n}",
            fs.waits.count()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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
    let mtime0 = fs.getattr(f).unwrap().inode.mtime;

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
    assert_eq!(fs.getattr(f).unwrap().inode.mtime, mtime0);
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

/// Three mounts of a one-slot quorum filesystem (the member first), that
/// unmount together, and their filesystems.
fn three_mounts(
    meta: &scoutfs_core::store::dev::MemDev,
    data: &scoutfs_core::store::dev::MemDev,
) -> (common::Together, Vec<Arc<Fs>>) {
    let mounts = common::Together(vec![
        member(meta, data, MountRole::Quorum { slot: 0 }),
        member(meta, data, MountRole::Client),
        member(meta, data, MountRole::Client),
    ]);
    let fss = mounts.0.iter().map(|m| m.fs().clone()).collect();
    (mounts, fss)
}

#[test]
fn released_on_one_mount_waited_on_another_staged_from_a_third() {
    let (meta, data) = common::quorum_fs(1, 0x0ff1);
    let (mounts, fss) = three_mounts(&meta, &data);
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
    let (mounts, fss) = three_mounts(&meta, &data);
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

/// The online and offline block counts and st_blocks of `ino`.
fn counts(fs: &Fs, ino: u64) -> (u64, u64, u64) {
    let x = attrs(fs, ino);
    (
        x.online_blocks,
        x.offline_blocks,
        fs.getattr(ino).unwrap().blocks_512(),
    )
}

#[test]
fn block_counts_follow_writes_appends_releases_and_stages() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xb5);
    let mnt = common::mount(&meta, &data);
    let fs = mnt.fs().clone();
    let f = fs.mknod(ROOT_INO, b"f", &NewNode::new(REG)).unwrap().ino;
    assert_eq!(counts(&fs, f), (0, 0, 0));
    let mut bytes = pattern(3 * 4096, 5);
    fs.write(f, 0, &bytes).unwrap();
    assert_eq!(counts(&fs, f), (3, 0, 24), "written");
    fs.write(f, 4096, &pattern(4096, 6)).unwrap();
    bytes[4096..8192].copy_from_slice(&pattern(4096, 6));
    assert_eq!(counts(&fs, f), (3, 0, 24), "overwritten");
    // Writes at the end preallocate past it (online, counted) until the
    // last close gives back what the file did not grow into.
    fs.open_for(f, true).unwrap();
    fs.write(f, 3 * 4096, &pattern(100, 7)).unwrap();
    bytes.extend_from_slice(&pattern(100, 7));
    let (online, ..) = counts(&fs, f);
    assert!(online >= 4, "appended: {online} blocks online");
    fs.release(f).unwrap();
    assert_eq!(
        counts(&fs, f),
        (4, 0, 32),
        "appended a partial block, closed"
    );
    let dv = attrs(&fs, f).data_version;

    // One block in the middle, then the rest and far past the end.
    fs.release_data(f, 4096, 4096, dv).unwrap();
    assert_eq!(counts(&fs, f), (3, 1, 24), "the middle released");
    fs.release_data(f, 0, 64 * 4096, dv).unwrap();
    assert_eq!(counts(&fs, f), (0, 4, 0), "all released, past the end too");
    fs.release_data(f, 0, 64 * 4096, dv).unwrap();
    assert_eq!(counts(&fs, f), (0, 4, 0), "released again: no change");
    assert_eq!(attrs(&fs, f).size, bytes.len() as u64);

    // The partial tail block staged alone (its end is the file's end),
    // then the rest.
    let tail = 3 * 4096;
    assert_eq!(
        fs.stage(f, dv, tail, 100, &archive(&bytes)).unwrap(),
        100,
        "the tail"
    );
    assert_eq!(counts(&fs, f), (1, 3, 8), "the tail staged");
    assert_eq!(fs.read(f, tail, 4096).unwrap(), bytes[tail as usize..]);
    fs.stage(f, dv, 0, tail, &archive(&bytes)).unwrap();
    assert_eq!(counts(&fs, f), (4, 0, 32), "all staged");
    assert_eq!(fs.read(f, 0, 1 << 20).unwrap(), bytes);
    assert_eq!(attrs(&fs, f).data_version, dv);

    // A sparse file: only its written blocks go offline, and its holes
    // read as zeros without waiting.
    let s = fs.mknod(ROOT_INO, b"s", &NewNode::new(REG)).unwrap().ino;
    fs.open_for(s, true).unwrap();
    fs.write(s, 0, &[1; 4096]).unwrap();
    fs.write(s, 4 * 4096, &[2; 4096]).unwrap();
    fs.release(s).unwrap();
    assert_eq!(counts(&fs, s), (2, 0, 16));
    let sdv = attrs(&fs, s).data_version;
    fs.release_data(s, 0, 5 * 4096, sdv).unwrap();
    assert_eq!(counts(&fs, s), (0, 2, 0), "the holes stay holes");
    assert_eq!(fs.read(s, 4096, 3 * 4096).unwrap(), vec![0; 3 * 4096]);
    assert_eq!(fs.waits.count(), 0);

    // Staged, only its offline blocks are written: the holes stay holes.
    let mut sparse = vec![1; 4096];
    sparse.resize(4 * 4096, 0);
    sparse.extend_from_slice(&[2; 4096]);
    fs.stage(s, sdv, 0, 5 * 4096, &archive(&sparse)).unwrap();
    assert_eq!(counts(&fs, s), (2, 0, 16), "only the offline blocks staged");
    assert_eq!(fs.read(s, 0, 1 << 20).unwrap(), sparse);
    drop(fs);
    drop(mnt);
    common::assert_clean(&meta, &data);
}

#[test]
fn staging_in_parts_wakes_each_reader_once_its_blocks_are_in() {
    const BLOCKS: usize = 32;
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xb6);
    let mnt = common::mount(&meta, &data);
    let fs = mnt.fs().clone();
    let f = fs.mknod(ROOT_INO, b"f", &NewNode::new(REG)).unwrap().ino;
    // The last block is partial: the last part ends at the file's end.
    let len = BLOCKS * 4096 - 1000;
    let bytes = pattern(len, 11);
    fs.write(f, 0, &bytes).unwrap();
    let before = attrs(&fs, f);
    let dv = before.data_version;
    fs.release_data(f, 0, (BLOCKS * 4096) as u64, dv).unwrap();

    let read = |off: usize, n: usize| {
        let fs = fs.clone();
        std::thread::spawn(move || fs.read(f, off as u64, n).unwrap())
    };
    let first = read(0, 4 * 4096);
    let second = read(8 * 4096 + 10, 8 * 4096);
    let whole = read(0, len);
    until_waiters(&fs, 3);
    // Another task reads at random all along: whatever it gets is the
    // archived bytes.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let random = {
        let (fs, bytes, stop) = (fs.clone(), bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut x = 0x9e37_79b9u64;
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = (x % len as u64) as usize;
                let n = 1 + (x >> 32) as usize % 20_000;
                let got = fs.read(f, off as u64, n).unwrap();
                let end = (off + n).min(len);
                assert!(got == bytes[off..end], "read {off}+{n}");
                reads += 1;
            }
            reads
        })
    };

    // Part one: blocks 0..8. Only the first reader is done; the others
    // wait at block 8 now.
    assert_eq!(
        fs.stage(f, dv, 0, 8 * 4096, &archive(&bytes)).unwrap(),
        8 * 4096
    );
    assert_eq!(first.join().unwrap(), bytes[..4 * 4096]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs
        .data_waiting(0, u64::MAX, 10)
        .iter()
        .any(|w| w.iblock < 8)
    {
        assert!(Instant::now() < deadline, "waiters still before block 8");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!second.is_finished() && !whole.is_finished());
    assert_eq!(attrs(&fs, f).offline_blocks, (BLOCKS - 8) as u64);

    // Part two: blocks 8..20 (the second reader's range ends at 16).
    fs.stage(f, dv, 8 * 4096, 12 * 4096, &archive(&bytes))
        .unwrap();
    assert_eq!(second.join().unwrap(), bytes[8 * 4096 + 10..16 * 4096 + 10]);
    assert!(
        !whole.is_finished(),
        "the whole read returned before its last part"
    );
    // The last part, to the file's end.
    fs.stage(f, dv, 20 * 4096, (len - 20 * 4096) as u64, &archive(&bytes))
        .unwrap();
    assert!(whole.join().unwrap() == bytes, "the whole file");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = random.join().unwrap();
    eprintln!("random reads while staging: {reads}");
    // Staged in parts, the file is as it was: times, data_seq and
    // data_version untouched.
    let after = attrs(&fs, f);
    assert_eq!(
        (after.online_blocks, after.offline_blocks),
        (BLOCKS as u64, 0)
    );
    assert_eq!(
        (after.data_version, after.data_seq, after.ctime, after.size),
        (dv, before.data_seq, before.ctime, before.size)
    );
    assert_eq!(fs.waits.count(), 0);
    drop(fs);
    drop(mnt);
    common::assert_clean(&meta, &data);
}

#[test]
fn archive_cycles_on_each_mounts_own_files_over_many_rounds() {
    const ROUNDS: usize = 12;
    const FILES: usize = 4;
    let (meta, data) = common::quorum_fs(1, 0x0ff3);
    let (mounts, fss) = three_mounts(&meta, &data);
    let seed = common::seed(0x11c4);
    eprintln!("cycle seed {seed}");
    // Each mount's own directory of files.
    let dirs: Vec<u64> = (0..fss.len())
        .map(|m| {
            let mode = libc::S_IFDIR | 0o755;
            fss[m]
                .mknod(ROOT_INO, format!("m{m}").as_bytes(), &NewNode::new(mode))
                .unwrap()
                .ino
        })
        .collect();
    for fs in &fss {
        fs.sync().unwrap();
    }
    let free0 = free_data(&fss[0]);
    // What each mount left in its files, checked by the others at the end.
    let finals: Vec<Vec<(u64, Vec<u8>)>> = std::thread::scope(|s| {
        let workers: Vec<_> = fss
            .iter()
            .zip(&dirs)
            .enumerate()
            .map(|(m, (fs, &dir))| {
                s.spawn(move || {
                    let mut x = seed ^ (m as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let mut rnd = |n: u64| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x % n
                    };
                    let files: Vec<u64> = (0..FILES)
                        .map(|i| {
                            fs.mknod(dir, format!("f{i}").as_bytes(), &NewNode::new(REG))
                                .unwrap()
                                .ino
                        })
                        .collect();
                    let mut contents = vec![Vec::new(); FILES];
                    for round in 0..ROUNDS {
                        for (i, &f) in files.iter().enumerate() {
                            // New contents of a random length, some
                            // rounds a restore of a new file instead.
                            let len = 1 + rnd(40 * 4096) as usize;
                            let bytes = pattern(len, (m * 64 + round * 4 + i) as u8);
                            // A file left offline is staged first: a
                            // size change waits for offline blocks past
                            // the new size, as it did in the original.
                            let x = attrs(fs, f);
                            if x.offline_blocks > 0 {
                                fs.stage(f, x.data_version, 0, x.size, &archive(&contents[i]))
                                    .unwrap();
                            }
                            fs.truncate(f, 0).unwrap();
                            fs.write(f, 0, &bytes).unwrap();
                            let dv = attrs(fs, f).data_version;
                            // The copy, then the release of its version.
                            let copy = fs.read(f, 0, len).unwrap();
                            assert!(copy == bytes, "mount {m} file {i} round {round}");
                            let blocks = len.div_ceil(4096) as u64;
                            fs.release_data(f, 0, blocks * 4096, dv).unwrap();
                            assert_eq!(
                                (attrs(fs, f).online_blocks, attrs(fs, f).offline_blocks),
                                (0, blocks)
                            );
                            // Some rounds leave the file offline until
                            // the next; the others stage it back now, in
                            // one part or two.
                            match rnd(3) {
                                0 => {}
                                1 => {
                                    fs.stage(f, dv, 0, len as u64, &archive(&copy)).unwrap();
                                }
                                _ => {
                                    let half = (blocks / 2) * 4096;
                                    fs.stage(f, dv, half, len as u64 - half, &archive(&copy))
                                        .unwrap();
                                    fs.stage(f, dv, 0, half, &archive(&copy)).unwrap();
                                }
                            }
                            contents[i] = copy;
                        }
                    }
                    // At the end every file is staged and read back.
                    for (i, &f) in files.iter().enumerate() {
                        let x = attrs(fs, f);
                        fs.stage(f, x.data_version, 0, x.size, &archive(&contents[i]))
                            .unwrap();
                        assert!(fs.read(f, 0, 1 << 20).unwrap() == contents[i]);
                    }
                    files.into_iter().zip(contents).collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    // Every mount reads every mount's files as their writer left them.
    for (m, files) in finals.iter().enumerate() {
        for (reader, fs) in fss.iter().enumerate() {
            for (f, want) in files {
                assert!(
                    fs.read(*f, 0, 1 << 20).unwrap() == *want,
                    "mount {reader} reading mount {m}'s file {f}"
                );
                assert_eq!(attrs(fs, *f).offline_blocks, 0);
            }
        }
    }
    // Deleted, every block comes back once the frees are durable (but
    // what the mounts hold ready for their next writes: 64 blocks, as the
    // cluster space tests allow).
    for (m, files) in finals.iter().enumerate() {
        for (i, _) in files.iter().enumerate() {
            fss[m].unlink(dirs[m], format!("f{i}").as_bytes()).unwrap();
        }
        for (f, _) in files {
            fss[m].evict(*f).unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for fs in &fss {
            fs.sync().unwrap();
        }
        if free_data(&fss[0]) + 64 >= free0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "free data blocks {} of {free0}",
            free_data(&fss[0])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(fss);
    mounts.unmount();
    common::assert_clean(&meta, &data);
}
