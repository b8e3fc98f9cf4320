//! `scoutfs status`: what an administrator of a shared-disk cluster wants
//! to know without mounting — who holds which quorum slot, which server
//! clients would connect to, which old leaders a server must fence, and
//! which mounts the super block still records.
//!
//! [`read_status`] reads the metadata device's super block, the quorum
//! block of every configured slot, and the super's `mounted_clients` and
//! `logs_root` btrees, and returns a [`Status`]. It writes nothing. The
//! struct renders itself as text (`Display`) and as one line of JSON
//! ([`Status::to_json`]); the command line only prints. `scoutfs status
//! PATH` finds the running mount on PATH (from the file each mount writes
//! in the run directory), reads this struct from its metadata device and
//! adds the mount's own role.
//!
//! # Failures
//!
//! A super block that cannot be read is an error: nothing else can be
//! trusted without it. A quorum block or a tree that cannot be read is
//! recorded in its place (the slot is "unreadable") and the rest is still
//! read; [`Status::problems`] lists them, and the command exits non-zero.
//! The server and the leaders to fence are derived from the readable slots
//! only: an unreadable slot might hold a newer election.
//!
//! Status is meant for filesystems that other nodes have mounted: their
//! server may commit while we read, and a tree block read after the super
//! may have been freed and reused (a stale block). Then the whole status is
//! read again from a newer super, at most
//! [`STALE_RETRIES_MAX`](crate::store::forest::STALE_RETRIES_MAX) times.
//!
//! # The server and fencing
//!
//! The server is [`current_server`], as clients find it: the greatest ELECT
//! term that is greater than its slot's STOP term. The old leaders to fence
//! are [`leaders_to_fence`] for a server of the greatest term, excluding the
//! current server's own mount: those a server must fence before it serves.
//! A FENCE event of the greatest fence term means that server fenced every
//! older leader, which then no longer appear.
//!
//! # Slot states ([`slot_state`]), first match wins
//!
//! - `never used`: the block was never written (`write_nr` 0).
//! - `fenced`: the ELECT term is greater than the STOP term, but below the
//!   greatest FENCE term of any slot: a newer server fenced this leader
//!   before it served (the rule of [`leaders_to_fence`]), and the leader
//!   never recorded its stop.
//! - `leader`: the ELECT term is greater than the STOP term, the rule the
//!   quorum code uses to find the server and the leaders to fence. The
//!   server may be running; it is up (has fenced) when a FENCE event of the
//!   ELECT term follows.
//! - `unmounted cleanly`: an END event was written in or after the write of
//!   the last BEGIN: the agent of the slot's last mount shut down.
//! - `stopped`: a STOP event follows the last BEGIN, and no END: the
//!   slot's mount ran a server that stopped and is still mounted as a
//!   follower, or crashed after.
//! - `member`: anything else (a BEGIN without a later STOP or END): a
//!   mount uses the slot as a follower, or crashed.
//!
//! Only configured slots are read. Terms compare as the quorum code
//! compares them; write numbers order events within one block.

use crate::cluster::quorum::blocks::{
    current_server, event_term, greatest_term, leaders_to_fence, EventKind, OldLeader,
    ServerLocation,
};
use crate::cluster::quorum::{SlotNr, SlotSet, Term};
use crate::error::{CorruptKind, Error, Result};
use crate::store::block::{read_sm, BlockCache};
use crate::store::btree;
use crate::store::commit::read_super;
use crate::store::dev::BlockDev;
use crate::store::forest::{log_roots, retry_while_stale};
use crate::types::Rid;
use scoutfs_format::block::Timespec;
use scoutfs_format::consts::{magic, QUORUM_BLKNO};
use scoutfs_format::key::zone;
use scoutfs_format::log_trees::{MountedClientVal, MOUNTED_CLIENT_QUORUM};
use scoutfs_format::quorum::{quorum_event_name, QuorumBlock, QUORUM_EVENT_NR};
use scoutfs_format::{BtreeRoot, Key, SuperBlock};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Blocks the status reader's cache keeps: it reads each block once.
const STATUS_CACHE_BLOCKS: usize = 64;

