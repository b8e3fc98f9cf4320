//! Named counters of events that an operator or a test wants to see:
//! cache hits and misses, stale and corrupt blocks, I/O. Each is a relaxed
//! atomic; `snapshot` reads them all by name.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Every counter of one block cache (one mount or one tool run).
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }

        impl Counters {
            /// (name, value) of every counter, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    block_cache_hit,
    block_cache_miss,
    block_cache_evict,
    block_read_bytes,
    block_write_blocks,
    block_write_bytes,
    block_dirty_spilled,
    block_stale,
    block_corrupt,
    block_io_error,
    /// Blocks a writer refused to write because they failed the checks of
    /// a read (a bug; the commit fails).
    block_write_refused,
    btree_split,
    btree_join,
    btree_balance,
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
