//! The btree benchmark: our COW btree beside redb doing the same work.
//!
//! Workload (both engines, each on a file in the same scratch directory):
//! 1. insert N random keys with 16-byte values in sorted batches of 10,000,
//!    committing (durably: data flushed, then the root) after each batch;
//! 2. N random point lookups of inserted keys with a cold cache (the
//!    engine's own cache emptied by reopening or clearing it, and the
//!    kernel's page cache dropped when we may);
//! 3. the same lookups again with a warm cache;
//! 4. a full scan in key order.
//!
//! Reported: items per second for each phase, and bytes written to the
//! device per inserted item (from /proc/self/io `wchar`, counted the same
//! way for both). Each engine runs `--runs` times; the table shows the
//! median with min and max, and our ratio to redb.
//!
//! Usage: btree-bench [--items N] [--runs R] [--dir DIR]

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use scoutfs_core::rng::Rng;
use scoutfs_core::store::btree::{self, Item};
use scoutfs_core::store::commit::Store;
use scoutfs_core::store::dev::{BlockDev, FileDev};
use scoutfs_core::tools::mkfs::{mkfs, MkfsOptions};
use scoutfs_format::Key;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const BATCH: usize = 10_000;
const VAL_LEN: usize = 16;
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");

#[derive(Clone, Copy, Default)]
struct Run {
    insert: f64,
    cold: f64,
    warm: f64,
    scan: f64,
    bytes_per_item: f64,
}

