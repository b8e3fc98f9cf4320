//! The block-device layer against its contract: read-your-writes, what a
//! crash keeps and loses, torn writes, injected errors, end-of-device errors,
//! and `FileDev` on real files. A model test drives `MemDev` with random
//! operations and compares it with a plain byte-vector model.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use scoutfs_core::store::dev::{BlockDev, CrashMode, CrashReport, FileDev, MemDev, SECTOR_SIZE};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const SECTOR: u64 = SECTOR_SIZE as u64;
const LG: usize = 64 * 1024;

fn read(dev: &dyn BlockDev, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    dev.read_at(&mut buf, off).unwrap();
    buf
}

/// `n` blocks of `len` bytes, block `i` filled with `fill(i)`, at `i * len`.
fn write_blocks(dev: &MemDev, n: u64, len: usize, fill: impl Fn(u64) -> u8) {
    for i in 0..n {
        dev.write_at(&vec![fill(i); len], i * len as u64).unwrap();
    }
}

#[test]
fn reads_see_unflushed_writes() {
    let dev = MemDev::new(MIB);
    dev.write_at(&[5; 100], 4000).unwrap();
    dev.write_at(&[6; 10], 4050).unwrap();
    let got = read(&dev, 3999, 102);
    assert_eq!(got[0], 0);
    assert!(got[1..51].iter().all(|&b| b == 5));
    assert!(got[51..61].iter().all(|&b| b == 6));
    assert!(got[61..101].iter().all(|&b| b == 5));
    assert_eq!(got[101], 0);
    assert!(
        dev.snapshot_durable().iter().all(|&b| b == 0),
        "nothing durable yet"
    );
    dev.check_invariants();
}

#[test]
fn lose_all_loses_exactly_the_unflushed_writes() {
    let dev = MemDev::new(MIB);
    write_blocks(&dev, 8, SECTOR_SIZE, |i| i as u8 + 1);
    dev.flush().unwrap();
    // Overwrite half of the flushed blocks and write new ones past them.
    for i in (0..16).filter(|i| i % 2 == 0) {
        dev.write_at(&[0xee; SECTOR_SIZE], i * SECTOR).unwrap();
    }
    let before = dev.snapshot_durable();
    let report = dev.crash(CrashMode::LoseAll);
    dev.check_invariants();
    assert_eq!(
        report,
        CrashReport {
            kept: 0,
            lost: 8,
            torn: 0
        }
    );
    for i in 0..16u64 {
        let want = if i < 8 { i as u8 + 1 } else { 0 };
        assert_eq!(
            read(&dev, i * SECTOR, SECTOR_SIZE),
            vec![want; SECTOR_SIZE],
            "block {i}"
        );
    }
    assert_eq!(dev.snapshot_durable(), before);
    assert_eq!(dev.stats().unflushed_writes, 0);
}

#[test]
fn device_works_normally_after_a_crash() {
    let dev = MemDev::new(MIB);
    dev.write_at(&[1; 10], 0).unwrap();
    dev.crash(CrashMode::LoseAll);
    dev.write_at(&[2; 10], 0).unwrap();
    assert_eq!(read(&dev, 0, 10), vec![2; 10]);
    dev.flush().unwrap();
    dev.crash(CrashMode::LoseAll);
    assert_eq!(read(&dev, 0, 10), vec![2; 10]);
    assert_eq!(dev.stats().crashes, 2);
    dev.check_invariants();
}

/// Classifies each block as all old (0), all new (1), or mixed.
fn classify(dev: &MemDev, n: u64, len: usize) -> (u64, u64, u64) {
    let (mut old, mut new, mut mixed) = (0, 0, 0);
    for i in 0..n {
        let b = read(dev, i * len as u64, len);
        if b.iter().all(|&x| x == 0) {
            old += 1;
        } else if b.iter().all(|&x| x == 1) {
            new += 1;
        } else {
            mixed += 1;
        }
    }
    (old, new, mixed)
}