/// Everything `scoutfs status` reports.
#[derive(Clone, Debug)]
pub struct Status {
    pub fsid: u64,
    pub fmt_vers: u64,
    /// The super block's seq (the server's counter at its last commit).
    pub seq: u64,
    /// Every configured slot, in slot order.
    pub slots: Vec<SlotStatus>,
    /// Votes an election needs among the configured slots.
    pub votes_needed: usize,
    /// The greatest term of any event of any readable slot.
    pub greatest_term: Term,
    /// The greatest FENCE term of any readable slot: the leaders of older
    /// terms were fenced by the server that recorded it.
    pub fenced_below: Term,
    /// The server clients would connect to ([`current_server`]).
    pub server: Option<ServerLocation>,
    /// Old leaders a server of `greatest_term` must fence before serving
    /// ([`leaders_to_fence`]); the current server itself is not listed.
    pub to_fence: Vec<OldLeader>,
    /// The mounts recorded in `mounted_clients`, or why it is unreadable.
    pub mounted_clients: std::result::Result<Vec<MountedClient>, String>,
    /// Every log tree in `logs_root`, or why it is unreadable.
    pub log_trees: std::result::Result<Vec<LogTreeStatus>, String>,
}

/// One configured quorum slot.
#[derive(Clone, Debug)]
pub struct SlotStatus {
    pub slot: SlotNr,
    pub addr: SocketAddr,
    /// The slot's quorum block, or why it could not be read.
    pub block: std::result::Result<QuorumBlock, String>,
    /// What the block says, in the light of every slot's FENCE events.
    pub state: SlotState,
}

/// A mount recorded in the super's `mounted_clients` btree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountedClient {
    pub rid: Rid,
    /// The address the mount connected from, if the server recorded one.
    pub addr: Option<SocketAddr>,
    /// Whether the mount is a quorum member.
    pub quorum: bool,
}

/// One log tree of `logs_root`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTreeStatus {
    pub rid: Rid,
    pub nr: u64,
    /// The seq of the last committed transaction (0: none yet).
    pub committed_seq: u64,
    /// The seq of a transaction the server opened and that has not committed.
    pub open_seq: Option<u64>,
    /// The server seq the tree was finalized at, if it was.
    pub finalize_seq: Option<u64>,
}

/// What a slot's quorum block says about it (see the module comment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotState {
    Unreadable(String),
    NeverUsed,
    /// Elected and not stopped, but a server of `by_term` fenced it.
    Fenced {
        term: Term,
        rid: Rid,
        by_term: Term,
    },
    /// Elected and not stopped; `up` when a FENCE of the term followed.
    Leader {
        term: Term,
        rid: Rid,
        up: bool,
    },
    /// END in or after the last BEGIN's write, at `term`.
    Unmounted {
        term: Term,
    },
    /// The server of `term` stopped; no END since.
    Stopped {
        term: Term,
    },
    /// In use as a follower, or crashed; `term` is the block's greatest.
    Member {
        term: Term,
    },
}

impl SlotState {
    /// A stable name for JSON.
    pub fn name(&self) -> &'static str {
        match self {
            SlotState::Unreadable(_) => "unreadable",
            SlotState::NeverUsed => "never_used",
            SlotState::Fenced { .. } => "fenced",
            SlotState::Leader { .. } => "leader",
            SlotState::Unmounted { .. } => "unmounted",
            SlotState::Stopped { .. } => "stopped",
            SlotState::Member { .. } => "member",
        }
    }

    /// The term the state is about, if any.
    pub fn term(&self) -> Option<Term> {
        match self {
            SlotState::Unreadable(_) | SlotState::NeverUsed => None,
            SlotState::Fenced { term, .. }
            | SlotState::Leader { term, .. }
            | SlotState::Unmounted { term }
            | SlotState::Stopped { term }
            | SlotState::Member { term } => Some(*term),
        }
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotState::Unreadable(e) => write!(f, "UNREADABLE: {e}"),
            SlotState::NeverUsed => write!(f, "never used"),
            SlotState::Fenced { term, by_term, .. } => write!(
                f,
                "fenced (leader of term {term}, never stopped, fenced by the server of term \
                 {by_term})"
            ),
            SlotState::Leader { term, up, .. } => {
                let up = if *up {
                    "up (FENCE recorded)"
                } else {
                    "not up yet (no FENCE)"
                };
                write!(f, "leader (server may be running) term {term}, {up}")
            }
            SlotState::Unmounted { term } => write!(f, "unmounted cleanly (END term {term})"),
            SlotState::Stopped { term } => write!(
                f,
                "stopped (server of term {term} stopped; still mounted or crashed)"
            ),
            SlotState::Member { term } => {
                write!(f, "member term {term} (mounted as a follower, or crashed)")
            }
        }
    }
}

