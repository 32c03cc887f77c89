//! The file-level import graph of `src/` has no cycle (README Layout: "no file imports from a
//! file that imports it").
//!
//! Every `crate::`, `super::` and `self::` path in a file (in `use` trees and inline in code,
//! tests included) is resolved to the file that defines the named module; that is an edge. A
//! module's root file (`mod.rs`, or `foo.rs` beside `foo/`) naming its own children by a
//! relative path (`use rows::X`) declares its parts and is not counted: children are read
//! after their root. Comments, strings and char literals are skipped, and inline modules
//! (`mod tests { use super::*; }`) resolve relative to the file, so a test module's
//! `use super::*` is the file itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Colons,
    Open,
    Close,
    Semi,
    Comma,
    Star,
    Other,
}

/// Tokens of `src` with comments, string, byte-string, raw-string and char literals removed.
fn lex(src: &str) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'"' {
            i = skip_string(b, i + 1);
            out.push(Tok::Other);
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            } else {
                let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                if b.get(i + 1 + ch_len) == Some(&b'\'') {
                    i += 2 + ch_len;
                } else {
                    i += 1;
                }
            }
            out.push(Tok::Other);
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &src[start..i];
            let raw = matches!(word, "r" | "br") && matches!(b.get(i), Some(b'"') | Some(b'#'));
            if raw {
                let mut hashes = 0;
                while b.get(i) == Some(&b'#') {
                    hashes += 1;
                    i += 1;
                }
                if b.get(i) == Some(&b'"') {
                    let close: Vec<u8> = std::iter::once(b'"')
                        .chain(std::iter::repeat_n(b'#', hashes))
                        .collect();
                    i += 1;
                    while i < b.len() && !b[i..].starts_with(&close) {
                        i += 1;
                    }
                    i += close.len();
                }
                out.push(Tok::Other);
            } else if word == "b" && b.get(i) == Some(&b'"') {
                i = skip_string(b, i + 1);
                out.push(Tok::Other);
            } else if word == "b" && b.get(i) == Some(&b'\'') {
                i += 1;
                if b.get(i) == Some(&b'\\') {
                    i += 1;
                }
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
                out.push(Tok::Other);
            } else {
                out.push(Tok::Ident(word.to_string()));
            }
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push(Tok::Colons);
            i += 2;
        } else {
            out.push(match c {
                b'{' => Tok::Open,
                b'}' => Tok::Close,
                b';' => Tok::Semi,
                b',' => Tok::Comma,
                b'*' => Tok::Star,
                _ => Tok::Other,
            });
            i += if c.is_ascii() {
                1
            } else {
                src[i..].chars().next().map_or(1, char::len_utf8)
            };
        }
    }
    out
}

/// Index just past the closing quote of a string whose body starts at `i`.
fn skip_string(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Every path (`crate`/`super`/`self` first) named in `toks`, as segments, each with the inline
/// module nesting (names) it was written in.
fn paths(toks: &[Tok]) -> Vec<(Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let nest = |inline: &Vec<(String, usize)>| inline.iter().map(|(n, _)| n.clone()).collect();
    while i < toks.len() {
        match &toks[i] {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Open)) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(w) if w == "use" => {
                let mut j = i + 1;
                let mut found = Vec::new();
                use_tree(toks, &mut j, Vec::new(), &mut found);
                let n: Vec<String> = nest(&inline);
                out.extend(
                    found
                        .into_iter()
                        .filter(|p| matches!(p[0].as_str(), "crate" | "super" | "self"))
                        .map(|p| (p, n.clone())),
                );
                i = j;
                continue;
            }
            Tok::Ident(w) if matches!(w.as_str(), "crate" | "super" | "self") => {
                let prev_colons = i > 0 && toks[i - 1] == Tok::Colons;
                if !prev_colons && toks.get(i + 1) == Some(&Tok::Colons) {
                    let mut p = vec![w.clone()];
                    let mut j = i + 1;
                    while toks.get(j) == Some(&Tok::Colons) {
                        match toks.get(j + 1) {
                            Some(Tok::Ident(s)) => {
                                p.push(s.clone());
                                j += 2;
                            }
                            _ => break,
                        }
                    }
                    out.push((p, nest(&inline)));
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Expands one `use` tree starting at `*j` (stops after its `;`, `,` or `}`).
fn use_tree(toks: &[Tok], j: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    loop {
        match toks.get(*j) {
            Some(Tok::Ident(s)) if s == "as" => {
                *j += 2;
            }
            Some(Tok::Ident(s)) => {
                prefix.push(s.clone());
                *j += 1;
            }
            Some(Tok::Colons) => *j += 1,
            Some(Tok::Star) => *j += 1,
            Some(Tok::Open) => {
                *j += 1;
                loop {
                    use_tree(toks, j, prefix.clone(), out);
                    match toks.get(*j) {
                        Some(Tok::Comma) => *j += 1,
                        Some(Tok::Close) => {
                            *j += 1;
                            break;
                        }
                        _ => break,
                    }
                    if toks.get(*j) == Some(&Tok::Close) {
                        *j += 1;
                        break;
                    }
                }
                return;
            }
            _ => {
                if !prefix.is_empty() {
                    out.push(prefix);
                }
                if toks.get(*j) == Some(&Tok::Semi) {
                    *j += 1;
                }
                return;
            }
        }
    }
}

/// Module path of a file under `src/` (`model/infer/mod.rs` → `[model, infer]`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut segs: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        segs.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        segs.pop();
    }
    segs
}

/// File → the files it imports, for `(relative path, source)` pairs of one crate.
fn graph(files: &[(PathBuf, String)]) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .filter(|(p, _)| !p.ends_with("main.rs") || p.parent() != Some(Path::new("")))
        .map(|(p, _)| (module_of(p), p.clone()))
        .collect();
    let mut edges = BTreeMap::new();
    for (file, src) in files {
        let here = module_of(file);
        let mut to = BTreeSet::new();
        for (path, nest) in paths(&lex(src)) {
            let mut cur: Vec<String> = here.iter().chain(&nest).cloned().collect();
            let mut segs = path.as_slice();
            match segs[0].as_str() {
                "crate" => {
                    cur.clear();
                    segs = &segs[1..];
                }
                "self" => segs = &segs[1..],
                _ => {}
            }
            while segs.first().map(String::as_str) == Some("super") {
                cur.pop();
                segs = &segs[1..];
            }
            let mut full = cur;
            full.extend(segs.iter().cloned());
            // The longest prefix that is a file's module is the file the path lands in.
            if let Some(target) = (0..=full.len()).rev().find_map(|n| modules.get(&full[..n])) {
                if target != file {
                    to.insert(target.clone());
                }
            }
        }
        edges.insert(file.clone(), to);
    }
    edges
}

/// One cycle per strongly connected component of more than one file.
fn cycles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut done: BTreeSet<PathBuf> = BTreeSet::new();
    for start in edges.keys() {
        if done.contains(start) {
            continue;
        }
        // Iterative DFS keeping the current path, reporting a back edge as a cycle.
        let mut stack: Vec<(PathBuf, Vec<PathBuf>)> =
            vec![(start.clone(), edges[start].iter().cloned().collect())];
        let mut on_path: Vec<PathBuf> = vec![start.clone()];
        while let Some((_, next)) = stack.last_mut() {
            match next.pop() {
                Some(n) => {
                    if let Some(pos) = on_path.iter().position(|p| *p == n) {
                        found.push(on_path[pos..].to_vec());
                    } else if !done.contains(&n) && edges.contains_key(&n) {
                        on_path.push(n.clone());
                        let succ = edges[&n].iter().cloned().collect();
                        stack.push((n, succ));
                    }
                }
                None => {
                    let (node, _) = stack.pop().unwrap();
                    on_path.pop();
                    done.insert(node);
                }
            }
        }
    }
    found
}

