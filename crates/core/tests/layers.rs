//! The core's layers call only down, and no module imports one that
//! imports it back.
//!
//! Reads the core's sources and builds the graph of its modules: an edge
//! from each module (one file) to every module whose path it names
//! (`crate::a::b`, `super::x`), resolved to the longest path that is a
//! module. Declaring a submodule (`mod x;`) is not an edge; code inside
//! `#[cfg(test)]` modules and `tests.rs` files is left out (tests may reach
//! anywhere). Then:
//! - every edge goes to the module's own layer, a layer below it, or the
//!   shared modules (`error`, `types`, `log`, ...), which import nothing
//!   else: store < cluster < mount, and tools over store and cluster;
//! - the graph has no cycle: no two modules import each other, directly or
//!   through others;
//! - no module imports all of another (`use super::*`): a glob names every
//!   item and submodule there, so the compiler's view (below) sees edges to
//!   all of them.
//!
//! `scripts/module-cycles` checks the cycles from the compiler's view with
//! cargo-modules (crates.io), which also counts the types in the methods a
//! type has wherever they are written; this test keeps the rules in CI
//! without it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path without the leading `crate`, e.g. `["store", "btree"]`.
type ModPath = Vec<String>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file of the library but test files, by module path.
fn modules() -> BTreeMap<ModPath, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src_dir()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let rel = p.strip_prefix(src_dir()).unwrap();
            let mut parts: Vec<String> = rel
                .iter()
                .map(|c| c.to_str().unwrap().to_string())
                .collect();
            let file = parts.pop().unwrap();
            let stem = file.trim_end_matches(".rs").to_string();
            if stem == "tests" {
                continue;
            }
            if stem != "mod" && stem != "lib" {
                parts.push(stem);
            }
            let text = std::fs::read_to_string(&p).unwrap();
            out.insert(parts, without_tests(&text));
        }
    }
    out
}

/// The text before an inline `#[cfg(test)]` module (always last in a file
/// here), and without comments.
fn without_tests(text: &str) -> String {
    let end = ["#[cfg(test)]\nmod tests {", "#[cfg(test)]\nmod testing {"]
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a module's text names: `crate::a::b::C`, `super::x::y`,
/// `self::x` and `x::y` for a submodule `x` of its own, including each
/// item of a `use a::{b, c::d}` group.
fn named_paths(module: &ModPath, children: &BTreeSet<String>, text: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let root = if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("super::") {
            let mut parent = module.clone();
            parent.pop();
            Some((parent, "super::".len()))
        } else if rest.starts_with("self::") {
            Some((module.clone(), "self::".len()))
        } else {
            // A submodule named by itself: `child::item`.
            let len = rest.bytes().take_while(|&c| is_ident(c)).count();
            let child = &rest[..len];
            match rest[len..].starts_with("::") && children.contains(child) {
                true => Some((module.clone(), 0)),
                false => None,
            }
        };
        let preceded = i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b':');
        match root {
            Some((base, skip)) if !preceded => {
                let (paths, used) = parse_tail(&text[i + skip..]);
                for p in paths {
                    let mut full = base.clone();
                    full.extend(p);
                    out.push(full);
                }
                i += skip + used;
            }
            _ => i += 1,
        }
    }
    out
}

/// Parses `a::b::{c, d::e}`-style tails; returns the paths and the bytes
/// read.
fn parse_tail(s: &str) -> (Vec<Vec<String>>, usize) {
    let b = s.as_bytes();
    let mut segs = Vec::new();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i > start {
            segs.push(s[start..i].to_string());
        }
        if s[i..].starts_with("::{") {
            i += 3;
            let mut out = Vec::new();
            loop {
                while i < b.len() && (b[i] == b' ' || b[i] == b'\n' || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    i += 1;
                    break;
                }
                let (inner, used) = parse_tail(&s[i..]);
                for p in inner {
                    let mut full = segs.clone();
                    full.extend(p);
                    out.push(full);
                }
                i += used.max(1);
            }
            return (out, i);
        }
        if s[i..].starts_with("::") && i > start {
            i += 2;
            continue;
        }
        return (vec![segs], i);
    }
}

