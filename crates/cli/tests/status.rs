//! `scoutfs status --meta` on image files: a fresh filesystem, quorum
//! blocks with elections written through the core's `record_events`, a
//! corrupt quorum block, and devices that hold no filesystem. The JSON form
//! is checked with a small parser, so it must be valid JSON.

mod common;

use common::{scoutfs, Scratch};
use scoutfs_core::cluster::quorum::blocks::{record_events, EventKind};
use scoutfs_core::cluster::quorum::Term;
use scoutfs_core::store::block::{read_sm, write_sm};
use scoutfs_core::store::dev::{BlockDev, FileDev};
use scoutfs_core::types::Rid;
use scoutfs_format::consts::*;
use scoutfs_format::quorum::QuorumBlock;
use scoutfs_format::Timespec;
use std::path::{Path, PathBuf};
use std::process::Output;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A filesystem with three quorum slots; returns the metadata image.
fn mkfs(dir: &Scratch) -> PathBuf {
    let (m, d) = (dir.path("meta.img"), dir.path("data.img"));
    let mut args = vec!["mkfs", s(&m), s(&d), "-m", "64M", "-d", "64M"];
    for q in ["0,127.0.0.1,7000", "1,127.0.0.2,7001", "2,127.0.0.3,7002"] {
        args.extend(["-Q", q]);
    }
    let o = scoutfs(&args);
    assert!(o.status.success(), "mkfs: {}", stderr(&o));
    m
}

/// Writes events into a slot's quorum block as a mount `rid` would, one
/// write per event, each stamped at 1_700_000_000 + its term seconds.
fn record(meta: &Path, slot: u64, rid: u64, events: &[(EventKind, u64)]) {
    let dev = FileDev::open(meta, true).unwrap();
    let blkno = QUORUM_BLKNO + slot;
    let buf = read_sm(&dev, blkno, magic::QUORUM, None).unwrap();
    let mut qb = QuorumBlock::decode(&buf).unwrap();
    for &(kind, term) in events {
        let ts = Timespec::new(1_700_000_000 + term, 0);
        record_events(&mut qb, Rid(rid), &[(kind, Term(term))], ts);
    }
    write_sm(&dev, blkno, &mut qb.to_block()).unwrap();
    dev.flush().unwrap();
}

fn status(meta: &Path) -> (Output, String) {
    let o = scoutfs(&["status", "--meta", s(meta)]);
    let t = stdout(&o);
    (o, t)
}

fn status_json(meta: &Path) -> (Output, Json) {
    let o = scoutfs(&["status", "--meta", s(meta), "--json"]);
    let t = stdout(&o);
    let j = Json::parse(&t).unwrap_or_else(|e| panic!("invalid JSON ({e}): {t}"));
    (o, j)
}

/// The line of the text output that starts with `prefix` (after indentation).
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line '{prefix}' in:\n{text}"))
}

#[test]
fn a_fresh_filesystem_has_unused_slots_and_no_server() {
    let dir = Scratch::new("status-fresh");
    let m = mkfs(&dir);
    let (o, t) = status(&m);
    assert!(o.status.success(), "{t}{}", stderr(&o));
    assert!(
        t.starts_with("fsid ") && t.contains("format version 2"),
        "{t}"
    );
    assert!(
        line(&t, "quorum:").contains("3 slots, elected by 2 votes, greatest term 0"),
        "{t}"
    );
    for (slot, addr) in [
        (0, "127.0.0.1:7000"),
        (1, "127.0.0.2:7001"),
        (2, "127.0.0.3:7002"),
    ] {
        assert_eq!(
            line(&t, &format!("slot {slot} ")),
            format!("  slot {slot} {addr}: never used")
        );
    }
    assert_eq!(line(&t, "server:"), "server: no server");
    assert_eq!(line(&t, "to fence:"), "to fence: none");
    assert_eq!(line(&t, "mounted clients:"), "mounted clients: none");
    assert_eq!(line(&t, "log trees:"), "log trees: none");

    let (o, j) = status_json(&m);
    assert!(o.status.success());
    assert_eq!(j.get("format_version").u64(), 2);
    assert_eq!(j.get("fsid").str().len(), 16);
    assert!(t.contains(j.get("fsid").str()), "same fsid as the text");
    let slots = j.get("slots").arr();
    assert_eq!(slots.len(), 3);
    for (i, sl) in slots.iter().enumerate() {
        assert_eq!(sl.get("slot").u64(), i as u64);
        assert_eq!(sl.get("state").str(), "never_used");
        assert_eq!(sl.get("error"), &Json::Null);
        assert!(sl.get("events").arr().is_empty());
    }
    assert_eq!(j.get("server"), &Json::Null);
    assert!(j.get("to_fence").arr().is_empty());
    assert!(j.get("mounted_clients").arr().is_empty());
    assert!(j.get("log_trees").arr().is_empty());
    assert_eq!(j.get("complete"), &Json::Bool(true));
}

