//! Mounting: setup and teardown of everything a mount runs, in order.
//!
//! Setup: check the two devices belong together; open the metadata store
//! and start the server (until mounts elect it, in the same process, on a
//! loopback port of its own); make a random mount id (rid), or take the
//! caller's (`scoutfs mount` chooses it to record itself for the local
//! fence agent before any server can see the rid), and connect the client
//! over TCP, which greets; create the item cache, lock driver and first
//! transaction; free inodes an earlier mount left unlinked; start the
//! commit thread. Teardown reverses it: stop the commit thread, commit, say
//! farewell, close the connection, stop the lock worker, stop the server.

use crate::block::BlockCache;
use crate::client::Client;
use crate::commit::{check_pair, read_super, Store};
use crate::dev::BlockDev;
use crate::error::{Error, Result};
use crate::fence::{Fencer, FENCE_TIMEOUT_MS_DEFAULT};
use crate::fs::{Fs, FsOptions};
use crate::item::ItemCache;
use crate::locks::{Locks, LOCK_IDLE_MAX_DEFAULT};
use crate::msg::Request;
use crate::server::{Server, ServerStart};
use crate::trans::{Trans, TransLimits};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Options of a mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Commit the open transaction at least this often.
    pub commit_interval_ms: u64,
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
    /// refuses to fence rather than guess (see [`crate::fence`]).
    pub fence_command: Option<Vec<String>>,
    /// How long a fence command may run before it is killed and the fence
    /// counts as failed.
    pub fence_timeout_ms: u64,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            commit_interval_ms: 10_000,
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

/// A mounted filesystem: its server, client and fs.
pub struct Mount {
    fs: Arc<Fs>,
    cache: Arc<BlockCache>,
    locks: Arc<Locks>,
    client: Arc<Client>,
    server: Option<Server>,
    committer: Option<JoinHandle<()>>,
    unmounted: AtomicBool,
}

impl Mount {
    /// Mounts the filesystem on `meta` and `data`.
    pub fn open(
        meta: Arc<dyn BlockDev>,
        data: Arc<dyn BlockDev>,
        opts: &MountOptions,
    ) -> Result<Mount> {
        let rid = match opts.rid {
            Some(0) => return Err(Error::Invalid("mount id (rid) 0 is not valid".into())),
            Some(rid) => rid,
            None => new_rid(),
        };
        let msb = read_super(meta.as_ref(), true)?;
        let dsb = read_super(data.as_ref(), false)?;
        check_pair(&msb, &dsb, data.name())?;
        let store = Store::open(meta, opts.block_cache_blocks)?;
        let cache: Arc<BlockCache> = store.cache.clone();
        let fsid = store.sb.hdr.fsid.get();
        // Until mounts elect their server, every mount serves its
        // filesystem itself, on a loopback port of its own.
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = Server::start(store, loopback, ServerStart::Alone)?;
        let items = Arc::new(ItemCache::new(opts.item_cache_bytes));
        let locks = Locks::new(rid, items.clone(), opts.lock_idle_max);
        let client = Client::connect(server.addr(), fsid, rid, locks.clone())?;
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
        let orphans = fs
            .reclaim_orphans()
            .map_err(|e| Error::Invalid(format!("freeing orphaned inodes: {e}")))?;
        if orphans > 0 {
            eprintln!("scoutfs: freed {orphans} inodes left unlinked by an earlier mount");
        }
        let committer = spawn_committer(fs.clone(), opts.commit_interval_ms);
        close_on_err.disarm();
        Ok(Mount {
            fs,
            cache,
            locks,
            client,
            server: Some(server),
            committer,
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

    /// The server this mount runs, if it runs one.
    pub fn server(&self) -> Option<&Server> {
        self.server.as_ref()
    }

    /// Replaces this mount's server with a new one of the next term on the
    /// same address, as a failover does (without the election): the mount
    /// reconnects, sees a new server, reports its locks, and its unanswered
    /// requests are handled by the new server. For tests of recovery.
    pub fn restart_server(&mut self) -> Result<()> {
        let old = self
            .server
            .take()
            .ok_or_else(|| Error::Invalid("this mount runs no server".into()))?;
        let (addr, term) = (old.addr(), old.term());
        let store = old
            .stop()
            .ok_or_else(|| Error::Invalid("the server thread failed".into()))?;
        let how = ServerStart::TakeOver { term: term + 1 };
        self.server = Some(Server::start(store, addr, how)?);
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
        self.fs.trans.stop_committer();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
        let res = self
            .fs
            .sync()
            .map_err(|e| Error::Invalid(format!("final commit: {e}")));
        let bye = self.client.call(Request::Farewell);
        self.client.close();
        self.locks.stop();
        if let Some(s) = self.server.take() {
            s.stop();
        }
        res?;
        bye.map(|_| ())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("scoutfs: unmount: {e}");
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
                    eprintln!("scoutfs: periodic commit failed: {e}");
                }
            }
        })
        .ok()
}
