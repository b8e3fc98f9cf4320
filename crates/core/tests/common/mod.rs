//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

pub mod sim;

use scoutfs_core::store::commit::Store;
use scoutfs_core::store::dev::{BlockDev, MemDev};
use scoutfs_core::tools::mkfs::{mkfs, MkfsOptions};
use scoutfs_format::Timespec;
use std::sync::Arc;

/// The seed of a seeded test: `SCOUTFS_TEST_SEED` if set, else `default`.
pub fn seed(default: u64) -> u64 {
    match std::env::var("SCOUTFS_TEST_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("SCOUTFS_TEST_SEED={s} is not a number")),
        Err(_) => default,
    }
}

/// Options for a reproducible test filesystem.
pub fn test_opts(fsid: u64) -> MkfsOptions {
    MkfsOptions {
        quorum: vec![(0, "127.0.0.1:7000".parse().unwrap())],
        fsid: Some(fsid),
        now: Some(Timespec::new(1_700_000_000, 0)),
        ..Default::default()
    }
}

/// A fresh filesystem on in-memory devices of the given sizes.
pub fn mem_fs(meta_bytes: u64, data_bytes: u64, fsid: u64) -> (MemDev, MemDev) {
    let meta = MemDev::new_named("meta", meta_bytes);
    let data = MemDev::new_named("data", data_bytes);
    mkfs(
        Arc::new(meta.clone()),
        Arc::new(data.clone()),
        &test_opts(fsid),
    )
    .expect("mkfs");
    (meta, data)
}

/// A 256 MiB filesystem (both devices) whose `slots` quorum slots listen
/// on loopback ports free now.
pub fn quorum_fs(slots: u8, fsid: u64) -> (MemDev, MemDev) {
    let socks: Vec<std::net::UdpSocket> = (0..slots)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let quorum = socks
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.local_addr().unwrap()))
        .collect();
    drop(socks);
    let meta = MemDev::new_named("meta", 256 << 20);
    let data = MemDev::new_named("data", 256 << 20);
    let opts = MkfsOptions {
        quorum,
        fsid: Some(fsid),
        now: Some(Timespec::new(1_700_000_000, 0)),
        ..Default::default()
    };
    mkfs(Arc::new(meta.clone()), Arc::new(data.clone()), &opts).expect("mkfs");
    (meta, data)
}

pub fn open(meta: &MemDev) -> Store {
    let dev: Arc<dyn BlockDev> = Arc::new(meta.clone());
    Store::open(dev, 512).expect("open store")
}

/// Mounts in-memory devices with `opts`.
pub fn mount_with(
    meta: &MemDev,
    data: &MemDev,
    opts: &scoutfs_core::mount::MountOptions,
) -> scoutfs_core::mount::Mount {
    let (m, d): (Arc<dyn BlockDev>, Arc<dyn BlockDev>) =
        (Arc::new(meta.clone()), Arc::new(data.clone()));
    scoutfs_core::mount::Mount::open(m, d, opts).expect("mount")
}

/// Mounts in-memory devices with default options.
pub fn mount(meta: &MemDev, data: &MemDev) -> scoutfs_core::mount::Mount {
    mount_with(meta, data, &scoutfs_core::mount::MountOptions::default())
}

/// Runs `check` on in-memory devices and fails the test, naming the first
/// problems, unless it finds none.
pub fn assert_clean(meta: &MemDev, data: &MemDev) {
    use scoutfs_core::tools::check::{check, NoProgress};
    let (m, d): (Arc<dyn BlockDev>, Arc<dyn BlockDev>) =
        (Arc::new(meta.clone()), Arc::new(data.clone()));
    let r = check(&m, &d, &mut NoProgress).expect("check");
    let first: Vec<String> = r.problems.iter().take(8).map(|p| p.to_string()).collect();
    assert!(r.is_clean(), "check: {first:?}");
}

/// Mounts of one filesystem that unmount all at once when dropped, also
/// when a test fails: dropped one by one, a quorum member's farewell would
/// wait for the other mounts' that come after it.
pub struct Together(pub Vec<scoutfs_core::mount::Mount>);

impl Together {
    /// Unmounts every mount at once; each must succeed.
    pub fn unmount(mut self) {
        let ms = std::mem::take(&mut self.0);
        std::thread::scope(|s| {
            for m in ms {
                s.spawn(move || m.unmount().unwrap());
            }
        });
    }
}

impl std::ops::Deref for Together {
    type Target = Vec<scoutfs_core::mount::Mount>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for Together {
    fn drop(&mut self) {
        let ms = std::mem::take(&mut self.0);
        std::thread::scope(|s| {
            for m in ms {
                s.spawn(move || drop(m));
            }
        });
    }
}