/// The kinds of event in block order, for listing.
const EVENT_KINDS: [EventKind; QUORUM_EVENT_NR] = [
    EventKind::Begin,
    EventKind::Term,
    EventKind::Elect,
    EventKind::Fence,
    EventKind::Stop,
    EventKind::End,
];

fn write_nr(qb: &QuorumBlock, kind: EventKind) -> u64 {
    qb.events[kind.index()].write_nr.get()
}

/// The state of a slot from its quorum block (the module comment says
/// how); `fenced_below` is the greatest FENCE term of all slots' blocks.
pub fn slot_state(qb: &QuorumBlock, fenced_below: Term) -> SlotState {
    use EventKind as E;
    if qb.write_nr.get() == 0 {
        return SlotState::NeverUsed;
    }
    let elect = event_term(qb, E::Elect);
    if elect > event_term(qb, E::Stop) {
        let rid = Rid(qb.events[E::Elect.index()].rid.get());
        if elect < fenced_below {
            return SlotState::Fenced {
                term: elect,
                rid,
                by_term: fenced_below,
            };
        }
        return SlotState::Leader {
            term: elect,
            rid,
            up: event_term(qb, E::Fence) == elect,
        };
    }
    let begin = write_nr(qb, E::Begin);
    let after_begin = |k| write_nr(qb, k) != 0 && write_nr(qb, k) >= begin;
    if after_begin(E::End) {
        return SlotState::Unmounted {
            term: event_term(qb, E::End),
        };
    }
    if after_begin(E::Stop) {
        return SlotState::Stopped {
            term: event_term(qb, E::Stop),
        };
    }
    let term = qb.events.iter().map(|e| Term(e.term.get())).max();
    SlotState::Member {
        term: term.unwrap_or_default(),
    }
}

/// The rid of the slot's most recent write (None if never written).
pub fn last_rid(qb: &QuorumBlock) -> Option<Rid> {
    qb.events
        .iter()
        .filter(|e| e.write_nr.get() != 0)
        .max_by_key(|e| e.write_nr.get())
        .map(|e| Rid(e.rid.get()))
}

/// Reads the status of the filesystem on `meta` (the metadata device).
/// Fails only if the super block cannot be read, or if the trees changed
/// under every retry; see the module comment.
pub fn read_status(meta: &Arc<dyn BlockDev>) -> Result<Status> {
    retry_while_stale(|| read_once(meta))
}

/// A tree's contents, or why they could not be read; a stale block is
/// returned as the error, for a retry from a newer super.
fn unless_stale<T>(res: Result<T>, what: &str) -> Result<std::result::Result<T, String>> {
    match res {
        Ok(v) => Ok(Ok(v)),
        Err(e @ Error::Stale { .. }) => Err(e),
        Err(e) => Ok(Err(format!("{what}: {e}"))),
    }
}

fn read_once(meta: &Arc<dyn BlockDev>) -> Result<Status> {
    let sb = read_super(meta.as_ref(), true)?;
    let fsid = sb.hdr.fsid.get();
    let configured = SlotSet::from_config(&sb.qconf);
    let read: Vec<_> = sb
        .quorum_slots()
        .map(|(i, addr)| {
            let slot = SlotNr(i as u8);
            let block = read_quorum_block(meta.as_ref(), fsid, slot).map_err(|e| e.to_string());
            (slot, addr, block)
        })
        .collect();
    let blocks: Vec<(SlotNr, QuorumBlock)> = read
        .iter()
        .filter_map(|(slot, _, b)| Some((*slot, *b.as_ref().ok()?)))
        .collect();
    let fenced_below = blocks
        .iter()
        .map(|(_, qb)| event_term(qb, EventKind::Fence))
        .max()
        .unwrap_or_default();
    let slots = read
        .into_iter()
        .map(|(slot, addr, block)| {
            let state = match &block {
                Ok(qb) => slot_state(qb, fenced_below),
                Err(e) => SlotState::Unreadable(e.clone()),
            };
            SlotStatus {
                slot,
                addr,
                block,
                state,
            }
        })
        .collect();
    let greatest = greatest_term(&blocks);
    let server = current_server(&sb.qconf, &blocks);
    // The server's own rid is not an old leader; 0 is no mount's rid.
    let server_rid = server.map_or(Rid(0), |s| s.rid);
    let to_fence = leaders_to_fence(&blocks, greatest, server_rid);
    let cache = BlockCache::new(meta.clone(), fsid, STATUS_CACHE_BLOCKS);
    let mounted_clients = unless_stale(
        read_mounted_clients(&cache, &sb.mounted_clients),
        "mounted_clients btree",
    )?;
    let log_trees = unless_stale(read_log_trees(&cache, &sb), "logs_root btree")?;
    Ok(Status {
        fsid,
        fmt_vers: sb.fmt_vers.get(),
        seq: sb.seq.get(),
        slots,
        votes_needed: configured.votes_needed(),
        greatest_term: greatest,
        fenced_below,
        server,
        to_fence,
        mounted_clients,
        log_trees,
    })
}

