//! The Sync controller: one reconcile runs one sync and writes kstatus conditions, revisions,
//! inventory and history; failures requeue with backoff and never prune.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use crate::api::{Condition, HistoryEntry, InventoryEntry, Sync, SyncStatus};
use crate::plan::{Inventory, ObjectId};
use crate::render::Keys;
use crate::source::GitCache;
use crate::sync::{self, Config};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Sync asks for something not supported.
    #[error("{0}")]
    Unsupported(String),
    /// Reading keys failed.
    #[error("decryption keys: {0}")]
    Keys(String),
    /// The sync failed.
    #[error(transparent)]
    Sync(#[from] sync::Error),
    /// Writing status failed.
    #[error("status: {0}")]
    Status(String),
    /// The Sync does not exist.
    #[error("{0}")]
    NotFound(String),
}

/// Shared state of the controller.
pub struct Context {
    /// The client.
    pub client: Client,
    /// Git caches.
    pub cache: GitCache,
    /// Namespace of the agent (sealing keys live there).
    pub namespace: String,
    /// The agent's sealing keys, kept current ([`crate::sealing::maintain`]).
    pub keys: crate::sealing::Live,
    /// The ExternalSecret engine (shared Vault tokens and call counts; `None`: one per sync).
    pub external: Option<crate::external::Engine>,
    /// Metrics.
    pub metrics: crate::metrics::Metrics,
    /// Drift watches over every Sync's inventory.
    pub drift: crate::drift::Tracker,
    /// Kubernetes Events on Syncs.
    pub recorder: kube::runtime::events::Recorder,
    /// Confine each Sync outside [`Context::namespace`] to its own namespace ([`confinement`]).
    pub tenant_isolation: bool,
    /// Reconciles in progress, by `namespace/name`: what each started from, and how to cut its
    /// health waits short.
    inflight: std::sync::Mutex<HashMap<String, InFlight>>,
    /// The controller's cache of Syncs (for `dependsOn`), set by [`run`].
    syncs: std::sync::OnceLock<Store<Sync>>,
}

/// A reconcile in progress.
struct InFlight {
    generation: Option<i64>,
    requested: Option<String>,
    cut: tokio::sync::watch::Sender<Option<String>>,
}

impl Context {
    fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<String, InFlight>> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts short the health wait of `s`'s reconcile in progress when `s` now asks for
    /// something else: a new generation of its spec, or a new reconcile request.
    fn interrupt_if_changed(&self, s: &Sync) {
        let key = format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
        let inflight = self.inflight();
        let Some(f) = inflight.get(&key) else {
            return;
        };
        let requested = s.annotations().get(RECONCILE_ANNOTATION);
        let reason = if f.generation != s.metadata.generation {
            format!(
                "the Sync's spec changed (generation {})",
                s.metadata.generation.unwrap_or_default()
            )
        } else if f.requested.as_ref() != requested {
            "a reconcile was requested".to_owned()
        } else {
            return;
        };
        f.cut.send_replace(Some(reason));
    }

    /// Cuts short every health wait in progress (shutdown).
    pub fn interrupt_all(&self, reason: &str) {
        for f in self.inflight().values() {
            f.cut.send_replace(Some(reason.to_owned()));
        }
    }
}

