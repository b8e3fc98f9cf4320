//! The server: the one place that changes the super block.
//!
//! It records each mount's log tree, hands out space and inode numbers,
//! grants cluster locks, and answers with the roots of its last written
//! super block. It runs on its own thread and processes messages in arrival
//! order; every request that changes persistent state is committed (super
//! block written and flushed) before its response is sent, so a response
//! always describes durable state.
//!
//! Log tree lifecycle (per mount, keyed by rid and nr): GET_LOG_TREES finds
//! or creates the mount's open log tree, returns the blocks and extents the
//! mount freed in its last committed transaction to the server's allocators
//! (they are durable now), refills its metadata alloc list and data extents,
//! and opens a transaction with a fresh seq. COMMIT_LOG_TREES records the
//! mount's new roots, closing the transaction, and opens the next one the
//! same way, in one server commit, answering with it. Both are idempotent
//! against resends: an open transaction is returned as it is, and a resent
//! commit that was recorded already is answered with the transaction open
//! now.
//!
//! Seqs: one counter (`super.seq`) supplies transaction seqs and lock write
//! seqs. At start it is raised above every seq recorded in the log trees.
//!
//! Transport: mounts connect over TCP (`net::tcp`, with the delivery rules of
//! `net::stream`); a greeting records the mount in `mounted_clients` before it is
//! answered.
//!
//! Starting ([`ServerOptions`]): the mounts recorded in `mounted_clients`
//! are the ones that may still run. A server elected in a cluster first
//! reclaims the mounts its starter fenced (old leaders), then waits for the
//! rest to greet and report their locks (LOCK_RECOVER) before it grants
//! anything; a mount that has not recovered within `recovery_timeout` is
//! fenced. When no mount is recorded (or the server is told it is `alone`,
//! as the in-process mount of tests and tools is), every log tree is a
//! departed mount's and is merged into `fs_root` in batches of commits,
//! their space returned.
//!
//! While it runs, a mount whose connection is gone for longer than
//! `reconnect_timeout` is fenced. A fenced mount is reclaimed: its locks
//! dropped, its open transaction's allocators returned, its log tree kept
//! (its committed items stay visible until a merge), and its
//! `mounted_clients` item deleted last. A fence that fails ends the server
//! (the `on_exit` report): another election follows, and the next server
//! derives the same fence from the persistent records.
//!
//! Farewell: a non-quorum mount's farewell is answered at once, after its
//! reclaim. A quorum member's is held while answering it would leave too
//! few quorum members mounted to elect a server (no more than the votes
//! needed), unless every remaining mount is a quorum member that has said
//! farewell too and has recovered its locks from this server: then they
//! leave together. So the last quorum members never strand each other or
//! the non-quorum mounts.
//!
//! Merging (see [`ServerOptions::merge_interval`]): log trees that hold
//! items are merged into `fs_root` while mounts run. A *round* first
//! finalizes every open tree that holds items: each such mount is asked
//! to commit (SYNC_LOG_TREES), and as its commit is recorded its tree is
//! finalized and its next transaction opens in a new tree that takes over
//! its allocators. Lock grants and invalidations for a mount the round
//! waits on are held until its tree is finalized: otherwise a tree being
//! finalized could gain an item newer than one another mount already
//! wrote in its new tree, and a deletion merged from the first would
//! uncover the older version in the second. Items written after a mount's
//! tree is finalized carry seqs greater than every item in the round's
//! trees (a new transaction's seq, or a lock granted later), so every open
//! tree's versions win over the merged ones. When every tree is
//! finalized, the finalized trees are merged a batch at a time (newest
//! version of each key; a deletion deletes), between the server's other
//! work; then they leave logs_root together, in one commit, for the
//! freeing list (`log_merge`), and each one's blocks are freed in a commit
//! of its own. A merge interrupted by failover is done again by the next
//! server after its own round (merging is idempotent: the trees stay
//! listed until all their items are in); a freeing interrupted goes on
//! under the next server.
//!
//! Space: the server keeps a reserve of its free metadata ([`meta_reserve`])
//! for transactions that free space. A mount's `meta_avail` is flagged
//! LOW when the pool is down to it (its allocating operations then fail
//! with ENOSPC) and its `data_avail` when the data pool could not refill
//! it; low metadata also starts a merge, which drops deletion items and
//! frees the merged trees' blocks.
//!
//! Not yet here (later issues): batching of commits across requests.

use crate::cluster::fence::{FenceHandle, FenceOutcome, FenceReason, FenceRequest, Fencer};
use crate::cluster::lock::server::{LockServer, ServerOut};
use crate::cluster::lock::LockMsg;
use crate::cluster::net::msg::{
    ClientResponse, Request, Response, ServerRequest, StatfsInfo, WaitingBlock,
};
use crate::cluster::net::stream::ConnId;
use crate::cluster::net::tcp::{ServerDeliver, ServerLink};
use crate::cluster::net::wire::{GREETING_FLAG_FAREWELL, GREETING_FLAG_QUORUM};
use crate::cluster::omap::{OmapAnswer, OmapServer};
use crate::error::{CorruptKind, Error, Result};
use crate::store::alloc::extent;
use crate::store::btree;
use crate::store::commit::{grow_devices, meta_fill_target, Store, Txn};
use crate::store::dev::BlockDev;
use crate::store::forest::{self, log_roots};
use crate::types::Rid;
use crate::types::Roots;
use scoutfs_format::consts::ALLOC_FLAG_LOW;
use scoutfs_format::key::zone;
use scoutfs_format::log_trees::{
    LogTrees, MountedClientVal, LOG_TREES_FINALIZED, MOUNTED_CLIENT_QUORUM,
};
use scoutfs_format::super_block::InetAddr;
use scoutfs_format::{AllocListHead, AllocRoot, BtreeRoot, Key, SuperBlock};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, IntoBytes};

/// Data blocks a mount's data_avail is filled to: an eighth of the device,
/// at most 4 GiB, or less when the pool runs low (see `refill`); refilled
/// when below a quarter of that.
pub fn data_fill_target(sb: &SuperBlock) -> u64 {
    (sb.total_data_blocks.get() / 8).clamp(256, 1 << 20)
}

/// The smallest share of a draining data pool a fill asks for (1 MiB).
const DATA_SHARE_MIN: u64 = 256;

/// The longest a mount's transaction waits for data that other mounts were
/// asked to give back.
const DATA_WAIT: Duration = Duration::from_secs(2);

/// A mount's opened transaction, not yet answered, waiting for the data
/// other mounts give back (see `answer_trans`).
struct DataWaiter {
    rid: u64,
    id: u64,
    waiting_on: BTreeSet<u64>,
    deadline: Instant,
}

/// A GET_LAST_SEQ request waiting for the transactions that were open
/// when it came to commit (see `last_seq_request`).
struct LastSeqWaiter {
    rid: u64,
    id: u64,
    /// The greatest open transaction seq when it came.
    target: u64,
    deadline: Instant,
}

/// A DATA_WAITING or DATA_WAIT_ERR request being answered: the mounts
/// asked, and what they answered so far.
struct WaitRound {
    rid: u64,
    id: u64,
    /// (mount, request id) of the mounts asked and not yet answered.
    pending: BTreeSet<(u64, u64)>,
    /// DATA_WAITING: the union so far and how many to answer.
    listing: Option<(WaitUnion, usize)>,
    /// DATA_WAIT_ERR: the waiters failed so far.
    failed: u64,
    deadline: Instant,
}

/// Waited-for blocks by (ino, iblock), with the ops of their waiters.
type WaitUnion = BTreeMap<(u64, u64), u8>;

/// How long the server waits for the mounts' answers to DATA_WAITING and
/// DATA_WAIT_ERR; a mount that does not answer in time (being cut off) is
/// left out of the answer.
const WAIT_ROUND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a GET_LAST_SEQ waits for the open transactions to commit
/// before it is answered with the seq they allow (a mount that does not
/// commit, being cut off, only holds the answer back, never wrong).
const LAST_SEQ_WAIT: Duration = Duration::from_secs(5);

/// How long a server waits for the mounts of an earlier server to greet
/// and report their locks before it fences them (the original's 30 s).
pub const RECOVERY_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// How long a connected mount may stay disconnected before it is fenced
/// (the original's 20 s).
pub const RECONNECT_TIMEOUT_MS_DEFAULT: u64 = 20_000;
/// How often the server looks at its timers and fence requests.
const TICK_MS: u64 = 100;
/// How long log trees holding items may go unmerged (see
/// [`ServerOptions::merge_interval`]).
pub const MERGE_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// A log tree this tall is merged without waiting for the interval.
const MERGE_HEIGHT: u8 = 3;
/// Items read from the finalized trees per merge step.
const MERGE_STEP_ITEMS: usize = 4096;
/// Items applied to fs_root between checks of the commit's space.
const MERGE_CHUNK_ITEMS: usize = 256;

/// Metadata blocks of the free pool kept for transactions that free space
/// (see the module comment, "Space"): one full avail list per mounted
/// mount, and one for the server's own commits and merges.
pub fn meta_reserve(sb: &SuperBlock, mounts: usize) -> u64 {
    meta_fill_target(sb) * (1 + mounts.max(1) as u64)
}

/// Free metadata blocks in the server's pool (the two extent trees).
fn meta_pool(sb: &SuperBlock) -> u64 {
    sb.meta_alloc[0].total_len.get() + sb.meta_alloc[1].total_len.get()
}