#[test]
fn elections_name_the_server_and_the_old_leaders_to_fence() {
    use EventKind as E;
    let dir = Scratch::new("status-elect");
    let m = mkfs(&dir);
    // Slot 0's mount won term 3 and never stopped.
    record(&m, 0, 0xaa, &[(E::Begin, 2), (E::Term, 3), (E::Elect, 3)]);
    let (o, t) = status(&m);
    assert!(o.status.success(), "{t}");
    let slot0 = line(&t, "slot 0 ");
    assert!(
        slot0.contains("leader (server may be running) term 3")
            && slot0.contains("not up yet")
            && slot0.contains("last rid 00000000000000aa"),
        "{t}"
    );
    assert!(line(&t, "ELECT").contains("term 3"), "{t}");
    assert!(
        line(&t, "BEGIN").contains("2023-11-14 22:13:22.000 UTC"),
        "{t}"
    );
    assert_eq!(
        line(&t, "server:"),
        "server: slot 0 at 127.0.0.1:7000, rid 00000000000000aa, term 3"
    );
    assert_eq!(line(&t, "to fence:"), "to fence: none");
    assert!(line(&t, "slot 1 ").ends_with("never used"), "{t}");
    let (_, j) = status_json(&m);
    let server = j.get("server");
    assert_eq!(server.get("slot").u64(), 0);
    assert_eq!(server.get("term").u64(), 3);
    assert_eq!(server.get("rid").str(), "00000000000000aa");
    assert!(j.get("to_fence").arr().is_empty());
    let s0 = &j.get("slots").arr()[0];
    assert_eq!(s0.get("state").str(), "leader");
    assert_eq!(s0.get("last_rid").str(), "00000000000000aa");
    let kinds: Vec<&str> = s0
        .get("events")
        .arr()
        .iter()
        .map(|e| e.get("kind").str())
        .collect();
    assert_eq!(kinds, ["begin", "term", "elect"]);

    // Slot 1's mount won term 5 without slot 0 stopping: slot 1 serves,
    // and slot 0's old leader must be fenced first.
    record(&m, 1, 0xbb, &[(E::Begin, 3), (E::Term, 5), (E::Elect, 5)]);
    let (o, t) = status(&m);
    assert!(o.status.success(), "{t}");
    assert_eq!(
        line(&t, "server:"),
        "server: slot 1 at 127.0.0.2:7001, rid 00000000000000bb, term 5"
    );
    assert!(
        line(&t, "to fence").ends_with("fences before serving): 1"),
        "{t}"
    );
    assert_eq!(
        line(&t, "slot 0 rid"),
        "  slot 0 rid 00000000000000aa term 3"
    );
    let (_, j) = status_json(&m);
    assert_eq!(j.get("server").get("slot").u64(), 1);
    assert_eq!(j.get("greatest_term").u64(), 5);
    let fence = j.get("to_fence").arr();
    assert_eq!(fence.len(), 1);
    assert_eq!(fence[0].get("slot").u64(), 0);
    assert_eq!(fence[0].get("rid").str(), "00000000000000aa");
    assert_eq!(fence[0].get("term").u64(), 3);

    // Once slot 1's server is up (FENCE) the old leader was fenced; a
    // clean unmount of slot 2 after it ran no server shows as such.
    record(&m, 1, 0xbb, &[(E::Fence, 5)]);
    record(&m, 2, 0xcc, &[(E::Begin, 5), (E::End, 5)]);
    let (o, t) = status(&m);
    assert!(o.status.success(), "{t}");
    assert_eq!(line(&t, "to fence:"), "to fence: none");
    assert!(line(&t, "slot 1 ").contains("up (FENCE recorded)"), "{t}");
    assert!(
        line(&t, "slot 0 ").contains("fenced (leader of term 3, never stopped"),
        "{t}"
    );
    assert!(
        line(&t, "slot 2 ").contains("unmounted cleanly (END term 5)"),
        "{t}"
    );
    let (_, j) = status_json(&m);
    assert_eq!(j.get("slots").arr()[0].get("state").str(), "fenced");
    assert_eq!(j.get("fenced_below").u64(), 5);

    // Slot 1 stops and unmounts. Clients would still try slot 0, whose
    // ELECT is unstopped; status says that it was fenced.
    record(&m, 1, 0xbb, &[(E::Stop, 5), (E::End, 5)]);
    let (o, t) = status(&m);
    assert!(o.status.success(), "{t}");
    assert!(line(&t, "slot 1 ").contains("unmounted cleanly"), "{t}");
    let server = line(&t, "server:");
    assert!(
        server.starts_with("server: slot 0") && server.contains("the server of term 5 fenced it"),
        "{t}"
    );
}

