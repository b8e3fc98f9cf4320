//! The cluster: what the mounts of one filesystem share and how they agree.
//!
//! - [`lock`]: range locks: their modes and ranges, the state machine of a
//!   mount's lock client and of the server's lock service;
//! - [`net`]: messages, their bytes on the wire, their reliable delivery
//!   across reconnects and server changes, and the TCP drivers;
//! - [`quorum`]: the election of the mount that runs the server, and the
//!   quorum blocks that name it;
//! - [`server`]: the server: it records mounts and their log trees, hands
//!   out space and grants locks;
//! - [`omap`]: the server's rounds of the open-inode map (which inodes
//!   any mount has open, asked before an unlinked inode is deleted);
//! - [`client`]: a mount's calls to the server;
//! - [`elected`]: a quorum member's server, started and stopped by
//!   elections;
//! - [`fence`]: fencing the mounts the server gave up on;
//! - [`auth`]: the cluster key that authenticates datagrams and greetings.
//!
//! State machines (lock client and server, streams, the election agent,
//! the open-inode map rounds)
//! own no threads, sockets or clocks; their drivers do, so a seeded
//! simulation can run them in one thread.

pub mod auth;
pub mod client;
pub mod elected;
pub mod fence;
pub mod lock;
pub mod net;
pub mod omap;
pub mod quorum;
pub mod server;
