//! The core of scoutfs-rs, in four layers, each calling only down:
//!
//! - [`store`]: a metadata image on devices: devices, the block cache,
//!   allocators, the copy-on-write btree, the forest reader, commits.
//! - [`cluster`]: what mounts share: range locks, messages and their
//!   delivery, the quorum election, the server, the client, fencing.
//! - [`mount`]: one mount of the filesystem: the item cache, transactions,
//!   the filesystem operations, mount setup and teardown.
//! - [`tools`]: the offline commands: mkfs, check, print, status.
//!
//! Beside them sit what every layer shares: ids and roots ([`types`]), the
//! wall clock ([`clock`]), errors ([`error`]), counters, the seeded
//! generator and progress reports.
//!
//! Errors are typed per layer and meet in [`error::Error`]; corruption is a
//! named kind with a counter (`docs/corruption.md`).

pub mod clock;
pub mod cluster;
pub mod counters;
pub mod error;
pub mod log;
pub mod mount;
pub mod progress;
pub mod rng;
pub mod store;
pub mod tools;
pub mod types;

pub use error::{Error, Result};
