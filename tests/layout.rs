//! The library's files use each other one way: no file uses one that (directly or through
//! others) uses it back. Folders group code by path; the one-way rule holds between files, so a
//! folder's `mod.rs` and its parts are held to it like any other pair: a part that needs what its
//! `mod.rs` defines means the `mod.rs` must not use that part (move the shared piece into a file of
//! its own, as `config/error.rs` or `oauth/ctx.rs`).
//!
//! The files are the ones the compiler reads for the library: `src/lib.rs` and every file its
//! `mod x;` declarations reach, `#[path]` included (`src/main.rs` is another crate, which sees the
//! library only through its public API). An edge A -> B is any reference in A's code (comments,
//! strings and doc links are not code) to something B defines:
//!
//! - a `use` of a `crate::`, `super::` or `self::` path, or of one of A's own child modules;
//! - a path in code that starts with `crate`, `super`, `self`, a child module of A, or a name A
//!   imported (`jwt::now()` after `use crate::auth::jwt;`).
//!
//! `super` is resolved from the module it is written in (inside `mod tests { }` it is the file
//! itself). A path is charged to the file that defines the item, following the `use`s of the file
//! it names: `crate::snapshot::BuildError`, a `pub use crate::error::BuildError`, is an edge to
//! `src/error.rs`, not to the snapshot.
//!
//! Not edges, because they are not uses: a file declaring its children (`mod x;`, `pub mod x;`),
//! and a `pub use` of its own descendants whose name the file does not use itself (`lib.rs` or a
//! `mod.rs` re-exporting its parts): the re-export only names the item for others, and their edges
//! go to the file that defines it. A re-exported name the file also uses is an edge, and so is a
//! `pub use` of anything outside the file's own subtree. References within one file are not edges.
//!
//! The reader is lexical (paths in macro arguments are read like any other). What it cannot see:
//! paths that macros generate (`$crate::` in a `macro_rules!`, derives), names that arrive only
//! through a glob import (the `use super::*` itself is an edge to the parent), and method calls.
//! So an `impl T` block in a file other than `T`'s (one type's methods spread over its folder, as
//! `store/redis/lockout.rs` extends `RedisStore`) counts as that file using `T`'s file, never the
//! reverse, even where `T`'s file calls those methods.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};

/// A token of Rust code: what the reader needs to find paths, `use` trees and `mod` items.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An identifier, keyword or number.
    Word(String),
    /// A string literal's contents (only `#[path = "..."]` reads them).
    Str(String),
    /// `::`.
    Sep,
    /// Any other punctuation character.
    Punct(char),
}

/// The tokens of `text`, without comments; string and char literals become `Str` or vanish.
fn tokens(text: &str) -> Vec<Tok> {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            let (s, next) = string(&c, i + 1, None);
            out.push(Tok::Str(s));
            i = next;
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\'') is skipped; a lifetime leaves its name as a word.
            if at(i + 1) == '\\' {
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let hashes = c[i..].iter().take_while(|&&h| h == '#').count();
            if matches!(word.as_str(), "r" | "br" | "cr") && at(i + hashes) == '"' {
                let (s, next) = string(&c, i + hashes + 1, Some(hashes));
                out.push(Tok::Str(s));
                i = next;
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                let (s, next) = string(&c, i + 1, None);
                out.push(Tok::Str(s));
                i = next;
            } else if word != "b" || at(i) != '\'' {
                out.push(Tok::Word(word));
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Tok::Sep);
            i += 2;
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

/// The contents of a string literal starting at `i` (after its opening quote), and the index
/// after its closing quote; `raw` is the number of `#`s of a raw string.
fn string(c: &[char], mut i: usize, raw: Option<usize>) -> (String, usize) {
    let start = i;
    while i < c.len() {
        match raw {
            None if c[i] == '\\' => i += 2,
            None if c[i] == '"' => return (c[start..i].iter().collect(), i + 1),
            Some(n) if c[i] == '"' && c[i + 1..].iter().take(n).filter(|&&h| h == '#').count() == n => {
                return (c[start..i].iter().collect(), i + 1 + n)
            }
            _ => i += 1,
        }
    }
    (c[start..].iter().collect(), c.len())
}

type Segs = Vec<String>;

/// One name a `use` tree brings in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UseLeaf {
    /// The path as written (`super::x::Y`), `self` leaves already folded into their prefix.
    path: Segs,
    /// The name it binds (`Y`, or the `as` name); none for a glob.
    name: Option<String>,
}

