//! The mounted filesystem in process: namespace and data operations
//! through the `fs` API, with the server, client, locks and transactions of
//! a real mount, and a remount that sees everything committed.

mod common;

use scoutfs_core::mount::fs::dir::{RENAME_EXCHANGE, RENAME_NOREPLACE};
use scoutfs_core::mount::fs::types::NewNode;
use scoutfs_core::mount::fs::*;
use scoutfs_core::mount::MountOptions;
use scoutfs_core::store::dev::BlockDev;
use scoutfs_core::tools::check::{check, NoProgress};
use scoutfs_format::ROOT_INO;
use std::sync::Arc;

const REG: u32 = libc::S_IFREG | 0o644;
const DIR: u32 = libc::S_IFDIR | 0o755;

use common::{assert_clean, mount};

fn names(fs: &Fs, dir: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let ents = fs.readdir(dir, pos, 100, u64::MAX).unwrap();
        if ents.is_empty() {
            break;
        }
        for e in &ents {
            out.push(String::from_utf8_lossy(&e.name).into_owned());
        }
        pos = ents.last().unwrap().next_pos;
    }
    out
}

#[test]
fn create_write_read_remount() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xf5);
    {
        let mnt = mount(&meta, &data);
        let fs = mnt.fs();
        let d = fs.mknod(ROOT_INO, b"dir", &NewNode::new(DIR)).unwrap();
        let f = fs
            .mknod(d.ino, b"file", &NewNode::new(REG).owner(1000, 1000))
            .unwrap();
        assert_eq!(fs.lookup(d.ino, b"file").unwrap().ino, f.ino);
        assert_eq!(
            fs.mknod(d.ino, b"file", &NewNode::new(REG)).unwrap_err(),
            EEXIST
        );
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(fs.write(f.ino, 10, &payload).unwrap(), payload.len());
        let back = fs.read(f.ino, 0, 200_000).unwrap();
        assert_eq!(back.len(), 100_010);
        assert_eq!(&back[..10], &[0u8; 10]);
        assert_eq!(&back[10..], &payload[..]);
        fs.mknod(d.ino, b"link", &NewNode::symlink(b"file"))
            .unwrap();
        assert_eq!(names(fs, d.ino), vec![".", "..", "file", "link"]);
        assert_eq!(fs.getattr(d.ino).unwrap().inode.nlink.get(), 2);
        assert_eq!(fs.getattr(ROOT_INO).unwrap().inode.nlink.get(), 3);
        mnt.unmount().unwrap();
    }
    assert_clean(&meta, &data);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let d = fs.lookup(ROOT_INO, b"dir").unwrap();
    let f = fs.lookup(d.ino, b"file").unwrap();
    assert_eq!(f.size(), 100_010);
    let back = fs.read(f.ino, 50_000, 10).unwrap();
    let want: Vec<u8> = (49_990..50_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(back, want);
    // The server merged the first mount's log tree into fs_root at start:
    // the forest is fs_root and this mount's own log tree.
    let roots = fs.roots().unwrap();
    let lts = scoutfs_core::store::forest::log_roots(mnt.block_cache().as_ref(), &roots.logs_root)
        .unwrap();
    assert_eq!(lts.len(), 1, "one log tree, this mount's");
    assert!(
        roots.fs_root.height > 0,
        "the first mount's items are in fs_root"
    );
    let l = fs.lookup(d.ino, b"link").unwrap();
    assert_eq!(fs.readlink(l.ino).unwrap(), b"file");
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

#[test]
fn namespace_errors_and_renames() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xf6);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let a = fs.mknod(ROOT_INO, b"a", &NewNode::new(DIR)).unwrap();
    let b = fs.mknod(ROOT_INO, b"b", &NewNode::new(DIR)).unwrap();
    let f = fs.mknod(a.ino, b"f", &NewNode::new(REG)).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"nope").unwrap_err(), ENOENT);
    assert_eq!(fs.lookup(f.ino, b"x").unwrap_err(), ENOTDIR);
    assert_eq!(
        fs.mknod(ROOT_INO, &[b'x'; 256], &NewNode::new(REG))
            .unwrap_err(),
        ENAMETOOLONG
    );
    assert_eq!(fs.rmdir(ROOT_INO, b"a").unwrap_err(), ENOTEMPTY);
    assert_eq!(fs.unlink(ROOT_INO, b"a").unwrap_err(), EISDIR);
    assert_eq!(fs.rmdir(a.ino, b"f").unwrap_err(), ENOTDIR);
    assert_eq!(
        fs.rename(ROOT_INO, b"a", a.ino, b"sub", 0).unwrap_err(),
        EINVAL
    );
    fs.rename(a.ino, b"f", b.ino, b"g", 0).unwrap();
    assert_eq!(fs.lookup(b.ino, b"g").unwrap().ino, f.ino);
    assert_eq!(fs.lookup(a.ino, b"f").unwrap_err(), ENOENT);
    let h = fs.mknod(b.ino, b"h", &NewNode::new(REG)).unwrap();
    assert_eq!(
        fs.rename(b.ino, b"g", b.ino, b"h", RENAME_NOREPLACE)
            .unwrap_err(),
        EEXIST
    );
    fs.rename(b.ino, b"g", b.ino, b"h", RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(fs.lookup(b.ino, b"h").unwrap().ino, f.ino);
    assert_eq!(fs.lookup(b.ino, b"g").unwrap().ino, h.ino);
    fs.rename(ROOT_INO, b"a", b.ino, b"a2", 0).unwrap();
    assert_eq!(fs.getattr(ROOT_INO).unwrap().inode.nlink.get(), 3);
    assert_eq!(fs.getattr(b.ino).unwrap().inode.nlink.get(), 3);
    assert_eq!(fs.lookup(a.ino, b"..").unwrap().ino, b.ino);
    fs.link(f.ino, ROOT_INO, b"hard").unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().inode.nlink.get(), 2);
    fs.unlink(b.ino, b"h").unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().inode.nlink.get(), 1);
    fs.unlink(ROOT_INO, b"hard").unwrap();
    fs.evict(f.ino).unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap_err(), ENOENT);
    fs.rmdir(b.ino, b"a2").unwrap();
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

