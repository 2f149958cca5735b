//! The docs hold together: every relative link of the Markdown files (README.md, SECURITY.md,
//! docs/*.md, benches/README.md, certs/README.md) names a file that exists in the repository,
//! and every `#anchor` names a heading of its target as GitHub slugs it; the README's map
//! links every page of docs/. No network: links with a scheme (`https:`, `mailto:`) are skipped.
//!
//! GitHub's slug of a heading: its text as rendered (link targets and code backticks gone),
//! lowercased, each space made `-`, every character dropped that is not a letter, a digit, `-`
//! or `_`; a heading whose slug was already taken gets `-1`, the next `-2`, and so on. Links
//! and headings inside fenced code blocks and code spans are not links or headings.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files whose links are checked: `*.md` at the root and in docs/, and the
/// READMEs of benches/ and certs/.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [root.to_path_buf(), root.join("docs")] {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_file() && path.extension().is_some_and(|x| x == "md") {
                files.push(path);
            }
        }
    }
    for extra in ["benches/README.md", "certs/README.md"] {
        files.push(root.join(extra));
    }
    files.sort();
    files
}

/// The lines outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<(char, usize)> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |m| trimmed.chars().take_while(|c| *c == m).count());
        match (fence, marker) {
            (None, Some(m)) if run >= 3 => fence = Some((m, run)),
            (Some((m, n)), Some(c)) if c == m && run >= n && trimmed[run..].trim().is_empty() => fence = None,
            (None, _) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// `text` with every code span (backticks and content) blanked out to spaces of the same byte
/// length, newlines kept, so that nothing inside one is taken for a link and byte offsets agree.
fn blank_code_spans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut blank = vec![false; chars.len()];
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|c| **c == '`').count();
        // The closing run: the next run of exactly the same length.
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let r = chars[j..].iter().take_while(|c| **c == '`').count();
                if r == run {
                    close = Some(j + r);
                    break;
                }
                j += r;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                blank[i..end].iter_mut().for_each(|b| *b = true);
                i = end;
            }
            None => i += run, // a lone backtick run is literal text
        }
    }
    let mut out = String::with_capacity(text.len());
    for (c, blank) in chars.into_iter().zip(blank) {
        if blank && c != '\n' {
            out.extend(std::iter::repeat_n(' ', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    out
}

/// The destination starting at `s` (just after `](`): `<...>`, or up to whitespace or the `)`
/// that closes the link (balanced parentheses allowed inside).
fn destination(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix('<') {
        return rest.split('>').next().unwrap_or("");
    }
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return &s[..i],
            ')' => depth -= 1,
            c if c.is_whitespace() => return &s[..i],
            _ => {}
        }
    }
    s
}

/// Every link destination of a Markdown text, with its line: inline links and images
/// (`[text](dest)`, `![alt](dest)`) and reference definitions (`[label]: dest`).
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    // Paragraphs of prose (code spans may run across lines, never across a blank line).
    let mut paragraphs: Vec<(usize, String)> = Vec::new();
    let mut last = 0;
    for (n, line) in prose_lines(text) {
        match paragraphs.last_mut() {
            Some((_, p)) if n == last + 1 && !line.trim().is_empty() && !p.is_empty() => {
                p.push('\n');
                p.push_str(line);
            }
            _ => paragraphs.push((n, if line.trim().is_empty() { String::new() } else { line.to_owned() })),
        }
        last = n;
    }
    for (start, paragraph) in paragraphs {
        let prose = blank_code_spans(&paragraph);
        for (offset, line) in prose.lines().enumerate() {
            let n = start + offset;
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix('[') {
                if let Some((_, dest)) = rest.split_once("]:") {
                    out.push((n, destination(dest.trim_start()).to_owned()));
                    continue;
                }
            }
            let mut from = 0;
            while let Some(k) = line[from..].find("](") {
                let at = from + k + 2;
                out.push((n, destination(&line[at..]).to_owned()));
                from = at;
            }
        }
    }
    out
}

/// The text of a heading line (`## Title ##` -> `Title`), or None.
fn heading_text(line: &str) -> Option<&str> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let line = &line[indent..];
    let level = line.chars().take_while(|c| *c == '#').count();
    if indent > 3 || !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let rest = rest.trim();
    // An optional closing sequence of #s, preceded by a space.
    let unclosed = rest.trim_end_matches('#');
    Some(if unclosed.is_empty() || unclosed.ends_with(' ') { unclosed.trim_end() } else { rest })
}

/// GitHub's slug of a heading's text, before duplicate suffixes.
fn slug(heading: &str) -> String {
    // Drop link destinations (`[text](url)` reads as `text`), outside code spans only.
    let prose = blank_code_spans(heading);
    let mut text = String::new();
    let mut skip_to = 0;
    for (i, c) in heading.char_indices() {
        if i < skip_to {
            continue;
        }
        if prose[i..].starts_with("](") {
            skip_to = i + 2 + destination(&prose[i + 2..]).len() + 1;
            continue;
        }
        text.push(c);
    }
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor of a Markdown text, duplicates suffixed as GitHub does (`x`, `x-1`, `x-2`).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let Some(heading) = heading_text(line) else { continue };
        let base = slug(heading);
        let anchor = match taken.get(&base).copied() {
            None => {
                taken.insert(base.clone(), 0);
                base
            }
            Some(mut count) => {
                let mut candidate;
                loop {
                    count += 1;
                    candidate = format!("{base}-{count}");
                    if !taken.contains_key(&candidate) {
                        break;
                    }
                }
                taken.insert(base, count);
                taken.insert(candidate.clone(), 0);
                candidate
            }
        };
        out.insert(anchor);
    }
    out
}

