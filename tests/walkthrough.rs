//! The README's "Walk-through with curl", run as written against the shipped `gateway.toml`, so
//! that it cannot rot: the commands are read from README.md (no copy here), each numbered step
//! is run with `bash`, and each step's result is checked against what its comment promises.
//!
//! Only what must change to run beside other tests is rewritten. In `gateway.toml` (copied into
//! a temp dir: the first start writes keys/, certs/ and state/ beside it): both listeners on
//! port 0, and JSON logs so that [`Proc::spawn`] reads the ports the kernel chose from the
//! "tokengate listening" line. In the commands: `https://localhost:8443` and
//! `http://127.0.0.1:9901` to those ports, and `cargo run --release -q --` to the binary built
//! for the tests. curl reads a `.curlrc` (through `CURL_HOME`) that appends each answer's status
//! on a line of its own, `@status NNN`: the commands stay as a reader runs them, and a step's
//! statuses are known even where the README uses `curl -s`. (So a step must not capture curl's
//! output in a variable: the status line would be captured with it.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::binary::Proc;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The body of the first fenced block of `lang` after the heading line `heading`.
fn block_after<'a>(text: &'a str, heading: &str, lang: &str) -> &'a str {
    let at = text.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("README.md has no {heading:?}"));
    let open = format!("\n```{lang}\n");
    let start =
        at + text[at..].find(&open).unwrap_or_else(|| panic!("no ```{lang} block after {heading:?}")) + open.len();
    let len = text[start..].find("\n```").expect("the block is closed");
    &text[start..start + len + 1]
}

/// One numbered step of the walk-through: its comment line and its commands.
struct Step {
    n: u32,
    comment: String,
    commands: String,
}

/// The block cut at its `# N. ...` comment lines.
fn steps(block: &str) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for line in block.lines() {
        let number = line.strip_prefix("# ").and_then(|rest| rest.split_once(". ")).and_then(|(n, _)| n.parse().ok());
        match (number, out.last_mut()) {
            (Some(n), _) => out.push(Step { n, comment: line.to_owned(), commands: String::new() }),
            (None, Some(step)) => {
                step.commands.push_str(line);
                step.commands.push('\n');
            }
            (None, None) => assert!(line.trim().is_empty(), "a line before the first numbered step: {line}"),
        }
    }
    out
}

/// `text` with every `from` replaced by `to`; panics when `from` does not occur (a rewrite that
/// silently stopped applying would leave the test talking to the wrong gateway).
fn rewrite(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected {from:?} in:\n{text}");
    text.replace(from, to)
}

/// One curl answer: its status (from the `.curlrc` write-out) and what curl printed.
struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    /// A response header (printed with `curl -i`), by case-insensitive name.
    fn header(&self, name: &str) -> Option<&str> {
        self.text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// The body as JSON (after the headers when curl printed them).
    fn json(&self) -> Value {
        let body = match self.text.starts_with("HTTP/") {
            true => self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b),
            false => &self.text,
        };
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// A header as the echo upstream received it.
    fn echoed(&self, name: &str) -> Value {
        self.json()["headers"][name].clone()
    }
}

/// Splits a step's output into its curl answers (each ends with `\n@status NNN\n`).
fn answers(stdout: &str) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut rest = stdout;
    while let Some(i) = rest.find("\n@status ") {
        let (code, tail) = rest[i + 9..].split_once('\n').unwrap_or((&rest[i + 9..], ""));
        out.push(Answer {
            status: code.parse().unwrap_or_else(|_| panic!("status {code:?}")),
            text: rest[..i].to_owned(),
        });
        rest = tail;
    }
    assert!(rest.trim().is_empty(), "output outside any curl answer: {rest:?}");
    out
}

/// A bash that runs steps one after the other in the gateway's folder, carrying the shell
/// variables a step sets (`TOKEN=...`) to the next.
struct Shell {
    gateway_dir: PathBuf,
    tools: tempfile::TempDir,
}

