//! `status::read_status` over a filesystem that a mount used: while it is
//! mounted the super records the mount and its open log tree; after a clean
//! unmount the mount is gone and its committed log tree waits for the next
//! server to merge it; the next mount's server merges and drops it. And a
//! super block whose trees changed under the reader is read again.

mod common;

use common::mount;
use scoutfs_core::mount::fs::types::NewNode;

use scoutfs_core::mount::Mount;
use scoutfs_core::store::commit::{read_super, write_super};
use scoutfs_core::store::dev::{BlockDev, MemDev};
use scoutfs_core::store::forest::STALE_RETRIES_MAX;
use scoutfs_core::tools::status::{read_status, LogTreeStatus, SlotState, Status};
use scoutfs_core::Error;
use scoutfs_format::consts::{BLOCK_SM_SIZE, SUPER_OFFSET};
use scoutfs_format::ROOT_INO;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn status(meta: &MemDev) -> Status {
    let dev: Arc<dyn BlockDev> = Arc::new(meta.clone());
    let st = read_status(&dev).expect("status");
    assert!(st.problems().is_empty(), "{:?}", st.problems());
    st
}

/// Creates a file and commits, so the mount's log tree holds something.
fn write_and_sync(mnt: &Mount, name: &[u8]) {
    let fs = mnt.fs();
    let f = fs
        .mknod(ROOT_INO, name, &NewNode::new(libc::S_IFREG | 0o644))
        .unwrap();
    fs.write(f.ino, 0, b"status").unwrap();
    fs.sync().unwrap();
}

fn only_log_tree(st: &Status) -> LogTreeStatus {
    let lts = st.log_trees.as_ref().unwrap();
    assert_eq!(lts.len(), 1, "{lts:?}");
    lts[0]
}