#[test]
fn truncate_fallocate_xattrs() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xf7);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let f = fs.mknod(ROOT_INO, b"f", &NewNode::new(REG)).unwrap();
    fs.write(f.ino, 0, &[7u8; 20_000]).unwrap();
    fs.truncate(f.ino, 5000).unwrap();
    fs.truncate(f.ino, 9000).unwrap();
    let back = fs.read(f.ino, 0, 9000).unwrap();
    assert_eq!(&back[..5000], &[7u8; 5000][..]);
    assert_eq!(
        &back[5000..],
        &[0u8; 4000][..],
        "bytes past a truncate read as zeros"
    );
    fs.fallocate(f.ino, data::FALLOC_FL_KEEP_SIZE, 0, 1 << 20)
        .unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().size(), 9000);
    assert_eq!(fs.read(f.ino, 0, 10).unwrap(), vec![7u8; 10]);
    fs.fallocate(
        f.ino,
        data::FALLOC_FL_PUNCH_HOLE | data::FALLOC_FL_KEEP_SIZE,
        1000,
        6000,
    )
    .unwrap();
    let back = fs.read(f.ino, 0, 9000).unwrap();
    assert_eq!(&back[..1000], &[7u8; 1000][..]);
    assert_eq!(&back[1000..7000], &[0u8; 6000][..]);
    fs.write(f.ino, (4 << 30) + 123, b"beyond 4 GiB").unwrap();
    assert_eq!(
        fs.read(f.ino, (4 << 30) + 123, 12).unwrap(),
        b"beyond 4 GiB"
    );
    assert_eq!(fs.getattr(f.ino).unwrap().size(), (4 << 30) + 135);

    fs.setxattr(f.ino, b"user.a", b"1", 0).unwrap();
    let big = vec![9u8; 5000];
    fs.setxattr(f.ino, b"user.big", &big, 0).unwrap();
    assert_eq!(fs.getxattr(f.ino, b"user.big").unwrap(), big);
    assert_eq!(
        fs.setxattr(f.ino, b"user.a", b"2", xattr::XATTR_CREATE)
            .unwrap_err(),
        EEXIST
    );
    assert_eq!(
        fs.setxattr(f.ino, b"user.z", b"2", xattr::XATTR_REPLACE)
            .unwrap_err(),
        ENODATA
    );
    fs.setxattr(f.ino, b"user.a", b"22", xattr::XATTR_REPLACE)
        .unwrap();
    assert_eq!(fs.getxattr(f.ino, b"user.a").unwrap(), b"22");
    let mut l = fs.listxattr(f.ino).unwrap();
    l.sort();
    assert_eq!(l, vec![b"user.a".to_vec(), b"user.big".to_vec()]);
    fs.removexattr(f.ino, b"user.a").unwrap();
    assert_eq!(fs.getxattr(f.ino, b"user.a").unwrap_err(), ENODATA);
    assert_eq!(
        fs.setxattr(f.ino, b"bogus.a", b"1", 0).unwrap_err(),
        EOPNOTSUPP
    );
    fs.unlink(ROOT_INO, b"f").unwrap();
    fs.evict(f.ino).unwrap();
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

