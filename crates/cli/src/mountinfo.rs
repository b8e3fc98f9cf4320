//! What `scoutfs status PATH` learns of a running mount: each `scoutfs
//! mount` writes a small file into the run directory (beside its fence
//! record, `m.<fsid>.r.<rid>`) naming its metadata device, mountpoint, pid
//! and role, and removes it when it ends. Paths are written as hex bytes,
//! so any name round-trips.

use std::path::{Path, PathBuf};

const MAGIC: &str = "scoutfs-mount 1";

/// One running mount, as it described itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub pid: u32,
    pub rid: u64,
    pub fsid: u64,
    pub meta: PathBuf,
    pub mountpoint: PathBuf,
    /// The quorum slot, or None for a client.
    pub slot: Option<u8>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let pairs = s.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

impl MountInfo {
    fn file(dir: &Path, fsid: u64, rid: u64) -> PathBuf {
        dir.join(format!("m.{fsid:016x}.r.{rid:016x}"))
    }

    fn encode(&self) -> String {
        use std::os::unix::ffi::OsStrExt;
        format!(
            "{MAGIC}\npid {}\nrid {:016x}\nfsid {:016x}\nmeta {}\nmountpoint {}\nslot {}\n",
            self.pid,
            self.rid,
            self.fsid,
            hex(self.meta.as_os_str().as_bytes()),
            hex(self.mountpoint.as_os_str().as_bytes()),
            self.slot.map_or("client".to_string(), |s| s.to_string()),
        )
    }

    fn decode(text: &str) -> Option<MountInfo> {
        use std::os::unix::ffi::OsStringExt;
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut get = std::collections::HashMap::new();
        for l in lines {
            let (k, v) = l.split_once(' ')?;
            get.insert(k, v);
        }
        let path = |k: &str| {
            Some(PathBuf::from(std::ffi::OsString::from_vec(unhex(
                get.get(k)?,
            )?)))
        };
        Some(MountInfo {
            pid: get.get("pid")?.parse().ok()?,
            rid: u64::from_str_radix(get.get("rid")?, 16).ok()?,
            fsid: u64::from_str_radix(get.get("fsid")?, 16).ok()?,
            meta: path("meta")?,
            mountpoint: path("mountpoint")?,
            slot: match *get.get("slot")? {
                "client" => None,
                s => Some(s.parse().ok()?),
            },
        })
    }

    /// Writes this mount's file into `dir` (made if missing); it goes when
    /// the guard drops.
    pub fn write(&self, dir: &Path) -> Result<InfoGuard, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Files of mounts that died without removing theirs.
        for (path, info) in all(dir) {
            if !alive(info.pid) {
                let _ = std::fs::remove_file(path);
            }
        }
        let p = Self::file(dir, self.fsid, self.rid);
        let mut tmp = p.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, self.encode())
            .and_then(|_| std::fs::rename(&tmp, &p))
            .map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(InfoGuard(p))
    }

    /// The running mount on `mountpoint` among the files in `dir`.
    pub fn find(dir: &Path, mountpoint: &Path) -> Result<MountInfo, String> {
        running(dir)
            .find(|i| i.mountpoint == mountpoint)
            .ok_or_else(|| not_found(dir, mountpoint, "no running scoutfs mount there is"))
    }

    /// The running mount that `path` (canonical) is in: the one whose
    /// mountpoint is its longest ancestor.
    pub fn containing(dir: &Path, path: &Path) -> Result<MountInfo, String> {
        running(dir)
            .filter(|i| path.starts_with(&i.mountpoint))
            .max_by_key(|i| i.mountpoint.components().count())
            .ok_or_else(|| not_found(dir, path, "not in a running scoutfs mount"))
    }
}

/// The mounts recorded in `dir` whose process still runs.
fn running(dir: &Path) -> impl Iterator<Item = MountInfo> {
    all(dir)
        .into_iter()
        .map(|(_, info)| info)
        .filter(|i| alive(i.pid))
}

/// Why no running mount was found for `path`.
fn not_found(dir: &Path, path: &Path, what: &str) -> String {
    format!(
        "{}: {what} recorded in {} (mounts record themselves in the run directory, \
         /run/scoutfs or $SCOUTFS_RUN_DIR); use --meta META to read the metadata device offline",
        path.display(),
        dir.display()
    )
}

/// Every mount's file in `dir` that reads as one (none if `dir` is missing
/// or unreadable), with its path.
fn all(dir: &Path) -> Vec<(PathBuf, MountInfo)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("m.") && !name.ends_with(".tmp")
        })
        .filter_map(|e| {
            let info = MountInfo::decode(&std::fs::read_to_string(e.path()).ok()?)?;
            Some((e.path(), info))
        })
        .collect()
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Removes a mount's info file on drop.
pub struct InfoGuard(PathBuf);

impl Drop for InfoGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_round_trips_with_any_path() {
        let i = MountInfo {
            pid: 42,
            rid: 0xabc,
            fsid: 0x123,
            meta: PathBuf::from("/dev/some disk\nwith a newline"),
            mountpoint: PathBuf::from("/mnt/x"),
            slot: Some(2),
        };
        assert_eq!(MountInfo::decode(&i.encode()), Some(i.clone()));
        let c = MountInfo { slot: None, ..i };
        assert_eq!(MountInfo::decode(&c.encode()), Some(c));
        assert_eq!(MountInfo::decode("scoutfs-mount 1\npid x\n"), None);
        assert_eq!(MountInfo::decode("something else"), None);
    }
}
