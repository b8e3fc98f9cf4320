//! A full filesystem recovers: data and metadata filled to ENOSPC, emptied,
//! and filled again to the same size, on one in-process mount; only
//! operations that allocate fail, everything that frees goes on, and a
//! full filesystem mounts.

mod common;

use scoutfs_core::mount::fs::types::NewNode;
use scoutfs_core::mount::fs::{Fs, FsError, ENOSPC};
use scoutfs_core::mount::{Mount, MountOptions};
use scoutfs_core::store::dev::MemDev;
use scoutfs_format::ROOT_INO;
use std::time::{Duration, Instant};

const REG: u32 = libc::S_IFREG | 0o644;
const DIR: u32 = libc::S_IFDIR | 0o755;
const MB: u64 = 1 << 20;

fn opts() -> MountOptions {
    MountOptions {
        merge_interval_ms: 200,
        ..Default::default()
    }
}

fn mount(meta: &MemDev, data: &MemDev) -> Mount {
    common::mount_with(meta, data, &opts())
}

/// (free metadata blocks, free data blocks) as statfs reports them.
fn free(fs: &Fs) -> (u64, u64) {
    let s = fs.statfs().unwrap();
    (s.free_meta_blocks, s.free_data_blocks)
}

/// Commits, then waits until the server has merged the log trees and the
/// free space stops changing; returns it.
fn settle(fs: &Fs) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0, 0);
    let mut same = 0;
    loop {
        fs.sync().unwrap();
        fs.trans().commit().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let now = free(fs);
        same = if now == last { same + 1 } else { 0 };
        last = now;
        if same >= 3 || Instant::now() > deadline {
            return now;
        }
    }
}

/// Writes `file` in 1 MiB pieces until ENOSPC; returns the bytes written.
fn fill_file(fs: &Fs, name: &[u8]) -> u64 {
    let f = fs.mknod(ROOT_INO, name, &NewNode::new(REG)).unwrap();
    let buf = vec![0x5au8; MB as usize];
    let mut off = 0;
    loop {
        match fs.write(f.ino, off, &buf) {
            Ok(n) => off += n as u64,
            Err(e) => {
                assert_eq!(e, ENOSPC, "a full data device gives ENOSPC, not {e}");
                return off;
            }
        }
    }
}

/// Creates 256 KiB files in `dir` until ENOSPC; returns how many.
fn fill_files(fs: &Fs, dir: u64) -> u64 {
    let buf = vec![0xa5u8; 256 << 10];
    for i in 0.. {
        let name = format!("f{i}");
        let f = match fs.mknod(dir, name.as_bytes(), &NewNode::new(REG)) {
            Ok(f) => f,
            Err(e) => {
                assert_eq!(e, ENOSPC);
                return i;
            }
        };
        if let Err(e) = fs.write(f.ino, 0, &buf) {
            assert_eq!(e, ENOSPC, "a full data device gives ENOSPC, not {e}");
            return i;
        }
    }
    unreachable!()
}

/// Unlinks every entry of `dir` and frees each inode (as the kernel
/// forgetting it would).
fn empty_dir(fs: &Fs, dir: u64) {
    loop {
        let ents = fs.readdir(dir, 2, 512, u64::MAX).unwrap();
        if ents.is_empty() {
            return;
        }
        for e in ents {
            let r = if e.dt == scoutfs_format::dir::DT_DIR {
                empty_dir(fs, e.ino);
                fs.rmdir(dir, &e.name)
            } else {
                fs.unlink(dir, &e.name)
            };
            r.unwrap_or_else(|err| panic!("removing {:?}: {err}", e.name));
            fs.evict(e.ino).unwrap();
        }
    }
}

fn within(a: u64, b: u64, margin: u64, what: &str) {
    assert!(
        a.abs_diff(b) <= margin,
        "{what}: {a} and {b} differ by more than {margin}"
    );
}

/// Removes a file of the root directory whose inode the kernel then
/// forgets.
fn remove(fs: &Fs, name: &[u8]) {
    let f = fs.lookup(ROOT_INO, name).unwrap();
    fs.unlink(ROOT_INO, name).unwrap();
    fs.evict(f.ino).unwrap();
}

/// Settles, and checks that free data is back to `empty`'s (free
/// metadata, free data) within 16 blocks.
fn assert_data_back(fs: &Fs, empty: (u64, u64), what: &str) {
    let after = settle(fs);
    within(
        after.1,
        empty.1,
        16,
        &format!("free data blocks after {what}"),
    );
}

#[test]
fn data_filled_emptied_and_filled_again() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xe1);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let empty = settle(fs);

    // One file.
    let first = fill_file(fs, b"big");
    assert!(first > 40 * MB, "only {first} bytes fit");
    // Deleting on a full device works, and so does everything that frees.
    let big = fs.lookup(ROOT_INO, b"big").unwrap();
    fs.truncate(big.ino, first / 2).unwrap();
    remove(fs, b"big");
    assert_data_back(fs, empty, "deleting the file");
    let second = fill_file(fs, b"big2");
    within(second, first, 16 * MB, "bytes of the second fill");
    remove(fs, b"big2");
    settle(fs);

    // Many files.
    let d = fs.mknod(ROOT_INO, b"d", &NewNode::new(DIR)).unwrap();
    let n1 = fill_files(fs, d.ino);
    assert!(n1 > 100, "only {n1} files fit");
    empty_dir(fs, d.ino);
    assert_data_back(fs, empty, "deleting the files");
    let n2 = fill_files(fs, d.ino);
    eprintln!("data: empty {empty:?}, one file {first} then {second} bytes, files {n1} then {n2}");
    within(n2, n1, n1 / 10 + 8, "files of the second fill");

    // Full, it unmounts and mounts, and is emptied again.
    mnt.unmount().unwrap();
    common::assert_clean(&meta, &data);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    empty_dir(fs, d.ino);
    assert_data_back(fs, empty, "a remount at full");
    mnt.unmount().unwrap();
    common::assert_clean(&meta, &data);
}

