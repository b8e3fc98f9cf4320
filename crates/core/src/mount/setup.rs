//! Mounting: setup and teardown of everything a mount runs, in order.
//!
//! Setup: check the two devices belong together; make a random mount id
//! (rid), or take the caller's (`scoutfs mount` chooses it to record itself
//! for the local fence agent before any server can see the rid); start what
//! serves the filesystem, by the mount's [`MountRole`]:
//!
//! - a quorum member starts its slot's quorum driver, whose elections start
//!   and stop this mount's server ([`crate::cluster::elected`]);
//! - a plain client serves nothing;
//! - a mount that is `Alone` (tests and tools that own the devices) runs its
//!   own server in the process, on a loopback port, with no election.
//!
//! Then connect the client over TCP to the server (found in the quorum
//! blocks before every attempt, as elections move it), which greets and
//! records the mount; create the item cache, lock driver and first
//! transaction; free inodes an earlier mount left unlinked, when no other
//! mount is recorded (another may still have them open); start the commit
//! thread.
//!
//! Teardown reverses it: stop the commit thread, commit, say farewell (a
//! quorum member's farewell may wait for the others, see
//! [`crate::cluster::server`]), close the connection, stop the lock worker, then
//! stop the server or leave the quorum (which stops a server it runs).

use crate::cluster::client::Client;
use crate::cluster::elected::{ElectedOptions, ElectedServer};
use crate::cluster::fence::{Fencer, FENCE_TIMEOUT_MS_DEFAULT};
use crate::cluster::net::tcp::{FindServer, ServerAddr};
use crate::cluster::net::wire::GREETING_FLAG_QUORUM;
use crate::cluster::quorum::agent::HEARTBEAT_TIMEOUT_DEFAULT_MS;
use crate::cluster::quorum::driver::{find_server, QuorumDriver, QuorumHandle, QuorumOptions};
use crate::cluster::quorum::SlotNr;
use crate::cluster::server::{
    mounted_client_key, Server, ServerOptions, MERGE_INTERVAL_MS_DEFAULT,
    RECONNECT_TIMEOUT_MS_DEFAULT, RECOVERY_TIMEOUT_MS_DEFAULT,
};
use crate::error::{Error, Result};
use crate::mount::fs::{Fs, FsOptions};
use crate::mount::item::ItemCache;
use crate::mount::locks::{Locks, LOCK_IDLE_MAX_DEFAULT};
use crate::mount::trans::{Trans, TransLimits};
use crate::store::block::BlockCache;
use crate::store::btree;
use crate::store::commit::{check_pair, read_super, Store};
use crate::store::dev::BlockDev;
use crate::types::Rid;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often, on average, a mount scans for orphans by default.
pub const ORPHAN_SCAN_MS_DEFAULT: u64 = 10_000;

/// What a mount serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountRole {
    /// The only mount there can be: it serves the filesystem itself, in the
    /// process, with no election (tests and tools that own the devices).
    /// Every mount recorded on the device is taken for departed.
    Alone,
    /// A member of the quorum in this slot: it stands for election and
    /// serves when elected.
    Quorum { slot: u8 },
    /// A client of whichever quorum member serves.
    Client,
}