impl Context {
    /// A context with new metrics (counting `external`'s backend calls) and a new drift
    /// tracker, and the stream of drift triggers to give [`run`].
    pub fn new(
        client: Client,
        cache: GitCache,
        namespace: String,
        keys: crate::sealing::Live,
        external: Option<crate::external::Engine>,
    ) -> (
        Self,
        impl futures::Stream<Item = ObjectRef<Sync>> + Send + 'static,
    ) {
        let calls = external.as_ref().map(|e| e.calls.clone()).unwrap_or_default();
        let metrics = crate::metrics::Metrics::new(calls);
        let (drift, drifted) = crate::drift::Tracker::new(client.clone(), Some(metrics.clone()));
        let recorder = kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "lockstep-agent".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        let ctx = Self {
            tenant_isolation: false,
            inflight: Default::default(),
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
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
const HISTORY: usize = 5;

/// The annotation that asks for a reconcile now (its value: any new string, e.g. a time).
pub const RECONCILE_ANNOTATION: &str = "lockstep.dev/reconcile-requested-at";

/// Retry defaults: the first delay, the factor, the longest delay.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_FACTOR: u32 = 2;
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The delay before retrying after `failures` failed syncs in a row (pure): the Sync's
/// `spec.retry` (`duration × factor^(failures − 1)`, at most `maxDuration`), with a jitter of
/// ±10 % that is stable for one Sync and failure count (so repeated `due` checks agree), so that
/// Syncs failing together do not retry together.
pub fn retry_delay(s: &Sync, failures: u32) -> Duration {
    let r = s.spec.retry.clone().unwrap_or_default();
    let first = r
        .duration
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(RETRY_FIRST);
    let max = r
        .max_duration
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(RETRY_MAX);
    let factor = r.factor.unwrap_or(RETRY_FACTOR).max(1);
    let exp = failures.saturating_sub(1).min(32);
    let base = first
        .checked_mul(factor.saturating_pow(exp))
        .unwrap_or(max)
        .min(max);
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(s.metadata.uid.as_deref(), s.name_any(), failures), &mut h);
    let spread = std::hash::Hasher::finish(&h) % 201; // 0..=200 → −10 % … +10 %
    base.mul_f64(0.9 + spread as f64 / 1000.0)
}

/// Whether a sync is due now, or after how long (pure; `now` in seconds since the epoch).
/// A sync is due when the spec changed (generation), a reconcile was requested (annotation),
/// or the interval (after success) or the retry delay (after failure) has passed since the last
/// attempt. Every other event, such as our own status writes, finds nothing due, so status
/// writes do not loop.
pub fn due(s: &Sync, now: i64, interval: Duration) -> Option<Duration> {
    let st = s.status.as_ref()?;
    if st.observed_generation != s.metadata.generation {
        return None;
    }
    if s.annotations().get(RECONCILE_ANNOTATION) != st.last_handled_reconcile_at.as_ref() {
        return None;
    }
    // The last attempt waited for dependencies, or had its wait cut short: go on now.
    if st.conditions.iter().any(|c| {
        c.type_ == "Ready"
            && matches!(
                c.reason.as_str(),
                "DependencyNotReady" | "DependencyCycle" | "HealthCheckCanceled"
            )
    }) {
        return None;
    }
    let last = st.history.first()?;
    let at = time::OffsetDateTime::parse(&last.time, &time::format_description::well_known::Rfc3339)
        .ok()?
        .unix_timestamp();
    let wait = if last.result == "Succeeded" {
        interval
    } else {
        retry_delay(s, st.failures.max(1))
    };
    let next = at.saturating_add(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX));
    (next > now).then(|| Duration::from_secs(u64::try_from(next - now).unwrap_or(0)))
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
    ready: Option<crate::admin::Gate>,
) {
    let syncs: Api<Sync> = Api::all(ctx.client.clone());
    let controller = Controller::new(syncs.clone(), watcher::Config::default());
    let store = controller.store();
    let _ = ctx.syncs.set(store.clone());
    // A second watch of Syncs, for what the controller's own does not do: a deleted Sync's
    // series and drift watches go (labels stay bounded by the Syncs that exist); a change to a
    // Sync cuts short a wait of its reconcile in progress; a change to a Sync triggers the
    // Syncs that depend on it; and its first list starts the drift watches over every
    // inventory (so drift is watched from the start, what drifted while the agent was down
    // included) and, once they have listed, opens `ready`. (Nothing else may wait on the
    // controller's store: kube-runtime wakes only one of several tasks waiting for it.)
    let (dependents_tx, dependents_rx) = tokio::sync::mpsc::unbounded_channel();
    let side_ctx = ctx.clone();
    let side = tokio::spawn(async move {
        let mut events =
            std::pin::pin!(watcher::watcher(syncs, watcher::Config::default()).default_backoff());
        let (mut ready, mut listed) = (ready, Vec::new());
        while let Some(e) = events.next().await {
            match e {
                Ok(watcher::Event::Delete(s)) => {
                    let ns = s.namespace().unwrap_or_default();
                    side_ctx.metrics.forget(&ns, &s.name_any());
                    side_ctx.drift.forget(&format!("{ns}.{}", s.name_any()));
                }
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    side_ctx.interrupt_if_changed(&s);
                    for d in dependents(&store.state(), &s) {
                        let _ = dependents_tx.send(d);
                    }
                    if ready.is_some() {
                        listed.push(s);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(g) = ready.take() {
                        tokio::spawn(watch_inventories(
                            side_ctx.drift.clone(),
                            std::mem::take(&mut listed),
                            g,
                        ));
                    }
                }
                Ok(watcher::Event::Init) => {}
                Err(e) => tracing::debug!(error = %e, "watching Syncs"),
            }
        }
    });
    let stop_ctx = ctx.clone();
    let stopping = async move {
        shutdown.await;
        info!("shutting down: finishing the reconciles in progress");
        stop_ctx.interrupt_all("the agent is shutting down");
    };
    let mut dependents_rx = dependents_rx;
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

/// Starts drift watches over the inventories of `syncs` (the first list), then opens `ready`
/// once they have all listed.
async fn watch_inventories(drift: crate::drift::Tracker, syncs: Vec<Sync>, ready: crate::admin::Gate) {
    for s in &syncs {
        let Some(st) = &s.status else { continue };
        let owner = format!("{}.{}", s.namespace().unwrap_or_default(), s.name_any());
        let heal = s.spec.self_heal != Some(false) && s.spec.suspend != Some(true);
        drift.track(&owner, &inventory_of(st), heal).await;
    }
    drift.wait_listed().await;
    tracing::debug!(syncs = syncs.len(), "Syncs and their objects listed");
    ready.open();
}

fn error_policy(s: Arc<Sync>, e: &Error, _ctx: Arc<Context>) -> Action {
    // A wait cut short by a newer revision or spec: go on with it at once.
    if is_canceled(e) {
        return Action::requeue(Duration::ZERO);
    }
    // The status read before this failure counts the earlier ones.
    let failures = s.status.as_ref().map_or(0, |st| st.failures);
    Action::requeue(retry_delay(&s, failures.saturating_add(1)))
}

fn is_canceled(e: &Error) -> bool {
    matches!(
        e,
        Error::Sync(sync::Error::Apply(crate::apply::Error::Canceled { .. }))
    )
}

/// The Syncs in `all` that depend on `s` (pure).
pub fn dependents(all: &[Arc<Sync>], s: &Sync) -> Vec<ObjectRef<Sync>> {
    let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
    all.iter()
        .filter(|d| {
            let own = d.namespace().unwrap_or_default();
            d.spec
                .depends_on
                .iter()
                .any(|r| r.name == name && r.namespace.as_deref().unwrap_or(&own) == ns)
        })
        .map(|d| ObjectRef::from_obj(&**d))
        .collect()
}

/// Why a Sync may not be applied yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// A dependency is missing, not reconciled at its generation, not `Ready` or not `Healthy`.
    Waiting(String),
    /// The dependencies form a cycle through this Sync (it can never run).
    Cycle(String),
}

/// `(namespace, name)` of a Sync.
type SyncKey = (String, String);

/// Whether `s`'s dependencies let it be applied now (pure, over `lookup(namespace, name)`).
pub fn blocked(s: &Sync, lookup: &dyn Fn(&str, &str) -> Option<Arc<Sync>>) -> Option<Blocked> {
    let ns = s.namespace().unwrap_or_default();
    let key = |d: &crate::api::DependencyRef, own: &str| {
        (
            d.namespace.clone().unwrap_or_else(|| own.to_owned()),
            d.name.clone(),
        )
    };
    // Depth-first from `s`: a path back to `s` is a cycle.
    let me = (ns.clone(), s.name_any());
    let mut stack: Vec<(Vec<SyncKey>, SyncKey)> = s
        .spec
        .depends_on
        .iter()
        .map(|d| (vec![me.clone()], key(d, &ns)))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some((path, next)) = stack.pop() {
        if next == me {
            let names: Vec<String> = path
                .iter()
                .chain(std::iter::once(&me))
                .map(|(n, m)| format!("{n}/{m}"))
                .collect();
            return Some(Blocked::Cycle(format!(
                "spec.dependsOn: the dependencies form a cycle: {}",
                names.join(" → ")
            )));
        }
        if !seen.insert(next.clone()) {
            continue;
        }
        if let Some(d) = lookup(&next.0, &next.1) {
            let own = d.namespace().unwrap_or_default();
            let mut p = path.clone();
            p.push(next.clone());
            stack.extend(d.spec.depends_on.iter().map(|r| (p.clone(), key(r, &own))));
        }
    }
    for d in &s.spec.depends_on {
        let (dns, dname) = key(d, &ns);
        let why = match lookup(&dns, &dname) {
            None => "does not exist".to_owned(),
            Some(dep) => match dependency_ready(&dep) {
                Ok(()) => continue,
                Err(why) => why,
            },
        };
        return Some(Blocked::Waiting(format!("dependency {dns}/{dname} {why}")));
    }
    None
}

/// Whether a dependency is ready for its dependents (pure): reconciled at its current
/// generation, `Ready`, and `Healthy` when it reports health.
fn dependency_ready(d: &Sync) -> Result<(), String> {
    let Some(st) = &d.status else {
        return Err("has not been reconciled yet".into());
    };
    if st.observed_generation != d.metadata.generation {
        return Err(format!(
            "has not reconciled its generation {} yet",
            d.metadata.generation.unwrap_or_default()
        ));
    }
    let cond = |t: &str| st.conditions.iter().find(|c| c.type_ == t);
    match cond("Ready") {
        Some(c) if c.status == "True" => {}
        Some(c) => return Err(format!("is not ready ({}: {})", c.reason, c.message)),
        None => return Err("is not ready".into()),
    }
    match cond("Healthy") {
        Some(c) if c.status != "True" => Err(format!("is not healthy ({}: {})", c.reason, c.message)),
        _ => Ok(()),
    }
}

/// Go-style durations: `30s`, `5m`, `1h`, `1h30m` ([`lockstep_formats::duration::parse`]).
pub use lockstep_formats::duration::parse as parse_duration;
/// [`parse_duration`], with `0` meaning zero (a switch-off).
pub use lockstep_formats::duration::parse_or_zero as parse_duration_or_zero;

/// The Sync the agent creates at start-up from its flags (`--bootstrap-*`).
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// Repository URL.
    pub url: String,
    /// Branch.
    pub branch: String,
    /// Directory.
    pub path: String,
    /// Poll interval (Go duration).
    pub interval: String,
    /// Secret with `*.agekey` entries.
    pub sops_secret: Option<String>,
    /// Secret with repository credentials.
    pub secret: Option<String>,
}

