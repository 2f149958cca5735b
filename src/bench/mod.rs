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
//! - [`load`]: the per-connection request loop and the open-loop schedule.
//! - [`report`]: merging the per-connection statistics, the report, the progress line.

pub mod args;
pub mod conn;
pub mod load;
pub mod report;
pub mod tokens;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::HeaderValue;

pub use args::BenchArgs;
use args::{Mode, Plan};
use conn::Connector;
use load::Shared;
use report::Report;

/// Runs the benchmark described by `args` and prints its report.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    if plan.print_tokens {
        return print_tokens(&plan);
    }
    let report = execute(&plan)?;
    if plan.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.requests == 0 {
        anyhow::bail!("no request got an answer");
    }
    Ok(())
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

/// Runs the load of `plan` on its own runtime and returns the merged report.
pub fn execute(plan: &Plan) -> anyhow::Result<Report> {
    runtime(plan.threads)?.block_on(run(plan))
}

async fn run(plan: &Plan) -> anyhow::Result<Report> {
    let connector = Connector::new(plan)?;
    let ep = connector.for_url(plan.url.clone())?;
    let (bearer, issue) = match &plan.mode {
        Mode::Validate(source) => (tokens::bearer_values(&tokens::load(source, &connector).await?)?, None),
        Mode::Issue(spec) => {
            let basic = spec.basic.as_deref().map(HeaderValue::from_str).transpose()?;
            let body = Bytes::from(spec.body.clone());
            (Vec::new(), Some(load::IssueRequest { basic, body, refresh: spec.refresh }))
        }
    };
    let what = match &plan.mode {
        Mode::Issue(spec) if spec.refresh => format!("{} refresh chains", plan.connections),
        Mode::Issue(_) => format!("{} token requests", plan.connections),
        Mode::Validate(_) if bearer.len() > 1 => format!("{} distinct tokens", bearer.len()),
        Mode::Validate(_) if bearer.is_empty() => "no token".into(),
        Mode::Validate(_) => "1 token".into(),
    };
    let label = format!(
        "{} {} ({}, {} connections, {} thread(s), {}, {what})",
        if matches!(plan.mode, Mode::Issue(_)) { "POST" } else { "GET" },
        plan.url,
        if plan.h2 { "h2" } else { "HTTP/1.1" },
        plan.connections,
        plan.threads,
        match plan.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".into(),
        },
    );
    let start = tokio::time::Instant::now();
    let shared = Arc::new(Shared {
        ep,
        bearer,
        issue,
        headers: plan.headers.clone(),
        connections: plan.connections,
        rate: plan.rate,
        start,
        measure_from: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
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
    Ok(Report::merge(stats, window, label))
}

#[cfg(test)]
mod tests;
