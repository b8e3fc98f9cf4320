//! The FUSE adapter: kernel requests to `fs` calls and back. No logic of
//! its own beyond conversions, the kernel's lookup counts (an unlinked
//! inode is freed when the kernel forgets it), and dropping the kernel's
//! caches when the mount loses the lock that covered them.

use crate::knotify::KernelNotify;
use fuser::*;
use scoutfs_core::mount::fs::types::NewNode;
use scoutfs_core::mount::fs::types::{Attr, SetAttr};
use scoutfs_core::mount::fs::wait::{Resume, WaitEnd};
use scoutfs_core::mount::fs::{Fs, FsError};
use scoutfs_core::mount::locks::show_waits;
use scoutfs_format::inode::*;
use scoutfs_format::Timespec;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may cache attributes and entries. Losing the lock
/// that covers an inode drops its cached attributes, entries and pages at
/// once, so this can be long.
const TTL: Duration = Duration::from_secs(60);
/// A file handle opened with O_NOATIME: its reads leave the atime alone.
const FH_NOATIME: u64 = 1;
/// Empty files a 64 KiB metadata block holds, for statfs's inode counts
/// (an empty file takes about 1 KiB of items).
const INODES_PER_META_BLOCK: u64 = 64;
/// Background requests (readahead) the kernel may have outstanding.
pub const MAX_BACKGROUND: u16 = 16384;
/// The largest write the kernel sends us.
pub const MAX_WRITE: u32 = 1 << 20;

/// What the kernel caches that we must be able to invalidate: the lookup
/// count of each inode it knows, and per directory the names it has
/// cached or may cache from a request in flight.
///
/// Memory: both go with what the kernel forgets. An inode's record goes
/// when the kernel forgets it; a name's goes when the inode it names is
/// forgotten (the kernel's name held it), found by a sweep once as many
/// inodes were forgotten as are known, so its cost is spread over them.
/// And the kernel is not left to hold as many as it likes: past `limit`
/// inodes, names are dropped from its cache (`trim`), a directory at a
/// time round the directories, until it holds 7/8 of the limit.
/// Ordered by inode number: a lock's drop takes the range it covers.
#[derive(Default)]
pub struct Known {
    pub inodes: BTreeMap<u64, u64>,
    pub names: BTreeMap<u64, HashMap<Box<[u8]>, NameState>>,
    /// Inodes forgotten since the last sweep of the names.
    forgotten: usize,
    /// The most inodes the kernel may hold (0: no limit).
    limit: usize,
    /// The directory whose names `trim` drops next.
    cursor: u64,
    /// A trim's names are being dropped.
    trimming: bool,
    /// Reads and writes in flight per inode, by id: the byte ranges whose
    /// pages the kernel holds locked (and not up to date) until each is
    /// answered, and whether each waits for a lock now.
    pub io: HashMap<u64, HashMap<u64, InFlightIo>>,
    next_io: u64,
}

/// Names of the kernel's cache: (directory, name).
pub type Names = Vec<(u64, Box<[u8]>)>;

/// A name of [`Known`].
#[derive(Clone, Copy, Default)]
pub struct NameState {
    /// Requests in flight whose reply may cache it.
    pub pending: u32,
    /// A reply cached it.
    pub cached: bool,
    /// The inode it names, if a reply said (0: not known, as after a
    /// rename; such a name stays until its directory's names are dropped).
    pub child: u64,
}

/// A read or write of [`Known::io`].
pub struct InFlightIo {
    pub off: u64,
    pub len: u64,
    pub waiting: Arc<AtomicBool>,
}

/// A read or write in flight, recorded in [`Known::io`] until dropped
/// (across a wait for offline data too: the kernel holds its pages locked
/// until it is answered).
struct InFlight {
    known: Arc<Mutex<Known>>,
    ino: u64,
    id: u64,
    waiting: Arc<AtomicBool>,
}

impl InFlight {
    /// This thread runs the request now: its lock waits show in the
    /// record.
    fn on_this_thread(&self) {
        self.waiting.store(false, Ordering::SeqCst);
        show_waits(Some(self.waiting.clone()));
    }

    /// The request waits for offline data: its pages are not up to date
    /// and stay locked in the kernel.
    fn parked(&self) {
        show_waits(None);
        self.waiting.store(true, Ordering::SeqCst);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        show_waits(None);
        let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = k.io.get_mut(&self.ino) {
            m.remove(&self.id);
            if m.is_empty() {
                k.io.remove(&self.ino);
            }
        }
    }
}

