//! Seeded simulation of the open-inode map: mounts open, close, unlink and
//! delete the inodes of one group while they crash, are reclaimed, and the
//! server fails over; messages are delivered in any order, and lost with
//! the server they were to or from.
//!
//! The server is the real [`OmapServer`]; the mounts are modelled as the
//! filesystem uses it: an open takes the inode's read lock (it waits while
//! another mount deletes), a deleter holds the inode's write lock from its
//! question until it has acted on the answer, a mount answers from the
//! opens it has when the question arrives, and a question whose answer was
//! lost with a server is asked again of the next. Checked:
//! - safety: when a mount deletes an inode, no live mount has it open;
//! - liveness: once every live mount has closed everything and the dead
//!   are reclaimed, every unlinked inode is deleted (by the close that
//!   was last, or by an orphan scan).

mod common;

use common::sim::{run_part, Totals};
use scoutfs_core::cluster::net::msg::OpenInoMap;
use scoutfs_core::cluster::omap::OmapServer;
use scoutfs_core::rng::Rng;
use std::collections::{BTreeMap, BTreeSet};

const SEEDS: u64 = 20_000;
const PARTS: u64 = 2;
const MOUNTS: u64 = 4;
const STEPS: usize = 300;
/// The inodes of group 1.
const FIRST: u64 = 1024;
const INODES: u64 = 8;
const GROUP: u64 = 1;

#[derive(Clone, Debug)]
enum ToServer {
    Ask { id: u64 },
    Answer { id: u64, map: OpenInoMap },
}

#[derive(Clone, Debug)]
enum ToMount {
    Ask { id: u64 },
    Reply { id: u64, map: Option<OpenInoMap> },
}

#[derive(Default)]
struct Mount {
    alive: bool,
    /// Greeted the current server.
    greeted: bool,
    /// Still recorded as mounted (not reclaimed).
    recorded: bool,
    opens: BTreeMap<u64, u32>,
    /// The inode this mount is deleting and the id of its question.
    deleting: Option<(u64, u64)>,
}

#[derive(Default, Debug)]
struct Stats {
    deleted: u64,
    kept_open: u64,
    failovers: u64,
    crashes: u64,
}

impl Totals for Stats {
    fn add(&mut self, o: &Stats) {
        self.deleted += o.deleted;
        self.kept_open += o.kept_open;
        self.failovers += o.failovers;
        self.crashes += o.crashes;
    }
}

