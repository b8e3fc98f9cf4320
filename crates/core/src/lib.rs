//! The storage core of scoutfs-rs, bottom to top: devices (`dev`), the
//! metadata block cache (`block`), allocators (`alloc`), the copy-on-write
//! btree (`btree`), the commit of a whole metadata image (`commit`), and the
//! offline tools built on them (`mkfs`, `check`, `print`).
//!
//! Each layer calls only down. Errors are typed per layer and meet in
//! [`error::Error`]; corruption is a named kind with a counter
//! (`docs/corruption.md`).

pub mod alloc;
pub mod block;
pub mod btree;
pub mod check;
pub mod commit;
pub mod counters;
pub mod dev;
pub mod error;
pub mod mkfs;
pub mod print;
pub mod progress;
pub mod rng;

pub use error::{Error, Result};
