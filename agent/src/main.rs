//! `lockstep-agent`: thin entry point over the `lockstep_agent` library.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lockstep_agent::{admin, controller, sealing, source, unsealer};

/// Lockstep's in-cluster GitOps agent.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The agent's namespace (sealing keys live there; the bootstrap Sync too).
    #[arg(long, env = "POD_NAMESPACE", default_value = "lockstep-system")]
    namespace: String,
    /// Where Git caches are kept.
    #[arg(long, env = "LOCKSTEP_GIT_CACHE", default_value = "/tmp/lockstep-git")]
    git_cache: std::path::PathBuf,
    /// Log format.
    #[arg(long, env = "LOCKSTEP_LOG_FORMAT", default_value = "json", value_parser = ["json", "plain"])]
    log_format: String,
    /// Address of /healthz, /readyz and the sealed-secrets-compatible /v1/* endpoints.
    #[arg(long, env = "LOCKSTEP_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Requests per second allowed on /v1/verify and /v1/rotate (burst twice that).
    #[arg(long, env = "LOCKSTEP_RATE_LIMIT", default_value_t = 10)]
    rate_limit: u32,
    /// Sealing-key renewal period, as a Go duration (`0` disables automatic renewal).
    #[arg(long, env = "LOCKSTEP_KEY_RENEW_PERIOD", default_value = "720h")]
    key_renew_period: String,
    /// Renew now if the newest sealing key is older than this RFC 3339 time (after a suspected
    /// compromise).
    #[arg(long, env = "LOCKSTEP_KEY_CUTOFF_TIME")]
    key_cutoff_time: Option<String>,
    /// Unseal SealedSecrets created outside Git (turn off when Bitnami's controller runs too).
    #[arg(long, env = "LOCKSTEP_SEALED_SECRETS_CONTROLLER", default_value_t = true, action = clap::ArgAction::Set)]
    sealed_secrets_controller: bool,
    /// Refresh ExternalSecrets in the cluster on their `refreshInterval` (those in Git are
    /// materialised by their sync either way).
    #[arg(long, env = "LOCKSTEP_EXTERNAL_SECRETS_CONTROLLER", default_value_t = true, action = clap::ArgAction::Set)]
    external_secrets_controller: bool,
    /// Secrets Manager endpoint for every AWS store (VPC endpoints, LocalStack, moto); ESO's
    /// variable.
    #[arg(long, env = "AWS_SECRETSMANAGER_ENDPOINT")]
    aws_secretsmanager_endpoint: Option<String>,
    /// Bootstrap: the repository of a Sync the agent creates (or updates) at start-up.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_URL")]
    bootstrap_url: Option<String>,
    /// Bootstrap: the branch.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_BRANCH", default_value = "main")]
    bootstrap_branch: String,
    /// Bootstrap: the directory in the repository.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_PATH", default_value = "")]
    bootstrap_path: String,
    /// Bootstrap: the Sync's name (in the agent's namespace).
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_NAME", default_value = "lockstep-system")]
    bootstrap_name: String,
    /// Bootstrap: the poll interval.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_INTERVAL", default_value = "1m")]
    bootstrap_interval: String,
    /// Bootstrap: a Secret with `*.agekey` entries for SOPS files.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_SOPS_SECRET")]
    bootstrap_sops_secret: Option<String>,
    /// Bootstrap: a Secret with credentials for the repository.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_SECRET")]
    bootstrap_secret: Option<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Reconcile Sync objects (the default).
    Run,
    /// Print the Sync CRD as YAML (what crds/sync.yaml holds).
    Crdgen {
        /// Print the ExternalSecret, SecretStore and ClusterSecretStore CRDs instead (what
        /// crds/external-secrets.io.yaml holds).
        #[arg(long)]
        external_secrets: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Crdgen { external_secrets }) = args.command {
        if external_secrets {
            print!("{}", lockstep_agent::external::api::crds_yaml()?);
        } else {
            print!("{}", lockstep_agent::api::crd_yaml()?);
        }
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if args.log_format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    // One rustls crypto provider for kube, gix and every other TLS client: aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = kube::Client::try_default().await?;

    let policy = sealing::RenewPolicy {
        period: controller::parse_duration_or_zero(&args.key_renew_period).with_context(|| {
            format!(
                "--key-renew-period {:?} is not a Go duration",
                args.key_renew_period
            )
        })?,
        cutoff: match &args.key_cutoff_time {
            None => None,
            Some(t) => Some(
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .with_context(|| format!("--key-cutoff-time {t:?} is not an RFC 3339 time"))?
                    .unix_timestamp(),
            ),
        },
    };
    let keys = sealing::maintain(sealing::KeyStore::new(client.clone(), &args.namespace), policy)
        .await
        .context("loading the sealing keys")?;

    if let Some(url) = &args.bootstrap_url {
        controller::bootstrap(
            client.clone(),
            &args.namespace,
            &args.bootstrap_name,
            controller::Bootstrap {
                url: url.clone(),
                branch: args.bootstrap_branch.clone(),
                path: args.bootstrap_path.clone(),
                interval: args.bootstrap_interval.clone(),
                sops_secret: args.bootstrap_sops_secret.clone(),
                secret: args.bootstrap_secret.clone(),
            },
        )
        .await
        .context("creating the bootstrap Sync")?;
    }

    let engine =
        lockstep_agent::external::Engine::new(client.clone(), args.aws_secretsmanager_endpoint.clone());
    let (ctx, drifted) = controller::Context::new(
        client.clone(),
        source::GitCache::new(args.git_cache),
        args.namespace,
        keys.clone(),
        Some(engine.clone()),
    );
    let admin = admin::Admin::new(keys.clone(), args.rate_limit).with_metrics(ctx.metrics.clone());
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let server = tokio::spawn(admin.clone().serve(args.listen, shutdown));
    let ctx = Arc::new(ctx);
    let refreshing = lockstep_agent::external::refresher::run(engine, client.clone());
    let unsealing = async {
        if args.sealed_secrets_controller {
            unsealer::run(client, keys).await;
        }
    };
    admin.set_ready();
    tokio::select! {
        () = controller::run(ctx, drifted) => {}
        () = unsealing, if args.sealed_secrets_controller => {}
        () = refreshing, if args.external_secrets_controller => {}
        r = server => r??,
    }
    Ok(())
}
