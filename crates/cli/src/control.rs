//! The commands that reach a running mount through its control socket:
//! `statfs`, `resize-devices`, and the archive commands (`stat`,
//! `get-attr-x`, `set-attr-x`, `setattr`, `walk-inodes`, `release`,
//! `stage`, `punch-offline`, `move-blocks`, `data-waiting`,
//! `data-wait-err`).

use crate::size;
use scoutfs_core::cluster::fence::local::run_dir;
use scoutfs_core::mount::control::ControlClient;
use scoutfs_core::mount::fs::archive::*;
use scoutfs_format::consts::{BLOCK_LG_SHIFT, BLOCK_SM_SHIFT};
use scoutfs_format::Timespec;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The path that names the mount: `-p`, else `$SCOUTFS_MOUNT_PATH`, else
/// the working directory (as the original's commands find theirs).
pub(crate) fn mount_path(p: Option<PathBuf>, cmd: &str) -> Result<PathBuf, String> {
    match p {
        Some(p) => Ok(p),
        None => match std::env::var_os("SCOUTFS_MOUNT_PATH") {
            Some(p) => Ok(PathBuf::from(p)),
            None => {
                std::env::current_dir().map_err(|e| format!("{cmd}: the working directory: {e}"))
            }
        },
    }
}

fn connect(p: Option<PathBuf>, cmd: &str) -> Result<ControlClient, String> {
    let path = mount_path(p, cmd)?;
    ControlClient::for_path(&path, &run_dir()).map_err(|e| format!("{cmd}: {e}"))
}

#[derive(clap::Args)]
pub(crate) struct StatfsArgs {
    /// A path in a running `scoutfs mount` on this host [default:
    /// $SCOUTFS_MOUNT_PATH, else the working directory].
    #[arg(short = 'p', long = "path")]
    path: Option<PathBuf>,
    /// Print only this field's value.
    #[arg(short = 's', long = "single-field", value_name = "NAME")]
    single: Option<String>,
    /// Print one line of JSON instead of text.
    #[arg(long, conflicts_with = "single")]
    json: bool,
}

