//! One sync, as data flowing through the steps: source → render → secrets (decrypt, unseal)
//! → plan → apply step by step (ExternalSecrets materialised after the secrets stage) → prune.
//! Nothing is pruned, and no later step is applied, after a failure in an earlier one.
//! [`diff`] runs the same steps up to a dry run, for `lockstep diff`.

pub mod diff;
pub mod externals;

use std::time::Duration;

use crate::apply::{self, Applier};
use crate::plan::{self, Inventory, ObjectId, Stage};
use crate::render::{self, Document, Manifest, Render};
use crate::secrets::{self, DecryptionKeys};
use crate::source::{self, GitCache};

/// What to sync.
#[derive(Clone, Debug)]
pub struct Config {
    /// Repository URL (`file://`, `https://`, `ssh://`).
    pub url: String,
    /// Branch, tag, semver range or commit.
    pub reference: source::Reference,
    /// Directory inside the repository.
    pub path: String,
    /// `namespace.name` of the Sync; the owner label of every object.
    pub owner: String,
    /// Namespace for namespaced objects (overrides theirs).
    pub target_namespace: Option<String>,
    /// Create `target_namespace` when it does not exist.
    pub create_namespace: bool,
    /// Delete objects that left Git.
    pub prune: bool,
    /// Largest share of the inventory one sync may delete (default 0.5).
    pub prune_budget: f64,
    /// Allow a prune beyond the budget.
    pub allow_mass_deletion: bool,
    /// Credentials for the repository.
    pub credentials: source::Credentials,
    /// A private CA for the repository's HTTPS certificate (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// The commit last applied successfully with this same configuration: when the fetch finds
    /// it again, render, decryption and apply are skipped.
    pub skip_if_commit: Option<String>,
    /// The ExternalSecret engine shared by the agent's syncs (`None`: one for this sync).
    pub external: Option<crate::secrets::external::Engine>,
    /// Wait for each wave's objects to be healthy before the next, up to this long a wave.
    pub wait: Option<std::time::Duration>,
    /// Fields not applied.
    pub ignore: Vec<crate::api::IgnoreRule>,
    /// Keys of objects to write even if unchanged (drifted in the cluster); when not empty the
    /// commit is rendered and applied even if it is `skip_if_commit`.
    pub force: std::collections::BTreeSet<String>,
    /// Cuts health waits short ([`apply::Interrupt`]).
    pub interrupt: Option<apply::Interrupt>,
    /// Confine every object to this namespace ([`Applier::tenant`]).
    pub tenant: Option<String>,
    /// The renderer (the kustomize helper, each Sync's last render).
    pub render: Render,
}

impl Config {
    /// An applier for this configuration: its owner, namespaces (target and tenant), ignore
    /// rules, forced objects, health waits and interrupt. Syncs and diffs both build theirs here.
    pub async fn applier(&self, client: kube::Client) -> Result<Applier, apply::Error> {
        let mut applier = Applier::new(client, &self.owner, self.target_namespace.clone()).await?;
        applier.tenant.clone_from(&self.tenant);
        applier.wait = self.wait;
        applier.ignore.clone_from(&self.ignore);
        applier.force.clone_from(&self.force);
        applier.interrupt.clone_from(&self.interrupt);
        Ok(applier)
    }

    /// The defaults of a Sync: branch `main`, the repository root, prune on with a budget of half
    /// the inventory, no target namespace, no credentials.
    pub fn new(url: impl Into<String>, owner: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            reference: source::Reference::Branch("main".into()),
            path: String::new(),
            owner: owner.into(),
            target_namespace: None,
            create_namespace: false,
            prune: true,
            prune_budget: 0.5,
            allow_mass_deletion: false,
            credentials: source::Credentials::default(),
            ca_pem: None,
            skip_if_commit: None,
            external: None,
            wait: None,
            ignore: Vec::new(),
            force: Default::default(),
            interrupt: None,
            tenant: None,
            render: Render::default(),
        }
    }
}