/// A metadata block corrupted under a mounted filesystem: what depends on
/// it fails with EIO, the corruption is counted, and the rest is served,
/// changes included. The corrupt block is in fs_root, where the second
/// mount's server merged the first mount's log tree; the mount reads it but
/// never writes it.
#[test]
fn corrupt_block_under_a_mount_gives_eio_and_the_rest_is_served() {
    use scoutfs_core::store::btree;
    use scoutfs_format::consts::BLOCK_LG_SIZE;
    use std::sync::atomic::Ordering;
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xf8);
    // Two directories far apart in key order, each with enough items that
    // they land in different leaves of the first mount's log tree.
    let (a, b) = {
        let mnt = mount(&meta, &data);
        let fs = mnt.fs();
        let a = fs.mknod(ROOT_INO, b"a", &NewNode::new(DIR)).unwrap();
        for i in 0..600u32 {
            let f = fs
                .mknod(a.ino, format!("a{i}").as_bytes(), &NewNode::new(REG))
                .unwrap();
            fs.setxattr(f.ino, b"user.pad", &[1u8; 400], 0).unwrap();
        }
        let b = fs.mknod(ROOT_INO, b"b", &NewNode::new(DIR)).unwrap();
        for i in 0..20u32 {
            fs.mknod(b.ino, format!("b{i}").as_bytes(), &NewNode::new(REG))
                .unwrap();
        }
        mnt.unmount().unwrap();
        (a.ino, b.ino)
    };
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let cache = mnt.block_cache().clone();
    let roots = fs.roots().unwrap();
    // The second mount's server merged the first mount's log tree into fs_root.
    let root = roots.fs_root;
    assert!(root.height > 1, "fs_root of several leaves");
    let key = scoutfs_format::Key::inode(a);
    let mut leaf = 0;
    btree::walk_blocks(cache.as_ref(), &root, |r, blk| {
        if btree::block::level(blk) == 0 && btree::block::search(blk, &key).is_ok() {
            leaf = r.blkno.get();
        }
        Ok(())
    })
    .unwrap();
    assert!(leaf != 0);
    meta.corrupt_byte(leaf * BLOCK_LG_SIZE as u64 + 3000);
    mnt.drop_caches();
    let before = cache.counters.block_corrupt.load(Ordering::Relaxed);
    assert_eq!(
        fs.getattr(a).unwrap_err(),
        EIO,
        "what depends on the block fails"
    );
    assert!(
        cache.counters.block_corrupt.load(Ordering::Relaxed) > before,
        "the corruption is counted"
    );
    // Everything else is still served, and changes elsewhere still commit.
    assert_eq!(fs.lookup(b, b"b7").unwrap().file_type(), libc::S_IFREG);
    fs.mknod(b, b"new", &NewNode::new(REG)).unwrap();
    fs.sync().unwrap();
    mnt.drop_caches();
    assert!(fs.lookup(b, b"new").is_ok());
    assert_eq!(
        fs.getattr(a).unwrap_err(),
        EIO,
        "and it still fails, without taking the mount down"
    );
    mnt.unmount().unwrap();
}

