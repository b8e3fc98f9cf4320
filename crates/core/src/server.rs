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
//! mount's new roots and closes the transaction. Both are idempotent against
//! resends: an open transaction is returned as it is, an already committed
//! one is ignored.
//!
//! Seqs: one counter (`super.seq`) supplies transaction seqs and lock write
//! seqs. At start it is raised above every seq recorded in the log trees.
//!
//! Transport: mounts connect over TCP (`tcp`, with the delivery rules of
//! `net`); a greeting records the mount in `mounted_clients` before it is
//! answered.
//!
//! Starting ([`ServerStart`]): a server that starts `Alone` (no mount can be
//! running) merges every log tree into `fs_root` in batches of commits and
//! drops them, their space returned. One that takes over from the server of
//! an earlier term while mounts run keeps their log trees and recovers
//! their locks first: every mount recorded in `mounted_clients` is asked
//! for its locks (LOCK_RECOVER) when it greets, and nothing is granted
//! until all have answered.
//!
//! Not yet here (later issues): batching of commits across requests,
//! merging while mounts run, the election that decides which mount runs the
//! server, a time limit on recovery and fencing the mounts that miss it.

use crate::alloc::extent;
use crate::btree;
use crate::commit::{meta_fill_target, Store, Txn};
use crate::error::{Error, Result};
use crate::forest::{self, log_roots, Roots};
use crate::lock::{LockMsg, Rid};
use crate::lock_server::{LockServer, ServerOut};
use crate::msg::{ClientResponse, Request, Response, ServerRequest, StatfsInfo};
use crate::net::ConnId;
use crate::tcp::{ServerDeliver, ServerLink};
use scoutfs_format::key::zone;
use scoutfs_format::log_trees::{LogTrees, MountedClientVal};
use scoutfs_format::{Key, SuperBlock};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use zerocopy::IntoBytes;

/// Data blocks a mount's data_avail is filled to: an eighth of the device,
/// at most 4 GiB; refilled when below a quarter of that.
pub fn data_fill_target(sb: &SuperBlock) -> u64 {
    (sb.total_data_blocks.get() / 8).clamp(256, 1 << 20)
}

/// The term of this server. Until mounts elect their server, each mount's
/// server is the only one its clients will ever know.
pub const SERVER_TERM: u64 = 1;

fn log_trees_key(rid: u64, nr: u64) -> Key {
    Key::new(zone::LOG_TREES, rid, 0, nr, 0, 0)
}

fn mounted_client_key(rid: u64) -> Key {
    Key::new(zone::MOUNTED_CLIENT, rid, 0, 0, 0, 0)
}

/// How a server begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerStart {
    /// No mount of the filesystem can be running: every log tree left is a
    /// departed mount's and is merged into fs_root.
    Alone,
    /// Taking over from the server of an earlier term while mounts run:
    /// the mounts recorded in the super block keep their log trees, and
    /// report their locks before anything is granted.
    TakeOver { term: u64 },
}

