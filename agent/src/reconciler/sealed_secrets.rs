//! The SealedSecret controller, for SealedSecrets created outside Git (by `kubectl apply`, Helm,
//! another tool): it does what the sealed-secrets controller does, with the agent's keys.
//!
//! * Unseals each `bitnami.com/v1alpha1` SealedSecret into its Secret, with an ownerReference
//!   (unless `sealedsecrets.bitnami.com/skip-set-owner-references`), so deleting the
//!   SealedSecret deletes the Secret.
//! * Takes over an existing Secret only when it is controlled by this SealedSecret or annotated
//!   `sealedsecrets.bitnami.com/managed: "true"`; merges into one annotated `…/patch: "true"`;
//!   refuses anyone else's Secret ([`sealed::object::takeover`]).
//! * A SealedSecret that fails to open leaves the existing Secret untouched, and says why in its
//!   `Synced` condition and an Event (names, scope, keys tried; never a value).
//! * SealedSecrets that a Sync applies (they carry the Sync's label) are left to the Sync, which
//!   unseals them itself and applies their Secrets in its secrets stage; this controller only
//!   reports `Synced` on them once that Secret is there.
//!
//! It starts once the SealedSecret CRD exists, and writes nothing when nothing changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use lockstep_formats::sealed::{self, object::Takeover};
use serde_json::{Value as Json, json};
use tracing::{Instrument, info, info_span, warn};

use super::{Gate, Scope};
use crate::api::OWNER_LABEL;
use crate::api::conditions::{FALSE, TRUE};
use crate::secrets::WipedSecret;
use crate::secrets::sealing::LiveKeys;

/// Name of the SealedSecret CRD.
pub const CRD_NAME: &str = "sealedsecrets.bitnami.com";
/// Field manager of the Secrets this controller writes.
pub const FIELD_MANAGER: &str = "lockstep-unsealer";

/// Errors of one reconcile; none carries a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The SealedSecret could not be turned into a Secret (reported in its status).
    #[error("{0}")]
    Unseal(String),
}

/// Shared state of the controller.
pub struct Context {
    /// The client.
    pub client: Client,
    /// The agent's sealing keys.
    pub keys: LiveKeys,
    /// Events on SealedSecrets.
    pub recorder: Recorder,
}

/// The condition a SealedSecret reports, as Bitnami's controller names it.
pub const SYNCED: &str = "Synced";
/// `Synced` reason: the Secret is as the SealedSecret says.
pub const UNSEALED: &str = "Unsealed";
/// `Synced` reason: no key opens it (or its scope does not match).
pub const UNSEAL_FAILED: &str = "UnsealFailed";
/// `Synced` reason: the Secret could not be written (or belongs to someone else).
pub const WRITE_FAILED: &str = "WriteFailed";

/// The SealedSecret API resource.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("bitnami.com", "v1alpha1", "SealedSecret"))
}

/// Waits for the SealedSecret CRD, then runs the controller until shutdown.
pub async fn run(
    client: Client,
    keys: LiveKeys,
    shutdown: tokio_util::sync::CancellationToken,
    scope: &Scope,
    ready: Option<Gate>,
) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut ready = ready;
    loop {
        match crds.get_opt(CRD_NAME).await {
            Ok(Some(_)) => break,
            Ok(None) => {
                // Nothing to watch until the CRD is installed; that is not a reason to be unready.
                if let Some(g) = ready.take() {
                    info!("the SealedSecret CRD is not installed; looking again every 30 s");
                    g.open();
                }
            }
            Err(e) => warn!(error = %e, "looking for the SealedSecret CRD"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            () = shutdown.cancelled() => return,
        }
    }
    let ar = api_resource();
    let api: Api<DynamicObject> = scope.api_with(&client, &ar);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "lockstep-agent".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let ctx = Arc::new(Context {
        client,
        keys,
        recorder,
    });
    info!("SealedSecret controller started");
    // The controller is fed by our own watch, so that its first list can open `ready` (a
    // second task waiting on the controller's store would not be woken reliably).
    let writer = kube::runtime::reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let objects = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect(move |e| {
            if let Ok(watcher::Event::InitDone) = e
                && let Some(g) = ready.take()
            {
                g.open();
            }
        })
        .applied_objects();
    // Our own status writes trigger one more reconcile, which finds nothing to write.
    Controller::for_stream_with(objects, reader, ar)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "SealedSecret reconcile failed");
            }
        })
        .await;
}

fn error_policy(_s: Arc<DynamicObject>, _e: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(60))
}