/// An inode unlinked while still in use, whose mount stopped before
/// freeing it, is freed by the next mount's first orphan scan: no space is
/// lost.
#[test]
fn orphans_left_by_a_mount_are_freed_by_the_next() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xf9);
    let ino = {
        let mnt = mount(&meta, &data);
        let fs = mnt.fs();
        let f = fs.mknod(ROOT_INO, b"open", &NewNode::new(REG)).unwrap();
        fs.write(f.ino, 0, &[3u8; 300_000]).unwrap();
        // Unlinked while (as far as the fs knows) still open: never evicted.
        fs.unlink(ROOT_INO, b"open").unwrap();
        assert_eq!(
            fs.read(f.ino, 0, 3).unwrap(),
            vec![3u8; 3],
            "an orphan is still readable"
        );
        mnt.unmount().unwrap();
        f.ino
    };
    let (m, d): (Arc<dyn BlockDev>, Arc<dyn BlockDev>) =
        (Arc::new(meta.clone()), Arc::new(data.clone()));
    let before = check(&m, &d, &mut NoProgress).unwrap();
    assert!(
        before.is_clean() && before.data_referenced >= 73,
        "the orphan still holds its blocks"
    );
    let mnt = mount(&meta, &data);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while mnt.fs().getattr(ino).is_ok() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        mnt.fs().getattr(ino).unwrap_err(),
        ENOENT,
        "the next mount freed it"
    );
    mnt.unmount().unwrap();
    let after = check(&m, &d, &mut NoProgress).unwrap();
    assert!(after.is_clean());
    assert_eq!(after.data_referenced, 0, "its data blocks are free again");
}

/// Readdir hands out entries in batches from the cache: positions stay
/// stable across deletions and additions between calls, deleted entries
/// never show, and a cold cache after remount lists the same.
#[test]
fn readdir_batches_skip_deleted_entries_and_survive_remount() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xfa);
    let expect: Vec<String>;
    {
        let mnt = mount(&meta, &data);
        let fs = mnt.fs();
        let d = fs.mknod(ROOT_INO, b"big", &NewNode::new(DIR)).unwrap();
        for i in 0..1000 {
            fs.mknod(d.ino, format!("f{i:04}").as_bytes(), &NewNode::new(REG))
                .unwrap();
        }
        fs.sync().unwrap();
        // Deleted entries, both committed and only in the transaction.
        for i in (0..1000).filter(|i| i % 3 == 0) {
            fs.unlink(d.ino, format!("f{i:04}").as_bytes()).unwrap();
        }
        // Read a few entries, change the directory, and go on from there.
        let first = fs.readdir(d.ino, 0, 7, u64::MAX).unwrap();
        assert_eq!(first.len(), 7);
        assert_eq!(first[0].name, b".");
        assert_eq!(first[1].name, b"..");
        assert_eq!(first[2].name, b"f0001");
        let pos = first.last().unwrap().next_pos;
        fs.unlink(d.ino, b"f0004").unwrap();
        fs.mknod(d.ino, b"late", &NewNode::new(REG)).unwrap();
        let mut rest = Vec::new();
        let mut p = pos;
        loop {
            let ents = fs.readdir(d.ino, p, 13, u64::MAX).unwrap();
            if ents.is_empty() {
                break;
            }
            assert!(ents.len() <= 13);
            p = ents.last().unwrap().next_pos;
            rest.extend(ents.into_iter().map(|e| e.name));
        }
        let seen: Vec<Vec<u8>> = first.into_iter().map(|e| e.name).chain(rest).collect();
        // f0004 was listed before it went; nothing is listed twice; the new
        // entry comes last (its position is past every earlier one).
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "no entry listed twice");
        assert_eq!(seen.last().unwrap(), b"late");
        assert_eq!(seen.len(), 2 + 666 + 1);
        expect = names(fs, d.ino);
        assert_eq!(expect.len(), 2 + 665 + 1);
        assert!(!expect.iter().any(|n| n == "f0004" || n == "f0003"));
        mnt.unmount().unwrap();
    }
    let mnt = mount(&meta, &data);
    let d = mnt.fs().lookup(ROOT_INO, b"big").unwrap();
    assert_eq!(
        names(mnt.fs(), d.ino),
        expect,
        "a cold cache lists the same"
    );
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

