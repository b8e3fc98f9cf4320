//! What archive agents use, on in-process mounts: the extended attributes
//! of inodes and their rules (restore of a new file, retention, project
//! ids), and walking the meta_seq/data_seq index on a three-mount cluster
//! across more changes, a server failover and a remount.

mod common;

use scoutfs_core::mount::fs::archive::*;
use scoutfs_core::mount::fs::types::{NewNode, SetAttr};
use scoutfs_core::mount::fs::{Fs, FsError, EINVAL, EPERM};
use scoutfs_core::mount::{Mount, MountOptions, MountRole};
use scoutfs_core::store::dev::MemDev;
use scoutfs_format::{Timespec, ROOT_INO};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const REG: u32 = libc::S_IFREG | 0o644;
const DIR: u32 = libc::S_IFDIR | 0o755;
const MB: u64 = 1 << 20;

const ROOT: Caller = Caller {
    uid: 0,
    admin: true,
};

fn user(uid: u32) -> Caller {
    Caller { uid, admin: false }
}

fn create(fs: &Fs, dir: u64, name: &str) -> u64 {
    fs.mknod(dir, name.as_bytes(), &NewNode::new(REG))
        .unwrap()
        .ino
}

fn set(fs: &Fs, ino: u64, x: AttrX, who: Caller) -> Result<(), FsError> {
    fs.set_attr_x(ino, &x, who).map(|_| ())
}

#[test]
fn attr_x_reports_the_inode_and_restores_a_new_file() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xa1);
    let mnt = common::mount(&meta, &data);
    let fs = mnt.fs();
    let f = create(fs, ROOT_INO, "f");
    fs.write(f, 0, &[7u8; 10_000]).unwrap();
    let x = fs.get_attr_x(f).unwrap();
    assert_eq!(x.mask, AX_ALL);
    assert_eq!((x.size, x.data_version, x.online_blocks), (10_000, 1, 3));
    assert_eq!(x.offline_blocks, 0);
    assert!(x.data_seq > 0 && x.meta_seq >= x.data_seq);

    // A file with data cannot be restored.
    let restore = AttrX {
        mask: AX_DATA_VERSION | AX_SIZE,
        flags: AX_F_SIZE_OFFLINE,
        data_version: 5,
        size: 10_000,
        ..AttrX::default()
    };
    assert_eq!(set(fs, f, restore, ROOT), Err(EINVAL));

    // A new empty file is, with its times as given.
    let r = create(fs, ROOT_INO, "restored");
    let before = fs.get_attr_x(r).unwrap();
    fs.sync().unwrap();
    let ctime = Timespec::new(1_600_000_000, 123);
    let crtime = Timespec::new(1_500_000_000, 456);
    let full = AttrX {
        mask: restore.mask | AX_CTIME | AX_CRTIME,
        ctime,
        crtime,
        ..restore
    };
    set(fs, r, full, ROOT).unwrap();
    let x = fs.get_attr_x(r).unwrap();
    assert_eq!((x.size, x.data_version), (10_000, 5));
    assert_eq!((x.online_blocks, x.offline_blocks), (0, 3));
    assert_eq!((x.ctime, x.crtime), (ctime, crtime));
    assert!(
        x.data_seq > before.data_seq,
        "a restore is a change of data"
    );
    assert_eq!(fs.getattr(r).unwrap().size(), 10_000);
    // Restored once, it has data (offline): not again.
    assert_eq!(set(fs, r, full, ROOT), Err(EINVAL));

    // Refusals: a zero data version, a size without one, the offline
    // flag without a size, fields that are the filesystem's, unknown bits.
    let e = create(fs, ROOT_INO, "empty");
    let bad = [
        AttrX {
            mask: AX_DATA_VERSION,
            ..AttrX::default()
        },
        AttrX {
            mask: AX_SIZE,
            size: 1,
            ..AttrX::default()
        },
        AttrX {
            mask: AX_DATA_VERSION,
            data_version: 1,
            flags: AX_F_SIZE_OFFLINE,
            ..AttrX::default()
        },
        AttrX {
            mask: AX_META_SEQ,
            ..AttrX::default()
        },
        AttrX {
            mask: AX_ONLINE_BLOCKS,
            ..AttrX::default()
        },
        AttrX {
            mask: 1 << 10,
            ..AttrX::default()
        },
        AttrX {
            mask: AX_CTIME,
            ctime: Timespec::new(1, 1_000_000_000),
            ..AttrX::default()
        },
    ];
    for (i, x) in bad.iter().enumerate() {
        assert_eq!(set(fs, e, *x, ROOT), Err(EINVAL), "refusal {i}");
    }
    // A directory has no data to restore.
    let d = fs.mknod(ROOT_INO, b"d", &NewNode::new(DIR)).unwrap().ino;
    let dv = AttrX {
        mask: AX_DATA_VERSION,
        data_version: 3,
        ..AttrX::default()
    };
    assert_eq!(set(fs, d, dv, ROOT), Err(EINVAL));

    // The owner may restore its own file; another user may not.
    let owned = fs
        .mknod(ROOT_INO, b"owned", &NewNode::new(REG).owner(1000, 1000))
        .unwrap()
        .ino;
    assert_eq!(set(fs, owned, dv, user(1001)), Err(EPERM));
    set(fs, owned, dv, user(1000)).unwrap();
    assert_eq!(fs.get_attr_x(owned).unwrap().data_version, 3);
    drop(mnt);
    common::assert_clean(&meta, &data);
}