#[test]
fn lose_some_keeps_some_whole_writes_and_loses_others() {
    let dev = MemDev::new(16 * MIB);
    write_blocks(&dev, 200, LG, |_| 1);
    let report = dev.crash(CrashMode::LoseSome { seed: 42 });
    dev.check_invariants();
    let (old, new, mixed) = classify(&dev, 200, LG);
    assert_eq!(mixed, 0, "LoseSome never tears a write");
    assert_eq!((new, old), (report.kept, report.lost));
    assert_eq!(report.torn, 0);
    assert!(new > 50 && old > 50, "kept {new} lost {old} of 200");
}

#[test]
fn lose_some_replays_from_its_seed() {
    let outcome = |seed| {
        let dev = MemDev::new(4 * MIB);
        write_blocks(&dev, 64, LG, |_| 1);
        dev.crash(CrashMode::LoseSome { seed });
        dev.snapshot_durable()
    };
    assert_eq!(outcome(7), outcome(7));
    assert_ne!(outcome(7), outcome(8));
}

#[test]
fn lose_some_applies_survivors_in_order() {
    // Two writes to one block: whichever survive, the later one wins, and the
    // earlier one may show when the later one is lost.
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let dev = MemDev::new(MIB);
        dev.write_at(&[1; SECTOR_SIZE], 0).unwrap();
        dev.write_at(&[2; SECTOR_SIZE], 0).unwrap();
        dev.crash(CrashMode::LoseSome { seed });
        let b = read(&dev, 0, SECTOR_SIZE);
        assert!(b.iter().all(|&x| x == b[0]), "seed {seed}: write torn");
        seen.insert(b[0]);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn tear_keeps_some_sectors_of_a_write() {
    let dev = MemDev::new(8 * MIB);
    write_blocks(&dev, 64, LG, |_| 1);
    let report = dev.crash(CrashMode::Tear { seed: 11 });
    dev.check_invariants();
    let (old, new, mixed) = classify(&dev, 64, LG);
    assert_eq!((old, new, mixed), (report.lost, report.kept, report.torn));
    assert!(mixed > 0, "no torn write in {report:?}");
    assert!(new > 0 && old > 0, "{report:?}");
    // A sector is never torn: each is wholly old or wholly new.
    for s in 0..64 * LG as u64 / SECTOR {
        let b = read(&dev, s * SECTOR, SECTOR_SIZE);
        assert!(b.iter().all(|&x| x == b[0]), "sector {s} torn");
    }
}

#[test]
fn tear_never_splits_a_single_sector_write() {
    let dev = MemDev::new(4 * MIB);
    write_blocks(&dev, 512, SECTOR_SIZE, |_| 1);
    let report = dev.crash(CrashMode::Tear { seed: 5 });
    assert_eq!(report.torn, 0);
    let (_, _, mixed) = classify(&dev, 512, SECTOR_SIZE);
    assert_eq!(mixed, 0);
}

#[test]
fn tear_splits_unaligned_writes_at_absolute_sectors() {
    // A write from the middle of one sector to the middle of another: every
    // absolute sector's part is wholly old or wholly new.
    let mut torn_seen = false;
    for seed in 0..32 {
        let dev = MemDev::new(MIB);
        let off = SECTOR / 2;
        let len = 3 * SECTOR_SIZE;
        dev.write_at(&vec![1; len], off).unwrap();
        let report = dev.crash(CrashMode::Tear { seed });
        torn_seen |= report.torn > 0;
        let image = read(&dev, 0, 4 * SECTOR_SIZE);
        for sector in image.chunks(SECTOR_SIZE) {
            let part: Vec<u8> = sector.iter().copied().filter(|&x| x == 1).collect();
            let ones = part.len();
            assert!(
                ones == 0 || ones == SECTOR_SIZE / 2 || ones == SECTOR_SIZE,
                "seed {seed}: sector split inside ({ones} new bytes)"
            );
        }
    }
    assert!(torn_seen);
}

#[test]
fn injected_write_errors_fire_after_n_and_stop_after_clear() {
    let dev = MemDev::new(MIB);
    dev.fail_writes_after(2);
    dev.write_at(&[1], 0).unwrap();
    dev.write_at(&[1], 1).unwrap();
    for _ in 0..3 {
        let e = dev.write_at(&[9], 2).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Other);
        assert!(e.to_string().contains("injected I/O error"), "{e}");
    }
    assert_eq!(
        read(&dev, 0, 3),
        vec![1, 1, 0],
        "a failed write changes nothing"
    );
    dev.read_at(&mut [0; 1], 0).unwrap();
    dev.flush().unwrap();
    dev.clear_faults();
    dev.write_at(&[9], 2).unwrap();
    let s = dev.stats();
    assert_eq!((s.writes, s.injected_errors, s.bytes_written), (3, 3, 3));
}

