//! The commands that reach a running mount through its control socket:
//! `statfs`, `resize-devices`, and the archive commands (`stat`,
//! `get-attr-x`, `set-attr-x`, `setattr`, `walk-inodes`).

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