/// Regression (xfstests generic/736): a listing that renames each entry it
/// reads saw every renamed entry again at its new position. Stopping at
/// the directory's next position when the listing began lists each once.
#[test]
fn a_listing_that_renames_what_it_reads_lists_each_entry_once() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xf6);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let d = fs.mknod(ROOT_INO, b"d", &NewNode::new(DIR)).unwrap();
    for i in 0..500 {
        fs.mknod(d.ino, format!("f{i}").as_bytes(), &NewNode::new(REG))
            .unwrap();
    }
    let end = fs.readdir_end(d.ino).unwrap();
    let (mut pos, mut seen) = (0, Vec::new());
    loop {
        let ents = fs.readdir(d.ino, pos, 16, end).unwrap();
        let Some(last) = ents.last() else { break };
        pos = last.next_pos;
        for e in ents.iter().filter(|e| e.name[0] == b'f') {
            let new = [&e.name[..], b"_renamed"].concat();
            fs.rename(d.ino, &e.name, d.ino, &new, 0).unwrap();
            seen.push(e.name.clone());
        }
    }
    assert_eq!(seen.len(), 500, "each entry listed once");
    // Without the stop the renamed entries come back (the defect).
    let again = fs.readdir(d.ino, pos, 16, u64::MAX).unwrap();
    assert_eq!(again.len(), 16);
    assert_eq!(names(fs, d.ino).len(), 502);
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

/// Regression (xfstests generic/037): a read racing a replace of the same
/// xattr saw no attribute at all between the old value's removal and the
/// new one's store.
#[test]
fn an_xattr_replace_is_atomic_to_concurrent_readers() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xf7);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let f = fs.mknod(ROOT_INO, b"f", &NewNode::new(REG)).unwrap();
    fs.setxattr(f.ino, b"user.v", b"0", 0).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let reads = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut n = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let v = fs.getxattr(f.ino, b"user.v");
                assert!(v.is_ok(), "read {n} during a replace: {v:?}");
                assert!(fs.listxattr(f.ino).unwrap().contains(&b"user.v".to_vec()));
                n += 1;
            }
            n
        });
        for i in 0..3000u32 {
            // Values of several sizes, so parts come and go.
            let v = vec![b'a' + (i % 26) as u8; 1 + (i as usize * 37) % 9000];
            fs.setxattr(f.ino, b"user.v", &v, 2 /* XATTR_REPLACE */)
                .unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert!(reads > 0);
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

/// ACLs in the fs API: setting an access ACL sets the mode (and a minimal
/// one isn't kept), a default ACL only goes on directories, invalid ACLs
/// are refused, new nodes inherit a default ACL in place of the umask, and
/// chmod rewrites the access ACL.
#[test]
fn posix_acls_set_modes_and_are_inherited() {
    use scoutfs_core::mount::fs::acl::{self, Acl, Entry, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ};
    let e = |tag, perm, id| Entry { tag, perm, id };
    const X: u32 = u32::MAX;
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xfb);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let d = fs.mknod(ROOT_INO, b"d", &NewNode::new(DIR)).unwrap();
    let f = fs.mknod(ROOT_INO, b"f", &NewNode::new(REG)).unwrap();

    let ext = Acl(vec![
        e(USER_OBJ, 6, X),
        e(USER, 7, 77),
        e(GROUP_OBJ, 4, X),
        e(MASK, 5, X),
        e(OTHER, 1, X),
    ]);
    fs.setxattr(f.ino, acl::ACCESS, &ext.encode(), 0).unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().mode() & 0o7777, 0o651);
    assert_eq!(fs.getxattr(f.ino, acl::ACCESS).unwrap(), ext.encode());
    // A minimal ACL is the mode: it replaces the stored ACL and isn't kept.
    let min = Acl(vec![e(USER_OBJ, 7, X), e(GROUP_OBJ, 0, X), e(OTHER, 0, X)]);
    fs.setxattr(f.ino, acl::ACCESS, &min.encode(), 0).unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs.getxattr(f.ino, acl::ACCESS).unwrap_err(), ENODATA);
    assert_eq!(
        fs.setxattr(f.ino, acl::DEFAULT, &min.encode(), 0)
            .unwrap_err(),
        EACCES,
        "no default ACL on a file"
    );
    assert_eq!(
        fs.setxattr(f.ino, acl::ACCESS, b"\x02\0\0\0junk", 0)
            .unwrap_err(),
        EINVAL
    );

    let def = Acl(vec![
        e(USER_OBJ, 7, X),
        e(USER, 6, 77),
        e(GROUP_OBJ, 5, X),
        e(MASK, 7, X),
        e(OTHER, 0, X),
    ]);
    fs.setxattr(d.ino, acl::DEFAULT, &def.encode(), 0).unwrap();
    // Created 0666 with umask 022: the ACL decides, not the umask.
    let c = fs
        .mknod(
            d.ino,
            b"c",
            &NewNode::new(libc::S_IFREG | 0o666).umask(0o022),
        )
        .unwrap();
    assert_eq!(c.mode() & 0o7777, 0o660);
    let got = Acl::parse(&fs.getxattr(c.ino, acl::ACCESS).unwrap()).unwrap();
    assert_eq!(got.mode_bits(), (0o660, false));
    assert_eq!(fs.getxattr(c.ino, acl::DEFAULT).unwrap_err(), ENODATA);
    let sub = fs
        .mknod(
            d.ino,
            b"sub",
            &NewNode::new(libc::S_IFDIR | 0o777).umask(0o022),
        )
        .unwrap();
    assert_eq!(sub.mode() & 0o7777, 0o770);
    assert_eq!(fs.getxattr(sub.ino, acl::DEFAULT).unwrap(), def.encode());
    // Symlinks inherit nothing; outside the directory the umask applies.
    let l = fs
        .mknod(d.ino, b"l", &NewNode::symlink(b"c").umask(0o022))
        .unwrap();
    assert_eq!(fs.getxattr(l.ino, acl::ACCESS).unwrap_err(), ENODATA);
    let plain = fs
        .mknod(
            ROOT_INO,
            b"plain",
            &NewNode::new(libc::S_IFREG | 0o666).umask(0o027),
        )
        .unwrap();
    assert_eq!(plain.mode() & 0o7777, 0o640);

    // chmod rewrites the owner, mask and other entries.
    let s = scoutfs_core::mount::fs::types::SetAttr {
        mode: Some(0o604),
        ..Default::default()
    };
    fs.setattr(c.ino, &s).unwrap();
    let got = Acl::parse(&fs.getxattr(c.ino, acl::ACCESS).unwrap()).unwrap();
    assert_eq!(got.mode_bits(), (0o604, false));
    assert!(got.0.contains(&e(USER, 6, 77)), "named entries stay");
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

