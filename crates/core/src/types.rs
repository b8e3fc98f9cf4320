//! Ids and roots that every layer passes around.
//!
//! They live here, below the layers, so that the store, the cluster and the
//! mount can name them without importing one another.

use scoutfs_format::BtreeRoot;
use std::fmt;

/// A mount's random id, never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rid(pub u64);

impl fmt::Display for Rid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The roots a reader of fs items needs, from the last written super block:
/// the merged fs tree, the tree of every mount's log trees, and the search
/// tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roots {
    pub fs_root: BtreeRoot,
    pub logs_root: BtreeRoot,
    pub srch_root: BtreeRoot,
}