impl Known {
    /// A request whose reply may cache `parent`/`name` is about to run.
    fn begin(&mut self, parent: u64, name: &[u8]) {
        let d = self.names.entry(parent).or_default();
        match d.get_mut(name) {
            Some(st) => st.pending += 1,
            None => {
                d.insert(
                    name.into(),
                    NameState {
                        pending: 1,
                        ..Default::default()
                    },
                );
            }
        }
    }

    /// That request ended; `cached` if its reply made the kernel cache the
    /// name. A name neither cached nor pending is forgotten (failed
    /// lookups would otherwise pile up). A name whose record was taken by
    /// a drop meanwhile is recorded again if cached: the drop may have
    /// run before the reply.
    /// `child` is the inode the reply named, if it said.
    fn end(&mut self, parent: u64, name: &[u8], child: Option<u64>, cached: bool) {
        let d = self.names.entry(parent).or_default();
        match d.get_mut(name) {
            Some(st) => {
                st.pending = st.pending.saturating_sub(1);
                st.cached |= cached;
                if let Some(c) = child {
                    st.child = c;
                }
                if st.pending == 0 && !st.cached {
                    d.remove(name);
                }
            }
            None if cached => {
                d.insert(
                    name.into(),
                    NameState {
                        pending: 0,
                        cached: true,
                        child: child.unwrap_or(0),
                    },
                );
            }
            None => {}
        }
        if d.is_empty() {
            self.names.remove(&parent);
        }
    }

    /// The inode `parent`/`name` names, if known.
    fn child(&self, parent: u64, name: &[u8]) -> u64 {
        self.names
            .get(&parent)
            .and_then(|d| d.get(name))
            .map_or(0, |st| st.child)
    }

    /// The kernel forgot `ino`: its record goes, with the names of its
    /// directory, and (in sweeps) the names that named it.
    pub fn forget(&mut self, ino: u64, nlookup: u64) -> bool {
        let n = self.inodes.entry(ino).or_insert(0);
        *n = n.saturating_sub(nlookup);
        if *n > 0 {
            return false;
        }
        self.inodes.remove(&ino);
        self.names.remove(&ino);
        self.forgotten += 1;
        if self.forgotten > self.inodes.len().max(1024) {
            self.sweep();
        }
        true
    }

    /// Names to drop from the kernel's cache when it holds more inodes than
    /// the limit (none while the last trim's are still going): cached
    /// names, the directories in turn from where the last trim stopped,
    /// until enough that the kernel would hold 7/8 of the limit. Their
    /// records stay until the kernel forgets what they name (a lock's drop
    /// must still find a name not yet dropped).
    pub fn trim(&mut self) -> Names {
        if self.limit == 0 || self.trimming || self.inodes.len() <= self.limit {
            return Vec::new();
        }
        let want = self.inodes.len() - (self.limit - self.limit / 8);
        let mut out = Vec::new();
        for _ in 0..self.names.len() {
            let next = self
                .names
                .range(self.cursor..)
                .next()
                .or_else(|| self.names.iter().next());
            let Some((&d, names)) = next else { break };
            out.extend(
                names
                    .iter()
                    .filter(|(_, st)| st.cached && st.pending == 0)
                    .map(|(n, _)| (d, n.clone())),
            );
            self.cursor = d.wrapping_add(1);
            if out.len() >= want {
                break;
            }
        }
        self.trimming = !out.is_empty();
        out
    }

    /// Drops the names of inodes the kernel forgot: it forgets an inode
    /// only once no name of its cache refers to it. Names of requests in
    /// flight, and those whose inode isn't known, stay.
    pub fn sweep(&mut self) {
        self.forgotten = 0;
        let inodes = &self.inodes;
        self.names.retain(|_, d| {
            d.retain(|_, st| st.pending > 0 || st.child == 0 || inodes.contains_key(&st.child));
            d.shrink_to_fit();
            !d.is_empty()
        });
    }
}

pub struct ScoutFuse {
    fs: Arc<Fs>,
    known: Arc<Mutex<Known>>,
    notifier: Arc<OnceLock<Notifier>>,
    knotify: Arc<OnceLock<Arc<KernelNotify>>>,
    /// Where the names of a trim go to be dropped (see [`Known::trim`]).
    trim: std::sync::mpsc::SyncSender<Names>,
    dirs: Mutex<DirHandles>,
    faults: Faults,
}

/// Fault points for tests, off unless their variable is in the mount's
/// environment.
#[derive(Default)]
struct Faults {
    /// `SCOUTFS_FAULT_RENAME_WEDGE`: a rename to a name starting with
    /// "wedge" drops the kernel's entry of its source (which waits on the
    /// directory's lock this rename holds in the kernel) and is never
    /// answered: the state of a mount whose kernel notification waits on
    /// a request of its own that waits for a cluster lock.
    rename_wedge: bool,
}