impl Shell {
    fn new(gateway_dir: &Path) -> Shell {
        let tools = tempfile::tempdir().unwrap();
        std::fs::write(tools.path().join(".curlrc"), "write-out = \"\\n@status %{http_code}\\n\"\n").unwrap();
        Shell { gateway_dir: gateway_dir.to_owned(), tools }
    }

    fn vars(&self) -> PathBuf {
        self.tools.path().join("vars.sh")
    }

    /// Runs `commands` after the variables of the earlier steps; keeps those it sets.
    fn run(&self, what: &str, commands: &str) -> String {
        let vars = self.vars();
        let set: Vec<&str> = commands
            .lines()
            .filter_map(|l| l.split_once('=').map(|(name, _)| name))
            .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        let keep = if set.is_empty() {
            String::new()
        } else {
            format!("declare -p {} >> '{}'\n", set.join(" "), vars.display())
        };
        let script =
            format!("set -euo pipefail\nif [ -f '{v}' ]; then source '{v}'; fi\n{commands}{keep}", v = vars.display());
        let mut bash = Command::new("bash");
        bash.args(["-c", &script]).current_dir(&self.gateway_dir).env("CURL_HOME", self.tools.path());
        // The gateway is on loopback: no proxy of the environment in between.
        for var in ["RUST_LOG", "http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
            bash.env_remove(var);
        }
        let out = bash.output().expect("run bash");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{what} failed ({}):\n{commands}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        stdout
    }

    /// The value of a shell variable set by an earlier step.
    fn var(&self, name: &str) -> String {
        self.run(&format!("reading ${name}"), &format!("printf %s \"${name}\"\n"))
    }
}

/// Asserts that a step's comment says `promises`: the test checks what the README tells.
fn promises(step: &Step, promises: &[&str]) {
    for p in promises {
        assert!(step.comment.contains(p), "step {} no longer says {p:?}; update its check: {}", step.n, step.comment);
    }
}

/// The step's one curl answer.
fn one<'a>(step: &Step, answers: &'a [Answer]) -> &'a Answer {
    let texts: Vec<&str> = answers.iter().map(|a| a.text.as_str()).collect();
    assert_eq!(answers.len(), 1, "step {}: one curl answer expected: {texts:?}", step.n);
    &answers[0]
}