fn read_src(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_src(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.push((rel, fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn src_file_graph_has_no_cycle() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let mut files = Vec::new();
    read_src(&root, &root, &mut files);
    assert!(files.len() > 100, "{} files", files.len());
    let edges = graph(&files);
    // The resolver finds real edges (a few known ones), so an empty graph cannot pass.
    let has = |a: &str, b: &str| edges[Path::new(a)].contains(Path::new(b));
    assert!(has("data/chain.rs", "data/problem.rs"));
    assert!(has("data/task.rs", "data/chain.rs"));
    assert!(has("model/kv_cache.rs", "model/host_kv.rs"));
    assert!(has("model/lora_op.rs", "model/linear.rs"));
    assert!(has("verifier/compare.rs", "verifier/structure.rs"));
    assert!(has("model/infer/rows.rs", "model/host_kv.rs"));
    let found = cycles(&edges);
    let shown: Vec<String> = found
        .iter()
        .map(|c| {
            c.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" -> ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "file-level import cycles:\n{}",
        shown.join("\n")
    );
}

#[test]
fn the_checker_sees_pairs_groups_inline_paths_and_ignores_tests_and_strings() {
    let f = |p: &str, s: &str| (PathBuf::from(p), s.to_string());
    let files = vec![
        f("lib.rs", "pub mod a;"),
        f("a/mod.rs", "mod x; mod y; mod z; pub use x::X;"),
        f("a/x.rs", "use super::{y::{self, Y}, z};\npub struct X;"),
        f(
            "a/y.rs",
            "pub struct Y; fn f() { let s = \"use super::z::Z;\"; super::x::X; }\n\
             #[cfg(test)] mod tests { use super::*; }",
        ),
        f(
            "a/z.rs",
            "// use super::x::X;\n/* crate::a::x */ const C: char = '{'; fn g<'a>(_: &'a str) {}\n\
             mod tests { use crate::a::x::X; }",
        ),
    ];
    let e = graph(&files);
    let set = |xs: &[&str]| xs.iter().map(PathBuf::from).collect::<BTreeSet<_>>();
    assert_eq!(e[Path::new("a/x.rs")], set(&["a/y.rs", "a/z.rs"]));
    assert_eq!(e[Path::new("a/y.rs")], set(&["a/x.rs"]));
    // The test module's `use crate::a::x` counts (tests are read too), after a `'{'` char.
    assert_eq!(e[Path::new("a/z.rs")], set(&["a/x.rs"]));
    assert_eq!(e[Path::new("a/mod.rs")], set(&[]));
    let c = cycles(&e);
    assert!(!c.is_empty());
    let all: BTreeSet<PathBuf> = c.into_iter().flatten().collect();
    assert_eq!(all, set(&["a/x.rs", "a/y.rs", "a/z.rs"]));
}
