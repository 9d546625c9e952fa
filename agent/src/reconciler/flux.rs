//! Flux's objects as they are (`--accept=flux`): each `Kustomization` is reconciled through a
//! `Sync` of the same name and namespace that this controller writes from it and its
//! `GitRepository` ([`translate`], pure) and owns (deleted with it); the Sync controller does
//! the rest (fetch, build, decrypt, substitute, apply, prune, heal), and this controller writes
//! the Sync's outcome back into the Kustomization's and the GitRepository's status in Flux's
//! shape, so that `flux get`, `kubectl wait --for=condition=ready` and dashboards keep working.
//! `flux reconcile` (the `reconcile.fluxcd.io/requestedAt` annotation, on either object) asks
//! the Sync for a sync now.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use super::{Gate, Scope};
use crate::api::flux::{FLUX_RECONCILE_ANNOTATION, GitRepository, Kustomization, translate};
use crate::api::{RECONCILE_ANNOTATION, Sync};
use crate::errors::kube_message;

/// The field manager of the Syncs and statuses this controller writes.
pub const FIELD_MANAGER: &str = "lockstep-flux";
/// `lockstep.dev/front-end: flux` on the Syncs it writes.
pub const FRONT_END_LABEL: &str = "lockstep.dev/front-end";
/// `lockstep.dev/flux-source: <namespace>.<name>` of the GitRepository a Sync reads.
pub const SOURCE_LABEL: &str = "lockstep.dev/flux-source";

/// Why a reconcile of a Kustomization failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what}: {}", kube_message(.source))]
    Kube {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
}

/// Opens `gate` once `api`'s objects are listed, on a watch of its own: a controller waits on
/// its own store, and kube-runtime wakes only one task waiting for a store.
pub(super) fn open_when_listed<K>(api: Api<K>, gate: Gate)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
        while let Some(e) = events.next().await {
            if matches!(e, Ok(watcher::Event::InitDone)) {
                gate.open();
                return;
            }
        }
    });
}

/// Whether `existing` (the Sync of `owner`'s name) is another's: then it is left alone.
pub(super) fn foreign<K: Resource>(existing: Option<&Sync>, owner: &K) -> bool {
    existing.is_some_and(|s| {
        !s.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == owner.meta().uid.as_ref())
    })
}

/// Writes (server-side apply, as `manager`) the Sync of `owner`'s name and namespace with
/// `spec`, owned by it, labelled and annotated so; returns it as the API server stored it.
pub(super) async fn apply_owned_sync<K>(
    syncs: &Api<Sync>,
    owner: &K,
    manager: &str,
    labels: serde_json::Value,
    annotations: BTreeMap<String, String>,
    spec: &crate::api::SyncSpec,
) -> Result<Sync, Error>
where
    K: Resource<DynamicType = ()>,
{
    let name = owner.meta().name.clone().unwrap_or_default();
    let desired = serde_json::json!({
        "apiVersion": "lockstep.dev/v1alpha1",
        "kind": "Sync",
        "metadata": {
            "name": name,
            "namespace": owner.meta().namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": owner.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
        },
        "spec": spec,
    });
    syncs
        .patch(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(kube_err("applying the Sync"))
}

/// An [`Error::Kube`] saying what was being done.
pub(super) fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube {
        what,
        source: Box::new(source),
    }
}

struct Ctx {
    client: Client,
    /// The Syncs this controller wrote.
    syncs: kube::runtime::reflector::Store<Sync>,
}

/// Reconciles Kustomizations (and the GitRepositories they read) in `scope` until `shutdown`;
/// `ready` opens once they are listed.
pub async fn run(client: Client, scope: Scope, shutdown: CancellationToken, ready: Option<Gate>) {
    let kustomizations: Api<Kustomization> = scope.api(&client);
    let repos: Api<GitRepository> = scope.api(&client);
    let syncs: Api<Sync> = scope.api(&client);
    let controller = Controller::new(kustomizations, watcher::Config::default());
    let store = controller.store();
    if let Some(g) = ready {
        open_when_listed(scope.api::<Kustomization>(&client), g);
    }
    let users = store;
    // The Syncs this controller writes, in a store of its own: a GitRepository's status is
    // read from them without a list per reconcile.
    let (sync_store, writer) = kube::runtime::reflector::store::<Sync>();
    let written = kube::runtime::reflector(
        writer,
        watcher::watcher(
            syncs,
            watcher::Config::default().labels(&format!("{FRONT_END_LABEL}=flux")),
        ),
    )
    .default_backoff()
    .touched_objects();
    controller
        .owns_stream(written)
        .watches(repos, watcher::Config::default(), move |repo: GitRepository| {
            let (ns, name) = (repo.namespace().unwrap_or_default(), repo.name_any());
            users
                .state()
                .into_iter()
                .filter(|k| {
                    k.spec.source_ref.kind == "GitRepository"
                        && k.spec.source_ref.name == name
                        && k.spec
                            .source_ref
                            .namespace
                            .clone()
                            .or_else(|| k.namespace())
                            .as_deref()
                            == Some(ns.as_str())
                })
                .map(|k| ObjectRef::from_obj(&*k))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            reconcile,
            error_policy,
            Arc::new(Ctx {
                client,
                syncs: sync_store,
            }),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "reconciling a Flux Kustomization failed");
            }
        })
        .await;
}