/// Creates or updates the bootstrap Sync `namespace/name` (server-side apply, field manager
/// `lockstep-bootstrap`): fields set by other managers (a later `kubectl edit`) are left alone
/// unless the flags set them too.
pub async fn bootstrap(client: Client, namespace: &str, name: &str, b: Bootstrap) -> Result<(), Error> {
    use crate::api::{Decryption, GitRef, LocalRef, SopsDecryption, Source, SyncSpec};
    let spec = SyncSpec {
        source: Source {
            url: b.url,
            reference: Some(GitRef {
                branch: Some(b.branch),
                ..GitRef::default()
            }),
            path: (!b.path.is_empty()).then_some(b.path),
            secret_ref: b.secret.map(|name| LocalRef { name }),
            interval: Some(b.interval),
        },
        decryption: b.sops_secret.map(|name| Decryption {
            sops: Some(SopsDecryption {
                secret_ref: LocalRef { name },
            }),
            sealed_secrets: None,
        }),
        ..SyncSpec::default()
    };
    let obj = serde_json::json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync",
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    });
    let api: Api<Sync> = Api::namespaced(client, namespace);
    api.patch(
        name,
        &PatchParams::apply("lockstep-bootstrap").force(),
        &Patch::Apply(&obj),
    )
    .await
    .map_err(|e| Error::Status(format!("applying the bootstrap Sync {namespace}/{name}: {e}")))?;
    info!(sync.namespace = %namespace, sync.name = %name, "bootstrap Sync applied");
    Ok(())
}

/// How long a Sync waiting for dependencies waits before looking again (a change to a
/// dependency triggers it sooner).
const DEPENDENCY_RETRY: Duration = Duration::from_secs(30);
/// How often the `Healthy` condition is refreshed between syncs while objects roll out.
const HEALTH_RECHECK: Duration = Duration::from_secs(5);