fn wchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Drops the kernel's page cache when we are allowed to; says whether it did.
fn drop_page_cache() -> bool {
    sync_all();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn sync_all() {
    let _ = std::process::Command::new("sync").status();
}

fn keys(n: usize, seed: u64) -> Vec<Key> {
    let mut rng = Rng::new(seed);
    let mut ks: Vec<Key> = (0..n)
        .map(|_| Key::new(32, rng.next_u64(), 8, rng.next_u64(), 0, 0))
        .collect();
    ks.sort_unstable();
    ks.dedup();
    // Insertion order is random; each batch is sorted before it is applied.
    let mut order = ks.clone();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order
}

fn val(k: &Key) -> [u8; VAL_LEN] {
    let mut v = [0u8; VAL_LEN];
    v[..8].copy_from_slice(&k.first.to_le_bytes());
    v[8..].copy_from_slice(&k.second.to_le_bytes());
    v
}

fn rate(n: usize, t: Instant) -> f64 {
    n as f64 / t.elapsed().as_secs_f64()
}

fn ours(dir: &Path, order: &[Key], lookups: &[Key]) -> Run {
    let (mp, dp) = (dir.join("scoutfs-meta.img"), dir.join("scoutfs-data.img"));
    let _ = std::fs::remove_file(&mp);
    let _ = std::fs::remove_file(&dp);
    let meta: Arc<dyn BlockDev> =
        Arc::new(FileDev::create(&mp, 8 << 30).expect("create meta image"));
    let data: Arc<dyn BlockDev> =
        Arc::new(FileDev::create(&dp, 64 << 20).expect("create data image"));
    let opts = MkfsOptions {
        quorum: vec![(0, "127.0.0.1:7000".parse().unwrap())],
        ..Default::default()
    };
    mkfs(meta.clone(), data, &opts).expect("mkfs");
    let mut store = Store::open(meta.clone(), 4096).expect("open");
    let mut run = Run::default();

    let (t, w0) = (Instant::now(), wchar());
    for batch in order.chunks(BATCH) {
        let mut items: Vec<Item> = batch
            .iter()
            .map(|k| Item {
                key: *k,
                seq: 1,
                flags: 0,
                val: val(k).to_vec(),
            })
            .collect();
        items.sort_unstable_by_key(|it| it.key);
        let mut txn = store.begin();
        btree::insert_list(&mut txn.w, &mut txn.sb.srch_root, &items).expect("insert");
        store.commit(txn).expect("commit");
    }
    run.insert = rate(order.len(), t);
    run.bytes_per_item = (wchar() - w0) as f64 / order.len() as f64;

    drop(store);
    drop_page_cache();
    let store = Store::open(meta, 4096).expect("reopen");
    for (i, phase) in [&mut run.cold, &mut run.warm].into_iter().enumerate() {
        let t = Instant::now();
        for k in lookups {
            let it = btree::lookup(store.cache.as_ref(), &store.sb.srch_root, k).expect("lookup");
            assert!(it.is_some_and(|it| it.val == val(k)), "lookup {i} of {k}");
        }
        *phase = rate(lookups.len(), t);
    }
    let t = Instant::now();
    let mut n = 0usize;
    btree::for_each_range(
        store.cache.as_ref(),
        &store.sb.srch_root,
        &Key::MIN,
        &Key::MAX,
        |_| {
            n += 1;
            Ok(true)
        },
    )
    .expect("scan");
    assert_eq!(n, order.len());
    run.scan = rate(n, t);
    let _ = std::fs::remove_file(&mp);
    let _ = std::fs::remove_file(&dp);
    run
}

fn redb_run(dir: &Path, order: &[Key], lookups: &[Key]) -> Run {
    let path = dir.join("redb.db");
    let _ = std::fs::remove_file(&path);
    let kb = |k: &Key| k.to_disk();
    let cache = 256 << 20;
    let db = redb::Database::builder()
        .set_cache_size(cache)
        .create(&path)
        .expect("redb create");
    let mut run = Run::default();
    let (t, w0) = (Instant::now(), wchar());
    for batch in order.chunks(BATCH) {
        let mut b: Vec<&Key> = batch.iter().collect();
        b.sort_unstable();
        let tx = db.begin_write().expect("begin");
        {
            let mut table = tx.open_table(TABLE).expect("table");
            for k in b {
                table
                    .insert(zerocopy::IntoBytes::as_bytes(&kb(k)), &val(k)[..])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    run.insert = rate(order.len(), t);
    run.bytes_per_item = (wchar() - w0) as f64 / order.len() as f64;
    drop(db);
    drop_page_cache();
    let db = redb::Database::builder()
        .set_cache_size(cache)
        .open(&path)
        .expect("redb open");
    let rtx = db.begin_read().expect("read");
    let table = rtx.open_table(TABLE).expect("table");
    for phase in [&mut run.cold, &mut run.warm] {
        let t = Instant::now();
        for k in lookups {
            let v = table
                .get(zerocopy::IntoBytes::as_bytes(&kb(k)))
                .expect("get")
                .expect("present");
            assert_eq!(v.value(), &val(k)[..]);
        }
        *phase = rate(lookups.len(), t);
    }
    let t = Instant::now();
    let mut n = 0usize;
    for e in table.iter().expect("iter") {
        e.expect("entry");
        n += 1;
    }
    assert_eq!(n, order.len());
    run.scan = rate(n, t);
    drop(table);
    drop(rtx);
    drop(db);
    let _ = std::fs::remove_file(&path);
    run
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn cell(v: &[f64], unit: &str) -> String {
    let (med, min, max) = stats(v);
    if unit == "B" {
        format!("{med:.0} B ({min:.0}–{max:.0})")
    } else {
        format!("{:.0}k/s ({:.0}–{:.0})", med / 1e3, min / 1e3, max / 1e3)
    }
}

fn main() {
    let mut items = 1_000_000usize;
    let mut runs = 3usize;
    let mut dir = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--items" => items = v.parse().expect("--items N"),
            "--runs" => runs = v.parse().expect("--runs N"),
            "--dir" => dir = PathBuf::from(v),
            _ => panic!("usage: btree-bench [--items N] [--runs R] [--dir DIR]"),
        }
    }
    let dir = dir.join(format!("scoutfs-btree-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let order = keys(items, 42);
    let mut rng = Rng::new(7);
    let lookups: Vec<Key> = (0..order.len())
        .map(|_| order[rng.below(order.len() as u64) as usize])
        .collect();
    let cold_dropped = drop_page_cache();
    let (mut o, mut r) = (Vec::new(), Vec::new());
    for i in 0..runs {
        eprintln!("run {}/{runs}: scoutfs-rs", i + 1);
        o.push(ours(&dir, &order, &lookups));
        eprintln!("run {}/{runs}: redb", i + 1);
        r.push(redb_run(&dir, &order, &lookups));
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} items ({VAL_LEN}-byte values), batches of {BATCH}, {runs} runs; median (min–max)",
        order.len()
    );
    println!(
        "page cache dropped before cold lookups: {}",
        if cold_dropped {
            "yes"
        } else {
            "no (not permitted)"
        }
    );
    println!();
    println!("| phase | scoutfs-rs | redb | ratio (ours/redb) |");
    println!("|---|---|---|---|");
    type Field = fn(&Run) -> f64;
    let rows: [(&str, Field, &str); 5] = [
        ("insert, commit per batch", |x| x.insert, "/s"),
        ("point lookups, cold cache", |x| x.cold, "/s"),
        ("point lookups, warm cache", |x| x.warm, "/s"),
        ("full scan", |x| x.scan, "/s"),
        ("bytes written per inserted item", |x| x.bytes_per_item, "B"),
    ];
    for (name, f, unit) in rows {
        let ov: Vec<f64> = o.iter().map(f).collect();
        let rv: Vec<f64> = r.iter().map(f).collect();
        let ratio = stats(&ov).0 / stats(&rv).0;
        println!(
            "| {name} | {} | {} | {ratio:.2} |",
            cell(&ov, unit),
            cell(&rv, unit)
        );
    }
}
