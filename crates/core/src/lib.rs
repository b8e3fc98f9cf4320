//! The storage core of scoutfs-rs, bottom to top: devices (`dev`), the
//! metadata block cache (`block`), allocators (`alloc`), the copy-on-write
//! btree (`btree`), the commit of a whole metadata image (`commit`), the
//! offline tools built on them (`mkfs`, `check`, `print`, `status`); then the mount:
//! the forest reader (`forest`), item cache (`item`), cluster locks (`lock`,
//! `lock_server`, and the driver `locks`), messages (`msg`), their bytes on
//! the wire (`wire`: frames, payloads, a streaming decoder), their reliable
//! delivery across reconnects and server changes as state machines without
//! I/O (`net`), the election of the server's host among the quorum slots
//! and the reading of quorum blocks (`quorum`), their TCP drivers (`tcp`),
//! the server (`server`) and client (`client`), the fencing of mounts the
//! server gave up on (`fence`, with the local agent), transactions
//! (`trans`), the filesystem (`fs`) and the setup of a mount (`mount`).
//!
//! Each layer calls only down. Errors are typed per layer and meet in
//! [`error::Error`]; corruption is a named kind with a counter
//! (`docs/corruption.md`).

pub mod alloc;
pub mod auth;
pub mod block;
pub mod btree;
pub mod check;
pub mod client;
pub mod cluster;
pub mod commit;
pub mod counters;
pub mod dev;
pub mod error;
pub mod fence;
pub mod forest;
pub mod fs;
pub mod item;
pub mod lock;
pub mod lock_server;
pub mod locks;
pub mod mkfs;
pub mod mount;
pub mod msg;
pub mod net;
pub mod print;
pub mod progress;
pub mod quorum;
pub mod rng;
pub mod server;
pub mod status;
pub mod tcp;
pub mod trans;
pub mod wire;

pub use error::{Error, Result};