#[test]
fn a_corrupt_quorum_block_marks_its_slot_and_the_rest_still_prints() {
    let dir = Scratch::new("status-corrupt");
    let m = mkfs(&dir);
    record(&m, 0, 0xaa, &[(EventKind::Begin, 1), (EventKind::Elect, 1)]);
    let off = ((QUORUM_BLKNO + 1) << BLOCK_SM_SHIFT) + 100;
    let mut img = std::fs::read(&m).unwrap();
    img[off as usize] ^= 0x5a;
    std::fs::write(&m, &img).unwrap();

    let (o, t) = status(&m);
    assert!(!o.status.success(), "a corrupt slot exits non-zero: {t}");
    let slot1 = line(&t, "slot 1 ");
    assert!(
        slot1.contains("UNREADABLE") && slot1.contains("block 18"),
        "{t}"
    );
    assert!(line(&t, "slot 0 ").contains("leader"), "{t}");
    assert!(line(&t, "slot 2 ").ends_with("never used"), "{t}");
    assert!(line(&t, "server:").contains("slot 0"), "{t}");
    assert!(t.contains("ignoring unreadable slots 1"), "{t}");
    assert!(line(&t, "log trees:").ends_with("none"), "{t}");
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("quorum slot 1: corruption"), "{err}");

    let (o, j) = status_json(&m);
    assert!(!o.status.success());
    assert_eq!(j.get("complete"), &Json::Bool(false));
    let s1 = &j.get("slots").arr()[1];
    assert_eq!(s1.get("state").str(), "unreadable");
    assert!(s1.get("error").str().contains("block 18"));
    assert_eq!(j.get("slots").arr()[0].get("state").str(), "leader");
}