/// Reads and checks one slot's quorum block.
fn read_quorum_block(meta: &dyn BlockDev, fsid: u64, slot: SlotNr) -> Result<QuorumBlock> {
    let blkno = QUORUM_BLKNO + slot.0 as u64;
    let buf = read_sm(meta, blkno, magic::QUORUM, Some(fsid))?;
    QuorumBlock::decode(&buf).map_err(|e| {
        let seq = crate::store::block::header_of(&buf).seq.get();
        Error::corrupt(CorruptKind::BlockInvalid, blkno, seq, e.to_string())
    })
}

fn read_mounted_clients(cache: &BlockCache, root: &BtreeRoot) -> Result<Vec<MountedClient>> {
    let start = Key::new(zone::MOUNTED_CLIENT, 0, 0, 0, 0, 0);
    let end = Key::new(
        zone::MOUNTED_CLIENT,
        u64::MAX,
        u8::MAX,
        u64::MAX,
        u64::MAX,
        u8::MAX,
    );
    let mut out = Vec::new();
    btree::for_each_range(cache, root, &start, &end, |it| {
        let v = MountedClientVal::decode(&it.val).map_err(|e| {
            let detail = format!("mounted client {:016x}: {e}", it.key.first);
            let (blkno, seq) = (root.blk.blkno.get(), root.blk.seq.get());
            Error::corrupt(CorruptKind::ItemInvalid, blkno, seq, detail)
        })?;
        out.push(MountedClient {
            rid: Rid(it.key.first),
            addr: v.addr.to_socket(),
            quorum: v.flags & MOUNTED_CLIENT_QUORUM != 0,
        });
        Ok(true)
    })?;
    Ok(out)
}

fn read_log_trees(cache: &BlockCache, sb: &SuperBlock) -> Result<Vec<LogTreeStatus>> {
    let lts = log_roots(cache, &sb.logs_root)?;
    Ok(lts
        .iter()
        .map(|lt| LogTreeStatus {
            rid: Rid(lt.rid.get()),
            nr: lt.nr.get(),
            committed_seq: lt.commit_trans_seq.get(),
            open_seq: lt.trans_open().then(|| lt.get_trans_seq.get()),
            finalize_seq: lt.is_finalized().then(|| lt.finalize_seq.get()),
        })
        .collect())
}

impl Status {
    /// What could not be read, one line each; empty when everything could.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .slots
            .iter()
            .filter_map(|s| {
                let e = s.block.as_ref().err()?;
                Some(format!("quorum slot {}: {e}", s.slot))
            })
            .collect();
        out.extend(self.mounted_clients.as_ref().err().cloned());
        out.extend(self.log_trees.as_ref().err().cloned());
        out
    }

    fn is_mounted(&self, rid: Rid) -> bool {
        self.mounted_clients
            .as_ref()
            .is_ok_and(|m| m.iter().any(|c| c.rid == rid))
    }
}

