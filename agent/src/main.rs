//! `lockstep-agent`: thin entry point over the `lockstep_agent` library.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lockstep_agent::{admin, controller, leader, sealing, source, unsealer, webhook};
use tokio_util::sync::CancellationToken;

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
    /// A Secret in the agent's namespace whose `github`, `gitlab` and `generic` entries are the
    /// webhook secrets (`/hook/<provider>`); without it webhooks are refused.
    #[arg(long, env = "LOCKSTEP_WEBHOOK_SECRET")]
    webhook_secret: Option<String>,
    /// Elect a leader among replicas on a Lease; only the leader runs the controllers.
    #[arg(long, env = "LOCKSTEP_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// The Lease's name (in the agent's namespace).
    #[arg(long, env = "LOCKSTEP_LEASE_NAME", default_value = "lockstep-agent")]
    lease_name: String,
    /// How long a lease not renewed stays the leader's, as a Go duration (a killed leader is
    /// replaced after this long).
    #[arg(long, env = "LOCKSTEP_LEASE_DURATION", default_value = "15s")]
    lease_duration: String,
    /// Confine every Sync outside the agent's namespace to its own namespace: no cluster-scoped
    /// objects, no objects in other namespaces (what `deploy/` sets, so that a namespace's
    /// admins cannot reach beyond it through a Sync).
    #[arg(long, env = "LOCKSTEP_TENANT_ISOLATION", default_value_t = false, action = clap::ArgAction::Set)]
    tenant_isolation: bool,
    /// This replica's identity in the election (default: the pod's name, else the host's).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
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
    // Decrypted values and keys live in this process: no core dump, no ptrace by its user.
    lockstep_formats::secret::protect_process().context("protecting the process' memory")?;
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

    // SIGTERM (Kubernetes) or SIGINT: stop serving readiness, cut waits short, finish the
    // reconciles in progress, release the lease.
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));

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
    let lease_duration = controller::parse_duration(&args.lease_duration)
        .with_context(|| format!("--lease-duration {:?} is not a Go duration", args.lease_duration))?;
    let (leading_tx, leading) = tokio::sync::watch::channel(!args.leader_election);
    let keys = sealing::maintain(
        sealing::KeyStore::new(client.clone(), &args.namespace),
        policy,
        leading.clone(),
    )
    .await
    .context("loading the sealing keys")?;

    let engine =
        lockstep_agent::external::Engine::new(client.clone(), args.aws_secretsmanager_endpoint.clone());
    let (mut ctx, drifted) = controller::Context::new(
        client.clone(),
        source::GitCache::new(&args.git_cache),
        args.namespace.clone(),
        keys.clone(),
        Some(engine.clone()),
    );
    ctx.tenant_isolation = args.tenant_isolation;
    let metrics = ctx.metrics.clone();
    let mut differ = controller::Differ::new(
        client.clone(),
        source::GitCache::new(&args.git_cache),
        keys.clone(),
    );
    if args.tenant_isolation {
        differ = differ.with_tenant_isolation(&args.namespace);
    }
    let mut admin = admin::Admin::new(keys.clone(), args.rate_limit)
        .with_metrics(metrics.clone())
        .with_differ(differ);
    let readiness = admin.readiness().clone();
    {
        // Unready as soon as shutdown begins, so that Services stop sending traffic here.
        let (readiness, shutdown) = (readiness.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            readiness.stop();
        });
    }
    // /v1/cert.pem has nothing to serve before a sealing key exists (the leader makes the first).
    let key_gate = readiness.gate("a sealing key");
    let mut waiting = keys.clone();
    tokio::spawn(async move {
        if waiting.wait_for(|k| k.newest.is_some()).await.is_ok() {
            key_gate.open();
        }
    });
    if let Some(name) = &args.webhook_secret {
        let gate = readiness.gate("webhook secret");
        let secrets = webhook::watch_secret(client.clone(), &args.namespace, name, move || gate.open());
        admin = admin.with_webhook(webhook::Receiver::new(client.clone(), secrets));
    }
    // Every replica serves the endpoints; only the leader runs the controllers.
    let server = tokio::spawn(admin.serve(args.listen, shutdown.clone().cancelled_owned()));

    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let election = if args.leader_election {
        let e = leader::Election::join(
            client.clone(),
            &args.namespace,
            &args.lease_name,
            &identity,
            lease_duration,
        )
        .await
        .context("joining the leader election")?;
        tokio::select! {
            () = e.acquire() => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        Some(e)
    } else {
        None
    };
    leading_tx.send_replace(true);
    metrics.leader.set(1);

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

    let ctx = Arc::new(ctx);
    let syncing = controller::run_until(
        ctx,
        drifted,
        shutdown.clone().cancelled_owned(),
        Some(readiness.gate("watch Syncs and their objects")),
    );
    let unsealing = async {
        if args.sealed_secrets_controller {
            let gate = readiness.gate("watch SealedSecrets");
            unsealer::run(client.clone(), keys, shutdown.clone(), Some(gate)).await;
        }
    };
    let refreshing = async {
        if args.external_secrets_controller {
            let gate = readiness.gate("watch ExternalSecrets");
            lockstep_agent::external::refresher::run(engine, client.clone(), shutdown.clone(), Some(gate))
                .await;
        }
    };
    let leading_work = async {
        tokio::join!(syncing, unsealing, refreshing);
    };
    let lost = async {
        match &election {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = leading_work => {}
        why = lost => {
            // Never two leaders: stop at once, and let Kubernetes start this replica anew.
            tracing::error!(reason = %why, "leadership lost; exiting");
            std::process::exit(1);
        }
    }
    if let Some(e) = &election {
        e.release().await;
    }
    server.await??;
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("signal received: shutting down");
    shutdown.cancel();
}

/// The host's name and the process id, for an agent run outside a pod.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "lockstep".into());
    format!("{host}-{}", std::process::id())
}