/// Options of a mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    pub role: MountRole,
    /// How long a quorum member waits for the leader's heartbeat before it
    /// stands for election.
    pub heartbeat_timeout_ms: u64,
    /// How long this mount's server waits for the mounts of an earlier
    /// server to recover before it fences them.
    pub recovery_timeout_ms: u64,
    /// How long this mount's server lets a mount stay disconnected before
    /// it fences it.
    pub reconnect_timeout_ms: u64,
    /// Commit the open transaction at least this often.
    pub commit_interval_ms: u64,
    /// How long this mount's server lets log trees that hold items go
    /// unmerged ([`ServerOptions::merge_interval`]).
    pub merge_interval_ms: u64,
    /// How often, on average, the mount looks for orphans no mount has
    /// open ([`Fs::scan_orphans`]).
    pub orphan_scan_ms: u64,
    /// Bytes of clean items the item cache keeps.
    pub item_cache_bytes: usize,
    /// Metadata blocks the block cache keeps.
    pub block_cache_blocks: usize,
    pub trans: TransLimits,
    pub fs: FsOptions,
    pub lock_idle_max: usize,
    /// This mount's id; `None` makes a random one ([`new_rid`]).
    pub rid: Option<u64>,
    /// The fence command (program, then arguments) the server runs to
    /// fence a mount; `None`: fencing is not configured, and the server
    /// refuses to fence rather than guess (see [`crate::cluster::fence`]).
    pub fence_command: Option<Vec<String>>,
    /// How long a fence command may run before it is killed and the fence
    /// counts as failed.
    pub fence_timeout_ms: u64,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            role: MountRole::Alone,
            heartbeat_timeout_ms: HEARTBEAT_TIMEOUT_DEFAULT_MS,
            recovery_timeout_ms: RECOVERY_TIMEOUT_MS_DEFAULT,
            reconnect_timeout_ms: RECONNECT_TIMEOUT_MS_DEFAULT,
            commit_interval_ms: 10_000,
            merge_interval_ms: MERGE_INTERVAL_MS_DEFAULT,
            orphan_scan_ms: ORPHAN_SCAN_MS_DEFAULT,
            item_cache_bytes: 256 << 20,
            block_cache_blocks: 2048,
            trans: TransLimits::default(),
            fs: FsOptions::default(),
            lock_idle_max: LOCK_IDLE_MAX_DEFAULT,
            rid: None,
            fence_command: None,
            fence_timeout_ms: FENCE_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl MountOptions {
    /// The fencer of this mount's fence options, for its server.
    pub fn fencer(&self, fsid: u64) -> Fencer {
        Fencer::new(
            self.fence_command.clone(),
            Duration::from_millis(self.fence_timeout_ms),
        )
        .with_fsid(fsid)
    }
}

/// A new random mount id: never 0, which no mount uses.
pub fn new_rid() -> u64 {
    crate::rng::os_random_u64() | 1
}

/// A mounted filesystem: its client and fs, and what it serves.
pub struct Mount {
    fs: Arc<Fs>,
    meta: Arc<dyn BlockDev>,
    cache: Arc<BlockCache>,
    locks: Arc<Locks>,
    client: Arc<Client>,
    /// The in-process server of an `Alone` mount.
    server: Option<Server>,
    /// The quorum member of a `Quorum` mount.
    quorum: Option<QuorumDriver>,
    /// Asks the elected server this mount runs, if any, to print its state.
    elected_dump: Option<Arc<dyn Fn() + Send + Sync>>,
    committer: Option<JoinHandle<()>>,
    scanner: Option<OrphanScanner>,
    unmounted: AtomicBool,
}

/// How often an unmount waiting for its farewell's answer looks at the
/// device to see whether the farewell was processed already.
const FAREWELL_POLL: Duration = Duration::from_secs(1);