#[test]
fn retention_refuses_every_change_until_an_administrator_clears_it() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xa2);
    let mnt = common::mount(&meta, &data);
    let fs = mnt.fs();
    let d = fs.mknod(ROOT_INO, b"d", &NewNode::new(DIR)).unwrap().ino;
    let f = fs
        .mknod(d, b"f", &NewNode::new(REG).owner(1000, 1000))
        .unwrap()
        .ino;
    fs.write(f, 0, b"kept").unwrap();
    let on = AttrX {
        mask: AX_RETENTION,
        bits: AX_B_RETENTION,
        ..AttrX::default()
    };
    // Administrators only, regular files only.
    assert_eq!(set(fs, f, on, user(1000)), Err(EPERM));
    assert_eq!(set(fs, d, on, ROOT), Err(EINVAL));
    set(fs, f, on, ROOT).unwrap();
    assert_eq!(fs.get_attr_x(f).unwrap().bits, AX_B_RETENTION);

    let eperm = |what: &str, r: Result<(), FsError>| assert_eq!(r, Err(EPERM), "{what}");
    eperm("write", fs.write(f, 0, b"x").map(|_| ()));
    eperm("truncate", fs.truncate(f, 0).map(|_| ()));
    eperm("fallocate", fs.fallocate(f, 0, 0, 4096));
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    eperm("chmod", fs.setattr(f, &chmod).map(|_| ()));
    let trunc = SetAttr {
        size: Some(1),
        ..SetAttr::default()
    };
    eperm("setattr size", fs.setattr(f, &trunc).map(|_| ()));
    eperm("unlink", fs.unlink(d, b"f"));
    eperm("rename", fs.rename(d, b"f", d, b"g", 0));
    let other = create(fs, d, "other");
    eperm("rename over", fs.rename(d, b"other", d, b"f", 0));
    eperm("link", fs.link(f, d, b"f2").map(|_| ()));
    eperm("user xattr", fs.setxattr(f, b"user.a", b"1", 0));
    eperm("open for write", fs.open_for(f, true).map(|_| ()));
    // A change of another attribute while retention stays set.
    let pid = AttrX {
        mask: AX_PROJECT_ID,
        project_id: 9,
        ..AttrX::default()
    };
    eperm("set attr x", set(fs, f, pid, ROOT));
    // What stays allowed: reading, xattrs outside user., opening to read.
    assert_eq!(fs.read(f, 0, 10).unwrap(), b"kept");
    fs.setxattr(f, b"trusted.archive", b"tape 7", 0).unwrap();
    fs.open_for(f, false).unwrap();
    fs.release(f).unwrap();
    assert_eq!(fs.lookup(d, b"f").unwrap().ino, f);
    assert_eq!(fs.lookup(d, b"other").unwrap().ino, other);

    // Clearing it may change other attributes in the same call.
    let off = AttrX {
        mask: AX_RETENTION | AX_PROJECT_ID,
        bits: 0,
        project_id: 9,
        ..AttrX::default()
    };
    assert_eq!(set(fs, f, off, user(1000)), Err(EPERM), "not by the owner");
    set(fs, f, off, ROOT).unwrap();
    let x = fs.get_attr_x(f).unwrap();
    assert_eq!((x.bits, x.project_id), (0, 9));
    fs.write(f, 0, b"free").unwrap();
    fs.unlink(d, b"f").unwrap();
    fs.evict(f).unwrap();
    drop(mnt);
    common::assert_clean(&meta, &data);
}