/// Creates directories of small files with two xattrs each until ENOSPC;
/// returns how many files.
fn fill_meta(fs: &Fs) -> u64 {
    let val = [7u8; 200];
    let mut n = 0;
    for d in 0.. {
        let dir = match fs.mknod(ROOT_INO, format!("m{d}").as_bytes(), &NewNode::new(DIR)) {
            Ok(a) => a,
            Err(e) => {
                assert_eq!(e, ENOSPC);
                return n;
            }
        };
        for i in 0..500 {
            let r: Result<(), FsError> = (|| {
                let f = fs.mknod(dir.ino, format!("f{i}").as_bytes(), &NewNode::new(REG))?;
                fs.setxattr(f.ino, b"user.a", &val, 0)?;
                fs.setxattr(f.ino, b"user.b", &val, 0)?;
                Ok(())
            })();
            match r {
                Ok(()) => n += 1,
                Err(e) => {
                    assert_eq!(e, ENOSPC, "full metadata gives ENOSPC, not {e}");
                    return n;
                }
            }
        }
    }
    unreachable!()
}

#[test]
fn metadata_filled_emptied_and_filled_again() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xe2);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let empty = settle(fs);
    let n1 = fill_meta(fs);
    assert!(n1 > 1000, "only {n1} files fit");
    empty_dir(fs, ROOT_INO);
    let after = settle(fs);
    within(after.0, empty.0, 8, "free metadata blocks after deleting");
    let n2 = fill_meta(fs);
    eprintln!("metadata: empty {empty:?}, emptied {after:?}, files {n1} then {n2}");
    // How many files fit varies by about 6% from run to run, the first
    // fill as much as the second: a log merge in flight when the device
    // fills holds blocks for its output. A leak shows in the free blocks
    // above, exactly; here only a second fill far below the first fails.
    within(n2, n1, n1 / 10, "files of the second fill");
    mnt.unmount().unwrap();
    common::assert_clean(&meta, &data);

    // A full filesystem mounts, and is emptied.
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    empty_dir(fs, ROOT_INO);
    let after = settle(fs);
    within(
        after.0,
        empty.0,
        8,
        "free metadata blocks after a remount at full",
    );
    mnt.unmount().unwrap();
    common::assert_clean(&meta, &data);
}

/// A file written in small pieces has an extent per piece: freeing them
/// all on a full device takes a block of the freed-extent tree per extent
/// unless blocks freed within a transaction are used again.
#[test]
fn a_fragmented_file_is_freed_on_a_full_device() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xe3);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let empty = settle(fs);
    let f = fs.mknod(ROOT_INO, b"x", &NewNode::new(REG)).unwrap();
    let buf = vec![1u8; 128 << 10];
    let mut off = 0;
    while fs.write(f.ino, off, &buf).is_ok() {
        off += buf.len() as u64;
    }
    assert!(off > 40 * MB, "only {off} bytes fit");
    remove(fs, b"x");
    assert_data_back(fs, empty, "deleting the file");
    mnt.unmount().unwrap();
    common::assert_clean(&meta, &data);
}

/// A full filesystem grows while mounted: the devices grow first (as an
/// image file is extended), then the filesystem, and the new space is
/// written at once. Shrinking, growing past a device's end and asking for
/// the sizes it has are refused or change nothing.
#[test]
fn a_full_filesystem_grows_while_mounted_and_its_new_space_fills() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xe4);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let before = fs.statfs().unwrap();
    let (m0, d0) = (before.total_meta_blocks, before.total_data_blocks);

    let e = fs.resize_devices(0, d0 - 1).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert!(e.to_string().contains("shrinking"), "{e}");
    let e = fs.resize_devices(m0 + 16, 0).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert!(e.to_string().contains("grow the device first"), "{e}");
    fs.resize_devices(0, 0).unwrap();
    fs.resize_devices(m0, d0).unwrap();
    let same = fs.statfs().unwrap();
    assert_eq!((same.total_meta_blocks, same.total_data_blocks), (m0, d0));

    let first = fill_file(fs, b"first");
    let full = settle(fs);
    meta.grow(96 * MB);
    data.grow(128 * MB);
    fs.resize_devices((96 * MB) >> 16, (128 * MB) >> 12)
        .unwrap();
    let grown = fs.statfs().unwrap();
    assert_eq!(grown.total_meta_blocks, (96 * MB) >> 16);
    assert_eq!(grown.total_data_blocks, (128 * MB) >> 12);
    assert_eq!(grown.free_data_blocks, full.1 + ((64 * MB) >> 12));
    // Less the blocks the growth's own commit wrote.
    within(
        grown.free_meta_blocks,
        full.0 + ((32 * MB) >> 16),
        8,
        "free metadata blocks after growing",
    );

    let second = fill_file(fs, b"second");
    eprintln!("grow: {first} bytes before, {second} after growing by 64 MiB");
    within(second, 64 * MB, 4 * MB, "bytes written into the new space");
    mnt.unmount().unwrap();
    common::assert_clean(&meta, &data);

    // The grown filesystem mounts, and the file in the new space reads back.
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let f = fs.lookup(ROOT_INO, b"second").unwrap();
    let buf = fs.read(f.ino, second - MB, MB as usize).unwrap();
    assert_eq!(buf.len(), MB as usize);
    assert!(
        buf.iter().all(|&b| b == 0x5a),
        "the new space read back wrong"
    );
    mnt.unmount().unwrap();
    common::assert_clean(&meta, &data);
}
