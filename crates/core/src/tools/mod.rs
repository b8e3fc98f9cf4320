//! The offline tools: they read (and mkfs writes) a filesystem's devices
//! directly, without a mount.
//!
//! - [`mkfs`]: make a filesystem;
//! - [`check`]: verify everything reachable from the super block;
//! - [`df`]: space by device, with the metadata reserve;
//! - [`print`](mod@print): print blocks and items for a person to read;
//! - [`status`]: quorum slots, the server, fencing and recorded mounts.

pub mod check;
pub mod df;
pub mod mkfs;
pub mod print;
pub mod status;
