//! Allocators of metadata blocks and data blocks.
//!
//! Two structures, as in the original design:
//! - **alloc lists** (`list`): singly linked blocks of free metadata block
//!   numbers. A transaction allocates only from its *avail* list and frees
//!   only into its *freed* list, so the allocator itself dirties only list
//!   head blocks and never recurses into a btree.
//! - **free-extent btrees** (`extent`): an [`AllocRoot`](scoutfs_format::alloc::AllocRoot) btree with two items
//!   per free extent, one by position (to merge neighbours) and one by size
//!   order (to allocate from the largest extents). They hold the bulk of free
//!   metadata space (`meta_alloc`) and all free data space (`data_alloc`).
//!
//! The invariant `check` proves: at every commit each metadata block from
//! `META_DEV_START_BLKNO` is either referenced exactly once (by a btree, a
//! list block, ...) or free exactly once (an entry of an alloc list, or
//! inside an extent of a `meta_alloc` tree); each data block from
//! `DATA_DEV_START_BLKNO` is free in `data_alloc` or referenced by a file
//! extent, exactly once.
//!
//! Reuse is delayed until it is safe (`commit` orchestrates it): a block freed
//! by commit N sits in that commit's freed list, moves into the "freed"
//! `meta_alloc` tree during commit N+1 (when commit N is durable), and is
//! handed out again only after the two `meta_alloc` trees swap roles.

pub mod extent;
pub mod list;