/// The variable of [`Faults::rename_wedge`].
pub const FAULT_RENAME_WEDGE: &str = "SCOUTFS_FAULT_RENAME_WEDGE";

/// Open directories: where each one's listing stops. A listing from the
/// start records the directory's next entry position, and every later
/// read of that handle stops there: an entry renamed meanwhile takes a
/// new position past it and is not listed a second time (entries made
/// after the listing began are not listed either, which POSIX allows).
#[derive(Default)]
struct DirHandles {
    next_fh: u64,
    end: HashMap<u64, u64>,
}

impl ScoutFuse {
    /// An adapter for `fs` that lets the kernel hold at most
    /// `kernel_inodes_max` of its inodes (0: as many as it likes).
    pub fn new(fs: Arc<Fs>, kernel_inodes_max: usize) -> ScoutFuse {
        let known = Arc::new(Mutex::new(Known {
            limit: kernel_inodes_max,
            ..Default::default()
        }));
        let knotify: Arc<OnceLock<Arc<KernelNotify>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Names>(1);
        let (k, kn) = (known.clone(), knotify.clone());
        // Names are dropped on a thread of their own: a drop takes the
        // directory's lock in the kernel, which the request that found the
        // kernel over its limit may hold until it is answered.
        let trimmer = std::thread::Builder::new()
            .name("scoutfs-trim".into())
            .spawn(move || {
                for names in rx {
                    if let Some(n) = kn.get() {
                        for (d, name) in names {
                            n.inval_entry(d, &name);
                        }
                    }
                    k.lock().unwrap_or_else(|p| p.into_inner()).trimming = false;
                }
            });
        if let Err(e) = trimmer {
            tracing::warn!("no thread to keep the kernel's cache to its limit: {e}");
        }
        ScoutFuse {
            fs,
            known,
            notifier: Arc::default(),
            knotify,
            trim: tx,
            dirs: Mutex::default(),
            faults: Faults {
                rename_wedge: std::env::var_os(FAULT_RENAME_WEDGE).is_some(),
            },
        }
    }

    /// Where the session's notifier goes once the session exists, for
    /// telling the kernel about changes it didn't ask for (atimes).
    pub fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }

    /// Where the helper for notifications that may wait in the kernel goes
    /// once it runs (see `knotify`).
    pub fn knotify_slot(&self) -> Arc<OnceLock<Arc<KernelNotify>>> {
        self.knotify.clone()
    }

    /// What reads, writes and size changes need, owned.
    fn io(&self) -> IoCtx {
        IoCtx {
            fs: self.fs.clone(),
            known: self.known.clone(),
            notifier: self.notifier.clone(),
            knotify: self.knotify.clone(),
        }
    }

    /// The fault of [`Faults::rename_wedge`]: never returns while the
    /// process lives (the request stays unanswered).
    fn wedge(&self, parent: u64, name: &[u8]) {
        tracing::warn!("fault {FAULT_RENAME_WEDGE}: wedging a rename");
        if let Some(k) = self.knotify.get() {
            let (k, name) = (k.clone(), name.to_vec());
            std::thread::spawn(move || k.inval_entry(parent, &name));
        }
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }

    /// What the kernel currently caches (for cache invalidation).
    pub fn known(&self) -> Arc<Mutex<Known>> {
        self.known.clone()
    }

    /// Records a name the kernel may cache from the reply of a request
    /// about to run. Recorded before the request takes its lock, so that a
    /// drop of the directory's names that starts after that finds it (see
    /// `kinval`). Each call is ended by `cached`.
    fn may_cache(&self, parent: u64, name: &[u8]) {
        let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
        k.begin(parent, name);
    }

    /// The request of a `may_cache` is answered; `ino` if the kernel
    /// looked it up (its count is what `forget` gives back), `cached` if
    /// the name stays cached.
    fn cached(&self, parent: u64, name: &[u8], ino: Option<u64>, cached: bool) {
        let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ino) = ino {
            *k.inodes.entry(ino).or_insert(0) += 1;
        }
        k.end(parent, name, ino, cached);
        let names = k.trim();
        // With no trimmer left, the next reply tries again.
        if !names.is_empty() && self.trim.try_send(names).is_err() {
            k.trimming = false;
        }
    }
}

/// What reads, writes and size changes need, owned, so that one that
/// waits for offline data can run again later, on a resume thread, with
/// its reply: waiting holds none of the kernel's request threads.
#[derive(Clone)]
struct IoCtx {
    fs: Arc<Fs>,
    known: Arc<Mutex<Known>>,
    notifier: Arc<OnceLock<Notifier>>,
    knotify: Arc<OnceLock<Arc<KernelNotify>>>,
}