/// What to write for a SealedSecret, decided from the unsealed Secret and the existing one
/// (pure). Every Secret here is wiped when dropped.
#[derive(Debug, PartialEq)]
pub enum Write {
    /// Create the Secret.
    Create(WipedSecret),
    /// Replace the existing Secret with this one.
    Update(WipedSecret),
    /// The existing Secret already matches.
    Nothing,
    /// Someone else's Secret.
    Refuse,
}

/// Decides the write (the sealed-secrets controller's rules).
pub fn decide(mut desired: WipedSecret, existing: Option<WipedSecret>, ss_uid: &str) -> Write {
    // Only the existing Secret's metadata decides (annotations, owner references).
    let existing_meta = existing
        .as_ref()
        .and_then(|e| serde_json::to_value(&e.metadata).ok())
        .map(|m| json!({ "metadata": m }));
    match (sealed::object::takeover(existing_meta.as_ref(), ss_uid), existing) {
        (Takeover::Create, _) | (_, None) => Write::Create(desired),
        (Takeover::Refuse, Some(_)) => Write::Refuse,
        (Takeover::Replace, Some(mut cur)) => {
            let before = cur.clone();
            cur.set_data(desired.data.take());
            if let Some(mut s) = cur.string_data.take() {
                s.values_mut().for_each(zeroize::Zeroize::zeroize);
            }
            cur.type_ = desired.type_.take();
            cur.metadata.labels = desired.metadata.labels.take();
            cur.metadata.annotations = desired.metadata.annotations.take();
            cur.metadata.owner_references = desired.metadata.owner_references.take();
            if cur == before {
                Write::Nothing
            } else {
                Write::Update(cur)
            }
        }
        (Takeover::Patch, Some(mut cur)) => {
            let before = cur.clone();
            let merge = |into: &mut Option<BTreeMap<String, String>>,
                         from: Option<BTreeMap<String, String>>| {
                if let Some(from) = from {
                    into.get_or_insert_with(BTreeMap::new).extend(from);
                }
            };
            merge(&mut cur.metadata.labels, desired.metadata.labels.take());
            merge(&mut cur.metadata.annotations, desired.metadata.annotations.take());
            if let Some(d) = desired.data.take() {
                let into = cur.data.get_or_insert_with(BTreeMap::<String, ByteString>::new);
                for (k, v) in d {
                    if let Some(mut old) = into.insert(k, v) {
                        zeroize::Zeroize::zeroize(&mut old.0);
                    }
                }
            }
            if cur == before {
                Write::Nothing
            } else {
                Write::Update(cur)
            }
        }
    }
}

async fn reconcile(ss: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = ss.namespace().unwrap_or_default();
    let name = ss.name_any();
    let span = info_span!("unseal", sealedsecret.namespace = %ns, sealedsecret.name = %name);
    async move {
        if ss.meta().deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        if let Some(sync) = ss.labels().get(OWNER_LABEL) {
            // A Sync unsealed this one and applies its Secret in the same stage: once that
            // Secret is there, say so in the status, as the sealed-secrets controller would.
            let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&name)
                .await
                .map_err(|source| Error::Kube {
                    what: format!("reading Secret {ns}/{name}"),
                    source,
                })?;
            if secret.is_none_or(|s| s.labels().get(OWNER_LABEL) != Some(sync)) {
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            let sync = sync.replacen('.', "/", 1);
            set_status(
                &ss,
                &ctx,
                &ns,
                TRUE,
                UNSEALED,
                &format!("unsealed by Sync {sync}"),
            )
            .await?;
            return Ok(Action::await_change());
        }
        let result = write_secret(&ss, &ctx, &ns, &name).await;
        let (status, reason, message) = match &result {
            Ok(()) => (TRUE, UNSEALED, String::new()),
            Err(Error::Unseal(m)) => (FALSE, UNSEAL_FAILED, m.clone()),
            Err(e) => (FALSE, WRITE_FAILED, e.to_string()),
        };
        set_status(&ss, &ctx, &ns, status, reason, &message).await?;
        match result {
            Ok(()) => Ok(Action::requeue(Duration::from_secs(3600))),
            Err(e) => Err(e),
        }
    }
    .instrument(span)
    .await
}

/// The Secret an unsealed SealedSecret stands for, built from its values directly (no JSON
/// copy of them is made).
fn secret_of(unsealed: &sealed::SealedSecret) -> Result<WipedSecret, Error> {
    let metadata = serde_json::from_value(Json::Object(unsealed.metadata.clone()))
        .map_err(|e| Error::Unseal(format!("the unsealed Secret's metadata: {e}")))?;
    let data = unsealed
        .data
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
        .collect();
    Ok(WipedSecret(Secret {
        metadata,
        type_: Some(unsealed.type_.clone()),
        immutable: unsealed.immutable,
        data: Some(data),
        ..Secret::default()
    }))
}

