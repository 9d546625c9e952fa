//! `lockstep-agent`: thin entry point over the `lockstep_agent` library.

use clap::Parser;

/// Lockstep's in-cluster GitOps agent.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let Args {} = Args::parse();
    anyhow::bail!("the reconcile loop is not implemented yet; see the project's open issues")
}