impl IoCtx {
    /// Records a read or write of `len` bytes at `off` of `ino`, and
    /// whether it waits for a lock or for offline data, until the result
    /// is dropped (see `kinval`).
    fn in_flight(&self, ino: u64, off: u64, len: u64) -> InFlight {
        let waiting = Arc::new(AtomicBool::new(false));
        let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
        k.next_io += 1;
        let id = k.next_io;
        let io = InFlightIo {
            off,
            len,
            waiting: waiting.clone(),
        };
        k.io.entry(ino).or_default().insert(id, io);
        InFlight {
            known: self.known.clone(),
            ino,
            id,
            waiting,
        }
    }

    /// Records an access of `ino`; when that changed its atime, the
    /// attributes the kernel caches are dropped so stat sees it.
    fn accessed(&self, ino: u64) {
        // As on a local filesystem, a failed atime update doesn't fail
        // the read.
        if let (Ok(true), Some(n)) = (self.fs.accessed(ino), self.notifier.get()) {
            let _ = n.inval_inode(INodeNo(ino), -1, 0);
        }
    }

    /// A read; when it meets offline data it is parked with its reply and
    /// runs again once the data may have been staged.
    fn read(self, ino: u64, off: u64, size: u32, noatime: bool, reply: ReplyData, io: InFlight) {
        io.on_this_thread();
        let mut parked = Some((reply, io));
        let me = &self;
        let r = self.fs.read_or_wait(ino, off, size as usize, &mut || {
            let (reply, io) = parked.take().expect("a resume is made once");
            io.parked();
            let me = me.clone();
            Box::new(move |end| {
                guard("read", || match end {
                    WaitEnd::Woken => me.read(ino, off, size, noatime, reply, io),
                    WaitEnd::Failed(e) => {
                        drop(io);
                        reply.error(Errno::from_i32(e));
                    }
                })
            })
        });
        let Some(r) = r else {
            return;
        };
        let (reply, io) = parked.take().expect("the reply stays when not waiting");
        drop(io);
        match r {
            Ok(d) => {
                // The atime before the data: once the read returns, stat
                // shows the access.
                if !noatime {
                    self.accessed(ino);
                }
                reply.data(&d);
            }
            Err(e) => reply.error(err(e)),
        }
    }

    /// A write at `off` (None: O_APPEND, at the end of the file as it is
    /// under the inode's lock); parked like a read when it meets offline
    /// data (its bytes copied then). `write_back`: of pages a shared
    /// mapping dirtied, refused if another mount changed the file since
    /// they were cached (`scoutfs_core::mount::fs::pages`).
    #[allow(clippy::too_many_arguments)]
    fn write(
        self,
        ino: u64,
        off: Option<u64>,
        kernel_off: u64,
        data: &[u8],
        write_back: bool,
        reply: ReplyWrite,
        io: InFlight,
    ) {
        io.on_this_thread();
        let mut parked = Some((reply, io));
        let me = &self;
        let mut resume = || {
            let (reply, io) = parked.take().expect("a resume is made once");
            io.parked();
            let (me, data) = (me.clone(), data.to_vec());
            Box::new(move |end| {
                guard("write", || match end {
                    WaitEnd::Woken => me.write(ino, off, kernel_off, &data, write_back, reply, io),
                    WaitEnd::Failed(e) => {
                        drop(io);
                        reply.error(Errno::from_i32(e));
                    }
                })
            }) as Resume
        };
        let r = match off {
            Some(at) if write_back => self.fs.write_back_or_wait(ino, at, data, &mut resume),
            _ => self.fs.write_or_wait(ino, off, data, &mut resume),
        };
        let Some(r) = r else {
            return;
        };
        let (reply, io) = parked.take().expect("the reply stays when not waiting");
        drop(io);
        match r {
            Ok((n, at)) => {
                reply.written(n as u32);
                if off.is_none() && at != kernel_off {
                    // O_APPEND: the kernel chose the offset from the size
                    // it caches, which another mount may have changed.
                    // (Such files are opened for direct I/O, so no page
                    // holds the kernel's guess.) The attributes at once (no
                    // kernel lock); pages may be locked by a request that
                    // waits for us, so they go through the helper, on a
                    // thread.
                    if let Some(nt) = self.notifier.get() {
                        let _ = nt.inval_inode(INodeNo(ino), -1, 0);
                    }
                    if let Some(k) = self.knotify.get() {
                        let k = k.clone();
                        std::thread::spawn(move || k.inval_pages(ino, 0, 0));
                    }
                }
            }
            Err(e) => reply.error(err(e)),
        }
    }