/// The longest prefix of `path` that is a module.
fn resolve(mods: &BTreeMap<ModPath, String>, path: &ModPath) -> Option<ModPath> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| mods.contains_key(p))
}

fn graph() -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mods = modules();
    let mut g = BTreeMap::new();
    for (m, text) in &mods {
        let children: BTreeSet<String> = mods
            .keys()
            .filter(|c| c.len() == m.len() + 1 && c.starts_with(m))
            .map(|c| c[m.len()].clone())
            .collect();
        let mut to = BTreeSet::new();
        for p in named_paths(m, &children, text) {
            if let Some(t) = resolve(&mods, &p) {
                if &t != m && !t.is_empty() {
                    to.insert(t);
                }
            }
        }
        g.insert(m.clone(), to);
    }
    g
}

/// The layer a module is in, and the layers it may import.
fn layer(m: &ModPath) -> (&'static str, &'static [&'static str]) {
    match m.first().map(String::as_str) {
        Some("store") => ("store", &["store"]),
        Some("cluster") => ("cluster", &["cluster", "store"]),
        Some("mount") => ("mount", &["mount", "cluster", "store"]),
        Some("tools") => ("tools", &["tools", "cluster", "store"]),
        _ => ("shared", &[]),
    }
}

fn name(m: &ModPath) -> String {
    format!("crate::{}", m.join("::"))
}

#[test]
fn the_module_graph_is_read() {
    // The test sees the modules and edges it checks (a parser that found
    // nothing would pass everything).
    let g = graph();
    let edge = |a: &[&str], b: &[&str]| {
        let a: ModPath = a.iter().map(|s| s.to_string()).collect();
        let b: ModPath = b.iter().map(|s| s.to_string()).collect();
        g.get(&a).is_some_and(|t| t.contains(&b))
    };
    assert!(g.len() > 50, "{} modules", g.len());
    assert!(edge(&["store", "btree"], &["store", "block"]));
    assert!(edge(&["mount", "trans"], &["cluster", "client"]));
    assert!(edge(&["cluster", "lock", "client"], &["cluster", "lock"]));
    assert!(edge(&["mount", "fs", "dir"], &["mount", "fs", "inode"]));
    assert!(edge(&["mount"], &["mount", "setup"]));
}

#[test]
fn layers_import_only_downward() {
    let mut wrong = Vec::new();
    for (m, to) in graph() {
        let (from, allowed) = layer(&m);
        for t in to {
            let (tl, _) = layer(&t);
            if tl != "shared" && !allowed.contains(&tl) {
                wrong.push(format!("{} ({from}) imports {} ({tl})", name(&m), name(&t)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_imports_one_that_imports_it() {
    let g = graph();
    let cycles = strongly_connected(&g)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.iter().map(name).collect::<Vec<_>>().join(" <-> "))
        .collect::<Vec<_>>();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// Tarjan's strongly connected components.
fn strongly_connected(g: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct St<'a> {
        g: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        on: BTreeSet<&'a ModPath>,
        stack: Vec<&'a ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn visit<'a>(st: &mut St<'a>, v: &'a ModPath) {
        let n = st.index.len();
        st.index.insert(v, n);
        st.low.insert(v, n);
        st.stack.push(v);
        st.on.insert(v);
        for w in st.g.get(v).into_iter().flatten() {
            let Some((w, _)) = st.g.get_key_value(w) else {
                continue;
            };
            if !st.index.contains_key(w) {
                visit(st, w);
                let lw = st.low[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if st.on.contains(w) {
                let iw = st.index[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = st.stack.pop().unwrap();
                st.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            st.out.push(comp);
        }
    }
    let mut st = St {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on: BTreeSet::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !st.index.contains_key(v) {
            visit(&mut st, v);
        }
    }
    st.out
}

#[test]
fn no_module_imports_all_of_another() {
    let globs: Vec<String> = modules()
        .iter()
        .filter(|(_, text)| {
            text.lines().any(|l| {
                let l = l.trim();
                l.starts_with("use ")
                    && (l.contains("crate::") || l.contains("super::"))
                    && l.ends_with("::*;")
            })
        })
        .map(|(m, _)| name(m))
        .collect();
    assert!(
        globs.is_empty(),
        "glob imports of our modules in: {}",
        globs.join(", ")
    );
}
