//! The store: a metadata image on its devices, bottom to top.
//!
//! - [`dev`]: block devices (files, block devices, remote ones) and their
//!   faults;
//! - [`block`]: the metadata block cache, reads that check a block's
//!   header and crc, and the writer of a commit's dirty blocks;
//! - [`alloc`]: allocators: lists of free blocks and trees of free extents;
//! - [`btree`]: the copy-on-write btree of items;
//! - [`forest`]: reading fs items across the fs tree and every mount's log
//!   tree, and the retry of a read that met a rewritten block;
//! - [`commit`]: the commit of a whole image (super block, allocators and
//!   roots) that the offline tools and the server build on.

pub mod alloc;
pub mod block;
pub mod btree;
pub mod commit;
pub mod dev;
pub mod forest;
