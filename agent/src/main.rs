//! `lockstep-agent`: Lockstep's in-cluster agent, a thin entry point over
//! [`lockstep_agent::runtime`].

use anyhow::Context as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Decrypted values and keys live in this process: no core dump, no ptrace by its user.
    lockstep_formats::secret::protect_process().context("protecting the process' memory")?;
    lockstep_agent::runtime::run(lockstep_agent::runtime::Args::parse()).await?;
    Ok(())
}