fn log_trees_key(rid: u64, nr: u64) -> Key {
    Key::new(zone::LOG_TREES, rid, 0, nr, 0, 0)
}

/// The key, in `log_merge`, of a merged log tree whose blocks are still to
/// be freed.
fn freeing_key(rid: u64, nr: u64) -> Key {
    Key::new(zone::LOG_MERGE_FREEING, rid, 0, nr, 0, 0)
}

/// The first merged log tree still to be freed, if any.
fn first_freeing(store: &Store) -> Result<Option<LogTrees>> {
    let (lo, hi) = (freeing_key(0, 0), freeing_key(u64::MAX, u64::MAX));
    let mut found = None;
    btree::for_each_range(store.cache.as_ref(), &store.sb.log_merge, &lo, &hi, |it| {
        found = Some(it.val.clone());
        Ok(false)
    })?;
    found
        .map(|v| {
            LogTrees::decode(&v).map_err(|e| {
                Error::corrupt(
                    CorruptKind::ItemInvalid,
                    0,
                    0,
                    format!("freeing log trees item: {e}"),
                )
            })
        })
        .transpose()
}

/// The key of mount `rid`'s item in `mounted_clients`.
pub(crate) fn mounted_client_key(rid: u64) -> Key {
    Key::new(zone::MOUNTED_CLIENT, rid, 0, 0, 0, 0)
}

/// How a server runs.
pub struct ServerOptions {
    /// The term it serves: the quorum's election term (clients compare it
    /// to the last server's to know they must recover their locks).
    pub term: u64,
    /// No other mount of the filesystem can be running (the in-process
    /// mount of tests and tools): every recorded mount is a departed one,
    /// reclaimed, and every log tree is merged.
    pub alone: bool,
    /// Mounts the starter already fenced (old leaders), reclaimed first.
    pub fenced: Vec<u64>,
    /// Runs fence requests.
    pub fencer: Fencer,
    pub recovery_timeout: Duration,
    pub reconnect_timeout: Duration,
    /// Votes an election needs (for the farewell rules); 0 when there is no
    /// quorum (`alone`).
    pub votes_needed: usize,
    /// Called once, on the server thread, if the server ends on its own (a
    /// fence failed): the reason. Not called when it is stopped.
    pub on_exit: Option<Box<dyn FnOnce(Error) + Send>>,
    /// How long the mounts' log trees may go unmerged while they hold
    /// items (a tree of height 3 or more, or metadata space in the
    /// reserve, starts a merge at once).
    pub merge_interval: Duration,
    /// The data device, which a growth of the filesystem
    /// (RESIZE_DEVICES) writes the new size to; without it growth is
    /// refused.
    pub data_dev: Option<Arc<dyn BlockDev>>,
}

impl ServerOptions {
    /// A server that is alone (see [`ServerOptions::alone`]) at `term`.
    pub fn alone(term: u64) -> ServerOptions {
        ServerOptions {
            term,
            alone: true,
            fenced: Vec::new(),
            fencer: Fencer::new(None, Duration::from_secs(1)),
            recovery_timeout: Duration::from_millis(RECOVERY_TIMEOUT_MS_DEFAULT),
            reconnect_timeout: Duration::from_millis(RECONNECT_TIMEOUT_MS_DEFAULT),
            votes_needed: 0,
            on_exit: None,
            merge_interval: Duration::from_millis(MERGE_INTERVAL_MS_DEFAULT),
            data_dev: None,
        }
    }
}

enum Event {
    /// Mount `rid` greeted on `conn` (`client_term`: the term of the server
    /// it knew, 0 on its first connection): record it, then accept.
    Greeting {
        conn: ConnId,
        rid: u64,
        client_term: u64,
        flags: u64,
    },
    Request {
        rid: u64,
        id: u64,
        req: Request,
    },
    Response {
        rid: u64,
        id: u64,
        resp: ClientResponse,
    },
    /// Print the lock server's state (for diagnosis).
    Dump,
    Shutdown,
}

/// Hands what the network delivers to the server thread, in arrival order.
struct ToThread(Mutex<Sender<Event>>);

impl ToThread {
    fn send(&self, ev: Event) {
        let _ = self.0.lock().unwrap_or_else(|p| p.into_inner()).send(ev);
    }
}

impl ServerDeliver for ToThread {
    fn greeting(&self, conn: ConnId, rid: u64, client_term: u64, flags: u64) {
        self.send(Event::Greeting {
            conn,
            rid,
            client_term,
            flags,
        });
    }
    fn request(&self, rid: u64, id: u64, req: Request) {
        self.send(Event::Request { rid, id, req });
    }
    fn response(&self, rid: u64, id: u64, resp: ClientResponse) {
        self.send(Event::Response { rid, id, resp });
    }
}

/// A handle to the running server thread and its listening socket.
pub struct Server {
    tx: Sender<Event>,
    link: Arc<ServerLink>,
    term: u64,
    thread: Option<JoinHandle<Store>>,
}