async fn reconcile(s: Arc<Sync>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = s.namespace().unwrap_or_default();
    let name = s.name_any();
    let span =
        info_span!("reconcile", sync.namespace = %ns, sync.name = %name, revision = tracing::field::Empty);
    async move {
        let interval = s
            .spec
            .source
            .interval
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or(DEFAULT_INTERVAL);
        if s.spec.suspend == Some(true) {
            return Ok(Action::requeue(interval));
        }
        let api: Api<Sync> = Api::namespaced(ctx.client.clone(), &ns);
        let status = s.status.clone().unwrap_or_default();
        if let Some(store) = ctx.syncs.get() {
            let lookup = |n: &str, m: &str| store.get(&ObjectRef::new(m).within(n));
            if let Some(b) = blocked(&s, &lookup) {
                let new = blocked_status(&status, &b, s.metadata.generation);
                if new != status {
                    info!(reason = ?b, "waiting for dependencies");
                    patch_status(&api, &name, &new).await?;
                }
                return Ok(Action::requeue(DEPENDENCY_RETRY));
            }
        }
        let owner = format!("{ns}.{name}");
        let drifted = ctx.drift.take(&owner);
        let now_s = time::OffsetDateTime::now_utc().unix_timestamp();
        if drifted.is_empty()
            && let Some(wait) = due(&s, now_s, interval)
        {
            // Between syncs, the Healthy condition follows a rollout until it settles.
            if healthy_condition(&status).is_some_and(|c| c.status == "Unknown") {
                let health =
                    crate::apply::inventory_health(&ctx.client, &owner, &inventory_of(&status)).await;
                let mut new = status.clone();
                set_healthy(&mut new, &status.conditions, &health, s.metadata.generation);
                if new.conditions != status.conditions {
                    patch_status(&api, &name, &new).await?;
                }
                return Ok(Action::requeue(wait.min(HEALTH_RECHECK)));
            }
            return Ok(Action::requeue(wait));
        }
        let started = std::time::Instant::now();
        // Register this reconcile, so that a newer spec or request cuts its waits short.
        let (cut, interrupt) = tokio::sync::watch::channel(None);
        let key = format!("{ns}/{name}");
        ctx.inflight().insert(
            key.clone(),
            InFlight {
                generation: s.metadata.generation,
                requested: s.annotations().get(RECONCILE_ANNOTATION).cloned(),
                cut: cut.clone(),
            },
        );
        let mut attempted = None;
        let result = run_sync(
            &s,
            &ctx,
            drifted.keys().cloned().collect(),
            interval,
            cut,
            interrupt,
            &mut attempted,
        )
        .await;
        ctx.inflight().remove(&key);
        let corrected = result
            .as_ref()
            .map_or(0, |out| corrections(&drifted, &out.report.versions));
        let mut health = None;
        if let Ok(out) = &result {
            if corrected > 0 {
                info!(corrected, "drift corrected");
                ctx.metrics
                    .drift_corrections
                    .get_or_create(&crate::metrics::SyncLabels {
                        namespace: ns.clone(),
                        name: name.clone(),
                    })
                    .inc_by(corrected as u64);
            }
            ctx.drift
                .track(&owner, &out.inventory, s.spec.self_heal != Some(false))
                .await;
            health = Some(crate::apply::inventory_health(&ctx.client, &owner, &out.inventory).await);
        }
        if result.is_err() && !drifted.is_empty() {
            ctx.drift.give_back(&owner, drifted.clone());
        }
        observe(&ctx.metrics, &ns, &name, &result, started.elapsed());
        let new = next_status(&s, status, &result, health.as_ref(), attempted);
        patch_status(&api, &name, &new).await?;
        if let Some(ev) = event(&result, !drifted.is_empty(), corrected)
            && let Err(e) = ctx
                .recorder
                .publish(&ev, &kube::Resource::object_ref(&*s, &()))
                .await
        {
            warn!(error = %e, "publishing an event");
        }
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
                let progressing = healthy_condition(&new).is_some_and(|c| c.status == "Unknown");
                Ok(Action::requeue(if progressing {
                    HEALTH_RECHECK.min(interval)
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

async fn patch_status(api: &Api<Sync>, name: &str, st: &SyncStatus) -> Result<(), Error> {
    let patch = serde_json::json!({ "status": st });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| Error::Status(e.to_string()))
}

fn healthy_condition(st: &SyncStatus) -> Option<&Condition> {
    st.conditions.iter().find(|c| c.type_ == "Healthy")
}

/// The status of a Sync held back by its dependencies (pure but for the clock): `Ready`
/// `False` with `DependencyNotReady` (still reconciling) or `DependencyCycle` (stalled); the
/// rest (revisions, inventory, history, failures) unchanged.
fn blocked_status(prev: &SyncStatus, b: &Blocked, generation: Option<i64>) -> SyncStatus {
    let (reason, msg, stalled) = match b {
        Blocked::Waiting(m) => ("DependencyNotReady", m, false),
        Blocked::Cycle(m) => ("DependencyCycle", m, true),
    };
    let mut st = prev.clone();
    st.conditions = not_ready(
        &prev.conditions,
        reason,
        msg,
        stalled,
        if stalled { msg } else { "" },
        generation,
    );
    st.conditions.extend(healthy_condition(prev).cloned());
    st
}

/// `Ready: False` with `reason` and `message`, and `Reconciling`/`Stalled` as a stalled (or
/// retrying) Sync has them; `Stalled` carries `stalled_message`.
fn not_ready(
    prev: &[Condition],
    reason: &str,
    message: &str,
    stalled: bool,
    stalled_message: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    vec![
        condition(prev, "Ready", "False", reason, message, generation),
        condition(
            prev,
            "Reconciling",
            if stalled { "False" } else { "True" },
            reason,
            "",
            generation,
        ),
        condition(
            prev,
            "Stalled",
            if stalled { "True" } else { "False" },
            reason,
            stalled_message,
            generation,
        ),
    ]
}

/// Sets (or replaces) the `Healthy` condition from a health reading.
fn set_healthy(
    st: &mut SyncStatus,
    prev: &[Condition],
    health: &Result<Vec<(ObjectId, crate::health::Health)>, crate::apply::Error>,
    generation: Option<i64>,
) {
    let (status, reason, msg) = match health {
        Ok(all) => crate::health::condition_of(all),
        Err(e) => ("Unknown", "HealthCheckFailed", format!("reading health: {e}")),
    };
    st.conditions.retain(|c| c.type_ != "Healthy");
    st.conditions
        .push(condition(prev, "Healthy", status, reason, &msg, generation));
}

/// The inventory a status records, as [`Inventory`].
fn inventory_of(status: &SyncStatus) -> Inventory {
    Inventory {
        entries: status
            .inventory
            .iter()
            .map(|e| {
                let id = ObjectId {
                    api_version: e.api_version.clone(),
                    kind: e.kind.clone(),
                    namespace: e.namespace.clone(),
                    name: e.name.clone(),
                };
                (id.key(), (id, e.hash.clone()))
            })
            .collect(),
    }
}

/// The Event a sync deserves (pure): a new revision applied, drift corrected (`corrected` of
/// the objects a heal forced), or a failure (the error's message names files and objects, never
/// values); none for a poll or a heal that changed nothing.
fn event(
    result: &Result<sync::Outcome, Error>,
    healing: bool,
    corrected: usize,
) -> Option<kube::runtime::events::Event> {
    use kube::runtime::events::{Event, EventType};
    let (type_, reason, note, action) = match result {
        Ok(_) if healing && corrected == 0 => return None,
        Ok(_) if healing => (
            EventType::Normal,
            "DriftCorrected",
            format!("{corrected} object(s) put back"),
            "Heal",
        ),
        Ok(out) if out.skipped || (out.report.applied.is_empty() && out.pruned.is_empty()) => return None,
        Ok(out) => (
            EventType::Normal,
            "Synced",
            format!(
                "{}@sha1:{}: {} applied, {} unchanged, {} pruned",
                out.reference,
                out.commit,
                out.report.applied.len(),
                out.report.unchanged,
                out.pruned.len()
            ),
            "Sync",
        ),
        Err(e) => (EventType::Warning, reason(e), e.to_string(), "Sync"),
    };
    Some(Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    })
}

/// How many drifted objects a forced apply actually changed back (pure): written with a
/// resourceVersion other than the drifted one (a deleted object: written at all). A no-op apply
/// (a field left to another manager) is not a correction.
pub fn corrections(
    drifted: &std::collections::BTreeMap<String, Option<String>>,
    written: &std::collections::BTreeMap<String, String>,
) -> usize {
    drifted
        .iter()
        .filter(|(k, seen)| {
            written
                .get(*k)
                .is_some_and(|rv| seen.as_deref() != Some(rv.as_str()))
        })
        .count()
}

/// Records a sync's result in the metrics.
fn observe(
    m: &crate::metrics::Metrics,
    ns: &str,
    name: &str,
    result: &Result<sync::Outcome, Error>,
    took: Duration,
) {
    let labels = crate::metrics::SyncLabels {
        namespace: ns.to_owned(),
        name: name.to_owned(),
    };
    match result {
        Ok(out) => {
            m.sync_done(ns, name, true, took, out.report.applied.len(), out.pruned.len());
            m.ready.get_or_create(&labels).set(1);
        }
        Err(e) => {
            m.sync_done(ns, name, false, took, 0, 0);
            m.ready.get_or_create(&labels).set(0);
            let format = match e {
                Error::Sync(sync::Error::Render(crate::render::Error::Format(f))) => f.decryption_failure(),
                Error::Sync(sync::Error::Render(crate::render::Error::NoDecryption { .. })) => Some("sops"),
                _ => None,
            };
            if let Some(format) = format {
                m.decryption_failures
                    .get_or_create(&crate::metrics::FormatLabels { format })
                    .inc();
            }
        }
    }
}

/// Computes what a sync would change, for the agent's `/v1/diff` ([`crate::diff`]); any
/// replica can (it writes nothing).
#[derive(Clone)]
pub struct Differ {
    client: Client,
    cache: GitCache,
    keys: crate::sealing::Live,
    isolation: Option<String>,
}

impl std::fmt::Debug for Differ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Differ").finish_non_exhaustive()
    }
}

impl Differ {
    /// A differ with the agent's client, Git cache and sealing keys.
    pub fn new(client: Client, cache: GitCache, keys: crate::sealing::Live) -> Self {
        Self {
            client,
            cache,
            keys,
            isolation: None,
        }
    }

    /// Diffs as syncs run under `--tenant-isolation` in the agent's namespace `namespace`.
    pub fn with_tenant_isolation(mut self, namespace: &str) -> Self {
        self.isolation = Some(namespace.to_owned());
        self
    }

    /// What a sync of the Sync `namespace/name` would change now.
    pub async fn diff(&self, namespace: &str, name: &str) -> Result<crate::diff::Report, Error> {
        let api: Api<Sync> = Api::namespaced(self.client.clone(), namespace);
        let s = api
            .get_opt(name)
            .await
            .map_err(|e| Error::Status(format!("reading Sync {namespace}/{name}: {e}")))?
            .ok_or_else(|| Error::NotFound(format!("Sync {namespace}/{name} not found")))?;
        let (cfg, keys, last) =
            prepare(&s, &self.client, &self.keys, None, self.isolation.as_deref()).await?;
        let cfg = Config {
            skip_if_commit: None,
            ..cfg
        };
        let timeout = timeout_of(&s);
        tokio::time::timeout(
            timeout,
            crate::diff::diff(self.client.clone(), &self.cache, &cfg, &keys, &last),
        )
        .await
        .map_err(|_| Error::Unsupported(format!("the diff did not finish within {} s", timeout.as_secs())))?
        .map_err(Error::from)
    }
}

/// The bound on one sync of `s` (and on each of its health waits): `spec.timeout`, 5 minutes
/// by default.
fn timeout_of(s: &Sync) -> Duration {
    s.spec
        .timeout
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(300))
}