struct Sim {
    rng: Rng,
    trace: bool,
    mounts: Vec<Mount>,
    server: OmapServer,
    term: u64,
    /// Messages in flight: (rid, term of the server, message).
    to_server: Vec<(u64, u64, ToServer)>,
    to_mount: Vec<(u64, u64, ToMount)>,
    next_id: u64,
    linked: BTreeSet<u64>,
    unlinked: BTreeSet<u64>,
    deleted: BTreeSet<u64>,
    /// Write locks of deleters: ino to rid.
    wlock: BTreeMap<u64, u64>,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64, trace: bool) -> Sim {
        let mounts = (0..MOUNTS)
            .map(|_| Mount {
                alive: true,
                greeted: true,
                recorded: true,
                ..Default::default()
            })
            .collect();
        Sim {
            rng: Rng::new(seed),
            trace,
            mounts,
            server: OmapServer::new(),
            term: 1,
            to_server: Vec::new(),
            to_mount: Vec::new(),
            next_id: 1,
            linked: (FIRST..FIRST + INODES).collect(),
            unlinked: BTreeSet::new(),
            deleted: BTreeSet::new(),
            wlock: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    fn log(&self, what: std::fmt::Arguments) {
        if self.trace {
            eprintln!("{what}");
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn pick<T: Copy>(&mut self, v: &[T]) -> Option<T> {
        (!v.is_empty()).then(|| v[self.rng.below(v.len() as u64) as usize])
    }

    fn alive(&self) -> Vec<u64> {
        (0..MOUNTS)
            .filter(|&r| self.mounts[r as usize].alive)
            .collect()
    }

    fn map_of(&self, rid: u64) -> OpenInoMap {
        let mut m = OpenInoMap {
            group: GROUP,
            ..Default::default()
        };
        for &ino in self.mounts[rid as usize].opens.keys() {
            m.set(ino);
        }
        m
    }

    // --- mounts -----------------------------------------------------------

    /// An open: of a linked inode by name, or again of an unlinked one the
    /// mount has open; never while another mount deletes it.
    fn open(&mut self, rid: u64) {
        let m = &self.mounts[rid as usize];
        let mut can: Vec<u64> = self.linked.iter().copied().collect();
        can.extend(m.opens.keys().copied());
        can.retain(|i| !self.wlock.contains_key(i) && !self.deleted.contains(i));
        if let Some(ino) = self.pick(&can) {
            *self.mounts[rid as usize].opens.entry(ino).or_insert(0) += 1;
            self.log(format_args!("mount {rid} opens {ino}"));
        }
    }

    /// A close; the last one of an unlinked inode tries to delete it.
    fn close(&mut self, rid: u64) {
        let open: Vec<u64> = self.mounts[rid as usize].opens.keys().copied().collect();
        let Some(ino) = self.pick(&open) else {
            return;
        };
        let opens = &mut self.mounts[rid as usize].opens;
        let n = opens.get_mut(&ino).unwrap();
        *n -= 1;
        if *n == 0 {
            opens.remove(&ino);
            self.log(format_args!("mount {rid} closes {ino}"));
            self.try_delete(rid, ino);
        }
    }

    /// An unlink of the last name; the mount's kernel then forgets it.
    fn unlink(&mut self, rid: u64) {
        let linked: Vec<u64> = self.linked.iter().copied().collect();
        if let Some(ino) = self.pick(&linked) {
            self.linked.remove(&ino);
            self.unlinked.insert(ino);
            self.log(format_args!("mount {rid} unlinks {ino}"));
            self.try_delete(rid, ino);
        }
    }

    /// An orphan scan's try of one unlinked inode.
    fn scan(&mut self, rid: u64) {
        let unlinked: Vec<u64> = self.unlinked.iter().copied().collect();
        if let Some(ino) = self.pick(&unlinked) {
            self.try_delete(rid, ino);
        }
    }

    /// `Fs::delete_if_unused`: not if open here, or being deleted by
    /// another; else take the write lock and ask.
    fn try_delete(&mut self, rid: u64, ino: u64) {
        let m = &self.mounts[rid as usize];
        if !m.alive
            || m.deleting.is_some()
            || m.opens.contains_key(&ino)
            || !self.unlinked.contains(&ino)
            || self.wlock.contains_key(&ino)
        {
            return;
        }
        self.wlock.insert(ino, rid);
        let id = self.id();
        self.mounts[rid as usize].deleting = Some((ino, id));
        self.log(format_args!("mount {rid} asks about {ino} ({id})"));
        if self.mounts[rid as usize].greeted {
            self.to_server.push((rid, self.term, ToServer::Ask { id }));
        }
    }

    /// The answer to a mount's question.
    fn reply(&mut self, rid: u64, id: u64, map: Option<OpenInoMap>) {
        let m = &mut self.mounts[rid as usize];
        let Some((ino, asked)) = m.deleting else {
            return;
        };
        if asked != id {
            return;
        }
        m.deleting = None;
        self.wlock.remove(&ino);
        match map {
            Some(map) if !map.test(ino) => {
                for (r, other) in self.mounts.iter().enumerate() {
                    assert!(
                        !other.alive || !other.opens.contains_key(&ino),
                        "mount {rid} deleted {ino} while mount {r} has it open"
                    );
                }
                self.unlinked.remove(&ino);
                self.deleted.insert(ino);
                self.stats.deleted += 1;
                self.log(format_args!("mount {rid} deletes {ino}"));
            }
            Some(_) => {
                self.stats.kept_open += 1;
                self.log(format_args!("mount {rid} keeps {ino}: open somewhere"));
            }
            None => self.log(format_args!("mount {rid} was refused")),
        }
    }

    fn crash(&mut self, rid: u64) {
        let m = &mut self.mounts[rid as usize];
        m.alive = false;
        m.greeted = false;
        m.opens.clear();
        m.deleting = None;
        self.stats.crashes += 1;
        self.to_mount.retain(|(r, _, _)| *r != rid);
        self.log(format_args!("mount {rid} crashes"));
    }

    /// A crashed mount is fenced and reclaimed: its locks go, and the
    /// server stops waiting for it.
    fn reclaim(&mut self, rid: u64) {
        self.mounts[rid as usize].recorded = false;
        self.wlock.retain(|_, r| *r != rid);
        let done = self.server.gone(rid);
        self.replies(done);
        self.log(format_args!("mount {rid} is reclaimed"));
    }

    /// A live mount greets the new server and resends its question.
    fn reconnect(&mut self, rid: u64) {
        let m = &mut self.mounts[rid as usize];
        m.greeted = true;
        if let Some((_, id)) = m.deleting {
            self.to_server.push((rid, self.term, ToServer::Ask { id }));
        }
        self.log(format_args!("mount {rid} greets server {}", self.term));
    }

    // --- the server -------------------------------------------------------

    fn failover(&mut self) {
        self.term += 1;
        self.server = OmapServer::new();
        self.to_server.clear();
        self.to_mount.clear();
        for m in self.mounts.iter_mut() {
            m.greeted = false;
        }
        self.stats.failovers += 1;
        self.log(format_args!("server {} takes over", self.term));
    }

    fn replies(&mut self, done: Vec<(u64, u64, OpenInoMap)>) {
        for (rid, id, map) in done {
            let msg = ToMount::Reply { id, map: Some(map) };
            self.to_mount.push((rid, self.term, msg));
        }
    }

    fn server_receive(&mut self, rid: u64, msg: ToServer) {
        match msg {
            ToServer::Ask { id } => {
                if !self.mounts[rid as usize].recorded {
                    let msg = ToMount::Reply { id, map: None };
                    self.to_mount.push((rid, self.term, msg));
                    return;
                }
                let recorded: Vec<u64> = (0..MOUNTS)
                    .filter(|&r| self.mounts[r as usize].recorded)
                    .collect();
                let mut asks = Vec::new();
                let greeted: Vec<bool> = self.mounts.iter().map(|m| m.greeted).collect();
                let mut next = self.next_id;
                let done = self.server.request(rid, id, GROUP, &recorded, &mut |m| {
                    // A mount that has not greeted this server can't be asked.
                    greeted[m as usize].then(|| {
                        next += 1;
                        asks.push((m, next));
                        next
                    })
                });
                self.next_id = next;
                for (m, aid) in asks {
                    self.to_mount.push((m, self.term, ToMount::Ask { id: aid }));
                }
                self.replies(done.into_iter().collect());
            }
            ToServer::Answer { id, map } => {
                let done = self.server.answer(rid, id, &map);
                self.replies(done.into_iter().collect());
            }
        }
    }

    fn mount_receive(&mut self, rid: u64, msg: ToMount) {
        if !self.mounts[rid as usize].alive {
            return;
        }
        match msg {
            ToMount::Ask { id } => {
                let map = self.map_of(rid);
                self.to_server
                    .push((rid, self.term, ToServer::Answer { id, map }));
            }
            ToMount::Reply { id, map } => self.reply(rid, id, map),
        }
    }

    /// Delivers one message in flight, any of them.
    fn deliver(&mut self) -> bool {
        let n = self.to_server.len() + self.to_mount.len();
        if n == 0 {
            return false;
        }
        let i = self.rng.below(n as u64) as usize;
        if i < self.to_server.len() {
            let (rid, term, msg) = self.to_server.swap_remove(i);
            if term == self.term {
                self.server_receive(rid, msg);
            }
        } else {
            let (rid, term, msg) = self.to_mount.swap_remove(i - self.to_server.len());
            if term == self.term {
                self.mount_receive(rid, msg);
            }
        }
        true
    }

    fn step(&mut self) {
        let alive = self.alive();
        let rid = self.pick(&alive).expect("a live mount");
        match self.rng.below(20) {
            0..=3 => self.open(rid),
            4..=6 => self.close(rid),
            7 => self.unlink(rid),
            8 => self.scan(rid),
            9 if alive.len() > 1 && self.rng.below(4) == 0 => self.crash(rid),
            10 => {
                let dead: Vec<u64> = (0..MOUNTS)
                    .filter(|&r| {
                        let m = &self.mounts[r as usize];
                        !m.alive && m.recorded
                    })
                    .collect();
                if let Some(r) = self.pick(&dead) {
                    self.reclaim(r);
                }
            }
            11 if self.rng.below(8) == 0 => self.failover(),
            12 => {
                let away: Vec<u64> = alive
                    .iter()
                    .copied()
                    .filter(|&r| !self.mounts[r as usize].greeted)
                    .collect();
                if let Some(r) = self.pick(&away) {
                    self.reconnect(r);
                }
            }
            _ => {
                self.deliver();
            }
        }
    }

    /// Everything settles: the dead are reclaimed, the live greet the
    /// server and close what they have open, messages are delivered, and
    /// scans run until no unlinked inode is left.
    fn settle(&mut self) {
        for r in 0..MOUNTS {
            let m = &self.mounts[r as usize];
            if !m.alive && m.recorded {
                self.reclaim(r);
            }
            if self.mounts[r as usize].alive && !self.mounts[r as usize].greeted {
                self.reconnect(r);
            }
        }
        for r in self.alive() {
            while !self.mounts[r as usize].opens.is_empty() {
                self.close(r);
                while self.deliver() {}
            }
        }
        for _ in 0..(INODES * MOUNTS * 4) {
            while self.deliver() {}
            if self.unlinked.is_empty() {
                break;
            }
            let alive = self.alive();
            let r = self.pick(&alive).unwrap();
            self.scan(r);
        }
        while self.deliver() {}
        assert!(
            self.unlinked.is_empty(),
            "unlinked inodes {:?} were never deleted (locks {:?}, rounds {})",
            self.unlinked,
            self.wlock,
            self.server.rounds()
        );
        assert!(self.wlock.is_empty(), "locks left: {:?}", self.wlock);
    }
}

fn run_seed(seed: u64, trace: bool) -> Stats {
    let mut sim = Sim::new(seed, trace);
    for _ in 0..STEPS {
        sim.step();
    }
    sim.settle();
    sim.stats
}

fn part(p: u64) {
    run_part("omap_sim", p, PARTS, SEEDS, run_seed);
}

#[test]
fn omap_sim_part0() {
    part(0);
}

#[test]
fn omap_sim_part1() {
    part(1);
}

#[test]
fn no_inode_is_deleted_while_open_and_every_unlinked_one_is_deleted() {
    // Totals over the seeds of both parts, so that a change that stops
    // the simulation from deleting (or from finding inodes open) fails.
    let mut t = Stats::default();
    for seed in 0..200 {
        t.add(&run_seed(seed, false));
    }
    eprintln!("omap_sim totals of 200 seeds: {t:?}");
    assert!(t.deleted > 200 && t.kept_open > 50, "{t:?}");
    assert!(t.failovers > 20 && t.crashes > 20, "{t:?}");
}