pub(crate) fn cmd_statfs(a: StatfsArgs) -> Result<ExitCode, String> {
    let mut c = connect(a.path, "statfs")?;
    let m = c.statfs().map_err(|e| format!("statfs: {e}"))?;
    let s = m.fs;
    let fields = [
        ("fsid", format!("{:016x}", s.fsid)),
        ("rid", format!("{:016x}", m.rid)),
        ("total_meta_blocks", s.total_meta_blocks.to_string()),
        ("free_meta_blocks", s.free_meta_blocks.to_string()),
        ("reserved_meta_blocks", s.reserved_meta_blocks.to_string()),
        ("total_data_blocks", s.total_data_blocks.to_string()),
        ("free_data_blocks", s.free_data_blocks.to_string()),
        ("inode_count", s.inode_count.to_string()),
        ("committed_seq", m.committed_seq.to_string()),
    ];
    if let Some(name) = a.single {
        let (_, v) = fields.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
            format!("statfs: no field {name:?} (fields: {})", names.join(", "))
        })?;
        println!("{v}");
    } else if a.json {
        let body: Vec<String> = fields
            .iter()
            .map(|(n, v)| match *n {
                "fsid" | "rid" => format!("\"{n}\":\"{v}\""),
                _ => format!("\"{n}\":{v}"),
            })
            .collect();
        println!("{{{}}}", body.join(","));
    } else {
        for (n, v) in fields {
            println!("{n}: {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct ResizeArgs {
    /// A path in a running `scoutfs mount` on this host [default:
    /// $SCOUTFS_MOUNT_PATH, else the working directory].
    #[arg(short = 'p', long = "path")]
    path: Option<PathBuf>,
    /// The metadata device's new size (K, M, G, T suffixes), in whole
    /// 64 KiB blocks; 0 or its size now leaves it.
    #[arg(short = 'm', long = "meta-size", value_parser = size::parse_size)]
    meta: Option<u64>,
    /// The data device's new size, in whole 4 KiB blocks; 0 or its size
    /// now leaves it.
    #[arg(short = 'd', long = "data-size", value_parser = size::parse_size)]
    data: Option<u64>,
}

pub(crate) fn cmd_resize_devices(a: ResizeArgs) -> Result<ExitCode, String> {
    let meta = a.meta.unwrap_or(0) >> BLOCK_LG_SHIFT;
    let data = a.data.unwrap_or(0) >> BLOCK_SM_SHIFT;
    if a.meta.is_some_and(|m| m != 0 && meta == 0) || a.data.is_some_and(|d| d != 0 && data == 0) {
        return Err("resize-devices: a size smaller than one block".into());
    }
    let mut c = connect(a.path, "resize-devices")?;
    let before = c.statfs().map_err(|e| format!("resize-devices: {e}"))?.fs;
    c.resize_devices(meta, data)
        .map_err(|e| format!("resize-devices: {e}"))?;
    let after = c.statfs().map_err(|e| format!("resize-devices: {e}"))?.fs;
    for (what, old, new, shift) in [
        (
            "metadata",
            before.total_meta_blocks,
            after.total_meta_blocks,
            BLOCK_LG_SHIFT,
        ),
        (
            "data",
            before.total_data_blocks,
            after.total_data_blocks,
            BLOCK_SM_SHIFT,
        ),
    ] {
        if new == old {
            println!(
                "{what}: {old} blocks ({}), unchanged",
                size::human(old << shift)
            );
        } else {
            println!(
                "{what}: grew from {old} to {new} blocks ({} to {})",
                size::human(old << shift),
                size::human(new << shift)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens a file of a mount (any type, for reading) and connects to its
/// mount's control socket.
fn open_file(path: &Path, cmd: &str) -> Result<(std::fs::File, ControlClient), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{cmd}: {}: {e}", path.display()))?;
    let c = ControlClient::for_path(path, &run_dir()).map_err(|e| format!("{cmd}: {e}"))?;
    Ok((f, c))
}

fn ts_text(t: &Timespec) -> String {
    format!("{}.{:09}", t.signed_sec(), t.nsec.get())
}

/// A time as SECS[.NSECS]: seconds since the epoch and a count of
/// nanoseconds (as the original's commands take it: "5.5" is 5 s and 5 ns).
fn parse_ts(s: &str) -> Result<Timespec, String> {
    let (sec, nsec) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, "0"),
    };
    let sec: i64 = sec
        .parse()
        .map_err(|_| format!("{s:?}: not a time (SECS[.NSECS])"))?;
    let nsec: u32 = nsec
        .parse()
        .ok()
        .filter(|&n| n < 1_000_000_000)
        .ok_or_else(|| format!("{s:?}: nanoseconds must be 0..999999999"))?;
    Ok(Timespec::new(sec as u64, nsec))
}

/// Prints name/value pairs as text lines, one JSON object, or one value.
fn print_fields(
    cmd: &str,
    fields: &[(&str, String)],
    single: Option<String>,
    json: bool,
) -> Result<(), String> {
    if let Some(name) = single {
        let (_, v) = fields.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
            format!("{cmd}: no field {name:?} (fields: {})", names.join(", "))
        })?;
        println!("{v}");
    } else if json {
        let body: Vec<String> = fields
            .iter()
            .map(|(n, v)| match v.parse::<u64>() {
                Ok(_) => format!("\"{n}\":{v}"),
                Err(_) => format!("\"{n}\":\"{v}\""),
            })
            .collect();
        println!("{{{}}}", body.join(","));
    } else {
        for (n, v) in fields {
            println!("{n}: {v}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct StatArgs {
    /// A file or directory in a running mount.
    file: PathBuf,
    /// Print only this field's value.
    #[arg(short = 's', long = "single-field", value_name = "NAME")]
    single: Option<String>,
    /// Print one line of JSON instead of text.
    #[arg(long, conflicts_with = "single")]
    json: bool,
}

pub(crate) fn cmd_stat(a: StatArgs) -> Result<ExitCode, String> {
    let (f, mut c) = open_file(&a.file, "stat")?;
    let s = c
        .stat_more(f.as_fd())
        .map_err(|e| format!("stat: {}: {e}", a.file.display()))?;
    let fields = [
        ("meta_seq", s.meta_seq.to_string()),
        ("data_seq", s.data_seq.to_string()),
        ("data_version", s.data_version.to_string()),
        ("online_blocks", s.online_blocks.to_string()),
        ("offline_blocks", s.offline_blocks.to_string()),
        ("crtime", ts_text(&s.crtime)),
    ];
    print_fields("stat", &fields, a.single, a.json)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct GetAttrXArgs {
    /// A file or directory in a running mount.
    file: PathBuf,
    /// Print only this field's value.
    #[arg(short = 's', long = "single-field", value_name = "NAME")]
    single: Option<String>,
    /// Print one line of JSON instead of text.
    #[arg(long, conflicts_with = "single")]
    json: bool,
}

pub(crate) fn cmd_get_attr_x(a: GetAttrXArgs) -> Result<ExitCode, String> {
    let (f, mut c) = open_file(&a.file, "get-attr-x")?;
    let x = c
        .get_attr_x(f.as_fd())
        .map_err(|e| format!("get-attr-x: {}: {e}", a.file.display()))?;
    let fields = [
        ("meta_seq", x.meta_seq.to_string()),
        ("data_seq", x.data_seq.to_string()),
        ("data_version", x.data_version.to_string()),
        ("online_blocks", x.online_blocks.to_string()),
        ("offline_blocks", x.offline_blocks.to_string()),
        ("ctime", ts_text(&x.ctime)),
        ("crtime", ts_text(&x.crtime)),
        ("size", x.size.to_string()),
        (
            "retention",
            u64::from(x.bits & AX_B_RETENTION != 0).to_string(),
        ),
        ("project_id", x.project_id.to_string()),
    ];
    print_fields("get-attr-x", &fields, a.single, a.json)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct SetAttrXArgs {
    /// A file or directory in a running mount.
    file: PathBuf,
    /// The data version of a restored file (not 0; the file must have no
    /// data yet).
    #[arg(short = 'v', long = "data-version", visible_alias = "data_version")]
    data_version: Option<u64>,
    /// The change time, SECS[.NSECS] (without it the ctime becomes now).
    #[arg(short = 'c', long, value_parser = parse_ts)]
    ctime: Option<Timespec>,
    /// The creation time, SECS[.NSECS].
    #[arg(short = 'r', long, value_parser = parse_ts)]
    crtime: Option<Timespec>,
    /// The size of a restored file (with --data-version).
    #[arg(short = 's', long, value_parser = size::parse_size)]
    size: Option<u64>,
    /// With --size: the whole size is offline, to be staged from the
    /// archive.
    #[arg(short = 'o', long, requires = "size")]
    offline: bool,
    /// Set (1) or clear (0) retention: no change of the file is allowed
    /// while it is set. Regular files; needs root.
    #[arg(short = 't', long, value_parser = clap::value_parser!(u8).range(0..=1))]
    retention: Option<u8>,
    /// The project id (0: none); needs root.
    #[arg(short = 'p', long = "project-id", visible_alias = "project_id")]
    project_id: Option<u64>,
}

pub(crate) fn cmd_set_attr_x(a: SetAttrXArgs) -> Result<ExitCode, String> {
    let mut x = AttrX::default();
    if let Some(v) = a.data_version {
        x.mask |= AX_DATA_VERSION;
        x.data_version = v;
    }
    if let Some(t) = a.ctime {
        x.mask |= AX_CTIME;
        x.ctime = t;
    }
    if let Some(t) = a.crtime {
        x.mask |= AX_CRTIME;
        x.crtime = t;
    }
    if let Some(s) = a.size {
        x.mask |= AX_SIZE;
        x.size = s;
    }
    if a.offline {
        x.flags |= AX_F_SIZE_OFFLINE;
    }
    if let Some(r) = a.retention {
        x.mask |= AX_RETENTION;
        x.bits = if r == 1 { AX_B_RETENTION } else { 0 };
    }
    if let Some(p) = a.project_id {
        x.mask |= AX_PROJECT_ID;
        x.project_id = p;
    }
    if x.mask == 0 {
        return Err("set-attr-x: nothing to set (see --help)".into());
    }
    set_attr_x(&a.file, &x, "set-attr-x")
}

fn set_attr_x(file: &Path, x: &AttrX, cmd: &str) -> Result<ExitCode, String> {
    let (f, mut c) = open_file(file, cmd)?;
    c.set_attr_x(f.as_fd(), x)
        .map_err(|e| format!("{cmd}: {}: {e}", file.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct SetattrArgs {
    /// A new, empty regular file in a running mount.
    file: PathBuf,
    /// The data version of the restored file (not 0).
    #[arg(short = 'V', long = "data-version")]
    data_version: Option<u64>,
    /// The file's size (needs --data-version).
    #[arg(short = 's', long, value_parser = size::parse_size, requires = "data_version")]
    size: Option<u64>,
    /// The whole size is one offline extent, to be staged (needs --size).
    #[arg(short = 'o', long, requires = "size")]
    offline: bool,
    /// The change time, SECS[.NSECS].
    #[arg(short = 't', long, value_parser = parse_ts)]
    ctime: Option<Timespec>,
    /// The creation time, SECS[.NSECS].
    #[arg(short = 'r', long, value_parser = parse_ts)]
    crtime: Option<Timespec>,
}

pub(crate) fn cmd_setattr(a: SetattrArgs) -> Result<ExitCode, String> {
    set_attr_x(
        &a.file,
        &AttrX {
            mask: a.data_version.map_or(0, |_| AX_DATA_VERSION)
                | a.size.map_or(0, |_| AX_SIZE)
                | a.ctime.map_or(0, |_| AX_CTIME)
                | a.crtime.map_or(0, |_| AX_CRTIME),
            flags: if a.offline { AX_F_SIZE_OFFLINE } else { 0 },
            data_version: a.data_version.unwrap_or(0),
            size: a.size.unwrap_or(0),
            ctime: a.ctime.unwrap_or_default(),
            crtime: a.crtime.unwrap_or_default(),
            ..AttrX::default()
        },
        "setattr",
    )
}

/// An index position: SEQ[.MINOR[.INO]] (MINOR is always 0 for the seq
/// indexes), or -1 for the greatest.
fn parse_pos(s: &str, last: bool) -> Result<WalkEntry, String> {
    let bad = || format!("{s:?}: not a position (SEQ[.MINOR[.INO]], or -1)");
    let num = |p: &str| -> Result<u64, String> {
        if p == "-1" {
            Ok(u64::MAX)
        } else {
            p.parse().map_err(|_| bad())
        }
    };
    let parts: Vec<&str> = s.split('.').collect();
    let (seq, minor, ino) = match parts[..] {
        [a] => (num(a)?, 0, None),
        [a, b] => (num(a)?, num(b)?, None),
        [a, b, c] => (num(a)?, num(b)?, Some(num(c)?)),
        _ => return Err(bad()),
    };
    if minor != 0 && minor != u64::MAX {
        return Err(format!("{s:?}: the seq indexes have no minor but 0"));
    }
    let ino = ino.unwrap_or(if last || seq == u64::MAX { u64::MAX } else { 0 });
    Ok(WalkEntry { seq, ino })
}

#[derive(clap::Args)]
pub(crate) struct WalkArgs {
    /// The index: meta_seq (every inode, by the seq of its last change) or
    /// data_seq (files, by the seq of their last change of contents).
    #[arg(value_parser = ["meta_seq", "data_seq"])]
    index: String,
    /// The first position, SEQ[.MINOR[.INO]] (included).
    #[arg(allow_hyphen_values = true)]
    first: String,
    /// The last position (included); -1 for the end. Entries stop at the
    /// last seq whose changes are complete on every mount.
    #[arg(allow_hyphen_values = true)]
    last: String,
    /// A path in a running mount [default: $SCOUTFS_MOUNT_PATH, else the
    /// working directory].
    #[arg(short = 'p', long = "path")]
    path: Option<PathBuf>,
    /// One JSON object a line, each with the position to resume after it.
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_walk_inodes(a: WalkArgs) -> Result<ExitCode, String> {
    let index = if a.index == "meta_seq" {
        SeqIndex::MetaSeq
    } else {
        SeqIndex::DataSeq
    };
    let first = parse_pos(&a.first, false).map_err(|e| format!("walk-inodes: {e}"))?;
    let last = parse_pos(&a.last, true).map_err(|e| format!("walk-inodes: {e}"))?;
    let mut c = connect(a.path, "walk-inodes")?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    use std::io::Write;
    c.walk_inodes(index, first, last, 0, |_, entries| {
        for e in entries {
            let r = if a.json {
                let next = match e.ino.checked_add(1) {
                    Some(i) => format!("{}.0.{i}", e.seq),
                    None => format!("{}.0.0", e.seq.saturating_add(1)),
                };
                writeln!(
                    out,
                    "{{\"seq\":{},\"ino\":{},\"next\":\"{next}\"}}",
                    e.seq, e.ino
                )
            } else {
                writeln!(out, "{}.0.{}", e.seq, e.ino)
            };
            r.map_err(|e| scoutfs_core::error::Error::io("stdout", e))?;
        }
        Ok(())
    })
    .map_err(|e| format!("walk-inodes: {e}"))?;
    out.flush()
        .map_err(|e| format!("walk-inodes: stdout: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Opens a file of a mount for writing (and not truncating) and connects to
/// its mount's control socket.
fn open_for_writing(path: &Path, cmd: &str) -> Result<(std::fs::File, ControlClient), String> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("{cmd}: {}: {e}", path.display()))?;
    let c = ControlClient::for_path(path, &run_dir()).map_err(|e| format!("{cmd}: {e}"))?;
    Ok((f, c))
}

fn file_size(f: &std::fs::File, path: &Path, cmd: &str) -> Result<u64, String> {
    f.metadata()
        .map(|m| m.len())
        .map_err(|e| format!("{cmd}: {}: {e}", path.display()))
}

#[derive(clap::Args)]
pub(crate) struct ReleaseArgs {
    /// A regular file in a running mount (opened for writing).
    file: PathBuf,
    /// The data_version the file had when it was archived; refused
    /// (ESTALE) if it changed since.
    #[arg(short = 'V', long = "data-version")]
    data_version: u64,
    /// Where the range starts (4 KiB aligned) [default: 0].
    #[arg(short = 'o', long, value_parser = size::parse_size, default_value = "0")]
    offset: u64,
    /// Its length (4 KiB aligned) [default: to the end of the file].
    #[arg(short = 'l', long, value_parser = size::parse_size)]
    length: Option<u64>,
}

pub(crate) fn cmd_release(a: ReleaseArgs) -> Result<ExitCode, String> {
    let (f, mut c) = open_for_writing(&a.file, "release")?;
    let len = match a.length {
        Some(l) => l,
        None => file_size(&f, &a.file, "release")?
            .div_ceil(4096)
            .saturating_mul(4096)
            .saturating_sub(a.offset),
    };
    c.release(f.as_fd(), a.offset, len, a.data_version)
        .map_err(|e| format!("release: {}: {e}", a.file.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct StageArgs {
    /// The archived copy of the file's data (any filesystem), read at the
    /// same offsets.
    archive: PathBuf,
    /// The file in a running mount whose offline range is staged (opened
    /// for writing).
    file: PathBuf,
    /// The data_version the file had when it was archived.
    #[arg(short = 'V', long = "data-version")]
    data_version: u64,
    /// Where the range starts (4 KiB aligned) [default: 0].
    #[arg(short = 'o', long, value_parser = size::parse_size, default_value = "0")]
    offset: u64,
    /// Its length; it ends on a 4 KiB block or at the end of the file
    /// [default: to the end of the file].
    #[arg(short = 'l', long, value_parser = size::parse_size)]
    length: Option<u64>,
}

pub(crate) fn cmd_stage(a: StageArgs) -> Result<ExitCode, String> {
    let archive = std::fs::File::open(&a.archive)
        .map_err(|e| format!("stage: {}: {e}", a.archive.display()))?;
    let (f, mut c) = open_for_writing(&a.file, "stage")?;
    let len = match a.length {
        Some(l) => l,
        None => file_size(&f, &a.file, "stage")?.saturating_sub(a.offset),
    };
    c.stage(f.as_fd(), archive.as_fd(), a.offset, len, a.data_version)
        .map_err(|e| format!("stage: {}: {e}", a.file.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct PunchOfflineArgs {
    /// A regular file in a running mount (opened for writing).
    file: PathBuf,
    /// The file's data_version.
    #[arg(short = 'V', long = "data-version")]
    data_version: u64,
    /// Where the range starts (4 KiB aligned).
    #[arg(short = 'o', long, value_parser = size::parse_size)]
    offset: u64,
    /// Its length (4 KiB aligned).
    #[arg(short = 'l', long, value_parser = size::parse_size)]
    length: u64,
}

pub(crate) fn cmd_punch_offline(a: PunchOfflineArgs) -> Result<ExitCode, String> {
    let (f, mut c) = open_for_writing(&a.file, "punch-offline")?;
    c.punch_offline(f.as_fd(), a.offset, a.length, a.data_version)
        .map_err(|e| format!("punch-offline: {}: {e}", a.file.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct MoveBlocksArgs {
    /// The file the blocks move from (opened for writing).
    from: PathBuf,
    /// Where they start in it (4 KiB aligned).
    #[arg(short = 'f', long = "from-offset", value_parser = size::parse_size)]
    from_offset: u64,
    /// How many bytes (4 KiB aligned unless the range ends the file).
    #[arg(short = 'l', long, value_parser = size::parse_size)]
    length: u64,
    /// The file they move to (opened for writing).
    to: PathBuf,
    /// Where they go in it (4 KiB aligned).
    #[arg(short = 't', long = "to-offset", value_parser = size::parse_size)]
    to_offset: u64,
    /// Stage the destination's offline range with them (needs
    /// --data-version, the destination's).
    #[arg(short = 's', long, requires = "data_version")]
    stage: bool,
    /// The destination's data_version, with --stage.
    #[arg(short = 'V', long = "data-version")]
    data_version: Option<u64>,
}

pub(crate) fn cmd_move_blocks(a: MoveBlocksArgs) -> Result<ExitCode, String> {
    let (from, mut c) = open_for_writing(&a.from, "move-blocks")?;
    let (to, _) = open_for_writing(&a.to, "move-blocks")?;
    c.move_blocks(
        from.as_fd(),
        a.from_offset,
        a.length,
        to.as_fd(),
        a.to_offset,
        a.data_version.unwrap_or(0),
        a.stage,
    )
    .map_err(|e| format!("move-blocks: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

fn ops_text(ops: u8) -> String {
    let names: Vec<&str> = [
        (scoutfs_core::mount::fs::wait::DWO_READ, "read"),
        (scoutfs_core::mount::fs::wait::DWO_WRITE, "write"),
        (
            scoutfs_core::mount::fs::wait::DWO_CHANGE_SIZE,
            "change_size",
        ),
    ]
    .iter()
    .filter(|(b, _)| ops & b != 0)
    .map(|(_, n)| *n)
    .collect();
    names.join(",")
}

#[derive(clap::Args)]
pub(crate) struct DataWaitingArgs {
    /// List the waiters after this inode ...
    #[arg(short = 'I', long = "inode", default_value = "0")]
    ino: u64,
    /// ... and this block of it.
    #[arg(short = 'B', long = "block", default_value = "0")]
    iblock: u64,
    /// A path in a running mount [default: $SCOUTFS_MOUNT_PATH, else the
    /// working directory].
    #[arg(short = 'p', long = "path")]
    path: Option<PathBuf>,
    /// One JSON object a line, each with the position to resume after it.
    #[arg(long)]
    json: bool,
    /// Only the waiters of the mount of the path [default: every mount's].
    #[arg(long)]
    local: bool,
    /// After the waiters there are, print each block operations begin to
    /// wait for, as they do, until interrupted.
    #[arg(long, conflicts_with_all = ["ino", "iblock"])]
    follow: bool,
}

fn print_waiting(ino: u64, iblock: u64, ops: u8, json: bool) {
    if json {
        let names: Vec<String> = ops_text(ops)
            .split(',')
            .map(|n| format!("\"{n}\""))
            .collect();
        println!(
            "{{\"ino\":{ino},\"iblock\":{iblock},\"ops\":[{}],\"next\":\"{ino}.{iblock}\"}}",
            names.join(",")
        );
    } else {
        println!("ino {ino} iblock {iblock} ops {}", ops_text(ops));
    }
}

pub(crate) fn cmd_data_waiting(a: DataWaitingArgs) -> Result<ExitCode, String> {
    let mut c = connect(a.path, "data-waiting")?;
    let all = if a.local {
        0
    } else {
        scoutfs_format::control::DATA_WAITING_ALL_MOUNTS
    };
    if a.follow {
        use std::io::Write;
        c.data_waiting_follow(all, |ws| {
            for &(ino, iblock, ops) in ws {
                print_waiting(ino, iblock, ops, a.json);
            }
            std::io::stdout()
                .flush()
                .map_err(|e| scoutfs_core::error::Error::io("stdout", e))
        })
        .map_err(|e| format!("data-waiting: {e}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    // From the very start, or after the block given.
    let (ino, iblock) = if a.ino == 0 && a.iblock == 0 {
        (0, u64::MAX)
    } else {
        (a.ino, a.iblock)
    };
    let ws = c
        .data_waiting(ino, iblock, 0, all)
        .map_err(|e| format!("data-waiting: {e}"))?;
    for (ino, iblock, ops) in ws {
        print_waiting(ino, iblock, ops, a.json);
    }
    Ok(ExitCode::SUCCESS)
}

/// An errno by number (either sign) or name (EIO).
fn parse_errno(s: &str) -> Result<i32, String> {
    let bad = || format!("{s:?}: not an errno (a number such as -5, or a name such as EIO)");
    let n = match s.trim_start_matches('-').parse::<i32>() {
        Ok(n) => n,
        Err(_) => match s.to_ascii_uppercase().as_str() {
            "EIO" => libc::EIO,
            "ENOENT" => libc::ENOENT,
            "ENODATA" => libc::ENODATA,
            "ENOSPC" => libc::ENOSPC,
            "EAGAIN" => libc::EAGAIN,
            "EINVAL" => libc::EINVAL,
            "ESTALE" => libc::ESTALE,
            "ENOLINK" => libc::ENOLINK,
            "ETIMEDOUT" => libc::ETIMEDOUT,
            "EHOSTDOWN" => libc::EHOSTDOWN,
            _ => return Err(bad()),
        },
    };
    if !(1..4096).contains(&n) {
        return Err(bad());
    }
    Ok(n)
}

/// Ops as read, write, change_size (comma separated).
fn parse_ops(s: &str) -> Result<u8, String> {
    use scoutfs_core::mount::fs::wait::*;
    let mut ops = 0;
    for o in s.split(',') {
        ops |= match o {
            "read" => DWO_READ,
            "write" => DWO_WRITE,
            "change_size" => DWO_CHANGE_SIZE,
            _ => return Err(format!("{o:?}: ops are read, write and change_size")),
        };
    }
    Ok(ops)
}

#[derive(clap::Args)]
pub(crate) struct DataWaitErrArgs {
    /// The inode whose waiters fail.
    #[arg(short = 'I', long = "inode")]
    ino: u64,
    /// Its data_version (not used, as in the original since v1.26).
    #[arg(short = 'V', long = "data-version", default_value = "0")]
    data_version: u64,
    /// The first byte of the range whose waiters fail.
    #[arg(short = 'F', long, value_parser = size::parse_size)]
    offset: u64,
    /// How many bytes.
    #[arg(short = 'C', long, value_parser = size::parse_size)]
    count: u64,
    /// Which waiters: read, write, change_size (comma separated).
    #[arg(short = 'O', long = "op", value_parser = parse_ops)]
    ops: u8,
    /// The error they fail with: a number (either sign) or a name (EIO).
    #[arg(short = 'E', long = "err", value_parser = parse_errno, allow_hyphen_values = true)]
    errno: i32,
    /// A path in a running mount [default: $SCOUTFS_MOUNT_PATH, else the
    /// working directory].
    #[arg(short = 'p', long = "path")]
    path: Option<PathBuf>,
    /// Only the waiters of the mount of the path [default: every mount's].
    #[arg(long)]
    local: bool,
}

pub(crate) fn cmd_data_wait_err(a: DataWaitErrArgs) -> Result<ExitCode, String> {
    let _ = a.data_version;
    let mut c = connect(a.path, "data-wait-err")?;
    let n = c
        .data_wait_err(a.ino, a.offset, a.count, a.ops.into(), a.errno, !a.local)
        .map_err(|e| format!("data-wait-err: {e}"))?;
    println!("{n} waiting operations failed");
    Ok(ExitCode::SUCCESS)
}

/// `"field":"..."`, and `"field_hex":"..."` too when the bytes are not
/// UTF-8 (then the first has U+FFFD for the bad bytes).
fn json_name(field: &str, b: &[u8]) -> String {
    let mut s = format!(
        "\"{field}\":{}",
        scoutfs_core::tools::status::json_str(&String::from_utf8_lossy(b))
    );
    if std::str::from_utf8(b).is_err() {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        s.push_str(&format!(",\"{field}_hex\":\"{hex}\""));
    }
    s
}

fn dt_text(dt: u8) -> &'static str {
    use scoutfs_format::dir::*;
    match dt {
        DT_FIFO => "fifo",
        DT_CHR => "chr",
        DT_DIR => "dir",
        DT_BLK => "blk",
        DT_REG => "reg",
        DT_LNK => "lnk",
        DT_SOCK => "sock",
        _ => "unknown",
    }
}

/// The position after an entry: the same directory's next readdir pos.
fn next_entry(dir_ino: u64, dir_pos: u64) -> String {
    match dir_pos.checked_add(1) {
        Some(p) => format!("{dir_ino}.{p}"),
        None => format!("{}.0", dir_ino.saturating_add(1)),
    }
}

/// A position DIR_INO.DIR_POS among an inode's entries.
fn parse_entry_pos(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{s:?}: not an entry position (DIR_INO.DIR_POS)");
    let (d, p) = s.split_once('.').ok_or_else(bad)?;
    Ok((d.parse().map_err(|_| bad())?, p.parse().map_err(|_| bad())?))
}

#[derive(clap::Args)]
/// The arguments of `ino-path` and `get-referring-entries`.
pub(crate) struct InoEntriesArgs {
    /// The inode number.
    ino: u64,
    /// Start at this entry, DIR_INO.DIR_POS (a `next` of the JSON form).
    #[arg(long, value_parser = parse_entry_pos)]
    from: Option<(u64, u64)>,
    /// A path in a running mount [default: $SCOUTFS_MOUNT_PATH, else the
    /// working directory].
    #[arg(short = 'p', long = "path")]
    path: Option<PathBuf>,
    /// One JSON object a line, each with the position to resume after it.
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_ino_path(a: InoEntriesArgs) -> Result<ExitCode, String> {
    let mut c = connect(a.path, "ino-path")?;
    let paths = c
        .ino_paths(a.ino, a.from.unwrap_or((0, 0)), 0)
        .map_err(|e| format!("ino-path: {e}"))?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for p in &paths {
        let r = if a.json {
            writeln!(
                out,
                "{{\"ino\":{},\"dir_ino\":{},\"dir_pos\":{},{},\"next\":\"{}\"}}",
                a.ino,
                p.dir_ino,
                p.dir_pos,
                json_name("path", &p.path),
                next_entry(p.dir_ino, p.dir_pos)
            )
        } else {
            out.write_all(&p.path).and_then(|_| out.write_all(b"\n"))
        };
        r.map_err(|e| format!("ino-path: stdout: {e}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn cmd_get_referring_entries(a: InoEntriesArgs) -> Result<ExitCode, String> {
    let mut c = connect(a.path, "get-referring-entries")?;
    let es = c
        .referring_entries(a.ino, a.from.unwrap_or((0, 0)), 0)
        .map_err(|e| format!("get-referring-entries: {e}"))?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for e in &es {
        let r = if a.json {
            writeln!(
                out,
                "{{\"ino\":{},\"dir_ino\":{},\"dir_pos\":{},\"type\":\"{}\",{},\"next\":\"{}\"}}",
                e.ino,
                e.dir_ino,
                e.dir_pos,
                dt_text(e.dt),
                json_name("name", &e.name),
                next_entry(e.dir_ino, e.dir_pos)
            )
        } else {
            write!(
                out,
                "dir {} pos {} ino {} type {} name ",
                e.dir_ino,
                e.dir_pos,
                e.ino,
                dt_text(e.dt)
            )
            .and_then(|_| out.write_all(&e.name))
            .and_then(|_| out.write_all(b"\n"))
        };
        r.map_err(|e| format!("get-referring-entries: stdout: {e}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct AllocatedInosArgs {
    /// An inode number: the inodes in use in its group of 1,024 are listed.
    #[arg(short = 'i', long = "ino")]
    ino: u64,
    /// Only this inode: printed if it is in use (exit status 1 if not).
    #[arg(short = 's', long)]
    single: bool,
    /// A path in a running mount [default: $SCOUTFS_MOUNT_PATH, else the
    /// working directory].
    #[arg(short = 'p', long = "path")]
    path: Option<PathBuf>,
    /// One JSON object a line.
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_get_allocated_inos(a: AllocatedInosArgs) -> Result<ExitCode, String> {
    let mut c = connect(a.path, "get-allocated-inos")?;
    let mut inos = c
        .allocated_inos(a.ino)
        .map_err(|e| format!("get-allocated-inos: {e}"))?;
    if a.single {
        inos.retain(|&i| i == a.ino);
        if inos.is_empty() {
            return Ok(ExitCode::FAILURE);
        }
    }
    for i in inos {
        if a.json {
            println!("{{\"ino\":{i}}}");
        } else {
            println!("{i}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
