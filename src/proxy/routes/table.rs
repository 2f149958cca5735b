//! The route table: hosts, methods and path templates, compiled once per snapshot into one trie
//! per host tier and looked up without allocating.
//!
//! # Precedence
//! 1. The host: routes naming the request's host exactly, then those whose `*.` wildcard covers
//!    it, then routes naming no host. A tier where no route's path matches is passed over.
//! 2. The longest prefix, counted in segments; at the same length, a literal segment beats a
//!    placeholder at the first place where they differ.
//! 3. The method, among the routes of that one prefix: a route naming the method beats one
//!    naming none. When none serves it the answer is 405 with the methods that would be
//!    (`Allow`): a method never makes a request fall back to a shorter, perhaps more lenient,
//!    prefix.
//!
//! Two routes that one request could reach with the same precedence are refused when the table
//! is built, naming both.

use std::collections::HashMap;

use http::Method;

use super::{normalize_path, PathError};

/// Most placeholders in one prefix: captures live in a fixed array, so a lookup never allocates.
pub const MAX_PLACEHOLDERS: usize = 8;

/// One `[[routes]]` entry as the table needs it.
#[derive(Debug, Clone)]
pub struct RouteSpec<T> {
    /// The prefix as configured, placeholders (`{name}`) included.
    pub prefix: String,
    /// Host names (any case; `*.example.com` is one label); empty: any host.
    pub hosts: Vec<String>,
    /// Methods served; empty: every method.
    pub methods: Vec<Method>,
    /// What the proxy keeps per route.
    pub value: T,
}

/// Why a table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteTableError {
    /// The prefix is not a path the gateway would accept.
    #[error("route prefix {prefix:?} is not a valid path: {reason}")]
    InvalidPrefix {
        /// The prefix as configured.
        prefix: String,
        /// Why [`normalize_path`] refuses it.
        reason: PathError,
    },
    /// The prefix is valid but no normalized request path could ever equal it.
    #[error("route prefix {prefix:?} is not in canonical form; write {canonical:?}")]
    NonCanonical {
        /// The prefix as configured.
        prefix: String,
        /// What it normalizes to.
        canonical: String,
    },
    /// A placeholder that is not a whole segment `{name}` of letters, digits and `_`.
    #[error("route prefix {prefix:?}: {why}")]
    BadPlaceholder {
        /// The prefix as configured.
        prefix: String,
        /// What is wrong with it.
        why: String,
    },
    /// A host that is not a name, or a wildcard other than a leading `*.`.
    #[error("route {prefix:?}: hosts: {host:?} is not a host name (a wildcard is one leading \"*.\")")]
    BadHost {
        /// The route's prefix.
        prefix: String,
        /// The host as configured.
        host: String,
    },
    /// Two routes one request could reach with the same precedence.
    #[error("routes {first} and {second} both match the same requests with the same precedence")]
    Ambiguous {
        /// The first route, described.
        first: String,
        /// The second route, described.
        second: String,
    },
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup<'t, T> {
    /// A route serves the request.
    Found(Found<'t, T>),
    /// Routes match the host and path, none the method: 405 with these methods in `Allow`.
    MethodNotAllowed(&'t str),
    /// No route matches the host and path: 404.
    NotFound,
}

/// The route that serves a request, and what of the path it matched.
#[derive(Debug)]
pub struct Found<'t, T> {
    /// The route's value.
    pub value: &'t T,
    /// Bytes of the request path the prefix covered (what `strip_prefix` removes).
    pub matched_len: usize,
    /// The placeholders' values: byte ranges of the path, in the order of [`Found::names`].
    captures: [(u32, u32); MAX_PLACEHOLDERS],
    /// The placeholders' names, in order.
    names: &'t [String],
}

impl<'t, T> Found<'t, T> {
    /// The raw (still percent-encoded) path segment a placeholder matched.
    pub fn capture<'p>(&self, path: &'p str, name: &str) -> Option<&'p str> {
        let i = self.names.iter().position(|n| n == name)?;
        let (a, b) = self.captures[i];
        path.get(a as usize..b as usize)
    }
}

/// A route as stored: its value and what a lookup hands back with it.
#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    /// Placeholder names in order of their segments.
    names: Vec<String>,
    /// For the 405's `Allow` and the ambiguity message.
    methods: Vec<Method>,
    /// "/orders [GET, HEAD] on api.example.com", for errors.
    described: String,
}

