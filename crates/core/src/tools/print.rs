//! `scoutfs print`: a readable dump of a metadata device — the super block,
//! the quorum blocks, every btree with its blocks and items, the free-extent
//! trees and the alloc lists.
//!
//! It reads through the same verifying block cache as everything else; a
//! block that fails verification is printed as the error and its subtree is
//! skipped, so print works on a damaged device too.

use crate::error::Result;
use crate::progress::Progress;
use crate::store::alloc::list::walk_list;
use crate::store::block::{read_sm, BlockCache};
use crate::store::btree::block as bblock;
use crate::store::commit::read_super;
use crate::store::dev::BlockDev;
use scoutfs_format::consts::*;
use scoutfs_format::key::{ty, zone};
use scoutfs_format::log_trees::LogTrees;
use scoutfs_format::quorum::{quorum_event_name, QuorumBlock, QUORUM_EVENT_NR};
use scoutfs_format::{AllocListHead, AllocRoot, BlockRef, BtreeRoot, Key, SuperBlock, Timespec};
use std::io::Write;
use std::sync::Arc;

/// Prints everything on the metadata device to `out`.
pub fn print(
    meta: &Arc<dyn BlockDev>,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> Result<()> {
    let sb = read_super(meta.as_ref(), true)?;
    let cache = BlockCache::new(meta.clone(), sb.hdr.fsid.get(), 64);
    let mut p = Printer {
        cache,
        out,
        progress,
    };
    p.go(&sb, meta.as_ref())
        .map_err(|e| crate::error::Error::io("writing output", e))
}

struct Printer<'a> {
    cache: BlockCache,
    out: &'a mut dyn Write,
    progress: &'a mut dyn Progress,
}

fn ts(t: &Timespec) -> String {
    format!("{}.{:09}", t.signed_sec(), t.nsec.get())
}

fn rf(r: &BlockRef) -> String {
    format!("{{blkno {} seq {:#018x}}}", r.blkno.get(), r.seq.get())
}

fn root_str(r: &BtreeRoot) -> String {
    format!("{{ref {} height {}}}", rf(&r.blk), r.height)
}

fn list_str(h: &AllocListHead) -> String {
    format!(
        "{{ref {} total_nr {} first_nr {} flags {:#x}}}",
        rf(&h.first),
        h.total_nr.get(),
        h.first_nr.get(),
        h.flags.get()
    )
}

fn alloc_str(a: &AllocRoot) -> String {
    format!(
        "{{total_len {} flags {:#x} root {}}}",
        a.total_len.get(),
        a.flags.get(),
        root_str(&a.root)
    )
}

/// A readable form of an item's value, by what its key says it is.
pub fn value_str(k: &Key, v: &[u8]) -> String {
    let bad = |e: scoutfs_format::DecodeError| format!("<invalid: {e}>");
    match (k.zone, k.ty) {
        (zone::FS, ty::INODE) => match scoutfs_format::inode::Inode::decode(v) {
            Ok(i) => format!(
                "inode size {} nlink {} mode {:o} uid {} gid {} rdev {} flags {:#x} meta_seq {} data_seq {} \
                 data_version {} online {} offline {} next_readdir_pos {} next_xattr_id {} version {} \
                 atime {} ctime {} mtime {} crtime {} proj {}",
                i.size.get(), i.nlink.get(), i.mode.get(), i.uid.get(), i.gid.get(), i.rdev.get(),
                i.flags.get(), i.meta_seq.get(), i.data_seq.get(), i.data_version.get(),
                i.online_blocks.get(), i.offline_blocks.get(), i.next_readdir_pos.get(),
                i.next_xattr_id.get(), i.version.get(), ts(&i.atime), ts(&i.ctime), ts(&i.mtime),
                ts(&i.crtime), i.proj.get()
            ),
            Err(e) => bad(e),
        },
        (zone::FS, ty::DIRENT | ty::READDIR | ty::LINK_BACKREF) => match scoutfs_format::dir::decode_dirent(v) {
            Ok((h, name)) => format!(
                "dirent ino {} hash {:#018x} pos {} type {} name {:?}",
                h.ino.get(), h.hash.get(), h.pos.get(), h.ty, String::from_utf8_lossy(name)
            ),
            Err(e) => bad(e),
        },
        (zone::FS, ty::DATA_EXTENT) => match scoutfs_format::data::DataExtentVal::decode(v) {
            Ok(x) => format!("extent blkno {} flags {:#x}", x.blkno.get(), x.flags),
            Err(e) => bad(e),
        },
        (zone::LOG_TREES | zone::LOG_MERGE_FREEING, _) => match LogTrees::decode(v) {
            Ok(lt) => format!(
                "log_trees rid {:#x} nr {} flags {:#x} item_root {} bloom {} meta_avail {} meta_freed {} \
                 data_avail {} data_freed {} get_trans_seq {} commit_trans_seq {} max_item_seq {} finalize_seq {}",
                lt.rid.get(), lt.nr.get(), lt.flags.get(), root_str(&lt.item_root), rf(&lt.bloom_ref),
                list_str(&lt.meta_avail), list_str(&lt.meta_freed), alloc_str(&lt.data_avail),
                alloc_str(&lt.data_freed), lt.get_trans_seq.get(), lt.commit_trans_seq.get(),
                lt.max_item_seq.get(), lt.finalize_seq.get()
            ),
            Err(e) => bad(e),
        },
        _ if v.is_empty() => String::new(),
        _ => {
            let hex: String = v.iter().take(32).map(|b| format!("{b:02x}")).collect();
            format!("{} bytes {hex}{}", v.len(), if v.len() > 32 { "..." } else { "" })
        }
    }
}

