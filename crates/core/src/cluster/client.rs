//! The mount's client: its connection to the server.
//!
//! Each request has a typed call (`get_roots`, `alloc_inodes`,
//! `get_log_trees`, `commit_log_trees`, `statfs`, `farewell`) that sends it
//! and blocks until its response arrives; one private `call` checks every
//! response, turning the server's errno into [`Error::Server`]. Lock
//! requests are sent with `send_lock`; their grants are delivered to the
//! lock handler instead of a waiting caller. Requests from the server (lock
//! invalidations, sync) are queued to a worker thread, never handled on the
//! receive thread, because handling them may need to call the server (a
//! commit) and wait for the receive thread to deliver that response.
//!
//! The connection is TCP (`net::tcp`, with the delivery rules of
//! `net::stream`): the
//! network thread reads every message from the server and hands responses
//! to their waiters here. Every request gets exactly one response, across
//! reconnects.

use crate::cluster::lock::LockMsg;
use crate::cluster::net::msg::{
    ClientResponse, OpenInoMap, Request, Response, ServerRequest, StatfsInfo, WaitFail,
    WaitingBlock, WaitingQuery,
};
use crate::cluster::net::tcp::{ClientDeliver, ClientLink, ServerAddr};
use crate::cluster::net::wire::GREETING_FLAG_FAREWELL;
use crate::error::{Error, Result};
use crate::store::forest::RootsSource;
use crate::types::Roots;
use scoutfs_format::log_trees::LogTrees;
use std::collections::HashMap;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a mount waits for the server to answer its first greeting.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(30);

/// What the client does with lock grants and server requests.
pub trait Handler: Send + Sync {
    /// A grant of a lock request sent with `send_lock`.
    fn lock_granted(&self, msg: LockMsg);
    /// A request from the server; the handler answers with `respond`.
    fn server_request(&self, id: u64, req: ServerRequest);
    /// The server changed (a new term): what the old one asked is void,
    /// and the new one will ask for the locks held.
    fn server_changed(&self);
}

enum Waiter {
    Call(Sender<Response>),
    Lock,
}

/// Routes what the network delivers: responses to their waiters, server
/// requests to the handler (remembering which server asked).
struct Dispatch {
    waiters: Mutex<HashMap<u64, Waiter>>,
    /// The server term of each server request not yet answered.
    terms: Mutex<HashMap<u64, u64>>,
    handler: Arc<dyn Handler>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientDeliver for Dispatch {
    fn response(&self, id: u64, resp: Response) {
        let w = lock(&self.waiters).remove(&id);
        match (w, resp) {
            (Some(Waiter::Call(tx)), resp) => {
                let _ = tx.send(resp);
            }
            (Some(Waiter::Lock), Response::Lock(m)) => self.handler.lock_granted(m),
            (_, resp) => tracing::warn!("unexpected response {id}: {resp:?}"),
        }
    }

    fn request(&self, server_term: u64, id: u64, req: ServerRequest) {
        lock(&self.terms).insert(id, server_term);
        self.handler.server_request(id, req);
    }

    fn greeted(&self, server_term: u64, new_server: bool) {
        crate::log::set_term(server_term);
        tracing::debug!(term = server_term, new_server, "greeted by the server");
        if new_server {
            lock(&self.terms).clear();
            self.handler.server_changed();
        }
    }
}

pub struct Client {
    link: ClientLink,
    rid: u64,
    flags: u64,
    dispatch: Arc<Dispatch>,
}

impl Client {
    /// Connects mount `rid` of filesystem `fsid` to the server at `addr`,
    /// greeting with `flags` (`wire::GREETING_FLAG_QUORUM` for a quorum
    /// member); `handler` gets grants and server requests.
    pub fn connect(
        addr: ServerAddr,
        fsid: u64,
        key: crate::cluster::auth::ClusterKey,
        rid: u64,
        flags: u64,
        handler: Arc<dyn Handler>,
        abandon: &dyn Fn() -> Option<String>,
    ) -> Result<Arc<Client>> {
        let dispatch = Arc::new(Dispatch {
            waiters: Mutex::default(),
            terms: Mutex::default(),
            handler,
        });
        let link = ClientLink::connect(
            addr,
            (fsid, key),
            rid,
            flags,
            dispatch.clone(),
            GREETING_TIMEOUT,
            abandon,
        )?;
        Ok(Arc::new(Client {
            link,
            rid,
            flags,
            dispatch,
        }))
    }