/// The routes ending at one trie node: those naming methods, and the one naming none.
#[derive(Debug, Clone, Default)]
struct Ending {
    /// (method, entry) for routes that name methods.
    by_method: Vec<(Method, usize)>,
    /// The route that serves any method here.
    any: Option<usize>,
    /// The methods served here, for `Allow` ("GET, HEAD").
    allow: String,
}

/// A node: one more segment of prefix.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Literal children by their ASCII-lowercased segment.
    literal: HashMap<Box<str>, usize>,
    /// The placeholder child.
    placeholder: Option<usize>,
    /// Routes whose prefix ends here.
    ending: Option<Ending>,
}

/// The deepest node with routes a walk found so far.
struct Best {
    /// The node.
    node: usize,
    /// Bytes of the path its prefix covers.
    covered: usize,
    /// Segments deep: the longer prefix wins.
    depth: usize,
    /// Byte ranges of the segments its placeholders matched.
    captures: [(u32, u32); MAX_PLACEHOLDERS],
}

/// One tier's prefixes.
#[derive(Debug, Clone)]
struct Trie {
    nodes: Vec<Node>,
}

impl Default for Trie {
    fn default() -> Self {
        Trie { nodes: vec![Node::default()] }
    }
}

/// A route table mapping (host, method, path) to values of type T (the proxy's per-route policy).
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    /// Every route, in config order.
    entries: Vec<Entry<T>>,
    /// Routes naming an exact host, by lowercased host.
    exact: HashMap<Box<str>, Trie>,
    /// Routes naming `*.suffix`, by lowercased suffix (what follows the first label).
    wildcard: HashMap<Box<str>, Trie>,
    /// Routes naming no host.
    any_host: Trie,
}

/// A prefix split into segments: literal (lowercased) or placeholder (its name).
enum Segment<'a> {
    Literal(String),
    Placeholder(&'a str),
}

fn segments(prefix: &str) -> Result<Vec<Segment<'_>>, RouteTableError> {
    let invalid = |reason| RouteTableError::InvalidPrefix { prefix: prefix.to_owned(), reason };
    let bad = |why: &str| RouteTableError::BadPlaceholder { prefix: prefix.to_owned(), why: why.to_owned() };
    let Some(body) = prefix.strip_prefix('/') else { return Err(invalid(PathError::NotAbsolute)) };
    // Placeholders are checked here; the rest as a path, each placeholder standing in as `x`.
    let mut out = Vec::new();
    let mut literal_form = String::with_capacity(prefix.len());
    for seg in body.split('/') {
        literal_form.push('/');
        if !seg.contains(['{', '}']) {
            literal_form.push_str(seg);
            if !seg.is_empty() {
                out.push(Segment::Literal(seg.to_ascii_lowercase()));
            }
            continue;
        }
        let name = seg
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .ok_or_else(|| bad("a placeholder is a whole segment, {name}"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad("a placeholder's name is letters, digits and _"));
        }
        if out.iter().any(|s| matches!(s, Segment::Placeholder(n) if *n == name)) {
            return Err(bad(&format!("placeholder {{{name}}} appears twice")));
        }
        literal_form.push('x');
        out.push(Segment::Placeholder(name));
    }
    if out.iter().filter(|s| matches!(s, Segment::Placeholder(_))).count() > MAX_PLACEHOLDERS {
        return Err(bad(&format!("at most {MAX_PLACEHOLDERS} placeholders")));
    }
    match normalize_path(&literal_form) {
        Err(reason) => Err(invalid(reason)),
        Ok(c) if !c.eq_ignore_ascii_case(&literal_form) => {
            Err(RouteTableError::NonCanonical { prefix: prefix.to_owned(), canonical: c.into_owned() })
        }
        Ok(_) => Ok(out),
    }
}

