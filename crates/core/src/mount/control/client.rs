//! The client of a mount's control socket, for the `scoutfs` commands and
//! for archive agents that link this library.

use super::proto::{
    attr_x_from_wire, attr_x_to_wire, header, payload_prefix, recv_frame, send_frame, socket_path,
    FrameError,
};
use crate::cluster::net::msg::StatfsInfo;
use crate::error::{Error, Result};
use crate::mount::fs::archive::{AttrX, SeqIndex, WalkEntry};
use crate::mount::fs::paths::{InoPath, Referring};
use scoutfs_format::control::*;
use scoutfs_format::Timespec;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

/// A connection to one mount's control socket. Requests go one at a time.
pub struct ControlClient {
    sock: UnixStream,
    path: PathBuf,
    next_id: u64,
}

/// What STATFS_MORE answers: the mount's id, and the filesystem's ids and
/// totals as its server counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountStatfs {
    pub rid: u64,
    pub fs: StatfsInfo,
    /// Every transaction at or below this seq is complete on every mount.
    pub committed_seq: u64,
}

/// What STAT_MORE answers about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatMore {
    pub meta_seq: u64,
    pub data_seq: u64,
    pub data_version: u64,
    pub online_blocks: u64,
    pub offline_blocks: u64,
    pub crtime: Timespec,
    pub size: u64,
}

fn protocol(why: String) -> Error {
    Error::Protocol(why)
}

impl ControlClient {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<ControlClient> {
        let sock = UnixStream::connect(path)
            .map_err(|e| Error::io(format!("connecting to {}", path.display()), e))?;
        Ok(ControlClient {
            sock,
            path: path.to_path_buf(),
            next_id: 1,
        })
    }

