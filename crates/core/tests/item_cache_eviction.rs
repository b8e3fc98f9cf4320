//! Regression: a tiny item cache evicted the range a lookup had just read,
//! and creates failed with ENOENT for directories that existed.

mod common;
use scoutfs_core::mount::fs::types::NewNode;
use scoutfs_core::mount::trans::TransLimits;
use scoutfs_core::mount::{Mount, MountOptions};
use scoutfs_core::store::dev::BlockDev;
use std::sync::Arc;
#[test]
fn item_cache_eviction_never_drops_the_range_in_use() {
    let (meta, data) = common::mem_fs(512 << 20, 64 << 20, 0x77);
    let opts = MountOptions {
        item_cache_bytes: 256 << 10,
        block_cache_blocks: 64,
        trans: TransLimits {
            dirty_items_max: 3000,
            dirty_bytes_max: 1 << 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let (m, d): (Arc<dyn BlockDev>, Arc<dyn BlockDev>) =
        (Arc::new(meta.clone()), Arc::new(data.clone()));
    let mnt = Mount::open(m, d, &opts).unwrap();
    let fs = mnt.fs();
    let dirs: Vec<u64> = (0..10)
        .map(|i| {
            fs.mknod(
                1,
                format!("d{i}").as_bytes(),
                &NewNode::new(libc::S_IFDIR | 0o755),
            )
            .unwrap()
            .ino
        })
        .collect();
    for i in 0..4000u32 {
        if let Err(e) = fs.mknod(
            dirs[(i % 10) as usize],
            format!("f{i}").as_bytes(),
            &NewNode::new(libc::S_IFREG | 0o644),
        ) {
            panic!("mknod {i} in dir {}: {e:?}", dirs[(i % 10) as usize]);
        }
    }
    for i in (0..4000u32).step_by(97) {
        fs.lookup(dirs[(i % 10) as usize], format!("f{i}").as_bytes())
            .unwrap();
    }
    mnt.unmount().unwrap();
}
