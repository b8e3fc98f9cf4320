//! The commands that reach a running mount through its control socket:
//! `statfs` and `resize-devices`.

use crate::size;
use scoutfs_core::cluster::fence::local::run_dir;
use scoutfs_core::mount::control::ControlClient;
use scoutfs_format::consts::{BLOCK_LG_SHIFT, BLOCK_SM_SHIFT};
use std::path::PathBuf;
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
