//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

pub mod sim;

use scoutfs_core::commit::Store;
use scoutfs_core::dev::{BlockDev, MemDev};
use scoutfs_core::mkfs::{mkfs, MkfsOptions};
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

pub fn open(meta: &MemDev) -> Store {
    let dev: Arc<dyn BlockDev> = Arc::new(meta.clone());
    Store::open(dev, 512).expect("open store")
}
