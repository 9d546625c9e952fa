//! The agent's flags, each with an environment variable (what the Deployment sets).

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

/// Lockstep's in-cluster GitOps agent.
#[derive(Parser, Debug)]
#[command(name = "lockstep-agent", version, about)]
pub struct Args {
    /// The agent's namespace (sealing keys live there; the bootstrap Sync too).
    #[arg(long, env = "POD_NAMESPACE", default_value = "lockstep-system")]
    pub namespace: String,
    /// Where Git caches are kept.
    #[arg(long, env = "LOCKSTEP_GIT_CACHE", default_value = "/tmp/lockstep-git")]
    pub git_cache: std::path::PathBuf,
    /// Log format.
    #[arg(long, env = "LOCKSTEP_LOG_FORMAT", default_value = "json", value_parser = ["json", "plain"])]
    pub log_format: String,
    /// Address of /healthz, /readyz and the sealed-secrets-compatible /v1/* endpoints.
    #[arg(long, env = "LOCKSTEP_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Requests per second allowed on /v1/verify and /v1/rotate (burst twice that).
    #[arg(long, env = "LOCKSTEP_RATE_LIMIT", default_value_t = 10)]
    pub rate_limit: u32,
    /// Sealing-key renewal period, as a Go duration (`0` disables automatic renewal).
    #[arg(long, env = "LOCKSTEP_KEY_RENEW_PERIOD", default_value = "720h")]
    pub key_renew_period: String,
    /// Renew now if the newest sealing key is older than this RFC 3339 time (after a suspected
    /// compromise).
    #[arg(long, env = "LOCKSTEP_KEY_CUTOFF_TIME")]
    pub key_cutoff_time: Option<String>,
    /// Unseal SealedSecrets created outside Git (turn off when Bitnami's controller runs too).
    #[arg(long, env = "LOCKSTEP_SEALED_SECRETS_CONTROLLER", default_value_t = true, action = clap::ArgAction::Set)]
    pub sealed_secrets_controller: bool,
    /// Refresh ExternalSecrets in the cluster on their `refreshInterval` (those in Git are
    /// materialised by their sync either way).
    #[arg(long, env = "LOCKSTEP_EXTERNAL_SECRETS_CONTROLLER", default_value_t = true, action = clap::ArgAction::Set)]
    pub external_secrets_controller: bool,
    /// Secrets Manager endpoint for every AWS store (VPC endpoints, LocalStack, moto); ESO's
    /// variable.
    #[arg(long, env = "AWS_SECRETSMANAGER_ENDPOINT")]
    pub aws_secretsmanager_endpoint: Option<String>,
    /// Other tools' objects to reconcile as they are, through Syncs the agent writes from them:
    /// `flux` (GitRepository and Kustomization), `argocd` (Application). Off by default.
    #[arg(long, env = "LOCKSTEP_ACCEPT", value_delimiter = ',', value_parser = ["flux", "argocd"])]
    pub accept: Vec<String>,
    /// Bootstrap: the repository of a Sync the agent creates (or updates) at start-up.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_URL")]
    pub bootstrap_url: Option<String>,
    /// Bootstrap: the branch.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_BRANCH", default_value = "main")]
    pub bootstrap_branch: String,
    /// Bootstrap: the directory in the repository.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_PATH", default_value = "")]
    pub bootstrap_path: String,
    /// Bootstrap: the Sync's name (in the agent's namespace).
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_NAME", default_value = "lockstep-system")]
    pub bootstrap_name: String,
    /// Bootstrap: the poll interval.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_INTERVAL", default_value = "1m")]
    pub bootstrap_interval: String,
    /// Bootstrap: a Secret with `*.agekey` entries for SOPS files.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_SOPS_SECRET")]
    pub bootstrap_sops_secret: Option<String>,
    /// Bootstrap: a Secret with credentials for the repository.
    #[arg(long, env = "LOCKSTEP_BOOTSTRAP_SECRET")]
    pub bootstrap_secret: Option<String>,
    /// A Secret in the agent's namespace whose `github`, `gitlab` and `generic` entries are the
    /// webhook secrets (`/hook/<provider>`); without it webhooks are refused.
    #[arg(long, env = "LOCKSTEP_WEBHOOK_SECRET")]
    pub webhook_secret: Option<String>,
    /// Elect a leader among replicas on a Lease; only the leader runs the controllers.
    #[arg(long, env = "LOCKSTEP_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// The Lease's name (in the agent's namespace).
    #[arg(long, env = "LOCKSTEP_LEASE_NAME", default_value = "lockstep-agent")]
    pub lease_name: String,
    /// How long a lease not renewed stays the leader's, as a Go duration (a killed leader is
    /// replaced after this long).
    #[arg(long, env = "LOCKSTEP_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: String,
    /// The kustomize helper (`lockstep-kustomize`); by default beside this binary, else on
    /// `PATH`.
    #[arg(long, env = "LOCKSTEP_KUSTOMIZE_HELPER")]
    pub kustomize_helper: Option<std::path::PathBuf>,
    /// The Helm helper (`lockstep-helm`); by default beside this binary, else on `PATH`.
    #[arg(long, env = "LOCKSTEP_HELM_HELPER")]
    pub helm_helper: Option<std::path::PathBuf>,
    /// The longest a kustomize build or a chart render may take, as a Go duration.
    #[arg(long, env = "LOCKSTEP_RENDER_TIMEOUT", default_value = "60s")]
    pub render_timeout: String,
    /// The most a kustomize build or a chart render may print, in bytes.
    #[arg(long, env = "LOCKSTEP_RENDER_MAX_OUTPUT", default_value_t = lockstep_kustomize::Helper::DEFAULT_MAX_OUTPUT)]
    pub render_max_output: usize,
    /// Confine every Sync outside the agent's namespace to its own namespace: no cluster-scoped
    /// objects, no objects in other namespaces (what `deploy/` sets, so that a namespace's
    /// admins cannot reach beyond it through a Sync).
    #[arg(long, env = "LOCKSTEP_TENANT_ISOLATION", default_value_t = false, action = clap::ArgAction::Set)]
    pub tenant_isolation: bool,
    /// Watch Syncs, SealedSecrets and ExternalSecrets in every namespace (Flux's flag); `false`:
    /// only in the agent's own namespace.
    #[arg(long, env = "LOCKSTEP_WATCH_ALL_NAMESPACES", default_value_t = true, action = clap::ArgAction::Set)]
    pub watch_all_namespaces: bool,
    /// This replica's identity in the election (default: the pod's name, else the host's).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

/// The agent's commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Reconcile Sync objects (the default).
    Run,
    /// Print the Sync CRD as YAML (what crds/sync.yaml holds).
    Crdgen {
        /// Print the ExternalSecret, SecretStore and ClusterSecretStore CRDs instead (what
        /// crds/external-secrets.io.yaml holds).
        #[arg(long)]
        external_secrets: bool,
        /// Print Flux's GitRepository and Kustomization CRDs instead (what crds/fluxcd.io.yaml
        /// holds).
        #[arg(long, conflicts_with = "external_secrets")]
        flux: bool,
        /// Print Argo CD's Application CRD instead (what crds/argoproj.io.yaml holds).
        #[arg(long, conflicts_with_all = ["external_secrets", "flux"])]
        argocd: bool,
    },
}
