//! The scoutfs-rs format: every on-disk structure and constant, keys, and
//! the block checksum. No I/O happens here.
//!
//! Every structure is `#[repr(C)]` of little-endian fields with alignment 1
//! (zerocopy), so its bytes are its layout. Padding is zero on write and
//! checked on read. Every decoder takes arbitrary bytes and returns a
//! [`DecodeError`] rather than panicking. The written spec is `docs/format.md`;
//! the compile-time size table is in `sizes.rs`.

pub mod alloc;
pub mod block;
pub mod bloom;
pub mod btree;
pub mod consts;
pub mod control;
pub mod data;
pub mod dir;
pub mod error;
pub mod hash;
pub mod inode;
pub mod key;
pub mod log_trees;
pub mod quorum;
pub mod sizes;
pub mod srch;
pub mod super_block;
pub mod wire;
pub mod xattr;

pub use alloc::{AllocListHead, AllocRoot};
pub use block::{BlockHeader, BlockRef, Timespec};
pub use bloom::BloomBlockHeader;
pub use btree::{BtreeItem, BtreeRoot};
pub use consts::*;
pub use data::DataExtentVal;
pub use dir::DirentHeader;
pub use error::DecodeError;
pub use inode::Inode;
pub use key::Key;
pub use log_trees::{LogTrees, MountedClientVal};
pub use quorum::{QuorumBlock, QuorumEvent, QuorumMessage};
pub use srch::{SrchEntry, SrchFile};
pub use super_block::SuperBlock;
pub use xattr::XattrHeader;
