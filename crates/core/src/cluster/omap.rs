//! The server's side of the open-inode map: a mount about to delete an
//! unlinked inode asks which inodes of its group any mount has open; the
//! server asks every mounted client, the asker included, and answers the
//! union of their maps once each has answered or is gone.
//!
//! A mount the server can't ask (it has not greeted this server since a
//! failover) counts as having every inode of the group open, and so does
//! one that answers for another group: the asker then leaves the inode for
//! a later try. A mount that leaves or is fenced while a round waits for it
//! stops counting (what it had open is closed with it), and the rounds it
//! asked are dropped (nobody waits for their answer). A server that fails
//! over loses its rounds; the askers' requests are resent to the next one,
//! which starts them again.
//!
//! Like the lock server, this owns no threads or sockets: the server asks
//! through the `ask` callback and sends the answers it is handed back, so a
//! simulation can run it (`tests/omap_sim.rs`).

use crate::cluster::net::msg::OpenInoMap;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One mount's question: the union of the answers so far, and the mounts
/// still to answer.
struct Round {
    /// Who asked: (rid, request id).
    asker: (u64, u64),
    map: OpenInoMap,
    waiting: BTreeSet<u64>,
}

/// An answer for an asker: (rid, request id, the union of the maps).
pub type OmapAnswer = (u64, u64, OpenInoMap);

/// The rounds under way.
#[derive(Default)]
pub struct OmapServer {
    rounds: BTreeMap<u64, Round>,
    /// The round each of our requests to a mount (rid, id) answers.
    asked: HashMap<(u64, u64), u64>,
    next: u64,
}

impl OmapServer {
    pub fn new() -> OmapServer {
        OmapServer::default()
    }

    /// Mount `rid` asks (request `id`) about `group`: asks each of
    /// `mounted` through `ask`, which returns the id of the request it
    /// sent, or None when it can't reach that mount. Returns the answer if
    /// no mount is left to wait for.
    pub fn request(
        &mut self,
        rid: u64,
        id: u64,
        group: u64,
        mounted: &[u64],
        ask: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> Option<OmapAnswer> {
        let nr = self.next;
        self.next += 1;
        let mut round = Round {
            asker: (rid, id),
            map: OpenInoMap {
                group,
                ..Default::default()
            },
            waiting: BTreeSet::new(),
        };
        for &m in mounted {
            match ask(m) {
                Some(aid) => {
                    self.asked.insert((m, aid), nr);
                    round.waiting.insert(m);
                }
                None => round.map = OpenInoMap::all(group),
            }
        }
        self.rounds.insert(nr, round);
        self.done(nr)
    }

    /// Mount `rid` answered our request `id` with `map`.
    pub fn answer(&mut self, rid: u64, id: u64, map: &OpenInoMap) -> Option<OmapAnswer> {
        let nr = self.asked.remove(&(rid, id))?;
        let r = self.rounds.get_mut(&nr)?;
        if map.group == r.map.group {
            r.map.union(map);
        } else {
            tracing::warn!(
                "mount {rid:#x} answered open inode map group {} for group {}",
                map.group,
                r.map.group
            );
            r.map = OpenInoMap::all(r.map.group);
        }
        r.waiting.remove(&rid);
        self.done(nr)
    }

    /// Mount `rid` is gone (it left, or was fenced and reclaimed).
    pub fn gone(&mut self, rid: u64) -> Vec<OmapAnswer> {
        self.asked.retain(|&(r, _), _| r != rid);
        self.rounds.retain(|_, r| r.asker.0 != rid);
        let nrs: Vec<u64> = self.rounds.keys().copied().collect();
        let mut out = Vec::new();
        for nr in nrs {
            if let Some(r) = self.rounds.get_mut(&nr) {
                r.waiting.remove(&rid);
            }
            out.extend(self.done(nr));
        }
        out
    }

    /// Rounds under way.
    pub fn rounds(&self) -> usize {
        self.rounds.len()
    }

    /// Ends round `nr` if no mount is left to answer it.
    fn done(&mut self, nr: u64) -> Option<OmapAnswer> {
        if !self.rounds.get(&nr)?.waiting.is_empty() {
            return None;
        }
        let r = self.rounds.remove(&nr)?;
        Some((r.asker.0, r.asker.1, r.map))
    }
}
