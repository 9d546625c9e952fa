//! `lockstep-agent`: thin entry point over the `lockstep_agent` library.

use std::sync::Arc;

use clap::{Parser, Subcommand};

/// Lockstep's in-cluster GitOps agent.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The agent's namespace (sealing keys live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "lockstep-system")]
    namespace: String,
    /// Where Git caches are kept.
    #[arg(long, env = "LOCKSTEP_GIT_CACHE", default_value = "/tmp/lockstep-git")]
    git_cache: std::path::PathBuf,
    /// Log format.
    #[arg(long, env = "LOCKSTEP_LOG_FORMAT", default_value = "json", value_parser = ["json", "plain"])]
    log_format: String,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Reconcile Sync objects (the default).
    Run,
    /// Print the Sync CRD as YAML (what crds/sync.yaml holds).
    Crdgen,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        namespace,
        git_cache,
        log_format,
        command,
    } = Args::parse();
    if matches!(command, Some(Cmd::Crdgen)) {
        print!("{}", lockstep_agent::api::crd_yaml()?);
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if log_format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    // One rustls crypto provider for kube, gix and every other TLS client: aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = kube::Client::try_default().await?;
    let ctx = Arc::new(lockstep_agent::controller::Context {
        client,
        cache: lockstep_agent::source::GitCache::new(git_cache),
        namespace,
    });
    lockstep_agent::controller::run(ctx).await;
    Ok(())
}