impl Server {
    /// Starts the server on an open store, listening on `addr` (port 0
    /// picks a free port; see `addr`).
    pub fn start(store: Store, addr: SocketAddr, mut opts: ServerOptions) -> Result<Server> {
        let (tx, rx) = channel();
        let fsid = store.sb.hdr.fsid.get();
        let term = opts.term;
        let on_exit = opts.on_exit.take();
        let deliver = Arc::new(ToThread(Mutex::new(tx.clone())));
        let key = crate::cluster::auth::ClusterKey::of(&store.sb);
        let link = Arc::new(ServerLink::listen(addr, (fsid, key), term, deliver)?);
        let l2 = link.clone();
        let thread = std::thread::Builder::new()
            .name("scoutfs-server".into())
            .spawn(move || {
                let mut st = State::new(store, l2, opts);
                match st.run(rx) {
                    Ok(()) => {}
                    Err(why) => {
                        tracing::error!("server of term {term} stops: {why}");
                        st.link.close();
                        if let Some(f) = on_exit {
                            f(why);
                        }
                    }
                }
                st.store
            })
            .map_err(|e| Error::io("spawning the server thread", e))?;
        Ok(Server {
            tx,
            link,
            term,
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.link.addr()
    }

    /// The term this server serves.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The server's network end (fault injection and counters).
    pub fn link(&self) -> &ServerLink {
        &self.link
    }

    /// Prints the server's lock state and what it waits for to stderr.
    pub fn dump(&self) {
        let _ = self.tx.send(Event::Dump);
    }

    /// Stops the server and returns its store.
    /// Whether the server thread has ended (stopped, or failed).
    pub fn has_ended(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    pub fn stop(mut self) -> Option<Store> {
        self.link.close();
        let _ = self.tx.send(Event::Shutdown);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.link.close();
        let _ = self.tx.send(Event::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the server knows of a recorded mount.
#[derive(Clone, Copy, Debug)]
struct Mounted {
    quorum: bool,
    /// Its last address (for fence requests).
    addr: Option<SocketAddr>,
}

struct State {
    store: Store,
    locks: LockServer,
    link: Arc<ServerLink>,
    /// Server requests awaiting a client's response: (rid, id).
    asked: BTreeSet<(u64, u64)>,
    seq: u64,
    term: u64,
    /// The mounts recorded in `mounted_clients`.
    mounted: BTreeMap<u64, Mounted>,
    /// Held farewells of quorum members: rid to request id.
    farewells: BTreeMap<u64, u64>,
    /// The held farewells last logged.
    farewells_logged: Vec<u64>,
    /// When each mounted rid was first seen without a connection.
    absent: HashMap<u64, Instant>,
    fencing: HashMap<u64, FenceHandle>,
    fencer: Fencer,
    recovery_deadline: Instant,
    reconnect_timeout: Duration,
    votes_needed: usize,
    /// Why starting failed: the server ends at once.
    start_error: Option<Error>,
    /// A failure that ends the server: corruption found where it must
    /// write (it can commit nothing more).
    fatal: Option<Error>,
    /// The finalize round under way: mounts whose open log tree must still
    /// be finalized, and the lock messages held for them meanwhile.
    round: Option<BTreeMap<u64, Vec<ServerOut>>>,
    /// The merge under way: the finalized trees and the next key.
    merge: Option<Merge>,
    /// When the last merge ended (or the server started).
    last_merge: Instant,
    merge_interval: Duration,
    /// Open-inode map rounds under way.
    omap: OmapServer,
    data_dev: Option<Arc<dyn BlockDev>>,
    /// Mounts whose transaction waits for data other mounts give back.
    data_waiters: Vec<DataWaiter>,
    /// GET_LAST_SEQ requests waiting for open transactions to commit.
    last_seq_waiters: Vec<LastSeqWaiter>,
    /// DATA_WAITING and DATA_WAIT_ERR requests waiting for the mounts.
    wait_rounds: Vec<WaitRound>,
}

/// A merge of finalized log trees into fs_root, a step at a time.
struct Merge {
    /// The finalized trees being merged (freed once their items are in).
    inputs: Vec<LogTrees>,
    /// The next key to merge from; None once every item is in fs_root.
    next: Option<Key>,
}

impl State {
    fn new(store: Store, link: Arc<ServerLink>, opts: ServerOptions) -> State {
        let mut seq = store.sb.seq.get();
        if let Ok(lts) = log_roots(store.cache.as_ref(), &store.sb.logs_root) {
            for lt in lts {
                seq = seq.max(lt.max_item_seq.get()).max(lt.get_trans_seq.get());
            }
        }
        let mut st = State {
            store,
            locks: LockServer::new(),
            link,
            asked: BTreeSet::new(),
            seq,
            term: opts.term,
            mounted: BTreeMap::new(),
            farewells: BTreeMap::new(),
            farewells_logged: Vec::new(),
            absent: HashMap::new(),
            fencing: HashMap::new(),
            fencer: opts.fencer,
            recovery_deadline: Instant::now() + opts.recovery_timeout,
            reconnect_timeout: opts.reconnect_timeout,
            votes_needed: opts.votes_needed,
            start_error: None,
            fatal: None,
            round: None,
            merge: None,
            last_merge: Instant::now(),
            merge_interval: opts.merge_interval,
            omap: OmapServer::new(),
            data_dev: opts.data_dev,
            data_waiters: Vec::new(),
            last_seq_waiters: Vec::new(),
            wait_rounds: Vec::new(),
        };
        if let Err(e) = st.begin(opts.alone, &opts.fenced) {
            // Not knowing who is mounted, it must not serve at all.
            st.start_error = Some(e.context("starting"));
        }
        st
    }

    /// Reclaims the departed and fenced mounts, then merges every log tree
    /// if nothing is mounted, or recovers the locks of the mounts that are.
    fn begin(&mut self, alone: bool, fenced: &[u64]) -> Result<()> {
        self.mounted = self.read_mounted()?;
        let gone: Vec<u64> = if alone {
            self.mounted.keys().copied().collect()
        } else {
            fenced
                .iter()
                .copied()
                .filter(|r| self.mounted.contains_key(r))
                .collect()
        };
        for rid in gone {
            self.reclaim(rid)?;
        }
        self.finalize_unrecorded()?;
        if self.mounted.is_empty() {
            // Nothing is mounted, so every log tree was left by a mount
            // that is gone: merge them all into fs_root. A merge that
            // fails leaves the trees where every mount still reads them.
            if let Err(e) = self.merge_all_now() {
                tracing::warn!("merging departed mounts' log trees: {e}");
                self.merge = None;
            }
            Ok(())
        } else {
            self.locks = LockServer::recovering(self.mounted.keys().map(|&r| Rid(r)));
            // Trees an earlier server merged but did not free are freed
            // while the mounts recover (their items are all in fs_root).
            if first_freeing(&self.store)?.is_some() {
                self.merge = Some(Merge {
                    inputs: Vec::new(),
                    next: None,
                });
            }
            Ok(())
        }
    }

    /// The mounts recorded in the super block.
    fn read_mounted(&self) -> Result<BTreeMap<u64, Mounted>> {
        let start = mounted_client_key(0);
        let end = mounted_client_key(u64::MAX);
        let mut found = BTreeMap::new();
        btree::for_each_range(
            self.store.cache.as_ref(),
            &self.store.sb.mounted_clients,
            &start,
            &end,
            |it| {
                let val = MountedClientVal::read_from_prefix(&it.val)
                    .map(|(v, _)| v)
                    .unwrap_or_default();
                found.insert(
                    it.key.first,
                    Mounted {
                        quorum: val.flags & MOUNTED_CLIENT_QUORUM != 0,
                        addr: val.addr.to_socket(),
                    },
                );
                Ok(true)
            },
        )?;
        Ok(found)
    }

    /// Finalizes the open log trees of mounts that are not recorded (a
    /// tree left behind by a mount whose record is gone): nothing will
    /// commit to them again, and their items wait for a merge.
    fn finalize_unrecorded(&mut self) -> Result<()> {
        let lts = log_roots(self.store.cache.as_ref(), &self.store.sb.logs_root)?;
        for mut lt in lts {
            if lt.is_finalized() || self.mounted.contains_key(&lt.rid.get()) {
                continue;
            }
            let mut txn = self.store.begin();
            reclaim_freed(&mut txn, &mut lt)?;
            return_avail(&mut txn, &mut lt)?;
            lt.flags = (lt.flags.get() | LOG_TREES_FINALIZED).into();
            lt.finalize_seq = self.next_seq().into();
            let key = log_trees_key(lt.rid.get(), lt.nr.get());
            btree::insert(&mut txn.w, &mut txn.sb.logs_root, &key, 0, 0, lt.as_bytes())?;
            self.commit(txn)?;
        }
        Ok(())
    }

    /// Merges every finalized log tree into fs_root before returning
    /// (at start, when no mount runs).
    fn merge_all_now(&mut self) -> Result<()> {
        self.start_merge()?;
        while self.merge.is_some() {
            self.merge_step()?;
        }
        Ok(())
    }

    /// Whether the log trees should be merged now: a finalized tree waits
    /// (its mount left), or open trees hold items and either the merge
    /// interval has passed, one of them grew tall, or the free metadata
    /// is down to the reserve (merging drops deletion items and the blocks
    /// of the merged trees).
    fn merge_due(&self) -> Result<bool> {
        let lts = log_roots(self.store.cache.as_ref(), &self.store.sb.logs_root)?;
        // A finalized tree waits, or merged trees are left to free (a
        // merge abandoned after its trees left logs_root).
        if lts.iter().any(|lt| lt.is_finalized()) || first_freeing(&self.store)?.is_some() {
            return Ok(true);
        }
        let holding: Vec<&LogTrees> = lts.iter().filter(|lt| !lt.item_root.is_empty()).collect();
        if holding.is_empty() {
            return Ok(false);
        }
        let sb = &self.store.sb;
        Ok(self.last_merge.elapsed() >= self.merge_interval
            || holding.iter().any(|lt| lt.item_root.height >= MERGE_HEIGHT)
            || meta_pool(sb) <= meta_reserve(sb, self.mounted.len()))
    }

    /// Starts a finalize round: every mount whose open log tree holds
    /// items is asked to commit, and its tree is finalized as that commit
    /// is recorded (see `commit_log_trees`). Lock grants and invalidations
    /// for a mount are held until its tree is finalized, so no tree that
    /// will be merged gains an item newer than one in a tree that stays
    /// open. When every such tree is finalized, the merge starts.
    fn start_round(&mut self) -> Result<()> {
        self.finalize_unrecorded()?;
        let lts = log_roots(self.store.cache.as_ref(), &self.store.sb.logs_root)?;
        let mut waiting = BTreeMap::new();
        for lt in lts {
            let rid = lt.rid.get();
            if !lt.is_finalized() && !lt.item_root.is_empty() && self.mounted.contains_key(&rid) {
                waiting.insert(rid, Vec::new());
            }
        }
        for &rid in waiting.keys() {
            match self.link.request(rid, &ServerRequest::SyncLogTrees) {
                Ok(id) => {
                    self.asked.insert((rid, id));
                }
                // Not connected: it commits when it is back, or is fenced
                // and reclaimed (which finalizes its tree).
                Err(e) => tracing::debug!("asking {rid:#x} to commit: {e}"),
            }
        }
        tracing::debug!(mounts = waiting.len(), "finalize round");
        self.round = Some(waiting);
        self.round_progress()
    }

    /// Ends the round once no mount's tree is left to finalize, and starts
    /// the merge.
    fn round_progress(&mut self) -> Result<()> {
        if self.round.as_ref().is_some_and(|w| w.is_empty()) {
            self.round = None;
            self.start_merge()?;
        }
        Ok(())
    }

    /// Starts merging every finalized log tree.
    fn start_merge(&mut self) -> Result<()> {
        let inputs: Vec<LogTrees> = log_roots(self.store.cache.as_ref(), &self.store.sb.logs_root)?
            .into_iter()
            .filter(|lt| lt.is_finalized())
            .collect();
        if inputs.is_empty() {
            // Trees merged by an earlier server may still be freed.
            if first_freeing(&self.store)?.is_some() {
                self.merge = Some(Merge { inputs, next: None });
            } else {
                self.last_merge = Instant::now();
            }
            return Ok(());
        }
        tracing::debug!(trees = inputs.len(), "merging finalized log trees");
        self.merge = Some(Merge {
            inputs,
            next: Some(Key::MIN),
        });
        Ok(())
    }

    /// One step of the merge: the next batch of items into fs_root (the
    /// newest version of each key across the finalized trees; a deletion
    /// deletes), in as many commits as its space needs; once every item is
    /// in, all the merged trees moved from logs_root to the freeing list in
    /// one commit; then one merged tree's blocks freed. Readers see the
    /// same items throughout: the merged trees stay listed until the items
    /// are all in, and every version in fs_root is one a listed tree also
    /// holds.
    fn merge_step(&mut self) -> Result<()> {
        let Some(m) = self.merge.as_mut() else {
            return Ok(());
        };
        let hi = Key::new(zone::LOG_TREES, 0, 0, 0, 0, 0).dec();
        if let Some(lo) = m.next {
            let trees: Vec<BtreeRoot> = m.inputs.iter().map(|lt| lt.item_root).collect();
            let mut batch = Vec::new();
            forest::merge_versions(self.store.cache.as_ref(), &trees, &lo, &hi, |k, v| {
                batch.push((*k, v.clone()));
                Ok(batch.len() < MERGE_STEP_ITEMS)
            })?;
            let next = match batch.last() {
                Some((k, _)) if batch.len() >= MERGE_STEP_ITEMS && *k < hi => Some(k.inc()),
                _ => None,
            };
            let mut txn = self.store.begin();
            for chunk in batch.chunks(MERGE_CHUNK_ITEMS) {
                if txn.needs_commit() {
                    self.commit(txn)?;
                    txn = self.store.begin();
                }
                let puts: Vec<btree::Item> = chunk
                    .iter()
                    .filter(|(_, v)| !v.deleted)
                    .map(|(k, v)| btree::Item {
                        key: *k,
                        seq: v.seq,
                        flags: 0,
                        val: v.val.clone(),
                    })
                    .collect();
                btree::insert_list(&mut txn.w, &mut txn.sb.fs_root, &puts)?;
                for (k, _) in chunk.iter().filter(|(_, v)| v.deleted) {
                    btree::delete(&mut txn.w, &mut txn.sb.fs_root, k)?;
                }
            }
            self.commit(txn)?;
            if let Some(m) = self.merge.as_mut() {
                m.next = next;
            }
            return Ok(());
        }
        if !m.inputs.is_empty() {
            // Every item is in: the merged trees leave logs_root together,
            // in one commit, onto the freeing list. Dropped one at a time,
            // a tree holding an old version could stay listed after the
            // tree holding its deletion was gone, and readers (and the next
            // merge) would see the old version again.
            let inputs = std::mem::take(&mut m.inputs);
            let mut txn = self.store.begin();
            let mut delta = 0i64;
            for input in &inputs {
                let key = log_trees_key(input.rid.get(), input.nr.get());
                let Some(val) = btree::lookup(&txn.w, &txn.sb.logs_root, &key)? else {
                    continue;
                };
                // The record as it stands (a reclaim may have changed its
                // allocators since the merge began).
                let lt = LogTrees::decode(&val.val).map_err(|e| {
                    Error::corrupt(
                        CorruptKind::ItemInvalid,
                        0,
                        0,
                        format!("log trees item: {e}"),
                    )
                })?;
                btree::delete(&mut txn.w, &mut txn.sb.logs_root, &key)?;
                let fk = freeing_key(lt.rid.get(), lt.nr.get());
                btree::insert(&mut txn.w, &mut txn.sb.log_merge, &fk, 0, 0, lt.as_bytes())?;
                delta += lt.inode_count_delta();
            }
            let count = txn.sb.inode_count.get() as i64 + delta;
            txn.sb.inode_count = (count.max(0) as u64).into();
            return self.commit(txn);
        }
        // Then each merged tree's blocks are freed, one tree a commit.
        let Some(mut lt) = first_freeing(&self.store)? else {
            self.merge = None;
            self.last_merge = Instant::now();
            return Ok(());
        };
        let mut txn = self.store.begin();
        reclaim_freed(&mut txn, &mut lt)?;
        return_avail(&mut txn, &mut lt)?;
        btree::free_tree(&mut txn.w, &mut lt.item_root)?;
        btree::delete(
            &mut txn.w,
            &mut txn.sb.log_merge,
            &freeing_key(lt.rid.get(), lt.nr.get()),
        )?;
        self.commit(txn)
    }

    /// Runs one merge step; a step that fails abandons the merge (its
    /// trees stay listed, and a later round merges them again).
    fn merge_step_or_abandon(&mut self) -> Result<()> {
        if let Err(e) = self.merge_step() {
            tracing::warn!("merging log trees: {e}");
            self.merge = None;
            self.last_merge = Instant::now();
            if e.corruption().is_some() {
                return Err(e.context("merging log trees"));
            }
        }
        Ok(())
    }

    /// Handles events until shutdown (Ok) or a failure that ends the
    /// server (Err: why).
    fn run(&mut self, rx: Receiver<Event>) -> Result<()> {
        if let Some(why) = self.start_error.take() {
            return Err(why);
        }
        let mut next_tick = Instant::now();
        loop {
            if let Some(why) = self.fatal.take() {
                return Err(why);
            }
            // A merge goes on whenever no message waits (and at each tick).
            let wait = if self.merge.is_some() {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            let ev = match rx.recv_timeout(wait) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            match ev {
                None if self.merge.is_some() => self.merge_step_or_abandon()?,
                None => {}
                Some(Event::Shutdown) => return Ok(()),
                Some(Event::Dump) => tracing::info!(
                    "server of term {}: mounted {:?}, held farewells {:?}, \
                     asked {:?}, fencing {:?}\n{:#?}",
                    self.term,
                    self.mounted,
                    self.farewells,
                    self.asked,
                    self.fencing.keys().collect::<Vec<_>>(),
                    self.locks
                ),
                Some(Event::Greeting {
                    conn,
                    rid,
                    client_term,
                    flags,
                }) => {
                    self.greeting(conn, rid, client_term, flags);
                    if let Some(why) = self.fatal.take() {
                        return Err(why);
                    }
                }
                Some(Event::Request {
                    rid,
                    id,
                    req: Request::Lock(m),
                }) => self.lock_request(rid, id, m),
                Some(Event::Request {
                    rid,
                    id,
                    req: Request::Farewell,
                }) => {
                    if !self.mounted.contains_key(&rid) {
                        // Already reclaimed (a resend to a new server).
                        self.link.respond(rid, id, &Response::Done);
                        self.link.forget_when_gone(rid);
                    } else {
                        self.farewells.insert(rid, id);
                    }
                    self.farewells_due().map_err(|e| e.context("farewell"))?;
                }
                Some(Event::Request {
                    rid,
                    id,
                    req: Request::OpenInoMap { group },
                }) => self.omap_request(rid, id, group),
                Some(Event::Request {
                    rid,
                    id,
                    req: Request::GetLastSeq,
                }) => self.last_seq_request(rid, id)?,
                Some(Event::Request {
                    rid,
                    id,
                    req: req @ (Request::DataWaiting(_) | Request::DataWaitErr(_)),
                }) => self.wait_round(rid, id, req),
                Some(Event::Request {
                    rid,
                    id,
                    req: Request::WaitersNew(ws),
                }) => {
                    // Every other mount hears of them, for its followers;
                    // their answers are not waited for.
                    self.link.respond(rid, id, &Response::Done);
                    let tell = ServerRequest::WaitersNew(ws);
                    let others: Vec<u64> =
                        self.mounted.keys().copied().filter(|&r| r != rid).collect();
                    for r in others {
                        if let Err(e) = self.link.request(r, &tell) {
                            tracing::debug!("telling {r:#x} of new waiters: {e}");
                        }
                    }
                }
                Some(Event::Request { rid, id, req }) => {
                    let opens = matches!(req, Request::GetLogTrees | Request::CommitLogTrees(_));
                    let commits = matches!(req, Request::CommitLogTrees(_));
                    let resp = self.request(rid, req).unwrap_or_else(|e| {
                        tracing::warn!("request from {rid:#x} failed: {e}");
                        Response::Error(e.errno())
                    });
                    if opens {
                        self.answer_trans(rid, id, resp)?;
                    } else {
                        self.link.respond(rid, id, &resp);
                    }
                    if commits {
                        self.data_waiters_progress(Some(rid))?;
                        self.last_seq_progress()?;
                    }
                }
                Some(Event::Response { rid, id, resp }) => self.response(rid, id, resp),
            }
            if Instant::now() >= next_tick {
                self.tick()?;
                next_tick = Instant::now() + Duration::from_millis(TICK_MS);
            }
        }
    }

    /// Timers: fence the mounts that missed recovery or stayed away, and
    /// reclaim the ones whose fence finished.
    fn tick(&mut self) -> Result<()> {
        if !self.data_waiters.is_empty() {
            self.data_waiters_progress(None)?;
        }
        if !self.last_seq_waiters.is_empty() {
            self.last_seq_progress()?;
        }
        if !self.wait_rounds.is_empty() {
            self.wait_rounds_progress(None);
        }
        let now = Instant::now();
        if now >= self.recovery_deadline {
            for Rid(rid) in self.locks.recovery_pending() {
                self.fence(rid, FenceReason::ClientRecovery)?;
            }
        }
        let pending: BTreeSet<u64> = self
            .locks
            .recovery_pending()
            .into_iter()
            .map(|r| r.0)
            .collect();
        let rids: Vec<u64> = self.mounted.keys().copied().collect();
        for rid in rids {
            if pending.contains(&rid) || self.fencing.contains_key(&rid) {
                continue;
            }
            if self.link.is_ready(rid) {
                self.absent.remove(&rid);
                continue;
            }
            let since = *self.absent.entry(rid).or_insert(now);
            if now.duration_since(since) >= self.reconnect_timeout {
                self.fence(rid, FenceReason::ClientReconnect)?;
            }
        }
        let mut done = Vec::new();
        for (rid, h) in self.fencing.iter_mut() {
            if let Some(r) = h.poll() {
                done.push((*rid, r, h.pid()));
            }
        }
        for (rid, r, pid) in done {
            self.fencing.remove(&rid);
            match r {
                Ok(FenceOutcome::Fenced) => {
                    tracing::info!("mount {rid:#018x} is fenced; reclaiming it");
                    self.reclaim(rid)
                        .map_err(|e| e.context(format!("reclaiming fenced mount {rid:#018x}")))?;
                    self.farewells_due().map_err(|e| e.context("farewell"))?;
                }
                Ok(FenceOutcome::Failed {
                    status,
                    stderr_tail,
                }) => {
                    return Err(Error::Fence(format!(
                        "fencing mount {rid:#018x} failed (agent pid {pid}, {status}): {}",
                        stderr_tail.trim()
                    )))
                }
                Ok(FenceOutcome::TimedOut { stderr_tail }) => {
                    return Err(Error::Fence(format!(
                        "fencing mount {rid:#018x} timed out (agent pid {pid}): {}",
                        stderr_tail.trim()
                    )))
                }
                Err(e) => return Err(Error::from(e).context(format!("fencing mount {rid:#018x}"))),
            }
        }
        // Farewells held while their mount recovered, or for the others.
        if !self.farewells.is_empty() {
            self.farewells_due().map_err(|e| e.context("farewell"))?;
        }
        // Merging: a step now and then while messages keep coming, and a
        // new round when one is due.
        if self.merge.is_some() {
            self.merge_step_or_abandon()?;
        } else if self.round.is_none() && self.locks.recovery_pending().is_empty() {
            match self.merge_due() {
                Ok(true) => {
                    if let Err(e) = self.start_round() {
                        tracing::warn!("starting a log merge: {e}");
                        if e.corruption().is_some() {
                            return Err(e.context("starting a log merge"));
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("reading the log trees: {e}"),
            }
        }
        Ok(())
    }

    /// Starts fencing `rid` unless it is already being fenced.
    fn fence(&mut self, rid: u64, reason: FenceReason) -> Result<()> {
        if self.fencing.contains_key(&rid) || !self.mounted.contains_key(&rid) {
            return Ok(());
        }
        let addr = self
            .mounted
            .get(&rid)
            .and_then(|m| m.addr)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        tracing::warn!("fencing mount {rid:#018x} at {addr} ({reason})");
        let h = self
            .fencer
            .start(FenceRequest {
                rid: Rid(rid),
                addr,
                reason,
            })
            .map_err(Error::from)?;
        self.fencing.insert(rid, h);
        Ok(())
    }

    /// Forgets a mount that is gone (fenced or said farewell): its locks
    /// are dropped (others waiting for them are granted), what its open
    /// transaction was given is returned, its log tree stays for a later
    /// merge, and its `mounted_clients` item is deleted last. Idempotent.
    fn reclaim(&mut self, rid: u64) -> Result<()> {
        let mut seq = self.seq;
        let outs = self.locks.rid_gone(Rid(rid), &mut || {
            seq += 1;
            seq
        });
        self.seq = seq;
        self.asked.retain(|&(r, _)| r != rid);
        self.absent.remove(&rid);
        self.data_waiters.retain(|w| w.rid != rid);
        for w in self.data_waiters.iter_mut() {
            w.waiting_on.remove(&rid);
        }
        self.last_seq_waiters.retain(|w| w.rid != rid);
        self.wait_rounds.retain(|w| w.rid != rid);
        self.wait_rounds_progress(Some(rid));
        let mut txn = self.store.begin();
        if let Some(mut lt) = self.current_log_trees(&txn, rid)? {
            reclaim_freed(&mut txn, &mut lt)?;
            return_avail(&mut txn, &mut lt)?;
            if !lt.is_finalized() {
                // It takes no more commits; its items wait for a merge.
                lt.flags = (lt.flags.get() | LOG_TREES_FINALIZED).into();
                lt.finalize_seq = self.next_seq().into();
            }
            let key = log_trees_key(rid, lt.nr.get());
            btree::insert(&mut txn.w, &mut txn.sb.logs_root, &key, 0, 0, lt.as_bytes())?;
        }
        let key = mounted_client_key(rid);
        if btree::lookup(&txn.w, &txn.sb.mounted_clients, &key)?.is_some() {
            btree::delete(&mut txn.w, &mut txn.sb.mounted_clients, &key)?;
        }
        self.commit(txn)?;
        self.mounted.remove(&rid);
        let done = self.omap.gone(rid);
        self.omap_answers(done);
        // Its tree is finalized: a round no longer waits for it, and what
        // was held for it goes nowhere.
        if let Some(round) = self.round.as_mut() {
            round.remove(&rid);
        }
        self.lock_outputs(outs);
        self.last_seq_progress()?;
        self.round_progress()
    }

    /// Answers the held farewells that may be answered now (see the module
    /// comment), each after its mount's reclaim.
    fn farewells_due(&mut self) -> Result<()> {
        loop {
            let pending: BTreeSet<Rid> = self.locks.recovery_pending().into_iter().collect();
            let quorum = self.mounted.values().filter(|m| m.quorum).count();
            // The last quorum members leave together: only once every one
            // of them has said farewell and none is still recovering its
            // locks. Answering one of them earlier (the server's own mount,
            // say) could leave the others too few to elect the server that
            // would answer them.
            let all_leaving = self.mounted.iter().all(|(r, m)| {
                m.quorum && self.farewells.contains_key(r) && !pending.contains(&Rid(*r))
            });
            let due = self
                .farewells
                .iter()
                .map(|(&r, &id)| (r, id))
                .find(|(rid, _)| {
                    let member = self.mounted.get(rid).is_some_and(|m| m.quorum);
                    !pending.contains(&Rid(*rid))
                        && (!member || quorum > self.votes_needed || all_leaving)
                });
            let Some((rid, id)) = due else {
                // Said once per change: this runs at every tick while a
                // farewell is held, which may be for as long as the other
                // members stay.
                let held: Vec<u64> = self.farewells.keys().copied().collect();
                if !held.is_empty() && held != self.farewells_logged {
                    tracing::info!("farewells held: {held:x?} (quorum members mounted: {quorum})");
                }
                self.farewells_logged = held;
                return Ok(());
            };
            self.farewells.remove(&rid);
            self.reclaim(rid)?;
            tracing::info!("farewell of mount {rid:#018x}: reclaimed and answered");
            self.link.respond(rid, id, &Response::Done);
            self.link.forget_when_gone(rid);
        }
    }

    fn response(&mut self, rid: u64, id: u64, resp: ClientResponse) {
        if !self.asked.remove(&(rid, id)) {
            return;
        }
        match resp {
            ClientResponse::InvalidateDone(m) => {
                let mut seq = self.seq;
                let outs = self.locks.invalidate_done(Rid(rid), m, &mut || {
                    seq += 1;
                    seq
                });
                self.seq = seq;
                self.lock_outputs(outs);
            }
            ClientResponse::LockRecover { entries, more } => {
                // Write seqs stay above every one a mount reports: a batch
                // may end recovery and grant at once.
                let reported = entries.iter().map(|e| e.write_seq).max().unwrap_or(0);
                let mut seq = self.seq.max(reported);
                let outs = self.locks.recover(Rid(rid), &entries, more, &mut || {
                    seq += 1;
                    seq
                });
                self.seq = seq;
                self.lock_outputs(outs);
            }
            ClientResponse::OpenInoMap(m) => {
                let done = self.omap.answer(rid, id, &m);
                self.omap_answers(done);
            }
            ClientResponse::DataWaiting(ws) => {
                for r in self.wait_rounds.iter_mut() {
                    if r.pending.remove(&(rid, id)) {
                        if let Some((merged, _)) = r.listing.as_mut() {
                            for w in &ws {
                                *merged.entry((w.ino, w.iblock)).or_insert(0) |= w.ops;
                            }
                        }
                    }
                }
                self.wait_rounds_progress(None);
            }
            ClientResponse::Count(n) => {
                for r in self.wait_rounds.iter_mut() {
                    if r.pending.remove(&(rid, id)) {
                        r.failed += n;
                    }
                }
                self.wait_rounds_progress(None);
            }
            ClientResponse::Done => {}
        }
    }

    /// DATA_WAITING and DATA_WAIT_ERR: every mount is asked (waiters are
    /// each mount's own), and the union of their answers (or the sum) is
    /// the answer.
    fn wait_round(&mut self, rid: u64, id: u64, req: Request) {
        let ask = match req {
            Request::DataWaiting(q) => ServerRequest::DataWaiting(q),
            Request::DataWaitErr(f) => ServerRequest::DataWaitErr(f),
            _ => return,
        };
        let listing = match req {
            Request::DataWaiting(q) => Some((BTreeMap::new(), q.max as usize)),
            _ => None,
        };
        let mut pending = BTreeSet::new();
        let rids: Vec<u64> = self.mounted.keys().copied().collect();
        for r in rids {
            match self.link.request(r, &ask) {
                Ok(req_id) => {
                    self.asked.insert((r, req_id));
                    pending.insert((r, req_id));
                }
                Err(e) => tracing::debug!("asking {r:#x} for its data waiters: {e}"),
            }
        }
        self.wait_rounds.push(WaitRound {
            rid,
            id,
            pending,
            listing,
            failed: 0,
            deadline: Instant::now() + WAIT_ROUND_TIMEOUT,
        });
        self.wait_rounds_progress(None);
    }

    /// Answers the rounds that every mount asked has answered (`gone`: a
    /// mount that left, which will not), or that waited long enough.
    fn wait_rounds_progress(&mut self, gone: Option<u64>) {
        let now = Instant::now();
        for r in self.wait_rounds.iter_mut() {
            if let Some(g) = gone {
                r.pending.retain(|&(rid, _)| rid != g);
            }
        }
        let (ready, wait): (Vec<WaitRound>, Vec<WaitRound>) = std::mem::take(&mut self.wait_rounds)
            .into_iter()
            .partition(|r| r.pending.is_empty() || now >= r.deadline);
        self.wait_rounds = wait;
        for r in ready {
            if !r.pending.is_empty() {
                tracing::warn!(
                    "data waiters: {} mounts did not answer within {WAIT_ROUND_TIMEOUT:?}",
                    r.pending.len()
                );
            }
            let resp = match r.listing {
                Some((merged, max)) => Response::DataWaiting(
                    merged
                        .into_iter()
                        .take(max)
                        .map(|((ino, iblock), ops)| WaitingBlock { ino, iblock, ops })
                        .collect(),
                ),
                None => Response::Count(r.failed),
            };
            self.link.respond(r.rid, r.id, &resp);
        }
    }

    /// A mount asks which inodes of `group` any mount has open (see
    /// [`OmapServer`]).
    fn omap_request(&mut self, rid: u64, id: u64, group: u64) {
        if !self.mounted.contains_key(&rid) {
            self.link.respond(rid, id, &Response::Error(libc::EINVAL));
            return;
        }
        let rids: Vec<u64> = self.mounted.keys().copied().collect();
        let (link, asked) = (&self.link, &mut self.asked);
        let mut ask = |m: u64| match link.request(m, &ServerRequest::OpenInoMap { group }) {
            Ok(aid) => {
                asked.insert((m, aid));
                Some(aid)
            }
            Err(e) => {
                tracing::debug!("open inode map: can't ask {m:#x}: {e}");
                None
            }
        };
        let done = self.omap.request(rid, id, group, &rids, &mut ask);
        self.omap_answers(done);
    }

    /// Sends the answers of finished open-inode map rounds.
    fn omap_answers(&self, done: impl IntoIterator<Item = OmapAnswer>) {
        for (rid, id, map) in done {
            self.link
                .respond(rid, id, &Response::OpenInoMap(Box::new(map)));
        }
    }

    /// A mount greeted: record it (a reconnect is already recorded and
    /// nothing is written), accept it, and ask a mount of an earlier server
    /// for its locks.
    fn greeting(&mut self, conn: ConnId, rid: u64, client_term: u64, flags: u64) {
        let known = self.mounted.contains_key(&rid);
        if !known && flags & GREETING_FLAG_FAREWELL != 0 {
            // Its farewell was processed (its record is gone); it only
            // wants the answer, which its resent request gets.
            self.link.accept(conn);
            return;
        }
        if !known && client_term != 0 && client_term != self.term {
            // Mounted under an earlier server, but its record is gone: it
            // was fenced and reclaimed. It must not come back.
            tracing::warn!("refusing mount {rid:#018x}: it was fenced and reclaimed");
            self.link.forget(rid);
            return;
        }
        if !known {
            let m = Mounted {
                quorum: flags & GREETING_FLAG_QUORUM != 0,
                addr: self.link.peer_addr(conn),
            };
            if let Err(e) = self.record_mounted(rid, m) {
                tracing::error!("recording mount {rid:#018x}: {e}");
                if e.corruption().is_some() {
                    self.fatal = Some(e.context(format!("recording mount {rid:#018x}")));
                }
                return;
            }
        } else if let Some(addr) = self.link.peer_addr(conn) {
            if let Some(m) = self.mounted.get_mut(&rid) {
                m.addr = Some(addr);
            }
        }
        self.link.accept(conn);
        // A mount of an earlier server: ask for its locks.
        if client_term != 0 && client_term != self.term {
            let outs = self.locks.greeted(Rid(rid));
            self.lock_outputs(outs);
        }
    }

    fn record_mounted(&mut self, rid: u64, m: Mounted) -> Result<()> {
        let mut txn = self.store.begin();
        let val = MountedClientVal {
            addr: m.addr.map(InetAddr::from_socket).unwrap_or_default(),
            flags: if m.quorum { MOUNTED_CLIENT_QUORUM } else { 0 },
            ..Default::default()
        };
        btree::insert(
            &mut txn.w,
            &mut txn.sb.mounted_clients,
            &mounted_client_key(rid),
            0,
            0,
            val.as_bytes(),
        )?;
        self.commit(txn)?;
        self.mounted.insert(rid, m);
        Ok(())
    }

    fn lock_request(&mut self, rid: u64, id: u64, m: LockMsg) {
        let mut seq = self.seq;
        let outs = self.locks.request(Rid(rid), id, m, &mut || {
            seq += 1;
            seq
        });
        self.seq = seq;
        self.lock_outputs(outs);
    }

    fn lock_outputs(&mut self, outs: Vec<ServerOut>) {
        for out in outs {
            // A mount whose tree a round waits to finalize gets its lock
            // messages, in order, once that is done.
            let to = match &out {
                ServerOut::Grant { rid, .. } | ServerOut::Invalidate { rid, .. } => Some(rid.0),
                _ => None,
            };
            if let (Some(rid), Some(round)) = (to, self.round.as_mut()) {
                if let Some(held) = round.get_mut(&rid) {
                    held.push(out);
                    continue;
                }
            }
            match out {
                ServerOut::Grant { rid, net_id, msg } => {
                    tracing::debug!(mount = %rid, key = %msg.key, mode = %msg.new_mode, "lock grant");
                    self.link.respond(rid.0, net_id, &Response::Lock(msg));
                }
                ServerOut::Invalidate { rid, msg } => {
                    tracing::debug!(mount = %rid, key = %msg.key, mode = %msg.new_mode, "lock invalidate");
                    match self.link.request(rid.0, &ServerRequest::Invalidate(msg)) {
                        Ok(id) => {
                            self.asked.insert((rid.0, id));
                        }
                        Err(e) => tracing::warn!("{e}"),
                    }
                }
                // A recovering lock server asks each mount for its locks.
                ServerOut::Recover { rid, first } => {
                    let req = ServerRequest::LockRecover { first };
                    match self.link.request(rid.0, &req) {
                        Ok(id) => {
                            self.asked.insert((rid.0, id));
                        }
                        Err(e) => tracing::warn!("{e}"),
                    }
                }
                ServerOut::ProtocolError { rid, reason } => {
                    tracing::warn!("lock protocol error from {:#x}: {reason}", rid.0);
                }
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn commit(&mut self, mut txn: Txn) -> Result<()> {
        crate::ensure!(
            self.seq >= self.store.sb.seq.get(),
            "the server's seq {} is behind the super block's {}",
            self.seq,
            self.store.sb.seq.get()
        );
        txn.sb.seq = self.seq.into();
        if let Err(e) = self.store.commit(txn) {
            // A device that fails the server's writes ends the server:
            // another member (or a later mount) serves with its own path
            // to the devices, and no mount waits on commits that can't be
            // made.
            if matches!(e, Error::Io { .. } | Error::Shutdown { .. }) && self.fatal.is_none() {
                self.fatal = Some(Error::Shutdown {
                    errno: libc::EIO,
                    why: format!("committing: {e}"),
                });
            }
            return Err(e);
        }
        Ok(())
    }

    fn request(&mut self, rid: u64, req: Request) -> Result<Response> {
        match req {
            Request::Greeting { .. } => Err(Error::Protocol(
                "a greeting must come through the network layer".into(),
            )),
            Request::AllocInodes { count } => {
                let mut txn = self.store.begin();
                let ino = txn.sb.next_ino.get();
                let nr = count.min(u64::MAX - ino);
                txn.sb.next_ino = (ino + nr).into();
                self.commit(txn)?;
                Ok(Response::Inodes { ino, nr })
            }
            // A mount that left or was reclaimed must not open a tree
            // again: nobody would give its space back.
            Request::GetLogTrees | Request::CommitLogTrees(_)
                if !self.mounted.contains_key(&rid) =>
            {
                Err(Error::Protocol(format!(
                    "mount {rid:#x} asked for its log tree after it left or was reclaimed"
                )))
            }
            Request::GetLogTrees => Ok(Response::LogTrees(Box::new(self.get_log_trees(rid)?))),
            Request::CommitLogTrees(lt) => Ok(Response::LogTrees(Box::new(
                self.commit_log_trees(rid, &lt)?,
            ))),
            Request::GetRoots => {
                let sb = &self.store.sb;
                Ok(Response::Roots(Roots {
                    fs_root: sb.fs_root,
                    logs_root: sb.logs_root,
                    srch_root: sb.srch_root,
                }))
            }
            Request::Statfs => Ok(Response::Statfs(self.statfs()?)),
            Request::ResizeDevices { meta, data } => {
                self.resize_devices(meta, data)?;
                Ok(Response::Done)
            }
            Request::Farewell => unreachable!("farewells are handled by the run loop"),
            Request::Lock(_) => unreachable!("lock requests are handled by lock_request"),
            Request::OpenInoMap { .. } => unreachable!("handled by omap_request"),
            Request::GetLastSeq => unreachable!("handled by last_seq_request"),
            Request::DataWaiting(_) | Request::DataWaitErr(_) => {
                unreachable!("handled by wait_round")
            }
            Request::WaitersNew(_) => unreachable!("handled by the run loop"),
        }
    }

    /// The open transactions of the mounts: (rid, seq).
    fn open_transactions(&self) -> Result<Vec<(u64, u64)>> {
        let lts = log_roots(self.store.cache.as_ref(), &self.store.sb.logs_root)?;
        Ok(lts
            .iter()
            .filter(|lt| {
                !lt.is_finalized() && lt.trans_open() && self.mounted.contains_key(&lt.rid.get())
            })
            .map(|lt| (lt.rid.get(), lt.get_trans_seq.get()))
            .collect())
    }

    /// The last seq whose transactions are all complete: below every open
    /// transaction's seq, and no more than the last committed super
    /// block's seq (every later transaction, under this server or the
    /// next, gets a greater one). Index items of a seq at or below it are
    /// all written, and no item will be written at such a seq again.
    fn last_seq(&self) -> Result<u64> {
        let open = self.open_transactions()?;
        let below_open = open.iter().map(|&(_, s)| s - 1).min().unwrap_or(u64::MAX);
        Ok(self.store.sb.seq.get().min(below_open))
    }

    /// GET_LAST_SEQ: the mounts whose transactions are open are asked to
    /// commit, so that the answer covers every change made before the
    /// request; it is answered once they have (or after
    /// [`LAST_SEQ_WAIT`]).
    fn last_seq_request(&mut self, rid: u64, id: u64) -> Result<()> {
        let open = self.open_transactions()?;
        let Some(target) = open.iter().map(|&(_, s)| s).max() else {
            let last = self.last_seq()?;
            self.link.respond(rid, id, &Response::LastSeq(last));
            return Ok(());
        };
        let waiting: BTreeSet<u64> = self
            .last_seq_waiters
            .iter()
            .map(|w| w.target)
            .filter(|&t| t >= target)
            .collect();
        if waiting.is_empty() {
            // Not asked already by a waiter before this one.
            let rids: BTreeSet<u64> = open.iter().map(|&(r, _)| r).collect();
            for r in rids {
                match self.link.request(r, &ServerRequest::SyncLogTrees) {
                    Ok(req_id) => {
                        self.asked.insert((r, req_id));
                    }
                    Err(e) => tracing::debug!("asking {r:#x} to commit: {e}"),
                }
            }
        }
        self.last_seq_waiters.push(LastSeqWaiter {
            rid,
            id,
            target,
            deadline: Instant::now() + LAST_SEQ_WAIT,
        });
        Ok(())
    }

    /// Answers the GET_LAST_SEQ requests whose transactions have all
    /// committed, or that waited long enough.
    fn last_seq_progress(&mut self) -> Result<()> {
        if self.last_seq_waiters.is_empty() {
            return Ok(());
        }
        let min_open = self
            .open_transactions()?
            .iter()
            .map(|&(_, s)| s)
            .min()
            .unwrap_or(u64::MAX);
        let now = Instant::now();
        let (ready, wait): (Vec<LastSeqWaiter>, Vec<LastSeqWaiter>) =
            std::mem::take(&mut self.last_seq_waiters)
                .into_iter()
                .partition(|w| min_open > w.target || now >= w.deadline);
        self.last_seq_waiters = wait;
        if !ready.is_empty() {
            let last = self.last_seq()?;
            for w in ready {
                self.link.respond(w.rid, w.id, &Response::LastSeq(last));
            }
        }
        Ok(())
    }

    /// The mount's current (last) log tree item, if any.
    fn current_log_trees(&self, txn: &Txn, rid: u64) -> Result<Option<LogTrees>> {
        let it = btree::prev(&txn.w, &txn.sb.logs_root, &log_trees_key(rid, u64::MAX))?;
        let Some(it) = it.filter(|it| it.key.zone == zone::LOG_TREES && it.key.first == rid) else {
            return Ok(None);
        };
        let lt = LogTrees::decode(&it.val).map_err(|e| {
            Error::corrupt(
                CorruptKind::ItemInvalid,
                0,
                0,
                format!("log trees item: {e}"),
            )
        })?;
        Ok(Some(lt))
    }

    fn get_log_trees(&mut self, rid: u64) -> Result<LogTrees> {
        let mut txn = self.store.begin();
        let lt = match self.current_log_trees(&txn, rid)? {
            Some(lt) if lt.is_finalized() => LogTrees {
                rid: rid.into(),
                nr: (lt.nr.get() + 1).into(),
                ..Default::default()
            },
            Some(lt) if lt.trans_open() => return Ok(lt),
            Some(lt) => lt,
            None => LogTrees {
                rid: rid.into(),
                nr: 1.into(),
                ..Default::default()
            },
        };
        let lt = self.open_trans(&mut txn, lt)?;
        self.commit(txn)?;
        Ok(lt)
    }

    /// Opens the next transaction of a mount's log tree whose last one is
    /// committed: what it freed goes back to the server's allocators
    /// (durable now), its allocators are refilled, and it gets a fresh seq.
    fn open_trans(&mut self, txn: &mut Txn, mut lt: LogTrees) -> Result<LogTrees> {
        reclaim_freed(txn, &mut lt)?;
        refill(txn, &mut lt, self.mounted.len())?;
        lt.get_trans_seq = self.next_seq().into();
        let key = log_trees_key(lt.rid.get(), lt.nr.get());
        btree::insert(&mut txn.w, &mut txn.sb.logs_root, &key, 0, 0, lt.as_bytes())?;
        Ok(lt)
    }

    /// Asks the other mounts that hold more than twice their share of the
    /// data pool's `pool` blocks to commit, which gives the rest back (see
    /// [`refill`]); returns those asked. A mount that has been idle since
    /// the pool was full keeps what it was given then; without this the
    /// others would run out while space is free.
    fn ask_for_excess_data(&mut self, short: u64, pool: u64) -> Result<BTreeSet<u64>> {
        let full = data_fill_target(&self.store.sb);
        let mounts = self.mounted.len();
        let txn = self.store.begin();
        let mut asked = BTreeSet::new();
        let others: Vec<u64> = self
            .mounted
            .keys()
            .copied()
            .filter(|&r| r != short)
            .collect();
        for rid in others {
            let Some(lt) = self.current_log_trees(&txn, rid)? else {
                continue;
            };
            let held = lt.data_avail.total_len.get();
            if lt.is_finalized() || !holds_excess(held, pool, mounts, full) {
                continue;
            }
            match self.link.request(rid, &ServerRequest::SyncLogTrees) {
                Ok(id) => {
                    tracing::debug!("asking {rid:#x} to give back data: it holds {held} blocks");
                    self.asked.insert((rid, id));
                    asked.insert(rid);
                }
                Err(e) => tracing::debug!("asking {rid:#x} to give back data: {e}"),
            }
        }
        Ok(asked)
    }

    /// Answers a request that opened a mount's transaction, unless the
    /// transaction's data extents came short of a quarter of a fill while
    /// other mounts hold more than their share: then those are asked to
    /// give it back, and the answer waits (at most [`DATA_WAIT`]) until
    /// they have, when the transaction is filled again. So a mount sees
    /// ENOSPC only when no other mount holds space it could have.
    fn answer_trans(&mut self, rid: u64, id: u64, resp: Response) -> Result<()> {
        let short = match &resp {
            Response::LogTrees(lt) => lt.data_avail.flags.get() & ALLOC_FLAG_LOW != 0,
            _ => false,
        };
        self.data_waiters.retain(|w| w.rid != rid);
        if short {
            let pool = self.store.sb.data_alloc.total_len.get();
            let asked = self.ask_for_excess_data(rid, pool)?;
            if !asked.is_empty() {
                self.data_waiters.push(DataWaiter {
                    rid,
                    id,
                    waiting_on: asked,
                    deadline: Instant::now() + DATA_WAIT,
                });
                return Ok(());
            }
        }
        self.link.respond(rid, id, &resp);
        Ok(())
    }

    /// A mount committed, left or was reclaimed: the waiters for data it
    /// held stop waiting for it, and those that wait for nothing more (or
    /// waited long enough) get their transaction, filled again.
    fn data_waiters_progress(&mut self, gone: Option<u64>) -> Result<()> {
        let now = Instant::now();
        for w in self.data_waiters.iter_mut() {
            if let Some(g) = gone {
                w.waiting_on.remove(&g);
            }
        }
        let (ready, wait): (Vec<DataWaiter>, Vec<DataWaiter>) =
            std::mem::take(&mut self.data_waiters)
                .into_iter()
                .partition(|w| w.waiting_on.is_empty() || now >= w.deadline);
        self.data_waiters = wait;
        for w in ready {
            if !self.mounted.contains_key(&w.rid) {
                continue;
            }
            let resp = match self.refill_open(w.rid) {
                Ok(lt) => Response::LogTrees(Box::new(lt)),
                Err(e) => {
                    tracing::warn!("filling the transaction of {:#x} again: {e}", w.rid);
                    Response::Error(e.errno())
                }
            };
            self.link.respond(w.rid, w.id, &resp);
        }
        Ok(())
    }

    /// Fills the open transaction of a mount that has not seen it yet
    /// again (space came back since it was opened).
    fn refill_open(&mut self, rid: u64) -> Result<LogTrees> {
        let mut txn = self.store.begin();
        let Some(mut lt) = self
            .current_log_trees(&txn, rid)?
            .filter(|lt| lt.trans_open())
        else {
            drop(txn);
            return self.get_log_trees(rid);
        };
        refill(&mut txn, &mut lt, self.mounted.len())?;
        let key = log_trees_key(rid, lt.nr.get());
        btree::insert(&mut txn.w, &mut txn.sb.logs_root, &key, 0, 0, lt.as_bytes())?;
        self.commit(txn)?;
        Ok(lt)
    }

    /// Records a mount's committed transaction and opens its next one, in
    /// one server commit; returns the open log tree.
    fn commit_log_trees(&mut self, rid: u64, lt: &LogTrees) -> Result<LogTrees> {
        let mut txn = self.store.begin();
        let cur = self.current_log_trees(&txn, rid)?;
        if cur.is_some_and(|c| c.nr.get() > lt.nr.get() && !c.is_finalized()) && lt.rid.get() == rid
        {
            // A resend of the commit that finalized the mount's tree (a
            // live mount's tree changes only there): the answer is the
            // transaction open now, in its new tree.
            drop(txn);
            return self.get_log_trees(rid);
        }
        let Some(cur) = cur.filter(|c| c.nr == lt.nr && lt.rid.get() == rid) else {
            return Err(Error::Protocol(format!(
                "commit of unknown log tree {rid:#x}.{}",
                lt.nr.get()
            )));
        };
        if cur.is_finalized() {
            // Its allocators went back to the server when it was
            // finalized: recording this commit would hand them out twice.
            return Err(Error::Protocol(format!(
                "commit of finalized log tree {rid:#x}.{}",
                lt.nr.get()
            )));
        }
        if !cur.trans_open() || cur.get_trans_seq != lt.get_trans_seq {
            // A resend of a commit that was already recorded: the answer
            // is the transaction open now (opened if need be).
            drop(txn);
            return self.get_log_trees(rid);
        }
        let mut new = *lt;
        new.commit_trans_seq = new.get_trans_seq;
        // Seqs stay above every committed item, whichever server handed
        // them out (a mount may commit through a new server before it has
        // reported its locks).
        self.seq = self.seq.max(lt.max_item_seq.get());
        let finalize = self.round.as_ref().is_some_and(|w| w.contains_key(&rid));
        if !finalize {
            let next = self.open_trans(&mut txn, new)?;
            self.commit(txn)?;
            return Ok(next);
        }
        // The round waits for this tree: finalize it, and open the next
        // transaction in a new tree that takes over its allocators.
        reclaim_freed(&mut txn, &mut new)?;
        let next = LogTrees {
            rid: new.rid,
            nr: (new.nr.get() + 1).into(),
            meta_avail: new.meta_avail,
            data_avail: new.data_avail,
            ..Default::default()
        };
        new.meta_avail = AllocListHead::default();
        new.data_avail = AllocRoot::default();
        new.flags = (new.flags.get() | LOG_TREES_FINALIZED).into();
        new.finalize_seq = self.next_seq().into();
        let key = log_trees_key(rid, new.nr.get());
        btree::insert(
            &mut txn.w,
            &mut txn.sb.logs_root,
            &key,
            0,
            0,
            new.as_bytes(),
        )?;
        let next = self.open_trans(&mut txn, next)?;
        self.commit(txn)?;
        let held = self
            .round
            .as_mut()
            .and_then(|w| w.remove(&rid))
            .unwrap_or_default();
        self.lock_outputs(held);
        self.round_progress()?;
        Ok(next)
    }

    /// Grows the devices (see [`grow_devices`]) in a commit of its own:
    /// the new space is in the pool for the next refill of every mount.
    fn resize_devices(&mut self, meta: u64, data: u64) -> Result<()> {
        let Some(data_dev) = self.data_dev.clone() else {
            return Err(Error::Errno {
                what: "this server was started without the data device".into(),
                errno: libc::EOPNOTSUPP,
            });
        };
        let mut txn = self.store.begin();
        if grow_devices(&mut txn, data_dev.as_ref(), meta, data)? {
            self.commit(txn)?;
            let sb = &self.store.sb;
            tracing::info!(
                "grew the devices to {} metadata and {} data blocks",
                sb.total_meta_blocks.get(),
                sb.total_data_blocks.get()
            );
        }
        Ok(())
    }

    fn statfs(&self) -> Result<StatfsInfo> {
        space(
            self.store.cache.as_ref(),
            &self.store.sb,
            self.mounted.len(),
        )
    }
}

/// Space and inode totals of a super block: free metadata counts the
/// server's pool and lists and every mount's lists, free data the pool
/// and every mount's extents; the reserve is what `mounts` mounts keep
/// for freeing (see [`meta_reserve`]).
pub fn space<R: btree::Reader + ?Sized>(
    rd: &R,
    sb: &SuperBlock,
    mounts: usize,
) -> Result<StatfsInfo> {
    let mut free_meta = meta_pool(sb);
    for h in sb.server_meta_avail.iter().chain(&sb.server_meta_freed) {
        free_meta += h.total_nr.get();
    }
    let mut free_data = sb.data_alloc.total_len.get();
    let mut inodes = sb.inode_count.get() as i64;
    for lt in log_roots(rd, &sb.logs_root)? {
        free_meta += lt.meta_avail.total_nr.get() + lt.meta_freed.total_nr.get();
        free_data += lt.data_avail.total_len.get() + lt.data_freed.total_len.get();
        inodes += lt.inode_count_delta();
    }
    Ok(StatfsInfo {
        total_meta_blocks: sb.total_meta_blocks.get(),
        free_meta_blocks: free_meta,
        reserved_meta_blocks: meta_reserve(sb, mounts).min(free_meta),
        total_data_blocks: sb.total_data_blocks.get(),
        free_data_blocks: free_data,
        inode_count: inodes.max(0) as u64,
        fsid: sb.hdr.fsid.get(),
    })
}

/// Returns what the mount freed in its committed transaction (durable now)
/// to the server's allocators.
fn reclaim_freed(txn: &mut Txn, lt: &mut LogTrees) -> Result<()> {
    give_back(txn, &mut lt.meta_freed, &mut lt.data_freed)
}

/// Returns the metadata blocks and data extents a mount was given for its
/// transactions and did not use in a committed one to the server's
/// allocators (the mount is gone).
fn return_avail(txn: &mut Txn, lt: &mut LogTrees) -> Result<()> {
    give_back(txn, &mut lt.meta_avail, &mut lt.data_avail)
}

/// Empties a mount's metadata block list and data extents into the
/// server's allocators.
fn give_back(txn: &mut Txn, meta: &mut AllocListHead, data: &mut AllocRoot) -> Result<()> {
    let entries = txn.w.list_take_all(meta)?;
    extent::free_blocks(&mut txn.w, &mut txn.sb.meta_alloc[1], entries)?;
    for e in extent::extents(&txn.w, data)? {
        extent::free_extent(&mut txn.w, &mut txn.sb.data_alloc, e.start, e.len)?;
    }
    btree::free_tree(&mut txn.w, &mut data.root)?;
    data.total_len = 0.into();
    Ok(())
}

/// Fills the mount's metadata list and data extents for its next
/// transaction, and flags each LOW when the server's pool can't keep it
/// up: metadata when the pool is down to the reserve (the mount's
/// allocating operations then fail with ENOSPC, and those that free go
/// on), data when the pool could not fill it to a quarter of its full
/// target (the mount's writes fail with ENOSPC once its extents are used
/// up and a commit brings no more).
fn refill(txn: &mut Txn, lt: &mut LogTrees, mounts: usize) -> Result<()> {
    let target = meta_fill_target(&txn.sb);
    let mut head = lt.meta_avail;
    if head.total_nr.get() < target / 2 {
        while head.total_nr.get() < target {
            if txn.sb.meta_alloc[0].total_len.get() == 0 {
                if txn.sb.meta_alloc[1].total_len.get() == 0 {
                    break;
                }
                txn.sb.meta_alloc.swap(0, 1);
            }
            let want = target - head.total_nr.get();
            let Some(e) = extent::alloc_extent(&mut txn.w, &mut txn.sb.meta_alloc[0], want)? else {
                break;
            };
            for b in e.start..e.start + e.len {
                txn.w.list_push(&mut head, b)?;
            }
        }
    }
    let low = meta_pool(&txn.sb) <= meta_reserve(&txn.sb, mounts);
    head.flags = if low { ALLOC_FLAG_LOW } else { 0 }.into();
    lt.meta_avail = head;

    // As the pool drains, a fill shrinks to this mount's share of what is
    // left, so that little sits unused in other mounts' extents when the
    // device fills: a mount that runs out commits and gets its share of
    // the rest, until none is left.
    let full = data_fill_target(&txn.sb);
    let left = txn.sb.data_alloc.total_len.get() + lt.data_avail.total_len.get();
    let target = data_share(left, mounts, full);
    if lt.data_avail.total_len.get() < target / 4 {
        while lt.data_avail.total_len.get() < target {
            let want = target - lt.data_avail.total_len.get();
            let Some(e) = extent::alloc_extent(&mut txn.w, &mut txn.sb.data_alloc, want)? else {
                break;
            };
            extent::free_extent(&mut txn.w, &mut lt.data_avail, e.start, e.len)?;
        }
    }
    // A mount that holds more than twice its share of a draining pool
    // (it was filled when the pool was full, and has been idle since)
    // gives back what is past its share.
    let held = lt.data_avail.total_len.get();
    if held > target * 2 {
        let mut excess = held - target;
        while excess > 0 {
            let Some(e) = extent::alloc_extent(&mut txn.w, &mut lt.data_avail, excess)? else {
                break;
            };
            extent::free_extent(&mut txn.w, &mut txn.sb.data_alloc, e.start, e.len)?;
            excess -= e.len;
        }
    }
    let low = lt.data_avail.total_len.get() < full / 4;
    lt.data_avail.flags = if low { ALLOC_FLAG_LOW } else { 0 }.into();
    Ok(())
}

/// A mount's share of `left` data blocks among `mounts` mounts and the
/// server: at most a full fill, at least [`DATA_SHARE_MIN`].
fn data_share(left: u64, mounts: usize, full: u64) -> u64 {
    full.min((left / (mounts as u64 + 1)).max(DATA_SHARE_MIN))
}

/// Whether a mount holding `held` data blocks should give some back to a
/// pool of `pool` blocks shared by `mounts` mounts (as its next refill
/// would: see [`refill`]).
fn holds_excess(held: u64, pool: u64, mounts: usize, full: u64) -> bool {
    held > data_share(pool + held, mounts, full) * 2
}
