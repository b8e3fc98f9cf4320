//! `scoutfs df`: space of a filesystem by device, as the server counts it.
//!
//! [`read_df`] reads the metadata device's super block, its log trees (for
//! the space each mount holds in its allocators) and `mounted_clients` (the
//! reserve grows with the mounts), and returns a [`Df`]. It writes nothing.
//! The numbers are those of the server's last commit, the same the
//! mounts' `statfs` answers; a stale block read while the server commits
//! makes it read again from a newer super block.
//!
//! Metadata rows count 64 KiB blocks and data rows 4 KiB blocks. Free is
//! what operations that allocate can still have: the metadata reserve
//! ([`crate::cluster::server::meta_reserve`]), kept for operations that
//! free space, is shown on its own and is neither used nor free.

use crate::cluster::net::msg::StatfsInfo;
use crate::cluster::server::{mounted_client_key, space};
use crate::error::Result;
use crate::store::btree;
use crate::store::commit::read_super;
use crate::store::dev::BlockDev;
use crate::store::forest::retry_while_stale;
use scoutfs_format::consts::{BLOCK_LG_SIZE, BLOCK_SM_SIZE};
use std::sync::Arc;

/// One device's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfRow {
    /// Bytes per block.
    pub block_size: u64,
    pub total: u64,
    pub used: u64,
    /// Kept for operations that free space (metadata only).
    pub reserved: u64,
    /// What allocating operations can still have.
    pub free: u64,
}

impl DfRow {
    /// Used blocks as a percentage of the total, rounded up (a filesystem
    /// with anything used is never 0% used).
    pub fn use_pct(&self) -> u64 {
        if self.total == 0 {
            return 0;
        }
        (self.used * 100).div_ceil(self.total)
    }
}

/// Space of a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Df {
    pub meta: DfRow,
    pub data: DfRow,
    /// Inodes in use.
    pub inodes: u64,
    /// Mounts recorded (the reserve is kept for each).
    pub mounts: u64,
}

impl Df {
    /// The rows of a statfs answer.
    pub fn from_statfs(s: &StatfsInfo, mounts: u64) -> Df {
        let reserved = s.reserved_meta_blocks.min(s.free_meta_blocks);
        Df {
            meta: DfRow {
                block_size: BLOCK_LG_SIZE as u64,
                total: s.total_meta_blocks,
                used: s.total_meta_blocks.saturating_sub(s.free_meta_blocks),
                reserved,
                free: s.free_meta_blocks - reserved,
            },
            data: DfRow {
                block_size: BLOCK_SM_SIZE as u64,
                total: s.total_data_blocks,
                used: s.total_data_blocks.saturating_sub(s.free_data_blocks),
                reserved: 0,
                free: s.free_data_blocks,
            },
            inodes: s.inode_count,
            mounts,
        }
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        let row = |r: &DfRow| {
            format!(
                "{{\"block_size\":{},\"total\":{},\"used\":{},\"reserved\":{},\"free\":{},\"use_pct\":{}}}",
                r.block_size,
                r.total,
                r.used,
                r.reserved,
                r.free,
                r.use_pct()
            )
        };
        format!(
            "{{\"meta\":{},\"data\":{},\"inodes\":{},\"mounts\":{}}}",
            row(&self.meta),
            row(&self.data),
            self.inodes,
            self.mounts
        )
    }

    /// The table, with counts of blocks, or with sizes made by `human`
    /// from bytes when it is given (`-h`).
    pub fn table(&self, human: Option<&dyn Fn(u64) -> String>) -> String {
        let cell = |blocks: u64, bs: u64| match human {
            Some(h) => h(blocks * bs),
            None => blocks.to_string(),
        };
        let rows = [("MetaData", &self.meta), ("Data", &self.data)];
        let mut lines = vec![[
            "Type".to_string(),
            "Size".into(),
            "Total".into(),
            "Used".into(),
            "Reserved".into(),
            "Free".into(),
            "Use%".into(),
        ]];
        for (name, r) in rows {
            lines.push([
                name.to_string(),
                format!("{}K", r.block_size / 1024),
                cell(r.total, r.block_size),
                cell(r.used, r.block_size),
                cell(r.reserved, r.block_size),
                cell(r.free, r.block_size),
                format!("{}%", r.use_pct()),
            ]);
        }
        let mut width = [0usize; 7];
        for l in &lines {
            for (w, c) in width.iter_mut().zip(l) {
                *w = (*w).max(c.len());
            }
        }
        let mut out = String::new();
        for l in &lines {
            let cells: Vec<String> = l
                .iter()
                .zip(width)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// Reads the space of the filesystem on a metadata device.
pub fn read_df(meta: &Arc<dyn BlockDev>) -> Result<Df> {
    retry_while_stale(|| read_once(meta))
}

fn read_once(meta: &Arc<dyn BlockDev>) -> Result<Df> {
    let sb = read_super(meta.as_ref(), true)?;
    let cache = crate::store::block::BlockCache::new(meta.clone(), sb.hdr.fsid.get(), 64);
    let mut mounts = 0u64;
    btree::for_each_range(
        &cache,
        &sb.mounted_clients,
        &mounted_client_key(0),
        &mounted_client_key(u64::MAX),
        |_| {
            mounts += 1;
            Ok(true)
        },
    )?;
    let s = space(&cache, &sb, mounts as usize)?;
    Ok(Df::from_statfs(&s, mounts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_free_from_the_reserve_and_round_use_up() {
        let s = StatfsInfo {
            total_meta_blocks: 1000,
            free_meta_blocks: 900,
            reserved_meta_blocks: 200,
            total_data_blocks: 3000,
            free_data_blocks: 2999,
            inode_count: 5,
            fsid: 1,
        };
        let d = Df::from_statfs(&s, 1);
        assert_eq!((d.meta.used, d.meta.reserved, d.meta.free), (100, 200, 700));
        assert_eq!((d.data.used, d.data.free, d.data.use_pct()), (1, 2999, 1));
        let t = d.table(None);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("MetaData") && lines[1].ends_with("10%"),
            "{t}"
        );
        assert!(d.to_json().contains("\"reserved\":200"));
        // A reserve larger than what is free is all that is free.
        let s = StatfsInfo {
            free_meta_blocks: 50,
            ..s
        };
        let d = Df::from_statfs(&s, 1);
        assert_eq!((d.meta.reserved, d.meta.free), (50, 0));
    }
}