#[test]
fn injected_read_errors_fire_after_n_and_stop_after_clear() {
    let dev = MemDev::new(MIB);
    dev.fail_reads_after(0);
    assert!(dev.read_at(&mut [0; 4], 0).is_err());
    dev.write_at(&[1], 0).unwrap();
    dev.clear_faults();
    assert_eq!(read(&dev, 0, 1), vec![1]);
    dev.fail_reads_after(1);
    read(&dev, 0, 1);
    assert_eq!(
        dev.read_at(&mut [0; 1], 0).unwrap_err().kind(),
        ErrorKind::Other
    );
    assert_eq!(dev.stats().injected_errors, 2);
}

#[test]
fn injected_flush_error_makes_nothing_durable() {
    let dev = MemDev::new(MIB);
    dev.write_at(&[1; 8], 0).unwrap();
    dev.fail_flushes_after(1);
    dev.flush().unwrap();
    dev.write_at(&[2; 8], 0).unwrap();
    let e = dev.flush().unwrap_err();
    assert!(e.to_string().contains("injected I/O error"), "{e}");
    assert_eq!(dev.stats().unflushed_writes, 1);
    dev.crash(CrashMode::LoseAll);
    assert_eq!(read(&dev, 0, 8), vec![1; 8]);
    assert!(dev.flush().is_err(), "faults survive a crash");
    dev.clear_faults();
    dev.flush().unwrap();
}

#[test]
fn bad_block_fails_only_overlapping_reads() {
    let dev = MemDev::new(MIB);
    let bad = 5 * LG as u64..6 * LG as u64;
    dev.fail_reads_at(bad.clone());
    read(&dev, bad.start - SECTOR, SECTOR_SIZE);
    read(&dev, bad.end, SECTOR_SIZE);
    assert!(dev.read_at(&mut vec![0; LG], bad.start).is_err());
    assert!(dev.read_at(&mut [0; 2], bad.start - 1).is_err());
    assert!(dev.read_at(&mut [0; 1], bad.end - 1).is_err());
    dev.write_at(&[1; 8], bad.start).unwrap();
    dev.crash(CrashMode::LoseAll);
    assert!(
        dev.read_at(&mut [0; 1], bad.start).is_err(),
        "bad media stays bad"
    );
    dev.clear_faults();
    read(&dev, bad.start, LG);
}

#[test]
fn eof_errors_name_device_offset_and_size() {
    let dev = MemDev::new_named("meta0", 10 * SECTOR);
    dev.fail_reads_after(0);
    for off in [10 * SECTOR - 1, 10 * SECTOR, u64::MAX - 1] {
        let e = dev.read_at(&mut [0; 2], off).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::UnexpectedEof,
            "eof is checked before faults"
        );
        let msg = e.to_string();
        assert!(msg.contains("meta0"), "{msg}");
        assert!(msg.contains(&off.to_string()), "{msg}");
        assert!(msg.contains(&(10 * SECTOR).to_string()), "{msg}");
        let e = dev.write_at(&[0; 2], off).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    }
    dev.clear_faults();
    dev.read_at(&mut [], 10 * SECTOR).unwrap();
    dev.write_at(&[3; 2], 10 * SECTOR - 2).unwrap();
    assert_eq!(dev.stats().injected_errors, 0);
}

#[test]
fn corrupt_byte_changes_the_media() {
    let dev = MemDev::new(MIB);
    dev.write_at(&[0x0f; 4], 100).unwrap();
    dev.flush().unwrap();
    dev.corrupt_byte(101);
    assert_eq!(read(&dev, 100, 3), vec![0x0f, 0xf0, 0x0f]);
    dev.crash(CrashMode::LoseAll);
    assert_eq!(read(&dev, 100, 3), vec![0x0f, 0xf0, 0x0f]);
    dev.check_invariants();
}