/// `%20` and friends decoded (link paths are URL-encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        if let (b'%', Some(Ok(b))) = (bytes[i], hex.map(|h| u8::from_str_radix(h, 16))) {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a/./b/../c` -> `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether a destination has a URL scheme (`https:`, `mailto:`): not a relative link.
fn has_scheme(dest: &str) -> bool {
    dest.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
    })
}

/// Every broken relative link of `files` (paths inside `root`), one line each:
/// `file:line: dest: what is wrong`.
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut anchor_cache: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = file.strip_prefix(root).unwrap_or(file).display().to_string();
        for (line, dest) in links(&text) {
            let mut fail = |what: String| errors.push(format!("{name}:{line}: ({dest}): {what}"));
            if dest.is_empty() {
                fail("empty link".into());
                continue;
            }
            if has_scheme(&dest) {
                continue;
            }
            let (path, anchor) = match dest.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (dest.as_str(), None),
            };
            if path.contains('?') {
                fail("a query in a relative link".into());
                continue;
            }
            let target = if path.is_empty() {
                file.clone()
            } else if path.starts_with('/') {
                fail("an absolute path (GitHub resolves it against the site, not the repository)".into());
                continue;
            } else {
                normalize(&file.parent().expect("a file has a folder").join(percent_decode(path)))
            };
            if !target.starts_with(root) {
                fail("points outside the repository".into());
                continue;
            }
            if !target.exists() {
                fail(format!("no such file: {}", target.strip_prefix(root).unwrap_or(&target).display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if target.is_dir() || target.extension().is_none_or(|x| x != "md") {
                fail("an anchor into something that is not a Markdown file".into());
                continue;
            }
            let known = anchor_cache.entry(target.clone()).or_insert_with(|| {
                anchors(&std::fs::read_to_string(&target).unwrap_or_else(|e| panic!("{}: {e}", target.display())))
            });
            if !known.contains(anchor) {
                let list: Vec<&str> = known.iter().map(String::as_str).collect();
                fail(format!("no heading with anchor #{anchor}; the target has: {}", list.join(", ")));
            }
        }
    }
    errors
}

#[test]
fn every_relative_link_of_the_docs_resolves() {
    let root = repo();
    let files = markdown_files(&root);
    for must in ["README.md", "SECURITY.md", "docs/configuration.md", "benches/README.md"] {
        assert!(files.contains(&root.join(must)), "{must} is not among the checked files: {files:?}");
    }
    let checked: usize = files.iter().map(|f| links(&std::fs::read_to_string(f).unwrap()).len()).sum();
    assert!(checked > 20, "only {checked} links found: is the link finder broken?");
    let errors = broken_links(&root, &files);
    assert!(errors.is_empty(), "{} broken link(s):\n{}", errors.len(), errors.join("\n"));
}

#[test]
fn the_readme_map_links_every_page_of_docs() {
    let root = repo();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let linked: BTreeSet<String> =
        links(&readme).into_iter().map(|(_, d)| d.split('#').next().unwrap().to_owned()).collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") && !linked.contains(&format!("docs/{name}")) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "docs/ pages missing from the README's map (one line each): {missing:?}");
}

#[test]
fn slugs_follow_githubs_rules() {
    let text = "# Configuration reference (`gateway.toml`)\n\
                ## `[[users]]` (resource owners for the password grant), `users_file`\n\
                ## Sender-constrained tokens: DPoP (RFC 9449)\n\
                ## Two instances, one Redis, HAProxy in TCP mode (on one machine)\n\
                ### See [the tables](configuration.md#tables) ###\n\
                ## Paths\n## Paths\n## Paths\n## Paths-1\n\
                ```sh\n# 1. Not a heading: in a fence\n```\n\
                #Not a heading either\n";
    let got: Vec<String> = anchors(text).into_iter().collect();
    let want = [
        "configuration-reference-gatewaytoml",
        "paths",
        "paths-1",
        "paths-1-1",
        "paths-2",
        "see-the-tables",
        "sender-constrained-tokens-dpop-rfc-9449",
        "two-instances-one-redis-haproxy-in-tcp-mode-on-one-machine",
        "users-resource-owners-for-the-password-grant-users_file",
    ];
    assert_eq!(got, want);
}

#[test]
fn a_broken_link_or_anchor_is_reported_and_code_is_not_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("docs")).unwrap();
    std::fs::write(root.join("docs/b.md"), "# B\n\n## Same\n\n## Same\n").unwrap();
    let a = "# A\n\n\
             [ok](docs/b.md) [ok](docs/b.md#same-1) [ok](#a) [ok](https://example.com/x#y) [ok](docs/)\n\
             [gone](docs/missing.md) [bad anchor](docs/b.md#same-2)\n\
             [also bad](#nowhere)\n\
             `[in code](nowhere.md)` and ``[also `code`](nowhere.md)``, a span across\n\
             lines: `[x](\nnowhere.md)`\n\n\
             ```md\n[in a fence](nowhere.md)\n```\n\n\
             [ref]: docs/nothing.md\n";
    std::fs::write(root.join("a.md"), a).unwrap();
    let errors = broken_links(root, &[root.join("a.md")]);
    let lines: Vec<&str> = errors.iter().map(|e| e.split(": ").next().unwrap()).collect();
    assert_eq!(lines, ["a.md:4", "a.md:4", "a.md:5", "a.md:14"], "{errors:#?}");
    assert!(errors[0].contains("no such file: docs/missing.md"), "{errors:#?}");
    assert!(errors[1].contains("#same-2") && errors[1].contains("same, same-1"), "{errors:#?}");
}
