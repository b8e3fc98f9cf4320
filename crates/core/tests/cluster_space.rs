//! Space in a running cluster: three in-process mounts on shared
//! in-memory devices (one quorum member and two clients, or three quorum
//! members), with an elected server that merges log trees while they run.
//!
//! - Churn in own and shared directories while the server finalizes and
//!   merges every few hundred milliseconds, also across a handoff of the
//!   server to another member; then every mount leaves and `check` must
//!   find the allocators and trees consistent.
//! - Files written on one mount and deleted on another return their space
//!   with every mount up.
//! - A file open on one mount and unlinked on another keeps working for
//!   its opener, and its space returns when the opener closes it.

mod common;

use scoutfs_core::cluster::quorum::driver::find_server;
use scoutfs_core::mount::fs::types::NewNode;
use scoutfs_core::mount::fs::{Fs, ENOENT, ENOSPC};
use scoutfs_core::mount::{Mount, MountOptions, MountRole};
use scoutfs_core::store::block::BlockCache;
use scoutfs_core::store::commit::read_super;
use scoutfs_core::store::dev::{BlockDev, MemDev};
use scoutfs_core::store::forest::log_roots;
use scoutfs_format::ROOT_INO;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REG: u32 = libc::S_IFREG | 0o644;
const DIR: u32 = libc::S_IFDIR | 0o755;

fn make_fs(slots: u8) -> (MemDev, MemDev) {
    common::quorum_fs(slots, 0x4d45_5247)
}

fn mount(meta: &MemDev, data: &MemDev, role: MountRole) -> Mount {
    let opts = MountOptions {
        role,
        merge_interval_ms: 150,
        commit_interval_ms: 200,
        orphan_scan_ms: 300,
        heartbeat_timeout_ms: 2_000,
        ..Default::default()
    };
    common::mount_with(meta, data, &opts)
}

/// A quorum member and two clients (unmounted together if a test fails).
fn three_mounts(meta: &MemDev, data: &MemDev) -> common::Together {
    let server = mount(meta, data, MountRole::Quorum { slot: 0 });
    common::Together(vec![
        server,
        mount(meta, data, MountRole::Client),
        mount(meta, data, MountRole::Client),
    ])
}

/// Unmounts clients first, then the quorum member.
fn unmount_all(mut mounts: common::Together) {
    for m in std::mem::take(&mut mounts.0).into_iter().rev() {
        m.unmount().unwrap();
    }
}

/// Free data blocks, as the server counts them for statfs.
fn free_data(fs: &Fs) -> u64 {
    fs.statfs().unwrap().free_data_blocks
}

/// Commits on every mount, then reads free data on `fss[0]`.
fn free_now(fss: &[&Fs]) -> u64 {
    for fs in fss {
        fs.sync().unwrap();
    }
    free_data(fss[0])
}

/// Commits on every mount until free data on `fss[0]` is at least `want`,
/// for up to 20 s; returns what it was last.
fn wait_free_data(fss: &[&Fs], want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for fs in fss {
            fs.sync().unwrap();
        }
        let now = free_data(fss[0]);
        if now >= want || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const MB: usize = 1 << 20;

/// Writes `n` files of 1 MiB in `dir`; returns their inode numbers.
fn write_files(fs: &Fs, dir: u64, prefix: &str, n: usize) -> Vec<u64> {
    let buf = vec![0x6bu8; MB];
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            let f = fs.mknod(dir, name.as_bytes(), &NewNode::new(REG)).unwrap();
            assert_eq!(fs.write(f.ino, 0, &buf).unwrap(), MB);
            f.ino
        })
        .collect()
}

/// Creates, writes, renames into the shared directory and deletes (its
/// own files and the other mounts' in the shared directory), until `stop`.
/// What it unlinks in its own directory it evicts, as a kernel forgets an
/// unlinked file it doesn't have open; the files of the shared directory
/// it doesn't: the orphan scans free those.
fn workload(fs: Arc<Fs>, own: u64, shared: u64, tag: usize, stop: Arc<AtomicBool>) {
    let buf = vec![tag as u8; 20_000];
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("f{tag}-{i}");
        let f = fs.mknod(own, name.as_bytes(), &NewNode::new(REG)).unwrap();
        fs.write(f.ino, 0, &buf[..(i as usize * 997) % buf.len() + 1])
            .unwrap();
        fs.setxattr(f.ino, b"user.a", &buf[..100], 0).unwrap();
        if i.is_multiple_of(3) {
            let to = format!("s{tag}-{i}");
            fs.rename(own, name.as_bytes(), shared, to.as_bytes(), 0)
                .unwrap();
        }
        if i >= 20 && !(i - 20).is_multiple_of(3) {
            let old = format!("f{tag}-{}", i - 20);
            let ino = fs.lookup(own, old.as_bytes()).unwrap().ino;
            fs.unlink(own, old.as_bytes()).unwrap();
            fs.evict(ino).unwrap();
        }
        if i >= 40 && (i - 40).is_multiple_of(3) {
            // Another mount's file in the shared directory, if it is there.
            let victim = format!("s{}-{}", (tag + 1) % 3, i - 40);
            let _ = fs.unlink(shared, victim.as_bytes());
        }
        i += 1;
    }
}