#[test]
fn clones_are_handles_to_one_device() {
    let dev = MemDev::new(MIB);
    let owned: Box<dyn BlockDev> = Box::new(dev.clone());
    owned.write_at(&[4; 4], 8).unwrap();
    owned.flush().unwrap();
    assert_eq!(read(&dev, 8, 4), vec![4; 4]);
    let s = dev.stats();
    assert_eq!(
        (s.writes, s.flushes, s.bytes_written, s.reads),
        (1, 1, 4, 1)
    );
}

#[test]
fn large_device_many_writes_between_flushes() {
    // The benchmark's shape: 256 MiB, tens of thousands of 4 KiB and 64 KiB
    // writes at random offsets between flushes, then a crash.
    let size = 256 * MIB;
    let dev = MemDev::new(size);
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let small = vec![0x5a; SECTOR_SIZE];
    let large = vec![0xa5; LG];
    let mut buf = vec![0; LG];
    let mut writebacks_before_last_round = 0;
    for round in 0..3 {
        for i in 0..20_000u64 {
            let (data, nr) = if i % 4 == 0 {
                (&large, size / LG as u64)
            } else {
                (&small, size / SECTOR)
            };
            let off = next() % nr * data.len() as u64;
            dev.write_at(data, off).unwrap();
            dev.read_at(&mut buf[..data.len()], off).unwrap();
            assert_eq!(&buf[..data.len()], &data[..]);
        }
        if round < 2 {
            dev.flush().unwrap();
            writebacks_before_last_round = dev.stats().writebacks;
        }
    }
    let report = dev.crash(CrashMode::Tear { seed: 1 });
    dev.check_invariants();
    let s = dev.stats();
    assert_eq!(s.writes, 60_000);
    let written_back = s.writebacks - writebacks_before_last_round;
    assert!(
        written_back > 0,
        "380 MiB between flushes passes the 256 MiB cache"
    );
    assert_eq!(
        report.kept + report.lost + report.torn + written_back,
        20_000
    );
    assert!(report.torn > 0 && report.lost > 0);
}

// ---- FileDev ----

struct TempPath(PathBuf);