/// "1 slot", "2 slots".
fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// A Unix time as "YYYY-MM-DD HH:MM:SS.mmm UTC" (seconds past year 9999 as
/// a number).
pub fn utc(ts: &Timespec) -> String {
    const YEAR_10000: u64 = 253_402_300_800;
    let (sec, nsec) = (ts.sec.get(), ts.nsec.get());
    if sec >= YEAR_10000 {
        return format!("{sec}.{nsec:09} s after 1970");
    }
    let (y, m, d) = crate::clock::civil_from_days((sec / 86_400) as i64);
    let s = sec % 86_400;
    let (hh, mm, ss, ms) = (s / 3600, s / 60 % 60, s % 60, nsec / 1_000_000);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{ms:03} UTC")
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fsid {:016x}, format version {}, super block seq {}",
            self.fsid, self.fmt_vers, self.seq
        )?;
        writeln!(
            f,
            "quorum: {}, elected by {}, greatest term {}",
            plural(self.slots.len(), "slot"),
            plural(self.votes_needed, "vote"),
            self.greatest_term
        )?;
        for s in &self.slots {
            self.fmt_slot(f, s)?;
        }
        self.fmt_server(f)?;
        self.fmt_mounted(f)?;
        self.fmt_log_trees(f)
    }
}

impl Status {
    fn fmt_slot(&self, f: &mut fmt::Formatter<'_>, s: &SlotStatus) -> fmt::Result {
        write!(f, "  slot {} {}: {}", s.slot, s.addr, s.state)?;
        let Ok(qb) = &s.block else {
            return writeln!(f);
        };
        match last_rid(qb) {
            Some(rid) => writeln!(f, "; last rid {rid}")?,
            None => writeln!(f)?,
        }
        for kind in EVENT_KINDS {
            let e = &qb.events[kind.index()];
            if e.write_nr.get() == 0 {
                continue;
            }
            writeln!(
                f,
                "    {:<5} term {:<4} rid {:016x} at {} (write {})",
                quorum_event_name(kind.index()).to_uppercase(),
                e.term.get(),
                e.rid.get(),
                utc(&e.ts),
                e.write_nr.get()
            )?;
        }
        Ok(())
    }

    fn fmt_server(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.server {
            Some(s) => write!(
                f,
                "server: slot {} at {}, rid {}, term {}",
                s.slot, s.addr, s.rid, s.term
            )?,
            None => write!(f, "server: no server")?,
        }
        match self.server {
            Some(s) if s.term < self.fenced_below => writeln!(
                f,
                " (but the server of term {} fenced it: clients will not reach it)",
                self.fenced_below
            )?,
            _ => writeln!(f)?,
        }
        if self.to_fence.is_empty() {
            writeln!(f, "to fence: none")?;
        } else {
            writeln!(
                f,
                "to fence (old leaders a server of term {} fences before serving): {}",
                self.greatest_term,
                self.to_fence.len()
            )?;
            for o in &self.to_fence {
                writeln!(f, "  slot {} rid {} term {}", o.slot, o.rid, o.term)?;
            }
        }
        let unreadable: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.block.is_err())
            .map(|s| s.slot.to_string())
            .collect();
        if !unreadable.is_empty() {
            writeln!(
                f,
                "  (ignoring unreadable slots {}: they may hold newer elections)",
                unreadable.join(", ")
            )?;
        }
        Ok(())
    }

    fn fmt_mounted(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = match &self.mounted_clients {
            Err(e) => return writeln!(f, "mounted clients: UNREADABLE: {e}"),
            Ok(l) if l.is_empty() => return writeln!(f, "mounted clients: none"),
            Ok(l) => l,
        };
        writeln!(f, "mounted clients: {}", list.len())?;
        for c in list {
            let addr = c
                .addr
                .map_or("address not recorded".into(), |a| a.to_string());
            let member = if c.quorum {
                "quorum member"
            } else {
                "not a quorum member"
            };
            writeln!(f, "  rid {}: {addr}, {member}", c.rid)?;
        }
        Ok(())
    }

    fn fmt_log_trees(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = match &self.log_trees {
            Err(e) => return writeln!(f, "log trees: UNREADABLE: {e}"),
            Ok(l) if l.is_empty() => return writeln!(f, "log trees: none"),
            Ok(l) => l,
        };
        writeln!(f, "log trees: {}", list.len())?;
        for t in list {
            let mounted = self.is_mounted(t.rid);
            write!(
                f,
                "  rid {} nr {}: committed seq {}",
                t.rid, t.nr, t.committed_seq
            )?;
            match t.open_seq {
                Some(s) if mounted => write!(f, ", transaction open at seq {s}")?,
                // A mount opens its next transaction after each commit,
                // the last one too.
                Some(s) => write!(f, ", transaction of seq {s} never committed")?,
                None => {}
            }
            match t.finalize_seq {
                Some(s) => write!(f, ", finalized at seq {s}")?,
                None => write!(f, ", not finalized")?,
            }
            let mounted = if mounted {
                "mounted"
            } else {
                "rid not mounted"
            };
            writeln!(f, " ({mounted})")?;
        }
        Ok(())
    }
}