    /// Connects to the mount that holds `path` (any file or directory in
    /// it), through the socket in `run_dir` named by the device number
    /// `stat(2)` gives.
    pub fn for_path(path: &Path, run_dir: &Path) -> Result<ControlClient> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        let sock = socket_path(run_dir, meta.dev());
        if !sock.exists() {
            return Err(Error::Config(format!(
                "{}: not in a scoutfs mount of this host (no control socket {})",
                path.display(),
                sock.display()
            )));
        }
        ControlClient::connect(&sock).map_err(|e| {
            Error::Config(format!(
                "{}: the mount's control socket does not answer (is the mount still running?): {e}",
                path.display()
            ))
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends a request and returns its answer's payload (the frames of a
    /// long answer joined). A failure the mount reports is an
    /// [`Error::Errno`] with its errno and message.
    pub fn call(&mut self, op: u16, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.call_each(op, payload, fds, |p| {
            out.extend_from_slice(p);
            Ok(())
        })?;
        Ok(out)
    }

    /// Sends a request and hands each frame of its answer to `each` as it
    /// arrives (a long listing, or a stream that ends when the mount says).
    pub fn call_each(
        &mut self,
        op: u16,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let mut hdr = header(op, id, payload.len());
        hdr.nfds = fds.len() as u8;
        let what = |what: &str| format!("{}: {what}", self.path.display());
        send_frame(&self.sock, &hdr, payload, fds).map_err(|e| Error::io(what("sending"), e))?;
        loop {
            let frame = match recv_frame(&self.sock, CONTROL_RESPONSE_MAX, false) {
                Ok(Some(f)) => f,
                Ok(None) => unreachable!("only an idle read returns no frame"),
                Err(FrameError::Closed) => {
                    return Err(Error::Disconnected(what("the mount closed the socket")))
                }
                Err(FrameError::Io(e)) => return Err(Error::io(what("receiving"), e)),
                Err(FrameError::Bad(_, why)) => return Err(Error::Protocol(what(&why))),
            };
            let h = frame.hdr;
            if h.id.get() != id || h.op.get() != op {
                return Err(Error::Protocol(what(&format!(
                    "an answer to request {} (operation {}) came for request {id} (operation {op})",
                    h.id.get(),
                    h.op.get()
                ))));
            }
            let status = h.status.get() as i32;
            if status != 0 {
                return Err(Error::Errno {
                    what: String::from_utf8_lossy(&frame.payload).into_owned(),
                    errno: status,
                });
            }
            each(&frame.payload)?;
            if h.flags.get() & CONTROL_FLAG_MORE == 0 {
                return Ok(());
            }
        }
    }

    /// The filesystem's ids and space (STATFS_MORE).
    pub fn statfs(&mut self) -> Result<MountStatfs> {
        let p = self.call(op::STATFS_MORE, &[], &[])?;
        let s: ControlStatfs =
            payload_prefix(op::STATFS_MORE, &p).map_err(|(_, why)| Error::Protocol(why))?;
        Ok(MountStatfs {
            rid: s.rid.get(),
            fs: StatfsInfo {
                fsid: s.fsid.get(),
                total_meta_blocks: s.total_meta_blocks.get(),
                free_meta_blocks: s.free_meta_blocks.get(),
                reserved_meta_blocks: s.reserved_meta_blocks.get(),
                total_data_blocks: s.total_data_blocks.get(),
                free_data_blocks: s.free_data_blocks.get(),
                inode_count: s.inode_count.get(),
            },
            committed_seq: s.committed_seq.get(),
        })
    }

    /// A file's seqs, data version, block counts and crtime; `file` is a
    /// descriptor of it, opened in any mode.
    pub fn stat_more(&mut self, file: BorrowedFd<'_>) -> Result<StatMore> {
        let p = self.call(op::STAT_MORE, &[], &[file])?;
        let s: ControlStatMore =
            payload_prefix(op::STAT_MORE, &p).map_err(|(_, why)| protocol(why))?;
        Ok(StatMore {
            meta_seq: s.meta_seq.get(),
            data_seq: s.data_seq.get(),
            data_version: s.data_version.get(),
            online_blocks: s.online_blocks.get(),
            offline_blocks: s.offline_blocks.get(),
            crtime: Timespec::new(s.crtime_sec.get(), s.crtime_nsec.get()),
            size: s.size.get(),
        })
    }

    /// Every extended attribute of a file.
    pub fn get_attr_x(&mut self, file: BorrowedFd<'_>) -> Result<AttrX> {
        let p = self.call(op::GET_ATTR_X, &[], &[file])?;
        let w: ControlAttrX =
            payload_prefix(op::GET_ATTR_X, &p).map_err(|(_, why)| protocol(why))?;
        Ok(attr_x_from_wire(&w))
    }

    /// Changes the extended attributes of `x.mask` of a file (see
    /// `Fs::set_attr_x` for the rules).
    pub fn set_attr_x(&mut self, file: BorrowedFd<'_>, x: &AttrX) -> Result<()> {
        let w = attr_x_to_wire(x);
        self.call(op::SET_ATTR_X, w.as_bytes(), &[file])?;
        Ok(())
    }

    /// Walks an inode index from `first` to `last` (both included), at
    /// most `max` entries (0: no limit), clamped to the last complete seq.
    /// `each` gets the clamp and each batch of entries as they arrive.
    pub fn walk_inodes(
        &mut self,
        index: SeqIndex,
        first: WalkEntry,
        last: WalkEntry,
        max: u32,
        mut each: impl FnMut(u64, &[WalkEntry]) -> Result<()>,
    ) -> Result<()> {
        let req = ControlWalk {
            first_seq: first.seq.into(),
            first_ino: first.ino.into(),
            last_seq: last.seq.into(),
            last_ino: last.ino.into(),
            max_entries: max.into(),
            index: match index {
                SeqIndex::MetaSeq => WALK_INDEX_META_SEQ,
                SeqIndex::DataSeq => WALK_INDEX_DATA_SEQ,
            },
            pad: [0; 3],
        };
        self.call_each(op::WALK_INODES, req.as_bytes(), &[], |p| {
            let (head, rest) = ControlWalkHead::read_from_prefix(p)
                .map_err(|_| protocol("a walk frame shorter than its head".into()))?;
            let nr = head.nr.get() as usize;
            let Ok((entries, _)) = <[ControlWalkEntry]>::ref_from_prefix_with_elems(rest, nr)
            else {
                return Err(protocol(format!(
                    "a walk frame says {nr} entries, holds {} bytes",
                    rest.len()
                )));
            };
            let got: Vec<WalkEntry> = entries
                .iter()
                .map(|e| WalkEntry {
                    seq: e.seq.get(),
                    ino: e.ino.get(),
                })
                .collect();
            each(head.last_seq.get(), &got)
        })
    }

    /// Grows the devices to these sizes in 64 KiB metadata and 4 KiB data
    /// blocks (0: unchanged), once the devices themselves have grown.
    pub fn resize_devices(&mut self, meta_blocks: u64, data_blocks: u64) -> Result<()> {
        let req = ControlResize {
            meta_blocks: meta_blocks.into(),
            data_blocks: data_blocks.into(),
        };
        self.call(op::RESIZE_DEVICES, req.as_bytes(), &[])?;
        Ok(())
    }

    /// Frees the blocks of `offset..offset+length` (4 KiB aligned) of a
    /// file whose data_version is `data_version`, leaving them offline;
    /// `file` is opened for writing.
    pub fn release(
        &mut self,
        file: BorrowedFd<'_>,
        offset: u64,
        length: u64,
        data_version: u64,
    ) -> Result<()> {
        let r = range(offset, length, data_version);
        self.call(op::RELEASE, r.as_bytes(), &[file])?;
        Ok(())
    }

    /// Stages `offset..offset+length` of `file` (opened for writing) from
    /// the same bytes of `archive` (opened for reading); the mount reads
    /// the archive itself. Returns the bytes staged (offline blocks only).
    pub fn stage(
        &mut self,
        file: BorrowedFd<'_>,
        archive: BorrowedFd<'_>,
        offset: u64,
        length: u64,
        data_version: u64,
    ) -> Result<u64> {
        let r = range(offset, length, data_version);
        let p = self.call(op::STAGE, r.as_bytes(), &[file, archive])?;
        let n: zerocopy::little_endian::U64 =
            payload_prefix(op::STAGE, &p).map_err(|(_, why)| protocol(why))?;
        Ok(n.get())
    }

    /// Turns the offline blocks of a range into holes (every block of it
    /// must be offline or a hole).
    pub fn punch_offline(
        &mut self,
        file: BorrowedFd<'_>,
        offset: u64,
        length: u64,
        data_version: u64,
    ) -> Result<()> {
        let r = range(offset, length, data_version);
        self.call(op::PUNCH_OFFLINE, r.as_bytes(), &[file])?;
        Ok(())
    }

    /// Moves the extents of `from`'s range to `to` (see
    /// `Fs::move_blocks`); `stage` stages `to`'s offline range with them.
    #[allow(clippy::too_many_arguments)]
    pub fn move_blocks(
        &mut self,
        from: BorrowedFd<'_>,
        from_off: u64,
        length: u64,
        to: BorrowedFd<'_>,
        to_off: u64,
        data_version: u64,
        stage: bool,
    ) -> Result<()> {
        let m = ControlMoveBlocks {
            from_off: from_off.into(),
            length: length.into(),
            to_off: to_off.into(),
            data_version: data_version.into(),
            flags: if stage { MOVE_BLOCKS_STAGE } else { 0 }.into(),
        };
        self.call(op::MOVE_BLOCKS, m.as_bytes(), &[from, to])?;
        Ok(())
    }

    /// The blocks operations wait for, after (`after_ino`,
    /// `after_iblock`), at most `max` (0: no limit): (ino, iblock, ops).
    pub fn data_waiting(
        &mut self,
        after_ino: u64,
        after_iblock: u64,
        max: u32,
        flags: u32,
    ) -> Result<Vec<(u64, u64, u8)>> {
        let r = ControlWaitingReq {
            after_ino: after_ino.into(),
            after_iblock: after_iblock.into(),
            max: max.into(),
            flags: flags.into(),
        };
        let mut out = Vec::new();
        self.call_each(op::DATA_WAITING, r.as_bytes(), &[], |p| {
            let Ok(ws) = <[ControlWaiting]>::ref_from_bytes(p) else {
                return Err(protocol(format!(
                    "a waiting frame of {} bytes, not whole entries",
                    p.len()
                )));
            };
            out.extend(ws.iter().map(|w| (w.ino.get(), w.iblock.get(), w.ops)));
            Ok(())
        })?;
        Ok(out)
    }

    /// The blocks operations wait for now, then each block they begin to
    /// wait for, as they do: `each` gets them a batch at a time (an empty
    /// batch every few seconds while nothing comes) and goes on until it
    /// fails (its error is returned) or the mount stops (Ok). `flags` may
    /// add `DATA_WAITING_ALL_MOUNTS`. The connection is for this alone:
    /// drop the client to stop following.
    pub fn data_waiting_follow(
        &mut self,
        flags: u32,
        mut each: impl FnMut(&[(u64, u64, u8)]) -> Result<()>,
    ) -> Result<()> {
        let r = ControlWaitingReq {
            after_ino: 0.into(),
            after_iblock: u64::MAX.into(),
            max: 0.into(),
            flags: (flags | DATA_WAITING_FOLLOW).into(),
        };
        self.call_each(op::DATA_WAITING, r.as_bytes(), &[], |p| {
            let Ok(ws) = <[ControlWaiting]>::ref_from_bytes(p) else {
                return Err(protocol(format!(
                    "a waiting frame of {} bytes, not whole entries",
                    p.len()
                )));
            };
            let got: Vec<(u64, u64, u8)> = ws
                .iter()
                .map(|w| (w.ino.get(), w.iblock.get(), w.ops))
                .collect();
            each(&got)
        })
    }

    /// Fails the operations waiting on bytes `offset..offset+count` of
    /// `ino` whose op is in `ops` with `errno`, on this mount or on every
    /// mount; returns how many.
    pub fn data_wait_err(
        &mut self,
        ino: u64,
        offset: u64,
        count: u64,
        ops: u32,
        errno: i32,
        all_mounts: bool,
    ) -> Result<u64> {
        let r = ControlWaitErr {
            ino: ino.into(),
            offset: offset.into(),
            count: count.into(),
            ops: ops.into(),
            errno: (errno as u32).into(),
            flags: if all_mounts {
                DATA_WAIT_ERR_ALL_MOUNTS
            } else {
                0
            }
            .into(),
            ..ControlWaitErr::default()
        };
        let p = self.call(op::DATA_WAIT_ERR, r.as_bytes(), &[])?;
        let n: zerocopy::little_endian::U64 =
            payload_prefix(op::DATA_WAIT_ERR, &p).map_err(|(_, why)| protocol(why))?;
        Ok(n.get())
    }

    /// The paths of `ino` from the root, through its entries from
    /// (`dir_ino`, `dir_pos`) on, at most `max` (0: every one).
    pub fn ino_paths(&mut self, ino: u64, from: (u64, u64), max: u32) -> Result<Vec<InoPath>> {
        Ok(self
            .entries(op::INO_PATH, ino, from, max)?
            .into_iter()
            .map(|e| InoPath {
                dir_ino: e.dir_ino,
                dir_pos: e.dir_pos,
                dt: e.dt,
                path: e.name,
            })
            .collect())
    }

    /// The directory entries that link to `ino`, from (`dir_ino`,
    /// `dir_pos`) on, at most `max` (0: every one).
    pub fn referring_entries(
        &mut self,
        ino: u64,
        from: (u64, u64),
        max: u32,
    ) -> Result<Vec<Referring>> {
        self.entries(op::GET_REFERRING_ENTRIES, ino, from, max)
    }

    fn entries(&mut self, op: u16, ino: u64, from: (u64, u64), max: u32) -> Result<Vec<Referring>> {
        let r = ControlInoEntries {
            ino: ino.into(),
            dir_ino: from.0.into(),
            dir_pos: from.1.into(),
            max: max.into(),
            pad: 0.into(),
        };
        let mut out = Vec::new();
        self.call_each(op, r.as_bytes(), &[], |mut p| {
            while !p.is_empty() {
                let (e, rest) = ControlEntry::read_from_prefix(p)
                    .map_err(|_| protocol(format!("an entry record of {} bytes", p.len())))?;
                let n = e.name_len.get() as usize;
                let padded = n.next_multiple_of(8);
                if rest.len() < padded {
                    return Err(protocol(format!(
                        "an entry record says {n} name bytes, {} follow",
                        rest.len()
                    )));
                }
                out.push(Referring {
                    dir_ino: e.dir_ino.get(),
                    dir_pos: e.dir_pos.get(),
                    ino: e.ino.get(),
                    dt: e.dt,
                    name: rest[..n].to_vec(),
                });
                p = &rest[padded..];
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The inode numbers in use in `ino`'s group of 1,024 (administrators
    /// only).
    pub fn allocated_inos(&mut self, ino: u64) -> Result<Vec<u64>> {
        let p = self.call(op::GET_ALLOCATED_INOS, &ino.to_le_bytes(), &[])?;
        if p.len() % 8 != 0 {
            return Err(protocol(format!(
                "an allocated-inodes answer of {} bytes",
                p.len()
            )));
        }
        Ok(p.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }
}

fn range(offset: u64, length: u64, data_version: u64) -> ControlRange {
    ControlRange {
        offset: offset.into(),
        length: length.into(),
        data_version: data_version.into(),
        flags: 0.into(),
    }
}