async fn write_secret(ss: &DynamicObject, ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let keys = ctx.keys.borrow().clone();
    let obj = serde_json::to_value(ss).map_err(|e| Error::Unseal(e.to_string()))?;
    let uid = ss.uid().unwrap_or_default();
    let unsealed = tokio::task::spawn_blocking(move || sealed::unseal(&obj, &keys.ring))
        .await
        .map_err(|e| Error::Unseal(format!("the unseal task failed: {e}")))?
        .map_err(|e| Error::Unseal(e.to_string()))?;
    let desired = secret_of(&unsealed)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let kube = |what: &str| {
        let what = format!("{what} Secret {ns}/{name}");
        move |source| Error::Kube { what, source }
    };
    let existing = secrets
        .get_opt(name)
        .await
        .map_err(kube("reading"))?
        .map(WipedSecret);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match decide(desired, existing, &uid) {
        Write::Create(s) => {
            secrets
                .create(&params, &s)
                .await
                .map(WipedSecret)
                .map_err(kube("creating"))?;
            info!("Secret created");
        }
        Write::Update(s) => {
            secrets
                .replace(name, &params, &s)
                .await
                .map(WipedSecret)
                .map_err(kube("updating"))?;
            info!("Secret updated");
        }
        Write::Nothing => {}
        Write::Refuse => {
            return Err(Error::Unseal(format!(
                "Resource \"{name}\" already exists and is not managed by SealedSecret \
                 (annotate the Secret sealedsecrets.bitnami.com/managed=true to let it take over)"
            )));
        }
    }
    Ok(())
}

/// Writes the `Synced` condition when it changed, and an Event on failure.
async fn set_status(
    ss: &DynamicObject,
    ctx: &Context,
    ns: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let generation = ss.meta().generation;
    let current = ss.data.pointer("/status/conditions/0");
    let same = current.is_some_and(|c| {
        c.get("status").and_then(Json::as_str) == Some(status)
            && c.get("message").and_then(Json::as_str).unwrap_or("") == message
    }) && ss
        .data
        .pointer("/status/observedGeneration")
        .and_then(Json::as_i64)
        == generation;
    if same {
        return Ok(());
    }
    if status == FALSE {
        let ev = Event {
            type_: EventType::Warning,
            reason: "ErrUnsealFailed".into(),
            note: Some(message.chars().take(1000).collect()),
            action: "Unseal".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &ss.object_ref(&api_resource())).await {
            warn!(error = %e, "publishing an event");
        }
    }
    let now = lockstep_formats::sops::now_rfc3339();
    let transition = current
        .filter(|c| c.get("status").and_then(Json::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime"))
        .cloned()
        .unwrap_or_else(|| now.clone().into());
    let patch = json!({ "status": {
        "observedGeneration": generation,
        "conditions": [{
            "type": SYNCED, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": transition,
        }],
    }});
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &api_resource());
    api.patch_status(&ss.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Kube {
            what: format!("writing the status of SealedSecret {ns}/{}", ss.name_any()),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(v: Json) -> WipedSecret {
        WipedSecret(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn takeover_rules() {
        let desired = secret(json!({"metadata": {"name": "s", "ownerReferences": [
            {"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret", "name": "s", "uid": "u1", "controller": true}]},
            "data": {"k": "YQ=="}}));
        assert!(matches!(decide(desired.clone(), None, "u1"), Write::Create(_)));
        let foreign = secret(json!({"metadata": {"name": "s"}, "data": {"k": "Yg=="}}));
        assert_eq!(decide(desired.clone(), Some(foreign), "u1"), Write::Refuse);
        let ours = secret(json!({"metadata": {"name": "s", "ownerReferences": [
            {"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret", "name": "s", "uid": "u1", "controller": true}]},
            "data": {"k": "Yg=="}}));
        let Write::Update(u) = decide(desired.clone(), Some(ours), "u1") else {
            panic!()
        };
        assert_eq!(u.data.as_ref().unwrap()["k"].0, b"a");
        assert_eq!(
            decide(desired.clone(), Some(desired.clone()), "u1"),
            Write::Nothing
        );
        let patched = secret(
            json!({"metadata": {"name": "s", "annotations": {"sealedsecrets.bitnami.com/patch": "true"}},
            "data": {"other": "Yg=="}}),
        );
        let Write::Update(p) = decide(desired, Some(patched), "u1") else {
            panic!()
        };
        let data = p.data.clone().unwrap();
        assert_eq!(data.len(), 2, "merged");
        assert!(
            p.metadata.owner_references.is_none(),
            "a patched Secret is not taken over"
        );
    }
}