/// A JSON string literal, quoted and escaped.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON object, built field by field from values that are JSON already.
struct JsonObj(String);

impl JsonObj {
    fn new() -> JsonObj {
        JsonObj("{".into())
    }

    fn raw(mut self, key: &str, val: impl fmt::Display) -> JsonObj {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&format!("{}:{val}", json_str(key)));
        self
    }

    fn str(self, key: &str, val: &str) -> JsonObj {
        self.raw(key, json_str(val))
    }

    fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

fn json_arr(items: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(","))
}

/// A list, or null with its error beside it.
fn json_list<T>(
    obj: JsonObj,
    key: &str,
    list: &std::result::Result<Vec<T>, String>,
    item: impl Fn(&T) -> String,
) -> JsonObj {
    let err_key = format!("{key}_error");
    match list {
        Ok(l) => obj
            .raw(key, json_arr(l.iter().map(item)))
            .raw(&err_key, "null"),
        Err(e) => obj.raw(key, "null").str(&err_key, e),
    }
}

impl Status {
    /// The same facts as the text, as one line of JSON. Ids (fsid, rids) are
    /// 16 hex digit strings, as in the text; seqs and terms are numbers.
    pub fn to_json(&self) -> String {
        let server = self.server.map_or("null".into(), |s| {
            JsonObj::new()
                .raw("slot", s.slot)
                .str("addr", &s.addr.to_string())
                .str("rid", &s.rid.to_string())
                .raw("term", s.term)
                .end()
        });
        let fence = self.to_fence.iter().map(|o| {
            JsonObj::new()
                .raw("slot", o.slot)
                .str("rid", &o.rid.to_string())
                .raw("term", o.term)
                .end()
        });
        let obj = JsonObj::new()
            .str("fsid", &format!("{:016x}", self.fsid))
            .raw("format_version", self.fmt_vers)
            .raw("seq", self.seq)
            .raw("votes_needed", self.votes_needed)
            .raw("greatest_term", self.greatest_term)
            .raw("fenced_below", self.fenced_below)
            .raw("slots", json_arr(self.slots.iter().map(slot_json)))
            .raw("server", server)
            .raw("to_fence", json_arr(fence));
        let obj = json_list(obj, "mounted_clients", &self.mounted_clients, |c| {
            JsonObj::new()
                .str("rid", &c.rid.to_string())
                .raw(
                    "addr",
                    c.addr.map_or("null".into(), |a| json_str(&a.to_string())),
                )
                .raw("quorum", c.quorum)
                .end()
        });
        let obj = json_list(obj, "log_trees", &self.log_trees, |t| {
            let opt = |v: Option<u64>| v.map_or("null".into(), |v| v.to_string());
            JsonObj::new()
                .str("rid", &t.rid.to_string())
                .raw("nr", t.nr)
                .raw("committed_seq", t.committed_seq)
                .raw("open_seq", opt(t.open_seq))
                .raw("finalized", t.finalize_seq.is_some())
                .raw("finalize_seq", opt(t.finalize_seq))
                .raw("mounted", self.is_mounted(t.rid))
                .end()
        });
        obj.raw("complete", self.problems().is_empty()).end()
    }
}

