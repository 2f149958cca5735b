//! `tokengate bench`: a load generator for token-validating gateways (ours or anyone's).
//!
//! Every request carries `Authorization: Bearer <token>` from a token file, from tokens minted
//! here with a private key, or from one client-credentials request to a token endpoint; or, with
//! `--issue`, every request *is* a token request. `-c` connections each keep one request in
//! flight over a reused HTTP/1.1 or h2 connection; with `--rate` the load is open-loop (see
//! [`args::Plan::rate`] for why that matters). The report has requests/s, HDR-histogram latency
//! percentiles, responses by status and errors by kind, as text or as one JSON object (`--json`).
//!
//! - [`args`]: the command line and its validation into a [`args::Plan`].
//! - [`tokens`]: token file parsing, minting, the token-endpoint fetch.
//! - [`conn`]: connections (TCP_NODELAY, TLS, HTTP/1.1 or h2).
//! - [`h1`]: the HTTP/1.1 exchange: requests encoded once, answers parsed with `httparse`.
//! - [`load`]: the per-connection request loop and the open-loop schedule.
//! - [`report`]: merging the per-connection statistics, the report, the progress line.
//! - [`compare`]: `--compare A B`, interleaved rounds and the B/A ratio.
//! - [`plot`]: `--plot`, the SVG chart of the latency distributions.

pub mod args;
pub mod compare;
pub mod conn;
pub mod h1;
pub mod load;
pub mod plot;
pub mod report;
pub mod tokens;

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::HeaderValue;

pub use args::BenchArgs;
use args::{Mode, Plan};
use compare::Comparison;
use conn::Connector;
use load::{Payload, Shared};
use report::Report;

/// Runs the benchmark described by `args` and prints its report.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    if plan.print_tokens {
        return print_tokens(&plan);
    }
    // Fail before a long run rather than after it.
    let plot_file = match &plan.plot {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("--plot: cannot write {}", p.display()))?),
        None => None,
    };
    let outcome = execute(&plan)?;
    let reports: Vec<&Report> = match &outcome {
        Outcome::Runs(r) => {
            if plan.json {
                match r.as_slice() {
                    [one] => println!("{}", one.to_json()),
                    many => println!(
                        "{}",
                        serde_json::json!({ "runs": many.iter().map(Report::to_json).collect::<Vec<_>>() })
                    ),
                }
            } else {
                let texts: Vec<String> = r.iter().map(Report::to_text).collect();
                print!("{}", texts.join("\n"));
            }
            r.iter().collect()
        }
        Outcome::Compare(c) => {
            if plan.json {
                println!("{}", c.to_json());
            } else {
                print!("{}", c.to_text());
            }
            c.a.iter().chain(&c.b).collect()
        }
    };
    if let (Some(path), Some(file)) = (&plan.plot, plot_file) {
        let svg = outcome.plot(&plan);
        std::io::Write::write_all(&mut std::io::BufWriter::new(file), svg.as_bytes())
            .with_context(|| format!("--plot: writing {}", path.display()))?;
        eprintln!("latency chart written to {}", path.display());
    }
    if let Some(r) = reports.iter().find(|r| r.requests == 0) {
        anyhow::bail!("no request to {} got an answer", r.url);
    }
    Ok(())
}

/// What a run measured.
pub enum Outcome {
    /// One report per `--url`, in order.
    Runs(Vec<Report>),
    /// `--compare`: the rounds of both targets.
    Compare(Comparison),
}

impl Outcome {
    /// The SVG chart of the latency distributions, one curve per target.
    pub fn plot(&self, plan: &Plan) -> String {
        let curves: Vec<plot::Curve> = match self {
            Outcome::Runs(r) => r.iter().map(|r| plot::Curve::of(&r.url, &r.hist, r.rps())).collect(),
            Outcome::Compare(c) => c.curves(),
        };
        plot::svg(&shape(plan), &curves, plan.plot_scale)
    }
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().build().context("starting the runtime")
}