/// Runs the workload on each mount of `fss` in its own directory
/// `{prefix}{index}` until `stop`.
fn start_workloads(
    fss: &[Arc<Fs>],
    prefix: &str,
    shared: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    fss.iter()
        .enumerate()
        .map(|(tag, fs)| {
            let name = format!("{prefix}{tag}");
            let own = fs
                .mknod(ROOT_INO, name.as_bytes(), &NewNode::new(DIR))
                .unwrap()
                .ino;
            let (fs, stop) = (fs.clone(), stop.clone());
            std::thread::spawn(move || workload(fs, own, shared, tag, stop))
        })
        .collect()
}

/// Runs workloads on `fss` for `secs` seconds.
fn churn(fss: &[Arc<Fs>], prefix: &str, shared: u64, secs: u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = start_workloads(fss, prefix, shared, &stop);
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

/// The (rid, nr) of every log tree on the device.
fn log_tree_nrs(meta: &MemDev) -> Vec<(u64, u64)> {
    let sb = read_super(meta, true).unwrap();
    let cache = BlockCache::new(Arc::new(meta.clone()), sb.hdr.fsid.get(), 64);
    let trees = log_roots(&cache, &sb.logs_root).unwrap();
    trees.iter().map(|lt| (lt.rid.get(), lt.nr.get())).collect()
}

#[test]
fn merging_while_three_mounts_churn_leaves_a_clean_filesystem() {
    let (meta, data) = make_fs(1);
    let mounts = three_mounts(&meta, &data);
    let fss: Vec<Arc<Fs>> = mounts.iter().map(|m| m.fs().clone()).collect();
    let shared = fss[0]
        .mknod(ROOT_INO, b"shared", &NewNode::new(DIR))
        .unwrap()
        .ino;
    churn(&fss, "d", shared, 6);
    drop(fss);
    // Every mount's tree was finalized and replaced more than once.
    let nrs = log_tree_nrs(&meta);
    eprintln!("log trees (rid, nr) before unmount: {nrs:x?}");
    assert!(
        nrs.len() == 3 && nrs.iter().all(|&(_, nr)| nr >= 3),
        "merges while mounted: trees {nrs:x?}"
    );
    unmount_all(mounts);
    common::assert_clean(&meta, &data);
}

#[test]
fn merging_across_a_server_handoff_leaves_a_clean_filesystem() {
    let (meta, data) = make_fs(3);
    let mounts: Vec<Mount> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3u8)
            .map(|slot| {
                let (meta, data) = (&meta, &data);
                s.spawn(move || mount(meta, data, MountRole::Quorum { slot }))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let fss: Vec<Arc<Fs>> = mounts.iter().map(|m| m.fs().clone()).collect();
    let shared = fss[0]
        .mknod(ROOT_INO, b"shared", &NewNode::new(DIR))
        .unwrap()
        .ino;
    churn(&fss, "d", shared, 3);
    // The serving member leaves while the others go on.
    let server = find_server(&meta).unwrap().expect("a server").rid.0;
    let mut mounts: Vec<Option<Mount>> = mounts.into_iter().map(Some).collect();
    let si = mounts
        .iter()
        .position(|m| m.as_ref().is_some_and(|m| m.rid() == server))
        .unwrap();
    let rest: Vec<Arc<Fs>> = (0..3)
        .filter(|&i| i != si)
        .map(|i| fss[i].clone())
        .collect();
    drop(fss);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = start_workloads(&rest, "e", shared, &stop);
    std::thread::sleep(Duration::from_millis(500));
    mounts[si].take().unwrap().unmount().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let new = find_server(&meta).unwrap().expect("a new server").rid.0;
    assert_ne!(new, server, "another member serves");
    drop(rest);
    // The last two quorum members leave together (one alone would wait
    // for the other: no quorum would be left to serve it).
    std::thread::scope(|s| {
        for m in mounts.into_iter().flatten() {
            s.spawn(move || m.unmount().unwrap());
        }
    });
    common::assert_clean(&meta, &data);
}

#[test]
fn files_deleted_on_another_mount_free_their_space_while_every_mount_runs() {
    let (meta, data) = make_fs(1);
    let mounts = three_mounts(&meta, &data);
    let fss: Vec<&Fs> = mounts.iter().map(|m| m.fs().as_ref()).collect();
    let dir = fss[0]
        .mknod(ROOT_INO, b"d", &NewNode::new(DIR))
        .unwrap()
        .ino;
    let start = free_now(&fss);
    for round in 0..3 {
        // Written on one mount, deleted on the next, with the third up.
        let (w, d) = (round % 3, (round + 1) % 3);
        let inos = write_files(fss[w], dir, &format!("r{round}-"), 32);
        fss[w].sync().unwrap();
        let full = free_now(&fss);
        assert!(
            full + 32 * 256 <= start,
            "round {round}: 32 MiB written, free data {full} of {start} blocks"
        );
        for (i, ino) in inos.iter().enumerate() {
            fss[d]
                .unlink(dir, format!("r{round}-{i}").as_bytes())
                .unwrap();
            // The deleting mount's kernel forgets it; the writer never
            // had it open.
            fss[d].evict(*ino).unwrap();
        }
        let back = wait_free_data(&fss, start - 64);
        assert!(
            back + 64 >= start,
            "round {round}: free data {back} blocks after deleting on mount {d}, \
             {start} before writing on mount {w}"
        );
        for ino in inos {
            assert_eq!(fss[w].getattr(ino).unwrap_err(), ENOENT);
        }
    }
    drop(fss);
    unmount_all(mounts);
    common::assert_clean(&meta, &data);
}

#[test]
fn a_file_open_on_one_mount_and_unlinked_on_another_lives_until_it_is_closed() {
    let (meta, data) = make_fs(1);
    let mounts = three_mounts(&meta, &data);
    let fss: Vec<&Fs> = mounts.iter().map(|m| m.fs().as_ref()).collect();
    let start = free_now(&fss);
    let (a, b) = (fss[1], fss[2]);
    let f = a
        .mknod(ROOT_INO, b"held", &NewNode::new(REG).opened())
        .unwrap();
    let buf = vec![0x3cu8; MB];
    for i in 0..16u64 {
        a.write(f.ino, i * MB as u64, &buf).unwrap();
    }
    a.sync().unwrap();
    // B removes the last name and its kernel forgets the inode: A has it
    // open, so it stays.
    b.unlink(ROOT_INO, b"held").unwrap();
    b.evict(f.ino).unwrap();
    assert!(a.lookup(ROOT_INO, b"held").is_err());
    // A keeps writing and reading it, through several merges and scans.
    for i in 16..24u64 {
        a.write(f.ino, i * MB as u64, &buf).unwrap();
        a.sync().unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(a.read(f.ino, 20 * MB as u64, MB).unwrap(), buf);
    assert_eq!(a.getattr(f.ino).unwrap().size(), 24 * MB as u64);
    let held = free_now(&fss);
    assert!(
        held + 24 * 256 <= start,
        "24 MiB still open: free data {held} of {start} blocks"
    );
    // A's last close frees it.
    a.release(f.ino).unwrap();
    let back = wait_free_data(&fss, start - 64);
    assert!(
        back + 64 >= start,
        "free data {back} blocks after the close, {start} before"
    );
    assert_eq!(a.getattr(f.ino).unwrap_err(), ENOENT);
    drop(fss);
    unmount_all(mounts);
    common::assert_clean(&meta, &data);
}

/// Two mounts sit idle, each holding the data extents it was given when
/// the pool was full (an eighth of the device each); the third fills the
/// device. As the pool drains, the idle mounts are asked to give back what
/// is past their share, so the writer gets nearly all of the space, and
/// it all comes back when the file is deleted.
#[test]
fn idle_mounts_give_back_their_data_as_another_fills_the_device() {
    let (meta, data) = make_fs(1);
    let mounts = three_mounts(&meta, &data);
    let fss: Vec<&Fs> = mounts.iter().map(|m| m.fs().as_ref()).collect();
    let start = free_now(&fss);
    let w = fss[1];
    let f = w.mknod(ROOT_INO, b"fill", &NewNode::new(REG)).unwrap();
    let buf = vec![0x5au8; MB];
    let mut off = 0u64;
    loop {
        match w.write(f.ino, off, &buf) {
            Ok(n) => off += n as u64,
            Err(e) => {
                assert_eq!(e, ENOSPC, "filling the device");
                break;
            }
        }
    }
    let wrote = off / 4096;
    eprintln!("one of three mounts wrote {wrote} blocks of {start} free");
    assert!(
        wrote >= start * 95 / 100,
        "the writer got {wrote} blocks of {start} free: the idle mounts kept the rest"
    );
    w.unlink(ROOT_INO, b"fill").unwrap();
    w.evict(f.ino).unwrap();
    let back = wait_free_data(&fss, start - 64);
    assert!(
        back + 64 >= start,
        "free data {back} blocks after deleting, {start} before"
    );
    drop(fss);
    unmount_all(mounts);
    common::assert_clean(&meta, &data);
}

/// The trees of a merge leave together. Two mounts each change the files
/// the other created, so each one's log tree holds deletions of index
/// items the other's tree holds; both die (the devices as they were). The
/// next server merges both trees; stopped at any write of that merge (and
/// the device then losing what was not flushed), the server after it
/// finds no old version uncovered: `check`, which compares the inode
/// index with the inodes, is clean. Dropped one tree a commit, a stop
/// between the two drops left the older tree's items visible without the
/// deletions that covered them.
#[test]
fn a_merge_stopped_at_any_write_uncovers_no_old_version() {
    use scoutfs_core::store::dev::CrashMode;
    let (meta, data) = make_fs(1);
    let opts = |role| MountOptions {
        role,
        // No round while both run: their trees stay unmerged.
        merge_interval_ms: 600_000,
        heartbeat_timeout_ms: 2_000,
        ..Default::default()
    };
    let a = common::mount_with(&meta, &data, &opts(MountRole::Quorum { slot: 0 }));
    let b = common::mount_with(&meta, &data, &opts(MountRole::Client));
    let (fa, fb) = (a.fs(), b.fs());
    let mine = |fs: &Fs, name: &str| {
        let d = fs
            .mknod(ROOT_INO, name.as_bytes(), &NewNode::new(DIR))
            .unwrap();
        let inos: Vec<u64> = (0..20)
            .map(|i| {
                let f = fs
                    .mknod(d.ino, format!("f{i}").as_bytes(), &NewNode::new(REG))
                    .unwrap();
                f.ino
            })
            .collect();
        fs.sync().unwrap();
        inos
    };
    let (from_a, from_b) = (mine(fa, "a"), mine(fb, "b"));
    // Each changes the other's files in a later transaction: the index
    // items move, and the deletions of the old ones are in its own tree.
    for (fs, inos) in [(fb, &from_a), (fa, &from_b)] {
        for &ino in inos {
            fs.write(ino, 0, b"changed").unwrap();
        }
        fs.sync().unwrap();
    }
    let image = meta.snapshot_durable();
    unmount_all(common::Together(vec![a, b]));
    let listed = |dev: &MemDev| {
        let sb = read_super(dev, true).unwrap();
        let cache = BlockCache::new(Arc::new(dev.clone()), sb.hdr.fsid.get(), 64);
        log_roots(&cache, &sb.logs_root).unwrap().len()
    };
    let alone = MountOptions {
        role: MountRole::Alone,
        ..Default::default()
    };
    let mut stopped = 0;
    for k in 0.. {
        let dev = MemDev::from_image("meta", &image);
        if k == 0 {
            assert_eq!(listed(&dev), 2, "two unmerged log trees to start from");
            common::assert_clean(&dev, &data);
        }
        dev.fail_writes_after(k);
        let (m, d): (Arc<dyn BlockDev>, Arc<dyn BlockDev>) =
            (Arc::new(dev.clone()), Arc::new(data.clone()));
        match Mount::open(m, d, &alone) {
            Ok(mnt) => {
                // The whole merge fit in `k` writes.
                dev.clear_faults();
                mnt.unmount().unwrap();
                common::assert_clean(&dev, &data);
                // Only this mount's own tree, finalized as it left.
                assert_eq!(listed(&dev), 1, "every earlier log tree merged and freed");
                break;
            }
            Err(_) => {
                stopped += 1;
                dev.clear_faults();
                dev.crash(CrashMode::LoseAll);
                common::mount_with(&dev, &data, &alone).unmount().unwrap();
                common::assert_clean(&dev, &data);
            }
        }
    }
    assert!(
        stopped > 10,
        "the merge was stopped at only {stopped} writes"
    );
}
