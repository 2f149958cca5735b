//! Which settings apply only at start. Everything else in `gateway.toml` is read from the current
//! snapshot (per request, or per connection at accept time), so a reload applies it. A reload
//! that changes one of these still applies the rest; the keys named here are reported until a
//! restart, compared against the values the process actually started with.

use super::Config;

/// The restart-only keys whose value in `next` differs from the one the process started with,
/// as dotted names (`server.listen`), in the order of docs/configuration.md.
pub fn pending(started: &Config, next: &Config) -> Vec<&'static str> {
    let (a, b) = (started, next);
    let checks = [
        ("server.listen", a.server.listen != b.server.listen),
        ("server.listen_plain", a.server.listen_plain != b.server.listen_plain),
        ("server.workers", a.server.workers != b.server.workers),
        ("server.runtime", a.server.runtime != b.server.runtime),
        ("tls.self_signed_if_missing", a.tls.self_signed_if_missing != b.tls.self_signed_if_missing),
        ("admin.listen", a.admin.listen != b.admin.listen),
        ("tokens.generate_if_missing", a.tokens.generate_if_missing != b.tokens.generate_if_missing),
        ("tokens.issue_tokens", a.tokens.issue_tokens != b.tokens.issue_tokens),
        ("state.backend", a.state.backend != b.state.backend),
        ("state.path", a.resolve(&a.state.path) != b.resolve(&b.state.path)),
        ("state.url", a.state.url != b.state.url),
        ("state.key_prefix", a.state.key_prefix != b.state.key_prefix),
        ("state.ca", a.state.ca != b.state.ca),
        ("state.timeout_ms", a.state.timeout_ms != b.state.timeout_ms),
        ("log.format", a.log.format != b.log.format),
        ("log.level", a.log.level != b.log.level),
        ("log.file", a.log.file.as_ref().map(|f| a.resolve(f)) != b.log.file.as_ref().map(|f| b.resolve(f))),
        ("log.queue_lines", a.log.queue_lines != b.log.queue_lines),
        ("tracing", a.tracing != b.tracing),
    ];
    checks.into_iter().filter(|(_, changed)| *changed).map(|(k, _)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        let mut c: Config = toml::from_str(text).expect("config parses");
        c.base_dir = ".".into();
        c
    }

    #[test]
    fn reloadable_edits_need_no_restart() {
        let a = parse("[server]\nmax_connections = 10\nheader_read_timeout_secs = 5\n");
        let b = parse("[server]\nmax_connections = 20\nheader_read_timeout_secs = 7\nmax_h2_streams = 9\n[tokens]\naudience = \"x\"\n");
        assert!(pending(&a, &b).is_empty(), "{:?}", pending(&a, &b));
        // Client certificates and the certificates by server name are read from the snapshot at each
        // handshake and request.
        let mtls = parse(
            "[tls]\nclient_ca = \"ca.pem\"\nclient_auth = \"required\"\nclient_cert_header = \"x-client-cert\"\n\
             client_cert_header_peers = [\"10.0.0.0/8\"]\n\
             [[tls.certificates]]\nnames = [\"admin.example.com\"]\ncert = \"admin.crt\"\nkey = \"admin.key\"\n",
        );
        assert!(pending(&a, &mtls).is_empty(), "{:?}", pending(&a, &mtls));
    }

    #[test]
    fn each_restart_only_edit_is_named() {
        let a = parse("");
        let b = parse(
            "[server]\nlisten = \"127.0.0.1:1\"\nworkers = 3\nruntime = \"per-core\"\n[admin]\nlisten = \"127.0.0.1:2\"\n\
             [log]\nlevel = \"debug\"\nformat = \"json\"\nfile = \"g.log\"\nqueue_lines = 9\n[state]\npath = \":memory:\"\n[tls]\nself_signed_if_missing = false\n\
             [tokens]\ngenerate_if_missing = false\nissue_tokens = false\n",
        );
        assert_eq!(
            pending(&a, &b),
            [
                "server.listen",
                "server.workers",
                "server.runtime",
                "tls.self_signed_if_missing",
                "admin.listen",
                "tokens.generate_if_missing",
                "tokens.issue_tokens",
                "state.path",
                "log.format",
                "log.level",
                "log.file",
                "log.queue_lines"
            ]
        );
        // Reverting the edit clears it: the comparison is with what the process started with.
        assert!(pending(&a, &a.clone()).is_empty());
    }
}