fn atime(fs: &Fs, ino: u64) -> (u64, u32) {
    let a = fs.getattr(ino).unwrap();
    (a.inode.atime.sec.get(), a.inode.atime.nsec.get())
}

/// Access times by the mount's mode: relatime updates an atime that isn't
/// after the last change (or is a day old) and then leaves it alone;
/// strictatime updates at every access; noatime never.
#[test]
fn atime_modes() {
    use scoutfs_core::mount::fs::types::SetAttr;
    use scoutfs_format::Timespec;
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xfc);
    let open = |mode| {
        let mut o = MountOptions::default();
        o.fs.atime = mode;
        common::mount_with(&meta, &data, &o)
    };
    let mnt = open(AtimeMode::Relatime);
    let fs = mnt.fs();
    let f = fs.mknod(ROOT_INO, b"f", &NewNode::new(REG)).unwrap();
    fs.write(f.ino, 0, b"hello").unwrap();
    assert!(fs.atime_wanted(f.ino).unwrap(), "changed since last read");
    let before = atime(fs, f.ino);
    let changed = fs.getattr(f.ino).unwrap().inode.ctime;
    assert!(fs.accessed(f.ino).unwrap());
    let after = atime(fs, f.ino);
    assert!(after > before);
    assert_eq!(fs.getattr(f.ino).unwrap().inode.ctime, changed, "no ctime");
    assert!(!fs.atime_wanted(f.ino).unwrap(), "read since the change");
    assert!(!fs.accessed(f.ino).unwrap());
    assert_eq!(atime(fs, f.ino), after);
    fs.write(f.ino, 5, b"!").unwrap();
    assert!(fs.accessed(f.ino).unwrap(), "changed again");
    // An atime after the last change but a day old is due again.
    let s = SetAttr {
        atime: Some(Timespec::new(atime(fs, f.ino).0 - 2 * 86_400, 0)),
        mtime: Some(Timespec::new(atime(fs, f.ino).0 - 3 * 86_400, 0)),
        ctime: Some(Timespec::new(atime(fs, f.ino).0 - 3 * 86_400, 0)),
        ..Default::default()
    };
    fs.setattr(f.ino, &s).unwrap();
    assert!(fs.accessed(f.ino).unwrap(), "a day old");
    assert!(!fs.accessed(f.ino).unwrap());
    // Directories too (readdir).
    assert!(fs.accessed(ROOT_INO).unwrap());
    mnt.unmount().unwrap();

    let mnt = open(AtimeMode::Strict);
    let fs = mnt.fs();
    assert!(fs.accessed(f.ino).unwrap());
    assert!(fs.accessed(f.ino).unwrap(), "strictatime: every access");
    mnt.unmount().unwrap();

    let mnt = open(AtimeMode::Off);
    let fs = mnt.fs();
    fs.write(f.ino, 0, b"x").unwrap();
    let t = atime(fs, f.ino);
    assert!(!fs.atime_wanted(f.ino).unwrap());
    assert!(!fs.accessed(f.ino).unwrap());
    assert_eq!(atime(fs, f.ino), t);
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