fn print_tokens(plan: &Plan) -> anyhow::Result<()> {
    let Mode::Validate(source) = &plan.mode else { anyhow::bail!("--print-tokens needs a token source, not --issue") };
    let connector = Connector::new(plan)?;
    let tokens = runtime(1)?.block_on(tokens::load(source, &connector))?;
    let mut out = String::with_capacity(tokens.iter().map(|t| t.len() + 1).sum());
    for t in tokens {
        out.push_str(&t);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

/// Runs the load of `plan` on its own runtime: every target in turn, or the rounds of a comparison.
pub fn execute(plan: &Plan) -> anyhow::Result<Outcome> {
    runtime(plan.threads)?.block_on(run_all(plan))
}

async fn run_all(plan: &Plan) -> anyhow::Result<Outcome> {
    let connector = Connector::new(plan)?;
    let payload = payload(plan, &connector).await?;
    let mut runs = Vec::new();
    if let Some(rounds) = plan.compare_rounds {
        for _ in 0..rounds {
            for url in &plan.targets {
                runs.push(run(plan, &connector, &payload, url).await?);
            }
        }
        return Ok(Outcome::Compare(Comparison::new(runs)));
    }
    for url in &plan.targets {
        runs.push(run(plan, &connector, &payload, url).await?);
    }
    Ok(Outcome::Runs(runs))
}

/// Tokens (minted or fetched once for every target) and what each request sends.
async fn payload(plan: &Plan, connector: &Connector) -> anyhow::Result<Payload> {
    let (bearer, issue) = match &plan.mode {
        Mode::Validate(source) => (tokens::bearer_values(&tokens::load(source, connector).await?)?, None),
        Mode::Issue(spec) => {
            let basic = spec.basic.as_deref().map(HeaderValue::from_str).transpose()?;
            let body = Bytes::from(spec.body.clone());
            (Vec::new(), Some(load::IssueRequest { basic, body, refresh: spec.refresh }))
        }
    };
    Ok(Payload { bearer, issue, headers: plan.headers.clone() })
}

/// The load's shape, for report labels and the chart's title: protocol, connections, threads, loop.
pub fn shape(plan: &Plan) -> String {
    let mut s = format!(
        "{}, {} connections, {} thread(s), {}, {} s after {} s warm-up",
        if plan.h2 { "h2" } else { "HTTP/1.1" },
        plan.connections,
        plan.threads,
        match plan.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".into(),
        },
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
    );
    if let Some(n) = plan.compare_rounds {
        s.push_str(&format!(", {n} rounds A B"));
    }
    s
}

/// One measured run against `url`.
async fn run(plan: &Plan, connector: &Connector, payload: &Payload, url: &http::Uri) -> anyhow::Result<Report> {
    let ep = connector.for_url(url.clone())?;
    let what = match &plan.mode {
        Mode::Issue(spec) if spec.refresh => format!("{} refresh chains", plan.connections),
        Mode::Issue(_) => format!("{} token requests", plan.connections),
        Mode::Validate(_) if payload.bearer.len() > 1 => format!("{} distinct tokens", payload.bearer.len()),
        Mode::Validate(_) if payload.bearer.is_empty() => "no token".into(),
        Mode::Validate(_) => "1 token".into(),
    };
    let label = format!(
        "{} {url} ({}, {what})",
        if matches!(plan.mode, Mode::Issue(_)) { "POST" } else { "GET" },
        shape(plan),
    );
    let shared = Arc::new(Shared::new(ep, payload.clone(), plan));
    let progress = tokio::spawn(report::progress(shared.clone()));
    let tasks: Vec<_> = (0..plan.connections).map(|k| tokio::spawn(load::run_connection(shared.clone(), k))).collect();
    let mut stats = Vec::with_capacity(tasks.len());
    for t in tasks {
        stats.push(t.await.context("a connection task panicked")?);
    }
    let window = shared.measure_from.elapsed();
    progress.abort();
    let _ = progress.await;
    report::clear_progress();
    Ok(Report::merge(stats, window, url.to_string(), label))
}

#[cfg(test)]
mod tests;
