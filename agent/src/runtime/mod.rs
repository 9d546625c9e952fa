//! The runtime: the agent's flags ([`Args`]) wired into the running parts. Every replica
//! serves the HTTP endpoints and keeps the sealing keys loaded; the one that wins the election
//! ([`leader`]) creates the bootstrap Sync and runs the controllers. SIGTERM stops readiness,
//! cuts waits short, lets the reconciles in progress finish, and releases the lease.

mod args;
pub mod leader;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use args::{Args, Cmd};

use crate::http::{self, Admin, webhook};
use crate::reconciler::{self, Bootstrap, Context, Differ, Readiness, Scope};
use crate::secrets::external::Engine;
use crate::secrets::sealing::{self, LiveKeys, RenewPolicy};
use crate::source::GitCache;

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag's value is invalid.
    #[error("--{flag} {value:?}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        reason: &'static str,
    },
    /// No Kubernetes client could be configured (in-cluster or kubeconfig).
    #[error("connecting to the API server: {0}")]
    Client(#[source] Box<kube::Error>),
    /// The sealing keys could not be loaded or made.
    #[error("loading the sealing keys: {0}")]
    SealingKeys(#[from] sealing::Error),
    /// Joining the leader election failed.
    #[error("joining the leader election: {0}")]
    Election(#[from] leader::Error),
    /// The bootstrap Sync could not be applied.
    #[error("creating the bootstrap Sync: {0}")]
    Bootstrap(#[source] Box<reconciler::Error>),
    /// The HTTP server failed.
    #[error(transparent)]
    Http(#[from] http::Error),
    /// The HTTP server's task failed.
    #[error("the HTTP server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// `--accept` names a kind whose CRD the cluster does not serve.
    #[error("--accept={what}: the {crd} CRD is not served ({hint}): {}", crate::errors::kube_message(.source))]
    Accept {
        /// The value.
        what: &'static str,
        /// The CRD.
        crd: &'static str,
        /// Where it comes from.
        hint: &'static str,
        /// The API's answer.
        #[source]
        source: Box<kube::Error>,
    },
    /// Printing a CRD failed.
    #[error("generating the CRDs: {0}")]
    Crd(#[from] lockstep_formats::Error),
}

/// Runs the agent as `args` say (or prints the CRDs for `crdgen`).
pub async fn run(args: Args) -> Result<(), Error> {
    if let Some(Cmd::Crdgen {
        external_secrets,
        flux,
        argocd,
    }) = args.command
    {
        if argocd {
            print!("{}", crate::api::crd::argocd_crds_yaml()?);
        } else if flux {
            print!("{}", crate::api::crd::flux_crds_yaml()?);
        } else if external_secrets {
            print!("{}", crate::secrets::external::api::crds_yaml()?);
        } else {
            print!("{}", crate::api::crd::crd_yaml()?);
        }
        return Ok(());
    }
    init_logging(&args.log_format);
    // One rustls crypto provider for kube, gix and every other TLS client: aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| Error::Client(Box::new(e)))?;

    // SIGTERM (Kubernetes) or SIGINT: stop serving readiness, cut waits short, finish the
    // reconciles in progress, release the lease.
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));

    let lease_duration = duration(&args.lease_duration, "lease-duration")?;
    let (leading_tx, leading) = tokio::sync::watch::channel(!args.leader_election);
    let keys = sealing::maintain(
        sealing::KeyStore::new(client.clone(), &args.namespace),
        renew_policy(&args)?,
        leading,
    )
    .await?;
    let engine = Engine::new(client.clone(), args.aws_secretsmanager_endpoint.clone());
    let (mut ctx, drifted) = Context::new(
        client.clone(),
        GitCache::new(&args.git_cache),
        args.namespace.clone(),
        keys.clone(),
        Some(engine.clone()),
    );
    ctx.tenant_isolation = args.tenant_isolation;
    ctx.scope = scope(&args);
    ctx.render.kustomize = kustomize_helper(&args)?;
    ctx.render.helm = helm_helper(&args)?;
    let metrics = ctx.metrics.clone();
    let (admin, readiness) = endpoints(&args, &client, &keys, metrics.clone(), &shutdown, &ctx.render);
    // Every replica serves the endpoints; only the leader runs the controllers.
    let server = tokio::spawn(admin.serve(args.listen, shutdown.clone().cancelled_owned()));

    let election = if args.leader_election {
        let identity = args.identity.clone().unwrap_or_else(default_identity);
        let e = leader::Election::join(
            client.clone(),
            &args.namespace,
            &args.lease_name,
            &identity,
            lease_duration,
        )
        .await?;
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
    if let Some(b) = bootstrap_of(&args) {
        reconciler::bootstrap(client.clone(), &args.namespace, &args.bootstrap_name, &b)
            .await
            .map_err(|e| Error::Bootstrap(Box::new(e)))?;
    }

    if args.accept.iter().any(|a| a == "flux") {
        // Flux's CRDs (Flux's own, or crds/fluxcd.io.yaml) must be there.
        let probe: kube::Api<crate::api::flux::Kustomization> = ctx.scope.api(&client);
        probe
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .map_err(|source| Error::Accept {
                what: "flux",
                crd: "kustomizations.kustomize.toolkit.fluxcd.io",
                hint: "install Flux's CRDs, or crds/fluxcd.io.yaml where Flux is absent",
                source: Box::new(source),
            })?;
    }
    if args.accept.iter().any(|a| a == "argocd") {
        let probe: kube::Api<crate::api::argocd::Application> = ctx.scope.api(&client);
        probe
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .map_err(|source| Error::Accept {
                what: "argocd",
                crd: "applications.argoproj.io",
                hint: "install Argo CD's CRDs, or crds/argoproj.io.yaml where Argo CD is absent",
                source: Box::new(source),
            })?;
    }
    let controllers = run_controllers(&args, Arc::new(ctx), drifted, engine, &readiness, &shutdown);
    let lost = async {
        match &election {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = controllers => {}
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

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

/// What the controllers watch: every namespace, or the agent's own (`--watch-all-namespaces`).
fn scope(args: &Args) -> Scope {
    if args.watch_all_namespaces {
        Scope::All
    } else {
        Scope::Namespace(args.namespace.clone())
    }
}

/// A Go duration flag.
fn duration(value: &str, flag: &'static str) -> Result<Duration, Error> {
    lockstep_formats::duration::parse(value).ok_or_else(|| Error::Flag {
        flag,
        value: value.to_owned(),
        reason: "not a Go duration",
    })
}

/// `--key-renew-period` (`0`: never) and `--key-cutoff-time`.
fn renew_policy(args: &Args) -> Result<RenewPolicy, Error> {
    let period =
        lockstep_formats::duration::parse_or_zero(&args.key_renew_period).ok_or_else(|| Error::Flag {
            flag: "key-renew-period",
            value: args.key_renew_period.clone(),
            reason: "not a Go duration",
        })?;
    let cutoff = match &args.key_cutoff_time {
        None => None,
        Some(t) => Some(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| Error::Flag {
                    flag: "key-cutoff-time",
                    value: t.clone(),
                    reason: "not an RFC 3339 time",
                })?
                .unix_timestamp(),
        ),
    };
    Ok(RenewPolicy { period, cutoff })
}

/// The bootstrap Sync the flags ask for, if any.
fn bootstrap_of(args: &Args) -> Option<Bootstrap> {
    args.bootstrap_url.as_ref().map(|url| Bootstrap {
        url: url.clone(),
        branch: args.bootstrap_branch.clone(),
        path: args.bootstrap_path.clone(),
        interval: args.bootstrap_interval.clone(),
        sops_secret: args.bootstrap_sops_secret.clone(),
        secret: args.bootstrap_secret.clone(),
    })
}

/// The kustomize helper the flags describe: where `--kustomize-helper` says or where it is
/// installed, with their limits.
fn kustomize_helper(args: &Args) -> Result<Option<lockstep_kustomize::Helper>, Error> {
    let timeout = duration(&args.render_timeout, "render-timeout")?;
    Ok(
        lockstep_kustomize::Helper::locate(args.kustomize_helper.as_deref()).map(|program| {
            lockstep_kustomize::Helper {
                program,
                timeout,
                max_output: args.render_max_output,
                origins: false,
            }
        }),
    )
}

/// The Helm helper the flags describe, with the same limits.
fn helm_helper(args: &Args) -> Result<Option<lockstep_helm::Helper>, Error> {
    let timeout = duration(&args.render_timeout, "render-timeout")?;
    Ok(
        lockstep_helm::Helper::locate(args.helm_helper.as_deref()).map(|program| lockstep_helm::Helper {
            program,
            timeout,
            max_output: args.render_max_output,
        }),
    )
}

/// The HTTP endpoints and the readiness they report: unready as soon as shutdown begins, and
/// until a sealing key exists (the leader makes the first) and the webhook Secret is listed.
fn endpoints(
    args: &Args,
    client: &kube::Client,
    keys: &LiveKeys,
    metrics: reconciler::metrics::Metrics,
    shutdown: &CancellationToken,
    render: &crate::render::Render,
) -> (Admin, Readiness) {
    let mut differ = Differ::new(client.clone(), GitCache::new(&args.git_cache), keys.clone());
    differ.render = render.clone();
    if args.tenant_isolation {
        differ = differ.with_tenant_isolation(&args.namespace);
    }
    let mut admin = Admin::new(keys.clone(), args.rate_limit)
        .with_metrics(metrics)
        .with_differ(differ);
    let readiness = admin.readiness().clone();
    {
        let (readiness, shutdown) = (readiness.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            readiness.stop();
        });
    }
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
        let receiver = webhook::Receiver::new(client.clone(), secrets).with_scope(scope(args));
        admin = admin.with_webhook(receiver);
    }
    (admin, readiness)
}

/// The leader's controllers, until shutdown: Syncs, and as the flags say, SealedSecrets made
/// outside Git and ExternalSecrets' refreshes.
async fn run_controllers(
    args: &Args,
    ctx: Arc<Context>,
    drifted: impl futures::Stream<Item = kube::runtime::reflector::ObjectRef<crate::api::Sync>> + Send + 'static,
    engine: Engine,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) {
    let (client, keys, scope) = (ctx.client.clone(), ctx.keys.clone(), ctx.scope.clone());
    let syncing = reconciler::run_until(
        ctx,
        drifted,
        shutdown.clone().cancelled_owned(),
        Some(readiness.gate("watch Syncs and their objects")),
    );
    let unsealing = async {
        if args.sealed_secrets_controller {
            let gate = readiness.gate("watch SealedSecrets");
            reconciler::sealed_secrets::run(client.clone(), keys, shutdown.clone(), &scope, Some(gate)).await;
        }
    };
    let refreshing = async {
        if args.external_secrets_controller {
            let gate = readiness.gate("watch ExternalSecrets");
            reconciler::external_secrets::run(engine, client.clone(), shutdown.clone(), &scope, Some(gate))
                .await;
        }
    };
    let accepting = async {
        if args.accept.iter().any(|a| a == "flux") {
            let gate = readiness.gate("watch Flux Kustomizations");
            reconciler::flux::run(client.clone(), scope.clone(), shutdown.clone(), Some(gate)).await;
        }
    };
    let accepting_argocd = async {
        if args.accept.iter().any(|a| a == "argocd") {
            let gate = readiness.gate("watch Argo CD Applications");
            reconciler::argocd::run(client.clone(), scope.clone(), shutdown.clone(), Some(gate)).await;
        }
    };
    tokio::join!(syncing, unsealing, refreshing, accepting, accepting_argocd);
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