/// Expands the `use` tree at `toks[*i]` (after `use` and visibility) into its leaves.
fn use_tree(toks: &[Tok], i: &mut usize, mut path: Segs, out: &mut Vec<UseLeaf>) {
    loop {
        match toks.get(*i) {
            Some(Tok::Sep) => *i += 1,
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push(UseLeaf { path, name: None });
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match toks.get(*i) {
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        None | Some(Tok::Punct(';')) => return,
                        Some(_) => use_tree(toks, i, path.clone(), out),
                    }
                }
            }
            Some(Tok::Word(w)) => {
                let w = w.clone();
                *i += 1;
                if toks.get(*i) == Some(&Tok::Sep) {
                    path.push(w);
                    continue;
                }
                let mut name = if w == "self" { path.last().cloned() } else { Some(w.clone()) };
                if w != "self" {
                    path.push(w);
                }
                if toks.get(*i) == Some(&Tok::Word("as".into())) {
                    if let Some(Tok::Word(alias)) = toks.get(*i + 1) {
                        name = Some(alias.clone());
                    }
                    *i += 2;
                }
                out.push(UseLeaf { path, name });
                return;
            }
            _ => return,
        }
    }
}

/// What one file says about its neighbours.
#[derive(Debug, Default)]
struct Parsed {
    /// `mod x;` declarations: the name, the inline modules around it, and its `#[path]`.
    children: Vec<(String, Segs, Option<String>)>,
    /// `use` leaves: the module they are written in (inline modules included), public or not.
    uses: Vec<(Segs, bool, UseLeaf)>,
    /// Paths in code (`a::b::c`, not after `::` or `.`), with the module they are written in.
    paths: Vec<(Segs, Segs)>,
    /// How often each word occurs outside `use` items and `mod` names (not after `.`).
    words: BTreeMap<String, usize>,
}