/// Why a sync failed; each variant says which step, and none carries a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fetching the revision failed.
    #[error("source: {0}")]
    Source(#[from] source::Error),
    /// The blocking fetch task failed.
    #[error("source: the fetch task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Rendering failed (nothing was applied or pruned).
    #[error("render: {0}")]
    Render(#[from] render::Error),
    /// Decryption failed (nothing was applied or pruned).
    #[error("decrypt: {0}")]
    Decrypt(#[from] secrets::Error),
    /// The plan refused the revision (nothing was applied or pruned).
    #[error("plan: {0}")]
    Plan(#[from] plan::Error),
    /// Applying failed (later steps were not applied; nothing was pruned).
    #[error("apply: {0}")]
    Apply(#[from] apply::Error),
    /// ExternalSecrets that workloads of this revision mount failed (the workloads were not
    /// applied; nothing was pruned).
    #[error("apply: {0}")]
    External(#[from] externals::Blocked),
    /// The prune budget was exceeded (everything else was applied; nothing was pruned).
    #[error("prune: {0}")]
    Budget(#[from] plan::BudgetExceeded),
}

/// What a sync did.
#[derive(Debug)]
pub struct Outcome {
    /// The commit applied.
    pub commit: String,
    /// The ref it came from (the tag chosen for a semver range).
    pub reference: String,
    /// What apply did.
    pub report: apply::Report,
    /// What was pruned.
    pub pruned: Vec<ObjectId>,
    /// The inventory to store for the next sync.
    pub inventory: Inventory,
    /// How long it took.
    pub duration: Duration,
    /// The commit was the one last applied: nothing was rendered or applied.
    pub skipped: bool,
}

impl Outcome {
    /// `reference@sha1:commit`, as revisions are shown in status.
    pub fn revision(&self) -> String {
        source::revision(&self.reference, &self.commit)
    }
}

/// Runs one sync against the cluster: [`fetch`], then [`sync_revision`].
pub async fn sync_once(
    client: kube::Client,
    cache: &GitCache,
    cfg: &Config,
    keys: &DecryptionKeys,
    last: &Inventory,
) -> Result<Outcome, Error> {
    let started = std::time::Instant::now();
    let rev = fetch(cache, cfg).await?;
    sync_revision(client, cfg, keys, last, rev, started).await
}

/// Fetches the configured reference (on a blocking thread: gix is synchronous).
pub async fn fetch(cache: &GitCache, cfg: &Config) -> Result<source::Revision, Error> {
    let (cache, url, reference, path, creds, ca) = (
        cache.clone(),
        cfg.url.clone(),
        cfg.reference.clone(),
        cfg.path.clone(),
        cfg.credentials.clone(),
        cfg.ca_pem.clone(),
    );
    Ok(
        tokio::task::spawn_blocking(move || cache.fetch_with(&url, &reference, &path, &creds, ca.as_deref()))
            .await??,
    )
}

/// The documents of a fetched revision, in ciphertext: the Sync's last render when it was of
/// the same commit (healing drift starts no kustomize build), else a new one, on a blocking
/// thread (a kustomize build is a process).
pub async fn render(
    cfg: &Config,
    rev: std::sync::Arc<source::Revision>,
) -> Result<std::sync::Arc<Vec<Document>>, Error> {
    let (render, owner) = (cfg.render.clone(), cfg.owner.clone());
    let span = tracing::Span::current();
    Ok(tokio::task::spawn_blocking(move || {
        let _in_reconcile = span.enter();
        render.cached(&owner, &rev.commit, &rev.files, &rev.path)
    })
    .await
    .map_err(|e| render::Error::Task(e.to_string()))??)
}

/// The manifests of a fetched revision: its files rendered ([`render`]), then decrypted, and
/// the target namespace when `createNamespace` asks for it and the revision does not declare
/// it.
pub async fn render_revision(
    cfg: &Config,
    keys: &DecryptionKeys,
    rev: std::sync::Arc<source::Revision>,
) -> Result<Vec<Manifest>, Error> {
    let documents = render(cfg, rev.clone()).await?;
    let mut manifests = secrets::decrypt(&rev.files, documents.iter().cloned().collect(), keys)?;
    if let (true, Some(ns)) = (cfg.create_namespace, &cfg.target_namespace) {
        let declared = manifests
            .iter()
            .any(|m| m.field("/kind") == "Namespace" && m.field("/metadata/name") == ns);
        if !declared {
            manifests.push(Manifest::plain(
                "spec.createNamespace",
                serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
            ));
        }
    }
    Ok(manifests)
}

/// Renders, decrypts, plans, applies and prunes one fetched revision (`started`: when the sync
/// began, for [`Outcome::duration`]).
pub async fn sync_revision(
    client: kube::Client,
    cfg: &Config,
    keys: &DecryptionKeys,
    last: &Inventory,
    rev: source::Revision,
    started: std::time::Instant,
) -> Result<Outcome, Error> {
    if cfg.force.is_empty() && cfg.skip_if_commit.as_deref() == Some(rev.commit.as_str()) {
        return Ok(Outcome {
            commit: rev.commit,
            reference: rev.reference,
            report: apply::Report {
                unchanged: last.entries.len(),
                ..apply::Report::default()
            },
            pruned: Vec::new(),
            inventory: last.clone(),
            duration: started.elapsed(),
            skipped: true,
        });
    }
    let rev = std::sync::Arc::new(rev);
    let manifests = render_revision(cfg, keys, rev.clone()).await?;
    let steps = plan::steps(&manifests)?;
    let mut applier = cfg.applier(client.clone()).await?;
    applier.check_scope(&manifests)?;
    let (inventory, report) = apply_steps(&client, cfg, &mut applier, &manifests, &steps, last).await?;
    let pruned = prune(cfg, &applier, last, &inventory).await?;
    Ok(Outcome {
        commit: rev.commit.clone(),
        reference: rev.reference.clone(),
        report,
        pruned,
        inventory,
        duration: started.elapsed(),
        skipped: false,
    })
}

/// Applies the steps in order; the revision's ExternalSecrets are materialised once they (and
/// their stores) are applied, after the last secrets step and before any workload.
async fn apply_steps(
    client: &kube::Client,
    cfg: &Config,
    applier: &mut Applier,
    manifests: &[Manifest],
    steps: &[plan::Step<'_>],
    last: &Inventory,
) -> Result<(Inventory, apply::Report), Error> {
    let external = externals::Externals::of(
        manifests,
        cfg.target_namespace.as_deref().or(cfg.tenant.as_deref()),
    );
    let engine = match (&cfg.external, external.is_empty()) {
        (_, true) => None,
        (Some(e), false) => Some(e.clone()),
        (None, false) => Some(crate::secrets::external::Engine::new(client.clone(), None)),
    };
    let last_secrets_step = steps.iter().rposition(|s| s.stage == Stage::Secrets);
    let mut inventory = Inventory::default();
    let mut report = apply::Report::default();
    for (i, step) in steps.iter().enumerate() {
        applier
            .apply_step(step, last, &mut inventory, &mut report)
            .await?;
        if let (Some(engine), true) = (&engine, last_secrets_step == Some(i)) {
            external.materialize(client, engine).await?;
        }
    }
    Ok((inventory, report))
}

/// Prunes what left Git, within the budget (when pruning is on); returns what was deleted.
async fn prune(
    cfg: &Config,
    applier: &Applier,
    last: &Inventory,
    inventory: &Inventory,
) -> Result<Vec<ObjectId>, Error> {
    if !cfg.prune {
        return Ok(Vec::new());
    }
    let gone = plan::prune_set(last, inventory);
    plan::check_budget(
        gone.len(),
        last.entries.len(),
        cfg.prune_budget,
        cfg.allow_mass_deletion,
    )?;
    Ok(applier.prune(&gone).await?)
}
