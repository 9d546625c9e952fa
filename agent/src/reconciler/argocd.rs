//! Argo CD's Applications as they are (`--accept=argocd`): each is reconciled through a `Sync`
//! of the same name and namespace that this controller writes from it
//! ([`crate::api::argocd::translate`], pure) and owns; the Sync controller does the rest, and
//! this controller writes the outcome back in Argo CD's shape (`status.sync.status`,
//! `status.health.status`, `status.operationState`, `status.resources`), so that `kubectl get
//! applications` and dashboards keep working. An Application in Git whose Sync applies other
//! Applications (app of apps) makes their Syncs in turn. Repository credentials come from the
//! Secrets labelled `argocd.argoproj.io/secret-type: repository` of the Application's namespace.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use super::flux::{Error, FRONT_END_LABEL, apply_owned_sync, foreign, kube_err, open_when_listed};
use super::{Gate, Scope};
use crate::api::argocd::{Application, REPOSITORY_SECRET_LABEL, translate};
use crate::api::{RECONCILE_ANNOTATION, Sync};

/// The field manager of the Syncs and statuses this controller writes.
pub const FIELD_MANAGER: &str = "lockstep-argocd";
/// Argo CD's annotation asking for a refresh (`argocd app get --refresh`).
pub const REFRESH_ANNOTATION: &str = "argocd.argoproj.io/refresh";

struct Ctx {
    client: Client,
}

/// Reconciles the Applications in `scope` until `shutdown`; `ready` opens once they are listed.
pub async fn run(client: Client, scope: Scope, shutdown: CancellationToken, ready: Option<Gate>) {
    let apps: Api<Application> = scope.api(&client);
    let syncs: Api<Sync> = scope.api(&client);
    if let Some(g) = ready {
        open_when_listed(apps.clone(), g);
    }
    let written = watcher::watcher(
        syncs,
        watcher::Config::default().labels(&format!("{FRONT_END_LABEL}=argocd")),
    )
    .default_backoff()
    .touched_objects();
    Controller::new(apps, watcher::Config::default())
        .owns_stream(written)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, Arc::new(Ctx { client }))
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "reconciling an Argo CD Application failed");
            }
        })
        .await;
}

fn error_policy(_: Arc<Application>, _: &Error, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(app: Arc<Application>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let span = info_span!("argocd_application", namespace = %app.namespace().unwrap_or_default(), name = %app.name_any());
    reconcile_one(&app, &ctx).instrument(span).await
}

/// The repository Secret of `ns` whose `url` is `repo_url` (a trailing `/` or `.git` aside).
async fn credentials(client: &Client, ns: &str, repo_url: &str) -> Result<Option<String>, Error> {
    let norm = |u: &str| u.trim_end_matches('/').trim_end_matches(".git").to_owned();
    let (k, v) = REPOSITORY_SECRET_LABEL;
    let secrets = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{k}={v}")))
        .await
        .map_err(kube_err("listing repository Secrets"))?;
    let mut found = None;
    for mut s in secrets.items {
        let matches = s
            .data
            .as_ref()
            .and_then(|d| d.get("url"))
            .is_some_and(|u| norm(&String::from_utf8_lossy(&u.0)) == norm(repo_url));
        // Only `url` is read here; every value is wiped.
        for v in s.data.iter_mut().flat_map(|d| d.values_mut()) {
            zeroize::Zeroize::zeroize(&mut v.0);
        }
        if matches && found.is_none() {
            found = Some(s.name_any());
        }
    }
    Ok(found)
}

async fn reconcile_one(app: &Application, ctx: &Ctx) -> Result<Action, Error> {
    let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
    let now = lockstep_formats::sops::now_rfc3339();
    let apps: Api<Application> = Api::namespaced(ctx.client.clone(), &ns);
    let syncs: Api<Sync> = Api::namespaced(ctx.client.clone(), &ns);
    let creds = match &app.spec.source {
        Some(src) => credentials(&ctx.client, &ns, &src.repo_url).await?,
        None => None,
    };
    let t = match translate::translate(app, creds.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            write_status(
                &apps,
                app,
                translate::application_status(app, None, Some(&e.to_string()), &[], &now),
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    let existing = syncs.get_opt(&name).await.map_err(kube_err("reading the Sync"))?;
    if foreign(existing.as_ref(), app) {
        let msg = format!("a Sync {ns}/{name} exists and does not belong to this Application");
        let st = translate::application_status(app, None, Some(&msg), &t.unsupported, &now);
        write_status(&apps, app, st).await?;
        return Ok(Action::await_change());
    }
    // A refresh (`argocd app get --refresh`) asks the Sync for a sync now, and is removed once
    // handled, as Argo CD removes it; the Sync keeps the last request's time.
    let refresh = app.annotations().contains_key(REFRESH_ANNOTATION);
    let mut annotations = std::collections::BTreeMap::new();
    let last = existing
        .as_ref()
        .and_then(|s| s.annotations().get(RECONCILE_ANNOTATION).cloned());
    if let Some(v) = if refresh { Some(now.clone()) } else { last } {
        annotations.insert(RECONCILE_ANNOTATION.to_owned(), v);
    }
    let labels = serde_json::json!({ FRONT_END_LABEL: "argocd" });
    let sync = apply_owned_sync(&syncs, app, FIELD_MANAGER, labels, annotations, &t.spec).await?;
    if refresh {
        let patch = serde_json::json!({ "metadata": { "annotations": { REFRESH_ANNOTATION: null } } });
        apps.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err("removing the refresh annotation"))?;
    }
    let st = translate::application_status(app, Some(&sync), None, &t.unsupported, &now);
    write_status(&apps, app, st).await?;
    Ok(Action::requeue(Duration::from_secs(180)))
}

async fn write_status(
    api: &Api<Application>,
    app: &Application,
    mut st: crate::api::argocd::ApplicationStatus,
) -> Result<(), Error> {
    // `reconciledAt` alone changing is not a change worth a write.
    if let Some(old) = &app.status {
        let mut same = st.clone();
        same.reconciled_at.clone_from(&old.reconciled_at);
        for (c, o) in same.conditions.iter_mut().zip(&old.conditions) {
            c.last_transition_time.clone_from(&o.last_transition_time);
        }
        if &same == old {
            return Ok(());
        }
        for (c, o) in st.conditions.iter_mut().zip(&old.conditions) {
            if c.type_ == o.type_ && c.message == o.message {
                c.last_transition_time.clone_from(&o.last_transition_time);
            }
        }
    }
    let patch = Patch::Merge(serde_json::json!({ "status": st }));
    // Argo CD's own CRD has no status subresource: the status is part of the object there.
    match api
        .patch_status(&app.name_any(), &PatchParams::default(), &patch)
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 404 => api
            .patch(&app.name_any(), &PatchParams::default(), &patch)
            .await
            .map(|_| ())
            .map_err(kube_err("writing the Application's status")),
        r => r
            .map(|_| ())
            .map_err(kube_err("writing the Application's status")),
    }
}
