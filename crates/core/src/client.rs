//! The mount's client: its connection to the server.
//!
//! `call` sends a request and blocks until its response arrives. Lock
//! requests are sent with `send_lock`; their grants are delivered to the
//! lock handler instead of a waiting caller. Requests from the server (lock
//! invalidations, sync) are queued to a worker thread, never handled on the
//! receive thread, because handling them may need to call the server (a
//! commit) and wait for the receive thread to deliver that response.
//!
//! A receive thread reads every message from the server. Ids increase per
//! connection; every request gets exactly one response.

use crate::error::{Error, Result};
use crate::lock::LockMsg;
use crate::msg::{ClientResponse, Request, Response, ServerRequest, ToClient, ToServer};
use crate::server::Conn;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the client does with lock grants and server requests.
pub trait Handler: Send + Sync {
    /// A grant of a lock request sent with `send_lock`.
    fn lock_granted(&self, msg: LockMsg);
    /// A request from the server; the handler answers with `respond`.
    fn server_request(&self, id: u64, req: ServerRequest);
}

enum Waiter {
    Call(Sender<Response>),
    Lock,
}

pub struct Client {
    conn: Conn,
    rid: u64,
    waiters: Arc<Mutex<HashMap<u64, Waiter>>>,
    next_id: AtomicU64,
    recv: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// A client on `conn`, receiving on `rx`; `handler` gets grants and
    /// server requests.
    pub fn new(
        conn: Conn,
        rid: u64,
        rx: Receiver<ToClient>,
        handler: Arc<dyn Handler>,
    ) -> Arc<Client> {
        let waiters: Arc<Mutex<HashMap<u64, Waiter>>> = Arc::default();
        let w = waiters.clone();
        let recv = std::thread::Builder::new()
            .name("scoutfs-client-recv".into())
            .spawn(move || receive(rx, w, handler))
            .ok();
        Arc::new(Client {
            conn,
            rid,
            waiters,
            next_id: AtomicU64::new(1),
            recv: Mutex::new(recv),
        })
    }

    pub fn rid(&self) -> u64 {
        self.rid
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a request and waits for its response.
    pub fn call(&self, req: Request) -> Result<Response> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel();
        self.waiters().insert(id, Waiter::Call(tx));
        self.conn.send(ToServer::Request { id, req })?;
        match rx.recv() {
            Ok(Response::Error(errno)) => {
                Err(Error::Invalid(format!("server error: errno {errno}")))
            }
            Ok(resp) => Ok(resp),
            Err(_) => Err(Error::Invalid("the connection to the server closed".into())),
        }
    }

    /// Sends a lock request; its grant goes to the handler.
    pub fn send_lock(&self, msg: LockMsg) -> Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.waiters().insert(id, Waiter::Lock);
        self.conn.send(ToServer::Request {
            id,
            req: Request::Lock(msg),
        })
    }

    /// Answers a request from the server.
    pub fn respond(&self, id: u64, resp: ClientResponse) -> Result<()> {
        self.conn.send(ToServer::Response { id, resp })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The receive thread ends when the server side drops our channel.
        if let Some(t) = self.recv.lock().ok().and_then(|mut g| g.take()) {
            drop(t);
        }
    }
}

fn receive(
    rx: Receiver<ToClient>,
    waiters: Arc<Mutex<HashMap<u64, Waiter>>>,
    handler: Arc<dyn Handler>,
) {
    while let Ok(msg) = rx.recv() {
        match msg {
            ToClient::Response { id, resp } => {
                let w = waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                match (w, resp) {
                    (Some(Waiter::Call(tx)), resp) => {
                        let _ = tx.send(resp);
                    }
                    (Some(Waiter::Lock), Response::Lock(m)) => handler.lock_granted(m),
                    (_, resp) => eprintln!("scoutfs: client: unexpected response {id}: {resp:?}"),
                }
            }
            ToClient::Request { id, req } => handler.server_request(id, req),
        }
    }
}
