//! The reconcilers: the Sync controller (one reconcile runs one sync and writes kstatus
//! conditions, revisions, inventory and history; failures requeue with backoff and never
//! prune), the SealedSecret controller ([`sealed_secrets`]) and the ExternalSecret refresher
//! ([`external_secrets`]).
//!
//! A reconcile reads as its steps (`reconcile`): skip a suspended Sync; wait for its
//! dependencies ([`depends_on`]); between syncs, follow the objects' health until it settles;
//! otherwise run the sync ([`spec`] turns the spec into its configuration, [`crate::sync`] runs
//! it), track its objects for drift ([`drift`]), write the next status ([`status`], pure), and
//! report it ([`report`]: Event and metrics). When a sync is due is [`schedule`]'s decision,
//! also pure.

pub mod argocd;
pub mod bootstrap;
pub mod depends_on;
pub mod differ;
pub mod drift;
pub mod external_secrets;
pub mod flux;
mod inflight;
pub mod metrics;
pub mod readiness;
pub mod report;
pub mod schedule;
pub mod sealed_secrets;
pub mod spec;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

pub use bootstrap::{Bootstrap, bootstrap};
pub use differ::Differ;
pub use readiness::{Gate, Readiness};

use crate::api::{Reason, Sync, SyncStatus};
use crate::errors::kube_message;
use crate::secrets::sealing::LiveKeys;
use crate::source::GitCache;
use crate::sync;
use status::Attempt;