#[test]
fn a_project_id_is_inherited_at_creation_and_kept_across_renames() {
    let (meta, data) = common::mem_fs(64 * MB, 64 * MB, 0xa3);
    let mnt = common::mount(&meta, &data);
    let fs = mnt.fs();
    let p = fs.mknod(ROOT_INO, b"p", &NewNode::new(DIR)).unwrap().ino;
    let q = fs.mknod(ROOT_INO, b"q", &NewNode::new(DIR)).unwrap().ino;
    let pid = AttrX {
        mask: AX_PROJECT_ID,
        project_id: 77,
        ..AttrX::default()
    };
    assert_eq!(set(fs, p, pid, user(0x1234)), Err(EPERM));
    set(fs, p, pid, ROOT).unwrap();
    let f = create(fs, p, "f");
    let sub = fs.mknod(p, b"sub", &NewNode::new(DIR)).unwrap().ino;
    let g = create(fs, sub, "g");
    let l = fs.mknod(p, b"l", &NewNode::symlink(b"f")).unwrap().ino;
    for ino in [f, sub, g, l] {
        assert_eq!(fs.get_attr_x(ino).unwrap().project_id, 77, "inode {ino}");
    }
    assert_eq!(fs.get_attr_x(create(fs, q, "h")).unwrap().project_id, 0);
    fs.rename(p, b"f", q, b"f", 0).unwrap();
    assert_eq!(fs.get_attr_x(f).unwrap().project_id, 77);
    drop(mnt);
    common::assert_clean(&meta, &data);
}

fn make_fs(slots: u8) -> (MemDev, MemDev) {
    common::quorum_fs(slots, 0x5741_4c4b)
}

fn member(meta: &MemDev, data: &MemDev, slot: u8) -> Mount {
    let opts = MountOptions {
        role: MountRole::Quorum { slot },
        merge_interval_ms: 300,
        commit_interval_ms: 500,
        heartbeat_timeout_ms: 2_000,
        ..Default::default()
    };
    common::mount_with(meta, data, &opts)
}

/// Every entry of an index from `from` on, walked in small batches (as an
/// agent resumes), checked to come in (seq, ino) order and no further
/// than the clamp.
fn walk_all(fs: &Fs, index: SeqIndex, from: WalkEntry) -> (Vec<WalkEntry>, u64) {
    let last = WalkEntry {
        seq: u64::MAX,
        ino: u64::MAX,
    };
    let mut out: Vec<WalkEntry> = Vec::new();
    let mut pos = from;
    let mut clamp = None;
    loop {
        let w = fs.walk_inodes(index, pos, last, 7).unwrap();
        clamp.get_or_insert(w.last_seq);
        for e in &w.entries {
            assert!(e.seq <= w.last_seq, "{e:?} past the clamp {}", w.last_seq);
            assert!(*e >= pos, "{e:?} before the position {pos:?}");
            if let Some(p) = out.last() {
                assert!(e > p, "{e:?} after {p:?}: out of order");
            }
        }
        out.extend(&w.entries);
        match w.next {
            Some(n) => pos = n,
            None => return (out, clamp.unwrap()),
        }
    }
}

/// Changes files on every mount; returns each changed file's ino.
fn change(fss: &[Arc<Fs>], dirs: &[u64], round: usize) -> BTreeSet<u64> {
    let mut changed = BTreeSet::new();
    for (i, fs) in fss.iter().enumerate() {
        for j in 0..12 {
            let name = format!("r{round}m{i}f{j}");
            let ino = create(fs, dirs[i], &name);
            fs.write(ino, 0, name.as_bytes()).unwrap();
            changed.insert(ino);
        }
    }
    changed
}

