//! The offline tools through the `scoutfs` binary on image files: mkfs,
//! print and check on fresh images; a byte flipped in any metadata block is
//! reported by check as a problem in that block (non-zero exit, no panic);
//! truncated devices, wrong devices and bad arguments give clear errors.

mod common;

use common::{scoutfs, Scratch};
use scoutfs_core::store::btree;
use scoutfs_core::store::commit::Store;
use scoutfs_core::store::dev::{BlockDev, FileDev};
use scoutfs_format::consts::*;
use scoutfs_format::Key;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mkfs(dir: &Scratch) -> (PathBuf, PathBuf) {
    let (m, d) = (dir.path("meta.img"), dir.path("data.img"));
    let o = scoutfs(&[
        "mkfs",
        s(&m),
        s(&d),
        "-Q",
        "0,127.0.0.1,7000",
        "-Q",
        "1,127.0.0.2,7001",
        "-m",
        "128M",
        "-d",
        "256M",
    ]);
    assert!(o.status.success(), "mkfs: {}", text(&o));
    (m, d)
}

/// Adds enough items that the fs tree has parent blocks and the allocators
/// several blocks and lists, committing a few times.
fn populate(meta: &Path) {
    let dev: Arc<dyn BlockDev> = Arc::new(FileDev::open(meta, true).unwrap());
    let mut store = Store::open(dev, 256).unwrap();
    for round in 0..4u64 {
        let mut txn = store.begin();
        for i in 0..3000u64 {
            let k = Key::new(32, round * 10_000 + i * 7 % 3001, 0, i, 0, 0);
            btree::insert(&mut txn.w, &mut txn.sb.srch_root, &k, i, 0, &[i as u8; 100]).unwrap();
        }
        store.commit(txn).unwrap();
    }
}

/// Every metadata block print shows a reference to, in 64 KiB units.
fn referenced_blocks(meta: &Path) -> Vec<u64> {
    let o = scoutfs(&["print", s(meta)]);
    assert!(o.status.success(), "print: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let mut blocks: Vec<u64> = out
        .split("{blkno ")
        .skip(1)
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .filter(|&b| b != 0)
        .collect();
    blocks.sort_unstable();
    blocks.dedup();
    blocks
}

fn flip_byte(path: &Path, off: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, off).unwrap();
}

#[test]
fn mkfs_print_check_fresh_images() {
    let dir = Scratch::new("fresh");
    let (m, d) = mkfs(&dir);
    let o = scoutfs(&["print", s(&m)]);
    assert!(o.status.success());
    let p = String::from_utf8_lossy(&o.stdout);
    assert!(
        p.contains("slot 1: 127.0.0.2:7001") && p.contains("mode 40755"),
        "print shows quorum and root: {p}"
    );
    let o = scoutfs(&["check", s(&m), s(&d)]);
    assert!(o.status.success(), "check of a fresh fs: {}", text(&o));
    assert!(text(&o).contains("check: clean"));

    let o = scoutfs(&["mkfs", s(&m), s(&d), "-Q", "0,127.0.0.1,7000"]);
    assert!(
        !o.status.success() && text(&o).contains("--force"),
        "mkfs refuses an existing fs: {}",
        text(&o)
    );
    let o = scoutfs(&["mkfs", s(&m), s(&d), "-Q", "0,127.0.0.1,7000", "--force"]);
    assert!(o.status.success(), "mkfs --force: {}", text(&o));
}

#[test]
fn flipped_byte_in_any_metadata_block_is_reported() {
    let dir = Scratch::new("flip");
    let (m, d) = mkfs(&dir);
    populate(&m);
    let o = scoutfs(&["check", s(&m), s(&d)]);
    assert!(o.status.success(), "populated fs is clean: {}", text(&o));
    let blocks = referenced_blocks(&m);
    assert!(
        blocks.len() > 20,
        "expected a populated image, got {} blocks",
        blocks.len()
    );
    let pristine = std::fs::read(&m).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for &b in &blocks {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = b * BLOCK_LG_SIZE as u64 + (seed >> 33) % BLOCK_LG_SIZE as u64;
        flip_byte(&m, off);
        let o = scoutfs(&["check", s(&m), s(&d)]);
        let t = text(&o);
        assert!(
            !o.status.success(),
            "flip at byte {off} of block {b} went unnoticed: {t}"
        );
        assert!(
            t.contains(&format!("block {b}")),
            "check names block {b} (byte {off}): {t}"
        );
        assert!(
            scoutfs(&["print", s(&m)]).status.success(),
            "print of a damaged image"
        );
        std::fs::write(&m, &pristine).unwrap();
    }
    // The small blocks: the super block and every quorum block.
    for sm in
        std::iter::once(SUPER_BLKNO).chain(QUORUM_BLKNO..QUORUM_BLKNO + QUORUM_MAX_SLOTS as u64)
    {
        let off = (sm << BLOCK_SM_SHIFT) + 100;
        flip_byte(&m, off);
        let o = scoutfs(&["check", s(&m), s(&d)]);
        let t = text(&o);
        assert!(
            !o.status.success(),
            "flip in small block {sm} went unnoticed: {t}"
        );
        assert!(
            t.contains(&format!("block {sm}")),
            "check names small block {sm}: {t}"
        );
        std::fs::write(&m, &pristine).unwrap();
    }
    // The data device's copy of the super block.
    flip_byte(&d, (SUPER_BLKNO << BLOCK_SM_SHIFT) + 200);
    let o = scoutfs(&["check", s(&m), s(&d)]);
    assert!(
        !o.status.success() && text(&o).contains("data device super block"),
        "{}",
        text(&o)
    );
}