impl TempPath {
    fn new(what: &str) -> TempPath {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("scoutfs-dev-faults-{}-{what}-{n}", std::process::id());
        TempPath(std::env::temp_dir().join(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn file_dev_create_write_flush_reopen_read() {
    let path = TempPath::new("rw");
    let dev = FileDev::create(&path.0, 8 * MIB).unwrap();
    assert_eq!(dev.size(), 8 * MIB);
    assert_eq!(dev.name(), path.0.display().to_string());
    assert_eq!(
        read(&dev, 4 * MIB, 16),
        vec![0; 16],
        "a new image reads zeros"
    );
    let data: Vec<u8> = (0..LG).map(|i| (i % 253) as u8).collect();
    dev.write_at(&data, 3 * LG as u64).unwrap();
    dev.flush().unwrap();
    drop(dev);
    assert_eq!(std::fs::metadata(&path.0).unwrap().len(), 8 * MIB);

    let dev = FileDev::open(&path.0, false).unwrap();
    assert!(!dev.is_writable());
    assert_eq!(dev.size(), 8 * MIB);
    assert_eq!(read(&dev, 3 * LG as u64, LG), data);
    assert_eq!(
        dev.write_at(&[1], 0).unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    dev.flush().unwrap();

    let dev = FileDev::open(&path.0, true).unwrap();
    dev.write_at(&[7; 3], 8 * MIB - 3).unwrap();
    dev.flush().unwrap();
    assert_eq!(read(&dev, 8 * MIB - 4, 4), vec![0, 7, 7, 7]);
}

#[test]
fn file_dev_eof_errors() {
    let path = TempPath::new("eof");
    let dev = FileDev::create(&path.0, 100).unwrap();
    for off in [99, 100, 1000, u64::MAX] {
        let e = dev.read_at(&mut [0; 2], off).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
        let msg = e.to_string();
        assert!(msg.contains(&path.0.display().to_string()), "{msg}");
        assert!(
            msg.contains(&off.to_string()) && msg.contains("100"),
            "{msg}"
        );
        assert_eq!(
            dev.write_at(&[0; 2], off).unwrap_err().kind(),
            ErrorKind::UnexpectedEof
        );
    }
    assert_eq!(
        std::fs::metadata(&path.0).unwrap().len(),
        100,
        "no write extended the file"
    );
}

/// A device grown under an open `FileDev` serves its new blocks (the size
/// is looked at again when a request reaches past it); one that shrinks
/// keeps the size it had, and its missing bytes fail.
#[test]
fn file_dev_sees_a_device_grow_and_never_shrink() {
    let path = TempPath::new("grow");
    let dev = FileDev::create(&path.0, MIB).unwrap();
    assert_eq!(
        dev.write_at(&[9; 4], 2 * MIB - 4).unwrap_err().kind(),
        ErrorKind::UnexpectedEof
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path.0)
        .unwrap();
    f.set_len(2 * MIB).unwrap();
    assert_eq!(dev.size(), MIB, "the size is not looked at on every call");
    dev.write_at(&[9; 4], 2 * MIB - 4).unwrap();
    assert_eq!(dev.size(), 2 * MIB);
    assert_eq!(read(&dev, 2 * MIB - 4, 4), vec![9; 4]);
    assert_eq!(
        dev.write_at(&[1], 2 * MIB).unwrap_err().kind(),
        ErrorKind::UnexpectedEof
    );
    f.set_len(MIB).unwrap();
    assert_eq!(
        dev.refresh_size().unwrap(),
        2 * MIB,
        "a device never shrinks under a mount"
    );
    assert!(dev.read_at(&mut [0; 4], 2 * MIB - 4).is_err());
}

/// A `MemDev` grows to zeros, keeping what it holds.
#[test]
fn mem_dev_grows_to_zeros() {
    let dev = MemDev::new(MIB);
    dev.write_at(&[5; 8], MIB - 8).unwrap();
    dev.grow(3 * MIB + 100);
    assert_eq!(dev.size(), 3 * MIB + 100);
    assert_eq!(read(&dev, MIB - 8, 8), vec![5; 8]);
    assert_eq!(read(&dev, 3 * MIB, 100), vec![0; 100]);
    dev.write_at(&[6; 100], 3 * MIB).unwrap();
    dev.flush().unwrap();
    dev.grow(MIB);
    assert_eq!(dev.size(), 3 * MIB + 100, "a smaller size changes nothing");
    dev.check_invariants();
}

#[test]
fn file_dev_refuses_to_create_over_an_existing_file() {
    let path = TempPath::new("exists");
    std::fs::write(&path.0, b"precious").unwrap();
    let e = FileDev::create(&path.0, MIB).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path.0).unwrap(), b"precious");
}

#[test]
fn file_dev_refuses_directories_and_other_files() {
    let path = TempPath::new("dir");
    std::fs::create_dir(&path.0).unwrap();
    for writable in [false, true] {
        let e = FileDev::open(&path.0, writable).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("directory"), "{e}");
    }
    let e = FileDev::open("/dev/null", false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("character device"), "{e}");
    let missing = TempPath::new("missing");
    assert_eq!(
        FileDev::open(&missing.0, false).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

// ---- MemDev against a plain model ----

#[derive(Clone, Debug)]
enum Op {
    Write { off: u64, len: usize, fill: u8 },
    Read { off: u64, len: usize },
    Flush,
    CrashLoseAll,
    CacheMax { bytes: u64 },
}

/// Small device so offsets collide; lengths cross chunk (64 KiB) boundaries.
const MODEL_SIZE: u64 = 4 * 64 * KIB + 1000;

fn op() -> impl Strategy<Value = Op> {
    let range = (0..MODEL_SIZE).prop_flat_map(|off| {
        let len_max = (MODEL_SIZE - off).min(150 * KIB) as usize;
        (Just(off), 0..=len_max)
    });
    let write =
        (range.clone(), any::<u8>()).prop_map(|((off, len), fill)| Op::Write { off, len, fill });
    prop_oneof![
        6 => write,
        3 => range.prop_map(|(off, len)| Op::Read { off, len }),
        2 => Just(Op::Flush),
        2 => Just(Op::CrashLoseAll),
        1 => (0..400 * KIB).prop_map(|bytes| Op::CacheMax { bytes }),
    ]
}

/// The plain model: a durable vector and the unflushed writes in order.
struct Model {
    durable: Vec<u8>,
    unflushed: Vec<(u64, Vec<u8>)>,
    cache_max: u64,
}

impl Model {
    fn current(&self) -> Vec<u8> {
        let mut image = self.durable.clone();
        for (off, data) in &self.unflushed {
            image[*off as usize..][..data.len()].copy_from_slice(data);
        }
        image
    }

    fn write_back(&mut self) {
        while self
            .unflushed
            .iter()
            .map(|(_, d)| d.len() as u64)
            .sum::<u64>()
            > self.cache_max
        {
            let (off, data) = self.unflushed.remove(0);
            self.durable[off as usize..][..data.len()].copy_from_slice(&data);
        }
    }
}

/// (offset, length, nonzero fill) of one write of the crash property.
fn crash_write() -> impl Strategy<Value = (u64, usize, u8)> {
    (0..MODEL_SIZE - 1, 1..100 * KIB as usize, 1..=255u8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn mem_dev_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let dev = MemDev::new(MODEL_SIZE);
        let mut model = Model {
            durable: vec![0; MODEL_SIZE as usize],
            unflushed: Vec::new(),
            cache_max: scoutfs_core::store::dev::WRITE_CACHE_BYTES_MAX_DEFAULT,
        };
        for op in ops {
            match op {
                Op::Write { off, len, fill } => {
                    dev.write_at(&vec![fill; len], off).unwrap();
                    model.unflushed.push((off, vec![fill; len]));
                    model.write_back();
                }
                Op::Read { off, len } => {
                    let want = model.current()[off as usize..][..len].to_vec();
                    prop_assert_eq!(read(&dev, off, len), want);
                }
                Op::Flush => {
                    dev.flush().unwrap();
                    model.durable = model.current();
                    model.unflushed.clear();
                }
                Op::CrashLoseAll => {
                    dev.crash(CrashMode::LoseAll);
                    model.unflushed.clear();
                }
                Op::CacheMax { bytes } => {
                    dev.set_write_cache_bytes_max(bytes);
                    model.cache_max = bytes;
                    model.write_back();
                }
            }
            dev.check_invariants();
            prop_assert_eq!(dev.stats().unflushed_writes, model.unflushed.len() as u64);
            prop_assert!(dev.snapshot_durable() == model.durable, "durable differs");
            prop_assert!(read(&dev, 0, MODEL_SIZE as usize) == model.current(), "current differs");
        }
    }

    /// After a LoseSome or Tear crash each byte is its old durable value or
    /// the value of an unflushed write that covered it.
    #[test]
    fn crash_bytes_come_from_durable_or_a_covering_write(
        writes in prop::collection::vec(crash_write(), 1..20),
        seed in any::<u64>(),
        tear in any::<bool>(),
    ) {
        let dev = MemDev::new(MODEL_SIZE);
        dev.write_at(&vec![0xaa; MODEL_SIZE as usize], 0).unwrap();
        dev.flush().unwrap();
        let old = dev.snapshot_durable();
        let mut allowed: Vec<Vec<u8>> = old.iter().map(|&b| vec![b]).collect();
        for &(off, len, fill) in &writes {
            let len = len.min((MODEL_SIZE - off) as usize);
            dev.write_at(&vec![fill; len], off).unwrap();
            for a in &mut allowed[off as usize..][..len] {
                a.push(fill);
            }
        }
        let mode = if tear { CrashMode::Tear { seed } } else { CrashMode::LoseSome { seed } };
        let report = dev.crash(mode);
        dev.check_invariants();
        prop_assert_eq!(report.kept + report.lost + report.torn, writes.len() as u64);
        if !tear {
            prop_assert_eq!(report.torn, 0);
        }
        let now = read(&dev, 0, MODEL_SIZE as usize);
        prop_assert!(now == dev.snapshot_durable());
        for (i, b) in now.iter().enumerate() {
            prop_assert!(allowed[i].contains(b), "byte {} is {} (seed {})", i, b, seed);
        }
    }
}