/// The namespace a Sync is confined to under tenant isolation (`isolation`: the agent's
/// namespace, when it is on): none for Syncs in the agent's namespace, their own for the others,
/// whose `spec.targetNamespace` may then only name it (pure).
pub fn confinement(s: &Sync, isolation: Option<&str>) -> Result<Option<String>, Error> {
    let ns = s.namespace().unwrap_or_default();
    match isolation {
        Some(agent) if agent != ns => match &s.spec.target_namespace {
            Some(t) if *t != ns => Err(Error::Unsupported(format!(
                "spec.targetNamespace {t:?}: a Sync outside the agent's namespace ({agent}) may only apply into its own namespace {ns:?} (tenant isolation)"
            ))),
            _ => Ok(Some(ns)),
        },
        _ => Ok(None),
    }
}

/// What a sync of `s` needs: its configuration (no objects forced, no interrupt; confined to
/// its namespace when `isolation`, the agent's namespace, is given and differs), its decryption
/// keys (read from the Secret it names, and the agent's sealing keys) and its last inventory.
pub async fn prepare(
    s: &Sync,
    client: &Client,
    sealing: &crate::sealing::Live,
    external: Option<crate::external::Engine>,
    isolation: Option<&str>,
) -> Result<(Config, Keys, Inventory), Error> {
    use crate::source::Reference;
    let tenant = confinement(s, isolation)?;
    let ns = s.namespace().unwrap_or_default();
    let status = s.status.clone().unwrap_or_default();
    let reference = match &s.spec.source.reference {
        None => Reference::Branch("main".into()),
        Some(r) => match (&r.branch, &r.tag, &r.semver, &r.commit) {
            (Some(b), None, None, None) => Reference::Branch(b.clone()),
            (None, Some(t), None, None) => Reference::Tag(t.clone()),
            (None, None, Some(v), None) => Reference::Semver(v.clone()),
            (None, None, None, Some(c)) => Reference::Commit(c.clone()),
            (None, None, None, None) => Reference::Branch("main".into()),
            _ => {
                return Err(Error::Unsupported(
                    "spec.source.ref: set exactly one of branch, tag, semver, commit".into(),
                ));
            }
        },
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let (credentials, ca_pem) = match &s.spec.source.secret_ref {
        None => (crate::source::Credentials::None, None),
        Some(r) => {
            let secret = secrets
                .get(&r.name)
                .await
                .map_err(|e| Error::Keys(format!("spec.source.secretRef: secret {ns}/{}: {e}", r.name)))?;
            credentials_from(&format!("{ns}/{}", r.name), secret.data.unwrap_or_default())?
        }
    };
    let mut keys = Keys::default();
    if let Some(sops) = s.spec.decryption.as_ref().and_then(|d| d.sops.as_ref()) {
        let secret = secrets
            .get(&sops.secret_ref.name)
            .await
            .map_err(|e| Error::Keys(format!("secret {ns}/{}: {e}", sops.secret_ref.name)))?;
        let mut data = secret.data.unwrap_or_default();
        let entries: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())).collect();
        let ids = crate::keys::identities_from_secret(&format!("{ns}/{}", sops.secret_ref.name), entries);
        data.values_mut()
            .for_each(|v| zeroize::Zeroize::zeroize(&mut v.0));
        keys.sops = Some(ids.map_err(|e| Error::Keys(e.to_string()))?);
    }
    if s.spec.decryption.as_ref().and_then(|d| d.sealed_secrets) != Some(false) {
        let ring = sealing.borrow().ring.clone();
        if !ring.is_empty() {
            keys.sealed = Some(ring);
        }
    }
    let cfg = Config {
        url: s.spec.source.url.clone(),
        reference,
        path: s.spec.source.path.clone().unwrap_or_default(),
        owner: format!("{ns}.{}", s.name_any()),
        target_namespace: s.spec.target_namespace.clone(),
        create_namespace: s.spec.create_namespace == Some(true),
        prune: s.spec.prune != Some(false),
        prune_budget: f64::from(s.spec.prune_budget_percent.unwrap_or(50)) / 100.0,
        allow_mass_deletion: s.spec.allow_mass_deletion == Some(true),
        credentials,
        ca_pem,
        skip_if_commit: unchanged_commit(s, &status),
        external,
        wait: (s.spec.wait == Some(true)).then(|| timeout_of(s)),
        ignore: s.spec.ignore.clone(),
        force: Default::default(),
        interrupt: None,
        tenant,
    };
    Ok((cfg, keys, inventory_of(&status)))
}

