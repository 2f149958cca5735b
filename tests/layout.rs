//! The module layout stays a layered graph: no module imports one that (directly or through
//! others) imports it back. A module and its own ancestors may refer to each other (a folder's
//! `mod.rs` and its parts), and `super::` paths are not followed; everything else is an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, as its module path (`proxy::upstream::pool`).
fn modules(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(root).expect("under src");
            let mut parts: Vec<String> =
                rel.iter().map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
            if parts.last().is_some_and(|l| l == "mod" || l == "lib" || l == "main") {
                parts.pop();
            }
            out.insert(parts.join("::"), p);
        }
    }
    out
}

/// The code of a file without comments (doc links are not imports).
fn code(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// `crate::` paths used by `text`, with one level of `crate::{a::b, c}` grouping expanded.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(|p| p.trim().to_string()));
            continue;
        }
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        out.push(rest[..end].trim_end_matches(':').to_string());
    }
    out
}

/// The longest module that `path` names (or lies inside).
fn resolve(path: &str, mods: &BTreeMap<String, PathBuf>) -> Option<String> {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len()).rev().map(|n| segs[..n].join("::")).find(|m| mods.contains_key(m))
}

fn related(a: &str, b: &str) -> bool {
    let inside = |x: &str, y: &str| y.is_empty() || x == y || x.starts_with(&format!("{y}::"));
    inside(a, b) || inside(b, a)
}

#[test]
fn no_module_imports_itself_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&root);
    assert!(mods.len() > 20, "expected the whole module tree, found {:?}", mods.keys());
    let mut edges = Edges::new();
    for (m, file) in &mods {
        let text = code(&std::fs::read_to_string(file).expect("read module"));
        for p in crate_paths(&text) {
            if let Some(to) = resolve(&p, &mods).filter(|to| !related(m, to)) {
                edges.entry(m.clone()).or_default().insert(to);
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

type Edges = BTreeMap<String, BTreeSet<String>>;

/// A cycle in `edges`, found by a depth-first search for a back edge.
fn find_cycle(edges: &Edges) -> Option<Vec<String>> {
    fn visit(m: &str, edges: &Edges, state: &mut BTreeMap<String, u8>, path: &mut Vec<String>) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for to in edges.get(m).into_iter().flatten() {
            match state.get(to.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == to).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(to.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(to, edges, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(m, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_cycle_finder_sees_a_cycle() {
    // The checker itself must be able to fail: a made-up pair that imports each other.
    let mut mods = BTreeMap::new();
    mods.insert("a".to_string(), PathBuf::new());
    mods.insert("b::c".to_string(), PathBuf::new());
    assert_eq!(crate_paths("use crate::b::c::Thing;"), vec!["b::c::Thing"]);
    assert_eq!(crate_paths("use crate::{a::X, b::c};"), vec!["a::X", "b::c"]);
    assert_eq!(resolve("b::c::Thing", &mods).as_deref(), Some("b::c"));
    assert_eq!(code("use x; // crate::a"), "use x; ");
    assert!(related("proxy::headers", "proxy") && !related("proxy", "proxy_other"));
    let edge = |pairs: &[(&str, &str)]| -> Edges {
        let mut e = Edges::new();
        for (a, b) in pairs {
            e.entry(a.to_string()).or_default().insert(b.to_string());
        }
        e
    };
    assert_eq!(
        find_cycle(&edge(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(find_cycle(&edge(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
}