fn error_policy(_: Arc<Kustomization>, _: &Error, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(k: Arc<Kustomization>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let span = info_span!("flux_kustomization", namespace = %k.namespace().unwrap_or_default(), name = %k.name_any());
    reconcile_one(&k, &ctx).instrument(span).await
}

async fn reconcile_one(k: &Kustomization, ctx: &Ctx) -> Result<Action, Error> {
    let (ns, name) = (k.namespace().unwrap_or_default(), k.name_any());
    let now = lockstep_formats::sops::now_rfc3339();
    let kustomizations: Api<Kustomization> = Api::namespaced(ctx.client.clone(), &ns);
    let syncs: Api<Sync> = Api::namespaced(ctx.client.clone(), &ns);
    let source_ns = k.spec.source_ref.namespace.clone().unwrap_or_else(|| ns.clone());
    let repos: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &source_ns);
    if k.spec.source_ref.kind != "GitRepository" {
        let e = translate::TranslateError::SourceKind(k.spec.source_ref.kind.clone());
        let st = translate::kustomization_status(k, None, Some(&e.to_string()), &[], &now);
        write_status(&kustomizations, k, st).await?;
        return Ok(Action::await_change());
    }
    let Some(repo) = repos
        .get_opt(&k.spec.source_ref.name)
        .await
        .map_err(kube_err("reading the GitRepository"))?
    else {
        let msg = format!("GitRepository {source_ns}/{} not found", k.spec.source_ref.name);
        let st = translate::kustomization_status(k, None, Some(&msg), &[], &now);
        write_status(&kustomizations, k, st).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let t = match translate::translate(k, &repo) {
        Ok(t) => t,
        Err(e) => {
            let st = translate::kustomization_status(k, None, Some(&e.to_string()), &[], &now);
            write_status(&kustomizations, k, st).await?;
            return Ok(Action::await_change());
        }
    };
    let existing = syncs.get_opt(&name).await.map_err(kube_err("reading the Sync"))?;
    if foreign(existing.as_ref(), k) {
        let msg = format!("a Sync {ns}/{name} exists and does not belong to this Kustomization");
        let st = translate::kustomization_status(k, None, Some(&msg), &t.unsupported, &now);
        write_status(&kustomizations, k, st).await?;
        return Ok(Action::await_change());
    }
    let requested: Vec<String> = [k.annotations(), repo.annotations()]
        .iter()
        .filter_map(|a| a.get(FLUX_RECONCILE_ANNOTATION).cloned())
        .collect();
    let mut annotations = BTreeMap::new();
    if !requested.is_empty() {
        annotations.insert(RECONCILE_ANNOTATION.to_owned(), requested.join(" "));
    }
    let source = format!("{source_ns}.{}", repo.name_any());
    let labels = serde_json::json!({ FRONT_END_LABEL: "flux", SOURCE_LABEL: source });
    let sync = apply_owned_sync(&syncs, k, FIELD_MANAGER, labels, annotations, &t.spec).await?;
    let st = translate::kustomization_status(k, Some(&sync), None, &t.unsupported, &now);
    write_status(&kustomizations, k, st).await?;
    // The GitRepository's status, from every Sync that reads it.
    let consumers = ctx.syncs.state();
    let refs: Vec<&Sync> = consumers
        .iter()
        .filter(|s| s.labels().get(SOURCE_LABEL) == Some(&source))
        .map(|s| &**s)
        .collect();
    let gst = translate::git_repository_status(&repo, &refs, &now);
    if repo.status.as_ref() != Some(&gst) {
        repos
            .patch_status(
                &repo.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": gst })),
            )
            .await
            .map_err(kube_err("writing the GitRepository's status"))?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn write_status(
    api: &Api<Kustomization>,
    k: &Kustomization,
    st: crate::api::flux::KustomizationStatus,
) -> Result<(), Error> {
    if k.status.as_ref() == Some(&st) {
        return Ok(());
    }
    api.patch_status(
        &k.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": st })),
    )
    .await
    .map(|_| ())
    .map_err(kube_err("writing the Kustomization's status"))
}