#[test]
fn devices_without_a_filesystem_and_bad_arguments_give_clear_errors() {
    let dir = Scratch::new("status-errors");
    let one_line_error = |args: &[&str], want: &str| {
        let o = scoutfs(args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: expected '{want}' in: {err}");
        assert!(stdout(&o).is_empty(), "{args:?} printed: {}", stdout(&o));
        err
    };
    let missing = dir.path("missing.img");
    let err = one_line_error(&["status", "--meta", s(&missing)], "missing.img");
    assert_eq!(err.lines().count(), 1, "{err}");
    let zeros = dir.path("zeros.img");
    std::fs::write(&zeros, vec![0u8; 1 << 20]).unwrap();
    let err = one_line_error(&["status", "--meta", s(&zeros)], "no scoutfs super block");
    assert_eq!(err.lines().count(), 1, "{err}");
    let tiny = dir.path("tiny.img");
    std::fs::write(&tiny, b"hello").unwrap();
    one_line_error(&["status", "--meta", s(&tiny)], "too small");

    let m = mkfs(&dir);
    let mut img = std::fs::read(&m).unwrap();
    img[(SUPER_BLKNO << BLOCK_SM_SHIFT) as usize + 300] ^= 1;
    std::fs::write(&m, &img).unwrap();
    let err = one_line_error(
        &["status", "--meta", s(&m)],
        "corruption SC_BLOCK_CRC: block 16",
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let err = one_line_error(&["status", s(&dir.0)], "use --meta");
    assert!(err.contains("no running scoutfs mount there"), "{err}");
    one_line_error(
        &["status", "--meta", s(&m), s(&dir.0)],
        "cannot be used with",
    );
    one_line_error(&["status"], "required");
}

/// Just enough JSON to check the output: a value tree, numbers kept as text.
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let b = text.trim_end().as_bytes();
        let mut i = 0;
        let v = Json::value(b, &mut i)?;
        if i != b.len() {
            return Err(format!("trailing bytes at {i}"));
        }
        Ok(v)
    }

    fn value(b: &[u8], i: &mut usize) -> Result<Json, String> {
        let lit = |i: &mut usize, word: &str, v: Json| {
            if b[*i..].starts_with(word.as_bytes()) {
                *i += word.len();
                Ok(v)
            } else {
                Err(format!("bad literal at {i}"))
            }
        };
        match b.get(*i) {
            Some(b'n') => lit(i, "null", Json::Null),
            Some(b't') => lit(i, "true", Json::Bool(true)),
            Some(b'f') => lit(i, "false", Json::Bool(false)),
            Some(b'"') => Json::string(b, i).map(Json::Str),
            Some(b'[') => {
                *i += 1;
                let mut items = Vec::new();
                while b.get(*i) != Some(&b']') {
                    if !items.is_empty() {
                        Json::expect(b, i, b',')?;
                    }
                    items.push(Json::value(b, i)?);
                }
                *i += 1;
                Ok(Json::Arr(items))
            }
            Some(b'{') => {
                *i += 1;
                let mut fields = Vec::new();
                while b.get(*i) != Some(&b'}') {
                    if !fields.is_empty() {
                        Json::expect(b, i, b',')?;
                    }
                    let k = Json::string(b, i)?;
                    Json::expect(b, i, b':')?;
                    fields.push((k, Json::value(b, i)?));
                }
                *i += 1;
                Ok(Json::Obj(fields))
            }
            Some(c) if c.is_ascii_digit() || *c == b'-' => {
                let start = *i;
                *i += 1;
                while b.get(*i).is_some_and(|c| c.is_ascii_digit()) {
                    *i += 1;
                }
                Ok(Json::Num(String::from_utf8_lossy(&b[start..*i]).into()))
            }
            _ => Err(format!("unexpected byte at {i}")),
        }
    }

    fn expect(b: &[u8], i: &mut usize, c: u8) -> Result<(), String> {
        if b.get(*i) != Some(&c) {
            return Err(format!("expected '{}' at {i}", c as char));
        }
        *i += 1;
        Ok(())
    }

    fn string(b: &[u8], i: &mut usize) -> Result<String, String> {
        Json::expect(b, i, b'"')?;
        let mut out = Vec::new();
        loop {
            match b.get(*i) {
                None => return Err("unterminated string".into()),
                Some(b'"') => break,
                Some(b'\\') => {
                    *i += 1;
                    match b.get(*i) {
                        Some(b'n') => out.push(b'\n'),
                        Some(&c @ (b'"' | b'\\' | b'/')) => out.push(c),
                        Some(b'u') => {
                            let hex = std::str::from_utf8(b.get(*i + 1..*i + 5).unwrap_or(&[]))
                                .map_err(|e| e.to_string())?;
                            let c = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            let c = char::from_u32(c).ok_or("bad \\u escape")?;
                            out.extend(c.to_string().as_bytes());
                            *i += 4;
                        }
                        _ => return Err(format!("bad escape at {i}")),
                    }
                }
                Some(&c) if c < 0x20 => return Err(format!("control byte at {i}")),
                Some(&c) => out.push(c),
            }
            *i += 1;
        }
        *i += 1;
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    fn get(&self, key: &str) -> &Json {
        let Json::Obj(fields) = self else {
            panic!("not an object: {self:?}");
        };
        let mut found = fields.iter().filter(|(k, _)| k == key);
        let v = found.next().map(|(_, v)| v);
        assert!(found.next().is_none(), "duplicate key {key}");
        v.unwrap_or_else(|| panic!("no key {key} in {self:?}"))
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => panic!("not an array: {self:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }

    fn u64(&self) -> u64 {
        match self {
            Json::Num(n) => n.parse().unwrap(),
            _ => panic!("not a number: {self:?}"),
        }
    }
}

#[test]
fn the_json_checker_refuses_invalid_json() {
    for bad in [
        "{",
        "[1,]",
        "{\"a\" 1}",
        "\"\u{1}\"",
        "nul",
        "{} x",
        "[1 2]",
    ] {
        assert!(Json::parse(bad).is_err(), "{bad:?} parsed");
    }
    let j = Json::parse(r#"{"a":[1,"x\"\u0041"],"b":null}"#).unwrap();
    assert_eq!(j.get("a").arr()[1].str(), "x\"A");
}