#[test]
fn the_readme_walk_through_does_what_it_says() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = block_after(&readme, "## Walk-through with curl", "sh");
    let example = block_after(&readme, "## Walk-through with curl", "json");

    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo().join("gateway.toml")).unwrap();
    let mut config = rewrite(&shipped, "listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:0\"");
    config = rewrite(&config, "listen = \"127.0.0.1:9901\"", "listen = \"127.0.0.1:0\"");
    config = rewrite(&config, "format = \"pretty\"", "format = \"json\"");
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(&config_path, config).unwrap();
    let gateway = Proc::spawn(&config_path);

    let mut commands = rewrite(block, "https://localhost:8443", &format!("https://localhost:{}", gateway.https.port()));
    commands = rewrite(&commands, "http://127.0.0.1:9901", &format!("http://127.0.0.1:{}", gateway.admin.port()));
    commands = rewrite(&commands, "cargo run --release -q --", &format!("'{}'", env!("CARGO_BIN_EXE_tokengate")));
    for stale in [":8443", ":9901", "cargo "] {
        assert!(!commands.contains(stale), "{stale:?} left in the rewritten walk-through:\n{commands}");
    }

    let shell = Shell::new(dir.path());
    let steps = steps(&commands);
    let numbers: Vec<u32> = steps.iter().map(|s| s.n).collect();
    assert_eq!(numbers, (1..=numbers.len() as u32).collect::<Vec<_>>(), "the steps are numbered 1, 2, 3...");
    for step in &steps {
        let stdout = shell.run(&format!("step {}", step.n), &step.commands);
        let a = answers(&stdout);
        let n = step.n;
        match n {
            1 => {
                promises(step, &["401", "no error code"]);
                let r = one(step, &a);
                assert_eq!(r.status, 401, "{}", r.text);
                let challenge = r.header("www-authenticate").unwrap_or_else(|| panic!("no challenge: {}", r.text));
                assert!(
                    challenge.starts_with("Bearer realm=\"tokengate\"") && !challenge.contains("error"),
                    "{challenge}"
                );
            }
            2 => {
                promises(step, &["Mint a token", "prints nothing"]);
                assert_eq!(stdout, "", "step 2 printed something");
                let token = shell.var("TOKEN");
                assert_eq!(token.split('.').count(), 3, "TOKEN is a JWT: {token:?}");
            }
            3 => {
                promises(step, &["200", "identity headers"]);
                let r = one(step, &a);
                assert_eq!(r.status, 200, "{}", r.text);
                assert_eq!((r.echoed("x-auth-subject"), r.echoed("x-auth-scope")), ("alice".into(), "read".into()));
                // "Step 3 answers JSON like": every "name":"value" of that example, as sent.
                let body = r.json();
                let parts: Vec<&str> = example.split('"').collect();
                let mut pairs = 0;
                for w in (1..parts.len().saturating_sub(2)).step_by(2) {
                    if parts[w + 1] != ":" {
                        continue;
                    }
                    let (name, value) = (parts[w], parts[w + 2]);
                    let got = if body[name].is_null() { &body["headers"][name] } else { &body[name] };
                    assert_eq!(got, value, "the README's example says {name:?}:{value:?}; the echo answered {body}");
                    pairs += 1;
                }
                assert!(pairs >= 8, "only {pairs} pairs read from the README's example:\n{example}");
            }
            4 => {
                promises(step, &["200", "dropped", "x-auth-subject is still alice"]);
                let r = one(step, &a);
                assert_eq!(r.status, 200, "{}", r.text);
                assert_eq!(r.echoed("x-auth-subject"), "alice");
                let headers = r.json()["headers"].clone();
                assert!(
                    headers.as_object().unwrap().values().all(|v| v != "root"),
                    "the spoofed value got through: {headers}"
                );
            }
            5 => {
                promises(step, &["403 insufficient_scope", "\"admin\" scope"]);
                let r = one(step, &a);
                assert_eq!(r.status, 403, "{}", r.text);
                let challenge = r.header("www-authenticate").unwrap_or_default();
                assert!(
                    challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"admin\""),
                    "{challenge}"
                );
            }
            6 => {
                promises(step, &["200 with the scope", "x-auth-subject is bob"]);
                let r = one(step, &a);
                assert_eq!(r.status, 200, "{}", r.text);
                assert_eq!((r.echoed("x-auth-subject"), r.echoed("x-auth-scope")), ("bob".into(), "read admin".into()));
            }
            7 => {
                promises(step, &["401 invalid_token"]);
                let r = one(step, &a);
                assert_eq!(r.status, 401, "{}", r.text);
                assert!(
                    r.header("www-authenticate").unwrap_or_default().contains("error=\"invalid_token\""),
                    "{}",
                    r.text
                );
            }
            8 => {
                promises(step, &["200 without a token"]);
                let r = one(step, &a);
                assert_eq!(r.status, 200, "{}", r.text);
                assert_eq!(r.json()["path"], "/public/");
                assert!(r.echoed("x-auth-subject").is_null() && r.echoed("authorization").is_null(), "{}", r.text);
            }
            9 => {
                promises(step, &["each 200", "health (ok)", "readiness (ready)", "reload status (JSON)", "Prometheus"]);
                let statuses: Vec<u16> = a.iter().map(|r| r.status).collect();
                assert_eq!(statuses, [200; 4], "healthz, readyz, reload, metrics");
                assert_eq!((a[0].text.as_str(), a[1].text.as_str()), ("ok", "ready"));
                assert!(serde_json::from_str::<Value>(&a[2].text).unwrap()["generation"].is_u64(), "{}", a[2].text);
                assert!(a[3].text.contains("tokengate_requests_total{"), "{}", a[3].text);
            }
            _ => panic!("step {n} of the README's walk-through has no check here; add one: {}", step.comment),
        }
    }
    assert_eq!(numbers.len(), 9, "a step of the README's walk-through is gone: drop its check here");
    drop(gateway);
}
