//! One mount of the filesystem.
//!
//! - [`item`]: the item cache: fs items read through the forest, kept
//!   under the cluster locks that cover them, dirtied by transactions;
//! - [`trans`]: transactions: dirty items written to the mount's log tree
//!   and committed through the server;
//! - [`locks`]: the mount's driver of its lock client: waiting, messages,
//!   and the invalidations that commit and drop cached items;
//! - [`fs`]: the filesystem operations (inodes, directories, data,
//!   xattrs, ACLs) that the FUSE adapter calls;
//! - [`omap`]: the inodes the mount has open, which no mount may delete;
//! - [`control`]: the socket through which commands and archive agents
//!   reach a running mount;
//! - [`setup`]: mounting and unmounting, in order.

pub mod control;
pub mod fs;
pub mod item;
pub mod locks;
pub mod omap;
pub mod setup;
pub mod trans;

pub use setup::{new_rid, Mount, MountOptions, MountRole};