/// Reads the items of a file whose module is `module`.
fn parse(text: &str, module: &[String]) -> Parsed {
    let toks = tokens(text);
    let word = |i: usize| match toks.get(i) {
        Some(Tok::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    let mut p = Parsed::default();
    // Inline modules open at this point, with the brace depth inside each.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut path_attr: Option<String> = None;
    let mut i = 0;
    while i < toks.len() {
        let here = || -> Segs { module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect() };
        match &toks[i] {
            Tok::Punct('#') if toks.get(i + 1) == Some(&Tok::Punct('[')) && word(i + 2) == Some("path") => {
                if let Some(Tok::Str(s)) = toks.get(i + 4) {
                    path_attr = Some(s.clone());
                }
                i += 5;
                continue;
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                path_attr = None;
            }
            Tok::Punct(';') => path_attr = None,
            Tok::Word(w) if w == "mod" => {
                if let Some(name) = word(i + 1) {
                    if toks.get(i + 2) == Some(&Tok::Punct('{')) {
                        inline.push((name.to_string(), depth + 1));
                    } else {
                        let around = inline.iter().map(|(n, _)| n.clone()).collect();
                        p.children.push((name.to_string(), around, path_attr.take()));
                    }
                    i += 2;
                    continue;
                }
            }
            Tok::Word(w) if w == "use" && toks.get(i + 1) != Some(&Tok::Punct('<')) => {
                let public = word(i.wrapping_sub(1)) == Some("pub")
                    || (toks.get(i.wrapping_sub(1)) == Some(&Tok::Punct(')'))
                        && (1..i)
                            .rev()
                            .find(|&k| toks[k] == Tok::Punct('('))
                            .is_some_and(|k| word(k - 1) == Some("pub")));
                let mut leaves = Vec::new();
                i += 1;
                use_tree(&toks, &mut i, Vec::new(), &mut leaves);
                let at = here();
                p.uses.extend(leaves.into_iter().map(|l| (at.clone(), public, l)));
                continue;
            }
            Tok::Word(w) => {
                let after_sep_or_dot = i > 0 && matches!(toks[i - 1], Tok::Sep | Tok::Punct('.'));
                if !after_sep_or_dot {
                    *p.words.entry(w.clone()).or_default() += 1;
                    let mut segs = vec![w.clone()];
                    let mut k = i + 1;
                    while toks.get(k) == Some(&Tok::Sep) {
                        match word(k + 1) {
                            Some(next) => segs.push(next.to_string()),
                            None => break,
                        }
                        k += 2;
                    }
                    if segs.len() > 1 {
                        p.paths.push((here(), segs));
                        i = k;
                        continue;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    p
}

/// One file of the library.
struct File {
    /// Where it is, relative to the crate root (`src/proxy/upstream/pool.rs`).
    shown: String,
    /// Its module path, `proxy::upstream::pool` (empty for `lib.rs`).
    module: Segs,
    /// What it says.
    parsed: Parsed,
}

/// Every file of the library reached from `src/lib.rs`, by module path (`a::b`); `read` gives a
/// file's text, or none when it does not exist.
fn load(root: &Path, read: &dyn Fn(&Path) -> Option<String>) -> BTreeMap<String, File> {
    let mut files = BTreeMap::new();
    let mut queue = VecDeque::from([(root.join("src/lib.rs"), Vec::new(), true)]);
    while let Some((path, module, mod_rs)) = queue.pop_front() {
        let text = read(&path).unwrap_or_else(|| panic!("cannot read {}", path.display()));
        let parsed = parse(&text, &module);
        let dir = path.parent().expect("a file has a folder").to_path_buf();
        for (name, around, attr) in &parsed.children {
            // A `foo.rs` keeps its children in `foo/`; `mod.rs` and `lib.rs` in their own folder.
            let mut base = if mod_rs { dir.clone() } else { dir.join(path.file_stem().expect("stem")) };
            base.extend(around);
            let child = match attr {
                Some(a) if around.is_empty() => dir.join(a),
                Some(a) => base.join(a),
                None => [base.join(format!("{name}.rs")), base.join(name).join("mod.rs")]
                    .into_iter()
                    .find(|c| read(c).is_some())
                    .unwrap_or_else(|| panic!("{}: no file for `mod {name};`", path.display())),
            };
            let child_mod_rs = attr.is_some() || child.ends_with("mod.rs");
            let segs = module.iter().chain(around).chain([name]).cloned().collect();
            queue.push_back((child, segs, child_mod_rs));
        }
        let shown = normalize(path.strip_prefix(root).unwrap_or(&path));
        files.insert(module.join("::"), File { shown, module, parsed });
    }
    files
}

/// `path` with `..` folded away, `/`-separated.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

/// File-level edges: from each file's module path to the module paths of the files it uses.
type Edges = BTreeMap<String, BTreeSet<String>>;

/// The files each file uses (see the top of this file for what counts).
fn edges(files: &BTreeMap<String, File>) -> Edges {
    // Names bound by `use` at a file's top level, as absolute paths: a path through that file
    // to one of these names is charged to the file the `use` leads to.
    let mut bound: BTreeMap<String, BTreeMap<String, Segs>> = BTreeMap::new();
    for (key, f) in files {
        let names = bound.entry(key.clone()).or_default();
        for (at, _, leaf) in &f.parsed.uses {
            if let (Some(name), Some(abs)) = (&leaf.name, absolute(f, at, &leaf.path, None)) {
                if at == &f.module {
                    names.insert(name.clone(), abs);
                }
            }
        }
    }
    let defining = |abs: &[String]| -> String {
        let mut abs = abs.to_vec();
        for _ in 0..16 {
            let n = (0..=abs.len()).rev().find(|&n| files.contains_key(&abs[..n].join("::"))).unwrap_or(0);
            let key = abs[..n].join("::");
            match abs.get(n).and_then(|next| bound.get(&key)?.get(next)) {
                Some(target) if n < abs.len() => abs = target.iter().chain(&abs[n + 1..]).cloned().collect(),
                _ => return key,
            }
        }
        abs.join("::")
    };
    let mut out = Edges::new();
    for (key, f) in files {
        let mut to = BTreeSet::new();
        let names = &bound[key];
        for (at, public, leaf) in &f.parsed.uses {
            let Some(abs) = absolute(f, at, &leaf.path, Some(names)) else { continue };
            // A `pub use` of the file's own parts that it does not use itself only names them for
            // others, whose edges go to the defining file.
            let used_here = leaf.name.as_ref().is_none_or(|n| f.parsed.words.contains_key(n));
            let reexport_only = *public && at == &f.module && abs.starts_with(&f.module) && !used_here;
            if !reexport_only {
                to.insert(defining(&abs));
            }
        }
        for (at, segs) in &f.parsed.paths {
            if let Some(abs) = absolute(f, at, segs, Some(names)) {
                to.insert(defining(&abs));
            }
        }
        to.remove(key);
        out.insert(key.clone(), to);
    }
    out
}

/// `segs`, written in module `at` of file `f`, as a path from the crate root; none when it
/// leads outside the crate (`std::`, another crate) or to a local name.
fn absolute(f: &File, at: &[String], segs: &[String], names: Option<&BTreeMap<String, Segs>>) -> Option<Segs> {
    let first = segs.first()?.as_str();
    let rest = |skip: usize, base: &[String]| -> Segs { base.iter().chain(&segs[skip..]).cloned().collect() };
    match first {
        "crate" => Some(rest(1, &[])),
        "self" => Some(rest(1, at)),
        "super" => {
            let ups = segs.iter().take_while(|s| *s == "super").count();
            Some(rest(ups, at.get(..at.len().checked_sub(ups)?)?))
        }
        "Self" => None,
        name if at == f.module && f.parsed.children.iter().any(|(c, around, _)| c == name && around.is_empty()) => {
            Some(rest(0, at))
        }
        name => names.and_then(|n| n.get(name)).map(|base| rest(1, base)),
    }
}

/// The groups of files that reach each other (strongly connected, more than one file).
fn cycles(edges: &Edges) -> Vec<BTreeSet<String>> {
    // Tarjan's algorithm; the graph has about a hundred files, so recursion is fine.
    struct Walk<'a> {
        /// The graph walked.
        edges: &'a Edges,
        /// Order of first visit.
        index: BTreeMap<&'a str, usize>,
        /// Lowest visit order reachable through files still on the stack.
        low: BTreeMap<&'a str, usize>,
        /// Files visited whose group is not closed yet.
        stack: Vec<&'a str>,
        /// Groups of more than one file.
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, m: &'a str) {
        let n = w.index.len();
        w.index.insert(m, n);
        w.low.insert(m, n);
        w.stack.push(m);
        for to in w.edges.get(m).into_iter().flatten() {
            if !w.index.contains_key(to.as_str()) {
                visit(w, to);
                let low = w.low[m].min(w.low[to.as_str()]);
                w.low.insert(m, low);
            } else if w.stack.contains(&to.as_str()) {
                let low = w.low[m].min(w.index[to.as_str()]);
                w.low.insert(m, low);
            }
        }
        if w.low[m] == w.index[m] {
            let at = w.stack.iter().position(|s| *s == m).expect("on the stack");
            let group: BTreeSet<String> = w.stack.drain(at..).map(str::to_string).collect();
            if group.len() > 1 {
                w.found.push(group);
            }
        }
    }
    let mut w = Walk { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for m in edges.keys() {
        if !w.index.contains_key(m.as_str()) {
            visit(&mut w, m);
        }
    }
    w.found
}

/// A shortest way from `start` round `group` back to it.
fn way_round(start: &String, group: &BTreeSet<String>, edges: &Edges) -> Vec<String> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start.as_str()]);
    while let Some(m) = queue.pop_front() {
        for to in edges[m].iter().filter(|t| group.contains(*t)) {
            if to == start {
                let mut path = vec![start.clone(), m.to_string()];
                while let Some(prev) = came_from.get(path.last().expect("not empty").as_str()) {
                    path.push(prev.to_string());
                }
                path.reverse();
                return path;
            }
            if !came_from.contains_key(to.as_str()) {
                came_from.insert(to, m);
                queue.push_back(to);
            }
        }
    }
    unreachable!("a strongly connected group has a way round")
}

/// What a cycle looks like to whoever has to cut it: every file in it, what each uses in it,
/// and the shortest way round through each file (each loop once).
fn report(files: &BTreeMap<String, File>, edges: &Edges, groups: &[BTreeSet<String>]) -> String {
    let shown = |k: &str| files.get(k).map_or(k.to_string(), |f| f.shown.clone());
    let mut out = String::new();
    for g in groups {
        out += &format!("import cycle among {} files:\n", g.len());
        for m in g {
            let uses: Vec<String> = edges[m].iter().filter(|t| g.contains(*t)).map(|t| shown(t)).collect();
            out += &format!("  {} uses {}\n", shown(m), uses.join(", "));
        }
        let mut rounds = BTreeSet::new();
        for m in g {
            let mut round = way_round(m, g, edges);
            round.pop();
            let first = round.iter().enumerate().min_by_key(|(_, k)| *k).map_or(0, |(i, _)| i);
            round.rotate_left(first);
            round.push(round[0].clone());
            rounds.insert(round);
        }
        for round in rounds {
            let round: Vec<String> = round.iter().map(|k| shown(k)).collect();
            out += &format!("  way round: {}\n", round.join(" -> "));
        }
    }
    out
}

#[test]
fn library_files_import_each_other_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = load(root, &|p| std::fs::read_to_string(p).ok());
    assert!(files.len() > 50, "expected the whole library, found {:?}", files.keys());
    let edges = edges(&files);
    let groups = cycles(&edges);
    assert!(groups.is_empty(), "\n{}", report(&files, &edges, &groups));
}

/// A made-up crate of `(path, text)` pairs, loaded and linked as the real one is.
fn fake(sources: &[(&str, &str)]) -> (BTreeMap<String, File>, Edges) {
    let map: BTreeMap<PathBuf, String> =
        sources.iter().map(|(p, t)| (Path::new("/c").join(p), t.to_string())).collect();
    let files = load(Path::new("/c"), &|p| map.get(p).cloned());
    let edges = edges(&files);
    (files, edges)
}

#[test]
fn the_reader_sees_what_it_should() {
    let t = tokens(
        r##"a::b // crate::x
        /* crate::y /* nested */ */ "crate::z" r#"super::w"# '\'' 'x' <'a> b'c' c"##,
    );
    let words: Vec<&Tok> = t.iter().filter(|t| matches!(t, Tok::Word(_) | Tok::Sep)).collect();
    let want = [Tok::Word("a".into()), Tok::Sep, Tok::Word("b".into()), Tok::Word("a".into()), Tok::Word("c".into())];
    assert_eq!(words, want.iter().collect::<Vec<_>>());
    let mut leaves = Vec::new();
    use_tree(&tokens("crate::{a::{self, B as C}, d::*};"), &mut 0, Vec::new(), &mut leaves);
    let leaf = |p: &str, n: Option<&str>| UseLeaf {
        path: p.split("::").map(String::from).collect(),
        name: n.map(String::from),
    };
    assert_eq!(leaves, [leaf("crate::a", Some("a")), leaf("crate::a::B", Some("C")), leaf("crate::d", None)]);

    let (files, edges) = fake(&[
        ("src/lib.rs", "mod a; mod b; mod q; pub use a::Thing; pub use b as bee;"),
        ("src/a/mod.rs", "mod c; mod d; #[path = \"e_file.rs\"] mod e; pub use c::Thing; pub fn f() {}"),
        ("src/a/c.rs", "use super::f; pub struct Thing; #[cfg(test)] mod tests { use super::Thing; }"),
        ("src/a/d.rs", "pub fn g() { super::super::b::h(); } // crate::q"),
        ("src/a/e_file.rs", "fn x() -> &'static str { \"crate::q\" }"),
        ("src/b.rs", "use crate::Thing; pub fn h() {}"),
        ("src/q.rs", "use crate::a; fn q() { a::f(); }"),
    ]);
    let to = |k: &str| edges[k].iter().map(String::as_str).collect::<Vec<_>>();
    assert_eq!(files["a::e"].shown, "src/a/e_file.rs");
    // lib.rs and a/mod.rs only declare and re-export: no edges; the re-export leads to a/c.rs.
    assert_eq!((to(""), to("a")), (vec![], vec![]));
    assert_eq!((to("a::c"), to("a::d"), to("a::e")), (vec!["a"], vec!["b"], vec![]));
    assert_eq!((to("b"), to("q")), (vec!["a::c"], vec!["a"]));
    assert!(cycles(&edges).is_empty());

    // A mod.rs that uses its child, which uses the mod.rs back: the cycle the old test missed.
    let (files, edges) = fake(&[
        ("src/lib.rs", "mod a;"),
        ("src/a/mod.rs", "mod c; pub use c::Thing; pub fn f() -> Thing { c::make() }"),
        ("src/a/c.rs", "pub struct Thing; pub fn make() -> Thing { super::f(); Thing }"),
    ]);
    let groups = cycles(&edges);
    assert_eq!(groups, [BTreeSet::from(["a".to_string(), "a::c".to_string()])]);
    let text = report(&files, &edges, &groups);
    assert!(text.contains("way round: src/a/mod.rs -> src/a/c.rs -> src/a/mod.rs"), "{text}");
}
