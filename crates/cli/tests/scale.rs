//! A real mount with default options holds a million files in the memory
//! the README states: its caches and transactions are bounded, and what
//! it keeps for the kernel goes with what the kernel forgets. (It once grew
//! by about 160 MiB per million files: the item cache's ranges merged into
//! one that eviction would not touch, and the adapter kept every name the
//! kernel had ever seen.)

mod common;

use common::*;
use std::path::Path;

const FILES: usize = 1_000_000;
const DIR_FILES: usize = 1000;
const STEP: usize = 100_000;
/// The peak resident memory the README states for a mount with default
/// options (item cache 256 MiB, block cache 128 MiB, a transaction's
/// 64 MiB of items and 64 MiB of blocks, and what the rest needs).
const RSS_BOUND_MIB: u64 = 800;

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in the mount's status"))
}

fn dir_of(mp: &Path, d: usize) -> std::path::PathBuf {
    mp.join(format!("d{d}"))
}

/// Makes directories `first..first + n` of `DIR_FILES` empty files each,
/// on two threads.
fn create(mp: &Path, first: usize, n: usize) {
    std::thread::scope(|s| {
        for t in 0..2 {
            s.spawn(move || {
                for d in (first + t..first + n).step_by(2) {
                    let dir = dir_of(mp, d);
                    std::fs::create_dir(&dir).unwrap();
                    for i in 0..DIR_FILES {
                        std::fs::File::create_new(dir.join(format!("f{i}")))
                            .unwrap_or_else(|e| panic!("creating d{d}/f{i}: {e}"));
                    }
                }
            });
        }
    });
}

fn drop_kernel_caches() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").unwrap();
}

#[test]
fn a_million_files_through_a_default_mount_stay_within_the_memory_bound() {
    if !can_mount("a_million_files_through_a_default_mount_stay_within_the_memory_bound") {
        return;
    }
    let dir = Scratch::new("scale");
    let (meta, data) = mkfs_slots_sized(&dir, 1, "4G", "1G");
    let m = MountProc::start(&meta, &data, &dir.path("mnt"), &[]);
    let (mp, pid) = (m.mp.clone(), m.pid());
    let mut rss = Vec::new();
    for step in 0..FILES / STEP {
        create(&mp, step * STEP / DIR_FILES, STEP / DIR_FILES);
        rss.push(status_kib(pid, "VmRSS:") / 1024);
        eprintln!("{} files: mount RSS {} MiB", (step + 1) * STEP, rss[step]);
    }

    // Cold: the kernel forgets its names and inodes (and the images'
    // pages), so every stat is a lookup through the mount.
    drop_kernel_caches();
    let t = std::time::Instant::now();
    for d in 0..FILES / DIR_FILES {
        let dir = dir_of(&mp, d);
        for i in 0..DIR_FILES {
            let p = dir.join(format!("f{i}"));
            let md = std::fs::symlink_metadata(&p)
                .unwrap_or_else(|e| panic!("stat of {}: {e}", p.display()));
            assert!(md.is_file() && md.len() == 0, "{} is {md:?}", p.display());
        }
    }
    let names = std::fs::read_dir(dir_of(&mp, FILES / DIR_FILES - 1))
        .unwrap()
        .count();
    assert_eq!(names, DIR_FILES);
    let after = status_kib(pid, "VmRSS:") / 1024;
    let peak = status_kib(pid, "VmHWM:") / 1024;
    eprintln!(
        "{FILES} files stat'ed cold in {:.1} s; mount RSS {after} MiB, peak {peak} MiB \
         (bound {RSS_BOUND_MIB} MiB)",
        t.elapsed().as_secs_f64()
    );
    assert!(
        peak < RSS_BOUND_MIB,
        "the mount's peak RSS {peak} MiB is over {RSS_BOUND_MIB} MiB"
    );
    let (half, full) = (rss[FILES / STEP / 2 - 1], rss[FILES / STEP - 1]);
    assert!(
        full.abs_diff(half) * 10 <= half,
        "RSS {half} MiB at {} files and {full} MiB at {FILES} differ by more than 10%",
        FILES / 2
    );
    assert!(
        after.abs_diff(half) * 10 <= half,
        "RSS {after} MiB after the stats, {half} MiB at {} files",
        FILES / 2
    );
    m.unmount();
    assert_check_clean(&meta, &data);
}
