//! The control socket: how the `scoutfs` commands and archive agents reach
//! a running mount (what the original did with ioctls on a file of the
//! mount).
//!
//! Each mount serves a Unix stream socket in the run directory, named by
//! the device number of its FUSE mount ([`socket_path`]), so a program
//! finds the mount of any path from `stat(2)` of the path alone. Requests
//! and responses are length-prefixed frames with a versioned header
//! (`scoutfs_format::control`, specified in `docs/control.md`); a request
//! may carry open file descriptors, so that the kernel has checked the
//! caller's access to a file before the mount acts on it, and the mount
//! knows the caller's credentials from the socket (`SO_PEERCRED`).
//!
//! - [`client`]: [`ControlClient`], the library side an agent links;
//! - [`server`]: [`ControlServer`], the mount side;
//! - [`proto`]: frames on a socket, with their descriptors, and where a
//!   mount's socket is.
//!
//! # Limits
//!
//! A request's payload is at most [`CONTROL_REQUEST_MAX`](scoutfs_format::control::CONTROL_REQUEST_MAX) bytes with at
//! most [`CONTROL_FDS_MAX`](scoutfs_format::control::CONTROL_FDS_MAX) descriptors; a response frame at most
//! [`CONTROL_RESPONSE_MAX`](scoutfs_format::control::CONTROL_RESPONSE_MAX) bytes. A frame must arrive whole within
//! [`FRAME_TIMEOUT`] of its first byte.

pub mod client;
pub mod proto;
pub mod server;

pub use client::{ControlClient, MountStatfs};
pub use proto::{header, recv_frame, send_frame, socket_path, Frame, FrameError, FRAME_TIMEOUT};
pub use server::{ControlServer, ControlStats};
