//! `tokengate bench`: load generator for token-validating gateways (being written).

/// Command-line arguments of `tokengate bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Target URL.
    #[arg(long)]
    pub url: String,
}

/// Runs the benchmark described by `args`.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench is not implemented yet (target {})", args.url)
}