impl Mount {
    /// Mounts the filesystem on `meta` and `data`.
    pub fn open(
        meta: Arc<dyn BlockDev>,
        data: Arc<dyn BlockDev>,
        opts: &MountOptions,
    ) -> Result<Mount> {
        let rid = match opts.rid {
            Some(0) => return Err(Error::Config("mount id (rid) 0 is not valid".into())),
            Some(rid) => rid,
            None => new_rid(),
        };
        crate::log::set_rid(rid);
        let msb = read_super(meta.as_ref(), true)?;
        let dsb = read_super(data.as_ref(), false)?;
        check_pair(&msb, &dsb, data.name())?;
        let fsid = msb.hdr.fsid.get();
        let cache = Arc::new(BlockCache::new(meta.clone(), fsid, opts.block_cache_blocks));
        let mut server = None;
        let mut quorum = None;
        let mut elected_dump = None;
        let mut start_failure = None;
        // The Alone role's client, closed when its server ends: no other
        // server will answer what it waits for.
        let own_client: Arc<OnceLock<Arc<Client>>> = Arc::default();
        let finder = Arc::new(Finder {
            meta: meta.clone(),
            quorum: OnceLock::new(),
        });
        let find = ServerAddr::Find(finder.clone());
        let (addr, flags) = match opts.role {
            MountRole::Alone => {
                let store = Store::open(meta.clone(), opts.block_cache_blocks)?;
                let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
                // A server that cannot start (a failing device) fails the
                // mount at once rather than leaving it waiting.
                let failure = crate::cluster::elected::StartFailure::default();
                let report = failure.clone();
                start_failure = Some(failure);
                let own = own_client.clone();
                let sopts = ServerOptions {
                    merge_interval: Duration::from_millis(opts.merge_interval_ms),
                    data_dev: Some(data.clone()),
                    on_exit: Some(Box::new(move |why: Error| {
                        *report.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(format!("the server stopped: {why}"));
                        if let Some(c) = own.get() {
                            c.close();
                        }
                    })),
                    ..ServerOptions::alone(1)
                };
                let s = Server::start(store, loopback, sopts)?;
                let addr = ServerAddr::Fixed(s.addr());
                server = Some(s);
                (addr, 0)
            }
            MountRole::Quorum { slot } => {
                let eopts = ElectedOptions {
                    fencer: opts.fencer(fsid),
                    cache_blocks: opts.block_cache_blocks,
                    recovery_timeout: Duration::from_millis(opts.recovery_timeout_ms),
                    reconnect_timeout: Duration::from_millis(opts.reconnect_timeout_ms),
                    merge_interval: Duration::from_millis(opts.merge_interval_ms),
                    data_dev: Some(data.clone()),
                };
                let ctl = ElectedServer::new(meta.clone(), &msb, SlotNr(slot), eopts)?;
                start_failure = Some(ctl.start_failure());
                elected_dump = Some(Arc::from(ctl.dumper()));
                let qopts = QuorumOptions {
                    rid: Rid(rid),
                    heartbeat_timeout_ms: opts.heartbeat_timeout_ms,
                };
                let driver = QuorumDriver::start(meta.clone(), SlotNr(slot), qopts, Box::new(ctl))?;
                let _ = finder.quorum.set(driver.handle());
                quorum = Some(driver);
                (find, GREETING_FLAG_QUORUM)
            }
            MountRole::Client => (find, 0),
        };
        // A failure from here on leaves the quorum (stopping a server this
        // mount runs) before it returns.
        let quorum_on_err = QuorumOnErr(quorum);
        let items = Arc::new(ItemCache::new(opts.item_cache_bytes));
        let locks = Locks::new(rid, items.clone(), opts.lock_idle_max);
        let key = crate::cluster::auth::ClusterKey::of(&msb);
        if !key.is_secret() {
            tracing::warn!(
                "this filesystem (format version 1) has no cluster key: its cluster \
                 traffic is not authenticated; a filesystem made by this version has one"
            );
        }
        // A starting mount whose own server can't start or serve because
        // of the filesystem itself (corruption, a failing device) says why
        // at once instead of waiting for a server that won't answer: the
        // other members read the same devices.
        let abandon = || {
            start_failure
                .as_ref()
                .and_then(|f: &crate::cluster::elected::StartFailure| {
                    f.lock().unwrap_or_else(|p| p.into_inner()).clone()
                })
        };
        let client = Client::connect(addr, fsid, key, rid, flags, locks.clone(), &abandon)?;
        if matches!(opts.role, MountRole::Alone) {
            let _ = own_client.set(client.clone());
            // Ended before the client was set: close it here.
            if let Some(why) = abandon() {
                client.close();
                return Err(Error::Disconnected(why));
            }
        }
        // The client and the lock driver refer to each other; until the
        // mount is whole, a failure must close the client's connection or
        // its thread would go on reconnecting to a server that is gone.
        let close_on_err = CloseOnErr(Some(client.clone()));
        let trans = Arc::new(Trans::open(
            client.clone(),
            items.clone(),
            cache.clone(),
            data.clone(),
            opts.trans,
        )?);
        locks.start(client.clone(), &trans);
        let l = Arc::downgrade(&locks);
        trans.set_on_commit(Box::new(move |seq| {
            if let Some(l) = l.upgrade() {
                l.trans_committed(seq);
            }
        }));
        let fs = Arc::new(Fs::new(
            items,
            trans,
            locks.clone(),
            client.clone(),
            cache.clone(),
            data,
            opts.fs.clone(),
            fsid,
        ));
        let committer = spawn_committer(fs.clone(), opts.commit_interval_ms);
        let scanner = OrphanScanner::start(fs.clone(), opts.orphan_scan_ms);
        close_on_err.disarm();
        Ok(Mount {
            fs,
            meta,
            cache,
            locks,
            client,
            server,
            quorum: quorum_on_err.disarm(),
            elected_dump,
            committer,
            scanner,
            unmounted: AtomicBool::new(false),
        })
    }

    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// This mount's id, as servers and fence agents know it.
    pub fn rid(&self) -> u64 {
        self.client.rid()
    }

