//! One sync, as data flowing through the steps: source → render → secrets (decrypt, unseal)
//! → plan → apply step by step (ExternalSecrets materialised after the secrets stage) → prune.
//! Nothing is pruned, and no later step is applied, after a failure in an earlier one.
//! [`diff`] runs the same steps up to a dry run, for `lockstep diff`.

pub mod diff;
pub mod externals;
pub mod helm;
pub mod postbuild;

use std::time::Duration;

use crate::apply::{self, Applier};
use crate::plan::hooks::Phase;
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
    /// The renderer (the kustomize and Helm helpers, each Sync's last render).
    pub render: Render,
    /// Render a Helm chart instead of the path's files.
    pub helm: Option<std::sync::Arc<helm::HelmSync>>,
    /// Charts fetched and indexes read, shared by the agent's Syncs.
    pub charts: std::sync::Arc<source::charts::ChartCache>,
    /// How long an index read stays good (the Sync's interval).
    pub chart_interval: Duration,
    /// The longest a hook, or the health wait before the PostSync hooks, may take.
    pub timeout: Duration,
    /// A Helm Sync: the inputs digest last applied with `skip_if_commit`; the commit is skipped
    /// only when the chart and `valuesFrom` resolve to it again.
    pub skip_if_inputs: Option<String>,
    /// `spec.postBuild`'s variables (not for a Helm Sync).
    pub post_build: Option<std::sync::Arc<postbuild::PostBuildConfig>>,
    /// `spec.kustomize`: the path built with kustomize as Flux builds it, this written into its
    /// kustomization (not for a Helm Sync).
    pub kustomize: Option<std::sync::Arc<lockstep_kustomize::overlay::Overlay>>,
    /// `spec.kustomize.commonMetadata`: labels and annotations put on every object.
    pub common_metadata: Option<crate::api::CommonMetadata>,
    /// Read a plain directory's subdirectories (`spec.source.recurse`, default true).
    pub recurse: bool,
    /// `spec.defaultNamespace`: the namespace of namespaced objects that name none.
    pub default_namespace: Option<String>,
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
        applier.default_namespace = self
            .helm
            .as_ref()
            .map(|h| h.config.namespace.clone())
            .or_else(|| self.default_namespace.clone());
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
            helm: None,
            charts: Default::default(),
            chart_interval: Duration::from_secs(300),
            timeout: Duration::from_secs(300),
            skip_if_inputs: None,
            post_build: None,
            kustomize: None,
            common_metadata: None,
            recurse: true,
            default_namespace: None,
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
    /// Fetching the chart failed (nothing was rendered, applied or pruned).
    #[error("source: chart {0}")]
    Chart(#[from] source::charts::ChartError),
    /// The blocking fetch task failed.
    #[error("source: the fetch task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Rendering failed (nothing was applied or pruned).
    #[error("render: {0}")]
    Render(#[from] render::Error),
    /// Decryption failed (nothing was applied or pruned).
    #[error("decrypt: {0}")]
    Decrypt(#[from] secrets::Error),
    /// `postBuild` substitution failed (nothing was applied or pruned).
    #[error("render: {0}")]
    PostBuild(#[from] postbuild::PostBuildError),
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
    /// A Helm Sync's chart (`name version (sha256:…)`), for a chart from a repository.
    pub chart: Option<String>,
    /// A Helm Sync's inputs digest ([`crate::render::helm::Chart::inputs`]).
    pub inputs: Option<String>,
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
    let (render, owner, overlay, recurse) = (
        cfg.render.clone(),
        cfg.owner.clone(),
        cfg.kustomize.clone(),
        cfg.recurse,
    );
    let span = tracing::Span::current();
    Ok(tokio::task::spawn_blocking(move || {
        let _in_reconcile = span.enter();
        render.cached(
            &owner,
            &rev.commit,
            &rev.files,
            &rev.path,
            overlay.as_deref(),
            recurse,
        )
    })
    .await
    .map_err(|e| render::Error::Task(e.to_string()))??)
}

/// The manifests of a fetched revision: its files rendered ([`render`]) then decrypted, or,
/// for a Helm Sync, its chart (`resolved`) rendered with its values; and the target namespace
/// when `createNamespace` asks for it and the revision does not declare it.
pub async fn render_revision(
    cfg: &Config,
    keys: &DecryptionKeys,
    rev: std::sync::Arc<source::Revision>,
    resolved: Option<helm::Resolved>,
) -> Result<Vec<Manifest>, Error> {
    let mut manifests = match (&cfg.helm, resolved) {
        (Some(h), Some(resolved)) => helm::render(&cfg.render, h.clone(), keys, rev, resolved).await?,
        _ => {
            let documents = render(cfg, rev.clone()).await?;
            let mut manifests = secrets::decrypt(&rev.files, documents.iter().cloned().collect(), keys)?;
            if let Some(pb) = &cfg.post_build {
                postbuild::substitute(&mut manifests, pb)?;
            }
            if let Some(cm) = &cfg.common_metadata {
                common_metadata(&mut manifests, cm);
            }
            manifests
        }
    };
    let namespace = cfg
        .target_namespace
        .as_ref()
        .or(cfg.helm.as_ref().map(|h| &h.config.namespace));
    if let (true, Some(ns)) = (cfg.create_namespace, namespace) {
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

/// Puts `cm`'s labels and annotations on every object (over theirs), as Flux's
/// `commonMetadata` does at apply.
fn common_metadata(manifests: &mut [Manifest], cm: &crate::api::CommonMetadata) {
    for m in manifests {
        for (field, values) in [("labels", &cm.labels), ("annotations", &cm.annotations)] {
            if values.is_empty() {
                continue;
            }
            let Some(md) = m
                .object
                .get_mut("metadata")
                .and_then(serde_json::Value::as_object_mut)
            else {
                continue;
            };
            let entry = md.entry(field).or_insert_with(|| serde_json::json!({}));
            if let Some(map) = entry.as_object_mut() {
                for (k, v) in values {
                    map.insert(k.clone(), serde_json::Value::String(v.clone()));
                }
            }
        }
    }
}

/// A Helm Sync's chart (and its dependencies) for `rev`, resolved (`None` for other Syncs).
pub async fn resolve_chart(cfg: &Config, rev: &source::Revision) -> Result<Option<helm::Resolved>, Error> {
    match &cfg.helm {
        None => Ok(None),
        Some(h) => Ok(Some(
            helm::resolve(&cfg.charts, h, rev, cfg.chart_interval).await?,
        )),
    }
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
    let resolved = resolve_chart(cfg, &rev).await?;
    let inputs = match (&cfg.helm, &resolved) {
        (Some(h), Some(r)) => Some(r.inputs(&rev.path, &h.config)),
        _ => cfg.post_build.as_ref().map(|p| p.inputs.clone()),
    };
    let chart = resolved.as_ref().and_then(|r| r.status.clone());
    let applied_before =
        cfg.skip_if_commit.as_deref() == Some(rev.commit.as_str()) && cfg.skip_if_inputs == inputs;
    if cfg.force.is_empty() && applied_before {
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
            chart,
            inputs,
        });
    }
    let rev = std::sync::Arc::new(rev);
    let manifests = render_revision(cfg, keys, rev.clone(), resolved).await?;
    let (manifests, mut hooks) = plan::hooks::split(manifests)?;
    // Healing drift re-applies what was applied; it is not a new sync of the revision, and runs
    // no hook (a migration Job would otherwise run at every `kubectl edit`).
    if applied_before {
        hooks.clear();
    }
    let steps = plan::steps(&manifests)?;
    let mut applier = cfg.applier(client.clone()).await?;
    applier.check_scope(&manifests)?;
    let hook_manifests: Vec<Manifest> = hooks.iter().map(|h| h.manifest.clone()).collect();
    applier.check_scope(&hook_manifests)?;
    drop(hook_manifests);
    let mut report = apply::Report::default();
    let result = async {
        let pre_sync_at = pre_sync_step(&applier, &manifests, &steps, &hooks);
        let inventory = apply_steps(
            &client,
            cfg,
            &mut applier,
            &manifests,
            &steps,
            last,
            (&hooks, pre_sync_at),
            &mut report,
        )
        .await?;
        applier
            .run_hooks(&hooks, Phase::Sync, cfg.timeout, &mut report)
            .await?;
        let pruned = prune(cfg, &applier, last, &inventory).await?;
        if !plan::hooks::waves(&hooks, Phase::PostSync).is_empty() {
            apply::wait::inventory_healthy(
                &client,
                &cfg.owner,
                &inventory,
                cfg.timeout,
                cfg.interrupt.clone(),
            )
            .await?;
            applier
                .run_hooks(&hooks, Phase::PostSync, cfg.timeout, &mut report)
                .await?;
        }
        Ok::<_, Error>((inventory, pruned))
    }
    .await;
    let (inventory, pruned) = match result {
        Ok(done) => done,
        Err(e) => {
            if !plan::hooks::waves(&hooks, Phase::SyncFail).is_empty() {
                let mut ignored = apply::Report::default();
                if let Err(h) = applier
                    .run_hooks(&hooks, Phase::SyncFail, cfg.timeout, &mut ignored)
                    .await
                {
                    tracing::warn!(error = %h, "a SyncFail hook failed");
                }
            }
            return Err(e);
        }
    };
    Ok(Outcome {
        commit: rev.commit.clone(),
        reference: rev.reference.clone(),
        report,
        pruned,
        inventory,
        duration: started.elapsed(),
        skipped: false,
        chart,
        inputs,
    })
}

/// The step before which the PreSync hooks run: the first, unless a hook mounts a Secret of
/// the revision or goes to a namespace the revision creates: then after the secrets stage
/// (hooks never run before the secrets they mount exist).
fn pre_sync_step(
    applier: &Applier,
    manifests: &[Manifest],
    steps: &[plan::Step<'_>],
    hooks: &[plan::hooks::HookManifest],
) -> usize {
    let namespace_of = |m: &Manifest| applier.namespace_of(m);
    let secrets: std::collections::BTreeSet<(String, String)> = manifests
        .iter()
        .filter(|m| {
            m.field("/kind") == "Secret"
                || m.field("/kind") == "SealedSecret"
                || m.field("/kind") == "ExternalSecret"
        })
        .map(|m| {
            let name = match m.field("/kind") {
                "ExternalSecret" => m
                    .object
                    .pointer("/spec/target/name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(m.field("/metadata/name"))
                    .to_owned(),
                _ => m.field("/metadata/name").to_owned(),
            };
            (namespace_of(m), name)
        })
        .collect();
    let namespaces: std::collections::BTreeSet<String> = manifests
        .iter()
        .filter(|m| m.field("/kind") == "Namespace")
        .map(|m| m.field("/metadata/name").to_owned())
        .collect();
    let needs = hooks
        .iter()
        .filter(|h| h.hook.phases.contains(&Phase::PreSync))
        .any(|h| plan::hooks::needs_revision_objects(h, &secrets, &namespaces, namespace_of));
    if needs {
        steps
            .iter()
            .rposition(|s| s.stage <= Stage::Secrets)
            .map_or(0, |i| i + 1)
    } else {
        0
    }
}

/// Applies the steps in order; the revision's ExternalSecrets are materialised once they (and
/// their stores) are applied, after the last secrets step and before any workload; the PreSync
/// hooks run before step `pre_sync_at` (after the last when it is `steps.len()`).
#[allow(clippy::too_many_arguments)]
async fn apply_steps(
    client: &kube::Client,
    cfg: &Config,
    applier: &mut Applier,
    manifests: &[Manifest],
    steps: &[plan::Step<'_>],
    last: &Inventory,
    (hooks, pre_sync_at): (&[plan::hooks::HookManifest], usize),
    report: &mut apply::Report,
) -> Result<Inventory, Error> {
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
    for i in 0..=steps.len() {
        if i == pre_sync_at {
            applier
                .run_hooks(hooks, Phase::PreSync, cfg.timeout, report)
                .await?;
        }
        let Some(step) = steps.get(i) else { break };
        applier.apply_step(step, last, &mut inventory, report).await?;
        if let (Some(engine), true) = (&engine, last_secrets_step == Some(i)) {
            external.materialize(client, engine).await?;
        }
    }
    Ok(inventory)
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