#[test]
fn mounts_and_their_log_trees_through_mount_and_unmount() {
    let (meta, data) = common::mem_fs(128 << 20, 128 << 20, 0x57a7);
    let fresh = status(&meta);
    assert_eq!(fresh.fsid, 0x57a7);
    assert_eq!(fresh.slots.len(), 1);
    assert_eq!(fresh.slots[0].state, SlotState::NeverUsed);
    assert!(fresh.server.is_none() && fresh.to_fence.is_empty());
    assert!(fresh.mounted_clients.as_ref().unwrap().is_empty());
    assert!(fresh.log_trees.as_ref().unwrap().is_empty());
    let text = fresh.to_string();
    assert!(text.contains("quorum: 1 slot, elected by 1 vote"), "{text}");

    let mnt = mount(&meta, &data);
    write_and_sync(&mnt, b"first");
    let during = status(&meta);
    let clients = during.mounted_clients.as_ref().unwrap();
    assert_eq!(clients.len(), 1, "{clients:?}");
    let rid = clients[0].rid;
    // The server records the address the mount connected from; an Alone
    // mount is not a quorum member.
    let addr = clients[0].addr.expect("the mount's address is recorded");
    assert!(addr.ip().is_loopback(), "{addr}");
    assert!(!clients[0].quorum);
    let lt = only_log_tree(&during);
    assert_eq!((lt.rid, lt.nr, lt.finalize_seq), (rid, 1, None));
    assert!(lt.committed_seq > 0, "{lt:?}");
    assert!(during.seq > fresh.seq);
    let text = during.to_string();
    assert!(
        text.contains(&format!("rid {rid}: {addr}, not a quorum member")),
        "{text}"
    );
    assert!(text.contains("(mounted)"), "{text}");
    mnt.unmount().unwrap();

    // Unmounted: the farewell removed the mount; its log tree stays,
    // committed and finalized, until the next server merges it.
    let after = status(&meta);
    assert!(after.mounted_clients.as_ref().unwrap().is_empty());
    let left = only_log_tree(&after);
    assert_eq!((left.rid, left.nr), (rid, 1));
    let fin = left
        .finalize_seq
        .expect("the departed mount's tree is finalized");
    assert!(fin > left.committed_seq, "{left:?}");
    assert!(left.committed_seq >= lt.committed_seq);
    let text = after.to_string();
    assert!(text.contains("mounted clients: none"), "{text}");
    assert!(
        text.contains(&format!(
            "rid {rid} nr 1: committed seq {}",
            left.committed_seq
        )) && text.contains(&format!("finalized at seq {fin}")),
        "{text}"
    );
    // The transaction the mount opened after its last commit stays open.
    if let Some(seq) = left.open_seq {
        assert!(seq > left.committed_seq);
        assert!(
            text.contains(&format!("transaction of seq {seq} never committed")),
            "{text}"
        );
    }
    let json = after.to_json();
    assert!(
        json.contains(r#""mounted_clients":[],"mounted_clients_error":null"#)
            && json.contains(&format!(r#""rid":"{rid}","nr":1,"#))
            && json.contains(r#""complete":true"#),
        "{json}"
    );

    // The next mount's server merges the departed tree and drops it.
    let mnt = mount(&meta, &data);
    write_and_sync(&mnt, b"second");
    mnt.unmount().unwrap();
    let again = status(&meta);
    let lt2 = only_log_tree(&again);
    assert_ne!(lt2.rid, rid, "the first mount's tree was merged");
    assert!(again.mounted_clients.as_ref().unwrap().is_empty());
}

/// A device whose first `stale_left` reads of the super block return
/// `old_super`, as if the server committed right after each of them.
struct CommitsUnderTheReader {
    dev: MemDev,
    old_super: Vec<u8>,
    stale_left: AtomicUsize,
    super_reads: AtomicUsize,
}

impl BlockDev for CommitsUnderTheReader {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        if off == SUPER_OFFSET && buf.len() == BLOCK_SM_SIZE {
            self.super_reads.fetch_add(1, Ordering::SeqCst);
            let dec = |n: usize| n.checked_sub(1);
            if self
                .stale_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, dec)
                .is_ok()
            {
                buf.copy_from_slice(&self.old_super);
                return Ok(());
            }
        }
        self.dev.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.dev.write_at(buf, off)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.dev.flush()
    }
    fn size(&self) -> u64 {
        self.dev.size()
    }
    fn name(&self) -> &str {
        self.dev.name()
    }
}

#[test]
fn trees_that_changed_under_the_reader_are_read_again() {
    let (meta, data) = common::mem_fs(128 << 20, 128 << 20, 0x57a8);
    let mnt = mount(&meta, &data);
    write_and_sync(&mnt, b"file");
    mnt.unmount().unwrap();
    // A super whose logs_root names an older version of its block: what a
    // reader sees when the block was freed and rewritten after its super.
    let mut sb = read_super(&meta, true).unwrap();
    assert!(sb.logs_root.height > 0);
    sb.logs_root.blk.seq = (sb.logs_root.blk.seq.get() - 1).into();
    let scratch = MemDev::new_named("scratch", 128 << 20);
    let seq = sb.hdr.seq.get();
    write_super(&scratch, &mut sb, seq).unwrap();
    let mut old_super = vec![0u8; BLOCK_SM_SIZE];
    scratch.read_at(&mut old_super, SUPER_OFFSET).unwrap();

    let dev = |stale_left| {
        Arc::new(CommitsUnderTheReader {
            dev: meta.clone(),
            old_super: old_super.clone(),
            stale_left: AtomicUsize::new(stale_left),
            super_reads: AtomicUsize::new(0),
        })
    };
    let d = dev(3);
    let st = read_status(&(d.clone() as Arc<dyn BlockDev>)).unwrap();
    assert!(st.problems().is_empty(), "{:?}", st.problems());
    assert_eq!(st.log_trees.unwrap().len(), 1);
    assert_eq!(d.super_reads.load(Ordering::SeqCst), 4);
    // Retries are bounded: a reader that never sees a settled super gives up.
    let d = dev(usize::MAX);
    let res = read_status(&(d.clone() as Arc<dyn BlockDev>));
    assert!(matches!(res, Err(Error::Stale { .. })), "{res:?}");
    assert_eq!(d.super_reads.load(Ordering::SeqCst), STALE_RETRIES_MAX + 1);
}