    /// Something that prints this mount's locks, and the state of the
    /// server it runs, to stderr (for diagnosis: `kill -USR1` of a
    /// `scoutfs mount`).
    pub fn state_dumper(&self) -> impl Fn() + Send + Sync + 'static {
        let locks = self.locks.clone();
        let cache = self.cache.clone();
        let rid = self.rid();
        let elected = self.elected_dump.clone();
        move || {
            tracing::info!(
                "mount {rid:#018x} memory: item cache {}; block cache {} blocks; {} locks",
                locks.items().report(),
                cache.cached_blocks(),
                locks.count()
            );
            tracing::info!("mount {rid:#018x} locks:\n{}", locks.dump());
            if let Some(d) = &elected {
                d();
            }
        }
    }

    /// The in-process server of an `Alone` mount.
    pub fn server(&self) -> Option<&Server> {
        self.server.as_ref()
    }

    /// Replaces an `Alone` mount's server with a new one of the next term
    /// on the same address, as a failover does (without the election): the
    /// mount reconnects, sees a new server, reports its locks, and its
    /// unanswered requests are handled by the new server. For tests of
    /// recovery.
    pub fn restart_server(&mut self) -> Result<()> {
        let old = self
            .server
            .take()
            .ok_or_else(|| Error::Config("this mount runs no server".into()))?;
        let (addr, term) = (old.addr(), old.term());
        let store = old
            .stop()
            .ok_or_else(|| Error::Internal("the server thread failed".into()))?;
        let mut opts = ServerOptions::alone(term + 1);
        opts.alone = false;
        opts.data_dev = Some(self.fs.data.clone());
        self.server = Some(Server::start(store, addr, opts)?);
        Ok(())
    }

    pub fn locks(&self) -> &Arc<Locks> {
        &self.locks
    }

    /// The metadata block cache (its counters report reads, corruption...).
    pub fn block_cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    /// Drops every clean cached item and block: the next reads go to the
    /// devices (as after `echo 3 > /proc/sys/vm/drop_caches`).
    pub fn drop_caches(&self) {
        self.fs.drop_item_cache();
        self.cache.clear();
    }

    /// Unmounts: the last commit, farewell, and everything stopped.
    pub fn unmount(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.unmounted.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(s) = self.scanner.take() {
            s.stop();
        }
        // Operations waiting for offline data end: nothing will stage it
        // here any more.
        self.fs.waits.close(libc::ESHUTDOWN);
        self.fs.trans.stop_committer();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
        // The transaction's own error, not the errno a filesystem call
        // would return: the caller reports what the server said.
        let trans = &self.fs.trans;
        let res = match trans.is_dirty() {
            true => trans
                .commit()
                .map(drop)
                .map_err(|e| e.context("final commit")),
            false => Ok(()),
        };
        let (meta, rid) = (self.meta.clone(), self.client.rid());
        // This mount's own server (the Alone role) that ended will never
        // answer: nothing else serves this filesystem.
        let own_ended = || self.server.as_ref().is_some_and(|s| s.has_ended());
        let bye = self
            .client
            .farewell(FAREWELL_POLL, || {
                own_ended() || !is_recorded(meta.as_ref(), &self.cache, rid).unwrap_or(true)
            })
            .and_then(|()| match own_ended() {
                true => Err(Error::Shutdown {
                    errno: libc::EIO,
                    why: "this mount's server stopped before it answered the farewell".into(),
                }),
                false => Ok(()),
            });
        self.client.close();
        self.locks.stop();
        if let Some(s) = self.server.take() {
            s.stop();
        }
        let left = match self.quorum.take() {
            Some(q) => q.shutdown(),
            None => Ok(()),
        };
        res?;
        bye?;
        left
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!("unmount: {e}");
        }
    }
}