impl Printer<'_> {
    fn go(&mut self, sb: &SuperBlock, meta: &dyn BlockDev) -> std::io::Result<()> {
        self.super_block(sb)?;
        self.quorum(meta, sb.hdr.fsid.get())?;
        self.progress.begin("printing metadata", 0);
        for (name, r) in crate::store::commit::super_roots(sb) {
            self.tree(name, r)?;
        }
        // Each mount's log tree items, which are not yet in fs_root.
        let logs = crate::store::forest::log_roots(&self.cache, &sb.logs_root);
        match logs {
            Ok(lts) => {
                for lt in lts {
                    let name = format!("log tree {:#x}.{} items", lt.rid.get(), lt.nr.get());
                    self.tree(&name, &lt.item_root)?;
                }
            }
            Err(e) => writeln!(self.out, "log trees: {e}")?,
        }
        for (i, a) in sb.meta_alloc.iter().enumerate() {
            self.tree(&format!("meta_alloc[{i}] {}", alloc_str(a)), &a.root)?;
        }
        self.tree(
            &format!("data_alloc {}", alloc_str(&sb.data_alloc)),
            &sb.data_alloc.root,
        )?;
        for (i, h) in sb.server_meta_avail.iter().enumerate() {
            self.list(&format!("server_meta_avail[{i}]"), h)?;
        }
        for (i, h) in sb.server_meta_freed.iter().enumerate() {
            self.list(&format!("server_meta_freed[{i}]"), h)?;
        }
        self.progress.finish();
        Ok(())
    }

    fn super_block(&mut self, sb: &SuperBlock) -> std::io::Result<()> {
        let o = &mut self.out;
        writeln!(
            o,
            "super block: blkno {} seq {} fsid {:#018x}",
            sb.hdr.blkno.get(),
            sb.hdr.seq.get(),
            sb.hdr.fsid.get()
        )?;
        let uuid: String = sb.uuid.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(
            o,
            "  fmt_vers {} flags {:#x} uuid {uuid}",
            sb.fmt_vers.get(),
            sb.flags.get()
        )?;
        writeln!(
            o,
            "  seq {} next_ino {} inode_count {}",
            sb.seq.get(),
            sb.next_ino.get(),
            sb.inode_count.get()
        )?;
        writeln!(
            o,
            "  total_meta_blocks {} (64 KiB) total_data_blocks {} (4 KiB)",
            sb.total_meta_blocks.get(),
            sb.total_data_blocks.get()
        )?;
        writeln!(o, "  quorum config version {}", sb.qconf.version.get())?;
        for (i, a) in sb.quorum_slots() {
            writeln!(o, "    slot {i}: {a}")?;
        }
        for (i, a) in sb.meta_alloc.iter().enumerate() {
            writeln!(o, "  meta_alloc[{i}] {}", alloc_str(a))?;
        }
        writeln!(o, "  data_alloc {}", alloc_str(&sb.data_alloc))?;
        for i in 0..2 {
            writeln!(
                o,
                "  server_meta_avail[{i}] {}",
                list_str(&sb.server_meta_avail[i])
            )?;
            writeln!(
                o,
                "  server_meta_freed[{i}] {}",
                list_str(&sb.server_meta_freed[i])
            )?;
        }
        for (name, r) in crate::store::commit::super_roots(sb) {
            writeln!(o, "  {name} {}", root_str(r))?;
        }
        writeln!(
            o,
            "  volume options set_bits {:#x} data_alloc_zone_blocks {}",
            sb.volopt.set_bits.get(),
            sb.volopt.data_alloc_zone_blocks.get()
        )?;
        // Never the key itself: print output gets pasted into reports.
        let key = match sb.has_cluster_key() {
            true => "set (cluster traffic is authenticated)",
            false => "none (format version 1: cluster traffic is not authenticated)",
        };
        writeln!(o, "  cluster key {key}")
    }

    fn quorum(&mut self, meta: &dyn BlockDev, fsid: u64) -> std::io::Result<()> {
        writeln!(self.out, "quorum blocks:")?;
        for slot in 0..QUORUM_MAX_SLOTS as u64 {
            let blkno = QUORUM_BLKNO + slot;
            let qb = read_sm(meta, blkno, magic::QUORUM, Some(fsid)).and_then(|b| {
                QuorumBlock::decode(&b).map_err(|e| {
                    crate::error::Error::corrupt(
                        crate::error::CorruptKind::BlockInvalid,
                        blkno,
                        0,
                        e.to_string(),
                    )
                })
            });
            match qb {
                Err(e) => writeln!(self.out, "  slot {slot}: {e}")?,
                Ok(q) => {
                    write!(self.out, "  slot {slot}: write_nr {}", q.write_nr.get())?;
                    for (i, ev) in q.events.iter().enumerate().take(QUORUM_EVENT_NR) {
                        if ev.write_nr.get() != 0 {
                            let name = quorum_event_name(i);
                            write!(
                                self.out,
                                " {name} {{rid {:#x} term {} at {}}}",
                                ev.rid.get(),
                                ev.term.get(),
                                ts(&ev.ts)
                            )?;
                        }
                    }
                    writeln!(self.out)?;
                }
            }
        }
        Ok(())
    }

    fn tree(&mut self, name: &str, root: &BtreeRoot) -> std::io::Result<()> {
        writeln!(self.out, "{name} btree {}:", root_str(root))?;
        if root.height == 0 {
            return Ok(());
        }
        // Each block must sit one level below its parent, so even a damaged
        // tree whose references loop is walked to an end.
        let mut stack = vec![(root.blk, 0usize, root.height - 1)];
        while let Some((r, depth, want)) = stack.pop() {
            self.progress.advance(1);
            let pad = "  ".repeat(depth + 1);
            let b = match self.cache.read(&r, magic::BTREE) {
                Ok(b) => b,
                Err(e) => {
                    writeln!(self.out, "{pad}block {}: {e}", rf(&r))?;
                    continue;
                }
            };
            let b = b.bytes();
            let (n, lvl) = (bblock::nr(b), bblock::level(b));
            if lvl != want {
                writeln!(
                    self.out,
                    "{pad}block {}: at level {lvl}, expected {want}",
                    rf(&r)
                )?;
                continue;
            }
            writeln!(
                self.out,
                "{pad}block {} level {lvl} items {n} item_bytes {}",
                rf(&r),
                bblock::total(b)
            )?;
            for i in 0..n {
                let it = bblock::owned(b, i);
                if lvl > 0 {
                    writeln!(
                        self.out,
                        "{pad}  child {} <= {}",
                        rf(&bblock::child_ref(b, i)),
                        it.key
                    )?;
                } else {
                    let v = value_str(&it.key, &it.val);
                    writeln!(
                        self.out,
                        "{pad}  {} seq {} flags {:#x} {v}",
                        it.key, it.seq, it.flags
                    )?;
                }
            }
            if lvl > 0 {
                for i in (0..n).rev() {
                    stack.push((bblock::child_ref(b, i), depth + 1, lvl - 1));
                }
            }
        }
        Ok(())
    }

    fn list(&mut self, name: &str, h: &AllocListHead) -> std::io::Result<()> {
        writeln!(self.out, "{name} alloc list {}:", list_str(h))?;
        let cache = &self.cache;
        match walk_list(h, |r| {
            Ok(Box::from(cache.read(r, magic::ALLOC_LIST)?.bytes()))
        }) {
            Err(e) => writeln!(self.out, "  {e}"),
            Ok((entries, blocks)) => {
                let refs: Vec<String> = blocks.iter().map(rf).collect();
                writeln!(self.out, "  blocks {}", refs.join(" "))?;
                let mut sorted = entries;
                sorted.sort_unstable();
                writeln!(self.out, "  entries {}", ranges(&sorted))
            }
        }
    }
}

/// "a-b c e-f" for a sorted list of numbers.
fn ranges(sorted: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    out.join(" ")
}
