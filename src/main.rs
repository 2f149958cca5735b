//! The `tokengate` binary: CLI parsing and the runtime; everything else lives in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use tokengate::commands;
use tokengate::config::Config;

#[derive(Parser)]
#[command(name = "tokengate", version, about = "TLS-terminating gateway that checks a JWT on every request")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Run the gateway (the default when no command is given).
    Serve {
        /// Config file.
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Load everything a start would; exit 0, or print what is wrong and exit 1.
    Check {
        /// Config file.
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Write a new private signing key (PEM, mode 0600).
    Keygen {
        /// ES256, ES384, RS256, PS256 or EdDSA.
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// Output file; its stem becomes the kid when placed in tokens.keys_dir.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print an access token signed with the active key (for tests, demos, benchmarks).
    Mint {
        /// Config file.
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// `sub` claim.
        #[arg(long)]
        sub: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "")]
        scope: String,
        /// Lifetime in seconds (default tokens.access_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
        /// Audience (default tokens.audience).
        #[arg(long)]
        aud: Option<String>,
        /// `client_id` claim.
        #[arg(long)]
        client_id: Option<String>,
    },
    /// Print DPoP proofs (RFC 9449) for one request, one per line, signed with a key from
    /// `tokengate keygen`; the key's thumbprint (the cnf.jkt of tokens bound to it) on stderr.
    DpopProof {
        /// Private key file (PEM).
        #[arg(long)]
        key: PathBuf,
        /// HTTP method of the request.
        #[arg(long, default_value = "GET")]
        method: String,
        /// URL of the request, as the client addresses it.
        #[arg(long)]
        url: String,
        /// The access token the request carries (adds `ath`).
        #[arg(long)]
        token: Option<String>,
        /// The server's DPoP-Nonce, when it asked for one.
        #[arg(long)]
        nonce: Option<String>,
        /// How many proofs (each with its own jti; every proof is good for one request).
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Read a secret or password from stdin and print its argon2id PHC string.
    HashSecret,
    /// Create a client: prints a fresh secret (once) and the [[clients]] entry to paste.
    AddClient {
        /// client_id.
        #[arg(long)]
        id: String,
        /// Grants, comma-separated: client_credentials, password, refresh_token.
        #[arg(long, value_delimiter = ',', default_value = "client_credentials")]
        grants: Vec<String>,
        /// Scopes, comma-separated.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// Load-test a gateway: requests/s and latency percentiles with bearer tokens.
    Bench(tokengate::bench::BenchArgs),
}

fn main() {
    if let Err(e) = run() {
        // One line, however the error was built: no debug text, no backtrace (even with
        // RUST_BACKTRACE=1), and no cause repeated when an outer message already quotes it.
        let mut line = String::new();
        for cause in e.chain().map(|c| c.to_string()) {
            if !line.contains(&cause) {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(&cause);
            }
        }
        eprintln!("tokengate: {line}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: "gateway.toml".into() }) {
        Command::Serve { config } => serve(config),
        Command::Check { config } => match commands::check(&config) {
            Ok(summary) => {
                println!("{summary}");
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
        Command::Keygen { alg, out } => commands::keygen(&alg, &out).map_err(anyhow::Error::msg),
        Command::HashSecret => {
            println!("{}", commands::hash_secret(&mut std::io::stdin().lock()).map_err(anyhow::Error::msg)?);
            Ok(())
        }
        Command::AddClient { id, grants, scopes } => {
            let (secret, entry) = commands::add_client(&id, &grants, &scopes).map_err(anyhow::Error::msg)?;
            eprintln!("client secret (shown once, store it now): {secret}");
            println!("{entry}");
            Ok(())
        }
        Command::Bench(args) => tokengate::bench::main(args),
        Command::DpopProof { key, method, url, token, nonce, count } => {
            let req = commands::ProofRequest {
                key: &key,
                method: &method,
                url: &url,
                token: token.as_deref(),
                nonce: nonce.as_deref(),
            };
            let (proofs, jkt) = commands::dpop_proofs(&req, count).map_err(anyhow::Error::msg)?;
            eprintln!("jkt: {jkt}");
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for p in proofs {
                std::io::Write::write_all(&mut out, format!("{p}\n").as_bytes())?;
            }
            std::io::Write::flush(&mut out)?;
            Ok(())
        }
        Command::Mint { config, sub, scope, ttl, aud, client_id } => {
            let req = commands::MintRequest {
                sub: &sub,
                scope: &scope,
                ttl,
                aud: aud.as_deref(),
                client_id: client_id.as_deref(),
            };
            println!("{}", commands::mint(&config, &req)?);
            Ok(())
        }
    }
}

fn serve(config: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config)?;
    // Dropped last, after the shutdown: every queued line is written out.
    let _log = tokengate::logging::init(&cfg.log, &cfg.base_dir)?;
    // One worker, or one runtime per worker: a current-thread runtime here (the server starts
    // the other per-core ones), skipping the work-stealing machinery (measured faster); blocking
    // work (argon2, the state store) still goes to tokio's blocking pool.
    let workers = cfg.server.worker_count();
    let mut rt = if workers == 1 || cfg.server.runtime == tokengate::config::RuntimeKind::PerCore {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let rt = rt.enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let running = tokengate::server::start(config).await?;
        tokengate::signals::terminated().await;
        tracing::info!("shutting down: draining connections");
        running.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}