    /// A change of attributes; one that changes the size over offline
    /// data is parked like a read.
    fn setattr(self, ino: u64, s: SetAttr, reply: ReplyAttr) {
        let mut parked = Some(reply);
        let me = &self;
        let r = self.fs.setattr_or_wait(ino, &s, &mut || {
            let reply = parked.take().expect("a resume is made once");
            let me = me.clone();
            Box::new(move |end| {
                guard("setattr", || match end {
                    WaitEnd::Woken => me.setattr(ino, s, reply),
                    WaitEnd::Failed(e) => reply.error(Errno::from_i32(e)),
                })
            })
        });
        let Some(r) = r else {
            return;
        };
        let reply = parked.take().expect("the reply stays when not waiting");
        match r {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(err(e)),
        }
    }
}

/// Requests whose handler panicked (see [`guard`]).
pub static REQUESTS_PANICKED: AtomicU64 = AtomicU64::new(0);

/// Runs the handler of one kernel request. A panic there is a bug (a
/// broken invariant caught by an assertion), but one request's bug must not
/// take down the whole mount, and with it the server it may run: the panic
/// is logged and counted, and the request is answered EIO (its reply, not
/// yet sent, answers EIO when dropped while unwinding). Locks and
/// transaction holds the handler took are released as it unwinds; the
/// assertions on these paths check before they change anything.
fn guard(op: &'static str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        let n = REQUESTS_PANICKED.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!("BUG: a {op} request panicked ({n} so far); it was answered EIO");
    }
}

/// What a request's header doesn't say of its caller and the mode rules
/// of a local filesystem need: whether it has CAP_FSETID, and its
/// supplementary groups. Read from `/proc/PID/status`; a caller that is
/// gone counts as root if its uid was 0 and as in no other group.
struct Caller {
    gid: u32,
    groups: Vec<u32>,
    cap_fsetid: bool,
}

/// The bit of CAP_FSETID in a capability set.
const CAP_FSETID: u64 = 1 << 4;

impl Caller {
    fn of(req: &Request) -> Caller {
        let mut c = Caller {
            gid: req.gid(),
            groups: Vec::new(),
            cap_fsetid: req.uid() == 0,
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", req.pid())) else {
            return c;
        };
        for line in status.lines() {
            if let Some(g) = line.strip_prefix("Groups:") {
                c.groups = g
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect();
            } else if let Some(caps) = line.strip_prefix("CapEff:") {
                if let Ok(caps) = u64::from_str_radix(caps.trim(), 16) {
                    c.cap_fsetid = caps & CAP_FSETID != 0;
                }
            }
        }
        c
    }

    /// Whether a mode change by this caller keeps a file's setgid bit.
    fn in_group_or_capable(&self, gid: u32) -> bool {
        self.cap_fsetid || self.gid == gid || self.groups.contains(&gid)
    }
}

fn err(e: FsError) -> Errno {
    Errno::from_i32(e.0)
}

fn systime(t: &Timespec) -> SystemTime {
    let sec = t.signed_sec();
    let nsec = Duration::from_nanos(t.nsec.get().into());
    if sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(sec as u64) + nsec
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + nsec
    }
}

fn timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec::from_signed(d.as_secs() as i64, d.subsec_nanos()),
        // Before 1970. fuser 0.18 turns the kernel's (sec < 0, nsec) into
        // the epoch less |sec| seconds *and* nsec (where it should add
        // nsec): this undoes exactly that, so the kernel's pair is kept
        // (the real-mount test of times before 1970 checks it).
        Err(e) => {
            let d = e.duration();
            Timespec::from_signed(-(d.as_secs() as i64), d.subsec_nanos())
        }
    }
}