/// A configured host, checked and lowercased; `Err` when it is not a name.
fn host_key(host: &str) -> Option<(bool, String)> {
    let (wild, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let ip = name.parse::<std::net::IpAddr>().is_ok() || (name.starts_with('[') && name.ends_with(']'));
    (ip && !wild || name.split('.').all(label_ok)).then_some((wild, name))
}

impl Trie {
    fn insert(&mut self, segs: &[Segment<'_>]) -> usize {
        let mut at = 0;
        for seg in segs {
            let next = self.nodes.len();
            let child = match seg {
                Segment::Literal(l) => *self.nodes[at].literal.entry(l.as_str().into()).or_insert(next),
                Segment::Placeholder(_) => *self.nodes[at].placeholder.get_or_insert(next),
            };
            if child == next {
                self.nodes.push(Node::default());
            }
            at = child;
        }
        at
    }

    /// The best node with routes for `path` (see the module's precedence).
    fn best(&self, path: &str) -> Option<Best> {
        let mut best = None;
        let mut caps = [(0u32, 0u32); MAX_PLACEHOLDERS];
        let rest = path.strip_prefix('/')?;
        self.walk(0, path, 1, rest, 0, 0, &mut caps, &mut best);
        best
    }

    /// Depth-first, literal before placeholder, so that at equal depth the first found wins.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        node: usize,
        path: &str,
        offset: usize,
        rest: &str,
        depth: usize,
        ncaps: usize,
        caps: &mut [(u32, u32); MAX_PLACEHOLDERS],
        best: &mut Option<Best>,
    ) {
        let n = &self.nodes[node];
        if n.ending.is_some() && best.as_ref().is_none_or(|b| depth > b.depth) {
            // `offset` is where the next segment starts: the prefix covers up to its '/'.
            let covered = if depth == 0 { 0 } else { (offset - 1).min(path.len()) };
            *best = Some(Best { node, covered, depth, captures: *caps });
        }
        if rest.is_empty() {
            return;
        }
        let (seg, tail, next_offset) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..], offset + i + 1),
            None => (rest, "", offset + rest.len() + 1),
        };
        if seg.is_empty() {
            return;
        }
        if !n.literal.is_empty() {
            for candidate in [Some(seg), alias(seg)].into_iter().flatten() {
                if let Some(&child) = lowercase_get(&n.literal, candidate) {
                    self.walk(child, path, next_offset, tail, depth + 1, ncaps, caps, best);
                    break;
                }
            }
        }
        if let Some(child) = n.placeholder {
            if ncaps < MAX_PLACEHOLDERS {
                let saved = caps[ncaps];
                caps[ncaps] = (offset as u32, (offset + seg.len()) as u32);
                self.walk(child, path, next_offset, tail, depth + 1, ncaps + 1, caps, best);
                caps[ncaps] = saved;
            }
        }
    }
}

/// A segment less trailing dots and encoded spaces: Windows-style upstreams serve `admin.` and
/// `admin%20` as `admin`, so such a segment must get `admin`'s rules, not a lenient parent's.
fn alias(seg: &str) -> Option<&str> {
    let mut t = seg;
    loop {
        if let Some(s) = t.strip_suffix('.') {
            t = s;
        } else if t.len() >= 3 && t[t.len() - 3..].eq_ignore_ascii_case("%20") {
            t = &t[..t.len() - 3];
        } else {
            break;
        }
    }
    (t.len() < seg.len() && !t.is_empty()).then_some(t)
}

/// `map.get(key.to_ascii_lowercase())` without allocating for keys of ordinary length.
fn lowercase_get<'m, V>(map: &'m HashMap<Box<str>, V>, key: &str) -> Option<&'m V> {
    if !key.bytes().any(|b| b.is_ascii_uppercase()) {
        return map.get(key);
    }
    let mut buf = [0u8; 64];
    match buf.get_mut(..key.len()) {
        Some(b) => {
            for (d, s) in b.iter_mut().zip(key.bytes()) {
                *d = s.to_ascii_lowercase();
            }
            map.get(std::str::from_utf8(b).ok()?)
        }
        None => map.get(key.to_ascii_lowercase().as_str()),
    }
}

