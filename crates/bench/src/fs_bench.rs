//! The filesystem workload of the mount benchmark, run in a directory of
//! whatever filesystem is under test (ours or a peer), printing one line of
//! rates as `name value` pairs. `scripts/bench-fs` mounts each filesystem,
//! runs this in it several times and tabulates medians and ratios.
//!
//! Usage: fs-bench DIR [--files N] [--small N] [--big-mib N]
//! Phases: create N empty files in one directory; lstat them; readdir them;
//! unlink them; write M files of 4 KiB spread over 100 directories; write a
//! big file sequentially in 1 MiB writes and fsync it; drop the page cache
//! (when permitted) and read it back.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn rate(n: usize, t: Instant) -> f64 {
    n as f64 / t.elapsed().as_secs_f64()
}

fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .expect("usage: fs-bench DIR [--files N] [--small N] [--big-mib N]"),
    );
    let (mut files, mut small, mut big_mib) = (20_000usize, 10_000usize, 1024usize);
    while let Some(a) = args.next() {
        let v: usize = args.next().and_then(|v| v.parse().ok()).expect("a number");
        match a.as_str() {
            "--files" => files = v,
            "--small" => small = v,
            "--big-mib" => big_mib = v,
            _ => panic!("unknown option {a}"),
        }
    }
    let work = dir.join(format!("fs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let flat = work.join("flat");
    std::fs::create_dir(&flat).unwrap();
    let names: Vec<PathBuf> = (0..files)
        .map(|i| flat.join(format!("file-{i:08}")))
        .collect();

    let t = Instant::now();
    for p in &names {
        std::fs::File::create(p).unwrap();
    }
    let create = rate(files, t);
    let t = Instant::now();
    for p in &names {
        std::fs::symlink_metadata(p).unwrap();
    }
    let stat = rate(files, t);
    let t = Instant::now();
    let n = std::fs::read_dir(&flat).unwrap().count();
    assert_eq!(n, files);
    let readdir = rate(n, t);
    let t = Instant::now();
    for p in &names {
        std::fs::remove_file(p).unwrap();
    }
    let unlink = rate(files, t);

    let t = Instant::now();
    let block = [0x5au8; 4096];
    for i in 0..small {
        let d = work.join(format!("d{:03}", i % 100));
        if i < 100 {
            std::fs::create_dir(&d).unwrap();
        }
        std::fs::File::create(d.join(format!("s{i}")))
            .unwrap()
            .write_all(&block)
            .unwrap();
    }
    let small_rate = rate(small, t);

    let bigp = work.join("big");
    let chunk = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::create(&bigp).unwrap();
    for _ in 0..big_mib {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let write_mbs = big_mib as f64 * 1.048576 / t.elapsed().as_secs_f64();
    let dropped = drop_caches();
    let t = Instant::now();
    let mut f = std::fs::File::open(&bigp).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, big_mib << 20);
    let read_mbs = total as f64 / 1e6 / t.elapsed().as_secs_f64();
    cleanup(&work);
    println!(
        "create {create:.0} stat {stat:.0} readdir {readdir:.0} unlink {unlink:.0} small4k {small_rate:.0} write_mbs {write_mbs:.0} read_mbs {read_mbs:.0} cache_dropped {}",
        dropped as u8
    );
}

fn cleanup(p: &Path) {
    let _ = std::fs::remove_dir_all(p);
}