enum Event {
    /// Mount `rid` greeted on `conn` (`client_term`: the term of the server
    /// it knew, 0 on its first connection): record it, then accept.
    Greeting {
        conn: ConnId,
        rid: u64,
        client_term: u64,
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
    fn greeting(&self, conn: ConnId, rid: u64, client_term: u64, _flags: u64) {
        self.send(Event::Greeting {
            conn,
            rid,
            client_term,
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
    pub fn start(store: Store, addr: SocketAddr, how: ServerStart) -> Result<Server> {
        let (tx, rx) = channel();
        let fsid = store.sb.hdr.fsid.get();
        let term = match how {
            ServerStart::Alone => SERVER_TERM,
            ServerStart::TakeOver { term } => term,
        };
        let deliver = Arc::new(ToThread(Mutex::new(tx.clone())));
        let link = Arc::new(ServerLink::listen(addr, fsid, term, deliver)?);
        let l2 = link.clone();
        let thread = std::thread::Builder::new()
            .name("scoutfs-server".into())
            .spawn(move || State::new(store, l2, how, term).run(rx))
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

    /// Stops the server and returns its store.
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

struct State {
    store: Store,
    locks: LockServer,
    link: Arc<ServerLink>,
    /// Server requests awaiting a client's response: (rid, id).
    asked: BTreeSet<(u64, u64)>,
    seq: u64,
    term: u64,
}

impl State {
    fn new(store: Store, link: Arc<ServerLink>, how: ServerStart, term: u64) -> State {
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
            term,
        };
        match how {
            // Nothing is mounted, so every log tree was left by a mount
            // that is gone: merge them all into fs_root.
            ServerStart::Alone => {
                if let Err(e) = st.merge_departed() {
                    eprintln!("scoutfs: server: merging earlier mounts' log trees: {e}");
                }
            }
            ServerStart::TakeOver { .. } => match st.mounted_rids() {
                Ok(rids) => st.locks = LockServer::recovering(rids.into_iter().map(Rid)),
                Err(e) => eprintln!("scoutfs: server: reading the mounted clients: {e}"),
            },
        }
        st
    }

    /// The mounts recorded in the super block.
    fn mounted_rids(&self) -> Result<Vec<u64>> {
        let start = mounted_client_key(0);
        let end = mounted_client_key(u64::MAX);
        let mut rids = Vec::new();
        btree::for_each_range(
            self.store.cache.as_ref(),
            &self.store.sb.mounted_clients,
            &start,
            &end,
            |it| {
                rids.push(it.key.first);
                Ok(true)
            },
        )?;
        Ok(rids)
    }

    /// Merges every log tree into fs_root (newest versions win, deletions
    /// delete), in batches of one commit each, then returns the trees'
    /// space and drops them. Until mounts share a filesystem this runs at
    /// server start, when every log tree belongs to a mount that is gone;
    /// it keeps the forest to one log tree per running mount.
    fn merge_departed(&mut self) -> Result<()> {
        let lts = log_roots(self.store.cache.as_ref(), &self.store.sb.logs_root)?;
        if lts.is_empty() {
            return Ok(());
        }
        let hi = Key::new(zone::LOG_TREES, 0, 0, 0, 0, 0).dec();
        let mut lo = Key::MIN;
        loop {
            let mut trees = vec![self.store.sb.fs_root];
            trees.extend(lts.iter().map(|lt| lt.item_root));
            let mut batch = Vec::new();
            forest::merge_versions(self.store.cache.as_ref(), &trees, &lo, &hi, |k, v| {
                batch.push((*k, v.clone()));
                Ok(batch.len() < MERGE_BATCH_ITEMS)
            })?;
            let Some(last) = batch.last().map(|(k, _)| *k) else {
                break;
            };
            let mut txn = self.store.begin();
            let puts: Vec<btree::Item> = batch
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
            for (k, _) in batch.iter().filter(|(_, v)| v.deleted) {
                btree::delete(&mut txn.w, &mut txn.sb.fs_root, k)?;
            }
            self.commit(txn)?;
            if batch.len() < MERGE_BATCH_ITEMS || last == hi {
                break;
            }
            lo = last.inc();
        }
        // Everything is in fs_root: give the trees' space back, drop them
        // and the records of the mounts that left them.
        for lt in lts {
            let mut txn = self.store.begin();
            let mut lt = lt;
            reclaim_freed(&mut txn, &mut lt)?;
            let mut avail = lt.meta_avail;
            let entries = txn.w.list_take_all(&mut avail)?;
            extent::free_blocks(&mut txn.w, &mut txn.sb.meta_alloc[1], entries)?;
            for e in extent::extents(&txn.w, &lt.data_avail)? {
                extent::free_extent(&mut txn.w, &mut txn.sb.data_alloc, e.start, e.len)?;
            }
            btree::free_tree(&mut txn.w, &mut lt.data_avail.root)?;
            btree::free_tree(&mut txn.w, &mut lt.item_root)?;
            btree::delete(
                &mut txn.w,
                &mut txn.sb.logs_root,
                &log_trees_key(lt.rid.get(), lt.nr.get()),
            )?;
            btree::delete(
                &mut txn.w,
                &mut txn.sb.mounted_clients,
                &mounted_client_key(lt.rid.get()),
            )?;
            let count = txn.sb.inode_count.get() as i64 + lt.inode_count_delta();
            txn.sb.inode_count = (count.max(0) as u64).into();
            self.commit(txn)?;
        }
        Ok(())
    }

    fn run(mut self, rx: Receiver<Event>) -> Store {
        while let Ok(ev) = rx.recv() {
            match ev {
                Event::Greeting {
                    conn,
                    rid,
                    client_term,
                } => match self.greeting(rid) {
                    Ok(()) => {
                        self.link.accept(conn);
                        // A mount of an earlier server: ask for its locks.
                        if client_term != 0 && client_term != self.term {
                            let outs = self.locks.greeted(Rid(rid));
                            self.lock_outputs(outs);
                        }
                    }
                    Err(e) => eprintln!("scoutfs: server: recording mount {rid:#x}: {e}"),
                },
                Event::Request {
                    rid,
                    id,
                    req: Request::Lock(m),
                } => self.lock_request(rid, id, m),
                Event::Request { rid, id, req } => {
                    let farewell = matches!(req, Request::Farewell);
                    let resp = self.request(rid, req).unwrap_or_else(|e| {
                        eprintln!("scoutfs: server: request from {rid:#x} failed: {e}");
                        Response::Error(e.errno())
                    });
                    self.link.respond(rid, id, &resp);
                    if farewell {
                        self.link.forget_when_gone(rid);
                    }
                }
                Event::Response { rid, id, resp } => self.response(rid, id, resp),
                Event::Shutdown => break,
            }
        }
        self.store
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
            ClientResponse::Done => {}
        }
    }

    /// Records a mount that greeted (a reconnect greets again: then it is
    /// already recorded and nothing is written).
    fn greeting(&mut self, rid: u64) -> Result<()> {
        let key = mounted_client_key(rid);
        let sb = &self.store.sb;
        if btree::lookup(self.store.cache.as_ref(), &sb.mounted_clients, &key)?.is_some() {
            return Ok(());
        }
        let mut txn = self.store.begin();
        let val = MountedClientVal::default();
        btree::insert(
            &mut txn.w,
            &mut txn.sb.mounted_clients,
            &key,
            0,
            0,
            val.as_bytes(),
        )?;
        self.commit(txn)
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
            match out {
                ServerOut::Grant { rid, net_id, msg } => {
                    self.link.respond(rid.0, net_id, &Response::Lock(msg));
                }
                ServerOut::Invalidate { rid, msg } => {
                    match self.link.request(rid.0, &ServerRequest::Invalidate(msg)) {
                        Ok(id) => {
                            self.asked.insert((rid.0, id));
                        }
                        Err(e) => eprintln!("scoutfs: server: {e}"),
                    }
                }
                // A recovering lock server asks each mount for its locks.
                ServerOut::Recover { rid, first } => {
                    let req = ServerRequest::LockRecover { first };
                    match self.link.request(rid.0, &req) {
                        Ok(id) => {
                            self.asked.insert((rid.0, id));
                        }
                        Err(e) => eprintln!("scoutfs: server: {e}"),
                    }
                }
                ServerOut::ProtocolError { rid, reason } => {
                    eprintln!(
                        "scoutfs: server: lock protocol error from {:#x}: {reason}",
                        rid.0
                    );
                }
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn commit(&mut self, mut txn: Txn) -> Result<()> {
        txn.sb.seq = self.seq.into();
        self.store.commit(txn)?;
        Ok(())
    }

    fn request(&mut self, rid: u64, req: Request) -> Result<Response> {
        match req {
            Request::Greeting { .. } => Err(Error::Invalid(
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
            Request::GetLogTrees => Ok(Response::LogTrees(Box::new(self.get_log_trees(rid)?))),
            Request::CommitLogTrees(lt) => {
                self.commit_log_trees(rid, &lt)?;
                Ok(Response::Done)
            }
            Request::GetRoots => {
                let sb = &self.store.sb;
                Ok(Response::Roots(Roots {
                    fs_root: sb.fs_root,
                    logs_root: sb.logs_root,
                    srch_root: sb.srch_root,
                }))
            }
            Request::Statfs => Ok(Response::Statfs(self.statfs()?)),
            Request::Farewell => {
                let mut seq = self.seq;
                let outs = self.locks.farewell(Rid(rid), &mut || {
                    seq += 1;
                    seq
                });
                self.seq = seq;
                self.lock_outputs(outs);
                let mut txn = self.store.begin();
                btree::delete(
                    &mut txn.w,
                    &mut txn.sb.mounted_clients,
                    &mounted_client_key(rid),
                )?;
                self.commit(txn)?;
                Ok(Response::Done)
            }
            Request::Lock(_) => unreachable!("lock requests are handled by lock_request"),
        }
    }

    /// The mount's current (last) log tree item, if any.
    fn current_log_trees(&self, txn: &Txn, rid: u64) -> Result<Option<LogTrees>> {
        let it = btree::prev(&txn.w, &txn.sb.logs_root, &log_trees_key(rid, u64::MAX))?;
        let Some(it) = it.filter(|it| it.key.zone == zone::LOG_TREES && it.key.first == rid) else {
            return Ok(None);
        };
        let lt = LogTrees::decode(&it.val)
            .map_err(|e| Error::Invalid(format!("log trees item: {e}")))?;
        Ok(Some(lt))
    }

    fn get_log_trees(&mut self, rid: u64) -> Result<LogTrees> {
        let mut txn = self.store.begin();
        let mut lt = match self.current_log_trees(&txn, rid)? {
            Some(lt) if lt.trans_open() => return Ok(lt),
            Some(lt) => lt,
            None => LogTrees {
                rid: rid.into(),
                nr: 1.into(),
                ..Default::default()
            },
        };
        reclaim_freed(&mut txn, &mut lt)?;
        refill(&mut txn, &mut lt)?;
        lt.get_trans_seq = self.next_seq().into();
        let key = log_trees_key(rid, lt.nr.get());
        btree::insert(&mut txn.w, &mut txn.sb.logs_root, &key, 0, 0, lt.as_bytes())?;
        self.commit(txn)?;
        Ok(lt)
    }

    fn commit_log_trees(&mut self, rid: u64, lt: &LogTrees) -> Result<()> {
        let mut txn = self.store.begin();
        let cur = self.current_log_trees(&txn, rid)?;
        let Some(cur) = cur.filter(|c| c.nr == lt.nr && lt.rid.get() == rid) else {
            return Err(Error::Invalid(format!(
                "commit of unknown log tree {rid:#x}.{}",
                lt.nr.get()
            )));
        };
        if !cur.trans_open() || cur.get_trans_seq != lt.get_trans_seq {
            // A resend of a commit that was already recorded.
            return Ok(());
        }
        let mut new = *lt;
        new.commit_trans_seq = new.get_trans_seq;
        // Seqs stay above every committed item, whichever server handed
        // them out (a mount may commit through a new server before it has
        // reported its locks).
        self.seq = self.seq.max(lt.max_item_seq.get());
        let key = log_trees_key(rid, lt.nr.get());
        btree::insert(
            &mut txn.w,
            &mut txn.sb.logs_root,
            &key,
            0,
            0,
            new.as_bytes(),
        )?;
        self.commit(txn)
    }

    fn statfs(&self) -> Result<StatfsInfo> {
        let sb = &self.store.sb;
        let mut free_meta = sb.meta_alloc[0].total_len.get() + sb.meta_alloc[1].total_len.get();
        for h in sb.server_meta_avail.iter().chain(&sb.server_meta_freed) {
            free_meta += h.total_nr.get();
        }
        let mut free_data = sb.data_alloc.total_len.get();
        let mut inodes = sb.inode_count.get() as i64;
        for lt in log_roots(self.store.cache.as_ref(), &sb.logs_root)? {
            free_meta += lt.meta_avail.total_nr.get() + lt.meta_freed.total_nr.get();
            free_data += lt.data_avail.total_len.get() + lt.data_freed.total_len.get();
            inodes += lt.inode_count_delta();
        }
        Ok(StatfsInfo {
            total_meta_blocks: sb.total_meta_blocks.get(),
            free_meta_blocks: free_meta,
            total_data_blocks: sb.total_data_blocks.get(),
            free_data_blocks: free_data,
            inode_count: inodes.max(0) as u64,
            fsid: sb.hdr.fsid.get(),
        })
    }
}

/// Items merged per server commit when merging log trees.
const MERGE_BATCH_ITEMS: usize = 20_000;

/// Returns what the mount freed in its committed transaction (durable now)
/// to the server's allocators.
fn reclaim_freed(txn: &mut Txn, lt: &mut LogTrees) -> Result<()> {
    let entries = txn.w.list_take_all(&mut lt.meta_freed)?;
    extent::free_blocks(&mut txn.w, &mut txn.sb.meta_alloc[1], entries)?;
    for e in extent::extents(&txn.w, &lt.data_freed)? {
        extent::free_extent(&mut txn.w, &mut txn.sb.data_alloc, e.start, e.len)?;
    }
    btree::free_tree(&mut txn.w, &mut lt.data_freed.root)?;
    lt.data_freed.total_len = 0.into();
    Ok(())
}

/// Fills the mount's metadata list and data extents for its next transaction.
fn refill(txn: &mut Txn, lt: &mut LogTrees) -> Result<()> {
    let target = meta_fill_target(&txn.sb);
    if lt.meta_avail.total_nr.get() < target / 2 {
        let mut head = lt.meta_avail;
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
        let low = head.total_nr.get() < target / 2;
        head.flags = u32::from(low).into();
        lt.meta_avail = head;
    }
    let target = data_fill_target(&txn.sb);
    if lt.data_avail.total_len.get() < target / 4 {
        while lt.data_avail.total_len.get() < target {
            let want = target - lt.data_avail.total_len.get();
            let Some(e) = extent::alloc_extent(&mut txn.w, &mut txn.sb.data_alloc, want)? else {
                break;
            };
            extent::free_extent(&mut txn.w, &mut lt.data_avail, e.start, e.len)?;
        }
        let low = lt.data_avail.total_len.get() < target / 4;
        lt.data_avail.flags = u32::from(low).into();
    }
    Ok(())
}