#[test]
fn walks_see_every_change_in_seq_order_across_mounts_failover_and_remount() {
    let (meta, data) = make_fs(3);
    let mut mounts: Vec<Option<Mount>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3u8)
            .map(|slot| {
                let (meta, data) = (&meta, &data);
                s.spawn(move || member(meta, data, slot))
            })
            .collect();
        hs.into_iter().map(|h| Some(h.join().unwrap())).collect()
    });
    let fss: Vec<Arc<Fs>> = mounts
        .iter()
        .map(|m| m.as_ref().unwrap().fs().clone())
        .collect();
    let dirs: Vec<u64> = (0..3)
        .map(|i| {
            fss[i]
                .mknod(ROOT_INO, format!("d{i}").as_bytes(), &NewNode::new(DIR))
                .unwrap()
                .ino
        })
        .collect();
    let start = WalkEntry { seq: 0, ino: 0 };

    // Round 1: every change on every mount is in both indexes, walked from
    // any mount; directories only in meta_seq.
    let c1 = change(&fss, &dirs, 1);
    let (meta1, clamp1) = walk_all(&fss[2], SeqIndex::MetaSeq, start);
    let (data1, _) = walk_all(&fss[1], SeqIndex::DataSeq, start);
    let m1: BTreeMap<u64, u64> = meta1.iter().map(|e| (e.ino, e.seq)).collect();
    let d1: BTreeSet<u64> = data1.iter().map(|e| e.ino).collect();
    assert_eq!(m1.len(), meta1.len(), "an inode twice in meta_seq");
    for ino in &c1 {
        assert!(m1.contains_key(ino) && d1.contains(ino), "inode {ino}");
        let x = fss[0].get_attr_x(*ino).unwrap();
        assert_eq!(m1[ino], x.meta_seq, "inode {ino} indexed at its meta_seq");
    }
    for d in dirs.iter().chain([&ROOT_INO]) {
        assert!(m1.contains_key(d), "directory {d} in meta_seq");
        assert!(!d1.contains(d), "directory {d} in data_seq");
    }
    // Unlinked and freed: gone from both.
    let gone = *c1.iter().next().unwrap();
    let owner = (0..3)
        .find(|&i| {
            fss[i]
                .lookup(dirs[i], b"r1m0f0")
                .is_ok_and(|a| a.ino == gone)
        })
        .unwrap();
    fss[owner].unlink(dirs[owner], b"r1m0f0").unwrap();
    fss[owner].evict(gone).unwrap();

    // The agent saves where it got to and walks again after more changes
    // (one of them to a file seen already).
    let saved = WalkEntry {
        seq: clamp1 + 1,
        ino: 0,
    };
    let mut c2 = change(&fss, &dirs, 2);
    let again = *c1.iter().nth(5).unwrap();
    fss[1].write(again, 0, b"changed again").unwrap();
    c2.insert(again);
    let (data2, clamp2) = walk_all(&fss[0], SeqIndex::DataSeq, saved);
    assert!(clamp2 >= clamp1, "the clamp went back");
    let d2: BTreeSet<u64> = data2.iter().map(|e| e.ino).collect();
    for ino in &c2 {
        assert!(d2.contains(ino), "changed inode {ino} not walked");
    }
    assert!(!d2.contains(&gone));
    let (all, _) = walk_all(&fss[0], SeqIndex::MetaSeq, start);
    assert!(all.iter().all(|e| e.ino != gone), "an unlinked inode stays");

    // The server's member leaves; the others change more and walk on.
    let server = scoutfs_core::cluster::quorum::driver::find_server(&meta)
        .unwrap()
        .expect("a server")
        .rid
        .0;
    let si = mounts
        .iter()
        .position(|m| m.as_ref().is_some_and(|m| m.rid() == server))
        .unwrap();
    let saved = WalkEntry {
        seq: clamp2 + 1,
        ino: 0,
    };
    mounts[si].take().unwrap().unmount().unwrap();
    let rest: Vec<usize> = (0..3).filter(|&i| i != si).collect();
    let live: Vec<Arc<Fs>> = rest.iter().map(|&i| fss[i].clone()).collect();
    let live_dirs: Vec<u64> = rest.iter().map(|&i| dirs[i]).collect();
    let c3 = change(&live, &live_dirs, 3);
    let (data3, clamp3) = walk_all(&live[0], SeqIndex::DataSeq, saved);
    assert!(clamp3 >= clamp2, "the clamp went back across the failover");
    let d3: BTreeSet<u64> = data3.iter().map(|e| e.ino).collect();
    for ino in &c3 {
        assert!(
            d3.contains(ino),
            "changed inode {ino} not walked after failover"
        );
    }

    // The member mounts again and changes more; walked from the saved
    // position, nothing is missed and nothing is below it.
    let saved = WalkEntry {
        seq: clamp3 + 1,
        ino: 0,
    };
    mounts[si] = Some(member(&meta, &data, si as u8));
    let back = mounts[si].as_ref().unwrap().fs().clone();
    let mut c4 = BTreeSet::new();
    for j in 0..10 {
        let ino = create(&back, dirs[si], &format!("r4f{j}"));
        back.write(ino, 0, b"back").unwrap();
        c4.insert(ino);
    }
    let (data4, clamp4) = walk_all(&live[1], SeqIndex::DataSeq, saved);
    assert!(clamp4 >= clamp3);
    let d4: BTreeSet<u64> = data4.iter().map(|e| e.ino).collect();
    for ino in &c4 {
        assert!(
            d4.contains(ino),
            "inode {ino} of the remounted member not walked"
        );
    }
    drop((fss, live, back));
    std::thread::scope(|s| {
        for m in mounts.into_iter().flatten() {
            s.spawn(move || m.unmount().unwrap());
        }
    });
    common::assert_clean(&meta, &data);
}