#[test]
fn truncated_and_mismatched_devices_give_clear_errors() {
    let dir = Scratch::new("trunc");
    let (m, d) = mkfs(&dir);
    let f = std::fs::OpenOptions::new().write(true).open(&m).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    for cmd in ["check", "print"] {
        let args: Vec<&str> = if cmd == "check" {
            vec![cmd, s(&m), s(&d)]
        } else {
            vec![cmd, s(&m)]
        };
        let o = scoutfs(&args);
        assert!(!o.status.success(), "{cmd} of a truncated device");
        assert!(text(&o).contains("truncated"), "{cmd}: {}", text(&o));
    }

    let dir2 = Scratch::new("other");
    let (m2, d2) = mkfs(&dir2);
    let o = scoutfs(&["check", s(&m2), s(&d)]);
    assert!(
        !o.status.success() && text(&o).contains("another filesystem"),
        "{}",
        text(&o)
    );
    let o = scoutfs(&["check", s(&d2), s(&m2)]);
    assert!(
        !o.status.success() && text(&o).contains("expected the metadata device"),
        "{}",
        text(&o)
    );

    let empty = dir.path("empty.img");
    std::fs::write(&empty, vec![0u8; 1 << 20]).unwrap();
    let o = scoutfs(&["check", s(&empty), s(&d)]);
    assert!(
        !o.status.success() && text(&o).contains("no scoutfs super block"),
        "{}",
        text(&o)
    );
    let o = scoutfs(&["check", s(&dir.path("missing")), s(&d)]);
    assert!(
        !o.status.success() && text(&o).contains("missing"),
        "{}",
        text(&o)
    );
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let dir = Scratch::new("args");
    let (m, d) = (dir.path("m.img"), dir.path("d.img"));
    for (args, want) in [
        (
            vec!["mkfs", s(&m), s(&d), "-Q", "0,127.0.0.1"],
            "NR,ADDR,PORT",
        ),
        (
            vec![
                "mkfs",
                s(&m),
                s(&d),
                "-Q",
                "15,127.0.0.1,7000",
                "-m",
                "64M",
                "-d",
                "64M",
            ],
            "out of range",
        ),
        (
            vec![
                "mkfs",
                s(&m),
                s(&d),
                "-Q",
                "0,127.0.0.1,7000",
                "-m",
                "1M",
                "-d",
                "64M",
            ],
            "at least",
        ),
        (
            vec![
                "mkfs",
                s(&m),
                s(&d),
                "-Q",
                "0,127.0.0.1,7000",
                "-m",
                "12Q",
                "-d",
                "64M",
            ],
            "is not a size",
        ),
        (
            vec!["mkfs", s(&m), s(&d), "-Q", "0,127.0.0.1,7000"],
            "does not exist",
        ),
        (vec!["mkfs", s(&m), s(&d)], "--quorum-slot"),
        (
            vec![
                "mkfs",
                s(&m),
                s(&d),
                "-Q",
                "0,127.0.0.1,7000",
                "-m",
                "18446744073709551615",
            ],
            "can be at most",
        ),
        (
            vec!["mkfs", s(&m), s(&m), "-Q", "0,127.0.0.1,7000", "-m", "64M"],
            "are the same file",
        ),
    ] {
        let o = scoutfs(&args);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(
            text(&o).contains(want),
            "{args:?}: expected '{want}' in: {}",
            text(&o)
        );
        assert!(
            !m.exists() && !d.exists(),
            "{args:?} left image files behind"
        );
    }
}