/// One sync of `s`. While it runs (waiting for health), the remote is polled at `interval`, as
/// if the Sync were idle, and a new commit cuts the wait short through `cut`.
async fn run_sync(
    s: &Sync,
    ctx: &Context,
    force: std::collections::BTreeSet<String>,
    interval: Duration,
    cut: tokio::sync::watch::Sender<Option<String>>,
    interrupt: crate::apply::Interrupt,
    attempted: &mut Option<String>,
) -> Result<sync::Outcome, Error> {
    let isolation = ctx.tenant_isolation.then_some(ctx.namespace.as_str());
    let (cfg, keys, last) = prepare(s, &ctx.client, &ctx.keys, ctx.external.clone(), isolation).await?;
    let cfg = Config {
        force,
        interrupt: Some(interrupt),
        ..cfg
    };
    let timeout = timeout_of(s);
    let work = async {
        let started = std::time::Instant::now();
        let rev = sync::fetch(&ctx.cache, &cfg).await?;
        let commit = rev.commit.clone();
        *attempted = Some(format!("{}@sha1:{commit}", rev.reference));
        let applying = sync::sync_revision(ctx.client.clone(), &cfg, &keys, &last, rev, started);
        let poll = async {
            loop {
                tokio::time::sleep(interval).await;
                match sync::fetch(&ctx.cache, &cfg).await {
                    Ok(r) if r.commit != commit => {
                        info!(commit = %r.commit, "a new revision while waiting");
                        cut.send_replace(Some(format!("a new revision {}@sha1:{}", r.reference, r.commit)));
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
        .map_err(|_| Error::Unsupported(format!("the sync did not finish within {} s", timeout.as_secs())))?
        .map_err(Error::from)
}

/// The commit to skip: the last applied one, when the last attempt succeeded with this same
/// spec and no reconcile was requested since. (Drift between commits is the watches' job.)
fn unchanged_commit(s: &Sync, st: &SyncStatus) -> Option<String> {
    let last = st.history.first()?;
    let same = last.result == "Succeeded"
        && st.observed_generation == s.metadata.generation
        && s.annotations().get(RECONCILE_ANNOTATION) == st.last_handled_reconcile_at.as_ref();
    let rev = st.last_applied_revision.as_deref()?;
    same.then(|| rev.rsplit_once("sha1:").map(|(_, c)| c.to_owned()))?
}

/// Repository credentials from a Secret's entries (Flux's keys): `username` + `password`, or
/// `bearerToken`; and `ca.crt`, a private CA. An entry that is not UTF-8 is named, never shown.
pub fn credentials_from(
    secret: &str,
    mut data: std::collections::BTreeMap<String, k8s_openapi::ByteString>,
) -> Result<(crate::source::Credentials, Option<Vec<u8>>), Error> {
    let ca = data.remove("ca.crt").map(|b| b.0);
    use zeroize::Zeroizing;
    let mut take = |k: &str| -> Result<Option<Zeroizing<String>>, Error> {
        match data.remove(k) {
            None => Ok(None),
            Some(mut b) => {
                let s = String::from_utf8(std::mem::take(&mut b.0)).map_err(|e| {
                    let mut bytes = e.into_bytes();
                    zeroize::Zeroize::zeroize(&mut bytes);
                    Error::Unsupported(format!(
                        "spec.source.secretRef: secret {secret}: entry {k} is not UTF-8 text"
                    ))
                })?;
                Ok(Some(Zeroizing::new(s)))
            }
        }
    };
    let username = take("username")?;
    let password = take("password")?;
    let bearer = take("bearerToken")?;
    let identity = data
        .remove("identity")
        .map(|mut b| Zeroizing::new(std::mem::take(&mut b.0)));
    let known_hosts = data
        .remove("known_hosts")
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    data.values_mut()
        .for_each(|v| zeroize::Zeroize::zeroize(&mut v.0));
    let creds = match (username, password, bearer, identity) {
        (None, password, None, Some(identity)) => match known_hosts {
            Some(known_hosts) => Ok(crate::source::Credentials::Ssh {
                identity,
                passphrase: password,
                known_hosts,
            }),
            None => Err(Error::Unsupported(format!(
                "spec.source.secretRef: secret {secret}: an ssh identity needs a known_hosts entry (host keys are always verified)"
            ))),
        },
        (Some(u), Some(p), None, None) => Ok(crate::source::Credentials::Basic {
            username: u.to_string(),
            password: p,
        }),
        (None, None, Some(t), None) => Ok(crate::source::Credentials::Bearer(t)),
        (None, None, None, None) if ca.is_some() => Ok(crate::source::Credentials::None),
        _ => Err(Error::Unsupported(format!(
            "spec.source.secretRef: secret {secret}: expected username and password, or bearerToken (and optionally ca.crt), or identity and known_hosts (and optionally password)"
        ))),
    }?;
    Ok((creds, ca))
}

fn now() -> String {
    lockstep_formats::sops::now_rfc3339()
}

/// The reason of a failure, for conditions and history (bounded set).
fn reason(e: &Error) -> &'static str {
    match e {
        Error::Unsupported(_) => "Unsupported",
        Error::Keys(_) => "DecryptionKeysFailed",
        Error::Sync(sync::Error::Source(_) | sync::Error::Task(_)) => "SourceFailed",
        Error::Sync(sync::Error::Render(_)) => "RenderFailed",
        Error::Sync(sync::Error::Apply(crate::apply::Error::Canceled { .. })) => "HealthCheckCanceled",
        Error::Sync(sync::Error::Apply(crate::apply::Error::Unhealthy { .. })) => "HealthCheckFailed",
        Error::Sync(sync::Error::Apply(_)) => "ApplyFailed",
        Error::Sync(sync::Error::Budget(_)) => "PruneBudgetExceeded",
        Error::Status(_) => "StatusFailed",
        Error::NotFound(_) => "NotFound",
    }
}

fn condition(
    prev: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let same = prev
        .iter()
        .find(|c| c.type_ == type_)
        .filter(|c| c.status == status);
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: same.map_or_else(now, |c| c.last_transition_time.clone()),
        observed_generation: generation,
    }
}

/// Adds an attempt to the history, newest first. A repeat of the newest entry (same revision,
/// same result: a poll that found nothing new) only moves its time and keeps its counts of the
/// attempt that did the work, so the history lists distinct events.
fn record(history: &mut Vec<HistoryEntry>, e: HistoryEntry) {
    match history.first_mut() {
        Some(h) if h.revision == e.revision && h.result == e.result => h.time = e.time,
        _ => history.insert(0, e),
    }
}

/// The status after a sync (pure but for the clock).
fn next_status(
    s: &Sync,
    prev: SyncStatus,
    result: &Result<sync::Outcome, Error>,
    health: Option<&Result<Vec<(ObjectId, crate::health::Health)>, crate::apply::Error>>,
    attempted: Option<String>,
) -> SyncStatus {
    let generation = s.metadata.generation;
    let mut st = prev.clone();
    st.observed_generation = generation;
    st.last_handled_reconcile_at = s.annotations().get(RECONCILE_ANNOTATION).cloned();
    match result {
        Ok(out) => {
            st.failures = 0;
            let rev = format!("{}@sha1:{}", out.reference, out.commit);
            st.last_applied_revision = Some(rev.clone());
            st.last_attempted_revision = Some(rev.clone());
            st.inventory = out
                .inventory
                .entries
                .values()
                .map(|(id, h)| InventoryEntry {
                    api_version: id.api_version.clone(),
                    kind: id.kind.clone(),
                    namespace: id.namespace.clone(),
                    name: id.name.clone(),
                    hash: h.clone(),
                })
                .collect();
            let msg = format!("Applied revision {rev}");
            st.conditions = vec![
                condition(&prev.conditions, "Ready", "True", "Succeeded", &msg, generation),
                condition(
                    &prev.conditions,
                    "Reconciling",
                    "False",
                    "Succeeded",
                    "",
                    generation,
                ),
                condition(&prev.conditions, "Stalled", "False", "Succeeded", "", generation),
            ];
            if let Some(h) = health {
                set_healthy(&mut st, &prev.conditions, h, generation);
            }
            record(
                &mut st.history,
                HistoryEntry {
                    revision: rev,
                    time: now(),
                    result: "Succeeded".into(),
                    applied: out.report.applied.len(),
                    pruned: out.pruned.len(),
                },
            );
        }
        Err(e) => {
            let r = reason(e);
            let msg = e.to_string();
            if attempted.is_some() {
                st.last_attempted_revision = attempted;
            }
            // A wait cut short for a newer revision is not a failure to back off from.
            if r != "HealthCheckCanceled" {
                st.failures = prev.failures.saturating_add(1);
            }
            // Errors that a retry cannot fix stall the Sync until Git or the spec changes.
            let stalled = matches!(r, "RenderFailed" | "Unsupported" | "PruneBudgetExceeded");
            st.conditions = not_ready(&prev.conditions, r, &msg, stalled, &msg, generation);
            // The objects' health: what a failed wait found, or as it was.
            if r == "HealthCheckFailed" {
                st.conditions.push(condition(
                    &prev.conditions,
                    "Healthy",
                    "False",
                    r,
                    &msg,
                    generation,
                ));
            } else {
                st.conditions.extend(healthy_condition(&prev).cloned());
            }
            record(
                &mut st.history,
                HistoryEntry {
                    revision: st.last_attempted_revision.clone().unwrap_or_default(),
                    time: now(),
                    result: r.into(),
                    applied: 0,
                    pruned: 0,
                },
            );
        }
    }
    st.history.truncate(HISTORY);
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_isolation_confines_syncs_outside_the_agents_namespace() {
        let sync = |ns: &str, target: Option<&str>| {
            let mut s = Sync::new("apps", crate::api::SyncSpec::default());
            s.metadata.namespace = Some(ns.into());
            s.spec.target_namespace = target.map(str::to_owned);
            s
        };
        // Off: nobody is confined.
        assert_eq!(confinement(&sync("team-a", Some("prod")), None).unwrap(), None);
        // On: the agent's own Syncs are not; the others are, to their namespace.
        let on = Some("lockstep-system");
        assert_eq!(
            confinement(&sync("lockstep-system", Some("prod")), on).unwrap(),
            None
        );
        assert_eq!(
            confinement(&sync("team-a", None), on).unwrap().as_deref(),
            Some("team-a")
        );
        assert_eq!(
            confinement(&sync("team-a", Some("team-a")), on)
                .unwrap()
                .as_deref(),
            Some("team-a")
        );
        let err = confinement(&sync("team-a", Some("prod")), on)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.targetNamespace \"prod\"") && err.contains("own namespace \"team-a\""),
            "{err}"
        );
    }

    #[test]
    fn a_sync_is_due_on_spec_change_request_interval_or_retry() {
        use crate::api::{HistoryEntry, SyncStatus};
        let at = |t: &str, result: &str| HistoryEntry {
            revision: String::new(),
            time: t.into(),
            result: result.into(),
            applied: 0,
            pruned: 0,
        };
        let t0 = time::macros::datetime!(2026-01-01 00:00:00 UTC).unix_timestamp();
        let mut s = Sync::new("x", crate::api::SyncSpec::default());
        s.metadata.generation = Some(2);
        assert_eq!(due(&s, t0, Duration::from_secs(60)), None, "never synced");
        s.status = Some(SyncStatus {
            observed_generation: Some(2),
            history: vec![at("2026-01-01T00:00:00Z", "Succeeded")],
            ..SyncStatus::default()
        });
        assert_eq!(
            due(&s, t0 + 10, Duration::from_secs(60)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(due(&s, t0 + 60, Duration::from_secs(60)), None, "interval passed");
        s.metadata.generation = Some(3);
        assert_eq!(due(&s, t0 + 10, Duration::from_secs(60)), None, "spec changed");
        s.metadata.generation = Some(2);
        s.metadata.annotations = Some([(RECONCILE_ANNOTATION.to_owned(), "now".to_owned())].into());
        assert_eq!(
            due(&s, t0 + 10, Duration::from_secs(60)),
            None,
            "reconcile requested"
        );
        if let Some(st) = s.status.as_mut() {
            st.last_handled_reconcile_at = Some("now".into());
            st.history = vec![at("2026-01-01T00:00:00Z", "SourceFailed")];
        }
        s.spec.retry = Some(crate::api::Retry {
            duration: Some("10s".into()),
            factor: Some(2),
            max_duration: Some("1m".into()),
        });
        if let Some(st) = s.status.as_mut() {
            st.failures = 3;
        }
        // The third failure in a row: 10 s × 2² = 40 s ± 10 %, 10 s of it gone.
        let wait = due(&s, t0 + 10, Duration::from_secs(600)).unwrap();
        assert!((26..=34).contains(&wait.as_secs()), "retry after {wait:?}");
    }

    #[test]
    fn retries_back_off_with_a_cap_and_a_stable_jitter() {
        let mut s = Sync::new("x", crate::api::SyncSpec::default());
        let secs = |s: &Sync, n| retry_delay(s, n).as_secs_f64();
        for (n, base) in [(1, 5.0), (2, 10.0), (3, 20.0), (7, 300.0), (40, 300.0)] {
            let d = secs(&s, n);
            assert!((base * 0.9..=base * 1.1).contains(&d), "{n}: {d}");
            assert!((d - secs(&s, n)).abs() < f64::EPSILON, "stable");
        }
        s.spec.retry = Some(crate::api::Retry {
            duration: Some("1s".into()),
            factor: Some(3),
            max_duration: Some("10s".into()),
        });
        assert!((2.7..=3.3).contains(&secs(&s, 2)));
        assert!((9.0..=11.0).contains(&secs(&s, 5)));
        let other = Sync::new("y", crate::api::SyncSpec::default());
        let spread: std::collections::BTreeSet<u128> = (1..=5)
            .map(|n| {
                retry_delay(&other, n).as_millis() * 1000
                    / retry_delay(&Sync::new("x", Default::default()), n).as_millis()
            })
            .collect();
        assert!(spread.len() > 1, "different Syncs do not retry in step");
    }

    fn with_deps(ns: &str, name: &str, deps: &[(&str, Option<&str>)]) -> Arc<Sync> {
        let mut s = Sync::new(name, crate::api::SyncSpec::default());
        s.metadata.namespace = Some(ns.into());
        s.metadata.generation = Some(1);
        s.spec.depends_on = deps
            .iter()
            .map(|(n, m)| crate::api::DependencyRef {
                name: (*n).into(),
                namespace: m.map(Into::into),
            })
            .collect();
        Arc::new(s)
    }

    fn with_conditions(s: &Arc<Sync>, observed: i64, conds: &[(&str, &str)]) -> Arc<Sync> {
        let mut s = (**s).clone();
        s.status = Some(SyncStatus {
            observed_generation: Some(observed),
            conditions: conds
                .iter()
                .map(|(t, st)| Condition {
                    type_: (*t).into(),
                    status: (*st).into(),
                    reason: "R".into(),
                    message: "m".into(),
                    ..Condition::default()
                })
                .collect(),
            ..SyncStatus::default()
        });
        Arc::new(s)
    }

    #[test]
    fn dependencies_gate_a_sync_until_ready_and_healthy_and_cycles_stall() {
        let app = with_deps("apps", "app", &[("infra", Some("ops")), ("db", None)]);
        let mut all: Vec<Arc<Sync>> = vec![app.clone()];
        let lookup_in = |all: &Vec<Arc<Sync>>| {
            let all = all.clone();
            move |ns: &str, name: &str| {
                all.iter()
                    .find(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == name)
                    .cloned()
            }
        };
        let b = blocked(&app, &lookup_in(&all));
        assert_eq!(
            b,
            Some(Blocked::Waiting("dependency ops/infra does not exist".into()))
        );
        let infra = with_deps("ops", "infra", &[]);
        all.push(infra.clone());
        let Some(Blocked::Waiting(m)) = blocked(&app, &lookup_in(&all)) else {
            panic!()
        };
        assert!(m.contains("has not been reconciled yet"), "{m}");
        all[1] = with_conditions(&infra, 0, &[("Ready", "True")]);
        let Some(Blocked::Waiting(m)) = blocked(&app, &lookup_in(&all)) else {
            panic!()
        };
        assert!(m.contains("generation 1"), "{m}");
        all[1] = with_conditions(&infra, 1, &[("Ready", "True"), ("Healthy", "Unknown")]);
        let Some(Blocked::Waiting(m)) = blocked(&app, &lookup_in(&all)) else {
            panic!()
        };
        assert!(m.contains("is not healthy"), "{m}");
        all[1] = with_conditions(&infra, 1, &[("Ready", "True"), ("Healthy", "True")]);
        let Some(Blocked::Waiting(m)) = blocked(&app, &lookup_in(&all)) else {
            panic!()
        };
        assert_eq!(m, "dependency apps/db does not exist");
        all.push(with_conditions(
            &with_deps("apps", "db", &[]),
            1,
            &[("Ready", "True")],
        ));
        assert_eq!(blocked(&app, &lookup_in(&all)), None);
        // Who is triggered when infra changes.
        let deps = dependents(&all, &infra);
        assert_eq!(deps, vec![ObjectRef::from_obj(&*app)]);
        assert!(dependents(&all, &app).is_empty());
        // A cycle through app: app → db → app.
        all[2] = with_conditions(
            &with_deps("apps", "db", &[("app", None)]),
            1,
            &[("Ready", "True")],
        );
        let Some(Blocked::Cycle(m)) = blocked(&app, &lookup_in(&all)) else {
            panic!()
        };
        assert_eq!(
            m,
            "spec.dependsOn: the dependencies form a cycle: apps/app → apps/db → apps/app"
        );
    }

    #[test]
    fn a_canceled_wait_or_a_dependency_wait_is_due_at_once() {
        let t0 = time::macros::datetime!(2026-01-01 00:00:00 UTC).unix_timestamp();
        let mut s = Sync::new("x", crate::api::SyncSpec::default());
        s.metadata.generation = Some(1);
        for reason in ["HealthCheckCanceled", "DependencyNotReady", "DependencyCycle"] {
            s.status = Some(SyncStatus {
                observed_generation: Some(1),
                history: vec![HistoryEntry {
                    time: "2026-01-01T00:00:00Z".into(),
                    result: reason.into(),
                    ..HistoryEntry::default()
                }],
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: "False".into(),
                    reason: reason.into(),
                    ..Condition::default()
                }],
                ..SyncStatus::default()
            });
            assert_eq!(due(&s, t0 + 1, Duration::from_secs(600)), None, "{reason}");
        }
    }
}