/// Finds the server in the quorum blocks, and tells this mount's quorum
/// member when the server there can't be reached.
struct Finder {
    meta: Arc<dyn BlockDev>,
    quorum: OnceLock<QuorumHandle>,
}

impl FindServer for Finder {
    fn find(&self) -> Option<SocketAddr> {
        find_server(self.meta.as_ref())
            .ok()
            .flatten()
            .map(|l| l.addr)
    }
    fn unreachable(&self, _addr: SocketAddr) {
        if let Some(q) = self.quorum.get() {
            q.server_unreachable();
        }
    }
}

/// Whether mount `rid` is recorded in the super block on the device now.
fn is_recorded(meta: &dyn BlockDev, cache: &BlockCache, rid: u64) -> Result<bool> {
    let sb = read_super(meta, true)?;
    Ok(btree::lookup(cache, &sb.mounted_clients, &mounted_client_key(rid))?.is_some())
}

/// The thread that frees orphans no mount has open ([`Fs::scan_orphans`]):
/// once at mount, then every `interval` ±20% (so that the mounts of a
/// cluster don't scan in step).
struct OrphanScanner {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl OrphanScanner {
    fn start(fs: Arc<Fs>, interval_ms: u64) -> Option<OrphanScanner> {
        let (stop, rx) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name("scoutfs-orphans".into())
            .spawn(move || {
                let mut rng = crate::rng::Rng::from_os();
                let mut delay = Duration::ZERO;
                let go_on = || matches!(rx.try_recv(), Err(TryRecvError::Empty));
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(delay) {
                    match fs.scan_orphans(&go_on) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("freed {n} orphaned inodes"),
                        Err(e) => tracing::warn!("orphan scan: {e}"),
                    }
                    let spread = interval_ms / 5;
                    let ms = interval_ms - spread + rng.below(2 * spread + 1);
                    delay = Duration::from_millis(ms);
                }
            })
            .ok()?;
        Some(OrphanScanner { stop, thread })
    }

    /// Ends the thread (a scan under way stops after the orphan at hand).
    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Leaves the quorum if the mount fails before it is whole.
struct QuorumOnErr(Option<QuorumDriver>);

impl QuorumOnErr {
    fn disarm(mut self) -> Option<QuorumDriver> {
        self.0.take()
    }
}

impl Drop for QuorumOnErr {
    fn drop(&mut self) {
        if let Some(q) = self.0.take() {
            if let Err(e) = q.shutdown() {
                tracing::warn!("leaving the quorum: {e}");
            }
        }
    }
}

struct CloseOnErr(Option<Arc<Client>>);

impl CloseOnErr {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnErr {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.close();
        }
    }
}

fn spawn_committer(fs: Arc<Fs>, interval_ms: u64) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("scoutfs-commit".into())
        .spawn(move || {
            while fs.trans.wait_commit_due(Duration::from_millis(interval_ms)) {
                if let Err(e) = fs.sync() {
                    tracing::error!("periodic commit failed: {e}");
                }
            }
        })
        .ok()
}