    /// Says farewell (the last request of an unmount, after the final
    /// commit) and waits for the answer. A server may hold a quorum
    /// member's farewell until enough members remain or all leave
    /// together; meanwhile `gone` is asked every `poll`: when it says the
    /// server already processed the farewell (the mount's record is gone
    /// from the super block), the answer is no longer needed. That is how
    /// a mount finishes when the server that answered it stopped before
    /// the answer arrived and no server will follow.
    pub fn farewell(&self, poll: Duration, gone: impl Fn() -> bool) -> Result<()> {
        // Later connections greet as leaving, so a new server knows.
        self.link.set_flags(self.flags | GREETING_FLAG_FAREWELL)?;
        let (tx, rx) = channel();
        self.link.request(&Request::Farewell, |id| {
            lock(&self.dispatch.waiters).insert(id, Waiter::Call(tx));
        })?;
        loop {
            match rx.recv_timeout(poll) {
                Ok(Response::Error(errno)) => return Err(server_error("farewell", errno)),
                Ok(_) => return Ok(()),
                Err(RecvTimeoutError::Timeout) => {
                    if gone() {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(closed("farewell")),
            }
        }
    }

    pub fn rid(&self) -> u64 {
        self.rid
    }

    /// Sends a request and waits for its response: `pick` takes what the
    /// request expects from it. An errno the server answers with is
    /// [`Error::Server`] (callers see that errno); any other response is a
    /// protocol violation. The one place responses are checked.
    fn call<T>(
        &self,
        req: Request,
        what: &'static str,
        pick: impl FnOnce(Response) -> std::result::Result<T, Response>,
    ) -> Result<T> {
        let (tx, rx) = channel();
        self.link
            .request(&req, |id| {
                lock(&self.dispatch.waiters).insert(id, Waiter::Call(tx));
            })
            .map_err(|e| e.context(what))?;
        match rx.recv() {
            Ok(Response::Error(errno)) => Err(server_error(what, errno)),
            Ok(resp) => pick(resp)
                .map_err(|other| Error::Protocol(format!("{what}: unexpected response {other:?}"))),
            Err(_) => Err(closed(what)),
        }
    }

    /// The roots of the server's last written super block.
    pub fn get_roots(&self) -> Result<Roots> {
        self.call(Request::GetRoots, "get roots", |r| match r {
            Response::Roots(r) => Ok(r),
            other => Err(other),
        })
    }

    /// A run of inode numbers for new inodes: (first, count).
    pub fn alloc_inodes(&self, count: u64) -> Result<(u64, u64)> {
        self.call(
            Request::AllocInodes { count },
            "alloc inodes",
            |r| match r {
                Response::Inodes { ino, nr } => Ok((ino, nr)),
                other => Err(other),
            },
        )
    }

    /// Opens the mount's next transaction on its log tree.
    pub fn get_log_trees(&self) -> Result<LogTrees> {
        self.call(Request::GetLogTrees, "get log trees", |r| match r {
            Response::LogTrees(lt) => Ok(*lt),
            other => Err(other),
        })
    }

    /// Records the mount's committed log tree; returns the next open one.
    pub fn commit_log_trees(&self, lt: LogTrees) -> Result<LogTrees> {
        let req = Request::CommitLogTrees(Box::new(lt));
        self.call(req, "commit log trees", |r| match r {
            Response::LogTrees(lt) => Ok(*lt),
            other => Err(other),
        })
    }

    /// Which inodes of `group` any mount has open.
    pub fn open_ino_map(&self, group: u64) -> Result<OpenInoMap> {
        let req = Request::OpenInoMap { group };
        self.call(req, "open inode map", |r| match r {
            Response::OpenInoMap(m) if m.group == group => Ok(*m),
            other => Err(other),
        })
    }

    /// The last seq whose transactions are all complete on every mount,
    /// once the transactions open now have committed (or the server
    /// stopped waiting for them): no index item will be written at a seq
    /// at or below it again.
    pub fn get_last_seq(&self) -> Result<u64> {
        self.call(Request::GetLastSeq, "get last seq", |r| match r {
            Response::LastSeq(s) => Ok(s),
            other => Err(other),
        })
    }

    /// The blocks operations wait for on every mount (see
    /// [`WaitingQuery`]).
    pub fn data_waiting(&self, q: WaitingQuery) -> Result<Vec<WaitingBlock>> {
        self.call(Request::DataWaiting(q), "data waiting", |r| match r {
            Response::DataWaiting(ws) => Ok(ws),
            other => Err(other),
        })
    }

    /// Tells the server of blocks this mount's operations began to wait
    /// for (it tells the other mounts, for their followers).
    pub fn waiters_new(&self, ws: Vec<WaitingBlock>) -> Result<()> {
        self.call(Request::WaitersNew(ws), "waiters new", |r| match r {
            Response::Done => Ok(()),
            other => Err(other),
        })
    }

    /// Fails the operations `f` names on every mount; returns how many.
    pub fn data_wait_err(&self, f: WaitFail) -> Result<u64> {
        self.call(Request::DataWaitErr(f), "data wait err", |r| match r {
            Response::Count(n) => Ok(n),
            other => Err(other),
        })
    }

    /// Space and inode counts.
    pub fn statfs(&self) -> Result<StatfsInfo> {
        self.call(Request::Statfs, "statfs", |r| match r {
            Response::Statfs(s) => Ok(s),
            other => Err(other),
        })
    }

    /// Asks the server to grow the devices to these totals, in their blocks
    /// (0: unchanged).
    pub fn resize_devices(&self, meta_blocks: u64, data_blocks: u64) -> Result<()> {
        let req = Request::ResizeDevices {
            meta: meta_blocks,
            data: data_blocks,
        };
        self.call(req, "resize devices", |r| match r {
            Response::Done => Ok(()),
            other => Err(other),
        })
    }

    /// Sends a lock request; its grant goes to the handler.
    pub fn send_lock(&self, msg: LockMsg) -> Result<()> {
        self.link.request(&Request::Lock(msg), |id| {
            lock(&self.dispatch.waiters).insert(id, Waiter::Lock);
        })?;
        Ok(())
    }

    /// Answers a request from the server.
    pub fn respond(&self, id: u64, resp: ClientResponse) -> Result<()> {
        let term = lock(&self.dispatch.terms).remove(&id).ok_or_else(|| {
            Error::Internal(format!("no server request {id} is waiting for an answer"))
        })?;
        self.link.respond(term, id, &resp)
    }

    /// Closes the connection (at unmount, after the farewell); callers
    /// still waiting get an error.
    pub fn close(&self) {
        self.link.close();
        lock(&self.dispatch.waiters).clear();
    }
}

/// The server answered `what` with `errno`.
fn server_error(what: &'static str, errno: i32) -> Error {
    Error::Server {
        what,
        errno,
        cause: crate::store::block::eio_cause(errno),
    }
}

fn closed(what: &'static str) -> Error {
    Error::Disconnected(format!("{what}: the connection to the server closed"))
}

impl RootsSource for Client {
    fn roots(&self) -> Result<Roots> {
        self.get_roots()
    }
}