impl<T> RouteTable<T> {
    /// Builds the table; see the module doc for what is refused.
    pub fn new(specs: Vec<RouteSpec<T>>) -> Result<Self, RouteTableError> {
        let mut table = RouteTable {
            entries: Vec::with_capacity(specs.len()),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any_host: Trie::default(),
        };
        for spec in specs {
            let segs = segments(&spec.prefix)?;
            let names: Vec<String> = segs
                .iter()
                .filter_map(|s| match s {
                    Segment::Placeholder(n) => Some((*n).to_owned()),
                    Segment::Literal(_) => None,
                })
                .collect();
            let mut hosts = Vec::with_capacity(spec.hosts.len());
            for h in &spec.hosts {
                let key = host_key(h)
                    .ok_or_else(|| RouteTableError::BadHost { prefix: spec.prefix.clone(), host: h.clone() })?;
                hosts.push(key);
            }
            let described = describe(&spec);
            let id = table.entries.len();
            table.entries.push(Entry { value: spec.value, names, methods: spec.methods, described });
            if hosts.is_empty() {
                let node = table.any_host.insert(&segs);
                end_at(&mut table.any_host.nodes[node], id, &table.entries)?;
            }
            for (wild, name) in hosts {
                let tier = if wild { &mut table.wildcard } else { &mut table.exact };
                let trie = tier.entry(name.into()).or_default();
                let node = trie.insert(&segs);
                end_at(&mut trie.nodes[node], id, &table.entries)?;
            }
        }
        Ok(table)
    }

    /// The route for a request: `host` as sent (any case, port ignored; None: no host),
    /// `method`, and a path already normalized by [`normalize_path`].
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str) -> Lookup<'_, T> {
        let host = host.map(strip_port).unwrap_or("");
        let exact = (!host.is_empty()).then(|| lowercase_get(&self.exact, host)).flatten();
        let wild = host.split_once('.').and_then(|(_, suffix)| lowercase_get(&self.wildcard, suffix));
        for trie in [exact, wild, Some(&self.any_host)].into_iter().flatten() {
            let Some(Best { node, covered: matched_len, captures, .. }) = trie.best(path) else { continue };
            let Some(ending) = &trie.nodes[node].ending else { continue };
            let chosen = ending.by_method.iter().find(|(m, _)| m == method).map(|&(_, e)| e).or(ending.any);
            let Some(e) = chosen else { return Lookup::MethodNotAllowed(&ending.allow) };
            let entry = &self.entries[e];
            return Lookup::Found(Found { value: &entry.value, matched_len, captures, names: &entry.names });
        }
        Lookup::NotFound
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no routes (every lookup then fails).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every route's value, in config order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|e| &e.value)
    }
}

/// Adds route `id` to the routes ending at `node`, refusing a second route for the same methods.
fn end_at<T>(node: &mut Node, id: usize, entries: &[Entry<T>]) -> Result<(), RouteTableError> {
    let ending = node.ending.get_or_insert_with(Ending::default);
    let methods = &entries[id].methods;
    let clash = if methods.is_empty() {
        ending.any
    } else {
        ending.by_method.iter().find(|(m, _)| methods.contains(m)).map(|&(_, e)| e)
    };
    if let Some(other) = clash {
        return Err(RouteTableError::Ambiguous {
            first: entries[other].described.clone(),
            second: entries[id].described.clone(),
        });
    }
    match methods.is_empty() {
        true => ending.any = Some(id),
        false => ending.by_method.extend(methods.iter().map(|m| (m.clone(), id))),
    }
    let mut allow: Vec<&str> = ending.by_method.iter().map(|(m, _)| m.as_str()).collect();
    allow.sort_unstable();
    allow.dedup();
    ending.allow = allow.join(", ");
    Ok(())
}

/// The placeholder names of a prefix, in order (`/t/{tenant}/o/{id}` -> tenant, id).
pub fn placeholders(prefix: &str) -> Vec<String> {
    prefix.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).map(str::to_owned).collect()
}

fn describe<T>(spec: &RouteSpec<T>) -> String {
    describe_route(&spec.prefix, &spec.hosts, spec.methods.iter().map(Method::as_str))
}

/// A route as errors and reloads tell it from others on its prefix:
/// `"/orders" [GET, HEAD] on api.example.com`.
pub fn describe_route<'m>(prefix: &str, hosts: &[String], methods: impl IntoIterator<Item = &'m str>) -> String {
    let mut s = format!("{prefix:?}");
    let methods: Vec<&str> = methods.into_iter().collect();
    if !methods.is_empty() {
        s.push_str(&format!(" [{}]", methods.join(", ")));
    }
    if !hosts.is_empty() {
        s.push_str(&format!(" on {}", hosts.join(", ")));
    }
    s
}

/// The host of a `Host` value or an authority, without its port: `api.example.com:8443` ->
/// `api.example.com`, `[::1]:8443` -> `[::1]`; a trailing dot dropped.
pub fn strip_port(host: &str) -> &str {
    let h = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    };
    h.strip_suffix('.').unwrap_or(h)
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