fn kind(mode: u32) -> FileType {
    match mode & S_IFMT {
        S_IFDIR => FileType::Directory,
        S_IFLNK => FileType::Symlink,
        S_IFIFO => FileType::NamedPipe,
        S_IFCHR => FileType::CharDevice,
        S_IFBLK => FileType::BlockDevice,
        S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn dt_kind(dt: u8) -> FileType {
    use scoutfs_format::dir::*;
    match dt {
        DT_DIR => FileType::Directory,
        DT_LNK => FileType::Symlink,
        DT_FIFO => FileType::NamedPipe,
        DT_CHR => FileType::CharDevice,
        DT_BLK => FileType::BlockDevice,
        DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    let i = &a.inode;
    FileAttr {
        ino: INodeNo(a.ino),
        size: i.size.get(),
        blocks: a.blocks_512(),
        atime: systime(&i.atime),
        mtime: systime(&i.mtime),
        ctime: systime(&i.ctime),
        crtime: systime(&i.crtime),
        kind: kind(i.mode.get()),
        perm: (i.mode.get() & 0o7777) as u16,
        nlink: i.nlink.get(),
        uid: i.uid.get(),
        gid: i.gid.get(),
        rdev: i.rdev.get(),
        blksize: 4096,
        flags: 0,
    }
}

fn time_or_now(t: Option<TimeOrNow>) -> Option<Timespec> {
    t.map(|t| match t {
        TimeOrNow::SpecificTime(s) => timespec(s),
        TimeOrNow::Now => timespec(SystemTime::now()),
    })
}

impl ScoutFuse {
    /// Answers a request that looked up or made `name` (recorded with
    /// `may_cache` before it ran).
    fn entry(&self, reply: ReplyEntry, parent: u64, name: &OsStr, r: Result<Attr, FsError>) {
        match r {
            Ok(a) => {
                self.cached(parent, name.as_bytes(), Some(a.ino), true);
                reply.entry(&TTL, &file_attr(&a), Generation(0));
            }
            Err(e) => {
                self.cached(parent, name.as_bytes(), None, false);
                reply.error(err(e))
            }
        }
    }

    /// Creates a node for the caller of `req`.
    fn make(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        node: NewNode,
    ) -> Result<Attr, FsError> {
        let node = node.owner(req.uid(), req.gid());
        self.fs.mknod(parent, name.as_bytes(), &node)
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(err(e)),
    }
}

impl Filesystem for ScoutFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // No FUSE_WRITEBACK_CACHE: every write reaches us at once, under
        // its inode's lock, so the kernel's page cache holds only clean
        // pages. Dropping them when a lock is lost then never has to write
        // anything back (which would need the very lock being given up),
        // and the kernel keeps the attributes we send instead of forgetting
        // each file's block count at every close (which made every stat
        // after a close cost a request).
        //
        // No FUSE_ASYNC_DIO: the kernel drops the page cache over a direct
        // write only when the write completes before the call returns, and
        // asynchronous direct writes (AIO) return before; a buffered read
        // racing one then kept the old bytes cached for good. Without it
        // each direct write completes within its call.
        let want = InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_PARALLEL_DIROPS
            // File handles (open_by_handle_at, NFS re-export) name inodes
            // by number: the kernel looks up "." and ".." by number when
            // it no longer caches them, so handles outlive a remount.
            | InitFlags::FUSE_EXPORT_SUPPORT
            // The kernel sends the umask instead of applying it: a parent's
            // default ACL replaces it.
            | InitFlags::FUSE_DONT_MASK;
        for f in want.iter() {
            let _ = config.add_capabilities(f);
        }
        if self.fs.opts.acl {
            let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        }
        // Reads the kernel sends in the background (readahead) count
        // against this limit while they wait for offline data to be staged;
        // at the kernel's default of 12, a dozen such waits would hold up
        // every other file's readahead. Waiting requests cost the mount no
        // thread, so the limit is set far above any number expected.
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guard("lookup", || {
            if name == "." || name == ".." {
                // The kernel finding an inode by number (a file handle):
                // no name is cached, but the inode is looked up.
                match self.fs.lookup(parent.0, name.as_bytes()) {
                    Ok(a) => {
                        let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
                        *k.inodes.entry(a.ino).or_insert(0) += 1;
                        drop(k);
                        reply.entry(&TTL, &file_attr(&a), Generation(0));
                    }
                    Err(e) => reply.error(err(e)),
                }
                return;
            }
            self.may_cache(parent.0, name.as_bytes());
            let r = self.fs.lookup(parent.0, name.as_bytes());
            self.entry(reply, parent.0, name, r);
        })
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        guard("forget", || {
            let gone = {
                let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
                k.forget(ino.0, nlookup)
            };
            if gone {
                if let Err(e) = self.fs.evict(ino.0) {
                    tracing::warn!("freeing inode {}: {e}", ino.0);
                }
            }
        })
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        guard("getattr", || match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(err(e)),
        })
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guard("setattr", || {
            let s = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime: time_or_now(atime),
                mtime: time_or_now(mtime),
                ctime: ctime.map(timespec),
            };
            self.io().setattr(ino.0, s, reply);
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guard("readlink", || match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(err(e)),
        })
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        guard("mknod", || {
            self.may_cache(parent.0, name.as_bytes());
            let r = self.make(
                req,
                parent.0,
                name,
                NewNode::new(mode).umask(umask).rdev(rdev),
            );
            self.entry(reply, parent.0, name, r);
        })
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        guard("mkdir", || {
            self.may_cache(parent.0, name.as_bytes());
            let r = self.make(
                req,
                parent.0,
                name,
                NewNode::new(S_IFDIR | mode).umask(umask),
            );
            self.entry(reply, parent.0, name, r);
        })
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guard("unlink", || {
            empty(reply, self.fs.unlink(parent.0, name.as_bytes()));
        })
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guard("rmdir", || {
            empty(reply, self.fs.rmdir(parent.0, name.as_bytes()));
        })
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        guard("symlink", || {
            let t = target.as_os_str().as_bytes();
            self.may_cache(parent.0, link_name.as_bytes());
            let r = self.make(req, parent.0, link_name, NewNode::symlink(t));
            self.entry(reply, parent.0, link_name, r);
        })
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guard("rename", || {
            if self.faults.rename_wedge && newname.as_bytes().starts_with(b"wedge") {
                return self.wedge(parent.0, name.as_bytes());
            }
            // The kernel moves its entries itself (both ways for an exchange):
            // both names may be cached after it.
            self.may_cache(parent.0, name.as_bytes());
            self.may_cache(newparent.0, newname.as_bytes());
            let r = self.fs.rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                flags.bits(),
            );
            // Either way the names stay as cached as they were before (the
            // kernel moved or kept them).
            let ok = r.is_ok();
            {
                // The new name names what the old one did (and the old the
                // new's, for an exchange).
                let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
                let (from, to) = (
                    k.child(parent.0, name.as_bytes()),
                    k.child(newparent.0, newname.as_bytes()),
                );
                let exchange = flags.bits() & libc::RENAME_EXCHANGE != 0;
                let old_child = if exchange { to } else { from };
                k.end(parent.0, name.as_bytes(), ok.then_some(old_child), ok);
                k.end(newparent.0, newname.as_bytes(), ok.then_some(from), ok);
            }
            empty(reply, r);
        })
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guard("link", || {
            self.may_cache(newparent.0, newname.as_bytes());
            let r = self.fs.link(ino.0, newparent.0, newname.as_bytes());
            self.entry(reply, newparent.0, newname, r);
        })
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guard("open", || {
            // Counted open until its release: no mount deletes it meanwhile.
            let writes =
                flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
            let a = match self.fs.open_for(ino.0, writes) {
                Ok(a) => a,
                Err(e) => return reply.error(err(e)),
            };
            let noatime = flags.0 & libc::O_NOATIME != 0;
            let reads = flags.0 & libc::O_ACCMODE != libc::O_WRONLY;
            // Pages stay cached across opens (losing the inode's lock drops
            // them), except when a read is due to update the atime: then the
            // kernel drops them so that the next read reaches us.
            let atime = reads && !noatime && self.fs.atime_due(&a);
            let mut keep = if atime {
                FopenFlags::empty()
            } else {
                FopenFlags::FOPEN_KEEP_CACHE
            };
            if flags.0 & libc::O_APPEND != 0 {
                keep |= FopenFlags::FOPEN_DIRECT_IO;
            }
            reply.opened(FileHandle(if noatime { FH_NOATIME } else { 0 }), keep);
        })
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guard("release", || {
            // The last close of an unlinked file frees it (if no other
            // mount has it open); the close itself has succeeded.
            if let Err(e) = self.fs.release(ino.0) {
                tracing::warn!("freeing inode {}: {e}", ino.0);
            }
            reply.ok();
        })
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guard("read", || {
            let io = self.io();
            let flight = io.in_flight(ino.0, offset, size.into());
            let noatime = fh.0 & FH_NOATIME != 0;
            io.read(ino.0, offset, size, noatime, reply, flight);
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guard("write", || {
            let io = self.io();
            let flight = io.in_flight(ino.0, offset, data.len() as u64);
            // Pages written back from the page cache: only a shared
            // mapping dirties them (no FUSE_WRITEBACK_CACHE).
            let write_back = wf.contains(WriteFlags::FUSE_WRITE_CACHE);
            let at = (write_back || flags.0 & libc::O_APPEND == 0).then_some(offset);
            io.write(ino.0, at, offset, data, write_back, reply, flight);
        })
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do at close; ENOSYS tells the kernel to stop sending it.
        reply.error(Errno::ENOSYS);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guard("fsync", || {
            empty(reply, self.fs.sync());
        })
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guard("readdir", || {
            let end = if offset == 0 {
                // A listing from the start is an access of the directory.
                self.io().accessed(ino.0);
                let end = match self.fs.readdir_end(ino.0) {
                    Ok(e) => e,
                    Err(e) => return reply.error(err(e)),
                };
                let mut d = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(v) = d.end.get_mut(&fh.0) {
                    *v = end;
                }
                end
            } else {
                let d = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
                d.end.get(&fh.0).copied().unwrap_or(u64::MAX)
            };
            let mut pos = offset;
            loop {
                let ents = match self.fs.readdir(ino.0, pos, 128, end) {
                    Ok(e) => e,
                    Err(e) => return reply.error(err(e)),
                };
                if ents.is_empty() {
                    break;
                }
                for e in &ents {
                    if reply.add(
                        INodeNo(e.ino),
                        e.next_pos,
                        dt_kind(e.dt),
                        OsStr::from_bytes(&e.name),
                    ) {
                        return reply.ok();
                    }
                    pos = e.next_pos;
                }
            }
            reply.ok();
        })
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guard("opendir", || {
            if let Err(e) = self.fs.open(ino.0) {
                return reply.error(err(e));
            }
            let mut d = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
            d.next_fh += 1;
            let fh = d.next_fh;
            d.end.insert(fh, u64::MAX);
            drop(d);
            reply.opened(FileHandle(fh), FopenFlags::empty());
        })
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        guard("releasedir", || {
            let mut d = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
            d.end.remove(&fh.0);
            drop(d);
            if let Err(e) = self.fs.release(ino.0) {
                tracing::warn!("freeing directory {}: {e}", ino.0);
            }
            reply.ok();
        })
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guard("fsyncdir", || {
            empty(reply, self.fs.sync());
        })
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guard("statfs", || {
            match self.fs.statfs() {
                Ok(s) => {
                    // Blocks are the data device's (what file data can
                    // use). Inodes are limited only by metadata space: an
                    // estimate of what the free metadata, less the reserve
                    // kept for freeing, can still hold.
                    let allocatable = s.free_meta_blocks.saturating_sub(s.reserved_meta_blocks);
                    let ffree = allocatable * INODES_PER_META_BLOCK;
                    reply.statfs(
                        s.total_data_blocks,
                        s.free_data_blocks,
                        s.free_data_blocks,
                        s.inode_count + ffree,
                        ffree,
                        4096,
                        255,
                        4096,
                    )
                }
                Err(e) => reply.error(err(e)),
            }
        })
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        guard("setxattr", || {
            let caller = std::cell::OnceCell::new();
            let keep_sgid = |gid| {
                caller
                    .get_or_init(|| Caller::of(req))
                    .in_group_or_capable(gid)
            };
            let r = self
                .fs
                .setxattr_as(ino.0, name.as_bytes(), value, flags as u32, &keep_sgid);
            empty(reply, r);
        })
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guard("getxattr", || {
            match self.fs.getxattr(ino.0, name.as_bytes()) {
                Ok(v) if size == 0 => reply.size(v.len() as u32),
                Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
                Ok(v) => reply.data(&v),
                Err(e) => reply.error(err(e)),
            }
        })
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guard("listxattr", || match self.fs.listxattr(ino.0) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32)
                } else if buf.len() > size as usize {
                    reply.error(Errno::ERANGE)
                } else {
                    reply.data(&buf)
                }
            }
            Err(e) => reply.error(err(e)),
        })
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guard("removexattr", || {
            empty(reply, self.fs.removexattr(ino.0, name.as_bytes()));
        })
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks modes and ACLs itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guard("create", || {
            self.may_cache(parent.0, name.as_bytes());
            let node = NewNode::new(mode).umask(umask).opened();
            match self.make(req, parent.0, name, node) {
                Ok(a) => {
                    self.cached(parent.0, name.as_bytes(), Some(a.ino), true);
                    let noatime = flags & libc::O_NOATIME != 0;
                    reply.created(
                        &TTL,
                        &file_attr(&a),
                        Generation(0),
                        FileHandle(if noatime { FH_NOATIME } else { 0 }),
                        FopenFlags::FOPEN_KEEP_CACHE,
                    );
                }
                Err(e) => {
                    self.cached(parent.0, name.as_bytes(), None, false);
                    reply.error(err(e))
                }
            }
        })
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guard("fallocate", || {
            let keep_privs = Caller::of(req).cap_fsetid;
            let r = self
                .fs
                .fallocate_as(ino.0, mode as u32, offset, length, keep_privs);
            empty(reply, r);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_handler_is_contained_and_counted() {
        let before = REQUESTS_PANICKED.load(Ordering::Relaxed);
        let mut ran_after = false;
        guard("test", || panic!("a broken invariant"));
        guard("test", || ran_after = true);
        assert!(ran_after);
        assert_eq!(REQUESTS_PANICKED.load(Ordering::Relaxed), before + 1);
    }
}