/// Small files take exactly their blocks; a file written in a stream gets
/// blocks preallocated past its end, read as zeros until written.
#[test]
fn small_files_are_not_preallocated_and_streams_are() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xfd);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let s = fs.mknod(ROOT_INO, b"small", &NewNode::new(REG)).unwrap();
    fs.write(s.ino, 0, &[1u8; 4096]).unwrap();
    assert_eq!(fs.getattr(s.ino).unwrap().inode.online_blocks.get(), 1);
    let t = fs.mknod(ROOT_INO, b"stream", &NewNode::new(REG)).unwrap();
    fs.write(t.ino, 0, &[2u8; 65536]).unwrap();
    assert_eq!(fs.getattr(t.ino).unwrap().inode.online_blocks.get(), 16);
    fs.write(t.ino, 65536, &[3u8; 65536]).unwrap();
    let a = fs.getattr(t.ino).unwrap();
    assert_eq!(a.size(), 131072);
    assert_eq!(
        a.inode.online_blocks.get(),
        48,
        "the second write preallocated as many blocks as the file had"
    );
    assert_eq!(fs.read(t.ino, 65536, 8).unwrap(), vec![3u8; 8]);
    assert!(
        fs.read(t.ino, 131072, 8).unwrap().is_empty(),
        "nothing past EOF"
    );
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}

/// A file written in pieces gets blocks preallocated past its end; its
/// last close gives back those it did not grow into, and blocks reserved
/// with fallocate past the end stay.
#[test]
fn the_last_close_gives_back_blocks_preallocated_past_the_end() {
    let (meta, data) = common::mem_fs(256 << 20, 256 << 20, 0xfc);
    let mnt = mount(&meta, &data);
    let fs = mnt.fs();
    let used = |fs: &Fs| {
        fs.sync().unwrap();
        let s = fs.statfs().unwrap();
        s.total_data_blocks - s.free_data_blocks
    };
    let before = used(fs);
    let f = fs
        .mknod(ROOT_INO, b"grown", &NewNode::new(REG).opened())
        .unwrap();
    let piece = vec![7u8; 256 << 10];
    for i in 0..13u64 {
        fs.write(f.ino, i * piece.len() as u64, &piece).unwrap();
    }
    let size_blocks = 13 * 64;
    let open = used(fs) - before;
    assert!(
        open > size_blocks,
        "{open} blocks used by a file of {size_blocks}: nothing preallocated"
    );
    fs.release(f.ino).unwrap();
    assert_eq!(used(fs) - before, size_blocks, "the tail was given back");
    assert_eq!(
        fs.read(f.ino, 12 * piece.len() as u64, piece.len())
            .unwrap(),
        piece
    );
    // A reservation past the end is the caller's.
    fs.open(f.ino).unwrap();
    fs.fallocate(
        f.ino,
        scoutfs_core::mount::fs::data::FALLOC_FL_KEEP_SIZE,
        13 * piece.len() as u64,
        1 << 20,
    )
    .unwrap();
    fs.release(f.ino).unwrap();
    assert_eq!(
        used(fs) - before,
        size_blocks + 256,
        "the reservation stays"
    );
    mnt.unmount().unwrap();
    assert_clean(&meta, &data);
}