/// Errors of one reconcile; [`Error::reason`] says what each means for the Sync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `spec.source.ref` names more than one kind of reference.
    #[error("spec.source.ref: set exactly one of branch, tag, semver, commit")]
    AmbiguousRef,
    /// `spec.targetNamespace` reaches outside the namespace tenant isolation confines the Sync to.
    #[error(
        "spec.targetNamespace {target:?}: a Sync outside the agent's namespace ({agent}) may only apply into its own namespace {namespace:?} (tenant isolation)"
    )]
    Confined {
        /// The target namespace asked for.
        target: String,
        /// The Sync's namespace.
        namespace: String,
        /// The agent's namespace.
        agent: String,
    },
    /// The repository credentials Secret cannot be used.
    #[error(transparent)]
    Credentials(#[from] crate::source::credentials::Error),
    /// A Secret the spec names could not be read.
    #[error("{field}: secret {namespace}/{name}: {}", kube_message(.source))]
    SecretRead {
        /// The field that names it.
        field: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// A Secret or ConfigMap the spec names (`valuesFrom`, `substituteFrom`, chart credentials)
    /// cannot be used (names the field and entry).
    #[error("{field}: {object}: {message}")]
    SpecInput {
        /// The field that names it.
        field: String,
        /// `Secret ns/name` or `ConfigMap ns/name`.
        object: String,
        /// What is wrong (never a value).
        message: String,
    },
    /// The decryption Secret's age identities cannot be used.
    #[error("decryption keys: {0}")]
    Identities(#[source] lockstep_formats::Error),
    /// The sync failed.
    #[error(transparent)]
    Sync(#[from] sync::Error),
    /// The sync (or diff) did not finish within `spec.timeout`.
    #[error("the {what} did not finish within {} s", .after.as_secs())]
    Timeout {
        /// `sync` or `diff`.
        what: &'static str,
        /// The bound.
        after: Duration,
    },
    /// Writing the Sync's status failed.
    #[error("status: {}", kube_message(.source))]
    Status {
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// Reading a Sync failed.
    #[error("reading Sync {namespace}/{name}: {}", kube_message(.source))]
    Read {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// Applying the bootstrap Sync failed.
    #[error("applying the bootstrap Sync {namespace}/{name}: {}", kube_message(.source))]
    Bootstrap {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// The Sync does not exist.
    #[error("Sync {namespace}/{name} not found")]
    NotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl Error {
    /// The reason a failure is reported with (conditions, history, Events).
    pub fn reason(&self) -> Reason {
        use crate::apply::Error as Apply;
        match self {
            Error::AmbiguousRef | Error::Confined { .. } | Error::Credentials(_) => Reason::Unsupported,
            Error::SecretRead { .. } | Error::Identities(_) => Reason::DecryptionKeysFailed,
            // A missing valuesFrom object may yet be created: retried, not stalled.
            Error::SpecInput { .. } => Reason::SourceFailed,
            Error::Sync(e) => match e {
                sync::Error::Source(_) | sync::Error::Chart(_) | sync::Error::Task(_) => Reason::SourceFailed,
                sync::Error::Render(_)
                | sync::Error::Decrypt(_)
                | sync::Error::PostBuild(_)
                | sync::Error::Plan(_) => Reason::RenderFailed,
                sync::Error::Apply(Apply::Canceled { .. } | Apply::PostSyncCanceled { .. }) => {
                    Reason::HealthCheckCanceled
                }
                sync::Error::Apply(Apply::Unhealthy { .. } | Apply::NotHealthyForPostSync { .. }) => {
                    Reason::HealthCheckFailed
                }
                sync::Error::Apply(Apply::Hook { .. }) => Reason::HookFailed,
                sync::Error::Apply(Apply::Plan(_)) => Reason::RenderFailed,
                sync::Error::Apply(_) | sync::Error::External(_) => Reason::ApplyFailed,
                sync::Error::Budget(_) => Reason::PruneBudgetExceeded,
            },
            Error::Timeout { .. } => Reason::TimedOut,
            Error::Status { .. } | Error::Read { .. } | Error::Bootstrap { .. } => Reason::StatusFailed,
            Error::NotFound { .. } => Reason::NotFound,
        }
    }
}

/// Which namespaces the controllers watch: every one (the agent), or one (several controllers
/// side by side in one cluster, as the end-to-end tests run them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    #[default]
    All,
    /// One namespace.
    Namespace(String),
}

impl Scope {
    /// The API of a namespaced kind within the scope.
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match self {
            Scope::All => Api::all(client.clone()),
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }

    /// The API of a dynamic kind within the scope.
    pub fn api_with(
        &self,
        client: &Client,
        ar: &kube::discovery::ApiResource,
    ) -> Api<kube::api::DynamicObject> {
        match self {
            Scope::All => Api::all_with(client.clone(), ar),
            Scope::Namespace(ns) => Api::namespaced_with(client.clone(), ns, ar),
        }
    }
}

/// Shared state of the Sync controller.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Git caches.
    pub cache: GitCache,
    /// Namespace of the agent (sealing keys live there).
    pub namespace: String,
    /// The agent's sealing keys, kept current ([`crate::secrets::sealing::maintain`]).
    pub keys: LiveKeys,
    /// The ExternalSecret engine (shared Vault tokens and call counts; `None`: one per sync).
    pub external: Option<crate::secrets::external::Engine>,
    /// The agent's metrics.
    pub metrics: metrics::Metrics,
    /// Drift watches over every Sync's inventory.
    pub drift: drift::Tracker,
    /// Kubernetes Events on Syncs.
    pub recorder: kube::runtime::events::Recorder,
    /// Confine each Sync outside [`Context::namespace`] to its own namespace
    /// ([`spec::confinement`]).
    pub tenant_isolation: bool,
    /// The Syncs this controller reconciles.
    pub scope: Scope,
    /// How revisions are rendered: the kustomize helper, and each Sync's last render (healing
    /// drift on the same commit starts no build). Set its `kustomize` field in place: the
    /// metrics count this renderer's builds.
    pub render: crate::render::Render,
    /// Charts fetched and indexes read, shared by every Sync.
    pub charts: Arc<crate::source::charts::ChartCache>,
    /// Reconciles in progress: what each started from, and how to cut its health waits short.
    inflight: inflight::Registry,
    /// The controller's cache of Syncs (for `dependsOn`), set by [`run_until`].
    syncs: std::sync::OnceLock<Store<Sync>>,
}

impl Context {
    /// A context with new metrics (counting `external`'s backend calls) and a new drift
    /// tracker, and the stream of drift triggers to give [`run_until`].
    pub fn new(
        client: Client,
        cache: GitCache,
        namespace: String,
        keys: LiveKeys,
        external: Option<crate::secrets::external::Engine>,
    ) -> (
        Self,
        impl futures::Stream<Item = ObjectRef<Sync>> + Send + 'static,
    ) {
        let calls = external.as_ref().map(|e| e.calls.clone()).unwrap_or_default();
        let render = crate::render::Render::default();
        let metrics = metrics::Metrics::new(calls, render.builds_counter());
        let (drift, drifted) = drift::Tracker::new(client.clone(), Some(metrics.clone()));
        let recorder = kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "lockstep-agent".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        let ctx = Self {
            tenant_isolation: false,
            scope: Scope::All,
            render,
            charts: Arc::default(),
            inflight: inflight::Registry::default(),
            syncs: Default::default(),
            recorder,
            client,
            cache,
            namespace,
            keys,
            external,
            metrics,
            drift,
        };
        (ctx, drifted)
    }

    /// Cuts short every health wait in progress (shutdown).
    pub fn interrupt_all(&self, reason: &str) {
        self.inflight.interrupt_all(reason);
    }
}

/// Runs the controller until SIGINT ([`run_until`]).
pub async fn run(ctx: Arc<Context>, drifted: impl futures::Stream<Item = ObjectRef<Sync>> + Send + 'static) {
    run_until(
        ctx,
        drifted,
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
        None,
    )
    .await;
}

/// Runs the controller until `shutdown` completes: then health waits in progress are cut
/// short, the reconciles in progress finish (writing their status), and it returns. `ready`
/// opens once the Syncs are listed and the drift watches over their inventories have listed.
pub async fn run_until(
    ctx: Arc<Context>,
    drifted: impl futures::Stream<Item = ObjectRef<Sync>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + std::marker::Sync + 'static,
    ready: Option<Gate>,
) {
    let syncs: Api<Sync> = ctx.scope.api(&ctx.client);
    let controller = Controller::new(syncs.clone(), watcher::Config::default());
    let store = controller.store();
    let _ = ctx.syncs.set(store.clone());
    let (dependents_tx, mut dependents_rx) = tokio::sync::mpsc::unbounded_channel();
    let side = tokio::spawn(watch_syncs(ctx.clone(), syncs, store, dependents_tx, ready));
    let stop_ctx = ctx.clone();
    let stopping = async move {
        shutdown.await;
        info!("shutting down: finishing the reconciles in progress");
        stop_ctx.interrupt_all("the agent is shutting down");
    };
    controller
        .reconcile_on(drifted)
        .reconcile_on(futures::stream::poll_fn(move |cx| dependents_rx.poll_recv(cx)))
        .graceful_shutdown_on(stopping)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(sync = %obj, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    side.abort();
}

/// A second watch of Syncs, for what the controller's own does not do: a deleted Sync's series
/// and drift watches go (labels stay bounded by the Syncs that exist); a change to a Sync cuts
/// short a wait of its reconcile in progress; a change to a Sync triggers the Syncs that depend
/// on it; and its first list starts the drift watches over every inventory (so drift is watched
/// from the start, what drifted while the agent was down included) and, once they have listed,
/// opens `ready`. (Nothing else may wait on the controller's store: kube-runtime wakes only one
/// of several tasks waiting for it.)
async fn watch_syncs(
    ctx: Arc<Context>,
    syncs: Api<Sync>,
    store: Store<Sync>,
    dependents: tokio::sync::mpsc::UnboundedSender<ObjectRef<Sync>>,
    ready: Option<Gate>,
) {
    let mut events = std::pin::pin!(watcher::watcher(syncs, watcher::Config::default()).default_backoff());
    let (mut ready, mut listed) = (ready, Vec::new());
    while let Some(e) = events.next().await {
        match e {
            Ok(watcher::Event::Delete(s)) => {
                let ns = s.namespace().unwrap_or_default();
                ctx.metrics.forget(&ns, &s.name_any());
                ctx.drift.forget(&s.owner());
            }
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                ctx.inflight.interrupt_if_changed(&s);
                for d in depends_on::dependents(&store.state(), &s) {
                    let _ = dependents.send(d);
                }
                if ready.is_some() {
                    listed.push(s);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(g) = ready.take() {
                    tokio::spawn(watch_inventories(
                        ctx.drift.clone(),
                        std::mem::take(&mut listed),
                        g,
                    ));
                }
            }
            Ok(watcher::Event::Init) => {}
            Err(e) => tracing::debug!(error = %e, "watching Syncs"),
        }
    }
}

/// Starts drift watches over the inventories of `syncs` (the first list), then opens `ready`
/// once they have all listed.
async fn watch_inventories(drift: drift::Tracker, syncs: Vec<Sync>, ready: Gate) {
    for s in &syncs {
        let Some(st) = &s.status else { continue };
        let owner = s.owner();
        let heal = s.spec.self_heal != Some(false) && s.spec.suspend != Some(true);
        drift.track(&owner, &spec::inventory_of(st), heal).await;
    }
    drift.wait_listed().await;
    tracing::debug!(syncs = syncs.len(), "Syncs and their objects listed");
    ready.open();
}

fn error_policy(s: Arc<Sync>, e: &Error, _ctx: Arc<Context>) -> Action {
    // A wait cut short by a newer revision or spec: go on with it at once.
    if e.reason().waited() {
        return Action::requeue(Duration::ZERO);
    }
    // The status read before this failure counts the earlier ones.
    let failures = s.status.as_ref().map_or(0, |st| st.failures);
    Action::requeue(schedule::retry_delay(&s, failures.saturating_add(1)))
}

fn now() -> String {
    lockstep_formats::sops::now_rfc3339()
}

async fn patch_status(api: &Api<Sync>, name: &str, st: &SyncStatus) -> Result<(), Error> {
    let patch = serde_json::json!({ "status": st });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::Status {
            source: Box::new(source),
        })
}

/// One reconcile of `s`, as its steps.
async fn reconcile(s: Arc<Sync>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
    let span =
        info_span!("reconcile", sync.namespace = %ns, sync.name = %name, revision = tracing::field::Empty);
    async move {
        let interval = schedule::interval(&s);
        if s.spec.suspend == Some(true) {
            return Ok(Action::requeue(interval));
        }
        let api: Api<Sync> = Api::namespaced(ctx.client.clone(), &ns);
        let status = s.status.clone().unwrap_or_default();
        if let Some(action) = wait_for_dependencies(&s, &ctx, &api, &status).await? {
            return Ok(action);
        }
        let owner = s.owner();
        let drifted = ctx.drift.take(&owner);
        let now_s = time::OffsetDateTime::now_utc().unix_timestamp();
        if drifted.is_empty()
            && let Some(wait) = schedule::due(&s, now_s, interval)
        {
            return follow_health(&s, &ctx, &api, &status, wait).await;
        }
        // The cache may not hold the status written last yet (a reconcile requested while the
        // previous one ran starts at once): read it fresh, so that no attempt's history is lost.
        let status = match api.get_status(&name).await {
            Ok(fresh) => fresh.status.unwrap_or_default(),
            Err(e) => {
                debug!(error = %e, "reading the status; using the cached one");
                status
            }
        };
        let started = std::time::Instant::now();
        let (result, attempted) = run_sync(&s, &ctx, &drifted, interval).await;
        let (health, corrected) = after_sync(&s, &ctx, &owner, &result, drifted.clone()).await;
        report::observe(&ctx.metrics, &ns, &name, &result, started.elapsed());
        let attempt = match &result {
            Ok(out) => Attempt::Applied(out),
            Err(e) => Attempt::Failed {
                reason: e.reason(),
                message: e.to_string(),
                revision: attempted,
            },
        };
        let new = status::next_status(&status, &s, &attempt, health.as_ref(), &now());
        patch_status(&api, &name, &new).await?;
        publish(&s, &ctx, &result, !drifted.is_empty(), corrected).await;
        match result {
            Ok(out) => {
                tracing::Span::current().record("revision", out.commit.as_str());
                info!(
                    skipped = out.skipped,
                    applied = out.report.applied.len(),
                    unchanged = out.report.unchanged,
                    pruned = out.pruned.len(),
                    seconds = out.duration.as_secs_f64(),
                    "sync succeeded"
                );
                Ok(Action::requeue(if status::progressing(&new) {
                    schedule::HEALTH_RECHECK.min(interval)
                } else {
                    interval
                }))
            }
            Err(e) => {
                warn!(error = %e, "sync failed");
                Err(e)
            }
        }
    }
    .instrument(span)
    .await
}

/// Holds `s` back while its dependencies are not ready (writing why, once); `None` when it may
/// go on.
async fn wait_for_dependencies(
    s: &Sync,
    ctx: &Context,
    api: &Api<Sync>,
    status: &SyncStatus,
) -> Result<Option<Action>, Error> {
    let Some(store) = ctx.syncs.get() else {
        return Ok(None);
    };
    let lookup = |n: &str, m: &str| store.get(&ObjectRef::new(m).within(n));
    let Some(b) = depends_on::blocked(s, &lookup) else {
        return Ok(None);
    };
    let new = status::blocked_status(status, &b, s.metadata.generation, &now());
    if new != *status {
        info!(reason = ?b, "waiting for dependencies");
        patch_status(api, &s.name_any(), &new).await?;
    }
    Ok(Some(Action::requeue(schedule::DEPENDENCY_RETRY)))
}

/// Between syncs: while the objects roll out (`Healthy` is `Unknown`), refreshes `Healthy`
/// every [`schedule::HEALTH_RECHECK`]; then waits for the sync that is due in `wait`.
async fn follow_health(
    s: &Sync,
    ctx: &Context,
    api: &Api<Sync>,
    status: &SyncStatus,
    wait: Duration,
) -> Result<Action, Error> {
    if !status::progressing(status) {
        return Ok(Action::requeue(wait));
    }
    let owner = s.owner();
    let health = crate::apply::wait::inventory_health(&ctx.client, &owner, &spec::inventory_of(status)).await;
    let mut new = status.clone();
    status::set_healthy(
        &mut new,
        &status.conditions,
        &health,
        s.metadata.generation,
        &now(),
    );
    if new.conditions != status.conditions {
        patch_status(api, &s.name_any(), &new).await?;
    }
    Ok(Action::requeue(wait.min(schedule::HEALTH_RECHECK)))
}

/// One sync of `s`, registered so that a newer spec or request cuts its waits short, within
/// its timeout; with the revision it attempted (once the fetch got that far). While it waits
/// for health, the remote is polled at `interval`, as if the Sync were idle, and a new commit
/// cuts the wait short.
async fn run_sync(
    s: &Sync,
    ctx: &Context,
    drifted: &BTreeMap<String, Option<String>>,
    interval: Duration,
) -> (Result<sync::Outcome, Error>, Option<String>) {
    let (cut, interrupt) = tokio::sync::watch::channel(None);
    let _registered = ctx.inflight.register(s, cut.clone());
    let mut attempted = None;
    let result = async {
        let isolation = ctx.tenant_isolation.then_some(ctx.namespace.as_str());
        let (mut cfg, keys, last) =
            spec::prepare(s, &ctx.client, &ctx.keys, ctx.external.clone(), isolation).await?;
        cfg.force = drifted.keys().cloned().collect();
        cfg.interrupt = Some(interrupt);
        cfg.render = ctx.render.clone();
        cfg.charts = ctx.charts.clone();
        let timeout = schedule::timeout(s);
        let work = async {
            let started = std::time::Instant::now();
            let rev = sync::fetch(&ctx.cache, &cfg).await?;
            let commit = rev.commit.clone();
            attempted = Some(rev.revision());
            let applying = sync::sync_revision(ctx.client.clone(), &cfg, &keys, &last, rev, started);
            let poll = async {
                loop {
                    tokio::time::sleep(interval).await;
                    match sync::fetch(&ctx.cache, &cfg).await {
                        Ok(r) if r.commit != commit => {
                            info!(commit = %r.commit, "a new revision while waiting");
                            cut.send_replace(Some(format!("a new revision {}", r.revision())));
                            return;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "polling for a new revision"),
                    }
                }
            };
            tokio::pin!(applying);
            tokio::select! {
                r = &mut applying => r,
                () = poll => applying.await,
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| Error::Timeout {
                what: "sync",
                after: timeout,
            })?
            .map_err(Error::from)
    }
    .await;
    (result, attempted)
}

/// After a sync: on success, counts the drift it corrected, tracks the new inventory for drift
/// and reads its health; on failure, gives the drifted objects back so that the retry forces
/// them again. Returns the health read and the number of corrections.
async fn after_sync(
    s: &Sync,
    ctx: &Context,
    owner: &str,
    result: &Result<sync::Outcome, Error>,
    drifted: BTreeMap<String, Option<String>>,
) -> (Option<status::HealthReading>, usize) {
    let out = match result {
        Ok(out) => out,
        Err(_) => {
            if !drifted.is_empty() {
                ctx.drift.give_back(owner, drifted);
            }
            return (None, 0);
        }
    };
    let corrected = report::corrections(&drifted, &out.report.versions);
    if corrected > 0 {
        info!(corrected, "drift corrected");
        ctx.metrics
            .drift_corrections
            .get_or_create(&metrics::SyncLabels {
                namespace: s.namespace().unwrap_or_default(),
                name: s.name_any(),
            })
            .inc_by(corrected as u64);
    }
    ctx.drift
        .track(owner, &out.inventory, s.spec.self_heal != Some(false))
        .await;
    let health = crate::apply::wait::inventory_health(&ctx.client, owner, &out.inventory).await;
    (Some(health), corrected)
}

/// Publishes the Event the sync deserves, if any.
async fn publish(
    s: &Sync,
    ctx: &Context,
    result: &Result<sync::Outcome, Error>,
    healing: bool,
    corrected: usize,
) {
    if let Some(ev) = report::event(result, healing, corrected)
        && let Err(e) = ctx
            .recorder
            .publish(&ev, &kube::Resource::object_ref(s, &()))
            .await
    {
        warn!(error = %e, "publishing an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_the_reason_of_its_step() {
        let timeout = Error::Timeout {
            what: "sync",
            after: Duration::from_secs(1),
        };
        assert_eq!(timeout.reason(), Reason::TimedOut);
        assert!(!timeout.reason().stalls(), "a timeout is transient");
        let budget = Error::Sync(sync::Error::Budget(crate::plan::BudgetExceeded {
            count: 6,
            inventory: 10,
            percent: 60,
            budget: 50,
        }));
        assert_eq!(budget.reason(), Reason::PruneBudgetExceeded);
        let canceled = Error::Sync(sync::Error::Apply(crate::apply::Error::Canceled {
            stage: crate::plan::Stage::Workloads,
            wave: 0,
            reason: "a new revision".into(),
        }));
        assert_eq!(canceled.reason(), Reason::HealthCheckCanceled);
        assert_eq!(Error::AmbiguousRef.reason(), Reason::Unsupported);
        let wave = Error::Sync(sync::Error::Plan(crate::plan::Error::Wave {
            origin: "a.yaml".into(),
            annotation: "lockstep.dev/sync-wave",
            value: "soon".into(),
        }));
        assert_eq!(wave.reason(), Reason::RenderFailed);
    }
}
