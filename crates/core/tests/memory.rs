//! A mount holding 1,000,000 files keeps its resident memory under a
//! stated bound: the item cache, block cache and transaction limits are
//! what it may use, not the number of files. (The commit's dirty log btree
//! blocks once grew with the tree: random dirent keys dirty nearly every
//! leaf of a large log btree. They are held to `resident_blocks_max`.)

mod common;

use scoutfs_core::mount::fs::types::NewNode;
use scoutfs_core::mount::trans::TransLimits;
use scoutfs_core::mount::{Mount, MountOptions};
use scoutfs_core::store::dev::{BlockDev, FileDev};
use scoutfs_format::ROOT_INO;
use std::sync::Arc;

/// The bound this test holds the mount to, with the limits below.
const RSS_BOUND_MIB: u64 = 400;
const FILES: u32 = 1_000_000;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_million_files_stay_within_the_memory_bound() {
    let dir = std::env::temp_dir().join(format!("scoutfs-test-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let guard = Cleanup(dir.clone());
    let m: Arc<dyn BlockDev> = Arc::new(FileDev::create(dir.join("meta"), 4 << 30).unwrap());
    let d: Arc<dyn BlockDev> = Arc::new(FileDev::create(dir.join("data"), 1 << 30).unwrap());
    scoutfs_core::tools::mkfs::mkfs(m.clone(), d.clone(), &common::test_opts(0x3e3)).unwrap();
    let opts = MountOptions {
        item_cache_bytes: 128 << 20,
        block_cache_blocks: 512,
        trans: TransLimits {
            dirty_items_max: 100_000,
            dirty_bytes_max: 32 << 20,
            resident_blocks_max: 256,
        },
        ..Default::default()
    };
    let mnt = Mount::open(m, d, &opts).unwrap();
    let fs = mnt.fs();
    let dirs: Vec<u64> = (0..100)
        .map(|i| {
            fs.mknod(
                ROOT_INO,
                format!("d{i}").as_bytes(),
                &NewNode::new(libc::S_IFDIR | 0o755),
            )
            .unwrap()
            .ino
        })
        .collect();
    let base = status_kib("VmRSS:");
    for i in 0..FILES {
        let name = format!("f{i}");
        fs.mknod(
            dirs[(i % 100) as usize],
            name.as_bytes(),
            &NewNode::new(libc::S_IFREG | 0o644),
        )
        .unwrap();
    }
    fs.sync().unwrap();
    // Every file is there (a sample, read back through the caches).
    for i in (0..FILES).step_by(99_991) {
        fs.lookup(dirs[(i % 100) as usize], format!("f{i}").as_bytes())
            .unwrap();
    }
    let statfs = fs.statfs().unwrap();
    assert!(
        statfs.inode_count >= FILES as u64,
        "inode count {}",
        statfs.inode_count
    );
    let peak = status_kib("VmHWM:") / 1024;
    eprintln!(
        "memory: rss before {} MiB, peak {peak} MiB for {FILES} files (bound {RSS_BOUND_MIB} MiB)",
        base / 1024
    );
    assert!(
        peak < RSS_BOUND_MIB,
        "peak resident memory {peak} MiB is over {RSS_BOUND_MIB} MiB"
    );
    mnt.unmount().unwrap();
    drop(guard);
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