fn slot_json(s: &SlotStatus) -> String {
    let term = s.state.term().map_or("null".into(), |t| t.to_string());
    let obj = JsonObj::new()
        .raw("slot", s.slot)
        .str("addr", &s.addr.to_string())
        .str("state", s.state.name())
        .raw("term", term)
        .str("description", &s.state.to_string());
    let qb = match &s.block {
        Err(e) => return obj.str("error", e).raw("events", "[]").end(),
        Ok(qb) => qb,
    };
    let last = last_rid(qb).map_or("null".into(), |r| json_str(&r.to_string()));
    let events = EVENT_KINDS.iter().filter_map(|&kind| {
        let e = &qb.events[kind.index()];
        (e.write_nr.get() != 0).then(|| {
            JsonObj::new()
                .str("kind", quorum_event_name(kind.index()))
                .raw("term", e.term.get())
                .str("rid", &format!("{:016x}", e.rid.get()))
                .raw("write_nr", e.write_nr.get())
                .raw("sec", e.ts.sec.get())
                .raw("nsec", e.ts.nsec.get())
                .end()
        })
    });
    obj.raw("error", "null")
        .raw("last_rid", last)
        .raw("write_nr", qb.write_nr.get())
        .raw("events", json_arr(events))
        .end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::quorum::blocks::record_events;
    use EventKind as E;

    fn block(events: &[(EventKind, u64, u64)]) -> QuorumBlock {
        let mut qb = QuorumBlock::default();
        for &(kind, term, rid) in events {
            let ts = Timespec::new(1_700_000_000, 0);
            record_events(&mut qb, Rid(rid), &[(kind, Term(term))], ts);
        }
        qb
    }

    #[test]
    fn slot_states_follow_the_events() {
        let st = |evs: &[(EventKind, u64, u64)]| slot_state(&block(evs), Term(0));
        assert_eq!(st(&[]), SlotState::NeverUsed);
        let leader = |term, rid, up| SlotState::Leader {
            term: Term(term),
            rid: Rid(rid),
            up,
        };
        let elected = [(E::Begin, 2, 7), (E::Term, 3, 7), (E::Elect, 3, 7)];
        assert_eq!(st(&elected), leader(3, 7, false));
        let mut up = elected.to_vec();
        up.push((E::Fence, 3, 7));
        assert_eq!(st(&up), leader(3, 7, true));
        let mut stopped = up.clone();
        stopped.push((E::Stop, 3, 7));
        assert_eq!(st(&stopped), SlotState::Stopped { term: Term(3) });
        stopped.push((E::End, 4, 7));
        assert_eq!(st(&stopped), SlotState::Unmounted { term: Term(4) });
        // A new mount of the slot: its BEGIN is after the old END.
        stopped.push((E::Begin, 4, 8));
        assert_eq!(st(&stopped), SlotState::Member { term: Term(4) });
        // A follower that never ran a server and shut down: only END.
        let ended = st(&[(E::Begin, 1, 9), (E::End, 1, 9)]);
        assert_eq!(ended, SlotState::Unmounted { term: Term(1) });
        // An old leader that crashed outlives a later clean unmount.
        let crashed = [(E::Elect, 5, 1), (E::Begin, 6, 2), (E::End, 6, 2)];
        assert_eq!(st(&crashed), leader(5, 1, false));
        assert_eq!(last_rid(&block(&crashed)), Some(Rid(2)));
        assert_eq!(last_rid(&block(&[])), None);
    }

    #[test]
    fn a_leader_below_a_newer_fence_was_fenced() {
        let qb = block(&[(E::Elect, 3, 7)]);
        let fenced = SlotState::Fenced {
            term: Term(3),
            rid: Rid(7),
            by_term: Term(5),
        };
        assert_eq!(slot_state(&qb, Term(5)), fenced);
        assert!(fenced
            .to_string()
            .contains("fenced by the server of term 5"));
        assert_eq!(fenced.name(), "fenced");
        // Its own term's fence means it is up, not fenced.
        let up = slot_state(&block(&[(E::Elect, 3, 7), (E::Fence, 3, 7)]), Term(3));
        assert_eq!(up.name(), "leader");
    }

    #[test]
    fn times_print_as_utc_dates() {
        let t = |sec, nsec| utc(&Timespec::new(sec, nsec));
        assert_eq!(t(0, 0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(t(1_700_000_000, 123_456_789), "2023-11-14 22:13:20.123 UTC");
        assert_eq!(t(951_782_400, 0), "2000-02-29 00:00:00.000 UTC");
        assert_eq!(t(253_402_300_799, 0), "9999-12-31 23:59:59.000 UTC");
        assert_eq!(
            t(u64::MAX, 1),
            format!("{}.000000001 s after 1970", u64::MAX)
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        let o = JsonObj::new().raw("n", 1).str("s", "x").end();
        assert_eq!(o, r#"{"n":1,"s":"x"}"#);
        assert_eq!(JsonObj::new().end(), "{}");
        assert_eq!(json_arr(Vec::new()), "[]");
    }
}
